"""Memory per idle process, measured in a fresh interpreter.

    python bench/memory.py [--processes N] [--traced]

Spawns N processes that each wait in ``inbox().receive()`` and reports the growth of
the resident set (``/proc/self/statm``) and of Python's traced allocations, next to
the same number of raw trio tasks parked on a ``trio.Event`` (the floor). Prints one
JSON line.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=100_000)
    parser.add_argument("--traced", action="store_true", help="also count with tracemalloc")
    args = parser.parse_args()
    if args.traced:
        tracemalloc.start()
    out: dict[str, object] = {"bench": "memory", "python": sys.version.split()[0],
                              "n_processes": args.processes}
    out["trio_raw"] = trio.run(measure_trio, args.processes)
    out["garrison"] = trio.run(measure_processes, args.processes)
    g = out["garrison"]
    assert isinstance(g, dict)
    out["idle_processes_mib"] = round(g["rss_total_mib"], 1)
    out["under_1_gib"] = g["rss_total_mib"] < 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
