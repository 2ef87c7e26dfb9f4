"""Child processes of tests/test_call_refs_crash.py: each run a fresh OS process (its
call refs counted from scratch), printing its outcome as the last line of stdout (JSON).

    call_refs_app.py restart-1|restart-2 DB   a stale request, answered after a restart
    call_refs_app.py lost-reply-1|lost-reply-2 DB   killed as the reply reaches its caller
    call_refs_app.py continued-reply-1|continued-reply-2 DB   the same, and the server
                                                continues as new after each reply
    call_refs_app.py server-c|caller-a URL GO_FILE   two nodes' calls to one server
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import trio

import garrison
from garrison import process


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


async def wf_server() -> None:
    while True:
        msg = await process.inbox().receive()
        await msg.reply(f"answer to {msg.payload}")


async def wf_serves_then_continues(served: int = 0) -> None:
    msg = await process.inbox().receive()
    await msg.reply(f"answer to {msg.payload}")
    garrison.workflow.continue_as_new(served + 1)  # (its journal, with the reply, goes)


async def wf_asks_b() -> str:
    return await process.call("workflows/B", "q", "A's question", timeout="20s")


async def restart(db: str, run: int) -> Any:
    async with garrison.open_node(store=db) as node:
        if run == 1:
            await node.start_workflow(wf_go_then_reply, "B's answer", id="B")
            await node.start_workflow(wf_go_then_reply, "X's answer", id="X")
            await node.start_workflow(wf_gives_up_then_asks_another, id="C")
            await trio.sleep(1.5)  # C gave up on B and waits for X
            return [r.kind for r in node.workflow("C").history()]
        await trio.sleep(0.3)
        await node.send("workflows/B", "go")  # B answers C's stale request first
        await trio.sleep(0.3)
        await node.send("workflows/X", "go")
        with trio.fail_after(10):
            return await node.workflow("C").result()


async def lost_reply(db: str, run: int, server: Any = wf_server) -> Any:
    if run == 1:
        from garrison.hosts._kernel import Caller

        finish_call = Caller.finish_call

        def dies_as_the_reply_arrives(self: Any, ref: Any, result: Any) -> None:
            if str(self.pid) == "workflows/A":
                os._exit(137)  # as SIGKILL: B's reply is recorded, A's call is not
            finish_call(self, ref, result)

        Caller.finish_call = dies_as_the_reply_arrives  # type: ignore[method-assign]
        async with garrison.open_node(store=db) as node:
            await node.start_workflow(server, id="B")
            await node.start_workflow(wf_asks_b, id="A")
            await trio.sleep(10)
        return "not killed"
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(15):
            result = await node.workflow("A").result()
        return [result, [r.kind for r in node.workflow("B").history()]]


async def server_c(url: str, go: str) -> Any:
    async def q() -> None:
        process.register("q", scope="cluster")
        first = await process.inbox().receive()
        print("first", flush=True)
        second = await process.inbox().receive()
        await first.reply(f"answer to {first.payload}")
        await second.reply(f"answer to {second.payload}")
        await trio.sleep_forever()

    async with garrison.open_node(store=url, name="c", lease="2s") as node:
        await node.spawn(q)
        await trio.sleep(0.2)
        print("ready", flush=True)
        while not os.path.exists(go):
            await trio.sleep(0.02)
        try:
            return await node.call("q", "x", "from-c", timeout="6s")
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await trio.sleep(1)


async def caller_a(url: str, go: str) -> Any:
    async with garrison.open_node(store=url, name="a", lease="2s") as node:
        print("ready", flush=True)
        while not os.path.exists(go):
            await trio.sleep(0.02)
        try:
            return await node.call("q", "x", "from-a", timeout="6s")
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"


async def dies_replying(url: str, go: str) -> Any:
    """Node x runs server B and dies as B's reply to A leaves (recorded, never sent)."""
    from garrison.cluster import _remote

    finish_call = _remote._Peer.finish_call

    def dies(self: Any, ref: Any, result: Any) -> None:
        if str(self.pid) == "workflows/A":
            os._exit(137)  # as SIGKILL: B's reply is committed, not sent
        finish_call(self, ref, result)

    _remote._Peer.finish_call = dies  # type: ignore[method-assign]
    async with garrison.open_node(store=url, name="x", lease="2s") as node:
        await node.start_workflow(wf_server, id="B")
        print("ready", flush=True)
        await trio.sleep(30)
    return "not killed"


async def asks_across(url: str, go: str) -> Any:
    """Node y runs A, which calls B on node x; x dies with B's reply recorded."""
    async with garrison.open_node(store=url, name="y", lease="2s") as node:
        while not os.path.exists(go):
            await trio.sleep(0.02)
        await node.start_workflow(wf_asks_b, id="A")
        with trio.fail_after(40):
            result = await node.workflow("A").result()
        return [result, [r.kind for r in node.workflow("B").history()]]


def main() -> None:
    mode, where, *rest = sys.argv[1:]
    name, _, run = mode.rpartition("-")
    if name == "restart":
        result = trio.run(restart, where, int(run))
    elif name == "lost-reply":
        result = trio.run(lost_reply, where, int(run))
    elif name == "continued-reply":
        result = trio.run(lost_reply, where, int(run), wf_serves_then_continues)
    elif mode == "dies-replying":
        result = trio.run(dies_replying, where, rest[0])
    elif mode == "asks-across":
        result = trio.run(asks_across, where, rest[0])
    elif mode == "server-c":
        result = trio.run(server_c, where, rest[0])
    else:
        result = trio.run(caller_a, where, rest[0])
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    main()
