"""A signal (or cancel) from node b to a workflow node a runs, written to the store in a
worker thread (a slow database) while the workflow moves to b (a drains): b loaded it
before the write, which wrote no wakeup (b owns it now), and b never saw it. (Real time:
a cluster of two nodes.)"""

from __future__ import annotations

import time
from collections.abc import Callable
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


async def test_a_signal_written_as_the_workflow_moves_here_reaches_it(
        postgres_url: str) -> None:
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(waiter, id="w1")
        await _until(lambda: "w1" in a.hosts["workflows"].active)
        await trio.sleep(0.3)
        hb = b.hosts["workflows"]
        _slow(hb, "_deliver_stored", 1.5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.workflow("w1").signal, "go")
            await trio.sleep(0.1)
            a.drain()
            await _until(lambda: "w1" in hb.active)
        with trio.fail_after(8):
            assert await b.workflow("w1").result() == "got go"


async def test_a_cancel_written_as_the_workflow_moves_here_reaches_it(
        postgres_url: str) -> None:
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(sleeper, id="w2")
        await _until(lambda: "w2" in a.hosts["workflows"].active)
        await trio.sleep(0.3)
        hb = b.hosts["workflows"]
        _slow(hb, "request_cancel_stored", 1.5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.workflow("w2").cancel)
            await trio.sleep(0.1)
            a.drain()
            await _until(lambda: "w2" in hb.active)
        with trio.fail_after(8), pytest.raises(garrison.WorkflowCancelled):
            await b.workflow("w2").result()
