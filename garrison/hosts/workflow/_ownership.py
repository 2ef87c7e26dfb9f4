"""What a cluster does to a workflow host: running workflows it claimed, stopping
workflows that moved to another node (or are handed over), without journaling.

The host knows its cluster only as ``host.ownership`` (``None`` off a cluster), an
object with ``first_claim()``, ``first_resumed()``, ``draining``, ``stopped(wid)``, ``poke()``,
``refuses(name)``, ``refuse(wid, name, error)``, ``blocked(wid, run_id, attempt, name)``
and ``moved(wf, exc)`` (see ``garrison/cluster/``). The store fences every write
(``_pg_write.py``); this module keeps memory in line with it:

- :func:`adopt`: load claimed workflows and run them by replay (marked ``running``);
- a claimed workflow whose code this node cannot import (a rolling deploy: the code of
  a new workflow type reached other nodes first) is given up unrun, for a node that has
  the code (``_recovery.runnable``, as a node's start does);
- a workflow this node's code cannot replay (recorded ``blocked``: a run of newer
  code, say) leaves at once, owned by nobody, for a node whose code can; this node
  claims that run no more (``WorkflowHost.finish``);
- :func:`hand_over`: stop a workflow here without recording anything: at once (its
  lease lapsed, or it waits for something, is blocked or queued) or at its next durable
  operation (a drain: what it was doing is recorded first, and the outcomes of the
  activities it started with ``workflow.start`` that still run);
- :func:`moved`: the instance stopped because of :class:`~garrison.WorkflowMoved`: it
  leaves ``active``, waiters read its outcome from the store, and the cluster releases
  it if this node still owns it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ..._errors import WorkflowMoved
from ...actors._values import Pid
from ...persistence import (
    DamagedRecord,
    Transaction,
    WorkflowRecord,
    WorkflowStatus,
    run_blocking,
)
from ._attempts import Watch
from ._recovery import (
    LOAD_CHUNK,
    count_tool_starts,
    end_requested,
    hold_states,
    load,
    mark_running,
    named_damaged,
    read_together,
    runnable,
)

if TYPE_CHECKING:
    from ._host import WorkflowHost
    from ._instance import WorkflowInstance

__all__ = ["adopt", "hand_over", "moved", "parked"]

log = logging.getLogger("garrison.cluster")


async def adopt(host: WorkflowHost, records: list[WorkflowRecord],
                current: Callable[[], bool] = lambda: True) -> list[str]:
    """Run the claimed workflows ``records`` on ``host``; the ids started.

    They are read :data:`LOAD_CHUNK` at a time (one read of each table, their rows
    too: ``Store.resume_rows``), each made active as it is read, the node's other tasks
    running between two reads; none runs before all are read and marked ``running``
    (written in a worker thread). Once ``current()`` is
    false (the lease under which they were claimed lapsed) or the host closes, no more
    are read: the other nodes take those; a cancel (the node stops) does the same."""
    started: list[str] = []
    resumed = Transaction()
    waiting: dict[str, tuple[WorkflowRecord, WorkflowInstance]] = {}
    requeued = Transaction()
    back: dict[str, tuple[WorkflowRecord, WorkflowInstance]] = {}
    loaded: list[WorkflowInstance] = []
    running: list[WorkflowInstance] = []
    ending: list[WorkflowInstance] = []
    later: list[WorkflowRecord] = []  # (those that wait in the queue: read last)
    stopped: trio.Cancelled | None = None

    def take(chunk: list[WorkflowRecord], queued: bool) -> None:
        """Load ``chunk``, read together; ``queued``: those that wait in the queue too
        (else they are left for ``later``: not active, they would not see what the
        node's tasks send or ask of them before the queue holds them)."""
        # read again: the claim's copy may be older than a cancel request this node
        # wrote since (not running here, the workflow got it in the store only, and
        # no wakeup: this node owns it); load reads the rest (inbox...) afresh
        read = read_together(host, [r.workflow_id for r in chunk], records=True)
        for record in chunk:
            wid = record.workflow_id
            rows = None if read is None else read.get(wid)
            try:
                if rows is None:  # (not read together: alone, as each was before)
                    record = host.store.get_workflow(wid) or record
                else:
                    record = rows.record or record
                if WorkflowStatus(record.status).finished:
                    continue
                if not queued and (record.status == WorkflowStatus.PENDING
                                   or host.queue.comes_back(record)):
                    later.append(record)
                    continue
                wf = load(host, record, rows)
            except DamagedRecord as exc:  # (its journal, its inbox: as at the node's start)
                named_damaged(host, exc, "resume")
                continue
            except Exception as exc:  # pragma: no cover - a broken row
                log.error("cannot resume workflow %s: %s", wid, exc, extra={"workflow_id": wid})
                continue
            loaded.append(wf)
            if wf.requests:
                # asked to terminate while its owner was gone (the claim spent the
                # request's wakeup): it ends unrun, as at a node's start (no code
                # needed for that)
                host.active[wid] = wf
                wf.exited.set()
                ending.append(wf)
                started.append(wid)
                continue
            if not runnable(host, record):
                continue
            if record.status == WorkflowStatus.PENDING:  # it waits in this node's queue
                waiting[wid] = (record, wf)
                started.append(wid)
                continue
            if host.queue.comes_back(record):  # blocked: it waits there too (pending again)
                back[wid] = (host.queue.requeue(requeued, record), wf)
                continue
            if record.status != WorkflowStatus.RUNNING:
                resumed.resume_workflow(wid, time=host.clock.now())
            host.active[wid] = wf  # (its task starts once every one is read)
            host.queue.started(wf)
            running.append(wf)
            host.counts["resumed"] += 1  # unfinished: a node that died or drained left it
            started.append(wid)

    for first in range(0, len(records), LOAD_CHUNK):
        if first:
            try:  # (the node's other tasks run between two reads: its services, console)
                await trio.lowlevel.checkpoint()
            except trio.Cancelled as exc:
                stopped = exc
                break
        if host.closing or not current():
            break
        # read and made active in one step: nothing of the node writes between (see
        # ``end_pending_stored``)
        take([r for r in records[first:first + LOAD_CHUNK] if r.workflow_id not in host.active
              and r.workflow_id not in waiting], False)
    if resumed:  # (thousands of rows: written in a worker thread, before their tasks run)
        with trio.CancelScope(shield=True):
            await run_blocking(mark_running, host, resumed)
        resumed = Transaction()
    if stopped is None and not host.closing and current():
        for first in range(0, len(later), LOAD_CHUNK):  # (in one step with the restore)
            take([r for r in later[first:first + LOAD_CHUNK] if r.workflow_id not in host.active],
                 True)
    for wf in ending:
        host.start_soon(end_requested, host, wf)
    with host.cancels_batched():  # (their children elsewhere: one read for all)
        for wf in running:
            host.start_soon(wf.main)
            if wf.cancel_requested:
                host.cancel_children(wf)
    # a tool's start is counted once, where it runs (a node's own start left to the
    # cluster was counted on that node: it has a queue row)
    count_tool_starts(host, [record for record, _ in waiting.values()])
    if back:
        # written before the queue offers them to the store, which admits only pending
        # workflows; not written, they are released for another node
        try:
            host.store.write(requeued)
        except Exception as exc:
            log.warning("could not put blocked workflows back in the queue of host %s "
                        "(released for the other nodes): %s", host.name, exc)
            ownership: Any = host.ownership
            for wid in back:
                ownership.stopped(wid)
        else:
            waiting.update(back)
            started.extend(back)
            host.counts["resumed"] += len(back)
    if waiting:  # in queue order (priority, start order), as after a restart
        host.queue.restore([r for r, _ in waiting.values()],
                           lambda record: waiting[record.workflow_id][1])
    hold_states(host, loaded)  # (before the tasks just started run)
    if resumed:  # (before the tasks just started run: see mark_running)
        mark_running(host, resumed)
    if stopped is not None:
        raise stopped
    return started


def parked(wf: WorkflowInstance) -> bool:
    """True if ``wf`` waits for something (a message, timer, promise) with no activity
    of its own under way: everything it did is recorded, it can move at once. (One it
    started with ``workflow.start`` runs beside the wait, awaited in ``first`` or not
    awaited yet: moved now, it would be cancelled unrecorded and run again.)"""
    return (wf.status in (WorkflowStatus.WAITING, WorkflowStatus.SLEEPING)
            and (wf.started is None or not wf.started.running))


def hand_over(host: WorkflowHost, wf: WorkflowInstance, exc: WorkflowMoved, *,
              now: bool) -> None:
    """Stop ``wf`` on this node without recording anything: ``now`` cancels it where it
    is (the activities it started too); otherwise it stops at its next durable
    operation (after recording the one in flight, and the outcomes of the activities it
    started that still run: see ``Activities.end_started``). A blocked workflow (its
    code has ended, it stays in ``active`` until a retry) and one waiting in the host's
    queue (it never ran) leave at once: a drain waits for ``active`` to empty, and
    after a lapse another node may own them."""
    if wf.done.is_set():
        if host.active.get(wf.wid) is wf:  # blocked: nothing runs, nothing to record
            moved(host, wf, exc)
        return
    if wf.store_error is None:
        wf.store_error = exc
    wf.handed_over = not now
    if host.queue.leave(wf):
        # waiting in the queue: it never ran, and left there it would start (if ever:
        # the cluster may admit nothing more) only to stop at its first step
        wf.done.set()
        moved(host, wf, exc)
        wf.mark_exited()
        return
    if now or parked(wf):
        wf.cancel_body()
    if now:
        wf.stop_started()
    wf.wake()


def moved(host: WorkflowHost, wf: WorkflowInstance, exc: WorkflowMoved) -> None:
    """``wf`` stopped here because it runs elsewhere now (or was handed over)."""
    current = host.active.get(wf.wid)
    if current is wf:
        current = None
        del host.active[wf.wid]
    # a run of an incarnation whose lease lapsed that stopped only now (an activity in
    # a worker thread held it past the lease): the node joined again since as a new
    # incarnation, which may own the workflow, and run it here again (``current``)
    stale = current is not None or wf.epoch != getattr(host.store, "fence_epoch", None)
    if current is None:  # (else they are that run's: not this one's to drop)
        host.elsewhere.forget_linker(wf.pid)  # its links are made again where it resumes
        # as are its links to and monitors of plain processes of other nodes: kept here
        # too, a loss of their node would give it each event twice (from here and there)
        if wf.links or wf.monitoring:
            host.node.forget_remote_watches(wf.pid,
                                            [*(wf.links or ()), *(wf.monitoring or ())])
        for name in host.names.pop(wf.wid, ()):
            host.node.unregister(name, wf.pid)
    watch_elsewhere(host, wf)
    ownership: Any = host.ownership
    if stale:  # (released, it would be taken from under the new incarnation's run)
        log.info("workflow %s: its run of this node's previous incarnation (whose lease "
                 "lapsed) stopped now, unrecorded: %s", wf.wid, exc,
                 extra={"workflow_id": wf.wid, "run_id": wf.run_id, "pid": wf.pid})
        return
    lapsed = exc.lease_lapsed and ownership is not None
    if ownership is not None:
        ownership.stopped(wf.wid)
        if lapsed:
            ownership.left_as_lapsed(wf.wid)
    # (as the node stops, or its lease lapsed, one line says how many: not one per
    # workflow at INFO)
    log.log(logging.DEBUG if host.closing or lapsed else logging.INFO,
            "workflow %s left this node: %s", wf.wid, exc,
            extra={"workflow_id": wf.wid, "run_id": wf.run_id, "pid": wf.pid})


def watch_elsewhere(host: WorkflowHost, wf: WorkflowInstance) -> None:
    """``wf`` runs on another node now: what this node's processes hold on it in memory
    (monitors, links of plain processes, calls waiting for its reply) moves to
    ``host.elsewhere``, which reads its end from the store, as for a workflow that ran
    elsewhere from the start. (Workflows watching it are stored: its new node delivers
    their events; its reply reaches a caller here through the caller's node.)"""
    watchers = wf.watchers
    callers = wf.callers
    node = host.node
    links = [p for p in wf.links if _local_process(node, p)
             and node.holds_link(p, wf.pid)] if wf.links else None
    if not watchers and not callers and not links:
        return
    entry = host.elsewhere.watch(wf.pid)
    watch = Watch(wf.attempt)  # (of the attempt that ran here)
    for watcher in watchers or ():
        entry.monitor(watcher, watch)
    wf.watchers = None
    for link in links or ():
        entry.link(link, watch)
    if callers:
        if entry.callers is None:
            # (the same dict: a call that ends takes its ref out of the one it joined)
            entry.callers = callers
        else:
            entry.callers.update(callers)
        wf.callers = None


def _local_process(node: Any, pid: Pid) -> bool:
    """``pid`` is a plain process of this node (not a workflow, nor another node's)."""
    h = node.hosts.get(pid.host)
    return h is not None and not h.durable and not node.plain_elsewhere(pid)
