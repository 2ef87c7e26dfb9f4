"""The workflow engine at its edges (found by reviews of this round's fixes): a node's
stop cancelling an activity that runs a nursery, ``continue_as_new`` inside a nursery,
a refused ``version()`` change id, a process of another node waiting for a result."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import trio
from _commit_faults import slow_commits
from _stores import no_digit_limit

import garrison
from garrison import StoreError, process, workflow
from garrison.persistence import open_store

RUNS: list[str] = []


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def fan_out() -> str:
    RUNS.append("fan_out")
    async with trio.open_nursery() as nursery:  # an activity doing two things at once
        nursery.start_soon(trio.sleep_forever)
        await trio.sleep_forever()
    return "done"


async def runs_fan_out() -> str:
    return await workflow.call(fan_out)


async def test_node_stop_during_an_activity_with_a_nursery_is_not_its_failure(
        autojump_clock: Any, tmp_path: Any) -> None:
    """The node's stop cancels an activity running a nursery: the group of Cancelled
    it raises is no failed attempt (with max_attempts=1 the failure was journaled, and
    the next node saw the activity failed instead of running it again)."""
    db = str(tmp_path / "s.db")
    RUNS.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(runs_fan_out, id="w")
        while not RUNS:
            await trio.sleep(0.01)
        await trio.sleep(1)
    with open_store(db, lock=False) as tool:
        assert [(r.kind, r.outcome) for r in tool.journal("w")] == []


async def _wait_result(handle: Any) -> Any:
    return await handle.result()


async def test_a_process_of_another_node_waiting_for_a_result_is_not_left_hanging(
        autojump_clock: Any, tmp_path: Any) -> None:
    """A process waiting for the result of a workflow of a node that stops: a process
    of that node waits to be stopped with it; one of another node gets "the node has
    stopped" (it was left waiting for ever)."""
    import workflow_app as app

    async with garrison.open_node(store=str(tmp_path / "a.db")) as a:
        async with garrison.open_node(store=str(tmp_path / "b.db")) as b:
            await b.start_workflow(app.receiver, id="w1")
            handle = b.workflow("w1")
            pid = await a.spawn(_wait_result, handle)
            await trio.sleep(0.5)
        # node b has stopped; a's process should now fail with "the node has stopped"
        with trio.fail_after(30):
            with pytest.raises(garrison.ProcessError, match="the node has stopped"):
                await a.wait(pid)


async def continues_in_a_nursery(n: int) -> int:
    """continue_as_new from the workflow's own task, inside a nursery it opened (trio
    wraps it in a BaseExceptionGroup)."""
    if n >= 1:
        return n
    async with trio.open_nursery():
        workflow.continue_as_new(n + 1)
    return -1


async def test_continue_as_new_in_a_nursery_does_not_escape_the_engine(
        node: garrison.Node, autojump_clock: object) -> None:
    """``continue_as_new`` called inside a nursery (trio wraps it in a group): the
    workflow goes on as a new run (the group escaped the engine and stopped the node)."""
    await node.start_workflow(continues_in_a_nursery, 0, id="cn")
    with trio.fail_after(10):
        assert await node.workflow("cn").result() == 1


async def version_nul_caught() -> list[Any]:
    out: list[Any] = []
    try:
        workflow.version("gate\x00", 1, 2)
    except ValueError:
        out.append("refused")
    out.append(workflow.history_length())
    out.append(await sz_small2())
    await workflow.sleep(1000)
    return out


@garrison.activity()
async def sz_small2() -> str:
    return "small"


async def test_a_refused_version_change_id_takes_no_seq(
        autojump_clock: Any, tmp_path: Any) -> None:
    """A change id holding NUL is refused before a seq is taken (the code that catches
    the ValueError goes on with the next seq), and again in a replay."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(version_nul_caught, id="v")
        await trio.sleep(10)
        seqs = [r.seq for r in node.workflow("v").history()]
    assert seqs[0] == 1, seqs  # (the activity is the first record: no seq taken)
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5000):
            got = await node.workflow("v").result()
    assert got[0] == "refused"


def charge(amount: int) -> int:  # a plain function: the config makes it an activity
    RUNS.append(f"charge {amount}")
    return amount * 3


async def calls_by_entry_id(amount: int) -> list[Any]:
    started = workflow.start("app:charge", amount + 1)
    out: list[Any] = [await workflow.call("app:charge", amount), await started]
    for other in ("app:nothing", "app:pay"):
        try:
            await workflow.call(other, amount)
        except ValueError as exc:
            out.append(str(exc))
    return out


async def test_an_activity_may_be_named_by_its_function_py_entry_id(
        autojump_clock: Any, tmp_path: Any) -> None:
    """API.md: any target may be an entry id; README: an activity is a function.py
    entry. workflow.call("app:charge") ran the string as a function (TypeError: the
    first argument must be callable); now it runs the entry's function, journaled under
    the function's own name, and an unknown id is a ValueError at the call."""
    import garrison.testing
    from garrison.config import load_config_text
    from garrison.hosts.workflow._replay import History

    config = load_config_text(f"""
version: "1.0"
namespace: app
entries:
  - {{name: charge, kind: function.py, source: "{__name__}:charge"}}
  - {{name: pay, kind: workflow.py, source: "{__name__}:calls_by_entry_id"}}
""")
    RUNS.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(config=config, store=db) as node:
        await node.start_workflow("app:pay", 2, id="p")
        got = await node.workflow("p").result()
    assert got[:2] == [6, 9]
    assert "workflow.call('app:nothing'): no config entry 'app:nothing'" in got[2]
    assert "workflow.call('app:pay'): the entry is a workflow.py, not a function.py" in got[3]
    assert sorted(RUNS) == ["charge 2", "charge 3"]
    with open_store(db) as store:
        names = {r.name for r in store.journal("p") if r.kind == "activity"}
        history = History.from_store(store, "p")
    assert names == {f"{__name__}:charge"}
    # a replay has no config: the functions the records name (a review found the
    # replay tool stopping with "replay mode refused a node operation")
    replayed = garrison.testing.replay(history)
    assert replayed.error is None and replayed.checked == replayed.records


async def long_job(x: int) -> int:
    await workflow.sleep("150s")
    return x


async def test_a_node_stop_cancels_a_supervisors_workflow_child_without_waiting(
        autojump_clock: Any, tmp_path: Any) -> None:
    """A supervisor's workflow child at the node's stop: the supervisor's final cleanup
    waited 10 s for the child to end, which its stopped host never reported. Its cancel
    is recorded and not waited for: the stop takes no time, the child ends cancelled
    when the next node resumes it, and the supervisor started there runs one child (a
    first fix left the child running: every restart added one more copy)."""
    from garrison.supervision import ChildSpec, Supervisor

    db = str(tmp_path / "s.db")
    for run in range(3):
        sup = Supervisor([ChildSpec("w", long_job, args=(1,), host="workflows")])
        async with garrison.open_node(store=db) as node:
            await node.spawn(sup)
            await trio.sleep(0.3)
            live = [w.workflow_id for w in node.workflows()
                    if w.status in ("running", "sleeping", "pending")]
            assert live == [sup.which_children()[0][1].id], (run, live)
            closing = trio.current_time()
        assert trio.current_time() - closing < 1.0


async def named_job(x: int) -> int:
    from garrison import process

    process.register("the-job")
    try:
        await workflow.sleep("150s")
    except garrison.WorkflowCancelled:
        await workflow.sleep("3s")  # (a durable cleanup: it outlives the new child's start)
        raise
    return x


async def test_a_supervisors_workflow_child_cancelled_at_a_stop_leaves_its_names_to_the_next(
        autojump_clock: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A supervisor's workflow child that registers a name, and cleans up durably when
    cancelled: the node stops (its cancel recorded), and at the next start the old
    child resumed and took its name again for its cleanup, so the supervisor's new
    child failed at its register, was restarted at once three times and the supervisor
    gave up; the cleanup then ended, and nothing ran or held the name (helper-253).
    A child cancelled because its supervisor ended leaves its names to its successor:
    the new child holds the name, and the old one ends cancelled."""
    from garrison.supervision import ChildSpec, Supervisor

    db = str(tmp_path / "s.db")
    children = []
    for run in range(2):
        sup = Supervisor([ChildSpec("w", named_job, args=(run,), host="workflows")])
        async with garrison.open_node(store=db) as node:
            sup_pid = await node.spawn(sup)
            await trio.sleep(5)
            assert node.process_info(sup_pid) is not None  # (it did not give up)
            (_, child, _), = sup.which_children()
            children.append(child)
            assert node.lookup("the-job") == child
    async with garrison.open_node(store=db) as node:
        assert node.workflow(children[0].id).status() == "cancelled"
    assert "SupervisorGaveUp" not in caplog.text


async def a_child() -> str:
    return "child done"


async def spawns_a_child() -> str:
    from garrison import process

    await process.spawn(a_child, host="workflows")
    ended = await process.events().receive()  # its EXIT
    return str(ended.result)


async def test_a_parent_with_the_longest_id_starts_children(
        autojump_clock: Any, tmp_path: Any) -> None:
    """A child's id is its parent's plus '.<seq>': a parent with an id of the longest
    size allowed failed at its first child ('invalid workflow id' of 1,002 bytes, an
    id the user never gave). Derived ids may be a little longer."""
    from garrison.hosts.workflow._ids import MAX_KEY_BYTES

    wid = "p" * MAX_KEY_BYTES
    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        await node.start_workflow(spawns_a_child, id=wid)
        assert await node.workflow(wid).result() == "child done"


async def nests(depth: int) -> str:
    if depth:
        await process.spawn(nests, depth - 1, host="workflows")
    return "spawned"


async def test_children_nested_past_the_derived_id_size_say_why(autojump_clock: Any) -> None:
    """helper-224: 120 levels under a 995-character id, the child at depth 19 failed on
    an id the user never gave, "1201 bytes long (at most 1200) ... a workflow id is ...
    at most 1000 bytes": two limits, and the rule of ids given as the way out."""
    async with garrison.open_node() as node:
        await node.start_workflow(nests, 120, id="n" * 995)
        await trio.sleep(5)
        failed = node.workflows(status="failed")
        assert len(failed) == 1, failed
        with pytest.raises(garrison.WorkflowFailed) as info:
            await node.workflow(failed[0].workflow_id).result()
    said = str(info.value)
    assert "invalid child workflow id" in said and "1201 bytes" in said, said
    assert "a child's id is its parent's with '.N' added" in said, said
    assert "at most 1000 bytes of UTF-8" not in said, said


@garrison.activity
async def takes_a_second() -> str:
    await trio.sleep(1.0)
    return "slow"


async def looks_late(activity_first: bool) -> str:
    started = workflow.start(takes_a_second)
    timer = workflow.timer("0.2s")
    await workflow.sleep("1.5s")  # both are done when it looks
    won = await (workflow.first(started, timer) if activity_first
                 else workflow.first(timer, started))
    return "activity" if won is started else "timer"


@pytest.mark.parametrize("activity_first", [True, False])
async def test_first_sees_a_started_activity_done_when_it_finished(
        autojump_clock: Any, tmp_path: Any, activity_first: bool) -> None:
    """first() decides by when each was done; a started activity counted as done
    before anything (whatever the order, it beat a timer due 0.8 s before it ended)."""
    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        await node.start_workflow(looks_late, activity_first, id="r")
        assert await node.workflow("r").result() == "timer"


SCRIPT = '''
import sys, trio, garrison
from garrison import workflow

@garrison.activity
async def note(x: int) -> int:
    return x

async def approve_wf() -> str:
    await note(1)
    decision = await workflow.promise("approval")
    return f"approved by {decision['by']}"

async def main():
    async with garrison.open_node(store=sys.argv[1]) as node:
        try:
            await node.start_workflow(approve_wf, id="w1")
        except TypeError as exc:
            print("refused:", exc)
            return
        if len(sys.argv) > 2:  # the second run: it resumes, resolved meanwhile
            print(await node.workflow("w1").result())

if __name__ == "__main__":
    trio.run(main)
'''


def test_a_workflow_of_a_script_run_with_python_is_named_by_the_script(tmp_path: Any) -> None:
    """A new user's `python wf.py` recorded its workflow as `__main__:approve_wf`, which
    no other process (nor the next run of the script, under `garrison run`, ...) could
    import: the workflow was blocked for good. It is recorded as `wf:approve_wf`, its
    activities as `wf:...`; a script whose file name is no module name keeps __main__,
    with a warning."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {"PYTHONPATH": str(root)}
    (tmp_path / "wf.py").write_text(SCRIPT)
    db = str(tmp_path / "app.db")
    run = subprocess.run([sys.executable, str(tmp_path / "wf.py"), db], capture_output=True,
                         text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    with open_store(db, lock=False) as store:
        rec = store.get_workflow("w1")
        assert rec is not None and rec.name == "wf:approve_wf"
        # its activities too (a review found them still recorded as __main__:note)
        assert [r.name for r in store.journal("w1") if r.kind == "activity"] == ["wf:note"]
    # another process, which imports the script as the module wf: found again
    later = subprocess.run([sys.executable, "-m", "garrison", "workflows", "--store", db,
                            "resolve", "w1", "approval", '{"by": "ann"}'],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert later.returncode == 0, later.stderr
    again = subprocess.run([sys.executable, str(tmp_path / "wf.py"), db, "again"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and "approved by ann" in again.stdout, again.stderr
    # a file named so that no module has its name: recorded as before, and said so
    (tmp_path / "my-app.py").write_text(SCRIPT)
    odd = subprocess.run([sys.executable, str(tmp_path / "my-app.py"), str(tmp_path / "o.db")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert odd.returncode == 0, odd.stderr
    assert "__main__:approve_wf is recorded under the name __main__" in odd.stderr


@garrison.activity
async def charge_it(x: int) -> int:
    return x


async def charges_then_sleeps(x: int) -> str:
    await charge_it(x)
    await workflow.sleep("1h")
    return "done"


async def test_a_stop_as_a_workflow_parks_leaves_its_row_parked(tmp_path: Any) -> None:
    """A new user closed the node right after a start: the workflow was committing its
    sleep's timer as the stop read who is parked, and its row said `running` (a crash,
    by README) with the timer recorded. A workflow that parks as the node stops gets
    its parked status too."""
    for i in range(8):
        db = str(tmp_path / f"s{i}.db")
        async with garrison.open_node(store=db) as node:
            await node.start_workflow(charges_then_sleeps, 1, id="c1")
        with open_store(db, lock=False) as store:
            rec = store.get_workflow("c1")
            assert rec is not None
            assert (str(rec.status), len(store.timers("c1"))) in (
                ("sleeping", 1), ("running", 0)), i


async def waits_for_a_message() -> object:
    return (await process.inbox().receive()).payload


def _running_waiters(db: str, n: int) -> None:
    """Workflows ``w0`` ... of ``waits_for_a_message`` in store ``db``, as a node that
    ran them leaves them (``running``, each waiting for its message once resumed)."""
    with open_store(db) as store:
        tx = garrison.persistence.Transaction()
        for i in range(n):
            tx.create_workflow(f"w{i}", f"{__name__}:waits_for_a_message", [],
                               status="running", host="workflows")
        store.write(tx)


async def _each_resumed(db: str, n: int) -> None:
    """A node opened on ``db`` resumes each of ``_running_waiters``' ``n`` workflows:
    each gets its message and ends with it."""
    async with garrison.open_node(store=db) as node:
        for i in range(n):
            await node.send(f"workflows/w{i}", "go", i)
        for i in range(n):
            assert await node.workflow(f"w{i}").result() == i


async def test_thousands_parked_at_a_resume_are_written_in_chunks_a_crash_between_resumes(
        tmp_path: Any, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parked statuses of every workflow a node resumed were one transaction written
    in the node's thread: at 10,000 on PostgreSQL its event loop stood still for a
    second or more. They are PARKED_CHUNK a transaction, the node's other tasks running
    between two; a crash after the first (a copy of the store then: what a crash
    leaves, some rows parked, the others still running) resumes every workflow."""
    import sqlite3

    from garrison.hosts.workflow import _host

    chunk = getattr(_host, "PARKED_CHUNK", 250)
    n = 2 * chunk + 1
    db = str(tmp_path / "s.db")
    crashed = str(tmp_path / "crashed.db")
    _running_waiters(db, n)
    written: list[int] = []
    commit_statuses = _host.WorkflowHost._commit_statuses

    async def copied_after_the_first(self: Any, tx: Any, background: bool = False) -> Any:
        done = await commit_statuses(self, tx, background)
        if background and tx.ops:
            written.append(len(tx.ops))
            if len(written) == 1:
                with sqlite3.connect(db) as src, sqlite3.connect(crashed) as dst:
                    src.backup(dst)
        return done

    monkeypatch.setattr(_host.WorkflowHost, "_commit_statuses", copied_after_the_first)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(1)
        assert {str(w.status) for w in node.workflows()} == {"waiting"}
    assert written == [chunk, chunk, 1]
    monkeypatch.undo()
    with open_store(crashed, lock=False) as store:
        stored = {str(r.status) for r in store.list_workflows()}
        assert stored == {"waiting", "running"}  # (the crash came between two)
    await _each_resumed(crashed, n)


@pytest.mark.parametrize("failure", ["disk", "moved"])
async def test_parked_statuses_a_failed_chunk_left_unwritten_are_written_at_the_next_round(
        tmp_path: Any, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, failure: str) -> None:
    """A failed transaction of parked statuses (the second of three, as a node resumed
    2 * PARKED_CHUNK + 1 parked workflows) left its own workflows and the ones after it
    ``running`` in the store for as long as they stayed parked: the rest waited for
    some other workflow to park, and the failed ones counted as written. Both are
    written at the next round (one warning said the failure), and the store shows each
    parked; but one the failure said another node runs now (``WorkflowMoved``, in a
    cluster) is left to that node."""
    import logging

    from garrison import WorkflowMoved
    from garrison.hosts.workflow import _host
    from garrison.persistence import SQLiteStore
    from garrison.persistence._transaction import Op

    chunk = _host.PARKED_CHUNK
    n = 2 * chunk + 1
    db = str(tmp_path / "s.db")
    _running_waiters(db, n)
    statuses: list[int] = []
    moved: list[str] = []
    commit = SQLiteStore.commit

    def fails_the_second(self: Any, tx: Any) -> Any:
        if tx.ops and all(op is Op.UPDATE_WORKFLOW for op, _ in tx.ops) and len(tx.ops) > 1:
            statuses.append(len(tx.ops))
            if len(statuses) == 2 and failure == "disk":
                raise StoreError(db, "the disk is full")
            if len(statuses) == 2:
                moved.append(tx.workflow_ids[7])
                raise WorkflowMoved(db, moved[0], "another node runs it now")
        return commit(self, tx)

    monkeypatch.setattr(SQLiteStore, "commit", fails_the_second)
    caplog.set_level(logging.WARNING, "garrison")
    async with garrison.open_node(store=db) as node:
        await trio.sleep(5)
        assert {str(w.status) for w in node.workflows()} == {"waiting"}
        with open_store(db, lock=False) as tool:
            stored = {r.workflow_id: str(r.status) for r in tool.list_workflows()}
        running = [wid for wid, status in stored.items() if status == "running"]
        assert running == moved, (statuses, len(running))
        await node.send("workflows/w0", "go", 0)
        assert await node.workflow("w0").result() == 0
    warned = [r for r in caplog.records if "statuses of parked" in r.getMessage()]
    assert len(warned) == 1, warned


async def test_a_workflow_that_wakes_between_two_chunks_of_parked_statuses_keeps_its_end(
        tmp_path: Any, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review of the parked statuses written PARKED_CHUNK a transaction: a workflow
    not yet written when the first transaction commits gets its message then and ends
    (its end committed while the rest wait for their turn). Its row says it completed,
    not ``waiting`` (each workflow is read as its own transaction is made); the others
    are each written parked."""
    from garrison.hosts.workflow import _host

    chunk = _host.PARKED_CHUNK
    n = chunk + 10
    db = str(tmp_path / "s.db")
    _running_waiters(db, n)
    woken: list[str] = []
    commit_statuses = _host.WorkflowHost._commit_statuses

    async def wakes_one_after_the_first(self: Any, tx: Any, background: bool = False
                                        ) -> Any:
        failed = await commit_statuses(self, tx, background)
        if background and len(tx.ops) == chunk and not woken:
            written = set(tx.workflow_ids)
            woken.append(next(f"w{i}" for i in range(n) if f"w{i}" not in written))
            await node.send(f"workflows/{woken[0]}", "go", "done")
            assert await node.workflow(woken[0]).result() == "done"
        return failed

    monkeypatch.setattr(_host.WorkflowHost, "_commit_statuses", wakes_one_after_the_first)
    async with garrison.open_node(store=db) as node:
        await trio.sleep(1)
        with open_store(db, lock=False) as tool:
            stored = {r.workflow_id: str(r.status) for r in tool.list_workflows()}
    assert woken and stored.pop(woken[0]) == "completed"
    assert set(stored.values()) == {"waiting"} and len(stored) == n - 1


async def test_a_node_that_closes_between_two_chunks_of_parked_statuses_leaves_each_parked(
        tmp_path: Any, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review of the parked statuses written PARKED_CHUNK a transaction: the node
    closes as the first of three is committed, the others still to come. Its stop
    writes each parked workflow's row (whichever task writes it first, none is left
    ``running``, none written over an end), and the next node resumes every one."""
    from garrison.hosts.workflow import _host

    chunk = _host.PARKED_CHUNK
    n = 2 * chunk + 1
    db = str(tmp_path / "s.db")
    _running_waiters(db, n)
    first = trio.Event()
    commit_statuses = _host.WorkflowHost._commit_statuses

    async def tells_the_first(self: Any, tx: Any, background: bool = False) -> Any:
        failed = await commit_statuses(self, tx, background)
        if background and tx.ops:
            first.set()
        return failed

    monkeypatch.setattr(_host.WorkflowHost, "_commit_statuses", tells_the_first)
    async with garrison.open_node(store=db):
        await first.wait()
    monkeypatch.undo()
    with open_store(db, lock=False) as tool:
        assert {str(r.status) for r in tool.list_workflows()} == {"waiting"}
    await _each_resumed(db, n)


async def test_thousands_parked_at_a_stop_are_written_in_chunks_a_crash_between_resumes(
        tmp_path: Any, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's stop wrote the parked status of every workflow it ran as one
    transaction in the node's thread (at 10,000, it showed at shutdown). They are
    PARKED_CHUNK a transaction, as at a resume; a crash after the first (a copy of the
    store then: some rows parked, the others still running, the resume's own write of
    them held back) resumes every workflow."""
    import sqlite3

    from garrison.hosts.workflow import _host

    chunk = _host.PARKED_CHUNK
    n = 2 * chunk + 1
    db = str(tmp_path / "s.db")
    crashed = str(tmp_path / "crashed.db")
    _running_waiters(db, n)
    written: list[int] = []
    commit_statuses = _host.WorkflowHost._commit_statuses

    async def copied_after_the_first(self: Any, tx: Any, background: bool = False) -> Any:
        done = await commit_statuses(self, tx, background)
        if not background and tx.ops:
            written.append(len(tx.ops))
            if len(written) == 1:
                with sqlite3.connect(db) as src, sqlite3.connect(crashed) as dst:
                    src.backup(dst)
        return done

    monkeypatch.setattr(_host, "PARKED_DELAY", 3600.0)  # (the stop writes them)
    monkeypatch.setattr(_host.WorkflowHost, "_commit_statuses", copied_after_the_first)
    async with garrison.open_node(store=db) as node:
        while {str(w.status) for w in node.workflows()} != {"waiting"}:
            await trio.sleep(0.001)
    assert written == [chunk, chunk, 1]
    monkeypatch.undo()
    with open_store(crashed, lock=False) as store:
        stored = {str(r.status) for r in store.list_workflows()}
        assert stored == {"waiting", "running"}  # (the crash came between two)
    await _each_resumed(crashed, n)
    with open_store(db, lock=False) as store:  # (and the stop itself parked each)
        assert {str(r.status) for r in store.list_workflows()} == {"waiting"}


async def test_a_stops_failed_parked_write_leaves_the_rest_running_and_resumed(
        tmp_path: Any, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop whose first transaction of parked statuses the store refuses (logged by
    ``_commit_statuses``) asks no more of it (the store is failing): every row reads
    ``running``, and the next node resumes each."""
    from garrison.hosts.workflow import _host

    n = _host.PARKED_CHUNK + 1
    db = str(tmp_path / "s.db")
    _running_waiters(db, n)
    asked: list[int] = []
    commit_statuses = _host.WorkflowHost._commit_statuses

    async def refused(self: Any, tx: Any, background: bool = False) -> Any:
        if background or not tx.ops:
            return await commit_statuses(self, tx, background)
        asked.append(len(tx.ops))
        return StoreError(db, "disk I/O error")

    monkeypatch.setattr(_host, "PARKED_DELAY", 3600.0)  # (the stop writes them)
    monkeypatch.setattr(_host.WorkflowHost, "_commit_statuses", refused)
    async with garrison.open_node(store=db) as node:
        while {str(w.status) for w in node.workflows()} != {"waiting"}:
            await trio.sleep(0.001)
    assert asked == [_host.PARKED_CHUNK]
    monkeypatch.undo()
    with open_store(db, lock=False) as store:
        assert {str(r.status) for r in store.list_workflows()} == {"running"}
    await _each_resumed(db, n)


async def test_a_supervisors_queued_workflow_child_is_cancelled_at_node_stop_too(
        autojump_clock: Any, tmp_path: Any) -> None:
    """A review of the fix above: a workflow child waiting in its host's queue (the host
    full) at the node's stop was not running there, so no cancel was recorded, and each
    restart added one more pending copy."""
    from garrison.supervision import ChildSpec, Supervisor

    db = str(tmp_path / "s.db")
    for run in range(3):
        sup = Supervisor([ChildSpec("w", long_job, args=(1,), host="workflows")])
        async with garrison.open_node(store=db, max_concurrent=1) as node:
            if run == 0:
                await node.start_workflow(long_job, 0, id="hog")
            await node.spawn(sup)
            await trio.sleep(0.3)
            child = sup.which_children()[0][1].id
    with open_store(db, lock=False) as store:
        left = [r.workflow_id for r in store.list_workflows()
                if not r.cancel_requested and r.workflow_id not in ("hog", child)
                and str(r.status) in ("pending", "running", "sleeping")]
    assert left == []


REPL_SESSION = '''\
import garrison
from garrison import workflow

@garrison.activity
async def step(x):
    return x * 10

async def wf(x):
    got = await workflow.promise("go")
    return await step(x) + got

async with garrison.open_node(store=DB) as node:
    print("STARTED", await node.start_workflow(wf, 1, id="r1"))

async with garrison.open_node(store=DB) as node:
    await node.workflow("r1").promise("go").resolve(5)
    print("RESULT", await node.workflow("r1").result())

'''


def test_a_workflow_typed_at_the_trio_repl_runs_and_resumes_in_that_session(
        tmp_path: Any) -> None:
    """At `python -m trio`'s prompt, a workflow was refused: "cannot run
    trio.__main__:wf as a workflow: it is not importable by that name" (the console's
    namespace is not the __main__ module). It runs, and resumes in the same session,
    recorded as __main__ (with the warning that no other process finds it)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    db = tmp_path / "repl.db"
    session = f"DB = {str(db)!r}\n" + REPL_SESSION
    run = subprocess.run([sys.executable, "-m", "trio"], input=session, capture_output=True,
                         text=True, env={"PYTHONPATH": str(root)}, timeout=60)
    assert "RESULT 15" in run.stdout, run.stdout + run.stderr
    assert "__main__:wf is recorded under the name __main__" in run.stdout + run.stderr
    with open_store(str(db), lock=False) as store:
        rec = store.get_workflow("r1")
        assert rec is not None and rec.name == "__main__:wf"
        assert [r.name for r in store.journal("r1") if r.kind == "activity"] == ["__main__:step"]


DECORATED_SCRIPT = '''\
import sys, trio, garrison, lib

@lib.logged  # its wrapper has the globals of lib, its __module__ is __main__
async def double(x):
    return 2 * x

async def main():
    async with garrison.open_node(store=sys.argv[1]) as node:
        await node.start_workflow(double, 4, id="d1")
        print("RESULT", await node.workflow("d1").result())

if __name__ == "__main__":
    trio.run(main)
'''


def test_a_decorated_workflow_of_a_script_keeps_the_scripts_name(tmp_path: Any) -> None:
    """The interactive-console check of a __main__ function looks through a library
    decorator's wrapper: a decorated workflow of `python wf2.py` is `wf2:double`."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "lib.py").write_text(
        "import functools\n\ndef logged(fn):\n    @functools.wraps(fn)\n"
        "    async def wrapper(*args):\n        return await fn(*args)\n    return wrapper\n")
    (tmp_path / "wf2.py").write_text(DECORATED_SCRIPT)
    db = str(tmp_path / "d.db")
    run = subprocess.run([sys.executable, str(tmp_path / "wf2.py"), db], capture_output=True,
                         text=True, env={"PYTHONPATH": f"{root}:{tmp_path}"}, timeout=60)
    assert "RESULT 8" in run.stdout, run.stdout + run.stderr
    with open_store(db, lock=False) as store:
        rec = store.get_workflow("d1")
        assert rec is not None and rec.name == "wf2:double"


SCRIPT_FLOWS = '''\
from __future__ import annotations

import attrs


@attrs.frozen
class Order:
    id: str
    qty: int


class Blob:
    pass


async def place(order: Order) -> Order:
    return order


async def place_all(orders: list[Order]) -> int:
    return len(orders)


async def wrong_result() -> int:
    return Order("a", 1)
'''


@pytest.fixture(params=["python my_flows.py", "python -m my_flows", "import my_flows"])
def my_flows(request: Any, monkeypatch: Any, tmp_path: Any) -> Any:
    """The module my_flows of SCRIPT_FLOWS, as a script runs it (its module is __main__)
    or as a later process imports it (`import my_flows`, `garrison run`)."""
    import importlib.machinery
    import sys
    import types

    from garrison._targets import main_module_name

    path = tmp_path / "my_flows.py"
    path.write_text(SCRIPT_FLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = types.ModuleType("my_flows" if request.param == "import my_flows" else "__main__")
    module.__file__ = str(path)
    if request.param == "python -m my_flows":
        module.__spec__ = importlib.machinery.ModuleSpec("my_flows", None, origin=str(path))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    main_module_name.cache_clear()  # (who is __main__ is asked once per process)
    exec(compile(SCRIPT_FLOWS, str(path), "exec"), module.__dict__)
    yield module
    main_module_name.cache_clear()


async def test_a_payload_error_of_a_script_names_its_module_once(my_flows: Any,
                                                                  tmp_path: Any) -> None:
    """`python my_flows.py` passing a bad payload got `cannot store the arguments of
    workflow my_flows:place (id 'w1'): a value of type __main__.Blob ...`: the one module
    named twice, by two names, and otherwise than when another process imports it. Its
    classes are named by the script's module name, as its workflows are."""
    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        with pytest.raises(garrison.PayloadError) as stored:
            await node.start_workflow(my_flows.place, my_flows.Blob(), id="w1")
        with pytest.raises(garrison.PayloadError) as restored:
            await node.start_workflow(my_flows.place_all, [{"id": "a", "qty": "x"}], id="w2")
        await node.start_workflow(my_flows.wrong_result, id="w3")
        with pytest.raises(garrison.WorkflowFailed) as failed:
            await node.workflow("w3").result()
    assert str(stored.value).startswith(
        "cannot store the arguments of workflow my_flows:place (id 'w1'): a value of type "
        "my_flows.Blob at [0] cannot be converted to JSON")
    assert str(restored.value) == (
        "cannot restore argument 1 (orders) of workflow my_flows:place_all (id 'w2') as "
        "list[my_flows.Order]: at [0].qty: expected an integer, got a string \"x\"")
    assert ("workflow 'w3' (my_flows:wrong_result) returned a my_flows.Order, which its "
            "return annotation int does not accept") in str(failed.value)


async def collects(n: int) -> list[Any]:
    inbox = garrison.process.inbox()
    got: list[Any] = []
    for _ in range(n):
        msg = await inbox.receive(timeout=30)
        got.append("timed out" if msg is None else msg.payload)
        if msg is None:
            break
    return got


async def sends_each_run(to: str, run: int) -> str:
    await garrison.process.send(to, "n", f"run {run}")  # seq 1 of every run
    if run < 2:
        workflow.continue_as_new(to, run + 1)
    return "sent"


async def answers(n: int) -> int:
    inbox = garrison.process.inbox()
    for _ in range(n):
        msg = await inbox.receive()
        await msg.reply(msg.payload * 10)
    return n


async def calls_each_run(to: str, run: int) -> list[Any]:
    got = await garrison.process.call(to, "ping", run, timeout="30s")  # seq 1 of each run
    workflow.set_state("got", [*workflow.get_state("got", []), got])
    if run < 1:
        workflow.continue_as_new(to, run + 1)
    return list(workflow.get_state("got"))


async def test_a_send_of_a_continued_run_is_not_the_first_runs_message(
        node: garrison.Node, autojump_clock: object) -> None:
    """A continued run's seqs start from 1 again, and a message's id was ``<id>#<seq>``:
    its send at the seq of one of an earlier run was a duplicate to the inbox, dropped
    (the receiver timed out; a call's request likewise got no reply). A continued run's
    messages are ``<id>.<run>#<seq>``."""
    await node.start_workflow(collects, 3, id="coll")
    await node.start_workflow(sends_each_run, "workflows/coll", 0, id="snd")
    assert await node.workflow("snd").result() == "sent"
    assert await node.workflow("coll").result() == ["run 0", "run 1", "run 2"]
    await node.start_workflow(answers, 2, id="srv")
    await node.start_workflow(calls_each_run, "workflows/srv", 0, id="cl")
    assert await node.workflow("cl").result() == [0, 10]


async def test_continued_runs_whose_run_ids_begin_alike_send_under_ids_of_their_own(
        node: garrison.Node, autojump_clock: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A continued run's message ids held the first 12 hex digits of its run id (48
    random bits), and a store drops a message whose id it holds, from any sender to any
    receiver, for ever: two runs of one workflow whose 48 bits agreed (one time in two
    within some 20 million runs of it; a fleet of long-lived workflows that continue
    often meets it far sooner) sent at the same seq under one id, and the later one's
    message was lost while the send returned (a call's request: no reply). They carry
    the whole run id (122 random bits)."""
    import types
    import uuid

    from garrison.hosts.workflow import _instance

    def alike() -> uuid.UUID:  # (run ids whose first 12 hex digits agree)
        return uuid.UUID(hex="abcdef012345" + uuid.uuid4().hex[12:])

    monkeypatch.setattr(_instance, "_uuid", types.SimpleNamespace(uuid4=alike,
                                                                  UUID=uuid.UUID))
    await node.start_workflow(collects, 3, id="coll")
    await node.start_workflow(sends_each_run, "workflows/coll", 0, id="snd")
    assert await node.workflow("snd").result() == "sent"
    assert await node.workflow("coll").result() == ["run 0", "run 1", "run 2"]
    await node.start_workflow(answers, 3, id="srv")
    await node.start_workflow(calls_each_run, "workflows/srv", -1, id="cl")
    assert await node.workflow("cl").result() == [-10, 0, 10]


async def continues_then_sends(to: str, run: int) -> str:
    """Run 0 continues as new; run 1 waits for a message, then sends one (seq 2)."""
    if run == 0:
        workflow.continue_as_new(to, 1)
    await garrison.process.inbox().receive()
    await garrison.process.send(to, "n", "from run 1")
    return "sent"


@pytest.mark.parametrize("older", [False, True])
async def test_a_run_an_older_garrison_continued_keeps_the_message_ids_it_had(
        autojump_clock: object, tmp_path: Any, older: bool) -> None:
    """A run continued by an older garrison (its seq-0 record without ``ids``) goes on
    deriving its ids from its run id's first 12 hex digits on a newer one: a call made
    again after a crash and an event a recovery delivers again must take the id they
    took before, or the receiver would get them twice."""
    import json
    import sqlite3

    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(collects, 1, id="coll")
        await node.start_workflow(continues_then_sends, "workflows/coll", 0, id="w")
        await trio.sleep(1)
    conn = sqlite3.connect(db)
    with conn:
        [(text,)] = conn.execute(
            "SELECT outcome FROM journal WHERE workflow_id = 'w' AND seq = 0")
        first = json.loads(text)
        assert first["ids"] == 2
        if older:
            del first["ids"]
            conn.execute("UPDATE journal SET outcome = ? WHERE workflow_id = 'w' AND "
                         "seq = 0", (json.dumps(first),))
    conn.close()
    async with garrison.open_node(store=db) as node:
        await node.workflow("w").signal("go")
        assert await node.workflow("w").result() == "sent"
        assert await node.workflow("coll").result() == ["from run 1"]
    with open_store(db, lock=False) as store:
        rec = store.get_workflow("w")
        assert rec is not None and rec.run_id
        run = rec.run_id[:12] if older else rec.run_id
        sent = store.inbox_message(f"w.{run}#2")
        assert sent is not None and sent.workflow_id == "coll"


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1200, initial_delay="1ms",
                                              backoff=10.0, max_delay="1ms"))
async def never_works() -> str:
    raise ConnectionError("service down")


async def retries_long() -> str:
    try:
        return await never_works()
    except garrison.ActivityError as exc:
        return f"gave up: {exc}"


async def test_a_long_retry_policy_waits_its_max_delay_and_gives_up_cleanly(
        node: garrison.Node, autojump_clock: object) -> None:
    """The delay before attempt n+1 was computed as initial * backoff ** (n - 1) before
    the cap: past ~300 attempts at backoff 10 (1025 at the default 2.0, about 17 hours
    into "retry for a day") it overflowed, and the workflow failed with OverflowError
    instead of seeing the activity's ActivityError."""
    assert garrison.RetryPolicy(max_attempts=2000).delay(1025) == 60.0
    assert garrison.RetryPolicy(max_attempts=2000, initial_delay=0).delay(1025) == 0.0
    await node.start_workflow(retries_long, id="long")
    assert (await node.workflow("long").result()).startswith("gave up:")


async def ends_at_once() -> str:
    return "done"


async def monitors_a_dead_pid_again() -> list[Any]:
    pid = await garrison.process.spawn_monitored(ends_at_once, host="processes")
    events = garrison.process.events()
    first = await events.receive()
    garrison.process.monitor(pid)  # a dead pid: an EXIT (noproc) at once
    second = await events.receive(timeout=30)
    return [str(first.kind), None if second is None else str(second.error)]


async def test_a_workflow_monitoring_a_dead_process_again_gets_its_exit(
        node: garrison.Node, autojump_clock: object) -> None:
    """The EXIT of a dead pid's monitor had the inbox id of the EXIT the workflow got
    when the process ended (one per process and workflow), so a second monitor of it
    never got one (a plain process got its noproc)."""
    await node.start_workflow(monitors_a_dead_pid_again, id="m2")
    got = await node.workflow("m2").result()
    assert got[0] == "EXIT" and got[1] is not None and "noproc" in got[1]


async def tags(tag: str) -> str:
    return tag


async def spawns_an_id_its_next_child_would_derive() -> list[str]:
    me = workflow.info().workflow_id
    first = await garrison.process.spawn(tags, "explicit", host="workflows", id=f"{me}.2")
    second = await garrison.process.spawn(tags, "derived")  # seq 2: <id>.2 is taken
    return [str(first), str(second)]


async def test_a_derived_child_id_taken_by_an_explicit_child_falls_back(
        node: garrison.Node, autojump_clock: object) -> None:
    """A child's id is <parent>.<seq>, or <parent>.<run>.<seq> when that is taken; one
    taken by the parent's own child started with that id explicitly was treated as
    free (the parent's own), and the parent failed: 'the id is taken'."""
    await node.start_workflow(spawns_an_id_its_next_child_would_derive, id="ad")
    first, second = await node.workflow("ad").result()
    assert first == "workflows/ad.2" and second != first
    assert second.startswith("workflows/ad.") and second.endswith(".2")


PROFILED = '''\
import trio, garrison

async def wf(x):
    return x + 1

async def main():
    async with garrison.open_node() as node:
        try:
            await node.start_workflow(wf, 1, id="a")
            print("STARTED")
        except TypeError as exc:
            print("REFUSED", exc)

trio.run(main)
'''


def test_a_workflow_of_a_script_run_by_cprofile_is_refused_as_before(tmp_path: Any) -> None:
    """Only an interactive console's functions are kept by name in the process: a script
    run by ``python -m cProfile`` executes in a namespace of its own, and its workflow,
    which no later process could find, is refused at the start (not accepted as
    __main__:wf and blocked at the next start)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "prof_app.py").write_text(PROFILED)
    run = subprocess.run([sys.executable, "-m", "cProfile", "prof_app.py"], cwd=tmp_path,
                         capture_output=True, text=True, env={"PYTHONPATH": str(root)},
                         timeout=60)
    assert "REFUSED cannot run" in run.stdout and "not importable" in run.stdout, run.stdout


async def receives_one() -> Any:
    msg = await garrison.process.inbox().receive(timeout=60)
    return None if msg is None else msg.payload


async def test_a_message_arriving_while_a_receive_writes_its_timer_wakes_it(
        node: garrison.Node, autojump_clock: object, monkeypatch: Any) -> None:
    """A receive with a timeout found the inbox empty, then committed its timer and
    parked: a message (or event) pushed while that timer was being written woke
    nothing (the workflow made its wake-up event only as it parked), so the receive
    slept to its deadline and took the message then. Seen in a cluster test: a trapping
    workflow took one of two events, and the second, arriving while the next
    receive's timer was written, waited out the receive's 60 s."""
    from garrison.hosts.workflow._core import WorkflowCore
    from garrison.persistence import Op

    commit = WorkflowCore._commit
    pushed: list[str] = []

    async def commit_after_a_message(self: Any, tx: Any) -> list[Any]:
        if not pushed and any(op is Op.ADD_TIMER and params[3] == "receive"
                              for op, params in tx.ops):
            pushed.append("hi")
            await node.send(self.pid, "m", "hi")  # it lands while the timer is written
        return await commit(self, tx)

    monkeypatch.setattr(WorkflowCore, "_commit", commit_after_a_message)
    start = trio.current_time()
    await node.start_workflow(receives_one, id="r1")
    assert await node.workflow("r1").result() == "hi"
    assert pushed == ["hi"]
    assert trio.current_time() - start < 60  # (it did not wait for the deadline)



async def short_job() -> str:
    return workflow.info().workflow_id


async def test_starts_of_one_id_wait_for_each_other_also_after_a_cancelled_start(
        autojump_clock: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Starts of one id wait while one of them creates it. When that one was cancelled
    (its caller timed out), each waiter woke and took the id without looking again:
    they all created it at once, and a start that began waiting meanwhile had its wait
    overwritten and waited for ever (seen as triggers hanging while a node closed)."""
    from garrison.persistence import Op, Transaction

    db = str(tmp_path / "s.db")
    creating = 0
    most = 0
    release = trio.Event()
    pids: list[str] = []
    async with garrison.open_node(store=db) as node:
        store_type = type(node.hosts["workflows"].store)
        commit = store_type.commit

        async def gated_creates(self: Any, tx: Transaction) -> list[Any]:
            nonlocal creating, most
            if tx.ops[0][0] is Op.CREATE_WORKFLOW and tx.workflow_ids[0] == "x":
                creating += 1
                most = max(most, creating)
                try:
                    await release.wait()
                finally:
                    creating -= 1
            return await commit(self, tx)

        monkeypatch.setattr(store_type, "commit", gated_creates)

        async def start(scope: trio.CancelScope) -> None:
            with scope:
                pids.append(str(await node.start_workflow(short_job, id="x")))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                first = trio.CancelScope()
                nursery.start_soon(start, first)
                await trio.sleep(0.1)  # the first start is creating "x"
                for _ in range(3):
                    nursery.start_soon(start, trio.CancelScope())  # these wait for it
                await trio.sleep(0.1)
                first.cancel()  # its caller gave up: the others wake
                await trio.sleep(0.1)
                assert most == 1  # one start creates "x" at a time
                release.set()
        assert pids == ["workflows/x"] * 3
        assert await node.workflow("x").result() == "x"


async def test_a_held_write_in_flight_as_the_node_stops_is_written_before_the_store_closes(
        tmp_path: Any, caplog: pytest.LogCaptureFixture, autojump_clock: Any) -> None:
    """`garrison run --main` whose main returned at once, with a pending workflow to
    resume: the recovery's write of the workflow's host (held for the write-soon task)
    was in flight as the stop looked for held writes, found none, and closed the store:
    `host workflows could not write <Transaction ['update_workflow']>: store 'a.db' is
    closed` (one run in six). The stop waits for the write under way."""
    from garrison.persistence import SQLiteStore, Transaction

    path = str(tmp_path / "wf.db")
    async with garrison.open_node(store=path) as node:
        host = node.hosts["workflows"]
        store = host.store  # (the node's own: it closes it as it stops)
        commit = store.commit

        async def slow_commit(tx: Any) -> Any:  # (a commit gathering its batch, say)
            if "update_workflow" in repr(tx):
                with trio.CancelScope(shield=True):
                    await trio.sleep(1)
            return await commit(tx)

        store.commit = slow_commit
        store.write(Transaction().create_workflow("w", "app:f", [], status="completed"))
        host.write_soon(Transaction().update_workflow("w", host="elsewhere"))
        await trio.sleep(0.1)  # (the write-soon task has it in flight)
    assert "could not write" not in caplog.text
    with SQLiteStore(path, lock=False) as look:
        record = look.get_workflow("w")
        assert record is not None and record.host == "elsewhere"


async def test_a_workflow_a_tool_started_is_loaded_once_as_the_node_resumes_it(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pending workflow was loaded twice as a node resumed (once to look for a
    terminate, again for the queue): its rows read twice and the write of its host sent
    twice, for every workflow waiting in the store."""
    from garrison.hosts.workflow import _recovery
    from garrison.persistence import Transaction

    path = str(tmp_path / "wf.db")
    with open_store(path) as store:
        store.write(Transaction().create_workflow("p", "test_workflow_edges:_one", [],
                                                  status="pending"))
    load, loads = _recovery.load, []

    def counted(host: Any, record: Any) -> Any:
        loads.append(record.workflow_id)
        return load(host, record)

    monkeypatch.setattr(_recovery, "load", counted)
    async with garrison.open_node(store=path) as node:
        with trio.fail_after(10):
            assert await node.workflow("p").result() == 1
    assert loads == ["p"]


async def _one() -> int:
    return 1


async def sleeps_then_returns() -> str:
    await workflow.sleep("1h")
    return "still here"


@pytest.mark.parametrize("in_group", [False, True])
async def test_a_stray_cancelled_fails_that_workflow_only(autojump_clock: Any,
                                                          in_group: bool) -> None:
    """A Cancelled that no cancellation of the workflow caused went up through the
    host's nurseries: the node hung in its stop, every workflow with it. It is that
    workflow's failure, as a process's is."""
    async with garrison.open_node() as node:
        await node.start_workflow(sleeps_then_returns, id="other")
        import workflow_app as app

        await node.start_workflow(app.raises_a_stray_cancelled, in_group, id="stray")
        with pytest.raises(garrison.WorkflowFailed, match=r"Cancelled: trio\.Cancelled came "
                           r"out of workflow 'stray' .* though nothing cancelled it"):
            with trio.fail_after(60):
                await node.workflow("stray").result()
        assert await node.workflow("other").result() == "still here"


@pytest.mark.parametrize("flow", ["catches_a_stray_activity", "catches_a_stray_activity_timed"])
async def test_a_stray_cancelled_from_an_activity_is_a_failed_attempt(
        autojump_clock: Any, flow: str) -> None:
    """An activity's stray Cancelled ended the workflow as its own, after one attempt,
    past the workflow's ``except ActivityError``. It is a failed attempt of that
    activity, retried under its policy and recorded, naming the activity."""
    import workflow_app as app

    app.STRAY_CALLS.clear()
    async with garrison.open_node() as node:
        await node.start_workflow(getattr(app, flow), id="w")
        got = await node.workflow("w").result()
    assert got.startswith("caught RuntimeError: trio.Cancelled came out of activity "
                          "'workflow_app:stray_cancelled_activity', though nothing "
                          "cancelled it"), got
    assert len(app.STRAY_CALLS) == 2  # retried, as any failed attempt


async def looks_whether_done() -> list[Any]:
    promise = workflow.promise("p")
    timer = workflow.timer("0.5s")
    started = workflow.start(takes_a_second)
    seen = [promise.done(), timer.done(), started.done(),
            process.inbox().receive().done()]
    polls = 0
    while not started.done():  # polling a started activity
        polls += 1
        await workflow.sleep("0.3s")
    await workflow.sleep("1h")  # the node stops here
    return [seen, polls]


async def test_done_replays_what_the_first_run_saw(autojump_clock: Any, tmp_path: Any) -> None:
    """helper-265: ``done()`` read the outcome, promise, clock and inbox a replay fills
    from the store: after a restart it was True where it had been False, and a loop
    polling a started activity replayed no sleep (a NonDeterminismError). It is
    recorded, as ``now()`` is."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(looks_whether_done, id="d")
        await trio.sleep(0.1)  # (it polls: it has looked)
        await node.send("workflows/d", "m", 1)
        await trio.sleep(5)
        assert node.workflow("d").status() == "sleeping"
    with open_store(db) as store:  # resolved while no node runs
        store.resolve_promise("d", "p", "late")
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(7200):
            seen, polls = await node.workflow("d").result()
    assert seen == [False, False, False, False], seen
    assert polls >= 3, polls


@garrison.activity
async def takes(seconds: float) -> str:
    await trio.sleep(seconds)
    return "slow"


async def races_a_slow_record() -> str:
    timer = workflow.timer("1s")
    started = workflow.start(takes, 0.9)  # recorded before the deadline, committed after
    await workflow.sleep("3s")  # both are done when it looks
    return "activity" if await workflow.first(timer, started) is started else "timer"


async def test_first_dates_a_started_activity_by_its_record(
        autojump_clock: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-265: a running node dated a finished activity by when its commit returned,
    a node that loaded it after a restart by its record's time (taken before the
    commit): an activity recorded just before a timer's deadline lost the race live and
    won it after a restart. Both go by the record's time."""
    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        slow_commits(monkeypatch, node.hosts["workflows"].store, "activity", seconds=0.5)
        await node.start_workflow(races_a_slow_record, id="r")
        assert await node.workflow("r").result() == "activity"


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def refuses() -> str:
    raise ValueError("no")


#: the coroutines a gather left behind (by each test run)
LEFT: list[Any] = []


async def gathers_past_a_failure() -> str:
    later = workflow.call(takes, 0.1)
    LEFT.append(later)
    try:
        await workflow.gather(workflow.call(refuses), later)
    except garrison.ActivityError:
        return "caught"
    return "gathered"


async def test_a_gather_that_raises_closes_the_coroutines_it_did_not_start(
        autojump_clock: Any) -> None:
    """helper-265: the coroutines after the one that raised were left unawaited, a
    "coroutine 'call' was never awaited" RuntimeWarning at every run and replay."""
    LEFT.clear()
    async with garrison.open_node() as node:
        await node.start_workflow(gathers_past_a_failure, id="g")
        assert await node.workflow("g").result() == "caught"
    assert inspect.getcoroutinestate(LEFT[0]) == inspect.CORO_CLOSED


async def looks_at_a_timer() -> bool:
    timer = workflow.timer("0.5s")
    seen = timer.done()
    await workflow.sleep("1s")
    return seen


@pytest.mark.parametrize("recorded", [False, True])
def test_a_journal_of_before_done_was_recorded_replays(recorded: bool) -> None:
    """A journal written before ``done()`` was recorded has no record of it there: it
    replays, ``done()`` taking no seq; one written since reads its record."""
    journal = [{"seq": 1, "kind": "timer", "name": "", "outcome": {"deadline": 1.5e9}},
               {"seq": 2, "kind": "sleep", "name": "", "outcome": {"deadline": 1.5e9 + 1}}]
    if recorded:
        journal.insert(1, {"seq": 2, "kind": "done", "name": "timer", "outcome": False})
        journal[2]["seq"] = 3
    result = garrison.testing.replay({"name": "test_workflow_edges:looks_at_a_timer",
                                      "journal": journal})
    assert result.ok and result.checked == len(journal), result


async def test_a_held_write_refused_as_its_workflow_moved_is_no_error(
        caplog: pytest.LogCaptureFixture) -> None:
    """A node that cannot import a workflow's code gives it up as it loads it, while the
    note of its host written for it waits its turn: another node claims it, the write
    is refused (the workflow moved), and the log said ``ERROR host ... could not write
    <Transaction ['update_workflow']>: ...``, an internal object on a routine event of a
    rolling deploy. It is an info line naming the workflow."""
    import logging

    from garrison import WorkflowMoved
    from garrison.persistence import Transaction

    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node() as node:
        host = node.hosts["workflows"]

        async def moved(tx: Any) -> Any:
            del host.store.commit  # (once)
            raise WorkflowMoved(None, "w1", "workflow 'w1' has another owner")

        host.store.commit = moved
        done = trio.Event()
        host.write_soon(Transaction().update_workflow("w1", host="workflows"))
        host.write_soon(Transaction(), lambda _results: done.set())
        with trio.fail_after(5):
            await done.wait()  # (the next write goes on)
    [said] = [r for r in caplog.records if "w1" in r.getMessage()]
    assert said.levelno == logging.INFO, said.getMessage()
    assert "another node of the cluster runs it now" in said.getMessage()
    assert "Transaction" not in said.getMessage()


async def test_a_node_names_a_workflow_whose_journal_is_damaged_and_runs_the_others(
        tmp_path: Any, caplog: pytest.LogCaptureFixture, autojump_clock: Any) -> None:
    """A node opening a store where a record of a workflow's journal is damaged (a BLOB
    that is not UTF-8 text, a damaged page) starts, runs the other workflows and names
    that one's workflow and seq in one line (it said ``sequence item 1: expected str
    instance, bytes found``, naming no record)."""
    import logging

    from _stores import sql

    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    with open_store(db) as s:
        tx = Transaction()
        for wid in ("bad", "good"):
            tx.create_workflow(wid, "workflow_app:steps", [0, 3], status="running")
            for seq in (1, 2):
                tx.append_journal(wid, seq, "activity", "workflow_app:add_one", {"ok": seq})
        s.write(tx)
    sql(db, "UPDATE journal SET outcome = x'7b226f6b223a22ff227d' WHERE workflow_id = 'bad' "
            "AND seq = 2")
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5):
            assert await node.workflow("good").result() == 3
            # its result() says so too (it raised NonDeterminismError "... is running")
            with pytest.raises(StoreError, match=(
                    r"^store '.*wf\.db': workflow 'bad': the outcome of its journal record "
                    r"seq 2 is not UTF-8 text \(byte 7 of it is 0xff\): a damaged store \(or "
                    r"a hand edit\); no node runs this workflow until it is repaired")):
                await node.workflow("bad").result()
    [said] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert said == ("cannot resume workflow bad: workflow 'bad': the outcome of its journal "
                    "record seq 2 is not UTF-8 text (byte 7 of it is 0xff)"), said


async def test_a_node_names_a_workflow_whose_row_is_damaged_and_runs_the_others(
        tmp_path: Any, caplog: pytest.LogCaptureFixture, autojump_clock: Any) -> None:
    """A node opening a store where a workflow's row is damaged (text that is not
    UTF-8, a BLOB that is not, a JSON column that is no JSON) starts, runs the other
    workflows and names each damaged one and its column in one error line, also when a
    tool's wakeup of it is waiting; the damaged row is left as it was (the node did not
    start: a traceback of the first damaged row it read)."""
    import logging

    from _stores import sql

    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    damage = {"a": ("CAST(x'5bff5d' AS TEXT)", "is not UTF-8 text (byte 1 of it is 0xff)"),
              "b": ("x'5bff5d'", "is not UTF-8 text (byte 1 of it is 0xff)"),
              "c": ("'[bad'", "is not JSON (Expecting value: line 1 column 2 (char 1))")}
    open_store(db).close()
    with open_store(db, lock=False) as tool:  # (a tool: each leaves a wakeup)
        for wid in ("a", "good", "b", "c"):
            tool.write(Transaction().create_workflow(wid, "workflow_app:steps", [0, 3]))
    for wid, (value, _said) in damage.items():
        sql(db, f"UPDATE workflows SET input = {value} WHERE workflow_id = ?", (wid,))
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5):
            assert await node.workflow("good").result() == 3
            await trio.sleep(1)  # (the tools' wakeups are taken)
            # a handle's reads of it are the store's error, naming it (they raised the
            # DamagedRecord, a JSONDecodeError), and its result() too
            handle = node.workflow("c")
            for read in (handle.status, handle.history):
                with pytest.raises(StoreError, match=(
                        r"^store '.*wf\.db': workflow 'c': its input is not JSON \(.*\) "
                        r"\(cannot read the (status|history) of it: a damaged store")):
                    read()
            with pytest.raises(StoreError, match=r"'c': its input is not JSON .*no node runs"):
                await handle.result()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert said == [f"cannot resume workflow {wid}: workflow {wid!r}: its input {what}"
                    for wid, (_value, what) in damage.items()], said
    rows = sql(db, "SELECT workflow_id, typeof(input), hex(input), status FROM workflows "
                   "WHERE workflow_id != 'good' ORDER BY workflow_id")
    assert rows == [("a", "text", "5BFF5D", "pending"), ("b", "blob", "5BFF5D", "pending"),
                    ("c", "text", "5B626164", "pending")], rows


async def test_a_stored_int_longer_than_the_readers_limit_is_a_store_error_naming_it(
        tmp_path: Any, caplog: pytest.LogCaptureFixture, autojump_clock: Any) -> None:
    """A workflow that returned 10**5000 under ``sys.set_int_max_str_digits(0)``, read
    after a restart at the default limit: ``result()`` raised a bare ``ValueError:
    Exceeds the limit (4300 digits)...`` naming no workflow. It is the store's error
    naming the workflow and how to read it, as for a damaged row (but not called
    damaged); one unfinished with such an argument is named in the node's log and
    left unrun, and its handle's reads say so too."""
    import logging

    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    with no_digit_limit(), open_store(db) as store:
        store.write(Transaction().create_workflow("b", "workflow_app:steps",
                                                  status="completed")
                    .update_workflow("b", result=10**5000)
                    .create_workflow("a", "workflow_app:steps", [10**5000, 3]))
    how = ("holds a whole number of 5,001 digits, more than the 4,300 digits this Python "
           "reads (stored where sys.set_int_max_str_digits() allowed more): raise the "
           "limit in the process that reads it, with sys.set_int_max_str_digits() or "
           "PYTHONINTMAXSTRDIGITS in its environment (0: none)")
    async with garrison.open_node(store=db) as node:
        for wid, column in (("b", "result"), ("a", "input")):
            with pytest.raises(StoreError) as got:
                await node.workflow(wid).result()
            assert str(got.value) == (
                f"store {db!r}: workflow {wid!r}: its {column} {how}; until then this node "
                "reads neither its result nor, while it is unfinished, runs it (see the "
                "node's log)"), str(got.value)
            with pytest.raises(StoreError) as got:
                node.workflow(wid).status()
            assert str(got.value) == (f"store {db!r}: workflow {wid!r}: its {column} {how} "
                                      "(cannot read the status of it: a whole number "
                                      "longer than this Python reads)"), str(got.value)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert said == [f"cannot resume workflow a: workflow 'a': its input {how}"], said


async def test_a_message_holding_an_int_longer_than_the_readers_limit_is_named_the_others_run(
        tmp_path: Any, caplog: pytest.LogCaptureFixture, autojump_clock: Any) -> None:
    """A message sent to a workflow under ``sys.set_int_max_str_digits(0)``, its
    workflow resumed after a restart at the default limit: the resume's read of every
    workflow's inbox raised a bare ``ValueError: Exceeds the limit (4300 digits)...``
    naming none, and no workflow resumed. That workflow is named in the node's log (the
    message, and how to read it) and left unrun with its message kept; the others run."""
    import logging

    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    tx = Transaction()
    for wid, status in (("a", "running"), ("b", "pending"), ("good", "running")):
        tx.create_workflow(wid, "workflow_app:receiver", status=status)
    with no_digit_limit(), open_store(db) as store:
        store.write(tx.deliver("a", "big", [10**5000], msg_id="m-a")
                    .deliver("b", "big", {"n": 10**5000}, msg_id="m-b")
                    .deliver("good", "small", 7, msg_id="m-good"))
    how = ("holds a whole number of 5,001 digits, more than the 4,300 digits this Python "
           "reads (stored where sys.set_int_max_str_digits() allowed more): raise the "
           "limit in the process that reads it, with sys.set_int_max_str_digits() or "
           "PYTHONINTMAXSTRDIGITS in its environment (0: none)")
    said = {wid: f"workflow {wid!r}: the payload of its inbox message 'm-{wid}' (topic "
                 f"'big') {how}" for wid in ("a", "b")}
    async with garrison.open_node(store=db) as node:
        assert await node.workflow("good").result() == ["small", 7]
        for wid in ("a", "b"):
            with pytest.raises(StoreError) as got:
                await node.workflow(wid).result()
            assert str(got.value) == (
                f"store {db!r}: {said[wid]}; until then this node reads neither its result "
                "nor, while it is unfinished, runs it (see the node's log)"), str(got.value)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sorted(errors) == [f"cannot resume workflow {wid}: {said[wid]}"
                              for wid in ("a", "b")], errors
    with no_digit_limit(), open_store(db) as store:  # (kept: a node with the limit
        # raised runs them)
        assert [m.payload for m in store.pending_messages("a")] == [[10**5000]]
        assert [m.payload for m in store.pending_messages("b")] == [{"n": 10**5000}]


async def echo(value: Any = None) -> Any:
    return value


async def test_a_handle_given_as_a_payload_says_what_to_store_instead(
        autojump_clock: Any) -> None:
    """A workflow's or a schedule's handle passed as an argument or a message: the
    error said 'converting a value of type garrison._handle.WorkflowHandle failed:
    NameError: name 'Node' is not defined' (the converter read the handle's fields as a
    record's); it names the handle and what to store instead, its id."""
    async with garrison.open_node() as node:
        await node.start_workflow(echo, id="a")
        handle = node.workflow("a")
        schedule = await node.schedule("s", echo, every="1h")
        for given, kind, where, getter in (
                (handle, "WorkflowHandle", "workflow", "workflow"),
                (schedule, "ScheduleHandle", "schedule", "schedule_handle")):
            with pytest.raises(garrison.PayloadError, match=(
                    rf"{kind} at \[0\] cannot be converted to JSON: a {where}'s handle "
                    rf"is not durable: store the {where}'s id .* and call "
                    rf"node\.{getter}\(id\) where it is used")) as refused:
                await node.start_workflow(echo, given, id=f"b-{where}")
            assert "NameError" not in str(refused.value)
            with pytest.raises(garrison.PayloadError, match=rf"message 't' .*{kind} at \['h'\]"):
                await handle.signal("t", {"h": given})


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def asyncio_fetch() -> str:
    import asyncio
    await asyncio.sleep(1)  # asyncio code, as ported from an asyncio app
    return "fetched"


async def asyncio_in_workflow() -> str:
    import asyncio
    await asyncio.sleep(0)  # (no loop asked: trio's own error, which names asyncio)
    return "slept"


async def asyncio_in_activity() -> str:
    return await asyncio_fetch()


@pytest.mark.parametrize("where", ["workflow", "activity"])
async def test_asyncio_code_in_a_workflow_or_activity_fails_saying_what_to_do(
        where: str) -> None:
    """A user coming from asyncio (DBOS, an asyncio app) who awaits asyncio.sleep or an
    asyncio library in a workflow or an async activity got asyncio's `RuntimeError: no
    running event loop`, nothing saying that garrison runs on trio, nor what to do."""
    fn = asyncio_in_workflow if where == "workflow" else asyncio_in_activity
    async with garrison.open_node() as node:
        await node.start_workflow(fn, id="w")
        with pytest.raises(garrison.WorkflowFailed) as info:
            await node.workflow("w").result()
    message = info.value.error.message
    said = ("RuntimeError: no running event loop" if where == "activity" else
            "trio.run received unrecognized yield message None")
    assert message.startswith(said) and "(asyncio code: garrison runs on trio" in message
    assert "workflow.sleep" in message and "asyncio.run(" in message
    if where == "activity":
        assert info.value.error.type == "ActivityError"



@pytest.mark.parametrize("where", ["row", "journal", "row, not woken"])
async def test_a_damaged_workflow_repaired_runs_and_its_result_is_waited_for(
        where: str, tmp_path: Any, caplog: pytest.LogCaptureFixture,
        autojump_clock: Any) -> None:
    """A workflow named damaged at the node's start (its row, or a record of its
    journal), repaired by hand and woken by a tool (a message): the node ran it, but
    its ``result()`` still raised "no node runs this workflow until it is repaired"
    until the node restarted (the node's note of the damage was kept). The note goes
    once the workflow is read whole; its result is waited for. A running one whose row
    was repaired and that nothing woke is loaded by that ``result()`` (which read its
    row whole), not said to be running."""
    import logging
    import time

    from _stores import sql

    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    open_store(db).close()
    with open_store(db, lock=False) as tool:
        if where == "row":
            tool.write(Transaction().create_workflow("c", "workflow_app:receiver", []))
            damage, repair = ("UPDATE workflows SET input = '[bad' WHERE workflow_id = 'c'",
                              "UPDATE workflows SET input = '[]' WHERE workflow_id = 'c'")
            answer: Any = ["hello", 1]
        else:
            tx = Transaction().create_workflow("c", "workflow_app:steps", [0, 3],
                                               status="running")
            for seq in (1, 2):
                tx.append_journal("c", seq, "activity", "workflow_app:add_one", {"ok": seq})
            tool.write(tx)
            fix = "'{\"ok\": 2}'"
            damage, repair = (
                "UPDATE journal SET outcome = x'7b226f6b223a22ff227d' WHERE seq = 2",
                f"UPDATE journal SET outcome = {fix} WHERE seq = 2")
            if where != "journal":
                damage, repair = (
                    "UPDATE workflows SET input = '[bad' WHERE workflow_id = 'c'",
                    "UPDATE workflows SET input = '[0, 3]' WHERE workflow_id = 'c'")
            answer = 3
    sql(db, damage)
    caplog.set_level(logging.INFO, "garrison")
    async with garrison.open_node(store=db) as node:
        with pytest.raises(StoreError, match="no node runs this workflow until"):
            await node.workflow("c").result()
        sql(db, repair)
        if where != "row, not woken":
            with open_store(db, lock=False) as tool:  # (its wakeup: the node loads it)
                tool.write(Transaction().deliver("c", "hello", 1))
        if where == "journal":  # (its wakeup taken, in a worker thread: read again)
            host = node.hosts["workflows"]
            deadline = time.monotonic() + 10
            while "c" in host.damaged:
                assert time.monotonic() < deadline, "the wakeup was not taken"
                await trio.sleep(0)
        with trio.fail_after(5):
            assert await node.workflow("c").result() == answer
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and said[0].startswith("cannot resume workflow c:"), said


async def test_a_message_whose_refresh_the_store_failed_half_way_is_received(
        tmp_path: Any, caplog: pytest.LogCaptureFixture, autojump_clock: Any) -> None:
    """A tool's message to a workflow waiting to receive, whose refresh by the node's
    wakeup watcher failed at its last read (the workflow's promises): the message was
    put in the workflow's inbox in memory, but the workflow was not woken; the refresh
    tried again found the message known and woke nothing, so the workflow never
    received it. Its refresh reads all it reads before it changes anything."""
    import logging
    import time

    import workflow_app as app

    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    caplog.set_level(logging.INFO, "garrison")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.receiver, id="r")
        host = node.hosts["workflows"]
        while host.active["r"].status != "waiting":
            await trio.sleep(0.01)
        promises = host.store.promises
        failed: list[str] = []

        def failing(wid: str) -> Any:
            if not failed:
                failed.append(wid)
                raise StoreError(host.store.path, "disk I/O error")
            return promises(wid)

        host.store.promises = failing
        with open_store(db, lock=False) as tool:
            tool.write(Transaction().deliver("r", "hello", 1))
        deadline = time.monotonic() + 10  # (the wakeup is taken in a worker thread)
        while host.status("r") != "completed":
            assert time.monotonic() < deadline, "the message was not received"
            await trio.sleep(0.01)
        assert failed == ["r"]
        assert await node.workflow("r").result() == ["hello", 1]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # (the store answered other reads: the failure is taken as r's own, r held apart;
    # once: a warning)
    assert len(said) == 1 and said[0].startswith("could not refresh workflow r:"), said
