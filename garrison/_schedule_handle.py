"""Handles on schedules from outside: ``await node.schedule(...)`` and
``node.schedule_handle(id)``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs

from .actors._values import Pid
from .persistence import ScheduleRecord, not_durable

if TYPE_CHECKING:
    from .hosts.workflow import WorkflowHost

__all__ = ["ScheduleHandle", "as_shown"]


def as_shown(record: ScheduleRecord) -> ScheduleRecord:
    """``record`` as a user reads it: a paused schedule has no ``next_tick`` (resuming
    sets one from then; the stored one would read as a tick due to fire)."""
    return attrs.evolve(record, next_tick=None) if record.paused else record


@attrs.frozen
class ScheduleHandle:
    """A schedule by id, on its workflow host.

    >>> nightly = await node.schedule("nightly", report, cron="0 3 * * *")  # doctest: +SKIP
    >>> nightly.info().next_tick                                            # doctest: +SKIP
    datetime.datetime(2026, 1, 2, 3, 0, tzinfo=datetime.timezone.utc)
    >>> await nightly.pause()                                               # doctest: +SKIP
    """

    host: WorkflowHost = attrs.field(repr=False)
    schedule_id: str

    def info(self) -> ScheduleRecord:
        """The schedule as stored (spec, ``paused``, ``next_tick``, ``last_workflow``...;
        ``next_tick`` is ``None`` while it is paused); :class:`~garrison.NoSuchSchedule`
        if it was deleted."""
        self.host.node.check_thread("ScheduleHandle.info()")
        with self._store_open("read"):
            return as_shown(self.host.scheduler.get(self.schedule_id))

    async def pause(self) -> None:
        """Stop starting workflows on its ticks (it stays paused across restarts)."""
        self.host.node.check_run("ScheduleHandle.pause()")
        with self._store_open("pause"):
            await self.host.scheduler.pause(self.schedule_id)

    async def resume(self) -> None:
        """Start workflows on its ticks again, from the first tick after now (ticks that
        passed while it was paused are not caught up). No-op if it is not paused."""
        self.host.node.check_run("ScheduleHandle.resume()")
        with self._store_open("resume"):
            await self.host.scheduler.resume(self.schedule_id)

    async def trigger(self) -> Pid:
        """Start its workflow now, paused or not, whatever its overlap policy; the
        workflow's id is ``<schedule id>@<now, ISO 8601 UTC with milliseconds>``, and
        the schedule's later ticks treat it as its last run. Returns its pid."""
        self.host.node.check_run("ScheduleHandle.trigger()")
        with self._store_open("trigger"):
            return await self.host.scheduler.trigger(self.schedule_id)

    async def delete(self) -> None:
        """Remove the schedule (workflows it started go on). A schedule of the config
        comes back at the next start unless its entry is removed."""
        self.host.node.check_run("ScheduleHandle.delete()")
        with self._store_open("delete"):
            await self.host.scheduler.delete(self.schedule_id)

    @contextlib.contextmanager
    def _store_open(self, doing: str) -> Iterator[None]:
        """A use of the store, which a node that has stopped has closed: its error says
        so, and how to reach the store, instead of the store's bare ``is closed`` (a
        store in memory went with the node: nothing reaches it)."""
        try:
            yield
        except RuntimeError as exc:
            if not self.host.closing or "is closed" not in str(exc):
                raise
            where = ("its store was in memory and went with the node"
                     if self.host.store.path is None else
                     "use the store itself: garrison schedules --store PATH ...")
            raise RuntimeError(
                f"cannot {doing} schedule {self.schedule_id!r}: its node has stopped, and "
                f"its store with it ({where})") from None


not_durable(ScheduleHandle, "a schedule's handle is not durable: store the schedule's id "
            "(handle.schedule_id) and call node.schedule_handle(id) where it is used")
