"""Durations: a number of seconds, a ``datetime.timedelta``, or a string such as
``"250ms"`` or ``"1h30m"``."""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+", re.ASCII)
_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
#: the units of a combination, largest first: each at most once, in this order
_ORDER = ("d", "h", "m", "s", "ms")

Duration = float | int | str | _dt.timedelta
#: the largest count a limit takes (a rate's COUNT, ``max_concurrent``,
#: ``cluster_max_concurrent``): a 64-bit signed integer, as the stores keep it
MAX_COUNT = 2**63 - 1
#: the longest wait a duration may ask for (seconds: 100 years): a schedule's ``every``,
#: a restart's delay or a supervisor's backoff; one longer waits for ever all the same
LONGEST_WAIT = 100 * 365 * 86400.0


class DurationTypeError(TypeError, ValueError):
    """A duration of a type that is none (a ``bool``, ``None``, a ``Decimal``): a
    ``TypeError``, and a ``ValueError`` too, as every bad duration is (API.md), so
    that code (a config's checks) catching the one catches it still."""


def negative(value: object) -> bool:
    """True for a duration given below zero (``-1``, ``"-5s"``): what it is, for a
    message in another's words, whatever else is wrong with it."""
    if isinstance(value, str):
        return value.strip().startswith("-")
    if isinstance(value, _dt.timedelta):
        return value < _dt.timedelta(0)
    return isinstance(value, int | float) and not isinstance(value, bool) and value < 0


def _shown(value: object) -> str:
    """``repr(value)`` for an error message, cut to 80 characters (a huge int or string)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def parse_duration(value: object, *, what: str = "duration",
                   command_line: bool = False) -> float:
    """Return ``value`` as seconds.

    A number (``int`` or ``float``, not ``bool``) is seconds, ``>= 0``, and so is a
    ``datetime.timedelta`` (its ``total_seconds()``). A string is one
    or more ``<number><unit>`` parts written together, with units ``ms``, ``s``, ``m``,
    ``h``, ``d`` and numbers such as ``30`` or ``1.5``; nothing else, no spaces, and a
    string without a unit (``"5"``, ``"0"``) is refused: seconds as text need their
    unit (``"5s"``, ``"0s"``):

    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration("250ms")
    0.25
    >>> parse_duration("1.5h")
    5400.0
    >>> parse_duration(2)
    2.0
    >>> parse_duration(_dt.timedelta(minutes=90))
    5400.0

    Anything else (negative, NaN, unknown unit, spaces, no unit, empty) raises
    ``ValueError`` naming the input; a value of another type (a ``bool``, ``None``, a
    ``Decimal``) :class:`DurationTypeError`, a ``TypeError`` that is a ``ValueError``
    too. ``command_line``: ``value`` is an option's text (``--lease``), where every
    value is a string: the message then says what to type instead of offering a number
    of seconds, which no command line can give.
    """
    if isinstance(value, bool):
        raise DurationTypeError(
            f"invalid {what} {_shown(value)}: expected seconds or a string like '30s'")
    if isinstance(value, int | float | _dt.timedelta):
        if isinstance(value, _dt.timedelta):
            seconds = value.total_seconds()
        else:
            try:
                seconds = float(value)
            except OverflowError:  # an int past what a float holds: longer than any clock
                seconds = math.inf if value > 0 else -math.inf
        if math.isnan(seconds):
            raise ValueError(f"invalid {what} {_shown(value)}: NaN is no number of seconds")
        if seconds < 0:
            raise ValueError(
                f"invalid {what} {_shown(value)}: must be a non-negative number of seconds")
        return seconds
    if isinstance(value, str):
        if value and _WHOLE.fullmatch(value):
            parts = _PART.findall(value)
            ranks = [_ORDER.index(unit) for _number, unit in parts]
            if any(a >= b for a, b in itertools.pairwise(ranks)):
                raise ValueError(
                    f"invalid {what} {_shown(value)}: in a combination each unit comes once, "
                    "largest first (d, h, m, s, ms), as in '1h30m'")
            return sum(float(n) * _UNITS[u] for n, u in parts)
        unsigned = value.strip().removeprefix("-")
        if unsigned != value.strip() and (_WHOLE.fullmatch(unsigned)
                                          or _NUMBER.fullmatch(unsigned)):
            raise ValueError(f"invalid {what} {_shown(value)}: a duration cannot be negative")
        if _NUMBER.fullmatch(value.strip()):
            bare = value.strip()
            if command_line:
                raise ValueError(
                    f"invalid {what} {_shown(value)}: a duration needs its unit: type "
                    f"{bare}s for seconds (or another unit: ms, m, h, d)")
            raise ValueError(
                f"invalid {what} {_shown(value)}: a duration string needs a unit, e.g. "
                f"'{bare}s' (seconds) or '{bare}ms'; only a number (not a "
                "string) means seconds")
        raise ValueError(
            f"invalid {what} {_shown(value)}: expected "
            f"{'a duration' if command_line else 'seconds or a string'} like "
            "'250ms', '30s', '5m', '1.5h', '2d' or '1h30m' (no spaces)"
        )
    raise DurationTypeError(
        f"invalid {what} {_shown(value)} of type {type(value).__name__}: "
        "expected seconds or a string like '30s'"
    )


def parse_rate(value: object, *, what: str = "rate") -> tuple[int, float]:
    """A rate ``"COUNT/DURATION"`` (``"100/1m"``: 100 per minute) as ``(count, seconds)``.

    >>> parse_rate("100/1m")
    (100, 60.0)
    >>> parse_rate("5/s")
    (5, 1.0)

    ``COUNT`` is a whole number from 1 to 2**63 - 1; ``DURATION`` a duration > 0 (a bare
    unit such as ``s`` means one of it) of at most 100 years (:data:`LONGEST_WAIT`, as
    every other duration). Anything else raises ``ValueError`` naming the input.
    """
    expected = "expected 'COUNT/DURATION' such as '100/1m' or '5/1s'"
    if not isinstance(value, str):
        raise ValueError(f"invalid {what} {_shown(value)}: {expected}")
    # (spaces around the '/', and the whole, are taken; inside COUNT or DURATION they
    # are not: "1 00/1m" is no 100 a minute, and a duration takes none anywhere)
    count_text, sep, period_text = value.partition("/")
    count_text, period_text = count_text.strip(" "), period_text.strip(" ")
    if " " in count_text or " " in period_text:
        raise ValueError(f"invalid {what} {_shown(value)}: {expected}, without spaces inside "
                         "COUNT or DURATION")
    if (not sep or not count_text.isascii() or not count_text.isdigit()
            or not 1 <= int(count_text) <= MAX_COUNT):
        raise ValueError(
            f"invalid {what} {_shown(value)}: {expected}, with COUNT a whole number from 1 "
            "to 2**63 - 1 (a store keeps it as a 64-bit integer)")
    if period_text in _UNITS:
        period_text = "1" + period_text
    try:
        period = parse_duration(period_text, what=what)
    except ValueError as exc:
        why = str(exc).split(": ", 1)[-1]  # (after "invalid rate '...'")
        raise ValueError(f"invalid {what} {_shown(value)}: {expected}; its DURATION: {why}"
                         ) from None
    if period <= 0:
        raise ValueError(f"invalid {what} {_shown(value)}: the period must be longer than 0")
    if period > LONGEST_WAIT:
        raise ValueError(f"invalid {what} {_shown(value)}: the period must be at most 100 "
                         "years (36500d), as every duration")
    return int(count_text), period


#: the shortest lease a cluster node takes (seconds): renewed every third of it, a
#: shorter one is lost to a round trip or a scheduling delay, again and again
LEASE_MIN = 1.0
#: the longest (seconds): a node lost is taken over only after its lease, and the
#: server's limits are counted in milliseconds in a 32-bit integer
LEASE_MAX = 86400.0


def parse_lease(value: object, *, what: str = "lease=", command_line: bool = False
                ) -> float:
    """A cluster node's lease (``lease=``, ``--lease``) in seconds: a duration from
    :data:`LEASE_MIN` (1 s) to :data:`LEASE_MAX` (1 day); ``ValueError`` naming
    ``what`` and the accepted range otherwise (``command_line``: as
    :func:`parse_duration`'s)."""
    seconds = parse_duration(value, what=what, command_line=command_line)
    if not LEASE_MIN <= seconds <= LEASE_MAX:
        raise ValueError(f"{what} must be from 1s to 1d (a node renews its lease every "
                         f"third of it), got {_shown(value)}")
    return seconds


def parse_retention(value: object, *, what: str = "retention=", command_line: bool = False
                    ) -> float:
    """How long ended workflows are kept (``retention=``, ``retention:``,
    ``--older-than``) in seconds: a duration longer than 0 and at most 100 years;
    ``ValueError`` naming ``what`` otherwise (``command_line``: as
    :func:`parse_duration`'s)."""
    seconds = parse_duration(value, what=what, command_line=command_line)
    if not 0 < seconds <= LONGEST_WAIT:
        raise ValueError(f"invalid {what} {_shown(value)}: expected a duration longer than 0 "
                         "and at most 100 years (36500d)")
    return seconds
