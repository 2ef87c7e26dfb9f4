"""The torture harness: kill a node at random moments until its workflows finish,
then check that nothing was lost, duplicated or recorded twice.

    python tests/torture/run.py [--kills N] [--size S] [--rounds R] [--seed X]
                                [--synchronous normal|full]

Prints one JSON line: kills done, runs, seconds, and the checks. Exit 1 on a failed
check. ``tests/test_torture.py`` runs a short version in CI; ``bench/torture.py``
runs at least 1,000 kills across several scenarios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torture_app  # noqa: E402
from _forks import Forks  # noqa: E402


def run(kills: int, size: int, rounds: int, seed: int, max_delay: float = 0.08,
        workdir: str | None = None, synchronous: str = "normal") -> dict[str, object]:
    rng = random.Random(seed)
    tmp = workdir or tempfile.mkdtemp(prefix="garrison-torture-")
    store = os.path.join(tmp, "torture.db")
    log = os.path.join(tmp, "activities.log")
    env = {"GARRISON_TORTURE_LOG": log}
    argv = [store, str(size), str(rounds), synchronous]
    done_kills = runs = 0
    results = None
    start = time.monotonic()
    with Forks() as forks:
        while results is None:
            runs += 1
            results, killed = _one_run(forks, argv, env, os.path.join(tmp, f"node-{runs}.err"),
                                       rng, max_delay, done_kills < kills, tmp)
            done_kills += killed
    seconds = time.monotonic() - start
    out = {"kills": done_kills, "runs": runs, "seconds": round(seconds, 1),
           **check(store, log, results, size, rounds)}
    if workdir is None and all(out[c] for c in CHECKS):
        shutil.rmtree(tmp)  # a failed scenario's store and logs stay, named below
    else:
        out["workdir"] = tmp
    return out


def _one_run(forks: Forks, argv: list[str], env: dict[str, str], errfile: str,
             rng: random.Random, max_delay: float, kill: bool, tmp: str
             ) -> tuple[Any, int]:
    """One node's run: ``(None, 1)`` if ``kill`` and it was killed, else ``(its
    results, 0)``."""
    proc = forks.spawn(argv, env, errfile)
    seen = ""
    if kill:
        # kill it at a random moment: mostly while its workflows run (after it
        # started them), sometimes during start-up and recovery
        if rng.random() < 0.8:
            seen = proc.stdout.readline()  # (buffered: read the rest from proc.stdout)
        if seen.strip() in ("", "started"):
            time.sleep(rng.uniform(0.0, max_delay))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proc.stdout.close()
                return None, 1
    out = seen + proc.stdout.read()
    proc.wait()
    proc.stdout.close()
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines or lines[-1] == "started":
        with open(errfile) as f:
            err = f.read()
        raise SystemExit(f"the node failed (exit {proc.returncode}, output "
                         f"{out[-500:]!r}; its files are kept in {tmp}):\n"
                         f"{err[-3000:]}")
    return json.loads(lines[-1]), 0


def check(store: str, log: str, results: list[dict[str, object]], size: int,
          rounds: int) -> dict[str, object]:
    exact = all(results[i] == torture_app.expected(i, rounds) for i in range(size))
    conn = sqlite3.connect(store)
    try:
        statuses = Counter(s for (s,) in conn.execute("SELECT status FROM workflows"))
        per_wf = dict(conn.execute(
            "SELECT workflow_id, count(*) FROM journal WHERE kind = 'activity' "
            "GROUP BY workflow_id"))
        # every token sent was consumed exactly once (inbox ids are unique per message)
        tokens = conn.execute("SELECT count(*), count(DISTINCT msg_id) FROM inbox "
                              "WHERE topic = 'token'").fetchone()
        unconsumed = conn.execute("SELECT count(*) FROM inbox WHERE consumed_seq IS NULL"
                                  ).fetchone()[0]
    finally:
        conn.close()
    recorded_once = all(per_wf.get(f"r{i}") == rounds for i in range(size))
    with open(log) as f:
        ran = Counter(line.strip() for line in f if line.strip())
    expected_runs = {f"r{i} {k}" for i in range(size) for k in range(rounds)}
    return {
        "exact_results": exact,
        "all_completed": statuses == Counter({"completed": size}),
        "each_activity_recorded_once": recorded_once,
        "each_activity_ran": set(ran) == expected_runs,
        "activities_run_again_after_a_kill": sum(n - 1 for n in ran.values()),
        "tokens_delivered_once": tokens[0] == tokens[1] == size * rounds,
        "nothing_left_in_inboxes": unconsumed == 0,
    }


def torture(kills: int, size: int, rounds: int, seed: int,
            synchronous: str = "normal") -> dict[str, object]:
    """Scenarios (fresh stores, seeds ``seed``, ``seed+1``...) until ``kills`` kills are
    done; every check must hold in every scenario."""
    counts = Counter[str]()
    seconds = 0.0
    failed: list[dict[str, object]] = []
    scenarios = 0
    while counts["kills"] < kills:
        out = run(kills - counts["kills"], size, rounds, seed + scenarios,
                  synchronous=synchronous)
        scenarios += 1
        for key in ("kills", "runs", "activities_run_again_after_a_kill"):
            counts[key] += int(out[key])  # type: ignore[call-overload]
        seconds += float(out["seconds"])  # type: ignore[arg-type]
        if not all(out[c] for c in CHECKS):
            failed.append(out)
    total: dict[str, object] = {**counts, "scenarios": scenarios, "seconds": round(seconds, 1),
                                "size": size, "rounds": rounds, "synchronous": synchronous}
    for c in CHECKS:
        total[c] = all(f[c] for f in failed)
    if failed:
        total["failed_scenarios"] = failed
    return total


CHECKS = ("exact_results", "all_completed", "each_activity_recorded_once",
          "each_activity_ran", "tokens_delivered_once", "nothing_left_in_inboxes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--synchronous", default="normal", choices=["normal", "full"])
    args = parser.parse_args()
    out = torture(args.kills, args.size, args.rounds, args.seed, args.synchronous)
    print(json.dumps(out))
    if not all(out[c] for c in CHECKS):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
