import itertools
import time
from typing import Any

import pytest
import trio
import trio.testing

import garrison
from garrison import EventKind, ProcessError, process


async def test_cancel_lets_process_clean_up(node, autojump_clock):
    log = []

    async def worker():
        ev = await process.events().receive()
        assert ev.kind == EventKind.CANCEL
        log.append(("cancel from", ev.pid))
        await trio.sleep(1)  # cleanup takes a while but less than the timeout
        log.append("cleaned")
        return "stopped cleanly"

    async def boss(w):
        t0 = trio.current_time()
        await process.cancel(w, timeout="5s")
        return trio.current_time() - t0, process.pid()

    w = await node.spawn(worker)
    await trio.testing.wait_all_tasks_blocked()  # it asked for its events: CANCEL reaches it
    took, boss_pid = await node.wait(await node.spawn(boss, w))
    assert took == 1
    assert log == [("cancel from", boss_pid), "cleaned"]
    assert await node.wait(w) == "stopped cleanly"


async def test_cancel_escalates_to_terminate(node, autojump_clock):
    async def stubborn():
        process.events()  # reads its events, so CANCEL is cooperative: and ignores it
        await trio.sleep_forever()

    async def boss(w):
        t0 = trio.current_time()
        await process.cancel(w, timeout="3s")
        return trio.current_time() - t0

    w = await node.spawn(stubborn)
    await trio.testing.wait_all_tasks_blocked()  # it asked for its events
    assert await node.wait(await node.spawn(boss, w)) == 3
    with pytest.raises(ProcessError) as info:
        await node.wait(w)
    assert info.value.error.type == "Terminated"
    assert info.value.error.message == "did not stop within 3s of its cancel"


async def test_terminate_is_immediate_even_when_shielded_work_is_pending(node, autojump_clock):
    async def victim():
        await trio.sleep_forever()

    async def killer(v):
        t0 = trio.current_time()
        await process.terminate(v)
        await process.terminate(v)  # already gone: no error
        return trio.current_time() - t0

    v = await node.spawn(victim)
    assert await node.wait(await node.spawn(killer, v)) == 0
    with pytest.raises(ProcessError, match="Terminated"):
        await node.wait(v)


async def test_cancel_of_dead_process_returns(node, autojump_clock):
    async def quick():
        return 1

    async def boss(q):
        await process.cancel(q)
        return "ok"

    q = await node.spawn(quick)
    await node.wait(q)
    assert await node.wait(await node.spawn(boss, q)) == "ok"


async def test_terminate_before_first_run(node, autojump_clock):
    async def never():
        raise AssertionError("must not run")

    async def boss():
        v = await process.spawn(never)
        await process.terminate(v)
        return v

    v = await node.wait(await node.spawn(boss))
    with pytest.raises(ProcessError, match="Terminated"):
        await node.wait(v)


# ---------------------------------------------------------------- prompt stop
# A process that never asked for process.events() cannot see a CANCEL event: it is
# stopped by trio cancellation at its next checkpoint, its finally blocks run, and
# its exit is a normal one (the exit matrix's "stops within the timeout" row).


async def test_cancel_stops_inbox_loops_and_sleepers_at_once(node, autojump_clock):
    log = []

    async def server():
        try:
            async for msg in process.inbox():
                log.append(msg.topic)
        finally:
            log.append("server finally")

    async def sleeper():
        try:
            await trio.sleep(3600)
        finally:
            log.append("sleeper finally")

    async def boss():
        s = await process.spawn_monitored(server)
        z = await process.spawn_monitored(sleeper)
        await process.send(s, "work")
        await trio.sleep(1)
        t0 = trio.current_time()
        await process.cancel(s, timeout="10s")
        await process.cancel(z, timeout="10s")
        took = trio.current_time() - t0
        exits = [await process.events().receive() for _ in range(2)]
        return took, [(e.kind, e.ok, e.result, e.error) for e in exits]

    took, exits = await node.wait(await node.spawn(boss))
    assert took == 0
    assert exits == [(EventKind.EXIT, True, None, None)] * 2
    assert log == ["work", "server finally", "sleeper finally"]


async def test_cancel_before_the_process_ever_ran(node, autojump_clock):
    ran = []

    async def never():
        ran.append(True)

    async def boss():
        p = await process.spawn_monitored(never)
        await process.cancel(p)
        return await process.events().receive()

    ev = await node.wait(await node.spawn(boss))
    assert ev.ok and ran == []


async def test_cancel_waits_for_shielded_cleanup_then_terminates(node, autojump_clock):
    async def cleans_up(seconds):
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(seconds)

    async def boss(seconds):
        p = await process.spawn_monitored(cleans_up, seconds)
        await trio.sleep(1)
        t0 = trio.current_time()
        await process.cancel(p, timeout="5s")
        ev = await process.events().receive()
        return trio.current_time() - t0, ev.error.type if ev.error else None

    assert await node.wait(await node.spawn(boss, 2)) == (2, None)
    # a cleanup longer than the timeout: terminated at the timeout, though it only
    # ends when its shielded cleanup does
    took, error = await node.wait(await node.spawn(boss, 8))
    assert (took, error) == (8, "Terminated")


async def test_cancel_stops_a_pending_call(node, autojump_clock):
    async def mute():
        await trio.sleep_forever()

    async def caller(to):
        await process.call(to, "q", timeout="1h")

    m = await node.spawn(mute)
    c = await node.spawn(caller, m)
    await trio.sleep(1)

    async def boss():
        t0 = trio.current_time()
        await process.cancel(c)
        return trio.current_time() - t0

    assert await node.wait(await node.spawn(boss)) == 0
    assert await node.wait(c) is None
    assert not node.hosts["processes"].procs[m].callers


async def test_a_service_in_an_inbox_loop_stops_at_once(autojump_clock):
    import textwrap

    import svc_app

    from garrison import open_node
    from garrison.config import load_config_text

    svc_app.LOG.clear()
    cfg = load_config_text(textwrap.dedent("""
        version: "1.0"
        namespace: t
        entries:
          - {name: steady, kind: process.py, source: "svc_app:steady"}
          - name: server
            kind: process.service
            process: steady
            input: [server]
            lifecycle: {auto_start: true}
    """), "test.yaml")
    async with open_node(config=cfg):
        await trio.sleep(5)
        t_stop = trio.current_time()
    assert [(t, what) for t, _, what in svc_app.LOG] == [(0, "start"), (t_stop, "stop")]
    assert trio.current_time() == t_stop


def test_active_workflows_keep_their_index_by_parent() -> None:
    """A cancel found a workflow's children by a pass over every active workflow (4,000
    cancels among 20,000 took seconds of the node's loop): the host's ``active`` keeps
    them by parent, through every way an entry comes and goes."""
    from types import SimpleNamespace

    from garrison.actors._values import Pid
    from garrison.hosts.workflow._instance import ActiveWorkflows

    p, q = Pid("workflows", "p"), Pid("workflows", "q")
    active = ActiveWorkflows()
    a, b, c = (SimpleNamespace(parent=p) for _ in range(3))
    root = SimpleNamespace(parent=None)
    active["a"], active["b"], active["root"] = a, b, root
    assert active.children_of(p) == [a, b] and active.children_of(q) == []
    active["a"] = c  # the same id, another instance (a workflow loaded again)
    assert active.children_of(p) == [b, c]
    active["b"] = SimpleNamespace(parent=q)
    assert active.children_of(p) == [c] and len(active.children_of(q)) == 1
    del active["a"]
    assert active.children_of(p) == [] and active.pop("a", None) is None
    assert active.pop("b").parent == q and active.children_of(q) == []
    active["x"] = SimpleNamespace(parent=p)
    active.clear()
    assert active.children_of(p) == [] and dict(active) == {}
    with pytest.raises(TypeError):
        active.setdefault("y", a)
    with pytest.raises(TypeError):
        active.update(y=a)


# -- cancelled workflows: compensation on retry, cancel inside a nursery's body --------
_SERVICE_UP: list[bool] = [False]
_REFUNDS: list[str] = []


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def _refund(what: str) -> str:
    if not _SERVICE_UP[0]:
        raise ConnectionError("refund service down")
    _REFUNDS.append(what)
    return what


async def _charges_then_waits() -> str:
    try:
        await garrison.workflow.sleep("1h")
    except garrison.WorkflowCancelled:
        await _refund("charge")  # the compensation
        raise
    return "shipped"


async def test_a_retry_of_a_cancelled_workflow_whose_compensation_failed_runs_it(
        node: garrison.Node, autojump_clock: object) -> None:
    """A cancelled workflow's compensation failed (the workflow failed); once the service
    was back, its retry ended it 'cancelled' at once, from the queue, as one that never
    ran: the refund never ran again, and the status said cancelled."""
    _SERVICE_UP[0] = False
    _REFUNDS.clear()
    await node.start_workflow(_charges_then_waits, id="o")
    handle = node.workflow("o")
    await trio.sleep(60)
    await handle.cancel()
    with pytest.raises(garrison.WorkflowFailed, match="refund service down"):
        await handle.result()
    _SERVICE_UP[0] = True
    await handle.retry()
    with pytest.raises(garrison.WorkflowCancelled):
        await handle.result()
    assert _REFUNDS == ["charge"]
    assert [r.kind for r in handle.history()] == ["cancel", "activity"]


async def _sleeps_in_a_nursery() -> str:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 10)
        await garrison.workflow.sleep("1h")
    return "done"


async def test_a_workflow_cancelled_inside_a_nursery_ends_cancelled(
        node: garrison.Node, autojump_clock: object) -> None:
    """The cancel reached the workflow inside a nursery's body: the group holding its
    WorkflowCancelled ended it 'failed' (logged as a failure), not 'cancelled'."""
    await node.start_workflow(_sleeps_in_a_nursery, id="n")
    await trio.sleep(60)
    await node.workflow("n").cancel()
    with pytest.raises(garrison.WorkflowCancelled):
        await node.workflow("n").result()
    assert node.workflow("n").status() == "cancelled"


_CONTINUED_STEPS: list[str] = []


@garrison.activity
async def _step(tag: str) -> str:
    _CONTINUED_STEPS.append(tag)
    return tag


async def _continues_when_cancelled(n: int) -> str:
    if n == 0:
        try:
            await garrison.workflow.sleep("1h")
        except garrison.WorkflowCancelled:
            garrison.workflow.continue_as_new(1)
    await _step(f"run {n}")
    await garrison.workflow.sleep("2h")
    await _step(f"after {n}")
    return f"finished {n}"


@pytest.mark.parametrize("restart", [False, True])
async def test_a_run_continued_from_a_cancel_handler_is_not_cancelled(
        autojump_clock: object, tmp_path: object, restart: bool) -> None:
    """A workflow met its cancel and continued as new: without a restart the new run
    ran to its end and was then called 'cancelled' (its result dropped); with one, the
    cancel was delivered again in the new run. The new run is not cancelled by it."""
    db = str(tmp_path / "s.db")  # type: ignore[operator]
    _CONTINUED_STEPS.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_continues_when_cancelled, 0, id="c")
        await trio.sleep(60)
        await node.workflow("c").cancel()
        await trio.sleep(60)  # the new run has begun its 2h sleep
        if not restart:
            assert await node.workflow("c").result() == "finished 1"
    if restart:
        async with garrison.open_node(store=db) as node:
            assert await node.workflow("c").result() == "finished 1"
    assert _CONTINUED_STEPS == ["run 1", "after 1"]


# -- a cancel reaches a workflow waiting on activities ---------------------------------
_RAN: list[str] = []


@garrison.activity
async def _slow(tag: str) -> str:
    _RAN.append(tag)
    await trio.sleep(3600)
    return tag


@garrison.activity
async def _undo(what: str) -> str:
    _RAN.append(f"undo {what}")
    return what


async def _awaits_started(how: str) -> str:
    a = garrison.workflow.start(_slow, "a")
    b = garrison.workflow.start(_slow, "b")
    try:
        if how == "gather":
            await garrison.workflow.gather(a, b)
        else:
            await a
    except garrison.WorkflowCancelled:
        if how == "again":  # the compensation waits for it after all (recorded later)
            await a
        await garrison.workflow.sleep("2h")  # (a restart while it sleeps replays the above)
        await _undo("both")
        raise
    return "finished"


@pytest.mark.parametrize("how", ["await", "gather", "again"])
@pytest.mark.parametrize("restart", [False, True])
async def test_a_cancel_reaches_a_workflow_awaiting_started_activities(
        autojump_clock: object, tmp_path: object, how: str, restart: bool) -> None:
    """A workflow awaiting activities it started with workflow.start (alone or in
    gather) never saw its cancel: the await waited for the activity, and the workflow
    ended 'completed'. The await raises WorkflowCancelled at once, and a replay (after
    a restart) raises at the same await even when the activity's result was recorded
    later."""
    db = str(tmp_path / f"{how}.db")  # type: ignore[operator]
    _RAN.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_awaits_started, how, id="w")
        await trio.sleep(60)
        t0 = trio.current_time()
        await node.workflow("w").cancel()
        await trio.sleep(1)
        if not restart:
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("w").result()
            # the compensation's sleep (and in "again" the rest of the activity) only
            assert trio.current_time() - t0 < (3 * 3600 if how == "again" else 2 * 3600) + 1
        else:  # stopped while the compensation sleeps
            await trio.sleep(3600 if how == "again" else 60)
            assert node.workflow("w").status() == "sleeping"
    if restart:
        async with garrison.open_node(store=db) as node:
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("w").result()
    assert _RAN.count("undo both") == 1
    history = _journal(db, "w")
    kinds = [r.kind for r in history if r.seq > 2]  # (a and b ran on: they may be recorded)
    assert kinds == ["cancel", "sleep", "activity"]
    cancel = next(r for r in history if r.kind == "cancel")
    assert (cancel.seq, cancel.outcome) == (3, {"await": 1})  # at the first await, of a


def _journal(db: str, wid: str) -> list[garrison.persistence.JournalRecord]:
    store = garrison.persistence.SQLiteStore(db)
    try:
        return store.journal(wid)
    finally:
        store.close()


_ATTEMPTS: list[float] = []


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=10, initial_delay="10m",
                                              backoff=1.0, max_delay="1h"))
async def _flaky() -> str:
    _ATTEMPTS.append(trio.current_time())
    raise ConnectionError("service down")


async def _calls_flaky() -> str:
    try:
        await _flaky()
    except garrison.WorkflowCancelled:
        await garrison.workflow.sleep("1h")  # (a restart while it sleeps replays the call)
        await _undo("flaky")
        raise
    return "done"


@pytest.mark.parametrize("restart", [False, True])
async def test_a_cancel_ends_the_retries_of_an_activity_call(
        autojump_clock: object, tmp_path: object, restart: bool) -> None:
    """A cancel requested while an activity call waited to retry went unseen until
    every retry had failed (hours with a long policy). It ends the wait: the call raises
    WorkflowCancelled, journaled at the call's seq (a replay raises there too, without
    running the activity again)."""
    db = str(tmp_path / "s.db")  # type: ignore[operator]
    _ATTEMPTS.clear()
    _RAN.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_calls_flaky, id="f")
        await trio.sleep(60)
        t0 = trio.current_time()
        await node.workflow("f").cancel()
        if restart:  # stopped while the compensation sleeps
            await trio.sleep(60)
            assert node.workflow("f").status() == "sleeping"
        else:
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("f").result()
            assert trio.current_time() - t0 < 3600 + 1
    if restart:
        async with garrison.open_node(store=db) as node:
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("f").result()
    assert len(_ATTEMPTS) == 1 and _RAN == ["undo flaky"]
    assert [(r.kind, r.seq) for r in _journal(db, "f")] == [
        ("cancel", 1), ("sleep", 2), ("activity", 3)]


async def _starts_then_sleeps() -> str:
    garrison.workflow.start(_slow, "background")  # never awaited
    try:
        await garrison.workflow.sleep("1h")
    except garrison.WorkflowCancelled:
        await garrison.workflow.sleep("2h")
        await _undo("sleeper")
        raise
    return "done"


async def test_a_replayed_start_left_unrecorded_does_not_take_the_cancel(
        autojump_clock: object, tmp_path: object) -> None:
    """The cancel reached the workflow at a sleep after a workflow.start whose activity
    was never recorded (the node stopped before it ended). The replay delivered the
    cancel again at that start (a seq with no record, before the recorded cancel): the
    handler ran from another place and met the recorded cancel as a second one."""
    db = str(tmp_path / "s.db")  # type: ignore[operator]
    _RAN.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_starts_then_sleeps, id="s")
        await trio.sleep(60)
        await node.workflow("s").cancel()
        await trio.sleep(60)
        assert node.workflow("s").status() == "sleeping"
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("s").result()
    assert _RAN.count("undo sleeper") == 1
    assert [(r.kind, r.seq) for r in _journal(db, "s") if r.seq > 1] == [
        ("cancel", 2), ("sleep", 3), ("activity", 4)]


async def _starts_inside_or_not_then_sleeps(inside: bool) -> str:
    if not inside:
        garrison.workflow.start(_slow, "bg")
    try:
        if inside:
            garrison.workflow.start(_slow, "bg")
        await garrison.workflow.sleep("1h")
    except garrison.WorkflowCancelled:
        await _undo("sleeper")
        raise
    return "done"


@pytest.mark.parametrize("inside", [False, True])
async def test_a_cancel_asked_while_no_node_ran_reaches_the_sleep_not_an_earlier_start(
        autojump_clock: object, tmp_path: object, inside: bool) -> None:
    """A cancel recorded in the store while no node ran (or lost with a killed node's
    last commit) reached the replay at an unfinished workflow.start before the sleep
    under way (a seq with no record: the sleep's is a timer), so the handler was
    skipped (or took the sleep's seq: blocked)."""
    db = str(tmp_path / "s.db")  # type: ignore[operator]
    _RAN.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_starts_inside_or_not_then_sleeps, inside, id="s")
        await trio.sleep(60)
    store = garrison.persistence.SQLiteStore(db, lock=False)
    try:
        store.request_cancel("s")  # what `garrison workflows cancel s` writes
    finally:
        store.close()
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("s").result()
    assert _RAN.count("undo sleeper") == 1
    assert [(r.kind, r.seq) for r in _journal(db, "s") if r.kind != "activity"] == [
        ("cancel", 2)]


async def _receives_what_it_made_early() -> str:
    r = process.listen("go").receive()  # seq 1, awaited after the sleep's seq 2
    await garrison.workflow.sleep("1m")
    try:
        await r
    except garrison.WorkflowCancelled:
        await garrison.workflow.sleep("2h")
        await _undo("receiver")
        raise
    return "done"


async def test_a_cancel_at_a_receive_made_earlier_is_replayed_at_its_await(
        autojump_clock: object, tmp_path: object) -> None:
    """A cancel met awaiting a receive made before other operations was journaled at
    the receive's seq: a replay raised where the receive was made, before the try, and
    the compensation never ran."""
    db = str(tmp_path / "r.db")  # type: ignore[operator]
    _RAN.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_receives_what_it_made_early, id="r")
        await trio.sleep(600)
        await node.workflow("r").cancel()
        await trio.sleep(60)  # the compensation sleeps
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("r").result()
    assert _RAN == ["undo receiver"]
    cancel = next(r for r in _journal(db, "r") if r.kind == "cancel")
    assert (cancel.seq, cancel.outcome) == (3, {"await": 1})


async def _ignores_cancel() -> None:
    async for _event in process.events():
        pass  # reads its events, so its CANCEL is a request: it ignores it


async def test_a_cancels_terminate_comes_even_when_its_caller_stopped_waiting(
        autojump_clock):
    """The terminate a cancel's timeout brings happened only inside the caller's await:
    a caller terminated meanwhile, or one that gave up first (move_on_after), left a
    process that ignores its CANCEL running for good."""
    async def canceller(target: object, patience: float) -> None:
        with trio.move_on_after(patience):
            await process.cancel(target, timeout=2)

    async with garrison.open_node() as node:
        stubborn = [await node.spawn(_ignores_cancel) for _ in range(2)]
        await trio.sleep(0.01)
        dies = await node.spawn(canceller, stubborn[0], 100)
        await node.spawn(canceller, stubborn[1], 0.5)  # gives up after half a second
        await trio.sleep(0.5)

        async def killer() -> None:
            await process.terminate(dies)

        await node.wait(await node.spawn(killer))
        await trio.sleep(1)
        assert all(node.process_info(p).alive for p in stubborn)  # (before the timeout)
        await trio.sleep(1)
        for pid in stubborn:
            with pytest.raises(garrison.ProcessError,
                               match=r"Terminated: did not stop within 2s of its cancel"):
                await node.wait(pid)


async def test_a_process_that_cancels_itself_reads_its_cancel_at_once(autojump_clock):
    """``process.cancel(process.pid())`` from a process that reads its events waited for
    its own end, so the CANCEL it had just queued was never read: it sat out the whole
    timeout, then was terminated. It now returns at once; the process reads its CANCEL,
    cleans up, and the timeout still bounds it."""
    async def quits(timeout: float) -> object:
        events = process.events()
        t0 = trio.current_time()
        await process.cancel(process.pid(), timeout=timeout)
        event = await events.receive()
        return event.kind, event.pid == process.pid(), trio.current_time() - t0

    async def lingers() -> None:
        process.events()
        await process.cancel(process.pid(), timeout=3)
        await trio.sleep_forever()  # ignores its CANCEL: terminated all the same

    async with garrison.open_node() as node:
        assert await node.wait(await node.spawn(quits, 100)) == (EventKind.CANCEL, True, 0)
        pid = await node.spawn(lingers)
        t0 = trio.current_time()
        with pytest.raises(ProcessError, match=r"Terminated: did not stop within 3s"):
            await node.wait(pid)
        assert trio.current_time() - t0 == 3


# -- a cancel asked while no node ran takes its place in time -------------------------
@garrison.activity
async def _step_after(how: str) -> str:
    return how


async def _waits_then_steps(how: str) -> str:
    if how == "sleep":
        await garrison.workflow.sleep("2s")
    elif how == "receive timeout":
        await process.inbox().receive(timeout="2s")
    elif how == "timer":
        await garrison.workflow.first(garrison.workflow.promise("p"),
                                      garrison.workflow.timer("2s"))
    else:
        await process.inbox().receive()
    await _step_after(how)
    await garrison.workflow.sleep("30s")
    return "done"


@pytest.mark.parametrize("asked", ["after", "before"])
@pytest.mark.parametrize("how", ["sleep", "receive timeout", "timer", "message"])
async def test_a_cancel_asked_while_no_node_ran_comes_after_what_came_before_it(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch, autojump_clock: object,
        how: str, asked: str) -> None:
    """The node stops while the workflow waits; while it is down a deadline passes (or
    a message is committed), and then a cancel is asked (`garrison workflows cancel`).
    The node that came back delivered the cancel at once, at the wait: the deadline or
    message that came first never counted, where a node that ran on would have taken
    it, run the next step, and met the cancel at the wait after. A cancel asked before
    the deadline (or the message) still comes first."""
    from types import SimpleNamespace

    from garrison.hosts.workflow import _waits

    db = str(tmp_path / "s.db")  # type: ignore[operator]
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_waits_then_steps, how, id="w")
        await trio.sleep(1)  # waiting (the 2 s deadline is ahead)
    with garrison.persistence.open_store(db, lock=False) as tool:
        if how == "message":
            came = _waits._time.time() + 60
            tool.deliver("w", "hello", 1, time=came)
        elif how == "timer":
            came = next(r.outcome["deadline"] for r in tool.journal("w") if r.kind == "timer")
        else:
            (timer,) = tool.timers("w")
            came = timer.deadline.timestamp()
        tool.request_cancel("w", time=came + (0.5 if asked == "after" else -0.5))
    real_time = _waits._time.time
    monkeypatch.setattr(_waits, "_time", SimpleNamespace(time=lambda: real_time() + 7200))
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()
        journal = [(r.kind, r.seq) for r in node.workflow("w").history()]
    wait = {"sleep": [("sleep", 1)], "receive timeout": [("receive", 1)],
            "timer": [("promise", 1), ("timer", 2), ("first", 3)],
            "message": [("receive", 1)]}[how]
    if asked == "after":  # as a node that ran on: the wait ends, the step runs
        assert journal == [*wait, ("activity", len(wait) + 1), ("cancel", len(wait) + 2)]
    else:
        assert journal == [*wait[:-1], ("cancel", len(wait))]


async def _sleeps_notes_then_steps() -> str:
    await garrison.workflow.sleep("2s")
    garrison.workflow.set_state("woke", True)  # (buffered: the next step commits it)
    await _step_after("a")
    await _step_after("b")
    return "done"


async def test_a_cancel_asked_while_no_node_ran_comes_at_the_step_after_a_buffered_record(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch, autojump_clock: object) -> None:
    """As above, the cancel asked after the deadline, but a record waits in the buffer
    (a state set as the sleep ended) when the next step begins: the ``@activity``
    wrapper commits it itself (``Activities.step_outcome``), and the cancel, which
    nothing before the step decided, arrives as the step is called, as in
    ``Activities.activity``: the step runs (it was under way when the cancel came) and
    the workflow meets the cancel at the step after (without it, at none: the
    workflow ran on to its end)."""
    from types import SimpleNamespace

    from garrison.hosts.workflow import _waits

    db = str(tmp_path / "s.db")  # type: ignore[operator]
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_sleeps_notes_then_steps, id="w")
        await trio.sleep(1)  # waiting (the 2 s deadline is ahead)
    with garrison.persistence.open_store(db, lock=False) as tool:
        (timer,) = tool.timers("w")
        tool.request_cancel("w", time=timer.deadline.timestamp() + 0.5)
    real_time = _waits._time.time
    monkeypatch.setattr(_waits, "_time", SimpleNamespace(time=lambda: real_time() + 7200))
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()
        journal = [(r.kind, r.name.rpartition(":")[2], r.seq)
                   for r in node.workflow("w").history()]
        assert node.workflow("w").state("woke") is True
    assert journal == [("sleep", "", 1), ("activity", "_step_after", 2), ("cancel", "", 3)]


async def _waits_for_a_message() -> str:
    await process.inbox().receive()
    return "done"


async def _spawns_sleeps_notes_then_steps() -> str:
    await process.spawn(_waits_for_a_message, id="waiter")
    await garrison.workflow.sleep("2s")
    garrison.workflow.set_state("woke", True)  # (buffered: the next step commits it)
    await _step_after("a")
    await _step_after("b")
    return "done"


async def test_a_cancel_coming_at_a_step_after_a_buffered_record_cancels_the_children(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch, autojump_clock: object) -> None:
    """As above, with a child waiting: the cancel arrives in the ``@activity`` wrapper's
    first half (``Activities.step_outcome``, which hands the buffered record over to
    be committed before the cancel's arrival cancels the children): the record is
    committed, the step runs, the workflow meets the cancel at the step after, and its
    child is cancelled."""
    from types import SimpleNamespace

    from garrison.hosts.workflow import _waits

    db = str(tmp_path / "s.db")  # type: ignore[operator]
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_spawns_sleeps_notes_then_steps, id="w")
        await trio.sleep(1)  # waiting (the 2 s deadline is ahead)
    with garrison.persistence.open_store(db, lock=False) as tool:
        (timer,) = tool.timers("w")
        tool.request_cancel("w", time=timer.deadline.timestamp() + 0.5)
    real_time = _waits._time.time
    monkeypatch.setattr(_waits, "_time", SimpleNamespace(time=lambda: real_time() + 7200))
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("waiter").result()
        journal = [(r.kind, r.name.rpartition(":")[2], r.seq)
                   for r in node.workflow("w").history()]
        assert node.workflow("w").state("woke") is True
    assert [kind for kind, _, _ in journal[:1]] == ["spawn"]
    assert journal[1:] == [("sleep", "", 2), ("activity", "_step_after", 3),
                           ("cancel", "", 4)]


async def _parent_of_a_sleeper() -> str:
    for _ in range(50):  # (records to replay before it meets its first wait)
        await _step_after("noop")
    await process.spawn(_waits_then_steps, "sleep", id="child")
    await process.events().receive()
    return "done"


async def test_a_cancel_asked_while_no_node_ran_reaches_the_children_in_its_place(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch, autojump_clock: object) -> None:
    """A parent cancelled while no node ran: its children were cancelled only once the
    parent met its first wait after the restart, meanwhile running on as if nothing had
    been asked (a child's sleep that ended after the cancel, and its next step, ran:
    helper-248). They are cancelled as the node resumes, in the cancel's place in time."""
    from types import SimpleNamespace

    from garrison.hosts.workflow import _waits

    db = str(tmp_path / "s.db")  # type: ignore[operator]
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_parent_of_a_sleeper, id="p")
        await trio.sleep(1)  # the child waits (its 2 s deadline is ahead)
    with garrison.persistence.open_store(db, lock=False) as tool:
        (timer,) = tool.timers("child")
        tool.request_cancel("p", time=timer.deadline.timestamp() - 0.5)
    real_time = _waits._time.time
    monkeypatch.setattr(_waits, "_time", SimpleNamespace(time=lambda: real_time() + 7200))
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("p").result()
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("child").result()
        assert [(r.kind, r.seq) for r in node.workflow("child").history()] == [("cancel", 1)]


async def test_a_second_cancel_asked_while_no_node_ran_keeps_the_first_ones_time(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch, autojump_clock: object) -> None:
    """Two operators cancel a workflow no node runs, one before its sleep's deadline and
    one after: the second overwrote the time the first had stored, and the resuming
    node let the sleep end and the next step run before the cancel. The first cancel
    stands, as on a node that ran on (a cancel asked again is moot there)."""
    from types import SimpleNamespace

    from garrison.hosts.workflow import _waits, flag_cancel

    db = str(tmp_path / "s.db")  # type: ignore[operator]
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_waits_then_steps, "sleep", id="w")
        await trio.sleep(1)  # waiting (the 2 s deadline is ahead)
    with garrison.persistence.open_store(db, lock=False) as tool:
        (timer,) = tool.timers("w")
        came = timer.deadline.timestamp()
        for at in (came - 0.5, came + 0.5):
            assert flag_cancel(tool, tool.get_workflow("w"), time=at) is None
        assert tool.get_workflow("w").cancel_time == came - 0.5
    real_time = _waits._time.time
    monkeypatch.setattr(_waits, "_time", SimpleNamespace(time=lambda: real_time() + 7200))
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("w").result()
        assert [(r.kind, r.seq) for r in node.workflow("w").history()] == [("cancel", 1)]


async def _collects_until_cancelled() -> list[str]:
    got: list[str] = []
    try:
        async for msg in process.inbox():
            got.append(msg.payload)
    except garrison.WorkflowCancelled:
        await _undo(",".join(got))
        raise
    return got


async def _signals_then_cancel(target: Any, db: str | None, parked: bool) -> None:
    """Three workflows of ``target``, each signalled 'a' then 'b' then cancelled (once
    ``parked`` in its first wait, or at once): each compensation saw both messages."""
    _RAN.clear()
    async with garrison.open_node(store=db) as node:
        for n in range(3):
            await node.start_workflow(target, id=f"w{n}")
            handle = node.workflow(f"w{n}")
            if parked:
                await trio.testing.wait_all_tasks_blocked()
            await handle.signal("note", "a")
            await handle.signal("note", "b")
            await handle.cancel()
            with pytest.raises(garrison.WorkflowCancelled):
                await handle.result()
    assert _RAN == ["undo a,b"] * 3


@pytest.mark.parametrize("parked", [True, False])
@pytest.mark.parametrize("on_disk", [True, False])
async def test_a_message_committed_before_a_cancel_is_received_before_it(
        autojump_clock: object, tmp_path: object, parked: bool, on_disk: bool) -> None:
    """A signal, then a cancel, of a running workflow: the cancel came at the workflow's
    next receive (or the receive that the signal woke) with the message waiting there,
    so the compensation ran without it, as by the scheduler's chance (a node resumed
    after a restart took the message first, as README says a node that ran on does)."""
    await _signals_then_cancel(_collects_until_cancelled,
                               str(tmp_path / "m.db") if on_disk else None,  # type: ignore[operator]
                               parked)


async def test_a_message_and_a_cancel_a_tool_wrote_together_are_received_in_order(
        tmp_path: object) -> None:
    """`garrison workflows signal`, then `cancel`, while a node runs the workflow: when
    its node read both in one look at the store, the cancel came first, and the
    compensation ran without the message (as in the test above, through the store)."""
    db = str(tmp_path / "m.db")  # type: ignore[operator]
    _RAN.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_collects_until_cancelled, id="c")
        await trio.testing.wait_all_tasks_blocked()
        with garrison.persistence.open_store(db, lock=False) as tool:
            now = time.time()
            tool.deliver("c", "note", "a", time=now)
            tool.deliver("c", "note", "b", time=now + 0.001)
            tool.request_cancel("c", time=now + 0.002)
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("c").result()
    assert _RAN == ["undo a,b"]


async def _collects_until_timeout_or_cancelled() -> list[str]:
    got: list[str] = []
    try:
        while True:
            r = process.inbox().receive()
            t = garrison.workflow.timer(3600)
            if await garrison.workflow.first(r, t) is t:
                return got
            got.append((await r).payload)
    except garrison.WorkflowCancelled:
        await _undo(",".join(got))
        raise


@pytest.mark.parametrize("parked", [True, False])
@pytest.mark.parametrize("on_disk", [True, False])
async def test_a_message_before_a_cancel_is_taken_by_the_race_under_way(
        autojump_clock: object, tmp_path: object, parked: bool, on_disk: bool) -> None:
    """A receive raced in workflow.first() under way when a message, then a cancel,
    came takes the message first, as a receive awaited alone does, and as a node
    resuming the workflow decides the race (the message was committed before the
    cancel): the cancel comes at the next race."""
    await _signals_then_cancel(_collects_until_timeout_or_cancelled,
                               str(tmp_path / "f.db") if on_disk else None,  # type: ignore[operator]
                               parked)


@garrison.activity
async def _a_while() -> None:
    await trio.sleep(10)


async def _races_after_a_step() -> list[str]:
    got: list[str] = []
    try:
        await _a_while()
        r = process.inbox().receive()
        t = garrison.workflow.timer(3600)
        if await garrison.workflow.first(r, t) is r:
            got.append((await r).payload)
        await garrison.workflow.sleep(1)
    except garrison.WorkflowCancelled:
        await _undo(",".join(got))
        raise
    return got


async def test_a_message_before_a_cancel_is_taken_by_a_race_made_after_it(
        autojump_clock: object, tmp_path: object) -> None:
    """A message then a cancel while the workflow ran an activity call: the race made
    after the call (its receive, then its timer) takes the message before the cancel
    comes, as a node resuming the workflow decides it; not the timer's creation."""
    _RAN.clear()
    async with garrison.open_node(store=str(tmp_path / "t.db")) as node:  # type: ignore[operator]
        await node.start_workflow(_races_after_a_step, id="t")
        await trio.sleep(1)
        await node.workflow("t").signal("note", "a")
        await node.workflow("t").cancel()
        with pytest.raises(garrison.WorkflowCancelled):
            await node.workflow("t").result()
    assert _RAN == ["undo a"]


async def _waits_for_a_message() -> str:
    got = await garrison.process.inbox().receive()  # (a line its carets would mark)
    return str(got)


async def test_a_cancelled_workflows_traceback_has_its_frames_without_carets(
        node: garrison.Node, autojump_clock: object) -> None:
    """A parent's cancel ends thousands of children at once in the node's thread, and
    each formatted its WorkflowCancelled's traceback with its columns and carets (a walk
    of each frame's code positions and a parse of its line: 0.9 ms a child, 11 s of a
    frozen node at 10,000). A cancel is not a crash: its traceback keeps every frame
    and line, and the chained error it was raised from, without the ^^^ lines."""
    await node.start_workflow(_waits_for_a_message, id="w")
    await trio.testing.wait_all_tasks_blocked()
    await node.workflow("w").cancel()
    with pytest.raises(garrison.WorkflowCancelled):
        await node.workflow("w").result()
    record = node.hosts["workflows"].store.get_workflow("w")
    assert record is not None and record.status == "cancelled"
    error = record.error
    assert error is not None
    assert (error.type, error.message) == ("WorkflowCancelled", "workflow 'w' was cancelled")
    lines = error.traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "    got = await garrison.process.inbox().receive()  # (a line its carets would " \
        "mark)" in lines
    assert lines[-1] == "garrison.WorkflowCancelled: workflow 'w' was cancelled"
    assert not [line for line in lines if line.strip() and set(line.strip()) <= set("^~")]


def _raise_chained() -> None:
    try:
        try:
            raise ValueError("first")
        except ValueError as exc:
            raise KeyError("second") from exc
    except KeyError:
        error = garrison.WorkflowCancelled("third")
        error.add_note("a note")
        raise error  # noqa: B904 (its context is what is tested)


def test_a_cancels_error_reads_as_its_full_traceback_without_the_carets() -> None:
    """cancel_error_info formats what traceback.format_exception does, chained errors
    and notes included, less the caret lines; a group in the chain as ever."""
    import re
    import traceback

    from garrison.actors._values import ErrorInfo, cancel_error_info

    def caught(fn: object) -> BaseException:
        try:
            fn()  # type: ignore[operator]
        except BaseException as exc:
            return exc
        raise AssertionError("nothing raised")

    exc = caught(_raise_chained)
    full = "".join(traceback.format_exception(exc))
    plain = "".join(line for line in full.splitlines(keepends=True)
                    if not re.fullmatch(r"\s*[\^~]+\s*", line))
    assert plain != full and "During handling" in plain and "direct cause" in plain
    info = cancel_error_info(exc)
    assert (info.type, info.message, info.traceback) == ("WorkflowCancelled", "third", plain)

    def group() -> None:
        raise ExceptionGroup("many", [garrison.WorkflowCancelled("one")])

    exc = caught(group)
    assert cancel_error_info(exc) == ErrorInfo.from_exception(exc)


_HANDLED: list[str] = []


async def _waits_and_handles_its_cancel() -> None:
    try:
        await garrison.process.inbox().receive()
    except garrison.WorkflowCancelled:
        _HANDLED.append(garrison.workflow.info().workflow_id)
        raise


async def test_a_parents_cancel_runs_its_childrens_cancellations_in_turns(
        tmp_path: object, autojump_clock: object) -> None:
    """A parent's cancel woke all its children at once, so trio ran every child's
    cancellation in one scheduler pass: at 10,000 children the node's thread ran nothing
    else for seconds (no other workflow, process, timer, console or lease renewal). The
    children are flagged at once and woken CANCEL_CHUNK a pass; each still ends
    cancelled, through its handler."""
    from garrison.hosts.workflow import _host

    chunk = getattr(_host, "CANCEL_CHUNK", 200)
    n = 6 * chunk + 7
    db = str(tmp_path / "s.db")  # type: ignore[operator]
    name = f"{__name__}:_waits_and_handles_its_cancel"
    with garrison.persistence.open_store(db) as store:
        tx = garrison.persistence.Transaction()
        tx.create_workflow("p", f"{__name__}:_waits_for_a_message", [], status="running",
                           host="workflows")
        for i in range(n):
            tx.create_workflow(f"c{i}", name, [], status="running", host="workflows",
                               parent=garrison.Pid("workflows", "p"))
        store.write(tx)
    _HANDLED.clear()
    passes: list[int] = []

    async def count_each_pass() -> None:
        while True:
            passes.append(len(_HANDLED))
            await trio.lowlevel.checkpoint()

    async with garrison.open_node(store=db) as node, trio.open_nursery() as nursery:
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(count_each_pass)
        await node.workflow("p").cancel()
        for i in range(n):
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow(f"c{i}").result()
        nursery.cancel_scope.cancel()
    assert sorted(_HANDLED) == sorted(f"c{i}" for i in range(n))
    # (the counter runs once a pass, anywhere in it: between two of its runs come the
    # end of one pass and the start of the next, a chunk's handlers from each)
    most = max(after - before for before, after in itertools.pairwise(passes))
    assert most <= 2 * chunk, most


async def test_a_parents_terminate_finds_its_children_by_the_index_of_them(
        tmp_path: object, autojump_clock: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminated parent's tree was ended by a walk over every workflow of the node
    for each workflow of the tree: 10**8 steps for 10,000 children, the node frozen 17 s
    in the terminate. Each workflow's children are found by the index of them; every
    child still ends terminated with its parent."""
    from garrison.hosts.workflow._instance import ActiveWorkflows

    n = 50
    db = str(tmp_path / "s.db")  # type: ignore[operator]
    with garrison.persistence.open_store(db) as store:
        tx = garrison.persistence.Transaction()
        tx.create_workflow("p", f"{__name__}:_waits_for_a_message", [], status="running",
                           host="workflows")
        for i in range(n):
            tx.create_workflow(f"c{i}", f"{__name__}:_waits_for_a_message", [],
                               status="running", host="workflows",
                               parent=garrison.Pid("workflows", "p"))
        store.write(tx)
    walks = 0
    values = ActiveWorkflows.values

    def counted(self: ActiveWorkflows) -> object:
        nonlocal walks
        walks += 1
        return values(self)

    async with garrison.open_node(store=db) as node:
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.setattr(ActiveWorkflows, "values", counted)
        await node.workflow("p").terminate("by the test")
        monkeypatch.undo()
        for i in range(n):
            with pytest.raises(garrison.WorkflowFailed,
                               match="its parent workflow 'p' was terminated"):
                await node.workflow(f"c{i}").result()
    assert walks < n, walks
