"""Cluster torture: random SIGKILLs of random nodes of a 3-node cluster, restarts, and
checks (tests/test_cluster.py runs a short one; bench/cluster_torture.py >= 50 kills).

Workflows (``steps``: each step an activity naming the node that ran it) are created
unowned by a tool, so the nodes claim them; a node is killed at a random moment every
``interval`` seconds and restarted under the same name (or a fresh one) a moment later.
When every workflow has finished the store is checked: exact results, and every step
recorded exactly once and in order (the journal's key makes a second record of one
seq impossible; a step run again under another seq would show here).
"""

from __future__ import annotations

import random
import time
from typing import Any

from harness import Look, Node, wait_for

CHECKS = ("exact_results", "steps_once_in_order", "all_finished")


def torture(url: str, *, kills: int, workflows: int = 30, steps: int = 40,
            delay: float = 0.02, lease: float = 1.0, interval: float = 1.0, seed: int = 1,
            node_count: int = 3) -> dict[str, Any]:
    """Run it; the figures and checks as a dict."""
    from garrison.persistence import Transaction

    rng = random.Random(seed)
    names = [f"n{i}" for i in range(node_count)]
    nodes = {name: Node.start(url, name, lease) for name in names}
    look = Look(url)
    ids = [f"t{i}" for i in range(workflows)]
    tx = Transaction()
    for wid in ids:
        tx.create_workflow(wid, "cluster_app:steps", [steps, delay])
    look.store.write(tx)  # unowned: the nodes claim them (and are notified at once)
    started = time.monotonic()
    done_kills = 0
    takeovers: list[float] = []
    try:
        while done_kills < kills:
            statuses = look.statuses()
            if all(statuses.get(w) == "completed" for w in ids):
                break
            time.sleep(interval * rng.uniform(0.3, 1.0))
            victim = rng.choice(names)
            before = {w for w, o in look.owners().items() if o == victim}
            nodes[victim].kill()
            done_kills += 1
            killed_at = time.monotonic()
            if before and rng.random() < 0.5:  # sometimes wait for the others to take over
                try:
                    wait_for(lambda b=before, v=victim: all(  # type: ignore[misc]
                        look.owners().get(w) not in (v,) for w in b), 4 * lease + 5,
                        "the takeover")
                    takeovers.append(time.monotonic() - killed_at)
                except AssertionError:
                    pass
            nodes[victim].stop()
            nodes[victim] = Node.start(url, victim, lease)
        wait_for(lambda: all(look.statuses().get(w) == "completed" for w in ids), 120,
                 "every workflow to finish", every=0.1)
        seconds = time.monotonic() - started
        statuses = look.statuses()
        exact = all(look.result(w) == list(range(steps)) for w in ids)
        in_order = all([i for i, _ in look.steps(w)] == list(range(steps)) for w in ids)
        return {
            "kills": done_kills, "workflows": workflows, "steps": steps, "lease": lease,
            "seconds": round(seconds, 1),
            "takeover_max_s": round(max(takeovers), 2) if takeovers else None,
            "takeovers_measured": len(takeovers),
            "exact_results": exact, "steps_once_in_order": in_order,
            "all_finished": all(statuses.get(w) == "completed" for w in ids),
        }
    finally:
        for node in nodes.values():
            node.stop()
        look.close()
