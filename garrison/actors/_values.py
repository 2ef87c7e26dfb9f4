"""The values that cross process boundaries: Pid, Message, Event, ErrorInfo."""

from __future__ import annotations

import enum
import traceback as _traceback
from typing import Any

import attrs

from .._observe import safe_str
from ._runtime import current_runtime, runtime_var


@attrs.frozen(order=True, cache_hash=True)
class Pid:
    """A process identifier: the host it runs on and an id unique on that host.

    ``str(pid)`` reads ``host/id`` and is stable: ``Pid.parse(str(pid)) == pid``.
    A workflow's pid is ``Pid(host, workflow_id)``, so it survives restarts.

    >>> Pid.parse("workflows/order-17")
    Pid(host='workflows', id='order-17')
    """

    host: str
    id: str

    def __str__(self) -> str:
        return f"{self.host}/{self.id}"

    @classmethod
    def parse(cls, text: str) -> Pid:
        """Parse the output of ``str(pid)``; raises ``ValueError`` naming bad input."""
        if not isinstance(text, str):
            raise ValueError(f"cannot parse a pid from {text!r}: expected a 'host/id' string")
        host, sep, ident = text.partition("/")
        if not sep or not host or not ident:
            raise ValueError(f"cannot parse a pid from {text!r}: expected 'host/id'")
        return cls(host, ident)


def _slot_setters(cls: type, *names: str) -> tuple[Any, ...]:
    """The ``__set__`` of each slot ``names`` of the frozen (slotted) ``cls``, for an
    ``__init__`` of its own. attrs' frozen ``__init__`` sets each field through
    ``object.__setattr__``, which looks the name up in the class again each time; a
    slot's own setter stores at its offset at once, and is what that lookup ends in.
    The instance stays as frozen (its ``__setattr__`` still refuses), and the checks
    below keep every slot of ``cls`` set."""
    slots = [name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())
             if name != "__weakref__"]
    assert sorted(slots) == sorted(names), (cls, slots)  # (a new field: set it here too)
    return tuple(cls.__dict__[name].__set__ for name in names)


def _install_init(cls: type, init: Any) -> None:
    """Make ``init`` the ``__init__`` of ``cls``, named as attrs names the one it
    replaces: a wrong argument then reads ``Message.__init__() missing 1 required
    positional argument: 'topic'``, as attrs' did, never an internal function's name."""
    init.__name__ = "__init__"
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]


_set_host, _set_id, _set_hash = _slot_setters(Pid, "host", "id", "_attrs_cached_hash")


def _pid_init(self: Pid, host: str, id: str) -> None:
    # Pid's __init__: attrs' own, with the check of both fields in one test (a pid is
    # made per spawn and per route): what would not come back from
    # ``Pid.parse(str(pid))`` as an equal pid is refused
    if type(host) is not str or type(id) is not str or not host or not id or "/" in host:
        host, id = _pid_parts(host, id)
    _set_host(self, host)
    _set_id(self, id)
    _set_hash(self, None)


def _pid_parts(host: object, ident: object) -> tuple[str, str]:
    """The cold path of a pid's check: say what is wrong, or make a ``str`` subclass (a
    ``StrEnum`` member) a plain ``str``, as ``Pid.parse`` would give it."""
    parts = []
    for field, value in (("host", host), ("id", ident)):
        if not isinstance(value, str):
            raise TypeError(f"a pid's {field} must be a str, got {type(value).__name__}: "
                            f"{value!r}")
        parts.append(str.__str__(value))
    host, ident = parts
    if not host or "/" in host:
        raise ValueError(f"invalid host name {host!r} in a pid: must be non-empty and "
                         "contain no '/'")
    if not ident:
        raise ValueError(f"invalid pid {host}/: its id must be non-empty")
    return host, ident


# (replaces the __init__ attrs wrote, which sets exactly these three slots)
assert Pid.__init__.__code__.co_varnames[:3] == ("self", "host", "id")
_install_init(Pid, _pid_init)


class EventKind(enum.StrEnum):
    """What an :class:`Event` reports."""

    #: a watched (monitored) process ended, normally or not
    EXIT = "EXIT"
    #: a linked process failed and this process traps links
    LINK_DOWN = "LINK_DOWN"
    #: someone asked this process to stop; it may clean up, then it is terminated
    CANCEL = "CANCEL"


@attrs.frozen
class ErrorInfo:
    """A structured error: exception type name, message and traceback text.

    ``str(error)`` reads ``TypeName: message``.
    """

    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture ``exc`` with its traceback. An exception group (a trio nursery's, in
        code that opens one) says in its message what it holds, as ``type: message``
        of each error inside it (the first five), not only how many there are::

            Exceptions from Trio nursery (1 sub-exception): ValueError: bad total
        """
        tb = _bounded("".join(_traceback.format_exception(type(exc), exc, exc.__traceback__)))
        message = safe_str(exc)
        if _from_asyncio(exc, message):
            message += f" ({ASYNCIO_HINT})"
        if isinstance(exc, BaseExceptionGroup):
            leaves = _leaves(exc)
            message += ": " + "; ".join(f"{type(e).__name__}: {safe_str(e)}" for e in leaves[:5])
            if len(leaves) > 5:
                message += f"; and {len(leaves) - 5} more"
        return cls(type(exc).__name__, message, tb)


def cancel_error_info(exc: BaseException) -> ErrorInfo:
    """:meth:`ErrorInfo.from_exception` for a cancel (a workflow's ``WorkflowCancelled``):
    the same type, message and traceback, its frames and their lines, without the
    ``^^^`` lines under them. A cancel is not a crash, and a parent's cancel ends
    thousands of children at once in the node's thread: finding a frame's columns walks
    its code's positions up to the line (long in a big function) and marking the
    expression parses the line, together most of what recording a cancel cost, each.
    A chain holding an exception group (or a ``SyntaxError``) is formatted as
    :meth:`ErrorInfo.from_exception` does."""
    try:
        tb = _bounded("".join(_plain_lines(exc)))
    except _NotPlain:
        return ErrorInfo.from_exception(exc)
    return ErrorInfo(type(exc).__name__, safe_str(exc), tb)


class _NotPlain(Exception):
    """An exception group (or a ``SyntaxError``, shown with its line) in the chain
    :func:`_plain_lines` formats."""


def _plain_lines(exc: BaseException) -> list[str]:
    """``traceback.format_exception(exc)``'s lines without column positions (so no
    carets), chained exceptions included (oldest first, each once)."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    led_to = ""  # (how the exception met next led to the one before it)
    while current is not None and id(current) not in seen:
        if isinstance(current, (BaseExceptionGroup, SyntaxError)):
            raise _NotPlain
        seen.add(id(current))
        chain.append((current, led_to))
        if current.__cause__ is not None:
            current, led_to = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, led_to = current.__context__, _CONTEXT
        else:
            current = None
    lines: list[str] = []
    for one, led_to_next in reversed(chain):  # (the oldest first)
        if one.__traceback__ is not None:
            lines.append("Traceback (most recent call last):\n")
            lines.extend(_traceback.StackSummary.extract(
                _traceback.walk_tb(one.__traceback__)).format())
        lines.extend(_exception_only(one))
        if led_to_next:
            lines.append(led_to_next)
    return lines


def _exception_only(exc: BaseException) -> list[str]:
    """``traceback.format_exception_only(exc)`` of an exception that is no group nor
    ``SyntaxError``, its notes included (that function formats the chain's tracebacks
    with their positions too, to throw them away)."""
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ not in ("__main__", "builtins"):
        name = f"{kind.__module__}.{name}"
    text = safe_str(exc)
    lines = [f"{name}: {text}\n" if text else f"{name}\n"]
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, (list, tuple)):
        lines.extend(f"{note}\n" if isinstance(note, str) else f"{safe_str(note)}\n"
                     for note in notes)
    return lines


_CAUSE = ("\nThe above exception was the direct cause of the following exception:\n\n")
_CONTEXT = ("\nDuring handling of the above exception, another exception occurred:\n\n")


#: what asyncio code awaited in a process, a workflow or an async activity (all of which
#: run on trio) is told to do instead, beside asyncio's error (or trio's)
ASYNCIO_HINT = (
    "asyncio code: garrison runs on trio, not asyncio; wait with workflow.sleep, a "
    "receive or a promise in a workflow (trio.sleep in a plain process); run asyncio "
    "code (aiohttp, asyncpg) in a plain def activity, which runs in a worker thread, as "
    "asyncio.run(coro) there; see README, Activities")


def _from_asyncio(exc: BaseException, message: str) -> bool:
    """True if ``exc`` is what asyncio code raises when awaited under trio: asyncio's
    own ``no running event loop``, or trio's error for a bare asyncio yield."""
    if type(exc) is RuntimeError:
        return message == "no running event loop"
    return type(exc) is TypeError and message.startswith(
        "trio.run received unrecognized yield message")


#: characters of a recorded traceback kept at most: a failure's traceback carries, as
#: a note, that of the failure it awaited (a child workflow's, an activity's), which
#: carried its own, so a tree failing up its levels would store ever longer ones
TRACEBACK_LIMIT = 20_000


def _bounded(tb: str) -> str:
    """``tb`` within :data:`TRACEBACK_LIMIT`: its start (the outermost frames and the
    error) and its end (the innermost: where it was raised, the notes' own), saying how
    much was left out between them."""
    if len(tb) <= TRACEBACK_LIMIT:
        return tb
    head = TRACEBACK_LIMIT // 4
    tail = TRACEBACK_LIMIT - head
    return (f"{tb[:head]}\n... ({len(tb) - head - tail} characters of the traceback left "
            f"out) ...\n{tb[-tail:]}")


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The errors inside ``group`` and the groups in it, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@attrs.frozen
class Event:
    """A lifecycle event from ``process.events()``.

    ``kind`` is ``EXIT`` (a monitored process ended; ``result`` on a normal exit,
    ``error`` otherwise), ``LINK_DOWN`` (a linked process failed while this one
    traps links) or ``CANCEL`` (this process is asked to stop; ``pid`` is who asked).
    """

    kind: EventKind
    pid: Pid
    result: Any = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        """True when this event reports no error."""
        return self.error is None


def check_topic(topic: Any, what: str) -> str:
    """``topic`` as a plain ``str``; anything else raises ``TypeError`` naming its type.

    Called where a message enters the runtime (``process.send``/``call``,
    ``node.send``/``call``), after the caller checked ``type(topic) is not str``.
    A ``str`` subclass (a ``StrEnum`` member) becomes a plain ``str``, so a topic
    reads the same live and after a durable round trip.
    """
    if isinstance(topic, str):
        return str.__str__(topic)
    raise TypeError(f"{what}: a topic must be a str, got {type(topic).__name__}: {topic!r}")


@attrs.frozen
class Message:
    """A message in a process's inbox.

    ``topic`` names what it is about, ``payload`` is its data, ``sender`` the
    process that sent it (``None`` from outside any process), ``id`` a unique id.
    A message that came from ``process.call`` is answered with ``await msg.reply(v)``.
    ``trace`` is the OpenTelemetry trace context it was sent in (W3C headers), or
    ``None``; it takes no part in equality (see ``garrison.tracing``).
    """

    topic: str
    payload: Any = None
    sender: Pid | None = None
    id: str = ""
    call_ref: str | None = attrs.field(default=None, repr=False)
    trace: dict[str, str] | None = attrs.field(default=None, repr=False, eq=False)

    async def reply(self, value: Any = None) -> None:
        """Answer a ``process.call``; a message that was not a call raises ``ValueError``.

        A reply that arrives after the caller gave up is dropped.
        """
        if self.call_ref is None or self.sender is None:
            topic = repr(self.topic)  # (cut: a topic has no limit, an error line has)
            if len(topic) > 80:
                topic = f"{topic[:60]}... ({len(topic)} characters)"
            raise ValueError(
                f"message {self.id} (topic {topic}) is not a call: nothing to reply to"
            )
        runtime = runtime_var.get(None)  # the hot path: current_runtime() without a call
        if runtime is None:
            runtime = current_runtime("msg.reply()")
        await runtime.reply(self, value)


(_set_topic, _set_payload, _set_sender, _set_msg_id, _set_call_ref,
 _set_trace) = _slot_setters(Message, "topic", "payload", "sender", "id", "call_ref", "trace")


def _message_init(self: Message, topic: str, payload: Any = None, sender: Pid | None = None,
                  id: str = "", call_ref: str | None = None,
                  trace: dict[str, str] | None = None) -> None:
    # Message's __init__: attrs' own (the same fields, defaults and order; no field has
    # a converter or a validator), each slot set by its own setter (a message is made
    # per send and per call: see ``_slot_setters``)
    _set_topic(self, topic)
    _set_payload(self, payload)
    _set_sender(self, sender)
    _set_msg_id(self, id)
    _set_call_ref(self, call_ref)
    _set_trace(self, trace)


# (replaces the __init__ attrs wrote, which takes exactly these fields, in this order)
assert Message.__init__.__code__.co_varnames[:7] == (
    "self", "topic", "payload", "sender", "id", "call_ref", "trace")
assert all(a.converter is None and a.validator is None for a in attrs.fields(Message))
_install_init(Message, _message_init)


@attrs.frozen
class ProcessInfo:
    """A snapshot of one process, from ``node.process_info(pid)``.

    ``queued`` counts the messages waiting in its inbox and its ``listen`` inboxes,
    ``events`` the events waiting in ``process.events()``; ``links``, ``monitors``
    (whose ``EXIT`` it will receive) and ``monitored_by`` are pids; ``names`` the
    names it has registered. A process that has ended reads ``alive=False`` with
    everything else empty.
    """

    pid: Pid
    alive: bool
    label: str = ""
    parent: Pid | None = None
    queued: int = 0
    events: int = 0
    links: frozenset[Pid] = frozenset()
    monitors: frozenset[Pid] = frozenset()
    monitored_by: frozenset[Pid] = frozenset()
    names: tuple[str, ...] = ()
    trap_links: bool = False
    reads_events: bool = False
