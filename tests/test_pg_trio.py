"""psycopg's async API on trio (garrison/persistence/_pg_trio.py), against a real server.

These tests do real network I/O on the throwaway server, so they run on trio's
real clock (an autojump clock would fire timeouts while a query is in flight).
"""

from __future__ import annotations

import time

import psycopg
import pytest
import trio

from garrison.persistence._pg_trio import TrioConnection


async def test_queries_transactions_and_pipelines(postgres_url: str) -> None:
    conn = await TrioConnection.connect_trio(postgres_url, autocommit=True)
    try:
        assert conn.autocommit
        cur = await conn.execute("SELECT %s::int + 1, %s::text", (41, "x"))
        assert await cur.fetchone() == (42, "x")
        await conn.execute("CREATE TABLE t (x int PRIMARY KEY)")
        async with conn.pipeline():  # one round trip: BEGIN, INSERTs, COMMIT
            c = conn.cursor()
            await c.execute("BEGIN")
            await c.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(100)])
            await c.execute("COMMIT")
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (1000)")
                await conn.execute("INSERT INTO t VALUES (1)")
        cur = await conn.execute("SELECT count(*), max(x) FROM t")
        assert await cur.fetchone() == (100, 99)  # the failed transaction left nothing
    finally:
        await conn.close()


async def test_tasks_sharing_a_connection_take_turns(postgres_url: str) -> None:
    # psycopg's AsyncConnection guards itself with an asyncio.Lock, which asks for
    # asyncio's running loop as soon as two tasks contend: on trio that raised.
    conn = await TrioConnection.connect_trio(postgres_url, autocommit=True)
    results: dict[int, object] = {}

    async def query(i: int) -> None:
        cur = await conn.execute("SELECT %s::int, pg_sleep(0.001)", (i,))
        results[i] = (await cur.fetchone() or (None,))[0]

    try:
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(query, i)
    finally:
        await conn.close()
    assert results == {i: i for i in range(20)}


async def test_notifications_wake_a_waiting_task(postgres_url: str) -> None:
    listener = await TrioConnection.connect_trio(postgres_url, autocommit=True)
    sender = await TrioConnection.connect_trio(postgres_url, autocommit=True)
    got: list[str] = []
    try:
        await listener.execute("LISTEN wake")

        async def listen(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            async for note in listener.notifies(stop_after=3, timeout=30):
                got.append(note.payload)

        async with trio.open_nursery() as nursery:
            await nursery.start(listen)
            for i in range(3):
                await sender.execute(f"NOTIFY wake, 'n{i}'")
        assert got == ["n0", "n1", "n2"]
        # a timeout ends the wait without a notification
        t0 = time.monotonic()
        async for _ in listener.notifies(timeout=0.05):
            raise AssertionError("no notification was sent")
        assert time.monotonic() - t0 < 5
    finally:
        await listener.close()
        await sender.close()


async def test_cancelled_query_closes_the_connection(postgres_url: str) -> None:
    conn = await TrioConnection.connect_trio(postgres_url, autocommit=True)
    with trio.move_on_after(0.05) as scope:
        await conn.execute("SELECT pg_sleep(30)")
    assert scope.cancelled_caught
    # the protocol was abandoned mid-query: the connection is closed, not reused
    assert conn.closed
    with pytest.raises(psycopg.OperationalError):
        await conn.execute("SELECT 1")


async def test_connection_failure_names_the_server(postgres_url: str) -> None:
    bad = postgres_url.rsplit(":", 1)[0] + ":1/nowhere"  # port 1: nothing listens
    with pytest.raises(psycopg.OperationalError, match=r"127\.0\.0\.1"):
        await TrioConnection.connect_trio(bad)
