"""Processes used by tests/test_services.py as config sources."""

from __future__ import annotations

import trio

import garrison
from garrison import EventKind, process

#: (virtual time, service, what) — reset by each test
LOG: list[tuple[float, str, str]] = []
#: how many times each crasher should still fail
FAILS: dict[str, int] = {}


def note(who: str, what: str) -> None:
    LOG.append((trio.current_time(), who, what))


async def steady(name: str) -> None:
    note(name, "start")
    try:
        async for msg in process.inbox():
            if msg.call_ref is not None:
                await msg.reply(f"{name} got {msg.payload}")
    finally:
        note(name, "stop")


async def polite(name: str) -> None:
    """Stops cleanly on CANCEL."""
    note(name, "start")
    ev = await process.events().receive()
    assert ev.kind == EventKind.CANCEL
    note(name, "stop")


async def stubborn(name: str) -> None:
    """Reads its events (so CANCEL is cooperative) but ignores CANCEL."""
    process.events()
    note(name, "start")
    try:
        await trio.sleep_forever()
    finally:
        note(name, "killed")


async def shielded(name: str) -> None:
    """Ignores CANCEL and shields a 30 s cleanup from the termination that follows."""
    process.events()
    note(name, "start")
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(30)
        note(name, "cleaned up")


async def tidy(seconds: float) -> None:
    """On ``CANCEL``, cleans up for ``seconds`` (not shielded: a termination cuts it
    short); notes under its node's name (a cluster's nodes in one process)."""
    who = garrison.current_node().name
    events = process.events()
    note(who, "start")
    try:
        while (await events.receive()).kind != EventKind.CANCEL:
            pass
        note(who, "cancel")
        await trio.sleep(seconds)
        note(who, "cleaned up")
    finally:
        note(who, "ended")


async def cleanup_fails(name: str) -> None:
    note(name, "start")
    try:
        await trio.sleep_forever()
    finally:
        raise ValueError(f"cleanup of {name} failed")


async def crasher(name: str, after: float = 0) -> None:
    """Fails FAILS[name] more times (after `after` seconds), then runs forever."""
    note(name, "start")
    await trio.sleep(after)
    if FAILS.get(name, 0) > 0:
        FAILS[name] -= 1
        raise RuntimeError(f"{name} crashed")
    await trio.sleep_forever()


async def instant_crasher(name: str) -> None:
    """Fails at once, before its first checkpoint, every time."""
    note(name, "start")
    raise RuntimeError(f"{name} crashed at once")


async def finisher(name: str) -> str:
    note(name, "start")
    return "done"


async def returns_after(name: str, seconds: float) -> str:
    """Runs ``seconds``, then returns (a one-shot set-up)."""
    note(name, "start")
    await trio.sleep(seconds)
    return "done"


async def registers_itself(name: str) -> None:
    """Registers its own service's entry id (allowed: it is the service's process)."""
    process.register(name)
    await steady(name)


async def ticker(name: str) -> None:
    """A workflow service: ticks until it is cancelled."""
    from garrison import workflow

    note(name, "start")
    while True:
        await workflow.sleep(1)


async def brief(name: str) -> None:
    """A workflow service: runs 2 s, then returns (its queue slot frees)."""
    from garrison import workflow

    note(name, "start")
    await workflow.sleep(2)


async def sleeper(name: str) -> None:
    """A workflow: notes each run of its code, sleeps an hour."""
    from garrison import workflow

    note(name, "start")
    await workflow.sleep(3600)


async def tick() -> None:
    """A scheduled workflow."""
    note("tick", "start")


async def slow_replier(name: str) -> None:
    """Answers each call after an hour."""
    note(name, "start")
    async for msg in process.inbox():
        await trio.sleep(3600)
        await msg.reply("late")


async def calls_slow() -> str:
    """A workflow that calls the service ``t:slow``."""
    return str(await process.call("t:slow", "q", 1, timeout="2h"))


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def ask_slow() -> str:
    """An activity (no retries) that calls the service ``t:slow``."""
    return str(await process.call("t:slow", "q", 1, timeout="2h"))


async def activity_calls_slow() -> str:
    """A workflow whose activity calls the service ``t:slow``."""
    return await ask_slow()


#: the input each start of ``appender`` saw (reset by each test that uses it)
SEEN: list[object] = []


async def appender(cfg: dict) -> None:
    """Records its input, changes it, then crashes (to be started again)."""
    SEEN.append(repr(cfg))
    cfg["items"].append("x")
    await trio.sleep(1)
    raise RuntimeError("appender crashed")


async def hog(seconds: float) -> None:
    """Holds a worker of its host for ``seconds``."""
    await trio.sleep(seconds)


#: helpers of ``with_helper`` alive now
HELPERS: set[object] = set()


async def _helper() -> None:
    HELPERS.add(process.pid())
    try:
        await trio.sleep_forever()
    finally:
        HELPERS.discard(process.pid())


async def with_helper(name: str) -> None:
    """Starts a helper linked to itself, then runs until stopped."""
    note(name, "start")
    await process.spawn_linked(_helper)
    await trio.sleep_forever()


async def shares(box: list, event: trio.Event) -> None:
    """Its input's objects: the list (copied per start) and the event (the one given)."""
    box.append("ran")
    event.set()
    await trio.sleep_forever()


async def conn_helper(cleanup: float, register: bool = True) -> None:
    """A helper holding the name "conn" (if ``register``); its cleanup awaits
    (shielded: closing a socket). (The supervisor's tests use it too.)"""
    if register:
        process.register("conn")
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(cleanup)


async def with_conn(name: str, cleanup: float, register: bool = True) -> None:
    """Starts a ``conn_helper`` linked to itself; fails FAILS[name] more times after
    0.1 s, then runs until stopped."""
    note(name, "start")
    await process.spawn_linked(conn_helper, cleanup, register)
    await trio.sleep(0.1)
    if FAILS.get(name, 0) > 0:
        FAILS[name] -= 1
        raise RuntimeError(f"{name} crashed")
    await trio.sleep_forever()


async def tree(name: str) -> None:
    """A service's process that runs a Supervisor (README's supervision tree from a
    config): children ``first`` (steady) and ``late`` (steady, on host ``t:pool``)."""
    from garrison.supervision import ChildSpec, Supervisor

    await Supervisor([ChildSpec("first", steady, args=(f"{name}.first",)),
                      ChildSpec("late", steady, args=(f"{name}.late",), host="t:pool")])()
