"""Operating workflows from outside: terminate and retry, shared by the handle
(``node.workflow(id)``), the command line and the web console.

**Terminate** ends a workflow at once: status ``failed`` with the error
``Terminated: <reason>``, without running its cancellation handlers (unlike
``cancel``: nothing more is journaled), its ``EXIT`` delivered to the workflows that
watch it (its parent among them), its unfinished child workflows terminated with it
(``Terminated: its parent workflow 'p' was terminated``). Only the node running a
workflow may end it, so a tool asks it (:func:`request_transaction`: a ``control``
row in the workflow's inbox, which its code never sees): the node running it ends it
at once (woken by the tool's write), or, if none runs it, the next node that opens the
store ends it before running anything. A tool (or a client's handle) that finds no
node holding the store ends it in the store itself (:func:`terminate_unless_node`), so
the status says ``failed`` at once (and drops its queue row, as a node does). A request names the
attempt it ends: one per attempt (its message id says which), and a node consumes
without acting a request for an attempt a retry has ended since, so an offline
terminate applies once and a retried workflow is not terminated again.

**Retry** resumes a ``failed`` or ``blocked`` workflow by replay from its journal:
its status becomes ``pending`` with the error cleared and ``attempt`` counted up (see
``workflow.info().attempt``); a node then re-runs the function from the top, the
recorded steps replay (none runs again) and the code continues live after the
journal's end. One record is taken back first: when the workflow failed because an
activity failed for good (its error is that ``ActivityError``) and that activity's
final error is the journal's last record, the record is removed, so the activity runs
again (the way out when a workflow failed because a service was missing). A workflow
that failed with an activity's final error whose record is not the journal's last (its
code caught it, recorded a compensation, and raised it again) has no record taken
back: the same code replays to the same failure, which the retry's words say (code
deployed since may handle it otherwise). A failure
of the workflow function's own code is no journal record: a retry replays up to it,
and code that raises again fails again. A retried workflow's parent and monitors were
told it failed; its new end is not delivered to them again.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..._errors import DedupKeyTaken, NoSuchWorkflow, WorkflowMoved, raised_again
from ...actors._values import ErrorInfo, Event, EventKind, Pid
from ...persistence import (
    OperatorTransaction,
    RawJson,
    Transaction,
    WorkflowStatus,
    requested_attempt,
    run_blocking,
)
from ._attempts import FAILED_MEMO, kept_failures
from ._core import cancelled_error
from ._ids import check_text
from ._inbox import CONTROL, exit_id, is_linked_row
from ._journal import JournalKind, error_from_plain, event_to_plain
from ._queue import stored_priority
from ._recovery import parent_terminated, refresh, request_transaction

if TYPE_CHECKING:
    from ._host import WorkflowHost

__all__ = ["RETRYABLE", "TERMINATED", "check_reason", "end_pending_transaction", "key_taken",
           "retry_transaction", "retry_workflow", "same_failure_note",
           "terminate_transaction",
           "terminate_unless_node", "terminate_workflow", "terminated"]

#: the error type of a terminated workflow
TERMINATED = "Terminated"
#: the statuses ``retry`` accepts
RETRYABLE = (WorkflowStatus.FAILED, WorkflowStatus.BLOCKED)


def terminated(reason: str) -> ErrorInfo:
    """The error a terminated workflow ends with (``Terminated: <reason>``)."""
    return ErrorInfo(TERMINATED, reason)


def check_reason(reason: object) -> str:
    """``reason`` if it can be a terminate's reason (the message of its ``Terminated``
    error): a string with something besides spaces; else ``TypeError`` / ``ValueError``
    naming it. The one rule for ``handle.terminate(reason)`` and ``garrison workflows
    terminate --reason``: an empty reason would end the workflow with the error
    ``Terminated: `` and say nothing about why (leave it out for the default)."""
    if not isinstance(reason, str):
        raise TypeError(f"a terminate reason must be a string, got {type(reason).__name__}: "
                        f"{reason!r}")
    if not reason.strip():
        raise ValueError(f"a terminate reason must say why: got {reason!r} (leave the "
                         "reason out for the default one)")
    check_text(reason, "a terminate reason")  # (NUL, a lone surrogate: no store keeps it)
    return reason


def _pid(record: Any) -> Pid:
    return Pid(record.host or "workflows", record.workflow_id)


# ---------------------------------------------------------------- terminate
def terminate_transaction(store: Any, record: Any, error: ErrorInfo) -> Transaction:
    """The writes that end the stored workflow ``record`` (unfinished) with ``error``
    while no node runs it: its status, its ``EXIT`` to the workflows that watch it and
    may run again (unfinished, or failed: a retry reads it; the workflow itself among
    them, for its children's), and the same for its unfinished children, recursively. The request of
    :func:`request_transaction` goes with them: a node that started meanwhile and runs
    the workflow ends it all the same (a status alone, it could overwrite); once the
    status says it ended, a node only consumes that request (see ``stale_request`` in
    ``_inbox``, for one that outlives a retry). A queued workflow leaves its host's queue (its
    ``dedup`` key is free again), as when a node ends it.

    Written only if every workflow it ends is still as read (status and attempt): one
    that completed, or was ended and retried, between the read and the write is left
    alone, and the commit raises ``ValueError`` (nothing written)."""
    tx = request_transaction(record.workflow_id, error, record.attempt)
    now = _time.time()
    todo: list[tuple[Any, ErrorInfo]] = [(record, error)]
    ended: set[str] = set()
    while todo:
        rec, err = todo.pop(0)
        wid = rec.workflow_id
        if wid in ended:
            continue
        ended.add(wid)
        pid = _pid(rec)
        tx.expect_workflow(wid, status=rec.status, attempt=rec.attempt)
        # (a cancel asked before is moot once it ended: a retry must not take it up)
        tx.update_workflow(wid, status=WorkflowStatus.FAILED, error=err, time=now,
                           cancel_requested=False)
        tx.dequeue(wid)
        for timer in store.timers(wid):  # its waits end with it (a retry resumes none)
            tx.remove_timer(wid, timer.seq)
        consume_linked_rows(store, tx, wid)
        text = json.dumps(event_to_plain(Event(EventKind.EXIT, pid, None, err)))
        # (read by the write, after the status: a monitor committed meanwhile is seen,
        # or its maker finds the workflow ended; see Transaction.deliver_to_monitors)
        tx.deliver_to_monitors(wid, "EXIT", RawJson(text), host=_watchers_host(rec),
                               msg_id_prefix=exit_id(wid, "", rec.attempt), sender=pid,
                               time=now)
        for child in store.list_workflows(parent=pid):
            if not WorkflowStatus(child.status).finished:
                todo.append((child, parent_terminated(wid)))
    return tx


def consume_linked_rows(store: Any, tx: Transaction, wid: str,
                        inbox: Sequence[Any] | None = None) -> None:
    """Into ``tx``, which ends the stored workflow ``wid`` (or retries it, failed): its
    linked rows not acted on (``_inbox.LINKED``: a linked workflow of another node
    failed) consumed. They ask nothing more of the attempt that ends, and left pending
    they would end a retry of it with that old failure. ``inbox``: its pending inbox
    rows, read by the caller (else read here)."""
    for row in store.pending_messages(wid) if inbox is None else inbox:
        if row.kind == "event" and is_linked_row(row.payload):
            tx.consume(wid, row.id, 0)


def end_pending_transaction(store: Any, record: Any, status: WorkflowStatus,
                            error: ErrorInfo, *, unclaimed: bool | str = True,
                            rows: Any = None) -> Transaction:
    """The writes that end the ``pending`` workflow ``record``, which never ran or ran
    before but has no unfinished child (no node runs it: it waits in the store for a
    node of a cluster to claim it), with ``status`` and ``error``, as a node ends one
    waiting in its queue: its status, its queue row (its ``dedup`` key is free again),
    its ``EXIT`` to the workflows that watch it (its parent among them).

    One transaction, written only if the workflow is still ``pending`` in the attempt
    read and no other live node has claimed it (``expect_workflow(unclaimed=True)``):
    a node admitting it at the same moment either commits first, and the commit raises
    :func:`workflow_changed`'s ``ValueError`` (nothing written: that node has it and
    acts on the request), or finds it ended. ``rows``: its ``ResumeRows``, read by the
    caller with others' (``Store.resume_rows``), whose timers and inbox are used
    rather than read here."""
    wid = record.workflow_id
    pid = _pid(record)
    now = _time.time()
    tx = OperatorTransaction().expect_workflow(wid, status=WorkflowStatus.PENDING,
                                               attempt=record.attempt, unclaimed=unclaimed)
    tx.update_workflow(wid, status=status, error=error, time=now)
    tx.dequeue(wid)
    # (a retried one's timers: its waits end with it)
    for timer in store.timers(wid) if rows is None else rows.timers:
        tx.remove_timer(wid, timer.seq)
    consume_linked_rows(store, tx, wid, None if rows is None else rows.inbox)
    text = json.dumps(event_to_plain(Event(EventKind.EXIT, pid, None, error)))
    tx.deliver_to_monitors(wid, "EXIT", RawJson(text), host=_watchers_host(record),
                           msg_id_prefix=exit_id(wid, "", record.attempt), sender=pid,
                           time=now)
    return tx


def _watchers_host(record: Any) -> str | None:
    """The host whose watchers of the workflow of ``record`` a tool's end of it writes
    the ``EXIT`` to: its own (the store's). A watcher of another workflow host of the
    node (another store) keeps its row here too, but its inbox is in its own store: it
    gets the EXIT as it resumes, finding the workflow ended; delivered here by its id
    alone, it went into this store's workflow of the same id (or the ended one's own
    inbox). ``None`` (of any host) for a workflow no node ran yet: no host of its own."""
    return record.host


def never_ran(store: Any, record: Any) -> bool:
    """The pending workflow of ``record`` never ran: its first attempt, or a retry of
    one that ended before it ran (terminated while it waited: no journal, as
    ``queue.cancelled`` reads one waiting in a queue). A cancel ends such a one at once,
    as a node ends one cancelled in its queue; one that ran before runs again, and its
    code gets the cancel as it replays. Blocking (a look at its journal)."""
    return record.attempt == 1 or not store.journal_sizes(record.workflow_id)


def cancel_pending_transaction(store: Any, record: Any) -> Transaction:
    """The writes that end the ``pending`` workflow ``record``, which never ran
    (:func:`never_ran`), ``cancelled``, for a tool while no node holds the store: as a
    node ends one cancelled in its queue (:func:`end_pending_transaction`), written only
    if it is still pending in the attempt read and no live node, of a cluster or not,
    has claimed it (``unclaimed="by_any"``; a claim at the same moment makes the commit
    raise ``ValueError``, nothing written: that node has it and acts on the request).
    ``ValueError`` at once for a workflow that ran before: its code gets the cancel as
    it replays."""
    if record.status != WorkflowStatus.PENDING or not never_ran(store, record):
        raise ValueError(f"workflow {record.workflow_id!r} is not pending unrun (it is "
                         f"{record.status}, attempt {record.attempt})")
    return end_pending_transaction(store, record, WorkflowStatus.CANCELLED,
                                   cancelled_error(record.workflow_id), unclaimed="by_any")


def flag_cancel(store: Any, record: Any, time: float | None = None, *,
                tried: bool = False) -> Any:
    """Flag the workflow of ``record`` (read by the caller) for cancellation in the
    store (asked at ``time``, unix seconds; default now), for the node that runs it (a
    tool, a client's handle): written only while it
    is still the attempt read, not finished. Returns ``None`` once flagged, else the
    record that made the cancel moot: finished, or the attempt read ended and retried
    since (its new attempt would have been cancelled, where a cancel asked before such
    an end is moot). A blocked workflow has not ended: a cancel read of it stands for
    its retry. A status changed within the attempt (running, then sleeping) is looked
    at again. A workflow flagged already keeps the time its flag holds: the cancel
    asked first stands (a node running the workflow ignores one asked again too); the
    flag is written again all the same, which tells the node again. ``NoSuchWorkflow``
    if it is not (or no longer) in the store. ``tried``: the caller's write of
    :func:`flag_transaction` of ``record`` (one of many) found it changed since it was
    read: it is read again first."""
    wid = record.workflow_id if record is not None else None
    for n in range(_CHANGES):
        if record is None:
            raise NoSuchWorkflow(str(wid))
        if WorkflowStatus(record.status).finished:
            return record
        if not (tried and n == 0):  # (else the caller's write found it changed)
            try:
                store.write(flag_transaction(record, time))
                return None
            except ValueError:  # it changed since it was read
                pass
        now = store.get_workflow(record.workflow_id)
        if (now is not None and now.attempt != record.attempt
                and record.status != WorkflowStatus.BLOCKED):
            return now
        record = now
    return record  # (it changed at every try)


def flag_transaction(record: Any, time: float | None = None) -> Transaction:
    """The write that flags the unfinished workflow of ``record`` (read by the caller)
    for cancellation, asked at ``time`` (default now; one flagged already keeps the
    time its flag holds), written only while it is still as read (else the commit
    raises ``ValueError``): one try of :func:`flag_cancel`."""
    if record.cancel_requested and record.cancel_time is not None:
        time = record.cancel_time  # (written again, so that the node hears of it)
    return (Transaction()
            .expect_workflow(record.workflow_id, status=str(record.status),
                             attempt=record.attempt)
            .request_cancel(record.workflow_id, time=time))


#: the times a write conditioned on what was read is tried again as that changes
_CHANGES = 20


async def terminate_workflow(host: WorkflowHost, wid: str, reason: str) -> bool:
    """``handle.terminate()``: end ``wid`` (and its unfinished children) now; True once
    it has ended, False if it had ended already. On a client's host (``lock=False``),
    as ``garrison workflows terminate``: ended in the store while no node holds it,
    else asked through its inbox and the store watched until that node has ended it.
    ``NoSuchWorkflow`` for an unknown id; ``ValueError`` for a blank ``reason`` (see
    :func:`check_reason`). In a cluster, the children another node runs are asked
    through the store: an ask the store fails (logged) is made again at once, and if
    that fails too a ``StoreError`` says so (the terminate itself written, the
    workflow ending); a repeated terminate asks them again."""
    check_reason(reason)
    if host.ends_unasked(wid):  # (its children elsewhere: a failed ask, asked again)
        host.ask_again_for(wid, "terminate")
    store = host.store
    record = store.get_workflow(wid)
    if record is None:
        raise NoSuchWorkflow(wid)
    wf = host.active.get(wid)
    if wf is None and WorkflowStatus(record.status).finished:
        await trio.lowlevel.checkpoint()
        return False
    asked = record.attempt
    if host.client:  # a client (``lock=False``): as the command line does
        error = terminated(reason)
        now = await run_blocking(terminate_unless_node, store, record, error)
        if now is None:
            return True  # no node holds the store: ended in it
        if now.attempt != asked or WorkflowStatus(now.status).finished:
            return False  # it ended (or a retry overtook this) before the terminate
        await store.commit(request_transaction(wid, error, asked))
        await _until_ended(host, wid, asked)  # the node that holds the store ends it
        return True
    await store.commit(request_transaction(wid, terminated(reason), asked))
    refresh(host, wid)
    if host.ends_unasked(wid):  # (its children elsewhere: the ask failed, logged)
        host.ask_again_for(wid, "terminate")
    # until the attempt asked about has ended: a retry that overtook the request started
    # another, which a request for an earlier attempt does not end (nor waits for)
    if host.ownership is not None and wid not in host.active and \
            host.end_pending_stored(wid, WorkflowStatus.FAILED, terminated(reason)):
        return True  # it waited in the store, unclaimed: ended there, never run
    if host.ownership is not None and wid not in host.active:
        # another node of the cluster runs it (or claims it: a terminate is claimed even
        # by a node without its code): watch the store, as ``result()`` does
        await _until_ended(host, wid, asked)
        return True
    while (wf := host.active.get(wid)) is not None and wf.attempt == asked:
        if wf.store_error is not None:
            if isinstance(wf.store_error, WorkflowMoved):
                break  # it moves to another node (this one drains, or lost its lease)
            raise raised_again(wf.store_error)
        if wf.done.is_set():
            await trio.sleep(0)  # blocked: its end is being written
        else:
            await wf.done.wait()
    if host.ownership is not None and wid not in host.finished:
        # it left this node unended (handed over): the node that takes it ends it
        await _until_ended(host, wid, asked)
    return True


async def _until_ended(host: WorkflowHost, wid: str, asked: int) -> None:
    """Watch the store until attempt ``asked`` of ``wid`` has ended (or a retry started
    another), as ``result()`` does for a workflow another node runs (read in a worker
    thread: a slow database holds up this caller, not the event loop)."""
    store = host.store
    while True:
        record = await run_blocking(store.get_workflow, wid)
        if record is None or WorkflowStatus(record.status).finished \
                or record.attempt != asked:
            return
        await trio.sleep(0.02)


#: how many times :func:`terminate_unless_node` reads and writes again when what it ends
#: keeps changing under it (another tool at work), before it leaves a request instead
_WRITE_TRIES = 5


def terminate_unless_node(store: Any, record: Any, error: ErrorInfo) -> Any:
    """For a tool or a client (a store opened with ``lock=False``): end ``record``'s
    workflow with ``error`` in the store itself (:func:`terminate_transaction`) while no
    node holds the store, reading it again when one of the workflows it ends changed
    between the read and the write. ``None`` once ended by this write; else the
    workflow's record as it is now, nothing written: unfinished in the attempt read (a
    node holds the store: ask it with :func:`request_transaction`), finished, or in a
    later attempt (a retry overtook this). ``NoSuchWorkflow`` if it is gone."""
    wid = record.workflow_id
    asked = record.attempt
    for _ in range(_WRITE_TRIES):
        if record.attempt != asked or WorkflowStatus(record.status).finished \
                or store.node_running():
            return record
        try:
            store.write(terminate_transaction(store, record, error))
            return None
        except ValueError:  # one it ends changed since it was read: read again
            record = store.get_workflow(wid)
            if record is None:
                raise NoSuchWorkflow(wid) from None
    return record  # changed under every write: ask the node that opens the store next


# ---------------------------------------------------------------- retry
def _final_errors(record: Any, entries: list[Any]) -> list[Any]:
    """The journal entries (of ``entries``, in order) that hold the final error of an
    activity the workflow of the failed ``record`` failed with (its ``ActivityError``);
    none if it did not fail so."""
    if WorkflowStatus(record.status) is not WorkflowStatus.FAILED or record.error is None \
            or record.error.type != "ActivityError":
        return []
    return [entry for entry in entries
            if entry[1] == JournalKind.ACTIVITY and isinstance(entry[3], dict)
            and isinstance(entry[3].get("error"), dict)
            and str(error_from_plain(entry[3]["error"])) == record.error.message]


def _taken_back(failing: list[Any], entries: list[Any]) -> tuple[int | None, str]:
    """``(seq, what)`` of the journal record a retry takes back (the failing activity's
    final error, ``failing``'s, when it is the journal's last: see the module docs), or
    ``(None, "")``."""
    if not failing or failing[-1] is not entries[-1]:
        return None, ""
    seq, _kind, name = failing[-1][:3]
    # the code runs again from there, not the activity: code deployed since may do
    # another step at that seq (a version gate around a fix-forward, say)
    return seq, f"the workflow runs again from seq {seq}, where activity {name!r} failed"


def taken_back_by_retry(record: Any, entries: list[Any]) -> tuple[int | None, str]:
    """``(seq, what)`` of the journal record a retry of the failed workflow ``record``
    (its journal ``entries``, ``(seq, kind, name, outcome)`` in seq order) takes back
    (the final error of the activity it failed with, when that is the journal's last),
    or ``(None, "")``: the replay tool replays a failed workflow as its retry would."""
    return _taken_back(_final_errors(record, entries), entries)


def _same_failure(failing: list[Any], entries: list[Any]) -> str | None:
    """Why a retry fails the same way unless the code changed, or ``None``: the
    workflow failed with the final error of an activity (``failing``'s first) whose
    record is not the journal's last (its code caught the error, recorded more steps,
    a compensation say, and raised it again; or it awaited another activity started
    beside the failed one that ended later). No record is taken back, so a replay hands
    the code the same recorded error after the same steps: the same code fails again
    at once, running nothing; code deployed since may handle that error otherwise, so
    it is said, not refused."""
    if not failing:
        return None
    seq, _kind, name = failing[0][:3]
    last_seq, last_kind, last_name = entries[-1][:3]
    last = f"{last_kind} {last_name!r}" if last_name else str(last_kind)
    return (f"note: it failed with the final error of activity {name!r} (seq "
            f"{seq}), which its code raised after the journal's last record "
            f"({last}, seq {last_seq}): nothing is taken back, and the same code "
            "replays to the same failure, running no activity again (a retry runs "
            "the failed activity again only when its error is the journal's last "
            "record; deploy code that handles the error first, or start the work "
            "again as a new workflow)")


def same_failure_note(record: Any, entries: list[Any]) -> str | None:
    """The note a retry of the stored workflow ``record`` (its journal ``entries``, in
    order) gives when it would replay to the same failure (see :func:`_same_failure`),
    or ``None``: what the console shows beside its Retry button before the retry."""
    failing = _final_errors(record, entries)
    if _taken_back(failing, entries)[0] is not None:
        return None
    return _same_failure(failing, entries)


def retry_transaction(store: Any, record: Any) -> tuple[Transaction, str]:
    """The writes that resume the stored workflow ``record`` by replay (see the module
    docs), and what happens, in words; ``ValueError`` unless it is ``failed`` or
    ``blocked``."""
    status = WorkflowStatus(record.status)
    if status not in RETRYABLE:
        raise ValueError(f"cannot retry workflow {record.workflow_id!r}: it is {status} "
                         "(only a failed or blocked workflow can be retried)")
    entries, _size = store.journal_entries(record.workflow_id)
    # written only if the workflow is still as read: a second retry read before the
    # first one landed would take back a step the first run has recorded since
    tx = OperatorTransaction().expect_workflow(record.workflow_id, status=record.status,
                                               attempt=record.attempt)
    failing = _final_errors(record, entries)
    seq, what = _taken_back(failing, entries)
    if seq is None:
        what = _same_failure(failing, entries) or what
    if seq is not None:
        tx.truncate_journal(record.workflow_id, seq)
    # a cancel asked before a failed workflow ended (by a terminate, a failure) did not
    # end it and is moot: the retried attempt runs on; a blocked one has not ended, and
    # its cancel stands (as it would when a node resumed it with fixed code)
    tx.update_workflow(record.workflow_id, status=WorkflowStatus.PENDING, error=None,
                       attempt=record.attempt + 1,
                       cancel_requested=False if status is WorkflowStatus.FAILED else None)
    _consume_ended_requests(store, tx, record)
    if status is WorkflowStatus.FAILED:
        # a linked row committed as it failed, after its end read its inbox (the rows
        # it knew of went with its end; none is written once it has ended): it asks
        # nothing of the attempt the retry starts. (A blocked one has not ended: a
        # linked failure that reached it meanwhile still acts, once it replays.)
        consume_linked_rows(store, tx, record.workflow_id)
        # its monitors were told of its failure: the end of the attempt the retry
        # starts (an EXIT of an id of its own, see ``exit_id``) reaches the monitors
        # made of that attempt, not these again. (A blocked one told them nothing.)
        tx.forget_monitors(record.workflow_id)
        # its failure is kept in its memo (the error column is cleared): a node that
        # watches it for a process of its own and reads its row only after this retry
        # tells that process of the end of the attempt it watched (``_attempts``)
        tx.set_attributes(record.workflow_id, memo={FAILED_MEMO: kept_failures(record)})
    # back in its host's queue, by the priority it was started with (its memo keeps
    # it), in the order of the retries (its row, if its end dropped it: a start order
    # a restart keeps), with the dedup key its end freed (a blocked one still holds its
    # row): taken back, or, held by another workflow since, the commit refuses it
    # (DedupKeyTaken, see ``key_taken``)
    key = store.kept_dedup(record.workflow_id)
    if record.run_id is not None:
        tx.enqueue(record.workflow_id, record.run_id, priority=stored_priority(record),
                   dedup=key)
    kept = sum(1 for e in entries if e[0] > 0) - (1 if seq is not None else 0)
    note = f"{kept} journal record(s) replay" + (f"; {what}" if what else "")
    if key is not None:
        note += f"; it holds its dedup key {key!r} again"
    return tx, note


def _consume_ended_requests(store: Any, tx: Transaction, record: Any) -> None:
    """Into ``tx``, which retries ``record``'s workflow: its terminate requests of the
    attempt the retry ends (or an earlier one) consumed. A terminate that ends a
    workflow no node runs (a tool's, a cluster node's of one pending in the store)
    writes one beside the end, for a node that may run it meanwhile, and nothing
    consumes it then; it asks nothing of the retried attempt (a node drops it, as
    ``stale_request``, once it admits the workflow), but left pending it was listed
    among that attempt's pending messages. A request for whatever attempt runs (no
    attempt of its own) stays."""
    for row in store.pending_messages(record.workflow_id):
        attempt = requested_attempt(row.payload) if row.kind == CONTROL else None
        if attempt is not None and attempt <= record.attempt:
            # (a node that reads it meanwhile, its workflow ended, consumes it too:
            # the retry goes on all the same)
            tx.consume(record.workflow_id, row.id, 0, if_pending=True)


def key_taken(workflow_id: str, taken: DedupKeyTaken) -> ValueError:
    """The error of a retry refused because another workflow holds the dedup key the
    retried one was started with (started with the key after this one ended)."""
    return ValueError(f"cannot retry workflow {workflow_id!r}: its dedup key {taken.dedup!r} "
                      f"is held by workflow {taken.workflow_id!r}, started with it since; "
                      "retry it once that one has ended")


async def retry_workflow(host: WorkflowHost, wid: str) -> str:
    """``handle.retry()``: resume the failed or blocked ``wid`` by replay (see the module
    docs); what happens, in words. ``ValueError`` for a workflow in another status,
    ``NoSuchWorkflow`` for an unknown id."""
    store = host.store
    # (the store's reads in a worker thread: a slow database holds up the caller, not
    # the node's event loop)
    record = await run_blocking(store.get_workflow, wid)
    if record is None:
        raise NoSuchWorkflow(wid)
    wf = host.active.get(wid)
    if wf is not None and not wf.done.is_set():
        raise ValueError(f"cannot retry workflow {wid!r}: it is {wf.status} (only a failed "
                         "or blocked workflow can be retried)")
    tx, note = await run_blocking(retry_transaction, store, record)
    try:
        await store.commit(tx)
    except DedupKeyTaken as taken:
        raise key_taken(wid, taken) from None
    # this node's view at once: ``finished`` no longer answers for it (on PostgreSQL it
    # waits in the store for a node to claim it, which ``refresh`` leaves to the claims)
    host.forget_end(wid)
    if not host.client:
        refresh(host, wid)  # loads it and runs it from the top
    await trio.lowlevel.checkpoint()
    return note
