"""Bringing workflows back from the store: loading one (journal, pending inbox,
timers, promises), resuming every unfinished one when a node opens the store, and
picking up what tools wrote while the node runs (signals, promise resolutions, cancel
requests, starts).

Recovery fast path: the cyclic garbage collector is paused from the first journal
loaded until every recovered workflow replayed its journal (or ended), at most
``GC_PAUSE_MAX`` seconds. Loading and replaying make a few objects per journal record
and per workflow, and they all stay alive: the collector's full passes over that
growing heap dominate resuming many workflows, and little is freed meanwhile.
"""

from __future__ import annotations

import gc
import logging
import math
import time as _time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

from ..._errors import StoreError
from ..._targets import import_target, workflow_refusal
from ...actors._values import ErrorInfo, Event, EventKind, Pid
from ...persistence import (
    DamagedRecord,
    InboxRecord,
    PromiseRecord,
    ResumeRows,
    Transaction,
    WorkflowRecord,
    WorkflowStatus,
    run_blocking,
)
from .._kernel import exit_fan_out, noproc
from ._core import Replayed, added, cancelled_error
from ._inbox import CONTROL, exit_attempt, is_linked_row, item_from_record, stale_request
from ._instance import WorkflowInstance
from ._journal import Entry, error_from_plain, error_to_plain, initial_state
from ._queue import TOOL_START_MEMO

if TYPE_CHECKING:
    from ._host import WorkflowHost

__all__ = ["LOAD_CHUNK", "SUPERVISOR_MEMO", "HeldWakes", "ask_children_of_ended_soon",
           "check_supervisors", "count_tool_starts",
           "ended_by_terminate", "hold_states", "load", "named_damaged", "read_together",
           "refresh", "refresh_left", "resume_all", "runnable", "supervisor_of",
           "terminate_request_id", "watch_wakeups"]

log = logging.getLogger("garrison.workflow")


#: the longest the collector stays paused while recovered workflows replay
GC_PAUSE_MAX = 10.0

#: workflows read together when a node resumes many (at its start, or as it takes over
#: a lost node's workflows): one read of each of their tables (``Store.resume_rows``),
#: then the node's other tasks run (its lease, services, console) before the next ones
LOAD_CHUNK = 250

#: the workflows (or schedules) named by wakeups taken together that a node refreshes
#: between two checkpoints at most (``watch_wakeups``: each is a few reads of the store,
#: and thousands woken at once held the node's thread for seconds)
WAKE_CHUNK = 50
#: the first wait before a refresh the store failed is tried again (doubled at each
#: failure in a row, until ``WAKE_FAILURES_MAX``)
WAKE_RETRY = 0.05
#: the longest wait between two tries of a woken workflow's refresh that fails for it
#: alone, the store answering other reads (a damaged page of its rows): it is held, and
#: tried again at most this far apart (and at its next wakeup) while the others go on
WAKE_ALONE_MAX = 60.0
#: failures of refreshes in a row after which the store is taken as failed for good (as
#: when taking the wakeups fails): every workflow of the node stops. A store's read
#: fails only once its own retries are spent (PostgreSQL reconnects for ``retry_for``,
#: the node's thread waiting): tried for ever, a server gone for good held the node's
#: thread most of the time and the node never said its store had failed
WAKE_FAILURES_MAX = 4

#: the memo key of a workflow a supervisor (or a node's services) started as its child:
#: the supervisor's pid
SUPERVISOR_MEMO = "garrison.supervisor"

#: the events that end the watch (monitor, link) they come of
_WATCH_EVENTS = (EventKind.EXIT, EventKind.LINK_DOWN)


def load(host: WorkflowHost, record: WorkflowRecord, read: ResumeRows | None = None
         ) -> WorkflowInstance:
    """An instance of the stored workflow ``record``, ready to replay its journal; its
    rows are ``read`` (read with those of other workflows: ``Store.resume_rows``), else
    read here."""
    store = host.store
    wid = record.workflow_id
    if read is not None and read.journal is not None:
        rows, _size = read.journal
    else:
        rows, _size = store.journal_entries(wid)  # one json.loads for the whole journal
    journal = [Entry(*row) for row in rows]
    inbox = (store.pending_messages(wid) if read is None or read.inbox is None
             else read.inbox)  # (None: a row of it is damaged; read alone, it is named)
    pending = [item_from_record(r) for r in inbox if r.kind != CONTROL]
    requests = live_requests(host, record, inbox) if len(pending) != len(inbox) else []
    stored = store.timers(wid) if read is None else read.timers
    timers = {t.seq: t.deadline.timestamp() for t in stored}
    wf = WorkflowInstance(
        host, wid, record.name, list(record.input), run_id=record.run_id or "",
        attempt=record.attempt, parent=record.parent,
        created=record.created.timestamp() if record.created else _time.time(),
        journal=journal, pending=pending, timers=timers,
        cancel_requested=record.cancel_requested,
        watchers=list(store.monitors(wid) if read is None else read.monitors),
        state=initial_state(journal),
        timer_kinds={t.seq: t.kind for t in stored if t.kind is not None},
    )
    wf.requests = requests
    if journal:  # (what its replayed path sets is told from what the row holds now)
        wf.replayed = Replayed(record.search, record.memo)
    if any(item.event and is_linked_row(item.plain) for item in pending):
        wf.check_lost = True  # (acted on once its replay is done: ``linked_rows``)
    for other in host.early_links.pop(wid, ()):  # (made before this host resumed)
        wf.linked_to(other, theirs=True)
    wf.resend_seq = wf.cursor.last + 1  # (a call there may have been sent before)
    load_promises(host, wf, None if read is None else read.promises)
    wf.trace = record.trace
    supervisor = supervisor_of(host, record)
    if supervisor is not None and host.node.plain_gone(supervisor):
        wf.give_up_names()  # (cancelled at its node's stop, or just below)
    if not wf.cancel_requested:
        if wf.orphaned and supervisor is not None:
            wf.cancel_requested = True  # (its children go too, once it runs)
            host.write_soon(Transaction().request_cancel(wid))
            _orphan_cancelled(wid, supervisor)
        elif supervisor is not None and host.node.plain_elsewhere(supervisor):
            host.supervised_elsewhere[wid] = supervisor
    elif record.cancel_time is not None and record.status != WorkflowStatus.PENDING:
        # asked while no node ran it (or before its node stopped): what came before the
        # cancel decides the waits first, as on a node that ran on (a workflow that
        # never ran has nothing before it: it ends at once)
        wf.cancel_requested, wf.cancel_at = False, record.cancel_time
    if record.host is None:
        # a tool started it (``garrison workflows start``), naming no host: it is this
        # host's from now on, so that its children's parent pid, which names this host,
        # is its pid for the tools too, and a queue's store-side counts of its host's
        # running workflows and starts count it. Its start from the queue names the host
        # again, in its own transaction: this write may come after it (the recovery's
        # first admissions are written at once, and the queue's commits are not in line
        # with these), and the rate would not count what was admitted before it
        wf.host_unwritten = True
        host.write_soon(Transaction().update_workflow(wid, host=host.name))
    if host.damaged:  # read whole now (repaired): its ``result()`` is waited for again
        host.damaged.pop(wid, None)
    return wf


def hold_states(host: WorkflowHost, loaded: Iterable[WorkflowInstance]) -> None:
    """Read what the stored state of the resumed runs ``loaded`` holds, together (one
    read of its values' digests, not one read per run in the node's thread as each goes
    past its journal), for each to tell which state its replayed path set differs
    (``_settle_replayed``). Read before their tasks run: nothing of theirs is written
    meanwhile. Refused, each stores what its replayed path set as it is."""
    runs = [wf for wf in loaded if wf.replayed is not None and wf.replayed.held_state is None]
    if not runs:
        return
    try:
        states = host.store.state_digests([wf.wid for wf in runs])
    except StoreError as exc:
        log.warning("could not read the state of %d resumed workflows (%s): the state their "
                    "code sets on their replayed paths is stored again as it is", len(runs),
                    exc)
        states = {}
    for wf in runs:
        assert wf.replayed is not None
        wf.replayed.held_state = states.get(wf.wid, {})


def supervisor_of(host: WorkflowHost, record: WorkflowRecord) -> Pid | None:
    """The supervisor whose child ``record`` is (its memo says), if any. A supervisor
    started at the next node start starts its own child, so one whose supervisor has
    ended (a process of an earlier run of this node, or of another node that runs a
    newer incarnation since: a crash stopped it without the cancel a stop records for
    its children) must not run on beside it: the node that loads it cancels it."""
    supervisor = record.memo.get(SUPERVISOR_MEMO) if record.memo else None
    if not isinstance(supervisor, str) or host.client:  # (a tool's host runs nothing)
        return None
    try:
        return Pid.parse(supervisor)
    except ValueError:
        return None


def check_supervisors(host: WorkflowHost) -> None:
    """A node of the cluster runs a newer incarnation: the loaded children of its old
    one's supervisors are cancelled (see :func:`supervisor_of`)."""
    for wid, supervisor in list(host.supervised_elsewhere.items()):
        if wid not in host.active:
            del host.supervised_elsewhere[wid]
        elif host.node.plain_gone(supervisor):
            del host.supervised_elsewhere[wid]
            host.active[wid].give_up_names()
            if host.request_cancel(wid):
                _orphan_cancelled(wid, supervisor)


def _orphan_cancelled(wid: str, supervisor: Pid) -> None:
    log.warning("workflow %s: cancelled, as its supervisor %s has ended (the node it ran "
                "on stopped without stopping it: a crash)", wid, supervisor,
                extra={"workflow_id": wid})


def live_requests(host: WorkflowHost, record: WorkflowRecord, inbox: list[Any]) -> list[Any]:
    """The ``control`` rows of ``inbox`` (``record``'s pending inbox) that still ask
    something of the workflow; stale ones (a terminate of an attempt that a retry
    ended) are consumed, once, and left out."""
    requests = [r for r in inbox if r.kind == CONTROL]
    stale = [r for r in requests if stale_request(r, record)]
    if stale:
        discard_requests(host, record.workflow_id, stale)
        requests = [r for r in requests if r not in stale]
    return requests


def discard_requests(host: WorkflowHost, wid: str, requests: list[Any]) -> None:
    """Consume ``control`` rows that ask nothing more (their workflow ended, or was
    retried since): one write each, however often they are seen before it commits; one
    consumed meanwhile (by a retry, which drops them too) is left as it is."""
    fresh = [r.id for r in requests if r.id not in host.discarding]
    if not fresh:
        return
    tx = Transaction()
    for row_id in fresh:  # (a retry of the ended workflow may consume one first)
        tx.consume(wid, row_id, 0, if_pending=True)
    host.discarding.update(fresh)
    host.write_soon(tx, lambda _results: host.discarding.difference_update(fresh))


def load_promises(host: WorkflowHost, wf: WorkflowInstance,
                  rows: Sequence[PromiseRecord] | None = None) -> None:
    """The completed promises of ``wf`` from the store (its ``rows``, if read)."""
    for rec in host.store.promises(wf.wid) if rows is None else rows:
        if rec.status != "pending":
            wf.keep_promise(rec.name, (str(rec.status),
                                       rec.value if rec.status == "resolved" else rec.error))
            if rec.completed is not None:
                if wf.promise_times is None:
                    wf.promise_times = {}
                wf.promise_times[rec.name] = rec.completed.timestamp()


async def resume_all(host: WorkflowHost, nursery: trio.Nursery) -> None:
    """Start every unfinished workflow of the store (not already running), marked
    ``running`` in the store before this returns; ``pending`` ones wait in the host's
    queue, which starts them once the resumed ones hold their slots, and so do
    ``blocked`` ones on a host with limits (pending again: they held no slot, see
    ``WorkflowQueue.comes_back``).

    Those that resume at once are read :data:`LOAD_CHUNK` at a time
    (``Store.resume_rows``), each made active as it is read, the node's other tasks
    running between two reads (its services, a cluster's claims, the console); none
    runs before all are read, and marked ``running`` (written in a worker thread: their
    tasks start as this returns). Those that wait in the
    queue are read last, together with its restore (not active, they would not see
    what those tasks sent or asked of them meanwhile). A cancel meanwhile (the node
    stops) reads no more: those read start, and stop with the node."""
    resumed = Transaction()
    recovering: list[WorkflowInstance] = []
    ending: list[WorkflowInstance] = []
    waiting: list[WorkflowRecord] = []  # (pending and blocked ones: read last)
    ownership = host.ownership
    paused = _pause_gc()
    stopped: trio.Cancelled | None = None
    read = False
    try:
        damaged: list[DamagedRecord] = []  # (each left as it is, named, not resumed)
        records = (ownership.first_claim() if ownership is not None
                   else host.store.unfinished_workflows(damaged))
        for exc in damaged:
            named_damaged(host, exc, "resume")
        for first in range(0, len(records), LOAD_CHUNK):
            if first:
                try:  # (the node's other tasks run between two reads)
                    await trio.lowlevel.checkpoint()
                except trio.Cancelled as exc:
                    stopped = exc
                    break
                if host.closing:
                    break
            chunk: list[WorkflowRecord] = []
            for record in records[first:first + LOAD_CHUNK]:
                if record.workflow_id in host.active or host.starting(record.workflow_id):
                    continue  # started (or refreshed) meanwhile
                if record.status == WorkflowStatus.PENDING or host.queue.comes_back(record):
                    waiting.append(record)
                else:
                    chunk.append(record)
            # read and made active in one step: nothing of the node writes between
            for record, wf in _load_together(host, chunk):
                if wf.requests:  # a tool terminated it while no node ran: it ends unrun
                    host.active[wf.wid] = wf
                    wf.exited.set()
                    ending.append(wf)
                    continue
                if ownership is not None and not runnable(host, record):
                    continue  # its code is not here: left to a node of the cluster that has it
                host.active[wf.wid] = wf
                if record.status != WorkflowStatus.RUNNING:  # pending, blocked, parked
                    resumed.resume_workflow(wf.wid, time=host.clock.now())
                host.queue.started(wf)
                recovering.append(wf)
                host.counts["resumed"] += 1
        read = True
    finally:
        if not read:  # (an error: those read run, as they did before it)
            for wf in recovering:
                nursery.start_soon(wf.main)
        if ownership is not None:  # (they hold their slots now: see first_resumed)
            ownership.first_resumed()
        if paused:
            nursery.start_soon(_resume_gc, recovering)
    failed: Exception | None = None
    if resumed:  # (thousands of rows: written in a worker thread, before their tasks run)
        try:
            with trio.CancelScope(shield=True):
                await run_blocking(host.store.write, resumed)
        except Exception as exc:
            failed = exc  # (raised once they run, as when it was written after their start)
    for wf in recovering:  # (they run once every one is read and marked)
        nursery.start_soon(wf.main)
    requeued = Transaction()
    queued: list[WorkflowRecord] = []
    back: list[WorkflowRecord] = []  # (blocked ones, pending again: see comes_back)
    loaded: dict[str, WorkflowInstance] = {}  # (the queued ones, for the queue)
    for first in range(0, len(waiting), LOAD_CHUNK):
        for record, wf in _load_together(host, [r for r in waiting[first:first + LOAD_CHUNK]
                                                if r.workflow_id not in host.active]):
            if wf.requests:  # a tool terminated it while no node ran: it ends unrun
                host.active[wf.wid] = wf
                wf.exited.set()
                ending.append(wf)
            elif ownership is not None and not runnable(host, record):
                continue  # its code is not here: left to a node of the cluster that has it
            elif record.status == WorkflowStatus.PENDING:  # waits its turn in the queue
                queued.append(record)
                loaded[wf.wid] = wf
            else:  # blocked: it waits for a slot, as retried
                back.append(host.queue.requeue(requeued, record))
                loaded[wf.wid] = wf
                host.counts["resumed"] += 1
    hold_states(host, [*recovering, *loaded.values()])  # (before their tasks run)
    if requeued:
        host.store.write(requeued)
    for wf in ending:  # once every workflow is loaded: their EXITs reach their watchers
        nursery.start_soon(end_requested, host, wf)
    count_tool_starts(host, queued)
    # (each made once: a load writes what its row lacks, and may cancel an orphan)
    host.queue.restore(queued + back, lambda record: loaded.pop(record.workflow_id, None)
                       or load(host, record))
    with host.cancels_batched():  # (their children elsewhere: one read for all)
        for wf in list(host.active.values()):
            if wf.cancel_requested:  # by a tool while no node ran: children go too
                host.cancel_children(wf)
            elif wf.cancel_at is not None:  # (in the cancel's place in time, theirs too)
                host.cancel_children(wf, wf.cancel_at)
    if host.ownership is not None:  # (in the background: the start does not wait)
        ask_children_of_ended_soon(host, starting=True)
    if failed is not None:
        raise failed
    if stopped is not None:
        raise stopped


def ask_children_of_ended_soon(host: WorkflowHost, departed: Sequence[str] = (), *,
                               starting: bool = False) -> None:
    """Ask again, in the background, for the unfinished children of workflows that
    ended cancelled or terminated (``WorkflowHost.ask_children_of_ended``): at a node's
    start (``starting``), and as the nodes ``departed`` were lost (this node marked
    them lost as their lease lapsed, or is the oldest live node as they were lost
    otherwise: their store gave up), as one of them may have ended a parent and
    stopped before it asked its children, and may never start again. A task of the
    host's nursery (it ends as the host closes); one at a time: asked while one runs,
    it runs once more after it (its read of the store may have come before the
    parent's end was committed). Before the host resumed, a node lost asks nothing:
    the start's ask, begun once it resumed, reads the store after it."""
    if host.ownership is None or host.closing or not host.serving:
        return
    if not starting and not host.resumed:
        return
    if host.asking_ended:
        host.ask_ended_again.update(departed or [""])
        return
    host.asking_ended = True
    host.start_soon(_ask_children_of_ended, host, list(departed))


async def _ask_children_of_ended(host: WorkflowHost, departed: list[str]) -> None:
    """:func:`ask_children_of_ended_soon`'s task, asking again while asked meanwhile; a
    failure of an ask (the store's, or a row it cannot read) is a warning, not the
    start's failure: the next start, or a node lost, asks again."""
    try:
        while host.ownership is not None and not host.closing:
            try:
                await host.ask_children_of_ended()
            except Exception as exc:
                if host.closing:  # (its store closing: the next start asks again)
                    return
                said = (exc.reason_at(host.store.path) if isinstance(exc, StoreError)
                        else str(exc))
                when = ("at this node's start" if not departed else
                        f"as node{'s' if len(departed) > 1 else ''} "
                        f"{', '.join(departed)} {'were' if len(departed) > 1 else 'was'} "
                        "lost")
                log.warning("the unfinished children of cancelled or terminated workflows "
                            "could not all be asked to end %s: %s; asked again at the "
                            "next start of a node, or as a node is lost", when, said)
            if not host.ask_ended_again:
                return
            departed = sorted(name for name in host.ask_ended_again if name)
            host.ask_ended_again.clear()
    finally:
        host.asking_ended = False
        host.ask_ended_again.clear()


def _load_together(host: WorkflowHost, records: list[WorkflowRecord]
                   ) -> list[tuple[WorkflowRecord, WorkflowInstance]]:
    """The instances of ``records``, their rows read together (:func:`read_together`);
    one that cannot be loaded is named and left out."""
    read = read_together(host, [record.workflow_id for record in records])
    made: list[tuple[WorkflowRecord, WorkflowInstance]] = []
    for record in records:
        try:
            wf = load(host, record, None if read is None else read.get(record.workflow_id))
        except DamagedRecord as exc:  # a record of its journal
            named_damaged(host, exc, "resume")
            continue
        except Exception as exc:  # pragma: no cover - a broken row
            log.error("cannot resume workflow %s: %s", record.workflow_id, exc,
                      extra={"workflow_id": record.workflow_id})
            continue
        made.append((record, wf))
    return made


def read_together(host: WorkflowHost, wids: list[str], *, records: bool = False
                  ) -> dict[str, ResumeRows] | None:
    """The rows of the workflows ``wids`` to load, in one read of each table
    (``Store.resume_rows``); ``None`` if that read failed: each load then reads its own,
    and fails (or not) alone, as it did before they were read together."""
    if not wids:
        return {}
    try:
        return host.store.resume_rows(wids, records=records)
    except Exception as exc:
        log.warning("could not read %d workflows to resume together (%s): each is read "
                    "alone", len(wids), exc)
        return None


def runnable(host: WorkflowHost, record: WorkflowRecord) -> bool:
    """True if this node has the code of the claimed workflow ``record`` (its
    ``module:qualname`` imports here, a workflow function: not a sync ``def`` or an
    activity now). Else the workflow is given up unrun, before anything of it is
    written (its status stays what it was: a workflow that never ran stays
    ``pending``): the cluster releases it for a node that has the code, and claims no
    workflow of that name again while this node runs (one warning per name). Off a
    cluster such a workflow is ``blocked`` (its instance finds out), as the only node
    there is has nobody to leave it to."""
    ownership: Any = host.ownership
    name = record.name
    if ownership.refuses(name):  # claimed with others of its name before the refusal
        ownership.refuse(record.workflow_id, name, None)
        return False
    try:
        fn = import_target(name)
    except Exception as exc:
        ownership.refuse(record.workflow_id, name, exc)
        return False
    refused = workflow_refusal(fn)
    if refused is not None:  # (a node whose code has it async still runs it)
        ownership.refuse(record.workflow_id, name,
                         TypeError(f"{name} is no workflow function here: {refused}"))
        return False
    return True


def mark_running(host: WorkflowHost, tx: Transaction) -> None:
    """Write ``tx``, which marks workflows about to run ``running``, now: before their
    tasks run. Written later (by ``write_soon``'s task) it could land after one of them
    recorded its end, and mark a finished workflow running for good. A failure is only
    logged: it is only a status, and each workflow records its own end."""
    try:
        host.store.write(tx)
    except Exception as exc:
        log.warning("could not mark resumed workflows running: %s", exc)


def count_tool_starts(host: WorkflowHost, queued: list[WorkflowRecord]) -> None:
    """Count as started here the ``pending`` workflows a tool created while no node ran
    (``garrison workflows start``, ``schedules trigger``): see :func:`_tool_starts`."""
    host.counts["started"] += _tool_starts(host, queued)


def _tool_starts(host: WorkflowHost, queued: list[WorkflowRecord]) -> int:
    """How many of the ``pending`` workflows ``queued`` a tool created while no node ran
    (``garrison workflows start``, ``schedules trigger``): never run, and marked so in
    their memo (``TOOL_START_MEMO``), or, written by an earlier garrison, without a
    queue row (a node's start that waits has one, and was counted where it started; a
    retry, attempt 2 on, is no start). Blocking: may read the queue's rows."""
    fresh = [r for r in queued if r.attempt == 1]
    tools = sum(1 for r in fresh if r.memo and r.memo.get(TOOL_START_MEMO) is True)
    unmarked = [r.workflow_id for r in fresh if not r.memo or TOOL_START_MEMO not in r.memo]
    if unmarked:
        rows = {e.workflow_id for e in host.store.queue_entries()}
        tools += sum(1 for wid in unmarked if wid not in rows)
    return tools


def _pause_gc() -> bool:
    """Pause the collector for recovery; False if it was off already (the user's
    choice, or another host recovering: then nothing is touched)."""
    if not gc.isenabled():
        return False
    gc.disable()
    return True


async def _resume_gc(recovering: list[WorkflowInstance]) -> None:
    try:
        deadline = trio.current_time() + GC_PAUSE_MAX
        i = 0
        while i < len(recovering) and trio.current_time() < deadline:
            wf = recovering[i]
            if wf.exited.is_set() or not wf.cursor.replaying:
                i += 1
            else:
                await trio.sleep(0.005)
    finally:
        gc.enable()


async def watch_wakeups(host: WorkflowHost) -> None:
    """Pick up what tools (stores opened with ``lock=False``) wrote: messages, promise
    resolutions, cancel requests, workflows to start.

    ``WAKE_CHUNK`` workflows at most between two checkpoints (the node's other tasks run
    between): the thousands of children another node's cancel of their parent woke
    were refreshed in one step of the node's thread, each a few reads of the store, and
    every other process of the node stood still meanwhile. A refresh the store fails is
    logged and tried again, with those after it, ``WAKE_RETRY`` later (doubled at each
    failure in a row): its wakeup was taken from the store, and is not lost; after
    ``WAKE_FAILURES_MAX`` failures in a row the store has failed. Each workflow is read
    once for the wakeups taken together.

    A refresh that fails while the store answers another read (``Store.answers``: one
    look, tried once: the refresh's read has spent the store's own retries) failed for
    its workflow (or schedule) alone: a damaged page of its rows, a value the store
    cannot hand over (or an outage that passed as the refresh waited it out: its
    first failure is a warning, a second in a row names it in one error line). It is
    held (``_Held``), tried again later (``WAKE_RETRY``, doubled at each failure, at
    most ``WAKE_ALONE_MAX`` apart) and at its next wakeup; the others go on, and the
    node's store has not failed (one damaged workflow took the node's every workflow
    down). Its tries that fail
    while the store answers nothing either count towards the store's failure, as the
    wakeups' do (:func:`_retry_held`)."""
    held = host.held_wakes = HeldWakes()  # (and a refresh left to a start: refresh_left)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_retry_held, host, held, nursery.cancel_scope)
            await _take_wakeups(host, held)
            nursery.cancel_scope.cancel()
    finally:
        host.held_wakes = None


async def _take_wakeups(host: WorkflowHost, held: HeldWakes) -> None:
    """:func:`watch_wakeups`' own loop: take the wakeups, refresh what they name."""
    while not host.closing:
        try:
            wakes = await host.store.wakeups()
        except StoreError as exc:  # the store is gone: every workflow stops
            if not host.closing:
                host.store_failed(exc)
            return
        # one look per workflow or schedule, however many writes woke it (each look
        # reads all its rows: once per wakeup, a tool's N signals cost N reads of N)
        woken = list(dict.fromkeys((w.kind == "schedule", w.workflow_id) for w in wakes))
        failures = 0
        while woken:
            done = 0
            try:  # (the children elsewhere of those a tool cancelled: one read a chunk)
                with host.cancels_batched():
                    for key in woken[:WAKE_CHUNK]:
                        if host.closing or not _refresh_or_hold(host, held, key):
                            return  # the node is closing (its store may be closed)
                        done += 1  # (the store's failure raised: tried again below)
            except StoreError as exc:
                if host.closing:
                    return
                woken = woken[done:]  # (from the one that failed: its wakeup is taken)
                failures = 1 if done else failures + 1  # (in a row: none read between)
                if failures >= WAKE_FAILURES_MAX:
                    host.store_failed(exc)
                    return
                delay = WAKE_RETRY * 2 ** (failures - 1)
                log.warning("could not read %d workflows that tools or other nodes "
                            "wrote for: %s; read again in %g s", len(woken), exc, delay)
                await trio.sleep(delay)
                continue
            failures = 0
            woken = woken[done:]
            if woken:
                await trio.lowlevel.checkpoint()


@attrs.frozen
class _Held:
    """A woken workflow (or schedule) whose own refresh failed ``tries`` times in a row,
    the store answering other reads: tried again at ``due`` (trio's clock), or at its
    next wakeup (see :func:`watch_wakeups`)."""

    tries: int
    due: float


class HeldWakes:
    """The woken workflows (and schedules) :func:`watch_wakeups` holds, by key (is it a
    schedule, its id), and an event set as one is held (its retries' task waits)."""

    def __init__(self) -> None:
        self.held: dict[tuple[bool, str], _Held] = {}
        self.added = trio.Event()
        #: the held retries' failures in a row while the store answered nothing either
        self.failures = 0

    def hold(self, key: tuple[bool, str], exc: StoreError) -> None:
        """Hold ``key``, whose own refresh failed with ``exc``: tried again later. Its
        first failure in a row is a warning (an outage that passed while the refresh
        waited it out fails one try); its second names it in one error line, the later
        ones are at DEBUG."""
        schedule, wid = key
        before = self.held.get(key)
        tries = 1 if before is None else before.tries + 1
        delay = min(WAKE_RETRY * 2 ** min(tries - 1, 30), WAKE_ALONE_MAX)
        self.held[key] = _Held(tries, trio.current_time() + delay)
        self.added.set()
        what = "schedule" if schedule else "workflow"
        extra = {} if schedule else {"workflow_id": wid}
        if before is None:
            log.warning("could not refresh %s %s: %s; the store answers other reads: it "
                        "is tried again in %g s", what, wid, exc, delay, extra=extra)
        elif tries == 2:
            log.error("cannot refresh %s %s (%d failures in a row): %s; the store answers "
                      "other reads, so the node goes on without it: it is tried again in "
                      "%g s, then less and less often (at most every %g s), and at its "
                      "next wakeup", what, wid, tries, exc, delay, WAKE_ALONE_MAX,
                      extra=extra)
        else:
            log.debug("cannot refresh %s %s (%d failures in a row): %s; tried again in "
                      "%g s", what, wid, tries, exc, delay)

    def put_off(self, until: float) -> None:
        """Try none of the held ones before ``until`` (the store failed: its tries, as
        :func:`_retry_held` counts them, are not theirs)."""
        for key, h in self.held.items():
            if h.due < until:
                self.held[key] = attrs.evolve(h, due=until)

    def release(self, key: tuple[bool, str]) -> None:
        """``key``'s refresh worked: if it was held, said, and no longer held."""
        before = self.held.pop(key, None)
        if before is not None:
            schedule, wid = key
            log.info("%s %s is refreshed again, after %d failed refreshes",
                     "schedule" if schedule else "workflow", wid, before.tries,
                     extra={} if schedule else {"workflow_id": wid})


async def _retry_held(host: WorkflowHost, held: HeldWakes,
                      watching: trio.CancelScope) -> None:
    """Refresh each workflow (or schedule) ``held`` holds once it is due, again and
    again while its own refresh fails, its tries apart as its count says. A failure
    while the store answers nothing either is the store's, as in the wakeups' loop: the
    held ones are tried again ``WAKE_RETRY`` later (doubled at each such failure in a
    row), and after ``WAKE_FAILURES_MAX`` in a row the store has failed (the wakeups'
    watch, ``watching``, ends). Held on at DEBUG for ever instead, a server gone for
    good held the node's thread at each try, and no other wakeup came to tell."""
    while not host.closing:
        with trio.move_on_at(min((h.due for h in held.held.values()), default=math.inf)):
            await held.added.wait()
            held.added = trio.Event()
            continue  # (one held meanwhile: the next due time may be sooner)
        now = trio.current_time()
        due = [key for key, h in held.held.items() if h.due <= now][:WAKE_CHUNK]
        try:
            with host.cancels_batched():  # (their children elsewhere: one read for all)
                for key in due:
                    if host.closing or not _refresh_or_hold(host, held, key):
                        return  # (the store's failure raised: none tried after it now)
                    held.failures = 0
        except StoreError as exc:
            if host.closing:
                return
            held.failures += 1
            if held.failures >= WAKE_FAILURES_MAX:
                host.store_failed(exc)
                watching.cancel()
                return
            delay = WAKE_RETRY * 2 ** (held.failures - 1)
            held.put_off(trio.current_time() + delay)  # (its reads may have waited)
            log.warning("could not read %d held workflows that tools or other nodes "
                        "wrote for: %s; read again in %g s", len(held.held), exc, delay)
        await trio.lowlevel.checkpoint()


def _refresh_or_hold(host: WorkflowHost, held: HeldWakes, key: tuple[bool, str]) -> bool:
    """Refresh the workflow (or schedule) ``key`` names; a failure of its own (the
    store answering another read: ``Store.answers``) holds it in ``held``, tried again
    later, and a refresh that works releases it. ``False``: the node is closing. The
    store's own failure is raised."""
    try:
        _refresh_woken(host, key)
    except StoreError as exc:
        if host.closing:
            return False
        if not host.store.answers():
            raise
        held.hold(key, exc)  # its own: the others go on
    else:
        held.release(key)
    return True


def refresh_left(host: WorkflowHost, wid: str) -> None:
    """The refresh of ``wid`` a wakeup left to its start (``WorkflowHost.woken_starting``),
    made now, as the wakeup's own: a failure of the store (or an error of the store's
    own kind, SQLite's for a damaged page, translated) is not the start's, and that
    wakeup is taken: the refresh is held by :func:`watch_wakeups` and tried again later,
    as a wakeup's that failed (no next wakeup need come: what a tool wrote, a terminate,
    waited for ever). Any other error is raised, as there."""
    key = (False, wid)
    try:
        _refresh_woken(host, key)
    except StoreError as exc:
        if host.closing:
            return  # (what it wrote is read where the workflow resumes)
        held = host.held_wakes
        if held is not None:
            held.hold(key, exc)
            return
        log.warning("workflow %s: could not read what tools wrote for it as it started: "
                    "%s; the node's watch of tools' writes has stopped: read where the "
                    "workflow resumes", wid, exc, extra={"workflow_id": wid})


def _refresh_woken(host: WorkflowHost, key: tuple[bool, str]) -> None:
    """Refresh the workflow (or reload the schedule: ``key[0]``) a wakeup named; a
    failure of the store is its :class:`~garrison.StoreError` (SQLite's own error for a
    damaged page of its rows, say, is translated), a damaged record is named."""
    schedule, wid = key
    try:
        if schedule:
            host.scheduler.reload(wid)  # the wakeup names a schedule
            return
        try:
            refresh(host, wid)
        except DamagedRecord as exc:  # its row: left as it is
            named_damaged(host, exc, "load")
    except StoreError:
        raise
    except Exception as exc:
        failed = host.store.translate_error(exc)
        if failed is None:  # (not the store's)
            raise
        raise failed from exc


def named_damaged(host: WorkflowHost, exc: DamagedRecord, what: str) -> None:
    """Name the workflow whose row, journal record or inbox message cannot be read
    (``exc``) in one error line, once while the node runs (a tool's wakeup of it, met
    after the node's start named it, is not said again); its ``result()`` says so."""
    if exc.workflow_id in host.damaged:
        return
    host.damaged[exc.workflow_id] = exc
    # (a row whose own id is damaged is no key to read after: the read of the workflows
    # to resume went on after its instant of creation)
    past = "" if exc.id_is_text else (
        "; workflows created in the same instant as it, whose ids sort after its, are not "
        "resumed either until it is repaired")
    log.error("cannot %s workflow %s: %s%s", what, exc.workflow_id, exc, past,
              extra={"workflow_id": exc.workflow_id})


def _retried_since(host: WorkflowHost, target: Pid, attempt: int) -> bool:
    """Whether the workflow ``target``, whose attempt ``attempt`` ended (an ``EXIT`` of
    it another node wrote), runs a later attempt now (a retry since). A watcher that
    reads that ``EXIT`` only now may have monitored the retried run meanwhile: the
    ``EXIT`` spends no monitor of it then (see ``Interop.asks_nothing_of``, which drops
    the retried run's own ``EXIT`` for a watcher that heard an earlier end since its
    last monitor). Blocking: a read of the store, for a workflow this node does not
    run."""
    h = host.node.hosts.get(target.host)
    if h is None or not h.durable:
        return False
    other = cast("WorkflowHost", h)
    running = other.active.get(target.id)
    if running is not None:
        return running.attempt > attempt
    record = other.store.get_workflow(target.id)
    return record is not None and int(record.attempt) > attempt


def _take_over(wf: WorkflowInstance, blocked: WorkflowInstance | None) -> None:
    """``wf``, the retried attempt of the ``blocked`` one (dropped), takes over its
    plain processes' monitors and links: that attempt never ended (nothing told them),
    and its retried attempt's end is theirs."""
    if blocked is None:
        return
    if blocked.watchers:
        wf.watchers = (wf.watchers or set()) | blocked.watchers
    if blocked.links:
        wf.links = (wf.links or set()) | blocked.links


def refresh(host: WorkflowHost, wid: str, *, starting: bool = False) -> None:
    """Bring the in-memory workflow ``wid`` up to date with its store rows: start it if
    a tool created it or retried it (``pending``), end it if a tool asked to terminate
    it, else pick up new messages, promises and a cancel request."""
    record = host.store.get_workflow(wid)
    if record is None:
        return
    wf = host.active.get(wid)
    if wf is None and host.ownership is not None and not host.ownership.owns(wid):
        if record.cancel_requested and host.end_pending_stored(
                wid, WorkflowStatus.CANCELLED, cancelled_error(wid), record=record):
            return  # a tool's cancel of one waiting unclaimed in the store: ended now
        host.ownership.poke()  # in a cluster a workflow runs where it was claimed
        return
    if wf is not None and wf.done.is_set() and record.attempt != wf.attempt:
        # blocked, and retried since (a new attempt): run it again. Dropped before its
        # requests are looked at: those of the new attempt are not the blocked one's (one
        # ending by a terminate a retry overtook dropped them as asking nothing more)
        # Its attempt never ended: the processes that monitor or link to it watch the
        # retried one (taken over as it loads, below)
        del host.active[wid]
        try:
            _retried(host, record, wf, starting=starting)
        except BaseException:
            # (a read the store failed: tried again by the wakeup watcher, which finds
            # the blocked one, its watchers with it, as it was)
            if wid not in host.active:
                host.active[wid] = wf
            raise
        return
    _refresh(host, record, wf, None, starting=starting)


def _retried(host: WorkflowHost, record: WorkflowRecord, blocked: WorkflowInstance, *,
             starting: bool) -> None:
    """:func:`refresh` of ``record``'s workflow, retried since its ``blocked`` instance
    (dropped) was loaded: whatever ends the retried attempt is the end its plain
    processes' monitors and links hear (that attempt never ended), ended in the store
    already too."""
    _refresh(host, record, None, blocked, starting=starting)
    if host.active.get(record.workflow_id) is None:  # (none loaded: ended, or a start
        _ended_elsewhere(host, record, blocked)  # of its id here runs it, see _refresh)


def _ended_elsewhere(host: WorkflowHost, record: WorkflowRecord,
                     blocked: WorkflowInstance) -> None:
    """The plain processes that monitor or link to ``blocked`` (dropped) hear the end
    ``record`` shows, or ``noproc``'s if it shows none: no instance here takes them."""
    if not blocked.watchers and not blocked.links:
        return
    status = WorkflowStatus(record.status)
    if status is WorkflowStatus.COMPLETED:
        error = None
    elif status.finished:
        error = record.error if record.error is not None else cancelled_error(
            record.workflow_id)
    else:
        error = noproc(blocked.pid)
    exit_fan_out(host.node, blocked.pid, Event(EventKind.EXIT, blocked.pid, None, error),
                 blocked.watchers, blocked.links, None)
    blocked.watchers = blocked.links = None


def _refresh(host: WorkflowHost, record: WorkflowRecord, wf: WorkflowInstance | None,
             blocked: WorkflowInstance | None, *, starting: bool) -> None:
    """:func:`refresh` of ``record``'s workflow, loaded here as ``wf`` (``None``: not
    loaded, or ``blocked``, retried since, dropped: its watchers are the instance's
    this loads)."""
    wid = record.workflow_id
    if wf is None and host.starting(wid) and not starting:
        # a start of this id is being committed here: it runs it, and reads what a tool
        # wrote meanwhile once its instance is active (a terminate loaded here made a
        # second instance, which ended unseen by the start's watchers, or was replaced by
        # the start's and never ended; a signal waited for the next wakeup)
        host.woken_starting(wid)
        return
    inbox = host.store.pending_messages(wid)
    requests = live_requests(host, record, inbox)
    if requests:
        _requested(host, record, wf, requests, blocked, starting=starting)
        return
    if WorkflowStatus(record.status).finished:
        if wf is not None and host.queue.holds(wf):
            host.ended_in_store(wf, record)  # (a tool's, as this node loaded it)
        return
    if wf is None:
        host.forget_end(wid)
        if record.status == WorkflowStatus.PENDING:  # a tool's start, a retry: the queue
            # (a tool's start is counted here; in a cluster, a node's own start left to
            # the store, claimed as a wait for its result looked, was counted where made)
            # (counted once it is read whole and offered: a refresh the store failed
            # half way is tried again, by the wakeup watcher)
            wf = load(host, record)
            _take_over(wf, blocked)
            if wf.requests:  # (a tool's terminate, written since the read above)
                _end_unrun(host, wf)
                return
            started = _tool_starts(host, [record])
            host.queue.offer(wf, record)
            host.counts["started"] += started
            return
        wf = load(host, record)
        _take_over(wf, blocked)
        if wf.requests:  # (a tool's terminate, written since the read above)
            _end_unrun(host, wf)
            return
        if record.status != WorkflowStatus.RUNNING:
            mark_running(host, Transaction().resume_workflow(wid, time=host.clock.now()))
        host.run_instance(wf)
        # a resume: a start (a tool's, a retry) is pending, taken above; one that ran
        # before and is not loaded is one of the store's unfinished workflows, asked
        # for (a start by id, from a service the node started before it resumed them)
        # before the node's resume got to it, which then leaves it to this
        host.counts["resumed"] += 1
        return
    if wf.done.is_set():
        return  # blocked: its code has ended (a retry starts a new attempt)
    # (read before anything changes: a read the store fails, tried again by the wakeup
    # watcher, finds the workflow as it was, its new messages not queued unwoken)
    promises = host.store.promises(wid)
    known = {item.id for item in wf.pending}
    if wf.taken:  # taken by a receive whose consume is not committed yet: not again
        known |= wf.taken
        wf.taken.intersection_update(rec.id for rec in inbox)  # (the others committed)
    if wf.refreshed:
        # those consumed since leave: no push of them can come any more (a batch's
        # callers, the sender among them, run before a later commit, which would carry
        # the consume, can be written: ``_group_commit.py``)
        wf.refreshed.intersection_update(known)
        if not wf.refreshed:
            wf.refreshed = None
    changed = linked = False
    for rec in inbox:
        if rec.id not in known and rec.kind != CONTROL:
            item = item_from_record(rec)
            if item.event and item.value.kind is EventKind.EXIT and wf.asks_nothing_of(
                    item.value.pid, exit_attempt(rec.msg_id, wf.wid)):
                # (another node's end of a retried workflow: a monitor of an earlier
                # attempt an older node's retry left, see asks_nothing_of)
                wf.drop_unasked(rec.id)
                continue
            retried = item.event and item.value.kind is EventKind.EXIT \
                and _retried_since(host, item.value.pid, exit_attempt(rec.msg_id, wf.wid))
            wf.queue_item(item)
            if item.event and item.value.kind in _WATCH_EVENTS and not retried:
                # (written by another node, in a cluster: the end of a workflow or
                # process it monitors or links to, which spends that watch)
                wf.watch_spent(item.value.kind, item.value.pid)
                linked = linked or is_linked_row(item.plain)
            # a row this node delivered itself, its push still to come: not twice
            wf.refreshed = added(wf.refreshed, rec.id)
            changed = True
    if linked:  # (a linked workflow of another node failed: see linked_rows)
        host.linked_rows(wf)
    if record.cancel_requested and not wf.cancel_requested and wf.cancel_at is None:
        wf.cancel_requested = True
        # what was committed to its inbox before the cancel is received first
        at = record.cancel_time
        wf.cancel_mark = max((item.id for item in wf.pending
                              if at is None or item.created <= at), default=None)
        host.cancel_children(wf)
        host.queue.cancelled(wf)  # waiting in the queue: it ends at once
        changed = True
    before = len(wf.promises)
    load_promises(host, wf, promises)
    changed = changed or len(wf.promises) != before
    if changed:
        if isinstance(wf.pending, list):
            wf.pending.sort(key=lambda item: item.id)
        wf.wake()


def _requested(host: WorkflowHost, record: WorkflowRecord, wf: WorkflowInstance | None,
               requests: list[Any], blocked: WorkflowInstance | None = None, *,
               starting: bool = False) -> None:
    """A tool asked to terminate ``record``'s workflow (``requests``: the ``control``
    inbox records; see ``_operate``). (``blocked``, ``starting``: see :func:`_refresh`.)"""
    wid = record.workflow_id
    if wf is None:
        if WorkflowStatus(record.status).finished:  # it ended meanwhile: nothing to end
            discard_requests(host, wid, requests)
            return
        wf = load(host, record)  # not running here yet: it ends without running
        if not wf.requests:
            # (consumed since the read above: a tool's retry dropped them, a new attempt
            # that ``record`` does not show. Ended unrun as read, that attempt was
            # written failed, terminated by nobody, and the retry lost: read again)
            now = host.store.get_workflow(wid)
            if now is not None:
                _refresh(host, now, None, blocked, starting=starting)
            return
        _take_over(wf, blocked)
        _end_unrun(host, wf)
        return
    # (requests it was loaded with end it already: ``end_requested`` is scheduled, and a
    # refresh before it runs must not end it a second time)
    taken = {*(wf.requests_taken or ()), *(r.id for r in wf.requests)}
    new = [r for r in requests if r.id not in taken]
    if not new:
        return  # seen before: it is ending by them
    if taken:  # ending by an earlier request already: these ask nothing more
        discard_requests(host, wid, new)
        return
    wf.requests = new
    end_instance(host, wf, _request_error(new))


def terminate_request_id(workflow_id: str, attempt: int) -> str:
    """The message id of the request (:func:`request_transaction`) to end attempt
    ``attempt`` of ``workflow_id``."""
    return f"terminate#{attempt}#{workflow_id}"


def ended_by_terminate(store: Any, record: WorkflowRecord,
                       requests: Mapping[str, InboxRecord] | None = None) -> bool:
    """``record``'s workflow (``failed``) was terminated as a tree is (its unfinished
    children end with it, :func:`end_instance`), as told by the error it ended with:
    its parent's terminate's (:func:`parent_terminated`: ended in a node's memory with
    that tree, no request of its own needed), or that of the request to end its last
    attempt in its inbox (a terminate's, or a linked workflow's failure). Not one that
    failed on its own, though a terminate came as it did (a request ended nothing, its
    row is there all the same). Blocking: its request is read, unless ``requests``
    holds the requests read already (by message id; one not there is none)."""
    error = record.error
    if error is None:
        return False
    if ended_with_parent(error):
        return True
    msg_id = terminate_request_id(record.workflow_id, record.attempt)
    request = store.inbox_message(msg_id) if requests is None else requests.get(msg_id)
    payload = request.payload if request is not None else None
    plain = payload.get("terminate") if isinstance(payload, dict) else None
    if not isinstance(plain, dict):
        return False
    asked = error_from_plain(plain)
    return (asked.type, asked.message) == (error.type, error.message)


def request_transaction(workflow_id: str, error: ErrorInfo,
                        attempt: int | None = None, tx: Transaction | None = None
                        ) -> Transaction:
    """A request to the node running ``workflow_id`` to end its attempt ``attempt`` (its
    record's ``attempt``) with ``error``. There is one request per attempt: its message
    id is made of the workflow id and the attempt, so a second terminate of the same
    attempt (two tools at once) adds nothing; and a node ignores (and consumes) a
    request for an attempt older than the workflow's, so a retried workflow is never
    ended by a terminate of its previous attempt. ``attempt=None``: a request for
    whatever attempt runs when a node reads it. ``tx``: added to that transaction (the
    end of a workflow that ends this one with it, see ``WorkflowHost.finish``)."""
    payload: dict[str, Any] = {"terminate": error_to_plain(error)}
    if attempt is None:
        msg_id = f"terminate-{uuid.uuid4().hex}"
    else:
        payload["attempt"] = attempt
        msg_id = terminate_request_id(workflow_id, attempt)
    return (tx if tx is not None else Transaction()).deliver(
        workflow_id, "terminate", payload, kind=CONTROL, msg_id=msg_id)


#: the descendants a terminated workflow's line names (the others are counted)
NAMED_DESCENDANTS = 5

_PARENT_TERMINATED = ("its parent workflow ", " was terminated")


def parent_terminated(wid: str) -> ErrorInfo:
    """The error the unfinished children of terminated workflow ``wid`` end with."""
    head, tail = _PARENT_TERMINATED
    return ErrorInfo("Terminated", f"{head}{wid!r}{tail}")


def ended_with_parent(error: ErrorInfo) -> bool:
    """``error`` is :func:`parent_terminated`'s: the end of a workflow is said by the
    line of the terminated workflow whose tree it was in (:func:`end_instance`)."""
    head, tail = _PARENT_TERMINATED
    return (error.type == "Terminated" and error.message.startswith(head)
            and error.message.endswith(tail))


def end_instance(host: WorkflowHost, wf: WorkflowInstance, error: ErrorInfo) -> None:
    """End ``wf`` as terminated with ``error`` (and its unfinished children): a running
    one is stopped as a killed workflow is (nothing more journaled; it writes its end);
    one whose code has ended (blocked) or never ran is finished here. A tree says so in
    one warning: ``wf``, how many descendants end with it and the first of them (each
    one's own end is at DEBUG: a thousand children are not a thousand warnings). Its
    children another node runs are asked through the store: a failure of that is a
    warning, and the tree is asked again later (``WorkflowHost.ends_unasked``)."""
    ended: list[str] = []
    tree: list[WorkflowInstance] = []
    _end_tree(host, wf, error, ended, tree)
    # the children another node runs (or none yet), of every workflow of the tree, in
    # one read of the store: asked for each, a tree of 2,000 read it 2,001 times in the
    # node's thread (its event loop still meanwhile)
    # their requests (asked in the store, as a tool asks) in one transaction: a write
    # each was a round trip and a commit each in the node's thread, its event loop still
    # meanwhile; written before this returns (a terminate returns once they are durable).
    # A failure of the read or the write is logged, and leaves the tree to be asked
    # again (``handle.terminate()`` at once, a repeated terminate, the end of a workflow
    # of it: see ``WorkflowHost.end_children_elsewhere``), not raised out of a refresh
    parents = {str(parent.pid) for parent in tree}
    failed: StoreError | None = None
    try:
        requested = host.end_children_elsewhere(tree)
    except StoreError as exc:
        failed, requested = exc, []
    ended.extend(record.workflow_id for record in requested
                 if str(record.parent) in parents)
    if ended:
        named = ", ".join(ended[:NAMED_DESCENDANTS])
        more = len(ended) - NAMED_DESCENDANTS
        log.warning("workflow %s is terminated: its %d unfinished descendant workflow%s "
                    "end%s with it (%s%s; each one's end is logged at DEBUG on "
                    "garrison.workflow)", wf.wid, len(ended), "s" if len(ended) > 1 else "",
                    "" if len(ended) > 1 else "s", named,
                    f" and {more} more" if more > 0 else "",
                    extra={"workflow_id": wf.wid, "pid": wf.pid})
    if failed is not None:
        log.warning("workflow %s is terminated, but its children on other nodes could not "
                    "be asked to end: %s; asked again at the end of a workflow of its "
                    "tree, at a repeated terminate, or at this node's next cancel, "
                    "terminate or resume", wf.wid, failed.reason_at(host.store.path),
                    extra={"workflow_id": wf.wid, "pid": wf.pid})


def _end_tree(host: WorkflowHost, wf: WorkflowInstance, error: ErrorInfo,
              ended: list[str], tree: list[WorkflowInstance]) -> None:
    """:func:`end_instance`'s work in this node's memory, the ids of the descendants it
    ends here added to ``ended``, ``wf`` and each of them to ``tree``."""
    tree.append(wf)
    for rec in wf.requests:  # consumed by its end's own transaction (``finish``): a
        # drain that hands it over first (its records flushed, its end never written)
        # leaves them to the node that takes it
        wf.requests_taken = added(wf.requests_taken, rec.id)
    wf.requests = ()
    if not wf.done.is_set() and not wf.exited.is_set():  # running (or about to)
        host.kill(wf.pid, error)
    elif host.serving:
        host.start_soon(_finish_ended, host, wf, error)
    reason = parent_terminated(wf.wid)
    wf.children_end = reason  # (a child still being created: see WorkflowHost._late_child)
    for child in host.active.children_of(wf.pid):  # (not a walk of every workflow
        # here for each one ended: a tree of 10,000 was 10**8 steps, the node frozen)
        if not WorkflowStatus(child.status).finished:
            ended.append(child.wid)
            _end_tree(host, child, reason, ended, tree)


def _end_unrun(host: WorkflowHost, wf: WorkflowInstance) -> None:
    """``wf``, just loaded with a tool's terminate requests (``wf.requests``), ends
    without running (its watchers taken over already)."""
    host.active[wf.wid] = wf
    wf.exited.set()
    host.start_soon(end_requested, host, wf)


async def end_requested(host: WorkflowHost, wf: WorkflowInstance) -> None:
    """A workflow a tool asked to terminate, which never ran on this node: it ends."""
    end_instance(host, wf, _request_error(wf.requests))
    await trio.lowlevel.checkpoint()


async def _finish_ended(host: WorkflowHost, wf: WorkflowInstance, error: ErrorInfo) -> None:
    if host.active.get(wf.wid) is wf:
        try:
            await host.finish(wf, WorkflowStatus.FAILED, None, error)
        except StoreError as exc:  # the store failed: it ends on the next node
            wf.stop_on_store_error(exc)
        except ValueError:
            # its end, refused (nothing written): a retry of the blocked workflow landed
            # first, and consumed the request this end consumes too. That attempt is
            # gone, so is what was asked of it: the retried one runs (see ``refresh``)
            try:
                record = await run_blocking(host.store.get_workflow, wf.wid)
            except StoreError as exc:  # (as its end's own write failing: not the node's)
                wf.stop_on_store_error(exc)
                return
            if record is None or record.attempt == wf.attempt:
                raise
            log.info("workflow %s: its terminate of attempt %d was overtaken by a retry "
                     "(attempt %d runs)", wf.wid, wf.attempt, record.attempt,
                     extra={"workflow_id": wf.wid})
            try:
                _refresh_woken(host, (False, wf.wid))
            except StoreError as exc:  # (its next wakeup refreshes it again)
                log.warning("workflow %s: could not refresh it: %s; it is refreshed at "
                            "its next wakeup", wf.wid, exc, extra={"workflow_id": wf.wid})


def _request_error(requests: Sequence[Any]) -> ErrorInfo:
    for rec in reversed(requests):
        plain = rec.payload.get("terminate") if isinstance(rec.payload, dict) else None
        if isinstance(plain, dict):
            return error_from_plain(plain)
    return ErrorInfo("Terminated", "terminated")
