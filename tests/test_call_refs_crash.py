"""Replies across OS processes and nodes: a request left from a node's previous run, a
reply a kill lost between a workflow's reply and its caller's record, two nodes' calls
to one server, a workflow's call to a process of another node, a reply another node
cannot carry. (Real time: child processes, and nodes of a cluster.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import garrison
from garrison import PayloadError, process

HERE = Path(__file__).resolve().parent
APP = HERE / "crash" / "call_refs_app.py"
ROOT = HERE.parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="os._exit as a kill")


def _popen(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(APP), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(*args: str, code: int = 0) -> Any:
    proc = _popen(*args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    return json.loads(out.strip().splitlines()[-1])["result"] if code == 0 else None


def test_a_stale_request_answers_no_call_of_the_next_os_process(tmp_path: Path) -> None:
    """Each OS process counted call refs from 1 while a workflow's pid stays: after the
    restart, B's answer to C's stale request (ref 1) completed C's call to X (ref 1 of
    the new process), and C returned B's answer."""
    db = str(tmp_path / "store.db")
    assert _run("restart-1", db) == ["call"]  # C gave up on B; its call to X waits
    assert _run("restart-2", db) == "X's answer"


def test_a_reply_lost_to_a_kill_before_the_caller_recorded_it_is_found(
        tmp_path: Path) -> None:
    """B recorded its reply to A; the node died as the reply reached A, before A recorded
    it. After the restart A's request, sent again, is a duplicate B never sees, and B's
    replay does not send the reply again: A found nothing and its call timed out. Now A
    takes the reply B recorded: once, and B replied once."""
    db = str(tmp_path / "store.db")
    _run("lost-reply-1", db, code=137)
    result, b_history = _run("lost-reply-2", db)
    assert result == "answer to A's question"
    assert b_history.count("reply") == 1, b_history


def test_a_lost_reply_is_found_after_its_server_continued_as_new(tmp_path: Path) -> None:
    """The same kill, with a server that continues as new after each reply (as README
    says long-lived servers should): its next run's journal no longer held the reply,
    and A's call timed out. The reply is kept on the request's inbox row."""
    db = str(tmp_path / "store.db")
    _run("continued-reply-1", db, code=137)
    result, b_history = _run("continued-reply-2", db)
    assert result == "answer to A's question"
    assert b_history[0] == "continued", b_history


def test_two_nodes_calls_with_the_same_count_get_their_own_replies(
        postgres_url: str, tmp_path: Path) -> None:
    """Node c's local call and node a's call reach c's server ``q`` with the same ref
    number (each OS process counted from 1): a's call took the callers entry of c's,
    a got c's answer and c's call timed out."""
    go_c, go_a = str(tmp_path / "go_c"), str(tmp_path / "go_a")
    c = _popen("server-c", postgres_url, go_c)
    a = _popen("caller-a", postgres_url, go_a)
    try:
        for proc in (c, a):
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        Path(go_c).touch()
        assert c.stdout is not None and c.stdout.readline().strip() == "first"
        Path(go_a).touch()
        outs = [proc.communicate(timeout=60) for proc in (c, a)]
    finally:
        for proc in (c, a):
            if proc.poll() is None:
                proc.kill()
    for proc, (_out, err) in zip((c, a), outs, strict=True):
        assert proc.returncode == 0, err
    got = [json.loads(out.strip().splitlines()[-1])["result"] for out, _err in outs]
    assert got == ["answer to from-c", "answer to from-a"]


def test_a_reply_recorded_by_a_node_that_died_before_sending_it_reaches_its_caller(
        postgres_url: str, tmp_path: Path) -> None:
    """B (node x) recorded its reply to A (node y) and x died before sending it: node y
    took B over, whose replay does not reply again, and A waited out its timeout
    though B's history said 'reply'. A's node reads the reply from the request's row."""
    go = str(tmp_path / "go")
    x = _popen("dies-replying", postgres_url, go)
    procs = [x]
    try:
        assert x.stdout is not None and x.stdout.readline().strip() == "ready"
        y = _popen("asks-across", postgres_url, go)
        procs.append(y)
        Path(go).touch()
        out, err = y.communicate(timeout=90)
        x.wait(timeout=30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert x.returncode == 137 and y.returncode == 0, err
    result, b_history = json.loads(out.strip().splitlines()[-1])["result"]
    assert result == "answer to A's question"
    assert b_history.count("reply") == 1, b_history


async def _server() -> None:
    process.register("srv", scope="cluster")
    async for msg in process.inbox():
        if msg.payload == "opaque":
            try:
                await msg.reply(_Opaque())
            except PayloadError as exc:
                await msg.reply(f"refused: {exc}")
        else:
            await msg.reply(f"answer to {msg.payload}")


class _Opaque:
    pass


async def wf_calls(name: str, payload: str) -> Any:
    return await process.call(name, "q", payload, timeout="5s")


async def test_a_workflow_gets_the_reply_of_a_process_of_another_node(
        postgres_url: str) -> None:
    """The request carried the workflow's pid, which names no node: the reply went to
    a channel nobody listens on, and the workflow's call timed out."""
    async with garrison.open_node(store=postgres_url, name="a", lease="2s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="2s") as b:
        await b.spawn(_server)
        await trio.sleep(0.3)
        await a.start_workflow(wf_calls, "srv", "from-wf", id="wfc")
        with trio.fail_after(20):
            assert await a.workflow("wfc").result() == "answer to from-wf"


@garrison.activity
async def asks_by_activity(name: str) -> Any:
    return await process.call(name, "q", "from-activity", timeout="5s")


async def wf_calls_by_activity(name: str) -> Any:
    return await asks_by_activity(name)


async def test_an_activity_gets_the_reply_of_a_process_of_another_node(
        postgres_url: str) -> None:
    """An activity calls from its workflow's pid: the same lost reply."""
    async with garrison.open_node(store=postgres_url, name="a", lease="2s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="2s") as b:
        await b.spawn(_server)
        await trio.sleep(0.3)
        await a.start_workflow(wf_calls_by_activity, "srv", id="wfa")
        with trio.fail_after(20):
            assert await a.workflow("wfa").result() == "answer to from-activity"


async def test_a_reply_another_node_cannot_carry_raises_in_the_replier(
        postgres_url: str) -> None:
    """A reply JSON cannot carry raises ``PayloadError`` (naming its type) in the
    replier's ``msg.reply``, as a send of it does; the call still waits for a reply.
    (It arrived as its ``repr``.)"""
    async with garrison.open_node(store=postgres_url, name="a", lease="2s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="2s") as b:
        await a.spawn(_server)
        await trio.sleep(0.3)
        with trio.fail_after(20):
            got = await b.call("srv", "q", "opaque", timeout="5s")
        assert got.startswith("refused: ") and "_Opaque" in got, got
