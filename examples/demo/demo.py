"""The garrison demo: processes, messages, calls, EXIT events, a linked failure,
supervised services, and a durable workflow that survives ``kill -9``.

Run it with ``garrison run examples/demo/app.yaml --main app:main``.
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

import trio

from garrison import EventKind, process


def say(text: str) -> None:
    print(text, flush=True)


async def greeter() -> None:
    """A registered server: answers calls, counts casts."""
    process.register("greeter")
    seen = 0
    async for msg in process.inbox():
        if msg.topic == "hello":
            seen += 1
            await msg.reply(f"hello, {msg.payload}! (greeting #{seen})")
        elif msg.topic == "stop":
            return


async def square(n: int) -> int:
    await trio.sleep(0.01)
    return n * n


async def flaky() -> None:
    await trio.sleep(0.01)
    raise RuntimeError("disk on fire")


async def bystander() -> None:
    """Linked to a process that will fail, without trapping links: it dies too."""
    await process.spawn_linked(flaky)
    await trio.sleep_forever()


async def main() -> str:
    say("[demo]    the errors logged below are deliberate: crashes, a linked failure and "
        "service restarts")
    say(f"[spawn]   root process is {process.pid()}")
    g = await process.spawn(greeter)
    say(f"[call]    {await process.call(g, 'hello', 'world')}")
    # it registered itself before answering, so its name works now
    say(f"[call]    {await process.call('greeter', 'hello', 'garrison')}")

    workers = [await process.spawn_monitored(square, n) for n in range(1, 4)]
    results = {}
    events = process.events()
    while len(results) < len(workers):
        ev = await events.receive()
        results[ev.pid] = ev.result
    say(f"[EXIT]    three monitored workers returned {[results[w] for w in workers]}")

    process.set_options(trap_links=True)
    child = await process.spawn_linked(flaky)
    ev = await events.receive()
    assert ev.kind == EventKind.LINK_DOWN and ev.pid == child
    say(f"[LINK]    trapped LINK_DOWN from {ev.pid}: {ev.error}")

    b = await process.spawn_monitored(bystander)
    ev = await events.receive()
    assert ev.kind == EventKind.EXIT and ev.pid == b
    say(f"[LINK]    an untrapped linked process died with its partner: {ev.error}")

    # two services from app.yaml run beside us: app:kv, and app:clock which needs it
    # (the third start counts itself, then records the ticks it found: wait for both)
    while (ticks := await process.call("app:kv", "get", "ticks_before_start_3")) is None:
        await trio.sleep(0.05)
    say(f"[service] app:clock crashed and was restarted: 3 starts, {ticks} ticks so far")

    await survive_kill_9()

    await process.send("greeter", "stop")
    return "demo finished: every part ran as shown above"


CRASH_DEMO = Path(__file__).resolve().parent.parent / "crash_demo.py"


async def survive_kill_9() -> None:
    """Run a three-step workflow in a child Python process, SIGKILL that process
    while the workflow sleeps durably, and let a fresh process resume it."""
    # (a folder of its own, removed at the end: the demo leaves nothing behind)
    with tempfile.TemporaryDirectory(prefix="garrison-demo-") as folder:
        store = str(Path(folder) / "demo.db")
        cmd = [sys.executable, str(CRASH_DEMO), "--child", store]
        first = await trio.lowlevel.open_process(cmd, stdout=-1)  # -1: subprocess.PIPE
        assert first.stdout is not None
        seen = b""
        while b"step 1 runs" not in seen:
            chunk = await first.stdout.receive_some()
            if not chunk:
                break
            seen += chunk
        for line in seen.decode().splitlines():
            say(f"[crash]   {line}")
        say(f"[crash]   child {first.pid} ran step 1 and sleeps durably; sending SIGKILL")
        await trio.sleep(0.5)  # step 1 is committed to the journal by now
        first.send_signal(signal.SIGKILL)
        await first.wait()
        second = await trio.run_process(cmd, capture_stdout=True)
        lines = second.stdout.decode().splitlines()
        for line in lines:
            say(f"[crash]   {line}")
    assert not any("step 1 runs" in line for line in lines), "step 1 ran twice"
    say("[crash]   the workflow survived kill -9: step 1 ran once, steps 2 and 3 after resume")
