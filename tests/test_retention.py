"""Retention of ended workflows: ``Store.prune_ended`` on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _stores import sql

from garrison.persistence import Transaction, open_store

#: every table of a store that holds rows of a workflow, and the column naming it
OWNED = (("journal", "workflow_id"), ("inbox", "workflow_id"), ("timers", "workflow_id"),
         ("promises", "workflow_id"), ("state", "workflow_id"), ("monitors", "workflow_id"),
         ("monitors", "watcher"), ("wakeups", "workflow_id"), ("queue", "workflow_id"),
         ("workflows", "workflow_id"), ("workflows", "parent"))


@pytest.fixture
def store(store_spec: str) -> Iterator[Any]:
    with open_store(store_spec) as s:
        yield s


def _ended(tx: Transaction, wid: str, status: str, at: float, *, host: str = "workflows",
           parent: str | None = None, journal: int = 2) -> Transaction:
    """A workflow of ``host`` that ended ``status`` at ``at``, with a row in each table
    a workflow owns (and ``keeper``, the unfinished workflow it monitors)."""
    _keeper(tx)
    tx.create_workflow(wid, "app:flow", [1], status="running", host=host, parent=parent,
                       time=at - 10)
    for seq in range(1, journal + 1):
        tx.append_journal(wid, seq, "activity", "step", {"value": seq}, time=at - 5)
    tx.deliver(wid, "topic", {"x": 1}, msg_id=f"m-{wid}", time=at - 5)
    tx.add_timer(wid, 99, at + 1000, kind="sleep")
    tx.create_promise(wid, "p", time=at - 5)
    tx.set_state(wid, "k", "v", time=at - 5)
    tx.add_monitor(wid, f"{host}/watcher-of-{wid}")
    tx.add_monitor("keeper", f"{host}/{wid}")  # (it watches an unfinished workflow)
    tx.enqueue(wid, "run", dedup=f"key-{wid}", time=at - 10)
    return tx.update_workflow(wid, status=status, time=at)


def _keeper(tx: Transaction) -> Transaction:
    return tx.create_workflow("keeper", "app:flow", [], status="running", host="workflows",
                              time=1.0)


def _rows_of(spec: str, wid: str, host: str = "workflows") -> dict[str, int]:
    """How many rows of each table name ``wid`` (or its pid), those that hold any."""
    found: dict[str, int] = {}
    for table, column in OWNED:
        value = f"{host}/{wid}" if column in ("watcher", "parent") else wid
        (n,), = sql(spec, f"SELECT count(*) FROM {table} WHERE {column} = ?", (value,))
        if n:
            found[f"{table}.{column}"] = int(n)
    return found


def _prune_all(store: Any, statuses: tuple[str, ...], before: float, **kw: Any) -> list[str]:
    """Every batch of ``prune_ended`` (of 2, to cross batches), sweeping again while one
    deletes anything: the ids deleted."""
    gone: list[str] = []
    while True:
        swept = 0
        for status in statuses:
            after = None
            while True:
                rows = store.prune_ended(status, before, after=after, limit=2, **kw)
                gone += [wid for _updated, wid in rows]
                swept += len(rows)
                if len(rows) < 2:
                    break
                after = rows[-1]
        if not swept:
            return gone


def test_prune_deletes_ended_workflows_older_than_the_cutoff_with_every_row(
        store: Any, store_spec: str) -> None:
    tx = Transaction()
    for i, status in enumerate(("completed", "failed", "cancelled")):
        _ended(tx, f"old-{status}", status, 100.0 + i)
        _ended(tx, f"new-{status}", status, 500.0 + i)
    store.write(tx)
    assert _rows_of(store_spec, "old-failed")["journal.workflow_id"] == 2
    assert store.count_prunable(["completed", "failed", "cancelled"], 200.0) == 3
    gone = _prune_all(store, ("completed", "failed", "cancelled"), 200.0)
    assert sorted(gone) == ["old-cancelled", "old-completed", "old-failed"]
    for status in ("completed", "failed", "cancelled"):
        assert store.get_workflow(f"old-{status}") is None
        assert _rows_of(store_spec, f"old-{status}") == {}, status
        assert store.get_workflow(f"new-{status}") is not None
        assert _rows_of(store_spec, f"new-{status}")["journal.workflow_id"] == 2
    assert store.count_prunable(["completed", "failed", "cancelled"], 200.0) == 0
    # the rows of the other workflows are all there
    assert store.get_workflow("keeper") is not None
    assert [str(p) for p in store.monitors("keeper")] == [
        f"workflows/new-{s}" for s in ("completed", "failed", "cancelled")]


def test_prune_keeps_unfinished_and_blocked_workflows_whatever_their_age(store: Any) -> None:
    tx = Transaction()
    for status in ("pending", "running", "sleeping", "waiting", "blocked"):
        tx.create_workflow(status, "app:flow", [], status=status, host="workflows",
                           time=1.0)
    store.write(tx)
    assert _prune_all(store, ("completed", "failed", "cancelled"), 1e9) == []
    assert len(store.list_workflows()) == 5
    for status in ("pending", "running", "blocked", "nonsense"):
        with pytest.raises(ValueError, match=f"cannot prune workflows of status '{status}'"):
            store.prune_ended(status, 1e9)
        with pytest.raises(ValueError, match=f"of status '{status}'"):
            store.count_prunable(["completed", status], 1e9)


def test_prune_by_status_and_host(store: Any) -> None:
    tx = Transaction()
    _ended(tx, "a-done", "completed", 100.0, host="a")
    _ended(tx, "a-failed", "failed", 100.0, host="a")
    _ended(tx, "b-done", "completed", 100.0, host="b")
    store.write(tx)
    assert store.count_prunable(["completed"], 200.0, host="a") == 1
    assert _prune_all(store, ("completed",), 200.0, host="a") == ["a-done"]
    assert {r.workflow_id for r in store.list_workflows()} == {"a-failed", "b-done", "keeper"}


def test_a_child_is_kept_while_its_parent_workflow_is_in_the_store(store: Any) -> None:
    tx = Transaction()
    tx.create_workflow("parent", "app:flow", [], status="running", host="workflows",
                       time=1.0)
    _ended(tx, "child", "completed", 100.0, parent="workflows/parent")
    # a child of a parent that ended and is pruned goes in the same pass (and one of
    # a plain process, no workflow, is pruned as any other)
    _ended(tx, "old-parent", "failed", 100.0)
    _ended(tx, "its-child", "completed", 90.0, parent="workflows/old-parent")
    _ended(tx, "grandchild", "completed", 80.0, parent="workflows/its-child")
    _ended(tx, "of-a-process", "completed", 100.0, parent="workflows/<0.7.0>")
    store.write(tx)
    assert store.count_prunable(["completed", "failed"], 200.0) == 4
    gone = _prune_all(store, ("completed", "failed"), 200.0)
    assert sorted(gone) == ["grandchild", "its-child", "of-a-process", "old-parent"]
    assert store.get_workflow("child") is not None
    # its parent ends, and is pruned: then it goes
    store.write(Transaction().update_workflow("parent", status="completed", time=150.0))
    assert store.count_prunable(["completed"], 200.0) == 2
    assert sorted(_prune_all(store, ("completed",), 200.0)) == ["child", "parent"]


def test_a_schedules_last_run_is_kept(store: Any) -> None:
    tx = Transaction()
    _ended(tx, "nightly@100", "completed", 100.0)
    _ended(tx, "nightly@50", "completed", 60.0)
    tx.put_schedule("nightly", host="workflows", workflow="app:flow", input=[],
                    cron=None, every=50.0, timezone="UTC", overlap="skip",
                    catchup_window=3600.0, next_tick=150.0, source="api", time=10.0)
    tx.update_schedule("nightly", last_tick=100.0, last_workflow="nightly@100")
    store.write(tx)
    assert store.count_prunable(["completed"], 1e9) == 1
    assert _prune_all(store, ("completed",), 1e9) == ["nightly@50"]
    assert store.get_workflow("nightly@100") is not None


def test_a_retry_before_a_prune_keeps_the_workflow_and_one_after_finds_it_gone(
        store: Any) -> None:
    store.write(_ended(Transaction(), "a", "failed", 100.0))
    store.write(_ended(Transaction(), "b", "failed", 100.0))
    # a retry's compare-and-set and update, committed before the prune's transaction
    store.write(Transaction().expect_workflow("a", status="failed", attempt=1)
                .update_workflow("a", status="pending", attempt=2, time=100.0))
    assert _prune_all(store, ("failed",), 200.0) == ["b"]
    assert store.get_workflow("a").status == "pending"
    # and one that comes after it: nothing written, nothing left half-deleted
    with pytest.raises(ValueError, match="changed since it was read"):
        store.write(Transaction().expect_workflow("b", status="failed", attempt=1)
                    .update_workflow("b", status="pending", attempt=2, time=300.0))
    assert store.get_workflow("b") is None


def test_prune_arguments_are_checked(store: Any) -> None:
    with pytest.raises(TypeError, match="before="):
        store.prune_ended("completed", "yesterday")
    with pytest.raises(ValueError, match="limit="):
        store.prune_ended("completed", 1.0, limit=0)
    with pytest.raises(TypeError, match="host="):
        store.prune_ended("completed", 1.0, host=3)


# ------------------------------------------------------------------ PostgreSQL, at once
def _many_failed(store: Any, n: int, at: float, prefix: str = "w") -> None:
    for start in range(0, n, 500):
        tx = Transaction()
        for i in range(start, min(n, start + 500)):
            wid = f"{prefix}{i:05d}"
            tx.create_workflow(wid, "app:flow", [], status="running", host="workflows",
                               time=at - 10)
            tx.append_journal(wid, 1, "activity", "step", i, time=at - 5)
            tx.update_workflow(wid, status="failed", time=at)
        store.write(tx)


def test_a_prune_skips_what_a_retry_holds_and_two_pruners_delete_each_once(
        postgres_url: str) -> None:
    import threading

    import psycopg

    with open_store(postgres_url) as one, open_store(postgres_url, lock=False) as two:
        _many_failed(one, 3, 100.0)
        # a retry in flight: its compare-and-set holds the row until it commits
        with psycopg.connect(postgres_url) as retry:
            retry.execute("SELECT 1 FROM garrison.workflows WHERE workflow_id = 'w00000' "
                          "FOR UPDATE")
            retry.execute("UPDATE garrison.workflows SET status = 'pending', attempt = 2 "
                          "WHERE workflow_id = 'w00000'")
            # the prune does not wait for it: it leaves that row to a later pass
            assert [wid for _t, wid in one.prune_ended("failed", 200.0)] == [
                "w00001", "w00002"]
        assert one.get_workflow("w00000").status == "pending"
        assert len(one.journal("w00000")) == 1
        # two pruners at once (two nodes of a cluster): each workflow deleted once
        _many_failed(one, 3000, 100.0, prefix="x")
        counts: list[int] = []
        failures: list[BaseException] = []

        def run(store: Any) -> None:
            try:
                counts.append(len(_prune_all(store, ("failed",), 200.0)))
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=run, args=(s,)) for s in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert sum(counts) == 3000  # (w00000 is pending)
        assert [r.workflow_id for r in one.list_workflows()] == ["w00000"]
        (n,), = sql(postgres_url, "SELECT count(*) FROM journal")
        assert n == 1



# ------------------------------------------------------------------ upgrades
def test_a_sqlite_store_of_version_9_is_migrated_and_pruned_and_refused_by_version_9(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 11 adds the indexes a prune reads by (an ended workflow by status and
    end, a workflow's inbox rows): a store of version 9 gets them when a node opens
    it, and is pruned as a new one; a garrison of version 9 refuses it afterwards."""
    from garrison import StoreVersionError
    from garrison.persistence import SQLiteStore, _schema

    db = str(tmp_path / "s.db")
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:9])
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", 9)
    monkeypatch.setattr("garrison.persistence._sqlite.SCHEMA_VERSION", 9)
    with SQLiteStore(db) as old:
        old.write(_ended(Transaction(), "a", "completed", 100.0))
    monkeypatch.undo()
    with SQLiteStore(db) as store:
        indexes = {name for (name,) in store._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"workflows_ended", "inbox_by_workflow"} <= indexes
        assert _prune_all(store, ("completed",), 200.0) == ["a"]
        assert _rows_of(db, "a") == {}
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:9])
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", 9)
    with pytest.raises(StoreVersionError, match="newer garrison"):
        SQLiteStore(db)


def test_a_postgres_store_of_version_11_is_migrated_and_pruned(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from garrison import StoreVersionError
    from garrison.persistence import _pg_schema

    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:11])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", 11)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _pg_schema.migrate(conn)
        conn.execute("INSERT INTO garrison.workflows (workflow_id, name, status, run_id, "
                     "host, created, updated) VALUES ('a', 'm:f', 'completed', 'r', "
                     "'workflows', 90, 100)")
        conn.execute("INSERT INTO garrison.inbox (workflow_id, msg_id, topic, created) "
                     "VALUES ('a', 'm1', 't', 95)")
    monkeypatch.undo()
    with open_store(postgres_url) as store:
        (n,), = sql(postgres_url, "SELECT count(*) FROM pg_indexes WHERE schemaname = "
                                  "'garrison' AND indexname = 'inbox_by_workflow'")
        assert n == 1
        assert _prune_all(store, ("completed",), 200.0) == ["a"]
        assert _rows_of(postgres_url, "a") == {}
    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:11])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", 11)
    with psycopg.connect(postgres_url, autocommit=True) as conn, \
            pytest.raises(StoreVersionError, match="newer garrison"):
        _pg_schema.migrate(conn)
