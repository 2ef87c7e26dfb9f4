"""Workflow ids: the one rule every id given by a user follows (``check_workflow_id``),
also the base of schedule ids (``_schedules.check_schedule_id``)."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ID_RULE", "MAX_DERIVED_BYTES", "MAX_KEY_BYTES", "call_ref", "call_request",
           "check_key_size", "check_promise_name", "check_rejection", "check_signal_topic",
           "check_state_key", "check_text",
           "check_workflow_id", "id_problem", "new_run_id", "shown"]

#: the longest workflow id, schedule id, promise name or state key, in bytes of UTF-8:
#: each is a key of the stores' indexes, and PostgreSQL's hold at most 2,704 bytes a
#: row (a promise's key is its workflow's id and its name); refused alike on every
#: store, so an application runs on either
MAX_KEY_BYTES = 1000

#: the longest id the engine derives from a valid one (a child workflow's
#: ``<parent id>.<seq>``): room for a hundred levels of children; two such ids, an
#: ``EXIT``'s message id, still fit PostgreSQL's index row
MAX_DERIVED_BYTES = MAX_KEY_BYTES + 200

#: the rule every workflow id (and schedule id) follows, as error messages state it
ID_RULE = ("a non-empty string of printable characters (no newline, tab or other control "
           f"character) without leading or trailing spaces, at most {MAX_KEY_BYTES} bytes "
           "of UTF-8")


#: random bytes for :func:`new_run_id`, 16 a run id, read from ``os.urandom`` this many
#: ids at a time (one system call for them, not one a start); emptied in a forked child,
#: which must not hand out the ids its parent will
_RANDOM_IDS = 256
_random: list[bytes] = []
os.register_at_fork(after_in_child=_random.clear)


def new_run_id() -> str:
    """A fresh run id (and a workflow's id when a start names none): the 32 hex digits
    of a random version-4 UUID, what ``uuid.uuid4().hex`` gives, from 16 bytes of
    ``os.urandom`` as it takes. (Every start makes one: this sets the version and
    variant bits in the bytes themselves, without the ``UUID`` object and its integer
    that ``uuid4`` builds to print them, and reads the bytes in blocks.)"""
    try:
        raw = bytearray(_random.pop())
    except IndexError:  # (list.pop is atomic: a thread never takes another's bytes)
        block = os.urandom(16 * _RANDOM_IDS)
        _random.extend([block[i:i + 16] for i in range(0, len(block), 16)])
        raw = bytearray(_random.pop())
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    return raw.hex()


def shown(value: str, keep: int = 60) -> str:
    """``repr(value)``, cut for an error message when it is long."""
    if len(value) <= keep:
        return repr(value)
    return f"{value[:keep]!r}... ({len(value)} characters)"


def _size_problem(value: str, limit: int = MAX_KEY_BYTES) -> str | None:
    if len(value) * 4 <= limit:  # (no character takes more than 4 bytes)
        return None
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        return f"it is {size} bytes long in UTF-8 (at most {limit})"
    return None


def id_problem(value: str, limit: int = MAX_KEY_BYTES) -> str | None:
    """Why the string ``value`` cannot be a workflow id (see :data:`ID_RULE`), or None
    (``limit``: its longest, in bytes of UTF-8)."""
    if not value:
        return "it is empty"
    if value != value.strip():
        return "it has leading or trailing spaces"
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        if "\ud800" <= bad <= "\udfff":
            return (f"it holds a lone surrogate character {bad!r}, which is not valid text "
                    "and cannot be stored")
        return f"it holds the unprintable character {bad!r}"
    return _size_problem(value, limit)


def check_workflow_id(wid: object, derived: bool = False) -> str:
    """``wid`` if it can be a workflow id; ``TypeError`` / ``ValueError`` naming it.

    The one rule for every id given (``start_workflow(id=)``, ``process.spawn(id=)``,
    ``garrison workflows start --id``; schedule ids, whose workflows are named
    ``<id>@<tick>``): :data:`ID_RULE`. ``derived``: an id the engine made from a valid
    one (a child workflow's), which may be longer (:data:`MAX_DERIVED_BYTES`)."""
    if not isinstance(wid, str):
        raise TypeError(f"a workflow id must be a string, got {type(wid).__name__}: {wid!r}")
    why = id_problem(wid, MAX_DERIVED_BYTES if derived else MAX_KEY_BYTES)
    if why is not None:
        if derived:  # (the engine made it: the rule of ids given is not the way out)
            raise ValueError(
                f"invalid child workflow id {shown(wid)}: {why}; a child's id is its "
                f"parent's with '.N' added, so children nested this deep need a shorter "
                f"id at the top (or id= given to a child, at most {MAX_KEY_BYTES} bytes)")
        hint = " (leave id=None for a fresh one)" if not wid else ""
        raise ValueError(f"invalid workflow id {shown(wid)}: {why}; a workflow id is "
                         f"{ID_RULE}{hint}")
    return wid


def check_promise_name(name: object, *, stored: bool = True) -> str:
    """``name`` if it can name a durable promise (a non-empty string), else ``ValueError``
    naming it: the one rule for ``workflow.promise(name)`` and for resolving or rejecting
    one from outside (a handle, ``garrison workflows resolve``), so a value is never
    stored under a name no workflow can declare. ``stored``: it is about to be written
    (see :func:`check_text`; a replay only matches it against its journal)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a promise name must be a non-empty string, got {name!r}")
    if stored:
        check_text(name, "a promise name")
    return name


def check_state_key(key: object, what: str) -> str:
    """``key`` if it can be a workflow state key (a string), else ``TypeError`` naming
    ``what`` (the call) and the key's type: a state is stored by its key as text (see
    :func:`check_text` for one about to be written)."""
    if not isinstance(key, str):
        raise TypeError(f"{what}: a state key must be a string, got {type(key).__name__}: "
                        f"{key!r}")
    return key


def check_key_size(value: str, what: str) -> None:
    """``ValueError`` naming ``what`` if ``value`` is longer than :data:`MAX_KEY_BYTES`
    in UTF-8 (a promise name, a state key: see there)."""
    why = _size_problem(value)
    if why is not None:
        raise ValueError(f"{what} {shown(value)} is too long: {why}; such names are keys of "
                         "the store's indexes")


def _lone_surrogate(value: str) -> str | None:
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return value[exc.start]
    return None


def check_text(value: Any, what: str) -> None:
    """``ValueError`` naming ``what`` if ``value`` (a string, or a JSON value: its keys
    and strings at any depth) holds the NUL character, which PostgreSQL's text and
    ``jsonb`` cannot hold, or a lone surrogate character, which is no valid text (no
    store encodes it): refused on both stores alike where it would be written. (Not
    where a replay matches a name against its journal: a journal an older version wrote
    on SQLite replays.)"""
    todo = [value]  # (a walk of its own, not a recursion: a value nested deeper than
    while todo:     # Python's recursion limit is the converter's to name)
        item = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError(f"{what} cannot hold the NUL character (\\x00), which no "
                                 f"store keeps as text: got {shown(item)}")
            bad = _lone_surrogate(item)
            if bad is not None:
                raise ValueError(f"{what} cannot hold the lone surrogate character {bad!r}, "
                                 f"which is not valid text and cannot be stored: got "
                                 f"{shown(item)}")
        elif isinstance(item, dict):
            for k, v in reversed(item.items()):  # (in order: the first bad one is named)
                todo += (v, k)
        elif isinstance(item, list | tuple):
            todo.extend(reversed(item))


def check_signal_topic(topic: object) -> str:
    """``topic`` if a signal may carry it (a non-empty string), else ``ValueError``: the
    one rule of ``WorkflowHandle.signal``, ``garrison workflows signal`` and the
    console."""
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"a signal needs a 'topic': a non-empty string, got {topic!r}")
    check_text(topic, "a signal's topic")
    return topic


def check_rejection(message: object) -> str:
    """``message`` if a promise may be rejected with it (a non-empty string), else
    ``ValueError``: the one rule of ``PromiseHandle.reject``, ``garrison workflows
    reject`` and the console."""
    if not isinstance(message, str) or not message:
        raise ValueError(f"a rejection needs a 'message': a non-empty string, got {message!r}")
    check_text(message, "a rejection's message")  # (NUL, a lone surrogate)
    return message


def call_ref(host: str, msg_id: str) -> str:
    """The ref of a workflow's call: its request's message id (``<id>#<seq>``, unique to
    the run and seq, the same when a replay makes the call again) under its host's name.

    >>> call_ref("workflows", "order-7#3")
    'workflows/order-7#3'
    """
    return f"{host}/{msg_id}"


def call_request(ref: str) -> str | None:
    """The request message id of a workflow's call ref (:func:`call_ref`); ``None`` for
    another caller's ref (a plain process's holds no ``/``).

    >>> call_request("workflows/order-7#3"), call_request("9fcb78cf.2")
    ('order-7#3', None)
    """
    _host, sep, msg_id = ref.partition("/")
    return msg_id if sep and "#" in msg_id else None
