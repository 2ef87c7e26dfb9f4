"""What a workflow's process calls raised, and the names it registered, across a
restart: a send, call, monitor ... to a name nobody held is journaled with what it
raised, so that the replay raises it again at the same place without doing it (the
name may be held by then); a register is journaled, and the replay takes the names
the code holds where it goes live, never where the code registered them (another
process may hold a name it gave up since).

Each test runs a workflow on a store, closes the node while the workflow waits, and
opens the store again with a config whose service holds ``svc`` before the workflow
resumes (``open_node`` starts ``auto_start`` services first).
"""

from __future__ import annotations

import logging
import textwrap
from typing import Any

import pytest
import trio
from _stores import sql

import garrison
from garrison import NoSuchProcess, PayloadError, ProcessError, process, workflow
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
    except ProcessError as exc:  # (a replier whose reply had no JSON form failed)
        out.append(f"ProcessError: {exc}")
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


async def undoes_svc() -> list[Any]:
    process.demonitor("svc")  # nobody holds it: nothing to undo, nothing raised
    process.unlink("svc")
    msg = await process.inbox().receive()
    return [msg.topic]


async def registers_and_gives_up() -> list[Any]:
    process.register("svc")
    process.unregister("svc")
    msg = await process.inbox().receive()
    return [msg.topic, str(process.lookup("svc")).startswith("processes/")]


async def holds_a_name() -> list[Any]:
    process.register("held")
    workflow.now()
    msg = await process.inbox().receive()
    return [msg.topic, process.lookup("held") == process.pid()]


async def registers_svc_taken() -> list[Any]:
    """Registers ``svc`` while a service holds it: the ValueError is journaled."""
    out: list[Any] = []
    try:
        process.register("svc")
        out.append("registered")
    except ValueError as exc:
        out.append(str(exc).split(" by ")[0])
        out.append(await fallback("register"))
    msg = await process.inbox().receive()
    out.append(msg.topic)
    return out


async def holds_a_name_across_runs(run: int) -> list[Any]:
    if run == 0:
        process.register("kept")
        workflow.continue_as_new(1)
    msg = await process.inbox().receive()
    return [run, msg.topic, process.lookup("kept") == process.pid()]


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


async def crashes() -> None:
    """A service's process that fails at once: the service is between restarts."""
    raise RuntimeError("down at once")


async def sends_to_down() -> list[Any]:
    out: list[Any] = []
    try:
        await process.send("t:down", "hello", 1)
        out.append("sent")
    except NoSuchProcess as exc:
        out.append(str(exc))
        out.append(exc.why)
        out.append(await fallback("send"))
    msg = await process.inbox().receive()
    out.append(msg.topic)
    return out


async def test_a_send_to_a_service_down_raises_the_same_why_on_replay(
        store_spec: str, autojump_clock: Any) -> None:
    """A send to the id of a service between restarts raised ``NoSuchProcess`` saying
    why (993a115); the journal kept the name alone, and the replay raised one without
    the why: the workflow's code, replayed after a restart, saw another error (another
    message, ``why`` None) than the first run did, and went another way if it read
    it. The replay raises it as the first run did."""
    down = load_config_text(textwrap.dedent("""
        version: "1.0"
        namespace: t
        entries:
          - {name: crashp, kind: process.py, source: "test_workflow_interop_replay:crashes"}
          - name: down
            kind: process.service
            process: t:crashp
            lifecycle: {auto_start: true, restart: {initial_delay: 1h, max_delay: 1h, jitter: 0}}
    """), "test.yaml")
    result, before, _after = await run_then_resume_with_svc(store_spec, sends_to_down,
                                                            first_config=down)
    why = ("service t:down is between restarts: its process failed with RuntimeError: "
           "down at once; restart 1 in 3600.00s")
    assert result == [f"no process is registered as 't:down': {why}", why, "fb:send", "go"]
    assert before == [(1, "send", "hello"), (2, "activity", f"{__name__}:fallback")]


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


async def test_a_demonitor_or_unlink_of_a_name_nobody_held_does_nothing_also_on_replay(
        store_spec: str, autojump_clock: Any) -> None:
    """They raised NoSuchProcess (a cleanup after the name's holder ended failed the
    workflow); journaled as such, the replay (svc held now) does nothing either."""
    result, before, after = await run_then_resume_with_svc(store_spec, undoes_svc)
    assert result == ["go"]
    assert before == [(1, "demonitor", "svc"), (2, "unlink", "svc")]
    assert after == [*before, (3, "receive", "inbox")]


async def test_a_reply_with_no_json_form_is_journaled_not_asked_again(
        store_spec: str, autojump_clock: Any) -> None:
    """A plain process's reply the workflow cannot take raises PayloadError in the
    replier (its msg.reply), which fails the service here: the call's ProcessError is
    recorded, and the replay raises it again without sending the request a second time."""
    result, before, after = await run_then_resume_with_svc(
        store_spec, calls_svc, first_config=config("opaque_svc"))
    assert result[0].startswith("ProcessError: ") and "PayloadError" in result[0] \
        and "Opaque" in result[0], result
    assert result[1:] == ["fb:call", "go"]
    assert before == [(1, "call", "q"), (2, "activity", f"{__name__}:fallback")]
    assert after == [*before, (3, "receive", "inbox")]
    assert LOG == [("opaque svc got", "q", 1), ("fallback", "call")]


# ---------------------------------------------------------------- item: register
async def test_a_name_registered_and_given_up_is_not_taken_again_on_replay(
        store_spec: str, autojump_clock: Any) -> None:
    """The replay of ``register("svc"); unregister("svc")`` does not take the name a
    service holds now (it failed the workflow with ValueError)."""
    result, before, after = await run_then_resume_with_svc(store_spec, registers_and_gives_up)
    assert result == ["go", True]  # svc is the service's
    assert before == [(1, "register", "svc")]
    assert after == [*before, (2, "receive", "inbox"), (3, "lookup", "svc")]


async def test_a_name_held_before_a_restart_is_held_again(
        store_spec: str, autojump_clock: Any) -> None:
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(holds_a_name, id="w")
        await wait_status(node.workflow("w"), "waiting")
        assert str(node.lookup("held")) == "workflows/w"
    async with garrison.open_node(store=store_spec) as node:
        await wait_status(node.workflow("w"), "waiting")
        assert str(node.lookup("held")) == "workflows/w"  # before anything reaches it
        await node.send("held", "go")
        with trio.fail_after(10):
            assert await node.workflow("w").result() == ["go", True]
        assert node.lookup("held") is None  # released at its end
        assert [k for _s, k, _n in journal(node.workflow("w"))] == [
            "register", "now", "receive", "lookup"]


async def test_a_register_that_raised_raises_again_on_replay(
        store_spec: str, autojump_clock: Any) -> None:
    """A name a process held when the workflow registered it raised ValueError:
    journaled, the replay raises it too (even when the name is free now)."""
    async with garrison.open_node(config=config(), store=store_spec) as node:
        await node.start_workflow(registers_svc_taken, id="w")
        await wait_status(node.workflow("w"), "waiting")
    async with garrison.open_node(store=store_spec) as node:  # nobody holds svc now
        await wait_status(node.workflow("w"), "waiting")
        await node.send("workflows/w", "go")
        with trio.fail_after(10):
            assert await node.workflow("w").result() == [
                "name 'svc' is already registered", "fb:register", "go"]
        assert node.lookup("svc") is None
    assert LOG == [("fallback", "register")]


async def test_a_name_taken_meanwhile_is_logged_not_raised(
        store_spec: str, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The workflow held ``held``; while it was down a service took it: the replay goes
    on (the code registered it long ago), the name stays the service's, a warning says
    so."""
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(holds_a_name, id="w")
        await wait_status(node.workflow("w"), "waiting")
    cfg = load_config_text(textwrap.dedent("""
        version: "1.0"
        namespace: t
        entries:
          - {name: p, kind: process.py, source: "test_workflow_interop_replay:takes_held"}
          - {name: s, kind: process.service, process: t:p, lifecycle: {auto_start: true}}
    """), "test.yaml")
    caplog.set_level(logging.WARNING, logger="garrison")
    async with garrison.open_node(config=cfg, store=store_spec) as node:
        await wait_status(node.workflow("w"), "waiting")
        await node.send("workflows/w", "go")
        with trio.fail_after(10):
            assert await node.workflow("w").result() == ["go", False]
        assert str(node.lookup("held")).startswith("processes/")
    assert any("held the name 'held' before it resumed" in r.getMessage()
               for r in caplog.records)


async def takes_held() -> None:
    process.register("held")
    await trio.sleep_forever()


async def test_names_held_across_continue_as_new_are_held_after_a_restart(
        store_spec: str, autojump_clock: Any) -> None:
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(holds_a_name_across_runs, 0, id="w")
        await wait_status(node.workflow("w"), "waiting")
        assert str(node.lookup("kept")) == "workflows/w"
    async with garrison.open_node(store=store_spec) as node:
        await wait_status(node.workflow("w"), "waiting")
        assert str(node.lookup("kept")) == "workflows/w"
        await node.send("kept", "go")
        with trio.fail_after(10):
            assert await node.workflow("w").result() == [1, "go", True]


async def test_a_journal_written_before_registers_were_recorded_replays(
        store_spec: str, autojump_clock: Any) -> None:
    """An older garrison recorded no register: its journal (``now`` at seq 1, here
    made by removing the register record) replays without a divergence, the register
    taking no seq, and the name is held again."""
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(holds_a_name, id="w")
        await wait_status(node.workflow("w"), "waiting")
    sql(store_spec, "DELETE FROM journal WHERE workflow_id = 'w' AND seq = 1")
    sql(store_spec, "UPDATE journal SET seq = 1 WHERE workflow_id = 'w' AND seq = 2")
    async with garrison.open_node(store=store_spec) as node:
        await wait_status(node.workflow("w"), "waiting")
        assert str(node.lookup("held")) == "workflows/w"
        await node.send("held", "go")
        with trio.fail_after(10):
            assert await node.workflow("w").result() == ["go", True]
        assert [k for _s, k, _n in journal(node.workflow("w"))] == ["now", "receive", "lookup"]


async def test_replay_mode_reads_the_new_records(autojump_clock: Any) -> None:
    """``garrison workflows replay`` (replay mode, no effects) takes a journal with a
    recorded NoSuchProcess and register records to its end, without a divergence."""
    from garrison.hosts.workflow._replay import History, replay_history

    async with garrison.open_node() as node:
        await node.start_workflow(sends_to_svc_then_registers, id="w")
        await wait_status(node.workflow("w"), "waiting")
        await node.send("workflows/w", "go")
        with trio.fail_after(10):
            assert await node.workflow("w").result() == [
                "no process is registered as 'svc'", "go"]
        history = History.from_store(node.hosts["workflows"].store, "w")
    assert [r.kind for r in history.journal] == ["send", "register", "receive"]
    result = await replay_history(history)
    assert result.ok, result
    assert result.ending == "the code returned"


async def sends_to_svc_then_registers() -> list[Any]:
    out: list[Any] = []
    try:
        await process.send("svc", "hello", 1)
    except NoSuchProcess as exc:
        out.append(str(exc))
    process.register("mine")
    process.unregister("mine")
    msg = await process.inbox().receive()
    out.append(msg.topic)
    return out
