"""The durable workflow host: the node-facing side of workflows.

Starting (idempotently, by id), finishing (the end and the ``EXIT`` of a workflow
committed together), results and statuses, and the operations the node routes to a
host: delivery of messages and events, links, monitors, cancel and kill. The
instances (``_instance.py``) run the workflows; the store commits their writes (group
commit lives in ``garrison.persistence``).

Guarantees: an activity runs at least once and its outcome is recorded exactly once;
a message to a workflow is committed to its inbox before ``send`` returns; a
workflow's send is journaled in the same transaction as the receiver's inbox row.
Closing a node journals nothing: workflows resume on the next node that opens the
store.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from ... import _observe
from ..._errors import (
    DedupKeyTaken,
    NonDeterminismError,
    NoSuchWorkflow,
    PayloadError,
    ProcessError,
    StoreError,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowMoved,
    raised_again,
)
from ..._targets import check_entry, import_target, target_name
from ...actors._runtime import runtime_or_none
from ...actors._values import ErrorInfo, Event, EventKind, Message, Pid, ProcessInfo
from ...persistence import (
    Busy,
    DamagedRecord,
    InboxRecord,
    RawJson,
    Store,
    Transaction,
    WorkflowRecord,
    WorkflowStatus,
    no_match,
    run_blocking,
    to_json,
)
from .._kernel import (
    Caller,
    NodeContext,
    exit_fan_out,
    linked_failure,
    noproc,
    supervisor_stop,
)
from ._activities import ActivitiesInFlight
from ._attempts import Watch, end_of_attempt
from ._codec import (
    PLAIN,
    arguments_and_plain,
    arity_problem,
    plain_or_repr,
    restore_args,
    result_plain,
    result_unrestorable,
    return_hint,
    structure,
    workflow_result,
)
from ._core import added, cancelled_error
from ._elsewhere import Elsewhere
from ._ids import MAX_KEY_BYTES, check_key_size, check_text, check_workflow_id, new_run_id
from ._inbox import LINKED, InboxItem, exit_id, is_linked_row, linked_id
from ._instance import ActiveWorkflows, WorkflowInstance
from ._journal import Entry, JournalKind, event_to_plain, message_to_plain
from ._queue import (
    PRIORITY_MEMO,
    TOOL_START_MEMO,
    QueueLimits,
    WorkflowQueue,
    check_dedup,
    check_priority,
)
from ._recovery import (
    SUPERVISOR_MEMO,
    HeldWakes,
    ask_children_of_ended_soon,
    check_supervisors,
    discard_requests,
    end_instance,
    ended_by_terminate,
    ended_with_parent,
    named_damaged,
    parent_terminated,
    refresh,
    refresh_left,
    request_transaction,
    resume_all,
    terminate_request_id,
    watch_wakeups,
)
from ._retention import retention_text, run_retention
from ._scheduler import Scheduler
from ._waits import WallClock

__all__ = ["WorkflowHost", "check_workflow_id", "checked_start"]

log = logging.getLogger("garrison.workflow")


_dumps = json.dumps
_loads = json.loads
#: finished workflows whose outcome stays in memory (older ones are read from the store)
FINISHED_MEMORY = 10_000
#: of those, the characters of one's result JSON and error (message, traceback) kept
#: with it at most: a larger one keeps its status and name only, its result and error
#: read from the store when asked (it is there already; kept, 10,000 results of a
#: megabyte would hold 10 GB for the node's whole life)
FINISHED_HELD_MAX = 4096
#: and of all of them together: past it the oldest give theirs up the same way (the
#: newest, which handles ask for most, stay the fast path)
FINISHED_HELD_TOTAL = 8 * 2**20


#: how soon the store shows that a workflow is parked (``waiting`` / ``sleeping``)
PARKED_DELAY = 0.05
#: the parked statuses written in one transaction at most, the node's other tasks
#: running between two (``_record_parked_task``): thousands parked at once (a resume)
#: were one write of the node's thread
PARKED_CHUNK = 250
#: the longest wait before parked statuses a failed transaction left unwritten are
#: written again (``PARKED_DELAY`` doubled at each failure in a row, up to this)
PARKED_RETRY_MAX = 2.0
#: seconds a monitor's maker waits to read whether the monitored workflow has ended
#: (its row held by a transaction) before it logs a warning (it goes on waiting)
SETTLE_WARNING = 30.0
#: seconds between two looks at the system clock for a step (see ``WallClock.step``)
CLOCK_CHECK = 1.0
#: the children of a cancelled workflow flagged and woken together at most: the rest in
#: turns, one scheduler pass apart (``cancel_children``), so that a parent's cancel
#: does not run thousands of children's cancellations in one pass of the node's thread
CANCEL_CHUNK = 200

#: the statuses of a workflow that never runs again (a failed one may be retried)
_FOR_GOOD = frozenset({WorkflowStatus.COMPLETED, WorkflowStatus.CANCELLED})


#: the children a line of :meth:`WorkflowHost.ask_children_of_ended` names (the others
#: are counted)
NAMED_CHILDREN = 5
#: the ended parents :meth:`WorkflowHost.ask_children_of_ended` reads and asks the
#: children of together, the node's other tasks running between two such chunks
ASK_CHUNK = 50


def _parent_unread(wid: str, exc: DamagedRecord) -> None:
    """Name the ended parent ``wid`` whose row, journal or request cannot be read
    (``exc``): its children are not asked to end."""
    log.error("cannot read workflow %s, the parent of unfinished workflows: %s (%s); "
              "its children are not asked to end", wid, exc, exc.fault,
              extra={"workflow_id": wid})


def checked_start(node: Any, mocks: Mapping[str, Any], target: Any, args: tuple[Any, ...],
                  wid: str | None, *, derived: bool = False) -> tuple[Any, str, str, Any]:
    """What :meth:`WorkflowHost.start` refuses before it reads a store or the workflows
    it runs, in its order: a target that is no workflow function (or mocked as an
    activity), arguments it does not take or that have no JSON form, a result that
    cannot be restored, an invalid id (``derived``: a child's, see
    ``check_workflow_id``). Returns the function, its name, and its input as JSON text
    and plain. (The replay's host runs these too: a workflow's spawn that they refuse
    is not journaled, and a replay raises it at the same seq as a node.)"""
    fn = node.resolve_target(target)
    check_entry(getattr(node, "config", None), target, durable=True)  # a function.py
    name = target_name(fn)  # an activity is refused
    if name in mocks:  # (a test's workflow_env only)
        raise TypeError(f"cannot start {name} as a workflow: it is mocked as an activity "
                        "(mock_activity): mock the activities it calls instead")
    # bad arguments fail here, before anything is stored (as the CLI's start and a
    # schedule's input do), not as a workflow that is created and fails at once
    shown = name if wid is None else f"{name} (id {wid!r:.80})"
    problem = arity_problem(fn, shown, args, "it was given")
    if problem is not None:
        raise TypeError(problem)
    input_text, plain_input = arguments_and_plain(fn, args,
                                                  f"the arguments of workflow {shown}")
    restore_args(fn, plain_input, f"workflow {shown}")  # typed ones: checked now
    unrestorable = result_unrestorable(fn)  # (else found when it ends, having run)
    if unrestorable is not None:
        raise PayloadError(f"cannot restore the result of workflow {shown}: "
                           f"{unrestorable}")
    if wid is not None:
        # (a child's id, derived from its parent's, may be a little longer than one given)
        check_workflow_id(wid, derived=derived)
    return fn, name, input_text, plain_input


def cancelled_too(wf: WorkflowInstance, error: ErrorInfo) -> bool:
    """Whether the linked failure ``error`` (the end of a workflow linked to ``wf``,
    which does not trap links) leaves ``wf`` to its own cancel: ``error`` is a cancel
    (``WorkflowCancelled``: the linked workflow was cancelled) and ``wf`` has a cancel
    of its own under way (a child cancelled with its parent, flagged as the parent's
    cancel arrived). It ends ``cancelled`` then, its handler not cut short, whichever
    of the two ends is committed first (a race between them made the outcome vary, and
    a node resuming the workflows after a crash decided it another way again)."""
    return error.type == "WorkflowCancelled" and (
        wf.cancel_requested or wf.cancel_at is not None or wf.cancel_delivered)


def _spawned_after_cancel(wf: WorkflowInstance) -> frozenset[str]:
    """The ids of the children ``wf``'s journal records as spawned after its cancel was
    delivered (its compensation: a restart's ``cancel_children`` of a parent cancelled
    before it must not cancel them); none before that cancel is recorded."""
    return _spawned_after_cancel_in(wf.cursor.entries)


def _spawned_after_cancel_in(entries: Mapping[int, Entry]) -> frozenset[str]:
    """:func:`_spawned_after_cancel` of a journal's ``entries`` (by seq)."""
    cancel = min((seq for seq, e in entries.items() if e.kind == JournalKind.CANCEL),
                 default=None)
    if cancel is None:
        return frozenset()
    return frozenset(
        Pid.parse(e.outcome["pid"]).id for seq, e in entries.items()
        if seq > cancel and e.kind == JournalKind.SPAWN and isinstance(e.outcome, dict)
        and isinstance(e.outcome.get("pid"), str))


@attrs.frozen
class _Unrun:
    """A child another node would run of a cancelled or terminated tree, waiting in the
    store unclaimed (``record``, its row as read): it ends at once, never run, with
    ``status`` and ``error``; ``at``: when its parent's cancel was asked."""

    record: WorkflowRecord
    status: WorkflowStatus
    error: ErrorInfo
    at: float | None


def _start_memo(supervisor: Pid | None, priority: int, tool: bool) -> dict[str, Any] | None:
    """The memo a workflow is created with: its supervisor, if any, its priority
    unless 0 (kept for a retry, see ``_queue.PRIORITY_MEMO``), and, by a ``tool`` (a
    node on a store it does not hold), ``_queue.TOOL_START_MEMO``."""
    memo: dict[str, Any] = {}
    if supervisor:
        memo[SUPERVISOR_MEMO] = str(supervisor)
    if priority:
        memo[PRIORITY_MEMO] = priority
    if tool:
        memo[TOOL_START_MEMO] = True
    return memo or None


def _cut(values: list[Any], limit: int = 200) -> str:
    """Arguments as JSON for a log line, cut after ``limit`` characters."""
    text = json.dumps(values, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _held_size(result_json: str | None, error: ErrorInfo | None) -> int:
    """The characters a finished workflow's entry would hold: its result JSON and its
    error's text (the traceback, mostly)."""
    size = 0 if result_json is None else len(result_json)
    if error is not None:
        size += len(error.type) + len(error.message) + len(error.traceback)
    return size


class WorkflowHost:
    """A durable host: workflows journaled to ``store``.

    ``run`` serves; ``resume`` starts every unfinished workflow of the store (the node
    calls it once its services run, so resumed workflows find them), then its
    schedules. ``limits`` make the host a queue (``_queue.py``)."""

    durable = True

    def __init__(self, node: NodeContext, name: str, store: Store,
                 limits: QueueLimits | None = None, retention: float | None = None) -> None:
        self.node = node
        self.name = name
        self.store = store
        #: seconds an ended workflow is kept in the store before this host prunes it
        #: (``_retention``); ``None``: kept for ever
        self.retention = retention
        self.active = ActiveWorkflows()
        #: loaded supervised children whose supervisor runs on another node of the
        #: cluster, not known to have ended: ``{workflow id: supervisor pid}``
        #: (checked again when that node runs a newer incarnation: ``_recovery``)
        self.supervised_elsewhere: dict[str, Pid] = {}
        #: recently finished: id -> (status value, result JSON, error, name, held);
        #: plain strings, so that an entry without an error holds nothing the garbage
        #: collector must walk (it stops tracking such a tuple), up to FINISHED_MEMORY
        #: of them for the node's whole life; ``held`` false: the result and error
        #: (``None`` here) are read from the store (see ``FINISHED_HELD_MAX``)
        self.finished: dict[str, tuple[str, str | None, ErrorInfo | None, str, bool]] = {}
        #: the entries of ``finished`` that hold a result or error: id -> its size
        #: (oldest first), and their total, kept under FINISHED_HELD_TOTAL
        self._held: dict[str, int] = {}
        self._held_total = 0
        #: when each end of ``finished`` was remembered (the host's clock, at or just
        #: after the ``updated`` its end wrote): a retention pass forgets the ends
        #: remembered before its cutoff, which another node may have pruned
        self._ended_at: dict[str, float] = {}
        #: workflows another node of the cluster runs that this node's processes monitor
        #: or call (see ``_elsewhere``)
        self.elsewhere = Elsewhere(self)
        self.names: dict[str, set[str]] = {}
        self.clock = WallClock()  # hosts are made inside trio
        #: stand-ins for activities by journal name (``garrison.testing``): name -> function
        self.activity_mocks: dict[str, Callable[..., Any]] = {}
        #: workflows that parked as the node stopped: their status then
        self.parked_at_stop: dict[WorkflowInstance, WorkflowStatus] = {}
        #: a cancelled workflow -> its children flagged then (see ``finish``)
        self._cancelled_children: dict[str, list[str]] = {}
        #: in a cluster, while ``cancel_children`` goes over a tree: the workflows of it
        #: cancelled so far, with their ``at``, whose children elsewhere it asks for last
        self._cancelled_tree: list[tuple[WorkflowInstance, float | None]] | None = None
        #: in a cluster, cancelled workflows (id -> the workflow, its cancel's ``at``)
        #: whose children elsewhere were not all asked: the store's read or a write
        #: failed. Asked again with the next tree's (a cancel, a resume), at a repeated
        #: ``handle.cancel()`` and at their end (see ``_ask_elsewhere``)
        self._elsewhere_unasked: dict[str, tuple[WorkflowInstance, float | None]] = {}
        #: and terminated workflows (id -> the workflow) whose children elsewhere were
        #: not all asked to end, asked again alike (and at a repeated terminate)
        self._ends_unasked: dict[str, WorkflowInstance] = {}
        #: counts the activity attempts running (``garrison.testing``), or ``None``
        self.in_flight: ActivitiesInFlight | None = None
        #: a store opened by a tool (``lock=False``): another node runs the workflows;
        #: this host only writes to the store (the owner picks the writes up) and reads it
        self.client = not store.owner
        #: the cluster this host's store belongs to (``garrison/cluster/``), or ``None``:
        #: which workflows run here (see ``_ownership.py``)
        self.ownership: Any = None
        self.closing = False
        #: workflows the store's error stopped while the node stopped, and the last
        #: error: told in one line at the end of the stop, not one per workflow
        self.unrecorded_at_stop: list[str] = []
        #: the plain (sync) activity calls running in worker threads now, each as
        #: (workflow id, activity name), written by those threads: a stop abandons them
        #: (trio cannot end a thread), and says so
        self.in_threads: dict[object, tuple[str, str]] = {}
        self.store_error_at_stop: StoreError | None = None
        #: set once ``shutdown`` has stopped every workflow here: a ``result()`` waiting
        #: for one that did not end then raises (nothing here will end it)
        self.stopped = trio.Event()
        #: set once ``run`` opened the host's nursery (see ``until_serving``)
        self._serving = trio.Event()
        #: the instances a ``result()`` waits for (woken, unset, by ``shutdown``: held
        #: in the queue or dropped from it, one may have left ``active`` unended)
        self._awaited: dict[WorkflowInstance, int] = {}
        self.resumed = False
        #: an ask of the children of ended parents runs in the background (see
        #: ``_recovery.ask_children_of_ended_soon``), and the nodes lost that asked
        #: again meanwhile ("" for none): it runs once more for them
        self.asking_ended = False
        self.ask_ended_again: set[str] = set()
        #: ``resume`` began (``resumed`` is set once it has loaded every workflow)
        self._resuming = False
        #: links to unfinished workflows of the store made before this host resumed
        #: them (by the workflows of a workflow host the node resumed first): each
        #: holds from its workflow's load (``_recovery.load``)
        self.early_links: dict[str, set[Pid]] = {}
        #: the ends of the other sides of those links, before that load: acted on
        #: once the host resumed (``target, dead, error`` of ``linked_exit``)
        self._early_exits: list[tuple[Pid, Pid, ErrorInfo | None]] = []
        self._nursery: trio.Nursery | None = None
        #: ids whose start is being committed: the event a second start of the same id
        #: waits for (made by the first such start; ``None`` until then)
        self._starting: dict[str, trio.Event | None] = {}
        #: ids of those a refresh left to their start (a tool wrote for the workflow as
        #: its start was committed: a terminate, a signal): read once its instance is
        #: active, or as the start ends without one
        self._woken_starting: set[str] = set()
        #: the refreshes of woken workflows that failed, tried again later, while the
        #: wakeups' watch runs (``_recovery.watch_wakeups``)
        self.held_wakes: HeldWakes | None = None
        #: writes asked for by synchronous callers, committed in order by one task
        self._soon: list[tuple[Transaction, Callable[[list[Any]], None] | None]] = []
        self._soon_ready = trio.Event()
        #: held while what ``write_soon`` holds is written (the stop's own call waits
        #: for a write the write-soon task has in flight: the store closes after it)
        self._soon_writing = trio.Lock()
        #: cancelled children not woken yet, woken in turns by ``_wake_task``
        self._to_wake: collections.deque[WorkflowInstance] = collections.deque()
        self._waking = False
        #: ``control`` inbox rows asking nothing more, whose consume is being written
        self.discarding: set[int] = set()
        #: workflows whose row or journal is damaged (a DamagedRecord), named in the log
        #: once and left unrun: what was said of each (their ``result()`` raises it)
        self.damaged: dict[str, DamagedRecord] = {}
        #: parked workflows whose status the store may not show yet
        self._parked: set[WorkflowInstance] = set()
        #: parked workflows whose status a failed transaction left unwritten (their
        #: ``stored_status`` says parked: if one wakes, its commit writes ``running``)
        self._parked_unwritten: set[WorkflowInstance] = set()
        #: workflows that left an activity's outcome in their buffer (``outcome_left``)
        self._left: list[WorkflowInstance] = []
        self._parked_ready = trio.Event()
        #: workflows ``started`` and ``resumed`` here, and finished by final status
        self.counts: collections.Counter[str] = collections.Counter()
        #: limits, priorities, dedup keys: workflows waiting ``pending`` for a slot
        self.queue = WorkflowQueue(self, limits)
        #: the store's schedules (runs once the host resumed)
        self.scheduler = Scheduler(self)

    # ------------------------------------------------------------ running
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until cancelled (workflows run in this host's nursery)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._serving.set()
            if not self.client:  # (what tools write is watched once it resumed)
                nursery.start_soon(self._write_soon_task)
                nursery.start_soon(self._record_parked_task)
                await nursery.start(self.queue.run)
                if self.clock.follows_system:
                    nursery.start_soon(self._follow_clock_task)
            task_status.started()
            await trio.sleep_forever()

    async def _follow_clock_task(self) -> None:
        """Follow steps of the system clock (NTP, a resumed VM): durable timers,
        schedules, rate windows and ``workflow.now()`` read the corrected time within
        :data:`CLOCK_CHECK`, not only after a restart; what waits for a time asks again
        (its trio deadline was reckoned on the old reading)."""
        while True:
            await trio.sleep(CLOCK_CHECK)
            if not self.clock.follows_system:  # (replaced: garrison.testing's, virtual)
                return
            step = self.clock.step()
            if step:
                self.clock_stepped(step)

    def clock_stepped(self, step: float) -> None:
        """The clock stepped ``step`` seconds (its reading already follows it): said,
        and what waits for a time asks again; a step back makes the schedules tick from
        the new reading (their next ticks were reckoned on the old one)."""
        log.warning("host %s: the system clock stepped %+.1fs: its timers, schedules "
                    "and workflow.now() follow it", self.name, step)
        for wf in list(self.active.values()):
            if wf.wait_deadline is not None:
                wf.wake()
        self.scheduler.wake(set_back=-step if step < 0 else 0.0)
        self.queue.poke()

    def store_failed(self, exc: StoreError) -> None:
        """The store became unusable for good: every workflow stops at its next durable
        operation (parked ones at once), nothing recorded; they resume on a node with a
        working store."""
        log.error("host %s: its store failed: %s; its workflows stop", self.name, exc,
                  extra={"error": ErrorInfo.from_exception(exc)})
        for wf in list(self.active.values()):
            if wf.store_error is None:
                wf.store_error = exc
                wf.wake()

    # ------------------------------------------------------------ background writes
    def write_soon(self, tx: Transaction,
                   then: Callable[[list[Any]], None] | None = None) -> None:
        """Commit ``tx`` for a synchronous caller without making it wait for the store:
        one task commits these in order (``then(results)`` after each). While the node
        closes, the write happens at once."""
        if self.closing or self._nursery is None:
            results = self.store.write(tx)
            if then is not None:
                then(results)
            return
        self._soon.append((tx, then))
        self._soon_ready.set()

    async def _write_soon_task(self) -> None:
        while True:
            await self._soon_ready.wait()
            await self._write_held()

    async def _write_held(self) -> None:
        """Commit, in order, what ``write_soon`` holds (once the write under way, if
        any, is done)."""
        async with self._soon_writing:
            self._soon_ready = trio.Event()
            while self._soon:
                tx, then = self._soon.pop(0)
                try:
                    results = await self.store.commit(tx)
                except WorkflowMoved as exc:  # (given up here, or taken over: its new
                    # owner has it, and writes what it needs as it loads it)
                    log.info("host %s: a write for workflow %s was refused, as another "
                             "node of the cluster runs it now", self.name, exc.workflow_id,
                             extra={"workflow_id": exc.workflow_id})
                    continue
                except Exception as exc:
                    log.error("host %s could not write %r: %s", self.name, tx, exc)
                    continue
                if then is not None:
                    then(results)

    def parked(self, wf: WorkflowInstance) -> None:
        """``wf`` parked (``waiting`` or ``sleeping``): the store will say so shortly."""
        self._parked.add(wf)
        self._parked_ready.set()

    def outcome_left(self, wf: WorkflowInstance) -> None:
        """``wf`` left an activity's outcome in its buffer, to ride with its next commit
        (see ``Activities.activity``): if that has not come within ``PARKED_DELAY``
        (the code awaits something that is not the workflow's own, say), it is flushed
        then. (Each workflow is named once until then: ``wf.left_outcome``.)"""
        self._left.append(wf)
        if not self._parked_ready.is_set():
            self._parked_ready.set()

    async def _record_parked_task(self) -> None:
        """Write the status of workflows that stay parked, every ``PARKED_DELAY`` at
        most: ``garrison workflows list`` (which reads the store) agrees with
        ``node.workflows()``, at no extra commit per step. A workflow that wakes writes
        ``running`` with its next commit. (And flush what ``outcome_left`` names and is
        still buffered.)

        ``PARKED_CHUNK`` statuses a transaction at most, the node's other tasks running
        between two: the thousands that park as a node resumes were one write in the
        node's thread, its event loop still for a second on PostgreSQL. Each is read as
        its transaction is made (one that woke meanwhile is left to its own commit,
        which comes after: commits land in call order). What a crash leaves between two
        is a store of ``running`` and parked ones, all unfinished: the next node resumes
        each. A failed transaction is logged, and its workflows and those after it are
        written at the next round (``PARKED_DELAY`` later, doubled at each failure in a
        row up to ``PARKED_RETRY_MAX``): left for some other workflow to park, they read
        ``running`` in the store for as long as they stayed parked."""
        failures = 0
        while True:
            await self._parked_ready.wait()
            await trio.sleep(min(PARKED_DELAY * 2 ** failures, PARKED_RETRY_MAX))
            self._parked_ready = trio.Event()
            left, self._left = self._left, []
            for wf in left:
                wf.left_outcome = False
                if wf.buffer_left():
                    wf.flush_soon()
            parked, self._parked = list(self._parked), set()
            unwritten = self._parked_unwritten
            tx = Transaction()
            chunk: list[WorkflowInstance] = []
            for n, wf in enumerate(parked, 1):
                status = wf.status
                if (status in (WorkflowStatus.WAITING, WorkflowStatus.SLEEPING)
                        and not wf.done.is_set()
                        and (wf.stored_status is not status or wf in unwritten)):
                    tx.update_workflow(wf.wid, status=status)
                    wf.stored_status = status
                    chunk.append(wf)
                else:  # (woke, or ended: its own commit says so)
                    unwritten.discard(wf)
                if len(chunk) == PARKED_CHUNK or (n == len(parked) and chunk):
                    failed = await self._commit_statuses(tx, background=True)
                    if failed is not None:
                        self._write_parked_again(chunk, parked[n:], failed)
                        failures += 1
                        break
                    unwritten.difference_update(chunk)
                    tx, chunk = Transaction(), []
                    if n < len(parked):
                        await trio.lowlevel.checkpoint()
            else:
                failures = 0

    def _write_parked_again(self, chunk: list[WorkflowInstance],
                            rest: list[WorkflowInstance], failed: Exception) -> None:
        """A transaction of parked statuses failed (``failed``): its workflows
        (``chunk``; not one another node runs now) and those not reached (``rest``) are
        written at the next round."""
        moved = failed.workflow_id if isinstance(failed, WorkflowMoved) else None
        chunk = [wf for wf in chunk if wf.wid != moved]
        self._parked_unwritten.update(chunk)
        self._parked.update(chunk, rest)
        self._parked_ready.set()

    async def _commit_statuses(self, tx: Transaction,
                               background: bool = False) -> Exception | None:
        """Commit ``tx``, statuses of parked workflows only: a failure is logged (each
        one's next commit, or the next node, sets it right), but a background one's
        once the host stops (the stop's own commit of them tells). The failure, or
        ``None`` if it was written."""
        if not tx or self.client:
            return None
        try:
            await self.store.commit(tx)
        except Exception as exc:
            if not (background and self.closing):
                log.warning("could not record the statuses of parked workflows: %s", exc)
            return exc
        return None

    async def resume(self, *, stopping: Callable[[], bool] = lambda: False) -> None:
        """Resume every unfinished workflow of the store (once; before it returns their
        stored status reads ``running``), then run the schedules -- unless ``stopping()``
        says the node's start was interrupted meanwhile (the workflows resumed run on
        until the stop parks them; no schedule ticks)."""
        if self.resumed or self._resuming or self.client:
            return
        self._resuming = True
        assert self._nursery is not None
        try:
            # (read a few hundred at a time, the node's other tasks running between:
            # until it is done, what they send or link to a workflow of the store not
            # loaded yet is kept for its load, as before the resume began)
            await resume_all(self, self._nursery)
        finally:
            self.resumed = True
        self.early_links.clear()  # (of workflows it did not load: none runs here)
        early, self._early_exits = self._early_exits, []
        for target, dead, error in early:
            self.linked_exit(target, dead, error)
        # What tools wrote is taken from here on: a write from before is in the store
        # that resume_all read, and it took each workflow in its turn (a pending one in
        # queue order, after the resumed ones; a wake-up taken earlier could start one
        # out of its turn, or end a cancelled one before the queue ran).
        self._nursery.start_soon(watch_wakeups, self)
        if not stopping():
            await self._nursery.start(self.scheduler.run)
            if self.retention is not None:
                self._nursery.start_soon(run_retention, self, self.retention)

    def starting(self, wid: str) -> bool:
        """True while a start of ``wid`` is being committed on this host (it will run it:
        recovery and wake-ups leave it alone)."""
        return wid in self._starting

    def woken_starting(self, wid: str) -> None:
        """A refresh of ``wid``, whose start is being committed here, was left to that
        start (``_recovery.refresh``): once the start made its instance active, it reads
        what tools wrote for it meanwhile (a terminate, a signal). Loaded by the refresh
        instead, it was a second instance beside the start's, which ended by the
        terminate unseen by the start's watchers, or was overwritten by the start's and
        never ended; left alone, what the tool wrote waited for the next wakeup."""
        self._woken_starting.add(wid)

    def _refresh_started(self, wid: str) -> None:
        """The start of ``wid`` made its instance active, or is over without one (it
        failed, or its commit's answer was lost: the workflow may be in the store all
        the same): what a refresh left to it (:meth:`woken_starting`) is read now, as
        that refresh would have. A failure of the store is not the start's: the read is
        tried again later, as a wakeup's refresh that failed (``refresh_left``)."""
        if wid not in self._woken_starting:
            return
        self._woken_starting.discard(wid)
        if self.closing:
            return  # (what it wrote is read where the workflow resumes)
        refresh_left(self, wid)

    @property
    def serving(self) -> bool:
        """Whether the host runs (its tasks' nursery is open)."""
        return self._nursery is not None

    async def until_serving(self) -> None:
        """Wait until the host runs (a cluster's claims can come before it does)."""
        await self._serving.wait()

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of this host (it is cancelled when the host
        closes)."""
        if self._nursery is None:
            raise RuntimeError(f"workflow host {self.name!r} is not running")
        self._nursery.start_soon(fn, *args)

    def run_instance(self, wf: WorkflowInstance) -> None:
        """Make ``wf`` active and start its task."""
        self.active[wf.wid] = wf
        self.queue.started(wf)
        self.start_soon(wf.main)

    def exited(self, wf: WorkflowInstance) -> None:
        """``wf``'s task ended (it finished, was blocked, or the node closes): its queue
        slot frees, a schedule tick buffered behind it may start."""
        self.queue.left(wf)
        self.scheduler.ended(wf)

    async def complete_promise(self, wid: str, name: str, status: str, value: Any) -> None:
        """Resolve or reject a workflow's promise (``PromiseAlreadyCompleted`` the second
        time); a waiting workflow wakes up."""
        if no_match((wid,), nul=True):
            raise NoSuchWorkflow(wid)  # (no store keeps such an id: none has it)
        if len(name) * 4 > MAX_KEY_BYTES and await run_blocking(
                self.store.get_promise, wid, name) is None:
            # over the limit and not declared (an older garrison's store may hold one
            # it declared): no workflow can declare it, and no index can hold it
            check_key_size(name, "a promise name")
        if status == "resolved":
            text = to_json(value, what=f"the value of promise {name!r} of workflow {wid!r}")
            tx = Transaction().resolve_promise(wid, name, RawJson(text))
            stored: Any = _loads(text)
        else:
            tx = Transaction().reject_promise(wid, name, str(value))
            stored = str(value)
        await self.store.commit(tx)
        wf = self.active.get(wid)
        if wf is not None:
            wf.keep_promise(name, (status, stored))
            if wf.promise_times is None:
                wf.promise_times = {}
            wf.promise_times[name] = self.clock.now()
            wf.wake()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------ starting
    async def start(self, target: Any, args: tuple[Any, ...], *, wid: str | None,
                    parent: Pid | None = None,
                    prefix: Callable[[], Transaction] | None = None,
                    journal: tuple[WorkflowInstance, int, str] | None = None,
                    derived: bool = False,
                    watcher: Pid | None = None, process_watcher: Pid | None = None,
                    process_link: Pid | None = None, priority: int = 0,
                    dedup: str | None = None,
                    on_created: Callable[[], None] | None = None,
                    supervisor: Pid | None = None) -> Pid:
        """Create (idempotently) and start a workflow; returns its pid.

        Idempotent under concurrency too: a start of an id whose start is being
        committed waits for it and returns the same pid (one execution). Over the
        host's limits it waits ``pending`` in the queue, by ``priority`` (higher first)
        then start order; while a workflow started with ``dedup`` is unfinished, a start
        with that key returns its pid (``_queue.py``). ``on_created`` is called when
        this start created the workflow (not when it found it, here or in the store),
        as the host counts it in ``started``. ``prefix`` gives the operations committed
        first in the start's transaction (a parent's buffered records, a schedule's last
        run); it is called only once nothing can refuse the start any more, so a refused
        start leaves them where they were."""
        fn, name, input_text, plain_input = checked_start(
            self.node, self.activity_mocks, target, args, wid,
            derived=journal is not None and derived)
        named = wid is not None
        wid = new_run_id() if wid is None else wid
        check_priority(priority)
        check_dedup(dedup)
        while True:
            while wid in self._starting:  # the same id is being started right now
                # (again after the wait: when that start was cancelled, another waiter
                # woken with this one may have taken the id, and a later one wait for it)
                starting = self._starting[wid]
                if starting is None:
                    starting = self._starting[wid] = trio.Event()
                await starting.wait()
            if wid in self.active or wid in self.finished:  # an existing id wins
                if wid not in self.active and await self._pruned_since(wid):
                    continue  # (its end, remembered here, was pruned: the id is free)
                if journal is not None:
                    raise ValueError(f"cannot start child workflow {wid!r}: the id is taken")
                self._exists_as_another(wid, name, plain_input)
                pid = Pid(self.name, wid)
                self._attach(pid, process_watcher, process_link)
                if self._spawned_by_workflow(parent):
                    await self._child_waiting(wid)
                await trio.lowlevel.checkpoint()
                return pid
            holder = None if dedup is None else self.queue.holder(dedup)
            if holder is None or holder == wid:
                break
            # a workflow this node knows holds the key: the answer, unless the id exists
            # (only in the store: the store's rule, by which a node that does not know
            # the key's holder goes, is the id first, then the key). A fresh id cannot.
            if not named or await run_blocking(self.store.get_workflow, wid) is None:
                self._attach(Pid(self.name, holder), process_watcher, process_link)
                await trio.lowlevel.checkpoint()
                return Pid(self.name, holder)
            if wid not in self._starting and wid not in self.active \
                    and wid not in self.finished:
                break  # (else a start or a load of it came meanwhile: look again)
        self._starting[wid] = None
        # (created in this frame, not in a coroutine of its own: this frame is the one
        # that waits for its commit's batch, one object fewer held by each waiting start)
        try:
            tx = Transaction()
            now = self.clock.now()
            run_id = new_run_id()
            trace = _observe.carrier() if _observe.tracing else None
            # a child workflow starts at once (its parent may wait for it); others may queue
            child = journal is not None or self._spawned_by_workflow(parent)
            # (a node on an unlocked store: ``pending``, as a tool's start, for the node that
            # holds the store to admit under its own limits; a host that closes, its
            # workflows stopped or stopping: ``pending`` for the next node, not run here as
            # the store closes)
            admitted = child or (not self.client and not self.closing and self.queue.admit(wid))
            # the host's rate or cluster limit: the store admits it in this transaction
            asked = admitted and not child and self.queue.checks_store
            tx.create_workflow(wid, name, RawJson(input_text),
                               status=WorkflowStatus.RUNNING if admitted and not asked
                               else WorkflowStatus.PENDING,
                               parent=parent, run_id=run_id, host=self.name, time=now,
                               trace=trace,
                               memo=_start_memo(supervisor, priority, self.client))
            queued = -1
            if dedup is not None or not admitted or asked:  # (a tool's start: a row too)
                tx.enqueue(wid, run_id, priority=priority, dedup=dedup, time=now)
                queued = len(tx) - 1
            admission = self.queue.admission(tx, [(wid, run_id)]) if asked else -1
            if watcher is not None:
                tx.add_monitor(wid, watcher)
            if journal is not None:
                parent_wf, seq, label = journal
                parent_wf.record(tx, seq, JournalKind.SPAWN, label,
                                 _dumps({"pid": str(Pid(self.name, wid))}))
            n = 0  # (the index of the workflow's create in the transaction)
            if prefix is not None:  # (taken now: nothing refuses the start past this point)
                head = prefix()
                n = len(head)
                tx = head.extend(tx)
                queued = queued + n if queued >= 0 else queued
                admission = admission + n if admission >= 0 else admission
            if journal is not None:  # its parent's run writes its start: fenced by that run
                tx.epoch = journal[0].epoch
            task = trio.lowlevel.current_task()
            passes = getattr(task, "_schedule_points", None)
            # (through the wait for its batch, which a young garbage collection meets with
            # a thousand starting: the arguments in a tuple, which the collector lets go
            # at its first look when they hold no container, where their list stayed
            # tracked; and no pid yet, made once committed)
            plain_input = tuple(plain_input)
            try:
                results = await self.store.commit(tx)
            except DedupKeyTaken as taken:  # another node's start holds the key
                self.queue.unreserve(wid)
                self._attach(Pid(self.name, taken.workflow_id), process_watcher, process_link)
                return Pid(self.name, taken.workflow_id)
            except BaseException:
                self.queue.unreserve(wid)
                raise
            plain_input = list(plain_input)
            pid = Pid(self.name, wid)
            created = results[n]
            if not created:
                self._exists_as_another(wid, name, plain_input)
            if self.client:  # the node that holds the store's lock runs it
                if created and on_created is not None:
                    on_created()
                return pid
            if asked and created and wid not in results[admission]:
                # this node has room, the host (its rate, or the cluster) has not: it waits
                # here for the store to admit it
                self.queue.unreserve(wid)
                self.queue.refused()
                admitted = False
            if created and self.ownership is not None and (
                    self.ownership.draining or (not admitted and not asked)):
                # draining, or full here: it waits unowned and a node with room takes it
                self.counts["started"] += 1  # started here (its queue row says so elsewhere)
                if on_created is not None:
                    on_created()
                self.queue.unreserve(wid)
                self.queue.stale()  # (one more pending in the store)
                self.ownership.stopped(wid)
                self._late_child(wid, parent)
                return pid
            if queued >= 0:
                self.queue.created(wid, results[queued], dedup)
            if not created:
                self.queue.unreserve(wid)
                if wid not in self.active:
                    record = self.store.get_workflow(wid)
                    if record is not None and not WorkflowStatus(record.status).finished:
                        # unfinished but not loaded (a tool created it): run it now
                        refresh(self, wid, starting=True)
                self._attach(pid, process_watcher, process_link)
                if child:
                    await self._child_waiting(wid)
                return pid
            wf = WorkflowInstance(self, wid, name, plain_input, run_id=run_id, attempt=1,
                                  parent=parent, created=now, journal=[], pending=(), timers={},
                                  cancel_requested=False,
                                  watchers=[watcher] if watcher is not None else None, state={})
            wf.fn = fn
            wf.trace = trace
            if prefix is None and admitted:
                # the start's transaction, committed, is the one its steps fill (see
                # ``WorkflowCore.spare``): not a new one and its list at its first step,
                # which with a thousand starting at once meet young collections. (Not
                # when it extended a parent's buffer, the parent's; nor for one that
                # waits in the queue: held there, for every collection to walk)
                wf.spare(tx)
            if queued < 0:
                wf.may_be_queued = False  # its end has no queue row to drop
            self.counts["started"] += 1
            if on_created is not None:
                on_created()
            if process_watcher is not None:
                wf.watchers = added(wf.watchers, process_watcher)
            if process_link is not None:
                wf.links = added(wf.links, process_link)
            if admitted:
                self.run_instance(wf)
            else:
                self.queue.hold(wf, priority, results[queued])
            self._refresh_started(wid)
            self._late_child(wid, parent)
            if passes is not None and getattr(task, "_schedule_points", None) != passes:
                # the commit waited for a batch (the scheduler ran meanwhile): a loop of
                # starts goes straight on to its next commit, which the workflows released
                # with this batch join, rather than spend a scheduler pass first
                await trio.lowlevel.checkpoint_if_cancelled()
            else:
                await trio.lowlevel.checkpoint()
            return pid
        finally:
            done = self._starting.pop(wid, None)
            if done is not None:
                done.set()
            self._refresh_started(wid)  # (left without an instance: read as it is now)

    def _spawned_by_workflow(self, parent: Pid | None) -> bool:
        """True if ``parent`` (a start's) is a workflow: what it starts is its child."""
        return parent is not None and self.node.host(parent.host).durable

    async def _child_waiting(self, wid: str) -> None:
        """A workflow spawned ``wid`` by its id, and found it existing: if it waits
        ``pending``, it starts now, outside the limits, as a child workflow does (a spawn
        is idempotent by id, but its spawner, holding a slot, would wait for ever for one
        queued behind it). Waiting in this node's queue, it starts at once; in a cluster,
        waiting in the store unclaimed, this node claims it (at once, whatever its room)
        and starts it so. One running, finished, or waiting on another live node of the
        cluster is left as it is."""
        wf = self.active.get(wid)
        if wf is not None:  # (waiting, or being offered to the store: it decides)
            await self.queue.start_child(wf)
            return
        ownership = self.ownership
        if ownership is None or self.closing:
            return
        record = await run_blocking(self.store.get_workflow, wid)
        if record is not None and record.status == WorkflowStatus.PENDING \
                and wid not in self.active:
            self.queue.children.add(wid)
            ownership.claim_now(wid)

    def _late_child(self, wid: str, parent: Pid | None) -> None:
        """Workflow ``wid``, started by ``parent``, was created (it runs
        here, or, on a draining node of a cluster, waits in the store for another): if
        the parent was cancelled or terminated while the child's start was being
        committed, its ``cancel_children`` or ``end_instance`` went over its children
        before this one was there; it goes the same way now. (A child a cancelled parent
        starts once its code has seen the cancel, a compensation, runs.)"""
        if parent is None or parent.host != self.name:
            return  # (started from outside, by a process, or by another host's workflow)
        p = self.active.get(parent.id)
        if p is None or p.pid != parent:
            return
        if p.children_end is not None:
            child = self.active.get(wid)
            if child is not None:
                end_instance(self, child, p.children_end)
            else:  # (asked in the store, as end_instance asks for a child elsewhere)
                self.store.write(request_transaction(wid, p.children_end, 1))
        elif p.cancel_requested and not p.cancel_delivered:
            self._cancelled_children.setdefault(p.wid, []).append(wid)
            self.request_cancel(wid)

    async def spawn_process(self, target: Any, args: tuple[Any, ...], *, parent: Pid | None,
                            link: Pid | None, monitor: Pid | None,
                            wid: str | None = None, supervisor: Pid | None = None) -> Pid:
        """``process.spawn(..., host="workflows", id=...)`` from a process: a workflow,
        started idempotently by id (the monitor and link apply to an existing one too).
        ``supervisor``: the child of that supervisor (recorded in its memo, see
        ``_recovery.supervisor_of``)."""
        return await self.start(target, args, wid=wid, parent=parent, process_watcher=monitor,
                                process_link=link, supervisor=supervisor)

    def _attach(self, pid: Pid, watcher: Pid | None, link: Pid | None) -> None:
        """A process spawned (monitored / linked) a workflow that existed already: watch
        it; if it has ended, the monitor gets its ``EXIT`` and a link acts at once."""
        if watcher is None and link is None:
            return
        linker = self.active.get(link.id) if link is not None and \
            link.host == self.name else None
        if linker is not None and linker.unlinked:
            # a workflow's linked spawn of a pid it unlinked lately: linked again from
            # now on, not once its spawn is journaled (a look of the watch made below,
            # or a linked exit, meanwhile took the link for unlinked: ``holds_link``)
            linker.unlinked.pop(pid, None)
        wf = self.active.get(pid.id)
        if wf is not None and not wf.done.is_set():
            if watcher is not None:
                wf.watchers = added(wf.watchers, watcher)
            if link is not None:
                wf.linked_to(link, theirs=True)
            return
        attempt = self.elsewhere_attempt(pid.id) if wf is None else None
        if attempt is not None:
            remote = self.elsewhere.watch(pid)
            if watcher is not None:
                remote.monitor(watcher, Watch(attempt))
            if link is not None:
                remote.link(link, Watch(attempt))
                self._to_owner(pid, partial(self.node.forward_link, target=pid, other=link))
            return
        _ended, result, error = self.end_of(pid)
        if watcher is not None:
            self.node.deliver_event(watcher, Event(EventKind.EXIT, pid, result, error))
        if link is not None and error is not None:
            self.node.linked_exit(link, pid, error)

    def end_of(self, pid: Pid, *, settled: bool = False) -> tuple[bool, Any, ErrorInfo | None]:
        """``(ended, plain result, error)`` of the workflow ``pid`` as this host last
        knew it ended, else as the store holds it (``ended`` false: it has not, it runs
        on another node of the cluster or is blocked); an unknown id ended with
        ``noproc``. ``settled``: read with ``Store.get_workflow_settled``, which raises
        ``Busy`` while a write of the row (an end another node is committing) is in
        flight."""
        known = self.finished.get(pid.id)
        if known is not None and known[4]:  # (else its result is read from the store)
            _status, result_json, error, _name, _held = known
            return True, (None if result_json is None else _loads(result_json)), error
        store = self.store
        record = store.get_workflow_settled(pid.id) if settled else store.get_workflow(pid.id)
        if record is None:
            return True, None, noproc(pid)
        return WorkflowStatus(record.status).finished, record.result, record.error

    # ------------------------------------------------------------ finishing
    async def finish(self, wf: WorkflowInstance, status: WorkflowStatus, value: Any,
                     error: ErrorInfo | None) -> None:
        """Record the end of ``wf`` and deliver its ``EXIT``."""
        result_json: str | None = None
        plain: Any = None
        if status is WorkflowStatus.COMPLETED:
            # (a result its annotation refuses fails it here, not at every result())
            result_json, plain, refused = workflow_result(wf.fn, wf.wid, wf.name, value)
            if refused is not None:
                status, error = WorkflowStatus.FAILED, ErrorInfo.from_exception(refused)
        tx = wf.take_buffer()
        if status is WorkflowStatus.BLOCKED:
            # what the code buffered on its way to the divergence (a step it ran live at
            # a seq the journal left empty, before later records) is the new code's path,
            # not the recorded one: dropped, so that the journal stays as recorded and a
            # node with the code that took it (a deploy rolled back) resumes the workflow
            tx = Transaction()
            tx.update_workflow(wf.wid, status=status, error=error, time=self.clock.now())
            self.queue.freeing(tx)
            await wf.commit_checked(tx)
            self.counts[status] += 1
            wf.status = WorkflowStatus.BLOCKED
            wf.error = error
            wf.done.set()
            log.error("workflow %s is blocked: %s", wf.wid, error,
                      extra={"workflow_id": wf.wid, "run_id": wf.run_id, "pid": wf.pid,
                             "error": error})
            ownership = self.ownership
            if ownership is not None:
                # in a cluster another node may have the code that took the recorded
                # path (a rolling deploy): it leaves at once, as a drain hands a blocked
                # workflow over, owned by nobody; this node claims that run no more
                ownership.blocked(wf.wid, wf.run_id, wf.attempt, wf.name)
                ownership.moved(wf, WorkflowMoved(
                    self.store.path, wf.wid, "the code of this node cannot replay it: it "
                    "is left, blocked, to a node of the cluster whose code can"))
            return
        if wf.wid in self._elsewhere_unasked or wf.wid in self._ends_unasked:
            # its cancel's (or terminate's) ask for its children elsewhere failed: asked
            # again now, as it ends (nothing resumes an ended workflow to ask for them)
            try:
                self.ask_elsewhere_again()
            except Exception as exc:
                log.warning("workflow %s: its children on other nodes could not be asked "
                            "to %s: %s; asked again at the next wakeups, cancel, "
                            "terminate or resume of this node", wf.wid,
                            "end" if wf.wid in self._ends_unasked else "cancel", exc,
                            extra={"workflow_id": wf.wid})
        now = self.clock.now()
        for seq in wf.timers:  # left by waits it abandoned (a started activity's retries)
            tx.remove_timer(wf.wid, seq)
        tx.update_workflow(wf.wid, status=status,
                           result=RawJson(result_json) if result_json is not None else None,
                           error=error, time=now)
        for row_id in wf.requests_taken or ():  # the terminate requests it ends by
            tx.consume(wf.wid, row_id, 0)  # (with its end: never without it)
        for item in wf.pending or ():
            if item.event and is_linked_row(item.plain):
                # a linked row not acted on (it was blocked, or ended first): it asks
                # nothing more of this attempt, and must not end a retry of it
                tx.consume(wf.wid, item.id, 0)
        # (the lists below are made only for an end that fills them: with a thousand
        # workflows ending in one batch, empty ones were walked by each garbage
        # collection while the end's commit waited)
        trapped: list[tuple[WorkflowInstance, int, Any]] | tuple[()] = ()
        told: list[Pid] | tuple[()] = ()  # (linked workflows it wrote a linked row for)
        if status is WorkflowStatus.FAILED or status is WorkflowStatus.CANCELLED:
            told = []
            trapped = self._ending_with(tx, wf, error, now, told)
        flagged = self._cancelled_children.pop(wf.wid, None)
        if flagged and status is WorkflowStatus.CANCELLED:
            # its children flagged when its cancel arrived (cancel_children) by writes of
            # their own, which may not be committed yet: flagged with its end too, so a
            # crash between cannot leave them running under a cancelled parent
            for wid in flagged:
                child = self.active.get(wid)
                if child is not None and child.cancel_requested and not child.done.is_set():
                    tx.request_cancel(wid)
        self.queue.finishing(tx, wf)
        targets: list[tuple[WorkflowInstance, int]] | tuple[()] = ()
        event_text = ""
        cluster = self.ownership is not None
        # (those of other workflow hosts, of other stores, get it once it is committed:
        # _late_monitors; a loop, not a generator expression, whose reference to self
        # made self a cell object of this frame)
        watchers: dict[Pid, None] = {}
        for watcher in wf.durable_watchers or ():
            if watcher.host == self.name:
                watchers[watcher] = None
        # its EXIT is made once the end is committed, unless the transaction carries it:
        # with a thousand workflows ending in one batch, the event (and the pid it made)
        # lived through the commit's wait, for each garbage collection to walk
        event = Event(EventKind.EXIT, wf.pid, plain, error) if watchers or cluster else None
        left: list[str] | tuple[()] = ()  # (in a cluster: those the store's monitors answer for)
        stored: list[str] | tuple[()] = ()  # (not running here: the EXIT only in their inbox)
        unasked: dict[str, WorkflowInstance] = {}  # (running here, holding no monitor of it)
        if watchers:
            targets, left, stored = [], [], []
            for watcher in watchers:
                other = self.active.get(watcher.id)
                if other is not None and other.asks_nothing_of(wf.pid, wf.attempt):
                    # (a monitor an older node's retry left: see asks_nothing_of; in a
                    # cluster the store's monitors below write its row, dropped then)
                    unasked[watcher.id] = other
                    continue
                if other is None and cluster:
                    left.append(watcher.id)  # (the store's monitors below reach every one
                    continue                 # not running here)
                if other is None and not self._may_come_back(watcher.id):
                    # completed, cancelled or gone: nobody reads it (one that has not
                    # resumed, or failed and may be retried, gets it in its inbox)
                    self.node.stats_dead_letters += 1
                    continue
                assert event is not None  # (made above for these)
                event_text = event_text or _dumps(event_to_plain(event))
                tx.deliver(watcher.id, "EXIT", RawJson(event_text),
                           msg_id=exit_id(wf.wid, watcher.id, wf.attempt), sender=wf.pid,
                           kind="event", time=now)
                if other is not None:
                    targets.append((other, len(tx) - 1))
                else:
                    stored.append(watcher.id)
        stored_at = -1
        if cluster:
            # workflows on other nodes may monitor it: the store's monitors get its EXIT
            # in this transaction (read by the write: a monitor committed meanwhile is
            # seen, or finds this end committed; see Transaction.deliver_to_monitors)
            assert event is not None  # (made above for these)
            event_text = event_text or _dumps(event_to_plain(event))
            tx.deliver_to_monitors(wf.wid, "EXIT", RawJson(event_text), host=self.name,
                                   msg_id_prefix=exit_id(wf.wid, "", wf.attempt), sender=wf.pid,
                                   time=now)
            stored_at = len(tx) - 1
        if wf.flushing is None:
            try:  # (commit_checked's body, inlined: see there)
                results = await wf.committing(tx)
            except Exception as exc:
                wf.commit_failed(exc)
                raise
        else:
            results = await wf.commit_checked(tx)
        if event is None:
            event = Event(EventKind.EXIT, wf.pid, plain, error)
        for other, index in targets:
            row_id = results[index]
            if row_id is not None:
                other.push(InboxItem(row_id, True, _loads(event_text), now))
            other.watch_spent(EventKind.EXIT, wf.pid)  # (its monitor of wf: spent)
        links = wf.links
        if trapped:  # their LINK_DOWN is written: the link is spent, not told again
            links = set(links or ())
            for other, index, plain_event in trapped:
                links.discard(other.pid)
                row_id = results[index]
                other.watch_spent(EventKind.LINK_DOWN, wf.pid)
                if row_id is not None and self.active.get(other.wid) is other:
                    other.push(InboxItem(row_id, True, plain_event, now))
        if told:  # their linked rows are written: see _linked_told
            links = set(links or ()).difference(told)
        if stored_at >= 0:
            for watcher_id, row_id in results[stored_at]:
                if watcher_id in unasked:
                    unasked[watcher_id].drop_unasked(row_id)
                    continue
                pid = Pid(self.name, watcher_id)
                if pid in watchers:  # (delivered above: the store left it out)
                    continue
                watchers[pid] = None
                other = self.active.get(watcher_id)
                if other is not None and other.asks_nothing_of(wf.pid, wf.attempt):
                    other.drop_unasked(row_id)
                elif other is not None:
                    other.push(InboxItem(row_id, True, _loads(event_text), now))
                    other.watch_spent(EventKind.EXIT, wf.pid)
            if left:
                self._count_dropped(left, {wid for wid, _row in results[stored_at]})
        for wid in stored or left:  # not running here when the EXIT was written: one
            # loaded meanwhile (a retry) may have read its inbox before the commit
            self._claimed_meanwhile(wid)
        self.counts[status] += 1
        wf.status = status
        wf.result_json = result_json
        wf.error = error
        self.active.pop(wf.wid, None)
        if self.supervised_elsewhere:
            self.supervised_elsewhere.pop(wf.wid, None)
        if self.ownership is not None:
            self.ownership.ended(wf.wid, self.queue.room() is not None)
        self._remember_end(wf.wid, status, result_json, error, wf.name)
        for name in self.names.pop(wf.wid, ()):
            self.node.unregister(name, wf.pid)
        if status is WorkflowStatus.FAILED and error is not None:
            # (one ended as its parent was terminated: said by the line of the tree's
            # terminated workflow, see end_instance)
            log.log(logging.DEBUG if ended_with_parent(error) else logging.WARNING,
                    "workflow %s (%s) failed: %s", wf.wid, wf.name, error,
                    extra={"workflow_id": wf.wid, "run_id": wf.run_id, "pid": wf.pid,
                           "error": error})
        for pid in told:
            self._linked_told(pid, wf.pid, error)
        self._ended_fan_out(wf, status, event, watchers, links)
        wf.done.set()

    def _ending_with(self, tx: Transaction, wf: WorkflowInstance, error: ErrorInfo | None,
                     now: float, told: list[Pid]) -> list[tuple[WorkflowInstance, int, Any]]:
        """Into ``tx``, ``wf``'s failed (or cancelled) end: a terminate request
        (``request_transaction``)
        for each workflow here that this end ends in memory, each of which writes its
        own end later -- its unfinished children if it was terminated (``end_instance``),
        the workflows linked to it that do not trap links (``linked_exit``). A crash
        after this commit and before theirs would leave them running for good (a child
        under an ended parent; a linked one that keeps no link of its own: its linker,
        ended, never resumes to link again): the node that resumes them ends them by
        these requests, as by a tool's. Once they ended, a request is only consumed
        (see ``_recovery.refresh``; one of an attempt a retry ended, ``stale_request``).
        The children's first: one also linked ends as its parent's child, as here.

        A linked workflow here that traps links gets its ``LINK_DOWN`` in this
        transaction too, under the id ``linked_exit`` would give it (a crash after
        this commit would lose it: the trapping workflow, which may keep no link of its
        own, would wait for ever); returned as ``(workflow, index of its write in tx,
        the event as it reads it)``, for ``finish`` to hand over once committed.

        In a cluster, a linked workflow this node does not run (another node runs it,
        or none yet) gets a linked row in its inbox in this transaction
        (``_inbox.LINKED``: if it is there and unfinished, read in the write), whatever
        it traps: the write wakes the node that runs it, which acts on it as its
        replay is done (:meth:`linked_rows`), and a node that resumes it after a crash
        does the same (an in-memory word to its node, lost with that node, or with
        this one before it was sent, left it running for good, or its ``LINK_DOWN``
        never came). Their pids are added to ``told``, for :meth:`_linked_told`."""
        asked: set[str] = set()
        trapped: list[tuple[WorkflowInstance, int, Any]] = []
        if wf.children_end is not None:
            for child in self.active.children_of(wf.pid):
                if not WorkflowStatus(child.status).finished:
                    request_transaction(child.wid, wf.children_end, child.attempt, tx)
                    asked.add(child.wid)
        if error is None or not wf.links or supervisor_stop(error):
            return trapped
        event = Event(EventKind.LINK_DOWN, wf.pid, None, error)
        cluster = self.ownership is not None
        linked_text = ""
        for pid in sorted(wf.links):
            other = self.active.get(pid.id) if pid.host == self.name else None
            if other is None and cluster and pid.host == self.name and pid.id not in asked:
                if not linked_text:
                    plain = event_to_plain(event)
                    plain[LINKED] = True
                    linked_text = _dumps(plain)
                tx.deliver(pid.id, str(EventKind.LINK_DOWN), RawJson(linked_text),
                           msg_id=linked_id(str(wf.pid), pid.id, wf.attempt), sender=wf.pid,
                           kind="event", time=now, if_unfinished=True)
                told.append(pid)
                continue
            if other is None or other.wid in asked \
                    or other.done.is_set() or WorkflowStatus(other.status).finished:
                continue
            if other.trap_links:
                # (under the id of its own link of wf, or else the one of a linked row:
                # each attempt's, as a second failure of a retry is news to it)
                msg_id = other.event_id(EventKind.LINK_DOWN, wf.pid) \
                    or linked_id(str(wf.pid), other.wid, wf.attempt)
                _tx, plain_event, _at = self._event_row(other.pid, event, msg_id, tx, now)
                trapped.append((other, len(tx) - 1, plain_event))
                continue
            if not cancelled_too(other, error):
                request_transaction(other.wid, linked_failure(wf.pid, error), other.attempt,
                                    tx)
        return trapped

    def _ended_fan_out(self, wf: WorkflowInstance, status: WorkflowStatus, event: Event,
                       delivered: Mapping[Pid, Any], links: Iterable[Pid] | None) -> None:
        """After ``wf``'s end (``event``) is committed, whoever wrote it: the workflows
        here that watch it and are not in ``delivered`` get its ``EXIT``
        (:meth:`_late_monitors`), its callers fail, its monitors and links hear
        of it (:func:`exit_fan_out`)."""
        self._late_monitors(wf, delivered, event)
        error = event.error
        if wf.callers:
            wf.fail_callers(f"workflow {wf.pid} ended before replying: "
                            f"{error or 'normal exit'}", error or noproc(wf.pid))
        # workflows it monitored got their EXIT durably; the processes forget it here,
        # also when it failed (else the process, and its node's table for one of
        # another node, kept it as long as the process lived, retried or not): a
        # retry's replay monitors them again (``Interop._deliver_lost``), and one that
        # ended meanwhile is its end as its node remembers it, else ``noproc``. (One
        # of a host this node no longer has, replayed by a run that ended before a live
        # operation dropped it, as lost: nothing holds it)
        processes = None
        if wf.monitoring:
            node = self.node
            hosts = node.hosts
            processes = [p for p in wf.monitoring if node.plain_elsewhere(p) or (
                (h := hosts.get(p.host)) is not None and not h.durable)]
        exit_fan_out(self.node, wf.pid, event, wf.watchers, links, processes)

    def _count_dropped(self, watchers: list[str], delivered: set[str]) -> None:
        """In a cluster, the watchers of an ended workflow that this node knew of and
        the store's monitors left out: a completed or cancelled one (or one gone) is a
        dead letter (another, a row of the same id put before: not dropped)."""
        try:
            for wid in watchers:
                if wid not in delivered and not self._may_come_back(wid):
                    self.node.stats_dead_letters += 1
        except StoreError as exc:
            log.warning("could not read whether the watchers %s of an ended workflow may "
                        "run again: %s", watchers, exc)

    def _late_monitors(self, wf: WorkflowInstance, delivered: Mapping[Pid, Any],
                       event: Event) -> None:
        """After ``wf``'s end is committed: its ``EXIT`` for the workflows here that
        began to monitor it meanwhile (not in ``delivered``), and for those of the
        node's other workflow hosts (their inboxes are in other stores: a crash before
        this write loses nothing, the watcher's replay finds ``wf`` ended)."""
        try:
            for watcher in dict.fromkeys(wf.durable_watchers or ()):
                host = self._watcher_host(watcher)
                other = None if host is None else host.active.get(watcher.id)
                if other is not None and other.asks_nothing_of(wf.pid, wf.attempt):
                    continue  # (a monitor an older node's retry left: see asks_nothing_of)
                if watcher not in delivered and host is not None and (
                        other is not None or host._may_come_back(watcher.id)):
                    host.exit_of_ended(wf.pid, watcher, event, wf.attempt)
        except Exception as exc:
            log.warning("workflow %s: could not look for monitors made while its end was "
                        "committed: %s", wf.wid, exc, extra={"workflow_id": wf.wid})

    # ------------------------------------------------------------ node hooks
    async def deliver_durable(self, pid: Pid, msg: Message, text: str | None = None) -> bool:
        """Commit ``msg`` to the workflow's inbox before returning; False for a dead letter.

        Before this host resumed the store's workflows (a service sending while the node
        starts), an unfinished workflow of the store gets the message in its inbox: it
        reads it when it resumes."""
        check_text(msg.topic, f"a message to workflow {pid.id!r}: its topic")
        if self.client or (pid.id not in self.active and (
                not self.resumed or self.ownership is not None)):
            # not running here: into the inbox (in a cluster, its node is woken)
            payload = RawJson(text) if text is not None else msg.payload
            tx = Transaction().deliver(pid.id, msg.topic, payload, msg_id=msg.id,
                                       sender=msg.sender, call_ref=msg.call_ref,
                                       time=self.clock.now(), trace=msg.trace)
            if self.client or self.ownership is not None:
                # another node's workflow (or one waiting to be claimed): the store is
                # read and written in a worker thread, so a slow or stalled database
                # holds up this sender, not the node's event loop
                delivered: bool = await run_blocking(self._deliver_stored, pid.id, tx)
                self._claimed_meanwhile(pid.id)
                return delivered
            # (before this host resumed: at once, so that resume() reads it)
            delivered = self._deliver_stored(pid.id, tx)
            await trio.lowlevel.checkpoint()
            return delivered
        wf = self.active.get(pid.id)
        plain_payload = msg.payload
        given = text is not None
        if text is None:  # (a dead letter's too: the same call refuses the same payload
            # whether or not its workflow still runs)
            text = to_json(msg.payload, what=f"the payload of message {msg.topic!r} to "
                                             f"workflow {pid.id!r}")
        if wf is None:
            await trio.lowlevel.checkpoint()
            return False
        if not given and (type(msg.payload) not in PLAIN or type(msg.payload) is float):
            plain_payload = _loads(text)
        now = self.clock.now()
        tx = Transaction().deliver(pid.id, msg.topic, RawJson(text), msg_id=msg.id,
                                   sender=msg.sender, call_ref=msg.call_ref, time=now,
                                   trace=msg.trace)
        row_id = (await self.store.commit(tx))[0]
        if row_id is not None and wf is self.active.get(pid.id):
            wf.push(InboxItem(row_id, False, message_to_plain(
                Message(msg.topic, plain_payload, msg.sender, msg.id, msg.call_ref, msg.trace)),
                now))
        return True

    async def signal_delivered(self, workflow_id: str, topic: str, payload: Any) -> bool:
        """A message from outside any process to workflow ``workflow_id`` (what
        ``node.send`` to its pid does), committed to its inbox before returning; False
        if it had finished first (a dead letter, counted as one). For a caller that must
        tell the two apart with nothing in between: the console answers 409 then, where
        ``WorkflowHandle.signal``, like ``send``, does not say."""
        node = self.node
        msg = Message(topic, payload, None, node.message_id(), None,
                      _observe.carrier() if _observe.tracing else None)
        delivered = await self.deliver_durable(Pid(self.name, workflow_id), msg)
        if delivered:
            node.stats_messages += 1
        else:
            node.stats_dead_letters += 1
        return delivered

    def _claimed_meanwhile(self, wid: str) -> None:
        """A write for ``wid`` made in a worker thread while this host did not run it has
        returned: if this host claimed it meanwhile, its load may predate the write
        (which wrote no wakeup once this node owned it), so it reads the store again."""
        if wid in self.active:
            refresh(self, wid)

    def _deliver_stored(self, wid: str, tx: Transaction) -> bool:
        """Write ``tx`` (a message) to the inbox of the store's workflow ``wid``, which
        this host does not run; False if the store has no such unfinished workflow.
        Blocking: see :meth:`deliver_durable`."""
        record = self.store.get_workflow(wid)
        if record is None or WorkflowStatus(record.status).finished:
            return False
        self.store.write(tx)
        return True

    async def call(self, caller: Caller, pid: Pid, topic: str, payload: Any,
                   seconds: float) -> Any:
        """``process.call`` from a process (or ``node.call``) to a workflow: the request
        is committed to the workflow's inbox. (One that another node of the cluster runs
        replies to the caller's pid, which names this node; its end fails the call, as
        :class:`~._elsewhere.Elsewhere` sees it in the store.)"""
        node = self.node
        wf: Caller | None = self.active.get(pid.id)
        if wf is None and self.runs_elsewhere(pid.id):
            wf = self.elsewhere.watch(pid)
        if wf is None:
            raise ProcessError(f"call to {pid} failed: {noproc(pid)}", pid=pid, error=noproc(pid))

        async def deliver(ref: str) -> None:
            await self.deliver_durable(pid, Message(topic, payload, caller.pid,
                                                    node.message_id(), ref,
                                                    _observe.carrier() if _observe.tracing
                                                    else None))
            node.stats_messages += 1

        return await caller.exchange(wf, pid, topic, seconds, deliver)

    def local_caller(self, pid: Pid) -> WorkflowInstance | None:
        """The workflow object behind ``pid`` (for replies to its calls)."""
        return self.active.get(pid.id)

    def deliver_event(self, pid: Pid, event: Event, *, msg_id: str | None = None) -> bool:
        """Durably queue ``event`` (an ``EXIT`` or ``LINK_DOWN``) for the workflow (in a
        cluster, for one another node runs too: the store wakes that node); ``msg_id``:
        its inbox id, if not the one named by the workflow's monitor or link of that
        process (``Interop.event_id``), or, if it made none or does not run here, the
        one per (process, kind, workflow)."""
        wf = self.active.get(pid.id)
        if wf is None:
            # not running here: into its inbox through the store if it may run (again):
            # one another node of the cluster runs (that node is woken), one that has
            # not resumed, one that failed (a retry reads it, as a child's EXIT); after
            # a read off the node's thread (this may be a process's exit, and the store
            # may be out of reach). One that ended for good, or is not there: a dead
            # letter. (A tool's store runs no workflow: none of them watches here.)
            if self.client:
                return False
            tx = self._event_row(pid, event, msg_id)[0]

            def put(may_run: bool) -> None:
                if may_run:  # (a retry that loaded it meanwhile reads its inbox again)
                    self.write_soon(tx, lambda _results: self._claimed_meanwhile(pid.id))
                else:
                    self.node.stats_dead_letters += 1

            self.elsewhere.later(partial(self._may_come_back, pid.id), put)
            return True
        if event.kind is EventKind.EXIT:
            spent = wf.watch_spent(EventKind.EXIT, event.pid)  # that monitor is spent
            msg_id = msg_id or spent
        tx, plain_event, now = self._event_row(pid, event, msg_id)

        def delivered(results: list[Any]) -> None:
            if results[0] is not None and self.active.get(pid.id) is wf:
                wf.push(InboxItem(results[0], True, plain_event, now))

        self.write_soon(tx, delivered)
        return True

    def _unfinished(self, wid: str) -> bool:
        """True if the store holds ``wid`` and it has not ended."""
        record = self.store.get_workflow(wid)
        return record is not None and not WorkflowStatus(record.status).finished

    def _may_come_back(self, wid: str) -> bool:
        """True if the store holds ``wid`` and it may run again: unfinished, or
        ``failed`` (a retry resumes it, and its code reads what reached its inbox
        meanwhile, the ``EXIT`` of a child above all). A completed or cancelled one
        never runs again."""
        record = self.store.get_workflow(wid)
        return record is not None and WorkflowStatus(record.status) not in _FOR_GOOD

    def add_durable_monitor(self, target: Pid, watcher: WorkflowInstance, *,
                            again: str | None = None) -> None:
        """A workflow monitors a workflow: its ``EXIT`` arrives durably. The monitor is a
        row of this host's store, the target's, which its load and its end read. It goes
        with the watcher's journal record when the watcher's store is this one; a
        watcher of another store (another workflow host of the node) has it written on
        its own: a crash before that commit loses nothing, as the watcher's replay
        monitors again (``WorkflowInterop._deliver_lost``). ``again``: the id of this
        monitor's own ``EXIT``, if ``target`` has ended and ``watcher`` had that end's
        ``EXIT`` before (see :meth:`exit_of_ended`)."""
        other = self.active.get(target.id)
        buf = watcher.buffered() if watcher.store is self.store else None
        if other is not None:
            if other.durable_watchers is None:
                other.durable_watchers = [watcher.pid]
            elif watcher.pid not in other.durable_watchers:
                other.durable_watchers.append(watcher.pid)
            if buf is not None:
                buf.add_monitor(target.id, watcher.pid)
            else:
                self.write_soon(Transaction().add_monitor(target.id, watcher.pid))
            return
        if self._unfinished(target.id):
            # it runs on another node of the cluster (or has not resumed here yet): its
            # end delivers the EXIT to the monitors the store holds. The monitor goes with
            # the watcher's journal record; once it is committed, a look at the target
            # catches an end that read the store's monitors before it
            if buf is not None:
                buf.add_monitor(target.id, watcher.pid)
            self.write_soon(Transaction().add_monitor(target.id, watcher.pid),
                            lambda _results: self._monitor_stored(target, watcher.pid))
            return
        self.exit_if_ended(target, watcher.pid, again=again)

    def _monitor_stored(self, target: Pid, watcher: Pid) -> None:
        """The monitor of ``target`` by the workflow ``watcher`` is committed: if
        ``target`` was loaded here meanwhile (having read the store's monitors before
        this one), it learns of it now; if it ended meanwhile, its EXIT. An end another
        node is committing is waited for (asked again from a task while the read is
        ``Busy``): its write may have read the store's monitors before this one was
        committed (``Transaction.deliver_to_monitors``)."""
        other = self.active.get(target.id)
        if other is not None and not other.done.is_set():
            if other.durable_watchers is None:
                other.durable_watchers = [watcher]
            elif watcher not in other.durable_watchers:
                other.durable_watchers.append(watcher)
            return
        try:
            self.exit_if_ended(target, watcher, settled=True)
        except Busy:  # a write of its row is in flight: look again once it is done
            if self.closing or self._nursery is None:
                log.warning("workflow %s: could not read whether workflow %s it monitors "
                            "has ended (its row is being written); it looks again when "
                            "it resumes", watcher.id, target.id)
                return
            self._nursery.start_soon(self._exit_when_settled, target, watcher)

    async def _exit_when_settled(self, target: Pid, watcher: Pid) -> None:
        """:meth:`exit_if_ended` (settled) again and again, a little later each time
        (a write in flight takes milliseconds; one that holds the row for minutes, a
        session left open in psql say, is logged once)."""
        pause, waited, warned = 0.002, 0.0, False
        while True:
            await trio.sleep(pause)
            waited += pause
            try:
                self.exit_if_ended(target, watcher, settled=True)
                return
            except Busy:
                if waited >= SETTLE_WARNING and not warned:
                    warned = True
                    log.warning("workflow %s: the row of workflow %s it monitors has been "
                                "held by a transaction for %.0f s; still waiting to read "
                                "whether it has ended", watcher.id, target.id, waited)
                pause = min(pause * 2, 0.5)

    def exit_if_ended(self, target: Pid, watcher: Pid, *, settled: bool = False,
                      again: str | None = None) -> None:
        """If the workflow ``target`` has ended (or was never started), its ``EXIT`` for
        the workflow ``watcher`` that monitors it (see :meth:`exit_of_ended`; ``settled``:
        see :meth:`end_of`), as the store holds it: one the store holds unfinished
        runs again (a retry, made elsewhere: another node, a tool), whatever end of
        an earlier attempt this node remembers, and its end comes to the monitor's
        row. ``again``: see :meth:`exit_of_ended`. (A store that fails to answer:
        nothing now; the watcher looks again as it resumes.)"""
        store = self.store
        try:
            record = store.get_workflow_settled(target.id) if settled \
                else store.get_workflow(target.id)
            if record is None:  # (pruned: as this node remembers it, else noproc)
                ended, result, error = self.end_of(target)
                attempt = 1
            else:
                ended = WorkflowStatus(record.status).finished
                result, error, attempt = record.result, record.error, int(record.attempt)
        except StoreError as exc:
            log.warning("workflow %s: could not read whether workflow %s it monitors "
                        "has ended: %s", watcher.id, target.id, exc)
            return
        host = self._watcher_host(watcher)
        if ended and host is not None:
            host.exit_of_ended(target, watcher, Event(EventKind.EXIT, target, result, error),
                               attempt, again=again)

    def replayed_monitor_spent(self, target: Pid, watcher: WorkflowInstance) -> bool:
        """The workflow ``watcher``'s monitor of the workflow ``target`` (of this host),
        which its replay made again, has had its ``EXIT``, though the store holds a
        later attempt of ``target`` (a retry) whose end ``watcher`` has not:

        - the monitor was of an earlier attempt: a retry since forgot it
          (``retry_transaction``; a monitor made after the retry is a row of the store
          again), and ``watcher``'s inbox holds the ``EXIT`` of an earlier attempt. The
          end of the attempt that runs now is for the monitors made of it;
        - the monitor is of the attempt that ended, and a node of an older garrison
          (in a rolling upgrade) wrote that end's ``EXIT`` under the first attempt's
          id (``exit_id``): the row of that id was put by the end (or after it).

        Blocking: reads of the store."""
        other = self.active.get(target.id)
        record = None
        if other is not None:
            attempt = other.attempt
        else:
            record = self.store.get_workflow(target.id)
            attempt = 1 if record is None else int(record.attempt)
        if attempt <= 1:
            return False
        ended = target.id if target.host == watcher.host.name else str(target)
        inbox = watcher.store.inbox_message
        # (its own row: the resume of n watchers of a workflow read n * n rows)
        if not self.store.monitors(target.id, watcher.pid):
            return any(inbox(exit_id(ended, watcher.wid, k)) is not None
                       for k in range(1, attempt))
        if record is None or record.updated is None \
                or not WorkflowStatus(record.status).finished:
            return False
        old = inbox(exit_id(ended, watcher.wid))
        return old is not None and old.workflow_id == watcher.wid \
            and old.created is not None and old.created >= record.updated

    def _watcher_host(self, watcher: Pid) -> WorkflowHost | None:
        """The workflow host of this node whose store holds the workflow ``watcher``
        (another workflow host's for a watcher of another store)."""
        if watcher.host == self.name:
            return self
        host = self.node.hosts.get(watcher.host)
        return host if isinstance(host, WorkflowHost) and not host.client else None

    def exit_of_ended(self, target: Pid, watcher: Pid, event: Event, attempt: int = 1,
                      *, again: str | None = None) -> None:
        """The ``EXIT`` of an ended workflow (the end of its attempt ``attempt``) for a
        workflow of this host that monitors it: into the watcher's inbox (once: its id
        is derived from both and the attempt, whoever delivers it -- the target's pid
        in it when that is another host's, whose ids may be the same as this one's; a
        replayed monitor asks again, so a crash before this write loses nothing).
        ``again``: the id of the own ``EXIT`` of a monitor the watcher (running here)
        makes now: if its inbox holds this end's ``EXIT`` already (another monitor's),
        this monitor gets one under that id, as each monitor of a dead process does,
        written with the monitor's record (:meth:`WorkflowCore.flush_with`: a replay
        that finds the record finds it too, and one that does not runs the monitor
        again, under the same id)."""
        text = _dumps(event_to_plain(event))
        now = self.clock.now()
        ended = target.id if target.host == self.name else str(target)
        tx = Transaction().deliver(watcher.id, "EXIT", RawJson(text),
                                   msg_id=exit_id(ended, watcher.id, attempt), sender=target,
                                   kind="event", time=now)

        instance = self.active.get(watcher.id)  # (one loaded later reads the row itself)

        def delivered(results: list[Any]) -> None:
            if instance is not None and self.active.get(watcher.id) is instance:
                if results[0] is not None:  # (else delivered before)
                    instance.push(InboxItem(results[0], True, _loads(text), now))
                instance.watch_spent(EventKind.EXIT, target)  # (its monitor: spent)

        if again is not None and instance is not None:
            try:
                had = self.store.inbox_message(exit_id(ended, watcher.id, attempt))
            except StoreError:
                had = None  # (its replay looks again: see _deliver_lost)
            if had is not None:
                # it had this end's EXIT (a monitor of it spent since): this monitor's
                # own, written with its record (a replay that finds the record finds
                # the row: what happened since the first is in no journal)
                instance.flush_with(Transaction().deliver(
                    watcher.id, "EXIT", RawJson(text), msg_id=again, sender=target,
                    kind="event", time=now), delivered)
                return
        self.write_soon(tx, delivered)

    def _event_row(self, pid: Pid, event: Event, msg_id: str | None = None,
                   tx: Transaction | None = None, now: float | None = None
                   ) -> tuple[Transaction, Any, float]:
        """The write that puts ``event`` in the inbox of workflow ``pid`` (added to
        ``tx`` if given, at ``now`` if given); the event as the workflow reads it, and
        the row's time."""
        plain_event = event_to_plain(Event(event.kind, event.pid,
                                           plain_or_repr(event.result), event.error))
        # by default one id per (process, kind, workflow) (see deliver_event): a
        # ``noproc`` event made at recovery for a process lost in a crash is dropped if
        # the real one was delivered before
        if now is None:
            now = self.clock.now()
        tx = (Transaction() if tx is None else tx).deliver(
            pid.id, str(event.kind), RawJson(_dumps(plain_event)), sender=event.pid,
            kind="event", msg_id=msg_id or f"{event.pid}#{event.kind}@{pid.id}", time=now)
        return tx, plain_event, now

    def remove_durable_monitor(self, target: Pid, watcher: WorkflowInstance) -> None:
        """``demonitor`` of a workflow by a workflow: its ``EXIT`` no longer comes, unless
        ``target`` is ``watcher``'s child, whose ``EXIT`` always reaches its parent."""
        record = self.store.get_workflow(target.id)
        if record is None or record.parent == watcher.pid:
            return
        other = self.active.get(target.id)
        if other is not None and other.durable_watchers and \
                watcher.pid in other.durable_watchers:
            other.durable_watchers.remove(watcher.pid)
        if watcher.store is self.store:
            watcher.buffered().remove_monitor(target.id, watcher.pid)
        else:  # (the row is this store's: see add_durable_monitor)
            self.write_soon(Transaction().remove_monitor(target.id, watcher.pid))

    def runs_elsewhere(self, wid: str) -> bool:
        """True if ``wid`` is unfinished and not here: another node of the cluster runs
        it (or takes it over)."""
        return self.ownership is not None and wid not in self.active and \
            self._unfinished(wid)

    def elsewhere_attempt(self, wid: str) -> int | None:
        """The attempt of ``wid`` that runs, if :meth:`runs_elsewhere`, else ``None``
        (a read of the store, blocking)."""
        if self.ownership is None or wid in self.active:
            return None
        record = self.store.get_workflow(wid)
        if record is None or WorkflowStatus(record.status).finished:
            return None
        return int(record.attempt)

    def add_monitor(self, target: Pid, watcher: Pid) -> bool:
        wf = self.active.get(target.id)
        attempt = self.elsewhere_attempt(target.id) \
            if wf is None and watcher.host != self.name else None
        if attempt is not None:  # a process's monitor, of the attempt that runs now
            self.elsewhere.watch(target).monitor(watcher, Watch(attempt))
            return True
        if wf is None:
            return False
        # (a blocked one too: its end by a terminate, or by its retried attempt, which
        # takes over its watchers (``_recovery.refresh``), is this monitor's EXIT)
        if watcher.host == self.name:
            return True  # workflows monitor through add_durable_monitor
        wf.watchers = added(wf.watchers, watcher)
        return True

    def remove_monitor(self, target: Pid, watcher: Pid) -> None:
        wf = self.active.get(target.id)
        if wf is not None and wf.watchers:
            wf.watchers.discard(watcher)
        remote = self.elsewhere.get(target.id)
        if remote is not None:
            remote.monitors.pop(watcher, None)
            self.elsewhere.forget_idle(target.id)

    def add_link(self, target: Pid, other: Pid, *, since: float | None = None) -> bool:
        """``other`` links to the workflow ``target``. (In a cluster, to one this node
        does not run: this node watches its end, see ``_elsewhere``, whose reads settle
        whether it runs at all, and which attempt of it the link is of: the one that
        ran at ``since``, unix seconds, by default now, see ``_attempts.Watch``;
        ``other``'s end reaches it through the node that runs it, see
        :meth:`linked_exit`.)"""
        wf = self.active.get(target.id)
        if wf is None:
            if self.ownership is None and not self.resumed and not self.client \
                    and self._unfinished(target.id):
                # not loaded yet (a workflow of another workflow host of the node, which
                # resumed first, makes its links again): it is linked as it loads
                self.early_links.setdefault(target.id, set()).add(other)
                return True
            if self.ownership is None or target.id in self.finished:
                return False
            self.elsewhere.watch(target).link(
                other, Watch(since=self.clock.now() if since is None else since))
            # (its node forgets an unlink of ``other`` it may hold: a new link)
            self._to_owner(target, partial(self.node.forward_link, target=target,
                                           other=other))
            return True
        wf.linked_to(other, theirs=True)
        return True

    def remove_link(self, target: Pid, other: Pid) -> None:
        """Either side unlinks: what this node watches for the link goes; the node
        that runs ``target``, if another one, drops ``other`` from its links."""
        self._unwatch_link(target, other)
        self._unwatch_link(other, target)
        if target.id in self.early_links:
            self.early_links[target.id].discard(other)
        wf = self.active.get(target.id)
        if wf is not None:
            if wf.links:
                wf.links.discard(other)
        elif self.ownership is not None:
            self._to_owner(target, partial(self.node.forward_unlink, target=target,
                                           other=other))

    def relinked(self, target: Pid, other: Pid) -> None:
        """``other``, of another node, linked to the workflow ``target`` (running here)
        again after ``target`` unlinked it: its linked exits count from now on."""
        wf = self.active.get(target.id)
        if wf is not None and wf.unlinked:
            wf.unlinked.pop(other, None)

    def holds_link(self, target: Pid, other: Pid) -> bool:
        """False if the workflow ``target`` (running here) unlinked ``other`` lately
        (``UNLINK_GRACE``): a linked exit of ``other`` another node sent before it heard
        of the unlink is ignored."""
        wf = self.active.get(target.id)
        return wf is None or not wf.unlinked or \
            wf.unlinked.get(other, 0.0) <= trio.current_time()

    def _to_owner(self, target: Pid, send: Callable[[str], None]) -> None:
        """``send(node)`` to the node the store names the owner of workflow ``target``,
        if another one: read off the node's thread (this may be a process's exit, and
        the store may be out of reach), then sent in order."""
        ownership: Any = self.ownership
        me = ownership.pg.name

        def then(owner: str | None) -> None:
            if owner is not None and owner != me:
                send(owner)

        self.elsewhere.later(partial(ownership.pg.owner_name, target.id), then)

    def _unwatch_link(self, target: Pid, other: Pid) -> None:
        """``other`` no longer links to ``target``, a workflow another node runs."""
        remote = self.elsewhere.get(target.id)
        if remote is not None and other in remote.links:
            del remote.links[other]
            self.elsewhere.forget_idle(target.id)

    def linked_exit(self, target: Pid, dead: Pid, error: ErrorInfo | None, *,
                    row_read: bool = False) -> None:
        """``dead``, linked to the workflow ``target``, ended with ``error`` (``None``: a
        normal end, which only drops the link). ``row_read``: the caller found no
        linked row of ``dead`` for ``target`` (a recovery's check of its links)."""
        self._unwatch_link(target, dead)  # (a watch of it ``dead``'s link made is spent)
        if supervisor_stop(error):
            error = None  # a supervisor restarting a process fails no workflow linked to it
        wf = self.active.get(target.id)
        if wf is None:
            if dead in self.early_links.get(target.id, ()):
                self._early_exits.append((target, dead, error))  # (for once it loaded)
                return
            if self.ownership is not None:
                # to the node that runs it; a process ended by this node's close is no
                # failure there (the workflow goes on; a lost node does not end it)
                if error is self.node.shutdown_reason:
                    error = None
                self._linked_exit_elsewhere(target, dead, error)
            return
        if error is not None and not row_read and self.ownership is not None \
                and dead.host == self.name and dead.id not in self.finished \
                and dead.id not in self.active:
            # a workflow that ended on another node: its end wrote a linked row for
            # ``target`` if it knew of the link (``_ending_with``), which acts, once
            # (``linked_rows``); this word (its node sends it too, for a node of an
            # older garrison, which reads no row) acts only where there is none
            row = partial(self.linked_row, dead, target.id)
            self.elsewhere.later(row, partial(self._linked_word, target, dead, error))
            return
        self._linked_exit_here(wf, dead, error)

    def linked_row(self, dead: Pid, target: str, attempt: int | None = None) -> Any:
        """The linked row (``_inbox.LINKED``) the last failure of the workflow ``dead``
        (or the failure of its attempt ``attempt``) wrote for the workflow ``target``,
        consumed or not, or ``None`` (read from the store: blocking). Its id carries the
        attempt that failed (``linked_id``): the attempt of ``dead``'s record if it has
        ended, else the one before (it was retried since)."""
        if attempt is None:
            record = self.store.get_workflow(dead.id)
            attempt = 1
            if record is not None:
                attempt = record.attempt - (0 if WorkflowStatus(record.status).finished
                                            else 1)
        return self.store.inbox_message(linked_id(str(dead), target, attempt))

    def end_of_link(self, pid: Pid, since: float
                    ) -> tuple[int, tuple[Any, ErrorInfo | None] | None] | None:
        """In a cluster, the attempt of the workflow ``pid`` that a link made at
        ``since`` (unix seconds) is of, and that attempt's end, ``None`` while it runs
        (``_attempts.end_of_attempt``); ``None`` if this host keeps no cluster's store
        or the store does not hold ``pid``. Blocking: a read of the store."""
        if self.ownership is None:
            return None
        record = self.store.get_workflow(pid.id)
        if record is None:
            return None
        return end_of_attempt(pid, record, Watch(since=since))

    def _linked_word(self, target: Pid, dead: Pid, error: ErrorInfo, row: Any) -> None:
        """:meth:`linked_exit` of a workflow ``dead`` that ended on another node, once
        the linked row it may have written for ``target`` (``row``) was read."""
        wf = self.active.get(target.id)
        if row is not None:
            if wf is not None:  # (its inbox read again: the row acts, once)
                refresh(self, target.id)
        elif wf is not None:
            self._linked_exit_here(wf, dead, error)
        else:  # (gone from this node meanwhile: to the one that runs it)
            self.linked_exit(target, dead, error)

    def _linked_exit_here(self, wf: WorkflowInstance, dead: Pid, error: ErrorInfo | None
                          ) -> None:
        """:meth:`linked_exit` of the workflow ``wf``, which runs here."""
        target = wf.pid
        msg_id = wf.watch_spent(EventKind.LINK_DOWN, dead)  # (the link is spent)
        if error is None:
            return
        if wf.trap_links:
            self.deliver_event(target, Event(EventKind.LINK_DOWN, dead, None, error),
                               msg_id=msg_id)
        elif not cancelled_too(wf, error):
            self.kill(target, linked_failure(dead, error))

    def _linked_told(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None:
        """``dead``'s end wrote its linked row into the inbox of ``target``, a workflow
        this node did not run (see ``_ending_with``): the node that runs it acts on it,
        woken by the write; that node is sent the word too, as before the row (a node
        of an older garrison reads no row; a node that does, acts on the row alone,
        see :meth:`linked_exit`). Here, the watch of ``target`` that ``dead``'s link
        made goes; one this node claimed meanwhile reads its inbox again; one that no
        node runs (it waits ``pending`` in the store, never ran) ends at once
        (:meth:`end_pending_linked`)."""
        self._unwatch_link(target, dead)
        if error is None:
            return
        ownership: Any = self.ownership
        me = ownership.pg.name

        def then(owner: str | None) -> None:
            if target.id in self.active:
                self._claimed_meanwhile(target.id)
            elif owner is None:
                self.end_pending_linked(target.id, dead, error)
            elif owner != me:
                self.node.forward_linked_exit(owner, target=target, dead=dead,
                                              error=error)

        self.elsewhere.later(partial(ownership.pg.owner_name, target.id), then)

    def linked_rows(self, wf: WorkflowInstance) -> None:
        """The linked rows waiting in ``wf``'s inbox (``_inbox.LINKED``: a linked
        workflow of another node failed) act, once its journal is replayed (what it
        traps is known then; until then ``check_lost`` holds, and its first live
        operation calls this). If ``wf`` traps links, the row is the ``LINK_DOWN`` its
        code reads (its arrival spent the link, as any ``LINK_DOWN``'s: ``refresh``,
        or the recovery's check of its links); if not, the row leaves its inbox and
        ``wf`` ends with the linked failure, the row consumed
        by its end's own transaction (a crash before loses nothing: the node that
        resumes it acts on the row again) -- unless ``cancelled_too``: it ends by its
        own cancel, and the row, asking nothing more, is consumed now. A row of a
        workflow ``wf`` unlinked lately is consumed unread (as :meth:`holds_link`
        ignores such a word)."""
        pending = wf.pending
        if not pending or wf.check_lost or wf.done.is_set():
            return
        unlinked = wf.unlinked
        for item in [i for i in pending if i.event and is_linked_row(i.plain)]:
            event = item.value
            if unlinked and unlinked.get(event.pid, 0.0) > trio.current_time():
                # it unlinked that workflow lately (``UNLINK_GRACE``), and the row was
                # written before the other side heard of it: not taken, as such a word
                wf.unqueue_item(item)
                discard_requests(self, wf.wid, [item])
                continue
            if wf.trap_links or event.error is None:
                continue
            wf.watch_spent(EventKind.LINK_DOWN, event.pid)
            wf.unqueue_item(item)
            if cancelled_too(wf, event.error):
                discard_requests(self, wf.wid, [item])
            else:
                wf.requests_taken = added(wf.requests_taken, item.id)
                self.kill(wf.pid, linked_failure(event.pid, event.error))

    def end_pending_linked(self, wid: str, dead: Pid, error: ErrorInfo) -> bool:
        """``dead``, linked to the workflow ``wid`` that waits ``pending`` in the store,
        failed with ``error``: :meth:`end_pending_stored` ends it ``failed`` with the
        linked failure -- or ``cancelled``, when ``error`` is a cancel and a cancel of
        its own is under way (``cancelled_too``, as a running one ends). False if it is
        no such workflow (or a node claimed it meanwhile)."""
        if self.client or self.ownership is None or wid in self.active:
            return False
        record = self.store.get_workflow(wid)
        if record is None:
            return False
        if error.type == "WorkflowCancelled" and record.cancel_requested:
            return self.end_pending_stored(wid, WorkflowStatus.CANCELLED,
                                           cancelled_error(wid), record=record)
        return self.end_pending_stored(wid, WorkflowStatus.FAILED,
                                       linked_failure(dead, error), record=record)

    def _linked_exit_elsewhere(self, target: Pid, dead: Pid, error: ErrorInfo | None
                               ) -> None:
        """``dead``, linked to the workflow ``target`` that this node does not run,
        ended: to the node that owns it; if none does (it waits ``pending`` in the
        store: it never ran, it traps nothing), a failure ends it here, at once
        (:meth:`end_pending_stored`), or, claimed meanwhile, goes to its new owner."""
        ownership: Any = self.ownership
        me = ownership.pg.name
        send = partial(self.node.forward_linked_exit, target=target, dead=dead, error=error)

        def then(owner: str | None) -> None:
            if owner is not None and owner != me:
                send(owner)
            elif target.id in self.active:
                self.linked_exit(target, dead, error)  # claimed here meanwhile
            elif error is not None and not self.end_pending_linked(target.id, dead, error):
                self._to_owner(target, send)  # claimed meanwhile (or running unowned)

        self.elsewhere.later(partial(ownership.pg.owner_name, target.id), then)

    def cancel_event(self, target: Pid, by: Pid | None) -> bool:
        """``process.cancel(workflow_pid)``: a durable cancel request."""
        wf = self.active.get(target.id)
        if wf is None:
            return False
        self.request_cancel(target.id)
        return True

    def request_cancel_stored(self, wid: str, at: float | None = None, *,
                              record: WorkflowRecord | None = None) -> bool:
        """A cancel request for a workflow of the store this host does not run now (one
        waiting in its queue as the node stops), written at once (asked at ``at``, unix
        seconds; default now): it takes effect when a node runs it. False if the store
        has no such unfinished workflow. ``record``: its row, read by the caller (the
        write is conditional on it: one changed since is read again)."""
        from ._operate import flag_cancel

        if record is None:
            record = self.store.get_workflow(wid)
        if record is None:
            return False
        try:
            return flag_cancel(self.store, record, time=at) is None
        except NoSuchWorkflow:  # (deleted meanwhile)
            return False

    def end_pending_stored(self, wid: str, status: WorkflowStatus, error: ErrorInfo, *,
                           record: WorkflowRecord | None = None) -> bool:
        """In a cluster (a PostgreSQL store), a workflow that waits ``pending`` in the
        store for a node to claim it (not in this node's memory) ends at once, unrun,
        as one waiting in the queue of a SQLite node does: ``cancelled`` by a cancel
        (unless it ran before: a retry waiting for its turn runs, and gets the cancel
        as it replays), ``failed`` by a kill or a terminate (not with unfinished
        children: their nodes end them). One transaction, conditional on it being still
        pending and unclaimed (``end_pending_transaction``); True if it ended so, False
        if it is not such a workflow (or a node claimed it meanwhile: that node acts on
        the request).

        Written on the node's thread, after ``active`` was read: a claim of this node
        that committed meanwhile is adopted later, and its load reads the end and runs
        nothing (a write in a worker thread could land after that load)."""
        if self.client or self.ownership is None or wid in self.active:
            return False
        if record is None:
            record = self.store.get_workflow(wid)
        if record is None or not self._ends_unrun(record, status):
            return False
        if not self._write_end_pending(record, status, error):
            return False
        self._ended_pending(record, status, error)
        return True

    def _ends_unrun(self, record: WorkflowRecord, status: WorkflowStatus) -> bool:
        """The workflow of ``record`` (read by the caller) is one that
        :meth:`end_pending_stored` ends with ``status`` at once: pending in the store,
        not in this node's memory, and (a retry) with no unfinished child; for a cancel,
        one that never ran. (Whether a node claimed it is for the write to see.)
        Blocking: a retry's journal and children are read."""
        wid = record.workflow_id
        if self.client or self.ownership is None or wid in self.active \
                or record.status != WorkflowStatus.PENDING:
            return False
        if status is WorkflowStatus.CANCELLED and not self._never_ran(record):
            return False  # it ran before: it runs, and its code gets the cancel
        return record.attempt == 1 or all(
            WorkflowStatus(child.status).finished
            for child in self.store.list_workflows(parent=Pid(self.name, wid)))

    def _never_ran(self, record: WorkflowRecord) -> bool:
        """``_operate.never_ran`` in this node's store. Blocking."""
        from ._operate import never_ran

        return never_ran(self.store, record)

    def _write_end_pending(self, record: WorkflowRecord, status: WorkflowStatus,
                           error: ErrorInfo, unclaimed: bool | str = True) -> bool:
        """Write ``end_pending_transaction``; False if the workflow was claimed (or
        changed) meanwhile: its node has the request. Blocking."""
        from ._operate import end_pending_transaction

        try:
            self.store.write(end_pending_transaction(self.store, record, status, error,
                                                     unclaimed=unclaimed))
        except ValueError:
            return False
        return True

    def ended_in_store(self, wf: WorkflowInstance, record: WorkflowRecord) -> None:
        """``wf`` waits in this node's queue, but the store says it has ended: a tool
        ended it there (``garrison workflows cancel`` of a pending workflow, or
        ``terminate``, found no node holding the store) as this node opened the store
        and loaded it. It leaves the queue and never runs here; its handles get that
        end, its monitors and links hear of it as of any end (the tool's write gave the
        store's monitors their ``EXIT``)."""
        status = WorkflowStatus(record.status)
        error = record.error if record.error is not None else cancelled_error(wf.wid)
        self.queue.leave(wf)
        if self.active.get(wf.wid) is wf:
            del self.active[wf.wid]
        self._ended_pending(record, status, error)
        wf.status = wf.stored_status = status
        wf.error = error
        wf.result_json = None
        self._ended_fan_out(wf, status, Event(EventKind.EXIT, wf.pid, None, error), {},
                            wf.links)
        wf.done.set()
        wf.mark_exited()

    def _remember_end(self, wid: str, status: WorkflowStatus, result_json: str | None,
                      error: ErrorInfo | None, name: str) -> None:
        """Keep how ``wid`` ended for its handles (``finished``: the newest
        ``FINISHED_MEMORY`` ends; the result and error of the newest only, and of none
        larger than ``FINISHED_HELD_MAX``, up to ``FINISHED_HELD_TOTAL``)."""
        finished, held = self.finished, self._held
        # (an earlier end of the id, a retry's: replaced, and this one the newest in
        # both orders, or it is forgotten as the oldest while its result is the newest)
        self.forget_end(wid)
        self._ended_at[wid] = self.clock.now()
        size = _held_size(result_json, error)
        if size > FINISHED_HELD_MAX:
            finished[wid] = (status.value, None, None, name, False)
        else:
            finished[wid] = (status.value, result_json, error, name, True)
            if size:
                held[wid] = size
                self._held_total += size
            while self._held_total > FINISHED_HELD_TOTAL:
                oldest = next(iter(held))
                self._held_total -= held.pop(oldest)
                ended_as, _result, _error, its_name, _held = finished[oldest]
                finished[oldest] = (ended_as, None, None, its_name, False)
        if len(finished) > FINISHED_MEMORY:
            self.forget_end(next(iter(finished)))

    def forget_end(self, wid: str) -> None:
        """Drop what ``finished`` keeps of ``wid`` (it runs again, a retry; it ends
        again; or it is the oldest of more than ``FINISHED_MEMORY``)."""
        self.finished.pop(wid, None)
        self._ended_at.pop(wid, None)
        self._held_total -= self._held.pop(wid, 0)

    def forget_ends_before(self, before: float) -> None:
        """Forget the ends remembered before ``before`` (unix seconds, a retention's
        cutoff): prunable, they may be gone from the store (another node's pass, a
        tool's prune), and their ids started again elsewhere; a handle reads the store
        for them."""
        for wid in [w for w, at in self._ended_at.items() if at < before]:
            if wid not in self.active:
                self.forget_end(wid)

    def _ended_pending(self, record: WorkflowRecord, status: WorkflowStatus,
                       error: ErrorInfo) -> None:
        """What this node keeps of a pending workflow it ended in the store."""
        wid = record.workflow_id
        self.counts[status] += 1
        self._remember_end(wid, status, None, error, record.name)
        self.queue.ended_unclaimed(wid)
        log.info("workflow %s ended %s while it waited in the queue: %s", wid, status.value,
                 error, extra={"workflow_id": wid, "run_id": record.run_id})

    def request_cancel(self, wid: str, at: float | None = None, *,
                       into: Transaction | None = None, wake: bool = True) -> bool:
        """Flag the workflow cancelled; it sees ``WorkflowCancelled`` at its next durable
        operation (the flag is committed shortly, by the write-soon task, which can only
        log a failure: ``handle.cancel()`` commits first, see :meth:`cancel_workflow`).
        ``at`` (unix seconds): the cancel was asked then, while no node ran the workflow
        (its parent's, found as the node resumed it): it comes in its place in time, as
        ``WorkflowCore.cancel_at`` says. ``into``: the request is written with that
        transaction (the caller gives it to ``write_soon``), not alone; ``wake=False``:
        the caller wakes the workflow (``cancel_children``: in turns)."""
        if self.client or (self.ownership is not None and wid not in self.active):
            if self.end_pending_stored(wid, WorkflowStatus.CANCELLED, cancelled_error(wid)):
                return True  # it waited unclaimed: ended at once, never run
            return self.request_cancel_stored(wid, at)
        wf = self.active.get(wid)
        if wf is None:
            return False
        if not wf.cancel_requested and wf.cancel_at is None:  # (asked before: it stands)
            time = self.clock.now() if at is None else at
            if into is None:
                self.write_soon(Transaction().request_cancel(wid, time=time))
            else:
                into.request_cancel(wid, time=time)
            self._flag_cancel(wf, at)
        if wake:
            wf.wake()
        return True

    def _flag_cancel(self, wf: WorkflowInstance, at: float | None = None) -> None:
        """What :meth:`request_cancel` does in memory, its request written (or on its
        way to the store)."""
        if at is not None and not self.queue.holds(wf):  # (one that never ran: at once)
            wf.cancel_at = at
            self.cancel_children(wf, at)
        else:
            wf.cancel_requested = True
            # what its inbox holds now came before the cancel: received first
            wf.cancel_mark = max((item.id for item in wf.pending), default=None)
            try:
                self.cancel_children(wf)
            finally:  # (its children elsewhere not asked: it ends cancelled all the same)
                self.queue.cancelled(wf)  # waiting in the queue: it ends at once

    async def _pruned_since(self, wid: str) -> bool:
        """Whether ``wid``, which this host remembers ended, is gone from the store (a
        prune of a tool, or of another node of the cluster, deleted it): then what is
        remembered of it is forgotten, and True. A start of an id this host ended
        reads the store once for it."""
        if await run_blocking(self.store.get_workflow, wid) is not None:
            return False
        if wid in self.finished and wid not in self.active:
            self.forget_end(wid)
        return True

    def _exists_as_another(self, wid: str, name: str, plain_input: list[Any]) -> None:
        """A start of ``name`` with ``plain_input`` found ``wid`` taken: it returns that
        workflow's pid (a start is idempotent by id), and warns if that workflow runs
        another function (said with its status), or was started with other arguments (a
        start of the wrong function, or of another order, under an id in use is easily
        missed). The arguments of one this node finished are read from its row: only
        here, where the id exists (a new id's start reads nothing for this)."""
        live = self.active.get(wid)
        known = self.finished.get(wid)
        there_input: list[Any] | None = None
        if live is not None:
            there: str | None = live.name
            status = live.status.value
            there_input = live.input_plain
        elif known is not None:
            status, there = known[0], known[3]
            if there == name:
                record = self._row_for_a_warning(wid)
                there_input = None if record is None else record.input
        else:
            record = self.store.get_workflow(wid)
            there = None if record is None else record.name
            status = "" if record is None else str(record.status)
            there_input = None if record is None else record.input
        if there is not None and there != name:
            log.warning("workflow %s exists already (%s, %s): this start of %s returns its "
                        "pid and leaves it as it is (give the new workflow another id)",
                        wid, there, status, name, extra={"workflow_id": wid})
        elif there_input is not None and there_input != plain_input \
                and not self._continued(wid, live):
            log.warning("workflow %s exists already, started with other arguments (%s, not "
                        "%s): this start returns its pid and leaves it as it is (give the "
                        "new workflow another id)", wid, _cut(there_input), _cut(plain_input),
                        extra={"workflow_id": wid})

    def _continued(self, wid: str, live: WorkflowInstance | None) -> bool:
        """Whether ``wid``'s run now is one ``continue_as_new`` started: its arguments are
        those it carried on with, not the start's (an unchanged program started again by
        the same id must not be told it gave other arguments). Read (the journal's first
        seq) only when the arguments differ; ``False`` if it cannot be read."""
        if live is not None:
            return live.continued
        try:
            return 0 in self.store.journal_sizes(wid)  # (a CONTINUED record holds seq 0)
        except Exception:
            return False

    def _row_for_a_warning(self, wid: str) -> WorkflowRecord | None:
        """The row of ``wid``, which this node finished, for the arguments it was started
        with; ``None`` if it is gone (deleted since) or cannot be read: then nothing is
        compared (the start itself does not depend on it)."""
        try:
            return self.store.get_workflow(wid)
        except Exception as exc:
            log.debug("workflow %s: its row could not be read to compare its arguments: "
                      "%s", wid, exc, extra={"workflow_id": wid})
            return None

    async def cancel_workflow(self, wid: str) -> bool:
        """``handle.cancel()``: :meth:`request_cancel`, returning once it is committed;
        here the request is committed first and flagged in memory after, so that a
        request the store refuses raises its :class:`~garrison.StoreError` and leaves
        nothing flagged. For a workflow another node runs (or a client's), the store is
        read and written in a worker thread: a slow database holds up the caller, not
        the event loop.

        In a cluster, its children another node runs are asked through the store: a
        read or write of that the store fails raises a :class:`~garrison.StoreError`
        saying so, the cancel itself written; a repeated cancel asks for them again
        (the node also asks again at its next cancel or resume, and at the workflow's
        end)."""
        if wid in self._elsewhere_unasked:  # (its children elsewhere: a failed ask)
            self.ask_again_for(wid)
        if self.client or (self.ownership is not None and wid not in self.active):
            # (read, and a workflow that never ran ended at once, in a worker thread:
            # written only if no live node, this one included, claimed it; claimed
            # meanwhile, its node runs it cancelled)
            record = await run_blocking(self.store.get_workflow, wid)
            if (not self.client and record is not None
                    and record.status == WorkflowStatus.PENDING
                    and await run_blocking(self._never_ran, record)
                    and wid not in self.active):
                error = cancelled_error(wid)
                if await run_blocking(self._write_end_pending, record,
                                      WorkflowStatus.CANCELLED, error, "by_any"):
                    self._ended_pending(record, WorkflowStatus.CANCELLED, error)
                    return True
                if self.ownership.giving_up(wid) and self.end_pending_stored(
                        wid, WorkflowStatus.CANCELLED, error):
                    # this node made it and handed it over (full, or draining): the
                    # store names it the owner until its release lands, which the
                    # write above refused. On the node's thread, as ``request_cancel``
                    # writes it: a claim of this node meanwhile loads the end.
                    return True
            cancelled: bool = await run_blocking(self.request_cancel_stored, wid)
            self._claimed_meanwhile(wid)
            return cancelled
        wf = self.active.get(wid)
        if wf is None:
            return False
        if wf.cancel_requested or wf.cancel_at is not None:  # asked before: it stands
            wf.wake()
            await self.committed_soon()  # (its request, if on its way to the store)
            return True
        # Committed before it is flagged in memory: a cancel that returns is in the store
        # (a node that restarts resumes the workflow cancelled), and one the store
        # refuses raises and flags nothing (asked again, it is written again). (Not
        # through ``write_soon``, whose writer can only log a failure.)
        try:
            await self.store.commit(Transaction().request_cancel(wid, time=self.clock.now()))
        except StoreError as exc:
            if isinstance(exc, WorkflowMoved):  # (it names the workflow, and says why)
                raise
            raise StoreError(self.store.path, f"the cancel of workflow {wid!r} was not "
                             f"written: {exc.reason_at(self.store.path)}; it is not "
                             "cancelled") from exc
        if self.active.get(wid) is not wf:  # it ended (or moved) meanwhile
            return True
        held = self.queue.holds(wf)
        try:
            if not wf.cancel_requested and wf.cancel_at is None:  # (or asked meanwhile)
                self._flag_cancel(wf)
        except StoreError as exc:  # (its children elsewhere were not all asked)
            wf.wake()
            raise self.unasked_error(wid, exc) from exc
        wf.wake()
        if held and wf.wid in self.queue.ending:
            await wf.exited.wait()  # waiting in the queue: it has ended when this returns
        return True

    def ask_again_for(self, wid: str, what: str = "cancel") -> None:
        """A repeated cancel (``what``; or terminate) of ``wid``, whose children
        elsewhere were not all asked: asked again (with any others left so); the
        store's error raised if it fails (see :meth:`unasked_error`)."""
        try:
            self.ask_elsewhere_again()
        except StoreError as exc:
            raise self.unasked_error(wid, exc, what) from exc

    def ends_unasked(self, wid: str) -> bool:
        """Whether the terminated workflow ``wid``'s children on other nodes were not
        all asked to end (the store failed that ask): see :meth:`ask_again_for`."""
        return wid in self._ends_unasked

    def unasked_error(self, wid: str, exc: StoreError, what: str = "cancel") -> StoreError:
        """What ``handle.cancel()`` (``what``; or ``handle.terminate()``) raises when
        the children another node runs of the workflow it cancelled (terminated) could
        not be asked to cancel (end) too."""
        asked = "cancel" if what == "cancel" else "end"
        return StoreError(self.store.path, f"the {what} of workflow {wid!r} was written, "
                          f"but its children on other nodes were not asked to {asked}: "
                          f"{exc.reason_at(self.store.path)}; a repeated {what} asks "
                          "them again")

    async def committed_soon(self) -> None:
        """Wait until what ``write_soon`` holds now is committed."""
        done = trio.Event()
        self.write_soon(Transaction(), lambda _results: done.set())
        await done.wait()

    def check_supervisors(self) -> None:
        """See :func:`._recovery.check_supervisors`."""
        check_supervisors(self)

    def cancel_children(self, wf: WorkflowInstance, at: float | None = None) -> None:
        """Unfinished children of a cancelled workflow are cancelled too (in a cluster,
        those another node runs as well: their request goes through the store); ``at``:
        the parent's cancel was asked then (see :meth:`request_cancel`).

        Those elsewhere are asked of the store once for the whole tree, as the cancel of
        every workflow of it here is flagged (``Store.unfinished_children``), not once
        for each: a parent of 2,000 children read the store 2,001 times in the node's
        thread, and its event loop stood still meanwhile."""
        self.cancel_trees([(wf, at)])

    def cancel_trees(self, roots: Sequence[tuple[WorkflowInstance, float | None]]) -> None:
        """:meth:`cancel_children` of each of ``roots`` (a workflow, its cancel's
        ``at``), their children elsewhere asked of the store in one read for all (a
        resume of thousands of cancelled workflows reads it once, not once each)."""
        if self.ownership is None or self._cancelled_tree is not None:
            for wf, at in roots:
                if self._cancelled_tree is not None:  # (a descendant: asked with the tree's)
                    self._cancelled_tree.append((wf, at))
                self._cancel_children_here(wf, at)
            return
        if not roots and not self._elsewhere_unasked and not self._ends_unasked:
            return
        tree = self._cancelled_tree = list(roots)
        try:
            for wf, at in roots:
                self._cancel_children_here(wf, at)
        finally:
            self._cancelled_tree = None
        self._ask_elsewhere(tree)

    def _ask_elsewhere(self, tree: list[tuple[WorkflowInstance, float | None]],
                       requested: list[WorkflowRecord] | None = None) -> None:
        """Cancel the children another node runs of ``tree``'s workflows, and of those
        left unasked before (``_elsewhere_unasked``), in one read of the store; and end
        those of terminated workflows left so (``_ends_unasked``: their requests in one
        write, each added to ``requested``). Each of them stays unasked until every
        child of theirs found was asked: a read or a write the store fails raises (to
        ``handle.cancel()`` or ``handle.terminate()``, which committed the parent's
        request), and a next chance asks again, so that no child elsewhere is left
        running for good under a cancelled or terminated parent by a passing store
        error."""
        for wf, at in tree:
            self._elsewhere_unasked.setdefault(wf.wid, (wf, at))
        asked = list(self._elsewhere_unasked.values())
        ended = list(self._ends_unasked.values())
        terminated = {str(wf.pid): wf.wid for wf in ended}
        parents = {str(parent.pid): (parent, at) for parent, at in asked}
        compensating: dict[str, frozenset[str]] = {}
        flags: list[tuple[WorkflowRecord, float | None]] = []
        requests = Transaction()
        unrun: list[_Unrun] = []  # (waiting unclaimed: ended at once, never run)
        terminating: list[WorkflowRecord] = []
        read = {wf.wid: wf for wf in [*ended, *(parent for parent, _ in asked)]}
        damaged: list[DamagedRecord] = []
        found = self.children_elsewhere(list(read.values()), damaged)
        for exc in damaged:  # (named, and asked without its row: not the tree's ask)
            self._ask_damaged(exc, terminated, {pid: (parent.wid, at) for pid, (parent, at)
                                                in parents.items()}, requests)
        for record in found:
            if str(record.parent) in terminated:  # (its parent's terminate: it ends)
                reason = parent_terminated(terminated[str(record.parent)])
                terminating.append(record)
                if self._ends_unrun(record, WorkflowStatus.FAILED):
                    unrun.append(_Unrun(record, WorkflowStatus.FAILED, reason, None))
                else:
                    request_transaction(record.workflow_id, reason, record.attempt,
                                        requests)
                continue
            parent, at = parents[str(record.parent)]
            if parent.wid not in compensating:
                compensating[parent.wid] = _spawned_after_cancel(parent)
            if record.workflow_id in compensating[parent.wid]:
                continue
            if self._ends_unrun(record, WorkflowStatus.CANCELLED):
                unrun.append(_Unrun(record, WorkflowStatus.CANCELLED,
                                    cancelled_error(record.workflow_id), at))
            else:
                flags.append((record, at))
        self._write_asks(requests, unrun, flags)
        for wf in ended:
            self._ends_unasked.pop(wf.wid, None)
        if requested is not None:
            requested.extend(terminating)
        for parent, _ in asked:
            self._elsewhere_unasked.pop(parent.wid, None)

    def _ask_damaged(self, exc: DamagedRecord, terminated: Mapping[str, str],
                     cancelled: Mapping[str, tuple[str, float | None]],
                     requests: Transaction, *, elsewhere: bool = True) -> None:
        """A child elsewhere of a cancelled or terminated tree whose row cannot be read
        (``exc``): named in an error line (its id, its parent's, what is damaged), and
        asked into ``requests`` without its row, its terminate requested (of its
        attempt as stored, one request however often asked: a node's start asks it at
        each start; for whatever attempt runs where none is read) or its cancel
        flagged, so that it ends once repaired; the tree's other children are asked as
        ever. ``terminated``, ``cancelled``: the tree's parents by pid (their id; and
        the time their cancel was asked). ``elsewhere``: the child is one another node
        runs (a tree's ask); not so at a node's start (any node may have claimed it,
        this one too), whose line says nothing of where it is."""
        wid, parent = exc.workflow_id, exc.parent or ""
        if parent in terminated:
            parent_id, asked = terminated[parent], "end"
            request_transaction(wid, parent_terminated(parent_id), exc.attempt, requests)
        elif parent in cancelled:
            (parent_id, at), asked = cancelled[parent], "cancel"
            requests.request_cancel(wid, time=at)
        else:  # (not a parent asked: cannot be, as read by its parent)
            return
        log.error("workflow %s, a child of workflow %s%s, cannot be read: %s (%s); it "
                  "is asked to %s without its row, and no node runs it until it is "
                  "repaired", wid, parent_id, " on another node" if elsewhere else "",
                  exc, exc.fault, asked, extra={"workflow_id": wid})

    async def ask_children_of_ended(self) -> None:
        """At a node's start in a cluster, and as a node of it is lost (see
        :meth:`ask_children_of_ended_soon`): the children still unfinished of workflows
        that ended cancelled, or terminated (``failed`` with the error of a terminate
        request of their last attempt, or their parent's terminate's:
        ``ended_by_terminate``; not one that failed on its own), are asked again, as
        the parent's end asks them: an ask of them the store failed, then the node
        stopped (or crashed), left them running for good under an ended parent, the
        asks still to make held only in the memory of the node that stopped
        (``_elsewhere_unasked``, ``_ends_unasked``). Read from the store
        (``Store.children_of_ended``), so any node's start asks them, whoever ended the
        parent. A cancelled parent's compensations (spawned after its cancel) and
        children flagged already are left as they are, and so are the children of a
        parent whose row, journal or request cannot be read (a ``DamagedRecord``: named
        in an error line, the others asked); a child this node runs is refreshed once
        asked. Asked twice (two nodes at once, a start and a takeover), a child is
        asked once in effect: one terminate request per attempt (a message id of its
        own), a cancel flag that keeps the time of the first, an end of one waiting
        unclaimed written only while it is still so.

        The children are read in a worker thread; then the parents are read and their
        children asked :data:`ASK_CHUNK` parents at a time (their rows, journals and
        requests in a read of each for all of them), the node's other tasks running
        between two chunks: read one by one in one go in the node's thread, thousands
        of ended parents (of children that run on: compensations, children of parents
        failed on their own) held the node's event loop for seconds at every start. A
        closing host asks no more. The store's error of a chunk is raised once
        every other chunk is asked (a later start asks again)."""
        if self.client or self.ownership is None:
            return
        damaged: list[DamagedRecord] = []
        # (tens of thousands of rows: read in a worker thread)
        children = await run_blocking(self.store.children_of_ended, self.name, damaged)
        if not children and not damaged:
            return
        of: dict[str, list[WorkflowRecord]] = {}  # (parent pid -> its children)
        for record in children:
            of.setdefault(str(record.parent), []).append(record)
        bad_of: dict[str, list[DamagedRecord]] = {}
        for exc in damaged:
            bad_of.setdefault(exc.parent or "", []).append(exc)
        pids = list(dict.fromkeys([*of, *bad_of]))
        failed: Exception | None = None
        for first in range(0, len(pids), ASK_CHUNK):
            if first:
                await trio.lowlevel.checkpoint()  # (the node's other tasks run)
            if self.closing:
                return
            chunk = pids[first:first + ASK_CHUNK]
            try:
                self._ask_ended_chunk({pid: of.get(pid, []) for pid in chunk},
                                      [bad for pid in chunk for bad in bad_of.get(pid, [])])
            except Exception as exc:  # (raised once the other chunks are asked)
                if failed is None:
                    failed = exc
        if failed is not None:
            raise failed

    def ask_children_of_ended_soon(self, departed: Sequence[str]) -> None:
        """The nodes ``departed`` of the cluster were lost (this node marked them lost
        as their lease lapsed, or is the oldest live node as their store gave up):
        :meth:`ask_children_of_ended` in the background, as at a node's start, for the
        children one of them left unasked as it stopped (it may never start again).
        See ``_recovery.ask_children_of_ended_soon``."""
        ask_children_of_ended_soon(self, departed)

    def _ended_parents(self, pids: Sequence[str], flagless: Iterable[str]
                       ) -> tuple[dict[str, str], dict[str, tuple[str, float | None]],
                                  dict[str, frozenset[str]]]:
        """The parents ``pids`` of :meth:`_ask_ended_chunk` read: those terminated (pid
        -> id), those cancelled (pid -> id and the time their cancel was asked) and the
        compensations of those of ``flagless`` (pids of cancelled parents with a child
        not flagged) among them; their rows in one read, the journals of those
        cancelled of ``flagless`` in one, the requests of those failed in one (a
        damaged row: each read alone, which names it). A parent whose row, journal or
        request is damaged is named in an error line, its children left as they are."""
        store = self.store
        wids = {pid: pid.partition("/")[2] for pid in pids}
        unread: list[DamagedRecord] = []
        rows = store.workflows_by_id(list(wids.values()), unread)
        for exc in unread:
            _parent_unread(exc.workflow_id, exc)
        wanted = set(flagless)
        terminated: dict[str, str] = {}
        cancelled: dict[str, tuple[str, float | None]] = {}
        compensating: dict[str, frozenset[str]] = {}
        journals = [wids[pid] for pid in pids if pid in wanted and wids[pid] in rows
                    and rows[wids[pid]].status == WorkflowStatus.CANCELLED]
        failing = [r for pid in pids if (r := rows.get(wids[pid])) is not None
                   and r.status == WorkflowStatus.FAILED and r.error is not None
                   and not ended_with_parent(r.error)]
        try:
            read = store.resume_rows(journals) if journals else {}
        except DamagedRecord:  # (each read alone)
            read = {}
        try:
            requests: Mapping[str, InboxRecord] | None = store.inbox_messages(
                [terminate_request_id(r.workflow_id, r.attempt) for r in failing])
        except DamagedRecord:  # (each read alone, which names it)
            requests = None
        for pid, wid in wids.items():
            parent = rows.get(wid)
            if parent is None:  # (deleted meanwhile, or damaged: named)
                continue
            try:
                if parent.status == WorkflowStatus.CANCELLED:
                    if pid in wanted:
                        had = read.get(wid)
                        journal = had.journal if had is not None else None
                        found, _size = journal or store.journal_entries(wid)
                        compensating[pid] = _spawned_after_cancel_in(
                            {entry.seq: entry for entry in (Entry(*row) for row in found)})
                    cancelled[pid] = (wid, parent.cancel_time)
                elif ended_by_terminate(store, parent, requests):  # (by its error)
                    terminated[pid] = wid
            except DamagedRecord as exc:
                _parent_unread(wid, exc)
                cancelled.pop(pid, None)
        return terminated, cancelled, compensating

    def _ask_ended_chunk(self, of: Mapping[str, Sequence[WorkflowRecord]],
                         damaged: Sequence[DamagedRecord]) -> None:
        """:meth:`ask_children_of_ended` of the ended parents of ``of`` (pid -> its
        unfinished children) and of the damaged children ``damaged`` (theirs among
        them). Blocking: a chunk's reads and writes."""
        store = self.store
        terminated, cancelled, compensating = self._ended_parents(
            list(of), (pid for pid, kids in of.items()
                       if any(not kid.cancel_requested for kid in kids)))
        requests = Transaction()
        unrun: list[_Unrun] = []
        flags: list[tuple[WorkflowRecord, float | None]] = []
        asked: dict[str, list[str]] = {}  # (parent id -> its children asked)
        for pid, kids in of.items():
            for record in kids:
                wid = record.workflow_id
                if pid in terminated:
                    try:
                        if store.inbox_message(terminate_request_id(wid, record.attempt)):
                            continue  # (asked before: its node acts on it)
                    except DamagedRecord:  # (asked before too: its node names it)
                        continue
                    reason = parent_terminated(terminated[pid])
                    if self._ends_unrun(record, WorkflowStatus.FAILED):
                        unrun.append(_Unrun(record, WorkflowStatus.FAILED, reason, None))
                    else:
                        request_transaction(wid, reason, record.attempt, requests)
                    asked.setdefault(terminated[pid], []).append(wid)
                elif pid in cancelled:
                    if record.cancel_requested or wid in compensating.get(pid, ()):
                        continue
                    parent_id, at = cancelled[pid]
                    if self._ends_unrun(record, WorkflowStatus.CANCELLED):
                        unrun.append(_Unrun(record, WorkflowStatus.CANCELLED,
                                            cancelled_error(wid), at))
                    else:
                        flags.append((record, at))
                    asked.setdefault(parent_id, []).append(wid)
        for bad in damaged:
            self._ask_damaged(bad, terminated, cancelled, requests, elsewhere=False)
        if not asked and not requests.ops:
            return
        self._write_asks(requests, unrun, flags)
        for parent_id, wids in asked.items():
            more = len(wids) - NAMED_CHILDREN
            log.warning("workflow %s has ended, but %d of its children were still "
                        "unfinished (an ask of them failed before a node stopped): asked "
                        "to %s now (%s%s)", parent_id, len(wids),
                        "cancel" if any(p == parent_id for p, _ in cancelled.values())
                        else "end", ", ".join(wids[:NAMED_CHILDREN]),
                        f" and {more} more" if more > 0 else "",
                        extra={"workflow_id": parent_id})
        for wids in asked.values():
            for wid in wids:
                if wid in self.active:  # (runs here: its request or flag read now)
                    refresh(self, wid)

    def end_children_elsewhere(self, tree: Sequence[WorkflowInstance]
                               ) -> list[WorkflowRecord]:
        """The children another node runs (or none yet) of ``tree``'s workflows (a
        terminated workflow and its descendants here) asked to end, in one read of the
        store and one write (with those left unasked before, see
        :meth:`_ask_elsewhere`); their rows as read. A failure of that read or write
        raises the store's error, and the tree stays unasked until a next chance asks
        again: a repeated terminate, the end of one of them, the node's next cancel,
        terminate or resume of a tree. (Off a cluster: nothing.)"""
        if self.ownership is None or not tree:
            return []
        for wf in tree:
            self._ends_unasked.setdefault(wf.wid, wf)
        requested: list[WorkflowRecord] = []
        self._ask_elsewhere([], requested)
        return requested

    @contextlib.contextmanager
    def cancels_batched(self) -> Iterator[None]:
        """Within: the children elsewhere of each workflow whose cancel is flagged (a
        resume's, a claim's, a tool's cancels woken together) are asked of the store in
        one read as it ends, not one read each (N cancelled workflows resumed read it N
        times in the node's thread), with those whose ask failed before (the next
        chunk of wakeups asks again for a tool's cancel whose ask and whose parent's
        end's ask failed: nothing else might). A failure of that ask is logged: those
        workflows are asked again at the node's next chance (see
        :meth:`_ask_elsewhere`)."""
        if self.ownership is None or self._cancelled_tree is not None:
            yield
            return
        tree: list[tuple[WorkflowInstance, float | None]] = []
        self._cancelled_tree = tree
        try:
            yield
        finally:
            self._cancelled_tree = None
            for wf, at in tree:  # (asked below, or at the next chance)
                self._elsewhere_unasked.setdefault(wf.wid, (wf, at))
        if self.closing or not (tree or self._elsewhere_unasked or self._ends_unasked):
            return  # (a store closing: a restart asks again, their cancels stored)
        try:
            self.ask_elsewhere_again()
        except Exception as exc:
            log.warning("the children on other nodes of %d cancelled workflows could not "
                        "be asked to cancel: %s; asked again at the next wakeups, cancel "
                        "or resume of this node", len(self._elsewhere_unasked), exc)

    def ask_elsewhere_again(self) -> None:
        """Ask again for the children elsewhere of cancelled or terminated workflows
        whose first ask failed (see :meth:`_ask_elsewhere`); raises the store's error if
        it fails again."""
        if (self._elsewhere_unasked or self._ends_unasked) and self.ownership is not None:
            self._ask_elsewhere([])

    def _write_asks(self, requests: Transaction, unrun: Sequence[_Unrun],
                    flags: Sequence[tuple[WorkflowRecord, float | None]]) -> None:
        """Write what :meth:`_ask_elsewhere` asks of the children another node runs of a
        tree, its rows read together (``children_elsewhere``, not read again: a blocking
        round trip each in the node's thread): ``requests``, the terminate requests of
        those running; the ends of ``unrun``, those waiting unclaimed, which end at once
        (``end_pending_transaction``, each conditional on the child being still
        pending and unclaimed); the cancel flags of ``flags`` (each with the time its
        cancel was asked; conditional on its row). All in one database transaction
        (``Store.write_each``: a write each was a round trip and a commit each in the
        node's thread, its event loop still meanwhile). One whose row changed since it
        was read (or whose place failed) is handled alone: an end read again, and if
        it was claimed meanwhile its node is asked; a flag as ``flag_cancel`` handles it
        (read again, flagged, or moot). One whose inbox this node cannot read (a
        ``DamagedRecord``: its end reads it) is asked as a claimed one is, the node that
        claims it naming it. A failure of the requests, or of one handled alone (the
        store's error, or a row of it damaged since it was read), is raised once every
        other one is handled."""
        from ._operate import end_pending_transaction, flag_cancel, flag_transaction

        if not requests.ops and len(unrun) + len(flags) <= 1:  # (nothing to share)
            for end in unrun:
                self._end_unrun_alone(end, record=end.record)
            for record, at in flags:
                self.request_cancel_stored(record.workflow_id, at, record=record)
            return
        # (the timers and inbox of those that never ran, read together: two reads each
        # were two round trips each in the node's thread; a retry's read alone, not its
        # whole journal with them)
        first = [end.record.workflow_id for end in unrun if end.record.attempt == 1]
        rows = self.store.resume_rows(first) if len(first) > 1 else {}
        ends: list[tuple[_Unrun, Transaction]] = []
        flags = list(flags)
        for end in unrun:
            try:
                ends.append((end, end_pending_transaction(
                    self.store, end.record, end.status, end.error,
                    rows=rows.get(end.record.workflow_id))))
            except DamagedRecord:  # (its inbox: asked, not ended, not the tree's ask)
                self._ask_unrun(end, requests, flags)
        unrun = [end for end, _tx in ends]
        txs = [requests] if requests.ops else []
        txs += [tx for _end, tx in ends]
        txs += [flag_transaction(record, at) for record, at in flags]
        outcomes = self.store.write_each(txs)
        assert outcomes is not None  # (``unless_node`` not asked)
        failed = outcomes.pop(0) if requests.ops else None
        # (one handled alone that the store fails is raised once every other is
        # handled: raised at once, those the shared write ended after it were never
        # counted nor said ended here, and the flags after it were not written)
        # (and so is one that is not the store's: a child's row damaged since it was
        # read, a ``DamagedRecord``, left the others after it unhandled)
        alone: list[Exception] = []
        for end, outcome in zip(unrun, outcomes[:len(unrun)], strict=True):
            if not isinstance(outcome, Exception):
                self._ended_pending(end.record, end.status, end.error)
                continue
            try:  # (changed, claimed, or not written)
                self._end_unrun_alone(end)
            except Exception as exc:
                alone.append(exc)
        for (record, at), outcome in zip(flags, outcomes[len(unrun):], strict=True):
            try:
                if isinstance(outcome, ValueError):  # it changed since it was read
                    flag_cancel(self.store, record, time=at, tried=True)
                elif isinstance(outcome, Exception):  # (as today: written alone, raised)
                    self.request_cancel_stored(record.workflow_id, at, record=record)
            except NoSuchWorkflow:  # (deleted meanwhile)
                pass
            except Exception as exc:
                alone.append(exc)
        if isinstance(failed, Exception):  # (raised once the others' are handled)
            raise failed
        if alone:
            raise alone[0]

    def _end_unrun_alone(self, end: _Unrun, record: WorkflowRecord | None = None) -> None:
        """End the unclaimed child ``end`` names alone (its row ``record``, or read
        again), as :meth:`end_pending_stored` ends it; claimed (or changed) meanwhile,
        its node is asked: its cancel flagged, or its terminate requested."""
        wid = end.record.workflow_id
        if self.end_pending_stored(wid, end.status, end.error, record=record):
            return
        if end.status is WorkflowStatus.CANCELLED:
            self.request_cancel_stored(wid, end.at)
        else:
            self.store.write(request_transaction(wid, end.error, end.record.attempt))

    @staticmethod
    def _ask_unrun(end: _Unrun, requests: Transaction,
                   flags: list[tuple[WorkflowRecord, float | None]]) -> None:
        """Ask the unclaimed child ``end`` names as one a node runs is asked, its end
        not written here: its terminate into ``requests``, or its cancel flag into
        ``flags`` (the node that claims it acts on either)."""
        if end.status is WorkflowStatus.CANCELLED:
            flags.append((end.record, end.at))
        else:
            request_transaction(end.record.workflow_id, end.error, end.record.attempt,
                                requests)

    def _cancel_children_here(self, wf: WorkflowInstance, at: float | None) -> None:
        """:meth:`cancel_children` of the children of ``wf`` in this node's memory."""
        children = self.active.children_of(wf.pid)
        if not children:
            return
        compensating = _spawned_after_cancel(wf)
        flagged = [child for child in children
                   if not child.done.is_set() and child.wid not in compensating]
        if flagged:
            # (flagged with its end too)
            self._cancelled_children[wf.wid] = [child.wid for child in flagged]
        # Each flagged now (what its inbox holds now comes before the cancel), its
        # request written with others' (a transaction each CANCEL_CHUNK), and woken in
        # turns: woken at once, thousands of children would run their cancellation in
        # one scheduler pass, the node frozen meanwhile (no other workflow, process,
        # timer or lease renewal runs).
        tx = Transaction()
        for n, child in enumerate(flagged, 1):
            self.request_cancel(child.wid, at, into=tx, wake=False)
            if n % CANCEL_CHUNK == 0 or n == len(flagged):
                if tx.ops:
                    self.write_soon(tx)
                tx = Transaction()
        self._wake_in_turns(flagged)

    def _wake_in_turns(self, wfs: list[WorkflowInstance]) -> None:
        """Wake ``wfs``: the first ``CANCEL_CHUNK`` now, the rest ``CANCEL_CHUNK`` a
        scheduler pass (``_wake_task``); all now as the node closes."""
        for wf in wfs[:CANCEL_CHUNK]:
            wf.wake()
        later = wfs[CANCEL_CHUNK:]
        if not later:
            return
        if self.closing or self._nursery is None:
            for wf in later:
                wf.wake()
            return
        self._to_wake.extend(later)
        if not self._waking:
            self._waking = True
            self._nursery.start_soon(self._wake_task)

    async def _wake_task(self) -> None:
        """Wake what ``_wake_in_turns`` left, ``CANCEL_CHUNK`` a scheduler pass."""
        try:
            to_wake = self._to_wake
            while to_wake:
                await trio.lowlevel.checkpoint()
                for _ in range(min(CANCEL_CHUNK, len(to_wake))):
                    to_wake.popleft().wake()
        finally:
            self._waking = False

    def children_elsewhere(self, wfs: Sequence[WorkflowInstance],
                           damaged: list[DamagedRecord] | None = None
                           ) -> list[WorkflowRecord]:
        """The unfinished children of ``wfs`` (a tree's workflows) that another node of
        the cluster runs (or nobody yet): their cancel or terminate goes through the
        store. One read of the store for all of them (``Store.unfinished_children``).
        None off a cluster (every unfinished child of a workflow here is here). With
        ``damaged``, a child whose row cannot be read is added there, not raised."""
        if self.ownership is None or not wfs:
            return []
        unread: list[DamagedRecord] = []
        found = [record for record in self.store.unfinished_children(
                    [wf.pid for wf in wfs], None if damaged is None else unread)
                 if record.workflow_id not in self.active]
        if damaged is not None:
            damaged.extend(exc for exc in unread if exc.workflow_id not in self.active)
        return found

    def kill(self, target: Pid, reason: ErrorInfo) -> bool:
        wf = self.active.get(target.id)
        if wf is None:  # (in a cluster, one waiting unclaimed in the store ends now)
            return self.end_pending_stored(target.id, WorkflowStatus.FAILED, reason)
        if wf.done.is_set():
            return False
        if self.queue.killed(wf, reason):  # waiting in the queue: it ends at once
            return True
        wf.stop_with(reason)
        return True

    async def wait_exited(self, target: Pid) -> None:
        wf = self.active.get(target.id)
        if wf is not None:
            await wf.done.wait()

    def is_alive(self, pid: Pid) -> bool:
        wf = self.active.get(pid.id)
        return wf is not None and not wf.done.is_set()

    def inbox_stats(self) -> tuple[int, int, Pid | None]:
        """(messages and events waiting in the inboxes of the workflows in memory here,
        the most waiting at one, its pid), as a process host's: ``node.stats()`` adds
        them up. Read from their pending lists, kept anyway: nothing is counted per
        message for it. Nothing once the host stopped: what they had not received waits
        in the store for the next node (as :meth:`live_count` counts none)."""
        if self.stopped.is_set():
            return 0, 0, None
        total = largest = 0
        at: Pid | None = None
        for wf in self.active.values():
            n = len(wf.pending)
            total += n
            if n > largest:
                largest, at = n, wf.pid
        return total, largest, at

    async def wait_started(self, target: Pid) -> None:
        """Return once the workflow ``target`` runs: at once unless it waits in the
        host's queue (:meth:`waits_in_queue`), else once it leaves it -- it runs, ended
        without running, or the node closes."""
        wf = self.active.get(target.id)
        if wf is not None:
            await self.queue.wait_run(wf)

    def waits_in_queue(self, pid: Pid) -> str | None:
        """``None`` unless the workflow ``pid`` was created but waits in the host's
        queue, its limits taken; then those limits, in words (``"max_concurrent=1"``)."""
        wf = self.active.get(pid.id)
        if wf is None or not self.queue.waits(wf):
            return None
        limits = self.queue.limits
        said = [f"{name}={value}" for name, value in (
            ("max_concurrent", limits.max_concurrent),
            ("cluster_max_concurrent", limits.cluster_max_concurrent),
            ("rate", limits.rate)) if value is not None]
        return ", ".join(said) or "its limits"

    def live_count(self) -> int:
        """Workflows running or parked (not those waiting in the queue); none once the
        host stopped (what did not end waits in the store for the next node, though
        this node's memory still holds it parked)."""
        if self.stopped.is_set():
            return 0
        return sum(1 for wf in self.active.values() if not wf.done.is_set()) - \
            len(self.queue.held)

    def workflow_infos(self, limit: int) -> list[ProcessInfo]:
        """A :class:`~garrison.ProcessInfo` snapshot of the first ``limit`` workflows
        :meth:`live_count` counts, each a process of this host (its pid, name as
        ``label``, parent, messages and events waiting, links, monitors, names): the
        console's Node page lists them with the processes. Not a process host's
        ``process_infos``: ``node.processes()`` lists processes only."""
        if self.stopped.is_set():  # (none live: see live_count)
            return []
        held = self.queue.held
        live = (wf for wf in self.active.values()
                if not wf.done.is_set() and held.get(wf.wid) is not wf)
        infos = []
        for wf in itertools.islice(live, max(limit, 0)):
            events = sum(1 for item in wf.pending if item.event)
            infos.append(ProcessInfo(
                pid=wf.pid, alive=True, label=wf.name, parent=wf.parent,
                queued=len(wf.pending) - events, events=events,
                links=frozenset(wf.links or ()), monitors=frozenset(wf.monitoring or ()),
                monitored_by=frozenset((*(wf.durable_watchers or ()), *(wf.watchers or ()))),
                names=tuple(wf.held_names or ()), trap_links=wf.trap_links))
        return infos

    def room(self) -> int | None:
        """How many more workflows may run here now (``None``: no limit): what the
        queue's concurrency limit leaves."""
        return self.queue.room()

    async def shutdown(self) -> None:
        """Stop running workflows without journaling anything: they resume on the next
        node that opens the store.

        The store row of each parked workflow gets its last status (``waiting`` or
        ``sleeping``, one transaction), so ``garrison workflows list`` shows it while no
        node runs (recovery marks them ``running`` again).

        The schedules stop first (:meth:`Scheduler.stop`): no tick starts a workflow
        from then on, and none uses the store as the node closes it."""
        try:
            await self.scheduler.stop()
        finally:
            self.closing = True
        try:
            await self._stop_workflows()
        finally:
            self.stopped.set()
            for wf in list(self._awaited):  # every result() still waiting raises
                if not wf.done.is_set():
                    wf.done.wake_waiters()

    async def send_held(self) -> None:
        """The node closes, every host stopped: what its processes' ends still had to
        tell the nodes that run other workflows goes now, before the node leaves the
        cluster (within ``CLOSE_SEND`` seconds; see ``Elsewhere.drain``)."""
        await self.elsewhere.drain()

    async def _stop_workflows(self) -> None:
        self.queue.close()  # waiting workflows stay pending in the store
        if not self.client:
            await self._write_held()  # what the write-soon task had not reached yet
        # Who is parked is read now, right before its commit is queued: a workflow
        # parked before the writes above may have ended during them (a cancel among
        # them, its timer), and its end must not be overwritten with a parked status.
        # One that ends from now on commits after this (commits land in call order).
        # ``PARKED_CHUNK`` statuses a transaction, each chunk read as it is made (the
        # node's other tasks run as one commits: one of them woke meanwhile is left to
        # its own commit): 10,000 in one transaction held the node's thread at its stop.
        # A crash between two leaves rows parked or running, all unfinished: the next
        # node resumes each. A failed one is logged; those after it are not written
        # (they read ``running`` in the store, resumed as well).
        running = list(self.active.values())
        parked = Transaction()
        stopped_as: dict[WorkflowInstance, WorkflowStatus] = {}
        left_running: set[WorkflowInstance] = set()  # (after a failed one: not asked)
        count = 0
        for n, wf in enumerate(running, 1):
            parked_now = wf.status in (WorkflowStatus.WAITING, WorkflowStatus.SLEEPING)
            if parked_now and not wf.done.is_set():
                parked.update_workflow(wf.wid, status=wf.status)
                stopped_as[wf] = wf.status
                count += 1
            if count == PARKED_CHUNK or (n == len(running) and count):
                if await self._commit_statuses(parked) is not None:
                    left_running.update(running[n:])
                    break
                parked, count = Transaction(), 0
        while running:
            for wf in running:
                wf.cancel_body()
                wf.stop_started()  # (one handed over by a drain waits for them)
            for wf in running:
                await wf.exited.wait()
            # children whose start was committed meanwhile stop too
            running = [wf for wf in self.active.values() if not wf.exited.is_set()]
        # parked only as the stop began (it was committing its wait when the status
        # were read above): its row says so too
        late = Transaction()
        for wf, status in self.parked_at_stop.items():
            if wf not in stopped_as and wf not in left_running and not wf.done.is_set():
                late.update_workflow(wf.wid, status=status)
                stopped_as[wf] = status
        await self._commit_statuses(late)
        for wf, status in stopped_as.items():  # stopping woke it: "running" no longer
            if not wf.done.is_set():
                wf.status = status  # what the store says (handle.status() after close)
        if self.unrecorded_at_stop:
            ids = self.unrecorded_at_stop
            log.warning("host %s: %d workflows stopped as the node stopped, their last "
                        "step unrecorded (%s%s): %s; they resume from their journals on "
                        "the next node", self.name, len(ids), ", ".join(ids[:10]),
                        ", ..." if len(ids) > 10 else "", self.store_error_at_stop)
        self._threads_left()
        await trio.lowlevel.checkpoint()

    def _threads_left(self) -> None:
        """The node stops with plain activities still running in worker threads: they
        are left to end there, their outcomes unrecorded (at-least-once: each runs
        again when its workflow resumes). One warning names them, as nothing else
        would: the stop is over at once, the thread runs on (until the process exits,
        its threads being daemons)."""
        left = sorted(self.in_threads.copy().values())
        if not left:
            return
        named = ", ".join(f"activity {name!r} of workflow {wid!r}" for wid, name in left[:10])
        log.warning("host %s stopped while %d plain activity call(s) ran in worker "
                    "threads, left running there (their outcomes unrecorded): %s%s; each "
                    "runs again when its workflow resumes", self.name, len(left), named,
                    ", ..." if len(left) > 10 else "",
                    extra={"workflow_id": left[0][0]} if len(left) == 1 else None)

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
            if hint is None and wf.fn is not None:
                hint = return_hint(wf.fn)  # not imported again by name
            if not self.stopped.is_set():
                awaited = self._awaited
                awaited[wf] = awaited.get(wf, 0) + 1
                try:
                    await wf.done.wait()  # (shutdown wakes it unset: see shutdown)
                finally:
                    if awaited[wf] == 1:
                        del awaited[wf]
                    else:
                        awaited[wf] -= 1
            if not wf.done.is_set():
                caller = runtime_or_none()
                if self.node.stopping and caller is not None and getattr(
                        caller, "node", None) is self.node and getattr(
                        getattr(caller, "host", None), "durable", True) is False:
                    # a process of this node: the node's stop ends it next, as every
                    # other process (quietly), not with this error logged as its failure
                    await trio.sleep_forever()
                if self.store.path is None:  # (no store to open again: gone with it)
                    raise RuntimeError(
                        f"the node has stopped: workflow {wid!r} did not end here (it "
                        f"was {wf.status}; its store was in memory and went with the "
                        f"node: nothing resumes it)")
                raise RuntimeError(
                    f"the node has stopped: workflow {wid!r} did not end here (it is "
                    f"{wf.status}; it resumes when a node opens its store again)")
            if isinstance(wf.store_error, WorkflowMoved):
                wf = None  # it runs on another node now: its end shows in the store
            elif wf.status is WorkflowStatus.BLOCKED and wf.store_error is None and \
                    (own := self.ownership) is not None and \
                    own.blocked_here(wid, wf.run_id, wf.attempt) and not own.alone():
                wf = None  # given up for another live node to try: watched in the store
        if wf is not None:
            if wf.status is WorkflowStatus.BLOCKED:
                if wf.store_error is not None:
                    raise raised_again(wf.store_error)
                if wf.cursor.error is not None:
                    raise raised_again(wf.cursor.error)
                raise NonDeterminismError(str(wf.error), workflow_id=wid)
            status, result_json, error = wf.status, wf.result_json, wf.error
            name = wf.name
        elif (known := self.finished.get(wid)) is not None and known[4]:
            ended_as, result_json, error, name, _held = known
            status = WorkflowStatus(ended_as)
            await trio.lowlevel.checkpoint()
        else:
            # (also one that ended here whose result or error is too large to keep)
            # (the store read in a worker thread: a slow database holds up this caller,
            # not the node's event loop)
            here = self.active.get(wid)  # (one moving to another node, or None)
            try:
                record = await run_blocking(self.store.get_workflow, wid)
            except DamagedRecord as exc:  # (its row: no status to wait on)
                raise StoreError(self.store.path, _left_unrun(exc)) from None
            if self.active.get(wid) is not here or self.finished.get(wid) is not known:
                return await self.result(wid, hint)  # it came (or ended) here meanwhile
            if record is None:
                raise await run_blocking(self.no_such, wid)
            status = WorkflowStatus(record.status)
            if not status.finished and (said := self.damaged.get(wid)) is not None:
                if not said.in_row or self.client or not self.resumed:
                    raise StoreError(self.store.path, _left_unrun(said))  # (not "running")
                # its row, read whole just now, was repaired since; nothing woke it: it
                # is loaded now (its journal and inbox read), to run here
                del self.damaged[wid]
                try:
                    refresh(self, wid)
                except DamagedRecord as exc:  # (its journal, this time)
                    named_damaged(self, exc, "load")
                    raise StoreError(self.store.path, _left_unrun(exc)) from None
                if wid in self.active:
                    return await self.result(wid, hint)
            if status is WorkflowStatus.PENDING and not self.client and self.resumed:
                refresh(self, wid)  # a tool created it; its wakeup is not here yet
                if wid in self.active:
                    return await self.result(wid, hint)
            # (blocked: it waits for a node with other code, maybe for ever; its
            # NonDeterminismError is the answer, here as on the node that blocked it)
            if (self.client and status is not WorkflowStatus.BLOCKED and not status.finished
                    and not await run_blocking(self.store.node_running)):
                log.warning("workflow %r waits: no node holds store %r (it is %s until a "
                            "node opens the store)", wid, self.store.path, status,
                            extra={"workflow_id": wid})
            # (blocked in a cluster: the node that blocked it gave it up, and a live node
            # that has not tried it claims it, whose code may take the recorded path, a
            # rolling deploy; final once it stayed blocked, claimed by no live node, for
            # ``blocked_final_after``, a lease: by then each live node has tried it)
            seen: Any = None
            final_at = 0.0
            while (self.client or self.ownership is not None) and not status.finished:
                if status is WorkflowStatus.BLOCKED:
                    ownership = self.ownership
                    if ownership is None:
                        break
                    if ownership.blocked_here(wid, record.run_id, record.attempt) and \
                            ownership.alone():
                        break  # (blocked here, and no other node is live to try it)
                    grace = ownership.blocked_final_after
                    mark = (record.updated, record.run_id, record.attempt)
                    if mark != seen:  # (blocked anew: by this node, or another)
                        if seen is None and record.updated is not None and \
                                time.time() - record.updated.timestamp() >= grace and \
                                not await run_blocking(ownership.tried_now, wid):
                            break  # (blocked long before this wait: final already)
                        seen = mark
                        final_at = time.monotonic() + grace
                    elif await run_blocking(ownership.tried_now, wid):
                        final_at = time.monotonic() + grace  # (a live node tries it)
                    elif time.monotonic() >= final_at:
                        break
                    # (a lease-long wait: looked at a few times a second, not 50)
                    await trio.sleep(min(0.5, grace / 10))
                else:
                    await trio.sleep(0.02)  # another node runs it: watch the store
                record = await run_blocking(self.store.get_workflow, wid)
                assert record is not None
                status = WorkflowStatus(record.status)
            if not status.finished:
                raise NonDeterminismError(
                    f"workflow {wid!r} is {status} but not running on this node: "
                    f"{record.error}" if record.error else f"workflow {wid!r} is {status}",
                    workflow_id=wid)
            result_json = None if record.result is None else _dumps(record.result)
            error = record.error
            name = record.name
            await trio.lowlevel.checkpoint()
        if status is WorkflowStatus.COMPLETED:
            value = None if result_json is None else result_plain(result_json)
            if hint is None:
                try:
                    hint = return_hint(import_target(name))
                except Exception:
                    hint = Any
            return structure(value, hint, what=f"the result of workflow {wid!r}")
        if status is WorkflowStatus.CANCELLED:
            raise WorkflowCancelled(f"workflow {wid!r} was cancelled")
        assert error is not None
        raise WorkflowFailed(wid, error)

    async def read_status(self, wid: str) -> WorkflowStatus:
        """:meth:`status`, the store read (for a workflow not running here) in a worker
        thread: a slow or stalled database holds up the caller, not the event loop."""
        wf = self.active.get(wid)
        if wf is not None:
            await trio.lowlevel.checkpoint()
            return wf.status
        if wid in self.finished:
            await trio.lowlevel.checkpoint()
            return WorkflowStatus(self.finished[wid][0])
        record = await run_blocking(self.store.get_workflow, wid)
        if record is None:
            raise await run_blocking(self.no_such, wid)
        return WorkflowStatus(record.status)

    def status(self, wid: str) -> WorkflowStatus:
        wf = self.active.get(wid)
        if wf is not None:
            return wf.status
        if wid in self.finished:
            return WorkflowStatus(self.finished[wid][0])
        record = self.store.get_workflow(wid)
        if record is None:
            raise self.no_such(wid)
        return WorkflowStatus(record.status)

    def no_such(self, wid: str) -> NoSuchWorkflow:
        """``NoSuchWorkflow`` for ``wid``, which this host does not hold; when ``wid``
        reads as a pid's text (``workflows/f1``, ``str(pid)`` given for ``pid.id``) and
        a workflow host of this node holds that id, it says so. The error's path only:
        it may read the store."""
        host, sep, ident = wid.partition("/")
        there = self.node.hosts.get(host) if sep and ident else None
        if not isinstance(there, WorkflowHost):
            hint = self._held_elsewhere(wid)
            if not hint and self.retention is not None:
                hint = (f" (host {self.name!r} deletes the workflows that ended over "
                        f"{retention_text(self.retention)} ago: its retention)")
            return NoSuchWorkflow(wid, hint)
        if not there.holds(ident):
            return NoSuchWorkflow(wid)
        other = "" if there is self else f", on host {host!r}"
        return NoSuchWorkflow(wid, f" (a pid's text? its id is {ident!r}{other})")

    def holds(self, wid: str) -> bool:
        """Whether this host has the workflow ``wid`` (running here, ended here, or in
        its store), for the hints of :meth:`no_such`: ``False`` if its store cannot
        say (closed, say: no hint, the error stands)."""
        try:
            return (wid in self.active or wid in self.finished
                    or self.store.get_workflow(wid) is not None)
        except Exception:
            return False

    def _held_elsewhere(self, wid: str) -> str:
        """With several workflow hosts on the node: `` of host 'NAME'`` (the one asked),
        and which other hosts hold ``wid`` (a handle takes the default host unless given
        ``host=``)."""
        others = [h for h in dict.fromkeys(self.node.hosts.values())
                  if isinstance(h, WorkflowHost) and h is not self]
        if not others:
            return ""
        holders = [h.name for h in others if h.holds(wid)]
        said = f" of host {self.name!r}"
        if holders:
            said += (f" (host {', '.join(repr(n) for n in holders)} holds one: "
                     f"pass host={holders[0]!r})")
        return said


def _left_unrun(exc: DamagedRecord) -> str:
    """The error of ``result()`` for a workflow whose row or journal is damaged
    (``exc``), or holds a whole number too long for this Python: no node runs it until
    the store is repaired (or a node reads it with the limit raised), so nothing is
    waited for."""
    if exc.too_long:
        return (f"{exc}; until then this node reads neither its result nor, while it "
                "is unfinished, runs it (see the node's log)")
    return (f"{exc}: a damaged store (or a hand edit); no node runs this workflow until "
            "it is repaired (see the node's log)")
