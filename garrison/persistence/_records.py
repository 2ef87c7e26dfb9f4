"""Store-neutral values: the records a store returns and the statuses it keeps.

Records are ``@attrs.frozen`` and are built from database rows with their
``from_row`` classmethod; the row is a tuple in the column order of the
class's ``COLUMNS`` string (which the stores use verbatim in their SELECTs).
JSON columns are decoded to their plain JSON shape; restore typed values with
:func:`garrison.persistence.structure`. Times are unix seconds in the database
and aware UTC datetimes in records.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import attrs

from ..actors._values import ErrorInfo, Pid
from ._converter import structure

__all__ = [
    "FINAL_STATUSES",
    "MAX_TIME",
    "MIN_TIME",
    "DamagedRecord",
    "InboxRecord",
    "JournalHead",
    "JournalRecord",
    "PromiseRecord",
    "PromiseStatus",
    "QueuePlace",
    "QueueRecord",
    "ResumeRows",
    "ScheduleRecord",
    "StoreStatistics",
    "TimerRecord",
    "WakeupRecord",
    "WorkflowRecord",
    "WorkflowStatus",
    "cancel_flag",
    "cancel_time",
    "parse_status",
    "requested_attempt",
]

_UTC = _dt.UTC
_fromtimestamp = _dt.datetime.fromtimestamp
_loads = json.loads
#: the words of Python's ``ValueError`` for an int with more digits than it reads from
#: text (``sys.get_int_max_str_digits``): a stored whole number written where the limit
#: was higher (or none, ``sys.set_int_max_str_digits(0)``)
_DIGITS_ERROR = "integer string conversion"


def _unreadable(exc: ValueError) -> bool:
    """``exc``, met decoding a stored JSON text, says what is wrong with the text: no
    JSON, or a whole number too long for this Python's limit (any other ``ValueError``
    is no fault of the text: raised as it is)."""
    return isinstance(exc, json.JSONDecodeError) or (
        type(exc) is ValueError and _DIGITS_ERROR in str(exc))


def _too_long_said(exc: ValueError) -> str:
    """What a stored whole number too long for this Python's limit (``exc``: the error
    decoding it raised) is, and what to do."""
    found = re.search(r"value has (\d+) digits", str(exc))
    number = f"a whole number of {int(found.group(1)):,} digits" if found \
        else "a whole number"
    return (f"holds {number}, more than the {sys.get_int_max_str_digits():,} digits this "
            "Python reads (stored where sys.set_int_max_str_digits() allowed more): raise "
            "the limit in the process that reads it, with sys.set_int_max_str_digits() "
            "or PYTHONINTMAXSTRDIGITS in its environment (0: none)")


#: the latest time a record holds (9999-12-31 23:59:59 UTC); a stored time past it (a
#: "forever" timer written before deadlines were capped) reads as this
MAX_TIME = 253402300799.0
#: the earliest time a record holds (0001-01-01 00:00:00 UTC); a stored time before it
#: (a ``sleep_until(datetime.min)`` east of UTC, written before deadlines were capped at
#: this end too) reads as this: past, as it was
MIN_TIME = -62135596800.0


def state_digest(text: str) -> str:
    """The digest of a state value's stored JSON ``text`` that ``Store.state_digests``
    gives (PostgreSQL's ``md5()`` of the text: a change check, not a secret)."""
    return hashlib.md5(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def no_match(params: Sequence[Any], nul: bool = False) -> bool:
    """True if a read's ``params`` hold a string no store can hold (a lone surrogate
    character, which is no valid text; with ``nul``, the NUL character too: PostgreSQL's
    text): no row can match it, and the read finds nothing rather than failing."""
    for value in params:
        if type(value) is str and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        if nul and type(value) is str and "\x00" in value:
            return True
    return False


def _moment(value: float) -> _dt.datetime:
    if not MIN_TIME <= value <= MAX_TIME:  # (no date holds it; NaN reads as past)
        value = MAX_TIME if value > MAX_TIME else MIN_TIME
    return _fromtimestamp(value, _UTC)


def _time(value: float | None) -> _dt.datetime | None:
    return None if value is None else _moment(value)


def cancel_flag(at: float) -> int:
    """The ``cancel_requested`` column of a cancel asked at ``at`` (unix seconds): that
    time in whole microseconds. 0 is no cancel, 1 one asked at a time not kept (written
    by an earlier garrison); every other value is when it was asked
    (:func:`cancel_time` reads it back)."""
    return max(2, round(at * 1_000_000))


def cancel_time(flag: int | None) -> float | None:
    """When the cancel the ``cancel_requested`` column ``flag`` holds was asked (unix
    seconds); ``None`` for no cancel, or one asked at a time not kept."""
    return flag / 1_000_000 if flag is not None and flag > 1 else None


def _json(text: str | None) -> Any:
    return None if text is None else _loads(text)


def _pid(text: str | None) -> Pid | None:
    return None if text is None else Pid.parse(text)


class WorkflowStatus(enum.StrEnum):
    """Where a workflow is; compares equal to its lower-case name."""

    PENDING = "pending"
    RUNNING = "running"
    #: only a timer can wake it
    SLEEPING = "sleeping"
    #: a message, promise or event can wake it
    WAITING = "waiting"
    #: stopped by a NonDeterminismError; the journal is kept
    BLOCKED = "blocked"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for ``completed``, ``failed`` and ``cancelled``."""
        return self in FINAL_STATUSES


def parse_status(value: object) -> WorkflowStatus:
    """``value`` as a :class:`WorkflowStatus`; ``ValueError`` naming it and the choices."""
    try:
        return WorkflowStatus(value)  # type: ignore[arg-type]
    except ValueError:
        choices = ", ".join(s.value for s in WorkflowStatus)
        raise ValueError(f"invalid workflow status {value!r}: expected one of {choices}") from None


#: The statuses a workflow never leaves.
FINAL_STATUSES = frozenset(
    {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED}
)


class PromiseStatus(enum.StrEnum):
    """A durable promise's state."""

    PENDING = "pending"
    RESOLVED = "resolved"
    REJECTED = "rejected"


@attrs.frozen
class WorkflowRecord:
    """One workflow row. ``input`` is the decoded argument list; ``result`` the
    decoded result (``None`` until completed); ``error`` an :class:`ErrorInfo`
    for a failed or blocked workflow; ``search``/``memo`` decoded dicts."""

    COLUMNS: ClassVar[str] = (
        "workflow_id, name, status, input, result, error, parent, run_id, attempt, host, "
        "created, updated, search, memo, cancel_requested, trace"
    )

    workflow_id: str
    name: str
    status: WorkflowStatus = attrs.field(converter=WorkflowStatus)
    input: list[Any] = attrs.field(factory=list)
    result: Any = None
    error: ErrorInfo | None = None
    parent: Pid | None = None
    run_id: str | None = None
    attempt: int = 1
    host: str | None = None
    created: _dt.datetime | None = None
    updated: _dt.datetime | None = None
    search: dict[str, Any] = attrs.field(factory=dict)
    memo: dict[str, Any] = attrs.field(factory=dict)
    cancel_requested: bool = False
    #: the trace context the workflow was started in (``garrison.tracing``), or ``None``
    trace: dict[str, str] | None = attrs.field(default=None, repr=False)
    #: when its cancel was asked (unix seconds), or ``None`` (none asked, or asked by an
    #: earlier garrison, which kept no time): the ``cancel_requested`` column holds it
    cancel_time: float | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> WorkflowRecord:
        """Build from a row in :attr:`COLUMNS` order (a text column that is not UTF-8
        read as its ``bytes``); :class:`DamagedRecord` naming the workflow and the
        column for a JSON column that holds no JSON, or a column that is not UTF-8
        text."""
        if bytes in map(type, row):  # (a BLOB, or not UTF-8: SQLite's)
            DamagedRecord.check_text(row)
            row = [value.decode() if type(value) is bytes else value for value in row]
        try:
            return cls._from_row(row)
        except ValueError as exc:
            if not _unreadable(exc):
                raise
            raise DamagedRecord.of(row, exc) from None

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]],
                  damaged: list[DamagedRecord] | None = None) -> list[WorkflowRecord]:
        """:meth:`from_row` of each of ``rows``; with ``damaged``, a damaged one is added
        there (its :attr:`DamagedRecord.parent` and ``attempt`` set) instead of raised,
        and the others are read."""
        found: list[WorkflowRecord] = []
        for row in rows:
            try:
                found.append(cls.from_row(row))
            except DamagedRecord as exc:
                if damaged is None:
                    raise
                exc.parent = row[6] if isinstance(row[6], str) else None
                exc.attempt = row[8] if type(row[8]) is int else None
                damaged.append(exc)
        return found

    @classmethod
    def _from_row(cls, row: Sequence[Any]) -> WorkflowRecord:
        (wid, name, status, inp, result, error, parent, run_id, attempt, host,
         created, updated, search, memo, cancel, trace) = row  # fmt: skip
        return cls(
            wid,
            name,
            status,
            _json(inp) or [],
            _json(result),
            None if error is None else structure(_loads(error), ErrorInfo, what="workflow error"),
            _pid(parent),
            run_id,
            attempt,
            host,
            _time(created),
            _time(updated),
            _json(search) or {},
            _json(memo) or {},
            bool(cancel),
            _json(trace),
            cancel_time(cancel),
        )


class DamagedRecord(json.JSONDecodeError):
    """A workflow's row whose JSON column (input, result, error, search, memo, trace)
    holds no JSON (a damaged store, or one edited by hand), or a record of its journal
    whose outcome does (``seq``: that record's; ``None`` for the workflow's row); or
    either holding text that is not UTF-8: names the workflow (``workflow_id``) and the
    column; ``created``: the row's ``created`` (unix seconds), to page on past it. A
    ``json.JSONDecodeError``, as a read met it.

    Also one whose JSON holds a whole number with more digits than this Python reads
    (``too_long``: stored by a process whose ``sys.set_int_max_str_digits`` allowed
    them): nothing is damaged, and it says how to read it. And a message or event in a
    workflow's inbox whose ``payload`` or ``trace`` holds either (``msg_id``: that
    message's id; ``None`` for the others)."""

    #: the JSON columns of a workflow's row, by their index in ``COLUMNS`` order
    JSON_COLUMNS: ClassVar[dict[int, str]] = {3: "input", 4: "result", 5: "error",
                                              12: "search", 13: "memo", 15: "trace"}

    workflow_id: str
    column: str
    created: float | None
    seq: int | None = None
    #: its text is JSON, but holds a whole number longer than this Python's limit
    too_long: bool = False
    #: the id of the inbox message whose column it is (``None``: not an inbox row's)
    msg_id: str | None = None
    #: the row's parent pid as stored, where a read of children met it
    #: (``Store.unfinished_children``; ``None`` otherwise)
    parent: str | None = None
    #: the row's attempt as stored, where a read of children met it (as ``parent``)
    attempt: int | None = None

    @property
    def fault(self) -> str:
        """Why it cannot be read, for a line that adds it to :func:`str` of it."""
        return ("a whole number longer than this Python reads" if self.too_long
                else "a damaged store, or a hand edit")

    @classmethod
    def of(cls, row: Sequence[Any], exc: ValueError) -> DamagedRecord:
        column = "JSON"
        for index, name in cls.JSON_COLUMNS.items():
            if isinstance(row[index], str | bytes):
                try:
                    json.loads(row[index])
                except ValueError:
                    column = name
                    break
        damaged, said = cls._of_fault(exc)
        damaged.workflow_id, damaged.column = str(row[0]), column
        damaged.created = row[10] if isinstance(row[10], int | float) else None
        damaged.args = (f"workflow {damaged.workflow_id!r}: its {column} {said}",)
        return damaged

    @classmethod
    def _of_fault(cls, exc: ValueError) -> tuple[DamagedRecord, str]:
        """One for what decoding a value raised (``exc``: text that is not UTF-8, no
        JSON, or a whole number too long for this Python), and what to say the value
        is; its place and message are the caller's to set."""
        if isinstance(exc, UnicodeDecodeError):
            damaged = cls._not_utf8(exc)
            return damaged, f"is {damaged.msg}"
        if isinstance(exc, json.JSONDecodeError):
            return cls(exc.msg, exc.doc, exc.pos), f"is not JSON ({exc})"
        return cls._too_long(exc), _too_long_said(exc)

    @classmethod
    def _too_long(cls, exc: ValueError) -> DamagedRecord:
        """One for a whole number too long for this Python (its place and message are
        the caller's to set)."""
        damaged = cls(str(exc), "", 0)
        damaged.too_long = True
        return damaged

    @classmethod
    def check_text(cls, row: Sequence[Any]) -> None:
        """Raise one naming the workflow of ``row`` (read with its text that is not
        UTF-8 as ``bytes``) and the first such column, if it has one."""
        for index, value in enumerate(row):
            if type(value) is not bytes:
                continue
            try:
                value.decode()
            except UnicodeDecodeError as bad:
                wid = row[0].decode(errors="surrogateescape") if type(row[0]) is bytes \
                    else str(row[0])
                column = WorkflowRecord.COLUMNS.split(", ")[index]
                damaged = cls._not_utf8(bad)
                damaged.workflow_id, damaged.column = wid, column
                damaged.created = row[10] if isinstance(row[10], int | float) else None
                damaged.args = (f"workflow {wid!r}: its {column} is {damaged.msg}",)
                raise damaged from None

    @classmethod
    def _not_utf8(cls, exc: UnicodeDecodeError) -> DamagedRecord:
        """One saying where the bytes ``exc`` could not decode are not UTF-8 (its
        workflow, column and message are the caller's to set)."""
        return cls(f"not UTF-8 text (byte {exc.start} of it is "
                   f"0x{exc.object[exc.start]:02x})",
                   bytes(exc.object).decode(errors="replace"), exc.start)

    @property
    def in_row(self) -> bool:
        """Whether what cannot be read is in the workflow's own row (not a record of
        its journal, nor a message of its inbox)."""
        return self.seq is None and self.msg_id is None

    @property
    def id_is_text(self) -> bool:
        """Whether the damaged row's own id is UTF-8 text: one that is not is named with
        its bad bytes as lone surrogates, which no read can select after."""
        try:
            self.workflow_id.encode()
        except UnicodeEncodeError:
            return False
        return True

    @classmethod
    def journal_text(cls, row: Sequence[Any], index: int) -> Any:
        """Column ``index`` of the journal ``row`` as text, if it was read as ``bytes``
        (a BLOB, or text that is not UTF-8: then one naming it is raised)."""
        value = row[index]
        if type(value) is not bytes:
            return value
        try:
            return value.decode()
        except UnicodeDecodeError as exc:
            raise cls.of_journal(row, index, exc) from None

    @classmethod
    def of_journal(cls, row: Sequence[Any], index: int, exc: ValueError) -> DamagedRecord:
        """One naming the workflow and the seq of the journal ``row`` (in
        :attr:`JournalRecord.COLUMNS` order) whose column ``index`` is no JSON, not
        UTF-8 text, or JSON with a whole number too long for this Python: ``exc``, as
        decoding it raised."""
        wid, seq, column = str(row[0]), row[1], JournalRecord.COLUMNS.split(", ")[index]
        damaged, said = cls._of_fault(exc)
        damaged.workflow_id, damaged.column, damaged.seq = wid, column, seq
        damaged.created = None
        damaged.args = (f"workflow {wid!r}: the {column} of its journal record seq {seq} "
                        f"{said}",)
        return damaged

    @classmethod
    def of_inbox(cls, row: Sequence[Any], exc: ValueError,
                 column: str | None = None) -> DamagedRecord:
        """One naming the workflow, the message and the column of the inbox ``row`` (in
        :attr:`InboxRecord.COLUMNS` order) whose payload or trace (or ``column``, as
        given) is no JSON, or JSON with a whole number too long for this Python:
        ``exc``, as decoding it raised."""
        wid, msg_id, topic = str(row[1]), str(row[2]), row[3]
        if column is None and row[4] is not None:  # (the payload, unless it decodes)
            column = "payload"
            try:
                _loads(row[4])
            except ValueError:
                pass
            else:
                column = "trace"
        column = column or "payload"
        damaged, said = cls._of_fault(exc)
        damaged.workflow_id, damaged.column, damaged.msg_id = wid, column, msg_id
        damaged.created = None
        damaged.args = (f"workflow {wid!r}: the {column} of its inbox message {msg_id!r} "
                        f"(topic {topic!r}) {said}",)
        return damaged


@attrs.frozen(slots=True)
class JournalRecord:
    """One journal entry: what durable operation ``seq`` of a workflow did the
    first time. ``outcome`` is the decoded JSON the workflow host recorded."""

    COLUMNS: ClassVar[str] = "workflow_id, seq, kind, name, outcome, attempts, time"

    workflow_id: str
    seq: int
    kind: str
    name: str
    outcome: Any
    attempts: int
    time: _dt.datetime

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> JournalRecord:
        """Build from a row in :attr:`COLUMNS` order (a text column that is not UTF-8
        read as its ``bytes``); :class:`DamagedRecord` naming the workflow and the seq
        for an outcome that holds no JSON, or a column that is not UTF-8 text."""
        wid, seq, kind, name, outcome, attempts, time = row
        if bytes in (type(kind), type(name), type(outcome)):  # (a BLOB, or not UTF-8)
            kind, name, outcome = (DamagedRecord.journal_text(row, i) for i in (2, 3, 4))
        try:
            value = _loads(outcome)
        except ValueError as exc:
            if not _unreadable(exc):
                raise
            raise DamagedRecord.of_journal(row, 4, exc) from None
        return cls(wid, seq, kind, name, value, attempts, _fromtimestamp(time, _UTC))



@attrs.frozen
class JournalHead:
    """One journal record with its outcome not decoded: ``text`` is the outcome's stored
    JSON text, whole (:attr:`whole`) when it has at most the ``head`` characters asked
    for, else its first ``head`` characters; ``size`` the bytes of the whole stored text
    (where the store's database cannot say that without reading the text, its
    characters: the same for the text garrison stores, which escapes every character
    past ASCII). What the web console reads of a long journal: it decodes the outcomes
    small enough to show whole, and shows the start of each bigger one, never
    decoding the rest."""

    workflow_id: str
    seq: int
    kind: str
    name: str
    attempts: int
    time: _dt.datetime
    size: int
    text: str
    whole: bool

    def outcome(self) -> Any:
        """The decoded outcome (``ValueError`` unless :attr:`whole`); a
        :class:`DamagedRecord` naming the workflow and seq if it holds no JSON."""
        if not self.whole:
            raise ValueError(f"journal record seq {self.seq} of {self.workflow_id!r}: "
                             f"only the first {len(self.text)} characters of its outcome "
                             "were read, not all")
        try:
            return _loads(self.text)
        except ValueError as exc:
            if not _unreadable(exc):
                raise
            row = (self.workflow_id, self.seq, self.kind, self.name, self.text)
            raise DamagedRecord.of_journal(row, 4, exc) from None

    @classmethod
    def from_row(cls, row: Sequence[Any], head: int) -> JournalHead:
        """Build from a row of :func:`journal_heads_select` for ``head`` (a text column
        that is not UTF-8 read as its ``bytes``: a :class:`DamagedRecord` naming it);
        one whose outcome is cut is a :class:`DamagedRecord` too where the start read is
        the start of no JSON text (what is past it is not read, nor checked)."""
        wid, seq, kind, name, text, attempts, time, size = row
        if bytes in (type(kind), type(name), type(text)):  # (a BLOB, or not UTF-8)
            kind, name, text = (DamagedRecord.journal_text(row, i) for i in (2, 3, 4))
        whole = len(text) <= head
        if not whole:
            text = text[:head]
            damage = _no_json_start(text)
            if damage is not None:
                raise DamagedRecord.of_journal((wid, seq, kind, name, text), 4,
                                               damage) from None
        return cls(wid, seq, kind, name, attempts, _fromtimestamp(time, _UTC), int(size),
                   text, whole)


#: what may follow where Python's JSON reader stopped in a text cut short, as the part
#: of a value the cut left: a literal's start (``true``, ``NaN``, ``-Infinity``...) or
#: a number's sign, where it asked for a value
_PART_VALUE = re.compile(r"(?:t(?:ru?)?|f(?:a(?:ls?)?)?|n(?:ul?)?|N(?:a)?|-|"
                         r"-?I(?:n(?:f(?:i(?:n(?:i(?:ty?)?)?)?)?)?)?)?\Z")
#: the same of a ``\\uXXXX`` escape at the end of a string the cut left (from its
#: ``u``, where the reader says it is short: it asks for a character after it)
_PART_ESCAPE = re.compile(r"u[0-9a-fA-F]{0,4}\Z")
#: a number that ends where the reader stopped, before what may come of it in a text
#: cut short: a point (none in it yet) or an exponent's start (none yet)
_NUMBER_END = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?\Z")
#: the characters of a JSON number, and its digits
_NUMBER_CHARS = "0123456789.eE+-"
_DIGITS = "0123456789"


def _no_json_start(text: str) -> json.JSONDecodeError | None:
    """Why ``text`` (the first characters of a stored JSON text, not all of it) is the
    start of no JSON text: the error Python's JSON reader gives at the first character
    no JSON text can have there, as decoding the whole text gives it; ``None`` if some
    JSON text starts so. One decode of ``text``: where the reader stops at its end, or
    at a part of a value, string or escape the cut left, it is the start of one (and
    where it cannot go on: a whole number too long for it, a nesting deeper than its
    recursion limit; what follows is not checked)."""
    try:
        _loads(text)
    except json.JSONDecodeError as exc:
        at = exc.pos
        rest = text[at:]
        if not rest.strip(" \t\n\r") or exc.msg.startswith("Unterminated string"):
            return None  # (the text ends there: it asks for more; a string runs on)
        if exc.msg == "Expecting value" and _PART_VALUE.match(rest):
            return None
        if exc.msg.startswith("Invalid \\uXXXX escape") and _PART_ESCAPE.match(rest):
            return None
        number = None
        if at and text[at - 1] in _DIGITS:  # (the number read back from where it ends:
            # a search from the start tried each digit of every number before it)
            number = _NUMBER_END.fullmatch(text, len(text[:at].rstrip(_NUMBER_CHARS)), at)
        if number is not None and number.group(2) is None and (
                rest in ("e", "E", "e-", "e+", "E-", "E+")
                or (rest == "." and number.group(1) is None)):
            return None  # (a number the cut left without its fraction or exponent)
        return exc
    except ValueError:  # (a whole number too long for this Python: JSON, not read here)
        return None
    except RecursionError:  # (nested deeper than the reader goes here: not checked)
        return None
    return None


def journal_heads_select(table: str, mark: str, head: int, after: int, limit: int,
                         newest: bool, size: str = "octet_length") -> str:
    """The SELECT of a store's ``journal_heads`` on ``table`` with parameter marker
    ``mark``: the workflow id, ``after`` and ``limit`` are its parameters, one key range
    of the journal's index read forwards (or, ``newest``, backwards: the caller turns
    the rows round). Each outcome is read up to ``head`` characters and one more (which
    tells a whole one), and its size by the SQL function ``size``: ``octet_length``
    reads a text's size in bytes from where it is stored, without reading the text
    (``length``, its characters, reads it all). ``ValueError`` naming the argument
    unless ``head`` is a whole number >= 0, ``after`` one >= -1 and ``limit`` one >= 0."""
    if type(head) is not int or head < 0:
        raise ValueError(f"journal_heads(head=...): the characters of each outcome read "
                         f"at most, a whole number >= 0, got {head!r}")
    if type(after) is not int or after < -1:
        raise ValueError(f"journal_heads(after=...): the seq the records come after (-1: "
                         f"from the start), a whole number >= -1, got {after!r}")
    if type(limit) is not int or limit < 0:
        raise ValueError(f"journal_heads(limit=...): how many records to read at most, a "
                         f"whole number >= 0, got {limit!r}")
    # (the records chosen first, their outcomes cut after: PostgreSQL may sort the rows
    # of the range to take the first, and would cut every outcome of the range first,
    # each read whole from its compressed storage)
    order = f"ORDER BY seq{' DESC' if newest else ''}"
    return (f"SELECT workflow_id, seq, kind, name, substr(outcome, 1, {head + 1}), "
            f"attempts, time, {size}(outcome) FROM (SELECT workflow_id, seq, kind, name, "
            f"outcome, attempts, time FROM {table} WHERE workflow_id = {mark} "
            f"AND seq > {mark} {order} LIMIT {mark}) AS page {order}")

def journal_select(table: str, mark: str, kind: str | None, last: int | None) -> str:
    """The SELECT of a store's ``journal(workflow_id, kind=, last=)`` on ``table`` with
    parameter marker ``mark`` (``?`` or ``%s``): the workflow id, then ``kind`` if
    given, then ``last`` if given, are its parameters. ``last`` reads the newest
    records alone, newest first (a key range of the journal's index read backwards), so a
    page showing a journal's end reads that end and not the whole journal;
    ``ValueError`` unless it is a whole number >= 0, and unless ``kind`` is text."""
    if kind is not None and not isinstance(kind, str):
        raise ValueError(f"journal(kind=...): a record kind such as 'timer', "
                         f"got {type(kind).__name__}: {kind!r}")
    if last is not None and (type(last) is not int or last < 0):
        raise ValueError(f"journal(last=...): how many of the newest records to read, "
                         f"a whole number >= 0, got {last!r}")
    where = f"workflow_id = {mark}" + (f" AND kind = {mark}" if kind is not None else "")
    sql = f"SELECT {JournalRecord.COLUMNS} FROM {table} WHERE {where}"
    # (newest first, as the index reads backwards: the caller turns the rows round; an
    # outer ORDER BY sorted the records read, megabytes of outcomes, in a temporary table)
    return sql + (" ORDER BY seq" if last is None else f" ORDER BY seq DESC LIMIT {mark}")


def journal_page_select(table: str, mark: str, after: int, limit: int) -> str:
    """The SELECT of a store's ``journal_page(workflow_id, after, limit)`` on ``table``
    with parameter marker ``mark``: the workflow id, ``after`` and ``limit`` are its
    parameters, one key range of the journal's index (never ``OFFSET``).
    ``ValueError`` naming the argument unless ``after`` is a whole number >= -1 and
    ``limit`` one >= 1."""
    if type(after) is not int or after < -1:
        raise ValueError(f"journal_page(after=...): the seq the page starts after (-1: "
                         f"from the start), a whole number >= -1, got {after!r}")
    if type(limit) is not int or limit < 1:
        raise ValueError(f"journal_page(limit=...): how many records a page holds at "
                         f"most, a whole number >= 1, got {limit!r}")
    return (f"SELECT {JournalRecord.COLUMNS} FROM {table} WHERE workflow_id = {mark} "
            f"AND seq > {mark} ORDER BY seq LIMIT {mark}")


def journal_page_of(rows: Sequence[Sequence[Any]]) -> list[tuple[JournalRecord, int]]:
    """A store's ``journal_page`` from its rows (in :attr:`JournalRecord.COLUMNS`
    order): each record with the characters of its outcome's stored JSON text, what
    ``journal_sizes`` says of it."""
    from_row = JournalRecord.from_row
    return [(from_row(row), len(row[4])) for row in rows]


def journal_entries_of(records: Sequence[JournalRecord]
                       ) -> tuple[list[tuple[int, str, str, Any, int]], int]:
    """A store's ``journal_entries`` from its ``journal`` (read record by record where
    the one read of them all failed: that read names a damaged record); the size is
    that of each outcome's JSON as written again."""
    return ([(r.seq, r.kind, r.name, r.outcome, r.attempts) for r in records],
            sum(len(json.dumps(r.outcome)) for r in records))


def requested_attempt(payload: Any) -> int | None:
    """The attempt of its workflow a ``control`` inbox row (a terminate request) asks to
    end, from its decoded ``payload``; ``None``: any attempt (no whole-number
    ``attempt`` in it). The one rule for the node that loads the request and for the
    cluster's claim, which must agree on a stale request."""
    attempt = payload.get("attempt") if isinstance(payload, dict) else None
    return attempt if type(attempt) is int else None


@attrs.frozen
class InboxRecord:
    """A durable inbox row: a message or event (``kind``) delivered to a workflow.

    ``id`` gives arrival order; ``consumed_seq`` is the journal seq of the
    receive that took it (``None`` while pending); ``trace`` the trace context the
    message was sent in (``garrison.tracing``), or ``None``; ``reply`` the JSON text
    of the reply a workflow gave to this call request from a workflow
    (``Transaction.record_reply``), or ``None``. A row a receive took has no
    ``payload`` nor ``trace`` (``None``; the receive's journal record holds them: see
    ``Transaction.consume``)."""

    COLUMNS: ClassVar[str] = (
        "id, workflow_id, msg_id, topic, payload, sender, kind, call_ref, created, consumed_seq, "
        "trace, reply"
    )

    id: int
    workflow_id: str
    msg_id: str
    topic: str
    payload: Any
    sender: Pid | None
    kind: str
    call_ref: str | None
    created: _dt.datetime
    consumed_seq: int | None
    trace: dict[str, str] | None = attrs.field(default=None, repr=False)
    reply: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> InboxRecord:
        """Build from a row in :attr:`COLUMNS` order; :class:`DamagedRecord` naming the
        workflow and the message if its payload or trace holds no JSON, a whole number
        too long for this Python, or (read as ``bytes``: a BLOB, or SQLite's text that
        is not UTF-8) text that is not UTF-8."""
        (ident, wid, msg_id, topic, payload, sender, kind, call_ref, created, consumed,
         trace, reply) = row  # fmt: skip
        try:
            if bytes in (type(payload), type(trace)):
                payload, trace = (v.decode() if type(v) is bytes else v
                                  for v in (payload, trace))
            payload, trace = _loads(payload), _json(trace)
        except ValueError as exc:
            if not (_unreadable(exc) or isinstance(exc, UnicodeDecodeError)):
                raise
            raise DamagedRecord.of_inbox(row, exc) from None
        return cls(
            ident, wid, msg_id, topic, payload, _pid(sender), kind, call_ref,
            _fromtimestamp(created, _UTC), consumed, trace, reply,
        )  # fmt: skip

    def replied(self) -> tuple[Any] | None:
        """``(value,)``: :attr:`reply` decoded; ``None`` if no reply is recorded. A
        :class:`DamagedRecord` naming the workflow and the message (its ``reply``) if
        it holds no JSON, or a whole number too long for this Python."""
        if self.reply is None:
            return None
        try:
            return (_loads(self.reply),)
        except ValueError as exc:
            if not _unreadable(exc):
                raise
            row = (self.id, self.workflow_id, self.msg_id, self.topic)
            raise DamagedRecord.of_inbox(row, exc, "reply") from None


@attrs.frozen
class TimerRecord:
    """A durable timer: operation ``seq`` of a workflow wakes at ``deadline`` (wall clock).

    ``kind`` is the operation waiting on it: ``"sleep"`` (``workflow.sleep``,
    ``sleep_until``) or ``"receive"`` (a receive with a timeout); ``None`` for a timer
    written by a garrison before schema version 7, which did not record it."""

    COLUMNS: ClassVar[str] = "workflow_id, seq, deadline, kind"

    workflow_id: str
    seq: int
    deadline: _dt.datetime
    kind: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TimerRecord:
        """Build from a row in :attr:`COLUMNS` order."""
        wid, seq, deadline, kind = row
        return cls(wid, seq, _moment(deadline), kind)


@attrs.frozen
class PromiseRecord:
    """A durable promise: ``value`` when resolved, ``error`` (the message) when rejected."""

    COLUMNS: ClassVar[str] = "workflow_id, name, status, value, error, created, completed"

    workflow_id: str
    name: str
    status: PromiseStatus = attrs.field(converter=PromiseStatus)
    value: Any = None
    error: str | None = None
    created: _dt.datetime | None = None
    completed: _dt.datetime | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> PromiseRecord:
        """Build from a row in :attr:`COLUMNS` order."""
        wid, name, status, value, error, created, completed = row
        return cls(wid, name, status, _json(value), error, _time(created), _time(completed))


@attrs.frozen
class ResumeRows:
    """What a node reads of one workflow to resume it (``Store.resume_rows``, read for
    a few hundred workflows at once): its journal as ``journal_entries`` returns it
    (``None``: a record of it is no JSON text; read it alone, which names it), its
    pending inbox rows (``pending_messages``), timers (``timers``), watchers
    (``monitors``), promises (``promises``) and, when asked for, its row
    (``get_workflow``; ``None`` if it has none). ``inbox`` is ``None`` where a row of
    it cannot be read (a :class:`DamagedRecord`): read it alone, which names it."""

    journal: tuple[list[tuple[int, str, str, Any, int]], int] | None
    inbox: list[InboxRecord] | None
    timers: list[TimerRecord]
    monitors: list[Pid]
    promises: list[PromiseRecord]
    record: WorkflowRecord | None = None


def group_resume_rows(ids: Sequence[str], journal: Sequence[Any], inbox: Sequence[Any],
                      timers: Sequence[Any], monitors: Sequence[Any],
                      promises: Sequence[Any],
                      records: dict[str, WorkflowRecord] | None) -> dict[str, ResumeRows]:
    """``Store.resume_rows`` of ``ids`` from the rows of its reads: ``journal`` rows
    ``(workflow_id, seq, kind, name, outcome, attempts)`` by workflow then seq (or
    ``None`` for none read: each journal read alone), ``inbox``, ``timers`` and
    ``promises`` rows in their records' ``COLUMNS`` order and the order of the
    one-workflow reads, ``monitors`` rows ``(workflow_id, watcher)`` in theirs."""
    texts: dict[str, list[Any]] = {}
    for row in journal:
        texts.setdefault(row[0], []).append(row)
    inboxes: dict[str, list[InboxRecord] | None] = {}
    for row in inbox:
        held = inboxes.setdefault(row[1], [])
        if held is not None:
            try:
                held.append(InboxRecord.from_row(row))
            except DamagedRecord:  # (read alone, which names it: the others are read)
                inboxes[row[1]] = None
    timed: dict[str, list[TimerRecord]] = {}
    for row in timers:
        timed.setdefault(row[0], []).append(TimerRecord.from_row(row))
    watched: dict[str, list[Pid]] = {}
    for wid, watcher in monitors:
        watched.setdefault(wid, []).append(Pid.parse(watcher))
    promised: dict[str, list[PromiseRecord]] = {}
    for row in promises:
        promised.setdefault(row[0], []).append(PromiseRecord.from_row(row))
    found: dict[str, ResumeRows] = {}
    for wid in ids:
        rows = texts.get(wid)
        entries: tuple[list[tuple[int, str, str, Any, int]], int] | None = ([], 0)
        if rows:
            outcomes = [row[4] for row in rows]
            try:
                decoded = json.loads("[" + ",".join(outcomes) + "]")
                entries = ([(seq, kind, name, out, attempts) for (_, seq, kind, name, _, attempts),
                            out in zip(rows, decoded, strict=True)], sum(map(len, outcomes)))
            except (TypeError, ValueError):  # a record that is no JSON text: read alone
                entries = None
        found[wid] = ResumeRows(entries, inboxes.get(wid, []), timed.get(wid, []),
                                watched.get(wid, []), promised.get(wid, []),
                                None if records is None else records.get(wid))
    return found


@attrs.frozen
class ScheduleRecord:
    """A schedule: which workflow it starts (``workflow``, its ``module:qualname``,
    with ``input``), when (``cron`` read in ``timezone``, or ``every`` seconds since
    the unix epoch), what a tick does while the previous run is unfinished
    (``overlap``: ``skip``, ``buffer_one``, ``allow_all``), how late a missed tick may
    still start (``catchup_window`` seconds), and where it is: ``paused``, the
    ``next_tick`` to act on, the ``last_tick`` acted on, the ``last_workflow`` started,
    a ``buffered_tick`` waiting for that one to end. ``source`` is ``"config"`` (a
    ``workflow.schedule`` entry, synced at start) or ``"api"`` (``node.schedule``)."""

    COLUMNS: ClassVar[str] = (
        "schedule_id, host, workflow, input, cron, every, timezone, overlap, catchup_window, "
        "paused, next_tick, last_tick, last_workflow, buffered_tick, source, created, updated"
    )

    schedule_id: str
    host: str
    workflow: str
    input: list[Any]
    cron: str | None
    every: float | None
    timezone: str
    overlap: str
    catchup_window: float
    paused: bool
    next_tick: _dt.datetime | None
    last_tick: _dt.datetime | None
    last_workflow: str | None
    buffered_tick: _dt.datetime | None
    source: str
    created: _dt.datetime
    updated: _dt.datetime

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ScheduleRecord:
        """Build from a row in :attr:`COLUMNS` order."""
        (sid, host, workflow, inp, cron, every, tz, overlap, window, paused, next_tick,
         last_tick, last_workflow, buffered, source, created, updated) = row  # fmt: skip
        return cls(sid, host, workflow, _json(inp) or [], cron, every, tz, overlap, window,
                   bool(paused), _time(next_tick), _time(last_tick), last_workflow,
                   _time(buffered), source, _moment(created), _moment(updated))


@attrs.frozen
class QueueRecord:
    """A workflow in its host's queue: started with a ``dedup`` key, or waiting
    ``pending`` for a slot (its status tells which), from its start until it ends.
    The queue's order is ``priority`` (higher first), then ``seq`` (start order)."""

    COLUMNS: ClassVar[str] = "workflow_id, priority, seq, dedup, enqueued"

    workflow_id: str
    priority: int
    seq: int
    dedup: str | None
    enqueued: _dt.datetime

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> QueueRecord:
        """Build from a row in :attr:`COLUMNS` order."""
        wid, priority, seq, dedup, enqueued = row
        return cls(wid, priority, seq, dedup, _moment(enqueued))


@attrs.frozen
class QueuePlace:
    """Where a ``pending`` workflow waits in its host's queue, as the store can tell by
    a few counts (``garrison workflows show`` and the console say why it waits):
    ``host`` (``None``: a tool started it and no node has taken it yet), its
    ``priority``, ``ahead`` (the host's pending workflows before it in queue order) and
    ``running`` (the host's workflows holding a slot: running, waiting or sleeping).
    ``limits``: the host's limits as a live node of a cluster tells them in its row
    (``max_concurrent``, ``cluster_max_concurrent``, ``rate``, ``starts``), on
    PostgreSQL; ``None`` where the store does not hold them (SQLite: they are the
    config of the node that runs the host)."""

    host: str | None
    priority: int
    ahead: int
    running: int
    limits: dict[str, Any] | None = None


@attrs.frozen
class WakeupRecord:
    """A tool (a store opened with ``lock=False``) wrote something about a workflow
    (``kind="tool"``; ``workflow_id`` names it) or a schedule (``kind="schedule"``;
    ``workflow_id`` holds the schedule id)."""

    workflow_id: str
    kind: str


@attrs.frozen
class StoreStatistics:
    """Counters of a store's write path (see ``SQLiteStore.statistics()``).

    ``transactions`` counts committed transactions; ``sync_writes`` those from
    ``write()``; ``batches`` the group commits of ``commit()`` and
    ``batched_writes`` the ``commit()`` calls they carried (so
    ``batched_writes / batches`` is the mean batch size); ``largest_batch`` the
    most calls in one; ``failed_batches`` batches whose fast path failed and
    were retried call by call.
    """

    transactions: int
    sync_writes: int
    batches: int
    batched_writes: int
    largest_batch: int
    failed_batches: int
