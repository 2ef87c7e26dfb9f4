"""Retention of ended workflows: ``Store.prune_ended`` on both stores, the engine's
pass (``garrison.hosts.workflow._retention``), a host's ``retention`` and
``garrison workflows prune``."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schedule_app as app
import trio
from _stores import sql

import garrison
import garrison.metrics
from garrison import NoSuchWorkflow, StoreError
from garrison import _store_tools as tools
from garrison.hosts.workflow._schedules import tick_id
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


def test_an_ended_parent_is_kept_while_a_child_of_it_may_be_unasked(store: Any) -> None:
    """A cancelled or terminated parent whose ask of its unfinished children another
    node runs failed before its node stopped was pruned by a retention (it ended long
    ago) before any node's start asked them: a start reads those children by their
    parent (``children_of_ended``), and found none, so they ran on for good. A parent
    is kept now while it has a child a start would ask: an unfinished child of a
    ``failed`` parent, or one not flagged of a ``cancelled`` parent (a compensation
    too, until it ends); it goes once they ended. A ``completed`` parent asks none of
    its children: it goes as before, and so does a cancelled one whose child is
    flagged."""
    tx = Transaction()
    for parent, status in [("q", "cancelled"), ("r", "cancelled"), ("t", "failed"),
                           ("c", "completed")]:
        _ended(tx, parent, status, 100.0)
        tx.create_workflow(f"k{parent}", "app:flow", [], status="running",
                           host="workflows", parent=f"workflows/{parent}", time=50.0)
    tx.request_cancel("kr", time=100.0)  # (asked already)
    store.write(tx)
    assert [r.workflow_id for r in store.children_of_ended("workflows")] == ["kq", "kt"]
    assert store.count_prunable(["completed", "failed", "cancelled"], 200.0) == 2
    assert sorted(_prune_all(store, ("completed", "failed", "cancelled"), 200.0)) == [
        "c", "r"]
    assert [r.workflow_id for r in store.children_of_ended("workflows")] == ["kq", "kt"]
    tx = Transaction()
    for wid, status in [("kq", "cancelled"), ("kt", "failed")]:
        tx.update_workflow(wid, status=status, time=150.0)
    store.write(tx)
    assert store.count_prunable(["failed", "cancelled"], 200.0) == 4
    assert sorted(_prune_all(store, ("failed", "cancelled"), 200.0)) == [
        "kq", "kt", "q", "t"]


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


# ------------------------------------------------------------------ a node's retention
HOUR = 3600.0
#: the wall clock of every test node at virtual time 0: 2026-01-01T00:00:00Z
T0 = 1767225600.0


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every host's wall clock reads ``T0 + trio.current_time()``."""
    from garrison.hosts.workflow._waits import WallClock

    def init(self: WallClock) -> None:
        self.trio0 = trio.current_time()
        self.wall0 = T0 + self.trio0

    monkeypatch.setattr(WallClock, "__init__", init)
    app.STARTS.clear()


def _samples(node: garrison.Node, host: str = "workflows") -> dict[str, float]:
    import prometheus_client
    from prometheus_client.parser import text_string_to_metric_families

    text = prometheus_client.generate_latest(garrison.metrics.collect(node)).decode()
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.labels.get("host") == host}


async def test_a_node_prunes_its_ended_workflows_after_its_retention_by_its_clock(
        store_spec: str, autojump_clock: Any, wall: None,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="garrison.workflow")
    async with garrison.open_node(store=store_spec, retention="1h") as node:
        store = node.hosts["workflows"].store
        assert await node.workflow((await node.start_workflow(app.job, id="a")).id
                                   ).result() == "a"
        await node.start_workflow(app.job, 3 * HOUR, id="long")  # (runs on: kept)
        assert node.stats()["retention"]["workflows"] == {"retention": HOUR, "pruned": 0}
        await trio.sleep(0.9 * HOUR)
        assert store.get_workflow("a") is not None
        # passes every 6 minutes (a tenth of the retention): gone by 1h06m
        await trio.sleep(0.25 * HOUR)
        assert store.get_workflow("a") is None
        assert _rows_of(store_spec, "a") == {}
        assert node.stats()["retention"]["workflows"] == {"retention": HOUR, "pruned": 1}
        assert _samples(node)["garrison_workflows_pruned_total"] == 1
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pruned")]
        # (one workflow, as garrison workflows prune says it)
        assert lines == ["pruned 1 ended workflow of host workflows that ended before "
                         "2026-01-01T00:06:00+00:00 (retention 1h)"]
        # what the node remembered of its end is forgotten: the id is unknown ...
        with pytest.raises(NoSuchWorkflow, match=r"no workflow with id 'a' in the store "
                           r"\(host 'workflows' deletes the workflows that ended over 1h "
                           r"ago: its retention\)"):
            await node.workflow("a").result()
        # ... and free: a start of it starts a new workflow
        app.STARTS.clear()
        assert await node.workflow((await node.start_workflow(app.job, id="a")).id
                                   ).result() == "a"
        assert [wid for wid, _ in app.STARTS] == ["a"]
        assert store.get_workflow("long").status == "sleeping"


async def test_a_pass_that_fails_is_a_warning_and_runs_again(
        tmp_path: Any, autojump_clock: Any, wall: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from garrison.persistence import SQLiteStore

    caplog.set_level(logging.INFO, logger="garrison.workflow")
    real = SQLiteStore.prune_ended
    calls = []

    def refused(self: Any, *args: Any, **kw: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise StoreError(self.path, "disk I/O error")
        return real(self, *args, **kw)

    monkeypatch.setattr(SQLiteStore, "prune_ended", refused)
    async with garrison.open_node(store=str(tmp_path / "s.db"), retention="10m") as node:
        await node.workflow((await node.start_workflow(app.job, id="a")).id).result()
        await trio.sleep(0.5 * HOUR)
        assert node.hosts["workflows"].store.get_workflow("a") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"host workflows: pruning its ended workflows failed: store "
                        f"{str(tmp_path / 's.db')!r}: disk I/O error; tried again in 1m"]


async def test_a_start_of_an_id_a_tool_pruned_starts_a_new_workflow(
        tmp_path: Any, autojump_clock: Any, wall: None) -> None:
    """The node remembers the ends of its recent workflows: one a tool pruned beside
    it is looked up in the store when its id is started again."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.workflow((await node.start_workflow(app.job, id="a")).id).result()
        with open_store(db, lock=False) as tool:
            assert tools.prune(tool, 60.0, now=T0 + 2 * HOUR)[0] == 1
        app.STARTS.clear()
        await node.workflow((await node.start_workflow(app.job, id="a")).id).result()
        assert [wid for wid, _ in app.STARTS] == ["a"]


async def test_pruning_a_schedules_ticks_never_starts_a_tick_again(
        store_spec: str, autojump_clock: Any, wall: None) -> None:
    """A schedule's last run is kept: a restart within the catch-up window finds it
    (pruned, the tick would look interrupted, and start again)."""
    async with garrison.open_node(store=store_spec, retention="30m") as node:
        await node.schedule("s", app.job, every="1h", catchup_window="1h")
        await trio.sleep(3.7 * HOUR)  # ticks at 1h, 2h, 3h
        store = node.hosts["workflows"].store
        ticks = [tick_id("s", T0 + h * HOUR) for h in (1, 2, 3)]
        assert [store.get_workflow(t) is None for t in ticks] == [True, True, False]
    async with garrison.open_node(store=store_spec, retention="30m") as node:
        await trio.sleep(0.2 * HOUR)  # (3.9h: 3h's tick is inside its catch-up window)
    assert [wid for wid, _ in app.STARTS] == ticks


async def test_children_are_pruned_with_or_after_their_parent(
        tmp_path: Any, autojump_clock: Any, wall: None) -> None:
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.workflow((await node.start_workflow(app.parent_of_two, id="p")).id
                            ).result()
    with open_store(db, lock=False) as tool:
        assert {r.workflow_id for r in tool.list_workflows()} == {"p", "p-c0", "p-c1"}
        # (the parent ended after its children: a cutoff between keeps all three)
        assert tools.prune(tool, 60.0, now=T0 + 1.0 + 60)[0] == 0
        assert tools.prune(tool, 60.0, dry_run=True, now=T0 + HOUR)[0] == 3
        assert tools.prune(tool, 60.0, now=T0 + HOUR)[0] == 3
        for wid in ("p", "p-c0", "p-c1"):
            assert _rows_of(db, wid) == {}


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


async def test_two_nodes_of_a_cluster_prune_at_once(postgres_url: str) -> None:
    with open_store(postgres_url) as tool:
        _many_failed(tool, 2000, 1000.0)
    async with garrison.open_node(store=postgres_url, name="a", retention="1h") as a, \
            garrison.open_node(store=postgres_url, name="b", retention="1h") as b:
        def pruned() -> int:
            return sum(node.stats()["retention"]["workflows"]["pruned"] for node in (a, b))

        # (a batch's count is added once its thread returns: after the rows are gone)
        with trio.fail_after(60):
            while pruned() < 2000:
                await trio.sleep(0.05)
        await trio.sleep(0.5)
        assert pruned() == 2000
    for table, _column in OWNED:
        assert sql(postgres_url, f"SELECT count(*) FROM {table}") == [(0,)], table


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
                                  "'garrison' AND indexname IN ('inbox_by_workflow', "
                                  "'workflows_ended')")
        assert n == 2
        assert _prune_all(store, ("completed",), 200.0) == ["a"]
        assert _rows_of(postgres_url, "a") == {}
    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:11])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", 11)
    with psycopg.connect(postgres_url, autocommit=True) as conn, \
            pytest.raises(StoreVersionError, match="newer garrison"):
        _pg_schema.migrate(conn)


# ------------------------------------------------------------------ garrison workflows prune
def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``garrison workflows ARGS`` in this process (a usage error: its exit status)."""
    from garrison._cli import build_parser

    try:
        parsed = build_parser().parse_args(["workflows", *args])
        code = parsed.func(parsed)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_prune_command_counts_deletes_and_refuses_bad_input(
        store_spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import time

    old = time.time() - 40 * 86400
    with open_store(store_spec) as store:
        tx = Transaction()
        _ended(tx, "done", "completed", old)
        _ended(tx, "gone-wrong", "failed", old)
        _ended(tx, "recent", "completed", time.time() - 86400)
        tx.create_workflow("waits", "app:flow", [], status="waiting", host="workflows",
                           time=old)
        store.write(tx)
    code, out, err = _cli(capsys, "--store", store_spec, "prune", "--older-than", "30d",
                          "--dry-run")
    assert (code, err) == (0, "")
    assert out.startswith("would prune 2 ended workflows (completed, failed, cancelled) "
                          "that ended before "), out
    assert out.endswith(" (--dry-run: nothing deleted)\n")
    code, out, err = _cli(capsys, "--store", store_spec, "prune", "--older-than", "30d",
                          "--status", "failed", "--json")
    assert (code, err) == (0, "")
    answer = json.loads(out)
    assert (answer["pruned"], answer["statuses"], answer["host"]) == (1, ["failed"], None)
    for bad, said in ((["--status", "running"], "--status 'running' is an unfinished "
                       "status: prune deletes only ended workflows (--status completed, "
                       "failed, cancelled)"),
                      (["--status", "completed,nope"], "--status 'nope' is not a workflow "
                       "status"),
                      (["--status", "blocked"], "--status 'blocked' is an unfinished status")):
        code, out, err = _cli(capsys, "--store", store_spec, "prune", "--older-than", "30d",
                              *bad)
        assert (code, out) == (2, ""), bad
        assert said in err, err
    for bad, said in (("30", "invalid duration '30': a duration needs its unit: type 30s"),
                      ("0s", "invalid duration '0s': expected a duration longer than 0"),
                      ("soon", "invalid duration 'soon'")):
        code, out, err = _cli(capsys, "--store", store_spec, "prune", "--older-than", bad)
        assert code == 2
        assert f"argument --older-than: {said}" in err, err
    # nothing was deleted by a refused command
    with open_store(store_spec, lock=False) as tool:
        assert {r.workflow_id for r in tool.list_workflows()} == {
            "done", "recent", "waits", "keeper"}
    code, out, err = _cli(capsys, "--store", store_spec, "prune", "--older-than", "30d",
                          "--host", "elsewhere")
    assert out.startswith("pruned 0 ended workflows (completed, failed, cancelled) of host "
                          "'elsewhere' that ended before "), out
    # (a host no workflow of the store names: a typo, said, not a silent 0)
    assert err == ("note: no workflow of this store is of host 'elsewhere': --host takes "
                   "a workflow.host entry's id (a workflow's pid up to its slash, as "
                   "`garrison workflows show ID` prints it)\n"), err
    code, out, err = _cli(capsys, "--store", store_spec, "prune", "--older-than", "300d",
                          "--host", "workflows")
    assert (code, err) == (0, ""), err
    code, out, err = _cli(capsys, "--store", store_spec, "prune", "--older-than", "30d")
    assert out.startswith("pruned 1 ended workflow (completed, failed, cancelled) that "), out
    code, out, err = _cli(capsys, "--store", store_spec, "show", "done")
    assert (code, out) == (1, "")
    assert "no workflow 'done' in " in err


async def test_the_prune_command_beside_a_running_node(
        tmp_path: Any, autojump_clock: Any, wall: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    import time

    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.workflow((await node.start_workflow(app.job, id="a")).id).result()
        await node.start_workflow(app.job, HOUR, id="b")
        await trio.sleep(60)
        # (the node's clock is 2026-01-01: long before the system's now)
        assert time.time() - T0 > 30 * 86400
        code, out, err = _cli(capsys, "--store", db, "prune", "--older-than", "30d")
        assert (code, err) == (0, "")
        assert out.startswith("pruned 1 ended workflow "), out
        await trio.sleep(HOUR)
        assert await node.workflow("b").result() == "b"
        assert node.hosts["workflows"].store.get_workflow("a") is None


async def test_open_node_refuses_a_bad_retention_naming_it() -> None:
    for bad, said in (("forever", "invalid retention= 'forever'"),
                      (0, "invalid retention= 0: expected a duration longer than 0"),
                      ("-1d", "invalid retention= '-1d': a duration cannot be negative")):
        with pytest.raises(ValueError, match=re.escape(said)):
            async with garrison.open_node(retention=bad):
                pass


def test_a_postgres_batch_reads_its_own_rows_not_every_ended_one(postgres_url: str) -> None:
    """A batch is one range of ``workflows_ended``: it read and sorted every ended row
    of the status at each batch (100,000 ended workflows took 98 s to prune, not 10)."""
    import json

    import psycopg

    with open_store(postgres_url) as store:
        _many_failed(store, 2000, 100.0)
        real = store._connect("prune", by_key=True)
        plans: list[Any] = []

        class Explained:
            closed = broken = False

            def execute(self, query: str, params: Any) -> Any:
                with real.transaction():
                    (plan,), = real.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query,
                                            params).fetchall()
                    plans.append(plan if isinstance(plan, list) else json.loads(plan))
                    raise psycopg.Rollback()
                return real.execute(query, params)

            def close(self) -> None:
                real.close()

        store._pruner = Explained()
        assert len(store.prune_ended("failed", 200.0, limit=100)) == 100

    def scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if node.get("Relation Name") == "workflows" and node.get("Alias") == "w":
            yield node
        for child in node.get("Plans", ()):
            yield from scans(child)

    (scan,) = scans(plans[0][0]["Plan"])
    assert scan["Index Name"] == "workflows_ended"
    assert scan["Actual Rows"] <= 100


def test_a_tools_prune_beside_a_running_node_pauses_between_batches(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch after batch held SQLite's one write lock, and the node's commits queued
    behind them: beside a running node a tool waits after each batch as long as it
    took (as a node's own pass does)."""
    from garrison.hosts.workflow import _retention

    db = str(tmp_path / "s.db")
    with open_store(db) as store:
        _many_failed(store, 5, 100.0)
        pauses: list[float] = []
        monkeypatch.setattr(_retention.time, "sleep", pauses.append)
        monkeypatch.setattr(_retention, "BATCH", 2)
        with open_store(db, lock=False) as tool:
            assert tool.node_running()  # (the store above holds its lock)
            assert tools.prune(tool, 10.0, now=300.0)[0] == 5
    assert len(pauses) == 2  # (after the two full batches of 2: not the last of 1)


@pytest.mark.parametrize("trap", [False, True])
async def test_a_workflow_linked_to_one_pruned_runs_on_after_a_restart(
        tmp_path: Any, autojump_clock: Any, wall: None, trap: bool) -> None:
    """A running workflow linked to one that ended normally is not told of it; once
    that one is pruned, a restart of the node replays the link and finds no workflow:
    nothing failed (a failure would have reached it as it ended), so nothing acts."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db, retention="1h") as node:
        await node.start_workflow(app.job, 60.0, id="x")
        await node.start_workflow(app.links_then_sleeps, "workflows/x", 10 * HOUR, trap,
                                  id="w")
        await trio.sleep(2 * HOUR)
        store = node.hosts["workflows"].store
        assert store.get_workflow("x") is None  # (pruned)
        assert store.get_workflow("w").status == "sleeping"
    async with garrison.open_node(store=db, retention="1h") as node:
        assert await node.workflow("w").result() == "slept"


async def test_a_retention_shorter_than_the_rates_period_keeps_what_the_rate_counts(
        store_spec: str, autojump_clock: Any, wall: None) -> None:
    """The workflows a host's ``rate`` counts (admitted in its last period) are kept
    until that period is over, whatever the retention: deleted, they would leave
    their room in the rate to more."""
    async with garrison.open_node(store=store_spec, rate="2/1h", retention="1m") as node:
        for wid in ("a", "b"):
            assert await node.workflow((await node.start_workflow(app.job, id=wid)).id
                                       ).result() == wid
        await trio.sleep(10 * 60)
        store = node.hosts["workflows"].store
        await node.start_workflow(app.job, id="c")
        await trio.sleep(60)
        assert store.get_workflow("c").status == "pending"  # (the rate is full: 2 in 1h)
        await trio.sleep(HOUR)
        assert store.get_workflow("c").status == "completed"
        assert store.get_workflow("a") is None  # (pruned once the rate's period is over)


async def test_a_node_forgets_the_ends_another_node_of_the_cluster_pruned(
        postgres_url: str) -> None:
    """A node answers a handle from what it remembers of the workflows it ended; one
    that another node pruned, and that was started again there, is not answered with
    the old end: a pass forgets every end from before its cutoff."""
    from garrison.hosts.workflow._retention import prune_pass

    async with garrison.open_node(store=postgres_url, name="a") as a, \
            garrison.open_node(store=postgres_url, name="b") as b:
        assert await a.workflow((await a.start_workflow(app.job, id="x")).id
                                ).result() == "x"
        await trio.sleep(0.2)
        assert await prune_pass(b.hosts["workflows"], 0.1) == 1  # (b deletes it)
        assert await prune_pass(a.hosts["workflows"], 0.1) == 0  # (none left for a)
        await b.start_workflow(app.job, 60.0, id="x")  # (a new one, run by b)
        assert a.workflow("x").status() in ("running", "sleeping")  # (not the old end)


async def test_a_short_retention_prunes_at_most_once_a_second(
        tmp_path: Any, autojump_clock: Any, wall: None, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """A retention's passes come a tenth of it apart, but a second at least: a
    retention of 1ms ran a pass (and took the store's write lock) every 0.1 ms."""
    from garrison.persistence import SQLiteStore

    real = SQLiteStore.prune_ended
    calls: list[float] = []

    def counted(self: Any, *args: Any, **kw: Any) -> Any:
        calls.append(trio.current_time())
        return real(self, *args, **kw)

    monkeypatch.setattr(SQLiteStore, "prune_ended", counted)
    async with garrison.open_node(store=str(tmp_path / "s.db"), retention="1ms"):
        await trio.sleep(10)
    assert 30 <= len(calls) <= 33  # (a pass: one batch per status, every second)


def test_a_sqlite_prune_holds_the_write_lock_for_a_bounded_number_of_journal_records(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of 500 workflows of 2,000 journal records each held SQLite's one write
    lock for seconds (6.4 s measured): a tool's signal beside the node waits 5 s for it,
    then fails 'database is locked'. A batch is now cut into transactions of at most
    PRUNE_TX_RECORDS journal records (at least one workflow each), the call still
    deleting up to its limit, in order."""
    from garrison.persistence import SQLiteStore, _sqlite

    monkeypatch.setattr(_sqlite, "PRUNE_TX_RECORDS", 25, raising=False)
    deleted: list[int] = []
    real = _sqlite._prune_batch

    def spy(*args: Any) -> Any:
        got = real(*args)
        rows = got[0] if isinstance(got, tuple) else got
        deleted.append(len(rows))
        return got

    monkeypatch.setattr(_sqlite, "_prune_batch", spy)
    with SQLiteStore(str(tmp_path / "s.db")) as store:
        tx = Transaction()
        for i in range(12):
            _ended(tx, f"w{i:02d}", "completed", 100.0 + i, journal=10)
        store.write(tx)
        rows = store.prune_ended("completed", 200.0, limit=10)
        assert [wid for _updated, wid in rows] == [f"w{i:02d}" for i in range(10)]
        assert max(deleted) <= 2 and sum(deleted) == 10, deleted
        rest = store.prune_ended("completed", 200.0, after=rows[-1], limit=10)
        assert [wid for _updated, wid in rest] == ["w10", "w11"]
