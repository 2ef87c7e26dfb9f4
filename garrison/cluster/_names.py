"""The cluster's names (``process.register(name, scope="cluster")``), off the event loop.

A name is a row of the store's ``names`` table (``name``, ``pid``, the holder's node
``epoch``); it counts while that node is live. Every statement runs on a thread of
its own, on a connection of its own, never on the trio thread, and never with the
store reader's retries (up to ``retry_for``, 30 s by default, during which the whole
node would stand still):

- a **release** (the holder ended, or unregistered) is queued and tried again until
  the store takes it: a process's exit never waits on the store for long and never
  fails for it. While the store answers, the exit waits for the release (a round
  trip, at most :data:`RELEASE_WAIT`), so that the name is free before its ``EXIT``
  reaches anyone, on any node; during an outage, or while the server refuses it for
  now (a lock timeout, a read-only database: ``PgCluster.refused_for_now``), it lands
  once the store takes it again, however long that takes (a node whose lease lapses
  meanwhile frees its names anyway); only a refusal for good (the role may not
  delete, say) gives it up, logged as an error;
- a **lookup** or a **register** waits for its answer at most :data:`WAIT` seconds,
  and raises :class:`~garrison.StoreError` at once while the store is known to be out
  of reach, or to refuse a release for now (the last statement failed, and no new
  attempt is due yet).

Statements run one at a time, in the order asked, so a register after a release of
the same name sees it released.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

import psycopg

from .._errors import StoreError

__all__ = ["RELEASE_WAIT", "WAIT", "ClusterNames"]

log = logging.getLogger("garrison.cluster")

#: seconds a lookup or a register waits for the store's answer
WAIT = 5.0
#: seconds a process's exit waits for the release of its cluster names (when the
#: store is not known to be out of reach)
RELEASE_WAIT = 1.0
#: the longest pause between two attempts of a release
_RETRY_MAX = 1.0


class _Job:
    __slots__ = ("abandoned", "done", "epoch", "error", "failing_since", "kind", "name",
                 "pid", "result", "told")

    def __init__(self, kind: str, name: str, pid: str, epoch: int | None = None) -> None:
        self.kind = kind
        self.name = name
        self.pid = pid
        #: a release: the node's incarnation that gives the name up (its row only)
        self.epoch = epoch
        self.done = threading.Event()
        self.result: str | None = None
        self.error: StoreError | None = None
        #: the asker stopped waiting (a register that lands anyway is given back)
        self.abandoned = False
        #: a release: when (monotonic) its first attempt failed; ``told``: logged as
        #: still failing past the store's ``retry_for``
        self.failing_since: float | None = None
        self.told = False


def _why(exc: BaseException) -> str:
    """What went wrong, on one line (a StoreError's without the store's name)."""
    text = str(exc).strip()
    path = getattr(exc, "path", None)
    if isinstance(exc, StoreError) and text.startswith(f"store {path!r}: "):
        text = text[len(f"store {path!r}: "):]
    return text.splitlines()[0] if text else type(exc).__name__


class ClusterNames:
    """The cluster's names of one node (see the module docs)."""

    def __init__(self, member: Any) -> None:
        self.pg = member.pg
        self.store = member.store
        self.name: str = member.name
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        #: why the last statement failed, while it is not known to work again
        self._down: StoreError | None = None
        #: ``_down`` is a refusal for now (the server answers), not an outage
        self._refusing = False
        #: when (monotonic) a lookup or register may try the store again while down
        self._retry_at = 0.0
        #: a statement is running now
        self._busy = False
        self._closed = False

    # ------------------------------------------------------------ the trio side
    def register_name(self, name: str, pid: str) -> str | None:
        """Take ``name`` for ``pid`` unless a live node's process holds it: ``None`` on
        success, else the holder's pid. ``StoreError`` if the store does not answer."""
        return self._ask("register", name, pid)

    def lookup_name(self, name: str) -> str | None:
        """The pid holding ``name`` on a live node, or ``None``. ``StoreError`` if the
        store does not answer."""
        return self._ask("lookup", name, "")

    def unregister_name(self, name: str, pid: str) -> None:
        """Release ``name`` if ``pid`` holds it under this node's incarnation (its
        epoch now): a row another node wrote for the same pid (a workflow it took over
        from this one, cut off meanwhile) stays. Never raises; waits for the store at
        most :data:`RELEASE_WAIT` seconds, and not at all while it is out of reach (the
        release is tried again until it lands)."""
        job = _Job("release", name, pid, self.pg.epoch)
        with self._cond:
            if self._closed or "\x00" in name:
                return  # the node left: its names are not live any more
            wait = self._down is None
            self._submit(job)
        if not wait:
            return
        with self._cond:  # until it landed, or the store is found out of reach
            if not self._cond.wait_for(lambda: job.done.is_set() or self._down is not None,
                                       RELEASE_WAIT):
                self._down = StoreError(self.store.path, f"no answer within {RELEASE_WAIT:g}s")
                self._retry_at = time.monotonic() + _RETRY_MAX

    def close(self) -> None:
        """The node left the cluster: stop (releases still queued are dropped: its names
        count no more)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
        if thread is None or not thread.is_alive():
            self._drop_connection()

    def _ask(self, kind: str, name: str, pid: str) -> str | None:
        if "\x00" in name:  # PostgreSQL text cannot hold it
            if kind == "lookup":
                return None
            raise ValueError(f"cannot register {name!r} in the cluster: a cluster name "
                             "cannot hold NUL characters")
        job = _Job(kind, name, pid)
        what = f"cannot {'look up' if kind == 'lookup' else kind} the cluster name {name!r}"
        with self._cond:
            if self._closed:
                raise StoreError(self.store.path, f"{what}: "
                                 "the node is leaving the cluster")
            down = self._down
            if down is not None and (self._busy or self._jobs
                                     or time.monotonic() < self._retry_at):
                why = ("the store refuses the cluster's names for now" if self._refusing
                       else "the store is out of reach")
                raise StoreError(self.store.path, f"{what}: {why} ({_why(down)})")
            self._submit(job)
        if not job.done.wait(WAIT):
            with self._cond:
                if not job.done.is_set():
                    job.abandoned = True
                    if self._down is None:
                        self._down = StoreError(self.store.path,
                                                f"no answer within {WAIT:g}s")
                        self._retry_at = time.monotonic() + _RETRY_MAX
                    raise StoreError(self.store.path, f"{what}: the store gave no answer "
                                     f"within {WAIT:g}s")
        if job.error is not None:
            raise StoreError(self.store.path, f"{what}: {_why(job.error)}")
        return job.result

    def _submit(self, job: _Job) -> None:
        """(Holding ``_cond``.) Queue ``job``; the thread starts on the first."""
        self._jobs.append(job)
        self._cond.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, daemon=True,
                                            name=f"garrison-names-{self.name}")
            self._thread.start()

    # ------------------------------------------------------------ the thread
    def _main(self) -> None:
        delay = 0.05
        try:
            while True:
                with self._cond:
                    while not self._jobs and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    job = self._jobs[0]
                    if job.abandoned:  # its asker gave up before it ran
                        self._jobs.popleft()
                        continue
                    self._busy = True
                try:
                    result = self._attempt(job)
                except Exception as exc:  # (the thread must outlive any failure)
                    delay = self._failed(job, exc, delay)
                    continue
                with self._cond:
                    self._busy = False
                    if self._down is not None and job.kind == "release":
                        log.info("node %s: %s again", self.name,
                                 "the store takes the cluster's names" if self._refusing
                                 else "the cluster's names are reachable")
                    self._down = None
                    self._refusing = False
                    delay = 0.05
                    self._jobs.popleft()
                    job.result = result
                    if job.kind == "register" and job.abandoned and result is None:
                        # taken after its asker gave up (and raised): give it back first
                        self._jobs.appendleft(_Job("release", job.name, job.pid,
                                                   job.epoch))
                    job.done.set()
                    self._cond.notify_all()
        finally:
            self._drop_connection()

    def _failed(self, job: _Job, exc: BaseException, delay: float) -> float:
        """A statement of ``job`` failed: a lookup or register fails at once; a release
        the store could not take now (out of reach, or refused for now) is tried again
        (after ``delay``, doubled each time) until it lands; the next delay."""
        conn = self._conn
        outage = isinstance(exc, StoreError) or conn is None or conn.closed or conn.broken
        # (a lock or statement timeout, a read-only database: it may pass, as for the
        # store's own writes, which it tries again)
        refused = not outage and self.pg.refused_for_now(exc)
        error = exc if isinstance(exc, StoreError) else StoreError(self.store.path, _why(exc))
        if outage or refused:  # (the next try on a new session, which reads the
            self._drop_connection()  # database's settings as they are then)
        with self._cond:
            self._busy = False
            if outage or (refused and job.kind == "release"):
                if self._down is None and job.kind == "release":
                    log.warning("node %s: cannot release the cluster name %r of %s now (%s): "
                                "tried again until the store takes it", self.name, job.name,
                                job.pid, error)
                self._down = error
                self._refusing = not outage
                self._retry_at = time.monotonic() + min(delay, _RETRY_MAX)
                self._cond.notify_all()
            if job.kind == "release" and (outage or refused):
                self._still_failing(job, error)
                self._cond.wait(delay)  # (woken early by a new job, or to close)
                return min(delay * 2, _RETRY_MAX)
            self._jobs.popleft()
            if job.kind == "release":  # refused for good: trying again would not help
                log.error("node %s: could not release the cluster name %r of %s: %s; "
                          "it stays held by that pid while this node is in the cluster",
                          self.name, job.name, job.pid, error)
            job.error = error
            job.done.set()
            self._cond.notify_all()
        return delay

    def _still_failing(self, job: _Job, error: StoreError) -> None:
        """(Holding ``_cond``.) The release ``job`` failed again: said once it has
        failed for the store's ``retry_for`` (past which the store gives its own
        statements up; this one is kept, or the name would stay held by a dead pid)."""
        now = time.monotonic()
        if job.failing_since is None:
            job.failing_since = now
        retry_for = float(self.store.retry_for)
        if not job.told and now - job.failing_since >= retry_for:
            job.told = True
            log.error("node %s: the cluster name %r of %s is still not released after "
                      "%gs (%s): tried again until the store takes it; until then that "
                      "pid holds it, and a lookup or register of a cluster name here "
                      "raises StoreError", self.name, job.name, job.pid, retry_for, error)

    def _attempt(self, job: _Job) -> str | None:
        had = self._conn is not None
        try:
            return self._run(job)
        except psycopg.Error:
            conn = self._conn
            if not had or not (conn is None or conn.closed or conn.broken):
                raise
        self._drop_connection()  # one the server dropped (it restarted): once more, anew
        return self._run(job)

    def _run(self, job: _Job) -> str | None:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = self._conn = self.pg.names_connection()
        if job.kind == "lookup":
            return self.pg.lookup_name(conn, job.name)
        if job.kind == "release":
            self.pg.unregister_name(conn, job.name, job.pid, job.epoch)
            return None
        job.epoch = self.pg.epoch  # (the incarnation the row is written under)
        return self.pg.register_name(conn, job.name, job.pid, job.epoch)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
