"""`garrison workflows --store DB ...` against a real store, with and without a node.

``store_path`` is a SQLite file or a PostgreSQL URL (both run); the damaged-file
tests are SQLite's.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import workflow_app
from _stores import no_digit_limit

import garrison
from garrison import process, workflow
from garrison.persistence import SCHEMA_VERSION, SQLiteStore, Transaction, open_store

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "garrison", "workflows", *args], cwd=ROOT,
                          text=True, capture_output=True, timeout=60)


@pytest.fixture
def store_path(store_spec: str) -> str:
    return store_spec


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
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


async def test_show_lists_sleeps_and_workflow_timer_deadlines(store_path: str) -> None:
    """A ``workflow.timer`` raced against a promise is a pending timer too (it lives in
    the journal, not the store's timers table); ``show`` lists it as the console does."""
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(workflow_app.approval_or_deadline, id="t-1")
        await node.start_workflow(workflow_app.approval, "expense 7", id="w-1")
        await trio.sleep(0.01)
    show = json.loads(cli("--store", store_path, "show", "t-1", "--json").stdout)
    assert [(t["seq"], t["kind"]) for t in show["timers"]] == [(2, "timer")], show
    assert show["timers"][0]["deadline"].endswith("Z")
    done = cli("--store", store_path, "show", "t-1")
    assert done.returncode == 0 and "timer" in done.stdout, done.stderr
    # a workflow waiting for a message only has none
    show = json.loads(cli("--store", store_path, "show", "w-1", "--json").stdout)
    assert show["timers"] == []


async def test_show_lists_a_timer_a_first_race_decided_as_its_deadline_is_ahead(
        store_path: str) -> None:
    """probe p20: a ``workflow.timer("1h")`` that lost a ``first()`` race is listed
    while its deadline is ahead, though the workflow now waits for a message only. The
    journal cannot tell it from one the code will await or race again (which it may:
    a timer may be awaited any number of times), so README says so: every timer made
    and not yet due, a decided race's too."""
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(workflow_app.lost_race_then_waits, id="w")
        await trio.sleep(0.05)
        await node.workflow("w").promise("go").resolve(1)
        await trio.sleep(0.05)
        assert node.workflow("w").status() == "waiting"
    show = json.loads(cli("--store", store_path, "show", "w", "--json").stdout)
    assert [(t["seq"], t["kind"]) for t in show["timers"]] == [(1, "timer")], show


async def test_history_shows_a_sleeps_deadline_as_a_time(
        sqlite_path: str, autojump_clock: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The table showed a durable sleep's outcome as stored, ``{"deadline":1796319885.2}``
    (unix seconds), and a ``workflow.now()`` as a bare number; ``--json`` keeps the
    stored outcomes."""
    async with garrison.open_node(store=sqlite_path) as node:
        await node.start_workflow(workflow_app.sleeper, "1h", id="s-1")
        await node.workflow("s-1").result()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "history", "s-1")
    assert code == 0, err
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    now, sleep = (line.split() for line in out.splitlines()[1:3])
    assert now[2] == "now" and re.fullmatch(iso, now[-1]), now  # workflow.now() too
    assert sleep[2] == "sleep" and sleep[-2] == "deadline", sleep
    assert re.fullmatch(iso, sleep[-1]), sleep
    code, out, err = cli_here(capsys, "--store", sqlite_path, "history", "s-1", "--json")
    assert [type(r["outcome"]) for r in json.loads(out)[:2]] == [float, dict]
    assert isinstance(json.loads(out)[1]["outcome"]["deadline"], float)


async def _no_steps(x: int) -> int:
    return x


async def test_history_of_a_workflow_that_ended_without_records_says_so(
        sqlite_path: str, autojump_clock: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """helper-393: ``history`` of a completed workflow that recorded nothing said "has
    no journal records yet": no record comes to a finished one. One that still runs
    (waiting for its first message) has none yet."""
    async with garrison.open_node(store=sqlite_path) as node:
        await node.start_workflow(_no_steps, 7, id="quick")
        assert await node.workflow("quick").result() == 7
        await node.start_workflow(workflow_app.approval, "expense 42", id="wait-1")
        await trio.testing.wait_all_tasks_blocked()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "history", "quick")
    assert (code, out, err) == (0, "workflow 'quick' has no journal records: it ended "
                                   "(completed) without recording a step\n", ""), (out, err)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "history", "wait-1")
    assert (code, out) == (0, "workflow 'wait-1' has no journal records yet\n"), (out, err)


async def test_history_wide_shows_a_long_outcome_whole(
        sqlite_path: str, autojump_clock: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A received message's payload was cut at 60 characters (who approved: unseen),
    and ``history --wide`` was refused as an unknown argument (``list`` has it)."""
    long = {"by": "ann", "note": "x" * 80}
    async with garrison.open_node(store=sqlite_path) as node:
        pid = await node.start_workflow(workflow_app.receiver, id="r-1")
        await node.send(pid, "approve", long)
        await node.workflow("r-1").result()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "history", "r-1")
    assert code == 0 and "x" * 80 not in out and "…" in out, (out, err)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "history", "r-1", "--wide")
    assert code == 0, err
    assert '"payload":{"by":"ann","note":"' + "x" * 80 + '"}' in out, out


async def test_show_tells_a_sleep_from_a_receive_timeout(store_path: str) -> None:
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(workflow_app.sleeper, "1h", id="s-1")
        await node.start_workflow(workflow_app.receiver, "1h", id="r-1")
        await trio.sleep(0.01)
    for wid, kind in (("s-1", "sleep"), ("r-1", "receive")):
        show = json.loads(cli("--store", store_path, "show", wid, "--json").stdout)
        assert [t["kind"] for t in show["timers"]] == [kind], show


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


@pytest.mark.parametrize("action", ["signal", "resolve", "reject"])
def test_a_write_into_a_workflow_that_ends_meanwhile_says_it_ended(
        store_path: str, action: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tool's look at the workflow and its write are one step: a workflow that
    ends between the tool's read (which found it waiting) and its write gets nothing
    (a signal kept in the inbox of a finished workflow is never read, and the
    command said it was queued); the command says the workflow had ended."""
    from garrison import _store_tools as tools

    with open_store(store_path) as store:
        store.write(Transaction().create_workflow("w-1", "app:flow", status="waiting"))
    original = tools.refuse_final
    ended: list[str] = []

    def refuse_then_end(rec: Any, what: str) -> None:
        original(rec, what)
        if not ended:  # the workflow ends (another writer) right after the tool's check
            with open_store(store_path, lock=False) as other:
                other.write(Transaction().update_workflow("w-1", status="completed"))
            ended.append(rec.workflow_id)

    monkeypatch.setattr(tools, "refuse_final", refuse_then_end)
    tool = tools.open_store(store_path)
    try:
        with pytest.raises(tools.ToolError) as caught:
            if action == "signal":
                tools.signal(tool, "w-1", "approve", "ana")
            elif action == "resolve":
                tools.resolve(tool, "w-1", "payment", 1)
            else:
                tools.reject(tool, "w-1", "payment", "no")
        assert ended == ["w-1"]
        assert caught.value.code == 1
        assert "workflow 'w-1'" in str(caught.value)
        assert "it is completed" in str(caught.value), str(caught.value)
        assert tool.pending_messages("w-1") == []
        assert tool.get_promise("w-1", "payment") is None
    finally:
        tool.close()


async def test_cancel_from_the_cli(store_path: str) -> None:
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(workflow_app.cancellable, id="c-1")
        await trio.sleep(0.01)
    done = cli("--store", store_path, "cancel", "c-1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"workflow_id": "c-1", "cancel_requested": True,
                                       "cancelled": False}
    async with garrison.open_node(store=store_path) as node:
        with trio.fail_after(10), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("c-1").result()
        assert node.workflow("c-1").status() == "cancelled"


async def test_clear_errors(store_path: str, tmp_path: Path) -> None:
    await _seed(store_path)
    missing = cli("--store", str(tmp_path / "nope.db"), "list")
    assert missing.returncode == 2 and "no workflow store" in missing.stderr
    assert "a node creates it the first time it opens it" in missing.stderr
    unknown = cli("--store", store_path, "show", "ghost")
    assert unknown.returncode == 1 and "no workflow 'ghost'" in unknown.stderr
    bad_json = cli("--store", store_path, "signal", "wait-1", "approve", "{oops")
    assert bad_json.returncode == 2 and "must be JSON" in bad_json.stderr
    finished = cli("--store", store_path, "signal", "done-1", "approve", "1")
    assert finished.returncode == 1 and "it is completed" in finished.stderr
    for out in (missing, unknown, bad_json, finished):
        assert "Traceback" not in out.stderr


async def test_start_on_a_store_no_node_opened_yet_makes_it(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """API.md: ``garrison workflows start`` drives the store also while no node runs.
    On a store no node had opened yet (work queued before the first node is deployed)
    it was refused (``no workflow store``). ``start`` makes the store, as a node's first
    open would, and says so; a start it refuses makes none, and the commands that only
    read or act on workflows still refuse a missing store."""
    code, _out, err = cli_here(capsys, "--store", store_path, "start",
                               "workflow_app:no_such", "[]")
    assert code == 2 and "cannot import 'workflow_app:no_such'" in err, err
    code, _out, err = cli_here(capsys, "--store", store_path, "list")
    assert code == 2 and ("no garrison store here" in err or "no workflow store" in err), err
    code, out, err = cli_here(capsys, "--store", store_path, "start", "workflow_app:steps",
                              "[0, 2]", "--id", "first")
    assert code == 0 and out == "workflow 'first' started (workflow_app:steps)\n", (out, err)
    assert err == (f"garrison workflows: created the store {store_path!r}, which no node "
                   "had opened yet; a node opening it runs the workflow\n")
    code, out, err = cli_here(capsys, "--store", store_path, "start", "workflow_app:steps",
                              "[0, 3]", "--id", "second")
    assert code == 0 and err == "", err
    async with garrison.open_node(store=store_path) as node:
        with trio.fail_after(10):
            assert await node.workflow("first").result() == 2
            assert await node.workflow("second").result() == 3


async def test_start_makes_a_store_a_symbolic_link_leads_to_as_a_node_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """helper-409: a store path that is a symbolic link to a file not made yet (the
    store on another disk, linked before the first deploy): a node's first open makes
    the store where the link leads; ``start`` linked its new store at the link's own
    name, found the name taken, and said ``no workflow store at 'app.db' (... or
    `garrison workflows start` ...)``, the command it was. It makes the store where the
    link leads now, and the node then runs the workflow."""
    (tmp_path / "data").mkdir()
    store = str(tmp_path / "app.db")
    os.symlink(tmp_path / "data" / "app.db", store)
    code, out, err = cli_here(capsys, "--store", store, "start", "workflow_app:steps",
                              "[0, 2]", "--id", "first")
    assert code == 0 and out == "workflow 'first' started (workflow_app:steps)\n", (out, err)
    assert err == (f"garrison workflows: created the store {store!r}, which no node had "
                   "opened yet; a node opening it runs the workflow\n")
    assert os.path.islink(store) and os.listdir(tmp_path / "data") == ["app.db"]
    async with garrison.open_node(store=store) as node:
        with trio.fail_after(10):
            assert await node.workflow("first").result() == 2


async def test_start_makes_the_store_on_a_file_system_without_hard_links(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-409: ``start`` makes a new store under a temporary name and hard-links it
    into place. On a file system without hard links (a FAT drive, some network and FUSE
    file systems: ``link`` fails with EPERM) the ``PermissionError`` escaped, a
    traceback, where a node's own first open makes its store there (it renames the
    file into place instead). ``start`` makes it as a node would there, and nothing
    else is left in the folder."""
    def no_links(src: object, dst: object, **kw: object) -> None:
        raise PermissionError(1, "Operation not permitted", src, None, dst)

    monkeypatch.setattr(os, "link", no_links)
    store = str(tmp_path / "app.db")
    code, out, err = cli_here(capsys, "--store", store, "start", "workflow_app:steps",
                              "[0, 2]", "--id", "first")
    assert code == 0 and out == "workflow 'first' started (workflow_app:steps)\n", (out, err)
    assert err == (f"garrison workflows: created the store {store!r}, which no node had "
                   "opened yet; a node opening it runs the workflow\n")
    assert sorted(os.listdir(tmp_path)) == ["app.db", "app.db.lock"]
    monkeypatch.undo()
    async with garrison.open_node(store=store) as node:
        with trio.fail_after(10):
            assert await node.workflow("first").result() == 2


def _make_at_once(path: str) -> tuple[list[str], list[str]]:
    """Three tools that create (``start``'s open) and a node open ``path`` at once:
    ``(what failed, the paths the tools said they made)``."""
    import threading

    from garrison import _store_tools as tools

    barrier = threading.Barrier(4)
    failed: list[str] = []
    made: list[str] = []

    def tool() -> None:
        barrier.wait()
        try:
            tools.open_store(path, create=made.append).close()
        except Exception as exc:
            failed.append(f"tool: {exc}")

    def node() -> None:
        barrier.wait()
        try:
            open_store(path).close()
        except Exception as exc:
            failed.append(f"node: {exc}")

    threads = [threading.Thread(target=tool) for _ in range(3)]
    threads.append(threading.Thread(target=node))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failed, made


def test_starts_and_a_node_making_the_same_store_at_once_all_open_it(store_path: str) -> None:
    """Three ``start``s and a node on a store nobody had made, at once: the first made
    it and the others failed (``no workflow store``: its file or schema was not whole
    yet), or the node was refused (``StoreLocked``: the maker held the node's lock)."""
    if store_path.startswith("postgresql"):
        paths = [store_path]  # (one schema: made once)
    else:
        paths = [f"{store_path}.{trial}" for trial in range(10)]
    for path in paths:
        failed, made = _make_at_once(path)
        assert failed == [] and len(made) <= 3, (failed, made)
    if not store_path.startswith("postgresql"):
        left = [f for f in os.listdir(os.path.dirname(store_path)) if ".new" in f]
        assert left == [], left


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


async def test_an_empty_promise_name_is_refused(sqlite_path: str) -> None:
    # a value stored under a name no workflow can declare (workflow.promise("") raises)
    # would be lost: refused as bad arguments, nothing written (before the store is
    # asked anything: one store shows it)
    store_path = sqlite_path
    await _seed_promise(store_path)
    for verb, value in (("resolve", "1"), ("reject", "no")):
        out = cli("--store", store_path, verb, "prom-1", "", value)
        assert out.returncode == 2, out.stderr
        assert "a promise name must be a non-empty string, got ''" in out.stderr
        assert "Traceback" not in out.stderr
    shown = json.loads(cli("--store", store_path, "show", "prom-1", "--json").stdout)
    assert "" not in shown["promises"]
    # bad arguments first, whatever the workflow (exit 1 "it is completed" or "no workflow")
    for verb, value in (("resolve", "1"), ("reject", "no")):
        out = cli("--store", store_path, verb, "no-such-workflow", "", value)
        assert out.returncode == 2, out.stderr
        assert "a promise name must be a non-empty string, got ''" in out.stderr


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


# -- damaged stores, bad arguments, pipes: one line on stderr, never a traceback ------


def test_start_on_a_postgresql_store_it_makes_says_so_without_the_password(
        postgres_stores_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """helper-206: the note of a store ``start`` made printed the URL as given, password
    and all (README: messages name a PostgreSQL store never with its password)."""
    import itertools

    schema = f"cli_pw_{next(itertools.count())}"
    url = postgres_stores_url.replace("postgres@", "postgres:s3cret@", 1) + \
        f"?schema={schema}"
    code, out, err = cli_here(capsys, "--store", url, "start", "workflow_app:steps",
                              "[0, 2]", "--id", "first")
    assert code == 0, err
    assert "s3cret" not in err + out, err
    shown = postgres_stores_url + f"?schema={schema}"
    assert err == (f"garrison workflows: created the store {shown!r}, which no node had "
                   "opened yet; a node opening it runs the workflow\n")
    code, out, err = cli_here(capsys, "--store", url, "show", "nope")
    assert code == 1 and "s3cret" not in err + out, err


def cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``garrison workflows ARGS`` in this process: an exception escaping it fails the
    test (it would be a traceback on the command line)."""
    from garrison._cli import build_parser

    parsed = build_parser().parse_args(["workflows", *args])
    code = parsed.func(parsed)
    out, err = capsys.readouterr()
    return code, out, err


def _plain_store(path: str) -> None:
    """A few workflows written straight to the store (no node: fast)."""
    with open_store(path) as s:
        for i in range(5):
            s.write(Transaction().create_workflow(f"w{i}", "app:flow", [i],
                                                  search={"n": i}))


async def test_an_empty_topic_or_rejection_message_is_refused_as_the_console_does(
        sqlite_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The console refuses a signal without a topic and a rejection without a message
    (400); the command line refuses them alike (exit 2), in the same words, nothing
    written."""
    from garrison.console._app import make_app
    from garrison.console._backend import StoreBackend

    _plain_store(sqlite_path)
    said = {"signal": "a signal needs a 'topic': a non-empty string, got ''",
            "reject": "a rejection needs a 'message': a non-empty string, got ''"}
    code, out, err = cli_here(capsys, "--store", sqlite_path, "signal", "w1", "")
    assert (code, out, err) == (2, "", f"garrison workflows: {said['signal']}\n")
    code, out, err = cli_here(capsys, "--store", sqlite_path, "reject", "w1", "p", "")
    assert (code, out, err) == (2, "", f"garrison workflows: {said['reject']}\n")
    with open_store(sqlite_path, lock=False) as s:
        assert s.pending_messages("w1") == [] and s.promises("w1") == []

        app = make_app(StoreBackend(s))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1:8233") as c:
            await c.get("/")  # the CSRF cookie
            headers = {"X-Garrison-CSRF": c.cookies["garrison_csrf_8233"]}  # (its port)
            r = await c.post("/api/workflows/w1/signal", json={"topic": ""}, headers=headers)
            assert (r.status_code, r.json()) == (400, {"error": said["signal"]})
            r = await c.post("/api/workflows/w1/promises/p/reject", json={"message": ""},
                             headers=headers)
            assert (r.status_code, r.json()) == (400, {"error": said["reject"]})


def _truncate_half(path: str) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _overwrite_workflows_table(path: str) -> None:
    conn = sqlite3.connect(path)
    page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'workflows'")
    root = page.fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * 4096)
        f.write(random.Random(3).randbytes(4096))


def _zero_length(path: str) -> None:
    os.truncate(path, 0)


def _text_file(path: str) -> None:
    Path(path).write_text("this is not a database\n" * 100)


def _other_app(path: str) -> None:
    os.unlink(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()


def _newer_schema(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()


def _missing_tables(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE inbox")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(("damage", "said"), [
    (_truncate_half, "damaged"),
    (_overwrite_workflows_table, "damaged"),
    (_zero_length, "truncated"),
    (_text_file, "not a SQLite database"),
    (_other_app, "not a garrison store"),
    (_newer_schema, "newer garrison"),
    (_missing_tables, "no table inbox"),
])  # fmt: skip
def test_a_damaged_store_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], sqlite_path: str, damage: Any, said: str
) -> None:
    store_path = sqlite_path
    _plain_store(store_path)
    assert not os.path.exists(store_path + "-wal")  # everything is in the file
    damage(store_path)
    for command in (["list"], ["show", "w1"], ["signal", "w1", "go"]):
        code, out, err = cli_here(capsys, "--store", store_path, *command)
        assert code == 2, (command, out, err)
        assert out == ""
        assert err.count("\n") == 1 and err.startswith("garrison workflows: "), err
        assert store_path in err and said in err, err


def test_unknown_status_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                         store_path: str) -> None:
    _plain_store(store_path)
    code, out, err = cli_here(capsys, "--store", store_path, "list", "--status", "bogus")
    assert code == 2 and out == ""
    assert "'bogus'" in err and "waiting" in err and err.count("\n") == 1


def test_a_search_value_no_attribute_can_hold_is_a_usage_error(
        capsys: pytest.CaptureFixture[str], store_path: str) -> None:
    """``--search a=NaN`` blamed the store ("SQLite error (malformed JSON)"): it is the
    argument's fault, exit 2 in the console's words; text that is no JSON at all is a
    plain string, as before."""
    _plain_store(store_path)
    for value, said in [("NaN", "NaN is not a JSON number"),
                        ("Infinity", "Infinity is not a JSON number"),
                        ("-Infinity", "-Infinity is not a JSON number"),
                        ("[1, NaN]", "NaN is not a JSON number"),
                        ("1e400", "1e400 is too large for a JSON number")]:
        code, out, err = cli_here(capsys, "--store", store_path, "list", "--search",
                                  f"a={value}")
        assert (code, out) == (2, ""), (value, out, err)
        assert err == f"garrison workflows: search 'a={value}': {said}" + (
            " (NaN and infinity cannot be stored)\n" if "NaN is" in said
            or "Infinity is" in said else " (it would be infinity)\n"), err
    for plain in ("NaNa", "Infinity and beyond"):
        code, out, err = cli_here(capsys, "--store", store_path, "list", "--search",
                                  f"a={plain}")
        assert (code, out, err) == (0, "no workflows\n", ""), (plain, out, err)
    # an integer past 64 bits, also inside a value: a traceback from the store's check
    for value in ("99999999999999999999", '{"b": 99999999999999999999}'):
        code, out, err = cli_here(capsys, "--store", store_path, "list", "--search",
                                  f"a={value}")
        assert (code, out) == (2, ""), (value, out, err)
        assert err == ("garrison workflows: search filter 'a' holds the integer "
                       "99999999999999999999, beyond 64 bits: no store compares it "
                       "exactly (give it as a string)\n"), err


def test_json_output_is_standard_json_whatever_the_store_holds(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """Python's JSON lets a store hold NaN and the infinities (a workflow's input,
    result, state, journal, inbox); --json printed them bare (NaN), which no other JSON
    reader takes. They are the strings "NaN", "Infinity", "-Infinity", as the
    console shows them. (A SQLite store: PostgreSQL's json columns refuse them.)"""
    store_path = sqlite_path
    nan, inf = float("nan"), float("inf")

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    with open_store(store_path) as s:
        s.write(Transaction().create_workflow("w1", "app:flow", [nan, {"x": inf}],
                                              search={"size": -inf})
                .append_journal("w1", 1, "activity", "app:ratio", [nan])
                .set_state("w1", "limits", [inf, -inf])
                .deliver("w1", "t", {"p": nan}, msg_id="m1")
                .create_promise("w1", "go"))
    code, out, err = cli_here(capsys, "--store", store_path, "show", "w1", "--json")
    assert code == 0, err
    shown = json.loads(out, parse_constant=refuse)
    assert shown["input"] == ["NaN", {"x": "Infinity"}]
    assert shown["search"] == {"size": "-Infinity"}
    assert shown["state"] == {"limits": ["Infinity", "-Infinity"]}
    assert [m["payload"] for m in shown["pending_messages"]] == [{"p": "NaN"}]
    code, out, err = cli_here(capsys, "--store", store_path, "list", "--json")
    assert code == 0, err
    assert json.loads(out, parse_constant=refuse)[0]["input"] == ["NaN", {"x": "Infinity"}]
    code, out, err = cli_here(capsys, "--store", store_path, "history", "w1", "--json")
    assert code == 0, err
    assert [r["outcome"] for r in json.loads(out, parse_constant=refuse)] == [["NaN"]]


def test_wide_and_json_show_search_attributes_whole(capsys: pytest.CaptureFixture[str],
                                                     store_path: str) -> None:
    long = "x" * 120
    with open_store(store_path) as s:
        s.write(Transaction().create_workflow("w1", "app:flow", [1], search={"note": long},
                                              memo={"by": "ann"}))
    code, out, _ = cli_here(capsys, "--store", store_path, "list")
    assert code == 0 and long not in out and "…" in out
    code, out, _ = cli_here(capsys, "--store", store_path, "list", "--wide")
    assert code == 0 and json.dumps({"note": long}, separators=(",", ":")) in out
    code, out, _ = cli_here(capsys, "--store", store_path, "list", "--json")
    [record] = json.loads(out)
    assert record["search"] == {"note": long} and record["memo"] == {"by": "ann"}
    assert record["input"] == [1] and record["attempt"] == 1 and record["run_id"]
    assert {"result", "error", "parent", "host", "cancel_requested"} <= set(record)


def test_history_marks_sequence_numbers_without_a_record(
    capsys: pytest.CaptureFixture[str], store_path: str
) -> None:
    with open_store(store_path) as s:
        tx = Transaction().create_workflow("w1", "app:flow")
        for seq in (1, 4, 6):
            tx.append_journal("w1", seq, "now", "", 1.5)
        s.write(tx)
    code, out, _ = cli_here(capsys, "--store", store_path, "history", "w1")
    assert code == 0
    seqs = [line.split()[0] for line in out.splitlines()[1:]]
    assert seqs == ["1", "2-3", "4", "5", "6"]
    assert out.count("no record") == 2
    # --json lists the records only
    code, out, _ = cli_here(capsys, "--store", store_path, "history", "w1", "--json")
    assert [r["seq"] for r in json.loads(out)] == [1, 4, 6]


async def gappy() -> str:
    """A send to a name nobody holds takes a sequence number and records what it raised
    (it recorded nothing before: a gap, and a replay sent it live)."""
    workflow.now()
    try:
        await process.send("nobody-has-this-name", "hello", 1)
    except garrison.NoSuchProcess:
        pass
    workflow.now()
    return "done"


async def test_a_failed_send_is_recorded_in_the_history(
    capsys: pytest.CaptureFixture[str], store_path: str
) -> None:
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(gappy, id="g-1")
        assert await node.workflow("g-1").result() == "done"
    code, out, _ = cli_here(capsys, "--store", store_path, "history", "g-1")
    assert code == 0
    rows = [line.split()[:3] for line in out.splitlines()[1:]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert "no record" not in out
    assert "send" in out.splitlines()[2] and "NoSuchProcess" in out.splitlines()[2]



def _long_journal(store_path: str) -> None:
    """A journal of 3-record pages' worth: seq 0 (a continued run's state), gaps (one
    in a page, one across two), a name and an attempt count that widen their columns
    only in a late page, outcomes stored with spaces (their stored size is not
    ``json.dumps``'s), a newline and non-ASCII text; a resolved promise and a pending
    timer in the export's head."""
    with open_store(store_path) as s:
        tx = Transaction().create_workflow("long", "app:flow", [1, "två"])
        tx.append_journal("long", 0, "continued", "", {"state": {"carried": [1, 2]}},
                          time=1796319885.25)
        for seq in (*range(1, 7), *range(9, 15), *range(17, 26)):
            name = "app:a_rather_long_activity_name" if seq == 23 else f"app:step{seq % 3}"
            tx.append_journal_text("long", seq, "activity", name,
                                   f'{{"ok": {{"n": {seq}, "note": "line\\nbreak é"}}}}',
                                   12 if seq == 24 else 1, 1796319885.0 + seq)
        tx.create_promise("long", "go").resolve_promise("long", "go", {"ok": True})
        tx.add_timer("long", 26, 1796400000.0, "sleep")
        s.write(tx)


def test_history_and_export_of_a_journal_of_many_pages_print_what_one_read_printed(
        capsys: pytest.CaptureFixture[str], store_path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-447: ``history`` and ``export`` read the journal a page at a time. Their
    output is what one read of it all printed, to the byte: the table's columns as wide
    as the widest value of any page (a long name in the last page widens its column in
    the first), the gaps between pages noted, ``--json`` one array, and the export the
    JSON ``History.to_json()`` gives (what ``garrison.testing.replay`` reads back)."""
    from garrison import _store_tools
    from garrison.hosts.workflow import History

    _long_journal(store_path)
    commands = [("history",), ("history", "--wide"), ("history", "--json"), ("export",)]
    whole = {}
    # (one read: the old output)
    monkeypatch.setattr(_store_tools, "JOURNAL_PAGE", 1000, raising=False)
    for command in commands:
        code, whole[command], err = cli_here(capsys, "--store", store_path, *command, "long")
        assert code == 0, err
    monkeypatch.setattr(_store_tools, "JOURNAL_PAGE", 3, raising=False)
    for command in commands:
        assert cli_here(capsys, "--store", store_path, *command, "long") == (
            0, whole[command], ""), command
    # the export is the history's JSON as one read of the store gives it, and reads back
    with open_store(store_path) as s:
        history = History.from_store(s, "long")
    assert whole["export",] == json.dumps(history.to_json(), indent=2, default=str) + "\n"
    back = History.from_json(json.loads(whole["export",]))
    assert back.to_json() == history.to_json()
    assert [e.seq for e in back.journal] == [0, *range(1, 7), *range(9, 15), *range(17, 26)]
    table = whole["history",].splitlines()
    assert table[0].index("NAME") < table[0].index("ATTEMPTS") - len(
        "app:a_rather_long_activity_name"), table[0]
    assert [line.split()[0] for line in table[1:]].count("15-16") == 1


def test_history_and_export_hold_a_page_of_the_journal_not_the_whole(
        capsys: pytest.CaptureFixture[str], store_path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-447: ``history`` and ``export`` held a workflow's whole journal, decoded
    (430 and 630 MB of memory for 200 MB of step results). Each read of the store now
    returns one page of records at most."""
    from garrison import _store_tools
    from garrison.persistence import PostgresStore, SQLiteStore

    _long_journal(store_path)
    monkeypatch.setattr(_store_tools, "JOURNAL_PAGE", 3, raising=False)
    reads: list[int] = []
    for cls in (SQLiteStore, PostgresStore):
        for method in ("journal", "journal_page", "journal_entries"):
            read = getattr(cls, method, None)
            if read is None:
                continue

            def counted(*args: Any, _read: Any = read, **kwargs: Any) -> Any:
                got = _read(*args, **kwargs)
                reads.append(len(got[0] if isinstance(got, tuple) else got))
                return got

            monkeypatch.setattr(cls, method, counted)
    for command in (("history",), ("history", "--json"), ("export",)):
        reads.clear()
        code, out, err = cli_here(capsys, "--store", store_path, *command, "long")
        assert code == 0 and "25" in out, (command, err)
        assert reads and max(reads) <= 3, (command, reads)


def _long_journal_whose_run_changes(store_path: str, monkeypatch: pytest.MonkeyPatch
                                    ) -> list[int]:
    """``_long_journal`` read 3 records a page, whose workflow begins another run (its
    run id changes) as the tenth page is read: the second read's second page. The list
    returned counts the pages read (clear it to read again unchanged)."""
    from _stores import sql

    from garrison import _store_tools
    from garrison.persistence import PostgresStore, SQLiteStore

    _long_journal(store_path)
    monkeypatch.setattr(_store_tools, "JOURNAL_PAGE", 3, raising=False)
    calls: list[int] = []
    for cls in (SQLiteStore, PostgresStore):
        read = cls.journal_page

        def page(*args: Any, _read: Any = read, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 10:
                sql(store_path, "UPDATE workflows SET run_id = 'run-2' "
                                "WHERE workflow_id = 'long'")
            return _read(*args, **kwargs)

        monkeypatch.setattr(cls, "journal_page", page)
    return calls


def test_an_export_read_across_another_run_says_so(
        capsys: pytest.CaptureFixture[str], store_path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-447: an export reads the journal page by page. A continue-as-new or a
    retry between two pages (a node runs the workflow) could mix two runs in the file
    a golden test keeps: the export says so, exit 1, and to export it again."""
    calls = _long_journal_whose_run_changes(store_path, monkeypatch)
    code, out, err = cli_here(capsys, "--store", store_path, "export", "long")
    assert (code, err) == (1, "garrison workflows: workflow 'long' began another run (a "
                              "continue-as-new or a retry) while it was exported: the "
                              "history printed may mix two runs; export it again\n"), err
    assert len(json.loads(out)["journal"]) == 22
    calls.clear()
    assert cli_here(capsys, "--store", store_path, "export", "long")[::2] == (0, "")


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_a_history_read_across_another_run_says_so(
        capsys: pytest.CaptureFixture[str], store_path: str,
        monkeypatch: pytest.MonkeyPatch, json_flag: tuple[str, ...]) -> None:
    """``history`` reads the journal page by page, as ``export`` does: a continue-as-new
    or a retry between two pages (a node runs the workflow) mixed two runs in its table
    (or its --json) with no sign. It says so, as export does: what was printed stands,
    then the error, exit 1, and to read it again."""
    calls = _long_journal_whose_run_changes(store_path, monkeypatch)
    code, out, err = cli_here(capsys, "--store", store_path, "history", "long", *json_flag)
    assert (code, err) == (1, "garrison workflows: workflow 'long' began another run (a "
                              "continue-as-new or a retry) while its history was read: "
                              "the history printed may mix two runs; read it again\n"), err
    if json_flag:
        assert len(json.loads(out)) == 22
    else:
        assert out.splitlines()[0].split() == ["SEQ", "TIME", "KIND", "NAME", "ATTEMPTS",
                                               "OUTCOME"], out
    calls.clear()
    assert cli_here(capsys, "--store", store_path, "history", "long", *json_flag)[::2] == (
        0, "")


def test_a_closed_pipe_ends_quietly(store_path: str) -> None:
    """``garrison workflows show ID | head -1``: the reader is gone before the output."""
    _plain_store(store_path)
    read, write = os.pipe()
    os.close(read)  # nobody will read: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "garrison", "workflows", "--store", store_path,
             "show", "w1"],
            cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 128 + signal.SIGPIPE


def test_an_output_that_cannot_be_written_is_not_called_a_store_failure(
        sqlite_path: str) -> None:
    """``signal ... > /dev/full``: the signal was queued, then printing its line failed;
    that was reported as ``store 'app.db': No space left on device``, exit 2 (an
    unusable store: a script retries, and signals twice). With standard output closed
    (``>&-``) a command was a traceback (``garrison check``, ``export``) or ran with its
    output lost. (SQLite's store: its errors are the ``OSError`` a full output raises,
    where the mix-up was.)"""
    store_path = sqlite_path
    _plain_store(store_path)

    def cli(*argv: str, stdout: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "garrison", *argv], cwd=ROOT,
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60)

    with open("/dev/full", "w") as full:
        done = cli("workflows", "--store", store_path, "signal", "w1", "go", "1",
                   stdout=full)
        assert done.returncode == 1, done.stderr
        assert done.stderr == ("garrison workflows: cannot write the output: No space left "
                               "on device (what the command changed in the store before "
                               "printing is changed)\n")
        done = cli("check", str(ROOT / "examples" / "demo" / "app.yaml"), stdout=full)
        assert done.returncode == 2  # (check's 1 says the config is invalid: it is not)
        assert done.stderr == "garrison check: cannot write the output: No space left on device\n"
    with open_store(store_path) as s:  # the signal was queued, once
        assert [m.topic for m in s.pending_messages("w1")] == ["go"]
    code = ("import os, sys; os.close(1); sys.stdout = None; from garrison._cli import main; "
            f"sys.exit(main(['workflows', '--store', {store_path!r}, 'signal', 'w1', 'x']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "standard output is closed" in done.stderr and "nothing was done" in done.stderr
    with open_store(store_path) as s:
        assert [m.topic for m in s.pending_messages("w1")] == ["go"]
    done = subprocess.run([sys.executable, "-m", "garrison", "check",
                           str(ROOT / "examples" / "demo" / "app.yaml")], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=60, pass_fds=(), preexec_fn=lambda: os.close(1))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_a_read_only_file_system_is_read_and_a_write_is_one_line_and_exit_2(
        tmp_path: Path) -> None:
    """A backup on a read-only mount: the commands that only read opened it as a tool
    (to write) and failed, "cannot be opened for writing: Read-only file system"; they
    read it read-only now. A write still fails, in one line, exit 2."""
    from test_persistence_file import _read_only_available, run_on_read_only

    if not _read_only_available(tmp_path):
        pytest.skip("needs unshare and mount in a user namespace")
    data = tmp_path / "ro"
    data.mkdir()
    path = str(data / "wf.db")
    _plain_store(path)
    code = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from garrison._cli import main
        for args in (["list"], ["show", "w1"], ["history", "w1"], ["export", "w1"],
                     ["signal", "w1", "go"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(["workflows", "--store", {path!r}, *args])
            print(args[0], code, "w1" in out.getvalue(), flush=True)
        """
    )
    done = run_on_read_only(data, code)
    assert done.stdout.splitlines() == ["list 0 True", "show 0 True", "history 0 True",
                                        "export 0 True", "signal 2 False"], done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert path in done.stderr and "Read-only file system" in done.stderr


def test_a_config_naming_a_store_on_a_read_only_file_system_reads_it_as_store_does(
        tmp_path: Path) -> None:
    """helper-409: ``--config app.yaml`` gives the commands its workflow host's store,
    as ``--store`` would; but the config was checked as a node opens it, so a backup on
    a read-only mount was refused as an invalid config (``field 'store': cannot be
    opened: ... cannot be opened for writing: Read-only file system``) by ``list``,
    ``show`` and ``export``, which read it with ``--store``. They read it now; a write
    fails as it does with ``--store``, naming the store, exit 2."""
    from test_persistence_file import _read_only_available, run_on_read_only

    if not _read_only_available(tmp_path):
        pytest.skip("needs unshare and mount in a user namespace")
    data = tmp_path / "ro"
    data.mkdir()
    path = str(data / "wf.db")
    _plain_store(path)
    config = data / "app.yaml"
    config.write_text("version: '1.0'\nnamespace: app\nentries:\n"
                      "  - {name: workflows, kind: workflow.host, store: wf.db}\n")
    code = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from garrison._cli import main
        for group, args in (("workflows", ["list"]), ("workflows", ["show", "w1"]),
                            ("workflows", ["export", "w1"]), ("schedules", ["list"]),
                            ("workflows", ["signal", "w1", "go"])):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main([group, "--config", {str(config)!r}, *args])
            print(args[0], code, "w1" in out.getvalue(), flush=True)
        """
    )
    done = run_on_read_only(data, code)
    assert done.stdout.splitlines() == ["list 0 True", "show 0 True", "export 0 True",
                                        "list 0 False", "signal 2 False"], done.stderr
    assert done.stderr == (f"garrison workflows: store {path!r}: cannot use the file "
                           "(unable to open database file): it cannot be opened for "
                           "writing: Read-only file system\n"), done.stderr


def test_start_on_a_store_in_a_folder_that_cannot_be_searched_says_so(
        tmp_path: Path) -> None:
    """helper-409: ``start`` creates a store it does not find; one in a folder this
    process may not search (no ``x`` bit: another user's) could not be found either,
    and ``start`` said ``cannot create it: cannot create files in ...`` of a store that
    is there. It says what the other commands say of it now: the file cannot be read."""
    from test_persistence_file import run_without_override

    locked = tmp_path / "locked"
    locked.mkdir()
    store = str(locked / "app.db")
    _plain_store(store)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from garrison._cli import main
        for args in (["list"], ["start", "workflow_app:steps", "[1]"]):
            print(main(["workflows", "--store", {store!r}, *args]), flush=True)
    """)
    locked.chmod(0o600)
    try:
        done = run_without_override(code)
    finally:
        locked.chmod(0o700)
    assert done.stdout == "2\n2\n", done.stderr
    said = f"garrison workflows: store {store!r}: cannot read the file: Permission denied\n"
    assert done.stderr == said * 2


def test_a_start_that_cannot_create_its_store_names_the_store_not_a_temporary_file(
        tmp_path: Path) -> None:
    """helper-409: ``start`` creates a store that does not exist, made whole under a
    hidden temporary name first. In a folder where no file can be made (a read-only
    mount) its error named that file, ``store '.../.new.db.<hex>.new': cannot open its
    lock file '.../.new.db.<hex>.new.lock': ...``, a name the operator never gave. It
    names the store given and its folder now, and leaves nothing."""
    from test_persistence_file import _read_only_available, run_on_read_only

    if not _read_only_available(tmp_path):
        pytest.skip("needs unshare and mount in a user namespace")
    data = tmp_path / "ro"
    data.mkdir()
    path = str(data / "new.db")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from garrison._cli import main
        print(main(["workflows", "--store", {path!r}, "start", "workflow_app:steps",
                    "[1]"]))
        """
    )
    done = run_on_read_only(data, code)
    assert done.stdout == "2\n", done.stderr
    assert done.stderr == (f"garrison workflows: store {path!r}: cannot create it: "
                           f"cannot create files in {str(data)!r}: Read-only file "
                           "system\n"), done.stderr
    assert os.listdir(data) == []


async def test_many_tool_writes_for_one_workflow_are_picked_up_with_one_look(
        sqlite_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Signals a tool queued one by one for one workflow leave a wakeup each; the node
    takes them together and looks at that workflow's rows once, not once per wakeup:
    each look reads its whole pending inbox (a tool queueing 1,000 signals cost the
    node 1,000 reads of up to 1,000 messages, 7 s)."""
    from garrison.hosts.workflow import _recovery
    from garrison.persistence import SQLiteStore

    async with garrison.open_node(store=sqlite_path) as node:
        await node.start_workflow(workflow_app.collector, 3, id="c")
        await trio.sleep(0.01)
    with SQLiteStore(sqlite_path, lock=False) as tool:  # while no node runs
        for i in range(3):
            tool.deliver("c", "m", i)
    looks: list[str] = []
    refresh = _recovery.refresh

    def counted(host: Any, wid: str, **kw: Any) -> None:
        looks.append(wid)
        refresh(host, wid, **kw)

    monkeypatch.setattr(_recovery, "refresh", counted)
    async with garrison.open_node(store=sqlite_path) as node:
        with trio.fail_after(10):
            assert await node.workflow("c").result() == [0, 1, 2]
    assert looks == ["c"]


async def test_too_many_search_filters_are_refused_on_every_surface_naming_the_limit(
        capsys: pytest.CaptureFixture[str], store_path: str) -> None:
    """About a thousand ``search=`` filters made the console a 500 (SQLite: "Expression
    tree is too large"). At most 64: more is a 400 in the console, exit 2 with one line
    on the command line, ValueError from ``list_workflows`` of either store."""
    from garrison.console._app import make_app
    from garrison.console._backend import StoreBackend

    _plain_store(store_path)
    many = [f"k{i}=1" for i in range(1000)]
    args = [arg for item in many[:65] for arg in ("--search", item)]
    code, out, err = cli_here(capsys, "--store", store_path, "list", *args)
    assert (code, out) == (2, ""), (out, err)
    assert err == ("garrison workflows: too many search filters (65 keys): at most 64 "
                   "(each KEY=VALUE must match)\n"), err
    args = [arg for item in many[:64] for arg in ("--search", item)]
    assert cli_here(capsys, "--store", store_path, "list", *args) == (0, "no workflows\n", "")

    with open_store(store_path, lock=False) as s:
        with pytest.raises(ValueError, match=r"too many search filters \(65\): a query "
                                             r"takes at most 64"):
            s.list_workflows(search={f"k{i}": 1 for i in range(65)})
        assert s.list_workflows(search={f"k{i}": 1 for i in range(64)}) == []
        assert [r.workflow_id for r in s.list_workflows(search={"n": 3})] == ["w3"]

        app = make_app(StoreBackend(s))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1:8233") as c:
            for n in (65, 1000):
                r = await c.get("/api/workflows", params={"search": many[:n]})
                assert r.status_code == 400, r.text
                assert r.json() == {"error": f"too many search filters ({n} keys): at most "
                                             "64 (each KEY=VALUE must match)"}
            r = await c.get("/api/workflows", params={"search": many[:64]})
            assert (r.status_code, r.json()["workflows"]) == (200, [])


def test_start_takes_an_entry_id_of_a_config(capsys: pytest.CaptureFixture[str],
                                             sqlite_path: str, tmp_path: Path) -> None:
    """API.md: any target may be an entry id. `garrison workflows start app:wf` said
    only "No module named 'app'"; with --config FILE it starts the entry's workflow
    (recorded under its function's module:qualname, which a node imports), and
    without it the error says that an entry id needs --config."""
    config = tmp_path / "app.yaml"
    config.write_text(textwrap.dedent("""\
        version: "1.0"
        namespace: app
        entries:
          - {name: wf, kind: workflow.py, source: "workflow_app:steps"}
        """))
    open_store(sqlite_path).close()  # (a node made it)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "start", "app:wf", "[1]",
                             "--id", "w1", "--config", str(config))
    assert code == 0, err
    # the name it is stored under, not the entry id given (a new user looked for it)
    assert out == "workflow 'w1' started (workflow_app:steps)\n"
    with open_store(sqlite_path, lock=False) as store:
        rec = store.get_workflow("w1")
        assert rec is not None and rec.name == "workflow_app:steps"
    # the same id again: said with what it runs, and another function is named
    code, out, err = cli_here(capsys, "--store", sqlite_path, "start", "app:wf", "[1]",
                             "--id", "w1", "--config", str(config))
    assert (code, out) == (0, "workflow 'w1' exists already (workflow_app:steps, pending): "
                              "left as it is\n"), err
    # (other arguments for the same function: said too, the new work is not done)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "start", "app:wf", "[2]",
                             "--id", "w1", "--config", str(config))
    assert (code, out) == (0, "workflow 'w1' exists already (workflow_app:steps, pending), "
                              "started with other arguments ([1], not [2]): left as it "
                              "is\n"), err
    code, out, err = cli_here(capsys, "--store", sqlite_path, "start", "workflow_app:approval",
                             '["x"]', "--id", "w1", "--json")
    assert code == 0, err
    assert json.loads(out) == {"workflow_id": "w1", "created": False,
                               "name": "workflow_app:steps"}
    code, out, err = cli_here(capsys, "--store", sqlite_path, "start", "workflow_app:approval",
                             '["x"]', "--id", "w1")
    assert out == ("workflow 'w1' exists already (workflow_app:steps, pending), not "
                   "workflow_app:approval: left as it is\n"), err
    code, _out, err = cli_here(capsys, "--store", sqlite_path, "start", "app:wf", "[1]")
    assert code == 2
    assert "an entry id of a config needs --config FILE" in err
    code, _out, err = cli_here(capsys, "--store", sqlite_path, "start", "app:nope", "[1]",
                              "--config", str(config))
    assert code == 2 and "no entry id of the config either" in err


def test_start_of_a_mistyped_or_bare_entry_id_suggests_the_entry(
        capsys: pytest.CaptureFixture[str], sqlite_path: str, tmp_path: Path) -> None:
    """nu463: ``garrison workflows --config app.yaml start app:order_workflo`` said the
    module 'app' does not import and that it is no entry id of the config, and
    ``start order_workflow`` that TARGET must be module:function, neither naming the
    entry meant, where a spawn's NoSuchEntry does (``did you mean``). Both name the
    config's workflow entry it is close to; nothing is written."""
    config = tmp_path / "app.yaml"
    config.write_text(textwrap.dedent("""\
        version: "1.0"
        namespace: app
        entries:
          - {name: order_workflow, kind: workflow.py, source: "workflow_app:steps"}
        """))
    open_store(sqlite_path).close()  # (a node made it)
    for target, said in (("app:order_workflo", "of the config either: did you mean "
                                                "'app:order_workflow'?)"),
                         ("order_workflow", "(did you mean 'app:order_workflow'?)"),
                         ("order_workflo", "(did you mean 'app:order_workflow'?)")):
        code, out, err = cli_here(capsys, "--store", sqlite_path, "start", target, "[1]",
                                  "--config", str(config))
        assert (code, out) == (2, ""), err
        assert err.rstrip().endswith(said), err
    code, _out, err = cli_here(capsys, "--store", sqlite_path, "start", "zzz", "[1]",
                               "--config", str(config))
    assert code == 2 and "did you mean" not in err, err
    with open_store(sqlite_path, lock=False) as store:
        assert store.list_workflows() == []


async def test_start_takes_a_priority_and_a_dedup_key_as_start_workflow_does(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """README (Queues): ``garrison workflows start`` had neither a priority nor a dedup
    key (its starts were priority 0, keyless). ``--priority N`` and ``--dedup KEY``
    are checked as ``start_workflow`` checks them (exit 2 naming the option, nothing
    written); the start waits in the queue by its priority, and holds its key: a start
    with a key an unfinished workflow holds starts nothing and names that workflow (an
    id that exists comes first, as for ``start_workflow``)."""
    async with garrison.open_node(store=store_path, max_concurrent=1) as node:
        await node.start_workflow(workflow_app.approval, "busy", id="busy")
    for bad in ("high", "1.5", "", "\u0661"):  # (a usage error: argparse's exit 2)
        with pytest.raises(SystemExit) as exited:
            cli_here(capsys, "--store", store_path, "start", "workflow_app:steps", "[0, 1]",
                     "--priority", bad)
        err = capsys.readouterr().err
        assert exited.value.code == 2 and "argument --priority: expected a whole number " \
            f"(higher first), got {bad!r}" in err, (bad, err)
    code, out, err = cli_here(capsys, "--store", store_path, "start", "workflow_app:steps",
                              "[0, 1]", "--priority", str(2**63))
    assert code == 2 and err == (
        "garrison workflows: --priority: priority must be a 64-bit integer, from -2**63 to "
        "2**63 - 1 (a store keeps it as one), got 9223372036854775808\n"), err
    for bad in ("", "  "):
        code, out, err = cli_here(capsys, "--store", store_path, "start",
                                  "workflow_app:steps", "[0, 1]", "--dedup", bad)
        assert code == 2 and err == (f"garrison workflows: --dedup: dedup must be a non-empty "
                                     f"string or None, got {bad!r} (empty or blank)\n"), err
    code, out, err = cli_here(capsys, "--store", store_path, "start", "workflow_app:steps",
                              "[0, 1]", "--id", "low")
    assert code == 0, err
    code, out, err = cli_here(capsys, "--store", store_path, "start", "workflow_app:steps",
                              "[0, 1]", "--id", "vip", "--priority", "7", "--dedup", "K")
    assert (code, out) == (0, "workflow 'vip' started (workflow_app:steps)\n"), err
    with open_store(store_path, lock=False) as store:
        assert [(e.workflow_id, e.priority, e.dedup) for e in store.queue_entries()] == [
            ("vip", 7, "K"), ("low", 0, None)]
        assert store.get_workflow("vip").memo["garrison.priority"] == 7  # type: ignore[union-attr]
        assert [w.workflow_id for w in store.list_workflows()].count("busy") == 1
    code, out, err = cli_here(capsys, "--store", store_path, "start", "workflow_app:steps",
                              "[0, 1]", "--id", "other", "--dedup", "K")
    assert (code, out) == (0, "workflow 'vip' holds the dedup key 'K' (workflow_app:steps, "
                              "pending): nothing started\n"), err
    code, out, err = cli_here(capsys, "--store", store_path, "start", "workflow_app:steps",
                              "[0, 1]", "--dedup", "K", "--json")
    assert code == 0 and json.loads(out) == {
        "workflow_id": "vip", "created": False, "name": "workflow_app:steps",
        "dedup": "K"}, (out, err)
    code, out, err = cli_here(capsys, "--store", store_path, "start", "workflow_app:steps",
                              "[0, 1]", "--id", "low", "--dedup", "K")
    assert out == ("workflow 'low' exists already (workflow_app:steps, pending): left as it "
                   "is\n"), err
    async with garrison.open_node(store=store_path, max_concurrent=1) as node:
        await node.send(garrison.Pid("workflows", "busy"), "approve", "me")
        with trio.fail_after(20):
            for wid in ("busy", "vip", "low"):
                await node.workflow(wid).result()
        ends = {w.workflow_id: w.updated for w in node.workflows()}
        assert ends["vip"] <= ends["low"]  # (priority 7 first)
        assert sorted(ends) == ["busy", "low", "vip"]


def test_the_store_tools_take_the_store_a_config_names(
        capsys: pytest.CaptureFixture[str], sqlite_path: str, tmp_path: Path) -> None:
    """``--config FILE`` without ``--store`` (``start``, ``list``, ``show``, ``garrison
    schedules``...): the store of the config's workflow host, as ``garrison run FILE``
    opens it (a new user gave the config and, again, its store)."""
    config = tmp_path / "app.yaml"
    config.write_text(textwrap.dedent("""\
        version: "1.0"
        namespace: app
        entries:
          - {name: workflows, kind: workflow.host, store: wf.db}
          - {name: other, kind: workflow.host, store: other.db}
          - {name: wf, kind: workflow.py, source: "workflow_app:steps"}
        """))
    open_store(sqlite_path).close()  # (a node made it)
    code, out, err = cli_here(capsys, "start", "app:wf", "[1]", "--id", "w1",
                              "--config", str(config))
    assert (code, out) == (0, "workflow 'w1' started (workflow_app:steps)\n"), err
    with open_store(sqlite_path, lock=False) as store:
        assert store.get_workflow("w1") is not None
    # every store tool takes it so (before or after the verb)
    code, out, err = cli_here(capsys, "list", "--json", "--config", str(config))
    assert code == 0 and [w["workflow_id"] for w in json.loads(out)] == ["w1"], err
    code, out, err = cli_here(capsys, "--config", str(config), "show", "w1")
    assert code == 0 and "workflow_app:steps" in out, err
    from garrison._cli import build_parser

    parsed = build_parser().parse_args(["schedules", "list", "--config", str(config)])
    assert parsed.func(parsed) == 0
    assert capsys.readouterr().out == "no schedules\n"
    # --store wins over the config's
    other = str(tmp_path / "other.db")
    open_store(other).close()
    code, out, err = cli_here(capsys, "list", "--json", "--config", str(config),
                              "--store", other)
    assert (code, json.loads(out)) == (0, []), err
    # several stores and none named workflows, or none: say so, and that --store is needed
    config.write_text(config.read_text().replace("name: workflows,", "name: main,"))
    code, out, err = cli_here(capsys, "start", "app:wf", "[1]", "--config", str(config))
    assert code == 2 and err.startswith(
        f"garrison workflows: give --store: the config {config} names several stores: "
        f"app:main ({tmp_path / 'wf.db'}), app:other ({tmp_path / 'other.db'})"), err
    config.write_text(textwrap.dedent("""\
        version: "1.0"
        namespace: app
        entries:
          - {name: wf, kind: workflow.py, source: "workflow_app:steps"}
        """))
    code, out, err = cli_here(capsys, "start", "app:wf", "[1]", "--config", str(config))
    assert code == 2 and "names no store (no workflow.host entry with a store)" in err, err


def test_replay_of_a_store_of_an_older_garrison_says_how_and_migrates_a_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's pre-deploy check (replay a copy of the production store against the
    code about to run) refused any store of an older garrison: "open it once with a
    node to migrate it", which runs its workflows. ``replay --migrate`` migrates it
    first (running nothing), and the refusal says so."""
    import shutil

    from garrison.persistence import RawJson, SQLiteStore, Transaction, _schema

    db = str(tmp_path / "old.db")
    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:6])
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", 6)
    with SQLiteStore(db) as old:
        old.write(Transaction()
                  .create_workflow("c", "workflow_app:child", [1], status="running")
                  .append_journal("c", 1, "activity", "workflow_app:add_one",
                                  RawJson('{"ok": 2}'))
                  .update_workflow("c", status="completed", result=2))
    monkeypatch.undo()
    copy = str(tmp_path / "copy.db")
    shutil.copy(db, copy)
    refused = cli("--store", db, "replay", "--all")
    assert refused.returncode == 2
    assert "schema version 6" in refused.stderr and "replay --migrate" in refused.stderr
    done = cli("--store", copy, "replay", "--all", "--migrate", "--module", str(ROOT / "tests"))
    assert done.returncode == 0, done.stderr
    assert "1 workflow(s) replayed: 1 ok" in done.stdout


def test_replay_migrate_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    """--migrate opened the store as a node before the tools' check that it exists: a
    mistyped path made an empty store and "0 workflow(s) replayed", exit 0."""
    typo = tmp_path / "typo.db"
    run = cli("--store", str(typo), "replay", "--all", "--migrate")
    assert run.returncode == 2 and "no workflow store" in run.stderr
    assert list(tmp_path.iterdir()) == []


async def test_a_promise_name_too_long_or_text_no_store_keeps_is_refused_everywhere(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A promise name over ``MAX_KEY_BYTES`` bytes of UTF-8 (no workflow can declare it;
    PostgreSQL's index cannot hold it), a rejection message, a ``--reason`` or a node
    name that is not valid text (a lone surrogate: a command line's undecodable byte):
    refused as bad arguments on both stores, by the command line (exit 2, one line) and
    the console (a JSON 400), nothing written."""
    from garrison.console._app import make_app
    from garrison.console._backend import StoreBackend
    from garrison.hosts.workflow._ids import MAX_KEY_BYTES

    _plain_store(store_path)
    long_name = "é" * (MAX_KEY_BYTES // 2 + 1)
    for args in (["resolve", "w1", long_name, "1"], ["reject", "w1", long_name, "no"]):
        code, out, err = cli_here(capsys, "--store", store_path, *args)
        assert code == 2 and out == "", (args, err)
        assert err.count("\n") == 1 and "a promise name" in err and "too long" in err, err
    bad = "bad\udcff"  # (sys.argv's $'bad\xff')
    for args, said in ((["reject", "w1", "p", bad], "lone surrogate"),
                       (["terminate", "w1", "--reason", bad], "lone surrogate")):
        code, out, err = cli_here(capsys, "--store", store_path, *args)
        assert code == 2 and out == "", (args, err)
        assert err.count("\n") == 1 and said in err, err
    with open_store(store_path, lock=False) as s:
        assert s.promises("w1") == []
        assert str(s.get_workflow("w1").status) == "pending"
        app = make_app(StoreBackend(s))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1:8233") as c:
            await c.get("/")  # the CSRF cookie
            headers = {"X-Garrison-CSRF": c.cookies["garrison_csrf_8233"]}  # (its port)
            for verb, body in (("resolve", {"value": 1}), ("reject", {"message": "no"})):
                r = await c.post(f"/api/workflows/w1/promises/{long_name}/{verb}",
                                 json=body, headers=headers)
                assert r.status_code == 400, r.text
                assert "a promise name" in r.json()["error"] and "too long" in r.json()["error"]
        assert s.promises("w1") == []
    async with garrison.open_node(store=store_path) as node:  # (and through a node)
        with pytest.raises(ValueError, match=r"a promise name .* is too long"):
            await node.workflow("w1").promise(long_name).resolve(1)
        with pytest.raises(ValueError, match="a terminate reason cannot hold the lone"):
            await node.workflow("w1").terminate(bad)
        assert node.hosts["workflows"].store.promises("w1") == []


def test_a_stored_int_longer_than_the_readers_limit_is_named_not_called_damage(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """A row or a journal record holding an int longer than this Python reads (stored
    under ``sys.set_int_max_str_digits(0)``): ``show``, ``history`` and ``list`` said
    nothing of which workflow (a ValueError) or called it damage; each names the
    workflow and how to read it (PYTHONINTMAXSTRDIGITS for a command line), exit 2,
    and ``list`` shows the others."""
    _plain_store(sqlite_path)
    with no_digit_limit(), open_store(sqlite_path) as store:
        store.write(Transaction().update_workflow("w1", result=10**5000)
                    .append_journal("w2", 1, "activity", "app:a", -(10**5000)))
    how = ("holds a whole number of 5,001 digits, more than the 4,300 digits this Python "
           "reads (stored where sys.set_int_max_str_digits() allowed more): raise the "
           "limit in the process that reads it, with sys.set_int_max_str_digits() or "
           "PYTHONINTMAXSTRDIGITS in its environment (0: none)")
    head = f"garrison workflows: store {sqlite_path!r} cannot be read by this Python: "
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", "w1")
    assert (code, out, err) == (2, "", f"{head}workflow 'w1': its result {how}\n")
    code, out, err = cli_here(capsys, "--store", sqlite_path, "history", "w2")
    assert (code, out, err) == (
        2, "", f"{head}workflow 'w2': the outcome of its journal record seq 1 {how}\n")
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list")
    assert code == 2, err
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "w0", "w2", "w3", "w4"]
    assert err == (f"{head}workflow 'w1': its result {how}; the other workflows are "
                   "listed\n"), err


def test_a_message_holding_an_int_longer_than_the_readers_limit_is_named_by_show(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """A pending message holding an int longer than this Python reads (sent under
    ``sys.set_int_max_str_digits(0)``): ``show`` ended in a traceback of a bare
    ValueError. It names the workflow, the message and how to read it, exit 2."""
    _plain_store(sqlite_path)
    with no_digit_limit(), open_store(sqlite_path) as store:
        store.write(Transaction().deliver("w1", "big", [10**5000], msg_id="m1"))
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", "w1")
    assert (code, out) == (2, ""), err
    assert err == (
        f"garrison workflows: store {sqlite_path!r} cannot be read by this Python: "
        "workflow 'w1': the payload of its inbox message 'm1' (topic 'big') holds a whole "
        "number of 5,001 digits, more than the 4,300 digits this Python reads (stored "
        "where sys.set_int_max_str_digits() allowed more): raise the limit in the process "
        "that reads it, with sys.set_int_max_str_digits() or PYTHONINTMAXSTRDIGITS in its "
        "environment (0: none)\n"), err


def test_a_damaged_row_is_named_by_id_the_others_listed_and_exit_2(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """A row whose JSON column holds no JSON (edited by hand, a bad restore): ``list``
    shows the other workflows and names the damaged one (exit 2, one line on stderr);
    ``show`` of it is that one line, exit 2 (both were a JSONDecodeError traceback)."""
    _plain_store(sqlite_path)
    raw = sqlite3.connect(sqlite_path)
    raw.execute("UPDATE workflows SET input = '[bad' WHERE workflow_id = 'w1'")
    raw.execute("UPDATE workflows SET search = '{' WHERE workflow_id = 'w3'")
    raw.commit()
    raw.close()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list")
    assert code == 2, err
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "w0", "w2", "w4"]
    assert err.count("\n") == 1, err
    assert err.startswith(f"garrison workflows: store {sqlite_path!r} is damaged: workflow "
                          "'w1': its input is not JSON ("), err
    assert "(and 1 other workflow(s): 'w3')" in err and "the other workflows are listed" in err
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--json")
    assert code == 2 and [w["workflow_id"] for w in json.loads(out)] == ["w0", "w2", "w4"]
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", "w3")
    assert (code, out) == (2, ""), err
    assert err == (f"garrison workflows: store {sqlite_path!r} is damaged: workflow 'w3': "
                   "its search is not JSON (Expecting property name enclosed in double "
                   "quotes: line 1 column 2 (char 1))\n")
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", "w2")
    assert code == 0 and "w2" in out, err


def test_a_search_filter_names_rows_whose_search_attributes_are_damaged(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """``list --search`` on a store where a row's search attributes are no JSON, or not
    UTF-8 text, lists the matching workflows and names the damaged rows, exit 2, as a
    plain ``list`` does (it was "SQLite error (malformed JSON)", nothing listed)."""
    _plain_store(sqlite_path)
    raw = sqlite3.connect(sqlite_path)
    raw.execute("UPDATE workflows SET search = '{bad' WHERE workflow_id = 'w1'")
    raw.execute("UPDATE workflows SET search = CAST(x'7bff7d' AS TEXT) "
                "WHERE workflow_id = 'w3'")
    raw.commit()
    raw.close()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--search", "n=2")
    assert code == 2, err
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "w2"]
    assert err.count("\n") == 1, err
    assert err.startswith(f"garrison workflows: store {sqlite_path!r} is damaged: "
                          "workflow 'w1': its search is not JSON ("), err
    assert err.endswith("(and 1 other workflow(s): 'w3'); the other workflows are "
                        "listed\n"), err
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--search",
                              'n={"a": 1}', "--json")  # (an object: compared apart)
    assert code == 2 and json.loads(out) == [] and "'w1'" in err and "'w3'" in err, (out, err)


def test_a_row_whose_text_is_not_utf8_is_named_by_id_the_others_listed(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """A row holding text that is not UTF-8 (a damaged page, bytes written by another
    program) is named by id as a JSON column that is no JSON is: ``list`` shows the
    others, ``show`` of it is one line, exit 2. (SQLite's own error named the column
    but no row, and ended the whole listing.) An id that is not UTF-8 itself is named
    as well as it can be, and the listing still ends."""
    _plain_store(sqlite_path)
    raw = sqlite3.connect(sqlite_path)
    raw.execute("UPDATE workflows SET error = CAST(x'7b22ff' AS TEXT) WHERE workflow_id = 'w1'")
    raw.execute("UPDATE workflows SET name = CAST(x'61ff3a62' AS TEXT) WHERE workflow_id = 'w3'")
    raw.commit()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list")
    assert code == 2, err
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "w0", "w2", "w4"]
    assert err == (f"garrison workflows: store {sqlite_path!r} is damaged: workflow 'w1': "
                   "its error is not UTF-8 text (byte 2 of it is 0xff) (and 1 other "
                   "workflow(s): 'w3'); the other workflows are listed\n"), err
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", "w3")
    assert (code, out) == (2, ""), err
    assert err == (f"garrison workflows: store {sqlite_path!r} is damaged: workflow 'w3': "
                   "its name is not UTF-8 text (byte 1 of it is 0xff)\n"), err
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--status", "pending",
                              "--json", "--order", "newest")
    assert code == 2 and [w["workflow_id"] for w in json.loads(out)] == ["w4", "w2", "w0"]
    raw.execute("UPDATE workflows SET workflow_id = CAST(x'77ff' AS TEXT) "
                "WHERE workflow_id = 'w2'")
    raw.commit()
    raw.close()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list")
    assert code == 2, err
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "w0"]
    assert err.endswith("(and 1 other workflow(s): 'w\\udcff'); the workflows before "
                        "'w\\udcff' in this order are listed, not those after it (a read "
                        "cannot page past an id that is not UTF-8 text)\n"), err


def test_a_row_holding_a_blob_that_is_not_utf8_is_named_as_text_that_is_not(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """The same bytes stored as a BLOB (not as text) are the same damaged row, named by
    id, for every command that reads it (they were a bare UnicodeDecodeError traceback,
    exit 1); a BLOB that is UTF-8 text is read as that text."""
    _plain_store(sqlite_path)
    raw = sqlite3.connect(sqlite_path)
    raw.execute("UPDATE workflows SET input = x'5bff5d' WHERE workflow_id = 'w1'")
    raw.execute("UPDATE workflows SET memo = x'7b7d', name = x'6170703a666c6f77' "
                "WHERE workflow_id = 'w2'")
    raw.commit()
    raw.close()
    said = (f"garrison workflows: store {sqlite_path!r} is damaged: workflow 'w1': its "
            "input is not UTF-8 text (byte 1 of it is 0xff)")
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list")
    assert code == 2, err
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "w0", "w2", "w3", "w4"]
    assert err == said + "; the other workflows are listed\n", err
    for command in ("show", "cancel", "terminate", "history", "export", "retry"):
        code, out, err = cli_here(capsys, "--store", sqlite_path, command, "w1")
        assert (code, out, err) == (2, "", said + "\n"), command
    code, out, err = cli_here(capsys, "--store", sqlite_path, "replay", "--id", "w1")
    assert code == 2 and err.startswith(said), err
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", "w2", "--json")
    assert code == 0 and json.loads(out)["name"] == "app:flow", err


def _journaled(path: str, ids: tuple[str, ...]) -> None:
    """Workflows of ``workflow_app:steps`` with two records of their journal, written
    straight to the store (no node: fast): a replay finds each ok."""
    with open_store(path) as s:
        tx = Transaction()
        for wid in ids:
            tx.create_workflow(wid, "workflow_app:steps", [0, 3], status="running")
            for seq in (1, 2):
                tx.append_journal(wid, seq, "activity", "workflow_app:add_one", {"ok": seq})
        s.write(tx)


def test_a_damaged_journal_record_is_named_by_workflow_and_seq_and_replay_goes_on(
        capsys: pytest.CaptureFixture[str], store_path: str) -> None:
    """A journal record whose outcome is no JSON (a hand edit, a bad restore), or on
    SQLite a BLOB or text that is not UTF-8 (a damaged page): ``history``, ``export``,
    ``retry`` and ``replay --id`` of it are one line naming the store, the workflow and
    the seq, exit 2 (they were a UnicodeDecodeError traceback, exit 1, which replay
    documents as "a workflow differs", or a line naming neither); ``replay --all``
    replays the other workflows and names those it could not read, exit 2 (one such
    record replayed none)."""
    from _stores import sql

    _journaled(store_path, ("j1", "j2", "j3", "j4"))
    sql(store_path, "UPDATE journal SET outcome = '{\"ok\":' WHERE workflow_id = 'j1' "
                    "AND seq = 2")
    sql(store_path, "UPDATE workflows SET status = 'failed' WHERE workflow_id = 'j1'")
    no_json = "the outcome of its journal record seq 2 is not JSON (Expecting value: line 1 "
    no_json += "column 7 (char 6))"
    line = f"garrison workflows: store {store_path!r} is damaged: workflow 'j1': {no_json}\n"
    for command in ("history", "export", "retry"):
        assert cli_here(capsys, "--store", store_path, command, "j1") == (2, "", line)
    code, out, err = cli_here(capsys, "--store", store_path, "replay", "--id", "j1")
    assert (code, err) == (2, line), err
    assert out == (f"j1  could not be read: {no_json}\n"
                   "1 workflow(s) replayed: 0 ok, 0 differ, 1 could not be read\n")
    damaged = ["j1"]
    if not store_path.startswith("postgresql://"):  # (PostgreSQL's text is UTF-8)
        sql(store_path, "UPDATE journal SET outcome = x'7b226f6b223a22ff227d' "
                        "WHERE workflow_id = 'j3' AND seq = 1")
        sql(store_path, "UPDATE journal SET outcome = CAST(x'7b226f6b223aff7d' AS TEXT) "
                        "WHERE workflow_id = 'j4' AND seq = 2")
        damaged += ["j3", "j4"]
        blob = "the outcome of its journal record seq 1 is not UTF-8 text (byte 7 of it is 0xff)"
        for command in ("history", "export"):
            assert cli_here(capsys, "--store", store_path, command, "j3") == (
                2, "", f"garrison workflows: store {store_path!r} is damaged: workflow 'j3': "
                       f"{blob}\n")
    code, out, err = cli_here(capsys, "--store", store_path, "replay", "--all")
    assert code == 2, err
    others = "" if len(damaged) == 1 else " (and 2 other workflow(s): 'j3', 'j4')"
    assert err == line.replace("\n", f"{others}; the other workflows were replayed\n"), err
    lines = out.splitlines()
    assert [row.split()[:2] for row in lines[:4]] == [
        [wid, "could" if wid in damaged else "ok"] for wid in ("j1", "j2", "j3", "j4")]
    assert lines[4] == (f"4 workflow(s) replayed: {4 - len(damaged)} ok, 0 differ, "
                        f"{len(damaged)} could not be read")
    code, out, err = cli_here(capsys, "--store", store_path, "--json", "replay", "--all")
    assert code == 2, err
    results = {r["workflow_id"]: r for r in json.loads(out)}
    assert results["j2"]["ok"] is True
    assert results["j1"]["ok"] is False and results["j1"]["error"] == {
        "message": f"workflow 'j1': {no_json}", "seq": 2, "recorded": None, "current": None,
        "where": None}
    assert (results["j1"]["name"], results["j1"]["records"]) == ("workflow_app:steps", 2)
    if store_path.startswith("postgresql://"):
        return
    sql(store_path, "UPDATE workflows SET search = '{' WHERE workflow_id = 'j2'")  # its row
    code, out, err = cli_here(capsys, "--store", store_path, "replay", "--all")
    assert code == 2 and err.endswith("(and 3 other workflow(s): 'j3', 'j4', 'j2')\n"), err
    assert out.splitlines()[3].startswith("j2  could not be read: its search is not JSON"), out


def test_list_takes_a_limit_an_order_and_an_id_prefix(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """``list --limit N --order newest --id PREFIX``: a store of many workflows is not
    listed whole to see the last few (the console's ``limit``, ``order`` and ``id``);
    a damaged row is stepped over in that order too, and counts for no row."""
    _plain_store(sqlite_path)
    with open_store(sqlite_path) as s:
        s.write(Transaction().create_workflow("x0", "app:flow", [9]))

    def ids(*args: str) -> list[str]:
        code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--json", *args)
        assert code == 0, err
        return [w["workflow_id"] for w in json.loads(out)]

    assert ids() == ["w0", "w1", "w2", "w3", "w4", "x0"]
    assert ids("--limit", "2") == ["w0", "w1"]
    assert ids("--order", "newest", "--limit", "2") == ["x0", "w4"]
    assert ids("--id", "w", "--order", "newest", "--limit", "3") == ["w4", "w3", "w2"]
    assert ids("--id", "w", "--status", "pending", "--limit", "100") == [
        "w0", "w1", "w2", "w3", "w4"]
    assert ids("--id", "nope") == []
    raw = sqlite3.connect(sqlite_path)
    raw.execute("UPDATE workflows SET input = '[bad' WHERE workflow_id = 'w3'")
    raw.commit()
    raw.close()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--order", "newest",
                              "--limit", "3", "--id", "w")
    assert code == 2 and "'w3': its input is not JSON" in err, err
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "w4", "w2", "w1"]
    for bad in ("0", "-1", "x", "\u0661", " 3 ", "+3"):  # (ASCII digits only, as the console)
        with pytest.raises(SystemExit) as stop:
            cli_here(capsys, "--store", sqlite_path, "list", "--limit", bad)
        assert stop.value.code == 2
        assert f"--limit: expected a whole number of at least 1, got {bad!r}" in \
            capsys.readouterr().err


def test_a_list_s_limit_is_a_whole_number_and_one_past_any_count_lists_them_all(
        capsys: pytest.CaptureFixture[str], store_path: str) -> None:
    """``list --limit 99999999999999999999999`` was a traceback (SQLite: "Python int
    too large to convert to SQLite INTEGER"), exit 1. A limit past what a store can
    count lists every workflow; ``list_workflows`` of either store takes 0 (none), and
    refuses a negative limit (SQLite read -1 as no limit) and one that is not a whole
    number (2.5 was cut to 2, "2" taken) naming the value."""
    _plain_store(store_path)

    def ids(*args: str) -> list[str]:
        code, out, err = cli_here(capsys, "--store", store_path, "list", "--json", *args)
        assert code == 0, err
        return [w["workflow_id"] for w in json.loads(out)]

    every = ["w0", "w1", "w2", "w3", "w4"]
    for huge in ("9223372036854775807", "9223372036854775808", "99999999999999999999999"):
        assert ids("--limit", huge) == every
        assert ids("--limit", huge, "--order", "newest") == every[::-1]
    with open_store(store_path, lock=False) as s:
        for limit in (2**63 - 1, 2**63, 10**30):
            assert [r.workflow_id for r in s.list_workflows(limit=limit)] == every
        assert s.list_workflows(limit=0) == []
        assert [r.workflow_id for r in s.list_workflows(limit=2)] == ["w0", "w1"]
        with pytest.raises(ValueError, match=r"^list_workflows: limit must be at least 0, "
                                             r"got -1$"):
            s.list_workflows(limit=-1)
        for odd in (2.5, "2", True):
            with pytest.raises(TypeError, match=r"^list_workflows: limit must be a whole "
                                                r"number \(an int\) or None, got "
                                                f"{type(odd).__name__}: {re.escape(repr(odd))}$"):
                s.list_workflows(limit=odd)  # type: ignore[arg-type]


async def test_cancel_of_a_pending_workflow_with_no_node_ends_it_at_once(
        store_path: str) -> None:
    """A workflow created pending (``start``, never run) while no node holds the store:
    the CLI's cancel ends it ``cancelled`` at once (as the handle's cancel of a queued
    one does, README: Queues), and a node that opens the store never runs it."""
    with open_store(store_path) as s:  # as `garrison workflows start` writes it
        s.write(Transaction().create_workflow("p-1", "workflow_app:steps", [0, 2],
                                              status="pending"))
    done = cli("--store", store_path, "cancel", "p-1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"workflow_id": "p-1", "cancel_requested": True,
                                       "cancelled": True}
    show = json.loads(cli("--store", store_path, "show", "p-1", "--json").stdout)
    assert show["status"] == "cancelled", show
    assert show["error"]["type"] == "WorkflowCancelled", show
    again = cli("--store", store_path, "cancel", "p-1")
    assert again.returncode == 1 and "it is cancelled" in again.stderr
    ran_before = len(workflow_app.LOG)
    async with garrison.open_node(store=store_path) as node:
        with trio.fail_after(10), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("p-1").result()
    assert len(workflow_app.LOG) == ran_before  # it never ran


async def test_cancel_of_a_pending_workflow_a_node_holds_only_asks_it(
        store_path: str) -> None:
    """With a node holding the store, the CLI never ends a pending workflow itself (the
    node may claim it any moment): it asks, and the node ends the one waiting in its
    queue ``cancelled``, unrun."""
    async with garrison.open_node(store=store_path, max_concurrent=1) as node:
        await node.start_workflow(workflow_app.approval, "first", id="busy")
        await node.start_workflow(workflow_app.steps, 0, 2, id="p-2")
        assert node.workflow("p-2").status() == "pending"
        done = await trio.to_thread.run_sync(
            lambda: cli("--store", store_path, "cancel", "p-2", "--json"))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"workflow_id": "p-2", "cancel_requested": True,
                                           "cancelled": False}
        with trio.fail_after(10), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("p-2").result()
        assert node.workflow("busy").status() == "waiting"


async def test_a_pending_workflow_a_tool_ended_as_a_node_loaded_it_never_runs(
        sqlite_path: str) -> None:
    """The race of the CLI's cancel: no node held the store when it looked, and one
    opened the store before the end was written: that node had loaded the workflow,
    pending, into its queue. It leaves the queue when the node reads the end (it
    would have started it later, over the ``cancelled`` row); its handle gets the
    end."""
    from garrison.hosts.workflow import cancel_pending_transaction

    ran_before = len(workflow_app.LOG)
    async with garrison.open_node(store=sqlite_path, max_concurrent=1) as node:
        await node.start_workflow(workflow_app.approval, "first", id="busy")
        await node.start_workflow(workflow_app.steps, 0, 2, id="p-3")
        assert node.workflow("p-3").status() == "pending"
        with open_store(sqlite_path, lock=False) as tool:  # (its look said: no node)
            tool.write(cancel_pending_transaction(tool, tool.get_workflow("p-3")))
        with trio.fail_after(10), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("p-3").result()
        await node.send(garrison.Pid("workflows", "busy"), "approve", "ann")
        with trio.fail_after(10):
            assert await node.workflow("busy").result() == "first approved by ann"
        assert node.workflow("p-3").status() == "cancelled"
    assert len(workflow_app.LOG) == ran_before  # p-3 never ran
    with open_store(sqlite_path) as s:
        assert s.get_workflow("p-3").status == "cancelled"


async def test_the_cli_cancel_never_ends_a_workflow_a_node_read_pending(
        sqlite_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side of the CLI cancel's race (see the test above): its look found no
    node, then a node opened the store, read the workflow ``pending`` and, with a free
    slot, started it at once; the CLI's end, committed between that read and the
    node's ``running`` mark, was overwritten by the mark, and the workflow ran to
    completion after its watchers were told it was cancelled (its dedup key freed).
    The CLI now holds the store's lock while it writes the end: a node that holds the
    store makes it only ask, and the node cancels the workflow."""
    from garrison import _store_tools
    from garrison.hosts.workflow import _recovery

    with open_store(sqlite_path) as s:  # as `garrison workflows start` writes it
        # (a workflow that waits: one that ends at once may end before the node sees
        # the cancel it is asked for, a race of the test; before the fix this one ran
        # over the CLI's end and waited for ever)
        s.write(Transaction().create_workflow("p-4", "workflow_app:receiver", [],
                                              status="pending"))
    count_tool_starts = _recovery.count_tool_starts
    ended: list[bool] = []

    def cancel_then_count(host: Any, queued: list[Any]) -> None:
        # (the node has read the store: now the CLI's write, after its look found no node)
        with open_store(sqlite_path, lock=False) as tool:
            ended.append(_store_tools.cancel(tool, "p-4"))
        count_tool_starts(host, queued)

    monkeypatch.setattr(_recovery, "count_tool_starts", cancel_then_count)
    async with garrison.open_node(store=sqlite_path) as node:
        with trio.fail_after(10), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("p-4").result()
    assert ended == [False]  # it asked the node
    with open_store(sqlite_path) as s:
        assert s.get_workflow("p-4").status == "cancelled"


async def watches_and_traps(target: str) -> list[Any]:
    """A plain process that monitors ``target`` and links to it, trapping: the events."""
    process.set_options(trap_links=True)
    process.monitor(target)
    process.link(target)
    events = process.events()
    got = []
    for _ in range(2):
        ev = await events.receive()
        got.append((ev.kind.value, None if ev.error is None else ev.error.type))
    return sorted(got)


async def test_a_pending_workflow_a_tool_ended_as_a_node_loaded_it_tells_its_watchers(
        sqlite_path: str) -> None:
    """Ended so (see the test above), it left the node's memory with no ``EXIT`` for the
    plain processes that monitored it, nor a linked exit for those linked to it (they
    waited for ever): they get them as from any end."""
    from garrison.hosts.workflow import cancel_pending_transaction

    async with garrison.open_node(store=sqlite_path, max_concurrent=1) as node:
        await node.start_workflow(workflow_app.approval, "first", id="busy")
        await node.start_workflow(workflow_app.steps, 0, 2, id="p-4")
        assert node.workflow("p-4").status() == "pending"
        watcher = await node.spawn(watches_and_traps, "workflows/p-4")
        await trio.testing.wait_all_tasks_blocked()  # (it monitors and links)
        with open_store(sqlite_path, lock=False) as tool:
            tool.write(cancel_pending_transaction(tool, tool.get_workflow("p-4")))
        with trio.fail_after(10):
            got = await node.wait(watcher)
        assert got == [("EXIT", "WorkflowCancelled"), ("LINK_DOWN", "WorkflowCancelled")]
        await node.send(garrison.Pid("workflows", "busy"), "approve", "ann")
        with trio.fail_after(10):
            assert await node.workflow("busy").result() == "first approved by ann"


def test_terminate_reports_the_reason_the_store_holds_when_another_terminate_won(
        capsys: pytest.CaptureFixture[str], sqlite_path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ``terminate`` commands at once, ``--reason r1`` and ``--reason r2``, both
    printed their own reason, though the workflow holds one (r2): the command printed
    its argument, not what the store says it ended with."""
    from garrison import _cli_workflows
    from garrison import _store_tools as tools

    _plain_store(sqlite_path)
    real = tools.terminate

    def another_wins(store: Any, workflow_id: str, reason: str, **kw: Any) -> bool:
        assert real(store, workflow_id, "r2")  # the other command, first
        return True  # (this one saw the workflow ended as asked: terminated)

    monkeypatch.setattr(_cli_workflows.tools, "terminate", another_wins)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "terminate", "w1",
                              "--reason", "r1")
    assert (code, out, err) == (0, "workflow 'w1' terminated (failed: Terminated: r2)\n",
                                ""), (out, err)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "terminate", "w2",
                              "--reason", "r1", "--json")
    assert code == 0 and json.loads(out)["error"] == {"type": "Terminated",
                                                      "message": "r2"}, out


def test_a_cancel_that_read_an_attempt_retried_since_writes_nothing(
        sqlite_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-217: a cancel read the workflow live (attempt 1); meanwhile it was
    terminated and retried (attempt 2); the cancel's write then flagged attempt 2, and
    the node cancelled the retried run, while README says a cancel asked before such
    an end is moot. The flag is written only if the workflow is still the attempt the
    cancel read, not finished: else a ToolError, nothing written. A status that
    changed within the attempt (running to sleeping) is no reason to refuse."""
    from garrison import _store_tools

    with open_store(sqlite_path) as s:
        s.write(Transaction().create_workflow("w", "workflow_app:receiver", [],
                                              status="running"))
        s.write(Transaction().create_workflow("v", "workflow_app:receiver", [],
                                              status="running"))
    real_get = _store_tools.get

    def read_then(change: Transaction) -> Any:
        def get(store: Any, workflow_id: str) -> Any:
            rec = real_get(store, workflow_id)
            monkeypatch.setattr(_store_tools, "get", real_get)  # (once)
            store.write(change)  # (what happened between the cancel's read and write)
            return rec
        return get

    with open_store(sqlite_path, lock=False) as tool:
        monkeypatch.setattr(_store_tools, "get", read_then(Transaction().update_workflow(
            "w", status="running", attempt=2)))  # terminated, then retried
        with pytest.raises(_store_tools.ToolError) as info:
            _store_tools.cancel(tool, "w")
        assert str(info.value) == (
            "cannot cancel workflow 'w': it was retried before the cancel reached it (it "
            "is running, attempt 2); nothing was written")
        assert tool.get_workflow("w").cancel_requested is False
        monkeypatch.setattr(_store_tools, "get", read_then(Transaction().update_workflow(
            "v", status="sleeping")))  # the same attempt, asleep now
        assert _store_tools.cancel(tool, "v") is False
        assert tool.get_workflow("v").cancel_requested is True
        # a blocked workflow has not ended: a cancel that read it blocked stands for the
        # attempt its retry makes (helper-218)
        tool.write(Transaction().create_workflow("b", "workflow_app:receiver", [],
                                                 status="blocked"))
        monkeypatch.setattr(_store_tools, "get", read_then(Transaction().update_workflow(
            "b", status="pending", attempt=2)))
        assert _store_tools.cancel(tool, "b") is False
        got = tool.get_workflow("b")
        assert (got.attempt, got.cancel_requested) == (2, True)


async def test_a_handle_s_cancel_of_an_attempt_retried_since_writes_nothing(
        sqlite_path: str) -> None:
    """helper-218: the handle of a node that does not run the workflow (a client of
    the store) read it, then wrote the flag whatever happened meanwhile, as the tool
    did: a run terminated and retried between them was cancelled. It writes only on
    the attempt it read (the cancel is moot otherwise, and the handle returns)."""
    with open_store(sqlite_path) as s:
        s.write(Transaction().create_workflow("w", "workflow_app:receiver", [],
                                              status="running"))
    store = SQLiteStore(sqlite_path, lock=False)
    real = store.write
    landed: list[bool] = []

    def retried_first(tx: Transaction) -> Any:
        if not landed:  # (the cancel's write: the terminate and the retry land just before)
            landed.append(True)
            real(Transaction().update_workflow("w", status="running", attempt=2))
        return real(tx)

    async with garrison.open_node(store=store) as node:
        assert node.hosts["workflows"].client
        store.write = retried_first  # type: ignore[method-assign]
        await node.workflow("w").cancel()
        store.write = real  # type: ignore[method-assign]
        assert landed
        got = store.get_workflow("w")
        assert (got.attempt, got.cancel_requested) == (2, False)
        await node.workflow("w").cancel()  # asked of attempt 2 itself: it stands
        assert store.get_workflow("w").cancel_requested is True


def test_terminate_and_replay_lines_show_control_characters_escaped(
        sqlite_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """README: a text line shows a control character of its data as its escape, never
    acting on it. terminate printed the reason the workflow holds (another operator's,
    a handle's) and replay the error the code raised, as they were (helper-250)."""
    with open_store(sqlite_path) as s:
        s.write(Transaction().create_workflow("t1", "app:flow", [], status="running")
                .create_workflow("e5", "workflow_app:raises_a_terminal_escape", [],
                                 status="running"))
    # (a newline too, one line: it split the line in two, helper-372)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "terminate", "t1",
                              "--reason", "evil\x1b[2Jreason\rcr\nnext")
    assert (code, out) == (0, "workflow 't1' terminated (failed: Terminated: "
                              "evil\\x1b[2Jreason\\rcr\\nnext)\n"), err
    code, out, err = cli_here(capsys, "--store", sqlite_path, "replay", "--id", "e5")
    assert code == 0 and "own\\x1b[31mred\\rY" in out and "\x1b" not in out, (out, err)


def test_a_tools_writes_are_durable_whatever_the_nodes_synchronous(tmp_path: Path) -> None:
    """helper-262: the tools opened a store with the default ``synchronous="normal"``: a
    signal, start or terminate said done with its commit still in the -wal, unsynced,
    beside a node run at ``"full"`` (power loss could take what the command reported
    committed). A tool's store writes at ``"full"``; a read-only one writes nothing."""
    from garrison import _store_tools

    db = str(tmp_path / "s.db")
    SQLiteStore(db).close()
    with _store_tools.open_store(db) as store:
        assert store.synchronous == "full"
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_start_again_of_a_workflow_that_continued_as_new_says_no_other_arguments(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """helper-305: the row of a workflow that continued as new holds its last run's
    arguments ([0, 3]), so starting it again by its id as first given ([2, 0]) was said
    to be 'started with other arguments'."""
    path = str(tmp_path / "s.db")

    async def run() -> None:
        async with garrison.open_node(store=path) as node:
            await node.start_workflow(workflow_app.countdown, 2, 0, id="cd")
            await node.workflow("cd").result()

    trio.run(run)
    code, out, err = cli_here(capsys, "--store", path, "start", "workflow_app:countdown",
                              "[2, 0]", "--id", "cd")
    assert (code, out) == (0, "workflow 'cd' exists already (workflow_app:countdown, "
                              "completed): left as it is\n"), err


def test_cancel_of_a_retried_workflow_that_never_ran_with_no_node_ends_it_at_once(
        store_path: str) -> None:
    """A workflow terminated while it waited pending (it never ran), then retried, with
    no node holding the store: the CLI's cancel ends it ``cancelled`` at once, as it does
    a first attempt (README: Queues), and as a node's cancel of it does; it used to be
    only flagged, left ``pending`` until a node came."""
    from garrison import _store_tools

    with open_store(store_path) as s:  # as `garrison workflows start` writes it
        s.write(Transaction().create_workflow("p-5", "workflow_app:steps", [0, 2],
                                              status="pending"))
    with _store_tools.open_store(store_path) as s:  # (as the CLI opens it)
        assert _store_tools.terminate(s, "p-5", "stop", wait=0)
        assert s.get_workflow("p-5").status == "failed"
        _store_tools.retry(s, "p-5")
        assert s.get_workflow("p-5").status == "pending"
        assert _store_tools.cancel(s, "p-5") is True
        rec = s.get_workflow("p-5")
        assert rec.status == "cancelled" and rec.error.type == "WorkflowCancelled", rec


async def test_cancel_of_a_retried_workflow_a_node_made_and_never_ran_ends_it_at_once(
        store_path: str) -> None:
    """As above, for a workflow a node started and terminated while it waited in its
    full queue: the node gone, the CLI retries it and cancels it; it ends ``cancelled``
    at once, and the next node never runs it."""
    from garrison import _store_tools

    async with garrison.open_node(store=store_path, max_concurrent=1) as node:
        await node.start_workflow(workflow_app.approval, "first", id="busy")
        await node.start_workflow(workflow_app.steps, 0, 2, id="p-6")
        await node.workflow("p-6").terminate("stop")  # failed, never ran
    ran_before = len(workflow_app.LOG)

    def retry_then_cancel() -> bool:
        with _store_tools.open_store(store_path) as s:
            _store_tools.retry(s, "p-6")
            return _store_tools.cancel(s, "p-6")

    assert await trio.to_thread.run_sync(retry_then_cancel) is True
    async with garrison.open_node(store=store_path) as node:
        assert node.workflow("p-6").status() == "cancelled"
        with trio.fail_after(10), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("p-6").result()
    assert len(workflow_app.LOG) == ran_before  # it never ran


def test_replay_prints_one_line_per_workflow_its_error_escaped_and_cut(
        sqlite_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """README: one line per workflow. A workflow's error was printed raw: a newline in
    it split the line (scripts read it line by line), and one of 200,000 characters
    made a 200 KB line. Newlines show as ``\\n`` (as other control characters), a
    result longer than 1,000 characters is cut saying how much more there is (--json:
    whole), and a long id does not widen every line."""
    big = "E" * 200_000 + "\nsecond line\r\n\x1b[31mred\x1b[0m"
    long_id = "x" * 1000
    with open_store(sqlite_path) as s:
        tx = Transaction()
        for wid, message in (("big", big), ("b", "boom 1\nline2 ünï"), ("nd", "nd 1\nnd 2")):
            tx.create_workflow(wid, "workflow_app:raises_what_it_is_given", [message],
                               status="running")
        tx.create_workflow(long_id, "workflow_app:steps", [0, 3], status="running")
        # a record the code raises before: a NonDeterminismError quoting the error
        tx.append_journal("nd", 1, "activity", "workflow_app:add_one", {"ok": 1})
        s.write(tx)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "replay")
    assert code == 1, err
    lines = out.splitlines()
    assert len(lines) == 5 and "\x1b" not in out and "\r" not in out, out[:3000]
    by_id = {line.split()[0]: line for line in lines[:4]}
    assert by_id["b"] == ("b" + " " * 41 + "ok (0 of 0 records replayed; the code raised "
                          "ValueError: boom 1\\nline2 ünï)"), by_id["b"]
    assert by_id["nd"].startswith("nd" + " " * 40 + "NonDeterminismError: workflow 'nd' "
                                  "diverged from its journal at seq 1: "), by_id["nd"]
    assert "the code now did raise ValueError: nd 1\\nnd 2 (File " in by_id["nd"], by_id["nd"]
    assert "workflow_app.py\", line " in by_id["nd"]  # (the line that raised)
    assert ", in raises_what_it_is_given). Nothing was changed" in by_id["nd"], by_id["nd"]
    assert by_id[long_id].startswith(long_id + "  ok ("), by_id[long_id][990:1100]
    code, out, err = cli_here(capsys, "--store", sqlite_path, "--json", "replay")
    ending = {r["workflow_id"]: r["ending"] for r in json.loads(out)}["big"]
    assert ending == f"the code raised ValueError: {big}"  # whole
    said = f"ok (0 of 0 records replayed; {ending})"
    assert by_id["big"] == ("big" + " " * 39 + said[:999] + f"… ({len(said) - 999:,} more "
                            "characters: --json shows them)"), by_id["big"][-200:]


def test_replay_shows_a_backslash_of_an_error_doubled_not_as_an_escape(
        sqlite_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An error holding a backslash and an ``n`` (a Windows path, ``C:\\new``) read on
    a ``replay`` line as one holding a newline: both showed ``\\n``. A backslash of the
    data shows doubled; an id is shown as ``--id`` takes it, its backslash too."""
    with open_store(sqlite_path) as s:
        tx = Transaction()
        for wid, message in (("nl", "C:\nnew"), ("bs", "C:\\new"), ("at\\c", "x")):
            tx.create_workflow(wid, "workflow_app:raises_what_it_is_given", [message],
                               status="running")
        s.write(tx)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "replay")
    assert code == 0, err
    by_id = {line.split()[0]: line for line in out.splitlines()[:3]}
    assert by_id["nl"].endswith("ValueError: C:\\nnew)"), by_id["nl"]
    assert by_id["bs"].endswith("ValueError: C:\\\\new)"), by_id["bs"]
    assert by_id["at\\c"].startswith("at\\c  ok ("), by_id["at\\c"]


def test_list_pads_ids_to_40_characters_and_never_cuts_one(
        sqlite_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An id of 1,000 characters (allowed) padded every row's ID column to 1,000
    characters; then it was cut at 40 (``…``), as a continued run's child id (47
    characters), and the cut text could not be given to ``show`` or ``retry``. The
    column is padded to at most 40 characters and an id is whole (a longer one pushes
    its own row's other values along); ``--wide`` and ``--json`` show it whole too."""
    child_id = "c" * 32 + "." + "d" * 12 + ".1"
    long_id = "x" * 1000
    with open_store(sqlite_path) as s:
        tx = Transaction()
        for wid in ("w1", child_id, long_id):
            tx.create_workflow(wid, "app:flow", [], status="running")
        s.write(tx)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.startswith("ID" + " " * 40 + "NAME  "), out
    ids = [r.split("  ")[0] for r in rows]
    assert sorted(ids) == sorted(["w1", child_id, long_id]), out
    for wid, row in zip(ids, rows, strict=True):
        assert row.startswith(wid.ljust(40) + "  app:flow  running  "), row
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--wide")
    assert {r.split("  ")[0] for r in out.splitlines()[1:]} == {"w1", child_id, long_id}
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--json")
    assert {w["workflow_id"] for w in json.loads(out)} == {"w1", child_id, long_id}


def test_list_reads_and_prints_a_page_at_a_time(
        sqlite_path: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``list`` of a big store read every row before it printed one (300,000 workflows:
    14 s to the first line, 480 MB; ``--json`` 790 MB). It reads a page of at most 500
    at a time, each printed before the next is read, in the same order and the same
    form; the columns are as wide as the first page's values, and a longer value
    further down pushes its own row along."""
    with open_store(sqlite_path) as s:
        tx = Transaction()
        for i in range(1234):
            name = "app:a_much_longer_workflow_name" if i == 900 else "app:flow"
            tx.create_workflow(f"w{i:04d}", name, [i], status="running" if i < 500
                               else "completed", time=1.8e9 + i)
        s.write(tx)
    pages: list[int] = []
    real = SQLiteStore.list_workflows

    def paged(self: SQLiteStore, *args: Any, **kw: Any) -> Any:
        rows = real(self, *args, **kw)
        pages.append(len(rows))
        return rows

    monkeypatch.setattr(SQLiteStore, "list_workflows", paged)
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "UPDATED", "SEARCH"]
    assert [r.split()[0] for r in rows] == [f"w{i:04d}" for i in range(1234)]
    assert pages and max(pages) <= 500, pages
    # (the status column holds any status: a later page's differ from the first's)
    assert rows[0].startswith("w0000  app:flow  running    2027-")
    assert rows[900].startswith("w0900  app:a_much_longer_workflow_name  completed  2027-")
    assert rows[901].startswith("w0901  app:flow  completed  2027-")
    pages.clear()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--json",
                              "--order", "newest", "--limit", "1100")
    assert code == 0, err
    listed = json.loads(out)
    assert [w["workflow_id"] for w in listed] == [f"w{i:04d}" for i in range(1233, 133, -1)]
    assert listed[0]["input"] == [1233] and max(pages) <= 500, pages
    code, out, err = cli_here(capsys, "--store", sqlite_path, "list", "--json", "--id", "x")
    assert (code, out) == (0, "[]\n")


def test_schedules_list_never_cuts_a_schedule_id(
        sqlite_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``schedules list`` shared the table's padding: one schedule id of 1,000
    characters widened every row; then it was cut (``…``), where the id is what
    ``schedules pause ID`` takes. As ``workflows list``: the column is padded to at
    most 40 characters, an id is whole (``--json``: whole too); ``--wide`` (which
    ``schedules list`` did not take) pads it to the longest id, as ``workflows list``'s."""
    from garrison import _cli

    long_id = "s" * 1000
    with open_store(sqlite_path) as s:
        tx = Transaction()
        for sid in ("n1", long_id):
            tx.put_schedule(sid, host="workflows", workflow="app:flow", every=60,
                            catchup_window=60, next_tick=0)
        s.write(tx)
    assert _cli.main(["schedules", "--store", sqlite_path, "list"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("ID" + " " * 40 + "WORKFLOW  ")
    assert sorted(r.split("  ")[0] for r in rows) == ["n1", long_id], rows
    for row in rows:
        assert row.startswith(row.split("  ")[0].ljust(40) + "  app:flow  "), row
    assert _cli.main(["schedules", "--store", sqlite_path, "list", "--wide"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("ID" + " " * 1000 + "WORKFLOW  ")
    for row in rows:
        assert row.startswith(row.split("  ")[0].ljust(1000) + "  app:flow  "), row
    assert _cli.main(["schedules", "--store", sqlite_path, "list", "--json"]) == 0
    assert [r["schedule_id"] for r in json.loads(capsys.readouterr().out)] == ["n1", long_id]


# ------------------------------------------------------------------ children (helper-413)
def test_show_lists_a_workflow_s_children_with_their_count(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``show`` printed no children: it lists the first 500 (id and status), counts them
    all (the store's count), and names the ``list --parent`` that lists the rest;
    ``--json`` has ``children`` and ``children_total``."""
    with open_store(store_path) as s:
        tx = Transaction().create_workflow("p", "app:flow", [], status="waiting",
                                           host="workflows", time=1.8e9)
        for i in range(503):
            tx.create_workflow(f"c-{i:04d}", "app:flow", [], status="waiting",
                               parent="workflows/p", host="workflows", time=1.8e9 + 1 + i)
        tx.create_workflow("alone", "app:flow", [], status="waiting", host="workflows")
        tx.create_workflow("small", "app:flow", [], status="waiting", host="workflows")
        tx.create_workflow("kid", "app:flow", [], status="completed",
                           parent="workflows/small", host="workflows")
        s.write(tx)
    code, out, err = cli_here(capsys, "--store", store_path, "show", "p")
    assert code == 0, err
    lines = out.splitlines()
    at = lines.index("children          500 of 503 shown (garrison workflows list --parent "
                     "workflows/p lists them all)")
    assert lines[at + 1:at + 3] == ["  c-0000  waiting", "  c-0001  waiting"]
    assert lines[at + 500] == "  c-0499  waiting" and len(lines) == at + 501
    code, out, err = cli_here(capsys, "--store", store_path, "show", "p", "--json")
    shown = json.loads(out)
    assert shown["children_total"] == 503 and len(shown["children"]) == 500
    assert shown["children"][0] == {"workflow_id": "c-0000", "status": "waiting"}
    code, out, err = cli_here(capsys, "--store", store_path, "show", "small")
    assert out.splitlines()[-2:] == ["children          1", "  kid  completed"]
    code, out, err = cli_here(capsys, "--store", store_path, "show", "alone")
    assert out.splitlines()[-1] == "children          none"
    # the rest: list --parent, in start order as show lists them
    code, out, err = cli_here(capsys, "--store", store_path, "list", "--parent",
                              "workflows/p", "--json")
    assert code == 0, err
    assert [r["workflow_id"] for r in json.loads(out)] == [f"c-{i:04d}" for i in range(503)]
    # a workflow's id where its pid goes ("p"): it printed "no workflows", as if it had
    # no children; it is refused, naming the pid to give
    with pytest.raises(SystemExit) as stop:
        cli_here(capsys, "--store", store_path, "list", "--parent", "p")
    said = capsys.readouterr()
    assert stop.value.code == 2 and said.out == ""
    assert "--parent: expected a pid (host/id, as show names it), got 'p': a workflow's " \
        "id; its pid is 'workflows/p' on the default host" in said.err, said.err


async def test_show_says_why_a_pending_workflow_waits(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``show`` of a workflow ``pending`` in its host's queue said nothing of why: it
    says where it waits and what holds it there, as far as the store can tell (here:
    no node holds the store; the limits are the config of a node, which is gone);
    ``--json``: ``queue``, null for a workflow that does not wait."""
    async with garrison.open_node(store=store_path, max_concurrent=1) as node:
        await node.start_workflow(workflow_app.approval, "busy", id="busy")
        await node.start_workflow(workflow_app.approval, "next", id="next")
        await trio.sleep(0.01)
        assert node.workflow("next").status() == "pending"
    code, out, err = cli_here(capsys, "--store", store_path, "show", "next")
    assert code == 0, err
    assert ("queue             waiting in queue 'workflows': no node holds the store now "
            "(1 running) (its limits are the config of the node that runs the host, which "
            "the store does not keep)") in out.splitlines(), out
    code, out, err = cli_here(capsys, "--store", store_path, "show", "next", "--json")
    said = json.loads(out)["queue"]
    assert {k: said[k] for k in ("host", "priority", "ahead", "running")} == {
        "host": "workflows", "priority": 0, "ahead": 0, "running": 1}
    code, out, err = cli_here(capsys, "--store", store_path, "show", "busy", "--json")
    assert json.loads(out)["queue"] is None
    code, out, err = cli_here(capsys, "--store", store_path, "show", "busy")
    assert not [line for line in out.splitlines() if line.startswith("queue ")], out


def test_ids_a_store_of_before_holds_unprintable_keep_their_rows_in_the_tables(
        sqlite_path: str) -> None:
    """The id rule (printable, no control character) came after releases that stored
    any id: their stores, upgraded, can hold 'nl\\nid' or an id with a terminal escape.
    workflows list and schedules list printed such an id as it was: a newline split its
    row in two, a tab pushed its columns along, an escape acted on the terminal (the
    replay's line already escaped it). Each table shows it on its row, escaped."""
    odd = ["nl\nid", "tab\tid", "esc\x1b[31mred"]
    with open_store(sqlite_path) as store:
        for wid in odd:
            store.write(Transaction().create_workflow(wid, "workflow_app:approval",
                                                      ["x"], status="waiting"))
        store.write(Transaction().put_schedule(
            "nightly\treport", host="workflows", workflow="workflow_app:approval",
            input=["x"], every=3600.0, catchup_window=60.0, next_tick=None))
        store.write(Transaction().update_schedule("nightly\treport", last_workflow=odd[0]))
    listed = cli("--store", sqlite_path, "list")
    lines = listed.stdout.splitlines()
    assert listed.returncode == 0 and len(lines) == 4, listed
    assert "\x1b" not in listed.stdout and "\t" not in listed.stdout, listed.stdout
    shown = sorted(line.split()[0] for line in lines[1:])
    assert shown == sorted(["nl\\nid", "tab\\tid", "esc\\x1b[31mred"]), lines
    assert all(line.split()[1] == "workflow_app:approval" for line in lines[1:]), lines
    sched = subprocess.run([sys.executable, "-m", "garrison", "schedules", "--store",
                            sqlite_path, "list"], cwd=ROOT, text=True, capture_output=True,
                           timeout=60)
    rows = sched.stdout.splitlines()
    assert sched.returncode == 0 and len(rows) == 2, sched
    assert rows[1].startswith("nightly\\treport  ") and rows[1].endswith("nl\\nid"), rows


async def test_show_of_a_retried_workflow_terminated_while_pending_lists_no_old_request(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """nu473: a workflow terminated while it waited pending (it never ran), then
    retried: ``workflows show`` listed the old terminate request among its pending
    messages, one the retried run never acts on (a node only drops it, as stale, once
    it admits the workflow). The retry consumes the requests of the attempts it ends
    (a request for whatever attempt runs stays); so for one a node terminated in its
    full queue."""
    from garrison import _store_tools
    from garrison.hosts.workflow import request_transaction, terminated

    async with garrison.open_node(store=store_path, max_concurrent=1) as node:
        await node.start_workflow(workflow_app.approval, "first", id="busy")
        await node.start_workflow(workflow_app.steps, 0, 2, id="p-8")
        await node.workflow("p-8").terminate("stop")  # failed, never ran
    with open_store(store_path) as s:  # as `garrison workflows start` writes it
        s.write(Transaction().create_workflow("p-7", "workflow_app:steps", [0, 2],
                                              status="pending"))

    def terminate_retry_show() -> list[Any]:
        with _store_tools.open_store(store_path) as s:  # (as the CLI opens it)
            assert _store_tools.terminate(s, "p-7", "stop", wait=0)
            s.write(request_transaction("p-7", terminated("later")))  # any attempt
            for wid in ("p-7", "p-8"):
                _store_tools.retry(s, wid)
        shown = []
        for wid in ("p-7", "p-8"):
            code, out, err = cli_here(capsys, "--store", store_path, "show", wid, "--json")
            assert code == 0, err
            shown.append([(m["topic"], m["kind"]) for m in json.loads(out)["pending_messages"]])
        return shown

    assert await trio.to_thread.run_sync(terminate_retry_show) == [
        [("terminate", "control")], []]


def test_a_retry_succeeds_when_a_node_consumes_the_old_terminate_request_meanwhile(
        store_path: str) -> None:
    """nu476: the retry of a workflow a terminate ended in the store (its request
    written beside the end) consumes that request; a node that consumed it at the same
    moment (as it does on reading a request of an ended workflow) made the retry fail
    with "inbox row N is not a pending message of workflow 'p-9'", nothing retried.
    The request asks nothing more either way: the retry succeeds, and none is left."""
    from garrison import _store_tools

    with open_store(store_path) as s:  # as `garrison workflows start` writes it
        s.write(Transaction().create_workflow("p-9", "workflow_app:steps", [0, 2],
                                              status="pending"))
    with _store_tools.open_store(store_path) as s:
        assert _store_tools.terminate(s, "p-9", "stop", wait=0)  # ended in the store

        class NodeMeanwhile:  # the store, as a node consumes the request meanwhile
            def __getattr__(self, name: str) -> Any:
                return getattr(s, name)

            def pending_messages(self, wid: str) -> Any:
                rows = s.pending_messages(wid)
                for row in rows:  # (a node's discard of a request asking nothing more)
                    s.write(Transaction().consume(wid, row.id, 0))
                return rows

        assert "journal record(s) replay" in _store_tools.retry(NodeMeanwhile(), "p-9")
        rec = s.get_workflow("p-9")
        assert rec is not None and (rec.status, rec.attempt) == ("pending", 2), rec
        assert s.pending_messages("p-9") == []


def test_show_prints_a_string_value_as_json_and_never_a_control_character(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """``show`` printed a string result as its bare text: a workflow that returned
    ``"null"`` read as one that returned None, ``"42"`` as 42, and one whose result held
    a terminal escape (``\\x1b[2J``) cleared the screen, a newline broke its line. Every
    value of the workflow's data is its JSON (a string quoted, its escapes escaped), as
    ``input`` already was; the row's own text (id, name, ...) is shown as a table cell
    is, a control character as its escape."""
    values = {"r0": "null", "r1": None, "r2": "42", "r3": 42, "r4": "a\x1b[2Jb\nline2"}
    with open_store(sqlite_path) as s:
        for wid, value in [*values.items(), ("odd\x1bid", "x")]:
            s.write(Transaction().create_workflow(wid, "app:flow", [value])
                    .update_workflow(wid, status="completed", result=value))
    shown = {}
    for wid in values:
        code, out, err = cli_here(capsys, "--store", sqlite_path, "show", wid)
        assert (code, err) == (0, ""), err
        assert "\x1b" not in out, out
        lines = dict(line.split(None, 1) for line in out.splitlines() if line.strip()
                     and not line.startswith(" "))
        shown[wid] = lines["result"]
    assert shown == {"r0": '"null"', "r1": "null", "r2": '"42"', "r3": "42",
                     "r4": '"a\\u001b[2Jb\\nline2"'}
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", "odd\x1bid")
    assert code == 0 and "\x1b" not in out, out
    assert out.splitlines()[0].split() == ["workflow_id", "odd\\x1bid"]


def test_a_json_argument_of_minus_is_read_from_standard_input(
        capsys: pytest.CaptureFixture[str], sqlite_path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """README sends a payload over the console's 1 MiB to ``garrison workflows signal``,
    but a command line takes no argument over 128 KiB (Linux: ``Argument list too
    long``), and ``-`` was refused as no JSON. ``-`` for a signal's payload, a resolve's
    value or a start's arguments reads that JSON from standard input, as large as the
    store takes; what is not UTF-8 there is refused naming it, nothing written."""
    import io

    def stdin(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    _plain_store(sqlite_path)
    big = {"by": "x" * 300_000}
    stdin(json.dumps(big).encode())
    code, out, err = cli_here(capsys, "--store", sqlite_path, "signal", "w1", "approve", "-")
    assert (code, err) == (0, ""), err
    stdin(b'"yes"')
    code, out, err = cli_here(capsys, "--store", sqlite_path, "resolve", "w1", "ok", "-")
    assert code == 0, err
    stdin(b"[0, 2]")
    code, out, err = cli_here(capsys, "--store", sqlite_path, "start", "workflow_app:steps",
                              "-", "--id", "s1")
    assert (code, out) == (0, "workflow 's1' started (workflow_app:steps)\n"), err
    with open_store(sqlite_path) as store:
        [msg] = store.pending_messages("w1")
        assert (msg.topic, msg.payload) == ("approve", big)
        assert [(p.name, p.value) for p in store.promises("w1")] == [("ok", "yes")]
        assert store.get_workflow("s1").input == [0, 2]
    stdin(b'{"by": "\xff"}')
    code, out, err = cli_here(capsys, "--store", sqlite_path, "signal", "w2", "approve", "-")
    assert (code, out) == (2, ""), out
    assert err.startswith("garrison workflows: the payload read from standard input is "
                          "not UTF-8 text"), err
    stdin(b"")
    code, out, err = cli_here(capsys, "--store", sqlite_path, "signal", "w2", "approve", "-")
    assert code == 2 and "the payload (read from standard input) must be JSON" in err, err
    with open_store(sqlite_path) as store:
        assert store.pending_messages("w2") == []


def test_show_cuts_a_value_longer_than_a_screen_saying_how_much_more_there_is(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """``show`` of a workflow that returned 5 MB printed all of it, a screen's worth
    thousands of times over, where ``list`` and ``history`` cut their values and the
    console cuts past 64 KiB. A value past 4,000 characters is cut there, saying how
    many more there are and that ``--json`` shows it whole; the id is never cut."""
    wid = "w-" + "i" * 5000
    with open_store(sqlite_path) as s:
        s.write(Transaction().create_workflow(wid, "app:flow", ["x" * 100])
                .update_workflow(wid, status="completed", result="y" * 5_000_000))
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", wid)
    assert (code, err) == (0, ""), err
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in out.splitlines()
             if line.strip()}
    assert lines["workflow_id"] == wid
    assert lines["input"] == json.dumps(["x" * 100])
    assert lines["result"] == (f'"{"y" * 3998}… (4,996,003 more characters: --json shows '
                               "them)")
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", wid, "--json")
    assert json.loads(out)["result"] == "y" * 5_000_000


def test_a_json_argument_of_minus_with_standard_input_closed_or_a_terminal(
        capsys: pytest.CaptureFixture[str], sqlite_path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``signal w1 t - <&-`` (standard input closed, as under some service managers)
    ended in a traceback, ``'NoneType' object has no attribute 'buffer'``: it is
    refused, naming what is wrong, exit 2, nothing written. On a terminal, where ``-``
    taken for "no payload" would wait in silence, a line on stderr says what it reads
    and how to end it."""
    import io

    _plain_store(sqlite_path)
    monkeypatch.setattr(sys, "stdin", None)
    for verb in (["signal", "w1", "approve", "-"], ["resolve", "w1", "ok", "-"],
                 ["start", "workflow_app:steps", "-", "--id", "s1"]):
        code, out, err = cli_here(capsys, "--store", sqlite_path, *verb)
        assert (code, out) == (2, ""), out
        assert err.startswith("garrison workflows: the ") and err.endswith(
            "is to be read from standard input (-), which is closed\n"), err
    with open_store(sqlite_path) as store:
        assert store.pending_messages("w1") == [] and store.promises("w1") == []
        assert store.get_workflow("s1") is None

    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(io.BytesIO(b'{"by": "ann"}')))
    code, out, err = cli_here(capsys, "--store", sqlite_path, "signal", "w1", "approve",
                              "-")
    assert code == 0, err
    assert err == ("garrison workflows: reading the payload (JSON) from standard input, "
                   "a terminal: end it with Ctrl-D\n"), err
    with open_store(sqlite_path) as store:
        assert [m.payload for m in store.pending_messages("w1")] == [{"by": "ann"}]


def test_show_prints_the_letters_of_a_value_as_they_are_and_escapes_the_unprintable(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """Since ``show`` prints a string result as its JSON, a result ``"Zoë"`` read
    ``"Zo\\u00eb"``, and one in Japanese as a row of escapes, where ``list``,
    ``history`` and the console show such letters as they are. The JSON now keeps every
    printable character, and escapes (as JSON does) only what is not printable: a
    control character, a C1 one as ``\\x9b`` (a terminal's CSI), a bidi override, a
    lone surrogate, which could not even be written."""
    value = "Zoë 日本 😀 \u202eevil \x9b[2J \x7f \ud800 \U000e0001 end"
    with open_store(sqlite_path) as s:
        s.write(Transaction().create_workflow("u1", "app:flow", [value])
                .update_workflow("u1", status="completed", result=value)
                .set_state("u1", "who", {"name": "Zoë"}))
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", "u1")
    assert (code, err) == (0, ""), err
    lines = dict(line.split(None, 1) for line in out.splitlines() if line.strip()
                 and not line.startswith(" "))
    shown = '"Zoë 日本 😀 \\u202eevil \\u009b[2J \\u007f \\ud800 \\udb40\\udc01 end"'
    assert lines["result"] == shown, lines["result"]
    assert json.loads(lines["result"]) == value
    assert lines["input"] == f"[{shown}]"
    assert lines["state"] == '{"who": {"name": "Zoë"}}'


def test_show_prints_a_child_s_id_with_its_control_characters_escaped(
        capsys: pytest.CaptureFixture[str], sqlite_path: str) -> None:
    """``show`` escapes a control character of the row's own id, but printed its
    children's ids as they are: a child an older store holds (the id rule came later)
    whose id held ``\\x1b[2J`` cleared the operator's screen from the children's list.
    A child's id is shown as the row's is, its line and columns kept."""
    with open_store(sqlite_path) as s:
        s.write(Transaction().create_workflow("p1", "app:flow", [])
                .create_workflow("kid\x1b[2J\nx", "app:flow", [], parent="workflows/p1"))
    code, out, err = cli_here(capsys, "--store", sqlite_path, "show", "p1")
    assert (code, err) == (0, ""), err
    assert "\x1b" not in out, out
    assert out.splitlines()[-1].split() == ["kid\\x1b[2J\\nx", "pending"], out


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"},
                                 {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0"}],
                         ids=["PYTHONIOENCODING=ascii", "C locale"])
def test_output_an_ascii_terminal_cannot_encode_shows_escaped_not_a_traceback(
        sqlite_path: str, env: dict[str, str]) -> None:
    """``workflows list`` and ``show`` of a workflow whose id or data holds ``é`` or
    ``日本``, their standard output not UTF-8 (``PYTHONIOENCODING=ascii``, a C locale):
    the command died with a ``UnicodeEncodeError`` traceback on its own output. Such a
    character is printed as its escape (``\\xe9``), the command succeeding."""
    with open_store(sqlite_path) as s:
        tx = Transaction()
        tx.create_workflow("ordre-é-日本", "app:flow", ["é"], status="running")
        tx.create_workflow("w-ascii", "app:flow", ["café 日本"], status="running")
        s.write(tx)
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONIOENCODING", "LANG", "LC_ALL", "PYTHONUTF8")}
    for verb in (["list"], ["show", "w-ascii"]):
        done = subprocess.run([sys.executable, "-m", "garrison", "workflows", "--store",
                               sqlite_path, *verb], cwd=ROOT, env={**base, **env},
                              capture_output=True, timeout=60)
        out, err = done.stdout.decode("ascii"), done.stderr.decode("ascii")
        assert done.returncode == 0, err
        assert "Traceback" not in err, err
        if verb == ["list"]:
            assert "ordre-\\xe9-\\u65e5\\u672c" in out, out
        else:
            assert "caf\\xe9 \\u65e5\\u672c" in out, out
