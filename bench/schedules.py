"""What the scheduler costs with many schedules. Prints one JSON line.

    python bench/schedules.py [--quick] [--schedules N] [--idle SECONDS] [--burst M]

- idle: N schedules (default 10,000: half daily cron expressions in a dozen time zones,
  half ``every`` 1..7 days), none due in the window, in a durable store; the process CPU
  time (every thread) over ``--idle`` seconds of real time (default 10) while the node
  runs, next to the same node with no schedule (the store's own wake-up poller), and the
  time ``open_node`` takes to load them.
- burst: M schedules (default 10,000) all due at the same second (a 6-field cron
  expression with seconds), real time; lateness of each tick = when its workflow was
  created (the store's ``created``) minus the tick: p50, p99, max, and the time until
  every workflow of the burst was created.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import trio  # noqa: E402

import garrison  # noqa: E402
from garrison.hosts.workflow._schedules import ScheduleSpec  # noqa: E402
from garrison.persistence import SQLiteStore, Transaction  # noqa: E402

ZONES = ["UTC", "Europe/Riga", "Europe/London", "America/New_York", "America/Los_Angeles",
         "Asia/Tokyo", "Asia/Kolkata", "Australia/Sydney", "Africa/Cairo",
         "America/Sao_Paulo", "Pacific/Auckland", "Asia/Singapore"]


async def report(tag: str) -> str:
    """The scheduled workflow: returns at once."""
    return tag


def _seed(path: str, specs: list[dict[str, object]], now: float) -> None:
    """Write the schedules straight into the store (one transaction)."""
    tx = Transaction()
    for i, kw in enumerate(specs):
        spec = ScheduleSpec.parse(**kw)  # type: ignore[arg-type]
        tx.put_schedule(f"s{i:05d}", host="workflows", workflow="schedules:report",
                        input=[f"s{i}"], cron=spec.cron, every=spec.every,
                        timezone=spec.timezone, catchup_window=3600.0,
                        next_tick=spec.next_after(now), time=now)
    with SQLiteStore(path) as store:
        store.write(tx)


def _idle_specs(n: int, now: float, window: float) -> list[dict[str, object]]:
    rng = random.Random(7)
    out: list[dict[str, object]] = []
    while len(out) < n:
        if len(out) % 2:
            kw: dict[str, object] = {"every": 86400 * rng.randint(1, 7)}
        else:
            kw = {"cron": f"{rng.randint(0, 59)} {rng.randint(0, 23)} * * *",
                  "timezone": rng.choice(ZONES)}
        nxt = ScheduleSpec.parse(**kw).next_after(now)  # type: ignore[arg-type]
        if nxt is not None and nxt > now + window + 30:  # none due in the window
            out.append(kw)
    return out


async def _idle(path: str | None, seconds: float) -> dict[str, float]:
    t0 = time.perf_counter()
    async with garrison.open_node(store=path) as node:
        opened = time.perf_counter() - t0
        await trio.sleep(0.5)  # settle
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await trio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        loaded = len(node.hosts["workflows"].scheduler.rows)
        started = node.stats()["schedules"]["workflows"]["started"]
    return {"open_node_s": round(opened, 3), "schedules": loaded,
            "idle_cpu_s": round(cpu, 4), "idle_cpu_percent": round(100 * cpu / wall, 3),
            "ticks_in_window": started}


async def idle(n: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="garrison-schedules-") as folder:
        empty = os.path.join(folder, "empty.db")
        full = os.path.join(folder, "full.db")
        now = time.time()
        SQLiteStore(empty).close()
        _seed(full, _idle_specs(n, now, seconds + 30), now)
        base = await _idle(empty, seconds)
        loaded = await _idle(full, seconds)
        return {"no_schedules": base, "with_schedules": loaded,
                "scheduler_cpu_percent": round(loaded["idle_cpu_percent"]
                                               - base["idle_cpu_percent"], 3)}


async def burst(m: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="garrison-burst-") as folder:
        path = os.path.join(folder, "burst.db")
        now = time.time()
        due = dt.datetime.fromtimestamp(int(now) + 6, dt.UTC)  # all due at this second
        cron = f"{due.second} {due.minute} {due.hour} {due.day} {due.month} *"
        _seed(path, [{"cron": cron}] * m, now)
        tick = due.timestamp()
        async with garrison.open_node(store=path) as node:
            store = node.hosts["workflows"].store
            with trio.fail_after(600):
                while node.stats()["schedules"]["workflows"]["started"] < m:
                    await trio.sleep(0.05)
            records = store.list_workflows()
        late = sorted(r.created.timestamp() - tick for r in records)  # type: ignore[union-attr]
        q = statistics.quantiles(late, n=100)
        return {"schedules": m, "workflows": len(records),
                "lateness_p50_ms": round(q[49] * 1000, 2),
                "lateness_p99_ms": round(q[98] * 1000, 2),
                "lateness_max_ms": round(late[-1] * 1000, 2),
                "all_started_s": round(late[-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 schedules, 2 s idle")
    parser.add_argument("--schedules", type=int)
    parser.add_argument("--idle", type=float)
    parser.add_argument("--burst", type=int)
    args = parser.parse_args()
    n = args.schedules or (1000 if args.quick else 10_000)
    seconds = args.idle or (2.0 if args.quick else 10.0)
    m = args.burst or n
    sys.modules.setdefault("schedules", sys.modules[__name__])  # report's module:qualname
    out = {"bench": "schedules", "idle": trio.run(idle, n, seconds),
           "burst": trio.run(burst, m)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
