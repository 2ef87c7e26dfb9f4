"""Durable workflow steps on PostgreSQL: garrison against DBOS on the same throwaway server.

    python bench/workflow_steps_pg.py [--quick] [--runs N]

Prints ONE JSON line. One throwaway PostgreSQL 15 (tests/_postgres.py: fsync=on,
127.0.0.1, a free port) serves every side of a run, each in a database of its own:

- ``garrison`` (``synchronous="normal"``: ``synchronous_commit=off``, survives a killed
  node) and ``garrison_full_sync`` (``synchronous="full"``: waits for the WAL flush,
  like DBOS), in this process:
  - ``seq_step_us_marginal`` / ``_naive``: sequential 10-step workflows whose step is
    ``x + 1``; marginal = (T10 - T1) / 9 per workflow, naive = T10 / 10;
  - ``conc100_nursery_step_us``: 100 workflows of 10 steps started from a nursery,
    then every result; wall time / steps;
  - ``conc100_loop_step_us``: ``await node.start_workflow`` 100 times in a loop, then
    every result (as a web handler starts them);
  - ``conc100_commits_per_step``: store transactions / steps in the two phases above;
  - ``msg_rt_us_p50`` / ``_p99``: a process sends to a waiting workflow, which sends
    back (both messages durable in the workflow's journal and inbox);
- ``dbos`` (bench/dbos_postgres.py's child process, its own interpreter): the same
  figures (``conc100_threads_step_us`` is its nursery equivalent: 100 threads);
- ``postgres``: plain sync psycopg, single-row autocommit INSERT p50/p99 (one commit,
  one round trip), with ``synchronous_commit`` on and off: the floor.

``--runs N`` repeats everything N times on fresh databases and reports, for each
figure, the median and ``[min, max]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import _postgres  # noqa: E402
import trio  # noqa: E402

import garrison  # noqa: E402
from garrison import process  # noqa: E402


# ============================================================== the workflows
@garrison.activity
async def small_step(i: int) -> int:
    return i + 1


async def wf10(x: int) -> int:
    for _ in range(10):
        x = await small_step(x)
    return x


async def wf1(x: int) -> int:
    return await small_step(x)


async def echo(n: int) -> int:
    inbox = process.inbox()
    for _ in range(n):
        msg = await inbox.receive()
        await process.send(msg.sender, "pong", msg.payload)
    return n


# ============================================================== garrison side
def garrison_side(url: str, quick: bool, synchronous: str) -> dict[str, float]:
    from garrison.persistence import PostgresStore

    n10, n1 = (40, 60) if quick else (200, 300)
    nconc, nrt = 100, (100 if quick else 1000)
    rounds = 1 if quick else 3
    out: dict[str, float] = {}

    async def main() -> None:
        store = PostgresStore(url, synchronous=synchronous)
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

            async def start(wid: str, i: int) -> None:
                await node.start_workflow(wf10, i, id=wid)

            steps = rounds * nconc * 10
            tx0 = store.statistics().transactions
            t0 = time.perf_counter()
            for r in range(rounds):
                async with trio.open_nursery() as nursery:
                    for i in range(nconc):
                        nursery.start_soon(start, f"n{r}-{i}", i)
                for i in range(nconc):
                    assert await node.workflow(f"n{r}-{i}").result() == i + 10
            out["conc100_nursery_step_us"] = (time.perf_counter() - t0) / steps * 1e6
            t0 = time.perf_counter()
            for r in range(rounds):
                for i in range(nconc):
                    await node.start_workflow(wf10, i, id=f"l{r}-{i}")
                for i in range(nconc):
                    assert await node.workflow(f"l{r}-{i}").result() == i + 10
            out["conc100_loop_step_us"] = (time.perf_counter() - t0) / steps * 1e6
            out["conc100_commits_per_step"] = (
                (store.statistics().transactions - tx0) / (2 * steps))

            wpid = await node.start_workflow(echo, nrt + 20, id="echo")
            lat: list[float] = []

            async def client() -> None:
                inbox = process.inbox()
                for i in range(nrt + 20):
                    s = time.perf_counter()
                    await process.send(wpid, "ping", i)
                    msg = await inbox.receive()
                    if i >= 20:
                        lat.append(time.perf_counter() - s)
                    assert msg.payload == i

            await node.wait(await node.spawn(client))
            lat.sort()
            out["msg_rt_us_p50"] = lat[len(lat) // 2] * 1e6
            out["msg_rt_us_p99"] = lat[int(len(lat) * 0.99)] * 1e6
        store.close()

    trio.run(main)
    return out


# ============================================================== the floor
def postgres_floor(url: str, n: int) -> dict[str, float]:
    import psycopg

    payload = '{"event":"step_done","wf":"0123456789abcdef","step":7,"out":"' + "x" * 40 + '"}'
    out: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE ev (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                     "wf text, step bigint, payload text, ts double precision)")
        cur = conn.cursor()
        ins = "INSERT INTO ev (wf, step, payload, ts) VALUES (%s, %s, %s, %s)"
        for sc in ("on", "off"):
            conn.execute(f"SET synchronous_commit = {sc}")
            lat = []
            for i in range(50 + n):
                t0 = time.perf_counter()
                cur.execute(ins, ("w", i, payload, time.time()))
                lat.append(time.perf_counter() - t0)
            lat = sorted(lat[50:])
            out[f"commit_sc_{sc}_us_p50"] = lat[n // 2] * 1e6
            out[f"commit_sc_{sc}_us_p99"] = lat[int(n * 0.99)] * 1e6
    return out


# ============================================================== one run, many runs
def one_run(quick: bool) -> dict[str, Any]:
    from bench.dbos_postgres import dbos_side

    server = _postgres.start()
    try:
        g = garrison_side(_postgres.create_db(server, "garrison"), quick, "normal")
        g_full = garrison_side(_postgres.create_db(server, "garrison_full"), quick, "full")
        floor = postgres_floor(_postgres.create_db(server, "floor"), 300 if quick else 3000)
        d = dbos_side(server.url("dbos_sys"), quick)
    finally:
        _postgres.stop(server)
    out: dict[str, Any] = {"garrison": g, "garrison_full_sync": g_full, "postgres": floor,
                           "dbos": d}
    if isinstance(d, dict):
        def ratio(theirs: str, mine: dict[str, float], key: str) -> float:
            return d[theirs] / mine[key]

        out["ratios"] = {
            "seq_step_vs_dbos": ratio("seq_step_us_marginal", g, "seq_step_us_marginal"),
            "seq_step_full_vs_dbos": ratio("seq_step_us_marginal", g_full,
                                           "seq_step_us_marginal"),
            "conc100_nursery_vs_dbos_threads": ratio("conc100_threads_step_us", g,
                                                     "conc100_nursery_step_us"),
            "conc100_loop_vs_dbos_loop": ratio("conc100_loop_step_us", g,
                                               "conc100_loop_step_us"),
            "conc100_nursery_full_vs_dbos_threads": ratio("conc100_threads_step_us", g_full,
                                                          "conc100_nursery_step_us"),
            "conc100_loop_full_vs_dbos_loop": ratio("conc100_loop_step_us", g_full,
                                                    "conc100_loop_step_us"),
            "msg_rt_vs_dbos": ratio("msg_rt_us_p50", g, "msg_rt_us_p50"),
        }
    return out


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: the value of a single run, else ``[median, min, max]``."""
    def merge(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            keys = [k for k in values[0] if all(isinstance(v, dict) and k in v for v in values)]
            return {k: merge([v[k] for v in values]) for k in keys}
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            rounded = [round(float(v), 2) for v in values]
            if len(values) == 1:
                return rounded[0]
            return [round(statistics.median(values), 2), min(rounded), max(rounded)]
        return values[0] if len(values) == 1 else values

    return {k: merge([r[k] for r in runs]) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run (fewer iterations)")
    parser.add_argument("--runs", type=int, default=1, help="repeat, report median [min, max]")
    args = parser.parse_args()
    runs = [one_run(args.quick) for _ in range(max(1, args.runs))]
    out = {"bench": "workflow_steps_pg", "runs": len(runs), **_summary(runs)}
    print(json.dumps(out))


if __name__ == "__main__":
    if __package__ in (None, ""):
        # run as a script: make the workflows importable as bench.workflow_steps_pg
        import importlib

        mod = importlib.import_module("bench.workflow_steps_pg")
        mod.main()
    else:
        main()
