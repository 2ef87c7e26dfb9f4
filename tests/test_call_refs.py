"""A reply completes the call it answers and no other: call refs unique to their call
across restarts and nodes, a workflow's call ref the same when a replay makes the call
again, a reply a crash lost found again, a value a caller cannot carry refused in the
replier, and workflow calls counted as messages. (Across OS processes and nodes:
test_call_refs_crash.py.)"""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio

import garrison
from garrison import PayloadError, process


async def wf_go_then_reply(answer: str) -> str:
    await process.listen("go").receive()
    msg = await process.inbox().receive()
    await msg.reply(answer)
    return f"replied to {msg.topic}"


async def wf_gives_up_then_asks_another() -> str:
    try:
        await process.call("workflows/B", "question-for-B", timeout="1s")
    except TimeoutError:
        pass
    return await process.call("workflows/X", "question-for-X", timeout="1h")


async def wf_asks_b() -> str:
    return await process.call("workflows/B", "question-for-B", timeout="1h")


async def wf_server() -> None:
    while True:
        msg = await process.inbox().receive()
        await msg.reply(f"answer to {msg.payload}")


async def wf_asks(to: str) -> Any:
    try:
        return await process.call(to, "q", "A's question", timeout="3s")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


class Opaque:
    pass


async def test_a_request_left_from_before_a_restart_answers_no_later_call(
        store_spec: str, autojump_clock: Any) -> None:
    """C gave up on B (timeout), then called X; the node stopped with both requests
    unanswered. After the restart B answers its stale request first: that reply must
    not complete C's call to X (C's refs once restarted from 1 with every node run,
    and the call made again after the restart had another ref than its request)."""
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(wf_go_then_reply, "B's answer", id="B")
        await node.start_workflow(wf_go_then_reply, "X's answer", id="X")
        await node.start_workflow(wf_gives_up_then_asks_another, id="C")
        await trio.sleep(2)
    async with garrison.open_node(store=store_spec) as node:
        await trio.sleep(0.3)
        await node.send("workflows/B", "go")
        await trio.sleep(0.3)
        await node.send("workflows/X", "go")
        with trio.fail_after(60):
            assert await node.workflow("C").result() == "X's answer"
            assert await node.workflow("B").result() == "replied to question-for-B"
            assert await node.workflow("X").result() == "replied to question-for-X"


async def test_a_call_made_again_after_a_restart_gets_the_reply_to_its_request(
        store_spec: str, autojump_clock: Any) -> None:
    """C's call was in flight when the node stopped; replayed, it is made again (its
    request, sent again under the same message id, is a duplicate B's inbox drops) and
    B's answer to the first request is its reply."""
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(wf_go_then_reply, "B's answer", id="B")
        await node.start_workflow(wf_asks_b, id="C")
        await trio.sleep(0.5)
    async with garrison.open_node(store=store_spec) as node:
        await trio.sleep(0.3)
        await node.send("workflows/B", "go")
        assert await node.workflow("B").result() == "replied to question-for-B"
        with trio.fail_after(60):
            assert await node.workflow("C").result() == "B's answer"
        assert [r.kind for r in node.workflow("C").history()] == ["call"]


async def test_a_workflow_to_workflow_call_counts_its_request(autojump_clock: Any) -> None:
    async with garrison.open_node() as node:
        await node.start_workflow(wf_server, id="B")
        await trio.sleep(0.1)
        before = node.stats()["messages"]
        await node.start_workflow(wf_asks, "workflows/B", id="A")
        assert await node.workflow("A").result() == "answer to A's question"
        assert node.stats()["messages"] == before + 1


async def test_a_process_replying_what_a_workflow_cannot_record_gets_payload_error(
        autojump_clock: Any) -> None:
    """The replier's ``msg.reply`` raises (naming the type), as a send of it would; the
    call still waits, and a reply it can record answers it. (The workflow's call
    raised ``PayloadError`` instead, and the replier went on as if it had replied.)"""
    refused: list[str] = []

    async def replier() -> None:
        msg = await process.inbox().receive()
        try:
            await msg.reply(Opaque())
        except PayloadError as exc:
            refused.append(str(exc))
        await msg.reply(["fine"])

    async with garrison.open_node() as node:
        p = await node.spawn(replier)
        await node.start_workflow(wf_asks, str(p), id="A")
        assert await node.workflow("A").result() == ["fine"]
    assert len(refused) == 1 and "Opaque" in refused[0], refused


async def wf_replies_opaque() -> str:
    msg = await process.inbox().receive()
    try:
        await msg.reply(Opaque())
    except PayloadError as exc:
        assert "Opaque" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("no PayloadError")
    await msg.reply("fine")
    return "done"


async def test_a_workflow_replying_what_it_cannot_record_gets_payload_error(
        autojump_clock: Any) -> None:
    async with garrison.open_node() as node:
        await node.start_workflow(wf_replies_opaque, id="B")
        await node.start_workflow(wf_asks, "workflows/B", id="A")
        assert await node.workflow("A").result() == "fine"
        assert await node.workflow("B").result() == "done"


async def test_a_request_of_a_garrison_before_string_refs_is_answered(
        autojump_clock: Any, tmp_path: Any) -> None:
    """A workflow's request written by a garrison that counted call refs (its row's
    call_ref a number) and answered after the upgrade: the reply went under that
    number, the caller (loaded again) waits under ``<host>/<request id>``, and it
    failed with 'ended before replying' though B replied."""
    import sqlite3

    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(wf_go_then_reply, "B's answer", id="B")
        await node.start_workflow(wf_asks_b, id="C")
        await trio.sleep(0.5)
    with sqlite3.connect(db) as conn:  # as the earlier release wrote it
        assert conn.execute("UPDATE inbox SET call_ref = '1' WHERE workflow_id = 'B' "
                            "AND topic = 'question-for-B'").rowcount == 1
    async with garrison.open_node(store=db) as node:
        await trio.sleep(0.3)
        await node.send("workflows/B", "go")
        with trio.fail_after(60):
            assert await node.workflow("C").result() == "B's answer"


async def _refs_seen(n: int) -> list[str]:
    """The call refs ``n`` calls of a process (made inline by the call, caab2e6) carry."""

    async def server() -> None:
        async for msg in process.inbox():
            await msg.reply(msg.call_ref)

    async def client(to: garrison.Pid) -> list[str]:
        return [await process.call(to, "ref?", timeout="1s") for _ in range(n)]

    async with garrison.open_node() as node:
        return list(await node.wait(await node.spawn(client, await node.spawn(server))))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
def test_a_forked_child_makes_call_refs_of_its_own() -> None:
    """A call's ref, made inline from the module's prefix and count, is the forked
    child's own: never one its parent made or makes (a reply in a shared inbox would
    answer the other's call)."""
    ours = set(trio.run(_refs_seen, 3))
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        try:
            os.write(write, " ".join(trio.run(_refs_seen, 3)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(child, 0)
    ours |= set(trio.run(_refs_seen, 3))
    assert len(theirs) == 3 and len(ours) == 6
    assert not ours & theirs
    assert {ref.rpartition(".")[0] for ref in theirs}.isdisjoint(
        {ref.rpartition(".")[0] for ref in ours})
