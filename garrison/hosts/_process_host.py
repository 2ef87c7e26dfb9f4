"""The process host: every process is a trio task in the host's nursery.

A process is plain in-memory state (:class:`_Process`) that is also the
:class:`~garrison.actors._runtime.Runtime` its code talks to through
``garrison.process``. Links, monitors and pending calls are direct references
between those objects; anything that leaves this host goes through the node.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from .._errors import NoSuchProcess
from ..actors._cancel_switch import CancelSwitch, stray_cancelled
from ..actors._mailbox import Checkpoints, Inbox, take_matching, warning_threshold
from ..actors._runtime import runtime_var
from ..actors._values import ErrorInfo, Event, EventKind, Message, Pid, ProcessInfo
from . import _kernel
from ._kernel import (
    Caller,
    NodeContext,
    ended_by_stop,
    exit_fan_out,
    linked_failed,
    linked_failure,
    noproc,
    orderly_stop,
    plain_call,
)

log = logging.getLogger("garrison.process")

_EXIT = EventKind.EXIT
_LINK_DOWN = EventKind.LINK_DOWN
_CANCEL = EventKind.CANCEL


#: the kill reason of a process stopped by ``cancel`` through trio cancellation (it
#: never asked for its events); its exit is a normal one
_STOPPED = ErrorInfo("Cancelled", "stopped by cancel")


def _incarnation() -> str:
    # pids of one node run never alias pids of an earlier run of the same store/app: a
    # plain pid kept past its run (in a workflow's state or journal, a store's row) is
    # sent to, monitored, linked after a restart, and each host counts its serials
    # from 1 again, so two runs sharing an incarnation would give a stale pid to a new
    # live process. 64 random bits, so that no two runs of a system's life do (a client
    # node per web request, in a cluster too); 32 did, one time in two, within some
    # 77,000 runs
    return os.urandom(8).hex()


class _Process(Caller, Checkpoints):
    """One process: its mailbox, links, monitors, and the runtime its code uses. It
    counts its own operations for its cancel points (``ops``, see ``Budget``)."""

    __slots__ = (
        "_ended_early",
        "_events",
        "_exited",
        "_inbox",
        "_topics",
        "alive",
        "ended_by",
        "held",
        "host",
        "kill_reason",
        "label",
        "link_reason",
        "links",
        "monitored_by",
        "monitoring",
        "names",
        "ops",
        "outcome",
        "parent",
        "reads_events",
        "scope",
        "started",
        "supervising",
        "trap_links",
    )

    def __init__(self, host: ProcessHost, pid: Pid, parent: Pid | None, label: str) -> None:
        self.host = host
        self.node = host.node
        self.pid = pid
        self.parent = parent
        self.label = label
        self.alive = True
        self.scope: CancelSwitch | None = None
        self.started: trio.Event | None = None  # made on demand by wait_started
        #: set once a Supervisor it runs has started its children (see hold_start)
        self.held: trio.Event | None = None
        self.kill_reason: ErrorInfo | None = None
        #: what its links get if it exits normally (its supervisor stopped it)
        self.link_reason: ErrorInfo | None = None
        self.trap_links = False
        #: the linked processes whose end is ending it (see ``ProcessHost.ending_with``)
        self.ended_by: tuple[Pid, ...] = ()
        #: a supervisor's live children in its stop order (see ``stop_processes``)
        self.supervising: Callable[[], list[Pid]] | None = None
        self.reads_events = False  # asked for process.events(): CANCEL is cooperative
        self.ops = 0
        self._inbox: Inbox[Message] | None = None
        self._topics: dict[str, Inbox[Message]] | None = None
        self._events: Inbox[Event] | None = None
        self.links: set[Pid] | None = None
        self.monitored_by: set[Pid] | None = None  # who receives my EXIT
        self.monitoring: set[Pid] | None = None  # whose EXIT I receive
        #: while a spawn with a link or monitor waits: the pids whose end reached me
        #: meanwhile (a child may end before the spawn returns; see ``spawn``)
        self._ended_early: list[set[Pid]] | None = None
        self.names: list[str] | None = None
        self.calls = None
        self.callers = None
        self._exited: trio.Event | None = None

    #: (its ``finish_call`` is Caller's own: a reply wakes its call with the value itself)
    finish_reply = Caller.finish_reply_raw

    def __repr__(self) -> str:
        return f"<process {self.pid} {self.label}>"

    # ------------------------------------------------------------------ delivery
    def deliver(self, msg: Message) -> None:
        topics = self._topics
        if topics is not None:
            box = topics.get(msg.topic)
            if box is not None:
                box.put(msg)
                return
        box = self._inbox
        if box is None:
            box = self._inbox = self._new_box(None)
        box.put(msg)

    def deliver_event(self, event: Event) -> None:
        box = self._events
        if box is None:
            box = self._events = self._new_box(None)
        box.put(event)

    # ------------------------------------------------------------------ lifecycle
    async def main(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        runtime_var.set(self)  # (set_runtime, without a call: in the task's own context)
        if self.started is not None:
            self.started.set()
        else:
            self.started = _STARTED
        result: Any = None
        error: ErrorInfo | None = None
        finished = False
        logged = False  # the exit was logged already (a KeyboardInterrupt)
        in_cleanup = False  # what its code raised, it raised as it was being cancelled
        try:
            # what kill() cancels: a scope around the body, made only if it is used
            with CancelSwitch() as scope:
                self.scope = scope
                try:
                    # (killed before it ever ran: none of its code runs, and it ends in
                    # this step, so no other reason can come meanwhile, see ``kill``)
                    if self.kill_reason is None:
                        result = await fn(*args)
                        finished = True
                    else:  # (nothing of it ran: whoever ended it says why, not its exit;
                        # but a linked failure is said by nobody else, so it is logged,
                        # as when its code had run a step)
                        logged = not linked_failed(self.kill_reason)
                except (trio.Cancelled, KeyboardInterrupt) as exc:
                    error = stray_cancelled(exc, f"process {self.pid} ({self.label})")
                    if error is None:
                        raise
                    finished = True
                except (Exception, SystemExit) as exc:  # sys.exit() ends this process only
                    # (a call whose callee the node's stop ended first: the stop's exit)
                    error = (self.node.shutdown_reason if ended_by_stop(self.node, exc)
                             else ErrorInfo.from_exception(exc))
                    finished = True
                    in_cleanup = _raised_in_cleanup(exc)
                except BaseExceptionGroup as group:
                    _, rest = group.split(trio.Cancelled)
                    if rest is None:  # only Cancelled: a real cancellation, or stray
                        error = stray_cancelled(group, f"process {self.pid} ({self.label})")
                        if error is None:
                            raise
                    elif rest.subgroup(_is_interrupt) is not None:
                        raise
                    else:
                        error = ErrorInfo.from_exception(rest)
                    finished = True
                except GeneratorExit as exc:
                    if not _stepping(sys._getframe()):  # the interpreter closing the coroutine
                        raise
                    error = ErrorInfo.from_exception(exc)  # raised by its code (a generator's
                    finished = True  # throw() passed on): this process's failure only
                except BaseException as exc:  # asyncio's CancelledError, a library's own:
                    error = ErrorInfo.from_exception(exc)  # this process's failure only
                    finished = True
            if not finished:
                error = self.kill_reason or ErrorInfo("Terminated", f"{self.pid} was cancelled")
            elif self.kill_reason is not None and self.kill_reason is not _STOPPED:
                # its code caught the cancellation (or ended shielded from it) and returned
                # or raised: a kill is not refused, its reason is the exit's (else a
                # terminate, or a linked failure, would read as a normal exit); what its
                # cleanup raised meanwhile is logged, not lost
                if in_cleanup and error is not None and not logged \
                        and error is not self.node.shutdown_reason:
                    _log_cleanup_failure(self, error, self.kill_reason)
                result, error = None, self.kill_reason
            elif self.kill_reason is _STOPPED and in_cleanup and error is not None \
                    and not logged and self.node.stopping:
                # a cancel that is part of the node's stop (a service, a supervisor's
                # child): its cleanup's failure is the stop's, as for a process the stop
                # ends itself (a warning; its exit is the stop's reason)
                _log_cleanup_failure(self, error, self.node.shutdown_reason)
                result, error = None, self.node.shutdown_reason
        except BaseException as exc:
            if not finished:
                error = self.kill_reason or self.node.shutdown_reason
                if _interrupt_in(exc):  # Ctrl-C (or code that raised it): the node stops;
                    error, logged = _interrupted(self, exc), True  # say where it came out
            raise
        finally:
            self._exit(result, None if error is _STOPPED else error, logged=logged)

    def kill(self, reason: ErrorInfo) -> None:
        """End this process at its next checkpoint with ``reason`` (the first reason
        wins; a real reason replaces a cancel's :data:`_STOPPED`, unless the body has
        not begun: then none of its code runs, and the cancel's normal exit stands)."""
        stopped = self.kill_reason
        if not self.alive or (stopped is not None and (
                stopped is not _STOPPED or self.scope is None)):
            return
        self.kill_reason = reason
        if self.scope is not None:
            self.scope.cancel()
        elif self.host._waiting:
            self.host.start_now(self)

    def cancel_requested(self, by: Pid | None) -> None:
        """``process.cancel`` of this process: one that reads its events gets ``CANCEL``; any
        other is stopped by trio cancellation at its next checkpoint (its ``finally``
        blocks run) and exits normally."""
        if self.reads_events:
            self.deliver_event(Event(_CANCEL, by if by is not None else self.pid))
        else:
            self.kill(_STOPPED)

    def _exit(self, result: Any, error: ErrorInfo | None, *, logged: bool = False) -> None:
        """Everything that happens when a process ends; synchronous, never raises."""
        self.alive = False
        if self.held is not None:
            self.held.set()
        pid = self.pid
        node = self.node
        host = self.host
        host.procs.pop(pid, None)
        host._running -= 1  # (``ended``'s count, and its call only when one waits)
        if host._waiting:
            host.ended(self)
        if self.names:
            for name in self.names:
                node.unregister(name, pid)
        node.record_exit(pid, result, error)
        if error is not None and not logged and not orderly_stop(node, error):
            _log_exit(self, error)
        if self.callers:  # calls waiting on this process fail at once
            if node.stopping and (error is None or error is node.shutdown_reason):
                # stopped with the node: so are its callers, next (see ``main``), not as
                # a failure of theirs
                self.fail_callers(f"process {pid} was stopped with the node before "
                                  "replying", node.shutdown_reason)
            else:
                self.fail_callers(f"process {pid} exited before replying: "
                                  f"{error or 'normal exit'}", error or noproc(pid))
        if self.monitored_by or self.links or self.monitoring:  # (no EXIT made for nobody)
            exit_fan_out(node, pid, Event(_EXIT, pid, result, error), self.monitored_by,
                         self.links, self.monitoring, self.link_reason)
        if self._exited is not None:  # someone waits: the outcome is theirs, whatever
            self.outcome = (result, error)  # the node's memory of exits drops meanwhile
            self._exited.set()

    async def wait_started(self) -> None:
        """Return once the process's code has begun to run (or it has ended), and a
        hold it made as it began (:meth:`hold_start`) has ended."""
        if self.started is None:
            self.started = trio.Event()
        if self.alive:
            await self.started.wait()
        # (a Supervisor holds it in the step its process begins with, before any
        # checkpoint: a waiter woken by ``started`` finds the hold made)
        if self.held is not None and self.alive:
            await self.held.wait()

    def holds_start(self) -> bool:
        """Whether its code runs, but a hold keeps it from counting as running."""
        return self.alive and self.held is not None and not self.held.is_set()

    async def wait_exited(self) -> None:
        if self.alive:
            if self._exited is None:
                self._exited = trio.Event()
            await self._exited.wait()

    # ------------------------------------------------------------------ Runtime
    def current_pid(self) -> Pid:
        return self.pid

    async def spawn(
        self, target: Any, args: tuple[Any, ...], host: str | None, *, link: bool,
        monitor: bool, id: str | None = None, supervised: bool = False,
    ) -> Pid:
        # a cancellation point before the spawn, not after it: a spawn that raises
        # Cancelled did not happen (trio's rule), never a child whose pid is lost
        await self.checkpoint()
        # a child (a workflow) may end, its EXIT delivered, before this returns: that
        # link or monitor is spent already, and kept it would never be let go
        ended: set[Pid] | None = None
        if link or monitor:
            ended = set()
            if self._ended_early is None:
                self._ended_early = []
            self._ended_early.append(ended)
        try:
            pid = await self.node.spawn_process(
                target, args, host=self.host.name if host is None else host, parent=self.pid,
                link=self.pid if link else None, monitor=self.pid if monitor else None,
                id=id, supervised=supervised,
            )
        finally:
            if ended is not None and self._ended_early is not None:
                self._ended_early.remove(ended)
                if not self._ended_early:
                    self._ended_early = None
        if ended is not None and pid not in ended:
            if link:
                self._add_link(pid)
            if monitor:
                self.add_monitoring(pid)
        return pid

    async def send(self, to: Pid | str, topic: str, payload: Any) -> None:
        # (delivered, then a cancellation point: a send in a cleanup being cancelled, a
        # goodbye in a ``finally``, still delivers its message, as a reply does)
        await self.node.send_message(self.pid, to, topic, payload)
        await self.checkpoint()

    def reply(self, msg: Message, value: Any) -> Awaitable[None]:
        self.reply_to(msg, value)
        return self.checkpoint()  # (no frame of its own: see call)

    #: ``plain_call(self, ...)`` itself: no frame of its own between ``process.call`` and
    #: the exchange
    call = plain_call

    def inbox(self) -> Inbox[Message]:
        box = self._inbox
        if box is None:
            box = self._inbox = self._new_box(None)
        return box

    def listen(self, topic: str) -> Inbox[Message]:
        if not isinstance(topic, str):
            raise TypeError(f"listen() takes a topic string, got {type(topic).__name__}")
        if self._topics is None:
            self._topics = {}
        box = self._topics.get(topic)
        if box is None:
            box = self._topics[topic] = self._new_box(topic)
            if self._inbox is not None:
                for m in take_matching(self._inbox, lambda m: m.topic == topic):
                    box.put(m)
        return box

    def events(self) -> Inbox[Event]:
        self.reads_events = True
        box = self._events
        if box is None:
            box = self._events = self._new_box(None)
        return box

    def link(self, to: Pid | str) -> None:
        pid = self.node.resolve(to)
        if pid == self.pid:
            return
        if self.node.link(pid, self.pid):
            self._add_link(pid)
        else:
            self.node.linked_exit(self.pid, pid, noproc(pid))

    def unlink(self, to: Pid | str) -> None:
        try:
            pid = self.node.resolve(to)
        except NoSuchProcess:  # a name nobody holds now: no link to it to remove (cleanup
            return             # code must not fail because the name's holder ended)
        if self.links:
            self.links.discard(pid)
        self.node.unlink(pid, self.pid)

    def monitor(self, to: Pid | str) -> None:
        pid = self.node.resolve(to)
        if pid == self.pid:  # (as link: its own EXIT could reach nobody)
            return
        if self.node.monitor(pid, self.pid):
            self.add_monitoring(pid)
        else:
            self.deliver_event(Event(_EXIT, pid, None, noproc(pid)))

    def demonitor(self, to: Pid | str) -> None:
        try:
            pid = self.node.resolve(to)
        except NoSuchProcess:  # a name nobody holds now (see unlink)
            return
        if self.monitoring:
            self.monitoring.discard(pid)
        self.node.demonitor(pid, self.pid)

    def set_options(self, *, trap_links: bool | None = None) -> None:
        if trap_links is not None:
            self.trap_links = bool(trap_links)

    def supervises(self, children: Callable[[], list[Pid]]) -> None:
        self.supervising = children

    def hold_start(self) -> Callable[[], None]:
        held = self.held = trio.Event()
        return held.set

    async def cancel(self, to: Pid | str, timeout: float) -> None:
        await self.node.cancel(self.node.resolve(to), self.pid, timeout)

    async def terminate(self, to: Pid | str) -> None:
        await self.node.terminate(self.node.resolve(to), self.pid)

    def register(self, name: str, scope: str = "node") -> None:
        self.node.register(name, self.pid, scope)
        if self.names is None:
            self.names = []
        if name not in self.names:
            self.names.append(name)

    def unregister(self, name: str) -> None:
        self.node.unregister(name, self.pid)
        if self.names and name in self.names:
            self.names.remove(name)

    def lookup(self, name: str) -> Pid | None:
        return self.node.lookup(name)

    def _new_box(self, topic: str | None) -> Inbox[Any]:
        return Inbox(self, topic, owner=self, warn_at=self.node.inbox_warning)

    def _inbox_over(self, inbox: Inbox[Any], waiting: int) -> None:
        """One of my inboxes reached the node's ``inbox_warning``: say so, once."""
        if inbox is self._events:
            which = "events waiting in its events()"
        elif inbox.topic is not None:
            which = f"messages waiting in its listen({inbox.topic!r}) inbox"
        else:
            which = "messages waiting in its inbox"
        log.warning("%s has %d %s: an inbox has no limit (send never blocks), so a process "
                    "that does not keep up grows without bound (warned again once this inbox "
                    "has drained below %d)", _who(self), waiting, which,
                    warning_threshold(inbox) // 2, extra={"pid": self.pid, "queued": waiting})

    def queued(self) -> tuple[int, int]:
        """(messages, events) waiting in my inboxes."""
        messages = len(self._inbox) if self._inbox is not None else 0
        if self._topics:
            messages += sum(len(box) for box in self._topics.values())
        return messages, len(self._events) if self._events is not None else 0

    def info(self) -> ProcessInfo:
        messages, events = self.queued()
        return ProcessInfo(
            pid=self.pid, alive=self.alive, label=self.label, parent=self.parent,
            queued=messages, events=events, links=frozenset(self.links or ()),
            monitors=frozenset(self.monitoring or ()),
            monitored_by=frozenset(self.monitored_by or ()), names=tuple(self.names or ()),
            trap_links=self.trap_links, reads_events=self.reads_events,
        )

    def _add_link(self, pid: Pid) -> None:
        if self.links is None:
            self.links = set()
        self.links.add(pid)

    def add_monitoring(self, pid: Pid) -> None:
        """Note that I monitor ``pid`` (its ``EXIT`` comes to me): my ``info()`` lists
        it, and my end takes my monitor off it. A spawn with ``monitor=`` from my own
        code notes it; the services manager, which spawns through the node, calls this."""
        if self.monitoring is None:
            self.monitoring = set()
        self.monitoring.add(pid)


class _OutsideCaller(Caller):
    """The caller of a ``node.call``: not a process (it has a pid of its host, so a
    reply and the callee's death reach it, but it is in no process table: a message
    to it is a dead letter and a call to it fails with ``noproc``)."""

    __slots__ = ()
    accepts_calls = False
    finish_reply = Caller.finish_reply_raw  # (as a process's)

    def __init__(self, node: NodeContext, pid: Pid) -> None:
        self.node = node
        self.pid = pid
        self.calls = None
        self.callers = None

    def deliver(self, msg: Message) -> None:
        """A message for it (a host that looked it up as a callee) is dropped."""
        self.node.stats_dead_letters += 1


class _Started:
    """Shared marker for "already running" (saves an Event per process)."""

    def set(self) -> None:
        pass

    async def wait(self) -> None:
        await trio.lowlevel.checkpoint()


_STARTED: Any = _Started()


def _stepping(frame: Any) -> bool:
    """Whether trio is running a step of the task whose coroutine is ``frame`` (a
    process's ``main``): a ``GeneratorExit`` caught there then came from the process's
    own code. When the interpreter closes a suspended coroutine (``coro.close()``, its
    garbage collection), the task being stepped, if any, is another one."""
    try:
        task = trio.lowlevel.current_task()
    except RuntimeError:  # no trio run in this thread
        return False
    return getattr(task.coro, "cr_frame", None) is frame


def _is_interrupt(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt)


def _interrupt_in(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(_is_interrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def _interrupted(proc: _Process, exc: BaseException) -> ErrorInfo:
    """A ``KeyboardInterrupt`` came out of ``proc``'s code. It is not the process's
    error to keep: trio raises Ctrl-C in whichever task runs at that moment (in a trio
    program not started with ``restrict_keyboard_interrupt_to_checkpoints``), so it
    stops the whole node as Ctrl-C does. Logged once (where it came out), and the
    process's ``EXIT`` carries it."""
    log.warning("%s: KeyboardInterrupt raised in its code: the node stops", _who(proc),
                extra={"pid": proc.pid})
    return ErrorInfo.from_exception(exc)


def _who(proc: _Process) -> str:
    return f"{proc.label} {proc.pid}" if proc.label else str(proc.pid)


def _log_exit(proc: _Process, error: ErrorInfo) -> None:
    """Log an abnormal exit once: the pid, the error and its traceback; a traceback
    through the same lines as one this host logged already (a service crashing again,
    the same bug in many processes) is not repeated: the one line says when it was."""
    who = _who(proc)
    fields = {"pid": proc.pid, "error": error}  # typed fields for JSON logs
    if error.traceback:
        first = proc.host.traceback_logged(error)
        if first is None:
            log.error("%s exited abnormally: %s\n%s", who, error, error.traceback.rstrip(),
                      extra=fields)
        else:
            log.error("%s exited abnormally: %s (traceback as logged at %s)", who, error,
                      first, extra=fields)
    else:
        log.warning("%s exited abnormally: %s", who, error, extra=fields)


def _raised_in_cleanup(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while trio's cancellation was being handled (a
    ``finally`` or ``except`` of the code on its way out), not by code that ran on
    unaware (a call failing as its linked callee died, before the kill landed)."""
    seen = 0
    context = exc.__context__
    while context is not None and seen < 100:
        if isinstance(context, trio.Cancelled):
            return True
        context, seen = context.__context__, seen + 1
    return False


def _log_cleanup_failure(proc: _Process, error: ErrorInfo, reason: ErrorInfo) -> None:
    """A process being ended (``reason``: a terminate, a linked failure, the node's
    stop) whose code raised ``error`` on the way out (a ``finally`` that failed): its
    exit is the kill's reason, and the error is logged here, with its traceback, rather
    than lost (\"no silent death\" holds for its cleanup too)."""
    who = _who(proc)
    fields = {"pid": proc.pid, "error": error}
    tail = f"\n{error.traceback.rstrip()}" if error.traceback else ""
    # (at the node's stop a warning: a cleanup that calls a process the stop ended
    # first fails at every stop)
    level = logging.WARNING if reason is proc.node.shutdown_reason else logging.ERROR
    log.log(level, "%s: its cleanup raised %s while it was being ended (%s); its exit "
            "stays %s%s", who, error, reason, reason.type, tail, extra=fields)


#: how many distinct tracebacks a host remembers having logged (beyond: all in full)
_TRACEBACKS_KEPT = 1000


class ProcessHost:
    """A host whose processes are trio tasks of one nursery (in memory, not durable)."""

    durable = False

    def __init__(self, node: NodeContext, name: str, *, workers: int | None = None) -> None:
        self.node = node
        self.name = name
        #: at most this many processes run at once; later spawns wait their turn (the
        #: ``workers`` of a ``process.host`` config entry); ``None``: no cap
        self.workers = workers
        self._running = 0
        self._waiting: collections.deque[tuple[_Process, Callable[..., Any], tuple[Any, ...]]] \
            = collections.deque()
        self.procs: dict[Pid, _Process] = {}
        #: the callers of ``node.call`` waiting for a reply, by their pids
        self.callers: dict[Pid, _OutsideCaller] = {}
        #: what the serials of this host's pids begin with (this run's random incarnation,
        #: so no pid aliases one of an earlier run); a node's other process hosts on a
        #: cluster take the ``processes`` host's, which the cluster's members are told
        self.prefix = _incarnation() + "."
        #: ``"@<node>"`` on a node of a cluster: a plain pid names its node
        self.suffix = ""
        self._seq = 0
        self._nursery: trio.Nursery | None = None
        #: tracebacks logged already (by error type and the lines they pass through),
        #: with when: a repeat is logged as one line (``_log_exit``)
        self._tracebacks: dict[tuple[str, tuple[str, ...]], str] = {}

    def traceback_logged(self, error: ErrorInfo) -> str | None:
        """When (``HH:MM:SS``) a traceback through the same lines as ``error``'s, of the
        same error type, was logged by this host; ``None`` the first time (it is
        remembered now)."""
        frames = tuple(line.strip() for line in error.traceback.splitlines()
                       if line.lstrip().startswith('File "'))
        key = (error.type, frames)
        first = self._tracebacks.get(key)
        if first is None and len(self._tracebacks) < _TRACEBACKS_KEPT:
            self._tracebacks[key] = time.strftime("%H:%M:%S")
        return first

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; processes run in this nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def spawn(
        self, fn: Callable[..., Any], args: tuple[Any, ...], *, parent: Pid | None,
        link: Pid | None, monitor: Pid | None, label: str,
    ) -> Pid:
        if self._nursery is None:
            raise RuntimeError(f"host {self.name!r} is not running")
        self._seq += 1
        pid = Pid(self.name, self.prefix + str(self._seq) + self.suffix)
        proc = _Process(self, pid, parent, label)
        if link is not None:
            proc.links = {link}
        if monitor is not None:
            proc.monitored_by = {monitor}
        self.procs[pid] = proc
        if self.workers is not None and self._running >= self.workers:
            self._waiting.append((proc, fn, args))  # pid, inbox and links exist already
        else:  # (``_start``, written out: a spawn's one call fewer)
            self._running += 1
            self._nursery.start_soon(proc.main, fn, args, name=label or "garrison.process")
        return pid

    def _start(self, proc: _Process, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        assert self._nursery is not None
        self._running += 1
        self._nursery.start_soon(proc.main, fn, args, name=proc.label or "garrison.process")

    def terminate_at(self, target: Pid, deadline: float, reason: ErrorInfo) -> None:
        """A ``process.cancel`` whose caller stopped waiting before its timeout: the
        terminate that the timeout brings comes from this host at ``deadline`` (trio
        time), if ``target`` still runs then."""
        if self._nursery is not None and target in self.procs:
            self._nursery.start_soon(self._terminate_at, target, deadline, reason)

    async def _terminate_at(self, target: Pid, deadline: float, reason: ErrorInfo) -> None:
        proc = self.procs.get(target)
        if proc is None:
            return
        with trio.move_on_at(deadline):
            await proc.wait_exited()
            return
        proc.kill(reason)

    def holds_start(self, pid: Pid) -> bool:
        """Whether the process ``pid`` runs a Supervisor that has not started all its
        children yet (see ``Runtime.hold_start``)."""
        proc = self.procs.get(pid)
        return proc is not None and proc.holds_start()

    def waits_for_worker(self, pid: Pid) -> bool:
        """Whether the process ``pid`` was spawned but waits for one of the host's
        ``workers`` to run."""
        return any(waiting.pid == pid for waiting, _fn, _args in self._waiting)

    def start_now(self, proc: _Process) -> None:
        """``proc`` waits for a slot but was killed: it starts now, off the cap, and
        ends at once."""
        for i, (waiting, fn, args) in enumerate(self._waiting):
            if waiting is proc:
                del self._waiting[i]
                self._start(proc, fn, args)
                return

    def ended(self, proc: _Process) -> None:
        """``proc`` ended (its count of running processes taken off already, in
        ``_Process._exit``): its slot goes to the oldest process waiting for one."""
        while self._waiting and (self.workers is None or self._running < self.workers):
            waiting, fn, args = self._waiting.popleft()
            self._start(waiting, fn, args)

    def local_caller(self, pid: Pid) -> Caller | None:
        """The process ``pid``, or the waiting ``node.call`` caller of that pid."""
        proc = self.procs.get(pid)
        if proc is None and self.callers:
            return self.callers.get(pid)
        return proc

    async def call_from_outside(self, to: Pid | str, topic: str, payload: Any,
                                timeout: Any) -> Any:
        """``node.call``: a call made by a stand-in caller with a pid of this host (so
        the callee can reply, and its death fails the call), not a process."""
        self._seq += 1
        caller = _OutsideCaller(self.node, Pid(self.name, self.prefix + str(self._seq)
                                               + self.suffix))
        self.callers[caller.pid] = caller
        try:
            return await plain_call(caller, to, topic, payload, timeout)
        finally:
            del self.callers[caller.pid]

    # -- the node's per-host operations -------------------------------------------
    def deliver(self, pid: Pid, msg: Message) -> bool:
        proc = self.procs.get(pid)
        if proc is None:
            return False
        proc.deliver(msg)
        return True

    def deliver_event(self, pid: Pid, event: Event) -> bool:
        proc = self.procs.get(pid)
        if proc is None:
            return False
        if event.kind is _EXIT:
            if proc.monitoring:
                proc.monitoring.discard(event.pid)  # that monitor is spent: forget the pid
            if proc._ended_early is not None:
                for ended in proc._ended_early:
                    ended.add(event.pid)
        proc.deliver_event(event)
        return True

    def add_monitor(self, target: Pid, watcher: Pid) -> bool:
        proc = self.procs.get(target)
        if proc is None:
            return False
        if proc.monitored_by is None:
            proc.monitored_by = set()
        proc.monitored_by.add(watcher)
        return True

    def remove_monitor(self, target: Pid, watcher: Pid) -> None:
        proc = self.procs.get(target)
        if proc is not None and proc.monitored_by:
            proc.monitored_by.discard(watcher)

    def add_link(self, target: Pid, other: Pid) -> bool:
        proc = self.procs.get(target)
        if proc is None:
            return False
        proc._add_link(other)
        return True

    def remove_link(self, target: Pid, other: Pid) -> None:
        proc = self.procs.get(target)
        if proc is not None and proc.links:
            proc.links.discard(other)

    def holds_link(self, target: Pid, other: Pid) -> bool:
        """True if the process ``target`` is alive and linked to ``other``."""
        proc = self.procs.get(target)
        return proc is not None and proc.links is not None and other in proc.links

    def linked_exit(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None:
        """``dead``, linked to ``target``, ended: a failure kills ``target`` or
        becomes a ``LINK_DOWN`` event when it traps links."""
        proc = self.procs.get(target)
        if proc is None:
            return
        if proc.links:
            proc.links.discard(dead)
        if proc._ended_early is not None:
            for ended in proc._ended_early:
                ended.add(dead)
        if error is None:
            return
        if proc.trap_links:
            proc.deliver_event(Event(_LINK_DOWN, dead, None, error))
            return
        proc.ended_by += (dead,)  # (a supervisor restarting ``dead`` waits for it)
        if orderly_stop(self.node, error):
            # ``dead`` was stopped by the node's shutdown or its supervisor, not a
            # failure: ``target`` ends with it for the same reason (not logged)
            proc.kill(error)
        else:
            proc.kill(linked_failure(dead, error))

    def stop_links_with(self, target: Pid, reason: ErrorInfo) -> None:
        """``target``'s supervisor stops it: if it then exits normally, its links get
        ``reason`` (an orderly ``Shutdown``, as OTP's ``shutdown``), so that the helpers
        it linked to itself end with it instead of outliving each restart."""
        proc = self.procs.get(target)
        if proc is not None:
            proc.link_reason = reason

    def ending_with(self, dead: Pid) -> list[Pid]:
        """The processes of this host that still run but are ending because ``dead``
        ended: they were linked to it then, and do not trap links (``linked_exit``).
        A scan of the host's processes: for a supervisor's restart, not a hot path."""
        return [pid for pid, proc in self.procs.items() if dead in proc.ended_by]

    def cancel_event(self, target: Pid, by: Pid | None) -> bool:
        proc = self.procs.get(target)
        if proc is None:
            return False
        proc.cancel_requested(by)
        return True

    def kill(self, target: Pid, reason: ErrorInfo) -> bool:
        proc = self.procs.get(target)
        if proc is None:
            return False
        proc.kill(reason)
        return True

    async def wait_exited(self, target: Pid) -> None:
        proc = self.procs.get(target)
        if proc is not None:
            await proc.wait_exited()

    async def wait_outcome(self, target: Pid) -> tuple[Any, ErrorInfo | None] | None:
        """Wait until the live process ``target`` ends; its ``(result, error)`` (kept for
        its waiters: the node's memory of recent exits may have dropped it by the time
        a waiter runs, when many end at once). ``None`` if it is not alive here."""
        proc = self.procs.get(target)
        if proc is None:
            return None
        await proc.wait_exited()
        outcome: tuple[Any, ErrorInfo | None] = proc.outcome
        return outcome

    async def wait_started(self, target: Pid) -> None:
        proc = self.procs.get(target)
        if proc is not None:
            await proc.wait_started()

    def is_alive(self, pid: Pid) -> bool:
        return pid in self.procs

    def issued(self, pid: Pid) -> bool:
        """Whether this host, in this run, gave out ``pid`` (alive or not)."""
        serial = pid.id[len(self.prefix):]
        if self.suffix:
            serial = serial.removesuffix(self.suffix)
        return (pid.host == self.name and pid.id.startswith(self.prefix)
                and serial.isdigit() and int(serial) <= self._seq)

    def process_info(self, pid: Pid) -> ProcessInfo:
        """A snapshot of the process ``pid`` (``alive=False`` and empty once it ended)."""
        proc = self.procs.get(pid)
        if proc is None:
            return ProcessInfo(pid=pid, alive=False)
        return proc.info()

    def process_infos(self, limit: int | None = None) -> list[ProcessInfo]:
        """A snapshot of every live process of this host, in start order (the first
        ``limit`` of them)."""
        procs = self.procs.values()
        if limit is not None:
            return [proc.info() for proc in itertools.islice(procs, max(limit, 0))]
        return [proc.info() for proc in list(procs)]

    def process_parents(self) -> list[tuple[Pid, Pid | None]]:
        """``(pid, parent)`` of every live process of this host, in start order: the
        tree of who started whom, without a snapshot of each (cheap for many)."""
        return [(pid, proc.parent) for pid, proc in self.procs.items()]

    def inbox_stats(self) -> tuple[int, int, Pid | None]:
        """(items waiting in all inboxes, the most waiting at one process, its pid)."""
        total = largest = 0
        at: Pid | None = None
        for pid, proc in self.procs.items():
            if proc._inbox is None and proc._events is None and proc._topics is None:
                continue
            messages, events = proc.queued()
            n = messages + events
            total += n
            if n > largest:
                largest, at = n, pid
        return total, largest, at

    def live_count(self) -> int:
        return len(self.procs)

    async def shutdown(self) -> None:
        """Stop every process of this host (see :func:`stop_processes`)."""
        await stop_processes([self])


async def stop_processes(hosts: Sequence[ProcessHost]) -> None:
    """Stop every process of ``hosts`` (a node's process hosts, together: a tree of
    processes spans hosts), children before parents: the processes with no live
    process below them first, then their parents, and so on. A supervisor's children
    go in the supervisor's order instead (reverse start order, see
    ``Runtime.supervises``): once nothing else below a supervisor runs, its children
    are stopped one after the other in that order, each with what runs below it (its
    helpers first, then it; a child supervisor's own children before it), then the
    supervisor. Each process is ended at once, as every other (not given its ``CANCEL``
    and ``shutdown`` time: a node's stop is bounded)."""
    if not hosts:
        return
    reason = hosts[0].node.shutdown_reason

    async def stop_tree(procs: dict[Pid, _Process]) -> None:
        # the children a live supervisor names (not a helper its process spawned itself)
        # are stopped in that supervisor's order, each with its own tree; every other
        # process bottom up
        listed: dict[Pid, list[Pid]] = {}
        for pid, p in procs.items():
            if p.supervising is not None:
                kids = [c for c in p.supervising() if c in procs and procs[c].parent == pid]
                if kids:
                    listed[pid] = kids
        supervised = {c for kids in listed.values() for c in kids}
        below = _below(procs) if listed else {}
        for now in _stop_rounds(procs, supervised):
            async with trio.open_nursery() as nursery:
                for proc in reversed(now):
                    if proc.pid in listed:
                        # its children first, in its order (it is stopped right after)
                        nursery.start_soon(stop_supervised, listed[proc.pid], procs, below)
                    else:
                        proc.kill(reason)
                await wait_stopped([proc for proc in now if proc.pid not in listed])
            # a supervisor whose children were stopped this round ends now, before the
            # next round (where its parent's turn comes)
            leftover = [p for p in now if p.pid in listed and p.alive]
            for proc in leftover:
                proc.kill(reason)
            await wait_stopped(leftover)

    async def stop_supervised(kids: list[Pid], procs: dict[Pid, _Process],
                              below: dict[Pid, list[Pid]]) -> None:
        # a child's whole tree, leaves first, before the next child's: its linked
        # helpers end it with them (the helpers of every child stopped first, at once,
        # ended every child at once). The children are those the supervisor named when
        # this stop began (``kids``), not its list now: a child that ended meanwhile
        # (linked to a process stopped in an earlier round) is dropped from that list,
        # and what still runs under it would be left to a later pass, after the
        # supervisor and its parents
        for pid in kids:
            tree = {p: procs[p] for p in _tree(below, pid) if procs[p].alive}
            if tree:
                await stop_tree(tree)

    while True:
        procs = {pid: p for host in hosts for pid, p in host.procs.items()}
        if not procs:
            return
        await stop_tree(procs)


def _below(procs: dict[Pid, _Process]) -> dict[Pid, list[Pid]]:
    """The processes of ``procs`` each one of them started, in ``procs``' order."""
    below: dict[Pid, list[Pid]] = {}
    for pid, proc in procs.items():
        if proc.parent is not None and proc.parent in procs and proc.parent != pid:
            below.setdefault(proc.parent, []).append(pid)
    return below


def _tree(below: dict[Pid, list[Pid]], root: Pid) -> list[Pid]:
    """``root`` and the processes under it (``below``: see :func:`_below`), parents
    before their children."""
    tree, seen = [root], {root}
    for pid in tree:  # (grows as it goes: breadth first, no deep recursion)
        for c in below.get(pid, ()):
            if c not in seen:  # (stale parents may form a cycle)
                seen.add(c)
                tree.append(c)
    return tree


def _stop_rounds(procs: dict[Pid, _Process], supervised: set[Pid]) -> list[list[_Process]]:
    """The rounds in which a node's stop ends ``procs``, children before parents, in one
    pass over the tree (not a pass per level: a chain thousands deep stopped in time
    quadratic in its depth). A process that is neither ``supervised`` nor below one
    ends in the round after the last one in which a process below it ends (a supervised
    one and its tree, which their supervisor ends in its own round, do not count);
    processes whose parents form a cycle (stale ones) end together, last. Each round
    keeps ``procs``' order."""
    children: dict[Pid, list[Pid]] = {}
    roots: list[Pid] = []
    for pid, proc in procs.items():
        parent = proc.parent
        if parent is not None and parent in procs and parent != pid:
            children.setdefault(parent, []).append(pid)
        else:
            roots.append(pid)
    below: dict[Pid, int] = {}  # the last round in which a process below it ends (-1: none)
    owned: set[Pid] = set()  # supervised, or below a supervised process
    for root in roots:  # iterative post-order: a deep chain needs no deep recursion
        stack: list[tuple[Pid, bool]] = [(root, False)]
        while stack:
            pid, done = stack.pop()
            if not done:
                stack.append((pid, True))
                for c in children.get(pid, ()):
                    if c in supervised or pid in owned:
                        owned.add(c)
                    stack.append((c, False))
                continue
            last = -1
            for c in children.get(pid, ()):
                if c not in supervised:
                    last = max(last, below[c] + 1)
            below[pid] = last
    rounds: list[list[_Process]] = []
    stale: list[_Process] = []
    for pid, proc in procs.items():
        if pid in supervised or pid in owned:
            continue
        if pid not in below:  # in a cycle of parents
            stale.append(proc)
            continue
        at = below[pid] + 1
        while len(rounds) <= at:
            rounds.append([])
        rounds[at].append(proc)
    rounds = [r for r in rounds if r]
    if stale:
        rounds.append(stale)
    return rounds


async def wait_stopped(procs: list[_Process]) -> None:
    """Wait for ``procs``, just killed by the node's stop, to end. Code that shields
    itself from cancellation runs on, and the node's stop waits for it: each process
    still running after :data:`~garrison.hosts._kernel.KILL_WARNING` seconds is logged,
    once, naming it (as ``terminate`` does), then the wait goes on."""
    with trio.move_on_after(_kernel.KILL_WARNING):
        for proc in procs:
            await proc.wait_exited()
        return
    for proc in procs:
        if proc.alive:
            log.warning("%s has not ended %gs after the node began to stop it: its code does "
                        "not let it be cancelled (a shielded cancel scope, or a call that "
                        "blocks the event loop); the node's stop waits for it", _who(proc),
                        _kernel.KILL_WARNING, extra={"pid": proc.pid})
    for proc in procs:
        await proc.wait_exited()
