"""`garrison workflows --store DB ...` against a real store, with and without a node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import workflow_app

import garrison

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "garrison", "workflows", *args], cwd=ROOT,
                          text=True, capture_output=True, timeout=60)


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "wf.db")


async def _seed(path: str) -> None:
    """Two workflows: one completed, one waiting for an approval message."""
    async with garrison.open_node(store=path) as node:
        await node.start_workflow(workflow_app.steps, 0, 3, id="done-1")
        assert await node.workflow("done-1").result() == 3
        await node.start_workflow(workflow_app.approval, "expense 42", id="wait-1")
        await trio.sleep(0.01)
        assert node.workflow("wait-1").status() == "waiting"


async def test_list_show_history(store_path: str) -> None:
    await _seed(store_path)
    done = cli("--store", store_path, "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "UPDATED", "SEARCH"]
    assert any(line.startswith("done-1") and "completed" in line for line in lines)
    # the stored status of an unfinished workflow while no node runs
    assert any(line.startswith("wait-1") and "waiting" in line for line in lines)

    only = json.loads(cli("--store", store_path, "list", "--status", "completed",
                          "--json").stdout)
    assert [w["workflow_id"] for w in only] == ["done-1"]
    assert only[0]["name"] == "workflow_app:steps"

    show = json.loads(cli("--store", store_path, "show", "done-1", "--json").stdout)
    assert show["status"] == "completed" and show["result"] == 3 and show["input"] == [0, 3]
    assert show["journal_records"] >= 3

    hist = cli("--store", store_path, "history", "done-1")
    assert hist.returncode == 0, hist.stderr
    assert hist.stdout.splitlines()[0].split() == ["SEQ", "TIME", "KIND", "NAME", "ATTEMPTS",
                                                   "OUTCOME"]
    records = json.loads(cli("--store", store_path, "history", "done-1", "--json").stdout)
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert all(r["time"].endswith("Z") for r in records)


async def test_signal_while_no_node_runs_is_picked_up_on_next_start(store_path: str) -> None:
    await _seed(store_path)
    sent = cli("--store", store_path, "signal", "wait-1", "approve", '"ana"')
    assert sent.returncode == 0, sent.stderr
    assert "queued" in sent.stdout
    async with garrison.open_node(store=store_path) as node:
        with trio.fail_after(10):
            assert await node.workflow("wait-1").result() == "expense 42 approved by ana"


async def test_signal_reaches_a_running_node(store_path: str) -> None:
    await _seed(store_path)
    async with garrison.open_node(store=store_path) as node:
        handle = node.workflow("wait-1")
        done = await trio.to_thread.run_sync(
            lambda: cli("--store", store_path, "signal", "wait-1", "approve", '"bo"'))
        assert done.returncode == 0, done.stderr
        with trio.fail_after(10):
            assert await handle.result() == "expense 42 approved by bo"


async def test_cancel_from_the_cli(store_path: str) -> None:
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(workflow_app.cancellable, id="c-1")
        await trio.sleep(0.01)
    done = cli("--store", store_path, "cancel", "c-1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"workflow_id": "c-1", "cancel_requested": True}
    async with garrison.open_node(store=store_path) as node:
        with trio.fail_after(10), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("c-1").result()
        assert node.workflow("c-1").status() == "cancelled"


async def test_clear_errors(store_path: str, tmp_path: Path) -> None:
    await _seed(store_path)
    missing = cli("--store", str(tmp_path / "nope.db"), "list")
    assert missing.returncode == 2 and "no workflow store" in missing.stderr
    unknown = cli("--store", store_path, "show", "ghost")
    assert unknown.returncode == 1 and "no workflow 'ghost'" in unknown.stderr
    bad_json = cli("--store", store_path, "signal", "wait-1", "approve", "{oops")
    assert bad_json.returncode == 2 and "must be JSON" in bad_json.stderr
    finished = cli("--store", store_path, "signal", "done-1", "approve", "1")
    assert finished.returncode == 1 and "it is completed" in finished.stderr
    for out in (missing, unknown, bad_json, finished):
        assert "Traceback" not in out.stderr


async def _seed_promise(path: str) -> None:
    async with garrison.open_node(store=path) as node:
        await node.start_workflow(workflow_app.promise_or_deadline, "1d", id="prom-1")
        with trio.fail_after(5):
            while node.workflow("prom-1").status() != "waiting":
                await trio.sleep(0.001)


async def test_resolve_while_no_node_runs_and_reject_twice(store_path: str) -> None:
    await _seed_promise(store_path)
    done = cli("--store", store_path, "resolve", "prom-1", "approval", '{"by": "cli"}', "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"workflow_id": "prom-1", "promise": "approval",
                                       "resolved": {"by": "cli"}}
    again = cli("--store", store_path, "reject", "prom-1", "approval", "too late")
    assert again.returncode == 1 and "already resolved" in again.stderr
    async with garrison.open_node(store=store_path) as node:
        with trio.fail_after(10):
            assert await node.workflow("prom-1").result() == {"by": "cli"}


async def test_resolve_reaches_a_running_node(store_path: str) -> None:
    await _seed_promise(store_path)
    async with garrison.open_node(store=store_path) as node:
        handle = node.workflow("prom-1")
        done = await trio.to_thread.run_sync(
            lambda: cli("--store", store_path, "resolve", "prom-1", "approval", '"now"'))
        assert done.returncode == 0, done.stderr
        assert "resolved" in done.stdout
        with trio.fail_after(10):
            assert await handle.result() == "now"
