"""Plain processes of a cluster's nodes: cluster names during a store outage, links and
monitors across nodes when a node is lost, pids of nodes no longer in the cluster, and
the bookkeeping of remote processes (garrison/cluster/_remote.py, _names.py)."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

import _postgres

import garrison
from garrison import EventKind, StoreError, process
from garrison.persistence import PostgresStore


@pytest.fixture
def own_server(postgres_server: Any) -> Iterator[Any]:
    """A PostgreSQL server of the test's own (it is stopped and started again)."""
    server = _postgres.start()
    try:
        yield server
    finally:
        _postgres.stop(server)


async def test_a_cluster_name_holder_ending_during_an_outage_stalls_and_stops_nothing(
        own_server: Any) -> None:
    """A process holding a cluster name ended while the server was down: its exit
    released the name with the store's reads, retried for ``retry_for`` on the event
    loop's thread (the whole node stood still), then the StoreError escaped the exit,
    its monitor got no EXIT and the node died. Now the exit neither waits nor fails
    (the release lands once the store is back); a lookup or register of a cluster
    name during the outage fails at once with StoreError."""
    url = _postgres.create_db(own_server, "names_outage")
    store = PostgresStore(url, retry_for=10)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await trio.sleep(0.05)

    async def holder() -> str:
        process.register("held", scope="cluster")
        await process.inbox().receive()
        return "ended"

    async def watcher(pid: garrison.Pid) -> tuple[object, object]:
        process.monitor(pid)
        ev = await process.events().receive()
        return ev.kind, ev.result

    async def ask(what: str) -> str:
        try:
            if what == "lookup":
                process.lookup("held-elsewhere")
            else:
                process.register(what, scope="cluster")
        except StoreError as exc:
            return "StoreError: " + str(exc)
        return "ok"

    async with garrison.open_node(store=store, name="a", lease="20s") as node, \
            trio.open_nursery() as nursery:
        h = await node.spawn(holder)
        w = await node.spawn(watcher, h)
        await trio.sleep(0.2)
        await trio.to_thread.run_sync(_postgres.pause, own_server)
        try:
            nursery.start_soon(ticker)
            await node.send(h, "end", None)
            with trio.fail_after(30):
                assert await node.wait(w) == (EventKind.EXIT, "ended")
                assert await node.wait(h) == "ended"
                looked = await node.wait(await node.spawn(ask, "lookup"))
                took = await node.wait(await node.spawn(ask, "fresh"))
            assert looked.startswith("StoreError: ") and "held-elsewhere" in looked, looked
            assert took.startswith("StoreError: ") and "'fresh'" in took, took
            await trio.sleep(0.3)
            gaps = [b - a for a, b in itertools.pairwise(ticks)]
            assert max(gaps) < 5, gaps  # (the store's retry_for is 10 s)
        finally:
            await trio.to_thread.run_sync(_postgres.resume, own_server)
        # the release landed once the store was back: the name is free again
        with trio.fail_after(30):
            while await node.wait(await node.spawn(ask, "held")) != "ok":
                await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
