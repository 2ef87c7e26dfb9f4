"""garrison._trio_fast: the trio internals hot paths read directly agree with trio's
public functions, and the workflow clock built on them reads true time."""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

import outcome
import pytest
import trio
import trio.testing
import workflow_app as app

import garrison
from garrison import _trio_fast, process
from garrison.actors._mailbox import Budget
from garrison.hosts.workflow._waits import WallClock
from garrison.persistence import SQLiteStore


async def test_current_task_and_run_queue_agree_with_trio() -> None:
    assert _trio_fast.RUN is not None  # this trio's internals are where they are read
    # (a call's and an inbox's park yield what trio's wait_task_rescheduled yields)
    assert _trio_fast.PARK is trio._core._traps.WaitTaskRescheduled
    assert _trio_fast.current_task() is trio.lowlevel.current_task()
    assert _trio_fast.runnable_tasks() == 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)
        nursery.start_soon(trio.sleep, 0)
        assert _trio_fast.runnable_tasks() == 2 == \
            trio.lowlevel.current_statistics().tasks_runnable


async def test_reschedule_wakes_a_parked_task() -> None:
    woken: list[Any] = []
    parked: list[trio.lowlevel.Task] = []

    async def park() -> None:
        parked.append(trio.lowlevel.current_task())
        woken.append(await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(park)
        await trio.testing.wait_all_tasks_blocked()
        _trio_fast.reschedule_now()(parked[0], outcome.Value("one"))
    assert woken == ["one"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(park)
        await trio.testing.wait_all_tasks_blocked()
        _trio_fast.reschedule_now()(parked[1], outcome.Value("two"))
    assert woken == ["one", "two"]


async def test_the_default_clock_is_perf_counter_plus_its_offset() -> None:
    clock = trio.lowlevel.current_clock()
    offset = _trio_fast.system_clock_offset(clock)
    assert offset is not None
    assert clock.current_time() - (time.perf_counter() + offset) == pytest.approx(0, abs=0.01)
    assert _trio_fast.system_clock_offset(trio.testing.MockClock()) is None


async def test_the_workflow_clock_reads_wall_time_under_the_default_clock() -> None:
    clock = WallClock()
    assert clock.now() == pytest.approx(time.time(), abs=0.05)
    # a wall deadline 10 s away is a trio deadline 10 s after trio's now
    deadline = clock.trio_deadline(clock.now() + 10)
    assert deadline - trio.current_time() == pytest.approx(10, abs=0.05)


async def test_the_workflow_clock_follows_a_mock_clock(autojump_clock: Any) -> None:
    clock = WallClock()
    start = clock.now()
    await trio.sleep(3600)
    assert clock.now() - start == pytest.approx(3600)
    assert clock.trio_deadline(clock.now() + 5) == pytest.approx(trio.current_time() + 5)


async def test_workflows_run_on_the_public_functions_alone(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # a trio whose internals moved: every hot path takes trio's public function
    monkeypatch.setattr(_trio_fast, "RUN", None)
    async with garrison.open_node(store=SQLiteStore(str(tmp_path / "s.db"))) as node:
        async with trio.open_nursery() as nursery:  # batches: the group commit's waits
            for i in range(5):
                nursery.start_soon(functools.partial(node.start_workflow, app.steps, i, 3,
                                                     id=f"w{i}"))
        for i in range(5):
            assert await node.workflow(f"w{i}").result() == i + 3
        await node.start_workflow(app.steps, 10, 3, id="alone")  # commits written alone
        assert await node.workflow("alone").result() == 13


async def test_a_cancel_point_passes_as_trios_own_does() -> None:
    # nothing cancelled: it counts a cancel point (as checkpoint_if_cancelled does, which
    # trio.testing sees) and needs no await
    with pytest.raises(AssertionError, match="yielded"), trio.testing.assert_no_checkpoints():
        assert _trio_fast.passes_cancel_point()
    with trio.CancelScope() as outer:
        outer.cancel()
        assert not _trio_fast.passes_cancel_point()  # the caller awaits trio's own: it raises
        with pytest.raises(trio.Cancelled):
            await Budget().checkpoint()
        with trio.CancelScope(shield=True):  # (a shield hides the cancellation, as trio's)
            assert _trio_fast.passes_cancel_point()
            await Budget().checkpoint()


async def _echo() -> None:
    async for msg in process.inbox():
        await msg.reply(msg.payload)


async def _calls(to: garrison.Pid, n: int) -> list[int]:
    return [await process.call(to, "q", i) for i in range(n)]


@pytest.mark.parametrize("moved", [("RUN", "PARK"), ("RUN",), ("PARK",)])
async def test_processes_run_on_the_public_functions_alone(
        moved: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    # a trio whose internals moved: spawn, wait, call, reply, receive and the cancel
    # points take trio's public functions (the run context and the park's trap each
    # moved, or both: a task parked either way is woken the way it parked)
    for name in moved:
        monkeypatch.setattr(_trio_fast, name, None)
    async with garrison.open_node() as node:
        echo = await node.spawn(_echo)
        assert await node.wait(await node.spawn(_calls, echo, 200)) == list(range(200))
        assert await node.call(echo, "q", "outside") == "outside"
        with pytest.raises(TimeoutError):
            await node.call(await node.spawn(trio.sleep_forever), "q", timeout="1s")
        pids = [await node.spawn(_calls, echo, 3) for _ in range(100)]
        assert [await node.wait(pid) for pid in pids] == [[0, 1, 2]] * 100
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await node.spawn(_echo)


async def test_a_task_woken_by_a_message_or_a_reply_is_woken_where_ctrl_c_waits(
        autojump_clock: Any) -> None:
    # trio's public reschedule holds a Ctrl-C off (KI protection) while it wakes a task:
    # a KeyboardInterrupt raised halfway would leave the task neither parked nor queued
    # (its abort dropped), never to run again and holding the run open at its end. Where
    # an inbox's put and a call's reply wake their task with the runner's own method,
    # trio's signal handler must see the same protection in that method's frame (read
    # from a profile function, which runs on top of the frame it is called for).
    reschedule = trio.lowlevel.current_task()._runner.reschedule.__func__.__code__
    seen: list[bool] = []

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code is reschedule:
            seen.append(trio.lowlevel.currently_ki_protected())

    async with garrison.open_node() as node:
        echo = await node.spawn(_echo)
        caller = await node.spawn(_calls, echo, 3)  # (it runs once this task waits)
        before = sys.getprofile()
        sys.setprofile(profile)
        try:
            assert await node.wait(caller) == [0, 1, 2]
        finally:
            sys.setprofile(before)
    assert len(seen) >= 6  # (each request woke the echo, each reply its caller)
    assert all(seen), seen
