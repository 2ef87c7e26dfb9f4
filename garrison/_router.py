"""The node's inside: routing between hosts, the name registry, statistics, and the
cross-host operations (spawn, send, links, monitors, cancel, terminate) that hosts and
services ask for.

:class:`Router` implements :class:`~garrison.hosts._kernel.NodeContext`: it is what a
host or the service manager holds as its ``node``. The public :class:`~garrison.Node`
owns one and adds the user-facing API and the node's lifecycle.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import types
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from . import _observe
from ._errors import NoSuchProcess, ProcessError, closest_id
from ._targets import check_entry, check_target
from .actors._mailbox import timeout_seconds
from .actors._values import ErrorInfo, Event, Message, Pid
from .hosts import _kernel
from .hosts._kernel import KILL_WARNING, Caller, NodeContext, noproc
from .hosts.workflow._ids import check_key_size, check_text
from .supervision._supervisor import Supervisor
from .supervision._supervisor import spawned as supervisor_spawned

if TYPE_CHECKING:
    from ._node import Node
    from .supervision._services import ServiceManager

__all__ = ["EXIT_MEMORY", "KILL_WARNING", "Router", "not_in_trio"]

log = logging.getLogger("garrison.process")

#: how many finished processes' outcomes ``Node.wait`` can still report
EXIT_MEMORY = 10_000

#: where README shows how to reach a node from asyncio or from another thread
BRIDGE_HINT = "see README, 'From an asyncio or a threaded app'"


#: how asyncio code reaches a node (``trio.from_thread.run`` made in an async handler
#: would hold the asyncio loop, every other request with it, until it returns)
ASYNCIO_BRIDGE = "`await runner.call(fn)` (NodeThread of examples/asyncio_app.py)"


def not_in_trio(doing: str) -> RuntimeError:
    """The error of ``doing`` (``"node.start_workflow()"``) called outside any trio run:
    from asyncio, say, where trio's own calls fail deep inside with an unrelated error."""
    return RuntimeError(
        f"{doing} must be called inside a trio run: garrison runs on trio, and this call "
        f"is in none (from asyncio? run the node in a thread of its own and await "
        f"runner.call(fn) (NodeThread of examples/asyncio_app.py), fn an async function "
        f"that makes this call; from a thread of your own (not the asyncio loop's: it "
        f"would hold the loop until fn returns), trio.from_thread.run(fn, "
        f"trio_token=node.trio_token); {BRIDGE_HINT})")


def _on_asyncio_loop() -> bool:
    """True if an asyncio event loop runs in the calling thread (asyncio not imported:
    none does)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Router:
    """Routing, registry and statistics of one node (see the module docs)."""

    def __init__(self, node: Node, config: Any, inbox_warning: int) -> None:
        #: the public node this router belongs to (``garrison.current_node()``)
        self.public = node
        self.config = config
        self.inbox_warning = inbox_warning
        self.hosts: dict[str, Any] = {}
        #: other names of hosts (``workflows`` for a config's only workflow host)
        self.aliases: dict[str, str] = {}
        self.registry: dict[str, Pid] = {}
        self.stopping = False
        self.stats_messages = 0
        self.stats_dead_letters = 0
        self.stats_spawned = 0
        #: the call deadlines of the node's run, once a call looked them up (see
        #: ``NodeContext.call_timeouts``)
        self.call_timeouts: Any = None
        self.shutdown_reason = ErrorInfo("Shutdown", "the node is shutting down")
        #: the service manager of the config's services, once started
        self.services: ServiceManager | None = None
        #: plain processes of the other nodes of a cluster (``cluster/_remote.py``)
        self.remote: Any = None
        #: the cluster's names (``process.register(name, scope="cluster")``)
        self.cluster_names: Any = None
        self._exits: OrderedDict[Pid, tuple[Any, ErrorInfo | None]] = OrderedDict()
        self._cluster_held: dict[str, Pid] = {}
        # a store keeps every message id for ever, in one index over all its workflows,
        # and drops a message whose id it holds as a duplicate; this node's counter starts
        # at 1 in each session: 96 random bits, so that no two sessions of a store's life
        # (a client node per web request, ...) share a prefix (32 bits did within some
        # 77,000 sessions, one time in two, losing the later one's signals in silence)
        self._msg_prefix = os.urandom(12).hex() + "-"
        self._msg_seq = itertools.count(1)
        #: the trio run the node runs in (set as it opens): its async API is called from
        #: there only (the public ``Node.trio_token``)
        self.trio_token: trio.lowlevel.TrioToken | None = None
        #: the ident of that run's thread (set as it opens): its sync API, which reads
        #: the live tables, is called from there only (see :meth:`check_thread`)
        self.thread: int | None = None
        #: the node stopped for good (``open_node``'s block has ended)
        self.closed = False

    def check_run(self, doing: str) -> None:
        """``RuntimeError`` unless the caller runs in this node's trio run: called from
        another run (another thread's ``trio.run``) the node's tasks and events would be
        used by a scheduler that does not own them, and fail (a bare ``AssertionError``)
        halfway, a workflow started or a message committed; outside any trio run
        (asyncio) trio's own calls fail deep inside. Called at the entry of an async
        method, before it acts."""
        try:
            here = trio.lowlevel.current_trio_token()
        except RuntimeError:  # (no trio run at all)
            raise not_in_trio(doing) from None
        if here is not self.trio_token:
            raise self.other_run(doing)

    def check_thread(self, doing: str) -> None:
        """``RuntimeError`` unless the caller runs in this node's thread (or the node is
        not open, or closed: nothing then changes its tables). The node's tables (its
        processes, inboxes, workflows in memory) are dicts its own thread changes as it
        runs, with no lock: walked from another thread (asyncio's, a threadpool's) they
        change under the walk, and now and then it fails (``dictionary changed size
        during iteration``) or reads half a change. Called at the entry of a sync method
        that reads them, before it reads: one compare."""
        if threading.get_ident() != self.thread and self.thread is not None \
                and not self.closed:
            raise self.other_thread(doing)

    def closed_text(self) -> str:
        """What a call on the node says once it has closed (:attr:`closed`)."""
        return (f"node {self.public.name!r} is closed (its `async with "
                "garrison.open_node(...)` block has ended)")

    def other_thread(self, doing: str) -> RuntimeError:
        """The error of ``doing`` called from a thread that is not the node's."""
        how = (f"from asyncio, make it inside fn of {ASYNCIO_BRIDGE}" if _on_asyncio_loop()
               else "from a thread, call trio.from_thread.run_sync(fn, "
                    "trio_token=node.trio_token), fn a function that makes this call")
        return RuntimeError(
            f"{doing}: node {self.public.name!r} runs in another thread (its trio run's), "
            f"and its tables are read from that thread only (from another, they change "
            f"under the read: 'dictionary changed size during iteration', now and then): "
            f"{how}; {BRIDGE_HINT}")

    def other_run(self, doing: str) -> RuntimeError:
        """The error of ``doing`` called from a trio run that is not the node's."""
        return RuntimeError(
            f"{doing}: node {self.public.name!r} runs in another trio run (another "
            f"thread), and is used from that run only: from a thread, call "
            f"trio.from_thread.run(fn, trio_token=node.trio_token) (not trio.run(fn)), fn "
            f"an async function that makes this call; {BRIDGE_HINT}")

    # ------------------------------------------------------------ names and hosts
    def host(self, name: str) -> Any:
        if type(name) is not str:
            raise TypeError(f"a host is named by a str, got {type(name).__name__}: {name!r}")
        try:
            return self.hosts[self.aliases.get(name, name)]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            # (a config's host is its entry id: 'pool' of namespace j is 'j:pool')
            meant = closest_id(name, self.hosts) if name else None
            hint = f"; did you mean {meant!r}?" if meant is not None else ""
            raise ValueError(f"no host named {name!r} on this node (hosts: {known}{hint})"
                             ) from None

    def resolve(self, to: Pid | str) -> Pid:
        """``to`` as a pid: a pid stays itself; a string with a ``/`` is a pid's text
        form (``str(pid)``, e.g. ``"workflows/order-17"``); any other string is a
        registered name (or a service's entry id)."""
        if type(to) is Pid:
            return to if not self.aliases else self._canonical(to)
        if isinstance(to, str):
            if "/" in to:
                parsed = Pid.parse(to)
                return parsed if not self.aliases else self._canonical(parsed)
            pid = self.lookup(to)
            if pid is None:
                raise NoSuchProcess(to, None if self.services is None
                                    else self.services.why_down(to))
            return pid
        if isinstance(to, Pid):
            return to
        # (a coroutine is a call not awaited: ``child = process.spawn(...)``)
        missed = (" (did you forget `await` on the call that made it?)"
                  if isinstance(to, types.CoroutineType) else "")
        raise TypeError(f"expected a Pid, its text form or a registered name, got "
                        f"{type(to).__name__}: {to!r}{missed}")

    def _canonical(self, pid: Pid) -> Pid:
        """``pid`` with its host's real name (``workflows/x`` -> ``app:workflows/x``)."""
        real = self.aliases.get(pid.host)
        return pid if real is None else Pid(real, pid.id)

    def lookup(self, name: str) -> Pid | None:
        """The pid registered under ``name`` (or running a service of that entry id);
        in a cluster, then the cluster's names (``StoreError`` if the store does not
        answer: ``cluster/_names.py``)."""
        if type(name) is not str:
            if not isinstance(name, str):
                raise TypeError(f"lookup() takes a registered name (a str), got "
                                f"{type(name).__name__}: {name!r}")
            name = str.__str__(name)
        pid = self.registry.get(name)
        if pid is None and self.services is not None:
            pid = self.services.running_pid(name)
        if pid is None and self.cluster_names is not None and _storable(name):
            found = self.cluster_names.lookup_name(name)
            if found is not None:
                pid = self._canonical(Pid.parse(found))
        return pid

    def resolve_target(self, target: Any) -> Any:
        """A spawn target: a callable stays itself, a string is a config entry id."""
        if isinstance(target, str):
            if self.config is None:
                module, _, qualname = target.rpartition(":")
                example = (f" (from {module} import {qualname})"
                           if module and qualname.isidentifier() else "")
                raise ValueError(f"unknown target {target!r}: no config is loaded, so entry ids "
                                 f"cannot be resolved; pass the async function itself"
                                 f"{example}, or load a config that declares {target!r} "
                                 "(open_node(config=...) / garrison.run(..., config=...))")
            return self.config.resolve_target(target)
        return target

    def plain_target(self, target: Any) -> Any:
        """:meth:`resolve_target` for a process host: a ``workflow.py`` entry is refused
        (its function, run as a plain process, fails at its first workflow call), and a
        ``function.py`` one (an activity) is (see ``check_entry``)."""
        fn = self.resolve_target(target)
        check_entry(self.config, target, durable=False)
        return fn

    def register(self, name: str, pid: Pid, scope: str = "node") -> None:
        if not isinstance(name, str):  # (as lookup's)
            raise TypeError(f"register() takes a registered name (a str), got "
                            f"{type(name).__name__}: {name!r}")
        if not name:
            raise ValueError(f"a registered name must be a non-empty string, got {name!r}")
        if "/" in name:
            raise ValueError(f"cannot register {name!r}: a registered name must not contain "
                             "'/' (a string with '/' is read as a pid, like 'workflows/order-17')")
        if not name.isprintable() or name != name.strip():
            raise ValueError(f"cannot register {name!r}: a registered name is printable text "
                             "(no newline, tab or other control character) without leading "
                             "or trailing spaces")
        holder = self.registry.get(name)
        if holder is not None and holder != pid and self.hosts[holder.host].is_alive(holder):
            raise ValueError(f"name {name!r} is already registered by {holder}")
        services = self.services
        if services is not None and name in services.by_id:
            # a service's entry id names its running process (lookup, send, call): a
            # name registered by another process would take its traffic
            running = services.running_pid(name)
            if running != pid:
                raise ValueError(
                    f"name {name!r} is the entry id of a service, held by its running "
                    f"process {running}" if running is not None else
                    f"name {name!r} is the entry id of a service (not running now): only "
                    f"its process names it")
        if scope == "cluster" and self.cluster_names is not None:
            check_text(name, "a cluster name")  # (kept in the store, as a key of its
            check_key_size(name, "a cluster name")  # index)
            other = self.cluster_names.register_name(name, str(pid))
            if other is not None:
                raise ValueError(f"name {name!r} is already registered in the cluster by "
                                 f"{other}")
            self._cluster_held[name] = pid
        self.registry[name] = pid

    def unregister(self, name: str, pid: Pid) -> None:
        """Release ``name`` if ``pid`` holds it (a process's exit calls this: it never
        raises, and a cluster name's release never waits on a store out of reach)."""
        if self.registry.get(name) == pid:
            del self.registry[name]
        if self._cluster_held.get(name) == pid:
            del self._cluster_held[name]
            self.cluster_names.unregister_name(name, str(pid))

    def drop_cluster_names(self) -> None:
        """This node's lease lapsed: the cluster names its processes held count no more
        (their rows name an incarnation that is not live; another node may take them),
        so they are this node's no longer either. The processes keep running."""
        held, self._cluster_held = self._cluster_held, {}
        for name, pid in held.items():
            if self.registry.get(name) == pid:
                del self.registry[name]
        if held:
            log.warning("this node's lease lapsed: its processes lost their cluster names "
                        "(%s)", ", ".join(sorted(held)))

    # ------------------------------------------------------------ processes
    async def spawn_process(self, target: Any, args: tuple[Any, ...], *, host: str,
                            parent: Pid | None, link: Pid | None, monitor: Pid | None,
                            label: str | None = None, id: str | None = None,
                            supervised: bool = False) -> Pid:
        if self.stopping:  # (its error the stop's reason: a process refused so ends
            # with the stop, as if cancelled by it, not as a failure of its own)
            raise ProcessError("cannot spawn: the node is shutting down",
                               error=self.shutdown_reason)
        h = self.host(host)
        if h.durable:
            pid: Pid = await h.spawn_process(target, args, parent=parent, link=link,
                                             monitor=monitor, wid=id,
                                             supervisor=parent if supervised else None)
        elif id is not None:
            raise TypeError(f"spawn(..., id={id!r}): host {host!r} is a process host, whose "
                            "processes get fresh pids; id= names a workflow on a workflow "
                            "host (host='workflows' or a workflow.host entry)")
        else:  # spawn_plain's body, written out: a process's spawns come this way
            fn = self.plain_target(target)
            checked = check_target(fn)
            pid = h.spawn(fn, args, parent=parent, link=link, monitor=monitor,
                          label=label or checked)
            if isinstance(fn, Supervisor):  # (of two spawns of one, the first runs it)
                supervisor_spawned(fn, pid)
            self.stats_spawned += 1  # (plain processes: a workflow's start is the
            # workflow host's to count, whatever started it)
        return pid

    def plain_gone(self, pid: Pid) -> bool:
        """True if the plain process ``pid`` is known to have ended: one of this node's
        process hosts that is not alive (an earlier run's too), or one of another node of
        the cluster that runs a newer incarnation since. ``False`` for a live one, a
        workflow, or one whose node may still run it (a node marked lost may join
        again, its processes alive)."""
        remote = self.remote
        if remote is not None and remote.node_of(pid) is not None:
            return bool(remote.known_gone(pid))
        host = self.hosts.get(self.aliases.get(pid.host, pid.host))
        if host is None or host.durable:
            return False
        return not host.is_alive(pid)

    def plain_elsewhere(self, pid: Pid) -> bool:
        """True if ``pid`` is a plain process of another node of the cluster."""
        return self.remote is not None and self.remote.node_of(pid) is not None

    def plain_on_live_node(self, pid: Pid) -> bool:
        """True if ``pid`` is a plain process of another node of the cluster, a node the
        membership's last view has live: whether it runs, that node alone can tell."""
        remote = self.remote
        return remote is not None and remote.node_of(pid) is not None \
            and bool(remote.node_live(pid))

    def nodes_renewed(self) -> None:
        """A node of the cluster runs a newer incarnation (the membership's view): the
        workflow hosts check their children of its old one's supervisors."""
        for host in list(self.hosts.values()):
            if host.durable and getattr(host, "supervised_elsewhere", None):
                host.check_supervisors()

    def spawn_plain(self, h: Any, target: Any, args: tuple[Any, ...], parent: Pid | None,
                    link: Pid | None = None, monitor: Pid | None = None,
                    label: str | None = None) -> Pid:
        """``spawn_process`` on the process host ``h`` (the caller checked that the node
        is not stopping): synchronous, as a process host starts a task at once."""
        fn = self.plain_target(target) if isinstance(target, str) else target
        checked = check_target(fn)
        pid: Pid = h.spawn(fn, args, parent=parent, link=link, monitor=monitor,
                           label=label or checked)
        if isinstance(fn, Supervisor):  # (of two spawns of one, the first runs it)
            supervisor_spawned(fn, pid)
        self.stats_spawned += 1
        return pid

    def message_id(self) -> str:
        return self._msg_prefix + str(next(self._msg_seq))

    async def send_message(self, sender: Pid | None, to: Pid | str, topic: str,
                           payload: Any) -> None:
        pid = to if type(to) is Pid and not self.aliases else self.resolve(to)
        remote = self.remote
        if remote is not None and remote.node_of(pid) is not None:
            msg = Message(topic, payload, sender, self.message_id())
            sent = remote.send(sender, pid, msg)
            if sent:
                self.stats_messages += 1
            elif sent is not None:  # (None: held until its node is known, counted then)
                self.stats_dead_letters += 1
            return
        host = self.hosts.get(pid.host)
        if host is None:
            self.stats_dead_letters += 1
            return
        msg = Message(topic, payload, sender, self._msg_prefix + str(next(self._msg_seq)), None,
                      _observe.carrier() if _observe.tracing else None)  # positional: hot path
        if host.durable:
            delivered = await host.deliver_durable(pid, msg)
        else:
            delivered = host.deliver(pid, msg)
        if delivered:
            self.stats_messages += 1
        else:
            self.stats_dead_letters += 1

    def replier(self, pid: Pid) -> Caller | None:
        """Where the reply to a call made by ``pid`` goes: :meth:`caller_of`, or, for a
        workflow another node of the cluster runs, that node."""
        caller = self.caller_of(pid)
        if caller is None and self.remote is not None:
            caller = self.remote.replier(pid)
        return caller

    def caller_of(self, pid: Pid) -> Caller | None:
        remote = self.remote
        if remote is not None and remote.node_of(pid) is not None:
            peer: Caller | None = remote.callee(pid)  # (None: its node is gone)
            return peer
        host = self.hosts.get(pid.host)
        if host is None:
            return None
        caller: Caller | None = host.local_caller(pid)
        return caller

    def record_exit(self, pid: Pid, result: Any, error: ErrorInfo | None) -> None:
        exits = self._exits
        exits[pid] = (result, error)
        if len(exits) > EXIT_MEMORY:
            exits.popitem(last=False)

    def exit_of(self, pid: Pid) -> tuple[Any, ErrorInfo | None]:
        """``(result, error)`` of a process that ended recently; ``ProcessError`` if
        unknown."""
        try:
            return self._exits[pid]
        except KeyError:
            raise ProcessError(f"process {pid} is unknown: {noproc(pid)}", pid=pid,
                               error=noproc(pid)) from None

    def end_remembered(self, pid: Pid) -> tuple[Any, ErrorInfo | None] | None:
        """``(result, error)`` of ``pid``, a plain process of this node that ended, if
        the node remembers its end (its last exits, :meth:`exit_of`; not one of an
        earlier run of the node), else ``None``. A workflow whose failure made the
        process forget it hears of its end this way as a retry replays its monitor."""
        return self._exits.get(pid)

    def failure_remembered(self, pid: Pid) -> ErrorInfo | None:
        """The error ``pid``, a plain process of this node that ended, failed with, if
        the node remembers its end (its last exits, :meth:`exit_of`; not one of an
        earlier run of the node); ``None`` for a return or an end by the node's close.
        A recovered workflow linked to it hears of it this way: its failure went to the
        node that ran the workflow when it came, lost since."""
        try:
            _result, error = self.exit_of(pid)
        except ProcessError:
            return None
        return None if error is self.shutdown_reason else error

    # ------------------------------------------------------------ links and monitors
    def deliver_event(self, pid: Pid, event: Event) -> None:
        if self.remote is not None and self.remote.node_of(pid) is not None:
            self.remote.deliver_event(pid, event)
            return
        host = self.hosts.get(pid.host)
        if host is None or not host.deliver_event(pid, event):
            self.stats_dead_letters += 1

    def linked_exit(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None:
        if self.remote is not None and self.remote.node_of(target) is not None:
            self.remote.linked_exit(target, dead, error)
            return
        host = self.hosts.get(target.host)
        if host is not None:
            host.linked_exit(target, dead, error)

    def holds_link(self, target: Pid, other: Pid) -> bool:
        """False if ``target``, of this node, no longer holds a link to ``other``: a
        plain process that is gone or not linked to it, a workflow that unlinked it."""
        host = self.hosts.get(self.aliases.get(target.host, target.host))
        holds = getattr(host, "holds_link", None)
        return holds is None or bool(holds(target, other))

    def linked_exit_if_held(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None:
        """:meth:`linked_exit`, unless ``target`` no longer holds a link to ``dead``
        (:meth:`holds_link`): a link both sides made acted already, or it was unlinked
        while the linked exit was on its way from another node."""
        if self.holds_link(target, dead):
            self.linked_exit(target, dead, error)

    def forward_linked_exit(self, node: str, target: Pid, dead: Pid,
                            error: ErrorInfo | None) -> None:
        """``dead``, linked to the workflow ``target`` that node ``node`` runs, ended:
        that node acts (it knows whether the workflow traps links)."""
        if self.remote is not None:
            self.remote.linked_exit(target, dead, error, node)

    def forward_link(self, node: str, target: Pid, other: Pid) -> None:
        """``other`` linked to the workflow ``target`` that node ``node`` runs (which
        then forgets an unlink of ``other`` it may hold)."""
        if self.remote is not None:
            self.remote.post(target, {"k": "relinked", "target": str(target),
                                      "other": str(other)}, node)

    def forward_unlink(self, node: str, target: Pid, other: Pid) -> None:
        """``other`` unlinked the workflow ``target`` that node ``node`` runs."""
        if self.remote is not None:
            self.remote.unlink(target, other, node)

    def link(self, target: Pid, other: Pid) -> bool:
        if self.remote is not None and self.remote.node_of(target) is not None:
            return bool(self.remote.link(target, other))
        host = self.hosts.get(target.host)
        return host is not None and bool(host.add_link(target, other))

    def keep_link(self, target: Pid, other: Pid) -> None:
        """``other``, a workflow resumed on this node, was linked to ``target``, a plain
        process of another node, where it ran before: the link holds on that node, and
        is kept here too, so that a loss of that node acts on it (``noconnection``), as
        for a link made here (that node drops it here if ``target`` has ended, and
        tells a failure of it it remembers: see ``Remote`` ``link_held``)."""
        if self.remote is not None and self.remote.node_of(target) is not None:
            self.remote.keep_link(target, other)

    def forget_remote_watches(self, pid: Pid, targets: Iterable[Pid]) -> None:
        """``pid``, a workflow, left this node for another (a drain, a lapsed lease):
        this node forgets its links to and monitors of plain processes of other nodes
        (without telling those nodes: they hold them for its pid, wherever it runs, and
        its new node keeps them too), so that a loss of one of those nodes gives it
        its events once, from where it runs. ``targets``: the pids it links to and
        monitors."""
        if self.remote is not None:
            self.remote.forget_local(pid, targets)

    def monitor_spent(self, target: Pid, watcher: Pid) -> None:
        """The ``EXIT`` of ``target`` reached the workflow ``watcher``: if ``target`` is
        a plain process of another node, this node forgets that ``watcher`` monitors
        it. (That node put the ``EXIT`` in the store, as a workflow moves: no notice of
        it reaches this node, which forgets a remote monitor of a plain process as that
        notice arrives.)"""
        if self.remote is not None:
            self.remote.monitor_spent(target, watcher)

    def unlink(self, target: Pid, other: Pid) -> None:
        if self.remote is not None and self.remote.node_of(target) is not None:
            self.remote.unlink(target, other)
            return
        host = self.hosts.get(target.host)
        if host is not None:
            host.remove_link(target, other)

    def monitor(self, target: Pid, watcher: Pid, id: str | None = None) -> bool:
        if self.remote is not None and self.remote.node_of(target) is not None:
            return bool(self.remote.monitor(target, watcher, id))
        host = self.hosts.get(target.host)
        return host is not None and bool(host.add_monitor(target, watcher))

    def demonitor(self, target: Pid, watcher: Pid) -> None:
        if self.remote is not None and self.remote.node_of(target) is not None:
            self.remote.demonitor(target, watcher)
            return
        host = self.hosts.get(target.host)
        if host is not None:
            host.remove_monitor(target, watcher)

    # ------------------------------------------------------------ stopping others
    def stop_links_with(self, target: Pid, reason: ErrorInfo) -> None:
        """A supervisor stops ``target``: a normal exit of it reaches its links as
        ``reason`` (see ``ProcessHost.stop_links_with``; a plain process of this node)."""
        host = self.hosts.get(self.aliases.get(target.host, target.host))
        stop_links_with = getattr(host, "stop_links_with", None)
        if stop_links_with is not None:
            stop_links_with(target, reason)

    def ending_with(self, dead: Pid) -> list[Pid]:
        """The plain processes of this node that still run but are ending because
        ``dead`` ended, linked to it then (``ProcessHost.ending_with``; a workflow
        linked to it ends in its own time, journaled)."""
        return [pid for host in self.hosts.values() if not host.durable
                for pid in host.ending_with(dead)]

    def _refuse_manager(self, target: Pid, by: Pid | None, what: str) -> None:
        """A process may not stop the node's service manager: the config's services
        would run on unwatched (a crash never restarted, ``node.services()`` stale)."""
        services = self.services
        if by is not None and services is not None and target == services.pid:
            raise ValueError(
                f"cannot {what} {target}: it is the node's service manager (registered as "
                "'garrison.services'), which runs the config's services and stops with the "
                "node")

    async def cancel(self, target: Pid, by: Pid | None, timeout: Any) -> None:
        seconds = timeout_seconds(timeout)
        self._refuse_manager(target, by, "cancel")
        if self.remote is not None and self.remote.node_of(target) is not None:
            await self.remote.stop(target, by, False, seconds)  # its node escalates
            return
        host = self.hosts.get(self.aliases.get(target.host, target.host))
        if host is None or not host.cancel_event(target, by):  # (no such host: no process)
            await trio.lowlevel.checkpoint()
            return
        reason = ErrorInfo("Terminated", f"did not stop within {seconds:g}s of its cancel")
        deadline = trio.current_time() + seconds
        if target == by:  # (it cannot read its CANCEL while it waits here for its end)
            self._terminate_at(host, target, deadline, seconds, reason)
            await trio.lowlevel.checkpoint()
            return
        try:
            with trio.move_on_after(seconds):
                await host.wait_exited(target)
                return
        except trio.Cancelled:
            # the caller stopped waiting (it was cancelled, or ended): the terminate
            # after the timeout comes all the same, from the host
            self._terminate_at(host, target, deadline, seconds, reason)
            raise
        # A process the cancel stops at its checkpoint (or that ends on its CANCEL at once)
        # must be scheduled once to do so: past a timeout of 0 it may not have been yet
        # (trio runs a pass's tasks in either order). It runs first; what it awaits
        # after that (a shielded cleanup) is what the timeout bounds.
        await trio.lowlevel.cancel_shielded_checkpoint()
        if not host.is_alive(target):
            return
        host.kill(target, reason)
        await self._wait_killed(host, target)

    @staticmethod
    def _terminate_at(host: Any, target: Pid, deadline: float, seconds: float,
                      reason: ErrorInfo) -> None:
        """The terminate a cancel's timeout brings, from the host (no caller waits)."""
        later = getattr(host, "terminate_at", None)
        if later is not None and seconds != float("inf"):
            later(target, deadline, reason)

    async def terminate(self, target: Pid, by: Pid | None,
                        reason: ErrorInfo | None = None) -> None:
        """End ``target`` now (trio cancellation); its error is ``Terminated`` naming
        ``by``, or ``reason`` (the node's ``shutdown_reason``: not logged)."""
        self._refuse_manager(target, by, "terminate")
        if self.remote is not None and self.remote.node_of(target) is not None:
            await self.remote.stop(target, by, True, 0.0)
            return
        host = self.hosts.get(self.aliases.get(target.host, target.host))
        who = f"by {by}" if by is not None else "from outside any process"
        if reason is None:
            reason = ErrorInfo("Terminated", f"terminated {who}")
        if host is not None and host.kill(target, reason):
            await self._wait_killed(host, target)
        else:
            await trio.lowlevel.checkpoint()

    @staticmethod
    async def _wait_killed(host: Any, target: Pid) -> None:
        """Wait for ``target``, just terminated, to end. Termination is a trio
        cancellation: code that shields itself from it (a shielded cancel scope around
        a long cleanup) runs on, and the wait with it; that is logged after
        :data:`KILL_WARNING` seconds, naming the process, then the wait goes on."""
        with trio.move_on_after(_kernel.KILL_WARNING):
            await host.wait_exited(target)
            return
        info = host.process_info(target) if hasattr(host, "process_info") else None
        label = f" ({info.label})" if info is not None and info.label else ""
        children = [
            f"{pid}" + (f" ({child.label})" if child.label else "")
            for pid, parent in getattr(host, "process_parents", list)() if parent == target
            for child in (host.process_info(pid),) if child.alive]
        why = (f"it waits for its children to stop, and {', '.join(children)} still "
               f"run{'s' if len(children) == 1 else ''} (a child that ignores its CANCEL, "
               "with shutdown 'infinity' or a long one, holds it until it ends)" if children
               else "its code does not let it be cancelled (a shielded cancel scope, or a "
               "call that blocks the event loop)")
        log.warning("process %s%s has not ended %gs after it was terminated: %s; still "
                    "waiting for it", target, label, _kernel.KILL_WARNING, why,
                    extra={"pid": str(target)})
        await host.wait_exited(target)


def _storable(name: str) -> bool:
    """Whether the store could hold ``name`` as a cluster name (one that it could not,
    ``register`` refuses: nobody holds it)."""
    try:
        check_text(name, "a cluster name")
        check_key_size(name, "a cluster name")
    except ValueError:
        return False
    return True


def _conforms(router: Router) -> NodeContext:
    """Static check (mypy): the router implements the NodeContext protocol."""
    return router
