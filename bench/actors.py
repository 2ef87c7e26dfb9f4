"""Process runtime vs trio memory channels and pykka, in one run. Prints one JSON line.

    python bench/actors.py [--quick]

- messages: one process sends N messages to another (vs a trio memory channel with
  buffer 0, 1 producer -> 1 consumer, and pykka ``tell`` drained by an ``ask``)
- call: request/reply round trips (vs trio ping-pong over two channels, and pykka ``ask``)
- spawn: spawn + exit of a trivial process (vs trio ``nursery.start_soon``, pykka start/stop)
- spawn from outside: ``await node.spawn`` of 10,000 trivial processes from code that is
  not a process (a test, a web handler), then ``await node.wait`` on each (vs trio
  ``start_soon`` of 10,000 trivial tasks in a nursery, until they have all ended);
  five such batches one after the other, per process or task

``--runs N`` repeats everything N times in this invocation and reports each figure as
``[median, min, max]`` (a ratio is taken within a run).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import trio

import garrison
from garrison import process


# ---------------------------------------------------------------- garrison
async def _consumer(n: int) -> int:
    box = process.inbox()
    for _ in range(n):
        await box.receive()
    return n


async def _producer(to: garrison.Pid, n: int) -> None:
    for i in range(n):
        await process.send(to, "x", (i, "x", 1.0))


async def _echo() -> None:
    async for msg in process.inbox():
        await msg.reply(msg.payload)


async def _noop() -> None:
    return None


#: processes spawned from outside (and trio tasks beside them), in batches of
N_OUTSIDE = 10_000
#: batches (a batch takes ~0.1 s: several, so that one burst of the machine's other
#: load does not make the figure of a run)
OUTSIDE_BATCHES = 5


async def garrison_figures(n_msgs: int, n_calls: int, n_spawn: int) -> dict[str, float]:
    out: dict[str, float] = {}
    async with garrison.open_node() as node:

        async def messages() -> float:
            c = await process.spawn_monitored(_consumer, n_msgs)
            t0 = time.perf_counter()
            await process.spawn(_producer, c, n_msgs)
            await process.events().receive()
            return time.perf_counter() - t0

        async def calls() -> float:
            e = await process.spawn(_echo)
            await process.call(e, "warm", 0)
            t0 = time.perf_counter()
            for i in range(n_calls):
                await process.call(e, "q", i)
            dt = time.perf_counter() - t0
            await process.terminate(e)
            return dt

        async def spawns() -> float:
            async def spawner() -> None:
                for _ in range(n_spawn):
                    await process.spawn(_noop)

            t0 = time.perf_counter()
            await process.spawn_monitored(spawner)
            await process.events().receive()
            while node.stats()["processes"] > 1:
                await trio.sleep(0)
            return time.perf_counter() - t0

        async def main() -> tuple[float, float, float]:
            await messages()  # warm-up
            return await messages(), await calls(), await spawns()

        dt_msgs, dt_calls, dt_spawn = await node.wait(await node.spawn(main))

        # from outside any process: spawn a batch, then wait for each
        t0 = time.perf_counter()
        for _ in range(OUTSIDE_BATCHES):
            pids = [await node.spawn(_noop) for _ in range(N_OUTSIDE)]
            for pid in pids:
                await node.wait(pid)
        dt_outside = time.perf_counter() - t0
    out["spawn_outside_us"] = dt_outside / (OUTSIDE_BATCHES * N_OUTSIDE) * 1e6
    out["msgs_per_s"] = n_msgs / dt_msgs
    out["call_rt_per_s"] = n_calls / dt_calls
    out["call_us"] = dt_calls / n_calls * 1e6
    out["spawn_exit_per_s"] = n_spawn / dt_spawn
    out["spawn_exit_us"] = dt_spawn / n_spawn * 1e6
    return out


# ---------------------------------------------------------------- trio (the floor)
async def trio_figures(n_msgs: int, n_calls: int, n_spawn: int) -> dict[str, float]:
    send, recv = trio.open_memory_channel[tuple[int, str, float]](0)

    async def producer() -> None:
        async with send:
            for i in range(n_msgs):
                await send.send((i, "x", 1.0))

    async def consumer() -> None:
        async with recv:
            async for _ in recv:
                pass

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        nursery.start_soon(producer)
    dt_msgs = time.perf_counter() - t0

    a_send, a_recv = trio.open_memory_channel[int](0)
    b_send, b_recv = trio.open_memory_channel[int](0)

    async def ponger() -> None:
        async with b_send:
            async for msg in a_recv:
                await b_send.send(msg)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ponger)
        async with a_send:
            for i in range(n_calls):
                await a_send.send(i)
                await b_recv.receive()
    dt_calls = time.perf_counter() - t0

    async def trivial() -> None:
        pass

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n_spawn):
            nursery.start_soon(trivial)
    dt_spawn = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(OUTSIDE_BATCHES):
        async with trio.open_nursery() as nursery:
            for _ in range(N_OUTSIDE):
                nursery.start_soon(trivial)
    dt_outside = time.perf_counter() - t0
    return {
        "start_soon_10k_us": dt_outside / (OUTSIDE_BATCHES * N_OUTSIDE) * 1e6,
        "msgs_per_s": n_msgs / dt_msgs,
        "pingpong_rt_per_s": n_calls / dt_calls,
        "pingpong_us": dt_calls / n_calls * 1e6,
        "start_soon_per_s": n_spawn / dt_spawn,
        "start_soon_us": dt_spawn / n_spawn * 1e6,
    }


# ---------------------------------------------------------------- pykka
def pykka_figures(n_msgs: int, n_calls: int, n_spawn: int) -> dict[str, float] | None:
    try:
        import pykka
    except ImportError:
        return None

    class Counter(pykka.ThreadingActor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def on_receive(self, message: object) -> object:
            if message == "get":
                return self.n
            self.n += 1
            return None

    class Noop(pykka.ThreadingActor):  # type: ignore[misc]
        pass

    ref = Counter.start()
    for i in range(1000):
        ref.tell(("inc", i))
    base = ref.ask("get")
    t0 = time.perf_counter()
    for i in range(n_msgs):
        ref.tell(("inc", i))
    assert ref.ask("get") - base == n_msgs
    dt_tell = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n_calls):
        ref.ask("get")
    dt_ask = time.perf_counter() - t0
    ref.stop()
    n_sp = max(n_spawn // 10, 100)
    t0 = time.perf_counter()
    for _ in range(n_sp):
        Noop.start().stop()
    dt_spawn = time.perf_counter() - t0
    pykka.ActorRegistry.stop_all()
    return {
        "tell_msgs_per_s": n_msgs / dt_tell,
        "ask_rt_per_s": n_calls / dt_ask,
        "ask_us": dt_ask / n_calls * 1e6,
        "spawn_stop_per_s": n_sp / dt_spawn,
    }


def one_run(quick: bool) -> dict[str, object]:
    n_msgs, n_calls, n_spawn = (20_000, 5_000, 10_000) if quick else (200_000, 50_000, 100_000)
    g = trio.run(garrison_figures, n_msgs, n_calls, n_spawn)
    t = trio.run(trio_figures, n_msgs, n_calls, n_spawn)
    p = pykka_figures(n_msgs, min(n_calls, 20_000), n_spawn)
    out: dict[str, object] = {
        "python": sys.version.split()[0],
        "trio": trio.__version__,
        "garrison": {k: round(v, 2) for k, v in g.items()},
        "trio_raw": {k: round(v, 2) for k, v in t.items()},
        "ratio_msgs_vs_trio_channel": round(g["msgs_per_s"] / t["msgs_per_s"], 2),
        "ratio_call_vs_trio_pingpong": round(g["call_rt_per_s"] / t["pingpong_rt_per_s"], 2),
        "ratio_spawn_vs_start_soon": round(g["spawn_exit_per_s"] / t["start_soon_per_s"], 2),
        "ratio_spawn_outside_vs_start_soon": round(
            t["start_soon_10k_us"] / g["spawn_outside_us"], 2),
    }
    if p is not None:
        out["pykka"] = {k: round(v, 2) for k, v in p.items()}
        out["ratio_msgs_vs_pykka_tell"] = round(g["msgs_per_s"] / p["tell_msgs_per_s"], 2)
        out["ratio_call_vs_pykka_ask"] = round(g["call_rt_per_s"] / p["ask_rt_per_s"], 2)
        out["ratio_spawn_vs_pykka"] = round(g["spawn_exit_per_s"] / p["spawn_stop_per_s"], 2)
    else:  # (python -m bench prints it under the table, where pykka's figures are None)
        out["pykka"] = "pykka is not installed (pip install -e '.[bench]')"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--runs", type=int, default=1, help="repeat, report median [min, max]")
    args = parser.parse_args()
    logging.getLogger("garrison").setLevel(logging.ERROR)  # the echo server is terminated
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench._runs import summary

    runs = [one_run(args.quick) for _ in range(max(1, args.runs))]
    print(json.dumps({"bench": "actors", "runs": len(runs), **summary(runs)}))


if __name__ == "__main__":
    main()
