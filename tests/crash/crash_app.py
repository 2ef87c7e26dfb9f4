"""Workflows for the SIGKILL crash tests; every side effect leaves a marker line.

Markers go to the file named by ``GARRISON_MARKERS`` (one ``O_APPEND`` write per
line, so they survive the writer being killed) and tell the parent test what
ran, how often, and when it is time to kill.
"""

from __future__ import annotations

import os
import time

import trio

import garrison
from garrison import process, workflow


def mark(tag: str) -> None:
    fd = os.open(os.environ["GARRISON_MARKERS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{tag}\n".encode())
    finally:
        os.close(fd)


def markers() -> list[str]:
    try:
        with open(os.environ["GARRISON_MARKERS"]) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@garrison.activity
async def step(tag: str) -> str:
    mark(f"step:{tag}")
    return tag


@garrison.activity
async def slow_step(tag: str) -> str:
    """Slow (10 s) on its first execution only: the parent kills it meanwhile."""
    first = f"slow:{tag}:start" not in markers()
    mark(f"slow:{tag}:start")
    if first:
        await trio.sleep(10)
    mark(f"slow:{tag}:end")
    return tag


async def three_steps() -> str:
    a = await step("one")
    b = await slow_step("two")
    c = await step("three")
    return ",".join([a, b, c])


async def plain_steps() -> str:
    return ",".join([await step("one"), await step("two"), await step("three")])


async def sleepy(seconds: float) -> float:
    await step("before")
    t0 = workflow.now()
    await workflow.sleep(seconds)
    t1 = workflow.now()
    await step("after")
    return (t1 - t0).total_seconds()


async def waits_for_message() -> list[str]:
    await step("before")
    msg = await process.inbox().receive()
    await step(f"got:{msg.payload}")
    return [msg.topic, msg.payload]


async def five_then_wait() -> list[str]:
    out = [await step(f"s{i}") for i in range(1, 6)]
    msg = await process.inbox().receive()
    out.append(msg.payload)
    return out


async def collector(n: int) -> list[int]:
    inbox = process.inbox()
    return [(await inbox.receive()).payload for _ in range(n)]


async def sender(to: str, n: int) -> int:
    pid = garrison.Pid.parse(to)
    for i in range(n):
        await process.send(pid, "n", i)
        if i % 10 == 9:
            await step(f"tick:{i + 1}")
            if i + 1 < n:
                await trio.sleep(0.3)  # a window for the parent's SIGKILL (not durable)
    return n


def now() -> float:
    return time.time()


async def pair(n: int) -> list[int]:
    """A collector and a sender child workflow; returns what the collector received."""
    receiver = await process.spawn(collector, n)
    await process.spawn(sender, str(receiver), n)
    results: dict[str, object] = {}
    events = process.events()
    while len(results) < 2:
        ev = await events.receive()
        results[str(ev.pid)] = ev.result if ev.ok else str(ev.error)
    got = results[str(receiver)]
    assert isinstance(got, list)
    return got


async def idle_process() -> None:
    """A plain (in-memory) process: lost when the node is killed."""
    await process.inbox().receive()


async def watches_a_process() -> list[object]:
    pid = await process.spawn_monitored(idle_process, host="processes")
    await step("watching")
    ev = await process.events().receive()
    return [ev.pid == pid, ev.kind.value, None if ev.error is None else ev.error.type]


async def watches_a_process_across_a_continue(watched: str | None) -> list[object]:
    """Run 0 monitors a plain process and continues as new; run 1 waits for its EXIT."""
    if watched is None:
        pid = await process.spawn_monitored(idle_process, host="processes")
        workflow.continue_as_new(str(pid))
    await step("watching")
    ev = await process.events().receive()
    return [str(ev.pid) == watched, ev.kind.value, None if ev.error is None else ev.error.type]


async def promise_or_deadline(seconds: float) -> list[object]:
    """A durable promise raced with a durable timer in ``workflow.first``."""
    approval = workflow.promise("approval")
    deadline = workflow.timer(seconds)
    t0 = workflow.now()
    await step("waiting")
    done = await workflow.first(approval, deadline)
    waited = (workflow.now() - t0).total_seconds()
    if done is deadline:
        return ["expired", waited]
    return ["approved", await approval]


async def child_step(tag: str, seconds: float) -> str:
    await workflow.sleep(seconds)
    return await step(f"child:{tag}")


async def parent_of_two(seconds: float) -> dict[str, object]:
    """Two child workflows; their EXITs collected from the parent's events."""
    payment = await process.spawn(child_step, "payment", seconds)
    shipping = await process.spawn(child_step, "shipping", seconds)
    await step("children")
    results: dict[str, object] = {}
    events = process.events()
    while len(results) < 2:
        ev = await events.receive()
        name = "payment" if ev.pid == payment else "shipping" if ev.pid == shipping else "?"
        results[name] = ev.result if ev.ok else str(ev.error)
    return results


async def waiting_child(tag: str) -> str:
    """A child workflow that waits for a message (none comes: its parent's end ends it)."""
    await step(f"waiting:{tag}")
    msg = await process.inbox().receive()
    return str(msg.payload)


async def linked_chain(depth: int, trap: bool = False) -> str:
    """A chain of workflows, each the ``spawn_linked`` child of the one above, ``depth``
    below this one, each waiting for a message once the one below it waits (none comes:
    the chain ends by a cancel, a terminate or a linked failure). ``trap``: the lowest
    one traps links, and returns the ``LINK_DOWN`` it gets (``"<pid> <error>"``)."""
    me = workflow.info().workflow_id
    if depth > 0:
        await process.spawn_linked(linked_chain, depth - 1, trap)
    elif trap:
        process.set_options(trap_links=True)
        await step(f"waiting:{me}")
        event = await process.events().receive()
        return f"{event.kind} {event.pid} {event.error}"
    await step(f"waiting:{me}")
    msg = await process.inbox().receive()
    return str(msg.payload)


async def linked_from_below() -> str:
    """A child workflow (spawned, not linked) that links to this one and waits; this one
    waits for a message (none comes: the child's cancelled end fails it)."""
    await process.spawn(links_to_parent, str(process.pid()))
    await step("waiting:top")
    msg = await process.inbox().receive()
    return str(msg.payload)


async def links_to_parent(parent: str) -> str:
    process.link(parent)
    await step(f"waiting:{workflow.info().workflow_id}")
    msg = await process.inbox().receive()
    return str(msg.payload)


async def trapping_child(tag: str) -> str:
    """A child workflow that traps links and returns the first ``LINK_DOWN`` it gets:
    ``"<pid> <error>"``."""
    process.set_options(trap_links=True)
    await step(f"waiting:{tag}")
    events = process.events()
    while True:
        event = await events.receive()
        if event.kind is garrison.EventKind.LINK_DOWN:
            return f"{event.pid} {event.error}"


async def parent_of_waiting(how: str, then: str, kind: str = "waiting_child") -> None:
    """Two children waiting for good (``how``: ``spawn``, ``spawn_linked``; ``kind``:
    ``waiting_child``, or ``trapping_child``, which waits for a ``LINK_DOWN``), one of
    them monitored; ``then``: ``wait`` (for a message: a terminate ends it) or ``raise``
    once both children wait."""
    spawn = getattr(process, how)
    await spawn(globals()[kind], "a")
    child = await spawn(globals()[kind], "b")
    process.monitor(child)
    if then == "raise":
        while not {"step:waiting:a", "step:waiting:b"} <= set(markers()):
            await workflow.sleep(0.05)
        raise ValueError("the parent fails")
    await process.inbox().receive()
