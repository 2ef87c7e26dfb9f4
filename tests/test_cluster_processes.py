"""Plain processes of a cluster's nodes: cluster names during a store outage, links and
monitors across nodes when a node is lost, pids of nodes no longer in the cluster, and
the bookkeeping of remote processes (garrison/cluster/_remote.py, _names.py). Links and
monitors between plain processes and workflows other nodes run: test_cluster_links.py."""

from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

import _postgres
from harness import Node

import garrison
from garrison import EventKind, NoSuchProcess, Pid, ProcessError, StoreError, process
from garrison.persistence import PostgresStore

LEASE = 1.0


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


async def test_a_cluster_name_whose_release_is_refused_for_now_is_released_later(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A release of a cluster name the server refused for now (a ``lock_timeout`` while
    another session locked the names table; a read-only moment alike) was given up as
    if it could never succeed: the name stayed held by its dead holder until the node
    restarted. Now it is tried again, past the store's ``retry_for`` too (said once),
    and lands once the lock is gone."""
    caplog.set_level(logging.WARNING, logger="garrison.cluster")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} SET lock_timeout = '50ms'").format(
            sql.Identifier(admin.info.dbname)))
    store = PostgresStore(postgres_url, retry_for=0.2)

    async def holder() -> None:
        process.register("svc", scope="cluster")
        await process.inbox().receive()

    async def takes() -> str:
        try:
            process.register("svc", scope="cluster")
        except (ValueError, StoreError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return "took"

    def held(node: garrison.Node) -> Pid | str | None:
        try:
            return node.lookup("svc")
        except StoreError:
            return "not answered"

    async with garrison.open_node(store=store, name="a", lease="10s") as node:
        h = await node.spawn(holder)
        with trio.fail_after(5):
            while held(node) != h:
                await trio.sleep(0.01)
        locker = await trio.to_thread.run_sync(psycopg.connect, postgres_url)
        try:
            await trio.to_thread.run_sync(
                locker.execute, "LOCK TABLE garrison.names IN ACCESS EXCLUSIVE MODE")
            await node.send(h, "end", None)
            with trio.fail_after(5):
                await node.wait(h)  # (its exit did not wait for the release)
            with trio.fail_after(10):  # (past retry_for: tried again, and said so)
                while not any("still not released after 0.2s" in m for m in caplog.messages):
                    await trio.sleep(0.02)
            refused = await node.wait(await node.spawn(takes))
        finally:
            await trio.to_thread.run_sync(locker.close)  # (rolled back: the lock is gone)
        with trio.fail_after(3):
            while held(node) is not None:
                await trio.sleep(0.02)
        assert await node.wait(await node.spawn(takes)) == "took"
    assert refused.startswith("StoreError: ") and "lock timeout" in refused, refused
    logged = "\n".join(caplog.messages)
    assert "cannot release the cluster name 'svc' of " in logged, logged
    assert "'svc' of " in logged and "still not released after 0.2s" in logged, logged


async def test_links_and_monitors_made_from_a_lost_node_act_on_this_side(
        postgres_url: str, nodes: list[Node]) -> None:
    """A process of node a linked to (and monitored) a process of this node, then a was
    killed: links are two-way, so this side's process gets LINK_DOWN noconnection (it
    traps links), and forgets the dead pid as a link and as a monitor. Only links this
    side had made acted: it got nothing and kept the dead pid for ever."""
    a = Node.start(postgres_url, "a", LEASE, echo=True)
    nodes.append(a)
    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE) as node:
        got: list[tuple[object, object, object]] = []

        async def trapper() -> None:
            process.set_options(trap_links=True)
            async for ev in process.events():
                got.append((ev.kind, ev.pid, ev.error.type if ev.error else None))

        async def watched() -> None:
            await trio.sleep_forever()

        t = await node.spawn(trapper)
        m = await node.spawn(watched)
        linker = Pid.parse(await node.call("echo", "linker", None))
        assert linker.id.endswith("@a"), linker
        assert await node.call(linker, "link", str(t)) == "linked"
        with trio.fail_after(10):  # (the link went before the reply, on one channel)
            while linker not in node.process_info(t).links:
                await trio.sleep(0.01)
        info = node.process_info(t)
        assert linker in info.monitored_by
        a.kill()
        with trio.fail_after(2 * LEASE + 10):
            while not got:
                await trio.sleep(0.02)
        assert got == [(EventKind.LINK_DOWN, linker, "noconnection")]
        info = node.process_info(t)
        assert info.alive and info.links == frozenset() and info.monitored_by == frozenset()
        assert node.process_info(m).monitored_by == frozenset()
        remote = node._router.remote
        assert (remote.linked, remote.watched_by) == ({}, {})


async def _rejoined(node: Any, b: Node, within: float = 15) -> bool:
    """Wait until node ``b`` (paused, resumed) is live again under a new incarnation
    (False if not ``within`` seconds), and ``node`` sees it live again."""
    with trio.move_on_after(within):
        while not any(n.name == "b" and n.epoch != b.epoch for n in node.cluster()):
            await trio.sleep(0.05)
    if not any(n.name == "b" and n.epoch != b.epoch for n in node.cluster()):
        return False
    with trio.fail_after(15):
        while not any(name == "b" for name, _p in node._router.remote.live):
            await trio.sleep(0.05)
    return True


@pytest.mark.parametrize("pause", [0.9, 1.5])
async def test_a_node_whose_lease_lapsed_ends_its_processes_watches_of_others_once(
        postgres_url: str, nodes: list[Node], pause: float) -> None:
    """Processes of node b monitored (and linked to) processes of this node; b was
    paused until its lease lapsed, and joined again. This node dropped b's monitor and
    link as it took b for lost, but b's processes were never told: their watches could
    never fire (the watched processes' ends, later, reached nobody). Now b's watchers
    get ``EXIT`` / ``LINK_DOWN`` ``noconnection`` once, when b takes its own lease for
    lost, and nothing more when the watched processes end. A monitor made again once
    the noconnection came holds (this node answered one asked while it still took b
    for lost with nothing at all: it waited for ever too; and, b paused for less than
    its lease, this node acted on b's loss when it saw b's old incarnation go, after b
    joined again: it dropped that new monitor too). ``pause``: in leases (b takes its
    lease for lost after 3/4 of one; past a whole one this node marks it lost too)."""
    b = Node.start(postgres_url, "b", LEASE, echo=True)
    nodes.append(b)
    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE) as node:
        got: list[tuple[object, ...]] = []

        async def collector() -> None:
            async for msg in process.inbox():
                got.append(tuple(msg.payload))

        async def sink() -> None:
            process.set_options(trap_links=True)  # (b's loss does not end it)
            await trio.sleep_forever()

        async def ender(*pids: Pid) -> None:
            for pid in pids:
                await process.terminate(pid)

        c, s1, s2, s3 = [await node.spawn(f) for f in (collector, sink, sink, sink)]
        await node.call("echo", "watch", [str(s1), "monitor", str(c)])
        await node.call("echo", "watch", [str(s2), "link", str(c)])
        await node.call("echo", "watch", [str(s3), "monitor+", str(c)])
        with trio.fail_after(10):
            while not (node.process_info(s1).monitored_by and node.process_info(s2).links
                       and node.process_info(s3).monitored_by):
                await trio.sleep(0.01)
        b.pause()
        await trio.sleep(pause * LEASE)
        b.resume()
        if not await _rejoined(node, b, within=5 if pause < 1 else 15):
            # b renewed its lease before its own clock took it for lost (paused for
            # less than a lease): nothing was dropped anywhere, the watches hold
            await node.wait(await node.spawn(ender, s1, s2, s3))
            with trio.fail_after(5):
                while len(got) < 3:
                    await trio.sleep(0.02)
            assert sorted(got) == [
                ("link", "LINK_DOWN", str(s2), "Terminated"),
                ("monitor", "EXIT", str(s1), "Terminated"),
                ("monitor+", "EXIT", str(s3), "Terminated")], got
            return
        with trio.fail_after(5):
            while len([e for e in got if e[0] != "monitor+"]) < 2:
                await trio.sleep(0.02)
            while not node.process_info(s3).monitored_by:  # (monitored again)
                await trio.sleep(0.02)
        assert node.process_info(s1).monitored_by == frozenset()
        assert node.process_info(s2).links == frozenset()
        await node.wait(await node.spawn(ender, s1, s2, s3))
        with trio.fail_after(5):
            while ("monitor+", "EXIT", str(s3), "Terminated") not in got:
                await trio.sleep(0.02)
        await trio.sleep(0.5)  # (an EXIT of the sinks would come within it)
        assert sorted(e for e in got if e[0] != "monitor+") == [
            ("link", "LINK_DOWN", str(s2), "noconnection"),
            ("monitor", "EXIT", str(s1), "noconnection")], got
        again = [e for e in got if e[0] == "monitor+"]
        assert again[-1] == ("monitor+", "EXIT", str(s3), "Terminated"), again
        assert {e[3] for e in again[:-1]} == {"noconnection"}, again


async def test_a_rejoined_nodes_old_pids_are_live_again_and_old_watches_end_once(
        postgres_url: str, nodes: list[Node]) -> None:
    """Node b was paused past its lease: this node's monitor of a process of b got
    ``EXIT`` ``noconnection`` and a send to it was a dead letter. b was not restarted:
    its processes ran on, and once it joined again their pids are live again (a call
    is answered, a new monitor gets the real ``EXIT``). b kept the monitor from before
    its loss, so the process's end gave that watcher a second ``EXIT``; now b drops it
    when it takes its own lease for lost."""
    b = Node.start(postgres_url, "b", LEASE, echo=True)
    nodes.append(b)
    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE) as node:
        seen: list[tuple[object, ...]] = []

        watching = trio.Event()

        async def watcher(target: Pid) -> None:
            process.monitor(target)
            watching.set()
            async for ev in process.events():
                seen.append((ev.kind, ev.error.type if ev.error else None, ev.result))

        again = trio.Event()

        async def watch_once(target: Pid) -> tuple[object, ...]:
            process.monitor(target)
            again.set()
            ev = await process.events().receive()
            return ev.kind, ev.error.type if ev.error else None, ev.result

        echo = node.lookup("echo")
        assert echo is not None and echo.id.endswith("@b"), echo
        q = Pid.parse(await node.call("echo", "quitter", None))
        await node.spawn(watcher, q)
        await watching.wait()
        assert await node.call(echo, "call", 1) == 1  # (after the monitor, on one channel)
        b.pause()
        try:
            with trio.fail_after(2 * LEASE + 10):
                while not seen:
                    await trio.sleep(0.02)
            assert seen == [(EventKind.EXIT, "noconnection", None)]
            before = node.stats()["dead_letters"]
            await node.send(q, "lost", 1)  # (a dead pid while b is lost)
            assert node.stats()["dead_letters"] == before + 1
        finally:
            b.resume()
        await _rejoined(node, b)
        with trio.fail_after(10):
            assert await node.call(echo, "call", 2) == 2
            w2 = await node.spawn(watch_once, q)
            await again.wait()
            assert await node.call(echo, "call", 3) == 3  # (the monitor reached b)
            await node.send(q, "bye", 1)
            assert await node.wait(w2) == (EventKind.EXIT, None, "done")
        await trio.sleep(0.3)  # (a second EXIT to the first watcher would come within it)
        assert seen == [(EventKind.EXIT, "noconnection", None)]


async def test_a_pid_of_a_node_no_longer_in_the_cluster_is_a_dead_pid(
        postgres_url: str) -> None:
    """A monitor, link, call or send to a plain pid of a node that left (or was lost)
    never completed: no EXIT, no linked failure, a call waited out its timeout, a send
    was not a dead letter. Now: on a node that saw it leave, and on one that started
    after it had left (it asks the store), the monitor gets EXIT, the link acts (noproc,
    or noconnection if asked while the node still looked live), the call fails with
    ProcessError, and a send is a dead letter."""

    async def idle() -> None:
        await trio.sleep_forever()

    async def watch(target: Pid, how: str) -> tuple[object, object]:
        process.set_options(trap_links=True)
        (process.monitor if how == "monitor" else process.link)(target)
        ev = await process.events().receive()
        return ev.kind, ev.error.type if ev.error else None

    async def check(node: Any, gone: Pid) -> None:
        with trio.fail_after(30):
            kind, why = await node.wait(await node.spawn(watch, gone, "monitor"))
            assert kind is EventKind.EXIT and why in ("noproc", "noconnection"), (kind, why)
            kind, why = await node.wait(await node.spawn(watch, gone, "link"))
            assert kind is EventKind.LINK_DOWN and why in ("noproc", "noconnection")
            with pytest.raises(ProcessError, match=r"noproc|noconnection"):
                await node.call(gone, "x", 1, timeout="60s")
        before = node.stats()["dead_letters"]
        await node.send(gone, "x", 1)
        assert node.stats()["dead_letters"] == before + 1

    async with garrison.open_node(store=postgres_url, name="b", lease=LEASE) as b:
        async with garrison.open_node(store=postgres_url, name="c", lease=LEASE) as c:
            gone = await c.spawn(idle)
        await check(b, gone)
        async with garrison.open_node(store=postgres_url, name="d", lease=LEASE) as d:
            await check(d, gone)


async def test_nothing_of_remote_processes_that_ended_stays_behind(postgres_url: str) -> None:
    """Monitoring, linking to and calling many short-lived processes of another node
    left one entry per remote pid behind (a monitor's empty set, a callee's peer) on
    both nodes."""

    async def short() -> None:
        msg = await process.inbox().receive()
        await msg.reply("hi")

    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="5s") as b:

        async def user() -> int:
            process.set_options(trap_links=True)
            for _ in range(30):
                p = await a.spawn(short)
                process.monitor(p)
                process.link(p)
                assert await process.call(p, "q", timeout="10s") == "hi"
                ev = await process.events().receive(timeout=10)
                assert ev is not None and ev.kind is EventKind.EXIT and ev.ok, ev
            return 30

        def left(node: Any) -> dict[str, int]:
            remote = node._router.remote
            tables = {"watching": remote.watching,
                      "watched_by": getattr(remote, "watched_by", {}),  # (new: incoming)
                      "linked": remote.linked, "peers": remote.peers}
            return {name: len(table) for name, table in tables.items() if table}

        with trio.fail_after(60):
            assert await b.wait(await b.spawn(user)) == 30
        with trio.move_on_after(10):  # (the last linked exit may still be on its way)
            while left(a) or left(b):
                await trio.sleep(0.02)
        assert (left(a), left(b)) == ({}, {})


async def test_a_cluster_name_is_free_when_its_holders_exit_reaches_another_node(
        postgres_url: str) -> None:
    """The release of a cluster name runs off the event loop now; while the store
    answers, it still lands before the holder's EXIT leaves its node, so a process of
    another node that takes the name on that EXIT gets it."""

    async def holder(name: str) -> None:
        process.register(name, scope="cluster")
        await process.inbox().receive()

    async def taker(pid: Pid, name: str) -> str:
        process.monitor(pid)
        ev = await process.events().receive()
        assert ev.kind is EventKind.EXIT
        process.register(name, scope="cluster")
        return "took"

    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
        for i in range(10):
            name = f"solo-{i}"
            h = await a.spawn(holder, name)
            with trio.fail_after(10):
                while b.lookup(name) != h:
                    await trio.sleep(0.01)
            t = await b.spawn(taker, h, name)
            await trio.sleep(0.05)  # (its monitor reached a)
            await a.send(h, "end", None)
            with trio.fail_after(10):
                assert await b.wait(t) == "took"


async def _cleans_up_slowly() -> str:
    """Obeys CANCEL, after a cleanup of half a second."""
    await process.events().receive()
    await trio.sleep(0.5)
    return "cleaned"


async def _ignores_cancel() -> None:
    """Reads its events and ignores CANCEL."""
    process.events()
    await trio.sleep_forever()


async def test_a_remote_cancel_or_terminate_returns_once_the_target_ended(
        postgres_url: str) -> None:
    """``process.cancel`` / ``terminate`` of a process on another node returned at once
    (the target still alive), and a cancel never became a terminate after its timeout;
    now the target's node does them as locally and says when the target has ended."""
    async with garrison.open_node(store=postgres_url, name="na", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="nb", lease="30s") as b:

        async def stops(target: Pid, how: str) -> list[Any]:
            started = time.monotonic()
            if how == "terminate":
                await process.terminate(target)
            else:
                await process.cancel(target, timeout="1s")
            return [round(time.monotonic() - started, 1), a.process_info(target).alive]

        slow = await a.spawn(_cleans_up_slowly)
        with trio.fail_after(10):
            took, alive = await b.wait(await b.spawn(stops, slow, "cancel"))
        assert not alive and took >= 0.5, took  # it waited for the cleanup
        assert await a.wait(slow) == "cleaned"
        stubborn = await a.spawn(_ignores_cancel)
        with trio.fail_after(10):
            took, alive = await b.wait(await b.spawn(stops, stubborn, "cancel"))
        assert not alive and took >= 1.0, took  # terminated after the cancel's timeout
        with pytest.raises(ProcessError, match="did not stop within 1s of its cancel"):
            await a.wait(stubborn)
        other = await a.spawn(_ignores_cancel)
        with trio.fail_after(10):
            took, alive = await b.wait(await b.spawn(stops, other, "terminate"))
        assert not alive


async def test_a_name_no_store_can_hold_is_held_by_nobody(postgres_url: str) -> None:
    """A lookup (or send) of a name with a lone surrogate asked the cluster's store,
    which could not encode it: a StoreError blaming the store (helper-245); register
    refuses such a name, so nobody holds it."""
    async def asks() -> tuple[object, str]:
        found = process.lookup("\ud800")
        try:
            await process.send("\ud800", "hi")
        except NoSuchProcess as exc:
            return found, type(exc).__name__
        return found, "sent"

    async with garrison.open_node(store=postgres_url, name="n", lease="10s") as node:
        assert node.lookup("\ud800") is None
        assert await node.wait(await node.spawn(asks)) == (None, "NoSuchProcess")
