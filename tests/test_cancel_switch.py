"""CancelSwitch: a cancel scope around a task's body, made only when cancelled.

The hosts enter it as ``with switch:`` around a process's or a workflow's body.
Every test runs twice: on the fast path (trio internals) and on the fallback (a
real ``CancelScope``), which must behave the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from garrison.actors import _cancel_switch
from garrison.actors._cancel_switch import CancelSwitch


@pytest.fixture(params=["fast", "fallback"])
def mode(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "fallback":
        monkeypatch.setattr(_cancel_switch, "_FAST", False)
    else:
        assert _cancel_switch._FAST, "this trio's internals lost the fast path"
    return str(request.param)


@contextlib.asynccontextmanager
async def bounded() -> AsyncIterator[trio.Nursery]:
    """A nursery that fails the test instead of hanging when a cancel does not land."""
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            yield nursery


async def body(switch: CancelSwitch, work: Any, log: list[Any]) -> None:
    """A task body under a switch, as the hosts write it: logs what left the body and
    whether it went on leaving the task."""
    left = None
    try:
        with switch:
            try:
                await work()
            except BaseException as exc:
                left = type(exc).__name__
                raise
    except BaseException:
        log.append(("left", left, False))
        raise
    log.append(("left", left, True) if left else ("returned",))


async def test_a_cancel_stops_a_waiting_body_and_is_swallowed(
        mode: str, autojump_clock: object) -> None:
    switch, log = CancelSwitch(), []
    async with bounded() as nursery:
        nursery.start_soon(body, switch, trio.sleep_forever, log)
        nursery.start_soon(trio.sleep, 1)  # a sibling that must not be disturbed
        await trio.testing.wait_all_tasks_blocked()
        switch.cancel()
        switch.cancel()  # idempotent
        assert switch.cancel_called
    assert log == [("left", "Cancelled", True)]
    # the task's status is the nursery's again: nothing left behind
    assert not nursery.cancel_scope.cancel_called


async def test_a_cancel_before_attach_applies_at_the_first_checkpoint(
        mode: str, autojump_clock: object) -> None:
    switch, log = CancelSwitch(), []
    switch.cancel()
    ran = []

    async def work() -> None:
        ran.append(1)  # code before a checkpoint runs, as in a cancelled scope
        await trio.lowlevel.checkpoint()
        ran.append(2)

    async with bounded() as nursery:
        nursery.start_soon(body, switch, work, log)
    assert ran == [1]
    assert log == [("left", "Cancelled", True)]


async def test_the_cancel_holds_at_every_later_checkpoint(
        mode: str, autojump_clock: object) -> None:
    switch, log, seen = CancelSwitch(), [], []

    async def stubborn() -> None:
        for _ in range(3):
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                seen.append("cancelled")
        await trio.lowlevel.checkpoint()

    async with bounded() as nursery:
        nursery.start_soon(body, switch, stubborn, log)
        await trio.testing.wait_all_tasks_blocked()
        switch.cancel()
    assert seen == ["cancelled"] * 3
    assert log == [("left", "Cancelled", True)]


async def test_it_reaches_into_the_scopes_and_nurseries_the_body_opened(
        mode: str, autojump_clock: object) -> None:
    switch, log, children = CancelSwitch(), [], []

    async def child() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            children.append("cancelled")
            raise

    async def nested() -> None:
        with trio.CancelScope(deadline=trio.current_time() + 1000):
            with trio.move_on_after(500) as inner:
                async with trio.open_nursery() as n:
                    n.start_soon(child)
                    n.start_soon(child)
                    await trio.sleep_forever()
        assert not inner.cancelled_caught  # not its own deadline: the outer cancel

    async with bounded() as nursery:
        nursery.start_soon(body, switch, nested, log)
        await trio.testing.wait_all_tasks_blocked()
        switch.cancel()
    assert children == ["cancelled", "cancelled"]
    assert log[0][:2] in (("left", "Cancelled"), ("left", "ExceptionGroup"),
                          ("left", "BaseExceptionGroup"))
    assert log[0][2] is True


async def test_a_shield_inside_the_body_still_holds(
        mode: str, autojump_clock: object) -> None:
    switch, log, steps = CancelSwitch(), [], []

    async def shielded() -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(5)  # not interrupted
            steps.append("shield done")
        await trio.sleep_forever()

    async with bounded() as nursery:
        nursery.start_soon(body, switch, shielded, log)
        await trio.testing.wait_all_tasks_blocked()
        switch.cancel()
    assert steps == ["shield done"]
    assert log == [("left", "Cancelled", True)]


async def test_a_cancel_from_outside_the_switch_goes_on(
        mode: str, autojump_clock: object) -> None:
    switch, log = CancelSwitch(), []
    with trio.CancelScope() as outer:
        async with bounded() as nursery:
            nursery.start_soon(body, switch, trio.sleep_forever, log)
            await trio.testing.wait_all_tasks_blocked()
            switch.cancel()
            outer.cancel()
    assert outer.cancelled_caught
    assert log == [("left", "Cancelled", False)]  # not swallowed: the nursery's too


async def test_another_error_after_the_cancel_comes_out_as_it_is(
        mode: str, autojump_clock: object) -> None:
    switch, log = CancelSwitch(), []

    async def converts() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise ValueError("cleanup failed") from None

    with pytest.raises(BaseExceptionGroup) as raised:
        async with bounded() as nursery:
            nursery.start_soon(body, switch, converts, log)
            await trio.testing.wait_all_tasks_blocked()
            switch.cancel()
    assert raised.group_contains(ValueError, match="cleanup failed", depth=1)
    assert log == [("left", "ValueError", False)]


async def test_a_cancel_of_a_body_that_returned_changes_nothing(
        mode: str, autojump_clock: object) -> None:
    switch, log = CancelSwitch(), []

    async def quick() -> None:
        switch.cancel()  # the task cancels itself as it ends: no checkpoint follows

    async with bounded() as nursery:
        nursery.start_soon(body, switch, quick, log)
    assert log == [("returned",)]
    switch.cancel()  # after close: nothing happens


async def test_a_body_that_is_never_cancelled_leaves_nothing(
        mode: str, autojump_clock: object) -> None:
    switch, log = CancelSwitch(), []
    async with bounded() as nursery:
        nursery.start_soon(body, switch, trio.lowlevel.checkpoint, log)
    assert log == [("returned",)]
    assert switch._task is None  # it let go of the task (whose context may hold its owner)


async def test_a_process_killed_inside_its_own_nursery_ends_killed(
        mode: str, autojump_clock: object) -> None:
    """The switch under a real process: a terminate reaches the process's own nursery
    and its children, and the process ends with the kill's reason."""
    import garrison
    from garrison import process

    stopped: list[str] = []

    async def child() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stopped.append("child")

    async def worker() -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
                with trio.move_on_after(3600):  # a scope of its own around the wait
                    await trio.sleep_forever()
        finally:
            stopped.append("worker")

    with trio.fail_after(7200):  # (a kill that does not land fails, not hangs)
        async with garrison.open_node() as node:
            pid = await node.spawn(worker)
            await trio.testing.wait_all_tasks_blocked()

            async def terminator() -> None:
                await process.terminate(pid)

            await node.wait(await node.spawn(terminator))
            with pytest.raises(garrison.ProcessError) as raised:
                await node.wait(pid)
            assert raised.value.error is not None
            assert raised.value.error.type == "Terminated"
            assert trio.current_time() < 3600  # the kill, not the deadline
    assert stopped == ["child", "worker"]


async def _shielded_then_steps() -> int:
    """A workflow whose kill comes while it waits inside a shield of its own."""
    import workflow_app as app

    with trio.CancelScope(shield=True):
        await trio.sleep(10)
    return await app.add_one(1)


async def test_a_workflow_is_stopped_by_its_switch_on_either_path(
        mode: str, tmp_path: Any, autojump_clock: object) -> None:
    """The switch under real workflows: made by the first kill on the fast path
    (``WorkflowCore.cancel_body``), made and entered as the body begins on the fallback.
    A terminate stops a waiting workflow, one inside a shield once it leaves it, and one
    terminated as it starts, each failed with its reason; the node's close stops the
    others, which the next node resumes."""
    import workflow_app as app

    import garrison

    db = str(tmp_path / "wf.db")
    with trio.fail_after(7200):  # (a kill that does not land fails, not hangs)
        async with garrison.open_node(store=db) as node:
            await node.start_workflow(app.steps, 0, 20, id="early")
            await node.workflow("early").terminate("as it starts")
            for wid in ("a", "b"):
                await node.start_workflow(app.late_promise, id=wid)
            await node.start_workflow(_shielded_then_steps, id="s")
            await trio.testing.wait_all_tasks_blocked()
            host: Any = node.hosts["workflows"]
            assert (host.active["b"].scope is None) is (mode == "fast")
            await node.workflow("a").terminate("enough")
            await node.workflow("s").terminate("shielded")
            for wid, reason in (("early", "as it starts"), ("a", "enough"),
                                ("s", "shielded")):
                with pytest.raises(garrison.WorkflowFailed, match=reason):
                    await node.workflow(wid).result()
            assert trio.current_time() == 10  # (the shield held)
        async with garrison.open_node(store=db) as node:
            await trio.testing.wait_all_tasks_blocked()
            await node.send("workflows/b", "go", None)
            await node.workflow("b").promise("early").resolve(2)
            assert await node.workflow("b").result() == 2
