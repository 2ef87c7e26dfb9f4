"""The node: its public API, its lifecycle (hosts, stores, services), and
``open_node`` / ``run``. Routing, the registry and statistics live in ``_router.py``."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

import attrs
import trio

from . import _cli_signals, _trio_fast
from ._duration import parse_lease, parse_retention
from ._errors import ConfigError, NotInProcess, ProcessError, id_hint, schedule_hint
from ._handle import WorkflowHandle, WorkflowSummary
from ._router import EXIT_MEMORY, Router, not_in_trio
from ._watchdog import watch
from .actors._mailbox import BUDGET, Budget
from .actors._runtime import runtime_or_none, runtime_var
from .actors._values import Pid, ProcessInfo, check_topic
from .hosts._kernel import noproc
from .hosts._process_host import ProcessHost, stop_processes
from .hosts.workflow._ids import check_key_size, check_text
from .hosts.workflow._schedules import held_schedule_id
from .persistence import FINAL_STATUSES, WorkflowStatus, parse_status
from .supervision._services import (
    ServiceInfo,
    ServiceManager,
    singletons_to_run,
    start_services,
    stop_services,
)
from .tracing import enable_if_configured

__all__ = ["EXIT_MEMORY", "INBOX_WARNING", "Node", "current_node", "open_node", "run"]

#: default ``open_node(inbox_warning=...)``: items waiting in one inbox that log a warning
INBOX_WARNING = 10_000
#: seconds a stopping node waits, in all, for a store's server that does not answer
#: (down, or stalled): its workflows then stop where they are, unrecorded, and resume
#: from their journals on the next node (a server that answers is not hurried)
STOP_WAIT = 5.0
#: seconds between two looks, as a stopping node waits for its stores' commits in flight
SETTLE_PAUSE = 0.001

T = TypeVar("T")


#: the node of the running ``open_node`` block (and so of ``garrison.run``)
_current_node: contextvars.ContextVar[Node] = contextvars.ContextVar("garrison_node")


def check_node_name(name: object) -> str:
    """``name`` if it can name a node (``name=``, ``garrison run --name``): a non-empty
    string without '/', '@' or a NUL character, valid text, printable (no newline or
    other control character: ``garrison nodes`` prints it as it is, and a newline would
    forge a row), without spaces around it (as a registered name: the table shows
    ``' n5 '`` as ``n5``), at most ``MAX_KEY_BYTES`` bytes of UTF-8; else ``ValueError``
    saying why."""
    if not isinstance(name, str) or not name.strip() or "/" in name or "@" in name \
            or "\x00" in name:
        raise ValueError(f"a node name must be a non-empty string without '/', '@' or "
                         f"a NUL character, got {name!r}")
    check_text(name, "a node name")
    if not name.isprintable():
        bad = next(c for c in name if not c.isprintable())
        raise ValueError(f"a node name must be printable text, got {name!r} (it holds the "
                         f"unprintable character {bad!r})")
    if name != name.strip():  # (' n5 ' shows as n5 in garrison nodes: drain n5 missed it)
        raise ValueError(f"a node name must not have spaces around it, got {name!r}")
    check_key_size(name, "a node name")
    return name


def current_node() -> Node:
    """The node of the calling process, or of the ``open_node`` block (or
    ``garrison.run``) the caller runs in; :class:`NotInProcess` elsewhere.

    >>> async def main():                  # e.g. garrison run app.yaml --main app:main
    ...     node = garrison.current_node()
    ...     pid = await node.start_workflow(order_workflow, order, id="order-17")
    """
    runtime = runtime_or_none()
    router = getattr(runtime, "node", None) if runtime is not None else None
    if router is not None:
        node: Node = router.public
        return node
    try:
        return _current_node.get()
    except LookupError:
        raise NotInProcess(
            "garrison.current_node() has no node here: call it inside a garrison process "
            "or inside an `async with garrison.open_node()` block (garrison.run makes one)"
        ) from None


def check_node(value: object, where: str) -> Node:
    """``value`` if it is a :class:`Node`; else ``TypeError`` naming ``where`` it was
    passed (``"serve_console(node=...)"``) and what came instead."""
    if not isinstance(value, Node):
        raise TypeError(f"{where}: expected a garrison Node (from garrison.open_node() or "
                        f"garrison.current_node()), got {type(value).__name__} {value!r:.40}")
    return value


class Node:
    """A running garrison node: its hosts, registry and statistics.

    Get one with :func:`open_node` (inside trio) or let :func:`run` make it.

    >>> async def main():
    ...     async with garrison.open_node() as node:
    ...         pid = await node.spawn(worker, 21)
    ...         print(await node.wait(pid))
    """

    def __init__(self, *, config: Any = None, store: Any = None,
                 inbox_warning: int | None = INBOX_WARNING, max_concurrent: int | None = None,
                 cluster_max_concurrent: int | None = None, rate: str | None = None,
                 name: str | None = None, lease: Any = "10s", retention: Any = None) -> None:
        from .hosts.workflow._queue import QueueLimits

        #: the retention of the ``workflows`` host given to ``open_node`` (seconds;
        #: ``None``: none given)
        self._retention = None if retention is None else parse_retention(retention)
        self.config = config
        self.store = store
        #: ``spawn`` from outside any process: a scheduler pass every ``BUDGET`` spawns
        self._spawn_budget = Budget()
        #: the queue limits of the ``workflows`` host given to ``open_node`` (``None``: none)
        self._limits = QueueLimits(max_concurrent, cluster_max_concurrent, rate) \
            if (max_concurrent, cluster_max_concurrent, rate) != (None, None, None) else None
        if name is not None:
            check_node_name(name)
        #: this node's name in its cluster (``name=``, or ``<hostname>-<pid>``)
        self.name: str = name if name is not None else f"{socket.gethostname()}-{os.getpid()}"
        self.lease = parse_lease(lease)
        #: when this node was made (unix seconds): ``cluster()``'s ``started`` off a cluster
        self._started_at = time.time()
        #: cluster memberships, one per workflow host on a PostgreSQL store
        self._members: list[Any] = []
        self._draining = False
        #: the singleton services this node runs (in a cluster)
        self._held_singletons: set[str] = set()
        if inbox_warning is None:
            inbox_warning = 0
        if type(inbox_warning) is not int or inbox_warning < 0:
            raise ValueError(f"inbox_warning must be a whole number of items >= 0 (0 or None: "
                             f"no warning), got {inbox_warning!r}")
        #: routing, registry and statistics: what hosts and services see of this node
        self._router = Router(self, config, inbox_warning)
        self._nursery: trio.Nursery | None = None
        #: a stop was asked for while the node started (see :meth:`interrupt_start`)
        self._start_interrupted = False
        #: the last wait of the start for a PostgreSQL server (:meth:`_waited_for_store`),
        #: which :meth:`interrupt_start` cancels
        self._store_wait = trio.CancelScope()
        #: the start went through (see :meth:`interrupt_start`)
        self._started = False
        #: the stop waits for the commits in flight before it closes the stores: a new
        #: start is refused from then on, as on a closed node (see :meth:`_stop`)
        self._closing = False

    @property
    def hosts(self) -> dict[str, Any]:
        """The node's hosts by name (``processes``, ``workflows`` and the config's)."""
        return self._router.hosts

    @property
    def inbox_warning(self) -> int:
        """Items waiting in one inbox that log a warning (0: never)."""
        return self._router.inbox_warning

    @property
    def trio_token(self) -> trio.lowlevel.TrioToken | None:
        """The ``trio.lowlevel.TrioToken`` of the trio run the node runs in (``None``
        until it opens). Its async methods, and its handles', are called from that run
        only (from another, or from asyncio, they raise ``RuntimeError``); from another
        thread, reach it through the token:

        >>> async def place(order):                      # runs in the node's run
        ...     return await node.start_workflow(order_workflow, order, id=order.id)
        >>> trio.from_thread.run(place, order, trio_token=node.trio_token)  # doctest: +SKIP
        """
        return self._router.trio_token

    # ================================================================== public API
    async def spawn(self, target: Any, *args: Any, host: str | None = None) -> Pid:
        """Start ``target(*args)`` as a new process and return its pid at once.

        ``target`` is an async function, an object with an async ``__call__``
        (such as a ``Supervisor``) or a config entry id. ``host`` defaults to
        ``"processes"``. The process starts running when the caller next waits (as
        with trio's ``start_soon``): it may not have run yet when ``spawn`` returns.
        """
        router = self._router
        if router.closed:
            raise ProcessError(f"cannot spawn: {self._closed_text()}")
        # check_run, written out: the calling run's token read from trio's run context
        # (see ``_trio_fast``; ``None`` outside any run, or where that context is not
        # readable: then check_run itself tells), one compare on this path
        here = getattr(getattr(_trio_fast.RUN, "runner", None), "trio_token", None)
        if here is not router.trio_token or here is None:
            router.check_run("node.spawn()")  # (raises, saying which run)
        # as process.spawn: a cancellation point before the spawn, not after it (a spawn
        # that raises Cancelled started nothing), and a scheduler pass only every BUDGET
        # spawns (a loop of spawns is not one pass per process): Budget.checkpoint,
        # written out (no coroutine of its own per spawn)
        budget = self._spawn_budget
        budget.ops += 1
        if budget.ops >= BUDGET:
            budget.ops = 0
            await trio.lowlevel.checkpoint()
        elif not _trio_fast.passes_cancel_point():
            await trio.lowlevel.checkpoint_if_cancelled()
        name = "processes" if host is None else host  # ("" names no host: refused below)
        h = router.hosts.get(name) if type(name) is str else None
        if h is not None and not h.durable and not router.stopping:
            # the common case, a process host by its own name: no coroutine on the way
            pid = router.spawn_plain(h, target, args, None)
        else:
            pid = await router.spawn_process(target, args, host=name,
                                             parent=None, link=None, monitor=None)
        return pid

    async def send(self, to: Pid | str, topic: str, payload: Any = None) -> None:
        """Send a message from outside any process (its ``sender`` is ``None``).

        A closed node (used past its ``open_node`` block) raises :class:`ProcessError`
        rather than drop the message."""
        if self._closed:
            raise ProcessError(f"cannot send: {self._closed_text()}")
        self._router.check_run("node.send()")
        if type(topic) is not str:
            topic = check_topic(topic, "node.send()")
        await self._router.send_message(None, to, topic, payload)
        await trio.lowlevel.checkpoint()

    async def call(self, to: Pid | str, topic: str, payload: Any = None,
                   timeout: Any = "5s") -> Any:
        """``process.call`` from outside any process: send a request, wait for the reply.

        The same rules: one ``timeout`` covers the exchange (``TimeoutError``), the
        callee's death fails the call at once with :class:`ProcessError`, a late reply
        is dropped. ``to`` may be a process, a workflow, a registered name or a pid's
        text form. The callee sees a ``msg.sender`` that is no process (a message to
        it is a dead letter).

        >>> total = await node.call("counter", "get", timeout="1s")
        """
        if self._closed:
            raise ProcessError(f"cannot call: {self._closed_text()}")
        self._router.check_run("node.call()")
        if type(topic) is not str:
            topic = check_topic(topic, "node.call()")
        return await self.hosts["processes"].call_from_outside(to, topic, payload, timeout)

    async def wait(self, pid: Pid | str) -> Any:
        """Wait until ``pid`` ends; return its result or raise :class:`ProcessError`.

        A process that ended recently (the last ``EXIT_MEMORY`` exits) is reported
        at once; an unknown pid raises ``ProcessError`` with reason ``noproc``.
        """
        router = self._router
        here = getattr(getattr(_trio_fast.RUN, "runner", None), "trio_token", None)
        if here is not router.trio_token or here is None:  # (check_run, as in spawn)
            router.check_run("node.wait()")  # (raises, saying which run)
        if type(pid) is not Pid or router.aliases:
            pid = router.resolve(pid)
        host = router.hosts.get(pid.host) or router.hosts.get(router.aliases.get(pid.host, ""))
        if host is None:  # a pid of no host here names no process here
            raise ProcessError(f"process {pid} is unknown: {noproc(pid)}", pid=pid,
                               error=noproc(pid))
        caller = runtime_var.get(None)  # (runtime_or_none() without a call)
        if caller is not None and caller.current_pid() == pid:  # (else it waits for ever)
            raise ValueError(f"process {pid} cannot wait for its own end: node.wait() of "
                             "the calling process")
        if host.durable:
            return await host.wait(pid)
        outcome = None
        if isinstance(host, ProcessHost):  # (one that ended already is answered without a
            if pid in host.procs:  # coroutine; ``procs`` is what its is_alive reads)
                outcome = await host.wait_outcome(pid)
        elif host.is_alive(pid):
            await host.wait_exited(pid)
        try:
            result, error = outcome or router.exit_of(pid)
        except ProcessError:
            if isinstance(host, ProcessHost) and host.issued(pid):
                raise ProcessError(
                    f"process {pid} ended, and its outcome is no longer kept: the node "
                    f"keeps the last {EXIT_MEMORY:,} exits (monitor a process to get its "
                    f"EXIT whenever it ends)", pid=pid, error=noproc(pid)) from None
            raise
        if error is not None:
            raise ProcessError(f"process {pid} failed: {error}", pid=pid, error=error)
        return result

    def lookup(self, name: str) -> Pid | None:
        """The pid registered under ``name`` (or running a service of that entry id),
        or ``None``."""
        self._router.check_thread("node.lookup()")
        return self._router.lookup(name)

    def services(self) -> list[ServiceInfo]:
        """A snapshot of every ``process.service`` of the config: id, status, pid,
        restarts since the last stable run, last error."""
        self._router.check_thread("node.services()")
        services = self._router.services
        return services.info() if services is not None else []

    async def start_service(self, service_id: str) -> None:
        """Start a service that is not ``auto_start`` (and what it requires)."""
        self._router.check_run("node.start_service()")
        services = self._router.services
        if services is None or service_id not in services.by_id:
            entry = (self.config.get(service_id)
                     if self.config is not None and isinstance(service_id, str) else None)
            if entry is not None:  # (not a typo: an entry of another kind)
                raise ValueError(f"cannot start {service_id!r}: it is a {entry.kind} entry "
                                 "of the config, not a process.service")
            known = services.by_id if services is not None else ()
            raise ValueError(f"no service {service_id!r} in the config"
                             f"{id_hint(service_id, known) if isinstance(service_id, str) else ''}")
        singletons = services.singletons_for(service_id) - self._held_singletons
        if singletons and self._members and self._members[0].on_singletons is not None:
            # claimed first (unless another live node holds them): started here then;
            # a draining node claims none (and says so, not that the cluster was slow)
            await self._members[0].want_singletons(singletons)
            services.draining = self._members[0].draining
        await services.call_start(service_id)

    def stats(self) -> dict[str, Any]:
        """Counters: live ``processes``, ``messages`` delivered, ``dead_letters``,
        ``spawned``, ``registered`` names; ``queued``: messages and events waiting in
        every process's inboxes (a workflow's too, of those in memory here),
        ``largest_inbox``: the most waiting at one process, ``largest_inbox_pid``: that
        process (``None`` when nothing waits);
        ``workflow_queues``: per workflow host, its queue depth (``pending`` workflows
        waiting for a slot), ``running`` (holding a slot), ``max_concurrent`` and
        ``rate``; ``schedules``: per workflow host, its schedules and their ticks
        ``started``, ``skipped`` (overlap) and ``missed`` (past the catch-up window);
        ``retention``: per workflow host, its ``retention`` (seconds; ``None``: ended
        workflows are kept for ever) and the ended workflows this node ``pruned`` from
        its store;
        ``cluster``: per workflow host of a cluster (a PostgreSQL store), ``left``
        (``True`` once this node left the cluster for good: its store failed, or a
        newer node migrated the schema) and ``refused``: the workflow names whose code
        does not import here (or is no workflow function), each with its error (their
        workflows wait for a node that has the code); ``{}`` off a cluster.

        The queue figures walk every process and workflow in memory (cost grows with
        their number).
        """
        router = self._router
        router.check_thread("node.stats()")
        live = sum(host.live_count() for host in self.hosts.values())
        queued = largest = 0
        at: Pid | None = None
        for host in self.hosts.values():  # (a workflow host's inboxes too)
            total, most, pid = host.inbox_stats()
            queued += total
            if most > largest:
                largest, at = most, pid
        return {
            "processes": live,
            "messages": router.stats_messages,
            "dead_letters": router.stats_dead_letters,
            "spawned": router.stats_spawned,
            "registered": len(router.registry),
            "queued": queued,
            "largest_inbox": largest,
            "largest_inbox_pid": at,
            "workflow_queues": {name: host.queue.stats() for name, host in self.hosts.items()
                                if host.durable},
            "schedules": {name: {"schedules": len(host.scheduler.rows),
                                 **host.scheduler.counts}
                          for name, host in self.hosts.items() if host.durable},
            "retention": {name: {"retention": host.retention,
                                 "pruned": host.counts["pruned"]}
                          for name, host in self.hosts.items() if host.durable},
            "cluster": {member.host.name: {"left": member.gave_up,
                                           "refused": member.refused(),
                                           "balanced": member.balanced}
                        for member in self._members},
        }

    def process_info(self, pid: Pid | str) -> ProcessInfo:
        """A :class:`~garrison.ProcessInfo` snapshot of a process: ``alive``, ``label``,
        ``queued`` messages and waiting ``events``, ``links``, ``monitors``,
        ``monitored_by``, registered ``names``. ``pid`` may be a name or a pid's text
        form; a process that has ended reads ``alive=False``, as does a pid of a host this
        node does not have.

        >>> node.process_info("counter").queued
        0
        """
        router = self._router
        router.check_thread("node.process_info()")
        pid = router.resolve(pid)
        host = router.hosts.get(pid.host) or router.hosts.get(router.aliases.get(pid.host, ""))
        if host is None:  # a pid of no host here names no process here (as node.wait)
            return ProcessInfo(pid, alive=False)
        if not hasattr(host, "process_info"):
            raise ValueError(f"process_info({str(pid)!r}): {pid.host!r} is a workflow host; "
                             f"use node.workflow({pid.id!r}) for a workflow")
        info: ProcessInfo = host.process_info(pid)
        return info

    def processes(self) -> list[ProcessInfo]:
        """A :class:`~garrison.ProcessInfo` snapshot of every live process of the node's
        process hosts (workflows are listed by :meth:`workflows`), each host's in start
        order. ``parent`` links them into the tree of who started whom: a supervisor's
        children, the services under the service manager.

        >>> [info.label for info in node.processes()]   # doctest: +SKIP
        ['garrison.services', 'kv_store', 'ticker']
        """
        self._router.check_thread("node.processes()")
        return [info for host in self.hosts.values() if hasattr(host, "process_infos")
                for info in host.process_infos()]

    def resolve(self, to: Pid | str) -> Pid:
        """``to`` as a pid: a pid stays itself; a string with a ``/`` is a pid's text
        form (``str(pid)``, e.g. ``"workflows/order-17"``); any other string is a
        registered name (or a service's entry id)."""
        self._router.check_thread("node.resolve()")
        return self._router.resolve(to)

    # ================================================================== lifecycle
    async def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await self._add_host(ProcessHost(self._router, "processes"))
        with contextlib.suppress(_StartInterrupted):  # (the stop comes next)
            await self._start_workflow_hosts()
        if self.config is not None:
            for entry in self.config.hosts():
                if entry.kind == "process.host":
                    extra = ProcessHost(self._router, entry.id, workers=entry.workers)
                    if self._members:  # its pids name this node too
                        extra.suffix = self.hosts["processes"].suffix
                        extra.prefix = self.hosts["processes"].prefix
                    await self._add_host(extra)
            member = self._members[0] if self._members else None
            singletons = [s.id for s in self.config.services() if s.lifecycle.singleton]
            if member is not None and singletons:
                member.singletons = singletons
                member.wanted_singletons = frozenset(singletons_to_run(self.config))
                member.on_singletons = self._on_singletons
                member.poke()  # claim them now
            if not self._start_interrupted:
                await start_services(self._router, self.config,
                                     self._held_singletons if member is not None else None,
                                     self._on_dropped)
        if self._start_interrupted:  # nothing more starts: the node's stop comes next
            return
        self._define_schedules()
        # services first: a resumed workflow finds the services it sends to
        for host in list(self.hosts.values()):
            if self._start_interrupted:  # (a host's resume is whole: each of its
                return  # workflows resumed, or all left for the next start)
            if host.durable:
                await host.resume(stopping=lambda: self._start_interrupted)
        self._started = True  # (no checkpoint since the last check: not interrupted)

    def interrupt_start(self) -> None:
        """A stop is asked for while the node starts (``garrison run``'s first SIGINT or
        SIGTERM): its start ends soon, the node's stop follows. The services' first start
        pass ends at once (a service waiting to run is left to the stop, nothing else
        starts or restarts), no workflow is resumed and no schedule runs. A wait for a
        PostgreSQL server (a read-only one) as its store opens or it joins its cluster
        ends within a pause of its retries, nothing of it left behind.

        Once the node has started (``open_node``'s block runs) it does nothing: the
        node is stopped by leaving that block."""
        if self._started:
            return
        self._start_interrupted = True
        self._store_wait.cancel()
        manager = self._router.services
        if manager is not None:
            manager.interrupt()

    def _define_schedules(self) -> None:
        """The config's ``workflow.schedule`` entries, given to their hosts' schedulers
        (which sync them into the store when they start)."""
        if self.config is None:
            return  # no config: no config schedule is created, updated or removed
        from ._targets import target_name
        from .hosts.workflow._codec import arguments_json
        from .hosts.workflow._schedules import ScheduleDefinition

        placed: dict[str, str] = {}  # (a schedule moved to another host is said moved)
        for host in self.hosts.values():  # the config schedules each one reconciles
            if host.durable:
                host.scheduler.namespaces = self.config.namespaces
                host.scheduler.placed = placed
        for entry in self.config.schedules():
            host = self._workflow_host(entry.host or None)
            placed[entry.id] = host.name
            fn = self.config.resolve_target(entry.workflow)
            # (in its JSON form, by the workflow's annotations: a dict[int, ...]
            # parameter's keys as their text, as the config's check made it)
            plain = json.loads(arguments_json(fn, entry.input,
                                              f"the input of schedule {entry.id!r}"))
            host.scheduler.definitions.append(ScheduleDefinition.build(
                entry.id, target_name(fn), tuple(plain), cron=entry.cron, every=entry.every,
                timezone=entry.timezone, overlap=entry.overlap,
                catchup_window=entry.catchup_window, source="config"))

    def _check_schedules_kept(self, declared: list[str]) -> None:
        """The node's own ``workflows`` host keeps its store in memory, beside the
        config's ``declared`` workflow hosts (so it is none of them): a config schedule
        that would run there is refused, before any store is opened."""
        assert self.config is not None
        for entry in self.config.schedules():
            if (entry.host or "workflows") == "workflows":
                raise ConfigError(
                    f"schedule {entry.id!r} would run on the node's own workflow host "
                    f"'workflows', whose store is in memory (no store given to the node): "
                    f"lost at the next start, and in none of the config's stores. Give "
                    f"the entry 'host:' (one of {', '.join(declared)}), or the node a "
                    "store (--store, open_node(store=...))")

    async def _add_host(self, host: Any) -> None:
        assert self._nursery is not None
        self.hosts[host.name] = host
        await self._nursery.start(host.run)

    async def _stop(self) -> None:
        """Stop the workflow hosts, last added first (their workflows park), then the
        processes of every process host together, leaves first (a tree of processes
        spans hosts; see ``stop_processes``)."""
        self._router.stopping = True
        if self._router.services is not None:
            await stop_services(self._router, self._router.services)
        hosts = list(self.hosts.values())
        with contextlib.ExitStack() as bounded:
            # a server that stopped answering holds none of what follows past STOP_WAIT
            for store in {id(h.store): h.store for h in hosts if h.durable}.values():
                bounded.enter_context(store.stopping(STOP_WAIT))
            for host in reversed(hosts):
                if host.durable:
                    await host.shutdown()
            await stop_processes([host for host in hosts if not host.durable])
            for host in self.hosts.values():  # (before leaving: what ends told other nodes)
                if host.durable:
                    await host.send_held()
            # a start racing the stop (a web request) is written while the node's lease
            # holds, or refused as on a closed node (not by a store closed under it, nor,
            # once it left its cluster, as a workflow whose lease lapsed)
            self._closing = True
            settled = trio.current_time() + STOP_WAIT  # (one wait for both looks)
            await self._commits_settled(settled)
            for member in self._members:  # others take its workflows at once
                await member.leave(STOP_WAIT)
            if self._router.cluster_names is not None:
                self._router.cluster_names.close()
            if self._router.remote is not None:
                self._router.remote.close()
            await self._commits_settled(settled)  # (what the leave wrote, a late send)
            self._close_workflow_stores()  # (no checkpoint since: none is in flight)
        self._router.closed = True

    async def _commits_settled(self, deadline: float) -> None:
        """Wait until no commit is in flight in the stores the node closes (until the
        trio time ``deadline``; no new start comes, see ``_closing``). A start from a task
        outside the node (a web request) racing its stop asks for its commit while the
        store is open, and that commit may wait a few scheduler passes in a forming
        batch: the store closed under it then, and the start raised the store's
        ``RuntimeError: store ... is closed``. It is written now, and the start returns
        (its workflow ``pending`` for the next node)."""
        stores = list(getattr(self, "_owned_stores", ()))
        with trio.move_on_at(deadline):
            while any(store.committing for store in stores):
                await trio.sleep(SETTLE_PAUSE)

    # ================================================================== workflows
    async def start_workflow(self, target: Any, *args: Any, id: str | None = None,
                             host: str | None = None, priority: int = 0,
                             dedup: str | None = None) -> Pid:
        """Start ``target(*args)`` as a durable workflow; returns its pid.

        Idempotent by ``id``: the same id returns the existing workflow's pid,
        running or finished (its arguments are not looked at again), for as long as
        the store keeps it (a host's ``retention`` deletes ended workflows; then the
        id is free again). Without an id a fresh one is made. ``target`` must be importable by its
        ``module:qualname`` (a lambda or closure raises ``TypeError``).

        On a host with limits (``max_concurrent``, ``rate``) a start over them waits
        ``pending`` in the host's queue, by ``priority`` (an int from -2**63 to
        2**63 - 1, higher first), then start order. While a workflow started with
        ``dedup`` is queued or running (until it ends), a start with the same key
        returns that workflow's pid.

        >>> pid = await node.start_workflow(order_workflow, order, id="order-17")
        >>> await node.workflow("order-17").result()
        """
        if self._closed or self._closing:
            raise RuntimeError(f"cannot start a workflow: {self._closed_text()}")
        self._router.check_run("node.start_workflow()")
        # as spawn: a start in a scope cancelled before the call starts nothing
        await trio.lowlevel.checkpoint_if_cancelled()
        h = self._workflow_host(host)
        try:
            return await h.start(target, args, wid=id, priority=priority, dedup=dedup)
        except RuntimeError as exc:
            # the node closed while this start waited (for another start of its id, say)
            # and its store refused it as closed: nothing of it was written; it fails as
            # a start on the closed node does, not with the store's bare error
            if type(exc) is RuntimeError and self._closed:
                raise RuntimeError(f"cannot start a workflow: {self._closed_text()}") from exc
            raise

    @property
    def _closed(self) -> bool:
        """Stopped for good (``open_node``'s block has ended): the router's, which the
        handles and hosts see."""
        return self._router.closed

    def _closed_text(self) -> str:
        return self._router.closed_text()

    def workflow(self, id: str, host: str | None = None) -> Any:
        """A :class:`~garrison.WorkflowHandle` on the workflow ``id`` (a ``str``, else
        ``TypeError``)."""
        if not isinstance(id, str):
            # (a workflow's pid, from start_workflow, is easily taken for its handle's key)
            given = f" (pass its id: pid.id, {id.id!r})" if isinstance(id, Pid) else ""
            raise TypeError(f"a workflow id must be a string, got {type(id).__name__}: "
                            f"{id!r}{given}")

        return WorkflowHandle(self, self._workflow_host(host), id)

    def workflows(self, status: Any = None, search: dict[str, Any] | None = None,
                  host: str | None = None) -> list[Any]:
        """:class:`~garrison.WorkflowSummary` of every workflow in the store, oldest
        first, filtered by status (one or several) and search attributes."""
        if self._closed:  # (its stores are closed: not their bare "is closed")
            raise RuntimeError(f"cannot list workflows: {self._closed_text()}")
        self._router.check_thread("node.workflows()")
        h = self._workflow_host(host)
        if status is not None and not isinstance(status, str | Iterable):
            raise TypeError(f"node.workflows(status=...) takes a status or several (a list), "
                            f"got {type(status).__name__}: {status!r}")
        wanted = None if status is None else (
            {parse_status(status)} if isinstance(status, str)
            else {parse_status(s) for s in status})
        if search is not None and not isinstance(search, dict):
            raise TypeError(f"node.workflows(search=...) takes a dict of search attributes, "
                            f"got {type(search).__name__}: {search!r}")
        out = []
        # the store knows running/blocked/finished; sleeping and waiting live in memory
        # (and a workflow of this node may be a step ahead of its row): every row not
        # finished is read, of the finished ones only those of a status asked for
        stored = None if wanted is None else \
            (wanted & FINAL_STATUSES) | (set(WorkflowStatus) - FINAL_STATUSES)
        for rec in h.store.list_workflows(stored, search):
            wf = h.active.get(rec.workflow_id)
            now = wf.status if wf is not None else rec.status
            if wanted is None or now in wanted:
                out.append(WorkflowSummary(rec.workflow_id, rec.name, now, rec.search,
                                           rec.memo, rec.created, rec.updated))
        return out

    # ================================================================== schedules
    async def schedule(self, id: str, target: Any, *args: Any, cron: str | None = None,
                       every: Any = None, overlap: str = "skip",
                       catchup_window: Any = "1h", timezone: str = "UTC",
                       host: str | None = None) -> Any:
        """Create (or update) schedule ``id``: start ``target(*args)`` as a workflow on
        every tick of ``cron`` (read in ``timezone``) or ``every`` (a duration of whole
        seconds; ticks at its multiples since the unix epoch, in UTC: ``every`` with a
        ``timezone`` other than ``"UTC"`` raises ``ValueError``). Returns a
        :class:`~garrison.ScheduleHandle`.

        The schedule lives in the host's store: a tick starts workflow ``<id>@<tick>``
        once (a restart never runs a tick twice); a tick missed while no node ran starts
        when the node comes back if it is at most ``catchup_window`` old (only the
        latest missed tick). ``overlap``: what a tick does while the workflow the
        schedule started last is unfinished: ``"skip"``, ``"buffer_one"`` (start it
        when that one ends) or ``"allow_all"``. Calling it again with the same id
        updates the schedule (its next tick is kept unless the timing changed).
        ``args`` are checked as ``start_workflow`` checks them (``TypeError`` naming the
        schedule).

        >>> nightly = await node.schedule("nightly", report, "eu", cron="0 3 * * *",
        ...                               timezone="Europe/Riga")
        """
        from ._schedule_handle import ScheduleHandle
        from ._targets import check_entry, target_name
        from .hosts.workflow._schedules import ScheduleDefinition, check_input

        self._router.check_run("node.schedule()")
        if self._closed:  # (its stores are closed: not their bare "is closed")
            raise RuntimeError(f"cannot make a schedule: {self._closed_text()}")
        h = self._workflow_host(host)
        fn = h.node.resolve_target(target)
        check_entry(self.config, target, durable=True)  # (a function.py: an activity)
        name = target_name(fn)
        definition = ScheduleDefinition.build(
            id, name, args, cron=cron, every=every, timezone=timezone,
            overlap=overlap, catchup_window=catchup_window)
        plain = check_input(definition.schedule_id, fn, name, args)  # as start_workflow
        definition = attrs.evolve(definition, input=tuple(plain))  # (as it is stored)
        await h.scheduler.put(definition)
        return ScheduleHandle(h, definition.schedule_id)

    def schedules(self, host: str | None = None) -> list[Any]:
        """Every schedule (config and API ones) of every workflow host, or of ``host``'s
        store only, by id, as :class:`~garrison.persistence.ScheduleRecord` (its
        ``host``, spec, ``paused``, ``next_tick`` (``None`` while paused), ``last_tick``,
        ``last_workflow``, ``source``)."""
        from ._schedule_handle import as_shown

        if self._closed:
            raise RuntimeError(f"cannot list schedules: {self._closed_text()}")
        self._router.check_thread("node.schedules()")
        if host is not None:
            return [as_shown(r) for r in self._workflow_host(host).store.schedules()]
        every = [as_shown(record) for h in self._workflow_hosts()
                 for record in h.store.schedules()]
        return sorted(every, key=lambda record: (record.schedule_id, record.host))

    def schedule_handle(self, id: str, host: str | None = None) -> Any:
        """A :class:`~garrison.ScheduleHandle` on schedule ``id`` (``pause``, ``resume``,
        ``trigger``, ``delete``, ``info``).

        Without ``host``, on the workflow host whose store holds ``id`` (a node with
        several: a config schedule with ``host:`` or one made with ``node.schedule(...,
        host=)`` is in its host's store); ``ValueError`` if several hold it. One none
        holds is looked for when the handle is used, on the host holding a schedule it
        is the bare name of (whose ``NoSuchSchedule`` suggests that id), else on
        ``workflows``."""
        from ._schedule_handle import ScheduleHandle

        self._router.check_thread("node.schedule_handle()")
        # as node.schedule and garrison schedules check it; one an older garrison
        # stored under an id the rule now refuses stays in reach, to be deleted
        held_schedule_id(id, lambda sid: any(
            h.store.get_schedule(sid) is not None for h in self._workflow_hosts()
            if host is None or h.name == host))
        if host is None:
            return ScheduleHandle(self._schedule_host(id), id)
        return ScheduleHandle(self._workflow_host(host), id)

    def _workflow_hosts(self) -> list[Any]:
        return [h for h in self._router.hosts.values() if h.durable]

    def _schedule_host(self, schedule_id: str) -> Any:
        """The workflow host of ``schedule_handle(schedule_id)`` (see there)."""
        hosts = self._workflow_hosts()
        if len(hosts) < 2:
            return self._workflow_host(None)
        holding = [h for h in hosts if h.store.get_schedule(schedule_id) is not None]
        if len(holding) > 1:
            names = ", ".join(repr(h.name) for h in sorted(holding, key=lambda h: h.name))
            raise ValueError(f"schedule {schedule_id!r} is on several workflow hosts "
                             f"({names}): give host= to say which")
        if not holding:
            holding = [h for h in hosts
                       if schedule_hint(schedule_id, (r.schedule_id for r in h.store.schedules()))]
        return holding[0] if len(holding) == 1 else self._workflow_host(None)

    def _workflow_host(self, name: str | None) -> Any:
        h = self._router.host("workflows" if name is None else name)  # ("" names none)
        if not h.durable:
            raise ValueError(f"host {h.name!r} is not a workflow host")
        return h

    def _store_specs(self) -> tuple[Any, dict[str, Any]]:
        """``store=`` read against the config: the default host's store, and the store of
        each config ``workflow.host`` entry (its ``store:`` unless overridden).

        ``store=`` is a store for the node's ``workflows`` host, or a mapping from host
        names (``"workflows"``, entry ids) to stores. With a config that declares exactly
        one ``workflow.host`` entry, a single ``store=`` is that host's store (so a test
        can point the app at a temporary store)."""
        declared = [e for e in self.config.hosts() if e.kind == "workflow.host"] \
            if self.config is not None else []
        entries = {e.id: e for e in declared}
        spec = self.store
        default: Any = None
        stores: dict[str, Any] = {eid: e.store for eid, e in entries.items()}
        if isinstance(spec, Mapping):
            for name, value in spec.items():
                if name != "workflows" and name not in entries:
                    known = ", ".join(entries) or "none"
                    raise ValueError(f"store={{{name!r}: ...}}: no workflow host {name!r} "
                                     f"(the config's workflow hosts: {known}; 'workflows' "
                                     "names the node's own)")
                if name == "workflows":
                    default = value
                else:
                    stores[name] = value
        elif len(entries) == 1 and spec is not None:
            stores[next(iter(entries))] = spec
        else:
            default = spec
            if spec is not None:  # (one store for several hosts: which was meant?)
                for eid, store in stores.items():
                    if store is None:
                        logging.getLogger("garrison.workflow").warning(
                            "workflow host %s keeps its workflows in memory (lost when the "
                            "node stops): its entry names no store, and store= went to the "
                            "node's own 'workflows' host, as the config declares %d "
                            "workflow hosts; give its entry a store:, or pass store= a "
                            "mapping by host name", eid, len(entries))
        return default, stores

    async def _start_workflow_hosts(self) -> None:
        """Open the stores (``None``: in memory; a path: a durable file; a
        ``postgresql://`` URL; a store object: as is) and add the workflow hosts:
        ``workflows`` and one per ``workflow.host`` entry of the config, named by its
        entry id (``app:orders``). A config with
        exactly one ``workflow.host`` entry makes ``workflows`` that host (an alias), so
        ``host="workflows"`` and ``node.start_workflow(...)`` are durable there."""
        from .hosts.workflow import WorkflowHost
        from .persistence import is_postgres_url, open_store

        default, stores = self._store_specs()
        self._owned_stores: list[Any] = []

        async def opened(spec: Any, synchronous: str = "normal") -> Any:
            if hasattr(spec, "commit"):
                return spec  # a store object: the caller closes it
            if is_postgres_url(spec):  # (it may wait for the server: see _waited_for_store)
                store = await self._waited_for_store(partial(open_store, spec,
                                                             synchronous=synchronous))
            else:
                store = open_store(spec, synchronous=synchronous)
            self._owned_stores.append(store)
            return store

        from .hosts.workflow._queue import QueueLimits

        entries = [e for e in self.config.hosts() if e.kind == "workflow.host"] \
            if self.config is not None else []
        alias = len(entries) == 1 and default is None
        _check_stores_apart([(e.id, stores[e.id]) for e in entries]
                            + ([] if alias else [("workflows", default)]))
        if entries and not alias and (default is None or (
                hasattr(default, "commit") and getattr(default, "path", "") is None)):
            self._check_schedules_kept(sorted(e.id for e in entries))
        for entry in entries:
            limits = QueueLimits(entry.max_concurrent, entry.cluster_max_concurrent,
                                 entry.rate)
            if alias and self._limits is not None:
                # open_node's limits are the ``workflows`` host's: each one given replaces
                # the entry's, and the entry's others stay
                given = self._limits
                limits = QueueLimits(
                    _given_or(given.max_concurrent, entry.max_concurrent),
                    _given_or(given.cluster_max_concurrent, entry.cluster_max_concurrent),
                    _given_or(given.rate, entry.rate))
            retention = entry.retention
            if alias and self._retention is not None:
                retention = self._retention  # (as its limits)
            host = WorkflowHost(self._router, entry.id,
                                await opened(stores[entry.id], entry.synchronous), limits,
                                retention)
            await self._add_workflow_host(host)
        if alias:
            self._router.aliases["workflows"] = entries[0].id
        else:
            await self._add_workflow_host(WorkflowHost(self._router, "workflows",
                                                       await opened(default), self._limits,
                                                       self._retention))

    async def _add_workflow_host(self, host: Any) -> None:
        """Add a workflow host; on a PostgreSQL store the node joins that store's
        cluster first (so the host only ever sees its own workflows)."""
        store = host.store
        if hasattr(store, "set_fence") and store.owner:
            from .cluster import ClusterMember

            member = ClusterMember(host, self.name, self.lease)
            first = not self._members
            if first:  # plain pids name this node; other nodes reach them through it
                processes = self.hosts["processes"]
                processes.suffix = "@" + self.name
                member.info = {"prefix": processes.prefix}
            # as the store opened; a statement the server refuses for now tried again,
            # any refusal a StoreError
            await self._waited_for_store(partial(store.retried, member.join))
            host.ownership = member
            member.on_drain = self.drain  # a drain asked from outside drains every member
            member.on_lost = lambda _lost, host=host: host.scheduler.nodes_lost()
            self._members.append(member)
            if first:
                from .cluster import ClusterNames, Remote

                remote = Remote(self._router, member)
                remote.live = set(member.live_at_join)
                self._router.remote = remote
                self._router.cluster_names = ClusterNames(member)

                def on_lapsed(router: Any = self._router, remote: Any = remote) -> None:
                    router.drop_cluster_names()  # (others may take them now)
                    remote.lapsed()  # (the other nodes dropped its processes' watches)

                member.on_lapsed = on_lapsed
                member.on_remote = remote.receive
                member.on_gone = remote.node_gone
                member.on_live = remote.set_live
            assert self._nursery is not None
            await self._nursery.start(member.run)
        elif store.owner and not self._start_interrupted:
            # before anything of the start writes there (another program's open write
            # transaction would hold a write of it, which no signal interrupts)
            await store.wait_writable(lambda: self._start_interrupted)
        await self._add_host(host)

    async def _waited_for_store(self, fn: Callable[[], T]) -> T:
        """``fn()``: a PostgreSQL store's open or the node's join of its cluster, which
        wait out a server that refuses them for now (a read-only one) for the store's
        ``retry_for``. In a worker thread (in this one under a test's virtual time, which
        would jump meanwhile: ``run_blocking``), so that a cancel of the start, or
        :meth:`interrupt_start` (``garrison run``'s first SIGINT/SIGTERM), ends the wait
        within a pause of its retries (``PostgresStore.retried``) rather than once it
        gave up; :class:`_StartInterrupted` then."""
        from .persistence import run_blocking

        with trio.CancelScope() as self._store_wait:
            if not self._start_interrupted:
                # (a cancel already there: nothing opens, whose store would be lost
                # at the checkpoint after fn under virtual time)
                await trio.lowlevel.checkpoint_if_cancelled()
                return await run_blocking(fn)
        raise _StartInterrupted

    @property
    def stopped(self) -> bool:
        """True once the node began to stop (its ``async with`` block ended, or
        ``garrison run`` is stopping it): its stores close, so what reads them (a
        console or a metrics server of your own nursery) answers ``503`` from then on."""
        return self._router.stopping

    # ================================================================== cluster
    @property
    def clustered(self) -> bool:
        """True if this node is a member of a cluster (a PostgreSQL store)."""
        return bool(self._members)

    def cluster(self) -> list[Any]:
        """The live nodes of this node's cluster (:class:`~garrison.cluster.ClusterNode`:
        ``.name``, ``.started``, ``.heartbeat``, ``.workflows``, ``.status``), by name.
        On a SQLite store (one node per store) just this node."""
        from .cluster import ClusterNode

        self._router.check_thread("node.cluster()")
        host = self._workflow_host(None)
        member = host.ownership
        if member is not None:
            nodes: list[Any] = member.nodes()
            return nodes
        now = time.time()
        return [ClusterNode(self.name, self._started_at, now, host.live_count())]

    def _on_singletons(self, held: set[str], elsewhere: dict[str, str] | None,
                       within: float | None) -> trio.Event | None:
        self._held_singletons = set(held)
        services = self._router.services
        return None if services is None else services.set_singletons(held, elsewhere, within)

    def _on_dropped(self, service_id: str) -> None:
        """The singleton ``service_id`` gave up here: this node lets it go."""
        self._held_singletons.discard(service_id)
        if self._members:
            self._members[0].drop_singleton(service_id)

    def drain(self) -> None:
        """Hand this node's workflows to the other nodes of its cluster at their next
        durable point and take no new work (what SIGTERM does to a clustered
        ``garrison run``); :meth:`drained` waits until none is left. A drain asked from
        outside (``garrison nodes drain NAME``, another node) calls this too."""
        self._router.check_thread("node.drain()")
        if self._draining:
            return
        self._draining = True
        for member in self._members:
            if not member.draining:
                member.request_drain()

    async def drained(self) -> None:
        """Wait until a draining node has handed over all its workflows (at once off a
        cluster)."""
        self._router.check_run("node.drained()")
        for member in self._members:
            await member.drained.wait()
        await trio.lowlevel.checkpoint()

    def _abandon_start(self) -> None:
        """``_start`` failed: leave the cluster first (a membership's thread uses its
        store, and would fail on a closed one), then close what opened."""
        for member in self._members:
            member.leave_now()
        if self._router.cluster_names is not None:
            self._router.cluster_names.close()
        self._close_workflow_stores()

    def _close_workflow_stores(self) -> None:
        for store in getattr(self, "_owned_stores", ()):
            store.close()


class _StartInterrupted(Exception):
    """:meth:`Node.interrupt_start` ended a wait of the start for a PostgreSQL server:
    the start ends where it is (the node's stop comes next)."""


async def store_gave_up(node: Node) -> BaseException:
    """Wait until a clustered ``node`` left its cluster for good because its store
    gave up writing (``node.stats()["cluster"][host]["left"]``); the store's error.
    ``garrison run`` then stops the node and exits 1, so that whatever runs it (systemd,
    Kubernetes) starts it again and it joins anew. Off a cluster it waits for ever."""
    async with trio.open_nursery() as nursery:
        failures: list[BaseException] = []

        async def watch(member: Any) -> None:
            await member.left.wait()
            failures.append(member.failure)
            nursery.cancel_scope.cancel()

        for member in node._members:
            nursery.start_soon(watch, member)
        if not node._members:
            await trio.sleep_forever()
    return failures[0]


def released_to(node: Node) -> list[str] | None:
    """The names of the other live nodes of ``node``'s cluster (of each clustered
    workflow host's) that claim workflows (not draining themselves), by name, read as
    it released its workflows at the end of its drain: those that take them. ``None``
    if they are not known (read before, or it could not read them: its lease lapsed as
    it drained, its store out of reach)."""
    names: set[str] = set()
    for member in node._members:
        if member.released_to is None:
            return None
        names.update(member.released_to)
    return sorted(names)


def service_manager(node: Node) -> ServiceManager | None:
    """The manager of ``node``'s config services (its ``process.service`` entries), or
    ``None`` if it runs none: what ``garrison run`` asks why a service is down, and the
    metrics read their restarts and statuses from."""
    return node._router.services


def workflow_host(node: Node, name: str | None) -> Any:
    """``node``'s workflow host ``name`` (``None``: the one ``workflows`` names, a
    config's only workflow host if it declares one); ``ValueError`` if ``node`` has no
    host ``name``, or it is not a workflow host."""
    return node._workflow_host(name)


def _given_or(given: T | None, otherwise: T | None) -> T | None:
    """``given`` (an ``open_node`` argument) unless it was not given (``None``)."""
    return otherwise if given is None else given


@contextlib.asynccontextmanager
async def open_node(config: Any = None, store: Any = None, *,
                    inbox_warning: int | None = INBOX_WARNING,
                    max_concurrent: int | None = None,
                    cluster_max_concurrent: int | None = None,
                    rate: str | None = None, name: str | None = None,
                    lease: Any = "10s", retention: Any = None) -> AsyncIterator[Node]:
    """Run a node inside trio for the duration of the ``async with`` block.

    Leaving the block (normally, by an exception or by Ctrl-C) stops every
    process, children before parents. An inbox never limits what is queued;
    when one holds ``inbox_warning`` items a warning is logged (once, until it
    drains below half); ``0`` or ``None`` turns that off.

    ``max_concurrent``, ``cluster_max_concurrent`` and ``rate`` (``"100/1m"``) are the
    queue limits of the node's ``workflows`` host, as on a ``workflow.host`` entry
    (when a config's only workflow host is ``workflows``, each one given replaces its
    entry's: the limits not given are the entry's).
    ``retention`` (``"30d"``, seconds, a ``timedelta``) is that host's retention, as a
    ``workflow.host`` entry's: its completed, failed and cancelled workflows are
    deleted from the store that long after they ended (``None``: kept for ever).

    On a PostgreSQL store the node joins the store's cluster (other nodes may run on
    the same store): ``name`` names it (default ``<hostname>-<pid>``; a live node of
    the same name refuses it with ``StoreLocked``), ``lease`` is how long it stays a
    member without renewing (from 1 s to 1 day; renewed every lease/3; its workflows
    move to the other nodes within two leases after it stops renewing).

    >>> async with garrison.open_node() as node:
    ...     pid = await node.spawn(worker)
    """
    if not trio.lowlevel.in_trio_run():  # (asyncio's: trio fails deep inside otherwise)
        raise not_in_trio("garrison.open_node()")
    node = new_node(config=config, store=store, inbox_warning=inbox_warning,
                    max_concurrent=max_concurrent, cluster_max_concurrent=cluster_max_concurrent,
                    rate=rate, name=name, lease=lease, retention=retention)
    async with running_node(node):
        yield node


def new_node(config: Any = None, store: Any = None, **options: Any) -> Node:
    """The :class:`Node` :func:`open_node` runs (``config`` loaded if it is a path)."""
    node = Node(config=_as_config(config, store), store=store, **options)
    enable_if_configured()  # spans, if the application set an OpenTelemetry provider
    return node


@contextlib.asynccontextmanager
async def running_node(node: Node) -> AsyncIterator[Node]:
    """:func:`open_node`'s body: run ``node`` for the duration of the ``async with``
    block (``garrison run`` holds the node before it starts, to interrupt its start)."""
    node._router.trio_token = trio.lowlevel.current_trio_token()
    node._router.thread = threading.get_ident()
    token = _current_node.set(node)
    # (says when code in this thread blocks it; its thread is joined as the node closes)
    unwatch = watch(node._router.trio_token, node._router.thread, node.name)
    try:
        async with trio.open_nursery() as nursery:
            try:
                await node._start(nursery)
            except BaseException:
                node._abandon_start()
                raise
            try:
                yield node
            finally:
                with trio.CancelScope(shield=True):
                    await node._stop()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The node's own tasks never fail; what the nursery wraps is the body's
        # exception (or Ctrl-C): give it back to the caller unwrapped.
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        for leaf in leaves:  # Ctrl-C (or one a process raised): what stopped the node,
            if isinstance(leaf, KeyboardInterrupt):  # whatever failed as it stopped
                raise leaf from None
        raise
    finally:
        unwatch()
        try:
            _current_node.reset(token)
        except ValueError:  # closed from another context (an abandoned generator)
            pass


def _as_config(config: Any, store: Any) -> Any:
    """A config path (or several) is loaded; a loaded ``Config`` is used as is. Without a
    ``store`` for the node's own ``workflows`` host, a config schedule that would run
    there (in memory) is a problem of its entry (see ``_check_schedules_kept``)."""
    if config is None or hasattr(config, "resolve_target"):
        return config
    from .config._loader import load_for_node

    node_store = (store.get("workflows") if isinstance(store, Mapping) else store) is not None
    expects = ("config= expects None, a config file path, a list of paths or a Config "
               "(garrison.config.load_config(path))")
    if isinstance(config, list | tuple):
        for one in config:
            if not isinstance(one, (str, os.PathLike)):
                raise TypeError(f"{expects}, got a list holding {type(one).__name__}")
        return load_for_node(config, node_store=node_store)
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"{expects}, got {type(config).__name__}")
    return load_for_node([config], node_store=node_store)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


#: the root functions :func:`run` ran in this process, oldest first (``garrison run
#: script.py`` tells from it that importing the script ran its target already)
ran: list[Callable[..., Any]] = []


def run(main: Callable[..., Any], *args: Any, config: Any = None, store: Any = None,
        clock: trio.abc.Clock | None = None, inbox_warning: int | None = INBOX_WARNING,
        max_concurrent: int | None = None, cluster_max_concurrent: int | None = None,
        rate: str | None = None, name: str | None = None, lease: Any = "10s",
        retention: Any = None) -> Any:
    """Run ``main(*args)`` as the root process of a new node, like ``trio.run``.

    Returns what ``main`` returns; a failure raises :class:`ProcessError`.
    Ctrl-C stops every process, children first, and raises ``KeyboardInterrupt``.
    ``max_concurrent``, ``cluster_max_concurrent`` and ``rate``: the ``workflows``
    host's queue limits, ``retention`` its retention of ended workflows; ``name`` and
    ``lease``: the node's in a cluster (see :func:`open_node`).

    >>> garrison.run(main, "hello")
    """
    if clock is not None and not isinstance(clock, trio.abc.Clock):
        raise TypeError(f"garrison.run(clock=...): a trio.abc.Clock (such as "
                        f"trio.testing.MockClock) or None, got {type(clock).__name__}: "
                        f"{clock!r}")
    try:  # (trio's own error, "Attempted to call run() from inside a run()", says less)
        trio.lowlevel.current_root_task()
    except RuntimeError:
        pass  # in no trio run (a thread of one has none): as trio.run
    else:
        raise RuntimeError(
            "garrison.run() is called inside a trio run: it starts an event loop of its "
            "own, as trio.run does; inside trio code, open a node in it: `async with "
            "garrison.open_node() as node:`, then `await node.wait(await node.spawn(main))`")
    ran.append(main)
    # (the garrison command importing a script that calls run(): Ctrl-C is this run's
    # KeyboardInterrupt again, as in any program; see _cli_signals)
    _cli_signals.restore()

    async def root() -> Any:
        async with open_node(config=config, store=store, inbox_warning=inbox_warning,
                             max_concurrent=max_concurrent,
                             cluster_max_concurrent=cluster_max_concurrent, rate=rate,
                             name=name, lease=lease, retention=retention) as node:
            pid = await node.spawn(main, *args)
            return await node.wait(pid)

    return trio.run(root, clock=clock, restrict_keyboard_interrupt_to_checkpoints=True)


def _check_stores_apart(specs: list[tuple[str, Any]]) -> None:
    """``ValueError`` naming both hosts if two workflow hosts are given the same store
    (a file path, a URL, or one store object, also beside the path it opened): each
    needs one of its own (its workflows, queue and schedules are the store's; two hosts
    on one store object read each other's workflows as their own), and a second open
    of a file would be refused as if another node held it."""
    from .config._loader import store_key  # (the config's own same-store rule)

    seen: dict[Any, str] = {}
    for name, spec in specs:
        if isinstance(spec, (str, os.PathLike)):
            text = os.fspath(spec)
            key = store_key(text)
        elif spec is None:
            continue  # in memory: one each
        else:  # a store object: by where it is, or (in memory) by itself
            path = getattr(spec, "path", None)
            text = path if isinstance(path, str) else f"{type(spec).__name__} (in memory)"
            key = store_key(path) if isinstance(path, str) else ("object", id(spec))
        if key in seen:
            raise ValueError(f"workflow hosts {seen[key]!r} and {name!r} both use the store "
                             f"{text}: each workflow host needs a store of its own")
        seen[key] = name
