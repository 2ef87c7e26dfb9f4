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
import os
import signal
import threading
from collections.abc import Iterator

import psycopg
import pytest

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
