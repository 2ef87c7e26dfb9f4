"""Replay mode: a workflow's journal replayed against the code installed now, with no
effects, up to the end of its journal.

``garrison workflows replay`` (a store's workflows) and ``garrison.testing.replay``
(an exported history, e.g. a golden file kept in a repository) use it to tell,
before a deploy, whether the code still takes the path that running, waiting,
blocked and finished workflows recorded. It is the engine itself in another mode,
not a copy of it: a :class:`ReplayInstance` is a
:class:`~._instance.WorkflowInstance` whose

- operations are answered from the journal only: the first one the journal cannot
  answer (its end) raises :class:`ReplayEnd`, which stops the replay there ("ok so
  far": what the code would do next is live work, which a replay never does);
- host (:class:`ReplayHost`) holds a :class:`History` instead of a store and refuses
  every write, and whose node (:class:`ReplayNode`) refuses every effect, so no
  activity runs and no message, spawn, link or timer leaves the replay
  (:class:`ReplayRefused` would say the engine tried: a bug, never swallowed);
- logger records are all dropped (``workflow.logger``: it is all history).

A divergence is the :class:`~garrison.NonDeterminismError` a node would raise for
that workflow (and block it with). A few operations take their seq when they are
created and are recorded later (``workflow.start``, a receive): at such a seq with no
record while later records exist (an activity that was abandoned, a receive that
lost a ``first``), the replay leaves the operation pending and goes on, as the first
run did. A sleep or receive timeout under way (a timer row, recorded only when it ends)
is loaded with the history, as recovery loads it (``_recovery.load``): code that takes
its seq with another operation, or returns or raises before it, diverges as on a
node. A completed or cancelled workflow's run went on past its last record to its
end: a ``workflow.version`` call there gets the default, as a run recorded before the
call does (a gate added at the end of the code is no live work). A failed one is
replayed as ``retry`` would resume it (see :func:`replay_history`). A spawn a node
refuses is not journaled: one the journal has no record of runs the node's checks,
which raise in the code as there (:meth:`ReplayInstance.spawn`).
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import uuid as _uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn, cast

import attrs
import trio

from ..._errors import NonDeterminismError
from ..._targets import function_gone, import_target, workflow_refusal, workflow_refused_now
from ...actors._mailbox import timeout_seconds
from ...actors._values import ErrorInfo, Pid
from ...persistence import FINAL_STATUSES, Transaction, WorkflowStatus
from ._activities import ActivityHandle, _options
from ._codec import workflow_result
from ._core import EngineStop
from ._host import checked_start
from ._inbox import DurableInbox, PendingReceive
from ._instance import WorkflowInstance
from ._journal import (
    CANCEL,
    Entry,
    JournalKind,
    code_gone,
    error_from_plain,
    error_to_plain,
    event_from_plain,
    initial_state,
    message_from_plain,
    op_text,
    retry_timer,
    timestamp,
)
from ._operate import taken_back_by_retry
from ._waits import WallClock

__all__ = ["FORMAT", "History", "ReplayEnd", "ReplayHost", "ReplayInstance", "ReplayNode",
           "ReplayRefused", "ReplayResult", "replay_history"]

#: the ``format`` of an exported history (``garrison workflows export``)
FORMAT = "garrison-history/1"
#: a replay whose code waits this long (real seconds) on something no journal record
#: answers (``trio.sleep`` or an ``Event`` in workflow code) is stopped there
STUCK_AFTER = 0.25


class ReplayEnd(EngineStop):
    """The replay reached an operation its journal cannot answer and stopped there.

    ``seq``: where; ``what``: the operation; ``unchecked``: records after it that the
    replay could not reach (0 at the journal's end)."""

    def __init__(self, seq: int, what: str, unchecked: int) -> None:
        super().__init__(f"replay stopped at seq {seq} ({what})")
        self.seq = seq
        self.what = what
        self.unchecked = unchecked


class ReplayRefused(EngineStop):
    """The engine tried an effect (a write, a message, a spawn...) in replay mode: a bug
    of garrison's replay mode. A ``BaseException``, so workflow code cannot swallow it."""


class _WouldStart(EngineStop):
    """A spawn the journal has no record of passed every check a replay can make: a
    node would go on with it (``why``: what the replay could not know, if anything)."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


def _refused(what: str) -> ReplayRefused:
    return ReplayRefused(f"replay mode refused {what}: a replay has no effects (this is a "
                         "bug in garrison; please report it with the workflow's history)")


# ---------------------------------------------------------------- the history
@attrs.frozen(eq=False)
class History:
    """One workflow's recorded run: what a replay needs, from a store
    (:meth:`from_store`) or an exported history file (:meth:`from_json`)."""

    workflow_id: str
    name: str
    input: list[Any] = attrs.field(factory=list)
    status: str = "running"
    #: the workflow host it ran on (what ``workflow.info().host`` and its pid say)
    host: str = "workflows"
    run_id: str = ""
    attempt: int = 1
    created: float | None = None
    updated: float | None = None
    result: Any = None
    error: ErrorInfo | None = None
    journal: tuple[Entry, ...] = ()
    #: ``{seq: characters of its outcome JSON}`` (what ``workflow.history_size`` counts)
    sizes: Mapping[int, int] = attrs.field(factory=dict)
    #: completed promises: name -> (``resolved`` | ``rejected``, value or message)
    promises: Mapping[str, tuple[str, Any]] = attrs.field(factory=dict)
    #: when the records were made (unix seconds), for the export only
    times: Mapping[int, float] = attrs.field(factory=dict)
    #: durable timers pending (a sleep or receive timeout under way, recorded only when
    #: it ends): seq -> (deadline in unix seconds, ``"sleep"`` | ``"receive"`` | ``None``
    #: when the store did not say), as a node loads them when it resumes the workflow
    timers: Mapping[int, tuple[float, str | None]] = attrs.field(factory=dict)

    @property
    def records(self) -> int:
        """Journal records (seq 0 of a continued run, its starting state, not counted)."""
        return sum(1 for e in self.journal if e.seq > 0)

    @classmethod
    def from_store(cls, store: Any, workflow_id: str) -> History:
        """The history of ``workflow_id`` in ``store`` (read only); ``LookupError`` if
        the store has no such workflow."""
        head = cls.head_from_store(store, workflow_id)
        rows = store.journal(workflow_id)
        return attrs.evolve(
            head,
            journal=tuple(Entry(r.seq, r.kind, r.name, r.outcome, r.attempts) for r in rows),
            sizes=store.journal_sizes(workflow_id),
            times={r.seq: r.time.timestamp() for r in rows if r.time is not None})

    @classmethod
    def head_from_store(cls, store: Any, workflow_id: str) -> History:
        """:meth:`from_store` without the journal (its row, completed promises and
        pending timers): what :meth:`export_text` streams the journal after.
        ``LookupError`` if the store has no such workflow."""
        rec = store.get_workflow(workflow_id)
        if rec is None:
            raise LookupError(f"no workflow {workflow_id!r} in {store.path or 'the store'}")
        promises = {p.name: (str(p.status), p.value if str(p.status) == "resolved" else p.error)
                    for p in store.promises(workflow_id) if str(p.status) != "pending"}
        return cls(
            workflow_id=rec.workflow_id, name=rec.name, input=list(rec.input),
            status=str(rec.status), host=rec.host or "workflows", run_id=rec.run_id or "",
            attempt=rec.attempt,
            created=rec.created.timestamp() if rec.created else None,
            updated=rec.updated.timestamp() if rec.updated else None,
            result=rec.result, error=rec.error, promises=promises,
            timers={t.seq: (t.deadline.timestamp(), t.kind) for t in store.timers(workflow_id)},
        )

    @classmethod
    def from_json(cls, data: Any, where: str = "history") -> History:
        """A history from its JSON form (:meth:`to_json`; the golden journals of
        garrison's own tests, ``{"workflow", "input", "journal"}``, are accepted too).
        ``ValueError`` naming ``where`` and the field when it is not one."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object (a workflow's history, as "
                             f"'garrison workflows export' prints), got {type(data).__name__}")
        fmt = data.get("format")
        if fmt is not None and fmt != FORMAT:
            raise ValueError(f"{where}: format {fmt!r} is not one this garrison reads "
                             f"(expected {FORMAT!r})")
        name = data.get("name", data.get("workflow"))
        if not isinstance(name, str) or ":" not in name:
            raise ValueError(f"{where}: 'name' must be the workflow's module:qualname, "
                             f"got {name!r}")
        args = data.get("input", [])
        if not isinstance(args, list):
            raise ValueError(f"{where}: 'input' must be the list of the workflow's arguments")
        records = data.get("journal")
        if not isinstance(records, list):
            raise ValueError(f"{where}: 'journal' must be a list of records")
        journal: list[Entry] = []
        sizes: dict[int, int] = {}
        times: dict[int, float] = {}
        wid = data.get("workflow_id")
        of = f" of workflow {wid!r}" if isinstance(wid, str) else ""
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or type(rec.get("seq")) is not int \
                    or not isinstance(rec.get("kind"), str):
                raise ValueError(f"{where}: journal record {i} needs an integer 'seq' and a "
                                 f"'kind' (got {rec!r:.80})")
            if rec["kind"] not in _KINDS:
                raise ValueError(f"{where}: journal record {i} (seq {rec['seq']}): 'kind' "
                                 f"{rec['kind']!r:.40} is no journal record kind (one of "
                                 f"{', '.join(sorted(_KINDS))}; a newer garrison's?)")
            if not isinstance(rec.get("name"), str):  # (a missing name read as '' and
                # showed up as a divergence of the code, not as a damaged file)
                raise ValueError(f"{where}: journal record {i} (seq {rec['seq']}): 'name' "
                                 f"must be a string ('' for a record without one), got "
                                 f"{rec.get('name', 'nothing')!r:.40}")
            _check_time(rec.get("time"), f"{where}: journal record {i} (seq {rec['seq']}): "
                                         "'time'")
            if rec.get("size") is not None and (type(rec["size"]) is not int
                                                or rec["size"] < 0):
                raise ValueError(f"{where}: journal record {i} (seq {rec['seq']}): 'size' "
                                 f"must be a whole number of bytes, got {rec['size']!r:.40}")
            outcome = rec.get("outcome")
            attempts = rec.get("attempts", 1)
            if type(attempts) is not int:
                raise ValueError(f"{where}: journal record {i}: 'attempts' must be an integer, "
                                 f"got {attempts!r:.40}")
            if rec["seq"] < (0 if rec["kind"] == JournalKind.CONTINUED else 1):
                raise ValueError(f"{where}: journal record {i} ({rec['kind']}): seq "
                                 f"{rec['seq']} is no position in a journal (seqs count from "
                                 "1; only a 'continued' record is at 0)")
            if journal and rec["seq"] <= journal[-1].seq:
                raise ValueError(f"{where}: journal record {i}: seq {rec['seq']} comes after "
                                 f"seq {journal[-1].seq} (a journal's records are in seq order, "
                                 "each seq once)")
            shape = _outcome_shape(rec["kind"], outcome, rec["name"])
            if shape is not None:
                raise ValueError(f"{where}: journal record {i} (seq {rec['seq']}, "
                                 f"{rec['kind']}){of}: 'outcome' must be {shape}, got "
                                 f"{outcome!r:.80}")
            journal.append(Entry(rec["seq"], rec["kind"], rec.get("name", ""), outcome,
                                 attempts))
            size = rec.get("size")
            sizes[rec["seq"]] = size if isinstance(size, int) else len(json.dumps(outcome))
            when = _seconds(rec.get("time"))
            if when is not None:  # (kept: an export of this history shows it again)
                times[rec["seq"]] = when
        promises: dict[str, tuple[str, Any]] = {}
        for field, kind in (("promises", dict), ("timers", list)):
            if not isinstance(data.get(field) or kind(), kind):
                raise ValueError(f"{where}: {field!r} must be a JSON "
                                 f"{'object' if kind is dict else 'list'}, got "
                                 f"{type(data[field]).__name__}")
        for pname, p in (data.get("promises") or {}).items():
            if not isinstance(p, dict) or p.get("status") not in _PROMISE_STATUSES or (
                    p["status"] == "rejected" and not isinstance(p.get("error"), str)):
                raise ValueError(f"{where}: promise {pname!r:.40} must be an object with a "
                                 f"'status' of {', '.join(map(repr, _PROMISE_STATUSES))} (and "
                                 f"a rejected one's 'error' message), got {p!r:.80}")
            if p["status"] in ("resolved", "rejected"):
                promises[pname] = (p["status"], p.get("value") if p["status"] == "resolved"
                                   else p.get("error"))
        timers: dict[int, tuple[float, str | None]] = {}
        for i, t in enumerate(data.get("timers") or ()):
            deadline = _seconds(t.get("deadline")) if isinstance(t, dict) else None
            if deadline is None or not isinstance(t.get("seq"), int) or not (
                    t.get("kind") in ("sleep", "receive", None) or (
                        isinstance(t.get("kind"), str) and retry_timer(t["kind"]))):
                raise ValueError(f"{where}: timer {i} needs an integer 'seq', a 'deadline' "
                                 f"and a 'kind' of 'sleep', 'receive' or 'retry N NAME' "
                                 f"(got {t!r:.80})")
            if t["seq"] < 1:
                raise ValueError(f"{where}: timer {i}: seq {t['seq']} is no position in a "
                                 "journal (seqs count from 1)")
            timers[t["seq"]] = (deadline, t.get("kind"))
        error = data.get("error")
        if error is not None and not (isinstance(error, dict) and isinstance(
                error.get("type"), str) and isinstance(error.get("message"), str)):
            raise ValueError(f"{where}: 'error' must be null or an object with a 'type' and "
                             f"a 'message', got {error!r:.80}")
        attempt = data.get("attempt") or 1
        if type(attempt) is not int:
            raise ValueError(f"{where}: 'attempt' must be an integer, got {attempt!r:.40}")
        status = data.get("status")
        statuses = [s.value for s in WorkflowStatus]
        if status is not None and status not in statuses:
            raise ValueError(f"{where}: 'status' must be one of {', '.join(statuses)}, got "
                             f"{status!r:.40}")
        for field in ("workflow_id", "host", "run_id"):
            value = data.get(field)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{where}: {field!r} must be a string, got {value!r:.40}")
        for field in ("created", "updated"):
            _check_time(data.get(field), f"{where}: {field!r}")
        return cls(
            workflow_id=str(data.get("workflow_id") or "replayed"), name=name, input=args,
            status=str(data.get("status") or "running"),
            host=str(data.get("host") or "workflows"), run_id=str(data.get("run_id") or ""),
            attempt=attempt, created=_seconds(data.get("created")),
            updated=_seconds(data.get("updated")), result=data.get("result"),
            error=error_from_plain(error) if isinstance(error, dict) else None,
            journal=tuple(journal), sizes=sizes, times=times, promises=promises,
            timers=timers,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``garrison workflows export`` prints (and :meth:`from_json`
        reads back)."""
        return {
            "format": FORMAT,
            "workflow_id": self.workflow_id,
            "name": self.name,
            "status": self.status,
            "host": self.host,
            "input": self.input,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "result": self.result,
            "error": None if self.error is None else error_to_plain(self.error),
            "promises": {name: {"status": status,
                                "value": value if status == "resolved" else None,
                                "error": value if status == "rejected" else None}
                         for name, (status, value) in sorted(self.promises.items())},
            "journal": [_journal_json(e.seq, e.kind, e.name, e.outcome, e.attempts,
                                      self.times.get(e.seq),
                                      self.sizes.get(e.seq, len(json.dumps(e.outcome))))
                        for e in self.journal],
            "timers": [{"seq": seq, "kind": kind, "deadline": _iso(deadline)}
                       for seq, (deadline, kind) in sorted(self.timers.items())],
        }

    def export_text(self, records: Iterable[tuple[Any, int]]) -> Iterator[str]:
        """The text ``garrison workflows export`` prints, piece by piece, with
        ``records`` as its journal (:class:`~garrison.persistence.JournalRecord`
        objects, each with its stored size, as a store's ``journal_page`` reads them):
        joined,
        ``json.dumps(history.to_json(), indent=2, default=str)`` to the byte, this
        history's journal replaced by ``records``, which are taken one at a time (a
        long journal is never held whole)."""
        yield "{"
        for i, (key, value) in enumerate(self.to_json().items()):
            yield f"{',' if i else ''}\n  {json.dumps(key)}: "
            if key != "journal":
                yield _indented(value, 1)
                continue
            empty = True
            for r, size in records:
                entry = _journal_json(r.seq, r.kind, r.name, r.outcome, r.attempts,
                                      None if r.time is None else r.time.timestamp(), size)
                yield f"{'[' if empty else ','}\n    {_indented(entry, 2)}"
                empty = False
            yield "[]" if empty else "\n  ]"
        yield "\n}"


def _journal_json(seq: int, kind: str, name: str, outcome: Any, attempts: int,
                  time: float | None, size: int) -> dict[str, Any]:
    """A journal record as a history's JSON holds it."""
    return {"seq": seq, "kind": kind, "name": name, "outcome": outcome,
            "attempts": attempts, "time": _iso(time), "size": size}


def _indented(value: Any, level: int) -> str:
    """``value`` as ``json.dumps(..., indent=2, default=str)`` writes it ``level``
    levels deep in a document (a JSON string holds no newline of its own: each one
    written starts a line)."""
    return json.dumps(value, indent=2, default=str).replace("\n", "\n" + "  " * level)

#: the kinds a journal record may have
_KINDS = frozenset(kind.value for kind in JournalKind)
#: the statuses a history's promise may have
_PROMISE_STATUSES = ("pending", "resolved", "rejected")
#: the kinds that record the process an operation named (``Interop._take_target``)
_TARGETED = frozenset({JournalKind.LINK, JournalKind.UNLINK, JournalKind.MONITOR,
                       JournalKind.DEMONITOR, JournalKind.CANCEL_PROCESS,
                       JournalKind.TERMINATE})


def _check_time(value: Any, what: str) -> None:
    """``ValueError`` naming ``what`` unless ``value`` is a time a history may hold:
    null, unix seconds, or an ISO 8601 text (``2026-12-05T10:00:00.000Z``); anything
    else used to be read as no time at all."""
    if value is not None and _seconds(value) is None:
        raise ValueError(f"{what} must be null, unix seconds or an ISO 8601 time "
                         f"('2026-12-05T10:00:00.000Z'), got {value!r:.40}")


def _outcome_shape(kind: str, out: Any, name: str) -> str | None:
    """What a record of ``kind`` (named ``name``) must hold if ``out`` is not that (a
    damaged or hand-edited history, which would otherwise fail inside the replayed code
    as if the code raised, blamed on the code at the next record); ``None`` when it is,
    or for kinds whose outcome a replay does not read (``promise``, ``await_timer``,
    ``reply``, ``cancel``; a ``send`` or ``register`` unless it recorded a raise)."""
    if kind == JournalKind.ACTIVITY:
        if isinstance(out, dict) and (_error_readable(out["error"]) if "error" in out
                                      else "ok" in out):
            return None
        return '{"ok": value} or {"error": {"type": ..., "message": ...}}'
    if kind == JournalKind.SPAWN:
        ok = isinstance(out, dict) and _pid_readable(out.get("pid"))
        return None if ok else '{"pid": "host/id"} (the pid it spawned)'
    if kind == JournalKind.LOOKUP:
        ok = out is None or (isinstance(out, dict) and (
            out.get("pid") is None or _pid_readable(out["pid"])))
        return None if ok else '{"pid": "host/id" or null} (what the name held)'
    if kind == JournalKind.CALL:
        return None if _call_readable(out) else (
            '{"ok": value} for its reply, {"error": {"type": ..., "message": ...}} with '
            '"pid": "host/id" or "timeout": true, or {"raised": type, "error": ...}')
    if kind in _TARGETED:  # (the pid it recorded, else its name: a pid given as text)
        recorded = out.get("pid") if isinstance(out, dict) else None
        ok = _raised_readable(out) if recorded is None and isinstance(out, dict) \
            and "raised" in out else _pid_readable(name if recorded is None else recorded)
        return None if ok else ('{"pid": "host/id"} (the process it named), or '
                                '{"raised": type, "error": ...}')
    if kind == JournalKind.SEND:
        ok = type(out) is not dict or "raised" not in out or _raised_readable(out)
        return None if ok else ('what it sent ({"to": pid, "id": ...}) or {"raised": '
                                'type, "error": {"type": ..., "message": ...}}')
    if kind == JournalKind.REGISTER:
        ok = not isinstance(out, dict) or "raised" not in out or _raised_readable(out)
        return None if ok else ('{"scope": ...} or {"raised": type, "error": {"type": ..., '
                                '"message": ...}}')
    if kind in (JournalKind.SLEEP, JournalKind.TIMER):
        deadline = out.get("deadline") if isinstance(out, dict) else None
        if type(deadline) in (int, float):
            return None
        return '{"deadline": unix seconds}'
    if kind == JournalKind.FIRST:
        index = out.get("index") if isinstance(out, dict) else None
        raced = out.get("of") if isinstance(out, dict) else None
        if type(index) is int and index >= 0 and (
                not isinstance(raced, list) or index < len(raced)):
            return None
        return ('{"index": the position of the awaitable that won, among those "of" '
                'lists when it is there}')
    if kind == JournalKind.AWAIT_PROMISE:
        if isinstance(out, dict) and ("value" in out or "rejected" in out):
            return None
        return '{"value": value} or {"rejected": message}'
    return _value_shape(kind, out)


def _value_shape(kind: str, out: Any) -> str | None:
    """:func:`_outcome_shape` of the recorded values, receives and a continued run's
    seq-0 record: what the replayed code reads as it comes (a ``now`` of "yesterday"
    raised in the code, as if a deploy had changed it)."""
    if kind == JournalKind.NOW:
        return None if _seconds(out) is not None and not isinstance(out, str) \
            else "unix seconds (of a time from year 1 to 9999)"
    if kind == JournalKind.UUID4:
        try:
            _uuid.UUID(out)
        except (TypeError, ValueError, AttributeError):
            return "a UUID's text"
        return None
    if kind == JournalKind.RANDOM:
        ok = type(out) in (int, float) and 0 <= out < 1
        return None if ok else "a number from 0 up to 1"
    if kind == JournalKind.VERSION:
        return None if type(out) is int else "a whole number (the version)"
    if kind == JournalKind.DONE:
        return None if type(out) is bool else "true or false (what done() returned)"
    if kind == JournalKind.RECEIVE:
        return None if _receive_readable(out) else (
            'an object: {"inbox": row, "message": {"topic": ...}} or {"inbox": row, '
            '"event": {"kind": ..., "pid": ...}} for what it took, {"timeout": true} or '
            '{"empty": true}')
    if kind == JournalKind.CONTINUED:
        state = out.get("state") if isinstance(out, dict) else None
        names = out.get("names") if isinstance(out, dict) else None
        if out is None or (isinstance(out, dict) and isinstance(state, dict | None) and (
                names is None or (isinstance(names, dict) and all(
                    isinstance(v, str) for v in names.values())))):
            return None
        return '{"state": {name: value}, "names": {name: scope}} (both optional)'
    return None


def _error_readable(err: Any) -> bool:
    """Whether ``err`` is an error a record holds (``error_to_plain``'s shape), which the
    code gets as an :class:`ErrorInfo` (a ``type`` of 5 raised in its ``str()``)."""
    return (isinstance(err, dict) and isinstance(err.get("type"), str)
            and isinstance(err.get("message", ""), str)
            and isinstance(err.get("traceback", ""), str))


def _pid_readable(text: Any) -> bool:
    """Whether ``text`` is a pid's text (``Pid.parse`` takes it)."""
    try:
        Pid.parse(text)
    except (TypeError, ValueError):
        return False
    return True


def _raised_readable(out: dict[str, Any]) -> bool:
    """Whether a recorded raise (``raised_plain``) is one a replay can raise again."""
    return isinstance(out.get("raised"), str) and (not out.get("error")
                                                  or _error_readable(out["error"]))


def _call_readable(out: Any) -> bool:
    """Whether a call record's outcome is one a replay can hand the code."""
    if not isinstance(out, dict):
        return False
    if "ok" in out:
        return True
    if "raised" in out:
        return _raised_readable(out)
    return _error_readable(out.get("error")) and (
        bool(out.get("timeout")) or _pid_readable(out.get("pid")))


def _receive_readable(out: Any) -> bool:
    """Whether a receive record's outcome is one a replay can hand the code."""
    if out is None:
        return True
    if not isinstance(out, dict) or type(out.get("inbox", 0)) is not int:
        return False
    try:
        if "message" in out:
            message_from_plain(out["message"])
            return isinstance(out["message"].get("topic"), str)
        if "event" in out:
            event_from_plain(out["event"])
            error = out["event"].get("error")
            return error is None or _error_readable(error)
    except (TypeError, ValueError, KeyError, AttributeError):
        return False
    return True


def _iso(value: float | None) -> str | None:
    if value is None:
        return None
    return timestamp(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # (a time a date can hold, years 1 to 9999: json.loads reads NaN, Infinity and
        # 1e300 too, and a `now` of -1e11, year -1199, raised in the replayed code)
        return float(value) if -62_135_596_800 <= value < 253_402_300_800 else None
    if isinstance(value, str) and value:
        try:
            return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------- node, host, store
class _Refusing:
    """Anything not defined here is an effect: refused."""

    _what = "an effect"

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):
            raise AttributeError(name)
        raise _refused(f"{self._what} ({name})")


class ReplayNode(_Refusing):
    """The node a replayed workflow sees: no hosts, processes or names but the replayed
    workflow's own host (``replayed``). Bookkeeping a replayed operation does (dropping
    a link, a monitor, a name) is a no-op here."""

    _what = "a node operation"

    def __init__(self, replayed: ReplayHost | None = None) -> None:
        self.replayed = replayed
        self.hosts: dict[str, Any] = {}
        self.registry: dict[str, Pid] = {}
        self.config = None
        self.stopping = False
        self.stats_messages = 0
        self.stats_dead_letters = 0

    def host(self, name: str) -> Any:
        """``spawn`` looks its host up before the journal answers: the replayed
        workflow's own, or one a replay knows nothing of (:class:`_OtherHost`). A spawn
        the journal records reads only ``durable`` of it; one it has no record of runs
        the node's checks on it (see :meth:`ReplayInstance.spawn`)."""
        if self.replayed is not None and name == self.replayed.name:
            return self.replayed
        return _OtherHost(name)

    def resolve_target(self, target: Any) -> Any:
        """An activity named by a config entry id (``workflow.call("app:charge")``): a
        replay has no config; the function its record names (the journal keeps the
        function's ``module:qualname``), which the replay imports."""
        if not isinstance(target, str):
            return target
        raise ValueError(f"a replay has no config to find entry {target!r} in")

    def unlink(self, target: Pid, other: Pid) -> None:
        pass

    def demonitor(self, target: Pid, watcher: Pid) -> None:
        pass

    def monitor_spent(self, target: Pid, watcher: Pid) -> None:
        pass

    def register(self, name: str, pid: Pid, scope: str = "node") -> None:
        pass

    def unregister(self, name: str, pid: Pid) -> None:
        pass


class _OtherHost(_Refusing):
    """A host other than the replayed workflow's: whether it is a workflow host, and
    with which store, is the node's config, which a replay does not have. A spawn onto
    it that the journal has no record of stops the replay at the first check that needs
    to know (``Interop.spawn`` asks for its store first)."""

    _what = "a host operation"
    durable = True

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def store(self) -> NoReturn:
        raise _WouldStart(
            f" onto host {self.name!r}, which a replay cannot look at (a node refuses "
            "it there, unrecorded, if that host is a workflow host with a store of its "
            "own, or a process host and id= is given; a replay cannot tell)")


class _HistoryStore(_Refusing):
    """Reads a replayed workflow makes (``history_size``); every write is refused."""

    _what = "a store operation"
    owner = False
    fence_epoch = None  # (no cluster: the replayed run's epoch, see WorkflowCore.epoch)

    def __init__(self, history: History) -> None:
        self.history = history
        self.path = None

    def journal_sizes(self, workflow_id: str) -> dict[int, int]:
        return dict(self.history.sizes)

    async def commit(self, tx: Transaction) -> list[Any]:
        raise _refused(f"a write ({tx!r})")

    def write(self, tx: Transaction) -> list[Any]:
        raise _refused(f"a write ({tx!r})")


class ReplayHost(_Refusing):
    """The host of one replayed workflow: its outcome stays here, nothing is written."""

    _what = "a host operation"
    durable = True
    closing = False
    client = True
    in_flight = None

    def __init__(self, history: History, name: str = "workflows") -> None:
        self.node = ReplayNode(self)
        self.name = name
        self.store = _HistoryStore(history)
        self.clock = WallClock()
        self.active: dict[str, Any] = {}
        self.names: dict[str, set[str]] = {}
        self.activity_mocks: dict[str, Any] = {}
        #: the live host's metrics counters (bookkeeping: read by nothing here)
        self.counts: collections.Counter[str] = collections.Counter()
        #: how the workflow function ended: (status, value, error), if it did
        self.outcome: tuple[WorkflowStatus, Any, ErrorInfo | None] | None = None

    async def finish(self, wf: WorkflowInstance, status: WorkflowStatus, value: Any,
                     error: ErrorInfo | None) -> None:
        wf.take_buffer()  # what the code buffered after the journal: dropped
        if status is WorkflowStatus.COMPLETED:  # as the live host ends it (finish there)
            refused = workflow_result(wf.fn, wf.wid, wf.name, value)[2]
            if refused is not None:
                status, error = WorkflowStatus.FAILED, ErrorInfo.from_exception(refused)
        self.outcome = (status, value, error)
        wf.status = status
        wf.error = error
        wf.done.set()
        await trio.lowlevel.checkpoint()

    def exited(self, wf: WorkflowInstance) -> None:
        """A replayed workflow holds no queue slot and no schedule tick."""

    async def start(self, target: Any, args: tuple[Any, ...], *, wid: str | None,
                    journal: Any = None, derived: bool = False, **_start: Any) -> NoReturn:
        """A child workflow the replayed workflow spawns where its journal has no
        record: what the node's start refuses before it reads its store
        (``checked_start``) raises as it does there; past that, a node would start it
        (and record the spawn): the replay stops there (``_WouldStart``). A config
        entry id is the node's config's to resolve: the replay stops at it."""
        if isinstance(target, str):
            raise _WouldStart(" (a config entry: a replay has no config to resolve it)")
        checked_start(self.node, self.activity_mocks, target, args, wid,
                      derived=journal is not None and derived)
        raise _WouldStart()


# ---------------------------------------------------------------- the instance
class _Unrecorded(ActivityHandle):
    """An activity started at a seq the journal never recorded (abandoned in the first
    run, later records exist): pending for good; awaiting it stops the replay."""

    __slots__ = ("seq",)

    def __init__(self, wf: ReplayInstance, name: str, seq: int) -> None:
        super().__init__(wf, name, Any)
        self.seq = seq

    async def _result(self) -> Any:
        wf = self._wf
        assert isinstance(wf, ReplayInstance)
        wf.cancelled_at_await(self.seq)  # (the first run met a cancel there)
        raise wf._stop_waiting(self.seq, f"waits for activity {self.name!r} started at seq "
                                         f"{self.seq}, which the journal never recorded")


#: the operations whose records have no name, as the code calls them
_UNNAMED = {"first": "workflow.first()", "sleep": "workflow.sleep()",
            "timer": "workflow.timer()", "await_timer": "the await of a workflow.timer()",
            "now": "workflow.now()", "uuid4": "workflow.uuid4()",
            "random": "workflow.random()"}


def _operation(kind: Any, name: str) -> str:
    """An operation of the code, in words: ``activity 'charge'``, ``workflow.first()``
    (not ``first ''``)."""
    kind = getattr(kind, "value", kind)
    if name:
        return f"{kind} {name!r}"
    return _UNNAMED.get(kind, str(kind))


class ReplayInstance(WorkflowInstance):
    """A workflow instance in replay mode (see the module docs)."""

    replay_end: ReplayEnd | None = None
    #: the spawn the journal has no record of that runs its checks: (seq, the
    #: operation in words, records after it)
    unrecorded_spawn: tuple[int, str, int] = (0, "", 0)
    #: the history is of a workflow that ended for good (completed, cancelled; a failed
    #: one is replayed as its retry would run it)
    finished = False
    #: the function a replay runs instead of the recorded name's (its ``target``), as
    #: its errors name it; ``None``: the recorded name's
    target: str | None = None

    def is_replaying(self) -> bool:
        return True

    def code_name(self) -> str:
        return self.name if self.target is None else f"{self.target} (the replay's target)"

    def ended_after_journal(self) -> bool:
        # (a version() gate added after the last record of a finished run: that run
        # took the old path to its end, as one recorded before the call existed)
        return self.finished

    async def _send_again(self, out: Any, topic: str, payload: Any) -> None:
        return None  # a replay writes nothing

    def _settle_replayed(self) -> None:
        self.replayed = None  # a replay writes nothing

    def _take(self, kind: Any, name: str, timed: bool = False,
              cancel: bool = True) -> Entry | None:
        self._op(kind)
        if self.replay_end is not None:
            raise self.replay_end
        entry = self.cursor.take(kind, name)
        if entry is not None:
            if entry.kind == CANCEL:
                self.cancel_delivered = True
                raise self._cancelled_error()
            return entry
        seq = self.cursor.seq - 1
        if seq in self.timers:  # a wait under way: the node checks it is the same one
            self._check_timer(seq, kind, name, timed)
        later = sorted(s for s in self.cursor.entries if s > seq)
        if later and kind == JournalKind.ACTIVITY:
            # an activity awaited where it is called, at a seq the journal left empty
            # while it records later steps: the run that recorded them went on without
            # this one's outcome, which this code cannot (the seq was a workflow.start
            # under way, say, since removed). A node would run it there and then block
            # (a step a trio cancel scope gave up on is the other way such a gap comes)
            entry = self.cursor.entries[later[0]]
            recorded = (f"no step at seq {seq}, then {op_text(entry.kind, entry.name)} at "
                        f"seq {entry.seq}")
            now = f"{op_text(kind, name)}, awaited at seq {seq}"
            self.cursor.error = NonDeterminismError(
                f"workflow {self.wid!r} cannot be checked past seq {seq}: the journal records "
                f"{recorded}, but the code now does {now}, whose outcome the recorded run "
                f"went on without. Code that removed a workflow.start from seq {seq} differs "
                "here (a node runs the step again, then blocks where the code goes on "
                "otherwise); code that gave up on that step in a trio cancel scope of its own "
                "takes the same path (a node runs it again, see 'Timeouts are timers'): a "
                "replay cannot tell them apart. Nothing was changed (a dry run)",
                workflow_id=self.wid, seq=seq, recorded=recorded, current=now)
            raise self.cursor.error
        if kind == JournalKind.SPAWN:
            # a refused spawn is not journaled: its checks run, as on a node (``spawn``)
            self.unrecorded_spawn = (seq, _operation(kind, name), len(later))
            return None
        raise self._stop(seq, _operation(kind, name), len(later))

    def _stop(self, seq: int, what: str, unchecked: int) -> ReplayEnd:
        if self.replay_end is None:
            self.replay_end = ReplayEnd(seq, what, unchecked)
        return self.replay_end

    def _stop_waiting(self, seq: int, what: str) -> ReplayEnd:
        """The code awaits an operation taken at ``seq`` that was never recorded."""
        self.cursor.check()
        return self._stop(seq, what, len(self.cursor.remaining()))

    def _at_gap(self) -> bool:
        """The next seq has no record but later ones exist (taken, never recorded)."""
        c = self.cursor
        return (c.error is None and self.replay_end is None and c.seq not in c.entries
                and c.seq < c.last)

    async def spawn(self, target: Any, args: tuple[Any, ...], host: str | None, *,
                    link: bool, monitor: bool, id: str | None = None,
                    supervised: bool = False) -> Pid:
        """A spawn the journal records is answered from it. One it has no record of (at
        a seq it left empty, or past its last record) runs the node's checks,
        in the node's order: a spawn they refuse (``process.spawn(..., id=<its own
        id>)``, an invalid id, arguments the child does not take) raises in the code,
        unrecorded, at the same seq as on a node, and the replay goes on. One a node
        would carry out stops the replay there, as does one onto another host, which a
        replay knows nothing of (whether a node refuses it depends on that host)."""
        try:
            return await super().spawn(target, args, host, link=link, monitor=monitor,
                                       id=id, supervised=supervised)
        except _WouldStart as start:
            seq, what, unchecked = self.unrecorded_spawn
            raise self._stop(seq, what + start.why, unchecked) from None

    def _child_id(self, host: Any, seq: int) -> str:
        """The id a node derives for the child spawned at ``seq`` (a spawn the journal
        has no record of, see :meth:`spawn`) when no other workflow holds it: a replay
        knows no other workflow. (A node takes ``<id>.<run>.<seq>`` when another than
        its child holds ``<id>.<seq>``, and refuses the spawn, unrecorded, when that one
        is held too: only starts by such ids, made by hand, do that.)"""
        return self._derived_child_id(seq, in_run=self.continued)

    async def records_committed(self) -> None:
        """A replay writes nothing: what the code buffered past the journal's end (a
        ``workflow.set_state`` there) is dropped with the rest (``ReplayHost.finish``),
        and no effect follows (an unrecorded spawn stops at its start)."""

    # -- operations whose seq is taken at creation and recorded later
    def start_activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       retry: Any, timeout: float | None) -> ActivityHandle:
        if self._at_gap():
            self._op("workflow.start()")
            name = _options(fn, retry, timeout, None, "workflow.start")[3]
            seq = self.cursor.seq
            self.cursor.seq = seq + 1
            return _Unrecorded(self, name, seq)
        return super().start_activity(fn, args, kwargs, retry=retry, timeout=timeout)

    def _start_receive(self, box: DurableInbox, timeout: Any) -> PendingReceive:
        if self._at_gap():
            self._op("receive")
            seq = self.cursor.seq
            self.cursor.seq = seq + 1
            seconds = None if timeout is None else timeout_seconds(timeout)
            return PendingReceive(self, box, seconds, seq, False, None)
        return super()._start_receive(box, timeout)

    async def _await_receive(self, r: PendingReceive) -> Any:
        if not r.resolved:
            self.cancelled_at_await(r.seq)  # (the first run met a cancel there)
            raise self._stop_waiting(r.seq, f"waits for the receive from {r.box.channel} "
                                            f"taken at seq {r.seq}, which the journal never "
                                            "recorded")
        return await super()._await_receive(r)

    def loaded(self) -> bool:
        return True  # (a history is of a run that began before, as a node loads it)

    async def _continue_as_new(self, args: tuple[Any, ...]) -> None:
        self.check_continue()  # (as a node does)
        raise self._stop(self.cursor.seq, "workflow.continue_as_new()", 0)

    # -- never reached in replay mode: refused if they are
    async def _wait(self, trio_deadline: float | None, status: WorkflowStatus,
                    on: str = "") -> None:
        raise _refused("a wait")

    async def commit_checked(self, tx: Transaction) -> list[Any]:
        raise _refused(f"a write ({tx!r})")


# ---------------------------------------------------------------- running a replay
@attrs.frozen
class ReplayResult:
    """What replaying one workflow found: ``ok``, or the ``error`` (the
    :class:`~garrison.NonDeterminismError`: workflow, position, recorded vs now)."""

    workflow_id: str
    name: str
    #: the workflow's recorded status
    status: str
    error: NonDeterminismError | None
    #: journal records, and how many of them the replay reached
    records: int
    checked: int
    #: how the replay ended, in words
    ending: str

    @property
    def ok(self) -> bool:
        """True when the code took the recorded path (as far as the replay went)."""
        return self.error is None

    def __str__(self) -> str:
        if self.error is not None:
            return f"NonDeterminismError: {self.error}"
        return f"ok ({self.checked} of {self.records} records replayed; {self.ending})"


#: a divergence found by a replay (a dry run: nothing was changed): what it means
REPLAY_ADVICE = ("Nothing was changed (a dry run); a node running this code would block the "
                 "workflow when it replays it: keep the recorded path for workflows started "
                 "before the change (branch with workflow.version), or deploy the change "
                 "once they have finished")


class _CodeGone(Exception):
    """The recorded function's module imports but has no such function, or it is no
    workflow function now (``why``; ``ending``: the replay's, in words)."""

    def __init__(self, why: str, ending: str) -> None:
        super().__init__(why)
        self.why = why
        self.ending = ending


def _replayed_code(history: History, target: Any) -> Any:
    """The workflow function a replay runs: ``target`` (a function or its
    ``module:qualname``), else the recorded name's; code that does not import is a
    ``ValueError`` naming it, and a ``target`` that is no workflow function a
    ``TypeError``, never a divergence (nothing was replayed). A recorded name whose
    module imports without it (renamed or removed), or that is no workflow function now
    (a sync ``def``, an activity), is ``_CodeGone``: a difference, as the CLI's replay
    reports it."""
    if target is not None and not isinstance(target, str):
        if not callable(target):
            raise TypeError(f"replay target: expected the workflow function or its "
                            f"'module:qualname', got {type(target).__name__}: {target!r}")
        return _workflow_code(target, f"replay target {target!r}")
    name = history.name if target is None else target
    what = (f"{name!r}, the code of workflow {history.workflow_id!r}" if target is None
            else f"replay target {name!r}")
    if ":" not in name:
        raise ValueError(f"{what}: expected 'module:qualname' (e.g. app.orders:order_workflow)")
    try:
        fn = import_target(name)
    except Exception as exc:
        gone = function_gone(name, exc) if target is None else None
        if gone is not None:
            raise _CodeGone(gone, "its code is gone") from None
        raise ValueError(f"cannot import {what}: {type(exc).__name__}: {exc} (run where the "
                         "application's code is importable)") from None
    if target is None:
        refused = workflow_refused_now(fn)
        if refused is not None:
            raise _CodeGone(refused, "its code is no workflow function")
    return _workflow_code(fn, what)


def _workflow_code(fn: Any, what: str) -> Any:
    """``fn`` if a workflow can run it (an async function, not an activity), else the
    ``TypeError`` ``start_workflow`` gives: a wrong target (a sync ``def``, a dict) is
    no divergence."""
    refused = workflow_refusal(fn)
    if refused is not None:
        raise TypeError(f"{what}: {refused}")
    return fn


async def replay_history(history: History, target: Any = None) -> ReplayResult:
    """Replay ``history`` against the code installed now (``target``: the workflow
    function, or its ``module:qualname``, instead of the recorded name), with no
    effects, up to the end of its journal. A failed workflow is replayed as its retry
    would resume it: without the record the retry takes back (the final error of the
    activity it failed with, the journal's last), and on past the journal's end, as
    live work (a ``workflow.version`` there gets its newest version, as on the retry)."""
    try:
        fn = _replayed_code(history, target)
    except _CodeGone as gone:  # (renamed, removed, made sync: nothing is replayed)
        return ReplayResult(history.workflow_id, history.name, history.status,
                            code_gone(history.workflow_id, history.name, gone.why),
                            history.records, 0, gone.ending)
    taken = ""
    if history.status == WorkflowStatus.FAILED.value and history.journal:
        seq, _what = taken_back_by_retry(history, [(e.seq, e.kind, e.name, e.outcome)
                                                   for e in history.journal])
        if seq is not None:
            name = history.journal[-1].name  # (the record taken back is the last)
            history = attrs.evolve(history, journal=tuple(
                e for e in history.journal if e.seq < seq))
            # "the code", not the activity: code deployed since may do another step there
            taken = (f"; a retry takes back its last record, the final error of activity "
                     f"{name!r} (seq {seq}), and runs the code again from there")
    journal = list(history.journal)
    host = ReplayHost(history, history.host)
    wf = ReplayInstance(
        cast(Any, host), history.workflow_id, history.name, list(history.input),
        run_id=history.run_id, attempt=history.attempt, parent=None,
        created=history.created if history.created is not None else 0.0,
        journal=journal, pending=[], cancel_requested=False, watchers=[],
        state=initial_state(journal),
        # the timers under way, as recovery loads them (``_recovery.load``): code that
        # does something else at their seq, or returns or raises before it, diverges
        timers={seq: deadline for seq, (deadline, _kind) in history.timers.items()},
        timer_kinds={seq: kind for seq, (_deadline, kind) in history.timers.items()
                     if kind is not None})
    wf.check_lost = False
    wf.finished = history.status in FINAL_STATUSES and history.status != "failed"
    wf.cursor.advice = REPLAY_ADVICE
    for name, completed in history.promises.items():
        wf.keep_promise(name, completed)
    wf.fn = fn
    if target is not None:
        wf.target = target if isinstance(target, str) else (
            f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}")
    stuck = False

    async def run(nursery: trio.Nursery) -> None:
        try:
            await wf.main()
        except ReplayEnd:
            pass
        except BaseExceptionGroup as group:  # raised inside a nursery of the code
            rest = group.subgroup(lambda exc: not isinstance(exc, ReplayEnd))
            if rest is not None:
                raise
        finally:
            nursery.cancel_scope.cancel()

    async def watchdog() -> None:
        # (imported here: ``trio.testing`` imports pytest where it is installed, which a
        # node that never replays from the command line should not carry)
        import trio.testing

        nonlocal stuck
        await trio.testing.wait_all_tasks_blocked(STUCK_AFTER)
        stuck = True
        wf.cancel_body()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, nursery)
        nursery.start_soon(watchdog)
    return _result(history, wf, host, stuck, taken)


def _result(history: History, wf: ReplayInstance, host: ReplayHost, stuck: bool,
            taken: str = "") -> ReplayResult:
    records = history.records
    remaining = [e for e in wf.cursor.remaining() if e.seq > 0]
    checked = records - len(remaining)
    error = wf.cursor.error
    ending = ""
    end = wf.replay_end
    if error is None and end is not None:
        checked = records - end.unchecked
        if end.unchecked:
            ending = (f"stopped at seq {end.seq}: the code {end.what}; the "
                      f"{end.unchecked} later record(s) could not be checked")
        else:
            ending = f"the journal ends where the code goes on with {end.what} (live work)"
    elif error is None and stuck:
        ending = ("stopped: the code waits on something no journal record answers (trio or "
                  "other non-durable waits in workflow code)")
        if remaining:
            ending += f"; the {len(remaining)} later record(s) could not be checked"
    elif error is None and host.outcome is not None:
        status, _value, failure = host.outcome
        if remaining:  # the code ended before the journal did
            first = remaining[0]
            how = "returned" if status is WorkflowStatus.COMPLETED else f"raised {failure}"
            error = wf.cursor.diverge(first.seq, first.kind, first.name,
                                      f"nothing more (the workflow function {how})")
        elif status is WorkflowStatus.COMPLETED:
            ending = "the code returned"
        elif status is WorkflowStatus.CANCELLED:
            ending = "the code ended cancelled"
        else:
            ending = f"the code raised {failure}"
        if error is None and status.value != history.status and history.status in (
                "failed", "cancelled"):  # (one recorded completed differs: below)
            ending += f" (the workflow is recorded {history.status})"
    elif error is None:  # pragma: no cover - the run always ends one of the ways above
        ending = "stopped"
    if error is None and history.status == WorkflowStatus.COMPLETED.value and not stuck \
            and (host.outcome is None or host.outcome[0] is not WorkflowStatus.COMPLETED):
        # a completed history (a golden test's) that the code no longer completes: it
        # raises, ends cancelled, or goes on past the journal's end (a step more, a wait;
        # not a non-durable wait the replay cannot get past, which says so)
        now = ending or "does not return"
        error = NonDeterminismError(
            f"workflow {history.workflow_id!r} is recorded completed at the end of its "
            f"journal, but the code now does not return there: {now}. Nothing was "
            "changed (a dry run); a node never runs a completed workflow again, but this "
            "code no longer takes the recorded path to its end",
            workflow_id=history.workflow_id, seq=records + 1,
            recorded="the workflow's return", current=now)
        wf.cursor.error = error
    if error is not None:
        checked = max(0, min(checked, (error.seq or 1) - 1))
    elif taken:
        ending += taken
    return ReplayResult(history.workflow_id, history.name, history.status, error, records,
                        checked, ending)
