"""A node's refreshes of what tools (and other nodes) wrote for its workflows, when
the store fails them for one workflow alone: a damaged page of its rows, a value the
store cannot hand over (found by a read of the wakeup watcher)."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import workflow_app

import garrison
from garrison.hosts.workflow import _recovery
from garrison.persistence import SQLiteStore, open_store


def _damage_the_page_of(path: str, marker: bytes) -> None:
    """Break the chain of overflow pages of the one value holding ``marker`` (a long
    one) in the SQLite file ``path``, as a bad sector or a torn write would: its row
    cannot be read ("database disk image is malformed"), every other row can."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(Path(path).read_bytes())
    size = 4096  # (the page size of a garrison store)
    start = data.index(marker)
    # a page in the middle of the value's chain: its first 4 bytes name the next one
    page = data.index(b"y" * 64, (start // size + 2) * size) // size
    data[page * size:page * size + 4] = b"\xff\xff\xff\xf0"
    Path(path).write_bytes(data)


async def test_a_damaged_page_of_one_workflow_takes_neither_the_node_nor_the_others_down(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A wakeup of a workflow whose inbox holds a message on a damaged page of a SQLite
    store: its refresh raised SQLite's own error out of the node's wakeup watcher, and
    the node stopped with it, every workflow with it. The workflow is named in one
    error line at its second failure in a row (the store answers other reads: it is
    its own fault) and tried again later; the others' wakeups go on, and the node's
    store has not failed."""
    path = str(tmp_path / "store.db")
    async with garrison.open_node(store=path) as node:
        await node.start_workflow(workflow_app.collector, 2, id="bad")
        await node.start_workflow(workflow_app.collector, 2, id="good")
    with SQLiteStore(path, lock=False) as tool:
        tool.deliver("bad", "m", "MARK" + "y" * 20_000)
    _damage_the_page_of(path, b"MARK")
    caplog.set_level(logging.DEBUG, "garrison")
    async with garrison.open_node(store=path) as node:
        with SQLiteStore(path, lock=False) as tool:
            tool.deliver("bad", "m", 1)
            tool.deliver("good", "m", 1)
            tool.deliver("good", "m", 2)
        with trio.fail_after(10):
            assert await node.workflow("good").result() == [1, 2]
            while sum("refresh workflow bad" in r.getMessage()
                      for r in caplog.records) < 3:
                await trio.sleep(0.02)  # (tried again: at DEBUG the third time)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [line for line in said if "its store failed" in line], said
    refresh = [line for line in said if line.startswith("cannot refresh workflow bad")]
    assert refresh == [
        f"cannot refresh workflow bad (2 failures in a row): store {path!r}: the store is "
        "damaged (database disk image is malformed): it was truncated or overwritten; "
        "restore the store from a backup; the store answers other reads, so the node goes "
        "on without it: it is tried again in 0.1 s, then less and less often (at most "
        "every 60 s), and at its next wakeup"], said


async def test_a_workflow_whose_own_refresh_keeps_failing_is_held_and_tried_again(
        store_spec: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A workflow whose refresh the store fails every time (its inbox cannot be read),
    while it answers every other read: after ``WAKE_FAILURES_MAX`` tries the node's
    store was taken as failed, and every workflow of the node stopped; the workflows
    woken after it were never refreshed. Now it is held and tried again, less and less
    often; the others go on; once its rows can be read, it runs on."""
    caplog.set_level(logging.INFO, "garrison")
    async with garrison.open_node(store=store_spec) as node:
        for wid in ("bad", "good"):
            await node.start_workflow(workflow_app.collector, 1, id=wid)
        store = node.hosts["workflows"].store
        pending_messages = store.pending_messages
        tried: list[str] = []

        def failing(wid: str) -> Any:
            if wid == "bad" and broken:
                tried.append(wid)
                raise garrison.StoreError(store.path, "its value is damaged")
            return pending_messages(wid)

        broken = True
        monkeypatch.setattr(store, "pending_messages", failing)
        with open_store(store_spec, lock=False) as tool:
            tool.deliver("bad", "m", "b")
            tool.deliver("good", "m", "g")
        with trio.fail_after(10):
            assert await node.workflow("good").result() == ["g"]
            while len(tried) < 6:  # (more than WAKE_FAILURES_MAX)
                await trio.sleep(0.05)
            broken = False
            assert await node.workflow("bad").result() == ["b"]
    said = [r.getMessage() for r in caplog.records]
    assert not [line for line in said if "its store failed" in line], said
    assert [line for line in said if "workflow bad" in line] == [
        f"could not refresh workflow bad: store {store.path!r}: its value is damaged; the "
        "store answers other reads: it is tried again in 0.05 s",
        f"cannot refresh workflow bad (2 failures in a row): store {store.path!r}: its "
        "value is damaged; the store answers other reads, so the node goes on without "
        "it: it is tried again in 0.1 s, then less and less often (at most every 60 s), "
        "and at its next wakeup",
        f"workflow bad is refreshed again, after {len(tried)} failed refreshes"], said


async def test_a_held_workflow_whose_store_then_fails_for_good_fails_the_store(
        store_spec: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        autojump_clock: object) -> None:
    """A workflow held for its own refresh's failure, tried again while the store then
    fails every read (a server gone for good): its tries were held on at DEBUG for
    ever, each first waiting ``retry_for`` in the node's thread on PostgreSQL, and the
    node never said its store had failed (no other wakeup came to count it). Failures
    of the held retries while the store answers nothing either count as the wakeups'
    do: after ``WAKE_FAILURES_MAX`` in a row the store has failed."""
    caplog.set_level(logging.DEBUG, "garrison")
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(workflow_app.collector, 1, id="bad")
        store = node.hosts["workflows"].store
        pending_messages = store.pending_messages
        tried: list[str] = []

        def failing(wid: str) -> Any:
            if wid == "bad":
                tried.append(wid)
                raise garrison.StoreError(store.path, "its value is damaged")
            return pending_messages(wid)

        def gone(wid: str) -> Any:  # (the server is gone for good)
            tried.append(wid)
            raise garrison.StoreError(store.path, "the server closed the connection")

        monkeypatch.setattr(store, "pending_messages", failing)
        with open_store(store_spec, lock=False) as tool:
            tool.deliver("bad", "m", "b")
        deadline = time.monotonic() + 10  # (real time: a worker thread takes wakeups)
        while not any("refresh workflow bad" in r.getMessage()
                      for r in caplog.records):  # (held)
            assert time.monotonic() < deadline, "bad was never held"
            await trio.sleep(0)
        before = len(tried)
        monkeypatch.setattr(store, "get_workflow", gone)
        monkeypatch.setattr(store, "answers", lambda: False)
        with trio.fail_after(600):
            while not any("its store failed" in r.getMessage() for r in caplog.records):
                await trio.sleep(1)
        assert len(tried) - before == _recovery.WAKE_FAILURES_MAX, tried
        await trio.sleep(600)  # (nothing tried after)
        assert len(tried) - before == _recovery.WAKE_FAILURES_MAX, tried
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum(line.startswith("host workflows: its store failed") for line in said) == 1, said
    assert sum("could not read 1 held workflows" in line for line in said) == \
        _recovery.WAKE_FAILURES_MAX - 1, said


async def test_the_probe_of_a_refresh_that_lost_the_server_waits_out_no_retry_for(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A refresh whose reads lost the server (it spent ``retry_for`` reconnecting, in
    the node's thread) asks whether the store answers other reads: that look ran the
    same reconnect loop, another ``retry_for`` with every process of the node frozen,
    and the store was declared failed twice as late. It is one attempt now: one
    connection tried per failed refresh (counted as each failure is said)."""
    from psycopg.conninfo import make_conninfo

    from garrison.persistence import PostgresStore

    caplog.set_level(logging.WARNING, "garrison")
    connects: list[str | None] = []
    at_failure: list[int] = []  # (connections tried when a failed refresh's read ended)
    at_said: list[int] = []  # (... and when that failure was said)
    connect = PostgresStore._connect

    def counted(self: PostgresStore, what: str | None, **kwargs: Any) -> Any:
        connects.append(what)
        return connect(self, what, **kwargs)

    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if "could not read" in text or text.startswith("host workflows: its store"):
                at_said.append(len(connects))

    said = Said()
    logging.getLogger("garrison").addHandler(said)
    try:
        async with garrison.open_node(store=postgres_url) as node:
            await node.start_workflow(workflow_app.collector, 1, id="w")
            store = node.hosts["workflows"].store
            assert isinstance(store, PostgresStore)
            store.retry_for = 0.3
            conninfo = store._conninfo
            get_workflow = store.get_workflow

            def lost(wid: str) -> Any:  # (the server goes away as w is refreshed)
                if wid == "w":
                    # a socket directory with no server in it: refused at once
                    store._conninfo = make_conninfo(conninfo, host=str(tmp_path))
                    if store._reader is not None:
                        store._reader.close()
                    try:
                        return get_workflow(wid)
                    finally:
                        at_failure.append(len(connects))
                return get_workflow(wid)

            monkeypatch.setattr(PostgresStore, "_connect", counted)
            monkeypatch.setattr(store, "get_workflow", lost)
            with open_store(postgres_url, lock=False) as tool:
                tool.deliver("w", "m", 1)
            with trio.fail_after(60):
                while not any("its store failed" in r.getMessage() for r in caplog.records):
                    await trio.sleep(0.05)
            store._conninfo = conninfo
            monkeypatch.undo()
    finally:
        logging.getLogger("garrison").removeHandler(said)
    assert len(at_failure) == _recovery.WAKE_FAILURES_MAX, at_failure
    assert len(at_said) == _recovery.WAKE_FAILURES_MAX, at_said
    # each failed refresh's look at the store: one connection tried
    assert [s - f for f, s in zip(at_failure, at_said, strict=True)] == \
        [1] * _recovery.WAKE_FAILURES_MAX, (at_failure, at_said, connects)


async def test_a_refresh_that_fails_once_is_a_warning_not_the_workflow_named_in_error(
        store_spec: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A refresh whose read failed once (an outage that passed while it was waited out:
    the store answers by the time the node looks) named the workflow in an error line
    as if its rows could not be read. Its first failure is a warning; the try after it
    works, and nothing is said at ERROR."""
    caplog.set_level(logging.INFO, "garrison")
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(workflow_app.collector, 1, id="w")
        store = node.hosts["workflows"].store
        pending_messages = store.pending_messages
        tried: list[str] = []

        def once(wid: str) -> Any:
            if not tried:
                tried.append(wid)
                raise garrison.StoreError(store.path, "the connection was lost")
            return pending_messages(wid)

        monkeypatch.setattr(store, "pending_messages", once)
        with open_store(store_spec, lock=False) as tool:
            tool.deliver("w", "m", 1)
        with trio.fail_after(10):
            assert await node.workflow("w").result() == [1]
    said = [(r.levelname, r.getMessage()) for r in caplog.records
            if "workflow w" in r.getMessage()]
    assert said == [
        ("WARNING", f"could not refresh workflow w: store {store.path!r}: the connection "
         "was lost; the store answers other reads: it is tried again in 0.05 s"),
        ("INFO", "workflow w is refreshed again, after 1 failed refreshes")], said
