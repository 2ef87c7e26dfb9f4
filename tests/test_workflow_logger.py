"""``workflow.logger``: records carry the workflow's fields, and none is logged twice
when the workflow replays its history (after a restart, or in replay mode)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import ops_app
import pytest
import trio

import garrison
from garrison import workflow
from garrison._cli import _JsonFormatter
from garrison.hosts.workflow import History, replay_history

USER = "garrison.workflow.user"


@pytest.fixture(autouse=True)
def _reset() -> None:
    ops_app.LOG.clear()
    ops_app.FAILS.clear()


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == USER]


async def test_records_carry_the_workflow_fields_and_json_shows_them(
        node: garrison.Node, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=USER)
    await node.start_workflow(ops_app.order, "pen", id="o-1")
    await trio.sleep(1)
    record = next(r for r in caplog.records if r.getMessage() == "order pen: charging")
    run_id = node.hosts["workflows"].store.get_workflow("o-1").run_id
    assert (record.workflow_id, record.run_id, record.pid) == ("o-1", run_id, "workflows/o-1")
    assert record.item == "pen"  # the caller's extra= is kept
    assert record.funcName == "order"  # the caller's line, not the logger's
    out = json.loads(_JsonFormatter().format(record))
    assert out["logger"] == USER and out["message"] == "order pen: charging"
    assert (out["workflow_id"], out["run_id"], out["pid"], out["item"]) == (
        "o-1", run_id, "workflows/o-1", "pen")


async def test_nothing_is_logged_twice_when_a_workflow_replays_after_a_restart(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=USER)
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(ops_app.order, "pen", id="o-1")
        await trio.sleep(1)
    assert lines(caplog) == ["order pen: reserving", "order pen: charging"]
    async with garrison.open_node(store=store) as node:  # replays reserve and charge
        await trio.sleep(1)
        await node.workflow("o-1").signal("ship")
        assert await node.workflow("o-1").result() == "res-pen pay-pen ship"
    assert lines(caplog) == ["order pen: reserving", "order pen: charging",
                             "order pen: ship"]

    caplog.clear()
    with garrison.persistence.SQLiteStore(store, readonly=True) as s:
        history = History.from_store(s, "o-1")
    assert (await replay_history(history)).ok
    assert lines(caplog) == []  # replay mode: it is all history


async def test_a_print_would_repeat_but_the_logger_does_not(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger=USER)
    store = str(tmp_path / "s.db")
    for _ in range(3):  # three nodes in turn, the workflow sleeping across them
        async with garrison.open_node(store=store) as node:
            await node.start_workflow(both_ways, id="b")
            await trio.sleep(3600)
    assert capsys.readouterr().out.count("printed: started") == 3
    assert lines(caplog).count("logged: started") == 1


async def both_ways() -> None:
    print("printed: started")
    workflow.logger.info("logged: started")
    await workflow.sleep("1d")


async def test_inside_an_activity_and_outside_a_workflow(
        node: garrison.Node, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=USER)
    workflow.logger.info("outside")
    await node.start_workflow(logs_in_activity, id="a")
    await node.workflow("a").result()
    outside, inside = (r for r in caplog.records if r.name == USER)
    assert outside.getMessage() == "outside" and not hasattr(outside, "workflow_id")
    assert inside.getMessage() == "in the activity" and inside.workflow_id == "a"


@garrison.activity
async def log_something() -> None:
    workflow.logger.info("in the activity")


async def logs_in_activity() -> None:
    await log_something()


async def _logs_reserved_fields() -> str:
    workflow.logger.info("hello", extra={"message": "m2", "asctime": "then", "lineno": 7,
                                         "workflow_id": "spoof", "time": "t"})
    return "ok"


async def test_extra_fields_a_record_has_are_kept_beside_them(
        node: garrison.Node, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """helper-221: `extra={"message": ...}` (or `asctime`, or any attribute a log record
    has) failed the workflow with the standard logger's KeyError, and only at a level
    that logs it; `extra={"workflow_id": ...}` replaced the workflow's own."""
    caplog.set_level(logging.INFO, logger=USER)
    await node.start_workflow(_logs_reserved_fields, id="x-1")
    assert await node.workflow("x-1").result() == "ok"
    record = next(r for r in caplog.records if r.getMessage() == "hello")
    assert record.workflow_id == "x-1" and record.extra_workflow_id == "spoof"
    assert (record.extra_message, record.extra_asctime, record.extra_lineno) == (
        "m2", "then", 7)
    out = json.loads(_JsonFormatter().format(record))
    assert (out["message"], out["extra_message"], out["workflow_id"], out["extra_time"]) == (
        "hello", "m2", "x-1", "t")
