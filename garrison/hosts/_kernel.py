"""What hosts share: the interfaces between the node and its hosts, the call table,
and what happens when a process ends (exit fan-out).

- :class:`NodeContext` is everything a host (or the service manager) asks of the node
  it runs on: routing, the name registry, spawning, links and monitors across hosts,
  cancel and terminate, statistics. The node implements it; hosts never see more.
- :class:`Host` is what the node asks of every host, in memory or durable.
- :class:`Caller` is the call table of anything that makes ``process.call``\\ s and is
  replied to (a process, a workflow, the stand-in caller of ``node.call``): the calls
  it waits on, and the calls waiting on it. One exchange serves every pair of hosts.
- :func:`exit_fan_out` delivers an ended process's ``EXIT`` to its monitors, applies
  the linked-exit rule to its links, and drops its own monitors.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
import types
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator
from typing import Any, Protocol

import outcome
import trio

from .. import _observe, _trio_fast
from .._errors import PayloadError, ProcessError
from ..actors._mailbox import timeout_seconds
from ..actors._values import ErrorInfo, Event, Message, Pid

__all__ = ["KILL_WARNING", "Caller", "Host", "NodeContext", "exit_fan_out", "linked_failure",
           "next_call_ref", "noproc", "plain_call", "stepping"]


#: seconds after a process was terminated (or stopped by the node's shutdown): if it
#: still runs, that is logged (once)
KILL_WARNING = 5.0

_LINKED = "LinkedProcessFailed"
#: a linked failure that came through more than one link: ``(root cause, hops, origin)``
_THROUGH = re.compile(r"linked process .+? failed: (.*) \(through (\d+) links from (.+)\)",
                      re.DOTALL)
_FIRST = re.compile(r"linked process (.+?) failed: (.*)", re.DOTALL)


def stepping(task: Any) -> bool:
    """Whether trio runs a step of ``task`` now: a ``GeneratorExit`` caught in its code
    then came from that code (a generator's ``throw`` passed on), not from the
    interpreter closing its coroutine (``coro.close()``, its garbage collection: the
    task stepped then, if any, is another one)."""
    try:
        return task is not None and trio.lowlevel.current_task() is task
    except RuntimeError:  # no trio run in this thread
        return False


def linked_failed(reason: ErrorInfo) -> bool:
    """Whether ``reason`` is a linked failure's (see :func:`linked_failure`)."""
    return reason.type == _LINKED


def linked_failure(dead: Pid, error: ErrorInfo) -> ErrorInfo:
    """The reason a process ends with when ``dead``, linked to it, failed with ``error``.

    Along a chain of links the reason keeps the root cause, the process it came from
    and the number of links it came through, so it stays the same size however long
    the chain (not each hop's reason inside the next)::

        LinkedProcessFailed: linked process processes/a.1 failed: ValueError: boom
        LinkedProcessFailed: linked process processes/a.2 failed: ValueError: boom
            (through 2 links from processes/a.1)
    """
    if error.type == _LINKED:
        m = _THROUGH.fullmatch(error.message)
        if m is not None:
            root, hops, origin = m.group(1), int(m.group(2)) + 1, m.group(3)
        else:
            m = _FIRST.fullmatch(error.message)
            if m is None:  # (not one of ours: a user's exception of that name)
                return ErrorInfo(_LINKED, f"linked process {dead} failed: {error}")
            root, hops, origin = m.group(2), 2, m.group(1)
        return ErrorInfo(_LINKED, f"linked process {dead} failed: {root} (through {hops} "
                                  f"links from {origin})")
    return ErrorInfo(_LINKED, f"linked process {dead} failed: {error}")


def noproc(pid: Pid) -> ErrorInfo:
    """The reason given for a process that does not exist (any more)."""
    return ErrorInfo("noproc", f"process {pid} is not alive")


#: how the reason a supervisor passes to the links of a child it stops begins
_SUPERVISOR_STOP = "stopped by its supervisor"


def supervisor_stop_reason(supervisor: str) -> ErrorInfo:
    """The reason a supervisor (``supervisor`` names it: a ``Supervisor``, the node's
    service manager) passes to the links of a child it stops, as OTP's ``shutdown``
    (see :func:`supervisor_stop`)."""
    return ErrorInfo("Shutdown", f"{_SUPERVISOR_STOP} {supervisor}")


def supervisor_stop(error: ErrorInfo | None) -> bool:
    """Whether ``error`` is a :func:`supervisor_stop_reason`: type ``Shutdown``, no
    traceback (no exception of the code made it), saying so."""
    return (error is not None and error.type == "Shutdown" and not error.traceback
            and error.message.startswith(_SUPERVISOR_STOP))


def orderly_stop(node: Any, error: ErrorInfo | None) -> bool:
    """Whether ``error`` is the reason of an orderly stop here, not a failure: this
    node's shutdown (``shutdown_reason``; another node's is a failure of the process
    there), or a supervisor's stop of a child. Not logged; a process linked to one so
    stopped ends with it, for the same reason."""
    return error is not None and (error is node.shutdown_reason or supervisor_stop(error))


def ended_by_stop(node: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is the failure of a call whose callee the node's stop ended, or
    that the stop refused (a spawn: a ``ProcessError`` carrying the node's
    ``shutdown_reason``, while it stops): no failure of the code that made it, which
    the stop ends next."""
    return bool(node.stopping) and getattr(exc, "error", None) is node.shutdown_reason


_INF = float("inf")

#: call references (``<token>.<n>``): a random token of this Python process, then a
#: count, so unique across every host and node of every run: a reply finds only its own
#: call, never one of another node or of a later run (a request left in an inbox from
#: before a restart answers none of the new calls). A workflow's journaled call uses
#: ``<host>/<its request's message id>`` instead (the same when a replay makes it
#: again; no ``#`` here, so the two never meet). A forked child gets a token of its
#: own. (The prefix and the count are read inline by ``exchange``: a concatenation
#: costs less than a ``str.format`` of the prefix made in C, which parses it each time)
_call_prefix: str
_call_seq: Iterator[int]


def next_call_ref() -> str:
    """A new call reference (see :data:`_call_prefix`)."""
    return _call_prefix + str(next(_call_seq))


def _new_call_refs() -> None:
    global _call_prefix, _call_seq
    _call_prefix, _call_seq = secrets.token_hex(8) + ".", itertools.count(1)


_new_call_refs()
if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=_new_call_refs)


#: the two outcomes (a parked task is woken with one, or with a reply's value itself)
_OUTCOMES = _trio_fast.OUTCOMES


class _CallTimedOut(Exception):
    """A call's timeout passed (the caller turns it into its ``TimeoutError``)."""


class CallTimeouts:
    """The deadlines of the calls waiting for a reply, watched by one task of the run.

    A ``trio.move_on_after`` around each wait would open a cancel scope and register
    and drop its deadline in trio's deadline table for every call: about a third of a
    call's round trip. Here a waiting call costs an insertion in a dict, and its reply
    a deletion. Calls with the same timeout are queued in one dict (insertion order is
    then deadline order), dropped once empty unless it is the only one; the watcher
    sleeps until the first deadline it saw, then fails the calls whose deadline passed
    (rescheduling each with a timeout, claimed as a reply is: whoever pops the
    caller's entry first wins) and sleeps until the next one. It may wake for calls
    that ended meanwhile, and then sleeps again. The watcher is a system task of the
    trio run (one per run, started by the first call with a timeout); it only sleeps
    and reschedules, and never raises.
    """

    def __init__(self) -> None:
        #: timeout (s) -> {call ref: (deadline, caller)}, oldest first
        self._queues: dict[float, dict[str, tuple[float, Caller]]] = {}
        self._scope: trio.CancelScope | None = None
        self._armed = float("inf")
        # the run's clock, fixed for the run: under trio's default clock its time is
        # ``perf_counter() + offset`` (read so here, without trio.current_time()'s three
        # calls per call made); any other clock (a MockClock) is asked
        self._clock = trio.lowlevel.current_clock()
        self._offset = _trio_fast.system_clock_offset(self._clock)

    def add(self, caller: Caller, ref: str, seconds: float) -> None:
        offset = self._offset
        deadline = (time.perf_counter() + offset if offset is not None
                    else self._clock.current_time()) + seconds
        queue = self._queues.get(seconds)
        if queue is None:
            queue = self._queues[seconds] = {}
        queue[ref] = (deadline, caller)
        if deadline < self._armed:
            self._armed = deadline
            if self._scope is not None:
                self._scope.deadline = deadline

    def remove(self, ref: str, seconds: float) -> None:
        queues = self._queues
        queue = queues.get(seconds)
        if queue is not None:
            queue.pop(ref, None)
            # an emptied queue goes now, not when the watcher next wakes (a timeout of
            # its own per call, a remaining budget, left one per call until then); the
            # last one stays, for the next call of the same timeout to reuse
            if not queue and len(queues) > 1:
                del queues[seconds]

    def _expire(self, now: float) -> float:
        """Fail every call whose deadline passed; the next deadline (inf: none)."""
        earliest = float("inf")
        for seconds, queue in list(self._queues.items()):
            while queue:
                ref = next(iter(queue))
                deadline, caller = queue[ref]
                if deadline > now:
                    earliest = min(earliest, deadline)
                    break
                del queue[ref]
                calls = caller.calls
                task = calls.pop(ref, None) if calls is not None else None
                if task is not None and not isinstance(task, outcome.Outcome):
                    trio.lowlevel.reschedule(task, outcome.Error(_CallTimedOut()))
            if not queue:
                del self._queues[seconds]
        return earliest

    async def watch(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._armed) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            self._armed = self._expire(trio.current_time())


_TIMEOUTS: trio.lowlevel.RunVar[CallTimeouts] = trio.lowlevel.RunVar("garrison_call_timeouts")


def call_timeouts() -> CallTimeouts:
    """The call deadlines of this trio run (its watcher starts with the first call)."""
    try:
        return _TIMEOUTS.get()
    except LookupError:
        timeouts = CallTimeouts()
        _TIMEOUTS.set(timeouts)
        trio.lowlevel.spawn_system_task(timeouts.watch, name="garrison.call_timeouts")
        return timeouts


class Host(Protocol):
    """What the node needs of every host (process or workflow)."""

    name: str
    #: True for a workflow host (its processes are journaled workflows)
    durable: bool

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...
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
    def live_count(self) -> int: ...
    def inbox_stats(self) -> tuple[int, int, Pid | None]: ...
    def local_caller(self, pid: Pid) -> Caller | None: ...
    async def shutdown(self) -> None: ...


class NodeContext(Protocol):
    """What hosts and services need from the node they run on."""

    #: the hosts by name
    hosts: dict[str, Any]
    #: other names of hosts (``workflows`` for a config's only workflow host)
    aliases: dict[str, str]
    #: plain processes of the other nodes of a cluster, or ``None`` off a cluster
    remote: Any
    #: registered names
    registry: dict[str, Pid]
    #: the loaded config, or ``None``
    config: Any
    #: the node is stopping: no new processes
    stopping: bool
    #: the reason given to processes stopped because the node shuts down
    shutdown_reason: ErrorInfo
    #: warn when one inbox holds this many items (0: never)
    inbox_warning: int
    #: the service manager of the config's services (set when it starts), or ``None``
    services: Any
    stats_messages: int
    stats_dead_letters: int
    #: the call deadlines of the node's trio run (:func:`call_timeouts`), kept once a
    #: call looked them up (a node runs in one run): ``None`` until then
    call_timeouts: Any

    def host(self, name: str) -> Any:
        """The host ``name``, or ``ValueError`` listing the hosts."""
        ...

    def check_run(self, doing: str) -> None:
        """``RuntimeError`` naming ``doing`` unless the caller runs in the node's trio
        run (a handle's async method called from another thread's run, or asyncio)."""
        ...

    #: the node stopped for good (its ``open_node`` block has ended)
    closed: bool

    def closed_text(self) -> str:
        """What a call on the node says once it has closed (:attr:`closed`)."""
        ...

    def check_thread(self, doing: str) -> None:
        """``RuntimeError`` naming ``doing`` unless the caller runs in the node's thread
        (a handle's sync method, which reads the node's live tables, called from
        asyncio's thread or a threadpool's); none once the node has closed."""
        ...

    def resolve(self, to: Pid | str) -> Pid:
        """A pid, its text form, a registered name or a service's entry id, as a pid."""
        ...

    def lookup(self, name: str) -> Pid | None: ...

    def resolve_target(self, target: Any) -> Any:
        """A spawn target: a callable stays itself, a string is a config entry id."""
        ...

    def message_id(self) -> str:
        """A fresh message id, unique on this node."""
        ...

    def plain_gone(self, pid: Pid) -> bool:
        """True if the plain process ``pid`` is known to have ended (of this node, an
        earlier run's too, or of another node of the cluster that runs a newer
        incarnation)."""
        ...

    def plain_elsewhere(self, pid: Pid) -> bool:
        """True if ``pid`` is a plain process of another node of the cluster."""
        ...

    def plain_on_live_node(self, pid: Pid) -> bool:
        """True if ``pid`` is a plain process of another node of the cluster that is
        live (whether the process runs, that node alone can tell)."""
        ...

    async def spawn_process(self, target: Any, args: tuple[Any, ...], *, host: str,
                            parent: Pid | None, link: Pid | None, monitor: Pid | None,
                            label: str | None = None, id: str | None = None,
                            supervised: bool = False) -> Pid:
        """Start a process (or workflow, on a workflow host, named ``id`` if given),
        linked to / monitored by the given pids atomically. ``supervised``: ``parent``
        is the supervisor of this child (a workflow records it, see
        ``_recovery.supervisor_of``)."""
        ...

    async def send_message(self, sender: Pid | None, to: Pid | str, topic: str,
                           payload: Any) -> None:
        """Deliver a message (durably to a workflow) or count a dead letter."""
        ...

    def caller_of(self, pid: Pid) -> Caller | None:
        """Whoever ``pid`` is, if it can make calls and be replied to here."""
        ...

    def replier(self, pid: Pid) -> Caller | None:
        """Where the reply to a call ``pid`` made goes (a workflow another node runs:
        that node)."""
        ...

    def deliver_event(self, pid: Pid, event: Event) -> None: ...
    def linked_exit(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None: ...

    def stop_links_with(self, target: Pid, reason: ErrorInfo) -> None:
        """A supervisor stops ``target``: its normal exit reaches its links as
        ``reason``."""
        ...

    def ending_with(self, dead: Pid) -> list[Pid]:
        """The plain processes of this node that still run but are ending because
        ``dead`` ended, linked to it then (not trapping links): a supervisor waits for
        them before it restarts ``dead``."""
        ...

    def holds_link(self, target: Pid, other: Pid) -> bool:
        """False if ``target``, of this node, no longer holds a link to ``other``."""
        ...

    def linked_exit_if_held(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None:
        """``linked_exit``, unless ``target`` no longer holds a link to ``dead``."""
        ...

    def forward_linked_exit(self, node: str, target: Pid, dead: Pid,
                            error: ErrorInfo | None) -> None:
        """A linked exit for the workflow ``target``, which the cluster's node ``node``
        runs."""
        ...

    def forward_link(self, node: str, target: Pid, other: Pid) -> None:
        """``other`` linked to the workflow ``target``, which node ``node`` runs."""
        ...

    def forward_unlink(self, node: str, target: Pid, other: Pid) -> None:
        """``other`` unlinked the workflow ``target``, which node ``node`` runs."""
        ...

    def link(self, target: Pid, other: Pid) -> bool: ...
    def keep_link(self, target: Pid, other: Pid) -> None:
        """A resumed workflow ``other``'s link to ``target``, a plain process of another
        node, made where it ran before: kept on this node too (its loss acts on it)."""
    def forget_remote_watches(self, pid: Pid, targets: Iterable[Pid]) -> None:
        """``pid``, a workflow, left this node: its links to and monitors of
        ``targets`` that are plain processes of other nodes are forgotten here (kept
        where it resumes)."""
    def monitor_spent(self, target: Pid, watcher: Pid) -> None:
        """The ``EXIT`` of ``target`` reached the workflow ``watcher`` (through the
        store, if ``target`` is a plain process of another node): its monitor of
        ``target`` is forgotten here too."""
    def unlink(self, target: Pid, other: Pid) -> None: ...
    def monitor(self, target: Pid, watcher: Pid, id: str | None = None) -> bool:
        """``watcher`` monitors ``target``; False if ``target`` is not alive (the
        caller tells ``watcher``). ``id``: the inbox id of the event of this monitor
        (a workflow's: ``Interop.event_id``), for the ``noproc`` another node
        answers with."""
        ...

    def demonitor(self, target: Pid, watcher: Pid) -> None: ...
    async def cancel(self, target: Pid, by: Pid | None, timeout: Any) -> None: ...
    async def terminate(self, target: Pid, by: Pid | None,
                        reason: ErrorInfo | None = None) -> None: ...
    def register(self, name: str, pid: Pid, scope: str = "node") -> None: ...
    def unregister(self, name: str, pid: Pid) -> None: ...
    def record_exit(self, pid: Pid, result: Any, error: ErrorInfo | None) -> None: ...
    def failure_remembered(self, pid: Pid) -> ErrorInfo | None:
        """The error a process of this node that ended recently failed with
        (``record_exit``); ``None`` for a return, the node's close, or one unknown."""
        ...

    def end_remembered(self, pid: Pid) -> tuple[Any, ErrorInfo | None] | None:
        """``(result, error)`` of a process of this node that ended recently
        (``record_exit``); ``None`` for one unknown."""
        ...


class Caller:
    """The call table of whatever makes calls and is replied to.

    ``calls``: my calls waiting for a reply (ref -> my parked task, or ``None``
    before it parks, or the outcome that came before it parked: a reply to a request
    that took an await to deliver); ``callers``: calls waiting for my reply (ref -> the
    caller).
    Both are made on first use.
    """

    __slots__ = ("callers", "calls", "node", "pid")

    #: a stand-in that cannot receive a call (``node.call``'s caller) says False
    accepts_calls = True

    node: NodeContext
    pid: Pid
    calls: dict[str, Any] | None
    callers: dict[str, Caller] | None

    def deliver(self, msg: Message) -> Any:
        """Put ``msg`` in this callee's inbox (a host's own way)."""
        raise NotImplementedError

    # (a generator-based coroutine: it parks by yielding to trio's run loop itself, see
    # ``_trio_fast.PARK``; awaited as any coroutine)
    @types.coroutine
    def exchange(self, callee: Caller, pid: Pid, topic: str, seconds: float,
                 deliver: Callable[[str], Awaitable[Any] | None] | None, *,
                 payload: Any = None, traced: bool = False, ref: str | None = None
                 ) -> Generator[Any, Any, Any]:
        """One call: register it with both sides, ``deliver(ref)`` the request (sync, or
        an awaitable), wait for the reply or ``seconds``; ``TimeoutError`` after that,
        ``ProcessError`` when the callee ends first. (With tracing on, this runs inside
        a ``call`` span: ``traced`` is set once it is open.) ``deliver=None``: the
        request is ``payload``, put in the in-memory ``callee``'s inbox (the hot path:
        no function made per call). ``ref``: the call's reference (a workflow's own,
        the same on replay), else a new one (:data:`next_call_ref`)."""
        if _observe.tracing and not traced:
            if deliver is None:
                deliver = _in_memory(self, callee, topic, payload)
            return (yield from _observe.traced_call(self, callee, pid, topic, seconds,
                                                    deliver, ref).__await__())
        if ref is None:
            ref = _call_prefix + str(next(_call_seq))  # (next_call_ref(), without a call)
        calls = self.calls
        if calls is None:
            calls = self.calls = {}
        calls[ref] = None
        waiting = callee.callers
        if waiting is None:
            waiting = callee.callers = {}
        waiting[ref] = self
        timeouts: CallTimeouts | None = None
        try:
            if deliver is None:
                node = self.node
                node.stats_messages += 1
                callee.deliver(Message(topic, payload, self.pid, node.message_id(), ref,
                                       _observe.carrier() if _observe.tracing else None))
            else:
                sent = deliver(ref)
                if sent is not None:
                    yield from sent.__await__()
            if seconds <= 0:  # no wait at all: never the reply (the callee has not run)
                raise _CallTimedOut
            early = calls[ref]
            if early is not None:  # it came while the request was delivered (an await)
                return early.unwrap()
            if seconds != _INF:
                node = self.node
                timeouts = node.call_timeouts  # (call_timeouts(), kept by the node)
                if timeouts is None:
                    timeouts = node.call_timeouts = call_timeouts()
                timeouts.add(self, ref, seconds)
            # park until the outcome arrives (``_CallTimedOut`` when the deadline passes,
            # see :class:`CallTimeouts`); inline rather than a method: a frame fewer. (The
            # task read from trio's run context, and the park yielded to its run loop
            # here: see ``_trio_fast``)
            run = _trio_fast.RUN
            calls[ref] = run.task if run is not None else trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                if ref in calls:
                    calls[ref] = None
                return trio.lowlevel.Abort.SUCCEEDED

            park = _trio_fast.PARK
            if park is not None:
                got = yield park(abort)
                # (a reply is woken with as it is, see ``finish_reply_raw``; a failure,
                # a timeout, trio's cancellation, any other reply, as an outcome)
                return got.unwrap() if type(got) in _OUTCOMES else got
            return (yield from trio.lowlevel.wait_task_rescheduled(abort).__await__())
        except _CallTimedOut:
            raise TimeoutError(f"call to {pid} (topic {topic!r}) got no reply within "
                               f"{seconds:g}s") from None
        finally:
            calls.pop(ref, None)
            waiting.pop(ref, None)
            if timeouts is not None:
                timeouts.remove(ref, seconds)

    # (KI-protected as ``Inbox.put`` is, for the same reason: it wakes the caller with the
    # runner's own reschedule, which trio's public one is a protected call of)
    @trio.lowlevel.enable_ki_protection
    def finish_call(self, ref: str, result: outcome.Outcome[Any]) -> None:
        """The reply (or failure) of my call ``ref`` arrived; a late one is dropped, and so
        is a second one (a call's first result is its result). (A caller that carries
        replies as JSON, a workflow or another node, raises ``PayloadError`` for a value
        that cannot be converted: the replier's error.)"""
        calls = self.calls
        if calls is None or ref not in calls:
            return  # a late reply: the caller gave up already
        task = calls[ref]
        if task is None:  # the caller has not parked yet: it takes the outcome then
            calls[ref] = result
            return
        if type(task) in _OUTCOMES:
            # a second result before the caller parked (another node's reply comes to
            # the caller itself, then the callee's recorded reply or its end): the first
            # one stands, as once the caller has parked
            return
        del calls[ref]
        run = _trio_fast.RUN  # (the runner's own reschedule: see ``_trio_fast``)
        if run is not None:
            run.runner.reschedule(task, result)
        else:
            trio.lowlevel.reschedule(task, result)

    def finish_reply(self, ref: str, value: Any) -> None:
        """``finish_call(ref, outcome.Value(value))``: the reply ``value`` to my call
        ``ref`` arrived. (A caller whose ``finish_call`` is this class's own takes
        :meth:`finish_reply_raw` instead.)"""
        self.finish_call(ref, outcome.Value(value))

    @trio.lowlevel.enable_ki_protection  # (as finish_call)
    def finish_reply_raw(self, ref: str, value: Any) -> None:
        """:meth:`finish_reply` of a caller whose ``finish_call`` is this class's own: its
        task, parked in ``exchange``, is woken with ``value`` itself, no outcome made
        (and unwrapped) per reply. A value that is an outcome itself, a caller not parked
        yet, or a trio whose internals moved (``_trio_fast.PARK``), take ``finish_call``."""
        calls = self.calls
        task = calls.get(ref) if calls is not None else None
        if task is None or type(task) in _OUTCOMES or type(value) in _OUTCOMES \
                or _trio_fast.PARK is None:
            self.finish_call(ref, outcome.Value(value))  # (a late reply: dropped there)
            return
        del calls[ref]  # type: ignore[union-attr]
        run = _trio_fast.RUN  # (the runner's own reschedule: see ``_trio_fast``)
        if run is not None:
            run.runner.reschedule(task, value)
        else:
            trio.lowlevel.reschedule(task, value)

    def reply_to(self, msg: Message, value: Any) -> None:
        """Hand ``value`` to the caller of ``msg`` (a call this callee received)."""
        assert msg.sender is not None and msg.call_ref is not None
        ref = msg.call_ref
        # the caller registered itself here with its call (``exchange``); a call this
        # side did not see registered (gone already) is looked up by its sender
        callers = self.callers
        caller = callers.pop(ref, None) if callers is not None else None
        if caller is not None:
            try:
                caller.finish_reply(ref, value)
            except PayloadError:  # (a value it cannot carry: the call still waits)
                callers[ref] = caller  # type: ignore[index]
                raise
            return
        caller = self.node.replier(msg.sender)
        if caller is not None:
            caller.finish_reply(ref, value)

    def fail_callers(self, why: str, error: ErrorInfo) -> None:
        """This callee ended: every call waiting for its reply fails at once."""
        callers = self.callers
        if callers:
            failure = ProcessError(why, pid=self.pid, error=error)
            for ref, caller in list(callers.items()):
                caller.finish_call(ref, outcome.Error(failure))
            callers.clear()


def plain_call(caller: Caller, to: Pid | str, topic: str, payload: Any,
               timeout: Any) -> Awaitable[Any]:
    """A ``process.call`` that is not journaled, made by ``caller`` (a process,
    ``node.call``'s stand-in, or an activity on behalf of its workflow): a process callee
    gets the request in its inbox; a workflow callee, durably. (The awaitable of the
    exchange, not a coroutine of its own: a frame fewer that each park and wake of the
    call passes through. What is wrong with ``to`` or ``timeout`` raises here.)"""
    node = caller.node
    pid = to if type(to) is Pid and not node.aliases else node.resolve(to)
    seconds = timeout_seconds(timeout)
    host = node.hosts.get(pid.host)
    if host is not None and host.durable:  # (it may run on another node of a cluster)
        return host.call(caller, pid, topic, payload, seconds)
    # ``node.caller_of(pid)``, read inline off a cluster (where a pid of this node's
    # hosts is this node's process or nobody's)
    callee = (host.local_caller(pid) if host is not None and node.remote is None
              else node.caller_of(pid))
    if callee is None or not callee.accepts_calls:
        raise ProcessError(f"call to {pid} failed: {noproc(pid)}", pid=pid, error=noproc(pid))
    return caller.exchange(callee, pid, topic, seconds, None, payload=payload)


def _in_memory(caller: Caller, callee: Caller, topic: str, payload: Any
               ) -> Callable[[str], None]:
    """``deliver`` of a call to an in-memory callee (``exchange(deliver=None)``)."""
    node = caller.node

    def deliver(ref: str) -> None:
        node.stats_messages += 1
        callee.deliver(Message(topic, payload, caller.pid, node.message_id(), ref,
                               _observe.carrier() if _observe.tracing else None))

    return deliver


def exit_fan_out(node: NodeContext, pid: Pid, event: Event, watchers: Iterable[Pid] | None,
                 links: Iterable[Pid] | None, monitoring: Iterable[Pid] | None,
                 link_error: ErrorInfo | None = None) -> None:
    """``pid`` ended with ``event``: its monitors get the ``EXIT``, its links the linked-
    exit rule (a failure ends them or reaches them as ``LINK_DOWN``), and the processes
    it monitored forget it. ``link_error``: what its links get for a normal exit (a
    supervisor's stop, see ``ProcessHost.stop_links_with``)."""
    if watchers:
        for watcher in watchers:
            node.deliver_event(watcher, event)
    if links:
        error = event.error if event.error is not None else link_error
        for other in links:
            node.linked_exit(other, pid, error)
    if monitoring:
        for target in monitoring:
            node.demonitor(target, pid)
