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
import time as _time
from typing import TYPE_CHECKING

import trio

from ..._errors import StoreError
from ...persistence import Transaction, WorkflowRecord, WorkflowStatus
from ._inbox import item_from_record
from ._instance import WorkflowInstance
from ._journal import Entry, initial_state

if TYPE_CHECKING:
    from ._host import WorkflowHost

__all__ = ["load", "refresh", "resume_all", "watch_wakeups"]

log = logging.getLogger("garrison.workflow")


#: the longest the collector stays paused while recovered workflows replay
GC_PAUSE_MAX = 10.0


def load(host: WorkflowHost, record: WorkflowRecord) -> WorkflowInstance:
    """An instance of the stored workflow ``record``, ready to replay its journal."""
    store = host.store
    wid = record.workflow_id
    rows, _size = store.journal_entries(wid)  # one json.loads for the whole journal
    journal = [Entry(*row) for row in rows]
    pending = [item_from_record(r) for r in store.pending_messages(wid)]
    timers = {t.seq: t.deadline.timestamp() for t in store.timers(wid)}
    wf = WorkflowInstance(
        host, wid, record.name, list(record.input), run_id=record.run_id or "",
        attempt=record.attempt, parent=record.parent,
        created=record.created.timestamp() if record.created else _time.time(),
        journal=journal, pending=pending, timers=timers,
        cancel_requested=record.cancel_requested,
        watchers=list(store.monitors(wid)), state=initial_state(journal),
    )
    load_promises(host, wf)
    return wf


def load_promises(host: WorkflowHost, wf: WorkflowInstance) -> None:
    """The completed promises of ``wf`` from the store."""
    for rec in host.store.promises(wf.wid):
        if rec.status != "pending":
            wf.promises[rec.name] = (str(rec.status),
                                     rec.value if rec.status == "resolved" else rec.error)


async def resume_all(host: WorkflowHost, nursery: trio.Nursery) -> None:
    """Start every unfinished workflow of the store (not already running), marked
    ``running`` in the store before this returns."""
    resumed = Transaction()
    recovering: list[WorkflowInstance] = []
    paused = _pause_gc()
    try:
        ownership = host.ownership
        records = (ownership.first_claim() if ownership is not None
                   else host.store.unfinished_workflows())
        for record in records:
            if record.workflow_id in host.active:
                continue  # started (or refreshed) meanwhile
            try:
                wf = load(host, record)
            except Exception as exc:  # pragma: no cover - a broken row
                log.error("cannot resume workflow %s: %s", record.workflow_id, exc,
                          extra={"workflow_id": record.workflow_id})
                continue
            host.active[wf.wid] = wf
            if record.status != WorkflowStatus.RUNNING:  # pending, blocked, parked
                resumed.update_workflow(wf.wid, status=WorkflowStatus.RUNNING,
                                        time=host.clock.now())
            nursery.start_soon(wf.main)
            recovering.append(wf)
    finally:
        if paused:
            nursery.start_soon(_resume_gc, recovering)
    if resumed:
        host.store.write(resumed)
    for wf in list(host.active.values()):
        if wf.cancel_requested:  # by a tool while no node ran: children go too
            host.cancel_children(wf)


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
    resolutions, cancel requests, workflows to start."""
    while not host.closing:
        try:
            wakes = await host.store.wakeups()
        except StoreError as exc:  # the store is gone: every workflow stops
            if not host.closing:
                host.store_failed(exc)
            return
        for wake in wakes:
            if host.closing:
                return  # the node is closing (its store may be closed already)
            refresh(host, wake.workflow_id)


def refresh(host: WorkflowHost, wid: str) -> None:
    """Bring the in-memory workflow ``wid`` up to date with its store rows (or start
    it, if a tool created it)."""
    record = host.store.get_workflow(wid)
    if record is None:
        return
    wf = host.active.get(wid)
    if wf is None:
        if host.ownership is not None and not host.ownership.owns(wid):
            host.ownership.poke()  # in a cluster a workflow runs where it was claimed
            return
        if not WorkflowStatus(record.status).finished:
            host.run_instance(load(host, record))
        return
    known = {item.id for item in wf.pending}
    changed = False
    for rec in host.store.pending_messages(wid):
        if rec.id not in known:
            wf.pending.append(item_from_record(rec))
            changed = True
    if record.cancel_requested and not wf.cancel_requested:
        wf.cancel_requested = True
        host.cancel_children(wf)
        changed = True
    before = len(wf.promises)
    load_promises(host, wf)
    changed = changed or len(wf.promises) != before
    if changed:
        wf.pending.sort(key=lambda item: item.id)
        wf.wake()
