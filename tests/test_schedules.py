"""Schedules on virtual time: ticks, overlap policies, catch-up after a restart, DST,
pause / resume / trigger / delete, config entries, and tools writing while a node runs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import ops_app
import pytest
import schedule_app as app
import trio

import garrison
import garrison.testing
from garrison import _store_tools as tools
from garrison.config import load_config_text
from garrison.hosts.workflow._schedules import ScheduleSpec, tick_id
from garrison.hosts.workflow._waits import WallClock
from garrison.persistence import Op, Transaction, open_store

UTC = dt.UTC
#: the wall clock of every test node at virtual time 0: 2026-01-01T00:00:00Z
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC).timestamp()
HOUR = 3600.0


def wall_at(monkeypatch: pytest.MonkeyPatch, t0: float) -> None:
    """Every host's wall clock reads ``t0 + trio.current_time()`` (the same on every node
    of a test, so virtual time passes for the store across restarts)."""

    def init(self: WallClock) -> None:
        self.trio0 = trio.current_time()
        self.wall0 = t0 + self.trio0

    monkeypatch.setattr(WallClock, "__init__", init)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    wall_at(monkeypatch, T0)
    app.STARTS.clear()
    yield
    app.STARTS.clear()


def at(hours: float, t0: float = T0) -> float:
    return t0 + hours * HOUR


def ids() -> list[str]:
    return [wid for wid, _ in app.STARTS]


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------ ticks
async def test_every_ticks_at_multiples_of_the_interval_and_starts_one_workflow_each(
        autojump_clock: Any) -> None:
    async with garrison.open_node() as node:
        await trio.sleep(0.5 * HOUR)
        handle = await node.schedule("hourly", app.job, cron=None, every="1h")
        assert handle.info().next_tick == dt.datetime.fromtimestamp(at(1), UTC)
        await trio.sleep(3 * HOUR)  # ticks at 1h, 2h, 3h
    assert [(tick_id("hourly", at(h)), at(h)) for h in (1, 2, 3)] == app.STARTS
    assert ids()[0] == "hourly@2026-01-01T01:00:00Z"


async def test_cron_is_read_in_the_schedules_timezone(autojump_clock: Any) -> None:
    riga = ZoneInfo("Europe/Riga")  # UTC+2 in winter
    async with garrison.open_node() as node:
        await node.schedule("nightly", app.job, cron="0 3 * * *", timezone="Europe/Riga")
        await trio.sleep(48 * HOUR)
        record = node.schedules()[0]
        assert (record.schedule_id, record.cron, record.timezone, record.source) == (
            "nightly", "0 3 * * *", "Europe/Riga", "api")
    starts = [dt.datetime.fromtimestamp(t, riga) for _, t in app.STARTS]
    assert [(s.day, s.hour, s.minute) for s in starts] == [(1, 3, 0), (2, 3, 0)]
    assert ids() == ["nightly@2026-01-01T01:00:00Z", "nightly@2026-01-02T01:00:00Z"]


async def test_a_tick_starts_its_workflow_with_the_input(autojump_clock: Any) -> None:
    async with garrison.open_node() as node:
        await node.schedule("s", app.job, 30.0, every="1h")
        await trio.sleep(HOUR + 31)
        results = [await node.workflow(wid).result() for wid in ids()]
    assert results == ["s@2026-01-01T01:00:00Z"]


async def _sums(points: dict[int, float]) -> list[str]:
    return [f"{type(k).__name__} {k}: {v}" for k, v in sorted(points.items())]


async def test_a_tick_starts_its_workflow_with_a_dict_declared_with_int_keys(
        autojump_clock: Any) -> None:
    """An argument its workflow declares ``dict[int, float]`` is stored with its keys as
    text (as start_workflow stores it: it was refused, at node.schedule), and each tick's
    workflow gets them as ints again."""
    async with garrison.open_node() as node:
        await node.schedule("s", _sums, {2: 0.5, 1: 1.0}, every="1h")
        assert node.schedules()[0].input == [{"2": 0.5, "1": 1.0}]
        await trio.sleep(HOUR + 1)
        result = await node.workflow("s@2026-01-01T01:00:00Z").result()
    assert result == ["int 1: 1.0", "int 2: 0.5"]


async def test_a_config_schedule_gives_a_dict_declared_with_int_keys(
        tmp_path: Path, autojump_clock: Any) -> None:
    """The same from a config entry (``input: [{1: 1.0}]``): its check took the input
    by the workflow's annotation, but the node stored the schedule without it, and
    refused it as it synced the config."""
    config = load_config_text("""
version: "1.0"
namespace: app
entries:
  - {name: sums, kind: workflow.py, source: "test_schedules:_sums"}
  - {name: hourly, kind: workflow.schedule, workflow: app:sums, every: 1h,
     input: [{2: 0.5, 1: 1.0}]}
""")
    async with garrison.open_node(config=config, store=str(tmp_path / "s.db")) as node:
        assert node.schedules()[0].input == [{"2": 0.5, "1": 1.0}]
        await trio.sleep(HOUR + 1)
        result = await node.workflow("app:hourly@2026-01-01T01:00:00Z").result()
    assert result == ["int 1: 1.0", "int 2: 0.5"]


# ------------------------------------------------------------------ overlap
async def _overlap(policy: str) -> list[tuple[str, float]]:
    """Hourly ticks of a job that runs 90 minutes, for 5 hours."""
    async with garrison.open_node() as node:
        await node.schedule("s", app.job, 1.5 * HOUR, every="1h", overlap=policy)
        await trio.sleep(5 * HOUR + 1)
        assert node.stats()["schedules"]["workflows"]["schedules"] == 1
    return app.STARTS


async def test_overlap_skip_drops_a_tick_while_the_last_run_is_unfinished(
        autojump_clock: Any) -> None:
    starts = await _overlap("skip")
    # 1h runs until 2h30: 2h skipped; 3h runs until 4h30: 4h skipped; 5h runs
    assert starts == [(tick_id("s", at(h)), at(h)) for h in (1, 3, 5)]


async def test_overlap_buffer_one_starts_the_tick_when_the_last_run_ends(
        autojump_clock: Any) -> None:
    starts = await _overlap("buffer_one")
    # 1h..2h30; tick 2h waits and starts at 2h30 (until 4h); tick 3h waits and starts
    # at 4h (until 5h30); tick 4h is dropped (one waits at most); tick 5h waits
    assert starts == [(tick_id("s", at(1)), at(1)), (tick_id("s", at(2)), at(2.5)),
                      (tick_id("s", at(3)), at(4))]


async def test_overlap_allow_all_starts_every_tick(autojump_clock: Any) -> None:
    starts = await _overlap("allow_all")
    assert starts == [(tick_id("s", at(h)), at(h)) for h in (1, 2, 3, 4, 5)]


@pytest.mark.parametrize("then", ["allow_all", "skip"])
async def test_a_tick_buffered_under_buffer_one_does_not_outlive_a_change_of_overlap(
        autojump_clock: Any, then: str) -> None:
    """The tick buffered under ``buffer_one`` was kept when the overlap changed: under
    ``allow_all`` it held every later tick back ("still running") while the last run
    ran, under ``skip`` it started late once that run ended. The policy in force decides
    it now."""
    async with garrison.open_node() as node:
        await node.schedule("s", app.job, 5.5 * HOUR, every="1h", overlap="buffer_one")
        await trio.sleep(2.5 * HOUR)  # the 1h run runs until 6h30; the 2h tick waits
        assert node.schedules()[0].buffered_tick is not None
        await node.schedule("s", app.job, 5.5 * HOUR, every="1h", overlap=then)
        await trio.sleep(4.75 * HOUR)  # until 7h15
    if then == "allow_all":  # (the 2h tick: a later one started instead)
        want = [(tick_id("s", at(h)), at(h)) for h in (1, 3, 4, 5, 6, 7)]
        assert want == app.STARTS
    else:  # nothing while the 1h run runs; the 7h tick once it ended
        want = [(tick_id("s", at(1)), at(1)), (tick_id("s", at(7)), at(7))]
        assert want == app.STARTS


@pytest.mark.parametrize("window", ["1h", "3h"])
async def test_buffer_one_says_skipped_only_of_the_tick_it_passes_over(
        autojump_clock: Any, caplog: pytest.LogCaptureFixture, window: str) -> None:
    """The 1h run runs until 3h36; the 2h tick waits. The 3h tick was logged and counted
    skipped at 3h, yet with a 1h window the 2h tick is stale at 3h36, and the 3h tick
    took its place and started (helper-287). A tick that comes while another waits is
    said skipped once it is passed over for good: here when the 2h tick starts (3h
    window), never when it takes the stale tick's place (1h window)."""
    caplog.set_level(logging.INFO, logger="garrison.schedules")
    async with garrison.open_node() as node:
        await node.schedule("s", app.job, 2.6 * HOUR, every="1h", overlap="buffer_one",
                            catchup_window=window)
        await trio.sleep(3.5 * HOUR)
        assert node.stats()["schedules"]["workflows"]["skipped"] == 0
        await trio.sleep(0.2 * HOUR)  # the 1h run ends at 3h36
        stats = node.stats()["schedules"]["workflows"]
    said = [r.getMessage() for r in caplog.records if r.name == "garrison.schedules"]
    if window == "1h":
        assert [tick_id("s", at(1)), tick_id("s", at(3))] == ids()
        assert (stats["skipped"], stats["missed"]) == (0, 1)
        assert said == [
            "schedule s dropped its buffered tick s@2026-01-01T02:00:00Z: older than its "
            "catchup_window (3600s); its tick s@2026-01-01T03:00:00Z, which came while it "
            "waited, takes its place"]
    else:
        assert [tick_id("s", at(1)), tick_id("s", at(2))] == ids()
        assert (stats["skipped"], stats["missed"]) == (1, 0)
        assert said == [
            "schedule s skipped its tick s@2026-01-01T03:00:00Z: its tick "
            "s@2026-01-01T02:00:00Z waited for workflow s@2026-01-01T01:00:00Z to finish "
            "(overlap 'buffer_one': one tick waits at most)"]


async def test_buffered_tick_survives_a_restart(store_spec: str, autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, 1.5 * HOUR, every="1h", overlap="buffer_one")
        await trio.sleep(2.2 * HOUR)  # 1h running, 2h buffered
        assert node.schedules()[0].buffered_tick == dt.datetime.fromtimestamp(at(2), UTC)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(0.5 * HOUR)  # the 1h run resumes and ends at 2h30
        assert node.schedules()[0].buffered_tick is None
    assert ids() == [tick_id("s", at(1)), tick_id("s", at(2))]
    assert app.STARTS[1][1] == at(2.5)


# ------------------------------------------------------------------ restarts
async def test_a_missed_tick_inside_the_catchup_window_runs_once_after_a_restart(
        store_spec: str, autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, every="1h", catchup_window="1h")
        await trio.sleep(1.5 * HOUR)
    assert ids() == [tick_id("s", at(1))]
    await trio.sleep(4 * HOUR)  # no node over the ticks at 2h, 3h, 4h, 5h
    async with garrison.open_node(store=db) as node:
        await trio.sleep(1)
        # only the latest missed tick, once, at once
        assert app.STARTS[1:] == [(tick_id("s", at(5)), at(5.5))]
        await trio.sleep(HOUR)
        record = node.schedules()[0]
        assert record.last_tick == dt.datetime.fromtimestamp(at(6), UTC)
    assert ids() == [tick_id("s", at(h)) for h in (1, 5, 6)]


async def test_a_missed_tick_outside_the_catchup_window_is_skipped(
        tmp_path: Path, autojump_clock: Any) -> None:
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, every="1h", catchup_window="10m")
    await trio.sleep(1.5 * HOUR)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(0.6 * HOUR)
        assert node.stats()["schedules"]["workflows"]["missed"] == 1
    assert ids() == [tick_id("s", at(2))]


async def test_ticks_missed_outside_the_window_are_logged_by_the_first_and_latest(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The log said "missed its ticks up to <the first missed tick>": it names the
    first and the latest now (one tick: that tick). ``missed`` counts the record that
    skipped them, once (as the ticks missed after an interrupted tick count once)."""
    caplog.set_level(logging.INFO, logger="garrison.schedules")
    db = str(tmp_path / "wf.db")

    def missed() -> list[str]:
        return [r.getMessage() for r in caplog.records if " missed its " in r.getMessage()]

    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, every="1h", catchup_window="10m")
    await trio.sleep(3.5 * HOUR)  # no node over the 1h, 2h and 3h ticks
    async with garrison.open_node(store=db) as node:
        await trio.sleep(1)
        assert node.stats()["schedules"]["workflows"]["missed"] == 1
        assert node.schedules()[0].next_tick == dt.datetime.fromtimestamp(at(4), UTC)
    assert missed() == ["schedule s missed its ticks s@2026-01-01T01:00:00Z to "
                        "s@2026-01-01T03:00:00Z: older than its catchup_window (600s)"]
    await trio.sleep(HOUR)  # down over the 4h tick only (at 4h30)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(1)
    assert missed()[1:] == ["schedule s missed its tick s@2026-01-01T04:00:00Z: older "
                            "than its catchup_window (600s)"]
    assert app.STARTS == []


async def _down(db: str, policy: str, seconds: float, *, up: float, down_until: float,
                then: float, window: str = "1h") -> list[tuple[str, float]]:
    """An hourly schedule of a job running ``seconds``: a node runs until ``up`` hours,
    none until ``down_until``, then a node again for ``then`` hours."""
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, seconds, every="1h", overlap=policy,
                            catchup_window=window)
        await trio.sleep(up * HOUR)
    await trio.sleep((down_until - up) * HOUR)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(then * HOUR)
        record = node.schedules()[0]
        if record.buffered_tick is not None:  # never one outside the window
            assert at(down_until + then) - record.buffered_tick.timestamp() <= HOUR
    assert len(set(ids())) == len(ids())  # never a tick twice
    return app.STARTS


@pytest.mark.parametrize("policy", ["skip", "buffer_one", "allow_all"])
async def test_after_downtime_each_policy_runs_the_latest_tick_inside_the_window_once(
        store_spec: str, policy: str, autojump_clock: Any) -> None:
    # the 1h run ended at 1h30; no node from 1h42 to 5h30: ticks 2h..5h pass
    starts = await _down(store_spec, policy, 0.5 * HOUR, up=1.7, down_until=5.5, then=0.2)
    assert starts == [(tick_id("s", at(1)), at(1)), (tick_id("s", at(5)), at(5.5))]


async def test_buffer_one_after_downtime_never_starts_a_stale_buffered_tick(
        store_spec: str, autojump_clock: Any) -> None:
    """The 2h tick waited behind the 1h run (until 2h30) when the node stopped at 2h12;
    at 5h30 it is 3h30 old: it is dropped, and the latest tick inside the window (5h)
    waits for the resumed 1h run instead, which ends at once."""
    starts = await _down(store_spec, "buffer_one", 1.5 * HOUR, up=2.2, down_until=5.5,
                         then=0.1)
    assert starts == [(tick_id("s", at(1)), at(1)), (tick_id("s", at(5)), at(5.5))]


async def test_buffer_one_keeps_a_buffered_tick_that_is_still_inside_the_window(
        store_spec: str, autojump_clock: Any) -> None:
    """With a 3h window the 2h tick is 2h12 old at 4h12: it starts when the 1h run ends
    (at once), and the ticks that passed while it waited (3h, 4h) are skipped."""
    starts = await _down(store_spec, "buffer_one", 1.5 * HOUR, up=2.2, down_until=4.2,
                         then=0.1, window="3h")
    assert starts == [(tick_id("s", at(1)), at(1)), (tick_id("s", at(2)), at(4.2))]


@pytest.mark.parametrize(("policy", "expected"), [
    # the 1h run is still running (until 10h30): every tick is skipped until 11h
    ("skip", [1, 11]),
    # the waiting tick rolls forward: 2h is stale at 5h30, then 5h waits (dropped at
    # 7h), 7h (dropped at 9h), 9h; at 10h30 9h is stale: 10h starts
    ("buffer_one", [1, 10]),
    # every tick runs; after the downtime the latest inside the window (5h) once
    ("allow_all", [1, 2, 5, 6, 7, 8, 9, 10, 11]),
])
async def test_after_downtime_with_the_last_run_still_running(
        store_spec: str, policy: str, expected: list[int], autojump_clock: Any) -> None:
    starts = await _down(store_spec, policy, 9.5 * HOUR, up=2.2, down_until=5.5, then=5.6)
    # each starts at its tick, but the one caught up after the downtime (5h, at 5h30)
    # and buffer_one's (10h, when the 1h run ends at 10h30)
    late = {"skip": {}, "buffer_one": {10: 10.5}, "allow_all": {5: 5.5}}[policy]
    assert starts == [(tick_id("s", at(h)), at(late.get(h, h))) for h in expected]


async def test_a_tick_is_never_run_twice_across_restarts(store_spec: str,
                                                         autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, every="1h")
        await trio.sleep(1.1 * HOUR)
    # as if the node died after starting the 1h workflow but before recording the tick
    with open_store(db) as store:
        store.write(Transaction().update_schedule("s", next_tick=at(1), last_tick=None,
                                                  last_workflow=None))
    async with garrison.open_node(store=db) as node:
        await trio.sleep(0.1)
        assert [w.workflow_id for w in node.workflows()] == [tick_id("s", at(1))]
        assert node.schedules()[0].next_tick == dt.datetime.fromtimestamp(at(2), UTC)
        # the start found the workflow: it is not counted as started
        assert node.stats()["schedules"]["workflows"]["started"] == 0
    assert ids() == [tick_id("s", at(1))]


async def test_a_recorded_tick_whose_workflow_never_started_starts_after_a_restart(
        store_spec: str, autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, every="1h")
        await trio.sleep(0.9 * HOUR)
    # as if the node died after recording the 1h tick, before starting its workflow
    with open_store(db) as store:
        store.write(Transaction().update_schedule(
            "s", next_tick=at(2), last_tick=at(1), last_workflow=tick_id("s", at(1)),
            time=at(1)))
    await trio.sleep(0.2 * HOUR)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(0.1)
        assert [w.workflow_id for w in node.workflows()] == [tick_id("s", at(1))]
    assert ids() == [tick_id("s", at(1))]


async def test_a_tick_whose_start_was_refused_is_not_taken_for_an_interrupted_one(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code that takes other arguments was deployed: the 2h and 3h ticks' starts were
    refused (logged), and the schedule kept the 3h tick's workflow, which never existed,
    as its last run. The next start took it for a tick a stop interrupted: it ran 3h
    late as the one catch-up run, in place of the latest tick (helper-287). A refused
    tick is done with: the last run stays the one before it, and the catch-up after the
    downtime (2h30, inside the 3h window) is the latest tick, 5h."""
    db = str(tmp_path / "wf.db")

    async def job(n: int, m: int) -> str:  # the deployed code for a while
        return "never"

    job.__module__, job.__qualname__ = app.job.__module__, app.job.__qualname__
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, every="1h", catchup_window="3h")
        await trio.sleep(1.5 * HOUR)  # the 1h tick runs
        with monkeypatch.context() as patch:
            patch.setattr(app, "job", job)
            await trio.sleep(2 * HOUR)  # the 2h and 3h ticks are refused
            assert node.schedules()[0].last_workflow == tick_id("s", at(1))
    await trio.sleep(2 * HOUR)  # the code as it was; no node over the 4h and 5h ticks
    async with garrison.open_node(store=db) as node:
        await trio.sleep(0.1 * HOUR)
    assert [(tick_id("s", at(1)), at(1)), (tick_id("s", at(5)), at(5.5))] == app.STARTS


def interrupted(db: str, tick: float, next_tick: float) -> None:
    """As if the node died after recording ``tick`` of schedule ``s`` (its workflow as
    ``last_workflow``), before starting its workflow."""
    with open_store(db) as store:
        store.write(Transaction().update_schedule(
            "s", next_tick=next_tick, last_tick=tick, last_workflow=tick_id("s", tick),
            time=tick))


@pytest.mark.parametrize("policy", ["skip", "buffer_one", "allow_all"])
async def test_an_interrupted_tick_is_the_one_catch_up_run_after_downtime(
        store_spec: str, policy: str, autojump_clock: Any) -> None:
    """The node recorded the 1h tick and stopped before starting its workflow; no node
    runs until 3h30 (the 2h and 3h ticks pass). The recorded tick is inside the 3h
    window: it is the one catch-up run, and the ticks missed since start nothing
    (README: after downtime at most one tick runs, whatever the policy)."""
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, every="1h", overlap=policy, catchup_window="3h")
        await trio.sleep(0.9 * HOUR)
    interrupted(db, at(1), at(2))
    await trio.sleep(2.6 * HOUR)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(0.2 * HOUR)
        record = node.schedules()[0]
        assert record.next_tick == dt.datetime.fromtimestamp(at(4), UTC)
        assert node.stats()["schedules"]["workflows"]["missed"] == 1  # 2h..3h
        await trio.sleep(0.5 * HOUR)  # the 4h tick runs as usual
        stats = node.stats()["schedules"]["workflows"]
        assert (stats["started"], stats["skipped"], stats["missed"]) == (2, 0, 1)
    assert [(tick_id("s", at(1)), at(3.5)), (tick_id("s", at(4)), at(4))] == app.STARTS


async def test_an_interrupted_tick_outside_the_window_is_skipped_with_one_warning(
        store_spec: str, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The node recorded the 1h tick and stopped before starting its workflow; it comes
    back at 3h36 with a 30m window: the tick is 2h36 old. Its missing workflow cannot be
    told from one deleted since, so it does not start, but one warning names the
    schedule, the tick and why; the store forgets it, so the next restart (which the
    missed ticks' write stamped recent) neither starts it nor warns again."""

    caplog.set_level(logging.INFO, logger="garrison.schedules")
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, every="1h", catchup_window="30m")
        await trio.sleep(0.9 * HOUR)
    interrupted(db, at(1), at(2))
    await trio.sleep(2.7 * HOUR)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "garrison.schedules" and r.levelno == logging.WARNING]

    async with garrison.open_node(store=db) as node:
        await trio.sleep(0.1 * HOUR)
        assert node.schedules()[0].last_workflow is None
        # the interrupted tick, and the 2h..3h ticks (3h is 36m old)
        assert node.stats()["schedules"]["workflows"]["missed"] == 2
    assert len(warnings()) == 1, warnings()
    assert warnings()[0] == (
        "schedule s skipped its tick s@2026-01-01T01:00:00Z: it was recorded but its "
        "workflow does not exist (the node stopped before starting it, or it was deleted "
        "since) and the tick is 9360s old, older than its catchup_window (1800s)")
    async with garrison.open_node(store=db) as node:
        await trio.sleep(0.4 * HOUR)  # to 4h12: the 4h tick runs as usual
    assert len(warnings()) == 1, warnings()
    assert ids() == [tick_id("s", at(4))]


async def test_a_deleted_triggered_workflow_is_not_taken_for_an_interrupted_tick(
        store_spec: str, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A trigger's workflow is created before the schedule records it: one missing after
    a restart was deleted, never interrupted. It is neither started again nor warned
    about, even inside the catch-up window (only a tick's workflow is taken for one
    whose start a stop interrupted)."""

    async with garrison.open_node(store=store_spec) as node:
        handle = await node.schedule("s", app.job, cron="0 3 1 6 *")  # no tick here
        pid = await handle.trigger()
        await node.workflow(pid.id).result()
        node.hosts["workflows"].store.write(Transaction().delete_workflow(pid.id))
    app.STARTS.clear()
    async with garrison.open_node(store=store_spec) as node:
        await trio.sleep(1)
        assert node.schedules()[0].last_workflow == pid.id
        assert node.stats()["schedules"]["workflows"]["missed"] == 0
    assert ids() == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("way", ["handle", "tool"])
async def test_a_trigger_while_a_tick_is_being_started_does_not_lose_the_tick(
        store_spec: str, way: str, monkeypatch: pytest.MonkeyPatch,
        autojump_clock: Any) -> None:
    """The 1h tick is recorded, its workflow not created yet (a slow start), when a
    trigger comes (from the node or from ``garrison schedules trigger``); then the node
    is killed. The trigger overwrote ``last_workflow`` with its own id, so the restart
    never found the interrupted tick (only a tick's id is taken for one): the 1h run was
    lost for good, nothing logged or counted. It stays the last run, and starts."""
    from garrison.hosts.workflow._scheduler import Scheduler

    async def never(self: Scheduler, record: Any, wid: str) -> None:
        await trio.sleep_forever()  # the tick's start, under way until the node dies

    db = store_spec
    monkeypatch.setattr(Scheduler, "_start", never)
    async with garrison.open_node(store=db) as node:
        handle = await node.schedule("s", app.job, every="1h")
        await trio.sleep(HOUR + 60)  # the 1h tick is recorded, its start hangs
        assert handle.info().last_workflow == tick_id("s", at(1))
        if way == "handle":
            triggered = (await handle.trigger()).id
        else:
            triggered = tools.trigger_schedule(node.hosts["workflows"].store, "s")
        await node.workflow(triggered).result()
        assert handle.info().last_workflow == tick_id("s", at(1))
    monkeypatch.undo()
    wall_at(monkeypatch, T0)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(60)
        assert node.schedules()[0].last_workflow == tick_id("s", at(1))
    assert ids() == [triggered, tick_id("s", at(1))]


async def test_a_tick_acting_on_a_last_run_changed_elsewhere_reads_the_schedule_again(
        store_spec: str, autojump_clock: Any) -> None:
    """Another node of a cluster triggered the schedule: its run is the schedule's
    ``last_workflow`` in the store, and no wakeup told this node, whose copy still names
    the 1h run, ended. Its 2h tick (``skip``) saw that ended run and started beside the
    triggered one: the tick's write is a compare-and-set on ``last_workflow`` too, so it
    reads the schedule again and skips (the other node's change is written here to the
    store directly, as that node's trigger does)."""
    async with garrison.open_node(store=store_spec) as node:
        handle = await node.schedule("s", app.waits_for_go, every="1h")
        await trio.sleep(1.5 * HOUR)
        first = tick_id("s", at(1))
        await node.workflow(first).signal("go", first)
        await node.workflow(first).result()
        other = await node.start_workflow(app.waits_for_go, id="s@elsewhere")
        store = node.hosts["workflows"].store
        store.write(Transaction().update_schedule(
            "s", last_workflow="s@elsewhere", expect_last_workflow=first, time=at(1.6)))
        await trio.sleep(HOUR)  # to 2h30
        assert store.get_workflow(tick_id("s", at(2))) is None
        assert node.stats()["schedules"]["workflows"]["skipped"] == 1
        assert handle.info().last_workflow == "s@elsewhere"
        await node.workflow(other.id).signal("go", "x")


async def test_a_trigger_does_not_hide_a_running_tick_from_the_overlap_policy(
        store_spec: str, autojump_clock: Any) -> None:
    """The 1h run is still running at 1h30 when a trigger's run starts and ends. The
    trigger took the place of the 1h run as ``last_workflow``, so the 2h tick (``skip``)
    saw the last run ended and started beside the 1h run. It is skipped; a trigger once
    the last run ended is the last run (the 3h tick is skipped behind it)."""
    async with garrison.open_node(store=store_spec) as node:
        handle = await node.schedule("s", app.waits_for_go, every="1h")

        async def finish(wid: str) -> None:
            await node.workflow(wid).signal("go", wid)
            assert await node.workflow(wid).result() == wid

        await trio.sleep(1.5 * HOUR)
        await finish((await handle.trigger()).id)
        assert handle.info().last_workflow == tick_id("s", at(1))
        await trio.sleep(HOUR)  # to 2h30
        assert node.stats()["schedules"]["workflows"]["skipped"] == 1
        assert node.hosts["workflows"].store.get_workflow(tick_id("s", at(2))) is None
        await finish(tick_id("s", at(1)))
        longer = (await handle.trigger()).id
        assert handle.info().last_workflow == longer
        await trio.sleep(HOUR)  # to 3h30
        assert node.stats()["schedules"]["workflows"]["skipped"] == 2
        await finish(longer)
        started = sorted(w.workflow_id for w in node.workflows())
    assert [wid for wid in started if "." not in wid] == [tick_id("s", at(1))]


async def test_an_update_racing_a_tick_does_not_act_on_the_tick_again(
        store_spec: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    """node.schedule(...) read the schedule before the 1h tick was recorded and wrote
    after it (an update under way while the tick fires): writing back the next tick it
    read (1h) made the scheduler act on the 1h tick again (its workflow exists, so
    nothing ran twice, but the counters moved: here a second, skipped, 1h tick)."""
    async with garrison.open_node(store=store_spec) as node:
        await node.schedule("s", app.job, 0.5 * HOUR, every="1h")
        store = node.hosts["workflows"].store
        before = [store.get_schedule("s")]  # next tick 1h
        await trio.sleep(HOUR + 1)
        assert ids() == [tick_id("s", at(1))]
        real = store.get_schedule
        monkeypatch.setattr(store, "get_schedule",
                            lambda sid: before.pop() if before else real(sid))
        await node.schedule("s", app.job, 60.0, every="1h")  # the same timing
        await trio.sleep(1)
        record = node.schedules()[0]
        assert (record.input, record.next_tick) == (
            [60.0], dt.datetime.fromtimestamp(at(2), UTC))
        stats = node.stats()["schedules"]["workflows"]
        assert (stats["started"], stats["skipped"], stats["missed"]) == (1, 0, 0)
        await trio.sleep(HOUR)
        assert node.stats()["schedules"]["workflows"]["started"] == 2
    assert ids() == [tick_id("s", at(1)), tick_id("s", at(2))]


def _resumes(tx: Transaction) -> bool:
    """``tx`` resumes a schedule (sets ``paused`` to 0)."""
    return any(op is Op.UPDATE_SCHEDULE and ("paused", 0) in params[2]
               for op, params in tx.ops)


def _records_a_tick(tx: Transaction) -> bool:
    """``tx`` records a tick (a compare-and-set on the next tick)."""
    return any(op is Op.UPDATE_SCHEDULE and any(c == "next_tick" for c, _ in params[3])
               for op, params in tx.ops)


def _before_commit(monkeypatch: pytest.MonkeyPatch, store: Any, of: Any,
                   racing: Any) -> None:
    """The first commit to ``store`` of a transaction ``tx`` for which ``of(tx)`` is
    true awaits ``racing()`` first (a write that commits between that writer's read
    and its commit); every other commit is left alone."""
    real = store.commit
    pending = [racing]

    async def commit(tx: Transaction) -> Any:
        if pending and of(tx):
            await pending.pop()()
        return await real(tx)

    monkeypatch.setattr(store, "commit", commit)


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, UTC)


async def test_a_resume_racing_an_update_of_the_timing_keeps_the_new_timing(
        store_spec: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    """A resume read the paused schedule (every 1h) at 0h30 and computed its next tick
    from that timing (1h); before it committed, ``node.schedule`` changed the timing to
    every 2h (its next tick 2h; the pause kept). The resume wrote the 1h tick over it:
    a tick the schedule no longer has ran at 1h. The resume is a compare-and-set on
    what it read (paused, the timing): it reads the schedule again and resumes it on
    the new timing."""
    async with garrison.open_node(store=store_spec) as node:
        handle = await node.schedule("s", app.job, every="1h")
        await handle.pause()
        await trio.sleep(0.5 * HOUR)
        _before_commit(monkeypatch, node.hosts["workflows"].store, _resumes,
                       partial(node.schedule, "s", app.job, every="2h"))
        await handle.resume()
        record = handle.info()
        assert (record.paused, record.every, record.next_tick) == (False, 2 * HOUR,
                                                                   _utc(at(2)))
        await trio.sleep(2 * HOUR)  # to 2h30
    assert ids() == [tick_id("s", at(2))]


def test_a_tool_s_resume_racing_an_update_of_the_timing_keeps_the_new_timing(
        store_spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same from ``garrison schedules resume``: it read the paused schedule (every
    1h) as a node's update to every 2h committed, and wrote the 1h tick over the new
    timing's. It reads the schedule again and resumes it on the new timing."""
    def put(every: float, next_tick: float, time: float) -> Transaction:
        return Transaction().put_schedule("s", host="workflows", workflow="schedule_app:job",
                                          every=every, catchup_window=HOUR,
                                          next_tick=next_tick, time=time)

    with open_store(store_spec) as store:
        store.write(put(HOUR, at(1), at(0)))
        store.write(Transaction().update_schedule("s", paused=True, time=at(0)))
        real = store.get_schedule
        racing = [put(2 * HOUR, at(2), at(0.5))]

        def get_schedule(schedule_id: str) -> Any:
            record = real(schedule_id)
            if racing:  # committed after the resume read the schedule
                store.write(racing.pop())
            return record

        monkeypatch.setattr(store, "get_schedule", get_schedule)
        tools.resume_schedule(store, "s", now=at(0.5))
        record = real("s")
        assert (record.paused, record.every, record.next_tick) == (False, 2 * HOUR,
                                                                   _utc(at(2)))


async def test_a_resume_racing_another_resume_does_not_bring_back_a_tick_acted_on_since(
        store_spec: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    """Two resumes at once (two operators; a node and ``garrison schedules resume``):
    one read the schedule paused at 0h30 and computed its next tick (1h); before it
    committed the other resumed it, and the 1h tick started its 90-minute run. The
    first then wrote the 1h tick back as the next one, and the scheduler acted on it
    again (here skipped behind its own run, and counted). The resume is a
    compare-and-set on the schedule still paused: it finds it resumed, and leaves it."""
    async with garrison.open_node(store=store_spec) as node:
        handle = await node.schedule("s", app.job, 1.5 * HOUR, every="1h")
        await handle.pause()
        await trio.sleep(0.5 * HOUR)

        async def other() -> None:  # another resume, then the 1h tick
            await handle.resume()
            await trio.sleep(0.75 * HOUR)  # to 1h15

        _before_commit(monkeypatch, node.hosts["workflows"].store, _resumes, other)
        await handle.resume()
        record = handle.info()
        assert (record.next_tick, record.last_workflow) == (_utc(at(2)),
                                                            tick_id("s", at(1)))
        await trio.sleep(60)
        stats = node.stats()["schedules"]["workflows"]
        assert (stats["started"], stats["skipped"], stats["missed"]) == (1, 0, 0)


async def test_a_tick_racing_an_update_of_the_timing_takes_the_new_timing(
        store_spec: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    """Another node of a cluster changed the schedule from every 1h to every 30m as the
    1h tick was acted on here: its update, computed just before 1h, has the same next
    tick (1h), and committed between this node's read of the schedule and its record
    of the tick. The tick's compare-and-set (next tick, last run) passed, and it wrote
    the next tick of the old timing (2h): the 1h30 tick never ran. The compare-and-set
    is on the timing too: the scheduler reads the schedule again and acts on the 1h
    tick with the new timing. (The other node's update is written here to the store
    directly, as that node's commit does.)"""
    async with garrison.open_node(store=store_spec) as node:
        await node.schedule("s", app.job, every="1h")
        store = node.hosts["workflows"].store
        stored = store.get_schedule("s")

        async def update() -> None:
            store.write(Transaction().put_schedule(
                "s", host=stored.host, workflow=stored.workflow, every=0.5 * HOUR,
                catchup_window=stored.catchup_window, next_tick=at(1), time=at(0.99)))
            await trio.lowlevel.checkpoint()

        _before_commit(monkeypatch, store, _records_a_tick, update)
        await trio.sleep(2.25 * HOUR)
        assert node.schedules()[0].every == 0.5 * HOUR
    assert ids() == [tick_id("s", at(h)) for h in (1, 1.5, 2)]


def test_store_schedule_compare_and_set_on_the_pause_and_the_timing(store_spec: str) -> None:
    """``update_schedule``'s ``expect_paused`` and ``expect_timing`` (``cron``,
    ``every``, ``timezone``; NULL-safe), alone and with the tick's compares."""
    with open_store(store_spec) as store:
        def put(**kw: Any) -> None:
            store.write(Transaction().put_schedule(
                "s", host="workflows", workflow="m:f", catchup_window=60.0, **kw))

        def resume(**kw: Any) -> list[Any]:
            return store.write(Transaction().update_schedule(
                "s", paused=False, next_tick=at(4), **kw))

        put(cron="0 3 * * *", timezone="Europe/Riga", next_tick=at(3))
        timing = ("0 3 * * *", None, "Europe/Riga")
        assert resume(expect_paused=True, expect_timing=timing) == [False]  # not paused
        store.write(Transaction().update_schedule("s", paused=True))
        for other in (("0 3 * * *", None, "UTC"), ("0 4 * * *", None, "Europe/Riga"),
                      (None, 3600.0, "Europe/Riga")):
            assert resume(expect_paused=True, expect_timing=other) == [False], other
        assert store.get_schedule("s").paused
        assert resume(expect_paused=True, expect_timing=timing) == [True]
        record = store.get_schedule("s")
        assert (record.paused, record.next_tick) == (False, _utc(at(4)))
        put(every=3600.0, next_tick=at(5))
        assert store.write(Transaction().update_schedule(
            "s", next_tick=at(6), expect_next_tick=at(5),
            expect_timing=(None, 7200.0, "UTC"))) == [False]
        assert store.write(Transaction().update_schedule(
            "s", next_tick=at(6), expect_next_tick=at(5), expect_last_workflow=None,
            expect_timing=(None, 3600.0, "UTC"))) == [True]
        assert store.write(Transaction().update_schedule(
            "s", paused=True, expect_paused=False)) == [True]
        assert store.get_schedule("s").next_tick == _utc(at(6))


async def test_a_node_joining_a_cluster_leaves_a_live_node_s_ticks_alone(
        postgres_stores_url: str, autojump_clock: Any) -> None:
    """Node b recorded the 1h tick and is still starting its workflow (a slow start)
    when node a joins the cluster at 2h05. The missing workflow is not a tick a stop
    interrupted: a took it for one, as its one catch-up run, and moved the due 2h tick
    past now (counted missed), so the 2h run never happened although no node was down.
    With another node alive, a still starts the recorded tick's workflow (idempotent)
    but leaves the due ticks to the nodes' compare-and-set."""
    import uuid

    url = f"{postgres_stores_url}?schema=sched_{uuid.uuid4().hex[:8]}"
    async with garrison.open_node(store=url, name="b") as b:
        scheduler = b.hosts["workflows"].scheduler
        real = scheduler._start
        gate = trio.Event()

        async def slow(record: Any, wid: str) -> Any:
            if wid == tick_id("s", at(1)):
                await gate.wait()
            return await real(record, wid)

        scheduler._start = slow  # type: ignore[method-assign]
        await b.schedule("s", app.job, every="1h", overlap="allow_all", catchup_window="3h")
        await trio.sleep(2 * HOUR + 300)  # b's loop waits for that start
        assert ids() == []
        async with garrison.open_node(store=url, name="a") as a:
            await trio.sleep(60)
            gate.set()
            await trio.sleep(HOUR)  # to 3h06
            missed = (a.stats()["schedules"]["workflows"]["missed"],
                      b.stats()["schedules"]["workflows"]["missed"])
    assert ids() == [tick_id("s", at(h)) for h in (1, 2, 3)]
    assert missed == (0, 0)


async def test_a_second_node_acting_on_the_same_tick_starts_nothing(
        autojump_clock: Any) -> None:
    """Two schedulers acting on one tick, as two nodes of a cluster would: the one whose
    view is stale loses the compare-and-set on the next tick and starts nothing (here:
    it would have started the 2h tick that the other buffered behind the 1h run)."""
    async with garrison.open_node() as node:
        await node.schedule("s", app.job, 1.5 * HOUR, every="1h", overlap="buffer_one")
        scheduler = node.hosts["workflows"].scheduler
        stale = scheduler.rows["s"]  # next tick 1h, no run yet
        await trio.sleep(2 * HOUR + 1)  # 1h runs until 2h30; 2h is buffered
        scheduler.rows["s"] = stale
        await scheduler._fire([stale], at(2) + 1)
        assert ids() == [tick_id("s", at(1))]
        assert scheduler.rows["s"].buffered_tick == dt.datetime.fromtimestamp(at(2), UTC)
        await trio.sleep(0.5 * HOUR)
    assert [(tick_id("s", at(1)), at(1)), (tick_id("s", at(2)), at(2.5))] == app.STARTS


@pytest.mark.postgres
async def test_in_a_cluster_the_last_run_counts_wherever_it_runs(
        postgres_stores_url: str, autojump_clock: Any) -> None:
    """Two nodes of a cluster both act on the schedule's ticks: the node that does not
    run the 1h workflow reads from the store that it is unfinished, so its 2h tick is
    skipped too (``skip``: one run at a time across the cluster)."""
    import uuid

    url = f"{postgres_stores_url}?schema=sched_{uuid.uuid4().hex[:8]}"
    async with garrison.open_node(store=url, name="a") as a:
        await a.schedule("s", app.job, 1.5 * HOUR, every="1h")
        async with garrison.open_node(store=url, name="b") as b:
            await trio.sleep(HOUR + 1)
            assert ids() == [tick_id("s", at(1))]
            runner, other = (a, b) if ids()[0] in a.hosts["workflows"].active else (b, a)
            assert ids()[0] not in other.hosts["workflows"].active
            scheduler = other.hosts["workflows"].scheduler
            record = scheduler.rows["s"]
            due = attrs.evolve(record, next_tick=dt.datetime.fromtimestamp(at(2), UTC))
            _, wid, updates, _ = await scheduler._plan(due, at(2) + 1)
            assert (wid, updates.get("last_workflow")) == (None, None)
            await trio.sleep(1.6 * HOUR)  # both act on 2h: skipped; the 1h run ends at 2h30
            assert ids() == [tick_id("s", at(1))]
            assert runner.schedules()[0].last_tick == dt.datetime.fromtimestamp(at(2), UTC)


@pytest.mark.postgres
async def test_every_node_of_a_cluster_learns_a_schedules_change(
        postgres_stores_url: str) -> None:
    """A cluster review: a schedule one node made (node.schedule), and a tool's pause
    or resume (`garrison schedules ...`), reached no node already running: a schedule
    whose maker left never fired, a resumed one stayed silent, an updated input was
    not used. Every node reads such a change again now. (Real time: the nodes are told
    by the server's NOTIFY.)"""
    import uuid

    url = f"{postgres_stores_url}?schema=sched_{uuid.uuid4().hex[:8]}"

    async def until(node: garrison.Node, check: Any) -> None:
        scheduler = node.hosts["workflows"].scheduler
        with trio.fail_after(10):
            while not check(scheduler.rows.get("s")):
                await trio.sleep(0.02)

    async with garrison.open_node(store=url, name="a") as a, \
            garrison.open_node(store=url, name="b") as b:
        await a.schedule("s", app.job, 1.5 * HOUR, every="1h")
        await until(b, lambda row: row is not None)
        await a.schedule("s", app.job, 2.5 * HOUR, every="1h")  # a new input
        await until(b, lambda row: row is not None and list(row.input) == [2.5 * HOUR])
        with open_store(url, lock=False) as tool:
            tools.pause_schedule(tool, "s")
            await until(a, lambda row: row is not None and row.paused)
            await until(b, lambda row: row is not None and row.paused)
            tools.resume_schedule(tool, "s")
            await until(a, lambda row: row is not None and not row.paused)
            await until(b, lambda row: row is not None and not row.paused)
        await a.schedule_handle("s").delete()
        await until(b, lambda row: row is None)


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_store_lists_the_schedules_whose_last_run_does_not_exist(
        tmp_path: Path, postgres_stores_url: str, kind: str) -> None:
    """What a cluster's repair reads at a node's leave: only those schedules, not every
    schedule and then each one's last run by itself."""
    import uuid

    url = (str(tmp_path / "s.db") if kind == "sqlite"
           else f"{postgres_stores_url}?schema=runs_{uuid.uuid4().hex[:8]}")
    async with garrison.open_node(store=url, name="a") as a:
        for sid in ("ran", "never", "none"):
            await a.schedule(sid, app.job, 0.0, every="1h")
        await a.start_workflow(app.job, 0.0, id="ran@1")
        store = a.hosts["workflows"].store
        store.write(Transaction().update_schedule("ran", last_workflow="ran@1")
                    .update_schedule("never", last_workflow="never@1"))
        assert [r.schedule_id for r in store.schedules_without_run()] == ["never"]


async def test_a_tick_a_lost_node_recorded_and_did_not_start_is_started_by_a_survivor(
        postgres_stores_url: str) -> None:
    """A cluster review: the node that won a tick's compare-and-set died before its
    create reached the server, while other nodes ran on: the tick was lost for good
    (only a starting node looked for such ticks). A node that marks others lost looks
    too. Here the tick is recorded by hand, as the dead node left it."""
    import time
    import uuid

    url = f"{postgres_stores_url}?schema=sched_{uuid.uuid4().hex[:8]}"
    async with garrison.open_node(store=url, name="a") as a:
        await a.schedule("s", app.job, 0.0, every="1h", catchup_window="1h")
        tick = float(int(time.time()))
        wid = tick_id("s", tick)
        with open_store(url, lock=False) as tool:
            tool.write(Transaction().update_schedule("s", last_workflow=wid, time=tick))
        a.hosts["workflows"].ownership.on_lost([(99, "gone")])  # as mark_lost reports
        with trio.fail_after(10):
            while wid not in {w.workflow_id for w in a.workflows()}:
                await trio.sleep(0.02)
            assert await a.workflow(wid).result() == wid


@pytest.mark.postgres
async def test_a_schedule_change_whose_wakeup_committed_late_is_not_skipped(
        postgres_stores_url: str) -> None:
    """A review: wakeup ids are taken as rows are inserted, not as they commit, so a
    change committed after a later one was read has a lower id; nodes reading only the
    ids above the last they saw skipped it for good. Here that order is made by hand."""
    import uuid

    import psycopg

    from garrison.persistence._pg_schema import notify_channel

    schema = f"sched_{uuid.uuid4().hex[:8]}"
    url = f"{postgres_stores_url}?schema={schema}"
    base = postgres_stores_url.split("?")[0]

    async def until(node: garrison.Node, sid: str, paused: bool) -> None:
        rows = node.hosts["workflows"].scheduler.rows
        with trio.fail_after(10):
            while sid not in rows or rows[sid].paused != paused:
                await trio.sleep(0.02)

    async with garrison.open_node(store=url, name="a") as a, \
            garrison.open_node(store=url, name="b") as b:
        for sid in ("A", "B"):
            await a.schedule(sid, app.job, every="1h")
            await a.schedule_handle(sid).pause()
        for node in (a, b):
            await until(node, "A", True)
            await until(node, "B", True)
        with psycopg.connect(base, autocommit=True) as c:
            top = c.execute(f"SELECT coalesce(max(id), 0) FROM {schema}.wakeups").fetchone()[0]

            def resume(sid: str, row_id: int) -> None:
                c.execute(f"UPDATE {schema}.schedules SET paused = 0 WHERE schedule_id = %s",
                          (sid,))
                c.execute(f"INSERT INTO {schema}.wakeups (id, workflow_id, kind, created) "
                          "VALUES (%s, %s, 'schedule', extract(epoch from now()))",
                          (row_id, sid))
                c.execute("SELECT pg_notify(%s, %s)", (notify_channel(schema), ""))

            resume("B", top + 100)
            for node in (a, b):
                await until(node, "B", False)
            resume("A", top + 50)  # (its id was taken first; it committed after B's)
            for node in (a, b):
                await until(node, "A", False)


async def test_a_repair_of_replaced_ticks_that_fails_half_way_skips_a_tick_once(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """After nodes were lost the scheduler looks at the ticks it replaced, one schedule
    after another. A store read failing at the second put all of them back for the next
    try, the first one's skip included: counted ``skipped`` (and warned) twice."""
    from garrison._errors import StoreError

    caplog.set_level(logging.WARNING, logger="garrison.schedules")
    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        await node.schedule("a", app.job, 10 * HOUR, every="1h", catchup_window="2h")
        await node.schedule("b", app.job, every="1h", catchup_window="2h")
        await trio.sleep(1.1 * HOUR)  # a's 1h run runs for 10h, b's has ended
        scheduler = node.hosts["workflows"].scheduler
        reload, failed = scheduler._reload, []

        async def reload_failing_once(sid: str) -> None:
            if sid == "b" and not failed:
                failed.append(sid)
                raise StoreError(None, "out of reach")
            await reload(sid)

        scheduler._reload = reload_failing_once
        lost = {sid: tick_id(sid, at(0.5)) for sid in ("a", "b")}  # replaced by 1h's
        scheduler._replaced.update(lost)
        scheduler.nodes_lost()
        await trio.sleep(10)
        assert failed == ["b"]
        assert node.stats()["schedules"]["workflows"]["skipped"] == 1
    skips = [r.getMessage() for r in caplog.records if "(a later run)" in r.getMessage()]
    assert len(skips) == 1, skips
    assert lost["b"] in ids()


# ------------------------------------------------------------------ DST
def ticks(cron: str, start: dt.datetime, n: int) -> list[str]:
    """The next ``n`` ticks of ``cron`` in New York after ``start``, as ISO times."""
    ny = ZoneInfo("America/New_York")
    spec = ScheduleSpec.parse(cron=cron, timezone="America/New_York")
    out, t = [], start.timestamp()
    for _ in range(n):
        t = spec.next_after(t)
        out.append(dt.datetime.fromtimestamp(t, ny).isoformat())
    return out


def test_dst_changes_follow_debian_cron() -> None:
    """Spring forward: a job at a time the change skips runs right after it; autumn:
    a job at a time the change repeats runs once; frequent jobs keep the minutes."""
    ny = ZoneInfo("America/New_York")

    assert ticks("30 2 * * *", dt.datetime(2025, 3, 8, 12, tzinfo=ny), 3) == [
        "2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00", "2025-03-11T02:30:00-04:00"]
    assert ticks("30 1 * * *", dt.datetime(2025, 11, 1, 12, tzinfo=ny), 2) == [
        "2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]
    assert ticks("0,30 * * * *", dt.datetime(2025, 11, 2, 0, 45, tzinfo=ny), 4) == [
        "2025-11-02T01:00:00-04:00", "2025-11-02T01:30:00-04:00",
        "2025-11-02T01:00:00-05:00", "2025-11-02T01:30:00-05:00"]
    # catching up picks ticks the running scheduler would have used (same workflow ids)
    spec = ScheduleSpec.parse(cron="30 1 * * *", timezone="America/New_York")
    late = dt.datetime(2025, 11, 2, 3, tzinfo=ny).timestamp()
    assert spec.latest_in(late - 86400, late) == dt.datetime(
        2025, 11, 2, 1, 30, tzinfo=ny).timestamp()
    assert dt.datetime(2025, 11, 2, 1, 30, tzinfo=ny).utcoffset() == dt.timedelta(hours=-4)


def test_a_star_in_the_minute_or_hour_field_keeps_to_the_wall_clock_across_dst() -> None:
    """Debian's rule (cronsim's): only a job with neither its minute nor its hour field
    starting with ``*`` is moved out of a skipped hour and run once in a repeated one.
    The README said only jobs "more often than hourly" kept to the wall clock: an
    hourly ``0 * * * *`` and a ``0 */2 * * *`` do too (twice at 01:00 in the repeated
    hour, none in the skipped one), and ``*/20 2 * * *`` has no tick on the spring day."""
    spring = dt.datetime(2026, 3, 8, 0, 30, tzinfo=ZoneInfo("America/New_York"))
    autumn = dt.datetime(2026, 11, 1, 0, 30, tzinfo=ZoneInfo("America/New_York"))
    assert ticks("0 * * * *", spring, 2) == [
        "2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00"]
    assert ticks("0 * * * *", autumn, 3) == [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00"]
    assert ticks("0 */2 * * *", spring, 1) == ["2026-03-08T04:00:00-04:00"]
    assert ticks("*/20 2 * * *", spring, 1) == ["2026-03-09T02:00:00-04:00"]
    assert ticks("*/30 1 * * *", autumn, 4) == [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00"]
    # a fixed minute and hour, a range or a list of hours included: once, moved
    assert ticks("30 1-3 * * *", spring, 3) == [
        "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:30:00-04:00"]
    assert ticks("30 1,2 * * *", autumn, 2) == [
        "2026-11-01T01:30:00-04:00", "2026-11-01T02:30:00-05:00"]


def test_every_is_anchored_at_the_epoch_not_at_the_schedule_s_making() -> None:
    """``every: 7d`` made on a Monday ticks on Thursdays (1970-01-01 was one), at 00:00
    UTC; ``every: 7m`` does not divide an hour: its ticks move across the hours."""
    monday_noon = dt.datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()
    weekly = ScheduleSpec.parse(every="7d").next_after(monday_noon)
    assert weekly is not None
    assert dt.datetime.fromtimestamp(weekly, UTC).isoformat() == "2026-01-08T00:00:00+00:00"
    spec, t, minutes = ScheduleSpec.parse(every="7m"), T0 + 50 * 60, []
    for _ in range(3):
        t = spec.next_after(t) or 0.0
        minutes.append(dt.datetime.fromtimestamp(t, UTC).strftime("%H:%M"))
    assert minutes == ["00:56", "01:03", "01:10"]


def test_a_day_of_month_and_a_day_of_week_match_either_as_in_cron() -> None:
    """Both restricted: a day matching either runs (Friday the 2nd, Tuesday the 13th);
    either starting with ``*`` makes it both (``*/2`` days that are Mondays); a date
    only some years hold runs those years; ``31`` skips the shorter months."""
    new_year = dt.datetime(2026, 1, 1, tzinfo=ZoneInfo("America/New_York"))
    days = [t[:10] for t in ticks("0 0 13 * 5", new_year, 4)]
    assert days == ["2026-01-02", "2026-01-09", "2026-01-13", "2026-01-16"]
    days = [t[:10] for t in ticks("0 0 */2 * 1", new_year, 3)]
    assert days == ["2026-01-05", "2026-01-19", "2026-02-09"]
    days = [t[:10] for t in ticks("0 0 29 2 *", new_year, 2)]
    assert days == ["2028-02-29", "2032-02-29"]
    days = [t[:10] for t in ticks("0 0 31 * *", new_year, 3)]
    assert days == ["2026-01-31", "2026-03-31", "2026-05-31"]


def test_dst_changes_follow_debian_cron_with_a_seconds_field_too() -> None:
    """A six-field expression (seconds first) gets the same daylight saving handling as
    its five fields: the tick in the skipped hour is not lost, the tick in the repeated
    hour does not run twice; and catching up picks the ticks next_after gives."""
    ny = ZoneInfo("America/New_York")

    assert ticks("0 30 2 * * *", dt.datetime(2025, 3, 8, 12, tzinfo=ny), 2) == [
        "2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"]
    assert ticks("15,45 30 2 * * *", dt.datetime(2025, 3, 8, 12, tzinfo=ny), 3) == [
        "2025-03-09T03:00:15-04:00", "2025-03-09T03:00:45-04:00",
        "2025-03-10T02:30:15-04:00"]
    assert ticks("0 30 1 * * *", dt.datetime(2025, 11, 1, 12, tzinfo=ny), 2) == [
        "2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]
    assert ticks("*/20 0,30 * * * *", dt.datetime(2025, 11, 2, 1, 59, tzinfo=ny), 4) == [
        "2025-11-02T01:00:00-05:00", "2025-11-02T01:00:20-05:00",
        "2025-11-02T01:00:40-05:00", "2025-11-02T01:30:00-05:00"]
    spec = ScheduleSpec.parse(cron="10,20 30 1 * * *", timezone="America/New_York")
    late = dt.datetime(2025, 11, 2, 3, tzinfo=ny).timestamp()
    assert spec.latest_in(late - 86400, late) == dt.datetime(
        2025, 11, 2, 1, 30, 20, tzinfo=ny).timestamp()
    assert spec.latest_in(late - 86400, dt.datetime(
        2025, 11, 2, 1, 30, 15, tzinfo=ny).timestamp()) == dt.datetime(
        2025, 11, 2, 1, 30, 10, tzinfo=ny).timestamp()
    assert spec.latest_in(late - 3600, late) is None


async def test_a_schedule_across_a_spring_dst_change_on_virtual_time(
        monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    ny = ZoneInfo("America/New_York")
    start = dt.datetime(2025, 3, 8, 12, tzinfo=ny).timestamp()
    wall_at(monkeypatch, start)
    async with garrison.open_node() as node:
        await node.schedule("s", app.job, cron="30 2 * * *", timezone="America/New_York")
        await trio.sleep(3 * 24 * HOUR)
    local = [dt.datetime.fromtimestamp(t, ny).isoformat() for _, t in app.STARTS]
    assert local == ["2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00",
                     "2025-03-11T02:30:00-04:00"]
    assert ids()[0] == "s@2025-03-09T07:00:00Z"


async def test_a_tick_whose_id_another_workflow_took_says_it_started_nothing(
        autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A workflow of other code started under a tick's id (``s@<tick>``, by hand): the
    tick found it and started nothing, and said nothing, the other workflow taken for
    its run. It warns, naming both; a start of its own code by that id stays quiet (a
    restart or another node acting on the tick finds it so)."""
    caplog.set_level(logging.INFO, logger="garrison.schedules")
    async with garrison.open_node() as node:
        await node.start_workflow(app.child, "x", id=tick_id("s", at(1)))
        await node.start_workflow(app.job, id=tick_id("s", at(2)))
        await node.schedule("s", app.job, every="1h")
        await trio.sleep(2.5 * HOUR)
        stats = node.stats()["schedules"]["workflows"]
    assert ids() == [tick_id("s", at(2))]
    assert stats["started"] == 0
    said = [r.getMessage() for r in caplog.records if r.name == "garrison.schedules"]
    assert said == [
        "schedule s started nothing for its tick s@2026-01-01T01:00:00Z: a workflow of "
        "other code, schedule_app:child, has its id (schedule_app:job is the "
        "schedule's); its ticks take '<schedule id>@<tick time>' ids, keep other "
        "workflows off them"], said


# ------------------------------------------------------------------ clock steps
async def _step(node: garrison.Node, seconds: float) -> None:
    """The system clock steps ``seconds``, as the node's clock check finds it."""
    host = node.hosts["workflows"]
    host.clock.wall0 += seconds
    host.clock_stepped(seconds)
    await trio.sleep(1)


async def test_a_schedule_ticks_on_after_the_clock_is_set_back(
        autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A clock a day ahead (a VM booted before NTP set it), then set back: the hourly
    schedule had recorded its next tick on the wrong day, and started nothing for a day.
    It ticks from the new reading on; a tick it acted on is not acted on again (its
    workflow id exists), nor taken for a run of itself still going on."""
    caplog.set_level(logging.INFO, logger="garrison.schedules")
    async with garrison.open_node() as node:
        await node.schedule("s", app.job, 0.25 * HOUR, every="1h")
        await trio.sleep(1.5 * HOUR)  # ticked at 1h
        await _step(node, 24 * HOUR)  # 1h30 tomorrow: its tick at 1h tomorrow runs
        await trio.sleep(0.25 * HOUR)
        assert ids() == [tick_id("s", at(1)), tick_id("s", at(25))]
        await _step(node, -24 * HOUR)  # 1h45 today again
        assert node.schedules()[0].next_tick == dt.datetime.fromtimestamp(at(2), UTC)
        await trio.sleep(1.4 * HOUR)  # to 3h10, its 3h run going on until 3h15
        await _step(node, -0.5 * HOUR)  # 2h40: the 3h tick comes again
        assert node.schedules()[0].next_tick == dt.datetime.fromtimestamp(at(3), UTC)
        await trio.sleep(2 * HOUR)
        stats = node.stats()["schedules"]["workflows"]
    assert ids() == [tick_id("s", at(h)) for h in (1, 25, 2, 3, 4)]
    assert (stats["started"], stats["skipped"], stats["missed"]) == (5, 0, 0)
    said = [r.getMessage() for r in caplog.records if r.name == "garrison.schedules"]
    assert said == [
        "schedule s: the clock was set back 86400s: its next tick is "
        "s@2026-01-01T02:00:00Z, not s@2026-01-02T02:00:00Z",
        "schedule s: the clock was set back 1800s: its next tick is "
        "s@2026-01-01T03:00:00Z, not s@2026-01-01T04:00:00Z"], said


# ------------------------------------------------------------------ year 9999
#: 9999-12-31T23:59:00Z, the last whole minute a date holds
LAST_MINUTE = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("timing", "zone"), [
    ({"cron": "59 23 31 12 *"}, "UTC"), ({"cron": "* * * * *"}, "UTC"),
    ({"cron": "* * * * *"}, "Pacific/Kiritimati"), ({"cron": "*/20 * * * * *"}, "UTC"),
    ({"every": "1h"}, "UTC")])
def test_no_tick_after_the_last_date_there_is(timing: dict[str, str], zone: str) -> None:
    """probe p27: the tick after 9999-12-31T23:59 raised cronsim's OverflowError (a
    zone east of UTC: already reading the time there); an ``every`` gave a tick past
    the last date, read back as 9999-12-31T23:59:59, a tick the timing has not. There
    is none: ``None``, as for a cron that matches no more."""
    spec = ScheduleSpec.parse(**timing, timezone=zone)
    assert spec.next_after(LAST_MINUTE + 59) is None
    assert spec.next_after(LAST_MINUTE - 86400) is not None  # (the last day's ticks)
    assert spec.latest_in(LAST_MINUTE - 86400, LAST_MINUTE + 59) is not None


async def test_a_schedule_past_its_last_tick_in_year_9999_ticks_no_more_and_the_node_runs_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """probe p27: with the environment's clock in the last hour of 9999, the cron
    schedules' next tick after their last raised an OverflowError out of the
    scheduler that ended the host's run and the node. Each schedule's last tick
    starts its workflow; then it has no next tick, said once; the node runs on."""
    caplog.set_level(logging.INFO, logger="garrison.schedules")
    async with garrison.testing.workflow_env() as env:
        end = dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.UTC)
        await env.sleep((end - env.now()).total_seconds())
        await env.node.schedule("y", app.job, cron="59 23 31 12 *")
        await env.node.schedule("m", app.job, cron="* * * * *")
        await env.sleep("59m30s")
        ids = {w.workflow_id for w in env.node.workflows()}
        assert {"y@9999-12-31T23:59:00Z", "m@9999-12-31T23:59:00Z"} <= ids
        assert len(ids) == 60  # m's minutes from 23:01 on, y's one
        assert {s.schedule_id: s.next_tick for s in env.node.schedules()} == {
            "m": None, "y": None}
        said = [r.getMessage() for r in caplog.records if "no tick after" in r.getMessage()]
        assert sorted(said) == [
            f"schedule {sid} has no tick after {sid}@9999-12-31T23:59:00Z: no later date "
            "holds one (years end at 9999); it starts nothing more" for sid in "my"]
        await env.sleep("20s")
        assert await (await env.start(app.job, id="after")).result() == "after"


async def test_a_schedule_made_past_its_last_tick_in_year_9999_is_said_to_start_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    """README (Schedules): a schedule whose ticks end with the dates has its next tick
    ``None`` and a warning says so once. One made (or resumed, or given a new timing)
    after its last tick got no tick and said nothing: a user saw a schedule that never
    ran, and no line why. One warning names it, the moment and why, and it is made."""
    caplog.set_level(logging.INFO, logger="garrison.schedules")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "no tick after" in r.getMessage()]

    async with garrison.testing.workflow_env() as env:
        end = dt.datetime(9999, 12, 31, 23, 59, 30, tzinfo=dt.UTC)
        await env.sleep(end - env.now())
        m = await env.node.schedule("m", app.job, cron="* * * * *")
        await env.node.schedule("e", app.job, every="1h")
        why = ": no later date holds one (years end at 9999); it starts nothing"
        assert said() == [f"schedule {sid} has no tick after 9999-12-31T23:59:30Z, when it "
                          f"was made{why}" for sid in "me"]
        assert {s.schedule_id: s.next_tick for s in env.node.schedules()} == {
            "m": None, "e": None}
        # the same timing again (its input changed): its next tick is kept, said already
        await env.node.schedule("m", app.job, 2.0, cron="* * * * *")
        await env.node.schedule("e", app.job, cron="*/5 * * * *")
        assert said()[2:] == [f"schedule e has no tick after 9999-12-31T23:59:30Z, when "
                              f"its timing changed{why}"]
        await m.pause()
        await env.sleep("10s")
        await m.resume()
        assert said()[3:] == [f"schedule m has no tick after 9999-12-31T23:59:40Z, when it "
                              f"was resumed{why}"]
        await env.sleep("19s")
        assert len(said()) == 4 and list(env.node.workflows()) == []


# ------------------------------------------------------------------ control
async def test_every_trigger_starts_a_workflow_also_two_in_one_millisecond(
        tmp_path: Path, autojump_clock: Any) -> None:
    """README: trigger() starts the workflow now, whatever the overlap policy. Two
    triggers in one millisecond (virtual time stands still between them) named the same
    workflow <id>@<now>: the second started nothing and returned the first's pid; the
    command line's said 'triggered' and created nothing. The next free millisecond is
    taken instead."""
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        # (each run takes a second: the first is surely under way at the second trigger)
        handle = await node.schedule("s", app.job, 1.0, every="1h", overlap="allow_all")
        first, second = await handle.trigger(), await handle.trigger()
        assert (first.id, second.id) == (f"s@{iso(at(0))[:-1]}.000Z",
                                          f"s@{iso(at(0))[:-1]}.001Z")
        assert [await node.workflow(p.id).result() for p in (first, second)] == \
            [first.id, second.id]
        # the first was unfinished when the second was triggered: it stays the last run
        # (README), decided as the second's workflow is written, in the same transaction
        assert handle.info().last_workflow == first.id
    store = tools.open_store(db)
    try:
        one, two = (tools.trigger_schedule(store, "s", now=at(0)) for _ in range(2))
    finally:
        store.close()
    assert (one, two) == (f"s@{iso(at(0))[:-1]}.002Z", f"s@{iso(at(0))[:-1]}.003Z")


async def test_a_bare_name_gets_the_namespaced_id_suggested(autojump_clock: Any) -> None:
    """README: a bare name where a config schedule's namespaced id is meant gets a
    suggestion, from the node's handle as from garrison schedules."""
    async with garrison.open_node() as node:
        await node.schedule("app:nightly", app.job, every="1h")
        with pytest.raises(garrison.NoSuchSchedule, match=r"^no schedule with id 'nightly' "
                           r"in the store \(did you mean 'app:nightly'\?\)$"):
            await node.schedule_handle("nightly").pause()
        with pytest.raises(garrison.NoSuchSchedule, match=r"'other' in the store$"):
            node.schedule_handle("other").info()


async def test_a_mistyped_schedule_id_gets_the_one_it_is_close_to_suggested(
        tmp_path: Path, autojump_clock: Any) -> None:
    """nu463: ``garrison schedules trigger cleanp`` said only ``no schedule 'cleanp'``
    (a bare name got its namespaced id suggested, a typo nothing), where a config
    entry's typo gets ``did you mean``. A typo of an id (its name, in its namespace) is
    suggested too, from the node's handle as from the command line; an id like no
    other gets none."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.schedule("cleanup", app.job, every="1h")
        await node.schedule("app:nightly", app.job, every="1h")
        with pytest.raises(garrison.NoSuchSchedule, match=r"^no schedule with id 'cleanp' "
                           r"in the store \(did you mean 'cleanup'\?\)$"):
            await node.schedule_handle("cleanp").pause()
        with pytest.raises(garrison.NoSuchSchedule, match=r"'app:nightyl' in the store "
                           r"\(did you mean 'app:nightly'\?\)$"):
            node.schedule_handle("app:nightyl").info()
        with pytest.raises(garrison.NoSuchSchedule, match=r"'other' in the store$"):
            node.schedule_handle("other").info()
    typo = cli("--store", db, "trigger", "cleanp")
    assert (typo.returncode, typo.stderr) == (
        1, f"garrison schedules: no schedule 'cleanp' in {db} (did you mean 'cleanup'?)\n")


async def test_a_config_schedule_left_on_the_node_s_own_in_memory_host_is_refused(
        tmp_path: Path, autojump_clock: Any) -> None:
    """Two workflow.host entries and a schedule without ``host:``: it went to the node's
    own ``workflows`` host, in memory without a store: it ticked, was in neither of the
    config's stores (``garrison schedules list`` found nothing) and was gone at the next
    start. Refused at start, naming the entry and the hosts, before any store is opened
    (the refused start left the config's stores created); with a store it runs there."""
    config = load_config_text(CONFIG + f"""\
  - {{name: mailer, kind: workflow.host, store: {tmp_path / 'mail.db'}}}
  - {{name: billing, kind: workflow.host, store: {tmp_path / 'billing.db'}}}
""")
    with pytest.raises(garrison.ConfigError, match=r"^schedule 'app:nightly' would run on "
                       r"the node's own workflow host 'workflows', whose store is in memory "
                       r".*Give the entry 'host:' \(one of app:billing, app:mailer\), or "
                       r"the node a store"):
        async with garrison.open_node(config=config):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    async with garrison.open_node(config=config, store=str(tmp_path / "wf.db")) as node:
        assert [(r.schedule_id, r.host) for r in node.schedules()] == [
            ("app:nightly", "workflows")]


async def test_a_config_file_whose_schedule_the_node_would_keep_in_memory_names_it(
        tmp_path: Path, autojump_clock: Any) -> None:
    """The same, with the config given as a path: the node loads it, and the refusal
    names the file, the entry and the field ``host`` (as ``garrison check`` does)."""
    path = tmp_path / "app.yaml"
    path.write_text(CONFIG + f"""\
  - {{name: mailer, kind: workflow.host, store: {tmp_path / 'mail.db'}}}
  - {{name: billing, kind: workflow.host, store: {tmp_path / 'billing.db'}}}
""")
    with pytest.raises(garrison.ConfigError, match=rf"^{path}: entry 'app:nightly' \(index "
                       r"\d+\): field 'host': expected one of the config's workflow hosts "
                       r"\(app:billing, app:mailer\)"):
        async with garrison.open_node(config=str(path)):
            pass
    async with garrison.open_node(config=str(path),
                                  store={"workflows": str(tmp_path / "wf.db")}) as node:
        assert [(r.schedule_id, r.host) for r in node.schedules()] == [
            ("app:nightly", "workflows")]


async def test_a_schedule_on_another_workflow_host_is_found_by_its_id_alone(
        tmp_path: Path, autojump_clock: Any) -> None:
    """README: ``node.schedule_handle(id)`` gives a handle on any schedule and
    ``node.schedules()`` lists them. A schedule of a second workflow host (a config
    schedule with ``host:``, or ``node.schedule(..., host=)``) lives in that host's
    store: the handle said ``NoSuchSchedule`` and the list left it out unless given
    ``host=``. Now the handle finds the host holding the id (its bare name gets the
    suggestion there too), the list holds every host's schedules by id, and an id on
    two hosts asks for ``host=`` naming both."""
    config = load_config_text(CONFIG + f"""\
  - {{name: mailer, kind: workflow.host, store: {tmp_path / 'mail.db'}}}
  - {{name: billing, kind: workflow.host, store: {tmp_path / 'billing.db'}}}
  - {{name: s, kind: workflow.schedule, workflow: app:job, every: 1h, host: app:mailer}}
""")
    async with garrison.open_node(config=config, store=str(tmp_path / "wf.db")) as node:
        await node.schedule("cleanup", app.job, every="1h", host="app:mailer")
        await node.schedule("local", app.job, every="1h")
        assert node.schedule_handle("app:s").info().host == "app:mailer"
        await node.schedule_handle("cleanup").pause()
        assert node.schedule_handle("cleanup", host="app:mailer").info().paused
        assert not node.schedule_handle("local").info().paused
        assert [(r.schedule_id, r.host) for r in node.schedules()] == [
            ("app:nightly", "workflows"), ("app:s", "app:mailer"),
            ("cleanup", "app:mailer"), ("local", "workflows")]
        assert [r.schedule_id for r in node.schedules(host="app:mailer")] == [
            "app:s", "cleanup"]
        with pytest.raises(garrison.NoSuchSchedule, match=r"^no schedule with id 's' in "
                           r"the store \(did you mean 'app:s'\?\)$"):
            node.schedule_handle("s").info()
        with pytest.raises(garrison.NoSuchSchedule, match=r"^no schedule with id 'nope' "
                           r"in the store$"):
            await node.schedule_handle("nope").trigger()
        await node.schedule("local", app.job, every="1h", host="app:mailer")
        with pytest.raises(ValueError, match=r"^schedule 'local' is on several workflow "
                           r"hosts \('app:mailer', 'workflows'\): give host= to say "
                           r"which$"):
            node.schedule_handle("local")
        assert node.schedule_handle("local", host="workflows").info().host == "workflows"
        await trio.sleep(1.5 * HOUR)
        for h in ("app:mailer", "workflows"):  # (each host ran its own "local")
            assert node.schedule_handle("local", host=h).info().last_workflow == \
                tick_id("local", at(1))
    assert sorted(ids()) == [tick_id("app:s", at(1)), tick_id("local", at(1))]


async def test_pause_resume_trigger_delete(autojump_clock: Any) -> None:
    async with garrison.open_node() as node:
        handle = await node.schedule("s", app.job, every="1h")
        await trio.sleep(1.5 * HOUR)
        await handle.pause()
        assert handle.info().paused
        # no next tick while paused (the stored one read as a tick due to fire), as the
        # command line's list shows it
        assert handle.info().next_tick is None and node.schedules()[0].next_tick is None
        assert node.schedules(host="workflows")[0].next_tick is None
        await trio.sleep(2 * HOUR)  # 2h and 3h pass while paused
        assert ids() == [tick_id("s", at(1))]
        pid = await handle.trigger()  # paused or not
        assert pid.id == f"s@{iso(at(3.5))[:-1]}.000Z"
        await node.workflow(pid.id).result()
        assert handle.info().last_workflow == pid.id
        await handle.resume()  # from the next tick on; 2h and 3h are not caught up
        assert handle.info().next_tick == dt.datetime.fromtimestamp(at(4), UTC)
        await trio.sleep(HOUR)
        await node.schedule_handle("s").delete()
        assert node.schedules() == []
        with pytest.raises(garrison.NoSuchSchedule, match="'s'"):
            handle.info()
        with pytest.raises(garrison.NoSuchSchedule):
            await node.schedule_handle("nope").pause()
        await trio.sleep(3 * HOUR)
    assert ids() == [tick_id("s", at(1)), pid.id, tick_id("s", at(4))]


async def test_a_trigger_writes_its_workflow_and_the_last_run_in_one_transaction(
        autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's trigger created the workflow, then wrote the schedule's ``last_workflow``
    in a second commit: a crash between them left the schedule's last run the one
    before, and a ``skip`` tick could start beside the triggered run still under way.
    One transaction now, as the tool's trigger writes it."""
    from garrison.persistence._transaction import Op

    async with garrison.open_node() as node:
        handle = await node.schedule("s", app.job, 5.0, every="1h", overlap="skip")
        store = node.hosts["workflows"].store
        commits: list[list[Op]] = []
        commit = store.commit

        async def recorded(tx: Transaction) -> Any:
            commits.append([op for op, _ in tx.ops])
            return await commit(tx)

        monkeypatch.setattr(store, "commit", recorded)
        pid = await handle.trigger()
        monkeypatch.undo()
        both = [ops for ops in commits if Op.CREATE_WORKFLOW in ops]
        assert len(both) == 1 and Op.UPDATE_SCHEDULE in both[0], commits
        assert not any(Op.UPDATE_SCHEDULE in ops for ops in commits if ops is not both[0])
        assert handle.info().last_workflow == pid.id
        # a trigger while that run is under way starts a run that does not take its place
        again = await handle.trigger()
        assert again != pid and handle.info().last_workflow == pid.id
        await node.workflow(pid.id).result()
        await node.workflow(again.id).result()
        third = await handle.trigger()
        assert handle.info().last_workflow == third.id


async def test_schedule_calls_read_the_store_off_the_node_s_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``node.schedule`` and a handle's pause, resume, trigger and delete read the
    store in a worker thread, as the scheduler's task does: they read it in the node's
    thread, so a PostgreSQL server slow to answer froze every process, workflow and the
    console meanwhile. Real time: under a ``MockClock`` the store is read in the trio
    thread."""
    async with garrison.open_node() as node:
        handle = await node.schedule("s", app.job, cron="0 3 1 1 *")
        await node.workflow((await handle.trigger()).id).result()  # (a last run to read)
        store = node.hosts["workflows"].store
        ticks = 0
        #: (the thread of each slow read, how often the event loop ticked meanwhile)
        reads: list[tuple[threading.Thread, int]] = []

        def slow(real: Any) -> Any:
            def read(*args: Any) -> Any:
                before = ticks
                time.sleep(0.05)  # (a server slow to answer)
                reads.append((threading.current_thread(), ticks - before))
                return real(*args)
            return read

        for name in ("get_schedule", "get_workflow", "schedules"):
            monkeypatch.setattr(store, name, slow(getattr(store, name)))

        async def count() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            await trio.sleep(0.01)
            for call in (partial(node.schedule, "s", app.job, cron="0 4 1 1 *"),
                         handle.pause, handle.resume, handle.trigger, handle.delete):
                reads.clear()
                with trio.fail_after(5):
                    await call()
                assert reads, call
                assert all(thread is not threading.main_thread() and meanwhile > 0
                           for thread, meanwhile in reads), (call, reads)
            nursery.cancel_scope.cancel()
        monkeypatch.undo()
        assert node.schedules() == []


async def test_a_read_that_ends_after_a_later_one_is_not_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pause's read of the schedule after its commit, slow to come back, ends after a
    resume made at once read it again: taken last, the older row left the schedule
    paused in the scheduler, its ticks never acted on, while the store has it resumed.
    Real time (under a ``MockClock`` the reads do not overlap)."""
    async with garrison.open_node() as node:
        handle = await node.schedule("s", app.job, cron="0 3 1 1 *")
        store = node.hosts["workflows"].store
        scheduler = node.hosts["workflows"].scheduler
        real = store.get_schedule
        slow = trio.Event()  # (set once the pause's read is under way)
        reads: list[bool] = []

        def get_schedule(schedule_id: str) -> Any:
            record = real(schedule_id)
            reads.append(record.paused)
            if record.paused and not slow.is_set():  # the pause's read after its commit
                trio.from_thread.run_sync(slow.set)
                time.sleep(0.2)  # comes back late, with the row as it was
            return record

        monkeypatch.setattr(store, "get_schedule", get_schedule)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle.pause)
            await slow.wait()
            await handle.resume()
        monkeypatch.undo()
        assert reads[-1] is False  # (the resume's read came back first)
        assert not store.get_schedule("s").paused
        assert not scheduler.rows["s"].paused


async def test_a_schedule_whose_workflow_code_is_gone_says_so(
        autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A schedule stored with a workflow the code no longer has (renamed since): its
    tick logs, and its trigger raises, an error naming the schedule and the workflow."""
    async with garrison.open_node() as node:
        handle = await node.schedule("s", app.job, every="1h")
        host = node.hosts["workflows"]
        for name in ("schedule_app:gone", "no_such_module_here:job"):
            await host.store.commit(Transaction().put_schedule(
                "s", host="workflows", workflow=name, every=3600.0, catchup_window=3600.0,
                next_tick=at(1)))
            host.scheduler.reload("s")
            with pytest.raises(ImportError, match=(
                    f"schedule 's' cannot start its workflow {name}: it is not importable "
                    r"by that name \((AttributeError|ModuleNotFoundError): ")):
                await handle.trigger()
        await trio.sleep(HOUR + 1)
    assert ids() == []
    assert "schedule s could not start workflow s@2026-01-01T01:00:00Z " \
        "(no_such_module_here:job)" in caplog.text


async def test_a_trigger_whose_code_takes_other_arguments_names_the_schedule(
        autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The code changed since the schedule was made (its workflow takes other
    arguments): ``trigger()`` raised the start's ``TypeError``, naming the tick's
    workflow id ('workflow ... (id 's@...') ... it was given 1'), where README and
    ``garrison schedules trigger`` name the schedule. One wording now, nothing
    started (helper-287)."""

    async def job(n: int, m: int) -> str:  # the deployed code now
        return "never"

    job.__module__, job.__qualname__ = app.job.__module__, app.job.__qualname__
    async with garrison.open_node() as node:
        handle = await node.schedule("s", app.job, 5, cron="0 3 1 6 *")
        monkeypatch.setattr(app, "job", job)
        with pytest.raises(TypeError) as raised:
            await handle.trigger()
        assert str(raised.value) == (
            "schedule 's': workflow schedule_app:job takes 2 argument(s) (n, m), but the "
            "schedule gives it 1: [5] (missing a required argument: 'm')")
        assert node.workflows() == [] and handle.info().last_workflow is None


@pytest.mark.parametrize("by", ["handle", "tool"])
async def test_a_paused_schedule_starts_no_buffered_tick(store_spec: str, by: str,
                                                         autojump_clock: Any) -> None:
    """The 2h tick waits behind the 1h run (until 2h30) when the schedule is paused at
    2h12 (by its handle, or by a tool while no node runs): it never starts, neither
    when the run ends nor after a restart, and resume goes on from the next tick (the
    buffered one is not caught up)."""
    async with garrison.open_node(store=store_spec) as node:
        handle = await node.schedule("s", app.job, 1.5 * HOUR, every="1h",
                                     overlap="buffer_one")
        await trio.sleep(2.2 * HOUR)
        assert handle.info().buffered_tick == dt.datetime.fromtimestamp(at(2), UTC)
        if by == "handle":
            await handle.pause()
            assert handle.info().buffered_tick is None
            await trio.sleep(HOUR)  # the 1h run ends at 2h30
    if by == "tool":
        with tools.open_store(store_spec) as store:
            tools.pause_schedule(store, "s")
            assert store.get_schedule("s").buffered_tick is None
    async with garrison.open_node(store=store_spec) as node:  # (the 1h run resumes)
        await trio.sleep(HOUR)
        await node.schedule_handle("s").resume()
        await trio.sleep(HOUR)  # the next tick: 5h (4h after the tool)
    assert ids()[:2] == [tick_id("s", at(1)), tick_id("s", at(5 if by == "handle" else 4))]


async def test_a_tick_acted_on_from_before_a_pause_starts_nothing(store_spec: str,
                                                                  autojump_clock: Any) -> None:
    """A scheduler that read the schedule before it was paused (its tick was being
    started as the pause committed, or another node of a cluster paused it) acts on the
    tick after the pause: the compare-and-set refuses it, nothing starts."""
    async with garrison.open_node(store=store_spec) as node:
        handle = await node.schedule("s", app.job, every="1h")
        scheduler = node.hosts["workflows"].scheduler
        stale = scheduler.rows["s"]  # next tick 1h, not paused
        await trio.sleep(HOUR - 1)
        await handle.pause()
        await scheduler._fire([stale], at(1))
        await trio.sleep(1)
        record = handle.info()
        assert (record.paused, record.last_workflow) == (True, None)
        assert scheduler.rows["s"].paused
    assert ids() == []


async def test_a_tick_lost_to_a_compare_and_set_is_not_counted(store_spec: str,
                                                                autojump_clock: Any) -> None:
    """A scheduler acting on a tick from a view read before a pause (or before another
    node acted on it) loses the compare-and-set: it did nothing, so it counts nothing
    (here the 2h tick, which its stale view would have skipped behind the 1h run)."""
    async with garrison.open_node(store=store_spec) as node:
        handle = await node.schedule("s", app.job, 1.5 * HOUR, every="1h")
        scheduler = node.hosts["workflows"].scheduler
        await trio.sleep(HOUR + 1)  # the 1h run, until 2h30
        stale = scheduler.rows["s"]  # next tick 2h, not paused
        await trio.sleep(HOUR - 2)
        await handle.pause()
        await scheduler._fire([stale], at(2))
        stats = node.stats()["schedules"]["workflows"]
        assert (stats["started"], stats["skipped"], stats["missed"]) == (1, 0, 0)
        assert handle.info().last_tick == dt.datetime.fromtimestamp(at(1), UTC)


async def test_schedule_again_updates_it_and_keeps_the_next_tick(autojump_clock: Any) -> None:
    async with garrison.open_node() as node:
        await node.schedule("s", app.job, every="1h")
        await trio.sleep(0.5 * HOUR)
        await node.schedule("s", app.job, 5.0, every="1h", overlap="allow_all")
        record = node.schedules()[0]
        assert (record.input, record.overlap) == ([5.0], "allow_all")
        assert record.next_tick == dt.datetime.fromtimestamp(at(1), UTC)
        await node.schedule("s", app.job, every="2h")  # new timing: a new next tick
        assert node.schedules()[0].next_tick == dt.datetime.fromtimestamp(at(2), UTC)


async def test_every_with_a_timezone_is_refused_naming_the_schedule(
        autojump_clock: Any) -> None:
    # it was accepted and the timezone silently ignored: every ticks on UTC multiples
    async with garrison.open_node() as node:
        with pytest.raises(ValueError) as info:
            await node.schedule("hourly", app.job, every="1h", timezone="Europe/Riga")
        assert str(info.value) == (
            "schedule 'hourly': timezone 'Europe/Riga' applies to cron only: every ticks at "
            "its multiples since the unix epoch, in UTC; drop the timezone, or use cron for "
            "times of day in a time zone")
        assert node.schedules() == []  # nothing stored
        await node.schedule("hourly", app.job, every="1h", timezone="UTC")  # the default
        await node.schedule("nightly", app.job, cron="0 3 * * *", timezone="Europe/Riga")
        assert [r.schedule_id for r in node.schedules()] == ["hourly", "nightly"]


async def test_an_every_schedule_stored_with_a_timezone_still_runs_on_utc_multiples(
        store_spec: str, autojump_clock: Any) -> None:
    # stored by a garrison that accepted every with a timezone: it loads, ticks at its
    # UTC multiples as it always did, and pauses and resumes (by the node and the tools)
    with open_store(store_spec) as store:
        store.write(Transaction().put_schedule(
            "old", host="workflows", workflow="schedule_app:job", input=[], every=HOUR,
            timezone="Europe/Riga", catchup_window=60.0, next_tick=at(1)))
    async with garrison.open_node(store=store_spec) as node:
        await trio.sleep(2.5 * HOUR)
        assert ids() == ["old@2026-01-01T01:00:00Z", "old@2026-01-01T02:00:00Z"]
        handle = node.schedule_handle("old")
        await handle.pause()
        await handle.resume()
        assert handle.info().next_tick == dt.datetime.fromtimestamp(at(3), UTC)
        await handle.pause()
    with tools.open_store(store_spec) as store:
        tools.resume_schedule(store, "old", now=at(3.5))
        record = store.get_schedule("old")
        assert record is not None and not record.paused
        assert record.next_tick == dt.datetime.fromtimestamp(at(4), UTC)


async def test_bad_schedules_are_refused_with_what_is_wrong(node: garrison.Node) -> None:
    with pytest.raises(ValueError, match=r"'s': give one of cron .*: neither was given"):
        await node.schedule("s", app.job)
    with pytest.raises(ValueError, match="invalid cron expression '61 \\* \\* \\* \\*'"):
        await node.schedule("s", app.job, cron="61 * * * *")
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Base'"):
        await node.schedule("s", app.job, cron="0 3 * * *", timezone="Mars/Base")
    # (an empty name is a bad value, as " " is: it was a TypeError; a number is not)
    with pytest.raises(ValueError, match="unknown timezone ''"):
        await node.schedule("s", app.job, cron="0 3 * * *", timezone="")
    with pytest.raises(TypeError, match=r"timezone must be an IANA .* got int: 3"):
        await node.schedule("s", app.job, cron="0 3 * * *", timezone=3)
    # files of the zone directory that are no IANA zone: each machine's own zone (nodes
    # of a cluster would tick at other hours), a placeholder, a leap-second copy
    for not_a_zone in ("localtime", "Factory", "posixrules", "right/UTC"):
        with pytest.raises(ValueError, match=f"unknown timezone '{not_a_zone}'"):
            await node.schedule("s", app.job, cron="0 3 * * *", timezone=not_a_zone)
    # (said why: the name is a file of this machine's zone directory)
    with pytest.raises(ValueError, match=r"'s': unknown timezone 'localtime': it is this "
                                         r"machine's own zone, which another machine"):
        await node.schedule("s", app.job, cron="0 3 * * *", timezone="localtime")
    with pytest.raises(ValueError, match="whole number of seconds"):
        await node.schedule("s", app.job, every="250ms")
    with pytest.raises(ValueError, match="invalid overlap 'never'"):
        await node.schedule("s", app.job, every="1h", overlap="never")
    with pytest.raises(ValueError, match="catchup_window must be longer than 0"):
        await node.schedule("s", app.job, every="1h", catchup_window=0)
    # at most 100 years, as every duration (inf was stored, and listed as "Infinity")
    for window in (float("inf"), 1e300, "36501d"):
        with pytest.raises(ValueError, match=r"'s': catchup_window must be longer than 0 "
                           r"and at most 100 years \(36500d\), got"):
            await node.schedule("s", app.job, every="1h", catchup_window=window)
    await (await node.schedule("s", app.job, every="1h", catchup_window="36500d")).delete()
    with pytest.raises(ValueError, match="invalid schedule id 'a@b'"):
        await node.schedule("a@b", app.job, every="1h")
    with pytest.raises(TypeError, match="lambda"):
        await node.schedule("s", lambda: None, every="1h")
    for every in (float("inf"), 1e300, "36501d"):  # finite, and ticks a store can hold
        with pytest.raises(ValueError, match=r"'s': every must be a whole number of seconds "
                           r"from 1s to 3153600000s \(100 years\), got"):
            await node.schedule("s", app.job, every=every)
    # an activity is refused as start_workflow refuses it (the same message)
    with pytest.raises(TypeError) as started:
        await node.start_workflow(ops_app.reserve, "x")
    with pytest.raises(TypeError) as scheduled:
        await node.schedule("s", ops_app.reserve, "x", every="1h")
    assert str(scheduled.value) == str(started.value) == (
        "cannot run the activity ops_app:reserve as a workflow: it is an activity, not a "
        "workflow function (call it from a workflow)")
    assert node.schedules() == []


@pytest.mark.parametrize(("alias", "fields"), [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *")])
def test_a_cron_alias_is_refused_with_its_five_fields(alias: str, fields: str) -> None:
    """cron's and Temporal's ``@daily`` was refused as 'Wrong number of fields', as if
    the user had miscounted: it says what is not taken and what to write instead."""
    with pytest.raises(ValueError) as refused:
        ScheduleSpec.parse(cron=alias, what="schedule 's'")
    assert str(refused.value) == (
        f"schedule 's': invalid cron expression {alias!r}: an alias such as @daily is "
        f"not taken: write its five fields, {fields!r}")
    ScheduleSpec.parse(cron=fields)


@pytest.mark.parametrize("alias", ["@reboot", "@every 1h", "@often"])
def test_a_cron_alias_without_five_fields_is_refused_saying_what_to_use(alias: str) -> None:
    with pytest.raises(ValueError, match=(
            f"schedule 's': invalid cron expression {alias!r}: cron aliases are not taken "
            r"\(@daily: '0 0 \* \* \*'\); for an interval use every")):
        ScheduleSpec.parse(cron=alias, what="schedule 's'")


@garrison.activity(name="billing.charge")
async def named_charge(amount: int) -> int:
    return amount


async def test_an_activity_refused_as_a_workflow_is_named_as_its_journal_names_it(
        node: garrison.Node) -> None:
    """The refusal names the activity by its journal name (its ``name=``; for a
    script run as ``python jobs.py``, ``jobs:act``), not ``module:qualname`` (which
    said ``__main__:act`` for a script)."""
    with pytest.raises(TypeError, match=r"^cannot run the activity billing\.charge as a "
                       "workflow: it is an activity"):
        await node.start_workflow(named_charge, 1)
    with pytest.raises(TypeError, match=r"^cannot run the activity billing\.charge as a "
                       "workflow: it is an activity"):
        await node.schedule("s", named_charge, 1, every="1h")


async def test_a_schedule_handle_s_id_is_checked_at_once(node: garrison.Node) -> None:
    """``node.schedule_handle(5)`` (or ``None``, or ``""``) was taken, and every call on
    the handle then said there was no such schedule: the id is refused at once, as
    ``node.schedule`` and ``garrison schedules`` refuse it."""
    for bad in (5, None, b"s"):
        with pytest.raises(TypeError, match=f"a schedule id must be a string, got "
                           f"{type(bad).__name__}"):
            node.schedule_handle(bad)  # type: ignore[arg-type]
    for bad_id in ("", "a@b"):
        with pytest.raises(ValueError, match=f"invalid schedule id '{bad_id}'"):
            node.schedule_handle(bad_id)


async def test_a_schedule_s_input_is_checked_as_start_workflow_checks_it(
        node: garrison.Node) -> None:
    """node.schedule took arguments its workflow cannot take (start_workflow and the
    config loader refuse them): every tick then failed to start. Now the same check,
    at once, naming the schedule."""
    with pytest.raises(TypeError) as started:
        await node.start_workflow(app.job, 1, 2, 3)
    with pytest.raises(TypeError) as scheduled:
        await node.schedule("bad", app.job, 1, 2, 3, every="1s")
    assert str(scheduled.value) == (
        "schedule 'bad': workflow schedule_app:job takes 0 to 1 argument(s) "
        "(seconds=0.0), but the schedule gives it 3: [1, 2, 3] (too many positional "
        "arguments)")
    assert str(started.value).split(", but ")[0] in str(scheduled.value)
    with pytest.raises(garrison.PayloadError, match=r"^schedule 'bad': cannot restore "
                       r"argument 1 \(seconds\) of workflow schedule_app:job as float"):
        await node.schedule("bad", app.job, "soon", every="1s")
    with pytest.raises(garrison.PayloadError, match=r"^cannot store the input of schedule "
                       r"'bad': a value of type object"):
        await node.schedule("bad", app.job, object(), every="1s")
    assert node.schedules() == []
    await node.schedule("good", app.job, 5, every="1s")  # an int is a float's JSON
    assert node.schedules()[0].input == [5]


async def test_a_schedule_id_is_checked_alike_by_check_run_the_api_and_the_cli(
        tmp_path: Path, autojump_clock: Any) -> None:
    """An id with '@' (which separates a schedule's id from the tick in its workflows'
    ids) is refused by garrison check and the config loader (naming the file, the entry
    and the field: an entry name holds no '@' at all), and by node.schedule and garrison
    schedules in the same words."""
    from garrison.config import check_config

    said = ("invalid schedule id 'app:nightly@eu': it holds '@'; a schedule id is a "
            "non-empty string of printable characters (no newline, tab or other control "
            "character) without leading or trailing spaces, at most 936 bytes of UTF-8, "
            "and without '@' (its workflows are named '<id>@<tick time>')")
    config = tmp_path / "app.yaml"
    config.write_text(CONFIG + "  - {name: nightly@eu, kind: workflow.schedule, workflow: "
                      "job, every: 1h}\n")
    in_config = (f"{config}: entry at index 2: field 'name': expected a non-empty name "
                 "without ':', '/', '@', spaces or control characters, got 'nightly@eu'")
    assert check_config(str(config)) == [in_config]
    with pytest.raises(garrison.ConfigError) as info:
        garrison.config.load_config(str(config))
    assert in_config in str(info.value)
    # a name the entry rule takes whose id is too long: said once (it was said twice)
    name = "x" * 934
    config.write_text(CONFIG + f"  - {{name: {name}, kind: workflow.schedule, workflow: "
                      "job, every: 1h}\n")
    problems = check_config(str(config))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{config}: entry 'app:{name}' (index 2): field 'name': "
                                  f"invalid schedule id 'app:"), problems
    assert "it is 938 bytes long in UTF-8" in problems[0], problems
    with pytest.raises(garrison.ConfigError) as info:
        garrison.config.load_config(str(config))
    assert info.value.problems == problems
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        with pytest.raises(ValueError) as refused:
            await node.schedule("app:nightly@eu", app.job, every="1h")
        assert str(refused.value) == said
    for verb in ("pause", "resume", "trigger", "delete"):
        done = cli("--store", db, verb, "app:nightly@eu")
        assert (done.returncode, done.stderr) == (2, f"garrison schedules: {said}\n"), verb


# ------------------------------------------------------------------ config
CONFIG = """
version: "1.0"
namespace: app
entries:
  - {name: job, kind: workflow.py, source: "schedule_app:job"}
  - {name: nightly, kind: workflow.schedule, workflow: app:job, cron: "0 3 * * *"}
"""


async def test_a_config_entry_taking_over_an_api_schedule_of_its_id_says_so(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """helper-323: a schedule made by ``node.schedule`` whose id a config entry then
    takes (``app:nightly``) was rewritten to the entry in silence (workflow, input,
    timing, source), and stayed paused if it was: the entry never ticked, and nothing
    said so. A warning names what changed and, paused, how to let it tick."""
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.schedule("app:nightly", app.job, 1.0, every="1m")
        await node.schedule_handle("app:nightly").pause()
    caplog.set_level(logging.INFO, logger="garrison.schedules")
    async with garrison.open_node(config=load_config_text(CONFIG), store=db) as node:
        record = {r.schedule_id: r for r in node.schedules()}["app:nightly"]
        assert record.source == "config" and record.paused
    said = [r for r in caplog.records if "app:nightly" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in said] == [(
        "WARNING", "schedule app:nightly, made by node.schedule, is taken over by this "
        "node's config entry of its id (cron None -> '0 3 * * *', every 60s -> None); it "
        "stays paused, as it was: resume it (garrison schedules resume app:nightly) for "
        "the entry's ticks")], said


async def test_config_schedules_are_synced_and_keep_their_state(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    db = str(tmp_path / "wf.db")
    extra = "  - {name: hourly, kind: workflow.schedule, workflow: job, every: 1h, " \
            "input: [1.0]}\n"
    async with garrison.open_node(config=load_config_text(CONFIG + extra), store=db) as node:
        records = {r.schedule_id: r for r in node.schedules()}
        assert sorted(records) == ["app:hourly", "app:nightly"]
        assert records["app:nightly"].workflow == "schedule_app:job"
        assert records["app:hourly"].source == "config"
        assert records["app:hourly"].input == [1.0]
        await node.schedule_handle("app:nightly").pause()
        with pytest.raises(ValueError, match=r"comes from a workflow\.schedule entry"):
            await node.schedule("app:nightly", app.job, every="1h")
        await trio.sleep(1.5 * HOUR)
    assert ids() == ["app:hourly@2026-01-01T01:00:00Z"]
    # an edited entry: said once, as it is written (nodes of a cluster whose configs
    # differ changed it back and forth in silence, each at its start)
    caplog.set_level(logging.INFO, logger="garrison.schedules")
    edited = extra.replace("every: 1h", "every: 2h")
    async with garrison.open_node(config=load_config_text(CONFIG + edited), store=db):
        pass
    async with garrison.open_node(config=load_config_text(CONFIG + edited), store=db):
        pass
    said = [r.getMessage() for r in caplog.records if "changed by this node's config" in
            r.getMessage()]
    assert said == ["schedule app:hourly changed by this node's config (every 3600s -> "
                    "7200s)"], said
    # the entry is gone: so is its schedule; the paused one stays paused
    async with garrison.open_node(config=load_config_text(CONFIG), store=db) as node:
        records = {r.schedule_id: r for r in node.schedules()}
        assert sorted(records) == ["app:nightly"]
        assert records["app:nightly"].paused
    # the CLI: a bare name points at the namespaced id; deleting a config schedule
    # says that the config brings it back
    bare = cli("--store", db, "trigger", "nightly")
    assert (bare.returncode, bare.stderr) == (
        1, f"garrison schedules: no schedule 'nightly' in {db} (did you mean "
           "'app:nightly'?)\n")
    deleted = cli("--store", db, "delete", "app:nightly")
    assert deleted.stdout == (
        "schedule 'app:nightly' deleted (it is declared in a config: a node started with "
        "that config creates it again; remove its entry, or pause it instead)\n")


def test_a_put_that_is_not_the_configs_never_replaces_a_config_schedule(
        store_spec: str) -> None:
    """``put_schedule`` says whether it wrote: one whose ``source`` is not ``config``
    (``node.schedule``'s) leaves a config schedule as it is (result False), decided on
    the row as the write finds it; the config's own put replaces either."""
    def put(source: str, every: float) -> Transaction:
        return Transaction().put_schedule("app:s", host="workflows",
                                          workflow="schedule_app:job", every=every,
                                          catchup_window=HOUR, next_tick=at(1),
                                          source=source, time=at(0))

    with open_store(store_spec) as store:
        assert store.write(put("api", HOUR)) == [True]  # (made)
        assert store.write(put("api", 2 * HOUR)) == [True]  # (replaced: an api one)
        assert store.write(put("config", 3 * HOUR)) == [True]  # (taken over)
        assert store.write(put("api", 4 * HOUR)) == [False]
        record = store.get_schedule("app:s")
        assert (record.source, record.every) == ("config", 3 * HOUR)
        assert store.write(put("config", 5 * HOUR)) == [True]
        assert store.get_schedule("app:s").every == 5 * HOUR


@pytest.mark.postgres
async def test_node_schedule_racing_a_config_sync_on_another_node_loses_and_says_so(
        postgres_stores_url: str, autojump_clock: Any) -> None:
    """Node b's ``node.schedule("app:nightly", ...)`` read no schedule of that id, and
    node a (same PostgreSQL store) started with the config whose entry that id is,
    wrote the config's schedule before b's write: b's write replaced it (source api,
    b's timing) until a next start with that config. The config's schedule stays now,
    and b's call raises as for a config schedule it had read (README: a config
    schedule is changed in the config)."""
    import uuid

    url = f"{postgres_stores_url}?schema=sched_{uuid.uuid4().hex[:8]}"
    async with garrison.open_node(store=url, name="b") as b:
        store = b.hosts["workflows"].store
        real = store.commit
        b_read, a_synced = trio.Event(), trio.Event()

        async def commit(tx: Transaction, *args: Any, **kw: Any) -> Any:
            if any(op is Op.PUT_SCHEDULE for op, _ in tx.ops) and not b_read.is_set():
                b_read.set()  # b read no schedule app:nightly, and writes it now...
                await a_synced.wait()  # ...once a has synced its config
            return await real(tx, *args, **kw)

        store.commit = commit
        failed: list[BaseException] = []
        b_done = trio.Event()

        async def b_schedules() -> None:
            try:
                await b.schedule("app:nightly", app.job, 1.0, every="1m")
            except ValueError as exc:
                failed.append(exc)
            finally:
                b_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(b_schedules)
            await b_read.wait()
            async with garrison.open_node(config=load_config_text(CONFIG), store=url,
                                          name="a") as a:
                assert {r.schedule_id: r.source for r in a.schedules()} == {
                    "app:nightly": "config"}
                a_synced.set()
                with trio.fail_after(60):
                    await b_done.wait()
                record = {r.schedule_id: r for r in a.schedules()}["app:nightly"]
                assert (record.source, record.cron, record.every) == (
                    "config", "0 3 * * *", None)
        del store.commit
    assert len(failed) == 1, failed
    assert "'app:nightly'" in str(failed[0]) and "namespace: app" in str(failed[0])


JOBS = """
version: "1.0"
namespace: jobs
entries:
  - {name: job, kind: workflow.py, source: "schedule_app:job"}
"""


async def test_a_node_reconciles_only_the_config_schedules_of_its_config_s_namespaces(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """README: a config schedule belongs to the config file of its namespace. A node
    with no config (a one-off script on the store) or with another config leaves it,
    and its pause state, alone; only its own config, without the entry, removes it."""
    caplog.set_level(logging.INFO, logger="garrison.schedules")
    db = str(tmp_path / "wf.db")

    def state() -> dict[str, bool]:
        with tools.open_store(db) as store:
            return {r.schedule_id: r.paused for r in store.schedules()}

    async with garrison.open_node(config=load_config_text(CONFIG), store=db) as node:
        await node.schedule_handle("app:nightly").pause()
    async with garrison.open_node(store=db):  # no config
        pass
    assert state() == {"app:nightly": True}
    hourly = "  - {name: hourly, kind: workflow.schedule, workflow: job, every: 1h}\n"
    async with garrison.open_node(config=load_config_text(JOBS + hourly), store=db):
        pass
    assert state() == {"app:nightly": True, "jobs:hourly": False}
    async with garrison.open_node(config=load_config_text(CONFIG), store=db):
        pass
    assert state() == {"app:nightly": True, "jobs:hourly": False}
    assert "removed" not in caplog.text
    # the entry gone from its own config: removed (and only that one)
    async with garrison.open_node(config=load_config_text(JOBS), store=db):
        pass
    assert state() == {"app:nightly": True}
    assert "schedule jobs:hourly removed: its config entry is gone" in caplog.text
    # a file of the namespace without entries still owns it
    empty = 'version: "1.0"\nnamespace: app\nentries: []\n'
    async with garrison.open_node(config=load_config_text(empty), store=db):
        pass
    assert state() == {}


async def test_a_config_schedule_moved_to_another_host_is_said_moved(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The entry's ``host:`` changed between two starts: the old host's copy was
    removed with 'its config entry is gone', though the entry is there. It says where
    the schedule went now (it starts afresh there)."""
    caplog.set_level(logging.INFO, logger="garrison.schedules")
    hosts = f"""\
  - {{name: a, kind: workflow.host, store: {tmp_path / 'a.db'}}}
  - {{name: b, kind: workflow.host, store: {tmp_path / 'b.db'}}}
  - {{name: s, kind: workflow.schedule, workflow: app:job, every: 1h, host: HOST}}
"""
    for host in ("app:a", "app:b"):
        config = load_config_text(CONFIG + hosts.replace("HOST", host))
        async with garrison.open_node(config=config, store=str(tmp_path / "wf.db")) as node:
            assert [r.host for r in node.schedules() if r.schedule_id == "app:s"] == [host]
    said = [r.getMessage() for r in caplog.records if "app:s removed" in r.getMessage()]
    assert said == ["schedule app:s removed from host app:a: its config entry moved it to "
                    "host app:b, where it starts afresh (the overlap policy there does not "
                    "see its runs on app:a)"]


def test_an_every_schedule_entry_with_a_timezone_is_a_config_error() -> None:
    bad = CONFIG + """
  - {name: a, kind: workflow.schedule, workflow: app:job, every: 1h, timezone: Europe/Riga}
  - {name: b, kind: workflow.schedule, workflow: app:job, every: 1h, timezone: UTC}
  - {name: c, kind: workflow.schedule, workflow: app:job, cron: "0 3 * * *",
     timezone: Europe/Riga}
"""
    with pytest.raises(garrison.ConfigError) as info:
        load_config_text(bad, "app.yaml")
    assert info.value.problems == [
        "app.yaml: entry 'app:a' (index 2): field 'timezone': expected 'UTC' with every "
        "(timezone applies to cron only: every ticks at its multiples since the unix "
        "epoch, in UTC; use cron for times of day in a time zone), got 'Europe/Riga'"]


def test_schedule_entries_are_checked() -> None:
    bad = CONFIG + """
  - {name: a, kind: workflow.schedule, workflow: app:job}
  - {name: b, kind: workflow.schedule, workflow: app:job, cron: "0 3 * *", timezone: Mars}
  - {name: c, kind: workflow.schedule, workflow: app:nightly, every: 250ms, overlap: x}
  - {name: d, kind: workflow.schedule, workflow: app:nope, every: 1h, host: app:job}
  - {name: e, kind: workflow.schedule, workflow: app:job, every: .inf}
  - {name: f, kind: workflow.schedule, workflow: app:job, every: 3153600001}
  - {name: g, kind: workflow.schedule, workflow: app:job, every: 1h, catchup_window: .inf}
  - {name: h, kind: workflow.schedule, workflow: app:job, every: 1h, catchup_window: 36501d}
"""
    with pytest.raises(garrison.ConfigError) as info:
        load_config_text(bad, "app.yaml")
    text = str(info.value)
    assert "entry 'app:a' (index 2): field 'cron': give one of cron" in text
    assert "entry 'app:b' (index 3): field 'cron': expected a cron expression" in text
    assert "entry 'app:b' (index 3): field 'timezone': expected an IANA time zone" in text
    assert "entry 'app:c' (index 4): field 'every': expected a duration of whole " \
        "seconds, from 1s to 36500d (100 years; a duration has no year unit), " \
        "got '0.25s'" in text  # (as written, not 0.25)
    assert "entry 'app:e' (index 6): field 'every': expected a duration of whole seconds, " \
        "from 1s to 36500d (100 years; a duration has no year unit), got inf" in text
    # (every digit: it read 3.1536e+09s, the limit itself to the eye)
    assert "entry 'app:f' (index 7): field 'every': expected a duration of whole seconds, " \
        "from 1s to 36500d (100 years; a duration has no year unit), got '3153600001s'" in text
    for entry, got in (("'app:g' (index 8)", "inf"), ("'app:h' (index 9)", "3153686400.0")):
        assert f"entry {entry}: field 'catchup_window': expected a duration of at most 100 " \
            f"years (36500d, as every duration), got {got}" in text
    assert "field 'overlap': expected one of 'skip', 'buffer_one', 'allow_all'" in text
    assert "entry 'app:d' (index 5): field 'workflow': unknown entry 'app:nope'" in text
    assert "field 'host': expected a workflow.host entry, but 'app:job' is a workflow.py" \
        in text


# ------------------------------------------------------------------ tools
async def test_tools_control_schedules_without_a_node(tmp_path: Path,
                                                     autojump_clock: Any) -> None:
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, every="1h")
    # no node: the tool writes the store; the next node acts on it
    store = tools.open_store(db)
    try:
        tools.pause_schedule(store, "s")
        wid = tools.trigger_schedule(store, "s", now=at(0.25))
        assert wid == "s@2026-01-01T00:15:00.000Z"
        with pytest.raises(tools.ToolError, match="no schedule 'x'"):
            tools.pause_schedule(store, "x")
    finally:
        store.close()
    async with garrison.open_node(store=db) as node:
        assert await node.workflow(wid).result() == wid  # the trigger ran
        assert node.schedules()[0].paused
        await trio.sleep(2 * HOUR)
        assert ids() == [wid]  # paused
    store = tools.open_store(db)
    try:
        tools.resume_schedule(store, "s", now=at(2))
    finally:
        store.close()
    async with garrison.open_node(store=db) as node:
        await trio.sleep(1.1 * HOUR)
    assert ids() == [wid, tick_id("s", at(3))]


async def test_tools_control_schedules_while_a_node_runs(tmp_path: Path) -> None:
    """Real time: the running node picks every tool write up through its wakeups."""
    db = str(tmp_path / "wf.db")

    async def until(check: Any) -> None:
        with trio.fail_after(10):
            while not check():
                await trio.sleep(0.005)

    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, cron="0 3 1 1 *")
        rows = node.hosts["workflows"].scheduler.rows
        store = tools.open_store(db)
        try:
            tools.pause_schedule(store, "s")
            await until(lambda: rows["s"].paused)
            tools.resume_schedule(store, "s")
            await until(lambda: not rows["s"].paused)
            wid = tools.trigger_schedule(store, "s")
            await until(lambda: rows["s"].last_workflow == wid)
            with trio.fail_after(10):
                assert await node.workflow(wid).result() == wid
            tools.delete_schedule(store, "s")
            await until(lambda: "s" not in rows)
        finally:
            store.close()
        assert node.schedules() == []


def test_store_schedule_operations(store_spec: str) -> None:
    with open_store(store_spec) as store:
        def put(**kw: Any) -> None:
            store.write(Transaction().put_schedule(
                "s", host="workflows", workflow="m:f", catchup_window=60.0, **kw))

        put(input=[1], every=3600.0, next_tick=at(1))
        # the same timing: the stored next tick is kept (a tick recorded since the
        # writer read the schedule is not undone), the rest is written
        put(input=[0], every=3600.0, next_tick=at(0))
        record = store.get_schedule("s")
        assert record is not None
        assert (record.input, record.next_tick) == ([0], dt.datetime.fromtimestamp(at(1), UTC))
        store.write(Transaction().update_schedule("s", paused=True, last_workflow="w1"))
        put(input=[2], cron="0 3 * * *", timezone="Europe/Riga", next_tick=at(3),
            source="config")
        record = store.get_schedule("s")
        assert record is not None
        assert (record.input, record.cron, record.every, record.timezone, record.source) == (
            [2], "0 3 * * *", None, "Europe/Riga", "config")
        assert (record.paused, record.last_workflow) == (True, "w1")  # kept by a put
        assert record.next_tick == dt.datetime.fromtimestamp(at(3), UTC)
        paused = Transaction().update_schedule("s", next_tick=at(4), expect_next_tick=at(3))
        assert store.write(paused) == [False]  # a tick of a paused schedule: nothing changed
        store.write(Transaction().update_schedule("s", paused=False))
        cas = Transaction().update_schedule("s", next_tick=at(4), expect_next_tick=at(1))
        assert store.write(cas) == [False]  # not the expected next tick: nothing changed
        ok = Transaction().update_schedule("s", next_tick=None, expect_next_tick=at(3))
        assert store.write(ok) == [True]
        assert store.write(Transaction().update_schedule(
            "s", next_tick=at(5), expect_next_tick=None)) == [True]  # NULL-safe
        assert store.write(Transaction().update_schedule("nope", paused=True)) == [False]
        # a compare-and-set on last_workflow (NULL-safe; paused or not)
        store.write(Transaction().update_schedule("s", paused=True))
        assert store.write(Transaction().update_schedule(
            "s", last_workflow=None, expect_last_workflow="w2")) == [False]
        assert store.write(Transaction().update_schedule(
            "s", last_workflow=None, expect_last_workflow="w1")) == [True]
        assert store.write(Transaction().update_schedule(
            "s", last_workflow="w3", expect_last_workflow=None)) == [True]
        assert store.write(Transaction().update_schedule(  # both compares
            "s", last_workflow="w4", expect_last_workflow="w3", expect_next_tick=at(5)
        )) == [False]  # (paused)
        store.write(Transaction().update_schedule("s", paused=False))
        assert store.write(Transaction().update_schedule(
            "s", last_workflow="w4", expect_last_workflow="w3", expect_next_tick=at(5)
        )) == [True]
        assert store.get_schedule("s").last_workflow == "w4"
        store.write(Transaction().delete_schedule("s"))
        assert store.schedules() == [] and store.get_schedule("s") is None


# ------------------------------------------------------------------ command line
ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> Any:
    """``garrison schedules ARGS`` run in this process, as the command runs it (its
    exit code, stdout and stderr): a subprocess each took a second of the suite."""
    import contextlib
    import io

    from garrison import _cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _cli.main(["schedules", *args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_cli_lists_the_schedules_of_a_store_on_a_read_only_file_system(
        tmp_path: Path) -> None:
    """A backup on a read-only mount: ``schedules list``, which writes nothing, opened
    it as a tool (to write) and refused, "cannot be opened for writing: Read-only file
    system", exit 2 (``workflows list`` read it). It reads it read-only now; a verb that
    writes still fails, in one line, exit 2."""
    import textwrap

    from test_persistence_file import _read_only_available, run_on_read_only

    if not _read_only_available(tmp_path):
        pytest.skip("needs unshare and mount in a user namespace")
    data = tmp_path / "ro"
    data.mkdir()
    path = str(data / "wf.db")
    with open_store(path) as store:
        store.write(Transaction().put_schedule(
            "nightly", host="workflows", workflow="schedule_app:job", every=3600.0,
            catchup_window=60.0, next_tick=None))
    code = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from garrison._cli import main
        for args in (["list"], ["list", "--json"], ["pause", "nightly"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(["schedules", "--store", {path!r}, *args])
            print(args[0], code, "nightly" in out.getvalue(), flush=True)
        """
    )
    done = run_on_read_only(data, code)
    assert done.stdout.splitlines() == ["list 0 True", "list 0 True",
                                        "pause 2 False"], done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert path in done.stderr and "Read-only file system" in done.stderr


async def test_cli_without_a_node(tmp_path: Path, autojump_clock: Any) -> None:
    import json

    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.schedule("nightly", app.job, cron="0 3 * * *", timezone="Europe/Riga")
        await node.schedule("hourly", app.job, 5.0, every="1h", overlap="allow_all")
    listed = cli("--store", db, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "WORKFLOW", "WHEN", "OVERLAP"]
    assert lines[1].startswith("hourly") and "every 3600s" in lines[1]
    assert "cron 0 3 * * * Europe/Riga" in lines[2] and "2026-01-01T01:00:00.000Z" in lines[2]
    assert cli("--store", db, "pause", "hourly").stdout == "schedule 'hourly' paused\n"
    # paused: no next tick in the table (its stored one was shown, as if it would fire)
    paused = cli("--store", db, "list").stdout.splitlines()[1].split()
    assert paused[0] == "hourly" and paused[-2:] == ["paused", "-"], paused
    rows = json.loads(cli("--store", db, "list", "--json").stdout)
    assert [(r["schedule_id"], r["paused"], r["input"]) for r in rows] == [
        ("hourly", True, [5.0]), ("nightly", False, [])]
    # no time yet is null, not ""
    assert [(r["last_tick"], r["buffered_tick"]) for r in rows] == [(None, None)] * 2
    # paused: no next tick in JSON either (the stored one looked due to fire)
    assert [r["next_tick"] for r in rows] == [None, "2026-01-01T01:00:00.000Z"]
    # where the code does not import, no workflow that no node could run is created
    import os
    import subprocess
    import sys

    blind = subprocess.run([sys.executable, "-m", "garrison", "schedules", "--store", db,
                            "trigger", "hourly"], cwd=tmp_path, text=True,
                           capture_output=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (blind.returncode, blind.stderr) == (2, (
        "garrison schedules: cannot import 'schedule_app:job', the code of schedule "
        "'hourly': ModuleNotFoundError: No module named 'schedule_app' (run the command "
        "where the application's code is importable)\n"))
    triggered = json.loads(cli("--store", db, "trigger", "hourly", "--json").stdout)
    assert triggered["workflow_id"].startswith("hourly@")
    assert "next tick" in cli("--store", db, "resume", "hourly").stdout
    deleted = cli("--store", db, "delete", "nightly")
    assert deleted.stdout == "schedule 'nightly' deleted\n", deleted.stderr
    missing = cli("--store", db, "pause", "nightly")
    assert (missing.returncode, missing.stderr) == (
        1, f"garrison schedules: no schedule 'nightly' in {db}\n")
    gone = cli("--store", str(tmp_path / "none.db"), "list")
    assert gone.returncode == 2 and "no workflow store" in gone.stderr
    async with garrison.open_node(store=db) as node:  # the trigger runs on the next node
        assert await node.workflow(triggered["workflow_id"]).result() == \
            triggered["workflow_id"]
        assert [r.schedule_id for r in node.schedules()] == ["hourly"]
        assert not node.schedules()[0].paused


async def test_cli_trigger_while_a_node_runs(tmp_path: Path) -> None:
    """Real time: the running node picks the tool's write up through its wakeups."""
    import json

    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.schedule("s", app.job, cron="0 3 1 1 *")
        done = await trio.to_thread.run_sync(cli, "--store", db, "trigger", "s", "--json")
        wid = json.loads(done.stdout)["workflow_id"]
        with trio.fail_after(10):
            while node.hosts["workflows"].scheduler.rows["s"].last_workflow != wid:
                await trio.sleep(0.01)
            assert await node.workflow(wid).result() == wid
        await trio.to_thread.run_sync(cli, "--store", db, "pause", "s")
        with trio.fail_after(10):
            while not node.hosts["workflows"].scheduler.rows["s"].paused:
                await trio.sleep(0.01)


async def test_trigger_and_resume_stamp_the_schedule_with_the_hosts_clock(
        tmp_path: Path, autojump_clock: Any) -> None:
    """trigger() and resume() stamp the schedule's ``updated`` with the host's clock, as
    every other write of the scheduler does. They stamped real time: under a test's
    clock a triggered workflow deleted since looked, after a restart, like one whose
    tick was recorded just before a crash, and was started again."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        handle = await node.schedule("s", app.job, cron="0 3 1 6 *")  # no tick here
        await handle.pause()
        await trio.sleep(HOUR)
        await handle.resume()
        assert abs(handle.info().updated.timestamp() - at(1)) < 1
        await trio.sleep(HOUR)
        pid = await handle.trigger()
        assert abs(handle.info().updated.timestamp() - at(2)) < 1
        await node.workflow(pid.id).result()
        node.hosts["workflows"].store.write(Transaction().delete_workflow(pid.id))
    await trio.sleep(2 * HOUR)  # past the catch-up window of its tick
    app.STARTS.clear()
    async with garrison.open_node(store=db) as node:
        await trio.sleep(1)
    assert ids() == []


def test_in_the_second_pass_of_a_repeated_hour_the_next_tick_is_ahead() -> None:
    """cronsim reads local times without their fold: from 02:10 CET (the hour Berlin
    repeats in October, second pass) the next '30 2' tick came out as 02:30 CEST, 40
    minutes in the past, so a schedule made or resumed then ran a tick at once; and the
    latest tick of a window there was a day early, so a catch-up logged it missed."""
    spec = ScheduleSpec.parse(cron="30 2 * * *", timezone="Europe/Berlin")
    t = dt.datetime(2026, 10, 25, 1, 10, tzinfo=dt.UTC).timestamp()  # 02:10 CET
    assert spec.next_after(t) == dt.datetime(2026, 10, 26, 1, 30, tzinfo=dt.UTC).timestamp()
    first_pass = dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC).timestamp()  # 02:30 CEST
    assert spec.latest_in(t - 3600, t) == first_pass
    spec = ScheduleSpec.parse(cron="30 1 * * *", timezone="America/New_York")
    t = dt.datetime(2026, 11, 1, 6, 0, tzinfo=dt.UTC).timestamp()  # 01:00 EST, 2nd pass
    assert spec.next_after(t) > t


def test_the_latest_tick_in_a_zone_with_a_45_minute_offset_is_found() -> None:
    """cronsim's reverse iteration never ended for '*/30 2 * * *' in Pacific/Chatham
    around its April change: a node catching up such a schedule froze for good."""
    spec = ScheduleSpec.parse(cron="*/30 2 * * *", timezone="Pacific/Chatham")
    base = dt.datetime(2026, 4, 5, tzinfo=dt.UTC).timestamp()
    for lo in range(int(base - 2 * 86400), int(base + 2 * 86400), 900):
        latest = spec.latest_in(float(lo), float(lo + 86400))
        assert latest is None or lo <= latest <= lo + 86400
        assert spec.next_after(float(lo)) > lo


async def test_a_node_stopped_right_after_it_starts_logs_no_scheduler_error(
        store_spec: str, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A node stopped at once, its schedules' catch-up ticks due as it started: the
    scheduler ran on as the node closed its store ("could not record schedule ticks:
    store ... is closed", "could not start workflow ...: store ... is closed"). It
    stops first now, quietly; a tick recorded before it stopped starts with the next
    node, once."""
    caplog.set_level(logging.INFO)
    names = [f"s{i}" for i in range(8)]
    async with garrison.open_node(store=store_spec) as node:
        for sid in names:
            await node.schedule(sid, app.job, every="1h", catchup_window="1h")
    for _ in range(3):
        await trio.sleep(1.5 * HOUR)  # down over a tick of each: due as the node starts
        async with garrison.open_node(store=store_spec):
            pass
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]
    async with garrison.open_node(store=store_spec) as node:
        await trio.sleep(1)
    assert len(set(ids())) == len(ids())  # never a tick twice


async def test_a_tick_a_node_acts_on_a_little_late_is_not_missed_under_a_tiny_window(
        autojump_clock: Any) -> None:
    """``catchup_window`` bounds catch-up after downtime: a window of milliseconds
    missed the live ticks a healthy node acted on a few milliseconds late (8 of 10 of
    ``every="1s", catchup_window="1ms"``). A tick acted on within ``ON_TIME`` of its
    time is on time, whatever the window."""
    from garrison.hosts.workflow._scheduler import ON_TIME

    async with garrison.open_node() as node:
        clock = node.hosts["workflows"].clock
        plain_now = clock.now
        clock.now = lambda: plain_now() + ON_TIME / 2  # (the node acts half ON_TIME late)
        await node.schedule("s", app.job, every="1h", catchup_window="1ms")
        await trio.sleep(3.5 * HOUR)
        assert node.stats()["schedules"]["workflows"]["missed"] == 0
    assert ids() == [tick_id("s", at(h)) for h in (1, 2, 3)]


async def test_cli_trigger_imports_the_code_from_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``garrison`` installed as a command does not put the current folder on the import
    path (``python -m`` does): ``schedules trigger`` refused a schedule whose code sits
    in the folder it runs from, where ``workflows start`` accepts the same workflow.
    ``-P`` runs the module as the installed command runs."""
    import os
    import subprocess
    import sys

    code = tmp_path / "code"
    code.mkdir()
    (code / "night_jobs.py").write_text(
        "async def report() -> str:\n    return 'reported'\n")
    monkeypatch.syspath_prepend(str(code))
    import night_jobs

    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.schedule("nightly", night_jobs.report, every="1h")
    done = subprocess.run([sys.executable, "-P", "-m", "garrison", "schedules", "--store", db,
                           "trigger", "nightly", "--json"], cwd=code, text=True,
                          capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["workflow_id"].startswith("nightly@")


async def test_a_long_interval_is_shown_in_whole_seconds(tmp_path: Path,
                                                         autojump_clock: Any) -> None:
    """helper-219: `every` was shown with six significant digits (`every 1.23457e+06s`,
    the legal maximum `every 3.1536e+09s`), in the list and in the log line of a config
    change, which could then read `1.23457e+06s -> 1.23457e+06s`."""
    assert ScheduleSpec.parse(every=1234567).describe() == "every 1234567s"
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.schedule("odd", app.job, every="36500d")
    listed = cli("--store", db, "list")
    assert "every 3153600000s" in listed.stdout, listed.stdout


def test_cli_trigger_checks_the_schedules_input_against_the_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The code changed since the schedule was made (its workflow now takes other
    arguments): ``schedules trigger`` checked only that the code imports, and created a
    workflow the next node blocked at once ('it was started with ...', though it never
    ran), where the node's trigger and ``workflows start`` refuse it. It is exit 2,
    naming the schedule and the mismatch, and nothing is created (helper-254)."""
    import sqlite3

    from garrison import _cli

    db = str(tmp_path / "wf.db")

    async def make() -> None:
        async with garrison.open_node(store=db) as node:
            await node.schedule("s", app.job, 1, every="1h")

    trio.run(make)
    with sqlite3.connect(db) as conn:  # (as a job(seconds) that became job() would see it)
        conn.execute("UPDATE schedules SET input = '[1, 2]'")
    conn.close()
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "tests"))
        assert _cli.main(["schedules", "--store", db, "trigger", "s"]) == 2
    err = capsys.readouterr().err
    assert "schedule 's': workflow schedule_app:job takes" in err, err
    with garrison.persistence.open_store(db, lock=False) as store:
        assert [w.workflow_id for w in store.list_workflows()] == []


def test_log_lines_show_long_windows_and_ages_in_plain_seconds() -> None:
    """helper-254: a warning read 'the tick is 2.93185e+07s old' (``%g``): a window or
    age of eleven days or more was shown in exponent form."""
    from garrison.hosts.workflow import _scheduler

    _, text, args = _scheduler._missed("s", 0.0, None, 30 * 86400.0)
    assert (text % args).endswith("older than its catchup_window (2592000s)")
    _, text, args = _scheduler._missed("s", 0.0, None, 0.001)
    assert (text % args).endswith("(0.001s)")


async def test_schedule_calls_on_a_stopped_node_say_so(tmp_path: Path,
                                                       autojump_clock: Any) -> None:
    """helper-254: past its block, a node's schedule calls raised the store's bare
    ``store '...' is closed``, where its other calls say the node is closed."""
    async with garrison.open_node(store=str(tmp_path / "wf.db")) as node:
        nightly = await node.schedule("nightly", app.job, every="1h")
    for call in (nightly.pause, nightly.resume, nightly.trigger, nightly.delete):
        with pytest.raises(RuntimeError, match=r"cannot \w+ schedule 'nightly': its node "
                                               r"has stopped, and its store with it"):
            await call()
    with pytest.raises(RuntimeError, match="cannot read schedule 'nightly': its node"):
        nightly.info()
    with pytest.raises(RuntimeError, match=r"cannot list schedules: node '.*' is closed"):
        node.schedules()
    with pytest.raises(RuntimeError, match=r"cannot make a schedule: node '.*' is closed"):
        await node.schedule("other", app.job, every="1h")


async def test_schedule_calls_on_a_stopped_node_with_no_store_say_it_was_in_memory(
        autojump_clock: Any) -> None:
    """A node opened with no store: its schedule calls past its block advised a store
    PATH there is none of (the store was in memory and went with the node)."""
    async with garrison.open_node() as node:
        nightly = await node.schedule("nightly", app.job, every="1h")
    with pytest.raises(RuntimeError, match=r"^cannot pause schedule 'nightly': its node "
                       r"has stopped, and its store with it \(its store was in memory "
                       r"and went with the node\)$"):
        await nightly.pause()


async def test_a_schedule_an_older_garrison_stored_under_an_id_now_refused_can_be_deleted(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Releases before the schedule id rule of today stored schedules under ids it now
    refuses (a tab in one, or longer than 936 bytes: garrison of 2026-11-30 and 12-01).
    After an upgrade the node still listed them, but node.schedule_handle(id) and
    garrison schedules refused those ids as no schedule's (ValueError, exit 2), so
    nothing but SQL could pause or delete them, and each tick logged that its workflow
    id '<id>@<tick>' was invalid, with no word of what to do. A handle and the tools
    reach a schedule a store holds; its ticks start nothing and say to make it again."""
    path = str(tmp_path / "old.db")
    tabbed, long_id = "nightly\treport", "y" * 1500
    with open_store(path) as store:
        for sid in (tabbed, long_id):
            store.write(Transaction().put_schedule(
                sid, host="workflows", workflow="schedule_app:job", every=HOUR,
                catchup_window=60.0, next_tick=at(1), time=at(0)))
    with open_store(path, lock=False) as store:
        tools.pause_schedule(store, long_id)  # (garrison schedules pause)
        assert store.get_schedule(long_id).paused
        with pytest.raises(tools.ToolError, match="delete it"):  # its workflow's id
            tools.trigger_schedule(store, tabbed)
        assert store.list_workflows() == []
        with pytest.raises(tools.ToolError) as refused:  # no store holds it: the rule
            tools.get_schedule(store, "other\treport")
        assert refused.value.code == 2 and "unprintable character" in str(refused.value)
    async with garrison.open_node(store=path) as node:
        await trio.sleep(1.5 * HOUR)  # the tabbed one's tick at 1h
        assert app.STARTS == []
        said = [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]
        assert len(said) == 1 and "an older garrison stored this schedule under that id: " \
            "delete it" in said[0], said
        handle = node.schedule_handle(long_id)
        assert handle.info().paused
        with pytest.raises(ValueError, match="delete it"):
            await handle.trigger()
        await handle.resume()
        await node.schedule_handle(tabbed).delete()
        await node.schedule_handle(long_id).delete()
        assert node.schedules() == []
        with pytest.raises(ValueError, match="unprintable character"):
            node.schedule_handle("other\treport")
