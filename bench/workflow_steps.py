"""Durable workflow steps: garrison against DBOS on SQLite (WAL) and raw SQLite, same run.

    python bench/workflow_steps.py [--quick] [--runs N]

Prints ONE JSON line; ``--runs N`` repeats everything N times in this invocation
and reports each figure as ``[median, min, max]`` (a ratio is taken within a run).
Every figure below is taken in this run, for each side:

- ``seq_step_us``: per-step cost of sequential 10-step workflows whose step is a
  trivial function (``x + 1``): marginal ((T10 - T1) / 9 per workflow, as in
  shared/bench/PEERS.md) and naive (T10 / 10);
- ``wf10_ms``: the same sequential 10-step workflows end to end (start, ten steps,
  finish; what a caller waits for), per workflow;
- ``conc100_step_us``: 100 workflows of 10 steps started at once (20 rounds), wall
  time / steps (DBOS: ``DBOS.start_workflow`` 100 times, its thread pool runs them;
  garrison: started from a nursery, on one trio thread), and
  ``conc100_commits_per_step`` (garrison: store transactions / steps in that phase;
  below 1 means group commit shared them);
- ``loop100_step_us``: garrison only (DBOS's ``conc100`` above is already a loop):
  ``await node.start_workflow`` 100 times one after another (as a web handler
  does), then every result; wall time / steps, and ``loop100_commits_per_step``;
- ``msg_rt_us_p50``: a message into a waiting workflow and its reply out, median
  (garrison: ``process.send`` to the workflow, which sends back; DBOS:
  ``send`` -> ``recv`` -> ``set_event`` -> ``get_event`` with a 1 ms poll, as in the
  peer script);
- ``sqlite``: raw stdlib ``sqlite3`` single-row commits (WAL, ``synchronous=NORMAL``
  and ``FULL``), the floor of one durable checkpoint on this disk.

garrison runs twice: at its default durability (``synchronous="normal"``: survives a
killed process) and at DBOS's (``synchronous="full"``, an fsync per commit: survives
power loss). DBOS runs in a child process (its own interpreter, as a user runs it),
on a SQLite file pre-set to WAL; its connection keeps SQLite's default
``synchronous=FULL`` (reported as ``dbos.sqlite_synchronous``, 2 = FULL).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


# ============================================================== garrison side
def garrison_side(quick: bool, synchronous: str) -> dict[str, float]:
    import trio

    import garrison
    from garrison.persistence import SQLiteStore

    full = synchronous == "full"
    # Enough workflows that each figure spans most of a second or more: DBOS's same
    # loops take seconds, and a window of 0.15 s (300 workflows) is at the mercy of
    # one burst of the machine's other load, which DBOS's long window averages out.
    n10, n1 = (40, 60) if quick else ((600, 1000) if full else (1500, 2500))
    nconc, nrt = 100, (100 if quick else 1000)
    rounds = 1 if quick else 20
    out: dict[str, float] = {}

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="garrison-bench-") as folder:
            path = os.path.join(folder, "wf.db")
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
                out["seq_step_us_marginal"] = (per10 - per1) / 9 * 1e6
                out["seq_step_us_naive"] = per10 / 10 * 1e6
                out["wf10_ms"] = per10 * 1e3

                tx0 = store.statistics().transactions
                t0 = time.perf_counter()
                for r in range(rounds):  # several rounds: WAL checkpoints (an fsync) amortize
                    async with trio.open_nursery() as nursery:
                        for i in range(nconc):
                            nursery.start_soon(start, node, f"c{r}-{i}", i)
                    for i in range(nconc):
                        assert await node.workflow(f"c{r}-{i}").result() == i + 10
                steps = rounds * nconc * 10
                out["conc100_step_us"] = (time.perf_counter() - t0) / steps * 1e6
                out["conc100_commits_per_step"] = (store.statistics().transactions - tx0) / steps

                tx0 = store.statistics().transactions
                t0 = time.perf_counter()
                for r in range(rounds):  # one start at a time, each awaited, then the results
                    for i in range(nconc):
                        await node.start_workflow(wf10, i, id=f"l{r}-{i}")
                    for i in range(nconc):
                        assert await node.workflow(f"l{r}-{i}").result() == i + 10
                out["loop100_step_us"] = (time.perf_counter() - t0) / steps * 1e6
                out["loop100_commits_per_step"] = (store.statistics().transactions - tx0) / steps

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
            store.close()

    async def start(node: garrison.Node, wid: str, i: int) -> None:
        await node.start_workflow(wf10, i, id=wid)

    trio.run(main)
    return out


# ============================================================== raw SQLite (the floor)
def sqlite_side(quick: bool) -> dict[str, float]:
    """Single-row commits per second, as shared/bench/peers/sqlite_limits.py."""
    payload = '{"event":"step_done","wf":"0123456789abcdef","step":7,"out":"' + "x" * 40 + '"}'
    out: dict[str, float] = {}
    for sync, n in (("NORMAL", 5000 if quick else 20000), ("FULL", 500 if quick else 2000)):
        with tempfile.TemporaryDirectory(prefix="sqlite-floor-") as folder:
            path = os.path.join(folder, "floor.db")
            c = sqlite3.connect(path, isolation_level=None)
            assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
            c.execute(f"PRAGMA synchronous={sync}")
            c.execute("CREATE TABLE ev (id INTEGER PRIMARY KEY, wf TEXT, step INTEGER, "
                      "payload TEXT, ts REAL)")
            ins = "INSERT INTO ev (wf, step, payload, ts) VALUES (?,?,?,?)"
            for i in range(50 + n):
                if i == 50:
                    t0 = time.perf_counter()
                c.execute("BEGIN")
                c.execute(ins, ("w", i, payload, time.time()))
                c.execute("COMMIT")
            dt = time.perf_counter() - t0
            c.close()
            out[f"{sync.lower()}_commit_us"] = dt / n * 1e6
            out[f"{sync.lower()}_commits_per_s"] = n / dt
    return out


# ============================================================== DBOS side
DBOS_CODE = r'''
import json, os, sqlite3, sys, tempfile, time
quick = sys.argv[1] == "1"
FOLDER = tempfile.TemporaryDirectory(prefix="dbos-bench-")  # removed at exit
DB = os.path.join(FOLDER.name, "dbos.sqlite")
c = sqlite3.connect(DB); assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
c.close()
from dbos import DBOS
DBOS(config={"name": "garrison-bench", "system_database_url": f"sqlite:///{DB}",
             "log_level": "WARNING", "notification_listener_polling_interval_sec": 0.001})

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

@DBOS.workflow()
def echo_wf(n: int) -> int:
    for i in range(n):
        m = DBOS.recv("ping", timeout_seconds=30)
        DBOS.set_event(f"pong{i}", m)
    return n

def timed(fn, n):
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n

DBOS.launch()
out = {}
from dbos._dbos import _get_dbos_instance
import sqlalchemy as sa
with _get_dbos_instance()._sys_db.engine.connect() as conn:
    out["sqlite_journal_mode"] = conn.execute(sa.text("PRAGMA journal_mode")).scalar()
    out["sqlite_synchronous"] = conn.execute(sa.text("PRAGMA synchronous")).scalar()
n10, n1, nconc, nrt = (40, 60, 100, 20) if quick else (150, 300, 100, 100)
for i in range(20):
    wf10(i); wf1(i)
per10 = timed(wf10, n10)
per1 = timed(wf1, n1)
out.update({"seq_step_us_marginal": (per10 - per1) / 9 * 1e6,
            "seq_step_us_naive": per10 / 10 * 1e6, "wf10_ms": per10 * 1e3})
rounds = 1 if quick else 3
t0 = time.perf_counter()
for _ in range(rounds):
    handles = [DBOS.start_workflow(wf10, i) for i in range(nconc)]
    for i, h in enumerate(handles):
        assert h.get_result() == i + 10
out["conc100_step_us"] = (time.perf_counter() - t0) / (rounds * nconc * 10) * 1e6
h = DBOS.start_workflow(echo_wf, nrt)
wid = h.get_workflow_id()
lat = []
for i in range(nrt):
    s = time.perf_counter()
    DBOS.send(wid, i, "ping")
    v = DBOS.get_event(wid, f"pong{i}", timeout_seconds=30)
    lat.append(time.perf_counter() - s)
    assert v == i, (v, i)
assert h.get_result() == nrt
lat.sort()
out["msg_rt_us_p50"] = lat[len(lat) // 2] * 1e6
out["msg_rt_us_p90"] = lat[int(len(lat) * 0.9)] * 1e6
DBOS.destroy()
print(json.dumps(out))
'''


def dbos_side(quick: bool) -> dict[str, float] | str:
    try:
        import dbos  # noqa: F401
    except ImportError:
        return "dbos is not installed (pip install -e '.[bench]')"
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


async def echo(n: int) -> int:
    inbox = _process.inbox()
    for _ in range(n):
        msg = await inbox.receive()
        await _process.send(msg.sender, "pong", msg.payload)
    return n


def _round(d: dict[str, object]) -> dict[str, object]:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in d.items()}


def one_run(quick: bool) -> dict[str, object]:
    g = garrison_side(quick, "normal")
    g_full = garrison_side(quick, "full")
    floor = sqlite_side(quick)
    d = dbos_side(quick)
    out: dict[str, object] = {
        "garrison": _round(dict(g)),
        "garrison_full_sync": _round(dict(g_full)),
        "dbos": d if isinstance(d, str) else _round(dict(d)),
        "sqlite": _round(dict(floor)),
        # how close to the floor: one single-row commit per step would be 1.0
        "full_seq_step_vs_sqlite_full_commit": round(
            g_full["seq_step_us_marginal"] / floor["full_commit_us"], 2),
        "normal_seq_step_vs_sqlite_normal_commit": round(
            g["seq_step_us_marginal"] / floor["normal_commit_us"], 2),
    }
    if isinstance(d, dict):
        def ratio(key: str, mine: dict[str, float]) -> float:
            return round(d[key] / mine[key], 1)

        out["ratio_seq_step_vs_dbos"] = ratio("seq_step_us_marginal", g)
        out["ratio_conc100_step_vs_dbos"] = ratio("conc100_step_us", g)
        out["ratio_seq_step_full_vs_dbos"] = ratio("seq_step_us_marginal", g_full)
        out["ratio_conc100_step_full_vs_dbos"] = ratio("conc100_step_us", g_full)
        out["ratio_msg_rt_vs_dbos"] = ratio("msg_rt_us_p50", g)
        out["ratio_msg_rt_full_vs_dbos"] = ratio("msg_rt_us_p50", g_full)
        # the shapes users write: whole workflows one after another, and a loop of
        # awaited starts (DBOS's conc100 is its loop of start_workflow)
        out["ratio_wf10_vs_dbos"] = ratio("wf10_ms", g)
        out["ratio_wf10_full_vs_dbos"] = ratio("wf10_ms", g_full)
        out["ratio_loop100_vs_dbos"] = round(d["conc100_step_us"] / g["loop100_step_us"], 1)
        out["ratio_loop100_full_vs_dbos"] = round(
            d["conc100_step_us"] / g_full["loop100_step_us"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run (fewer iterations)")
    parser.add_argument("--runs", type=int, default=1, help="repeat, report median [min, max]")
    args = parser.parse_args()
    from bench._runs import summary

    runs = [one_run(args.quick) for _ in range(max(1, args.runs))]
    print(json.dumps({"bench": "workflow_steps", "runs": len(runs), **summary(runs)}))


if __name__ == "__main__":
    if __package__ in (None, ""):
        # run as a script: make the workflows importable as bench.workflow_steps
        import importlib

        mod = importlib.import_module("bench.workflow_steps")
        mod.main()
    else:
        main()
