"""A workflow's process side in a cluster, as an adversarial review found it broken:
monitors, links and calls of a node's processes on a workflow that moved to another
node; a cluster name that a node cut off took back from the node now running its
holder; the first send to a pid of a node that left, from a node started later.

Real time (threads, a real PostgreSQL server)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from harness import Look, Node

import garrison
from garrison import process
from garrison.persistence import Transaction


async def ends_when_told() -> str:
    """A workflow that waits for ``go`` and ends as its payload says, never replying
    to the call waiting in its inbox."""
    msg = await process.listen("go").receive()
    if msg.payload == "fail":
        raise RuntimeError("told to fail")
    return "ended without replying"


async def _until(check: Any, what: str, timeout: float = 15.0) -> None:
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {timeout}s: {what}")


async def test_watchers_of_a_workflow_that_moved_hear_of_its_end(postgres_url: str) -> None:
    """Processes of node a monitor, link to (trapping) and call workflow W; a drains,
    W moves to b and ends there. a forgot them as W left (its end went to no one):
    the monitor never got its EXIT, the link never acted, the call waited its whole
    timeout. Now a watches W's end in the store as for a workflow that ran elsewhere
    from the start."""
    async with garrison.open_node(store=postgres_url, name="a", lease="2s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="2s") as b:
        w = await a.start_workflow(ends_when_told, id="W")
        await _until(lambda: a.workflow("W").status() == "waiting", "W waits on a")

        async def monitors() -> list[Any]:
            process.monitor(w)
            ev = await process.events().receive()
            return [str(ev.kind), ev.error.type if ev.error else None]

        async def links() -> list[Any]:
            process.set_options(trap_links=True)
            process.link(w)
            ev = await process.events().receive()
            return [str(ev.kind), ev.error.type if ev.error else None]

        async def calls() -> list[Any]:
            started = time.monotonic()
            try:
                await process.call(w, "q", "question", timeout="60s")
            except garrison.ProcessError as exc:
                return [type(exc).__name__, time.monotonic() - started]
            return ["replied", time.monotonic() - started]

        m, lk, c = await a.spawn(monitors), await a.spawn(links), await a.spawn(calls)
        await trio.sleep(0.3)
        a.drain()
        with trio.fail_after(10):
            await a.drained()
        await _until(lambda: "W" in b.hosts["workflows"].active, "W runs on b")
        await b.workflow("W").signal("go", "fail")
        with trio.fail_after(10):
            try:
                await b.workflow("W").result()
            except garrison.WorkflowFailed:
                pass
        with trio.fail_after(10):
            assert await a.wait(m) == ["EXIT", "RuntimeError"]
            assert await a.wait(lk) == ["LINK_DOWN", "RuntimeError"]
            what, took = await a.wait(c)
        assert what == "ProcessError"
        assert took < 20  # REPLY_GRACE after the end is read, not the 60 s timeout


def _names(look: Look) -> list[tuple[str, str, int]]:
    rows = look.store._query("SELECT name, pid, epoch FROM garrison.names ORDER BY name")
    return [(str(n), str(p), int(e)) for n, p, e in rows]


async def test_a_node_cut_off_keeps_off_the_name_its_workflow_holds_elsewhere(
        postgres_url: str, nodes: list[Node]) -> None:
    """Workflow W holds the cluster name ``leader`` on node a; a is cut off (SIGSTOP)
    past its lease, node c takes W over, and W's replay takes the name under c's
    epoch. a wakes, finds its lease lapsed and stops its copy of W: its release of the
    name deleted c's row (by name and pid), so the name was gone while W ran on c."""
    a = Node.start(postgres_url, "a", 1.0)
    nodes.append(a)
    look = Look(postgres_url)
    try:
        look.store.write(Transaction().create_workflow("W", "cluster_app:leader", []))
        with trio.fail_after(10):
            while _names(look) != [("leader", "workflows/W", a.epoch)]:
                await trio.sleep(0.05)
        async with garrison.open_node(store=postgres_url, name="c", lease="1s") as c:
            a.pause()
            c_epoch = c.hosts["workflows"].ownership.epoch
            with trio.fail_after(15):  # c takes W over; its replay takes the name
                while _names(look) != [("leader", "workflows/W", c_epoch)]:
                    await trio.sleep(0.05)
            a.resume()
            with trio.fail_after(15):  # a finds its lease lapsed and joins again
                while not any(n.name == "a" and n.epoch != a.epoch for n in look.nodes()):
                    await trio.sleep(0.05)
            await trio.sleep(1.0)  # (its release, if any, has landed)
            assert _names(look) == [("leader", "workflows/W", c_epoch)]
            assert str(c.lookup("leader")) == "workflows/W"
            await c.send("leader", "bye")
            with trio.fail_after(10):
                assert await c.workflow("W").result() == "bye"
    finally:
        look.close()


async def sleeper() -> None:
    await trio.sleep_forever()


async def collects(n: int) -> list[Any]:
    got = []
    for _ in range(n):
        msg = await process.inbox().receive()
        got.append(msg.payload)
    return got


async def test_the_first_send_to_a_pid_of_a_node_that_left_is_a_dead_letter(
        postgres_url: str) -> None:
    """Node b starts after node a left; the first send to a pid of a counted as a
    delivered message (b did not know a's incarnation: it asked the store and sent
    meanwhile); the later ones as dead letters. Now the send is held until the store
    answers, and counted then."""
    async with garrison.open_node(store=postgres_url, name="a", lease="1s") as a:
        p = await a.spawn(sleeper)
    async with garrison.open_node(store=postgres_url, name="b", lease="1s") as b:
        for i in range(3):
            await b.send(p, "hello", i)
        await _until(lambda: b.stats()["dead_letters"] == 3, "3 dead letters", 10)
        assert b.stats()["messages"] == 0


async def test_sends_to_a_node_started_before_arrive_in_order(postgres_url: str) -> None:
    """Sends from a node that may not know the other node's incarnation yet (held until
    the store says it is live) arrive, in the order sent, and count as messages."""
    async with garrison.open_node(store=postgres_url, name="a", lease="1s") as a:
        p = await a.spawn(collects, 5)
        async with garrison.open_node(store=postgres_url, name="b", lease="1s") as b:
            before = b.stats()["messages"]
            for i in range(5):
                await b.send(p, "m", i)
            with trio.fail_after(10):
                assert await a.wait(p) == [0, 1, 2, 3, 4]
            assert b.stats()["messages"] - before == 5
            assert b.stats()["dead_letters"] == 0


async def sends_to(to: str, n: int) -> str:
    for i in range(n):
        await process.send(to, "m", i)
    return "sent"


async def test_a_workflow_sends_to_a_plain_process_of_another_node(postgres_url: str) -> None:
    """A workflow's send to a plain pid of another node went to this node's process
    host, which has no such process: a dead letter, never delivered."""
    async with garrison.open_node(store=postgres_url, name="a", lease="1s") as a:
        p = await a.spawn(collects, 3)
        async with garrison.open_node(store=postgres_url, name="b", lease="1s") as b:
            await b.start_workflow(sends_to, str(p), 3, id="s")
            with trio.fail_after(10):
                assert await b.workflow("s").result() == "sent"
                assert await a.wait(p) == [0, 1, 2]
            await _until(lambda: b.stats()["messages"] >= 3, "3 messages counted", 10)
            assert b.stats()["dead_letters"] == 0


async def ends_on_message() -> None:
    """A plain process: returns on ``go``, fails on anything else."""
    msg = await process.inbox().receive()
    if msg.topic != "go":
        raise RuntimeError(f"told to {msg.topic}")


async def watches_then_waits(returns: str, fails: str) -> int:
    """Monitors both processes and links to the one that fails (trapping), hears the
    three events, then waits for a message."""
    process.set_options(trap_links=True)
    events = process.events()
    process.monitor(returns)
    process.monitor(fails)
    process.link(fails)
    for _ in range(3):
        await events.receive()
    await process.inbox().receive()
    return 3


async def test_events_from_another_node_spend_a_workflows_watches(postgres_url: str) -> None:
    """A workflow monitors processes of another node: their ends reach it through the
    store (the process's node does not run the workflow), read into its inbox by its
    own node, which kept the monitors (and their event ids) for good: a long-lived
    workflow watching many processes of other nodes grew without bound."""
    async with garrison.open_node(store=postgres_url, name="a", lease="1s") as a:
        returns, fails = await a.spawn(ends_on_message), await a.spawn(ends_on_message)
        async with garrison.open_node(store=postgres_url, name="b", lease="1s") as b:
            await b.start_workflow(watches_then_waits, str(returns), str(fails), id="w")
            host = b.hosts["workflows"]
            await _until(lambda: "w" in host.active and len(host.active["w"].links or ())
                         == 1 and b.workflow("w").status() == "waiting", "w watches")
            await a.send(returns, "go")
            await a.send(fails, "fail")
            await _until(lambda: host.active["w"].cursor.seq >= 7, "w heard the events")
            wf = host.active["w"]
            # (its last event's record may come a moment before the link it ends is let
            # go of, on a loaded machine: spent for good, not at that instant)
            await _until(lambda: (wf.monitoring or set(), wf.links or set(),
                                  wf.signal_ids or {}) == (set(), set(), {}),
                         "w spent its watches")
            await b.workflow("w").signal("stop")
            with trio.fail_after(10):
                assert await b.workflow("w").result() == 3


def test_a_name_taken_while_a_node_registers_it_names_its_holder(postgres_url: str) -> None:
    """Two nodes register one cluster name at once: the second's insert waits for the
    first's transaction, and once it commits the conflict sees its row, but the
    statement's own snapshot did not, and the refusal read ``already registered in the
    cluster by None``. The holder is read again by a statement of its own."""
    import threading

    import psycopg

    from garrison.persistence import PostgresStore
    from garrison.persistence._pg_cluster import PgCluster

    with PostgresStore(postgres_url) as store, \
            psycopg.connect(postgres_url, autocommit=True) as first, \
            psycopg.connect(postgres_url, autocommit=True) as second:
        first.execute("INSERT INTO garrison.nodes (epoch, name, status, started, heartbeat, "
                      "lease, lease_until) VALUES (7, 'h', 'active', 0, 0, 10, 1e12)")
        got: list[str | None] = []
        with first.transaction():
            first.execute("INSERT INTO garrison.names (name, pid, epoch) "
                          "VALUES ('X', 'workflows/w1', 7)")
            racer = threading.Thread(target=lambda: got.append(
                PgCluster(store).register_name(second, "X", "processes/p2", epoch=7)))
            racer.start()
            deadline = time.monotonic() + 10  # until it waits for this transaction
            while not first.execute("SELECT count(*) FROM pg_locks WHERE NOT granted"
                                    ).fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline and racer.is_alive()
                time.sleep(0.01)
            assert not got
        racer.join(10)
        assert got == ["workflows/w1"]
