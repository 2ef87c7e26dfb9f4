"""The node: hosts, the name registry, routing between hosts, and ``open_node`` / ``run``."""

from __future__ import annotations

import contextvars
import itertools
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio

from ._errors import NoSuchProcess, NotInProcess, ProcessError
from ._targets import check_target
from .actors._mailbox import timeout_seconds
from .actors._runtime import runtime_or_none
from .actors._values import ErrorInfo, Event, Message, Pid, ProcessInfo, check_topic
from .hosts._process_host import ProcessHost, noproc
from .supervision._services import ServiceInfo, ServiceManager, start_services, stop_services

#: how many finished processes' outcomes ``Node.wait`` can still report
EXIT_MEMORY = 10_000
#: default ``open_node(inbox_warning=...)``: items waiting in one inbox that log a warning
INBOX_WARNING = 10_000


#: the node of the running ``open_node`` block (and so of ``garrison.run``)
_current_node: contextvars.ContextVar[Node] = contextvars.ContextVar("garrison_node")


def current_node() -> Node:
    """The node of the calling process, or of the ``open_node`` block (or
    ``garrison.run``) the caller runs in; :class:`NotInProcess` elsewhere.

    >>> async def main():                  # e.g. garrison run app.yaml --main app:main
    ...     node = garrison.current_node()
    ...     pid = await node.start_workflow(order_workflow, order, id="order-17")
    """
    runtime = runtime_or_none()
    node = getattr(runtime, "node", None) if runtime is not None else None
    if node is not None:
        return node
    try:
        return _current_node.get()
    except LookupError:
        raise NotInProcess(
            "garrison.current_node() has no node here: call it inside a garrison process "
            "or inside an `async with garrison.open_node()` block (garrison.run makes one)"
        ) from None


class Host(Protocol):
    """What the node needs of every host (process or workflow)."""

    name: str
    durable: bool

    def deliver_event(self, pid: Pid, event: Event) -> bool: ...
    def add_monitor(self, target: Pid, watcher: Pid) -> bool: ...
    def remove_monitor(self, target: Pid, watcher: Pid) -> None: ...
    def add_link(self, target: Pid, other: Pid) -> bool: ...
    def remove_link(self, target: Pid, other: Pid) -> None: ...
    def linked_exit(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None: ...
    def cancel_event(self, target: Pid, by: Pid | None) -> bool: ...
    def kill(self, target: Pid, reason: ErrorInfo) -> bool: ...
    async def wait_exited(self, target: Pid) -> None: ...
    def is_alive(self, pid: Pid) -> bool: ...
    async def shutdown(self) -> None: ...


class Node:
    """A running garrison node: its hosts, registry and statistics.

    Get one with :func:`open_node` (inside trio) or let :func:`run` make it.

    >>> async def main():
    ...     async with garrison.open_node() as node:
    ...         pid = await node.spawn(worker, 21)
    ...         print(await node.wait(pid))
    """

    def __init__(self, *, config: Any = None, store: Any = None,
                 inbox_warning: int | None = INBOX_WARNING) -> None:
        self.config = config
        self.store = store
        if inbox_warning is None:
            inbox_warning = 0
        if type(inbox_warning) is not int or inbox_warning < 0:
            raise ValueError(f"inbox_warning must be a whole number of items >= 0 (0 or None: "
                             f"no warning), got {inbox_warning!r}")
        #: items waiting in one inbox that log a warning (0: never)
        self.inbox_warning: int = inbox_warning
        self.hosts: dict[str, Any] = {}
        self.registry: dict[str, Pid] = {}
        self.stopping = False
        self.stats_messages = 0
        self.stats_dead_letters = 0
        self.stats_spawned = 0
        self._exits: OrderedDict[Pid, tuple[Any, ErrorInfo | None]] = OrderedDict()
        self._msg_prefix = format(int.from_bytes(os.urandom(4), "big"), "x") + "-"
        self._msg_seq = itertools.count(1)
        self._shutdown_reason = ErrorInfo("Shutdown", "the node is shutting down")
        self._nursery: trio.Nursery | None = None
        self._services: ServiceManager | None = None

    # ================================================================== public API
    async def spawn(self, target: Any, *args: Any, host: str | None = None) -> Pid:
        """Start ``target(*args)`` as a new process and return its pid.

        ``target`` is an async function, an object with an async ``__call__``
        (such as a ``Supervisor``) or a config entry id. ``host`` defaults to
        ``"processes"``.
        """
        pid = await self._spawn(target, args, host=host or "processes", parent=None,
                                link=None, monitor=None)
        await trio.lowlevel.checkpoint()
        return pid

    async def send(self, to: Pid | str, topic: str, payload: Any = None) -> None:
        """Send a message from outside any process (its ``sender`` is ``None``)."""
        if type(topic) is not str:
            topic = check_topic(topic, "node.send()")
        await self._send(None, to, topic, payload)
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
        if type(topic) is not str:
            topic = check_topic(topic, "node.call()")
        return await self.hosts["processes"].call_from_outside(to, topic, payload, timeout)

    async def wait(self, pid: Pid | str) -> Any:
        """Wait until ``pid`` ends; return its result or raise :class:`ProcessError`.

        A process that ended recently (the last ``EXIT_MEMORY`` exits) is reported
        at once; an unknown pid raises ``ProcessError`` with reason ``noproc``.
        """
        pid = self.resolve(pid)
        host = self._host(pid.host)
        if host.durable:
            return await host.wait(pid)
        await host.wait_exited(pid)
        try:
            result, error = self._exits[pid]
        except KeyError:
            raise ProcessError(f"process {pid} is unknown: {noproc(pid)}", pid=pid,
                               error=noproc(pid)) from None
        if error is not None:
            raise ProcessError(f"process {pid} failed: {error}", pid=pid, error=error)
        return result

    def lookup(self, name: str) -> Pid | None:
        """The pid registered under ``name`` (or running a service of that entry id),
        or ``None``."""
        pid = self.registry.get(name)
        if pid is None and self._services is not None:
            pid = self._services.running_pid(name)
        return pid

    def services(self) -> list[ServiceInfo]:
        """A snapshot of every ``process.service`` of the config: id, status, pid,
        restarts since the last stable run, last error."""
        return self._services.info() if self._services is not None else []

    async def start_service(self, service_id: str) -> None:
        """Start a service that is not ``auto_start`` (and what it requires)."""
        if self._services is None or service_id not in self._services.by_id:
            raise ValueError(f"no service {service_id!r} in the config")
        await self._services.call_start(service_id)

    def stats(self) -> dict[str, Any]:
        """Counters: live ``processes``, ``messages`` delivered, ``dead_letters``,
        ``spawned``, ``registered`` names; ``queued``: messages and events waiting in
        every process's inboxes, ``largest_inbox``: the most waiting at one process,
        ``largest_inbox_pid``: that process (``None`` when nothing waits).

        The queue figures walk every process (cost grows with their number).
        """
        live = sum(host.live_count() for host in self.hosts.values())
        queued = largest = 0
        at: Pid | None = None
        for host in self.hosts.values():
            if hasattr(host, "inbox_stats"):
                total, most, pid = host.inbox_stats()
                queued += total
                if most > largest:
                    largest, at = most, pid
        return {
            "processes": live,
            "messages": self.stats_messages,
            "dead_letters": self.stats_dead_letters,
            "spawned": self.stats_spawned,
            "registered": len(self.registry),
            "queued": queued,
            "largest_inbox": largest,
            "largest_inbox_pid": at,
        }

    def process_info(self, pid: Pid | str) -> ProcessInfo:
        """A :class:`~garrison.ProcessInfo` snapshot of a process: ``alive``, ``label``,
        ``queued`` messages and waiting ``events``, ``links``, ``monitors``,
        ``monitored_by``, registered ``names``. ``pid`` may be a name or a pid's text
        form; a process that has ended reads ``alive=False``.

        >>> node.process_info("counter").queued
        0
        """
        pid = self.resolve(pid)
        host = self._host(pid.host)
        if not hasattr(host, "process_info"):
            raise ValueError(f"process_info({str(pid)!r}): {pid.host!r} is a workflow host; "
                             f"use node.workflow({pid.id!r}) for a workflow")
        info: ProcessInfo = host.process_info(pid)
        return info

    def resolve(self, to: Pid | str) -> Pid:
        """``to`` as a pid: a pid stays itself; a string with a ``/`` is a pid's text
        form (``str(pid)``, e.g. ``"workflows/order-17"``); any other string is a
        registered name (or a service's entry id)."""
        if type(to) is Pid:
            return to
        if isinstance(to, str):
            if "/" in to:
                return Pid.parse(to)
            pid = self.registry.get(to)
            if pid is None and self._services is not None:
                pid = self._services.running_pid(to)  # a service's entry id
            if pid is None:
                raise NoSuchProcess(to)
            return pid
        if isinstance(to, Pid):
            return to
        raise TypeError(f"expected a Pid, its text form or a registered name, got "
                        f"{type(to).__name__}: {to!r}")

    # ================================================================== internals
    def _host(self, name: str) -> Any:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise ValueError(f"no host named {name!r} on this node (hosts: {known})") from None

    def _durable_hosts(self) -> set[str]:
        return {name for name, host in self.hosts.items() if host.durable}

    def resolve_target(self, target: Any) -> Any:
        """A spawn target: a callable stays itself, a string is a config entry id."""
        if isinstance(target, str):
            if self.config is None:
                raise ValueError(f"unknown target {target!r}: no config is loaded, so entry ids "
                                 "cannot be resolved")
            return self.config.resolve_target(target)
        return target

    async def _spawn(self, target: Any, args: tuple[Any, ...], *, host: str, parent: Pid | None,
                     link: Pid | None, monitor: Pid | None, label: str | None = None) -> Pid:
        if self.stopping:
            raise ProcessError("cannot spawn: the node is shutting down")
        h = self._host(host)
        if h.durable:
            pid: Pid = await h.spawn_process(target, args, parent=parent, link=link,
                                             monitor=monitor)
        else:
            fn = self.resolve_target(target)
            checked = check_target(fn)
            pid = h.spawn(fn, args, parent=parent, link=link, monitor=monitor,
                          label=label or checked)
        self.stats_spawned += 1
        return pid

    def _message_id(self) -> str:
        return self._msg_prefix + str(next(self._msg_seq))

    async def _send(self, sender: Pid | None, to: Pid | str, topic: str, payload: Any) -> None:
        pid = to if type(to) is Pid else self.resolve(to)
        host = self.hosts.get(pid.host)
        if host is None:
            self.stats_dead_letters += 1
            return
        msg = Message(topic, payload, sender, self._msg_prefix + str(next(self._msg_seq)))
        if host.durable:
            delivered = await host.deliver_durable(pid, msg)
        else:
            delivered = host.deliver(pid, msg)
        if delivered:
            self.stats_messages += 1
        else:
            self.stats_dead_letters += 1

    def _local_process(self, pid: Pid) -> Any:
        host = self.hosts.get(pid.host)
        if host is None:
            return None
        if host.durable:  # a workflow waiting on a call gets its reply too
            return host.local_caller(pid)
        proc = host.procs.get(pid)
        if proc is None and host.callers:  # a node.call waiting for its reply
            return host.callers.get(pid)
        return proc

    async def _call_durable(self, caller: Pid, pid: Pid, topic: str, payload: Any,
                            timeout: Any) -> Any:
        host = self._host(pid.host)
        return await host.call(caller, pid, topic, payload, timeout)

    def _deliver_event(self, pid: Pid, event: Event) -> None:
        host = self.hosts.get(pid.host)
        if host is None or not host.deliver_event(pid, event):
            self.stats_dead_letters += 1

    def _linked_exit(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None:
        host = self.hosts.get(target.host)
        if host is not None:
            host.linked_exit(target, dead, error)

    def _link(self, target: Pid, other: Pid) -> bool:
        host = self.hosts.get(target.host)
        return host is not None and host.add_link(target, other)

    def _unlink(self, target: Pid, other: Pid) -> None:
        host = self.hosts.get(target.host)
        if host is not None:
            host.remove_link(target, other)

    def _monitor(self, target: Pid, watcher: Pid) -> bool:
        host = self.hosts.get(target.host)
        return host is not None and host.add_monitor(target, watcher)

    def _demonitor(self, target: Pid, watcher: Pid) -> None:
        host = self.hosts.get(target.host)
        if host is not None:
            host.remove_monitor(target, watcher)

    async def _cancel(self, target: Pid, by: Pid | None, timeout: Any) -> None:
        host = self._host(target.host)
        seconds = timeout_seconds(timeout)
        if not host.cancel_event(target, by):
            return
        with trio.move_on_after(seconds):
            await host.wait_exited(target)
            return
        host.kill(target, ErrorInfo("Terminated", f"did not stop within {seconds:g}s of CANCEL"))
        await host.wait_exited(target)

    async def _terminate(self, target: Pid, by: Pid | None) -> None:
        host = self._host(target.host)
        who = f"by {by}" if by is not None else "from outside any process"
        if host.kill(target, ErrorInfo("Terminated", f"terminated {who}")):
            await host.wait_exited(target)
        else:
            await trio.lowlevel.checkpoint()

    def _register(self, name: str, pid: Pid) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a registered name must be a non-empty string, got {name!r}")
        if "/" in name:
            raise ValueError(f"cannot register {name!r}: a registered name must not contain "
                             "'/' (a string with '/' is read as a pid, like 'workflows/order-17')")
        holder = self.registry.get(name)
        if holder is not None and holder != pid and self.hosts[holder.host].is_alive(holder):
            raise ValueError(f"name {name!r} is already registered by {holder}")
        self.registry[name] = pid

    def _record_exit(self, pid: Pid, result: Any, error: ErrorInfo | None) -> None:
        exits = self._exits
        exits[pid] = (result, error)
        if len(exits) > EXIT_MEMORY:
            exits.popitem(last=False)

    async def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await self._add_host(ProcessHost(self, "processes"))
        await self._start_workflow_host()
        await self._start_config_workflow_hosts()
        if self.config is not None:
            for entry in self.config.hosts():
                if entry.kind == "process.host":
                    await self._add_host(ProcessHost(self, entry.id))
            self._services = await start_services(self, self.config)
        # services first: a resumed workflow finds the services it sends to
        for host in list(self.hosts.values()):
            if host.durable:
                await host.resume()

    async def _add_host(self, host: Any) -> None:
        assert self._nursery is not None
        self.hosts[host.name] = host
        await self._nursery.start(host.run)

    async def _stop(self) -> None:
        """Stop every host, last added first; each stops its processes leaves first."""
        self.stopping = True
        if self._services is not None:
            await stop_services(self, self._services)
        for host in reversed(list(self.hosts.values())):
            await host.shutdown()
        self._close_workflow_store()

    # ================================================================== workflows
    async def start_workflow(self, target: Any, *args: Any, id: str | None = None,
                             host: str | None = None) -> Pid:
        """Start ``target(*args)`` as a durable workflow; returns its pid.

        Idempotent by ``id``: the same id returns the existing workflow's pid,
        running or finished (its arguments are not looked at again). Without an
        id a fresh one is made. ``target`` must be importable by its
        ``module:qualname`` (a lambda or closure raises ``TypeError``).

        >>> pid = await node.start_workflow(order_workflow, order, id="order-17")
        >>> await node.workflow("order-17").result()
        """
        h = self._workflow_host(host)
        return await h.start(target, args, wid=id)

    def workflow(self, id: str, host: str | None = None) -> Any:
        """A :class:`~garrison.WorkflowHandle` on the workflow ``id``."""
        from ._handle import WorkflowHandle

        return WorkflowHandle(self, self._workflow_host(host), id)

    def workflows(self, status: Any = None, search: dict[str, Any] | None = None,
                  host: str | None = None) -> list[Any]:
        """:class:`~garrison.WorkflowSummary` of every workflow in the store, oldest
        first, filtered by status (one or several) and search attributes."""
        from ._handle import WorkflowSummary

        h = self._workflow_host(host)
        wanted = None if status is None else (
            {str(status)} if isinstance(status, str) else {str(s) for s in status})
        out = []
        # the store knows running/blocked/finished; sleeping and waiting live in memory
        for rec in h.store.list_workflows(None, search):
            wf = h.active.get(rec.workflow_id)
            now = wf.status if wf is not None else rec.status
            if wanted is None or str(now) in wanted:
                out.append(WorkflowSummary(rec.workflow_id, rec.name, now, rec.search,
                                           rec.memo, rec.created, rec.updated))
        return out

    def _workflow_host(self, name: str | None) -> Any:
        h = self._host(name or "workflows")
        if not h.durable:
            raise ValueError(f"host {h.name!r} is not a workflow host")
        return h

    async def _start_workflow_host(self) -> None:
        """Open the store (``None``: in memory; a path: a durable file; a
        ``postgresql://`` URL; a store object: as is) and add the ``workflows`` host,
        which resumes unfinished workflows before this returns."""
        from .hosts.workflow import WorkflowHost
        from .persistence import open_store

        store = self.store
        self._owns_store = not hasattr(store, "commit")
        if self._owns_store:
            store = open_store(store)
        self._workflow_store = store
        await self._add_host(WorkflowHost(self, "workflows", store))

    async def _start_config_workflow_hosts(self) -> None:
        """Each ``workflow.host`` entry of the config is one more workflow host, named by
        its entry id (``app:orders``), with its own store."""
        from .hosts.workflow import WorkflowHost
        from .persistence import open_store

        self._config_stores: list[Any] = []
        if self.config is None:
            return
        for entry in self.config.hosts():
            if entry.kind != "workflow.host":
                continue
            store = open_store(entry.store, synchronous=entry.synchronous)
            self._config_stores.append(store)
            await self._add_host(WorkflowHost(self, entry.id, store))

    def _close_workflow_store(self) -> None:
        store = getattr(self, "_workflow_store", None)
        if store is not None and getattr(self, "_owns_store", False):
            store.close()
        for other in getattr(self, "_config_stores", ()):
            other.close()


@asynccontextmanager
async def open_node(config: Any = None, store: Any = None, *,
                    inbox_warning: int | None = INBOX_WARNING) -> AsyncIterator[Node]:
    """Run a node inside trio for the duration of the ``async with`` block.

    Leaving the block (normally, by an exception or by Ctrl-C) stops every
    process, children before parents. An inbox never limits what is queued;
    when one holds ``inbox_warning`` items a warning is logged (once, until it
    drains below half); ``0`` or ``None`` turns that off.

    >>> async with garrison.open_node() as node:
    ...     pid = await node.spawn(worker)
    """
    node = Node(config=_as_config(config), store=store, inbox_warning=inbox_warning)
    token = _current_node.set(node)
    try:
        async with trio.open_nursery() as nursery:
            await node._start(nursery)
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
        raise
    finally:
        try:
            _current_node.reset(token)
        except ValueError:  # closed from another context (an abandoned generator)
            pass


def _as_config(config: Any) -> Any:
    """A config path (or several) is loaded; a loaded ``Config`` is used as is."""
    if config is None or hasattr(config, "resolve_target"):
        return config
    from .config import load_config, load_configs

    if isinstance(config, list | tuple):
        return load_configs(config)
    return load_config(config)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


def run(main: Callable[..., Any], *args: Any, config: Any = None, store: Any = None,
        clock: trio.abc.Clock | None = None, inbox_warning: int | None = INBOX_WARNING) -> Any:
    """Run ``main(*args)`` as the root process of a new node, like ``trio.run``.

    Returns what ``main`` returns; a failure raises :class:`ProcessError`.
    Ctrl-C stops every process, children first, and raises ``KeyboardInterrupt``.

    >>> garrison.run(main, "hello")
    """

    async def root() -> Any:
        async with open_node(config=config, store=store, inbox_warning=inbox_warning) as node:
            pid = await node.spawn(main, *args)
            return await node.wait(pid)

    return trio.run(root, clock=clock, restrict_keyboard_interrupt_to_checkpoints=True)
