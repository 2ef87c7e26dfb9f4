"""How workflow throughput grows with concurrency. Prints one JSON line.

    python bench/scaling.py [--quick] [--runs N]

For 1, 10, 100 and 1,000 workflows running at once (10 trivial steps each, several
rounds), at ``synchronous="normal"`` (the default) and ``"full"`` (an fsync per
commit): steps per second, microseconds per step (wall time / steps), store commits
per step (below 1: group commit shared them), ``normal_1000_vs_100`` and
``full_1000_vs_100`` (the steps/s of 1,000 against 100, taken within each run), the
share of the time the cyclic garbage collector took (``gc_share``, from
``gc.callbacks``) and how many young, middle and full collections ran (``gc_young``,
``gc_middle``, ``gc_full``: counts move far less than times on a shared machine).
``dbos``: the same levels for DBOS on SQLite (WAL, its default ``synchronous=FULL``)
in a child process of the same run: ``DBOS.start_workflow`` N times (its thread pool
runs them), then every result. ``--runs N`` repeats everything and reports ``[median, min, max]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
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
    with tempfile.TemporaryDirectory(prefix="garrison-scaling-") as folder:
        path = os.path.join(folder, "wf.db")
        store = SQLiteStore(path, synchronous=synchronous)
        rounds = max(1, total_steps // (conc * 10))
        async with garrison.open_node(store=store) as node:
            for i in range(min(conc, 20)):  # warm-up
                await node.start_workflow(wf10, i, id=f"warm-{i}")
                await node.workflow(f"warm-{i}").result()
            tx0 = store.statistics().transactions
            gc_time = [0.0, 0.0]
            collections = [0, 0, 0]

            def gc_clock(phase: str, info: dict[str, int]) -> None:
                if phase == "start":
                    gc_time[1] = time.perf_counter()
                else:
                    gc_time[0] += time.perf_counter() - gc_time[1]
                    collections[info["generation"]] += 1

            gc.callbacks.append(gc_clock)
            t0 = time.perf_counter()
            for r in range(rounds):
                async with trio.open_nursery() as nursery:
                    for i in range(conc):
                        nursery.start_soon(_start, node, f"{r}-{i}", i)
                for i in range(conc):
                    assert await node.workflow(f"{r}-{i}").result() == i + 10
            dt = time.perf_counter() - t0
            gc.callbacks.remove(gc_clock)
            steps = rounds * conc * 10
            commits = store.statistics().transactions - tx0
        store.close()
        return {"steps_per_s": steps / dt, "us_per_step": dt / steps * 1e6,
                "commits_per_step": commits / steps, "steps": steps, "gc_share": gc_time[0] / dt,
                "gc_young": collections[0], "gc_middle": collections[1], "gc_full": collections[2]}


DBOS_CODE = r'''
import json, os, sqlite3, sys, tempfile, time
levels, total = json.loads(sys.argv[1]), int(sys.argv[2])
FOLDER = tempfile.TemporaryDirectory(prefix="dbos-scaling-")  # removed at exit
DB = os.path.join(FOLDER.name, "dbos.sqlite")
c = sqlite3.connect(DB); assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
c.close()
from dbos import DBOS
DBOS(config={"name": "garrison-scaling", "system_database_url": f"sqlite:///{DB}",
             "log_level": "WARNING"})

@DBOS.step()
def step(i: int) -> int:
    return i + 1

@DBOS.workflow()
def wf10(x: int) -> int:
    for i in range(10):
        x = step(x)
    return x

DBOS.launch()
for i in range(20):
    wf10(i)
out = {}
for conc in levels:
    rounds = max(1, total // (conc * 10))
    t0 = time.perf_counter()
    for _ in range(rounds):
        if conc == 1:
            assert wf10(0) == 10
            continue
        handles = [DBOS.start_workflow(wf10, i) for i in range(conc)]
        for i, h in enumerate(handles):
            assert h.get_result() == i + 10
    dt = time.perf_counter() - t0
    out[str(conc)] = {"steps_per_s": rounds * conc * 10 / dt,
                      "us_per_step": dt / (rounds * conc * 10) * 1e6}
DBOS.destroy()
print(json.dumps(out))
'''


def dbos_levels(quick: bool) -> dict[str, object] | str:
    """DBOS at each level, in a child process (its own interpreter, as a user runs it)."""
    try:
        import dbos  # noqa: F401
    except ImportError:
        return "dbos is not installed (pip install -e '.[bench]')"
    total = 1000 if quick else 3000
    done = subprocess.run([sys.executable, "-c", DBOS_CODE, json.dumps(LEVELS), str(total)],
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    result: dict[str, object] = json.loads(lines[-1])
    return result


def one_run(quick: bool) -> dict[str, object]:
    out: dict[str, object] = {"levels": list(LEVELS)}
    for sync in ("normal", "full"):
        per: dict[str, object] = {}
        for conc in LEVELS:
            if quick:
                total = 2000 if sync == "normal" or conc >= 100 else 500
            else:
                # (60,000 steps: a level spans a second or more, as DBOS's do)
                total = (60_000 if sync == "normal" or conc >= 100
                         else 3000 if conc == 1 else 15_000)
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
        # the levels 100 and 1,000 run one after the other: their ratio is taken within
        # the run, before the runs are summarized (the VM's speed moves between runs)
        out[f"{sync}_1000_vs_100"] = round(
            table["1000"]["steps_per_s"] / table["100"]["steps_per_s"], 3)
    d = dbos_levels(quick)
    out["dbos"] = d
    if isinstance(d, dict):
        for conc in LEVELS:
            theirs = d[str(conc)]
            assert isinstance(theirs, dict)
            out[f"dbos_steps_per_s_at_{conc}"] = round(theirs["steps_per_s"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps per level")
    parser.add_argument("--runs", type=int, default=1, help="repeat, report median [min, max]")
    args = parser.parse_args()
    from bench._runs import summary

    runs = [one_run(args.quick) for _ in range(max(1, args.runs))]
    print(json.dumps({"bench": "scaling", "runs": len(runs), **summary(runs)}))


if __name__ == "__main__":
    if __package__ in (None, ""):
        import importlib

        importlib.import_module("bench.scaling").main()
    else:
        main()
