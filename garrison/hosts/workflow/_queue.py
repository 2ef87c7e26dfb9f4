"""The queue of a workflow host: limits on how many of its workflows run at once and
how many start per period, priorities, and dedup keys.

A workflow host with limits (``max_concurrent``, ``cluster_max_concurrent``, ``rate``)
starts a workflow at once while it has room; otherwise the workflow is created
``pending`` and waits here, in priority order (higher first), then start order, until a
slot frees (a workflow of the host ends or is blocked) and the rate allows. A waiting
workflow is a real instance in ``host.active`` whose task has not started: messages,
monitors, ``result()``, cancel and kill work on it as on a running one (a cancel or
kill ends it at once, ``cancelled`` or ``failed``, without running its code).

In a cluster (a PostgreSQL store, one node or more) a workflow a full node starts
waits ``pending`` in the store, owned by no node, until a node with room claims it
(then it waits here briefly, or starts): it is not in any node's memory. A cancel,
kill or terminate asked of any node ends it in the store at once, unrun
(``WorkflowHost.end_pending_stored``: one transaction, written only if it is still
pending and no other live node claimed it), and ``stats()`` counts the store's
pending rows of the host.

In the store a waiting workflow has status ``pending`` and a queue row (priority,
start order); a workflow started with a ``dedup`` key has a queue row holding the key
until it ends, so a second start with that key returns the first one's pid (the
store keeps the key of a dropped row on the workflow's row, and its memo a priority
other than 0, ``PRIORITY_MEMO``: a retry takes both back, with a row of its own).
After a restart the running workflows resume first (they take their slots), then the
queue drains in its order; a blocked one (it held no slot) waits in it, pending again
(``comes_back``), also when a node of a cluster claims it.

Where each limit is kept:

- ``max_concurrent`` is this node's: the workflows holding a slot here (``running``,
  in memory). Off a cluster (one node per store) ``cluster_max_concurrent`` is the
  same (the smaller applies).
- ``rate`` and, in a cluster, ``cluster_max_concurrent`` are the host's across the
  store: the store admits (``Transaction.admit``: it counts the host's workflows
  running or parked, and those admitted in the rate's last period, by their stored
  ``admitted`` time, then admits, in one step under a lock of the host), so they hold
  across restarts and across the nodes of a cluster. A workflow this node would start
  is created ``pending`` and admitted in the same transaction, or waits. The store
  admits in the host's queue order across the cluster: not while a workflow of the
  host before it waits on another live node (which admits it at its own next try) or
  unclaimed (a node with room claims it at its next round). After the store refused,
  the queue tries again when a slot frees here, when another node says one freed
  there (``slot_freed``: a notification), when the rate allows (the oldest start it
  counts leaves the period), and at most ``RETRY`` seconds later.

Workflows a workflow starts (child workflows) start at once whatever the limits (a
parent waiting for a child it queued behind itself would never end) and count as
running; so does a waiting workflow a workflow spawns by its id (``start_child``; in a
cluster one waiting in the store unclaimed is claimed for it: ``children``).
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..._duration import MAX_COUNT, parse_rate
from ..._errors import StoreError, WorkflowMoved
from ...actors._values import ErrorInfo
from ...persistence import Transaction, WorkflowRecord, WorkflowStatus
from ...persistence._blocking import virtual_clock
from ._core import cancelled_error
from ._ids import check_key_size, check_text
from ._waits import WallClock, wait_shown

if TYPE_CHECKING:
    from ._host import WorkflowHost
    from ._instance import WorkflowInstance

__all__ = ["PRIORITY_MAX", "PRIORITY_MEMO", "PRIORITY_MIN", "TOOL_START_MEMO", "QueueLimits",
           "WorkflowQueue", "check_dedup", "check_priority", "stored_priority", "tool_start"]

log = logging.getLogger("garrison.workflow")

#: after the store refused an admission, the longest wait before trying again (a
#: notification of another node may be lost; a workflow there may have been blocked)
RETRY = 1.0
#: the most waiting workflows offered to the store in one admission
ADMIT_BATCH = 500
#: in a cluster, how long (real seconds) ``stats()`` reuses the store's count of the
#: host's pending workflows (each read is a query on the node's thread)
PENDING_READ_EVERY = 0.5
#: the memo key of a workflow started with a ``priority`` other than 0: the priority,
#: kept after its queue row is dropped (at its end), for a retry to wait by it again
PRIORITY_MEMO = "garrison.priority"
#: the memo key of a workflow a tool created (``garrison workflows start``, ``garrison
#: schedules trigger``, a node on a store it does not hold): it has a queue row as a
#: node's start that waits has, but no node counted its start (``count_tool_starts``)
TOOL_START_MEMO = "garrison.tool_start"


#: the range of a start's ``priority``: a 64-bit signed integer, as the stores keep it
PRIORITY_MIN, PRIORITY_MAX = -(2**63), 2**63 - 1


def check_priority(priority: object) -> None:
    """A start's ``priority``, as ``start_workflow`` and ``garrison workflows start
    --priority`` take it: ``TypeError`` unless an ``int``, ``ValueError`` outside the
    range a store keeps."""
    if type(priority) is not int:
        raise TypeError(f"priority must be an int, got {type(priority).__name__}: "
                        f"{priority!r}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"priority must be a 64-bit integer, from -2**63 to 2**63 - 1 "
                         f"(a store keeps it as one), got {priority}")


def check_dedup(dedup: object) -> None:
    """A start's ``dedup`` key (``None``: none), as ``start_workflow`` and ``garrison
    workflows start --dedup`` take it: ``TypeError`` unless a ``str``, ``ValueError``
    for an empty or blank one, or one a store cannot keep."""
    if dedup is None:
        return
    if not isinstance(dedup, str):
        raise TypeError(f"dedup must be a non-empty string or None, got {dedup!r}")
    if not dedup.strip():  # (a key made of nothing: an unfilled template, say)
        raise ValueError(f"dedup must be a non-empty string or None, got {dedup!r} "
                         "(empty or blank)")
    check_text(dedup, "a dedup key")
    check_key_size(dedup, "a dedup key")


def stored_priority(record: WorkflowRecord) -> int:
    """The ``priority`` ``record``'s workflow was started with (its memo keeps it; 0
    without it, or for a value that cannot be one)."""
    value = record.memo.get(PRIORITY_MEMO) if record.memo else None
    if type(value) is not int or not -(2**63) <= value <= 2**63 - 1:
        return 0
    return value


def tool_start(tx: Transaction, workflow_id: str, name: str, input: Any, *, run_id: str,
               host: str | None = None, priority: int = 0,
               dedup: str | None = None) -> Transaction:
    """Add to ``tx`` a tool's start of workflow ``workflow_id``: ``pending`` until a node
    runs it, and in its host's queue as a node's start that waits is (a row of its
    own: its place in start order among the others of its ``priority``, which the
    claims and admissions of a cluster and a restart's queue go by; its memo keeps a
    priority other than 0, for a retry), holding ``dedup`` if given. ``run_id`` tells
    this create from a racing one's; a workflow of that id existing, nothing is
    written (whoever holds ``dedup``: the id comes first); else, ``dedup`` held by an
    unfinished workflow, the commit raises ``DedupKeyTaken`` naming it, and nothing is
    written."""
    now = time.time()
    memo: dict[str, Any] = {TOOL_START_MEMO: True}
    if priority:
        memo[PRIORITY_MEMO] = priority
    return tx.create_workflow(workflow_id, name, input, status="pending", host=host,
                              run_id=run_id, time=now, memo=memo
                              ).enqueue(workflow_id, run_id, priority=priority, dedup=dedup,
                                        time=now)


def _limit(value: object, name: str) -> None:
    if value is not None and (type(value) is not int or not 1 <= value <= MAX_COUNT):
        raise ValueError(f"{name} must be a whole number from 1 to 2**63 - 1 (a store keeps "
                         f"it as a 64-bit integer), or None: no limit; got {value!r}")


@attrs.frozen
class QueueLimits:
    """The limits of a workflow host: ``max_concurrent`` workflows running at once on
    this node, ``cluster_max_concurrent`` across the nodes of a cluster (with one node it
    acts like ``max_concurrent``), ``rate`` starts per period (``"100/1m"``: at most 100
    admitted in any minute, counted in the store: across restarts and nodes). ``None``:
    no limit."""

    max_concurrent: int | None = None
    cluster_max_concurrent: int | None = None
    rate: str | None = None
    _rate: tuple[int, float] | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _limit(self.max_concurrent, "max_concurrent")
        _limit(self.cluster_max_concurrent, "cluster_max_concurrent")
        rate = None if self.rate is None else parse_rate(self.rate)
        object.__setattr__(self, "_rate", rate)
        if rate is not None:  # as ``stats()`` shows it: without the spaces it may have had
            object.__setattr__(self, "rate", str(self.rate).replace(" ", ""))

    @property
    def concurrency(self) -> int | None:
        """The most workflows of the host running at once on one node that is alone on
        its store (``None``: no limit)."""
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
        #: (-priority, seq, arrival, id), lazily pruned: queue order (an entry whose
        #: workflow no longer waits is dropped as it comes first, or by ``_prune``)
        self._order: list[tuple[int, int, int, str]] = []
        #: the place of each waiting workflow in ``_order`` (kept when the store refuses)
        self._keys: dict[str, tuple[int, int, int, str]] = {}
        self._arrivals = 0
        #: the highest start order seen (a store's seq only grows)
        self._last_seq = 0
        #: ids of the workflows with a queue row in the store
        self.rows: set[str] = set()
        #: dedup key -> the unfinished workflow holding it
        self.dedup: dict[str, str] = {}
        #: the store refused the last admission: no new try before ``_retry_at`` (trio
        #: time) unless a slot frees (here, or on another node of a cluster)
        self._refused = False
        self._retry_at = math.inf
        #: the trio deadline the queue waits until (``None`` while it does not wait), as
        #: a test environment that skips time looks at it (see ``wait_shown``)
        self.wait_deadline: float | None = None
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        #: ids of the waiting workflows a cancel or kill is ending (``_end``)
        self.ending: set[str] = set()
        #: ids of workflows a workflow here spawned while they waited in the store
        #: unclaimed (in a cluster: this node claims them), or while the store was
        #: asked to admit them: each starts as a child once it is here, or back
        #: (see ``start_child``)
        self.children: set[str] = set()
        #: taken from the queue, their start (admission) being written: they hold a
        #: slot here, but wait still (the store may refuse them)
        self._admitting = 0
        #: in a cluster: the store's last pending count, stale or not, and when it was
        #: read (monotonic; ``None`` once this node changed it); a count under way (in
        #: a worker thread); changes this node made since the count under way began
        self._pending_known: int | None = None
        self._pending_at: float | None = None
        self._pending_counting = False
        self._pending_changes = 0
        #: set (and dropped) when a waiting workflow may have stopped waiting: it runs,
        #: ended unrun, or the node closes; made on demand by :meth:`wait_run`
        self._moved: trio.Event | None = None

    # ------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """``pending`` (waiting), ``running`` (holding a slot here), and the limits.
        (Those whose start is being written wait still: ``pending``, in the store's count
        too in a cluster, where their rows read ``pending`` until it is committed.)"""
        admitting = self._admitting
        pending = self.pending() + (0 if self._clustered() else admitting)
        return {"pending": pending, "running": len(self.running) - admitting,
                "max_concurrent": self._local_limit(),
                "cluster_max_concurrent": self.limits.cluster_max_concurrent,
                "rate": self.limits.rate}

    def pending(self) -> int:
        """How many of the host's workflows wait: those held here; in a cluster (a
        PostgreSQL store) those ``pending`` in the store, where they wait for a node to
        claim them, not in a node's memory. That count is a query, reused for
        ``PENDING_READ_EVERY`` seconds unless this node changed it, and made in a worker
        thread: this returns the last count (the held ones before the first) and asks
        for a new one, so that a server slow to answer never holds up the node's
        thread (``stats()``, a metrics scrape, the console). Under a ``MockClock`` the
        store's I/O is in the node's thread anyway, and the count is made there."""
        if not self._clustered():
            return len(self.held)
        now = time.monotonic()
        at = self._pending_at
        if at is not None and self._pending_known is not None \
                and now - at < PENDING_READ_EVERY:
            return self._pending_known
        count = getattr(self.host.store, "pending_count", None)
        if count is None:  # pragma: no cover - a cluster's store has it
            return len(self.held)
        known = self._pending_known if self._pending_known is not None else len(self.held)
        if virtual_clock():
            try:
                n = int(count(self.host.name))
            except Exception as exc:  # (Busy, StoreError: the figure is an estimate)
                log.debug("host %s: cannot count its pending workflows: %s", self.host.name,
                          exc)
                return known
            self._pending_at, self._pending_known = now, n
            return n
        if not self._pending_counting:
            try:
                self.host.start_soon(self._count_pending, count)
            except RuntimeError:  # (the host does not run: the last count)
                return known
            self._pending_counting = True
        return known

    async def _count_pending(self, count: Any) -> None:
        began, changes = time.monotonic(), self._pending_changes
        try:
            n = int(await trio.to_thread.run_sync(count, self.host.name,
                                                  abandon_on_cancel=True))
        except Exception as exc:  # (Busy, StoreError: the figure is an estimate)
            log.debug("host %s: cannot count its pending workflows: %s", self.host.name, exc)
            return
        finally:
            self._pending_counting = False
        self._pending_known = n
        if changes == self._pending_changes:  # (else read again at the next ask)
            self._pending_at = began

    def stale(self) -> None:
        """The store's count of pending workflows changed by this node's doing."""
        self._pending_at = None
        self._pending_changes += 1

    # ------------------------------------------------------------ the limits
    def _clustered(self) -> bool:
        return self.host.ownership is not None

    def _local_limit(self) -> int | None:
        """The most of the host's workflows holding a slot on this node."""
        if self._clustered():
            return self.limits.max_concurrent
        return self.limits.concurrency

    def _store_limits(self) -> tuple[int | None, tuple[int, float] | None]:
        """``(most running across the store, rate)``: the limits the store admits by."""
        cluster = self.limits.cluster_max_concurrent if self._clustered() else None
        return cluster, self.limits.starts

    @property
    def checks_store(self) -> bool:
        """True if a start must be admitted by the store (a ``rate``, or
        ``cluster_max_concurrent`` in a cluster)."""
        cluster, rate = self._store_limits()
        return cluster is not None or rate is not None

    # ------------------------------------------------------------ admission
    def _slot_free(self) -> bool:
        limit = self._local_limit()
        return limit is None or len(self.running) < limit

    def _room(self) -> bool:
        return self._slot_free() and not self._refused

    def room(self) -> int | None:
        """How many more of the host's workflows may run here now (``None``: no
        concurrency limit on this node); in a cluster a node claims no more than this."""
        limit = self._local_limit()
        return None if limit is None else max(0, limit - len(self.running))

    def admit(self, wid: str) -> bool:
        """A new workflow: True if this node's limits let it run now (its slot is
        reserved; when :attr:`checks_store` the store has the last word, see
        :meth:`admission`); False if it must wait (somebody waits before it, or else)."""
        if self.held or not self._room():
            return False
        self.running.add(wid)
        return True

    def admission(self, tx: Transaction, entries: list[tuple[str, str]]) -> int:
        """Ask the store, in ``tx``, to admit ``entries`` (``(id, run id)``, in order) as
        the host's rate and cluster limit allow; the index of that operation (its result:
        the ids admitted)."""
        cluster, rate = self._store_limits()
        tx.admit(self.host.name, entries, max_running=cluster, rate=rate,
                 time=self.host.clock.now())
        return len(tx) - 1

    def refused(self) -> None:
        """The store admitted less than offered: try again when a slot frees, the rate
        allows, or ``RETRY`` seconds have passed."""
        self._refused = True
        self._retry_at = self._next_try()
        self._changed.set()

    def _next_try(self) -> float:
        """When (trio time) to offer waiting workflows to the store again if nothing
        frees a slot before: once the oldest start the rate counts leaves its period,
        if the rate is what refused; at most ``RETRY`` seconds from now."""
        now = trio.current_time()
        at = now + RETRY
        _cluster, rate = self._store_limits()
        if rate is None:
            return at
        count, period = rate
        clock: WallClock = self.host.clock
        wall = clock.now()
        try:
            times = self.host.store.admitted_since(self.host.name, wall - period)
        except Exception as exc:  # the store failed: the next try tells
            log.warning("host %s: cannot read its recent starts: %s", self.host.name, exc)
            return at
        if len(times) < count:
            return at
        free = clock.trio_deadline(times[len(times) - count] + period)
        # (not in the past: a rounding of the clocks must not make a busy loop)
        return max(free, now + 0.001)

    def poke(self) -> None:
        """A slot of the host may have freed elsewhere (another node of the cluster said
        so): offer the waiting workflows to the store again."""
        if self._refused:
            self._refused = False
            self._changed.set()

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
        self._moving()

    def left(self, wf: WorkflowInstance) -> None:
        """``wf``'s task ended (finished, blocked, or the node closes): its slot frees."""
        self._moving()  # (or, waiting, it ended unrun)
        if wf.wid in self.running:
            self.running.discard(wf.wid)
            self._refused = False
            if self.held:
                self._changed.set()

    # ------------------------------------------------------------ waiting
    def hold(self, wf: WorkflowInstance, priority: int = 0, seq: int | None = None) -> None:
        """``wf`` (created ``pending``) waits for a slot, in order: ``priority`` (higher
        first), then ``seq`` (its queue row's start order; ``None``: a workflow without
        a row, after every row seen so far), then arrival here.

        Once the node closes (a start that committed as the close went on), the close
        has set the queue aside: the workflow stays ``pending`` in the store for the
        next node, and is not made active here (the close would wait for its task)."""
        if self.host.closing:
            return
        if seq is None:
            seq = self._last_seq
        self._last_seq = max(self._last_seq, seq)
        self._arrivals += 1
        wf.status = wf.stored_status = WorkflowStatus.PENDING
        self.host.active[wf.wid] = wf
        self.held[wf.wid] = wf
        key = self._keys[wf.wid] = (-priority, seq, self._arrivals, wf.wid)
        heapq.heappush(self._order, key)
        self.stale()
        if wf.cancel_requested:  # by a tool while it waited
            self.cancelled(wf)
        self._spawned_meanwhile(wf)  # (claimed for the workflow that spawned it)
        self._changed.set()

    def holds(self, wf: WorkflowInstance) -> bool:
        """True while ``wf`` waits in the queue."""
        return self.held.get(wf.wid) is wf

    def waits(self, wf: WorkflowInstance) -> bool:
        """True while ``wf`` has not run yet for want of a slot: it waits in the queue,
        or was taken from it and its start is being written (the store may refuse it:
        it waits again); not once it runs, ended unrun, or the node closes."""
        return (wf.status is WorkflowStatus.PENDING and not wf.exited.is_set()
                and not wf.done.is_set() and not self.host.closing
                and self.host.active.get(wf.wid) is wf)

    async def wait_run(self, wf: WorkflowInstance) -> None:
        """Return once ``wf`` no longer :meth:`waits`: what must not count a workflow
        as running while it waits (a service, a supervisor's child) waits so."""
        while self.waits(wf):
            if self._moved is None:
                self._moved = trio.Event()
            await self._moved.wait()

    def _moving(self) -> None:
        """A waiting workflow may have stopped waiting: :meth:`wait_run` looks again."""
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    async def start_child(self, wf: WorkflowInstance) -> None:
        """A workflow spawned ``wf`` (by its id) while it waited: it starts now, outside
        the limits, as a child workflow does (holding a slot, taking nothing from the
        rate): its spawner may hold the slot it waits for, and wait for it for ever."""
        if self.host.closing:
            return
        if not self.holds(wf):
            if wf.wid in self._keys:  # being offered to the store: refused, it is back
                self.children.add(wf.wid)  # (see ``_back``)
            return
        self._leaves(wf)
        self.running.add(wf.wid)
        tx = Transaction().update_workflow(wf.wid, status=WorkflowStatus.RUNNING,
                                           host=self._host_unwritten(wf),
                                           time=self.host.clock.now())
        self._admitting += 1
        try:
            results = await self.host.store.commit(tx)
        except Exception as exc:
            self._failed([wf], exc)
            return
        finally:
            self._admitting -= 1
        self._run([wf], results, -1)

    def _spawned_meanwhile(self, wf: WorkflowInstance) -> None:
        """``wf``, waiting in the queue now, was spawned by a workflow while it was not
        here (``children``): it starts now, as :meth:`start_child` says."""
        if wf.wid in self.children:
            self.children.discard(wf.wid)
            if self._nursery is not None:
                self._nursery.start_soon(self.start_child, wf)

    def comes_back(self, record: WorkflowRecord) -> bool:
        """True if the stored unfinished workflow ``record``, which this node resumes (at
        its start, or claimed in a cluster), comes back through the queue rather than at
        once: a ``blocked`` one on a host with limits. It held no slot (a slot frees when
        a workflow is blocked, and another may have taken it), so it waits for one, and
        for the rate, as a retry of it would; one that held its slot when its node
        stopped (running or parked) takes it back at once."""
        return record.status == WorkflowStatus.BLOCKED and self.limits.limited

    def requeue(self, tx: Transaction, record: WorkflowRecord) -> WorkflowRecord:
        """Add to ``tx`` the writes that put ``record``'s workflow (see :meth:`comes_back`)
        back in the queue: ``pending`` again (the store admits only those), with its queue
        row (kept, and its place, if it has one: it holds its dedup key while blocked;
        else a new one, by the priority it was started with, after the host's workflows
        queued before, as a retry's). The record as it will be then."""
        wid = record.workflow_id
        now = self.host.clock.now()
        # (its divergence is over, as a retry's: the row holds no error while it waits
        # and once it runs again)
        tx.update_workflow(wid, status=WorkflowStatus.PENDING, error=None, time=now)
        if record.run_id is not None:
            tx.enqueue(wid, record.run_id, priority=stored_priority(record), time=now)
        return attrs.evolve(record, status=WorkflowStatus.PENDING, error=None)

    def offer(self, wf: WorkflowInstance, record: WorkflowRecord) -> None:
        """A stored unfinished workflow this node did not run (a tool created it, or
        retried it, or it waited while no node ran): a ``pending`` one goes through the
        queue, in its place (its queue row's priority and start order, as a restart
        would place it: before the workflows of its priority started after it, also
        those this node started before it picked this one up; without a row, an earlier
        garrison's tool start, by the priority it was started with, after every row seen
        so far); any other runs at once."""
        if record.status != WorkflowStatus.PENDING:
            self.host.run_instance(wf)
            return
        entry = self.host.store.queue_entry(record.workflow_id)
        if entry is None:
            self.hold(wf, stored_priority(record))
            return
        self.rows.add(entry.workflow_id)
        if entry.dedup is not None:
            self.dedup[entry.dedup] = entry.workflow_id
        self.hold(wf, entry.priority, entry.seq)

    def restore(self, records: list[WorkflowRecord], load: Any) -> None:
        """After a restart: the queue rows (order, dedup keys), and the ``pending``
        workflows of ``records`` waiting in it (``load(record)`` makes an instance), in
        the order they had live; the queue drains once the resumed workflows hold their
        slots."""
        entries = {e.workflow_id: e for e in self.host.store.queue_entries()}
        self.rows = set(entries)
        self.dedup = {e.dedup: e.workflow_id for e in entries.values() if e.dedup is not None}
        self._last_seq = max((e.seq for e in entries.values()), default=0)
        # a workflow pending without a row (an earlier garrison's tool started it: a
        # tool's start has one now, ``tool_start``) waited, live, after the
        # rows written before it and before those written after: its place among them
        # is by its start (created) time, after a row of the same place
        starts = sorted((e.enqueued.timestamp(), e.seq) for e in entries.values())
        places: list[tuple[int, int, int, float, str, WorkflowRecord]] = []
        for record in records:
            wid = record.workflow_id
            entry = entries.get(wid)
            if entry is not None:
                places.append((-entry.priority, entry.seq, 0, 0.0, wid, record))
                continue
            created = record.created.timestamp() if record.created else math.inf
            before = bisect.bisect_right(starts, (created, math.inf))
            seq = max((q for _t, q in starts[:before]), default=0)
            places.append((-stored_priority(record), seq, 1, created, wid, record))
        places.sort(key=lambda place: place[:5])
        for priority, seq, _row, _created, wid, record in places:
            try:
                wf = load(record)
            except Exception as exc:  # pragma: no cover - a broken row
                log.error("cannot load queued workflow %s: %s", wid, exc,
                          extra={"workflow_id": wid})
                continue
            self.hold(wf, -priority, seq)
        self.start_now()

    # ------------------------------------------------------------ ending without running
    def cancelled(self, wf: WorkflowInstance) -> None:
        """A cancel request for ``wf``: if it waits and never ran, it ends ``cancelled``
        at once. One that ran before (a retry waiting for its turn) runs, and its code
        gets the cancel as it replays: its compensation runs as it would have."""
        if self.holds(wf) and not wf.cursor.entries:
            self._end_soon(wf, WorkflowStatus.CANCELLED, cancelled_error(wf.wid))

    def leave(self, wf: WorkflowInstance) -> bool:
        """``wf`` leaves the node (handed over in a cluster): if it waits here, it is
        taken out of the queue (True); it never ran, nothing of it is recorded."""
        if not self.holds(wf):
            return False
        self._leaves(wf)
        self._moving()
        return True

    def killed(self, wf: WorkflowInstance, reason: ErrorInfo) -> bool:
        """``wf`` is killed: if it waits, it ends ``failed`` at once (True)."""
        if not self.holds(wf):
            return False
        self._end_soon(wf, WorkflowStatus.FAILED, reason)
        return True

    def _end_soon(self, wf: WorkflowInstance, status: WorkflowStatus,
                  error: ErrorInfo) -> None:
        self._leaves(wf)
        if self._nursery is None or self.host.closing:
            return  # the node closes: it stays pending in the store, and so is ended later
        self.ending.add(wf.wid)
        self._nursery.start_soon(self._end, wf, status, error)

    async def _end(self, wf: WorkflowInstance, status: WorkflowStatus,
                   error: ErrorInfo) -> None:
        try:
            await self.host.finish(wf, status, None, error)
            self.stale()  # (the store's count changed)
        except Exception as exc:  # the store failed: it stays pending there
            log.error("could not end queued workflow %s: %s", wf.wid, exc,
                      extra={"workflow_id": wf.wid})
        finally:
            self.ending.discard(wf.wid)
            wf.mark_exited()

    def ended_unclaimed(self, wid: str) -> None:
        """``wid``, waiting in the store unclaimed (a cluster's queue), was ended there
        by this node (``WorkflowHost.end_pending_stored``): its row and key are gone."""
        self.rows.discard(wid)
        for key in [k for k, v in self.dedup.items() if v == wid]:
            del self.dedup[key]
        self.stale()  # (the store's count changed)

    def finishing(self, tx: Transaction, wf: WorkflowInstance) -> None:
        """``wf`` ends: its queue row, if it has one, goes with the transaction that
        records the end. Asked of the store for every workflow that may have one, not
        only those this node queued: a row this node does not know of (another node of
        a cluster, or a tool, queued the workflow) must not outlive it and hold its
        dedup key. A workflow this node created and ran at once has none (its end is
        then one statement)."""
        if wf.may_be_queued:
            tx.dequeue(wf.wid)
        self.freeing(tx)
        if wf.wid in self.rows:
            self.rows.discard(wf.wid)
            for key in [k for k, v in self.dedup.items() if v == wf.wid]:
                del self.dedup[key]

    def freeing(self, tx: Transaction) -> None:
        """A workflow of the host stops holding a slot with ``tx`` (it ends, or is
        blocked): in a cluster with ``cluster_max_concurrent`` the other nodes hear of
        it at commit."""
        if self._clustered() and self.limits.cluster_max_concurrent is not None:
            tx.slot_freed(self.host.name)

    def close(self) -> None:
        """The node closes: waiting workflows stay ``pending`` in the store."""
        for wid, wf in self.held.items():
            if self.host.active.get(wid) is wf:
                del self.host.active[wid]
        self.held.clear()
        self._order.clear()
        self._keys.clear()
        self._moving()

    # ------------------------------------------------------------ draining
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Start waiting workflows whenever the limits allow, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                if self._refused and trio.current_time() >= self._retry_at:
                    self._refused = False
                batch = self._ready()
                if batch:
                    await self._start(batch)
                    continue
                deadline = self._retry_at if self._refused and self.held else math.inf
                self._changed = trio.Event()
                await wait_shown(self, self._changed, deadline)

    def wake(self) -> None:
        """Look at the clock again (it jumped: the trio deadline of a rate's free slot
        it handed out may never come): offer the waiting workflows to the store again."""
        if self._refused:
            self._refused = False
            self._changed.set()

    def _ready(self) -> list[WorkflowInstance]:
        """Take the waiting workflows that may start now as far as this node's limits
        go, in queue order (at most ``ADMIT_BATCH`` when the store admits them)."""
        batch: list[WorkflowInstance] = []
        if self.host.closing:
            return batch
        most = ADMIT_BATCH if self.checks_store else math.inf
        while self._order and self._room() and len(batch) < most:
            key = heapq.heappop(self._order)
            wid = key[-1]
            wf = self.held.get(wid)
            if wf is None or self._keys.get(wid) != key:
                continue  # ended while it waited (or a stale entry)
            del self.held[wid]
            self.running.add(wid)
            batch.append(wf)
        return batch

    def _leaves(self, wf: WorkflowInstance) -> None:
        """``wf``, waiting, leaves the queue without its turn (cancelled, killed, handed
        over, started as a child): no longer held, its place forgotten (its entry in
        ``_order`` left to :meth:`_prune`)."""
        del self.held[wf.wid]
        self._keys.pop(wf.wid, None)
        self._prune()

    def _prune(self) -> None:
        """A workflow left the queue without its turn (:meth:`_leaves`): its entry stays
        in ``_order`` until it comes first, which with the slots taken may be never (a
        cancel per start grew it without bound). Once they outnumber twice the waiting
        ones, only the waiting ones' entries are kept: the same order (each key is
        unique), and each pruning halves the heap at least: no more work, in all, than
        the pushes."""
        order = self._order
        held = self.held
        if len(order) <= 2 * len(held) + 64:
            return
        keys = self._keys
        order[:] = [key for key in order if key[-1] in held and keys.get(key[-1]) == key]
        heapq.heapify(order)

    def _back(self, refused: list[WorkflowInstance]) -> None:
        """The store did not admit ``refused``: they wait again, in their places. When
        the node closed while the store was asked, the close has emptied the queue: they
        stay pending in the store and leave as :meth:`_dropped` (the close waits for
        them)."""
        for wf in refused:
            self.running.discard(wf.wid)
            if self.host.closing:
                self._keys.pop(wf.wid, None)
                self._dropped(wf)
                continue
            key = self._keys.get(wf.wid)
            if key is None or self.host.active.get(wf.wid) is not wf:
                continue
            self.held[wf.wid] = wf
            heapq.heappush(self._order, key)
            if wf.cancel_requested:  # asked while the store was asked: it ends now
                self.cancelled(wf)
            else:  # (spawned while the store was asked)
                self._spawned_meanwhile(wf)
        self.refused()

    def _marked(self, batch: list[WorkflowInstance]) -> tuple[Transaction, int]:
        """The transaction starting ``batch``, and the index of its admission (-1: none,
        every one of them starts)."""
        tx = Transaction()
        if self.checks_store:
            for wf in batch:  # (before the admission: it counts the host's rows)
                host = self._host_unwritten(wf)
                if host is not None:
                    tx.update_workflow(wf.wid, host=host)
            return tx, self.admission(tx, [(wf.wid, wf.run_id) for wf in batch])
        now = self.host.clock.now()
        for wf in batch:
            tx.update_workflow(wf.wid, status=WorkflowStatus.RUNNING,
                               host=self._host_unwritten(wf), time=now)
        return tx, -1

    def _host_unwritten(self, wf: WorkflowInstance) -> str | None:
        """The host's name if ``wf``'s row names no host yet (a tool created it): its
        start writes it, so that the store counts it as the host's from then on (the
        load's write of it may come later)."""
        return self.host.name if wf.host_unwritten else None

    def _failed(self, batch: list[WorkflowInstance], exc: Exception) -> None:
        """The store refused to mark ``batch`` running: they stay pending there and stop
        here as workflows whose store failed under them do
        (:meth:`~WorkflowInstance.stop_on_store_error`): a waiting ``result()`` raises
        the store's error instead of waiting for ever, and in a cluster they are
        released, for a node whose store works to claim them."""
        host = self.host
        if isinstance(exc, WorkflowMoved):
            # the node's lease lapsed (``node a lost its lease`` says so): they go to the
            # next node that claims them, as its other workflows do; no failure of theirs
            log.info("host %s: %d queued workflows did not start here: %s", host.name,
                     len(batch), exc)
        else:
            log.error("host %s could not start %d queued workflows: %s", host.name,
                      len(batch), exc)
        error = exc if isinstance(exc, StoreError) else StoreError(
            host.store.path, f"it refused to start queued workflows: "
                             f"{type(exc).__name__}: {exc}")
        for wf in batch:
            self._keys.pop(wf.wid, None)
            self._dropped(wf)
            if wf.done.is_set():
                continue
            failure = wf.store_error or error
            wf.stop_on_store_error(failure)
            if host.ownership is not None and not isinstance(failure, WorkflowMoved):
                host.ownership.stopped(wf.wid)  # (a moved one is released by that call)

    def _dropped(self, wf: WorkflowInstance) -> None:
        """``wf``, taken from the queue to start, does not run here (the node closes, or
        the store refused): it leaves ``active`` as one that never ran. Out of ``held``
        while its start was committed, the node's close did not see it: it must count as
        exited, or ``shutdown`` waits for its task for ever."""
        self.running.discard(wf.wid)
        if self.host.active.get(wf.wid) is wf:
            del self.host.active[wf.wid]
        wf.exited.set()
        self._moving()

    def _run(self, batch: list[WorkflowInstance], results: list[Any], index: int) -> None:
        host = self.host
        for wf in batch:  # (admitted or not, the start's transaction named the host)
            wf.host_unwritten = False
        if index >= 0:
            admitted = set(results[index])
            refused = [wf for wf in batch if wf.wid not in admitted]
            if refused:
                self._back(refused)
                batch = [wf for wf in batch if wf.wid in admitted]
        self.stale()
        for wf in batch:
            self._keys.pop(wf.wid, None)
            self.children.discard(wf.wid)  # (admitted: it starts as it is)
            wf.status = wf.stored_status = WorkflowStatus.RUNNING
            if host.active.get(wf.wid) is wf and not host.closing:
                host.run_instance(wf)
            else:  # ended meanwhile, or the node closes: it resumes on the next one
                self._dropped(wf)

    async def _start(self, batch: list[WorkflowInstance]) -> None:
        tx, index = self._marked(batch)
        self._admitting += len(batch)
        try:
            results = await self.host.store.commit(tx)
        except Exception as exc:
            self._failed(batch, exc)
            return
        finally:
            self._admitting -= len(batch)
        self._run(batch, results, index)

    def start_now(self) -> None:
        """Start what may start now, synchronously (recovery: so that ``open_node``
        returns with them ``running``, as any other resumed workflow)."""
        batch = self._ready()
        if not batch:
            return
        tx, index = self._marked(batch)
        try:
            results = self.host.store.write(tx)
        except Exception as exc:
            self._failed(batch, exc)
            return
        self._run(batch, results, index)
