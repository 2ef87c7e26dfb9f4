"""A node on a store another node holds (``open_store(path, lock=False)``): its starts
and triggers go into the store for the holding node, which runs them under its own
limits (found by an adversarial review of schedules and queues)."""

from __future__ import annotations

from typing import Any

import pytest
import schedule_app as app
import trio

import garrison
from garrison.persistence import open_store


@pytest.fixture(autouse=True)
def clean() -> None:
    app.STARTS.clear()


async def test_a_trigger_from_a_node_on_an_unlocked_store_starts_one_workflow(
        store_spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each trigger starts one workflow and returns its pid. It used to create a new
    workflow every millisecond for ever (the start of such a node never told the
    trigger it created one): a guard on the next id turns that into a failure."""
    from garrison.hosts.workflow import _scheduler

    tried: list[float] = []
    real = _scheduler.next_trigger

    def guarded(now: float) -> float:
        tried.append(now)
        assert len(tried) < 50, "trigger() kept creating workflows"
        return real(now)

    monkeypatch.setattr(_scheduler, "next_trigger", guarded)
    async with garrison.open_node(store=store_spec) as owner:
        await owner.schedule("s", app.job, every="1h")
        with open_store(store_spec, lock=False) as store:
            async with garrison.open_node(store=store) as other:
                pid = await other.schedule_handle("s").trigger()
        assert [w.workflow_id for w in owner.workflows()] == [pid.id]
        with trio.fail_after(10):
            assert await owner.workflow(pid.id).result() == pid.id
        assert owner.schedule_handle("s").info().last_workflow == pid.id


async def test_starts_from_a_node_on_an_unlocked_store_wait_for_the_holder_s_limits(
        tmp_path: Any) -> None:
    """The holding node runs at most ``max_concurrent`` at once, those started by the
    other node too (they were written ``running`` and ran at once, all of them)."""
    db = str(tmp_path / "b.db")
    async with garrison.open_node(store=db, max_concurrent=1) as owner:
        await owner.start_workflow(app.job, 0.3, id="first")
        with open_store(db, lock=False) as store:
            async with garrison.open_node(store=store) as other:
                for i in range(3):
                    await other.start_workflow(app.job, 0.3, id=f"c{i}")
        most = 0
        with trio.fail_after(20):
            while True:
                statuses = [owner.workflow(w).status() for w in ("first", "c0", "c1", "c2")]
                most = max(most, sum(s not in ("pending", "completed") for s in statuses))
                if all(s == "completed" for s in statuses):
                    break
                await trio.sleep(0.02)
    assert most == 1
    assert sorted(wid for wid, _ in app.STARTS) == ["c0", "c1", "c2", "first"]


async def test_a_start_from_a_node_on_an_unlocked_store_keeps_its_start_order(
        store_spec: str) -> None:
    """Such a start is queued with a row of its own, as a ``garrison workflows start``
    is: the holding node, full, starts it before its own started after it (on
    PostgreSQL it was claimed after every workflow with a row); its start is counted
    once, by the holder."""
    async with garrison.open_node(store=store_spec, max_concurrent=1) as owner:
        await owner.start_workflow(app.waits_for_go, id="busy")
        with open_store(store_spec, lock=False) as store:
            async with garrison.open_node(store=store) as other:
                await other.start_workflow(app.job, id="c")
        host = owner.hosts["workflows"]
        if host.ownership is None:  # (SQLite: once the holder has read it)
            with trio.fail_after(10):
                while "c" not in host.active:
                    await trio.sleep(0.005)
        await owner.start_workflow(app.job, id="n1")
        await owner.send("workflows/busy", "go", "x")
        for wid in ("c", "n1"):
            with trio.fail_after(10):
                assert await owner.workflow(wid).result() == wid
        assert host.counts["started"] == 3  # busy, c, n1
    assert [wid for wid, _ in app.STARTS] == ["c", "n1"]
