"""A node's first SIGINT or SIGTERM while its PostgreSQL server does not answer
(stalled or down): real node processes (tests/cluster/node.py) on a server of the
test's own. Apart from test_cluster.py so that they run beside it."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from harness import Look, Node, wait_for


def _finished(look: Look, ids: list[str]) -> bool:
    statuses = look.statuses()
    return all(statuses.get(w) == "completed" for w in ids)


def _check_journals(look: Look, ids: list[str], steps: int) -> None:
    """Every step recorded once, in order, with the exact result."""
    for wid in ids:
        recorded = look.steps(wid)
        assert [i for i, _ in recorded] == list(range(steps)), (wid, recorded)
        assert look.result(wid) == list(range(steps)), wid


@pytest.mark.parametrize("outage", ["stalled", "down"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_node_stops_on_its_first_signal_while_its_server_does_not_answer(
        own_server: Any, nodes: list[Node], outage: str, signum: int) -> None:
    """The first SIGINT or SIGTERM (a drain) stops a node within seconds while its
    server does not answer: stalled (every server process stopped, the connections
    open) the node ran on until the server answered again; down, it waited out the
    store's ``retry_for`` (30 s), and a drain, which first wrote its status, for ever.
    The stop waits at most ``STOP_WAIT`` for the server (2 s here, the node's own 5 s:
    each wait for it is what the stop's time is); the next node resumes every workflow
    from its journal, each step recorded once."""
    import _postgres

    url = _postgres.create_db(own_server, "outage")
    lease, stop_wait = 3.0, 2.0
    ids = [f"w{i}" for i in range(6)]
    a = Node.start(url, "a", lease, start=len(ids), steps=40, delay=0.05,
                   stop_wait=stop_wait)
    nodes.append(a)
    look = Look(url)
    try:
        wait_for(lambda: all(len(look.steps(w)) >= 2 for w in ids), 30, "progress on a")
    finally:
        look.close()
    (_postgres.stall if outage == "stalled" else _postgres.pause)(own_server)
    try:
        time.sleep(0.5)  # (writes in flight meet the outage)
        start = time.monotonic()
        a.proc.send_signal(signum)
        code = a.proc.wait(lease + 2 * stop_wait + 10)  # (it ran on: TimeoutExpired)
        took = time.monotonic() - start
    finally:
        (_postgres.unstall if outage == "stalled" else _postgres.resume)(own_server)
    assert code == 0, a.stderr()
    assert took < lease + 2 * stop_wait + 5, (took, a.stderr())
    assert "Traceback" not in a.stderr()
    # (helper-222: a round of the stopping node, which returns at once, said so)
    assert "cluster rounds work again" not in a.stderr(), a.stderr()
    b = Node.start(url, "b", lease)
    nodes.append(b)
    look = Look(url)
    try:
        wait_for(lambda: _finished(look, ids), 60, "every workflow to finish on b")
        _check_journals(look, ids, 40)
    finally:
        look.close()


async def test_an_idle_node_closes_while_its_server_is_stalled(
        own_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No workflow ran, so nothing waited when the stop's time was up: the store's close
    then waited for ever on the server (releasing its locks), as the watch had ended
    once the close began. (``STOP_WAIT`` is 2 s here, the node's own 5 s: the close
    waits it out.)"""
    import _postgres
    import trio

    import garrison
    import garrison._node

    monkeypatch.setattr(garrison._node, "STOP_WAIT", 2.0)
    STOP_WAIT = garrison._node.STOP_WAIT
    url = _postgres.create_db(own_server, "idle")
    try:
        async with garrison.open_node(store=url, name="a", lease="3s"):
            await trio.sleep(0.2)
            _postgres.stall(own_server)
            began = time.monotonic()
        assert time.monotonic() - began < 2 * STOP_WAIT + 5  # (for ever: the test's timeout)
    finally:
        _postgres.unstall(own_server)


def test_a_second_signal_forces_the_exit_while_a_read_waits_for_a_stalled_server(
        own_server: Any, tmp_path: Path) -> None:
    """The root read a workflow's state in a loop (a read in the node's own thread);
    with the server stalled, no signal was acted on, the second neither: only SIGKILL
    ended it. The second one exits at once, from its handler."""
    import os
    import subprocess

    import _postgres

    url = _postgres.create_db(own_server, "reader")
    (tmp_path / "reader.py").write_text(
        "import trio, garrison\n"
        "from garrison import process\n"
        "async def waiter() -> str:\n"
        "    await process.inbox().receive()\n"
        "    return 'got'\n"
        "async def main():\n"
        "    node = garrison.current_node()\n"
        "    await node.start_workflow(waiter, id='w0')\n"
        "    print('started', flush=True)\n"
        "    while True:\n"
        "        node.workflow('w0').state('k')\n"
        "        await trio.sleep(0.05)\n")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "garrison", "run", "reader:main", "--store",
                             url], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": f"{root}:{tmp_path}"})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        _postgres.stall(own_server)
        time.sleep(0.5)  # (a read under way now waits for ever)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130  # (it ran on: TimeoutExpired)
        assert "received SIGINT again: forcing an immediate stop" in proc.stderr.read()
    finally:
        _postgres.unstall(own_server)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_after_an_outage_past_the_lease_the_workflows_spread_over_the_nodes_again(
        own_server: Any, nodes: list[Node]) -> None:
    """The server down past the lease: every node's lease lapses and its workflows
    stop. The first node to join again took every workflow (the others were not live
    yet, so its fair share was all of them), the others none. A node joining again
    after its lease lapsed waits a moment before it claims, for the nodes it saw live
    to join again too (see the next test); one that its last round had not seen yet, or
    slower than a lease, gets its share from the balancing looks after (two looks, 6 s
    apart here; a loaded CI run once read 7, 4 and 1 before them)."""
    import collections

    import _postgres

    url = _postgres.create_db(own_server, "spread")
    lease = 2.0
    for name in "abc":
        nodes.append(Node.start(url, name, lease, start=4, prefix=name, steps=1000,
                                delay=0.05))
    look = Look(url)
    try:
        wait_for(lambda: len(look.owners()) == 12, 30, "the twelve workflows")
        _postgres.pause(own_server)
        try:
            time.sleep(lease + 1.5)
        finally:
            _postgres.resume(own_server)
        look.close()
        look = Look(url)
        wait_for(lambda: None not in look.live_owners().values(), 30,
                 "every workflow owned by a live node again")
        held = collections.Counter(look.live_owners().values())
        assert max(held.values()) < 12, held  # not all on the first node back

        def spread() -> bool:
            now = collections.Counter(look.live_owners().values())
            return sorted(now) == ["a", "b", "c"] and min(now.values()) >= 2

        wait_for(spread, 40, "the workflows spread over the three nodes")
    finally:
        look.close()


def test_after_an_outage_a_node_back_first_waits_for_the_others_before_it_claims(
        own_server: Any, nodes: list[Node]) -> None:
    """The server down past the lease, and node c held up (SIGSTOP) until after a and b
    had joined again and waited their rejoin rounds: the first of them back claimed
    half the workflows (its share with one other node live), and only the balancing
    looks evened them out (a lease and more later). A node joining again now waits, one
    lease at most, for the nodes it saw live before its lease lapsed: when every
    workflow is owned again, they are spread evenly."""
    import collections

    import _postgres

    url = _postgres.create_db(own_server, "late")
    lease = 8.0
    for name in "abc":
        nodes.append(Node.start(url, name, lease, start=4, prefix=name, steps=1000,
                                delay=0.05))
    late = nodes[-1].proc
    look = Look(url)
    try:
        wait_for(lambda: len(look.owners()) == 12
                 and all(len(look.steps(w)) > 0 for w in look.owners()), 30,
                 "the twelve workflows running")
        time.sleep(lease / 3 + 1)  # (a round of each node sees the other two live)
        _postgres.pause(own_server)
        late.send_signal(signal.SIGSTOP)
        try:
            try:
                time.sleep(lease + 1.5)
            finally:
                _postgres.resume(own_server)
            time.sleep(4.5)  # (past the rejoin rounds of a and b, within their lease)
        finally:
            late.send_signal(signal.SIGCONT)
        look.close()
        look = Look(url)
        wait_for(lambda: None not in look.live_owners().values(), 30,
                 "every workflow owned by a live node again")
        held = collections.Counter(look.live_owners().values())
        # (an even spread is 4 each; before, 6, 3 and 3: the first node back, seeing
        # one other live, took half)
        assert sorted(held) == ["a", "b", "c"] and max(held.values()) <= 5, held
    finally:
        look.close()


async def test_stats_do_not_wait_for_a_stalled_server(own_server: Any) -> None:
    """``node.stats()`` (the console's node page every second, each metrics scrape)
    counted a cluster's pending workflows with a query in the node's thread: with the
    server stalled, that froze every process and workflow of the node, and the console,
    until the server answered. The count is made in a worker thread."""
    import threading

    import _postgres
    import trio

    import garrison

    url = _postgres.create_db(own_server, "stats")
    async with garrison.open_node(store=url, name="a", lease="30s") as node:
        queue = node.hosts["workflows"].queue
        node.stats()
        await trio.sleep(0.5)  # (the first count, made in a worker thread)
        queue.stale()  # (a change this node made: counted again at the next ask)
        _postgres.stall(own_server)
        # (a count that waited for the server would take until it answers: over 1 s)
        wake = threading.Timer(2, _postgres.unstall, args=(own_server,))
        wake.start()
        try:
            began = time.monotonic()
            assert node.stats()["workflow_queues"]["workflows"]["pending"] == 0
            took = time.monotonic() - began
        finally:
            wake.join()
        assert took < 1, took


async def test_a_schedule_s_reads_do_not_stop_the_node_while_its_server_is_away(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A tick reads the store (in a cluster, whether the schedule's last run, on another
    node maybe, has finished): in the node's thread, so with the database refusing
    connections every process, timer and signal handler of the node stood still for
    the store's ``retry_for``, and then the read's StoreError ended the node's block.
    The read is made in a worker thread; its failure is logged, and the tick is acted on
    again later."""
    import logging

    import psycopg
    import schedule_app
    import trio

    import garrison
    from garrison._node import STOP_WAIT
    from garrison.persistence import PostgresStore

    dbname = postgres_url.rsplit("/", 1)[1]
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"

    def refuse(refused: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS {str(not refused).lower()}")
            if refused:
                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = %s", (dbname,))

    caplog.set_level(logging.ERROR, logger="garrison.schedules")
    store = PostgresStore(postgres_url, retry_for=1)
    try:
        async with garrison.open_node(store=store, name="a", lease="10s") as node:
            host = node.hosts["workflows"]
            await node.schedule("tick", schedule_app.job, every="1s")
            with trio.fail_after(5):  # (a run ended: the next tick reads the store)
                while not host.scheduler.counts["started"] or host.active:
                    await trio.sleep(0.02)
            await trio.to_thread.run_sync(refuse, True)
            try:
                gaps, last = [0.0], time.monotonic()
                with trio.fail_after(4):  # (the next tick, and its read's retry_for)
                    while not any("cannot read its schedules" in m
                                  for m in caplog.messages):
                        await trio.sleep(0.02)
                        gaps.append(time.monotonic() - last)
                        last = time.monotonic()
                assert max(gaps) < 0.5, max(gaps)
                began = time.monotonic()
            except BaseException:
                await trio.to_thread.run_sync(refuse, False)
                raise
        assert time.monotonic() - began < 2 * STOP_WAIT
        await trio.to_thread.run_sync(refuse, False)
    finally:
        store.close()


async def test_a_lock_held_on_the_workflows_keeps_the_lease_and_leaks_no_session(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Another session holds ``workflows`` locked (an operator's ``LOCK TABLE``, a
    ``VACUUM FULL``): each cluster round's claim waited for it until the round's bound
    (lease/2), then the node dropped the connection, whose server session went on
    waiting in the lock's queue, one more at every round (a long maintenance filled
    ``max_connections``); the round's failure said the server did not answer, and with
    a short lease the wait and the pause after it outlasted three quarters of the
    lease, so the node took its lease for lost though its renewals went through. Now
    the server ends the wait (the session's ``lock_timeout``), the session is kept, the
    lease too, the log names the lock, and the workflow goes on once it is released.
    (Real time: several rounds of a 3 s lease.)"""
    import logging
    import threading

    import cluster_app
    import psycopg
    import trio

    import garrison

    caplog.set_level(logging.INFO, logger="garrison.cluster")
    held = threading.Event()
    release = threading.Event()
    waiting: set[int] = set()  # the sessions seen in the lock's queue

    def hold() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as holder, holder.transaction():
            holder.execute("LOCK TABLE garrison.workflows IN ACCESS EXCLUSIVE MODE")
            held.set()
            while not release.wait(0.25):
                waiting.update(pid for (pid,) in holder.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = "
                    "current_database() AND wait_event_type = 'Lock'"))

    async with garrison.open_node(store=postgres_url, name="a", lease="3s") as node:
        epoch = node._members[0].epoch
        await node.start_workflow(cluster_app.mailbox, 1, id="w1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, hold)
            await trio.to_thread.run_sync(held.wait)
            await trio.sleep(7.0)
            release.set()
        assert node._members[0].epoch == epoch, caplog.text  # its lease held
        # the node's writer (a commit waits on), its cluster session and its take of the
        # wakeups (a session of its own, whose read joins the workflows), each kept: not
        # one more at each round
        assert len(waiting) <= 3, waiting
        assert "lost its lease" not in caplog.text
        assert "a lock another session holds on the store's tables was not released " \
            "within 0.5s (lock_timeout)" in caplog.text, caplog.text
        await node.workflow("w1").signal("m", "done")
        with trio.fail_after(10):
            assert await node.workflow("w1").result() == ["done"]


async def test_a_read_waiting_for_a_lock_does_not_hold_the_lease_renewals(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A read of the node's (a console page, a handle's ``state()``) waiting on the
    store's read connection for a lock another session holds on ``workflows`` held
    the cluster's rounds too: they read the live nodes on that connection, so the
    node renewed its lease no more and took it for lost (its workflows stopped),
    saying nothing of why. The rounds read the nodes on their own connection now, and
    the lease holds. (Real time: several rounds of a 3 s lease.)"""
    import logging
    import threading

    import cluster_app
    import psycopg
    import trio

    import garrison

    caplog.set_level(logging.INFO, logger="garrison.cluster")
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as holder, holder.transaction():
            holder.execute("LOCK TABLE garrison.workflows IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(30)

    async with garrison.open_node(store=postgres_url, name="a", lease="3s") as node:
        epoch = node._members[0].epoch
        await node.start_workflow(cluster_app.mailbox, 1, id="w1")
        store = node.hosts["workflows"].store
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, hold)
            await trio.to_thread.run_sync(held.wait)
            # (as the console reads a workflow's row, in a worker thread)
            nursery.start_soon(trio.to_thread.run_sync, store.get_workflow, "w1")
            await trio.sleep(6.0)
            release.set()
        assert "lost its lease" not in caplog.text, caplog.text
        assert node._members[0].epoch == epoch
        await node.workflow("w1").signal("m", "done")
        with trio.fail_after(10):
            assert await node.workflow("w1").result() == ["done"]


async def test_a_tool_s_write_wakes_the_node_while_its_listen_session_hangs(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The server process of the node's LISTEN session stopped (SIGSTOP; a hung disk):
    its connection stayed open without a word, so a tool's signal, queued in the
    store, woke the workflow only once that process ran again, for ever if it did
    not, and nothing said so. Silent for ``LISTEN_CHECK`` (1 s here), the session is
    asked whether it answers (given ``PROBE_WAIT``, 1 s here); it does not, so the
    node says so, listens on a new session and reads what tools wrote meanwhile.
    (Real time.)"""
    import logging
    import os
    import signal

    import cluster_app
    import psycopg
    import trio

    import garrison
    from garrison import _store_tools
    from garrison.persistence import PostgresStore, _postgres

    monkeypatch.setattr(_postgres, "LISTEN_CHECK", 1.0)
    monkeypatch.setattr(_postgres, "PROBE_WAIT", 1.0)
    caplog.set_level(logging.WARNING, logger="garrison.store")
    async with garrison.open_node(store=postgres_url, name="a", lease="3s") as node:
        await node.start_workflow(cluster_app.mailbox, 1, id="m1")
        await trio.sleep(0.5)  # (its LISTEN session is open)
        with psycopg.connect(postgres_url, autocommit=True) as c:
            rows = c.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                "query = 'LISTEN \"garrison:garrison\"' AND application_name LIKE %s",
                (f"%:{os.getpid()}",)).fetchall()
        assert len(rows) == 1, rows
        pid = int(rows[0][0])
        os.kill(pid, signal.SIGSTOP)
        try:
            with PostgresStore(postgres_url, lock=False) as tool:
                _store_tools.signal(tool, "m1", "m", "hi")
            with trio.fail_after(6):  # (for ever: the test's timeout)
                assert await node.workflow("m1").result() == ["hi"]
        finally:
            os.kill(pid, signal.SIGCONT)
    said = [r.getMessage() for r in caplog.records if "LISTEN session" in r.getMessage()]
    assert said == [
        f"store {node.hosts['workflows'].store.path!r}: its LISTEN session (pid {pid} "
        "on the server) did not answer within 1s: listening on a new session (a "
        "tool's writes wake this node's workflows through it)"], said


async def test_a_workflow_claimed_by_id_under_a_lock_is_claimed_once_it_is_released(
        postgres_url: str) -> None:
    """A workflow of the node spawned another by its id, waiting ``pending`` in the
    store, on a node whose limits are all taken: the node claims it at once, whatever
    its room (``claim_now``). A lock another session held on ``workflows`` (a ``CREATE
    INDEX``'s, which lets reads through) failed that claim, by the cluster session's
    ``lock_timeout``, and the round forgot it: the workflow stayed pending, its
    spawner waiting for it for ever. The next rounds claim it once the lock is gone.
    (Real time: a few rounds of a 3 s lease.)"""
    import threading

    import cluster_app
    import psycopg
    import trio

    import garrison

    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as holder, holder.transaction():
            holder.execute("LOCK TABLE garrison.workflows IN SHARE MODE")
            held.set()
            release.wait(30)

    async with garrison.open_node(store=postgres_url, name="a", lease="3s",
                                  max_concurrent=1) as node:
        member = node._members[0]
        store = node.hosts["workflows"].store
        await node.start_workflow(cluster_app.mailbox, 1, id="w1")
        await node.start_workflow(cluster_app.mailbox, 1, id="c")  # (full: the store's)
        with trio.fail_after(10):  # (its release by the rounds has landed)
            while store.get_workflow("c").status != "pending" or \
                    member.pg.owner_of("c") is not None:
                await trio.sleep(0.05)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, hold)
            await trio.to_thread.run_sync(held.wait)
            node.hosts["workflows"].queue.children.add("c")  # (as a workflow here
            member.claim_now("c")  # spawning it by id: ``_child_waiting``)
            await trio.sleep(2.0)  # (a round's claim of it waited for the lock, and failed)
            release.set()
        with trio.fail_after(10):
            while member.pg.owner_of("c") != member.epoch:
                await trio.sleep(0.05)
        await node.workflow("c").signal("m", "done")
        with trio.fail_after(10):
            assert await node.workflow("c").result() == ["done"]


async def test_a_tool_s_write_notified_during_the_listen_probe_wakes_the_node(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool's signal whose ``NOTIFY`` reaches the node's LISTEN session while it
    answers the probe of a silence (``SELECT 1``): an older psycopg (3.2.3, its issue
    962) drops a notification received outside ``notifies()``, and the node, answered,
    went back to waiting for the next one without reading the table: the workflow
    woke only on some later write of a tool, if ever. A notification that comes as
    the session answers the probe is caught (a handler, which any psycopg calls), and
    the table read. (Real time: ``LISTEN_CHECK`` is 0.5 s here.)"""
    import cluster_app
    import trio

    import garrison
    from garrison import _store_tools
    from garrison.persistence import PostgresStore, _postgres

    monkeypatch.setattr(_postgres, "LISTEN_CHECK", 0.5)
    async with garrison.open_node(store=postgres_url, name="a", lease="3s") as node:
        await node.start_workflow(cluster_app.mailbox, 1, id="m1")
        store = node.hosts["workflows"].store
        with trio.fail_after(5):
            while store._listener is None:
                await trio.sleep(0.05)
        listener = store._listener
        plain = listener.execute
        probes = 0

        async def execute(query: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal probes
            if query != "SELECT 1" or probes:
                return await plain(query, *args, **kwargs)
            probes += 1

            def signal() -> None:
                with PostgresStore(postgres_url, lock=False) as tool:
                    _store_tools.signal(tool, "m1", "m", "hi")

            await trio.to_thread.run_sync(signal)
            await trio.sleep(0.2)  # (its NOTIFY reached the session: read with the probe)
            result = await plain(query, *args, **kwargs)
            listener._notifies_backlog.clear()  # (as an older psycopg drops it)
            return result

        listener.execute = execute
        with trio.fail_after(5):  # (for ever: the test's timeout)
            assert await node.workflow("m1").result() == ["hi"]
        assert probes == 1


async def test_a_node_hears_the_other_nodes_messages_while_a_lock_fails_its_rounds(
        postgres_url: str) -> None:
    """Another session holds ``workflows`` locked (a ``VACUUM FULL``, an operator's
    ``LOCK TABLE``): each round's claim fails by the cluster session's ``lock_timeout``,
    and the node dropped that session at each failure, and with it its ``LISTEN`` of
    the other nodes' messages, which need no table: a message sent to one of its
    processes meanwhile was lost, or, reaching a session kept a moment, held until the
    lock was gone; a ``call`` timed out. The session is kept through such a refusal,
    and the node hands such messages on between its rounds. (Real time: a 3 s lease.)"""
    import threading

    import psycopg
    import trio

    import garrison
    from garrison import process

    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as holder, holder.transaction():
            holder.execute("LOCK TABLE garrison.workflows IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(30)

    async def answers() -> None:
        while True:
            msg = await process.inbox().receive()
            await msg.reply(msg.payload)

    async with garrison.open_node(store=postgres_url, name="a", lease="3s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="3s") as b:
        callee = await a.spawn(answers)

        async def asks(n: int) -> list[Any]:
            got = []
            for i in range(n):
                try:
                    got.append(await process.call(callee, "q", i, timeout="2s"))
                except TimeoutError:
                    got.append("timed out")
            return got

        assert await b.wait(await b.spawn(asks, 1)) == [0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, hold)
            await trio.to_thread.run_sync(held.wait)
            await trio.sleep(1.0)  # (the rounds fail now)
            try:
                with trio.fail_after(20):
                    assert await b.wait(await b.spawn(asks, 4)) == [0, 1, 2, 3]
            finally:
                release.set()
