"""Long-running orchestration (issue 5): promises, first/gather over promises, timers,
activities and inbox receives, state, search, versioning, history, children,
continue-as-new. On virtual time (MockClock): a 48-hour deadline takes no real time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import workflow_app as app

import garrison
from garrison import process, workflow
from garrison.persistence import Transaction


@pytest.fixture(autouse=True)
def _reset() -> None:
    app.LOG.clear()


async def wait_status(handle: garrison.WorkflowHandle, status: str) -> None:
    with trio.fail_after(5):
        while handle.status() != status:
            await trio.sleep(0.001)


def kinds(handle: garrison.WorkflowHandle) -> list[str]:
    return [r.kind for r in handle.history()]


# ------------------------------------------------------------------ promises
async def test_promise_resolved_before_the_workflow_asks_is_kept(node: garrison.Node) -> None:
    pid = await node.start_workflow(app.late_promise, id="lp")
    handle = node.workflow("lp")
    await wait_status(handle, "waiting")
    await handle.promise("early").resolve({"ok": 1})  # not declared yet
    assert handle.promise("early").status() == "resolved"
    await node.send(pid, "go")
    assert await handle.result() == {"ok": 1}
    with pytest.raises(garrison.PromiseAlreadyCompleted):
        await handle.promise("early").reject("too late")


async def test_promise_of_an_unknown_workflow(node: garrison.Node) -> None:
    with pytest.raises(garrison.NoSuchWorkflow):
        await node.workflow("ghost").promise("p").resolve(1)


async def test_rejected_promise_raises_promise_rejected(node: garrison.Node) -> None:
    await node.start_workflow(app.promise_or_deadline, "48h", id="rj")
    handle = node.workflow("rj")
    await wait_status(handle, "waiting")
    await handle.promise("approval").reject("no")
    assert await handle.result() == "rejected: promise 'approval' of workflow 'rj' was rejected: no"
    with pytest.raises(garrison.PromiseAlreadyCompleted):
        await handle.promise("approval").resolve(1)


async def test_48h_promise_deadline_on_virtual_time(node: garrison.Node,
                                                    autojump_clock: Any) -> None:
    t0 = trio.current_time()
    await node.start_workflow(app.promise_or_deadline, "48h", id="late")
    await wait_status(node.workflow("late"), "waiting")  # a promise can wake it: waiting
    assert await node.workflow("late").result() == "expired"
    assert trio.current_time() - t0 == pytest.approx(48 * 3600)


# ------------------------------------------------------------------ first / gather
async def test_first_over_an_inbox_receive_and_a_timer(store_spec: str,
                                                       autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        pid = await node.start_workflow(app.signal_or_deadline, "1d", id="s")
        await wait_status(node.workflow("s"), "waiting")
        await node.send(pid, "verify", {"code": 7})
        with trio.fail_after(5):
            while "first" not in kinds(node.workflow("s")):
                await trio.sleep(0.001)
    # the decision and the consumed message are replayed after a restart
    async with garrison.open_node(store=db) as node:
        await node.send(pid, "go")
        assert await node.workflow("s").result() == ["verify", {"code": 7}]
        assert kinds(node.workflow("s")) == ["receive", "timer", "first", "receive"]
        t0 = trio.current_time()
        await node.start_workflow(app.signal_or_deadline, "2h", id="t")
        assert await node.workflow("t").result() == "expired"
        assert trio.current_time() - t0 == pytest.approx(7200)


async def test_first_refuses_a_receive_with_a_timeout(node: garrison.Node) -> None:
    await node.start_workflow(app.first_with_timeout, id="ft")
    assert "race it with a workflow.timer()" in await node.workflow("ft").result()


async def test_gather_over_promise_timer_activity_and_receive(node: garrison.Node,
                                                              autojump_clock: Any) -> None:
    pid = await node.start_workflow(app.gather_everything, id="ga")
    handle = node.workflow("ga")
    await wait_status(handle, "waiting")
    await handle.promise("p").resolve("P")
    await node.send(pid, "m", "M")
    assert await handle.result() == ["P", None, 2, "M"]
    assert trio.current_time() >= 3600


async def gathers_what_it_cannot(what: str) -> str:
    from garrison import workflow

    async def one() -> int:
        return 1

    try:
        await workflow.gather(workflow.timer("1s"), 42 if what == "int" else one())
    except TypeError as exc:
        return str(exc)
    return "gathered"


@pytest.mark.parametrize("what", ["int", "coroutine"])
async def test_gather_names_what_it_cannot_wait_on(node: garrison.Node, autojump_clock: Any,
                                                   what: str) -> None:
    # gather awaited each argument as it was: 42 gave "object int can't be used in 'await'
    # expression", naming neither gather nor its argument. A coroutine is awaited in its
    # place, as a plain await would (workflow.call(...) in gather takes its position then)
    await node.start_workflow(gathers_what_it_cannot, what, id="g")
    out = await node.workflow("g").result()
    if what == "coroutine":
        assert out == "gathered"
        return
    assert out.startswith("workflow.gather() takes promises, timers"), out
    assert "42" in out
    assert [r.kind for r in node.workflow("g").history()] == ["timer"]  # nothing awaited


# ------------------------------------------------------------------ state and history
async def test_get_state_replays_the_values_it_saw(store_spec: str, autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        pid = await node.start_workflow(app.counter, 3, id="c")
        for _ in range(2):
            await wait_status(node.workflow("c"), "waiting")
            await node.send(pid, "tick")
            await trio.sleep(0.01)
        await wait_status(node.workflow("c"), "waiting")
        assert node.workflow("c").state("count") == 3  # readable while it waits
    async with garrison.open_node(store=db) as node:
        await node.send(pid, "tick")
        with trio.fail_after(60):
            assert await node.workflow("c").result() == [0, 1, 2]


async def _edits_its_state_in_place(run: int) -> Any:
    if run == 2:
        return workflow.get_state("cart")
    workflow.set_state("cart", {"items": ["a"]})
    workflow.get_state("cart")["items"].append("b")  # not set_state: not the state
    await workflow.sleep(1)
    workflow.continue_as_new(2)


async def test_a_state_value_edited_in_place_is_not_the_state(
        node: garrison.Node, autojump_clock: Any) -> None:
    """helper-224: get_state handed out the value it keeps, so an edit in place went
    into the next run's state (continue_as_new) while `handle.state` never showed it:
    the views inside and outside differed for good. get_state gives a copy."""
    await node.start_workflow(_edits_its_state_in_place, 1, id="cart")
    await trio.sleep(0.5)
    assert node.workflow("cart").state("cart") == {"items": ["a"]}
    assert await node.workflow("cart").result() == {"items": ["a"]}
    assert node.workflow("cart").state("cart") == {"items": ["a"]}


async def test_history_size_is_the_same_on_replay(store_spec: str, autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        pid = await node.start_workflow(app.sized, 2, id="h")
        await wait_status(node.workflow("h"), "waiting")
        await node.send(pid, "x")
        await trio.sleep(0.01)
        await wait_status(node.workflow("h"), "waiting")
    async with garrison.open_node(store=db) as node:
        await node.send(pid, "y")
        (l1, s1), (l2, s2) = await node.workflow("h").result()
    # one activity record; then the receive of "x" and one more activity
    assert (l1, l2) == (1, 3) and 0 < s1 < s2


async def test_long_history_warns_to_continue_as_new(
        node: garrison.Node, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="garrison.workflow"):
        await node.start_workflow(app.chatty, 10_001, id="long")
        assert await node.workflow("long").result() == 10_001
    warnings = [r.getMessage() for r in caplog.records if "continue_as_new" in r.getMessage()]
    assert len(warnings) == 1 and "'long'" in warnings[0] and "10000" in warnings[0]


# ------------------------------------------------------------------ info, version, search
async def test_info_fields(node: garrison.Node) -> None:
    await node.start_workflow(app.info_flow, id="inf")
    got = await node.workflow("inf").result()
    assert got["id"] == "inf" and got["host"] == "workflows" and got["len"] == 1


async def test_version_outside_the_supported_range_blocks_clearly(
        store_spec: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.version_range, 1, 3, id="v")
        await wait_status(node.workflow("v"), "waiting")
        assert [r.outcome for r in node.workflow("v").history()] == [3]
    # new code supports only 1..2: the recorded 3 is a clear NonDeterminismError
    original = app.version_range

    async def narrower(lo: int, hi: int) -> int:
        return await original(1, 2)

    narrower.__module__, narrower.__qualname__ = original.__module__, original.__qualname__
    monkeypatch.setattr(app, "version_range", narrower)
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.NonDeterminismError, match=r"change-1=3.*1\.\.2"):
            await node.workflow("v").result()
        assert node.workflow("v").status() == "blocked"
    monkeypatch.setattr(app, "version_range", original)
    async with garrison.open_node(store=db) as node:  # the code that supports it resumes
        await node.workflow("v").signal("go")
        assert await node.workflow("v").result() == 3


async def test_search_filters_and_status(node: garrison.Node, autojump_clock: Any) -> None:
    await node.start_workflow(app.attrs_flow, id="s1")
    await node.start_workflow(app.receiver, id="s2")
    await wait_status(node.workflow("s1"), "waiting")
    await wait_status(node.workflow("s2"), "waiting")
    found = node.workflows(status="waiting", search={"customer": "c1"})
    assert [w.workflow_id for w in found] == ["s1"]
    assert found[0].search == {"status": "shipping", "customer": "c1"}
    assert node.workflows(status="completed", search={"customer": "c1"}) == []


# ------------------------------------------------------------------ children
async def test_cancelling_a_parent_cancels_its_children(node: garrison.Node,
                                                        autojump_clock: Any) -> None:
    await node.start_workflow(app.parent_of_waiters, id="pw")
    await wait_status(node.workflow("pw"), "waiting")
    await wait_status(node.workflow("pw.2"), "sleeping")
    await node.workflow("pw").cancel()
    for wid in ("pw", "pw.1", "pw.2"):
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow(wid).result()
    assert trio.current_time() < 3600


async def test_cancel_from_a_tool_reaches_the_children_too(store_spec: str,
                                                           autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.parent_of_waiters, id="pw")
        await wait_status(node.workflow("pw"), "waiting")
        await wait_status(node.workflow("pw.2"), "sleeping")
    with garrison.persistence.open_store(db) as store:  # no node runs
        store.request_cancel("pw")
    async with garrison.open_node(store=db) as node:
        for wid in ("pw", "pw.1", "pw.2"):
            with trio.fail_after(60), pytest.raises(garrison.WorkflowCancelled):
                await node.workflow(wid).result()


async def test_a_cancelled_parents_end_flags_its_unfinished_children(
        store_spec: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill found by a crash review: the parent's cancel flags its children by writes
    of their own, committed after it; the parent could end (cancelled) first, and a
    kill between left the children running for ever under a cancelled parent (the next
    node does not revisit an ended parent). The parent's end flags them too. Here the
    children's own flags are never written, as a kill at that moment leaves them, and
    the store is read as the parent's end committed."""
    from garrison.hosts.workflow._host import WorkflowHost

    db = store_spec
    seen: dict[str, tuple[str, bool]] = {}
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.parent_of_waiters, id="pw")
        await wait_status(node.workflow("pw"), "waiting")
        await wait_status(node.workflow("pw.2"), "sleeping")
        write_soon, finish = WorkflowHost.write_soon, WorkflowHost.finish

        def lost(self: Any, tx: Any, then: Any = None) -> None:
            if any(wid.startswith("pw.") for wid in tx.workflow_ids):
                return  # (the kill: never committed)
            write_soon(self, tx, then)

        async def finished(self: Any, wf: Any, *args: Any) -> None:
            await finish(self, wf, *args)
            if wf.wid == "pw":
                for rec in self.store.list_workflows(parent=wf.pid):
                    seen[rec.workflow_id] = (str(rec.status), bool(rec.cancel_requested))

        monkeypatch.setattr(WorkflowHost, "write_soon", lost)
        monkeypatch.setattr(WorkflowHost, "finish", finished)
        await node.workflow("pw").cancel()
        for wid in ("pw", "pw.1", "pw.2"):
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow(wid).result()
    assert set(seen) == {"pw.1", "pw.2"}
    for wid, (status, flagged) in seen.items():
        assert flagged or status == "cancelled", (wid, status)


@pytest.mark.parametrize("how", ["cancel", "terminate"])
async def test_a_child_being_started_as_its_parent_is_cancelled_goes_with_it(
        how: str, store_spec: str, autojump_clock: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-208: a parent cancelled (or terminated) while the start of its child was
    being committed went over its children before that child was there, and the child
    ran on for good, also after a restart. The cancel (or terminate) arrives here just
    as the child's create is committed, as it does at that moment from outside."""
    from garrison.hosts.workflow._operate import terminated
    from garrison.hosts.workflow._recovery import end_instance
    from garrison.persistence import Op

    db = store_spec
    async with garrison.open_node(store=db) as node:
        host = node.hosts["workflows"]
        commit = type(host.store).commit

        async def commit_as_it_comes(self: Any, tx: Any) -> Any:
            if any(op is Op.CREATE_WORKFLOW and wid == "pw.1"
                   for (op, _), wid in zip(tx.ops, tx.workflow_ids, strict=True)):
                parent = host.active["pw"]
                if how == "cancel":
                    host.request_cancel("pw")
                else:
                    end_instance(host, parent, terminated("by the test"))
            return await commit(self, tx)

        monkeypatch.setattr(type(host.store), "commit", commit_as_it_comes)
        await node.start_workflow(app.parent_of_waiters, id="pw")
        if how == "cancel":
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("pw").result()
            with trio.fail_after(60), pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("pw.1").result()
        else:
            with pytest.raises(garrison.WorkflowFailed, match="by the test"):
                await node.workflow("pw").result()
            with trio.fail_after(60), pytest.raises(
                    garrison.WorkflowFailed, match="its parent workflow 'pw' was terminated"):
                await node.workflow("pw.1").result()
        monkeypatch.undo()
    async with garrison.open_node(store=db) as node:  # and it stays so
        assert [(w.workflow_id, w.status) for w in node.workflows()] == [
            ("pw", "cancelled" if how == "cancel" else "failed"),
            ("pw.1", "cancelled" if how == "cancel" else "failed")]


async def test_a_child_a_cancelled_parent_starts_to_compensate_runs(
        node: garrison.Node, autojump_clock: Any) -> None:
    """(The other side of the test above: a child started once the parent's code has
    seen its cancel is its compensation, and is not cancelled with it.)"""
    await node.start_workflow(app.refunds_when_cancelled, id="rc")
    await wait_status(node.workflow("rc"), "waiting")
    await node.workflow("rc").cancel()
    with pytest.raises(garrison.WorkflowCancelled):
        await node.workflow("rc").result()
    [child] = [w.workflow_id for w in node.workflows() if w.workflow_id != "rc"]
    assert await node.workflow(child).result() == "refunded o-1"


async def test_a_compensating_child_is_not_cancelled_by_a_restart(
        store_spec: str, autojump_clock: Any) -> None:
    """helper-211: a node resuming a parent whose cancel was delivered cancels its
    children again (a cancel arriving while no node ran must reach them), and with them
    the child its compensation started after that cancel: a refund cancelled by a
    restart. Only the children spawned before the journal's cancel go."""
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(app.refunds_slowly_when_cancelled, id="rs")
        await wait_status(node.workflow("rs"), "waiting")
        await node.workflow("rs").cancel()
        await wait_status(node.workflow("rs"), "sleeping")
        [child] = [w.workflow_id for w in node.workflows() if w.workflow_id != "rs"]
        await wait_status(node.workflow(child), "waiting")
    async with garrison.open_node(store=store_spec) as node:
        await trio.sleep(1)
        assert node.workflow(child).status() == "waiting"
        await node.workflow(child).signal("paid back")
        assert await node.workflow(child).result() == "refunded o-2 (paid back)"
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("rs").result()


async def input_or_timer(timer_first: bool, promise: bool) -> list[Any]:
    from garrison import workflow

    r = workflow.promise("go") if promise else process.inbox().receive()
    t = workflow.timer(10)
    won = await (workflow.first(t, r) if timer_first else workflow.first(r, t))
    got = await r if promise else (await (r if won is r else process.inbox().receive())).payload
    return ["input" if won is r else "timer", got]


@pytest.mark.parametrize("promise", [False, True], ids=["receive", "promise"])
async def test_first_after_a_stop_decides_by_when_each_was_done(
        store_spec: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        promise: bool) -> None:
    """A crash review: after a stop that spans a race's deadline, the message (or
    promise) that came while the node was down and the passed timer were both done at
    the resume, and the first in argument order won: a message committed after the
    deadline beat the timer, one committed before lost to it. A node that ran on
    decides by which was done first: so does the resumed one."""
    from garrison.hosts.workflow._waits import WallClock

    db = store_spec
    cases = [(False, 5.0, "timer"), (True, 5.0, "timer"),
             (False, -5.0, "input"), (True, -5.0, "input")]
    async with garrison.open_node(store=db) as node:
        for n, (timer_first, _offset, _expected) in enumerate(cases):
            await node.start_workflow(input_or_timer, timer_first, promise, id=f"r{n}")
        for n in range(len(cases)):
            await wait_status(node.workflow(f"r{n}"), "waiting")
    with garrison.persistence.open_store(db, lock=False) as store:  # the node is down
        for n, (_timer_first, offset, _expected) in enumerate(cases):
            deadline = next(r.outcome["deadline"] for r in store.journal(f"r{n}")
                            if r.kind == "timer")
            at = deadline + offset
            if promise:
                store.write(Transaction().resolve_promise(f"r{n}", "go", 1, time=at))
            else:
                store.write(Transaction().deliver(f"r{n}", "go", 1, msg_id=f"m{n}", time=at))
    init = WallClock.__init__

    def later(self: WallClock) -> None:  # the next node opens a minute past the deadlines
        init(self)
        self.wall0 += 60

    monkeypatch.setattr(WallClock, "__init__", later)
    async with garrison.open_node(store=db) as node:
        for n, (_timer_first, _offset, expected) in enumerate(cases):
            assert await node.workflow(f"r{n}").result() == [expected, 1], cases[n]


# ------------------------------------------------------------------ continue-as-new
async def test_continue_as_new_keeps_state_inbox_and_promises(node: garrison.Node) -> None:
    pid = await node.start_workflow(app.continued, 0, id="cn")
    await node.workflow("cn").promise("kept").resolve("yes")
    await node.send(pid, "m", "hello")
    runs, payload, kept, length = await node.workflow("cn").result()
    assert (runs, payload, kept) == (1, "hello", "yes")
    assert length == 3  # receive, promise, await_promise: a fresh journal


async def _takes_in_batches(got: list[str], total: int) -> list[str]:
    for _ in range(3):
        got.append((await process.inbox().receive()).payload)
        if len(got) == total:
            return got
    workflow.continue_as_new(got, total)


async def test_a_received_message_leaves_its_id_in_the_inbox_not_its_payload(
        store_spec: str, autojump_clock: Any) -> None:
    """A message-driven workflow that continues as new every 3 messages: its journal
    stays short, but the store kept every message it had received, payload and all
    (marked consumed), also once it completed, so the inbox grew without bound. A
    receive's row now keeps its id (the same message sent again is a duplicate), not
    its payload: the receive's journal record holds that, and a replay (here after a
    restart in the middle of a run) takes it from there. A message not received yet
    keeps its payload."""
    from _stores import sql

    db = store_spec
    payloads = [f"m{i}-" + "x" * 200 for i in range(7)]
    async with garrison.open_node(store=db) as node:
        pid = await node.start_workflow(_takes_in_batches, [], 7, id="b")
        for payload in payloads[:5]:
            await node.send(pid, "n", payload)
        await trio.sleep(1)
        await wait_status(node.workflow("b"), "waiting")  # its second run took 2 of 3
    with garrison.persistence.open_store(db) as store:  # while no node runs
        store.deliver("b", "n", payloads[5], msg_id="by-tool")
        assert [m.payload for m in store.pending_messages("b")] == [payloads[5]]
    async with garrison.open_node(store=db) as node:
        await node.send(pid, "n", payloads[6])
        assert await node.workflow("b").result() == payloads
        assert len(node.workflow("b").history()) <= 3
    rows = sql(db, "SELECT msg_id, payload, trace, consumed_seq FROM inbox "
                   "WHERE workflow_id = 'b' ORDER BY id")
    assert len({msg_id for msg_id, *_ in rows}) == 7
    assert [(payload, trace, seq is not None) for _id, payload, trace, seq in rows] \
        == [("null", None, True)] * 7
    with garrison.persistence.open_store(db) as store:
        assert store.deliver("b", "n", "again", msg_id="by-tool") is None  # a duplicate
        taken = store.inbox_message("by-tool")
        assert taken is not None and taken.payload is None and taken.consumed_seq


async def test_stopped_node_leaves_the_last_known_status(store_spec: str,
                                                         autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.receiver, id="waits")
        await node.start_workflow(app.sleeper, "1h", id="sleeps")
        await wait_status(node.workflow("waits"), "waiting")
        await wait_status(node.workflow("sleeps"), "sleeping")
    with garrison.persistence.open_store(db, lock=False) as store:
        assert {r.workflow_id: str(r.status) for r in store.list_workflows()} == {
            "waits": "waiting", "sleeps": "sleeping"}
    async with garrison.open_node(store=db) as node:
        assert await node.workflow("sleeps").result() == 3600
        await node.workflow("waits").signal("go", 1)
        assert await node.workflow("waits").result() == ["go", 1]


async def test_node_closes_while_a_parent_is_starting_its_children(
        store_spec: str, autojump_clock: Any) -> None:
    """A child whose start commits while the node closes stops too (this used to hang)."""
    db = store_spec
    with trio.fail_after(60):
        async with garrison.open_node(store=db) as node:
            await node.start_workflow(app.parent_of_waiters, id="pw")
        async with garrison.open_node(store=db) as node:  # and all resume later
            await wait_status(node.workflow("pw"), "waiting")
            await wait_status(node.workflow("pw.1"), "waiting")
            await node.workflow("pw").cancel()
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("pw.1").result()


# ------------------------------------------------------------ a child on another store
_TWO_HOSTS = """
version: "1.0"
namespace: p
entries:
  - {name: a, kind: workflow.host, store: a.db}
  - {name: b, kind: workflow.host, store: b.db}
"""


async def spawns_on_b(with_id: bool) -> str:
    try:
        await process.spawn(app.child, 1, host="p:b", id="c" if with_id else None)
    except ValueError as exc:
        return str(exc)
    return "spawned"


@pytest.mark.parametrize("with_id", [False, True])
async def test_a_child_workflow_on_a_host_with_another_store_is_refused_clearly(
        tmp_path: Path, autojump_clock: Any, with_id: bool) -> None:
    """A child workflow is journaled with its parent (its start, the parent's spawn
    record and its monitor in one transaction): on a host with a store of its own that
    failed deep in the store (a foreign key) and looked like the store failing, for
    good. It is refused at the spawn, naming the hosts and the store."""
    (tmp_path / "app.yaml").write_text(_TWO_HOSTS)
    async with garrison.open_node(config=str(tmp_path / "app.yaml")) as node:
        await node.start_workflow(spawns_on_b, with_id, id="w", host="p:a")
        with trio.fail_after(10):
            said = await node.workflow("w", host="p:a").result()
    assert "workflow 'w' cannot spawn a workflow on host 'p:b'" in said
    assert "b.db" in said and "spawn it on 'p:a'" in said


async def waits_for_one() -> str:
    msg = await process.inbox().receive()
    return str(msg.payload)


async def sends_to_b() -> str:
    await process.send("p:b/r", "note", "hello")
    return "sent"


async def test_a_message_to_a_workflow_of_another_store_survives_a_crash_between(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A send to a workflow of another store is two commits: the sender's record, then
    the receiver's inbox row. The node going between them lost the message (the send
    replays as done); a replayed send to another store is delivered again under its
    recorded id, which the receiver's inbox holds once."""
    from garrison.hosts.workflow import _host

    (tmp_path / "app.yaml").write_text(_TWO_HOSTS)
    config = str(tmp_path / "app.yaml")
    deliver = _host.WorkflowHost.deliver_durable

    async def never_on_b(self: Any, pid: Any, msg: Any, text: Any = None) -> bool:
        if self.name == "p:b":
            await trio.sleep_forever()  # the node goes before the receiver's commit
        return await deliver(self, pid, msg, text)

    async with garrison.open_node(config=config) as node:
        await node.start_workflow(waits_for_one, id="r", host="p:b")
        monkeypatch.setattr(_host.WorkflowHost, "deliver_durable", never_on_b)
        await node.start_workflow(sends_to_b, id="s", host="p:a")
        await trio.sleep(1)
    monkeypatch.undo()
    for _ in range(2):  # and once more: the delivery is not repeated
        async with garrison.open_node(config=config) as node:
            with trio.fail_after(10):
                assert await node.workflow("s", host="p:a").result() == "sent"
                assert await node.workflow("r", host="p:b").result() == "hello"
    from garrison.persistence import SQLiteStore

    with SQLiteStore(str(tmp_path / "b.db")) as b:
        assert len(b.db.execute("SELECT 1 FROM inbox WHERE workflow_id = 'r'").fetchall()) == 1


async def test_a_link_or_monitor_of_a_workflow_that_ended_during_its_spawn_is_let_go(
        tmp_path: Path) -> None:
    """A workflow that ends at once can deliver its EXIT (to a monitor) or its end (to
    a link) before ``spawn_monitored`` / ``spawn_linked`` returns: the spawner recorded
    the monitor and the link after that, and kept them for good (process_info listed
    the dead pids: about 4 in 10 of 300 such spawns, a leak)."""

    async def spawner() -> tuple[int, int]:
        events = process.events()
        node = garrison.current_node()
        linked = []
        for i in range(40):
            await process.spawn_monitored(app.instant, i, host="workflows")
            linked.append(await process.spawn_linked(app.instant, i, host="workflows"))
        for _ in range(40):
            assert await events.receive(timeout=30) is not None
        for pid in linked:  # (ended too)
            await node.wait(pid)
        await trio.sleep(0.1)
        info = node.process_info(process.pid())
        return len(info.monitors), len(info.links)

    async with garrison.open_node(store=str(tmp_path / "app.db")) as node:
        assert await node.wait(await node.spawn(spawner)) == (0, 0)


async def spawns_itself(runs: int, said: list[str]) -> list[str]:
    me = workflow.info().workflow_id
    try:
        await process.spawn(app.child, 1, host="workflows", id=me)
    except ValueError as exc:
        said = [*said, str(exc)]
    else:
        said = [*said, "spawned"]
    await workflow.sleep("1s")  # a step after it: a replay takes the same seqs
    if runs > 1:
        workflow.continue_as_new(runs - 1, said)
    return said


async def test_a_workflow_spawning_its_own_id_as_a_child_is_refused_clearly(
        tmp_path: Path, autojump_clock: Any) -> None:
    """``process.spawn(..., id=<its own id>)`` in a workflow (or in the run
    ``continue_as_new`` started, which has the id too) returned the workflow's own pid,
    as the start of an id that exists does, and the EXIT of that "child" it then waited
    for never came. It is refused at the spawn, naming the id, as other spawns that
    cannot be are (nothing is journaled: the node that resumes it refuses it again at
    the same seq). A plain process starting the workflow's id gets its pid, as before."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(spawns_itself, 2, [], id="me")
        await wait_status(node.workflow("me"), "sleeping")  # its first run's sleep
    async with garrison.open_node(store=db) as node:  # replays the refused spawn
        with trio.fail_after(10):
            said = await node.workflow("me").result()

        async def plain() -> garrison.Pid:
            return await process.spawn(app.child, 1, host="workflows", id="me")

        assert await node.wait(await node.spawn(plain)) == node.workflow("me").pid
    assert said == ["workflow 'me' cannot start itself as its child: id 'me' is its own "
                    "(give the child another id)"] * 2, said


# ------------------------------------------- a monitor or link of a workflow of another store
async def ends_when_told() -> str:
    msg = await process.inbox().receive()
    return f"done {msg.payload}"


async def watches(*targets: str) -> list[Any]:
    for target in targets:
        process.monitor(target)
    events = process.events()
    seen = [await events.receive() for _ in targets]
    while (event := await events.receive(timeout="30s")) is not None:  # (no second)
        seen.append(event)
    return sorted([str(e.kind), str(e.pid), e.result] for e in seen)


@pytest.mark.parametrize("ids", [("w", "t"), ("x", "x")])
@pytest.mark.parametrize("how", ["live", "restart", "exit lost"])
async def test_a_workflow_monitoring_a_workflow_of_another_store_gets_its_exit_once(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        ids: tuple[str, str], how: str) -> None:
    """The monitor of a workflow on another workflow host of the node (another store)
    was written into the watcher's store, keyed by the target's id: the watcher's store
    failed for good (a foreign key), or, with the same id on both hosts, the row named
    the watcher itself and no EXIT came. It is the target's store's, as on one host: the
    EXIT comes once, after both resumed too, and after a crash between the target's end
    and the EXIT's write into the watcher's store (the watcher's replay finds it ended)."""
    from garrison.hosts.workflow import _host

    watcher_id, target_id = ids
    (tmp_path / "app.yaml").write_text(_TWO_HOSTS)
    config = str(tmp_path / "app.yaml")
    exit_of_ended = _host.WorkflowHost.exit_of_ended

    def never_on_a(self: Any, target: Any, watcher: Any, event: Any) -> None:
        if self.name != "p:a":  # the node goes before the write into the watcher's store
            exit_of_ended(self, target, watcher, event)

    async with garrison.open_node(config=config) as node:
        target = await node.start_workflow(ends_when_told, id=target_id, host="p:b")
        await node.start_workflow(watches, str(target), id=watcher_id, host="p:a")
        watcher = node.workflow(watcher_id, host="p:a")
        await wait_status(watcher, "waiting")
        if how == "exit lost":
            monkeypatch.setattr(_host.WorkflowHost, "exit_of_ended", never_on_a)
            await node.send(target, "go", 1)
            assert await node.workflow(target_id, host="p:b").result() == "done 1"
            await trio.sleep(60)
            assert watcher.status() == "waiting"
        if how == "live":
            await node.send(target, "go", 1)
            with trio.fail_after(100):
                assert await watcher.result() == [["EXIT", str(target), "done 1"]]
    monkeypatch.undo()
    async with garrison.open_node(config=config) as node:  # both resume
        if how == "restart":
            await node.send(target, "go", 1)
        with trio.fail_after(100):
            assert await node.workflow(watcher_id, host="p:a").result() == [
                ["EXIT", str(target), "done 1"]]
            assert await node.workflow(target_id, host="p:b").result() == "done 1"


async def fails_a_while_after_a_message() -> None:
    await process.inbox().receive()
    await workflow.sleep("7s")
    raise RuntimeError("boom")


async def links_to(target: str, trap: bool) -> Any:
    process.set_options(trap_links=trap)
    process.link(target)
    await process.send(target, "go", 1)
    event = await process.events().receive(timeout="1h")
    return "survived" if event is None else [str(event.kind), str(event.pid)]


@pytest.mark.parametrize("trap", [False, True])
async def test_a_link_to_a_workflow_of_another_store_outlives_a_restart(
        tmp_path: Path, autojump_clock: Any, trap: bool) -> None:
    """A workflow linked to one of another workflow host of the node makes the link
    again as it resumes; its host resumed first, before the other's workflow was
    loaded, and the link was dropped: the other's failure then reached nobody (one
    that did not trap links survived it, one that did got no LINK_DOWN). It holds from
    the other's load."""
    (tmp_path / "app.yaml").write_text(_TWO_HOSTS)
    config = str(tmp_path / "app.yaml")
    async with garrison.open_node(config=config) as node:
        target = await node.start_workflow(fails_a_while_after_a_message, id="f",
                                           host="p:b")
        await node.start_workflow(links_to, str(target), trap, id="l", host="p:a")
        await wait_status(node.workflow("f", host="p:b"), "sleeping")
    async with garrison.open_node(config=config) as node:
        linker = node.workflow("l", host="p:a")
        with trio.fail_after(100):
            if trap:
                assert await linker.result() == ["LINK_DOWN", str(target)]
            else:
                with pytest.raises(garrison.WorkflowFailed, match="LinkedProcessFailed"):
                    await linker.result()


async def ends_in_an_hour() -> str:
    await process.inbox().receive(timeout="1h")
    return "ended normally"


async def links_then_fails(target: str) -> None:
    process.link(target)
    await process.inbox().receive()
    raise RuntimeError("boom")


async def test_a_link_to_a_workflow_of_another_store_fails_it_before_it_resumed(
        tmp_path: Path, autojump_clock: Any) -> None:
    """The linking workflow's host resumed first, and it failed at once (the message it
    waited for came while no node ran): the other's host had not loaded the other yet,
    and the linked failure reached nobody. It acts once that host resumed."""
    from garrison.persistence import SQLiteStore

    (tmp_path / "app.yaml").write_text(_TWO_HOSTS)
    config = str(tmp_path / "app.yaml")
    async with garrison.open_node(config=config) as node:
        target = await node.start_workflow(ends_in_an_hour, id="o", host="p:b")
        await node.start_workflow(links_then_fails, str(target), id="l", host="p:a")
        await wait_status(node.workflow("l", host="p:a"), "waiting")
    with SQLiteStore(str(tmp_path / "a.db")) as a:
        a.write(Transaction().deliver("l", "go", 1, msg_id="go-1"))
    async with garrison.open_node(config=config) as node:
        with trio.fail_after(100), pytest.raises(garrison.WorkflowFailed,
                                                 match="linked process p:a/l failed"):
            await node.workflow("o", host="p:b").result()


async def test_the_exits_of_two_workflows_of_the_same_id_on_two_stores_both_come(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A workflow monitoring ``t`` of its own host and ``t`` of another gets both
    EXITs: the one from the other store has an inbox id of its own (not dropped as
    the same message)."""
    (tmp_path / "app.yaml").write_text(_TWO_HOSTS)
    async with garrison.open_node(config=str(tmp_path / "app.yaml")) as node:
        here = await node.start_workflow(ends_when_told, id="t", host="p:a")
        there = await node.start_workflow(ends_when_told, id="t", host="p:b")
        await node.start_workflow(watches, str(here), str(there), id="w", host="p:a")
        await wait_status(node.workflow("w", host="p:a"), "waiting")
        await node.send(here, "go", 1)
        await node.send(there, "go", 2)
        with trio.fail_after(100):
            assert await node.workflow("w", host="p:a").result() == [
                ["EXIT", str(here), "done 1"], ["EXIT", str(there), "done 2"]]


async def bystander() -> Any:
    event = await process.events().receive(timeout="50s")
    return None if event is None else [str(event.kind), str(event.pid)]


async def test_a_tools_terminate_gives_no_exit_to_a_namesake_of_another_hosts_watcher(
        tmp_path: Path, autojump_clock: Any) -> None:
    """helper-382: a workflow of host p:a monitors t of p:b (its row in b's store, as
    e481519 keeps it), and b holds a workflow of the same id as the watcher. A tool's
    terminate of t (no node running) delivered the EXIT by the watcher's id alone, into
    b's namesake, which never monitored t. Only b's own watchers get it there; the
    watcher of a gets it as it resumes."""
    from garrison.hosts.workflow._operate import terminate_unless_node, terminated
    from garrison.persistence import SQLiteStore

    (tmp_path / "app.yaml").write_text(_TWO_HOSTS)
    config = str(tmp_path / "app.yaml")
    async with garrison.open_node(config=config) as node:
        target = await node.start_workflow(ends_when_told, id="t", host="p:b")
        await node.start_workflow(watches, str(target), id="w", host="p:a")
        await node.start_workflow(bystander, id="w", host="p:b")
        await wait_status(node.workflow("w", host="p:a"), "waiting")
    with SQLiteStore(str(tmp_path / "b.db"), lock=False) as b:
        terminate_unless_node(b, b.get_workflow("t"), terminated("by a tool"))
    async with garrison.open_node(config=config) as node:
        with trio.fail_after(100):
            assert await node.workflow("w", host="p:a").result() == [
                ["EXIT", str(target), None]]  # (its result: none, it failed)
            assert await node.workflow("w", host="p:b").result() is None  # (its 50 s)



async def traps_then_waits() -> list[Any]:
    process.set_options(trap_links=True)
    event = await process.events().receive()
    late = await process.events().receive(timeout="1h")  # (none: one LINK_DOWN only)
    return [str(event.kind), str(event.pid), event.error.type, late]


async def fails_linked_to(others: list[str], cancel: bool) -> None:
    for other in others:
        process.link(other)
    await workflow.sleep("1s")
    if cancel:
        await process.inbox().receive()
    raise ValueError("boom")


@pytest.mark.parametrize("cancel", [False, True])
async def test_a_trapping_linked_workflow_gets_one_link_down_with_its_partners_end(
        node: garrison.Node, autojump_clock: Any, cancel: bool) -> None:
    """The LINK_DOWN of a trapping workflow linked to one that fails (or is cancelled)
    is written with that end (so that a crash after it cannot lose it): it comes once,
    and the link is spent (no second one from the fan-out after the commit)."""
    for wid in ("t1", "t2"):
        await node.start_workflow(traps_then_waits, id=wid)
    await node.start_workflow(fails_linked_to, ["workflows/t1", "workflows/t2"], cancel,
                              id="f")
    await trio.sleep(5)
    if cancel:
        await node.workflow("f").cancel()
    error = "WorkflowCancelled" if cancel else "ValueError"
    for wid in ("t1", "t2"):
        with trio.fail_after(7200):
            assert await node.workflow(wid).result() == [
                "LINK_DOWN", "workflows/f", error, None]
        assert [r.kind for r in node.workflow(wid).history()].count("receive") == 2


async def compensating_level(depth: int) -> str:
    if depth:
        await process.spawn_linked(compensating_level, depth - 1)
    try:
        await process.inbox().receive()
    except garrison.WorkflowCancelled:
        await workflow.sleep(f"{10 - depth}s")  # the compensation (the top's is shortest)
        workflow.set_state("compensated", True)
        raise
    return "not cancelled"


async def test_children_cancelled_with_their_linked_parent_end_cancelled(
        node: garrison.Node, autojump_clock: Any) -> None:
    """README (Exit semantics): a cancelled workflow's WorkflowCancelled fails a linked
    workflow that does not trap links, unless that one is being cancelled itself (here
    the spawn_linked children, cancelled with their parent): each one's compensation
    runs to its end and it ends cancelled. The parent's end killed a child in its
    compensation before; which of the two came first varied with the commits' timing,
    and a node resuming them after a crash decided it another way again."""
    await node.start_workflow(compensating_level, 2, id="c")
    await trio.sleep(5)
    await node.workflow("c").cancel()
    for wid in ("c", "c.1", "c.1.1"):
        handle = node.workflow(wid)
        with trio.fail_after(100), pytest.raises(garrison.WorkflowCancelled):
            await handle.result()
        assert handle.status() == "cancelled"
        assert handle.state("compensated") is True
