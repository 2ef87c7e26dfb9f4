"""When a schedule ticks: cron expressions (read by ``cronsim``, in an IANA time zone
through ``zoneinfo``) and fixed intervals; and the values a schedule is defined by.

Ticks are whole unix seconds. ``every: 1h`` ticks at every whole multiple of the
interval since the unix epoch (so at the top of each hour UTC, on every node alike);
a cron expression is read in the schedule's ``timezone``, with daylight saving time
handled as Debian's cron does (``cronsim`` follows it): a job at a fixed time inside
the hour that a spring change skips runs right after the change, and a job at a fixed
time inside the hour that an autumn change repeats runs once; a job whose minute or
hour field starts with ``*`` (``*/15 * * * *``, ``0 * * * *``) keeps to the wall clock
(no tick in a skipped hour, ticks in both passes of a repeated one).

A tick starts the workflow ``<schedule id>@<tick, ISO 8601 UTC>`` (a trigger:
``<schedule id>@<time, with milliseconds>``): the id is derived from the schedule and
the tick, so a start is idempotent across restarts and nodes.
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
import json
import math
import zoneinfo
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from cronsim import CronSim, CronSimError

from ..._duration import LONGEST_WAIT, parse_duration
from ..._errors import PayloadError
from ...persistence import MAX_TIME, ScheduleRecord, Transaction, WorkflowStatus
from ._codec import arguments_json, arity_problem, restore_args
from ._ids import ID_RULE, MAX_KEY_BYTES, id_problem, shown

#: room a schedule's workflow ids take after its id ('@' and the tick's time)
_TICK_BYTES = 64

__all__ = [
    "DEFAULT_CATCHUP_WINDOW",
    "MAX_EVERY",
    "OVERLAP_POLICIES",
    "ScheduleDefinition",
    "ScheduleSpec",
    "check_input",
    "check_overlap",
    "check_schedule_id",
    "held_schedule_id",
    "next_trigger",
    "parse_catchup_window",
    "resume_transaction",
    "spec_of",
    "tick_id",
    "tick_of",
    "tick_refusal",
    "timing_of",
    "trigger_id",
    "trigger_takes_last",
]

#: what a tick does while the workflow the schedule started before is unfinished
OVERLAP_POLICIES = ("skip", "buffer_one", "allow_all")
#: how late a tick may still start (a node down over it, a slow start), by default
DEFAULT_CATCHUP_WINDOW = 3600.0
#: the longest ``every`` (100 years): its ticks stay dates a store can hold
MAX_EVERY = LONGEST_WAIT

_UTC = _dt.UTC
#: the ticks a search passes over that its start's fold put on the wrong side of it
_FOLD_SKIPS = 64
#: the longest span a search for the latest tick before a moment looks back over
_LONGEST_SEARCH = 200 * 365 * 86400.0


@functools.lru_cache(maxsize=16384)
def _cron_next(cron: str, timezone: str, t: int) -> float | None:
    """The first tick of ``cron`` (read in ``timezone``) strictly after ``t``; cached:
    schedules sharing an expression and a tick (``0 * * * *``) compute it once.
    ``None`` when no date holds it: past 9999-12-31, in UTC or in ``timezone``."""
    try:
        start = _dt.datetime.fromtimestamp(t, zoneinfo.ZoneInfo(timezone))
        # (cronsim reads local times without their fold: from the second pass of an
        # hour the clock repeats, it yields that hour's ticks of the first pass, past)
        for moment in itertools.islice(CronSim(cron, start), _FOLD_SKIPS):
            tick = float(moment.timestamp())
            if tick > t:
                return tick if tick <= MAX_TIME else None
    except (OverflowError, ValueError):  # (the year after 9999: cronsim's, datetime's)
        return None
    return None


@functools.lru_cache(maxsize=4096)
def _seconds_split(cron: str) -> tuple[str, tuple[int, ...] | None]:
    """``cron`` as its five fields from the minute on, and the seconds of each minute
    its first field (of six) selects (``None``: five fields, or only second 0).

    ``cronsim`` gives six-field expressions no daylight saving handling (a tick in a
    skipped hour is lost, one in a repeated hour runs twice); ticks are therefore
    computed on the five fields, as Debian's cron does, and the seconds added to each
    minute they yield."""
    parts = cron.split()
    if len(parts) != 6:
        return cron, None
    # the seconds of one minute the field matches (cronsim reads the field)
    first = _dt.datetime(2000, 1, 1, tzinfo=_UTC) - _dt.timedelta(seconds=1)
    seconds = []
    for moment in CronSim(f"{parts[0]} * * * * *", first):
        if moment.minute != 0:
            break
        seconds.append(moment.second)
    five = " ".join(parts[1:])
    return five, (None if seconds == [0] else tuple(seconds))


#: cron's aliases (Debian's, Temporal's) as the five fields they stand for: refused,
#: saying those fields (``cronsim`` says only "Wrong number of fields")
_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
            "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
            "@hourly": "0 * * * *"}


@functools.lru_cache(maxsize=4096)
def _cron_problem(cron: str) -> str | None:
    """What is wrong with ``cron`` (``cronsim``'s words), or ``None``; cached (loading
    10,000 schedules checks each expression once)."""
    if cron.startswith("@"):
        fields = _ALIASES.get(cron.lower())
        if fields is not None:
            return f"an alias such as @daily is not taken: write its five fields, {fields!r}"
        return ("cron aliases are not taken (@daily: '0 0 * * *'); for an interval use "
                "every (every='1h', every: 1h)")
    try:
        CronSim(cron, _dt.datetime(2000, 1, 1, tzinfo=_UTC))
    except CronSimError as exc:
        return str(exc)
    return None


def _utc(seconds: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, _UTC)


def tick_id(schedule_id: str, tick: float) -> str:
    """The id of the workflow a schedule's tick starts: ``nightly@2026-01-02T03:00:00Z``."""
    return f"{schedule_id}@{_utc(tick).isoformat(timespec='seconds').replace('+00:00', 'Z')}"


def tick_of(schedule_id: str, workflow_id: str) -> float | None:
    """The tick whose workflow is ``workflow_id`` (``tick_id(schedule_id, tick)``), or
    ``None``: a trigger's workflow (its time has milliseconds) or another id."""
    head, _, stamp = workflow_id.partition("@")
    if head != schedule_id or not stamp.endswith("Z"):
        return None
    try:
        tick = _dt.datetime.fromisoformat(stamp[:-1] + "+00:00").timestamp()
    except ValueError:
        return None
    return tick if tick_id(schedule_id, tick) == workflow_id else None


def trigger_id(schedule_id: str, now: float) -> str:
    """The id of the workflow a trigger starts: ``nightly@2026-01-02T10:11:12.345Z``."""
    stamp = _utc(math.floor(now * 1000) / 1000).isoformat(timespec="milliseconds")
    return f"{schedule_id}@{stamp.replace('+00:00', 'Z')}"


def trigger_takes_last(schedule_id: str, last: str | None, status: str | None) -> bool:
    """Whether a trigger's workflow becomes schedule ``schedule_id``'s ``last_workflow``
    (the run later ticks' overlap policy looks at), where ``last`` is the one recorded
    now and ``status`` its workflow's status (``None``: no such workflow).

    Not while ``last`` is unfinished (``pending``, running or parked: the overlap policy
    is to see it until it ends), nor while it is a tick's workflow not created yet (its
    start is under way, or a stop interrupted it: it is found by that id when a node
    comes back, :meth:`~._scheduler.Scheduler._interrupted`). A missing trigger's
    workflow was deleted: it is replaced."""
    if last is None:
        return True
    if status is None:
        return tick_of(schedule_id, last) is None
    state = WorkflowStatus(status)
    return state.finished or state is WorkflowStatus.BLOCKED


def timing_of(record: ScheduleRecord) -> tuple[str | None, float | None, str]:
    """``record``'s timing, ``(cron, every, timezone)``: what its next tick is computed
    from (a write of a next tick compares it, ``expect_timing``)."""
    return record.cron, record.every, record.timezone


def resume_transaction(record: ScheduleRecord, now: float) -> Transaction:
    """The write that resumes the paused schedule ``record`` from its first tick after
    ``now``: a compare-and-set on what it was computed from, the schedule still paused
    and of the same timing. Its result is ``False`` when a write committed since
    ``record`` was read changed either (an update of its timing, another resume, a
    delete): read the schedule again. (Written over such a write, the next tick it
    computed was a tick of the old timing, or one acted on since the other resume.)"""
    sid = record.schedule_id
    return Transaction().update_schedule(sid, paused=False,
                                         next_tick=spec_of(record).next_after(now),
                                         expect_paused=True, expect_timing=timing_of(record),
                                         time=now)


def spec_of(record: ScheduleRecord) -> ScheduleSpec:
    """The timing of the stored schedule ``record``."""
    return ScheduleSpec.parse(cron=record.cron, every=record.every, timezone=record.timezone,
                              what=f"schedule {record.schedule_id!r}", stored=True)


def next_trigger(now: float) -> float:
    """The time of the millisecond after the one :func:`trigger_id` names for ``now``:
    where a trigger goes when that id is taken (two triggers in one millisecond)."""
    return math.floor(now * 1000 + 1) / 1000


def check_schedule_id(value: object) -> str:
    """``value`` if it can be a schedule id; ``TypeError`` / ``ValueError`` naming it."""
    if not isinstance(value, str):
        raise TypeError(f"a schedule id must be a string, got {type(value).__name__}: "
                        f"{value!r}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES - _TICK_BYTES:
        why: str | None = (f"it is {size} bytes long in UTF-8 (at most "
                           f"{MAX_KEY_BYTES - _TICK_BYTES}: its workflows' ids add "
                           "'@<tick time>')")
    else:
        why = id_problem(value) or ("it holds '@'" if "@" in value else None)
    if why is not None:
        rule = ID_RULE.replace(f"at most {MAX_KEY_BYTES} bytes",
                               f"at most {MAX_KEY_BYTES - _TICK_BYTES} bytes")
        raise ValueError(f"invalid schedule id {shown(value)}: {why}; a schedule id is "
                         f"{rule}, and without '@' (its workflows are named "
                         "'<id>@<tick time>')")
    return value


def held_schedule_id(value: object, holds: Callable[[str], bool]) -> str:
    """:func:`check_schedule_id`, but an id a store ``holds`` a schedule of passes: a
    release before the rule (tabs or newlines in an id, or longer ids) stored such
    schedules, and after an upgrade they must still be paused, resumed or deleted
    (their ticks start nothing: see :func:`tick_refusal`). ``holds`` is asked only
    for an id the rule refuses that a store can keep as text."""
    try:
        return check_schedule_id(value)
    except ValueError:
        if isinstance(value, str) and "\x00" not in value and _text(value) and holds(value):
            return value
        raise


def _text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # (a lone surrogate: no store keeps it)
        return False
    return True


def tick_refusal(schedule_id: str) -> str | None:
    """Why a tick of the stored schedule ``schedule_id`` starts nothing, or None: an id
    an older release stored that the rule now refuses (its workflows' ids, its id with
    ``@<tick time>``, would break the workflow id rule); the text says what to do."""
    try:
        check_schedule_id(schedule_id)
    except ValueError as exc:
        return (f"{exc}; an older garrison stored this schedule under that id: delete it "
                f"(node.schedule_handle(id).delete(), or garrison schedules delete) and "
                "make it again under a valid id")
    return None


def check_input(schedule_id: str, fn: Any, name: str, args: Sequence[Any]) -> list[Any]:
    """``TypeError`` naming the schedule unless its workflow ``fn`` (``name``) takes
    ``args``, checked as ``start_workflow`` checks them (how many; typed ones restored
    from their JSON form, else ``PayloadError``, a ``TypeError``): a tick would start
    it with them, and fail each time. Returns their JSON form, as the schedule stores
    them (a dict its parameter declares with ``int`` keys: with their JSON text)."""
    what = f"schedule {schedule_id!r}"
    problem = arity_problem(fn, name, args, "the schedule gives it")
    if problem is not None:
        raise TypeError(f"{what}: {problem}")
    plain = json.loads(arguments_json(fn, args, f"the input of {what}"))
    try:
        restore_args(fn, plain, f"workflow {name}")
    except PayloadError as exc:  # (as start_workflow raises it, naming the argument)
        raise PayloadError(f"{what}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: {exc}") from None
    return plain


def check_overlap(value: object, what: str) -> str:
    """``value`` if it is an overlap policy; ``ValueError`` naming ``what`` otherwise."""
    if value not in OVERLAP_POLICIES:
        raise ValueError(f"{what}: invalid overlap {value!r}: expected one of "
                         f"{', '.join(OVERLAP_POLICIES)}")
    return str(value)


def parse_catchup_window(value: object, what: str) -> float:
    """A catch-up window (a duration > 0 and at most 100 years, :data:`LONGEST_WAIT`, as
    every duration) as seconds; ``ValueError`` naming ``what``."""
    seconds = parse_duration(value, what=f"catchup_window of {what}")
    if not 0 < seconds <= LONGEST_WAIT:
        raise ValueError(f"{what}: catchup_window must be longer than 0 and at most 100 "
                         f"years (36500d), got {value!r}")
    return seconds


#: names in the time zone directory that are no IANA zone: this machine's own zone
#: (``localtime``: each node of a cluster could tick at other hours) and tzdata's
#: placeholder
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _iana_name(name: str) -> bool:
    """True for an IANA zone name (not ``localtime``, ``Factory``, nor a ``posix/`` or
    ``right/`` copy: ``right/`` counts leap seconds, and ticks seconds off the others)."""
    if name in _NOT_ZONES:
        return False
    names = _zone_names()
    return name in names if names else True  # (no zone list here: ZoneInfo decides)


@attrs.frozen
class ScheduleSpec:
    """When a schedule ticks: ``cron`` read in ``timezone``, or ``every`` seconds.

    Build with :meth:`parse`, which checks everything and names what is wrong."""

    cron: str | None
    every: float | None
    timezone: str = "UTC"
    _zone: zoneinfo.ZoneInfo = attrs.field(eq=False, repr=False, alias="zone",
                                           factory=lambda: zoneinfo.ZoneInfo("UTC"))

    @classmethod
    def parse(cls, *, cron: object = None, every: object = None, timezone: object = "UTC",
              what: str = "schedule", stored: bool = False) -> ScheduleSpec:
        """The spec of ``cron`` xor ``every`` (a duration of whole seconds, from 1s to
        :data:`MAX_EVERY`) in
        ``timezone`` (an IANA name); ``ValueError`` / ``TypeError`` naming ``what`` and
        the field otherwise. ``timezone`` applies to ``cron`` only: with ``every`` it
        must be ``"UTC"``, except in a schedule ``stored`` by an older garrison, which
        accepted another one and ticked on UTC multiples all the same (it still does)."""
        if (cron is None) == (every is None):
            raise ValueError(f"{what}: give one of cron (e.g. '0 3 * * *') or every "
                             "(e.g. '1h'): " + ("both were given" if cron is not None
                                                else "neither was given"))
        if not isinstance(timezone, str):
            raise TypeError(f"{what}: timezone must be an IANA time zone name such as "
                            f"'Europe/Riga', got {type(timezone).__name__}: {timezone!r}")
        try:
            # (a file of the zone directory that is no IANA zone; one stored by an older
            # garrison, which took it, still ticks)
            if not stored and not _iana_name(timezone):
                raise ValueError(timezone)
            zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            why = ("it is this machine's own zone, which another machine (a node of a "
                   "cluster, the next server) may set otherwise; " if timezone == "localtime"
                   else "")
            raise ValueError(f"{what}: unknown timezone {timezone!r}: {why}expected an IANA "
                             "time zone name such as 'UTC' or 'Europe/Riga'") from None
        if cron is not None:
            if not isinstance(cron, str):
                raise TypeError(f"{what}: cron must be a string such as '0 3 * * *', got "
                                f"{type(cron).__name__}: {cron!r}")
            text = " ".join(cron.split())
            problem = _cron_problem(text)
            if problem is not None:
                raise ValueError(f"{what}: invalid cron expression {cron!r}: {problem}")
            return cls(text, None, timezone, zone)
        if timezone != "UTC" and not stored:
            raise ValueError(f"{what}: timezone {timezone!r} applies to cron only: every "
                             "ticks at its multiples since the unix epoch, in UTC; drop "
                             "the timezone, or use cron for times of day in a time zone")
        seconds = parse_duration(every, what=f"every of {what}")
        if not 1 <= seconds <= MAX_EVERY or seconds != int(seconds):
            raise ValueError(f"{what}: every must be a whole number of seconds from 1s to "
                             f"{MAX_EVERY:.0f}s (100 years), got {every!r}")
        return cls(None, float(seconds), timezone, zone)

    def describe(self) -> str:
        """``cron 0 3 * * * (Europe/Riga)`` or ``every 3600s``."""
        if self.cron is not None:
            return f"cron {self.cron} ({self.timezone})"
        return f"every {self.every:.0f}s"

    # ------------------------------------------------------------ ticks
    def next_after(self, t: float) -> float | None:
        """The first tick strictly after ``t`` (unix seconds); ``None`` if there is
        none a date holds (after 9999-12-31T23:59:59Z, the latest a store keeps): the
        schedule ticks no more."""
        if self.every is not None:
            tick = (math.floor(t / self.every) + 1) * self.every
            return tick if tick <= MAX_TIME else None
        assert self.cron is not None
        five, seconds = _seconds_split(self.cron)
        if seconds is None:
            return _cron_next(five, self.timezone, math.floor(t))
        # the first minute that may hold a tick after t starts after t - 60
        t = math.floor(t)
        minute = _cron_next(five, self.timezone, t - 60)
        if minute is None:
            return None
        for second in seconds:
            if minute + second > t:
                return minute + second
        minute = _cron_next(five, self.timezone, math.floor(minute))
        return None if minute is None else minute + seconds[0]

    def latest_in(self, lo: float, hi: float) -> float | None:
        """The latest tick in ``[lo, hi]``, or ``None``: always one that
        :meth:`next_after` yields (so its workflow id is the one a running scheduler
        would have used)."""
        if hi < lo:
            return None
        if self.every is not None:
            tick = math.floor(hi / self.every) * self.every
            return tick if tick >= lo else None
        assert self.cron is not None
        five, seconds = _seconds_split(self.cron)
        if seconds is None:
            return self._latest_minute_in(five, lo, hi)
        # the minutes whose ticks may fall in [lo, hi] start in [lo - 59, hi]
        top = hi
        while True:
            minute = self._latest_minute_in(five, lo - 59, top)
            if minute is None:
                return None
            inside = [minute + s for s in seconds if lo <= minute + s <= hi]
            if inside:
                return inside[-1]
            if minute + seconds[-1] < lo:
                return None
            top = minute - 1  # its ticks all come after hi: the minute before

    def _latest_minute_in(self, cron: str, lo: float, hi: float) -> float | None:
        """The latest tick of the five-field ``cron`` in ``[lo, hi]``, or ``None``.

        Forward searches only (``_cron_next``, as :meth:`next_after`): cronsim's reverse
        iteration never ends in some zones (Pacific/Chatham's) and reads a repeated
        hour's second pass as its first. Spans ending at ``hi`` grow fourfold until one
        holds a tick; then the latest is bisected on "is there a tick at or after x
        before hi" (a few dozen searches, never a walk over every tick of the span)."""
        if hi < lo:
            return None
        top = math.floor(hi)
        span = 3600.0
        while True:
            start = math.ceil(max(lo, hi - span))
            tick = _cron_next(cron, self.timezone, start - 1)
            if tick is not None and tick <= hi:
                break
            if start <= lo or span > _LONGEST_SEARCH:
                return None
            span *= 4
        # a tick at or after ``found`` (and at most hi); none at or after ``past``
        found, past = math.floor(tick), top + 1
        while past - found > 1:
            middle = (found + past) // 2
            later = _cron_next(cron, self.timezone, middle - 1)
            if later is not None and later <= hi:
                found, tick = math.floor(later), later
            else:
                past = middle
        return tick

    def due(self, next_tick: float, now: float, window: float) -> tuple[float | None,
                                                                       float | None]:
        """What a schedule whose next tick is ``next_tick`` does at ``now``:
        ``(tick to act on, the next tick after now)``. Of the ticks passed since
        ``next_tick`` only the latest is acted on, and only if it is at most ``window``
        seconds old (``None``: every one was missed)."""
        following = self.next_after(next_tick)
        if following is None or following > now:  # the usual case: only next_tick passed
            tick: float | None = next_tick if now - next_tick <= window else None
            return tick, following
        tick = self.latest_in(max(next_tick, now - window), now)
        return tick, self.next_after(now)


@attrs.frozen
class ScheduleDefinition:
    """A schedule as defined (a ``workflow.schedule`` entry or ``node.schedule``): what
    it starts (``workflow``: ``module:qualname``; ``input``), when (``spec``), what a
    tick does while the last run is unfinished (``overlap``) and how late a tick may
    still start (``catchup_window``)."""

    schedule_id: str
    workflow: str
    input: tuple[Any, ...]
    spec: ScheduleSpec
    overlap: str = "skip"
    catchup_window: float = DEFAULT_CATCHUP_WINDOW
    source: str = "api"

    @classmethod
    def build(cls, schedule_id: object, workflow: str, input: Sequence[Any], *,
              cron: object = None, every: object = None, timezone: object = "UTC",
              overlap: object = "skip", catchup_window: object = DEFAULT_CATCHUP_WINDOW,
              source: str = "api") -> ScheduleDefinition:
        """Check every field (errors name the schedule and the field)."""
        sid = check_schedule_id(schedule_id)
        what = f"schedule {sid!r}"
        spec = ScheduleSpec.parse(cron=cron, every=every, timezone=timezone, what=what)
        return cls(sid, workflow, tuple(input), spec, check_overlap(overlap, what),
                   parse_catchup_window(catchup_window, what), source)
