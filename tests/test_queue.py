"""A workflow host as a queue, on virtual time: max_concurrent, rate, priorities, dedup
keys, restarts with a full queue, and what can be done to a workflow while it waits."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import schedule_app as app
import trio
from trio.testing import MockClock

import garrison
from garrison.config import load_config_text
from garrison.persistence import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    app.STARTS.clear()
    yield
    app.STARTS.clear()


def started() -> list[str]:
    return [wid for wid, _ in app.STARTS]


def start_times() -> dict[str, float]:
    t0 = app.STARTS[0][1]
    return {wid: round(t - t0, 3) for wid, t in app.STARTS}


async def test_max_concurrent_runs_at_most_n_and_drains_in_priority_then_start_order(
        autojump_clock: Any) -> None:
    async with garrison.open_node(max_concurrent=2) as node:
        for name in ("a", "b", "c", "d"):
            await node.start_workflow(app.job, 10.0, id=name)
        await node.start_workflow(app.job, 10.0, id="urgent", priority=5)
        await node.start_workflow(app.job, 10.0, id="low", priority=-1)
        await trio.sleep(0.001)
        assert [node.workflow(w).status() for w in ("a", "b", "c", "urgent", "low")] == [
            "sleeping", "sleeping", "pending", "pending", "pending"]
        assert node.stats()["workflow_queues"]["workflows"] == {
            "pending": 4, "running": 2, "max_concurrent": 2, "cluster_max_concurrent": None,
            "rate": None}
        assert node.stats()["processes"] == 2  # the two running ones, not the waiting
        assert node.stats()["cluster"] == {}  # (a SQLite store: no cluster)
        assert sorted(w.workflow_id for w in node.workflows(status="pending")) == [
            "c", "d", "low", "urgent"]
        for name in ("a", "b", "c", "d", "urgent", "low"):
            await node.workflow(name).result()
    assert start_times() == {"a": 0, "b": 0, "urgent": 10, "c": 10, "d": 20, "low": 20}


async def test_one_slot_runs_them_one_by_one_in_queue_order(autojump_clock: Any) -> None:
    async with garrison.open_node(max_concurrent=1) as node:
        for name, priority in (("a", 0), ("b", 0), ("c", 0), ("urgent", 5), ("low", -1),
                               ("d", 0), ("urgent2", 5)):
            await node.start_workflow(app.job, 1.0, id=name, priority=priority)
        await node.workflow("low").result()
    assert started() == ["a", "urgent", "urgent2", "b", "c", "d", "low"]
    assert list(start_times().values()) == [0, 1, 2, 3, 4, 5, 6]


async def test_rate_limits_starts_per_period(autojump_clock: Any) -> None:
    async with garrison.open_node(rate="2/10s") as node:
        for i in range(6):
            await node.start_workflow(app.job, id=f"w{i}")
        for i in range(6):
            await node.workflow(f"w{i}").result()
    # at most 2 in any 10 s: the next two once the first two leave the period
    assert start_times() == {"w0": 0, "w1": 0, "w2": 10, "w3": 10, "w4": 20, "w5": 20}


async def test_dedup_returns_the_queued_or_running_workflow(autojump_clock: Any) -> None:
    async with garrison.open_node(max_concurrent=1) as node:
        first = await node.start_workflow(app.job, 10.0, id="first", dedup="report-42")
        again = await node.start_workflow(app.job, 10.0, id="second", dedup="report-42")
        assert again == first  # running
        await node.start_workflow(app.job, 10.0, id="blocker")
        queued = await node.start_workflow(app.job, 1.0, dedup="nightly")
        assert node.workflow(queued.id).status() == "pending"
        assert await node.start_workflow(app.job, dedup="nightly") == queued  # queued
        assert await node.workflow("first").result() == "first"
        assert await node.workflow(queued.id).result() == queued.id
        # both ended: their keys are free again
        later = await node.start_workflow(app.job, id="later", dedup="report-42")
        assert later.id == "later"
        for blank in ("", "  "):  # (a value of the right type: a ValueError, not TypeError)
            with pytest.raises(ValueError, match=r"dedup must be a non-empty string or None, "
                                                 r"got '\s*' \(empty or blank\)"):
                await node.start_workflow(app.job, dedup=blank)
        with pytest.raises(TypeError, match="dedup must be a non-empty string"):
            await node.start_workflow(app.job, dedup=5)
        with pytest.raises(TypeError, match="priority must be an int"):
            await node.start_workflow(app.job, priority="high")
        assert [w.workflow_id for w in node.workflows()].count("second") == 0


async def test_an_existing_id_wins_over_a_dedup_key_another_workflow_holds(
        store_spec: str, autojump_clock: Any) -> None:
    """API.md: a start of an id that exists returns that workflow's pid. A start naming
    an existing ``X`` with a dedup key ``Y`` holds returned ``Y`` when the node knew of
    the key (the store's own rule, which a node that did not know went by, returned
    ``X``): the id wins now, running or finished, in memory or only in the store, and
    nothing is started; a new id with that key still gets ``Y``."""
    x, y = garrison.Pid("workflows", "X"), garrison.Pid("workflows", "Y")
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(app.waits_for_go, id="X")
        await node.start_workflow(app.waits_for_go, id="Y", dedup="K")
        assert await node.start_workflow(app.waits_for_go, id="X", dedup="K") == x
        await node.send(x, "go", "x")
        assert await node.workflow("X").result() == "x"
        assert await node.start_workflow(app.waits_for_go, id="X", dedup="K") == x
        assert await node.start_workflow(app.waits_for_go, id="Z", dedup="K") == y
    async with garrison.open_node(store=store_spec) as node:  # X: in the store only
        assert await node.start_workflow(app.waits_for_go, id="X", dedup="K") == x
        assert await node.start_workflow(app.waits_for_go, dedup="K") == y
        assert node.workflow("X").status() == "completed"
        await node.send(y, "go", "y")
        assert await node.workflow("Y").result() == "y"
        assert sorted(w.workflow_id for w in node.workflows()) == ["X", "Y"]


@pytest.mark.postgres
async def test_an_existing_id_wins_over_a_dedup_key_on_every_node_of_a_cluster(
        postgres_url: str) -> None:
    """Two nodes: ``X`` runs on a, ``Y`` (holding the key ``K``) on b. A start of ``X``
    with ``K`` returned ``X`` on a and ``Y`` on b (which knew ``K``'s holder): ``X`` on
    both now."""
    x, y = garrison.Pid("workflows", "X"), garrison.Pid("workflows", "Y")
    async with garrison.open_node(store=postgres_url, name="a", lease="3s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="3s") as b:
        await a.start_workflow(app.waits_for_go, id="X")
        await b.start_workflow(app.waits_for_go, id="Y", dedup="K")
        assert await a.start_workflow(app.waits_for_go, id="X", dedup="K") == x
        assert await b.start_workflow(app.waits_for_go, id="X", dedup="K") == x
        assert await a.start_workflow(app.waits_for_go, id="Z", dedup="K") == y
        assert await b.start_workflow(app.waits_for_go, id="Z", dedup="K") == y
        await a.send(x, "go", "x")
        await b.send(y, "go", "y")
        with trio.fail_after(20):
            assert await a.workflow("X").result() == "x"
            assert await b.workflow("X").result() == "x"
            assert await b.workflow("Y").result() == "y"
        assert sorted(w.workflow_id for w in a.workflows()) == ["X", "Y"]


async def test_a_finish_drops_a_queue_row_only_where_there_can_be_one(
        autojump_clock: Any) -> None:
    """A workflow this node created and ran at once has no queue row: its end does not
    ask the store to drop one. One started with a dedup key (or queued) drops its row
    with its end."""
    from garrison.persistence import Op

    async with garrison.open_node() as node:
        store = node.hosts["workflows"].store
        finishes: dict[str, list[str]] = {}
        commit = store.commit

        async def spy(tx: Any) -> list[Any]:
            for op, params in tx.ops:
                if op is Op.UPDATE_WORKFLOW and dict(params[2]).get("status") == "completed":
                    finishes[params[0]] = [o.name for o, _ in tx.ops]
            return await commit(tx)

        store.commit = spy
        await node.start_workflow(app.job, id="plain")
        await node.start_workflow(app.job, id="keyed", dedup="k")
        assert await node.workflow("plain").result() == "plain"
        assert await node.workflow("keyed").result() == "keyed"
        assert "DEQUEUE" not in finishes["plain"]
        assert "DEQUEUE" in finishes["keyed"]
        # the key is free again: the row went with the end
        assert (await node.start_workflow(app.job, id="again", dedup="k")).id == "again"


async def test_priority_is_a_64_bit_integer(store_spec: str, autojump_clock: Any) -> None:
    """The range the stores keep: the ends are accepted and ordered; one past either
    is a ValueError naming the range, before anything is written."""
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        await node.start_workflow(app.job, 1.0, id="first")
        for priority in (2**63, -(2**63) - 1):
            with pytest.raises(ValueError, match=r"priority must be a 64-bit integer, from "
                               rf"-2\*\*63 to 2\*\*63 - 1 \(a store keeps it as one\), "
                               rf"got {priority}"):
                await node.start_workflow(app.job, id="over", priority=priority)
        assert [w.workflow_id for w in node.workflows()] == ["first"]
        await node.start_workflow(app.job, id="low", priority=-(2**63))
        await node.start_workflow(app.job, id="high", priority=2**63 - 1)
        await node.workflow("low").result()
    assert started() == ["first", "high", "low"]


async def test_a_full_queue_survives_a_restart(store_spec: str, autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db, max_concurrent=2) as node:
        await node.start_workflow(app.job, 100.0, id="long", dedup="only-one")
        await node.start_workflow(app.job, 10.0, id="short")
        await node.start_workflow(app.job, 1.0, id="q1")
        await node.start_workflow(app.job, 1.0, id="q2", priority=1)
        await node.start_workflow(app.job, 1.0, id="q3")
        await trio.sleep(1)
    await trio.sleep(1000)  # no node
    # one slot after the restart: workflows admitted together run their first lines in
    # trio's (random) order, so order is only observable one admission at a time (on
    # PostgreSQL the queued ones are claimed while the resumed ones finish)
    async with garrison.open_node(store=db, max_concurrent=1) as node:
        # the running ones resume (their sleeps are over), then the queue drains in order
        assert node.workflow("q1").status() == "pending"
        assert await node.start_workflow(app.job, id="dup", dedup="only-one") == \
            garrison.Pid("workflows", "long")
        for name in ("long", "short", "q1", "q2", "q3"):
            await node.workflow(name).result()
    assert started() == ["long", "short", "q2", "q1", "q3"]



async def test_a_restart_keeps_the_place_of_a_pending_workflow_without_a_queue_row(
        tmp_path: Path, autojump_clock: Any) -> None:
    """README (Queues): after a restart the queue drains in its order. A workflow a tool
    started (pending, no queue row) waited after the rows written before it and before
    those written after; a restart keeps it there (it took the last row's place)."""
    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db, max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="busy")
        await node.start_workflow(app.job, id="q0")
        await trio.sleep(1)
        host = node.hosts["workflows"]
        host.store.write(Transaction().create_workflow(  # as `garrison workflows start`
            "t1", "schedule_app:job", [], status="pending", time=host.clock.now()))
        await trio.sleep(1)
        await node.start_workflow(app.job, id="q2")
        await node.start_workflow(app.job, id="q3")
    async with garrison.open_node(store=db, max_concurrent=1) as node:
        await node.send("workflows/busy", "go", "x")
        for name in ("q0", "t1", "q2", "q3"):
            await node.workflow(name).result()
    assert started() == ["q0", "t1", "q2", "q3"]


async def test_a_queue_drains_after_a_restart_with_lower_limits(store_spec: str,
                                                                autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        for name in ("a", "b", "c"):
            await node.start_workflow(app.job, 50.0, id=name)
        await trio.sleep(1)
    async with garrison.open_node(store=db, max_concurrent=1) as node:
        await node.start_workflow(app.job, 1.0, id="new")
        await trio.sleep(1)
        # three resumed workflows hold more than the one slot: the new one waits
        assert node.workflow("new").status() == "pending"
        await node.workflow("new").result()
    assert started()[-1] == "new"
    # when all three ended; on PostgreSQL a cluster's claims run in real time beside the
    # virtual clock, which jumps ahead while the node waits for them (by more than a
    # minute on a loaded machine): there only "not before they ended" holds
    waited = app.STARTS[-1][1] - app.STARTS[0][1]
    if "://" not in db:
        assert waited == pytest.approx(50.0, abs=0)
    else:
        assert waited >= 50.0 - 1


async def _until_status(node: garrison.Node, wids: tuple[str, ...], status: str) -> None:
    deadline = time.monotonic() + 60  # (real time: a cluster's claims run in it)
    while any(node.workflow(w).status() != status for w in wids):
        assert time.monotonic() < deadline, [node.workflow(w).status() for w in wids]
        await trio.sleep(0.05)


async def test_blocked_workflows_a_restart_resumes_wait_for_their_slots(
        store_spec: str, autojump_clock: Any) -> None:
    """README (Queues): a slot frees when a workflow is blocked, and a retry of it waits
    in the queue. A node's start resumed every blocked workflow at once, whatever the
    limits (three running with ``max_concurrent=1`` after a deploy that fixed their
    code): they come back through the queue now, in their places, before a start made
    after them. (On PostgreSQL a node claims no more than it has room for: the others
    wait, blocked, for its next claims.)"""
    blocked = ("d1", "d2", "d3")
    async with garrison.open_node(store=store_spec, max_concurrent=3) as node:
        for wid in blocked:
            await node.start_workflow(app.diverging, id=wid)
        await _until_status(node, blocked, "waiting")
    app.DIVERGE["on"] = True  # a deploy: their code takes another path now
    try:
        async with garrison.open_node(store=store_spec, max_concurrent=3) as node:
            await _until_status(node, blocked, "blocked")
    finally:
        app.DIVERGE["on"] = False  # fixed again
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        await node.start_workflow(app.job, id="new")
        if "://" not in store_spec:
            statuses = [node.workflow(w).status() for w in (*blocked, "new")]
            assert statuses == ["waiting", "pending", "pending", "pending"], statuses
        done: list[str] = []
        deadline = time.monotonic() + 60
        while len(done) < len(blocked):
            assert time.monotonic() < deadline, done
            holding = [w for w in blocked if node.workflow(w).status() == "waiting"]
            assert len(holding) <= 1, holding
            assert node.stats()["workflow_queues"]["workflows"]["running"] <= 1
            if holding:
                # (its divergence is over: the row holds no error while it runs again)
                assert node.workflow(holding[0]).host.store.get_workflow(
                    holding[0]).error is None
                await node.send(f"workflows/{holding[0]}", "go", "x")
                assert await node.workflow(holding[0]).result() == "x"
                done.append(holding[0])
            await trio.sleep(0.05)
        assert await node.workflow("new").result() == "new"
    if "://" not in store_spec:
        assert done == ["d1", "d2", "d3"]
    assert started() == ["new"]


async def test_a_waiting_workflow_takes_messages_cancel_and_kill(autojump_clock: Any) -> None:
    async with garrison.open_node(max_concurrent=1) as node:
        await node.start_workflow(app.job, 10.0, id="busy")
        await node.start_workflow(app.waits_for_go, id="listener")
        await node.start_workflow(app.job, id="doomed")
        await node.start_workflow(app.job, id="killed")
        await node.workflow("listener").signal("go", "now")  # kept in its inbox
        await node.workflow("doomed").cancel()
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("doomed").result()  # at once, never ran
        assert node.workflow("doomed").status() == "cancelled"
        pid = node.resolve("workflows/killed")
        node.hosts["workflows"].kill(pid, garrison.ErrorInfo("Killed", "by test"))
        with pytest.raises(garrison.WorkflowFailed, match="by test"):
            await node.workflow("killed").result()
        assert trio.current_time() < 1  # ended without waiting for a slot
        assert await node.workflow("listener").result() == "now"
        assert trio.current_time() == pytest.approx(10, abs=0.1)
    assert started() == ["busy"]


async def test_child_workflows_start_at_once_whatever_the_limits(autojump_clock: Any) -> None:
    async with garrison.open_node(max_concurrent=1) as node:
        await node.start_workflow(app.parent_of_two, id="parent")
        assert await node.workflow("parent").result() == ["parent-c0", "parent-c1"]



async def test_a_workflow_queues_work_through_an_activity_and_monitors_it(
        tmp_path: Path, autojump_clock: Any) -> None:
    """What README gives a DBOS user for enqueue from a workflow (child workflows skip
    the limits): an activity starts each job by id, which queues it as any start, and
    the workflow monitors the pids it returned; a restart in the middle changes
    nothing (the jobs were started by id, the monitors are journaled)."""
    db = str(tmp_path / "q.db")
    async with garrison.open_node(store=db, max_concurrent=3) as node:
        await node.start_workflow(app.enqueues, 4, id="p")
        await trio.sleep(5)
        assert started() == ["p-job0", "p-job1"]  # the parent holds a slot too
    async with garrison.open_node(store=db, max_concurrent=3) as node:
        assert sorted(await node.workflow("p").result()) == [f"p-job{i}" for i in range(4)]
    assert start_times() == {"p-job0": 0, "p-job1": 0, "p-job2": 10, "p-job3": 10}


async def test_a_workflow_spawning_an_id_pending_behind_it_starts_it_at_once(
        store_spec: str, autojump_clock: Any) -> None:
    """README (Queues): a child workflow starts at once whatever the limits; a spawn by
    id of a workflow waiting ``pending`` in the queue (on PostgreSQL: in the store) starts
    that one at once too: its parent, holding the one slot, would wait for ever."""
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        await node.start_workflow(app.spawns_later, "shared", id="parent")
        await node.start_workflow(app.job, id="shared")  # queued behind the parent
        assert node.workflow("shared").status() == "pending"
        # (real time: on PostgreSQL the claim is the cluster thread's, beside the
        # virtual clock, which a deadline in it would jump to)
        until = time.monotonic() + 20
        while node.workflow("parent").status() != "completed":
            assert time.monotonic() < until, "the parent waits for ever for its child"
            await trio.to_thread.run_sync(time.sleep, 0.005)
        assert await node.workflow("parent").result() == "shared: shared"
        assert node.workflow("shared").status() == "completed"
    assert started() == ["shared"]



async def test_a_workflow_spawned_by_id_while_the_store_is_asked_to_admit_it_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    """helper-267's review of the fix above: the spawn came while the store was being
    asked to admit the pending workflow again (a host with a ``rate``): it was in no
    queue then, so nothing happened, and when the store refused it (another node of a
    cluster took the rate, here a stand-in that refuses for an hour) it went back to
    wait its turn, its spawner waiting for it. It starts as a child once it is back."""
    async with garrison.open_node(store=str(tmp_path / "s.db"), max_concurrent=2,
                                  rate="1/10s") as node:
        store = node.hosts["workflows"].store
        commit = store.commit

        async def busy_cluster(tx: Any) -> Any:
            admits = [op for op in tx.ops if op[0] is garrison.persistence.Op.ADMIT]
            if admits and len(tx.ops) == 1 and trio.current_time() < 3600:
                await trio.sleep(2)  # (the spawn comes meanwhile, at 11 s)
                return [[]]  # none admitted
            return await commit(tx)

        # (the parent takes the rate; the other is refused by it at its start, and
        # offered again when the rate allows, at 10 s)
        await node.start_workflow(app.spawns_later, "shared", 11.0, id="parent")
        monkeypatch.setattr(store, "commit", busy_cluster)
        await node.start_workflow(app.job, id="shared")
        assert await node.workflow("parent").result() == "shared: shared"
        assert trio.current_time() < 60, "the spawner waited for the store's refusals"


@pytest.mark.parametrize("restart", [False, True], ids=["live", "restart"])
async def test_a_retried_workflow_waits_by_the_priority_it_was_started_with(
        store_spec: str, restart: bool, autojump_clock: Any) -> None:
    """README (Queues, retry): a retried workflow keeps its priority (kept in its memo
    once its end dropped its queue row), also across a restart."""
    app.FAIL["on"] = True
    try:
        async with contextlib.AsyncExitStack() as stack:
            node = await stack.enter_async_context(
                garrison.open_node(store=store_spec, max_concurrent=1))
            await node.start_workflow(app.fails_while_asked, id="vip", priority=100)
            with pytest.raises(garrison.WorkflowFailed):
                await node.workflow("vip").result()
            assert [w.memo for w in node.workflows()] == [{"garrison.priority": 100}]
            app.FAIL["on"] = False
            await node.start_workflow(app.waits_for_go, id="busy")
            for name in ("low0", "low1"):
                await node.start_workflow(app.job, id=name, priority=50)
            await node.workflow("vip").retry()  # while the one slot is busy
            if restart:
                await stack.aclose()
                node = await stack.enter_async_context(
                    garrison.open_node(store=store_spec, max_concurrent=1))
            await node.send("workflows/busy", "go", "x")
            for name in ("vip", "low0", "low1"):
                await node.workflow(name).result()
    finally:
        app.FAIL["on"] = False
    assert started() == ["vip", "vip", "low0", "low1"]


async def test_workflow_host_entry_limits(tmp_path: Path, autojump_clock: Any) -> None:
    config = load_config_text(f"""
version: "1.0"
namespace: app
entries:
  - {{name: jobs, kind: workflow.host, store: {tmp_path / 'wf.db'}, max_concurrent: 1,
     cluster_max_concurrent: 3, rate: " 10 / 1m "}}
""")
    async with garrison.open_node(config=config) as node:
        # (the rate as stats() shows it: its spaces were shown too)
        assert node.stats()["workflow_queues"]["app:jobs"] == {
            "pending": 0, "running": 0, "max_concurrent": 1, "cluster_max_concurrent": 3,
            "rate": "10/1m"}
        await node.start_workflow(app.job, 5.0, id="one")
        await node.start_workflow(app.job, id="two")
        assert node.workflow("two").status() == "pending"
        await node.workflow("two").result()
    assert start_times() == {"one": 0, "two": 5}


async def test_open_node_limits_replace_only_the_entry_limits_they_give(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A config's one workflow host is the node's ``workflows`` host, and
    ``open_node``'s limits replace its entry's. ``open_node(config=..., rate="2/1m")``
    replaced all three: the entry's ``max_concurrent: 1`` was dropped in silence, and
    two workflows ran at once. A limit open_node gives replaces that limit only (as
    ``retention=`` replaces the entry's retention and leaves its limits)."""
    config = load_config_text(f"""
version: "1.0"
namespace: app
entries:
  - {{name: jobs, kind: workflow.host, store: {tmp_path / 'wf.db'}, max_concurrent: 1,
     cluster_max_concurrent: 5}}
""")
    async with garrison.open_node(config=config, rate="2/1m") as node:
        assert node.stats()["workflow_queues"]["app:jobs"] == {
            "pending": 0, "running": 0, "max_concurrent": 1, "cluster_max_concurrent": 5,
            "rate": "2/1m"}
        await node.start_workflow(app.job, 5.0, id="one")
        await node.start_workflow(app.job, id="two")
        assert node.workflow("two").status() == "pending"
        await node.workflow("two").result()
    assert start_times() == {"one": 0, "two": 5}
    async with garrison.open_node(config=config, max_concurrent=3) as node:
        assert node.stats()["workflow_queues"]["app:jobs"] == {
            "pending": 0, "running": 0, "max_concurrent": 3, "cluster_max_concurrent": 5,
            "rate": None}


async def test_two_workflow_hosts_on_one_store_are_refused_naming_both(
        tmp_path: Path) -> None:
    """Each workflow host needs a store of its own (its queue, its schedules): a second
    host on the same file was refused as if another node held it."""
    db = tmp_path / "wf.db"
    config = load_config_text(f"""
version: "1.0"
namespace: app
entries:
  - {{name: mailer, kind: workflow.host, store: {db}}}
  - {{name: billing, kind: workflow.host, store: {tmp_path / 'other.db'}}}
""")
    with pytest.raises(ValueError, match=(
            r"workflow hosts 'app:mailer' and 'workflows' both use the store .*wf\.db: "
            r"each workflow host needs a store of its own")):
        async with garrison.open_node(config=config, store=str(tmp_path / "." / "wf.db")):
            pass
    assert not (tmp_path / "wf.db.lock").exists()


def _two_hosts(tmp_path: Path) -> Any:
    """A config of two workflow hosts, app:orders and app:billing, each on its file."""
    return load_config_text(f"""
version: "1.0"
namespace: app
entries:
  - {{name: orders, kind: workflow.host, store: {tmp_path / 'o.db'}}}
  - {{name: billing, kind: workflow.host, store: {tmp_path / 'b.db'}}}
""")


async def test_one_store_object_given_to_two_hosts_is_refused(tmp_path: Path) -> None:
    """helper-379: one store object mapped to two workflow hosts was taken, and the hosts
    read each other's workflows as their own (a start on one returned the other's
    workflow, a signal woke nothing). It is refused as the same path is, naming both
    hosts; so is one in memory, and an object beside the path it opened."""
    config = _two_hosts(tmp_path)
    both = r"workflow hosts 'app:orders' and 'app:billing' both use the store "
    with SQLiteStore(str(tmp_path / "obj.db")) as store:
        with pytest.raises(ValueError, match=both + r".*obj\.db: each workflow host"):
            async with garrison.open_node(config=config, store={"app:orders": store,
                                                                "app:billing": store}):
                pass
        with pytest.raises(ValueError, match=both + r".*obj\.db: each workflow host"):
            async with garrison.open_node(config=config, store={
                    "app:orders": store, "app:billing": str(tmp_path / "obj.db")}):
                pass
    memory = SQLiteStore()
    with pytest.raises(ValueError, match=both + r"SQLiteStore \(in memory\): each"):
        async with garrison.open_node(config=config, store={"app:orders": memory,
                                                            "app:billing": memory}):
            pass
    with memory:  # (another in memory beside it: two stores)
        async with garrison.open_node(config=config, store={"app:orders": memory,
                                                            "app:billing": None}):
            pass


async def test_a_handle_on_another_hosts_workflow_names_the_host_that_holds_it(
        tmp_path: Path) -> None:
    """helper-379: with several workflow hosts, ``node.workflow(id)`` (the default host)
    of a workflow another host holds said only ``no workflow with id 'p' in the store``:
    now the host it looked in, and the one holding it."""
    config = _two_hosts(tmp_path)
    async with garrison.open_node(config=config) as node:
        await node.start_workflow(app.job, id="p", host="app:billing")
        for host in (None, "app:orders"):
            with pytest.raises(garrison.NoSuchWorkflow, match=(
                    rf"^no workflow with id 'p' in the store of host "
                    rf"'{host or 'workflows'}' \(host 'app:billing' holds one: pass "
                    rf"host='app:billing'\)$")):
                node.workflow("p", host=host).status()
        with pytest.raises(garrison.NoSuchWorkflow,
                           match=r"^no workflow with id 'zz' in the store of host 'workflows'$"):
            await node.workflow("zz").result()


async def test_the_same_postgresql_servers_in_another_order_are_one_store() -> None:
    """A multi-host URL is one failover set: ``db1,db2`` and ``db2,db1`` are the same
    database, as the config's own check says; ``store=`` beside such an entry was taken
    as a second store (refused before anything connects)."""
    config = load_config_text("""
version: "1.0"
namespace: app
entries:
  - {name: mailer, kind: workflow.host, store: "postgresql://db1,db2:5433/app"}
  - {name: billing, kind: workflow.host, store: "postgresql://db3/app"}
""")
    with pytest.raises(ValueError, match=(
            r"workflow hosts 'app:mailer' and 'workflows' both use the store "
            r"postgresql://db2:5433,db1/app\?schema=garrison: each workflow host")):
        async with garrison.open_node(
                config=config, store="postgresql://db2:5433,db1/app?schema=garrison"):
            pass


async def test_a_store_given_beside_config_hosts_that_have_none_is_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A config with two workflow hosts that name no store, and ``store=`` one path:
    the path went to the node's own ``workflows`` host and the two stayed in memory
    (their workflows lost at the stop) without a word. Each is named in a warning."""
    config = load_config_text("""
version: "1.0"
namespace: app
entries:
  - {name: mailer, kind: workflow.host}
  - {name: orders, kind: workflow.host, store: orders.db}
  - {name: billing, kind: workflow.host}
""", str(tmp_path / "app.yaml"))
    caplog.set_level(logging.WARNING, "garrison.workflow")
    async with garrison.open_node(config=config, store=str(tmp_path / "wf.db")) as node:
        assert node.hosts["app:mailer"].store.path is None
    said = [r.getMessage() for r in caplog.records if "keeps its workflows in memory" in
            r.getMessage()]
    assert [line.split(" keeps")[0] for line in said] == [
        "workflow host app:mailer", "workflow host app:billing"], said
    assert "give its entry a store:, or pass store= a mapping by host name" in said[0]


async def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_concurrent must be a whole number from 1 "):
        async with garrison.open_node(max_concurrent=0):
            pass
    with pytest.raises(ValueError, match="invalid rate '100 per minute'"):
        async with garrison.open_node(rate="100 per minute"):
            pass
    with pytest.raises(garrison.ConfigError, match="field 'rate': expected a rate"):
        load_config_text("version: '1.0'\nnamespace: app\nentries:\n"
                         "  - {name: w, kind: workflow.host, rate: fast, max_concurrent: -1}")


@pytest.mark.parametrize("limits, said", [
    ({"max_concurrent": 2**63}, "max_concurrent must be a whole number from 1 to 2**63 - 1"),
    ({"cluster_max_concurrent": 10**30},
     "cluster_max_concurrent must be a whole number from 1 to 2**63 - 1"),
    ({"rate": f"{2**63}/1s"}, f"invalid rate '{2**63}/1s': expected 'COUNT/DURATION' such "
     "as '100/1m' or '5/1s', with COUNT a whole number from 1 to 2**63 - 1"),
])
async def test_a_limit_a_store_cannot_keep_is_refused_up_front(
        store_spec: str, limits: dict[str, Any], said: str) -> None:
    """A count of 2**63 or more was taken, and then every start failed on PostgreSQL
    with a bare NumericValueOutOfRange (the store keeps it as a 64-bit integer)."""
    with pytest.raises(ValueError) as info:
        async with garrison.open_node(store=store_spec, **limits):
            pass
    assert str(info.value).startswith(said), str(info.value)
    largest = {key: (f"{2**63 - 1}/1s" if key == "rate" else 2**63 - 1) for key in limits}
    async with garrison.open_node(store=store_spec, **largest) as node:
        await node.start_workflow(app.job, id="fits")
        assert await node.workflow("fits").result() == "fits"


def test_config_refuses_a_limit_a_store_cannot_keep() -> None:
    """``garrison check`` took ``max_concurrent: 99999999999999999999999``."""
    with pytest.raises(garrison.ConfigError) as info:
        load_config_text("version: '1.0'\nnamespace: app\nentries:\n"
                         "  - {name: w, kind: workflow.host, max_concurrent: "
                         "99999999999999999999999, cluster_max_concurrent: 9223372036854775808,"
                         " rate: 9223372036854775808/1s}")
    said = str(info.value)
    assert "field 'max_concurrent': expected an integer from 1 to 2**63 - 1, got " \
        "99999999999999999999999" in said, said
    assert "field 'cluster_max_concurrent': expected an integer from 1 to 2**63 - 1" in said
    assert "field 'rate': expected a rate 'COUNT/DURATION' such as '100/1m' (COUNT from 1 " \
        "to 2**63 - 1; DURATION at most 100 years)" in said
    load_config_text("version: '1.0'\nnamespace: app\nentries:\n"
                     "  - {name: w, kind: workflow.host, max_concurrent: 9223372036854775807}")


def test_cli_lists_pending_workflows(tmp_path: Path) -> None:
    db = str(tmp_path / "wf.db")

    async def seed() -> None:
        async with garrison.open_node(store=db, max_concurrent=1) as node:
            await node.start_workflow(app.job, 1000.0, id="running")
            await node.start_workflow(app.job, id="waiting", priority=2)

    trio.run(seed, clock=MockClock(autojump_threshold=0))
    out = subprocess.run([sys.executable, "-m", "garrison", "workflows", "--store", db, "list",
                          "--status", "pending", "--json"], cwd=ROOT, text=True,
                         capture_output=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert out.returncode == 0, out.stderr
    assert [w["workflow_id"] for w in json.loads(out.stdout)] == ["waiting"]


async def test_a_dedup_key_the_node_does_not_know_is_refused_by_the_store(
        autojump_clock: Any) -> None:
    """As when another node of a cluster started the holder: the store's unique key
    refuses the second start, which returns the holder's pid and writes nothing."""
    async with garrison.open_node() as node:
        first = await node.start_workflow(app.job, 10.0, id="first", dedup="k")
        node.hosts["workflows"].queue.dedup.clear()
        assert await node.start_workflow(app.job, id="second", dedup="k") == first
        assert node.hosts["workflows"].store.get_workflow("second") is None


def test_store_enqueue_and_dequeue() -> None:
    from garrison.persistence import DedupKeyTaken, SQLiteStore, Transaction

    with SQLiteStore() as store:
        def start(wid: str, run_id: str, **kw: Any) -> list[Any]:
            tx = Transaction().create_workflow(wid, "m:f", status="pending", run_id=run_id)
            return store.write(tx.enqueue(wid, run_id, **kw))

        assert start("a", "r1", priority=1, dedup="k") == [True, 1]
        assert start("b", "r2") == [True, 2]
        assert start("a", "r3", dedup="x") == [False, None]  # the id existed: no row
        with pytest.raises(DedupKeyTaken, match="'k' is held by workflow 'a'") as info:
            start("c", "r4", dedup="k")
        assert info.value.workflow_id == "a"
        assert store.get_workflow("c") is None  # nothing of that start was written
        assert store.write(Transaction().enqueue("a", "r1")) == [1]  # kept, same seq
        assert [(e.workflow_id, e.priority, e.seq, e.dedup) for e in store.queue_entries()] \
            == [("a", 1, 1, "k"), ("b", 0, 2, None)]
        assert store.queue_entry("b") == store.queue_entries()[1]
        assert store.queue_entry("c") is None
        store.write(Transaction().dequeue("a").dequeue("b"))
        created, seq = start("d", "r5", dedup="k")  # the key is free again
        assert created and seq > 2  # the start order only grows
        store.write(Transaction().delete_workflow("d"))
        assert store.queue_entries() == []


async def test_a_workflow_a_tool_created_waits_its_turn(tmp_path: Path) -> None:
    """Real time: a tool's pending workflow reaches the node by a wakeup and goes
    through the queue like any other start."""
    from garrison import _store_tools as tools
    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db, max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="busy")
        store = tools.open_store(db)
        try:
            store.write(Transaction().create_workflow("from-tool", "schedule_app:job", [],
                                                      status="pending"))
        finally:
            store.close()
        host = node.hosts["workflows"]
        with trio.fail_after(10):
            while "from-tool" not in host.active:
                await trio.sleep(0.005)
        assert node.workflow("from-tool").status() == "pending"
        await node.workflow("busy").signal("go", "done")
        with trio.fail_after(10):
            assert await node.workflow("from-tool").result() == "from-tool"
    assert started() == ["from-tool"]


async def test_a_tools_start_waits_in_start_order_with_a_queue_row_it_drops_at_its_end(
        tmp_path: Path) -> None:
    """Real time: ``garrison workflows start`` (``tools.start``) writes a queue row as a
    node's start that waits has one: the running node starts it in its start order
    among the node's own (``n1``, started after it, runs after it), counts its start
    once, and its end drops the row."""
    from garrison import _store_tools as tools

    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db, max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="busy")
        store = tools.open_store(db)
        try:
            tools.start(store, "schedule_app:job", [], "tool")
            assert [e.workflow_id for e in store.queue_entries()] == ["tool"]
        finally:
            store.close()
        host = node.hosts["workflows"]
        with trio.fail_after(10):
            while "tool" not in host.active:
                await trio.sleep(0.005)
        await node.start_workflow(app.job, id="n1")
        await node.workflow("busy").signal("go", "done")
        with trio.fail_after(10):
            assert await node.workflow("n1").result() == "n1"
        assert host.counts["started"] == 3  # busy, tool, n1
        assert host.store.queue_entries() == []
    assert started() == ["tool", "n1"]


async def test_a_tools_start_a_running_node_picks_up_late_keeps_its_start_order(
        autojump_clock: Any) -> None:
    """README (Queues): a node running starts a tool's start before those of its
    priority started after it. The node placed one it picked up (by its wakeup) after
    the newest start it had seen by then, not by its queue row: starts the node made
    between the tool's commit and that pickup ran first. It goes by its row now."""
    from garrison.hosts.workflow._queue import tool_start
    from garrison.hosts.workflow._recovery import refresh
    from garrison.persistence import Transaction

    async with garrison.open_node(max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="busy")
        host = node.hosts["workflows"]
        host.store.write(tool_start(Transaction(), "tool", "schedule_app:job", [],
                                    run_id="r1"))  # as `garrison workflows start`
        await node.start_workflow(app.job, id="n1")
        await node.start_workflow(app.job, id="n2")
        refresh(host, "tool")  # (its wakeup, read after the node's two starts)
        assert node.workflow("tool").status() == "pending"
        await node.send("workflows/busy", "go", "x")
        for wid in ("tool", "n1", "n2"):
            await node.workflow(wid).result()
    assert started() == ["tool", "n1", "n2"]


async def test_a_nodes_own_start_picked_up_by_a_wait_for_its_result_is_counted_once(
        autojump_clock: Any) -> None:
    """In a cluster a node's own start that waits unowned in the store (counted where it
    was made: it has a queue row) may be claimed by the node just as a wait for its
    result looks at it: that look counted every ``pending`` first attempt as a tool's
    start, so the start was counted twice. A tool's start (marked in its memo) is
    still counted there, once."""
    from garrison.hosts.workflow._queue import tool_start
    from garrison.hosts.workflow._recovery import refresh
    from garrison.persistence import Transaction

    async with garrison.open_node(max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="busy")
        host = node.hosts["workflows"]
        before = host.counts["started"]
        host.store.write(Transaction().create_workflow(
            "own", "schedule_app:job", [], status="pending", run_id="r1").enqueue("own", "r1"))
        refresh(host, "own")
        assert host.counts["started"] == before  # (counted by the node that made it)
        host.store.write(tool_start(Transaction(), "tool", "schedule_app:job", [],
                                    run_id="r2"))
        refresh(host, "tool")
        assert host.counts["started"] == before + 1
        assert "own" in host.active and "tool" in host.active  # (both wait in the queue)


@pytest.mark.parametrize("read", ["journal_entries", "queue_entry"])
async def test_a_tools_start_whose_refresh_the_store_failed_is_counted_once(
        read: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool's start whose refresh (its wakeup's) the store failed as its journal, or
    its queue row, was read is tried again by the node's wakeup watcher: it was counted
    as started before those reads, and again by the refresh tried again. Counted once,
    by the one that read it whole."""
    from garrison.hosts.workflow._queue import tool_start
    from garrison.hosts.workflow._recovery import refresh
    from garrison.persistence import Transaction

    async with garrison.open_node(max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="busy")
        host = node.hosts["workflows"]
        before = host.counts["started"]
        host.store.write(tool_start(Transaction(), "tool", "schedule_app:job", [],
                                    run_id="r1"))
        reader = getattr(host.store, read)

        def failing(wid: str) -> Any:
            monkeypatch.undo()
            raise garrison.StoreError(host.store.path, "disk I/O error")

        monkeypatch.setattr(host.store, read, failing)
        with pytest.raises(garrison.StoreError, match="disk I/O error"):
            refresh(host, "tool")
        assert getattr(host.store, read) == reader
        refresh(host, "tool")  # (as the wakeup watcher tries it again)
        assert host.counts["started"] == before + 1
        assert node.workflow("tool").status() == "pending"


# ------------------------------------------------------------------ limits in the store
def test_the_store_admits_as_far_as_the_hosts_limits_allow(store_spec: str) -> None:
    """``Transaction.admit``: the host's running and parked workflows count against
    ``max_running`` (other hosts' do not), the admitted times of the rate's period
    against ``rate``; admitted in the order given; one not pending with that run id is
    passed over."""
    from garrison.persistence import Transaction, open_store

    with open_store(store_spec) as store:
        tx = Transaction()
        for i, status in enumerate(("running", "waiting", "sleeping", "blocked", "completed")):
            tx.create_workflow(f"old{i}", "m:f", status=status, host="h", time=1.0)
        tx.create_workflow("other", "m:f", status="running", host="g", time=1.0)
        for i in range(5):
            tx.create_workflow(f"p{i}", "m:f", status="pending", run_id=f"r{i}", host="h",
                               time=1.0)
        store.write(tx)

        def admit(entries: list[tuple[str, str]], at: float, **limits: Any) -> list[str]:
            got: list[str] = store.write(Transaction().admit("h", entries, time=at, **limits))[0]
            return got

        # three hold a slot (running, waiting, sleeping): one more of four
        assert admit([("p1", "r1"), ("p0", "r0")], 100.0, max_running=4) == ["p1"]
        assert store.get_workflow("p1").status == "running"  # type: ignore[union-attr]
        assert admit([("p0", "r0")], 100.0, max_running=4) == []
        # a wrong run id, or one that is not pending, is passed over
        assert admit([("p0", "wrong"), ("p1", "r1"), ("p2", "r2")], 110.0) == ["p2"]
        # the rate counts admissions of the last period: p1 (100), p2 (110)
        assert admit([("p0", "r0"), ("p3", "r3")], 130.0, rate=(3, 60.0)) == ["p0"]
        assert admit([("p3", "r3")], 159.0, rate=(3, 60.0)) == []
        assert admit([("p3", "r3"), ("p4", "r4")], 160.5, rate=(3, 60.0)) == ["p3"]
        assert store.admitted_since("h", 100.0) == [110.0, 130.0, 160.5]
        assert store.admitted_since("g", 0.0) == []


def test_a_retry_admitted_inside_the_rates_period_keeps_its_first_admission(
        store_spec: str) -> None:
    """``Transaction.admit`` with a ``rate``: the store keeps one admission time per
    workflow, and a retry's admission overwrote it, so the period forgot the first run
    of a workflow retried inside it. A retry admitted while its earlier admission is
    inside the period keeps that time now (it counts once, as that admission); one
    admitted after it left the period is a new admission, at its time. Without a rate
    an admission writes its time, as before."""
    from garrison.persistence import Transaction, open_store

    with open_store(store_spec) as store:
        tx = Transaction()
        for i in range(4):
            tx.create_workflow(f"p{i}", "m:f", status="pending", run_id=f"r{i}", host="h",
                               time=1.0)
        store.write(tx)

        def admit(wid: str, at: float, **limits: Any) -> list[str]:
            got: list[str] = store.write(Transaction().admit(
                "h", [(wid, f"r{wid[1:]}")], time=at, **limits))[0]
            return got

        def retried(wid: str, attempt: int) -> None:  # (failed, then retried: pending)
            store.write(Transaction().update_workflow(wid, status="failed"))
            store.write(Transaction().update_workflow(wid, status="pending",
                                                      attempt=attempt))

        rate = (2, 60.0)
        assert admit("p0", 100.0, rate=rate) == ["p0"]
        retried("p0", 2)
        # its first admission counts (and is the one counted): room for one more
        assert admit("p0", 130.0, rate=rate) == ["p0"]
        assert store.get_workflow("p0").status == "running"  # type: ignore[union-attr]
        assert store.admitted_since("h", 0.0) == [100.0]
        assert admit("p1", 130.0, rate=rate) == ["p1"]
        assert admit("p2", 159.0, rate=rate) == []  # two in the period: p0 (100), p1
        assert admit("p2", 160.5, rate=rate) == ["p2"]  # p0's left it
        assert store.admitted_since("h", 0.0) == [100.0, 130.0, 160.5]
        retried("p0", 3)  # retried after its admission (100) left the period
        assert admit("p0", 185.0, rate=rate) == []  # p1 (130), p2 (160.5)
        retried("p1", 2)
        assert admit("p1", 185.0, rate=rate) == []  # its first admission counts
        assert admit("p0", 195.0, rate=rate) == ["p0"]  # p1's left: a new admission
        assert admit("p1", 195.0, rate=rate) == []  # p2, p0 (its own left the period)
        assert admit("p1", 221.0, rate=rate) == ["p1"]  # p2's left: a new admission
        assert store.admitted_since("h", 0.0) == [160.5, 195.0, 221.0]
        retried("p3", 2)  # never admitted before: a new admission
        assert admit("p3", 300.0, max_running=10) == ["p3"]
        retried("p3", 3)
        assert admit("p3", 310.0, max_running=10) == ["p3"]  # (no rate: its time)
        assert store.admitted_since("h", 250.0) == [310.0]


def test_a_retry_inside_the_rates_period_counts_once_in_a_batch_too(store_spec: str) -> None:
    """``Transaction.admit`` with a ``rate`` admits a batch as it would its workflows
    one at a time: a retry whose earlier admission is inside the period is counted
    once, as that admission. It was counted a second time as it was admitted in the
    batch, so a new start offered with it waited for the next opening of the period
    where, offered alone after it, it started."""
    from garrison.persistence import Transaction, open_store

    with open_store(store_spec) as store:
        tx = Transaction()
        for i in range(4):
            tx.create_workflow(f"p{i}", "m:f", status="pending", run_id=f"r{i}", host="h",
                               time=1.0)
        store.write(tx)

        def admit(wids: list[str], at: float, **limits: Any) -> list[str]:
            got: list[str] = store.write(Transaction().admit(
                "h", [(wid, f"r{wid[1:]}") for wid in wids], time=at, **limits))[0]
            return got

        def retried(wid: str, attempt: int) -> None:  # (failed, then retried: pending)
            store.write(Transaction().update_workflow(wid, status="failed"))
            store.write(Transaction().update_workflow(wid, status="pending",
                                                      attempt=attempt))

        rate = (2, 60.0)
        assert admit(["p0"], 100.0, rate=rate) == ["p0"]
        retried("p0", 2)
        # p0's admission (100) is the one in the period: room for p1 too
        assert admit(["p0", "p1"], 130.0, rate=rate) == ["p0", "p1"]
        assert store.admitted_since("h", 0.0) == [100.0, 130.0]
        # the period is full (p0, p1): a kept retry needs room as a new start does
        retried("p1", 2)
        assert admit(["p1", "p2"], 140.0, rate=rate) == []
        # a new start first takes the last room, and the retry after it waits
        retried("p0", 3)
        assert admit(["p2", "p0"], 161.0, rate=rate) == ["p2"]  # p0's (100) left
        assert store.admitted_since("h", 0.0) == [100.0, 130.0, 161.0]
        # max_running counts a kept retry as any admission
        store.write(Transaction().update_workflow("p2", status="completed"))
        assert admit(["p1", "p3"], 170.0, rate=(3, 60.0), max_running=1) == ["p1"]


@pytest.mark.postgres
def test_two_nodes_admitting_at_once_never_exceed_the_cluster_limit(
        postgres_stores_url: str) -> None:
    """PostgreSQL: two stores (as two nodes) admit at the same moment from threads; the
    lock of the host makes one wait for the other's count and admission, so together
    they admit exactly the limit, every round."""
    import threading
    import uuid

    from garrison.persistence import PostgresStore, Transaction

    url = f"{postgres_stores_url}?schema=admit_{uuid.uuid4().hex[:8]}"
    stores = [PostgresStore(url), PostgresStore(url)]
    try:
        for round_ in range(5):
            host = f"h{round_}"
            tx = Transaction()
            for side in range(2):
                for i in range(10):
                    tx.create_workflow(f"{host}-{side}-{i}", "m:f", status="pending",
                                       run_id="r", host=host)
            stores[0].write(tx)
            barrier = threading.Barrier(2)
            got: list[list[str]] = [[], []]

            def admit(side: int, host: str = host, barrier: threading.Barrier = barrier,
                      got: list[list[str]] = got) -> None:
                entries = [(f"{host}-{side}-{i}", "r") for i in range(10)]
                tx = Transaction()
                for _ in range(3):  # three admissions in one transaction, as a group commit
                    tx.admit(host, entries, max_running=3, rate=(5, 60.0))
                barrier.wait()
                got[side] = [wid for ids in stores[side].write(tx) for wid in ids]

            threads = [threading.Thread(target=admit, args=(side,)) for side in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(got[0]) + len(got[1]) == 3, (round_, got)
            running = stores[0].list_workflows(status="running")
            assert len([r for r in running if r.host == host]) == 3
    finally:
        for store in stores:
            store.close()


@pytest.mark.postgres
def test_an_admission_waits_for_the_hosts_lock_and_counts_what_its_holder_committed(
        postgres_stores_url: str) -> None:
    """While another transaction holds the host's lock (here: one that makes three
    workflows of the host running), an admission waits; then it counts them (a count
    taken before the lock would not) and admits nothing."""
    import threading
    import time
    import uuid

    import psycopg

    from garrison.persistence import PostgresStore, Transaction
    from garrison.persistence._pg_schema import admit_lock_class

    schema = f"admit_{uuid.uuid4().hex[:8]}"
    url = f"{postgres_stores_url}?schema={schema}"
    with PostgresStore(url) as store:
        tx = Transaction()
        for i in range(6):
            tx.create_workflow(f"w{i}", "m:f", status="pending", run_id="r", host="h")
        store.write(tx)
        got: list[list[str]] = []
        with psycopg.connect(postgres_stores_url) as other:
            with other.transaction():
                other.execute("SELECT pg_advisory_xact_lock(%s, hashtext('h'))",
                              (admit_lock_class(schema),))
                other.execute(f"UPDATE {schema}.workflows SET status = 'running' "
                              "WHERE workflow_id IN ('w3', 'w4', 'w5')")
                admitting = threading.Thread(target=lambda: got.append(store.write(
                    Transaction().admit("h", [("w0", "r"), ("w1", "r")], max_running=3))[0]))
                admitting.start()
                time.sleep(0.3)
                assert got == []  # it waits for the lock
            admitting.join(10)
        assert got == [[]]


@pytest.mark.postgres
def test_the_store_admits_none_while_a_workflow_ahead_waits_elsewhere_in_the_cluster(
        postgres_stores_url: str) -> None:
    """PostgreSQL: the nodes of a cluster each hold some of a host's pending workflows,
    and some wait unclaimed. A node asking for a slot for its ``low`` (priority 0) gets
    none while a ``high`` (priority 5) of the host waits elsewhere to be admitted: owned
    by another live node, owned by none (a live node with room claims it), or by a lost
    node (it is taken over). It does get one when ``high`` cannot be admitted there now:
    its live owner is full (its ``max_concurrent``, as its row says it, hold a slot), or
    no node with room has its code; and when ``high`` comes after ``low`` (same priority, started
    later). As ``max_running`` and ``rate`` alike; offering ``high`` first admits
    both."""
    import uuid

    import psycopg

    from garrison.persistence import PostgresStore, Transaction

    schema = f"admit_{uuid.uuid4().hex[:8]}"
    with PostgresStore(f"{postgres_stores_url}?schema={schema}") as store, \
            psycopg.connect(postgres_stores_url, autocommit=True) as conn:
        # this node (1: room, no limit), a full one (2: max_concurrent 1, running one
        # workflow of the host "full"), one with room (3), a lost one (4); no node with
        # room has the code of ``m:nocode``
        for epoch, status, most in ((1, "active", None), (2, "active", 1),
                                    (3, "active", 2), (4, "lost", None)):
            info = {"refused": ["m:nocode"], "limits": {"max_concurrent": most}}
            conn.execute(
                f"INSERT INTO {schema}.nodes (epoch, name, status, started, heartbeat, "
                "lease, lease_until, info, room) VALUES (%s, %s, %s, 0, 0, 60, "
                f"{schema}.now_s() + 60, %s, %s)",
                (epoch, f"n{epoch}", status, json.dumps(info),
                 None if most is None else most - (epoch == 2)))
        cases = {  # host: (high's owner, its name, its priority), then whether low starts
            "live": ((3, "m:f", 5), False), "unowned": ((None, "m:f", 5), False),
            "lost": ((4, "m:f", 5), False), "full": ((2, "m:f", 5), True),
            "no-code": ((None, "m:nocode", 5), True), "later": ((3, "m:f", 0), True)}
        tx = Transaction()
        for host, ((_owner, name, priority), _starts) in cases.items():
            tx.create_workflow(f"{host}-low", "m:f", status="pending", run_id="r",
                               host=host)
            tx.enqueue(f"{host}-low", "r")
            tx.create_workflow(f"{host}-high", name, status="pending", run_id="r",
                               host=host)
            tx.enqueue(f"{host}-high", "r", priority=priority)
        tx.create_workflow("full-busy", "m:f", status="running", host="full")
        store.write(tx)
        conn.execute(f"UPDATE {schema}.workflows SET owner_epoch = 2 "
                     "WHERE workflow_id = 'full-busy'")
        for host, ((owner, _name, _priority), _starts) in cases.items():
            conn.execute(f"UPDATE {schema}.workflows SET owner_epoch = %s WHERE "
                         "workflow_id = %s", (1, f"{host}-low"))
            conn.execute(f"UPDATE {schema}.workflows SET owner_epoch = %s WHERE "
                         "workflow_id = %s", (owner, f"{host}-high"))
        store.fence_epoch = 1  # (this node's writes: its epoch's)

        def admit(host: str, *entries: str, **limits: Any) -> list[str]:
            got: list[str] = store.write(Transaction().admit(
                host, [(wid, "r") for wid in entries], time=100.0, **limits))[0]
            return got

        for host, (_high, starts) in cases.items():
            for limits in ({"max_running": 2}, {"rate": (1, 60.0)}):
                expected = [f"{host}-low"] if starts else []
                assert admit(host, f"{host}-low", **limits) == expected, (host, limits)
                if starts:  # (back to waiting, for the rate's turn)
                    conn.execute(f"UPDATE {schema}.workflows SET status = 'pending', "
                                 "admitted = NULL WHERE workflow_id = %s", (f"{host}-low",))
        # offered, but another node's: it holds the slot up still
        assert admit("unowned", "unowned-high", "unowned-low", max_running=2) == []
        conn.execute(f"UPDATE {schema}.workflows SET owner_epoch = 1 "
                     "WHERE workflow_id = 'unowned-high'")  # (claimed by this node)
        assert admit("unowned", "unowned-high", "unowned-low", max_running=2) == [
            "unowned-high", "unowned-low"]


@pytest.mark.postgres
def test_the_store_admits_a_tools_start_in_its_start_order(
        postgres_stores_url: str) -> None:
    """PostgreSQL: a workflow ``garrison workflows start`` created has a queue row, as a
    node's start that waits has: the store admits it in its start order among the
    host's others (without one, it came after every workflow of the host queued, and
    one started after it went first)."""
    import uuid

    from garrison import _store_tools as tools
    from garrison.persistence import PostgresStore, Transaction

    schema = f"admit_{uuid.uuid4().hex[:8]}"
    with PostgresStore(f"{postgres_stores_url}?schema={schema}") as store:
        tools.start(store, "schedule_app:job", [], "tool")
        tx = Transaction()
        for wid in ("n1", "n2"):  # the node's starts, after it
            tx.create_workflow(wid, "m:f", status="pending", run_id="r", host="h")
            tx.enqueue(wid, "r")
        store.write(tx.update_workflow("tool", host="h"))  # (as the node loading it)
        run = store.get_workflow("tool").run_id

        def admit(*entries: tuple[str, str]) -> list[str]:
            got: list[str] = store.write(Transaction().admit(
                "h", list(entries), max_running=1, time=100.0))[0]
            return got

        assert admit(("n1", "r")) == []  # the tool's start waits ahead of it
        tool, n1 = store.queue_entry("tool"), store.queue_entry("n1")
        assert tool is not None and n1 is not None and tool.seq < n1.seq
        assert store.queue_entry("nothing") is None
        assert admit(("tool", run), ("n1", "r")) == ["tool"]


def _tool_start(spec: str, wid: str) -> None:
    """``garrison workflows start --id WID schedule_app:job``, as the tool writes it."""
    from garrison import _store_tools as tools

    store = tools.open_store(spec)
    try:
        tools.start(store, "schedule_app:job", [], wid)
    finally:
        store.close()


@pytest.mark.postgres
async def test_a_tools_start_is_claimed_in_its_start_order(
        postgres_url: str, autojump_clock: Any) -> None:
    """PostgreSQL: a full node leaves its starts to the cluster, as ``garrison workflows
    start`` leaves one; when the slot frees, the node claims them in priority, then
    start, order: the tool's first (it was claimed after every one with a queue row,
    those of priority -5 too)."""
    async with garrison.open_node(store=postgres_url, max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="hog")
        _tool_start(postgres_url, "tool")
        await node.start_workflow(app.job, id="n1")
        await node.start_workflow(app.job, id="low", priority=-5)
        await node.start_workflow(app.job, id="n2")
        await node.send("workflows/hog", "go", "x")
        for wid in ("tool", "n1", "n2", "low"):
            with trio.fail_after(30):
                await node.workflow(wid).result()
    assert started() == ["tool", "n1", "n2", "low"]


@pytest.mark.postgres
async def test_a_tools_start_left_by_a_node_gone_is_claimed_in_its_start_order(
        postgres_url: str, autojump_clock: Any) -> None:
    """PostgreSQL: the node that left a tool's start and its own waiting is gone; the
    node that takes them over starts them in start order, the tool's first."""
    async with garrison.open_node(store=postgres_url, name="a", max_concurrent=1) as a:
        await a.start_workflow(app.waits_for_go, id="hog")
        _tool_start(postgres_url, "tool")
        await a.start_workflow(app.job, id="n1")
        await a.start_workflow(app.job, id="n2")
    async with garrison.open_node(store=postgres_url, name="b", max_concurrent=1) as b:
        with trio.fail_after(30):
            while b.workflow("hog").status() != "waiting":
                await trio.sleep(0.05)
        await b.send("workflows/hog", "go", "x")
        for wid in ("tool", "n1", "n2"):
            with trio.fail_after(30):
                await b.workflow(wid).result()
    assert started() == ["tool", "n1", "n2"]


async def test_the_rate_holds_across_restarts(store_spec: str, autojump_clock: Any) -> None:
    """A node restarted in a loop (four times in four seconds) starts no more than the
    rate allows: it counts the starts the store recorded, not a fresh bucket."""
    db = store_spec
    for attempt in range(4):
        async with garrison.open_node(store=db, rate="2/1m") as node:
            for i in range(3):
                await node.start_workflow(app.job, id=f"w{attempt}{i}")
            await trio.sleep(1)
    assert started() == ["w00", "w01"]
    async with garrison.open_node(store=db, rate="2/1m") as node:
        await trio.sleep(200)
        assert node.stats()["workflow_queues"]["workflows"]["pending"] == 4
    times = sorted(start_times().values())
    assert len(times) == 8
    assert all(b - a >= 60 for a, b in zip(times, times[2:], strict=False))  # 2 a minute


async def _taken_here(node: garrison.Node, wid: str) -> None:
    """Return once workflow ``wid`` waits, runs or ended on the node, trio's
    ``MockClock`` held still meanwhile (a task always runnable: it never jumps). On
    PostgreSQL a start made while the queue waits for the rate waits in the store,
    owned by no node, until the node's membership thread claims it back, in real time:
    its result awaited meanwhile reads the store every 0.02 virtual seconds, so it came
    at a virtual time as late as the machine was loaded."""
    host = node.hosts["workflows"]
    deadline = time.monotonic() + 30  # (real time: the claim runs in it)
    while wid not in host.active and wid not in host.finished:
        assert time.monotonic() < deadline, f"the node never claimed workflow {wid}"
        time.sleep(0.001)  # (the thread's turn; the clock stays where it is)
        await trio.lowlevel.checkpoint()


async def test_a_workflow_retried_inside_the_rates_period_counts_once_there(
        store_spec: str, autojump_clock: Any) -> None:
    """README (Queues): at most COUNT workflows admitted in any DURATION; a retry within
    the period counts as its first admission. ``w1`` (admitted at 0, failed) retried at
    1 kept no trace of its admission at 0: its retry's time replaced it, so the rate
    saw its period start at 1 and ``w3`` waited for ``w1``'s retry to leave it (11),
    not for its first run (10). The store keeps the first admission now.

    (On PostgreSQL ``w4``, started while ``w3`` waits, is left to the cluster and
    claimed back by the node's thread: it came at 12 on a loaded machine, once in CI.
    The clock is held still until it is back: ``_taken_here``.)"""
    app.FAIL["on"] = True
    try:
        async with garrison.open_node(store=store_spec, rate="2/10s") as node:
            await node.start_workflow(app.fails_while_asked, id="w1")
            with pytest.raises(garrison.WorkflowFailed):
                await node.workflow("w1").result()
            app.FAIL["on"] = False
            await trio.sleep(1)
            await node.workflow("w1").retry()
            assert await node.workflow("w1").result() == "w1"
            for wid in ("w2", "w3", "w4"):
                await node.start_workflow(app.job, id=wid)
            await _taken_here(node, "w4")
            for wid in ("w2", "w3", "w4"):
                await node.workflow(wid).result()
    finally:
        app.FAIL["on"] = False
    t0 = app.STARTS[0][1]  # (w1's retry replays its recorded time)
    assert [(wid, round(t - t0)) for wid, t in app.STARTS] == [
        ("w1", 0), ("w1", 0), ("w2", 1), ("w3", 10), ("w4", 11)]


async def test_the_rate_counts_a_tools_starts_admitted_before_their_host_is_written(
        store_spec: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``garrison workflows start`` names no host; the node that loads such a workflow
    writes its host soon after. The store counts the rate's starts by host, so the
    workflows the node admitted before that write were not counted: as the first of
    them ended, the next were admitted too, more than the rate allows (the write is
    held back here, as the node's busy write task may). Now the admission writes the
    host of what it admits itself."""
    from garrison.persistence import Op, Transaction

    async with garrison.open_node(store=store_spec):
        pass  # (the tools open a store that exists)
    for i in range(6):
        _tool_start(store_spec, f"r{i}")

    def host_written(tx: Transaction) -> bool:
        return all(op is Op.UPDATE_WORKFLOW and [c for c, _v in params[2]] == ["host"]
                   for op, params in tx.ops)

    async with garrison.open_node(store=store_spec, rate="2/4s") as node:
        store_type = type(node.hosts["workflows"].store)
        commit = store_type.commit

        async def late(self: Any, tx: Transaction) -> list[Any]:
            if host_written(tx):  # the load's write of the host: late
                await trio.sleep(1)
            return await commit(self, tx)

        monkeypatch.setattr(store_type, "commit", late)
        with trio.fail_after(30):
            for i in range(6):
                await node.workflow(f"r{i}").result()
    times = sorted(start_times().values())
    assert len(times) == 6
    # (were three to six at 0: those admitted before their host was written were not
    # counted)
    assert [b - a >= 4 for a, b in zip(times, times[2:], strict=False)] == [True] * 4, times


async def test_a_node_closes_while_a_queued_workflow_is_being_started(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued workflow whose start (``running``) is being committed when the node
    closes is neither waiting (the close sets those aside) nor running: the close waited
    for its task, which never starts, for ever. It resumes on the next node. (SQLite: on
    PostgreSQL a node that is full leaves a new workflow to the cluster, and the one
    that claims it starts it at once.)"""
    store_spec = str(tmp_path / "store.db")
    from garrison.persistence import Op, Transaction

    def marks_running(tx: Transaction) -> bool:
        return bool(tx.ops) and all(op is Op.UPDATE_WORKFLOW
                                    and dict(params[2]).get("status") == "running"
                                    for op, params in tx.ops)

    stuck: list[str] = []

    async def watchdog(host: Any) -> None:
        """Ten seconds into the close, fail the test rather than hang it: the
        workflows the close still waits for are set free (and named)."""
        await trio.sleep(10)
        for wf in list(host.active.values()):
            if not wf.exited.is_set():
                stuck.append(wf.wid)
                wf.exited.set()

    async with trio.open_nursery() as nursery:
        async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
            store_type = type(node.hosts["workflows"].store)
            commit = store_type.commit

            async def slow_starts(self: Any, tx: Transaction) -> list[Any]:
                if marks_running(tx):  # the queue starting a waiting workflow
                    await trio.sleep(1)
                return await commit(self, tx)

            monkeypatch.setattr(store_type, "commit", slow_starts)
            await node.start_workflow(app.job, 1.0, id="a")
            await node.start_workflow(app.job, 1.0, id="b")  # waits for a's slot
            await trio.sleep(1.5)  # a ended at 1 s: b's start is being committed
            nursery.start_soon(watchdog, node.hosts["workflows"])
        nursery.cancel_scope.cancel()
    assert stuck == []  # the close returned
    monkeypatch.undo()
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        with trio.fail_after(10):
            assert await node.workflow("b").result() == "b"
    assert started() == ["a", "b"]


async def _left_pending_runs_on_the_next_node(store_spec: str, seconds: float,
                                             **limits: Any) -> None:
    """What a close race left behind: ``b`` is ``pending`` in the store for the next
    node (opened with ``limits``), which runs it within ``seconds``, after ``a``."""
    async with garrison.open_node(store=store_spec, **limits) as node:
        assert node.workflow("b").status() == "pending"
        with trio.fail_after(seconds):
            assert await node.workflow("b").result() == "b"
    assert started() == ["a", "b"]


async def test_a_node_closes_while_the_store_refuses_a_queued_workflow_for_its_rate(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a ``rate``, the store has the last word on a start: a node closing while it
    was asked, and refused, put the workflow back in the queue the close had already
    emptied, and the close waited for its task (which never starts) for ever:
    ``open_node`` exiting right after a workflow ended hung now and then. It stays
    pending in the store and runs on the next node."""
    store_spec = str(tmp_path / "store.db")
    from garrison.persistence import Op, Transaction

    stuck: list[str] = []

    async def watchdog(host: Any) -> None:
        await trio.sleep(10)  # fail the test rather than hang it (naming who hung it)
        for wf in list(host.active.values()):
            if not wf.exited.is_set():
                stuck.append(wf.wid)
                wf.exited.set()

    async with trio.open_nursery() as nursery:
        async with garrison.open_node(store=store_spec, rate="1/1m") as node:
            store_type = type(node.hosts["workflows"].store)
            commit = store_type.commit

            async def slow_admissions(self: Any, tx: Transaction) -> list[Any]:
                if [op for op, _params in tx.ops] == [Op.ADMIT]:  # the queue asks again
                    await trio.sleep(1)
                return await commit(self, tx)

            monkeypatch.setattr(store_type, "commit", slow_admissions)
            await node.start_workflow(app.job, 1.0, id="a")
            await node.start_workflow(app.job, 1.0, id="b")  # the rate makes it wait
            assert await node.workflow("a").result() == "a"
            await trio.sleep(0.5)  # a's end offered b to the store, which will refuse
            nursery.start_soon(watchdog, node.hosts["workflows"])
        nursery.cancel_scope.cancel()
    assert stuck == []  # the close returned
    monkeypatch.undo()
    await _left_pending_runs_on_the_next_node(store_spec, 120, rate="1/1m")


def _b_commits_after(monkeypatch: pytest.MonkeyPatch, node: garrison.Node, obj: Any,
                     step: str) -> None:
    """The commit that creates workflow ``b`` waits until ``obj.step()`` (a step of the
    node's stop) has run: a start racing that step."""
    from garrison.persistence import Op, Transaction

    done = trio.Event()
    store_type = type(node.hosts["workflows"].store)
    commit, run = store_type.commit, getattr(obj, step)

    async def late(self: Any, tx: Transaction) -> list[Any]:
        if tx.ops[0][0] is Op.CREATE_WORKFLOW and tx.workflow_ids[0] == "b":
            await done.wait()
        return await commit(self, tx)

    def ran() -> None:
        run()
        done.set()

    monkeypatch.setattr(store_type, "commit", late)
    monkeypatch.setattr(obj, step, ran)


async def test_a_start_that_commits_as_the_node_closes_leaves_its_workflow_pending(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start (``start_workflow``, a schedule's trigger: from a task outside the node,
    say a web request) whose workflow must wait, committed after the close set the queue
    aside, was queued all the same: the close waited for its task, which never starts,
    for ever. It stays pending in the store and runs on the next node."""
    store_spec = str(tmp_path / "store.db")
    stuck: list[str] = []

    async def watchdog(host: Any) -> None:
        await trio.sleep(10)  # fail the test rather than hang it (naming who hung it)
        for wf in list(host.active.values()):
            if not wf.exited.is_set():
                stuck.append(wf.wid)
                wf.exited.set()

    async def late_start(node: garrison.Node) -> None:
        await node.start_workflow(app.job, 1.0, id="b")

    async with trio.open_nursery() as nursery:
        async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
            # (committed as the close goes on: once the queue was set aside)
            _b_commits_after(monkeypatch, node, node.hosts["workflows"].queue, "close")
            await node.start_workflow(app.job, 100.0, id="a")  # holds the one slot
            nursery.start_soon(late_start, node)
            await trio.sleep(0.5)
            nursery.start_soon(watchdog, node.hosts["workflows"])
        nursery.cancel_scope.cancel()
    assert stuck == []  # the close returned
    monkeypatch.undo()
    await _left_pending_runs_on_the_next_node(store_spec, 300, max_concurrent=1)


async def test_a_start_whose_commit_is_forming_as_the_node_closes_its_store_commits(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start from a task outside the node (a web request) whose commit was asked, and
    waited in a forming batch, as the node closed its store: the batch was written after
    the close, and the start raised the store's bare ``RuntimeError: store ... is
    closed`` (seen once in CI, in the test above). The close waits for that batch: the
    start returns, its workflow pending in the store for the next node (not run here:
    the node's workflows have stopped, and ``a``'s slot is free)."""
    store_spec = str(tmp_path / "store.db")
    go = trio.Event()
    outcome: list[Any] = []

    async def web_request() -> None:
        await go.wait()
        # another request runs too: the commit joins a batch (it is not written alone
        # at once), which gathers for a few scheduler passes
        nursery.start_soon(trio.lowlevel.checkpoint)
        outcome.append(await node.start_workflow(app.job, 1.0, id="b"))

    async with (trio.open_nursery() as nursery,
                garrison.open_node(store=store_spec, max_concurrent=1) as node):
        host = node.hosts["workflows"]
        store, send_held = host.store, host.send_held

        async def last_before_the_close() -> None:  # the stores close right after
            go.set()
            while not store.committing:  # b's commit is forming
                assert not outcome, "b's commit was written alone, not in a batch"
                await trio.lowlevel.checkpoint()
            await send_held()

        monkeypatch.setattr(host, "send_held", last_before_the_close)
        await node.start_workflow(app.job, 100.0, id="a")
        nursery.start_soon(web_request)
    assert outcome == [garrison.Pid("workflows", "b")]
    await _left_pending_runs_on_the_next_node(store_spec, 300, max_concurrent=1)


async def _start_until_refused(node: garrison.Node, k: int, refused: list[str],
                               started: list[str]) -> None:
    """A client outside the node (a web server still serving): start workflow after
    workflow (``started``) until one start fails (``refused``: its error)."""
    for i in range(10**6):
        try:
            await node.start_workflow(app.job, 0.0, id=f"c{k}-{i}")
        except Exception as exc:  # (what each one gets is the test)
            refused.append(f"{type(exc).__name__}: {exc}")
            return
        started.append(f"c{k}-{i}")


async def test_a_stop_under_a_steady_stream_of_starts_ends_at_once(tmp_path: Path) -> None:
    """Tasks outside the node (a web server still serving) keep starting workflows as
    it stops: waiting for no commit in flight before closing the store, the stop
    waited out ``STOP_WAIT`` (the group commit never went idle), storing every start of
    those seconds. A start is refused once that wait begins: the stop ends at once,
    each client is told the node is closed. (Real time: a busy loop never lets a
    virtual clock jump.)"""
    refused: list[str] = []

    with trio.fail_after(3):  # (STOP_WAIT is 5 s)
        async with trio.open_nursery() as outside, \
                garrison.open_node(store=str(tmp_path / "store.db")) as node:
            for k in range(4):
                outside.start_soon(_start_until_refused, node, k, refused, [])
            await trio.sleep(0.1)
    assert len(refused) == 4, refused
    assert all(e.startswith("RuntimeError: cannot start a workflow: node ")
               and "is closed" in e for e in refused), refused


async def test_a_start_racing_a_cluster_nodes_stop_is_written_or_told_it_is_closed(
        postgres_url: str) -> None:
    """On PostgreSQL the node waited for the commits in flight only after it left its
    cluster: a start racing the stop was refused by the fence, as a workflow whose
    node's lease lapsed (``WorkflowMoved: ... cut off``), nothing stored."""
    errors: list[str] = []
    started: list[str] = []

    with trio.fail_after(10):
        async with trio.open_nursery() as outside, \
                garrison.open_node(store=postgres_url, name="a", lease="2s") as node:
            for k in range(4):
                outside.start_soon(_start_until_refused, node, k, errors, started)
            await trio.sleep(0.2)
    assert len(errors) == 4 and all(e.startswith("RuntimeError: cannot start a workflow: "
                                                 "node 'a' is closed") for e in errors), errors
    async with garrison.open_node(store=postgres_url, name="b", lease="2s") as node:
        for wid in started[-8:]:  # (every start that returned was written)
            assert node.workflow(wid).status() is not None


async def test_a_start_whose_slow_commit_went_on_in_a_thread_is_waited_for_at_stop(
        postgres_url: str) -> None:
    """A start committing alone that the server is slow to answer goes on in a worker
    thread; the store said it committed nothing meanwhile, so the stop closed the store
    under it: ``StoreError: ... whether it committed is unknown`` (here a row lock held
    for 1 s, well inside ``STOP_WAIT``)."""
    import threading
    import time

    import psycopg

    other = psycopg.connect(postgres_url)
    outcome: list[str] = []
    try:
        async def client(node: garrison.Node) -> None:
            try:
                await node.start_workflow(app.job, 0.0, id="blocked")
                outcome.append("started")
            except Exception as exc:  # (what it gets is the test)
                outcome.append(f"{type(exc).__name__}: {exc}")

        async with trio.open_nursery() as outside, \
                garrison.open_node(store=postgres_url, name="a", lease="2s") as node:
            other.execute("INSERT INTO garrison.workflows (workflow_id, name, status, "
                          "created, updated) VALUES ('blocked', 'x', 'pending', 0, 0)")
            outside.start_soon(client, node)
            await trio.sleep(0.5)  # (its commit waits for the lock, in a thread)
            threading.Timer(1.0, other.rollback).start()  # the lock goes in 1 s
    finally:
        time.sleep(1.2)
        other.close()
    assert outcome == ["started"], outcome


async def test_a_start_that_reaches_the_store_after_the_node_closed_it_says_so(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start from a task outside the node that was inside ``start_workflow`` as the
    node closed (waiting for another start of its id, say) and asks for its commit only
    once the store is closed: nothing is written, and it fails as a start on the closed
    node does, not with the store's bare ``RuntimeError: store ... is closed``."""
    store_spec = str(tmp_path / "store.db")
    outcome: list[BaseException] = []

    async def late_start(node: garrison.Node) -> None:
        try:
            await node.start_workflow(app.job, 1.0, id="b")
        except RuntimeError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery, garrison.open_node(store=store_spec) as node:
        _b_commits_after(monkeypatch, node, node, "_close_workflow_stores")
        nursery.start_soon(late_start, node)
        await trio.sleep(0.5)
    monkeypatch.undo()
    [error] = outcome
    assert type(error) is RuntimeError
    assert str(error) == f"cannot start a workflow: {node._closed_text()}"
    assert "is closed" in str(error.__cause__)  # (the store's refusal, for the record)
    async with garrison.open_node(store=store_spec) as node:
        with pytest.raises(garrison.NoSuchWorkflow):
            node.workflow("b").status()


async def test_a_queued_workflow_whose_start_the_store_refuses_ends_its_waiters_wait(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the store fails as the queue starts a waiting workflow (marks it
    ``running``), the workflow stops here as one whose store fails under it does: a
    ``result()`` waiting for it raises the store's error (it waited for ever), and
    nothing is lost: it is still ``pending`` in the store and runs on the next node.
    (SQLite: on PostgreSQL a full node leaves a new workflow to the cluster.)"""
    store_spec = str(tmp_path / "store.db")
    from garrison.persistence import Op, Transaction

    refused: list[str] = []
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        store_type = type(node.hosts["workflows"].store)
        commit = store_type.commit

        async def failing_starts(self: Any, tx: Transaction) -> list[Any]:
            if tx.ops and all(op is Op.UPDATE_WORKFLOW
                              and dict(params[2]).get("status") == "running"
                              for op, params in tx.ops):  # the queue starting "b"
                refused.append(tx.workflow_ids[0])
                raise garrison.StoreError(self.path, "disk I/O error")
            return await commit(self, tx)

        monkeypatch.setattr(store_type, "commit", failing_starts)
        await node.start_workflow(app.job, 1.0, id="a")
        await node.start_workflow(app.job, 1.0, id="b")  # waits for a's slot
        with trio.fail_after(100), pytest.raises(garrison.StoreError, match="disk I/O"):
            await node.workflow("b").result()
        assert refused == ["b"]
        assert await node.workflow("a").result() == "a"
        monkeypatch.undo()
    async with garrison.open_node(store=store_spec) as node:
        assert await node.workflow("b").result() == "b"


async def test_starting_a_pending_id_again_returns_its_pid(store_spec: str,
                                                           autojump_clock: Any) -> None:
    """API.md: a start of an existing id returns that workflow's pid, a pending one
    too (on PostgreSQL the queue's ``enqueue`` answers NULL for it: no TypeError)."""
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="hog")
        first = await node.start_workflow(app.job, id="A")
        assert await node.start_workflow(app.job, id="A") == first
        keyed = await node.start_workflow(app.job, id="B", dedup="K")
        assert await node.start_workflow(app.job, id="B", dedup="K") == keyed
        assert await node.start_workflow(app.job, id="C", dedup="K") == keyed
        assert [node.workflow(w).status() for w in ("A", "B")] == ["pending", "pending"]
        assert "A" not in started()
        await node.send("workflows/hog", "go", "x")
        assert await node.workflow("A").result() == "A"
        assert await node.workflow("B").result() == "B"
    assert sorted(started()) == ["A", "B"]


async def _link_and_die(target: str) -> None:
    garrison.process.link(target)
    raise RuntimeError("linked failure")


async def _watch(target: str) -> tuple[str, str]:
    garrison.process.monitor(target)
    event = await garrison.process.events().receive()
    assert event.error is not None
    return str(event.pid), event.error.type


@contextlib.asynccontextmanager
async def _full(store: str, error: str) -> AsyncIterator[garrison.Node]:
    """A node with one slot, taken by ``hog`` (until it gets a message), and ``victim``
    pending behind it (with the dedup key ``K``), watched by a process; at the end the
    watcher got its EXIT (with the error type ``error``), ``hog`` is let go and
    ``after`` (a start with the key ``K``) runs: ``victim`` never did."""
    async with garrison.open_node(store=store, max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="hog")
        await node.start_workflow(app.job, id="victim", dedup="K")
        watcher = await node.spawn(_watch, "workflows/victim")
        await trio.sleep(0.1)
        yield node
        assert node.workflow("victim").status() in ("cancelled", "failed")
        # (no virtual deadline around a wait on PostgreSQL's reads, made in worker
        # threads in real time: the clock would jump to it meanwhile)
        assert await node.wait(watcher) == ("workflows/victim", error)
        # its key is free: a start with it makes a new workflow
        assert (await node.start_workflow(app.job, id="after", dedup="K")).id == "after"
        await node.send("workflows/hog", "go", "x")
        assert await node.workflow("after").result() == "after"
        await trio.sleep(1)
        assert node.workflow("victim").status() in ("cancelled", "failed")
    assert started() == ["after"]  # the ended one never ran


async def test_cancelling_a_pending_workflow_ends_it_at_once(store_spec: str,
                                                             autojump_clock: Any) -> None:
    """README (Queues): cancelling a pending workflow ends it ``cancelled`` at once; on
    PostgreSQL too, where it waits in the store, not in the node's memory (its dedup
    key is free again, its watchers get its EXIT: see ``_full``)."""
    async with _full(store_spec, "WorkflowCancelled") as node:
        await node.workflow("victim").cancel()
        assert node.workflow("victim").status() == "cancelled"
        with trio.fail_after(5), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("victim").result()


async def test_a_linked_failure_ends_a_pending_workflow_failed(store_spec: str,
                                                               autojump_clock: Any) -> None:
    """README (Queues): killing a pending workflow (a linked process failing) ends it
    ``failed`` without running it, on PostgreSQL too."""
    async with _full(store_spec, "LinkedProcessFailed") as node:
        await node.spawn(_link_and_die, "workflows/victim")
        # (on PostgreSQL the store is read in a worker thread: real time passes)
        deadline = time.monotonic() + 20
        while node.workflow("victim").status() == "pending" and time.monotonic() < deadline:
            await trio.sleep(0.05)
        assert node.workflow("victim").status() == "failed"
        with pytest.raises(garrison.WorkflowFailed, match="linked failure"):
            await node.workflow("victim").result()


async def test_terminating_a_pending_workflow_ends_it_at_once(store_spec: str,
                                                              autojump_clock: Any) -> None:
    """``handle.terminate()`` of a pending workflow returns once it has ended, without
    waiting for a slot, on PostgreSQL too."""
    async with _full(store_spec, "Terminated") as node:
        with trio.fail_after(5):
            await node.workflow("victim").terminate("stop")
        assert node.workflow("victim").status() == "failed"
        with pytest.raises(garrison.WorkflowFailed, match="Terminated: stop"):
            await node.workflow("victim").result()


async def test_a_tools_terminate_of_a_pending_workflow_ends_it_without_waiting_for_a_slot(
        store_spec: str, autojump_clock: Any) -> None:
    """A tool's terminate (the command line's) of a workflow waiting ``pending`` behind a
    full node ends it at once, unrun, as the node's own terminate does: a terminate needs
    no slot. On PostgreSQL it waits in the store, claimed by no node (each is full): the
    node's refresh of the tool's request poked the claims, which take nothing while the
    node is full, and it waited, pending, until ``hog`` ended (never, here)."""
    from garrison import _store_tools
    from garrison.persistence import open_store

    async with _full(store_spec, "Terminated") as node:
        with open_store(store_spec, lock=False) as tool:  # (another process's)
            asked = _store_tools.ask_terminate(tool, "victim", "stop")
        assert asked is not None  # (asked of the node: it holds the store)
        deadline = time.monotonic() + 20  # (PostgreSQL's reads: threads, in real time)
        while node.workflow("victim").status() == "pending" and time.monotonic() < deadline:
            await trio.sleep(0.05)
        assert node.workflow("victim").status() == "failed"
        with pytest.raises(garrison.WorkflowFailed, match="Terminated: stop"):
            await node.workflow("victim").result()
        assert node.workflow("hog").status() != "completed"  # (its slot never freed)

async def _victim_being_admitted(node: garrison.Node, monkeypatch: pytest.MonkeyPatch
                                 ) -> None:
    """On a node with one slot: ``victim`` waits behind ``hog``; ``hog`` ends, and the
    commit that takes ``victim`` out of the queue to run it (its admission) takes a
    second more. Returns half-way through it: out of the queue, no task of its own.
    (SQLite's only: in a cluster the membership thread's round claims it, in real
    time, outside this commit, and the autojump clock does not wait for it.)"""
    from garrison.persistence import Op

    store = node.hosts["workflows"].store
    commit = type(store).commit

    def admits(params: Any, op: Any) -> bool:
        if op is Op.ADMIT:
            return '"victim"' in params[1]
        return op is Op.UPDATE_WORKFLOW and params[0] == "victim" and \
            ("status", "running") in params[2]

    entered = trio.Event()

    async def slow(self: Any, tx: Any) -> list[Any]:
        if any(admits(params, op) for op, params in tx.ops):
            entered.set()
            await trio.sleep(1)
        return await commit(self, tx)

    monkeypatch.setattr(type(store), "commit", slow)
    await node.start_workflow(app.waits_for_go, id="hog")
    await node.start_workflow(app.job, id="victim")
    await node.send("workflows/hog", "go", "x")
    await node.workflow("hog").result()
    await trio.sleep(0.5)
    assert entered.is_set()  # (half-way through its admission, as the tests need)


async def test_a_terminate_while_a_pending_workflow_is_admitted(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminate that lands while the queue commits a pending workflow's admission
    ends it ``failed`` without running its code, and returns once it has (it ran and
    completed, the terminate lost)."""
    async with garrison.open_node(store=str(tmp_path / "s.db"), max_concurrent=1) as node:
        await _victim_being_admitted(node, monkeypatch)
        with trio.fail_after(5):
            await node.workflow("victim").terminate("stop")
        assert node.workflow("victim").status() == "failed"
        with pytest.raises(garrison.WorkflowFailed, match="Terminated: stop"):
            await node.workflow("victim").result()
        assert started() == []  # (victim never ran: job records its start)


async def test_stats_count_a_workflow_being_admitted_as_pending(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """While its start is written a workflow waits still (the store may refuse it):
    ``stats()`` counted it ``running``, and a rate-limited queue read ``running 5``
    with one workflow ever admitted."""
    async with garrison.open_node(store=str(tmp_path / "s.db"), max_concurrent=1) as node:
        await _victim_being_admitted(node, monkeypatch)
        counts = node.stats()["workflow_queues"]["workflows"]
        assert (counts["pending"], counts["running"]) == (1, 0)
        await node.workflow("victim").result()
        counts = node.stats()["workflow_queues"]["workflows"]
        assert (counts["pending"], counts["running"]) == (0, 0)


async def test_stats_count_the_pending_workflows(store_spec: str,
                                                 autojump_clock: Any) -> None:
    """``pending`` is the queue's depth on PostgreSQL too, where the pending workflows
    are rows of the store, not held in the node's memory."""
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="hog")
        for i in range(3):
            await node.start_workflow(app.job, id=f"w{i}")
        await trio.sleep(1)
        assert node.stats()["workflow_queues"]["workflows"]["pending"] == 3
        await node.workflow("w1").cancel()
        # read once its end is committed (ended by the queue's own task, or in the
        # store): the count is fresh after a change this node made, whichever way
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w1").result()
        assert node.stats()["workflow_queues"]["workflows"]["pending"] == 2
        await node.send("workflows/hog", "go", "x")
        await node.workflow("w2").result()
        await trio.sleep(1)
        assert node.stats()["workflow_queues"]["workflows"]["pending"] == 0


@pytest.mark.postgres
async def test_a_cancel_right_after_a_start_on_a_full_node_ends_it_at_once(
        postgres_url: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full node hands a new workflow to the cluster, but the store names the node its
    owner until the membership thread's release lands. A cancel meanwhile (one run in
    five of test_stats_count_the_pending_workflows on a loaded machine) wrote only a
    request and returned with the workflow still pending: it ends at once, as one that
    waits unclaimed does."""
    import threading

    async with garrison.open_node(store=postgres_url, max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="hog")
        pg = node.hosts["workflows"].ownership.pg
        release, landed = pg.release, threading.Event()

        def late_release(workflow_ids: list[str] | None) -> int:
            landed.wait(30)  # (the membership thread: real time)
            return release(workflow_ids)

        monkeypatch.setattr(pg, "release", late_release)
        try:
            await node.start_workflow(app.job, id="w")  # full: handed over
            assert node.stats()["workflow_queues"]["workflows"]["pending"] == 1
            await node.workflow("w").cancel()
            assert node.workflow("w").status() == "cancelled"
            assert node.stats()["workflow_queues"]["workflows"]["pending"] == 0
        finally:
            landed.set()
        await node.send("workflows/hog", "go", "x")
        assert await node.workflow("hog").result() == "x"
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()
    assert started() == []  # (hog is not a job: w never ran)


@pytest.mark.postgres
async def test_the_pending_count_follows_a_workflow_this_node_ends_in_its_queue(
        postgres_url: str, autojump_clock: Any) -> None:
    """``stats()`` reuses the store's pending count for a while unless this node changed
    it: a cancel of a workflow waiting in this node's queue (the store refused it for
    ``cluster_max_concurrent``) changes it too."""
    async with garrison.open_node(store=postgres_url, cluster_max_concurrent=1) as node:
        await node.start_workflow(app.waits_for_go, id="hog")
        await node.start_workflow(app.job, id="w")  # refused by the store: waits here
        assert node.workflow("w").status() == "pending"
        assert node.stats()["workflow_queues"]["workflows"]["pending"] == 1
        await node.workflow("w").cancel()
        assert node.workflow("w").status() == "cancelled"
        assert node.stats()["workflow_queues"]["workflows"]["pending"] == 0
        await node.send("workflows/hog", "go", "x")
        assert await node.workflow("hog").result() == "x"


async def _until(check: Any, what: str, seconds: float = 10.0) -> None:
    with trio.fail_after(seconds):
        while not check():
            await trio.sleep(0.02)


@pytest.mark.postgres
async def test_a_pending_workflow_of_a_cluster_ends_where_asked_unless_a_node_claimed_it(
        postgres_url: str) -> None:
    """Two nodes, each full: a workflow started on a waits pending in the store, owned
    by no node. A cancel from b ends it there at once (its key free for a start on
    either node). The end is conditional on nobody having claimed it: one a live node
    owns is left to that node (nothing written). Real time: the nodes' claims run in
    threads."""
    import psycopg

    from garrison.persistence import WorkflowStatus

    async with garrison.open_node(store=postgres_url, name="a", max_concurrent=1) as a, \
            garrison.open_node(store=postgres_url, name="b", max_concurrent=1) as b:
        await a.start_workflow(app.waits_for_go, id="hog-a")
        await b.start_workflow(app.waits_for_go, id="hog-b")
        await a.start_workflow(app.job, id="victim", dedup="K")
        await a.start_workflow(app.job, id="other")
        store = a.hosts["workflows"].store
        owner = a.hosts["workflows"].ownership.pg.owner_name
        await _until(lambda: owner("victim") is None and owner("other") is None,
                     "a released its pending workflows")
        # (counted in a worker thread: the node's thread never waits for the server)
        await _until(lambda: b.stats()["workflow_queues"]["workflows"]["pending"] == 2,
                     "b to count the two pending workflows")
        await b.workflow("victim").cancel()
        assert b.workflow("victim").status() == "cancelled"
        assert a.workflow("victim").status() == "cancelled"
        assert (await a.start_workflow(app.job, id="after", dedup="K")).id == "after"
        # a claim that committed first wins: the end is not written
        with psycopg.connect(postgres_url) as conn:
            conn.execute(f"UPDATE {store._s}.workflows SET owner_epoch = %s, owner = 'a' "
                         "WHERE workflow_id = 'other'", (store.fence_epoch,))
        from garrison.hosts.workflow._core import cancelled_error

        host_b = b.hosts["workflows"]
        assert not host_b.end_pending_stored("other", WorkflowStatus.CANCELLED,
                                             cancelled_error("other"))
        assert b.workflow("other").status() == "pending"
        with psycopg.connect(postgres_url) as conn:
            conn.execute(f"UPDATE {store._s}.workflows SET owner_epoch = NULL, owner = NULL "
                         "WHERE workflow_id = 'other'")
        await a.send("workflows/hog-a", "go", "x")
        await b.send("workflows/hog-b", "go", "x")
        for wid in ("after", "other"):
            with trio.fail_after(20):
                assert await a.workflow(wid).result() == wid
    assert sorted(started()) == ["after", "other"]


@pytest.mark.postgres
async def test_a_cluster_limit_starts_the_host_s_workflows_in_priority_order_across_nodes(
        postgres_url: str) -> None:
    """cluster_max_concurrent=1 on two nodes: while ``hog`` holds the slot, ``low``
    (priority 0) waits in a's queue and ``high`` (priority 5) in b's. When the slot
    frees, a asks first (its own workflow ended), yet the store leaves the slot to b's
    ``high``; ``low`` starts after it. Real time: the nodes hear of each other through
    the server."""
    async with garrison.open_node(store=postgres_url, name="a", lease="2s",
                                  cluster_max_concurrent=1) as a, \
            garrison.open_node(store=postgres_url, name="b", lease="2s",
                               cluster_max_concurrent=1) as b:
        await a.start_workflow(app.waits_for_go, id="hog")
        await a.start_workflow(app.job, id="low")
        await b.start_workflow(app.job, id="high", priority=5)
        assert a.workflow("low").status() == b.workflow("high").status() == "pending"
        await a.send("workflows/hog", "go", "x")
        with trio.fail_after(20):
            assert await a.workflow("low").result() == "low"
            assert await b.workflow("high").result() == "high"
    assert started() == ["high", "low"]


@pytest.mark.postgres
async def test_a_blocked_workflow_a_node_claims_waits_for_the_clusters_slot(
        postgres_url: str) -> None:
    """cluster_max_concurrent=1, a rolling deploy: ``d1`` blocks on node a (new code) and
    frees the cluster's one slot, which a's ``q1`` takes; node c (old code, which has not
    tried ``d1``) claims it. c resumed it at once, without the store's admission: two
    held the slot of one. It waits now, ``pending``, until ``q1`` ends. Real time: the
    nodes' claims run in it."""
    import psycopg

    def holding() -> list[str]:
        with psycopg.connect(postgres_url) as conn:
            return [row[0] for row in conn.execute(
                "SELECT workflow_id FROM garrison.workflows WHERE status IN "
                "('running', 'waiting', 'sleeping') ORDER BY 1")]

    async with garrison.open_node(store=postgres_url, name="b", lease="2s",
                                  cluster_max_concurrent=1) as b:
        await b.start_workflow(app.diverging, id="d1")
        await _until_status(b, ("d1",), "waiting")
    app.DIVERGE["on"] = True  # node a runs the new code
    try:
        async with garrison.open_node(store=postgres_url, name="a", lease="2s",
                                      cluster_max_concurrent=1) as a:
            await _until_status(a, ("d1",), "blocked")  # (claimed, tried, given up)
            await a.start_workflow(app.waits_for_go, id="q1")
            await _until_status(a, ("q1",), "waiting")
            app.DIVERGE["on"] = False  # node c runs the old code
            async with garrison.open_node(store=postgres_url, name="c", lease="2s",
                                          cluster_max_concurrent=1) as c:
                await _until_status(c, ("d1",), "pending")  # claimed by c, waiting
                for _ in range(20):
                    assert holding() == ["q1"]
                    await trio.sleep(0.1)
                await a.send("workflows/q1", "go", "x")
                await _until_status(c, ("d1",), "waiting")
                assert holding() == ["d1"]
                await c.send("workflows/d1", "go", "y")
                with trio.fail_after(20):
                    assert await c.workflow("d1").result() == "y"
    finally:
        app.DIVERGE["on"] = False


async def test_a_retried_workflow_that_never_ran_waits_pending_and_cancels_at_once(
        store_spec: str, autojump_clock: Any) -> None:
    """README (Queues): a retry made through this node shows the workflow ``pending`` at
    once, and a cancel of it, never run, ends it ``cancelled`` at once as for any
    pending one (on PostgreSQL the retry waited in the store, and this node's view of it
    stayed ``failed`` until its claim loop came by)."""
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        await node.start_workflow(app.job, 0.3, id="blk")
        await node.start_workflow(app.job, 5.0, id="P")  # pending
        await node.workflow("P").terminate("stop")  # failed, never ran
        await node.workflow("blk").result()
        await node.start_workflow(app.job, 3.0, id="blk2")  # the node full again
        await node.workflow("P").retry()
        assert node.workflow("P").status() == "pending"
        t0 = trio.current_time()
        await node.workflow("P").cancel()
        assert node.workflow("P").status() == "cancelled"
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("P").result()
        assert trio.current_time() - t0 < 1
        assert node.workflow("blk2").status() != "completed"
    assert started() == ["blk", "blk2"]
