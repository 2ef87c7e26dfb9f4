"""The PostgreSQL store: the same tables, records and guarantees as the SQLite store,
on a server shared by processes and machines.

Connections
-----------
- the **writer** (synchronous psycopg, autocommit): every write. The node's group
  commit writes its batches from a worker thread (``Strategy.THREAD``: the node keeps
  running while a batch waits for the server; a commit nobody could share is written
  at once in the trio thread, as with SQLite). A node holds the store's session-level
  advisory lock on this connection: a second node gets :class:`~garrison.StoreLocked`,
  and the lock goes when the node's connection does (a killed node frees it).
- the **reader** (synchronous psycopg, autocommit, prepared statements): every read,
  from the trio thread or a tool, plus taking the wakeup rows.
- the **listener** (:class:`~garrison.persistence._pg_trio.TrioConnection`, made by
  the first ``await wakeups()``): ``LISTEN`` on the store's channel. Tools (stores
  opened with ``lock=False``) add a wakeup row and ``pg_notify`` in the transaction of
  their write, so the node wakes when it commits: no polling.

Write path
----------
A :class:`~garrison.persistence.Transaction` is planned into prepared statements
(``_OP_SQL``) on the caller's side (a NUL character, which PostgreSQL text cannot
hold, is refused there with a ``ValueError``). One statement is sent as is (its own
implicit transaction: one round trip); several are sent in one pipeline ending with a
Sync, which the server runs as ONE implicit transaction (one round trip; an error
rolls the whole of it back). Checks that must abort the transaction (a missing
workflow, an inbox row already taken, a promise completed twice) are made on the
server (``expect()`` and ``complete_promise()`` of ``_pg_schema.py``) and come back
as the same exceptions as SQLite's. ``set_attributes`` reads the row ``FOR UPDATE``
and merges in Python (RFC 7396, SQLite's key order), in an explicit transaction. A
failed group-commit batch is written again with a SAVEPOINT per caller, so only the
callers whose own operations fail get an error.

The first statement of every transaction also sets this writer's row of
``writers`` to the transaction's number. That is what makes a lost connection safe:

- the connection drops (network, server restart, ``pg_terminate_backend``): the
  store reconnects with backoff (for ``retry_for`` seconds), takes its lock again,
  and reads its number. Equal to the transaction in flight: it committed (the
  results are read back); equal to the previous one: it did not, and it is sent
  again. Nothing is applied twice and nothing is lost;
- lower than a transaction the server had confirmed: the server lost confirmed
  commits (``synchronous="normal"`` is ``synchronous_commit=off``: a server crash
  loses its last few hundred milliseconds). The store then refuses every further
  write with :class:`~garrison.StoreError` (the node's memory is ahead of the
  store); a restarted node resumes from what the store kept;
- the server stays unreachable past ``retry_for``, or another node took the lock
  meanwhile: the same refusal. A workflow is never marked failed because the network
  blinked: its end cannot be recorded, and it resumes from its journal.

Reads retry the same way (they are idempotent).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time as _time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, NoReturn

import psycopg
import trio
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from trio.testing import MockClock

from .._errors import (
    DedupKeyTaken,
    NoSuchWorkflow,
    PromiseAlreadyCompleted,
    StoreError,
    StoreLocked,
)
from ..actors._values import Pid
from . import _pg_schema, is_postgres_url
from ._converter import to_json
from ._group_commit import CommitRequest, GroupCommit, Strategy
from ._records import (
    FINAL_STATUSES,
    InboxRecord,
    JournalRecord,
    PromiseRecord,
    PromiseStatus,
    QueueRecord,
    ScheduleRecord,
    StoreStatistics,
    TimerRecord,
    WakeupRecord,
    WorkflowRecord,
    WorkflowStatus,
    parse_status,
)
from ._store import Store
from ._transaction import Op, Transaction, unix_seconds

__all__ = ["PostgresStore"]

#: ``synchronous`` -> the writer's ``synchronous_commit``
_SYNCHRONOUS = {"normal": "off", "full": "on"}
#: libpq settings a store uses unless the URL sets them: fail fast when the server
#: cannot be reached, and notice a dead peer (no RST) within seconds, not minutes
_CONN_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "20000",
}
_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
_BAD = pq.ConnStatus.BAD


# ------------------------------------------------------------------ the URL
def _parse(url: str, schema: str | None) -> tuple[dict[str, str], str, str]:
    """``(libpq parameters, schema, display name)``; ``ValueError`` says what is wrong."""
    if not is_postgres_url(url):
        raise ValueError(f"expected a postgresql:// URL, got {url!r}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"invalid PostgreSQL URL {_display_raw(url)!r}: {exc}") from None
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    in_url = [v for k, v in query if k == "schema"]
    rest = [(k, v) for k, v in query if k != "schema"]
    if in_url and schema is not None and in_url[-1] != schema:
        raise ValueError(f"the URL names schema {in_url[-1]!r} and schema= says {schema!r}")
    chosen = schema if schema is not None else (in_url[-1] if in_url else None)
    chosen = chosen if chosen is not None else _pg_schema.DEFAULT_SCHEMA
    if (not isinstance(chosen, str) or not chosen or len(chosen.encode()) > 63
            or "\x00" in chosen or "$" in chosen):
        raise ValueError(f"invalid schema name {chosen!r}: 1 to 63 bytes, no NUL and no '$'")
    bare = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(rest)))
    try:
        parsed = conninfo_to_dict(bare)
    except psycopg.Error as exc:
        raise ValueError(f"invalid PostgreSQL URL {_display_raw(url)!r}: {exc}") from None
    params = {k: str(v) for k, v in parsed.items() if v is not None}
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    user = params.get("user")
    dbname = params.get("dbname") or user or ""
    shown = f"postgresql://{user + '@' if user else ''}{host}:{port}/{dbname}"
    if chosen != _pg_schema.DEFAULT_SCHEMA:
        shown += f"?schema={chosen}"
    return params, chosen, shown


def _display_raw(url: str) -> str:
    """``url`` without its password (for a message about a URL that does not parse)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is not None:
            netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
            return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "postgresql://…"
    return url


def _reason(exc: BaseException) -> str:
    """The useful line of a psycopg error (libpq repeats the server address)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        for marker in ("FATAL:", "ERROR:"):
            if marker in line:
                return line.split(marker, 1)[1].strip()
    return "; ".join(lines)


def _lock_key(schema: str) -> int:
    """The advisory lock a node holds on its store (``schema`` in this database)."""
    digest = hashlib.blake2b(f"garrison-node:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


# ------------------------------------------------------------------ statements
class _Stmt:
    """One prepared statement: its name on the connection, its text, its arity."""

    __slots__ = ("marked", "name", "nparams", "text")

    def __init__(self, name: str, text: str, nparams: int, marked: _Stmt | None = None) -> None:
        self.name = name.encode()
        self.text = text
        self.nparams = nparams
        #: the same statement, also setting this writer's transaction number
        self.marked = marked


def _with_mark(text: str, n: int, s: str) -> str:
    mark = (f"_mark AS (INSERT INTO {s}.writers (writer, batch, updated) "
            f"VALUES (${n + 1}, ${n + 2}, ${n + 3}) ON CONFLICT (writer) DO UPDATE "
            "SET batch = EXCLUDED.batch, updated = EXCLUDED.updated)")
    if text.startswith("WITH "):
        return f"WITH {mark}, {text[5:]}"
    return f"WITH {mark} {text}"


#: Op -> its statements, as (key, text with ``{s}`` for the schema, number of params)
_OP_SQL: dict[str, tuple[str, int]] = {
    "create_workflow": (
        "INSERT INTO {s}.workflows (workflow_id, name, status, input, parent, run_id, "
        "attempt, host, created, updated, search, memo, trace) VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
        "ON CONFLICT (workflow_id) DO NOTHING", 13),
    "attrs_read": (
        "SELECT search, memo FROM {s}.workflows WHERE workflow_id = $1 FOR UPDATE", 1),
    "attrs_write": (
        "UPDATE {s}.workflows SET search = $2, memo = $3, updated = $4 "
        "WHERE workflow_id = $1", 4),
    "reset_journal": ("DELETE FROM {s}.journal WHERE workflow_id = $1", 1),
    "reset_timers": ("DELETE FROM {s}.timers WHERE workflow_id = $1", 1),
    "delete_inbox": ("DELETE FROM {s}.inbox WHERE workflow_id = $1", 1),
    "delete_promises": ("DELETE FROM {s}.promises WHERE workflow_id = $1", 1),
    "delete_state": ("DELETE FROM {s}.state WHERE workflow_id = $1", 1),
    "delete_monitors": ("DELETE FROM {s}.monitors WHERE workflow_id = $1", 1),
    "delete_workflow": ("DELETE FROM {s}.workflows WHERE workflow_id = $1", 1),
    "truncate_journal": ("DELETE FROM {s}.journal WHERE workflow_id = $1 AND seq >= $2", 2),
    "append_journal": (
        "INSERT INTO {s}.journal (workflow_id, seq, kind, name, outcome, attempts, time) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)", 7),
    "deliver": (
        "INSERT INTO {s}.inbox (workflow_id, msg_id, topic, payload, sender, kind, call_ref, "
        "created, trace) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT (msg_id) DO NOTHING RETURNING id", 9),
    "consume": (
        "WITH u AS (UPDATE {s}.inbox SET consumed_seq = $1 WHERE id = $2 AND workflow_id = $3 "
        "AND consumed_seq IS NULL RETURNING 1) "
        "SELECT {s}.expect(count(*) = 1, 'not_pending', $3) FROM u", 3),
    "add_timer": (
        "INSERT INTO {s}.timers (workflow_id, seq, deadline) VALUES ($1, $2, $3) "
        "ON CONFLICT (workflow_id, seq) DO UPDATE SET deadline = EXCLUDED.deadline", 3),
    "remove_timer": ("DELETE FROM {s}.timers WHERE workflow_id = $1 AND seq = $2", 2),
    "create_promise": (
        "INSERT INTO {s}.promises (workflow_id, name, status, created) "
        "VALUES ($1, $2, 'pending', $3) ON CONFLICT (workflow_id, name) DO NOTHING", 3),
    "complete_promise": ("SELECT {s}.complete_promise($1, $2, $3, $4, $5, $6)", 6),
    "set_state": (
        "INSERT INTO {s}.state (workflow_id, key, value, updated) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (workflow_id, key) DO UPDATE SET value = EXCLUDED.value, "
        "updated = EXCLUDED.updated", 4),
    "add_monitor": (
        "INSERT INTO {s}.monitors (workflow_id, watcher, created) VALUES ($1, $2, $3) "
        "ON CONFLICT (workflow_id, watcher) DO NOTHING", 3),
    "remove_monitor": ("DELETE FROM {s}.monitors WHERE workflow_id = $1 AND watcher = $2", 2),
    "wakeup": (
        "INSERT INTO {s}.wakeups (workflow_id, kind, created) VALUES ($1, 'tool', $2)", 2),
    "schedule_wakeup": (
        "INSERT INTO {s}.wakeups (workflow_id, kind, created) VALUES ($1, 'schedule', $2)", 2),
    "enqueue": ("SELECT {s}.enqueue($1, $2, $3, $4, $5)", 5),
    "dequeue": ("DELETE FROM {s}.queue WHERE workflow_id = $1", 1),
    "delete_queue": ("DELETE FROM {s}.queue WHERE workflow_id = $1", 1),
    "put_schedule": (
        "INSERT INTO {s}.schedules (schedule_id, host, workflow, input, cron, every, timezone, "
        "overlap, catchup_window, next_tick, source, created, updated) VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
        "ON CONFLICT (schedule_id) DO UPDATE SET host = EXCLUDED.host, "
        "workflow = EXCLUDED.workflow, input = EXCLUDED.input, cron = EXCLUDED.cron, "
        "every = EXCLUDED.every, timezone = EXCLUDED.timezone, overlap = EXCLUDED.overlap, "
        "catchup_window = EXCLUDED.catchup_window, next_tick = EXCLUDED.next_tick, "
        "source = EXCLUDED.source, updated = EXCLUDED.updated", 13),
    "delete_schedule": ("DELETE FROM {s}.schedules WHERE schedule_id = $1", 1),
    "notify": ("SELECT pg_notify($1, '')", 1),
    "mark": (
        "INSERT INTO {s}.writers (writer, batch, updated) VALUES ($1, $2, $3) "
        "ON CONFLICT (writer) DO UPDATE SET batch = EXCLUDED.batch, updated = EXCLUDED.updated",
        3),
}

#: the columns ``update_workflow`` may set
_UPDATABLE = frozenset({"status", "result", "error", "run_id", "attempt", "input",
                        "cancel_requested"})
#: the columns ``update_schedule`` may set
_SCHEDULE_COLUMNS = frozenset({"paused", "next_tick", "last_tick", "last_workflow",
                               "buffered_tick"})


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 (what SQLite's ``json_patch`` does): kept keys stay in place, new keys
    are appended, ``null`` removes a key, objects merge recursively."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


class _Call:
    """One statement to send: the statement, its encoded params, and what its result
    means (``None``, ``"created"``: a row was inserted, ``"id"``: the returned id)."""

    __slots__ = ("op", "params", "result", "stmt")

    def __init__(self, stmt: _Stmt, params: list[Any], op: int, result: str | None
                 ) -> None:
        self.stmt = stmt
        self.params = params
        self.op = op
        self.result = result


class _Plan:
    """A transaction turned into statements (see ``PostgresStore._plan``)."""

    __slots__ = ("calls", "error", "needs_read", "results", "tx")

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        self.calls: list[_Call] = []
        #: ``set_attributes``: an explicit transaction with a read
        self.needs_read = False
        self.results: list[Any] | None = None
        self.error: BaseException | None = None


class _ConnectionLost(Exception):
    """The writer's connection broke during a transaction (its outcome is unknown)."""


class _Handover(Exception):
    """A commit in the trio thread lost its connection: write it from a worker thread."""


class _StatementFailed(Exception):
    """A statement of a pipeline failed; ``.index`` says which (the server's error is
    ``.error``, already mapped to garrison's exception where it is one of ours)."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


# ------------------------------------------------------------------ the store
class PostgresStore:
    """The durable store on PostgreSQL (see the module docs for the write path).

    ``url`` is a libpq URL, ``"postgresql://user[:password]@host[:port]/dbname"``
    (any libpq parameter may follow as a query parameter, e.g. ``?sslmode=require``);
    ``schema`` (or ``?schema=`` in the URL) is the PostgreSQL schema holding the
    tables, ``"garrison"`` by default: one database can hold several stores. The
    schema and its tables are created (and migrated) when a node opens the store.

    ``synchronous="normal"`` (default) commits with ``synchronous_commit=off``: a
    killed node loses nothing it committed; a crash of the *server* can lose its last
    few hundred milliseconds, which the store notices when it reconnects (it then
    refuses to write, see the module docs). ``"full"`` waits for the server's WAL
    flush on every commit (group commit shares it): survives a server crash and power
    loss.

    ``lock=True`` (a node) takes the store's advisory lock: a second node on the same
    database and schema gets :class:`~garrison.StoreLocked`. Tools open with
    ``lock=False``: they read freely, never create or migrate the schema, and their
    writes wake the node at once (a wakeup row and a notification in the same
    transaction).

    An unreachable server, bad credentials, a missing database or a bad URL raise
    :class:`~garrison.StoreError` at open, naming the server (``host:port/db``, never
    the password) and the reason. A connection lost later is retried with backoff for
    ``retry_for`` seconds.

    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        lock: bool = True,
        synchronous: str = "normal",
        retry_for: float = 30.0,
    ) -> None:
        if not isinstance(synchronous, str) or synchronous.lower() not in _SYNCHRONOUS:
            raise ValueError(
                f"invalid synchronous mode {synchronous!r}: expected 'normal' "
                "(survives a killed node) or 'full' (also survives a server crash)"
            )
        self.synchronous = synchronous.lower()
        try:
            params, self.schema, path = _parse(url, schema)
        except ValueError as exc:
            raise StoreError(_display_raw(url), str(exc)) from None
        #: the server, database (and schema) for messages; never the password
        self.path: str | None = path
        self.retry_for = float(retry_for)
        self.locked = False
        self._owner = lock
        self._closed = False
        self._failed: StoreError | None = None
        self._writer_id = uuid.uuid4().hex
        #: the number of the last transaction the server confirmed
        self._acked = 0
        self._s = _quote(self.schema)
        self._channel = f"garrison:{self.schema}"
        params = {**_CONN_DEFAULTS, **params}
        params.setdefault("application_name", (
            f"garrison {'node' if lock else 'tool'} {socket.gethostname()}:{os.getpid()}"
        )[:63])
        self._params = params
        self._conninfo = make_conninfo(**params)
        self._stmts: dict[str, _Stmt] = {}
        self._update_stmts: dict[tuple[str, ...], _Stmt] = {}
        self._prepared: set[bytes] = set()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._listener: Any = None
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        try:
            self._writer = self._connect_writer(first=True)
            self._reader = self._connect("reads")
        except BaseException:
            self._close_connections()
            raise
        if lock:
            self._group = GroupCommit(self._write_alone, self._write_batch, Strategy.THREAD)
            self._inline_group = GroupCommit(self._write_one, self._write_batch,
                                             Strategy.INLINE)
        else:  # a tool writes at once
            self._group = self._inline_group = GroupCommit(
                self._write_one, self._write_batch, Strategy.IMMEDIATE)
        self._stats = {
            "transactions": 0,
            "sync_writes": 0,
            "batches": 0,
            "batched_writes": 0,
            "largest_batch": 0,
            "failed_batches": 0,
        }

    # -- connecting ----------------------------------------------------------
    def _connect(self, what: str) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(self.path, f"cannot connect ({what}): {_reason(exc)}") from None
        try:
            conn.execute("SET standard_conforming_strings = on")
            conn.execute("SET synchronous_commit = " + _SYNCHRONOUS[self.synchronous])
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(self.path, f"cannot set up the connection: {_reason(exc)}") from None
        return conn

    def _connect_writer(self, *, first: bool) -> psycopg.Connection[Any]:
        """The writer's connection: the lock (a node), the schema (checked, or created
        and migrated by a node at open), the writers row."""
        conn = self._connect("writes")
        try:
            if self._owner:
                self._take_lock(conn)
                self.locked = True
            if first:
                if not self._owner and _pg_schema.read_version(conn, self.schema) == 0:
                    raise StoreError(self.path, "no garrison store here (no schema "
                                     f"{self.schema!r} with garrison's tables): start a node "
                                     "on it first")
                try:
                    _pg_schema.migrate(conn, self.schema, allow_migrate=self._owner,
                                       where=self.path)
                except pg_errors.InsufficientPrivilege as exc:
                    raise StoreError(self.path, f"cannot create the schema: {_reason(exc)}"
                                     ) from None
                if self._owner:  # rows of writers gone for a day (killed tools)
                    conn.execute(f"DELETE FROM {self._s}.writers WHERE updated < %s",
                                 (_time.time() - 86400,))
        except BaseException:
            conn.close()
            self.locked = False
            raise
        self._prepared = set()
        return conn

    def _take_lock(self, conn: psycopg.Connection[Any]) -> None:
        """The store's advisory lock, or :class:`~garrison.StoreLocked`. A holder that is
        a process of this machine that no longer exists (a node killed a moment ago,
        whose server session has not ended yet) is waited for, a few seconds at most."""
        deadline = _time.monotonic() + 5.0
        while True:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key(self.schema),)
                               ).fetchone()
            if got and got[0]:
                return
            held = self._lock_holder(conn)
            if not _dead_local_holder(held) or _time.monotonic() > deadline:
                raise StoreLocked(self.path or "", held=held)
            _time.sleep(0.05)

    def _lock_holder(self, conn: psycopg.Connection[Any]) -> str:
        key = _lock_key(self.schema) & 0xFFFFFFFFFFFFFFFF
        try:
            row = conn.execute(
                "SELECT a.application_name, host(a.client_addr), a.pid FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                "AND l.granted AND l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) AND l.classid = %s AND l.objid = %s "
                "AND l.objsubid = 1", (key >> 32, key & 0xFFFFFFFF)).fetchone()
        except psycopg.Error:
            row = None
        if row is None:
            return "advisory lock of schema " + repr(self.schema)
        app, addr, pid = row
        return f"held by {app or 'a client'} from {addr or 'a local socket'}, server pid {pid}"

    # -- statements ------------------------------------------------------------
    def _stmt(self, key: str) -> _Stmt:
        stmt = self._stmts.get(key)
        if stmt is None:
            text, n = _OP_SQL[key]
            text = text.replace("{s}", self._s)
            marked = _Stmt(f"gm_{key}", _with_mark(text, n, self._s), n + 3)
            stmt = self._stmts[key] = _Stmt(f"g_{key}", text, n, marked)
        return stmt

    def _update_stmt(self, columns: tuple[str, ...]) -> _Stmt:
        stmt = self._update_stmts.get(columns)
        if stmt is None:
            for column in columns:
                if column not in _UPDATABLE:
                    raise ValueError(f"update_workflow cannot set column {column!r}")
            sets = "".join(f", {c} = ${i + 3}" for i, c in enumerate(columns))
            text = (f"WITH u AS (UPDATE {self._s}.workflows SET updated = $2{sets} "
                    "WHERE workflow_id = $1 RETURNING 1) "
                    f"SELECT {self._s}.expect(count(*) = 1, 'no_such_workflow', $1) FROM u")
            n = len(columns) + 2
            name = "g_update_" + "_".join(columns)
            marked = _Stmt("gm" + name[1:], _with_mark(text, n, self._s), n + 3)
            stmt = self._update_stmts[columns] = _Stmt(name, text, n, marked)
        return stmt

    def _schedule_stmt(self, columns: tuple[str, ...], expect: bool) -> _Stmt:
        """``UPDATE_SCHEDULE`` of these columns (with the compare-and-set on
        ``next_tick`` when ``expect``); its result: one row updated."""
        key = ("schedule", *columns, "expect" if expect else "")
        stmt = self._update_stmts.get(key)
        if stmt is None:
            for column in columns:
                if column not in _SCHEDULE_COLUMNS:
                    raise ValueError(f"update_schedule cannot set column {column!r}")
            sets = "".join(f", {c} = ${i + 3}" for i, c in enumerate(columns))
            n = len(columns) + 2
            text = f"UPDATE {self._s}.schedules SET updated = $2{sets} WHERE schedule_id = $1"
            if expect:
                n += 1
                text += f" AND next_tick IS NOT DISTINCT FROM ${n}::double precision"
            name = "g_sched_" + "_".join(key[1:]).strip("_")
            marked = _Stmt("gm" + name[1:], _with_mark(text, n, self._s), n + 3)
            stmt = self._update_stmts[key] = _Stmt(name, text, n, marked)
        return stmt

    # -- planning ----------------------------------------------------------------
    def _plan(self, tx: Transaction) -> _Plan:
        """The statements of ``tx`` (and, for a tool, its wakeups and notification);
        ``ValueError`` for a value PostgreSQL cannot store (nothing is sent)."""
        plan = _Plan(tx)
        calls = plan.calls
        stmt = self._stmt
        for index, (op, params) in enumerate(tx.ops):
            what = op.value
            if op is Op.UPDATE_WORKFLOW:
                wid, updated, sets = params
                columns = tuple(c for c, _ in sets)
                calls.append(_Call(self._update_stmt(columns),
                                   _encode((wid, updated, *(v for _, v in sets)), what),
                                   index, None))
            elif op is Op.CREATE_WORKFLOW:
                _check_search(params[10], params[0])
                calls.append(_Call(stmt("create_workflow"), _encode(params, what), index,
                                   "created"))
            elif op is Op.DELIVER:
                calls.append(_Call(stmt("deliver"), _encode(params, what), index, "id"))
            elif op is Op.ENQUEUE:
                calls.append(_Call(stmt("enqueue"), _encode(params, what), index, "id"))
            elif op is Op.UPDATE_SCHEDULE:
                sid, updated, sets, expect = params
                calls.append(_Call(self._schedule_stmt(tuple(c for c, _ in sets), bool(expect)),
                                   _encode((sid, updated, *(v for _, v in sets), *expect), what),
                                   index, "created"))
            elif op is Op.SET_ATTRIBUTES:
                _check_search(params[1], params[0])
                plan.needs_read = True
                calls.append(_Call(stmt("attrs_read"), _encode(params[:1], what), index, None))
            elif op is Op.RESET_RUN:
                enc = _encode(params, what)
                calls.append(_Call(stmt("reset_journal"), enc, index, None))
                calls.append(_Call(stmt("reset_timers"), enc, index, None))
            elif op is Op.DELETE_WORKFLOW:
                enc = _encode(params, what)
                for key in ("reset_journal", "delete_inbox", "reset_timers", "delete_promises",
                            "delete_state", "delete_monitors", "delete_queue",
                            "delete_workflow"):
                    calls.append(_Call(stmt(key), enc, index, None))
            else:
                calls.append(_Call(stmt(what), _encode(params, what), index, None))
        if not self._owner:
            now = _time.time()
            n = len(tx.ops)
            for wid in dict.fromkeys(tx.workflow_ids):
                if wid:  # "" marks an operation on a schedule
                    calls.append(_Call(stmt("wakeup"), _encode((wid, now), "wakeup"), n, None))
            for sid in dict.fromkeys(tx.schedule_ids):
                calls.append(_Call(stmt("schedule_wakeup"), _encode((sid, now), "wakeup"), n,
                                   None))
            calls.append(_Call(stmt("notify"), [self._channel.encode()], n, None))
        return plan

    # -- writing: the connection level -----------------------------------------------
    def _ensure_prepared(self, conn: psycopg.Connection[Any], stmts: Iterable[_Stmt]) -> None:
        pg = conn.pgconn
        for s in stmts:
            if s.name not in self._prepared:
                res = self._pq(conn, partial(pg.prepare, s.name, s.text.encode()))
                if res.status not in _OK:
                    raise _result_error(res)
                self._prepared.add(s.name)

    @staticmethod
    def _pq(conn: psycopg.Connection[Any], fn: Callable[[], Any]) -> Any:
        """A libpq call; a broken connection is :class:`_ConnectionLost`."""
        try:
            res = fn()
        except psycopg.OperationalError as exc:
            raise _ConnectionLost(_reason(exc)) from exc
        if conn.pgconn.status == _BAD:
            last = res[-1] if isinstance(res, list) and res else res  # a pipeline's results
            message = (last.error_message.decode("utf-8", "replace")
                       if last is not None and hasattr(last, "error_message") else "")
            raise _ConnectionLost(_reason(Exception(message)) or "connection lost")
        return res

    def _send(self, conn: psycopg.Connection[Any], calls: list[_Call], mark: list[Any]
              ) -> list[Any]:
        """Run ``calls`` as ONE transaction (the first one also sets the writer's
        number); returns their results. A failing statement raises
        :class:`_StatementFailed` (nothing committed)."""
        pg = conn.pgconn
        first = calls[0].stmt.marked
        assert first is not None
        self._ensure_prepared(conn, [first, *(c.stmt for c in calls[1:])])
        if len(calls) == 1:
            res = self._pq(conn, partial(pg.exec_prepared, first.name,
                                         calls[0].params + mark))
            if res.status not in _OK:
                raise _StatementFailed(0, _result_error(res))
            return [res]

        def pipeline() -> list[Any]:
            pg.enter_pipeline_mode()
            try:
                pg.send_query_prepared(first.name, calls[0].params + mark)
                for call in calls[1:]:
                    pg.send_query_prepared(call.stmt.name, call.params)
                pg.pipeline_sync()
                while pg.flush():  # pragma: no cover - a blocking connection sends all
                    pass
                out: list[Any] = []
                while True:
                    res = pg.get_result()
                    if res is None:
                        if pg.status == _BAD:
                            return out
                        continue
                    if res.status == pq.ExecStatus.PIPELINE_SYNC:
                        return out
                    out.append(res)
            finally:
                if pg.status != _BAD:
                    pg.exit_pipeline_mode()

        results = self._pq(conn, pipeline)
        if len(results) != len(calls):  # pragma: no cover - the server broke the protocol
            raise _ConnectionLost("incomplete pipeline results")
        for index, res in enumerate(results):
            if res.status not in _OK:
                if res.status == pq.ExecStatus.PIPELINE_ABORTED:  # pragma: no cover
                    continue
                raise _StatementFailed(index, _result_error(res))
        return results

    def _exec(self, conn: psycopg.Connection[Any], query: bytes) -> None:
        res = self._pq(conn, partial(conn.pgconn.exec_, query))
        if res.status not in _OK:
            raise _StatementFailed(-1, _result_error(res))

    def _run_explicit(self, conn: psycopg.Connection[Any], plans: list[_Plan], n: int,
                      isolate: bool) -> None:
        """``BEGIN``, the writer's number, each plan (with a SAVEPOINT when
        ``isolate``; a read round trip for ``set_attributes``), ``COMMIT``."""
        mark = self._stmt("mark")
        self._ensure_prepared(conn, [mark])
        pg = conn.pgconn
        try:
            self._exec(conn, b"BEGIN")
            res = self._pq(conn, partial(pg.exec_prepared, mark.name,
                                         _encode((self._writer_id, n, _time.time()), "mark")))
            if res.status not in _OK:
                raise _StatementFailed(-1, _result_error(res))
            for plan in plans:
                plan.results = None
                plan.error = None
                if isolate:
                    self._exec(conn, b"SAVEPOINT request")
                try:
                    plan.results = self._apply_explicit(conn, plan)
                except _StatementFailed as failed:
                    if not isolate:
                        raise
                    self._exec(conn, b"ROLLBACK TO SAVEPOINT request")
                    plan.error = failed.error
                if isolate:
                    self._exec(conn, b"RELEASE SAVEPOINT request")
            self._exec(conn, b"COMMIT")
        except _StatementFailed:
            self._exec(conn, b"ROLLBACK")
            raise

    def _apply_explicit(self, conn: psycopg.Connection[Any], plan: _Plan) -> list[Any]:
        """One plan inside an open transaction, statement by statement."""
        pg = conn.pgconn
        results: list[Any] = [None] * len(plan.tx.ops)
        self._ensure_prepared(conn, [c.stmt for c in plan.calls])
        for call in plan.calls:
            op, params = (plan.tx.ops[call.op] if call.op < len(plan.tx.ops)
                          else (None, None))
            res = self._pq(conn, partial(pg.exec_prepared, call.stmt.name, call.params))
            if res.status not in _OK:
                raise _StatementFailed(call.op, self._map_error(_result_error(res), plan,
                                                                call.op))
            if op is Op.SET_ATTRIBUTES:
                assert params is not None
                wid, search_json, memo_json, now = params
                if res.ntuples != 1:
                    raise _StatementFailed(call.op, NoSuchWorkflow(wid))
                search = _merge_patch(json.loads(res.get_value(0, 0)), json.loads(search_json))
                memo = _merge_patch(json.loads(res.get_value(0, 1)), json.loads(memo_json))
                write = self._stmt("attrs_write")
                self._ensure_prepared(conn, [write])
                args = _encode((wid, _dumps(search), _dumps(memo), now), op.value)
                res = self._pq(conn, partial(pg.exec_prepared, write.name, args))
                if res.status not in _OK:
                    raise _StatementFailed(call.op, _result_error(res))
            elif call.result is not None:
                results[call.op] = _result_of(call, res)
        return results

    def _results(self, plan: _Plan, calls_results: list[Any], offset: int = 0) -> list[Any]:
        results: list[Any] = [None] * len(plan.tx.ops)
        for i, call in enumerate(plan.calls):
            if call.result is not None:
                results[call.op] = _result_of(call, calls_results[offset + i])
        return results

    def _map_error(self, error: BaseException, plan: _Plan, index: int) -> BaseException:
        """A server error as the exception SQLite's store raises for the same operation."""
        if not isinstance(error, pg_errors.RaiseException):
            if isinstance(error, pg_errors.UntranslatableCharacter):
                return ValueError(f"cannot store: {_reason(error)} (PostgreSQL text and jsonb "
                                  "cannot hold the NUL character)")
            return error
        message = (error.diag.message_primary or "").removeprefix("garrison:")
        detail = error.diag.message_detail or ""
        params = plan.tx.ops[index][1] if 0 <= index < len(plan.tx.ops) else ()
        if message == "no_such_workflow":
            return NoSuchWorkflow(detail)
        if message == "not_pending":
            _seq, inbox_id, workflow_id = params
            return ValueError(
                f"inbox row {inbox_id} is not a pending message of workflow {workflow_id!r}")
        if message == "dedup_taken":
            return DedupKeyTaken(str(params[3]), detail)
        if message == "promise_completed":
            workflow_id, name = params[0], params[1]
            return PromiseAlreadyCompleted(
                f"promise {name!r} of workflow {workflow_id!r} is already {detail}")
        return error  # pragma: no cover - a check of a newer schema

    def _run(self, conn: psycopg.Connection[Any], plans: list[_Plan], n: int) -> bool:
        """Write ``plans`` as one transaction numbered ``n``: each gets its results or
        its own error; True if the transaction committed (with the number ``n``).
        :class:`_ConnectionLost` leaves the outcome to the caller."""
        for plan in plans:  # (an earlier attempt's outcome does not count)
            plan.results = plan.error = None
        if len(plans) == 1 and not plans[0].needs_read:
            plan = plans[0]
            try:
                out = self._send(conn, plan.calls, self._mark_params(n))
            except _StatementFailed as failed:
                index = plan.calls[failed.index].op
                plan.error = self._map_error(failed.error, plan, index)
                return False
            plan.results = self._results(plan, out)
            return True
        if not any(p.needs_read for p in plans):
            calls = [c for p in plans for c in p.calls]
            try:
                out = self._send(conn, calls, self._mark_params(n))
            except _StatementFailed:
                self._stats["failed_batches"] += 1
            else:
                offset = 0
                for plan in plans:
                    plan.error = None
                    plan.results = self._results(plan, out, offset)
                    offset += len(plan.calls)
                return True
        try:
            self._run_explicit(conn, plans, n, isolate=True)
        except _StatementFailed as failed:  # BEGIN/COMMIT themselves failed
            for plan in plans:
                plan.results = None
                plan.error = failed.error
            return False
        return True

    def _mark_params(self, n: int) -> list[Any]:
        return [self._writer_id.encode(), str(n).encode(), repr(_time.time()).encode()]

    # -- writing: retries -------------------------------------------------------------
    def _commit_plans(self, plans: list[_Plan], *, handover: bool = False) -> None:
        """Write ``plans`` as one transaction, reconnecting and retrying as the module
        docs say; raises :class:`~garrison.StoreError` when the store gave up.

        ``handover`` (a commit written in the trio thread): a lost connection raises
        :class:`_Handover` instead of reconnecting here, so the node's thread does not
        wait for the server; the caller writes the same plans again from a worker
        thread (which settles whether they committed)."""
        with self._write_lock:
            self._check_usable()
            n = self._acked + 1
            deadline: float | None = None
            attempt = 0
            while True:
                conn = self._writer
                try:
                    if conn is None or conn.closed:
                        raise _ConnectionLost("not connected")
                    committed = self._run(conn, plans, n)
                except _ConnectionLost as lost:
                    if handover:
                        self._drop_writer()
                        raise _Handover(str(lost)) from None
                    if deadline is None:
                        deadline = _time.monotonic() + self.retry_for
                    found = self._reconnect_writer(deadline, str(lost))
                    if found == n:  # it committed before the connection dropped
                        for plan in plans:
                            self._recover_results(plan)
                        committed = True
                    elif found == n - 1:
                        attempt += 1
                        continue  # it did not commit: send it again
                    else:
                        self._give_up(
                            f"the server lost transactions it had confirmed (this store's "
                            f"last confirmed transaction is {n - 1}, the server has "
                            f"{found}): with synchronous='normal' a server crash loses its "
                            "last few hundred milliseconds; restart the node to resume "
                            "from what the store kept")
                if committed:
                    self._acked = n
                    self._stats["transactions"] += 1
                return

    def _reconnect_writer(self, deadline: float, reason: str) -> int:
        """Reconnect (with backoff until ``deadline``), take the lock again; the
        writer's number as the server has it."""
        self._drop_writer()
        delay = 0.05
        last = reason
        while True:
            if self._closed:
                raise StoreError(self.path, "the store was closed")
            try:
                conn = self._connect_writer(first=False)
            except StoreLocked as exc:
                self._give_up(f"another node took the store while the connection was "
                              f"down ({exc})")
            except StoreError as exc:
                last = str(exc)
            else:
                try:
                    row = conn.execute(
                        f"SELECT batch FROM {self._s}.writers WHERE writer = %s",
                        (self._writer_id,)).fetchone()
                except psycopg.Error as exc:
                    conn.close()
                    last = _reason(exc)
                else:
                    self._writer = conn
                    return int(row[0]) if row is not None else 0
            if _time.monotonic() + delay > deadline:
                self._give_up(f"the connection was lost ({reason}) and could not be made "
                              f"again within {self.retry_for:g}s: {last}")
            _time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _drop_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self.locked = False

    def _recover_results(self, plan: _Plan) -> None:
        """Results of a transaction that committed while its answer was lost: read back
        (only ``create_workflow`` and ``deliver`` return something). A caller whose own
        operations had failed before the COMMIT (a SAVEPOINT rolled them back) keeps
        its error."""
        if plan.error is not None:
            return
        results: list[Any] = [None] * len(plan.tx.ops)
        for index, (op, params) in enumerate(plan.tx.ops):
            if op is Op.CREATE_WORKFLOW:
                rec = self.get_workflow(params[0])
                results[index] = rec is not None and rec.run_id == params[5]
            elif op is Op.DELIVER:
                rows = self._query(
                    f"SELECT id FROM {self._s}.inbox WHERE msg_id = %s AND workflow_id = %s "
                    "AND created = %s", (params[1], params[0], params[7]))
                results[index] = int(rows[0][0]) if rows else None
        plan.results = results
        plan.error = None

    def _give_up(self, message: str) -> NoReturn:
        self._failed = StoreError(self.path, message + "; this store writes nothing more")
        raise self._failed

    def _check_usable(self) -> None:
        self._check_open()
        if self._failed is not None:
            raise self._failed

    # -- writing: the store API ------------------------------------------------------
    def transaction(self) -> Transaction:
        """A new, empty :class:`Transaction`."""
        return Transaction()

    def write(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` now, in the calling thread, as one transaction; returns each
        operation's result, or raises the first error (nothing of ``tx`` committed).
        Waits while a group commit is being written."""
        if not tx.ops:
            return []
        self._check_usable()
        return self._write_one(self._plan(tx))

    def _write_one(self, plan: _Plan) -> list[Any]:
        self._commit_plans([plan])
        results = _unwrap(plan)
        self._stats["sync_writes"] += 1
        return results

    def _write_alone(self, plan: _Plan) -> list[Any]:
        """A commit nobody could share, in the trio thread (see ``_commit_plans``)."""
        self._commit_plans([plan], handover=True)
        results = _unwrap(plan)
        self._stats["sync_writes"] += 1
        return results

    def _write_batch(self, batch: list[CommitRequest]) -> None:
        """One transaction for the whole batch (a SAVEPOINT per caller on failure)."""
        plans: list[_Plan] = [request.tx for request in batch]
        try:
            self._commit_plans(plans)
        except BaseException as exc:
            for request in batch:
                request.results = None
                request.error = exc
            return
        for request, plan in zip(batch, plans, strict=True):
            request.results, request.error = plan.results, plan.error
        stats = self._stats
        stats["batches"] += 1
        stats["batched_writes"] += len(batch)
        stats["largest_batch"] = max(stats["largest_batch"], len(batch))

    async def commit(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` by group commit; returns each operation's result once it is
        committed. A batch is written from a worker thread while the node keeps running
        (under a trio ``MockClock``, in the trio thread, so virtual time cannot jump
        while a commit is in flight)."""
        if not tx.ops:
            return []
        self._check_usable()
        plan = self._plan(tx)
        group = self._group
        if isinstance(trio.lowlevel.current_clock(), MockClock):
            group = self._inline_group
        try:
            return await group.commit(plan)
        except _Handover:
            # the connection broke under a commit written in the trio thread: the
            # reconnect (and the check whether it committed) waits in a worker thread
            with trio.CancelScope(shield=True):
                results: list[Any] = await trio.to_thread.run_sync(self._write_one, plan)
            return results

    @property
    def owner(self) -> bool:
        """True unless opened with ``lock=False`` (a tool writing for the node)."""
        return self._owner

    @property
    def committing(self) -> bool:
        """True while a group commit is forming or being written."""
        return self._group.busy or self._inline_group.busy

    def statistics(self) -> StoreStatistics:
        """Counters of the write path (transactions, group-commit batches, ...)."""
        return StoreStatistics(**self._stats)

    @property
    def schema_version(self) -> int:
        """The schema version this store is at."""
        return _pg_schema.SCHEMA_VERSION

    # -- shortcuts: one operation, committed now ----------------------------------
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

    # -- wakeups -----------------------------------------------------------------------
    def translate_error(self, exc: BaseException) -> StoreError | None:
        """The :class:`~garrison.StoreError` a failed write means, naming the server;
        ``None`` for an error of the written operations themselves."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, pg_errors.IntegrityError):
            return None
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError
                      | pg_errors.DiskFull | pg_errors.InsufficientResources):
            return StoreError(self.path, f"the server refused the write: {_reason(exc)}")
        return None

    def take_wakeups(self) -> list[WakeupRecord]:
        """Remove and return the wakeups left by tools, oldest first."""
        rows = self._query(f"DELETE FROM {self._s}.wakeups RETURNING id, workflow_id, kind")
        rows.sort()
        return [WakeupRecord(wid, kind) for _id, wid, kind in rows]

    async def wakeups(self) -> list[WakeupRecord]:
        """Wait until a tool (a store opened with ``lock=False``) or another process
        wrote for this store's workflows, then take and return those notices, oldest
        first. Woken by ``LISTEN``/``NOTIFY`` (no polling); a lost listener connection
        is made again (and the table read, so nothing written meanwhile is missed). A
        tool's own store waits forever."""
        if not self._owner:
            await trio.sleep_forever()
        delay = 0.05
        while True:
            if self._closed:  # nothing more can be written for this node
                await trio.sleep_forever()
            try:
                listener = await self._listen()
                if self._closed:  # closed while the listener connected
                    self._drop_listener()
                    await trio.sleep_forever()
                found = self.take_wakeups()
                if found:
                    return found
                async for _note in listener.notifies(stop_after=1):
                    pass
                delay = 0.05
            except (psycopg.Error, StoreError, trio.ClosedResourceError, OSError):
                # the listener's connection broke, or the server is away (take_wakeups
                # gave up): listen again, then read the table (nothing is missed)
                if self._closed:
                    await trio.sleep_forever()
                self._drop_listener()
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _listen(self) -> Any:
        if self._listener is not None and not self._listener.closed:
            return self._listener
        from ._pg_trio import TrioConnection

        params = dict(self._params)
        host = params.get("host", "")
        if host and "," not in host and not host.startswith("/") and "hostaddr" not in params:
            try:  # libpq would resolve the name with a blocking call
                infos = await trio.socket.getaddrinfo(host, params.get("port") or 5432,
                                                      type=trio.socket.SOCK_STREAM)
                params["hostaddr"] = str(infos[0][4][0])
            except OSError:
                pass
        conninfo = make_conninfo(**params)
        if isinstance(trio.lowlevel.current_clock(), MockClock):
            # virtual time would run out the connect timeout while the server answers
            pgconn = pq.PGconn.connect(conninfo.encode())
            if pgconn.status != pq.ConnStatus.OK:
                message = pgconn.get_error_message()
                pgconn.finish()
                raise psycopg.OperationalError(message)
            conn = TrioConnection(pgconn)
            await conn.set_autocommit(True)
        else:
            conn = await TrioConnection.connect_trio(conninfo, autocommit=True,
                                                     timeout=float(params["connect_timeout"]))
        try:
            with trio.CancelScope(shield=True):
                await conn.execute("LISTEN " + _quote(self._channel))
        except BaseException:
            conn.pgconn.finish()
            raise
        self._listener = conn
        return conn

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(Exception):
            fd = listener.pgconn.socket
            with contextlib.suppress(RuntimeError):
                trio.lowlevel.notify_closing(fd)  # wakes a task waiting on it
        listener.pgconn.finish()

    # -- reading ---------------------------------------------------------------------
    def _query(self, query: Any, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of ``query`` on the reader connection (reconnecting on a lost
        connection, for ``retry_for`` seconds)."""
        for value in params:
            if type(value) is str and "\x00" in value:
                return []  # PostgreSQL text cannot hold it: no row can match
        with self._read_lock:
            self._check_open()
            deadline: float | None = None
            delay = 0.05
            while True:
                conn = self._reader
                try:
                    if conn is None or conn.closed:
                        raise psycopg.OperationalError("not connected")
                    cur = conn.execute(query, params)
                    return cur.fetchall() if cur.description is not None else []
                except psycopg.OperationalError as exc:
                    if conn is not None and not conn.closed and not conn.broken:
                        raise StoreError(self.path, _reason(exc)) from None
                    if deadline is None:
                        deadline = _time.monotonic() + self.retry_for
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    self._reader = None
                    try:
                        self._reader = self._connect("reads")
                        continue
                    except StoreError as again:
                        if _time.monotonic() + delay > deadline:
                            raise StoreError(
                                self.path, f"the connection was lost and could not be made "
                                f"again within {self.retry_for:g}s: {again}") from None
                    _time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                except psycopg.Error as exc:
                    raise StoreError(self.path, _reason(exc)) from None

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow's row, or ``None``."""
        rows = self._query(
            f"SELECT {WorkflowRecord.COLUMNS} FROM {self._s}.workflows WHERE workflow_id = %s",
            (workflow_id,))
        return WorkflowRecord.from_row(rows[0]) if rows else None

    def list_workflows(
        self,
        status: str | Iterable[str] | None = None,
        search: Mapping[str, Any] | None = None,
        *,
        parent: Pid | str | None = None,
        limit: int | None = None,
        after: tuple[datetime | float, str] | None = None,
        newest_first: bool = False,
        id_prefix: str | None = None,
    ) -> list[WorkflowRecord]:
        """Workflows in ``(created, workflow_id)`` order (oldest first, or newest first),
        filtered by status (one or several), by search attributes (every ``key=value``
        must match the stored JSON value), by parent pid and by the start of the id;
        keyset paging with ``after=(record.created, record.workflow_id)`` (as SQLite)."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append("status = ANY(%s)")
            params.append([parse_status(s).value for s in statuses])
        for key, value in (search or {}).items():
            text = to_json(value, what=f"search attribute {key!r}")
            if "\\u0000" in text or "\x00" in str(key):
                return []  # cannot be stored: nothing matches
            if value is None:  # as SQLite: a missing key matches null too
                where.append("coalesce(search_jsonb -> %s, 'null'::jsonb) = 'null'::jsonb")
                params.append(str(key))
            else:
                where.append("search_jsonb @> %s::jsonb AND search_jsonb -> %s = %s::jsonb")
                params.extend([_dumps({str(key): value}), str(key), text])
        if parent is not None:
            where.append("parent = %s")
            params.append(str(parent))
        if id_prefix:
            where.append('left(workflow_id, %s) = %s COLLATE "C"')
            params.extend([len(id_prefix), id_prefix])
        if after is not None:
            created, after_id = after
            rows = self._query(f"SELECT created FROM {self._s}.workflows WHERE workflow_id = %s",
                               (after_id,))
            at = rows[0][0] if rows else unix_seconds(created)
            cmp = "<" if newest_first else ">"
            where.append(f'(created, workflow_id COLLATE "C") {cmp} (%s, %s COLLATE "C")')
            params.extend([at, after_id])
        query = f"SELECT {WorkflowRecord.COLUMNS} FROM {self._s}.workflows"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += (' ORDER BY created DESC, workflow_id COLLATE "C" DESC' if newest_first
                  else ' ORDER BY created, workflow_id COLLATE "C"')
        if limit is not None:
            query += " LIMIT %s"
            params.append(int(limit))
        return [WorkflowRecord.from_row(row) for row in self._query(query, params)]

    def unfinished_workflows(self) -> list[WorkflowRecord]:
        """Every workflow not completed, failed or cancelled, oldest first (recovery)."""
        return self.list_workflows([s for s in WorkflowStatus if s not in FINAL_STATUSES])

    def journal(self, workflow_id: str) -> list[JournalRecord]:
        """The workflow's journal ordered by seq."""
        rows = self._query(
            f"SELECT {JournalRecord.COLUMNS} FROM {self._s}.journal WHERE workflow_id = %s "
            "ORDER BY seq", (workflow_id,))
        from_row = JournalRecord.from_row
        return [from_row(row) for row in rows]

    def journal_entries(self, workflow_id: str) -> tuple[list[tuple[int, str, str, Any, int]], int]:
        """Recovery's fast path: ``([(seq, kind, name, outcome, attempts), ...], bytes)``
        in seq order, outcomes decoded by one ``json.loads``, and their JSON's size."""
        rows = self._query(
            f"SELECT seq, kind, name, outcome, attempts FROM {self._s}.journal "
            "WHERE workflow_id = %s ORDER BY seq", (workflow_id,))
        if not rows:
            return [], 0
        texts = [row[3] for row in rows]
        outcomes = json.loads("[" + ",".join(texts) + "]")
        return (
            [(seq, kind, name, out, attempts)
             for (seq, kind, name, _, attempts), out in zip(rows, outcomes, strict=True)],
            sum(map(len, texts)),
        )

    def journal_sizes(self, workflow_id: str) -> dict[int, int]:
        """``{seq: characters of its outcome JSON}`` of the workflow's journal."""
        rows = self._query(
            f"SELECT seq, length(outcome) FROM {self._s}.journal WHERE workflow_id = %s",
            (workflow_id,))
        return {int(seq): int(n) for seq, n in rows}

    def journal_size(self, workflow_id: str) -> tuple[int, int]:
        """``(records, characters of outcome JSON)`` of the workflow's journal."""
        rows = self._query(
            f"SELECT count(*), coalesce(sum(length(outcome)), 0) FROM {self._s}.journal "
            "WHERE workflow_id = %s", (workflow_id,))
        return int(rows[0][0]), int(rows[0][1])

    def pending_messages(self, workflow_id: str) -> list[InboxRecord]:
        """Inbox rows (messages and events) not consumed yet, in arrival order."""
        rows = self._query(
            f"SELECT {InboxRecord.COLUMNS} FROM {self._s}.inbox "
            "WHERE workflow_id = %s AND consumed_seq IS NULL ORDER BY id", (workflow_id,))
        return [InboxRecord.from_row(row) for row in rows]

    def inbox_message(self, msg_id: str) -> InboxRecord | None:
        """The inbox row of message ``msg_id`` (consumed or not), or ``None``."""
        rows = self._query(
            f"SELECT {InboxRecord.COLUMNS} FROM {self._s}.inbox WHERE msg_id = %s", (msg_id,))
        return InboxRecord.from_row(rows[0]) if rows else None

    def timers(self, workflow_id: str | None = None) -> list[TimerRecord]:
        """Timers (of one workflow, or all), earliest deadline first."""
        if workflow_id is None:
            rows = self._query(
                f"SELECT {TimerRecord.COLUMNS} FROM {self._s}.timers ORDER BY deadline, seq")
        else:
            rows = self._query(
                f"SELECT {TimerRecord.COLUMNS} FROM {self._s}.timers WHERE workflow_id = %s "
                "ORDER BY deadline, seq", (workflow_id,))
        return [TimerRecord.from_row(row) for row in rows]

    def due_timers(self, now: datetime | float) -> list[TimerRecord]:
        """Timers whose deadline is at or before ``now``, earliest first."""
        rows = self._query(
            f"SELECT {TimerRecord.COLUMNS} FROM {self._s}.timers WHERE deadline <= %s "
            'ORDER BY deadline, workflow_id COLLATE "C", seq', (unix_seconds(now),))
        return [TimerRecord.from_row(row) for row in rows]

    def next_timer(self) -> TimerRecord | None:
        """The timer with the earliest deadline, or ``None``."""
        rows = self._query(
            f"SELECT {TimerRecord.COLUMNS} FROM {self._s}.timers "
            'ORDER BY deadline, workflow_id COLLATE "C", seq LIMIT 1')
        return TimerRecord.from_row(rows[0]) if rows else None

    def get_promise(self, workflow_id: str, name: str) -> PromiseRecord | None:
        """The promise's row, or ``None`` (neither declared nor resolved yet)."""
        rows = self._query(
            f"SELECT {PromiseRecord.COLUMNS} FROM {self._s}.promises "
            "WHERE workflow_id = %s AND name = %s", (workflow_id, name))
        return PromiseRecord.from_row(rows[0]) if rows else None

    def promises(
        self, workflow_id: str, status: PromiseStatus | str | None = None
    ) -> list[PromiseRecord]:
        """The workflow's promises (optionally of one status), by name."""
        query = f"SELECT {PromiseRecord.COLUMNS} FROM {self._s}.promises WHERE workflow_id = %s"
        params: list[Any] = [workflow_id]
        if status is not None:
            query += " AND status = %s"
            params.append(PromiseStatus(status).value)
        rows = self._query(query + ' ORDER BY name COLLATE "C"', params)
        return [PromiseRecord.from_row(row) for row in rows]

    def get_state(self, workflow_id: str, key: str, default: Any = None) -> Any:
        """The decoded value of state ``key``, or ``default``."""
        rows = self._query(
            f"SELECT value FROM {self._s}.state WHERE workflow_id = %s AND key = %s",
            (workflow_id, key))
        return json.loads(rows[0][0]) if rows else default

    def states(self, workflow_id: str) -> dict[str, Any]:
        """Every state key of the workflow, decoded."""
        rows = self._query(
            f"SELECT key, value FROM {self._s}.state WHERE workflow_id = %s "
            'ORDER BY key COLLATE "C"', (workflow_id,))
        return {key: json.loads(value) for key, value in rows}

    def monitors(self, workflow_id: str) -> list[Pid]:
        """The pids watching the workflow, in the order they started watching."""
        rows = self._query(
            f"SELECT watcher FROM {self._s}.monitors WHERE workflow_id = %s "
            'ORDER BY created, watcher COLLATE "C"', (workflow_id,))
        return [Pid.parse(row[0]) for row in rows]

    def schedules(self) -> list[ScheduleRecord]:
        """Every schedule of the store, by id."""
        rows = self._query(f"SELECT {ScheduleRecord.COLUMNS} FROM {self._s}.schedules "
                           'ORDER BY schedule_id COLLATE "C"')
        return [ScheduleRecord.from_row(row) for row in rows]

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """The schedule's row, or ``None``."""
        rows = self._query(f"SELECT {ScheduleRecord.COLUMNS} FROM {self._s}.schedules "
                           "WHERE schedule_id = %s", (schedule_id,))
        return ScheduleRecord.from_row(rows[0]) if rows else None

    def queue_entries(self) -> list[QueueRecord]:
        """The queue rows, in queue order: priority, highest first, then start order."""
        rows = self._query(f"SELECT {QueueRecord.COLUMNS} FROM {self._s}.queue "
                           "ORDER BY priority DESC, seq")
        return [QueueRecord.from_row(row) for row in rows]

    def watched_by(self, watcher: Pid | str) -> list[str]:
        """The workflow ids ``watcher`` monitors."""
        rows = self._query(
            f"SELECT workflow_id FROM {self._s}.monitors WHERE watcher = %s "
            'ORDER BY created, workflow_id COLLATE "C"', (str(watcher),))
        return [row[0] for row in rows]

    # -- lifetime ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"store {self.path!r} is closed")

    def close(self) -> None:
        """Close the connections (which releases the node's lock). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._drop_listener()
        with self._write_lock:
            if self._writer is not None and not self._owner and not self._writer.closed:
                with contextlib.suppress(psycopg.Error):  # a tool's row goes with it
                    self._writer.execute(f"DELETE FROM {self._s}.writers WHERE writer = %s",
                                         (self._writer_id,))
        with self._read_lock:
            self._close_connections()
        self.locked = False

    def _close_connections(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._writer = self._reader = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<PostgresStore {self.path!r} synchronous={self.synchronous} "
                f"locked={self.locked}>")


# ------------------------------------------------------------------ helpers
def _dead_local_holder(held: str) -> bool:
    """True if ``held`` (see ``_lock_holder``) names a garrison process of this machine
    that has ended (``application_name`` is ``garrison ... <host>:<pid>``)."""
    name = held.removeprefix("held by ").split(" from ", 1)[0]
    host, _, pid = name.rpartition(" ")[2].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not os.path.exists(f"/proc/{pid}")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _check_search(search_json: str, workflow_id: str) -> None:
    if "\\u0000" in search_json:
        raise ValueError(f"the search attributes of {workflow_id!r} contain a NUL character "
                         "(\\u0000), which PostgreSQL's jsonb cannot hold")


def _encode(values: Sequence[Any], what: str) -> list[Any]:
    """Parameters in PostgreSQL's text format (``None`` is NULL)."""
    out: list[Any] = []
    for value in values:
        kind = type(value)
        if value is None:
            out.append(None)
        elif kind is str:
            if "\x00" in value:
                raise ValueError(
                    f"cannot store {value!r} ({what}): PostgreSQL text cannot hold the NUL "
                    "character (\\x00)")
            out.append(value.encode())
        elif kind is float:
            out.append(repr(value).encode())
        elif kind is bool:
            out.append(b"1" if value else b"0")
        else:
            out.append(str(int(value)).encode())
    return out


def _result_of(call: _Call, res: Any) -> Any:
    if call.result == "created":
        return res.command_tuples == 1
    if call.result == "id":
        return int(res.get_value(0, 0)) if res.ntuples else None
    return None  # pragma: no cover


def _result_error(res: Any) -> BaseException:
    return pg_errors.error_from_result(res, encoding="utf-8")


def _unwrap(plan: _Plan) -> list[Any]:
    if plan.error is not None:
        raise plan.error
    assert plan.results is not None
    return plan.results


def _conforms(store: PostgresStore) -> Store:
    """Static check (mypy): PostgresStore implements the Store protocol."""
    return store
