"""What an operator asks of a workflow (a start, a signal, a send, a cancel, a
terminate, a promise's resolution, a retry, a schedule's change) while the store's
disk is full.

Each either is in the store when it returns, or raises ``garrison.StoreError`` naming
the store and saying the disk is full (SQLite's own error as its cause), and leaves
nothing in memory that the store did not take: a cancel the store refused is not
flagged (asked again, it is written again), a start refused shows no workflow, a
signal refused is not in the inbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
from _commit_faults import FullDisk

import garrison
from garrison import process, workflow
from garrison.persistence import SQLiteStore


async def waits(x: str) -> str:
    msg = await process.inbox().receive()
    return f"{x}:{msg.payload}"


async def waits_promise() -> str:
    return str(await workflow.promise("approval"))


async def fails() -> None:
    raise ValueError("no")


def _says_the_disk_is_full(exc: BaseException, db: str) -> None:
    """``exc`` is the StoreError of a full disk, naming the store, with SQLite's error
    in its causes."""
    assert isinstance(exc, garrison.StoreError), repr(exc)
    assert str(exc).startswith(f"store {db!r}: "), str(exc)
    assert "the disk is full (database or disk is full)" in str(exc), str(exc)
    causes = []
    cause = exc.__cause__
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__
    assert any(isinstance(c, sqlite3.OperationalError) for c in causes), causes


async def test_a_cancel_the_store_refuses_raises_and_is_written_when_asked_again(
        tmp_path: Path, autojump_clock: Any) -> None:
    """nu397: ``handle.cancel()`` returned normally on a full disk, its request's write
    failing unseen in the host's background writer (a log line): after a restart the
    workflow ran on uncancelled, and a second ``cancel()`` on the same node did nothing
    (the flag was set in memory). The request is committed before ``cancel()`` returns,
    or it raises and nothing is flagged."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(waits, "w", id="w")
        await trio.sleep(1)
        assert node.workflow("w").status() == "waiting"
        disk = FullDisk.of(node.hosts["workflows"].store)
        disk.full = True
        with pytest.raises(garrison.StoreError) as info:
            await node.workflow("w").cancel()
        _says_the_disk_is_full(info.value, db)
        assert "cancel of workflow 'w' was not written" in str(info.value)
        await trio.sleep(1)
        assert node.workflow("w").status() == "waiting"  # nothing flagged: it waits on
        disk.full = False
    async with garrison.open_node(store=db) as node:  # the store never had it
        await trio.sleep(1)
        assert node.workflow("w").status() == "waiting"
        disk = FullDisk.of(node.hosts["workflows"].store)
        disk.full = True
        with pytest.raises(garrison.StoreError):
            await node.workflow("w").cancel()
        disk.full = False
        await node.workflow("w").cancel()  # asked again: written this time
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()
    with SQLiteStore(db, lock=False) as store:
        record = store.get_workflow("w")
        assert record is not None and record.status == "cancelled"


async def test_a_cancel_that_returned_is_in_the_store_at_once(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A cancel that returned is committed: the store shows it before the workflow has
    even run again (a node killed right then resumes it cancelled)."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(waits, "w", id="w")
        await trio.sleep(1)
        await node.workflow("w").cancel()
        with SQLiteStore(db, lock=False) as store:
            record = store.get_workflow("w")
            assert record is not None and record.cancel_requested
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()


async def test_actions_on_a_full_disk_raise_a_store_error_and_leave_nothing_half_done(
        tmp_path: Path, autojump_clock: Any) -> None:
    """nu397: on a full disk a start (one at a time, or 50 at once), a signal, a send to
    a workflow, a terminate, a promise's resolution or rejection and a retry raised
    SQLite's own ``OperationalError: database or disk is full``, which names no file.
    Each is a StoreError naming the store and saying the disk is full; nothing of it is
    left in memory; once there is room again each works."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        for wid in ("s", "t"):
            await node.start_workflow(waits, wid, id=wid)
        await node.start_workflow(waits_promise, id="p")
        await node.start_workflow(fails, id="f")
        with pytest.raises(garrison.WorkflowFailed):
            await node.workflow("f").result()
        schedule = await node.schedule("sc", waits, "sc", every="1d")
        await trio.sleep(1)
        store = node.hosts["workflows"].store
        disk = FullDisk.of(store)
        disk.full = True
        actions = {
            "start": lambda: node.start_workflow(waits, "n", id="n"),
            "signal": lambda: node.workflow("s").signal("go", 1),
            "send": lambda: node.send(node.workflow("s").pid, "go", 2),
            "terminate": lambda: node.workflow("t").terminate("stop"),
            "resolve": lambda: node.workflow("p").promise("approval").resolve("yes"),
            "reject": lambda: node.workflow("p").promise("approval").reject("no"),
            "retry": lambda: node.workflow("f").retry(),
            "schedule": lambda: node.schedule("sc2", waits, "sc2", every="1d"),
            "pause": schedule.pause,
            "trigger": schedule.trigger,
            "delete": schedule.delete,
        }
        for name, action in actions.items():
            with trio.fail_after(5), pytest.raises(garrison.StoreError) as info:
                await action()
            try:
                _says_the_disk_is_full(info.value, db)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None
        errors: list[BaseException] = []

        async def start(i: int) -> None:
            try:
                await node.start_workflow(waits, str(i), id=f"c{i}")
            except Exception as exc:
                errors.append(exc)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(start, i)
        assert len(errors) == 50
        for exc in errors:
            _says_the_disk_is_full(exc, db)
        # nothing of what the store refused is shown
        assert sorted(s.workflow_id for s in node.workflows()) == ["f", "p", "s", "t"]
        for wid in ("n", "c0", "c49"):
            with pytest.raises(garrison.NoSuchWorkflow):
                node.workflow(wid).status()
        assert store.pending_messages("s") == []
        assert node.workflow("s").status() == "waiting"
        assert node.workflow("t").status() == "waiting"
        assert node.workflow("p").status() == "waiting"
        assert node.workflow("p").promise("approval").status() == "pending"
        assert node.workflow("f").status() == "failed"
        assert [s.schedule_id for s in node.schedules()] == ["sc"]
        assert not schedule.info().paused
        disk.full = False
        # room again: each works
        await node.workflow("s").signal("go", 3)
        assert await node.workflow("s").result() == "s:3"
        await node.workflow("t").terminate("stop")
        assert node.workflow("t").status() == "failed"
        await node.workflow("p").promise("approval").resolve("yes")
        assert await node.workflow("p").result() == "yes"
        await node.start_workflow(waits, "n", id="n")
        await node.send(node.workflow("n").pid, "go", 4)
        assert await node.workflow("n").result() == "n:4"


async def test_on_postgresql_a_cancel_or_a_signal_the_server_refuses_is_a_store_error(
        postgres_url: str, autojump_clock: Any) -> None:
    """The same on PostgreSQL, its server refusing the writes as on a full disk
    (``disk_full``): the cancel raises (it was only logged, the flag set in memory) and
    so does the signal, each a StoreError naming the store and the server's reason, not
    psycopg's own exception; nothing flagged or delivered; asked again once the server
    takes writes, each is written."""
    import psycopg

    async with garrison.open_node(store=postgres_url) as node:
        await node.start_workflow(waits, "w", id="w")
        await trio.sleep(1)
        path = node.hosts["workflows"].store.path
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "CREATE FUNCTION garrison.full_disk() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
                "USING ERRCODE = 'disk_full'; END $$")
            for table, op in (("workflows", "UPDATE"), ("inbox", "INSERT")):
                admin.execute(f"CREATE TRIGGER full_disk BEFORE {op} ON garrison.{table} "
                              "FOR EACH STATEMENT EXECUTE FUNCTION garrison.full_disk()")
            try:
                with pytest.raises(garrison.StoreError) as cancel:
                    await node.workflow("w").cancel()
                with pytest.raises(garrison.StoreError) as signal:
                    await node.workflow("w").signal("go", 1)
            finally:
                for table in ("workflows", "inbox"):
                    admin.execute(f"DROP TRIGGER full_disk ON garrison.{table}")
        for info in (cancel, signal):
            assert str(info.value).startswith(f"store {path!r}: "), str(info.value)
            assert "No space left on device" in str(info.value), str(info.value)
        assert "the cancel of workflow 'w' was not written" in str(cancel.value)
        await trio.sleep(1)
        assert node.workflow("w").status() == "waiting"
        assert node.hosts["workflows"].store.pending_messages("w") == []
        await node.workflow("w").cancel()
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()
