"""The config's values: entry classes, their range checks, and :class:`Config`.

Range checks live in attrs validators on these frozen classes, so building a
:class:`RestartPolicy` or :class:`Lifecycle` by hand is checked the same way as
one read from YAML.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias, TypeGuard

import attrs

from .._duration import LONGEST_WAIT, MAX_COUNT, parse_duration, parse_rate, parse_retention

#: Host names every node has without any config: a process host and a workflow host.
BUILTIN_HOSTS = ("processes", "workflows")


# --------------------------------------------------------------------------- validators


class _FieldProblem(ValueError):
    """A field value outside its allowed range; ``str()`` reads ``expected X, got Y``."""

    def __init__(self, field: str, expected: str, got: object) -> None:
        self.field = field
        self.detail = f"expected {expected}, got {got!r}"
        super().__init__(f"field {field!r}: {self.detail}")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_negative_int(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _FieldProblem(attribute.name, "an integer >= 0", value)


def _positive_int_or_none(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise _FieldProblem(attribute.name, "an integer >= 1", value)


def _limit_or_none(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A queue's limit: a count a store keeps as a 64-bit integer."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                              or not 1 <= value <= MAX_COUNT):
        raise _FieldProblem(attribute.name, "an integer from 1 to 2**63 - 1", value)


def _non_negative(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or math.isnan(value) or value < 0:
        raise _FieldProblem(attribute.name, "a non-negative duration", value)


def _finite_delay(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A restart delay: one that never ends would neither restart nor give up (nor
    one of 1e300 seconds: at most 100 years)."""
    _non_negative(inst, attribute, value)
    if _is_number(value) and value > LONGEST_WAIT:
        raise _FieldProblem(attribute.name, "a duration of at most 100 years (a restart "
                            "that waits for ever neither restarts nor gives up)", value)


def _at_most_100_years(why: str) -> Callable[[object, attrs.Attribute[Any], object], None]:
    """A check that a duration is at most 100 years (``inf``, ``1e300`` are not), as a
    restart delay's (:func:`_finite_delay`): ``why`` says what a longer one would do."""
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if _is_number(value) and value > LONGEST_WAIT:
            raise _FieldProblem(attribute.name, f"a duration of at most 100 years ({why})",
                                value)

    return check


def _at_least_initial_delay(inst: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    _finite_delay(inst, attribute, value)
    initial = inst.initial_delay
    if not (_is_number(initial) and math.isfinite(initial)):
        return  # (initial_delay has its own problem)
    if _is_number(value) and value < initial:  # (value: checked)
        raise _FieldProblem(attribute.name, f"a duration >= initial_delay ({initial:g}s)", value)


def _restart_delay(inst: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    _finite_delay(inst, attribute, value)
    if value == 0 and inst.max_attempts == 0:
        raise _FieldProblem(
            attribute.name, "a duration > 0 while max_attempts is 0 (unlimited): with no "
            "delay a process that fails at once would be restarted in a tight loop for "
            "ever (or give max_attempts a limit)", value)


def _finite(value: Any) -> bool:
    """A number a float holds, not infinite (an int of 400 digits is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _factor(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or not value >= 1 or not _finite(value):
        raise _FieldProblem(attribute.name, "a number >= 1", value)


def _fraction(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or not 0 <= value <= 1:
        raise _FieldProblem(attribute.name, "a number between 0 and 1", value)


def _is_bool(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise _FieldProblem(attribute.name, "true or false", value)


def _one_of(*choices: str) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            raise _FieldProblem(attribute.name, "one of " + ", ".join(map(repr, choices)), value)

    return check


def _rate(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    try:
        parse_rate(value)
    except ValueError:
        raise _FieldProblem(attribute.name, "a rate 'COUNT/DURATION' such as '100/1m' "
                            "(COUNT from 1 to 2**63 - 1; DURATION at most 100 years)",
                            value) from None


def _positive_duration(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or math.isnan(value) or value <= 0:
        raise _FieldProblem(attribute.name, "a duration longer than 0", value)


def _schedule_timing(inst: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    """Checks ``cron`` / ``every`` / ``timezone`` of a schedule entry together (one
    problem per field, in the words of the schedule module)."""
    from ..hosts.workflow._schedules import ScheduleSpec

    if attribute.name == "cron":
        if (inst.cron is None) == (inst.every is None):
            problem = _FieldProblem("cron", "", inst.cron)
            problem.detail = ("give one of cron (e.g. '0 3 * * *') or every (e.g. '1h'): "
                              + ("both were given" if inst.cron is not None
                                 else "neither was given"))
            raise problem
        if inst.cron is not None:
            try:
                ScheduleSpec.parse(cron=inst.cron)
            except TypeError:  # (not a string: nothing of it to quote)
                raise _FieldProblem("cron", "a cron expression such as '0 3 * * *'",
                                    inst.cron) from None
            except ValueError as exc:
                detail = str(exc).split(": ", 2)[-1]
                raise _FieldProblem("cron", f"a cron expression such as '0 3 * * *' "
                                    f"({detail})", inst.cron) from None
    elif attribute.name == "every" and value is not None:
        try:
            ScheduleSpec.parse(every=value)
        except (TypeError, ValueError):
            # (a duration as one writes it: 0s, not 0.0; every digit of it, not rounded
            # to look like the limit itself, as 3.1536e+09s did for 3153600001)
            shown = value
            if _is_number(value) and math.isfinite(value):
                shown = f"{int(value)}s" if value == int(value) else f"{value!r}s"
            raise _FieldProblem("every", "a duration of whole seconds, from 1s to 36500d (100 "
                                "years; a duration has no year unit)",
                                shown) from None
    elif attribute.name == "timezone":
        try:
            ScheduleSpec.parse(cron="0 * * * *", timezone=value)
        except (TypeError, ValueError):
            raise _FieldProblem("timezone", "an IANA time zone name such as 'UTC' or "
                                "'Europe/Riga'", value) from None
        if inst.cron is None and inst.every is not None and value != "UTC":
            raise _FieldProblem("timezone", "'UTC' with every (timezone applies to cron "
                                "only: every ticks at its multiples since the unix epoch, "
                                "in UTC; use cron for times of day in a time zone)", value)


def _retention(value: object) -> float | None:
    """attrs converter: a host's retention (a duration longer than 0, at most 100
    years), or ``None``."""
    if value is None:
        return None
    try:
        return parse_retention(value, what="duration")
    except ValueError as exc:
        raise _FieldProblem("retention", "a duration longer than 0 and at most 100 years "
                            "(as '30d' or '12h')", value) from exc


def _duration(value: object) -> float:
    """attrs converter: a duration (number of seconds or ``"30s"``) -> float seconds."""
    if isinstance(value, float):
        return value
    return parse_duration(value)


# --------------------------------------------------------------------------- values


@attrs.frozen
class RestartPolicy:
    """How a service is restarted after a failure (Wippy's ``lifecycle.restart``).

    ``max_attempts`` counts *restarts*: ``0`` means unlimited, ``3`` means at most
    4 starts in a row without a stable run. The wait before restart number ``n``
    (1-based) is ``initial_delay * backoff_factor ** (n - 1)``, capped at
    ``max_delay``, then spread by ``± jitter`` (a fraction). Durations are seconds
    and accept strings such as ``"1s"`` or ``"1m30s"`` when built by hand.
    ``initial_delay`` 0 needs a ``max_attempts`` limit: unlimited restarts without a
    delay would restart a process that fails at once in a tight loop for ever.
    """

    max_attempts: int = attrs.field(default=0, validator=_non_negative_int)
    initial_delay: float = attrs.field(
        default=1.0, converter=_duration, validator=_restart_delay,
        # read with max_attempts; "alone": its check while that one is not as given
        metadata={"after": ("max_attempts",), "alone": _finite_delay},
    )
    max_delay: float = attrs.field(
        default=90.0, converter=_duration, validator=_at_least_initial_delay,
        # compared with initial_delay (see _structure.py); "alone": as above
        metadata={"after": ("initial_delay",), "alone": _finite_delay},
    )
    backoff_factor: float = attrs.field(default=2.0, validator=_factor)
    jitter: float = attrs.field(default=0.1, validator=_fraction)

    def allows(self, restarts: int) -> bool:
        """Whether restart number ``restarts`` (1-based, since the last stable run) may happen."""
        return self.max_attempts == 0 or restarts <= self.max_attempts

    def base_delay(self, attempt: int) -> float:
        """The un-jittered wait before restart number ``attempt`` (1-based)."""
        exponent = max(attempt, 1) - 1
        try:
            delay = self.initial_delay * self.backoff_factor**exponent
        except OverflowError:  # (no delay grows from none)
            return self.max_delay if self.initial_delay else 0.0
        return min(delay, self.max_delay)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait in seconds before restart number ``attempt`` (1-based).

        The result lies in ``base * (1 - jitter) .. base * (1 + jitter)`` where
        ``base = min(initial_delay * backoff_factor ** (attempt - 1), max_delay)``;
        jitter may take it above ``max_delay`` by at most that fraction. Pass a
        seeded ``rng`` for reproducible delays.
        """
        base = self.base_delay(attempt)
        if self.jitter == 0 or base == 0:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1.0 + spread))


@attrs.frozen
class Lifecycle:
    """The ``lifecycle:`` block of a ``process.service`` entry (Wippy defaults).

    ``requires`` holds the full entry ids of services that must be running before
    this one starts (``depends_on`` is accepted as an alias in YAML).
    ``stable_threshold``: a run at least this long resets the restart count (a duration
    longer than 0; a start that failed is no run).
    ``singleton``: in a cluster, the service runs on exactly one node (another node
    starts it within two leases when that node is lost); off a cluster it is a plain
    service.
    """

    auto_start: bool = attrs.field(default=False, validator=_is_bool)
    singleton: bool = attrs.field(default=False, validator=_is_bool)
    requires: tuple[str, ...] = ()
    start_timeout: float = attrs.field(
        default=10.0, converter=_duration, validator=[_positive_duration, _at_most_100_years(
            "a start that waits for ever never fails: what requires it waits for ever")])
    stop_timeout: float = attrs.field(
        default=10.0, converter=_duration, validator=[_non_negative, _at_most_100_years(
            "a stop that waits for ever may never end: the node's stop waits for it")])
    # > 0: with 0 every run, also one that failed at once, would reset the restart count
    # and max_attempts would never be reached
    stable_threshold: float = attrs.field(
        default=5.0, converter=_duration, validator=[_positive_duration, _at_most_100_years(
            "a run never lasts for ever: the restart count would never reset")])
    restart: RestartPolicy = attrs.field(factory=RestartPolicy)


@attrs.frozen
class HostEntry:
    """A ``process.host`` entry: an extra process host (a trio nursery of processes).

    ``workers`` caps how many of its processes run at once (``None``: no cap): a
    process spawned beyond it gets its pid at once and starts when one ends.
    """

    id: str = ""
    kind: str = "process.host"
    workers: int | None = attrs.field(default=None, validator=_positive_int_or_none)
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class WorkflowHostEntry:
    """A ``workflow.host`` entry: a durable workflow host.

    ``store`` is the SQLite file path (made absolute against the config file's
    folder when relative), a ``postgresql://`` URL, or ``None`` for an in-memory
    store; ``synchronous`` is ``"normal"`` (survives a killed process) or ``"full"``
    (survives power loss).

    The host is also a queue: ``max_concurrent`` workflows running at once on this
    node, ``cluster_max_concurrent`` across a cluster (with one node it acts like
    ``max_concurrent``), ``rate`` starts per period (``"100/1m"``); ``None``: no limit.

    ``retention`` (``"30d"``; seconds): the host deletes its completed, failed and
    cancelled workflows from the store that long after they ended; ``None`` (the
    default): they are kept for ever.
    """

    id: str = ""
    kind: str = "workflow.host"
    store: str | None = None
    synchronous: str = attrs.field(default="normal", validator=_one_of("normal", "full"))
    max_concurrent: int | None = attrs.field(default=None, validator=_limit_or_none)
    cluster_max_concurrent: int | None = attrs.field(default=None,
                                                     validator=_limit_or_none)
    rate: str | None = attrs.field(default=None, validator=_rate)
    retention: float | None = attrs.field(default=None, converter=_retention)
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class SourceEntry:
    """A ``process.py``, ``workflow.py`` or ``function.py`` entry.

    ``source`` is ``"module:function"`` (the function part may be a dotted path);
    ``func`` is the object it names, imported when the config was loaded.
    Processes and workflows are async functions (or objects with an async
    ``__call__``); a workflow must also be importable again by its own
    ``module:qualname``. Activities (``function.py``) may be sync or async callables.
    """

    id: str = ""
    kind: str = "process.py"
    source: str = ""
    func: Callable[..., Any] | None = attrs.field(default=None, eq=False, repr=False)
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class ServiceEntry:
    """A ``process.service`` entry: a supervised, restartable process.

    ``process`` is the full id of the ``process.py`` / ``workflow.py`` entry to run;
    ``host`` is the full id of a ``process.host`` / ``workflow.host`` entry or one of
    the built-in host names ``"processes"`` / ``"workflows"`` (default
    ``"processes"``); ``input`` is the tuple of positional arguments.
    """

    id: str = ""
    kind: str = "process.service"
    process: str = ""
    host: str = "processes"
    input: tuple[Any, ...] = ()
    lifecycle: Lifecycle = attrs.field(factory=Lifecycle)
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def restart(self) -> RestartPolicy:
        """Shortcut for ``lifecycle.restart``."""
        return self.lifecycle.restart

    @property
    def requires(self) -> tuple[str, ...]:
        """Shortcut for ``lifecycle.requires`` (full entry ids)."""
        return self.lifecycle.requires


@attrs.frozen
class ScheduleEntry:
    """A ``workflow.schedule`` entry: start ``workflow`` (the full id of a
    ``workflow.py`` entry) with ``input`` on ``cron`` (read in ``timezone``) or
    ``every`` (a duration of whole seconds, ticking at its multiples since the unix
    epoch). ``overlap`` says what a tick does while the last run is unfinished
    (``skip``, ``buffer_one``, ``allow_all``); ``catchup_window`` how late a tick
    missed while no node ran may still start. ``host``: the workflow host (default
    ``"workflows"``)."""

    id: str = ""
    kind: str = "workflow.schedule"
    workflow: str = ""
    cron: str | None = attrs.field(default=None, validator=_schedule_timing,
                                   metadata={"after": ("every",)})
    every: float | None = attrs.field(default=None, validator=_schedule_timing)
    timezone: str = attrs.field(default="UTC", validator=_schedule_timing)
    input: tuple[Any, ...] = ()
    overlap: str = attrs.field(default="skip", validator=_one_of("skip", "buffer_one",
                                                                 "allow_all"))
    catchup_window: float = attrs.field(default=3600.0, converter=_duration, validator=[
        _positive_duration, _at_most_100_years("36500d, as every duration")])
    host: str = "workflows"
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


Entry: TypeAlias = HostEntry | WorkflowHostEntry | SourceEntry | ServiceEntry | ScheduleEntry

#: Every known entry kind and the class it becomes.
KINDS: dict[str, type[Any]] = {
    "process.host": HostEntry,
    "workflow.host": WorkflowHostEntry,
    "process.py": SourceEntry,
    "workflow.py": SourceEntry,
    "function.py": SourceEntry,
    "process.service": ServiceEntry,
    "workflow.schedule": ScheduleEntry,
}
_HOST_KINDS = ("process.host", "workflow.host")
_RUNNABLE_KINDS = ("process.py", "workflow.py")
_INTERNAL_FIELDS = frozenset({"id", "kind", "func"})
_REQUIRED: dict[str, tuple[str, ...]] = {
    "process.py": ("source",),
    "workflow.py": ("source",),
    "function.py": ("source",),
    "process.service": ("process",),
    "workflow.schedule": ("workflow",),
}


def _allowed_fields(cls: type[Any]) -> list[str]:
    return ["name", "kind"] + [f.name for f in attrs.fields(cls) if f.name not in _INTERNAL_FIELDS]
