"""The SQLite store: one file (WAL), one writer connection, one reader connection.

Write path
----------
Every write is a :class:`Transaction`: a list of operations built on the
caller's thread (values are converted to JSON there, so a ``PayloadError``
surfaces at the call that passed the value) and committed atomically inside
``BEGIN IMMEDIATE`` ... ``with conn:`` (COMMIT, or ROLLBACK on any error).

- ``store.write(tx)`` commits at once in the calling thread. In WAL mode with
  ``synchronous=NORMAL`` that costs about 20 us: fine from the trio thread for
  small records (the synchronous ``workflow.now()`` etc.).
- ``await store.commit(tx)`` is group commit: the first caller when nothing is
  being written becomes the *leader* and writes its transaction in a worker
  thread (``trio.to_thread.run_sync``); every ``commit`` that arrives meanwhile
  queues, and when the leader's transaction is committed the queue is handed,
  whole, to the next leader and written as ONE transaction. Under load the
  cost of a commit (and of its fsync with ``synchronous="full"``) is shared by
  every caller in the batch. A caller resumes only after its transaction is
  committed; waiting is shielded from cancellation, so a commit that was asked
  for always finishes (and is never half-done). If the batch fails as a whole
  (for example the disk is full) every caller in it gets that error; if one
  caller's operations fail (say ``PromiseAlreadyCompleted``), the batch is
  rolled back and rewritten with a SAVEPOINT per caller, so only that caller
  gets its error and the others commit.

The hot paths are plain ``conn.execute`` with fixed SQL: sqlite-utils'
``insert``/``upsert`` commit their own transaction, which would stop a journal
append, an inbox insert and a status update from committing together. The
schema is created with sqlite-utils (see ``_schema.py``).

Reads use a second connection; in WAL mode they never wait for the writer and
see every committed transaction.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time as _time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import sqlite_utils
import trio

from .._errors import NoSuchWorkflow, PromiseAlreadyCompleted, StoreError
from ..actors._values import ErrorInfo, Pid
from . import _file
from ._converter import RawJson, to_json
from ._schema import SCHEMA_VERSION, check_garrison, check_tables, migrate
from ._store import (
    FINAL_STATUSES,
    InboxRecord,
    JournalRecord,
    PromiseRecord,
    PromiseStatus,
    Store,
    StoreStatistics,
    TimerRecord,
    WakeupRecord,
    WorkflowRecord,
    WorkflowStatus,
)

__all__ = ["SQLiteStore", "Transaction"]

_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
_UNSET: Any = object()

#: An operation: runs against the writer connection inside a transaction.
_Op = Callable[[sqlite3.Connection], Any]


def _seconds(value: _dt.datetime | float | None) -> float:
    if value is None:
        return _time.time()
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: durable times must be timezone-aware")
        return value.timestamp()
    return float(value)


def _encode(value: Any, what: str) -> str:
    if isinstance(value, RawJson):
        return value.text
    return to_json(value, what=what)


def _status(value: str) -> str:
    try:
        return WorkflowStatus(value).value
    except ValueError:
        choices = ", ".join(s.value for s in WorkflowStatus)
        raise ValueError(f"invalid workflow status {value!r}: expected one of {choices}") from None


def _pid_text(pid: Pid | str | None) -> str | None:
    if pid is None:
        return None
    return str(pid)


class Transaction:
    """A list of writes committed atomically by ``SQLiteStore.write`` / ``commit``.

    Building one does no I/O: each method converts its values to JSON now
    (raising ``garrison.PayloadError`` naming the value) and records one
    operation; methods return the transaction, so calls chain::

        tx = Transaction().append_journal(wid, 4, "send", "order.paid", outcome)
        tx.deliver(other_wid, "order.paid", payload, sender=me)
        tx.update_workflow(wid, status="waiting")
        results = await store.commit(tx)   # one result per operation, in order

    Operations that refer to a workflow require its row to exist (foreign
    keys); ``update_workflow`` on a missing row raises ``NoSuchWorkflow``.
    """

    __slots__ = ("_ops", "_workflow_ids")

    def __init__(self) -> None:
        self._ops: list[_Op] = []
        self._workflow_ids: list[str] = []

    def __len__(self) -> int:
        return len(self._ops)

    def __bool__(self) -> bool:
        return bool(self._ops)

    def _add(self, workflow_id: str, op: _Op) -> Transaction:
        self._ops.append(op)
        self._workflow_ids.append(workflow_id)
        return self

    def extend(self, other: Transaction) -> Transaction:
        """Append every operation of ``other`` (after this one's)."""
        self._ops.extend(other._ops)
        self._workflow_ids.extend(other._workflow_ids)
        return self

    # -- workflows ---------------------------------------------------------

    def create_workflow(
        self,
        workflow_id: str,
        name: str,
        input: Sequence[Any] | RawJson = (),
        *,
        status: str = "pending",
        parent: Pid | str | None = None,
        run_id: str | None = None,
        attempt: int = 1,
        host: str | None = None,
        search: Mapping[str, Any] | None = None,
        memo: Mapping[str, Any] | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Insert a workflow row unless ``workflow_id`` exists.

        The operation's result is ``True`` if the row was created, ``False`` if
        a workflow with that id was already there (idempotent start).
        ``name`` is the workflow function's ``module:qualname``.
        """
        input_json = (
            input.text
            if isinstance(input, RawJson)
            else to_json(list(input), what=f"the arguments of workflow {name!r}")
        )
        search_json = to_json(dict(search or {}), what=f"the search attributes of {workflow_id!r}")
        memo_json = to_json(dict(memo or {}), what=f"the memo of {workflow_id!r}")
        now = _seconds(time)
        params = (
            workflow_id, name, _status(status), input_json, _pid_text(parent),
            run_id if run_id is not None else uuid.uuid4().hex, attempt, host, now, now,
            search_json, memo_json,
        )  # fmt: skip

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO workflows (workflow_id, name, status, input, parent, "
                "run_id, attempt, host, created, updated, search, memo) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            return cur.rowcount == 1

        return self._add(workflow_id, op)

    def update_workflow(
        self,
        workflow_id: str,
        *,
        status: str | None = None,
        result: Any = _UNSET,
        error: ErrorInfo | None = _UNSET,
        run_id: str | None = None,
        attempt: int | None = None,
        input: Sequence[Any] | RawJson | None = None,
        cancel_requested: bool | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Set the given columns (and ``updated``); raises ``NoSuchWorkflow`` at commit
        if the row does not exist."""
        sets: list[str] = ["updated = ?"]
        params: list[Any] = [_seconds(time)]
        if status is not None:
            sets.append("status = ?")
            params.append(_status(status))
        if result is not _UNSET:
            sets.append("result = ?")
            params.append(_encode(result, f"the result of workflow {workflow_id!r}"))
        if error is not _UNSET:
            sets.append("error = ?")
            params.append(None if error is None else _encode(error, "a workflow error"))
        if run_id is not None:
            sets.append("run_id = ?")
            params.append(run_id)
        if attempt is not None:
            sets.append("attempt = ?")
            params.append(attempt)
        if input is not None:
            sets.append("input = ?")
            params.append(
                input.text
                if isinstance(input, RawJson)
                else to_json(list(input), what=f"the arguments of workflow {workflow_id!r}")
            )
        if cancel_requested is not None:
            sets.append("cancel_requested = ?")
            params.append(int(cancel_requested))
        params.append(workflow_id)
        sql = f"UPDATE workflows SET {', '.join(sets)} WHERE workflow_id = ?"
        values = tuple(params)

        def op(conn: sqlite3.Connection) -> None:
            if conn.execute(sql, values).rowcount != 1:
                raise NoSuchWorkflow(workflow_id)

        return self._add(workflow_id, op)

    def set_attributes(
        self,
        workflow_id: str,
        *,
        search: Mapping[str, Any] | None = None,
        memo: Mapping[str, Any] | None = None,
    ) -> Transaction:
        """Merge into the search attributes / memo (a key set to ``None`` is removed)."""
        search_json = to_json(dict(search or {}), what=f"the search attributes of {workflow_id!r}")
        memo_json = to_json(dict(memo or {}), what=f"the memo of {workflow_id!r}")

        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE workflows SET search = json_patch(search, ?), memo = json_patch(memo, ?), "
                "updated = ? WHERE workflow_id = ?",
                (search_json, memo_json, _time.time(), workflow_id),
            )
            if cur.rowcount != 1:
                raise NoSuchWorkflow(workflow_id)

        return self._add(workflow_id, op)

    def request_cancel(self, workflow_id: str) -> Transaction:
        """Flag the workflow for cancellation (a tool's way to cancel; the node acts on it)."""
        return self.update_workflow(workflow_id, cancel_requested=True)

    def reset_run(
        self,
        workflow_id: str,
        input: Sequence[Any] | RawJson,
        *,
        run_id: str | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Continue-as-new: drop the journal and timers, set new input and run id,
        status ``running``. Inbox, state, promises and monitors are kept."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM journal WHERE workflow_id = ?", (workflow_id,))
            conn.execute("DELETE FROM timers WHERE workflow_id = ?", (workflow_id,))

        self._add(workflow_id, op)
        return self.update_workflow(
            workflow_id,
            status="running",
            input=input,
            run_id=run_id if run_id is not None else uuid.uuid4().hex,
            result=None,
            error=None,
            time=time,
        )

    def delete_workflow(self, workflow_id: str) -> Transaction:
        """Remove the workflow and every row that belongs to it."""

        def op(conn: sqlite3.Connection) -> None:
            for table in ("journal", "inbox", "timers", "promises", "state", "monitors"):
                conn.execute(f"DELETE FROM {table} WHERE workflow_id = ?", (workflow_id,))
            conn.execute("DELETE FROM workflows WHERE workflow_id = ?", (workflow_id,))

        return self._add(workflow_id, op)

    # -- journal -----------------------------------------------------------

    def append_journal(
        self,
        workflow_id: str,
        seq: int,
        kind: str,
        name: str,
        outcome: Any = None,
        *,
        attempts: int = 1,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Record what durable operation ``seq`` did. A second row for the same
        ``(workflow_id, seq)`` fails with ``sqlite3.IntegrityError``."""
        params = (
            workflow_id,
            seq,
            kind,
            name,
            _encode(outcome, f"the outcome of {kind} {name!r} (seq {seq} of {workflow_id!r})"),
            attempts,
            _seconds(time),
        )
        return self._add(workflow_id, _exec(_SQL_JOURNAL, params))

    # -- inbox -------------------------------------------------------------

    def deliver(
        self,
        workflow_id: str,
        topic: str,
        payload: Any = None,
        *,
        msg_id: str | None = None,
        sender: Pid | str | None = None,
        kind: str = "message",
        call_ref: str | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Put a message (``kind="message"``) or event (``kind="event"``) in the
        workflow's durable inbox. The result is the row id (arrival order), or
        ``None`` if a message with this ``msg_id`` was already delivered."""
        if kind not in ("message", "event"):
            raise ValueError(f"invalid inbox kind {kind!r}: expected 'message' or 'event'")
        params = (
            workflow_id,
            msg_id if msg_id is not None else uuid.uuid4().hex,
            topic,
            _encode(payload, f"the payload of {kind} {topic!r} to workflow {workflow_id!r}"),
            _pid_text(sender),
            kind,
            call_ref,
            _seconds(time),
        )

        def op(conn: sqlite3.Connection) -> int | None:
            cur = conn.execute(_SQL_INBOX, params)
            return cur.lastrowid if cur.rowcount == 1 else None

        return self._add(workflow_id, op)

    def consume(self, workflow_id: str, inbox_id: int, seq: int) -> Transaction:
        """Mark inbox row ``inbox_id`` as taken by the receive at journal ``seq``.

        Fails with ``ValueError`` at commit if the row is not a pending message
        of that workflow."""
        params = (seq, inbox_id, workflow_id)

        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE inbox SET consumed_seq = ? "
                "WHERE id = ? AND workflow_id = ? AND consumed_seq IS NULL",
                params,
            )
            if cur.rowcount != 1:
                raise ValueError(
                    f"inbox row {inbox_id} is not a pending message of workflow {workflow_id!r}"
                )

        return self._add(workflow_id, op)

    # -- timers ------------------------------------------------------------

    def add_timer(self, workflow_id: str, seq: int, deadline: _dt.datetime | float) -> Transaction:
        """A durable timer for operation ``seq``; ``deadline`` is wall clock (aware or
        unix seconds). Re-adding the same ``seq`` replaces the deadline."""
        params = (workflow_id, seq, _seconds(deadline))
        return self._add(
            workflow_id,
            _exec(
                "INSERT OR REPLACE INTO timers (workflow_id, seq, deadline) VALUES (?, ?, ?)",
                params,
            ),
        )

    def remove_timer(self, workflow_id: str, seq: int) -> Transaction:
        """Drop the timer of operation ``seq`` (it fired or was cancelled)."""
        params = (workflow_id, seq)
        return self._add(
            workflow_id,
            _exec("DELETE FROM timers WHERE workflow_id = ? AND seq = ?", params),
        )

    # -- promises ----------------------------------------------------------

    def create_promise(
        self, workflow_id: str, name: str, *, time: _dt.datetime | float | None = None
    ) -> Transaction:
        """Declare a pending promise; no-op if it exists (it may be resolved already)."""
        params = (workflow_id, name, _seconds(time))
        return self._add(
            workflow_id,
            _exec(
                "INSERT OR IGNORE INTO promises (workflow_id, name, status, created) "
                "VALUES (?, ?, 'pending', ?)",
                params,
            ),
        )

    def resolve_promise(
        self,
        workflow_id: str,
        name: str,
        value: Any = None,
        *,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Resolve the promise (creating it if the workflow has not declared it yet).

        At commit: ``garrison.PromiseAlreadyCompleted`` if it was resolved or
        rejected before, ``NoSuchWorkflow`` if the workflow does not exist."""
        text = _encode(value, f"the value of promise {name!r} of workflow {workflow_id!r}")
        return self._add(
            workflow_id, _complete_promise(workflow_id, name, "resolved", text, None, time)
        )

    def reject_promise(
        self,
        workflow_id: str,
        name: str,
        message: str,
        *,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Reject the promise with ``message``; same rules as :meth:`resolve_promise`."""
        return self._add(
            workflow_id, _complete_promise(workflow_id, name, "rejected", None, str(message), time)
        )

    # -- state and monitors -----------------------------------------------

    def set_state(
        self, workflow_id: str, key: str, value: Any, *, time: _dt.datetime | float | None = None
    ) -> Transaction:
        """Set a workflow's state ``key`` (readable from outside with ``get_state``)."""
        params = (
            workflow_id,
            key,
            _encode(value, f"state {key!r} of workflow {workflow_id!r}"),
            _seconds(time),
        )
        return self._add(
            workflow_id,
            _exec(
                "INSERT OR REPLACE INTO state (workflow_id, key, value, updated) "
                "VALUES (?, ?, ?, ?)",
                params,
            ),
        )

    def add_monitor(self, workflow_id: str, watcher: Pid | str) -> Transaction:
        """``watcher`` gets the workflow's ``EXIT`` durably; idempotent."""
        params = (workflow_id, str(watcher), _time.time())
        return self._add(
            workflow_id,
            _exec(
                "INSERT OR IGNORE INTO monitors (workflow_id, watcher, created) VALUES (?, ?, ?)",
                params,
            ),
        )

    def remove_monitor(self, workflow_id: str, watcher: Pid | str) -> Transaction:
        """Stop ``watcher`` watching the workflow."""
        params = (workflow_id, str(watcher))
        return self._add(
            workflow_id,
            _exec("DELETE FROM monitors WHERE workflow_id = ? AND watcher = ?", params),
        )


def _exec(sql: str, params: tuple[Any, ...]) -> _Op:
    def op(conn: sqlite3.Connection) -> None:
        conn.execute(sql, params)

    return op


_SQL_JOURNAL = (
    "INSERT INTO journal (workflow_id, seq, kind, name, outcome, attempts, time) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INBOX = (
    "INSERT OR IGNORE INTO inbox (workflow_id, msg_id, topic, payload, sender, kind, call_ref, "
    "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _complete_promise(
    workflow_id: str,
    name: str,
    status: str,
    value: str | None,
    error: str | None,
    time: _dt.datetime | float | None,
) -> _Op:
    when = _seconds(time)

    def op(conn: sqlite3.Connection) -> None:
        cur = conn.execute(
            "UPDATE promises SET status = ?, value = ?, error = ?, completed = ? "
            "WHERE workflow_id = ? AND name = ? AND status = 'pending'",
            (status, value, error, when, workflow_id, name),
        )
        if cur.rowcount == 1:
            return
        row = conn.execute(
            "SELECT status FROM promises WHERE workflow_id = ? AND name = ?", (workflow_id, name)
        ).fetchone()
        if row is not None:
            raise PromiseAlreadyCompleted(
                f"promise {name!r} of workflow {workflow_id!r} is already {row[0]}"
            )
        if (
            conn.execute("SELECT 1 FROM workflows WHERE workflow_id = ?", (workflow_id,)).fetchone()
            is None
        ):
            raise NoSuchWorkflow(workflow_id)
        conn.execute(
            "INSERT INTO promises (workflow_id, name, status, value, error, created, completed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (workflow_id, name, status, value, error, when, when),
        )

    return op


class _Request:
    """One ``commit()`` call waiting for its batch."""

    __slots__ = ("done", "error", "results", "task", "tx")

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        self.task: trio.lowlevel.Task | None = None  # set while parked
        self.done = False
        self.results: list[Any] | None = None
        self.error: BaseException | None = None


def _refuse_abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class SQLiteStore:
    """The durable store on SQLite (WAL mode); see the module docs for the write path.

    ``path=None`` is an in-memory store: nothing survives the process. It is
    a private temporary file (deleted by :meth:`close`) rather than
    ``:memory:``, so the writer thread and the reader connection share it
    exactly as with a durable file; it runs with ``synchronous=OFF`` because
    nothing needs to survive a crash.

    ``synchronous="normal"`` (default) survives a killed process;
    ``"full"`` also survives power loss (an fsync per commit; group commit
    shares it). Anything else raises ``ValueError``.

    A new store file, its lock file and SQLite's ``-wal`` and ``-shm`` files are
    created with ``mode`` (default ``0o600``, owner only: the journal holds
    payloads), whatever the umask; an existing file keeps its mode (and SQLite
    gives ``-wal`` and ``-shm`` the mode of the store file).

    A durable store takes an exclusive ``flock`` on ``<resolved path>.lock``
    (symlinks resolved; the kernel drops it when the process dies); a second
    opener, in this process or another, by this path or another way to the
    same file, gets :class:`~garrison.StoreLocked`. Tools (the ``garrison
    workflows`` CLI) open with ``lock=False``: they read freely, and their
    writes (inbox messages, promise resolutions, cancel requests) commit at
    once and also leave a wakeup row; the node holding the lock picks them up
    with :meth:`take_wakeups` (polling it, which costs one indexed query). An
    unlocked opener never creates or migrates a database (a missing file is
    ``FileNotFoundError``).

    What is at ``path`` is checked before it is used: an empty (truncated) file,
    a file that is not a SQLite database, another application's database, a
    store missing tables, a damaged file, or one the operating system refuses
    (read-only file system, no permission) raise :class:`~garrison.StoreError`
    naming the file and the problem, and nothing is written to it. While the
    store is open, :meth:`check_file` tells whether the file is still the one
    opened.

    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: str = "normal",
        lock: bool = True,
        busy_timeout: float = 5.0,
        mode: int = _file.DEFAULT_MODE,
    ) -> None:
        if not isinstance(synchronous, str) or synchronous.lower() not in _SYNCHRONOUS:
            raise ValueError(
                f"invalid synchronous mode {synchronous!r}: expected 'normal' "
                "(survives a killed process) or 'full' (also survives power loss)"
            )
        self.synchronous = synchronous.lower()
        #: the mode new files of this store are created with
        self.mode = _file.check_mode(mode)
        self.locked = False
        self._lock_fd: int | None = None
        self._lock_file: str | None = None
        self._tempdir: str | None = None
        self._closed = False
        self._notify_node = False
        if path is None:
            self.path: str | None = None
            self._tempdir = tempfile.mkdtemp(prefix="garrison-store-")
            file = os.path.join(self._tempdir, "store.db")
            pragma_sync = "OFF"
        else:
            self.path = os.fspath(path)
            file = self.path
            pragma_sync = _SYNCHRONOUS[self.synchronous]
            self._notify_node = not lock
        self._file = file
        conns: list[sqlite3.Connection] = []
        try:
            try:
                if lock and self.path is not None:
                    self._lock_fd, self._lock_file = _file.take_lock(self.path, self.mode)
                    self.locked = True
                if not _file.existing(file, self.path):
                    if self._notify_node:
                        raise FileNotFoundError(f"no garrison store at {self.path!r}")
                    _file.create(
                        file, self.path, self.mode,
                        lambda new: self._build(new, pragma_sync, busy_timeout),
                    )  # fmt: skip
                self._conn = self._connect(file, busy_timeout)
                conns.append(self._conn)
                #: the sqlite-utils view of the writer connection (schema work)
                self.db = sqlite_utils.Database(self._conn)
                self._prepare(self.db, pragma_sync)
                self._reader = self._connect(file, busy_timeout)
                conns.append(self._reader)
                self._identity = _file.identity(file, self.path)
            except sqlite3.Error as exc:
                raise _file.store_error(self.path, file, exc, busy_timeout) from exc
        except BaseException:
            for conn in conns:
                conn.close()
            self._release()
            raise
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._pending: list[_Request] = []
        self._flushing = False
        self._stats = {
            "transactions": 0,
            "sync_writes": 0,
            "batches": 0,
            "batched_writes": 0,
            "largest_batch": 0,
            "failed_batches": 0,
        }

    def _prepare(self, db: sqlite_utils.Database, pragma_sync: str) -> None:
        """Refuse another application's database (before anything writes to it), then
        WAL mode, the synchronous level, migrations and the check of every table."""
        check_garrison(db, self.path)
        conn = db.conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":  # pragma: no cover - only on odd filesystems
            raise StoreError(self.path, f"cannot enable WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={pragma_sync}")
        migrate(db, self.path or ":memory:", allow_migrate=not self._notify_node)
        check_tables(db, self.path)

    def _build(self, file: str, pragma_sync: str, busy_timeout: float) -> None:
        """A new store's file: the schema in WAL mode; closing it leaves no -wal."""
        conn = self._connect(file, busy_timeout)
        try:
            self._prepare(sqlite_utils.Database(conn), pragma_sync)
        finally:
            conn.close()

    @staticmethod
    def _connect(file: str, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            file, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def check_file(self) -> None:
        """Raise :class:`~garrison.StoreError` if the store's file is no longer the
        one this store opened: deleted, replaced (another file renamed over it),
        truncated to 0 bytes, or its lock file deleted or replaced.

        A node writing to a deleted file carries on without error (into an inode no
        path reaches) and loses everything it wrote when it closes; this tells.
        Cheap (a ``stat`` of the file and of the lock file): call it after a write
        error and periodically.
        """
        self._check_open()
        _file.check_identity(
            self._file, self.path, self._identity, self._lock_fd, self._lock_file
        )

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Close both connections, release the lock, delete an in-memory store's file."""
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            self._conn.close()
        with self._read_lock:
            self._reader.close()
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
            self.locked = False
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "<memory>"
        return f"<SQLiteStore {where!r} synchronous={self.synchronous} locked={self.locked}>"

    @property
    def schema_version(self) -> int:
        """The schema version this store is at."""
        return SCHEMA_VERSION

    # -- writing -----------------------------------------------------------

    def transaction(self) -> Transaction:
        """A new, empty :class:`Transaction`."""
        return Transaction()

    def _apply(self, tx: Transaction) -> list[Any]:
        conn = self._conn
        results = [op(conn) for op in tx._ops]
        if self._notify_node:
            conn.executemany(
                "INSERT INTO wakeups (workflow_id, kind, created) VALUES (?, 'tool', ?)",
                [(wid, _time.time()) for wid in dict.fromkeys(tx._workflow_ids)],
            )
        return results

    def write(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` now, in the calling thread, as one transaction.

        Returns each operation's result; raises the first error (nothing of
        ``tx`` is then committed). Blocks while a group commit is being
        written (it holds the writer connection).
        """
        if not tx._ops:
            return []
        conn = self._conn
        with self._write_lock:
            self._check_open()
            conn.execute("BEGIN IMMEDIATE")
            with conn:
                results = self._apply(tx)
            self._stats["transactions"] += 1
            self._stats["sync_writes"] += 1
        return results

    async def commit(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` by group commit (see the module docs); returns each
        operation's result once it is committed. Runs from trio; waiting is
        shielded from cancellation, so a commit asked for is never lost
        half-way."""
        if not tx._ops:
            return []
        self._check_open()
        request = _Request(tx)
        self._pending.append(request)
        if self._flushing:
            # Park until our batch is committed or we are made leader. The
            # abort function refuses cancellation: the commit is under way.
            request.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        if not request.done:
            # This caller leads: write everything queued, as one transaction.
            self._flushing = True
            batch, self._pending = self._pending, []
            try:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._write_batch, batch)
            finally:
                reschedule = trio.lowlevel.reschedule
                for waiting in batch:
                    if waiting.results is None and waiting.error is None:
                        waiting.error = RuntimeError("the group commit was interrupted")
                    waiting.done = True
                    if waiting.task is not None:
                        reschedule(waiting.task)
                if self._pending:
                    # Hand leadership to the oldest waiter: it writes the queue.
                    leader = self._pending[0]
                    assert leader.task is not None
                    reschedule(leader.task)
                    leader.task = None
                else:
                    self._flushing = False
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    def _write_batch(self, batch: list[_Request]) -> None:
        """Worker thread: one transaction for the whole batch (SAVEPOINTs on failure)."""
        conn = self._conn
        stats = self._stats
        with self._write_lock:
            try:
                self._check_open()
                conn.execute("BEGIN IMMEDIATE")
                with conn:
                    for request in batch:
                        request.results = self._apply(request.tx)
            except BaseException as exc:
                if len(batch) == 1 or not isinstance(exc, Exception):
                    for request in batch:
                        request.error = exc
                    return
                stats["failed_batches"] += 1
                if not self._write_isolated(batch):
                    return
            stats["transactions"] += 1
            stats["batches"] += 1
            stats["batched_writes"] += len(batch)
            stats["largest_batch"] = max(stats["largest_batch"], len(batch))

    def _write_isolated(self, batch: list[_Request]) -> bool:
        """The batch failed: rewrite it with one SAVEPOINT per caller so only the
        callers whose own operations fail get an error."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            with conn:
                for request in batch:
                    conn.execute("SAVEPOINT request")
                    try:
                        request.results = self._apply(request.tx)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO request")
                        request.results = None
                        request.error = exc
                    conn.execute("RELEASE request")
        except BaseException as exc:
            for request in batch:
                request.results = None
                request.error = exc
            return False
        return True

    def _check_open(self) -> None:
        if self._closed:
            where = self.path if self.path is not None else "<memory>"
            raise RuntimeError(f"store {where!r} is closed")

    def statistics(self) -> StoreStatistics:
        """Counters of the write path (transactions, group-commit batches, ...)."""
        return StoreStatistics(**self._stats)

    # -- shortcuts: one operation, committed now -----------------------------

    def deliver(self, workflow_id: str, topic: str, payload: Any = None, **kw: Any) -> int | None:
        """``write(Transaction().deliver(...))``; returns the inbox row id."""
        result: int | None = self.write(Transaction().deliver(workflow_id, topic, payload, **kw))[0]
        return result

    def resolve_promise(self, workflow_id: str, name: str, value: Any = None) -> None:
        """Resolve now; ``PromiseAlreadyCompleted`` if it was completed before."""
        self.write(Transaction().resolve_promise(workflow_id, name, value))

    def reject_promise(self, workflow_id: str, name: str, message: str) -> None:
        """Reject now; ``PromiseAlreadyCompleted`` if it was completed before."""
        self.write(Transaction().reject_promise(workflow_id, name, message))

    def set_state(self, workflow_id: str, key: str, value: Any) -> None:
        """Set state ``key`` now."""
        self.write(Transaction().set_state(workflow_id, key, value))

    def request_cancel(self, workflow_id: str) -> None:
        """Flag the workflow for cancellation now (``NoSuchWorkflow`` if unknown)."""
        self.write(Transaction().request_cancel(workflow_id))

    def take_wakeups(self) -> list[WakeupRecord]:
        """Remove and return the wakeups left by tools, oldest first.

        The node holding the lock polls this to learn which workflows a tool
        wrote to (signals, promise resolutions, cancel requests)."""
        conn = self._conn
        with self._write_lock:
            self._check_open()
            conn.execute("BEGIN IMMEDIATE")
            with conn:
                rows = conn.execute(
                    "DELETE FROM wakeups RETURNING id, workflow_id, kind"
                ).fetchall()
            self._stats["transactions"] += 1
        rows.sort()
        return [WakeupRecord(wid, kind) for _id, wid, kind in rows]

    # -- reading -----------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._read_lock:
            self._check_open()
            return self._reader.execute(sql, params).fetchall()

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow's row, or ``None``."""
        rows = self._query(
            f"SELECT {WorkflowRecord.COLUMNS} FROM workflows WHERE workflow_id = ?",
            (workflow_id,),
        )
        return WorkflowRecord.from_row(rows[0]) if rows else None

    def list_workflows(
        self,
        status: str | Iterable[str] | None = None,
        search: Mapping[str, Any] | None = None,
        *,
        parent: Pid | str | None = None,
        limit: int | None = None,
    ) -> list[WorkflowRecord]:
        """Workflows, oldest first, filtered by status (one or several), by search
        attributes (every ``key=value`` must match the stored JSON value) and by
        parent pid."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(_status(s) for s in statuses)
        for key, value in (search or {}).items():
            where.append("json_extract(search, ?) IS json_extract(?, '$')")
            params.append("$." + json.dumps(str(key)))
            params.append(to_json(value, what=f"search attribute {key!r}"))
        if parent is not None:
            where.append("parent = ?")
            params.append(str(parent))
        sql = f"SELECT {WorkflowRecord.COLUMNS} FROM workflows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created, workflow_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [WorkflowRecord.from_row(row) for row in self._query(sql, params)]

    def unfinished_workflows(self) -> list[WorkflowRecord]:
        """Every workflow not completed, failed or cancelled, oldest first (recovery)."""
        return self.list_workflows([s for s in WorkflowStatus if s not in FINAL_STATUSES])

    def journal(self, workflow_id: str) -> list[JournalRecord]:
        """The workflow's journal ordered by seq."""
        rows = self._query(
            f"SELECT {JournalRecord.COLUMNS} FROM journal WHERE workflow_id = ? ORDER BY seq",
            (workflow_id,),
        )
        from_row = JournalRecord.from_row
        return [from_row(row) for row in rows]

    def journal_entries(self, workflow_id: str) -> tuple[list[tuple[int, str, str, Any, int]], int]:
        """Recovery's fast path: ``([(seq, kind, name, outcome, attempts), ...], bytes)``,
        the journal in seq order with decoded outcomes, and the size of their JSON.

        Every outcome is decoded by ONE ``json.loads`` of the texts joined into an
        array, and no :class:`JournalRecord` is built: on a long journal per-row
        decoding and record objects cost about three times as much (replay speed
        after a restart is bound by this read)."""
        rows = self._query(
            "SELECT seq, kind, name, outcome, attempts FROM journal WHERE workflow_id = ? "
            "ORDER BY seq",
            (workflow_id,),
        )
        if not rows:
            return [], 0
        texts = [row[3] for row in rows]
        outcomes = json.loads("[" + ",".join(texts) + "]")
        return (
            [(seq, kind, name, out, attempts)
             for (seq, kind, name, _, attempts), out in zip(rows, outcomes, strict=True)],
            sum(map(len, texts)),
        )

    def journal_size(self, workflow_id: str) -> tuple[int, int]:
        """``(records, bytes of outcome JSON)`` of the workflow's journal."""
        rows = self._query(
            "SELECT count(*), coalesce(sum(length(outcome)), 0) FROM journal WHERE workflow_id = ?",
            (workflow_id,),
        )
        return int(rows[0][0]), int(rows[0][1])

    def pending_messages(self, workflow_id: str) -> list[InboxRecord]:
        """Inbox rows (messages and events) not consumed yet, in arrival order."""
        rows = self._query(
            f"SELECT {InboxRecord.COLUMNS} FROM inbox "
            "WHERE workflow_id = ? AND consumed_seq IS NULL ORDER BY id",
            (workflow_id,),
        )
        return [InboxRecord.from_row(row) for row in rows]

    def inbox_message(self, msg_id: str) -> InboxRecord | None:
        """The inbox row of message ``msg_id`` (consumed or not), or ``None``."""
        rows = self._query(f"SELECT {InboxRecord.COLUMNS} FROM inbox WHERE msg_id = ?", (msg_id,))
        return InboxRecord.from_row(rows[0]) if rows else None

    def timers(self, workflow_id: str | None = None) -> list[TimerRecord]:
        """Timers (of one workflow, or all), earliest deadline first."""
        if workflow_id is None:
            rows = self._query(f"SELECT {TimerRecord.COLUMNS} FROM timers ORDER BY deadline, seq")
        else:
            rows = self._query(
                f"SELECT {TimerRecord.COLUMNS} FROM timers WHERE workflow_id = ? "
                "ORDER BY deadline, seq",
                (workflow_id,),
            )
        return [TimerRecord.from_row(row) for row in rows]

    def due_timers(self, now: _dt.datetime | float) -> list[TimerRecord]:
        """Timers whose deadline is at or before ``now``, earliest first."""
        rows = self._query(
            f"SELECT {TimerRecord.COLUMNS} FROM timers WHERE deadline <= ? "
            "ORDER BY deadline, workflow_id, seq",
            (_seconds(now),),
        )
        return [TimerRecord.from_row(row) for row in rows]

    def next_timer(self) -> TimerRecord | None:
        """The timer with the earliest deadline, or ``None``."""
        rows = self._query(
            f"SELECT {TimerRecord.COLUMNS} FROM timers ORDER BY deadline, workflow_id, seq LIMIT 1"
        )
        return TimerRecord.from_row(rows[0]) if rows else None

    def get_promise(self, workflow_id: str, name: str) -> PromiseRecord | None:
        """The promise's row, or ``None`` (neither declared nor resolved yet)."""
        rows = self._query(
            f"SELECT {PromiseRecord.COLUMNS} FROM promises WHERE workflow_id = ? AND name = ?",
            (workflow_id, name),
        )
        return PromiseRecord.from_row(rows[0]) if rows else None

    def promises(
        self, workflow_id: str, status: PromiseStatus | str | None = None
    ) -> list[PromiseRecord]:
        """The workflow's promises (optionally of one status), by name."""
        sql = f"SELECT {PromiseRecord.COLUMNS} FROM promises WHERE workflow_id = ?"
        params: list[Any] = [workflow_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(PromiseStatus(status).value)
        return [PromiseRecord.from_row(row) for row in self._query(sql + " ORDER BY name", params)]

    def get_state(self, workflow_id: str, key: str, default: Any = None) -> Any:
        """The decoded value of state ``key``, or ``default``."""
        rows = self._query(
            "SELECT value FROM state WHERE workflow_id = ? AND key = ?", (workflow_id, key)
        )
        return json.loads(rows[0][0]) if rows else default

    def states(self, workflow_id: str) -> dict[str, Any]:
        """Every state key of the workflow, decoded."""
        rows = self._query(
            "SELECT key, value FROM state WHERE workflow_id = ? ORDER BY key", (workflow_id,)
        )
        return {key: json.loads(value) for key, value in rows}

    def monitors(self, workflow_id: str) -> list[Pid]:
        """The pids watching the workflow, in the order they started watching."""
        rows = self._query(
            "SELECT watcher FROM monitors WHERE workflow_id = ? ORDER BY created, watcher",
            (workflow_id,),
        )
        return [Pid.parse(row[0]) for row in rows]

    def watched_by(self, watcher: Pid | str) -> list[str]:
        """The workflow ids ``watcher`` monitors."""
        rows = self._query(
            "SELECT workflow_id FROM monitors WHERE watcher = ? ORDER BY created, workflow_id",
            (str(watcher),),
        )
        return [row[0] for row in rows]


def _conforms(store: SQLiteStore) -> Store:
    """Static check (mypy): SQLiteStore implements the Store protocol."""
    return store
