"""What a workflow's process calls raised, across a restart: a send, call, monitor
... to a name nobody held is journaled with what it raised, so that the replay raises
it again at the same place without doing it (the name may be held by then).

Each test runs a workflow on a store, closes the node while the workflow waits, and
opens the store again with a config whose service holds ``svc`` before the workflow
resumes (``open_node`` starts ``auto_start`` services first).
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import trio

import garrison
from garrison import NoSuchProcess, PayloadError, process
from garrison.config import load_config_text

LOG: list[Any] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    LOG.clear()


# ---------------------------------------------------------------- processes
async def svc() -> None:
    """A service that holds ``svc`` and answers calls."""
    process.register("svc")
    async for msg in process.inbox():
        LOG.append(("svc got", msg.topic, msg.payload))
        if msg.call_ref is not None:
            await msg.reply("svc-reply")


class Opaque:
    """No JSON form: a workflow cannot take it as a reply."""


async def opaque_svc() -> None:
    """A service that holds ``svc`` and answers with a value that has no JSON form."""
    process.register("svc")
    async for msg in process.inbox():
        LOG.append(("opaque svc got", msg.topic, msg.payload))
        await msg.reply(Opaque())


def config(target: str = "svc") -> Any:
    return load_config_text(textwrap.dedent(f"""
        version: "1.0"
        namespace: t
        entries:
          - {{name: svcp, kind: process.py, source: "test_workflow_interop_replay:{target}"}}
          - name: svc_service
            kind: process.service
            process: t:svcp
            lifecycle: {{auto_start: true}}
    """), "test.yaml")


# ---------------------------------------------------------------- workflows
@garrison.activity
async def fallback(x: str) -> str:
    LOG.append(("fallback", x))
    return "fb:" + x


async def sends_to_svc() -> list[Any]:
    out: list[Any] = []
    try:
        await process.send("svc", "hello", 1)
        out.append("sent")
    except NoSuchProcess as exc:
        out.append(str(exc))
        out.append(await fallback("send"))
    msg = await process.inbox().receive()
    out.append(msg.topic)
    return out


async def calls_svc() -> list[Any]:
    out: list[Any] = []
    try:
        out.append(await process.call("svc", "q", 1, timeout="5s"))
    except NoSuchProcess as exc:
        out.append(str(exc))
        out.append(await fallback("call"))
    except PayloadError as exc:
        out.append(f"PayloadError: {exc}")
        out.append(await fallback("call"))
    msg = await process.inbox().receive()
    out.append(msg.topic)
    return out


async def monitors_svc() -> list[Any]:
    out: list[Any] = []
    try:
        process.monitor("svc")
        out.append("monitoring")
    except NoSuchProcess as exc:
        out.append(str(exc))
        out.append(await fallback("monitor"))
    msg = await process.inbox().receive()
    out.append(msg.topic)
    return out


# ---------------------------------------------------------------- helpers
async def wait_status(handle: garrison.WorkflowHandle, status: str) -> None:
    with trio.fail_after(10):
        while handle.status() != status:
            await trio.sleep(0.01)


def journal(handle: garrison.WorkflowHandle) -> list[tuple[int, str, str]]:
    return [(r.seq, r.kind, r.name) for r in handle.history()]


async def run_then_resume_with_svc(db: str, fn: Any, target: str = "svc",
                                   first_config: Any = None) -> tuple[Any, list[Any], list[Any]]:
    """Run ``fn`` until it waits, close; open again with a service holding ``svc``,
    signal ``go``: (result, journal before, journal after)."""
    async with garrison.open_node(store=db, config=first_config) as node:
        await node.start_workflow(fn, id="w")
        await wait_status(node.workflow("w"), "waiting")
        before = journal(node.workflow("w"))
    async with garrison.open_node(config=config(target), store=db) as node:
        handle = node.workflow("w")
        await wait_status(handle, "waiting")
        await node.send("workflows/w", "go")
        with trio.fail_after(10):
            result = await handle.result()
        after = journal(handle)
    return result, before, after


# ---------------------------------------------------------------- item: NoSuchProcess
async def test_a_send_to_a_name_nobody_held_is_not_sent_on_replay(
        store_spec: str, autojump_clock: Any) -> None:
    result, before, after = await run_then_resume_with_svc(store_spec, sends_to_svc)
    assert result == ["no process is registered as 'svc'", "fb:send", "go"]
    assert before == [(1, "send", "hello"), (2, "activity", f"{__name__}:fallback")]
    assert after == [*before, (3, "receive", "inbox")]
    assert LOG == [("fallback", "send")]  # the service got nothing; the activity ran once


async def test_a_call_to_a_name_nobody_held_is_not_made_on_replay(
        store_spec: str, autojump_clock: Any) -> None:
    result, before, after = await run_then_resume_with_svc(store_spec, calls_svc)
    assert result == ["no process is registered as 'svc'", "fb:call", "go"]
    assert before == [(1, "call", "q"), (2, "activity", f"{__name__}:fallback")]
    assert after == [*before, (3, "receive", "inbox")]
    assert LOG == [("fallback", "call")]


async def test_a_monitor_of_a_name_nobody_held_raises_again_on_replay(
        store_spec: str, autojump_clock: Any) -> None:
    result, before, _after = await run_then_resume_with_svc(store_spec, monitors_svc)
    assert result == ["no process is registered as 'svc'", "fb:monitor", "go"]
    assert before == [(1, "monitor", "svc"), (2, "activity", f"{__name__}:fallback")]
    assert LOG == [("fallback", "monitor")]


async def test_a_reply_with_no_json_form_is_journaled_not_asked_again(
        store_spec: str, autojump_clock: Any) -> None:
    """A plain process's reply the workflow cannot take raises PayloadError, recorded:
    the replay raises it again and does not send the request a second time."""
    result, before, after = await run_then_resume_with_svc(
        store_spec, calls_svc, first_config=config("opaque_svc"))
    assert result[0].startswith("PayloadError: ") and "Opaque" in result[0]
    assert result[1:] == ["fb:call", "go"]
    assert before == [(1, "call", "q"), (2, "activity", f"{__name__}:fallback")]
    assert after == [*before, (3, "receive", "inbox")]
    assert LOG == [("opaque svc got", "q", 1), ("fallback", "call")]
