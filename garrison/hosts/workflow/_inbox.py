"""A workflow's durable inbox: messages and events committed before they are
delivered, and receives that journal which inbox row they consumed.

Every message or event for a workflow is an inbox row (committed before ``send``
returns); the instance keeps the pending ones in memory (:class:`InboxItem`) in
arrival order. A receive takes its journal seq where it is created, so it can be
raced in ``workflow.first``; the row it consumes is marked in the same transaction
as the journal record. On replay the recorded item is returned and its row, already
consumed, is dropped from the pending list.
"""

from __future__ import annotations

import json
from typing import Any

from ... import _observe
from ...actors._mailbox import timeout_seconds
from ...actors._values import EventKind
from ...persistence import Transaction, WorkflowStatus, requested_attempt
from ._core import WaitCancelled, WorkflowCore, added, recordable
from ._journal import (
    Entry,
    JournalKind,
    event_from_plain,
    message_from_plain,
)

__all__ = ["CONTROL", "DurableInbox", "InboxItem", "PendingReceive", "Receives", "exit_attempt",
           "exit_id", "is_linked_row", "item_from_record", "linked_id", "stale_request"]

_RECEIVE = JournalKind.RECEIVE
_dumps = json.dumps
_loads = json.loads


#: the inbox kind of a request to the host, never handed to the workflow's code: a tool
#: asks the node running the workflow to end it (``garrison workflows terminate``)
CONTROL = "control"


def exit_id(ended: str, watcher: str, attempt: int = 1) -> str:
    """The inbox message id of the ``EXIT`` of workflow ``ended``'s attempt ``attempt``
    for the workflow ``watcher`` (ids are unique across the store: one per watcher and
    attempt, and one however many times it is delivered: at the end, by a monitor made
    after it, at a recovery). The first attempt's is the one id of a store written
    before ids carried the attempt. A later attempt's (a retry that ended) carries its
    number: with the first's, the store dropped it as delivered, and a monitor made
    after the retry never heard of the new end. The monitors of an earlier attempt
    hear nothing of it: a retry of a failed workflow forgets its monitors (its failure
    told them), and a replayed monitor of an earlier attempt asks for nothing more
    (``WorkflowHost.replayed_monitor_spent``)."""
    if attempt <= 1:
        return f"{ended}#exit@{watcher}"
    return f"{ended}#exit#{attempt}@{watcher}"


def exit_attempt(msg_id: str, watcher: str) -> int:
    """The attempt whose end the inbox message ``msg_id`` of the workflow ``watcher``
    is the ``EXIT`` of, as :func:`exit_id` names it (``1`` for the first attempt's
    form, and for an id of another form). (Either id may hold ``@``: a schedule's
    workflows are named ``<id>@<tick>``.)"""
    if not msg_id.endswith(f"@{watcher}"):
        return 1
    head = msg_id[:-len(watcher) - 1]
    _ended, mark, attempt = head.rpartition("#exit#")
    return int(attempt) if mark and attempt.isascii() and attempt.isdigit() else 1


#: the key of a ``LINK_DOWN`` event's plain form that marks it a *linked row*: written
#: by the end of a workflow (``WorkflowHost._ending_with``) into the inbox of a workflow
#: linked to it that another node of the cluster runs (or none yet), whatever that one
#: traps; the node that runs it acts on it (``WorkflowHost.linked_rows``): a
#: ``LINK_DOWN`` its code reads if it traps links, else the linked failure that ends it
LINKED = "linked"


def linked_id(dead: str, target: str, attempt: int = 1) -> str:
    """The inbox message id of the linked row of the failed workflow ``dead`` (its pid)
    for the workflow ``target``, written by the end of ``dead``'s attempt ``attempt``.
    The first attempt's is the id one per (process, kind, workflow) that a
    ``LINK_DOWN`` delivered to a workflow running nowhere has
    (``WorkflowHost._event_row``), so the first of the two is kept, and a recovery
    that finds it delivered does not deliver it again (``_delivered_per_process``); it
    is also the one id of a store written before ids carried the attempt. A later
    attempt's (a retry failed again) carries its number: with the first's, the store
    dropped it as delivered, and ``target`` never heard of that failure."""
    if attempt <= 1:
        return f"{dead}#LINK_DOWN@{target}"
    return f"{dead}#LINK_DOWN#{attempt}@{target}"


def is_linked_row(plain: Any) -> bool:
    """``plain`` (an event's stored form) is a linked row (:data:`LINKED`)."""
    return isinstance(plain, dict) and plain.get(LINKED) is True


def stale_request(row: Any, record: Any) -> bool:
    """True if the ``control`` row asks to end an attempt of ``record``'s workflow that
    has ended already (the workflow was retried since)."""
    attempt = requested_attempt(row.payload)
    return attempt is not None and attempt < record.attempt


class InboxItem:
    """A pending inbox row held in memory: its row id (arrival order), whether it is an
    event, its plain JSON form (what the journal records), the value handed out, and
    when it was committed (the row's ``created``, wall clock: a receive whose timeout
    passed takes only what arrived before its deadline)."""

    __slots__ = ("created", "event", "id", "plain", "value")

    def __init__(self, row_id: int, event: bool, plain: dict[str, Any], created: float) -> None:
        self.id = row_id
        self.event = event
        self.plain = plain
        self.created = created
        self.value: Any = event_from_plain(plain) if event else message_from_plain(plain)


def item_from_record(rec: Any) -> InboxItem:
    """An :class:`InboxItem` from a stored :class:`~garrison.persistence.InboxRecord`."""
    created = rec.created.timestamp()
    if rec.kind == "event":
        return InboxItem(rec.id, True, rec.payload, created)
    plain = {"topic": rec.topic, "payload": rec.payload,
             "sender": None if rec.sender is None else str(rec.sender),
             "id": rec.msg_id, "call_ref": rec.call_ref}
    if rec.trace is not None:
        plain["trace"] = rec.trace
    return InboxItem(rec.id, False, plain, created)


class DurableInbox:
    """A workflow's inbox (general, one topic, or events): receives are journaled.

    Same interface as :class:`~garrison.Inbox`: ``await receive(timeout=None)``
    (``None`` on timeout; the timeout is a durable timer), ``try_receive()``,
    ``async for msg in inbox``.
    """

    __slots__ = ("_wf", "channel", "topic")

    def __init__(self, wf: Receives, channel: str, topic: str | None = None) -> None:
        self._wf = wf
        self.channel = channel
        self.topic = topic

    def __repr__(self) -> str:
        return f"<DurableInbox {self.channel} of {self._wf.pid}>"

    def __len__(self) -> int:
        return sum(1 for item in self._wf.pending if self._wf._matches(self, item))

    def receive(self, timeout: Any = None) -> PendingReceive:
        """The next item (journaled); ``await`` it. With ``timeout`` (a durable timer),
        ``None`` when it expires. Its place in the journal is taken here, so it can also
        be raced in ``workflow.first`` (without a timeout: race a ``workflow.timer``)::

            reply = process.inbox().receive()
            done = await workflow.first(reply, workflow.timer("1h"))
        """
        return self._wf._start_receive(self, timeout)

    def try_receive(self) -> Any:
        """The next item if one is waiting, else ``None``; journaled, never waits."""
        item = self._wf._try_receive(self)
        if _observe.tracing:  # a message's trace context becomes current
            _observe.received(item)
        return item

    def __aiter__(self) -> DurableInbox:
        return self

    async def __anext__(self) -> Any:
        return await self.receive()


class PendingReceive:
    """A receive from a workflow's inbox (``inbox.receive()``): ``await`` it for the
    item, or race it in ``workflow.first``. ``done()`` says whether an item is there."""

    __slots__ = ("_wf", "box", "resolved", "seconds", "seq", "value")

    def __init__(self, wf: Receives, box: DurableInbox, seconds: float | None,
                 seq: int, resolved: bool, value: Any) -> None:
        self._wf = wf
        self.box = box
        self.seconds = seconds
        self.seq = seq
        self.resolved = resolved
        self.value = value

    def __repr__(self) -> str:
        return f"<receive from {self.box.channel} {'done' if self.settled() else 'pending'}>"

    def done(self) -> bool:
        """True once recorded, or while a matching item waits in the inbox; recorded
        (a replay returns what the first run saw, not the inbox as it is now)."""
        return self._wf.recorded_done(self)

    @property
    def recorded_as(self) -> str:
        """What it is in the journal (see ``ActivityHandle.recorded_as``)."""
        return f"receive {self.box.channel}"

    def settled(self) -> bool:
        """:meth:`done` unrecorded, for garrison's own waits (``first``): true once
        recorded, or while a matching item waits in the inbox (past the deadline of its
        timeout: one that arrived before the deadline)."""
        return self.resolved or self._wf._find(
            self.box, None if self.seconds is None else self._wf.timers.get(self.seq)
        ) is not None

    def __await__(self) -> Any:
        return self._wf._await_receive(self).__await__()


class Receives(WorkflowCore):
    """The inbox part of a workflow instance."""

    __slots__ = ()

    # ------------------------------------------------------------ delivery (host side)
    def push(self, item: InboxItem) -> None:
        """A committed inbox row arrives: queue it and wake the workflow (unless a
        refresh from the store queued it first, between its commit and this call)."""
        refreshed = self.refreshed
        if refreshed is not None and item.id in refreshed:
            refreshed.discard(item.id)
            if not refreshed:
                self.refreshed = None
            return
        self.queue_item(item)
        self.wake()

    # ------------------------------------------------------------ the inboxes
    def inbox(self) -> DurableInbox:
        return self._box("inbox", None)

    def listen(self, topic: str) -> DurableInbox:
        if not isinstance(topic, str):
            raise TypeError(f"listen() takes a topic string, got {type(topic).__name__}")
        self.topics = added(self.topics, topic)
        return self._box("topic:" + topic, topic)

    def events(self) -> DurableInbox:
        return self._box("events", None)

    def _box(self, channel: str, topic: str | None) -> DurableInbox:
        boxes = self._inboxes
        if boxes is None:  # (most workflows never receive: no dict until one does)
            boxes = self._inboxes = {}
        box = boxes.get(channel)
        if box is None:
            box = boxes[channel] = DurableInbox(self, channel, topic)
        return box

    def _matches(self, box: DurableInbox, item: InboxItem) -> bool:
        if box.channel == "events":
            return item.event
        if item.event:
            return False
        topic = item.value.topic
        if box.topic is not None:
            return bool(topic == box.topic)
        return not self.topics or topic not in self.topics

    def _find(self, box: DurableInbox, deadline: float | None = None) -> InboxItem | None:
        """The first pending item for ``box``. Past ``deadline`` (a receive's timeout),
        only one committed before it: the receive timed out at its deadline, whatever
        arrived later (a message sent while the node was down, or after it restarted),
        so a replay after a restart decides as the first run did."""
        if deadline is None or self.host.clock.now() < deadline:
            for item in self.pending:
                if self._matches(box, item):
                    return item
            return None
        for item in self.pending:
            if item.created < deadline and self._matches(box, item):
                return item
        return None

    def _before_cancel(self, box: DurableInbox) -> bool:
        """True if an item for ``box`` arrived before the cancel of the running
        workflow that has not reached its code yet (``cancel_mark``): a receive takes it
        before the cancel comes, as it would have, had the workflow run before the
        request came."""
        mark = self.cancel_mark
        if mark is None or self.cancel_delivered or not self.cancel_requested:
            return False
        return any(item.id <= mark and self._matches(box, item) for item in self.pending)

    def _held_before_cancel(self) -> bool:
        """True if any item that arrived before the cancel of the running workflow
        (``cancel_mark``) has not reached its code yet."""
        mark = self.cancel_mark
        if mark is None or self.cancel_delivered or not self.cancel_requested:
            return False
        return any(item.id <= mark for item in self.pending)

    # ------------------------------------------------------------ receiving
    def _replayed_receive(self, entry: Entry) -> Any:
        """The item a recorded receive took (its row leaves the pending list), or
        ``None`` for a recorded timeout or empty inbox."""
        out = entry.outcome or {}
        if "inbox" in out:
            row_id = out["inbox"]
            for item in self.pending:
                if item.id == row_id:
                    self.unqueue_item(item)
                    break
        if "message" in out:
            return message_from_plain(out["message"])
        if "event" in out:
            event = event_from_plain(out["event"])
            if event.kind is EventKind.EXIT or event.kind is EventKind.LINK_DOWN:
                self.heard_end(event.kind, event.pid)  # (a workflow's: see ends_read)
            return event
        return None

    def _check_item_recorded(self, entry: Entry) -> None:
        """A receive without a timeout replays ``entry``: one that recorded no item (a
        receive that timed out, a ``try_receive`` that found nothing) is a divergence
        (the code changed the wait: it would get ``None``, which such a receive never
        returns). Any other outcome replays as it did (a receive that never took a row
        has always recorded one of those two)."""
        out = entry.outcome
        if not isinstance(out, dict):
            return
        if out.get("timeout"):
            what = "that timed out"
        elif out.get("empty"):
            what = "that found nothing (try_receive)"
        else:
            return
        raise self.cursor.diverge(entry.seq, entry.kind, entry.name,
                                  f"receive {entry.name!r} with no timeout",
                                  recorded=f"receive {entry.name!r} {what}")

    def _consume(self, item: InboxItem, box: DurableInbox, seq: int, tx: Transaction) -> Any:
        """Take ``item`` for the receive at ``seq``: journaled and marked consumed in
        ``tx``; returns the value handed to the workflow."""
        self.unqueue_item(item)
        self.taken = added(self.taken, item.id)  # until a commit of it returns
        key = "event" if item.event else "message"
        self.record(tx, seq, _RECEIVE, box.channel,
                     _dumps({"inbox": item.id, key: item.plain}, separators=(",", ":")))
        tx.consume(self.wid, item.id, seq)
        return item.value

    def _start_receive(self, box: DurableInbox, timeout: Any) -> PendingReceive:
        """``inbox.receive()``: the seq is taken where the receive is created."""
        seconds = None if timeout is None else timeout_seconds(timeout)
        entry = self._take(_RECEIVE, box.channel, timed=seconds is not None,
                           cancel=self.cancel_mark is None or not self._before_cancel(box))
        if entry is not None:
            if seconds is None:
                self._check_item_recorded(entry)
            return PendingReceive(self, box, seconds, entry.seq, True,
                                  self._replayed_receive(entry))
        return PendingReceive(self, box, seconds, self.cursor.seq - 1, False, None)

    def _claim(self, r: PendingReceive, tx: Transaction) -> None:
        """Take the waiting item for ``r`` (``r.settled()`` was true): recorded in ``tx``."""
        item = self._find(r.box)
        assert item is not None
        r.resolved, r.value = True, self._consume(item, r.box, r.seq, tx)

    async def _await_receive(self, r: PendingReceive) -> Any:
        # (another workflow's task, a nursery's, or any once this one has ended: the
        # item would reach it, unrecorded in its own journal)
        self._in_own_task("an await of a receive")
        if not r.resolved and self.cursor.replaying:
            self.cancelled_at_await(r.seq)  # (the first run met a cancel at this await)
        if r.resolved:
            await self._yield()
            if _observe.tracing:  # the message's trace context becomes current
                _observe.received(r.value)
            return r.value
        box, seconds, seq = r.box, r.seconds, r.seq
        deadline = self.timers.get(seq)
        try:
            while True:
                item = self._find(box, deadline)
                if item is not None:
                    if self.cancel_at is not None and self.cancel_first(item.created):
                        raise WaitCancelled
                    tx = Transaction()
                    value = self._consume(item, box, seq, tx)
                    if deadline is not None:
                        tx.remove_timer(self.wid, seq)
                        self.timers.pop(seq, None)
                    await self._commit(tx)
                    await self._yield()
                    r.resolved, r.value = True, value
                    if _observe.tracing:
                        _observe.received(value)
                    return value
                if seconds is not None and deadline is None:
                    deadline = recordable(self.host.clock.now() + seconds)
                    self.add_timer(seq, deadline)
                    await self._commit(Transaction().add_timer(self.wid, seq, deadline,
                                                               "receive"))
                    # look again: what arrived while the timer was written woke nothing
                    # (the wake-up event is made as the workflow parks, below)
                    continue
                if deadline is not None and self.host.clock.now() >= deadline:
                    if self.cancel_at is not None and self.cancel_first(deadline):
                        raise WaitCancelled
                    tx = Transaction()
                    self.record(tx, seq, _RECEIVE, box.channel, '{"timeout":true}')
                    tx.remove_timer(self.wid, seq)
                    self.timers.pop(seq, None)
                    await self._commit(tx)
                    r.resolved = True
                    return None
                try:
                    await self._wait(None if deadline is None else
                                     self.host.clock.trio_deadline(deadline),
                                     WorkflowStatus.WAITING,
                                     f"a receive from its {box.channel}" if box.topic is None
                                     else f"a receive of topic {box.topic!r}")
                except WaitCancelled:
                    if self.cancel_mark is None or not self._before_cancel(box):
                        raise
                    # (an item that arrived before the cancel woke it: taken first)
        except WaitCancelled:
            if seq != self.cursor.seq - 1:  # made before operations that took later seqs
                self._cancel_at_await(seq)
            self._deliver_cancel(seq)

    def _try_receive(self, box: DurableInbox) -> Any:
        entry = self._take(_RECEIVE, box.channel,
                           cancel=self.cancel_mark is None or not self._before_cancel(box))
        if entry is not None:
            return self._replayed_receive(entry)
        seq = self.cursor.seq - 1
        tx = self.buffered()
        item = self._find(box)
        if item is None:
            self.record(tx, seq, _RECEIVE, box.channel, '{"empty":true}')
            return None
        return self._consume(item, box, seq, tx)
