"""The PostgreSQL store's schema and migrations (garrison/persistence/_pg_schema.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any

import psycopg
import pytest

from garrison import StoreVersionError
from garrison.persistence import PostgresStore, Transaction, _pg_schema, _schema
from garrison.persistence._store import (
    InboxRecord,
    JournalRecord,
    PromiseRecord,
    TimerRecord,
    WorkflowRecord,
)

TABLES = {
    "workflows", "journal", "inbox", "timers", "promises", "state", "monitors", "wakeups",
    "writers", "schedules", "queue", "nodes", "singletons", "names", "messages",
    "schema_version",
}  # fmt: skip


def tables(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {r[0] for r in rows}


def versions(conn: psycopg.Connection[Any], schema: str = "garrison") -> list[int]:
    rows = conn.execute(f'SELECT version FROM "{schema}".schema_version ORDER BY version')
    return [r[0] for r in rows]


def test_fresh_database_gets_the_current_version(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert _pg_schema.migrate(conn) == 0
        # the connection is left idle, as it was given
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert tables(conn, "garrison") == TABLES
        assert versions(conn) == list(range(1, _pg_schema.SCHEMA_VERSION + 1))
        assert _pg_schema.read_version(conn) == _pg_schema.SCHEMA_VERSION


def test_second_migrate_is_a_no_op(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _pg_schema.migrate(conn)
        applied = conn.execute("SELECT applied FROM garrison.schema_version").fetchall()
        assert _pg_schema.migrate(conn) == _pg_schema.SCHEMA_VERSION
        assert conn.execute("SELECT applied FROM garrison.schema_version").fetchall() == applied


def test_schema_name_is_configurable_and_quoted(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _pg_schema.migrate(conn, "tenant-A")
        assert tables(conn, "tenant-A") == TABLES
        assert tables(conn, "garrison") == set()
        assert _pg_schema.migrate(conn) == 0  # the default schema is another store


@pytest.mark.parametrize("by", ["migrate", "create_store"])
def test_concurrent_migrations_wait_for_each_other(postgres_url: str, by: str) -> None:
    # A third connection holds the migration lock while two openers start: both find
    # version 0, queue on the lock, and the second must see the first's work once it
    # gets the lock (else it would create the tables twice and fail). Only the first
    # says it found none (two `garrison workflows start` at once on a new database both
    # said they created the store, helper-372).
    from garrison.persistence import create_store

    errors: list[BaseException] = []
    results: list[int] = []

    def opener() -> None:
        try:
            if by == "create_store":
                results.append(0 if create_store(postgres_url) else _pg_schema.SCHEMA_VERSION)
                return
            with psycopg.connect(postgres_url) as conn:
                results.append(_pg_schema.migrate(conn))
        except BaseException as exc:
            errors.append(exc)

    with psycopg.connect(postgres_url) as holder, psycopg.connect(postgres_url) as spy:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (_pg_schema._lock_key("garrison"),))
        threads = [threading.Thread(target=opener) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while spy.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone() != (2,):
            spy.rollback()
            assert time.monotonic() < deadline, "the openers never queued on the lock"
            time.sleep(0.01)
        holder.rollback()  # release the lock
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert sorted(results) == [0, _pg_schema.SCHEMA_VERSION]
        assert versions(spy) == list(range(1, _pg_schema.SCHEMA_VERSION + 1))


def race(url: str, schema: str) -> list[BaseException]:
    """Two openers migrate ``schema`` at the same moment; returns their errors."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            with psycopg.connect(url) as conn:
                barrier.wait(10)
                _pg_schema.migrate(conn, schema)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_concurrent_migrations_from_a_standing_start(postgres_url: str) -> None:
    for round_ in range(3):
        assert race(postgres_url, f"race{round_}") == []
        with psycopg.connect(postgres_url) as conn:
            assert versions(conn, f"race{round_}") == list(range(1, _pg_schema.SCHEMA_VERSION + 1))


def test_newer_schema_is_refused_naming_the_store_and_versions(postgres_url: str) -> None:
    newer = _pg_schema.SCHEMA_VERSION + 1
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _pg_schema.migrate(conn)
        conn.execute("INSERT INTO garrison.schema_version VALUES (%s, 0)", (newer,))
        with pytest.raises(StoreVersionError, match="newer garrison") as info:
            _pg_schema.migrate(conn)
        assert (info.value.found, info.value.expected) == (newer, _pg_schema.SCHEMA_VERSION)
        assert conn.info.dbname in str(info.value) and "schema garrison" in str(info.value)
        assert versions(conn)[-1] == newer  # nothing was touched


def test_tools_do_not_migrate(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        with pytest.raises(StoreVersionError, match="migrate it") as info:
            _pg_schema.migrate(conn, allow_migrate=False, where="the-store")
        assert "'the-store'" in str(info.value)
        assert tables(conn, "garrison") == set()


def test_migrate_refuses_a_connection_inside_a_transaction(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(ValueError, match="idle connection"):
            _pg_schema.migrate(conn)


def test_v7_keeps_the_timers_of_a_schema_before_it_with_no_kind(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # as SQLite's version 7: a timer of a schema 6 store has no kind (None: a replay lets
    # either wait take it); timers written since record theirs
    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:6])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", 6)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _pg_schema.migrate(conn, "v6")
        conn.execute("INSERT INTO v6.workflows (workflow_id, name, status, created, updated) "
                     "VALUES ('w1', 'm:f', 'sleeping', 0, 0)")
        conn.execute("INSERT INTO v6.timers (workflow_id, seq, deadline) VALUES ('w1', 1, 5)")
        monkeypatch.undo()
        assert _pg_schema.migrate(conn, "v6") == 6
        assert versions(conn, "v6") == list(range(1, _pg_schema.SCHEMA_VERSION + 1))
        conn.execute("INSERT INTO v6.timers (workflow_id, seq, deadline, kind) "
                     "VALUES ('w1', 2, 6, 'receive')")
        rows = conn.execute(f"SELECT {TimerRecord.COLUMNS} FROM v6.timers ORDER BY seq")
        assert [(t.seq, t.kind) for t in map(TimerRecord.from_row, rows)] == [
            (1, None), (2, "receive")]


def test_v8_keeps_the_dedup_key_a_dropped_queue_row_held(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # as SQLite's version 8: a queue row's dedup key stays on the workflow's row when the
    # row is dropped (a retry takes it back); none for a workflow that ended before
    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:7])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", 7)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _pg_schema.migrate(conn)
        conn.execute("INSERT INTO garrison.workflows (workflow_id, name, status, created, "
                     "updated) VALUES ('old', 'm:f', 'failed', 0, 0)")
        monkeypatch.undo()
        _pg_schema.migrate(conn)
        assert versions(conn) == list(range(1, _pg_schema.SCHEMA_VERSION + 1))
    with PostgresStore(postgres_url) as store:
        assert store.kept_dedup("old") is None
        store.write(Transaction().create_workflow("w1", "m:f", "[]", run_id="r1", time=1.0)
                    .enqueue("w1", "r1", dedup="k", time=1.0)
                    .create_workflow("w2", "m:f", "[]", run_id="r2", time=1.0)
                    .enqueue("w2", "r2", time=1.0))
        store.write(Transaction().dequeue("w1").dequeue("w2").dequeue("nobody"))
        assert (store.kept_dedup("w1"), store.kept_dedup("w2"),
                store.kept_dedup("nobody")) == ("k", None, None)
        assert store.queue_entries() == []



def test_v11_admit_counts_a_kept_retry_once_and_a_node_of_v10_is_refused(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # schema 11's admit(): a retry whose earlier admission is inside the rate's period
    # keeps that time and is counted once (a batch admits what one at a time would);
    # a store of schema 10 migrates, and code of schema 10 is refused by it afterwards
    current = _pg_schema.SCHEMA_VERSION
    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:10])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", 10)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _pg_schema.migrate(conn)
        conn.execute("INSERT INTO garrison.workflows (workflow_id, name, status, run_id, "
                      "host, created, updated, admitted) VALUES "
                      "('p0', 'm:f', 'pending', 'r0', 'h', 0, 0, 100), "
                      "('p1', 'm:f', 'pending', 'r1', 'h', 0, 0, NULL)")
        monkeypatch.undo()
        assert _pg_schema.migrate(conn) == 10
        assert versions(conn) == list(range(1, _pg_schema.SCHEMA_VERSION + 1))
    with PostgresStore(postgres_url) as store:
        got = store.write(Transaction().admit("h", [("p0", "r0"), ("p1", "r1")],
                                              rate=(2, 60.0), time=130.0))[0]
        assert got == ["p0", "p1"]
        assert store.admitted_since("h", 0.0) == [100.0, 130.0]
    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:10])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", 10)
    with psycopg.connect(postgres_url, autocommit=True) as conn, \
            pytest.raises(StoreVersionError, match="newer garrison") as info:
        _pg_schema.migrate(conn)
    assert (info.value.found, info.value.expected) == (current, 10)


def test_v12_indexes_a_workflow_s_children_in_the_listing_order(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # as SQLite's version 10: a page of a workflow's children is a range of the index
    # (parent, created, workflow_id), not all of them read and sorted; rows are kept
    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:11])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", 11)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _pg_schema.migrate(conn)
        conn.execute("INSERT INTO garrison.workflows (workflow_id, name, status, parent, "
                     "created, updated) VALUES ('c1', 'm:f', 'running', 'workflows/p', 2, 2), "
                     "('c0', 'm:f', 'running', 'workflows/p', 1, 1)")
        monkeypatch.undo()
        assert _pg_schema.migrate(conn) == 11
        assert versions(conn) == list(range(1, _pg_schema.SCHEMA_VERSION + 1))
        (definition,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'garrison' "
            "AND indexname = 'workflows_by_parent'").fetchone()
        assert '(parent, created, workflow_id COLLATE "C")' in definition, definition
    with PostgresStore(postgres_url) as store:
        first = store.list_workflows(parent="workflows/p", limit=1)
        assert [r.workflow_id for r in first] == ["c0"]
        assert [r.workflow_id for r in store.list_workflows(
            parent="workflows/p", after=(first[0].created, "c0"), limit=5)] == ["c1"]


# ----------------------------------------------------- same records as SQLite
NOW = 1_700_000_000.123456

ROWS: dict[str, tuple[str, list[tuple[Any, ...]]]] = {
    "workflows": (
        "workflow_id, name, status, input, result, error, parent, run_id, attempt, host, "
        "created, updated, search, memo, cancel_requested",
        [
            (
                "w1",
                "mod:wf",
                "completed",
                '[1, "a"]',
                '{"z": 1, "a": [1.5, null]}',
                None,
                "node-a/1",
                "r1",
                3,
                "node-a",
                NOW,
                NOW + 1.5,
                '{"zeta": "x", "alpha": 2}',
                '{"m": true}',
                1,
            ),
            (
                "w2",
                "mod:wf",
                "failed",
                "[]",
                None,
                json.dumps({"type": "ValueError", "message": "bad", "traceback": "tb"}),
                None,
                None,
                1,
                None,
                NOW,
                NOW,
                "{}",
                "{}",
                0,
            ),
        ],
    ),
    "journal": (
        "workflow_id, seq, kind, name, outcome, attempts, time",
        [
            ("w1", 0, "activity", "step", '{"ok": [1, 2]}', 2, NOW),
            ("w1", 1, "now", "", "null", 1, NOW),
        ],
    ),
    "inbox": (
        "id, workflow_id, msg_id, topic, payload, sender, kind, call_ref, created, consumed_seq",
        [
            (1, "w1", "m1", "ping", '{"b": 1, "a": 2}', "node-b/7", "message", "c1", NOW, 4),
            (2, "w1", "m2", "evt", "null", None, "event", None, NOW, None),
        ],
    ),
    "timers": ("workflow_id, seq, deadline, kind",
               [("w1", 5, NOW + 60, "sleep"), ("w2", 6, NOW + 61, None)]),
    "promises": (
        "workflow_id, name, status, value, error, created, completed",
        [
            ("w1", "p", "resolved", "[1]", None, NOW, NOW + 2),
            ("w1", "q", "pending", None, None, NOW, None),
        ],
    ),
}
RECORDS = {
    "workflows": WorkflowRecord,
    "journal": JournalRecord,
    "inbox": InboxRecord,
    "timers": TimerRecord,
    "promises": PromiseRecord,
}


def test_rows_read_back_build_the_same_records_as_sqlite(postgres_url: str) -> None:
    lite = sqlite3.connect(":memory:", isolation_level=None)
    _schema.migrate(lite, ":memory:")
    with psycopg.connect(postgres_url) as conn:
        _pg_schema.migrate(conn)
        for table, (columns, rows) in ROWS.items():
            marks = ", ".join("?" * len(rows[0]))
            lite.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
            pg_marks = ", ".join(["%s"] * len(rows[0]))
            conn.cursor().executemany(
                f"INSERT INTO garrison.{table} ({columns}) VALUES ({pg_marks})", rows
            )
        for table, record in RECORDS.items():
            cols = record.COLUMNS  # the SQLite store's SELECT list, verbatim
            key = cols.split(",")[0]
            got_lite = [
                record.from_row(r)
                for r in lite.execute(f"SELECT {cols} FROM {table} ORDER BY {key}")
            ]
            got_pg = [
                record.from_row(r)
                for r in conn.execute(f"SELECT {cols} FROM garrison.{table} ORDER BY {key}")
            ]
            assert got_pg == got_lite, table
            assert len(got_pg) == len(ROWS[table][1])
        # JSON text comes back verbatim: key order of search attributes is kept
        (w1,) = [r for r in got_pg_workflows(conn) if r.workflow_id == "w1"]
        assert list(w1.search) == ["zeta", "alpha"]


def got_pg_workflows(conn: psycopg.Connection[Any]) -> list[WorkflowRecord]:
    sel = f"SELECT {WorkflowRecord.COLUMNS} FROM garrison.workflows"
    return [WorkflowRecord.from_row(r) for r in conn.execute(sel)]


def test_search_attributes_are_indexed_jsonb(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        _pg_schema.migrate(conn)
        conn.execute(
            "INSERT INTO garrison.workflows (workflow_id, name, status, created, updated, search)"
            " VALUES ('a', 'm:f', 'running', 0, 0, %s), ('b', 'm:f', 'running', 0, 0, %s)",
            ('{"tags": ["x", "y"], "n": 1}', '{"tags": ["x"], "n": 1.0}'),
        )

        def match(key: str, value: Any) -> list[str]:
            v = json.dumps(value)
            rows = conn.execute(
                "SELECT workflow_id FROM garrison.workflows"
                " WHERE search_jsonb @> jsonb_build_object(%s::text, %s::jsonb)"
                " AND search_jsonb -> %s = %s::jsonb ORDER BY workflow_id",
                (key, v, key, v),
            )
            return [r[0] for r in rows]

        assert match("tags", ["x"]) == ["b"]  # exact, not array containment
        assert match("n", 1) == ["a", "b"]  # 1 == 1.0, as SQLite compares them
        assert match("n", 2) == []
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT 1 FROM garrison.workflows WHERE search_jsonb @> '{\"n\": 1}'"
        ).fetchall()
        assert "workflows_by_search" in " ".join(r[0] for r in plan)


def test_the_connections_that_plan_by_key_compile_nothing(postgres_url: str) -> None:
    """helper-259: the writer's and the cluster's connections plan with enable_seqscan
    off, which prices a statement that scans a table (the join's ``DELETE FROM nodes``)
    past the server's JIT thresholds: it was compiled at every run (tens of
    milliseconds; a ``statement_timeout`` of 50 ms cancelled the join at each try)."""
    with PostgresStore(postgres_url) as store:
        conn = store._connect("test", by_key=True)
        try:
            plan = [r[0] for r in conn.execute(
                "EXPLAIN (ANALYZE) DELETE FROM garrison.nodes WHERE name = 'none'")]
        finally:
            conn.close()
    assert not any(line.startswith("JIT") for line in plan), plan


def test_json_text_keeps_nul_escapes_but_search_cannot(postgres_url: str) -> None:
    # Why JSON is text: PostgreSQL's json processing refuses \u0000, which the
    # converter writes for a NUL in a string; only search_jsonb has to parse it.
    nul = json.dumps({"s": "a\x00b"})
    with psycopg.connect(postgres_url) as conn:
        _pg_schema.migrate(conn)
        conn.execute(
            "INSERT INTO garrison.workflows (workflow_id, name, status, created, updated, memo)"
            " VALUES ('w', 'm:f', 'running', 0, 0, %s)",
            (nul,),
        )
        (memo,) = conn.execute("SELECT memo FROM garrison.workflows").fetchone() or (None,)
        assert json.loads(memo) == {"s": "a\x00b"}
        with pytest.raises(psycopg.errors.UntranslatableCharacter):
            conn.execute("UPDATE garrison.workflows SET search = %s", (nul,))


def test_a_closed_node_store_has_let_go_of_its_locks_when_close_returns(
        postgres_url: str) -> None:
    """The node's locks are session locks of its writer connection: the server let them
    go when the connection's backend ended, after ``close()`` had returned, so a tool
    asking at once (``migrate_store`` right after a node stopped) could still find the
    schema's node lock held (seen in CI: ``StoreLocked: ... a node runs schema``)."""
    key = _pg_schema.node_lock_key("garrison")
    with psycopg.connect(postgres_url, autocommit=True) as probe:
        for _ in range(30):
            PostgresStore(postgres_url).close()
            got = probe.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            assert got == (True,)
            probe.execute("SELECT pg_advisory_unlock(%s)", (key,))


def test_migrating_a_copy_refuses_a_schema_a_node_runs(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``garrison workflows replay --migrate`` opened the store as a node would: on
    PostgreSQL, where every node holds the schema's node lock shared, that migrated a
    schema in use under its running nodes. ``migrate_store`` takes the lock alone."""
    from garrison import StoreLocked
    from garrison.persistence import migrate_store

    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:7])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", 7)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _pg_schema.migrate(conn)
    running = PostgresStore(postgres_url)  # a node of the older garrison, at version 7
    monkeypatch.undo()
    try:
        with pytest.raises(StoreLocked, match="a node runs schema"):
            migrate_store(postgres_url)
    finally:
        running.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert versions(conn) == list(range(1, 8))
        migrate_store(postgres_url)  # no node: migrated
        assert versions(conn) == list(range(1, _pg_schema.SCHEMA_VERSION + 1))
