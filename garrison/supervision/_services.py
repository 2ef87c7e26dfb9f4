"""Services: ``process.service`` config entries, started, restarted and stopped for you.

One manager process per node owns every service. It starts the ``auto_start``
services, and what they require, in dependency order (a service starts once
everything it ``requires`` is running, without waiting for the others), restarts
a failed service after its backoff delay, restarts the services that depend on one
that was restarted, gives up on a service after ``max_attempts`` restarts without a
stable run (that service stops alone; the rest keep running), and on shutdown stops
services in reverse dependency order (a service once what requires it has stopped,
the others meanwhile), each with ``CANCEL`` and then termination after its ``stop_timeout``.

Every start, restart and give-up is logged on ``garrison.services`` with the
service id first.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .. import process
from ..actors._runtime import current_runtime
from ..actors._values import ErrorInfo, Event, EventKind, Pid
from ..hosts._kernel import supervisor_stop_reason
from ._supervisor import CLEANUP_GRACE, wait_ending_with

if TYPE_CHECKING:
    from ..config import Config, ServiceEntry
    from ..hosts._kernel import NodeContext

log = logging.getLogger("garrison.services")

#: the registered name of the manager process
MANAGER_NAME = "garrison.services"
#: the request that applies the cluster's singleton assignment (not a service id)
_SINGLETONS = "\x00singletons"


class ServiceStatus(enum.StrEnum):
    """Where a service is in its life."""

    STOPPED = "stopped"  # not started (auto_start false), or stopped on shutdown
    WAITING = "waiting"  # waits for a service it requires
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"  # failed; restarts after its delay
    COMPLETED = "completed"  # its process returned normally: not restarted
    GAVE_UP = "gave_up"  # failed more than max_attempts times in a row

    def without_requirement(self) -> str:
        """What a service in this status does once a service it requires gave up: one
        whose process is up ``"runs on without it"``, any other (waiting, between
        restarts) ``"cannot start"`` (a start waits for what it requires). Either is
        followed by the one it requires: ``app:api runs on without it: app:db, which it
        requires, gave up``.

        >>> ServiceStatus.BACKOFF.without_requirement()
        'cannot start'
        """
        if self in (ServiceStatus.RUNNING, ServiceStatus.STARTING):
            return "runs on without it"
        return "cannot start"


_SETTLED = frozenset({ServiceStatus.STARTING, ServiceStatus.RUNNING, ServiceStatus.BACKOFF,
                      ServiceStatus.GAVE_UP, ServiceStatus.COMPLETED})


@attrs.frozen
class ServiceInfo:
    """A snapshot of one service: ``node.services()`` returns these."""

    id: str
    status: ServiceStatus
    pid: Pid | None
    restarts: int
    last_error: ErrorInfo | None
    #: what its process returned, once ``completed`` (else ``None``)
    result: Any = None
    #: in a cluster, for a singleton service another live node holds: that node's name
    #: (this node's copy is ``stopped``)
    node: str | None = None


@attrs.define
class _Service:
    entry: ServiceEntry
    status: ServiceStatus = ServiceStatus.STOPPED
    pid: Pid | None = None
    restarts: int = 0  # restarts since the last stable run
    #: every start of it after its first on this node (metrics): a restart after its
    #: own failure, because what it requires restarted, or by a start_service; counted
    #: when it happens (a restart scheduled is not one yet, and may never be)
    restarts_total: int = 0
    spawned: bool = False  # started at least once on this node
    started_at: float = 0.0
    last_error: ErrorInfo | None = None
    #: when its restart is due (trio's clock), while BACKOFF
    restart_due: float = 0.0
    result: Any = None  # what its process returned (COMPLETED)
    wanted: bool = False  # should be running (auto_start, or started on demand)
    generation: int = 0  # bumps on every start; stale restart timers are ignored
    #: while a process of it, no longer its own, stops with the manager's lock free
    #: (see ``_stop_unlocked``): set once that process has ended
    ending: trio.Event | None = None
    #: while its start is under way: the counts of starts that it counts in (empty
    #: once that start is done)
    joined: list[_Starts] = attrs.Factory(list)


class _Starts:
    """A count of service starts under way (from the spawn until the service runs,
    failed to, or was cut short): those one request began and the ones they led to,
    or all of them."""

    def __init__(self) -> None:
        self.left = 0
        self._none_left = trio.Event()
        self._none_left.set()

    def begin(self) -> None:
        if not self.left:
            self._none_left = trio.Event()
        self.left += 1

    def end(self) -> None:
        self.left -= 1
        if not self.left:
            self._none_left.set()

    async def wait(self) -> None:
        """Return once none is left."""
        while self.left:
            await self._none_left.wait()


class ServiceManager:
    """The process that runs a config's services (one per node)."""

    def __init__(self, node: NodeContext, config: Config, *, seed: int | None = None) -> None:
        self.node = node
        self.order: list[_Service] = [_Service(entry) for entry in config.services()]
        self.by_id = {svc.entry.id: svc for svc in self.order}
        self.by_pid: dict[Pid, _Service] = {}
        self.started = trio.Event()
        self.stopping = False
        self.pid: Pid | None = None
        self._rng = random.Random(seed)
        # held while the service table changes (event loop, restart timers, start
        # requests): one change at a time, and an EXIT waits until its pid is known.
        # Never held across a wait for a service to run or to stop (up to its
        # start_timeout or stop_timeout): an unrelated service's exit and restart go
        # on meanwhile; what waited checks what changed once it has the lock again
        self._lock = trio.Lock()
        #: every start under way (the node's stop waits until they have ended)
        self._under_way = _Starts()
        self._timers: trio.Nursery | None = None
        #: start requests: (service id, set once served, [True] once served, and for
        #: the singletons' request the trio time by which those this node no longer
        #: holds must be gone, ``inf``: within their stop timeouts)
        self._requests, self._request_box = trio.open_memory_channel[
            tuple[str, trio.Event, list[bool], float]](float("inf"))
        #: in a cluster, the singleton services this node holds (``None``: no cluster,
        #: singletons are plain services)
        self.held: set[str] | None = None
        #: in a cluster, the singleton services other live nodes hold: their node names
        self.elsewhere: dict[str, str] = {}
        #: the singleton services this node auto-starts (or an auto_start one requires),
        #: and the node each one another live node runs was said to run on (once)
        self._auto_singletons = singletons_to_run(config)
        self._said_where: dict[str, str] = {}
        #: in a cluster, the node drains: it claims no singleton (a start of one it does
        #: not hold says so; set by the node before its start request)
        self.draining = False
        #: in a cluster, told of a singleton this node lets go (it gave up here): the
        #: node releases its claim, and claims it again only for a ``start_service``
        self.on_dropped: Callable[[str], None] | None = None
        #: the cancel scopes of the service starts under way (see :meth:`interrupt`)
        self._starts: set[trio.CancelScope] = set()

    # ------------------------------------------------------------------ queries
    def info(self) -> list[ServiceInfo]:
        return [ServiceInfo(s.entry.id, s.status, s.pid, s.restarts, s.last_error,
                            s.result if s.status is ServiceStatus.COMPLETED else None,
                            self.elsewhere.get(s.entry.id) if not self._may_run(s) else None)
                for s in self.order]

    def running_pid(self, service_id: str) -> Pid | None:
        """The pid of the service's live process, or ``None``. As a registered name is
        released before its holder's ``EXIT`` is delivered, an ended process is not
        named by its service's id, even before the manager has handled its exit."""
        svc = self.by_id.get(service_id)
        pid = svc.pid if svc is not None else None
        if pid is None:
            return None
        host = self.node.hosts.get(pid.host)
        return pid if host is not None and host.is_alive(pid) else None

    def why_down(self, service_id: str, *, due: bool = True) -> str | None:
        """Why the service ``service_id`` runs no process here, in words, for the
        ``NoSuchProcess`` of a send or call to its id (``service app:db is between
        restarts: its process failed with ...``); ``None`` if no service has that id, if
        its process runs (or has just ended, not yet handled), or if another node of
        the cluster runs it. ``due=False``: without the time left before a restart
        (``in 4.99s``), which changes from one moment to the next."""
        svc = self.by_id.get(service_id)
        if svc is None or svc.pid is not None or not self._may_run(svc):
            return None
        what = f"service {service_id}"
        status = svc.status
        if status is ServiceStatus.BACKOFF:
            limit = svc.entry.restart.max_attempts
            left = ""
            try:
                if due:
                    left = f" in {max(svc.restart_due - trio.current_time(), 0.0):.2f}s"
            except RuntimeError:  # (asked outside the node's trio thread)
                pass
            return (f"{what} is between restarts: its process failed with "
                    f"{svc.last_error}; restart {svc.restarts}"
                    f"{f'/{limit}' if limit else ''}{left}")
        if status is ServiceStatus.GAVE_UP:
            return (f"{what} gave up after {_restarts(svc.restarts)}; last error: "
                    f"{svc.last_error}")
        if status is ServiceStatus.COMPLETED:
            return (f"{what} returned (a service that returns is not restarted: "
                    f"node.start_service runs it again)")
        if status is ServiceStatus.STARTING:
            return f"{what} is starting"
        if self.stopping or self.node.stopping:
            return f"{what} is stopped: the node's services are stopping"
        if not svc.wanted:
            return f"{what} is not started (it is not auto_start: node.start_service starts it)"
        waits = [d for d in svc.entry.requires if self.by_id[d].status is not ServiceStatus.RUNNING]
        if waits:  # (waiting, or stopped as one it requires restarts)
            return f"{what} waits for {', '.join(waits)}, which it requires, to run"
        return f"{what} is not running yet"

    def stop_budget(self) -> float:
        """Time the whole orderly stop may take: every service's stop timeout, plus slack."""
        return sum(s.entry.lifecycle.stop_timeout for s in self.order) + 1.0

    # ------------------------------------------------------------------ the process
    async def __call__(self) -> None:
        self.pid = process.pid()
        process.register(MANAGER_NAME)
        # a process linked to it that fails does not end it (the LINK_DOWN is ignored):
        # the services would run on unwatched
        process.set_options(trap_links=True)
        events = process.events()
        for svc in self.order:
            if (svc.entry.lifecycle.auto_start and self._may_run(svc)) or self._held(svc):
                self._want(svc)
        try:
            # the restart timers' nursery exists before the first start: a service
            # that fails to start at once backs off like any other
            async with trio.open_nursery() as timers:
                self._timers = timers
                first = _Starts()
                async with self._lock:
                    await self._start_ready([first])
                timers.start_soon(self._first_started, first)
                while True:
                    ev = await events.receive()
                    assert ev is not None
                    if ev.kind == EventKind.CANCEL:
                        # the starts under way end now (their waits cut short), each
                        # under the lock: then only the stop changes the services
                        self.interrupt()
                        await self._under_way.wait()
                        async with self._lock:
                            await self._stop_all()
                        timers.cancel_scope.cancel()
                        return
                    async with self._lock:
                        if ev.kind == EventKind.EXIT:
                            exited = self.by_pid.pop(ev.pid, None)
                            if exited is not None and exited.pid == ev.pid:
                                await self._on_exit(exited, ev)
        finally:
            self.started.set()  # start_services never waits for a manager that died
            # no start is served any more: the ones waiting fail (call_start) at once
            self.stopping = True
            self._requests.close()
            while True:
                try:
                    _, done, _, _ = self._request_box.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                done.set()

    async def _first_started(self, first: _Starts) -> None:
        """Once the first start pass is done (each start it began, and those they led
        to, ran or failed), the node's start goes on and start requests are served."""
        await first.wait()
        self.started.set()
        await self._serve_requests()

    def interrupt(self) -> None:
        """The node stops (or its start was interrupted): nothing starts or restarts
        any more, and a start under way ends now -- its wait for the service to run
        would hold the node's start, and the manager's ``CANCEL`` (which waits for the
        starts under way), for the service's whole ``start_timeout``. A process service
        spawned but not yet running is terminated (its code never ran); a spawn under
        way completes first (a workflow service created runs, and is cancelled at the
        stop like any other)."""
        self.stopping = True
        for scope in self._starts:
            scope.cancel()

    # ------------------------------------------------------------------ singletons
    def _may_run(self, svc: _Service) -> bool:
        """False for a singleton service another node of the cluster runs."""
        return (not svc.entry.lifecycle.singleton or self.held is None
                or svc.entry.id in self.held)

    def _held(self, svc: _Service) -> bool:
        """True for a singleton service this node of a cluster holds: it runs here (a
        node claims only what it is to run, or takes over one started on a node lost)."""
        return (svc.entry.lifecycle.singleton and self.held is not None
                and svc.entry.id in self.held)

    def _runs_where(self, service_id: str) -> str:
        """Where the singleton ``service_id``, not run here, runs, in words (one that
        gave up, or lost with its node, may run nowhere yet)."""
        return ("another node of the cluster runs" if service_id in self.elsewhere else
                "this node does not run")

    def singletons_for(self, service_id: str) -> set[str]:
        """The singleton services among ``service_id`` and what it requires."""
        return {sid for sid in [service_id, *self._requirements(service_id)]
                if self.by_id[sid].entry.lifecycle.singleton}

    def set_singletons(self, held: set[str], elsewhere: dict[str, str] | None = None,
                       within: float | None = None) -> trio.Event | None:
        """The cluster says which singleton services this node runs now: start those,
        stop the others (from the node's side; applied by the manager); ``elsewhere``:
        those other live nodes hold, by node name. ``within``: seconds those it no
        longer holds may take to stop (what is left of the lease this node lost; 0:
        terminated at once, another node may run them already), ``None``: their
        ``stop_timeout``. An event set once applied (those it no longer holds
        stopped), or ``None`` while the services stop anyway."""
        self.held = set(held)
        if elsewhere is not None:
            self.elsewhere = dict(elsewhere)
        if self.stopping:
            return None
        applied = trio.Event()
        until = math.inf if within is None else trio.current_time() + max(within, 0.0)
        self._requests.send_nowait((_SINGLETONS, applied, [], until))
        return applied

    async def _apply_singletons(self, until: float, begun: list[_Starts]) -> None:
        for svc in self.order:
            if not svc.entry.lifecycle.singleton:
                continue
            if self._may_run(svc):
                if not svc.wanted:  # (claimed to run here, or taken over from a node lost)
                    log.info("%s: a singleton, runs on this node", svc.entry.id,
                             extra={"service": svc.entry.id})
                    self._want(svc, revive=True)
            elif svc.wanted:
                svc.wanted = False
                svc.generation += 1  # a restart timer running out does nothing
                left = until - trio.current_time()
                how = ("stopped here" if until == math.inf else
                       f"stopped here within {left:.2f}s (what is left of its lease)"
                       if left > 0 else "terminated here at once (its lease lapsed)")
                log.info("%s: a singleton this node no longer holds (draining, stopping, or "
                         "cut off): %s; another node of the cluster may take it",
                         svc.entry.id, how, extra={"service": svc.entry.id})
                await self._stop_dependents(svc, until)
                await self._stop_unlocked(svc, ServiceStatus.STOPPED, until)
            self._say_where(svc)
        # a singleton this node holds now may be what a wanted service requires
        for svc in self.order:
            if svc.wanted:
                self._want(svc)
        await self._start_ready(begun)

    def _say_where(self, svc: _Service) -> None:
        """A singleton this node auto-starts that another live node runs: said once, as
        a ``start_service`` of it says (not at every answer of the cluster); again only
        once another node runs it, or after it ran here or nowhere meanwhile."""
        sid = svc.entry.id
        where = None if self._may_run(svc) else self.elsewhere.get(sid)
        if where is None:
            self._said_where.pop(sid, None)
        elif sid in self._auto_singletons and self._said_where.get(sid) != where:
            self._said_where[sid] = where
            log.info("%s: a singleton; not started here: it runs on node %s of the cluster",
                     sid, where, extra={"service": sid})

    async def _stop_dependents(self, svc: _Service, until: float) -> None:
        """``svc``, a singleton, runs here no more: what requires it (directly or not)
        runs only on the node that runs it, so it stops first, in reverse dependency
        order, by ``until`` as ``svc`` does (else it ran on here while another node ran
        it, and its own copy). Each stays wanted: it waits, and starts again once this
        node holds ``svc`` again."""
        for dep in reversed(self._dependents(svc.entry.id)):
            if dep.pid is None:  # (not running: it waits for svc to run, as it starts)
                continue
            log.info("%s: stopping: %s, which it requires, is a singleton that runs on "
                     "this node no more", dep.entry.id, svc.entry.id,
                     extra={"service": dep.entry.id})
            await self._stop_unlocked(dep, ServiceStatus.STOPPED, until)

    async def _let_go(self, svc: _Service) -> None:
        """``svc``, a singleton this node holds, gave up here: what requires it stops
        (see :meth:`_stop_dependents`), then this node lets it go (``on_dropped``: the
        node releases its claim). Held on, it ran nowhere, and every other node said
        it ran here; now a node that auto-starts it, or a ``start_service`` on any
        node (this one too), may run it."""
        async with self._lock:
            if svc.status is not ServiceStatus.GAVE_UP or not self._held(svc):
                return  # (started again meanwhile, or no longer held)
            log.info("%s: a singleton that gave up here: this node lets it go (another "
                     "node of the cluster may run it; a start_service starts it again)",
                     svc.entry.id, extra={"service": svc.entry.id})
            await self._stop_dependents(svc, math.inf)
            if svc.status is ServiceStatus.GAVE_UP and self._held(svc):  # (as above)
                assert self.held is not None
                self.held.discard(svc.entry.id)
                svc.wanted = False
                if self.on_dropped is not None:
                    self.on_dropped(svc.entry.id)
            await self._start_ready()

    def _want(self, svc: _Service, *, revive: bool = False) -> None:
        """``svc`` auto-starts: so does what it requires (as ``start_service`` starts
        it), or it would wait for a service nothing starts. (What a wanted service
        requires is wanted already: the walk stops there, so wanting every service of
        a long chain in turn is linear.) ``revive``: a singleton this node holds again
        starts as a start request does, with what it requires that had given up or
        completed."""
        if revive:
            for sid in [svc.entry.id, *self._requirements(svc.entry.id)]:
                dep = self.by_id[sid]
                if self._may_run(dep) and dep.status in (ServiceStatus.GAVE_UP,
                                                         ServiceStatus.COMPLETED):
                    dep.status = ServiceStatus.STOPPED
                    dep.restarts = 0
                    dep.wanted = False  # (wanted again below, from its dependant)
        svc.wanted = True
        todo = list(svc.entry.requires)
        while todo:
            sid = todo.pop()
            dep = self.by_id[sid]
            if dep.wanted or not self._may_run(dep):  # (a singleton another node runs)
                continue
            dep.wanted = True
            log.info("%s: starts because %s requires it", sid, svc.entry.id,
                     extra={"service": sid})
            todo.extend(dep.entry.requires)

    # ------------------------------------------------------------------ starting
    def _deps_running(self, svc: _Service) -> bool:
        return all(self.by_id[r].status == ServiceStatus.RUNNING for r in svc.entry.requires)

    async def _start_ready(self, begun: Iterable[_Starts] = ()) -> None:
        """Start every wanted service whose requirements run: services that do not
        require one another start without waiting for each other, so one that waits to
        run (for a busy worker, up to its ``start_timeout``) holds up only what requires
        it. The services ready now spawn in dependency order, one after the other (logs
        stay in that order); each then waits to run in a task of its own, with the lock
        free (:meth:`_run_start`), and starts what it freed. The counts ``begun``
        count these starts, those they lead to, and a start under way that one of
        those services waits for. Called under the lock."""
        if self.stopping:
            return
        # what may yet start once a start or a stop under way is done: what it waits
        # for is said then
        pending = {svc.entry.id for svc in self.order
                   if svc.status is ServiceStatus.STARTING or svc.ending is not None}
        held = self._held_by_stops()
        for svc in self.order:
            if not svc.wanted or svc.status in _SETTLED or not self._may_run(svc):
                continue  # (a singleton this node no longer holds: about to stop)
            if self.stopping or self.node.stopping:  # it would refuse the spawn:
                break  # no failure (the manager's CANCEL comes next, stops the rest)
            if svc.entry.id in held:
                pending.add(svc.entry.id)
                continue
            if self._deps_running(svc):
                await self._spawn(svc, begun)
                if svc.status is ServiceStatus.STARTING:
                    pending.add(svc.entry.id)
                continue
            missing = [r for r in svc.entry.requires
                       if self.by_id[r].status != ServiceStatus.RUNNING]
            if not pending.isdisjoint(missing):
                pending.add(svc.entry.id)
                for sid in missing:  # (it may start once that start is done)
                    self._join(self.by_id[sid], begun)
                continue
            if svc.status == ServiceStatus.WAITING:
                continue
            svc.status = ServiceStatus.WAITING
            log.info("%s: waiting for %s", svc.entry.id, ", ".join(
                sid if self._may_run(self.by_id[sid]) else
                f"{sid} (a singleton {self._runs_where(sid)}: "
                f"{svc.entry.id} runs only on the node that runs it)"
                for sid in missing), extra={"service": svc.entry.id})
            for sid in missing:  # (one that returned already: said at once)
                if self.by_id[sid].status is ServiceStatus.COMPLETED:
                    self._cannot_start(svc, sid)

    @staticmethod
    def _join(svc: _Service, begun: Iterable[_Starts]) -> None:
        """A start of ``svc`` under way counts in ``begun`` too (a request waits for
        it: what it starts waits for it)."""
        if svc.status is ServiceStatus.STARTING and svc.joined:
            for count in begun:
                if count not in svc.joined:
                    count.begin()
                    svc.joined.append(count)

    def _held_by_stops(self) -> set[str]:
        """The services that do not start now: one whose last process still stops
        (:meth:`_stop_unlocked`), and what it requires, directly or not (a service
        starts again once what requires it has stopped, as a restart stops them)."""
        ending = [svc.entry.id for svc in self.order if svc.ending is not None]
        if not ending:
            return set()
        by_id = self.by_id
        return set(_required(lambda sid: by_id[sid].entry.requires, ending))

    async def _spawn(self, svc: _Service, begun: Iterable[_Starts]) -> None:
        """Spawn ``svc`` watched by the manager; its wait to run goes on in
        :meth:`_run_start`. Called under the lock.

        The pid is known to the manager before the child can run (no checkpoint
        between the spawn and ``by_pid``), and the manager's event loop handles an
        ``EXIT`` under the lock: an exit however early is never missed. A service
        whose process already ended stays ``starting`` until its ``EXIT`` is handled,
        so nothing that requires it starts meanwhile.

        The spawn itself is shielded: a workflow's creating commit cannot be cancelled,
        so a cancellation would surface at its last checkpoint, after the workflow was
        created and ran, its pid never recorded -- a workflow no stop reaches. Only the
        wait for the service to run is cut short (:meth:`interrupt`, or the
        ``start_timeout``); a service spawned is recorded, and stopped as at a node stop.
        """
        entry = svc.entry
        me = current_runtime()
        svc.generation += 1
        if svc.spawned:
            svc.restarts_total += 1
        svc.spawned = True
        svc.status = ServiceStatus.STARTING
        deadline = trio.current_time() + entry.lifecycle.start_timeout
        # (counted from now: the node's stop waits for the spawn too)
        svc.joined = joined = [self._under_way, *begun]
        for count in joined:
            count.begin()
        try:
            with trio.CancelScope(shield=True):
                pid = await self.node.spawn_process(
                    entry.process, _fresh(entry.input), host=entry.host, parent=self.pid,
                    link=None, monitor=self.pid, label=entry.id, supervised=True,
                )
        except Exception as exc:
            svc.joined = []
            for count in joined:
                count.end()
            await self._failed(svc, ErrorInfo.from_exception(exc), ran=None, pid=None)
            return
        me.add_monitoring(pid)  # type: ignore[attr-defined]
        svc.pid = pid
        svc.started_at = trio.current_time()
        self.by_pid[pid] = svc
        why = self._waits_to_run(pid)
        queued = why is not None
        if queued:  # (its code runs once a worker or a slot frees; "started" once it
            # counts as running: see _start_done)
            log.info("%s: spawned as %s; it waits %s", entry.id, pid, why,
                     extra={"service": entry.id, "pid": pid})
        waiting = trio.CancelScope()  # the wait to run: what interrupt() cuts
        if self.stopping:  # interrupted while it was spawned
            waiting.cancel()
        self._starts.add(waiting)
        assert self._timers is not None
        self._timers.start_soon(self._run_start, svc, pid, queued, deadline, waiting, joined)

    async def _run_start(self, svc: _Service, pid: Pid, queued: bool, deadline: float,
                         waiting: trio.CancelScope, joined: list[_Starts]) -> None:
        """Wait until ``svc``'s process ``pid`` runs, up to its ``start_timeout`` (trio
        time ``deadline``), with the lock free: other services' exits, restarts and
        starts go on meanwhile. Then, under the lock, ``svc`` is running (or failed to
        start, or was cut short by :meth:`interrupt`) and what it freed starts --
        unless ``pid`` is no longer its process: its ``EXIT`` was handled meanwhile, or
        a stop took it (a restart of what it requires), and that settled what it is.
        ``joined``: the counts this start counts in (each ends with it)."""
        entry = svc.entry
        host = self.node.hosts[pid.host]
        error: ErrorInfo | None = None
        try:
            try:
                with waiting, trio.fail_at(deadline):
                    if hasattr(host, "wait_started"):  # "running" before what requires it
                        await host.wait_started(pid)
            except Exception as exc:
                if isinstance(exc, trio.TooSlowError):
                    exc = TimeoutError(self._not_started(entry, pid))
                error = ErrorInfo.from_exception(exc)
            finally:
                self._starts.discard(waiting)
            interrupted = waiting.cancelled_caught
            if queued and error is None and not interrupted and svc.pid == pid:
                # its run, which stable_threshold measures, begins now (or began and
                # ended at once)
                svc.started_at = trio.current_time()
            async with self._lock:
                if svc.pid == pid:
                    await self._start_done(svc, pid, error, interrupted=interrupted)
                await self._start_ready(joined[1:])  # (_under_way: counted by _spawn)
        finally:
            if svc.joined is joined:
                svc.joined = []
            for count in joined:
                count.end()

    async def _start_done(self, svc: _Service, pid: Pid, error: ErrorInfo | None, *,
                          interrupted: bool) -> None:
        """``svc``'s start of ``pid`` ends: ``error``, why it did not run in time."""
        if interrupted:  # (see interrupt) its code never ran; it goes now, before a
            svc.pid = None  # slot freed by the stop lets it run
            svc.status = ServiceStatus.STOPPED
            self.by_pid.pop(pid, None)
            # (as the node's stop ends a process: no failure logged, none recorded)
            await self.node.terminate(pid, self.pid, self.node.shutdown_reason)
        elif error is not None:  # spawned but not running in time: it goes, unwatched
            self.by_pid.pop(pid, None)
            svc.pid = None
            await self.node.terminate(pid, self.pid, error)
            await self._failed(svc, error, ran=None, pid=pid)
        elif self.node.hosts[pid.host].is_alive(pid):
            # said as it counts as running: its code runs, a worker or a queue's slot
            # freed, its Supervisor's children all run (not as it was spawned: a tree
            # that never started its children was said started)
            svc.status = ServiceStatus.RUNNING
            log.info("%s: started as %s", svc.entry.id, pid,
                     extra={"service": svc.entry.id, "pid": pid})

    def _waits_to_run(self, pid: Pid | None, *, past: bool = False) -> str | None:
        """What the process ``pid``, spawned, waits for before its code runs, in words
        (``past``: as a timeout says it), or ``None`` if it does not wait: a worker of
        a ``process.host`` with ``workers``, all busy, or a slot of a workflow host's
        queue (``max_concurrent``, ``rate``), all taken."""
        host = None if pid is None else self.node.hosts.get(pid.host)
        if host is None:
            return None
        are = "were" if past else "are"
        waits = getattr(host, "waits_for_worker", None)
        if waits is not None and waits(pid):
            return (f"for a worker of host {host.name!r}, whose {host.workers} worker(s) "
                    f"{are} busy")
        queued = getattr(host, "waits_in_queue", None)
        limits = queued(pid) if queued is not None else None
        if limits is not None:
            return (f"in the queue of workflow host {host.name!r}, whose limits ({limits}) "
                    f"{are} all taken")
        holds = getattr(host, "holds_start", None)
        if holds is not None and holds(pid):
            return "for the children of its Supervisor to start"
        return None

    def _not_started(self, entry: Any, pid: Pid | None) -> str:
        """Why a start timed out: in words, with what it waited for (a busy worker, a
        queue's slot) when it did."""
        why = f"not started within {entry.lifecycle.start_timeout:g}s"
        waited = self._waits_to_run(pid, past=True)
        if waited is not None:
            why += f": it waited {waited}"
        return why

    # ------------------------------------------------------------------ failures
    async def _on_exit(self, svc: _Service, ev: Event) -> None:
        svc.pid = None
        if self.stopping:
            svc.status = ServiceStatus.STOPPED
            return
        if ev.error is None:
            svc.status = ServiceStatus.COMPLETED
            svc.result = ev.result
            log.info("%s: ended normally (it returned, or a cancel stopped it); not "
                     "restarted", svc.entry.id, extra={"service": svc.entry.id})
            # what waits for it to run will wait for ever unless it is started again:
            # said once here, as for one that gave up (what runs already runs on)
            for dep in self._dependents(svc.entry.id):
                if (dep.wanted and dep.status not in _SETTLED
                        and dep.status.without_requirement() == "cannot start"):
                    self._cannot_start(dep, svc.entry.id)
            return
        await self._failed(svc, ev.error, ran=trio.current_time() - svc.started_at,
                           pid=ev.pid)

    @staticmethod
    def _cannot_start(dep: _Service, returned: str) -> None:
        """``dep`` waits for ``returned``, a service that returned: it waits for ever
        unless that one is started again."""
        log.error("%s: cannot start: %s, which it requires, returned (a service that "
                  "returns is not restarted: it starts again only by start_service)",
                  dep.entry.id, returned, extra={"service": dep.entry.id})

    async def _failed(self, svc: _Service, error: ErrorInfo, *, ran: float | None,
                      pid: Pid | None) -> None:
        """``ran``: how long its process ran, ``None`` for a start that failed (never a
        stable run, whatever the threshold); ``pid``: that process, which ended (``None``
        if it was not spawned)."""
        entry = svc.entry
        svc.last_error = error
        if ran is not None and ran >= entry.lifecycle.stable_threshold:
            svc.restarts = 0
        policy = entry.restart
        attempt = svc.restarts + 1
        if not policy.allows(attempt):
            svc.status = ServiceStatus.GAVE_UP
            log.error("%s: giving up after %s; last error: %s", entry.id,
                      _restarts(svc.restarts), error,
                      extra={"service": entry.id, "attempt": svc.restarts, "error": error})
            # what requires it will not start again (or runs on without it) unless it is
            # started again: said once here, not left to a silent "waiting"
            held = self._held(svc)  # (what runs stops: see _let_go)
            for dep in self._dependents(entry.id):
                if not dep.wanted or dep.status in (ServiceStatus.GAVE_UP,
                                                     ServiceStatus.COMPLETED):
                    continue
                what = dep.status.without_requirement()
                if held and what != "cannot start":
                    continue
                log.error("%s: %s: %s, which it requires, gave up (%s)", dep.entry.id, what,
                          entry.id, error, extra={"service": dep.entry.id, "error": error})
            if held:
                assert self._timers is not None
                self._timers.start_soon(self._let_go, svc)
            return
        svc.restarts = attempt
        delay = policy.delay(attempt, self._rng)
        svc.status = ServiceStatus.BACKOFF
        svc.restart_due = trio.current_time() + delay
        limit = f"/{policy.max_attempts}" if policy.max_attempts else ""
        log.warning("%s: restart %d%s in %.2fs after %s", entry.id, attempt, limit, delay, error,
                    extra={"service": entry.id, "attempt": attempt, "delay": round(delay, 3),
                           "error": error})
        assert self._timers is not None
        self._timers.start_soon(self._restart_later, svc, delay, svc.generation, pid)

    async def _restart_later(self, svc: _Service, delay: float, generation: int,
                             ended: Pid | None) -> None:
        """Restart ``svc`` after ``delay``, once the processes ending with its process
        ``ended`` have ended too (see :meth:`_wait_linked`), with the lock free."""
        ended_at = trio.current_time()
        await trio.sleep(delay)
        if ended is not None and svc.generation == generation:
            await self._wait_linked(svc, ended, ended_at)
        async with self._lock:
            await self._restart(svc, generation)

    async def _restart(self, svc: _Service, generation: int) -> None:
        if (self.stopping or self.node.stopping or svc.generation != generation
                or svc.status != ServiceStatus.BACKOFF):
            return
        svc.status = ServiceStatus.STOPPED
        # what depends on it (directly or not) restarts too, after it runs again; each
        # stop waited out with the lock free, svc held back meanwhile (_held_by_stops)
        for dep in reversed(self._dependents(svc.entry.id)):
            if dep.status in (ServiceStatus.RUNNING, ServiceStatus.STARTING) and (
                    dep.pid is not None):
                log.info("%s: restarting because %s restarted", dep.entry.id, svc.entry.id,
                         extra={"service": dep.entry.id})
                await self._stop_unlocked(dep, ServiceStatus.WAITING)
        await self._start_ready()

    def _dependents(self, service_id: str) -> list[_Service]:
        """Services that require ``service_id``, directly or through others, in start order."""
        found: set[str] = {service_id}
        out: list[_Service] = []
        for svc in self.order:  # dependency order: a requirement precedes its dependents
            if svc.entry.id not in found and any(r in found for r in svc.entry.requires):
                found.add(svc.entry.id)
                out.append(svc)
        return out

    # ------------------------------------------------------------------ stopping
    async def _stop(self, svc: _Service, then: ServiceStatus, until: float = math.inf
                    ) -> None:
        """Stop ``svc``: ``CANCEL``, then termination after its ``stop_timeout`` or at
        ``until`` (trio time), whichever comes first; past ``until`` already, terminated
        at once (a singleton whose node lost its lease: another node may run it now,
        and the two copies would overlap for as long as its clean-up took)."""
        pid = self._detach(svc, then)
        if pid is not None:
            await self._end(svc, pid, until)

    async def _stop_unlocked(self, svc: _Service, then: ServiceStatus,
                             until: float = math.inf) -> None:
        """:meth:`_stop`, with the lock (the caller's) free while the process stops: a
        ``stop_timeout`` holds up no other service's exit or restart. Until that process
        has ended, and those ending with it (:meth:`_wait_linked`; not for a stop by
        ``until``: a singleton whose node lost its lease is let go by then), neither
        ``svc`` nor what it requires starts (see :meth:`_held_by_stops`: whoever calls
        this starts them after), and the node's stop waits for it in its turn."""
        pid = self._detach(svc, then)
        if pid is None:
            return
        ending = svc.ending = trio.Event()
        self._lock.release()
        try:
            await self._end(svc, pid, until)
            if until == math.inf:
                await self._wait_linked(svc, pid, trio.current_time())
        finally:
            svc.ending = None
            ending.set()
            with trio.CancelScope(shield=True):  # (the caller's block releases it)
                await self._lock.acquire()

    async def _wait_linked(self, svc: _Service, pid: Pid, ended: float) -> None:
        """Wait until the processes that the end of ``svc``'s process ``pid`` (at trio
        time ``ended``) is ending through their links to it (its ``spawn_linked``
        helpers) have ended, as a Supervisor does for its child (``wait_ending_with``):
        one whose cleanup awaits (shielded: closing a socket) holding a name would fail
        each new process of ``svc`` until it gave up. At most its ``stop_timeout`` plus
        a Supervisor's ``CLEANUP_GRACE`` after ``ended``; past it, that is logged and
        the manager goes on. Not at a node's stop, which ends them itself."""
        await wait_ending_with(self.node, pid, ended=ended,
                               bound=svc.entry.lifecycle.stop_timeout + CLEANUP_GRACE,
                               name=svc.entry.id, who="the service manager", logger=log,
                               extra={"service": svc.entry.id})

    def _detach(self, svc: _Service, then: ServiceStatus) -> Pid | None:
        """``svc`` is ``then`` from now; its process (returned), if any, is no longer
        its own: its ``EXIT`` is not handled."""
        pid = svc.pid
        svc.pid = None
        svc.status = then
        if pid is None:
            return None
        self.by_pid.pop(pid, None)
        # its helpers (spawn_linked) end with it, quietly, as a Supervisor's child's do
        self.node.stop_links_with(pid, supervisor_stop_reason("(the node's service manager)"))
        return pid

    async def _end(self, svc: _Service, pid: Pid, until: float) -> None:
        """End ``svc``'s former process ``pid``, as :meth:`_stop` says."""
        timeout = min(svc.entry.lifecycle.stop_timeout, until - trio.current_time())
        if timeout <= 0:
            what = ("a singleton" if svc.entry.lifecycle.singleton else
                    "it requires a singleton")  # (see _stop_dependents)
            await self.node.terminate(pid, self.pid, ErrorInfo(
                "Terminated", f"{svc.entry.id}: {what} whose node lost its cluster "
                "lease (another node may run it now)"))
            return
        await process.cancel(pid, timeout=timeout)

    async def _stop_all(self) -> None:
        """Stop every service in reverse dependency order: each once every service
        that requires it (directly or not) has stopped, the others meanwhile, so the
        whole stop takes the longest chain of stop timeouts, not their sum. Those free
        to stop at one moment are logged ``stopping`` in reverse dependency order. Called
        under the lock, once no start is under way; one whose process another stop
        stops already (a restart's, a singleton's) has stopped once that has ended."""
        self.stopping = True
        # how many services that require it have not stopped yet (one not running
        # counts as stopped at once, but only after what requires it: the order holds
        # through it)
        holders = {svc.entry.id: 0 for svc in self.order}
        for svc in self.order:
            for sid in svc.entry.requires:
                holders[sid] += 1
        left = list(reversed(self.order))
        stopped_send, stopped = trio.open_memory_channel[_Service](math.inf)
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as stops:
                while left:
                    for svc in list(left):
                        if holders[svc.entry.id]:
                            continue
                        left.remove(svc)
                        if svc.pid is None and svc.ending is None:
                            self._release(svc, holders)
                            continue
                        log.info("%s: stopping", svc.entry.id, extra={"service": svc.entry.id})
                        stops.start_soon(self._stop_reported, svc, stopped_send)
                    if left:  # (a stop under way holds them: requirements form no cycle)
                        self._release(await stopped.receive(), holders)

    async def _stop_reported(self, svc: _Service,
                             stopped: trio.MemorySendChannel[_Service]) -> None:
        ending = svc.ending
        if svc.pid is None and ending is not None:  # (within its stop_timeout too)
            await ending.wait()
            svc.status = ServiceStatus.STOPPED
        else:
            await self._stop(svc, ServiceStatus.STOPPED)
        stopped.send_nowait(svc)

    @staticmethod
    def _release(svc: _Service, holders: dict[str, int]) -> None:
        """``svc`` has stopped: what it requires is held by one service fewer."""
        for sid in svc.entry.requires:
            holders[sid] -= 1

    # ------------------------------------------------------------------ on demand
    async def call_start(self, service_id: str) -> None:
        """Start ``service_id`` (and what it requires) from outside the manager;
        ``RuntimeError`` once the services stop (the node closes) or their manager ended."""
        done = trio.Event()
        served: list[bool] = []
        try:
            if self.stopping:
                raise trio.ClosedResourceError
            self._requests.send_nowait((service_id, done, served, math.inf))
        except trio.ClosedResourceError:
            served = []
        else:
            await done.wait()
        if not served:
            raise RuntimeError(f"cannot start service {service_id!r}: the node's services "
                               "are stopping")

    async def _serve_requests(self) -> None:
        """Serve the start requests in turn, each one's changes under the lock; its
        caller is answered once the starts it began are done, in a task of its own (a
        start that waits for a busy worker holds up no other request)."""
        async for service_id, done, served, until in self._request_box:
            begun = _Starts()
            answering = False
            try:
                async with self._lock:
                    if service_id == _SINGLETONS:
                        await self._apply_singletons(until, [begun])
                    else:
                        await self._start_requested(service_id, [begun])
                assert self._timers is not None
                self._timers.start_soon(self._answer, begun, done, served)
                answering = True
            finally:  # the manager stops meanwhile: the caller fails, not waits
                if not answering:
                    done.set()

    @staticmethod
    async def _answer(begun: _Starts, done: trio.Event, served: list[bool]) -> None:
        try:
            await begun.wait()
            served.append(True)
        finally:  # also when the manager stops meanwhile: the caller fails, not waits
            done.set()

    async def _start_requested(self, service_id: str, begun: list[_Starts]) -> None:
        for sid in [*self._requirements(service_id), service_id]:
            svc = self.by_id[sid]
            if not self._may_run(svc):
                where = self.elsewhere.get(sid)
                log.info("%s: a singleton; not started here: %s", sid,
                         f"it runs on node {where} of the cluster" if where is not None else
                         "this node is draining (a draining node claims no singleton)"
                         if self.draining else
                         "this node could not claim it (the cluster did not answer in time)",
                         extra={"service": sid})
                continue
            svc.wanted = True
            # a requirement that returned is not run again for what requires it (a
            # one-shot set-up, a migration, must not run twice behind the caller's back;
            # what requires it cannot start, and says so): only by its own start_service
            if svc.status is ServiceStatus.GAVE_UP or (
                    svc.status is ServiceStatus.COMPLETED and sid == service_id):
                svc.status = ServiceStatus.STOPPED
                svc.restarts = 0
        await self._start_ready(begun)

    def _requirements(self, service_id: str) -> list[str]:
        """What ``service_id`` requires, directly or not."""
        by_id = self.by_id
        return _required(lambda sid: by_id[sid].entry.requires,
                         by_id[service_id].entry.requires)


def _fresh(values: Any) -> tuple[Any, ...]:
    """A service's ``input`` for one start, its containers copied (lists, dicts, sets
    and tuples, all the way down), so that what one run changed in them (a list it
    appended to) is not what the next run, or another service sharing them through a
    YAML alias, starts with; any other object (a channel, an event, a client of a
    programmatic config) is the one given, shared as meant."""
    return tuple(_copied(v) for v in values)


def _copied(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [_copied(v) for v in value]
    if kind is dict:
        return {k: _copied(v) for k, v in value.items()}
    if kind is tuple:
        return tuple(_copied(v) for v in value)
    if kind is set:
        return {_copied(v) for v in value}
    return value


def _required(requires: Callable[[str], Iterable[str]], ids: Iterable[str]) -> list[str]:
    """``ids`` and what they require, directly or not (``requires(id)``: what the
    service ``id`` requires itself), each once."""
    out: list[str] = []
    seen: set[str] = set()
    todo = list(ids)
    while todo:
        sid = todo.pop()
        if sid not in seen:
            seen.add(sid)
            out.append(sid)
            todo.extend(requires(sid))
    return out


def singletons_to_run(config: Config) -> set[str]:
    """The singleton services a node of a cluster with ``config`` is to run (claims):
    those ``auto_start``, and those an ``auto_start`` service requires, directly or not."""
    entries = {svc.id: svc for svc in config.services()}
    wanted = _required(lambda sid: entries[sid].requires,
                       [sid for sid, svc in entries.items() if svc.lifecycle.auto_start])
    return {sid for sid in wanted if entries[sid].lifecycle.singleton}


async def start_services(node: NodeContext, config: Config,
                         singletons: set[str] | None = None,
                         on_dropped: Callable[[str], None] | None = None
                         ) -> ServiceManager | None:
    """Spawn the manager (when the config has services) and wait for the first start pass.
    ``singletons``: in a cluster, the singleton services this node holds now;
    ``on_dropped``: see :attr:`ServiceManager.on_dropped`."""
    if not config.services():
        return None
    manager = ServiceManager(node, config)
    manager.held = None if singletons is None else set(singletons)
    manager.on_dropped = on_dropped
    node.services = manager  # entry ids resolve while the first services start
    await node.spawn_process(manager, (), host="processes", parent=None, link=None, monitor=None,
                      label=MANAGER_NAME)
    await manager.started.wait()
    return manager


async def stop_services(node: NodeContext, manager: ServiceManager) -> None:
    """Stop services in reverse dependency order (independent ones together), each
    within its stop timeout.

    The manager stops them on its ``CANCEL``, each one cancelled, then terminated after
    its stop timeout. Past :meth:`ServiceManager.stop_budget` it is left to finish if it
    is doing that (a service whose code outlives its termination holds it up, and is
    logged by name), and terminated otherwise."""
    pid = manager.pid
    host = node.hosts["processes"]
    if pid is None or not host.is_alive(pid):
        return
    manager.interrupt()  # a start under way would hold its CANCEL up to its start_timeout
    with trio.move_on_after(manager.stop_budget()):
        await node.cancel(pid, None, float("inf"))  # its CANCEL, then its end
        return
    if manager.stopping:
        await host.wait_exited(pid)
    else:
        await node.terminate(pid, None)


__all__ = ["ServiceInfo", "ServiceManager", "ServiceStatus", "singletons_to_run",
           "start_services", "stop_services"]


def _restarts(n: int) -> str:
    """``1 restart``, ``2 restarts`` (and ``0 restarts``)."""
    return f"{n} restart" if n == 1 else f"{n} restarts"
