"""The write path of the PostgreSQL store: statements, plans, the pipeline, and
recovery after a lost connection (see ``_postgres.py`` for the guarantees).

A :class:`~garrison.persistence.Transaction` is planned into prepared statements
(``_OP_SQL``) on the caller's side. The statements of a transaction (one caller's,
or a group-commit batch's) are composed (``_compose``): consecutive journal appends
become ONE multi-row insert (``unnest`` of arrays: the steps of a batch), and the
first statement also sets this writer's row of ``writers`` (what makes a lost
connection safe) in a CTE. One statement is sent as is; several are sent in one
pipeline ending with a Sync (ONE implicit transaction, one round trip).

In a cluster (``_pg_cluster.py``) every transaction of a node that writes for the
workflows it runs is fenced: the writers CTE of its first statement runs only once
``fence(epoch, workflow_id)`` (``fence_many`` for several workflows) passed, so the
check is in the same statement as the first write and a workflow that moved to
another node, or a node whose lease lapsed, gets :class:`~garrison.WorkflowMoved`
and nothing of the transaction commits. (A statement's CTE and its main part run in
no set order: when the write fails too, the fence is checked again on its own, so
that a write another node's rows refuse still reads as ``WorkflowMoved``.)

A write (``PgWritePath._commit``) is a generator that yields wherever it must wait
for the server (its socket readable or writable: libpq's non-blocking calls, as
psycopg's own generators) and before what it cannot poll (a reconnect, a pause
before trying again), holding the write lock from its first step to its end. Its
driver chooses where it waits: ``_drive`` in the calling thread for as long as it
takes; ``_drive_here`` in the node's thread, which neither waits for the lock nor,
past ``TRIO_THREAD_WAIT`` in all, for the server: the caller then hands the same
generator to a worker thread (``_postgres.py``), which reads that write's own answers.

:class:`PgWritePath` is a mixin of :class:`~garrison.persistence.PostgresStore`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import socket
import threading
import time as _time
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from .._errors import (
    DedupKeyTaken,
    NoSuchWorkflow,
    PromiseAlreadyCompleted,
    StoreError,
    StoreLocked,
    WorkflowMoved,
)
from ._group_commit import Busy
from ._pg_schema import admit_lock_class
from ._transaction import (
    Op,
    OperatorTransaction,
    Transaction,
    WorkflowEnded,
    workflow_changed,
)

_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
_BAD = pq.ConnStatus.BAD
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC

# ------------------------------------------------------------------ resumable writes
#: A write is a generator (``PgWritePath._commit``, and what it calls) that yields
#: whenever it must wait: ``(socket, poll events)`` for the server (its driver sends
#: back the events that came), or :data:`_BLOCK` before something it cannot poll (a
#: reconnect, a pause before trying again). No libpq call it makes waits for the
#: server. Its driver decides where it waits: :meth:`PgWritePath._drive` in the
#: calling thread for as long as it takes, :meth:`PgWritePath._drive_here` in the
#: node's (trio) thread for at most :data:`TRIO_THREAD_WAIT`, then the same generator
#: (its connection, its statements in flight, the write lock) goes on in a worker
#: thread.
log = logging.getLogger("garrison.store")

_T = TypeVar("_T")
_Wait = tuple[int, int] | None
_Gen = Generator[_Wait, int, _T]
_BLOCK: _Wait = None
_R = select.POLLIN
_RW = select.POLLIN | select.POLLOUT

#: how long (in all) a write made in the node's (trio) thread waits for the server
#: before the write goes on in a worker thread: a commit takes milliseconds; a server
#: that is slow or stopped answering must not stop the node's event loop
TRIO_THREAD_WAIT = 0.25
#: how often (ms) a worker thread waiting for the server looks whether the store was
#: closed meanwhile (then the write ends with a StoreError, its outcome unknown)
_CLOSED_CHECK_MS = 200
#: what ``_drive_here`` returns for a write that ended in the node's thread
_DONE: Any = object()
#: seconds a write waits for one answer of the server before a warning says so, naming
#: the writer's session on the server (its pid: waiting for a lock another session
#: holds, or a server process that does not run): the node's commits, so its
#: workflows, wait for it meanwhile, while its lease, renewed on a connection of its
#: own, lets no other node take them
WRITE_WAIT_WARNING = 10.0

#: when this connection's server session started: with its pid, what tells it from a
#: later session that took the same pid (``PgWritePath._end_session``)
_SESSION_START = "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
_SESSION_ALIVE = "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND backend_start = %s"


def _reason(exc: BaseException) -> str:
    """The useful line of a psycopg error (libpq repeats the server address)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        for marker in ("FATAL:", "ERROR:"):
            if marker in line:
                return line.split(marker, 1)[1].strip()
    return "; ".join(lines)



def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'



# ------------------------------------------------------------------ statements
class _Stmt:
    """One prepared statement: its name on the connection, its text, its arity."""

    __slots__ = ("heads", "name", "nparams", "text")

    def __init__(self, name: str, text: str, nparams: int) -> None:
        self.name = name.encode()
        self.text = text
        self.nparams = nparams
        #: the same statement as the first of a transaction (``PgWritePath._head``):
        #: also setting this writer's number, and fencing, by kind (``_MARK``, ...)
        self.heads: dict[int, _Stmt] = {}


#: the first statement of a transaction sets the writer's number (``_MARK``), and in a
#: cluster also checks the fence of one workflow (``_FENCE_ONE``) or of several
#: (``_FENCE_MANY``)
_MARK, _FENCE_ONE, _FENCE_MANY = 0, 1, 2


#: the operations that change what a schedule is (a tick's compare-and-set does not)
_SCHEDULE_CHANGES = frozenset((Op.PUT_SCHEDULE, Op.DELETE_SCHEDULE))


def _with_mark(text: str, n: int, s: str, kind: int = _MARK) -> str:
    """``text`` with a CTE that sets the writer's number (params ``n+1..n+3``) and,
    for a fenced kind, only once ``fence($n+4, $n+5)`` (``fence_many`` with an array)
    passed. A data-modifying CTE always runs to its end and the statement is atomic:
    a fence that raises fails the statement, and with it the transaction."""
    if kind == _MARK:
        rows = f"VALUES (${n + 1}, ${n + 2}, ${n + 3})"
    else:
        check = "fence" if kind == _FENCE_ONE else "fence_many"
        rows = f"SELECT ${n + 1}, ${n + 2}, ${n + 3} WHERE {s}.{check}(${n + 4}, ${n + 5})"
    mark = (f"_mark AS (INSERT INTO {s}.writers (writer, batch, updated) {rows} "
            "ON CONFLICT (writer) DO UPDATE "
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
    # the row is locked until the transaction ends: a concurrent writer of it waits
    "expect_workflow": (
        "WITH r AS (SELECT 1 FROM {s}.workflows WHERE workflow_id = $1 AND status = $2 "
        "AND attempt = $3 FOR UPDATE) "
        "SELECT {s}.expect(count(*) = 1, 'workflow_changed', $1) FROM r", 3),
    # the same, and owned by no live node but the writer's ($4: its epoch, or NULL):
    # a claim of the row at the same moment commits first (this finds it owned) or
    # waits for this transaction (and finds it changed)
    "expect_unclaimed": (
        "WITH r AS (SELECT 1 FROM {s}.workflows w WHERE workflow_id = $1 AND status = $2 "
        "AND attempt = $3 AND (owner_epoch IS NULL OR owner_epoch = $4::bigint "
        "OR NOT EXISTS (SELECT 1 FROM {s}.nodes n WHERE n.epoch = w.owner_epoch "
        "AND n.status IN ('active', 'draining'))) FOR UPDATE OF w) "
        "SELECT {s}.expect(count(*) = 1, 'workflow_changed', $1) FROM r", 4),
    # the row is locked (shared) until the transaction ends: the write that ends the
    # workflow commits first (this finds it ended) or waits for this one
    "expect_unfinished": (
        "WITH r AS (SELECT status FROM {s}.workflows WHERE workflow_id = $1 FOR SHARE) "
        "SELECT CASE WHEN count(*) = 0 THEN {s}.expect(false, 'no_such_workflow', $1) "
        "ELSE {s}.expect(bool_and(status NOT IN ('completed', 'failed', 'cancelled')), "
        "'workflow_ended', max(status)) END FROM r", 1),
    "truncate_journal": ("DELETE FROM {s}.journal WHERE workflow_id = $1 AND seq >= $2", 2),
    "append_journal": (
        "INSERT INTO {s}.journal (workflow_id, seq, kind, name, outcome, attempts, time) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)", 7),
    # a step at synchronous="full" of a workflow the node runs in its cluster, alone in
    # its transaction (``PgWritePath._bare_step``): the fence, then the row
    "append_journal_fenced": (
        "INSERT INTO {s}.journal (workflow_id, seq, kind, name, outcome, attempts, time) "
        "SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, $6::bigint, "
        "$7::double precision WHERE {s}.fence($8::bigint, $9::text)", 9),
    # consecutive ``append_journal`` of a transaction: one statement, one array a column
    "append_journal_many": (
        "INSERT INTO {s}.journal (workflow_id, seq, kind, name, outcome, attempts, time) "
        "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], "
        "$6::bigint[], $7::double precision[])", 7),
    "deliver": (
        "INSERT INTO {s}.inbox (workflow_id, msg_id, topic, payload, sender, kind, call_ref, "
        "created, trace) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT (msg_id) DO NOTHING RETURNING id", 9),
    # ``deliver`` only to a workflow the store holds unfinished (``if_unfinished``)
    "deliver_unfinished": (
        "INSERT INTO {s}.inbox (workflow_id, msg_id, topic, payload, sender, kind, call_ref, "
        "created, trace) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 "
        "FROM {s}.workflows WHERE workflow_id = $1 "
        "AND status NOT IN ('completed', 'failed', 'cancelled')) "
        "ON CONFLICT (msg_id) DO NOTHING RETURNING id", 9),
    # the monitors' rows read in the write ($2: ``host/``, '' for any host; a watcher
    # is ``host/id``, a host has no '/'); a watcher another node runs is woken as by
    # ``remote_wake`` ($8: this node's epoch, NULL for a tool's store; $9: the channel)
    "deliver_to_monitors": (
        "WITH watchers AS (SELECT w.workflow_id, w.owner_epoch, w.status FROM {s}.monitors m "
        "JOIN {s}.workflows w ON w.workflow_id = substr(m.watcher, strpos(m.watcher, '/') + 1) "
        "WHERE m.workflow_id = $1 AND ($2 = '' OR starts_with(m.watcher, $2)) "
        "AND w.status NOT IN ('completed', 'cancelled') "
        "ORDER BY m.created, m.watcher COLLATE \"C\"), "
        "put AS (INSERT INTO {s}.inbox (workflow_id, msg_id, topic, payload, sender, kind, "
        "created) SELECT workflow_id, $3 || workflow_id, $4, $5, $6, 'event', $7 "
        "FROM watchers ON CONFLICT (msg_id) DO NOTHING RETURNING workflow_id, id), "
        "woken AS (INSERT INTO {s}.wakeups (workflow_id, kind, created) "
        "SELECT put.workflow_id, 'remote', $7 FROM put JOIN watchers USING (workflow_id) "
        "WHERE watchers.owner_epoch IS DISTINCT FROM $8::bigint "
        "AND watchers.status <> 'failed' RETURNING 1) "
        "SELECT put.workflow_id, put.id, (SELECT count(pg_notify($9, '')) FROM woken) "
        "FROM put ORDER BY put.id", 9),
    # a receive's (seq > 0) row drops its payload: its journal record holds the message
    # (see ``Transaction.consume``)
    "consume": (
        "WITH u AS (UPDATE {s}.inbox SET consumed_seq = $1::bigint, "
        "payload = CASE WHEN $1::bigint > 0 THEN 'null' ELSE payload END, "
        "trace = CASE WHEN $1::bigint > 0 THEN NULL ELSE trace END "
        "WHERE id = $2 AND workflow_id = $3 AND consumed_seq IS NULL RETURNING 1) "
        "SELECT {s}.expect(count(*) = 1, 'not_pending', $3) FROM u", 3),
    # ``consume`` of a row that may have been consumed meanwhile (``if_pending``)
    "consume_pending": (
        "UPDATE {s}.inbox SET consumed_seq = $1::bigint, "
        "payload = CASE WHEN $1::bigint > 0 THEN 'null' ELSE payload END, "
        "trace = CASE WHEN $1::bigint > 0 THEN NULL ELSE trace END "
        "WHERE id = $2 AND workflow_id = $3 AND consumed_seq IS NULL", 3),
    "add_timer": (
        "INSERT INTO {s}.timers (workflow_id, seq, deadline, kind) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (workflow_id, seq) DO UPDATE SET deadline = EXCLUDED.deadline, "
        "kind = EXCLUDED.kind", 4),
    "remove_timer": ("DELETE FROM {s}.timers WHERE workflow_id = $1 AND seq = $2", 2),
    "record_reply": (
        "UPDATE {s}.inbox SET reply = $1 WHERE msg_id = $2 AND workflow_id = $3", 3),
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
    "forget_monitors": ("DELETE FROM {s}.monitors WHERE workflow_id = $1", 1),
    "wakeup": (
        "INSERT INTO {s}.wakeups (workflow_id, kind, created) VALUES ($1, 'tool', $2)", 2),
    "schedule_wakeup": (
        "INSERT INTO {s}.wakeups (workflow_id, kind, created) VALUES ($1, 'schedule', $2)", 2),
    "enqueue": ("SELECT {s}.enqueue($1, $2, $3, $4, $5)", 5),
    # (the key its row held stays on the workflow's row: a retry takes it back)
    "dequeue": (
        "WITH gone AS (DELETE FROM {s}.queue WHERE workflow_id = $1 RETURNING dedup) "
        "UPDATE {s}.workflows SET dedup = gone.dedup FROM gone "
        "WHERE workflow_id = $1 AND gone.dedup IS NOT NULL", 1),
    "admit": ("SELECT {s}.admit($1, $2, $3, $4, $5, $6, $7, $8)", 8),
    "slot_freed": ("SELECT pg_notify($1, $2)", 2),
    "delete_queue": ("DELETE FROM {s}.queue WHERE workflow_id = $1", 1),
    "put_schedule": (
        "INSERT INTO {s}.schedules (schedule_id, host, workflow, input, cron, every, timezone, "
        "overlap, catchup_window, next_tick, source, created, updated) VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
        "ON CONFLICT (schedule_id) DO UPDATE SET host = EXCLUDED.host, "
        "workflow = EXCLUDED.workflow, input = EXCLUDED.input, cron = EXCLUDED.cron, "
        "every = EXCLUDED.every, timezone = EXCLUDED.timezone, overlap = EXCLUDED.overlap, "
        "catchup_window = EXCLUDED.catchup_window, source = EXCLUDED.source, "
        "updated = EXCLUDED.updated, "
        # the next tick is kept when the timing is unchanged (decided on the row the
        # write finds: an update read before a tick was recorded writes back nothing)
        "next_tick = CASE WHEN schedules.cron IS NOT DISTINCT FROM EXCLUDED.cron "
        "AND schedules.every IS NOT DISTINCT FROM EXCLUDED.every "
        "AND schedules.timezone IS NOT DISTINCT FROM EXCLUDED.timezone "
        "THEN schedules.next_tick ELSE EXCLUDED.next_tick END "
        # a config schedule is the config's: only its own put replaces it (decided on
        # the row as the write finds it: a node.schedule that read none loses)
        "WHERE EXCLUDED.source = 'config' OR schedules.source <> 'config'", 13),
    "delete_schedule": ("DELETE FROM {s}.schedules WHERE schedule_id = $1", 1),
    "notify": ("SELECT pg_notify($1, '')", 1),
    # -- clusters (``_pg_cluster.py``) --
    "fence_many": ("SELECT {s}.fence_many($1, $2)", 2),
    "create_workflow_owned": (
        "INSERT INTO {s}.workflows (workflow_id, name, status, input, parent, run_id, "
        "attempt, host, created, updated, search, memo, trace, owner_epoch, owner) VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) "
        "ON CONFLICT (workflow_id) DO NOTHING", 15),
    # a write for a workflow another node runs (or nobody yet) wakes that node
    "remote_wake": (
        "WITH w AS (INSERT INTO {s}.wakeups (workflow_id, kind, created) "
        "SELECT $1, 'remote', $2 FROM {s}.workflows WHERE workflow_id = $1 "
        "AND owner_epoch IS DISTINCT FROM $3 "
        "AND status NOT IN ('completed', 'failed', 'cancelled') RETURNING 1) "
        "SELECT pg_notify($4, '') FROM w", 4),
    "mark": (
        "INSERT INTO {s}.writers (writer, batch, updated) VALUES ($1, $2, $3) "
        "ON CONFLICT (writer) DO UPDATE SET batch = EXCLUDED.batch, updated = EXCLUDED.updated",
        3),
}

#: the columns ``update_workflow`` may set
_UPDATABLE = frozenset({"status", "result", "error", "run_id", "attempt", "input", "host",
                        "cancel_requested"})
#: the columns ``update_schedule`` may set, each with its letter in the name of a
#: prepared statement (PostgreSQL keeps 63 bytes of a name: every combination fits)
_SCHEDULE_COLUMNS = {"paused": "p", "next_tick": "n", "last_tick": "t",
                     "last_workflow": "w", "buffered_tick": "b"}
#: the columns ``update_schedule`` may compare (its ``expect_*``), each with its letter
#: and its condition on parameter ``{n}`` (``next_tick``: a tick, of a schedule not
#: paused)
_SCHEDULE_EXPECT = {
    "next_tick": ("n", "paused = 0 AND next_tick IS NOT DISTINCT FROM ${n}::double precision"),
    "last_workflow": ("w", "last_workflow IS NOT DISTINCT FROM ${n}::text"),
    "paused": ("p", "paused = ${n}::bigint"),
    "cron": ("c", "cron IS NOT DISTINCT FROM ${n}::text"),
    "every": ("e", "every IS NOT DISTINCT FROM ${n}::double precision"),
    "timezone": ("z", "timezone = ${n}::text"),
}


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


#: operations only the node running the workflow makes (fenced in a cluster)
_FENCED = frozenset({Op.APPEND_JOURNAL, Op.CONSUME, Op.ADD_TIMER, Op.REMOVE_TIMER,
                     Op.RECORD_REPLY,
                     Op.CREATE_PROMISE, Op.SET_STATE, Op.RESET_RUN, Op.SET_ATTRIBUTES,
                     Op.TRUNCATE_JOURNAL})


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

    __slots__ = ("calls", "epoch", "error", "fenced", "needs_read", "results", "tx")

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        self.calls: list[_Call] = []
        #: in a cluster: the workflows whose fence the transaction checks first (None:
        #: the node's lease only, for a workflow it creates), with the node's epoch
        self.fenced: list[str | None] = []
        self.epoch: int | None = None
        #: ``set_attributes``: an explicit transaction with a read
        self.needs_read = False
        self.results: list[Any] | None = None
        self.error: BaseException | None = None


class _Composed:
    """The statements sent for one transaction (``PgWritePath._compose``)."""

    __slots__ = ("calls", "fence", "kind", "spots")

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        #: per plan: ``(index in calls, call)`` of each of its calls with a result
        self.spots: list[list[tuple[int, _Call]]] = []
        #: the first statement's kind (``_MARK``, ``_FENCE_ONE``, ``_FENCE_MANY``) and
        #: its fence params (epoch, workflow id or array of them)
        self.kind = _MARK
        self.fence: list[Any] = []


class _ConnectionLost(Exception):
    """The writer's connection broke during a transaction (its outcome is unknown)."""


class _StatementFailed(Exception):
    """A statement of a pipeline failed; ``.index`` says which (the server's error is
    ``.error``, already mapped to garrison's exception where it is one of ours)."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error




class PgWritePath:
    """The write path (a mixin of ``PostgresStore``, which sets these attributes)."""

    path: str | None
    schema: str
    retry_for: float
    lock_wait: float | None
    locked: bool
    _s: str
    _owner: bool
    _closed: bool
    _failed: StoreError | None
    #: why waits for the server end now (``PostgresStore.stopping``), or ``None``
    _cut: str | None
    #: set when the stop cuts the store off (a pause before a retry ends then)
    _cut_now: threading.Event
    #: set once the node's stop is past its time (``PostgresStore.stopping``): a write
    #: the server refused for now (a read-only database, say) is not tried again
    _retries_over: threading.Event
    _writes_begun: int
    _writer_id: str
    _acked: int
    _marked: int
    synchronous: str
    _channel: str
    _stmts: dict[str, _Stmt]
    _update_stmts: dict[tuple[str, ...], _Stmt]
    _prepared: set[bytes]
    _write_lock: threading.Lock
    _writer: psycopg.Connection[Any] | None
    #: the writer's server session, ``(pid, backend_start)`` (``_session_of``): the one
    #: a lost write went through, which ``_reconnect_writer`` ends before it reads the
    #: writer's number
    _writer_session: tuple[int, Any] | None
    _stats: dict[str, int]
    #: the cluster epoch of the node using this store (its writes are fenced), or None
    fence_epoch: int | None
    #: the name of the node using this store (in a cluster)
    node_name: str | None

    def _connect_writer(self, *, first: bool) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def _query(self, query: Any, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def get_workflow(self, workflow_id: str) -> Any:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    # -- statements ------------------------------------------------------------
    def _stmt(self, key: str) -> _Stmt:
        stmt = self._stmts.get(key)
        if stmt is None:
            text, n = _OP_SQL[key]
            text = text.replace("{s}", self._s)
            stmt = self._stmts[key] = _Stmt(f"g_{key}", text, n)
        return stmt

    def _head(self, stmt: _Stmt, kind: int) -> _Stmt:
        """``stmt`` as the first statement of a transaction (see ``_with_mark``)."""
        head = stmt.heads.get(kind)
        if head is None:
            name = stmt.name.decode()
            n = stmt.nparams
            head = stmt.heads[kind] = _Stmt(
                f"g{'mfF'[kind]}{name[1:]}", _with_mark(stmt.text, n, self._s, kind),
                n + (3 if kind == _MARK else 5))
        return head

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
            stmt = self._update_stmts[columns] = _Stmt(name, text, n)
        return stmt

    def _schedule_stmt(self, columns: tuple[str, ...], expect: tuple[str, ...]) -> _Stmt:
        """``UPDATE_SCHEDULE`` of these columns, with the compare-and-set on the
        ``expect`` columns (``_SCHEDULE_EXPECT``); its result: one row updated."""
        key = ("schedule", *columns, *(f"expect_{c}" for c in expect))
        stmt = self._update_stmts.get(key)
        if stmt is None:
            for column in columns:
                if column not in _SCHEDULE_COLUMNS:
                    raise ValueError(f"update_schedule cannot set column {column!r}")
            sets = "".join(f", {c} = ${i + 3}" for i, c in enumerate(columns))
            n = len(columns) + 2
            text = f"UPDATE {self._s}.schedules SET updated = $2{sets} WHERE schedule_id = $1"
            for column in expect:
                if column not in _SCHEDULE_EXPECT:
                    raise ValueError(f"update_schedule cannot compare column {column!r}")
                n += 1
                text += " AND " + _SCHEDULE_EXPECT[column][1].replace("{n}", str(n))
            name = ("g_sched_" + "".join(_SCHEDULE_COLUMNS[c] for c in columns) + "_if_"
                    + "".join(_SCHEDULE_EXPECT[c][0] for c in expect))
            stmt = self._update_stmts[key] = _Stmt(name, text, n)
        return stmt

    # -- planning ----------------------------------------------------------------
    def _plan(self, tx: Transaction) -> _Plan:
        """The statements of ``tx`` (and, for a tool, its wakeups and notification);
        ``ValueError`` for a value PostgreSQL cannot store (nothing is sent)."""
        plan = _Plan(tx)
        calls = plan.calls
        stmt = self._stmt
        # an operator's transaction is written as a tool's, on a node's store too
        tool = not self._owner or type(tx) is OperatorTransaction
        epoch = None if tool else self.fence_epoch if tx.epoch is None else tx.epoch
        fenced: dict[str | None, None] = {}
        wakes: dict[str, None] = {}
        for index, (op, params) in enumerate(tx.ops):
            what = op.value
            if op is Op.APPEND_JOURNAL:  # (a step: the commit that matters most)
                calls.append(_Call(stmt(what), _encode_journal(params), index, None))
            elif op is Op.UPDATE_WORKFLOW:
                wid, updated, sets = params
                columns = tuple(c for c, _ in sets)
                calls.append(_Call(self._update_stmt(columns),
                                   _encode((wid, updated, *(v for _, v in sets)), what),
                                   index, None))
                if epoch is not None:
                    if columns == ("cancel_requested",):  # anyone may ask for a cancel
                        wakes[wid] = None
                    else:
                        fenced[wid] = None
            elif op is Op.CREATE_WORKFLOW:
                _check_search(params[10], params[0])
                if epoch is None:
                    calls.append(_Call(stmt("create_workflow"), _encode(params, what), index,
                                       "created"))
                else:  # the node that creates a workflow runs it
                    fenced[None] = None
                    calls.append(_Call(stmt("create_workflow_owned"),
                                       _encode((*params, epoch, self.node_name), what), index,
                                       "created"))
            elif op is Op.DELIVER:
                if len(params) > 9:  # ``if_unfinished``
                    calls.append(_Call(stmt("deliver_unfinished"), _encode(params[:9], what),
                                       index, "id"))
                else:
                    calls.append(_Call(stmt("deliver"), _encode(params, what), index, "id"))
                if epoch is not None:
                    wakes[params[0]] = None
            elif op is Op.CONSUME and len(params) > 3:  # ``if_pending``
                calls.append(_Call(stmt("consume_pending"), _encode(params[:3], what), index,
                                   None))
            elif op is Op.DELIVER_TO_MONITORS:
                calls.append(_Call(stmt(what), _encode(
                    (*params, epoch, self._channel), what), index, "rows"))
            elif op is Op.EXPECT_WORKFLOW:
                if params[3]:  # ("by_any": no epoch of the writer's own)
                    calls.append(_Call(stmt("expect_unclaimed"), _encode(
                        (*params[:3], None if params[3] == "by_any" else self.fence_epoch),
                        what), index, None))
                else:
                    calls.append(_Call(stmt(what), _encode(params[:3], what), index, None))
            elif op is Op.ENQUEUE:
                calls.append(_Call(stmt("enqueue"), _encode(params, what), index, "id"))
            elif op is Op.ADMIT:  # (the function checks the lease itself, and keeps
                # the time of a retry's admission inside the rate's period: schema 11)
                calls.append(_Call(stmt("admit"), _encode(
                    (*params, epoch, admit_lock_class(self.schema)), what), index, "json"))
            elif op is Op.PUT_SCHEDULE:  # (its result: whether it wrote)
                calls.append(_Call(stmt(what), _encode(params, what), index, "created"))
            elif op is Op.SLOT_FREED:
                calls.append(_Call(stmt("slot_freed"), _encode(
                    (self._channel + ":queue", params[0]), what), index, None))
            elif op is Op.UPDATE_SCHEDULE:
                sid, updated, sets, expect = params
                calls.append(_Call(
                    self._schedule_stmt(tuple(c for c, _ in sets), tuple(c for c, _ in expect)),
                    _encode((sid, updated, *(v for _, v in sets), *(v for _, v in expect)),
                            what), index, "created"))
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
            if epoch is not None:
                if op in _FENCED:
                    fenced[tx.workflow_ids[index]] = None
                elif op is Op.COMPLETE_PROMISE:
                    wakes[tx.workflow_ids[index]] = None
        n = len(tx.ops)
        changed = [params[0] for op, params in tx.ops if op in _SCHEDULE_CHANGES or (
            op is Op.UPDATE_SCHEDULE and any(c == "paused" for c, _ in params[2]))
        ] if tx.schedule_ids and not tool and epoch is not None else ()
        if changed:
            # a node's change of a schedule (node.schedule, pause, resume, delete): the
            # other nodes of the cluster read it again (see take_wakeups), as for a tool's
            now = _time.time()
            for sid in dict.fromkeys(changed):
                calls.append(_Call(stmt("schedule_wakeup"), _encode((sid, now), "wakeup"), n,
                                   None))
            calls.append(_Call(stmt("notify"), [self._channel.encode()], n, None))
        if tool:
            now = _time.time()
            for wid in dict.fromkeys(tx.workflow_ids):
                if wid:  # "" marks an operation on a schedule
                    calls.append(_Call(stmt("wakeup"), _encode((wid, now), "wakeup"), n, None))
            for sid in dict.fromkeys(tx.schedule_ids):
                calls.append(_Call(stmt("schedule_wakeup"), _encode((sid, now), "wakeup"), n,
                                   None))
            calls.append(_Call(stmt("notify"), [self._channel.encode()], n, None))
            # a node claims it (a terminate: the workflow may wait unowned, for a node
            # with its code, and any node ends it)
            if tx.__class__ is OperatorTransaction or any(
                    op is Op.CREATE_WORKFLOW or (op is Op.DELIVER and params[5] == "control")
                    for op, params in tx.ops):
                calls.append(_Call(stmt("notify"), [(self._channel + ":cluster").encode()],
                                   n, None))
        elif epoch is not None:
            # checked by the first statement of the transaction (``_send``): nothing of
            # it is written otherwise
            plan.fenced = list(fenced)
            plan.epoch = epoch
            now = _time.time()
            for wid in wakes:
                if wid not in fenced:
                    calls.append(_Call(stmt("remote_wake"), _encode(
                        (wid, now, epoch, self._channel), "wakeup"), n, None))
        return plan

    # -- writing: the connection level -----------------------------------------------
    def _ensure_prepared(self, conn: psycopg.Connection[Any], stmts: Iterable[_Stmt]
                         ) -> _Gen[None]:
        """Prepare those of ``stmts`` this connection has not. One the server refuses
        is :class:`_StatementFailed` (index -1), as a statement that fails: inside an
        explicit transaction it is rolled back, and a refusal for now (a statement
        timeout while a lock keeps it from reading a table's definition) is tried
        again."""
        pg = conn.pgconn
        for s in stmts:
            if s.name not in self._prepared:
                res = yield from _ask(pg, pg.send_prepare, s.name, s.text.encode())
                if res.status not in _OK:
                    raise _StatementFailed(-1, _result_error(res))
                self._prepared.add(s.name)

    def _compose(self, plans: list[_Plan]) -> _Composed:
        """The statements that write ``plans`` as one transaction: consecutive journal
        appends as ONE multi-row insert, and the fences of every plan checked by the
        first statement (``_with_mark``). The plans that only append to a journal (the
        steps of a batch) go first, in one insert, wherever they are in the batch
        (between a start and a finish of other workflows), unless another plan of the
        batch writes for the same workflow: their order then stays as it was."""
        out = _Composed()
        sent = out.calls
        if len(plans) == 1 and len(plans[0].calls) == 1:  # one step: nothing to merge
            plan = plans[0]
            call = plan.calls[0]
            sent.append(call)
            out.spots.append([(0, call)] if call.result is not None else [])
            if len(plan.fenced) == 1:
                wid = plan.fenced[0]
                out.kind = _FENCE_ONE
                out.fence = [str(plan.epoch).encode(), None if wid is None else wid.encode()]
                return out
            if not plan.fenced:
                return out
            sent.clear()
            out.spots.clear()
        append = self._stmt("append_journal")
        run: list[_Call] = []

        def flush() -> None:
            if len(run) == 1:
                sent.append(run[0])
            elif run:
                columns = zip(*[call.params for call in run], strict=True)
                sent.append(_Call(self._stmt("append_journal_many"),
                                  [_array(column) for column in columns], run[0].op, None))
            run.clear()

        groups: dict[int | None, dict[str | None, None]] = {}
        hoisted: set[int] = set()
        if len(plans) > 1:
            steps = [plan for plan in plans if all(c.stmt is append for c in plan.calls)]
            if steps and len(steps) < len(plans):
                ids = {id(plan) for plan in steps}
                touched = {wid for plan in plans if id(plan) not in ids
                           for wid in plan.tx.workflow_ids}
                for plan in steps:
                    if touched.isdisjoint(plan.tx.workflow_ids):
                        hoisted.add(id(plan))
                        run.extend(plan.calls)
                flush()
        for plan in plans:
            mine: list[tuple[int, _Call]] = []
            if id(plan) in hoisted:
                out.spots.append(mine)
                if plan.fenced:
                    groups.setdefault(plan.epoch, {}).update(dict.fromkeys(plan.fenced))
                continue
            for call in plan.calls:
                if call.stmt is append:
                    run.append(call)
                    continue
                flush()
                if call.result is not None:
                    mine.append((len(sent), call))
                sent.append(call)
            out.spots.append(mine)
            if plan.fenced:
                groups.setdefault(plan.epoch, {}).update(dict.fromkeys(plan.fenced))
        flush()
        for number, (epoch, fenced) in enumerate(groups.items()):
            wids = [None if wid is None else wid.encode() for wid in fenced]
            params = [str(epoch).encode(), wids[0] if len(wids) == 1 else _array(wids)]
            if number == 0:
                out.kind = _FENCE_ONE if len(wids) == 1 else _FENCE_MANY
                out.fence = params
            else:  # (plans of two incarnations of the node: a rejoin between them)
                params[1] = _array(wids)
                sent.append(_Call(self._stmt("fence_many"), params, -1, None))
        return out

    def _send(self, conn: psycopg.Connection[Any], composed: _Composed, mark: list[Any]
              ) -> _Gen[list[Any]]:
        """Run the composed statements as ONE transaction (the first one also sets the
        writer's number, and checks the fences); returns their results. A failing
        statement raises :class:`_StatementFailed` (nothing committed)."""
        pg = conn.pgconn
        calls = composed.calls
        first = self._head(calls[0].stmt, composed.kind)
        mark = mark + composed.fence
        prepared = self._prepared
        if first.name not in prepared or any(c.stmt.name not in prepared for c in calls[1:]):
            yield from self._ensure_prepared(conn, [first, *(c.stmt for c in calls[1:])])
        if len(calls) == 1:
            res = yield from _ask(pg, pg.send_query_prepared, first.name,
                                  calls[0].params + mark)
            if res.status not in _OK:
                raise _StatementFailed(0, _result_error(res))
            return [res]
        results = yield from _pipeline(pg, [(first.name, calls[0].params + mark), *(
            (call.stmt.name, call.params) for call in calls[1:])])
        if len(results) != len(calls):  # pragma: no cover - the server broke the protocol
            raise _ConnectionLost("incomplete pipeline results")
        for index, res in enumerate(results):
            if res.status not in _OK:
                if res.status == pq.ExecStatus.PIPELINE_ABORTED:  # pragma: no cover
                    continue
                raise _StatementFailed(index, _result_error(res))
        return results

    def _exec(self, conn: psycopg.Connection[Any], query: bytes) -> _Gen[None]:
        res = yield from _ask(conn.pgconn, conn.pgconn.send_query, query)
        if res.status not in _OK:
            raise _StatementFailed(-1, _result_error(res))

    def _run_explicit(self, conn: psycopg.Connection[Any], plans: list[_Plan], n: int,
                      isolate: bool) -> _Gen[None]:
        """``BEGIN``, the writer's number, each plan (with a SAVEPOINT when
        ``isolate``; its fence first; a read round trip for ``set_attributes``),
        ``COMMIT``."""
        mark = self._stmt("mark")
        yield from self._ensure_prepared(conn, [mark])
        pg = conn.pgconn
        try:
            yield from self._exec(conn, b"BEGIN")
            res = yield from _ask(pg, pg.send_query_prepared, mark.name,
                                  _encode((self._writer_id, n, _time.time()), "mark"))
            if res.status not in _OK:
                raise _StatementFailed(-1, _result_error(res))
            for plan in plans:
                plan.results = None
                plan.error = None
                if isolate:
                    yield from self._exec(conn, b"SAVEPOINT request")
                try:
                    plan.results = yield from self._apply_explicit(conn, plan)
                except _StatementFailed as failed:
                    if not isolate:
                        raise
                    yield from self._exec(conn, b"ROLLBACK TO SAVEPOINT request")
                    plan.error = failed.error
                if isolate:
                    yield from self._exec(conn, b"RELEASE SAVEPOINT request")
            yield from self._exec(conn, b"COMMIT")
        except _StatementFailed:
            yield from self._exec(conn, b"ROLLBACK")
            raise
        except Exception as exc:
            # something of the store's own failed between statements (a read of
            # ``_map_error``, its reader gone): the transaction is not left open on the
            # writer's connection (aborted, it would refuse every later write)
            if not isinstance(exc, _ConnectionLost) and pg.status != _BAD:
                with contextlib.suppress(_StatementFailed, _ConnectionLost):
                    yield from self._exec(conn, b"ROLLBACK")
            raise

    def _check_fence(self, conn: psycopg.Connection[Any], plan: _Plan
                     ) -> _Gen[BaseException | None]:
        """The server's error if ``plan``'s fence fails now (in a transaction of its
        own, writing nothing), else None."""
        fence = self._stmt("fence_many")
        try:
            yield from self._ensure_prepared(conn, [fence])
        except _StatementFailed as failed:  # (not checked: the refusal is the answer)
            return failed.error
        wids = _array([None if wid is None else wid.encode() for wid in plan.fenced])
        res = yield from _ask(conn.pgconn, conn.pgconn.send_query_prepared, fence.name,
                              [str(plan.epoch).encode(), wids])
        return None if res.status in _OK else _result_error(res)

    def _apply_explicit(self, conn: psycopg.Connection[Any], plan: _Plan) -> _Gen[list[Any]]:
        """One plan inside an open transaction, statement by statement."""
        pg = conn.pgconn
        results: list[Any] = [None] * len(plan.tx.ops)
        yield from self._ensure_prepared(conn, [c.stmt for c in plan.calls])
        if plan.fenced:  # first: a write of a workflow that moved may fail otherwise
            error = yield from self._check_fence(conn, plan)
            if error is not None:
                raise _StatementFailed(0, self._map_error(error, plan, -1))
        for call in plan.calls:
            op, params = (plan.tx.ops[call.op] if call.op < len(plan.tx.ops)
                          else (None, None))
            res = yield from _ask(pg, pg.send_query_prepared, call.stmt.name, call.params)
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
                yield from self._ensure_prepared(conn, [write])
                args = _encode((wid, _dumps(search), _dumps(memo), now), op.value)
                res = yield from _ask(pg, pg.send_query_prepared, write.name, args)
                if res.status not in _OK:
                    raise _StatementFailed(call.op, _result_error(res))
            elif call.result is not None:
                results[call.op] = _result_of(call, res)
        return results

    @staticmethod
    def _results(plan: _Plan, calls_results: list[Any], spots: list[tuple[int, _Call]]
                 ) -> list[Any]:
        """The plan's results: ``spots`` says where its calls with a result were sent."""
        results: list[Any] = [None] * len(plan.tx.ops)
        for index, call in spots:
            results[call.op] = _result_of(call, calls_results[index])
        return results

    def _map_error(self, error: BaseException, plan: _Plan, index: int) -> BaseException:
        """A server error as the exception SQLite's store raises for the same operation."""
        if not isinstance(error, pg_errors.RaiseException):
            if (isinstance(error, pg_errors.UniqueViolation)
                    and error.diag.constraint_name == "queue_dedup"
                    and 0 <= index < len(plan.tx.ops) and plan.tx.ops[index][0] is Op.ENQUEUE):
                # a start with the same key committed while this one's enqueue() ran
                # (two nodes at once): its check saw no holder yet, the unique index did
                key = plan.tx.ops[index][1][3]
                rows = self._read_back(
                    f"reading which workflow holds dedup key {key!r} (its start's enqueue "
                    "found it taken)", "it was not committed",
                    self._query, f"SELECT workflow_id FROM {self._s}.queue WHERE dedup = %s",
                    (key,))
                if rows:
                    return DedupKeyTaken(str(key), str(rows[0][0]))
                return error  # (the holder ended meanwhile: the caller may start again)
            if isinstance(error, pg_errors.ProgramLimitExceeded):
                return ValueError(f"cannot store: {_reason(error)} (a name or key too long "
                                  "for the store's index)")
            if isinstance(error, pg_errors.UntranslatableCharacter):
                return ValueError(f"cannot store: {_reason(error)} (PostgreSQL text and jsonb "
                                  "cannot hold the NUL character)")
            return error
        message = (error.diag.message_primary or "").removeprefix("garrison:")
        detail = error.diag.message_detail or ""
        params = plan.tx.ops[index][1] if 0 <= index < len(plan.tx.ops) else ()
        if message == "no_such_workflow":
            return NoSuchWorkflow(detail)
        if message == "fenced":
            if detail:
                # (the fence cannot tell which: a lone node that lost its lease and
                # joined again claimed its workflows itself, under a new epoch. Either
                # way this incarnation's lease lapsed: a node claims only the workflows
                # of a lapsed one, or those it handed over, which left it already)
                return WorkflowMoved(self.path, detail, f"workflow {detail!r} is no longer "
                                     "this node incarnation's in the store (its lease "
                                     "lapsed, or a node of the cluster claimed the workflow: "
                                     "another node, or this one after it joined the cluster "
                                     "again as a new incarnation): its write is refused",
                                     lease_lapsed=True)
            return WorkflowMoved(self.path, None, "this node's lease lapsed (it was cut off "
                                 "from the store): its writes are refused, and its "
                                 "workflows go to the next node of the cluster that claims "
                                 "them", lease_lapsed=True)
        if message == "workflow_changed":
            return workflow_changed(*params[:3])
        if message == "workflow_ended":
            return WorkflowEnded(params[0], detail)
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

    def _run(self, conn: psycopg.Connection[Any], plans: list[_Plan], n: int,
             bare: bool = False) -> _Gen[bool]:
        """Write ``plans`` as one transaction numbered ``n``: each gets its results or
        its own error; True if the transaction committed (with the number ``n``, unless
        it is a ``bare`` step: ``_bare_step``). :class:`_ConnectionLost` leaves the
        outcome to the caller."""
        for plan in plans:  # (an earlier attempt's outcome does not count)
            plan.results = plan.error = None
        if bare:
            return (yield from self._run_one(conn, plans[0], n, bare=True))
        if len(plans) == 1 and not plans[0].needs_read:
            plan = plans[0]
            if len(plan.calls) == 1 and len(plan.fenced) <= 1:
                return (yield from self._run_one(conn, plan, n))
            composed = self._compose(plans)
            try:
                out = yield from self._send(conn, composed, self._mark_params(n))
            except _StatementFailed as failed:
                error = failed.error
                if plan.fenced and not _is_fenced(error):
                    # the fence and the writes are one statement, in no set order: a
                    # write another node's made (a journal row it wrote) may fail first
                    error = (yield from self._check_fence(conn, plan)) or error
                index = composed.calls[failed.index].op if failed.index >= 0 else -1
                plan.error = self._map_error(error, plan, index)
                return False
            plan.results = self._results(plan, out, composed.spots[0])
            return True
        if not any(p.needs_read for p in plans):
            composed = self._compose(plans)
            try:
                out = yield from self._send(conn, composed, self._mark_params(n))
            except _StatementFailed:
                self._stats["failed_batches"] += 1
            else:
                for plan, spots in zip(plans, composed.spots, strict=True):
                    plan.error = None
                    plan.results = self._results(plan, out, spots)
                return True
        try:
            yield from self._run_explicit(conn, plans, n, isolate=True)
        except _StatementFailed as failed:  # BEGIN/COMMIT themselves failed
            for plan in plans:
                plan.results = None
                plan.error = failed.error
            return False
        return True

    def _mark_params(self, n: int) -> list[Any]:
        return [self._writer_id.encode(), str(n).encode(), repr(_time.time()).encode()]

    def _bare_step(self, plans: list[_Plan]) -> _Plan | None:
        """The plan of a transaction that is one journal row (fenced by one workflow at
        most), when the store waits for the WAL flush of every commit
        (``synchronous="full"``): it is sent without the writer's number, which costs
        the server a second row to write and log at every step of a sequential
        workflow (a fenced one as ``append_journal_fenced``: the fence, then the row).
        Its own row settles a lost answer instead (``_step_committed``); a server that
        keeps what it confirmed cannot have lost an earlier transaction that this row
        would hide. (With ``synchronous_commit`` off the server may lose
        its last confirmed commits in a crash, and only the writer's number shows it.)"""
        if self.synchronous != "full" or len(plans) != 1:
            return None
        plan = plans[0]
        if (len(plan.calls) != 1 or plan.needs_read or len(plan.fenced) > 1
                or (plan.fenced and plan.fenced[0] is None)
                or plan.calls[0].stmt is not self._stmts.get("append_journal")):
            return None
        return plan

    def _step_committed(self, plan: _Plan) -> bool:
        """Whether the journal row of a bare step (``_bare_step``) whose answer was
        lost is in the store: the row is this transaction's only write, and a row
        already there would have failed the insert."""
        workflow_id, seq, kind, name, _outcome, attempts, at = plan.tx.ops[0][1]
        return bool(self._query(
            f"SELECT 1 FROM {self._s}.journal WHERE workflow_id = %s AND seq = %s "
            "AND kind = %s AND name = %s AND attempts = %s AND time = %s",
            (workflow_id, seq, kind, name, attempts, at)))

    def _run_one(self, conn: psycopg.Connection[Any], plan: _Plan, n: int,
                 bare: bool = False) -> _Gen[bool]:
        """:meth:`_run` of one plan of one statement (a step's journal row, a start, a
        finish: most commits), fenced by one workflow at most: the same statement as
        ``_compose`` and ``_send`` make of it (the writer's number, the fence, in its
        CTE), sent without building their intermediate lists; a ``bare`` step
        (``_bare_step``) as it is."""
        call = plan.calls[0]
        stmt = call.stmt
        if bare:
            head = stmt
            params = call.params
            if plan.fenced:  # (fenced by the statement itself: ``append_journal_fenced``)
                head = self._stmt("append_journal_fenced")
                wid = plan.fenced[0]
                assert wid is not None
                params = [*params, str(plan.epoch).encode(), wid.encode()]
        else:
            params = [*call.params, *self._mark_params(n)]
            if plan.fenced:
                wid = plan.fenced[0]
                kind = _FENCE_ONE
                params += [str(plan.epoch).encode(), None if wid is None else wid.encode()]
            else:
                kind = _MARK
            head = stmt.heads.get(kind) or self._head(stmt, kind)
        if head.name not in self._prepared:
            try:
                yield from self._ensure_prepared(conn, [head])
            except _StatementFailed as failed:
                plan.error = self._map_error(failed.error, plan, call.op)
                return False
        pg = conn.pgconn
        res = yield from _ask(pg, pg.send_query_prepared, head.name, params)
        if res.status not in _OK:
            error: BaseException = _result_error(res)
            if plan.fenced and not _is_fenced(error):
                # the fence and the write are one statement, in no set order: a write
                # another node's rows refuse may fail first
                error = (yield from self._check_fence(conn, plan)) or error
            plan.error = self._map_error(error, plan, call.op)
            return False
        results: list[Any] = [None] * len(plan.tx.ops)
        if call.result is not None:
            results[call.op] = _result_of(call, res)
        plan.results = results
        return True

    # -- writing: retries -------------------------------------------------------------
    def _commit_plans(self, plans: list[_Plan]) -> None:
        """Write ``plans`` as one transaction in this thread (waiting for the write
        lock and the server as long as it takes: a worker thread, a tool, a
        synchronous ``write``); raises :class:`~garrison.StoreError` when the store
        gave up (see :meth:`_commit`)."""
        self._drive(self._commit(plans, here=False))

    def _commit(self, plans: list[_Plan], *, here: bool) -> _Gen[None]:
        """:meth:`_commit_raw`; then a server's refusal left to a caller (not a conflict
        of what it writes, which the caller's own error says) is a
        :class:`~garrison.StoreError` naming the store, not psycopg's error."""
        yield from self._commit_raw(plans, here=here)
        for plan in plans:
            if plan.error is not None:
                plan.error = self._refusal(plan.error)

    def waited_out(self, error: BaseException) -> str:
        """What a refusal for now that outlasted ``retry_for`` says: for a lock wait
        cancelled by ``lock_timeout``, whose lock it was and how long it was waited for
        (the server's own words name neither)."""
        if not isinstance(error, pg_errors.LockNotAvailable):
            return _reason(error)
        return lock_wait_reason(error, self.lock_wait, self.retry_for)

    def _refusal(self, error: BaseException) -> BaseException:
        """``error`` as the caller of a write gets it: a psycopg error (the server read
        only, a role that may not write, a full disk, a refusal that outlasted
        ``retry_for``) is a :class:`~garrison.StoreError`; a conflict of what the write
        does (an ``IntegrityError``) stays as it is."""
        if not isinstance(error, psycopg.Error) or isinstance(error, pg_errors.IntegrityError):
            return error
        why = ""
        if isinstance(error, pg_errors.LockNotAvailable):
            return StoreError(self.path, "the server refused the write: "
                                         + self.waited_out(error))
        if isinstance(error, pg_errors.ReadOnlySqlTransaction):
            why = (" (the database, the store's role or the server, a standby, is read-only; "
                   f"tried again for {self.retry_for:g}s)")
        elif isinstance(error, pg_errors.InsufficientPrivilege):
            why = " (the store's role may not write its tables)"
        return StoreError(self.path, f"the server refused the write: {_reason(error)}{why}")

    def _commit_raw(self, plans: list[_Plan], *, here: bool) -> _Gen[None]:
        """Write ``plans`` as one transaction, reconnecting and retrying as the module
        docs say; raises :class:`~garrison.StoreError` when the store gave up (once
        some plans committed and the others, refused for now, are written again, it is
        those others' error: the committed keep their results). A resumable write
        (see :data:`_Gen`): it holds the write lock from its first step to its end, in
        whichever thread drives it.

        ``here`` (driven in the node's thread, ``_drive_here``): the write lock is not
        waited for; another write holding it (a worker thread reconnecting through an
        outage, for up to ``retry_for``) raises :class:`~garrison.persistence.Busy`
        at once, nothing sent."""
        lock = self._write_lock
        if not lock.acquire(blocking=not here):
            raise Busy("another write holds the connection: write from a worker thread")
        #: the others committed: ``plans`` are those the server refused for now (set
        #: before anything can raise: the handler below reads it)
        rest = False
        try:
            self._check_usable()
            self._writes_begun += 1
            n = self._acked + 1
            bare = self._bare_step(plans) is not None
            deadline: float | None = None
            attempt = 0
            #: transient refusals (``refused_for_now``): until when they are tried again
            busy_until: float | None = None
            pause = 0.05
            while True:
                conn = self._writer
                try:
                    if conn is None or conn.closed:
                        raise _ConnectionLost("not connected")
                    committed = yield from self._run(conn, plans, n, bare)
                except _ConnectionLost as lost:
                    yield _BLOCK  # (the node's thread hands the write to a worker here)
                    if deadline is None:
                        deadline = _time.monotonic() + self.retry_for
                    found = self._reconnect_writer(deadline, str(lost))
                    if not bare and found == n:  # it committed before the connection dropped
                        try:
                            for plan in plans:
                                self._read_back(
                                    f"reading back the results of this write (its answer was "
                                    f"lost with the connection: {lost})",
                                    "it committed, but what it returned is unknown",
                                    self._recover_results, plan)
                        except StoreError:
                            self._committed(n, bare)  # (the next write's number follows it)
                            raise
                        committed = True
                    elif found != self._marked:
                        self._give_up(
                            f"the server lost transactions it had confirmed (this store's "
                            f"last confirmed transaction is {self._marked}, the server has "
                            f"{found}): with synchronous='normal' a server crash loses its "
                            "last few hundred milliseconds; restart the node to resume "
                            "from what the store kept")
                    elif bare and self._read_back(
                            f"looking for this step's journal row (its answer was lost with "
                            f"the connection: {lost})", "whether it committed is unknown",
                            self._step_committed, plans[0]):
                        committed = True  # its row is there: a step has no results
                        plans[0].results = [None] * len(plans[0].tx.ops)
                        plans[0].error = None
                    else:
                        attempt += 1
                        continue  # it did not commit: send it again
                if committed:
                    self._committed(n, bare)
                again = [plan for plan in plans if refused_for_now(plan.error)]
                if not again:
                    return
                # refused by the server's load, not by what it writes (a statement
                # timeout under lock contention, a deadlock): written again after a
                # pause, for up to ``retry_for`` seconds, then the error is the callers'
                if busy_until is None:
                    busy_until = _time.monotonic() + self.retry_for
                if _time.monotonic() + pause > busy_until:
                    return
                if committed:  # the others committed: the rest is a new transaction
                    plans = again
                    n = self._acked + 1
                    rest = True
                if not self._retries_over.is_set():
                    yield _BLOCK  # (the node's thread hands the write to a worker here)
                    self._pause(pause, self._retries_over)
                    pause = min(pause * 2, 1.0)
                if self._closed or self._cut or self._retries_over.is_set():
                    # (``close`` waits for this write; the node's stop does not wait
                    # for a server that refuses it: not sent again)
                    why = self._cut or ("the store was closed" if self._closed
                                        else "the node stopped")
                    for plan in again:
                        plan.error = StoreError(
                            self.path, f"{why} while this write waited to be tried again "
                            f"(the server refused it for now: "
                            f"{_reason(plan.error or Exception())}); it was not committed")
                    return
                if any(isinstance(plan.error, pg_errors.ReadOnlySqlTransaction)
                       for plan in again):
                    # (a session keeps the read-only default it began with: a new one
                    # reads the database's and role's as they are now)
                    self._drop_writer()
        except BaseException as exc:
            if isinstance(exc, Exception):
                if not rest:
                    raise
                # (the store gave up, say) the outcome of the plans written again only:
                # the others committed, and keep their results
                for plan in plans:
                    plan.results = None
                    plan.error = exc
                return
            # abandoned by its driver (GeneratorExit: a KeyboardInterrupt there), or
            # interrupted itself (a KeyboardInterrupt), with statements maybe in flight:
            # the connection's state and the transaction's outcome are unknown, and a
            # later write could not tell them apart by the writer's number
            self._drop_writer()
            if self._failed is None:
                how = ("abandoned while it waited for the server"
                       if isinstance(exc, GeneratorExit)
                       else f"interrupted ({type(exc).__name__})")
                self._failed = StoreError(self.path, f"a write was {how} (whether it "
                                          "committed is unknown); this store writes "
                                          "nothing more")
            raise
        finally:
            lock.release()

    def _committed(self, n: int, bare: bool) -> None:
        """Transaction ``n`` committed: the next one is ``n + 1``."""
        self._acked = n
        if not bare:
            self._marked = n
        self._stats["transactions"] += 1

    def _read_back(self, what: str, outcome: str, read: Callable[..., _T], *args: Any
                   ) -> _T:
        """``read(*args)``: a read on the reader connection that settles a write whose answer
        was lost, or names a server error. If it fails, the write's caller gets a
        StoreError saying ``what`` failed and ``outcome`` (what is known of the write):
        not the RuntimeError of a call on a closed store (``close`` came meanwhile), nor
        the reader's error alone, which would leave it to guess whether its write
        committed. (Any other error too: the read's own, a row it cannot read.)"""
        try:
            return read(*args)
        except Exception as exc:
            if self._closed:  # (the RuntimeError of a call on a closed store)
                raise StoreError(self.path, f"the store was closed while {what}: {outcome}"
                                 ) from None
            if isinstance(exc, StoreError):
                because = exc.reason_at(self.path)
                raise StoreError(self.path, f"{what} failed ({because}): {outcome}") from None
            raise StoreError(self.path, f"{what} failed ({type(exc).__name__}: {exc}): "
                             f"{outcome}") from exc

    def _drive(self, write: _Gen[_T], wait: Any = _DONE) -> _T:
        """Run ``write`` to its end in this thread, waiting for the server as long as
        it takes (``wait``: where ``_drive_here`` left it, if it did). A store closed
        meanwhile ends a wait for the server with :class:`_ConnectionLost` (the write
        then ends with a StoreError saying its outcome is unknown), so that ``close``
        never waits for a server that stopped answering."""
        said = 0.0  # (when a wait past WRITE_WAIT_WARNING was said: once a write)
        try:
            if wait is _DONE:
                wait = next(write)
            while True:
                if wait is _BLOCK:
                    wait = write.send(0)
                    continue
                try:
                    ready = _poll(wait, _CLOSED_CHECK_MS)
                    began = _time.monotonic()
                    while not ready and not self._closed and self._cut is None:
                        if not said and _time.monotonic() - began >= WRITE_WAIT_WARNING:
                            said = began
                            self._say_write_waits()
                        ready = _poll(wait, _CLOSED_CHECK_MS)
                except (OSError, ValueError) as exc:  # (the socket went away)
                    wait = write.throw(_ConnectionLost(f"connection lost: {exc}"))
                    continue
                # (closed: the write ends, its outcome unknown; see ``_reconnect_writer``)
                wait = write.send(ready) if ready else write.throw(_ConnectionLost(
                    "no answer yet"))
        except StopIteration as stop:
            result: _T = stop.value
            if said:
                log.info("store %r: the write that waited for the server was answered "
                         "after %.1fs", self.path, _time.monotonic() - said)
            return result
        except BaseException:
            write.close()  # (a KeyboardInterrupt here: the write lets go of the lock now)
            raise

    def _say_write_waits(self) -> None:
        """Say that a write has waited :data:`WRITE_WAIT_WARNING` for the server's
        answer, naming the writer's session on the server, once for that write."""
        session = getattr(self, "_writer_session", None)
        pid = f", pid {session[0]} on the server" if session else ""
        log.warning(
            "store %r: a write has waited %gs for the server's answer (its session%s, "
            "waits for a lock another session holds, see pg_locks, or its server process "
            "does not run); the node's commits, and the workflows that make them, wait "
            "for it, nothing is lost", self.path, WRITE_WAIT_WARNING, pid)

    def _drive_here(self, write: _Gen[Any]) -> Any:
        """Run ``write`` in the node's (trio) thread while it waits at most
        :data:`TRIO_THREAD_WAIT` in all for the server, and never for something it
        cannot poll: :data:`_DONE` once it ended, else where it stopped (a wait to
        give to :meth:`_drive` in a worker thread, started at once: the write holds
        the write lock and its statements may be in flight)."""
        until = 0.0
        try:
            wait = next(write)
            while wait is not None:  # (_BLOCK: a wait it cannot poll)
                now = _time.monotonic()
                if not until:
                    until = now + TRIO_THREAD_WAIT
                elif now >= until:
                    return wait
                try:
                    ready = _poll(wait, math.ceil((until - now) * 1000))
                except (OSError, ValueError) as exc:  # (the socket went away)
                    wait = write.throw(_ConnectionLost(f"connection lost: {exc}"))
                    continue
                if not ready:
                    return wait
                wait = write.send(ready)
            return wait
        except StopIteration:
            return _DONE
        except BaseException:
            write.close()  # (a KeyboardInterrupt here: the write lets go of the lock now)
            raise

    def _reconnect_writer(self, deadline: float, reason: str) -> int:
        """Reconnect (with backoff until ``deadline``), take the lock again; the
        writer's number as the server has it.

        The writer's old session is ended first (``_end_session``): the server may not
        have noticed yet that its client went, and its transaction in flight (or
        statements still on their way) could commit after the number was read, and
        the write, sent again, would be applied twice. (A cluster node's incarnation
        lock is taken over the same way: ``_hold_epoch``.)"""
        old = self._writer_session
        self._drop_writer()
        delay = 0.05
        last = reason
        while True:
            if self._closed or self._cut is not None:
                raise self._closed_meanwhile(reason)
            try:
                conn = self._connect_writer(first=False)
            except StoreLocked as exc:
                self._give_up(f"could not take this node's lock again after the "
                              f"connection was lost: a session that could not be ended "
                              f"still holds it ({exc})")
            except StoreError as exc:  # (named in the message it ends in: not twice)
                last = exc.reason_at(self.path)
            except psycopg.Error as exc:  # (lost again as it took the lock: try again)
                last = _reason(exc)
            else:
                try:
                    self._end_session(conn, old, deadline, reason)
                    row = conn.execute(
                        f"SELECT (SELECT batch FROM {self._s}.writers WHERE writer = %s), "
                        f"({_SESSION_START})", (self._writer_id,)).fetchone()
                except psycopg.Error as exc:
                    conn.close()
                    self.locked = False
                    last = _reason(exc)
                except BaseException:  # (given up, or interrupted: not the writer's)
                    conn.close()
                    self.locked = False
                    raise
                else:
                    assert row is not None
                    self._writer = conn
                    self._writer_session = (conn.info.backend_pid, row[1])
                    return int(row[0]) if row[0] is not None else 0
            left = deadline - _time.monotonic()
            if left <= 0:  # (a last try at the deadline itself: retry_for is kept whole)
                self._give_up(f"the connection was lost ({reason}) and could not be made "
                              f"again within {self.retry_for:g}s: {last}")
            self._pause(min(delay, left))
            delay = min(delay * 2, 2.0)

    def _end_session(self, conn: psycopg.Connection[Any], session: tuple[int, Any] | None,
                     deadline: float, reason: str) -> None:
        """End the writer's old server ``session`` (``(pid, backend_start)``: not
        another that took its pid since) from the new connection ``conn``, and wait
        until it is gone: then its transaction committed or rolled back, for good.
        Ending a session of one's own role needs no privilege; should the server refuse,
        the session may still end by itself (its TCP keepalive). Not gone by
        ``deadline``: the store gives up (sending the write again could apply it
        twice)."""
        if session is None:
            return
        alive = conn.execute(_SESSION_ALIVE, session).fetchone()
        if alive is None:
            return
        with contextlib.suppress(pg_errors.InsufficientPrivilege):
            conn.execute("SELECT pg_terminate_backend(%s)", (session[0],))
        while alive is not None:
            if self._closed or self._cut is not None:  # (``close`` waits for this write)
                raise self._closed_meanwhile(reason)
            if _time.monotonic() + 0.02 > deadline:
                self._give_up(
                    f"the connection was lost ({reason}) and its old session on the server "
                    f"(pid {session[0]}) did not end within {self.retry_for:g}s: the write "
                    "it was sending may still commit there, so it cannot be sent again")
            _time.sleep(0.02)
            alive = conn.execute(_SESSION_ALIVE, session).fetchone()

    def _pause(self, seconds: float, until: threading.Event | None = None,
               check: Callable[[], None] | None = None) -> None:
        """Wait ``seconds`` before trying again (on this module's clock, which tests
        replace), ended early once the node's stop cuts the store off (or ``until``
        is set); ``check`` is called at each look, every tenth of a second (it raises
        to end the wait)."""
        end = _time.monotonic() + seconds
        while not self._cut_now.is_set() and not (until is not None and until.is_set()):
            if check is not None:
                check()
            left = end - _time.monotonic()
            if left <= 0:
                return
            _time.sleep(min(left, 0.1))

    def _closed_meanwhile(self, reason: str) -> StoreError:
        """The error of a write whose connection was lost (``reason``) and the store
        closed (or the node's stop cut it short) before it could be settled."""
        why = ("the store was closed while a write waited for the server"
               if self._cut is None else f"{self._cut}, as a write waited for it")
        return StoreError(self.path, f"{why} ({reason}): whether it committed is unknown")

    def _session_of(self, conn: psycopg.Connection[Any]) -> tuple[int, Any]:
        """The server session of the writer's connection ``conn`` (see
        ``_writer_session``)."""
        try:
            row = conn.execute(_SESSION_START).fetchone()
        except psycopg.Error as exc:
            raise StoreError(self.path, f"cannot set up the connection: {_reason(exc)}"
                             ) from None
        return conn.info.backend_pid, None if row is None else row[0]

    def _drop_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self.locked = False

    def _recover_results(self, plan: _Plan) -> None:
        """Results of a transaction that committed while its answer was lost: read back
        (every operation with a result: ``create_workflow``, ``deliver``,
        ``deliver_to_monitors``, ``enqueue``, ``admit``, ``put_schedule``,
        ``update_schedule``; the
        others' is ``None``). A caller whose own
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
            elif op is Op.DELIVER_TO_MONITORS:
                # the rows it put: by the message ids of the monitors' watchers, its
                # sender and time, but those an earlier ``deliver`` of this transaction
                # put (the operation found their ids taken and left them out)
                wid, host, prefix, topic, _payload, sender, created = params
                earlier = {p[1] for o, p in plan.tx.ops[:index] if o is Op.DELIVER}
                rows = self._query(
                    f"SELECT i.workflow_id, i.id, i.msg_id FROM {self._s}.monitors m "
                    f"JOIN {self._s}.inbox i "
                    "ON i.msg_id = %s || substr(m.watcher, strpos(m.watcher, '/') + 1) "
                    "WHERE m.workflow_id = %s AND (%s = '' OR starts_with(m.watcher, %s)) "
                    "AND i.topic = %s AND i.sender IS NOT DISTINCT FROM %s AND i.created = %s "
                    "ORDER BY i.id",
                    (prefix, wid, host, host, topic, sender, created))
                results[index] = [(watcher, int(row_id)) for watcher, row_id, msg_id in rows
                                  if msg_id not in earlier]
            elif op is Op.ADMIT:  # admitted by this transaction: at its time, running
                # (a retry that kept its earlier admission: updated at that time)
                entries = [wid for wid, _run in json.loads(params[1])]
                rows = self._query(
                    f"SELECT workflow_id FROM {self._s}.workflows WHERE workflow_id = ANY(%s) "
                    "AND (admitted = %s OR (updated = %s AND status <> 'pending'))",
                    (entries, params[5], params[5]))
                got = {row[0] for row in rows}
                results[index] = [wid for wid in entries if wid in got]
            elif op is Op.ENQUEUE:  # its queue row, if the workflow is this start's
                wid, run = params[0], params[1]
                rows = self._query(
                    f"SELECT q.seq FROM {self._s}.queue q JOIN {self._s}.workflows w "
                    "USING (workflow_id) WHERE q.workflow_id = %s AND w.run_id = %s",
                    (wid, run))
                results[index] = int(rows[0][0]) if rows else None
            elif op is Op.PUT_SCHEDULE:  # written by this transaction: at its time
                rows = self._query(
                    f"SELECT 1 FROM {self._s}.schedules WHERE schedule_id = %s "
                    "AND updated = %s AND source = %s", (params[0], params[12], params[10]))
                results[index] = bool(rows)
            elif op is Op.UPDATE_SCHEDULE:  # updated by this transaction: at its time
                rows = self._query(
                    f"SELECT 1 FROM {self._s}.schedules WHERE schedule_id = %s "
                    "AND updated = %s", (params[0], params[1]))
                results[index] = bool(rows)
        plan.results = results
        plan.error = None

    def _give_up(self, message: str) -> NoReturn:
        self._failed = StoreError(self.path, message + "; this store writes nothing more")
        raise self._failed

    def _check_usable(self) -> None:
        self._check_open()
        if self._failed is not None:
            raise self._failed


# ------------------------------------------------------------------ helpers
def cut_connection(conn: psycopg.Connection[Any] | None) -> None:
    """Shut ``conn``'s socket down (from any thread): a statement or a wait on it ends
    at once with a lost connection (a server that stopped answering, the socket still
    open, would hold it for ever). The socket itself is closed by its owner, later."""
    if conn is None or conn.closed:
        return
    try:
        fd = conn.pgconn.socket
        cut = socket.socket(fileno=os.dup(fd))
    except (psycopg.Error, OSError):  # (closed meanwhile: nothing waits on it)
        return
    try:
        # (closed between the two reads, its number taken by another file: left be)
        if not conn.closed and conn.pgconn.socket == fd:
            cut.shutdown(socket.SHUT_RDWR)
    except (psycopg.Error, OSError):
        pass
    finally:
        cut.close()


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


def _encode_journal(params: Sequence[Any]) -> list[Any]:
    """:func:`_encode` of an ``append_journal``'s ``(workflow_id, seq, kind, name,
    outcome, attempts, time)`` as the transaction makes them (else :func:`_encode`)."""
    wid, seq, kind, name, outcome, attempts, when = params
    if (type(wid) is str and type(seq) is int and type(kind) is str and type(name) is str
            and (outcome is None or type(outcome) is str) and type(attempts) is int
            and type(when) is float
            and "\x00" not in wid and "\x00" not in kind and "\x00" not in name
            and (outcome is None or "\x00" not in outcome)):
        return [wid.encode(), str(seq).encode(), kind.encode(), name.encode(),
                None if outcome is None else outcome.encode(), str(attempts).encode(),
                repr(when).encode()]
    return _encode(params, "append_journal")


def _array(values: Iterable[bytes | None]) -> bytes:
    """A PostgreSQL array literal (text format) of text-format values."""
    return b"{" + b",".join([
        b"NULL" if value is None
        else b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        for value in values]) + b"}"


def _ask(pg: Any, send: Any, *args: Any) -> _Gen[Any]:
    """Send one statement (``send``: a libpq ``send_*`` call, with ``args``) and return
    its result, yielding while the server has not answered (what libpq's blocking
    ``exec`` calls do, without blocking: psycopg's C ``exec`` and ``get_result`` also
    hold the GIL in libpq's wait, which would stop every thread of the process). A
    broken connection is :class:`_ConnectionLost`."""
    res = None
    try:
        send(*args)
        yield from _flush(pg)
        while True:
            got = yield from _next_result(pg)
            if got is None:
                break
            res = got
    except psycopg.OperationalError as exc:
        raise _ConnectionLost(_reason(exc)) from exc
    if res is None or pg.status == _BAD:
        message = res.error_message.decode("utf-8", "replace") if res is not None else ""
        raise _ConnectionLost(_reason(Exception(message)) or "connection lost")
    return res


def _flush(pg: Any) -> _Gen[None]:
    """Send what libpq holds (a large statement, or a slow link: the rest once the
    socket is writable; what the server sends meanwhile is read)."""
    while pg.flush():
        if (yield pg.socket, _RW) & _R:
            pg.consume_input()


def _next_result(pg: Any) -> _Gen[Any]:
    """``pg.get_result()``, yielding while the server has not answered."""
    while pg.is_busy():
        yield pg.socket, _R
        pg.consume_input()
    return pg.get_result()


def _pipeline(pg: Any, statements: list[tuple[bytes, list[Any]]]) -> _Gen[list[Any]]:
    """Send prepared ``statements`` in one pipeline ending with a Sync (ONE implicit
    transaction, one round trip); their results, yielding while the server has not
    answered. A broken connection is :class:`_ConnectionLost`."""
    out: list[Any] = []
    try:
        pg.enter_pipeline_mode()
        done = False
        try:
            for name, params in statements:
                pg.send_query_prepared(name, params)
            pg.pipeline_sync()
            yield from _flush(pg)
            while True:
                res = yield from _next_result(pg)
                if res is None:
                    if pg.status == _BAD:
                        break
                    continue
                if res.status == _PIPELINE_SYNC:
                    break
                out.append(res)
            done = True
        finally:
            if pg.status != _BAD:
                if done:
                    pg.exit_pipeline_mode()
                else:  # (abandoned: the connection is dropped)
                    with contextlib.suppress(psycopg.Error):
                        pg.exit_pipeline_mode()
    except psycopg.OperationalError as exc:
        raise _ConnectionLost(_reason(exc)) from exc
    if pg.status == _BAD:
        raise _ConnectionLost("connection lost")
    return out


def _poll(wait: tuple[int, int], timeout_ms: int) -> int:
    """Wait up to ``timeout_ms`` for ``wait``'s events; the events that came (0: none).
    (poll, not select: a node may hold more than select's 1,024 descriptors.)"""
    poller = select.poll()
    poller.register(*wait)
    ready = poller.poll(timeout_ms)
    return ready[0][1] if ready else 0


#: server errors that refuse a write for now, not for what it writes: a statement
#: cancelled (``statement_timeout``, ``lock_timeout``, an administrator's cancel), a
#: deadlock, a serialization failure. Nothing of the transaction committed.
_TRANSIENT = (pg_errors.QueryCanceled, pg_errors.LockNotAvailable,
              pg_errors.DeadlockDetected, pg_errors.SerializationFailure,
              # (a maintenance window, a failover: written again on a new session)
              pg_errors.ReadOnlySqlTransaction)


#: a session's ``lock_timeout`` set to ``%s`` (twice) unless the one it has is shorter;
#: the one it has then, in seconds
_LOCK_WAIT_AT_MOST = (
    "SELECT extract(epoch FROM (CASE WHEN current_setting('lock_timeout') = '0' OR "
    "current_setting('lock_timeout')::interval > %s::interval THEN "
    "set_config('lock_timeout', %s, false) ELSE current_setting('lock_timeout') "
    "END)::interval)")


def lock_wait_at_most(conn: psycopg.Connection[Any], seconds: float) -> float | None:
    """Set the session's ``lock_timeout`` to ``seconds`` (1 ms at least), unless the one
    it has (the server's, the database's or the role's) is shorter; the one it has
    then, in seconds."""
    wait = f"{max(1, round(seconds * 1000))}ms"
    row = conn.execute(_LOCK_WAIT_AT_MOST, (wait, wait)).fetchone()
    return float(row[0]) if row else None


def lock_wait_reason(error: pg_errors.LockNotAvailable, wait: float | None,
                     retried: float | None = None) -> str:
    """What a statement cancelled by ``lock_timeout`` (``wait`` seconds, if known;
    tried again for ``retried``) says: whose lock it waited for (the server's own words,
    ``canceling statement due to lock timeout``, say neither)."""
    waited = "" if wait is None else f" within {wait:g}s (lock_timeout)"
    again = "" if retried is None else f", tried again for {retried:g}s"
    return (f"a lock another session holds on the store's tables was not released"
            f"{waited}{again}: {error.diag.message_primary or _reason(error)} (a session "
            "left in a transaction, or maintenance: see pg_locks)")


def refused_for_now(error: BaseException | None) -> bool:
    """True if ``error`` (a plan's, or a statement's of the cluster) refuses its write
    for now: try it again later."""
    return error is not None and isinstance(error, _TRANSIENT)


def _is_fenced(error: BaseException) -> bool:
    return (isinstance(error, pg_errors.RaiseException)
            and error.diag.message_primary == "garrison:fenced")


def _result_of(call: _Call, res: Any) -> Any:
    if call.result == "created":
        return res.command_tuples == 1
    if call.result == "id":  # (a row with NULL: a function's "nothing", as enqueue's)
        value = res.get_value(0, 0) if res.ntuples else None
        return None if value is None else int(value)
    if call.result == "json":
        return json.loads(res.get_value(0, 0))
    if call.result == "rows":  # (watcher id, inbox row id) of each row put
        return [(res.get_value(i, 0).decode(), int(res.get_value(i, 1)))
                for i in range(res.ntuples)]
    return None  # pragma: no cover


def _result_error(res: Any) -> BaseException:
    return pg_errors.error_from_result(res, encoding="utf-8")


def _unwrap(plan: _Plan) -> list[Any]:
    if plan.error is not None:
        raise plan.error
    assert plan.results is not None
    return plan.results

