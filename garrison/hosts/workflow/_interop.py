"""How a workflow talks to processes and other workflows: spawn (child workflows
included), send, reply, call, links and monitors, cancel and terminate, names.

These are the ``garrison.process`` calls on a workflow host: each is journaled (a
send or spawn is not repeated on replay, a call's reply is recorded) or replay-safe.
A send to a workflow commits the journal record and the receiver's inbox row in one
transaction, with a message id derived from the sender and seq, so it is delivered
exactly once.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, cast

import outcome
import trio

from ... import _observe
from ..._errors import GarrisonError, NoSuchProcess, PayloadError, ProcessError, StoreError
from ...actors._mailbox import timeout_seconds
from ...actors._values import ErrorInfo, Event, EventKind, Message, Pid
from ...persistence import RawJson, Transaction, WorkflowStatus, to_json
from .._kernel import Caller, noproc
from ._codec import PLAIN, json_round_trip
from ._core import UNLINK_GRACE, WorkflowCore, added, log
from ._elsewhere import RemoteWorkflow, recorded_reply
from ._ids import call_ref, check_text
from ._inbox import InboxItem
from ._journal import Entry, JournalKind, error_from_plain, error_to_plain, message_to_plain
from ._waits import WallClock

if TYPE_CHECKING:
    from ._instance import WorkflowInstance

__all__ = ["Interop"]

_dumps = json.dumps
_loads = json.loads

#: what a send, call, link, monitor, cancel or terminate may raise before (or instead
#: of) its effect, depending on what is live: a name nobody holds, a value with no JSON
#: form (a call's request to a workflow, a plain process's reply). Recorded at the
#: operation's seq (:func:`raised_plain`), so that a replay raises it again at the same
#: place without doing anything (live, the name may be held by then).
RECORDED_RAISES = (NoSuchProcess, PayloadError)


def _nothing() -> None:
    """(What ``hold_start`` gives where nothing holds a start.)"""


def _detached(payload: Any) -> Any:
    """``payload`` (which has a JSON form) as a plain process of this node gets it from
    a workflow: a copy of its own, so that what the receiver does to it later does not
    change the workflow's object, which only the live run would see (a replay sends
    nothing). One that cannot be copied (a type of the application's own that refuses)
    is handed over as it is, as before: the send was recorded already."""
    if type(payload) in PLAIN:
        return payload
    try:
        return copy.deepcopy(payload)
    except Exception:
        return payload


def raised_plain(exc: Exception) -> dict[str, Any]:
    """The journal outcome of an operation that raised ``exc`` (one of
    :data:`RECORDED_RAISES`, or a register's ``ValueError`` or ``StoreError``):
    ``{"error": ..., "raised": type name}``, with the ``"name"`` nobody held for a
    ``NoSuchProcess`` (and its ``"why"``, if it said why: a service's id) and the store's
    ``"path"`` for a ``StoreError``."""
    out: dict[str, Any] = {"error": error_to_plain(ErrorInfo(type(exc).__name__, str(exc), "")),
                           "raised": type(exc).__name__}
    if isinstance(exc, NoSuchProcess):
        out["name"] = exc.name if isinstance(exc.name, str) else str(exc.name)
        if exc.why is not None:
            out["why"] = exc.why
    elif isinstance(exc, StoreError):
        out["path"] = exc.path
    return out


def raise_recorded(out: dict[str, Any]) -> NoReturn:
    """Raise the exception :func:`raised_plain` recorded, as the first run raised it."""
    raised = out.get("raised")
    message = error_from_plain(out.get("error") or {"type": raised}).message
    if raised == "NoSuchProcess":
        why = out.get("why")
        raise NoSuchProcess(out.get("name"), why if isinstance(why, str) else None)
    if raised == "PayloadError":
        raise PayloadError(message)
    if raised == "ValueError":  # (a register: a name another process held)
        raise ValueError(message)
    if raised == "StoreError":  # (a register: the cluster's names out of reach)
        exc = StoreError(out.get("path"), "")
        exc.args = (message,)
        raise exc
    raise GarrisonError(f"{raised}: {message}")  # (a kind a later version records)


class Interop(WorkflowCore):
    """The part of a workflow instance that talks to processes and other workflows."""

    __slots__ = ()

    def _deliver_lost(self) -> None:
        """After a recovery, at the first live operation (the journal replayed: its
        links and monitors are known again):

        - the processes (of in-memory hosts) this workflow monitored or linked before
          the crash are gone: a monitor yields a durable ``EXIT`` with reason
          ``noproc``, unless its event was delivered before the crash, real or
          ``noproc`` (the same inbox message id, named by the monitor: :meth:`event_id`;
          or the one per process of :meth:`_delivered_per_process`), and a link a
          ``LINK_DOWN`` ``noproc`` when trapping (same rule); a link that does not trap
          is dropped (the process may have returned: a link ends quietly then, and
          that is not journaled), unless this node remembers that the process failed
          (``failure_remembered``: in a cluster, its failure went to the node
          that ran the workflow, lost since): a linked failure with that error;
        - a watch found spent (its event delivered, a link ended) is dropped: the
          tables hold live watches only (:meth:`watch_spent`);
        - in a cluster, a plain process of another live node is not lost: that node
          is asked again (:meth:`_watch_again`), and answers ``noproc`` only if it has
          ended; a link that does not trap is kept as it is (the process's failure
          comes from its node, as before the crash), and kept on this node too, so
          that a loss of that node acts on it (``Router.keep_link``; that node, finding
          the process ended, tells a failure it remembers: the first went to the
          node lost); a process of a node that is not live is lost, as above;
        - a process of this node that runs is monitored again (a failure of this
          workflow released the monitor, and this is its retry); one that ended in
          this run of the node gets the ``EXIT`` of its end as the node remembers it
          (``end_remembered``), not ``noproc``;
        - a workflow it monitors that has ended gets its ``EXIT`` delivered (the same
          id as the one its end delivered: once); the monitor of a workflow of another
          store, not written with this journal, is made again;
        - a link to a workflow is made again on the other side (links are not stored:
          the linked workflow resumed without it); one that failed meanwhile acts as
          a linked failure with its error, as it would have live;
        - the linked rows in its inbox (a linked workflow of another node failed,
          ``_inbox.LINKED``) act, as its ``trap_links`` is known now
          (``WorkflowHost.linked_rows``)."""
        self.check_lost = False
        self.asks_replayed = None
        if self.held_names:
            self._hold_names()
        node = self.node
        hosts = node.hosts
        if self.ends_read:
            self._ends_read()
        lost: list[tuple[EventKind, Pid]] = []
        for pid in sorted(self.monitoring or ()):
            h = hosts.get(pid.host)
            if node.plain_on_live_node(pid):
                # a process of another node (this node's hosts know nothing of it): that
                # node tells, asked again as for a live monitor
                if not self._watch_again(EventKind.EXIT, pid):
                    lost.append((EventKind.EXIT, pid))
            elif h is None or (not h.durable and not h.is_alive(pid)):
                lost.append((EventKind.EXIT, pid))
            elif not h.durable:
                # a process of this node that runs: its monitor made again (a set:
                # once). A failure of this workflow released it (see
                # ``WorkflowHost._ended_fan_out``), and this may be its retry
                if not node.monitor(pid, self.pid, self.event_id(EventKind.EXIT, pid)):
                    lost.append((EventKind.EXIT, pid))  # (it ended meanwhile)
            elif h.durable and h.store is not self.store:
                # a workflow of another store (another workflow host of this node): the
                # monitor's row there was written apart from this journal (see
                # ``add_durable_monitor``), so it is made again (once: a set); if that
                # workflow ended meanwhile, its EXIT (once: same id) -- unless the
                # monitor was of an attempt before a retry of it (see below)
                if h.replayed_monitor_spent(pid, cast("WorkflowInstance", self)):
                    self.watch_spent(EventKind.EXIT, pid)
                else:
                    h.add_durable_monitor(pid, self)
            elif h.durable and not h.is_alive(pid):
                # a workflow that ended (or runs on another node) while this one was
                # down or replaying: its EXIT, if it ended (delivered once: same id; a
                # store written before EXIT ids named their watcher has the other form).
                # A monitor of an attempt that failed, whose EXIT it had, asks nothing
                # more: a retry of that workflow forgot it, and the end of the attempt
                # it runs now is for the monitors made of that one (see ``exit_id``);
                # nor one an older node's end of this attempt answered under the first
                # attempt's id
                old = h.store.inbox_message(f"{pid.id}#exit")
                if (old is None or old.workflow_id != self.wid) and \
                        not h.replayed_monitor_spent(pid, cast("WorkflowInstance", self)):
                    h.exit_if_ended(pid, self.pid)  # (its delivery spends the monitor)
                else:
                    self.watch_spent(EventKind.EXIT, pid)
        failed: list[tuple[Pid, ErrorInfo]] = []
        for pid in sorted(self.links or ()):
            h = hosts.get(pid.host)
            if node.plain_on_live_node(pid):
                # a process of another node: the link made before holds there (its
                # failure reaches this workflow where it runs, see ``linked_exit``); a
                # trapping workflow asks again, to hear noproc if it has ended meanwhile;
                # one that does not trap keeps it here too (a loss of that node is its
                # noconnection), dropped if that node finds the process ended
                if not self.trap_links:
                    node.keep_link(pid, self.pid)
                elif not self._watch_again(EventKind.LINK_DOWN, pid):
                    failed.append((pid, noproc(pid)))
            elif h is None or (not h.durable and not h.is_alive(pid)):
                # a plain process gone since: whether it failed or returned (which ends
                # a link quietly, unjournaled) cannot be told, so only a trapping
                # workflow hears of it (LINK_DOWN noproc); one that does not trap is
                # not ended for a process that may have returned, unless this node
                # remembers it failed (its failure went to the node that ran the
                # workflow then, lost since: a failure that reached it ended it there)
                if self.trap_links:
                    failed.append((pid, noproc(pid)))
                elif (error := self.node.failure_remembered(pid)) is not None:
                    failed.append((pid, error))
                else:
                    self.watch_spent(EventKind.LINK_DOWN, pid)
            elif h.durable:
                # a workflow: one that ended meanwhile acts now, as the store has it (a
                # link to one that runs, here or on another node, is made again); in a
                # cluster, the end of the attempt the link was of, if its time is known
                # (a retry since ended it: ``_attempts``)
                ended, error, attempt = False, None, None
                since = self.link_times.get(pid) if self.link_times else None
                if not h.is_alive(pid):
                    watched = None if since is None else h.end_of_link(pid, since)
                    if watched is not None:
                        attempt, end = watched
                        ended, error = end is not None, None if end is None else end[1]
                    else:
                        ended, _result, error = h.end_of(pid)
                if not ended:
                    h.add_link(pid, self.pid, since=since)
                elif error is not None and h is self.host and h.ownership is not None \
                        and h.linked_row(pid, self.wid, attempt) is not None:
                    # its end, on another node, wrote a linked row for this workflow:
                    # the row acts, once (``linked_rows``, below, if not read before)
                    self.watch_spent(EventKind.LINK_DOWN, pid)
                elif error == noproc(pid) and h.store.get_workflow(pid.id) is None:
                    # not in the store: pruned after it ended (a host's retention, a
                    # tool), where its failure was told at its end (a trapping one's
                    # LINK_DOWN in its inbox, a linked row, or this one ended by it),
                    # and an end without one told nothing: it acts on nothing now, as
                    # the same run did live (a noproc failed a non-trapping one that
                    # a restart met after its linked workflow was pruned)
                    self.watch_spent(EventKind.LINK_DOWN, pid)
                elif error is not None:
                    failed.append((pid, error))
                else:  # it ended normally: the link is spent
                    self.watch_spent(EventKind.LINK_DOWN, pid)
        for kind, pid in lost:
            if self._delivered_per_process(kind, pid):
                self.watch_spent(kind, pid)
            elif kind is EventKind.EXIT and (end := node.end_remembered(pid)) is not None:
                # a process of this node that ended in this run of the node (while
                # this workflow was failed, its monitor released: its retry): its end
                self.host.deliver_event(self.pid, Event(kind, pid, end[0], end[1]))
            else:
                self.host.deliver_event(self.pid, Event(kind, pid, None, noproc(pid)))
        for pid, error in failed:
            if self.trap_links and self._delivered_per_process(EventKind.LINK_DOWN, pid):
                self.watch_spent(EventKind.LINK_DOWN, pid)
            else:
                self.host.linked_exit(self.pid, pid, error, row_read=True)
        if self.pending:  # linked rows of workflows of other nodes that failed
            self.host.linked_rows(cast("WorkflowInstance", self))

    def _ends_read(self) -> None:
        """After a recovery: a workflow whose ``EXIT`` (``LINK_DOWN``) the replay read
        after this one's last monitor of (link to) it (``ends_read``) was heard of:
        the monitor (link) is spent, as it was when the event came, and not made again
        with a retried run of that workflow, which never asked for it (a link made
        again on its side, this workflow's failure ended it). An ``EXIT`` of it still
        pending is of a later attempt, a retry's, that no monitor of this one asked
        for: a retry by a node of an older garrison (a rolling upgrade) left the
        monitor's row, which that attempt's end wrote to (see
        :meth:`asks_nothing_of`). Such a row is consumed unread."""
        read = dict.fromkeys(self.ends_read or ())  # (looked up once a pending item)
        for kind, pid in read:
            self.watch_spent(kind, pid)
        for item in list(self.pending or ()):
            if item.event and item.value.kind is EventKind.EXIT and \
                    (EventKind.EXIT, item.value.pid) in read:
                self.unqueue_item(item)
                self.drop_unasked(item.id)

    def asks_nothing_of(self, target: Pid, attempt: int) -> bool:
        """Whether the ``EXIT`` of the end of the workflow ``target``'s attempt
        ``attempt``, for which a monitor row of the store names this workflow, asks
        nothing of it: a later attempt (a retry's), and this workflow, its replay done,
        had an ``EXIT`` of ``target`` and made no monitor of it (nor spawned it) since
        (``ends_read``): its monitor was of an earlier attempt. A retry forgets such
        rows with its write (``retry_transaction``), a retry by a node of an older
        garrison (a rolling upgrade) left them, and the new end reached a workflow that
        never asked for it. (Before its replay is done, what it holds is not known
        yet: the row is written, and its recovery drops it, :meth:`_ends_read`.)"""
        heard = self.ends_read
        return attempt >= 2 and not self.check_lost and heard is not None \
            and (EventKind.EXIT, target) in heard and target not in (self.monitoring or ())

    def drop_unasked(self, row_id: int) -> None:
        """The inbox row ``row_id``, an ``EXIT`` :meth:`asks_nothing_of`, is consumed
        unread."""
        log.debug("workflow %s: an EXIT of a monitor of an earlier attempt (row %s) is "
                  "dropped", self.wid, row_id, extra={"workflow_id": self.wid})
        self.host.write_soon(Transaction().consume(self.wid, row_id, 0))

    def _watch_again(self, kind: EventKind, pid: Pid) -> bool:
        """After a recovery: the monitor (``EXIT``) or trapping link (``LINK_DOWN``) of
        ``pid``, a plain process of a live node of the cluster, made again there,
        unless its event reached this workflow's inbox before (under the id of the
        monitor or link, or the one per process, which an end delivered from another
        node has). False if its node is gone: the process is lost.

        That node answers ``noproc`` if the process has ended, and holds the monitor
        or link if not (the one made before the crash too: a set, the event comes
        once). A monitor's ``noproc`` is asked under the id per process, not the
        monitor's: the id the process's real end, delivered meanwhile by the monitor
        made before, has (one of them is kept)."""
        store = self.store
        own = self.event_id(kind, pid)
        if (own is not None and store.inbox_message(own) is not None) \
                or store.inbox_message(f"{pid}#{kind}@{self.wid}") is not None:
            self.watch_spent(kind, pid)
            return True
        if kind is EventKind.EXIT:
            return bool(self.node.monitor(pid, self.pid))
        return bool(self.node.link(pid, self.pid))

    def event_id(self, kind: EventKind, pid: Pid, *, spent: bool = False) -> str | None:
        """The inbox message id of the ``kind`` event (``EXIT``, ``LINK_DOWN``) of the
        process ``pid`` for this workflow, named by the monitor or link of it this run
        made last: ``<pid>#<kind>@<message id of its seq>`` (of the run that made it).
        Each link or monitor of a dead pid gets its own event so, and a replay derives
        the same id, so a recovery's ``noproc`` for it is dropped if it was delivered
        before. ``None`` if it made none (a plain process spawned it linked): the id is
        then the one per process, kind and workflow. ``spent``: the link or monitor is
        forgotten (its event came, or the link ended quietly)."""
        ids = self.signal_ids
        if not ids:
            return None
        at = ids.pop((kind, pid), None) if spent else ids.get((kind, pid))
        return None if at is None else f"{pid}#{kind}@{at}"

    def watch_spent(self, kind: EventKind, pid: Pid) -> str | None:
        """The ``kind`` event (``EXIT``, ``LINK_DOWN``) of ``pid`` reached this workflow,
        or its link ended without one: the monitor or link of ``pid`` is forgotten (the
        tables keep live watches only: a workflow that watches many processes in a
        ``continue_as_new`` loop runs for ever); the id of the event, as
        :meth:`event_id`."""
        table = self.monitoring if kind is EventKind.EXIT else self.links
        if table:
            table.discard(pid)
        if not self.check_lost:
            # (one that comes while it replays may answer a monitor its replay made
            # again: what it read from its journal alone tells, see _ends_read)
            self.heard_end(kind, pid)
        if kind is EventKind.EXIT and "@" in pid.id:  # (may name another node: a plain pid)
            self.node.monitor_spent(pid, self.pid)
        return self.event_id(kind, pid, spent=True)

    def _signalled_at(self, kind: EventKind, pid: Pid, seq: int | None = None) -> None:
        """A link (``LINK_DOWN``) or monitor (``EXIT``) of ``pid`` at ``seq`` (the seq
        just taken): its event's id names it (:meth:`event_id`), by the message id of
        the seq in this run (an event that comes after a ``continue_as_new`` would
        otherwise take the new run's id of that seq: a link or monitor of ``pid`` the
        new run makes there again would get the same, dropped as delivered)."""
        ids = self.signal_ids
        if ids is None:
            ids = self.signal_ids = {}
        ids[(kind, pid)] = self._message_id(self.cursor.seq - 1 if seq is None else seq)

    def _delivered_per_process(self, kind: EventKind, pid: Pid) -> bool:
        """Whether the ``kind`` event of ``pid`` reached this workflow under the id one
        per process, kind and workflow: that of a store of before ids named the link
        or monitor, and of an event delivered while this workflow ran nowhere (see
        ``WorkflowHost.deliver_event``). A recovery's ``noproc`` would be a second.
        (Not read when that is the id the ``noproc`` gets: the inbox drops it.)"""
        if self.event_id(kind, pid) is None:
            return False
        return self.store.inbox_message(f"{pid}#{kind}@{self.wid}") is not None


    def _child_id(self, host: Any, seq: int) -> str:
        """The id of the child workflow started at ``seq``: ``<id>.<seq>``; in a continued
        run (its seqs start from 1 again) or when that id is taken by a workflow that is
        not this one's child, ``<id>.<run>.<seq>``. The journal records the pid, so a
        replay never derives it again."""
        plain = self._derived_child_id(seq, in_run=False)
        if not self.continued:
            record = host.store.get_workflow(plain)
            if record is None or (record.parent == self.pid
                                  and not self._spawned_before(host, plain, seq)):
                return plain
        child_id = self._derived_child_id(seq, in_run=True)
        if host.store.get_workflow(child_id) is not None:
            raise ValueError(f"workflow {self.wid!r} cannot start its child workflow "
                             f"{child_id!r}: a workflow with that id exists already")
        return child_id

    def _derived_child_id(self, seq: int, *, in_run: bool) -> str:
        """The two forms of a child's id (see :meth:`_child_id`): ``<id>.<seq>``, or
        ``in_run``, ``<id>.<run>.<seq>``."""
        if in_run:
            return f"{self.wid}.{self.run_id[:12] or 'run'}.{seq}"
        return f"{self.wid}.{seq}"

    def _spawned_before(self, host: Any, child_id: str, seq: int) -> bool:
        """Whether this workflow's journal records ``child_id`` as its child at another
        seq than ``seq`` (a child spawned with that id given explicitly: the id is
        taken). Read only when a workflow of that id exists with this one as parent."""
        pid = str(Pid(host.name, child_id))
        return any(entry.seq != seq and isinstance(entry.outcome, dict)
                   and entry.outcome.get("pid") == pid
                   for entry in self.store.journal(self.wid))

    def _message_id(self, seq: int) -> str:
        """The id of the message (or call request) sent at ``seq``: ``<id>#<seq>``; in a
        continued run, whose seqs start from 1 again, ``<id>.<run id>#<seq>`` (an inbox
        ignores an id it holds: the first run's message at that seq would make this one
        a duplicate, dropped). A send records its id, so a replay never derives it again.

        The whole run id (122 random bits): a store holds every message id for ever,
        whoever sent it to whom, and a run id's first 12 hex digits (48 bits), which a
        run continued by an older garrison keeps, agree between two of a workflow's runs
        one time in two within some 20 million of them."""
        if self.continued:
            run = self.run_id if self.whole_run_id else self.run_id[:12]
            return f"{self.wid}.{run or 'run'}#{seq}"
        return f"{self.wid}#{seq}"

    # ------------------------------------------------------------ Runtime protocol
    def current_pid(self) -> Pid:
        return self.pid

    async def spawn(self, target: Any, args: tuple[Any, ...], host: str | None, *,
                    link: bool, monitor: bool, id: str | None = None,
                    supervised: bool = False) -> Pid:
        # (``supervised`` needs no record here: a workflow's children are journaled,
        # and a cancelled workflow's children are cancelled with it)
        node = self.node
        host_name = self.host.name if host is None else host
        h = node.host(host_name)
        label = target if isinstance(target, str) else getattr(target, "__qualname__",
                                                               repr(target))
        entry = self._take(JournalKind.SPAWN, str(label))
        if entry is not None:
            await self._yield()
            pid = Pid.parse(entry.outcome["pid"])
            if link:
                self._keep_link_time(pid, entry.outcome.get("at"))
            self._spawned_signals(pid, h, link, monitor)
            return pid
        seq = self.cursor.seq - 1
        if h.durable and h.store is not self.store:
            where = h.store.path or "in memory"
            raise ValueError(
                f"workflow {self.wid!r} cannot spawn a workflow on host {host_name!r}: "
                f"that host has a store of its own ({where}), and a child workflow is "
                f"journaled with its parent in one store (this workflow's host is "
                f"{self.host.name!r}); spawn it on {self.host.name!r}, or have a process "
                f"start it on {host_name!r} (node.start_workflow)")
        if h.durable and id == self.wid:
            # the idempotent start would return this workflow's own pid, and the EXIT it
            # then waits for as its child's never comes (a continued run has the id too)
            raise ValueError(f"workflow {self.wid!r} cannot start itself as its child: "
                             f"id {id!r} is its own (give the child another id)")
        if self.records_pending and (id is not None or not h.durable or self.flushing):
            # the child or process may act on a recorded value (a child workflow started
            # by this spawn alone commits the buffered records with its start, but not
            # those of a commit in flight)
            await self.records_committed()
        if h.durable and id is not None:
            # a workflow by id: started idempotently (it may exist), then journaled; a
            # crash between the two starts it again on replay, which returns the same pid.
            # A link to it keeps its time, as :meth:`link`'s does (it may exist, run on
            # another node and be retried before a resume of this one)
            at = self.host.clock.now() if link and h.ownership is not None else None
            pid = await h.start(target, args, wid=id, parent=self.pid,
                                process_link=self.pid if link else None)
            h.add_durable_monitor(pid, self)  # its EXIT reaches this workflow, durably
            tx = Transaction()
            out: dict[str, Any] = {"pid": str(pid)}
            if at is not None:
                out["at"] = at
                self._keep_link_time(pid, at)
            self.record(tx, seq, JournalKind.SPAWN, str(label), _dumps(out))
            await self._commit(tx)
        elif h.durable:
            child_id = self._child_id(h, seq)
            pid = await h.start(target, args, wid=child_id, parent=self.pid,
                                prefix=self.take_buffer, journal=(self, seq, str(label)),
                                derived=True, watcher=self.pid,
                                process_link=self.pid if link else None)
        elif id is not None:
            raise TypeError(f"spawn(..., id={id!r}): host {host_name!r} is a process host, "
                            "whose processes get fresh pids; id= names a workflow on a "
                            "workflow host")
        else:
            pid = await node.spawn_process(target, args, host=host_name, parent=self.pid,
                                           link=self.pid if link else None,
                                           monitor=self.pid if monitor else None)
            tx = Transaction()
            self.record(tx, seq, JournalKind.SPAWN, str(label), _dumps({"pid": str(pid)}))
            await self._commit(tx)
        self._spawned_signals(pid, h, link, monitor, seq)
        return pid

    def _spawned_signals(self, pid: Pid, h: Any, link: bool, monitor: bool,
                         seq: int | None = None) -> None:
        """A spawn at ``seq`` (the seq just taken) of ``pid`` on host ``h`` linked or
        monitored it. (A plain process that ended meanwhile delivered its event under
        the id per process: ``_delivered_per_process`` reads that one too.) A child
        that ended while its spawn was being committed (a short process does, as a rule)
        has delivered its events before: no watch of it is kept. (A replay keeps them,
        and :meth:`_deliver_lost` drops those it finds spent.) A workflow's ``EXIT``
        reaches its spawner, monitored or not: asked for again (``ends_read``)."""
        if h.durable:
            self.asked_again(EventKind.EXIT, pid)
        if seq is not None and (link or monitor) and self._ended_before(pid, h):
            return
        if link:
            self._signalled_at(EventKind.LINK_DOWN, pid, seq)
            self.linked_to(pid)
        if monitor:
            if not h.durable:  # (a workflow's EXIT has an id of its own: exit_id)
                self._signalled_at(EventKind.EXIT, pid, seq)
            self.monitoring = added(self.monitoring, pid)

    def _ended_before(self, pid: Pid, h: Any) -> bool:
        """Whether ``pid``, just spawned on host ``h`` (of this node), has ended: a
        plain process's end told its monitors and links at once; a workflow's, the
        store has (read only for one not running here; ``False`` if the store fails
        to answer: its end reaches the watches)."""
        if h.is_alive(pid):
            return False
        if not h.durable:
            return True
        try:
            return bool(h.end_of(pid)[0])
        except StoreError:
            return False

    async def send(self, to: Pid | str, topic: str, payload: Any) -> None:
        if not self.cursor.replaying:  # (refused before a seq is taken; see check_text)
            check_text(topic, f"process.send() from workflow {self.wid!r}: the topic")
        entry = self._take(JournalKind.SEND, topic)
        if entry is not None:
            out = entry.outcome
            if type(out) is dict and "raised" in out:
                raise_recorded(out)  # (it raised the first time: nothing was sent)
            await self._send_again(out, topic, payload)
            await self._yield()
            return
        seq = self.cursor.seq - 1
        try:
            pid = self.node.resolve(to)
            text = to_json(payload, what=f"the payload of message {topic!r} sent by "
                                         f"workflow {self.wid!r}")
        except RECORDED_RAISES as exc:
            # journaled (buffered: nothing left the workflow), so that a replay raises
            # it here again instead of sending to a name someone may hold by then
            self.record(self.buffered(), seq, JournalKind.SEND, topic,
                        _dumps(raised_plain(exc)))
            raise
        msg_id = self._message_id(seq)
        tx = Transaction()
        self.record(tx, seq, JournalKind.SEND, topic, _dumps({"to": str(pid), "id": msg_id}))
        target = self.host.active.get(pid.id) if pid.host == self.host.name else None
        other = self.node.hosts.get(pid.host)
        trace = _observe.carrier() if _observe.tracing else None
        if target is None and other is self.host and self.host.ownership is not None:
            # in a cluster: a workflow another node runs gets it in the same transaction
            # (its node is woken by the store)
            record = self.host.store.get_workflow(pid.id)
            if record is not None and not WorkflowStatus(record.status).finished:
                tx.deliver(pid.id, topic, RawJson(text), msg_id=msg_id, sender=self.pid,
                           time=self.host.clock.now(), trace=trace)
                await self._commit(tx)
                self.node.stats_messages += 1
                await self._yield()
                return
        if target is not None:
            plain = payload if type(payload) in PLAIN and type(payload) is not float \
                else _loads(text)
            msg = Message(topic, plain, self.pid, msg_id, None, trace)
            item_plain = message_to_plain(msg)
            now = self.host.clock.now()
            tx.deliver(target.wid, topic, RawJson(text), msg_id=msg_id, sender=self.pid,
                       time=now, trace=trace)
            results = await self._commit(tx)
            row_id = results[-1]
            self.node.stats_messages += 1
            if row_id is not None:
                target.push(InboxItem(row_id, False, item_plain, now))
        elif other is not None and other.durable:
            # a finished workflow, or one on another durable host of this node
            await self._commit(tx)
            delivered = other is not self.host and await other.deliver_durable(
                pid, Message(topic, _loads(text), self.pid, msg_id, None, trace), text=text)
            if delivered:
                self.node.stats_messages += 1
            else:
                self.node.stats_dead_letters += 1
        else:
            await self._commit(tx)
            remote = getattr(self.node, "remote", None)
            if remote is not None and remote.node_of(pid) is not None:
                # a plain process of another node of the cluster: through its channel
                # (at most once, as any send to it; None: held until its node is known,
                # counted then)
                sent = remote.send(self.pid, pid, Message(topic, payload, self.pid, msg_id,
                                                          None, trace))
                if sent:
                    self.node.stats_messages += 1
                elif sent is not None:
                    self.node.stats_dead_letters += 1
            elif other is None:
                self.node.stats_dead_letters += 1
            elif other.deliver(pid, Message(topic, _detached(payload), self.pid, msg_id,
                                            None, trace)):
                self.node.stats_messages += 1
            else:
                self.node.stats_dead_letters += 1
        await self._yield()

    async def _send_again(self, out: Any, topic: str, payload: Any) -> None:
        """A replayed send to a workflow of another store is delivered again, under the
        id it was recorded with (an inbox ignores an id it holds): the sender's commit
        and the receiver's are two, and a crash between them lost the message. (Within
        one store they are one transaction: nothing to do.)"""
        target = out.get("to") if isinstance(out, dict) else None
        if not target or not out.get("id"):
            return
        try:
            pid = Pid.parse(target)
        except ValueError:  # (not a pid: nothing this could deliver to)
            return
        other = self.node.hosts.get(pid.host)
        if other is None or not other.durable or getattr(other, "store", self.store) \
                is self.store:
            return
        text = to_json(payload, what=f"the payload of message {topic!r} sent by workflow "
                                     f"{self.wid!r}")
        await other.deliver_durable(pid, Message(topic, _loads(text), self.pid, out["id"],
                                                 None, None), text=text)

    async def reply(self, msg: Message, value: Any) -> None:
        entry = self._take(JournalKind.REPLY, msg.topic)
        if entry is not None:
            await self._yield()
            # the caller of a replayed call is gone, or made it again and finds this
            # reply recorded (a workflow's call, see ``_replied_before``)
            return
        seq = self.cursor.seq - 1
        text, plain = json_round_trip(value, f"the reply to {msg.topic!r}")
        tx = Transaction()
        ref = msg.call_ref
        sender = msg.sender
        if ref is not None and sender is not None and msg.id \
                and msg.id.startswith(sender.id) and "#" in msg.id[len(sender.id):]:
            # a workflow's call: its ref is ``<host>/<request id>`` (a request a garrison
            # of before string refs sent held a count: the caller, loaded again, waits
            # under this one). The reply is kept on the request's inbox row, for the
            # caller to find if a crash lost it before the caller recorded it (its
            # request, sent again, is then a duplicate this workflow never sees;
            # ``Interop._replied_before``)
            ref = call_ref(sender.host, msg.id)
            if ref != msg.call_ref:
                msg = Message(msg.topic, msg.payload, sender, msg.id, ref, msg.trace)
            tx.record_reply(self.wid, msg.id, text)
            out = f'{{"to": {_dumps(str(sender))}, "ref": {_dumps(ref)}}}'
        else:
            out = _dumps({"to": str(sender)})
        self.record(tx, seq, JournalKind.REPLY, msg.topic, out)
        await self._commit(tx)
        if sender is not None and msg.call_ref is not None:
            self.reply_to(msg, plain)

    # ------------------------------------------------------------ links and monitors
    def _take_target(self, kind: JournalKind, to: Pid | str) -> tuple[bool, Pid]:
        """Take the next seq for an operation on ``to`` (a pid, its text form or a
        registered name); ``(live, pid)``. The journal records ``to`` as given and the
        pid it named, so a replay never resolves a name (it may not be registered yet)."""
        replayed, pid = self._target_entry(kind, to)
        return replayed is None, pid

    def _target_entry(self, kind: JournalKind, to: Pid | str) -> tuple[Entry | None, Pid]:
        """:meth:`_take_target`, giving the replayed entry (``None``: live)."""
        label = str(to)
        entry = self.cursor.peek()
        if (entry is not None and entry.kind == kind and entry.name != label
                and "/" in entry.name and "/" not in label):
            label = entry.name  # journaled before names were recorded as given: a pid
        replayed = self._take(kind, label)
        if replayed is not None:
            out = replayed.outcome
            recorded = out.get("pid") if isinstance(out, dict) else None
            if recorded is None and isinstance(out, dict) and "raised" in out:
                raise_recorded(out)  # a name nobody held the first time
            return replayed, Pid.parse(recorded if recorded is not None else replayed.name)
        try:
            pid = self.node.resolve(to)
        except NoSuchProcess as exc:  # journaled: a replay raises it here again
            self.record(self.buffered(), self.cursor.seq - 1, kind, label,
                        _dumps(raised_plain(exc)))
            raise
        return None, pid

    def _record_target(self, kind: JournalKind, to: Pid | str, pid: Pid,
                       at: float | None = None) -> None:
        """Journal a live synchronous operation on ``to`` (buffered: committed with the
        workflow's next write); ``at``: when, for a link (see :meth:`link`)."""
        out: dict[str, Any] = {"pid": str(pid)}
        if at is not None:
            out["at"] = at
        self.record(self.buffered(), self.cursor.seq - 1, kind, str(to), _dumps(out))

    def link(self, to: Pid | str) -> None:
        if to == self.pid or to == str(self.pid):
            return  # linking to itself: nothing to do, nothing journaled
        replayed, pid = self._target_entry(JournalKind.LINK, to)
        live = replayed is None
        # a link to a workflow of a cluster's store keeps its time: another node may
        # run that workflow, and the link is of the attempt of it that ran then, which
        # a node that resumes this one after a retry of it tells by that time
        # (``_attempts.Watch``; the link is made without a read of the store)
        at: Any = None
        if replayed is not None:
            out = replayed.outcome
            at = out.get("at") if isinstance(out, dict) else None
        elif getattr(self.node.hosts.get(pid.host), "ownership", None) is not None:
            at = self.host.clock.now()
        if live:
            self._record_target(JournalKind.LINK, to, pid, at)
        self._keep_link_time(pid, at)
        if pid == self.pid:
            return
        self._signalled_at(EventKind.LINK_DOWN, pid)
        self.linked_to(pid)
        if live and not self.node.link(pid, self.pid):
            # a dead pid: a linked exit at once (when trapping, a LINK_DOWN of this
            # link's own: see event_id)
            self.host.linked_exit(self.pid, pid, noproc(pid))

    def _keep_link_time(self, pid: Pid, at: Any) -> None:
        """Its link to ``pid`` was made at ``at`` (unix seconds, as journaled; nothing
        for a journal without it): the attempt of ``pid`` it is of (``link_times``)."""
        if type(at) in (int, float):
            self.link_times = self.link_times or {}
            self.link_times[pid] = float(at)

    def linked_to(self, pid: Pid, *, theirs: bool = False) -> None:
        """A link to ``pid`` (by ``link``, a linked spawn, or made from the other side:
        ``theirs``, never a step of this one's replay): a pid unlinked before counts
        as linked again."""
        self.links = added(self.links, pid)
        if self.unlinked:
            self.unlinked.pop(pid, None)
        self.asked_again(EventKind.LINK_DOWN, pid, live=theirs)

    def unlink(self, to: Pid | str) -> None:
        try:
            live, pid = self._take_target(JournalKind.UNLINK, to)
        except NoSuchProcess:  # a name nobody holds: nothing to undo (journaled: a replay
            return             # returns here too)
        if live:
            self._record_target(JournalKind.UNLINK, to, pid)
        self._end_links((pid,))

    def drop_links(self) -> None:
        """Unlink every pid this workflow links to, unjournaled (a run that continues
        as new ends its links: the new run links anew)."""
        if self.links:
            self._end_links(sorted(self.links))
        self.links = None

    def _end_links(self, pids: Iterable[Pid]) -> None:
        """The links to ``pids`` end, here and on their side: each one's ``LINK_DOWN`` id
        is spent, and a linked exit of it already on its way is not taken for
        ``UNLINK_GRACE`` (see :attr:`unlinked`)."""
        now = trio.current_time()
        self.unlinked = {p: t for p, t in (self.unlinked or {}).items() if t > now}
        for pid in pids:
            if self.links:
                self.links.discard(pid)
            self.event_id(EventKind.LINK_DOWN, pid, spent=True)
            self.unlinked[pid] = now + UNLINK_GRACE
            self.node.unlink(pid, self.pid)

    def monitor(self, to: Pid | str) -> None:
        live, pid = self._take_target(JournalKind.MONITOR, to)
        self.monitoring = added(self.monitoring, pid)
        self.asked_again(EventKind.EXIT, pid)
        h = self.node.hosts.get(pid.host)
        if h is None or not h.durable:  # (a workflow's EXIT has an id of its own: exit_id)
            self._signalled_at(EventKind.EXIT, pid)
        if not live:
            return
        self._record_target(JournalKind.MONITOR, to, pid)
        if h is not None and h.durable:
            # a workflow that has ended, whose EXIT reached this one before (for another
            # monitor of it), gives this monitor an EXIT of its own (as a dead process
            # does), under an id of this monitor (see event_id). (Whether it held a
            # monitor of it tells nothing: a replayed one is held until its recovery's
            # look has been written)
            h.add_durable_monitor(pid, self, again=f"{pid}#{EventKind.EXIT}@"
                                  f"{self._message_id(self.cursor.seq - 1)}")
        elif not self.node.monitor(pid, self.pid, self.event_id(EventKind.EXIT, pid)):
            # a dead pid: its EXIT at once, under an id of this monitor's own (see
            # event_id: the EXIT this workflow may have had of it holds another; the
            # node of a pid of another node answers with the id given it)
            self.host.deliver_event(self.pid, Event(EventKind.EXIT, pid, None, noproc(pid)))

    def demonitor(self, to: Pid | str) -> None:
        try:
            live, pid = self._take_target(JournalKind.DEMONITOR, to)
        except NoSuchProcess:  # (see unlink)
            return
        if live:
            self._record_target(JournalKind.DEMONITOR, to, pid)
        if self.monitoring:
            self.monitoring.discard(pid)
        self.event_id(EventKind.EXIT, pid, spent=True)
        h = self.node.hosts.get(pid.host)
        if h is not None and h.durable:
            h.remove_durable_monitor(pid, self)
        else:
            self.node.demonitor(pid, self.pid)

    def set_options(self, *, trap_links: bool | None = None) -> None:
        if trap_links is not None:
            self.trap_links = bool(trap_links)

    def supervises(self, children: Callable[[], list[Pid]]) -> None:
        """(A workflow's children are stopped with it by its host's own rules.)"""

    def hold_start(self) -> Callable[[], None]:
        """(A workflow runs once it has left its host's queue: nothing holds that.)"""
        return _nothing

    async def cancel(self, to: Pid | str, timeout: float) -> None:
        live, pid = self._take_target(JournalKind.CANCEL_PROCESS, to)
        if live:
            seq = self.cursor.seq - 1
            if self.records_pending:
                await self.records_committed()  # (a looked-up pid, say)
            await self.node.cancel(pid, self.pid, timeout)
            tx = Transaction()
            self.record(tx, seq, JournalKind.CANCEL_PROCESS, str(to), _dumps({"pid": str(pid)}))
            await self._commit(tx)
        else:
            await self._yield()

    async def terminate(self, to: Pid | str) -> None:
        live, pid = self._take_target(JournalKind.TERMINATE, to)
        if live:
            seq = self.cursor.seq - 1
            if self.records_pending:
                await self.records_committed()  # (a looked-up pid, say)
            await self.node.terminate(pid, self.pid)
            tx = Transaction()
            self.record(tx, seq, JournalKind.TERMINATE, str(to), _dumps({"pid": str(pid)}))
            await self._commit(tx)
        else:
            await self._yield()

    def register(self, name: str, scope: str = "node") -> None:
        """Journaled at a seq of its own (``register``: the scope, or the ``ValueError``
        or ``StoreError`` it raised), buffered. A replay does not take the name where
        the code registers it (another process may hold it by then, and the code may
        have given it up again since): it counts what the code holds and takes those
        names where it goes live (:meth:`_hold_names`).

        A journal written before registers were recorded has no record for it: a
        register replayed inside such a journal (records or a timer follow) takes no
        seq and counts as held, as it was the first time (a name another process held
        raised then, and a replay cannot tell: it is counted held)."""
        entry = self.cursor.peek()
        if entry is not None and entry.kind == JournalKind.REGISTER:
            entry = self._take(JournalKind.REGISTER, name, cancel=False)  # checks the name
            out = entry.outcome if entry is not None else None
            if isinstance(out, dict) and "raised" in out:
                raise_recorded(out)
            self._held(name, scope)
            return
        if self.is_replaying():
            self.cursor.check()
            self._held(name, scope)  # (a journal of before: no seq was taken)
            return
        self._take(JournalKind.REGISTER, name, cancel=False)
        seq = self.cursor.seq - 1
        try:
            self.node.register(name, self.pid, scope)
        except (ValueError, StoreError) as exc:
            self.record(self.buffered(), seq, JournalKind.REGISTER, name,
                        _dumps(raised_plain(exc)))
            raise
        self.record(self.buffered(), seq, JournalKind.REGISTER, name, _dumps({"scope": scope}))
        held = self.held_names
        if held is None:
            held = self.held_names = {}
        held[name] = scope
        self.host.names.setdefault(self.wid, set()).add(name)

    def _held(self, name: str, scope: str) -> None:
        """A replayed register: the code holds ``name``; taken where the replay goes
        live (at once if it has: a record after a seq taken and never recorded)."""
        held = self.held_names
        if held is None:
            held = self.held_names = {}
        held[name] = scope
        if not self.check_lost:
            self._hold_names()

    def _hold_names(self) -> None:
        """Where a replay goes live: take the names its code holds (registered before
        the restart, or by the run before a continue-as-new) that this node has not
        registered for it yet. A name another process took meanwhile stays that one's:
        logged, not raised (the code registered it long ago, and goes on without it)."""
        held = self.held_names
        if not held or self.orphaned:
            return
        mine = self.host.names.get(self.wid)
        for name, scope in held.items():
            if mine is not None and name in mine:
                continue
            try:
                self.node.register(name, self.pid, scope)
            except (ValueError, StoreError) as exc:
                log.warning("workflow %s (%s) held the name %r before it resumed, and does "
                            "not hold it again: %s", self.wid, self.name, name, exc,
                            extra={"workflow_id": self.wid, "pid": str(self.pid)})
                continue
            if mine is None:
                mine = self.host.names.setdefault(self.wid, set())
            mine.add(name)

    def give_up_names(self) -> None:
        """A supervisor's child whose supervisor has ended: the supervisor started in
        its place (at the next node start, or on the node that runs its incarnation
        now) starts its own child, which registers the same names; this one, cancelled
        and maybe running a durable cleanup, holds none of them from now on (its
        journaled registers are not taken again where its replay goes live)."""
        self.orphaned = True
        for name in self.host.names.pop(self.wid, ()):
            self.node.unregister(name, self.pid)

    def unregister(self, name: str) -> None:
        """Not journaled (it cannot fail): live or replayed, the code no longer holds
        ``name``; released if this workflow holds it on the node."""
        held = self.held_names
        if held:
            held.pop(name, None)
        self.node.unregister(name, self.pid)
        mine = self.host.names.get(self.wid)
        if mine:
            mine.discard(name)

    def lookup(self, name: str) -> Pid | None:
        """Journaled: a replay sees the pid (or ``None``) the first run saw."""
        entry = self._take(JournalKind.LOOKUP, name)
        if entry is not None:
            recorded = (entry.outcome or {}).get("pid")
            return None if recorded is None else Pid.parse(recorded)
        pid = self.node.lookup(name)
        self.record(self.buffered(), self.cursor.seq - 1, JournalKind.LOOKUP, name,
                    _dumps({"pid": None if pid is None else str(pid)}))
        return pid

    async def call(self, to: Pid | str, topic: str, payload: Any, timeout: Any) -> Any:
        if not self.cursor.replaying:
            check_text(topic, f"process.call() from workflow {self.wid!r}: the topic")
        entry = self._take(JournalKind.CALL, topic)
        if entry is not None:
            await self._yield()
            out = entry.outcome
            if "ok" in out:
                return out["ok"]
            if "raised" in out:
                raise_recorded(out)  # a name nobody held, a value with no JSON form
            err = error_from_plain(out["error"])
            if out.get("timeout"):
                raise TimeoutError(err.message)
            raise ProcessError(err.message, pid=Pid.parse(out["pid"]), error=err)
        seq = self.cursor.seq - 1
        if self.cancel_at is not None:  # asked before this run: it came as the call ran
            self.cancel_first()
        if self.records_pending:
            await self.records_committed()  # the request may carry a recorded value
        node = self.node
        try:
            pid = node.resolve(to)
        except NoSuchProcess as exc:
            await self._record_raised(seq, topic, exc)
            raise
        seconds = timeout_seconds(timeout)
        callee = node.caller_of(pid)
        h = node.hosts.get(pid.host)
        if callee is None and h is not None and h.durable and h.runs_elsewhere(pid.id):
            callee = h.elsewhere.watch(pid)  # another node runs it: it replies here
        # the call's ref: its request's message id under this host's name (a workflow of
        # another store may have this id); see ``next_call_ref``
        msg_id = self._message_id(seq)
        ref = call_ref(self.host.name, msg_id)
        result: dict[str, Any]
        answered = None
        if callee is None and seq == self.resend_seq and h is not None and h.durable:
            # a workflow that ended since it answered this call, before a crash here
            # lost the answer: the answer it recorded
            answered = recorded_reply(h.store, pid.id, msg_id)
        try:
            if answered is not None:
                value = answered[0]
            else:
                value = await self._exchange(callee, pid, h, topic, payload, seconds, seq,
                                             msg_id, ref)
        except (TimeoutError, ProcessError) as exc:
            if isinstance(exc, ProcessError) and node.stopping:
                # the node's stop ended the callee (services stop before workflows), or
                # it is gone as the node stops: no outcome of the call, nothing recorded;
                # the workflow parks as the stop reaches it, and makes the call again
                # when a node resumes it (recorded, it would fail for good)
                await trio.sleep_forever()
            err = exc.error if isinstance(exc, ProcessError) and exc.error else \
                ErrorInfo(type(exc).__name__, str(exc))
            err = ErrorInfo(err.type, str(exc), "")
            result = {"error": error_to_plain(err), "pid": str(pid),
                      "timeout": isinstance(exc, TimeoutError)}
            tx = Transaction()
            self.record(tx, seq, JournalKind.CALL, topic, _dumps(result))
            await self._commit(tx)
            raise
        except PayloadError as exc:  # the request to a workflow has no JSON form
            await self._record_raised(seq, topic, exc)
            raise
        # (its reply is JSON already: see ``WorkflowCore.finish_call``)
        try:
            _text, plain_value = json_round_trip(value, f"the reply to call {topic!r}")
        except PayloadError as exc:  # (the call was made: recorded, not made again)
            await self._record_raised(seq, topic, exc)
            raise
        tx = Transaction()
        self.record(tx, seq, JournalKind.CALL, topic, _dumps({"ok": plain_value}))
        await self._commit(tx)
        return plain_value

    async def _exchange(self, callee: Caller | None, pid: Pid, h: Any, topic: str,
                        payload: Any, seconds: float, seq: int, msg_id: str, ref: str) -> Any:
        """The live call ``ref`` (at ``seq``) to ``callee`` (``pid``, of host ``h``): its
        request goes to a workflow's inbox durably, as the message ``msg_id``."""
        node = self.node
        if callee is None or not callee.accepts_calls:
            raise ProcessError(f"call to {pid} failed: {noproc(pid)}", pid=pid,
                               error=noproc(pid))
        deliver: Callable[[str], Awaitable[Any] | None]
        if isinstance(callee, (WorkflowCore, RemoteWorkflow)):
            text = to_json(payload, what=f"the payload of call {topic!r}")
            plain = _loads(text)
            durable = h if h is not None else self.host  # (the host of its pid)

            async def deliver_durably(ref: str) -> None:
                if await durable.deliver_durable(
                        pid, Message(topic, plain, self.pid, msg_id, ref,
                                     _observe.carrier() if _observe.tracing else None),
                        text=text):
                    node.stats_messages += 1
                if seq == self.resend_seq:  # (sent before a crash, maybe: answered?)
                    self._replied_before(durable, pid, msg_id, ref)

            deliver = deliver_durably
        else:
            process = callee

            def deliver_now(ref: str) -> None:
                node.stats_messages += 1
                process.deliver(Message(topic, payload, self.pid, node.message_id(), ref,
                                        _observe.carrier() if _observe.tracing else None))

            deliver = deliver_now
        clock = self.host.clock
        if clock.virtual and 0 < seconds < math.inf:
            return await self._exchange_on(clock, callee, pid, topic, seconds, deliver, ref)
        return await self.exchange(callee, pid, topic, seconds, deliver, ref=ref)

    async def _exchange_on(self, clock: WallClock, callee: Caller, pid: Pid, topic: str,
                           seconds: float, deliver: Callable[[str], Awaitable[Any] | None],
                           ref: str) -> Any:
        """The call ``ref`` with its timeout on the host's ``clock``, a virtual one
        (``garrison.testing``'s) whose jumps trio's deadlines never see: the timeout
        falls due on the workflow's time, as its timers do (an alarm of the clock
        cancels the wait; no task of its own, so the call's errors come out as they
        are). It runs from the request's delivery, as the kernel's does.

        A plain process answers in real time (its I/O, a thread, ``trio.sleep``), when
        every task looks blocked and the clock would jump past a virtual timeout: a
        call to one keeps its real timeout, as plain processes' own timeouts do (the
        workflow runs its step meanwhile: the environment never takes it for stuck)."""
        if not isinstance(callee, (WorkflowCore, RemoteWorkflow)):
            return await self.exchange(callee, pid, topic, seconds, deliver, ref=ref)
        scope = trio.CancelScope()
        disarm: Callable[[], None] | None = None

        async def delivered(ref: str) -> None:
            nonlocal disarm
            sent = deliver(ref)
            if sent is not None:
                await sent
            disarm = clock.alarm(seconds, scope.cancel)

        try:
            with scope:
                return await self.exchange(callee, pid, topic, math.inf, delivered, ref=ref)
        finally:
            if disarm is not None:
                disarm()
        raise TimeoutError(f"call to {pid} (topic {topic!r}) got no reply within "
                           f"{seconds:g}s")

    def _replied_before(self, host: Any, pid: Pid, msg_id: str, ref: str) -> None:
        """The call ``ref``, made again after this workflow was loaded, may have sent
        its request before (then a duplicate, dropped) and been answered, the answer
        lost with the crash: that answer, recorded by the callee, is its reply. (The
        caller is registered: an answer the callee gives from now on reaches it.)"""
        answered = recorded_reply(host.store, pid.id, msg_id)
        calls = self.calls
        if answered is not None and calls is not None and ref in calls \
                and calls[ref] is None:
            calls[ref] = outcome.Value(answered[0])

    async def _record_raised(self, seq: int, topic: str, exc: Exception) -> None:
        """Journal (committed before the code sees it) that the call at ``seq`` raised
        ``exc``: a replay raises it again, and never makes the call."""
        tx = Transaction()
        self.record(tx, seq, JournalKind.CALL, topic, _dumps(raised_plain(exc)))
        await self._commit(tx)
