"""``workflow_env()``: a node on an in-memory store whose workflow timers skip.

Two ways time skips, chosen by the trio clock the test runs on:

- pytest-trio's ``autojump_clock`` (``MockClock(autojump_threshold=0)``): trio itself
  jumps to the next deadline whenever every task waits; the workflow hosts read their
  time through it (as always), so ``workflow.sleep("30d")`` and ``trio.sleep`` in the
  test both skip.
- any other clock (the test did not ask for one): the workflow hosts get a
  :class:`SkippingClock`, virtual time of their own that only moves by jumps, and the
  environment runs a task that, whenever every task waits, jumps it to the next
  workflow deadline, schedule tick, free slot of a host's ``rate:`` (or the end of an
  ``env.sleep``), the way the autojump clock does. Workflow timers, durable sleeps,
  receive timeouts, a workflow's call timeouts (to a workflow), activity retry delays,
  schedules' ticks and rates' waits skip;
  ``trio.sleep`` in the test's own code, activity timeouts and plain processes'
  timeouts take real time, as does a workflow's call to a plain process (which works in
  real time).

Either way ``await env.sleep(d)`` advances time by ``d``, firing what falls due on the
way, and returns once the workflows woken have reacted (every task waits again, and no
plain activity works in its worker thread). While a plain (sync) activity works in its
thread the environment does not skip time: a workflow timer never beats it by a jump.
An async activity's own waits (``trio.sleep``, I/O) are tasks waiting like any other:
without the autojump clock they take real time while workflow time skips (mock the
activity, or run on the autojump clock, to race it with a timer).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import inspect
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeGuard

import attrs
import trio
import trio.testing

from .._duration import parse_duration
from .._frames import frame_text, is_runtime
from .._handle import WorkflowHandle
from .._node import Node, _as_config, open_node
from .._router import not_in_trio
from ..hosts.workflow._activities import ActivitiesInFlight, _options
from ..hosts.workflow._core import FOREVER
from ..hosts.workflow._waits import WallClock
from ..persistence import WorkflowStatus, inline_store_calls

__all__ = ["ActivityMock", "SkippingClock", "WorkflowEnv", "workflow_env"]


#: (real) seconds that an awaited ``env.result`` may see every task wait with nothing due
#: before it says nothing can end its workflow
STUCK_AFTER = 5.0

#: schedules' ticks an awaited ``env.result`` lets fire (each schedule's once at least)
#: while they are all that is due and its workflow does not change, before it takes
#: them for nothing that can end it
IDLE_TICKS = 100

#: jumps of time, made by other workflows' timers (a heartbeat, a poller), that an
#: awaited ``env.result`` lets happen while its workflow (and its children) has no
#: timer of its own and stands as it was, before it takes them for nothing that can
#: end it
IDLE_JUMPS = 1000

#: the statuses of a workflow that waits (not one taking a step)
_PARKED = frozenset({WorkflowStatus.WAITING, WorkflowStatus.SLEEPING, WorkflowStatus.BLOCKED})

log = logging.getLogger("garrison.testing")

def _awaits_at(task: trio.lowlevel.Task) -> list[str]:
    """The frames of the code of ``task``'s own (outside garrison and trio) along its
    chain of awaits, outermost first, as a traceback prints them (with the source)."""
    frames: list[str] = []
    coro: Any = task.coro
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None and not is_runtime(frame.f_code.co_filename):
            frames.append(frame_text(frame))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


class SkippingClock(WallClock):
    """Virtual workflow time that moves only by jumps (:meth:`jump_to`), as trio's
    ``MockClock`` with rate 0: ``now()`` is the wall time at start plus every jump.

    A workflow parks until a trio deadline; this clock hands out stand-ins no real
    clock reaches, each mapped back to its wall deadline (:meth:`wall_of`), so the
    environment knows whom to wake when it jumps."""

    #: the first stand-in trio deadline (a million years from any trio clock's start)
    FAR = 1e13
    #: (a workflow's waits on its time go through :meth:`sleep`: a call's timeout)
    virtual = True

    def __init__(self) -> None:
        super().__init__()
        self.skipped = 0.0
        #: set when something new waits on this clock (the skipper looks again)
        self.changed = trio.Event()
        #: what waits on this clock's time: ``(wall time, its alarm)``
        self.sleepers: list[tuple[float, _Alarm]] = []
        self._walls: dict[float, float] = {}

    def now(self) -> float:
        return self.wall0 + self.skipped

    @property
    def follows_system(self) -> bool:
        """Never: this clock's time is virtual (a jump is no step of the system's)."""
        return False

    def trio_deadline(self, wall_deadline: float) -> float:
        self.changed.set()
        stand_in = self.FAR + len(self._walls)
        self._walls[stand_in] = wall_deadline
        return stand_in

    def wall_of(self, trio_deadline: float) -> float | None:
        """The wall deadline behind a trio deadline this clock handed out since its last
        jump (``None`` for another one)."""
        return self._walls.get(trio_deadline)

    async def sleep(self, seconds: float) -> None:
        woken = trio.Event()
        disarm = self.alarm(seconds, woken.set)
        try:
            await woken.wait()
        finally:
            disarm()

    def alarm(self, seconds: float, fire: Callable[[], None]) -> Callable[[], None]:
        """Call ``fire`` at the jump that passes ``seconds`` from now (a sleep's wake-up;
        a workflow's call timeout: its waiter is cancelled, no task of its own); returns
        the disarm."""
        entry = (self.now() + seconds, _Alarm(fire))
        self.sleepers.append(entry)
        self.changed.set()

        def disarm() -> None:
            if entry in self.sleepers:
                self.sleepers.remove(entry)

        return disarm

    def jump_to(self, wall: float) -> None:
        """Move time forward to ``wall`` (never back); sleepers due by then wake. The
        trio deadlines handed out before are forgotten: wake their waiters (they
        ask again)."""
        self.skipped += max(0.0, wall - self.now())
        self._walls.clear()
        now = self.now()
        for target, alarm in self.sleepers:
            if target <= now:
                alarm.set()


class _Alarm:
    """A sleeper of :class:`SkippingClock`: calls a function (once) when its time
    comes."""

    __slots__ = ("_fire",)

    def __init__(self, fire: Callable[[], None]) -> None:
        self._fire: Callable[[], None] | None = fire

    def set(self) -> None:
        fire, self._fire = self._fire, None
        if fire is not None:
            fire()


class ActivityMock:
    """A stand-in for one activity (by its journal name) in a :class:`WorkflowEnv`:
    ``calls`` lists ``(args, kwargs)`` of every call. Its outcome is final (no retries):
    ``result``, or ``error`` (an exception instance or class) recorded as the
    ``ActivityError`` a real failure gives, or what ``call(*args, **kwargs)`` returns
    or raises (a plain or async function)."""

    def __init__(self, name: str, *, result: Any = None, error: Any = None,
                 call: Callable[..., Any] | None = None) -> None:
        if error is not None and not (isinstance(error, Exception) or (
                isinstance(error, type) and issubclass(error, Exception))):
            # (a KeyboardInterrupt or SystemExit is no activity's failure: it would stop
            # the test's run, not be recorded as the ActivityError a failure gives)
            raise TypeError(f"mock_activity({name!r}, error=...) takes an exception instance "
                            f"or class (an Exception, as an activity's failure is), got "
                            f"{error!r}")
        if isinstance(error, type):
            try:
                error()
            except Exception:
                raise TypeError(f"mock_activity({name!r}, error={error.__name__}): that class "
                                "cannot be made without arguments; pass an instance") from None
        if call is not None and not callable(call):
            raise TypeError(f"mock_activity({name!r}, call=...) takes a function, got {call!r}")
        given = [k for k, v in (("result", result), ("error", error), ("call", call))
                 if v is not None]
        if len(given) > 1:
            raise TypeError(f"mock_activity({name!r}) takes one of result=, error= or call=, "
                            f"got {' and '.join(k + '=' for k in given)}")
        self.name = name
        self.result = result
        self.error = error
        self.call = call
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __repr__(self) -> str:
        return f"<ActivityMock {self.name} calls={len(self.calls)}>"

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        """One call of the stand-in (what the workflow's activity call runs)."""
        self.calls.append((args, kwargs))
        await trio.lowlevel.checkpoint()
        if self.call is not None:
            value = self.call(*args, **kwargs)
            return await value if inspect.isawaitable(value) else value
        if self.error is not None:
            error = self.error() if isinstance(self.error, type) else self.error
            raise error.with_traceback(None)
        return self.result


class WorkflowEnv:
    """What ``workflow_env()`` (and the ``garrison_env`` fixture) gives a test.

    ``node`` is a regular :class:`~garrison.Node` on an in-memory store; the rest are
    shortcuts for what a test does most: start, signal, resolve, read state, wait,
    and move time.
    """

    def __init__(self, node: Node, clock: WallClock, virtual: bool) -> None:
        #: the node: ``env.node.start_workflow(...)``, ``env.node.workflow(id)``, ...
        self.node = node
        #: the workflow hosts' clock
        self.clock = clock
        #: True when the environment skips time itself (no autojump clock)
        self.virtual = virtual
        self.mocks: dict[str, ActivityMock] = {}
        self._settling: list[trio.Event] = []
        #: the waits of ``result`` calls (and their workflow ids): cancelled when nothing
        #: can ever end them
        self._results: list[tuple[trio.CancelScope, str]] = []
        #: ticks fired while they were all that was due and the awaited workflows stood
        #: as ``_idle_mark`` says (see :data:`IDLE_TICKS`), and each schedule's next
        #: tick as it was then
        self._idle_ticks = 0
        self._idle_mark: Any = None
        self._idle_from: dict[tuple[str, str], Any] = {}
        #: the ticks that fired in vain before the last results were taken for stuck
        self._ticked_in_vain = 0
        #: jumps of time made by other workflows' timers while the awaited workflows
        #: stood as ``_jump_mark`` says, with no timer of their own (see IDLE_JUMPS);
        #: and those made in vain before the last results were taken for stuck
        self._idle_jumps = 0
        self._jump_mark: Any = None
        self._jumped_in_vain = 0
        #: the ``workflow_env()`` block has ended: nothing moves time any more
        self._ended = False
        #: the steps (workflow id, seq) said to run on in real time (once each)
        self._warned: set[tuple[str, int]] = set()

    # -- time
    def now(self) -> _dt.datetime:
        """The workflows' current time (what ``workflow.now()`` would record)."""
        return _dt.datetime.fromtimestamp(self.clock.now(), _dt.UTC)

    async def sleep(self, duration: Any) -> None:
        """Advance time by ``duration`` (seconds or ``"30d"``), firing the workflow timers
        that fall due on the way, and return once the workflows have reacted."""
        seconds = parse_duration(duration)
        self._check_open(f"env.sleep({duration!r})")
        if not math.isfinite(seconds) or self.clock.now() + seconds > FOREVER:
            # (a workflow's clock past 9999-12-31 says no date: the environment broke)
            raise ValueError(f"env.sleep({duration!r}): time cannot pass beyond "
                             "9999-12-31T23:59:59Z, the last moment a workflow's clock can "
                             "tell; sleep less")
        if self.virtual:
            await self.clock.sleep(seconds)
        else:
            await trio.sleep(seconds)
        await self.settle()

    async def settle(self) -> None:
        """Return once every task waits (the workflows have done all they can now) and
        no plain activity works in its worker thread, without moving time."""
        self._check_open("env.settle()")
        if not self.virtual:
            while True:
                await trio.testing.wait_all_tasks_blocked()
                running = self._activities_running()
                if running is None:
                    return
                await running.wait()
        event = trio.Event()
        self._settling.append(event)
        assert isinstance(self.clock, SkippingClock)
        self.clock.changed.set()
        await event.wait()

    def _check_open(self, call: str) -> None:
        if self._ended:
            raise RuntimeError(f"{call}: the workflow_env() block has ended (its node is "
                               "closed): time no longer moves and no workflow runs; call "
                               "it inside the block")

    async def _skipper(self) -> None:
        """Virtual mode: whenever every task waits, jump to the next workflow deadline,
        schedule tick (or the end of an ``env.sleep``)."""
        clock = self.clock
        assert isinstance(clock, SkippingClock)
        while True:
            await trio.testing.wait_all_tasks_blocked()
            running = self._activities_running()
            if running is not None:  # (time stands while it runs in real time)
                await running.wait()
                continue
            if self._settling:
                for event in self._settling:
                    event.set()
                self._settling.clear()
                continue
            waiting = [wf for host in self._hosts() for wf in host.active.values()
                       if wf.wait_deadline is not None and not wf.done.is_set()]
            targets = [clock.wall_of(wf.wait_deadline) for wf in waiting]
            # each host's queue (a rate's free slot) and scheduler (a tick)
            loops = [loop for host in self._hosts() for loop in (host.scheduler, host.queue)]
            targets += [clock.wall_of(host.queue.wait_deadline) for host in self._hosts()
                        if host.queue.wait_deadline is not None]
            # (a sleeper's time is one asked for: ``env.sleep`` to the last moment a
            # workflow's clock tells is due there, not "for ever")
            sleepers = [target for target, _alarm in clock.sleepers
                        if math.isfinite(target) and target <= FOREVER]
            ticks = [clock.wall_of(host.scheduler.wait_deadline) for host in self._hosts()
                     if host.scheduler.wait_deadline is not None]
            due = [t for t in targets if _reached(t)] + sleepers
            due_ticks = [t for t in ticks if _reached(t)]
            held = bool(due_ticks) and not due and self._idle_ticks_spent()
            if not held:  # (else taken for nothing that can end what is awaited)
                due += due_ticks
            if not due:
                if not self._results:
                    clock.changed = trio.Event()
                    await clock.changed.wait()
                    continue
                # a result is awaited, and nothing is due
                if await self._stands_in_vain(self._stuck):
                    self._ticked_in_vain, self._jumped_in_vain = (
                        self._idle_ticks if held else 0), 0
                    self._end_results()
                continue
            if self._jumps_spent(waiting):  # (only others' timers move time)
                if await self._stands_in_vain(functools.partial(self._jumps_spent, waiting)):
                    self._ticked_in_vain, self._jumped_in_vain = 0, self._idle_jumps
                    self._end_results()
                continue
            clock.jump_to(min(due))
            for wf in waiting:  # their trio deadlines are forgotten: they ask again
                wf.wake()
            for loop in loops:
                loop.wake()

    async def _stands_in_vain(self, still: Callable[[], bool]) -> bool:
        """Hold time (no jump) until something wakes a workflow (the clock is waited on
        anew) or :data:`STUCK_AFTER` real seconds pass, in which the test's own task, a
        plain process or a thread may end what is awaited; True if nothing did and
        ``still()`` says nothing can end it still."""
        clock = self.clock
        assert isinstance(clock, SkippingClock)
        clock.changed = trio.Event()
        with trio.move_on_after(STUCK_AFTER):
            await clock.changed.wait()
            return False
        await trio.testing.wait_all_tasks_blocked()
        if clock.changed.is_set():
            return False
        if still():
            return True
        self._warn_of_long_steps()
        return False

    def _warn_of_long_steps(self) -> None:
        """Say (once a step) which awaited workflows have run a step, in real time, for
        :data:`STUCK_AFTER` seconds in which nothing was due: an async activity awaiting
        I/O that may end it, so not stuck; but one that never returns (no timeout) would
        hang the test in silence."""
        for awaited in dict.fromkeys(wid for _scope, wid in self._results):
            for wid, wf in self._family([awaited]).items():
                if (wf.done.is_set() or wf.status in _PARKED or wf.task is None
                        or (wid, wf.cursor.seq) in self._warned):
                    continue
                self._warned.add((wid, wf.cursor.seq))
                frames = _awaits_at(wf.task)
                log.warning(
                    "env.result(%r): workflow %r has run a step for %g s of real time, in "
                    "which workflow time does not skip (an async activity's own waits take "
                    "real time here); an activity that never returns, with no timeout=, "
                    "hangs this test: mock it (env.mock_activity) or give it a timeout. "
                    "It awaits %s", awaited, wid, STUCK_AFTER,
                    "at:\n" + "\n".join(frames) if frames else "in garrison's code")

    def _idle_ticks_spent(self) -> bool:
        """Schedules' ticks are all that is due: True once :data:`IDLE_TICKS` of them,
        each schedule's once at least, fired while a result was awaited and its
        workflow did not change (a tick may start a workflow that ends it, so they fire
        until then; no proof is possible either way). Counts this tick otherwise."""
        if not self._results:
            self._idle_ticks, self._idle_mark = 0, None
            return False
        mark = self._awaited_mark()
        next_ticks = {(host.name, sid): record.next_tick for host in self._hosts()
                      for sid, record in host.scheduler.rows.items()
                      if not record.paused and record.next_tick is not None}
        if mark != self._idle_mark:
            self._idle_ticks, self._idle_mark, self._idle_from = 0, mark, next_ticks
        if self._idle_ticks >= IDLE_TICKS and all(
                self._idle_from.setdefault(key, tick) != tick
                for key, tick in next_ticks.items()):
            return True
        self._idle_ticks += 1
        return False

    def _end_results(self) -> None:
        """Cancel the awaited ``env.result`` calls: nothing can end their workflows."""
        for scope, _id in self._results:
            scope.cancel()
        self._results.clear()

    def _jumps_spent(self, waiting: list[Any]) -> bool:
        """Time is about to jump: True once :data:`IDLE_JUMPS` jumps, made while a result
        was awaited, left its workflow and its children (child workflows, theirs, ...)
        as they were, none of them with a timer of its own (``waiting``: the workflows
        with a deadline), and nothing else moving (:meth:`_stuck`): only other
        workflows' timers move time (a heartbeat sleeping in a loop), which would skip
        to the year 9999. Counts this jump otherwise; a timer of their own, or a step
        one of them takes, starts the count again (one of those timers' workflows may
        send what ends it: they jump until then; no proof is possible either way). Once
        True, the skipper holds time for STUCK_AFTER real seconds, and asks again."""
        if not self._results:
            self._idle_jumps, self._jump_mark = 0, None
            return False
        family = self._family()
        assert isinstance(self.clock, SkippingClock)
        if not self._stuck() or any(wf.wid in family and _reached(
                self.clock.wall_of(wf.wait_deadline)) for wf in waiting):
            self._idle_jumps, self._jump_mark = 0, None
            return False
        mark: tuple[Any, ...] = tuple(sorted((wid, id(wf), wf.cursor.seq, str(wf.status))
                                             for wid, wf in family.items()))
        mark += tuple(wid for _scope, wid in self._results if wid not in family)
        if mark != self._jump_mark:
            self._idle_jumps, self._jump_mark = 0, mark
        if self._idle_jumps >= IDLE_JUMPS:
            return True
        self._idle_jumps += 1
        return False

    def _family(self, ids: list[str] | None = None) -> dict[str, Any]:
        """The running workflows of the awaited results (or of ``ids``), and their
        descendants, by id."""
        if ids is None:
            ids = [wid for _scope, wid in self._results]
        active = [wf for host in self._hosts() for wf in host.active.values()]
        family = {wf.wid: wf for wf in active if wf.wid in ids}
        grown = True
        while grown:
            grown = False
            for wf in active:
                if (wf.wid not in family and wf.parent is not None
                        and wf.parent.id in family):
                    family[wf.wid] = wf
                    grown = True
        return family

    def _awaited_mark(self) -> tuple[Any, ...]:
        """Where the workflows of the awaited results stand (each one's run, journal
        position and status): it changes with every step one of them takes."""
        mark: list[Any] = []
        for _scope, wid in self._results:
            wf = next((host.active[wid] for host in self._hosts() if wid in host.active),
                      None)
            mark.append((wid, None) if wf is None else (wid, wf, wf.cursor.seq, wf.status))
        return tuple(mark)

    def _stuck(self) -> bool:
        """Nothing of the workflows can move by itself: every one waits (none runs a
        step: an async activity may await its I/O for a while), none has an activity
        it started (``workflow.start``) still running (one parked in ``first`` on it
        waits, and its async activity may await its I/O for a while too) and no plain
        activity works in a thread."""
        if self._activities_running() is not None:
            return False
        return all(wf.done.is_set() or (wf.status in _PARKED and not (
                       wf.started is not None and wf.started.running))
                   for host in self._hosts() for wf in host.active.values())

    def _activities_running(self) -> trio.Event | None:
        """An event set once the plain activities working in worker threads on one host
        have ended, or ``None`` when none works: a thread works while every task waits,
        and a workflow's timer must not win a race against it by a jump of time."""
        for host in self._hosts():
            if host.in_flight is not None and host.in_flight.count:
                event: trio.Event = host.in_flight.idle
                return event
        return None

    def _hosts(self) -> list[Any]:
        return [h for h in self.node.hosts.values() if getattr(h, "durable", False)]

    # -- activities
    def mock_activity(self, fn: Any, *, result: Any = None, error: Any = None,
                      call: Callable[..., Any] | None = None) -> ActivityMock:
        """Replace the activity ``fn`` (the function, or its journal name
        ``module:qualname``) for the workflows of this environment: it returns
        ``result``, or raises ``error`` (recorded as the ``ActivityError`` a real final
        failure gives), or runs ``call`` instead; at once and once (no retries).

        A function is mocked by its own journal name: a look-alike defined in the test
        (a local ``async def``, a lambda) is another activity, which the workflow never
        calls (not refused: any function may be an activity a workflow is given)."""
        self._check_open("env.mock_activity()")
        name = self._activity_to_mock(fn)
        mock = ActivityMock(name, result=result, error=error, call=call)

        async def stand_in(*args: Any, **kwargs: Any) -> Any:
            return await mock.run(*args, **kwargs)

        for host in self._hosts():
            host.activity_mocks[name] = stand_in
        self.mocks[name] = mock
        return mock

    def _activity_to_mock(self, fn: Any) -> str:
        """The journal name of the activity ``fn`` names; ``ValueError`` for a name no
        activity has, ``TypeError`` for something that is not an activity (a workflow)."""
        from .._activity import is_activity_name
        from .._targets import import_target

        shown = f"mock_activity({fn!r})"
        if isinstance(fn, str):
            if is_activity_name(fn):  # an @activity, also one named by @activity(name=)
                return fn
            entry = self._config_entry(fn)
            if entry is not None:  # an entry id of the config is no activity
                source = getattr(entry, "source", "")
                raise TypeError(f"{shown}: {fn!r} is the config's {entry.kind} entry"
                                + (f" ({source})" if source else "") + ", not an activity"
                                + (": mock the activities it calls, and run it with "
                                   "env.start" if entry.kind == "workflow.py" else ""))
            try:
                if ":" not in fn:
                    raise ValueError("not a 'module:qualname'")
                obj = import_target(fn)
            except Exception as exc:
                raise ValueError(
                    f"{shown}: unknown activity: no @garrison.activity has this name, and "
                    f"it does not import as module:qualname ({type(exc).__name__}: {exc}); "
                    "give the activity function itself, or its journal name") from None
        else:
            obj = fn
        if not callable(obj):
            raise TypeError(f"{shown}: expected an activity (a function a workflow calls), "
                            f"got {type(obj).__name__}")
        name = _options(obj, None, None, None)[3]
        if getattr(obj, "__garrison_activity__", None) is None:
            why = self._workflow_use(obj, name)
            if why is not None:
                raise TypeError(f"{shown}: {name} is a workflow ({why}), not an activity: "
                                "mock the activities it calls, and run it with env.start")
        if isinstance(fn, str) and name != fn:
            raise ValueError(f"{shown}: the activity {fn!r} imports is journaled as {name!r}: "
                             f"mock {name!r} or the function itself")
        return name

    def _config_entry(self, entry_id: str) -> Any:
        """The config's entry of id ``entry_id`` (``ns:name``), or ``None``."""
        config = self.node.config
        return None if config is None else config.entries.get(entry_id)

    def _workflow_use(self, fn: Any, name: str) -> str | None:
        """How ``fn`` is known as a workflow in this environment, or ``None``."""
        config = self.node.config
        if config is not None:
            for entry in config.sources("workflow.py"):
                if entry.func is fn:
                    return f"config entry {entry.id!r} is a workflow.py"
        if any(w.name == name for w in self.node.workflows()):
            return "it was started as one here"
        return None

    # -- workflows
    async def start(self, target: Any, *args: Any, id: str | None = None,
                    host: str | None = None) -> WorkflowHandle:
        """Start a workflow (``node.start_workflow``); its handle."""
        self._check_open("env.start()")
        pid = await self.node.start_workflow(target, *args, id=id, host=host)
        return self.workflow(pid.id, host=host)

    def workflow(self, id: str, host: str | None = None) -> WorkflowHandle:
        """The handle of workflow ``id``: the node's, but its ``result()`` is
        :meth:`result`'s (a ``RuntimeError`` once nothing can end the workflow)."""
        handle: WorkflowHandle = self.node.workflow(id, host=host)
        return _EnvHandle(handle.node, handle.host, handle.workflow_id, env=self)

    async def signal(self, id: str, topic: str, payload: Any = None) -> None:
        """Send workflow ``id`` a message, then let it react."""
        self._check_open(f"env.signal({id!r})")
        await self.workflow(id).signal(topic, payload)
        await self.settle()

    async def resolve(self, id: str, promise: str, value: Any = None) -> None:
        """Resolve a promise of workflow ``id``, then let it react."""
        self._check_open(f"env.resolve({id!r})")
        await self.workflow(id).promise(promise).resolve(value)
        await self.settle()

    async def reject(self, id: str, promise: str, message: str) -> None:
        """Reject a promise of workflow ``id``, then let it react."""
        self._check_open(f"env.reject({id!r})")
        await self.workflow(id).promise(promise).reject(message)
        await self.settle()

    def state(self, id: str, key: str, default: Any = None) -> Any:
        """A value workflow ``id`` stored with ``workflow.set_state`` (committed ones)."""
        self._check_open(f"env.state({id!r})")
        return self.workflow(id).state(key, default)

    def status(self, id: str) -> str:
        """The status of workflow ``id`` (``waiting``, ``completed``, ...)."""
        self._check_open(f"env.status({id!r})")
        return str(self.workflow(id).status())

    async def result(self, id: str) -> Any:
        """Wait for workflow ``id`` to end (time skips meanwhile); its result, or its
        error raised. A ``RuntimeError`` once nothing can end it (every task waits and
        nothing is due: a promise nobody resolves, a message nobody sends, a wait for
        ever; or only schedules' ticks are, :data:`IDLE_TICKS` of them fired in vain, or
        other workflows' timers, :data:`IDLE_JUMPS` jumps of time in vain), rather than
        a test that hangs."""
        return await self._result(self.node.workflow(id))

    async def _result(self, handle: WorkflowHandle) -> Any:
        id = handle.workflow_id
        self._check_open(f"env.result({id!r})")
        if not self.virtual:
            return await WorkflowHandle.result(handle)
        with trio.CancelScope() as scope:
            awaited = (scope, id)
            self._results.append(awaited)
            try:
                return await WorkflowHandle.result(handle)
            finally:
                if awaited in self._results:
                    self._results.remove(awaited)
        due = "no timer is due"
        if self._ticked_in_vain:
            due += (f" but schedules' ticks ({self._ticked_in_vain} fired, each schedule's "
                    "once at least, without changing it)")
        elif self._jumped_in_vain:
            due = (f"no timer of its own is due ({self._jumped_in_vain:,} jumps of time, "
                   "by other workflows' timers, left it as it was: if one of those "
                   "workflows ends it later, await env.sleep() past that first)")
        # what it and its children wait on, where known (else the kinds of wait there are)
        waits = [(wid, wf.waits_on) for wid, wf in self._family([id]).items() if wf.waits_on]
        said = ", ".join(f"workflow {wid!r} {'on' if i else 'waits on'} {on}"
                         for i, (wid, on) in enumerate(waits))
        raise RuntimeError(
            f"env.result({id!r}): workflow {id!r} is {handle.status()} and nothing can end "
            f"it: every task waits, {due} and no activity runs ("
            + (said or "a promise nobody resolves, a message nobody sends, a wait for ever")
            + "); send or resolve what it waits for before awaiting its result, or race "
            "its wait with a timer")


def _reached(wall: float | None) -> TypeGuard[float]:
    """A wall deadline (of :meth:`SkippingClock.wall_of`) is a time the clock will
    reach: a wait "for ever" records the latest deadline there is, never due."""
    return wall is not None and math.isfinite(wall) and wall < FOREVER


@attrs.frozen
class _EnvHandle(WorkflowHandle):
    """A workflow's handle from the environment (``env.start``, ``env.workflow``):
    its ``result()`` is ``env.result``'s, which raises rather than hang."""

    env: WorkflowEnv = attrs.field(repr=False, eq=False, kw_only=True)

    async def result(self) -> Any:
        return await self.env._result(self)


def _skips_by_itself() -> bool:
    """True when trio's clock jumps by itself whenever every task waits."""
    clock = trio.lowlevel.current_clock()
    return isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold == 0


@asynccontextmanager
async def workflow_env(config: Any = None) -> AsyncIterator[WorkflowEnv]:
    """A node on an in-memory store whose workflow timers skip (see the module docs),
    for tests; ``config``: a YAML config (path or loaded) whose hosts and services the
    node gets, its workflow hosts on in-memory stores.

    >>> async with garrison.testing.workflow_env() as env:     # doctest: +SKIP
    ...     await env.start(approval, "laptop", id="a")
    ...     await env.sleep("30d")
    ...     assert await env.result("a") == "expired"
    """
    if not trio.lowlevel.in_trio_run():  # (asyncio's: trio fails deep inside otherwise)
        raise not_in_trio("garrison.testing.workflow_env()")
    loaded = _as_config(config, None)  # (every host of its node is in memory)
    stores: dict[str, Any] = {"workflows": None}
    if loaded is not None:
        stores.update({e.id: None for e in loaded.hosts() if e.kind == "workflow.host"})
    virtual = not _skips_by_itself()
    # (its clock jumps once every task waits: a store call in a worker thread would let
    # it jump meanwhile, so the node's tasks make theirs in the trio thread)
    with inline_store_calls() if virtual else contextlib.nullcontext():
        async with _env_node(loaded, stores, virtual) as env:
            yield env


@asynccontextmanager
async def _env_node(loaded: Any, stores: dict[str, Any], virtual: bool
                    ) -> AsyncIterator[WorkflowEnv]:
    """:func:`workflow_env`'s node and environment."""
    async with open_node(config=loaded, store=stores) as node:
        clock: WallClock
        hosts = [h for h in node.hosts.values() if getattr(h, "durable", False)]
        if virtual:
            clock = SkippingClock()
            for host in hosts:
                host.clock = clock
                host.scheduler.wake()  # (its timer was set on the clock it started on)
        else:
            clock = hosts[0].clock
        for host in hosts:
            host.in_flight = ActivitiesInFlight()
        env = WorkflowEnv(node, clock, virtual)
        async with trio.open_nursery() as nursery:
            if virtual:
                nursery.start_soon(env._skipper)
            try:
                yield env
            finally:
                env._ended = True
                nursery.cancel_scope.cancel()
