"""WAL checkpoints in a thread of their own, off the commit path.

In WAL mode every commit appends to the ``-wal`` file; a *checkpoint* copies those
pages back into the database file and lets the next write start the WAL over. By
default SQLite runs it inside the commit that crosses 1,000 pages, in the committing
thread, with two fsyncs (the WAL, then the database file) even at
``synchronous=NORMAL``: a node committing from the trio thread would stall every
task for as long as that takes (long on a busy disk).

The store's writer connection turns that off (``wal_autocheckpoint`` is raised to a
backstop only reached if this thread falls far behind), and :class:`Checkpointer`
does the work on a connection of its own:

1. the writer calls :meth:`Checkpointer.committed` after each transaction (a counter);
   every ``interval`` transactions it wakes the thread;
2. the thread runs a ``PASSIVE`` checkpoint while writers go on: the bulk of the
   copying and both fsyncs happen here, blocking nobody; then a second one, still
   unlocked, copies what was committed during the first;
3. then, holding the writer's lock, a last ``PASSIVE`` checkpoint copies the few
   pages committed meanwhile (if there are none, it returns at once): the WAL is then
   wholly copied, so the next write starts it over from the beginning (without this
   step a store under constant load would never reach that point, and its WAL would
   grow without end). A commit arriving during this short step waits for it, in
   whichever thread it is written (a commit never moves to a worker thread because of
   it: under a test's ``MockClock`` that would let time jump).

A checkpoint moves committed data from one durable file to another: what a commit
made durable stays so (a crash in the middle is recovered from the WAL), so this
changes no durability guarantee. ``interval`` adapts so that a checkpoint copies about
``target_frames`` pages: SQLite's default of 1,000 at ``synchronous="full"``, 4,000 at
``"normal"``. The step under the lock costs two fsyncs however little it copies, and
every commit waits for it; at ``"normal"``, where commits do not fsync, it is most of
what checkpoints cost the node, and a WAL four times as long (16 MB of 4 KiB pages)
makes it four times as rare. At ``"full"`` every commit fsyncs anyway, and the WAL is
preallocated to its working size (below), which a longer one would multiply.

At ``synchronous="full"`` each commit fsyncs the WAL, and an fsync of a file that grew
costs about twice one of a file written over in place (the filesystem must also make
the new size and blocks durable). After a checkpoint the WAL is written over from the
start, but a node opens its store with no WAL at all, so its first thousands of
commits would each pay the dearer fsync. :func:`preallocate_wal` gives the WAL its
working size at once, in zeros, as PostgreSQL does for its WAL segments
(``wal_init_zero``). Zeros are never taken for a frame: SQLite's recovery stops at the
first frame whose checksum does not match, and a frame of page 0 is invalid anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable

__all__ = ["BACKSTOP_PAGES", "NORMAL_TARGET_FRAMES", "TARGET_FRAMES", "Checkpointer",
           "preallocate_wal"]

log = logging.getLogger("garrison.store")

#: pages a checkpoint aims to copy: SQLite's own ``wal_autocheckpoint`` default at
#: ``synchronous="full"``, four times that at ``"normal"`` (see the module docs)
TARGET_FRAMES = 1000
NORMAL_TARGET_FRAMES = 4 * TARGET_FRAMES
#: the writer's own ``wal_autocheckpoint``: reached only if this thread falls behind
BACKSTOP_PAGES = 20_000
#: bounds of the interval, in transactions
MIN_INTERVAL, MAX_INTERVAL = 16, 20_000
#: frames :func:`preallocate_wal` makes room for (a checkpoint's worth, twice over)
PREALLOCATED_FRAMES = 2 * TARGET_FRAMES
#: SQLite's WAL layout: a header, then frames of a header and a page
_WAL_HEADER, _FRAME_HEADER = 32, 24


def preallocate_wal(conn: sqlite3.Connection, file: str) -> None:
    """Extend the ``-wal`` file of ``file`` with zeros to the size a checkpoint cycle
    fills, and sync it (see the module docs). ``conn`` is a connection to ``file``.

    Best effort: when another connection holds the write lock, or the WAL cannot be
    written, the WAL grows as it would have (logged at debug level).
    """
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    want = _WAL_HEADER + PREALLOCATED_FRAMES * (page_size + _FRAME_HEADER)
    try:
        # SQLite's write lock: nobody appends a frame while the zeros go in after the end
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        log.debug("WAL not preallocated: %s", exc)
        return
    try:
        fd = os.open(file + "-wal", os.O_WRONLY)
        try:
            size = os.fstat(fd).st_size
            if size >= want:
                return
            zeros = memoryview(bytes(1 << 20))  # (a slice of it copies nothing)
            os.lseek(fd, size, os.SEEK_SET)
            while size < want:
                size += os.write(fd, zeros[: want - size])
            getattr(os, "fdatasync", os.fsync)(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.debug("WAL not preallocated: %s", exc)
    finally:
        conn.execute("ROLLBACK")


class Checkpointer:
    """The checkpoint thread of one store (see the module docs)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], write_lock: threading.Lock,
                 target_frames: int = TARGET_FRAMES) -> None:
        self._connect = connect
        self._write_lock = write_lock
        #: pages a checkpoint aims to copy
        self.target_frames = target_frames
        #: transactions between two checkpoints
        self.interval = 64
        self._count = 0
        #: checkpoints done (a counter for tests and statistics)
        self.checkpoints = 0
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="garrison-checkpoint",
                                        daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """One transaction was committed (called with the writer's lock held)."""
        self._count += 1
        if self._count >= self.interval:
            self._count = 0
            self._wake.set()

    def wait(self, checkpoints: int, timeout: float) -> bool:
        """Wait until ``checkpoints`` checkpoints are done; False after ``timeout``
        seconds (for tests)."""
        with self._done:
            return self._done.wait_for(lambda: self.checkpoints >= checkpoints, timeout)

    def close(self) -> None:
        """Stop the thread (a checkpoint under way finishes first)."""
        self._stop = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                try:
                    self._checkpoint(conn)
                except sqlite3.Error as exc:  # the writer sees a real problem itself
                    log.debug("background checkpoint failed: %s", exc)
        except sqlite3.Error as exc:  # pragma: no cover - the file vanished as it opened
            log.debug("checkpoint thread could not open the store: %s", exc)
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        # (busy, pages in the WAL, pages copied); -1s when not in WAL mode
        _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        interval = self.interval
        # again, still unlocked: what was committed during that copy, so that the step
        # under the lock has only what comes during this shorter one
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        with self._write_lock:  # nobody commits: the WAL ends where this copy ends
            if self._stop:
                return
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        with self._done:
            self.checkpoints += 1
            self._done.notify_all()
        if frames > 0:  # aim at target_frames pages per checkpoint
            per_tx = frames / interval
            self.interval = max(MIN_INTERVAL, min(MAX_INTERVAL,
                                                  int(self.target_frames / per_tx)))
