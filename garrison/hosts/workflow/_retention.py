"""Retention: ended workflows deleted from the store once they ended long enough ago.

A workflow host with a ``retention`` (a ``workflow.host`` entry's ``retention: 30d``,
``open_node(retention=...)`` for the node's own ``workflows`` host) prunes its
completed, failed and cancelled workflows that ended (their row's ``updated``) more
than ``retention`` ago by the host's clock: at its start, then every
:func:`pass_interval` (a tenth of the retention, at most an hour, at least a
second). ``garrison workflows prune`` does the same once, with or without a node
running.

A pass deletes in batches of :data:`BATCH` workflows, each its own transaction
(``Store.prune_ended``: what is deleted is decided there, beside the delete), in a
worker thread: the node's own commits wait at most for one batch, never in the trio
thread, and after each batch the pass leaves the store to them as long again
(:data:`YIELD`): under a full load of commits a pass takes two to five times as long
as alone, and the node's workflows go on at about half their pace (back to back, the
batches left them a third of it or less).

It sweeps every status in ``(updated, workflow_id)`` order, then sweeps again while
the last sweep deleted anything: a child is kept while its parent workflow is in
the store (a retry of the parent replays and reads how its child ended), so the
children of parents deleted in one sweep go in the next. A schedule's last run is
kept (a tick whose workflow is gone looks interrupted, and would start again), and
so is a failed or cancelled parent of unfinished children a node's start would ask
(``Store.children_of_ended``: it finds them by their parent's row) until they ended.

A host with a ``rate`` keeps its ended workflows for the rate's period at least: the
rate counts the workflows admitted in its last period by their rows.

A pass that fails (the store refused, a server out of reach) logs a warning and is
done again at the next interval; it never stops the node. Several nodes of a cluster
prune at once harmlessly: each batch takes rows no other holds, and a row deleted by
one is not there for the others.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio

from ...persistence._blocking import run_blocking
from ...persistence._prune import PRUNABLE, check_statuses

if TYPE_CHECKING:
    from ._host import WorkflowHost

__all__ = ["BATCH", "LONGEST_INTERVAL", "SHORTEST_INTERVAL", "kept_for", "pass_interval",
           "prune", "prune_pass", "retention_text", "run_retention", "when_text"]

log = logging.getLogger("garrison.workflow")

#: workflows deleted in one transaction
BATCH = 500
#: after a batch, a node's pass waits this many times as long as the batch took before
#: the next: the store's writer is the node's that long (on SQLite, where one writer
#: at a time holds the file, its commits would otherwise queue behind batch after batch)
YIELD = 1.0
#: the longest wait between two passes of a host's retention (seconds)
LONGEST_INTERVAL = 3600.0
#: the shortest (a retention under 10 s: its passes, each taking the store's write
#: lock, would otherwise come back to back)
SHORTEST_INTERVAL = 1.0


def pass_interval(retention: float) -> float:
    """Seconds between two passes of a host with ``retention``: a tenth of it, at most
    :data:`LONGEST_INTERVAL` (a workflow is deleted at most that much past its
    retention) and at least :data:`SHORTEST_INTERVAL`."""
    return max(min(retention / 10, LONGEST_INTERVAL), SHORTEST_INTERVAL)


def when_text(at: float) -> str:
    """Unix seconds as the UTC time the log lines and the tools show."""
    return _dt.datetime.fromtimestamp(at, _dt.UTC).isoformat(timespec="seconds")


def _sweeps(statuses: list[str], prune_batch: Callable[[str, tuple[float, str] | None],
                                                       list[tuple[float, str]]],
            batch: int) -> Iterable[list[str]]:
    """The ids each batch deleted (``prune_batch(status, after)``), sweep after sweep
    until one deletes nothing."""
    while True:
        swept = 0
        for status in statuses:
            after: tuple[float, str] | None = None
            while True:
                rows = prune_batch(status, after)
                swept += len(rows)
                if rows:
                    yield [wid for _updated, wid in rows]
                if len(rows) < batch:
                    break
                after = rows[-1]
        if not swept:
            return


def prune(store: Any, before: float, statuses: Iterable[str] = PRUNABLE, *,
          host: str | None = None, batch: int | None = None, pause: bool = False,
          pruned: Callable[[list[str]], None] | None = None) -> int:
    """Delete every workflow of ``statuses`` (only ended ones: ``ValueError`` naming
    another) of ``host`` (``None``: any) that ended before ``before`` (unix seconds) and
    that a prune does not keep (see the module docs), in transactions of ``batch``
    (default :data:`BATCH`);
    how many were deleted. ``pruned(ids)`` is called after each batch. In the calling
    thread (a tool's); with ``pause`` (a node runs the store), it waits after each
    full batch as a node's pass does (:data:`YIELD`)."""
    wanted = check_statuses(statuses)
    total = 0
    size = BATCH if batch is None else batch

    def one_batch(status: str, after: tuple[float, str] | None) -> list[tuple[float, str]]:
        began = time.perf_counter()
        rows: list[tuple[float, str]] = store.prune_ended(status, before, host=host,
                                                           after=after, limit=size)
        if pause and len(rows) == size and YIELD:
            time.sleep((time.perf_counter() - began) * YIELD)
        return rows

    for ids in _sweeps(wanted, one_batch, size):
        total += len(ids)
        if pruned is not None:
            pruned(ids)
    return total


async def prune_pass(host: WorkflowHost, retention: float, *, batch: int | None = None
                     ) -> int:
    """One pass of ``host``'s retention: its ended workflows that ended more than
    ``retention`` seconds ago by its clock (its rate's period, if longer: see
    :func:`kept_for`), deleted batch by batch in a worker thread;
    what this node remembers of their ends is forgotten (their ids are free again).
    Counted in ``host.counts["pruned"]`` and logged (INFO) when it deleted any;
    how many."""
    before = host.clock.now() - kept_for(host, retention)
    batch = BATCH if batch is None else batch
    store = host.store
    total = 0
    statuses = list(PRUNABLE)
    swept = -1
    while swept:
        swept = 0
        for status in statuses:
            after: tuple[float, str] | None = None
            while True:
                began = time.perf_counter()
                rows = await run_blocking(_batch_of(store, status, before, host.name, after,
                                                    batch))
                if len(rows) == batch and YIELD:  # (more to come: the node's turn first)
                    await trio.sleep((time.perf_counter() - began) * YIELD)
                for _updated, wid in rows:
                    if wid not in host.active:
                        host.forget_end(wid)
                swept += len(rows)
                host.counts["pruned"] += len(rows)
                if len(rows) < batch:
                    break
                after = rows[-1]
        total += swept
    # (ends another node pruned, or that its pass will: not answered from memory)
    host.forget_ends_before(before)
    if total:
        log.info("pruned %d ended workflow%s of host %s that ended before %s (retention "
                 "%s)", total, "" if total == 1 else "s", host.name, when_text(before),
                 retention_text(retention), extra={"host": host.name})
    return total


def kept_for(host: WorkflowHost, retention: float) -> float:
    """How long ``host`` keeps its ended workflows: its ``retention``, or its ``rate``'s
    period when that is longer (the rate counts the workflows admitted in its last
    period from their rows: one pruned sooner would leave its room to another)."""
    starts = host.queue.limits.starts
    return retention if starts is None else max(retention, starts[1])


def _batch_of(store: Any, status: str, before: float, host: str,
              after: tuple[float, str] | None, batch: int
              ) -> Callable[[], list[tuple[float, str]]]:
    return lambda: store.prune_ended(status, before, host=host, after=after, limit=batch)


def retention_text(seconds: float) -> str:
    """A retention as one reads it: ``30d``, ``12h``, ``90s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


async def run_retention(host: WorkflowHost, retention: float) -> None:
    """Prune ``host``'s ended workflows at once, then every :func:`pass_interval`,
    until cancelled. A pass that fails is logged (a warning) and done again at the
    next interval."""
    interval = pass_interval(retention)
    while not host.closing:
        try:
            await prune_pass(host, retention)
        except trio.Cancelled:
            raise
        except Exception as exc:  # (the store refused: the next pass tries again)
            if host.closing:
                return
            log.warning("host %s: pruning its ended workflows failed: %s; tried again in "
                        "%s", host.name, exc, retention_text(interval),
                        extra={"host": host.name})
        await host.clock.sleep(interval)
