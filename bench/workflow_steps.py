"""Durable workflow steps: garrison's workflow host against DBOS on SQLite (WAL), same run.

    python bench/workflow_steps.py [--quick]

Prints ONE JSON line. Both sides run 10-step workflows whose step is a trivial
function (``x + 1``) on a SQLite file in WAL mode at their default durability
(garrison: ``synchronous=NORMAL``; DBOS pre-set to WAL, its own synchronous
setting), so what is measured is the cost of durability per step:

- ``seq_step_us``: per-step cost of sequential workflows, marginal
  ((T10 - T1) / 9 per workflow, as in shared/bench/PEERS.md) and naive (T10 / 10);
- ``conc100_step_us``: 100 workflows of 10 steps started at once (5 rounds), wall
  time / steps (DBOS runs them on its thread pool; garrison on one trio thread);
- ``msg_rt_us`` (garrison only; DBOS's figure is in PEERS.md: ~16 ms at 1 ms poll):
  a message into a waiting workflow and its reply back to a process, median;
- ``recover_*`` (garrison only; DBOS needs ~1 s before resumed work starts, PEERS.md):
  reopening a store with 1000 workflows waiting after 3 steps each: the time until
  ``open_node`` returns (every one replayed up to its wait and running), and until
  all of them got a message and finished.

DBOS runs in a child process (its own interpreter, as a user would run it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


# ============================================================== garrison side
def garrison_side(quick: bool, synchronous: str = "normal") -> dict[str, float]:
    import trio

    import garrison
    from garrison.persistence import SQLiteStore

    n10, n1, nconc, nrt = (40, 60, 100, 100) if quick else (300, 500, 100, 1000)
    nrec = 100 if quick else 1000
    rounds = 1 if quick else 5
    out: dict[str, float] = {}

    async def main() -> None:
        path = os.path.join(tempfile.mkdtemp(prefix="garrison-bench-"), "wf.db")
        store = SQLiteStore(path, synchronous=synchronous)
        async with garrison.open_node(store=store) as node:

            async def timed(target: object, n: int, tag: str) -> float:
                t0 = time.perf_counter()
                for i in range(n):
                    await node.start_workflow(target, i, id=f"{tag}-{i}")
                    await node.workflow(f"{tag}-{i}").result()
                return (time.perf_counter() - t0) / n

            await timed(wf10, 20, "warm10")
            await timed(wf1, 20, "warm1")
            per10 = await timed(wf10, n10, "w10")
            per1 = await timed(wf1, n1, "w1")
            per0 = await timed(wf0, n1, "w0")
            out["seq_step_us_marginal"] = (per10 - per1) / 9 * 1e6
            out["seq_step_us_naive"] = per10 / 10 * 1e6
            out["wf10_ms"] = per10 * 1e3
            out["wf0_ms"] = per0 * 1e3

            t0 = time.perf_counter()
            for r in range(rounds):  # several rounds: WAL checkpoints (an fsync) amortize
                async with trio.open_nursery() as nursery:
                    for i in range(nconc):
                        nursery.start_soon(start, node, f"c{r}-{i}", i)
                for i in range(nconc):
                    assert await node.workflow(f"c{r}-{i}").result() == i + 10
            out["conc100_step_us"] = (time.perf_counter() - t0) / (rounds * nconc * 10) * 1e6
            stats = store.statistics()
            out["conc100_mean_batch"] = stats.batched_writes / max(1, stats.batches)

            # message round trip: process -> waiting workflow -> process
            wpid = await node.start_workflow(echo, nrt, id="echo")
            lat: list[float] = []

            async def client() -> None:
                from garrison import process

                inbox = process.inbox()
                for i in range(nrt):
                    s = time.perf_counter()
                    await process.send(wpid, "ping", i)
                    msg = await inbox.receive()
                    lat.append(time.perf_counter() - s)
                    assert msg.payload == i

            await node.wait(await node.spawn(client))
            lat.sort()
            out["msg_rt_us_p50"] = lat[len(lat) // 2] * 1e6
            out["msg_rt_us_p90"] = lat[int(len(lat) * 0.9)] * 1e6

            # recovery: workflows that did 3 steps and wait for a message
            for i in range(nrec):
                await node.start_workflow(three_then_wait, i, id=f"r-{i}")
            while any(node.workflow(f"r-{i}").status() != "waiting" for i in range(nrec)):
                await trio.sleep(0.001)
        store.close()
        t0 = time.perf_counter()
        async with garrison.open_node(store=path) as node:  # recovery happens here
            out["recover_open_ms"] = (time.perf_counter() - t0) * 1e3
            for i in range(nrec):
                await node.send(garrison.Pid("workflows", f"r-{i}"), "go", i)
            for i in range(nrec):
                assert await node.workflow(f"r-{i}").result() == i + 3
            out["recover_all_done_ms"] = (time.perf_counter() - t0) * 1e3
            out["recovered_workflows"] = nrec

    async def start(node: garrison.Node, wid: str, i: int) -> None:
        await node.start_workflow(wf10, i, id=wid)

    trio.run(main)
    return out


# ============================================================== DBOS side
DBOS_CODE = r'''
import json, os, sqlite3, sys, tempfile, time
quick = sys.argv[1] == "1"
DB = os.path.join(tempfile.mkdtemp(prefix="dbos-bench-"), "dbos.sqlite")
c = sqlite3.connect(DB); assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
c.close()
from dbos import DBOS, SetWorkflowID
DBOS(config={"name": "garrison-bench", "system_database_url": f"sqlite:///{DB}",
             "log_level": "WARNING"})

@DBOS.step()
def small_step(i: int) -> int:
    return i + 1

@DBOS.workflow()
def wf10(x: int) -> int:
    for i in range(10):
        x = small_step(x)
    return x

@DBOS.workflow()
def wf1(x: int) -> int:
    return small_step(x)

def timed(fn, n):
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n

DBOS.launch()
n10, n1, nconc = (40, 60, 100) if quick else (200, 500, 100)
for i in range(20):
    wf10(i); wf1(i)
per10 = timed(wf10, n10)
per1 = timed(wf1, n1)
rounds = 1 if quick else 5
t0 = time.perf_counter()
for _ in range(rounds):
    handles = [DBOS.start_workflow(wf10, i) for i in range(nconc)]
    for i, h in enumerate(handles):
        assert h.get_result() == i + 10
conc = (time.perf_counter() - t0) / (rounds * nconc * 10)
DBOS.destroy()
print(json.dumps({"seq_step_us_marginal": (per10 - per1) / 9 * 1e6,
                  "seq_step_us_naive": per10 / 10 * 1e6, "wf10_ms": per10 * 1e3,
                  "conc100_step_us": conc * 1e6}))
'''


def dbos_side(quick: bool) -> dict[str, float] | str:
    try:
        import dbos  # noqa: F401
    except ImportError:
        return "dbos is not installed"
    done = subprocess.run([sys.executable, "-c", DBOS_CODE, "1" if quick else "0"],
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    result: dict[str, float] = json.loads(lines[-1])
    return result


# ============================================================== the workflows
# (workflows must be importable by module:qualname, so they live at module level)
import garrison as _garrison  # noqa: E402
from garrison import process as _process  # noqa: E402


@_garrison.activity
async def small_step(i: int) -> int:
    return i + 1


async def wf10(x: int) -> int:
    for _ in range(10):
        x = await small_step(x)
    return x


async def wf1(x: int) -> int:
    return await small_step(x)


async def wf0(x: int) -> int:
    return x


async def three_then_wait(x: int) -> int:
    for _ in range(3):
        x = await small_step(x)
    msg = await _process.inbox().receive()
    assert msg.payload + 3 == x
    return x


async def echo(n: int) -> int:
    inbox = _process.inbox()
    for _ in range(n):
        msg = await inbox.receive()
        await _process.send(msg.sender, "pong", msg.payload)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run (fewer iterations)")
    args = parser.parse_args()
    runs = 1 if args.quick else 3
    g_runs = [garrison_side(args.quick) for _ in range(runs)]
    g = {k: statistics.median(r[k] for r in g_runs) for k in g_runs[0]}
    g_full = garrison_side(args.quick, "full")
    d = dbos_side(args.quick)
    out: dict[str, object] = {
        "bench": "workflow_steps",
        "runs": runs,
        "garrison": {k: round(v, 2) for k, v in g.items()},
        "garrison_full_sync": {k: round(v, 2) for k, v in g_full.items()},
        "dbos": d if isinstance(d, str) else {k: round(v, 2) for k, v in d.items()},
    }
    if isinstance(d, dict):
        out["ratio_seq_step_vs_dbos"] = round(d["seq_step_us_marginal"]
                                              / g["seq_step_us_marginal"], 1)
        out["ratio_seq_step_naive_vs_dbos"] = round(d["seq_step_us_naive"]
                                                    / g["seq_step_us_naive"], 1)
        out["ratio_conc100_step_vs_dbos"] = round(d["conc100_step_us"] / g["conc100_step_us"], 1)
        out["ratio_seq_step_full_sync_vs_dbos"] = round(
            d["seq_step_us_marginal"] / g_full["seq_step_us_marginal"], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    if __package__ in (None, ""):
        # run as a script: make the workflows importable as bench.workflow_steps
        import importlib

        mod = importlib.import_module("bench.workflow_steps")
        mod.main()
    else:
        main()
