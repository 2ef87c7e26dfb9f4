"""What every concrete store does the same way, written once.

:class:`StoreShortcuts` gives a store the one-operation writes tools and tests use
(``store.deliver(...)`` is ``store.write(Transaction().deliver(...))``), its
statistics, recovery's list of unfinished workflows and the context-manager
protocol, all in terms of the store's own :meth:`write`, :meth:`list_workflows`
and :meth:`close`. A store class inherits it and implements those three; the host
never relies on this class (it talks to :class:`~garrison.persistence.Store`).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, Self

from ._records import (
    FINAL_STATUSES,
    DamagedRecord,
    StoreStatistics,
    WorkflowRecord,
    WorkflowStatus,
)
from ._transaction import Transaction

__all__ = ["StoreShortcuts"]

#: the rows one read of :meth:`StoreShortcuts.list_past_damage` takes (one at a time
#: near a damaged row)
_DAMAGE_PAGE = 500


class StoreShortcuts:
    """Shortcuts shared by :class:`~garrison.persistence.SQLiteStore` and
    :class:`~garrison.persistence.PostgresStore`: each commits one operation now.

    Example::

        with SQLiteStore("app.db", lock=False) as store:
            store.deliver("order-1", "approve", {"by": "ana"})
            store.resolve_promise("order-1", "payment", {"ok": True})
    """

    _stats: dict[str, int]

    # what a store class provides
    def write(self, tx: Transaction) -> list[Any]:
        raise NotImplementedError

    def list_workflows(self, *args: Any, **kw: Any) -> list[WorkflowRecord]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # what it gets
    def transaction(self) -> Transaction:
        """A new, empty :class:`~garrison.persistence.Transaction`."""
        return Transaction()

    def stopping(self, within: float) -> AbstractContextManager[None]:
        """The node stops in the block: nothing to bound here (a store whose server may
        stop answering, PostgreSQL's, bounds its waits by ``within``)."""
        return nullcontext()

    async def wait_writable(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """A node's start waits here until the store may be written: nothing to wait
        for here (SQLite's waits for a write lock another program holds)."""

    def statistics(self) -> StoreStatistics:
        """Counters of the write path (transactions, group-commit batches, ...)."""
        return StoreStatistics(**self._stats)

    def unfinished_workflows(self, damaged: list[DamagedRecord] | None = None
                             ) -> list[WorkflowRecord]:
        """Every workflow not completed, failed or cancelled, oldest first (recovery).
        A damaged row (:class:`DamagedRecord`) is raised; with ``damaged``, it is added
        there instead and the others are read past it (:meth:`list_past_damage`, on past
        a row whose own id is not UTF-8 text too), so that one damaged row does not keep
        a node from resuming every other workflow."""
        statuses = [s for s in WorkflowStatus if s not in FINAL_STATUSES]
        try:
            return self.list_workflows(statuses)
        except DamagedRecord:
            if damaged is None:
                raise
        return self.list_past_damage(statuses, None, damaged, past_unreadable=True)

    def list_past_damage(self, statuses: Any, search: Any, damaged: list[DamagedRecord],
                         most: int | None = None, *, past_unreadable: bool = False,
                         **select: Any) -> list[WorkflowRecord]:
        """What ``list_workflows(statuses, search, limit=most, **select)`` gives, read
        page by page (keyset, in its order) so that a damaged row is stepped over and
        added to ``damaged``, not the end of the read. A row whose own id is not UTF-8
        text (:attr:`DamagedRecord.id_is_text`) is no key to read after: the read ends there, or
        with ``past_unreadable`` goes on after its ``created`` instant (leaving out the
        rows of that very instant whose ids sort after it: a caller says so)."""
        return [row for page in self.pages_past_damage(
            statuses, search, damaged, most, past_unreadable=past_unreadable, **select)
            for row in page]

    def pages_past_damage(self, statuses: Any, search: Any, damaged: list[DamagedRecord],
                          most: int | None = None, *, past_unreadable: bool = False,
                          **select: Any) -> Iterator[list[WorkflowRecord]]:
        """:meth:`list_past_damage`'s rows a page (at most 500) at a time, each read when
        the one before it was taken: ``garrison workflows list`` prints each as it comes,
        holding one page, not a store's every row. ``damaged`` grows as the pages are
        read."""
        count = 0
        after: tuple[_dt.datetime | float, str] | None = None
        limit = _DAMAGE_PAGE
        while most is None or count < most:
            if most is not None:
                limit = min(limit, most - count)
            try:
                page = self.list_workflows(statuses, search, after=after, limit=limit,
                                           **select)
            except DamagedRecord as exc:
                if limit > 1:
                    limit = 1  # find it: one row at a time from here
                    continue
                damaged.append(exc)
                if exc.id_is_text:
                    after = (exc.created if exc.created is not None else 0.0,
                             exc.workflow_id)
                elif past_unreadable and exc.created is not None:
                    newest = select.get("newest_first")
                    after = (math.nextafter(exc.created, -math.inf if newest else math.inf),
                             "\U0010ffff" if newest else "")
                else:
                    return
                continue
            if not page:
                return
            count += len(page)
            yield page
            last = page[-1]
            after = (last.created if last.created is not None else 0.0, last.workflow_id)
            limit = _DAMAGE_PAGE if limit == 1 else limit

    def deliver(self, workflow_id: str, topic: str, payload: Any = None, **kw: Any) -> int | None:
        """``write(Transaction().deliver(...))``; returns the inbox row id."""
        result: int | None = self.write(Transaction().deliver(workflow_id, topic, payload, **kw))[0]
        return result

    def resolve_promise(self, workflow_id: str, name: str, value: Any = None) -> None:
        """Resolve now; ``PromiseAlreadyCompleted`` if it was completed before."""
        self.write(Transaction().resolve_promise(workflow_id, name, value))

    def reject_promise(self, workflow_id: str, name: str, message: str) -> None:
        """Reject now; ``PromiseAlreadyCompleted`` if it was completed before."""
        self.write(Transaction().reject_promise(workflow_id, name, message))

    def set_state(self, workflow_id: str, key: str, value: Any) -> None:
        """Set state ``key`` now."""
        self.write(Transaction().set_state(workflow_id, key, value))

    def request_cancel(self, workflow_id: str, *,
                       time: _dt.datetime | float | None = None) -> None:
        """Flag the workflow for cancellation, asked at ``time`` (default now);
        ``NoSuchWorkflow`` if unknown."""
        self.write(Transaction().request_cancel(workflow_id, time=time))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
