"""What an operator asks of a workflow (a start, a signal, a send, a terminate, a
promise's resolution, a retry, a schedule's change) while the store's disk is full.

Each either is in the store when it returns, or raises ``garrison.StoreError`` naming
the store and saying the disk is full (SQLite's own error as its cause), and leaves
nothing in memory that the store did not take: a start refused shows no workflow, a
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
