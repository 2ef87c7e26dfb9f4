"""The one schema of the SQLite store, and its migrations.

``MIGRATIONS[i]`` brings a database from version ``i`` to ``i + 1``; version 1
is the initial schema. Each migration runs in its own ``BEGIN IMMEDIATE``
transaction together with the row that records its version in
``schema_version``, so a crash mid-migration leaves the previous version.
Tables are created with sqlite-utils; the few statements it has no words for
(partial indexes) are plain SQL.

Times are REAL unix seconds (UTC); JSON columns hold text produced by the
converter.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlite_utils

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


def _v1_initial(db: sqlite_utils.Database) -> None:
    db.table("workflows").create(
        {
            "workflow_id": str,
            "name": str,  # module:qualname of the workflow function
            "status": str,
            "input": str,  # JSON: the argument list
            "result": str,  # JSON
            "error": str,  # JSON: ErrorInfo
            "parent": str,  # str(Pid) of the spawning process, if any
            "run_id": str,
            "attempt": int,
            "host": str,
            "created": float,
            "updated": float,
            "search": str,  # JSON object: search attributes
            "memo": str,  # JSON object
            "cancel_requested": int,
        },
        pk="workflow_id",
        not_null=["name", "status", "input", "attempt", "created", "updated", "search", "memo"],
        defaults={"input": "[]", "attempt": 1, "search": "{}", "memo": "{}", "cancel_requested": 0},
    )
    db.table("workflows").create_index(["status", "updated"], index_name="workflows_by_status")
    db.table("workflows").create_index(["parent"], index_name="workflows_by_parent")

    db.table("journal").create(
        {
            "workflow_id": str,
            "seq": int,
            "kind": str,  # activity, send, receive, sleep, now, uuid4, ...
            "name": str,  # the activity's or operation's name
            "outcome": str,  # JSON, shape decided by the workflow host
            "attempts": int,
            "time": float,
        },
        pk=("workflow_id", "seq"),
        foreign_keys=[("workflow_id", "workflows", "workflow_id")],
        not_null=["kind", "name", "outcome", "attempts", "time"],
        defaults={"name": "", "outcome": "null", "attempts": 1},
    )

    db.table("inbox").create(
        {
            "id": int,  # INTEGER PRIMARY KEY: arrival order
            "workflow_id": str,
            "msg_id": str,
            "topic": str,
            "payload": str,  # JSON
            "sender": str,  # str(Pid) or NULL
            "kind": str,  # 'message' | 'event'
            "call_ref": str,
            "created": float,
            "consumed_seq": int,  # journal seq of the receive that took it; NULL = pending
        },
        pk="id",
        foreign_keys=[("workflow_id", "workflows", "workflow_id")],
        not_null=["workflow_id", "msg_id", "topic", "payload", "kind", "created"],
        defaults={"payload": "null", "kind": "message"},
    )
    db.table("inbox").create_index(["msg_id"], index_name="inbox_msg_id", unique=True)
    # Pending messages of one workflow, in arrival order.
    db.execute("CREATE INDEX inbox_pending ON inbox (workflow_id, id) WHERE consumed_seq IS NULL")

    db.table("timers").create(
        {"workflow_id": str, "seq": int, "deadline": float},
        pk=("workflow_id", "seq"),
        foreign_keys=[("workflow_id", "workflows", "workflow_id")],
        not_null=["deadline"],
    )
    db.table("timers").create_index(["deadline"], index_name="timers_by_deadline")

    db.table("promises").create(
        {
            "workflow_id": str,
            "name": str,
            "status": str,  # 'pending' | 'resolved' | 'rejected'
            "value": str,  # JSON
            "error": str,  # the rejection message
            "created": float,
            "completed": float,
        },
        pk=("workflow_id", "name"),
        foreign_keys=[("workflow_id", "workflows", "workflow_id")],
        not_null=["status", "created"],
    )

    db.table("state").create(
        {"workflow_id": str, "key": str, "value": str, "updated": float},
        pk=("workflow_id", "key"),
        foreign_keys=[("workflow_id", "workflows", "workflow_id")],
        not_null=["value", "updated"],
    )

    db.table("monitors").create(
        {"workflow_id": str, "watcher": str, "created": float},
        pk=("workflow_id", "watcher"),
        foreign_keys=[("workflow_id", "workflows", "workflow_id")],
        not_null=["created"],
    )
    db.table("monitors").create_index(["watcher"], index_name="monitors_by_watcher")

    # Writes made by tools (lock=False) that the node holding the lock must notice.
    db.table("wakeups").create(
        {"id": int, "workflow_id": str, "kind": str, "created": float},
        pk="id",
        not_null=["workflow_id", "kind", "created"],
    )


def _v2_list_order(db: sqlite_utils.Database) -> None:
    # Keyset paging of ``list_workflows(after=..., limit=...)`` (the web console pages
    # through 100,000 workflows): the listing order, whole and per status.
    db.table("workflows").create_index(["created", "workflow_id"],
                                       index_name="workflows_by_created")
    db.table("workflows").create_index(["status", "created", "workflow_id"],
                                       index_name="workflows_by_status_created")


def _v3_trace_context(db: sqlite_utils.Database) -> None:
    # The OpenTelemetry trace context (JSON text: W3C traceparent/tracestate headers) a
    # message was sent in and a workflow was started in, so that the spans of a workflow
    # resumed after a crash join the traces they belong to. NULL without tracing.
    for table in ("inbox", "workflows"):
        if "trace" not in db.table(table).columns_dict:
            db.execute(f"ALTER TABLE {table} ADD COLUMN trace TEXT")


def _v4_schedules_and_queue(db: sqlite_utils.Database) -> None:
    # Schedules (``workflow.schedule`` entries and ``node.schedule``): the spec and the
    # next tick, so that a restart loses no tick and a tick starts one workflow.
    db.table("schedules").create(
        {
            "schedule_id": str,
            "host": str,  # the workflow host whose workflows it starts
            "workflow": str,  # module:qualname of the workflow function
            "input": str,  # JSON: the argument list
            "cron": str,  # a cron expression, or NULL (then ``every`` is set)
            "every": float,  # whole seconds, or NULL (then ``cron`` is set)
            "timezone": str,  # IANA name the cron expression is read in
            "overlap": str,  # 'skip' | 'buffer_one' | 'allow_all'
            "catchup_window": float,  # seconds: how late a tick may still start
            "paused": int,
            "next_tick": float,  # the next tick to act on; NULL: none (paused, or never)
            "last_tick": float,  # the tick acted on last (started or skipped)
            "last_workflow": str,  # id of the workflow the schedule started last
            "buffered_tick": float,  # buffer_one: a tick waiting for last_workflow to end
            "source": str,  # 'config' (synced from the config at start) | 'api'
            "created": float,
            "updated": float,
        },
        pk="schedule_id",
        not_null=["host", "workflow", "input", "timezone", "overlap", "catchup_window",
                  "paused", "source", "created", "updated"],
        defaults={"input": "[]", "timezone": "UTC", "overlap": "skip", "paused": 0,
                  "source": "api"},
    )
    # The queue of a workflow host with limits: a row per workflow started with a dedup
    # key or waiting ``pending`` for a slot, from its start until it ends. ``seq`` is the
    # start order (AUTOINCREMENT: it only grows, also after rows are deleted).
    db.execute(
        "CREATE TABLE queue ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " workflow_id TEXT NOT NULL UNIQUE REFERENCES workflows(workflow_id),"
        " priority INTEGER NOT NULL DEFAULT 0,"
        " dedup TEXT,"
        " enqueued REAL NOT NULL)"
    )
    # one unfinished workflow per dedup key
    db.execute("CREATE UNIQUE INDEX queue_dedup ON queue (dedup) WHERE dedup IS NOT NULL")


def _v5_admitted(db: sqlite_utils.Database) -> None:
    # When a workflow host with a ``rate`` admitted a workflow (it went from waiting to
    # running): the rate counts these over the last period, so it holds across restarts.
    if "admitted" not in db.table("workflows").columns_dict:
        db.execute("ALTER TABLE workflows ADD COLUMN admitted REAL")
    db.execute("CREATE INDEX IF NOT EXISTS workflows_by_admitted ON workflows (host, admitted) "
               "WHERE admitted IS NOT NULL")


def _v6_lean_writes(db: sqlite_utils.Database) -> None:
    # Every step commits one journal row. Kept WITHOUT ROWID the row lives in the
    # B-tree of its primary key alone, so the commit writes one page where a rowid
    # table wrote two (the table and the index of its key); reads by workflow id come
    # back in seq order from that same B-tree. ``workflows_by_status (status, updated)``
    # served no query that ``workflows_by_status_created`` does not, and cost a B-tree
    # update at every status change. ``workflows_by_parent`` holds only children (a
    # top-level start no longer writes a NULL into it; ``parent = ?`` still uses it).
    db.execute(
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
    db.execute("INSERT INTO journal_v6 (workflow_id, seq, kind, name, outcome, attempts, time) "
               "SELECT workflow_id, seq, kind, name, outcome, attempts, time FROM journal")
    db.execute("DROP TABLE journal")
    db.execute("ALTER TABLE journal_v6 RENAME TO journal")
    db.execute("DROP INDEX IF EXISTS workflows_by_status")
    db.execute("DROP INDEX IF EXISTS workflows_by_parent")
    db.execute("CREATE INDEX workflows_by_parent ON workflows (parent) WHERE parent IS NOT NULL")


#: ``MIGRATIONS[i]`` migrates version ``i`` to ``i + 1``.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1_initial, _v2_list_order, _v3_trace_context, _v4_schedules_and_queue, _v5_admitted,
    _v6_lean_writes,
]
SCHEMA_VERSION = len(MIGRATIONS)

#: The tables of schema :data:`SCHEMA_VERSION` (a store without one is damaged).
TABLES = ("schema_version", "workflows", "journal", "inbox", "timers", "promises", "state",
          "monitors", "wakeups", "schedules", "queue")


def _user_tables(db: sqlite_utils.Database) -> list[str]:
    return [name for name in db.table_names() if not name.startswith("sqlite_")]


def check_garrison(db: sqlite_utils.Database, path: str | None) -> None:
    """Refuse a database of another application (tables, but no ``schema_version``)
    with :class:`~garrison.StoreError`, before anything writes to it. An empty
    database is accepted: it has nothing to lose."""
    tables = _user_tables(db)
    if tables and "schema_version" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(
            path,
            f"not a garrison store: a SQLite database with other tables ({shown}) and "
            "no garrison schema; give garrison a file of its own",
        )


def check_tables(db: sqlite_utils.Database, path: str | None) -> None:
    """After :func:`migrate`: every table of the schema is there, else
    :class:`~garrison.StoreError` naming the missing ones."""
    present = set(_user_tables(db))
    missing = [name for name in TABLES if name not in present]
    if missing:
        raise StoreError(
            path,
            f"the store is damaged: schema version {read_version(db)} has no table "
            f"{', '.join(missing)}; restore the store from a backup",
        )


def read_version(db: sqlite_utils.Database) -> int:
    """The schema version recorded in ``db`` (0 for an empty database)."""
    if not db.table("schema_version").exists():
        return 0
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: sqlite_utils.Database, path: str, *, allow_migrate: bool = True) -> int:
    """Bring ``db`` to :data:`SCHEMA_VERSION`; returns the version it had before.

    A database newer than this code raises :class:`~garrison.StoreVersionError`
    naming ``path`` and both versions; so does an older one when
    ``allow_migrate`` is false (tools do not migrate behind a node's back).
    """
    conn = db.conn
    found = read_version(db)
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
                db.table("schema_version").create(
                    {"version": int, "applied": float}, pk="version", if_not_exists=True
                )
            # Another opener (a tool) may have migrated meanwhile: re-check.
            current = read_version(db)
            if current > version:
                continue
            MIGRATIONS[version](db)
            conn.execute(
                "INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                (version + 1, time.time()),
            )
    return found
