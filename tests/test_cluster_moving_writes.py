"""A signal (or cancel) from node b to a workflow node a runs, written to the store in a
worker thread (a slow database) while the workflow moves to b (a drains): b loaded it
before the write, which wrote no wakeup (b owns it now), and b never saw it. (Real time:
a cluster of two nodes.)"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

import garrison
from garrison import process, workflow


async def waiter() -> str:
    msg = await process.inbox().receive(timeout="2d")
    return f"got {msg.topic}"


async def sleeper() -> str:
    for _ in range(10000):
        await workflow.sleep(0.05)
    return "never"


def _slow(host: Any, name: str, delay: float) -> None:
    orig = getattr(host, name)

    def slow(*args: Any) -> Any:
        time.sleep(delay)  # the database answers slowly (in the worker thread)
        return orig(*args)

    setattr(host, name, slow)


async def _until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.02)


@contextlib.asynccontextmanager
async def _acted_on_as_it_moves(postgres_url: str, target: Any, wid: str, slowed: str,
                                action: str, *args: Any) -> AsyncIterator[Any]:
    """Node a runs ``target`` as ``wid``; node b's handle ``action(*args)`` starts (its
    store write ``slowed`` takes 1.5 s) and a drains meanwhile: the workflow moves to
    b, whose handle of it is yielded once b runs it."""
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(target, id=wid)
        await _until(lambda: wid in a.hosts["workflows"].active)
        await trio.sleep(0.3)
        hb = b.hosts["workflows"]
        _slow(hb, slowed, 1.5)
        handle = b.workflow(wid)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(getattr(handle, action), *args)
            await trio.sleep(0.1)
            a.drain()
            await _until(lambda: wid in hb.active)
        yield handle


async def test_a_signal_written_as_the_workflow_moves_here_reaches_it(
        postgres_url: str) -> None:
    async with _acted_on_as_it_moves(postgres_url, waiter, "w1", "_deliver_stored",
                                     "signal", "go") as handle:
        with trio.fail_after(8):
            assert await handle.result() == "got go"


async def test_a_cancel_written_as_the_workflow_moves_here_reaches_it(
        postgres_url: str) -> None:
    async with _acted_on_as_it_moves(postgres_url, sleeper, "w2",
                                     "request_cancel_stored", "cancel") as handle:
        with trio.fail_after(8), pytest.raises(garrison.WorkflowCancelled):
            await handle.result()
