"""``Flag``: a trio event made only when a task waits (a workflow's ``done`` and
``exited``), with ``trio.Event``'s behaviour."""

from __future__ import annotations

import trio
import trio.testing

from garrison.actors._flag import Flag


async def test_set_wakes_every_waiter_and_later_waits_return_at_once():
    flag = Flag()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await flag.wait()
        woken.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(waiter, i)
        await trio.testing.wait_all_tasks_blocked()
        assert not flag.is_set() and woken == []
        flag.set()
        flag.set()  # again: nothing more
    assert flag.is_set() and sorted(woken) == [0, 1, 2]
    await flag.wait()  # set: returns at once


async def test_a_flag_nobody_waited_for_makes_no_event():
    flag = Flag()
    flag.set()
    assert flag._event is None and flag.is_set()


async def test_waiting_is_a_checkpoint_even_when_set():
    flag = Flag()
    flag.set()
    with trio.CancelScope() as scope:
        scope.cancel()
        await flag.wait()  # Cancelled here, as trio.Event.wait would raise
        raise AssertionError("not reached")
    assert scope.cancelled_caught


async def test_a_cancelled_waiter_leaves_the_others_waiting():
    flag = Flag()
    woken: list[str] = []

    async def waiter(name: str) -> None:
        await flag.wait()
        woken.append(name)

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as gone:
            nursery.start_soon(waiter, "stays")
            await trio.testing.wait_all_tasks_blocked()
            gone.cancel()
            await flag.wait()
        flag.set()
    assert woken == ["stays"]
