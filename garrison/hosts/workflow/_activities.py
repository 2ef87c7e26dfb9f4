"""Activities of a workflow: run with their retry policy, only the final outcome
journaled; ``workflow.start`` runs one in the background behind a handle.

An activity runs at least once and its outcome is recorded exactly once (a crash
between its end and the commit runs it again on the next node). Its code is plain
code: workflow calls are refused inside it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import sys
from typing import Any

import attrs
import outcome
import trio

from ... import _observe, _trio_fast
from ..._activity import DEFAULT_RETRY, RetryPolicy, activity_name, check_retry
from ..._context import ActivityScope, activity_owner
from ..._errors import (
    ActivityError,
    NonDeterminismError,
    NotInProcess,
    PayloadError,
    WorkflowMoved,
    raised_again,
)
from ..._targets import import_target
from ...actors._cancel_switch import is_stray, stray_message
from ...actors._runtime import runtime_var
from ...actors._values import ErrorInfo, Message, Pid
from ...persistence import Transaction, WorkflowStatus
from .._kernel import ended_by_stop, plain_call, stepping
from ._codec import PLAIN, activity_result_json, return_hint, stored_as, structure
from ._core import EngineStop, WorkflowCore, recordable
from ._journal import (
    JournalKind,
    error_from_plain,
    error_to_plain,
    retry_kind,
    retry_timer,
    timestamp,
)

__all__ = ["Activities", "ActivitiesInFlight", "ActivityHandle", "StartedActivities"]

log = logging.getLogger("garrison.workflow")

_ACTIVITY = JournalKind.ACTIVITY
#: the policy of an activity's stand-in: one attempt, its outcome is final
_ONCE = RetryPolicy(max_attempts=1)
_dumps = json.dumps


#: an activity function's return hint, the hint its result is stored by (``Any``
#: unless it declares a dict of non-str keys: ``stored_as``) and whether it is an
#: ``async def`` function (``inspect.iscoroutinefunction``, asked twice at every step,
#: unwraps partials and methods each time), by function: ``return_hint`` caches the
#: hint too, but behind two calls, and every step reads them (emptied when it reaches
#: ``_HINTS_KEPT`` functions, as ``return_hint``'s own cache is bounded; an unhashable
#: callable's, a dataclass instance's, are asked at each step)
_RETURN_HINTS: dict[Any, tuple[Any, Any, bool]] = {}
_HINTS_KEPT = 1024


class ActivitiesInFlight:
    """How many plain (sync) activity attempts run now in worker threads, on a host that
    counts them (``garrison.testing``'s ``workflow_env`` sets one on its hosts: a thread
    works while every task waits, and the environment must neither skip the workflows'
    time nor call them settled meanwhile). ``idle`` is set while none runs."""

    __slots__ = ("count", "idle")

    def __init__(self) -> None:
        self.count = 0
        self.idle = trio.Event()
        self.idle.set()

    def started(self) -> None:
        self.count += 1
        if self.idle.is_set():
            self.idle = trio.Event()

    def ended(self) -> None:
        self.count -= 1
        if not self.count:
            self.idle.set()


def _is_async(fn: Any) -> bool:
    """:func:`_awaited`, kept by function (not for an unhashable callable: a dataclass
    instance, whose ``__eq__`` drops its hash)."""
    try:
        return _awaited_kept(fn)
    except TypeError:
        return _awaited(fn)


def _awaited(fn: Any) -> bool:
    """Whether the activity ``fn`` is awaited, not run in a worker thread: an ``async
    def`` function, a method or a partial of one, or an object whose ``__call__`` is one
    (as a process target may be: its call makes a coroutine, which a thread cannot
    run)."""
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    if inspect.iscoroutinefunction(inner):
        return True
    if isinstance(inner, type) or inspect.isroutine(inner):
        return False  # (a class's call makes an instance; a plain function, a builtin)
    return inspect.iscoroutinefunction(getattr(type(inner), "__call__", None))  # noqa: B004


_awaited_kept = functools.lru_cache(maxsize=1024)(_awaited)


def _options(fn: Any, retry: RetryPolicy | None, timeout: float | None, name: str | None,
             what: str = "workflow.call") -> tuple[Any, RetryPolicy | None, float | None, str]:
    """The function to run and its retry, timeout and journal name: explicit arguments
    first, then what ``@garrison.activity`` attached. ``TypeError`` naming ``what``
    (``workflow.call``) for a ``fn`` that is no function, a ``retry`` no policy."""
    if not callable(fn):
        raise TypeError(f"{what}() takes a function to run as an activity (or the entry id "
                        f"of a function.py entry), got {type(fn).__name__}: {fn!r}")
    check_retry(retry, f"{what}()")
    opts = getattr(fn, "__garrison_activity__", None)
    if opts is not None:
        fn = getattr(fn, "__wrapped__", fn)
        retry = retry or opts.retry
        timeout = timeout if timeout is not None else opts.timeout
        name = name or opts.name
    return fn, retry, timeout, name or activity_name(fn)


class ActivityRuntime(ActivityScope):
    """``garrison.process`` inside an activity of a workflow: plain messaging from the
    workflow's pid, not journaled (at-least-once, like every activity effect):
    ``send``, ``call`` and ``msg.reply`` work, and ``garrison.current_node()`` gives the
    node; anything else raises ``NotInProcess``."""

    __slots__ = ("_wf",)

    def __init__(self, wf: Activities) -> None:
        self._wf = wf

    @property
    def activity_of(self) -> str:
        return self._wf.wid

    def current_pid(self) -> Pid:
        return self._wf.pid

    @property
    def node(self) -> Any:
        """The node running the activity (``garrison.current_node()`` reads it): an
        activity may use the node API, e.g. start another workflow."""
        return self._wf.node

    async def send(self, to: Pid | str, topic: str, payload: Any) -> None:
        await self._wf.node.send_message(self._wf.pid, to, topic, payload)

    async def call(self, to: Pid | str, topic: str, payload: Any, timeout: Any) -> Any:
        return await plain_call(self._wf, to, topic, payload, timeout)

    async def reply(self, msg: Message, value: Any) -> None:
        self._wf.reply_to(msg, value)
        await trio.lowlevel.checkpoint()

    def __getattr__(self, name: str) -> Any:
        raise NotInProcess(
            f"process.{name}() cannot be used inside an activity of workflow "
            f"{self._wf.wid!r}: an activity is plain code; only process.send, process.call "
            "and msg.reply work there (from the workflow's pid, not journaled)")


class ActivityHandle:
    """An activity started with ``workflow.start``: ``await`` it (any number of times)
    for its result (or its ``ActivityError``); ``done()`` says whether it has finished.

    A cancel request reaches the workflow function awaiting one that has not finished
    (:meth:`Activities.await_started`): the await raises ``WorkflowCancelled``, journaled
    at the next seq (an await takes none of its own) with the handle's seq, so that the
    replay raises at the same await of the same handle, whether or not the activity's
    result was recorded later (a compensation may await it again)."""

    __slots__ = ("_event", "_outcome", "_wf", "done_at", "hint", "name", "seq")

    def __init__(self, wf: Activities, name: str, hint: Any, seq: int = -1) -> None:
        self._wf = wf
        self.name = name
        self.hint = hint
        #: its journal position
        self.seq = seq
        #: when it finished here: the time of its journal record (wall clock, as the
        #: store gives it back, so that ``first`` decides as a node that loads it after
        #: a restart does), or ``None`` (not yet, or recorded before this run: see
        #: ``Waits._done_at``)
        self.done_at: float | None = None
        self._outcome: outcome.Outcome[Any] | None = None
        self._event: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<activity {self.name} {'done' if self.settled() else 'running'}>"

    def done(self) -> bool:
        """True once its outcome is recorded; recorded itself (a replay returns what the
        first run saw: it has the outcome from the start)."""
        return self._wf.recorded_done(self)

    @property
    def recorded_as(self) -> str:
        """What it is in the journal, as ``first`` records what it races and ``done()``
        what it read."""
        return f"activity {self.name}"

    def settled(self) -> bool:
        """True once its outcome is recorded: :meth:`done` unrecorded, for garrison's
        own waits (``first``, an await), which record what they decide."""
        return self._outcome is not None

    def _entry(self, out: dict[str, Any]) -> None:
        if "error" in out:
            self._outcome = outcome.Error(ActivityError(error_from_plain(out["error"]),
                                                        name=self.name))
        else:
            try:
                self._outcome = outcome.Value(self._wf.recorded_result(
                    self.seq, self.name, self.hint, out["ok"]))
            except NonDeterminismError as exc:  # (its annotation changed since)
                self._outcome = outcome.Error(exc)

    def _set(self, result: outcome.Outcome[Any]) -> None:
        self._outcome = result
        if self._event is not None:
            self._event.set()

    def __await__(self) -> Any:
        return self._result().__await__()

    async def _result(self) -> Any:
        wf = self._wf
        wf.check_caller(f"an await of activity {self.name!r}")  # (its outcome is wf's)
        if wf.cursor.replaying:
            wf.cancelled_at_await(self.seq)  # (raises where the first run met the cancel)
        if self._outcome is None:
            if _trio_fast.current_task() is wf.task and activity_owner() is None:
                await wf.await_started(self)
            else:  # another task of the workflow's code: it only waits (journals nothing)
                self._event = self._event or trio.Event()
                await self._event.wait()
        else:
            await trio.lowlevel.checkpoint()
        result = self._outcome
        if isinstance(result, outcome.Error):
            raise result.error  # an outcome unwraps once; a handle is awaited many times
        assert isinstance(result, outcome.Value)
        return result.value


class StartedActivities:
    """The activities one run of a workflow function started with ``workflow.start``.

    They run in a nursery of their own, which a task of the host opens at the run's
    first start (a nursery around every run costs about as much as a step, and most
    workflows start nothing). It is the nursery the run would have had:
    :meth:`close`, at the run's end, cancels what is still running and waits for it;
    an error escaping one of them (an activity's own failure is its handle's, this is
    anything else) stops the workflow's function, as a kill does, and :meth:`close`
    raises it: the workflow fails with it even when it escaped after the function had
    returned (while the activity's result was being recorded), when a kill would find
    nothing left to cancel.
    """

    __slots__ = ("_done", "_error", "_handing_over", "_nursery", "_pending", "_retrying",
                 "_stop", "_wf")

    def __init__(self, wf: Activities) -> None:
        self._wf = wf
        #: starts made before the nursery opened, each with the context it was made in
        self._pending: list[tuple[contextvars.Context, Any, tuple[Any, ...]]] = []
        self._nursery: trio.Nursery | None = None
        self._stop = trio.Event()
        self._done = trio.Event()
        #: what escaped one of them (raised again by close)
        self._error: BaseException | None = None
        #: the workflow moves to another node (a drain): what runs is not cancelled
        self._handing_over = False
        #: the scopes of their waits before a retry (see :meth:`wait_to_retry`)
        self._retrying: set[trio.CancelScope] = set()

    def start_soon(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` in the nursery (once it is open), in a copy of the caller's
        context variables as they are now (what ``start_soon`` of a nursery gives)."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)
        else:
            self._pending.append((contextvars.copy_context(), fn, args))

    async def run(self) -> None:
        """The task that holds the nursery open until :meth:`close`."""
        try:
            async with trio.open_nursery() as nursery:
                if not self._stop.is_set():  # (a run that ended at once starts nothing)
                    self._nursery = nursery
                    for context, fn, args in self._pending:
                        context.run(nursery.start_soon, fn, *args)  # (trio copies it)
                    self._pending.clear()
                    await self._stop.wait()
                if not self._handing_over:  # (handed over: they record their outcomes)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _, rest = group.split(trio.Cancelled)
            if rest is None or not isinstance(rest, Exception):
                raise
            error: BaseException = rest
            while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                error = error.exceptions[0]  # the error itself, not trio's group around it
            self._failed(error)
        except Exception as exc:  # the same, in a trio run without strict exception groups
            self._failed(exc)
        finally:
            self._nursery = None
            self._done.set()

    @property
    def running(self) -> bool:
        """True while one of them has not ended (it runs, waits to retry, or waits for the
        nursery to open): what a workflow parked in ``first`` on it waits for is under
        way (``garrison.testing`` takes such a workflow for one that can still move)."""
        return bool(self._pending) or (self._nursery is not None
                                       and bool(self._nursery.child_tasks))

    def _failed(self, error: BaseException) -> None:
        """``error`` escaped a started activity: the function stops (if it still runs)
        and :meth:`close` raises it."""
        self._error = error
        self._wf.stop_with(ErrorInfo.from_exception(error))

    def cancel(self) -> None:
        """Cancel what still runs (the node stops, or the workflow moves at once: its
        lease lapsed), a :meth:`hand_over` under way included."""
        self._stop.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def hand_over(self) -> None:
        """The workflow moves to another node (a drain): wait until what is under way has
        recorded its outcome, as an awaited activity does before its workflow moves. One
        that has not begun, or that waits to retry (its retry timer recorded), stops at
        once: the next node goes on with it. :meth:`cancel` ends the wait."""
        self._handing_over = True
        for scope in self._retrying:
            scope.cancel()
        self._stop.set()
        with trio.CancelScope(shield=True):
            await self._done.wait()

    async def wait_to_retry(self, sleep: Any, delay: float) -> None:
        """``await sleep(delay)``, one of them waiting to retry; a :meth:`hand_over`
        ends the wait."""
        if self._handing_over:
            return
        with trio.CancelScope() as scope:
            self._retrying.add(scope)
            try:
                await sleep(delay)
            finally:
                self._retrying.discard(scope)

    async def close(self) -> None:
        """Cancel what still runs and wait until it has stopped (even when the workflow
        itself is being cancelled: nothing it started outlives it); raises the error
        that escaped one of them, if one did."""
        self.cancel()
        with trio.CancelScope(shield=True):
            await self._done.wait()
        error, self._error = self._error, None
        if error is not None:
            raise error


class Activities(WorkflowCore):
    """The activity part of a workflow instance."""

    __slots__ = ()

    def step_outcome(self, name: str) -> Transaction | None:
        """The first half of a step of an ``@garrison.activity`` function, for its
        wrapper: when the outcome of the step before waits in this workflow's buffer
        with no commit in flight, and the step is live (a workflow of sequential steps,
        at every step but its first), take the step's seq and deliver what
        :meth:`activity` delivers before its commit, then hand the buffer over: the
        wrapper awaits its commit (:meth:`committing`; a failure goes to
        :meth:`commit_failed`) and calls :meth:`activity` with ``begun=`` the
        buffer. ``None``: nothing taken, the wrapper calls :meth:`activity` for the
        whole step.

        The wait for that commit is the wrapper's own: no coroutine of this class (and
        its frame of two dozen locals) lives through it. With a thousand workflows
        stepping at once, everything a waiting step holds outlives the young garbage
        collections into the middle ones, and is read from memory again when its batch
        wakes it, a thousand other steps later."""
        buf = self._buffer
        cursor = self.cursor
        if buf is None or self.flushing is not None or (
                cursor.seq <= cursor.last and cursor.replaying):  # (a replay: see there)
            return None
        # live: no entry; raises what is wrong, as there. It takes no buffer and starts
        # no flush: what it records (a cancel it raises, the state a replay set) goes
        # into ``buf``, as ``buffered()`` gives it
        self._take(_ACTIVITY, name)
        self._buffer = None  # (handed over before the cancel below: see activity)
        if self.cancel_at is not None:  # asked before this run: it came as the call ran
            # (it acts on the children; whatever it might buffer or flush is not
            # ``buf``'s, and ``activity`` commits it before the step, as always)
            self.cancel_first()
        return buf

    async def activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       retry: RetryPolicy | None = None, timeout: float | None = None,
                       name: str | None = None, begun: Transaction | None = None) -> Any:
        """Run ``fn`` as a journaled activity (see ``workflow.call``); ``begun``: an
        ``@garrison.activity`` wrapper took its seq and committed this buffer
        (:meth:`step_outcome`)."""
        if name is None or getattr(fn, "__garrison_activity__", None) is not None:
            # (an ``@garrison.activity`` function's wrapper passes its own function
            # with every option: nothing to look up at each of its steps)
            if isinstance(fn, str):
                fn = self._entry_function(fn, "workflow.call")
            fn, retry, timeout, name = _options(fn, retry, timeout, name, "workflow.call")
        entry = None if begun is not None else self._take(_ACTIVITY, name)
        try:
            hint, stored, is_async = _RETURN_HINTS[fn]
        except (KeyError, TypeError):  # (not kept yet; an unhashable callable: never)
            hint = return_hint(fn)
            stored, is_async = stored_as(hint), _is_async(fn)
            try:
                hash(fn)
            except TypeError:
                pass
            else:
                if len(_RETURN_HINTS) >= _HINTS_KEPT:
                    _RETURN_HINTS.clear()
                _RETURN_HINTS[fn] = (hint, stored, is_async)
        if entry is not None:
            await self._yield()
            out = entry.outcome
            if "error" in out:
                raise ActivityError(error_from_plain(out["error"]), name=name)
            return self.recorded_result(self.cursor.seq - 1, name, hint, out["ok"])
        seq = self.cursor.seq - 1
        if begun is not None:  # (step_outcome's: taken, and its commit awaited)
            if self.taken is not None:
                self._consumes_committed(begun)
            self.spare(begun)  # (the next step's outcome fills it again)
        elif self.cancel_at is not None:  # asked before this run: it came as the call ran
            self.cancel_first()
        buf = self._buffer
        if buf is not None and self.flushing is None:
            # the common case, the step before's outcome (or a recorded value the
            # activity may use): records_committed's body without its coroutines
            # (commit_checked's, inlined: see there)
            self._buffer = None
            try:
                await self._committing(buf)
            except Exception as exc:
                self._raise_store_failure(exc)
                raise
            if self.taken is not None:
                self._consumes_committed(buf)
            self.spare(buf)  # (the next step's outcome fills it again)
            del buf
        elif buf is not None or self.flushing is not None:  # records_pending
            await self.records_committed()
        scope = self.scope
        if scope is not None and scope.cancel_called:
            # stopped (a terminate, the node's close): its commits are shielded, so a
            # loop of activities that never await (a computation) met no checkpoint
            # where trio delivers it, and ran on for ever
            await trio.lowlevel.checkpoint()
        resumed = self.retrying(seq) if self.timers else None
        if (timeout is None and not self.host.activity_mocks and not _observe.active
                and resumed is None and is_async):
            # _run_activity's first attempt inline, the common case (it returns; nothing
            # to retry): no coroutine more at every step. A failed first attempt goes
            # on there, with its retry policy
            failed: BaseException | None = None
            token = runtime_var.set(ActivityRuntime(self))
            try:
                value = await fn(*args, **kwargs)
            except (trio.Cancelled, *_NOT_THE_ACTIVITY_S):
                failed = self._raised_by_code(sys.exception(), name)
                if failed is None:
                    raise
            except BaseException as exc:  # (asyncio's CancelledError too: a failed attempt)
                if _stopped(exc):
                    failed = self._raised_by_code(exc, name)
                    if failed is None:
                        raise
                else:
                    failed = exc  # (retried outside this handler: no implicit chain)
            finally:
                runtime_var.reset(token)
                del token  # (a Token less held while the step waits for its batch)
            if failed is None:
                try:
                    text, plain = activity_result_json(value, name, self.store.value_limit,
                                                       stored)
                    attempt, failure = 1, None
                except Exception as bad:  # no store can hold it: final (see _outcome)
                    attempt, text, plain, failure = 1, "", None, ErrorInfo.from_exception(bad)
            else:
                attempt, text, plain, failure = await self._run_activity(
                    fn, args, kwargs, retry, timeout, name, seq, failed=failed, call=True,
                    stored=stored)
        else:
            attempt, text, plain, failure = await self._run_activity(
                fn, args, kwargs, retry, timeout, name, seq, call=True, resumed=resumed,
                stored=stored)
        value = plain
        if failure is None and hint is not Any and not (type(plain) is hint and hint in PLAIN):
            # (structure's own test above)
            value, failure = _restored(plain, hint, name, self.host.activity_mocks)
        if failure is None and self.store_error is None and is_async:
            # The outcome rides with the workflow's next commit: the one before its next
            # effect (another activity, a call's request...), its wait, or its end; a
            # workflow of sequential steps writes one commit a step and its last step
            # with its end. Nothing leaves the workflow meanwhile, so a crash before
            # that commit runs the activity again, as one before a commit of its own
            # would. Code that awaits something else has it flushed by the host
            # (outcome_left). The next activity's commit is the step's scheduler pass.
            # (A workflow handed over meanwhile, a drain's WorkflowMoved in store_error,
            # records it now instead, in _activity_done: its next operation stops it. So
            # does a plain function's, run in a worker thread: its step costs a thread
            # switch anyway, and the host's flush timer armed while the next one works in
            # its thread moved a test's autojump clock on by PARKED_DELAY.)
            tx = self.buffered()
            self.record(tx, seq, _ACTIVITY, name, '{"ok":' + text + "}", attempt)
            if self.timers:
                self.drop_timer(tx, seq)  # (its retry timer, if it waited to retry)
            if not self.left_outcome:  # (named once until the host looks)
                self.left_outcome = True
                self.host.outcome_left(self)  # type: ignore[arg-type]  # (an instance's)
            return value
        # (committed on its own: the emptied buffer would wait unused through whatever
        # the workflow awaits next, a message for days, for every collection to walk)
        self._spare = None
        return await self._activity_done(seq, name, hint, attempt, text, plain, failure)

    def recorded_result(self, seq: int, name: str, hint: Any, plain: Any) -> Any:
        """The recorded result ``plain`` of activity ``name`` (at ``seq``) restored by
        its return annotation ``hint``. One the annotation no longer takes (the code
        changed since it was recorded) is a divergence: the workflow is blocked with its
        journal kept, rather than failed for good by a value it recorded itself, and a
        replay says it differs."""
        try:
            return structure(plain, hint, what=f"the result of activity {name!r}")
        except PayloadError as exc:
            raise self.cursor.diverge(
                seq, _ACTIVITY, name, f"activity {name!r} with a return annotation that "
                f"no longer takes its recorded result ({exc})",
                "The recorded result is restored by the activity's annotation before the "
                "code sees it, so workflow.version cannot branch there: make the "
                "annotation also take the recorded values. ") from None

    def _raised_by_code(self, exc: BaseException | None, name: str
                        ) -> BaseException | None:
        """``exc``, caught where cancellation and the engine's own exits pass through,
        as the failure of an attempt of activity ``name`` when its code raised it: a
        ``GeneratorExit`` (a generator's ``throw`` passed on), not the interpreter
        closing the workflow; a ``Cancelled`` no cancellation caused (see
        :func:`is_stray`), as a ``RuntimeError`` saying so. ``None``: it goes on up."""
        if isinstance(exc, GeneratorExit) and stepping(self.task):
            return exc
        if exc is not None and is_stray(exc):
            return RuntimeError(stray_message(f"activity {name!r}"))
        return None

    def _entry_function(self, entry_id: str, what: str) -> Any:
        """The function of the config entry ``entry_id`` (a ``function.py`` entry: any
        target may be an entry id), journaled under the function's own name; else a
        ``ValueError`` naming the id."""
        config = getattr(self.node, "config", None)
        entry = config.entries.get(entry_id) if config is not None else None
        if entry is not None and entry.kind != "function.py":
            raise ValueError(f"{what}({entry_id!r}): the entry is a {entry.kind}, not a "
                             "function.py entry (an activity is a function)")
        try:
            if entry is None and config is not None:  # (naming the function.py ids)
                raise config.no_entry(entry_id, ("function.py",))
            return self.node.resolve_target(entry_id)
        except (KeyError, ValueError) as exc:
            recorded = self.cursor.peek() if self.cursor.replaying else None
            if recorded is not None and recorded.kind == _ACTIVITY:
                # a replay without the config (garrison.testing.replay, the replay
                # command): the function the record names, as the first run resolved it
                try:
                    return import_target(recorded.name)
                except Exception:  # (not importable: the error below)
                    pass
            why = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise ValueError(f"{what}({entry_id!r}): {why}; an activity is a function, or "
                             "the entry id of a function.py entry of the node's config"
                             ) from None

    def start_activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       retry: RetryPolicy | None, timeout: float | None) -> ActivityHandle:
        """``workflow.start``: the seq is taken now; the activity runs in the background."""
        if isinstance(fn, str):
            fn = self._entry_function(fn, "workflow.start")
        fn, retry, timeout, name = _options(fn, retry, timeout, None, "workflow.start")
        entry = self._take(_ACTIVITY, name)
        handle = ActivityHandle(self, name, return_hint(fn), self.cursor.seq - 1)
        if self.unsized is None:  # (its outcome is left out of history_size)
            self.unsized = set()
        self.unsized.add(self.cursor.seq - 1)
        if entry is not None:
            handle._entry(entry.outcome)
            return handle
        seq = self.cursor.seq - 1
        if self._buffer is not None:
            self.flush_soon()  # committed before it runs (see records_committed)
        started = self.started
        if started is None:
            started = self.started = StartedActivities(self)
            self.host.start_soon(started.run)
        started.start_soon(self._background, handle, seq, fn, args, kwargs, retry, timeout,
                           self.retrying(seq) if self.timers else None)
        return handle

    async def await_started(self, handle: ActivityHandle) -> None:
        """The workflow function awaits ``handle`` (not finished): wait until it is, or
        until a cancel request, delivered here (see :class:`ActivityHandle`)."""
        if self._buffer is not None:  # (an outcome left by a step: durable first)
            await self.records_committed()
        while not handle.settled():
            if self.cancel_at is not None:
                self.cancel_first()  # (it runs on now: it ends after the cancel's time)
            if self.cancel_requested and not self.cancel_delivered:
                self._cancel_at_await(handle.seq)
            if self.store_error is not None:
                # handed over (a drain), or the store failed: the run stops here, as at
                # any wait (``end_started`` lets the activity record its outcome first,
                # when a drain handed it over)
                raise raised_again(self.store_error)
            # (not ``_wait``: nothing is committed or parked here, as before cancels
            # reached this await; ``wake`` comes with the activity's end, a cancel, or
            # a hand-over)
            ev = self._wake = trio.Event()
            try:
                await ev.wait()
            finally:
                if self._wake is ev:
                    self._wake = None

    async def end_started(self) -> None:
        """The run of the workflow function ended: what it started and did not await is
        cancelled (not recorded); returns once all of it has stopped (raises the error
        that escaped one of them, if one did: the run fails with it)."""
        started = self.started
        if started is not None:
            if self.handed_over:
                # handed over (a drain): what runs records its outcome first, not to run
                # again on the next node (``stop_started`` ends the wait); a write refused
                # as another node owns it is no hand-over: their records would be too
                await started.hand_over()
            self.started = None
            await started.close()

    def stop_started(self) -> None:
        """Cancel what the run started and still runs, now: the node stops, or the
        workflow moves at once (its lease lapsed: nothing more is recorded)."""
        if self.started is not None:
            self.started.cancel()

    async def _background(self, handle: ActivityHandle, seq: int, fn: Any,
                          args: tuple[Any, ...], kwargs: dict[str, Any],
                          retry: RetryPolicy | None, timeout: float | None,
                          resumed: tuple[int, float] | None) -> None:
        try:
            if self.flushing is not None or self.store_error is not None:
                await self.records_committed()
            if self.kill_reason is not None:
                # the workflow is being stopped (by a flush of its records failing with
                # an error of its own, say: its key is lost): what it started does not
                # begin
                return
            attempt, text, plain, failure = await self._run_activity(
                fn, args, kwargs, retry, timeout, handle.name, seq, resumed=resumed,
                stored=stored_as(handle.hint))
        except WorkflowMoved:
            # handed over before it began, or as it waited to retry (its retry timer
            # recorded): the next node runs it (a wait for it stops: ``await_started``)
            self.wake()
            return
        with trio.CancelScope(shield=True):
            try:
                handle._set(outcome.Value(await self._activity_done(
                    seq, handle.name, handle.hint, attempt, text, plain, failure, handle)))
            except ActivityError as exc:
                handle._set(outcome.Error(exc))
        self.wake()

    async def _attempt(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                       name: str = "", attempt: int = 0) -> Any:
        """One call of the activity function: awaited, or in a worker thread if plain
        (counted while it runs on a host that counts them). (Attempt ``attempt`` of
        ``name``: with observability on, inside its span.)"""
        if _observe.active and attempt:
            with _observe.activity_attempt(self, name, attempt):
                return await self._attempt(fn, args, kwargs, name)
        if _is_async(fn):
            return await fn(*args, **kwargs)
        call = functools.partial(fn, *args, **kwargs)
        # the thread holds its entry while it runs (it alone writes it: a thread that
        # never started holds none): a stop of the node, which abandons it, names it
        threads = self.host.in_threads
        key = object()
        held = (self.wid, name)

        def in_thread() -> Any:
            threads[key] = held
            try:
                return call()
            finally:
                del threads[key]

        in_flight = self.host.in_flight
        if in_flight is None:
            return await trio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
        in_flight.started()
        try:
            return await trio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
        finally:
            in_flight.ended()

    async def _run_activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                            retry: RetryPolicy | None, timeout: float | None, name: str,
                            seq: int, *, failed: BaseException | None = None,
                            call: bool = False, resumed: tuple[int, float] | None = None,
                            stored: Any = Any) -> tuple[int, str, Any, ErrorInfo | None]:
        """Attempts with the retry policy; ``(attempts, json, plain, final error)``.
        ``failed``: the first attempt ran already (in :meth:`activity`) and raised it.
        ``call``: the activity at ``seq`` is a call the workflow function awaits (not a
        started one): a cancel request stops its retries, journaled at ``seq`` and raised
        as ``WorkflowCancelled`` (an attempt under way is not interrupted: its result is
        recorded, or its failure ends the retries so). ``stored``: the hint its result
        is stored by (``stored_as`` of its return annotation).

        Before each retry a durable timer at ``seq`` (kind ``retry N NAME``: N attempts
        failed) holds the count and when the next attempt is due: a node that loads the
        workflow after a crash goes on from there (``resumed``: ``retrying``), so a crash
        neither resets ``max_attempts`` nor skips the backoff under way. The outcome's
        record drops it (``drop_timer``).

        A stand-in the host holds for ``name`` (``garrison.testing``'s ``mock_activity``)
        runs instead, once: its outcome is final."""
        mock = self.host.activity_mocks.get(name) if self.host.activity_mocks else None
        if mock is not None:
            fn, retry, timeout = mock, _ONCE, None
        policy = retry or DEFAULT_RETRY
        attempt = 0
        text = ""
        plain: Any = None
        failure: ErrorInfo | None = None
        # the activity runs as plain code: its runtime is an ActivityScope
        token = runtime_var.set(ActivityRuntime(self))
        try:
            if resumed is not None:  # attempts made before a crash; the next one's time
                attempt = resumed[0]
                if attempt >= policy.max_attempts:  # (its policy was lowered since)
                    return attempt, "", None, ErrorInfo.from_exception(RuntimeError(
                        f"activity {name!r} failed {attempt} attempt(s) before the workflow "
                        f"was loaded again, and its retry policy now allows "
                        f"{policy.max_attempts}"))
                await self._backoff(resumed[1] - self.host.clock.now(), seq, call,
                                    parks=True)
            while True:
                if mock is None and self.host.activity_mocks and attempt:
                    # (a test's mock set while the activity waited to retry: the next
                    # attempt is the mock's, and its outcome is final)
                    mock = self.host.activity_mocks.get(name)
                    if mock is not None:
                        fn, policy, timeout = mock, _ONCE, None
                attempt += 1
                exc: BaseException | None = failed
                failed = None
                try:
                    if exc is not None:
                        pass  # the attempt that ran in activity(): its error decides
                    elif timeout is None:
                        if _is_async(fn) and not _observe.active:  # _attempt's common case
                            value = await fn(*args, **kwargs)  # (without a coroutine more)
                        else:
                            value = await self._attempt(fn, args, kwargs, name, attempt)
                    else:
                        with trio.move_on_after(timeout) as cs:
                            value = await self._attempt(fn, args, kwargs, name, attempt)
                        if cs.cancelled_caught:
                            exc = TimeoutError(f"activity {name!r} attempt {attempt} took "
                                               f"longer than its timeout of {timeout:g}s")
                except (trio.Cancelled, *_NOT_THE_ACTIVITY_S):
                    exc = self._raised_by_code(sys.exception(), name)
                    if exc is None:
                        raise
                except BaseException as err:  # (asyncio's CancelledError too)
                    if _stopped(err):
                        exc = self._raised_by_code(err, name)
                        if exc is None:
                            raise
                    else:
                        exc = err
                if exc is None:
                    text, plain, failure = _outcome(value, name, self.store.value_limit,
                                                    stored)
                    break
                if ended_by_stop(self.node, exc):  # (its call to a service the stop
                    await trio.sleep_forever()      # ended: no outcome; it runs again)
                if attempt >= policy.max_attempts or not policy.retryable(exc):
                    failure = ErrorInfo.from_exception(exc)
                    break
                if call and self.cancel_requested and not self.cancel_delivered:
                    self._deliver_cancel(seq)
                log.info("activity %s of workflow %s failed (attempt %d of %d), retrying: %s",
                         name, self.wid, attempt, policy.max_attempts, exc,
                         extra={"workflow_id": self.wid, "pid": str(self.pid),
                                "activity": name, "attempt": attempt})
                delay = policy.delay(attempt)
                if mock is None:
                    deadline = recordable(self.host.clock.now() + delay)
                    kind = retry_kind(attempt, name)
                    await self._commit(Transaction().add_timer(self.wid, seq, deadline, kind))
                    self.add_timer(seq, deadline)
                    kinds = self.timer_kinds
                    if kinds is None:
                        kinds = self.timer_kinds = {}
                    kinds[seq] = kind
                await self._backoff(delay, seq, call, parks=mock is None)
        finally:
            runtime_var.reset(token)
        return attempt, text, plain, failure

    async def _backoff(self, delay: float, seq: int, call: bool, *, parks: bool) -> None:
        """Wait ``delay`` seconds before the next attempt of the activity at ``seq``; a
        call's wait ends at a cancel request, delivered at ``seq``. ``parks``: its retry
        timer is recorded, so an awaited call's workflow is ``sleeping`` meanwhile
        (only that timer wakes it; a drain moves it at once, as any sleeping one)."""
        if isinstance(self.store_error, WorkflowMoved):
            # handed over (a drain) as an attempt failed: the retry timer is recorded,
            # the next node makes the next attempt when it is due
            raise raised_again(self.store_error)
        if not call:
            if delay > 0:
                started = self.started
                if started is None:
                    await self.host.clock.sleep(delay)
                else:
                    await started.wait_to_retry(self.host.clock.sleep, delay)
                if isinstance(self.store_error, WorkflowMoved):  # (ended by the hand-over)
                    raise raised_again(self.store_error)
            return
        if self.cancel_requested and not self.cancel_delivered:  # (before the scope was)
            self._deliver_cancel(seq)
        if delay > 0:
            sleeping = WorkflowStatus.SLEEPING
            parks = parks and self.status is WorkflowStatus.RUNNING
            with trio.CancelScope() as self.backoff:  # (a cancel request ends it: ``wake``)
                if parks:
                    self.status = sleeping
                    self.host.parked(self)  # type: ignore[arg-type]  # (an instance's)
                try:
                    await self.host.clock.sleep(delay)
                except trio.Cancelled:
                    if parks and self.host.closing:  # parked as the node stops
                        self.host.parked_at_stop[self] = sleeping  # type: ignore[index]
                    raise
                finally:
                    self.backoff = None
                    if parks:
                        self.status = WorkflowStatus.RUNNING
            # it runs on (the backoff ended, or a cancel request ended it): ``running``
            # with its next commit; not when the node's stop or a hand-over cancelled
            # the wait (their Cancelled goes past this scope), where the store keeps
            # ``sleeping``, as for any sleeping workflow (``_wait``)
            if parks and self.stored_status is not WorkflowStatus.RUNNING:
                self.buffered().update_workflow(self.wid, status=WorkflowStatus.RUNNING)
                self.stored_status = WorkflowStatus.RUNNING
        if self.cancel_requested and not self.cancel_delivered:
            self._deliver_cancel(seq)

    def retrying(self, seq: int) -> tuple[int, float] | None:
        """The retries of the activity at ``seq`` under way when the workflow was loaded
        (its ``retry N NAME`` timer, checked against the activity by ``_take``):
        ``(N attempts made, when the next one is due)``."""
        deadline = self.timers.get(seq)
        kind = self.timer_kinds.get(seq) if self.timer_kinds else None
        retry = retry_timer(kind)
        if deadline is None or retry is None:
            return None
        return retry[0], deadline

    async def _activity_done(self, seq: int, name: str, hint: Any, attempt: int, text: str,
                             plain: Any, failure: ErrorInfo | None,
                             handle: ActivityHandle | None = None) -> Any:
        """Record the outcome of the activity at ``seq``: return its value or raise its
        ``ActivityError``. A started one's ``handle`` is dated by its record's time
        (``done_at``), not when its commit returns: ``first`` decides by that time, as
        after a restart, where only the record's time is known."""
        tx = Transaction()
        if self.timers:
            self.drop_timer(tx, seq)
        value = plain
        if failure is None:
            value, failure = _restored(plain, hint, name, self.host.activity_mocks)
        at = self.host.clock.now()
        if handle is not None:
            handle.done_at = timestamp(at).timestamp()  # (as the store's record reads)
        if failure is None:
            self.record(tx, seq, _ACTIVITY, name, '{"ok":' + text + "}", attempt, at)
            await self._commit(tx)
            await self._yield()  # a long run of quick steps still lets others run
            return value
        self.record(tx, seq, _ACTIVITY, name, _dumps({"error": error_to_plain(failure)}),
                     attempt, at)
        await self._commit(tx)
        raise ActivityError(failure, name=name)


#: exceptions through an activity that are not its failure: Ctrl-C, the interpreter
#: closing the coroutine, the engine's own way out (a replay's end)
_NOT_THE_ACTIVITY_S = (KeyboardInterrupt, GeneratorExit, EngineStop)


def _stopped(exc: BaseException) -> bool:
    """``exc`` (a group out of a nursery of the activity) holds a cancellation (the
    node stops: trio cancels the activity) or another exception that is not the
    activity's failure: it goes on, never recorded as the activity's outcome."""
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(
        lambda e: isinstance(e, (trio.Cancelled, *_NOT_THE_ACTIVITY_S))) is not None


def _restored(plain: Any, hint: Any, name: str, mocks: dict[str, Any] | None = None
              ) -> tuple[Any, ErrorInfo | None]:
    """The activity ``name``'s result ``plain`` restored by its return annotation
    ``hint``; or, for one the annotation does not accept (``"5"`` for ``-> int``), that
    ``PayloadError`` as its final failure, recorded before the workflow sees it: the
    workflow's ``except ActivityError`` (its compensation) handles it, and a replay
    meets the recorded failure, not the value again. ``mocks``: the host's activity
    mocks (a test's), one of which may have given the value."""
    try:
        return structure(plain, hint, what=f"the result of activity {name!r}"), None
    except Exception as exc:
        failure = ErrorInfo.from_exception(exc)
        if mocks and name in mocks:  # (the test's mock gave it, not the activity)
            said = (", which returns None without result=: give it result=, a value"
                    if plain is None else ": give it a value")
            failure = attrs.evolve(failure, message=f"{failure.message} (the value of its "
                                   f"mock, env.mock_activity{said} its return annotation "
                                   "takes)")
        return None, failure


def _outcome(value: Any, name: str, limit: int,
             stored: Any = Any) -> tuple[str, Any, ErrorInfo | None]:
    """The activity ``name`` returned ``value``: its JSON and plain form; or, for a value
    no store can hold (``PayloadError``; or one of more than ``limit`` bytes of JSON, more
    than this store holds), its final failure. Not a failed attempt: the activity ran,
    and running it again would repeat its effect for the same result."""
    try:
        text, plain = activity_result_json(value, name, limit, stored)
    except Exception as exc:
        return "", None, ErrorInfo.from_exception(exc)
    return text, plain, None
