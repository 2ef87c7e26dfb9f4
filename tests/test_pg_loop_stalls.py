"""A node's event loop while the PostgreSQL server stalls a read of the node's own (a
lock another session holds on the table it reads, or the server process of its
session stopped: SIGSTOP, a hung disk, a network partition): the node keeps running
(its timers, processes, console) and what the read was for is done once the server
answers. A test of a node counts the beats of a trio task while the server is stalled
(a node whose loop froze has none); one of a store call the node makes in its own
thread checks that the call returns while the server is still stalled. (Real time: a
real server is stalled, for a second or two.)"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import trio
import workflow_app

import garrison
from garrison import _store_tools
from garrison.persistence import PostgresStore, _postgres

pytestmark = pytest.mark.postgres


@contextlib.contextmanager
def _table_locked(url: str, table: str) -> Iterator[threading.Event]:
    """``garrison.<table>`` locked ``ACCESS EXCLUSIVE`` by another session (in a thread
    of its own) in the block, or until the event it gives is set (at most 20 s: a test
    whose loop froze ends; the event is set then too); let go after it."""
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with psycopg.connect(url) as holder:
            holder.execute(f"LOCK TABLE garrison.{table} IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(20)
            release.set()
            holder.rollback()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        assert held.wait(10)
        yield release
    finally:
        release.set()
        thread.join()


class _Beats:
    """A trio task's beats, one each tenth of a second of the node's loop."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            await trio.sleep(0.1)
            self.count += 1


async def _beats_within(beats: _Beats, seconds: float, release: threading.Event) -> int:
    """The beats of ``beats`` over ``seconds`` of the loop's time, the server stalled
    (``release`` set after it: a loop frozen until then counts none, or one)."""
    before = beats.count
    await trio.sleep(seconds)
    counted = beats.count - before
    release.set()
    return counted


async def test_taking_the_wakeups_under_a_lock_leaves_the_node_s_loop_running(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """``PostgresStore.wakeups`` read the wakeup rows (``take_wakeups``) on the
    reader's session in the node's thread: a lock another session held on the wakeups
    table (a ``VACUUM FULL``, a DBA's ``LOCK TABLE``) froze the node for as long as it
    was held, its timers, processes and console with it. The take runs in a thread of
    its own session now; the node runs meanwhile, and a tool's signal written under
    the lock reaches its workflow once the lock is let go."""
    caplog.set_level(logging.WARNING, logger="garrison.store")
    beats = _Beats()
    async with garrison.open_node(store=postgres_url) as node, trio.open_nursery() as n:
        n.start_soon(beats.run)
        await node.start_workflow(workflow_app.collector, 1, id="w")
        await trio.sleep(0.5)  # (its LISTEN session is open)
        store = node.hosts["workflows"].store
        assert isinstance(store, PostgresStore)
        with _table_locked(postgres_url, "wakeups") as release:
            with psycopg.connect(postgres_url, autocommit=True) as c:  # (wakes the node)
                c.execute("SELECT pg_notify('garrison:garrison', '')")

            def signal_it() -> None:  # (its insert waits for the lock too)
                with PostgresStore(postgres_url, lock=False) as tool:
                    _store_tools.signal(tool, "w", "m", "hi")

            n.start_soon(trio.to_thread.run_sync, signal_it)
            counted = await _beats_within(beats, 1.5, release)
        assert counted >= 5, counted
        with trio.fail_after(20):
            assert await node.workflow("w").result() == ["hi"]
        n.cancel_scope.cancel()


def test_a_look_whether_the_server_answers_is_bounded_under_a_lock(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``answers()`` (a node's wakeup watcher asks it, in the node's thread, whether a
    refresh that failed failed for its workflow alone) read the workflows table on the
    reader's session with no bound: a lock another session held on it kept the node's
    thread waiting for as long as it was held. It says ``False`` after
    :data:`PROBE_WAIT` (1 s here), the lock still held, and the store reads on
    afterwards."""
    monkeypatch.setattr(_postgres, "PROBE_WAIT", 1.0)
    with PostgresStore(postgres_url) as store:
        assert store.answers()
        with _table_locked(postgres_url, "workflows") as release:
            answered = store.answers()
            still_held = not release.is_set()
        assert (answered, still_held) == (False, True)
        assert store.answers()
        assert store.get_workflow("w") is None


def test_a_look_whether_the_server_answers_is_bounded_on_a_stopped_server_process(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server process of the reader's session stopped (SIGSTOP: a hung disk): a
    statement timeout cannot end a wait for a process that does not run, so the look
    is bounded by the store itself: ``False`` after :data:`PROBE_WAIT`, the process
    still stopped; the next read is made on a new session."""
    monkeypatch.setattr(_postgres, "PROBE_WAIT", 1.0)
    with PostgresStore(postgres_url) as store:
        assert store.answers()
        pid = store._reader.info.backend_pid
        os.kill(pid, signal.SIGSTOP)
        try:
            timer = threading.Timer(15, os.kill, (pid, signal.SIGCONT))
            timer.start()
            answered = store.answers()
            still_stopped = timer.is_alive()
        finally:
            timer.cancel()
            os.kill(pid, signal.SIGCONT)
        assert (answered, still_stopped) == (False, True)
        assert store.answers()
        assert store.get_workflow("w") is None


async def test_taking_the_wakeups_from_a_stopped_server_process_is_said_and_waited_out(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The server process of the session that takes the wakeups stopped (SIGSTOP: a
    hung disk): no statement timeout ends that wait. The node runs meanwhile; past
    ``READ_WAIT_WARNING`` (0.5 s here) one warning names the store and the session on
    the server; once the process runs again the take ends, one line says after how
    long, and the tool's signal reaches its workflow."""
    monkeypatch.setattr(_postgres, "READ_WAIT_WARNING", 0.5)
    caplog.set_level(logging.INFO, logger="garrison.store")
    beats = _Beats()
    async with garrison.open_node(store=postgres_url) as node, trio.open_nursery() as n:
        n.start_soon(beats.run)
        await node.start_workflow(workflow_app.collector, 1, id="w")
        store = node.hosts["workflows"].store
        assert isinstance(store, PostgresStore)
        with trio.fail_after(10):  # (the node's first take made its session)
            while store._taker is None:
                await trio.sleep(0.05)
        pid = store._taker.info.backend_pid
        os.kill(pid, signal.SIGSTOP)
        stopped = threading.Event()  # (SIGCONT at the latest after 20 s)
        timer = threading.Timer(20, stopped.set)
        timer.start()
        try:
            with PostgresStore(postgres_url, lock=False) as tool:
                _store_tools.signal(tool, "w", "m", "hi")
            counted = await _beats_within(beats, 1.5, stopped)
        finally:
            timer.cancel()
            os.kill(pid, signal.SIGCONT)
        assert counted >= 5, counted
        with trio.fail_after(20):
            assert await node.workflow("w").result() == ["hi"]
        n.cancel_scope.cancel()
    said = [r.getMessage() for r in caplog.records if "the wakeups" in r.getMessage()]
    assert len(said) == 2, said
    assert said[0].startswith(
        f"store {store.path!r}: taking the wakeups that tools left has waited 0.5s for "
        f"the server's answer (its session, pid {pid} on the server, "), said
    assert said[1].startswith(
        f"store {store.path!r}: the take of the wakeups that waited for the server ended "
        "after "), said


async def test_a_take_of_the_wakeups_that_cannot_make_its_session_is_said_as_that_once(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A take whose session the server refused (a connection limit that leaves no room
    for it, a server restarting) tries to make it for ``retry_for``; past
    ``READ_WAIT_WARNING`` it was said as a wait 'for the server's answer (its session on
    the server, waits for a lock another session holds ...)', which it was not, and so
    was every take after it, each ``retry_for`` for as long as the refusal lasted, as
    well as the failure's own warning. It is said as a wait for a session of its own,
    once: the takes after it fail as the first did, which the failure's warning says."""
    monkeypatch.setattr(_postgres, "READ_WAIT_WARNING", 0.3)
    caplog.set_level(logging.DEBUG, logger="garrison.store")
    refused = ['too many connections for role "app"']
    plain = PostgresStore._connect

    def connect(store: PostgresStore, what: str | None, **options: Any) -> Any:
        if what == "wakeups" and refused:
            raise garrison.StoreError(store.path, f"cannot connect: {refused[0]}")
        return plain(store, what, **options)

    monkeypatch.setattr(PostgresStore, "_connect", connect)

    def said(words: str, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == level and words in r.getMessage()]

    with PostgresStore(postgres_url, retry_for=0.6) as store:
        async with garrison.open_node(store=store) as node:
            await node.start_workflow(workflow_app.collector, 1, id="w")
            with PostgresStore(postgres_url, lock=False) as tool:
                _store_tools.signal(tool, "w", "m", "hi")
            with trio.fail_after(20):  # (three takes failed: a warning, then DEBUG)
                while len(said("cannot take the wakeups", logging.DEBUG)) < 2:
                    await trio.sleep(0.05)
            waited = said("has waited")
            assert len(waited) == 1, waited
            assert waited[0].startswith(
                f"store {store.path!r}: taking the wakeups that tools left has waited 0.3s "
                "for a session of its own on the server (refused, or not answered: it is "
                "made again for retry_for, 0.6s); "), waited
            assert len(said("cannot take the wakeups")) == 1
            refused.clear()
            with trio.fail_after(20):
                assert await node.workflow("w").result() == ["hi"]


async def test_the_warning_of_a_take_whose_session_closes_as_it_is_said_is_said(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The take's thread closes its session (lost: it makes another) between the
    warning's look at whether it is closed and at its pid on the server: reading the
    pid raised psycopg's ``OperationalError`` in the warning's task, which is the
    nursery's of ``wakeups()``: out of it as an ``ExceptionGroup``, which ended the
    node. The warning is said, as a wait for a session of its own."""

    class _Closing:  # (closed as its pid is read)
        closed = False

        @property
        def info(self) -> Any:
            raise psycopg.OperationalError("the connection is closed")

    monkeypatch.setattr(_postgres, "READ_WAIT_WARNING", 0)
    caplog.set_level(logging.WARNING, logger="garrison.store")
    with PostgresStore(postgres_url) as store:
        monkeypatch.setattr(store, "_taker", _Closing())
        said = trio.Event()
        try:
            await store._say_take_waits(said)
        finally:
            monkeypatch.setattr(store, "_taker", None)  # (the store closes none)
        assert said.is_set()
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert "has waited 0s for a session of its own on the server" in warned[0], warned


async def test_a_node_stops_while_its_take_of_the_wakeups_waits_for_a_lock(
        postgres_url: str) -> None:
    """A take of the wakeups waiting for a lock another session holds (in a worker
    thread) does not hold the node's stop: the stop does not wait for the lock, and the
    store's close ends the take's wait (its session cut)."""
    with PostgresStore(postgres_url):
        pass  # the schema exists
    with _table_locked(postgres_url, "wakeups") as release:
        async with garrison.open_node(store=postgres_url) as node:
            await node.start_workflow(workflow_app.collector, 1, id="w")
            store = node.hosts["workflows"].store
            assert isinstance(store, PostgresStore)
            with psycopg.connect(postgres_url, autocommit=True) as c:  # (wakes the node)
                c.execute("SELECT pg_notify('garrison:garrison', '')")
            with trio.fail_after(10):
                while not store._take_lock.locked():
                    await trio.sleep(0.05)
            await trio.sleep(0.3)
            assert store._take_lock.locked()  # (the take waits for the lock)
        still_held = not release.is_set()
        with trio.fail_after(10):  # (the take's thread let go of its session)
            while store._take_lock.locked() or store._taker is not None:
                await trio.sleep(0.05)
    assert still_held
