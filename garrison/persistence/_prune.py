"""What both stores check before they prune ended workflows (``Store.prune_ended``)."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["PRUNABLE", "check_count", "check_prune", "check_statuses"]

#: the statuses whose workflows a prune may delete (a workflow never leaves them but
#: by a retry); ``blocked`` is not one: it waits for fixed code
PRUNABLE = ("completed", "failed", "cancelled")


def check_statuses(statuses: Iterable[str]) -> list[str]:
    """``statuses`` as a list of distinct prunable statuses (in :data:`PRUNABLE`
    order), else ``ValueError`` naming the first that is not one."""
    if isinstance(statuses, str):
        statuses = [statuses]
    given = list(statuses)
    for status in given:
        if status not in PRUNABLE:
            raise ValueError(f"cannot prune workflows of status {status!r}: only ended "
                             f"ones are pruned ({', '.join(PRUNABLE)})")
    return [status for status in PRUNABLE if status in given]


def check_prune(status: str, before: float, host: str | None, after: tuple[float, str] | None,
                limit: int) -> tuple[float, str]:
    """Check :meth:`Store.prune_ended`'s arguments (``ValueError``/``TypeError``
    naming the wrong one); the key to start after (``after``, or before every one)."""
    check_statuses([status])
    if isinstance(before, bool) or not isinstance(before, int | float) \
            or math.isnan(before):
        raise TypeError(f"prune_ended(before=): unix seconds, got {before!r}")
    if host is not None and not isinstance(host, str):
        raise TypeError(f"prune_ended(host=): a workflow host's name or None, got {host!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"prune_ended(limit=): an integer >= 1, got {limit!r}")
    if after is None:
        return (-math.inf, "")
    return (float(after[0]), str(after[1]))


def check_count(statuses: Iterable[str], before: float, host: str | None) -> list[str]:
    """Check :meth:`Store.count_prunable`'s arguments as :func:`check_prune` does; the
    statuses to count (:func:`check_statuses`)."""
    wanted = check_statuses(statuses)
    check_prune(wanted[0] if wanted else PRUNABLE[0], before, host, None, 1)
    return wanted
