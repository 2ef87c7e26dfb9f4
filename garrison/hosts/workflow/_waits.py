"""What a workflow waits on: durable sleeps and timers, durable promises, and
``workflow.first`` / ``gather`` over them, on a wall clock read through trio's clock.

Deadlines are wall-clock unix seconds, journaled when the wait starts, so a restarted
node only waits what remains. They are read through :class:`WallClock`, anchored to
trio's clock once, so ``MockClock(autojump_threshold=0)`` skips a 48-hour timer in a
test as it skips ``trio.sleep``.
"""

from __future__ import annotations

import inspect
import json
import math
import time as _time
from collections.abc import Callable
from typing import Any

import trio

from ... import _trio_fast
from ..._errors import PromiseRejected
from ...persistence import Transaction, WorkflowStatus
from ._activities import ActivityHandle
from ._core import FOREVER, WaitCancelled, recordable
from ._ids import check_key_size, check_promise_name
from ._inbox import PendingReceive, Receives
from ._journal import JournalKind, timestamp

__all__ = ["FOREVER", "DurablePromise", "DurableTimer", "Waits", "WallClock", "deadline_after"]

_dumps = json.dumps


def deadline_after(now: float, seconds: float) -> float:
    """The wall-clock deadline ``seconds`` after ``now``, at most :data:`FOREVER`."""
    return recordable(now + seconds)


#: how far the system clock must step before a node's clock follows it (seconds;
#: smaller differences are the two clocks' reading jitter)
CLOCK_STEP = 0.5


async def wait_shown(waiter: Any, event: trio.Event, deadline: float) -> None:
    """Wait for ``event`` until the trio ``deadline``, with ``waiter.wait_deadline``
    showing that deadline meanwhile (``None`` otherwise): a test environment whose clock
    skips (``garrison.testing``) reads it, jumps to it, then calls ``waiter.wake()``.
    The loops of the host's scheduler and queue wait so."""
    waiter.wait_deadline = deadline
    try:
        with trio.move_on_at(deadline):
            await event.wait()
    finally:
        waiter.wait_deadline = None


class WallClock:
    """Wall time read through the trio clock, anchored once.

    ``now() = wall_at_start + (trio.current_time() - trio_at_start)``, so a
    ``MockClock`` skips durable timers in tests exactly as it skips ``trio.sleep``.
    """

    #: reads the trio clock (the default, for a subclass that sets its own anchors)
    _read: Callable[[], float] = staticmethod(trio.current_time)
    #: the trio clock's reading minus ``_read``'s (see ``__init__``)
    _shift = 0.0
    #: runs on trio's own clock, the system's (see ``follows_system``)
    _system = False
    #: its time moves only by jumps of its own (``garrison.testing``'s virtual clock),
    #: which trio's deadlines never see: a wait on its time goes through :meth:`sleep`
    virtual = False

    def __init__(self) -> None:
        clock = trio.lowlevel.current_clock()
        offset = _trio_fast.system_clock_offset(clock)
        if offset is None:
            # the run's clock itself: ``trio.current_time()`` reaches it through two
            # calls more, and every step reads the time
            self._read = clock.current_time
        else:
            # trio's own clock is ``time.perf_counter()`` plus a fixed offset: read
            # perf_counter itself (no Python frame at every step), the offset kept
            # for converting to trio deadlines
            self._read = _time.perf_counter
            self._shift = offset
            self._system = True
        self.wall0 = _time.time()
        self.trio0 = self._read()

    def now(self) -> float:
        """Unix seconds."""
        return self.wall0 + (self._read() - self.trio0)

    @property
    def follows_system(self) -> bool:
        """True when this clock runs on trio's own clock (not a ``MockClock`` nor a
        virtual one): the system clock may step under it (see :meth:`step`)."""
        return self._system

    def step(self) -> float:
        """Follow a step of the system clock (an NTP correction, a resumed VM or host:
        the monotonic clock this one runs on does not see them): when ``time.time()``
        and :meth:`now` differ by :data:`CLOCK_STEP` or more, :meth:`now` reads the
        system clock again. Returns the step (seconds, ``0.0`` for none); trio
        deadlines handed out before it are off by that much (their waiters ask again).
        """
        step = _time.time() - self.now()
        if abs(step) < CLOCK_STEP:
            return 0.0
        self.wall0 += step
        return step

    def trio_deadline(self, wall_deadline: float) -> float:
        """The trio clock time at which wall time reaches ``wall_deadline``."""
        return self.trio0 + self._shift + (wall_deadline - self.wall0)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (an activity's retry delay)."""
        await trio.sleep(seconds)

    def alarm(self, seconds: float, fire: Callable[[], None]) -> Callable[[], None]:
        """A :attr:`virtual` clock's: call ``fire`` (sync, in the trio thread) once its
        time has moved ``seconds`` on; returns what takes the alarm back. Trio's own
        deadlines serve the other clocks."""
        raise NotImplementedError("only a virtual clock keeps alarms")


class DurablePromise:
    """A durable promise of a workflow: ``await p`` returns the value it is resolved with
    from outside (``handle.promise(name).resolve(v)``) or raises ``PromiseRejected``."""

    __slots__ = ("_wf", "name")

    def __init__(self, wf: Waits, name: str) -> None:
        self._wf = wf
        self.name = name

    def __repr__(self) -> str:
        return f"<promise {self.name!r} {'done' if self.settled() else 'pending'}>"

    def done(self) -> bool:
        """True once resolved or rejected; recorded (a replay returns what the first
        run saw, not the store's promise as it is now)."""
        return self._wf.recorded_done(self)

    @property
    def recorded_as(self) -> str:
        """What it is in the journal (see ``ActivityHandle.recorded_as``)."""
        return f"promise {self.name}"

    def settled(self) -> bool:
        """:meth:`done` unrecorded, for garrison's own waits (``first``)."""
        return self.name in self._wf.promises

    def __await__(self) -> Any:
        return self._wf.await_promise(self.name).__await__()


class DurableTimer:
    """A durable timer (``workflow.timer``): ``await`` it, or race it with ``first``."""

    __slots__ = ("_wf", "deadline")

    def __init__(self, wf: Waits, deadline: float) -> None:
        self._wf = wf
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"<timer at {timestamp(self.deadline).isoformat()}>"

    def done(self) -> bool:
        """True once the deadline has passed; recorded (a replay returns what the
        first run saw, not what the clock says now)."""
        return self._wf.recorded_done(self)

    @property
    def recorded_as(self) -> str:
        """What it is in the journal (see ``ActivityHandle.recorded_as``)."""
        return "timer"

    def settled(self) -> bool:
        """:meth:`done` unrecorded, for garrison's own waits (``first``, an await)."""
        return self._wf.host.clock.now() >= self.deadline

    def __await__(self) -> Any:
        return self._wf.await_timer(self).__await__()


#: what ``workflow.first`` races
Awaitable = ActivityHandle | DurablePromise | DurableTimer | PendingReceive


def _close_coroutines(awaitables: tuple[Any, ...]) -> None:
    """Close the coroutines (``workflow.call(...)``) of ``awaitables`` that will never be
    awaited: never run, and no "never awaited" warning."""
    for a in awaitables:
        if inspect.iscoroutine(a):
            a.close()


class Waits(Receives):
    """The waiting part of a workflow instance (it races inbox receives too)."""

    __slots__ = ()

    # ------------------------------------------------------------ sleep
    async def sleep(self, seconds: float) -> None:
        """Durable sleep of ``seconds`` from when it first started."""
        await self._sleep(None, seconds)

    async def sleep_until(self, deadline: float) -> None:
        """Durable sleep until the wall-clock ``deadline`` (unix seconds)."""
        await self._sleep(deadline, None)

    async def _sleep(self, deadline: float | None, seconds: float | None) -> None:
        entry = self._take(JournalKind.SLEEP, "", timed=True)
        if entry is not None:
            await self._yield()
            return
        seq = self.cursor.seq - 1
        recorded = self.timers.get(seq)
        if recorded is None:
            recorded = recordable(deadline) if deadline is not None else deadline_after(
                self.host.clock.now(), seconds or 0.0)
            self.add_timer(seq, recorded)
            await self._commit(Transaction().add_timer(self.wid, seq, recorded, "sleep"))
        try:
            if self.cancel_at is not None and self.cancel_first(recorded):
                raise WaitCancelled
            while self.host.clock.now() < recorded:
                await self._wait(self.host.clock.trio_deadline(recorded), WorkflowStatus.SLEEPING,
                                 "a sleep")
        except WaitCancelled:
            self._deliver_cancel(seq)
        tx = Transaction()
        self.record(tx, seq, JournalKind.SLEEP, "", _dumps({"deadline": recorded}))
        tx.remove_timer(self.wid, seq)
        self.timers.pop(seq, None)
        await self._commit(tx)

    # ------------------------------------------------------------ promises
    def promise(self, name: str) -> DurablePromise:
        """``workflow.promise``: declared (and journaled) where it is created."""
        check_promise_name(name, stored=not self.cursor.replaying)
        if not self.cursor.replaying:  # (declared: a key of the store's index from now on)
            check_key_size(name, "workflow.promise(): a promise name")
        if self._take(JournalKind.PROMISE, name) is None:
            tx = self.buffered()
            self.record(tx, self.cursor.seq - 1, JournalKind.PROMISE, name, "null")
            tx.create_promise(self.wid, name)
        return DurablePromise(self, name)

    async def await_promise(self, name: str) -> Any:
        entry = self._take(JournalKind.AWAIT_PROMISE, name)
        if entry is None:
            seq = self.cursor.seq - 1
            try:
                if self.cancel_at is not None and name in self.promises and self.cancel_first(
                        (self.promise_times or {}).get(name, -math.inf)):
                    raise WaitCancelled
                while name not in self.promises:
                    await self._wait(None, WorkflowStatus.WAITING, f"promise {name!r}")
            except WaitCancelled:
                self._deliver_cancel(seq)
            status, value = self.promises[name]
            out = {"value": value} if status == "resolved" else {"rejected": value}
            tx = Transaction()
            self.record(tx, seq, JournalKind.AWAIT_PROMISE, name, _dumps(out))
            await self._commit(tx)
        else:
            await self._yield()
            out = entry.outcome
        if "rejected" in out:
            raise PromiseRejected(f"promise {name!r} of workflow {self.wid!r} was rejected: "
                                  f"{out['rejected']}", reason=str(out["rejected"]),
                                  promise=name)
        return out["value"]

    # ------------------------------------------------------------ timers
    def timer(self, seconds: float) -> DurableTimer:
        """``workflow.timer``: the deadline is journaled where the timer is created."""
        # (a timer made for a race with a receive of an item that came before the
        # cancel: the cancel comes after the race, at the next operation if not there)
        entry = self._take(JournalKind.TIMER, "", cancel=self.cancel_mark is None
                           or not self._held_before_cancel())
        if entry is not None:
            deadline = float(entry.outcome["deadline"])
        else:
            deadline = deadline_after(self.host.clock.now(), seconds)
            self.record(self.buffered(), self.cursor.seq - 1, JournalKind.TIMER, "",
                         _dumps({"deadline": deadline}))
        return DurableTimer(self, deadline)

    async def await_timer(self, timer: DurableTimer) -> None:
        entry = self._take(JournalKind.AWAIT_TIMER, "")
        if entry is not None:
            await self._yield()
            return
        seq = self.cursor.seq - 1
        try:
            if self.cancel_at is not None and self.cancel_first(timer.deadline):
                raise WaitCancelled
            while not timer.settled():
                await self._wait(self.host.clock.trio_deadline(timer.deadline),
                                 WorkflowStatus.SLEEPING, "a timer")
        except WaitCancelled:
            self._deliver_cancel(seq)
        tx = Transaction()
        self.record(tx, seq, JournalKind.AWAIT_TIMER, "", "null")
        await self._commit(tx)

    # ------------------------------------------------------------ first / gather
    def _check_awaitables(self, what: str, awaitables: tuple[Any, ...],
                          others: bool = False) -> None:
        """Refuse what ``first`` / ``gather`` cannot wait on, naming it: the durable
        kinds of this workflow, and (``others``: ``gather``) any other awaitable."""
        for a in awaitables:
            if isinstance(a, Awaitable):
                if a._wf is not self:
                    raise ValueError(f"{a!r} belongs to another workflow")
            elif not (others and inspect.isawaitable(a)):
                _close_coroutines(awaitables)
                also = ", activities started with workflow.start() and other awaitables" \
                    if others else " and activities started with workflow.start()"
                raise TypeError(f"{what} takes promises, timers, inbox receives{also}, "
                                f"got {a!r}")

    async def first(self, awaitables: tuple[Any, ...]) -> Any:
        self._check_awaitables("workflow.first()", awaitables)
        for a in awaitables:
            if isinstance(a, PendingReceive) and a.seconds is not None and not a.resolved:
                raise ValueError("a receive raced in workflow.first() takes no timeout: "
                                 "race it with a workflow.timer() instead")
        entry = self._take(JournalKind.FIRST, "", cancel=self.cancel_mark is None
                           or not self._race_before_cancel(awaitables))
        of = [a.recorded_as for a in awaitables]  # (a replay checks them)
        if entry is not None:
            index = int(entry.outcome["index"])
            recorded = entry.outcome.get("of")  # (journals of earlier versions lack it)
            if recorded is None:
                recorded = [f"{index + 1}+ awaitables"] if index >= len(awaitables) else of
            if recorded != of:  # another race: the recorded index would pick another one
                raise self.cursor.diverge(entry.seq, JournalKind.FIRST, ", ".join(recorded),
                                          f"first {', '.join(of)!r}")
            await self._yield()
            return awaitables[index]
        seq = self.cursor.seq - 1
        try:
            while True:
                done = [i for i, a in enumerate(awaitables) if a.settled()]
                if done:
                    # several at once (after a stop: a message sent meanwhile, a deadline
                    # passed): the first to be done, as a node that ran on would have
                    # seen them; argument order for ties (deterministic)
                    i = done[0] if len(done) == 1 else min(
                        done, key=lambda j: (self._done_at(awaitables[j]), j))
                    a = awaitables[i]
                    if self.cancel_at is not None and self.cancel_first(self._done_at(a)):
                        raise WaitCancelled
                    tx = Transaction()
                    if isinstance(a, PendingReceive) and not a.resolved:
                        self._claim(a, tx)  # consumed with the decision, atomically
                    self.record(tx, seq, JournalKind.FIRST, "",
                                _dumps({"index": i, "of": of}))
                    await self._commit(tx)
                    return a
                deadlines = [a.deadline for a in awaitables if isinstance(a, DurableTimer)]
                wake = self.host.clock.trio_deadline(min(deadlines)) if deadlines else None
                only_timers = len(deadlines) == len(awaitables)
                try:
                    await self._wait(wake, WorkflowStatus.SLEEPING if only_timers
                                     else WorkflowStatus.WAITING,
                                     f"workflow.first({', '.join(of)})")
                except WaitCancelled:
                    if self.cancel_mark is None or not self._race_before_cancel(awaitables):
                        raise
                    # (a message that arrived before the cancel woke it: it wins first)
        except WaitCancelled:
            self._deliver_cancel(seq)

    def _race_before_cancel(self, awaitables: tuple[Any, ...]) -> bool:
        """True if a receive raced in ``awaitables`` has an item that arrived before
        the cancel of the running workflow (``cancel_mark``): the race takes it before
        the cancel comes, as a receive awaited alone does."""
        return any(isinstance(a, PendingReceive) and not a.resolved
                   and self._before_cancel(a.box) for a in awaitables)

    def _done_at(self, a: Any) -> float:
        """When ``a`` (done) was done, wall clock: a timer at its deadline, a receive when
        its message was committed, a promise when it was completed, a started activity
        at its record's time (``done_at``; the journal's, if recorded before this run);
        one of unknown time as early as can be."""
        if isinstance(a, DurableTimer):
            return a.deadline
        if isinstance(a, PendingReceive) and not a.resolved:
            item = self._find(a.box)
            return item.created if item is not None else -math.inf
        if isinstance(a, DurablePromise) and self.promise_times is not None:
            return self.promise_times.get(a.name, -math.inf)
        if isinstance(a, ActivityHandle):
            if a.done_at is not None:
                return a.done_at
            try:  # recorded before this run (rare here: the journal's time of its record)
                return next((r.time.timestamp() for r in self.store.journal(self.wid)
                             if r.seq == a.seq), -math.inf)
            except Exception:  # (a store without times: a replayed history)
                return -math.inf
        return -math.inf

    async def gather(self, awaitables: tuple[Any, ...]) -> list[Any]:
        """Every result, in argument order (awaited one after another, so a coroutine
        such as ``workflow.call(...)`` takes its journal position as it is awaited, as
        ``await`` would); what cannot be awaited is a ``TypeError`` naming it. When one
        raises, the coroutines after it are closed unstarted (never run, no warning)."""
        self._check_awaitables("workflow.gather()", awaitables, others=True)
        results = []
        for i, a in enumerate(awaitables):
            try:
                results.append(await a)
            except BaseException:
                _close_coroutines(awaitables[i + 1:])
                raise
        return results
