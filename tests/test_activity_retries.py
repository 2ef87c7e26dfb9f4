"""An activity's retries survive a restart: the attempts made and the backoff under way
are durable (a ``retry N`` timer at the activity's seq), so ``max_attempts`` counts
every attempt, whatever the crashes."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import garrison
import garrison.testing
from garrison.persistence import SQLiteStore

_ATTEMPTS: list[tuple[str, float]] = []
_POLICY = garrison.RetryPolicy(max_attempts=3, initial_delay="10m", backoff=1.0,
                               max_delay="1h")


@garrison.activity(retry=_POLICY)
async def _down(tag: str) -> str:
    _ATTEMPTS.append((tag, trio.current_time()))
    raise ConnectionError(f"{tag}: service down")


async def _calls(how: str) -> str:
    if how == "started":
        handle = garrison.workflow.start(_down, how)
        return await handle
    return await _down(how)


def _read(db: str, what: str, wid: str) -> list[Any]:
    """The store's ``timers`` or ``journal`` of ``wid``, read with the node closed."""
    store = SQLiteStore(db)
    try:
        rows: list[Any] = getattr(store, what)(wid)
        return rows
    finally:
        store.close()


def _timers(db: str, wid: str) -> list[Any]:
    return _read(db, "timers", wid)


def _journal(db: str, wid: str) -> list[Any]:
    return _read(db, "journal", wid)


@pytest.mark.parametrize("how", ["call", "started"])
async def test_a_restart_keeps_the_attempts_made_and_the_backoff(
        autojump_clock: object, tmp_path: Any, how: str) -> None:
    """A node stopped (or killed) while an activity waited to retry forgot its attempts:
    the next node began again at attempt 1, at once, so max_attempts was exceeded by
    the number of crashes and the backoff under way was skipped."""
    db = str(tmp_path / "s.db")
    _ATTEMPTS.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_calls, how, id="w")
        await trio.sleep(60)  # attempt 1 failed at 0; the next is due at 600
    assert [(t.seq, t.kind) for t in _timers(db, "w")] == [
        (1, "retry 1 test_activity_retries:_down")]
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowFailed, match="service down"):
            await node.workflow("w").result()
    times = [t for _tag, t in _ATTEMPTS]
    assert len(times) == 3, times  # not 1 + 3
    assert times[1] >= 600 and times[2] - times[1] >= 600, times
    record = _journal(db, "w")[0]
    assert (record.kind, record.attempts) == ("activity", 3)
    assert _timers(db, "w") == []


@pytest.mark.parametrize("wait", [0.01, 60])
async def test_a_workflow_stopped_in_a_retry_backoff_stays_sleeping_in_the_store(
        autojump_clock: object, tmp_path: Any, wait: float) -> None:
    """The node stopped while an awaited activity waited to retry: its handle said
    ``sleeping`` but the store ``running`` (the end of the backoff, cancelled by the
    stop, queued ``running`` for the stop's last write), so ``garrison workflows``
    disagreed with the node."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_calls, "call", id="w")
        await trio.sleep(wait)  # (before and after the host records parked ones)
        assert node.workflow("w").status() == "sleeping"
    assert node.workflow("w").status() == "sleeping"
    store = SQLiteStore(db, lock=False)
    try:
        [record] = store.list_workflows()
    finally:
        store.close()
    assert record.status == "sleeping"
    async with garrison.open_node(store=db) as node:  # (a resumption: running again)
        await trio.sleep(1)
        assert node.workflow("w").status() == "sleeping"
        with pytest.raises(garrison.WorkflowFailed, match="service down"):
            await node.workflow("w").result()


async def test_a_cancel_ends_retries_resumed_after_a_restart(
        autojump_clock: object, tmp_path: Any) -> None:
    db = str(tmp_path / "s.db")
    _ATTEMPTS.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_calls, "call", id="w")
        await trio.sleep(60)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(60)
        t0 = trio.current_time()
        await node.workflow("w").cancel()
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()
        assert trio.current_time() - t0 < 1
    assert len(_ATTEMPTS) == 1
    assert [(r.seq, r.kind) for r in _journal(db, "w")] == [(1, "cancel")]
    assert _timers(db, "w") == []


async def _abandons(n: int) -> str:
    garrison.workflow.start(_down, "abandoned")
    await garrison.workflow.sleep("1m")
    return "done"


async def test_a_retry_timer_of_an_abandoned_activity_goes_with_the_end(
        autojump_clock: object, tmp_path: Any) -> None:
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_abandons, 1, id="a")
        assert await node.workflow("a").result() == "done"
    assert _timers(db, "a") == []


_FLAKY_CALLS: list[float] = []


@garrison.activity(retry=_POLICY)
async def _flaky() -> int:
    _FLAKY_CALLS.append(trio.current_time())
    if len(_FLAKY_CALLS) < 2:
        raise ConnectionError("once")
    return len(_FLAKY_CALLS)


async def _twice() -> int:
    return await _flaky() + await _flaky()


async def test_a_retried_activity_that_succeeds_drops_its_timer(
        autojump_clock: object, tmp_path: Any) -> None:
    db = str(tmp_path / "s.db")
    _FLAKY_CALLS.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_twice, id="f")
        assert await node.workflow("f").result() == 5
    assert _timers(db, "f") == []
    assert [(r.kind, r.attempts) for r in _journal(db, "f")] == [
        ("activity", 2), ("activity", 1)]


# -- what a changed code or a tool meets at a retry timer ---------------------------
_VARIANT = {"v": "a"}


@garrison.activity(retry=_POLICY)
async def _down2(tag: str) -> str:
    _ATTEMPTS.append((f"down2 {tag}", trio.current_time()))
    raise ConnectionError(f"{tag}: service down")


async def _down_plain(tag: str) -> str:
    _ATTEMPTS.append((f"plain {tag}", trio.current_time()))
    raise ConnectionError(f"{tag}: service down")


async def _changing() -> str:
    v = _VARIANT["v"]
    if v == "renamed":
        return await _down2("x")
    policy = garrison.RetryPolicy(max_attempts=2 if v == "lowered" else 3,
                                  initial_delay="10m", backoff=1.0, max_delay="1h")
    if v in ("lowered", "plain"):
        return await garrison.workflow.call(_down_plain, "x", retry=policy)
    return await _down("x")


async def _retrying(db: str, wait: float, variant: str = "a") -> None:
    _ATTEMPTS.clear()
    _VARIANT["v"] = variant
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_changing, id="w")
        await trio.sleep(wait)


async def test_another_activity_at_a_retry_timers_seq_is_a_divergence(
        autojump_clock: object, tmp_path: Any) -> None:
    """Code changed while an activity waited to retry: another activity at its seq
    took over its count and backoff (one attempt, recorded as the third)."""
    db = str(tmp_path / "s.db")
    await _retrying(db, 700)  # two attempts failed: "retry 2"
    _VARIANT["v"] = "renamed"
    _ATTEMPTS.clear()
    async with garrison.open_node(store=db) as node:
        await trio.sleep(3600)
        assert node.workflow("w").status() == "blocked"
        with pytest.raises(garrison.NonDeterminismError,
                           match="the retries of activity 'test_activity_retries:_down'"):
            await node.workflow("w").result()
    assert _ATTEMPTS == []


async def test_a_policy_lowered_below_the_attempts_made_fails_at_once(
        autojump_clock: object, tmp_path: Any) -> None:
    db = str(tmp_path / "s.db")
    await _retrying(db, 700, "plain")  # two attempts failed, of three
    _VARIANT["v"] = "lowered"  # max_attempts=2: both made already
    _ATTEMPTS.clear()
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowFailed, match="now allows 2"):
            await node.workflow("w").result()
    assert _ATTEMPTS == []
    assert [(r.kind, r.attempts) for r in _journal(db, "w")] == [("activity", 2)]
    assert _timers(db, "w") == []


async def test_an_exported_history_with_a_retry_timer_replays(
        autojump_clock: object, tmp_path: Any) -> None:
    from garrison.hosts.workflow import History

    db = str(tmp_path / "s.db")
    await _retrying(db, 60)
    store = SQLiteStore(db)
    try:
        data = History.from_store(store, "w").to_json()
    finally:
        store.close()
    assert "retry 1 test_activity_retries:_down" in str(data)
    garrison.testing.replay(data)


async def test_a_terminate_by_a_tool_drops_the_retry_timer(
        autojump_clock: object, tmp_path: Any) -> None:
    """A terminate written by a tool while no node ran left the timer: a later retry of
    the workflow waited for the old deadline and made fewer attempts."""
    from garrison import _store_tools

    db = str(tmp_path / "s.db")
    await _retrying(db, 60)
    store = SQLiteStore(db, lock=False)
    try:
        assert _store_tools.terminate(store, "w", "stop", wait=0)
    finally:
        store.close()
    assert _timers(db, "w") == []
