"""The replay engine's pure parts: the journal cursor and what recorded outcomes mean.

A workflow function re-runs from the top after a restart. Every durable
operation asks the :class:`Cursor` for the next sequence number: if the journal
has a row there, the operation returns that row's outcome (after checking its
kind and name, else :class:`~garrison.NonDeterminismError`); if not, the
operation runs for real and its outcome is committed before the code sees it.

This module does no I/O, so golden journals (JSON files of records) can be
replayed against workflow code in tests without a store.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import attrs

from .._errors import NonDeterminismError
from ..actors._values import ErrorInfo, Event, EventKind, Message, Pid

__all__ = ["Cursor", "Entry", "event_from_plain", "event_to_plain", "message_from_plain",
           "message_to_plain"]

#: the kind of the journal row written where a cancel request was delivered
CANCEL = "cancel"


@attrs.frozen(slots=True)
class Entry:
    """One journal record as the replay engine sees it."""

    seq: int
    kind: str
    name: str
    outcome: Any
    attempts: int = 1

    @classmethod
    def from_record(cls, record: Any) -> Entry:
        """From a :class:`~garrison.persistence.JournalRecord` (or anything alike)."""
        return cls(record.seq, record.kind, record.name, record.outcome,
                   getattr(record, "attempts", 1))

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> Entry:
        """From a golden-file dict ``{"seq", "kind", "name", "outcome", "attempts"?}``."""
        return cls(int(plain["seq"]), str(plain["kind"]), str(plain.get("name", "")),
                   plain.get("outcome"), int(plain.get("attempts", 1)))


class Cursor:
    """Hands out sequence numbers and the recorded entry at each, if any.

    >>> c = Cursor("wf-1", [Entry(1, "activity", "app:charge", {"ok": 3})])
    >>> c.take("activity", "app:charge").outcome
    {'ok': 3}
    >>> c.take("sleep", "") is None      # past the journal: run live
    True
    """

    __slots__ = ("entries", "error", "seq", "workflow_id")

    def __init__(self, workflow_id: str, entries: Sequence[Entry] = ()) -> None:
        self.workflow_id = workflow_id
        self.entries: dict[int, Entry] = {e.seq: e for e in entries}
        self.seq = 1  # the next seq to hand out
        #: the first divergence; raised again at every later operation
        self.error: NonDeterminismError | None = None

    @property
    def replaying(self) -> bool:
        """True while the next seq has a recorded entry."""
        return self.seq in self.entries

    @property
    def recorded(self) -> int:
        """How many entries the journal holds."""
        return len(self.entries)

    def check(self) -> None:
        """Raise the kept divergence, if any."""
        if self.error is not None:
            raise self.error

    def peek(self) -> Entry | None:
        """The entry at the next seq, without taking it."""
        return self.entries.get(self.seq)

    def take(self, kind: str, name: str) -> Entry | None:
        """Take the next seq; return its recorded entry (checked) or ``None`` (live).

        A recorded ``cancel`` entry is returned whatever the operation: the
        caller raises ``WorkflowCancelled`` there, as it did the first time.
        """
        if self.error is not None:
            raise self.error
        seq = self.seq
        self.seq = seq + 1
        entry = self.entries.get(seq)
        if entry is None:
            return None
        if entry.kind == CANCEL or (entry.kind == kind and entry.name == name):
            return entry
        raise self.diverge(seq, entry.kind, entry.name, f"{kind} {name!r}")

    def add(self, entry: Entry) -> None:
        """Remember a live entry (so a later peek/length sees it)."""
        self.entries[entry.seq] = entry

    def diverge(self, seq: int, kind: str, name: str, now: str) -> NonDeterminismError:
        """Build (and keep) the error for a divergence at ``seq``."""
        recorded = f"{kind} {name!r}"
        err = NonDeterminismError(
            f"workflow {self.workflow_id!r} diverged from its journal at seq {seq}: "
            f"the journal records {recorded}, but the code now did {now}. The workflow is "
            "blocked with its journal kept; restart a node with code that takes the "
            "recorded path to resume it",
            workflow_id=self.workflow_id,
            seq=seq,
            recorded=recorded,
            current=now,
        )
        if self.error is None:
            self.error = err
        return self.error

    def finished(self) -> None:
        """The code returned: a journal that records more is a divergence too."""
        if self.error is not None:
            raise self.error
        later = [s for s in self.entries if s >= self.seq]
        if later:
            entry = self.entries[min(later)]
            raise self.diverge(entry.seq, entry.kind, entry.name,
                               "nothing (the workflow function returned)")


# ---------------------------------------------------------------- plain forms
def message_to_plain(msg: Message) -> dict[str, Any]:
    """The JSON shape of a message whose payload is already plain JSON."""
    return {"topic": msg.topic, "payload": msg.payload,
            "sender": None if msg.sender is None else str(msg.sender),
            "id": msg.id, "call_ref": msg.call_ref}


def message_from_plain(plain: dict[str, Any]) -> Message:
    """Rebuild a :class:`Message` from :func:`message_to_plain`'s shape."""
    sender = plain.get("sender")
    return Message(plain["topic"], plain.get("payload"),
                   None if sender is None else Pid.parse(sender), plain.get("id", ""),
                   plain.get("call_ref"))


def event_to_plain(event: Event) -> dict[str, Any]:
    """The JSON shape of an event whose result is already plain JSON."""
    err = event.error
    return {"kind": str(event.kind), "pid": str(event.pid), "result": event.result,
            "error": None if err is None else {"type": err.type, "message": err.message,
                                               "traceback": err.traceback}}


def event_from_plain(plain: dict[str, Any]) -> Event:
    """Rebuild an :class:`Event` from :func:`event_to_plain`'s shape."""
    err = plain.get("error")
    return Event(EventKind(plain["kind"]), Pid.parse(plain["pid"]), plain.get("result"),
                 None if err is None else ErrorInfo(err["type"], err.get("message", ""),
                                                    err.get("traceback", "")))


def error_to_plain(err: ErrorInfo) -> dict[str, Any]:
    """An :class:`ErrorInfo` as JSON."""
    return {"type": err.type, "message": err.message, "traceback": err.traceback}


def error_from_plain(plain: dict[str, Any]) -> ErrorInfo:
    """The inverse of :func:`error_to_plain`."""
    return ErrorInfo(plain["type"], plain.get("message", ""), plain.get("traceback", ""))


def timestamp(value: float) -> _dt.datetime:
    """Unix seconds as an aware UTC datetime."""
    return _dt.datetime.fromtimestamp(value, _dt.UTC)
