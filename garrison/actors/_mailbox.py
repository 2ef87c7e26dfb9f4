"""Inboxes: a deque plus a parked task, not a memory-channel pair per process.

Fast path: when an item is already waiting, ``receive`` takes it without a
scheduler pass (it still honours cancellation, and yields to other tasks once
every ``BUDGET`` operations so a busy process cannot starve the rest). A sender
that finds a task parked on the inbox hands the item straight to that task.
"""

from __future__ import annotations

import sys
import types
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, TypeVar

import outcome
import trio

from .. import _observe, _trio_fast
from .._duration import parse_duration
from ._runtime import runtime_var

T = TypeVar("T")

#: operations a process may do without yielding to the scheduler
BUDGET = 64


#: the two outcomes: a parked receiver is woken with the item itself, or with an
#: outcome: by trio's cancellation, or with an item that is one (see ``Inbox.put``)
_OUTCOMES = _trio_fast.OUTCOMES

#: an int timeout below this converts to a float (the fast path's check of a timeout)
_BIG = 1 << 1000


class Checkpoints:
    """The checkpoint of whatever counts its operations done without a scheduler pass
    in ``ops``: a :class:`Budget`, or a process that keeps its own count (an object
    fewer per process)."""

    if not TYPE_CHECKING:  # (its subclasses hold ``ops``; mypy would want it here)
        __slots__ = ()

    ops: int

    async def checkpoint(self) -> None:
        """A cancellation point that yields to the scheduler every ``BUDGET`` calls."""
        self.ops += 1
        if self.ops >= BUDGET:
            self.ops = 0
            await trio.lowlevel.checkpoint()
        elif not _trio_fast.passes_cancel_point():  # (its checks, without a coroutine)
            await trio.lowlevel.checkpoint_if_cancelled()


class Budget(Checkpoints):
    """A per-process count of operations done without a scheduler pass."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops = 0


_parsed: dict[Any, float] = {}


def timeout_seconds(value: Any) -> float:
    """``parse_duration`` with a cache: timeouts are parsed on hot paths."""
    try:
        return _parsed[value]
    except (KeyError, TypeError):
        pass  # (parsed outside the handler: an error names the value, not the lookup)
    seconds = parse_duration(value, what="timeout")
    if isinstance(value, str) and len(_parsed) < 1024:
        _parsed[value] = seconds
    return seconds


class InboxOwner(Protocol):
    """The process an inbox belongs to: the only one that may receive from it, and who
    hears about the inbox passing its warning threshold."""

    pid: Any
    alive: bool

    def _inbox_over(self, inbox: Inbox[Any], waiting: int) -> None: ...


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

    __slots__ = ("_budget", "_items", "_owner", "_threshold", "_waiters", "_warn_at", "topic")

    def __init__(self, budget: Checkpoints, topic: str | None = None, *,
                 owner: InboxOwner | None = None, warn_at: int = 0) -> None:
        self._budget = budget
        self._items: deque[T] = deque()
        self._waiters: deque[trio.lowlevel.Task] = deque()
        #: the topic this inbox listens to, or None for the general inbox / events
        self.topic = topic
        # an inbox never limits what is queued (send never blocks); past ``warn_at``
        # items it tells its owner once, and again only after draining below half
        self._owner = owner
        self._threshold = warn_at if owner is not None and warn_at > 0 else 0
        #: put() calls _check() at this length: the threshold while armed, 0 (every
        #: put) once warned, so the first put after draining below half re-arms it
        self._warn_at = self._threshold or sys.maxsize

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        what = f"topic={self.topic!r}" if self.topic is not None else "all"
        return f"<Inbox {what} waiting={len(self._items)}>"

    # -- host side ---------------------------------------------------------------
    # (KI-protected, as trio's public reschedule is: the runner's own method it calls is
    # not, and a Ctrl-C raised halfway through it, or between taking the waiter and
    # waking it, would leave the waiter parked for ever, holding the run open; the
    # protection is a mark on the code, no call)
    @trio.lowlevel.enable_ki_protection
    def put(self, item: T) -> None:
        """Queue ``item`` (called by the host; never blocks)."""
        if self._waiters:
            # the waiter, parked by yielding ``PARK``, is woken with the item itself: no
            # outcome made and unwrapped per item (a host's item is a message or an
            # event; one that is an outcome itself, put by a process, goes wrapped)
            run = _trio_fast.RUN  # (the runner's own reschedule: see ``_trio_fast``)
            if run is not None and _trio_fast.PARK is not None \
                    and type(item) not in _OUTCOMES:
                run.runner.reschedule(self._waiters.popleft(), item)
            else:
                trio.lowlevel.reschedule(self._waiters.popleft(), outcome.Value(item))
        else:
            items = self._items
            items.append(item)
            if len(items) >= self._warn_at:
                self._check()

    def _check(self) -> None:
        """The cold path of ``put``: warn on passing the threshold, re-arm after draining."""
        waiting = len(self._items)
        owner = self._owner
        assert owner is not None
        if self._warn_at:  # armed, and just reached the threshold
            self._warn_at = 0
            owner._inbox_over(self, waiting)
        elif (waiting - 1) * 2 < self._threshold:  # it was below half before this put
            self._warn_at = self._threshold
            if waiting >= self._threshold:
                self._check()

    # -- process side ------------------------------------------------------------
    # Only the owning process (any task of it) receives: an inbox kept past its process
    # (a handler object caching ``process.inbox()``, run again by a supervisor) would
    # wait for ever on a dead inbox while the new process's own filled up.
    def _refuse(self) -> NoReturn:
        """The cold path of the owner checks: raise saying whose inbox this is."""
        owner = self._owner
        assert owner is not None
        user = getattr(runtime_var.get(None), "pid", None)
        ended = "" if owner.alive else ", which has ended,"
        by = f"by process {user}" if user is not None else "outside any process"
        raise RuntimeError(
            f"an inbox of process {owner.pid}{ended} was used {by}: process.inbox(), "
            "listen() and events() give the calling process's own inboxes; get them again "
            "in each process (a restarted process is a new process)")

    async def receive(self, timeout: Any = None) -> T | None:
        """The next item; waits for one. With ``timeout``, ``None`` when it expires."""
        if runtime_var.get(None) is not self._owner and self._owner is not None:
            self._refuse()
        if self._items:
            if timeout is not None and not (
                    (type(timeout) is float or (type(timeout) is int and timeout < _BIG))
                    and timeout >= 0):
                timeout_seconds(timeout)  # a bad one raises, every time (not only if empty)
            await self._budget.checkpoint()
            if self._items:  # (another task of this process may have taken it meanwhile)
                return self._pop()
        if timeout is None:
            return await self._park()
        with trio.move_on_after(timeout_seconds(timeout)):
            return await self._park()
        return None

    def try_receive(self) -> T | None:
        """The next item if one is waiting, else ``None``; never waits."""
        if runtime_var.get(None) is not self._owner and self._owner is not None:
            self._refuse()
        if not self._items:
            return None
        return self._pop()

    def _pop(self) -> T:
        item = self._items.popleft()
        if _observe.tracing:
            _observe.received(item)
        return item

    def __aiter__(self) -> Inbox[T]:
        return self

    # (a generator-based coroutine, as ``_park``: an ``async for`` awaits what it
    # returns as it would a coroutine)
    @types.coroutine
    def __anext__(self) -> Generator[Any, Any, T]:
        # ``receive()`` without a timeout, one coroutine frame shallower (``async for``
        # over an inbox is how most processes wait, and every frame of the chain is
        # passed through again each time the process resumes)
        if runtime_var.get(None) is not self._owner and self._owner is not None:
            self._refuse()
        if self._items:
            yield from self._budget.checkpoint()  # (a coroutine: allowed here)
            if self._items:  # (as in receive: the checkpoint may have let another take it)
                return self._pop()
        # ``_park``, written out: no coroutine of its own to make each time the process
        # waits, nor to pass through each time it resumes
        run = _trio_fast.RUN  # (the task read from trio's run context: see ``_trio_fast``)
        task = run.task if run is not None else trio.lowlevel.current_task()
        self._waiters.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        park = _trio_fast.PARK
        item: T
        if park is not None:
            got = yield park(abort)  # (the item itself, see ``put``; trio's cancel an outcome)
            item = got.unwrap() if type(got) in _OUTCOMES else got
        else:
            item = yield from trio.lowlevel.wait_task_rescheduled(abort).__await__()
        if _observe.tracing:
            _observe.received(item)
        return item

    # (a generator-based coroutine: it parks by yielding to trio's run loop itself, see
    # ``_trio_fast.PARK``)
    @types.coroutine
    def _park(self) -> Generator[Any, Any, T]:
        run = _trio_fast.RUN  # (the task read from trio's run context: see ``_trio_fast``)
        task = run.task if run is not None else trio.lowlevel.current_task()
        self._waiters.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        park = _trio_fast.PARK
        item: T
        if park is not None:
            got = yield park(abort)  # (the item itself, see ``put``; trio's cancel an outcome)
            item = got.unwrap() if type(got) in _OUTCOMES else got
        else:
            item = yield from trio.lowlevel.wait_task_rescheduled(abort).__await__()
        if _observe.tracing:
            _observe.received(item)
        return item


def warning_threshold(inbox: Inbox[Any]) -> int:
    """The number of waiting items at which ``inbox`` tells its owner (once, until it
    drains below half of it); 0 if it never does."""
    return inbox._threshold


def take_matching(inbox: Inbox[T], match: Callable[[T], bool]) -> list[T]:
    """Remove the items of ``inbox`` that ``match`` is true of, and return them in their
    order (the others keep theirs): ``process.listen(topic)`` moves that topic's
    messages from the general inbox to the topic's own."""
    items = inbox._items
    taken = [item for item in items if match(item)]
    if taken:
        keep = [item for item in items if not match(item)]
        items.clear()
        items.extend(keep)
    return taken
