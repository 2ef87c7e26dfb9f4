"""Memory per idle process and per waiting workflow, measured in a fresh interpreter.

    python bench/memory.py [--processes N] [--workflows M] [--traced] [--quick]

Each measurement runs in a fresh interpreter (memory an earlier one freed would be
reused and hide growth). Spawns N processes (default 100,000) that each wait in
``inbox().receive()`` and reports the growth of the resident set
(``/proc/self/statm``) and of Python's traced allocations, next to the same number
of raw trio tasks parked on a ``trio.Event`` (the floor). Then starts M workflows
(default 10,000) on a durable store that each did one step and wait in
``inbox().receive()``, and reports the same per waiting workflow (its journal,
durable inbox and task stay in memory). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tracemalloc

import trio

import garrison
from garrison import process

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


async def idle() -> None:
    await process.inbox().receive()


async def measure_processes(n: int) -> dict[str, float]:
    async with garrison.open_node() as node:
        gc.collect()
        r0, (t0, _) = rss(), tracemalloc.get_traced_memory()
        pids = [await node.spawn(idle) for _ in range(n)]
        await trio.sleep(0.05)
        while node.stats()["processes"] < n:
            await trio.sleep(0.01)
        gc.collect()
        r1, (t1, _) = rss(), tracemalloc.get_traced_memory()
        del pids
    return {"rss_bytes_per_process": (r1 - r0) / n, "traced_bytes_per_process": (t1 - t0) / n,
            "rss_total_mib": (r1 - r0) / 2**20}


@garrison.activity
async def _step(i: int) -> int:
    return i + 1


async def waiting_workflow(i: int) -> int:
    i = await _step(i)
    await process.inbox().receive()
    return i


async def _start(node: garrison.Node, i: int) -> None:
    await node.start_workflow(waiting_workflow, i, id=f"m-{i}")


async def measure_workflows(n: int) -> dict[str, float]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="garrison-memory-") as folder:
        path = os.path.join(folder, "wf.db")
        async with garrison.open_node(store=path) as node:
            await node.start_workflow(waiting_workflow, -1, id="warm")  # imports, caches
            gc.collect()
            r0, (t0, _) = rss(), tracemalloc.get_traced_memory()
            for base in range(0, n, 500):
                async with trio.open_nursery() as nursery:
                    for i in range(base, min(n, base + 500)):
                        nursery.start_soon(_start, node, i)
            i = 0
            while i < n:
                if node.workflow(f"m-{i}").status() == "waiting":
                    i += 1
                else:
                    await trio.sleep(0.01)
            gc.collect()
            r1, (t1, _) = rss(), tracemalloc.get_traced_memory()
        return {"rss_bytes_per_workflow": (r1 - r0) / n, "traced_bytes_per_workflow": (t1 - t0) / n,
                "rss_total_mib": (r1 - r0) / 2**20}


async def measure_trio(n: int) -> dict[str, float]:
    ev = trio.Event()
    gc.collect()
    r0, (t0, _) = rss(), tracemalloc.get_traced_memory()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(ev.wait)
        await trio.sleep(0.05)
        gc.collect()
        r1, (t1, _) = rss(), tracemalloc.get_traced_memory()
        ev.set()
    return {"rss_bytes_per_task": (r1 - r0) / n, "traced_bytes_per_task": (t1 - t0) / n}


def _measure_alone(what: str, n: int, traced: bool) -> dict[str, float]:
    """One measurement in a fresh interpreter: memory freed by an earlier one would be
    reused and hide growth."""
    import subprocess

    args = [sys.executable, __file__, "--only", what, "--processes", str(n), "--workflows", str(n)]
    if traced:
        args.append("--traced")
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=100_000)
    parser.add_argument("--workflows", type=int, default=None)
    parser.add_argument("--traced", action="store_true", help="also count with tracemalloc")
    parser.add_argument("--quick", action="store_true", help="10,000 processes, 2,000 workflows")
    parser.add_argument("--only", choices=["trio", "processes", "workflows"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.traced:
        tracemalloc.start()
    if args.only:  # a child of the run below
        measure = {"trio": measure_trio, "processes": measure_processes,
                   "workflows": measure_workflows}[args.only]
        print(json.dumps(trio.run(measure, args.processes)))
        return
    if args.quick:
        args.processes = min(args.processes, 10_000)
    n_wf = args.workflows or (2000 if args.quick else 10_000)
    out: dict[str, object] = {"bench": "memory", "python": sys.version.split()[0],
                              "n_processes": args.processes}
    t = _measure_alone("trio", args.processes, args.traced)
    g = _measure_alone("processes", args.processes, args.traced)
    w = _measure_alone("workflows", n_wf, args.traced)
    out["trio_raw"] = t
    out["garrison"] = g
    out["idle_processes_mib"] = round(g["rss_total_mib"], 1)
    out["under_1_gib"] = g["rss_total_mib"] < 1024
    out["n_workflows"] = n_wf
    out["garrison_workflows"] = w
    out["kib_per_waiting_workflow"] = round(w["rss_bytes_per_workflow"] / 1024, 1)
    out["bytes_per_idle_process"] = round(g["rss_bytes_per_process"])
    out["ratio_process_vs_trio_task_bytes"] = round(
        g["rss_bytes_per_process"] / max(1.0, t["rss_bytes_per_task"]), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
