"""Workflows of the cluster tests: each step is an activity that says which node
recorded it, so the journal shows who wrote what."""

from __future__ import annotations

import os

import trio

import garrison
from garrison import process, workflow


@garrison.activity()
async def step(i: int, delay: float) -> dict[str, object]:
    """One step: sleeps ``delay`` and names the node (and OS process) that ran it."""
    await trio.sleep(delay)
    return {"i": i, "node": os.environ.get("GARRISON_NODE", "?"), "pid": os.getpid()}


async def steps(n: int, delay: float) -> list[int]:
    """``n`` steps in a row; the result is exact (0..n-1) wherever the steps ran."""
    out = []
    for i in range(n):
        got = await step(i, delay)
        out.append(int(got["i"]))  # type: ignore[call-overload]
    return out


@garrison.activity()
async def thread_step(i: int, seconds: float) -> dict[str, object]:
    """:func:`step` whose wait is a blocking call in a worker thread: a cancel does not
    end it (``trio.to_thread.run_sync`` waits for the thread), so it holds its run for
    ``seconds`` however the run is stopped."""
    import time

    await trio.to_thread.run_sync(time.sleep, seconds)
    return {"i": i, "node": os.environ.get("GARRISON_NODE", "?"), "pid": os.getpid()}


async def held(seconds: float) -> list[int]:
    """A quick step, then one held ``seconds`` in a worker thread (:func:`thread_step`),
    then a durable sleep."""
    out = [int((await step(0, 0.0))["i"])]  # type: ignore[call-overload]
    out.append(int((await thread_step(1, seconds))["i"]))  # type: ignore[call-overload]
    await workflow.sleep(0.05)
    return out


async def sleeper(n: int, seconds: float) -> int:
    """``n`` durable sleeps: a workflow that mostly waits (it moves at once on a drain)."""
    for _ in range(n):
        await workflow.sleep(seconds)
    return n


async def mailbox(count: int) -> list[object]:
    """Receives ``count`` messages and returns their payloads in order."""
    got = []
    for _ in range(count):
        msg = await process.inbox().receive()
        assert msg is not None
        got.append(msg.payload)
    return got


async def pong(count: int) -> int:
    """Answers ``count`` pings: each message goes back to its sender."""
    for _ in range(count):
        msg = await process.inbox().receive()
        assert msg is not None and msg.sender is not None
        await process.send(msg.sender, "pong", msg.payload)
    return count


async def ping(to: str, count: int) -> list[object]:
    """``count`` round trips with the workflow ``to``; the answers in order."""
    out = []
    for i in range(count):
        await process.send(to, "ping", i)
        msg = await process.inbox().receive()
        assert msg is not None
        out.append(msg.payload)
    return out


async def ping_timed(to: str, count: int) -> list[float]:
    """``count`` round trips with ``to``; each one's milliseconds (workflow.now())."""
    out = []
    for i in range(count):
        before = workflow.now()
        await process.send(to, "ping", i)
        msg = await process.inbox().receive()
        assert msg is not None and msg.payload == i
        out.append((workflow.now() - before).total_seconds() * 1000)
    return out


async def beat() -> None:
    """A singleton service: appends ``<node> <unix time>`` to $GARRISON_BEAT_FILE every
    50 ms, so a test sees which node runs it, and when."""
    import time

    path = os.environ["GARRISON_BEAT_FILE"]
    node = os.environ.get("GARRISON_NODE", "?")
    while True:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{node} {time.time():.3f}\n")
        await trio.sleep(0.05)


async def slow_beat() -> None:
    """:func:`beat` that, asked to stop (``CANCEL``), beats on for one more second (its
    clean-up) before it ends."""
    import time

    path = os.environ["GARRISON_BEAT_FILE"]
    node = os.environ.get("GARRISON_NODE", "?")

    def write() -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{node} {time.time():.3f}\n")

    events = process.events()
    while await events.receive(timeout=0.05) is None:
        write()
    end = time.time() + 1.0
    while time.time() < end:
        write()
        await trio.sleep(0.05)


async def echo() -> None:
    """A plain process known to the whole cluster as ``echo``: a ``call`` is answered
    with its payload, a ``send`` goes back to its sender, ``slow`` is never answered;
    a call ``linker`` starts a :func:`linker` and answers its pid, a call ``quitter`` a
    :func:`quitter`, a call ``watch`` (``[target, how, to]``) a :func:`reporter`."""
    process.register("echo", scope="cluster")
    async for msg in process.inbox():
        if msg.topic == "call":
            await msg.reply(msg.payload)
        elif msg.topic == "send" and msg.sender is not None:
            await process.send(msg.sender, "echo", msg.payload)
        elif msg.topic == "linker":
            await msg.reply(str(await process.spawn(linker)))
        elif msg.topic == "quitter":
            await msg.reply(str(await process.spawn(quitter)))
        elif msg.topic == "watch":
            await msg.reply(str(await process.spawn(reporter, *msg.payload)))


async def reporter(target: str, how: str, to: str) -> None:
    """Monitors ``target`` (``how`` ``monitor``) or links to it (trapping links), and
    sends ``to`` each event it gets (topic ``event``: ``[how, kind, pid, error type]``);
    ``monitor+``: monitors it again after each ``noconnection``."""
    process.set_options(trap_links=True)
    (process.link if how == "link" else process.monitor)(target)
    async for ev in process.events():
        why = ev.error.type if ev.error else None
        await process.send(to, "event", [how, ev.kind.value, str(ev.pid), why])
        if how == "monitor+" and why == "noconnection":
            await trio.sleep(0.05)
            process.monitor(target)


async def quitter() -> str:
    """Ends at its first message: fails if its topic is ``fail``, else returns."""
    msg = await process.inbox().receive()
    if msg.topic == "fail":
        raise RuntimeError("quitter failed")
    return "done"


async def linker() -> None:
    """Links to and monitors the pid each call ``link`` names, then answers."""
    async for msg in process.inbox():
        process.link(msg.payload)
        process.monitor(msg.payload)
        await msg.reply("linked")


async def ends_on_a_message() -> object:
    """Waits for one message; returns its payload."""
    msg = await process.inbox().receive()
    return msg.payload


async def monitors(target: str) -> list[object]:
    """Monitors the workflow ``target`` (by pid, or started by id if ``spawn:`` leads)
    and returns what its ``EXIT`` says."""
    if target.startswith("spawn:"):
        await process.spawn_monitored(ends_on_a_message, host="workflows",
                                      id=target.removeprefix("spawn:"))
    else:
        process.monitor(target)
    workflow.set_state("monitoring", True)
    ev = await process.events().receive()
    return [ev.kind.value, str(ev.pid), ev.ok, ev.result]


async def parent_of(n: int) -> list[object]:
    """Starts ``n`` children (each ends on a message) and returns their EXITs."""
    events = process.events()
    for _ in range(n):
        await process.spawn(ends_on_a_message)
    workflow.set_state("spawned", n)
    got = []
    for _ in range(n):
        ev = await events.receive()
        got.append([str(ev.pid), ev.ok, ev.result])
    return sorted(got)


async def doubler() -> None:
    """Replies to every call with twice its payload; ends on the topic ``stop``."""
    while True:
        msg = await process.inbox().receive()
        if msg.topic == "stop":
            return
        if msg.topic == "hold":
            continue  # a call it never replies to
        await msg.reply(msg.payload * 2)


async def asks(to: str, n: int) -> list[object]:
    """Calls the workflow ``to`` with ``double`` ``n`` times (journaled calls)."""
    return [await process.call(to, "double", i, timeout="10s") for i in range(n)]


async def replies_once_and_ends() -> str:
    """Replies to one call, then ends at once."""
    msg = await process.inbox().receive()
    await msg.reply("answer")
    return "done"


async def waits_for_exit_of(target: str) -> list[object]:
    """A plain process's monitor of ``target``: its EXIT's kind and result."""
    process.monitor(target)
    ev = await process.events().receive()
    return [ev.kind.value, ev.result]


async def leader() -> str:
    """Holds the cluster name ``leader`` until a message comes (its topic)."""
    process.register("leader", scope="cluster")
    msg = await process.inbox().receive()
    return msg.topic


async def links_plain() -> str:
    """Waits for a message naming a plain process, links to it (not trapping), then
    sleeps: it ends only by that process's failure (or its node's loss)."""
    msg = await process.inbox().receive()
    process.link(str(msg.payload))
    workflow.set_state("linked", True)
    await workflow.sleep(3600)
    return "slept"


async def watches_plain(how: str) -> list[object]:
    """Waits for a message naming a plain process, then monitors it (``how`` is
    ``monitor``) or links to it, trapping (``link``) or not (``plain_link``: it reads
    no event then, and ends only by the link's failure), and returns the events it
    reads until one came with the process's real end and none followed for 3 s
    (``[kind, error type or result]``; ``noproc`` is not a real end)."""
    msg = await process.inbox().receive()
    target = str(msg.payload)
    if how in ("link", "plain_link"):
        process.set_options(trap_links=how == "link")
        process.link(target)
    else:
        process.monitor(target)
    workflow.set_state("watching", True)
    got: list[object] = []
    while True:
        ev = await process.events().receive(timeout=3)
        if ev is None:
            if any(why != "noproc" for _kind, why in got):  # type: ignore[misc]
                return got
            continue
        got.append([str(ev.kind), ev.error.type if ev.error else ev.result])


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=5, initial_delay="3s"))
async def only_on_b() -> str:
    """Fails on any node but b (its next attempt waits 3 s)."""
    node = os.environ.get("GARRISON_NODE", "?")
    if node != "b":
        raise RuntimeError(f"not on {node}")
    return node


async def retries_until_b() -> str:
    """Awaits ``only_on_b``: it waits to retry (sleeping) wherever it is not b."""
    return await only_on_b()


async def partner(trap: bool, back: bool = False) -> list[list[object]]:
    """Sets ``trap_links`` as told; with ``back``, links to the pid its first message
    names; says it is ``ready`` (state). Trapping, returns the events it reads once one
    came and none followed for 3 s (``[kind, pid, error type]``); not trapping, sleeps
    until a linked failure ends it."""
    process.set_options(trap_links=trap)
    if back:
        msg = await process.inbox().receive()
        process.link(garrison.Pid.parse(msg.payload))
    workflow.set_state("ready", True)
    got: list[list[object]] = []
    while True:
        if not trap:
            await workflow.sleep(3600)
            continue
        ev = await process.events().receive(timeout=3)
        if ev is None:
            if got:
                return got
            continue
        got.append([str(ev.kind), str(ev.pid), ev.error.type if ev.error else None])
