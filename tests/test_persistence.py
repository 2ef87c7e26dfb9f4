"""The stores: schema and migrations, the lock, records, atomic writes.

Tests taking ``store`` or ``store_spec`` run on both stores (SQLite, PostgreSQL);
the others are about SQLite's file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _stores import no_digit_limit, sql

from garrison._errors import (
    NoSuchWorkflow,
    PayloadError,
    PromiseAlreadyCompleted,
    StoreLocked,
    StoreVersionError,
)
from garrison.actors._values import ErrorInfo, Pid
from garrison.persistence import (
    SCHEMA_VERSION,
    JournalRecord,
    PromiseStatus,
    SQLiteStore,
    TimerRecord,
    Transaction,
    WorkflowStatus,
    open_store,
    state_digest,
)

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
#: a second row for one key, a row for a workflow that does not exist
INTEGRITY = (sqlite3.IntegrityError, psycopg.IntegrityError)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "app.db")


@pytest.fixture
def store(store_spec: str):  # type: ignore[no-untyped-def]
    with open_store(store_spec) as s:
        yield s


def _workflow(store: SQLiteStore, wid: str = "w1", **kw: object) -> None:
    store.write(Transaction().create_workflow(wid, "app.orders:order_workflow", [1, "a"], **kw))  # type: ignore[arg-type]


# -- schema, pragmas, migrations ---------------------------------------------


def _schema_text(conn: sqlite3.Connection) -> str:
    rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                        "ORDER BY type, name").fetchall()
    return "".join(f"-- {kind} {name}\n{sql};\n" for kind, name, sql in rows)


def test_a_new_store_holds_the_schema_that_stores_created_before_hold(db_path: str) -> None:
    """The migrations are plain SQL now; the tables sqlite-utils created for versions 1,
    2 and 4 are the statements it generated, word for word: a store created now and
    one created before (``tests/golden/sqlite_schema.sql``, written by such a store)
    hold the same schema. A new migration changes both: write the file again from a
    store created by the new code, and read the difference."""
    golden = Path(__file__).parent / "golden" / "sqlite_schema.sql"
    expected = golden.read_text().split("\n\n", 1)[1]  # after the file's header
    with SQLiteStore(db_path) as store:
        assert _schema_text(store._conn) == expected


def _in_a_fresh_interpreter(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_opening_a_store_imports_no_sqlite_utils(tmp_path: Path) -> None:
    """sqlite-utils imports numpy and pandas when installed (a tenth of a second at
    start, a heap a quarter larger for every full garbage collection): a node never
    needs it; ``store.db`` (a view for inspecting a store) imports it when asked."""
    code = (
        "import sys, garrison\n"
        "from garrison.persistence import SQLiteStore\n"
        f"store = SQLiteStore({str(tmp_path / 'new.db')!r})\n"
        "assert 'sqlite_utils' not in sys.modules, 'opening a store imported sqlite_utils'\n"
        "assert store.db.table_names()\n"
        "assert 'sqlite_utils' in sys.modules\n"
        "store.close()\n"
    )
    _in_a_fresh_interpreter(code)


def test_a_node_imports_no_test_tooling(tmp_path: Path) -> None:
    """``trio.testing`` imports pytest where it is installed (146 modules, a tenth of a
    second at start, a heap 40% larger for every full garbage collection): neither a
    node running a workflow nor the PostgreSQL store's module imports it."""
    code = (
        "import sys, trio, garrison\n"
        "from garrison.persistence import SQLiteStore, _postgres\n"
        "async def wf(x: int) -> int:\n"
        "    return x + 1\n"
        "async def main() -> None:\n"
        f"    store = SQLiteStore({str(tmp_path / 'n.db')!r})\n"
        "    async with garrison.open_node(store=store) as node:\n"
        "        await node.start_workflow(wf, 1, id='w')\n"
        "        assert await node.workflow('w').result() == 2\n"
        "trio.run(main)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')\n"
        "                or m == 'trio.testing')\n"
        "assert not loaded, loaded\n"
    )
    _in_a_fresh_interpreter(code)


def test_new_store_has_schema_and_pragmas(db_path: str) -> None:
    store = SQLiteStore(db_path)
    tables = set(store.db.table_names())
    assert {"schema_version", "workflows", "journal", "inbox", "timers", "promises",
            "state", "monitors"} <= tables  # fmt: skip
    conn = store.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    # the node's writer never waits long in the trio thread: a busy store is retried by
    # the group commit in a worker thread (tests/test_store_busy.py)
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10
    assert store._reader.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert store.journal("nobody") == []
    store.close()


def test_synchronous_full_and_invalid(tmp_path: Path) -> None:
    with SQLiteStore(str(tmp_path / "f.db"), synchronous="full") as s:
        assert s.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    with pytest.raises(ValueError, match="'sometimes'"):
        SQLiteStore(str(tmp_path / "g.db"), synchronous="sometimes")


def test_reopen_keeps_data_and_does_not_migrate_again(store_spec: str) -> None:
    with open_store(store_spec) as s:
        _workflow(s)
        versions = sql(store_spec, "SELECT count(*) FROM schema_version")
    with open_store(store_spec) as s:
        assert s.get_workflow("w1") is not None
        assert sql(store_spec, "SELECT count(*) FROM schema_version") == versions


def test_an_older_garrisons_check_sees_a_migration_a_killed_node_left(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The config check (``garrison check``, check_store_file) reads a store's file alone,
    not its -wal. A node that migrated a store left the new version in the -wal: killed
    before a checkpoint (kill -9, a power loss), the file said the old version until a
    node opened it again, and an older garrison's check said ok to the store its node
    then refused (StoreVersionError). The migration is checkpointed into the file."""
    from garrison.persistence import _sqlite

    with SQLiteStore(db_path) as store:  # made like a store of the version before
        conn = store.db.conn
        conn.execute("ALTER TABLE inbox DROP COLUMN reply")
        conn.execute("DELETE FROM schema_version WHERE version >= ?", (SCHEMA_VERSION,))
    with SQLiteStore(db_path):  # migrates it; still open, as a node killed now leaves it
        monkeypatch.setattr(_sqlite, "SCHEMA_VERSION", SCHEMA_VERSION - 1)  # older code
        with pytest.raises(StoreVersionError, match=f"has schema version {SCHEMA_VERSION}, "
                           f"this version of garrison knows schema version "
                           f"{SCHEMA_VERSION - 1}: it was written by a newer garrison"):
            _sqlite.check_store_file(db_path)


def test_newer_schema_is_refused_naming_store_and_versions(store_spec: str) -> None:
    with open_store(store_spec) as s:
        where = s.path
        newer = (s.schema_version + 5,)
    sql(store_spec, "INSERT INTO schema_version VALUES (?, 0)", newer)
    with pytest.raises(StoreVersionError) as info:
        open_store(store_spec)
    message = str(info.value)
    assert where is not None and where in message
    found, expected = info.value.found, info.value.expected
    assert f"version {found}" in message and f"version {expected}" in message
    assert found == expected + 5
    # a refused open leaves the lock free
    with pytest.raises(StoreVersionError):
        open_store(store_spec)


def test_v6_keeps_the_journal_in_its_key_and_indexes_less(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """A store of schema 5 keeps every journal record through the migration to 6, whose
    journal is a WITHOUT ROWID table (a step's commit writes one B-tree, not two), and
    whose index of parents holds only children (a top-level start writes none)."""
    from garrison.persistence import _schema

    path = str(tmp_path / "v5.db")
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:5])
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", 5)
    with SQLiteStore(path) as old:
        old.write(Transaction().create_workflow("w1", "m:f", "[]", time=1.0))
        for seq in (1, 2, 3):
            old.write(Transaction().append_journal("w1", seq, "activity", "m:step",
                                                   {"ok": seq}, attempts=seq, time=2.0))
        assert old.db.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 5
    monkeypatch.undo()
    with SQLiteStore(path) as new:
        conn = new.db.conn
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] \
            == SCHEMA_VERSION
        table_sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'journal'").fetchone()[0]
        assert "WITHOUT ROWID" in table_sql
        assert conn.execute("SELECT count(*) FROM sqlite_master "
                            "WHERE name = 'workflows_by_status'").fetchone()[0] == 0
        parent_sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'workflows_by_parent'").fetchone()[0]
        assert "WHERE parent IS NOT NULL" in parent_sql  # children only
        assert [(r.seq, r.outcome, r.attempts) for r in new.journal("w1")] == [
            (1, {"ok": 1}, 1), (2, {"ok": 2}, 2), (3, {"ok": 3}, 3)]
        new.write(Transaction().append_journal("w1", 4, "activity", "m:step", {"ok": 4},
                                               time=3.0))
        with pytest.raises(sqlite3.IntegrityError):  # still one record per seq
            new.write(Transaction().append_journal("w1", 4, "activity", "m:step", 0, time=3.0))
        with pytest.raises(sqlite3.IntegrityError):  # and only for a known workflow
            new.write(Transaction().append_journal("nobody", 1, "activity", "m:step", 0,
                                                   time=3.0))


def test_v10_a_page_of_a_workflow_s_children_is_a_range_of_its_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The children of a workflow are indexed in the listing order after their parent:
    a page of them (the console's, ``list --parent``'s) reads that page, where on
    ``(parent)`` alone each page read and sorted every child after its cursor (0.2 s a
    page at 50,000 children). A store of schema 9 gets the index, its rows kept."""
    from garrison.persistence import _schema

    path = str(tmp_path / "v9.db")
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:9])
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", 9)
    with SQLiteStore(path) as old:
        tx = Transaction().create_workflow("p", "m:f", [], time=1.0)
        for i in range(30):
            tx.create_workflow(f"c{i:02d}", "m:f", [], parent="workflows/p", time=2.0 + i % 7)
        old.write(tx)
    monkeypatch.undo()
    with SQLiteStore(path) as new:
        conn = new.db.conn
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] \
            == SCHEMA_VERSION
        statements: list[str] = []
        new._reader.set_trace_callback(statements.append)
        pages, after = [], None
        while True:
            page = new.list_workflows(parent="workflows/p", limit=8, after=after)
            if not page:
                break
            pages.append([r.workflow_id for r in page])
            after = (page[-1].created, page[-1].workflow_id)
        new._reader.set_trace_callback(None)
        expected = [r.workflow_id for r in sorted(
            new.list_workflows(parent="workflows/p"), key=lambda r: (r.created, r.workflow_id))]
        assert [wid for page in pages for wid in page] == expected and len(expected) == 30
        reads = [sql for sql in statements if "parent = " in sql]
        assert reads
        for sql in reads:
            plan = " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "workflows_by_parent" in plan and "TEMP B-TREE" not in plan, plan


def test_v7_keeps_the_timers_of_a_store_before_it_with_no_kind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timers of a store of schema 6 had no kind (which wait is under way): through the
    migration to 7 they keep their rows with ``kind`` None, which a replay lets either
    wait take; timers written since record theirs."""
    from garrison.persistence import _schema

    path = str(tmp_path / "v6.db")
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:6])
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", 6)
    with SQLiteStore(path) as old:
        old.write(Transaction().create_workflow("w1", "m:f", "[]", time=1.0))
        old.db.conn.execute("INSERT INTO timers (workflow_id, seq, deadline) VALUES (?, ?, ?)",
                            ("w1", 1, T0.timestamp()))
    monkeypatch.undo()
    with SQLiteStore(path) as new:
        conn = new.db.conn
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] \
            == SCHEMA_VERSION
        assert new.timers("w1") == [TimerRecord("w1", 1, T0, None)]
        new.write(Transaction().add_timer("w1", 2, T0, "receive"))
        assert [(t.seq, t.kind) for t in new.timers("w1")] == [(1, None), (2, "receive")]


def test_v8_keeps_the_dedup_key_a_dropped_queue_row_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping a workflow's queue row (its end) keeps the dedup key the row held on the
    workflow's row, for a retry to take back (``kept_dedup``); a workflow that ended in
    a store of schema 7 has none."""
    from garrison.persistence import _schema

    path = str(tmp_path / "v7.db")
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:7])
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", 7)
    with SQLiteStore(path) as old:
        old.write(Transaction().create_workflow("old", "m:f", "[]", run_id="r0", time=1.0)
                  .enqueue("old", "r0", dedup="k", time=1.0))
        old.db.conn.execute("DELETE FROM queue WHERE workflow_id = 'old'")  # as 7 did
    monkeypatch.undo()
    with SQLiteStore(path) as new:
        assert new.kept_dedup("old") is None
        new.write(Transaction().create_workflow("w1", "m:f", "[]", run_id="r1", time=1.0)
                  .enqueue("w1", "r1", dedup="k", time=1.0)
                  .create_workflow("w2", "m:f", "[]", run_id="r2", time=1.0)
                  .enqueue("w2", "r2", time=1.0))
        new.write(Transaction().dequeue("w1").dequeue("w2").dequeue("nobody"))
        assert (new.kept_dedup("w1"), new.kept_dedup("w2"), new.kept_dedup("nobody")) == (
            "k", None, None)
        assert new.queue_entries() == []


def test_unlocked_opener_does_not_create_or_migrate(tmp_path: Path) -> None:
    # (nu463: README's client.py run before any node had made app.db said only "no
    # garrison store at 'app.db'", not that a client never makes one, nor what does)
    missing = str(tmp_path / "missing.db")
    for opener in ({"lock": False}, {"readonly": True}):
        with pytest.raises(FileNotFoundError) as info:
            SQLiteStore(missing, **opener)
        assert str(info.value) == (
            f"no garrison store at {missing!r}: a store opened with lock=False or "
            "readonly=True (a client, a tool) only opens one that exists; a node creates "
            "it the first time it opens it (garrison.open_node(store=PATH), `garrison run "
            "CONFIG --store PATH`)")
    empty = str(tmp_path / "empty.db")  # a SQLite database without tables
    conn = sqlite3.connect(empty)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("DROP TABLE t")
    conn.close()
    with pytest.raises(StoreVersionError, match="open it once with a node"):
        SQLiteStore(empty, lock=False)


def test_memory_store_is_a_private_file_removed_on_close() -> None:
    store = SQLiteStore()
    assert store.path is None
    file = store.db.conn.execute("PRAGMA database_list").fetchone()[2]
    assert os.path.exists(file)
    _workflow(store)
    assert store.get_workflow("w1") is not None
    store.close()
    assert not os.path.exists(file)
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.get_workflow("w1")


# -- the lock ------------------------------------------------------------------


def test_second_opener_in_this_process_is_refused(store_spec: str) -> None:
    if store_spec.startswith("postgresql://"):
        # a PostgreSQL store is shared by the nodes of a cluster (tests/test_cluster.py)
        with open_store(store_spec) as first, open_store(store_spec) as second:
            assert first.locked and second.locked
        return
    with open_store(store_spec) as first:
        with pytest.raises(StoreLocked) as info:
            open_store(store_spec)
        assert info.value.path == first.path
        assert str(first.path) in str(info.value)
    with open_store(store_spec) as again:  # released on close
        assert again.locked


def test_opener_in_another_process_is_refused(store: SQLiteStore, store_spec: str) -> None:
    db_path = store_spec
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from garrison.persistence import StoreLocked, open_store
        try:
            open_store({db_path!r})
        except StoreLocked as exc:
            print("LOCKED", exc)
        else:
            print("OPENED")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    if db_path.startswith("postgresql://"):  # shared by a cluster (tests/test_cluster.py)
        assert out.startswith("OPENED")
        return
    assert out.startswith("LOCKED") and str(store.path) in out


def test_tool_opens_unlocked_reads_and_queues_writes(store: SQLiteStore, store_spec: str
                                                     ) -> None:
    _workflow(store)
    store.write(Transaction().create_promise("w1", "approval"))
    with open_store(store_spec, lock=False) as tool:
        assert not tool.locked
        assert tool.get_workflow("w1") is not None
        tool.deliver("w1", "signal", {"go": True}, sender="cli/1")
        tool.resolve_promise("w1", "approval", "yes")
        tool.request_cancel("w1", time=1_700_000_000.25)
    assert [m.topic for m in store.pending_messages("w1")] == ["signal"]
    promise = store.get_promise("w1", "approval")
    assert promise is not None and promise.value == "yes"
    workflow = store.get_workflow("w1")
    assert workflow is not None and workflow.cancel_requested
    assert workflow.cancel_time == 1_700_000_000.25  # (a node resuming it orders it so)
    wakeups = store.take_wakeups()
    assert [w.workflow_id for w in wakeups] == ["w1", "w1", "w1"]
    assert store.take_wakeups() == []
    # the node's own writes leave no wakeups
    store.set_state("w1", "k", 1)
    assert store.take_wakeups() == []


def test_write_each_commits_each_transaction_on_its_own_in_one_commit(
        store: SQLiteStore, store_spec: str) -> None:
    """A tool's writes of many workflows (a bulk retry) in one commit: one that fails
    (its workflow changed since it was read) is rolled back alone, its error in its
    place; the others commit once each, each leaving the node its wakeup."""
    for wid in ("a", "b", "c"):
        store.write(Transaction().create_workflow(wid, "m:f", [], status="failed"))
    store.write(Transaction().update_workflow("b", status="waiting"))  # (changed)

    def retried(wid: str) -> Transaction:
        return (Transaction().expect_workflow(wid, status="failed", attempt=1)
                .update_workflow(wid, status="pending", attempt=2))

    with open_store(store_spec, lock=False) as tool:
        before = tool.statistics().transactions
        outcomes = tool.write_each([retried("a"), retried("b"), Transaction(), retried("c")])
        assert tool.statistics().transactions - before <= 1  # (one commit)
    assert outcomes[0] == [None, None] and outcomes[2] == [] and outcomes[3] == [None, None]
    assert isinstance(outcomes[1], ValueError), outcomes
    assert "changed since it was read" in str(outcomes[1])
    got = {w: (str(r.status), r.attempt) for w in "abc"
           if (r := store.get_workflow(w)) is not None}
    assert got == {"a": ("pending", 2), "b": ("waiting", 1), "c": ("pending", 2)}
    assert sorted(w.workflow_id for w in store.take_wakeups()) == ["a", "c"]


async def test_a_store_closed_as_its_wakeup_watcher_answers_stops_quietly(
        db_path: str) -> None:
    """A node closes its store before it cancels its tasks: the watcher thread then
    returns, and the waiting ``wakeups()`` must not read the closed store (it used to
    raise ``RuntimeError: store is closed`` out of the node)."""
    import threading

    import trio
    import trio.testing

    store = SQLiteStore(db_path)
    closed = threading.Event()

    def watcher_thread() -> None:  # the store closes while the thread is answering
        store.close()
        closed.set()

    store._wait_for_wakeup = watcher_thread  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.wakeups)
        await trio.to_thread.run_sync(closed.wait)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


# -- workflows -----------------------------------------------------------------


def test_create_get_update_list(store: SQLiteStore) -> None:
    tx = Transaction().create_workflow(
        "w1", "app:flow", [1, {"a": 2}], parent=Pid("workflows", "p1"), host="workflows",
        search={"status": "shipping", "region": "eu"}, memo={"note": "x"}, time=T0,
    )  # fmt: skip
    assert store.write(tx) == [True]
    assert store.write(Transaction().create_workflow("w1", "app:flow", [9])) == [False]
    _workflow(store, "w2", search={"status": "paid"})
    _workflow(store, "w3", status="running")

    rec = store.get_workflow("w1")
    assert rec is not None
    assert rec.name == "app:flow" and rec.input == [1, {"a": 2}]
    assert rec.status == WorkflowStatus.PENDING == "pending"
    assert rec.parent == Pid("workflows", "p1") and rec.host == "workflows"
    assert rec.created == T0 and rec.attempt == 1 and rec.run_id
    assert rec.memo == {"note": "x"} and not rec.cancel_requested
    assert store.get_workflow("nope") is None

    error = ErrorInfo("ValueError", "boom", "tb")
    store.write(Transaction().update_workflow("w2", status="failed", error=error))
    store.write(Transaction().update_workflow("w3", status="completed", result={"total": 3}))
    w2, w3 = store.get_workflow("w2"), store.get_workflow("w3")
    assert w2 is not None and w2.error == error and w2.status.finished
    assert w3 is not None and w3.result == {"total": 3}

    assert [r.workflow_id for r in store.list_workflows()] == ["w1", "w2", "w3"]
    assert [r.workflow_id for r in store.list_workflows("completed")] == ["w3"]
    assert [r.workflow_id for r in store.list_workflows(["failed", "pending"])] == ["w1", "w2"]
    shipping = store.list_workflows(search={"status": "shipping"})
    assert [r.workflow_id for r in shipping] == ["w1"]
    assert store.list_workflows(search={"status": "shipping", "region": "us"}) == []
    assert [r.workflow_id for r in store.list_workflows(parent="workflows/p1")] == ["w1"]
    assert [r.workflow_id for r in store.unfinished_workflows()] == ["w1"]
    assert len(store.list_workflows(limit=2)) == 2

    store.write(Transaction().set_attributes("w1", search={"status": "done", "region": None}))
    rec = store.get_workflow("w1")
    assert rec is not None and rec.search == {"status": "done"}

    with pytest.raises(ValueError, match="'sleepy'"):
        Transaction().update_workflow("w1", status="sleepy")
    with pytest.raises(NoSuchWorkflow, match="'ghost'"):
        store.write(Transaction().update_workflow("ghost", status="running"))


def test_a_search_filter_with_nan_or_infinity_is_a_value_error(store: SQLiteStore) -> None:
    """No search attribute holds NaN or infinity (workflow.attrs refuses them), and
    neither store can compare with one: SQLite raised its OperationalError (malformed
    JSON), which the command line took for a damaged store. A ValueError naming it."""
    _workflow(store, "w1", search={"team": "x", "n": 1})
    for value in (math.nan, math.inf, -math.inf, [1, math.nan], {"a": math.inf}):
        with pytest.raises(ValueError, match=r"search attribute 'n' is .*NaN and infinity"):
            store.list_workflows(search={"team": "x", "n": value})
    # a string that merely reads so is a string
    assert store.list_workflows(search={"team": "NaN"}) == []
    assert [r.workflow_id for r in store.list_workflows(search={"n": 1})] == ["w1"]


def test_payload_error_is_raised_where_the_value_is_passed(store: SQLiteStore) -> None:
    with pytest.raises(PayloadError, match=r"arguments of workflow 'app:flow'.*type set"):
        Transaction().create_workflow("w9", "app:flow", [{1, 2}])
    _workflow(store)
    with pytest.raises(PayloadError, match="outcome of activity 'charge'"):
        Transaction().append_journal("w1", 0, "activity", "charge", object())


# -- journal, atomicity ----------------------------------------------------------


def test_journal_is_loaded_in_seq_order_with_typed_fields(store: SQLiteStore) -> None:
    _workflow(store)
    tx = Transaction()
    for seq in (2, 0, 1):
        tx.append_journal("w1", seq, "activity", f"step{seq}", {"ok": seq}, attempts=seq + 1,
                          time=T0 + dt.timedelta(seconds=seq))  # fmt: skip
    store.write(tx)
    records = store.journal("w1")
    assert [r.seq for r in records] == [0, 1, 2]
    assert records[1] == JournalRecord("w1", 1, "activity", "step1", {"ok": 1}, 2,
                                       T0 + dt.timedelta(seconds=1))  # fmt: skip
    assert store.journal_size("w1") == (3, 3 * len('{"ok":0}'))
    with pytest.raises(INTEGRITY):
        store.write(Transaction().append_journal("w1", 1, "activity", "again"))


def test_a_journal_s_end_or_its_records_of_one_kind_are_read_alone(store: SQLiteStore) -> None:
    """``journal(id, last=N)`` reads the newest N records, ``kind=`` the records of one
    kind (what a page showing a long journal's end, and its timers, need), in seq
    order; a bad argument is a ValueError naming it."""
    _workflow(store)
    tx = Transaction()
    for seq in range(1, 8):
        tx.append_journal("w1", seq, "timer" if seq % 3 == 0 else "activity", "", seq)
    store.write(tx)
    assert [r.seq for r in store.journal("w1", last=3)] == [5, 6, 7]
    assert [r.seq for r in store.journal("w1", last=0)] == []
    assert [r.seq for r in store.journal("w1", last=100)] == list(range(1, 8))
    assert [r.seq for r in store.journal("w1", kind="timer")] == [3, 6]
    assert [r.seq for r in store.journal("w1", kind="timer", last=1)] == [6]
    assert store.journal("nobody", last=5) == []
    for bad in (-1, 2.5, "3", True):
        with pytest.raises(ValueError, match=r"journal\(last=\.\.\.\): .*whole number"):
            store.journal("w1", last=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"journal\(kind=\.\.\.\)"):
        store.journal("w1", kind=3)  # type: ignore[arg-type]



def test_a_journal_is_read_a_page_at_a_time_with_its_stored_sizes(store_spec: str) -> None:
    """``journal_page(id, after, limit)`` (what ``history`` and ``export`` read a long
    journal with): at most ``limit`` records after seq ``after``, in seq order, each
    with its outcome's stored size as ``journal_sizes`` says it, alike on both stores;
    a bad argument is a ValueError naming it."""
    with open_store(store_spec) as store:
        tx = Transaction().create_workflow("w1", "app:flow")
        tx.append_journal("w1", 0, "continued", "", {"state": {}})
        for seq in (1, 2, 4, 5, 9):
            tx.append_journal_text("w1", seq, "activity", "app:a",
                                   '{"ok": "é"}' if seq == 4 else f'{{"ok":{seq}}}', 1, 1.5)
        store.write(tx)
        sizes = store.journal_sizes("w1")
        pages, after = [], -1
        while page := store.journal_page("w1", after, 2):
            pages.append([(r.seq, r.outcome, size) for r, size in page])
            after = page[-1][0].seq
        assert pages == [[(0, {"state": {}}, sizes[0]), (1, {"ok": 1}, sizes[1])],
                         [(2, {"ok": 2}, sizes[2]), (4, {"ok": "é"}, sizes[4])],
                         [(5, {"ok": 5}, sizes[5]), (9, {"ok": 9}, sizes[9])]]
        assert sizes[4] == len('{"ok": "é"}')
        assert [r.seq for r, _ in store.journal_page("w1", 3, 100)] == [4, 5, 9]
        assert store.journal_page("w1", 9, 5) == store.journal_page("nobody", -1, 5) == []
        for after, limit, bad in ((-2, 1, "after"), (0.5, 1, "after"), (True, 1, "after"),
                                  (0, 0, "limit"), (0, "3", "limit")):
            with pytest.raises(ValueError, match=rf"journal_page\({bad}=\.\.\.\): "):
                store.journal_page("w1", after, limit)  # type: ignore[arg-type]


def test_a_journal_s_outcomes_are_read_in_part_alike_on_both_stores(store_spec: str) -> None:
    """``journal_heads(id, head, after, limit, newest=)`` (what the web console reads of
    a journal of big outcomes): each outcome's stored text whole when it has at most
    ``head`` characters, else its first ``head``, with the whole text's size, never
    decoded; a bad argument is a ValueError naming it."""
    from garrison.persistence import DamagedRecord, _sqlite

    with open_store(store_spec) as store:
        tx = Transaction().create_workflow("w1", "app:flow")
        for seq in (1, 2, 4, 5):
            tx.append_journal_text("w1", seq, "activity", "app:a",
                                   '{"ok": "éé"}' if seq == 4 else f'{{"ok":{seq * 1000}}}',
                                   seq, 1.5)
        store.write(tx)
        heads = store.journal_heads("w1", 10, -1, 10)
        # (its size in bytes, or in characters where SQLite has no octet_length)
        bytes_read = store_spec.startswith("postgresql://") or _sqlite._OCTET_LENGTH
        assert [(h.seq, h.text, h.size, h.whole, h.attempts) for h in heads] == [
            (1, '{"ok":1000', 11, False, 1), (2, '{"ok":2000', 11, False, 2),
            (4, '{"ok": "éé', 14 if bytes_read else 12, False, 4),
            (5, '{"ok":5000', 11, False, 5)]
        assert [(h.text, h.whole) for h in store.journal_heads("w1", 11, 0, 1)] == [
            ('{"ok":1000}', True)]
        assert [h.outcome() for h in store.journal_heads("w1", 12, 1, 2)] == [
            {"ok": 2000}, {"ok": "éé"}]
        assert [h.seq for h in store.journal_heads("w1", 0, -1, 2, newest=True)] == [4, 5]
        assert [h.text for h in store.journal_heads("w1", 0, 4, 5)] == [""]
        with pytest.raises(ValueError, match="were read, not all"):
            heads[0].outcome()
        for head, after, limit, bad in ((-1, 0, 1, "head"), (0, -2, 1, "after"),
                                        (0, 0, -1, "limit"), (0, 0, 1.5, "limit")):
            with pytest.raises(ValueError, match=rf"journal_heads\({bad}=\.\.\.\): "):
                store.journal_heads("w1", head, after, limit)  # type: ignore[arg-type]
    sql(store_spec, "UPDATE journal SET outcome = '{\"ok\":' WHERE seq = 2")
    with open_store(store_spec) as store:
        [damaged] = store.journal_heads("w1", 100, 1, 1)
        with pytest.raises(DamagedRecord, match="journal record seq 2 is not JSON"):
            damaged.outcome()
    # a cut one whose start read is the start of no JSON text is named as it is read
    # (it was given as the start of a value); what is past the start read is not read
    sql(store_spec, "UPDATE journal SET outcome = '{\"ok\" 1, \"pad\": 2}' WHERE seq = 1")
    sql(store_spec, "UPDATE journal SET outcome = '{\"ok\":[1.5e+3]}' WHERE seq = 2")
    with open_store(store_spec) as store:
        with pytest.raises(DamagedRecord) as got:
            store.journal_heads("w1", 10, -1, 1)
        assert str(got.value) == ("workflow 'w1': the outcome of its journal record seq 1 "
                                  "is not JSON (Expecting ':' delimiter: line 1 column 7 "
                                  "(char 6))")
        assert [(h.text, h.whole) for h in store.journal_heads("w1", 5, -1, 1)] == [
            ('{"ok"', False)]
        assert [(h.text, h.whole) for h in store.journal_heads("w1", 11, 1, 1)] == [
            ('{"ok":[1.5e', False)]

def test_a_cut_journal_outcome_nested_deeper_than_the_reader_decodes_is_a_head(
        store_spec: str) -> None:
    """A journal outcome nested deeper than this Python's JSON reader goes at its
    recursion limit (stored by a process whose limit was higher), cut by
    ``journal_heads``: the check that its start read begins a JSON text decoded that
    start and raised ``RecursionError`` out of the read, so the console's page of a
    running workflow failed where it showed the cut head before. It is the cut head;
    nothing in it says it is damaged."""
    deep = "[" * 3000 + "1" + "]" * 3000
    with open_store(store_spec) as store:
        store.write(Transaction().create_workflow("w1", "app:flow")
                    .append_journal_text("w1", 1, "activity", "app:a", deep, 1, 1.5))
        [head] = store.journal_heads("w1", 2500, -1, 1)
        assert (head.text, head.whole, head.size) == ("[" * 2500, False, 6001)


def test_the_check_of_a_cut_journal_outcome_s_start_reads_back_its_last_number() -> None:
    """The check that a cut outcome's start read begins a JSON text, where the reader
    stopped after a number (a cut after ``1.`` or ``1e``, or damage), searched the whole
    start for that number from its beginning, trying each digit of every number before
    it: quadratic in a run of digits. A start holding 300 whole numbers of 617 digits
    (RSA moduli) took 3 s on each poll of a console page, and one float of 30,000
    digits some 30 s; the number is read back from where the reader stopped. (Its
    time is no assertion here: the suite asserts no timing; these are the outcomes of
    that path, read as they were.)"""
    from garrison.persistence import DamagedRecord, JournalHead

    for text in ("[" + "1" * 30000 + ".5,2.", "[" + "1" * 30000 + ".5,2x"):
        row = ("w1", 1, "activity", "app:a", text + "0]", 1, 1.5, len(text) + 2)
        try:
            head = JournalHead.from_row(row, len(text))
        except DamagedRecord as exc:
            assert text.endswith("x") and "Expecting ',' delimiter" in str(exc)
        else:
            assert text.endswith(".") and (head.text, head.whole) == (text, False)


def test_a_stored_int_longer_than_the_readers_limit_names_the_workflow(
        store_spec: str) -> None:
    """An int stored by a process without Python's digit limit
    (``sys.set_int_max_str_digits(0)``: the write accepts it there, and refuses it with
    a PayloadError naming its place under the limit) read back by one with the limit
    raised a bare ``ValueError: Exceeds the limit (4300 digits)...`` naming no workflow.
    A read of the row or of the journal record is a ``DamagedRecord`` naming the
    workflow, where, and how to read it (``too_long``: nothing is damaged)."""
    from garrison import PayloadError
    from garrison.persistence import DamagedRecord

    huge = 10**5000
    with open_store(store_spec) as store:
        with pytest.raises(PayloadError, match=r"an int at \[0\] has more than 4300 digits"):
            store.write(Transaction().create_workflow("w0", "app:flow", [huge]))
        with no_digit_limit():
            store.write(Transaction().create_workflow("w1", "app:flow", [huge])
                        .create_workflow("w2", "app:flow", status="completed")
                        .update_workflow("w2", result={"n": huge})
                        .append_journal("w2", 1, "activity", "app:a", [1, huge]))
        how = ("holds a whole number of 5,001 digits, more than the 4,300 digits this "
               "Python reads (stored where sys.set_int_max_str_digits() allowed more): "
               "raise the limit in the process that reads it, with "
               "sys.set_int_max_str_digits() or PYTHONINTMAXSTRDIGITS in its environment "
               "(0: none)")
        for wid, column in (("w1", "input"), ("w2", "result")):
            with pytest.raises(DamagedRecord) as got:
                store.get_workflow(wid)
            assert str(got.value) == f"workflow {wid!r}: its {column} {how}"
            assert (got.value.workflow_id, got.value.column, got.value.too_long) == (
                wid, column, True)
        journal = f"workflow 'w2': the outcome of its journal record seq 1 {how}"
        with pytest.raises(DamagedRecord) as got:
            store.journal("w2")
        assert (str(got.value), got.value.seq, got.value.too_long) == (journal, 1, True)
        [head] = store.journal_heads("w2", 10_000, 0, 1)
        with pytest.raises(DamagedRecord) as got:
            head.outcome()
        assert str(got.value) == journal


def test_an_inbox_int_longer_than_the_readers_limit_names_the_workflow_and_message(
        store_spec: str) -> None:
    """A message or signal whose payload (or trace) holds an int stored by a process
    without Python's digit limit (``sys.set_int_max_str_digits(0)``), read back by one
    with the limit: ``pending_messages``, ``inbox_message`` and ``resume_rows`` raised a
    bare ``ValueError: Exceeds the limit (4300 digits)...`` naming no workflow, and
    ``resume_rows`` failed for every workflow read with it. Each read of the row is a
    ``DamagedRecord`` naming the workflow, the message and how to read it; a resume's
    read leaves that workflow's inbox to be read alone (``None``), the others read."""
    from garrison.persistence import DamagedRecord

    huge = 10**5000
    with open_store(store_spec) as store:
        with no_digit_limit():
            store.write(Transaction().create_workflow("w1", "app:flow")
                        .create_workflow("w2", "app:flow")
                        .deliver("w1", "big", {"n": [huge]}, msg_id="m-big")
                        .deliver("w2", "small", 7, msg_id="m-small"))
        said = ("workflow 'w1': the payload of its inbox message 'm-big' (topic 'big') "
                "holds a whole number of 5,001 digits, more than the 4,300 digits this "
                "Python reads (stored where sys.set_int_max_str_digits() allowed more): "
                "raise the limit in the process that reads it, with "
                "sys.set_int_max_str_digits() or PYTHONINTMAXSTRDIGITS in its environment "
                "(0: none)")
        for read in (lambda: store.pending_messages("w1"),
                     lambda: store.inbox_message("m-big")):
            with pytest.raises(DamagedRecord) as got:
                read()
            assert str(got.value) == said
            assert (got.value.workflow_id, got.value.column, got.value.msg_id,
                    got.value.seq, got.value.too_long) == ("w1", "payload", "m-big", None,
                                                           True)
        rows = store.resume_rows(["w1", "w2"])
        assert rows["w1"].inbox is None
        assert [(r.msg_id, r.payload) for r in rows["w2"].inbox or ()] == [("m-small", 7)]
        assert store.inbox_message("m-small").payload == 7  # type: ignore[union-attr]


def test_an_inbox_message_that_is_not_utf8_text_names_the_workflow_and_message(
        tmp_path: Path) -> None:
    """SQLite: a message whose payload is a BLOB or text that is not UTF-8 (a damaged
    page, a hand edit) made ``pending_messages``, ``inbox_message`` and ``resume_rows``
    raise a bare ``UnicodeDecodeError`` (or SQLite's 'Could not decode to UTF-8'),
    naming nothing, and the resume's read failed for every workflow read with it. It is
    the ``DamagedRecord`` naming the workflow and the message, as a row or journal
    record that is not UTF-8 is; a resume reads the others."""
    from garrison.persistence import DamagedRecord

    path = str(tmp_path / "s.db")
    with SQLiteStore(path) as store:
        store.write(Transaction().create_workflow("w1", "app:flow")
                    .create_workflow("w2", "app:flow").create_workflow("w3", "app:flow")
                    .deliver("w1", "t", 1, msg_id="m1").deliver("w2", "t", 2, msg_id="m2")
                    .deliver("w3", "t", 3, msg_id="m3"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE inbox SET payload = x'5b31ff5d' WHERE msg_id = 'm1'")
        conn.execute("UPDATE inbox SET payload = CAST(x'5b32ff5d' AS TEXT) "
                     "WHERE msg_id = 'm2'")
    conn.close()
    with SQLiteStore(path) as store:
        for wid, msg_id in (("w1", "m1"), ("w2", "m2")):
            for read in (lambda: store.pending_messages(wid),  # noqa: B023
                         lambda: store.inbox_message(msg_id)):  # noqa: B023
                with pytest.raises(DamagedRecord) as got:
                    read()
                assert str(got.value) == (
                    f"workflow {wid!r}: the payload of its inbox message {msg_id!r} "
                    "(topic 't') is not UTF-8 text (byte 2 of it is 0xff)")
                assert (got.value.workflow_id, got.value.column,
                        got.value.msg_id) == (wid, "payload", msg_id)
        rows = store.resume_rows(["w1", "w2", "w3"])
        assert rows["w1"].inbox is None and rows["w2"].inbox is None
        assert [r.payload for r in rows["w3"].inbox or ()] == [3]


def _reply_too_long(store: Any, msg_id: str = "m-q") -> None:
    """A call request ``msg_id`` to workflow ``b``, answered (``record_reply``) with an
    int stored without Python's digit limit."""
    with no_digit_limit():
        store.write(Transaction().create_workflow("b", "app:flow")
                    .deliver("b", "q", "question", msg_id=msg_id))
        store.write(Transaction().record_reply("b", msg_id, f"[{10**5000}]"))


def test_a_recorded_reply_longer_than_the_readers_limit_names_the_workflow_and_message(
        store_spec: str) -> None:
    """A call's reply recorded by a workflow of a process without Python's digit limit
    (``sys.set_int_max_str_digits(0)``), read by the caller's node at the limit (its
    stand-in for a reply a dead node never sent): ``recorded_reply`` raised a bare
    ``ValueError: Exceeds the limit (4300 digits)...`` naming nothing. It is the
    ``DamagedRecord`` naming the workflow, the message's reply and how to read it."""
    from garrison.hosts.workflow._elsewhere import recorded_reply
    from garrison.persistence import DamagedRecord

    with open_store(store_spec) as store:
        _reply_too_long(store)
        with pytest.raises(DamagedRecord) as got:
            recorded_reply(store, "b", "m-q")
        assert str(got.value) == (
            "workflow 'b': the reply of its inbox message 'm-q' (topic 'q') holds a whole "
            "number of 5,001 digits, more than the 4,300 digits this Python reads (stored "
            "where sys.set_int_max_str_digits() allowed more): raise the limit in the "
            "process that reads it, with sys.set_int_max_str_digits() or "
            "PYTHONINTMAXSTRDIGITS in its environment (0: none)")
        assert (got.value.workflow_id, got.value.column, got.value.msg_id,
                got.value.too_long) == ("b", "reply", "m-q", True)
        assert store.inbox_message("m-q").reply.startswith("[1000")  # type: ignore[union-attr]


async def test_a_recorded_reply_this_node_cannot_read_is_named_once_not_a_crash(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The look of a workflow's call to a workflow another node runs for the reply that
    node recorded (``Elsewhere._look_for_replies``, every ``REPLY_CHECK``) caught only
    ``StoreError``: a reply holding an int longer than this Python reads raised out of
    the node's watch of other nodes' workflows. It is named in one error line, once;
    the call waits on (a node with the limit raised reads it), the others are looked
    at."""
    from types import SimpleNamespace

    from garrison.hosts.workflow._elsewhere import Elsewhere, RemoteWorkflow
    from garrison.hosts.workflow._ids import call_ref

    finished: list[tuple[str, Any]] = []
    caller = SimpleNamespace(finish_call=lambda ref, out: finished.append((ref, out)))
    with SQLiteStore(str(tmp_path / "s.db")) as store:
        _reply_too_long(store, "a#3")
        store.write(Transaction().create_workflow("c", "app:flow")
                    .deliver("c", "q", "question", msg_id="a#4")
                    .record_reply("c", "a#4", '"answer"'))
        elsewhere = Elsewhere(SimpleNamespace(store=store))  # type: ignore[arg-type]
        for wid, msg_id in (("b", "a#3"), ("c", "a#4")):
            entry = elsewhere.watched[wid] = RemoteWorkflow(None, Pid("workflows", wid))
            entry.callers = {call_ref("workflows", msg_id): caller}  # type: ignore[dict-item]
        with caplog.at_level("ERROR", logger="garrison.workflow"):
            await elsewhere._look_for_replies()
            await elsewhere._look_for_replies()
        said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(said) == 1, said
        assert "workflow 'b': the reply of its inbox message 'a#3' (topic 'q') holds a " \
            "whole number of 5,001 digits" in said[0], said
        assert [(ref, out.unwrap()) for ref, out in finished] == [
            ("workflows/a#4", "answer")]
        assert list(elsewhere.watched["b"].callers or ()) == ["workflows/a#3"]


def test_a_damaged_journal_record_is_named_by_workflow_and_seq(store_spec: str) -> None:
    """A journal record whose outcome is no JSON (a hand edit, a bad restore), or on
    SQLite a BLOB or text that is not UTF-8 (a damaged page), is a ``DamagedRecord``
    naming the workflow and the seq, from ``journal`` and from recovery's
    ``journal_entries`` alike (they raised a bare JSONDecodeError, a UnicodeDecodeError,
    a TypeError of ``str.join`` or SQLite's error naming only the column). PostgreSQL's
    text holds no bytes that are not UTF-8."""
    from garrison.persistence import DamagedRecord

    damage = {"w1": (2, "'{\"ok\":'", "not JSON (Expecting value: line 1 column 7 (char 6))")}
    if not store_spec.startswith("postgresql://"):
        damage["w2"] = (1, "x'7b226f6b223a22ff227d'", "not UTF-8 text (byte 7 of it is 0xff)")
        damage["w3"] = (3, "CAST(x'7b226f6b223aff7d' AS TEXT)",
                        "not UTF-8 text (byte 6 of it is 0xff)")
        damage["w4"] = (2, "x'7b226f6b223a317d'", None)  # a BLOB of JSON: read as it is
    with open_store(store_spec) as store:
        tx = Transaction()
        for wid in damage:
            tx.create_workflow(wid, "app:flow", status="running")
            for seq in (1, 2, 3):
                tx.append_journal(wid, seq, "activity", "app:step", {"ok": seq})
        store.write(tx)
    for wid, (seq, value, _said) in damage.items():
        sql(store_spec, f"UPDATE journal SET outcome = {value} WHERE workflow_id = ? "
                        "AND seq = ?", (wid, seq))
    with open_store(store_spec) as store:
        for wid, (seq, _value, said) in damage.items():
            if said is None:
                outcomes = [{"ok": 1}, {"ok": 1}, {"ok": 3}]
                assert [r.outcome for r in store.journal(wid)] == outcomes
                assert [e[3] for e in store.journal_entries(wid)[0]] == outcomes
                assert [r.outcome for r, _ in store.journal_page(wid, -1, 5)] == outcomes
                continue
            for read in (store.journal, store.journal_entries,
                         lambda w: store.journal_page(w, 0, 5)):
                with pytest.raises(DamagedRecord) as got:
                    read(wid)
                assert (got.value.workflow_id, got.value.seq) == (wid, seq)
                assert str(got.value) == (f"workflow {wid!r}: the outcome of its journal "
                                          f"record seq {seq} is {said}")


def test_unfinished_workflows_reads_past_damaged_rows_it_is_given_a_list_for(
        store_spec: str) -> None:
    """Recovery's read of the unfinished workflows takes a list for the damaged rows
    (``DamagedRecord``): each is added there and the others read past it, in order
    (one damaged row raised out of the whole read, and a node did not start). Without
    the list the first is raised, as before. On SQLite an id that is not UTF-8 text is
    read past too."""
    from garrison.persistence import DamagedRecord

    ids = [f"w{i}" for i in range(7)]
    with open_store(store_spec) as store:
        for wid in ids:
            store.write(Transaction().create_workflow(wid, "app:flow", [1]))
    broken = {"w1": "input", "w4": "memo"}
    for wid, column in broken.items():
        sql(store_spec, f"UPDATE workflows SET {column} = '[bad' WHERE workflow_id = ?",
            (wid,))
    if not store_spec.startswith("postgresql://"):
        sql(store_spec, "UPDATE workflows SET workflow_id = CAST(x'77ff' AS TEXT) "
                        "WHERE workflow_id = 'w5'")
    with open_store(store_spec) as store:
        with pytest.raises(DamagedRecord):
            store.unfinished_workflows()
        damaged: list[DamagedRecord] = []
        read = [r.workflow_id for r in store.unfinished_workflows(damaged)]
        named = [(d.workflow_id, d.column) for d in damaged]
    if store_spec.startswith("postgresql://"):
        assert (read, named) == (["w0", "w2", "w3", "w5", "w6"],
                                 [("w1", "input"), ("w4", "memo")])
    else:
        assert (read, named) == (["w0", "w2", "w3", "w6"],
                                 [("w1", "input"), ("w4", "memo"), ("w\udcff", "workflow_id")])


def test_a_transaction_commits_whole_or_not_at_all(store: SQLiteStore) -> None:
    _workflow(store, "sender")
    _workflow(store, "receiver")
    ok = (
        Transaction()
        .append_journal("sender", 0, "send", "order.paid", None)
        .deliver("receiver", "order.paid", {"id": 1}, sender=Pid("workflows", "sender"))
        .update_workflow("sender", status="waiting")
    )
    results = store.write(ok)
    assert results[1] is not None  # the inbox row id
    bad = (
        Transaction()
        .append_journal("sender", 1, "send", "order.shipped", None)
        .deliver("receiver", "order.shipped", {"id": 1})
        .update_workflow("ghost", status="running")
    )
    with pytest.raises(NoSuchWorkflow):
        store.write(bad)
    assert [r.seq for r in store.journal("sender")] == [0]
    assert [m.topic for m in store.pending_messages("receiver")] == ["order.paid"]
    # foreign keys: no journal for a workflow that does not exist
    with pytest.raises(INTEGRITY):
        store.write(Transaction().append_journal("ghost", 0, "now", "now", 1.0))


def test_reset_run_and_delete(store: SQLiteStore) -> None:
    _workflow(store)
    store.write(
        Transaction()
        .append_journal("w1", 0, "now", "now", 1.0)
        .add_timer("w1", 0, T0)
        .set_state("w1", "k", "v")
    )
    old = store.get_workflow("w1")
    store.write(Transaction().reset_run("w1", [2]))
    new = store.get_workflow("w1")
    assert new is not None and old is not None
    assert new.input == [2] and new.status == "running" and new.run_id != old.run_id
    assert store.journal("w1") == [] and store.timers("w1") == []
    assert store.get_state("w1", "k") == "v"
    store.write(Transaction().delete_workflow("w1"))
    assert store.get_workflow("w1") is None and store.get_state("w1", "k") is None


# -- inbox, timers, promises, state, monitors ---------------------------------------


def test_inbox_order_dedupe_and_consume(store: SQLiteStore) -> None:
    _workflow(store)
    ids = []
    for i in range(3):
        ids.append(store.deliver("w1", f"t{i}", i, msg_id=f"m{i}", sender=Pid("processes", "9")))
    assert store.deliver("w1", "t0", 0, msg_id="m0") is None  # delivered once
    store.deliver("w1", "EXIT", {"pid": "workflows/c"}, kind="event")
    pending = store.pending_messages("w1")
    assert [m.topic for m in pending] == ["t0", "t1", "t2", "EXIT"]
    assert pending[0].sender == Pid("processes", "9") and pending[0].payload == 0
    assert pending[3].kind == "event" and pending[3].sender is None
    store.write(Transaction().record_reply("w1", "m1", '"answer"'))
    store.write(Transaction().consume("w1", ids[1], seq=5).consume("w1", ids[2], seq=0))
    assert [m.topic for m in store.pending_messages("w1")] == ["t0", "EXIT"]
    # a receive's row (seq > 0) keeps its id and reply, not its payload (the journal
    # has it); one taken at seq 0 (a request discarded) keeps it
    taken = store.inbox_message("m1")
    assert taken is not None and taken.consumed_seq == 5 and taken.payload is None
    assert taken.topic == "t1" and taken.reply == '"answer"'
    assert store.inbox_message("m2").payload == 2  # type: ignore[union-attr]
    assert store.deliver("w1", "t1", 1, msg_id="m1") is None  # still delivered once
    with pytest.raises(ValueError, match="not a pending message"):
        store.write(Transaction().consume("w1", ids[1], seq=6))
    with pytest.raises(ValueError, match="'letter'"):
        Transaction().deliver("w1", "x", kind="letter")


def test_a_delivery_if_unfinished_writes_only_to_an_unfinished_workflow(
        store: SQLiteStore) -> None:
    """``deliver(if_unfinished=True)`` (a linked row, which the end of a workflow writes
    for a workflow another node runs): a workflow that is not there, or has ended, gets
    nothing, and the rest of the transaction is written (a plain delivery there fails
    it all, or fills an inbox nobody reads)."""
    _workflow(store, "open")
    _workflow(store, "ended")
    store.write(Transaction().update_workflow("ended", status="failed"))
    results = store.write(
        Transaction()
        .deliver("gone", "LINK_DOWN", {}, kind="event", msg_id="g", if_unfinished=True)
        .deliver("ended", "LINK_DOWN", {}, kind="event", msg_id="e", if_unfinished=True)
        .deliver("open", "LINK_DOWN", {}, kind="event", msg_id="o", if_unfinished=True)
        .deliver("open", "LINK_DOWN", {}, kind="event", msg_id="o", if_unfinished=True)
        .set_state("open", "k", 1))
    assert results[:2] == [None, None] and results[3] is None
    assert isinstance(results[2], int)
    assert [m.msg_id for m in store.pending_messages("open")] == ["o"]
    assert store.pending_messages("ended") == []
    assert store.inbox_message("g") is None
    with pytest.raises(INTEGRITY):  # (without it: the whole transaction fails)
        store.write(Transaction().deliver("gone", "x", msg_id="g2"))


def test_timers(store: SQLiteStore) -> None:
    _workflow(store, "a")
    _workflow(store, "b")
    store.write(
        Transaction()
        .add_timer("a", 3, T0 + dt.timedelta(hours=48))
        .add_timer("b", 1, T0 + dt.timedelta(seconds=5))
        .add_timer("a", 1, T0)
    )
    assert [(t.workflow_id, t.seq) for t in store.due_timers(T0 + dt.timedelta(seconds=5))] == [
        ("a", 1),
        ("b", 1),
    ]
    nxt = store.next_timer()
    assert nxt is not None and nxt.deadline == T0
    store.write(Transaction().remove_timer("a", 1))
    assert [t.seq for t in store.timers("a")] == [3]
    assert store.due_timers(T0) == []
    with pytest.raises(ValueError, match="naive"):
        Transaction().add_timer("a", 9, dt.datetime(2026, 1, 1))


def test_a_timer_keeps_the_kind_of_its_wait(store: SQLiteStore) -> None:
    _workflow(store, "a")
    store.write(Transaction().add_timer("a", 1, T0, "sleep").add_timer("a", 2, T0, "receive")
                .add_timer("a", 3, T0))
    assert [(t.seq, t.kind) for t in store.timers("a")] == [
        (1, "sleep"), (2, "receive"), (3, None)]
    store.write(Transaction().add_timer("a", 1, T0 + dt.timedelta(hours=1), "receive"))
    assert store.timers("a")[-1] == TimerRecord("a", 1, T0 + dt.timedelta(hours=1), "receive")


def test_promises(store: SQLiteStore) -> None:
    _workflow(store)
    store.write(Transaction().create_promise("w1", "approval"))
    store.write(Transaction().create_promise("w1", "approval"))  # idempotent
    promise = store.get_promise("w1", "approval")
    assert promise is not None and promise.status == PromiseStatus.PENDING
    store.resolve_promise("w1", "approval", {"by": "ann"})
    promise = store.get_promise("w1", "approval")
    assert promise is not None and promise.status == "resolved" and promise.value == {"by": "ann"}
    with pytest.raises(PromiseAlreadyCompleted, match="already resolved"):
        store.resolve_promise("w1", "approval", 2)
    with pytest.raises(PromiseAlreadyCompleted):
        store.reject_promise("w1", "approval", "no")
    # resolved before the workflow declared it: kept, and declaring does not reset it
    store.reject_promise("w1", "early", "too late")
    store.write(Transaction().create_promise("w1", "early"))
    early = store.get_promise("w1", "early")
    assert early is not None and early.status == "rejected" and early.error == "too late"
    assert [p.name for p in store.promises("w1", "rejected")] == ["early"]
    with pytest.raises(NoSuchWorkflow):
        store.resolve_promise("ghost", "p", 1)


def test_state_and_monitors(store: SQLiteStore) -> None:
    _workflow(store)
    assert store.get_state("w1", "stage", "none") == "none"
    store.set_state("w1", "stage", {"n": 1})
    store.set_state("w1", "stage", {"n": 2})
    assert store.get_state("w1", "stage") == {"n": 2}
    assert store.states("w1") == {"stage": {"n": 2}}
    parent, other = Pid("workflows", "parent"), Pid("processes", "3")
    store.write(Transaction().add_monitor("w1", parent).add_monitor("w1", other))
    store.write(Transaction().add_monitor("w1", parent))
    assert store.monitors("w1") == [parent, other]
    assert store.watched_by(other) == ["w1"]
    store.write(Transaction().remove_monitor("w1", other))
    assert store.monitors("w1") == [parent]


def test_state_digests_read_the_state_of_many_workflows_at_once(store: SQLiteStore) -> None:
    """What a node resuming many workflows reads of their state: one read, not one per
    workflow (600: more than SQLite takes as one statement's parameters), of digests of
    the values' stored JSON text, the same on both stores. A workflow with no state (or
    no row) is left out, and an id asked for twice counts once."""
    tx = Transaction()
    for i in range(600):
        tx.create_workflow(f"w{i}", "app.orders:order_workflow", [])
        if i % 2 == 0:
            tx.set_state(f"w{i}", "stage", {"n": i}).set_state(f"w{i}", "b", [i])
    store.write(tx)
    wanted = [f"w{i}" for i in range(600)] + ["w0", "ghost", "bad\udc80", "nul\x00"]
    found = store.state_digests(wanted)
    assert found == {f"w{i}": {"b": state_digest(f"[{i}]"),
                               "stage": state_digest(f'{{"n":{i}}}')}
                     for i in range(0, 600, 2)}
    assert state_digest("[4]") == hashlib.md5(b"[4]").hexdigest()  # (PostgreSQL's md5())
    assert store.state_digests([]) == {}



def test_resume_rows_read_what_a_load_reads_of_many_workflows_at_once(store: SQLiteStore
                                                                      ) -> None:
    """What a node resuming many workflows reads of each (journal, pending inbox, timers,
    watchers, promises and, asked for, its row): one read of each table for hundreds of
    them (600: more than SQLite takes as one statement's parameters), the same as the
    one-workflow reads return, on both stores. A workflow with no rows has empty ones;
    one with no row (or an id no row can have) none, or no record."""
    ids = [f"w{i}" for i in range(600)]
    tx = Transaction()
    for i, wid in enumerate(ids):
        tx.create_workflow(wid, "app.orders:order_workflow", [i])
        if i % 3:
            continue
        tx.append_journal(wid, 1, "activity", "app:step", {"n": i}, time=T0)
        tx.append_journal(wid, 2, "now", "now", 1.5, time=T0)
        tx.deliver(wid, "go", i, msg_id=f"{wid}-a", time=T0)
        tx.deliver(wid, "later", [i], msg_id=f"{wid}-b", time=T0)
        tx.add_timer(wid, 4, T0 + dt.timedelta(seconds=i), kind="sleep")
        tx.add_timer(wid, 3, T0, kind="receive")
        tx.add_monitor(wid, Pid("processes", f"{i}")).add_monitor(wid, Pid("workflows", "p"))
        tx.create_promise(wid, "b", time=T0).resolve_promise(wid, "a", i, time=T0)
    store.write(tx)
    first = store.pending_messages("w0")[0]
    store.write(Transaction().consume("w0", first.id, 3))
    found = store.resume_rows([*ids, "w0", "ghost", "bad\udc80", "nul\x00"], records=True)
    assert set(ids) <= set(found)
    for wid in set(found) - set(ids):  # (those read: nothing; the others not read)
        assert found[wid].record is None and found[wid].journal == ([], 0)
        assert not (found[wid].inbox or found[wid].timers or found[wid].monitors
                    or found[wid].promises)
    for wid in ids:
        rows = found[wid]
        assert rows.journal == store.journal_entries(wid)
        assert rows.inbox == store.pending_messages(wid)
        assert rows.timers == store.timers(wid)
        assert rows.monitors == store.monitors(wid)
        assert rows.promises == store.promises(wid)
        assert rows.record == store.get_workflow(wid)
    assert len(found["w0"].inbox) == 1 and len(found["w3"].inbox) == 2
    assert found["w3"].journal is not None and len(found["w3"].journal[0]) == 2
    assert not found["w1"].inbox and found["w1"].journal == ([], 0)
    assert store.resume_rows(["w3"])["w3"].record is None  # (not asked for)
    assert store.resume_rows([]) == {}


def test_unfinished_children_of_many_parents_are_read_at_once(store: SQLiteStore) -> None:
    """The unfinished children of many parents (a tree a node cancels or terminates),
    in one read (600 parents: more than SQLite takes as one statement's parameters): the
    same as each parent's ``list_workflows(parent=)`` returns unfinished, in
    ``(created, workflow_id)`` order, on both stores; a parent no row can name finds
    none."""
    parents = [Pid("workflows", f"p{i}") for i in range(600)]
    tx = Transaction()
    for i, parent in enumerate(parents):
        for j, status in enumerate(["running", "completed", "waiting"] if i % 2 else []):
            tx.create_workflow(f"c{i}.{j}", "app:child", [], status=status, parent=parent,
                               time=T0 + dt.timedelta(seconds=600 - i + j))
    tx.create_workflow("other", "app:child", [], parent=Pid("workflows", "nobody"))
    store.write(tx)
    found = store.unfinished_children([*parents, "workflows/bad\udc80", "nul\x00",
                                       parents[1]])
    expected = sorted((r for parent in parents for r in store.list_workflows(parent=parent)
                       if not WorkflowStatus(r.status).finished),
                      key=lambda r: (r.created, r.workflow_id))
    assert found == expected and len(found) == 600
    assert [r.workflow_id for r in found[:3]] == ["c599.0", "c597.0", "c599.2"]
    assert store.unfinished_children([]) == []
    assert store.unfinished_children([parents[0]]) == []


def test_a_damaged_unfinished_child_is_given_apart_and_the_others_read(
        store: SQLiteStore, store_spec: str) -> None:
    """One damaged child among the unfinished children of many parents failed the whole
    read (its ``DamagedRecord``), on both stores: the node that asks a tree's children
    elsewhere asked none. With ``damaged``, it is given there (its parent set) and the
    others are read; without, it is raised as ever. Its attempt is set too (a child of
    a terminated tree is asked to end that attempt without its row)."""
    from _stores import sql

    from garrison.persistence import DamagedRecord

    parents = [Pid("workflows", "p0"), Pid("workflows", "p1")]
    tx = Transaction()
    for i, wid in enumerate(["c0", "c1", "c2"]):
        tx.create_workflow(wid, "app:child", [], status="running", parent=parents[i % 2],
                           time=T0 + dt.timedelta(seconds=i))
    store.write(tx)
    sql(store_spec, "UPDATE workflows SET input = '[bad', attempt = 3 "
                    "WHERE workflow_id = 'c1'")
    with pytest.raises(DamagedRecord):
        store.unfinished_children(parents)
    damaged: list[DamagedRecord] = []
    found = store.unfinished_children(parents, damaged)
    assert [r.workflow_id for r in found] == ["c0", "c2"]
    assert [(d.workflow_id, d.parent, d.attempt, d.column) for d in damaged] == [
        ("c1", "workflows/p1", 3, "input")]


def test_children_of_ended_are_the_unfinished_children_of_cancelled_or_failed_parents(
        store: SQLiteStore) -> None:
    """What a node's start reads for children left running under an ended parent, on
    both stores: the unfinished children, in ``(created, workflow_id)`` order, of the
    host's workflows that ended ``cancelled`` or ``failed``; not those of a running or
    completed parent, of a parent the store does not hold, nor finished ones."""
    tx = Transaction()
    for wid, status in [("pc", "cancelled"), ("pf", "failed"), ("pd", "completed"),
                        ("pr", "running")]:
        tx.create_workflow(wid, "app:parent", [], status=status)
    rows = [("a", "pc", "running"), ("b", "pf", "pending"), ("c", "pc", "completed"),
            ("d", "pd", "running"), ("e", "pr", "waiting"), ("f", "pf", "sleeping")]
    for i, (wid, parent, status) in enumerate(rows):
        tx.create_workflow(wid, "app:child", [], status=status,
                           parent=Pid("workflows", parent),
                           time=T0 + dt.timedelta(seconds=10 - i))
    tx.create_workflow("g", "app:child", [], status="running",
                       parent=Pid("workflows", "gone"))
    store.write(tx)
    assert [r.workflow_id for r in store.children_of_ended("workflows")] == ["f", "b", "a"]
    assert store.children_of_ended("nobody") == []


def test_children_of_ended_leaves_out_those_a_cancelled_parent_flagged_already(
        store: SQLiteStore) -> None:
    """A node's start read every unfinished child of a cancelled parent, and then that
    parent's row and journal, though a child flagged for cancel already has nothing to
    ask (most of them): it is left out by the read now, on both stores. A flagged child
    of a failed parent is not (a terminated one's children are asked to end)."""
    tx = Transaction()
    for wid, status in [("pc", "cancelled"), ("pf", "failed")]:
        tx.create_workflow(wid, "app:parent", [], status=status)
    for i, (wid, parent) in enumerate([("a", "pc"), ("b", "pc"), ("c", "pf"), ("d", "pf")]):
        tx.create_workflow(wid, "app:child", [], status="running",
                           parent=Pid("workflows", parent),
                           time=T0 + dt.timedelta(seconds=i))
    tx.request_cancel("a", time=1.0).request_cancel("c", time=1.0)
    store.write(tx)
    assert [r.workflow_id for r in store.children_of_ended("workflows")] == ["b", "c", "d"]


def test_workflows_by_id_and_inbox_messages_read_many_rows_at_once(
        store: SQLiteStore, store_spec: str) -> None:
    """The rows of many workflows, and the inbox rows of many messages, in one read
    (what a node's start reads of the ended parents of unfinished children), on both
    stores: those without a row left out; a damaged workflow row given apart."""
    from _stores import sql

    from garrison.persistence import DamagedRecord

    tx = Transaction()
    for wid in ["w0", "w1", "w2"]:
        tx.create_workflow(wid, "app:wf", [], status="running")
    tx.deliver("w0", "t", {"n": 0}, msg_id="m0").deliver("w1", "t", {"n": 1}, msg_id="m1")
    store.write(tx)
    assert sorted(store.workflows_by_id(["w0", "w2", "nope", "w0"])) == ["w0", "w2"]
    assert store.workflows_by_id([]) == {}
    found = store.inbox_messages(["m1", "m0", "nope"])
    assert {k: (m.workflow_id, m.payload) for k, m in found.items()} == {
        "m0": ("w0", {"n": 0}), "m1": ("w1", {"n": 1})}
    sql(store_spec, "UPDATE workflows SET input = '[bad' WHERE workflow_id = 'w1'")
    damaged: list[DamagedRecord] = []
    assert sorted(store.workflows_by_id(["w0", "w1"], damaged)) == ["w0"]
    assert [d.workflow_id for d in damaged] == ["w1"]
    with pytest.raises(DamagedRecord):
        store.workflows_by_id(["w1"])


def test_deliver_to_monitors_reads_the_stored_monitors_in_the_write(store: SQLiteStore
                                                                    ) -> None:
    """An ending workflow's EXIT goes to every unfinished workflow of its host that the
    store holds as monitoring it, in the order they began, once (its message id names
    the watcher: one delivered before, in the same transaction too, is left out)."""
    for wid in ("t", "a", "b", "c", "done"):
        _workflow(store, wid)
    store.write(Transaction().update_workflow("done", status="completed"))
    for watcher in ("workflows/b", "workflows/done", "processes/7", "other/c",
                    "workflows/ghost", "workflows/a", "workflows/c"):
        store.write(Transaction().add_monitor("t", watcher))  # (one by one: in order)
    me = Pid("workflows", "t")
    tx = (Transaction().update_workflow("t", status="completed", result=3)
          .deliver("c", "EXIT", {"n": 3}, msg_id="t#exit@c", sender=me, kind="event")
          .deliver_to_monitors("t", "EXIT", {"n": 3}, host="workflows",
                               msg_id_prefix="t#exit@", sender=me, time=5.0))
    results = store.write(tx)
    assert [watcher for watcher, _row in results[2]] == ["b", "a"]
    assert results[2][0][1] < results[2][1][1]  # rows in the order of the monitors
    for wid in ("a", "b"):
        [row] = store.pending_messages(wid)
        assert (row.msg_id, row.topic, row.payload, row.kind, row.sender,
                row.created.timestamp()) == (
            f"t#exit@{wid}", "EXIT", {"n": 3}, "event", me, 5.0)
    assert [row.msg_id for row in store.pending_messages("c")] == ["t#exit@c"]
    assert store.pending_messages("done") == []
    again = Transaction().deliver_to_monitors("t", "EXIT", {"n": 3}, host="workflows",
                                              msg_id_prefix="t#exit@", sender=me)
    assert store.write(again) == [[]]  # delivered once
    with pytest.raises(PayloadError, match="the monitors of workflow 't'"):
        Transaction().deliver_to_monitors("t", "EXIT", object(), host="workflows",
                                          msg_id_prefix="t#exit@")


@pytest.mark.parametrize("name", [":memory:", "", " ", "file:app.db?mode=memory"])
def test_an_sqlite_name_is_not_a_store_path(name: str) -> None:
    """SQLite's own names for a database are refused with what to write instead (they
    failed deep inside, "cannot enable WAL mode (got 'memory')", or made a file)."""
    with pytest.raises(ValueError, match=r"expected a file path, not an SQLite name; an "
                                         r"in-memory store is SQLiteStore\(\)"):
        SQLiteStore(name)
