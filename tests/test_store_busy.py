"""A store that another connection locks for a while: nothing fails, nothing freezes;
a store that stays unusable is a StoreError, never a workflow's failure; the store shows
parked workflows as parked while the node runs.

These tests use real time: the lock is held by a real second connection."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import correctness_app as app
import pytest
import trio

import garrison
from garrison import process, workflow
from garrison.persistence import SQLiteStore, Transaction, _sqlite


@garrison.activity
async def step(i: int) -> int:
    return i + 1


async def steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += await step(i)
        await workflow.sleep(0.01)
    return total


def hold_write_lock(path: str, seconds: float, held: threading.Event) -> None:
    """Another program writing to the store: it holds the write lock ``seconds``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_a_store_locked_for_a_while_neither_fails_nor_freezes(tmp_path: Path) -> None:
    db = str(tmp_path / "wf.db")
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await trio.sleep(0.01)
            ticks.append(time.monotonic())

    async with garrison.open_node(store=db) as node:
        await node.spawn(ticker)
        held = threading.Event()
        locker = threading.Thread(target=hold_write_lock, args=(db, 1.0, held))
        locker.start()
        held.wait()
        start = time.monotonic()
        await node.start_workflow(steps, 20, id="w")
        assert await node.workflow("w").result() == sum(range(1, 21))
        locker.join()
        assert time.monotonic() - start >= 0.9  # it did wait for the lock ...
        during = [t for t in ticks if start < t < start + 0.9]
        assert len(during) > 20, f"the node froze: {len(during)} ticks in 0.9 s"  # ... not here
        assert node.workflow("w").status() == "completed"


async def test_a_store_that_stays_locked_is_a_store_error_not_a_failure(tmp_path: Path) -> None:
    db = str(tmp_path / "wf.db")
    store = SQLiteStore(db, busy_retry=0.3)
    held = threading.Event()
    locker = threading.Thread(target=hold_write_lock, args=(db, 1.5, held))
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(steps, 100, id="w")
        await trio.sleep(0.05)
        locker.start()
        held.wait()
        with pytest.raises(garrison.StoreError, match=r"wf\.db.*stayed locked"):
            await node.workflow("w").result()
        assert node.workflow("w").status() == "blocked"
        locker.join()
    store.close()
    with SQLiteStore(db) as check:  # nothing recorded as its outcome
        rec = check.get_workflow("w")
        assert rec is not None and rec.status in ("running", "sleeping")
    async with garrison.open_node(store=db) as node:  # the store works again: it resumes
        assert await node.workflow("w").result() == sum(range(1, 101))


async def test_the_store_shows_parked_workflows_while_the_node_runs(tmp_path: Path,
                                                                   autojump_clock: object
                                                                   ) -> None:
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.awaits_rejected_promise, id="p")  # waits on a promise
        await node.start_workflow(app.sleeps_forever_or_signal, "receive", id="r")
        await node.start_workflow(steps, 1000, id="s")
        await trio.sleep(1)
        with SQLiteStore(db, lock=False) as tool:  # what `garrison workflows list` reads
            stored = {r.workflow_id: str(r.status) for r in tool.list_workflows()}
        live = {s.workflow_id: str(s.status) for s in node.workflows()}
        assert stored["p"] == live["p"] == "waiting"
        assert stored["r"] == live["r"] == "waiting"
        waiting = {s.workflow_id for s in node.workflows(status="waiting")}
        with SQLiteStore(db, lock=False) as tool:
            assert {r.workflow_id for r in tool.list_workflows("waiting")} == waiting
        await node.workflow("p").promise("approval").resolve("ok")
        await node.workflow("p").result()
        await node.workflow("r").signal("go")
        assert await node.workflow("r").result() == "go"
        with SQLiteStore(db, lock=False) as tool:
            assert tool.get_workflow("r").status == "completed"


async def test_a_process_keeps_running_while_a_tool_writes(tmp_path: Path) -> None:
    """A tool's write (a signal) while the node commits: both land."""
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.sleeps_forever_or_signal, "receive", id="r")
        await trio.sleep(0.1)

        def tool() -> None:
            with SQLiteStore(db, lock=False) as s:
                s.deliver("r", "from-tool", None)

        await trio.to_thread.run_sync(tool)
        with trio.fail_after(5):
            assert await node.workflow("r").result() == "from-tool"
    assert process  # the module is used by the app functions


async def test_a_store_deleted_under_the_node_stops_its_workflows(tmp_path: Path) -> None:
    import os

    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.sleeps_forever_or_signal, "receive", id="r")
        await trio.sleep(0.1)
        os.remove(db)  # someone deletes the store: the node must not carry on silently
        with trio.fail_after(5):
            with pytest.raises(garrison.StoreError, match="deleted or replaced"):
                await node.workflow("r").result()
        assert node.workflow("r").status() == "blocked"
        with pytest.raises(garrison.StoreError):
            await node.start_workflow(app.child_value, 1, id="new")


def test_a_tool_write_that_stays_busy_names_the_busy_timeout_it_waited(
        tmp_path: Path) -> None:
    """A tool's write (``lock=False``: ``garrison workflows``, the console) waits the
    store's busy timeout for a lock another program holds, then is a StoreError that
    gives that figure (it said "the busy timeout (60s)", the group commit's retry time,
    whatever it had waited)."""
    db = str(tmp_path / "wf.db")
    with SQLiteStore(db) as owner:
        owner.write(Transaction().create_workflow("w1", "app:flow"))
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with SQLiteStore(db, lock=False, busy_timeout=0.2) as tool:
            started = time.monotonic()
            with pytest.raises(garrison.StoreError) as info:
                tool.deliver("w1", "t", 1, msg_id="m-1")
            assert time.monotonic() - started < 5
        message = str(info.value)
        assert "busy timeout (0.2s)" in message and "60s" not in message, message
        assert info.value.path == db
        # several a tool writes at once (a bulk retry's batch): the same, nothing written
        with SQLiteStore(db, lock=False, busy_timeout=0.2) as tool, \
                pytest.raises(garrison.StoreError, match=r"busy timeout \(0\.2s\)"):
            tool.write_each([Transaction().deliver("w1", "t", n, msg_id=f"b-{n}")
                             for n in range(2)])
        other.execute("ROLLBACK")
        with SQLiteStore(db, lock=False, busy_timeout=0.2) as tool:
            assert tool.pending_messages("w1") == []
            # (and once it is free, they are written, each on its own)
            done = tool.write_each([Transaction().deliver("w1", "t", n, msg_id=f"b-{n}")
                                    for n in range(2)])
            assert len(done) == 2 and not any(isinstance(d, Exception) for d in done), done
            assert [m.payload for m in tool.pending_messages("w1")] == [0, 1]
    finally:
        other.close()


async def _parked_store(db: str) -> None:
    """A store a node left a parked workflow in (the next node's resume writes it)."""
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.sleeps_forever_or_signal, "receive", id="r")
        await trio.sleep(0.1)


def _hold(db: str) -> sqlite3.Connection:
    """Another program's open write transaction on the store (a sqlite3 shell, a DB
    browser)."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


async def test_a_node_starting_on_a_store_another_program_holds_waits_saying_so(
        tmp_path: Path, autojump_clock: object, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-318: a node's start waited silently in a write it could not leave (the
    resume's, the root's start) for up to the busy timeout: it says within a second
    what holds it, and starts once the other program lets go."""
    caplog.set_level(logging.INFO, "garrison.store")
    monkeypatch.setattr(_sqlite, "LOCKED_POLL", 0.25)  # (each try waits 10 ms real time)
    db = str(tmp_path / "wf.db")
    await _parked_store(db)
    other = _hold(db)
    try:
        async def let_go() -> None:
            await trio.sleep(3)
            other.execute("ROLLBACK")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(let_go)
            async with garrison.open_node(store=db) as node:
                assert trio.current_time() >= 3  # it waited for the lock ...
                assert node.workflow("r").status() == "waiting"  # ... then resumed
        said = [r.getMessage() for r in caplog.records if r.name == "garrison.store"]
        assert said[0] == (
            f"store {db!r}: another connection holds its write lock (a sqlite3 shell or a "
            "DB browser with an open transaction?): the node waits for it before it "
            "starts, for up to 60s (SIGINT or SIGTERM stops it)"), said
        assert said[1] == f"store {db!r}: its write lock is free again: the node starts"
    finally:
        other.close()


async def test_a_start_waiting_for_a_locked_store_ends_at_once_when_stopped(
        tmp_path: Path, autojump_clock: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-318: a cancel of the node's start (``open_node`` in a cancel scope), or
    ``garrison run``'s first SIGINT/SIGTERM (``interrupt_start``), while the store is
    locked by another program ended nothing until its write gave up (exit 2 after
    60 s, where a signal during the start exits 0): the wait ends at once, the store's
    lock is let go, nothing is written, and the store's busy_retry still ends a wait
    that lasts with the 'stayed locked' StoreError."""
    from garrison._node import new_node, running_node

    monkeypatch.setattr(_sqlite, "LOCKED_POLL", 0.25)
    db = str(tmp_path / "wf.db")
    await _parked_store(db)
    other = _hold(db)
    try:
        with trio.move_on_after(1.5) as waiting:
            async with garrison.open_node(store=db):
                pytest.fail("the node started on a store another program holds")
        assert waiting.cancelled_caught
        node = new_node(store=db)

        async def signal_soon() -> None:
            await trio.sleep(1.5)
            node.interrupt_start()  # as garrison run does on its first signal

        async with trio.open_nursery() as nursery:
            nursery.start_soon(signal_soon)
            async with running_node(node):
                assert trio.current_time() < 3.5  # (the stop follows at once)
        # (the lock file is free: not StoreLocked)
        with (SQLiteStore(db, busy_retry=2) as store,
              pytest.raises(garrison.StoreError, match=r"wf\.db.*stayed locked.*\(2s\)")):
            async with garrison.open_node(store=store):
                pass
        other.execute("ROLLBACK")
        with SQLiteStore(db, lock=False) as tool:  # nothing written: still as it parked
            assert tool.get_workflow("r").status == "waiting"
    finally:
        other.close()
