"""Workflows another node of the cluster runs, as this node's processes see them.

A workflow pid names no node: a plain process (or ``node.call``) of this node may
monitor, link to or call a workflow that runs on another node. The workflow's own node
does not know these watchers (plain processes are not stored, and the workflow may
move to yet another node), so this node watches the store for the workflow's end:
:class:`Elsewhere` keeps, per workflow, the processes that monitor it, the processes
and workflows of this node linked to it, and the calls waiting for its reply, and one
task of the host looks at the store every :data:`POLL` seconds while any is kept (as a
handle's ``result()`` does for a workflow another node runs). When the workflow ends,
each monitor gets its ``EXIT`` (the result or error the store holds), each link acts
as on a local workflow's end (a linked failure when it failed or was cancelled), and
each call still waiting
:data:`REPLY_GRACE` seconds later fails with ``ProcessError``, as when a local callee
ends first. Each monitor and link is of the attempt of the workflow that ran when it
was made (:class:`~._attempts.Watch`): a failure retried before this node read it is
its end all the same, as the retry kept it (``_attempts``), and the retried attempt's
end is for the watches made of it. A reply comes the other way: the workflow's node
sends it to the caller's pid, which names this node (hence the grace: a reply sent just
before the end may come after this node read the end).

(Workflows monitoring workflows are not kept here: their monitors are stored, and the
ending node delivers their ``EXIT`` durably, see ``WorkflowHost.finish``.) The other
way, a linked failure of this node's process reaches the workflow through the node that
runs it (``Router.linked_exit``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import outcome
import trio

from ..._errors import StoreError
from ...actors._values import ErrorInfo, Event, EventKind, Pid
from ...persistence import DamagedRecord, WorkflowStatus
from .._kernel import Caller
from ._attempts import Watch, end_of_attempt, failures
from ._ids import call_request

if TYPE_CHECKING:
    from ._host import WorkflowHost

__all__ = ["CLOSE_SEND", "POLL", "REPLY_CHECK", "REPLY_GRACE", "Elsewhere", "RemoteWorkflow",
           "recorded_reply"]

log = logging.getLogger("garrison.workflow")

#: how often the store is read for the end of a watched workflow (seconds)
POLL = 0.05
#: at most how long a closing node spends sending what :meth:`Elsewhere.later` holds
CLOSE_SEND = 5.0
#: how often the calls of this node's workflows to a watched workflow look for a reply
#: its node recorded but never sent (it died between the two; seconds)
REPLY_CHECK = 2.0
#: how long after a watched workflow's end the calls still waiting for its reply fail:
#: a reply it sent before ending comes through the nodes' channel, which nothing orders
#: with this node's read of its end
REPLY_GRACE = 2.0


def recorded_reply(store: Any, wid: str, msg_id: str) -> tuple[Any] | None:
    """``(value,)`` the workflow ``wid`` replied to the call request ``msg_id`` with,
    kept on the request's inbox row (``Interop.reply``); ``None`` if it did not (yet).
    One indexed read (blocking); a reply this Python cannot read (no JSON, or a whole
    number too long for its digit limit) is the ``DamagedRecord`` naming it."""
    sent = store.inbox_message(msg_id)
    if sent is None or sent.workflow_id != wid:
        return None
    return sent.replied()


#: a watch whose attempt ended: a link or not, its watcher, the attempt, the result
#: and the error of that attempt's end
_End = tuple[bool, Pid, int, Any, ErrorInfo | None]


def _lost(exc: Exception) -> None:
    log.warning("a linked exit, an unlink or an event for a workflow another node runs "
                "was lost: %s", exc)


class RemoteWorkflow(Caller):
    """A workflow another node runs, as the callee of this node's calls (its
    ``callers``: the calls waiting for its reply) and the target of its processes'
    monitors and links."""

    __slots__ = ("links", "monitors", "newer", "settled")

    def __init__(self, node: Any, pid: Pid) -> None:
        self.node = node
        self.pid = pid
        self.calls = None
        self.callers = None
        #: processes of this node that monitor it, and the attempt of it each watches
        self.monitors: dict[Pid, Watch] = {}
        #: processes and workflows of this node linked to it, and the attempt of each
        self.links: dict[Pid, Watch] = {}
        #: the attempt every watch of it is of, as the last read settled them (``None``:
        #: a watch made since): until the store shows another, no watch has ended
        self.settled: int | None = None
        #: the watches (a link or not, the watcher) made since the read of its row
        #: under way began: that row may be older than they are, and settles none of
        #: them (the next read does)
        self.newer: set[tuple[bool, Pid]] = set()

    def monitor(self, watcher: Pid, watch: Watch) -> None:
        """``watcher`` monitors the attempt ``watch`` tells (if it did not already)."""
        if self.monitors.setdefault(watcher, watch) is watch:
            self.settled = None
            self.newer.add((False, watcher))

    def link(self, other: Pid, watch: Watch) -> None:
        """``other`` links to the attempt ``watch`` tells (if it did not already)."""
        if self.links.setdefault(other, watch) is watch:
            self.settled = None
            self.newer.add((True, other))

    def deliver(self, msg: Any) -> None:  # pragma: no cover - calls deliver durably
        raise RuntimeError(f"{self.pid} runs on another node: its messages go to the store")

    @property
    def idle(self) -> bool:
        return not self.monitors and not self.links and not self.callers


class Elsewhere:
    """This node's watch on workflows other nodes run (see the module docs).

    Its store reads, and the store work a process's exit gives it (:meth:`later`), run
    in worker threads: the store may be out of reach for ``retry_for``, and the node's
    thread must not stand still meanwhile."""

    def __init__(self, host: WorkflowHost) -> None:
        self.host = host
        self.watched: dict[str, RemoteWorkflow] = {}
        self._running = False
        self._added = trio.Event()
        self._later: deque[tuple[Callable[[], Any], Callable[[Any], None] | None]] = deque()
        self._later_running = False
        #: the call requests whose recorded reply this Python cannot read, named once
        self._unreadable: set[str] = set()

    def get(self, wid: str) -> RemoteWorkflow | None:
        return self.watched.get(wid)

    def watch(self, pid: Pid) -> RemoteWorkflow:
        """The entry of the workflow ``pid`` (made, and the watching task started, on
        first use)."""
        entry = self.watched.get(pid.id)
        if entry is None:
            entry = self.watched[pid.id] = RemoteWorkflow(self.host.node, pid)
            if not self._running:
                self._running = True
                self.host.start_soon(self._run)
            self._added.set()
        return entry

    def forget_idle(self, wid: str) -> None:
        """Drop the entry of ``wid`` if nothing of this node watches it any more."""
        entry = self.watched.get(wid)
        if entry is not None and entry.idle:
            del self.watched[wid]

    def forget_linker(self, pid: Pid) -> None:
        """``pid`` (a workflow that left this node) no longer links from here."""
        for wid, entry in list(self.watched.items()):
            if pid in entry.links:
                del entry.links[pid]
                self.forget_idle(wid)

    def later(self, blocking: Callable[[], Any], then: Callable[[Any], None] | None = None
              ) -> None:
        """Run ``blocking`` (store reads and writes) in a worker thread, then ``then``
        with its result in the node's thread: one at a time, in the order asked. A
        failure is logged (what it was for is lost, as a message to a node that is
        down is)."""
        self._later.append((blocking, then))
        if not self._later_running and not self.host.node.stopping:
            # (once the node stops, :meth:`drain` sends what is held)
            self._later_running = True
            self.host.start_soon(self._run_later)

    async def drain(self) -> None:
        """The node closes: what :meth:`later` holds goes now, before the node leaves
        the cluster, within :data:`CLOSE_SEND` seconds; after a failure (the store out
        of reach) or past that, the rest is logged as lost, not tried one by one."""
        with trio.move_on_after(CLOSE_SEND):
            while self._later:
                blocking, then = self._later.popleft()
                try:
                    result = await trio.to_thread.run_sync(blocking, abandon_on_cancel=True)
                except Exception as exc:  # (StoreError: the rest would fail the same way)
                    _lost(exc)
                    break
                if then is not None:
                    try:
                        then(result)
                    except Exception as exc:
                        _lost(exc)
        if self._later:
            log.warning("%d linked exits, unlinks or events for workflows other nodes run "
                        "were not sent: the node closed", len(self._later))
            self._later.clear()

    async def _run_later(self) -> None:
        try:
            while self._later:
                blocking, then = self._later.popleft()
                try:
                    result = await trio.to_thread.run_sync(blocking)
                except trio.Cancelled:  # (the node closes: drain() sends it)
                    self._later.appendleft((blocking, then))
                    raise
                except Exception as exc:  # (StoreError: out of reach for retry_for)
                    _lost(exc)
                    continue
                if then is not None:
                    try:
                        then(result)
                    except Exception as exc:
                        _lost(exc)
        finally:
            self._later_running = False

    async def _run(self) -> None:
        read = self.host.store.get_workflow
        rounds = 0
        every = max(1, round(REPLY_CHECK / POLL))
        while True:
            if not self.watched:
                self._added = trio.Event()
                await self._added.wait()
            await trio.sleep(POLL)
            rounds += 1
            if rounds % every == 0:
                await self._look_for_replies()
            for wid in list(self.watched):
                entry = self.watched.get(wid)
                if entry is None:
                    continue
                if entry.links:  # (those that unlinked since, from either side)
                    holds = self.host.node.holds_link
                    entry.links = {p: w for p, w in entry.links.items()
                                   if holds(p, entry.pid)}
                if entry.idle:
                    del self.watched[wid]
                    continue
                entry.newer.clear()  # (those made from now on: not by this read)
                try:
                    record = await trio.to_thread.run_sync(read, wid)
                except Exception as exc:
                    if self._closing(exc):
                        return
                    log.warning("could not read whether workflow %s has ended: %s", wid, exc)
                    break
                if self.watched.get(wid) is not entry:
                    continue  # (forgotten while the store was read, or watched anew)
                # (a watch made during the read waits for the next: the row read may
                # show an attempt its watch came after, ended or not; so does the end)
                finished = (record is None or WorkflowStatus(record.status).finished) \
                    and not entry.newer
                ends = self._ends(entry, record)
                if not ends and not finished:
                    continue
                told: frozenset[Pid] = frozenset()
                mine = [(p, attempt) for link, p, attempt, _r, error in ends
                        if link and p.host == self.host.name
                        and error is not None and record is not None]
                if mine:
                    try:
                        told = await trio.to_thread.run_sync(self._told, entry.pid, mine)
                    except Exception as exc:
                        if self._closing(exc):
                            return
                        log.warning("could not read whether workflow %s has ended: %s",
                                    wid, exc)
                        break
                    if self.watched.get(wid) is not entry:
                        continue  # (forgotten while the store was read)
                    ends = self._ends(entry, record)  # (and those that unwatched since)
                    finished = finished and not entry.newer
                if finished:
                    del self.watched[wid]
                self._ended(entry, ends, told, finished, record)

    def _closing(self, exc: Exception) -> bool:
        """Whether the failure ``exc`` of a read in a worker thread is the node's close
        (it stopped, and may have closed its stores under the read: what was watched
        asks nothing more). A ``StoreError`` is not, stopping or not (out of reach: look
        again next time, as the node's other watches go on being served); any other
        error out of a stop is re-raised."""
        if isinstance(exc, StoreError):
            return False
        if self.host.node.stopping:
            return True
        raise exc

    async def _look_for_replies(self) -> None:
        """A workflow's call to a watched workflow whose reply its node recorded on the
        request's inbox row and died before sending (``Interop.reply``): taken from
        there. (The reply a live node sends comes first; this is its stand-in.) One this
        Python cannot read (``DamagedRecord``) is named once; that call waits on."""
        store = self.host.store
        for entry in list(self.watched.values()):
            for ref, caller in list((entry.callers or {}).items()):
                msg_id = call_request(ref)
                if msg_id is None:
                    continue  # (a plain process's call: no reply is recorded for it)
                try:
                    answered = await trio.to_thread.run_sync(
                        recorded_reply, store, entry.pid.id, msg_id)
                except DamagedRecord as exc:  # (the call waits: a node that reads it)
                    if msg_id not in self._unreadable:
                        self._unreadable.add(msg_id)
                        log.error("a call to workflow %s waits for its reply, recorded by "
                                  "its node, which this node cannot read: %s",
                                  entry.pid.id, exc, extra={"workflow_id": entry.pid.id})
                    continue
                except Exception as exc:  # (out of reach: next time; closing: none)
                    self._closing(exc)
                    return
                callers = entry.callers
                if answered is not None and callers is not None \
                        and callers.get(ref) is caller:
                    del callers[ref]
                    caller.finish_call(ref, outcome.Value(answered[0]))

    @staticmethod
    def _ends(entry: RemoteWorkflow, record: Any) -> list[_End]:
        """The watches of ``entry`` (monitors, then links) whose attempt has ended, as
        ``record`` (the workflow's row, or ``None``) tells (``end_of_attempt``): each
        one's kind (a link or not), watcher, attempt and that end. Those whose attempt
        runs keep watching it, settled now if it was not (see
        :class:`~._attempts.Watch`). (A look at a workflow that runs the attempt every
        watch was settled at looks at none of them; one made since the read of ``record``
        began, :attr:`RemoteWorkflow.newer`, is left to the next read.)"""
        finished = record is None or WorkflowStatus(record.status).finished
        if not finished and entry.settled == record.attempt:
            return []
        ends: list[_End] = []
        kept = None if record is None else failures(record)
        newer = entry.newer
        for link, watches in ((False, entry.monitors), (True, entry.links)):
            for watcher, watch in list(watches.items()):
                if (link, watcher) in newer:
                    continue
                attempt, end = end_of_attempt(entry.pid, record, watch, kept)
                if end is not None:
                    ends.append((link, watcher, attempt, end[0], end[1]))
                elif watch.attempt != attempt:
                    watches[watcher] = Watch(attempt)
        if not finished and not ends and not newer:  # (each watches the attempt that runs)
            entry.settled = int(record.attempt)
        return ends

    def _told(self, dead: Pid, linked: list[tuple[Pid, int]]) -> frozenset[Pid]:
        """Those of ``linked`` (workflows of this node linked to the failed workflow
        ``dead``, each with the attempt of it its link was of) that the end of that
        attempt wrote a linked row for (``_inbox.LINKED``): they act on that row, once
        (their node read it, woken by its write): the row of the attempt that failed,
        not a failure's before a retry. Blocking."""
        row = self.host.linked_row
        return frozenset(p for p, attempt in linked if row(dead, p.id, attempt) is not None)

    def _ended(self, entry: RemoteWorkflow, ends: list[_End], told: frozenset[Pid],
               finished: bool, record: Any) -> None:
        """The watches in ``ends`` hear of the end of the attempt each watched (its
        ``EXIT``, or the linked exit: a normal end only drops the link); if the workflow
        has ended (``finished``), the calls still waiting for its reply fail
        :data:`REPLY_GRACE` later."""
        pid = entry.pid
        node = self.host.node
        for link, watcher, _attempt, result, error in ends:
            if not link:
                del entry.monitors[watcher]
                node.deliver_event(watcher, Event(EventKind.EXIT, pid, result, error))
            else:
                del entry.links[watcher]
                if watcher not in told:  # (a normal end only drops the link)
                    node.linked_exit_if_held(watcher, pid, error)
        if not finished:
            if entry.idle:
                self.forget_idle(pid.id)
            return
        if entry.callers:
            end = end_of_attempt(pid, record, Watch())[1]
            self.host.start_soon(self._fail_callers, entry, None if end is None else end[1])

    @staticmethod
    async def _fail_callers(entry: RemoteWorkflow, error: ErrorInfo | None) -> None:
        """The calls still waiting :data:`REPLY_GRACE` after the end fail."""
        await trio.sleep(REPLY_GRACE)
        pid = entry.pid
        entry.fail_callers(f"workflow {pid} ended before replying: "
                           f"{error or 'normal exit'}",
                           error or ErrorInfo("noproc", f"process {pid} is not alive"))
