"""The few trio internals garrison's hot paths read directly, each with a public
fallback for a trio version that moved them.

Every workflow step asks trio which task is running, wakes a waiting task and reads
the run queue's length; through trio's public functions each of those is a Python
call more (``trio.lowlevel.current_task()`` and ``trio.lowlevel.reschedule`` look the
runner up in the run context and turn a missing one into a ``RuntimeError``), and
``current_statistics()`` builds an object to give one number. Only reads, the count of
cancel points trio keeps itself (``passes_cancel_point``), the runner's own
``reschedule`` and trio's park trap (``PARK``) are used: nothing here changes how trio
schedules. That ``reschedule`` is not KI-protected, as trio's public one is: code that
calls it directly is marked ``trio.lowlevel.enable_ki_protection`` (a Ctrl-C halfway
would strand the task). Where these internals are missing, ``RUN`` (or ``PARK``) is
``None`` and every caller takes the public function (the suite runs a workflow, and
processes, both ways).
"""

from __future__ import annotations

from typing import Any

import outcome
import trio

__all__ = ["OUTCOMES", "PARK", "RUN", "current_task", "passes_cancel_point", "reschedule_now",
           "runnable_tasks", "system_clock_offset"]

RUN: Any
try:
    from trio._core import _run as _trio_run

    RUN = _trio_run.GLOBAL_RUN_CONTEXT
    if not (callable(getattr(_trio_run.Runner, "reschedule", None))
            and hasattr(_trio_run.Runner, "runq")):
        RUN = None  # pragma: no cover - another trio version
except (ImportError, AttributeError):  # pragma: no cover - another trio version
    RUN = None


#: what ``trio.lowlevel.wait_task_rescheduled(abort)`` yields to the run loop, made
#: ``PARK(abort)``: a generator-based coroutine (``types.coroutine``) that parks a task
#: yields it itself, ``got = yield PARK(abort)``, two coroutine frames fewer to make and
#: to pass through each time the task parks and wakes (trio's function and the
#: generator it yields from); ``None`` where it moved (then it awaits trio's function).
#: Trio sends in what ``reschedule`` was given, unwrapped by nobody: a task parked so
#: (``Caller.exchange``, ``Inbox._park`` and ``__anext__``) is woken by its own wakers
#: with a value itself, and with an outcome for what is one (trio's cancellation, a
#: failure, a value that is an outcome itself, sent wrapped), which it unwraps
PARK: Any
try:
    from trio._core._traps import WaitTaskRescheduled as PARK

    if RUN is None:
        PARK = None  # pragma: no cover - another trio version
except ImportError:  # pragma: no cover - another trio version
    PARK = None

#: the two outcomes: what a task parked on :data:`PARK` unwraps (``type(got) in
#: OUTCOMES``), anything else it was woken with being the value itself
OUTCOMES = (outcome.Value, outcome.Error)


def current_task() -> trio.lowlevel.Task:
    """``trio.lowlevel.current_task()`` (its ``RuntimeError`` outside trio, in a worker
    thread say); hot paths read ``getattr(RUN, "task", None)`` themselves when ``RUN``
    is not ``None`` (the run context is per thread: ``None`` outside trio)."""
    if RUN is not None:
        task = getattr(RUN, "task", None)
        if task is not None:
            return task
    return trio.lowlevel.current_task()


_CANCEL_POINT: bool
try:
    from trio._core._run import CancelStatus as _CancelStatus
    from trio._core._run import Runner as _Runner
    from trio._core._run import Task as _Task

    _CANCEL_POINT = (all(hasattr(_Task, name) for name in ("_cancel_status", "_runner",
                                                          "_cancel_points"))
                     and hasattr(_CancelStatus, "effectively_cancelled")
                     and hasattr(_Runner, "main_task") and hasattr(_Runner, "ki_pending"))
except ImportError:  # pragma: no cover - another trio version
    _CANCEL_POINT = False


def passes_cancel_point() -> bool:
    """What ``trio.lowlevel.checkpoint_if_cancelled()`` does when it does nothing: if no
    cancellation applies to the calling task (nor a Ctrl-C waits for the main task),
    count a cancel point as it does (``trio.testing.assert_checkpoints`` sees it) and
    return True; else False, and the caller awaits ``checkpoint_if_cancelled()``
    itself, which checkpoints and raises. Its checks, read without the coroutine and
    the two calls it makes to find the task: every send, reply and spawn passes one.
    False too outside a task, or where trio's internals moved (the caller then takes
    trio's function)."""
    if not _CANCEL_POINT or RUN is None:
        return False
    task = getattr(RUN, "task", None)
    if task is None or task._cancel_status.effectively_cancelled:
        return False
    runner = task._runner
    if task is runner.main_task and runner.ki_pending:
        return False
    task._cancel_points += 1
    return True


def reschedule_now() -> Any:
    """The function that wakes a task (``reschedule``'s signature), looked up once for
    a loop waking many: the runner's own method."""
    if RUN is not None:
        return RUN.runner.reschedule
    return trio.lowlevel.reschedule  # pragma: no cover - another trio version


_SYSTEM_CLOCK: Any
try:
    from trio._core._run import SystemClock as _SYSTEM_CLOCK
except ImportError:  # pragma: no cover - another trio version
    _SYSTEM_CLOCK = None


def system_clock_offset(clock: trio.abc.Clock) -> float | None:
    """``offset`` when ``clock`` is trio's default clock, whose time is
    ``time.perf_counter() + offset`` (a fixed offset); ``None`` for any other clock
    (``MockClock``, a clock of the caller's own)."""
    if _SYSTEM_CLOCK is None or type(clock) is not _SYSTEM_CLOCK:
        return None
    offset = getattr(clock, "offset", None)
    return offset if type(offset) is float else None


def runnable_tasks() -> int:
    """How many tasks wait to run in the next scheduler pass."""
    if RUN is not None:
        try:
            return len(RUN.runner.runq)
        except AttributeError:  # pragma: no cover - another trio version
            pass
    return trio.lowlevel.current_statistics().tasks_runnable
