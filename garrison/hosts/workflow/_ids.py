"""Workflow ids: the one rule every id given by a user follows (``check_workflow_id``),
also the base of schedule ids (``_schedules.check_schedule_id``)."""

from __future__ import annotations

from typing import Any

__all__ = ["ID_RULE", "check_promise_name", "check_state_key", "check_text", "check_workflow_id",
           "id_problem"]

#: the rule every workflow id (and schedule id) follows, as error messages state it
ID_RULE = ("a non-empty string of printable characters (no newline, tab or other control "
           "character) without leading or trailing spaces")


def id_problem(value: str) -> str | None:
    """Why the string ``value`` cannot be a workflow id (see :data:`ID_RULE`), or None."""
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
    return None


def check_workflow_id(wid: object) -> str:
    """``wid`` if it can be a workflow id; ``TypeError`` / ``ValueError`` naming it.

    The one rule for every id given (``start_workflow(id=)``, ``process.spawn(id=)``,
    ``garrison workflows start --id``; schedule ids, whose workflows are named
    ``<id>@<tick>``): :data:`ID_RULE`."""
    if not isinstance(wid, str):
        raise TypeError(f"a workflow id must be a string, got {type(wid).__name__}: {wid!r}")
    why = id_problem(wid)
    if why is not None:
        hint = " (leave id=None for a fresh one)" if not wid else ""
        raise ValueError(f"invalid workflow id {wid!r}: {why}; a workflow id is {ID_RULE}"
                         f"{hint}")
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


def check_text(value: Any, what: str) -> None:
    """``ValueError`` naming ``what`` if ``value`` (a string, or a JSON value: its keys
    and strings at any depth) holds the NUL character, which PostgreSQL's text and
    ``jsonb`` cannot hold: refused on both stores alike where it would be written. (Not
    where a replay matches a name against its journal: a journal an older version wrote
    on SQLite replays.)"""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{what} cannot hold the NUL character (\\x00), which no store "
                             f"keeps as text: got {value!r}")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, what)
            check_text(v, what)
    elif isinstance(value, list | tuple):
        for v in value:
            check_text(v, what)
