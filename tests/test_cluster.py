"""Clusters: several node processes on one PostgreSQL store (tests/cluster/node.py).

Each test makes a fresh database and runs real node processes on loopback with short
leases (1 s): kill -9, SIGSTOP past the lease, drain, restarts under the same name,
and messages from another node. The journal of every workflow is checked: each step
recorded once, in order, and never by a node after its workflows were taken over.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _stores import no_digit_limit

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from harness import Look, Node, wait_for

import garrison
from garrison import StoreLocked

LEASE = 1.0


def _finished(look: Look, ids: list[str]) -> bool:
    statuses = look.statuses()
    return all(statuses.get(w) == "completed" for w in ids)


def _check_journals(look: Look, ids: list[str], steps: int) -> dict[str, list[str]]:
    """Every step recorded once, in order, with the exact result; who recorded them."""
    writers = {}
    for wid in ids:
        recorded = look.steps(wid)
        assert [i for i, _ in recorded] == list(range(steps)), (wid, recorded)
        assert look.result(wid) == list(range(steps)), wid
        writers[wid] = [node for _, node in recorded]
    return writers


def test_a_killed_nodes_workflows_finish_on_the_others_within_two_leases(
        postgres_url: str, nodes: list[Node]) -> None:
    url = postgres_url
    nodes.append(Node.start(url, "b", LEASE))
    nodes.append(Node.start(url, "c", LEASE))
    look = Look(url)
    ids = [f"w{i}" for i in range(12)]
    a = Node.start(url, "a", LEASE, start=12, steps=30, delay=0.05)
    nodes.append(a)
    try:
        assert set(look.owners().values()) == {"a"}  # started on a: they run there
        wait_for(lambda: all(len(look.steps(w)) >= 3 for w in ids), 20, "progress on a")
        a.kill()
        took = wait_for(lambda: set(look.owners().values()) <= {"b", "c"}, 2 * LEASE + 2,
                        "the takeover")
        assert took <= 2 * LEASE + 0.5, took
        wait_for(lambda: _finished(look, ids), 30, "every workflow to finish")
        writers = _check_journals(look, ids, 30)
        moved_to = {w[-1] for w in writers.values()}
        assert moved_to == {"b", "c"}, writers  # spread over the live nodes
        names = {n.name: n for n in look.nodes()}
        assert set(names) == {"b", "c"}
    finally:
        look.close()


def test_a_node_cut_off_past_its_lease_records_nothing_more_and_stops_at_once(
        postgres_url: str, nodes: list[Node]) -> None:
    url = postgres_url
    ids = [f"w{i}" for i in range(6)]
    a = Node.start(url, "a", LEASE, start=6, steps=40, delay=0.1)
    nodes.append(a)
    b = Node.start(url, "b", LEASE)
    nodes.append(b)
    look = Look(url)
    try:
        wait_for(lambda: all(len(look.steps(w)) >= 2 for w in ids), 20, "progress on a")
        a.pause()  # cut off: no renewal, activities in flight
        took = wait_for(lambda: set(look.owners().values()) == {"b"}, 2 * LEASE + 2,
                        "the takeover")
        assert took <= 2 * LEASE + 0.5
        wait_for(lambda: all("b" in [n for _, n in look.steps(w)] for w in ids), 20,
                 "b to record steps")
        a.resume()  # a wakes: its writes are refused, its workflows stop at once
        wait_for(lambda: _finished(look, ids), 30, "every workflow to finish")
        writers = _check_journals(look, ids, 40)
        for wid, who in writers.items():
            first_b = who.index("b")
            assert set(who[first_b:]) == {"b"}, (wid, who)  # nothing from a after it
        # on waking, a's writes are refused or its lease renewal fails: either way
        # every workflow leaves it at once (not recorded failed), and it joins again
        # (one line says how many left and names the first five, helper-447: each
        # one's line is at DEBUG)
        wait_for(lambda: "node a: 6 workflows left this node as its lease lapsed (" in
                 a.stderr(), 10, "a to stop its workflows")
        named = a.stderr().split("left this node as its lease lapsed (")[1].split(" and ")[0]
        assert set(named.split(", ")) < set(ids), named
        assert "lost its lease: stopping its" in a.stderr()
        # (a round of its cluster thread may fail on waking, the server slow to answer
        # a node that woke past its lease: it says so and goes on; no workflow's does)
        failed = [line for line in a.stderr().splitlines() if "failed" in line
                  and "cluster round failed" not in line
                  and "waiting for the cluster failed" not in line]
        assert not failed, failed
    finally:
        look.close()


def test_sigterm_drains_a_node_without_waiting_out_the_lease(
        postgres_url: str, nodes: list[Node]) -> None:
    url = postgres_url
    lease = 30.0  # a takeover by lease would take 30 s: a drain does not wait for it
    ids = [f"w{i}" for i in range(8)]
    a = Node.start(url, "a", lease, start=8, steps=20, delay=0.4)
    nodes.append(a)
    nodes.append(Node.start(url, "b", lease))
    look = Look(url)
    try:
        wait_for(lambda: all(len(look.steps(w)) >= 2 for w in ids), 20, "progress on a")
        start = time.monotonic()
        a.drain()
        assert a.readline() == "drained"
        assert a.proc.wait(10) == 0
        # (on a loaded machine a workflow far ahead may finish on a while it drains)
        ended_on_a = {w for w, status in look.statuses().items() if status == "completed"}
        wait_for(lambda: _finished(look, ids), lease, "every workflow to finish")
        # A takeover by lease could not begin before the lease ran out, 30 s after the
        # drain; the margin below it is for a loaded machine, not a speed limit.
        assert time.monotonic() - start < lease * 0.8
        writers = _check_journals(look, ids, 20)
        # every other one went on on b: its later steps are b's (or a recorded all of
        # them and b only ended it), and the drain moved work under way to b
        moved = [w for w in ids if w not in ended_on_a]
        assert all(writers[w][-1] == "b" or writers[w] == ["a"] * 20 for w in moved), (
            ended_on_a, writers)
        assert any("b" in writers[w] for w in moved), (ended_on_a, writers)
        assert [n.name for n in look.nodes()] == ["b"]
    finally:
        look.close()


def test_a_name_is_unique_and_a_restart_under_it_resumes_at_once(
        postgres_url: str, nodes: list[Node]) -> None:
    url = postgres_url
    lease = 30.0
    a = Node.start(url, "a", lease, start=4, steps=30, delay=0.1)
    nodes.append(a)
    look = Look(url)
    try:
        taken = Node.start(url, "a", lease, wait=False)
        assert taken.proc.wait(30) != 0
        assert "node name 'a' is taken by a live node" in taken.stderr()
        wait_for(lambda: all(len(look.steps(f"w{i}")) >= 2 for i in range(4)), 20, "progress")
        a.kill()
        again = Node.start(url, "a", lease)  # its old incarnation's connection is gone
        nodes.append(again)
        wait_for(lambda: _finished(look, [f"w{i}" for i in range(4)]), 20,
                 "the workflows to finish (without waiting out the 30 s lease)")
        _check_journals(look, [f"w{i}" for i in range(4)], 30)
    finally:
        look.close()


def test_a_node_cut_off_while_its_name_was_taken_leaves_the_cluster_and_drains(
        postgres_url: str, nodes: list[Node]) -> None:
    """Node a is cut off past its lease; b marks it lost and takes its workflows; a new
    node starts under the name a. When the old a wakes, its lease lapsed and joining
    again finds its name taken: its membership thread died of that ``StoreLocked``
    (a traceback in a thread), the node's store was left with no fence at all (its
    writes checked against no lease), and SIGTERM then hung (the drain was never
    answered). It leaves the cluster for good, says why, writes nothing, drains."""
    url = postgres_url
    ids = [f"w{i}" for i in range(3)]
    old = Node.start(url, "a", LEASE, start=3, steps=20, delay=0.1)
    nodes.append(old)
    nodes.append(Node.start(url, "b", LEASE))
    look = Look(url)
    try:
        wait_for(lambda: all(len(look.steps(w)) >= 2 for w in ids), 20, "progress on a")
        old.pause()
        wait_for(lambda: [n.name for n in look.nodes()] == ["b"], 3 * LEASE + 2,
                 "b to mark a lost")
        new = Node.start(url, "a", LEASE)
        nodes.append(new)
        old.resume()
        wait_for(lambda: "leaves the cluster" in old.stderr(), 5 * LEASE, "a to leave")
        assert "node name 'a' is taken by a live node" in old.stderr()
        assert "Traceback" not in old.stderr()
        wait_for(lambda: _finished(look, ids), 30, "every workflow to finish")
        _check_journals(look, ids, 20)  # each step once, in order, whoever ran it
        old.drain()
        assert old.readline() == "drained"
        assert old.proc.wait(10) == 0
        assert sorted((n.name, n.epoch) for n in look.nodes()) == sorted(
            [("a", new.epoch), ("b", nodes[1].epoch)])
    finally:
        look.close()


async def test_a_send_from_another_node_is_durable_and_wakes_the_owner(
        postgres_url: str, nodes: list[Node]) -> None:
    import cluster_app  # noqa: F401  (the in-process node resolves the same target)
    import trio

    from garrison.persistence import Transaction

    url = postgres_url
    a = Node.start(url, "a", LEASE)
    nodes.append(a)
    look = Look(url)
    try:
        look.store.write(Transaction().create_workflow("mb", "cluster_app:mailbox", [3]))
        wait_for(lambda: look.owners().get("mb") == "a", 5, "a to claim the tool's workflow")
        async with garrison.open_node(store=url, name="t", lease=LEASE) as node:
            assert {n.name for n in node.cluster()} == {"a", "t"}
            with pytest.raises(StoreLocked, match="node name 't' is taken"):
                async with garrison.open_node(store=url, name="t"):
                    pass
            started = time.monotonic()
            for i in range(3):
                await node.send("workflows/mb", "m", {"n": i})
            with trio.fail_after(10):
                result = await node.workflow("mb").result()
            assert result == [{"n": 0}, {"n": 1}, {"n": 2}]
            assert time.monotonic() - started < 2
            assert look.owners() == {}
    finally:
        look.close()


def test_garrison_nodes_lists_the_cluster_and_drains_a_node_by_name(
        postgres_url: str, nodes: list[Node]) -> None:
    import subprocess

    url = postgres_url
    lease = 30.0
    # (long enough to be running still at the drain: a node lists its unfinished ones)
    a = Node.start(url, "a", lease, start=4, steps=200, delay=0.05)
    nodes.append(a)
    nodes.append(Node.start(url, "b", lease))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "garrison", "nodes", "--store", url, *args],
                              capture_output=True, text=True, timeout=60)

    def listing() -> list[str]:
        listed = cli()
        assert listed.returncode == 0, listed.stderr
        return listed.stdout.splitlines()

    # (a claims its 4 workflows as it starts them: on a loaded machine, a moment later;
    # the listing that shows them is the one checked, not a later one they may outlive)
    seen: list[list[str]] = []

    def claimed() -> bool:
        seen.append(listing())
        return seen[-1][1].split()[-1] == "4"

    wait_for(claimed, 20, "node a's workflows")
    lines = seen[-1]
    assert lines[0].split() == ["NAME", "STATUS", "STARTED", "HEARTBEAT", "WORKFLOWS"]
    assert [line.split()[:2] for line in lines[1:]] == [["a", "active"], ["b", "active"]]
    assert lines[1].split()[-1] == "4" and lines[2].split()[-1] == "0"
    assert cli("drain", "nobody").returncode == 1
    # a name no node can have is bad input (2), as `garrison run --name` says: one over
    # 1,000 bytes was "no live node named ..." (1)
    import contextlib
    import io

    from garrison import _cli

    for bad in ("x" * 1001, "a/b", "a@b", ""):  # (in-process: refused before any store)
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            code = _cli.main(["nodes", "--store", url, "drain", bad])
        assert code == 2 and "a node name" in said.getvalue(), said.getvalue()
    done = cli("drain", "a", "--json")  # (it printed "draining a" under --json too)
    asked = time.monotonic()
    assert done.returncode == 0 and json.loads(done.stdout) == {"name": "a",
                                                                "status": "draining"}
    assert a.readline() == "drained"  # without waiting out its 30 s lease
    # (nor its next renewal, up to lease / 3 later: the drain's notification reads it)
    assert time.monotonic() - asked < 3, time.monotonic() - asked
    look = Look(url)
    try:
        wait_for(lambda: _finished(look, [f"w{i}" for i in range(4)]), 60, "the workflows")
        _check_journals(look, [f"w{i}" for i in range(4)], 200)
        shown = json.loads(cli("--json").stdout)
        assert [(n["name"], n["status"]) for n in shown] == [("b", "active")]
    finally:
        look.close()


async def test_workflows_on_two_nodes_message_each_other_durably(
        postgres_url: str, nodes: list[Node]) -> None:
    import cluster_app
    import trio

    url = postgres_url
    nodes.append(Node.start(url, "a", LEASE, pong=20))
    async with garrison.open_node(store=url, name="t", lease=LEASE) as node:
        started = time.monotonic()
        await node.start_workflow(cluster_app.ping, "workflows/pong", 20, id="ping")
        with trio.fail_after(20):
            assert await node.workflow("ping").result() == list(range(20))
        elapsed = time.monotonic() - started
        assert await node.workflow("pong").result() == 20
    assert elapsed < 10, elapsed  # woken by NOTIFY: milliseconds per round trip, no polling


def test_random_kills_of_random_nodes_lose_and_repeat_nothing(postgres_url: str) -> None:
    from torture import CHECKS, torture

    out = torture(postgres_url, kills=6, workflows=12, steps=25, seed=3)
    assert out["kills"] >= 1
    for check in CHECKS:
        assert out[check] is True, out


def _singleton_on_a_and_b(url: str, nodes: list[Node], tmp_path: Path, config: str
                          ) -> tuple[Node, Callable[[], list[tuple[str, float]]]]:
    """Nodes a, then b, with ``config`` (tests/cluster/) whose singleton service beats
    into a file: node a, and the beats read so far, ``(node, unix time)`` each."""
    beats = tmp_path / "beats"
    beats.touch()
    path = str(Path(__file__).resolve().parent / "cluster" / config)
    env = {"GARRISON_BEAT_FILE": str(beats)}
    a = Node.start(url, "a", LEASE, config=path, env=env)
    nodes.append(a)
    nodes.append(Node.start(url, "b", LEASE, config=path, env=env))

    def lines() -> list[tuple[str, float]]:
        return [(n, float(t)) for n, t in (x.split() for x in beats.read_text().splitlines())]

    return a, lines


def test_a_singleton_service_runs_on_one_node_and_moves_when_it_is_lost(
        postgres_url: str, nodes: list[Node], tmp_path: Path) -> None:
    a, lines = _singleton_on_a_and_b(postgres_url, nodes, tmp_path, "singleton.yaml")
    wait_for(lambda: len(lines()) >= 10, 10, "the singleton to run")
    time.sleep(1.5)
    assert {name for name, _ in lines()} == {"a"}  # the first node holds it; b does not
    killed = time.time()
    a.kill()
    wait_for(lambda: any(name == "b" for name, _ in lines()), 2 * LEASE + 2, "b to start it")
    first_b = min(at for name, at in lines() if name == "b")
    assert first_b - killed <= 2 * LEASE + 0.5, first_b - killed
    assert all(at < killed + 0.1 for name, at in lines() if name == "a")  # one at a time


def test_a_draining_node_stops_its_singleton_before_another_node_starts_it(
        postgres_url: str, nodes: list[Node], tmp_path: Path) -> None:
    """The drain released the singleton's row (and marked the node draining, which let
    others claim it) before its service had stopped: the other node started its copy
    while the draining node's still ran its clean-up (found by an operator's review:
    3 s of both). One copy at a time: the other starts it once this one has ended."""
    a, lines = _singleton_on_a_and_b(postgres_url, nodes, tmp_path, "slow_singleton.yaml")
    wait_for(lambda: len(lines()) >= 10, 10, "the singleton to run")
    a.drain()
    wait_for(lambda: any(name == "b" for name, _ in lines()), 10, "b to start it")
    assert a.proc.wait(15) == 0
    assert a.readline() == "drained"
    last_a = max(at for name, at in lines() if name == "a")
    first_b = min(at for name, at in lines() if name == "b")
    assert last_a - min(at for name, at in lines()) > 1  # (it ran, then cleaned up 1 s)
    assert first_b > last_a, (last_a, first_b)  # one copy at a time


def _tidy_singleton(tmp_path: Path, auto_start: bool, clean_up: float = 1.5) -> str:
    """A config whose singleton ``app:beat`` cleans up for ``clean_up`` seconds on
    ``CANCEL`` (within its stop_timeout of 10 s), noting in ``svc_app.LOG`` under its
    node's name; and ``app:user``, a plain service that requires it."""
    import svc_app

    del svc_app.LOG[:]
    path = tmp_path / "tidy.yaml"
    path.write_text(f"""
version: "1.0"
namespace: app
entries:
  - {{name: tidy, kind: process.py, source: "svc_app:tidy"}}
  - {{name: beat, kind: process.service, process: app:tidy, input: [{clean_up}],
     lifecycle: {{auto_start: {str(auto_start).lower()}, singleton: true, stop_timeout: 10s}}}}
  - {{name: user, kind: process.service, process: app:tidy, input: [0],
     lifecycle: {{requires: [app:beat]}}}}
""")
    return str(path)


async def _noted(who: str, what: str, within: float = 10.0) -> float:
    """When ``who`` (a node) noted ``what`` in ``svc_app.LOG`` last (waits for it)."""
    import svc_app
    import trio

    with trio.fail_after(within):
        while True:
            times = [t for t, w, x in svc_app.LOG if (w, x) == (who, what)]
            if times:
                return times[-1]
            await trio.sleep(0.01)


def _service(node: Any, sid: str) -> Any:
    return next(s for s in node.services() if s.id == sid)


async def test_a_singleton_of_a_node_cut_off_is_gone_before_another_node_starts_it(
        postgres_url: str, tmp_path: Path) -> None:
    """A node cut off stops its singleton at three quarters of its lease, but the
    singleton's clean-up (1.5 s in the probe, 1 s here, within its stop_timeout of 10 s)
    ran past the lease's end, after another node had started its copy: both ran for a
    second. Its stop gets what is left of the lease: terminated at its end at the latest."""
    import threading

    import svc_app

    path = _tidy_singleton(tmp_path, auto_start=True, clean_up=1.0)
    async with garrison.open_node(config=path, store=postgres_url, name="a", lease="1s") as a:
        await _noted("a", "start")
        async with garrison.open_node(config=path, store=postgres_url, name="b",
                                      lease="1s"):
            pg = a._members[0].pg
            link = threading.Event()
            renew = pg.renew

            def hung(*args: Any) -> Any:  # a's renewals get no answer (a link held)
                link.wait(10)
                return renew(*args)

            pg.renew = hung  # type: ignore[method-assign]
            try:
                started_b = await _noted("b", "start")
            finally:
                link.set()
            whats = [x for _t, w, x in svc_app.LOG if w == "a"]
            assert whats == ["start", "cancel", "ended"], whats  # (no "cleaned up")
            cancelled, ended = await _noted("a", "cancel"), await _noted("a", "ended")
            assert ended - cancelled < 0.3, ended - cancelled  # (a quarter of its lease)
            assert ended < started_b, (ended, started_b)  # one copy at a time


async def test_a_singleton_whose_nodes_lease_lapsed_is_terminated_at_once(
        postgres_url: str, tmp_path: Path) -> None:
    """A node that finds its lease lapsed already (woken from a pause past it, or told
    so by the server) gave its singleton its clean-up (1.5 s) while another node may run
    it already. It is terminated at once: no CANCEL, no clean-up."""
    import svc_app
    from _stores import sql

    path = _tidy_singleton(tmp_path, auto_start=True)
    async with garrison.open_node(config=path, store=postgres_url, name="a", lease="1s") as a:
        await _noted("a", "start")
        sql(postgres_url, "UPDATE nodes SET lease_until = lease_until - 100 WHERE epoch = ?",
            (a._members[0].epoch,))
        await _noted("a", "ended")
        assert [x for _t, w, x in svc_app.LOG][:2] == ["start", "ended"], svc_app.LOG


async def test_what_requires_a_singleton_stops_where_the_singleton_stopped(
        postgres_url: str, tmp_path: Path) -> None:
    """A node that lost its lease terminated its singleton, but app:user, which
    requires it, ran on there: in parallel with the copy of the node that took the
    singleton over (found by a probe: still writing 5 s after). It stops with the
    singleton, and starts again only where the singleton runs (here, on this node
    once it joined again and took the singleton back: the only node)."""
    import svc_app
    import trio
    from _stores import sql

    path = _tidy_singleton(tmp_path, auto_start=True, clean_up=0)
    async with garrison.open_node(config=path, store=postgres_url, name="a", lease="1s") as a:
        await a.start_service("app:user")
        assert [x for _t, w, x in svc_app.LOG] == ["start", "start"]
        sql(postgres_url, "UPDATE nodes SET lease_until = lease_until - 100 WHERE epoch = ?",
            (a._members[0].epoch,))
        with trio.fail_after(10):
            while [x for _t, w, x in svc_app.LOG] != ["start"] * 2 + ["ended"] * 2 + [
                    "start"] * 2:
                await trio.sleep(0.02)
            while _service(a, "app:user").status != "running":  # (its code ran first)
                await trio.sleep(0.02)


async def test_a_singleton_not_auto_started_runs_where_it_is_started_and_only_there(
        postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A singleton that is not auto_start was claimed by the first node at its start
    though no node started it: start_service on another node logged "a singleton another
    node runs; not started here", and it ran nowhere. A node claims one only to run it:
    start_service starts it on one node of the cluster, and elsewhere says where it
    runs (``node`` of ``node.services()``). A service that requires it waits on the
    other nodes, and says why."""
    import logging

    import svc_app
    import trio
    from _stores import sql

    caplog.set_level(logging.INFO, logger="garrison.services")
    path = _tidy_singleton(tmp_path, auto_start=False, clean_up=0)
    async with garrison.open_node(config=path, store=postgres_url, name="a", lease="1s") as a, \
            garrison.open_node(config=path, store=postgres_url, name="b", lease="1s") as b:
        await trio.sleep(0.4)  # (rounds of both)
        assert sql(postgres_url, "SELECT service FROM singletons") == []
        await b.start_service("app:beat")
        await _noted("b", "start")
        assert _service(b, "app:beat").status == "running"
        await a.start_service("app:beat")
        assert "app:beat: a singleton; not started here: it runs on node b of the cluster" \
            in caplog.messages
        beat = _service(a, "app:beat")
        assert (beat.status, beat.node) == ("stopped", "b")
        await a.start_service("app:user")
        assert ("app:user: waiting for app:beat (a singleton another node of the cluster "
                "runs: app:user runs only on the node that runs it)") in caplog.messages
        assert _service(a, "app:user").status == "waiting"
        assert [(w, x) for _t, w, x in svc_app.LOG] == [("b", "start")]


async def test_an_auto_start_singleton_another_node_runs_is_said_once(
        postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """README: an auto_start singleton another live node runs logs "not started here: it
    runs on node c"; only start_service said it, the auto_start path nothing. Said
    once, not at every round's answer."""
    import logging

    import trio

    caplog.set_level(logging.INFO, logger="garrison.services")
    path = _tidy_singleton(tmp_path, auto_start=True, clean_up=0)
    said = "app:beat: a singleton; not started here: it runs on node c of the cluster"
    async with garrison.open_node(config=path, store=postgres_url, name="c", lease="1s"):
        await _noted("c", "start")
        async with garrison.open_node(config=path, store=postgres_url, name="t",
                                      lease="1s") as t:
            with trio.fail_after(5):
                while _service(t, "app:beat").node != "c":
                    await trio.sleep(0.01)
            await trio.sleep(1.0)  # (rounds of both)
            assert caplog.messages.count(said) == 1, caplog.messages
            # a start_service says it too (its claim's answer, applied, does not again)
            await t.start_service("app:user")
            assert caplog.messages.count(said) == 2, caplog.messages
            assert _service(t, "app:beat").status == "stopped"


async def test_a_draining_nodes_start_of_a_singleton_says_it_drains(
        postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A draining node claims no singleton: its start_service of one returned, the
    service stopped, and logged "this node could not claim it (the cluster did not
    answer in time)", though the database had answered at once. It says it drains."""
    import logging

    import svc_app

    caplog.set_level(logging.INFO, logger="garrison.services")
    path = _tidy_singleton(tmp_path, auto_start=False, clean_up=0)
    async with garrison.open_node(config=path, store=postgres_url, name="t", lease="1s") as t:
        t.drain()
        await t.drained()
        await t.start_service("app:beat")
        said = [m for m in caplog.messages if "not started here" in m]
        assert said == ["app:beat: a singleton; not started here: this node is draining "
                        "(a draining node claims no singleton)"], said
        assert _service(t, "app:beat").status == "stopped"
        assert svc_app.LOG == []


async def test_a_singleton_that_gave_up_on_its_node_may_run_on_another(
        postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A singleton that gave up on its node (max_attempts spent) kept its claim: no node
    ran it, and every other node said it ran there (a start_service there logged "not
    started here: it runs on node a", node.services() gave it node "a"), until that
    node left. The node lets it go: another node's start runs it."""
    import logging

    import svc_app
    import trio
    from _stores import sql

    caplog.set_level(logging.INFO, logger="garrison.services")
    svc_app.FAILS["crash"] = 2  # (a's run and its restart; b's runs)
    path = tmp_path / "crash.yaml"
    path.write_text("""
version: "1.0"
namespace: app
entries:
  - {name: crasher, kind: process.py, source: "svc_app:crasher"}
  - {name: crash, kind: process.service, process: app:crasher, input: [crash],
     lifecycle: {singleton: true, restart: {max_attempts: 1, initial_delay: 0.01s}}}
""")
    async with garrison.open_node(config=str(path), store=postgres_url, name="a",
                                  lease="1s") as a, \
            garrison.open_node(config=str(path), store=postgres_url, name="b",
                               lease="1s") as b:
        await a.start_service("app:crash")
        with trio.fail_after(5):
            while _service(a, "app:crash").status != "gave_up":
                await trio.sleep(0.01)
            while sql(postgres_url, "SELECT service FROM singletons"):  # (let go)
                await trio.sleep(0.01)
            while _service(b, "app:crash").node is not None:  # (b's next round sees it)
                await trio.sleep(0.01)
        assert _service(b, "app:crash").status == "stopped"  # (it runs nowhere)
        await b.start_service("app:crash")
        assert not [m for m in caplog.messages if "not started here" in m]
        assert _service(b, "app:crash").status == "running"
        with trio.fail_after(5):
            while _service(a, "app:crash").node != "b":
                await trio.sleep(0.01)
        assert _service(a, "app:crash").status == "gave_up"
        assert "app:crash: a singleton that gave up here: this node lets it go (another node " \
            "of the cluster may run it; a start_service starts it again)" in caplog.messages


@contextlib.contextmanager
def _two_members(url: str) -> Iterator[tuple[Any, Any]]:
    """Two cluster members, ``a`` and ``b``, joined on the store at ``url``; their
    rounds are called by hand (``claim_singletons``)."""
    from garrison.persistence import PostgresStore
    from garrison.persistence._pg_cluster import PgCluster

    with PostgresStore(url) as store:
        a, b = PgCluster(store, "a"), PgCluster(store, "b")
        try:
            a.join(a.new_epoch())
            b.join(b.new_epoch())
            yield a, b
        finally:
            a.close()
            b.close()


def test_a_singleton_let_go_is_deleted_once_not_in_every_round(postgres_url: str) -> None:
    """A node that let a singleton go (it gave up there) deleted its row again in every
    round while it stayed let go: a statement that found nothing, each round, for as long
    as the node ran. The row goes in the first round (another node takes it then), and
    again only if the node asks for the singleton and lets it go once more."""

    class Counted:
        """The cluster connection, its statements counted (the DELETEs of singletons)."""

        def __init__(self, conn: Any) -> None:
            self.conn, self.deletes = conn, 0

        def transaction(self) -> Any:
            return self.conn.transaction()

        def execute(self, query: str, params: Any = ()) -> Any:
            self.deletes += query.startswith("DELETE FROM") and ".singletons" in query
            return self.conn.execute(query, params)

    with _two_members(postgres_url) as (a, b):
        counted = Counted(a.connect())
        a.connect = lambda: counted  # type: ignore[method-assign,assignment,return-value]
        assert a.claim_singletons(["s"], ["s"]) == ({"s"}, {})
        assert b.claim_singletons(["s"], ["s"]) == (set(), {"s": "a"})
        for _ in range(3):  # (let go: rounds)
            assert a.claim_singletons([], ["s"], ["s"]) == (set(), {})
        assert counted.deletes == 1
        assert b.claim_singletons(["s"], ["s"]) == ({"s"}, {})  # (b takes it)
        assert a.claim_singletons([], ["s"], ["s"]) == (set(), {"s": "b"})
        assert counted.deletes == 1
        # asked for here again (held by b: a waits), then let go again
        assert a.claim_singletons(["s"], ["s"]) == (set(), {"s": "b"})
        b.release_singletons()  # (b hands it on: a takes it)
        assert a.claim_singletons(["s"], ["s"]) == ({"s"}, {})
        assert a.claim_singletons([], ["s"], ["s"]) == (set(), {})
        assert a.claim_singletons([], ["s"], ["s"]) == (set(), {})
        assert counted.deletes == 2
        assert b.claim_singletons(["s"], ["s"]) == ({"s"}, {})


def test_a_singleton_let_go_again_after_a_lost_commit_is_deleted_again(
        postgres_url: str) -> None:
    """A round that asked again for a singleton let go earlier, whose COMMIT landed but
    whose answer was lost (the connection broke), left it in the set of those deleted:
    let go again, its row was not deleted and kept this live node's epoch, so no other
    node took it while this node ran (held here, never started)."""
    import psycopg

    class LosesAnswer:
        """The cluster connection; ``lose`` makes the next transaction commit, then
        raise as a connection broken before its answer came."""

        def __init__(self, conn: Any) -> None:
            self.conn, self.lose = conn, False

        @contextlib.contextmanager
        def transaction(self) -> Any:
            with self.conn.transaction():
                yield
            if self.lose:
                self.lose = False
                raise psycopg.OperationalError("server closed the connection unexpectedly")

        def execute(self, query: str, params: Any = ()) -> Any:
            return self.conn.execute(query, params)

    with _two_members(postgres_url) as (a, b):
        conn = LosesAnswer(a.connect())
        a.connect = lambda: conn  # type: ignore[method-assign,assignment,return-value]
        assert a.claim_singletons(["s"], ["s"]) == ({"s"}, {})
        assert a.claim_singletons([], ["s"], ["s"]) == (set(), {})  # (let go)
        conn.lose = True  # asked for again: committed, its answer lost
        with pytest.raises(psycopg.OperationalError):
            a.claim_singletons(["s"], ["s"])
        assert a.claim_singletons([], ["s"], ["s"]) == (set(), {})  # (let go again)
        assert b.claim_singletons(["s"], ["s"]) == ({"s"}, {})


async def test_a_singleton_started_on_demand_moves_when_its_node_leaves_or_is_lost(
        postgres_url: str, tmp_path: Path) -> None:
    """A singleton that is not auto_start, started on a node that then closed (or was
    lost), ran nowhere: the other nodes took over only the auto_start ones. A singleton
    started is taken over like those."""
    import svc_app
    import trio
    from _stores import sql

    path = _tidy_singleton(tmp_path, auto_start=False, clean_up=0)
    async with garrison.open_node(config=path, store=postgres_url, name="b", lease="1s") as b:
        async with garrison.open_node(config=path, store=postgres_url, name="a",
                                      lease="1s") as a:
            await a.start_service("app:beat")
            await _noted("a", "start")
        await _noted("a", "cleaned up")  # (a closed: its copy stopped, then handed on)
        started_b = await _noted("b", "start")
        assert started_b > await _noted("a", "ended")
        # b is lost now: its copy goes at once, and one node runs it again (b, joined
        # again under a new incarnation: the only node left)
        sql(postgres_url, "UPDATE nodes SET lease_until = lease_until - 100 WHERE epoch = ?",
            (b._members[0].epoch,))
        with trio.fail_after(10):
            while [x for _t, w, x in svc_app.LOG if w == "b"] != ["start", "ended", "start"]:
                await trio.sleep(0.02)
        assert _service(b, "app:beat").status == "running"


def test_a_drain_asked_of_a_node_that_then_lost_its_lease_is_kept(
        postgres_url: str, nodes: list[Node]) -> None:
    """``garrison nodes drain c`` answered "draining c" while c was stalled (SIGSTOP):
    its lease lapsed before it read the status, it joined again under a new row
    (``active``), and the drain was lost without a word: c ran on. The drain asked of
    its old row is carried over to the new one."""
    from garrison.persistence._pg_cluster import PgCluster

    nodes.append(Node.start(postgres_url, "a", LEASE))
    c = Node.start(postgres_url, "c", LEASE)
    nodes.append(c)
    look = Look(postgres_url)
    try:
        c.pause()
        # what `garrison nodes drain c` does (a command's start-up could outlast the lease)
        assert PgCluster(look.store).set_status("draining", name="c") == 1
        wait_for(lambda: [n.name for n in look.nodes()] == ["a"], 3 * LEASE + 2,
                 "a to mark c lost")
        c.resume()
        assert c.proc.wait(15) == 0  # (it ran on: TimeoutExpired)
        assert c.readline() == "drained"
        assert "a drain was asked of it before its lease lapsed: it drains now" in c.stderr()
    finally:
        look.close()


def test_a_node_replaces_a_hung_one_of_its_name_once_its_lease_lapsed(
        postgres_url: str, nodes: list[Node], capsys: pytest.CaptureFixture[str]) -> None:
    """A lone node hangs (SIGSTOP) past its lease: its connections live on, so no one
    took it for dead, and with no other node to mark it lost, a node started under its
    name was refused (``StoreLocked``: taken by a live node) until one with another name
    came; ``garrison nodes`` listed it ``active`` while ``nodes drain`` said no live
    node had the name. The joining node marks lapsed leases lost first, and the list
    says the lease lapsed."""
    import trio

    from garrison._cli import main

    a = Node.start(postgres_url, "a", LEASE)
    nodes.append(a)
    a.pause()
    time.sleep(LEASE + 1)
    assert main(["nodes", "--store", postgres_url]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^a +active, lease lapsed ", listed, re.M), listed

    async def replace() -> None:
        async with garrison.open_node(store=postgres_url, name="a", lease="30s") as node:
            assert [(n.name, n.status) for n in node.cluster()] == [("a", "active")]

    trio.run(replace)
    a.resume()


def test_garrison_runs_started_line_names_a_singleton_service(
        postgres_url: str, tmp_path: Path) -> None:
    """The line ``garrison run`` prints once its node runs listed the services running
    then: a singleton service, claimed a moment later by the cluster thread (or held by
    another node), was missing (``services: none``)."""
    import os
    import signal
    import subprocess

    config = Path(__file__).resolve().parent / "cluster" / "singleton.yaml"
    env = {**os.environ, "GARRISON_BEAT_FILE": str(tmp_path / "beats"),
           "PYTHONPATH": os.pathsep.join([str(config.parent), str(config.parents[2])])}
    run = subprocess.Popen([sys.executable, "-m", "garrison", "run", str(config), "--store",
                            postgres_url, "--name", "a", "--lease", "2s"], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert run.stderr is not None
        seen = ""
        while "Ctrl-C to stop" not in seen:
            line = run.stderr.readline()
            assert line, seen
            seen += line
        assert "services: app:beat (singleton: one node of the cluster runs it); " in seen, seen
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=30)


async def test_plain_processes_of_two_nodes_talk_and_see_a_lost_node_as_noconnection(
        postgres_url: str, nodes: list[Node]) -> None:
    import trio

    from garrison import EventKind, ProcessError, process

    a = Node.start(postgres_url, "a", LEASE, echo=True)
    nodes.append(a)
    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE) as node:
        echo = node.lookup("echo")  # a cluster name: found on any node
        assert echo is not None and echo.id.endswith("@a"), echo
        assert str(echo).startswith("processes/")
        async def taker() -> None:
            process.register("echo", scope="cluster")

        with pytest.raises(ProcessError, match=r"'echo' is already registered in the cluster "
                           r"by processes/.*@a"):
            await node.wait(await node.spawn(taker))
        # a call and sends to a plain process of another node (order kept per sender)
        assert await node.call("echo", "call", {"x": 1}) == {"x": 1}
        big = "x" * 20_000  # over NOTIFY's 8000 bytes: through the messages table
        assert await node.call("echo", "call", big) == big

        async def chatter() -> list[object]:
            for i in range(50):
                await process.send("echo", "send", i)
            got = []
            for _ in range(50):
                msg = await process.inbox().receive(timeout=10)
                assert msg is not None
                got.append(msg.payload)
            return got

        assert await node.wait(await node.spawn(chatter)) == list(range(50))

        # a monitor, a trapped link and a call in flight when a is killed
        events: list[object] = []

        async def watcher() -> None:
            process.set_options(trap_links=True)
            process.monitor(echo)
            process.link(echo)
            started.set()
            for _ in range(2):
                ev = await process.events().receive()
                events.append((ev.kind, ev.pid, ev.error.type if ev.error else None))

        async def caller() -> str:
            try:
                await process.call(echo, "slow", None, timeout=30)
            except ProcessError as exc:
                return str(exc.error.type if exc.error else exc)
            return "answered"

        started = trio.Event()
        w = await node.spawn(watcher)
        c = await node.spawn(caller)
        await started.wait()
        await trio.sleep(0.2)
        killed = time.monotonic()
        a.kill()
        with trio.fail_after(2 * LEASE + 5):
            assert await node.wait(c) == "noconnection"
            await node.wait(w)
        assert time.monotonic() - killed <= 2 * LEASE + 1
        assert sorted(events, key=str) == sorted([
            (EventKind.EXIT, echo, "noconnection"),
            (EventKind.LINK_DOWN, echo, "noconnection")], key=str)
        assert node.lookup("echo") is None  # released with its node


def _garrison_run_app(tmp_path: Path, url: str, starts: str, lease: str,
                      env: dict[str, str] | None = None) -> Any:
    """``garrison run app.py`` as node ``a`` of the cluster at ``url``: its root runs
    ``starts`` (lines of code with ``node`` and ``cluster_app`` at hand), prints
    ``started`` and sleeps; the process (``Popen``, text pipes)."""
    import subprocess
    import textwrap

    (tmp_path / "app.py").write_text(
        "import sys, trio, garrison\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent / 'cluster')!r})\n"
        "import cluster_app\n\n"
        "async def main():\n"
        "    node = garrison.current_node()\n"
        + textwrap.indent(textwrap.dedent(starts), "    ") +
        "    print('started', flush=True)\n"
        "    await trio.sleep_forever()\n")
    return subprocess.Popen([sys.executable, "-m", "garrison", "run", "app.py", "--store",
                             url, "--name", "a", "--lease", lease], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def test_sigterm_to_a_clustered_garrison_run_drains_it_then_exits_0(
        postgres_url: str, nodes: list[Node], tmp_path: Path) -> None:
    import os
    import signal

    # 7.5 s of steps: still running when node b is up and the signal comes, even on a
    # loaded machine (40 steps could all finish on a before b had started)
    run = _garrison_run_app(tmp_path, postgres_url, """\
        for i in range(4):
            await node.start_workflow(cluster_app.steps, 150, 0.05, id=f'r{i}')
    """, "30s", env={**os.environ, "GARRISON_NODE": "a"})
    try:
        assert run.stdout is not None and run.stdout.readline().strip() == "started"
        nodes.append(Node.start(postgres_url, "b", 30.0))
        look = Look(postgres_url)
        ids = [f"r{i}" for i in range(4)]
        wait_for(lambda: all(len(look.steps(w)) >= 2 for w in ids), 20, "progress on a")
        run.send_signal(signal.SIGTERM)
        assert run.wait(20) == 0  # drained (not after its 30 s lease), then stopped
        _, err = run.communicate()
        assert "draining" in err
        wait_for(lambda: _finished(look, ids), 60, "the workflows to finish on b")
        writers = _check_journals(look, ids, 150)
        assert all(w[-1] == "b" for w in writers.values())
        look.close()
    finally:
        if run.poll() is None:
            run.kill()


def test_garrison_nodes_drain_ends_a_garrison_run_node_once_drained(
        postgres_url: str, nodes: list[Node], tmp_path: Path) -> None:
    """A drain asked from outside (the CLI) ends `garrison run` like SIGTERM does: the
    node hands its workflows over, then exits 0 (it used to stay `draining` with no
    workflows forever)."""
    import subprocess

    run = _garrison_run_app(tmp_path, postgres_url, """\
        for i in range(3):  # each waits for a message: it moves at once on a drain
            await node.start_workflow(cluster_app.mailbox, 1, id=f'd{i}')
    """, "30s")
    look = Look(postgres_url)
    try:
        assert run.stdout is not None and run.stdout.readline().strip() == "started"
        b = Node.start(postgres_url, "b", 30.0)
        nodes.append(b)
        drain = subprocess.run([sys.executable, "-m", "garrison", "nodes", "--store",
                                postgres_url, "drain", "a"], capture_output=True, text=True,
                               timeout=60)
        assert drain.returncode == 0, drain.stderr
        assert run.wait(20) == 0  # drained (not after its 30 s lease), then stopped
        _, err = run.communicate()
        assert "node a drained: its workflows are left to the other live nodes (b); " \
               "shutting down" in err
        wait_for(lambda: look.owners() == {f"d{i}": "b" for i in range(3)}, 20,
                 "b to own the workflows")
    finally:
        look.close()
        if run.poll() is None:
            run.kill()


def test_garrison_run_exits_1_once_its_store_gave_up_and_the_node_left_the_cluster(
        postgres_url: str, tmp_path: Path) -> None:
    """A node whose store gave up writing (here: a newer release migrated the schema)
    leaves the cluster, and the other nodes take its workflows. Its `garrison run` used
    to run on for ever, out of the cluster, recording nothing, so that nothing that
    supervises it (systemd, Kubernetes) started it again; it now stops and exits 1,
    saying why."""
    from garrison.persistence._pg_schema import SCHEMA_VERSION

    run = _garrison_run_app(tmp_path, postgres_url,
                            "await node.start_workflow(cluster_app.mailbox, 1, id='g')\n",
                            "1s")
    look = Look(postgres_url)
    try:
        assert run.stdout is not None and run.stdout.readline().strip() == "started"
        look.store._query("INSERT INTO garrison.schema_version (version, applied) "
                          "VALUES (%s, 0) RETURNING 1", (SCHEMA_VERSION + 1,))
        assert run.wait(20) == 1  # at its next renewal, not never
        _, err = run.communicate()
        assert "garrison run: node a left the cluster: its store gave up; shutting down " \
               "(start it again to join anew): " in err, err
        assert f"schema version {SCHEMA_VERSION + 1}" in err
        assert [(n.name, n.status) for n in look.nodes(all_rows=True)] == [("a", "lost")]
    finally:
        look.close()
        if run.poll() is None:
            run.kill()


def test_a_start_beyond_max_concurrent_runs_on_a_node_with_room(
        postgres_url: str, nodes: list[Node]) -> None:
    url = postgres_url
    nodes.append(Node.start(url, "b", LEASE, max_concurrent=3))
    a = Node.start(url, "a", LEASE, start=8, steps=20, delay=0.05, max_concurrent=2)
    nodes.append(a)
    look = Look(url)
    ids = [f"w{i}" for i in range(8)]
    try:
        wait_for(lambda: _finished(look, ids), 30, "every workflow to finish")
        writers = _check_journals(look, ids, 20)
        assert all(len(set(w)) == 1 for w in writers.values()), writers  # none moved
        ran = [w[0] for w in writers.values()]
        assert ran.count("a") >= 2 and ran.count("b") >= 3, ran  # both full at first
        for node, limit in (("a", 2), ("b", 3)):  # never more at once than its limit
            spans = []
            for wid, who in writers.items():
                if who[0] == node:
                    times = [r.time.timestamp() for r in look.store.journal(wid)]
                    spans.append((min(times), max(times)))
            most = max(sum(1 for lo, hi in spans if lo <= t <= hi) for t, _ in spans)
            assert most <= limit, (node, spans)
    finally:
        look.close()


def test_a_node_starting_among_orphans_claims_no_more_than_its_max_concurrent(
        postgres_url: str, nodes: list[Node]) -> None:
    """Node x runs four workflows and is killed; node a, max_concurrent=2, starts
    alone. Its join claimed two (its room) to resume, but its membership thread's
    first round, before the host had resumed them, still saw the room free and
    claimed the other two: a ran four at once (the soak's full outages: the first node
    back ran every orphan). Now what the join claimed counts until it is resumed."""
    url = postgres_url
    x = Node.start(url, "x", LEASE, start=4, steps=30, delay=0.05)
    nodes.append(x)
    look = Look(url)
    ids = [f"w{i}" for i in range(4)]
    try:
        wait_for(lambda: all(len(look.steps(w)) >= 2 for w in ids), 20, "progress on x")
        x.kill()
        nodes.append(Node.start(url, "a", LEASE, max_concurrent=2))
        wait_for(lambda: _finished(look, ids), 30, "every workflow to finish")
        writers = _check_journals(look, ids, 30)
        assert {w[-1] for w in writers.values()} == {"a"}, writers
        spans = {}  # the time each workflow's steps were recorded by a
        for wid in ids:
            times = [r.time.timestamp() for r in look.store.journal(wid)
                     if r.kind == "activity" and r.outcome["ok"]["node"] == "a"]
            spans[wid] = (min(times), max(times))
        assert _most_at_once(spans) <= 2, spans
    finally:
        look.close()


async def test_a_node_whose_start_fails_leaves_the_cluster_before_closing_its_store(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that joined the cluster and then failed to start (here: its schedule
    scheduler) stops its membership thread before it closes the store: the thread
    never runs a round on a closed store, and the node's row says it left."""
    import threading

    from garrison.hosts.workflow._scheduler import Scheduler

    async def broken(self: Scheduler, **_: object) -> None:
        raise RuntimeError("the scheduler could not start")

    monkeypatch.setattr(Scheduler, "run", broken)
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    with pytest.raises(RuntimeError, match="could not start"):
        async with garrison.open_node(store=postgres_url, name="broken", lease=LEASE):
            pass  # pragma: no cover - never reached
    assert not [t for t in threading.enumerate() if t.name == "garrison-cluster-broken"]
    assert failures == []
    look = Look(postgres_url)
    try:
        assert "broken" not in {n.name for n in look.nodes()}  # the live ones: it left
    finally:
        look.close()


async def test_a_drain_moves_waiting_workflows_at_once_with_their_timers(
        postgres_url: str, nodes: list[Node]) -> None:
    import cluster_app
    import trio

    from garrison import _store_tools as tools

    nodes.append(Node.start(postgres_url, "b", LEASE))
    look = Look(postgres_url)
    try:
        async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
            for i in range(3):
                await node.start_workflow(cluster_app.sleeper, 3, 0.4, id=f"s{i}")
            await trio.sleep(0.5)  # each is in its second durable sleep
            # (``garrison workflows show`` names the node that runs it)
            shown = tools.detail(look.store, look.store.get_workflow("s0"))
            assert shown["node"] == "t", shown
            started = time.monotonic()
            node.drain()
            with trio.fail_after(5):
                await node.drained()
            assert time.monotonic() - started < 2  # parked: moved at once, not at a lease
            assert [n.workflows for n in node.cluster() if n.name == "t"] == [0]
            with trio.fail_after(5):
                while tools.detail(look.store, look.store.get_workflow("s0"))["node"] != "b":
                    await trio.sleep(0.05)
            with trio.fail_after(10):  # the handle follows it to b through the store
                assert [await node.workflow(f"s{i}").result() for i in range(3)] == [3] * 3
            assert tools.detail(look.store, look.store.get_workflow("s0"))["node"] is None
        # the timers were kept: 3 sleeps of 0.4 s in all, not restarted on b
        for i in range(3):
            sleeps = [r for r in look.store.journal(f"s{i}") if r.kind == "sleep"]
            assert len(sleeps) == 3, look.store.journal(f"s{i}")
    finally:
        look.close()


async def test_a_drain_records_the_step_in_flight_before_the_workflow_moves(
        postgres_url: str, nodes: list[Node]) -> None:
    """A drain asked while a step runs hands the workflow over after that step's
    outcome is recorded (README, Drain): the other node goes on from the next step.
    With a step's outcome riding with the workflow's next commit, the hand-over
    dropped it, and the other node ran the step again."""
    import cluster_app
    import trio

    nodes.append(Node.start(postgres_url, "b", LEASE))
    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        await node.start_workflow(cluster_app.steps, 2, 1.0, id="d")
        await trio.sleep(0.3)  # its first step runs here
        node.drain()
        with trio.fail_after(10):
            await node.drained()
        with trio.fail_after(15):
            assert await node.workflow("d").result() == [0, 1]
        ran = [r.outcome["ok"]["node"] for r in node.workflow("d").history()
               if r.kind == "activity"]
        assert ran == ["?", "b"], ran  # ("?": this process, t, names no GARRISON_NODE)


async def test_a_drain_moves_a_workflow_waiting_to_retry_an_activity_at_once(
        postgres_url: str, nodes: list[Node]) -> None:
    """A workflow awaiting an activity's retry (its backoff recorded as a timer) read
    ``running``, and a drain waited the backoff out (an hour's, say). It is
    ``sleeping``, and moves at once; the other node makes the next attempt when the
    recorded backoff ends."""
    import cluster_app
    import trio

    nodes.append(Node.start(postgres_url, "b", LEASE))
    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        await node.start_workflow(cluster_app.retries_until_b, id="r")
        with trio.fail_after(10):
            while node.workflow("r").status() != "sleeping":
                await trio.sleep(0.02)
        started = time.monotonic()
        node.drain()
        with trio.fail_after(5):
            await node.drained()
        assert time.monotonic() - started < 2  # (the 3 s backoff was waited out)
        with trio.fail_after(15):
            assert await node.workflow("r").result() == "b"
        [record] = [r for r in node.workflow("r").history() if r.kind == "activity"]
        assert record.attempts == 2


async def test_a_workflow_drained_in_a_retry_backoff_stays_sleeping_in_the_store(
        postgres_url: str) -> None:
    """The drain cancelled the backoff and that end queued ``running``, written as the
    workflow left: until another node took it, the store said ``running`` and the
    handle too, for a workflow that only waits for its retry timer."""
    import cluster_app
    import trio

    def stored() -> str:
        record = look.store.get_workflow("r")
        return "" if record is None else str(record.status)

    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        await node.start_workflow(cluster_app.retries_until_b, id="r")
        look = Look(postgres_url)
        try:
            with trio.fail_after(10):
                while stored() != "sleeping":  # (the host records parked ones shortly)
                    await trio.sleep(0.02)
            node.drain()
            with trio.fail_after(5):
                await node.drained()  # (no other node: nobody takes it)
            assert stored() == "sleeping"
            assert node.workflow("r").status() == "sleeping"
        finally:
            look.close()


def _most_at_once(spans: dict[str, tuple[float, float]]) -> int:
    """The most of these (first step, last step) spans that overlap at one moment."""
    return max(sum(1 for lo, hi in spans.values() if lo <= t <= hi)
               for t, _ in spans.values())


async def test_nodes_whose_cluster_wide_limits_differ_say_so(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Each node admits what it starts by its own config: a node started without the
    ``cluster_max_concurrent`` (or ``rate``) the others have admits unchecked, and the
    limit silently held for the other nodes' starts only. Each node now warns, once,
    of a live node whose host of the same name has other cluster-wide limits."""
    import logging

    import trio

    caplog.set_level(logging.WARNING, logger="garrison.cluster")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "cluster-wide limit" in r.getMessage()]

    async with garrison.open_node(store=postgres_url, name="a", lease=LEASE,
                                  cluster_max_concurrent=3, rate="10/1m"), \
            garrison.open_node(store=postgres_url, name="same", lease=LEASE,
                               cluster_max_concurrent=3, rate="10 / 60s"), \
            garrison.open_node(store=postgres_url, name="b", lease=LEASE, max_concurrent=2):
        with trio.fail_after(5 * LEASE):
            while len(said()) < 3:
                await trio.sleep(0.05)
        await trio.sleep(LEASE)  # each said once
    assert sorted(said()) == sorted([
        "node a: workflow host 'workflows' has cluster_max_concurrent=3, rate=10/1m here but "
        "cluster_max_concurrent=None, rate=None on node b: each node admits the workflows "
        "it starts by its own config, so a cluster-wide limit holds only where it is set; "
        "give every node the same",
        "node same: workflow host 'workflows' has cluster_max_concurrent=3, rate=10/60s here "
        "but cluster_max_concurrent=None, rate=None on node b: each node admits the "
        "workflows it starts by its own config, so a cluster-wide limit holds only where it "
        "is set; give every node the same",
        *[f"node b: workflow host 'workflows' has cluster_max_concurrent=None, rate=None "
          f"here but cluster_max_concurrent=3, rate={rate} on node {other}: each node admits "
          "the workflows it starts by its own config, so a cluster-wide limit holds only "
          "where it is set; give every node the same"
          for other, rate in (("a", "10/1m"), ("same", "10/60s"))]]), said()


def test_cluster_max_concurrent_holds_across_nodes_starting_at_once(
        postgres_url: str, nodes: list[Node]) -> None:
    """Two nodes start 10 workflows each at the same moment, cluster_max_concurrent=3:
    never more than 3 of the host's workflows hold a slot at once across the cluster
    (sampled in the store, and by the steps' journal times), and all 20 finish."""
    url = postgres_url
    a = Node.start(url, "a", LEASE, start=10, prefix="a", steps=6, delay=0.04,
                   wait=False, cluster_max_concurrent=3)
    b = Node.start(url, "b", LEASE, start=10, prefix="b", steps=6, delay=0.04,
                   wait=False, cluster_max_concurrent=3)
    nodes.extend([a, b])
    a.wait_ready()
    b.wait_ready()
    look = Look(url)
    ids = [f"{p}{i}" for p in "ab" for i in range(10)]
    try:
        seen: list[int] = []

        def done() -> bool:
            seen.append(look.holding())
            return _finished(look, ids)

        wait_for(done, 60, "every workflow to finish", every=0.01)
        assert max(seen) <= 3, seen
        writers = _check_journals(look, ids, 6)
        assert _most_at_once(look.spans(ids)) <= 3
        ran = [w[0] for w in writers.values()]
        assert set(ran) == {"a", "b"}, ran  # both nodes ran some
    finally:
        look.close()


def test_a_dead_nodes_admitted_workflows_count_until_they_end(
        postgres_url: str, nodes: list[Node]) -> None:
    """cluster_max_concurrent=3: node a runs three long workflows and is killed; node b,
    with three of its own waiting, starts none of them while a's three are unfinished
    (not during the lease, not while it resumes them): one of b's starts only once one
    of a's ended; and all six finish."""
    url = postgres_url
    a = Node.start(url, "a", LEASE, start=3, prefix="a", steps=80, delay=0.05,
                   cluster_max_concurrent=3)
    nodes.append(a)
    look = Look(url)
    old = [f"a{i}" for i in range(3)]
    try:
        wait_for(lambda: all(len(look.steps(w)) >= 3 for w in old), 20, "progress on a")
        b = Node.start(url, "b", LEASE, start=3, prefix="b", steps=4, delay=0.05,
                       cluster_max_concurrent=3)
        nodes.append(b)
        mine = [f"b{i}" for i in range(3)]
        statuses = look.statuses()
        assert {statuses[w] for w in old} <= {"running", "waiting", "sleeping"}, statuses
        assert {statuses[w] for w in mine} == {"pending"}, statuses
        a.kill()
        seen: list[int] = []

        def done() -> bool:
            seen.append(look.holding())
            return _finished(look, old + mine)

        wait_for(done, 60, "every workflow to finish", every=0.01)
        assert max(seen) <= 3, seen
        writers = _check_journals(look, old, 80)
        assert {w[-1] for w in writers.values()} == {"b"}  # a's moved to b
        _check_journals(look, mine, 4)
        spans = look.spans(old + mine)
        assert _most_at_once(spans) <= 3
        # nothing of b's started before one of a's three ended
        assert min(spans[w][0] for w in mine) >= min(spans[w][1] for w in old)
    finally:
        look.close()


def test_the_rate_is_the_hosts_across_the_cluster(
        postgres_url: str, nodes: list[Node]) -> None:
    """rate "4/1s" on two nodes that start 6 workflows each at once: at most 4 are
    admitted in any second, across both nodes (their stored admission times)."""
    url = postgres_url
    a = Node.start(url, "a", LEASE, start=6, prefix="a", steps=1, delay=0.01, wait=False,
                   rate="4/1s")
    b = Node.start(url, "b", LEASE, start=6, prefix="b", steps=1, delay=0.01, wait=False,
                   rate="4/1s")
    nodes.extend([a, b])
    a.wait_ready()
    b.wait_ready()
    look = Look(url)
    ids = [f"{p}{i}" for p in "ab" for i in range(6)]
    try:
        wait_for(lambda: _finished(look, ids), 60, "every workflow to finish")
        times = look.store.admitted_since("workflows", 0.0)
        assert len(times) == 12
        assert all(later - first >= 1.0 for first, later in zip(times, times[4:],
                                                                  strict=False)), times
    finally:
        look.close()


async def test_a_workflow_claimed_before_the_host_runs_waits_for_it(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node starts its cluster membership, then its workflow host: a claim round of
    the membership's thread that ended in between had its workflows adopted by a host
    not running yet, and the node's start failed (``RuntimeError: workflow host
    'workflows' is not running``, seen once in CI). Here a tool creates a workflow in
    that window, and the host starts only once the membership claimed it."""
    import cluster_app  # noqa: F401 (the workflow's code, which the node imports by name)
    import trio

    from garrison.cluster import ClusterMember
    from garrison.hosts.workflow._host import WorkflowHost
    from garrison.persistence import Transaction, open_store

    run, post = WorkflowHost.run, ClusterMember._post
    claimed = trio.Event()
    token: list[Any] = []

    def posting(self: ClusterMember, kind: str, data: Any) -> None:
        post(self, kind, data)
        if kind == "claimed":
            token[0].run_sync_soon(claimed.set)

    async def late_run(self: WorkflowHost, **kw: Any) -> None:
        token.append(trio.lowlevel.current_trio_token())
        with open_store(postgres_url, lock=False) as tool:
            tool.write(Transaction().create_workflow("late", "cluster_app:sleeper", [1, 0.1]))
        with trio.fail_after(10):
            await claimed.wait()
        await trio.sleep(0.1)  # (the membership's task has seen it)
        await run(self, **kw)

    monkeypatch.setattr(ClusterMember, "_post", posting)
    monkeypatch.setattr(WorkflowHost, "run", late_run)
    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE) as node:
        with trio.fail_after(10):
            assert await node.workflow("late").result() == 1


async def test_a_claimed_workflow_that_ends_at_once_is_not_marked_running_after_its_end(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node marks the parked workflows it claims ``running`` before they run: a slow
    status write landing after a workflow's own end made it ``running`` for good (its
    ``result()`` never returned; one run in ten of a test_queue test)."""
    import cluster_app
    import trio

    from garrison.persistence import Op
    from garrison.persistence._postgres import PostgresStore

    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE,
                                  max_concurrent=2) as node:
        for wid in ("a", "b"):
            await node.start_workflow(cluster_app.sleeper, 1, 0.3, id=wid)
        await trio.sleep(0.2)  # both sleep, and the store says so
    look = Look(postgres_url)
    try:
        assert look.statuses() == {"a": "sleeping", "b": "sleeping"}
    finally:
        look.close()
    commit = PostgresStore.commit

    async def slow_status_writes(self: PostgresStore, tx: garrison.persistence.Transaction
                                 ) -> list[object]:
        if all(op is Op.UPDATE_WORKFLOW and dict(params[2]).get("status") == "running"
               for op, params in tx.ops):
            # any commit marking workflows running, alone, comes late (not the parked
            # statuses the host writes shortly after a workflow parks: delayed here,
            # they would overtake the commits queued after them, which the store's
            # group commit never lets happen, and mark an ended workflow parked)
            await trio.sleep(0.3)
        return await commit(self, tx)

    monkeypatch.setattr(PostgresStore, "commit", slow_status_writes)
    # one slot: the first is resumed at start, the second claimed once the first ended
    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE,
                                  max_concurrent=1) as node:
        with trio.fail_after(10):
            assert [await node.workflow(wid).result() for wid in ("a", "b")] == [1, 1]
            await trio.sleep(0.5)  # any late write has landed
    look = Look(postgres_url)
    try:
        assert look.statuses() == {"a": "completed", "b": "completed"}
    finally:
        look.close()


async def _blocked(node: garrison.Node, url: str, wid: str) -> None:
    """A workflow whose journal its code does not follow (created by a tool), blocked
    on ``node``, which gave it up (owned by nobody, not in memory). (A workflow whose
    code does not import is not claimed by a node of a cluster: it waits for a node
    that has the code.)"""
    import trio

    from garrison.persistence import RawJson, Transaction, open_store

    with open_store(url, lock=False) as tool:
        tool.write(Transaction().create_workflow(wid, "cluster_app:sleeper", [1, 0.1])
                   .append_journal(wid, 1, "activity", "elsewhere", RawJson('{"ok": 1}')))
        with trio.fail_after(10):
            while not any(run[0] == wid for run in node._members[0]._blocked) or \
                    wid in node.hosts["workflows"].active or \
                    tool.get_workflow(wid).status != "blocked":  # type: ignore[union-attr]
                await trio.sleep(0.02)


async def test_a_drain_hands_over_a_blocked_workflow_too(postgres_url: str) -> None:
    """A blocked workflow stayed in its host's ``active`` (its code has ended): the
    drain skipped it, and waited for ``active`` to empty for ever. It leaves at once
    now, as it blocks (released: a node with code that takes its recorded path may
    resume it), and the drain ends."""
    import trio

    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        await _blocked(node, postgres_url, "x")
        node.drain()
        with trio.fail_after(5):
            await node.drained()
        assert "x" not in node.hosts["workflows"].active
        look = Look(postgres_url)
        try:
            assert look.owners() == {"x": None}
        finally:
            look.close()


async def test_a_lapsed_lease_drops_a_blocked_workflow_too(postgres_url: str) -> None:
    """When its lease lapsed a node dropped its running workflows but kept a blocked one
    in memory, which another node may own from then on (this node then answered for it
    from that stale copy). It leaves as it blocks now; and the node, joining again
    under a new epoch with the same code, does not claim it again."""
    import trio

    async with garrison.open_node(store=postgres_url, name="t", lease="1s") as node:
        await _blocked(node, postgres_url, "x")
        host = node.hosts["workflows"]
        member = node._members[0]
        epoch = member.epoch
        look = Look(postgres_url)
        try:  # cut off: its lease ends now
            look.lapse(epoch)
        finally:
            look.close()
        with trio.fail_after(10):
            while member.epoch == epoch:  # it joined again, under a new epoch
                await trio.sleep(0.02)
        await trio.sleep(1)  # its rounds: it claims x no more
        assert "x" not in host.active
        look = Look(postgres_url)
        try:
            assert look.owners() == {"x": None} and look.statuses() == {"x": "blocked"}
        finally:
            look.close()


async def test_a_drain_hands_over_a_workflow_waiting_in_the_queue_at_once(
        postgres_url: str) -> None:
    """A workflow waiting in the node's queue (here for the cluster's admission) stayed
    in the queue through a drain: it would start only to stop at its first step, and
    while the cluster admitted nothing more (its one slot held by the other workflow,
    moved away) the drain never ended. It leaves at once, never run."""
    import cluster_app
    import trio

    async with garrison.open_node(store=postgres_url, name="t", lease="30s",
                                  cluster_max_concurrent=1) as node:
        await node.start_workflow(cluster_app.sleeper, 100, 0.5, id="w1")
        await node.start_workflow(cluster_app.sleeper, 1, 0.5, id="w2")
        assert node.workflow("w2").status() == "pending"  # the cluster's slot is w1's
        node.drain()
        with trio.fail_after(5):
            await node.drained()
        assert node.hosts["workflows"].active == {}
        look = Look(postgres_url)
        try:
            assert look.owners() == {"w1": None, "w2": None}
            assert look.statuses()["w2"] == "pending"
            assert look.store.journal("w2") == []  # it never ran
        finally:
            look.close()


async def test_a_cancel_made_between_a_claim_and_its_adoption_is_kept(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The membership thread claims a workflow; the node runs it when the trio side
    takes the claim. A cancel asked on this node in between went to the store only (the
    workflow was not running here, and this node, its owner, gets no wakeup), and the
    node ran the claim's older copy of the row: the cancel was lost."""
    import trio

    from garrison.cluster import _member
    from garrison.persistence import Transaction, open_store

    adopt = _member.adopt

    async def cancelled_first(host: Any, records: list[Any], *args: Any) -> list[str]:
        for record in records:  # a cancel comes between the claim and its adoption
            assert host.request_cancel(record.workflow_id)
        return await adopt(host, records, *args)

    monkeypatch.setattr(_member, "adopt", cancelled_first)
    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        with open_store(postgres_url, lock=False) as tool:  # the cluster claims it
            tool.write(Transaction().create_workflow("w", "cluster_app:sleeper", [100, 0.5]))
        with trio.fail_after(5), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()


@pytest.mark.parametrize(("status", "when"), [("running", "adopted first"),
                                               ("pending", "woken first")])
async def test_a_tools_terminate_made_between_a_claim_and_its_adoption_ends_it_once(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch, status: str, when: str) -> None:
    """The membership thread claims a workflow (an orphan, or one waiting unclaimed); a
    tool's terminate lands before the node adopts it (the claim spent no wakeup of it,
    this node owns it). Its adoption loads the request and ends it unrun; or the
    terminate's wakeup is refreshed first, which ends it, and the adoption leaves it.
    Either way it ends once, as terminated, and a process monitoring it hears so once.
    (A check of 7bca6cb's race on this path: it holds.)"""
    import trio

    from garrison import _store_tools, process
    from garrison.cluster import _member
    from garrison.persistence import Transaction, open_store

    adopt = _member.adopt
    asked: list[Any] = []

    async def terminated_first(host: Any, records: list[Any], *args: Any) -> list[str]:
        if not asked and any(r.workflow_id == "w" for r in records):
            with open_store(postgres_url, lock=False) as tool:
                asked.append(_store_tools.ask_terminate(tool, "w", "meanwhile"))
            if when == "woken first":
                await trio.sleep(1)  # (its wakeup, this node's now, is refreshed)
        return await adopt(host, records, *args)

    monkeypatch.setattr(_member, "adopt", terminated_first)
    heard: list[str] = []

    async def watch() -> None:
        process.monitor(garrison.Pid("workflows", "w"))
        event = await process.events().receive()
        heard.append(f"{event.kind.name}: {event.error}")

    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        with open_store(postgres_url, lock=False) as tool:  # the cluster claims it
            tool.write(Transaction().create_workflow("w", "cluster_app:sleeper", [100, 0.5],
                                                     status=status))
        await node.spawn(watch)
        with trio.fail_after(10), pytest.raises(garrison.WorkflowFailed, match="meanwhile"):
            await node.workflow("w").result()
        assert asked and asked[0] is not None
        with trio.fail_after(10):
            while not heard:
                await trio.sleep(0.05)
        await trio.sleep(1)  # (a second end, if any, has come)
        assert heard == ["EXIT: Terminated: meanwhile"]
        assert node.workflow("w").status() == "failed"
        assert node.workflow("w").history() == []  # (it never ran)
        assert node.hosts["workflows"].store.pending_messages("w") == []


async def test_a_workflow_left_to_the_cluster_is_not_taken_back_before_its_release(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full node leaves a new workflow to the cluster: its membership thread releases
    it shortly. ``result()`` asked before that release landed saw this node as the
    owner still and queued it here; released, the workflow ran elsewhere (here, claimed
    afresh once a slot freed) while the queued copy was refused by the store, and
    ``result()`` waited for that copy for ever."""

    from garrison.persistence._pg_cluster import PgCluster

    release = PgCluster.release

    def slow_release(self: PgCluster, ids: list[str] | None) -> int:
        if ids:
            time.sleep(0.3)  # the thread releases it a little later
        return release(self, ids)

    monkeypatch.setattr(PgCluster, "release", slow_release)
    await _second_start_left_to_the_cluster_finishes(postgres_url, "30s")


async def test_a_release_that_fails_is_tried_again(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster round whose release failed (the server away for a moment) dropped what
    it was releasing: the workflow stayed owned by this live node, which had let it go,
    so no node ever claimed it. The next round releases it."""
    import psycopg

    from garrison.persistence._pg_cluster import PgCluster

    release = PgCluster.release
    failed: list[list[str]] = []

    def flaky_release(self: PgCluster, ids: list[str] | None) -> int:
        if ids and not failed:
            failed.append(ids)
            raise psycopg.OperationalError("the server is away for a moment")
        return release(self, ids)

    monkeypatch.setattr(PgCluster, "release", flaky_release)
    await _second_start_left_to_the_cluster_finishes(postgres_url, "3s")
    assert failed == [["w2"]]


async def _second_start_left_to_the_cluster_finishes(url: str, lease: str) -> None:
    """On a node with one slot, ``w1`` runs and ``w2`` is left unowned to the cluster
    (this node claims it back once its slot frees): ``w2``'s result arrives."""
    import cluster_app
    import trio

    async with garrison.open_node(store=url, name="t", lease=lease, max_concurrent=1) as node:
        await node.start_workflow(cluster_app.sleeper, 1, 0.5, id="w1")
        await node.start_workflow(cluster_app.sleeper, 1, 0.1, id="w2")  # left to others
        with trio.fail_after(10):
            assert await node.workflow("w2").result() == 1


async def test_the_claim_rounds_find_claimable_workflows_by_index_however_the_table_grew(
        postgres_url: str) -> None:
    """Each claim round counts the claimable workflows (unfinished ones no live node
    owns). psycopg prepares a statement run five times; the server's plan for it, made
    once the table had been analyzed small (autovacuum does so on a new store), was a
    sequential scan, kept as the table grew: an idle node read every workflow row at
    every round until the server analyzed the table again."""
    import cluster_app
    import trio
    from _stores import sql, workflows_table_counts

    grown = 20_000
    async with garrison.open_node(store=postgres_url, name="a", lease="1s") as node:
        sql(postgres_url, "ALTER TABLE workflows SET (autovacuum_enabled = false)")
        await node.start_workflow(cluster_app.steps, 1, 0, id="w")
        await node.workflow("w").result()
        sql(postgres_url, "ANALYZE workflows")
        await trio.sleep(3)  # rounds enough for the count's plan to be kept
        sql(postgres_url, "INSERT INTO workflows (workflow_id, name, status, created, "
                          "updated) SELECT 'old-' || i, 'app:f', 'completed', 0, 0 "
                          "FROM generate_series(1, ?) i", (grown,))
        await trio.sleep(3)
    _inserted, read = workflows_table_counts(postgres_url)
    assert read < grown


async def test_a_leaving_node_releases_its_running_workflows_and_leaves_the_ended_alone(
        postgres_url: str) -> None:
    """A node that closes gives up the workflows it runs (any node claims them now),
    and writes nothing to those that ended: it used to rewrite the row of every
    workflow it had ever ended (a sequential scan of the table and a new version of each
    row: seconds, and as many dead rows, for a node that ended a few hundred thousand)."""
    import cluster_app
    from _stores import sql

    async with garrison.open_node(store=postgres_url, name="a") as node:
        await node.start_workflow(cluster_app.steps, 2, 0, id="ended")
        assert await node.workflow("ended").result() == [0, 1]
        await node.start_workflow(cluster_app.ends_on_a_message, id="running")
        (epoch,), = sql(postgres_url, "SELECT epoch FROM nodes WHERE name = 'a'")
        (before,), = sql(postgres_url, "SELECT xmin::text FROM workflows "
                                       "WHERE workflow_id = 'ended'")
    rows = sql(postgres_url, "SELECT workflow_id, status, owner_epoch, owner, xmin::text "
                             "FROM workflows ORDER BY workflow_id")
    assert rows == [("ended", "completed", epoch, "a", before),
                    ("running", "waiting", None, None, rows[1][4])]


async def test_a_node_whose_store_gave_up_leaves_its_workflows_to_the_others(
        postgres_url: str) -> None:
    """A node whose store gave up for good (its writer could not reconnect within
    ``retry_for``) kept renewing its lease from its cluster connection, which still
    worked: its workflows stayed owned by a node that could record nothing, and no
    other node ever took them (nor the orphans it went on claiming). It leaves the
    cluster at once; the others take its workflows and finish them."""
    import cluster_app
    import psycopg
    import trio

    from garrison.persistence import PostgresStore
    from garrison.persistence._pg_cluster import epoch_lock_class

    role = "garrison_gives_up"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    store_a = PostgresStore(postgres_url.replace("postgres@", f"{role}@"), retry_for=0.3)
    async with garrison.open_node(store=store_a, name="a", lease="1s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="1s") as b:
        await a.start_workflow(cluster_app.sleeper, 30, 0.1, id="w")
        epoch = a._members[0].epoch
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} NOLOGIN")  # a's writer cannot come back
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                         "'advisory' AND classid = %s::bigint::oid AND objid = %s::oid "
                         "AND objsubid = 2", (epoch_lock_class("garrison"), epoch))
            with trio.fail_after(10):
                while store_a._failed is None:  # its next step gives up
                    await trio.sleep(0.05)
            conn.execute(f"ALTER ROLE {role} LOGIN")  # the outage is over, a's store not
        with trio.fail_after(15):
            assert await b.workflow("w").result() == 30
        look = Look(postgres_url)
        try:
            assert [n.name for n in look.nodes()] == ["b"]
            steps = look.store.journal("w")
            assert [(r.seq, r.kind) for r in steps] == [(i, "sleep") for i in range(1, 31)]
        finally:
            look.close()


async def test_a_node_whose_store_gave_up_leaves_at_once_while_the_server_is_away(
        postgres_url: str) -> None:
    """The server out of reach past ``retry_for``: the store gave up and the node's
    workflows stopped, but the node left the cluster (and `garrison run` exited) only
    once the server answered again, as leaving first wrote its row ``lost``: for the
    whole outage it was a dead node that never exited. It leaves at once (its row is
    left to lapse with its lease), its close waits for no server, and what its
    workflows recorded stays as it was: the next node resumes them."""
    import time

    import cluster_app
    import psycopg
    import trio

    from garrison._node import store_gave_up
    from garrison.persistence import PostgresStore

    dbname = postgres_url.rsplit("/", 1)[1]
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"

    def refuse(refused: bool) -> None:  # (as a server that is down, for this database)
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS {str(not refused).lower()}")
            if refused:
                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = %s", (dbname,))

    ids = [f"w{i}" for i in range(3)]
    try:
        async with garrison.open_node(store=PostgresStore(postgres_url, retry_for=0.2),
                                      name="a", lease="30s") as node:
            for wid in ids:
                await node.start_workflow(cluster_app.sleeper, 30, 0.02, id=wid)
            await trio.sleep(0.1)
            refuse(True)
            with trio.fail_after(5):  # (it waited for the server: for ever here)
                error = await store_gave_up(node)
            assert isinstance(error, garrison.StoreError)
            began = time.monotonic()
        assert time.monotonic() - began < 4  # (the close asked nothing of the server)
    finally:
        refuse(False)
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as node:
        with trio.fail_after(10):  # (the row of a dead node of its name: taken at once)
            for wid in ids:
                assert await node.workflow(wid).result() == 30
    look = Look(postgres_url)
    try:
        for wid in ids:
            steps = look.store.journal(wid)
            assert [(r.seq, r.kind) for r in steps] == [(i, "sleep") for i in range(1, 31)]
    finally:
        look.close()


async def test_a_writer_whose_old_session_lingers_takes_it_over_on_reconnect(
        postgres_url: str) -> None:
    """A cluster node's writer reconnecting while the server still ran its old session
    (a half-open connection after a network cut: the server notices only by its TCP
    keepalive, two hours by default) found its own incarnation's lock held and gave up
    for good at once, blaming 'another node' that cannot exist (no other node holds
    this node's epoch). The old session is this writer's own: it is terminated (which
    settles its transaction in flight), the lock taken again, and the write goes on."""
    import cluster_app
    import psycopg
    import trio

    from garrison.persistence._pg_cluster import epoch_lock_class

    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as node:
        await node.start_workflow(cluster_app.sleeper, 1, 0.01, id="w1")
        store = node.hosts["workflows"].store
        key = (epoch_lock_class("garrison"), node._members[0].epoch)
        lingering = psycopg.connect(postgres_url, autocommit=True)
        try:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype "
                             "= 'advisory' AND classid = %s::bigint::oid AND objid = %s::oid "
                             "AND objsubid = 2", key)
            # the old session, still alive on the server: it holds the epoch's lock
            lingering.execute("SELECT pg_advisory_lock(%s, %s)", key)
            with trio.fail_after(10):
                await node.start_workflow(cluster_app.sleeper, 1, 0.01, id="w2")
                assert await node.workflow("w2").result() == 1
            assert store.failed is None
            with pytest.raises(psycopg.OperationalError):
                lingering.execute("SELECT 1")  # it was terminated
        finally:
            lingering.close()


async def test_a_node_joining_does_not_take_a_live_node_whose_writer_dropped(
        postgres_url: str) -> None:
    """A node joining marks at once every live node whose writer's lock is free (a
    killed node: no waiting out its lease). A live node whose writer's connection had
    dropped (a blink; idle, it reconnects at its next write) counted as dead too: its
    workflows were taken, its cluster names freed, its processes reported
    ``noconnection``, while it renewed its lease all along. Its cluster connection
    holds a lock of its own: a node is dead when both are free."""
    import cluster_app
    import psycopg
    import trio

    from garrison.persistence._pg_cluster import epoch_lock_class

    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
        await a.start_workflow(cluster_app.sleeper, 1, 1000.0, id="w")
        key = (epoch_lock_class("garrison"), a._members[0].epoch)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = "
                "%s::bigint::oid AND objid = %s::oid AND objsubid = 2", key).fetchone()
            assert row is not None  # (a's writer holds its epoch's lock)
            writer = row[0]
            assert conn.execute("SELECT pg_terminate_backend(%s)", (writer,)).fetchone() == (
                True,)
            with trio.fail_after(5):
                # the writer's session is gone (by its pid: a writer reconnecting at
                # once takes the lock again, so the lock may never be seen free)
                while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                   (writer,)).fetchall():
                    await trio.sleep(0.01)
        async with garrison.open_node(store=postgres_url, name="b", lease="30s"):
            look = Look(postgres_url)
            try:
                assert look.owners() == {"w": "a"}
                assert [(n.name, n.status) for n in look.nodes()] == [
                    ("a", "active"), ("b", "active")]
            finally:
                look.close()


async def test_long_messages_nobody_takes_are_cleaned_up(postgres_url: str) -> None:
    """A message over NOTIFY's 8000 bytes to a plain pid of a node that is down (or
    gone) left its body in the ``messages`` table for ever: its notification reached no
    one and nothing else deletes it, so the table only grew. The cluster's periodic
    cleanup deletes bodies nobody took within an hour.

    (A send to a node this one never saw live is not sent at all: a dead letter once
    the store says so. The body stays behind for a node that was live when the
    message was sent, and down by then: its incarnation is made live here.)"""
    import trio

    from garrison.persistence._pg_cluster import MESSAGE_TTL, PgCluster

    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
        # a long one, to a node seen live (not there any more)
        remote = a._router.remote
        remote.live = {*remote.live, ("gone-node", "3f2a9c1e.")}
        await a.send("processes/3f2a9c1e.12@gone-node", "t", "x" * 9000)
        look = Look(postgres_url)
        try:
            def bodies() -> list[Any]:
                return look.store._query("SELECT id FROM garrison.messages")

            with trio.fail_after(5):
                while not bodies():
                    await trio.sleep(0.02)
            look.store._query("UPDATE garrison.messages SET created = created - %s "
                              "RETURNING 1", (MESSAGE_TTL + 1,))
            cluster = PgCluster(a.hosts["workflows"].store)
            try:
                cluster.cleanup_wakeups()
            finally:
                cluster.close()
            assert bodies() == []
        finally:
            look.close()


# -- rolling deploys: a node without a workflow's code leaves it to one that has it --------
ROLLOUT_APP = '''
import cluster_app


async def work(n: int, delay: float = 0.02) -> list[int]:
    """A workflow type only some nodes have (deployed to them first)."""
    return await cluster_app.steps(n, delay)
'''


def _rollout_code(tmp_path: Path) -> dict[str, str]:
    """The environment of a node process that has ``rollout_app`` (this test process,
    and a node started without it, cannot import it)."""
    code = tmp_path / "new_release"
    code.mkdir()
    (code / "rollout_app.py").write_text(ROLLOUT_APP)
    return {"PYTHONPATH": f"{Path(__file__).resolve().parent.parent}:{code}"}


async def test_a_node_without_a_workflows_code_leaves_it_to_a_node_that_has_it(
        postgres_url: str, nodes: list[Node], tmp_path: Path,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rolling deploy: a new workflow type reaches node b first, while node t still
    runs the old release. t claimed the tool's workflow of that type, could not import
    it, and recorded it ``blocked`` (a non-determinism error), owned by t for good: b,
    which has the code, never got it. t releases it unrun (nothing journaled, still
    ``pending``), warns once naming the workflow, its name and the import error, and
    claims no workflow of that name again (no re-claim loop); b claims and runs it."""
    import logging

    import trio

    from garrison.persistence import Transaction
    from garrison.persistence._pg_cluster import PgCluster

    claims: list[tuple[str | None, str]] = []
    claim = PgCluster.claim

    def counted(self: PgCluster, limit: int, *args: Any, **kwargs: Any) -> list[Any]:
        got = claim(self, limit, *args, **kwargs)
        claims.extend((self.name, r.workflow_id) for r in got)
        return got

    monkeypatch.setattr(PgCluster, "claim", counted)
    caplog.set_level(logging.INFO, logger="garrison")
    url = postgres_url
    env = _rollout_code(tmp_path)
    async with garrison.open_node(store=url, name="t", lease=LEASE):
        look = Look(url)
        try:
            look.store.write(Transaction().create_workflow("new1", "rollout_app:work", [3]))
            with trio.fail_after(10):
                while ("t", "new1") not in claims or look.owners().get("new1") is not None:
                    await trio.sleep(0.02)
            look.store.write(Transaction().create_workflow("new2", "rollout_app:work", [2]))
            await trio.sleep(4 * LEASE)  # rounds and notifications: t claims neither again
            assert claims == [("t", "new1")]
            assert look.owners() == {"new1": None, "new2": None}
            assert look.statuses() == {"new1": "pending", "new2": "pending"}
            assert look.store.journal("new1") == []
            nodes.append(Node.start(url, "b", LEASE, env=env))  # the new release
            await trio.to_thread.run_sync(
                lambda: wait_for(lambda: _finished(look, ["new1", "new2"]), 20,
                                 "b to run both"))
            assert [look.result(w) for w in ("new1", "new2")] == [[0, 1, 2], [0, 1]]
            assert {n for _, n in look.steps("new1") + look.steps("new2")} == {"b"}
            assert ("t", "new2") not in claims
        finally:
            look.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "rollout_app:work" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "new1" in message and "No module named 'rollout_app'" in message, message


async def test_a_takeover_by_a_node_without_the_code_leaves_the_workflow_to_one_with_it(
        postgres_url: str, nodes: list[Node], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The node running a workflow of the new release dies; the node that takes its
    workflows over (here at its start, which takes a dead node's at once) still runs
    the old release. It releases the workflow unrun (its journal as the dead node left
    it, its status too) instead of blocking it; a node of the new release finishes it,
    each step recorded once, in order."""
    import logging

    import trio

    from garrison.persistence import Transaction

    caplog.set_level(logging.INFO, logger="garrison")
    url = postgres_url
    env = _rollout_code(tmp_path)
    a = Node.start(url, "a", LEASE, env=env)
    nodes.append(a)
    look = Look(url)
    try:
        look.store.write(Transaction().create_workflow("mv", "rollout_app:work", [30, 0.1]))
        wait_for(lambda: len(look.steps("mv")) >= 3, 20, "progress on a")
        a.kill()
        async with garrison.open_node(store=url, name="t", lease=LEASE) as t:
            with trio.fail_after(10):
                while "mv" in t.hosts["workflows"].active or look.owners()["mv"] is not None:
                    await trio.sleep(0.02)
            assert look.statuses()["mv"] == "running"  # as a left it
            done = len(look.steps("mv"))
            await trio.sleep(2 * LEASE)
            assert look.owners() == {"mv": None} and len(look.steps("mv")) == done
            nodes.append(Node.start(url, "c", LEASE, env=env))
            await trio.to_thread.run_sync(
                lambda: wait_for(lambda: _finished(look, ["mv"]), 20, "c to finish it"))
        writers = _check_journals(look, ["mv"], 30)["mv"]
        assert set(writers[:done]) == {"a"} and set(writers[done:]) == {"c"}, writers
    finally:
        look.close()
    assert any("cannot run workflow mv" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    assert not [r for r in caplog.records if "blocked" in r.getMessage()]


SETTLE_APP = '''
from garrison import process, workflow


async def flow(x: int) -> int:
    """Sets its state and a search attribute, then waits (the code of each release):
    a resumed run replays the sets (its journal records the now() after them)."""
    workflow.set_state("stage", "charged")
    workflow.attrs(search={"stage": "charged"})
    workflow.now()
    await process.inbox().receive()
    return x
'''


async def test_nodes_taking_over_workflows_store_what_their_code_set_on_the_replayed_path(
        postgres_url: str, nodes: list[Node], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes of two releases take over waiting workflows from killed nodes (kill -9):
    after each takeover the store holds the state and search attribute of the code
    that ran last, a release's new value or an old release's again (the node that ran
    the new one was killed once it had stored it), and the node taking them over
    told what its code changed without a read per workflow in its trio thread (the
    state of the ones it took together is read once)."""
    import trio

    from garrison.persistence import PostgresStore, Transaction

    url = postgres_url
    folders = {}
    for release, stage in (("old", "charged"), ("new", "paid")):
        folders[release] = tmp_path / release
        folders[release].mkdir()
        (folders[release] / "settle_app.py").write_text(SETTLE_APP.replace("charged", stage))
    root = Path(__file__).resolve().parent.parent
    ids = ["s1", "s2"]
    a = Node.start(url, "a", LEASE, env={"PYTHONPATH": f"{root}:{folders['old']}"})
    nodes.append(a)
    look = Look(url)

    def stored(stage: str) -> bool:
        return all(look.store.get_state(wid, "stage") == stage for wid in ids) and sorted(
            r.workflow_id for r in look.store.list_workflows(search={"stage": stage})) == ids

    try:
        look.store.write(Transaction().create_workflow("s1", "settle_app:flow", [1])
                         .create_workflow("s2", "settle_app:flow", [2]))
        wait_for(lambda: look.statuses() == {"s1": "waiting", "s2": "waiting"}
                 and stored("charged"), 20, "a to run them")
        a.kill()  # (before any settle: it ran the code they started with)
        b = Node.start(url, "b", LEASE, env={"PYTHONPATH": f"{root}:{folders['new']}"})
        nodes.append(b)
        wait_for(lambda: set(look.owners().values()) == {"b"} and stored("paid"), 20,
                 "b to take them over and store what its code set")
        # the old release again, in this process: it takes them over from b killed
        monkeypatch.syspath_prepend(str(folders["old"]))
        reads: list[str] = []
        batched: list[str] = []
        def counted(name: str) -> Callable[..., Any]:
            orig = getattr(PostgresStore, name)

            def read(self: PostgresStore, *args: Any) -> Any:
                if sys._getframe(1).f_code.co_name == "_settle_replayed":
                    reads.append(name)
                return orig(self, *args)
            return read
        for name in ("states", "get_workflow", "get_state"):
            monkeypatch.setattr(PostgresStore, name, counted(name))
        digests = PostgresStore.state_digests

        def read_many(self: PostgresStore, wids: list[str]) -> dict[str, Any]:
            if sys._getframe(1).f_code.co_name == "_settle_replayed":
                reads.append("state_digests")  # (a run loaded alone reads its own)
            else:
                batched.extend(wids)
            return digests(self, wids)
        monkeypatch.setattr(PostgresStore, "state_digests", read_many)
        async with garrison.open_node(store=url, name="t", lease=LEASE) as t:
            b.kill()  # (after its settle's write)
            with trio.fail_after(20):
                while sorted(wid for wid in ids if t.workflow(wid).status() == "waiting"
                             and wid in t.hosts["workflows"].active) != ids:
                    await trio.sleep(0.02)
                while not stored("charged"):
                    await trio.sleep(0.02)
            assert reads == []
            assert sorted(batched) == ids
    finally:
        look.close()
        sys.modules.pop("settle_app", None)


async def test_a_node_taking_over_many_workflows_reads_them_together_between_other_tasks(
        postgres_url: str, nodes: list[Node], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A node taking over a killed node's workflows read each one's row, journal, inbox,
    timers, watchers and promises alone, six blocking round trips per workflow in one
    step of its event loop: thousands froze the node for seconds, its console, its
    processes and the claims of its cluster with it. They are read a chunk at a time,
    one read of each table per chunk, in a step of its own; each runs on as before."""
    import trio

    from garrison.hosts.workflow import _ownership, _recovery
    from garrison.persistence import PostgresStore, Transaction

    monkeypatch.setattr(_recovery, "LOAD_CHUNK", 4, raising=False)
    monkeypatch.setattr(_ownership, "LOAD_CHUNK", 4, raising=False)
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "settle_app.py").write_text(SETTLE_APP)
    root = Path(__file__).resolve().parent.parent
    ids = [f"s{i}" for i in range(10)]
    a = Node.start(postgres_url, "a", LEASE, env={"PYTHONPATH": f"{root}:{folder}"})
    nodes.append(a)
    look = Look(postgres_url)
    monkeypatch.syspath_prepend(str(folder))
    alone: list[str] = []
    together: list[tuple[int, bool, int]] = []  # (workflows read, their rows too, step)

    class Steps(trio.abc.Instrument):
        count = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            Steps.count += 1
    def alone_read(name: str) -> Callable[..., Any]:
        orig = getattr(PostgresStore, name)

        def one(self: PostgresStore, *args: Any) -> Any:
            if {"adopt", "take", "load"} & {sys._getframe(1).f_code.co_name,
                                             sys._getframe(2).f_code.co_name}:
                alone.append(name)
            return orig(self, *args)
        return one
    for name in ("get_workflow", "journal_entries", "pending_messages", "timers", "monitors",
                 "promises"):
        monkeypatch.setattr(PostgresStore, name, alone_read(name))
    many = getattr(PostgresStore, "resume_rows", None)

    def read(self: PostgresStore, wids: list[str], *, records: bool = False) -> Any:
        together.append((len(wids), records, Steps.count))
        assert many is not None
        return many(self, wids, records=records)
    monkeypatch.setattr(PostgresStore, "resume_rows", read, raising=False)
    try:
        tx = Transaction()
        for i, wid in enumerate(ids):
            tx.create_workflow(wid, "settle_app:flow", [i])
        look.store.write(tx)
        wait_for(lambda: look.statuses() == dict.fromkeys(ids, "waiting"), 20, "a to run them")
        trio.lowlevel.add_instrument(Steps())
        async with garrison.open_node(store=postgres_url, name="t", lease=LEASE) as t:
            a.kill()
            with trio.fail_after(20):
                while sorted(wid for wid in ids if wid in t.hosts["workflows"].active) != ids:
                    await trio.sleep(0.02)
            assert alone == []
            assert [(n, rows) for n, rows, _ in together] == [(4, True), (4, True), (2, True)]
            assert together[0][2] < together[1][2] < together[2][2]  # (a step each)
            for i, wid in enumerate(ids):
                await t.send(t.workflow(wid).pid, "go", None)
                assert await t.workflow(wid).result() == i
    finally:
        look.close()
        sys.modules.pop("settle_app", None)


async def test_off_a_cluster_a_workflow_whose_code_is_gone_is_blocked(
        tmp_path: Path, autojump_clock: object) -> None:
    """The only node of a store has nobody to leave a workflow to: one whose code does
    not import there is ``blocked`` at once, naming the import error (as before)."""
    import trio

    from garrison.persistence import Transaction, open_store

    path = str(tmp_path / "store.db")
    with open_store(path) as tool:
        tool.write(Transaction().create_workflow("gone", "rollout_app:work", [1]))
    async with garrison.open_node(store=path) as node:
        with trio.fail_after(5):
            while node.workflow("gone").status() != "blocked":
                await trio.sleep(0.01)
        with open_store(path, lock=False) as look:
            record = look.get_workflow("gone")
        assert record is not None and record.error is not None
        assert record.error.type == "NonDeterminismError"
        assert "No module named 'rollout_app'" in record.error.message


# -- a newer node migrated the schema ------------------------------------------------------
async def test_a_node_that_finds_the_schema_migrated_past_its_code_leaves_the_cluster(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A rolling upgrade: a node of a newer release migrates the schema while a node of
    the old one runs. The old node checked the version only when it opened the store,
    and went on claiming and writing rows in the format it knows. At its next lease
    renewal it sees the newer version: its store writes nothing more, it leaves the
    cluster (its row ``lost``, so nodes that know the schema take its workflows at
    once) and says why in the log."""
    import logging

    import cluster_app
    import trio

    from garrison.persistence._pg_schema import SCHEMA_VERSION

    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node(store=postgres_url, name="old", lease=LEASE) as node:
        await node.start_workflow(cluster_app.sleeper, 1000, 0.05, id="w")
        # a schedule: once the store writes nothing more, its ticks stop with one error
        # (they were retried, with an error logged, every second for as long as it ran)
        await node.schedule("tick", cluster_app.sleeper, 1, 0.05, every="1s")
        store = node.hosts["workflows"].store
        look = Look(postgres_url)
        try:
            with trio.fail_after(5):
                while len(look.store.journal("w")) < 3:
                    await trio.sleep(0.02)
            look.store._query("INSERT INTO garrison.schema_version (version, applied) "
                              "VALUES (%s, 0) RETURNING 1", (SCHEMA_VERSION + 1,))
            with trio.fail_after(2 * LEASE):  # at its next renewal (the thread marks
                while [(n.name, n.status) for n in look.nodes(all_rows=True)] != [
                        ("old", "lost")] or not node.stats()["cluster"]["workflows"]["left"]:
                    await trio.sleep(0.02)  # the row, notifies, then says it left)
            assert store.failed is not None
            assert f"schema version {SCHEMA_VERSION + 1}" in str(store.failed)
            assert node.stats()["cluster"] == {"workflows": {"left": True, "refused": {},
                                                             "balanced": 0}}
            await trio.sleep(0.3)
            recorded = len(look.store.journal("w"))
            await trio.sleep(0.5)  # it records nothing more
            assert len(look.store.journal("w")) == recorded
            assert "w" not in node.hosts["workflows"].active
            with pytest.raises(garrison.StoreError, match="schema version"):
                await node.start_workflow(cluster_app.sleeper, 1, 0.05, id="w2")
            assert look.store.get_workflow("w2") is None
            await trio.sleep(4)
        finally:
            look.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    ticks = [m for m in errors if "schedule" in m]
    assert len(ticks) <= 2 and any("its schedules stop here" in m for m in ticks), ticks
    assert any("leaves the cluster" in m and f"knows schema version {SCHEMA_VERSION}" in m
               for m in errors), errors


async def test_a_node_that_gave_up_marks_itself_lost_again_after_a_refused_try(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: a node whose store gave up tries once to write its row ``lost`` (a write
    of its own in flight holds the row's lock past 500 ms, say: refused); with the
    server fine, its row stayed ``active`` and its workflows waited a whole lease
    elsewhere. It tries again at each round."""
    import trio

    from garrison.persistence._pg_cluster import PgCluster
    from garrison.persistence._pg_schema import SCHEMA_VERSION

    real = PgCluster.give_up
    tries: list[bool] = []

    def refused_once(self: PgCluster) -> bool:
        tries.append(bool(tries) and real(self))
        return tries[-1]

    monkeypatch.setattr(PgCluster, "give_up", refused_once)
    async with garrison.open_node(store=postgres_url, name="old", lease="3s"):
        look = Look(postgres_url)
        try:
            look.store._query("INSERT INTO garrison.schema_version (version, applied) "
                              "VALUES (%s, 0) RETURNING 1", (SCHEMA_VERSION + 1,))
            with trio.fail_after(8):  # (no other node marks its lapsed row lost here)
                while [(n.name, n.status) for n in look.nodes(all_rows=True)] != [
                        ("old", "lost")]:
                    await trio.sleep(0.05)
        finally:
            look.close()
    assert tries[0] is False and tries[-1] is True, tries


async def test_a_node_whose_name_was_taken_while_it_was_cut_off_writes_nothing_more(
        postgres_url: str) -> None:
    """Joining again after its lease lapsed, a node finds a live node under its name:
    its store had dropped its fence (writes checked against no lease at all); now every
    write is refused with the reason, and nothing is recorded."""
    import cluster_app
    import trio

    async with garrison.open_node(store=postgres_url, name="a", lease=LEASE) as old:
        look = Look(postgres_url)
        try:
            # cut off, as another node sees it: its row lost, its lease over
            look.store._query("UPDATE garrison.nodes SET status = 'lost' WHERE name = 'a' "
                              "RETURNING 1")
            async with garrison.open_node(store=postgres_url, name="a", lease=LEASE) as new:
                with trio.fail_after(3 * LEASE):
                    while not old._members[0].gave_up:
                        await trio.sleep(0.02)
                with pytest.raises(garrison.StoreError, match="cannot join the cluster again"):
                    await old.start_workflow(cluster_app.sleeper, 1, 0.05, id="w")
                assert look.store.get_workflow("w") is None
                await new.start_workflow(cluster_app.sleeper, 1, 0.01, id="w")
                assert await new.workflow("w").result() == 1
        finally:
            look.close()


async def _leave_by_a_schema_migration(postgres_url: str, node: Any) -> None:
    """Bump the schema version past the node's code; wait until the node has left."""
    import trio

    from garrison.persistence._pg_schema import SCHEMA_VERSION

    look = Look(postgres_url)
    try:
        look.store._query("INSERT INTO garrison.schema_version (version, applied) "
                          "VALUES (%s, 0) RETURNING 1", (SCHEMA_VERSION + 1,))
        with trio.fail_after(3 * LEASE):
            while not node._members[0].gave_up:
                await trio.sleep(0.02)
    finally:
        look.close()


async def test_a_node_that_left_the_cluster_idles_its_membership_thread(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that left for good (its store failed, or the schema was migrated past its
    code) renews nothing more: its membership thread's round returned at once, and with
    no renewal the thread's wait (until the next renewal is due) was negative: it spun,
    a core busy and the GIL taken from the node's event loop, for as long as the node
    ran."""
    import trio

    from garrison.cluster._member import ClusterMember

    rounds = [0]
    round_ = ClusterMember._round

    def counted(self: ClusterMember, n: int) -> None:
        rounds[0] += 1
        round_(self, n)

    monkeypatch.setattr(ClusterMember, "_round", counted)
    async with garrison.open_node(store=postgres_url, name="old", lease=LEASE) as node:
        await _leave_by_a_schema_migration(postgres_url, node)
        before = rounds[0]
        await trio.sleep(LEASE)
        assert rounds[0] - before <= 6, rounds[0] - before  # a round per lease/3, or so


async def test_a_node_that_left_the_cluster_drains_at_once(postgres_url: str) -> None:
    """SIGTERM to a clustered ``garrison run`` drains it, and it exits once drained. A
    node that left the cluster for good (store failed, schema migrated past its code)
    has nothing left to hand over, but its membership thread, returning from every
    round at once, never acted on the drain: ``drained()`` never returned and the
    process ran on until a second signal forced it (exit 143)."""
    import trio

    async with garrison.open_node(store=postgres_url, name="old", lease=LEASE) as node:
        await _leave_by_a_schema_migration(postgres_url, node)
        node.drain()
        with trio.fail_after(2 * LEASE):
            await node.drained()


# -- cancel, terminate and signals while a workflow moves ---------------------------------
async def test_a_cancel_a_terminate_and_signals_made_during_a_takeover_are_kept(
        postgres_url: str, nodes: list[Node]) -> None:
    """The node running three workflows dies; before its lease lapses a live node asks
    one to terminate, one to cancel, and signals the third. The takeover claims them
    (their wakeups spent by the claim) and each request takes effect on the new owner:
    nothing is lost, nothing runs twice."""
    import trio

    from garrison.persistence import Transaction

    url = postgres_url
    a = Node.start(url, "a", LEASE)
    nodes.append(a)
    look = Look(url)
    try:
        look.store.write(
            Transaction().create_workflow("term", "cluster_app:sleeper", [1000, 0.05])
            .create_workflow("canc", "cluster_app:sleeper", [1000, 0.05])
            .create_workflow("mb", "cluster_app:mailbox", [3]))
        wait_for(lambda: look.owners() == {"term": "a", "canc": "a", "mb": "a"}
                 and look.statuses()["mb"] == "waiting"
                 and all(len(look.store.journal(w)) >= 2 for w in ("term", "canc")),
                 10, "a to run the three")
        async with garrison.open_node(store=url, name="t", lease=LEASE) as t:
            await t.workflow("mb").signal("m", 0)
            a.kill()  # its lease runs on for up to a second: the requests come meanwhile
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    # (returns once it has ended: after the takeover)
                    nursery.start_soon(t.workflow("term").terminate, "stop it")
                    await t.workflow("canc").cancel()
                    await t.workflow("mb").signal("m", 1)
                    await t.workflow("mb").signal("m", 2)
                    assert look.owners() == {"term": "a", "canc": "a", "mb": "a"}  # not yet
                with pytest.raises(garrison.WorkflowFailed, match="stop it"):
                    await t.workflow("term").result()
                with pytest.raises(garrison.WorkflowCancelled):
                    await t.workflow("canc").result()
                assert await t.workflow("mb").result() == [0, 1, 2]
            assert look.statuses() == {"term": "failed", "canc": "cancelled",
                                       "mb": "completed"}
            consumed = [r.outcome for r in look.store.journal("mb") if r.kind == "receive"]
            assert len(consumed) == 3, look.store.journal("mb")
    finally:
        look.close()


async def test_signals_sent_while_a_drain_moves_a_workflow_all_arrive_once(
        postgres_url: str) -> None:
    """Signals sent from both nodes while a drain hands a waiting workflow from one node
    to the other (before, during and after its release): each is received once, in the
    order each node sent them, on whichever node runs it then."""
    import cluster_app
    import trio

    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(cluster_app.mailbox, 35, id="mb")
        for i in range(5):
            await a.workflow("mb").signal("m", ["a", i])
        a.drain()
        for i in range(5, 20):  # from both nodes while it moves
            await a.workflow("mb").signal("m", ["a", i])
            await b.workflow("mb").signal("m", ["b", i])
            await trio.sleep(0.005)
        with trio.fail_after(5):
            await a.drained()
        with trio.fail_after(10):
            got = await b.workflow("mb").result()
        assert "mb" in b.hosts["workflows"].finished  # it ended on b
        assert "mb" not in a.hosts["workflows"].finished
    assert [p for p in got if p[0] == "a"] == [["a", i] for i in range(20)]
    assert [p for p in got if p[0] == "b"] == [["b", i] for i in range(5, 20)]
    look = Look(postgres_url)
    try:
        receives = [r for r in look.store.journal("mb") if r.kind == "receive"]
        assert len(receives) == 35
    finally:
        look.close()


async def test_a_schedule_tick_on_a_node_without_the_code_starts_on_a_node_with_it(
        postgres_url: str, nodes: list[Node], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A rolling deploy with a schedule of the new workflow type: the tick came due on
    a node of the old release, which recorded the tick, could not import the workflow,
    logged an error and created nothing: the tick's run was lost (a node's restart
    within the catch-up window would have started it). The node creates the workflow
    unrun and leaves it to the cluster, as for a claim; a node with the code runs it."""
    import logging

    import trio

    from garrison.hosts.workflow._schedules import ScheduleDefinition

    caplog.set_level(logging.INFO, logger="garrison")
    url = postgres_url
    env = _rollout_code(tmp_path)
    async with garrison.open_node(store=url, name="t", lease=LEASE) as t:
        scheduler = t.hosts["workflows"].scheduler
        await scheduler.put(ScheduleDefinition.build("roll", "rollout_app:work", [2],
                                                     every="1s"))
        look = Look(url)
        try:
            with trio.fail_after(5):  # the first tick, on t
                while not look.statuses():
                    await trio.sleep(0.02)
            await scheduler.delete("roll")  # one tick is enough
            [wid] = look.statuses()
            assert wid.startswith("roll@")
            with trio.fail_after(5):  # t gives it up in its membership thread's round
                while look.owners() != {wid: None}:
                    await trio.sleep(0.02)
            assert look.statuses() == {wid: "pending"}
            nodes.append(Node.start(url, "b", LEASE, env=env))
            await trio.to_thread.run_sync(
                lambda: wait_for(lambda: look.statuses().get(wid) == "completed", 20,
                                 "b to run the tick's workflow"))
            assert look.result(wid) == [0, 1]
        finally:
            look.close()
    assert any(f"cannot run workflow {wid}" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


async def test_a_workflow_no_node_has_the_code_for_can_still_be_terminated(
        postgres_url: str) -> None:
    """A workflow whose code no live node has waits unowned (nodes without its code
    claim it no more): a terminate of it (a tool's, or a handle's) must still end it;
    ending it runs none of its code, so a node without the code ends it."""
    import trio

    from garrison import _store_tools
    from garrison.persistence import Transaction

    # a long lease: the tool's terminate wakes the cluster (no waiting for a round)
    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as t:
        look = Look(postgres_url)
        try:
            look.store.write(Transaction().create_workflow("x1", "rollout_app:work", [1])
                             .create_workflow("x2", "rollout_app:work", [1]))
            with trio.fail_after(10):
                while not t._members[0].refuses("rollout_app:work") or \
                        look.owners() != {"x1": None, "x2": None}:
                    await trio.sleep(0.02)
            await t.workflow("x1").terminate("the wrong app's workflow")
            assert await trio.to_thread.run_sync(
                lambda: _store_tools.terminate(look.store, "x2", "also wrong", wait=3))
            with trio.fail_after(10):
                for wid, reason in (("x1", "the wrong app's workflow"), ("x2", "also wrong")):
                    with pytest.raises(garrison.WorkflowFailed, match=reason):
                        await t.workflow(wid).result()
            assert look.store.journal("x1") == [] and look.store.journal("x2") == []
        finally:
            look.close()


async def _refused_workflow(node: garrison.Node, look: Look) -> None:
    """A tool creates the workflow ``x1`` of ``rollout_app:work``, whose code the lone
    ``node`` lacks: return once the node refuses it and it is owned by nobody."""
    import trio

    from garrison.persistence import Transaction

    look.store.write(Transaction().create_workflow("x1", "rollout_app:work", [1]))
    with trio.fail_after(10):
        while not node._members[0].refuses("rollout_app:work") or \
                look.owners() != {"x1": None}:
            await trio.sleep(0.02)


async def test_a_cancel_of_a_workflow_no_node_has_the_code_for_ends_it_if_it_never_ran(
        postgres_url: str) -> None:
    """A cancel runs the workflow's own cancellation handlers, so unlike a terminate it
    needs the code, once the workflow ran; one that never ran (``pending``, attempt 1,
    unowned) has no handler under way and ends ``cancelled`` at once, without its
    code, as a workflow waiting in a queue does (README, Queues). (It used to wait,
    still ``pending``, for a node with the code, which a lone node never claimed.)"""
    import trio


    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE) as t:
        look = Look(postgres_url)
        try:
            await _refused_workflow(t, look)
            # what the node says of it (besides its log's warning)
            [(host, seen)] = t.stats()["cluster"].items()
            assert host == "workflows" and seen["left"] is False
            assert list(seen["refused"]) == ["rollout_app:work"]
            assert "rollout_app" in seen["refused"]["rollout_app:work"]  # the import error
            handle = t.workflow("x1")
            with trio.fail_after(5):
                await handle.cancel()
            assert handle.status() == "cancelled"
            await trio.sleep(3 * LEASE)
            assert handle.status() == "cancelled"
        finally:
            look.close()


@pytest.mark.parametrize("payload", [{"attempt": "1"}, {"attempt": 1.5}, "raw:not json",
                                     "raw:[1, 2]"])
async def test_an_odd_control_row_of_a_refused_workflow_does_not_stop_the_claims(
        postgres_url: str, payload: Any) -> None:
    """A ``control`` row not written by a terminate (``Transaction.deliver(kind=
    "control")``, a row written by hand): its payload not JSON, or its ``attempt`` not
    an integer. The claim query read it (cast to ``jsonb``, then ``bigint``) for the
    workflows of names a node refuses: the cast failed the query, every round of that
    node failed, and it claimed nothing more, a lone node nothing at all (here: a
    tool's start never ran). Such a row asks for any attempt, as the node reads it."""
    import trio

    from garrison.persistence import RawJson, Transaction

    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as t:
        look = Look(postgres_url)
        try:
            await _refused_workflow(t, look)
            if isinstance(payload, str):
                payload = RawJson(payload.removeprefix("raw:"))
            look.store.write(Transaction().deliver("x1", "terminate", payload,
                                                   kind="control", msg_id="odd"))
            look.store.write(Transaction().create_workflow("ok", "cluster_app:steps",
                                                           [2, 0.01]))
            t._members[0].poke()  # (a tool's start notifies; this write did not)
            with trio.fail_after(10):
                assert await t.workflow("ok").result() == [0, 1]
        finally:
            look.close()


async def test_a_claimed_workflow_whose_row_is_damaged_is_named_and_the_others_run(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A workflow whose row holds no JSON where JSON belongs (a hand edit) is named in
    one error line when a claim takes it, at the node's start and in a later round, and
    left as it is; the node runs the others. The claim raised: the node did not start,
    and a later round's claim failed every round."""
    import logging

    import trio
    from _stores import sql

    from garrison.persistence import Transaction, open_store

    with open_store(postgres_url) as store:
        for wid in ("bad", "ok"):
            store.write(Transaction().create_workflow(wid, "cluster_app:steps", [2, 0.01]))
    sql(postgres_url, "UPDATE workflows SET input = '[bad' WHERE workflow_id = 'bad'")
    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as t:
        with trio.fail_after(10):
            assert await t.workflow("ok").result() == [0, 1]
        look = Look(postgres_url)
        try:
            sql(postgres_url, "INSERT INTO workflows (workflow_id, name, status, input, "
                              "created, updated) SELECT 'bad2', name, status, input, "
                              "created, updated FROM workflows WHERE workflow_id = 'bad'")
            look.store.write(Transaction().create_workflow("ok2", "cluster_app:steps",
                                                           [2, 0.01]))
            t._members[0].poke()  # (a tool's start notifies; these writes did not)
            with trio.fail_after(10):
                assert await t.workflow("ok2").result() == [0, 1]
            assert look.owners() == {"bad": "t", "bad2": "t"}
        finally:
            look.close()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert said == [f"cannot resume workflow {wid}: workflow {wid!r}: its input is not JSON "
                    "(Expecting value: line 1 column 2 (char 1))" for wid in ("bad", "bad2")]
    assert sql(postgres_url, "SELECT workflow_id, input, status FROM workflows WHERE "
                             "workflow_id IN ('bad', 'bad2') ORDER BY workflow_id") == [
        ("bad", "[bad", "pending"), ("bad2", "[bad", "pending")]


async def test_a_claimed_workflow_whose_message_holds_a_too_long_int_is_named_and_left(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A message sent under ``sys.set_int_max_str_digits(0)`` to a workflow a node of a
    cluster claims at the default limit, at its start or in a later round: the claim
    names the workflow, the message and how to read it in one error line and leaves it
    unrun, its message kept, and its ``result()`` says so; the others run."""
    import logging

    import trio

    from garrison.persistence import Transaction, open_store

    with no_digit_limit(), open_store(postgres_url) as store:
        store.write(Transaction()
                    .create_workflow("big", "workflow_app:receiver", status="running")
                    .create_workflow("ok", "workflow_app:receiver", status="running")
                    .deliver("big", "big", [10**5000], msg_id="m-big")
                    .deliver("ok", "small", 7, msg_id="m-ok"))
    def said(wid: str) -> str:
        return (f"workflow {wid!r}: the payload of its inbox message 'm-{wid}' (topic "
                "'big') holds a whole number of 5,001 digits, more than the 4,300 digits "
                "this Python reads (stored where sys.set_int_max_str_digits() allowed "
                "more): raise the limit in the process that reads it, with "
                "sys.set_int_max_str_digits() or PYTHONINTMAXSTRDIGITS in its environment "
                "(0: none)")
    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as t:
        with trio.fail_after(10):
            assert await t.workflow("ok").result() == ["small", 7]
        # (and in a later round's claim)
        with no_digit_limit(), open_store(postgres_url, lock=False) as store:
            store.write(Transaction()
                        .create_workflow("big2", "workflow_app:receiver", status="running")
                        .create_workflow("ok2", "workflow_app:receiver", status="running")
                        .deliver("big2", "big", [10**5000], msg_id="m-big2")
                        .deliver("ok2", "small", 8, msg_id="m-ok2"))
        t._members[0].poke()  # (a tool's start notifies; these writes did not)
        with trio.fail_after(10):
            assert await t.workflow("ok2").result() == ["small", 8]
        for wid in ("big", "big2"):
            with trio.fail_after(10), pytest.raises(garrison.StoreError) as got:
                await t.workflow(wid).result()
            assert str(got.value) == (
                f"store {t.hosts['workflows'].store.path!r}: {said(wid)}; until then this "
                "node reads neither its result nor, while it is unfinished, runs it (see "
                "the node's log)")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"cannot resume workflow {wid}: {said(wid)}"
                      for wid in ("big", "big2")], errors
    with no_digit_limit(), open_store(postgres_url) as store:
        assert [m.payload for m in store.pending_messages("big")] == [[10**5000]]


async def test_a_stale_terminate_of_a_refused_workflow_is_consumed_by_one_claim(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminate of an earlier attempt asks nothing of a workflow (it was retried
    since): a node refusing the workflow's name consumes that row and leaves the
    workflow unrun and unowned. It claimed it for the row, and the consume (written
    after the refusal's release, fenced) was refused: claimed again every round."""
    import trio

    from garrison.persistence import Transaction
    from garrison.persistence._pg_cluster import PgCluster

    claims: list[str] = []
    claim = PgCluster.claim

    def counted(self: PgCluster, limit: int, *args: Any, **kwargs: Any) -> list[Any]:
        got = claim(self, limit, *args, **kwargs)
        claims.extend(r.workflow_id for r in got)
        return got

    monkeypatch.setattr(PgCluster, "claim", counted)
    async with garrison.open_node(store=postgres_url, name="t", lease=LEASE) as t:
        look = Look(postgres_url)
        try:
            await _refused_workflow(t, look)
            look.store.write(Transaction().deliver(
                "x1", "terminate", {"terminate": {"type": "Terminated", "message": "old"},
                                    "attempt": 0}, kind="control", msg_id="stale"))
            t._members[0].poke()
            with trio.fail_after(10):
                while look.store.pending_messages("x1") or look.owners() != {"x1": None}:
                    await trio.sleep(0.02)
            await trio.sleep(4 * LEASE)
            assert claims == ["x1"]  # before the refusal only
            assert look.statuses() == {"x1": "pending"}
            assert look.store.journal("x1") == []
        finally:
            look.close()


async def test_a_terminate_from_another_node_returns_once_the_workflow_has_ended(
        postgres_url: str) -> None:
    """``handle.terminate()`` returns once the workflow has ended (its contract), also
    when another node runs it: it returned as soon as it had asked, the workflow still
    running on the other node."""
    import cluster_app
    import trio

    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(cluster_app.sleeper, 1000, 0.05, id="w")
        with trio.fail_after(5):
            await b.workflow("w").terminate("from b")
        look = Look(postgres_url)
        try:
            assert look.statuses() == {"w": "failed"}
        finally:
            look.close()
        with pytest.raises(garrison.WorkflowFailed, match="from b"):
            await a.workflow("w").result()


@pytest.mark.parametrize("how", ["monitor", "spawn_monitored"])
async def test_a_workflow_monitoring_one_another_node_runs_gets_its_exit_when_it_ends(
        postgres_url: str, how: str) -> None:
    """The EXIT comes when the target ends, on whichever node: a monitor of a workflow
    another node ran got an EXIT (ok, no result) at once, and the end of a workflow
    delivered EXITs only to watchers running on its own node (a child ending on another
    node than its parent's left the parent waiting for ever)."""
    import cluster_app
    import trio

    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(cluster_app.ends_on_a_message, id="t")
        target = "workflows/t" if how == "monitor" else "spawn:t"
        await b.start_workflow(cluster_app.monitors, target, id="w")
        with trio.fail_after(10):
            while b.workflow("w").state("monitoring") is None:
                await trio.sleep(0.02)
        await trio.sleep(0.3)
        assert str(b.workflow("w").status()) == "waiting"  # t runs on a: no EXIT yet
        await b.send("workflows/t", "end", "bye")
        with trio.fail_after(10):
            assert await b.workflow("w").result() == ["EXIT", "workflows/t", True, "bye"]


async def test_a_monitor_of_a_workflow_another_node_runs_asks_again_while_busy(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once its monitor of a workflow node a runs is committed, node b looks whether that
    workflow has ended with a read that is ``Busy`` while a write of its row is in
    flight (``get_workflow_settled``; a plain read could find it running while its end,
    whose write had read the monitors before this one was committed, was about to
    commit), and asks again until it is not. Here the first two answers are ``Busy``."""
    import cluster_app
    import trio

    from garrison.persistence import Busy
    from garrison.persistence._postgres import PostgresStore

    asked: list[tuple[str, str]] = []
    settled = PostgresStore.get_workflow_settled

    def busy_twice(self: PostgresStore, workflow_id: str) -> Any:
        asked.append((self.node_name or "", workflow_id))
        if len(asked) <= 2:
            raise Busy("a write of the row is in flight")
        return settled(self, workflow_id)

    monkeypatch.setattr(PostgresStore, "get_workflow_settled", busy_twice)
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(cluster_app.ends_on_a_message, id="t")
        await b.start_workflow(cluster_app.monitors, "workflows/t", id="w")
        with trio.fail_after(10):
            while len(asked) < 3:
                await trio.sleep(0.02)
        assert set(asked) == {("b", "t")}
        with trio.fail_after(5):  # t runs: no EXIT yet (w parks after its monitor)
            while str(b.workflow("w").status()) != "waiting":
                await trio.sleep(0.02)
        await b.send("workflows/t", "end", "bye")
        with trio.fail_after(10):
            assert await b.workflow("w").result() == ["EXIT", "workflows/t", True, "bye"]


async def test_workflows_ending_while_another_node_monitors_them_give_each_exit_once(
        postgres_url: str) -> None:
    """Twenty workflows on node a end while twenty on node b begin to monitor them, at
    the same moments: each monitor gets the EXIT of its target, once, whichever came
    first. (The narrow race of an end with a monitor being committed is pinned by
    test_postgres_store.py's ``test_a_settled_read_is_busy_while_an_end_is_being_committed``
    and by ``test_a_monitor_of_a_workflow_another_node_runs_asks_again_while_busy``.)"""
    import cluster_app
    import trio

    n = 20
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        for i in range(n):
            await a.start_workflow(cluster_app.ends_on_a_message, id=f"t{i}")
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(lambda i=i: b.start_workflow(
                    cluster_app.monitors, f"workflows/t{i}", id=f"w{i}"))
                nursery.start_soon(lambda i=i: a.send(f"workflows/t{i}", "end", i))
        with trio.fail_after(20):
            for i in range(n):
                assert await b.workflow(f"w{i}").result() == [
                    "EXIT", f"workflows/t{i}", True, i]
        look = Look(postgres_url)
        try:
            exits = look.store._query("SELECT workflow_id, count(*) FROM garrison.inbox "
                                      "WHERE topic = 'EXIT' GROUP BY workflow_id")
        finally:
            look.close()
        assert sorted(exits) == sorted((f"w{i}", 1) for i in range(n))


@pytest.mark.parametrize("end", ["children end", "cancel", "terminate"])
async def test_a_parent_and_its_children_spread_over_nodes(postgres_url: str,
                                                          end: str) -> None:
    """Node a runs a parent and its six children, then closes: b and c take them over
    (some of each on either). The children's EXITs all reach the parent, and a cancel
    or terminate of the parent ends every child, on whichever node it runs (both
    reached only the parent's own node's children)."""
    import cluster_app
    import trio

    n = 6
    # (room for four each: neither takes all seven)
    async with garrison.open_node(store=postgres_url, name="b", lease=LEASE,
                                  max_concurrent=4) as b, \
            garrison.open_node(store=postgres_url, name="c", lease=LEASE, max_concurrent=4):
        async with garrison.open_node(store=postgres_url, name="a", lease=LEASE) as a:
            await a.start_workflow(cluster_app.parent_of, n, id="p")
            with trio.fail_after(10):
                while a.workflow("p").state("spawned") != n:
                    await trio.sleep(0.02)
        with trio.fail_after(10):  # a handed them over as it closed
            while sum(m.workflows for m in b.cluster()) < n + 1:
                await trio.sleep(0.05)
        owners = {m.name: m.workflows for m in b.cluster()}
        assert set(owners) == {"b", "c"}
        children = [f"workflows/p.{i}" for i in range(1, n + 1)]
        handle = b.workflow("p")
        if end == "children end":
            for i, child in enumerate(children):
                await b.send(child, "end", i)
            with trio.fail_after(10):
                assert await handle.result() == [[c, True, i] for i, c in enumerate(children)]
            return
        if end == "cancel":
            await handle.cancel()
            ended, expected = garrison.WorkflowCancelled, "cancelled"
        else:
            await handle.terminate("enough")
            ended, expected = garrison.WorkflowFailed, "failed"
        with trio.fail_after(10), pytest.raises(ended):
            await handle.result()
        with trio.fail_after(10):
            while {str(b.workflow(c.removeprefix("workflows/")).status())
                   for c in children} != {expected}:
                await trio.sleep(0.05)


@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_a_parents_cancel_asks_the_store_once_for_the_children_elsewhere_of_its_tree(
        postgres_url: str, end: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel or terminate of a parent whose tree runs here asked the store for the
    children another node runs of each workflow of the tree, one read each, in the
    node's thread: 2,000 children held its event loop still 0.7 s (cancel) to 1.4 s
    (terminate) on PostgreSQL. The children of the whole tree are asked for in one
    read; each workflow of the tree still ends with the parent."""
    import trio

    from garrison.persistence import PostgresStore, Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    parent = garrison.Pid("workflows", "p")
    with open_store(postgres_url) as store:
        tx = Transaction().create_workflow("p", name, [], status="running", host="workflows")
        for i in range(20):
            tx.create_workflow(f"c{i}", name, [], status="running", host="workflows",
                               parent=parent)
        for i in range(5):
            tx.create_workflow(f"g{i}", name, [], status="running", host="workflows",
                               parent=garrison.Pid("workflows", "c0"))
        store.write(tx)
    ids = ["p", *(f"c{i}" for i in range(20)), *(f"g{i}" for i in range(5))]
    by_parent: list[object] = []
    query = PostgresStore._query

    def counted(self: PostgresStore, sql: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if "parent = " in str(sql):  # (a read of children)
            by_parent.append(sql)
        return query(self, sql, *args, **kwargs)

    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
        with trio.fail_after(10):
            while sum(w.status == "waiting" for w in a.workflows()) < len(ids):
                await trio.sleep(0.02)
        monkeypatch.setattr(PostgresStore, "_query", counted)
        await _end_p(a, end)
        assert len(by_parent) == 1, by_parent
        monkeypatch.undo()
        await _until_ended(a, ids, end)


@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_a_parents_end_reaches_a_tree_spread_over_three_nodes(
        postgres_url: str, end: str) -> None:
    """A review of the one read of a tree's children elsewhere: node a runs p (an odd
    id) and its child c0; b runs p's child c1 and c0's child g0; c runs c1's child g1
    and g0's child gg; p's child c2 ended before. A cancel or terminate of p on a ends
    each unfinished workflow of the tree, on whichever node, its grandchildren
    elsewhere by their parent (c0, here) as its children; the ended child stays as it
    ended. (b and c run two each at most: neither takes the others' rows.)"""
    import trio

    from garrison.persistence import Transaction, open_store

    name = "cluster_app:ends_on_a_message"

    def pid(wid: str) -> garrison.Pid:
        return garrison.Pid("workflows", wid)

    def rows(*tree: tuple[str, str | None]) -> None:
        with open_store(postgres_url) as store:
            tx = Transaction()
            for wid, parent in tree:
                tx.create_workflow(wid, name, [], status="running", host="workflows",
                                   parent=None if parent is None else pid(parent))
            store.write(tx)

    async def runs(node: Any, counts: dict[str, int]) -> None:
        with trio.fail_after(10):
            while {m.name: m.workflows for m in node.cluster()} != counts:
                await trio.sleep(0.02)

    p = "père-" + "π" * 150  # (an odd id: non-ASCII, long)
    ids = {p, "c0", "c1", "g0", "g1", "gg"}
    rows(("g1", "c1"), ("gg", "g0"))
    async with garrison.open_node(store=postgres_url, name="c", lease="30s",
                                  max_concurrent=2) as c:
        await runs(c, {"c": 2})
        rows(("c1", p), ("g0", "c0"))
        async with garrison.open_node(store=postgres_url, name="b", lease="30s",
                                      max_concurrent=2) as b:
            await runs(b, {"c": 2, "b": 2})
            rows((p, None), ("c0", p))
            with open_store(postgres_url) as store:
                store.write(Transaction().create_workflow(
                    "c2", name, [], status="completed", host="workflows", parent=pid(p)))
            async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
                await runs(a, {"c": 2, "b": 2, "a": 2})
                if end == "cancel":
                    await a.workflow(p).cancel()
                else:
                    await a.workflow(p).terminate("enough")
                expected = "cancelled" if end == "cancel" else "failed"
                with trio.fail_after(10):
                    while {str(a.workflow(wid).status()) for wid in ids} != {expected}:
                        await trio.sleep(0.05)
                assert str(a.workflow("c2").status()) == "completed"


def _writes_of_a(monkeypatch: pytest.MonkeyPatch, a: garrison.Node,
                 wids: list[str]) -> list[list[str]]:
    """Count node ``a``'s store writes (``write``, and each ``write_each``) that touch
    any of ``wids`` (node b, in this process too, is not counted): the list, filled as
    they come, holds the sorted ids each touched."""
    from garrison.persistence import PostgresStore

    writes: list[list[str]] = []
    write, write_each = PostgresStore.write, PostgresStore.write_each
    store = a.hosts["workflows"].store

    def touched(txs: Any) -> None:
        ids = sorted({params[0] for tx in txs for _op, params in tx.ops
                      if params and params[0] in wids})
        if ids:
            writes.append(ids)

    def counted(self: PostgresStore, tx: Any) -> Any:
        if self is store:
            touched([tx])
        return write(self, tx)

    def counted_each(self: PostgresStore, txs: Any, **kwargs: Any) -> Any:
        if self is store:
            touched(txs)
        return write_each(self, txs, **kwargs)

    monkeypatch.setattr(PostgresStore, "write", counted)
    monkeypatch.setattr(PostgresStore, "write_each", counted_each)
    return writes


async def _end_p(a: garrison.Node, end: str) -> None:
    """End workflow ``p`` of node ``a`` by ``end``: ``cancel`` or ``terminate``."""
    if end == "cancel":
        await a.workflow("p").cancel()
    else:
        await a.workflow("p").terminate("enough")


async def _until_ended(a: garrison.Node, ids: list[str], end: str) -> None:
    """Wait until each of ``ids`` ended as ``end`` (``_end_p``) ends a tree."""
    import trio

    expected = "cancelled" if end == "cancel" else "failed"
    with trio.fail_after(10):
        while {str(a.workflow(wid).status()) for wid in ids} != {expected}:
            await trio.sleep(0.05)


def _start_asked(node: garrison.Node) -> bool:
    """Whether ``node``'s start has asked the children of ended parents: its host
    resumed (the ask begins as it does, a task of the host) and the ask is over. A test
    that ends parents next waits for it: that read of the store, in a worker thread,
    may come after them on a loaded machine, and this start then asks their children
    too (first, or at once with the node the test means)."""
    host = node.hosts["workflows"]
    return bool(host.resumed and not host.asking_ended)


@contextlib.asynccontextmanager
async def _kids_on_b(postgres_url: str, kids: dict[str, str]) -> AsyncIterator[Any]:
    """The workflows ``kids`` (each id to its parent's id; ``ends_on_a_message``, written
    running with no owner), and node b of the cluster once it has claimed them all and
    its start's ask of the children of ended parents is over (:func:`_start_asked`):
    the parents a test ends next are asked by the node it means (a start of node a, an
    ask it makes), not by b's start."""
    import trio

    from garrison.persistence import Transaction, open_store

    with open_store(postgres_url) as store:
        tx = Transaction()
        for wid, parent in kids.items():
            tx.create_workflow(wid, "cluster_app:ends_on_a_message", [], status="running",
                               host="workflows", parent=garrison.Pid("workflows", parent))
        store.write(tx)
    async with garrison.open_node(store=postgres_url, name="b", lease="30s",
                                  max_concurrent=len(kids)) as b:
        with trio.fail_after(10):
            while {m.name: m.workflows for m in b.cluster()} != {"b": len(kids)} or (
                    not _start_asked(b)):
                await trio.sleep(0.02)
        yield b


@contextlib.asynccontextmanager
async def _children_on_b_parent_on_a(postgres_url: str, children: list[str],
                                     pending: list[str] | None = None
                                     ) -> AsyncIterator[tuple[Any, Any]]:
    """Nodes ``a`` and ``b`` of one cluster in this process: ``children`` (ids) of the
    workflow ``p``, run by node b (which claims them all first), and ``p`` by node a;
    and ``pending`` children of ``p`` that wait in the store unclaimed (neither node
    has room for them: a runs ``p`` alone then)."""
    import trio

    from garrison.persistence import Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    async with _kids_on_b(postgres_url, dict.fromkeys(children, "p")) as b:
        with open_store(postgres_url) as store:
            store.write(Transaction().create_workflow("p", name, [], status="running",
                                                      host="workflows"))
        async with garrison.open_node(store=postgres_url, name="a", lease="30s",
                                      max_concurrent=1 if pending else None) as a:
            with trio.fail_after(10):
                while {m.name: m.workflows for m in a.cluster()} != {
                        "b": len(children), "a": 1}:
                    await trio.sleep(0.02)
            if pending:
                with open_store(postgres_url) as store:
                    tx = Transaction()
                    for wid in pending:
                        tx.create_workflow(wid, name, [], status="pending",
                                           host="workflows",
                                           parent=garrison.Pid("workflows", "p"))
                    store.write(tx)
            yield a, b



async def test_a_parents_cancel_reads_no_row_again_of_its_children_elsewhere(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel of a parent whose children run on another node read each child's row
    twice more after the one read of the tree's children had found it (to see whether
    it waited unclaimed, then to flag it), each a blocking round trip in the node's
    thread, three for each child where one is needed. The rows read are used (the
    flag's write is still conditional on the row read); each child ends cancelled."""
    import trio

    from garrison.hosts.workflow import _host
    from garrison.persistence import PostgresStore

    children = [f"c{i}" for i in range(3)]
    inside: list[bool] = []
    read_again: list[str] = []
    cancel_children = _host.WorkflowHost.cancel_children
    get_workflow = PostgresStore.get_workflow

    def watched(self: Any, wf: Any, at: Any = None) -> None:
        inside.append(True)
        try:
            cancel_children(self, wf, at)
        finally:
            inside.pop()

    def counted(self: PostgresStore, wid: str, *args: Any, **kwargs: Any) -> Any:
        if inside:
            read_again.append(wid)
        return get_workflow(self, wid, *args, **kwargs)

    async with _children_on_b_parent_on_a(postgres_url, children) as (a, _b):
        monkeypatch.setattr(_host.WorkflowHost, "cancel_children", watched)
        monkeypatch.setattr(PostgresStore, "get_workflow", counted)
        await a.workflow("p").cancel()
        monkeypatch.undo()
        assert read_again == []
        with trio.fail_after(10):
            while {str(a.workflow(wid).status()) for wid in children} != {"cancelled"}:
                await trio.sleep(0.05)


@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_a_parents_end_writes_the_requests_of_its_children_elsewhere_at_once(
        postgres_url: str, end: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminate of a parent whose children run on another node wrote each child's
    request in a store write of its own, and a cancel each child's flag (conditional
    on its row read), one blocking round trip and commit each in the node's thread:
    300 children held its event loop about 0.23 s. The requests of all of them are
    one store write now, each flag still conditional on its row; every child ends."""
    children = [f"c{i}" for i in range(4)]
    async with _children_on_b_parent_on_a(postgres_url, children) as (a, _b):
        writes = _writes_of_a(monkeypatch, a, children)
        await _end_p(a, end)
        # (durable when it returns: written before, not later)
        assert writes == [children], writes
        monkeypatch.undo()
        await _until_ended(a, children, end)


@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_a_parents_end_ends_its_pending_children_elsewhere_in_one_write(
        postgres_url: str, end: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The children of a cancelled parent that wait in the store for a node to claim
    them (pending, unclaimed) were ended one at a time, a write (and commit) each in
    the node's thread, before the flags of the running ones were written together;
    those of a terminated parent were left a request each, ended only once a node had
    room to claim them. Their ends and the others' requests are one write now (each
    end still conditional on the child being pending and unclaimed): the pending ones
    have ended when the call returns, the running ones end as their node hears."""
    import trio

    children = [f"c{i}" for i in range(2)]
    pending = [f"q{i}" for i in range(3)]
    async with _children_on_b_parent_on_a(postgres_url, children, pending) as (a, _b):
        writes = _writes_of_a(monkeypatch, a, children + pending)
        await _end_p(a, end)
        ended = {wid: a.workflow(wid).status() for wid in pending}
        monkeypatch.undo()
        expected = "cancelled" if end == "cancel" else "failed"
        assert writes == [sorted(children + pending)], writes
        assert {str(status) for status in ended.values()} == {expected}, ended
        with trio.fail_after(10):
            while {str(a.workflow(wid).status()) for wid in children} != {expected}:
                await trio.sleep(0.05)


async def test_a_parents_cancel_reads_its_pending_childrens_rows_together(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of each pending child of a cancelled parent, waiting unclaimed in the
    store, read its timers and its inbox (what its end consumes), two blocking round
    trips each in the node's thread: 500 such children took a cancel about 0.9 s.
    Those that never ran are read together now (``Store.resume_rows``); each ends."""
    from garrison.persistence import PostgresStore

    pending = [f"q{i}" for i in range(3)]
    read_alone: list[str] = []
    timers, pending_messages = PostgresStore.timers, PostgresStore.pending_messages
    here: dict[str, Any] = {}  # (node a's reads only)

    def counted_timers(self: PostgresStore, wid: Any = None) -> Any:
        if self is here.get("store") and wid in pending:
            read_alone.append(wid)
        return timers(self, wid)

    def counted_messages(self: PostgresStore, wid: str) -> Any:
        if self is here.get("store") and wid in pending:
            read_alone.append(wid)
        return pending_messages(self, wid)

    async with _children_on_b_parent_on_a(postgres_url, ["c0"], pending) as (a, _b):
        here["store"] = a.hosts["workflows"].store
        monkeypatch.setattr(PostgresStore, "timers", counted_timers)
        monkeypatch.setattr(PostgresStore, "pending_messages", counted_messages)
        await a.workflow("p").cancel()
        monkeypatch.undo()
        assert read_alone == [], read_alone
        assert {str(a.workflow(wid).status()) for wid in pending} == {"cancelled"}


@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_a_child_elsewhere_read_unclaimed_but_claimed_since_is_asked_alone(
        postgres_url: str, end: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child of a cancelled or terminated tree read pending and unclaimed is ended
    with the others' requests, conditional on it being so still: one a node claimed
    (and ran) since is not ended by that write, and is read again and asked alone,
    its cancel flagged or its terminate requested; every child ends."""
    import attrs

    from garrison.hosts.workflow import _host

    children = [f"c{i}" for i in range(3)]
    children_elsewhere = _host.WorkflowHost.children_elsewhere
    here: dict[str, Any] = {}  # (node a's reads only)

    def stale(self: Any, wfs: Any, *damaged: Any) -> Any:
        records = children_elsewhere(self, wfs, *damaged)
        if self is not here.get("host"):
            return records
        return [attrs.evolve(r, status="pending") if r.workflow_id == "c1" else r
                for r in records]

    async with _children_on_b_parent_on_a(postgres_url, children) as (a, _b):
        here["host"] = a.hosts["workflows"]
        monkeypatch.setattr(_host.WorkflowHost, "children_elsewhere", stale)
        await _end_p(a, end)
        monkeypatch.undo()
        await _until_ended(a, children, end)


@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_a_pending_child_elsewhere_whose_message_cannot_be_read_holds_up_no_other(
        postgres_url: str, end: str) -> None:
    """A child of a cancelled or terminated tree waiting unclaimed in the store, a
    message in its inbox unreadable here (a whole number longer than this Python
    reads): its end, which reads its inbox, raised that ``DamagedRecord`` out of the
    whole ask, so the other children elsewhere (running on node b, or pending too) were
    never asked, every later ask failed the same way, and ``cancel()`` or
    ``terminate()`` of the parent raised an error naming that child. That child is
    asked as one claimed is (its cancel flagged, its terminate requested: the node
    that claims it names it unreadable); the others end."""

    import trio

    from garrison.persistence import Transaction, open_store

    children = [f"c{i}" for i in range(2)]
    pending = ["q0", "q1"]
    async with _children_on_b_parent_on_a(postgres_url, children, pending) as (a, _b):
        with no_digit_limit(), open_store(postgres_url) as store:
            store.write(Transaction().deliver("q0", "big", [10**5000], msg_id="m-q0"))
        await _end_p(a, end)
        expected = "cancelled" if end == "cancel" else "failed"
        assert str(a.workflow("q1").status()) == expected
        with trio.fail_after(10):
            while {str(a.workflow(wid).status()) for wid in children} != {expected}:
                await trio.sleep(0.05)
        with no_digit_limit(), open_store(postgres_url) as store:
            record = store.get_workflow("q0")
            assert record is not None and record.status == "pending"
            if end == "cancel":
                assert record.cancel_requested
            else:
                assert [m.kind for m in store.pending_messages("q0")
                        if m.msg_id != "m-q0"] == ["control"], "no terminate request"


@pytest.mark.parametrize("fault", ["store", "damaged"])
@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_a_pending_child_ended_alone_that_fails_leaves_the_others_counted(
        postgres_url: str, end: str, fault: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The pending children of a cancelled or terminated tree are ended in one write;
    one whose end that write refused (its row changed since it was read) is ended
    alone. An alone end that failed — the store's error (``store``), or its row damaged
    since it was read (``damaged``: a ``DamagedRecord``, not the store's error) —
    raised out of the loop over the others: those ended by the shared write after it
    were never counted as ended by the node (``garrison_workflows_finished``, the INFO
    line of each), though the store holds them ended. Each one the write ended is
    counted and said; the failure is still raised after (the cancel or terminate says
    its children elsewhere were not all asked, or names the damage)."""
    import logging

    import attrs
    from _stores import sql

    from garrison.hosts.workflow import _host

    pending = ["q0", "q1", "q2"]
    children_elsewhere = _host.WorkflowHost.children_elsewhere
    end_alone = _host.WorkflowHost._end_unrun_alone
    here: dict[str, Any] = {}  # (node a's host only)

    def stale(self: Any, wfs: Any, *damaged: Any) -> Any:  # (q0 read at attempt 7)
        records = children_elsewhere(self, wfs, *damaged)
        if self is not here.get("host"):
            return records
        return [attrs.evolve(r, attempt=7) if r.workflow_id == "q0" else r
                for r in records]

    def failing(self: Any, unrun: Any, record: Any = None) -> None:
        if self is here.get("host") and unrun.record.workflow_id == "q0":
            if fault == "store":
                raise garrison.StoreError(self.store.path,
                                          "the server closed the connection")
            sql(postgres_url, "UPDATE workflows SET input = '[bad' "
                              "WHERE workflow_id = 'q0'")
        end_alone(self, unrun, record)

    caplog.set_level(logging.INFO, logger="garrison.workflow")
    async with _children_on_b_parent_on_a(postgres_url, ["c0"], pending) as (a, _b):
        host = here["host"] = a.hosts["workflows"]
        monkeypatch.setattr(_host.WorkflowHost, "children_elsewhere", stale)
        monkeypatch.setattr(_host.WorkflowHost, "_end_unrun_alone", failing)
        expected = "cancelled" if end == "cancel" else "failed"
        before = host.counts[expected]
        raised = "were not asked" if fault == "store" else "workflow 'q0': its input is not"
        with pytest.raises(garrison.StoreError, match=raised):
            await _end_p(a, end)
        monkeypatch.undo()
        if fault == "damaged":
            sql(postgres_url, "UPDATE workflows SET input = '[]' WHERE workflow_id = 'q0'")
        said = [m for m in caplog.messages if "while it waited in the queue" in m]
        assert [m.split()[1] for m in said] == ["q1", "q2"], said
        assert host.counts[expected] - before >= 2, host.counts
        assert {str(a.workflow(wid).status()) for wid in ["q1", "q2"]} == {expected}


@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_a_damaged_child_elsewhere_is_named_and_holds_up_no_other(
        postgres_url: str, end: str, caplog: pytest.LogCaptureFixture) -> None:
    """The children elsewhere of a cancelled or terminated tree are read in one read:
    one child whose row holds no JSON (a damaged store, a hand edit) failed that read
    for all of them: ``cancel()`` (``terminate()``) raised a ``StoreError`` naming the
    child alone, not its parent, and none of the tree's other children elsewhere was
    asked (each later ask failed the same way). The damaged one is
    named now (its id, its parent's, what is damaged) and asked without its row (its
    cancel flagged, its terminate requested); the others end."""
    import logging

    import trio
    from _stores import sql

    children = [f"c{i}" for i in range(3)]
    caplog.set_level(logging.ERROR, logger="garrison.workflow")
    async with _children_on_b_parent_on_a(postgres_url, children) as (a, b):
        sql(postgres_url, "UPDATE workflows SET input = '[bad' WHERE workflow_id = 'c1'")
        await _end_p(a, end)
        expected = "cancelled" if end == "cancel" else "failed"
        with trio.fail_after(10):
            while {str(b.workflow(wid).status()) for wid in ["c0", "c2"]} != {expected}:
                await trio.sleep(0.05)
        said = [m for m in caplog.messages if m.startswith("workflow c1, a child of ")]
        assert len(said) == 1 and said[0].startswith(
            "workflow c1, a child of workflow p on another node, cannot be read: "
            "workflow 'c1': its input is not JSON ("), caplog.messages
        if end == "cancel":
            assert sql(postgres_url, "SELECT cancel_requested FROM workflows "
                                     "WHERE workflow_id = 'c1'") != [(0,)]
        else:
            assert sql(postgres_url, "SELECT count(*) FROM inbox WHERE workflow_id = 'c1' "
                                     "AND kind = 'control'") == [(1,)]
        sql(postgres_url, "UPDATE workflows SET input = '[]' WHERE workflow_id = 'c1'")


async def test_a_damaged_child_of_a_terminated_parent_is_asked_once_however_many_starts(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A child whose row holds no JSON (a damaged store), left unfinished under a
    terminated parent, is asked to end without its row at each node's start (named in
    an error line each time): its request was one for whatever attempt runs, under an
    id of its own each time, so each start added one more to its inbox, without end.
    It is the request of its attempt now (its row's ``attempt`` is read): one, however
    many starts. Its line said it was "a child of workflow p on another node", though
    no node ran it (a start's line cannot tell: this node may have claimed it); it
    says where it is no more."""
    import logging

    import trio
    from _stores import sql

    from garrison.hosts.workflow import request_transaction
    from garrison.hosts.workflow._operate import terminated
    from garrison.persistence import Transaction, open_store

    caplog.set_level(logging.ERROR, logger="garrison.workflow")
    name = "cluster_app:ends_on_a_message"
    with open_store(postgres_url) as store:
        tx = (Transaction()
              .create_workflow("p", name, [], status="running", host="workflows")
              .update_workflow("p", status="failed", error=terminated("enough"))
              .create_workflow("d0", name, [], status="pending", host="workflows",
                               parent=garrison.Pid("workflows", "p")))
        store.write(request_transaction("p", terminated("enough"), 1, tx))
    sql(postgres_url, "UPDATE workflows SET input = '[bad', attempt = 2 "
                      "WHERE workflow_id = 'd0'")
    for start in range(3):
        async with garrison.open_node(store=postgres_url, name="a", lease="30s"):
            with trio.fail_after(10):  # (asked in the background of the start)
                while len([m for m in caplog.messages
                           if m.startswith("workflow d0, a child of ")]) <= start:
                    await trio.sleep(0.02)
    assert sql(postgres_url, "SELECT msg_id FROM inbox WHERE workflow_id = 'd0'") == [
        ("terminate#2#d0",)]
    said = [m for m in caplog.messages if m.startswith("workflow d0, a child of ")]
    assert len(said) == 3, caplog.messages
    # (no node runs it: the line does not say it is on another node)
    assert said[0].startswith("workflow d0, a child of workflow p, cannot be read: "), said


async def test_a_parents_cancel_flags_alone_a_child_elsewhere_whose_row_changed(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags of a cancelled parent's children elsewhere are written together, each
    conditional on its row read: a child whose row changed since (read as sleeping,
    waiting now) is not flagged by that write, and is read again and flagged alone, as
    one cancel of it is; every child ends cancelled."""
    import attrs
    import trio

    from garrison.hosts.workflow import _host
    from garrison.persistence import PostgresStore

    children = [f"c{i}" for i in range(3)]
    children_elsewhere = _host.WorkflowHost.children_elsewhere
    read_again: list[str] = []
    get_workflow = PostgresStore.get_workflow

    # (node a's reads only: b, in this process too, hears its children's cancels)
    here: dict[str, Any] = {}

    def stale(self: Any, wfs: Any, *damaged: Any) -> Any:
        records = children_elsewhere(self, wfs, *damaged)
        if self is not here.get("host"):
            return records
        assert {r.status for r in records} == {"waiting"}
        return [attrs.evolve(r, status="sleeping") if r.workflow_id == "c1" else r
                for r in records]

    def counted(self: PostgresStore, wid: str, *args: Any, **kwargs: Any) -> Any:
        if self is here.get("store"):
            read_again.append(wid)
        return get_workflow(self, wid, *args, **kwargs)

    async with _children_on_b_parent_on_a(postgres_url, children) as (a, _b):
        here["host"] = a.hosts["workflows"]
        here["store"] = a.hosts["workflows"].store
        monkeypatch.setattr(_host.WorkflowHost, "children_elsewhere", stale)
        monkeypatch.setattr(PostgresStore, "get_workflow", counted)
        await a.workflow("p").cancel()
        monkeypatch.undo()
        assert "c1" in read_again and not {"c0", "c2"} & set(read_again), read_again
        with trio.fail_after(10):
            while {str(a.workflow(wid).status()) for wid in children} != {"cancelled"}:
                await trio.sleep(0.05)


def _reads_of_children_fail(monkeypatch: pytest.MonkeyPatch, a: garrison.Node,
                            times: int) -> list[int]:
    """Make node ``a``'s next ``times`` reads of its children on other nodes
    (``Store.unfinished_children``) fail as a server gone a moment does (node b's are
    not touched); returns ``[failures left]``."""
    from garrison.persistence import PostgresStore

    unfinished_children = PostgresStore.unfinished_children
    store = a.hosts["workflows"].store
    left = [times]

    def failing(self: PostgresStore, parents: Any, *damaged: Any) -> Any:
        if self is store and left[0]:
            left[0] -= 1
            raise garrison.StoreError(self.path, "the server closed the connection")
        return unfinished_children(self, parents, *damaged)

    monkeypatch.setattr(PostgresStore, "unfinished_children", failing)
    return left


@pytest.mark.parametrize("failures", [1, 2])
async def test_a_failed_read_of_a_cancels_children_elsewhere_is_asked_again(
        postgres_url: str, failures: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel of a parent whose read of its children on another node failed raised
    after the parent's cancel was committed, and nothing asked for those children
    again: a repeated cancel saw the parent cancelled already (or ended), and they ran
    on for good. Now the cancel says what was not asked, and the parent's end asks
    again (``failures=1``); failing there too, a repeated cancel asks again."""
    import trio

    children = [f"c{i}" for i in range(3)]
    async with _children_on_b_parent_on_a(postgres_url, children) as (a, b):
        left = _reads_of_children_fail(monkeypatch, a, failures)
        with pytest.raises(garrison.StoreError,
                           match="the cancel of workflow 'p' was written, but its "
                                 "children on other nodes were not asked"):
            await a.workflow("p").cancel()
        with trio.fail_after(10):  # (it ends cancelled all the same)
            while str(a.workflow("p").status()) != "cancelled":
                await trio.sleep(0.02)
        if failures == 2:
            assert {str(b.workflow(wid).status()) for wid in children} != {"cancelled"}
            await a.workflow("p").cancel()
        assert left == [0]
        with trio.fail_after(10):
            while {str(a.workflow(wid).status()) for wid in children} != {"cancelled"}:
                await trio.sleep(0.05)


@pytest.mark.parametrize("failures", [1, 2, 3])
async def test_a_failed_ask_of_a_terminates_children_elsewhere_is_asked_again(
        postgres_url: str, failures: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminate of a parent whose read of its children on another node failed
    raised the store's bare error after the parent's request was committed (and the
    parent ended), and nothing asked for those children again: a repeated terminate
    found the parent ended, and they ran on for good. Now the terminate asks again at
    once (``failures=1``: it returns); failing again, it says what was not asked, and
    the parent's end asks again (``failures=2``); failing there too, a repeated
    terminate asks again. Each child ends terminated."""
    import trio

    children = [f"c{i}" for i in range(3)]
    async with _children_on_b_parent_on_a(postgres_url, children) as (a, b):
        left = _reads_of_children_fail(monkeypatch, a, failures)
        if failures == 1:
            await a.workflow("p").terminate("enough")
        else:
            with pytest.raises(garrison.StoreError,
                               match="the terminate of workflow 'p' was written, but "
                                     "its children on other nodes were not asked to end"):
                await a.workflow("p").terminate("enough")
        with trio.fail_after(10):  # (it ends all the same)
            while str(a.workflow("p").status()) != "failed":
                await trio.sleep(0.02)
        if failures == 3:
            assert {str(b.workflow(wid).status()) for wid in children} != {"failed"}
            await a.workflow("p").terminate("enough")
        assert left == [0]
        with trio.fail_after(10):
            while {str(a.workflow(wid).status()) for wid in children} != {"failed"}:
                await trio.sleep(0.05)


@pytest.mark.parametrize(("end", "failures"), [("cancel", 2), ("terminate", 3)])
async def test_children_elsewhere_left_unasked_as_a_node_stopped_are_asked_at_its_start(
        postgres_url: str, end: str, failures: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel or terminate of a parent whose asks of its children on another node all
    failed (the read failed at the cancel and at the parent's end; at the terminate,
    its ask again at once and the end) kept the asks to make in the node's memory
    alone: the node stopped, and the children ran on for good under a cancelled or
    terminated parent (nothing asks for the children of an ended workflow). The
    node's next start finds them in the store and asks them; each child ends."""
    import trio

    from garrison.persistence import Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    children = [f"c{i}" for i in range(3)]
    with open_store(postgres_url) as store:
        tx = Transaction()
        for wid in children:
            tx.create_workflow(wid, name, [], status="running", host="workflows",
                               parent=garrison.Pid("workflows", "p"))
        store.write(tx)
    async with garrison.open_node(store=postgres_url, name="b", lease="30s",
                                  max_concurrent=len(children)) as b:
        with trio.fail_after(10):  # (p ends below: no start of theirs asks then)
            while {m.name: m.workflows for m in b.cluster()} != {"b": len(children)} or (
                    not _start_asked(b)):
                await trio.sleep(0.02)
        with open_store(postgres_url) as store:
            store.write(Transaction().create_workflow("p", name, [], status="running",
                                                      host="workflows"))
        async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
            with trio.fail_after(10):
                while {m.name: m.workflows for m in a.cluster()} != {
                        "b": len(children), "a": 1} or not _start_asked(a):
                    await trio.sleep(0.02)
            left = _reads_of_children_fail(monkeypatch, a, failures)
            with pytest.raises(garrison.StoreError, match="were not asked"):
                await _end_p(a, end)
            expected = "cancelled" if end == "cancel" else "failed"
            with trio.fail_after(10):
                while str(a.workflow("p").status()) != expected:
                    await trio.sleep(0.02)
            assert left == [0]
        monkeypatch.undo()
        await trio.sleep(0.5)  # (b would have heard any ask by now)
        assert {str(b.workflow(wid).status()) for wid in children} == {"waiting"}
        async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
            await _until_ended(a, children, end)


async def test_a_starts_ask_of_children_of_ended_parents_leaves_those_that_run_on(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A node's start asks the unfinished children of cancelled or terminated workflows
    (left unasked before a stop); not every child of an ended parent ends: one that
    failed on its own (no terminate request) ends none of its children (k0), and a
    cancelled parent's compensation, spawned after its cancel (k1), runs on; its child
    spawned before the cancel (k2) is cancelled, and the warning names it alone."""
    import logging

    import trio

    from garrison.persistence import Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    caplog.set_level(logging.WARNING, logger="garrison.workflow")
    kids = {"k0": "p", "k1": "q", "k2": "q"}
    async with _kids_on_b(postgres_url, kids) as b:
        with open_store(postgres_url) as store:
            store.write(
                Transaction()
                .create_workflow("p", name, [], status="running", host="workflows")
                .update_workflow("p", status="failed",
                                 error=garrison.ErrorInfo("ValueError", "boom"))
                .create_workflow("q", name, [], status="running", host="workflows")
                .append_journal("q", 1, "spawn", "child", {"pid": "workflows/k2"})
                .append_journal("q", 2, "cancel", "cancel")
                .append_journal("q", 3, "spawn", "undo", {"pid": "workflows/k1"})
                .update_workflow("q", status="cancelled"))
        async with garrison.open_node(store=postgres_url, name="a", lease="30s"):
            with trio.fail_after(10):
                while str(b.workflow("k2").status()) != "cancelled":
                    await trio.sleep(0.05)
            await trio.sleep(0.3)
            assert {str(b.workflow(wid).status()) for wid in ["k0", "k1"]} == {"waiting"}
    said = [m for m in caplog.messages if "still unfinished" in m]
    assert len(said) == 1 and said[0].startswith(
        "workflow q has ended, but 1 of its children were still unfinished"), said
    assert said[0].endswith("asked to cancel now (k2)"), said


@contextlib.contextmanager
def _dead(node: garrison.Node) -> Iterator[None]:
    """Within: ``node`` is dead to the cluster, as a node killed is: its renewals get no
    answer (held until the end, so that it closes then); :func:`_look_again` lapses its
    lease."""
    import threading

    pg = node._members[0].pg
    held = threading.Event()
    renew = pg.renew

    def hung(*args: Any) -> Any:
        held.wait(30)
        return renew(*args)

    pg.renew = hung  # type: ignore[method-assign]
    try:
        yield
    finally:
        held.set()


def _look_again(postgres_url: str, dead: garrison.Node, by: garrison.Node) -> None:
    """Lapse ``dead``'s lease by the server's clock (again: a renewal in flight as it
    was cut off may have pushed it on) and make ``by`` run a round of its membership."""
    from _stores import sql

    sql(postgres_url, "UPDATE nodes SET lease_until = lease_until - 100 WHERE epoch = ? "
                      "AND status = 'active'", (dead._members[0].epoch,))
    by._members[0].poke()


@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_children_a_dead_node_left_unasked_are_asked_by_the_node_that_took_it_over(
        postgres_url: str, end: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that cancelled or terminated a parent, its asks of the children another
    node runs failed, then died (and never started again) left them running under the
    ended parent: only a node's start asked the children of ended parents, and the
    live node that marked it lost (the takeover) asked nothing, nor claimed anything
    (the parent had ended). The node that marks a dead node lost asks them now, as a
    start does; each child ends."""
    import trio

    children = [f"c{i}" for i in range(3)]
    async with _children_on_b_parent_on_a(postgres_url, children) as (a, b):
        _reads_of_children_fail(monkeypatch, a, 1_000_000)  # (node a can ask no more)
        with pytest.raises(garrison.StoreError, match="were not asked"):
            await _end_p(a, end)
        expected = "cancelled" if end == "cancel" else "failed"
        with trio.fail_after(10):
            while str(a.workflow("p").status()) != expected:
                await trio.sleep(0.02)
        with _dead(a):
            with trio.fail_after(10):
                while {str(b.workflow(wid).status()) for wid in children} != {expected}:
                    _look_again(postgres_url, a, b)
                    await trio.sleep(0.1)


async def test_children_a_node_whose_store_gave_up_left_unasked_are_asked_by_another(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose store gave up for good marks its own row lost as it leaves the
    cluster: no live node marks it lost, and the children another node runs of a
    parent it had cancelled, their ask failed, ran on until some node started. The
    oldest live node asks as a node leaves the cluster other than by a lapse it
    marked; each child ends."""
    import cluster_app
    import psycopg
    import trio

    from garrison.persistence import PostgresStore, Transaction, open_store
    from garrison.persistence._pg_cluster import epoch_lock_class

    children = ["c0", "c1"]
    role = "garrison_gives_up"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    async with _kids_on_b(postgres_url, dict.fromkeys(children, "p")) as b:
        with open_store(postgres_url) as store:
            store.write(Transaction().create_workflow("p", "cluster_app:ends_on_a_message",
                                                      [], status="running", host="workflows"))
        store_a = PostgresStore(postgres_url.replace("postgres@", f"{role}@"), retry_for=0.3)
        async with garrison.open_node(store=store_a, name="a", lease="30s") as a:
            with trio.fail_after(10):
                while {m.name: m.workflows for m in a.cluster()} != {"b": 2, "a": 1}:
                    await trio.sleep(0.02)
            _reads_of_children_fail(monkeypatch, a, 1_000_000)  # (node a can ask no more)
            with pytest.raises(garrison.StoreError, match="were not asked"):
                await a.workflow("p").cancel()
            with trio.fail_after(10):
                while str(a.workflow("p").status()) != "cancelled":
                    await trio.sleep(0.02)
            await a.start_workflow(cluster_app.sleeper, 30, 0.1, id="w")  # (it writes)
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(f"ALTER ROLE {role} NOLOGIN")  # a's writer cannot come back
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE "
                             "locktype = 'advisory' AND classid = %s::bigint::oid AND "
                             "objid = %s::oid AND objsubid = 2",
                             (epoch_lock_class("garrison"), a._members[0].epoch))
                with trio.fail_after(10):
                    while store_a._failed is None:  # its next step gives up
                        await trio.sleep(0.05)
                conn.execute(f"ALTER ROLE {role} LOGIN")
            with trio.fail_after(10):
                while {str(b.workflow(wid).status()) for wid in children} != {"cancelled"}:
                    await trio.sleep(0.05)


async def test_a_failed_read_of_the_lost_among_the_nodes_gone_loses_no_news_of_them(
        postgres_url: str) -> None:
    """The oldest live node reads whether the nodes that left its view were lost
    (``PgCluster.lost_among``) after it had forgotten them: a failure of that read
    (the server gone a moment) failed the round after it, and the next round saw
    nothing leave. The node was never told that they went (their processes' monitors
    got no ``noconnection``, a schedule's tick they recorded was not repaired), and a
    node lost so was not asked for. The round that fails now forgets nothing: the next
    one tells of them, and asks."""
    import threading

    import psycopg
    import trio
    from _stores import sql

    async with garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        member = b._members[0]
        told: list[tuple[str, Any]] = []
        on_gone, on_lost = member.on_gone, member.on_lost
        member.on_gone = lambda name, prefix, epoch=None: (
            told.append(("gone", name)), on_gone(name, prefix, epoch))
        member.on_lost = lambda lost: (told.append(("lost", lost)), on_lost(lost))
        asked: list[list[str]] = []
        ask = b.hosts["workflows"].ask_children_of_ended_soon
        b.hosts["workflows"].ask_children_of_ended_soon = (  # type: ignore[method-assign]
            lambda departed: (asked.append(list(departed)), ask(departed)))
        lost_among = member.pg.lost_among
        failures = [psycopg.OperationalError("the server went a moment")]

        def failing(epochs: Any) -> set[int]:
            wanted = list(epochs)
            if failures:
                raise failures.pop()
            return lost_among(wanted)

        member.pg.lost_among = failing
        gate = threading.Event()  # (b's rounds wait while it is clear)
        gate.set()
        live_epochs = member.pg.live_epochs

        def gated() -> Any:
            gate.wait(30)
            return live_epochs()

        member.pg.live_epochs = gated
        async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
            epoch = a._members[0].epoch
            with trio.fail_after(10):
                while epoch not in member._live:  # (b saw a live)
                    member.poke()
                    await trio.sleep(0.02)
            gate.clear()
        # (a left; b sees it lost, as a node whose store gave up is)
        sql(postgres_url, "UPDATE nodes SET status = 'lost' WHERE epoch = ?", (epoch,))
        gate.set()
        with trio.move_on_after(10):
            while ("gone", "a") not in told or not asked:
                member.poke()
                await trio.sleep(0.05)
    assert not failures, (told, asked)
    assert ("gone", "a") in told, (told, asked)
    assert [kind for kind, _ in told].count("gone") == 1, told
    assert asked == [["a"]], asked


async def test_children_of_ended_parents_asked_twice_at_once_end_once(
        postgres_url: str) -> None:
    """The children of ended parents are asked at a node's start and by the node that
    takes over a lost one: two nodes may ask them at once, each having read them
    unasked (here three asks of one node at once). Asked again, each ends once: the
    running child of a cancelled parent (k0) journals one cancel, the running child of
    a terminated parent (k1) has one terminate request, and the child waiting
    unclaimed (w0) writes one EXIT to the workflow that monitors it (m: failed, a
    retry would read it)."""
    import trio
    from _stores import sql

    from garrison.hosts.workflow import request_transaction
    from garrison.hosts.workflow._operate import terminated
    from garrison.persistence import Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    async with _kids_on_b(postgres_url, {"k0": "q", "k1": "t"}) as b:
        with open_store(postgres_url) as store:
            tx = (Transaction()
                  .create_workflow("w0", name, [], status="pending", host="workflows",
                                   parent=garrison.Pid("workflows", "q"))
                  .create_workflow("q", name, [], status="running", host="workflows")
                  .create_workflow("m", name, [], status="running", host="workflows")
                  .update_workflow("m", status="failed",
                                   error=garrison.ErrorInfo("ValueError", "boom"))
                  .add_monitor("w0", garrison.Pid("workflows", "m"))
                  .append_journal("q", 1, "spawn", "child", {"pid": "workflows/k0"})
                  .append_journal("q", 2, "spawn", "child", {"pid": "workflows/w0"})
                  .append_journal("q", 3, "cancel", "cancel")
                  .update_workflow("q", status="cancelled")
                  .create_workflow("t", name, [], status="running", host="workflows")
                  .update_workflow("t", status="failed", error=terminated("enough")))
            store.write(request_transaction("t", terminated("enough"), 1, tx))
        host = b.hosts["workflows"]  # (full: w0 waits unclaimed)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(3):  # (their reads at once: each may find them unasked)
                    nursery.start_soon(host.ask_children_of_ended)
            while [str(b.workflow(wid).status()) for wid in ["k0", "k1", "w0"]] != [
                    "cancelled", "failed", "cancelled"]:
                await trio.sleep(0.05)
        await trio.sleep(0.3)  # (a second end would have come by now)
    assert sql(postgres_url, "SELECT count(*) FROM journal WHERE workflow_id = 'k0' "
                             "AND kind = 'cancel'") == [(1,)]
    assert sql(postgres_url, "SELECT count(*) FROM inbox WHERE workflow_id = 'k1' "
                             "AND starts_with(msg_id, 'terminate')") == [(1,)]
    assert sql(postgres_url, "SELECT count(*) FROM inbox WHERE workflow_id = 'm' "
                             "AND sender = 'workflows/w0'") == [(1,)]


@pytest.mark.parametrize("end", ["cancel", "terminate"])
async def test_a_prune_keeps_an_ended_parent_until_a_start_asked_its_children(
        postgres_url: str, end: str) -> None:
    """A parent cancelled or terminated long ago whose children another node runs were
    left unasked (its node stopped) was pruned by a retention, or by ``garrison
    workflows prune``, before any node started again: the next start read the
    children of ended parents by their parent's row, found none, and the children ran
    on for good. The prune keeps the parent now; the start asks them, and once they
    have ended a prune takes the parent too."""
    from garrison import _store_tools as tools
    from garrison.hosts.workflow import request_transaction
    from garrison.hosts.workflow._operate import terminated
    from garrison.persistence import Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    children = [f"c{i}" for i in range(3)]
    with open_store(postgres_url) as store:
        tx = Transaction().create_workflow("p", name, [], status="running",
                                           host="workflows", time=100.0)
        for wid in children:
            tx.create_workflow(wid, name, [], status="running", host="workflows",
                               parent=garrison.Pid("workflows", "p"), time=100.0)
        if end == "cancel":
            tx.append_journal("p", 1, "cancel", "cancel")
            tx.update_workflow("p", status="cancelled", time=100.0)
        else:
            tx.update_workflow("p", status="failed", error=terminated("enough"), time=100.0)
            request_transaction("p", terminated("enough"), 1, tx)
        store.write(tx)
        assert tools.prune(store, 60.0) == (0, pytest.approx(time.time() - 60.0, abs=5))
        assert store.get_workflow("p") is not None
    async with garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await _until_ended(b, children, end)
    with open_store(postgres_url) as store:
        assert tools.prune(store, 60.0)[0] == 1  # (p: they ended just now)
        assert store.get_workflow("p") is None
        assert tools.prune(store, 60.0, now=time.time() + 3600.0)[0] == len(children)


def _counted_read(read: Any, reads: list[str]) -> Any:
    """``read`` (a store's method), each call of it added to ``reads``."""
    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(f"{read.__name__}{args}")
        return read(*args, **kwargs)
    return counted


async def test_a_starts_ask_of_children_of_ended_parents_runs_in_chunks_in_the_background(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's start read each ended parent of unfinished children alone (its row, a
    cancelled one's journal, a failed one's request), all in one go in the node's
    thread before the start was ready: thousands of parents of children that run on
    (compensations, children of parents failed on their own) froze its event loop for
    seconds at every start. The ask is a task of the host now (the start does not wait
    for it), :data:`ASK_CHUNK` parents at a time, the node's other tasks running between
    two chunks; and a chunk's parents are read together, not one by one; those whose
    children are all flagged already are not read at all."""
    import trio

    from garrison.hosts.workflow import _host
    from garrison.persistence import Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    kids = {"k0": "q0", "k1": "q1", "k2": "q2", "u0": "p0", "u1": "p1", "f0": "q3"}
    async with _kids_on_b(postgres_url, kids) as b:
        with open_store(postgres_url) as store:
            tx = Transaction().request_cancel("f0", time=1.0)  # (flagged before)
            for i in range(4):  # (q3: its child flagged already, nothing to read)
                wid = f"q{i}"
                tx.create_workflow(wid, name, [], status="running", host="workflows")
                tx.append_journal(wid, 1, "spawn", "child", {"pid": f"workflows/k{i}"})
                tx.append_journal(wid, 2, "cancel", "cancel")
                tx.update_workflow(wid, status="cancelled")
            for wid in ["p0", "p1"]:  # (failed on their own: u0, u1 run on)
                tx.create_workflow(wid, name, [], status="running", host="workflows")
                tx.update_workflow(wid, status="failed",
                                   error=garrison.ErrorInfo("ValueError", "boom"))
            store.write(tx)
        monkeypatch.setattr(_host, "ASK_CHUNK", 2)
        steps = 0
        chunks: list[tuple[int, str, list[str]]] = []  # (node a's only)
        reads: list[str] = []
        ask_chunk = _host.WorkflowHost._ask_ended_chunk
        b_host = b.hosts["workflows"]

        class Steps(trio.abc.Instrument):
            def before_task_step(self, task: Any) -> None:
                nonlocal steps
                steps += 1

        def counted(self: Any, of: Any, damaged: Any) -> None:
            if self is b_host:
                return ask_chunk(self, of, damaged)
            chunks.append((steps, trio.lowlevel.current_task().name, sorted(of)))
            store = self.store
            for method in ["get_workflow", "journal_entries", "inbox_message"]:
                setattr(store, method, _counted_read(getattr(store, method), reads))
            try:
                return ask_chunk(self, of, damaged)
            finally:
                for method in ["get_workflow", "journal_entries", "inbox_message"]:
                    delattr(store, method)

        monkeypatch.setattr(_host.WorkflowHost, "_ask_ended_chunk", counted)
        trio.lowlevel.add_instrument(Steps())
        async with garrison.open_node(store=postgres_url, name="a", lease="30s"):
            with trio.fail_after(10):
                while {str(b.workflow(f"k{i}").status()) for i in range(3)} != {
                        "cancelled"}:
                    await trio.sleep(0.05)
        assert [parents for _step, _task, parents in chunks] == [
            ["workflows/q0", "workflows/q1"], ["workflows/p0", "workflows/q2"],
            ["workflows/p1"]], chunks
        assert len({step for step, _task, _parents in chunks}) == 3, chunks
        assert all(task.endswith("_ask_children_of_ended") for _s, task, _p in chunks)
        assert reads == [], reads
        assert {str(b.workflow(wid).status()) for wid in ["u0", "u1"]} == {"waiting"}


async def test_a_starts_ask_judges_a_terminated_parent_by_the_error_it_ended_with(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A node's start ends the unfinished children of a terminated parent, not those
    of one that failed on its own. A terminate request of p's attempt in its inbox
    (a tool's terminate that came as p failed on its own, ``ValueError``) did not end
    p: its child k0 runs on, at this start and every later one. m ended by its
    parent's terminate in a node's memory (its error says so; no request of its own
    is in its inbox): its child k1 elsewhere ends with it."""
    import logging

    import trio

    from garrison.hosts.workflow import request_transaction
    from garrison.hosts.workflow._operate import terminated
    from garrison.hosts.workflow._recovery import parent_terminated
    from garrison.persistence import Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    caplog.set_level(logging.WARNING, logger="garrison.workflow")
    kids = {"k0": "p", "k1": "m"}
    async with _kids_on_b(postgres_url, kids) as b:
        with open_store(postgres_url) as store:
            tx = (Transaction()
                  .create_workflow("p", name, [], status="running", host="workflows")
                  .update_workflow("p", status="failed",
                                   error=garrison.ErrorInfo("ValueError", "boom"))
                  .create_workflow("m", name, [], status="running", host="workflows",
                                   parent=garrison.Pid("workflows", "t"))
                  .update_workflow("m", status="failed", error=parent_terminated("t")))
            store.write(request_transaction("p", terminated("too late"), 1, tx))
        for _start in range(2):
            async with garrison.open_node(store=postgres_url, name="a", lease="30s"):
                with trio.fail_after(10):
                    while str(b.workflow("k1").status()) != "failed":
                        await trio.sleep(0.05)
            with open_store(postgres_url) as store:
                assert store.inbox_message("terminate#1#k0") is None
        assert str(b.workflow("k0").status()) == "waiting"
    said = [m for m in caplog.messages if "still unfinished" in m]
    assert said == ["workflow m has ended, but 1 of its children were still unfinished "
                    "(an ask of them failed before a node stopped): asked to end now "
                    "(k1)"], said


async def test_a_starts_ask_of_children_of_ended_parents_is_held_up_by_no_damaged_parent(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A node's start reads each ended parent of unfinished children: a cancelled one's
    journal (its compensations), a failed one's terminate request. One of them that
    holds no JSON (a damaged store, a hand edit) failed the start's ask of every
    child of every ended parent, at every start. The parent is named now in an error
    line and its children left as they are (q's, t's); the others are asked (k2, k4;
    not k3, whose own request, asked before, holds no JSON)."""
    import logging

    import trio
    from _stores import sql

    from garrison.hosts.workflow import request_transaction
    from garrison.hosts.workflow._operate import terminated
    from garrison.hosts.workflow._recovery import parent_terminated
    from garrison.persistence import Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    caplog.set_level(logging.WARNING, logger="garrison.workflow")
    kids = {"k0": "q", "k1": "t", "k2": "r", "k3": "u", "k4": "u"}
    async with _kids_on_b(postgres_url, kids) as b:
        with open_store(postgres_url) as store:
            tx = Transaction()
            for wid in ["q", "r"]:
                tx.create_workflow(wid, name, [], status="running", host="workflows")
                tx.append_journal(wid, 1, "spawn", "child", {"pid": f"workflows/{wid}0"})
                tx.append_journal(wid, 2, "cancel", "cancel")
                tx.update_workflow(wid, status="cancelled")
            tx.create_workflow("t", name, [], status="running", host="workflows")
            tx.update_workflow("t", status="failed", error=terminated("enough"))
            request_transaction("t", terminated("enough"), 1, tx)
            tx.create_workflow("u", name, [], status="running", host="workflows")
            tx.update_workflow("u", status="failed", error=parent_terminated("x"))
            store.write(request_transaction("k3", parent_terminated("u"), 1, tx))
        sql(postgres_url, "UPDATE journal SET outcome = '{bad' "
                          "WHERE workflow_id = 'q' AND seq = 1")
        sql(postgres_url, "UPDATE inbox SET payload = '{bad' "
                          "WHERE workflow_id IN ('t', 'k3')")
        async with garrison.open_node(store=postgres_url, name="a", lease="30s"):
            with trio.fail_after(10):
                while [str(b.workflow(wid).status()) for wid in ["k2", "k4"]] != [
                        "cancelled", "failed"]:
                    await trio.sleep(0.05)
        assert {str(b.workflow(wid).status()) for wid in ["k0", "k1"]} == {"waiting"}
        assert sql(postgres_url,
                   "SELECT count(*) FROM inbox WHERE workflow_id = 'k3'") == [(1,)]
    said = [m for m in caplog.messages if m.startswith("cannot read workflow ")]
    assert [m.split(":")[0] for m in said] == [
        "cannot read workflow q, the parent of unfinished workflows",
        "cannot read workflow t, the parent of unfinished workflows"], said
    assert all(m.endswith("its children are not asked to end") for m in said), said


async def test_a_tools_terminate_whose_ask_of_children_elsewhere_fails_is_asked_again(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool's terminate of a parent (its request, as ``garrison workflows terminate``
    leaves it while a node runs the workflow) is met by the node's wakeup watcher: a
    read of the parent's children on another node that failed there raised out of the
    watcher and failed the node. It is a warning now, and the parent's end asks again;
    each child ends terminated."""
    import trio

    from garrison._store_tools import ask_terminate
    from garrison.persistence import open_store

    children = [f"c{i}" for i in range(3)]
    async with _children_on_b_parent_on_a(postgres_url, children) as (a, _b):
        left = _reads_of_children_fail(monkeypatch, a, 1)
        with open_store(postgres_url, lock=False) as store:
            assert ask_terminate(store, "p", "enough") is not None
        with trio.fail_after(10):
            while {str(a.workflow(wid).status()) for wid in ["p", *children]} != {
                    "failed"}:
                await trio.sleep(0.05)
        monkeypatch.undo()
        assert left == [0]


async def test_a_tools_cancel_whose_asks_of_children_elsewhere_fail_is_asked_at_wakeups(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A tool's cancel of a parent is met by the node's wakeup watcher, which asks for
    the parent's children on another node as its chunk of wakeups ends. That ask
    failing, and the parent's end's ask too, the cancel was kept unasked, but a later
    chunk of wakeups (a tool's message for the ended parent, say) did not ask again:
    only a cancel of another tree, a resume or the node's restart did, and the children
    ran on meanwhile. A chunk of wakeups asks again for what was left unasked, and both
    warnings say so (the parent's end's named only a cancel, terminate or resume)."""
    import logging

    import trio

    from garrison.persistence import Transaction, open_store

    children = [f"c{i}" for i in range(3)]
    async with _children_on_b_parent_on_a(postgres_url, children) as (a, b):
        left = _reads_of_children_fail(monkeypatch, a, 2)
        with open_store(postgres_url, lock=False) as store:
            store.write(Transaction().request_cancel("p", time=time.time()))
        with trio.fail_after(10):
            while str(a.workflow("p").status()) != "cancelled" or left != [0]:
                await trio.sleep(0.02)
        await trio.sleep(0.3)
        assert "cancelled" not in {str(b.workflow(wid).status()) for wid in children}
        with open_store(postgres_url, lock=False) as store:
            store.deliver("p", "late", None)  # (a wakeup of node a)
        with trio.fail_after(10):
            while {str(b.workflow(wid).status()) for wid in children} != {"cancelled"}:
                await trio.sleep(0.05)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and "could not be asked to cancel" in r.getMessage()]
    assert len(said) == 2, said
    assert all("asked again at the next wakeups, cancel" in line for line in said), said


async def test_a_node_refreshes_the_children_woken_by_a_cancel_elsewhere_in_chunks(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node that runs the children of a parent another node cancelled refreshed
    every child the cancel woke in one step of its thread (2,000 held its event loop
    1.3-2.1 s: every other process of the node stood still). It refreshes
    ``WAKE_CHUNK`` a step now (two here), each child once; every child ends."""
    import trio

    from garrison.hosts.workflow import _recovery

    children = [f"c{i}" for i in range(7)]
    monkeypatch.setattr(_recovery, "WAKE_CHUNK", 2, raising=False)
    refresh = _recovery.refresh
    refreshed: list[str] = []
    in_step = [0]
    longest = [0]
    # (node b's refreshes only: a, in this process too, hears its parent's cancel)
    here: dict[str, Any] = {}

    class Steps(trio.abc.Instrument):
        def before_task_step(self, task: Any) -> None:
            in_step[0] = 0

    def counted(host: Any, wid: str, **kwargs: Any) -> None:
        if host is here.get("host"):
            refreshed.append(wid)
            in_step[0] += 1
            longest[0] = max(longest[0], in_step[0])
        refresh(host, wid, **kwargs)

    async with _children_on_b_parent_on_a(postgres_url, children) as (a, b):
        here["host"] = b.hosts["workflows"]
        monkeypatch.setattr(_recovery, "refresh", counted)
        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        try:
            await a.workflow("p").cancel()
            with trio.fail_after(10):
                while {str(a.workflow(wid).status()) for wid in children} != {
                        "cancelled"}:
                    await trio.sleep(0.05)
        finally:
            trio.lowlevel.remove_instrument(steps)
        monkeypatch.undo()
        assert sorted(refreshed) == children, refreshed
        assert longest == [2], longest


async def test_a_failed_refresh_of_a_woken_workflow_is_tried_again(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh of a woken workflow that the store failed raised out of the node's
    wakeup watcher: the wakeups it had taken (and those after it) were lost, and the
    children a cancel elsewhere woke ran on. The refresh that failed is tried again
    with those after it, a moment later; none refreshed before it is read again, and
    every child ends cancelled."""
    import trio

    from garrison.hosts.workflow import _recovery

    children = [f"c{i}" for i in range(7)]
    monkeypatch.setattr(_recovery, "WAKE_CHUNK", 2, raising=False)
    refresh = _recovery.refresh
    refreshed: list[str] = []
    failed: list[str] = []
    here: dict[str, Any] = {}  # (node b's refreshes only)

    def failing(host: Any, wid: str, **kwargs: Any) -> None:
        if host is here.get("host"):
            refreshed.append(wid)
            if len(refreshed) == 3:
                failed.append(wid)
                raise garrison.StoreError(host.store.path, "the server closed the "
                                          "connection")
        refresh(host, wid, **kwargs)

    async with _children_on_b_parent_on_a(postgres_url, children) as (a, b):
        here["host"] = b.hosts["workflows"]
        monkeypatch.setattr(_recovery, "refresh", failing)
        await a.workflow("p").cancel()
        with trio.fail_after(10):
            while {str(b.workflow(wid).status()) for wid in children} != {"cancelled"}:
                await trio.sleep(0.05)
        monkeypatch.undo()
        assert len(failed) == 1
        assert sorted(refreshed) == sorted(children + failed), refreshed



async def test_refreshes_the_store_keeps_failing_are_its_failure_not_tried_for_ever(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A refresh of woken workflows that the store fails every time was tried again for
    ever, a warning each time: on PostgreSQL each read first reconnects for
    ``retry_for`` in the node's thread, so a server gone for good held the node most of
    the time, and the node never said its store had failed. After
    ``WAKE_FAILURES_MAX`` failures in a row the store has failed, as when the wakeups
    cannot be taken: the node says so and its workflows stop. (The store fails the
    node's other reads too: a refresh that fails alone is its workflow's own fault.)"""
    import logging

    import trio

    from garrison.hosts.workflow import _recovery

    children = [f"c{i}" for i in range(3)]
    tried: list[str] = []
    here: dict[str, Any] = {}  # (node b's refreshes only)
    refresh = _recovery.refresh

    def failing(host: Any, wid: str, **kwargs: Any) -> None:
        if host is here.get("host"):
            tried.append(wid)
            raise garrison.StoreError(host.store.path, "the server closed the connection")
        refresh(host, wid, **kwargs)

    def gone(wid: str) -> Any:
        raise garrison.StoreError(here["host"].store.path, "the server closed the connection")

    caplog.set_level(logging.WARNING, "garrison")
    async with _children_on_b_parent_on_a(postgres_url, children) as (a, b):
        here["host"] = b.hosts["workflows"]
        monkeypatch.setattr(_recovery, "refresh", failing)
        monkeypatch.setattr(here["host"].store, "get_workflow", gone)
        monkeypatch.setattr(here["host"].store, "answers", lambda: False)
        await a.workflow("p").cancel()
        with trio.fail_after(10):
            while not any("its store failed" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.05)
        monkeypatch.undo()
        assert len(tried) == _recovery.WAKE_FAILURES_MAX, tried
    warned = [r for r in caplog.records if "could not read" in r.getMessage()]
    assert len(warned) == _recovery.WAKE_FAILURES_MAX - 1, warned


async def test_cancelled_workflows_a_node_resumes_ask_the_store_together_for_children(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that resumes workflows a tool cancelled while no node ran them (and
    hears of those cancels) asked the store for the children another node runs of
    each one separately, a blocking read each in the node's thread: now once for those
    resumed together (and for those a batch of wakeups names). (Each workflow's
    own ask as its cancel arrives in its place in time is apart: ``cancel_first``.)
    Each child ends cancelled."""
    import traceback

    import trio

    from garrison.persistence import PostgresStore, Transaction, open_store

    name = "cluster_app:ends_on_a_message"
    parents = [f"p{i}" for i in range(6)]
    children = [f"c{i}" for i in range(6)]
    with open_store(postgres_url) as store:
        tx = Transaction()
        for wid, parent in zip(children, parents, strict=True):
            tx.create_workflow(wid, name, [], status="running", host="workflows",
                               parent=garrison.Pid("workflows", parent))
        store.write(tx)
    reads: list[tuple[str, int]] = []  # (the path that read, how many parents)
    unfinished_children = PostgresStore.unfinished_children
    paths = {"resume_all", "adopt", "watch_wakeups", "cancel_first"}

    def counted(self: PostgresStore, pids: Any, *damaged: Any) -> Any:
        names = [frame.name for frame in traceback.extract_stack()]
        reads.append((next(name for name in reversed(names) if name in paths), len(pids)))
        return unfinished_children(self, pids, *damaged)

    async with garrison.open_node(store=postgres_url, name="b", lease="30s",
                                  max_concurrent=6) as b:
        with trio.fail_after(10):
            while {m.name: m.workflows for m in b.cluster()} != {"b": 6}:
                await trio.sleep(0.02)
        with open_store(postgres_url) as store:
            tx = Transaction()
            for wid in parents:
                tx.create_workflow(wid, name, [], status="running", host="workflows")
                tx.request_cancel(wid, time=time.time())
            store.write(tx)
        monkeypatch.setattr(PostgresStore, "unfinished_children", counted)
        async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
            with trio.fail_after(10):  # (a parent ends once it heard of its child's end)
                while {str(a.workflow(wid).status()) for wid in children + parents} != {
                        "cancelled"}:
                    await trio.sleep(0.05)
        monkeypatch.undo()
        # (which of the resume, a claim or the wakeups takes them up first depends on
        # how many a node has claimed at its start: one of them reads for several)
        together = [count for path, count in reads if path != "cancel_first"]
        assert together and max(together) > 1, reads


async def test_processes_call_and_monitor_a_workflow_another_node_runs(
        postgres_url: str) -> None:
    """A call from node b to a workflow node a runs is answered (it failed at once with
    a false noproc), one the workflow ends without answering fails then; a plain
    process's monitor gets the EXIT when the workflow ends (it got a noproc at once)."""
    import cluster_app
    import trio

    from garrison import process

    async def watcher(target: str) -> list[object]:
        process.monitor(target)
        ev = await process.events().receive()
        return [ev.kind.value, ev.ok, ev.result]

    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(cluster_app.doubler, id="d")
        with trio.fail_after(10):
            assert await b.call("workflows/d", "double", 21) == 42
        pid = await b.spawn(watcher, "workflows/d")
        async with trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def unanswered() -> None:
                try:
                    await b.call("workflows/d", "hold", None, timeout="30s")
                except garrison.ProcessError as exc:
                    failed.append(exc)

            nursery.start_soon(unanswered)
            await trio.sleep(0.5)
            await b.send("workflows/d", "stop", None)
            with trio.fail_after(10):
                assert await b.wait(pid) == ["EXIT", True, None]
        assert len(failed) == 1 and "ended before replying" in str(failed[0])


async def test_a_workflow_calls_a_workflow_another_node_runs(postgres_url: str) -> None:
    """The request goes to the callee's inbox, the reply to the node that runs the
    caller (it failed at once with a false noproc); the calls are journaled as any."""
    import cluster_app
    import trio

    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(cluster_app.doubler, id="d")
        await b.start_workflow(cluster_app.asks, "workflows/d", 3, id="asker")
        with trio.fail_after(20):
            assert await b.workflow("asker").result() == [0, 2, 4]
        assert [r.kind for r in b.workflow("asker").history()] == ["call"] * 3
        await b.send("workflows/d", "stop", None)


async def test_a_reply_sent_just_before_the_end_is_not_taken_for_no_reply(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reply comes through the nodes' channel, the end through a read of the store:
    nothing orders them, so the caller's node seeing the end first failed the call
    ('ended before replying'); the calls still waiting fail only a grace period later.
    (Node b hands the channel's messages on 0.2 s late here, as under a busy round.)"""
    import cluster_app
    import trio

    from garrison.cluster import _remote

    original = _remote.Remote.receive
    nodes: dict[str, Any] = {}

    def late_receive(self: Any, bodies: list[str]) -> None:
        if self.name != "b":
            return original(self, bodies)

        async def later() -> None:
            await trio.sleep(0.2)
            original(self, bodies)

        nodes["b"].hosts["workflows"].start_soon(later)
        return None

    monkeypatch.setattr(_remote.Remote, "receive", late_receive)
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        nodes["b"] = b
        await a.start_workflow(cluster_app.replies_once_and_ends, id="r")
        with trio.fail_after(10):
            assert await b.call("workflows/r", "q", None, timeout="5s") == "answer"


async def test_a_wakeup_during_a_receives_commit_does_not_deliver_its_message_twice(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow took a message and was committing its receive when a wakeup (another
    node's send, a tool's write) refreshed it from the store: the row, not yet marked
    consumed there, was queued again, the next receive took it a second time, and its
    consume failed the workflow (``inbox row N is not a pending message``). Seen with
    signals from two nodes while a drain moved the workflow."""
    import cluster_app
    import trio

    from garrison.hosts.workflow._recovery import refresh
    from garrison.persistence import Op
    from garrison.persistence._postgres import PostgresStore

    commit = PostgresStore.commit
    gate, entered = trio.Event(), trio.Event()

    async def held_consume(self: PostgresStore, tx: garrison.persistence.Transaction
                           ) -> list[object]:
        if any(op is Op.CONSUME for op, _ in tx.ops) and not gate.is_set():
            entered.set()
            await gate.wait()
        return await commit(self, tx)

    monkeypatch.setattr(PostgresStore, "commit", held_consume)
    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        host = node.hosts["workflows"]
        await node.start_workflow(cluster_app.mailbox, 2, id="mb")
        await node.workflow("mb").signal("m", 1)
        with trio.fail_after(5):
            await entered.wait()  # its receive of 1 is being committed
            refresh(host, "mb")  # as a wakeup does
            gate.set()
            await node.workflow("mb").signal("m", 2)
            assert await node.workflow("mb").result() == [1, 2]


async def test_a_wakeup_while_a_nodes_own_send_commits_does_not_deliver_it_twice(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node sent to a workflow it runs: once the send's commit returned, the node queued
    the row in the workflow's inbox. A wakeup (another node's send) that refreshed the
    workflow from the store between the commit and that had queued the row already: the
    workflow took it twice, and the second consume failed it (``inbox row N is not a
    pending message``). Seen with signals from two nodes while a drain moved it."""
    import cluster_app
    import trio

    from garrison.hosts.workflow._recovery import refresh
    from garrison.persistence import Op
    from garrison.persistence._postgres import PostgresStore

    commit = PostgresStore.commit
    hosts: list[Any] = []

    async def refreshed_on_return(self: PostgresStore, tx: garrison.persistence.Transaction
                                  ) -> list[object]:
        results = await commit(self, tx)
        if hosts and any(op is Op.DELIVER for op, _ in tx.ops):
            refresh(hosts[0], "mb")  # a wakeup, as the send's commit has returned
        return results

    monkeypatch.setattr(PostgresStore, "commit", refreshed_on_return)
    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        await node.start_workflow(cluster_app.mailbox, 3, id="mb")
        hosts.append(node.hosts["workflows"])
        for i in range(3):
            await node.workflow("mb").signal("m", i)
        with trio.fail_after(5):
            assert await node.workflow("mb").result() == [0, 1, 2]
            while node.hosts["workflows"].active.get("mb") is not None:  # (it leaves as
                await trio.sleep(0.02)  # its task ends, after its result is out)


def test_the_membership_wait_works_past_selects_descriptor_limit(postgres_url: str) -> None:
    """A node with over 1,024 descriptors open (sockets): the membership thread waits on
    its connection and its wake pipe, whose descriptors may lie past ``select``'s limit,
    where ``select`` raised at once (the wait returned at once: the thread spun). It
    waits with ``poll``, and the wake pipe wakes it."""
    import os

    from garrison.persistence import PostgresStore
    from garrison.persistence._pg_cluster import PgCluster

    read, write = os.pipe()
    high = os.dup2(read, 1500)
    with PostgresStore(postgres_url) as store:
        pg = PgCluster(store, "t")
        try:
            os.write(write, b"x")
            assert pg.wait(5.0, high) is True
        finally:
            pg.close()
            for fd in (read, write, high):
                os.close(fd)


async def test_two_nodes_starting_with_one_dedup_key_at_once_start_one_workflow(
        postgres_url: str) -> None:
    """Two nodes start workflows of different ids with the same dedup key at the same
    moment (five times): one workflow is created and runs, and both starts return its
    pid (the store's key decides; the other start's row is not written)."""
    import cluster_app
    import trio

    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
        async def start(got: dict[str, object], node: garrison.Node, wid: str,
                        key: str) -> None:
            got[wid] = await node.start_workflow(cluster_app.ends_on_a_message, id=wid,
                                                 dedup=key)

        for n in range(5):
            got: dict[str, object] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(start, got, a, f"x{n}a", f"k{n}")
                nursery.start_soon(start, got, b, f"x{n}b", f"k{n}")
            assert len(set(map(str, got.values()))) == 1, got
            rows = [s.workflow_id for s in a.workflows() if s.workflow_id.startswith(f"x{n}")]
            assert len(rows) == 1, rows
            await a.workflow(rows[0]).signal("go", "go")
            with trio.fail_after(10):
                assert await a.workflow(rows[0]).result() == "go"


def test_show_names_no_node_for_a_workflow_whose_node_was_killed(
        postgres_url: str, nodes: list[Node]) -> None:
    """``show``'s ``node`` named a node killed seconds before, its lease long lapsed,
    while no live node had marked it lost (a cluster of one): it runs nowhere."""
    from garrison import _store_tools as tools

    a = Node.start(postgres_url, "a", 1.0, start=1, steps=1000, delay=0.05)
    nodes.append(a)
    look = Look(postgres_url)
    try:
        wait_for(lambda: len(look.steps("w0")) > 0, 20, "w0 to run on a")
        assert tools.detail(look.store, look.store.get_workflow("w0"))["node"] == "a"
        a.kill()
        time.sleep(1.5)
        assert tools.detail(look.store, look.store.get_workflow("w0"))["node"] is None
    finally:
        look.close()


async def _left_by_a_stopped_node(url: str, monkeypatch: pytest.MonkeyPatch,
                                  ids: list[str]) -> None:
    """Looks at the balance every 0.5 s, and a node that stopped left ``ids``
    (``cluster_app.mailbox`` of one message) to the next node up: a cold restart."""
    import cluster_app

    from garrison.cluster import _member

    monkeypatch.setattr(_member, "BALANCE_LEASES", 0.5)  # a look every 0.5 s
    monkeypatch.setattr(_member, "BALANCE_MIN", 0.5)
    async with garrison.open_node(store=url, name="old", lease="1s") as old:
        for wid in ids:
            await old.start_workflow(cluster_app.mailbox, 1, id=wid)


def _no_code_for(url: str, ids: list[str]) -> None:
    """The workflows ``ids`` have code no node has (``gone_app:nothing``: a release
    that dropped it)."""
    look = Look(url)
    try:
        look.store._query("UPDATE garrison.workflows SET name = 'gone_app:nothing' "
                          "WHERE workflow_id = ANY(%s)", (ids,))
    finally:
        look.close()


async def test_a_node_over_its_share_hands_what_it_took_over_to_a_node_with_fewer(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold restart: the first node up claims every orphan, and a node that joined
    later got nothing (placed workflows were never moved). A node clearly over its
    share at two looks in a row hands workflows it took over, and that wait, to the
    nodes with fewer; one started on it stays there, nothing is run twice, and once
    even nothing moves again."""
    import cluster_app
    import trio

    url = postgres_url
    taken = [f"t{i}" for i in range(12)]
    own = [f"own{i}" for i in range(3)]
    await _left_by_a_stopped_node(url, monkeypatch, taken)
    async with garrison.open_node(store=url, name="a", lease="1s") as a:
        host_a = a.hosts["workflows"]
        assert set(host_a.active) == set(taken)  # the first node up took every orphan
        for wid in own:
            await a.start_workflow(cluster_app.mailbox, 1, id=wid)
        async with garrison.open_node(store=url, name="b", lease="1s") as b:
            host_b = b.hosts["workflows"]
            with trio.fail_after(10):
                while len(host_b.active) < 7:  # 15 over 2 nodes: a keeps 8
                    await trio.sleep(0.05)
            await trio.sleep(2.5)  # five more looks: even now, nothing moves again
            assert len(host_a.active) == 8 and len(host_b.active) == 7
            assert set(own) <= set(host_a.active)  # started on a: stays there
            assert set(host_b.active) <= set(taken)
            assert a.stats()["cluster"]["workflows"]["balanced"] == 7
            assert b.stats()["cluster"]["workflows"]["balanced"] == 0
            for wid in taken + own:
                await a.workflow(wid).signal("m", wid)
            with trio.fail_after(10):
                for wid in taken + own:
                    assert await a.workflow(wid).result() == [wid]
            assert set(host_b.finished) == set(taken) - set(host_a.finished)
    look = Look(url)
    try:
        for wid in taken + own:  # each received its one message once
            assert [r.kind for r in look.store.journal(wid)].count("receive") == 1
    finally:
        look.close()


def test_a_node_over_its_share_hands_on_what_the_others_lack_within_their_room() -> None:
    from garrison.cluster._member import balance

    assert balance({1: (12, None), 2: (0, None)}, 1) == (6, 6)
    assert balance({1: (12, None), 2: (6, None)}, 2) == (0, 9)  # under its share
    assert balance({1: (105, None), 2: (95, None)}, 1) == (0, 100)  # slight
    # a node that cannot take its share counts at what it can, the others share the rest
    assert balance({1: (12, None), 2: (0, 2)}, 1) == (2, 10)  # room for 2 only
    assert balance({1: (12, None), 2: (0, 0)}, 1) == (0, 12)  # full: none
    assert balance({1: (15, None), 2: (0, 3), 3: (0, None)}, 1) == (3 + 6, 6)
    assert balance({1: (16, None), 2: (0, 2), 3: (6, None)}, 1) == (6, 10)  # 10/2/10
    # the nodes over their share hand on parts that add up to what the others lack
    loads: dict[int, tuple[int, int | None]] = {
        1: (12, None), 2: (0, 2), 3: (12, None), 4: (0, None)}  # 8 each, 2 for node 2
    assert [balance(loads, e)[0] for e in loads] == [4, 0, 4, 0]
    loads = {1: (20, None), 2: (0, 3), 3: (14, None), 4: (2, None)}  # 11, 3, 11, 11
    assert [balance(loads, e)[0] for e in loads] == [9, 0, 3, 0]
    loads = {1: (10, None), 2: (10, None), 3: (10, None), 4: (0, 1)}  # 10, 10, 10, 1
    assert [balance(loads, e)[0] for e in loads] == [0, 0, 0, 0]


def test_balancing_edges_and_what_goes_to_whom() -> None:
    from types import SimpleNamespace

    from garrison.cluster._member import balance, pick, targets

    assert targets({}) == (0, {}) and balance({}, 1) == (0, 0)
    assert targets({1: (0, 0), 2: (0, 0)}) == (0, {1: 0, 2: 0})
    assert balance({1: (10, 0), 2: (0, 0)}, 1) == (0, 10)  # nobody has room
    y, x, z = (SimpleNamespace(wid=n, name=f"app:{n}") for n in "yxz")
    refuses_x = frozenset({"app:x"})
    # the node refusing most is served first: y to it, x to the other (not y to the
    # first, then x to nobody)
    assert pick([y, x], 2, [(1, frozenset()), (1, refuses_x)]) == [y, x]
    assert pick([x, x, z], 3, [(2, refuses_x)]) == [z]  # none of what it refuses
    assert pick([y, z], 1, [(5, frozenset())]) == [y]  # at most count


async def test_orphans_no_node_runs_do_not_stop_the_load_being_evened(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workflows whose code no node has wait unowned for ever: they are no orphan a
    claim is about to spread, so the nodes still even the rest (counted as orphans,
    they turned balancing off for the whole cluster). What ended is forgotten too."""
    import trio

    url = postgres_url
    taken = [f"t{i}" for i in range(12)]
    await _left_by_a_stopped_node(url, monkeypatch, [*taken, "z0", "z1"])
    _no_code_for(url, ["z0", "z1"])
    async with garrison.open_node(store=url, name="a", lease="1s") as a:
        host_a = a.hosts["workflows"]
        assert set(host_a.active) == set(taken)
        async with garrison.open_node(store=url, name="b", lease="1s") as b:
            host_b = b.hosts["workflows"]
            with trio.fail_after(10):  # (6, or 5 if a look saw b own z0 as it refused it)
                # (a workflow handed on is in neither for a moment: a's lets go first)
                while len(host_b.active) < 5 or len(host_a.active) + len(host_b.active) < 12:
                    await trio.sleep(0.05)
            assert len(host_a.active) + len(host_b.active) == 12
            for wid in taken:
                await a.workflow(wid).signal("m", wid)
            with trio.fail_after(10):
                for wid in taken:
                    assert await a.workflow(wid).result() == [wid]
            assert not host_a.ownership._taken  # (ended: nothing to hand on is kept)


async def test_a_full_node_over_its_share_hands_on_though_orphans_no_node_runs_wait(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node at its ``max_concurrent`` claims nothing, so it never learns itself that
    no node has the code of some orphans: it counted them as orphans waiting for ever,
    and never handed on. The nodes' rows say what each refuses."""
    import trio

    url = postgres_url
    taken = [f"t{i}" for i in range(12)]
    await _left_by_a_stopped_node(url, monkeypatch, taken)
    async with garrison.open_node(store=url, name="a", lease="1s", max_concurrent=12) as a:
        host_a = a.hosts["workflows"]
        assert set(host_a.active) == set(taken)  # full
        await _left_by_a_stopped_node(url, monkeypatch, ["z0", "z1"])
        _no_code_for(url, ["z0", "z1"])
        async with garrison.open_node(store=url, name="b", lease="1s") as b:
            host_b = b.hosts["workflows"]
            with trio.fail_after(10):
                # (a workflow handed on is in neither for a moment: a's lets go first)
                while len(host_b.active) < 5 or len(host_a.active) + len(host_b.active) < 12:
                    await trio.sleep(0.05)
            assert len(host_a.active) + len(host_b.active) == 12
            assert "gone_app:nothing" in b.stats()["cluster"]["workflows"]["refused"]
            assert "gone_app:nothing" not in a.stats()["cluster"]["workflows"]["refused"]


async def test_a_node_hands_on_nothing_the_nodes_with_fewer_cannot_run(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rolling deploy: the node with fewer workflows refuses their code (an older
    release). Each look handed it a fresh batch, which came back after the hold, each
    workflow replayed twice, and the load stayed as it was."""
    import trio

    url = postgres_url
    taken = [f"t{i}" for i in range(12)]
    await _left_by_a_stopped_node(url, monkeypatch, taken)
    async with garrison.open_node(store=url, name="a", lease="1s") as a:
        host_a = a.hosts["workflows"]
        name = host_a.active["t0"].name
        async with garrison.open_node(store=url, name="b", lease="1s") as b:
            member = b.hosts["workflows"].ownership
            member.refuse("-", name, ModuleNotFoundError(name))  # (as at its first claim)
            await trio.sleep(4)  # eight looks of a
            assert a.stats()["cluster"]["workflows"]["balanced"] == 0
            assert len(host_a.active) == 12


def _refused_in_row(url: str, node: str) -> list[str]:
    """The workflow names the live node ``node``'s row says it refuses."""
    look = Look(url)
    try:
        rows = look.store._query("SELECT info FROM garrison.nodes WHERE name = %s AND "
                                 "status = 'active'", (node,))
    finally:
        look.close()
    return [n for (info,) in rows for n in json.loads(info).get("refused", [])]


async def test_a_node_hands_on_only_what_the_nodes_that_run_it_lack(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """a over its share (12 taken), b with none but refusing their code (an older
    release), c started 5 (short of its share by 1): a handed on its part of the whole
    lack (b's included), c took all of it: 12/0/5 went to 6/0/11. Now c gets its 1."""
    import cluster_app
    import trio

    url = postgres_url
    taken = [f"t{i}" for i in range(12)]
    await _left_by_a_stopped_node(url, monkeypatch, taken)
    async with garrison.open_node(store=url, name="a", lease="1s") as a:
        host_a = a.hosts["workflows"]
        member_a = host_a.ownership
        member_a.balance_every = 3600.0  # (no look until b and c are set up)
        member_a._next_balance = time.monotonic() + 3600.0
        name = host_a.active["t0"].name
        async with garrison.open_node(store=url, name="c", lease="1s") as c, \
                garrison.open_node(store=url, name="b", lease="1s") as b:
            for i in range(5):
                await c.start_workflow(cluster_app.mailbox, 1, id=f"c{i}")
            b.hosts["workflows"].ownership.refuse("-", name, ModuleNotFoundError(name))
            with trio.fail_after(10):  # (b's row says it)
                while name not in _refused_in_row(url, "b"):
                    await trio.sleep(0.05)
            member_a.balance_every = 0.5
            member_a._next_balance = 0.0
            with trio.fail_after(10):
                while len(c.hosts["workflows"].active) < 6:
                    await trio.sleep(0.05)
            await trio.sleep(2.5)  # five more looks
            assert a.stats()["cluster"]["workflows"]["balanced"] == 1
            assert [len(n.hosts["workflows"].active) for n in (a, b, c)] == [11, 0, 6]


async def test_a_node_hands_on_no_more_than_the_others_have_room_for(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node with fewer workflows but a small ``max_concurrent`` takes only what it has
    room for: the node over its share hands on that many, not its whole lack (the rest
    came back after the hold, each replayed twice, and stayed uneven)."""
    import trio

    url = postgres_url
    taken = [f"t{i}" for i in range(12)]
    await _left_by_a_stopped_node(url, monkeypatch, taken)
    async with garrison.open_node(store=url, name="a", lease="1s") as a:
        host_a = a.hosts["workflows"]
        assert len(host_a.active) == 12
        async with garrison.open_node(store=url, name="b", lease="1s",
                                      max_concurrent=2) as b:
            host_b = b.hosts["workflows"]
            with trio.fail_after(10):
                while len(host_b.active) < 2:
                    await trio.sleep(0.05)
            await trio.sleep(3)  # six more looks: nothing moves again
            assert len(host_a.active) == 10 and len(host_b.active) == 2
            assert a.stats()["cluster"]["workflows"]["balanced"] == 2
            for wid in taken:
                await a.workflow(wid).signal("m", wid)
            with trio.fail_after(10):
                for wid in taken:
                    assert await a.workflow(wid).result() == [wid]
    look = Look(url)
    try:  # none was handed on and back (replayed twice)
        for wid in taken:
            assert [r.kind for r in look.store.journal(wid)].count("receive") == 1
    finally:
        look.close()


WAITING_APP = '''
from garrison import process


async def wait_one() -> object:
    """Waits for one message (a workflow type only some nodes have)."""
    msg = await process.inbox().receive()
    return msg.payload
'''


async def test_a_workflow_handed_on_to_even_the_load_that_comes_back_stays(
        postgres_url: str, nodes: list[Node], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A node with fewer workflows may lack their code (a rolling deploy): what the
    node over its share handed on comes back (the other claims, refuses, releases it).
    That one goes at most once, else it would go back and forth, replayed each time,
    for as long as the cluster is uneven; and once the other's row says it refuses
    their code, no other is handed to it (6 then, one batch after the other)."""
    import trio

    from garrison.cluster import _member

    monkeypatch.setattr(_member, "BALANCE_LEASES", 0.5)
    monkeypatch.setattr(_member, "BALANCE_MIN", 0.5)
    code = tmp_path / "new_release"
    code.mkdir()
    (code / "waiting_app.py").write_text(WAITING_APP)
    monkeypatch.syspath_prepend(str(code))
    import waiting_app

    url = postgres_url
    ids = [f"w{i}" for i in range(6)]
    async with garrison.open_node(store=url, name="old", lease="1s") as old:
        for wid in ids:
            await old.start_workflow(waiting_app.wait_one, id=wid)
    async with garrison.open_node(store=url, name="a", lease="1s") as a:
        host = a.hosts["workflows"]
        nodes.append(await trio.to_thread.run_sync(Node.start, url, "b", LEASE))  # no code
        stats = a.stats
        with trio.fail_after(20):
            while stats()["cluster"]["workflows"]["balanced"] < 3 or len(host.active) < 6:
                await trio.sleep(0.05)
        await trio.sleep(2.5)  # five more looks: none is handed on again
        assert stats()["cluster"]["workflows"]["balanced"] == 3
        assert set(host.active) == set(ids)
        for wid in ids:
            await a.workflow(wid).signal("m", wid)
        with trio.fail_after(10):
            for wid in ids:
                assert await a.workflow(wid).result() == wid


async def _record_a_tick(look: Look, sid: str) -> float:
    """Record schedule ``sid``'s next tick as a node does (a compare-and-set, won before
    the nodes running get there) and then dies before it creates the tick's workflow;
    the tick's time."""
    import trio

    from garrison.hosts.workflow._schedules import tick_id
    from garrison.persistence import Transaction

    with trio.fail_after(10):
        while True:
            record = look.store.get_schedule(sid)
            assert record is not None and record.next_tick is not None
            tick = record.next_tick.timestamp()
            [recorded] = look.store.write(Transaction().update_schedule(
                sid, next_tick=tick + 1, last_tick=tick, last_workflow=tick_id(sid, tick),
                expect_next_tick=tick))
            if recorded:
                return tick
            await trio.sleep(0.05)


async def _replaced(look: Look, sid: str, wid: str) -> str:
    """Wait until a later tick replaced ``wid`` as schedule ``sid``'s last run and its
    workflow exists; that workflow's id."""
    import trio

    with trio.fail_after(10):
        while True:
            last = look.store.get_schedule(sid).last_workflow
            if last not in (None, wid) and look.store.get_workflow(last) is not None:
                return last
            await trio.sleep(0.05)


async def _created(look: Look, wid: str, within: float = 10.0) -> None:
    """Wait until the workflow ``wid`` exists in the store."""
    import trio

    with trio.fail_after(within):
        while look.store.get_workflow(wid) is None:
            await trio.sleep(0.05)


async def test_a_tick_a_lost_node_recorded_starts_though_later_ticks_replaced_it(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A schedule ticking more often than the lease: node b recorded tick T and died
    before it created T's workflow. Until b's loss was known, a recorded the next ticks,
    each replacing the schedule's last run, so the repair after the loss (which looks
    at the last run only) found nothing: T never ran, nothing said so. (``allow_all``:
    under ``skip`` a later run still running would skip T.)"""
    import logging

    from garrison.hosts.workflow._schedules import ScheduleDefinition, tick_id

    caplog.set_level(logging.WARNING, logger="garrison")
    async with garrison.open_node(store=postgres_url, name="a", lease=LEASE) as a:
        look = Look(postgres_url)
        try:
            scheduler = a.hosts["workflows"].scheduler
            await scheduler.put(ScheduleDefinition.build(
                "often", "cluster_app:steps", [1, 0.0], every="1s", overlap="allow_all"))
            lost = tick_id("often", await _record_a_tick(look, "often"))
            await _replaced(look, "often", lost)  # a ticks on, over b's tick
            assert look.store.get_workflow(lost) is None
            scheduler.nodes_lost()  # what a's round does once b's lease lapsed
            await _created(look, lost)
            assert await a.workflow(lost).result() == [0]
        finally:
            look.close()
    assert any(f"its tick {lost} was recorded by a node of the cluster that left or was lost"
               in r.getMessage() for r in caplog.records)


async def test_a_replaced_tick_of_a_lost_node_starts_though_another_node_marked_it_lost(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Three nodes: a recorded tick T and died before it created T's workflow, b
    recorded the next tick over it, and c marked a lost. Only the node that marked a
    node lost looked for such ticks, and c had replaced none: T never ran."""
    import logging

    from garrison.hosts.workflow._schedules import ScheduleDefinition, tick_id
    from garrison.persistence._pg_cluster import PgCluster

    caplog.set_level(logging.WARNING, logger="garrison")
    async with garrison.open_node(store=postgres_url, name="b", lease=LEASE) as b, \
            garrison.open_node(store=postgres_url, name="c", lease=LEASE) as c:
        b.hosts["workflows"].ownership.pg.mark_lost = lambda: []  # c marks a lost
        await c.hosts["workflows"].scheduler.stop()  # b records the ticks
        look = Look(postgres_url)
        a = PgCluster(look.store, "a", lease=4.0)  # joins, never renews: lost in 4 s
        try:
            a.join(a.new_epoch())
            await b.hosts["workflows"].scheduler.put(ScheduleDefinition.build(
                "often", "cluster_app:steps", [1, 0.0], every="1s", overlap="allow_all"))
            lost = tick_id("often", await _record_a_tick(look, "often"))  # (as a)
            await _replaced(look, "often", lost)
            assert look.store.get_workflow(lost) is None
            await _created(look, lost, within=15)  # a's lease lapses, c marks it lost
            assert await b.workflow(lost).result() == [0]
        finally:
            a.close()
            look.close()
    messages = [r.getMessage() for r in caplog.records]
    assert "node c: nodes lost (lease lapsed): a" in messages
    assert not any(m.startswith("node b: nodes lost") for m in messages)
    assert any(f"its tick {lost} was recorded by a node of the cluster that left or was lost"
               in m for m in messages)


@pytest.mark.parametrize("overlap", ["skip", "buffer_one"])
async def test_a_replaced_tick_of_a_lost_node_keeps_to_the_overlap_policy(
        postgres_url: str, caplog: pytest.LogCaptureFixture, overlap: str) -> None:
    """The repair of a tick a lost node recorded, which a later tick replaced, started
    it whatever the overlap policy: beside the later run still running, two runs at
    once under ``skip``. It is skipped (and said) unless ``allow_all``."""
    import logging

    import trio

    from garrison.hosts.workflow._schedules import ScheduleDefinition, tick_id
    from garrison.persistence import WorkflowStatus

    caplog.set_level(logging.WARNING, logger="garrison")

    def said() -> bool:
        return any(f"its tick {lost} was recorded" in r.getMessage() for r in caplog.records)

    async with garrison.open_node(store=postgres_url, name="a", lease=LEASE) as a:
        look = Look(postgres_url)
        try:
            scheduler = a.hosts["workflows"].scheduler
            await scheduler.put(ScheduleDefinition.build(
                "often", "cluster_app:steps", [1, 60.0], every="1s", overlap=overlap))
            lost = tick_id("often", await _record_a_tick(look, "often"))
            running = await _replaced(look, "often", lost)  # for a minute
            skipped = scheduler.counts["skipped"]
            scheduler.nodes_lost()
            with trio.fail_after(10):
                while not said():
                    await trio.sleep(0.05)
            assert look.store.get_workflow(lost) is None
            assert not WorkflowStatus(look.store.get_workflow(running).status).finished
            assert scheduler.counts["skipped"] > skipped
        finally:
            look.close()
    [message] = [r.getMessage() for r in caplog.records
                 if f"its tick {lost} was recorded" in r.getMessage()]
    assert f"skipped, as workflow {running} (a later run) is still running" in message


async def test_a_tick_two_nodes_repair_at_once_is_said_started_once(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Both surviving nodes look for a tick a lost (or leaving) node recorded without
    starting its workflow, and both start it: the start is idempotent, the workflow
    runs once, but both logged that they started it. Only the node whose start created
    it says so."""
    import logging

    import trio

    caplog.set_level(logging.WARNING, logger="garrison")

    from garrison.hosts.workflow._schedules import ScheduleDefinition, tick_id
    from garrison.persistence import Transaction

    async with garrison.open_node(store=postgres_url, name="b", lease=LEASE) as b, \
            garrison.open_node(store=postgres_url, name="c", lease=LEASE) as c:
        look = Look(postgres_url)
        try:
            await b.hosts["workflows"].scheduler.put(ScheduleDefinition.build(
                "s", "cluster_app:steps", [1, 0.0], every="1h", catchup_window="1h"))
            wid = tick_id("s", float(int(time.time())))
            look.store.write(Transaction().update_schedule("s", last_workflow=wid))
            # each node's start of the tick waits for the other's: both found the tick
            # without its workflow (the race; else the second finds it and starts none)
            both = trio.Event()
            reached: list[str] = []
            for node in (b, c):
                host = node.hosts["workflows"]

                async def held(*args: Any, real: Any = host.start, name: str = node.name,
                               **kwargs: Any) -> Any:
                    reached.append(name)
                    if len(reached) == 2:
                        both.set()
                    await both.wait()
                    return await real(*args, **kwargs)

                host.start = held
            for node in (b, c):  # (what each node's round does when one left)
                node.hosts["workflows"].scheduler.nodes_lost()
            with trio.fail_after(10):
                await both.wait()
            await _created(look, wid)
            assert await b.workflow(wid).result() == [0]
        finally:
            look.close()
    said = [r for r in caplog.records if f"its tick {wid} was recorded" in r.getMessage()]
    assert len(said) == 1, [(r.name, r.getMessage()) for r in said]
    assert said[0].getMessage().endswith("started now")


async def test_a_tick_a_node_recorded_as_it_left_is_started_by_the_nodes_running_on(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A node that stops may leave a tick recorded and its workflow not created
    (``Scheduler.stop``): only a node that opened the store looked for it, or one that
    marked a node lost, and a node that leaves is not lost. Here the tick is recorded
    by hand, as the leaving node left it. A warning names it (none did)."""
    import logging

    import trio

    caplog.set_level(logging.WARNING, logger="garrison")

    from garrison.hosts.workflow._schedules import ScheduleDefinition, tick_id
    from garrison.persistence import Transaction

    async with garrison.open_node(store=postgres_url, name="b", lease=LEASE) as b:
        look = Look(postgres_url)
        try:
            async with garrison.open_node(store=postgres_url, name="a", lease=LEASE) as a:
                with trio.fail_after(10):  # (b sees a leave once its round saw it live)
                    while "a" not in {name for name, _ in b._router.remote.live}:
                        await trio.sleep(0.05)
                await a.hosts["workflows"].scheduler.put(ScheduleDefinition.build(
                    "s", "cluster_app:steps", [1, 0.0], every="1h", catchup_window="1h"))
                wid = tick_id("s", float(int(time.time())))
                look.store.write(Transaction().update_schedule("s", last_workflow=wid))
            await _created(look, wid)
            assert await b.workflow(wid).result() == [0]
        finally:
            look.close()
    assert any(f"schedule s: its tick {wid} was recorded by a node of the cluster that left "
               "or was lost before it started the workflow: started now" == r.getMessage()
               for r in caplog.records)


async def test_a_child_started_as_its_parent_is_cancelled_on_a_draining_node_goes_too(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-211: on a node draining (or full), a child workflow's start leaves it in
    the store for another node, and it was not cancelled with its parent when the
    parent's cancel came while that start was committed (the parent's cancel read the
    store's children before the child was there)."""
    import trio
    import workflow_app

    from garrison.persistence import Op

    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        host = node.hosts["workflows"]
        commit = type(host.store).commit

        async def commit_as_it_comes(self: Any, tx: Any) -> Any:
            if any(op is Op.CREATE_WORKFLOW and wid == "pw.1"
                   for (op, _), wid in zip(tx.ops, tx.workflow_ids, strict=True)):
                node.drain()
                host.request_cancel("pw")
            return await commit(self, tx)

        monkeypatch.setattr(type(host.store), "commit", commit_as_it_comes)
        await node.start_workflow(workflow_app.parent_of_waiters, id="pw")
        with trio.fail_after(10):  # (the node that takes it over cancels it at once)
            while (child := host.store.get_workflow("pw.1")) is None or not (
                    child.cancel_requested or str(child.status) == "cancelled"):
                await trio.sleep(0.05)
        assert "pw.1" not in host.active  # (handed on: this node drains)
        monkeypatch.undo()


# -- a drain waits for the activities a workflow started ------------------------------------
@garrison.activity()
async def counted_step(path: str, seconds: float) -> str:
    """Notes each start in the file ``path``, then works ``seconds``."""
    import trio

    with open(path, "a") as f:
        f.write("start\n")
    await trio.sleep(seconds)
    return "done"


async def races_a_started_step(path: str, seconds: float, how: str) -> str:
    """Starts ``counted_step`` and waits: for it or a timer (``first``), for a timer
    alone (``sleep``: the step is not awaited yet), or for it (``await``)."""
    from garrison import workflow

    h = workflow.start(counted_step, path, seconds)
    if how == "first":
        await workflow.first(h, workflow.timer(60))
    elif how == "sleep":
        await workflow.sleep(seconds * 2)
    return str(await h)


@pytest.mark.parametrize("how", ["first", "sleep", "await"])
async def test_a_drain_hands_a_workflow_over_once_its_started_activity_is_recorded(
        postgres_url: str, tmp_path: Path, how: str) -> None:
    """A workflow waiting in ``first(h, timer)`` on an activity it started
    (``workflow.start``), or not awaiting it yet, was handed over at once by a drain:
    its activity was cancelled unrecorded, and ran again on the other node (found by a
    probe). Like an awaited one, it moves once the activity's outcome is recorded."""
    import trio

    effects = tmp_path / "effects"
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(races_a_started_step, str(effects), 0.3, how, id="s")
        with trio.fail_after(5):
            while not effects.exists():
                await trio.sleep(0.02)
        a.drain()
        with trio.fail_after(10):
            await a.drained()
        with trio.fail_after(10):
            assert await b.workflow("s").result() == "done"
        assert effects.read_text() == "start\n"  # (ran once: not again on b)
        assert [r.kind for r in b.workflow("s").history()].count("activity") == 1


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=3, initial_delay="2s"))
async def fails_on_a(path: str, seconds: float) -> str:
    """Notes each start in the file ``path``, works ``seconds``, and fails on node a
    (its next attempt waits 2 s)."""
    import trio

    with open(path, "a") as f:
        f.write("start\n")
    await trio.sleep(seconds)
    node = garrison.current_node().name
    if node == "a":
        raise RuntimeError(f"not on {node}")
    return node


async def retries_off_a(path: str, seconds: float, how: str) -> str:
    """``fails_on_a``, awaited (``call``), or started and awaited (``await``: its
    hand-over at the failed attempt left the wait for ever), or raced with a timer
    (``first``)."""
    from garrison import workflow

    if how == "call":
        return await fails_on_a(path, seconds)
    h = workflow.start(fails_on_a, path, seconds)
    if how == "first":
        await workflow.first(h, workflow.timer(60))
    return str(await h)


@pytest.mark.parametrize("how", ["call", "await", "first"])
async def test_a_drain_moves_a_workflow_whose_activity_failed_as_it_drained_at_once(
        postgres_url: str, tmp_path: Path, how: str) -> None:
    """An activity's attempt under way at a drain fails: the workflow moves at its
    retry (recorded as a timer), not after waiting the backoff out on the draining
    node, and the other node makes the next attempt when it is due."""
    import trio

    effects = tmp_path / "effects"
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(retries_off_a, str(effects), 0.3, how, id="r")
        with trio.fail_after(5):
            while not effects.exists():
                await trio.sleep(0.02)
        started = time.monotonic()
        a.drain()
        with trio.fail_after(5):
            await a.drained()
        assert time.monotonic() - started < 1.5  # (the 2 s backoff was not waited out)
        with trio.fail_after(10):
            assert await b.workflow("r").result() == "b"
        assert effects.read_text() == "start\n" * 2
        [record] = [r for r in b.workflow("r").history() if r.kind == "activity"]
        assert record.attempts == 2


@garrison.activity()
async def long_on_a(path: str) -> str:
    """Notes each start in the file ``path``; works 30 s on node a, at once elsewhere."""
    import trio

    with open(path, "a") as f:
        f.write("start\n")
    node = garrison.current_node().name
    if node == "a":
        await trio.sleep(30)
    return node


async def starts_long_on_a(path: str) -> str:
    from garrison import workflow

    h = workflow.start(long_on_a, path)
    await workflow.first(h, workflow.timer(60))
    return str(await h)


async def test_a_node_that_stops_while_its_drain_waits_for_a_started_activity_stops(
        postgres_url: str, tmp_path: Path) -> None:
    """A drain waits for an activity the workflow started to record its outcome; the
    node's stop meanwhile does not: it cancels the activity (unrecorded, as a stop does
    an awaited one), and the other node runs it again."""
    import trio

    effects = tmp_path / "effects"
    async with garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        with trio.fail_after(5):
            async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
                await a.start_workflow(starts_long_on_a, str(effects), id="l")
                while not effects.exists():
                    await trio.sleep(0.02)
                a.drain()
                await trio.sleep(0.2)
                assert "l" in a.hosts["workflows"].active  # (its drain waits)
        with trio.fail_after(10):
            assert await b.workflow("l").result() == "b"
        assert effects.read_text() == "start\n" * 2


async def test_a_drained_node_says_whether_another_node_takes_its_workflows(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """nu473: a drained ``garrison run`` logged "its workflows are left to the other
    nodes (with none live, they wait in the store for the next node)" whether or not
    another node was live. It names the live nodes it leaves them to, read as it
    released them, or says that none is live and they wait."""
    import logging

    import trio

    from garrison._cli import exit_when_drained

    caplog.set_level(logging.INFO, logger="garrison.cli")

    async def drain(node: garrison.Node) -> str:
        with trio.fail_after(20), trio.CancelScope() as running:
            node.drain()
            await exit_when_drained(node, running)
        return next(r.getMessage() for r in caplog.records if "drained" in r.getMessage())

    async with garrison.open_node(store=postgres_url, name="a", lease=LEASE) as a:
        assert await drain(a) == (
            "node a drained: no other node of its cluster is live to take them, so its "
            "workflows wait in the store for the next node that joins; shutting down")
    caplog.clear()
    # (b first: a sees it live as it joins)
    async with garrison.open_node(store=postgres_url, name="b", lease=LEASE), \
            garrison.open_node(store=postgres_url, name="c", lease=LEASE), \
            garrison.open_node(store=postgres_url, name="a", lease=LEASE) as a:
        assert await drain(a) == ("node a drained: its workflows are left to the other "
                                  "live nodes (b, c); shutting down")


async def test_a_drained_node_does_not_name_a_draining_node_as_taking_its_workflows(
        postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """nu476: a drained node's last line named every node of the cluster whose row was
    live ("left to the other live nodes (a)"), a node draining itself too, which claims
    nothing: two nodes drained together each said the other took its workflows, and
    none did. Only a node that claims them (live, not draining) is named."""
    import logging

    import trio

    from garrison._cli import exit_when_drained

    caplog.set_level(logging.INFO, logger="garrison.cli")
    effects = tmp_path / "effects"
    async with garrison.open_node(store=postgres_url, name="a", lease=LEASE) as a:
        await a.start_workflow(starts_long_on_a, str(effects), id="l")
        with trio.fail_after(10):
            while not effects.exists():
                await trio.sleep(0.02)
        a.drain()  # (its drain waits for the activity: a stays draining, and live)
        async with garrison.open_node(store=postgres_url, name="c", lease=LEASE) as c:
            with trio.fail_after(20), trio.CancelScope() as running:
                c.drain()
                await exit_when_drained(c, running)
        assert "l" in a.hosts["workflows"].active  # (still draining)
    said = [r.getMessage() for r in caplog.records if "drained" in r.getMessage()]
    assert said == ["node c drained: no other node of its cluster is live to take them, "
                    "so its workflows wait in the store for the next node that joins; "
                    "shutting down"], said
