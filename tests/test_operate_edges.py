"""Operating workflows at the edges: a tool's terminate racing a node or another tool,
a workflow a tool started on a host named otherwise than ``workflows``, and a search
key given twice (the command line and the console alike)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ops_app
import pytest
import trio
from test_operate import cli_here

import garrison
from garrison import _store_tools as tools
from garrison.console._app import make_app
from garrison.console._backend import StoreBackend
from garrison.hosts.workflow import terminate_transaction, terminated
from garrison.persistence import SQLiteStore, Transaction, open_store


@pytest.fixture(autouse=True)
def _reset() -> None:
    ops_app.LOG.clear()
    ops_app.FAILS.clear()
    ops_app.USE_OLD_STEP = False


async def until(check: Any) -> None:
    with trio.fail_after(10):
        while not check():
            await trio.sleep(0.01)


@contextlib.contextmanager
def meanwhile(act: Callable[[], None]) -> Iterator[None]:
    """Run ``act()`` the first time a tool command asks whether a node holds its SQLite
    store: between its read of the workflow and its write (nothing else asks)."""
    real = SQLiteStore.node_running

    def hook(store: SQLiteStore) -> bool:
        SQLiteStore.node_running = real  # type: ignore[method-assign]
        act()
        return real(store)

    SQLiteStore.node_running = hook  # type: ignore[method-assign]
    try:
        yield
    finally:
        SQLiteStore.node_running = real  # type: ignore[method-assign]


async def waiting_order(store: str) -> None:
    """Workflow ``o`` waits for its one message in ``store``; no node holds it after."""
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(ops_app.order, "pen", id="o")
        await until(lambda: node.workflow("o").status() == "waiting")


async def test_a_stale_offline_terminate_leaves_a_workflow_retried_since(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A tool read ``o`` (waiting, attempt 1) to terminate it; meanwhile another
    terminated it and a third retried it (attempt 2). The first tool's write is
    refused whole: a terminate never ends the attempt a retry started."""
    store = str(tmp_path / "s.db")
    await waiting_order(store)
    tool = tools.open_store(store)
    try:
        seen = tool.get_workflow("o")
        assert tools.terminate(tool, "o", "tool B") is True
        tools.retry(tool, "o")
        with pytest.raises(ValueError, match="changed since it was read"):
            tool.write(terminate_transaction(tool, seen, terminated("tool A")))
        rec = tool.get_workflow("o")
        assert (rec.status, rec.attempt) == ("pending", 2), (rec.status, rec.error)
    finally:
        tool.close()


async def test_an_offline_terminate_refuses_a_workflow_that_completed_meanwhile(
        tmp_path: Path, autojump_clock: Any) -> None:
    """``terminate`` found no node on the store and read ``o`` unfinished; before its
    write a node opened the store and ``o`` completed. The write is refused and the
    command says why (exit 1); the completed workflow keeps its result."""
    store = str(tmp_path / "s.db")
    await waiting_order(store)
    tool = tools.open_store(store)

    def a_node_finishes_it() -> None:
        async def run() -> None:
            async with garrison.open_node(store=store) as node:
                await node.workflow("o").signal("ship")
                assert await node.workflow("o").result() == "res-pen pay-pen ship"

        trio.run(run)

    try:
        with meanwhile(a_node_finishes_it), pytest.raises(
                tools.ToolError, match="it ended completed before the terminate reached it"
        ) as got:
            await trio.to_thread.run_sync(tools.terminate, tool, "o", "late")
        assert got.value.code == 1
        rec = tool.get_workflow("o")
        assert (rec.status, rec.result, rec.error) == (
            "completed", "res-pen pay-pen ship", None), (rec.status, rec.error)
    finally:
        tool.close()


async def test_an_offline_terminate_overtaken_by_a_terminate_and_a_retry_says_so(
        tmp_path: Path, autojump_clock: Any) -> None:
    """Between this terminate's read and its write another tool terminated and retried
    the workflow (attempt 2 runs): the write is refused and the command says so (exit
    1), not ``terminated`` (found by a review)."""
    store = str(tmp_path / "s.db")
    await waiting_order(store)
    tool = tools.open_store(store)

    def others_terminate_and_retry() -> None:
        assert tools.terminate(tool, "o", "the other tool") is True
        tools.retry(tool, "o")

    try:
        with meanwhile(others_terminate_and_retry), pytest.raises(
                tools.ToolError, match=r"it was retried before the terminate reached it "
                r"\(it is pending, attempt 2\); nothing was written"):
            tools.terminate(tool, "o", "this tool")
        rec = tool.get_workflow("o")
        assert (rec.status, rec.attempt) == ("pending", 2)
    finally:
        tool.close()


async def test_two_offline_terminates_at_once_both_succeed(
        tmp_path: Path, autojump_clock: Any) -> None:
    """Two tools terminate ``o`` at once with no node: the one whose write finds it
    ended by the other succeeds all the same (it ended as asked), and ``o`` ends once."""
    store = str(tmp_path / "s.db")
    await waiting_order(store)
    tool = tools.open_store(store)
    try:
        with meanwhile(lambda: tools.terminate(tool, "o", "the other tool")):
            assert tools.terminate(tool, "o", "this tool") is True
        rec = tool.get_workflow("o")
        assert (rec.status, rec.error.message, rec.attempt) == ("failed", "the other tool", 1)
    finally:
        tool.close()


async def test_terminate_of_a_workflow_that_completes_before_the_node_reads_it(
        tmp_path: Path, autojump_clock: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """With a node running, ``terminate`` read ``o`` unfinished, and ``o`` completed
    before the node read the request: the command says it ended completed (exit 1),
    never ``terminated (failed: ...)``."""
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(ops_app.order, "pen", id="o")
        await until(lambda: node.workflow("o").status() == "waiting")

        async def finish() -> None:
            await node.workflow("o").signal("ship")
            await node.workflow("o").result()

        with meanwhile(lambda: trio.from_thread.run(finish)):
            code, out, err = await trio.to_thread.run_sync(
                lambda: cli_here(capsys, "--store", store, "terminate", "o", "--json"))
        assert node.workflow("o").status() == "completed"
    assert (code, out) == (1, ""), (code, out, err)
    assert "it ended completed before the terminate reached it" in err


async def test_a_node_records_its_host_in_a_workflow_a_tool_started(
        store_spec: str, autojump_clock: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """``garrison workflows start`` names no host; the node that runs the workflow
    writes its own in the row (its children name it as their parent's host)."""
    async with garrison.open_node(store=store_spec):
        pass  # creates the store
    code, _out, err = cli_here(capsys, "--store", store_spec, "start", "ops_app:order",
                               '["pen"]', "--id", "o")
    assert code == 0, err
    with open_store(store_spec, lock=False) as s:
        assert s.get_workflow("o").host is None
    async with garrison.open_node(store=store_spec) as node:
        await until(lambda: node.workflow("o").status() == "waiting")
    with open_store(store_spec, lock=False) as s:
        assert s.get_workflow("o").host == "workflows"


async def _tool_started_parent_on_orders(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """A config whose only workflow host is ``orders``; parent ``p`` started by the
    command line, run by a node until it and its child wait. (store, child id)"""
    store = str(tmp_path / "s.db")
    config = tmp_path / "app.yaml"
    config.write_text('version: "1.0"\nnamespace: app\nentries:\n'
                      f'  - {{name: orders, kind: workflow.host, store: "{store}"}}\n')
    async with garrison.open_node(config=str(config)):
        pass  # creates the store
    code, _out, err = cli_here(capsys, "--store", store, "start", "ops_app:parent_of_one",
                               "--id", "p")
    assert code == 0, err
    async with garrison.open_node(config=str(config)) as node:
        s = node.hosts["app:orders"].store
        await until(lambda: len(s.list_workflows(status="waiting")) == 2)
        children = [r.workflow_id for r in s.list_workflows() if r.workflow_id != "p"]
    assert len(children) == 1, children
    return store, children[0]


async def test_an_offline_terminate_takes_the_children_of_a_tool_started_parent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, child = await _tool_started_parent_on_orders(tmp_path, capsys)
    code, _out, err = cli_here(capsys, "--store", store, "terminate", "p")
    assert code == 0, err
    with open_store(store, lock=False) as s:
        assert s.get_workflow("p").status == "failed"
        assert s.get_workflow(child).status == "failed"


async def test_the_console_lists_the_children_of_a_tool_started_parent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, child = await _tool_started_parent_on_orders(tmp_path, capsys)
    with open_store(store, lock=False) as s:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(
                StoreBackend(s))), base_url="http://127.0.0.1:8233") as c:
            r = await c.get("/api/workflows/p")
    assert r.status_code == 200
    assert [ch["workflow_id"] for ch in r.json()["children"]] == [child], r.json()


def _three_with_n(store: str) -> None:
    with open_store(store) as s:
        for i in range(3):
            s.write(Transaction().create_workflow(f"w{i}", "app:flow", [i], search={"n": i}))
        s.write(Transaction().create_workflow("wl", "app:flow", [], search={"n": [1]}))


def test_a_search_key_given_twice_must_match_both_values(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--search`` repeats, every one must match: ``n=1`` and ``n=2`` match nothing;
    the same value twice is the filter once."""
    store = str(tmp_path / "s.db")
    _three_with_n(store)

    def ids(*filters: str) -> list[str]:
        args = [a for f in filters for a in ("--search", f)]
        code, out, err = cli_here(capsys, "--store", store, "list", "--json", *args)
        assert code == 0, err
        return sorted(w["workflow_id"] for w in json.loads(out))

    assert ids("n=1", "n=2") == []
    assert ids("n=1", "n=1") == ["w1"]
    assert ids("n=1", "n=1.0") == ["w1"]  # (the same JSON number)
    assert ids("n=true", "n=1") == []  # (true is not 1, at any depth)
    assert ids("n=[1]", "n=[1]") == ["wl"]
    assert ids("n=[true]", "n=[1]") == []
    code, out, _err = cli_here(capsys, "--store", store, "list", "--search", "n=1",
                               "--search", "n=2")
    assert (code, out.strip()) == (0, "no workflows")


async def test_the_console_matches_every_repeated_search_key(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    _three_with_n(store)
    with open_store(store, lock=False) as s:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(
                StoreBackend(s))), base_url="http://127.0.0.1:8233") as c:
            both = await c.get("/api/workflows?search=n=1&search=n=2")
            same = await c.get("/api/workflows?search=n=1&search=n=1")
    assert both.status_code == 200 and both.json() == {"workflows": [], "next": None}
    assert [w["workflow_id"] for w in same.json()["workflows"]] == ["w1"]


@pytest.mark.parametrize("entry", ["cli", "bulk", "console"])
async def test_each_retry_entry_point_forgets_the_failed_attempts_monitors(
        store_spec: str, entry: str, autojump_clock: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A retry by ``garrison workflows retry ID``, a bulk retry of a selection and the
    console's Retry, without a node, forgets the monitors of the failed workflow in
    the retry's write (told of its failure, they are not of the run the retry starts),
    on both stores: o, which monitored the first attempt, hears of nothing more."""
    from garrison import Pid

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await node.start_workflow(ops_app.monitors_each_attempt, "workflows/t", 1, id="o")
        with trio.fail_after(60):
            while "monitor" not in [str(r.kind) for r in node.workflow("o").history()]:
                await trio.sleep(0.01)
        await node.workflow("t").signal("fail1")
        with pytest.raises(garrison.WorkflowFailed, match="told to fail: fail1"):
            await node.workflow("t").result()
    with open_store(store_spec, lock=False) as s:
        assert s.monitors("t") == [Pid("workflows", "o")]
    if entry == "console":
        with open_store(store_spec, lock=False) as s:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(
                    StoreBackend(s))), base_url="http://127.0.0.1:8233") as c:
                await c.get("/")  # the CSRF cookie
                r = await c.post("/api/workflows/t/retry", headers={
                    "X-Garrison-CSRF": c.cookies["garrison_csrf_8233"]})
            assert r.status_code == 200, r.text
    else:
        args = ("t",) if entry == "cli" else ("--status", "failed", "--yes")
        code, _out, err = await trio.to_thread.run_sync(
            lambda: cli_here(capsys, "--store", store_spec, "retry", *args))
        assert code == 0, err
    with open_store(store_spec, lock=False) as s:
        assert (s.get_workflow("t").attempt, s.monitors("t")) == (2, [])
