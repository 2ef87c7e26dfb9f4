"""The queue of a workflow host: limits on how many of its workflows run at once and
how many start per period, priorities, and dedup keys.

A workflow host with limits (``max_concurrent``, ``cluster_max_concurrent``, ``rate``)
starts a workflow at once while it has room; otherwise the workflow is created
``pending`` and waits here, in priority order (higher first), then start order, until a
slot frees (a workflow of the host ends or is blocked) and the rate allows. A waiting
workflow is a real instance in ``host.active`` whose task has not started: messages,
monitors, ``result()``, cancel and kill work on it as on a running one (a cancel or
kill ends it at once, ``cancelled`` or ``failed``, without running its code).

In the store a waiting workflow has status ``pending`` and a queue row (priority,
start order); a workflow started with a ``dedup`` key has a queue row holding the key
until it ends, so a second start with that key returns the first one's pid. After a
restart the running workflows resume first (they take their slots), then the queue
drains in its order. The rate's token bucket lives in memory (full after a restart).

Workflows a workflow starts (child workflows) start at once whatever the limits (a
parent waiting for a child it queued behind itself would never end) and count as
running.
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..._duration import parse_rate
from ..._errors import WorkflowCancelled
from ...actors._values import ErrorInfo
from ...persistence import Transaction, WorkflowRecord, WorkflowStatus

if TYPE_CHECKING:
    from ._host import WorkflowHost
    from ._instance import WorkflowInstance

__all__ = ["QueueLimits", "WorkflowQueue"]

log = logging.getLogger("garrison.workflow")


def _limit(value: object, name: str) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"{name} must be a whole number >= 1 (or None: no limit), got "
                         f"{value!r}")


@attrs.frozen
class QueueLimits:
    """The limits of a workflow host: ``max_concurrent`` workflows running at once on
    this node, ``cluster_max_concurrent`` across the nodes of a cluster (with one node it
    acts like ``max_concurrent``), ``rate`` starts per period (``"100/1m"``: a token
    bucket holding up to 100 starts, refilled at 100 a minute). ``None``: no limit."""

    max_concurrent: int | None = None
    cluster_max_concurrent: int | None = None
    rate: str | None = None
    _rate: tuple[int, float] | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _limit(self.max_concurrent, "max_concurrent")
        _limit(self.cluster_max_concurrent, "cluster_max_concurrent")
        rate = None if self.rate is None else parse_rate(self.rate)
        object.__setattr__(self, "_rate", rate)

    @property
    def concurrency(self) -> int | None:
        """The most workflows of the host running at once here (``None``: no limit)."""
        limits = [n for n in (self.max_concurrent, self.cluster_max_concurrent) if n]
        return min(limits) if limits else None

    @property
    def starts(self) -> tuple[int, float] | None:
        """``(count, period seconds)`` of ``rate``, or ``None``."""
        return self._rate

    @property
    def limited(self) -> bool:
        """True if any limit is set."""
        return self.concurrency is not None or self._rate is not None


class WorkflowQueue:
    """The queue of one workflow host (see the module docs)."""

    def __init__(self, host: WorkflowHost, limits: QueueLimits | None = None) -> None:
        self.host = host
        self.limits = limits or QueueLimits()
        #: ids of the workflows holding a slot: running, or admitted and starting
        self.running: set[str] = set()
        #: waiting workflows: id -> instance (its task not started)
        self.held: dict[str, WorkflowInstance] = {}
        #: (-priority, seq, arrival, id), lazily pruned: queue order
        self._order: list[tuple[int, int, int, str]] = []
        self._arrivals = 0
        #: the highest start order seen (a store's seq only grows)
        self._last_seq = 0
        #: ids of the workflows with a queue row in the store
        self.rows: set[str] = set()
        #: dedup key -> the unfinished workflow holding it
        self.dedup: dict[str, str] = {}
        rate = self.limits.starts
        self._tokens = float(rate[0]) if rate else math.inf
        self._refilled = trio.current_time()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """``pending`` (waiting), ``running`` (holding a slot), and the limits."""
        return {"pending": len(self.held), "running": len(self.running),
                "max_concurrent": self.limits.concurrency, "rate": self.limits.rate}

    # ------------------------------------------------------------ admission
    def _refill(self) -> None:
        rate = self.limits.starts
        if rate is None:
            return
        count, period = rate
        now = trio.current_time()
        self._tokens = min(float(count), self._tokens + (now - self._refilled) * count / period)
        self._refilled = now

    def _slot_free(self) -> bool:
        limit = self.limits.concurrency
        return limit is None or len(self.running) < limit

    def _room(self) -> bool:
        self._refill()
        return self._slot_free() and self._tokens >= 1

    def room(self) -> int | None:
        """How many more of the host's workflows may run here now (``None``: no
        concurrency limit); in a cluster a node claims no more than this."""
        limit = self.limits.concurrency
        return None if limit is None else max(0, limit - len(self.running))

    def admit(self, wid: str) -> bool:
        """A new workflow: True if it may run now (its slot is reserved and a start
        taken from the rate); False if it must wait (nobody waits before it and the
        limits allow it, or else)."""
        if self.held or not self._room():
            return False
        self._tokens -= 1
        self.running.add(wid)
        return True

    def unreserve(self, wid: str) -> None:
        """An admitted start did not happen (its id existed, or the write failed)."""
        if wid in self.running and wid not in self.host.active:
            self.running.discard(wid)
            self._changed.set()

    def created(self, wid: str, seq: int | None, dedup: str | None) -> None:
        """A start wrote a queue row (``seq``) holding ``dedup``."""
        if seq is not None:
            self._last_seq = max(self._last_seq, seq)
            self.rows.add(wid)
            if dedup is not None:
                self.dedup[dedup] = wid

    def holder(self, dedup: str) -> str | None:
        """The unfinished workflow holding ``dedup``, if this node knows one."""
        wid = self.dedup.get(dedup)
        if wid is None:
            return None
        wf = self.host.active.get(wid)
        if wf is None or (wf.done.is_set() and wf.status.finished):
            return None
        return wid

    # ------------------------------------------------------------ the running set
    def started(self, wf: WorkflowInstance) -> None:
        """``wf``'s task starts: it holds a slot until its task ends."""
        self.running.add(wf.wid)

    def left(self, wf: WorkflowInstance) -> None:
        """``wf``'s task ended (finished, blocked, or the node closes): its slot frees."""
        if wf.wid in self.running:
            self.running.discard(wf.wid)
            if self.held:
                self._changed.set()

    # ------------------------------------------------------------ waiting
    def hold(self, wf: WorkflowInstance, priority: int = 0, seq: int | None = None) -> None:
        """``wf`` (created ``pending``) waits for a slot, in order: ``priority`` (higher
        first), then ``seq`` (its queue row's start order; ``None``: a workflow without
        a row, after every row seen so far), then arrival here."""
        if seq is None:
            seq = self._last_seq
        self._last_seq = max(self._last_seq, seq)
        self._arrivals += 1
        wf.status = wf.stored_status = WorkflowStatus.PENDING
        self.host.active[wf.wid] = wf
        self.held[wf.wid] = wf
        heapq.heappush(self._order, (-priority, seq, self._arrivals, wf.wid))
        if wf.cancel_requested:  # by a tool while it waited
            self.cancelled(wf)
        self._changed.set()

    def holds(self, wf: WorkflowInstance) -> bool:
        """True while ``wf`` waits in the queue."""
        return self.held.get(wf.wid) is wf

    def offer(self, wf: WorkflowInstance, record: WorkflowRecord) -> None:
        """A stored unfinished workflow this node did not run (a tool created it, or it
        waited while no node ran): a ``pending`` one goes through the queue, any other
        runs at once."""
        if record.status != WorkflowStatus.PENDING:
            self.host.run_instance(wf)
            return
        self.hold(wf)

    def restore(self, records: list[WorkflowRecord], load: Any) -> None:
        """After a restart: the queue rows (order, dedup keys), and the ``pending``
        workflows of ``records`` waiting in it (``load(record)`` makes an instance); the
        queue drains once the resumed workflows hold their slots."""
        entries = {e.workflow_id: e for e in self.host.store.queue_entries()}
        self.rows = set(entries)
        self.dedup = {e.dedup: e.workflow_id for e in entries.values() if e.dedup is not None}
        self._last_seq = max((e.seq for e in entries.values()), default=0)
        for record in records:
            entry = entries.get(record.workflow_id)
            try:
                wf = load(record)
            except Exception as exc:  # pragma: no cover - a broken row
                log.error("cannot load queued workflow %s: %s", record.workflow_id, exc,
                          extra={"workflow_id": record.workflow_id})
                continue
            if entry is not None:
                self.hold(wf, entry.priority, entry.seq)
            else:  # pending without a row (a tool started it): after the rows
                self.hold(wf)
        self.start_now()

    # ------------------------------------------------------------ ending without running
    def cancelled(self, wf: WorkflowInstance) -> None:
        """A cancel request for ``wf``: if it waits, it ends ``cancelled`` at once."""
        if self.holds(wf):
            self._end_soon(wf, WorkflowStatus.CANCELLED,
                           ErrorInfo.from_exception(WorkflowCancelled(
                               f"workflow {wf.wid!r} was cancelled")))

    def killed(self, wf: WorkflowInstance, reason: ErrorInfo) -> bool:
        """``wf`` is killed: if it waits, it ends ``failed`` at once (True)."""
        if not self.holds(wf):
            return False
        self._end_soon(wf, WorkflowStatus.FAILED, reason)
        return True

    def _end_soon(self, wf: WorkflowInstance, status: WorkflowStatus,
                  error: ErrorInfo) -> None:
        del self.held[wf.wid]
        if self._nursery is None or self.host.closing:
            return  # the node closes: it stays pending in the store, and so is ended later
        self._nursery.start_soon(self._end, wf, status, error)

    async def _end(self, wf: WorkflowInstance, status: WorkflowStatus,
                   error: ErrorInfo) -> None:
        try:
            await self.host.finish(wf, status, None, error)
        except Exception as exc:  # the store failed: it stays pending there
            log.error("could not end queued workflow %s: %s", wf.wid, exc,
                      extra={"workflow_id": wf.wid})
        finally:
            wf.exited.set()
            self.host.exited(wf)

    def finishing(self, tx: Transaction, wf: WorkflowInstance) -> None:
        """``wf`` ends: its queue row, if it has one, goes with the transaction that
        records the end. Always asked of the store: a row this node does not know of
        (another node of a cluster, or a tool, queued the workflow) must not outlive
        it and hold its dedup key."""
        tx.dequeue(wf.wid)
        if wf.wid in self.rows:
            self.rows.discard(wf.wid)
            for key in [k for k, v in self.dedup.items() if v == wf.wid]:
                del self.dedup[key]

    def close(self) -> None:
        """The node closes: waiting workflows stay ``pending`` in the store."""
        for wid, wf in self.held.items():
            if self.host.active.get(wid) is wf:
                del self.host.active[wid]
        self.held.clear()
        self._order.clear()

    # ------------------------------------------------------------ draining
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Start waiting workflows whenever the limits allow, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                batch = self._ready()
                if batch:
                    await self._start(batch)
                    continue
                deadline = math.inf
                rate = self.limits.starts
                if self.held and rate is not None and self._slot_free() and not \
                        self.host.closing:  # waiting for the next start the rate allows
                    count, period = rate
                    deadline = trio.current_time() + (1 - self._tokens) * period / count
                self._changed = trio.Event()
                with trio.move_on_at(deadline):
                    await self._changed.wait()

    def _ready(self) -> list[WorkflowInstance]:
        """Take the waiting workflows that may start now, in queue order."""
        batch: list[WorkflowInstance] = []
        if self.host.closing:
            return batch
        while self._order and self._room():
            wid = heapq.heappop(self._order)[-1]
            wf = self.held.pop(wid, None)
            if wf is None:
                continue  # ended while it waited
            self._tokens -= 1
            self.running.add(wid)
            batch.append(wf)
        return batch

    def _marked(self, batch: list[WorkflowInstance]) -> Transaction:
        tx = Transaction()
        now = self.host.clock.now()
        for wf in batch:
            tx.update_workflow(wf.wid, status=WorkflowStatus.RUNNING, time=now)
        return tx

    def _failed(self, batch: list[WorkflowInstance], exc: Exception) -> None:
        """The store refused to mark ``batch`` running: they stay pending there."""
        log.error("host %s could not start %d queued workflows: %s", self.host.name,
                  len(batch), exc)
        for wf in batch:
            self.running.discard(wf.wid)
            if self.host.active.get(wf.wid) is wf:
                del self.host.active[wf.wid]

    def _run(self, batch: list[WorkflowInstance]) -> None:
        host = self.host
        for wf in batch:
            wf.status = wf.stored_status = WorkflowStatus.RUNNING
            if host.active.get(wf.wid) is wf and not host.closing:
                host.run_instance(wf)
            else:
                self.running.discard(wf.wid)

    async def _start(self, batch: list[WorkflowInstance]) -> None:
        try:
            await self.host.store.commit(self._marked(batch))
        except Exception as exc:
            self._failed(batch, exc)
            return
        self._run(batch)

    def start_now(self) -> None:
        """Start what may start now, synchronously (recovery: so that ``open_node``
        returns with them ``running``, as any other resumed workflow)."""
        batch = self._ready()
        if not batch:
            return
        try:
            self.host.store.write(self._marked(batch))
        except Exception as exc:
            self._failed(batch, exc)
            return
        self._run(batch)
