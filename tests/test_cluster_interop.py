"""A workflow's process side in a cluster, as an adversarial review found it broken:
monitors, links and calls of a node's processes on a workflow that moved to another
node; a cluster name that a node cut off took back from the node now running its
holder; the first send to a pid of a node that left, from a node started later.

Real time (threads, a real PostgreSQL server)."""

from __future__ import annotations

import time
from typing import Any

import trio

import garrison
from garrison import process


async def ends_when_told() -> str:
    """A workflow that waits for ``go`` and ends as its payload says, never replying
    to the call waiting in its inbox."""
    msg = await process.listen("go").receive()
    if msg.payload == "fail":
        raise RuntimeError("told to fail")
    return "ended without replying"


async def _until(check: Any, what: str, timeout: float = 15.0) -> None:
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {timeout}s: {what}")


async def test_watchers_of_a_workflow_that_moved_hear_of_its_end(postgres_url: str) -> None:
    """Processes of node a monitor, link to (trapping) and call workflow W; a drains,
    W moves to b and ends there. a forgot them as W left (its end went to no one):
    the monitor never got its EXIT, the link never acted, the call waited its whole
    timeout. Now a watches W's end in the store as for a workflow that ran elsewhere
    from the start."""
    async with garrison.open_node(store=postgres_url, name="a", lease="2s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="2s") as b:
        w = await a.start_workflow(ends_when_told, id="W")
        await _until(lambda: a.workflow("W").status() == "waiting", "W waits on a")

        async def monitors() -> list[Any]:
            process.monitor(w)
            ev = await process.events().receive()
            return [str(ev.kind), ev.error.type if ev.error else None]

        async def links() -> list[Any]:
            process.set_options(trap_links=True)
            process.link(w)
            ev = await process.events().receive()
            return [str(ev.kind), ev.error.type if ev.error else None]

        async def calls() -> list[Any]:
            started = time.monotonic()
            try:
                await process.call(w, "q", "question", timeout="60s")
            except garrison.ProcessError as exc:
                return [type(exc).__name__, time.monotonic() - started]
            return ["replied", time.monotonic() - started]

        m, lk, c = await a.spawn(monitors), await a.spawn(links), await a.spawn(calls)
        await trio.sleep(0.3)
        a.drain()
        with trio.fail_after(10):
            await a.drained()
        await _until(lambda: "W" in b.hosts["workflows"].active, "W runs on b")
        await b.workflow("W").signal("go", "fail")
        with trio.fail_after(10):
            try:
                await b.workflow("W").result()
            except garrison.WorkflowFailed:
                pass
        with trio.fail_after(10):
            assert await a.wait(m) == ["EXIT", "RuntimeError"]
            assert await a.wait(lk) == ["LINK_DOWN", "RuntimeError"]
            what, took = await a.wait(c)
        assert what == "ProcessError"
        assert took < 20  # REPLY_GRACE after the end is read, not the 60 s timeout

