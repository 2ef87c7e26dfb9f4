"""Inboxes: a deque plus a parked task, not a memory-channel pair per process.

Fast path: when an item is already waiting, ``receive`` takes it without a
scheduler pass (it still honours cancellation, and yields to other tasks once
every ``BUDGET`` operations so a busy process cannot starve the rest). A sender
that finds a task parked on the inbox hands the item straight to that task.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar

import outcome
import trio

from .._duration import parse_duration

T = TypeVar("T")

#: operations a process may do without yielding to the scheduler
BUDGET = 64


class Budget:
    """A per-process count of operations done without a scheduler pass."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops = 0

    async def checkpoint(self) -> None:
        """A cancellation point that yields to the scheduler every ``BUDGET`` calls."""
        self.ops += 1
        if self.ops >= BUDGET:
            self.ops = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()


_parsed: dict[Any, float] = {}


def timeout_seconds(value: Any) -> float:
    """``parse_duration`` with a cache: timeouts are parsed on hot paths."""
    try:
        return _parsed[value]
    except (KeyError, TypeError):
        seconds = parse_duration(value, what="timeout")
        if isinstance(value, str) and len(_parsed) < 1024:
            _parsed[value] = seconds
        return seconds


class Inbox(Generic[T]):
    """A queue of messages (or events) of one process.

    Get one with ``process.inbox()``, ``process.listen(topic)`` or
    ``process.events()``::

        inbox = process.inbox()
        msg = await inbox.receive(timeout="5s")   # None on timeout
        msg = inbox.try_receive()                 # None when empty
        async for msg in inbox:                   # forever
            ...
    """

    __slots__ = ("_budget", "_items", "_waiters", "topic")

    def __init__(self, budget: Budget, topic: str | None = None) -> None:
        self._budget = budget
        self._items: deque[T] = deque()
        self._waiters: deque[trio.lowlevel.Task] = deque()
        #: the topic this inbox listens to, or None for the general inbox / events
        self.topic = topic

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        what = f"topic={self.topic!r}" if self.topic is not None else "all"
        return f"<Inbox {what} waiting={len(self._items)}>"

    # -- host side ---------------------------------------------------------------
    def put(self, item: T) -> None:
        """Queue ``item`` (called by the host; never blocks)."""
        if self._waiters:
            trio.lowlevel.reschedule(self._waiters.popleft(), outcome.Value(item))
        else:
            self._items.append(item)

    # -- process side ------------------------------------------------------------
    async def receive(self, timeout: Any = None) -> T | None:
        """The next item; waits for one. With ``timeout``, ``None`` when it expires."""
        if self._items:
            await self._budget.checkpoint()
            return self._items.popleft()
        if timeout is None:
            return await self._park()
        with trio.move_on_after(timeout_seconds(timeout)):
            return await self._park()
        return None

    def try_receive(self) -> T | None:
        """The next item if one is waiting, else ``None``; never waits."""
        return self._items.popleft() if self._items else None

    def __aiter__(self) -> Inbox[T]:
        return self

    async def __anext__(self) -> T:
        item = await self.receive()
        assert item is not None
        return item

    async def _park(self) -> T:
        task = trio.lowlevel.current_task()
        self._waiters.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        item: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return item
