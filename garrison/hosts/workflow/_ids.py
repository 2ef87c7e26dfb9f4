"""Workflow ids: the one rule every id given by a user follows (``check_workflow_id``),
also the base of schedule ids (``_schedules.check_schedule_id``)."""

from __future__ import annotations

__all__ = ["ID_RULE", "check_workflow_id", "id_problem"]

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
