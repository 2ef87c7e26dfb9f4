"""Operating workflows: start, terminate and retry, from the handle and from the command
line, with and without a node running on the store."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ops_app
import pytest
import trio
from _stores import sql

import garrison
from garrison import Pid
from garrison.persistence import Op, RawJson, SQLiteStore, Transaction


@pytest.fixture(autouse=True)
def _reset() -> None:
    ops_app.LOG.clear()
    ops_app.FAILS.clear()
    ops_app.USE_OLD_STEP = False


def cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``garrison workflows ARGS`` in this process (an escaping exception fails the test:
    it would be a traceback on the command line)."""
    from garrison._cli import build_parser

    parsed = build_parser().parse_args(["workflows", *args])
    code = parsed.func(parsed)
    out, err = capsys.readouterr()
    return code, out, err


async def cli_async(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The same from a trio test, beside a node of this process (the CLI opens the store
    as a tool would, in a thread)."""
    return await trio.to_thread.run_sync(lambda: cli_here(capsys, *args))


async def until(check: Any, what: str) -> None:
    """Wait until ``check()`` is true (a workflow not there yet: false): 10 s at most,
    of virtual time and of real time both. Virtual time alone ran out while a worker
    thread of the node did real I/O (its wakeup watcher looking at a tool's write, a
    commit): an autojump clock jumps to the next deadline while every task waits, a
    thread's among them, and 10 s of it passed in a few real milliseconds."""
    began, deadline = trio.current_time(), time.monotonic() + 10
    while True:
        try:
            if check():
                return
        except garrison.NoSuchWorkflow:
            pass
        if trio.current_time() - began >= 10 and time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await trio.sleep(0.01)


# ------------------------------------------------------------------ retry
async def test_retry_runs_the_failed_activity_again_and_no_recorded_step(
        node: garrison.Node, autojump_clock: Any) -> None:
    """The service was down: the workflow failed with the activity's final error. Once it
    is back, retry replays the recorded steps (reserve does not run again) and runs the
    failed activity again; the workflow carries on live."""
    ops_app.FAILS["lamp"] = 2  # both attempts of charge fail
    await node.start_workflow(ops_app.order, "lamp", id="o")
    handle = node.workflow("o")
    with pytest.raises(garrison.WorkflowFailed, match="ConnectionError: payments are down"):
        await handle.result()
    assert [r.kind for r in handle.history()] == ["activity", "activity"]
    assert ops_app.LOG == [("reserve", "lamp"), ("charge", "lamp"), ("charge", "lamp")]

    await handle.retry()
    await until(lambda: handle.status() == "waiting", "the retried workflow to wait")
    assert ops_app.LOG[3:] == [("charge", "lamp")]  # reserve replayed, charge ran again
    await handle.signal("ship")
    assert await handle.result() == "res-lamp pay-lamp ship"
    assert handle.state("attempt") == 2  # workflow.info().attempt counts the retries
    assert [(r.seq, r.outcome) for r in handle.history()][:2] == [
        (1, {"ok": "res-lamp"}), (2, {"ok": "pay-lamp"})]


async def test_retry_refuses_a_workflow_that_is_not_failed_or_blocked(
        node: garrison.Node, autojump_clock: Any) -> None:
    await node.start_workflow(ops_app.order, "cup", id="o")
    await trio.sleep(1)
    with pytest.raises(ValueError, match="cannot retry workflow 'o': it is waiting"):
        await node.workflow("o").retry()
    await node.workflow("o").signal("ship")
    await node.workflow("o").result()
    with pytest.raises(ValueError, match=r"it is completed \(only a failed or blocked"):
        await node.workflow("o").retry()
    with pytest.raises(garrison.NoSuchWorkflow):
        await node.workflow("nope").retry()


async def test_retry_of_a_failure_of_the_code_itself_replays_every_record(
        node: garrison.Node, autojump_clock: Any) -> None:
    """Only an activity's final error that failed the workflow is taken back: a workflow
    that failed in its own code replays everything and fails the same way again."""
    await node.start_workflow(ops_app.fails_after_reserving, "cup", id="f")
    with pytest.raises(garrison.WorkflowFailed, match="ValueError: no cup left"):
        await node.workflow("f").result()
    await node.workflow("f").retry()
    with pytest.raises(garrison.WorkflowFailed, match="ValueError: no cup left"):
        await node.workflow("f").result()
    assert ops_app.LOG == [("reserve", "cup")]  # replayed, not run again
    assert node.hosts["workflows"].store.get_workflow("f").attempt == 2


@pytest.mark.parametrize(("fn", "last"), [
    (ops_app.charges_or_releases, "activity 'ops_app:release', seq 2"),
    (ops_app.packs_and_charges, "activity 'ops_app:pack', seq 2")], ids=["saga", "two"])
async def test_a_retry_that_can_only_fail_the_same_way_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], autojump_clock: Any,
        fn: Any, last: str) -> None:
    """The workflow failed with the charge's final error, but recorded a step after it
    (a compensation; an activity started beside it that ended later): no record is
    taken back, so a retry replayed the same error and failed again at once, running
    nothing, and said only 'N journal record(s) replay' (helper-262). It says why the
    same code fails the same way (code deployed since may handle the error otherwise,
    so it is not refused)."""
    ops_app.FAILS["lamp"] = 2
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(fn, "lamp", id="s")
        handle = node.workflow("s")
        with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
            await handle.result()
        said = (r"note: it failed with the final error of activity 'ops_app:charge' "
                rf"\(seq 1\), which its code raised after the journal's last record "
                rf"\({last}\): nothing is taken back, and the same code replays to the "
                r"same failure")
        assert re.search(said, await handle.retry()), said
        with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
            await handle.result()
        code, out, err = await cli_async(capsys, "--store", store, "retry", "s")
        assert code == 0, err
        assert re.search(said, out), out
        assert node.hosts["workflows"].store.get_workflow("s").attempt == 3


async def test_a_terminated_workflow_can_be_retried(node: garrison.Node,
                                                    autojump_clock: Any) -> None:
    await node.start_workflow(ops_app.parent_of_one, id="p")
    await trio.sleep(1)
    await node.workflow("p.1").terminate("stop the child")
    assert await node.workflow("p").result() == "child ended: Terminated: stop the child"
    child = node.workflow("p.1")
    assert child.status() == "failed"
    await child.retry()
    await until(lambda: child.status() == "waiting", "the child to wait again")
    await child.promise("never").resolve(None)
    assert await child.result() == "child 1"


async def test_a_cancel_asked_before_the_end_does_not_cancel_the_retry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], autojump_clock: Any) -> None:
    """A cancel requested while the workflow waited, then a terminate (or any end that
    was not the cancel's), then a retry: the cancel request outlived the end, and the
    retried attempt was cancelled at once. The end makes it moot (a cancel does
    nothing to a finished workflow); a retry runs the workflow on, uncancelled."""
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(ops_app.waiting_child, 1, id="w")
        await until(lambda: node.workflow("w").status() == "waiting", "it to wait")
    for args in (("cancel", "w"), ("terminate", "w", "--reason", "op")):
        code, out, err = cli_here(capsys, "--store", store, *args)
        assert code == 0, (args, out, err)
    with SQLiteStore(store) as s:  # as a node that ended it with a cancel pending leaves it
        ended = s.get_workflow("w")
        assert (ended.status, ended.cancel_requested) == ("failed", False)
        s.write(Transaction().request_cancel("w"))
    code, out, err = cli_here(capsys, "--store", store, "retry", "w")
    assert code == 0, (out, err)
    with SQLiteStore(store, readonly=True) as s:
        assert s.get_workflow("w").cancel_requested is False
    async with garrison.open_node(store=store) as node:
        handle = node.workflow("w")
        await until(lambda: handle.status() == "waiting", "the retried attempt to wait")
        await trio.sleep(1)
        assert handle.status() == "waiting"
        await handle.promise("never").resolve(None)
        assert await handle.result() == "child 1"


async def test_a_terminate_whose_node_went_while_it_waited_ends_it_in_the_store(
        tmp_path: Path, autojump_clock: Any) -> None:
    """The command asked the node holding the store, which was killed before it read
    the request: the command said 'the node holding the store has not ended it yet',
    though no node held the store any more. Past its wait it looks again, and with no
    node it ends the workflow itself, as when none held the store at first."""
    from garrison import _store_tools as tools

    store_path = str(tmp_path / "s.db")
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(ops_app.waiting_child, 1, id="w")
        await until(lambda: node.workflow("w").status() == "waiting", "it to wait")
    with SQLiteStore(store_path, lock=False) as store:
        answers = iter([True])  # a node holds it when asked; gone once the wait ends
        store.node_running = lambda: next(answers, False)  # type: ignore[method-assign]
        assert tools.terminate(store, "w", "gone node", wait=0.05) is True
        ended = store.get_workflow("w")
        assert ended.status == "failed" and ended.error.message == "gone node"


async def test_a_retried_workflow_reads_the_exits_of_children_that_ended_while_it_failed(
        store_spec: str, autojump_clock: Any) -> None:
    """The parent failed (a service was down) while its children ran on; they ended
    (one completed, one terminated) while it was failed. API.md: a child's EXIT always
    reaches its parent's events, durably: the retried parent reads both, where it
    waited for ever (its end was skipped as the EXIT of a finished watcher's)."""
    ops_app.FAILS["lamp"] = 2
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.charges_with_children, "lamp", id="p")
        parent = node.workflow("p")
        with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
            await parent.result()
        await until(lambda: node.workflow("p.2").status() == "waiting", "the children")
        dead = node.stats()["dead_letters"]
        await node.workflow("p.1").promise("never").resolve(None)
        assert await node.workflow("p.1").result() == "child 1"
        await node.workflow("p.2").terminate("not needed")
        assert node.stats()["dead_letters"] == dead  # both EXITs kept for the parent
        assert sorted(m.topic for m in node.hosts["workflows"].store.pending_messages("p")) \
            == ["EXIT", "EXIT"]
        await parent.retry()
        with trio.fail_after(60):
            assert await parent.result() == ["p.1: child 1", "p.2: Terminated: not needed"]


async def test_a_retried_parent_reads_an_exit_whose_commit_came_after_its_load(
        store_spec: str, autojump_clock: Any) -> None:
    """A child ends while its failed parent is retried: its end read the parent as not
    running (the EXIT only to the parent's inbox, no push), and its commit landed after
    the retry had loaded the parent's inbox. The parent waited for ever with the EXIT
    in its inbox (found by an adversarial review); the ended child's host reads the
    inbox of a watcher loaded meanwhile again."""
    ops_app.FAILS["vase"] = 2
    async with garrison.open_node(store=store_spec) as node:
        store = node.hosts["workflows"].store
        real_commit = store.commit
        held, release = trio.Event(), trio.Event()

        async def commit(tx: Transaction) -> Any:
            if any((op is Op.DELIVER and params[0] == "p" and params[2] == "EXIT")
                   or (op is Op.DELIVER_TO_MONITORS and params[0] == "p.1")  # (a cluster)
                   for op, params in tx.ops):
                held.set()
                await release.wait()  # (a slow commit: a PostgreSQL round trip, a lock)
            return await real_commit(tx)

        store.commit = commit
        await node.start_workflow(ops_app.charges_with_children, "vase", id="p")
        parent = node.workflow("p")
        with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
            await parent.result()
        await until(lambda: node.workflow("p.2").status() == "waiting", "the children")
        await node.workflow("p.1").promise("never").resolve(None)
        with trio.fail_after(10):
            await held.wait()  # the child's end is being committed
        await parent.retry()
        await until(lambda: parent.status() == "waiting", "the retried parent")
        release.set()
        await node.workflow("p.2").terminate("not needed")
        with trio.fail_after(60):
            assert await parent.result() == ["p.1: child 1", "p.2: Terminated: not needed"]


async def test_a_terminated_parent_retried_reads_the_exits_of_its_terminated_children(
        store_spec: str, autojump_clock: Any) -> None:
    """A terminate ends the unfinished children with their parent (README): their
    EXITs reach the parent, now failed (Terminated), and its retry reads them; by a
    node, and by the store tool with no node (``terminate_transaction``)."""
    from garrison.hosts.workflow import terminate_transaction, terminated
    from garrison.persistence import open_store

    async with garrison.open_node(store=store_spec) as node:
        for wid in ("by-node", "by-tool"):
            await node.start_workflow(ops_app.parent_of_one, id=wid)
            await until(lambda w=wid: node.workflow(f"{w}.1").status() == "waiting",
                        "the child")
        await node.workflow("by-node").terminate("stop")
        await until(lambda: node.workflow("by-node.1").status() == "failed", "the child")
        await node.workflow("by-node").retry()
        with trio.fail_after(60):
            assert await node.workflow("by-node").result() == (
                "child ended: Terminated: its parent workflow 'by-node' was terminated")
    with open_store(store_spec, lock=False) as tool:  # no node holds the store
        tool.write(terminate_transaction(tool, tool.get_workflow("by-tool"),
                                         terminated("stop")))
        assert [m.msg_id for m in tool.pending_messages("by-tool") if m.topic == "EXIT"] \
            == ["by-tool.1#exit@by-tool"]
    async with garrison.open_node(store=store_spec) as node:
        assert node.workflow("by-tool").status() == "failed"
        await node.workflow("by-tool").retry()
        with trio.fail_after(60):
            assert await node.workflow("by-tool").result() == (
                "child ended: Terminated: its parent workflow 'by-tool' was terminated")


async def test_the_exit_of_a_child_whose_parent_completed_is_a_dead_letter(
        store_spec: str, autojump_clock: Any) -> None:
    """A completed (or cancelled) parent never runs again: its child's EXIT is dropped,
    and counted as such."""
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.spawns_and_returns, id="q")
        assert await node.workflow("q").result() == "started"
        dead = node.stats()["dead_letters"]
        await node.workflow("q.1").promise("never").resolve(None)
        assert await node.workflow("q.1").result() == "child 1"
        assert node.stats()["dead_letters"] == dead + 1
        assert node.hosts["workflows"].store.pending_messages("q") == []


def _blocked_store() -> SQLiteStore:
    """A store holding workflow ``v``, recorded by code that called old_step (today's
    calls new_step: a node that opens it blocks it)."""
    store = SQLiteStore()
    store.write(Transaction().create_workflow("v", "ops_app:versioned", [], status="running")
                .append_journal("v", 1, "activity", "ops_app:old_step",
                                RawJson('{"ok": "old"}')))
    return store


async def test_a_blocked_workflow_is_retried_on_a_running_node_once_the_code_is_fixed(
        autojump_clock: Any) -> None:
    """The fix is deployed (here: the switch), and retry resumes the blocked workflow
    without a restart."""
    store = _blocked_store()
    async with garrison.open_node(store=store) as node:
        handle = node.workflow("v")
        with pytest.raises(garrison.NonDeterminismError, match="ops_app:old_step"):
            await handle.result()
        assert handle.status() == "blocked"

        ops_app.USE_OLD_STEP = True
        await handle.retry()
        await until(lambda: handle.status() == "waiting", "the retried workflow to wait")
        await handle.promise("go").resolve(1)
        assert await handle.result() == "old"
    assert ops_app.LOG == []  # old_step was replayed, not run
    assert store.get_workflow("v").attempt == 2
    store.close()


# ------------------------------------------------------------------ terminate
async def test_terminating_a_tree_of_workflows_says_so_in_a_line_not_one_per_child(
        node: garrison.Node, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Terminating a workflow with 1,000 children logged 1,000 warnings, one per child
    (``workflow p.17 (...) failed: Terminated: its parent workflow 'p' was
    terminated``): the node's log drowned in them. One line names the workflow, how
    many of its descendants end with it and the first of them; the parent's own failure
    is said as before; each descendant's end is at DEBUG."""
    await node.start_workflow(ops_app.parent_of_many, 50, 3, id="p")
    await until(lambda: sum(w.status == "waiting" for w in node.workflows()) == 55,
                "the tree to wait")
    caplog.set_level(logging.DEBUG, logger="garrison")
    await node.workflow("p").terminate("enough")
    await until(lambda: all(w.status == "failed" for w in node.workflows()), "the tree")
    said = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.getMessage() for r in said] == [
        "workflow p is terminated: its 54 unfinished descendant workflows end with it "
        "(p.1, p.2, p.3, p.4, p.5 and 49 more; each one's end is logged at DEBUG on "
        "garrison.workflow)",
        "workflow p (ops_app:parent_of_many) failed: Terminated: enough"]
    assert said[0].workflow_id == "p" and said[0].levelno == logging.WARNING
    ends = {r.workflow_id: r.getMessage() for r in caplog.records
            if r.levelno == logging.DEBUG and "failed: Terminated" in r.getMessage()}
    assert len(ends) == 54
    assert ends["p.51.2"] == ("workflow p.51.2 (ops_app:waiting_child) failed: Terminated: "
                              "its parent workflow 'p.51' was terminated")


async def test_terminate_ends_at_once_without_the_cancellation_handler(
        node: garrison.Node, autojump_clock: Any) -> None:
    await node.start_workflow(ops_app.guarded, "desk", id="g")
    await trio.sleep(1)
    handle = node.workflow("g")
    assert handle.status() == "waiting"
    await handle.terminate("no longer needed")
    assert handle.status() == "failed"
    with pytest.raises(garrison.WorkflowFailed) as info:
        await handle.result()
    assert str(info.value.error) == "Terminated: no longer needed"
    assert ("release", "res-desk") not in ops_app.LOG  # cancel would have released it
    assert [r.kind for r in handle.history()] == ["activity", "promise"]
    await handle.terminate()  # a finished workflow: nothing happens
    assert str(node.hosts["workflows"].store.get_workflow("g").error) == \
        "Terminated: no longer needed"

    # cancel, by contrast, runs the handler
    await node.start_workflow(ops_app.guarded, "lamp", id="c")
    await trio.sleep(1)
    await node.workflow("c").cancel()
    with pytest.raises(garrison.WorkflowCancelled):
        await node.workflow("c").result()
    assert ("release", "res-lamp") in ops_app.LOG


_COMPUTED: list[int] = []


@garrison.activity
async def _compute(x: int) -> int:
    _COMPUTED.append(x)  # (no await inside: a computation)
    return 2 * x


async def _computes_for_ever() -> None:
    i = 0
    while True:
        i = await _compute(i) % 1000


async def test_terminate_and_the_nodes_close_stop_a_loop_of_activities_that_never_await(
        tmp_path: Path) -> None:
    """helper-284: a workflow looping on an activity that never awaits met no checkpoint
    where trio delivers a cancel (its commits are shielded): ``terminate()`` waited for
    its end, for ever in a loop, and so did the node's close, while it ran on."""
    _COMPUTED.clear()
    with trio.fail_after(10):  # (the close too: it waited for the loop's end)
        async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
            await node.start_workflow(_computes_for_ever, id="t")
            while len(_COMPUTED) < 50:
                await trio.lowlevel.checkpoint()
            await node.workflow("t").terminate("enough")
            assert node.workflow("t").status() == "failed"
            ran = len(_COMPUTED)
            await node.start_workflow(_computes_for_ever, id="u")
            while len(_COMPUTED) < ran + 50:
                await trio.lowlevel.checkpoint()
        with SQLiteStore(str(tmp_path / "s.db")) as store:
            assert str(store.get_workflow("t").error) == "Terminated: enough"
            assert store.get_workflow("u").status == "running"  # (resumes at next start)


async def test_a_blank_terminate_reason_is_refused_and_none_is_the_default(
        node: garrison.Node, autojump_clock: Any) -> None:
    """``terminate(reason="")`` would end the workflow with the error ``Terminated: ``,
    saying nothing: refused, as ``garrison workflows terminate --reason ''`` is."""
    await node.start_workflow(ops_app.guarded, "desk", id="g")
    await trio.sleep(1)
    handle = node.workflow("g")
    for blank in ("", "   ", "\n"):
        with pytest.raises(ValueError, match="a terminate reason must say why"):
            await handle.terminate(blank)
        assert handle.status() == "waiting"
    with pytest.raises(TypeError, match="a terminate reason must be a string, got int"):
        await handle.terminate(3)  # type: ignore[arg-type]
    assert handle.status() == "waiting"
    await handle.terminate(None)
    with pytest.raises(garrison.WorkflowFailed) as info:
        await handle.result()
    assert str(info.value.error) == "Terminated: terminated by WorkflowHandle.terminate()"


async def test_terminate_reaches_the_parent_and_takes_the_children(
        node: garrison.Node, autojump_clock: Any) -> None:
    await node.start_workflow(ops_app.parent_of_one, id="p1")
    await trio.sleep(1)
    await node.workflow("p1.1").terminate()
    assert await node.workflow("p1").result() == (
        "child ended: Terminated: terminated by WorkflowHandle.terminate()")

    await node.start_workflow(ops_app.parent_of_one, id="p2")
    await trio.sleep(1)
    assert node.workflow("p2.1").status() == "waiting"
    await node.workflow("p2").terminate("shutting the shop")
    await until(lambda: node.workflow("p2.1").status() == "failed", "the child to end")
    with pytest.raises(garrison.WorkflowFailed) as info:
        await node.workflow("p2.1").result()
    assert str(info.value.error) == "Terminated: its parent workflow 'p2' was terminated"


async def test_terminate_a_blocked_workflow(autojump_clock: Any) -> None:
    store = _blocked_store()
    async with garrison.open_node(store=store) as node:
        with pytest.raises(garrison.NonDeterminismError):
            await node.workflow("v").result()
        await node.workflow("v").terminate("given up")
        assert node.workflow("v").status() == "failed"
    assert str(store.get_workflow("v").error) == "Terminated: given up"
    store.close()


async def test_a_terminate_that_a_retry_overtakes_returns_once_its_attempt_is_gone(
        autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``terminate()`` read the blocked workflow's attempt 1, and a retry started attempt 2
    before its request was written: a request for attempt 1 does not end attempt 2 (a
    retried workflow is never ended by a terminate of its previous attempt), and
    terminate waited for attempt 2 to end, here for ever (it waits for a promise)."""
    store = _blocked_store()
    async with garrison.open_node(store=store) as node:
        handle = node.workflow("v")
        with pytest.raises(garrison.NonDeterminismError):
            await handle.result()
        ops_app.USE_OLD_STEP = True
        commit, overtaken = store.commit, []

        def retried_first(tx: Transaction) -> Any:
            async def go() -> list[Any]:
                if not overtaken and any(op is Op.DELIVER and params[2] == "terminate"
                                         for op, params in tx.ops):
                    overtaken.append(await handle.retry())
                return await commit(tx)
            return go()

        monkeypatch.setattr(store, "commit", retried_first)
        with trio.fail_after(60):
            await handle.terminate("given up")
        assert overtaken and store.get_workflow("v").attempt == 2
        await until(lambda: handle.status() == "waiting", "attempt 2 to wait")
        await handle.promise("go").resolve(1)
        assert await handle.result() == "old"  # attempt 2 was not terminated
    store.close()


async def test_a_retry_landing_as_the_node_ends_the_blocked_workflow_runs_and_the_node_lives(
        autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """nu476: a terminate of a blocked workflow, and a retry of it landing as the node
    committed the end the terminate asked (``garrison workflows retry`` from another
    process, a second caller): the retry consumes the request of the attempt it ends,
    so the node's end, which consumes it too, was refused ("inbox row 1 is not a
    pending message of workflow 'v'"), and that ValueError ended the whole node, every
    workflow on it stopped. The end is moot (the retry ended that attempt): the node
    runs the retried attempt, and terminate() returns, its attempt gone."""
    store = _blocked_store()
    async with garrison.open_node(store=store) as node:
        handle = node.workflow("v")
        with pytest.raises(garrison.NonDeterminismError):
            await handle.result()
        ops_app.USE_OLD_STEP = True
        commit, overtaken = store.commit, []

        def retried_first(tx: Transaction) -> Any:
            async def go() -> list[Any]:
                if not overtaken and any(op is Op.CONSUME for op, _ in tx.ops):
                    overtaken.append("the retry lands first")
                    overtaken.append(await handle.retry())
                return await commit(tx)
            return go()

        monkeypatch.setattr(store, "commit", retried_first)
        with trio.fail_after(60):
            await handle.terminate("given up")
        await until(lambda: handle.status() == "waiting", "attempt 2 to wait")
        await handle.promise("go").resolve(1)
        assert await handle.result() == "old"  # attempt 2 was not terminated
        assert overtaken == ["the retry lands first", "1 journal record(s) replay"]
        assert store.get_workflow("v").attempt == 2
        assert store.pending_messages("v") == []
    store.close()


@pytest.mark.parametrize("failed", [1, 2])
async def test_a_store_failing_as_the_node_looks_at_a_retry_that_overtook_its_end(
        autojump_clock: Any, monkeypatch: pytest.MonkeyPatch, failed: int) -> None:
    """The end of a blocked workflow by a terminate, refused because a retry landed
    first: the node reads the workflow again to tell. A store that failed at that
    read (``failed`` 1), or at the refresh after it (2), raised its StoreError out of
    the node's task, and open_node ended with it, every workflow of the node stopped,
    for a read that decides nothing written. The blocked attempt's instance stops on
    the store's error, as when the end's own write fails (a failed refresh is a
    warning: the next wakeup refreshes it); the node and the retried attempt run on."""
    store = _blocked_store()
    async with garrison.open_node(store=store) as node:
        handle = node.workflow("v")
        with pytest.raises(garrison.NonDeterminismError):
            await handle.result()
        ops_app.USE_OLD_STEP = True
        commit, get_workflow, armed, retried = store.commit, store.get_workflow, [], []

        def retried_first(tx: Transaction) -> Any:
            async def go() -> list[Any]:
                if not retried and any(op is Op.CONSUME for op, _ in tx.ops):
                    retried.append("the retry lands first")
                    retried.append(await handle.retry())
                    try:
                        return await commit(tx)
                    except ValueError:
                        armed.append(True)  # (the node's next read: the store fails)
                        raise
                return await commit(tx)
            return go()

        def failing_once(wid: str) -> Any:
            if armed and len(armed) <= failed:
                armed.append(False)
                if len(armed) == failed + 1:
                    raise garrison.StoreError(None, "the server went away")
            return get_workflow(wid)

        monkeypatch.setattr(store, "commit", retried_first)
        monkeypatch.setattr(store, "get_workflow", failing_once)
        with trio.fail_after(60):
            await handle.terminate("given up")
        await until(lambda: handle.status() == "waiting", "attempt 2 to wait")
        await handle.promise("go").resolve(1)
        assert await handle.result() == "old"
        assert armed == [True] + [False] * failed and retried == ["the retry lands first",
                                             "1 journal record(s) replay"]
    store.close()


async def test_a_terminate_of_the_retry_that_overtook_a_terminate_is_not_dropped(
        autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminate of a blocked workflow, overtaken by a retry from another process
    (it landed as the node committed the end), and a terminate of the retried attempt
    written before the node looked again: the node's look handed that request to the
    blocked attempt's instance, still in its memory and ending by the first terminate,
    which dropped it as asking nothing more (consumed, never acted on) and ran nothing
    either: attempt 2 waited in the store for good, its terminate gone, and the first
    terminate() spun for ever on the blocked instance left in memory. Attempt 2 ends
    by its terminate now, as a terminate of a retried workflow does."""
    from garrison.hosts.workflow import request_transaction, retry_transaction, terminated
    from garrison.hosts.workflow._recovery import refresh

    store = _blocked_store()
    async with garrison.open_node(store=store) as node:
        handle = node.workflow("v")
        with pytest.raises(garrison.NonDeterminismError):
            await handle.result()
        commit, overtaken = store.commit, []

        def retried_first(tx: Transaction) -> Any:
            async def go() -> list[Any]:
                if not overtaken and any(op is Op.CONSUME for op, _ in tx.ops):
                    # another process's retry, then its terminate of attempt 2 (no
                    # wakeup from an in-memory store: the node's own look finds them)
                    retry, note = retry_transaction(store, store.get_workflow("v"))
                    overtaken.append(note)
                    await commit(retry)
                    await commit(request_transaction("v", terminated("again"), 2))
                return await commit(tx)
            return go()

        monkeypatch.setattr(store, "commit", retried_first)
        # (terminate()'s own steps: its wait for attempt 1 to go spun for ever)
        await commit(request_transaction("v", terminated("given up"), 1))
        refresh(node.hosts["workflows"], "v")
        await until(lambda: overtaken and store.get_workflow("v").status == "failed",
                    "attempt 2 to end by its terminate")
        with pytest.raises(garrison.WorkflowFailed, match="Terminated: again"):
            with trio.fail_after(60):
                await handle.result()
        record = store.get_workflow("v")
        assert (record.status, record.attempt) == ("failed", 2)
        assert store.pending_messages("v") == []
        assert overtaken == ["1 journal record(s) replay"]
    store.close()


async def test_a_node_s_discard_of_a_request_a_retry_consumed_first_says_no_error(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """nu476: a node consumes a terminate request of a workflow that has ended as it
    reads it (it asks nothing more); a retry of the workflow consumes it too, and one
    landing first made the node's consume fail and log an error ("host workflows could
    not write <Transaction ['consume']>: inbox row 1 is not a pending message of
    workflow 'w'") of a write that had nothing left to do. The retried workflow runs,
    and nothing is said."""
    from garrison import _store_tools
    from garrison.hosts.workflow import request_transaction, terminated

    path = str(tmp_path / "s.db")
    async with garrison.open_node(store=path) as node:
        store = node.hosts["workflows"].store
        commit, retried = store.commit, []

        def retried_first(tx: Transaction) -> Any:
            async def go() -> list[Any]:
                if not retried and [op for op, _ in tx.ops] == [Op.CONSUME]:
                    retried.append(_store_tools.retry(tool, "w"))  # (another process's)
                return await commit(tx)
            return go()

        monkeypatch.setattr(store, "commit", retried_first)
        with SQLiteStore(path, lock=False) as tool:
            # as a terminate writes one that failed on its own as the request was asked
            tool.write(Transaction().create_workflow("w", "ops_app:versioned", [],
                                                     status="failed")
                       .extend(request_transaction("w", terminated("late"), 1)))
            await until(lambda: retried, "the node to discard the request")
        await until(lambda: node.workflow("w").status() == "waiting", "the retry to run")
        assert store.pending_messages("w") == [] and retried == ["0 journal record(s) replay"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_pending_terminate_request_ends_the_workflow_before_it_runs(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A node was asked to terminate (a control row in the inbox) but stopped before it
    acted: the next node ends the workflow without running any of its code, and its
    parent gets the EXIT."""
    from garrison.hosts.workflow import request_transaction, terminated

    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(ops_app.parent_of_one, id="p")
        await until(lambda: node.workflow("p.1").status() == "waiting", "the child")
    with SQLiteStore(store) as s:
        s.write(request_transaction("p.1", terminated("asked while the node was down")))
        assert [m.kind for m in s.pending_messages("p.1")] == ["control"]
    ops_app.LOG.clear()
    async with garrison.open_node(store=store) as node:
        assert await node.workflow("p").result() == (
            "child ended: Terminated: asked while the node was down")
        assert node.workflow("p.1").status() == "failed"
        assert node.hosts["workflows"].store.pending_messages("p.1") == []


async def test_a_tool_that_ends_a_workflow_a_node_runs_stops_it(tmp_path: Path) -> None:
    """A tool saw no node and ended the workflow in the store, but a node had just
    started: the node stops its instance with the stored error."""
    from garrison.hosts.workflow import terminate_transaction, terminated

    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(ops_app.guarded, "desk", id="g")
        await until(lambda: node.workflow("g").status() == "waiting", "g to wait")
        with SQLiteStore(store, lock=False) as tool:
            tool.write(terminate_transaction(tool, tool.get_workflow("g"),
                                             terminated("raced")))
        with trio.fail_after(10), pytest.raises(garrison.WorkflowFailed, match="raced"):
            await node.workflow("g").result()
    assert ("release", "res-desk") not in ops_app.LOG


async def test_a_tool_that_ends_a_child_wakes_the_parent_a_node_runs(store_spec: str) -> None:
    """A tool ended a child workflow in the store while a node ran its parent: the
    parent's EXIT went into its inbox, but the tool's write woke the node for the child
    only, and the parent went on waiting."""
    from garrison.hosts.workflow import terminate_transaction, terminated
    from garrison.persistence import open_store

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.parent_of_one, id="p")
        await until(lambda: node.workflow("p.1").status() == "waiting", "the child")
        with open_store(store_spec, lock=False) as tool:
            tool.write(terminate_transaction(tool, tool.get_workflow("p.1"),
                                             terminated("by a tool")))
        with trio.fail_after(10):
            assert await node.workflow("p").result() == "child ended: Terminated: by a tool"


def test_a_tool_terminate_reaches_watchers_of_any_host(tmp_path: Path) -> None:
    """A workflow a tool started has no host of its own (``workflows/x``), while the
    workflows of a node whose host is a config entry are ``app:orders/w``: a tool's
    terminate delivered only to watchers named with the ended workflow's host."""
    from garrison.hosts.workflow import terminate_transaction, terminated

    path = str(tmp_path / "s.db")
    SQLiteStore(path).close()
    with SQLiteStore(path, lock=False) as tool:
        tool.write(Transaction().create_workflow("x", "app:f", status="pending"))
        tool.write(Transaction().create_workflow("w", "app:g", status="running",
                                                 host="app:orders"))
        tool.write(Transaction().add_monitor("x", "app:orders/w"))
        tool.write(terminate_transaction(tool, tool.get_workflow("x"), terminated("gone")))
        [row] = tool.pending_messages("w")
        assert (row.msg_id, row.topic, row.sender) == ("x#exit@w", "EXIT", Pid("workflows", "x"))


# ------------------------------------------------------------------ the command line
async def test_cli_start_terminate_retry_without_a_node(
        tmp_path: Path, autojump_clock: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """No node runs: start leaves the workflow pending, terminate ends it at once (the
    next node delivers its EXIT to its parent), retry leaves it pending; the next node
    that opens the store acts on each."""
    store = str(tmp_path / "s.db")
    SQLiteStore(store).close()

    code, out, err = await cli_async(capsys, "--store", store, "start", "ops_app:order",
                                     '["pen"]', "--id", "o-1", "--json")
    assert code == 0, err
    assert json.loads(out) == {"workflow_id": "o-1", "created": True, "name": "ops_app:order"}
    code, out, _ = await cli_async(capsys, "--store", store, "start", "ops_app:order",
                                   '["other"]', "--id", "o-1")
    assert code == 0 and "exists already" in out
    with SQLiteStore(store, lock=False) as s:
        assert s.get_workflow("o-1").status == "pending"

    async with garrison.open_node(store=store) as node:
        await until(lambda: node.workflow("o-1").status() == "waiting", "o-1 to run")
        await node.start_workflow(ops_app.parent_of_one, id="p")
        ops_app.FAILS["bad"] = 2
        await node.start_workflow(ops_app.order, "bad", id="f")
        with pytest.raises(garrison.WorkflowFailed):
            await node.workflow("f").result()
        await until(lambda: node.workflow("p.1").status() == "waiting", "the child")
    assert ops_app.LOG.count(("charge", "bad")) == 2

    code, out, err = await cli_async(capsys, "--store", store, "terminate", "p.1",
                                     "--reason", "by the test")
    assert code == 0, err
    assert out == "workflow 'p.1' terminated (failed: Terminated: by the test)\n"
    code, out, err = await cli_async(capsys, "--store", store, "retry", "f")
    assert code == 0, err
    assert out == ("workflow 'f' retried: 1 journal record(s) replay; the workflow runs "
                   "again from seq 2, where activity 'ops_app:charge' failed\n")
    with SQLiteStore(store, lock=False) as s:
        assert s.get_workflow("p.1").status == "failed"
        assert str(s.get_workflow("p.1").error) == "Terminated: by the test"
        assert (s.get_workflow("f").status, s.get_workflow("f").error) == ("pending", None)

    async with garrison.open_node(store=store) as node:
        assert await node.workflow("p").result() == "child ended: Terminated: by the test"
        s = node.hosts["workflows"].store
        await until(lambda: s.pending_messages("p.1") == [], "the request to be consumed")
        await until(lambda: node.workflow("f").status() == "waiting", "f to run again")
        assert ops_app.LOG.count(("charge", "bad")) == 3
        assert ops_app.LOG.count(("reserve", "bad")) == 1
        await node.workflow("f").signal("ship")
        assert await node.workflow("f").result() == "res-bad pay-bad ship"
        await node.workflow("o-1").signal("ship")
        assert await node.workflow("o-1").result() == "res-pen pay-pen ship"


async def test_cli_start_terminate_retry_with_a_node_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A node holds the store: the tool's writes wake it and it acts at once."""
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        code, out, err = await cli_async(capsys, "--store", store, "start", "ops_app:order",
                                         '["pen"]', "--id", "o-1")
        assert code == 0 and out == "workflow 'o-1' started (ops_app:order)\n", err
        await until(lambda: node.workflow("o-1").status() == "waiting", "o-1 to run")
        assert ops_app.LOG == [("reserve", "pen"), ("charge", "pen")]

        await node.start_workflow(ops_app.guarded, "desk", id="g")
        await until(lambda: node.workflow("g").status() == "waiting", "g to wait")
        code, _out, err = await cli_async(capsys, "--store", store, "terminate", "g")
        assert code == 0, err
        with trio.fail_after(10), pytest.raises(garrison.WorkflowFailed) as info:
            await node.workflow("g").result()
        assert str(info.value.error) == \
            "Terminated: terminated by garrison workflows terminate"
        assert ("release", "res-desk") not in ops_app.LOG

        await node.start_workflow(ops_app.parent_of_one, id="p")
        await until(lambda: node.workflow("p.1").status() == "waiting", "the child")
        code, _out, err = await cli_async(capsys, "--store", store, "terminate", "p.1")
        assert code == 0, err
        with trio.fail_after(10):
            assert (await node.workflow("p").result()).startswith(
                "child ended: Terminated: terminated by garrison")

        await node.start_workflow(ops_app.fails_after_reserving, "cup", id="f")
        with pytest.raises(garrison.WorkflowFailed):
            await node.workflow("f").result()
        code, out, err = await cli_async(capsys, "--store", store, "retry", "f", "--json")
        assert code == 0, err
        assert json.loads(out) == {"workflow_id": "f", "status": "pending",
                                   "retry": "1 journal record(s) replay"}
        s = node.hosts["workflows"].store
        await until(lambda: s.get_workflow("f").attempt == 2
                    and node.workflow("f").status() == "failed", "f to fail again")
        assert ops_app.LOG.count(("reserve", "cup")) == 1


def test_cli_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "s.db")
    with SQLiteStore(store) as s:
        s.write(Transaction().create_workflow("done", "ops_app:order", ["x"],
                                              status="completed"))
        s.write(Transaction().create_workflow("open", "ops_app:order", ["y"],
                                              status="pending"))
    cases = [
        (("start", "ops_app:nope"), 2, "cannot import 'ops_app:nope': AttributeError"),
        (("start", "ops_app"), 2, "must name the workflow function as module:function"),
        (("start", "ops_app:reserve"), 2, "is an activity, not a workflow function"),
        (("start", "ops_app:order", '{"item": 1}'), 2, "must be a JSON array"),
        # (one argument given bare: how to give it)
        (("start", "ops_app:order", '"o-4"'), 2,
         """got '"o-4"': for that one argument, give '["o-4"]'"""),
        (("start", "ops_app:order", "[1, 2"), 2, "the arguments must be JSON"),
        # (helper-230: the last of a repeated key won; the console refuses it too)
        (("start", "ops_app:order", '[{"a": 1, "a": 2}]'), 2,
         "the key 'a' appears twice in one object"),
        # (bare text: the example is the array the arguments need, not any JSON)
        (("start", "ops_app:order", "o-4"), 2,
         """the arguments must be JSON (e.g. '["order-17", 3]')"""),
        (("start", "ops_app:order"), 2, "workflow ops_app:order takes 1 argument(s) (item), "
         "but JSON_ARGS gives 0: [] (missing a required argument: 'item')"),
        (("start", "ops_app:order", '["a", "b"]', "--id", "two"), 2,
         'takes 1 argument(s) (item), but JSON_ARGS gives 2: ["a", "b"] (too many '
         'positional arguments)'),
        (("start", "ops_app:parent_of_one", "[1]"), 2,
         "workflow ops_app:parent_of_one takes 0 argument(s) (), but JSON_ARGS gives 1"),
        # (a pid is its 'host/id' text: it was told to give an object of its fields,
        # which was then refused for not being the 'host/id' text)
        (("start", "ops_app:notifies", '["badpid"]'), 2,
         "argument 1 (to) of workflow ops_app:notifies as Pid: expected a pid as its "
         "'host/id' text, got a string \"badpid\""),
        (("start", "ops_app:notifies", '[{"host": "workflows", "id": "x"}]'), 2,
         "as Pid: expected a pid as its 'host/id' text, got an object {"),
        # (it said 'takes 1 argument(s) (item, *, rush), but JSON_ARGS gives 1')
        (("start", "ops_app:keyword_only", '["a"]'), 2,
         "workflow ops_app:keyword_only has no default for the keyword-only parameter(s) "
         "'rush' of (item, *, rush), but a workflow is given positional arguments only "
         "(no start can give a keyword argument): give each a default, or make it "
         "positional"),
        (("start", "ops_app:keyword_only", '["a", true]'), 2,
         "has no default for the keyword-only parameter(s) 'rush'"),
        (("terminate", "done"), 1, "cannot terminate workflow 'done': it is completed"),
        (("terminate", "ghost"), 1, "no workflow 'ghost'"),
        (("terminate", "done", "--reason", ""), 2,
         "--reason: a terminate reason must say why: got ''"),
        (("terminate", "open", "--reason", ""), 2,
         "--reason: a terminate reason must say why: got ''"),
        (("terminate", "ghost", "--reason", "  "), 2,
         "--reason: a terminate reason must say why: got '  '"),
        (("retry", "done"), 1, "cannot retry workflow 'done': it is completed"),
        (("replay", "--status", "bogus"), 2, "--status 'bogus' is not a workflow status"),
        # (an empty one replayed the default selection, silently)
        (("replay", "--status", ""), 2, "--status '' is not a workflow status"),
        (("replay", "--status", "failed,"), 2, "--status '' is not a workflow status"),
        (("list", "--status", ""), 2, "--status '' is not a workflow status"),
        (("replay", "--module", "no/such.py"), 2, "--module 'no/such.py': no such file"),
        (("export", "ghost"), 1, "no workflow 'ghost'"),
    ]
    for args, want, said in cases:
        code, out, err = cli_here(capsys, "--store", store, *args)
        assert (code, out) == (want, ""), (args, code, out, err)
        assert err.count("\n") == 1 and said in err, (args, err)
    with SQLiteStore(store, lock=False) as s:  # nothing refused was written
        assert sorted(r.workflow_id for r in s.list_workflows()) == ["done", "open"]
        assert s.get_workflow("open").status == "pending"
        assert s.pending_messages("open") == []  # no terminate request either


def test_cli_json_is_strict_as_the_console_s(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """NaN, Infinity and a number too large for a float are not JSON: a payload, a
    promise value or start arguments holding one are refused (exit 2, naming it) as the
    console refuses them, not stored as text no JSON reader (a browser, PostgreSQL's
    jsonb) accepts."""
    store = str(tmp_path / "s.db")
    with SQLiteStore(store) as s:
        s.write(Transaction().create_workflow("w", "ops_app:order", ["x"], status="waiting"))
    cases = [
        (("signal", "w", "ship", "NaN"), "the payload must be JSON", "NaN is not a JSON number"),
        (("signal", "w", "ship", '{"n": -Infinity}'), "the payload must be JSON",
         "-Infinity is not a JSON number"),
        (("resolve", "w", "go", "1e400"), "the value must be JSON",
         "1e400 is too large for a JSON number"),
        (("start", "ops_app:order", "[NaN]", "--id", "n"), "the arguments must be JSON",
         "NaN is not a JSON number"),
        (("signal", "w", "ship", '"\\ud800"'), "the payload must be JSON",
         "is not valid text"),
        (("signal", "w", "ship", "1" * 5000), "the payload must be JSON",
         "a whole number of 5000 digits is too long: at most 4300 digits"),
        # (a long payload that is no JSON: quoted cut, not echoed whole, helper-217)
        (("signal", "w", "ship", "{" * 50 + "x" * 100_000), "the payload must be JSON",
         "Expecting property name enclosed in double quotes (at character 1) in '"
         + "{" * 50 + "x" * 150 + "'... (100,050 characters)"),
    ]
    for args, what, why in cases:
        code, out, err = cli_here(capsys, "--store", store, *args)
        assert (code, out) == (2, ""), (args, code, out, err)
        assert err.count("\n") == 1 and what in err and why in err, (args, err)
        assert len(err) < 1000, err[:300]
    with SQLiteStore(store, lock=False) as s:  # nothing was written
        assert s.pending_messages("w") == [] and s.promises("w") == []
        assert [r.workflow_id for r in s.list_workflows()] == ["w"]
    code, _out, err = cli_here(capsys, "--store", store, "signal", "w", "ship", '{"n": 1.5}')
    assert code == 0, err


# ------------------------------------------------------------------ offline terminate
class _Errors(logging.Handler):
    """The error records of garrison's loggers while it is installed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def garrison_errors() -> Iterator[list[logging.LogRecord]]:
    handler = _Errors()
    logger = logging.getLogger("garrison")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def _controls(store: str) -> list[tuple[Any, ...]]:
    """The ``control`` rows of workflow ``o``: (payload, consumed)."""
    return [(json.loads(payload), consumed is not None) for payload, consumed in sql(
        store, "SELECT payload, consumed_seq FROM inbox WHERE workflow_id = ? AND "
        "kind = 'control' ORDER BY id", ("o",))]


@pytest.mark.parametrize("node_between", [False, True], ids=["retry-offline", "node-between"])
async def test_an_offline_terminate_applies_once_and_a_retry_is_not_terminated_again(
        store_spec: str, node_between: bool, autojump_clock: Any,
        garrison_errors: list[logging.LogRecord]) -> None:
    """Two tools terminate one workflow at once while no node runs: one request is
    left for a node (the two ask the same of the same attempt); the workflow is retried
    (with no node, or after a node consumed the request): the next node runs it again
    from its journal, the stale request never ends it again, and nothing fails to
    write."""
    from garrison import _store_tools as tools
    from garrison.hosts.workflow import terminate_transaction, terminated

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.order, "pen", id="o")
        await until(lambda: node.workflow("o").status() == "waiting", "o to wait")
    tool = tools.open_store(store_spec)
    try:
        seen = tool.get_workflow("o")  # both tools read it unfinished
        assert tools.terminate(tool, "o", "first tool") is True
        with pytest.raises(ValueError, match="changed since it was read"):
            tool.write(terminate_transaction(tool, seen, terminated("second tool")))
        assert tool.get_workflow("o").status == "failed"
        assert [consumed for _payload, consumed in _controls(store_spec)] == [False]
        if node_between:
            async with garrison.open_node(store=store_spec) as node:
                await trio.sleep(1)  # it reads the request (SQLite: its wakeup), or not
                assert node.workflow("o").status() == "failed"
        assert tools.retry(tool, "o") == "2 journal record(s) replay"
    finally:
        tool.close()

    async with garrison.open_node(store=store_spec) as node:
        await until(lambda: node.workflow("o").status() == "waiting", "o to run again")
        await trio.sleep(1)
        assert node.workflow("o").status() == "waiting"  # not terminated again
        await node.workflow("o").signal("ship")
        assert await node.workflow("o").result() == "res-pen pay-pen ship"
        assert node.hosts["workflows"].store.get_workflow("o").attempt == 2
    payloads = _controls(store_spec)
    assert [(p["attempt"], consumed) for p, consumed in payloads] == [(1, True)]
    assert ops_app.LOG == [("reserve", "pen"), ("charge", "pen")]  # replayed, not rerun
    assert [r.getMessage() for r in garrison_errors] == []


async def test_a_stale_request_left_by_an_older_garrison_is_ignored_after_a_retry(
        tmp_path: Path, autojump_clock: Any, garrison_errors: list[logging.LogRecord]) -> None:
    """Requests without an attempt (and two of them, as an older version wrote for two
    terminates) end the workflow they find; after a retry the workflow runs."""
    from garrison.hosts.workflow import request_transaction, terminated

    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(ops_app.order, "pen", id="o")
        await until(lambda: node.workflow("o").status() == "waiting", "o to wait")
    with SQLiteStore(store) as s:
        s.write(request_transaction("o", terminated("one")))
        s.write(request_transaction("o", terminated("two")))
    async with garrison.open_node(store=store) as node:
        with pytest.raises(garrison.WorkflowFailed, match="Terminated: two"):
            await node.workflow("o").result()
        s = node.hosts["workflows"].store
        await until(lambda: s.pending_messages("o") == [], "both requests consumed")
        await node.workflow("o").retry()
        await until(lambda: node.workflow("o").status() == "waiting", "o to run again")
    assert [r.getMessage() for r in garrison_errors] == []


async def test_an_offline_terminate_of_a_queued_workflow_frees_its_dedup_key(
        store_spec: str, autojump_clock: Any) -> None:
    """A workflow waiting in its host's queue with a dedup key, terminated by a tool
    while no node runs: its queue row goes with it, so the key starts a new workflow."""
    import schedule_app

    from garrison import _store_tools as tools

    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        await node.start_workflow(schedule_app.job, 100.0, id="blocker")
        queued = await node.start_workflow(schedule_app.job, id="q", dedup="report-7")
        assert node.workflow("q").status() == "pending"
    tool = tools.open_store(store_spec)
    try:
        assert tools.terminate(tool, "q", "not needed") is True
        assert [e.workflow_id for e in tool.queue_entries()] == []
    finally:
        tool.close()
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        again = await node.start_workflow(schedule_app.job, id="q2", dedup="report-7")
        assert again != queued and again.id == "q2"
        assert node.workflow("q").status() == "failed"
        await node.workflow("q2").result()


async def test_an_offline_cancel_of_a_queued_workflow_frees_its_dedup_key(
        store_spec: str, autojump_clock: Any) -> None:
    """The same for a cancel: the next node ends the waiting workflow ``cancelled`` and
    drops its queue row (also when the tool's wake-up reaches the node before its queue
    runs)."""
    import schedule_app

    from garrison import _store_tools as tools

    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        await node.start_workflow(schedule_app.job, 100.0, id="blocker")
        await node.start_workflow(schedule_app.job, id="q", dedup="report-7")
    tool = tools.open_store(store_spec)
    try:
        tools.cancel(tool, "q")
    finally:
        tool.close()
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        # it ends at once, whether the node finds it by the cancel's wake-up or on resume
        with trio.fail_after(500), pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("q").result()
        again = await node.start_workflow(schedule_app.job, id="q2", dedup="report-7")
        assert again.id == "q2"
        # q's queue row is gone (q2's is there while the blocker holds the slot; on
        # PostgreSQL the blocker may have ended already: this node claims q in real
        # time, only once it has room, while the virtual clock runs ahead)
        entries = [e.workflow_id for e in node.hosts["workflows"].store.queue_entries()]
        assert "q" not in entries and entries in ([], ["q2"])


async def test_a_retried_workflow_takes_its_dedup_key_back(
        store_spec: str, autojump_clock: Any) -> None:
    """A workflow started with a dedup key frees it when it fails; retried (from the
    handle, or by a tool while no node runs) it runs again holding the key: a start with
    the key returns it, also after a restart, until it ends."""
    from garrison import _store_tools as tools

    ops_app.FAILS["lamp"] = 2  # both attempts of charge fail
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.order, "lamp", id="o", dedup="order-lamp")
        with trio.fail_after(10), pytest.raises(garrison.WorkflowFailed):
            await node.workflow("o").result()
        note = await node.workflow("o").retry()
        await until(lambda: node.workflow("o").status() == "waiting", "o to run again")
        assert (await node.start_workflow(ops_app.order, "lamp", id="o2",
                                          dedup="order-lamp")).id == "o"
        assert note.endswith("; it holds its dedup key 'order-lamp' again"), note
    async with garrison.open_node(store=store_spec) as node:
        assert (await node.start_workflow(ops_app.order, "lamp", id="o2",
                                          dedup="order-lamp")).id == "o"
        await node.workflow("o").terminate("again")  # ends it: the key is free
    tool = tools.open_store(store_spec)
    try:  # a tool's retry takes it back the same
        assert tools.retry(tool, "o").endswith("it holds its dedup key 'order-lamp' again")
        assert [(e.workflow_id, e.dedup) for e in tool.queue_entries()] == [
            ("o", "order-lamp")]
    finally:
        tool.close()
    async with garrison.open_node(store=store_spec) as node:
        assert (await node.start_workflow(ops_app.order, "lamp", id="o2",
                                          dedup="order-lamp")).id == "o"
        await until(lambda: node.workflow("o").status() == "waiting", "o to run again")
        await node.workflow("o").signal("ship")
        assert await node.workflow("o").result() == "res-lamp pay-lamp ship"
        assert (await node.start_workflow(ops_app.order, "cup", id="o2",
                                          dedup="order-lamp")).id == "o2"
        assert node.workflows(status="failed") == []
        assert sorted(w.workflow_id for w in node.workflows()) == ["o", "o2"]


async def test_a_retry_is_refused_while_another_workflow_holds_its_dedup_key(
        store_spec: str, autojump_clock: Any) -> None:
    """Started with the key after the failed workflow ended, another workflow holds it:
    a retry (handle or tool) is refused naming the key and its holder, and writes
    nothing; once the holder has ended, the retry takes the key back."""
    from garrison import _store_tools as tools

    ops_app.FAILS["lamp"] = 2
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.order, "lamp", id="o", dedup="order-lamp")
        with trio.fail_after(10), pytest.raises(garrison.WorkflowFailed):
            await node.workflow("o").result()
        assert (await node.start_workflow(ops_app.order, "cup", id="new",
                                          dedup="order-lamp")).id == "new"
        refused = (r"cannot retry workflow 'o': its dedup key 'order-lamp' is held by "
                   r"workflow 'new', started with it since")
        with pytest.raises(ValueError, match=refused):
            await node.workflow("o").retry()
        tool = garrison.persistence.open_store(store_spec, lock=False)
        try:
            with pytest.raises(tools.ToolError, match=refused):
                tools.retry(tool, "o")
            # (several at once: refused on its own in the batch, nothing written)
            held, missing = tools.retry_each(tool, ["o", "gone"])
            assert isinstance(held, tools.ToolError) and re.match(refused, str(held)), held
            assert isinstance(missing, tools.ToolError) and "no workflow 'gone'" in str(missing)
        finally:
            tool.close()
        record = node.hosts["workflows"].store.get_workflow("o")
        assert (record.status, record.attempt) == ("failed", 1)
        await until(lambda: node.workflow("new").status() == "waiting", "new to wait")
        await node.workflow("new").signal("ship")
        await node.workflow("new").result()
        await node.workflow("o").retry()
        await until(lambda: node.workflow("o").status() == "waiting", "o to run again")
        assert (await node.start_workflow(ops_app.order, "pen", id="o3",
                                          dedup="order-lamp")).id == "o"


async def test_cli_terminate_asks_the_running_node_on_either_store(
        store_spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A tool asks the node that runs the store (``terminate``: through the workflow's
    inbox) and acts itself only when none does. On PostgreSQL it looked for a lock file
    beside the URL, found none, and ended the workflow in the store behind the running
    node (which ended its own run only from the request written with it; children on
    other nodes of a cluster got a status write). Every PostgreSQL node now holds its
    schema's node lock (shared), which a tool tries to take."""

    async with garrison.open_node(store=store_spec) as node:
        tool = garrison.persistence.open_store(store_spec, lock=False)
        assert tool.node_running()
        await node.start_workflow(ops_app.guarded, "desk", id="g")
        await until(lambda: node.workflow("g").status() == "waiting", "g to wait")
        code, _out, err = await cli_async(capsys, "--store", store_spec, "terminate", "g")
        assert code == 0, err
        with trio.fail_after(10), pytest.raises(garrison.WorkflowFailed) as info:
            await node.workflow("g").result()
        assert str(info.value.error) == \
            "Terminated: terminated by garrison workflows terminate"
    try:
        # the node closed: its lock went with it (PostgreSQL ends the server side of its
        # session a moment after the client closed it)
        await until(lambda: not tool.node_running(), "the node's lock to go")
        assert tool.get_workflow("g").status == "failed"
    finally:
        tool.close()


async def test_a_client_handle_terminate_returns_once_the_running_node_ended_it(
        store_spec: str) -> None:
    """``handle.terminate()`` on a node opened with a ``lock=False`` store (a client)
    wrote the request and returned at once: the workflow was still running when it
    returned (an activity could even start after it). It now watches the store until
    the node that runs the workflow has ended it, as the docstring says."""
    from garrison.persistence import open_store

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.parent_of_one, id="p")
        await until(lambda: node.workflow("p.1").status() == "waiting", "the child")
        client_store = open_store(store_spec, lock=False)
        try:
            async with garrison.open_node(store=client_store) as client:
                handle = client.workflow("p")
                with trio.fail_after(10):
                    await handle.terminate("by a client")
                assert handle.status() == "failed"
                assert str(client_store.get_workflow("p").error) == "Terminated: by a client"
                assert client.workflow("p.1").status() == "failed"
                with trio.fail_after(10):
                    await handle.terminate("again")  # ended: nothing happens
                assert str(client_store.get_workflow("p").error) == "Terminated: by a client"
        finally:
            client_store.close()


async def test_a_client_handle_terminate_with_no_node_ends_the_workflow_in_the_store(
        store_spec: str) -> None:
    """No node holds the store: a client's ``handle.terminate()`` ends the workflow
    (and its unfinished children) in the store at once, as ``garrison workflows
    terminate`` does, instead of leaving a request for a node that may never come."""
    from garrison.persistence import open_store

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.parent_of_one, id="p")
        await until(lambda: node.workflow("p.1").status() == "waiting", "the child")
    client_store = open_store(store_spec, lock=False)
    try:
        await until(lambda: not client_store.node_running(), "the node's lock to go")
        async with garrison.open_node(store=client_store) as client:
            with trio.fail_after(10):
                await client.workflow("p").terminate("nobody runs it")
            assert client.workflow("p").status() == "failed"
            assert str(client_store.get_workflow("p").error) == "Terminated: nobody runs it"
            assert str(client_store.get_workflow("p.1").error) == \
                "Terminated: its parent workflow 'p' was terminated"
    finally:
        client_store.close()
    async with garrison.open_node(store=store_spec) as node:  # nothing left to act on
        assert node.workflow("p").status() == "failed"
        assert str(node.hosts["workflows"].store.get_workflow("p").error) == \
            "Terminated: nobody runs it"


async def test_a_retry_read_before_another_one_landed_writes_nothing(
        store_spec: str) -> None:
    """Two operators retry one failed workflow: B reads it (and its journal) for its
    retry, A's retry lands, the workflow runs again, records its step and waits; then
    B's write lands. It took back the step A's run had recorded and set the workflow
    back to pending (after a restart the payment ran again). A retry is written only if
    the workflow is still as its operator read it."""
    from garrison import _store_tools as tools
    from garrison.hosts.workflow import retry_transaction

    ops_app.FAILS["lamp"] = 2  # (the activity's two attempts)
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.order, "lamp", id="o")
        with trio.fail_after(10), pytest.raises(garrison.WorkflowFailed):
            await node.workflow("o").result()
        operator_b = garrison.persistence.open_store(store_spec, lock=False)
        try:
            late_tx, _note = retry_transaction(operator_b, operator_b.get_workflow("o"))
            await node.workflow("o").retry()  # operator A
            await until(lambda: node.workflow("o").status() == "waiting", "o to run again")
            recorded = [(r.seq, r.outcome) for r in node.workflow("o").history()]
            with pytest.raises(ValueError, match=r"workflow 'o' changed since it was read "
                               r"\(it is no longer failed, attempt 1"):
                operator_b.write(late_tx)
            with pytest.raises(tools.ToolError, match=r"cannot retry workflow 'o': it is"):
                tools.retry(operator_b, "o")  # read now: refused as a retry of a live one
        finally:
            operator_b.close()
        assert [(r.seq, r.outcome) for r in node.workflow("o").history()] == recorded
        assert node.workflow("o").status() == "waiting"
        await node.workflow("o").signal("ship")
        assert await node.workflow("o").result() == "res-lamp pay-lamp ship"
    assert ops_app.LOG.count(("charge", "lamp")) == 3


async def test_the_handle_is_silent_on_a_finished_workflow_where_the_cli_refuses(
        tmp_path: Path, autojump_clock: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """What README ("A finished workflow") says: the handle's signal is a counted dead
    letter and a promise resolved or rejected is stored, without an error (only a
    promise completed before raises); the command line refuses both (exit 1)."""
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(ops_app.guarded, "desk", id="g")
        await trio.sleep(1)
        handle = node.workflow("g")
        await handle.promise("go").resolve("yes")
        assert await handle.result() == "yes"
        dead = node.stats()["dead_letters"]
        await handle.signal("late", 1)
        assert node.stats()["dead_letters"] == dead + 1
        await handle.promise("other").resolve(5)
        await handle.promise("third").reject("no")
        assert (handle.promise("other").status(), handle.promise("third").status()) == \
            ("resolved", "rejected")
        with pytest.raises(garrison.PromiseAlreadyCompleted):
            await handle.promise("go").resolve("again")
        await handle.cancel()
        await handle.terminate()
        assert handle.status() == "completed"
    for args in (("signal", "g", "late"), ("resolve", "g", "fourth", "1"),
                 ("reject", "g", "fourth", "no"), ("cancel", "g"), ("terminate", "g")):
        code, out, err = await cli_async(capsys, "--store", store, *args)
        assert (code, out) == (1, ""), args
        assert "workflow 'g': it is completed" in err, args


async def test_a_retried_workflow_reads_the_exit_of_a_process_that_ended_while_it_failed(
        store_spec: str, autojump_clock: Any) -> None:
    """A workflow monitors a plain process, then fails (a service was down); the process
    fails while the workflow is failed. Its EXIT was lost (the EXIT found no running
    workflow and was dropped): the retried workflow waited for ever, or read a made-up
    ``noproc``. The failure made the process forget the workflow (nothing reaches its
    inbox, no dead letter), and the retry's replay, finding the process ended, reads
    its end as the node remembers it."""
    ops_app.FAILS["kite"] = 2
    async with garrison.open_node(store=store_spec) as node:
        pid = await node.spawn(ops_app.fails_on_go)
        await node.start_workflow(ops_app.monitors_a_process, "kite", str(pid), id="w")
        handle = node.workflow("w")
        with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
            await handle.result()
        assert node.process_info(pid).monitored_by == frozenset()
        dead = node.stats()["dead_letters"]
        await node.send(pid, "go")
        with pytest.raises(garrison.ProcessError):
            await node.wait(pid)
        assert node.stats()["dead_letters"] == dead
        await handle.retry()
        with trio.fail_after(60):
            assert await handle.result() == f"{pid}: RuntimeError: told to fail: go"


async def test_a_retried_workflow_still_monitors_a_process_that_outlived_its_failure(
        store_spec: str, autojump_clock: Any) -> None:
    """The process is still running when the failed workflow is retried, and fails
    after that: its failure had made the process forget the workflow (a monitor a
    replay does not make again), so the retried workflow waited for ever. The failure
    lets go of the monitor (the process kept the failed workflow among its monitors as
    long as it lived, one entry per workflow that failed and was never retried), and
    the retry's replay makes it again."""
    ops_app.FAILS["reel"] = 2
    async with garrison.open_node(store=store_spec) as node:
        pid = await node.spawn(ops_app.fails_on_go)
        w = await node.start_workflow(ops_app.monitors_a_process, "reel", str(pid), id="w")
        handle = node.workflow("w")
        await until(lambda: node.process_info(pid).monitored_by == frozenset({w}), "it")
        with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
            await handle.result()
        assert node.process_info(pid).monitored_by == frozenset()
        await handle.retry()
        await until(lambda: handle.status() == "waiting", "the retried workflow")
        assert node.process_info(pid).monitored_by == frozenset({w})
        await node.send(pid, "go")
        with trio.fail_after(60):
            assert await handle.result() == f"{pid}: RuntimeError: told to fail: go"


@pytest.mark.parametrize("ended", ["while_it_ran", "while_it_failed"])
async def test_a_retry_after_a_restart_reads_noproc_for_a_process_that_ended_while_it_failed(
        store_spec: str, ended: str, autojump_clock: Any) -> None:
    """As above, but the node restarts before the retry: the new node never knew the
    process (its end is remembered only by the node run it ended in). One that ended
    while the workflow was failed reached no inbox (the failure had let go of the
    monitor): the retried run's monitor of a dead pid gets ``noproc``, as any monitor
    of a dead pid does, not the real reason (README says so). One that ended while the
    workflow ran put its EXIT in its inbox, which the retried run reads as it was."""
    ops_app.FAILS["kite"] = 2
    async with garrison.open_node(store=store_spec) as node:
        pid = await node.spawn(ops_app.fails_on_go)
        await node.start_workflow(ops_app.monitors_a_process, "kite", str(pid), id="w")
        if ended == "while_it_ran":
            await until(lambda: "monitor" in _kinds(node, "w"), "w's monitor")
            await node.send(pid, "go")
        with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
            await node.workflow("w").result()
        if ended == "while_it_failed":
            await node.send(pid, "go")
        with pytest.raises(garrison.ProcessError, match="told to fail: go"):
            await node.wait(pid)
        assert len(node.hosts["workflows"].store.pending_messages("w")) == (
            ended == "while_it_ran")
    async with garrison.open_node(store=store_spec) as node:
        await node.workflow("w").retry()
        with trio.fail_after(60):
            said = await node.workflow("w").result()
        if ended == "while_it_ran":
            assert said == f"{pid}: RuntimeError: told to fail: go"
        else:
            assert said.startswith(f"{pid}: noproc"), said


async def test_an_event_for_a_workflow_that_ended_for_good_is_a_dead_letter(
        store_spec: str, autojump_clock: Any) -> None:
    """A process's EXIT for a workflow that completed (it never runs again) is a dead
    letter, counted (on PostgreSQL it was dropped without a count), and nothing is
    written to its inbox."""
    from garrison import Event, EventKind

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.returns_at_once, id="done")
        assert await node.workflow("done").result() == "done"
        pid = await node.spawn(ops_app.fails_on_go)
        dead = node.stats()["dead_letters"]
        host = node.hosts["workflows"]
        node._router.deliver_event(Pid("workflows", "done"),  # (as a process ends)
                                   Event(EventKind.EXIT, pid, None, None))
        await until_wall(lambda: node.stats()["dead_letters"] == dead + 1, "the dead letter")
        assert host.store.pending_messages("done") == []


async def until_wall(check: Any, what: str) -> None:
    """Wait (10 s of real time at most) until ``check()`` is true, never letting virtual
    time jump meanwhile: what it waits for is a store read in a worker thread, which an
    autojump clock does not wait for."""
    import time

    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0)


async def test_a_linked_row_waiting_in_a_workflow_a_tool_terminated_never_ends_its_retry(
        store_spec: str, autojump_clock: Any) -> None:
    """A linked workflow of another node that failed wrote its linked row into the
    inbox of a workflow no node ran then; a tool terminated that one: the row asks
    nothing more of that attempt, and a retry runs on (as one ended pending)."""
    from garrison import _store_tools as tools

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.order, "pen", id="o")
        await until(lambda: node.workflow("o").status() == "waiting", "o to wait")
    tool = tools.open_store(store_spec)
    try:
        tool.write(_linked_row("o", Pid("workflows", "x")))
        assert tools.terminate(tool, "o", "by hand") is True
        assert tools.retry(tool, "o") == "2 journal record(s) replay"
    finally:
        tool.close()
    async with garrison.open_node(store=store_spec) as node:
        await until(lambda: node.workflow("o").status() == "waiting", "o to run again")
        await trio.sleep(1)
        assert node.workflow("o").status() == "waiting"  # not ended by the old row
        await node.workflow("o").signal("ship")
        assert await node.workflow("o").result() == "res-pen pay-pen ship"


async def test_a_linked_row_waiting_in_a_blocked_workflow_a_node_ended_never_ends_its_retry(
        store_spec: str, autojump_clock: Any) -> None:
    """A blocked workflow acts on no linked row (its replay never ends); terminated by
    its node, it ends with them: a retry with fixed code runs on."""
    import schedule_app

    from garrison import _store_tools as tools

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(schedule_app.diverging, id="d")
        await until(lambda: node.workflow("d").status() == "waiting", "d to wait")
    tool = tools.open_store(store_spec)
    try:
        tool.write(_linked_row("d", Pid("workflows", "x")))
    finally:
        tool.close()
    schedule_app.DIVERGE["on"] = True
    try:
        async with garrison.open_node(store=store_spec) as node:
            await until(lambda: node.workflow("d").status() == "blocked", "d to block")
            await node.workflow("d").terminate("by hand")
    finally:
        schedule_app.DIVERGE["on"] = False
    tool = tools.open_store(store_spec)
    try:
        assert tools.retry(tool, "d") == "1 journal record(s) replay"
    finally:
        tool.close()
    async with garrison.open_node(store=store_spec) as node:
        await until(lambda: node.workflow("d").status() == "waiting", "d to run again")
        await trio.sleep(1)
        assert node.workflow("d").status() == "waiting"  # not ended by the old row
        await node.workflow("d").signal("go", "went")
        assert await node.workflow("d").result() == "went"


async def test_a_linked_row_that_landed_as_its_workflow_failed_never_ends_its_retry(
        store_spec: str, autojump_clock: Any) -> None:
    """A linked workflow of another node fails as this one fails: its linked row is
    committed after this one's end read its inbox and before that end is committed (a
    workflow's end consumes the rows it knows of; the row is written only while the
    workflow is unfinished). The row stayed pending in the failed workflow, and its
    retry replayed, read it and ended at once with that older failure
    (LinkedProcessFailed). A retry of a failed workflow consumes such rows: they ask
    nothing of the attempt it starts."""
    from garrison import _store_tools as tools

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.order, "pen", id="o")
        await until(lambda: node.workflow("o").status() == "waiting", "o to wait")
    tool = tools.open_store(store_spec)
    try:  # (as the race leaves it: the row, then the end that did not see it)
        tool.write(_linked_row("o", Pid("workflows", "x")))
        tool.write(Transaction().update_workflow(
            "o", status="failed", error=garrison.ErrorInfo("RuntimeError", "own failure")))
        assert len(tool.pending_messages("o")) == 1
        assert tools.retry(tool, "o") == "2 journal record(s) replay"
        assert tool.pending_messages("o") == []
    finally:
        tool.close()
    async with garrison.open_node(store=store_spec) as node:
        await until(lambda: node.workflow("o").status() == "waiting", "o to run again")
        await trio.sleep(1)
        assert node.workflow("o").status() == "waiting"  # not ended by the old row
        await node.workflow("o").signal("ship")
        assert await node.workflow("o").result() == "res-pen pay-pen ship"


def _linked_row(wid: str, dead: Pid) -> Transaction:
    """The linked row the failure of ``dead`` (RuntimeError: boom) on another node of a
    cluster writes into the inbox of ``wid``."""
    from garrison.actors._values import ErrorInfo, Event, EventKind
    from garrison.hosts.workflow._inbox import LINKED, linked_id
    from garrison.hosts.workflow._journal import event_to_plain

    plain = event_to_plain(Event(EventKind.LINK_DOWN, dead, None,
                                 ErrorInfo("RuntimeError", "boom")))
    plain[LINKED] = True
    return Transaction().deliver(wid, "LINK_DOWN", RawJson(json.dumps(plain)),
                                 msg_id=linked_id(str(dead), wid), sender=dead,
                                 kind="event", if_unfinished=True)


LINK_GATE = {"open": False}


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def _fails_once_open() -> None:
    while not LINK_GATE["open"]:
        await trio.sleep(1)
    raise RuntimeError("boom")


async def _links_then_fails(other: str) -> None:
    """Links to ``other``, then fails (an activity's failure, which a retry runs
    again) once :data:`LINK_GATE` opens."""
    garrison.process.link(Pid.parse(other))
    await _fails_once_open()


async def _traps(expect: int) -> list[str]:
    """Traps links (links to nothing itself); returns the first ``expect`` events."""
    garrison.process.set_options(trap_links=True)
    got: list[str] = []
    while len(got) < expect:
        ev = await garrison.process.events().receive()
        got.append(f"{ev.kind} {ev.pid} {ev.error.type if ev.error else None}")
        garrison.workflow.set_state("heard", len(got))
    return got


async def test_a_trapping_workflow_hears_of_each_failure_of_a_retried_linked_one(
        store_spec: str, autojump_clock: Any) -> None:
    """Workflow A links to workflow B, which traps links; A fails, B reads a
    ``LINK_DOWN``; A is retried, links again and fails again: the second ``LINK_DOWN``
    had the id of the first (one per failed workflow and watcher, as B made no link of
    its own), and the store dropped it as delivered. Each attempt's is its own now."""
    LINK_GATE["open"] = False
    async with garrison.open_node(store=store_spec) as node:
        b = await node.start_workflow(_traps, 2, id="B")
        a = node.workflow("A")
        await node.start_workflow(_links_then_fails, str(b), id="A")
        for attempt in (1, 2):
            await trio.sleep(10)
            LINK_GATE["open"] = True
            with pytest.raises(garrison.WorkflowFailed, match="boom"):
                await a.result()
            LINK_GATE["open"] = False
            await until(lambda n=attempt: node.workflow("B").state("heard") == n,
                        f"B to hear of attempt {attempt}")
            if attempt == 1:
                await a.retry()
        assert await node.workflow("B").result() == ["LINK_DOWN workflows/A ActivityError"] * 2


def _kinds(node: garrison.Node, wid: str) -> list[str]:
    return [str(r.kind) for r in node.workflow(wid).history()]


async def _t_fails(node: garrison.Node, attempt: int) -> None:
    """Workflow t (``ops_app.fails_when_told``) is told ``fail<attempt>``, and fails."""
    await node.workflow("t").signal(f"fail{attempt}")
    with pytest.raises(garrison.WorkflowFailed, match=f"told to fail: fail{attempt}"):
        await node.workflow("t").result()


async def _t_retried(node: garrison.Node) -> None:
    """Workflow t is retried, and its new run waits (for its next message)."""
    await node.workflow("t").retry()
    await until(lambda: node.workflow("t").status() == "waiting", "the retried t")


async def _heard_no_more(node: garrison.Node, heard: dict[str, list[str]],
                         host: str = "workflows") -> None:
    """A moment on, no EXIT waits in the inbox of any watcher of ``heard``; each, told
    ``done``, returns the failures it heard (``fail1``: ``told to fail: fail1``)."""
    store = node.hosts[host].store
    await trio.sleep(1)
    for wid in heard:
        assert store.pending_messages(wid) == [], wid
    for wid in heard:
        await node.workflow(wid, host=host).signal("done")
    with trio.fail_after(60):
        for wid, failures in heard.items():
            assert await node.workflow(wid, host=host).result() == [
                f"RuntimeError: told to fail: {said}" for said in failures], wid


async def test_a_monitor_made_after_a_retry_hears_of_the_new_attempts_end_once(
        store_spec: str, autojump_clock: Any) -> None:
    """Workflow m monitors workflow t, which fails; t is retried, m monitors it again,
    and t fails again. The EXIT of the second failure had the id of the first's and was
    dropped as delivered: m waited for ever. It comes now, once; o, which monitored
    only the first attempt, hears nothing more, also when its replay after a restart
    finds t ended again."""
    async with garrison.open_node(store=store_spec) as node:
        store = node.hosts["workflows"].store
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await node.start_workflow(ops_app.monitors_each_attempt, "workflows/t", 2, id="m")
        await node.start_workflow(ops_app.monitors_each_attempt, "workflows/t", 1, id="o")
        await until(lambda: "monitor" in _kinds(node, "m") and "monitor" in _kinds(node, "o"),
                    "both monitors")
        await _t_fails(node, 1)
        await _t_retried(node)
        await node.workflow("m").signal("again")
        await until(lambda: _kinds(node, "m").count("monitor") == 2, "m's second monitor")
        await _t_fails(node, 2)
        await until(lambda: _kinds(node, "m").count("receive") == 3, "m's second EXIT")
        await until(lambda: _kinds(node, "o").count("receive") == 1, "o's EXIT")
        await trio.sleep(1)
        assert store.pending_messages("m") == []
        assert store.pending_messages("o") == []  # (no EXIT of the second failure)
    async with garrison.open_node(store=store_spec) as node:
        store = node.hosts["workflows"].store
        await until(lambda: node.workflow("o").status() == "waiting", "o resumed")
        await _heard_no_more(node, {"m": ["fail1", "fail2"], "o": ["fail1"]})


async def test_an_end_an_older_node_wrote_under_the_first_attempts_id_is_heard_once(
        store_spec: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node of an older garrison (a rolling upgrade) ends the second attempt of t
    under the EXIT id of the first: m, which had the first's, never heard of it (the
    store dropped it); n, which monitored only the second attempt, got it. After the
    upgrade, m's replay finds t's end and hears of it, once; n hears nothing more."""
    from garrison.hosts.workflow import _host

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await node.start_workflow(ops_app.monitors_each_attempt, "workflows/t", 2, id="m")
        await until(lambda: "monitor" in _kinds(node, "m"), "m's monitor")
        await _t_fails(node, 1)
        await _t_retried(node)
        await node.workflow("m").signal("again")
        await node.start_workflow(ops_app.monitors_each_attempt, "workflows/t", 1, id="n")
        await until(lambda: _kinds(node, "m").count("monitor") == 2
                    and "monitor" in _kinds(node, "n"), "the monitors of the second attempt")
        with monkeypatch.context() as old:  # (the ids of an older node: no attempt)
            old.setattr(_host, "exit_id", lambda ended, watcher, attempt=1:
                        f"{ended}#exit@{watcher}")
            await _t_fails(node, 2)
            await until(lambda: _kinds(node, "n").count("receive") == 1, "n's EXIT")
            await trio.sleep(1)
            assert _kinds(node, "m").count("receive") == 2  # (dropped as delivered)
    async with garrison.open_node(store=store_spec) as node:
        await until(lambda: _kinds(node, "m").count("receive") == 3, "m's second EXIT")
        await _heard_no_more(node, {"m": ["fail1", "fail2"], "n": ["fail2"]})


async def test_a_monitor_of_a_workflow_of_another_store_hears_of_each_attempt_once(
        tmp_path: Path, autojump_clock: Any) -> None:
    """The same across two workflow hosts of one node, each on its own store (the
    monitor's row in the watched workflow's store, the EXIT in the watcher's): m,
    which monitors t again after its retry, hears of the second failure; o, which
    monitored the first attempt only, hears nothing more, also when its replay after a
    restart makes its monitor again in t's store (which would have given it the
    second failure's EXIT)."""
    (tmp_path / "app.yaml").write_text(
        'version: "1.0"\nnamespace: p\nentries:\n'
        "  - {name: a, kind: workflow.host, store: a.db}\n"
        "  - {name: b, kind: workflow.host, store: b.db}\n")
    config = str(tmp_path / "app.yaml")

    def kinds(node: garrison.Node, wid: str) -> list[str]:
        return [str(r.kind) for r in node.workflow(wid, host="p:a").history()]

    async with garrison.open_node(config=config) as node:
        t = node.workflow("t", host="p:b")
        await node.start_workflow(ops_app.fails_when_told, id="t", host="p:b")
        await node.start_workflow(ops_app.monitors_each_attempt, "p:b/t", 2, id="m",
                                  host="p:a")
        await node.start_workflow(ops_app.monitors_each_attempt, "p:b/t", 1, id="o",
                                  host="p:a")
        await until(lambda: "monitor" in kinds(node, "m") and "monitor" in kinds(node, "o"),
                    "both monitors")
        await t.signal("fail1")
        with pytest.raises(garrison.WorkflowFailed, match="told to fail: fail1"):
            await t.result()
        await until(lambda: kinds(node, "o").count("receive") == 1, "o's EXIT")
        await t.retry()
        await until(lambda: t.status() == "waiting", "the retried t")
        await node.workflow("m", host="p:a").signal("again")
        await until(lambda: kinds(node, "m").count("monitor") == 2, "m's second monitor")
        await t.signal("fail2")
        with pytest.raises(garrison.WorkflowFailed, match="told to fail: fail2"):
            await t.result()
        await until(lambda: kinds(node, "m").count("receive") == 3, "m's second EXIT")
    async with garrison.open_node(config=config) as node:
        await until(lambda: node.workflow("o", host="p:a").status() == "waiting", "o")
        await _heard_no_more(node, {"m": ["fail1", "fail2"], "o": ["fail1"]}, host="p:a")


async def test_a_resume_of_the_monitors_of_a_retried_workflow_reads_each_monitor_once(
        store_spec: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many workflows monitor the second attempt of t, which fails; the node restarts
    before they read its EXIT. Each one's replay looked whether its monitor was of an
    earlier attempt by reading all of t's monitors: n watchers read n * n rows at a
    resume, on the node's event loop (800 held it for seconds). Each reads its own."""
    n = 12
    async with garrison.open_node(store=store_spec) as node:
        store_type = type(node.hosts["workflows"].store)
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await _t_fails(node, 1)
        await _t_retried(node)
        for k in range(n):
            await node.start_workflow(ops_app.monitors_then_reads, "workflows/t", id=f"w{k}")
        await until(lambda: all("monitor" in _kinds(node, f"w{k}") for k in range(n)),
                    "the monitors")
        await _t_fails(node, 2)
    read: list[Pid] = []
    monitors = store_type.monitors

    def counted(self: Any, *args: Any, **kwargs: Any) -> list[Pid]:
        rows: list[Pid] = monitors(self, *args, **kwargs)
        read.extend(rows)
        return rows

    monkeypatch.setattr(store_type, "monitors", counted)
    async with garrison.open_node(store=store_spec) as node:
        for k in range(n):
            await node.workflow(f"w{k}").signal("go")
        with trio.fail_after(60):
            for k in range(n):
                assert await node.workflow(f"w{k}").result() == \
                    "RuntimeError: told to fail: fail2"
    assert len(read) <= n


async def test_a_monitor_made_before_the_node_heard_of_a_retry_hears_of_the_new_end_only(
        tmp_path: Path, autojump_clock: Any) -> None:
    """t fails on the node, and is retried elsewhere (a tool, another node of a
    cluster): before the node hears of it, workflow n monitors t. The store held t
    retried, so the monitor's row was written for the new attempt, but the node's
    memory of the first failure was n's EXIT at once: n read a failure t had left
    behind, then, the row being of the new attempt, a second EXIT when that attempt
    failed. n hears of the new attempt's end, once."""
    from garrison import _store_tools
    from garrison.hosts.workflow._recovery import refresh

    spec = str(tmp_path / "store.db")
    async with garrison.open_node(store=spec) as node:
        host = node.hosts["workflows"]
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await _t_fails(node, 1)
        # (written with the node's own store: nothing tells the node, as nothing has
        # yet when a tool's doorbell or another node's notice is on its way)
        _store_tools.retry(host.store, "t")
        await node.start_workflow(ops_app.monitors_each_attempt, "workflows/t", 1, id="n")
        await until(lambda: "monitor" in _kinds(node, "n"), "n's monitor")
        await trio.sleep(1)
        refresh(host, "t")  # (the node hears of the retry)
        await until(lambda: node.workflow("t").status() == "waiting", "the retried t")
        await _t_fails(node, 2)
        await until(lambda: _kinds(node, "n").count("receive") == 1, "n's EXIT")
        await trio.sleep(1)
        assert host.store.pending_messages("n") == []
        await node.workflow("n").signal("done")
        with trio.fail_after(60):
            assert await node.workflow("n").result() == ["RuntimeError: told to fail: fail2"]


async def test_a_retry_failing_again_with_a_monitor_of_a_host_gone_from_the_config_fails(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A workflow monitors a process of a process host, and fails; the host is taken
    out of the configuration, and the workflow is retried with the same code, whose
    replay fails again before any live operation (which drops that monitor). Its end
    looked the monitored process's host up among the node's to release the monitor:
    ``KeyError``, and the handle's ``result()`` raised ``StoreError`` (the end "could
    not be recorded", though it was). It fails as it did."""
    config = tmp_path / "app.yaml"
    entries = ("  - {name: procs, kind: process.host}\n",
               "  - {name: flows, kind: workflow.host, store: store.db}\n")
    config.write_text('version: "1.0"\nnamespace: p\nentries:\n' + "".join(entries))
    async with garrison.open_node(config=str(config)) as node:
        pid = await node.spawn(ops_app.fails_on_go, host="p:procs")
        await node.start_workflow(ops_app.monitors_then_fails, str(pid), id="w",
                                  host="p:flows")
        handle = node.workflow("w", host="p:flows")
        await until(lambda: handle.status() == "waiting", "w")
        await handle.signal("stop")
        with pytest.raises(garrison.WorkflowFailed, match="told to fail: stop"):
            await handle.result()
    config.write_text('version: "1.0"\nnamespace: p\nentries:\n' + entries[1])
    async with garrison.open_node(config=str(config)) as node:
        handle = node.workflow("w", host="p:flows")
        await handle.retry()
        with trio.fail_after(60), \
                pytest.raises(garrison.WorkflowFailed, match="told to fail: stop"):
            await handle.result()


async def _m_heard_t_fail(node: garrison.Node) -> None:
    """Start t, and m monitoring it (``monitors_each_attempt``, twice); t fails
    (``fail1``), and m has heard it: its first EXIT."""
    await node.start_workflow(ops_app.fails_when_told, id="t")
    await node.start_workflow(ops_app.monitors_each_attempt, "workflows/t", 2, id="m")
    await until(lambda: "monitor" in _kinds(node, "m"), "m's monitor")
    await _t_fails(node, 1)
    await until(lambda: _kinds(node, "m").count("receive") == 1, "m's first EXIT")


async def _m_heard_both(node: garrison.Node) -> None:
    """m (``_m_heard_t_fail``) has heard t's failure twice, once a monitor, and nothing
    waits in its inbox: told ``done``, it returns both."""
    await until(lambda: _kinds(node, "m").count("receive") == 3, "m's second EXIT")
    await node.workflow("m").signal("done")
    with trio.fail_after(60):
        assert await node.workflow("m").result() == ["RuntimeError: told to fail: fail1"] * 2
    assert node.hosts["workflows"].store.pending_messages("m") == []


async def test_a_second_monitor_of_an_ended_workflow_gets_its_own_exit(
        store_spec: str, autojump_clock: Any) -> None:
    """Workflow m monitors t, hears that it failed, and monitors it again (t still
    failed: not retried). The EXIT of that end has one id per watcher and attempt, and
    m's second monitor was given it again: dropped as delivered, m waited for ever. As
    each monitor of a dead process gets its own EXIT, so does this one, once, also
    after a restart."""
    async with garrison.open_node(store=store_spec) as node:
        store = node.hosts["workflows"].store
        await _m_heard_t_fail(node)
        await node.workflow("m").signal("again")
        await until(lambda: _kinds(node, "m").count("receive") == 3, "m's second EXIT")
        await trio.sleep(1)
        assert store.pending_messages("m") == []
    async with garrison.open_node(store=store_spec) as node:
        store = node.hosts["workflows"].store
        await until(lambda: node.workflow("m").status() == "waiting", "m resumed")
        await trio.sleep(1)
        assert store.pending_messages("m") == []
        await node.workflow("m").signal("done")
        with trio.fail_after(60):
            assert await node.workflow("m").result() == ["RuntimeError: told to fail: fail1"] * 2


async def test_a_second_monitor_of_an_ended_workflow_gets_its_exit_after_a_crash(
        store_spec: str, autojump_clock: Any) -> None:
    """As above, but the node stops (a crash, here a commit the store fails) as m's
    second monitor is written. The monitor's record and its own EXIT were two writes:
    with the record committed and not the EXIT, m's replay looked at t under the id per
    watcher and attempt, which m had, and m waited for ever. Both are one write: the
    replay finds both, or runs the monitor again."""
    async with garrison.open_node(store=store_spec) as node:
        store = node.hosts["workflows"].store
        real_commit, failed = store.commit, []

        async def commit(tx: Transaction) -> Any:
            if not failed and any(op is Op.DELIVER and params[1].startswith("workflows/t#")
                                  for op, params in tx.ops):
                failed.append(tx)
                raise garrison.StoreError(None, "the node dies before this write")
            return await real_commit(tx)

        store.commit = commit
        await _m_heard_t_fail(node)
        await node.workflow("m").signal("again")
        await until(lambda: bool(failed), "m's second monitor")
        await trio.sleep(1)
    async with garrison.open_node(store=store_spec) as node:
        await _m_heard_both(node)


async def test_a_second_monitor_right_after_a_restart_gets_its_exit(
        store_spec: str, autojump_clock: Any) -> None:
    """m monitored t and had its EXIT; the node restarts, and m, its replay done, at
    once monitors t again (the message it waited for came while the node was down).
    Its replayed monitor was still held (its recovery's look at t not written yet), so
    the second monitor got no EXIT of its own: m waited for ever. It gets one."""
    from garrison.persistence import open_store

    async with garrison.open_node(store=store_spec) as node:
        await _m_heard_t_fail(node)
        await trio.sleep(1)
    store = open_store(store_spec)
    try:
        store.write(Transaction().deliver("m", "again", msg_id="again-1"))
    finally:
        store.close()
    async with garrison.open_node(store=store_spec) as node:
        await _m_heard_both(node)


@pytest.mark.parametrize("o_runs", ["here", "elsewhere"])
async def test_the_monitors_an_older_nodes_retry_left_hear_nothing_of_the_new_end(
        store_spec: str, o_runs: str, autojump_clock: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A node of an older garrison (a rolling upgrade) retries the failed t without
    forgetting its monitors (its retry knew no ``forget_monitors``): o, which monitored
    only the first attempt and heard of its failure, kept its row, and the end of the
    retried run reached it as a second EXIT it never asked for. It hears nothing more;
    m, which monitored t again after the retry, hears of it. ``elsewhere``: the EXIT is
    written into o's inbox as for a workflow the node does not run (another node's,
    or one still replaying), and o's resume after a restart drops it."""
    from garrison.hosts.workflow._instance import WorkflowInstance

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await node.start_workflow(ops_app.monitors_each_attempt, "workflows/t", 2, id="m")
        await node.start_workflow(ops_app.monitors_each_attempt, "workflows/t", 1, id="o")
        await until(lambda: "monitor" in _kinds(node, "m") and "monitor" in _kinds(node, "o"),
                    "both monitors")
        await _t_fails(node, 1)
        await until(lambda: _kinds(node, "o").count("receive") == 1, "o's EXIT")
        with monkeypatch.context() as old:  # (an older node's retry)
            old.setattr(Transaction, "forget_monitors", lambda self, wid: self)
            await node.workflow("t").retry()
        await until(lambda: node.workflow("t").status() == "waiting", "the retried t")
        await node.workflow("m").signal("again")
        await until(lambda: _kinds(node, "m").count("monitor") == 2, "m's second monitor")
        with monkeypatch.context() as there:
            if o_runs == "elsewhere":
                there.setattr(WorkflowInstance, "asks_nothing_of", lambda *args: False)
            await _t_fails(node, 2)
            await until(lambda: _kinds(node, "m").count("receive") == 3, "m's second EXIT")
        if o_runs == "here":
            await _heard_no_more(node, {"m": ["fail1", "fail2"], "o": ["fail1"]})
            return
        assert [r.msg_id for r in node.hosts["workflows"].store.pending_messages("o")] == [
            "t#exit#2@o"]
    async with garrison.open_node(store=store_spec) as node:
        await until(lambda: node.workflow("o").status() == "waiting", "o resumed")
        await _heard_no_more(node, {"m": ["fail1", "fail2"], "o": ["fail1"]})



async def _links_to_and_traps(to: str) -> list[str]:
    """Trap links, link to the workflow ``to`` and read one ``LINK_DOWN``; at a message,
    return it and whatever other event came since."""
    from garrison import process

    process.set_options(trap_links=True)
    process.link(to)
    heard = []
    event = await process.events().receive()
    heard.append(f"{event.kind} {event.error}")
    await process.inbox().receive()
    while (event := process.events().try_receive()) is not None:
        heard.append(f"{event.kind} {event.error}")
    return heard


@pytest.mark.parametrize("restart", [False, True])
async def test_a_link_of_the_first_attempt_hears_nothing_of_the_retried_runs_failure(
        store_spec: str, restart: bool, autojump_clock: Any) -> None:
    """Workflow b, trapping, links to workflow t and reads the LINK_DOWN of its failure;
    t is retried and fails again. b's link was spent by that LINK_DOWN and it heard
    nothing more; after a restart (its replay made the link again, on t's side too)
    the retried run's failure was a second LINK_DOWN of one link. Nothing more now."""
    async def fails_again(node: garrison.Node) -> None:
        await until(lambda: node.workflow("b").status() == "waiting", "b waits")
        await until(lambda: node.workflow("t").status() == "waiting", "t waits")
        await trio.sleep(1)
        await _t_fails(node, 2)
        await trio.sleep(1)
        await node.workflow("b").signal("done")
        with trio.fail_after(60):
            assert await node.workflow("b").result() == [
                "LINK_DOWN RuntimeError: told to fail: fail1"]

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await node.start_workflow(_links_to_and_traps, "workflows/t", id="b")
        await until(lambda: "link" in _kinds(node, "b"), "b's link")
        await _t_fails(node, 1)
        await until(lambda: _kinds(node, "b").count("receive") == 1, "b's LINK_DOWN")
        await node.workflow("t").retry()
        if not restart:
            await fails_again(node)
    if restart:
        async with garrison.open_node(store=store_spec) as node:
            await fails_again(node)


async def _traps_a_link_then_fails(to: str) -> None:
    """Trap links, link to the workflow ``to`` and read one ``LINK_DOWN``; then fail at
    a message."""
    from garrison import process

    process.set_options(trap_links=True)
    process.link(to)
    await process.events().receive()
    msg = await process.inbox().receive()
    raise RuntimeError(f"told to fail: {msg.topic}")


@pytest.mark.parametrize("restart", [False, True])
async def test_a_link_spent_by_a_failure_is_not_made_again_with_the_retried_run(
        store_spec: str, restart: bool, autojump_clock: Any) -> None:
    """Workflow p, trapping, links to workflow t and reads the LINK_DOWN of its failure:
    the link is gone. t is retried; then p fails. t runs on: nothing links it to p.
    After a restart before p failed, p's replay made the link again on t's side, and
    p's failure ended the retried t (LinkedProcessFailed), which never linked to p."""
    async def fails(node: garrison.Node) -> None:
        await until(lambda: node.workflow("p").status() == "waiting", "p waits")
        await until(lambda: node.workflow("t").status() == "waiting", "t waits")
        await trio.sleep(1)
        await node.workflow("p").signal("boom")
        with pytest.raises(garrison.WorkflowFailed, match="told to fail: boom"):
            await node.workflow("p").result()
        await trio.sleep(1)
        assert node.workflow("t").status() == "waiting"
        await _t_fails(node, 2)

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await node.start_workflow(_traps_a_link_then_fails, "workflows/t", id="p")
        await until(lambda: "link" in _kinds(node, "p"), "p's link")
        await _t_fails(node, 1)
        await until(lambda: _kinds(node, "p").count("receive") == 1, "p's LINK_DOWN")
        await node.workflow("t").retry()
        if not restart:
            await fails(node)
    if restart:
        async with garrison.open_node(store=store_spec) as node:
            await fails(node)


async def _spawns_by_id_and_reads_its_exit(wid: str) -> str:
    """Spawn the workflow ``wid`` by id (it may exist) and read its EXIT."""
    from garrison import process

    await process.spawn(ops_app.fails_when_told, id=wid)
    event = await process.events().receive()
    return str(event.error)


async def test_a_workflow_that_spawns_a_retried_workflow_by_id_hears_of_its_end(
        store_spec: str, autojump_clock: Any) -> None:
    """Workflow s spawns by id the workflow t, which failed and was retried: the start
    returns the running t, and t's EXIT reaches s, as a child's reaches its spawner,
    though s made no monitor of it (its end leaves out only a watcher that heard of an
    earlier attempt and asked for nothing since)."""
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await _t_fails(node, 1)
        await _t_retried(node)
        await node.start_workflow(_spawns_by_id_and_reads_its_exit, "t", id="s")
        await until(lambda: "spawn" in _kinds(node, "s"), "s's spawn")
        await trio.sleep(1)
        await _t_fails(node, 2)
        with trio.fail_after(60):
            assert await node.workflow("s").result() == "RuntimeError: told to fail: fail2"


def test_the_ends_a_workflow_heard_of_are_kept_bounded_and_newest_first() -> None:
    """``heard_end`` keeps at least the last ``ENDS_HEARD`` workflow ends, and never
    more than twice as many (a parent of many children in a ``continue_as_new`` loop
    runs for ever); one of a plain process is not kept."""
    import types

    from garrison import EventKind
    from garrison.hosts.workflow._core import ENDS_HEARD, WorkflowCore

    class Watcher:
        __slots__ = ("asks_replayed", "check_lost", "ends_read", "node")
        heard_end = WorkflowCore.heard_end

    w = Watcher()
    w.ends_read = w.asks_replayed = None
    w.check_lost = False
    w.node = types.SimpleNamespace(hosts={"workflows": types.SimpleNamespace(durable=True),
                                          "processes": types.SimpleNamespace(durable=False)})
    w.heard_end(EventKind.EXIT, Pid("processes", "1.1"))
    assert w.ends_read is None
    pids = [Pid("workflows", f"w{k}") for k in range(5 * ENDS_HEARD)]
    for pid in pids:
        w.heard_end(EventKind.EXIT, pid)
        assert len(w.ends_read) <= 2 * ENDS_HEARD
    assert all((EventKind.EXIT, pid) in w.ends_read for pid in pids[-ENDS_HEARD:])



@pytest.mark.parametrize("restart", ["none", "before_the_read", "after_the_read"])
async def test_a_monitor_made_again_before_the_first_exit_was_read_hears_the_retried_end(
        store_spec: str, restart: str, autojump_clock: Any) -> None:
    """Workflow w monitors t; t fails (its EXIT waits in w's inbox), is retried, and w
    monitors it again before it reads that EXIT: the second monitor is of the retried
    run, and its end reaches w, across a restart too (w's replay reads the first EXIT
    after the second monitor in its journal: that monitor is not spent by it)."""
    async def fails_again(node: garrison.Node) -> None:
        await until(lambda: node.workflow("w").status() == "waiting", "w waits")
        await until(lambda: node.workflow("t").status() == "waiting", "t waits")
        if restart != "after_the_read":
            await node.workflow("w").signal("read")
            await until(lambda: _kinds(node, "w").count("receive") == 3, "w read fail1")
        await trio.sleep(1)
        await _t_fails(node, 2)
        with trio.fail_after(60):
            assert await node.workflow("w").result() == [
                "RuntimeError: told to fail: fail1", "RuntimeError: told to fail: fail2"]

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await node.start_workflow(ops_app.monitors_again_before_reading, "workflows/t",
                                    id="w")
        await until(lambda: "monitor" in _kinds(node, "w"), "w's monitor")
        await _t_fails(node, 1)
        await _t_retried(node)
        await node.workflow("w").signal("go")
        await until(lambda: _kinds(node, "w").count("monitor") == 2, "w's second monitor")
        if restart == "after_the_read":
            await node.workflow("w").signal("read")
            await until(lambda: _kinds(node, "w").count("receive") == 3, "w read fail1")
        if restart == "none":
            await fails_again(node)
    if restart != "none":
        async with garrison.open_node(store=store_spec) as node:
            await fails_again(node)


async def _links_again_before_reading(to: str) -> list[str]:
    """Trap links and link to the workflow ``to``; at a message (``to`` has failed and
    been retried by then, its LINK_DOWN waits unread) link to it again, and at another
    read both LINK_DOWNs."""
    from garrison import process

    process.set_options(trap_links=True)
    process.link(to)
    await process.inbox().receive()
    process.link(to)
    await process.inbox().receive()
    heard = []
    for _ in range(2):
        event = await process.events().receive()
        heard.append(f"{event.kind} {event.error}")
    return heard


@pytest.mark.parametrize("restart", [False, True])
async def test_a_link_made_again_before_the_first_link_down_was_read_hears_the_retried_end(
        store_spec: str, restart: bool, autojump_clock: Any) -> None:
    """As above with a trapping link: w links to t again before it reads the LINK_DOWN
    of t's first failure. The new link is to the retried run; after a restart w's
    replay makes it again, on t's side too, and t's second failure reaches w."""
    async def fails_again(node: garrison.Node) -> None:
        await until(lambda: node.workflow("w").status() == "waiting", "w waits")
        await until(lambda: node.workflow("t").status() == "waiting", "t waits")
        await trio.sleep(1)
        await _t_fails(node, 2)
        with trio.fail_after(60):
            assert await node.workflow("w").result() == [
                "LINK_DOWN RuntimeError: told to fail: fail1",
                "LINK_DOWN RuntimeError: told to fail: fail2"]

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(ops_app.fails_when_told, id="t")
        await node.start_workflow(_links_again_before_reading, "workflows/t", id="w")
        await until(lambda: "link" in _kinds(node, "w"), "w's link")
        await _t_fails(node, 1)
        await _t_retried(node)
        await node.workflow("w").signal("go")
        await until(lambda: _kinds(node, "w").count("link") == 2, "w's second link")
        await node.workflow("w").signal("read")
        await until(lambda: _kinds(node, "w").count("receive") == 3, "w read fail1")
        if not restart:
            await fails_again(node)
    if restart:
        async with garrison.open_node(store=store_spec) as node:
            await fails_again(node)



async def _links_then_fails_when_told(to: str) -> None:
    """Link to ``to``; fail at the message ``fail<attempt>`` (as ``fails_when_told``)."""
    from garrison import process, workflow

    process.link(to)
    while True:
        msg = await process.inbox().receive()
        if msg.topic == f"fail{workflow.info().attempt}":
            raise RuntimeError(f"told to fail: {msg.topic}")


#: set by a test: what the next run of ``_traps_reads_then_fails`` waits for first
_REPLAY_GATE: list[trio.Event] = []


async def _traps_reads_then_fails() -> None:
    """Trap links and read one ``LINK_DOWN``; then fail at a message."""
    from garrison import process

    if _REPLAY_GATE:
        await _REPLAY_GATE.pop().wait()  # (unjournaled: holds its replay back)
    process.set_options(trap_links=True)
    await process.events().receive()
    msg = await process.inbox().receive()
    raise RuntimeError(f"told to fail: {msg.topic}")


@pytest.mark.parametrize("restart", [False, True])
async def test_a_link_the_retried_run_made_again_is_kept_by_the_other_sides_replay(
        store_spec: str, restart: bool, autojump_clock: Any) -> None:
    """Workflow t links to w, which traps and reads the LINK_DOWN of t's failure; t is
    retried, and its replay makes its link to w again. w fails: t, linked, fails too.
    After a restart where t's recovery made that link on w's side while w still
    replayed (held back here), w's recovery took it for the one t's first failure
    spent, and w's failure reached nothing: t ran on, linked to nothing."""
    async def w_fails(node: garrison.Node) -> None:
        await until(lambda: node.workflow("w").status() == "waiting", "w waits")
        await until(lambda: node.workflow("t").status() == "waiting", "t waits")
        await trio.sleep(1)
        await node.workflow("w").signal("boom")
        with pytest.raises(garrison.WorkflowFailed, match="told to fail: boom"):
            await node.workflow("w").result()
        with pytest.raises(garrison.WorkflowFailed, match="LinkedProcessFailed"):
            with trio.fail_after(60):
                await node.workflow("t").result()

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(_traps_reads_then_fails, id="w")
        await until(lambda: node.workflow("w").status() == "waiting", "w waits")
        await node.start_workflow(_links_then_fails_when_told, "workflows/w", id="t")
        await until(lambda: "link" in _kinds(node, "t"), "t's link")
        await _t_fails(node, 1)
        await until(lambda: _kinds(node, "w").count("receive") == 1, "w's LINK_DOWN")
        await node.workflow("t").retry()
        if not restart:
            await w_fails(node)
    if restart:
        gate = trio.Event()
        _REPLAY_GATE.append(gate)
        async with garrison.open_node(store=store_spec) as node:
            host = node.hosts["workflows"]
            await until(lambda: "t" in host.active and not host.active["t"].check_lost
                        and "w" in host.active, "t's recovery, w loaded")
            assert host.active["w"].check_lost  # (w replays still)
            gate.set()
            await w_fails(node)


def test_the_attempt_an_exit_id_names_is_read_whatever_the_ids_hold() -> None:
    """``exit_attempt`` reads back the attempt ``exit_id`` wrote, whatever either
    workflow id holds (a schedule's workflows are named ``<id>@<tick>``), at any
    number of digits; an id of another form or another watcher's is the first's."""
    from garrison.hosts.workflow._inbox import exit_attempt, exit_id

    for ended in ["t", "a@b", "x#exit#5", "workflows/t", "t#exit"]:
        for watcher in ["w", "nightly@1765000000", "a@b@c", "w#exit#3", "@"]:
            for attempt in [1, 2, 10, 123]:
                msg_id = exit_id(ended, watcher, attempt)
                assert exit_attempt(msg_id, watcher) == attempt, (msg_id, watcher)
    assert exit_attempt("t#exit#2@w", "v") == 1
    assert exit_attempt("workflows/t#EXIT@w#12", "w#12") == 1
    assert exit_attempt("t#exit#\u00b2@w", "w") == 1  # (a digit to str.isdigit, not int)


async def _spawns_by_id_twice_then_reads(wid: str) -> list[str]:
    """Spawn the workflow ``wid`` by id; at a message (it has failed and been retried,
    its EXIT waits unread) spawn it by id again; at another read two EXITs."""
    from garrison import process

    await process.spawn(ops_app.fails_when_told, id=wid)
    await process.inbox().receive()
    await process.spawn(ops_app.fails_when_told, id=wid)
    await process.inbox().receive()
    heard = []
    for _ in range(2):
        event = await process.events().receive()
        heard.append(str(event.error))
    return heard


@pytest.mark.parametrize("restart", [False, True])
async def test_a_spawn_by_id_again_before_the_first_exit_was_read_hears_the_retried_end(
        store_spec: str, restart: bool, autojump_clock: Any) -> None:
    """As a monitor made again before the read: s spawns t by id, t fails and is
    retried, s spawns it by id again (the running t) before it reads the first EXIT.
    The retried run's end reaches s, across a restart too."""
    async def fails_again(node: garrison.Node) -> None:
        await until(lambda: node.workflow("s").status() == "waiting", "s waits")
        await until(lambda: node.workflow("t").status() == "waiting", "t waits")
        await trio.sleep(1)
        await _t_fails(node, 2)
        with trio.fail_after(60):
            assert await node.workflow("s").result() == [
                "RuntimeError: told to fail: fail1", "RuntimeError: told to fail: fail2"]

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(_spawns_by_id_twice_then_reads, "t", id="s")
        await until(lambda: node.workflow("t").status() == "waiting", "t waits")
        await _t_fails(node, 1)
        await _t_retried(node)
        await node.workflow("s").signal("go")
        await until(lambda: _kinds(node, "s").count("spawn") == 2, "s's second spawn")
        await node.workflow("s").signal("read")
        await until(lambda: _kinds(node, "s").count("receive") == 3, "s read fail1")
        if not restart:
            await fails_again(node)
    if restart:
        async with garrison.open_node(store=store_spec) as node:
            await fails_again(node)


async def _links_when_told_and_fails_when_told(to: str) -> None:
    """Link to the workflow ``to`` at the message ``link``; fail at ``fail<attempt>``."""
    from garrison import process, workflow

    while True:
        msg = await process.inbox().receive()
        if msg.topic == "link":
            process.link(to)
        elif msg.topic == f"fail{workflow.info().attempt}":
            raise RuntimeError(f"told to fail: {msg.topic}")


async def _traps_a_link_reads_late_then_fails(to: str) -> None:
    """Trap links and link to the workflow ``to``; at a message read one ``LINK_DOWN``,
    then fail at the next message."""
    from garrison import process

    process.set_options(trap_links=True)
    process.link(to)
    await process.inbox().receive()
    event = await process.events().receive()
    msg = await process.inbox().receive()
    raise RuntimeError(f"told to fail: {msg.topic} after {event.error}")


@pytest.mark.parametrize("restart", [False, True])
async def test_a_link_the_retried_run_made_before_the_first_link_down_was_read_holds(
        store_spec: str, restart: bool, autojump_clock: Any) -> None:
    """Workflow w, trapping, links to workflow t once; t fails and is retried, and its
    retried run links to w before w read the first LINK_DOWN (a link w's journal does
    not show). Then w fails: its failure ends the retried t, live and after a restart
    (w's replay, which made one link of t, reads that LINK_DOWN: the link t made
    again is not taken as spent)."""
    async def fails(node: garrison.Node) -> None:
        await until(lambda: node.workflow("w").status() == "waiting", "w waits")
        await until(lambda: node.workflow("t").status() == "waiting", "t waits")
        await trio.sleep(1)
        await node.workflow("w").signal("boom")
        with pytest.raises(garrison.WorkflowFailed, match="told to fail: boom after"):
            await node.workflow("w").result()
        with trio.fail_after(60):
            with pytest.raises(garrison.WorkflowFailed, match="told to fail: boom after"):
                await node.workflow("t").result()

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(_links_when_told_and_fails_when_told, "workflows/w",
                                  id="t")
        await node.start_workflow(_traps_a_link_reads_late_then_fails, "workflows/t",
                                  id="w")
        await until(lambda: "link" in _kinds(node, "w"), "w's link")
        await _t_fails(node, 1)
        await node.workflow("t").retry()
        await until(lambda: node.workflow("t").status() == "waiting", "t waits")
        await node.workflow("t").signal("link")
        await until(lambda: "link" in _kinds(node, "t"), "t's link")
        await node.workflow("w").signal("read")
        await until(lambda: _kinds(node, "w").count("receive") == 2, "w's LINK_DOWN")
        if not restart:
            await fails(node)
    if restart:
        async with garrison.open_node(store=store_spec) as node:
            await fails(node)



# ------------------------------------------------------------------ a blocked one's watchers
async def _watch_end(to: str, heard: list[str], link: bool) -> None:
    """Monitor (or, trapping, link to) ``to``; what its end says, into ``heard``."""
    from garrison import process
    if link:
        process.set_options(trap_links=True)
        process.link(to)
    else:
        process.monitor(to)
    event = await process.events().receive()
    heard.append(f"{event.kind.name}: {event.error}")


async def _blocked_and_watched(node: garrison.Node, link: bool = False
                               ) -> tuple[Any, list[str]]:
    handle = node.workflow("v")
    with pytest.raises(garrison.NonDeterminismError):
        await handle.result()
    heard: list[str] = []
    await node.spawn(_watch_end, str(handle.pid), heard, link)
    await trio.sleep(1)
    assert heard == []  # (blocked: its attempt has not ended)
    return handle, heard


async def test_a_process_monitoring_a_blocked_workflow_hears_its_terminate(
        autojump_clock: Any) -> None:
    """A plain process monitored a blocked workflow of its node: the monitor was taken
    (no ``noproc`` EXIT) but kept nowhere, and the terminate that ended the workflow
    told the process nothing: it waited for ever."""
    store = _blocked_store()
    async with garrison.open_node(store=store) as node:
        handle, heard = await _blocked_and_watched(node)
        await handle.terminate("given up")
        await until(lambda: heard, "the monitor's EXIT")
        assert heard == ["EXIT: Terminated: given up"]
    store.close()


@pytest.mark.parametrize("link", [False, True])
async def test_a_process_watching_a_blocked_workflow_hears_the_end_of_its_retried_attempt(
        autojump_clock: Any, link: bool) -> None:
    """The blocked attempt never ended: a retry drops it and runs the next, whose end
    is the end of the workflow the process monitors (or links to). The retry dropped
    the blocked instance with the process's watch: the retried attempt's end (here a
    terminate: a linked failure) reached nobody."""
    store = _blocked_store()
    async with garrison.open_node(store=store) as node:
        handle, heard = await _blocked_and_watched(node, link)
        ops_app.USE_OLD_STEP = True
        await handle.retry()
        await until(lambda: handle.status() == "waiting", "the retried workflow to wait")
        await handle.terminate("after all")
        await until(lambda: heard, "the end of the retried attempt")
        kind = "LINK_DOWN" if link else "EXIT"
        assert heard == [f"{kind}: Terminated: after all"]
    store.close()



@pytest.mark.parametrize("slow_watcher", [False, True])
@pytest.mark.parametrize("link", [False, True])
async def test_a_process_watching_a_blocked_workflow_hears_a_tools_retry_and_terminate(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch, link: bool,
        slow_watcher: bool) -> None:
    """A tool retried the blocked workflow and terminated the retried attempt before
    the node looked (its refresh found the terminate's request): the blocked instance,
    dropped with its watchers before the request was looked at, told nobody of that
    end, and the process waited for ever. (``slow_watcher``: the node's wakeup watcher
    looks at the tool's write 0.3 s of real time after its ring, as on a loaded
    machine, where the wait for the end timed out in virtual time meanwhile.)"""
    from garrison import _store_tools
    from garrison.persistence import _file

    drain = _file.drain_doorbell

    def slowly(fd: int) -> None:
        time.sleep(0.3)
        drain(fd)

    path = str(tmp_path / "s.db")
    with SQLiteStore(path) as seed:
        seed.write(Transaction().create_workflow("v", "ops_app:versioned", [],
                                                 status="running")
                   .append_journal("v", 1, "activity", "ops_app:old_step",
                                   RawJson('{"ok": "old"}')))
    async with garrison.open_node(store=path) as node:
        handle, heard = await _blocked_and_watched(node, link)
        if slow_watcher:
            monkeypatch.setattr(_file, "drain_doorbell", slowly)
        ops_app.USE_OLD_STEP = True
        with SQLiteStore(path, lock=False) as tool:  # (another process's, at once)
            _store_tools.retry(tool, "v")
            assert _store_tools.ask_terminate(tool, "v", "at once") is not None
        await until(lambda: heard, "the end of the retried attempt")
        kind = "LINK_DOWN" if link else "EXIT"
        assert heard == [f"{kind}: Terminated: at once"]
        assert handle.status() == "failed"


@pytest.mark.parametrize("by", ["a retry", "a start"])
async def test_a_tools_terminate_landing_as_the_node_loads_the_workflow_ends_it(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        by: str) -> None:
    """A tool retried a blocked workflow (or started one); its terminate was written as
    the node's refresh of that wakeup loaded the workflow, after the refresh had read
    the inbox and before the load read it. The load kept the request as one it was
    ending by, but nothing ended it: the terminate's own wakeup then found it "seen
    before", and the workflow ran on (its watchers heard nothing) though terminated."""
    from garrison import _store_tools

    path = str(tmp_path / "s.db")
    with SQLiteStore(path) as seed:
        seed.write(Transaction().create_workflow("v", "ops_app:versioned", [],
                                                 status="running")
                   .append_journal("v", 1, "activity", "ops_app:old_step",
                                   RawJson('{"ok": "old"}')))
    async with garrison.open_node(store=path) as node:
        _handle, heard = await _blocked_and_watched(node, link=True)
        wid = "v" if by == "a retry" else "s"
        store = node.hosts["workflows"].store
        read, asked = store.pending_messages, []

        def terminated_meanwhile(of: str) -> Any:
            rows = read(of)
            if of == wid and not asked:  # (the refresh's read: the load's comes next)
                with SQLiteStore(path, lock=False) as tool:  # (another process's)
                    asked.append(_store_tools.ask_terminate(tool, wid, "meanwhile"))
            return rows

        monkeypatch.setattr(store, "pending_messages", terminated_meanwhile)
        ops_app.USE_OLD_STEP = True
        with SQLiteStore(path, lock=False) as tool:
            if by == "a retry":
                _store_tools.retry(tool, "v")
            else:
                _store_tools.start(tool, "ops_app:versioned", [], "s")
        await until(lambda: asked and node.workflow(wid).status() == "failed",
                    "the terminate to end it")
        if by == "a retry":
            await until(lambda: heard, "the end of the retried attempt")
            assert heard == ["LINK_DOWN: Terminated: meanwhile"]
        with pytest.raises(garrison.WorkflowFailed, match="Terminated: meanwhile"):
            await node.workflow(wid).result()


async def test_a_tools_terminate_landing_as_the_node_resumes_a_workflow_ends_it(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """7bca6cb's resume branch: a refresh of a workflow the store holds unfinished and
    the node does not run yet (one asked for before the node's resume got to it), a
    tool's terminate written between the refresh's read of its inbox and its load's.
    It ends without running, once; it is not marked running, nor left so."""
    from garrison import _store_tools
    from garrison.hosts.workflow._recovery import refresh

    path = str(tmp_path / "s.db")
    async with garrison.open_node(store=path) as node:
        host = node.hosts["workflows"]
        with SQLiteStore(path, lock=False) as tool:  # (unknown to the node: not resumed)
            tool.write(Transaction().create_workflow("r", "ops_app:versioned", [],
                                                     status="running"))
        store = host.store
        read, asked = store.pending_messages, []

        def terminated_meanwhile(of: str) -> Any:
            rows = read(of)
            if of == "r" and not asked:  # (the refresh's read: the load's comes next)
                with SQLiteStore(path, lock=False) as tool:
                    asked.append(_store_tools.ask_terminate(tool, "r", "meanwhile"))
            return rows

        monkeypatch.setattr(store, "pending_messages", terminated_meanwhile)
        ops_app.USE_OLD_STEP = True
        refresh(host, "r")
        assert asked
        await until(lambda: node.workflow("r").status() == "failed", "the terminate")
        with pytest.raises(garrison.WorkflowFailed, match="Terminated: meanwhile"):
            await node.workflow("r").result()
        await trio.sleep(5)  # (the terminate's own wakeup: seen before, nothing more)
        assert node.workflow("r").status() == "failed"
        assert [r.kind for r in node.workflow("r").history()] == []  # (it never ran)


async def _starts_linked(wid: str, target: Any, heard: list[str]) -> None:
    """Start workflow ``wid`` linked (its links trapped), then note how it ended."""
    from garrison import process
    process.set_options(trap_links=True)
    await process.spawn_linked(target, host="workflows", id=wid)
    event = await process.events().receive()
    heard.append(f"{event.kind.name}: {event.error}")


@pytest.mark.parametrize("wrote", ["a terminate", "a signal"])
async def test_what_a_tool_writes_as_the_node_commits_a_start_reaches_the_started_workflow(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        wrote: str) -> None:
    """A process of the node started ``s`` (linked); a tool wrote for it once the start
    had committed, and the node's refresh of that wakeup came before the start made its
    instance. A terminate was loaded by the refresh as a second instance, which ended
    unseen by the start's (the linked process heard nothing; or, replaced by the
    start's, it ended nothing); a signal waited for the next wakeup. The refresh leaves
    them to the start, which reads them once its instance is active."""
    import sqlite3

    from garrison import _store_tools

    path = str(tmp_path / "s.db")

    def woken() -> bool:  # (the node took the tool's wakeup)
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT count(*) FROM wakeups").fetchone()[0] == 0
        finally:
            conn.close()

    async with garrison.open_node(store=path) as node:
        host = node.hosts["workflows"]
        commit, wrote_it = type(host.store).commit, []

        async def written_meanwhile(self: Any, tx: Any) -> list[Any]:
            results = await commit(self, tx)
            if not wrote_it and any(op is Op.CREATE_WORKFLOW and params[0] == "s"
                                    for op, params in tx.ops):
                with SQLiteStore(path, lock=False) as tool:  # (another process's)
                    if wrote == "a terminate":
                        assert _store_tools.ask_terminate(tool, "s", "meanwhile")
                    else:
                        _store_tools.signal(tool, "s", "go", "meanwhile")
                    wrote_it.append(wrote)
                await until(woken, "the node's refresh of the tool's write")
                await trio.sleep(1)  # (before the start goes on)
            return results

        monkeypatch.setattr(type(host.store), "commit", written_meanwhile)
        heard: list[str] = []
        await node.spawn(_starts_linked, "s", ops_app.receives_forever, heard)
        await until(lambda: wrote_it and node.workflow("s").status() in ("completed",
                                                                          "failed"),
                    "the end of s")
        if wrote == "a terminate":
            await until(lambda: heard, "the end of s, heard")
            assert heard == ["LINK_DOWN: Terminated: meanwhile"]
            with pytest.raises(garrison.WorkflowFailed, match="Terminated: meanwhile"):
                await node.workflow("s").result()
            await trio.sleep(5)  # (the terminate's wakeup, read again: nothing more)
            assert node.workflow("s").status() == "failed"
        else:
            assert await node.workflow("s").result() == "received meanwhile"
        assert host.store.pending_messages("s") == []


async def test_a_tools_terminate_as_a_start_whose_answer_is_lost_commits_ends_it(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, a tool's terminate refreshed while the node committed a start; the
    start's commit landed, but its answer was lost (the start raises): no instance of
    the start's reads what the refresh left to it. The start reads it as it ends, as
    the refresh would have: the workflow ends, once, as terminated."""
    import sqlite3

    from garrison import _store_tools

    path = str(tmp_path / "s.db")

    def woken() -> bool:  # (the node took the tool's wakeup)
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT count(*) FROM wakeups").fetchone()[0] == 0
        finally:
            conn.close()

    async with garrison.open_node(store=path) as node:
        host = node.hosts["workflows"]
        commit = type(host.store).commit

        async def answer_lost(self: Any, tx: Any) -> list[Any]:
            results = await commit(self, tx)
            if any(op is Op.CREATE_WORKFLOW and params[0] == "s" for op, params in tx.ops):
                with SQLiteStore(path, lock=False) as tool:  # (another process's)
                    assert _store_tools.ask_terminate(tool, "s", "meanwhile")
                await until(woken, "the node's refresh of the tool's write")
                raise garrison.StoreError(path, "the commit's answer was lost")
            return results

        monkeypatch.setattr(type(host.store), "commit", answer_lost)
        with pytest.raises(garrison.StoreError, match="answer was lost"):
            await node.start_workflow(ops_app.receives_forever, id="s")
        monkeypatch.setattr(type(host.store), "commit", commit)
        with pytest.raises(garrison.WorkflowFailed, match="Terminated: meanwhile"):
            await node.workflow("s").result()
        await trio.sleep(5)  # (the terminate's wakeup, read again: nothing more)
        assert node.workflow("s").status() == "failed"
        assert node.workflow("s").history() == []  # (it never ran)
        assert host.store.pending_messages("s") == []


@pytest.mark.parametrize("failed", ["the store", "sqlite's own"])
@pytest.mark.parametrize("answer", ["given", "lost"])
async def test_a_failed_read_of_what_a_tool_wrote_as_a_start_committed_is_read_again(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        failed: str, answer: str) -> None:
    """As above, a tool's terminate refreshed while the node committed a start, left to
    the start; the start's read of it, once its instance was active, failed (the store's
    error, or SQLite's own, untranslated, as a read raises it). The wakeup was taken
    already: no next one comes. The start returns its pid all the same (its workflow
    runs), and the read is tried again as a wakeup's failed refresh is, so the terminate
    still ends it. (Warned of as "read at its next wakeup", it ran on for ever; SQLite's
    own error failed the start of a workflow that ran.) Its commit's answer lost, the
    start raises its own error, not the read's."""
    import sqlite3

    from garrison import _store_tools

    path = str(tmp_path / "s.db")

    def woken() -> bool:  # (the node took the tool's wakeup)
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT count(*) FROM wakeups").fetchone()[0] == 0
        finally:
            conn.close()

    async with garrison.open_node(store=path) as node:
        host = node.hosts["workflows"]
        commit, pending = type(host.store).commit, type(host.store).pending_messages
        armed: list[str] = []

        async def written_meanwhile(self: Any, tx: Any) -> list[Any]:
            results = await commit(self, tx)
            if not armed and any(op is Op.CREATE_WORKFLOW and params[0] == "s"
                                 for op, params in tx.ops):
                with SQLiteStore(path, lock=False) as tool:  # (another process's)
                    assert _store_tools.ask_terminate(tool, "s", "meanwhile")
                await until(woken, "the node's refresh of the tool's write")
                armed.append("the read after the start")
                if answer == "lost":
                    raise garrison.StoreError(path, "the commit's answer was lost")
            return results

        def fails_once(self: Any, wid: str) -> list[Any]:
            if wid == "s" and armed == ["the read after the start"]:
                armed.append("failed")
                if failed == "the store":
                    raise garrison.StoreError(path, "the read failed")
                raise sqlite3.OperationalError("disk I/O error")
            return pending(self, wid)

        monkeypatch.setattr(type(host.store), "commit", written_meanwhile)
        monkeypatch.setattr(type(host.store), "pending_messages", fails_once)
        if answer == "lost":
            with pytest.raises(garrison.StoreError, match="answer was lost"):
                await node.start_workflow(ops_app.receives_forever, id="s")
        else:
            pid = await node.start_workflow(ops_app.receives_forever, id="s")
            assert pid.id == "s"
        assert armed == ["the read after the start", "failed"]
        await trio.sleep(5)  # (the read, tried again; with none, s ran on for ever)
        with trio.fail_after(60), \
                pytest.raises(garrison.WorkflowFailed, match="Terminated: meanwhile"):
            await node.workflow("s").result()
        assert node.workflow("s").status() == "failed"
        assert host.store.pending_messages("s") == []


async def test_a_process_watching_a_blocked_workflow_keeps_its_watch_past_a_failed_read(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool's retry of the blocked workflow, whose refresh (the node's wakeup
    watcher's) failed to read the store after it dropped the blocked instance: the
    refresh tried again loaded the retried attempt without the monitor, whose end then
    reached nobody."""
    from garrison import _store_tools
    from garrison._errors import StoreError

    path = str(tmp_path / "s.db")
    with SQLiteStore(path) as seed:
        seed.write(Transaction().create_workflow("v", "ops_app:versioned", [],
                                                 status="running")
                   .append_journal("v", 1, "activity", "ops_app:old_step",
                                   RawJson('{"ok": "old"}')))
    async with garrison.open_node(store=path) as node:
        handle, heard = await _blocked_and_watched(node)
        store = node.hosts["workflows"].store
        read, failed = store.pending_messages, []

        def fails_once(wid: str) -> Any:
            if wid == "v" and not failed:
                failed.append(wid)
                raise StoreError(path, "out of reach")
            return read(wid)

        monkeypatch.setattr(store, "pending_messages", fails_once)
        ops_app.USE_OLD_STEP = True
        with SQLiteStore(path, lock=False) as tool:  # (another process's)
            _store_tools.retry(tool, "v")
        await until(lambda: handle.status() == "waiting", "the retried workflow to wait")
        assert failed
        await handle.terminate("after all")
        await until(lambda: heard, "the end of the retried attempt")
        assert heard == ["EXIT: Terminated: after all"]


async def test_a_tools_retry_landing_as_a_refresh_loads_a_terminated_workflow_runs_it(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh of a blocked workflow the node does not hold found a tool's terminate
    in its inbox; a tool's retry landed between that read and the load's, and dropped
    the request (it asked nothing of the new attempt). The load found no request, and
    the workflow, loaded as the refresh had read it, was ended unrun all the same: the
    retried attempt was written ``failed``, ``Terminated: terminated``, asked by nobody,
    the retry lost. It is read again instead: the retried attempt runs."""
    from garrison import _store_tools
    from garrison.hosts.workflow._recovery import refresh

    path = str(tmp_path / "s.db")
    async with garrison.open_node(store=path) as node:
        host = node.hosts["workflows"]
        with SQLiteStore(path, lock=False) as tool:  # (unknown to the node: not resumed)
            tool.write(Transaction().create_workflow("b", "ops_app:versioned", [],
                                                     status="blocked")
                       .append_journal("b", 1, "activity", "ops_app:old_step",
                                       RawJson('{"ok": "old"}')))
            assert _store_tools.ask_terminate(tool, "b", "meanwhile")
        store = host.store
        read, retried = store.pending_messages, []

        def retried_meanwhile(of: str) -> Any:
            rows = read(of)
            if of == "b" and not retried:  # (the refresh's read: the load's comes next)
                with SQLiteStore(path, lock=False) as tool:
                    retried.append(_store_tools.retry(tool, "b"))
            return rows

        monkeypatch.setattr(store, "pending_messages", retried_meanwhile)
        ops_app.USE_OLD_STEP = True
        refresh(host, "b")
        assert retried
        await until(lambda: node.workflow("b").status() == "waiting", "the retried run")
        assert store.get_workflow("b").attempt == 2
        await node.workflow("b").promise("go").resolve(1)
        assert await node.workflow("b").result() == "old"
        assert node.workflow("b").status() == "completed"


@pytest.mark.parametrize("start", ["queued", "started twice"])
async def test_a_tools_terminate_as_a_queued_or_doubled_start_commits_ends_it_once(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        start: str) -> None:
    """0d74329's deferred read, checked on two more starts (it holds): a start that
    queues (the host full: its instance held, not run), and a second start of the same
    id made while the first commits (it waits for it). A tool's terminate refreshed as
    the first start committed ends the workflow once, unrun; the linked process hears
    it; the second start gets the same pid."""
    import sqlite3

    from garrison import _store_tools

    path = str(tmp_path / "s.db")

    def woken() -> bool:  # (the node took the tool's wakeup)
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT count(*) FROM wakeups").fetchone()[0] == 0
        finally:
            conn.close()

    async with garrison.open_node(store=path,
                                  max_concurrent=1 if start == "queued" else None) as node:
        host = node.hosts["workflows"]
        if start == "queued":
            await node.start_workflow(ops_app.receives_forever, id="hog")
        commit, second = type(host.store).commit, []

        async def start_again() -> None:
            second.append(await node.start_workflow(ops_app.receives_forever, id="s"))

        async def written_meanwhile(self: Any, tx: Any) -> list[Any]:
            results = await commit(self, tx)
            if any(op is Op.CREATE_WORKFLOW and params[0] == "s" for op, params in tx.ops):
                with SQLiteStore(path, lock=False) as tool:  # (another process's)
                    assert _store_tools.ask_terminate(tool, "s", "meanwhile")
                await until(woken, "the node's refresh of the tool's write")
                if start == "started twice":
                    host.start_soon(start_again)
                await trio.sleep(1)  # (before the start goes on)
            return results

        monkeypatch.setattr(type(host.store), "commit", written_meanwhile)
        heard: list[str] = []
        await node.spawn(_starts_linked, "s", ops_app.receives_forever, heard)
        await until(lambda: heard, "the end of s, heard")
        await trio.sleep(5)  # (a second end, if any, has come)
        assert heard == ["LINK_DOWN: Terminated: meanwhile"]
        assert node.workflow("s").status() == "failed"
        assert node.workflow("s").history() == []  # (it never ran)
        assert host.store.pending_messages("s") == []
        if start == "queued":
            assert node.workflow("hog").status() == "waiting"  # (its slot kept)
        else:
            assert [pid.id for pid in second] == ["s"]
