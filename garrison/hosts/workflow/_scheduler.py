"""The scheduler of a workflow host: schedules kept in the store, ticks that start
workflows.

One task per workflow host, with one timer: the schedules are loaded once into a heap
ordered by next tick, and the task sleeps until the earliest one (or until a schedule
changes), so 10,000 schedules cost nothing while none is due. Time is the host's
:class:`~._waits.WallClock`, so ``MockClock`` skips ahead to a tick in tests.

A tick at time ``t`` of schedule ``s`` starts workflow ``s@t`` (``tick_id``), so a tick
never runs twice. The tick is recorded first (the next tick, and the workflow it starts
as ``last_workflow``), as a compare-and-set on ``next_tick`` and ``last_workflow``: of
two nodes acting on one tick, one records it and starts its workflow, the other reads
the schedule again (as does a node whose copy missed another node's trigger). Then
the workflow starts; a node that stopped in between starts it when it comes back
(``last_workflow`` a tick's, no such workflow, the tick within ``catchup_window``; a
start refused while the node ran put the last run back: :meth:`Scheduler._refused`),
and the start is idempotent anyway: that tick is then the one catch-up run, and the
ticks missed since start nothing (unless another node of a cluster is alive: its start
may be under way, and it acts on the due ticks). Older, it does not start (it cannot be told from a
workflow deleted since): one warning, and ``last_workflow`` is cleared
(:meth:`Scheduler._interrupted`). A node that was down
over some ticks acts, when it comes back, on the latest of them only, and only if it is
at most ``catchup_window`` old. ``overlap`` decides what a tick does while the workflow
the schedule started last is unfinished (``pending``, running or parked): ``skip`` it,
``buffer_one`` (start it when that one ends; one tick at most waits, later ones are
skipped), or ``allow_all``. A blocked workflow counts as ended. A tick's workflow waits
in the host's queue like any other start when the host has limits.

``catchup_window`` bounds a buffered tick too: one older than the window never starts
(a node was down, or the run before it ran long). It is dropped (counted ``missed``)
and the latest tick inside the window that came after it, passed over because it
waited, takes its place (:meth:`Scheduler._plan`): such a tick is counted ``skipped``
only once it is passed over for good. So after downtime every policy runs
at most one tick, and never one outside the window: ``skip`` the latest tick inside
the window unless the last run is still unfinished, ``allow_all`` that tick,
``buffer_one`` the tick that waited if it is still inside the window, else the latest
tick inside it (at once, or when the last run ends).

In a cluster the last run may be on another node: whether it is unfinished is read
from the store, and a tick waiting for it looks again every ``REMOTE_POLL`` seconds.

Schedules come from ``workflow.schedule`` config entries (synced at start: created,
updated, and removed when their entry is gone from the config of their namespace,
which only a node started with that config can tell; their pause state is kept), from
``node.schedule`` and from tools (``garrison schedules``): a tool's write leaves a
wakeup, and :meth:`Scheduler.reload` picks the schedule up again.

The task reads the store in a worker thread (``run_blocking``), as it commits, and so do
``node.schedule`` and a handle's pause, resume, trigger and delete: a server that does
not answer (down, restarting) holds up the schedules, not the node's event loop, and a
read that fails (the server out of reach past the store's ``retry_for``) is logged
once, its ticks acted on again a second later; a commit that fails for good makes the
store give up, and the node leave its cluster, as any other.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import heapq
import json
import logging
import math
import uuid
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from ..._errors import NoSuchSchedule, StoreError
from ..._targets import import_target
from ...actors._values import Pid
from ...persistence import (
    RawJson,
    ScheduleRecord,
    Transaction,
    WorkflowStatus,
    run_blocking,
    to_json,
)
from ._queue import tool_start
from ._schedules import (
    ScheduleDefinition,
    ScheduleSpec,
    check_input,
    next_trigger,
    resume_transaction,
    spec_of,
    tick_id,
    tick_of,
    tick_refusal,
    timing_of,
    trigger_id,
    trigger_takes_last,
)
from ._waits import wait_shown

if TYPE_CHECKING:
    from ._host import WorkflowHost
    from ._instance import WorkflowInstance

__all__ = ["Scheduler"]

log = logging.getLogger("garrison.schedules")

T = TypeVar("T")

#: due schedules acted on per transaction (a burst of ticks starts chunk by chunk)
CHUNK = 500
#: how often a buffered tick waiting for a run on another node of a cluster looks again
REMOTE_POLL = 1.0

#: a tick to count (``missed``, ``skipped``) and log once its write committed: the
#: counter, and the log message with its arguments (no counter: a warning, of a
#: schedule whose ticks end)
_Note = tuple[str | None, str, tuple[Any, ...]]


#: seconds after its time a tick is on time whatever its ``catchup_window`` (a window of
#: milliseconds missed ticks a healthy node acted on a few milliseconds late)
ON_TIME = 1.0


def _skipped(sid: str, tick: float, last: str | None) -> _Note:
    # ("has not finished": it may wait pending in its host's queue, not run yet)
    return ("skipped", "schedule %s skipped its tick %s: workflow %s has not finished",
            (sid, tick_id(sid, tick), last))


def _passed_over(sid: str, tick: float, waited: float, last: str | None) -> _Note:
    # (buffer_one) said once it is passed over for good, not as it comes: the latest
    # tick that came while another waited takes that one's place if it goes stale
    return ("skipped", "schedule %s skipped its tick %s: its tick %s waited for workflow "
            "%s to finish (overlap 'buffer_one': one tick waits at most)",
            (sid, tick_id(sid, tick), tick_id(sid, waited), last))


def _secs(value: float) -> str:
    """Seconds as a log line shows them: plain digits to the millisecond (``%g`` wrote a
    tick a year old as ``3.1536e+07``)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _missed(sid: str, first: float, last: float | None, window: float) -> _Note:
    """Ticks ``first`` to ``last`` (the latest that passed) start nothing: all are older
    than the window. Counted once: one record skips them."""
    if last is None or last <= first:
        return ("missed", "schedule %s missed its tick %s: older than its catchup_window "
                "(%ss)", (sid, tick_id(sid, first), _secs(window)))
    return ("missed", "schedule %s missed its ticks %s to %s: older than its "
            "catchup_window (%ss)", (sid, tick_id(sid, first), tick_id(sid, last),
                                     _secs(window)))


def _config_owned(schedule_id: str) -> ValueError:
    """``node.schedule`` of a config schedule's id: refused (README: a config schedule
    is changed in the config, the file of its namespace)."""
    namespace = schedule_id.partition(":")[0] if ":" in schedule_id else None
    where = f" (the config file with namespace: {namespace})" if namespace else ""
    return ValueError(f"schedule {schedule_id!r} comes from a workflow.schedule entry of "
                      f"the config{where}: change it there")


def _without_tick(sid: str, now: float, when: str) -> None:
    """Say that schedule ``sid``, written at ``now`` (``when``: made, its timing
    changed, resumed), has no tick: none after ``now`` that a date holds. (One whose
    ticks end as it runs is said so by its last tick's write.)"""
    stamp = _dt.datetime.fromtimestamp(math.floor(now), _dt.UTC).isoformat()
    log.warning("schedule %s has no tick after %s, %s: no later date holds one (years "
                "end at 9999); it starts nothing", sid, stamp.replace("+00:00", "Z"), when,
                extra={"schedule_id": sid})


def _ts(value: Any) -> float | None:
    return None if value is None else float(value.timestamp())


def _workflow_of(record: ScheduleRecord) -> Any:
    """The workflow function schedule ``record`` starts; ``ImportError`` naming the
    schedule and the workflow if the code no longer has it (renamed, or not deployed)."""
    try:
        return import_target(record.workflow)
    except Exception as exc:
        raise ImportError(f"schedule {record.schedule_id!r} cannot start its workflow "
                          f"{record.workflow}: it is not importable by that name "
                          f"({type(exc).__name__}: {exc})") from exc


def _existing(store: Any, wids: list[str]) -> set[str]:
    """Those of the workflows ``wids`` that exist (one call in a worker thread, not a
    thread per schedule at a node's start)."""
    return {wid for wid in wids if store.get_workflow(wid) is not None}


#: what the repair after a node left says of a tick that node recorded and did not start
_LEFT_TICK = ("schedule %s: its tick %s was recorded by a node of the cluster that left or "
              "was lost before it started the workflow: ")


def _said_started(sid: str, wid: str) -> Callable[[], None]:
    """The warning that a repaired tick's workflow was started, to log once this node's
    start created it (see ``Scheduler._start``)."""
    return partial(log.warning, _LEFT_TICK + "started now", sid, wid,
                   extra={"schedule_id": sid, "workflow_id": wid})


class Scheduler:
    """The schedules of one workflow host's store (see the module docs)."""

    def __init__(self, host: WorkflowHost) -> None:
        self.host = host
        #: the config's ``workflow.schedule`` entries for this host (set before ``run``)
        self.definitions: list[ScheduleDefinition] = []
        #: the namespaces of the node's config (set before ``run``): the config
        #: schedules (``<namespace>:<name>``) it owns, which ``_sync_config`` removes when
        #: their entry is gone; empty without a config (it removes none)
        self.namespaces: frozenset[str] = frozenset()
        #: the config's schedules on every host (set before ``run``): id -> the name of
        #: the workflow host its entry puts it on (one moved away is said moved)
        self.placed: dict[str, str] = {}
        self.rows: dict[str, ScheduleRecord] = {}
        self._specs: dict[str, ScheduleSpec] = {}
        #: (next tick, id), lazily pruned: an entry no longer a schedule's next tick is
        #: dropped when its time comes, or by :meth:`_prune`
        self._heap: list[tuple[float, str]] = []
        self._changed = trio.Event()
        #: workflow id -> the schedule whose buffered tick waits for it to end
        self._waiting: dict[str, str] = {}
        #: schedule -> the workflow on another node of the cluster its buffered tick waits for
        self._remote: dict[str, str] = {}
        self._remote_check = math.inf
        self._buffer_due: set[str] = set()
        #: nodes of the cluster were lost: look for ticks they recorded and did not start
        self._repair = False
        #: (a cluster) schedule -> a tick's workflow this node found as the schedule's last
        #: run, not created, and replaced by a later tick: the node that recorded it may
        #: have died before it started it (the repair after a loss starts it, overlap
        #: permitting)
        self._replaced: dict[str, str] = {}
        #: ticks that started a workflow, skipped (overlap), missed (outside the window)
        self.counts = {"started": 0, "skipped": 0, "missed": 0}
        #: schedule -> the ticket of the latest read of it begun and not taken yet
        #: (:meth:`_reload`): an earlier one that ends after it began is not taken
        self._reading: dict[str, int] = {}
        self._tickets = 0
        #: why the store's reads fail (logged once until they work again), or ``None``
        self._failing: str | None = None
        #: the trio deadline the timer waits until (``None`` while it does not wait): a
        #: virtual clock's stand-in for the next tick (``garrison.testing``), whose
        #: skipper jumps to that tick and then calls :meth:`wake`
        self.wait_deadline: float | None = None
        #: what :meth:`stop` cancels; set once :meth:`run` has returned
        self._scope = trio.CancelScope()
        #: how far the clock stepped back since :meth:`_rewind` last ran (seconds)
        self._set_back = 0.0
        self._running = False
        self._ended = trio.Event()

    # ------------------------------------------------------------ running
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Sync the config's schedules, load every schedule, then act on ticks as they
        come, until cancelled or stopped (:meth:`stop`)."""
        self._running = True
        started = False

        def ready() -> None:
            nonlocal started
            started = True
            task_status.started()

        try:
            with self._scope:
                await self._serve(ready)
        finally:
            self._ended.set()
        if not started:  # stopped before it was ready: it acts on nothing
            task_status.started()

    async def stop(self) -> None:
        """Stop acting on ticks and return once :meth:`run` has ended (at once if it
        never ran): the host's stop calls it before anything else, so no tick starts a
        workflow as the workflows stop, and nothing of the scheduler uses the store
        as it closes. A commit under way completes first (a commit is not interrupted):
        a tick recorded whose workflow was not started yet is started by the next node
        that opens the store (see :meth:`_interrupted`), or in a cluster by the nodes
        that see this one leave (:meth:`nodes_lost`)."""
        self._scope.cancel()
        if self._running:
            await self._ended.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def _serve(self, ready: Callable[[], None]) -> None:
        await self._sync_config()
        for record in await run_blocking(self.host.store.schedules):
            self._take(record)
        interrupted = await self._interrupted()
        ready()
        if interrupted:
            async with trio.open_nursery() as nursery:
                for record, wid in interrupted:
                    nursery.start_soon(self._start, record, wid)
        while True:
            failed = getattr(self.host.store, "failed", None)
            if failed is not None:  # given up for good (a newer garrison migrated it)
                log.error("host %s: its schedules stop here, as its store writes nothing "
                          "more: %s", self.host.name, failed)
                return
            if self._repair:
                try:
                    await self._repair_lost()
                except StoreError as exc:  # (out of reach: looked for again)
                    self._repair = True
                    await self._read_failed(exc)
                    continue
                self._read_works()
            clock = self.host.clock  # (read each time: a test environment swaps it)
            now = clock.now()
            if self._set_back:
                await self._rewind(now)
            if self._remote and trio.current_time() >= self._remote_check:
                await self._check_remote()
            due = self._pop_due(now)
            if due or self._buffer_due:
                await self._fire(due, now)
                continue
            deadline = clock.trio_deadline(self._heap[0][0]) if self._heap else math.inf
            if self._remote:
                deadline = min(deadline, self._remote_check)
            self._changed = trio.Event()
            await wait_shown(self, self._changed, deadline)

    async def _read_failed(self, exc: StoreError) -> None:
        """A read of the store failed (its server out of reach past ``retry_for``):
        said once (until the reads work again, or fail for another reason), and not a
        busy loop: what needed it is tried again a second later."""
        said = str(exc)
        if self._scope.cancel_called:  # (cut short by the node's stop: it says so)
            await trio.lowlevel.checkpoint()
            return
        if said != self._failing:
            self._failing = said
            log.error("host %s cannot read its schedules: %s (tried again every second; "
                      "said again only if it changes)", self.host.name, said)
        await trio.sleep(1.0)

    def _read_works(self) -> None:
        if self._failing is not None:
            self._failing = None
            log.info("host %s reads its schedules again", self.host.name)

    def wake(self, set_back: float = 0.0) -> None:
        """Look at the clock again (it jumped: a trio deadline it handed out before may
        never come); ``set_back``: it stepped back that many seconds (see
        :meth:`_rewind`)."""
        if set_back > 0:
            self._set_back = max(self._set_back, set_back)
        self._changed.set()

    async def _rewind(self, now: float) -> None:
        """The clock stepped back ``_set_back`` seconds: each schedule whose next tick,
        reckoned on the old reading, lies beyond its first tick after ``now`` ticks from
        that one (a clock set back from a day ahead left an hourly schedule idle for a
        day). A tick acted on before the step that comes again starts nothing: its
        workflow exists (and, still the last run, is no run of another tick: ``_plan``).
        Each write is a compare-and-set on the next tick and the timing, as a tick's."""
        set_back, self._set_back = self._set_back, 0.0
        moves = []
        tx = Transaction()
        for sid, record in self.rows.items():
            tick = _ts(record.next_tick)
            if record.paused or tick is None:
                continue
            first = self._specs[sid].next_after(now)
            if first is None or first >= tick:
                continue
            tx.update_schedule(sid, next_tick=first, expect_next_tick=tick,
                               expect_timing=timing_of(record), time=now)
            moves.append((sid, tick, first))
        if not moves:
            return
        try:
            results = await self.host.store.commit(tx)
        except Exception as exc:  # (ticks on as it was: the next step back tries again)
            log.error("host %s could not move its schedules' next ticks after the clock "
                      "was set back: %s", self.host.name, exc)
            return
        for (sid, tick, first), ok in zip(moves, results, strict=True):
            if not ok:  # changed meanwhile (a tick elsewhere, an update): read it again
                with contextlib.suppress(StoreError):
                    await self._reload(sid)
                continue
            self._applied(sid, {"next_tick": first})
            log.info("schedule %s: the clock was set back %ss: its next tick is %s, not %s",
                     sid, _secs(set_back), tick_id(sid, first), tick_id(sid, tick),
                     extra={"schedule_id": sid})

    def nodes_lost(self) -> None:
        """Nodes of the cluster were lost (their lease lapsed) or left: a tick one of
        them recorded but did not start the workflow of is started (see
        :meth:`_repair_lost`). Every node is told, not only the one that marked them
        lost: the tick may be one this node replaced (``_replaced``)."""
        self._repair = True
        self._changed.set()

    async def _repair_lost(self) -> None:
        """Read the schedules whose last run does not exist again, and start the
        workflows of ticks recorded but not started (their node died in between, or
        stopped), each with a warning, as a node does when it starts
        (:meth:`_interrupted`; a start is idempotent, and a tick older than its
        ``catchup_window`` is dropped with a warning).

        A tick this node replaced (``_replaced``) is not the last run any more: the
        overlap policy sees the one that is. While it is unfinished the tick is skipped
        (a warning, counted ``skipped``) unless the overlap is ``allow_all``;
        ``buffer_one`` skips it too (the buffer holds ticks that came while the last
        run ran, not older ones)."""
        self._repair = False
        store = self.host.store
        # (not every schedule, one by one, at every leave)
        missing = await run_blocking(store.schedules_without_run)
        for record in missing:
            self._take(record)
        found = [self.rows[r.schedule_id] for r in missing if r.schedule_id in self.rows]
        # (every surviving node repairs, and may start the same tick at once: the start
        # is idempotent, and only the node whose start created the workflow says so)
        for record, wid in await self._interrupted(found):
            await self._start(record, wid, said=_said_started(record.schedule_id, wid))
        # a schedule that ticks more often than a lease: this node recorded its next
        # tick(s) over the lost node's before the loss was known (the last run is not
        # that tick any more, so _interrupted cannot find it)
        left, self._replaced = dict(sorted(self._replaced.items())), {}
        now = self.host.clock.now()
        try:
            for sid, wid in list(left.items()):
                await self._repair_replaced(sid, wid, now)
                del left[sid]  # (done: a failure below does not repair it twice)
        except BaseException:  # (the store failed: looked at again with the next repair)
            self._replaced = {**left, **self._replaced}
            raise

    async def _repair_replaced(self, sid: str, wid: str, now: float) -> None:
        """Start the tick ``wid`` of schedule ``sid`` that this node replaced (see
        :meth:`_repair_lost`), unless it is too old, exists, or the overlap policy skips
        it."""
        store = self.host.store
        await self._reload(sid)  # (its last run now)
        row = self.rows.get(sid)
        tick = tick_of(sid, wid)
        if row is None or tick is None or now - tick > row.catchup_window \
                or await run_blocking(store.get_workflow, wid) is not None:
            return
        last = row.last_workflow
        if row.overlap != "allow_all" and last is not None and await self._unfinished(last):
            self.counts["skipped"] += 1
            log.warning(_LEFT_TICK + "skipped, as workflow %s (a later run) is "
                        "still running (overlap %r)", sid, wid, last, row.overlap,
                        extra={"schedule_id": sid, "workflow_id": wid})
            return
        await self._start(row, wid, said=_said_started(sid, wid))

    def _take(self, record: ScheduleRecord) -> None:
        """Hold ``record`` in memory (its next tick in the heap)."""
        sid = record.schedule_id
        try:
            spec = ScheduleSpec.parse(cron=record.cron, every=record.every,
                                      timezone=record.timezone, what=f"schedule {sid!r}",
                                      stored=True)
        except (TypeError, ValueError) as exc:  # written by another version, or by hand
            log.error("schedule %s cannot run: %s", sid, exc, extra={"schedule_id": sid})
            self.rows.pop(sid, None)
            return
        self.rows[sid] = record
        self._specs[sid] = spec
        tick = _ts(record.next_tick)
        if not record.paused and tick is not None:
            self._push(tick, sid)
        self._remote.pop(sid, None)
        if record.buffered_tick is not None and not record.paused:
            last = record.last_workflow
            wf = None if last is None else self.host.active.get(last)
            if last is not None and wf is not None and not wf.done.is_set():
                self._wait_for(last, sid)
            else:  # (whether a last run elsewhere has ended, _plan reads: not here)
                self._buffer_due.add(sid)
        self._changed.set()

    async def _interrupted(self, records: list[ScheduleRecord] | None = None
                           ) -> list[tuple[ScheduleRecord, str]]:
        """As the node starts: the schedules (of ``records``, else every one held) whose
        last tick was recorded but whose workflow does not exist (the node stopped in
        between; or it was deleted since, which looks the same), with that workflow's id.

        A tick at most ``catchup_window`` old is the schedule's one catch-up run: it is
        returned (to start now), and the ticks that passed since it was recorded start
        nothing (counted ``missed``; the next tick moves past now, a compare-and-set as
        a tick's), so after downtime at most one tick runs, whatever the overlap policy.
        An older one does not start: a warning says so, and ``last_workflow`` is cleared
        (a compare-and-set on it), so the next start neither starts it nor warns again.
        A trigger's workflow is never one: it is created before it is recorded.

        In a cluster where another node is alive, the tick may be that node's start
        under way (a slow one), not one a stop interrupted, and the schedule was not
        down: its workflow is started (idempotent) but the due ticks are left to the
        nodes' compare-and-set, which a live node is acting on."""
        now = self.host.clock.now()
        store = self.host.store
        member = self.host.ownership
        alone = member is None or all(n.name == member.name
                                      for n in await run_blocking(member.nodes))
        starts: list[tuple[ScheduleRecord, str]] = []
        # (schedule, columns to write, what to log once they are written)
        plans: list[tuple[str, dict[str, Any], tuple[int, str, tuple[Any, ...]]]] = []
        ticked = [(record, wid, tick) for record in (
            list(self.rows.values()) if records is None else records)
            if (wid := record.last_workflow) is not None
            and (tick := tick_of(record.schedule_id, wid)) is not None]
        found = await run_blocking(_existing, store, [wid for _, wid, _ in ticked])
        for record, wid, tick in ticked:
            sid = record.schedule_id
            if wid in found:
                continue
            window = record.catchup_window
            if now - tick > window:
                plans.append((sid, {"last_workflow": None, "expect_last_workflow": wid}, (
                    logging.WARNING, "schedule %s skipped its tick %s: it was recorded but "
                    "its workflow does not exist (the node stopped before starting it, or "
                    "it was deleted since) and the tick is %ss old, older than its "
                    "catchup_window (%ss)", (sid, wid, _secs(now - tick), _secs(window)))))
                continue
            starts.append((record, wid))
            expected = _ts(record.next_tick)
            if not alone or record.paused or expected is None or expected > now:
                continue
            following = self._specs[sid].due(expected, now, window)[1]
            plans.append((sid, {"next_tick": following, "expect_next_tick": expected,
                                "expect_timing": timing_of(record)}, (
                logging.INFO, "schedule %s missed its ticks from %s on: its tick %s, "
                "recorded before the node stopped, is its one catch-up run",
                (sid, tick_id(sid, expected), wid))))
        if plans:
            tx = Transaction()
            for sid, updates, _ in plans:
                tx.update_schedule(sid, time=now, **updates)
            results = await store.commit(tx)
            for (sid, updates, (level, message, args)), ok in zip(plans, results,
                                                                  strict=True):
                if ok:
                    self._applied(sid, updates)
                    self.counts["missed"] += 1
                    log.log(level, message, *args, extra={"schedule_id": sid})
                else:  # changed meanwhile (another node of a cluster): read it again
                    await self._reload(sid)
        return starts

    def reload(self, schedule_id: str) -> None:
        """Read the schedule again (a tool changed it). In the node's thread: the host's
        wakeups call it, which read the store there for every wakeup anyway."""
        self._reloaded(schedule_id, self.host.store.get_schedule(schedule_id))

    async def _reload(self, schedule_id: str) -> None:
        """:meth:`reload`, the store read in a worker thread (the scheduler's task, and
        the calls of the API after their commit). Of reads of one schedule under way at
        once the last one begun is taken, whatever the order they end in: an earlier
        one may predate the write a later one follows (a pause and a resume at once
        left a schedule paused here, its ticks never acted on again)."""
        self._tickets += 1
        ticket = self._reading[schedule_id] = self._tickets
        try:
            record = await run_blocking(self.host.store.get_schedule, schedule_id)
        except BaseException:
            if self._reading.get(schedule_id) == ticket:
                del self._reading[schedule_id]
            raise
        if self._reading.get(schedule_id) == ticket:
            self._reloaded(schedule_id, record)

    def _reloaded(self, schedule_id: str, record: ScheduleRecord | None) -> None:
        self._reading.pop(schedule_id, None)  # (a read begun before this: not taken)
        if record is None:
            self._forget(schedule_id)
        else:
            self._take(record)

    def _forget(self, schedule_id: str) -> None:
        self._reading.pop(schedule_id, None)  # (a read begun before: not taken)
        self.rows.pop(schedule_id, None)
        self._specs.pop(schedule_id, None)
        self._remote.pop(schedule_id, None)
        self._prune()

    async def _unfinished(self, wid: str) -> bool:
        """True while the workflow ``wid`` is pending, running or parked (not ended, not
        blocked). On one node every unfinished workflow of the store is in memory; in a
        cluster one that is not here may run on another node: the store says (read in a
        worker thread)."""
        wf = self.host.active.get(wid)
        if wf is not None:
            return not wf.done.is_set()
        if self.host.ownership is None:
            return False
        record = await run_blocking(self.host.store.get_workflow, wid)
        wf = self.host.active.get(wid)
        if wf is not None:  # (it came here meanwhile)
            return not wf.done.is_set()
        if record is None:
            return False
        status = WorkflowStatus(record.status)
        return not status.finished and status is not WorkflowStatus.BLOCKED

    def _wait_for(self, wid: str, sid: str) -> None:
        """Schedule ``sid``'s buffered tick starts when the unfinished ``wid`` ends: this
        host tells (:meth:`ended`) when it runs here, else the store is read again every
        ``REMOTE_POLL`` seconds."""
        if wid in self.host.active:
            self._waiting[wid] = sid
            return
        self._remote[sid] = wid
        self._remote_check = min(self._remote_check, trio.current_time() + REMOTE_POLL)
        self._changed.set()

    async def _check_remote(self) -> None:
        """Buffered ticks waiting for runs on other nodes: those whose run ended may
        start."""
        self._remote_check = trio.current_time() + REMOTE_POLL
        for sid, wid in list(self._remote.items()):
            try:
                unfinished = await self._unfinished(wid)
            except Exception as exc:  # the store failed: look again next time
                log.warning("schedule %s: cannot read workflow %s: %s", sid, wid, exc)
                continue
            if not unfinished and self._remote.get(sid) == wid:
                del self._remote[sid]
                self._buffer_due.add(sid)
        if not self._remote:
            self._remote_check = math.inf

    def ended(self, wf: WorkflowInstance) -> None:
        """Host hook: ``wf``'s task ended; a tick buffered behind it may start."""
        if not wf.done.is_set():
            return  # the node closes: it did not end
        sid = self._waiting.pop(wf.wid, None)
        if sid is not None:
            self._buffer_due.add(sid)
            self._changed.set()

    # ------------------------------------------------------------ ticks
    def _push(self, tick: float, sid: str) -> None:
        heapq.heappush(self._heap, (tick, sid))
        self._prune()

    def _prune(self) -> None:
        """Once the heap's entries outnumber twice the schedules, keep only those
        :meth:`_pop_due` would act on (each once): every load of a schedule and every
        next tick committed pushes one, and the others left only when their time came (a
        monthly schedule resumed 1000 times held 1000 entries for a month). Those kept
        pop in the same order, and each dropping halves the heap at least: no more
        work, in all, than the pushes."""
        heap = self._heap
        rows = self.rows
        if len(heap) <= 2 * len(rows) + 64:
            return
        live: dict[tuple[float, str], None] = {}
        for entry in heap:
            record = rows.get(entry[1])
            if (record is not None and not record.paused
                    and _ts(record.next_tick) == entry[0]):
                live[entry] = None
        heap[:] = live
        heapq.heapify(heap)

    def _pop_due(self, now: float) -> list[ScheduleRecord]:
        due: dict[str, ScheduleRecord] = {}
        heap = self._heap
        while heap and heap[0][0] <= now:
            tick, sid = heapq.heappop(heap)
            record = self.rows.get(sid)
            if record is not None and not record.paused and _ts(record.next_tick) == tick:
                due[sid] = record
        return list(due.values())

    async def _fire(self, due: list[ScheduleRecord], now: float) -> None:
        """Act on the due schedules and on buffered ticks whose wait is over (one plan
        per schedule: a due tick and a released buffer are decided together), in chunks
        of ``CHUNK`` (the first workflows of a large burst start early)."""
        released, self._buffer_due = self._buffer_due, set()
        due_ids = {record.schedule_id for record in due}
        work = [(record, True) for record in due]
        for sid in sorted(released - due_ids):
            record = self.rows.get(sid)
            if record is not None and record.buffered_tick is not None and not record.paused:
                work.append((record, False))
        async with trio.open_nursery() as starting:
            for i in range(0, len(work), CHUNK):
                await self._fire_chunk(work[i:i + CHUNK], now if i == 0 else
                                       self.host.clock.now(), starting)

    async def _fire_chunk(self, work: list[tuple[ScheduleRecord, bool]], now: float,
                          starting: trio.Nursery) -> None:
        """Record the ticks, next ticks and the workflows they start in one transaction
        (each a compare-and-set on the next tick: of two nodes acting on one tick, one
        wins), then start those workflows (in ``starting``). ``work``: ``(record, its
        next tick is due)``."""
        plans = []
        try:
            for record, due in work:
                plan = await self._plan(record, now, due)
                if plan[1] is not None or len(plan[2]) > 1:  # (else nothing changes)
                    plans.append(plan)
        except StoreError as exc:  # (the last runs unread: nothing was written)
            for record, _ in work:  # acted on again, as they are
                if self.rows.get(record.schedule_id) is record:
                    self._take(record)
            await self._read_failed(exc)
            return
        self._read_works()
        if not plans:
            return
        tx = Transaction()
        for record, _, updates, _ in plans:
            tx.update_schedule(record.schedule_id, time=now, **updates)
        try:
            results = await self.host.store.commit(tx)
        except Exception as exc:  # the store failed: the ticks are acted on again later
            log.error("host %s could not record schedule ticks: %s", self.host.name, exc)
            for record, _, _, _ in plans:
                try:
                    await self._reload(record.schedule_id)
                except Exception:  # the store is gone: the next node acts on them
                    self._forget(record.schedule_id)
            await trio.sleep(1.0)  # not a busy loop while the store fails
            return
        starts: list[tuple[ScheduleRecord, str]] = []
        unread: StoreError | None = None
        for (record, wid, updates, notes), ok in zip(plans, results, strict=True):
            if ok:
                await self._note_replaced(record, updates)
                self._applied(record.schedule_id, updates)
                for counter, message, args in notes:  # (a lost compare-and-set did nothing)
                    if counter is None:
                        log.warning(message, *args, extra={"schedule_id": record.schedule_id})
                        continue
                    self.counts[counter] += 1
                    log.info(message, *args, extra={"schedule_id": record.schedule_id})
                if wid is not None:
                    starts.append((record, wid))
            else:  # changed meanwhile (a tool, another node): read it again
                try:
                    await self._reload(record.schedule_id)
                except StoreError as exc:  # acted on again as it is (the write's
                    unread = exc           # compare-and-set fails again: read again)
                    self._take(record)
        for record, wid in starts:
            starting.start_soon(self._start, record, wid)
        if unread is not None:
            await self._read_failed(unread)

    async def _note_replaced(self, record: ScheduleRecord, updates: dict[str, Any]
                             ) -> None:
        """(A cluster) ``updates`` replaced the schedule's last run, a tick's workflow
        another node recorded: if it does not exist, remember it (see ``_replaced``; one
        that cannot be read is remembered: the repair reads it again)."""
        last = record.last_workflow
        if (self.host.ownership is None or last is None or "last_workflow" not in updates
                or updates["last_workflow"] == last or last in self.host.active
                or tick_of(record.schedule_id, last) is None):
            return
        with contextlib.suppress(StoreError):
            if await run_blocking(self.host.store.get_workflow, last) is not None:
                return
        self._replaced[record.schedule_id] = last

    async def _plan(self, record: ScheduleRecord, now: float, due: bool = True
                    ) -> tuple[ScheduleRecord, str | None, dict[str, Any], list[_Note]]:
        """What ``record`` does at ``now`` (``due``: its next tick has come; else its
        buffered tick's wait may be over): ``(record, workflow id to start or None,
        columns to write, ticks to count and log once those are written)``.

        1. A buffered tick older than ``catchup_window`` is dropped (``missed``): it
           never starts. The ticks after it were passed over because it waited; the
           latest of them inside the window takes its place.
        2. A due tick: the latest of the ticks passed since the next tick, inside the
           window (``ScheduleSpec.due``), or none (``missed``).
        3. A tick still buffered keeps its place (``buffer_one``: one waits at most)
           and starts once the last run is not unfinished. A due tick is passed over;
           the latest one stays in reserve (``last_tick``), to take the buffered one's
           place should it go stale: it is said and counted ``skipped`` only once it is
           passed over for good (a later tick came, or the buffered one started or was
           dropped), never when it takes that place and starts.
        4. Otherwise the tick starts unless the last run is unfinished: then
           ``allow_all`` starts it anyway, ``buffer_one`` buffers it, ``skip`` skips it.
        """
        sid = record.schedule_id
        spec = self._specs[sid]
        # (a window shorter than a node's own latency would miss live ticks)
        window = max(record.catchup_window, ON_TIME)
        expected = _ts(record.next_tick)
        # every write is a compare-and-set on the next tick, the last run and the
        # timing as this node read them: another node's trigger changes the last run
        # without a wakeup here, and a tick deciding on an older one would start beside
        # it; an update of the timing may keep the next tick (the same under both), and
        # the following one, of the old timing, would be written over the new one's
        updates: dict[str, Any] = {"expect_next_tick": expected,
                                   "expect_last_workflow": record.last_workflow,
                                   "expect_timing": timing_of(record)}
        notes: list[_Note] = []
        buffered = waited = _ts(record.buffered_tick)
        # (buffer_one) the tick in reserve: the latest that came while ``waited`` waited
        reserve = _ts(record.last_tick) if waited is not None else None
        if reserve is not None and waited is not None and reserve <= waited:
            reserve = None
        stale = None
        if buffered is not None and now - buffered > window:
            stale, buffered = buffered, None
            updates["buffered_tick"] = None
        tick = None
        if due and expected is not None:
            tick, following = spec.due(expected, now, window)
            updates["next_tick"] = following
            if following is None:  # (once: with no next tick, it is never due again)
                notes.append((None, "schedule %s has no tick after %s: no later date holds "
                              "one (years end at 9999); it starts nothing more",
                              (sid, tick_id(sid, tick if tick is not None else expected))))
            if tick is None:  # every tick from the next tick to now is too old
                notes.append(_missed(sid, expected, spec.latest_in(expected, now), window))
            else:
                updates["last_tick"] = tick
        if stale is not None:  # the latest tick skipped while the stale one waited
            instead = spec.latest_in(max(stale, now - window), now)
            if instead is not None and instead > stale and (tick is None or instead > tick):
                tick = instead
            notes.append(("missed", "schedule %s dropped its buffered tick %s: older than "
                          "its catchup_window (%ss)%s",
                          (sid, tick_id(sid, stale), _secs(window),
                           f"; its tick {tick_id(sid, tick)}, which came while it waited, "
                           "takes its place" if tick is not None and tick == reserve
                           else "")))
        last = record.last_workflow

        def done(wid: str | None) -> tuple[ScheduleRecord, str | None, dict[str, Any],
                                           list[_Note]]:
            # the tick in reserve, passed over for good: said and counted now (the
            # chosen tick's fate is said as any tick's)
            if reserve is not None and waited is not None and reserve != tick and not (
                    updates.get("buffered_tick", waited) is not None
                    and updates.get("last_tick", reserve) == reserve):
                notes.append(_passed_over(sid, reserve, waited, last))
            return record, wid, updates, notes

        busy = last is not None and await self._unfinished(last)
        if buffered is not None and record.overlap != "buffer_one":
            # buffered under buffer_one, since changed: the policy in force decides it
            # (kept, it held every later tick back for as long as the last run ran)
            updates["buffered_tick"] = None
            if tick is None and (record.overlap == "allow_all" or not busy):
                tick = buffered  # it starts now
            else:
                notes.append(("skipped", "schedule %s dropped its tick %s, buffered under "
                              "overlap 'buffer_one': its overlap is %r now (%s)",
                              (sid, tick_id(sid, buffered), record.overlap,
                               "a later tick starts instead" if tick is not None
                               else f"workflow {last} has not finished")))
            buffered = None
        if buffered is not None:  # (buffer_one) the waiting tick keeps its place
            if busy:  # (a due tick is the one in reserve now)
                assert last is not None
                self._wait_for(last, sid)
                return done(None)
            if tick is not None:  # passed over for good: the waiting tick starts
                notes.append(_passed_over(sid, tick, buffered, last))
            wid = tick_id(sid, buffered)
            updates.update(buffered_tick=None, last_workflow=wid)
            return done(wid)
        if tick is None or tick_id(sid, tick) == last:
            # (a tick acted on before the clock was set back is that run: no other)
            return done(None)
        if busy and record.overlap != "allow_all":
            assert last is not None
            if record.overlap == "buffer_one":
                updates["buffered_tick"] = tick
                self._wait_for(last, sid)
            else:
                notes.append(_skipped(sid, tick, last))
            return done(None)
        wid = tick_id(sid, tick)
        updates["last_workflow"] = wid
        return done(wid)

    def _applied(self, sid: str, updates: dict[str, Any]) -> None:
        """A committed update of schedule ``sid``, in memory too."""
        record = self.rows.get(sid)
        if record is None:
            return
        fields: dict[str, Any] = {}
        for column, value in updates.items():
            if column.startswith("expect_"):
                continue
            if column in ("next_tick", "last_tick", "buffered_tick") and value is not None:
                value = _dt.datetime.fromtimestamp(value, _dt.UTC)
            fields[column] = value
        record = self.rows[sid] = attrs.evolve(record, **fields)
        tick = _ts(record.next_tick)
        if "next_tick" in fields and tick is not None and not record.paused:
            self._push(tick, sid)

    async def _start(self, record: ScheduleRecord, wid: str,
                     said: Callable[[], None] | None = None) -> Pid | None:
        """Start a tick's workflow; counted ``started`` (and ``said()`` called) only if
        this start created it (not one that found it: a tick acted on again, or started
        by another node)."""

        made = False

        def created() -> None:
            nonlocal made
            made = True
            self.counts["started"] += 1
            if said is not None:
                said()

        try:
            refusal = tick_refusal(record.schedule_id)
            if refusal is not None:  # (else the tick's workflow id is refused, saying less)
                raise ValueError(refusal)
            try:
                fn = _workflow_of(record)
            except ImportError as exc:
                if self.host.ownership is None:
                    raise
                return await self._leave_to_cluster(record, wid, exc, created)
            pid = await self.host.start(fn, tuple(record.input), wid=wid,
                                        on_created=created)
            if not made:  # found, not created: whose is it?
                await self._found(record, wid)
            return pid
        except Exception as exc:
            log.error("schedule %s could not start workflow %s (%s): %s", record.schedule_id,
                      wid, record.workflow, exc,
                      extra={"schedule_id": record.schedule_id, "workflow_id": wid,
                             "error": str(exc)})
            if not isinstance(exc, StoreError):  # (the store's failure: maybe created)
                await self._refused(record, wid)
            return None

    async def _found(self, record: ScheduleRecord, wid: str) -> None:
        """The start of tick ``wid`` found its workflow existing: as a restart or another
        node acting on the tick finds it, quietly, if it runs the schedule's code; a
        workflow of other code started by that id (by hand) is the tick's run in its
        place, and is said so (a read that fails says nothing)."""
        with contextlib.suppress(StoreError):
            found = await run_blocking(self.host.store.get_workflow, wid)
            if found is not None and found.name != record.workflow:
                log.warning("schedule %s started nothing for its tick %s: a workflow of "
                            "other code, %s, has its id (%s is the schedule's); its ticks "
                            "take '<schedule id>@<tick time>' ids, keep other workflows "
                            "off them", record.schedule_id, wid, found.name,
                            record.workflow,
                            extra={"schedule_id": record.schedule_id, "workflow_id": wid})

    async def _refused(self, record: ScheduleRecord, wid: str) -> None:
        """The start of tick ``wid`` was refused (the code takes other arguments, or is
        gone): the tick is done with. Left as the schedule's last run, a workflow that
        never existed, a restart (:meth:`_interrupted`) or the repair after a node left
        (:meth:`_repair_lost`) took it for a tick a stop interrupted, and started it
        late in place of a current tick. The last run goes back to the one before it (a
        compare-and-set on ``last_workflow``: a tick or trigger recorded since stays),
        unless ``wid`` exists (found, not refused: a workflow of that id and another
        input). The store failing here leaves it as it is. (A tick taken up again after
        a stop, ``record`` its last run already, goes back to none: the run before it
        had ended when the tick was recorded, or the overlap let the tick run beside it,
        so no unfinished run is forgotten.)"""
        sid = record.schedule_id
        before = record.last_workflow if record.last_workflow != wid else None
        store = self.host.store
        with contextlib.suppress(StoreError):
            if await run_blocking(store.get_workflow, wid) is not None:
                return
            done = await store.commit(Transaction().update_schedule(
                sid, last_workflow=before, expect_last_workflow=wid,
                time=self.host.clock.now()))
            if done[0]:
                await self._reload(sid)

    async def _leave_to_cluster(self, record: ScheduleRecord, wid: str,
                                error: ImportError, created: Callable[[], None]) -> Pid:
        """The workflow of ``record``'s tick does not import on this node of a cluster
        (a rolling deploy: a schedule of a new workflow type): it is created unrun
        (``pending``, as a tool's start) and left to a node of the cluster that has its
        code, as a claimed one is (``_recovery.runnable``): in the host's queue, by its
        start order, and counted started where it runs."""
        host = self.host
        tx = tool_start(Transaction(), wid, record.workflow, list(record.input),
                        run_id=uuid.uuid4().hex, host=host.name)
        made = (await host.store.commit(tx))[0]  # (and its queue row's seq)
        if made:
            created()
            host.ownership.refuse(wid, record.workflow, error.__cause__ or error)
        return Pid(host.name, wid)

    # ------------------------------------------------------------ defining
    @staticmethod
    def _no_tick_when(d: ScheduleDefinition, old: ScheduleRecord | None,
                      now: float) -> str | None:
        """When ``d``, written over ``old`` at ``now`` (:meth:`_put`), gets no next tick
        (none after ``now`` that a date holds): ``"when it was made"`` or ``"when its
        timing changed"``; else ``None``, also when its timing is the same (its next
        tick is kept; a schedule whose ticks ended was said so then) or it is paused
        (its resume says so)."""
        spec = d.spec
        if old is not None and (old.paused or timing_of(old) == (
                spec.cron, spec.every, spec.timezone)):
            return None
        if spec.next_after(now) is not None:
            return None
        return "when it was made" if old is None else "when its timing changed"

    def _put(self, tx: Transaction, d: ScheduleDefinition, old: ScheduleRecord | None,
             now: float) -> bool:
        """Write ``d`` unless the store has it already (``old``, as read before). Its
        next tick is kept when its timing did not change (so a restart loses no tick):
        the store decides that on the row as the write finds it (``put_schedule``), as
        ``old`` may predate a tick recorded since, whose next tick is not to go back."""
        spec = d.spec
        input_text = to_json(list(d.input), what=f"the input of schedule {d.schedule_id!r}")
        same_timing = old is not None and (old.cron, old.every, old.timezone) == (
            spec.cron, spec.every, spec.timezone)
        if same_timing and old is not None and (
                old.workflow, old.input, old.overlap, old.catchup_window, old.source,
                old.host) == (d.workflow, json.loads(input_text), d.overlap,
                              d.catchup_window, d.source, self.host.name):
            return False  # unchanged
        tx.put_schedule(d.schedule_id, host=self.host.name, workflow=d.workflow,
                        input=RawJson(input_text), cron=spec.cron, every=spec.every,
                        timezone=spec.timezone, overlap=d.overlap,
                        catchup_window=d.catchup_window, next_tick=spec.next_after(now),
                        source=d.source, time=now)
        return True

    async def _sync_config(self) -> None:
        """Create or update the config's schedules; remove the config schedules whose
        entry is gone from the config that owns them.

        A config schedule's id is its entry's, ``<namespace>:<name>``: it belongs to the
        config file of that namespace. Only a node started with that namespace's file
        can tell that the entry is gone; a node with no config (a one-off script on the
        store), or with the files of other namespaces, leaves it as it is (its pause
        state too)."""
        defined = {d.schedule_id: d for d in self.definitions}
        stored = {r.schedule_id: r for r in await run_blocking(self.host.store.schedules)}
        tx = Transaction()
        now = self.host.clock.now()
        unticked: list[tuple[str, str]] = []
        for sid, d in defined.items():
            old = stored.get(sid)
            if self._put(tx, d, old, now):
                if old is not None:
                    self._config_changed(old, d)
                when = self._no_tick_when(d, old, now)
                if when is not None:
                    unticked.append((sid, when))
        for sid, record in stored.items():
            if (record.source == "config" and sid not in defined
                    and sid.partition(":")[0] in self.namespaces):
                tx.delete_schedule(sid)
                moved = self.placed.get(sid)
                if moved is None:
                    log.info("schedule %s removed: its config entry is gone", sid,
                             extra={"schedule_id": sid})
                else:  # (its buffered tick and last run stay here: not carried over)
                    log.info("schedule %s removed from host %s: its config entry moved it "
                             "to host %s, where it starts afresh (the overlap policy there "
                             "does not see its runs on %s)", sid, self.host.name, moved,
                             self.host.name, extra={"schedule_id": sid})
        if tx:
            await self.host.store.commit(tx)
        for sid, when in unticked:
            _without_tick(sid, now, when)

    def _config_changed(self, old: ScheduleRecord, d: ScheduleDefinition) -> None:
        """Say that this node's config changed a schedule the store held: a config
        schedule, by an edited config, or (a warning) in a cluster, nodes whose configs
        differ: each node's start writes its own, and the schedule flips with every
        start; or (a warning) one ``node.schedule`` made, which the config's entry of its
        id takes over, its pause kept."""
        spec = d.spec
        was = {"cron": old.cron, "every": old.every, "timezone": old.timezone,
               "workflow": old.workflow, "overlap": old.overlap}
        now = {"cron": spec.cron, "every": spec.every, "timezone": spec.timezone,
               "workflow": d.workflow, "overlap": d.overlap}
        def shown(key: str, value: Any) -> str:  # (every in the config's words: 1h, 90s)
            return f"{value:g}s" if key == "every" and value is not None else repr(value)

        changes = ", ".join(f"{k} {shown(k, was[k])} -> {shown(k, now[k])}" for k in was
                            if was[k] != now[k])
        if old.source != "config":
            log.warning("schedule %s, made by node.schedule, is taken over by this "
                        "node's config entry of its id (%s)%s", d.schedule_id,
                        changes or "its input, catchup window or host",
                        "; it stays paused, as it was: resume it (garrison schedules resume "
                        f"{d.schedule_id}) for the entry's ticks" if old.paused else "",
                        extra={"schedule_id": d.schedule_id})
            return
        clustered = self.host.ownership is not None
        log.log(logging.WARNING if clustered else logging.INFO,
                "schedule %s changed by this node's config (%s)%s", d.schedule_id,
                changes or "its input, catchup window or host",
                "; every node of a cluster should run the same config: each node's start "
                "writes its own" if clustered else "",
                extra={"schedule_id": d.schedule_id})

    async def put(self, d: ScheduleDefinition) -> None:
        """Create or update a schedule (``node.schedule``)."""
        old = await run_blocking(self.host.store.get_schedule, d.schedule_id)
        if old is not None and old.source == "config" and d.source != "config":
            raise _config_owned(d.schedule_id)
        tx = Transaction()
        now = self.host.clock.now()
        self._put(tx, d, old, now)
        if tx:
            if not (await self.host.store.commit(tx))[0]:
                # a node's config sync (another node of the cluster) wrote the config's
                # schedule of this id since it was read: the config's stays
                await self._reload(d.schedule_id)
                raise _config_owned(d.schedule_id)
            await self._reload(d.schedule_id)
            when = self._no_tick_when(d, old, now)
            if when is not None:
                _without_tick(d.schedule_id, now, when)

    def get(self, schedule_id: str) -> ScheduleRecord:
        """The stored schedule; :class:`~garrison.NoSuchSchedule` if there is none. In
        the caller's thread: ``ScheduleHandle.info()`` is synchronous, as a handle's
        other reads are; the scheduler's calls read it in a worker thread
        (:meth:`_get`)."""
        record = self.host.store.get_schedule(schedule_id)
        if record is None:
            raise NoSuchSchedule(schedule_id, (r.schedule_id for r in self.host.store.schedules()))
        return record

    async def _get(self, schedule_id: str) -> ScheduleRecord:
        """:meth:`get`, in a worker thread."""
        return await run_blocking(self.get, schedule_id)

    async def pause(self, schedule_id: str) -> None:
        """Stop acting on ticks (kept paused across restarts) until :meth:`resume`; a
        tick waiting for the last run to end (``buffer_one``) is dropped. A tick being
        acted on as the pause commits starts nothing (the compare-and-set of a tick
        requires the schedule not paused)."""
        await self._get(schedule_id)
        await self.host.store.commit(Transaction().update_schedule(
            schedule_id, paused=True, buffered_tick=None, time=self.host.clock.now()))
        await self._reload(schedule_id)

    async def resume(self, schedule_id: str) -> None:
        """Act on ticks again, from the first one after now (the ticks that passed
        while it was paused are not caught up). A compare-and-set on the schedule as
        read (:func:`~._schedules.resume_transaction`): an update of its timing or
        another resume committed meanwhile makes it read the schedule again."""
        while True:
            record = await self._get(schedule_id)
            if not record.paused:
                return
            now = self.host.clock.now()
            tx = resume_transaction(record, now)
            if (await self.host.store.commit(tx))[0]:
                break
        await self._reload(schedule_id)
        if spec_of(record).next_after(now) is None:
            _without_tick(schedule_id, now, "when it was resumed")

    async def delete(self, schedule_id: str) -> None:
        """Remove the schedule (the workflows it started are not touched)."""
        await self._get(schedule_id)
        await self.host.store.commit(Transaction().delete_schedule(schedule_id))
        self._forget(schedule_id)

    async def trigger(self, schedule_id: str) -> Pid:
        """Start the schedule's workflow now (``<id>@<now>``), paused or not, whatever
        its overlap policy. It becomes the schedule's last run (which later ticks' overlap
        policy sees) unless the last run is unfinished, or is a tick whose workflow is not
        created yet: that one stays (:func:`~._schedules.trigger_takes_last`; a
        compare-and-set on ``last_workflow``, so a tick recorded meanwhile stays too)."""
        record = await self._get(schedule_id)
        refusal = tick_refusal(schedule_id)
        if refusal is not None:  # (its workflow's id would break the id rule)
            raise ValueError(refusal)
        target = _workflow_of(record)
        # code that takes other arguments now: the error names the schedule, as
        # ``garrison schedules trigger`` says it (the start's would name the workflow id)
        check_input(schedule_id, target, record.workflow, record.input)
        at = self.host.clock.now()
        created: list[bool] = []
        while not created:  # a new workflow each time, also for two triggers in one ms
            wid = trigger_id(schedule_id, at)
            # The schedule's last run is written in the workflow's own transaction (a
            # crash after the start cannot leave it out). Should the id be taken (a run
            # of this schedule at that millisecond), that run is the last one: the next
            # attempt decides from it.
            current = await run_blocking(self.host.store.get_schedule, schedule_id)
            last = None
            if current is not None and await self._trigger_takes_last(current):
                # (stamped with the host's clock: a restart compares it with that clock)
                last = partial(Transaction().update_schedule, schedule_id, last_workflow=wid,
                               expect_last_workflow=current.last_workflow,
                               time=self.host.clock.now())
            pid = await self.host.start(target, tuple(record.input), wid=wid,
                                        on_created=partial(created.append, True),
                                        prefix=last)
            at = next_trigger(at)  # if that id is taken: the next millisecond
        await self._reload(schedule_id)
        return pid

    async def _trigger_takes_last(self, record: ScheduleRecord) -> bool:
        last = record.last_workflow
        if last is None:
            return trigger_takes_last(record.schedule_id, last, None)

        def running_here() -> bool:
            wf = self.host.active.get(last)
            return wf is not None and not wf.done.is_set()

        if running_here():
            return False
        found = await run_blocking(self.host.store.get_workflow, last)
        if running_here():  # (it came here meanwhile)
            return False
        return trigger_takes_last(record.schedule_id, last,
                                  None if found is None else found.status)
