"""The one schema of the SQLite store, and its migrations.

``MIGRATIONS[i]`` brings a database from version ``i`` to ``i + 1``; version 1
is the initial schema. Each migration runs in its own ``BEGIN IMMEDIATE``
transaction together with the row that records its version in
``schema_version``, so a crash mid-migration leaves the previous version.

The migrations are plain SQL on the store's ``sqlite3`` connection. The tables of
versions 1, 2 and 4 were first created with sqlite-utils: their statements here are
the ones it generated, word for word, so that a store created now and one migrated
from then hold the same schema (the test of the schema compares them). Importing
sqlite-utils imports numpy and pandas when they are installed: a tenth of a second
at start and a heap a quarter larger, walked by every full garbage collection, for
what a few ``CREATE TABLE`` statements do.

Times are REAL unix seconds (UTC); JSON columns hold text produced by the
converter.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from .._errors import StoreError, StoreVersionError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "check_garrison",
    "check_tables",
    "migrate",
    "read_version",
]

_SCHEMA_VERSION_TABLE = """CREATE TABLE "schema_version" (
   "version" INTEGER PRIMARY KEY,
   "applied" REAL
)"""


def _v1_initial(conn: sqlite3.Connection) -> None:
    # workflows.name: module:qualname of the workflow function; input: JSON argument
    # list; error: JSON ErrorInfo; parent: str(Pid) of the spawning process;
    # search / memo: JSON objects; cancel_requested: 0, or when the cancel was asked
    # (``_records.cancel_flag``: 1 from a garrison that kept no time)
    conn.execute("""CREATE TABLE "workflows" (
   "workflow_id" TEXT PRIMARY KEY,
   "name" TEXT NOT NULL,
   "status" TEXT NOT NULL,
   "input" TEXT NOT NULL DEFAULT '[]',
   "result" TEXT,
   "error" TEXT,
   "parent" TEXT,
   "run_id" TEXT,
   "attempt" INTEGER NOT NULL DEFAULT 1,
   "host" TEXT,
   "created" REAL NOT NULL,
   "updated" REAL NOT NULL,
   "search" TEXT NOT NULL DEFAULT '{}',
   "memo" TEXT NOT NULL DEFAULT '{}',
   "cancel_requested" INTEGER DEFAULT 0
)""")
    conn.execute('CREATE INDEX "workflows_by_status"\n    ON "workflows" ("status", "updated")')
    conn.execute('CREATE INDEX "workflows_by_parent"\n    ON "workflows" ("parent")')
    # journal.kind: activity, send, receive, sleep, now, uuid4, ...; name: the
    # activity's or operation's name; outcome: JSON, shaped by the workflow host
    # (rebuilt WITHOUT ROWID by version 6)
    conn.execute("""CREATE TABLE "journal" (
   "workflow_id" TEXT REFERENCES "workflows"("workflow_id"),
   "seq" INTEGER,
   "kind" TEXT NOT NULL,
   "name" TEXT NOT NULL DEFAULT '',
   "outcome" TEXT NOT NULL DEFAULT null,
   "attempts" INTEGER NOT NULL DEFAULT 1,
   "time" REAL NOT NULL,
   PRIMARY KEY ("workflow_id", "seq")
)""")
    # inbox.id: arrival order; kind: 'message' | 'event'; sender: str(Pid) or NULL;
    # consumed_seq: journal seq of the receive that took it (NULL: pending)
    conn.execute("""CREATE TABLE "inbox" (
   "id" INTEGER PRIMARY KEY,
   "workflow_id" TEXT NOT NULL REFERENCES "workflows"("workflow_id"),
   "msg_id" TEXT NOT NULL,
   "topic" TEXT NOT NULL,
   "payload" TEXT NOT NULL DEFAULT null,
   "sender" TEXT,
   "kind" TEXT NOT NULL DEFAULT 'message',
   "call_ref" TEXT,
   "created" REAL NOT NULL,
   "consumed_seq" INTEGER
)""")
    conn.execute('CREATE UNIQUE INDEX "inbox_msg_id"\n    ON "inbox" ("msg_id")')
    # Pending messages of one workflow, in arrival order.
    conn.execute("CREATE INDEX inbox_pending ON inbox (workflow_id, id) WHERE consumed_seq IS NULL")
    conn.execute("""CREATE TABLE "timers" (
   "workflow_id" TEXT REFERENCES "workflows"("workflow_id"),
   "seq" INTEGER,
   "deadline" REAL NOT NULL,
   PRIMARY KEY ("workflow_id", "seq")
)""")
    conn.execute('CREATE INDEX "timers_by_deadline"\n    ON "timers" ("deadline")')
    # promises.status: 'pending' | 'resolved' | 'rejected'; error: the rejection message
    conn.execute("""CREATE TABLE "promises" (
   "workflow_id" TEXT REFERENCES "workflows"("workflow_id"),
   "name" TEXT,
   "status" TEXT NOT NULL,
   "value" TEXT,
   "error" TEXT,
   "created" REAL NOT NULL,
   "completed" REAL,
   PRIMARY KEY ("workflow_id", "name")
)""")
    conn.execute("""CREATE TABLE "state" (
   "workflow_id" TEXT REFERENCES "workflows"("workflow_id"),
   "key" TEXT,
   "value" TEXT NOT NULL,
   "updated" REAL NOT NULL,
   PRIMARY KEY ("workflow_id", "key")
)""")
    conn.execute("""CREATE TABLE "monitors" (
   "workflow_id" TEXT REFERENCES "workflows"("workflow_id"),
   "watcher" TEXT,
   "created" REAL NOT NULL,
   PRIMARY KEY ("workflow_id", "watcher")
)""")
    conn.execute('CREATE INDEX "monitors_by_watcher"\n    ON "monitors" ("watcher")')
    # Writes made by tools (lock=False) that the node holding the lock must notice.
    conn.execute("""CREATE TABLE "wakeups" (
   "id" INTEGER PRIMARY KEY,
   "workflow_id" TEXT NOT NULL,
   "kind" TEXT NOT NULL,
   "created" REAL NOT NULL
)""")


def _v2_list_order(conn: sqlite3.Connection) -> None:
    # Keyset paging of ``list_workflows(after=..., limit=...)`` (the web console pages
    # through 100,000 workflows): the listing order, whole and per status.
    conn.execute('CREATE INDEX "workflows_by_created"\n'
                 '    ON "workflows" ("created", "workflow_id")')
    conn.execute('CREATE INDEX "workflows_by_status_created"\n'
                 '    ON "workflows" ("status", "created", "workflow_id")')


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def _v3_trace_context(conn: sqlite3.Connection) -> None:
    # The OpenTelemetry trace context (JSON text: W3C traceparent/tracestate headers) a
    # message was sent in and a workflow was started in, so that the spans of a workflow
    # resumed after a crash join the traces they belong to. NULL without tracing.
    for table in ("inbox", "workflows"):
        if "trace" not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN trace TEXT")


def _v4_schedules_and_queue(conn: sqlite3.Connection) -> None:
    # Schedules (``workflow.schedule`` entries and ``node.schedule``): the spec and the
    # next tick, so that a restart loses no tick and a tick starts one workflow.
    # workflow: module:qualname of the workflow function; input: JSON argument list;
    # cron: a cron expression, or NULL (then ``every``, whole seconds, is set);
    # timezone: the IANA name the cron expression is read in; overlap: 'skip' |
    # 'buffer_one' | 'allow_all'; catchup_window: seconds a tick may still start late;
    # next_tick: the next tick to act on (NULL: none, paused or never); last_tick: the
    # tick acted on last (started or skipped); last_workflow: the id of the workflow it
    # started last; buffered_tick: buffer_one's tick waiting for last_workflow to end;
    # source: 'config' (synced from the config at start) | 'api'
    conn.execute("""CREATE TABLE "schedules" (
   "schedule_id" TEXT PRIMARY KEY,
   "host" TEXT NOT NULL,
   "workflow" TEXT NOT NULL,
   "input" TEXT NOT NULL DEFAULT '[]',
   "cron" TEXT,
   "every" REAL,
   "timezone" TEXT NOT NULL DEFAULT 'UTC',
   "overlap" TEXT NOT NULL DEFAULT 'skip',
   "catchup_window" REAL NOT NULL,
   "paused" INTEGER NOT NULL DEFAULT 0,
   "next_tick" REAL,
   "last_tick" REAL,
   "last_workflow" TEXT,
   "buffered_tick" REAL,
   "source" TEXT NOT NULL DEFAULT 'api',
   "created" REAL NOT NULL,
   "updated" REAL NOT NULL
)""")
    # The queue of a workflow host with limits: a row per workflow started with a dedup
    # key or waiting ``pending`` for a slot, from its start until it ends. ``seq`` is the
    # start order (AUTOINCREMENT: it only grows, also after rows are deleted).
    conn.execute(
        "CREATE TABLE queue ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " workflow_id TEXT NOT NULL UNIQUE REFERENCES workflows(workflow_id),"
        " priority INTEGER NOT NULL DEFAULT 0,"
        " dedup TEXT,"
        " enqueued REAL NOT NULL)"
    )
    # one unfinished workflow per dedup key
    conn.execute("CREATE UNIQUE INDEX queue_dedup ON queue (dedup) WHERE dedup IS NOT NULL")


def _v5_admitted(conn: sqlite3.Connection) -> None:
    # When a workflow host with a ``rate`` admitted a workflow (it went from waiting to
    # running): the rate counts these over the last period, so it holds across restarts.
    if "admitted" not in _columns(conn, "workflows"):
        conn.execute("ALTER TABLE workflows ADD COLUMN admitted REAL")
    conn.execute("CREATE INDEX IF NOT EXISTS workflows_by_admitted ON workflows (host, admitted) "
               "WHERE admitted IS NOT NULL")


def _v6_lean_writes(conn: sqlite3.Connection) -> None:
    # Every step commits one journal row. Kept WITHOUT ROWID the row lives in the
    # B-tree of its primary key alone, so the commit writes one page where a rowid
    # table wrote two (the table and the index of its key); reads by workflow id come
    # back in seq order from that same B-tree. ``workflows_by_status (status, updated)``
    # served no query that ``workflows_by_status_created`` does not, and cost a B-tree
    # update at every status change. ``workflows_by_parent`` holds only children (a
    # top-level start no longer writes a NULL into it; ``parent = ?`` still uses it).
    conn.execute(
        "CREATE TABLE journal_v6 ("
        " workflow_id TEXT NOT NULL REFERENCES workflows(workflow_id),"
        " seq INTEGER NOT NULL,"
        " kind TEXT NOT NULL,"
        " name TEXT NOT NULL DEFAULT '',"
        " outcome TEXT NOT NULL DEFAULT 'null',"
        " attempts INTEGER NOT NULL DEFAULT 1,"
        " time REAL NOT NULL,"
        " PRIMARY KEY (workflow_id, seq)"
        ") WITHOUT ROWID"
    )
    conn.execute("INSERT INTO journal_v6 (workflow_id, seq, kind, name, outcome, attempts, time) "
               "SELECT workflow_id, seq, kind, name, outcome, attempts, time FROM journal")
    conn.execute("DROP TABLE journal")
    conn.execute("ALTER TABLE journal_v6 RENAME TO journal")
    conn.execute("DROP INDEX IF EXISTS workflows_by_status")
    conn.execute("DROP INDEX IF EXISTS workflows_by_parent")
    conn.execute("CREATE INDEX workflows_by_parent ON workflows (parent) WHERE parent IS NOT NULL")


def _v7_timer_kind(conn: sqlite3.Connection) -> None:
    # timers.kind: the operation waiting on the timer, 'sleep' (workflow.sleep,
    # sleep_until) or 'receive' (a receive with a timeout), so that a replay whose code
    # does the other one at that seq is a divergence. NULL in rows written before
    # version 7: either operation may take them.
    if "kind" not in _columns(conn, "timers"):
        conn.execute("ALTER TABLE timers ADD COLUMN kind TEXT")



def _v8_dedup_kept(conn: sqlite3.Connection) -> None:
    # workflows.dedup: the dedup key a workflow's queue row held when the row was
    # dropped (at its end), so that a retry takes the key back. NULL for a workflow
    # started without one, and for those that ended before version 8.
    if "dedup" not in _columns(conn, "workflows"):
        conn.execute("ALTER TABLE workflows ADD COLUMN dedup TEXT")


def _v9_inbox_reply(conn: sqlite3.Connection) -> None:
    # inbox.reply: the JSON text of the reply a workflow gave to a call request from a
    # workflow (that caller finds it after a crash lost the reply on its way). The
    # version also fences out older nodes, which would replay down another path rows
    # this one writes: a cancel met at an await (journaled with {"await": seq}), an
    # activity's retry timer (kind 'retry N NAME'), a send or call by name that failed,
    # a register, string call refs.
    if "reply" not in _columns(conn, "inbox"):
        conn.execute("ALTER TABLE inbox ADD COLUMN reply TEXT")


def _v10_children_in_order(conn: sqlite3.Connection) -> None:
    # A workflow's children in the listing order, (created, workflow_id) after the
    # parent: a page of them (``list_workflows(parent=..., after=..., limit=...)``: the
    # console's 50 a page, ``garrison workflows list --parent``, show's first 500) is a
    # range of this index. On ``(parent)`` alone every page read and sorted all the
    # children after its cursor: 0.2 s a page at 50,000 children, 100 pages to list them.
    conn.execute("DROP INDEX IF EXISTS workflows_by_parent")
    conn.execute("CREATE INDEX workflows_by_parent ON workflows (parent, created, workflow_id) "
                 "WHERE parent IS NOT NULL")


def _v11_retention(conn: sqlite3.Connection) -> None:
    # Retention (a host's ``retention``, ``garrison workflows prune``) deletes ended
    # workflows by the time they ended (``updated``: an ended row is not updated again
    # but by a retry, which makes it unfinished). ``workflows_ended`` finds them in
    # that order, one status at a time, without reading the unfinished ones; only a
    # row that ends enters it (a running workflow's updates do not touch it). A
    # workflow's inbox rows are found by ``inbox_by_workflow`` to be deleted with it
    # (``inbox_pending`` holds only the unconsumed ones).
    conn.execute("CREATE INDEX IF NOT EXISTS workflows_ended ON workflows "
                 "(status, updated, workflow_id) "
                 "WHERE status IN ('completed', 'failed', 'cancelled')")
    conn.execute("CREATE INDEX IF NOT EXISTS inbox_by_workflow ON inbox (workflow_id)")


#: ``MIGRATIONS[i]`` migrates version ``i`` to ``i + 1``.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _v1_initial, _v2_list_order, _v3_trace_context, _v4_schedules_and_queue, _v5_admitted,
    _v6_lean_writes, _v7_timer_kind, _v8_dedup_kept, _v9_inbox_reply, _v10_children_in_order,
    _v11_retention,
]
SCHEMA_VERSION = len(MIGRATIONS)

#: The tables of schema :data:`SCHEMA_VERSION` (a store without one is damaged).
TABLES = ("schema_version", "workflows", "journal", "inbox", "timers", "promises", "state",
          "monitors", "wakeups", "schedules", "queue")


def _user_tables(conn: sqlite3.Connection) -> list[str]:
    try:
        names = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
    except UnicodeDecodeError as exc:  # (damaged schema pages: raised by Python, not SQLite)
        damaged = sqlite3.DatabaseError(f"database disk image is malformed: its schema "
                                        f"holds text that is not UTF-8 ({exc.reason})")
        damaged.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # (what store_error reads)
        raise damaged from exc
    return [name for name in names if not name.startswith("sqlite_")]


def check_garrison(conn: sqlite3.Connection, path: str | None) -> None:
    """Refuse a database of another application (tables, but no ``schema_version``)
    with :class:`~garrison.StoreError`, before anything writes to it. An empty
    database is accepted: it has nothing to lose."""
    tables = _user_tables(conn)
    if tables and "schema_version" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(
            path,
            f"not a garrison store: a SQLite database with other tables ({shown}) and "
            "no garrison schema; give garrison a file of its own",
        )


def check_tables(conn: sqlite3.Connection, path: str | None) -> None:
    """After :func:`migrate`: every table of the schema is there, else
    :class:`~garrison.StoreError` naming the missing ones."""
    present = set(_user_tables(conn))
    missing = [name for name in TABLES if name not in present]
    if missing:
        raise StoreError(
            path,
            f"the store is damaged: schema version {read_version(conn)} has no table "
            f"{', '.join(missing)}; restore the store from a backup",
        )


def read_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in ``conn``'s database (0 for an empty one)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                    "name = 'schema_version'").fetchone() is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, path: str, *, allow_migrate: bool = True) -> int:
    """Bring ``conn``'s database to :data:`SCHEMA_VERSION`; returns the version it had before.

    A database newer than this code raises :class:`~garrison.StoreVersionError`
    naming ``path`` and both versions; so does an older one when
    ``allow_migrate`` is false (tools do not migrate behind a node's back).
    """
    found = read_version(conn)
    if found > SCHEMA_VERSION:
        raise StoreVersionError(
            path, found, SCHEMA_VERSION, "it was written by a newer garrison; upgrade garrison"
        )
    if found < SCHEMA_VERSION and not allow_migrate:
        raise StoreVersionError(
            path, found, SCHEMA_VERSION, "open it once with a node to migrate it"
        )
    for version in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        with conn:  # COMMIT, or ROLLBACK on error
            if version == 0:
                conn.execute(_SCHEMA_VERSION_TABLE.replace("TABLE", "TABLE IF NOT EXISTS", 1))
            # Another opener (a tool) may have migrated meanwhile: re-check.
            current = read_version(conn)
            if current > version:
                continue
            MIGRATIONS[version](conn)
            conn.execute(
                "INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                (version + 1, time.time()),
            )
    return found
