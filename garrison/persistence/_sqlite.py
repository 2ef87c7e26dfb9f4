"""The SQLite store: one file (WAL), one writer connection, one reader connection.

Write path
----------
Every write is a :class:`~garrison.persistence.Transaction`: a store-neutral list
of named operations built on the caller's thread (values are converted to JSON
there, so a ``PayloadError`` surfaces at the call that passed the value). This
module maps each operation to its SQL (``_OPS``) and commits the whole list inside
``BEGIN IMMEDIATE`` ... ``with conn:`` (COMMIT, or ROLLBACK on any error).

- ``store.write(tx)`` commits at once in the calling thread. In WAL mode with
  ``synchronous=NORMAL`` that costs about as much as a function call with a
  few syscalls: fine from the trio thread.
- ``await store.commit(tx)`` is group commit (``_group_commit.py``): commits
  waiting at one moment share one transaction. If the batch fails as a whole
  (for example the disk is full) every caller in it gets that error; if one
  caller's operations fail (say ``PromiseAlreadyCompleted``), the batch is
  rolled back and rewritten with a SAVEPOINT per caller, so only that caller
  gets its error and the others commit.
- A failure of the store itself (the disk is full, the file damaged, deleted or
  read-only) reaches the caller of ``write`` or ``commit`` as the
  :class:`~garrison.StoreError` that names the file and says what it means, SQLite's
  error as its ``__cause__`` (converted in the ``except`` clauses only); an error of
  the written operations themselves (an ``IntegrityError``, a
  ``PromiseAlreadyCompleted``) stays as it is.

The hot paths are plain ``conn.execute`` with fixed SQL: sqlite-utils'
``insert``/``upsert`` commit their own transaction, which would stop a journal
append, an inbox insert and a status update from committing together. The
schema is plain SQL too (see ``_schema.py``); sqlite-utils is imported only when
``SQLiteStore.db`` is asked for (a view for inspecting a store).

Reads use a second connection; in WAL mode they never wait for the writer and
see every committed transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import shutil
import sqlite3
import threading
import time as _time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import trio

from .._errors import (
    DedupKeyTaken,
    NoSuchWorkflow,
    PromiseAlreadyCompleted,
    StoreError,
    StoreVersionError,
)
from ..actors._values import Pid
from . import _file
from ._checkpoint import (
    BACKSTOP_PAGES,
    NORMAL_TARGET_FRAMES,
    TARGET_FRAMES,
    Checkpointer,
    preallocate_wal,
)
from ._converter import check_limit, check_search_filters, search_json
from ._group_commit import (
    NONE_RESULT,
    Busy,
    CommitRequest,
    GroupCommit,
    Strategy,
    fail_all,
    interrupted,
)
from ._prune import check_count, check_prune
from ._records import (
    FINAL_STATUSES,
    DamagedRecord,
    InboxRecord,
    JournalHead,
    JournalRecord,
    PromiseRecord,
    PromiseStatus,
    QueuePlace,
    QueueRecord,
    ResumeRows,
    ScheduleRecord,
    TimerRecord,
    WakeupRecord,
    WorkflowRecord,
    WorkflowStatus,
    group_resume_rows,
    journal_entries_of,
    journal_heads_select,
    journal_page_of,
    journal_page_select,
    journal_select,
    no_match,
    parse_status,
    state_digest,
)
from ._schema import SCHEMA_VERSION, check_garrison, check_tables, migrate, read_version
from ._shortcuts import StoreShortcuts
from ._store import Store
from ._transaction import Op, Transaction, WorkflowEnded, unix_seconds, workflow_changed

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["SQLiteStore", "check_store_file"]

log = logging.getLogger("garrison.store")
_T = TypeVar("_T")
_R = TypeVar("_R")

_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
#: how long the node's writer connection waits for a lock another connection holds
#: before the group commit takes the write to a worker thread (and retries there)
_OWNER_BUSY_MS = 10
#: how long the store's probe (``answers``) waits for a lock another connection holds:
#: a read that found the store locked has waited its busy timeout already
_ANSWER_BUSY_MS = 100
#: room left in a row beside its one large value (ids, names, numbers): SQLite's length
#: limit bounds a whole row as well as each string in it
_ROW_ROOM = 65_536
#: workflow ids per read of ``state_digests`` (SQLite bounds a statement's parameters)
_IN_CHUNK = 500
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


async def _no_results() -> list[Any]:
    return []


def check_store_file(path: str) -> None:
    """Whether a node could open the SQLite store at ``path`` (``garrison check``, the
    config's ``workflow.host`` stores), found without creating, locking or writing
    anything: :class:`~garrison.StoreError` (or :class:`~garrison.StoreVersionError`)
    as the node's open would raise it, for what can be told beforehand: a file that
    is not a store (empty, not SQLite, another application's database, a newer
    schema) or cannot be written, a folder where no file can be created. A missing
    file is fine: the node creates it. (A store another node holds is not a problem
    of the config: the node's open says so.)"""
    if not _file.probe(path, path):
        return
    # immutable: no lock, no -wal or -shm made, no journal read (the schema is in
    # the file from its creation on: a store is built complete, then linked there)
    uri = pathlib.Path(path).resolve().as_uri() + "?immutable=1"
    for attempt in (1, 2):
        try:
            conn = sqlite3.connect(uri, uri=True)
            try:
                check_garrison(conn, path)
                found = read_version(conn)
            finally:
                conn.close()
            break
        except sqlite3.Error as exc:
            if attempt == 1:  # a running node's checkpoint wrote the page it read
                _time.sleep(0.05)
                continue
            raise _file.store_error(path, path, exc, 0.0) from exc
    if found > SCHEMA_VERSION:
        raise StoreVersionError(path, found, SCHEMA_VERSION,
                                "it was written by a newer garrison; upgrade garrison")


def _read_only_query(file: str, path: str | None) -> str:
    """The URI query of a read-only open of the store ``file``: SQLite's ``mode=ro``,
    which reads through the store's ``-wal`` and ``-shm`` files, made if missing. On a
    read-only file system (a backup on a read-only mount) they cannot be made: unless
    both are there, ``immutable=1`` reads the file alone (no lock, no ``-shm``; nothing
    writes there), which holds the whole store when no ``-wal`` holds transactions
    not yet copied into it. Those SQLite reads only through a ``-shm``: a
    :class:`~garrison.StoreError` says so (rather than show the store without them)."""
    if not _file.read_only_fs(file):
        return "mode=ro"
    wal = str(pathlib.Path(file).resolve()) + "-wal"
    if os.path.exists(wal) and os.path.exists(wal[:-4] + "-shm"):
        return "mode=ro"
    try:
        logged = os.stat(wal).st_size
    except FileNotFoundError:
        logged = 0
    if logged:
        raise StoreError(path, f"it is on a read-only file system, and its write-ahead "
                               f"log {wal!r} ({logged} bytes) may hold transactions not yet "
                               "copied into it, which SQLite reads only through a -shm "
                               "file it cannot make there: copy the store's file with its "
                               "-wal to a writable folder and open the copy")
    return "immutable=1"


def _json_same(a: Any, b: Any) -> bool:
    """``a`` and ``b`` (decoded JSON) are the same value as PostgreSQL's ``jsonb``
    compares them: an object's keys in any order, a number equal to a number of the
    same value (``1`` and ``1.0``), ``true`` and ``false`` only themselves."""
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(_json_same(v, b[k]) for k, v in a.items()))
    if isinstance(a, list):
        return (isinstance(b, list) and len(a) == len(b)
                and all(_json_same(x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float):
        return isinstance(b, int | float) and a == b
    return type(a) is type(b) and bool(a == b)


def _undecodable(exc: sqlite3.OperationalError) -> bool:
    """SQLite's read failed on a text column that is not UTF-8 (a damaged store)."""
    return str(exc).startswith("Could not decode to UTF-8")


def _json_equal(stored: object, wanted: str) -> bool:
    """The SQL function ``garrison_json_equal``: a stored search attribute's object or
    array (its JSON text) against a filter's, by :func:`_json_same` (a comparison of
    their texts would tell ``{"a":1,"b":2}`` from ``{"b":2,"a":1}``, ``[1]`` from
    ``[1.0]``, where PostgreSQL's store matches them). A stored value that is no
    object or array (a number, as ``json_extract`` gives it) does not match: the
    filter's ``json_type`` test beside this call is not always evaluated first."""
    if type(stored) is not str:
        return False
    try:
        return _json_same(json.loads(stored), json.loads(wanted))
    except ValueError:  # (not JSON: written by hand)
        return False


def _text_or_bytes(value: bytes) -> str | bytes:
    """A text value as read for :meth:`SQLiteStore._query`'s ``raw_text``: its
    ``bytes`` when they are not UTF-8."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


def _raise_if_busy(conn: sqlite3.Connection, exc: sqlite3.OperationalError) -> None:
    """Raise :class:`Busy` (nothing committed, try again) if ``exc`` says the database
    is locked by another connection."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _BUSY_CODES:
        if conn.in_transaction:
            conn.rollback()
        raise Busy(str(exc)) from exc


def _end_open(conn: sqlite3.Connection) -> None:
    """Roll back a transaction an interrupt (a KeyboardInterrupt) left open: one that
    landed between ``BEGIN IMMEDIATE`` and the ``with conn:`` block that ends it. Left
    open, it would hold the file's write lock, fail every later ``BEGIN``, and take in
    a later write of one statement, reported committed, never to commit."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()

# ---------------------------------------------------------------- operations
# One function per :class:`~garrison.persistence.Op`: ``(connection, params) -> result``,
# run inside the transaction that ``write`` / the group commit opened. The params and
# results are the store-neutral ones documented in ``_transaction.py``.


def _create_workflow(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    cur = conn.execute(
        "INSERT OR IGNORE INTO workflows (workflow_id, name, status, input, parent, "
        "run_id, attempt, host, created, updated, search, memo, trace) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params,
    )
    return cur.rowcount == 1


#: the UPDATE of a workflow's row by the columns it sets (``Transaction.update_workflow``
#: names them from a fixed few): made once, not at every workflow's end
_UPDATES: dict[tuple[str, ...], str] = {}


def _update_workflow(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    workflow_id, updated, sets = params
    names = tuple([column for column, _ in sets])
    sql = _UPDATES.get(names)
    if sql is None:
        columns = "".join(f", {column} = ?" for column in names)
        sql = _UPDATES[names] = f"UPDATE workflows SET updated = ?{columns} WHERE workflow_id = ?"
    if conn.execute(sql, (updated, *[v for _, v in sets], workflow_id)).rowcount != 1:
        raise NoSuchWorkflow(workflow_id)


def _expect_workflow(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    workflow_id, status, attempt, _unclaimed = params  # (no owners here)
    row = conn.execute("SELECT status, attempt FROM workflows WHERE workflow_id = ?",
                       (workflow_id,)).fetchone()
    if row is None or (row[0], row[1]) != (status, attempt):
        raise workflow_changed(workflow_id, status, attempt)


def _expect_unfinished(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    (workflow_id,) = params  # (read under the write lock: nothing ends it meanwhile)
    row = conn.execute("SELECT status FROM workflows WHERE workflow_id = ?",
                       params).fetchone()
    if row is None:
        raise NoSuchWorkflow(workflow_id)
    if row[0] in FINAL_STATUSES:
        raise WorkflowEnded(workflow_id, row[0])


def _set_attributes(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    workflow_id, search_json, memo_json, now = params
    cur = conn.execute(
        "UPDATE workflows SET search = json_patch(search, ?), memo = json_patch(memo, ?), "
        "updated = ? WHERE workflow_id = ?",
        (search_json, memo_json, now, workflow_id),
    )
    if cur.rowcount != 1:
        raise NoSuchWorkflow(workflow_id)


def _reset_run(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    conn.execute("DELETE FROM journal WHERE workflow_id = ?", params)
    conn.execute("DELETE FROM timers WHERE workflow_id = ?", params)


def _delete_workflow(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    for table in ("journal", "inbox", "timers", "promises", "state", "monitors", "queue"):
        conn.execute(f"DELETE FROM {table} WHERE workflow_id = ?", params)
    conn.execute("DELETE FROM workflows WHERE workflow_id = ?", params)


def _deliver(conn: sqlite3.Connection, params: tuple[Any, ...]) -> int | None:
    if len(params) > 9:  # ``if_unfinished``
        cur = conn.execute(
            "INSERT OR IGNORE INTO inbox (workflow_id, msg_id, topic, payload, sender, kind, "
            "call_ref, created, trace) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS ("
            "SELECT 1 FROM workflows WHERE workflow_id = ? "
            "AND status NOT IN ('completed', 'failed', 'cancelled'))",
            (*params[:9], params[0]))
        return cur.lastrowid if cur.rowcount == 1 else None
    cur = conn.execute(
        "INSERT OR IGNORE INTO inbox (workflow_id, msg_id, topic, payload, sender, kind, "
        "call_ref, created, trace) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params,
    )
    return cur.lastrowid if cur.rowcount == 1 else None


def _deliver_to_monitors(conn: sqlite3.Connection, params: tuple[Any, ...]
                         ) -> list[tuple[str, int]]:
    workflow_id, prefix, msg_prefix, topic, payload, sender, created = params
    rows = conn.execute(
        "INSERT OR IGNORE INTO inbox (workflow_id, msg_id, topic, payload, sender, kind, "
        "created) SELECT w.workflow_id, ? || w.workflow_id, ?, ?, ?, 'event', ? "
        "FROM monitors m JOIN workflows w "
        "ON w.workflow_id = substr(m.watcher, instr(m.watcher, '/') + 1) "
        "WHERE m.workflow_id = ? AND (? = '' OR substr(m.watcher, 1, ?) = ?) "
        "AND w.status NOT IN ('completed', 'cancelled') "
        "ORDER BY m.created, m.watcher RETURNING workflow_id, id",
        (msg_prefix, topic, payload, sender, created, workflow_id, prefix, len(prefix),
         prefix),
    ).fetchall()
    return sorted(rows, key=lambda row: row[1])


def _failed(conn: sqlite3.Connection, workflow_id: str) -> bool:
    row = conn.execute("SELECT status FROM workflows WHERE workflow_id = ?",
                       (workflow_id,)).fetchone()
    return row is not None and row[0] == "failed"


def _consume(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    # a receive's (seq > 0) journal record holds the message: the row keeps its id (a
    # message sent again is dropped), its reply, not its payload (see Transaction.consume)
    cur = conn.execute(
        "UPDATE inbox SET consumed_seq = ?1, "
        "payload = CASE WHEN ?1 > 0 THEN 'null' ELSE payload END, "
        "trace = CASE WHEN ?1 > 0 THEN NULL ELSE trace END "
        "WHERE id = ?2 AND workflow_id = ?3 AND consumed_seq IS NULL",
        params[:3],
    )
    if cur.rowcount != 1 and len(params) == 3:  # (``if_pending``: a 4th)
        _seq, inbox_id, workflow_id = params
        raise ValueError(
            f"inbox row {inbox_id} is not a pending message of workflow {workflow_id!r}"
        )


def _complete_promise(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    workflow_id, name, status, value, error, when = params
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
    if conn.execute("SELECT 1 FROM workflows WHERE workflow_id = ?", (workflow_id,)).fetchone() \
            is None:
        raise NoSuchWorkflow(workflow_id)
    conn.execute(
        "INSERT INTO promises (workflow_id, name, status, value, error, created, completed) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (workflow_id, name, status, value, error, when, when),
    )


def _enqueue(conn: sqlite3.Connection, params: tuple[Any, ...]) -> int | None:
    workflow_id, run_id, priority, dedup, enqueued = params
    if conn.execute("SELECT 1 FROM workflows WHERE workflow_id = ? AND run_id = ?",
                    (workflow_id, run_id)).fetchone() is None:
        return None  # not this start's workflow: its create was a no-op
    if dedup is not None:
        row = conn.execute("SELECT workflow_id FROM queue WHERE dedup = ?", (dedup,)).fetchone()
        if row is not None and row[0] != workflow_id:
            raise DedupKeyTaken(dedup, row[0])
    cur = conn.execute(
        "INSERT INTO queue (workflow_id, priority, dedup, enqueued) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (workflow_id) DO NOTHING",
        (workflow_id, priority, dedup, enqueued),
    )
    if cur.rowcount == 1:
        return cur.lastrowid
    seq: int = conn.execute("SELECT seq FROM queue WHERE workflow_id = ?",
                            (workflow_id,)).fetchone()[0]
    return seq


#: the statuses of a workflow that holds a slot of its host (running or parked)
_HOLDING = "('running', 'waiting', 'sleeping')"


def _admit(conn: sqlite3.Connection, params: tuple[Any, ...]) -> list[str]:
    host, entries_json, max_running, rate_count, rate_period, now = params
    entries = json.loads(entries_json)
    room = len(entries)
    if max_running is not None:
        running = conn.execute(f"SELECT count(*) FROM workflows WHERE host = ? AND status IN "
                               f"{_HOLDING}", (host,)).fetchone()[0]
        room = min(room, max_running - running)
    # the rate: the admissions of its period, and those this batch adds to them
    rate_room = None
    if rate_count is not None:
        recent = conn.execute("SELECT count(*) FROM workflows WHERE host = ? AND admitted > ?",
                              (host, now - rate_period)).fetchone()[0]
        rate_room = rate_count - recent
    # a retry whose earlier admission is inside the rate's period keeps its time: that
    # admission counts for it (see ``Transaction.admit``), in ``recent`` already, so its
    # admission adds none to the period (it is admitted only while the rate has room, as
    # it would be alone: a batch admits what its workflows one at a time would)
    kept_after = None if rate_count is None else now - rate_period
    admitted: list[str] = []
    added = 0
    for workflow_id, run_id in entries:
        if len(admitted) >= room or (rate_room is not None and added >= rate_room):
            break
        row = conn.execute(
            "UPDATE workflows SET status = 'running', updated = ?, admitted = CASE WHEN "
            "? IS NOT NULL AND admitted > ? THEN admitted ELSE ? END "
            "WHERE workflow_id = ? AND run_id = ? AND status = 'pending' "
            "RETURNING admitted = ?",
            (now, kept_after, kept_after, now, workflow_id, run_id, now)).fetchone()
        if row is not None:
            admitted.append(workflow_id)
            added += 1 if row[0] else 0  # (one that kept its time: not a new admission)
    return admitted


def _slot_freed(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    """One node per SQLite store: nobody else to tell."""


_SCHEDULE_SPEC = ("host", "workflow", "input", "cron", "every", "timezone", "overlap",
                  "catchup_window", "source", "updated")

#: an existing schedule keeps its next tick when its timing is unchanged (decided on the
#: row the write finds: an update read before a tick was recorded writes back nothing)
_PUT_SCHEDULE = (
    "INSERT INTO schedules (schedule_id, host, workflow, input, cron, every, timezone, "
    "overlap, catchup_window, next_tick, source, created, updated) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (schedule_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _SCHEDULE_SPEC)
    + ", next_tick = CASE WHEN schedules.cron IS excluded.cron AND schedules.every IS "
    "excluded.every AND schedules.timezone IS excluded.timezone THEN schedules.next_tick "
    "ELSE excluded.next_tick END "
    # a config schedule is the config's: only its own put replaces it (decided on the
    # row as the write finds it: a node.schedule that read no config schedule loses)
    "WHERE excluded.source = 'config' OR schedules.source <> 'config'")


def _put_schedule(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    return bool(conn.execute(_PUT_SCHEDULE, params).rowcount == 1)


def _update_schedule(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    schedule_id, updated, sets, expect = params
    sql = "UPDATE schedules SET updated = ?" + "".join(f", {c} = ?" for c, _ in sets) + \
        " WHERE schedule_id = ?"
    args = [updated, *(v for _, v in sets), schedule_id]
    for column, value in expect:  # next_tick: a tick, only of a schedule not paused
        sql += f"{' AND paused = 0' if column == 'next_tick' else ''} AND {column} IS ?"
        args.append(value)
    return bool(conn.execute(sql, args).rowcount == 1)


_APPEND_JOURNAL = ("INSERT INTO journal (workflow_id, seq, kind, name, outcome, attempts, time) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)")


def _statement(sql: str) -> Callable[[sqlite3.Connection, tuple[Any, ...]], None]:
    def op(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
        conn.execute(sql, params)

    return op


def _dequeue(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    # the key its row held stays on the workflow's row: a retry takes it back
    row = conn.execute("SELECT dedup FROM queue WHERE workflow_id = ?", params).fetchone()
    if row is None:
        return
    if row[0] is not None:
        conn.execute("UPDATE workflows SET dedup = ? WHERE workflow_id = ?", (row[0], *params))
    conn.execute("DELETE FROM queue WHERE workflow_id = ?", params)


_OPS: dict[Op, Callable[[sqlite3.Connection, tuple[Any, ...]], Any]] = {
    Op.CREATE_WORKFLOW: _create_workflow,
    Op.UPDATE_WORKFLOW: _update_workflow,
    Op.EXPECT_WORKFLOW: _expect_workflow,
    Op.EXPECT_UNFINISHED: _expect_unfinished,
    Op.SET_ATTRIBUTES: _set_attributes,
    Op.RESET_RUN: _reset_run,
    Op.DELETE_WORKFLOW: _delete_workflow,
    Op.APPEND_JOURNAL: _statement(_APPEND_JOURNAL),
    Op.DELIVER: _deliver,
    Op.DELIVER_TO_MONITORS: _deliver_to_monitors,
    Op.CONSUME: _consume,
    Op.ADD_TIMER: _statement(
        "INSERT OR REPLACE INTO timers (workflow_id, seq, deadline, kind) "
        "VALUES (?, ?, ?, ?)"
    ),
    Op.REMOVE_TIMER: _statement("DELETE FROM timers WHERE workflow_id = ? AND seq = ?"),
    Op.RECORD_REPLY: _statement(
        "UPDATE inbox SET reply = ? WHERE msg_id = ? AND workflow_id = ?"),
    Op.CREATE_PROMISE: _statement(
        "INSERT OR IGNORE INTO promises (workflow_id, name, status, created) "
        "VALUES (?, ?, 'pending', ?)"
    ),
    Op.COMPLETE_PROMISE: _complete_promise,
    Op.SET_STATE: _statement(
        "INSERT OR REPLACE INTO state (workflow_id, key, value, updated) VALUES (?, ?, ?, ?)"
    ),
    Op.ADD_MONITOR: _statement(
        "INSERT OR IGNORE INTO monitors (workflow_id, watcher, created) VALUES (?, ?, ?)"
    ),
    Op.REMOVE_MONITOR: _statement("DELETE FROM monitors WHERE workflow_id = ? AND watcher = ?"),
    Op.FORGET_MONITORS: _statement("DELETE FROM monitors WHERE workflow_id = ?"),
    Op.TRUNCATE_JOURNAL: _statement("DELETE FROM journal WHERE workflow_id = ? AND seq >= ?"),
    Op.ENQUEUE: _enqueue,
    Op.DEQUEUE: _dequeue,
    Op.ADMIT: _admit,
    Op.SLOT_FREED: _slot_freed,
    Op.PUT_SCHEDULE: _put_schedule,
    Op.UPDATE_SCHEDULE: _update_schedule,
    Op.DELETE_SCHEDULE: _statement("DELETE FROM schedules WHERE schedule_id = ?"),
}
assert set(_OPS) == set(Op), "every operation has its SQL"

_APPEND = Op.APPEND_JOURNAL

#: operations that are ONE SQL statement: a transaction of one of them alone is that
#: statement in SQLite's own implicit transaction (autocommit), without a BEGIN and a
#: COMMIT of its own to run (a commit is as durable either way; on an error, or when
#: it changes nothing, the statement changes nothing)
_ONE_STATEMENT = frozenset({Op.APPEND_JOURNAL, Op.CREATE_WORKFLOW, Op.UPDATE_WORKFLOW,
                            Op.DELIVER})


#: how often the wakeup watcher looks at the table when no tool rang the doorbell, and
#: where no doorbell could be made (seconds)
POLL_RUNG = 1.0
POLL_UNRUNG = 0.01
#: how often the wakeup watcher checks that the store's file is still the one opened
FILE_CHECK_INTERVAL = 1.0
#: the first pause before the node takes the wakeups again when a tool was writing (it
#: doubles, up to a second, while the tool holds the store's write lock)
BUSY_PAUSE = 0.005
#: how long a store's close waits for its wakeup watcher to close its connection
WATCHER_GONE = 1.0
#: a node's start waiting for the write lock another connection holds: how often it
#: tries the lock, and after how long it says what it waits for (seconds)
LOCKED_POLL = 0.1
LOCKED_WARNING = 1.0



def _status_in(status: str | Iterable[str], params: list[Any]) -> str:
    """The condition of a workflow read or count filtered by status (one or several),
    its parameters appended to ``params``."""
    statuses = [status] if isinstance(status, str) else list(status)
    params.extend(parse_status(s).value for s in statuses)
    return f"status IN ({', '.join('?' * len(statuses))})"

#: the term of ``workflows_ended``'s WHERE, word for word: SQLite uses a partial index
#: only for a query whose WHERE holds that term
_ENDED = "w.status IN ('completed', 'failed', 'cancelled')"
#: an ended workflow none of whose children a node's start would ask
#: (``Store.children_of_ended``: an unfinished child of a ``failed`` one, one not
#: flagged of a ``cancelled`` one), over ``workflows_by_parent``: a parent pruned
#: before they were asked left them running for good, nothing reading them again
_NO_UNASKED = ("NOT EXISTS (SELECT 1 FROM workflows c WHERE "
               "c.parent = w.host || '/' || w.workflow_id "
               "AND c.status NOT IN ('completed', 'failed', 'cancelled') "
               "AND (w.status = 'failed' OR w.status = 'cancelled' "
               "AND COALESCE(c.cancel_requested, 0) = 0))")
#: a workflow kept by a prune (``Store.prune_ended``): one whose parent workflow is in
#: the store, a schedule's last run, or one with children a start would ask
_NOT_KEPT = ("(w.parent IS NULL OR NOT EXISTS (SELECT 1 FROM workflows p WHERE "
             "p.workflow_id = substr(w.parent, instr(w.parent, '/') + 1))) "
             "AND w.workflow_id NOT IN (SELECT last_workflow FROM schedules "
             f"WHERE last_workflow IS NOT NULL) AND {_NO_UNASKED}")
_PRUNE_SELECT = (
    f"SELECT w.updated, w.workflow_id, w.host FROM workflows w WHERE {_ENDED} "
    "AND w.status = ? AND w.updated < ? AND (? IS NULL OR w.host = ?) "
    f"AND (w.updated, w.workflow_id) > (?, ?) AND {_NOT_KEPT} "
    "ORDER BY w.updated, w.workflow_id LIMIT ?")
#: the tables whose rows a workflow owns, by its id (``workflows`` last: their rows
#: reference it)
_OWNED = ("journal", "inbox", "timers", "promises", "state", "monitors", "queue")


#: the journal records one prune transaction deletes at most (past its first workflow):
#: SQLite has one write lock, which a tool's write beside the node waits for as long as
#: its busy timeout, so a batch of workflows with long journals is cut into several
PRUNE_TX_RECORDS = 20_000


def _within_records(conn: sqlite3.Connection, rows: list[Any]) -> list[Any]:
    """The first of ``rows`` (workflows chosen to prune) whose journals hold
    :data:`PRUNE_TX_RECORDS` records at most together (one at least); a journal's
    length is read as its last seq (one seek of its key each)."""
    total = 0
    for i, (_updated, wid, _host) in enumerate(rows):
        (last,) = conn.execute("SELECT max(seq) FROM journal WHERE workflow_id = ?",
                               (wid,)).fetchone()
        total += 1 if last is None else last + 1
        if total > PRUNE_TX_RECORDS and i:
            return rows[:i]
    return rows


def _prune_batch(conn: sqlite3.Connection, status: str, before: float, host: str | None,
                 after: tuple[float, str], limit: int) -> tuple[list[tuple[float, str]], bool]:
    """``Store.prune_ended`` on ``conn``: one ``BEGIN IMMEDIATE`` transaction (the
    choice and the deletes under the write lock); True beside the rows when it cut the
    choice (:func:`_within_records`): more may follow them."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        with conn:
            chosen = conn.execute(_PRUNE_SELECT,
                                  (status, before, host, host, *after, limit)).fetchall()
            if not chosen:
                return [], False
            rows = _within_records(conn, chosen)
            ids = [wid for _updated, wid, _host in rows]
            marks = ", ".join("?" * len(ids))
            for table in _OWNED:
                conn.execute(f"DELETE FROM {table} WHERE workflow_id IN ({marks})", ids)
            pids = [f"{h}/{wid}" for _updated, wid, h in rows if h is not None]
            if pids:
                conn.execute(f"DELETE FROM monitors WHERE watcher IN "
                             f"({', '.join('?' * len(pids))})", pids)
            conn.execute(f"DELETE FROM wakeups WHERE kind <> 'schedule' AND workflow_id IN "
                         f"({marks})", ids)
            conn.execute(f"DELETE FROM workflows WHERE workflow_id IN ({marks})", ids)
            return [(updated, wid) for updated, wid, _host in rows], len(rows) < len(chosen)
    except BaseException:
        _end_open(conn)
        raise


def _count_prunable(conn: sqlite3.Connection, statuses: list[str], before: float,
                    host: str | None) -> int:
    """``Store.count_prunable`` on ``conn``: the workflows a prune finds at once, and
    their children, grandchildren... that it would find once they are gone."""
    wanted = ", ".join(f"'{status}'" for status in statuses)  # (checked: PRUNABLE's)
    choice = (f"{_ENDED} AND w.status IN ({wanted}) AND w.updated < ? "
              "AND (? IS NULL OR w.host = ?)")
    query = (
        "WITH RECURSIVE gone(workflow_id, host) AS ("
        f"SELECT w.workflow_id, w.host FROM workflows w WHERE {choice} AND {_NOT_KEPT} "
        "UNION SELECT w.workflow_id, w.host FROM gone g JOIN workflows w "
        f"ON w.parent = g.host || '/' || g.workflow_id WHERE {choice} "
        "AND w.workflow_id NOT IN (SELECT last_workflow FROM schedules "
        f"WHERE last_workflow IS NOT NULL) AND {_NO_UNASKED}) SELECT count(*) FROM gone")
    return int(conn.execute(query, (before, host, host, before, host, host)).fetchone()[0])


#: whether this SQLite has ``octet_length`` (3.43 on): a text's size without reading it
_OCTET_LENGTH = sqlite3.sqlite_version_info >= (3, 43)

class SQLiteStore(StoreShortcuts):
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
    once and also leave a wakeup row, and ring the node's doorbell (a FIFO at
    ``<resolved path>.wake``, made by the node and removed as it closes): the
    node holding the lock picks them up at once with :meth:`take_wakeups`. An
    unlocked opener never creates or migrates a database (a missing file is
    ``FileNotFoundError``).

    What is at ``path`` is checked before it is used: an empty (truncated) file,
    a file that is not a SQLite database, another application's database, a
    store missing tables, a damaged file, or one the operating system refuses
    (read-only file system, no permission) raise :class:`~garrison.StoreError`
    naming the file and the problem, and nothing is written to it. While the
    store is open, :meth:`check_file` tells whether the file is still the one
    opened.

    ``readonly=True`` (implies ``lock=False``) opens the file read-only (SQLite's
    ``mode=ro``): nothing can be written through the store (a write raises
    :class:`~garrison.StoreError`) and the database file is never modified, also when
    its ``-wal`` holds transactions not yet copied into it (a read-only connection
    never checkpoints). ``garrison workflows replay`` and ``export`` open stores this
    way, so they may run on a copy of a production store, or beside its node. On a
    read-only file system it reads the file alone where SQLite cannot make its ``-shm``
    (see :func:`_read_only_query`).

    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: str = "normal",
        lock: bool = True,
        readonly: bool = False,
        busy_timeout: float = 5.0,
        mode: int = _file.DEFAULT_MODE,
        busy_retry: float = 60.0,
    ) -> None:
        if not isinstance(synchronous, str) or synchronous.lower() not in _SYNCHRONOUS:
            raise ValueError(
                f"invalid synchronous mode {synchronous!r}: expected 'normal' "
                "(survives a killed process) or 'full' (also survives power loss)"
            )
        if path is not None and not isinstance(path, str | os.PathLike):
            raise TypeError(f"SQLiteStore(path): a file path (str or os.PathLike) or None, "
                            f"got {type(path).__name__}: {path!r}")
        if isinstance(path, str) and (not path.strip() or path == ":memory:"
                                      or path.startswith("file:")):
            raise ValueError(f"SQLiteStore({path!r}): expected a file path, not an SQLite "
                             "name; an in-memory store is SQLiteStore() (store=None)")
        dsn = _file.keyword_dsn(path)
        if dsn is not None:
            raise ValueError(dsn)
        if readonly and path is None:
            raise ValueError("readonly=True needs a store file (an in-memory store starts empty)")
        self.synchronous = synchronous.lower()
        #: the mode new files of this store are created with
        self.mode = _file.check_mode(mode)
        self.locked = False
        self._lock_fd: int | None = None
        self._lock_file: str | None = None
        self._tempdir: str | None = None
        #: holds the lock of ``_tempdir`` (see ``_file.py``: In memory)
        self._tempdir_fd: int | None = None
        self._closed = False
        self._closing = threading.Event()  # stops the wakeup watcher thread
        #: when the wakeup watcher last ran :meth:`check_file` (``time.monotonic()``)
        self._file_checked = _time.monotonic()
        #: the store became unusable for good (its file deleted or replaced)
        self._failure: StoreError | None = None
        self._notify_node = False
        #: the node's doorbell, which tools ring after writing for it (``_file.py``),
        #: made by the node's store (``None``: its watcher polls the wakeups table)
        self._doorbell: str | None = None
        #: the node's own end of it, open while the store is: the watcher waits on a
        #: copy, and the close rings through it (its name may lead elsewhere by then)
        self._bell_fd: int | None = None
        self._bell_lock = threading.Lock()
        #: wakeup watchers running (each with a connection of its own), and their end
        self._watchers = 0
        self._watchers_gone = threading.Condition(self._bell_lock)
        #: a tool's store: the doorbell of the node it writes for
        self._ring: str | None = None
        if path is None:
            self.path: str | None = None
            self._tempdir, self._tempdir_fd = _file.scratch_folder()
            file = os.path.join(self._tempdir, "store.db")
            pragma_sync = "OFF"
        else:
            self.path = os.fspath(path)
            file = self.path
            pragma_sync = _SYNCHRONOUS[self.synchronous]
            self._notify_node = not lock or readonly
            if not lock and not readonly:
                self._ring = _file.doorbell_file(self.path)
        #: opened read-only: every write raises StoreError, the file is never modified
        self.readonly = bool(readonly)
        if readonly:
            lock = False
        self._file = file
        conns: list[sqlite3.Connection] = []
        made_lock = False  # this open made the lock file: one that fails removes it
        try:
            try:
                if lock and self.path is not None:
                    made_lock = not os.path.exists(_file.lock_file(self.path))
                    self._lock_fd, self._lock_file = _file.take_lock(self.path, self.mode)
                    self.locked = True
                if not _file.existing(file, self.path):
                    if self._notify_node:
                        raise FileNotFoundError(
                            f"no garrison store at {self.path!r}: a store opened with "
                            "lock=False or readonly=True (a client, a tool) only opens one "
                            "that exists; a node creates it the first time it opens it "
                            "(garrison.open_node(store=PATH), `garrison run CONFIG --store "
                            "PATH`)")
                    _file.create(
                        file, self.path, self.mode,
                        lambda new: self._build(new, pragma_sync, busy_timeout),
                    )  # fmt: skip
                query = _read_only_query(file, self.path) if self.readonly else None
                self._conn = self._connect(file, busy_timeout, query)
                conns.append(self._conn)
                self._prepare(self._conn, pragma_sync)
                self._reader = self._connect(file, busy_timeout, query)
                conns.append(self._reader)
                self._identity = _file.identity(file, self.path)
            except sqlite3.Error as exc:
                raise _file.store_error(self.path, file, exc, busy_timeout,
                                        self.readonly) from exc
        except BaseException:
            for conn in conns:
                conn.close()
            if made_lock and self._lock_file is not None:  # (held: nobody else uses it)
                with contextlib.suppress(OSError):
                    os.unlink(self._lock_file)
            self._release()
            raise
        self.value_limit = self._conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) - _ROW_ROOM
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        #: the node's connection that prunes ended workflows (made at the first prune),
        #: and its lock
        self._pruner: sqlite3.Connection | None = None
        self._prune_lock = threading.Lock()
        self._busy_timeout = busy_timeout
        if lock and self.path is not None:
            # the node's commits run in the trio thread: never wait there for a lock
            # another connection holds; the group commit waits for it in a worker thread
            self._conn.execute(f"PRAGMA busy_timeout={_OWNER_BUSY_MS}")
        #: WAL checkpoints in a thread of their own (``_checkpoint.py``): the node's store
        self._checkpointer: Checkpointer | None = None
        if self.locked and not self.readonly:
            self._conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            self._checkpointer = Checkpointer(
                lambda: sqlite3.connect(file, timeout=busy_timeout, check_same_thread=False),
                self._write_lock, TARGET_FRAMES if self.synchronous == "full"
                else NORMAL_TARGET_FRAMES)
            if self.synchronous == "full":  # every commit fsyncs the WAL: see preallocate_wal
                preallocate_wal(self._conn, file)
        if self.path is None or self._notify_node:
            strategy = Strategy.IMMEDIATE  # in memory, or a tool writing for a node
        elif self.synchronous == "full":
            strategy = Strategy.THREAD  # the fsync runs while the node keeps running
        else:
            strategy = Strategy.INLINE
        self._group = GroupCommit(self._write_now, self._write_batch, strategy,
                                  retry_for=busy_retry, unusable=self._stayed_busy)
        if self.locked and not self.readonly and self.path is not None:
            made = _file.make_doorbell(self.path, file)
            if made is not None:
                self._doorbell, self._bell_fd = made
        self._stats = {
            "transactions": 0,
            "sync_writes": 0,
            "batches": 0,
            "batched_writes": 0,
            "largest_batch": 0,
            "failed_batches": 0,
        }

    def _prepare(self, conn: sqlite3.Connection, pragma_sync: str) -> None:
        """Refuse another application's database (before anything writes to it), then
        WAL mode, the synchronous level, migrations and the check of every table."""
        check_garrison(conn, self.path)
        if self.readonly:  # a store is always in WAL mode; nothing may be set here
            migrate(conn, self.path or ":memory:", allow_migrate=False)
            check_tables(conn, self.path)
            return
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":  # pragma: no cover - only on odd filesystems
            raise StoreError(self.path, f"cannot enable WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={pragma_sync}")
        found = migrate(conn, self.path or ":memory:", allow_migrate=not self._notify_node)
        check_tables(conn, self.path)
        if 0 < found < SCHEMA_VERSION:
            # The migrated schema into the file itself, not only the -wal: the config
            # check (check_store_file, an older garrison's too) reads the file alone, and
            # a node killed before a checkpoint left it saying the old version there, so
            # an older garrison's check said ok to a store its node then refused. (A
            # passive checkpoint: it waits for no reader; a tool reading stops none.)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _build(self, file: str, pragma_sync: str, busy_timeout: float) -> None:
        """A new store's file: the schema in WAL mode, checkpointed into the file before
        it is closed (so it leaves no -wal). A checkpoint that cannot finish (a disk too
        full for the file to grow: the WAL took the schema, the file could not) is an
        error here; closing would have dropped it silently, and the incomplete file
        been linked into place, a "damaged" store where none had been."""
        conn = self._connect(file, busy_timeout)
        try:
            self._prepare(conn, pragma_sync)
            busy, wal_pages, copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy or wal_pages != copied:
                full = sqlite3.OperationalError(
                    f"the new store's write-ahead log could not be copied into it "
                    f"({copied} of {wal_pages} pages)")
                full.sqlite_errorcode = sqlite3.SQLITE_FULL
                raise full
        finally:
            conn.close()

    @staticmethod
    def _connect(file: str, busy_timeout: float, query: str | None = None
                 ) -> sqlite3.Connection:
        """A connection to ``file``; ``query``: opened by URI with that query (a
        read-only open's, see :func:`_read_only_query`)."""
        target = file if query is None else pathlib.Path(file).resolve().as_uri() + "?" + query
        conn = sqlite3.connect(
            target, isolation_level=None, check_same_thread=False, timeout=busy_timeout,
            uri=query is not None,
        )
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.create_function("garrison_json_equal", 2, _json_equal, deterministic=True)
        return conn

    def check_file(self) -> None:
        """Raise :class:`~garrison.StoreError` if the store's file is no longer the
        one this store opened: deleted, replaced (another file renamed over it),
        truncated to 0 bytes, or its lock file deleted or replaced.

        A node writing to a deleted file carries on without error (into an inode no
        path reaches) and loses everything it wrote when it closes; this tells.
        Cheap (a ``stat`` of the file and of the lock file): call it after a write
        error and periodically. A store opened with ``lock=False`` (a tool, such as
        ``garrison ui``, that may stay open for days) calls it before every write
        transaction and every read, so that nothing lands in, or is read from, a file
        an operator has replaced (``mv backup.db store.db``) or deleted meanwhile.
        """
        self._check_open()
        _file.check_identity(
            self._file, self.path, self._identity, self._lock_fd, self._lock_file,
            tool=self._notify_node,
        )

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Close both connections, release the lock, delete an in-memory store's file."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        with self._bell_lock:
            if self._bell_fd is not None:  # the watcher thread stops
                with contextlib.suppress(OSError):  # (full: it is rung already)
                    os.write(self._bell_fd, b"\0")
            # its connection closes before ours: two connections closing at once each see
            # the other still open, and neither removes the WAL and its index
            self._watchers_gone.wait_for(lambda: not self._watchers, timeout=WATCHER_GONE)
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._prune_lock:
            if self._pruner is not None:
                self._pruner.close()
                self._pruner = None
        with self._write_lock:
            self._conn.close()
        with self._read_lock:
            self._reader.close()
        self._release()

    def _release(self) -> None:
        if self._doorbell is not None:
            _file.remove_doorbell(self._doorbell)  # with the lock still held: ours to remove
            self._doorbell = None
        with self._bell_lock:  # (a watcher thread starting now must not copy it)
            if self._bell_fd is not None:
                os.close(self._bell_fd)
                self._bell_fd = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
            self.locked = False
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None
        if self._tempdir_fd is not None:
            os.close(self._tempdir_fd)
            self._tempdir_fd = None

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "<memory>"
        return f"<SQLiteStore {where!r} synchronous={self.synchronous} locked={self.locked}>"

    @property
    def schema_version(self) -> int:
        """The schema version this store is at."""
        return SCHEMA_VERSION

    @property
    def db(self) -> sqlite_utils.Database:
        """A sqlite-utils view of the store's writer connection, for inspecting it
        (``store.db.table_names()``, ``store.db["journal"].count``). Write through
        :class:`Transaction` only: a write here bypasses the group commit. (sqlite-utils
        is imported on the first use: it imports numpy and pandas when installed.)"""
        import sqlite_utils

        return sqlite_utils.Database(self._conn)

    # -- writing -----------------------------------------------------------

    def _apply(self, tx: Transaction) -> list[Any]:
        conn = self._conn
        ops = _OPS
        results = [ops[op](conn, params) for op, params in tx.ops]
        if self._notify_node:
            now = _time.time()
            woken = dict.fromkeys(tx.workflow_ids)
            for (op, _params), result in zip(tx.ops, results, strict=True):
                if op is Op.DELIVER_TO_MONITORS:  # the watchers it delivered to, too
                    # (but a failed one: its EXIT waits in its inbox for a retry)
                    woken.update(dict.fromkeys(
                        watcher for watcher, _row in result
                        if not _failed(conn, watcher)))
            conn.executemany(
                "INSERT INTO wakeups (workflow_id, kind, created) VALUES (?, ?, ?)",
                [(wid, "tool", now) for wid in woken if wid]
                + [(sid, "schedule", now) for sid in dict.fromkeys(tx.schedule_ids)],
            )
        return results

    def write(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` now, in the calling thread, as one transaction.

        Returns each operation's result; raises the first error (nothing of
        ``tx`` is then committed). While another connection holds the write lock it
        waits (up to ``busy_timeout`` seconds, then :class:`~garrison.StoreError`).
        """
        if not tx.ops:
            return []
        self._check_writable()
        return self._while_busy(self._write_now, tx)

    def _while_busy(self, attempt: Callable[[_T], _R], arg: _T) -> _R:
        """``attempt(arg)`` until it is not :class:`Busy` (another connection holds the
        write lock), pausing ever longer between tries, for ``busy_timeout`` seconds at
        most (then :class:`~garrison.StoreError`)."""
        deadline = _time.monotonic() + self._busy_timeout
        pause = 0.002
        while True:
            try:
                return attempt(arg)
            except Busy as exc:
                if _time.monotonic() + pause > deadline:
                    raise self._stayed_busy(exc, self._busy_timeout) from exc.__cause__
                _time.sleep(pause)
                pause = min(pause * 2, 0.25)

    def _write_now(self, tx: Transaction) -> list[Any]:
        """One attempt at committing ``tx``; :class:`Busy` if the database is locked
        by another connection. (One function: a workflow step written alone, the
        common case, comes through here.)"""
        conn = self._conn
        ops = tx.ops
        with self._write_lock:
            if self._closed:
                self._check_open()
            if self._notify_node:  # a tool's store: still the file at its path?
                self.check_file()
            try:
                # one operation alone of _ONE_STATEMENT is its own transaction
                op = ops[0][0] if len(ops) == 1 and not self._notify_node else None
                if op is _APPEND:  # (a step's record: the SQL without _OPS' closure)
                    conn.execute(_APPEND_JOURNAL, ops[0][1])
                    results: list[Any] = [None]
                elif op in _ONE_STATEMENT:
                    results = [_OPS[op](conn, ops[0][1])]
                else:
                    results = self._apply_in_transaction(tx)
                    if self._ring is not None:  # a tool: the node learns of it at once
                        _file.ring_doorbell(self._ring)
            except sqlite3.Error as exc:
                self._raise_refused(conn, exc)
            stats = self._stats
            stats["transactions"] += 1
            stats["sync_writes"] += 1
            if self._checkpointer is not None:
                self._checkpointer.committed()
        return results

    def _raise_refused(self, conn: sqlite3.Connection, exc: sqlite3.Error) -> NoReturn:
        """Raise what a failed write's ``exc`` means: :class:`Busy` (another connection
        holds the write lock), the refusal it stands for (``_refused``), or itself."""
        if isinstance(exc, sqlite3.OperationalError):
            _raise_if_busy(conn, exc)
        refused = self._refused(exc)
        if refused is exc:
            raise exc
        raise refused from exc

    def write_each(self, txs: Sequence[Transaction], *, unless_node: bool = False
                   ) -> list[list[Any] | Exception] | None:
        """See :meth:`Store.write_each`: one ``BEGIN IMMEDIATE`` ... ``COMMIT``, a
        SAVEPOINT per transaction; the node's doorbell rung once, after it (a tool's
        store leaves a wakeup row for each transaction's workflows). ``unless_node``:
        with the node's lock held while it commits, as :meth:`write_unless_node`."""
        if unless_node:
            if self.path is None or self.locked:
                return None
            with _file.lock_if_free(self.path) as free:
                return self._write_each(txs) if free else None
        return self._write_each(txs)

    def _write_each(self, txs: Sequence[Transaction]) -> list[list[Any] | Exception]:
        if not any(tx.ops for tx in txs):
            return [[] for _ in txs]
        self._check_writable()
        return self._while_busy(self._write_each_now, txs)

    def _write_each_now(self, txs: Sequence[Transaction]) -> list[list[Any] | Exception]:
        """One attempt at :meth:`write_each`; :class:`Busy` if the database is locked by
        another connection (nothing written)."""
        conn = self._conn
        outcomes: list[list[Any] | Exception] = []
        with self._write_lock:
            self._check_open()
            if self._notify_node:  # a tool's store: still the file at its path?
                self.check_file()
            try:
                conn.execute("BEGIN IMMEDIATE")
                with conn:
                    for tx in txs:
                        conn.execute("SAVEPOINT one")
                        try:
                            outcomes.append(self._apply(tx))
                        except Exception as exc:
                            if self.translate_error(exc) is not None:
                                raise  # the store's own failure: nothing of them commits
                            conn.execute("ROLLBACK TO one")
                            outcomes.append(exc)
                        conn.execute("RELEASE one")
                if self._ring is not None:  # a tool: the node learns of them at once
                    _file.ring_doorbell(self._ring)
            except sqlite3.Error as exc:
                self._raise_refused(conn, exc)
            except BaseException:
                _end_open(conn)
                raise
            stats = self._stats
            stats["transactions"] += 1
            stats["sync_writes"] += 1
            if self._checkpointer is not None:
                self._checkpointer.committed()
        return outcomes

    def _apply_in_transaction(self, tx: Transaction) -> list[Any]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            with conn:
                return self._apply(tx)
        except BaseException:
            _end_open(conn)
            raise

    async def wait_writable(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Wait until no other connection holds the store's write lock: a node's start,
        before it writes anything (its resume, a schedule's sync, its root's start).
        Another program's open write transaction (a ``sqlite3`` shell, a DB browser)
        would otherwise hold the start in a write that cannot be interrupted, for up to
        ``busy_retry`` seconds. The wait is trio's (cancellable; the lock is tried every
        :data:`LOCKED_POLL` seconds with the writer's short busy timeout, and let go at
        once, nothing written); after :data:`LOCKED_WARNING` seconds a warning says what
        it waits for. It ends once ``stopping()`` (the node's start was interrupted), or
        after ``busy_retry`` seconds with the :class:`~garrison.StoreError` a write that
        waited as long gets. At once for any store but a node's (in memory, a tool's)."""
        if self.path is None or not self.locked or self.readonly:
            return
        began = trio.current_time()
        warned = False
        while True:
            try:
                self._try_write_lock()
            except Busy as exc:
                waited = trio.current_time() - began
                if waited >= self._group.retry_for:
                    raise self._stayed_busy(exc) from exc.__cause__
                if not warned and waited >= LOCKED_WARNING:
                    warned = True
                    log.warning("store %r: another connection holds its write lock (a "
                                "sqlite3 shell or a DB browser with an open transaction?): "
                                "the node waits for it before it starts, for up to %gs "
                                "(SIGINT or SIGTERM stops it)", self.path,
                                self._group.retry_for)
            else:
                if warned:
                    log.info("store %r: its write lock is free again: the node starts",
                             self.path)
                return
            if stopping():
                return
            await trio.sleep(LOCKED_POLL)

    def _try_write_lock(self) -> None:
        """Take the store's write lock (``BEGIN IMMEDIATE``, waiting the writer's short
        busy timeout) and let it go at once; :class:`Busy` if another connection holds
        it."""
        conn = self._conn
        with self._write_lock:
            self._check_open()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                _raise_if_busy(conn, exc)
                raise _file.store_error(self.path, self._file, exc,
                                        self._busy_timeout) from exc
            finally:
                _end_open(conn)  # (nothing was written: the lock is let go)

    def _stayed_busy(self, exc: Busy, waited: float | None = None) -> StoreError:
        """The StoreError of a write that found the store locked for ``waited`` seconds:
        :meth:`write`'s busy timeout, or (``None``) the group commit's ``busy_retry``
        (its worker's deadline)."""
        cause = exc.__cause__
        assert isinstance(cause, sqlite3.Error)
        if waited is None:
            waited = self._group.retry_for
        return _file.store_error(self.path, self._file, cause, waited)

    def translate_error(self, exc: BaseException) -> StoreError | None:
        """The :class:`~garrison.StoreError` a failed write means (the disk is full, the
        file is damaged or read-only), naming the file; ``None`` for an error of the
        caller's own operations (a promise completed twice, a duplicate journal seq)."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, sqlite3.IntegrityError) or not isinstance(exc, sqlite3.Error):
            return None
        error = _file.store_error(self.path, self._file, exc, self._busy_timeout)
        if self._closed:  # (closed meanwhile: no file to check)
            return error
        try:
            self.check_file()
        except StoreError as gone:  # deleted or replaced while the node ran
            return gone
        return error

    def _refused(self, exc: BaseException) -> BaseException:
        """What the caller of a write that failed with ``exc`` gets: the
        :class:`~garrison.StoreError` it means (:meth:`translate_error`: the disk is
        full, the file damaged, deleted or read-only), naming the file, with ``exc`` as
        its cause; ``exc`` itself when it is the written operations' own error (an
        ``IntegrityError``, a ``PromiseAlreadyCompleted``). Only on a write's failure:
        a commit that succeeds pays nothing for it."""
        failed = self.translate_error(exc)
        if failed is None or failed is exc:
            return exc
        failed.__cause__ = exc
        return failed

    def commit(self, tx: Transaction) -> Coroutine[Any, Any, list[Any]]:
        """Commit ``tx`` by group commit (see ``_group_commit.py``); returns each
        operation's result once it is committed. Runs from trio; waiting is
        shielded from cancellation, so a commit asked for is never lost half-way.

        An in-memory store, and a store opened with ``lock=False``, write at once in
        the calling thread; ``synchronous="normal"`` batches in the trio thread;
        ``synchronous="full"`` writes a batch (and its fsync) in a worker thread.

        (A plain function returning the group commit's coroutine, as ``await
        store.commit(tx)`` needs: one frame less held by every waiting commit.)"""
        if not tx.ops:
            return _no_results()
        if self._closed or self.readonly:  # (the two checks' own test, without their calls)
            self._check_open()
            self._check_writable()
        if self._failure is not None:
            raise self._failure
        return self._group.commit(tx)

    @property
    def owner(self) -> bool:
        """True unless opened with ``lock=False`` (a tool writing for the node that holds
        the lock)."""
        return not self._notify_node

    def node_running(self) -> bool:
        """Whether a node holds this store's lock now (always, in memory)."""
        return self.path is None or _file.lock_held(self.path)

    def write_unless_node(self, tx: Transaction) -> bool:
        """Commit ``tx`` unless a node holds the store's lock, taking that lock while it
        commits (see :meth:`Store.write_unless_node`): a node that opens the store at
        that moment gets :class:`~garrison.StoreLocked`, one that opened it first makes
        this False. Always False in memory, or for the node's own store."""
        if self.path is None or self.locked:
            return False
        with _file.lock_if_free(self.path) as free:
            if not free:
                return False
            self.write(tx)
        return True

    @property
    def committing(self) -> bool:
        """True while a group commit is forming or being written."""
        return self._group.busy

    def _write_batch(self, batch: list[CommitRequest]) -> None:
        """One transaction for the whole batch (SAVEPOINTs on failure)."""
        with self._write_lock:
            self._write_batch_locked(batch)
            if self._ring is not None:  # a tool's commit retried after the store was busy
                _file.ring_doorbell(self._ring)

    def _write_batch_locked(self, batch: list[CommitRequest]) -> None:
        conn = self._conn
        stats = self._stats
        if self._notify_node:  # a tool's store: still the file at its path?
            try:
                self.check_file()
            except (StoreError, RuntimeError) as exc:  # every caller's, before any write
                fail_all(batch, exc)
                return
        try:
            self._check_open()
            conn.execute("BEGIN IMMEDIATE")
            with conn:
                # a run of requests that each append one journal record (a step each) is
                # one executemany, in the same order: one statement lookup and cursor for
                # the run, not one per step
                rows: list[tuple[Any, ...]] = []
                grouped = not self._notify_node
                for request in batch:
                    ops = request.tx.ops
                    if grouped and len(ops) == 1 and ops[0][0] is _APPEND:
                        rows.append(ops[0][1])
                        request.results = NONE_RESULT
                        continue
                    if rows:
                        conn.executemany(_APPEND_JOURNAL, rows)
                        rows = []
                    request.results = self._apply(request.tx)
                if rows:
                    conn.executemany(_APPEND_JOURNAL, rows)
        except Exception as exc:
            if isinstance(exc, sqlite3.OperationalError):
                _raise_if_busy(conn, exc)
            if len(batch) == 1 or self._closed:  # (closed: no caller's own error)
                fail_all(batch, self._refused(exc))
                return
            stats["failed_batches"] += 1
            if not self._write_isolated(batch):
                return
        except BaseException as exc:  # (a KeyboardInterrupt: it goes on, once)
            _end_open(conn)
            fail_all(batch, interrupted(self.path, exc))
            raise
        if self._checkpointer is not None:
            self._checkpointer.committed()
        stats["transactions"] += 1
        stats["batches"] += 1
        stats["batched_writes"] += len(batch)
        stats["largest_batch"] = max(stats["largest_batch"], len(batch))

    def _write_isolated(self, batch: list[CommitRequest]) -> bool:
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
                        request.error = self._refused(exc)
                    conn.execute("RELEASE request")
        except Exception as exc:
            if isinstance(exc, sqlite3.OperationalError):
                _raise_if_busy(conn, exc)
            fail_all(batch, self._refused(exc))
            return False
        except BaseException as exc:  # (a KeyboardInterrupt: it goes on, once)
            _end_open(conn)
            fail_all(batch, interrupted(self.path, exc))
            raise
        return True

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(self.path, "it was opened read-only (readonly=True): nothing can "
                                        "be written through it")

    def _check_open(self) -> None:
        if self._closed:
            where = self.path if self.path is not None else "<memory>"
            raise RuntimeError(f"store {where!r} is closed")

    # -- retention ---------------------------------------------------------------
    def prune_ended(self, status: str, before: float, *, host: str | None = None,
                    after: tuple[float, str] | None = None, limit: int = 500
                    ) -> list[tuple[float, str]]:
        """See :meth:`Store.prune_ended`. A node's store prunes on a connection of its
        own, so the node's commits (in the trio thread) never wait for the thread
        that prunes: they find the write lock taken and wait in a worker thread, for
        one batch at most. A tool's prunes on its writer connection."""
        key = check_prune(status, before, host, after, limit)
        self._check_writable()
        if self._notify_node:  # a tool
            with self._write_lock:
                self._check_open()
                self.check_file()
                return self._pruned(self._conn, status, before, host, key, limit)
        with self._prune_lock:
            self._check_open()
            if self._pruner is None:
                try:
                    self._pruner = self._connect(self._file, self._busy_timeout)
                except sqlite3.Error as exc:
                    raise _file.store_error(self.path, self._file, exc,
                                            self._busy_timeout) from exc
            return self._pruned(self._pruner, status, before, host, key, limit)

    def _pruned(self, conn: sqlite3.Connection, status: str, before: float,
                host: str | None, key: tuple[float, str], limit: int
                ) -> list[tuple[float, str]]:
        # (the node's pruner connection checkpoints the WAL itself, in this thread, at
        # SQLite's default 1,000 pages: a pass of many batches is not left to the node)
        done: list[tuple[float, str]] = []
        try:
            while True:  # (one transaction per cut: the write lock is free between)
                rows, cut = _prune_batch(conn, status, before, host, key, limit - len(done))
                done += rows
                if not cut:
                    return done
                key = rows[-1]
        except sqlite3.Error as exc:  # (what it deleted before is deleted: idempotent)
            raise self._refused(exc) from exc

    def count_prunable(self, statuses: Iterable[str], before: float, *,
                       host: str | None = None) -> int:
        """See :meth:`Store.count_prunable`."""
        wanted = check_count(statuses, before, host)
        if not wanted:
            return 0
        with self._read_lock:
            self._check_open()
            try:
                return _count_prunable(self._reader, wanted, float(before), host)
            except sqlite3.Error as exc:
                raise _file.store_error(self.path, self._file, exc,
                                        self._busy_timeout) from exc

    def take_wakeups(self) -> list[WakeupRecord]:
        """Remove and return the wakeups left by tools, oldest first.

        The node holding the lock polls this to learn which workflows a tool
        wrote to (signals, promise resolutions, cancel requests). None yet while a
        tool is writing (it holds the store's write lock): its rows wait for the
        next take."""
        try:
            return self._take_wakeups()
        except Busy:
            return []

    def _take_wakeups(self) -> list[WakeupRecord]:
        """:meth:`take_wakeups`; :class:`Busy` while another connection writes (the
        node's connection waits ``_OWNER_BUSY_MS`` for it, not longer: this runs in
        the trio thread)."""
        conn = self._conn
        with self._write_lock:
            self._check_open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                with conn:
                    rows = conn.execute(
                        "DELETE FROM wakeups RETURNING id, workflow_id, kind"
                    ).fetchall()
            except sqlite3.OperationalError as exc:
                _raise_if_busy(conn, exc)
                raise
            except BaseException:
                _end_open(conn)
                raise
            self._stats["transactions"] += 1
        rows.sort()
        return [WakeupRecord(wid, kind) for _id, wid, kind in rows]

    async def wakeups(self) -> list[WakeupRecord]:
        """Wait until a tool (a store opened with ``lock=False``) wrote for this store's
        workflows, then take and return those notices, oldest first.

        SQLite has no notifications between processes: a worker thread waits on the
        store's doorbell, which tools ring after they write (see ``_file.py``), and
        looks at the ``wakeups`` table (one indexed query, on a connection of its own)
        when rung and once a second anyway (a writer that rang no bell); where no
        doorbell could be made it polls every 10 ms. Once a second it also checks
        that the store's file is still the one opened (:meth:`check_file`): a store
        deleted or replaced under the node raises :class:`~garrison.StoreError` here,
        and every later write raises it too. A store nobody else can write to (in
        memory, or a tool's own) waits forever."""
        if self.path is None or self._notify_node:
            await trio.sleep_forever()
        pause = BUSY_PAUSE
        while True:
            if self._failure is not None:
                raise self._failure
            if self._closing.is_set():
                # closed while the watcher thread's answer was on its way back: no more
                # notices (the node that closed it cancels this wait)
                await trio.sleep_forever()
            try:
                found = self._take_wakeups()
            except Busy:
                # a tool is writing (as it may be again right after it rang): take its
                # rows once it is done, not at once (its rows are there: the watcher
                # would return at once and this would block the trio thread each time)
                await trio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            if found:
                return found
            pause = BUSY_PAUSE
            await trio.to_thread.run_sync(self._wait_for_wakeup, abandon_on_cancel=True)

    def _wait_for_wakeup(self) -> None:
        """Worker thread: return once the wakeups table has a row (or the store closes)."""
        assert self.path is not None
        with self._bell_lock:
            if self._closing.is_set():
                return
            bell = None if self._bell_fd is None else os.dup(self._bell_fd)
            self._watchers += 1
        try:
            conn = sqlite3.connect(self.path, timeout=5.0)
            try:
                self._watch(conn, bell)
            finally:
                conn.close()
        finally:
            self._watcher_gone(bell)

    def _watch(self, conn: sqlite3.Connection, bell: int | None) -> None:
        """The watcher's loop (see :meth:`_wait_for_wakeup`), on its own connection
        and its copy of the doorbell (``None``: it polls)."""
        pause = POLL_RUNG if bell is not None else POLL_UNRUNG
        while True:
            if bell is not None:
                # before the query (a ring after it wakes the wait), and before the
                # look at closing (the close's ring may be one of those read here)
                _file.drain_doorbell(bell)
            if self._closing.is_set():
                return
            try:
                if conn.execute("SELECT 1 FROM wakeups LIMIT 1").fetchone():
                    return
                queried = True
            except sqlite3.Error as exc:
                # (the file deleted under the node: "disk I/O error", or "no such
                # table" in a file made anew: the look at the file says what happened,
                # now, and else the error is the store's failure, said to the node)
                queried = False
                failure = StoreError(self.path, f"cannot read its wakeups table: {exc}")
            now = _time.monotonic()
            if not queried or now - self._file_checked >= FILE_CHECK_INTERVAL:
                # (across calls: tools writing more than once a second skip no check)
                self._file_checked = now
                try:
                    self.check_file()
                except StoreError as exc:
                    if not self._closing.is_set():
                        self._failure = exc
                    return
                except RuntimeError:  # closed since the look above
                    if self._closing.is_set():
                        return
                    raise
                if not queried:
                    if not self._closing.is_set():
                        self._failure = failure
                    return
            if bell is None:
                self._closing.wait(pause)
            else:
                _file.wait_rung(bell, pause)

    def _watcher_gone(self, bell: int | None) -> None:
        if bell is not None:
            os.close(bell)
        with self._bell_lock:
            self._watchers -= 1
            self._watchers_gone.notify_all()

    # -- reading -----------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = (), *, raw_text: bool = False
               ) -> list[Any]:
        """The rows of ``sql``. ``raw_text``: a text value that is not UTF-8 is read as
        its ``bytes`` (SQLite's module refuses the whole read otherwise, naming the
        column but not the row)."""
        if no_match(params):  # (not valid text: no row can match it)
            return []
        with self._read_lock:
            self._check_open()
            if self._notify_node:  # a tool's store: still the file at its path?
                self.check_file()
            elif self._failure is not None:  # the node's: its file gone (see wait_for_wakeup)
                raise self._failure  # (what it would read is no longer the store)
            if not raw_text:
                return self._reader.execute(sql, params).fetchall()
            self._reader.text_factory = _text_or_bytes
            try:
                return self._reader.execute(sql, params).fetchall()
            finally:
                self._reader.text_factory = str

    def _workflow_rows(self, sql: str, params: Sequence[Any]) -> list[WorkflowRecord]:
        """The workflows of ``sql`` (selecting ``WorkflowRecord.COLUMNS``); a row
        holding text that is not UTF-8 is a :class:`DamagedRecord` naming it."""
        return [WorkflowRecord.from_row(row) for row in self._text_rows(sql, params)]

    def _text_rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """The rows of ``sql``; read again with text as ``bytes`` if a text column is
        not UTF-8 (SQLite's decoding failed the whole read), for the record's
        ``from_row`` to name the one that is."""
        try:
            return self._query(sql, params)
        except sqlite3.OperationalError as exc:
            if not _undecodable(exc):
                raise
            return self._query(sql, params, raw_text=True)

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow's row, or ``None``."""
        rows = self._workflow_rows(
            f"SELECT {WorkflowRecord.COLUMNS} FROM workflows WHERE workflow_id = ?",
            (workflow_id,),
        )
        return rows[0] if rows else None

    def answers(self) -> bool:
        """Whether the store answers a read now (see the Store protocol): one look, which
        waits ``_ANSWER_BUSY_MS`` at most for a lock another connection holds (not the
        busy timeout of the other reads); ``False`` once the store is closed, or its file
        deleted or replaced."""
        with self._read_lock:
            if self._closed:
                return False
            try:
                if self._notify_node:  # (as a read checks, see _query)
                    self.check_file()
                elif self._failure is not None:
                    return False
                self._reader.execute(f"PRAGMA busy_timeout={_ANSWER_BUSY_MS}")
                try:
                    self._reader.execute("SELECT 1 FROM workflows WHERE workflow_id = ?",
                                         ("",)).fetchall()
                finally:
                    self._reader.execute(
                        f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            except (StoreError, sqlite3.Error):
                return False
            return True

    def get_workflow_settled(self, workflow_id: str) -> WorkflowRecord | None:
        """:meth:`get_workflow`: one node writes a SQLite store, and a read sees every
        committed write (see the Store protocol)."""
        return self.get_workflow(workflow_id)

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
        must match the stored JSON value), by parent pid and by the start of the id.

        Keyset paging: ``after=(record.created, record.workflow_id)`` of the last record
        of a page returns the records that follow it in this order (each page is one
        indexed range scan, however deep; rows added meanwhile never shift a page). The
        cursor's row supplies the exact stored time; its ``created`` is used only when
        that workflow has been deleted since. At most
        :data:`~._converter.MAX_SEARCH_FILTERS` search keys (else ``ValueError``)."""
        check_search_filters(search)
        limit = check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append(_status_in(status, params))
        matches: list[str] = []
        for key, value in (search or {}).items():
            path = "$." + json.dumps(str(key))
            text = search_json(key, value)
            if text[0] in "{[":  # an object or array: compared as jsonb compares them
                matches.append("json_type(search, ?) = ? AND "
                               "garrison_json_equal(json_extract(search, ?), ?)")
                params.extend((path, "object" if text[0] == "{" else "array", path, text))
                continue
            matches.append("json_extract(search, ?) IS json_extract(?, '$')")
            params.append(path)
            params.append(text)
            # json_extract makes true and false the numbers 1 and 0: the JSON type tells
            # them apart (a number matches a number of the same value, as in jsonb)
            if isinstance(value, bool):
                matches.append("json_type(search, ?) = ?")
                params.extend([path, "true" if value else "false"])
            elif isinstance(value, int | float):
                matches.append("json_type(search, ?) IN ('integer', 'real')")
                params.append(path)
        if matches:
            # a row whose search attributes are no JSON (a hand edit, a damaged page) is
            # selected, not compared (SQLite's json functions fail the whole read on
            # it): reading it raises the DamagedRecord that names it, as a read without
            # a search filter does (CASE evaluates only the branch it takes)
            where.append(f"CASE WHEN json_valid(search) THEN {' AND '.join(matches)} "
                         "ELSE 1 END")
        if parent is not None:
            where.append("parent = ?")
            params.append(str(parent))
        if id_prefix:
            where.append("workflow_id >= ?")
            params.append(id_prefix)
            after_last = ord(id_prefix[-1]) + 1
            if after_last == 0xD800:  # (no text holds a surrogate: the next one after)
                after_last = 0xE000
            if after_last <= 0x10FFFF:  # UTF-8 sorts as code points
                where.append("workflow_id < ?")
                params.append(id_prefix[:-1] + chr(after_last))
            else:
                where.append("substr(workflow_id, 1, ?) = ?")
                params.extend((len(id_prefix), id_prefix))
        if after is not None:
            created, after_id = after
            rows = self._query("SELECT created FROM workflows WHERE workflow_id = ?",
                               (after_id,))
            at = rows[0][0] if rows else unix_seconds(created)
            cmp = "<" if newest_first else ">"
            where.append(f"created {cmp}= ? AND (created {cmp} ? OR workflow_id {cmp} ?)")
            params.extend((at, at, after_id))
        sql = f"SELECT {WorkflowRecord.COLUMNS} FROM workflows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += (" ORDER BY created DESC, workflow_id DESC" if newest_first
                else " ORDER BY created, workflow_id")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._workflow_rows(sql, params)

    def unfinished_children(self, parents: Sequence[Pid | str],
                            damaged: list[DamagedRecord] | None = None
                            ) -> list[WorkflowRecord]:
        """The unfinished children of ``parents`` (see the Store protocol), over
        ``workflows_by_parent``, read a few hundred parents at a time."""
        keys = [key for key in dict.fromkeys(map(str, parents)) if not no_match((key,))]
        found: list[WorkflowRecord] = []
        for i in range(0, len(keys), _IN_CHUNK):
            chunk = keys[i:i + _IN_CHUNK]
            found.extend(WorkflowRecord.from_rows(self._text_rows(
                f"SELECT {WorkflowRecord.COLUMNS} FROM workflows WHERE parent IN "
                f"({', '.join('?' * len(chunk))}) AND status NOT IN "
                f"({', '.join('?' * len(FINAL_STATUSES))})",
                [*chunk, *(status.value for status in FINAL_STATUSES)]), damaged))
        found.sort(key=lambda record: (record.created, record.workflow_id))
        return found

    def children_of_ended(self, host: str, damaged: list[DamagedRecord] | None = None
                          ) -> list[WorkflowRecord]:
        """The unfinished children of ``host``'s ended workflows (see the Store
        protocol): one read of the unfinished workflows (over
        ``workflows_by_status_created``, not the ended ones), each parent found by its
        id."""
        prefix = f"{host}/"
        unfinished = [status.value for status in WorkflowStatus
                      if status not in FINAL_STATUSES]
        rows = self._text_rows(
            f"SELECT {WorkflowRecord.COLUMNS} FROM workflows c WHERE c.status IN "
            f"({', '.join('?' * len(unfinished))}) AND c.parent IS NOT NULL "
            "AND substr(c.parent, 1, ?) = ? AND EXISTS (SELECT 1 FROM workflows p "
            "WHERE p.workflow_id = substr(c.parent, ?) AND (p.status = ? OR p.status = ? "
            "AND COALESCE(c.cancel_requested, 0) = 0))",
            [*unfinished, len(prefix), prefix, len(prefix) + 1,
             WorkflowStatus.FAILED.value, WorkflowStatus.CANCELLED.value])
        # (sorted here: ordered by the query, SQLite walked every workflow in created
        # order to spare the sort, not the unfinished ones by status)
        found = WorkflowRecord.from_rows(rows, damaged)
        found.sort(key=lambda record: (record.created, record.workflow_id))
        return found

    def workflows_by_id(self, workflow_ids: Sequence[str],
                        damaged: list[DamagedRecord] | None = None
                        ) -> dict[str, WorkflowRecord]:
        """The rows of ``workflow_ids`` (see the Store protocol), a read for each
        ``_IN_CHUNK`` of them."""
        ids = list(dict.fromkeys(workflow_ids))
        found: dict[str, WorkflowRecord] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i:i + _IN_CHUNK]
            for record in WorkflowRecord.from_rows(self._text_rows(
                    f"SELECT {WorkflowRecord.COLUMNS} FROM workflows WHERE workflow_id IN "
                    f"({', '.join('?' * len(chunk))})", chunk), damaged):
                found[record.workflow_id] = record
        return found

    def count_workflows(self, status: str | Iterable[str] | None = None, *,
                        parent: Pid | str | None = None, host: str | None = None) -> int:
        """How many workflows have that status (one or several), ``parent`` pid and
        ``host``: one ``count(*)`` over an index (``workflows_by_parent``,
        ``workflows_by_status_created``), no row read into Python."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append(_status_in(status, params))
        if parent is not None:
            where.append("parent = ?")
            params.append(str(parent))
        if host is not None:
            where.append("host = ?")
            params.append(host)
        sql = "SELECT count(*) FROM workflows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return int(self._query(sql, params)[0][0])

    def journal(self, workflow_id: str, *, kind: str | None = None,
                last: int | None = None) -> list[JournalRecord]:
        """The workflow's journal ordered by seq (``kind``: its records of that kind
        alone; ``last``: its newest ``last`` records alone); a record holding no JSON,
        or text that is not UTF-8, is a :class:`DamagedRecord` naming its workflow and
        seq."""
        sql = journal_select("journal", "?", kind, last)
        params = [workflow_id, *(() if kind is None else (kind,)),
                  *(() if last is None else (last,))]
        from_row = JournalRecord.from_row
        rows = self._text_rows(sql, params)
        if last is not None:
            rows.reverse()  # (read newest first)
        return [from_row(row) for row in rows]

    def journal_heads(self, workflow_id: str, head: int, after: int, limit: int, *,
                      newest: bool = False) -> list[JournalHead]:
        """At most ``limit`` records with a seq above ``after``, their outcomes read up
        to ``head`` characters and not decoded (see the Store protocol), in seq order."""
        # (octet_length, which reads no text, came with SQLite 3.43)
        sql = journal_heads_select("journal", "?", head, after, limit, newest,
                                   "octet_length" if _OCTET_LENGTH else "length")
        rows = self._text_rows(sql, (workflow_id, after, limit))
        if newest:
            rows.reverse()
        return [JournalHead.from_row(row, head) for row in rows]

    def journal_page(self, workflow_id: str, after: int, limit: int
                     ) -> list[tuple[JournalRecord, int]]:
        """At most ``limit`` records of the workflow's journal with a seq above
        ``after``, in seq order, each with the characters of its outcome's stored JSON
        text (see the Store protocol); a damaged record is a :class:`DamagedRecord`, as
        :meth:`journal` raises."""
        sql = journal_page_select("journal", "?", after, limit)
        return journal_page_of(self._text_rows(sql, (workflow_id, after, limit)))

    def journal_entries(self, workflow_id: str) -> tuple[list[tuple[int, str, str, Any, int]], int]:
        """Recovery's fast path: ``([(seq, kind, name, outcome, attempts), ...], bytes)``,
        the journal in seq order with decoded outcomes, and the size of their JSON.

        Every outcome is decoded by ONE ``json.loads`` of the texts joined into an
        array, and no :class:`JournalRecord` is built: on a long journal per-row
        decoding and record objects cost about three times as much (replay speed
        after a restart is bound by this read)."""
        try:
            rows = self._query(
                "SELECT seq, kind, name, outcome, attempts FROM journal WHERE workflow_id = ? "
                "ORDER BY seq",
                (workflow_id,),
            )
        except sqlite3.OperationalError as exc:  # text that is not UTF-8: named below
            if not _undecodable(exc):
                raise
            return journal_entries_of(self.journal(workflow_id))
        if not rows:
            return [], 0
        texts = [row[3] for row in rows]
        try:
            outcomes = json.loads("[" + ",".join(texts) + "]")
            entries = [(seq, kind, name, out, attempts) for (seq, kind, name, _, attempts), out
                       in zip(rows, outcomes, strict=True)]
        except (TypeError, ValueError):  # a record that is no JSON text (a BLOB: bytes)
            return journal_entries_of(self.journal(workflow_id))  # (which names it)
        return entries, sum(map(len, texts))

    def journal_sizes(self, workflow_id: str) -> dict[int, int]:
        """``{seq: characters of its outcome JSON}`` of the workflow's journal."""
        rows = self._query(
            "SELECT seq, length(outcome) FROM journal WHERE workflow_id = ?", (workflow_id,)
        )
        return {int(seq): int(n) for seq, n in rows}

    def journal_size(self, workflow_id: str) -> tuple[int, int]:
        """``(records, bytes of outcome JSON)`` of the workflow's journal."""
        rows = self._query(
            "SELECT count(*), coalesce(sum(length(outcome)), 0) FROM journal WHERE workflow_id = ?",
            (workflow_id,),
        )
        return int(rows[0][0]), int(rows[0][1])

    def pending_messages(self, workflow_id: str) -> list[InboxRecord]:
        """Inbox rows (messages and events) not consumed yet, in arrival order."""
        rows = self._text_rows(
            f"SELECT {InboxRecord.COLUMNS} FROM inbox "
            "WHERE workflow_id = ? AND consumed_seq IS NULL ORDER BY id",
            (workflow_id,),
        )
        return [InboxRecord.from_row(row) for row in rows]

    def inbox_message(self, msg_id: str) -> InboxRecord | None:
        """The inbox row of message ``msg_id`` (consumed or not), or ``None``."""
        rows = self._text_rows(f"SELECT {InboxRecord.COLUMNS} FROM inbox WHERE msg_id = ?",
                               (msg_id,))
        return InboxRecord.from_row(rows[0]) if rows else None

    def inbox_messages(self, msg_ids: Sequence[str]) -> dict[str, InboxRecord]:
        """The inbox rows of ``msg_ids`` (see the Store protocol), a read for each
        ``_IN_CHUNK`` of them."""
        ids = list(dict.fromkeys(msg_ids))
        found: dict[str, InboxRecord] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i:i + _IN_CHUNK]
            for row in self._text_rows(f"SELECT {InboxRecord.COLUMNS} FROM inbox WHERE "
                                       f"msg_id IN ({', '.join('?' * len(chunk))})", chunk):
                record = InboxRecord.from_row(row)
                found[record.msg_id] = record
        return found

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

    def due_timers(self, now: datetime | float) -> list[TimerRecord]:
        """Timers whose deadline is at or before ``now``, earliest first."""
        rows = self._query(
            f"SELECT {TimerRecord.COLUMNS} FROM timers WHERE deadline <= ? "
            "ORDER BY deadline, workflow_id, seq",
            (unix_seconds(now),),
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

    def state_digests(self, workflow_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Digests of the stored state values of each of ``workflow_ids``
        (``{workflow_id: {key: digest}}``, a workflow with no state left out; see the
        Store protocol), read a few hundred workflows at a time."""
        ids = [wid for wid in dict.fromkeys(workflow_ids) if not no_match((wid,))]
        found: dict[str, dict[str, str]] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i:i + _IN_CHUNK]
            rows = self._query(
                "SELECT workflow_id, key, value FROM state WHERE workflow_id IN "
                f"({', '.join('?' * len(chunk))})", chunk)
            for wid, key, value in rows:
                found.setdefault(wid, {})[key] = state_digest(value)
        return found

    def resume_rows(self, workflow_ids: Sequence[str], *, records: bool = False
                    ) -> dict[str, ResumeRows]:
        """What a node reads of each of ``workflow_ids`` to resume it (see the Store
        protocol): one read of each table a few hundred workflows at a time, not one per
        workflow."""
        ids = [wid for wid in dict.fromkeys(workflow_ids) if not no_match((wid,))]
        found: dict[str, ResumeRows] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i:i + _IN_CHUNK]
            among = f"workflow_id IN ({', '.join('?' * len(chunk))})"
            try:
                journal: list[Any] = self._query(
                    f"SELECT workflow_id, seq, kind, name, outcome, attempts FROM journal "
                    f"WHERE {among} ORDER BY workflow_id, seq", chunk)
            except sqlite3.OperationalError as exc:  # text that is not UTF-8: read alone,
                if not _undecodable(exc):            # which names the record
                    raise
                journal = [(wid, None, None, None, b"", None) for wid in chunk]
            inbox = self._text_rows(  # (text that is not UTF-8: that message named)
                f"SELECT {InboxRecord.COLUMNS} FROM inbox WHERE {among} "
                "AND consumed_seq IS NULL ORDER BY id", chunk)
            timers = self._query(
                f"SELECT {TimerRecord.COLUMNS} FROM timers WHERE {among} "
                "ORDER BY deadline, seq", chunk)
            monitors = self._query(
                f"SELECT workflow_id, watcher FROM monitors WHERE {among} "
                "ORDER BY created, watcher", chunk)
            promises = self._query(
                f"SELECT {PromiseRecord.COLUMNS} FROM promises WHERE {among} ORDER BY name",
                chunk)
            rows = None
            if records:
                rows = {r.workflow_id: r for r in self._workflow_rows(
                    f"SELECT {WorkflowRecord.COLUMNS} FROM workflows WHERE {among}", chunk)}
            found.update(group_resume_rows(chunk, journal, inbox, timers, monitors, promises,
                                           rows))
        return found

    def monitors(self, workflow_id: str, watcher: Pid | None = None) -> list[Pid]:
        """The pids watching the workflow, in the order they started watching; with
        ``watcher``, that one alone if it watches the workflow, else none."""
        if watcher is not None:
            rows = self._query("SELECT watcher FROM monitors WHERE workflow_id = ? "
                               "AND watcher = ?", (workflow_id, str(watcher)))
            return [Pid.parse(row[0]) for row in rows]
        rows = self._query(
            "SELECT watcher FROM monitors WHERE workflow_id = ? ORDER BY created, watcher",
            (workflow_id,),
        )
        return [Pid.parse(row[0]) for row in rows]

    def schedules(self) -> list[ScheduleRecord]:
        """Every schedule of the store, by id."""
        rows = self._query(f"SELECT {ScheduleRecord.COLUMNS} FROM schedules ORDER BY schedule_id")
        return [ScheduleRecord.from_row(row) for row in rows]

    def schedules_without_run(self) -> list[ScheduleRecord]:
        """The schedules whose last run (``last_workflow``) is no workflow of the store
        (a tick recorded, its workflow not created: its node stopped in between), by id."""
        rows = self._query(
            f"SELECT {ScheduleRecord.COLUMNS} FROM schedules s WHERE s.last_workflow IS NOT "
            "NULL AND NOT EXISTS (SELECT 1 FROM workflows w WHERE w.workflow_id = "
            "s.last_workflow) ORDER BY schedule_id")
        return [ScheduleRecord.from_row(row) for row in rows]

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """The schedule's row, or ``None``."""
        rows = self._query(
            f"SELECT {ScheduleRecord.COLUMNS} FROM schedules WHERE schedule_id = ?",
            (schedule_id,),
        )
        return ScheduleRecord.from_row(rows[0]) if rows else None

    def queue_entries(self) -> list[QueueRecord]:
        """The queue rows (workflows started with a dedup key or waiting for a slot), in
        queue order: priority, highest first, then start order."""
        rows = self._query(f"SELECT {QueueRecord.COLUMNS} FROM queue ORDER BY priority DESC, seq")
        return [QueueRecord.from_row(row) for row in rows]

    def queue_entry(self, workflow_id: str) -> QueueRecord | None:
        """The workflow's queue row, or ``None`` without one."""
        rows = self._query(f"SELECT {QueueRecord.COLUMNS} FROM queue WHERE workflow_id = ?",
                           (workflow_id,))
        return QueueRecord.from_row(rows[0]) if rows else None

    def queue_place(self, workflow_id: str) -> QueuePlace | None:
        """Where the ``pending`` workflow waits in its host's queue: its row, the host's
        pending rows before it (a count over the queue, as long as the host's queue)
        and the host's workflows holding a slot (a count on the status index). The
        host's limits are its node's config, not in the store: ``limits`` is ``None``."""
        rows = self._query(
            "SELECT w.host, q.priority, q.seq FROM queue q JOIN workflows w ON "
            "w.workflow_id = q.workflow_id WHERE q.workflow_id = ? AND w.status = 'pending'",
            (workflow_id,))
        if not rows:
            return None
        host, priority, seq = rows[0]
        ahead = self._query(
            "SELECT count(*) FROM queue q JOIN workflows w ON w.workflow_id = q.workflow_id "
            "WHERE w.host IS ? AND w.status = 'pending' AND (q.priority > ? OR "
            "(q.priority = ? AND q.seq < ?))", (host, priority, priority, seq))[0][0]
        running = 0 if host is None else self.count_workflows(
            ("running", "waiting", "sleeping"), host=host)
        return QueuePlace(host, int(priority), int(ahead), running)

    def kept_dedup(self, workflow_id: str) -> str | None:
        """The dedup key the workflow's queue row held when it was dropped (at its end):
        what a retry takes back. ``None`` without one."""
        rows = self._query("SELECT dedup FROM workflows WHERE workflow_id = ?", (workflow_id,))
        return rows[0][0] if rows else None

    def admitted_since(self, host: str, since: float) -> list[float]:
        """When the workflows of ``host`` admitted after ``since`` (unix seconds) were
        admitted, oldest first (what its ``rate`` counts)."""
        rows = self._query("SELECT admitted FROM workflows WHERE host = ? AND admitted > ? "
                           "ORDER BY admitted", (host, float(since)))
        return [float(row[0]) for row in rows]

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
