"""A step's outcome rides with the workflow's next commit.

An activity awaited in the workflow's code (``await step(x)``) leaves its outcome in the
workflow's buffer: the commit before the next effect (the next activity, a call's
request...), the next wait or the end carries it, so a sequential workflow writes one
commit a step. Code that awaits something that is not the workflow's own (a trio
event, a started activity) must not leave it there for long: it is
committed before ``await`` on a started activity, within ``PARKED_DELAY`` by the host
otherwise, and when the node stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import garrison
from garrison import process, workflow
from garrison.hosts.workflow._host import PARKED_DELAY
from garrison.hosts.workflow._inbox import exit_id

RAN: list[int] = []
RELEASE: list[trio.Event] = []


@garrison.activity
async def inc(x: int) -> int:
    RAN.append(x)
    return x + 1


@garrison.activity
async def held() -> int:
    await RELEASE[0].wait()
    return 100


async def step_then_gate() -> int:
    """A step, then an await that is not the workflow's own (not durable: a library's
    lock, a trio event): nothing of the workflow's own comes next."""
    x = await inc(1)
    await RELEASE[0].wait()
    return x


async def step_gate_continue(n: int) -> int:
    """A step, an await that is not the workflow's own, then (in the first run) a
    continue_as_new while the host's flush of the step's outcome is in flight."""
    x = await inc(n)
    await RELEASE[0].wait()
    if n < 1:
        workflow.continue_as_new(n + 1)
    return x + await inc(100) + await inc(200)


async def step_then_await_started() -> int:
    handle = workflow.start(held)
    x = await inc(1)
    return await handle + x


def _steps(node: garrison.Node, wid: str) -> list[str]:
    """The activities ``wid``'s committed journal holds, by function name."""
    return [r.name.rpartition(":")[2] for r in node.workflow(wid).history()
            if r.kind == "activity"]


async def _started(node: garrison.Node, target: Any, wid: str) -> garrison.Pid:
    pid = await node.start_workflow(target, id=wid)
    await trio.testing.wait_all_tasks_blocked()
    return pid


@pytest.fixture(autouse=True)
def _fresh() -> None:
    RAN.clear()
    RELEASE[:] = [trio.Event()]


async def test_an_outcome_left_while_the_code_awaits_is_committed_soon(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        await _started(node, step_then_gate, "w")
        assert RAN == [1]
        assert _steps(node, "w") == []  # (buffered: nothing came next)
        mock_clock.jump(PARKED_DELAY)
        await trio.testing.wait_all_tasks_blocked()
        assert _steps(node, "w") == ["inc"]
        RELEASE[0].set()
        assert await node.workflow("w").result() == 2
    assert RAN == [1]


async def test_an_outcome_left_is_committed_as_the_node_stops(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await _started(node, step_then_gate, "w")
        assert RAN == [1]
    RELEASE[0].set()
    async with garrison.open_node(store=db) as node:
        assert _steps(node, "w") == ["inc"]
        assert await node.workflow("w").result() == 2
    assert RAN == [1]  # not run again on the second node


async def test_awaiting_a_started_activity_commits_a_step_first(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        await _started(node, step_then_await_started, "w")
        assert RAN == [1]
        assert _steps(node, "w") == ["inc"]  # at once, not PARKED_DELAY later
        RELEASE[0].set()
        assert await node.workflow("w").result() == 102


async def test_continue_as_new_waits_for_the_flush_of_a_left_outcome(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's flush of a step's outcome is in flight (slow) when the run continues
    as new: the new run's reset was committed first, and the flush then put the old
    run's record in the new run's journal (a UNIQUE failure at the new run's step, and
    on the next node that step's value taken from the old run: 303, not 304)."""
    from _commit_faults import slow_commits

    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        slow_commits(monkeypatch, node.hosts["workflows"].store, "activity", seq=1,
                     wid="w", seconds=1)
        await node.start_workflow(step_gate_continue, 0, id="w")
        await trio.sleep(0.2)  # (the flush, begun at PARKED_DELAY, takes a second)
        RELEASE[0].set()
        with trio.fail_after(30):
            assert await node.workflow("w").result() == 2 + 101 + 201
    assert RAN == [0, 1, 100, 200]


@garrison.activity
def plain_inc(x: int) -> int:
    """A plain function: it runs in a worker thread."""
    return x + 1


async def plain_steps_then_sleep() -> float:
    start = workflow.now()
    x = await plain_inc(0)
    x = await plain_inc(x)
    await workflow.sleep(10)
    return (workflow.now() - start).total_seconds()


async def test_plain_steps_arm_no_timer_a_test_clock_would_jump_to(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A plain activity's outcome is committed at once: left in the buffer, it armed the
    host's flush timer while the next step worked in its thread, and the autojump clock
    of a test jumped to it (the workflow saw 10.05 s pass in a sleep of 10)."""
    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        await node.start_workflow(plain_steps_then_sleep, id="w")
        # (no virtual deadline around it: the clock would jump to it while a thread works)
        assert await node.workflow("w").result() == 10.0


async def test_a_failed_flush_of_a_left_outcome_stops_the_workflow(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's flush of a step's outcome fails for good while the code awaits
    something that is not the workflow's own: the workflow ran on unaware, ``running``,
    its ``result()`` waiting for ever; it stops where it is (``blocked`` in memory,
    nothing recorded as its outcome), as at any durable operation."""
    from _commit_faults import failing_commits

    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        failing_commits(monkeypatch, node.hosts["workflows"].store, "activity", seq=1,
                        wid="w", then="all",
                        error=garrison.StoreError(db, "database or disk is full"))
        await node.start_workflow(step_then_gate, id="w")
        with trio.fail_after(5), pytest.raises(garrison.StoreError, match="disk is full"):
            await node.workflow("w").result()
        assert node.workflow("w").status() == "blocked"
    monkeypatch.undo()
    RELEASE[0].set()
    async with garrison.open_node(store=db) as node:  # the next node runs it again
        with trio.fail_after(5):
            assert await node.workflow("w").result() == 2
    assert RAN == [1, 1]


async def two_steps() -> int:
    return await inc(await inc(0))


async def test_a_failed_commit_of_the_step_before_stops_the_workflow_before_the_next_step(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next step's ``@activity`` wrapper commits the step before's outcome (see
    ``Activities.step_outcome``): the store failing for good there is the workflow's
    ``StoreError`` (``blocked``, nothing recorded as its outcome), the next step never
    runs, and the next node runs the workflow from its last commit."""
    from _commit_faults import failing_commits

    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        failing_commits(monkeypatch, node.hosts["workflows"].store, "activity", seq=1,
                        wid="w", then="all",
                        error=garrison.StoreError(db, "database or disk is full"))
        await node.start_workflow(two_steps, id="w")
        with trio.fail_after(5), pytest.raises(garrison.StoreError, match="disk is full"):
            await node.workflow("w").result()
        assert node.workflow("w").status() == "blocked"
    monkeypatch.undo()
    assert RAN == [0]  # (the second step never ran)
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5):
            assert await node.workflow("w").result() == 2
    assert RAN == [0, 0, 1]


async def _watched() -> int:
    return await inc(await inc(0))


async def _parent() -> Any:
    await process.spawn(_watched, id="b")  # (its parent: a durable watcher of b)
    event = await process.events().receive()
    return [event.kind.value, str(event.pid), event.result]


TOLD: list[Any] = []


async def _monitoring_process() -> None:
    """A plain process that monitors b: b's end commits no EXIT for it, which is made
    once the end is committed."""
    process.monitor(garrison.Pid("workflows", "b"))
    event = await process.events().receive()
    TOLD.append([event.kind.value, str(event.pid), event.result])


def _failing_end(monkeypatch: pytest.MonkeyPatch, store: Any, wid: str, error: Exception
                 ) -> list[bool]:
    """Every commit that ends ``wid`` (its status set to completed) fails with ``error``."""
    from garrison.persistence import Op

    commit = type(store).commit
    failed: list[bool] = []

    async def failing(self: Any, tx: Any) -> list[Any]:
        if any(op is Op.UPDATE_WORKFLOW and params[0] == wid and ("status", "completed")
               in params[2] for op, params in tx.ops):
            failed.append(True)
            raise error
        return await commit(self, tx)

    monkeypatch.setattr(type(store), "commit", failing)
    return failed


@pytest.mark.parametrize("watcher", ["parent", "process"])
async def test_an_end_the_store_fails_to_commit_is_neither_reported_nor_told(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        watcher: str) -> None:
    """The commit of a workflow's end (with its last step's outcome) fails for good:
    the end is not reported (``result()`` raises the ``StoreError``, ``blocked``) and
    no ``EXIT`` is told, to its parent (whose ``EXIT`` that commit carries) nor to a
    plain process that monitors it (whose ``EXIT`` is made once the end is
    committed); the node that runs it to its end tells its parent, once."""
    TOLD.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        failed = _failing_end(monkeypatch, node.hosts["workflows"].store, "b",
                              garrison.StoreError(db, "database or disk is full"))
        if watcher == "parent":
            await node.start_workflow(_parent, id="a")
        else:
            await node.start_workflow(_watched, id="b")
            await node.spawn(_monitoring_process)
        await trio.sleep(1)  # (b is started, and ends)
        with trio.fail_after(5), pytest.raises(garrison.StoreError, match="disk is full"):
            await node.workflow("b").result()
        assert failed == [True]
        assert node.workflow("b").status() == "blocked"
        await trio.sleep(60)
        assert TOLD == []
        if watcher == "parent":
            assert node.workflow("a").status() == "waiting"  # (told nothing)
            store = node.hosts["workflows"].store
            assert store.inbox_message(exit_id("b", "a")) is None
    monkeypatch.undo()
    assert RAN == [0, 1]
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5):
            assert await node.workflow("b").result() == 2
            if watcher == "parent":
                assert await node.workflow("a").result() == ["EXIT", "workflows/b", 2]
    assert RAN == [0, 1, 1]  # (its last step's outcome went with the failed end)
