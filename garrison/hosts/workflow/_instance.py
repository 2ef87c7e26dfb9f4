"""One workflow instance: its lifecycle (run, continue-as-new, end), recorded
values, state and search attributes; assembled from the parts of the other modules.

The instance runs the workflow function as a trio task with itself as the runtime of
both ``garrison.process`` and ``garrison.workflow``. Closing a node cancels the task
without journaling anything: the workflow resumes from its journal on the next node.
"""

from __future__ import annotations

import copy
import datetime as _dt
import inspect
import json
import random as _random
import sys
import uuid as _uuid
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, cast

import trio

from ... import _observe
from ..._errors import (
    NonDeterminismError,
    PayloadError,
    StoreError,
    WorkflowCancelled,
    WorkflowMoved,
)
from ..._targets import function_gone, import_target, workflow_refused_now
from ...actors._cancel_switch import CancelSwitch, body_root, stray_cancelled
from ...actors._runtime import Runtime, set_runtime
from ...actors._values import ErrorInfo, EventKind, Pid, cancel_error_info
from ...persistence import (
    RawJson,
    Transaction,
    WorkflowStatus,
    check_search_value,
    state_digest,
)
from ...workflow import WorkflowInfo
from .._kernel import stepping
from ._activities import Activities
from ._codec import arguments_json, arity_problem, json_round_trip, restore_args
from ._core import ContinueAsNew, EngineStop, Replayed, log
from ._ids import check_key_size, check_state_key, check_text
from ._interop import Interop
from ._journal import (
    BLOCKED_ADVICE,
    WHOLE_RUN_ID,
    Cursor,
    JournalKind,
    blocked_advice,
    code_gone,
    code_line,
    raise_frame_text,
    timestamp,
)
from ._waits import Waits

__all__ = ["ActiveWorkflows", "WorkflowInstance"]

_ABSENT: Any = object()

#: what a divergence of arguments the code no longer takes means, before the advice
_ARGUMENTS_NOTE = ("The arguments the workflow was started with no longer fit the "
                   "function's signature or annotations, and they are restored before its "
                   "code runs, so workflow.version cannot branch there: make the code take "
                   "them too (a default for a new field or parameter, an annotation that "
                   "also takes the old values). ")


class ActiveWorkflows(dict[str, "WorkflowInstance"]):
    """A host's ``active`` workflows by id, with an index of them by parent pid: a
    cancelled workflow finds its children without a pass over every active workflow.

    Every way of adding or removing an entry keeps the index (``setdefault``,
    ``update`` and ``popitem`` are not used and refused)."""

    __slots__ = ("_by_parent",)

    def __init__(self) -> None:
        super().__init__()
        self._by_parent: dict[Pid, dict[str, WorkflowInstance]] = {}

    def children_of(self, parent: Pid) -> list[WorkflowInstance]:
        """The active workflows whose parent is ``parent``."""
        children = self._by_parent.get(parent)
        return list(children.values()) if children else []

    def __setitem__(self, wid: str, wf: WorkflowInstance) -> None:
        old = dict.get(self, wid)
        if old is not None:
            self._unindex(wid, old)
        dict.__setitem__(self, wid, wf)
        if wf.parent is not None:
            self._by_parent.setdefault(wf.parent, {})[wid] = wf

    def __delitem__(self, wid: str) -> None:
        self._unindex(wid, dict.pop(self, wid))

    def pop(self, wid: str, *default: Any) -> Any:
        if wid not in self:
            return dict.pop(self, wid, *default)
        wf = dict.pop(self, wid)
        self._unindex(wid, wf)
        return wf

    def clear(self) -> None:
        dict.clear(self)
        self._by_parent.clear()

    def _unindex(self, wid: str, wf: WorkflowInstance) -> None:
        if wf.parent is None:
            return
        children = self._by_parent.get(wf.parent)
        if children is not None and children.get(wid) is wf:
            del children[wid]
            if not children:
                del self._by_parent[wf.parent]

    def _refused(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("ActiveWorkflows: set or delete one entry at a time")

    setdefault = update = popitem = __ior__ = _refused

_dumps = json.dumps
_loads = json.loads


class WorkflowInstance(Waits, Activities, Interop):
    """One workflow: the runtime its code talks to through ``garrison.process`` and
    ``garrison.workflow`` (see :class:`garrison.workflow.WorkflowRuntime`)."""

    __slots__ = ()

    def info(self) -> WorkflowInfo:
        return WorkflowInfo(self.wid, self.run_id, self.name, self.host.name, self.attempt,
                            timestamp(self.created))

    # ------------------------------------------------------------ lifecycle
    def main(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
             ) -> Coroutine[Any, Any, None]:
        """The workflow's task: runs it to its end (or until the node closes).

        (A plain function returning the run's coroutine: one coroutine less held by
        every waiting workflow, and passed at every resume.)"""
        if _observe.active:
            return self._observed_main(task_status)
        return self._main(task_status, True)

    async def _observed_main(self, task_status: trio.TaskStatus[None]) -> None:
        try:
            with _observe.workflow_run(self):
                await self._main(task_status, False)
        finally:  # outside the span: a workflow the queue starts now is not inside it
            self.mark_exited()

    def mark_exited(self) -> None:
        """This workflow's task ended here, or it leaves without one (queued, handed
        over): ``exited`` is set and the host frees its queue slot."""
        # (the task's context holds this workflow as its runtime: kept, the pair would
        # be a reference cycle that only the cyclic collector frees)
        self.task = None
        self.exited.set()
        self.host.exited(self)

    async def _main(self, task_status: trio.TaskStatus[None], exit_here: bool) -> None:
        try:
            # its inboxes are DurableInboxes: the same interface; also what makes
            # ``current_workflow()`` this workflow (``_context.py``)
            set_runtime(cast(Runtime, self))
            self.task = trio.lowlevel.current_task()
            host = self.host
            value: Any = None
            final: WorkflowStatus | None = None
            error: ErrorInfo | None = None
            task_status.started()
            # what a kill or the node's closing cancels: a switch around the body, made
            # only if it is used (``cancel_body``), from where the body begins once the
            # task is in the nursery it stays in (a trio whose internals the switch
            # cannot use: made and entered now). (Left by hand: a ``with`` keeps the
            # bound ``__exit__`` on the frame's stack, one more object every running
            # workflow holds.)
            root = self.body_root = body_root()
            if root is None:  # (another trio version)
                self.scope = CancelSwitch()
                self.scope.attach()
            try:
                if self.kill_reason is not None or host.closing:  # started as the node closes
                    self.cancel_body()  # (or killed before: taken from the queue to start)
                    # its code does not begin (it could run a step inline before its
                    # first checkpoint): failed by the kill, or resumed by the next node
                    await trio.lowlevel.checkpoint()
                try:
                    fn = self.fn
                    if fn is None:
                        try:
                            fn = import_target(self.name)
                        except Exception as exc:  # the code is gone: keep it for code that has it
                            raise self._code_missing(exc) from exc
                        # made a sync def, an activity: gone as a workflow function, kept
                        # alike (awaited, it failed for good, or ran as an activity)
                        refused = workflow_refused_now(fn)
                        if refused is not None:
                            raise self._code_refused(refused)
                        self.fn = fn
                    while True:
                        try:
                            try:  # (not a coroutine of its own: every resume passes each one)
                                # (no local for the arguments: a tuple less held while it runs)
                                value = await fn(*self._arguments(fn))
                            finally:  # what it started and did not await: cancelled, unrecorded
                                if self.started is not None:
                                    await self.end_started()
                            if self.continue_asked:
                                self._continue_swallowed()
                            break
                        except ContinueAsNew as again:
                            await self._continue_as_new(again.args_)
                        except BaseExceptionGroup as group:  # (called in a nursery's body)
                            inner = _continue_in(group)
                            if inner is None:
                                raise
                            await self._continue_as_new(inner.args_)
                    self.cursor.finished()
                    if self.replayed is not None:
                        self._settle_replayed()  # (returned right after its replay)
                    # a wait under way at a stop that the code returned before reaching (a
                    # timer the code reached and left, by a cancel scope of its own, is
                    # not a divergence)
                    unreached = self._unreached_timer()
                    if unreached is not None:
                        raise self.cursor.diverge(
                            unreached, "timer", self.under_way(unreached),
                            "nothing (the workflow function returned)")
                    final = WorkflowStatus.COMPLETED
                except NonDeterminismError as exc:
                    error, final = ErrorInfo.from_exception(exc), WorkflowStatus.BLOCKED
                except WorkflowCancelled as exc:
                    final = (WorkflowStatus.CANCELLED if self.cancel_delivered
                             else WorkflowStatus.FAILED)
                    # (its traceback without carets: a parent's cancel ends thousands)
                    error = cancel_error_info(exc)
                except (trio.Cancelled, KeyboardInterrupt) as exc:
                    ended = self._stray(exc)
                    if ended is None:
                        raise
                    error, final = ended
                except (Exception, SystemExit) as exc:  # sys.exit(): this workflow's failure
                    if self._cancelled_group(exc):
                        final = WorkflowStatus.CANCELLED
                        error = ErrorInfo.from_exception(self._cancelled_error())
                    else:
                        error, final = self._failure(exc)
                except BaseExceptionGroup as group:
                    _, rest = group.split(trio.Cancelled)
                    if rest is None:  # only Cancelled: a real cancellation, or stray
                        ended = self._stray(group)
                        if ended is None:
                            raise
                        error, final = ended
                    elif rest.subgroup(_not_the_workflow_s) is not None:
                        raise
                    elif self._cancelled_group(rest):
                        final = WorkflowStatus.CANCELLED
                        error = ErrorInfo.from_exception(self._cancelled_error())
                    else:
                        error, final = self._failure(rest)
                except EngineStop:  # (the replay tool's end)
                    raise
                except GeneratorExit as exc:  # the interpreter closing the coroutine goes
                    if not stepping(self.task):  # on; one raised by the code is its failure
                        raise
                    error, final = self._failure(exc)
                except BaseException as exc:  # asyncio's CancelledError, a library's own:
                    error, final = self._failure(exc)  # this workflow's failure only
            except BaseException as exc:
                scope = self.end_body()
                if scope is None or not scope.__exit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                scope = self.end_body()
                if scope is not None:
                    scope.__exit__(None, None, None)
            if self.store_error is not None:
                # a drain's hand-over (WorkflowMoved) records what it did before it moves,
                # a step's outcome left included (flush_left writes nothing for another
                # store failure); nothing more can be recorded
                await self.flush_left()
                self.stop_on_store_error(self.store_error)
                return
            if final is None:
                if self.kill_reason is None:
                    # the node is closing: no outcome is journaled, the workflow resumes
                    # later (from what it buffered, too)
                    await self.flush_left()
                    return
                final, error = WorkflowStatus.FAILED, self.kill_reason
            elif self.kill_reason is not None and final is not WorkflowStatus.BLOCKED:
                # a kill is not refused, as a process's is not: code that went on to its
                # end after it (woken by the EXIT a linked child's failure delivered just
                # before its linked failure, say) ends with the kill's reason
                final, error, value = WorkflowStatus.FAILED, self.kill_reason, None
            if self.cursor.error is not None:
                final, error = WorkflowStatus.BLOCKED, ErrorInfo.from_exception(self.cursor.error)
            elif self.replayed is not None and final is not WorkflowStatus.BLOCKED \
                    and not self.cursor.in_history:
                self._settle_replayed()  # (failed or cancelled right after its replay)
            elif final is WorkflowStatus.COMPLETED and self.cancel_delivered:
                final = WorkflowStatus.CANCELLED
                error = ErrorInfo.from_exception(self._cancelled_error())
            # (no shielded scope: the store's commit, finish's one wait, is not interrupted
            # by a cancellation, such as the node closing as a killed workflow ends)
            try:
                await host.finish(self, final, value, error)
            except StoreError as exc:  # the store failed (disk full, gone): keep the node
                self.stop_on_store_error(exc)
            except Exception as exc:  # refused by the store for a reason of its own
                # (an operation it finds invalid: a consume of a row no longer pending, an
                # update of a row deleted meanwhile): this workflow stops as for a failed
                # store, nothing recorded as its outcome; the node and the others run on
                self.stop_on_store_error(StoreError(self.store.path, (
                    f"the end of workflow {self.wid!r} could not be recorded: "
                    f"{type(exc).__name__}: {exc}")))
        finally:
            if exit_here:
                self.mark_exited()

    def end_body(self) -> CancelSwitch | None:
        """Its body has ended: ``cancel_body`` makes no switch from now on. Returns the
        switch made while it ran (``None``: none), which the caller leaves."""
        self.body_root = None
        return self.scope

    def _cancelled_group(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a group of nothing but the cancel this workflow was given
        (and trio's cancellations): cancelled in a nursery's body, it ends cancelled as
        out of the function itself."""
        if not self.cancel_delivered or not isinstance(exc, BaseExceptionGroup):
            return False
        _, rest = exc.split((WorkflowCancelled, trio.Cancelled))
        return rest is None and exc.subgroup(WorkflowCancelled) is not None

    def _arguments(self, fn: Any) -> list[Any]:
        """The workflow's arguments restored by ``fn``'s annotations; ones it no longer
        takes, while the journal records more (the code changed since the start: a new
        field with no default), a divergence saying so: ``workflow.version`` cannot
        branch before the function runs."""
        try:
            args = restore_args(fn, self.input_plain, f"workflow {self.code_name()}")
        except PayloadError as exc:
            diverged = self._raised(exc, _ARGUMENTS_NOTE)
            if diverged is None and self.loaded():  # (its run began before)
                diverged = self._arguments_diverged(str(exc))
            if diverged is not None:
                raise diverged from exc
            raise
        if self.loaded():
            # started (and checked) before, maybe on other code: a call that cannot take
            # them is this divergence, whatever the journal records (the call's
            # TypeError would be taken for a path that raises, and workflow.version
            # advised, which cannot branch before the function runs)
            problem = arity_problem(fn, self.code_name(), args, "it was started with")
            if problem is not None:
                raise self._arguments_diverged(problem)
        return args

    def code_name(self) -> str:
        """The name of the function its code runs, for errors of that function's
        signature: the recorded name (a replay against another function names that
        one)."""
        return self.name

    def loaded(self) -> bool:
        """Whether this run began before (loaded from the store), not started here."""
        return bool(self.resend_seq)

    def ended_after_journal(self) -> bool:
        """Whether the run this journal records went on past its last record to its end
        (what the code does there is history, not live work: a ``workflow.version`` call
        there gets the default). Never on a node, which does not run a finished
        workflow again; a replay of a finished one's history."""
        return False

    def _arguments_diverged(self, problem: str) -> NonDeterminismError:
        """The error of a workflow loaded from the store whose arguments no longer fit
        its function (``problem``), the code changed since it was started and checked
        against them, with nothing recorded after them to name (kept: it blocks)."""
        cursor = self.cursor
        advice = (blocked_advice("them") if cursor.advice == BLOCKED_ADVICE
                  else cursor.advice.partition(": ")[0])  # (a replay's: a dry run)
        err = NonDeterminismError(
            f"workflow {self.wid!r}: {problem}. {_ARGUMENTS_NOTE}{advice}",
            workflow_id=self.wid, seq=0, recorded="the arguments it was started with",
            current=problem)
        if cursor.error is None:
            cursor.error = err
        return cursor.error

    def _failure(self, exc: BaseException) -> tuple[ErrorInfo, WorkflowStatus]:
        """How the code raising ``exc`` ends the workflow: ``failed``; or ``blocked``
        while its journal records more (code changed since: a new signature, arguments
        its annotations no longer take, a path that raises where the first run went
        on), which code that replays the journal resumes."""
        diverged = self._raised(exc)
        if diverged is not None:
            return ErrorInfo.from_exception(diverged), WorkflowStatus.BLOCKED
        return ErrorInfo.from_exception(exc), WorkflowStatus.FAILED

    def _stray(self, exc: BaseException) -> tuple[ErrorInfo, WorkflowStatus] | None:
        """``exc``, trio's ``Cancelled`` (or a group of nothing else) or Ctrl-C, came
        out of the code: how it ends this workflow if it is a ``Cancelled`` that no
        cancellation of the workflow caused (see :func:`stray_cancelled`), the failure
        of this workflow only; ``None`` when it goes on up."""
        stray = stray_cancelled(exc, f"workflow {self.wid!r} ({self.name})")
        if stray is None:
            return None
        error, final = self._failure(exc)
        return (stray if final is WorkflowStatus.FAILED else error), final

    def _unreached_timer(self) -> int | None:
        """The seq of the first sleep or receive timeout under way at a stop that the
        code has not reached yet (one it reached and left, by a cancel scope of its own,
        is behind the cursor), or ``None``."""
        if not self.timers:  # (none: every workflow's end asks)
            return None
        seq = self.cursor.seq
        return min(filter(seq.__le__, self.timers), default=None)

    def _raised(self, exc: BaseException, note: str = "") -> NonDeterminismError | None:
        """The code raised ``exc``: a divergence (see :meth:`Cursor.raised`) before a
        record of the journal, or before a sleep or receive timeout under way at a
        stop (the run that recorded it went on to that wait); else ``None``."""
        fn = inspect.unwrap(self.fn) if self.fn is not None else None
        where = raise_frame_text(exc, getattr(fn, "__code__", None))
        diverged = self.cursor.raised(exc, note, where)
        if diverged is not None:
            return diverged
        unreached = self._unreached_timer()
        if unreached is None:
            return None
        return self.cursor.diverge(unreached, "timer", self.under_way(unreached),
                                   f"raise {type(exc).__name__}: {exc}", note, where=where)

    def stop_on_store_error(self, exc: StoreError) -> None:
        """The store refused this workflow's writes for good: it stops here (in memory
        ``blocked``, nothing recorded as its outcome) and resumes from its journal on the
        next node that opens a working store. A workflow that moved to another node of
        a cluster (:class:`~garrison.WorkflowMoved`) just leaves this one."""
        self.store_error = exc
        if isinstance(exc, WorkflowMoved):
            self.done.set()
            if self.host.ownership is not None:
                self.host.ownership.moved(self, exc)
            return
        self.host.counts["store_errors"] += 1  # (garrison_workflow_store_errors_total)
        if self.host.closing:  # the node stops: one line for all (see the host's stop)
            self.host.unrecorded_at_stop.append(self.wid)
            self.host.store_error_at_stop = exc
        else:
            log.error("workflow %s stopped: its store failed: %s; it resumes from its "
                      "journal on the next node", self.wid, exc,
                      extra={"workflow_id": self.wid, "run_id": self.run_id,
                             "pid": self.pid})
        self.status = WorkflowStatus.BLOCKED
        self.error = ErrorInfo.from_exception(exc)
        self.done.set()

    def check_continue(self) -> None:
        """The code calls ``continue_as_new`` here: a divergence (raised) when the run
        that recorded the journal went on past this point, to a recorded step or to a
        sleep or receive timeout under way (its run would end here, dropping them)."""
        now = "workflow.continue_as_new() (its run ends there)"
        remaining = self.cursor.remaining()
        if remaining:
            first = remaining[0]
            raise self.cursor.diverge(first.seq, first.kind, first.name, now)
        unreached = self._unreached_timer()
        if unreached is not None:
            raise self.cursor.diverge(unreached, "timer", self.under_way(unreached), now)

    async def _continue_as_new(self, args: tuple[Any, ...]) -> None:
        """End this run: a fresh journal, the new arguments, a new run id."""
        self.continue_asked = False
        self.check_continue()
        text = arguments_json(self.fn, args, f"the arguments of workflow {self.name}")
        if self.replayed is not None:
            # (continued right after its replay: stored with this run's end, or the new
            # run, which carries the state, would never, its cursor starting at 0)
            self._settle_replayed()
        run_id = _uuid.uuid4().hex
        tx = self.take_buffer()
        now = self.host.clock.now()
        tx.reset_run(self.wid, RawJson(text), run_id=run_id, time=now)
        handled = self.cancel_delivered  # (the run ending met the cancel and went on)
        if handled:  # the new run is not cancelled by it: with or without a restart
            await self.host.committed_soon()  # (the request's own write goes first)
            tx.update_workflow(self.wid, cancel_requested=False)
        # seq 0 of the new run: the state it starts with (what get_state replays from)
        # (and the names it holds, which the new run holds on: taken again after a
        # restart, as a replay of its own registers would)
        # (and when it began: info().start_time after a restart too, see run_started)
        # (and that its message ids carry its whole run id, see _journal.whole_run_id)
        first: dict[str, Any] = {"state": self.state, "started": now, "ids": WHOLE_RUN_ID}
        if self.held_names:
            first["names"] = self.held_names
        if self.monitoring:  # (held on into the new run: known after a crash too)
            ids = self.signal_ids or {}
            first["monitors"] = {str(pid): ids.get((EventKind.EXIT, pid))
                                 for pid in sorted(self.monitoring)}
        tx.append_journal(self.wid, 0, JournalKind.CONTINUED, "",
                          RawJson(_dumps(first)), time=now)
        # (after a flush of buffered records in flight, as every commit: the host's
        # flush of a step's outcome, landing after this reset, would put the old run's
        # record in the new run's journal)
        await self.commit_checked(tx)
        self.input_plain = _loads(text)
        self.run_id = run_id
        self.continued = True
        self.whole_run_id = True
        if handled:
            self.cancel_requested = self.cancel_delivered = False
            self.cancel_at = self.cancel_mark = None
        self.cursor = Cursor(self.wid, [])
        # the run's links end with it (as at a normal end: the other sides hear
        # nothing), and its trap_links: its journal, which made them, is gone, so a
        # node resuming the new run could not make them again
        self.drop_links()
        self.trap_links = False
        # and its listens: the new run's inbox() takes every topic until its own code
        # listens, as on a node that resumes it after a restart (its journal has no
        # listen of the old run's)
        self.topics = None
        self._inboxes = None
        # (its monitors hold on into the new run, as the processes and workflows it
        # watches keep them for its pid: each leaves ``monitoring`` and ``signal_ids``
        # as its event comes, see ``watch_spent``)
        self.versions = self.defaulted = None
        self._journal_sizes = None
        self.timers.clear()
        self.timer_kinds = None
        self.history_bytes = 0
        self.unsized = None
        self.created = now
        _observe.workflow_continued(self)

    # ------------------------------------------------------------ recorded values
    def recorded_value(self, kind: JournalKind, name: str, make: Callable[[], Any]) -> Any:
        """A synchronous recorded value (``now``, ``uuid4``, ``random``, ``version``)."""
        entry = self._take(kind, name)
        if entry is not None:
            return entry.outcome
        value = make()
        self.record(self.buffered(), self.cursor.seq - 1, kind, name, _dumps(value))
        return value

    def now(self) -> _dt.datetime:
        return timestamp(self.recorded_value(JournalKind.NOW, "", self.host.clock.now))

    def uuid4(self) -> _uuid.UUID:
        return _uuid.UUID(self.recorded_value(JournalKind.UUID4, "", lambda: str(_uuid.uuid4())))

    def random(self) -> float:
        return float(self.recorded_value(JournalKind.RANDOM, "", _random.random))

    def version(self, change_id: str, min_version: int, max_version: int) -> int:
        """The version of ``change_id`` for this run, fixed by its first call (as
        Temporal does): the recorded one; for a run recorded before the call existed the
        default, ``min(min_version, 1)`` (Temporal's DefaultVersion), which a range
        that leaves it out blocks; else ``max_version``. A later call with the same id
        gets the same (a run resumed on new code cannot take the old path at one gate
        and the new one at the next). A default is never recorded, at any call (as
        Temporal records no marker for it): a journal of an old-path run replays on
        the code without the call. Every live call of a run that got ``max_version`` is
        recorded, as before, so that a journal replays on the release before this one
        (which, finding no record at a later call with records after it, takes the run
        for an old one); a record a later call finds wins (a journal of that release
        may hold another version there: it replays as it ran)."""
        self._op("workflow.version()")
        entry = self.cursor.peek()
        recorded = (entry is not None and entry.kind == JournalKind.VERSION
                    and entry.name == change_id)
        if not recorded:  # (refused before a seq is taken, in a replay alike)
            check_text(change_id, f"workflow.version({change_id!r}): a change_id")
        fixed = self.versions.get(change_id) if self.versions else None
        got: Any
        if (entry is not None and not recorded) or (entry is None and (
                self.cursor.seq in self.timers or self.cursor.in_history
                or self.ended_after_journal())) or (
                entry is None and self.defaulted and change_id in self.defaulted):
            # a run recorded before this version() call existed (a record, or a sleep or
            # receive timeout under way, holds its seq; a cancel too, which the code
            # after this call takes, as the first run did; or a step it never recorded
            # did, before records of later steps; or the run ended after its last
            # record, a finished one's replay): the default, or what an earlier
            # call fixed for this run; no seq is taken (a later call of a defaulted
            # change id too, live: a record, or a seq left unrecorded, would make the
            # journal replay otherwise on the code without the call)
            if fixed is None:
                got = min(min_version, 1)
                if got < min_version:
                    raise self._version_predates(self.cursor.seq, change_id, got,
                                                 min_version, max_version)
                if self.defaulted is None:
                    self.defaulted = set()
                self.defaulted.add(change_id)
            else:
                got = fixed
            if not min_version <= got <= max_version:
                raise self._version_outside(self.cursor.seq, change_id, got, min_version,
                                            max_version)
        else:
            # no cancel is delivered here (a version() added above a wait where a cancel
            # was delivered must not take it: the cancel handler would be skipped)
            entry = self._take(JournalKind.VERSION, change_id, cancel=False)
            if entry is not None:
                got = entry.outcome
                if not isinstance(got, int) or not min_version <= got <= max_version:
                    raise self.cursor.diverge(
                        self.cursor.seq - 1, JournalKind.VERSION, f"{change_id}={got}",
                        f"version {change_id!r} supporting only "
                        f"{min_version}..{max_version}")
            else:
                got = max_version if fixed is None else fixed
                if not min_version <= got <= max_version:  # (a fixed one only)
                    raise self._version_outside(self.cursor.seq - 1, change_id, got,
                                                min_version, max_version)
                self.record(self.buffered(), self.cursor.seq - 1, JournalKind.VERSION,
                            change_id, _dumps(got))
        if self.versions is None:
            self.versions = {}
        self.versions[change_id] = got
        return int(got)

    def _continue_swallowed(self) -> None:
        """The run returned after its code called ``workflow.continue_as_new``: the code
        caught its exception (README: it never returns). Said, as nothing else shows it:
        the run completes with what it returned, and no new run starts."""
        log.warning("workflow %s: its code returned after workflow.continue_as_new(), "
                    "whose exception it caught (a bare except: or an except "
                    "BaseException: that did not raise it again): the run completed with "
                    "what it returned, and no new run started", self.wid,
                    extra={"workflow_id": self.wid})

    def _code_missing(self, exc: Exception) -> NonDeterminismError:
        """The error of a workflow whose function this node cannot import (``exc``): it
        blocks, as a divergence does (its journal kept for a node that has the code), but
        says what is wrong: an import, not a changed path (kept, as ``diverge`` does)."""
        cursor = self.cursor
        if function_gone(self.name, exc) is not None:
            # its module imports (the node runs from the code's folder) without it:
            # renamed or removed by a deploy, as ``replay`` says; the file said, in case
            # it is another copy of the module than the one deployed
            module, _, qualname = self.name.partition(":")
            where = getattr(sys.modules.get(module), "__file__", None)
            said = (f"is not in its module{'' if where is None else f' ({where})'} on "
                    f"this node ({type(exc).__name__}: {exc}): renamed or removed? The "
                    f"workflow is blocked with its journal kept; keep the function under "
                    f"its name for workflows started before the change (an alias of the "
                    f"new function will do: {qualname} = new_name) and start a node with "
                    f"that code: it resumes there; or end it with `garrison workflows "
                    f"terminate`")
        else:
            said = (f"cannot be imported on this node ({type(exc).__name__}: {exc}). The "
                    f"workflow is blocked with its journal kept; start a node that can "
                    f"import it (run from your code's folder, or install it) and it "
                    f"resumes, or resume it with `garrison workflows retry`")
        err = NonDeterminismError(
            f"workflow {self.wid!r}: its function {self.name!r} {said}",
            workflow_id=self.wid, seq=0, recorded=f"workflow {self.name!r}",
            current=f"no such function ({type(exc).__name__}: {exc})")
        if cursor.error is None:
            cursor.error = err
        return cursor.error

    def _code_refused(self, refused: str) -> NonDeterminismError:
        """The error of a workflow whose function imports but is no workflow function
        now (``refused``: :func:`~garrison._targets.workflow_refused_now`'s words): it
        blocks, as one whose function is gone does, with the replay's words (kept)."""
        cursor = self.cursor
        if cursor.error is None:
            cursor.error = code_gone(self.wid, self.name, refused)
        return cursor.error

    def _version_outside(self, seq: int, change_id: str, fixed: int, min_version: int,
                         max_version: int) -> NonDeterminismError:
        """The error of a ``workflow.version(change_id, ...)`` call at ``seq`` whose range
        leaves out the version an earlier call fixed for this run (kept: the workflow
        blocks)."""
        cursor = self.cursor
        where = code_line()
        err = NonDeterminismError(
            f"workflow {self.wid!r} at seq {seq}: workflow.version({change_id!r}, "
            f"{min_version}, {max_version}) leaves out version {fixed}, which an earlier "
            f"call fixed for this run (a change id has one version per run: keep the "
            f"ranges of its calls overlapping, or use another change id){_at(where)}. "
            f"{cursor.advice}",
            workflow_id=self.wid, seq=seq, recorded=f"version {change_id!r}={fixed}",
            current=f"version {change_id!r} supporting only {min_version}..{max_version}",
            where=where)
        if cursor.error is None:
            cursor.error = err
        return cursor.error

    def _version_predates(self, seq: int, change_id: str, default: int, min_version: int,
                          max_version: int) -> NonDeterminismError:
        """The error of a ``workflow.version(change_id, ...)`` call at ``seq`` in a run
        recorded before the call existed, whose range leaves out the default version such
        a run gets (its old path was dropped while it was unfinished: kept, the workflow
        blocks rather than take the new path midway)."""
        cursor = self.cursor
        where = code_line()
        err = NonDeterminismError(
            f"workflow {self.wid!r} diverged from its journal at seq {seq}: "
            f"workflow.version({change_id!r}, {min_version}, {max_version}) leaves out "
            f"version {default}, the version of a run recorded before this call existed "
            f"(its code path is the one before the change): keep {default} in the range, "
            f"and its old path, until no such run is unfinished{_at(where)}. "
            f"{cursor.advice}",
            workflow_id=self.wid, seq=seq,
            recorded=f"no version {change_id!r} (a run from before the call: {default})",
            current=f"version {change_id!r} supporting only {min_version}..{max_version}",
            where=where)
        if cursor.error is None:
            cursor.error = err
        return cursor.error

    # ------------------------------------------------------------ attrs / state
    def set_attrs(self, search: dict[str, Any] | None, memo: dict[str, Any] | None) -> None:
        self._op("workflow.attrs()")
        if self.cursor.replaying:
            # stored the first time; kept, to store where the replay goes live if code
            # deployed since set other values here (``_settle_replayed``)
            kept = self.replayed = self.replayed or Replayed()
            kept.search.update(json_round_trip(search or {}, "search attributes")[1])
            kept.memo.update(json_round_trip(memo or {}, "memo")[1])
            return
        if self.replayed is not None and not self.cursor.in_history:
            self._settle_replayed()  # (first: this call's values come after them)
        check_text(search, "workflow.attrs(search=...): a search attribute")  # (jsonb)
        if search:
            for key, value in search.items():
                check_search_value(key, value, "workflow.attrs(search=...): search attribute")
        self.buffered().set_attributes(self.wid, search=search, memo=memo)

    def set_state(self, key: str, value: Any) -> None:
        self._op("workflow.set_state()")
        check_state_key(key, "workflow.set_state()")
        text, plain = json_round_trip(value, f"state {key!r} of workflow {self.wid!r}")
        if not self.cursor.replaying:
            check_text(key, "workflow.set_state(): a state key")
            check_key_size(key, "workflow.set_state(): a state key")
            if self.replayed is not None and not self.cursor.in_history:
                self._settle_replayed()  # (first: this value comes after them)
            self.state[key] = plain
            self.buffered().set_state(self.wid, key, RawJson(text))
        else:
            # stored the first time; kept, to store where the replay goes live if code
            # deployed since set another value here (``_settle_replayed``)
            self.state[key] = plain
            self.replayed = self.replayed or Replayed()
            self.replayed.state.add(key)

    def _settle_replayed(self) -> None:
        """Where a resumed run goes on past its journal: store the state and search
        attributes (and memo) its code set on the path the journal replayed, where they
        differ from what the store holds. Unchanged code set the values stored the first
        time, and stores nothing; code deployed since may have set others there, or
        keys the run before never set, which its own ``get_state`` reads: without
        this, ``handle.state()``, ``show`` and a search kept the old ones (or none).

        What the store holds was read with the run's load (``Replayed.held_*``: a node
        resuming many workflows reads their state's digests in one read, see
        ``_recovery.hold_states``), not here in the node's thread, once per run; only a
        run loaded alone (a tool's retry) reads its own here. A value is told from the
        stored one by its JSON text: one whose text differs alone (its dict's keys in
        another order) is written again, none that differs is left out."""
        replayed, self.replayed = self.replayed, None
        if replayed is None or self.cursor.last == 0 or not replayed.set_any():
            return
        tx: Transaction | None = None
        stored = replayed.held_state
        if stored is None and replayed.state:
            try:
                stored = self.store.state_digests([self.wid]).get(self.wid, {})
            except StoreError:  # (read refused: the replayed values are stored as they are)
                stored = {}
        for key in sorted(replayed.state):
            value = self.state.get(key, _ABSENT)
            if value is _ABSENT:
                continue
            text = json_round_trip(value, f"state {key!r} of workflow {self.wid!r}")[0]
            if stored and stored.get(key) == state_digest(text):
                continue
            try:
                check_text(key, "workflow.set_state(): a state key")
                check_key_size(key, "workflow.set_state(): a state key")
            except ValueError as exc:
                log.warning("workflow %s: state %r its code set on its replayed path is "
                            "not stored: %s", self.wid, key, exc,
                            extra={"workflow_id": self.wid})
                continue
            tx = tx or self.buffered()
            tx.set_state(self.wid, key, RawJson(text))
        if replayed.search or replayed.memo:
            changed: dict[str, dict[str, Any]] = {}
            for what, values, held in (("search", replayed.search, replayed.held_search),
                                       ("memo", replayed.memo, replayed.held_memo)):
                held = held or {}
                for key, value in values.items():
                    if (value is None and key not in held) or (
                            key in held and _same(held[key], value)):
                        continue
                    try:
                        if what == "search":
                            check_text({key: value}, "workflow.attrs(search=...): a search "
                                       "attribute")
                            check_search_value(key, value, "workflow.attrs(search=...): "
                                               "search attribute")
                    except ValueError as exc:
                        log.warning("workflow %s: search attribute %r its code set on its "
                                    "replayed path is not stored: %s", self.wid, key, exc,
                                    extra={"workflow_id": self.wid})
                        continue
                    changed.setdefault(what, {})[key] = value
            if changed:
                tx = tx or self.buffered()
                tx.set_attributes(self.wid, search=changed.get("search"),
                                  memo=changed.get("memo"))

    def get_state(self, key: str, default: Any = None) -> Any:
        check_state_key(key, "workflow.get_state()")
        value = self.state.get(key, _ABSENT)
        if value is _ABSENT:
            return default
        # a copy of a list or dict: an edit in place is no set_state (it would go into
        # a continued run's state while handle.state never shows it)
        return copy.deepcopy(value) if isinstance(value, dict | list) else value

    def continue_as_new(self, args: tuple[Any, ...]) -> NoReturn:
        self._op("workflow.continue_as_new()")
        # arguments the workflow cannot take fail here, at the call, as at a start: not
        # as a new run committed with them that fails at once (and at every retry)
        fn = self.fn
        problem = arity_problem(fn, self.code_name(), args,
                                "workflow.continue_as_new() gave it")
        if problem is not None:
            raise TypeError(problem)
        text = arguments_json(fn, args, f"the arguments of workflow {self.name}")
        restore_args(fn, _loads(text), f"workflow {self.code_name()}")  # typed: PayloadError
        self.continue_asked = True
        raise ContinueAsNew(args)


def _same(stored: Any, value: Any) -> bool:
    """Whether two JSON values are the same as stored (``True`` is not ``1``, nor ``1``
    ``1.0``: Python's ``==`` would take them for equal)."""
    return json.dumps(stored, sort_keys=True) == json.dumps(value, sort_keys=True)


def _at(where: str | None) -> str:
    """Where a ``workflow.version`` call that blocks its workflow stands, said at the end
    of its sentence (``""``: no code of the workflow under way)."""
    return "" if where is None else f" (the call: {where})"


def _not_the_workflow_s(exc: BaseException) -> bool:
    """An exception through the workflow's code that is not its failure: Ctrl-C, or
    the replay tool's stop (a ``ContinueAsNew`` mixed with other errors in a group is
    the workflow's failure)."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, EngineStop) and not isinstance(exc, ContinueAsNew))


def _continue_in(group: BaseExceptionGroup[BaseException]) -> ContinueAsNew | None:
    """The ``ContinueAsNew`` a group holds when that is all it holds (beside the
    cancellations it caused in the nursery around it); else ``None``."""
    match, rest = group.split(ContinueAsNew)
    if match is None or (rest is not None and rest.split(trio.Cancelled)[1] is not None):
        return None
    leaf: BaseException = match
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, ContinueAsNew) else None
