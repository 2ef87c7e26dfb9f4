"""The journal: record kinds (a stored format), the replay cursor, plain forms.

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
import enum
import math
import os
import sys
from collections.abc import Mapping, Sequence
from types import CodeType, FrameType, MappingProxyType
from typing import Any

import attrs

from ..._errors import NonDeterminismError
from ..._frames import GARRISON_DIR, frame_text, is_runtime, is_users
from ...actors._values import ErrorInfo, Event, EventKind, Message, Pid

__all__ = ["Cursor", "Entry", "JournalKind", "code_gone", "event_from_plain",
           "event_to_plain", "message_from_plain", "message_to_plain", "retry_kind", "retry_timer"]


class JournalKind(enum.StrEnum):
    """What a journal record is about: the ``kind`` column, a stored format.

    Never rename a value: journals written by earlier versions are replayed against it.
    """

    #: an activity's final outcome (``{"ok": value}`` or ``{"error": ErrorInfo}``)
    ACTIVITY = "activity"
    #: a message sent (``{"to": pid, "id": msg_id}``)
    SEND = "send"
    #: an inbox item taken (``{"inbox": row, "message"|"event": ...}``, or timeout/empty)
    RECEIVE = "receive"
    #: a durable sleep that ended (``{"deadline": unix seconds}``)
    SLEEP = "sleep"
    #: a timer created (``{"deadline": unix seconds}``) and awaited
    TIMER = "timer"
    AWAIT_TIMER = "await_timer"
    #: a durable promise declared, and awaited (``{"value": v}`` or ``{"rejected": msg}``)
    PROMISE = "promise"
    AWAIT_PROMISE = "await_promise"
    #: which awaitable of ``workflow.first`` won, and what it raced (``{"index": i,
    #: "of": ["promise approval", "timer", ...]}``; "of" is absent in older journals)
    FIRST = "first"
    #: a process or child workflow spawned (``{"pid": pid}``)
    SPAWN = "spawn"
    #: a reply to a call, and a call made (``{"ok": value}`` or its error)
    REPLY = "reply"
    CALL = "call"
    #: links and monitors made and removed
    LINK = "link"
    UNLINK = "unlink"
    MONITOR = "monitor"
    DEMONITOR = "demonitor"
    #: a name looked up (``{"pid": pid or None}``)
    LOOKUP = "lookup"
    #: a name registered (``{"scope": "node"|"cluster"}``, or what it raised: a name
    #: another process held). Journals written before it have no such record: a
    #: register replayed there takes no seq (see ``Interop.register``)
    REGISTER = "register"
    #: another process cancelled or terminated
    CANCEL_PROCESS = "cancel_process"
    TERMINATE = "terminate"
    #: recorded values: ``workflow.now()``, ``uuid4()``, ``random()``, ``version()``
    NOW = "now"
    UUID4 = "uuid4"
    RANDOM = "random"
    VERSION = "version"
    #: what a handle's ``done()`` returned (``true`` or ``false``), named as ``first``
    #: names what it races (``"timer"``, ``"promise approval"``, ...). Journals written
    #: before it have no such record: a ``done()`` replayed there takes no seq
    DONE = "done"
    #: where a cancel request was delivered (raises ``WorkflowCancelled`` on replay)
    CANCEL = "cancel"
    #: seq 0 of a continued run: the state it starts with (``{"state": {...}}``), and the
    #: names it holds (``"names": {name: scope}``, absent when none); ``"ids": 2``: its
    #: message ids carry its whole run id (see :func:`whole_run_id`)
    CONTINUED = "continued"


CANCEL = JournalKind.CANCEL


@attrs.frozen(slots=True)
class Entry:
    """One journal record as the replay engine sees it."""

    seq: int
    kind: str
    name: str
    outcome: Any
    attempts: int = 1


def blocked_advice(takes: str = "the recorded path") -> str:
    """What a divergence in a live run means and the ways out: code that ``takes`` what
    the run recorded resumes it; a run no code takes again (a random branch) is ended."""
    return (f"The workflow is blocked with its journal kept; restart a node with code "
            f"that takes {takes} to resume it, or end it with `garrison workflows "
            f"terminate`")


#: a divergence in a live run: what happened and the way out
BLOCKED_ADVICE = blocked_advice()
#: said last by a live run's divergence that no note explains: a path that differs with
#: no change of code is code that is not deterministic (a branch on random.random(), a
#: datetime.now() passed on)
DETERMINISM_HINT = ("Workflow code must be deterministic: use workflow.now(), "
                    "workflow.random() and workflow.uuid4() for times, random numbers and "
                    "uuids, and do I/O in activities")


def code_gone(workflow_id: str, name: str, why: str) -> NonDeterminismError:
    """The difference of workflow ``workflow_id`` whose recorded function ``name`` the
    code no longer has, or that is no workflow function now (``why``: the end of a
    sentence naming it, :func:`~garrison._targets.function_gone`'s or
    :func:`~garrison._targets.workflow_refused_now`'s): a node blocks such a workflow."""
    return NonDeterminismError(
        f"workflow {workflow_id!r} runs {name!r}, {why} A node running this code blocks "
        "the workflow; keep the function under its name for workflows started before the "
        "change", workflow_id=workflow_id, recorded=name)


def code_frame_text() -> str | None:
    """The innermost frame of the calling workflow's own code (outside garrison), as a
    traceback prints it (``File "...", line N, in fn`` and its source line); ``None``
    when no such code is running (the function returned or raised already: the frames
    below garrison's are the task runner's)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and os.path.realpath(frame.f_code.co_filename).startswith(
            GARRISON_DIR):
        frame = frame.f_back
    if frame is None or is_runtime(frame.f_code.co_filename):
        return None  # (trio's task runner: no workflow code under way)
    return frame_text(frame)


def raise_frame_text(exc: BaseException, code: CodeType | None) -> str | None:
    """Where the workflow's code raised ``exc``, as :func:`code_frame_text` says a frame:
    from the frame of its function (``code``) on, the innermost frame of code of the
    application's own (not garrison's, trio's, nor the standard library's or an
    installed package's, which its code called: its line that called them is named);
    ``None`` when the function has no frame there (garrison raised it before the code
    ran: its arguments did not restore)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code is not code:
        tb = tb.tb_next
    if tb is None:
        return None
    found = tb
    tb = tb.tb_next
    while tb is not None and is_users(tb.tb_frame.f_code.co_filename):
        found, tb = tb, tb.tb_next
    return frame_text(found.tb_frame, found.tb_lineno)


def code_line() -> str | None:
    """The first line of :func:`code_frame_text` (``File "...", line N, in fn``), as a
    message names the place; ``None`` when no code of the workflow is under way."""
    frame = code_frame_text()
    return None if frame is None else frame.partition("\n")[0]


#: the entries of every cursor of a run with no journal (see ``Cursor.entries``)
_NO_ENTRIES: Mapping[int, Entry] = MappingProxyType({})


class Cursor:
    """Hands out sequence numbers and the recorded entry at each, if any.

    >>> c = Cursor("wf-1", [Entry(1, "activity", "app:charge", {"ok": 3})])
    >>> c.take("activity", "app:charge").outcome
    {'ok': 3}
    >>> c.take("sleep", "") is None      # past the journal: run live
    True
    """

    __slots__ = ("advice", "entries", "error", "last", "seq", "workflow_id")

    def __init__(self, workflow_id: str, entries: Sequence[Entry] = ()) -> None:
        self.workflow_id = workflow_id
        #: the recorded entries by seq, never added to (a run started here has none: one
        #: shared empty mapping, not a dict of its own each)
        self.entries: Mapping[int, Entry] = (
            {e.seq: e for e in entries} if entries else _NO_ENTRIES)
        #: the last recorded seq (0: nothing recorded)
        self.last = max(self.entries, default=0)
        self.seq = 1  # the next seq to hand out
        #: the first divergence; raised again at every later operation
        self.error: NonDeterminismError | None = None
        #: what a divergence means and what to do, after what differs (a live run:
        #: the workflow is blocked; a replay's dry run sets its own)
        self.advice = BLOCKED_ADVICE

    @property
    def replaying(self) -> bool:
        """True while the next seq has a recorded entry."""
        return self.seq in self.entries

    @property
    def in_history(self) -> bool:
        """True while the code runs through what the journal records: some record lies at
        or after the next seq (unlike :attr:`replaying`, also at a seq taken but never
        recorded, such as an abandoned ``workflow.start``, before later records)."""
        return self.seq <= self.last

    def remaining(self) -> list[Entry]:
        """The records at or after the next seq (not replayed yet), in seq order."""
        return [self.entries[s] for s in sorted(self.entries) if s >= self.seq]

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
        # past the journal there is no entry (``entries`` is never added to): told
        # without a read of the dict, one object less that every live step touches
        if seq > self.last:
            return None
        entry = self.entries.get(seq)
        if entry is None:
            return None
        if entry.kind == CANCEL or (entry.kind == kind and entry.name == name):
            return entry
        raise self.diverge(seq, entry.kind, entry.name, op_text(kind, name),
                           _moved_note(entry, kind, name))

    def diverge(self, seq: int, kind: str, name: str, now: str, note: str = "",
                recorded: str | None = None, where: str | None = None
                ) -> NonDeterminismError:
        """Build (and keep) the error for a divergence at ``seq`` (``note``: what it
        means, said before the advice; ``recorded``: the record in words, when its kind
        and name do not say what differs; ``where``: the frame of the code that differs,
        when it is not the one running now: :func:`raise_frame_text`'s)."""
        if recorded is None:
            recorded = op_text(kind, name)
        # (with a note, the advice's remedy after its colon is the note's: a replay's
        # "branch with workflow.version" is no remedy for what the note says)
        advice = self.advice.partition(": ")[0] if note else self.advice
        if not note and self.advice == BLOCKED_ADVICE:
            advice = f"{advice}. {DETERMINISM_HINT}"
        # (seq N is no place in the code: this line is; named in the message, which is
        # what a node's log, ``show``, the console and ``replay`` show of a blocked
        # workflow, and as a note with its source, as a traceback's frame)
        if where is None:
            where = code_frame_text()
        line = None if where is None else where.partition("\n")[0]
        said = "" if line is None else f" ({line})"
        err = NonDeterminismError(
            f"workflow {self.workflow_id!r} diverged from its journal at seq {seq}: "
            f"the journal records {recorded}, but the code now did {now}{said}. "
            f"{note}{advice}",
            workflow_id=self.workflow_id,
            seq=seq,
            recorded=recorded,
            current=now,
            where=line,
        )
        if where is not None:
            err.add_note(f"the code that differs (seq {seq}): {where}")
        if self.error is None:
            self.error = err
        return self.error

    def finished(self) -> None:
        """The code returned: a journal that records more is a divergence too."""
        if self.error is not None:
            raise self.error
        later = [s for s in self.entries if s >= self.seq] if self.in_history else None
        if later:
            entry = self.entries[min(later)]
            raise self.diverge(entry.seq, entry.kind, entry.name,
                               "nothing (the workflow function returned)")

    def raised(self, exc: BaseException, note: str = "", where: str | None = None
               ) -> NonDeterminismError | None:
        """The code raised ``exc``: before a record of the journal (the run that recorded
        it went on), a divergence, returned (and kept); ``None`` past the journal."""
        if self.error is not None:
            return self.error
        later = [s for s in self.entries if s >= self.seq] if self.in_history else None
        if not later:
            return None
        entry = self.entries[min(later)]
        return self.diverge(entry.seq, entry.kind, entry.name,
                            f"raise {type(exc).__name__}: {exc}", note, where=where)


def _moved_note(entry: Entry, kind: str, name: str) -> str:
    """What a divergence says of an activity whose journal name (``module:qualname``)
    changed its module only: its module moved or was renamed, which renames the
    activity; ``workflow.version`` cannot help there, its old journal name does."""
    if entry.kind != JournalKind.ACTIVITY or kind != JournalKind.ACTIVITY:
        return ""
    old_module, _, old_qualname = entry.name.rpartition(":")
    new_module, _, new_qualname = name.rpartition(":")
    if not old_module or old_qualname != new_qualname or old_module == new_module:
        return ""
    return (f"Moved to another module? An activity's journal name is its module:qualname: "
            f"keep the recorded one with @garrison.activity(name={entry.name!r}). ")


def op_text(kind: str, name: str) -> str:
    """A journaled operation in a divergence's words: ``activity 'app:charge'``, or its
    kind alone for one without a name (``timer``, ``first``)."""
    return f"{kind} {name!r}" if name else f"{kind}"


# ---------------------------------------------------------------- plain forms
def message_to_plain(msg: Message) -> dict[str, Any]:
    """The JSON shape of a message whose payload is already plain JSON (with its trace
    context under ``"trace"`` when it has one: a replayed receive restores it)."""
    plain = {"topic": msg.topic, "payload": msg.payload,
             "sender": None if msg.sender is None else str(msg.sender),
             "id": msg.id, "call_ref": msg.call_ref}
    if msg.trace is not None:
        plain["trace"] = msg.trace
    return plain


def message_from_plain(plain: dict[str, Any]) -> Message:
    """Rebuild a :class:`Message` from :func:`message_to_plain`'s shape."""
    sender = plain.get("sender")
    return Message(plain["topic"], plain.get("payload"),
                   None if sender is None else Pid.parse(sender), plain.get("id", ""),
                   plain.get("call_ref"), plain.get("trace"))


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


def initial_names(journal: Sequence[Entry]) -> dict[str, str] | None:
    """The names a run starts holding: none, or those the run before held when it
    continued as new (its seq-0 record); ``None`` when none."""
    if journal and journal[0].seq == 0 and journal[0].kind == JournalKind.CONTINUED:
        names = (journal[0].outcome or {}).get("names")
        if isinstance(names, dict) and names:
            return {str(name): str(scope) for name, scope in names.items()}
    return None


def initial_monitors(journal: Sequence[Entry]) -> dict[Pid, str | None]:
    """The monitors a run starts with: none, or those the run before held when it
    continued as new (its seq-0 record's ``monitors``: each pid's text, with the message
    id that names its ``EXIT``, see ``Interop.event_id``), so that a node resuming the
    run after a crash delivers a lost process's ``noproc`` as for its own monitors."""
    if journal and journal[0].seq == 0 and journal[0].kind == JournalKind.CONTINUED:
        out = journal[0].outcome
        monitors = out.get("monitors") if isinstance(out, dict) else None
        if isinstance(monitors, dict):
            kept: dict[Pid, str | None] = {}
            for text, at in monitors.items():
                try:
                    kept[Pid.parse(text)] = at if isinstance(at, str) else None
                except (TypeError, ValueError):
                    continue  # (not a pid: a hand edit; nothing to watch)
            return kept
    return {}


#: the ``ids`` of a continued run's seq-0 record whose message ids carry its whole run id
WHOLE_RUN_ID = 2


def whole_run_id(journal: Sequence[Entry]) -> bool:
    """Whether a continued run's message ids (and its events' ids, named by them) carry
    its whole run id: its seq-0 record says so (``"ids": 2``). A run continued by an
    older garrison, whose record does not, keeps the first 12 hex digits it derived
    them from (a call it made again after a crash, an event a recovery delivers again,
    must take the id it took before, or it would be a second one)."""
    if journal and journal[0].seq == 0 and journal[0].kind == JournalKind.CONTINUED:
        out = journal[0].outcome
        return isinstance(out, dict) and out.get("ids") == WHOLE_RUN_ID
    return False


def initial_state(journal: Sequence[Entry]) -> dict[str, Any]:
    """The state a run starts with: empty, or what a continue-as-new carried over (its
    seq-0 record). Replay rebuilds the rest, so ``get_state`` sees the same values."""
    if journal and journal[0].seq == 0 and journal[0].kind == JournalKind.CONTINUED:
        return dict((journal[0].outcome or {}).get("state") or {})
    return {}


def run_started(journal: Sequence[Entry], created: float) -> float:
    """When the run began (``workflow.info().start_time``): a continued run's own start,
    which its seq-0 record holds (``started``, unix seconds); else ``created``, the
    workflow's start (a first run, or a continued one recorded before the record held
    it)."""
    if journal and journal[0].seq == 0 and journal[0].kind == JournalKind.CONTINUED:
        out = journal[0].outcome
        started: Any = out.get("started") if isinstance(out, dict) else None
        if type(started) in (int, float) and math.isfinite(started):
            return float(started)
    return created


def retry_kind(attempts: int, name: str) -> str:
    """The kind of the durable timer an activity waits on before its next attempt
    (``timers.kind``, a stored format): ``retry N NAME``, N attempts failed so far.

    >>> retry_kind(2, "app.billing:charge")
    'retry 2 app.billing:charge'
    """
    return f"retry {attempts} {name}"


def retry_timer(kind: str | None) -> tuple[int, str] | None:
    """``(attempts, activity name)`` of a :func:`retry_kind` timer kind, else ``None``.

    >>> retry_timer("retry 2 app.billing:charge")
    (2, 'app.billing:charge')
    >>> retry_timer("sleep") is None
    True
    """
    if kind is None or not kind.startswith("retry "):
        return None
    parts = kind.split(" ", 2)
    if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2]
