"""Recovery and replay after a restart. Prints one JSON line.

    python bench/recovery.py [--quick] [--workflows N] [--steps K]

- recovery: N workflows (default 10,000) each did 3 steps and wait for a message;
  the node is closed and a new one opens the store. Measured: the time until
  ``open_node`` returns (every unfinished workflow loaded and marked running), until
  every one of them is replayed up to its wait (``status() == "waiting"``), and until
  every one got its message and finished.
- replay: 20 workflows of K steps each (default 5,000: 100,000 journal records)
  wait at the end; after a restart, journal records replayed per second, from
  ``open_node`` until all are waiting again (reading the journal from SQLite
  included), next to the pure in-memory replay rate of the engine (``Cursor``).

Peer, same run: DBOS on SQLite (WAL, 1 ms poll) with 200 workflows (50 with
``--quick``; 10,000 would take minutes) that did 3 steps and wait in ``recv``; the
process is killed (``kill -9``), a new one launches DBOS (which recovers them) and
sends each its message. Compared: restart to all finished, garrison recovering the same
number of workflows (``garrison_same_n_all_finished_s``), and per workflow.
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
from garrison import process  # noqa: E402

STEPS = 3


@garrison.activity
async def step(i: int) -> int:
    return i + 1


async def steps_then_wait(x: int, k: int) -> int:
    for _ in range(k):
        x = await step(x)
    msg = await process.inbox().receive()
    return x + msg.payload


async def _wait_all(node: garrison.Node, ids: list[str], status: str) -> None:
    """Until every workflow in ``ids`` has ``status`` (they only move forward here)."""
    i = 0
    while i < len(ids):
        if node.workflow(ids[i]).status() == status:
            i += 1
            continue
        await trio.sleep(0.002)


async def _start_all(node: garrison.Node, ids: list[str], k: int) -> None:
    async with trio.open_nursery() as nursery:
        for n, wid in enumerate(ids):
            nursery.start_soon(_start, node, wid, n, k)
            if n % 500 == 499:  # bounded: 500 at a time
                await trio.sleep(0)
    await _wait_all(node, ids, "waiting")


async def _start(node: garrison.Node, wid: str, n: int, k: int) -> None:
    await node.start_workflow(steps_then_wait, n, k, id=wid)


async def recovery(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="garrison-recovery-") as folder:
        path = os.path.join(folder, "wf.db")
        ids = [f"r-{i}" for i in range(n)]
        async with garrison.open_node(store=path) as node:
            await _start_all(node, ids, STEPS)
        out: dict[str, float] = {"workflows": n, "journal_records": n * STEPS}
        t0 = time.perf_counter()
        async with garrison.open_node(store=path) as node:  # recovery happens here
            out["open_node_s"] = time.perf_counter() - t0
            await _wait_all(node, ids, "waiting")
            out["all_resumed_s"] = time.perf_counter() - t0
            for i, wid in enumerate(ids):
                await node.send(garrison.Pid("workflows", wid), "go", i)
            for i, wid in enumerate(ids):
                assert await node.workflow(wid).result() == i + STEPS + i
            out["all_finished_s"] = time.perf_counter() - t0
        return out


async def replay(n_wf: int, k: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="garrison-replay-") as folder:
        path = os.path.join(folder, "wf.db")
        ids = [f"p-{i}" for i in range(n_wf)]
        async with garrison.open_node(store=path) as node:
            await _start_all(node, ids, k)
        records = n_wf * k
        t0 = time.perf_counter()
        async with garrison.open_node(store=path) as node:
            t_open = time.perf_counter() - t0
            await _wait_all(node, ids, "waiting")
            dt = time.perf_counter() - t0
        return {"workflows": n_wf, "journal_records": records, "open_node_s": t_open,
                "all_replayed_s": dt, "records_per_s": records / dt}


DBOS_CODE = r'''import json, os, sqlite3, sys, time, signal, subprocess
N = int(sys.argv[2]) if len(sys.argv) > 2 else 200
DB = sys.argv[3]
mode = sys.argv[1]
if mode in ("start", "recover"):
    from dbos import DBOS, SetWorkflowID
    DBOS(config={"name": "garrison-bench-rec", "system_database_url": f"sqlite:///{DB}",
                 "log_level": "WARNING", "notification_listener_polling_interval_sec": 0.001})
    @DBOS.step()
    def small_step(i: int) -> int:
        return i + 1
    @DBOS.workflow()
    def waiter(x: int) -> int:
        for _ in range(3):
            x = small_step(x)
        m = DBOS.recv("go", timeout_seconds=120)
        return x + m
    t0 = time.perf_counter()
    DBOS.launch()
    if mode == "start":
        for i in range(N):
            with SetWorkflowID(f"r-{i}"):
                DBOS.start_workflow(waiter, i)
        time.sleep(3600)
    t_launch = time.perf_counter() - t0
    for i in range(N):
        DBOS.send(f"r-{i}", i, "go")
    for i in range(N):
        assert DBOS.retrieve_workflow(f"r-{i}").get_result() == i + 3 + i
    print(json.dumps({"launch_s": t_launch, "all_finished_s": time.perf_counter() - t0}))
    os._exit(0)
# parent
for suf in ("", "-wal", "-shm"):
    if os.path.exists(DB + suf): os.remove(DB + suf)
c = sqlite3.connect(DB); c.execute("PRAGMA journal_mode=WAL"); c.close()
p = subprocess.Popen([sys.executable, __file__, "start", str(N), DB],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
deadline = time.time() + 300
while time.time() < deadline:
    time.sleep(0.2)
    try:
        c = sqlite3.connect(DB)
        n = c.execute("SELECT count(*) FROM operation_outputs "
                      "WHERE function_name LIKE '%small_step%'").fetchone()[0]
        w = c.execute("SELECT count(*) FROM workflow_status").fetchone()[0]
        c.close()
    except sqlite3.Error:
        continue
    if n >= N * 3 and w >= N: break
time.sleep(0.5)
os.kill(p.pid, signal.SIGKILL); p.wait()
t0 = time.perf_counter()
r = subprocess.run([sys.executable, __file__, "recover", str(N), DB],
                   capture_output=True, text=True, timeout=600)
lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
if not lines:
    raise SystemExit(r.stderr[-800:])
out = json.loads(lines[-1])
out["restart_process_s"] = time.perf_counter() - t0
out["workflows"] = N
print(json.dumps(out))
'''


def dbos_side(n: int) -> dict[str, float] | str:
    import subprocess

    try:
        import dbos  # noqa: F401
    except ImportError:
        return "dbos is not installed (pip install -e '.[bench]')"
    with tempfile.TemporaryDirectory(prefix="dbos-recovery-") as folder:
        script = os.path.join(folder, "dbos_recovery.py")
        with open(script, "w") as f:
            f.write(DBOS_CODE)
        cmd = [sys.executable, script, "parent", str(n), os.path.join(folder, "r.db")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            return (done.stderr.strip().splitlines() or ["failed"])[-1]
        result: dict[str, float] = json.loads(lines[-1])
        return result


def cursor_rate(k: int) -> float:
    """The replay engine alone: ``Cursor.take`` over an in-memory journal."""
    from garrison.hosts.workflow import Cursor, Entry

    journal = [Entry(i + 1, "activity", "bench.recovery:step", {"ok": i}) for i in range(k)]
    t0 = time.perf_counter()
    c = Cursor("w", journal)
    for _ in range(k):
        c.take("activity", "bench.recovery:step")
    return k / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 workflows, 20,000 records")
    parser.add_argument("--workflows", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps per replayed workflow")
    args = parser.parse_args()
    n = args.workflows or (1000 if args.quick else 10_000)
    k = args.steps or (1000 if args.quick else 5000)
    rec = trio.run(recovery, n)
    rep = trio.run(replay, 20, k)
    n_dbos = 50 if args.quick else 200
    d = dbos_side(n_dbos)
    same_n = trio.run(recovery, n_dbos)  # garrison at DBOS's size, for the ratio
    out: dict[str, object] = {
        "bench": "recovery",
        "recovery": {key: round(v, 3) for key, v in rec.items()},
        "replay": {key: round(v, 3) for key, v in rep.items()},
        "cursor_only_records_per_s": round(cursor_rate(100_000)),
        "dbos": d if isinstance(d, str) else {key: round(v, 3) for key, v in d.items()},
        "garrison_ms_per_recovered_workflow": round(rec["all_finished_s"] / n * 1e3, 3),
        "garrison_same_n_all_finished_s": round(same_n["all_finished_s"], 3),
        "target_resume_10k_under_5s": rec["all_resumed_s"] < 5.0 if n >= 10_000 else None,
        "target_replay_100k_per_s": rep["records_per_s"] >= 100_000,
    }
    if isinstance(d, dict):
        out["dbos_ms_per_recovered_workflow"] = round(d["all_finished_s"] / n_dbos * 1e3, 3)
        # restart -> all finished, both with n_dbos waiting workflows
        out["ratio_recovery_vs_dbos"] = round(d["all_finished_s"] / same_n["all_finished_s"], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    if __package__ in (None, ""):
        import importlib

        importlib.import_module("bench.recovery").main()
    else:
        main()
