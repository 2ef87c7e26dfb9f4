"""The durable workflow host: the same process API, journaled to a store.

Each workflow is a trio task running the workflow function with a
:class:`_Workflow` as its runtime. Every durable operation takes the next
sequence number from a :class:`~garrison.hosts._replay.Cursor`: a recorded
outcome is returned at once (replay); otherwise the operation runs and its
outcome is committed (with everything it implies: an inbox row of the receiver,
a consumed mark, a timer) before the workflow sees it. After a crash the
function re-runs from the top and catches up from the journal.

Writes (see :meth:`WorkflowHost.commit`): a workflow alone writes at once in the
trio thread (``store.write``, ~20 us with WAL and ``synchronous=NORMAL``); when other
tasks are runnable it joins a batch that a committer task writes as one
transaction after every runnable task had its turn (group commit: 100 concurrent
workflows share each transaction); with ``synchronous="full"`` a workflow alone writes
at once too, and under load the store's own group commit runs the fsync in a worker
thread. A workflow never sees an outcome before it
is committed, and buffered synchronous records (``now()``, ``set_state``, ...) are
committed with its next write or before it parks.

Guarantees: an activity runs at least once and its outcome is recorded exactly once
(a crash between its end and the commit re-runs it); a message to a workflow is
committed to its inbox before ``send`` returns, and a workflow's send is journaled in
the same transaction as the receiver's inbox row (with an id derived from the sender
and seq, so it can never be delivered twice). Closing a node journals nothing:
workflows resume on the next node that opens the store.
"""

from __future__ import annotations

import contextvars
import functools
import gc
import importlib
import inspect
import json
import logging
import threading
import time as _time
import typing
import uuid as _uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import outcome
import trio

from .._activity import DEFAULT_RETRY, RetryPolicy, activity_name
from .._errors import (
    ActivityError,
    NonDeterminismError,
    NoSuchWorkflow,
    ProcessError,
    WorkflowCancelled,
    WorkflowFailed,
)
from ..actors._mailbox import timeout_seconds
from ..actors._runtime import _current, set_runtime
from ..actors._values import ErrorInfo, Event, EventKind, Message, Pid
from ..persistence import RawJson, SQLiteStore, Transaction, WorkflowStatus, to_json
from ..persistence import structure as _structure
from ..persistence._sqlite import _Request
from ._process_host import _refs, noproc
from ._replay import (
    CANCEL,
    Cursor,
    Entry,
    error_from_plain,
    error_to_plain,
    event_from_plain,
    event_to_plain,
    message_from_plain,
    message_to_plain,
    timestamp,
)

if TYPE_CHECKING:
    from .._node import Node

log = logging.getLogger("garrison.workflow")

S = WorkflowStatus
_PLAIN = (str, int, float, bool, type(None))
_dumps = json.dumps
_loads = json.loads
#: a run whose journal passes this many records logs a warning (continue-as-new)
HISTORY_WARNING = 10_000
#: durable operations a workflow may do without yielding to the scheduler
_BUDGET = 64


# ====================================================================== helpers
#: set inside an activity's code: workflow operations are refused there
_IN_ACTIVITY: contextvars.ContextVar[bool] = contextvars.ContextVar("garrison_in_activity",
                                                                    default=False)


class ContinueAsNew(BaseException):
    """Raised by ``workflow.continue_as_new``: ends this run, starts a fresh one."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        super().__init__("continue_as_new")
        self.args_ = args


_RUN: Any
try:  # the run queue's length, without building a RunStatistics (hot path)
    from trio._core import _run as _trio_run

    _RUN = _trio_run.GLOBAL_RUN_CONTEXT
except (ImportError, AttributeError):  # pragma: no cover - another trio version
    _RUN = None


def _runnable() -> int:
    """How many tasks wait to run in the next scheduler pass."""
    if _RUN is not None:
        try:
            return len(_RUN.runner.runq)
        except AttributeError:  # pragma: no cover - another trio version
            pass
    return trio.lowlevel.current_statistics().tasks_runnable


#: the longest the collector stays paused while recovered workflows replay
_GC_PAUSE_MAX = 10.0


def _pause_gc() -> bool:
    """Pause the cyclic garbage collector for recovery; False if it was off already
    (the user's choice, or another host recovering: then nothing is touched)."""
    if not gc.isenabled():
        return False
    gc.disable()
    return True


def current_workflow() -> _Workflow | None:
    """The workflow runtime of the calling task, or ``None`` (also inside an activity)."""
    rt = _current.get(None)
    if type(rt) is _Workflow and not _IN_ACTIVITY.get():
        return rt
    return None


def require_workflow(what: str) -> _Workflow:
    """The calling workflow, or ``NotInProcess`` explaining ``what`` needs one."""
    from .._errors import NotInProcess

    rt = _current.get(None)
    if type(rt) is _Workflow:
        if _IN_ACTIVITY.get():
            raise NotInProcess(f"{what} cannot be used inside an activity (only in the "
                               "workflow function itself)")
        return rt
    raise NotInProcess(f"{what} must run inside a workflow (spawn the function with "
                       "node.start_workflow or process.spawn(..., host='workflows'))")


class WallClock:
    """Wall time read through the trio clock, anchored once.

    ``now() = wall_at_start + (trio.current_time() - trio_at_start)``, so a
    ``MockClock`` skips durable timers in tests exactly as it skips ``trio.sleep``.
    """

    def __init__(self) -> None:
        self.wall0 = _time.time()
        self.trio0 = trio.current_time()

    def now(self) -> float:
        """Unix seconds."""
        return self.wall0 + (trio.current_time() - self.trio0)

    def trio_deadline(self, wall_deadline: float) -> float:
        """The trio clock time at which wall time reaches ``wall_deadline``."""
        return self.trio0 + (wall_deadline - self.wall0)


_names: dict[Any, str] = {}


def target_name(fn: Any) -> str:
    """``module:qualname`` of a workflow function, or ``TypeError`` saying why it has none."""
    try:
        return _names[fn]
    except (KeyError, TypeError):
        pass
    name = _target_name(fn)
    try:
        if len(_names) < 4096:
            _names[fn] = name
    except TypeError:
        pass
    return name


def _target_name(fn: Any) -> str:
    inner = fn
    while isinstance(inner, functools.partial):
        raise TypeError(f"cannot run {fn!r} as a workflow: a functools.partial is not "
                        "importable by name after a restart; use a module-level async function")
    module = getattr(inner, "__module__", None)
    qualname = getattr(inner, "__qualname__", None)
    if not module or not qualname:
        raise TypeError(f"cannot run {fn!r} as a workflow: it must be a module-level async "
                        "function importable by its module:qualname (it is found again by that "
                        "name after a restart)")
    if "<lambda>" in qualname:
        raise TypeError(f"cannot run a lambda ({module}:{qualname}) as a workflow: it must be "
                        "importable by its module:qualname to be found again after a restart")
    if "<locals>" in qualname:
        raise TypeError(f"cannot run the closure {module}:{qualname} as a workflow: it must be "
                        "a module-level function, importable by its module:qualname to be found "
                        "again after a restart")
    if not inspect.iscoroutinefunction(inner):
        raise TypeError(f"cannot run {module}:{qualname} as a workflow: it must be an async "
                        "function (async def)")
    name = f"{module}:{qualname}"
    try:
        found = import_target(name)
    except Exception as exc:
        raise TypeError(f"cannot run {name} as a workflow: it is not importable by that name "
                        f"({type(exc).__name__}: {exc})") from None
    if found is not inner and getattr(found, "__wrapped__", None) is not inner:
        raise TypeError(f"cannot run {name} as a workflow: importing that name gives another "
                        "object, so it could not be found again after a restart")
    return name


def import_target(name: str) -> Any:
    """Import ``module:qualname``."""
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@functools.lru_cache(maxsize=1024)
def _hints(fn: Any) -> tuple[list[tuple[str, Any, Any]], Any]:
    """Positional parameter (name, hint, kind) list and the return hint of ``fn``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    out = [(p.name, hints.get(p.name, Any), p.kind) for p in params]
    return out, hints.get("return", Any)


def restore_args(fn: Any, plain_args: list[Any], what: str) -> list[Any]:
    """Restore typed arguments from ``fn``'s annotations (``*args: T`` types each extra)."""
    params, _ = _hints(fn)
    if all(h is Any for _, h, _k in params):
        return plain_args
    positional = [(hint, kind) for _n, hint, kind in params
                  if kind in (inspect.Parameter.POSITIONAL_ONLY,
                              inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              inspect.Parameter.VAR_POSITIONAL)]
    out = []
    for i, value in enumerate(plain_args):
        hint: Any = Any
        if i < len(positional):
            hint = positional[i][0]
        elif positional and positional[-1][1] is inspect.Parameter.VAR_POSITIONAL:
            hint = positional[-1][0]
        out.append(structure(value, hint, what=f"argument {i + 1} of {what}"))
    return out


def structure(value: Any, hint: Any, *, what: str) -> Any:
    """Restore a typed value from its JSON shape (``-> None`` and ``Any`` pass through)."""
    if hint is Any or hint is None or hint is type(None) or (
            type(value) is hint and hint in _PLAIN):
        return value
    return _structure(value, hint, what=what)


@functools.lru_cache(maxsize=1024)
def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)


def return_hint(fn: Any) -> Any:
    """The return annotation of ``fn`` (``Any`` if none)."""
    return _hints(fn)[1]


def _json_round_trip(value: Any, what: str) -> tuple[str, Any]:
    """``(json_text, plain)`` of ``value``: what a replay would see."""
    text = to_json(value, what=what)
    if type(value) in _PLAIN and type(value) is not float:
        return text, value
    return text, _loads(text)


class _Item:
    """An inbox row held in memory (pending)."""

    __slots__ = ("event", "id", "plain", "value")

    def __init__(self, row_id: int, event: bool, plain: dict[str, Any]) -> None:
        self.id = row_id
        self.event = event
        self.plain = plain
        self.value: Any = event_from_plain(plain) if event else message_from_plain(plain)


class _Cancelled(Exception):
    """Internal: a wait was interrupted by a cancel request."""


# ====================================================================== the inbox
class DurableInbox:
    """A workflow's inbox (general, one topic, or events): receives are journaled.

    Same interface as :class:`~garrison.Inbox`: ``await receive(timeout=None)``
    (``None`` on timeout; the timeout is a durable timer), ``try_receive()``,
    ``async for msg in inbox``.
    """

    __slots__ = ("_wf", "channel", "topic")

    def __init__(self, wf: _Workflow, channel: str, topic: str | None = None) -> None:
        self._wf = wf
        self.channel = channel
        self.topic = topic

    def __repr__(self) -> str:
        return f"<DurableInbox {self.channel} of {self._wf.pid}>"

    def __len__(self) -> int:
        return sum(1 for item in self._wf.pending if self._wf._matches(self, item))

    def receive(self, timeout: Any = None) -> PendingReceive:
        """The next item (journaled); ``await`` it. With ``timeout`` (a durable timer),
        ``None`` when it expires. Its place in the journal is taken here, so it can also
        be raced in ``workflow.first`` (without a timeout: race a ``workflow.timer``)::

            reply = process.inbox().receive()
            done = await workflow.first(reply, workflow.timer("1h"))
        """
        return self._wf._start_receive(self, timeout)

    def try_receive(self) -> Any:
        """The next item if one is waiting, else ``None``; journaled, never waits."""
        return self._wf._try_receive(self)

    def __aiter__(self) -> DurableInbox:
        return self

    async def __anext__(self) -> Any:
        return await self.receive()


# ====================================================================== awaitables
class PendingReceive:
    """A receive from a workflow's inbox (``inbox.receive()``): ``await`` it for the
    item, or race it in ``workflow.first``. ``done()`` says whether an item is there."""

    __slots__ = ("_wf", "box", "resolved", "seconds", "seq", "value")

    def __init__(self, wf: _Workflow, box: DurableInbox, seconds: float | None,
                 seq: int, resolved: bool, value: Any) -> None:
        self._wf = wf
        self.box = box
        self.seconds = seconds
        self.seq = seq
        self.resolved = resolved
        self.value = value

    def __repr__(self) -> str:
        return f"<receive from {self.box.channel} {'done' if self.done() else 'pending'}>"

    def done(self) -> bool:
        """True once recorded, or while a matching item waits in the inbox."""
        return self.resolved or self._wf._find(self.box) is not None

    def __await__(self) -> Any:
        return self._wf._await_receive(self).__await__()


class ActivityHandle:
    """An activity started with ``workflow.start``: ``await`` it for its result
    (or its ``ActivityError``); ``done()`` says whether it has finished."""

    __slots__ = ("_event", "_outcome", "_wf", "hint", "name")

    def __init__(self, wf: _Workflow, name: str, hint: Any) -> None:
        self._wf = wf
        self.name = name
        self.hint = hint
        self._outcome: outcome.Outcome[Any] | None = None
        self._event: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<activity {self.name} {'done' if self.done() else 'running'}>"

    def done(self) -> bool:
        """True once its outcome is recorded."""
        return self._outcome is not None

    def _entry(self, out: dict[str, Any]) -> None:
        if "error" in out:
            self._outcome = outcome.Error(ActivityError(error_from_plain(out["error"]),
                                                        name=self.name))
        else:
            self._outcome = outcome.Value(structure(out["ok"], self.hint,
                                                    what=f"the result of activity {self.name!r}"))

    def _set(self, result: outcome.Outcome[Any]) -> None:
        self._outcome = result
        if self._event is not None:
            self._event.set()

    def __await__(self) -> Any:
        return self._result().__await__()

    async def _result(self) -> Any:
        if self._outcome is None:
            self._event = self._event or trio.Event()
            await self._event.wait()
        else:
            await trio.lowlevel.checkpoint()
        assert self._outcome is not None
        return self._outcome.unwrap()


class DurablePromise:
    """A durable promise of a workflow: ``await p`` returns the value it is resolved with
    from outside (``handle.promise(name).resolve(v)``) or raises ``PromiseRejected``."""

    __slots__ = ("_wf", "name")

    def __init__(self, wf: _Workflow, name: str) -> None:
        self._wf = wf
        self.name = name

    def __repr__(self) -> str:
        return f"<promise {self.name!r} {'done' if self.done() else 'pending'}>"

    def done(self) -> bool:
        """True once resolved or rejected."""
        return self.name in self._wf.promises

    def __await__(self) -> Any:
        return self._wf.await_promise(self.name).__await__()


class DurableTimer:
    """A durable timer (``workflow.timer``): ``await`` it, or race it with ``first``."""

    __slots__ = ("_wf", "deadline")

    def __init__(self, wf: _Workflow, deadline: float) -> None:
        self._wf = wf
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"<timer at {timestamp(self.deadline).isoformat()}>"

    def done(self) -> bool:
        """True once the deadline has passed."""
        return self._wf.host.clock.now() >= self.deadline

    def __await__(self) -> Any:
        return self._wf.await_timer(self).__await__()


# ====================================================================== the workflow
class _Workflow:
    """One workflow instance: its journal cursor, durable inbox and runtime."""

    def __init__(self, host: WorkflowHost, wid: str, name: str, input_plain: list[Any], *,
                 run_id: str, attempt: int, parent: Pid | None, created: float,
                 journal: list[Entry], pending: list[_Item], timers: dict[int, float],
                 cancel_requested: bool, watchers: list[Pid], state: dict[str, Any]) -> None:
        self.host = host
        self.node = host.node
        self.store = host.store
        self.wid = wid
        self.pid = Pid(host.name, wid)
        self.name = name
        self.input_plain = input_plain
        self.run_id = run_id
        self.attempt = attempt
        self.parent = parent
        self.created = created
        self.cursor = Cursor(wid, journal)
        self.pending = pending
        self.timers = timers
        self.cancel_requested = cancel_requested
        self.cancel_delivered = False
        self.durable_watchers = watchers  # workflow pids that get my EXIT durably
        self.watchers: set[Pid] = set()  # process pids that get my EXIT in memory
        self.links: set[Pid] = set()
        self.monitoring: set[Pid] = set()
        self.trap_links = False
        self.state = state
        self.status: WorkflowStatus = S.RUNNING
        self.tasks: trio.Nursery | None = None  # started activities run here
        self.promises: dict[str, tuple[str, Any]] = {}  # completed: name -> (status, value)
        self.topics: set[str] = set()
        self._inboxes: dict[str, DurableInbox] = {}
        self._wake: trio.Event | None = None
        self._buffer: Transaction | None = None
        self._budget = 0
        self.done = trio.Event()
        self.exited = trio.Event()
        self.result_json: str | None = None
        self.error: ErrorInfo | None = None
        self.kill_reason: ErrorInfo | None = None
        self.scope: trio.CancelScope | None = None
        self._calls: dict[int, trio.lowlevel.Task | None] = {}
        self._callers: dict[int, Any] = {}
        #: characters of journal JSON recorded live in this run (see history_size)
        self.history_bytes = 0
        self._journal_sizes: dict[int, int] | None = None
        self.fn: Any = None
        #: recovered from a journal: check watched processes once replay has caught up
        self.check_lost = bool(journal)

    def __repr__(self) -> str:
        return f"<workflow {self.wid} {self.name} {self.status}>"

    # ------------------------------------------------------------ write path
    def _buffered(self) -> Transaction:
        """The transaction of this workflow's synchronous records, flushed at its next
        commit (and at its end): nothing is visible outside before it commits."""
        if self._buffer is None:
            self._buffer = Transaction()
        return self._buffer

    async def _commit(self, tx: Transaction) -> list[Any]:
        buf = self._buffer
        if buf is not None:
            self._buffer = None
            n = len(buf)
            buf.extend(tx)
            results = await self.host.commit(buf)
            return results[n:]
        return await self.host.commit(tx)

    def _record(self, tx: Transaction, seq: int, kind: str, name: str, outcome_json: str,
                attempts: int = 1) -> None:
        tx.append_journal(self.wid, seq, kind, name, RawJson(outcome_json), attempts=attempts,
                          time=self.host.clock.now())
        self.history_bytes += len(outcome_json)
        if seq == HISTORY_WARNING + 1:
            log.warning("workflow %r (%s) has passed %d journal records: replay after a "
                        "restart gets slower as it grows; consider workflow.continue_as_new() "
                        "to start a fresh run", self.wid, self.name, HISTORY_WARNING)

    def history_size(self) -> int:
        """Characters of journal JSON so far: the replayed records (as stored) and the
        live ones; the same at the same point of a replay."""
        size = self.history_bytes
        entries = self.cursor.entries
        if entries:
            if self._journal_sizes is None:
                rows = self.store._query("SELECT seq, length(outcome) FROM journal "
                                         "WHERE workflow_id = ?", (self.wid,))
                self._journal_sizes = {int(seq): int(n) for seq, n in rows}
            seq = self.cursor.seq
            size += sum(n for s, n in self._journal_sizes.items()
                        if 0 < s < seq and s in entries)
        return size

    # ------------------------------------------------------------ cancellation / checks
    def _op(self, what: str) -> None:
        if _IN_ACTIVITY.get():
            from .._errors import NotInProcess

            raise NotInProcess(f"{what} cannot be used inside an activity of workflow "
                               f"{self.wid!r}: activities are plain code")
        self.cursor.check()

    def _take(self, kind: str, name: str) -> Entry | None:
        """Take the next seq: the recorded entry, or ``None`` (live). Delivers a pending
        cancel request (journaled at this seq) as ``WorkflowCancelled``."""
        self._op(kind)
        entry = self.cursor.take(kind, name)
        if entry is not None:
            if entry.kind == CANCEL:
                self.cancel_delivered = True
                raise self._cancelled_error()
            return entry
        if self.check_lost:
            self._deliver_lost()
        if self.cancel_requested and not self.cancel_delivered:
            self._deliver_cancel(self.cursor.seq - 1)
        return None

    def _deliver_lost(self) -> None:
        """After a recovery, at the first live operation: the processes (of in-memory
        hosts) this workflow monitored or linked (trapping) before the crash are gone;
        each yields a durable ``EXIT`` (or ``LINK_DOWN``) with reason ``noproc``, unless
        its real one was delivered before the crash (same inbox message id)."""
        self.check_lost = False
        hosts = self.node.hosts
        lost: list[tuple[EventKind, Pid]] = []
        for kind, pids in ((EventKind.EXIT, self.monitoring),
                           (EventKind.LINK_DOWN, self.links if self.trap_links else ())):
            for pid in sorted(pids):
                h = hosts.get(pid.host)
                if h is None or (not h.durable and not h.is_alive(pid)):
                    lost.append((kind, pid))
        for kind, pid in lost:
            if kind is EventKind.LINK_DOWN:
                self.links.discard(pid)
            self.host.deliver_event(self.pid, Event(kind, pid, None, noproc(pid)))

    def _deliver_cancel(self, seq: int) -> None:
        self.cancel_delivered = True
        tx = self._buffered()
        self._record(tx, seq, CANCEL, "", "null")
        if seq in self.timers:
            tx.remove_timer(self.wid, seq)
            del self.timers[seq]
        raise self._cancelled_error()

    def _cancelled_error(self) -> WorkflowCancelled:
        return WorkflowCancelled(f"workflow {self.wid!r} was cancelled")

    async def _yield(self) -> None:
        self._budget += 1
        if self._budget >= _BUDGET:
            self._budget = 0
            await trio.lowlevel.checkpoint()

    def _notify(self) -> None:
        ev = self._wake
        if ev is not None:
            self._wake = None
            ev.set()

    async def _wait(self, trio_deadline: float | None, status: WorkflowStatus) -> None:
        """Park until notified (or the deadline); raises ``_Cancelled`` on a cancel request.

        Buffered synchronous records (state, search attributes, ``now()``...) are
        committed first, so they are visible from outside while the workflow waits.
        The wake-up event exists before that commit: a message, promise or event that
        arrives while it is written wakes the workflow at once (not lost)."""
        ev = self._wake = trio.Event()
        if self._buffer is not None:
            await self._commit(Transaction())
        if self.cancel_requested and not self.cancel_delivered:
            if self._wake is ev:
                self._wake = None
            raise _Cancelled
        self.status = status
        self.host.busy -= 1
        try:
            if trio_deadline is None:
                await ev.wait()
            else:
                with trio.move_on_at(trio_deadline):
                    await ev.wait()
        finally:
            self.host.busy += 1
            self.status = S.RUNNING
            if self._wake is ev:
                self._wake = None
        if self.cancel_requested and not self.cancel_delivered:
            raise _Cancelled

    # ------------------------------------------------------------ lifecycle
    async def main(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.host.busy += 1
        try:
            await self._main(task_status)
        finally:
            self.host.busy -= 1
            self.exited.set()

    async def _main(self, task_status: trio.TaskStatus[None]) -> None:
        set_runtime(typing.cast(Any, self))
        host = self.host
        value: Any = None
        final: WorkflowStatus | None = None
        error: ErrorInfo | None = None
        with trio.CancelScope() as scope:
            self.scope = scope
            task_status.started()
            if self.kill_reason is not None or host._closing:  # started as the node closes
                scope.cancel()
            try:
                fn = self.fn
                if fn is None:
                    try:
                        fn = self.fn = import_target(self.name)
                    except Exception as exc:  # the code is gone: keep it for code that has it
                        raise self.cursor.diverge(
                            0, "workflow", self.name,
                            f"no such function ({type(exc).__name__}: {exc})") from exc
                while True:
                    args = restore_args(fn, self.input_plain, f"workflow {self.name}")
                    try:
                        value = await self._run_function(fn, args)
                        break
                    except ContinueAsNew as again:
                        await self._continue_as_new(again.args_)
                self.cursor.finished()
                final = S.COMPLETED
            except NonDeterminismError as exc:
                error, final = ErrorInfo.from_exception(exc), S.BLOCKED
            except WorkflowCancelled as exc:
                final = S.CANCELLED if self.cancel_delivered else S.FAILED
                error = ErrorInfo.from_exception(exc)
            except trio.Cancelled:
                raise
            except Exception as exc:
                error, final = ErrorInfo.from_exception(exc), S.FAILED
            except BaseExceptionGroup as group:
                _, rest = group.split(trio.Cancelled)
                if rest is None or not isinstance(rest, Exception):
                    raise
                error, final = ErrorInfo.from_exception(rest), S.FAILED
        if final is None:
            if self.kill_reason is None:
                return  # the node is closing: nothing is journaled, the workflow resumes later
            final, error = S.FAILED, self.kill_reason
        if self.cursor.error is not None:
            final, error = S.BLOCKED, ErrorInfo.from_exception(self.cursor.error)
        elif final is S.COMPLETED and self.cancel_delivered:
            final = S.CANCELLED
            error = ErrorInfo.from_exception(self._cancelled_error())
        with trio.CancelScope(shield=True):
            try:
                await host.finish(self, final, value, error)
            except Exception as exc:  # the store failed (disk full, closed): keep the node
                log.error("workflow %s ended (%s) but its end could not be recorded: %s; "
                          "it resumes from its journal on the next node", self.wid, final, exc)
                self.status = S.BLOCKED
                self.error = ErrorInfo.from_exception(exc)
                self.cursor.error = self.cursor.error or NonDeterminismError(
                    f"workflow {self.wid!r} ended but its end could not be recorded: {exc}",
                    workflow_id=self.wid)
                self.done.set()

    async def _run_function(self, fn: Any, args: list[Any]) -> Any:
        """Run the workflow function with a nursery for ``workflow.start``-ed activities;
        its exception comes out unwrapped (not in an exception group)."""
        failure: BaseException | None = None
        value: Any = None
        async with trio.open_nursery() as tasks:
            self.tasks = tasks
            try:
                value = await fn(*args)
            except BaseException as exc:
                failure = exc
            tasks.cancel_scope.cancel()  # activities nobody awaited: not recorded
        self.tasks = None
        if failure is not None:
            raise failure
        return value

    async def _continue_as_new(self, args: tuple[Any, ...]) -> None:
        """End this run: a fresh journal, the new arguments, a new run id."""
        text = to_json(list(args), what=f"the arguments of workflow {self.name}")
        run_id = _uuid.uuid4().hex
        tx = self._take_buffer()
        now = self.host.clock.now()
        tx.reset_run(self.wid, RawJson(text), run_id=run_id, time=now)
        # seq 0 of the new run: the state it starts with (what get_state replays from)
        tx.append_journal(self.wid, 0, CONTINUED, "", RawJson(_dumps({"state": self.state})),
                          time=now)
        await self.host.commit(tx)
        self.input_plain = _loads(text)
        self.run_id = run_id
        self.cursor = Cursor(self.wid, [])
        self._journal_sizes = None
        self.timers.clear()
        self.history_bytes = 0
        self.created = self.host.clock.now()

    # ------------------------------------------------------------ delivery (host side)
    def deliver(self, msg: Message) -> None:
        """Commit ``msg`` to the durable inbox now (synchronously): how a process's
        ``process.call`` reaches a workflow."""
        text = to_json(msg.payload, what=f"the payload of message {msg.topic!r} to "
                                         f"workflow {self.wid!r}")
        tx = Transaction().deliver(self.wid, msg.topic, RawJson(text), msg_id=msg.id,
                                   sender=msg.sender, call_ref=msg.call_ref)
        row_id = self.store.write(tx)[0]
        if row_id is not None:
            self.push(_Item(row_id, False, message_to_plain(
                Message(msg.topic, _loads(text), msg.sender, msg.id, msg.call_ref))))

    def push(self, item: _Item) -> None:
        self.pending.append(item)
        self._notify()

    def _matches(self, box: DurableInbox, item: _Item) -> bool:
        if box.channel == "events":
            return item.event
        if item.event:
            return False
        topic = item.value.topic
        if box.topic is not None:
            return bool(topic == box.topic)
        return topic not in self.topics

    def _find(self, box: DurableInbox) -> _Item | None:
        for item in self.pending:
            if self._matches(box, item):
                return item
        return None

    # ------------------------------------------------------------ receive
    def _receive_outcome(self, item: _Item) -> str:
        key = "event" if item.event else "message"
        return _dumps({"inbox": item.id, key: item.plain}, separators=(",", ":"))

    @staticmethod
    def _replayed_item(entry: Entry) -> Any:
        out = entry.outcome or {}
        if "message" in out:
            return message_from_plain(out["message"])
        if "event" in out:
            return event_from_plain(out["event"])
        return None

    def _forget(self, row_id: int) -> None:
        for i, item in enumerate(self.pending):
            if item.id == row_id:
                del self.pending[i]
                return

    def _start_receive(self, box: DurableInbox, timeout: Any) -> PendingReceive:
        """``inbox.receive()``: the seq is taken where the receive is created."""
        seconds = None if timeout is None else timeout_seconds(timeout)
        entry = self._take("receive", box.channel)
        if entry is not None:
            out = entry.outcome or {}
            if "inbox" in out:
                self._forget(out["inbox"])
            return PendingReceive(self, box, seconds, entry.seq, True,
                                  self._replayed_item(entry))
        return PendingReceive(self, box, seconds, self.cursor.seq - 1, False, None)

    def _claim(self, r: PendingReceive, tx: Transaction) -> None:
        """Take the waiting item for ``r`` (``r.done()`` was true): recorded in ``tx``."""
        item = self._find(r.box)
        assert item is not None
        self.pending.remove(item)
        self._record(tx, r.seq, "receive", r.box.channel, self._receive_outcome(item))
        tx.consume(self.wid, item.id, r.seq)
        r.resolved, r.value = True, item.value

    async def _await_receive(self, r: PendingReceive) -> Any:
        if r.resolved:
            await self._yield()
            return r.value
        box, seconds, seq = r.box, r.seconds, r.seq
        deadline = self.timers.get(seq)
        try:
            while True:
                item = self._find(box)
                if item is not None:
                    self.pending.remove(item)
                    tx = Transaction()
                    self._record(tx, seq, "receive", box.channel, self._receive_outcome(item))
                    tx.consume(self.wid, item.id, seq)
                    if deadline is not None:
                        tx.remove_timer(self.wid, seq)
                        self.timers.pop(seq, None)
                    await self._commit(tx)
                    await self._yield()
                    r.resolved, r.value = True, item.value
                    return item.value
                if seconds is not None and deadline is None:
                    deadline = self.host.clock.now() + seconds
                    self.timers[seq] = deadline
                    await self._commit(Transaction().add_timer(self.wid, seq, deadline))
                if deadline is not None and self.host.clock.now() >= deadline:
                    tx = Transaction()
                    self._record(tx, seq, "receive", box.channel, '{"timeout":true}')
                    tx.remove_timer(self.wid, seq)
                    self.timers.pop(seq, None)
                    await self._commit(tx)
                    r.resolved = True
                    return None
                await self._wait(None if deadline is None else
                                 self.host.clock.trio_deadline(deadline),
                                 S.WAITING)
        except _Cancelled:
            self._deliver_cancel(seq)
            raise AssertionError("unreachable") from None

    def _try_receive(self, box: DurableInbox) -> Any:
        entry = self._take("receive", box.channel)
        if entry is not None:
            out = entry.outcome or {}
            if "inbox" in out:
                self._forget(out["inbox"])
            return self._replayed_item(entry)
        seq = self.cursor.seq - 1
        tx = self._buffered()
        item = self._find(box)
        if item is None:
            self._record(tx, seq, "receive", box.channel, '{"empty":true}')
            return None
        self.pending.remove(item)
        self._record(tx, seq, "receive", box.channel, self._receive_outcome(item))
        tx.consume(self.wid, item.id, seq)
        return item.value

    # ------------------------------------------------------------ sleep
    async def sleep_until_wall(self, deadline: float | None, seconds: float | None) -> None:
        """Durable sleep to a wall-clock ``deadline`` (or ``seconds`` from the first run)."""
        entry = self._take("sleep", "")
        if entry is not None:
            await self._yield()
            return
        seq = self.cursor.seq - 1
        recorded = self.timers.get(seq)
        if recorded is None:
            recorded = deadline if deadline is not None else (
                self.host.clock.now() + (seconds or 0.0))
            self.timers[seq] = recorded
            await self._commit(Transaction().add_timer(self.wid, seq, recorded))
        try:
            while self.host.clock.now() < recorded:
                await self._wait(self.host.clock.trio_deadline(recorded), S.SLEEPING)
        except _Cancelled:
            self._deliver_cancel(seq)
        tx = Transaction()
        self._record(tx, seq, "sleep", "", _dumps({"deadline": recorded}))
        tx.remove_timer(self.wid, seq)
        self.timers.pop(seq, None)
        await self._commit(tx)

    # ------------------------------------------------------------ recorded values
    def recorded_value(self, kind: str, name: str, make: Callable[[], Any]) -> Any:
        """A synchronous recorded value (``now``, ``uuid4``, ``random``, ``version``)."""
        entry = self._take(kind, name)
        if entry is not None:
            return entry.outcome
        value = make()
        self._record(self._buffered(), self.cursor.seq - 1, kind, name, _dumps(value))
        return value

    def version(self, change_id: str, min_version: int, max_version: int) -> int:
        self._op("workflow.version()")
        entry = self.cursor.peek()
        if entry is not None and entry.kind != CANCEL and not (
                entry.kind == "version" and entry.name == change_id):
            # a run recorded before this version() call existed: the oldest behaviour
            return min_version
        got = self.recorded_value("version", change_id, lambda: max_version)
        if not isinstance(got, int) or not min_version <= got <= max_version:
            raise self.cursor.diverge(
                self.cursor.seq - 1, "version", f"{change_id}={got}",
                f"version {change_id!r} supporting only {min_version}..{max_version}")
        return got

    # ------------------------------------------------------------ activities
    async def activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       retry: RetryPolicy | None = None, timeout: float | None = None,
                       name: str | None = None) -> Any:
        """Run ``fn`` as a journaled activity (see ``workflow.call``)."""
        opts = getattr(fn, "__garrison_activity__", None)
        if opts is not None:
            fn = getattr(fn, "__wrapped__", fn)
            retry = retry or opts.retry
            timeout = timeout if timeout is not None else opts.timeout
            name = name or opts.name
        name = name or activity_name(fn)
        entry = self._take("activity", name)
        hint = return_hint(fn)
        if entry is not None:
            await self._yield()
            out = entry.outcome
            if "error" in out:
                raise ActivityError(error_from_plain(out["error"]), name=name)
            return structure(out["ok"], hint, what=f"the result of activity {name!r}")
        seq = self.cursor.seq - 1
        attempt, text, plain, failure = await self._run_activity(fn, args, kwargs, retry,
                                                                 timeout, name)
        return await self._activity_done(seq, name, hint, attempt, text, plain, failure)

    async def _run_activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                            retry: RetryPolicy | None, timeout: float | None, name: str
                            ) -> tuple[int, str, Any, ErrorInfo | None]:
        """Attempts with the retry policy; ``(attempts, json, plain, final error)``."""
        policy = retry or DEFAULT_RETRY
        attempt = 0
        text = ""
        plain: Any = None
        failure: ErrorInfo | None = None
        is_async = _is_async(fn)
        token = _IN_ACTIVITY.set(True)
        try:
            while True:
                attempt += 1
                exc: BaseException | None = None
                try:
                    timed_out = False
                    if timeout is None:
                        if is_async:
                            value = await fn(*args, **kwargs)
                        else:
                            value = await trio.to_thread.run_sync(
                                functools.partial(fn, *args, **kwargs), abandon_on_cancel=True)
                    else:
                        with trio.move_on_after(timeout) as cs:
                            if is_async:
                                value = await fn(*args, **kwargs)
                            else:
                                value = await trio.to_thread.run_sync(
                                    functools.partial(fn, *args, **kwargs),
                                    abandon_on_cancel=True)
                        timed_out = cs.cancelled_caught
                    if timed_out:
                        exc = TimeoutError(f"activity {name!r} attempt {attempt} took longer "
                                           f"than its timeout of {timeout:g}s")
                    else:
                        text, plain = _json_round_trip(
                            value, f"the result of activity {name!r}")
                        break
                except trio.Cancelled:
                    raise
                except Exception as err:
                    exc = err
                assert exc is not None
                if attempt >= policy.max_attempts or not policy.retryable(exc):
                    failure = ErrorInfo.from_exception(exc)
                    break
                log.info("activity %s of workflow %s failed (attempt %d of %d), retrying: %s",
                         name, self.wid, attempt, policy.max_attempts, exc)
                await trio.sleep(policy.delay(attempt))
        finally:
            _IN_ACTIVITY.reset(token)
        return attempt, text, plain, failure

    async def _activity_done(self, seq: int, name: str, hint: Any, attempt: int, text: str,
                             plain: Any, failure: ErrorInfo | None) -> Any:
        tx = Transaction()
        if failure is None:
            self._record(tx, seq, "activity", name, '{"ok":' + text + "}", attempt)
            await self._commit(tx)
            await self._yield()  # a long run of quick steps still lets others run
            return structure(plain, hint, what=f"the result of activity {name!r}")
        self._record(tx, seq, "activity", name,
                     _dumps({"error": error_to_plain(failure)}), attempt)
        await self._commit(tx)
        raise ActivityError(failure, name=name)

    # ------------------------------------------------------------ concurrent awaitables
    def start_activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       retry: RetryPolicy | None, timeout: float | None) -> ActivityHandle:
        """``workflow.start``: the seq is taken now; the activity runs in the background."""
        opts = getattr(fn, "__garrison_activity__", None)
        name = None
        if opts is not None:
            fn = getattr(fn, "__wrapped__", fn)
            retry = retry or opts.retry
            timeout = timeout if timeout is not None else opts.timeout
            name = opts.name
        name = name or activity_name(fn)
        entry = self._take("activity", name)
        handle = ActivityHandle(self, name, return_hint(fn))
        if entry is not None:
            handle._entry(entry.outcome)
            return handle
        seq = self.cursor.seq - 1
        if self.tasks is None:  # pragma: no cover - always set while the function runs
            raise RuntimeError("workflow.start() outside the workflow function")
        self.tasks.start_soon(self._background, handle, seq, fn, args, kwargs, retry, timeout)
        return handle

    async def _background(self, handle: ActivityHandle, seq: int, fn: Any,
                          args: tuple[Any, ...], kwargs: dict[str, Any],
                          retry: RetryPolicy | None, timeout: float | None) -> None:
        attempt, text, plain, failure = await self._run_activity(fn, args, kwargs, retry,
                                                                 timeout, handle.name)
        with trio.CancelScope(shield=True):
            try:
                handle._set(outcome.Value(await self._activity_done(
                    seq, handle.name, handle.hint, attempt, text, plain, failure)))
            except ActivityError as exc:
                handle._set(outcome.Error(exc))
        self._notify()

    def promise(self, name: str) -> DurablePromise:
        """``workflow.promise``: declared (and journaled) where it is created."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a promise name must be a non-empty string, got {name!r}")
        if self._take("promise", name) is None:
            tx = self._buffered()
            self._record(tx, self.cursor.seq - 1, "promise", name, "null")
            tx.create_promise(self.wid, name)
        return DurablePromise(self, name)

    async def await_promise(self, name: str) -> Any:
        entry = self._take("await_promise", name)
        if entry is None:
            seq = self.cursor.seq - 1
            try:
                while name not in self.promises:
                    await self._wait(None, S.WAITING)
            except _Cancelled:
                self._deliver_cancel(seq)
            status, value = self.promises[name]
            out = {"value": value} if status == "resolved" else {"rejected": value}
            tx = Transaction()
            self._record(tx, seq, "await_promise", name, _dumps(out))
            await self._commit(tx)
        else:
            await self._yield()
            out = entry.outcome
        if "rejected" in out:
            from .._errors import PromiseRejected

            raise PromiseRejected(f"promise {name!r} of workflow {self.wid!r} was rejected: "
                                  f"{out['rejected']}")
        return out["value"]

    def timer(self, seconds: float) -> DurableTimer:
        """``workflow.timer``: the deadline is journaled where the timer is created."""
        entry = self._take("timer", "")
        if entry is not None:
            deadline = float(entry.outcome["deadline"])
        else:
            deadline = self.host.clock.now() + seconds
            self._record(self._buffered(), self.cursor.seq - 1, "timer", "",
                         _dumps({"deadline": deadline}))
        return DurableTimer(self, deadline)

    async def await_timer(self, timer: DurableTimer) -> None:
        entry = self._take("await_timer", "")
        if entry is not None:
            await self._yield()
            return
        seq = self.cursor.seq - 1
        try:
            while not timer.done():
                await self._wait(self.host.clock.trio_deadline(timer.deadline), S.SLEEPING)
        except _Cancelled:
            self._deliver_cancel(seq)
        tx = Transaction()
        self._record(tx, seq, "await_timer", "", "null")
        await self._commit(tx)

    async def first(self, awaitables: tuple[Any, ...]) -> Any:
        for a in awaitables:
            if not isinstance(a, ActivityHandle | DurablePromise | DurableTimer
                              | PendingReceive):
                raise TypeError(f"workflow.first() takes promises, timers, inbox receives "
                                f"and activities started with workflow.start(), got {a!r}")
            if a._wf is not self:
                raise ValueError(f"{a!r} belongs to another workflow")
            if isinstance(a, PendingReceive) and a.seconds is not None and not a.resolved:
                raise ValueError("a receive raced in workflow.first() takes no timeout: "
                                 "race it with a workflow.timer() instead")
        entry = self._take("first", "")
        if entry is not None:
            await self._yield()
            return awaitables[int(entry.outcome["index"])]
        seq = self.cursor.seq - 1
        try:
            while True:
                for i, a in enumerate(awaitables):  # argument order: deterministic ties
                    if a.done():
                        tx = Transaction()
                        if isinstance(a, PendingReceive) and not a.resolved:
                            self._claim(a, tx)  # consumed with the decision, atomically
                        self._record(tx, seq, "first", "", _dumps({"index": i}))
                        await self._commit(tx)
                        return a
                deadlines = [a.deadline for a in awaitables if isinstance(a, DurableTimer)]
                wake = self.host.clock.trio_deadline(min(deadlines)) if deadlines else None
                only_timers = len(deadlines) == len(awaitables)
                await self._wait(wake, S.SLEEPING if only_timers else S.WAITING)
        except _Cancelled:
            self._deliver_cancel(seq)
            raise AssertionError("unreachable") from None

    def continue_as_new(self, args: tuple[Any, ...]) -> None:
        self._op("workflow.continue_as_new()")
        to_json(list(args), what=f"the arguments of workflow {self.name}")  # PayloadError now
        raise ContinueAsNew(args)

    # ------------------------------------------------------------ Runtime protocol
    def current_pid(self) -> Pid:
        return self.pid

    async def spawn(self, target: Any, args: tuple[Any, ...], host: str | None, *,
                    link: bool, monitor: bool) -> Pid:
        node = self.node
        host_name = host or self.host.name
        h = node._host(host_name)
        label = target if isinstance(target, str) else getattr(target, "__qualname__",
                                                               repr(target))
        entry = self._take("spawn", str(label))
        if entry is not None:
            await self._yield()
            pid = Pid.parse(entry.outcome["pid"])
            if link:
                self.links.add(pid)
            if monitor:
                self.monitoring.add(pid)
            return pid
        seq = self.cursor.seq - 1
        if h.durable:
            child_id = f"{self.wid}.{seq}"
            pid = await h.start(target, args, wid=child_id, parent=self.pid,
                                prefix_tx=self._take_buffer(), journal=(self, seq, str(label)),
                                watcher=self.pid)
        else:
            pid = await node._spawn(target, args, host=host_name, parent=self.pid,
                                    link=self.pid if link else None,
                                    monitor=self.pid if monitor else None)
            tx = Transaction()
            self._record(tx, seq, "spawn", str(label), _dumps({"pid": str(pid)}))
            await self._commit(tx)
        if link:
            self.links.add(pid)
        if monitor:
            self.monitoring.add(pid)
        return pid

    def _take_buffer(self) -> Transaction:
        buf = self._buffer or Transaction()
        self._buffer = None
        return buf

    async def send(self, to: Pid | str, topic: str, payload: Any) -> None:
        entry = self._take("send", topic)
        if entry is not None:
            await self._yield()
            return
        seq = self.cursor.seq - 1
        pid = self.node.resolve(to)
        text = to_json(payload, what=f"the payload of message {topic!r} sent by workflow "
                                     f"{self.wid!r}")
        msg_id = f"{self.wid}#{seq}"
        tx = Transaction()
        self._record(tx, seq, "send", topic, _dumps({"to": str(pid), "id": msg_id}))
        target = self.host.active.get(pid.id) if pid.host == self.host.name else None
        other = self.node.hosts.get(pid.host)
        if target is not None:
            plain = payload if type(payload) in _PLAIN and type(payload) is not float \
                else _loads(text)
            msg = Message(topic, plain, self.pid, msg_id)
            item_plain = message_to_plain(msg)
            tx.deliver(target.wid, topic, RawJson(text), msg_id=msg_id, sender=self.pid)
            results = await self._commit(tx)
            row_id = results[-1]
            self.node.stats_messages += 1
            if row_id is not None:
                target.push(_Item(row_id, False, item_plain))
        elif other is not None and other.durable:
            # a finished workflow, or one on another durable host of this node
            await self._commit(tx)
            delivered = other is not self.host and await other.deliver_durable(
                pid, Message(topic, _loads(text), self.pid, msg_id), text=text)
            if delivered:
                self.node.stats_messages += 1
            else:
                self.node.stats_dead_letters += 1
        else:
            await self._commit(tx)
            if other is None:
                self.node.stats_dead_letters += 1
            elif other.deliver(pid, Message(topic, payload, self.pid, msg_id)):
                self.node.stats_messages += 1
            else:
                self.node.stats_dead_letters += 1
        await self._yield()

    async def reply(self, msg: Message, value: Any) -> None:
        entry = self._take("reply", msg.topic)
        if entry is not None:
            await self._yield()
            return  # the caller of a replayed call is gone
        seq = self.cursor.seq - 1
        _text, plain = _json_round_trip(value, f"the reply to {msg.topic!r}")
        tx = Transaction()
        self._record(tx, seq, "reply", msg.topic, _dumps({"to": str(msg.sender)}))
        await self._commit(tx)
        if msg.sender is not None and msg.call_ref is not None:
            caller = self.node._local_process(msg.sender)
            ref = int(msg.call_ref)
            self._callers.pop(ref, None)
            if caller is not None:
                caller._finish_call(ref, outcome.Value(plain))

    def inbox(self) -> DurableInbox:
        return self._box("inbox", None)

    def listen(self, topic: str) -> DurableInbox:
        if not isinstance(topic, str):
            raise TypeError(f"listen() takes a topic string, got {type(topic).__name__}")
        self.topics.add(topic)
        return self._box("topic:" + topic, topic)

    def events(self) -> DurableInbox:
        return self._box("events", None)

    def _box(self, channel: str, topic: str | None) -> DurableInbox:
        box = self._inboxes.get(channel)
        if box is None:
            box = self._inboxes[channel] = DurableInbox(self, channel, topic)
        return box

    def _sync_op(self, kind: str, name: str, data: dict[str, Any]) -> bool:
        """Journal a synchronous operation; True when it is live (not replayed)."""
        entry = self._take(kind, name)
        if entry is not None:
            return False
        self._record(self._buffered(), self.cursor.seq - 1, kind, name, _dumps(data))
        return True

    def link(self, to: Pid | str) -> None:
        pid = self.node.resolve(to)
        if pid == self.pid:
            return
        live = self._sync_op("link", str(pid), {})
        self.links.add(pid)
        if live and not self.node._link(pid, self.pid):
            self.host.linked_exit(self.pid, pid, noproc(pid))

    def unlink(self, to: Pid | str) -> None:
        pid = self.node.resolve(to)
        self._sync_op("unlink", str(pid), {})
        self.links.discard(pid)
        self.node._unlink(pid, self.pid)

    def monitor(self, to: Pid | str) -> None:
        pid = self.node.resolve(to)
        if not self._sync_op("monitor", str(pid), {}):
            self.monitoring.add(pid)
            return
        self.monitoring.add(pid)
        h = self.node.hosts.get(pid.host)
        if h is not None and h.durable:
            h.add_durable_monitor(pid, self)
        elif not self.node._monitor(pid, self.pid):
            self.host.deliver_event(self.pid, Event(EventKind.EXIT, pid, None, noproc(pid)))

    def demonitor(self, to: Pid | str) -> None:
        pid = self.node.resolve(to)
        self._sync_op("demonitor", str(pid), {})
        self.monitoring.discard(pid)
        h = self.node.hosts.get(pid.host)
        if h is not None and h.durable:
            h.remove_durable_monitor(pid, self)
        else:
            self.node._demonitor(pid, self.pid)

    def set_options(self, *, trap_links: bool | None = None) -> None:
        if trap_links is not None:
            self.trap_links = bool(trap_links)

    async def cancel(self, to: Pid | str, timeout: float) -> None:
        pid = self.node.resolve(to)
        entry = self._take("cancel_process", str(pid))
        if entry is None:
            seq = self.cursor.seq - 1
            await self.node._cancel(pid, self.pid, timeout)
            tx = Transaction()
            self._record(tx, seq, "cancel_process", str(pid), "null")
            await self._commit(tx)

    async def terminate(self, to: Pid | str) -> None:
        pid = self.node.resolve(to)
        entry = self._take("terminate", str(pid))
        if entry is None:
            seq = self.cursor.seq - 1
            await self.node._terminate(pid, self.pid)
            tx = Transaction()
            self._record(tx, seq, "terminate", str(pid), "null")
            await self._commit(tx)

    def register(self, name: str) -> None:
        self.node._register(name, self.pid)
        self.host.names.setdefault(self.wid, set()).add(name)

    def unregister(self, name: str) -> None:
        if self.node.registry.get(name) == self.pid:
            del self.node.registry[name]
        self.host.names.get(self.wid, set()).discard(name)

    def lookup(self, name: str) -> Pid | None:
        return self.node.lookup(name)

    async def call(self, to: Pid | str, topic: str, payload: Any, timeout: Any) -> Any:
        entry = self._take("call", topic)
        if entry is not None:
            await self._yield()
            out = entry.outcome
            if "ok" in out:
                return out["ok"]
            err = error_from_plain(out["error"])
            if out.get("timeout"):
                raise TimeoutError(err.message)
            raise ProcessError(err.message, pid=Pid.parse(out["pid"]), error=err)
        seq = self.cursor.seq - 1
        node = self.node
        pid = node.resolve(to)
        seconds = timeout_seconds(timeout)
        ref = next(_refs)
        self._calls[ref] = None
        callee = node._local_process(pid)
        result: dict[str, Any]
        try:
            if callee is None:
                raise ProcessError(f"call to {pid} failed: {noproc(pid)}", pid=pid,
                                   error=noproc(pid))
            if callee._callers is None:
                callee._callers = {}
            callee._callers[ref] = self
            if isinstance(callee, _Workflow):
                text = to_json(payload, what=f"the payload of call {topic!r}")
                await self.host.deliver_durable(
                    pid, Message(topic, _loads(text), self.pid, f"{self.wid}#{seq}", str(ref)),
                    text=text)
            else:
                node.stats_messages += 1
                callee.deliver(Message(topic, payload, self.pid, node._message_id(), str(ref)))
            with trio.move_on_after(seconds):
                value = await self._park_call(ref)
                text, plain = _json_round_trip(value, f"the reply to call {topic!r}")
                result = {"ok": plain}
                tx = Transaction()
                self._record(tx, seq, "call", topic, _dumps(result))
                await self._commit(tx)
                return plain
            raise TimeoutError(f"call to {pid} (topic {topic!r}) got no reply within "
                               f"{seconds:g}s")
        except (TimeoutError, ProcessError) as exc:
            err = exc.error if isinstance(exc, ProcessError) and exc.error else \
                ErrorInfo(type(exc).__name__, str(exc))
            err = ErrorInfo(err.type, str(exc), "")
            result = {"error": error_to_plain(err), "pid": str(pid),
                      "timeout": isinstance(exc, TimeoutError)}
            tx = Transaction()
            self._record(tx, seq, "call", topic, _dumps(result))
            await self._commit(tx)
            raise
        finally:
            self._calls.pop(ref, None)
            if callee is not None and callee._callers:
                callee._callers.pop(ref, None)

    async def _park_call(self, ref: int) -> Any:
        task = trio.lowlevel.current_task()
        self._calls[ref] = task

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._calls[ref] = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def _finish_call(self, ref: int, result: outcome.Outcome[Any]) -> None:
        if ref not in self._calls:
            return
        task = self._calls.pop(ref)
        if task is not None:
            trio.lowlevel.reschedule(task, result)

    # ------------------------------------------------------------ attrs / state
    def set_attrs(self, search: dict[str, Any] | None, memo: dict[str, Any] | None) -> None:
        self._op("workflow.attrs()")
        if self.cursor.replaying:
            return  # already stored the first time
        self._buffered().set_attributes(self.wid, search=search, memo=memo)

    def set_state(self, key: str, value: Any) -> None:
        self._op("workflow.set_state()")
        text, plain = _json_round_trip(value, f"state {key!r} of workflow {self.wid!r}")
        self.state[key] = plain
        if not self.cursor.replaying:
            self._buffered().set_state(self.wid, key, RawJson(text))


# ====================================================================== the host
class WorkflowHost:
    """A durable host: workflows journaled to ``store``; resumes unfinished ones at start."""

    durable = True

    def __init__(self, node: Node, name: str, store: Any) -> None:
        self.node = node
        self.name = name
        self.store: SQLiteStore = store
        self.active: dict[str, _Workflow] = {}
        #: recently finished: id -> (status, result JSON, error, name)
        self.finished: dict[str, tuple[WorkflowStatus, str | None, ErrorInfo | None, str]] = {}
        self.names: dict[str, set[str]] = {}
        self.clock = WallClock()  # hosts are made inside trio
        self._nursery: trio.Nursery | None = None
        self._inline = store.synchronous != "full"
        # an in-memory store (no fsync) always writes in the trio thread: cheap, and
        # no worker thread lets a MockClock jump time under a commit in flight
        #: a store opened with ``lock=False``: another node runs the workflows; this
        #: host only writes to the store (the owner picks the writes up) and reads it
        self.client = store.path is not None and not getattr(store, "locked", True)
        self._always_inline = store.path is None or self.client
        self._closing = False
        self._stop_poll = threading.Event()
        self._pending: list[_Request] = []
        #: workflows that are running (not parked on a message or timer, not ended)
        self.busy = 0
        #: tasks woken by the committer that have not run again yet
        self._released = 0
        self._committer_task: trio.lowlevel.Task | None = None

    # ------------------------------------------------------------ running
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Resume every unfinished workflow, then serve until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.client:
                task_status.started()
                await trio.sleep_forever()
            resumed = Transaction()
            recovering: list[_Workflow] = []
            paused = _pause_gc()  # recovery fast path: see _resume_gc
            try:
                for record in self.store.unfinished_workflows():
                    try:
                        wf = self._load(record)
                    except Exception as exc:  # pragma: no cover - a broken row
                        log.error("cannot resume workflow %s: %s", record.workflow_id, exc)
                        continue
                    self.active[wf.wid] = wf
                    if record.status != S.RUNNING:  # pending (made by a tool) or blocked
                        resumed.update_workflow(wf.wid, status=S.RUNNING, time=self.clock.now())
                    nursery.start_soon(wf.main)
                    recovering.append(wf)
            finally:
                if paused:
                    nursery.start_soon(self._resume_gc, recovering)
            if resumed:
                self.store.write(resumed)  # running, in the store too, before open_node returns
            for wf in list(self.active.values()):
                if wf.cancel_requested:  # by a tool while no node ran: children go too
                    self._cancel_children(wf)
            if self.store.path is not None and getattr(self.store, "locked", False):
                nursery.start_soon(self._poll_wakeups)
            if self._inline and not self._always_inline:
                nursery.start_soon(self._committer)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._stop_poll.set()

    async def _resume_gc(self, recovering: list[_Workflow]) -> None:
        """Recovery fast path: the cyclic garbage collector is paused from the first
        journal loaded until every recovered workflow replayed its journal (or ended),
        at most ``_GC_PAUSE_MAX`` seconds, then runs as usual.

        Loading and replaying make a few objects per journal record and per workflow,
        and they all stay alive: the collector's full passes over that growing heap
        were ~70% of the time to resume 10,000 workflows (and ~40% of loading 100,000
        records). Little is freed meanwhile, so pausing it costs little memory."""
        try:
            deadline = trio.current_time() + _GC_PAUSE_MAX
            i = 0
            while i < len(recovering) and trio.current_time() < deadline:
                wf = recovering[i]
                if wf.exited.is_set() or not wf.cursor.replaying:
                    i += 1
                else:
                    await trio.sleep(0.005)
        finally:
            gc.enable()

    def _load(self, record: Any) -> _Workflow:
        store = self.store
        wid = record.workflow_id
        rows, _size = store.journal_entries(wid)  # one json.loads for the whole journal
        journal = [Entry(*row) for row in rows]
        pending = [_item_from_record(r) for r in store.pending_messages(wid)]
        timers = {t.seq: t.deadline.timestamp() for t in store.timers(wid)}
        wf = _Workflow(
            self, wid, record.name, list(record.input), run_id=record.run_id or "",
            attempt=record.attempt, parent=record.parent,
            created=record.created.timestamp() if record.created else _time.time(),
            journal=journal, pending=pending, timers=timers,
            cancel_requested=record.cancel_requested,
            watchers=[p for p in store.monitors(wid)], state=_initial_state(journal),
        )
        self._load_promises(wf)
        return wf

    def _load_promises(self, wf: _Workflow) -> None:
        for rec in self.store.promises(wf.wid):
            if rec.status != "pending":
                wf.promises[rec.name] = (str(rec.status),
                                         rec.value if rec.status == "resolved" else rec.error)

    async def complete_promise(self, wid: str, name: str, status: str, value: Any) -> None:
        """Resolve or reject a workflow's promise (``PromiseAlreadyCompleted`` the second
        time); a waiting workflow wakes up."""
        if status == "resolved":
            text = to_json(value, what=f"the value of promise {name!r}")
            tx = Transaction().resolve_promise(wid, name, RawJson(text))
            stored: Any = _loads(text)
        else:
            tx = Transaction().reject_promise(wid, name, str(value))
            stored = str(value)
        self.store.write(tx)
        wf = self.active.get(wid)
        if wf is not None:
            wf.promises[name] = (status, stored)
            wf._notify()
        await trio.lowlevel.checkpoint()

    async def commit(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` before returning; share the transaction with other workflows.

        - alone (no other task runnable, no batch forming): ``store.write`` at once, in
          the trio thread (~20 us with WAL + ``synchronous=NORMAL``);
        - otherwise the caller joins the forming batch and parks; the committer task
          runs once every runnable task had its turn and writes the whole batch as ONE
          transaction (a failing caller is isolated by a savepoint), then wakes everyone
          with their own results;
        - ``synchronous="full"``: alone, ``store.write`` at once too (fast path: nobody
          could share the fsync, and a worker-thread hop costs ~50-80 us on top of a
          ~175 us fsync, so the trio thread blocks for that one fsync instead); otherwise
          the store's group commit, whose fsync runs in a worker thread so the node
          keeps running and every commit arriving meanwhile shares the next fsync.

        A caller resumes only once its writes are committed; waiting cannot be
        cancelled half-way (the write happens either way).
        """
        store = self.store
        if self._always_inline:
            return store.write(tx)
        if not self._inline:
            if not store._flushing and not _runnable():
                return store.write(tx)  # FULL fast path: alone, no thread hop (see above)
            return await store.commit(tx)
        pending = self._pending
        if not pending and not self._released and not store._flushing and not _runnable():
            return store.write(tx)  # no other task could join a batch now
        request = _Request(tx)
        request.task = trio.lowlevel.current_task()
        pending.append(request)
        if len(pending) == 1 and self._committer_task is not None:
            trio.lowlevel.reschedule(self._committer_task)
            self._committer_task = None
        try:
            result: list[Any] = await trio.lowlevel.wait_task_rescheduled(_no_abort)
        finally:
            self._released -= 1  # one fewer of my batch still to run
        return result

    async def _committer(self) -> None:
        """Write the batches :meth:`commit` forms (NORMAL durability)."""
        store = self.store
        while True:
            if not self._pending:
                self._committer_task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(_abort_ok(self))
            # let every runnable task reach its own commit and join the batch
            for _ in range(3):
                await trio.lowlevel.cancel_shielded_checkpoint()
                if trio.lowlevel.current_statistics().tasks_runnable == 0:
                    break
            batch, self._pending = self._pending, []
            store._write_batch(batch)
            # until each of them has run again, their next commits form the next batch
            self._released += len(batch)
            for request in batch:
                task = request.task
                assert task is not None
                if request.error is not None:
                    trio.lowlevel.reschedule(task, outcome.Error(request.error))
                else:
                    trio.lowlevel.reschedule(task, outcome.Value(request.results))

    async def _poll_wakeups(self) -> None:
        """Pick up what tools (stores opened with ``lock=False``) wrote: messages, cancels."""
        path = self.store.path
        assert path is not None

        def watch() -> bool:
            import sqlite3

            conn = sqlite3.connect(path, timeout=5.0)
            try:
                while not self._stop_poll.is_set():
                    if conn.execute("SELECT 1 FROM wakeups LIMIT 1").fetchone():
                        return True
                    self._stop_poll.wait(0.01)
                return False
            finally:
                conn.close()

        while True:
            found = await trio.to_thread.run_sync(watch, abandon_on_cancel=True)
            if not found or self._closing:
                return  # the node is closing (its store may be closed already)
            for wake in self.store.take_wakeups():
                self._refresh(wake.workflow_id)

    def _refresh(self, wid: str) -> None:
        record = self.store.get_workflow(wid)
        if record is None:
            return
        wf = self.active.get(wid)
        if wf is None:
            if not WorkflowStatus(record.status).finished and self._nursery is not None:
                wf = self._load(record)
                self.active[wid] = wf
                self._nursery.start_soon(wf.main)
            return
        known = {item.id for item in wf.pending}
        consumed = False
        for rec in self.store.pending_messages(wid):
            if rec.id not in known:
                wf.pending.append(_item_from_record(rec))
                consumed = True
        if record.cancel_requested and not wf.cancel_requested:
            wf.cancel_requested = True
            self._cancel_children(wf)
            consumed = True
        before = len(wf.promises)
        self._load_promises(wf)
        consumed = consumed or len(wf.promises) != before
        if consumed:
            wf.pending.sort(key=lambda item: item.id)
            wf._notify()

    # ------------------------------------------------------------ starting
    async def start(self, target: Any, args: tuple[Any, ...], *, wid: str | None,
                    parent: Pid | None = None, prefix_tx: Transaction | None = None,
                    journal: tuple[_Workflow, int, str] | None = None,
                    watcher: Pid | None = None, process_watcher: Pid | None = None,
                    process_link: Pid | None = None) -> Pid:
        """Create (idempotently) and start a workflow; returns its pid."""
        fn = self.node.resolve_target(target)
        if getattr(fn, "__garrison_activity__", None) is not None:
            raise TypeError(f"cannot run the activity {fn!r} as a workflow")
        name = target_name(fn)
        wid = wid or _uuid.uuid4().hex
        if not isinstance(wid, str) or not wid:
            raise ValueError(f"a workflow id must be a non-empty string, got {wid!r}")
        pid = Pid(self.name, wid)
        if wid in self.active or wid in self.finished:
            if journal is not None:
                raise AssertionError("child workflow id taken")  # pragma: no cover
            await trio.lowlevel.checkpoint()
            return pid
        input_text = to_json(list(args), what=f"the arguments of workflow {name}")
        tx = prefix_tx if prefix_tx is not None else Transaction()
        n = len(tx)
        now = self.clock.now()
        run_id = _uuid.uuid4().hex
        tx.create_workflow(wid, name, RawJson(input_text), status="running", parent=parent,
                           run_id=run_id,
                           host=self.name, time=now)
        if watcher is not None:
            tx.add_monitor(wid, watcher)
        if journal is not None:
            parent_wf, seq, label = journal
            parent_wf._record(tx, seq, "spawn", label, _dumps({"pid": str(pid)}))
        results = await self.commit(tx)
        created = results[n]
        if self.client:
            return pid  # the node that holds the store's lock runs it
        if not created:
            if wid not in self.active:
                record = self.store.get_workflow(wid)
                if record is not None and not WorkflowStatus(record.status).finished:
                    # unfinished but not loaded (a tool created it): run it now
                    self._refresh(wid)
            return pid
        wf = _Workflow(self, wid, name, _loads(input_text), run_id=run_id, attempt=1, parent=parent,
                       created=now, journal=[], pending=[], timers={}, cancel_requested=False,
                       watchers=[watcher] if watcher is not None else [], state={})
        wf.fn = fn
        if process_watcher is not None:
            wf.watchers.add(process_watcher)
        if process_link is not None:
            wf.links.add(process_link)
        self.active[wid] = wf
        assert self._nursery is not None
        self._nursery.start_soon(wf.main)
        await trio.lowlevel.checkpoint()
        return pid

    async def spawn_process(self, target: Any, args: tuple[Any, ...], *, parent: Pid | None,
                            link: Pid | None, monitor: Pid | None) -> Pid:
        """``process.spawn(..., host="workflows")`` from a process: a new workflow."""
        return await self.start(target, args, wid=None, parent=parent, process_watcher=monitor,
                                process_link=link)

    # ------------------------------------------------------------ finishing
    async def finish(self, wf: _Workflow, status: WorkflowStatus, value: Any,
                     error: ErrorInfo | None) -> None:
        """Record the end of ``wf`` and deliver its ``EXIT``."""
        result_json: str | None = None
        if status is S.COMPLETED:
            try:
                result_json = to_json(value, what=f"the result of workflow {wf.wid!r}")
            except Exception as exc:
                status, error = S.FAILED, ErrorInfo.from_exception(exc)
        tx = wf._take_buffer()
        if status is S.BLOCKED:
            tx.update_workflow(wf.wid, status=status, error=error, time=self.clock.now())
            await self.commit(tx)
            wf.status = S.BLOCKED
            wf.error = error
            wf.done.set()
            log.error("workflow %s is blocked: %s", wf.wid, error)
            return
        plain = None if result_json is None else _loads(result_json)
        event = Event(EventKind.EXIT, wf.pid, plain, error)
        tx.update_workflow(wf.wid, status=status,
                           result=RawJson(result_json) if result_json is not None else None,
                           error=error, time=self.clock.now())
        targets: list[tuple[_Workflow, int]] = []
        event_text = _dumps(event_to_plain(event))
        watchers = list(dict.fromkeys(wf.durable_watchers))
        for watcher in watchers:
            if watcher.host != self.name:
                continue
            other = self.active.get(watcher.id)
            if other is None:
                continue
            tx.deliver(watcher.id, "EXIT", RawJson(event_text), msg_id=f"{wf.wid}#exit",
                       sender=wf.pid, kind="event")
            targets.append((other, len(tx) - 1))
        results = await self.commit(tx)
        for other, index in targets:
            row_id = results[index]
            if row_id is not None:
                other.push(_Item(row_id, True, _loads(event_text)))
        wf.status = status
        wf.result_json = result_json
        wf.error = error
        self.active.pop(wf.wid, None)
        self.finished[wf.wid] = (status, result_json, error, wf.name)
        if len(self.finished) > 10_000:
            self.finished.pop(next(iter(self.finished)))
        for name in self.names.pop(wf.wid, ()):
            if self.node.registry.get(name) == wf.pid:
                del self.node.registry[name]
        if status is S.FAILED and error is not None:
            log.warning("workflow %s (%s) failed: %s", wf.wid, wf.name, error)
        if wf._callers:
            failure = ProcessError(f"workflow {wf.pid} ended before replying: "
                                   f"{error or 'normal exit'}", pid=wf.pid,
                                   error=error or noproc(wf.pid))
            for ref, caller in list(wf._callers.items()):
                caller._finish_call(ref, outcome.Error(failure))
            wf._callers.clear()
        for watcher in wf.watchers:
            self.node._deliver_event(watcher, event)
        for other_pid in wf.links:
            self.node._linked_exit(other_pid, wf.pid, error)
        wf.done.set()

    # ------------------------------------------------------------ node hooks
    async def deliver_durable(self, pid: Pid, msg: Message, text: str | None = None) -> bool:
        """Commit ``msg`` to the workflow's inbox before returning; False for a dead letter."""
        if self.client:
            record = self.store.get_workflow(pid.id)
            if record is None or S(record.status).finished:
                await trio.lowlevel.checkpoint()
                return False
            payload = RawJson(text) if text is not None else msg.payload
            self.store.write(Transaction().deliver(pid.id, msg.topic, payload, msg_id=msg.id,
                                                   sender=msg.sender, call_ref=msg.call_ref))
            await trio.lowlevel.checkpoint()
            return True
        wf = self.active.get(pid.id)
        if wf is None:
            await trio.lowlevel.checkpoint()
            return False
        if text is None:
            text = to_json(msg.payload, what=f"the payload of message {msg.topic!r} to "
                                             f"workflow {pid.id!r}")
            plain_payload = msg.payload if type(msg.payload) in _PLAIN and type(
                msg.payload) is not float else _loads(text)
        else:
            plain_payload = msg.payload
        tx = Transaction().deliver(pid.id, msg.topic, RawJson(text), msg_id=msg.id,
                                   sender=msg.sender, call_ref=msg.call_ref)
        row_id = (await self.commit(tx))[0]
        if row_id is not None and wf is self.active.get(pid.id):
            wf.push(_Item(row_id, False, message_to_plain(
                Message(msg.topic, plain_payload, msg.sender, msg.id, msg.call_ref))))
        return True

    async def call(self, caller: Pid, pid: Pid, topic: str, payload: Any, timeout: Any) -> Any:
        """``process.call`` from a process to a workflow."""
        node = self.node
        proc = node._local_process(caller)
        wf = self.active.get(pid.id)
        if wf is None or proc is None:
            raise ProcessError(f"call to {pid} failed: {noproc(pid)}", pid=pid, error=noproc(pid))
        seconds = timeout_seconds(timeout)
        ref = next(_refs)
        if proc._calls is None:
            proc._calls = {}
        proc._calls[ref] = None
        wf._callers[ref] = proc
        try:
            await self.deliver_durable(pid, Message(topic, payload, caller,
                                                    node._message_id(), str(ref)))
            node.stats_messages += 1
            with trio.move_on_after(seconds):
                return await proc._park_call(ref)
            raise TimeoutError(f"call to {pid} (topic {topic!r}) got no reply within "
                               f"{seconds:g}s")
        finally:
            proc._calls.pop(ref, None)
            wf._callers.pop(ref, None)

    def local_caller(self, pid: Pid) -> Any:
        """The workflow object behind ``pid`` (for replies to its calls)."""
        return self.active.get(pid.id)

    def deliver_event(self, pid: Pid, event: Event) -> bool:
        """Durably queue ``event`` (an ``EXIT`` or ``LINK_DOWN``) for the workflow."""
        wf = self.active.get(pid.id)
        if wf is None:
            return False
        plain_event = event_to_plain(Event(event.kind, event.pid,
                                           _plain_or_repr(event.result), event.error))
        text = _dumps(plain_event)
        # one id per (process, kind, workflow): a ``noproc`` event made at recovery for a
        # process lost in a crash is dropped if the real one was delivered before
        tx = Transaction().deliver(pid.id, str(event.kind), RawJson(text), sender=event.pid,
                                   kind="event", msg_id=f"{event.pid}#{event.kind}@{pid.id}")
        row_id = self.store.write(tx)[0]
        if row_id is not None:
            wf.push(_Item(row_id, True, plain_event))
        return True

    def add_durable_monitor(self, target: Pid, watcher: _Workflow) -> None:
        """A workflow monitors a workflow: its ``EXIT`` arrives durably."""
        other = self.active.get(target.id)
        buf = watcher._buffered()
        if other is not None:
            if watcher.pid not in other.durable_watchers:
                other.durable_watchers.append(watcher.pid)
            buf.add_monitor(target.id, watcher.pid)
            return
        record = self.store.get_workflow(target.id)
        if record is None:
            event = Event(EventKind.EXIT, target, None, noproc(target))
        else:
            event = Event(EventKind.EXIT, target, record.result, record.error)
        text = _dumps(event_to_plain(event))
        # the target is gone: its EXIT is committed to the watcher's inbox now, with
        # the watcher's buffered records (the monitor op among them)
        tx = watcher._take_buffer()
        tx.deliver(watcher.wid, "EXIT", RawJson(text), msg_id=f"{target.id}#exit@{watcher.wid}",
                   sender=target, kind="event")
        row_id = self.store.write(tx)[-1]
        if row_id is not None:
            watcher.push(_Item(row_id, True, _loads(text)))

    def remove_durable_monitor(self, target: Pid, watcher: _Workflow) -> None:
        other = self.active.get(target.id)
        if other is not None and watcher.pid in other.durable_watchers:
            other.durable_watchers.remove(watcher.pid)
        if self.store.get_workflow(target.id) is not None:
            watcher._buffered().remove_monitor(target.id, watcher.pid)

    def add_monitor(self, target: Pid, watcher: Pid) -> bool:
        wf = self.active.get(target.id)
        if wf is None or (wf.status is S.BLOCKED and wf.done.is_set()):
            return wf is not None
        if watcher.host == self.name:
            return True  # workflows monitor through add_durable_monitor
        wf.watchers.add(watcher)
        return True

    def remove_monitor(self, target: Pid, watcher: Pid) -> None:
        wf = self.active.get(target.id)
        if wf is not None:
            wf.watchers.discard(watcher)

    def add_link(self, target: Pid, other: Pid) -> bool:
        wf = self.active.get(target.id)
        if wf is None:
            return False
        wf.links.add(other)
        return True

    def remove_link(self, target: Pid, other: Pid) -> None:
        wf = self.active.get(target.id)
        if wf is not None:
            wf.links.discard(other)

    def linked_exit(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None:
        wf = self.active.get(target.id)
        if wf is None:
            return
        wf.links.discard(dead)
        if error is None:
            return
        if wf.trap_links:
            self.deliver_event(target, Event(EventKind.LINK_DOWN, dead, None, error))
        else:
            self.kill(target, ErrorInfo("LinkedProcessFailed",
                                        f"linked process {dead} failed: {error}"))

    def cancel_event(self, target: Pid, by: Pid | None) -> bool:
        """``process.cancel(workflow_pid)``: a durable cancel request."""
        wf = self.active.get(target.id)
        if wf is None:
            return False
        self.request_cancel(target.id)
        return True

    def request_cancel(self, wid: str) -> bool:
        """Flag the workflow cancelled (committed now); it sees ``WorkflowCancelled``."""
        if self.client:
            record = self.store.get_workflow(wid)
            if record is None or S(record.status).finished:
                return False
            self.store.request_cancel(wid)
            return True
        wf = self.active.get(wid)
        if wf is None:
            return False
        if not wf.cancel_requested:
            self.store.write(Transaction().request_cancel(wid))
            wf.cancel_requested = True
            self._cancel_children(wf)
        wf._notify()
        return True

    def _cancel_children(self, wf: _Workflow) -> None:
        """Unfinished children of a cancelled workflow are cancelled too."""
        for child in list(self.active.values()):
            if child.parent == wf.pid and not child.done.is_set():
                self.request_cancel(child.wid)

    def kill(self, target: Pid, reason: ErrorInfo) -> bool:
        wf = self.active.get(target.id)
        if wf is None or wf.done.is_set():
            return False
        if wf.kill_reason is None:
            wf.kill_reason = reason
            if wf.scope is not None:
                wf.scope.cancel()
        return True

    async def wait_exited(self, target: Pid) -> None:
        wf = self.active.get(target.id)
        if wf is not None:
            await wf.done.wait()

    def is_alive(self, pid: Pid) -> bool:
        wf = self.active.get(pid.id)
        return wf is not None and not wf.done.is_set()

    def live_count(self) -> int:
        return sum(1 for wf in self.active.values() if not wf.done.is_set())

    async def shutdown(self) -> None:
        """Stop running workflows without journaling anything: they resume on the next
        node that opens the store.

        The store row of each parked workflow gets its last status (``waiting`` or
        ``sleeping``, one transaction), so ``garrison workflows list`` shows it while no
        node runs (recovery marks them ``running`` again)."""
        self._closing = True
        self._stop_poll.set()
        running = list(self.active.values())
        parked = Transaction()
        for wf in running:
            if wf.status in (S.WAITING, S.SLEEPING) and not wf.done.is_set():
                parked.update_workflow(wf.wid, status=wf.status)
        if parked and not self.client:
            try:
                self.store.write(parked)
            except Exception as exc:  # pragma: no cover - the store failed: only a status
                log.warning("could not record the statuses of parked workflows: %s", exc)
        while running:
            for wf in running:
                if wf.scope is not None:
                    wf.scope.cancel()
            for wf in running:
                await wf.exited.wait()
            # children whose start was committed meanwhile stop too
            running = [wf for wf in self.active.values() if not wf.exited.is_set()]
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------ results
    async def wait(self, pid: Pid) -> Any:
        """``Node.wait`` on a workflow pid: its result, or ``ProcessError``."""
        try:
            return await self.result(pid.id)
        except (WorkflowFailed, WorkflowCancelled, NonDeterminismError) as exc:
            error = getattr(exc, "error", None) or ErrorInfo.from_exception(exc)
            raise ProcessError(f"workflow {pid} failed: {error}", pid=pid, error=error) from exc

    async def result(self, wid: str, hint: Any = None) -> Any:
        """Wait for the workflow to end; its result, or the error that ended it."""
        wf = self.active.get(wid)
        status: WorkflowStatus
        if wf is not None:
            await wf.done.wait()
            if wf.status is S.BLOCKED:
                if wf.cursor.error is not None:
                    raise wf.cursor.error
                raise NonDeterminismError(str(wf.error), workflow_id=wid)
            status, result_json, error = wf.status, wf.result_json, wf.error
            name = wf.name
        elif wid in self.finished:
            status, result_json, error, name = self.finished[wid]
            await trio.lowlevel.checkpoint()
        else:
            record = self.store.get_workflow(wid)
            if record is None:
                raise NoSuchWorkflow(wid)
            status = S(record.status)
            while self.client and not status.finished:
                await trio.sleep(0.02)  # another node runs it: watch the store
                record = self.store.get_workflow(wid)
                assert record is not None
                status = S(record.status)
            if not status.finished:
                raise NonDeterminismError(
                    f"workflow {wid!r} is {status} but not running on this node: "
                    f"{record.error}" if record.error else f"workflow {wid!r} is {status}",
                    workflow_id=wid)
            result_json = None if record.result is None else _dumps(record.result)
            error = record.error
            name = record.name
            await trio.lowlevel.checkpoint()
        if status is S.COMPLETED:
            value = None if result_json is None else _loads(result_json)
            if hint is None:
                try:
                    hint = return_hint(import_target(name))
                except Exception:
                    hint = Any
            return structure(value, hint, what=f"the result of workflow {wid!r}")
        if status is S.CANCELLED:
            raise WorkflowCancelled(f"workflow {wid!r} was cancelled")
        assert error is not None
        raise WorkflowFailed(wid, error)

    def status(self, wid: str) -> WorkflowStatus:
        wf = self.active.get(wid)
        if wf is not None:
            return wf.status
        if wid in self.finished:
            return self.finished[wid][0]
        record = self.store.get_workflow(wid)
        if record is None:
            raise NoSuchWorkflow(wid)
        return WorkflowStatus(record.status)


def _no_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # the commit happens either way: wait for it


def _abort_ok(host: WorkflowHost) -> Callable[[Any], trio.lowlevel.Abort]:
    def abort(_: Any) -> trio.lowlevel.Abort:
        host._committer_task = None
        return trio.lowlevel.Abort.SUCCEEDED

    return abort


#: the kind of the seq-0 record of a continued run: the state it starts with
CONTINUED = "continued"


def _initial_state(journal: list[Entry]) -> dict[str, Any]:
    """The state a run starts with: empty, or what a continue-as-new carried over. Replay
    rebuilds the rest, so ``get_state`` sees the same values as the first time."""
    if journal and journal[0].seq == 0 and journal[0].kind == CONTINUED:
        return dict((journal[0].outcome or {}).get("state") or {})
    return {}


def _plain_or_repr(value: Any) -> Any:
    try:
        return _loads(to_json(value, what="an event result"))
    except Exception:
        return repr(value)


def _item_from_record(rec: Any) -> _Item:
    if rec.kind == "event":
        return _Item(rec.id, True, rec.payload)
    return _Item(rec.id, False, {"topic": rec.topic, "payload": rec.payload,
                                 "sender": None if rec.sender is None else str(rec.sender),
                                 "id": rec.msg_id, "call_ref": rec.call_ref})
