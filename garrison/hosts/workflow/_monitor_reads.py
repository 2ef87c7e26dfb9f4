"""Reads of the store's monitors for workflows ending on a cluster node, batched.

In a cluster a workflow on another node may begin to monitor one that runs here, so
an end reads the store's monitors twice: before its commit (their ``EXIT`` goes into
the end's own transaction) and after it (a monitor committed meanwhile, whose maker
saw the workflow unfinished). Read one by one, a hundred workflows ending in the same
batch made two hundred database round trips, each stalling the node. Here the ends
that ask in the same scheduler pass share one query (``Store.monitors_of``); each
caller gets its own workflow's monitors, or the store's error. The query runs in the
trio thread, as each read did: in a worker thread it would leave the node idle when
nothing else can run, a moment in which a test's ``MockClock`` jumps time.
"""

from __future__ import annotations

import trio

from ...actors._values import Pid
from ...persistence import Store

__all__ = ["MonitorReads"]


class _Read:
    """One query forming or under way: the workflows it covers and its outcome."""

    __slots__ = ("done", "error", "rows", "wids")

    def __init__(self, wid: str) -> None:
        self.wids = [wid]
        self.done = trio.Event()
        self.rows: dict[str, list[Pid]] = {}
        self.error: Exception | None = None


class MonitorReads:
    """The batched monitors reads of one workflow host."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._forming: _Read | None = None

    async def of(self, wid: str) -> list[Pid]:
        """The pids the store holds as monitoring workflow ``wid``, in the order they
        began (``Store.monitors``); raises the store's error. Call it shielded: the
        read is made either way."""
        read = self._forming
        if read is not None:  # a query is forming: join it
            read.wids.append(wid)
            await read.done.wait()
        else:
            read = self._forming = _Read(wid)
            try:
                await trio.lowlevel.checkpoint()  # the ends of this pass join it
            finally:
                self._forming = None
            try:
                # in the trio thread, as a read always was here: a worker thread would
                # leave the node idle meanwhile when nothing else can run, a moment in
                # which a test's MockClock jumps time
                read.rows = self._store.monitors_of(read.wids)
            except Exception as exc:
                read.error = exc
            finally:
                read.done.set()
        if read.error is not None:
            raise read.error
        return read.rows.get(wid, [])
