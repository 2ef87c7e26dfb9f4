"""How workflow throughput grows with concurrency. Prints one JSON line.

    python bench/scaling.py [--quick]

For 1, 10, 100 and 1,000 workflows running at once (10 trivial steps each, several
rounds), at ``synchronous="normal"`` (the default) and ``"full"`` (an fsync per
commit): steps per second, microseconds per step (wall time / steps) and store
commits per step (below 1: group commit shared them). DBOS's figures at 1 and 100
concurrent workflows are in ``bench/workflow_steps.py``'s line of the same run of
``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import trio  # noqa: E402

import garrison  # noqa: E402
from garrison.persistence import SQLiteStore  # noqa: E402

LEVELS = (1, 10, 100, 1000)


@garrison.activity
async def step(i: int) -> int:
    return i + 1


async def wf10(x: int) -> int:
    for _ in range(10):
        x = await step(x)
    return x


async def _start(node: garrison.Node, wid: str, i: int) -> None:
    await node.start_workflow(wf10, i, id=wid)


async def level(synchronous: str, conc: int, total_steps: int) -> dict[str, float]:
    path = os.path.join(tempfile.mkdtemp(prefix="garrison-scaling-"), "wf.db")
    store = SQLiteStore(path, synchronous=synchronous)
    rounds = max(1, total_steps // (conc * 10))
    async with garrison.open_node(store=store) as node:
        for i in range(min(conc, 20)):  # warm-up
            await node.start_workflow(wf10, i, id=f"warm-{i}")
            await node.workflow(f"warm-{i}").result()
        tx0 = store.statistics().transactions
        t0 = time.perf_counter()
        for r in range(rounds):
            async with trio.open_nursery() as nursery:
                for i in range(conc):
                    nursery.start_soon(_start, node, f"{r}-{i}", i)
            for i in range(conc):
                assert await node.workflow(f"{r}-{i}").result() == i + 10
        dt = time.perf_counter() - t0
        steps = rounds * conc * 10
        commits = store.statistics().transactions - tx0
    store.close()
    return {"steps_per_s": steps / dt, "us_per_step": dt / steps * 1e6,
            "commits_per_step": commits / steps, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps per level")
    args = parser.parse_args()
    out: dict[str, object] = {"bench": "scaling", "levels": list(LEVELS)}
    for sync in ("normal", "full"):
        per: dict[str, object] = {}
        for conc in LEVELS:
            if args.quick:
                total = 2000 if sync == "normal" or conc >= 100 else 500
            else:
                total = 20_000 if sync == "normal" or conc >= 100 else 3000
            total = max(total, conc * 10)
            r = trio.run(level, sync, conc, total)
            per[str(conc)] = {k: round(v, 3) for k, v in r.items()}
        out[sync] = per
    # flat keys for the table
    for sync in ("normal", "full"):
        table = out[sync]
        assert isinstance(table, dict)
        for conc in LEVELS:
            out[f"{sync}_steps_per_s_at_{conc}"] = round(table[str(conc)]["steps_per_s"])
    print(json.dumps(out))


if __name__ == "__main__":
    if __package__ in (None, ""):
        import importlib

        importlib.import_module("bench.scaling").main()
    else:
        main()
