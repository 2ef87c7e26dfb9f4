"""psycopg 3 on trio without threads: its non-blocking generators driven by trio.

(For the PostgreSQL store; measured against a worker-thread driver in
bench/pg_driver.py.)

psycopg's async API waits through ``AsyncConnection.wait(gen)``, which drives a
generator from ``psycopg.generators`` on asyncio's loop. :class:`TrioConnection`
replaces that one method (and the connection's asyncio lock) so the whole async
API -- ``execute``, ``transaction()``, ``pipeline()``, ``notifies()`` -- runs on
trio, waiting with ``trio.lowlevel.wait_readable/wait_writable`` on the socket.

It relies on two psycopg internals that have been stable through 3.x:
``psycopg.generators.connect`` and the ``wait(gen, interval, timeout)`` hook.
A trio cancellation in the middle of a query leaves the connection in an unknown
protocol state: :meth:`TrioConnection.wait` closes the connection then (callers
that must not lose it shield their queries).

Still asyncio-only, not to be called: ``cancel_safe()`` and the queued writer of
``copy()``. ``connect_trio`` hands the conninfo to libpq as is: a host *name*
is resolved by libpq with a blocking ``getaddrinfo`` (resolve it first, e.g.
with ``trio.socket.getaddrinfo``, and pass ``hostaddr``; an IP address or a
Unix socket directory needs nothing).
"""

from __future__ import annotations

import contextlib
import select
from typing import Any

import psycopg
import trio
from psycopg import errors as e
from psycopg import generators
from psycopg.rows import tuple_row
from psycopg.waiting import Ready, Wait

WAIT_R, WAIT_W, WAIT_RW = Wait.R, Wait.W, Wait.RW
READY_R, READY_W = Ready.R, Ready.W

_POLL_MASKS = {
    WAIT_R: select.POLLIN,
    WAIT_W: select.POLLOUT,
    WAIT_RW: select.POLLIN | select.POLLOUT,
}


def _ready_now(fileno: int, s: int) -> int:
    """What ``fileno`` is ready for right now (a zero-timeout poll)."""
    p = select.poll()
    p.register(fileno, _POLL_MASKS[Wait(s)])
    ready = 0
    for _, ev in p.poll(0):
        if ev & (select.POLLIN | select.POLLERR | select.POLLHUP):
            ready |= READY_R
        if ev & select.POLLOUT:
            ready |= READY_W
    return ready


async def _wait_fd(fileno: int, s: int) -> int:
    """Block until ``fileno`` is ready for what ``s`` asks; returns the Ready bits."""
    if s == WAIT_R:
        await trio.lowlevel.wait_readable(fileno)
        return READY_R
    if s == WAIT_W:
        await trio.lowlevel.wait_writable(fileno)
        return READY_W
    # RW (libpq flushing a large send while the server may answer): first one wins.
    got = 0
    async with trio.open_nursery() as nursery:

        async def one(waiter: Any, bit: int) -> None:
            nonlocal got
            await waiter(fileno)
            got |= bit
            nursery.cancel_scope.cancel()

        nursery.start_soon(one, trio.lowlevel.wait_readable, READY_R)
        nursery.start_soon(one, trio.lowlevel.wait_writable, READY_W)
    return got


async def wait_trio(gen: Any, fileno: int, timeout: float | None = None) -> Any:
    """Drive a psycopg generator (yielding ``Wait`` values) to completion on trio."""
    try:
        s = next(gen)
        with trio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
            while True:
                # A socket asked for writing nearly always is writable: a poll(0)
                # is cheaper than a pass through trio's I/O manager.
                ready = _ready_now(fileno, s) if s & WAIT_W else 0
                if not ready:
                    ready = await _wait_fd(fileno, s)
                s = gen.send(ready)
    except StopIteration as ex:
        return ex.value
    except trio.TooSlowError:
        raise e._WaitTimeout("wait timeout expired") from None


async def wait_conn_trio(gen: Any, timeout: float | None = None) -> Any:
    """Drive a connection generator (yielding ``(fileno, Wait)``) to completion on trio."""
    try:
        fileno, s = next(gen)
        with trio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
            while True:
                ready = await _wait_fd(fileno, s)
                fileno, s = gen.send(ready)
    except StopIteration as ex:
        return ex.value
    except trio.TooSlowError:
        raise e.ConnectionTimeout("connection timeout expired") from None


class TrioConnection(psycopg.AsyncConnection[Any]):
    """A psycopg ``AsyncConnection`` whose I/O waits on trio instead of asyncio."""

    def __init__(self, pgconn: Any, row_factory: Any = tuple_row) -> None:
        super().__init__(pgconn, row_factory)
        # asyncio.Lock would ask for asyncio's running loop as soon as two trio
        # tasks contend for the connection.
        self.lock = trio.Lock()  # type: ignore[assignment]

    @classmethod
    async def connect_trio(
        cls, conninfo: str, *, autocommit: bool = False, timeout: float = 30.0
    ) -> TrioConnection:
        """Connect to ``conninfo`` (a URL or key=value string) without blocking trio."""
        pgconn = await wait_conn_trio(generators.connect(conninfo), timeout=timeout)
        conn = cls(pgconn)
        if autocommit:
            await conn.set_autocommit(True)
        return conn

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        """Drive ``gen`` on this connection's socket (psycopg calls it for every query)."""
        try:
            return await wait_trio(gen, self.pgconn.socket, timeout=timeout)
        except (trio.Cancelled, KeyboardInterrupt):
            # The generator was abandoned mid-protocol: the connection cannot be reused.
            self.pgconn.finish()
            raise
