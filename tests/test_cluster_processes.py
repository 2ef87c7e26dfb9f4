"""Plain processes of a cluster's nodes: cluster names during a store outage, links and
monitors across nodes when a node is lost, pids of nodes no longer in the cluster, the
bookkeeping of remote processes (garrison/cluster/_remote.py, _names.py), and links and
monitors between plain processes and workflows other nodes run
(garrison/hosts/workflow/_elsewhere.py, Router.linked_exit)."""

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
from harness import Node

import garrison
from garrison import EventKind, Pid, ProcessError, StoreError, process, workflow
from garrison.persistence import PostgresStore

LEASE = 1.0


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop()


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
        with pytest.raises(ProcessError, match="did not stop within 1s of CANCEL"):
            await a.wait(stubborn)
        other = await a.spawn(_ignores_cancel)
        with trio.fail_after(10):
            took, alive = await b.wait(await b.spawn(stops, other, "terminate"))
        assert not alive


# ---------------------------------------------------------------- links with workflows
async def doomed(how: str) -> str:
    """A plain process that ends as its first message says."""
    await process.inbox().receive()
    if how == "fail":
        raise RuntimeError("boom")
    return "done"


async def links_out(targets: list[str], trap: bool, expect: int = 0) -> list[list[object]]:
    """A workflow that links to (and, trapping, monitors) the given pids; trapping, it
    returns the first ``expect`` events it reads."""
    process.set_options(trap_links=trap)
    for target in targets:
        process.link(Pid.parse(target))
        if trap:
            process.monitor(Pid.parse(target))
    got: list[list[object]] = []
    while True:
        if trap:
            ev = await process.events().receive(timeout=60)
            if ev is None:
                return got
            got.append([str(ev.kind), str(ev.pid), ev.error.type if ev.error else None])
            if len(got) == expect:
                return got
        else:
            await workflow.sleep(3600)


async def ends_when_told() -> str:
    """A workflow that ends as its first message says."""
    msg = await process.inbox().receive()
    if msg.payload == "fail":
        raise RuntimeError("workflow boom")
    return "ok"


def _kinds(events: list[list[object]]) -> list[tuple[object, object, object]]:
    return sorted(((kind, pid, why) for kind, pid, why in events), key=str)


async def test_a_workflow_linked_to_a_process_of_another_node_hears_of_its_end(
        postgres_url: str) -> None:
    """A workflow linked to (or monitoring) a plain process of another node never heard
    of its end: the process's node treated the workflow pid as its own, found no such
    workflow there and dropped the linked failure (the EXIT as a dead letter). A
    non-trapping workflow kept running. Now both go to the node that runs it."""
    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
        p = await a.spawn(doomed, "fail")
        await b.start_workflow(links_out, [str(p)], False, id="plain")
        await trio.sleep(0.3)
        await a.send(p, "go")
        with pytest.raises(garrison.WorkflowFailed, match=r"LinkedProcessFailed.*boom"):
            with trio.fail_after(10):
                await b.workflow("plain").result()

        # trapping: LINK_DOWN for the failure, EXIT for each (monitors), nothing for
        # the normal end but its EXIT
        bad, good = await a.spawn(doomed, "fail"), await a.spawn(doomed, "ok")
        await b.start_workflow(links_out, [str(bad), str(good)], True, 3, id="trap")
        await trio.sleep(0.3)
        await a.send(bad, "go")
        await a.send(good, "go")
        with trio.fail_after(10):
            got = await b.workflow("trap").result()
        assert _kinds(got) == sorted([
            ("EXIT", str(bad), "RuntimeError"), ("LINK_DOWN", str(bad), "RuntimeError"),
            ("EXIT", str(good), None)], key=str), got


async def links_in(target: str, trap: bool, then: str) -> object:
    """A plain process linked to a workflow: ``then`` says what it does next."""
    process.set_options(trap_links=trap)
    process.link(Pid.parse(target))
    if then == "unlink":
        process.unlink(Pid.parse(target))
    msg = await process.inbox().receive()  # (the test says when)
    if then == "fail":
        raise RuntimeError("process boom")
    if trap:
        ev = await process.events().receive(timeout=float(msg.payload))
        return None if ev is None else (str(ev.kind), str(ev.pid),
                                        ev.error.type if ev.error else None)
    await trio.sleep_forever()
    return None


async def test_a_process_links_to_a_workflow_another_node_runs(postgres_url: str) -> None:
    """A link to a workflow another node runs acted at once as on a process that is gone
    (noproc). Now it is a link: the workflow's failure (read from the store) ends the
    process or reaches it as LINK_DOWN, a normal end only drops the link, and the
    process's failure ends the workflow (or reaches it as LINK_DOWN when it traps), on
    the node that runs it. Nothing is left watched on the process's node."""

    async def ended(node: Any, pid: Pid) -> Any:
        with trio.fail_after(10):
            try:
                return await node.wait(pid)
            except ProcessError as exc:
                return exc.error.type if exc.error else exc

    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
        # the workflow fails: a process that does not trap ends, one that traps hears
        wfail = await b.start_workflow(ends_when_told, id="wfail")
        dies = await a.spawn(links_in, str(wfail), False, "wait")
        hears = await a.spawn(links_in, str(wfail), True, "wait")
        unlinked = await a.spawn(links_in, str(wfail), True, "unlink")
        await trio.sleep(0.3)
        assert a.process_info(dies).alive
        await b.send(wfail, "x", "fail")
        assert await ended(a, dies) == "LinkedProcessFailed"
        await a.send(hears, "when", 10)
        assert await ended(a, hears) == ("LINK_DOWN", str(wfail), "RuntimeError")
        await a.send(unlinked, "when", 0.5)
        assert await ended(a, unlinked) is None  # (it heard nothing)

        # a normal end only drops the link
        wok = await b.start_workflow(ends_when_told, id="wok")
        calm = await a.spawn(links_in, str(wok), True, "wait")
        await trio.sleep(0.3)
        await b.send(wok, "x", "ok")
        assert await b.workflow("wok").result() == "ok"
        await a.send(calm, "when", 0.5)
        assert await ended(a, calm) is None
        assert a.process_info(calm).alive is False

        # the process fails: the workflow fails, or hears when it traps
        victim = await b.start_workflow(links_out, [], False, id="victim")
        trapper = await b.start_workflow(links_out, [], True, 1, id="trapper")
        await trio.sleep(0.3)
        killers = [await a.spawn(links_in, str(w), False, "fail") for w in (victim, trapper)]
        await trio.sleep(0.3)
        for k in killers:
            await a.send(k, "go")
        with pytest.raises(garrison.WorkflowFailed, match=r"LinkedProcessFailed.*process boom"):
            with trio.fail_after(10):
                await b.workflow("victim").result()
        with trio.fail_after(10):
            got = await b.workflow("trapper").result()
        assert got == [["LINK_DOWN", str(killers[1]), "RuntimeError"]]
        with trio.fail_after(5):  # nothing of them stays watched on a
            while a.hosts["workflows"].elsewhere.watched:
                await trio.sleep(0.05)


async def test_a_workflow_linked_to_a_process_of_a_lost_node_hears_noconnection(
        postgres_url: str, nodes: list[Node]) -> None:
    """A workflow's own link to (and monitor of) a plain process of another node acts
    when that node is lost, as a plain process's do: noconnection."""
    a = Node.start(postgres_url, "a", LEASE, echo=True)
    nodes.append(a)
    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE) as node:
        with trio.fail_after(30):
            while (echo := node.lookup("echo")) is None:
                await trio.sleep(0.05)
        await node.start_workflow(links_out, [str(echo)], True, 2, id="trap")
        await node.start_workflow(links_out, [str(echo)], False, id="plain")
        await trio.sleep(0.5)
        a.kill()
        with trio.fail_after(2 * LEASE + 10):
            got = await node.workflow("trap").result()
            with pytest.raises(garrison.WorkflowFailed, match="noconnection"):
                await node.workflow("plain").result()
        assert _kinds(got) == sorted([("EXIT", str(echo), "noconnection"),
                                      ("LINK_DOWN", str(echo), "noconnection")], key=str)


async def links_back(other: str) -> str:
    """A workflow that links to ``other``, then ends as its first message says."""
    process.link(Pid.parse(other))
    msg = await process.inbox().receive()
    if msg.payload == "fail":
        raise RuntimeError("workflow boom")
    return "ok"


async def traps_for(seconds: float) -> list[tuple[object, object, object]]:
    """A process that links to the pid its first message names (trapping) and returns
    the events of the next ``seconds``."""
    process.set_options(trap_links=True)
    msg = await process.inbox().receive()
    process.link(Pid.parse(msg.payload))
    got: list[tuple[object, object, object]] = []
    with trio.move_on_after(seconds):
        async for ev in process.events():
            got.append((str(ev.kind), str(ev.pid), ev.error.type if ev.error else None))
    return got


async def test_links_to_workflows_elsewhere_act_once_and_not_on_an_orderly_close(
        postgres_url: str) -> None:
    """Found in review of the first version: a link both sides made (a process of a to
    a workflow of b, and the workflow to the process) gave two LINK_DOWN for one end
    (b's own link and a's watch both acted); closing a in order failed b's workflow (its
    linked process ended for the node's shutdown, forwarded as a failure); and a
    workflow linking to (or monitoring) a process of another node that had ended
    already never heard noproc (the answer went to a node named by the workflow id)."""
    async with garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
        async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a:
            p = await a.spawn(traps_for, 3.0)
            w = await b.start_workflow(links_back, str(p), id="mutual")
            await trio.sleep(0.3)
            await a.send(p, "target", str(w))
            await trio.sleep(0.5)
            await b.send(w, "x", "fail")
            with trio.fail_after(10):
                got = await a.wait(p)
            assert got == [("LINK_DOWN", str(w), "RuntimeError")]

            gone = await a.spawn(doomed, "ok")
            await a.send(gone, "go")
            await a.wait(gone)
            await b.start_workflow(links_out, [str(gone)], True, 2, id="late")
            await b.start_workflow(links_out, [str(gone)], False, id="late-plain")
            with trio.fail_after(10):
                assert _kinds(await b.workflow("late").result()) == sorted(
                    [("EXIT", str(gone), "noproc"), ("LINK_DOWN", str(gone), "noproc")],
                    key=str)
                with pytest.raises(garrison.WorkflowFailed, match="noproc"):
                    await b.workflow("late-plain").result()

            stays = await b.start_workflow(ends_when_told, id="stays")
            await a.spawn(links_in, str(stays), False, "wait")
            await trio.sleep(0.5)
        await trio.sleep(1.0)  # (a closed: its process ended for the shutdown)
        assert b.workflow("stays").status() == "waiting"
        await b.send(stays, "x", "ok")
        assert await b.workflow("stays").result() == "ok"


async def test_links_to_workflows_elsewhere_never_hold_up_the_node_during_an_outage(
        own_server: Any) -> None:
    """Found in review of the first version: the node that forwards a process's linked
    exit (or an EXIT) to a workflow another node runs read and wrote the store in the
    node's thread, at the process's exit: with the server out of reach every process
    and timer of the node stood still for up to ``retry_for`` (9 s here, 18 s for two).
    So did the watch of a linked workflow's end, once per round."""
    url = _postgres.create_db(own_server, "links_outage")
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await trio.sleep(0.05)

    async with garrison.open_node(store=PostgresStore(url, retry_for=10), name="b",
                                  lease="30s") as b, \
            garrison.open_node(store=PostgresStore(url, retry_for=10), name="a",
                               lease="30s") as a, trio.open_nursery() as nursery:
        w = await b.start_workflow(ends_when_told, id="w")
        fails = await a.spawn(links_in, str(w), False, "fail")  # its exit: a linked exit
        await a.spawn(links_in, str(w), True, "wait")  # (a watches w all along)
        ends = await a.spawn(doomed, "ok")
        await b.start_workflow(links_out, [str(ends)], True, 1, id="m")  # gets an EXIT
        await trio.sleep(0.5)
        await trio.to_thread.run_sync(_postgres.pause, own_server)
        try:
            nursery.start_soon(ticker)
            await trio.sleep(0.2)
            await a.send(fails, "go")
            await a.send(ends, "go")
            with trio.fail_after(5):
                with pytest.raises(ProcessError):
                    await a.wait(fails)
                await a.wait(ends)
            await trio.sleep(3)  # (the watch of w reads the store meanwhile)
            gaps = [y - x for x, y in itertools.pairwise(ticks)]
            assert max(gaps) < 1.5, max(gaps)
        finally:
            await trio.to_thread.run_sync(_postgres.resume, own_server)
        nursery.cancel_scope.cancel()
        # what waited for the store lands once it is back
        with pytest.raises(garrison.WorkflowFailed, match="LinkedProcessFailed"):
            with trio.fail_after(30):
                await b.workflow("w").result()
        with trio.fail_after(30):
            assert await b.workflow("m").result() == [["EXIT", str(ends), None]]
