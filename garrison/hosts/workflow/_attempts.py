"""The ends of a workflow's earlier attempts, as its row keeps them after a retry.

A retry of a failed workflow clears its error and counts its attempt up
(``retry_transaction``): the row alone no longer tells that the attempt before failed,
nor with what. A node that watches a workflow another node runs reads its end from the
row (``_elsewhere.Elsewhere``), every :data:`~._elsewhere.POLL` seconds: a failure
retried before its next read was never heard by the watchers of the failed attempt. So
the retry keeps each failure it ends in the workflow's memo, under :data:`FAILED_MEMO`
(``[[attempt, unix seconds of the failure, {"type": ..., "message": ...}], ...]``, the
last :data:`FAILURES_KEPT`): a watcher of attempt ``n`` hears of the end of that
attempt, :func:`end_of_attempt`, however many attempts the row has counted since. A
blocked workflow told its watchers nothing (its attempt never ended): its retry keeps
nothing, and its watchers watch the retried attempt.
"""

from __future__ import annotations

from typing import Any

import attrs

from ...actors._values import ErrorInfo, Pid
from ...persistence import WorkflowStatus

__all__ = ["FAILED_MEMO", "FAILURES_KEPT", "MESSAGE_KEPT", "Watch", "end_of_attempt",
           "failures", "kept_failures"]

#: the memo key (garrison's) of the failures of a workflow's earlier attempts
FAILED_MEMO = "garrison.failed"
#: how many failures of earlier attempts a workflow's memo keeps (the latest)
FAILURES_KEPT = 16
#: the most characters of a failure's message the memo keeps (its start and its end):
#: the row carries the memo at every read of it (a watching node's, every POLL
#: seconds), and an error's message has no bound of its own
MESSAGE_KEPT = 4096


@attrs.frozen
class Watch:
    """What a watcher of a workflow another node runs watches: the attempt ``attempt``
    (``None`` until a read of the row settles it), or, not known, the attempt that ran
    at ``since`` (unix seconds, by this node's clock: a link, made without a read of the
    store, see ``WorkflowHost.add_link``)."""

    attempt: int | None = None
    since: float | None = None


def _seconds(when: Any) -> float:
    return when.timestamp() if hasattr(when, "timestamp") else float(when or 0.0)


def _kept_message(message: str) -> str:
    """``message`` within :data:`MESSAGE_KEPT` characters: its start and its end, saying
    how much was left out between them."""
    if len(message) <= MESSAGE_KEPT:
        return message
    head = MESSAGE_KEPT // 2
    tail = MESSAGE_KEPT - head
    return (f"{message[:head]} ... ({len(message) - head - tail} characters of the "
            f"message left out) ... {message[-tail:]}")


def kept_failures(record: Any) -> list[list[Any]]:
    """The memo value :data:`FAILED_MEMO` of the workflow of ``record`` (``failed``)
    once its retry has kept the failure of its attempt ``record.attempt`` (a message
    longer than :data:`MESSAGE_KEPT` characters cut in the middle, saying so)."""
    error = record.error or ErrorInfo("Failed", "")
    kept = [f for f in failures_list(record) if f[0] != record.attempt]
    kept.append([int(record.attempt), _seconds(record.updated),
                 {"type": error.type, "message": _kept_message(error.message)}])
    return kept[-FAILURES_KEPT:]


def failures_list(record: Any) -> list[list[Any]]:
    """The well-formed entries of ``record``'s :data:`FAILED_MEMO`, oldest first."""
    memo = record.memo or {}
    kept = memo.get(FAILED_MEMO)
    if not isinstance(kept, list):
        return []
    good = []
    for entry in kept:
        if isinstance(entry, list) and len(entry) == 3 and type(entry[0]) is int \
                and isinstance(entry[1], (int, float)) and isinstance(entry[2], dict):
            good.append(entry)
    return good


def failures(record: Any) -> dict[int, tuple[float, ErrorInfo]]:
    """The failures of the earlier attempts of the workflow of ``record`` that its
    retries kept: attempt -> (unix seconds of the failure, its error)."""
    out: dict[int, tuple[float, ErrorInfo]] = {}
    for attempt, at, error in failures_list(record):
        if attempt < record.attempt:
            out[attempt] = (float(at), ErrorInfo(str(error.get("type", "Failed")),
                                                 str(error.get("message", ""))))
    return out


def end_of_attempt(pid: Pid, record: Any, watch: Watch,
                   kept: dict[int, tuple[float, ErrorInfo]] | None = None
                   ) -> tuple[int, tuple[Any, ErrorInfo | None] | None]:
    """The attempt ``watch`` is of, as ``record`` (the row of the workflow ``pid``, or
    ``None``: not in the store) settles it, and its end: ``(result, error)``, or
    ``None`` while that attempt runs. An attempt the row counts past that no failure
    kept (a blocked one; one retried by a node of an older garrison, which kept none,
    or further back than :data:`FAILURES_KEPT`) goes on as the attempt that runs now,
    as the workflows that monitor a blocked one do (its retry keeps their monitors).
    ``kept``: :func:`failures` of ``record``, if read already."""
    if record is None:  # (deleted: as a process that is gone)
        return watch.attempt or 1, (None, ErrorInfo("noproc", f"process {pid} is not alive"))
    now = int(record.attempt)
    ended = kept if kept is not None else failures(record) if now > 1 else {}
    attempt = watch.attempt
    if attempt is None:
        attempt = now
        if watch.since is not None:  # (the first attempt that failed since the watch)
            attempt = min((k for k, (at, _e) in ended.items() if at >= watch.since),
                          default=now)
    if attempt < now and attempt in ended:
        return attempt, (None, ended[attempt][1])
    attempt = now  # (its failure not kept, or the attempt that runs)
    status = WorkflowStatus(record.status)
    if not status.finished:
        return attempt, None
    error = record.error
    if status is WorkflowStatus.CANCELLED and error is None:
        error = ErrorInfo("WorkflowCancelled", f"workflow {pid.id!r} was cancelled")
    return attempt, (record.result, error)
