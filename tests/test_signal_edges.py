"""Signals, promises and their ids at the edges (an adversarial review of signals,
promises and receive timeouts): what a store keeps for ever must not be mistaken for
something new."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
import trio
import workflow_app as app

import garrison
from garrison import process, workflow


async def test_signals_of_two_node_sessions_never_share_a_message_id(
        autojump_clock: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message from outside any workflow (``handle.signal``, ``node.send``) got the id
    ``<32 random bits>-<counter>``, the counter starting at 1 in each node session. A
    store keeps every message id for ever, in one index across all its workflows, and
    drops a message whose id it holds as a duplicate: two sessions whose 32 random bits
    agreed (a web app opening a client node per request reaches that within some
    77,000 requests, one time in two) lost the second one's signals, while ``signal``
    returned as if it had delivered them."""
    real = os.urandom

    def agreeing_prefix(n: int) -> bytes:  # (two sessions whose first 32 bits agree)
        return b"\xab\xcd\xef\x01" + real(n - 4) if n >= 4 else real(n)

    monkeypatch.setattr(os, "urandom", agreeing_prefix)
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.collector, 2, id="a")
        await node.workflow("a").signal("first", "from session 1")
    async with garrison.open_node(store=db) as node:
        await node.workflow("a").signal("second", "from session 2")
        with trio.fail_after(60):
            assert await node.workflow("a").result() == ["from session 1", "from session 2"]


async def listens_then_continues(run: int) -> Any:
    """Run 0 listens to topic ``b``, takes one, continues as new; run 1 receives from
    its general inbox."""
    if run == 0:
        await process.listen("b").receive()
        workflow.continue_as_new(1)
    msg = await process.inbox().receive(timeout="1h")
    return None if msg is None else [msg.topic, msg.payload]


@pytest.mark.parametrize("restart", [False, True])
async def test_a_listen_ends_with_its_run_at_continue_as_new(
        autojump_clock: Any, tmp_path: Any, restart: bool) -> None:
    """``process.listen(topic)`` of a run that continues as new kept holding its topic in
    the new run on the node that ran it: the new run's ``inbox().receive()`` never saw a
    message of that topic (it timed out, or waited for ever), while on a node that
    resumed the new run after a restart it took it. A new run starts fresh, as after a
    restart: it listens again if its code says so."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(listens_then_continues, 0, id="l")
        handle = node.workflow("l")
        await handle.signal("b", "for run 0")
        await trio.sleep(1)
        await handle.signal("b", "for run 1")
        if not restart:
            assert await handle.result() == ["b", "for run 1"]
            return
        await trio.sleep(1)
    async with garrison.open_node(store=db) as node:
        assert await node.workflow("l").result() == ["b", "for run 1"]


async def starts_of_two_runs(first_start: str | None) -> list[str]:
    """Run 0 sleeps an hour and continues as new with its start; run 1 waits for a
    message and returns both starts."""
    if first_start is None:
        await workflow.sleep("1h")
        workflow.continue_as_new(workflow.info().start_time.isoformat())
    await process.inbox().receive()
    return [first_start, workflow.info().start_time.isoformat()]


@pytest.mark.parametrize("restart", [False, True])
async def test_a_continued_run_has_the_same_start_time_live_and_after_a_restart(
        autojump_clock: Any, tmp_path: Any, restart: bool) -> None:
    """``workflow.info().start_time`` of a run started by ``continue_as_new`` was that
    run's start on the node that continued it, but the workflow's first start on a node
    that resumed the run after a restart (the store's row): code that reads it took
    another value, and maybe another path, after a restart. It is the run's start in
    both (the run's first record says when it began)."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(starts_of_two_runs, None, id="s")
        await trio.sleep(4000)
        if not restart:
            await node.workflow("s").signal("go")
            first, second = await node.workflow("s").result()
    if restart:
        async with garrison.open_node(store=db) as node:
            await node.workflow("s").signal("go")
            first, second = await node.workflow("s").result()
    gap = dt.datetime.fromisoformat(second) - dt.datetime.fromisoformat(first)
    assert dt.timedelta(hours=1) <= gap < dt.timedelta(hours=1, seconds=10)
