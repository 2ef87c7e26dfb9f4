"""Observability hooks: where the engine tells metrics and traces what happens.

The engine calls these in one line at each point of interest and they cost nothing
while observability is off: the engine first reads a flag of this module
(``timing``, ``tracing``, ``active``; all false by default) and calls nothing when it
is false. This module imports neither prometheus-client nor OpenTelemetry:

- ``garrison.metrics`` switches ``timing`` on: the latency and batch-size histograms
  below are then filled (a bisect and two increments per observation, no lock; they
  are read at scrape time, in the trio thread);
- ``garrison.tracing`` installs a :class:`Tracer` that makes OpenTelemetry spans and
  switches ``tracing`` on.

Hook points (one each, in the engine):

=========================  ==========================================================
``committed``              group commit (``persistence/_group_commit.py``): one
                           database transaction written, its time and its batch size
``workflow_commit``        a workflow's commit (``WorkflowCore._committing``): step
                           latency, the ``store.commit`` span
``workflow_run``           a workflow instance's task (``WorkflowInstance.main``): the
                           ``workflow`` span, replay time
``workflow_continued``     ``continue_as_new`` (a new run: a new ``workflow`` span)
``replayed``               a recovered workflow's first live operation (replay done)
``activity_attempt``       one attempt of an activity: its span and duration
``traced_call``            a call (``Caller.exchange``): the ``call`` span
``carrier``                where a message is built: the trace context it carries
``received``               where a process or workflow takes a message: its context
=========================  ==========================================================
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from time import perf_counter
from typing import Any

__all__ = [
    "Histogram",
    "Tracer",
    "activity_attempt",
    "carrier",
    "committed",
    "received",
    "replayed",
    "safe_str",
    "set_timing",
    "set_tracer",
    "traced_call",
    "workflow_commit",
    "workflow_continued",
    "workflow_run",
]

#: latency histograms are kept (``garrison.metrics`` turned them on)
timing = False
#: spans are made (``garrison.tracing`` installed a tracer)
tracing = False
#: ``timing or tracing``
active = False


class Histogram:
    """Counts of observations per bucket (``le`` upper bounds, and +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, int]], float]:
        """``([(le, cumulative count), ..., ("+Inf", total)], sum)``: a consistent copy."""
        counts = list(self.counts)
        total = 0
        out: list[tuple[str, int]] = []
        for bound, n in zip((*map(_le, self.bounds), "+Inf"), counts, strict=True):
            total += n
            out.append((bound, total))
        return out, self.sum


def _le(bound: float) -> str:
    return repr(float(bound))


#: seconds: 100 us .. 10 s
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: seconds: 1 ms .. 5 min (a replay, an activity)
LONG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
#: commit() calls per database transaction
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)

# The histograms of this process (every node of it).
commit_seconds = Histogram(LATENCY_BUCKETS)
commit_batch_size = Histogram(BATCH_BUCKETS)
step_seconds = Histogram(LATENCY_BUCKETS)
replay_seconds = Histogram(LONG_BUCKETS)
#: ``(activity name, outcome)`` -> histogram of attempt durations
activity_seconds: dict[tuple[str, str], Histogram] = {}
#: workflows replaying their journal now -> when their task started
_replaying: dict[Any, float] = {}


def set_timing(on: bool) -> None:
    """Keep (or stop keeping) the latency histograms."""
    global timing, active
    timing = bool(on)
    active = timing or tracing


class Tracer:
    """What ``garrison.tracing`` implements; this base makes no spans."""

    def carrier(self) -> dict[str, str] | None:
        """The current trace context as a small dict, or ``None`` outside any span."""
        return None

    def adopt(self, trace: dict[str, str] | None) -> None:
        """Make ``trace`` (a received message's) the calling task's current context."""

    def run_started(self, wf: Any) -> None:
        """A workflow instance's task starts (or a continued run begins)."""

    def run_ended(self, wf: Any, how: str) -> None:
        """Its run ends: ``how`` is its status, ``continued`` or ``suspended``."""

    def replayed(self, wf: Any, seconds: float) -> None:
        """A recovered workflow caught up with its journal."""

    def span(self, kind: str, owner: Any, name: str,
             attributes: dict[str, Any]) -> contextlib.AbstractContextManager[Any]:
        """A span made current for the ``with`` block: ``kind`` is ``call``,
        ``activity`` or ``commit``."""
        return contextlib.nullcontext()


#: the tracer in use (this no-op one until ``garrison.tracing`` installs its own)
tracer: Tracer = Tracer()
#: workflows whose current run has a span -> the tracer that opened it (which ends
#: it, even if tracing was turned off or another tracer installed meanwhile)
_traced_runs: dict[Any, Tracer] = {}


def set_tracer(new: Tracer | None) -> None:
    """Install ``new`` (``None``: none) and switch ``tracing`` accordingly."""
    global tracer, tracing, active
    tracer = new if new is not None else Tracer()
    tracing = new is not None
    active = timing or tracing


# ---------------------------------------------------------------- store
def committed(started: float, size: int) -> None:
    """Group commit wrote one database transaction of ``size`` commit() calls, begun at
    ``started`` (``perf_counter``). Called only while ``timing``."""
    commit_seconds.observe(perf_counter() - started)
    commit_batch_size.observe(size)


# ---------------------------------------------------------------- workflows
async def workflow_commit(wf: Any, tx: Any) -> list[Any]:
    """``wf.store.commit(tx)`` timed (step latency) and inside a ``store.commit`` span.
    Called only while ``active``."""
    started = perf_counter()
    if tracing:
        with tracer.span("commit", wf, "store.commit", {"garrison.commit.operations": len(tx)}):
            results: list[Any] = await wf.store.commit(tx)
    else:
        results = await wf.store.commit(tx)
    if timing:
        step_seconds.observe(perf_counter() - started)
    return results


_NOTHING = contextlib.nullcontext()


def workflow_run(wf: Any) -> contextlib.AbstractContextManager[Any]:
    """Around a workflow instance's task: its ``workflow`` span, its replay time."""
    if not active:
        return _NOTHING
    return _run(wf)


@contextlib.contextmanager
def _run(wf: Any) -> Iterator[None]:
    if wf.cursor.entries:  # recovered: it replays its journal first
        _replaying[wf] = perf_counter()
    _run_started(wf)
    try:
        yield
    finally:
        if wf in _replaying:  # no live operation after its replay
            if wf.cursor.error is None and not wf.is_replaying():
                replayed(wf)  # it ended right where its journal does: it caught up
            else:  # it diverged, or stopped, before the live point: never caught up
                del _replaying[wf]
        _run_ended(wf, str(wf.status) if wf.done.is_set() else "suspended")


def _run_started(wf: Any) -> None:
    if tracing:
        _traced_runs[wf] = tracer
        tracer.run_started(wf)


def _run_ended(wf: Any, how: str) -> None:
    opened_by = _traced_runs.pop(wf, None)
    if opened_by is not None:
        opened_by.run_ended(wf, how)


def workflow_continued(wf: Any) -> None:
    """``wf`` continued as new: the run that ends gets its span closed, the new run
    a span of its own (if the run that ends had one: then ``_run`` ends it)."""
    if wf in _traced_runs:
        _run_ended(wf, "continued")
        _run_started(wf)


def replayed(wf: Any) -> None:
    """``wf`` (recovered) caught up with its journal: its first live operation."""
    started = _replaying.pop(wf, None)
    if started is None:
        return
    seconds = perf_counter() - started
    if timing:
        replay_seconds.observe(seconds)
    opened_by = _traced_runs.get(wf)
    if opened_by is not None:
        opened_by.replayed(wf, seconds)


@contextlib.contextmanager
def activity_attempt(wf: Any, name: str, attempt: int) -> Iterator[None]:
    """Around one attempt of activity ``name``: its span and its duration (by outcome:
    ``ok``, ``error``, ``cancelled`` for a timeout or a stop). Called while ``active``."""
    started = perf_counter()
    outcome = "ok"
    try:
        if tracing:
            with tracer.span("activity", wf, f"activity {name}",
                             {"garrison.activity.name": name,
                              "garrison.activity.attempt": attempt}):
                yield
        else:
            yield
    except Exception:
        outcome = "error"
        raise
    except BaseException:
        outcome = "cancelled"
        raise
    finally:
        if timing:
            key = (name, outcome)
            hist = activity_seconds.get(key)
            if hist is None:
                hist = activity_seconds[key] = Histogram(LONG_BUCKETS)
            hist.observe(perf_counter() - started)


# ---------------------------------------------------------------- messages and calls
def carrier() -> dict[str, str] | None:
    """The trace context a message built now carries. Called only while ``tracing``."""
    return tracer.carrier()


def received(item: Any) -> None:
    """A process or workflow took ``item`` from an inbox (in its own task): a message's
    trace context becomes current; an event changes nothing. Called while ``tracing``."""
    trace = getattr(item, "trace", _EVENT)
    if trace is not _EVENT:
        tracer.adopt(trace)


_EVENT: Any = object()


async def traced_call(caller: Any, callee: Any, pid: Any, topic: str, seconds: float,
                      deliver: Callable[[str], Awaitable[Any] | None], ref: str | None = None
                      ) -> Any:
    """``caller.exchange(...)`` inside a ``call`` span, current while the request is
    delivered (so the request carries it). Called only while ``tracing``."""
    with tracer.span("call", caller, f"call {topic}",
                     {"garrison.call.to": str(pid), "garrison.call.topic": topic}):
        return await caller.exchange(callee, pid, topic, seconds, deliver, traced=True, ref=ref)


def safe_str(exc: BaseException) -> str:
    """``str(exc)``; an exception whose ``__str__`` fails (raises, or returns no ``str``)
    still gets a message, saying so, as ``traceback`` does: capturing a failure must
    not fail (it would take the whole node down with the wrong reason)."""
    try:
        return str(exc)
    except BaseException as failed:  # (SystemExit too; not Ctrl-C)
        if isinstance(failed, KeyboardInterrupt):
            raise
        try:
            why = f"{type(failed).__name__}: {failed}"
        except Exception:
            why = type(failed).__name__
        return f"<exception str() failed: {why}>"
