"""Bookkeeping of dead processes does not accumulate: monitors, links, calls, caches.

Each test counts live objects with ``gc`` (a bound, not an exact count: the
runtime may keep a few objects around, but never one per dead process).
"""

from __future__ import annotations

import functools
import gc
import logging
from typing import Any

import pytest
import trio
import trio.testing

import garrison
import garrison._router
from garrison import EventKind, Pid, process, workflow
from garrison.hosts._process_host import _Process
from garrison.supervision import ChildSpec, Supervisor


def _count(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


async def _trivial() -> None:
    return None


async def _sleeper() -> None:
    await trio.sleep_forever()


async def test_monitored_children_leave_nothing_behind(node, autojump_clock, monkeypatch):
    # node.wait remembers the last EXIT_MEMORY exits: keep that small so the bound is tight
    monkeypatch.setattr(garrison._router, "EXIT_MEMORY", 100)
    n = 100_000

    async def parent() -> tuple[int, int, int, int]:
        pids0, procs0 = _count(Pid), _count(_Process)
        for _ in range(n):
            child = await process.spawn_monitored(_trivial)
            ev = await process.events().receive()
            assert ev.kind == EventKind.EXIT and ev.pid == child
        return pids0, procs0, _count(Pid), _count(_Process)

    pids0, procs0, pids1, procs1 = await node.wait(await node.spawn(parent))
    assert procs1 <= procs0 + 1, (procs0, procs1)
    assert pids1 <= pids0 + 100 + 50, f"live Pids grew from {pids0} to {pids1} over {n} children"


async def test_watcher_that_ends_first_is_forgotten_by_its_targets(node, autojump_clock):
    # A monitors and links to long-lived processes, then ends: their links and
    # monitors of A go with it
    targets = [await node.spawn(_sleeper) for _ in range(5)]

    async def watcher() -> None:
        for t in targets:
            process.monitor(t)
        for t in targets[:2]:
            process.link(t)

    await node.wait(await node.spawn(watcher))
    for t in targets:
        proc = node.hosts["processes"].procs[t]
        assert not proc.monitored_by and not proc.links, proc


async def test_linked_children_leave_nothing_behind(node, autojump_clock):
    async def parent() -> tuple[set[Pid], set[Pid]]:
        process.set_options(trap_links=True)
        for _ in range(1000):
            await process.spawn_linked_monitored(_trivial)
            await process.events().receive()
        me = node.hosts["processes"].procs[process.pid()]
        return set(me.links or ()), set(me.monitoring or ())

    links, monitoring = await node.wait(await node.spawn(parent))
    assert links == set() and monitoring == set()


async def test_calls_leave_nothing_behind(node, autojump_clock):
    async def echo() -> None:
        async for msg in process.inbox():
            if msg.topic == "die":
                raise RuntimeError("asked to die")
            await msg.reply(msg.payload)

    async def caller() -> tuple[int, int]:
        e = await process.spawn(echo)
        for i in range(100):
            assert await process.call(e, "q", i) == i
        for _ in range(10):  # callees that die, and calls that time out
            d = await process.spawn(echo)
            try:
                await process.call(d, "die")
            except garrison.ProcessError:
                pass
            s = await process.spawn(_sleeper)
            try:
                await process.call(s, "q", timeout=0.1)
            except TimeoutError:
                pass
        me = node.hosts["processes"].procs[process.pid()]
        callee = node.hosts["processes"].procs[e]
        return len(me.calls or ()), len(callee.callers or ())

    assert await node.wait(await node.spawn(caller)) == (0, 0)


async def test_spawn_target_cache_keeps_no_per_spawn_objects(node, autojump_clock):
    # a partial (or closure) made per spawn must not be kept alive by the runtime
    class Marker:
        pass

    async def work(marker: Marker) -> None:
        return None

    def closure() -> object:
        marker = Marker()

        async def run() -> None:
            assert marker is not None

        return run

    for _ in range(200):
        await node.wait(await node.spawn(functools.partial(work, Marker())))
        await node.wait(await node.spawn(closure()))
    assert _count(Marker) == 0


async def test_supervisor_restarting_a_crashing_child_stays_bounded(node, autojump_clock, caplog,
                                                                   monkeypatch):
    monkeypatch.setattr(garrison._router, "EXIT_MEMORY", 100)
    caplog.set_level(logging.CRITICAL, logger="garrison.supervision")
    caplog.set_level(logging.CRITICAL, logger="garrison.process")
    starts = [0]

    async def crashing(**_kw: object) -> None:
        starts[0] += 1
        await trio.sleep(0.001)
        raise RuntimeError("crash")

    sup = Supervisor([ChildSpec("c", crashing, kwargs={"k": 1})], max_restarts=1_000_000,
                     within="10ms")
    await node.spawn(sup)

    async def until(n: int) -> None:
        while starts[0] < n:
            await trio.sleep(0.01)

    await until(500)
    before = len(gc.get_objects()), _count(Pid)
    await until(3500)
    after = len(gc.get_objects()), _count(Pid)
    assert after[1] - before[1] < 50, f"live Pids {before[1]} -> {after[1]} over 3000 restarts"
    assert after[0] - before[0] < 1000, f"live objects {before[0]} -> {after[0]}"


async def test_workflows_waiting_for_a_group_commit_hold_few_objects(tmp_path, monkeypatch):
    """Every object a waiting workflow holds is walked by each collection of the
    cyclic garbage collector, and with a thousand workflows waiting for one group
    commit that is where the time goes: a workflow waiting for a step's commit holds
    its task, frames and the commit's request, not a cancel scope or a nursery it never
    used (made only for a kill, or at a ``workflow.start``), nor sets and lists it
    never used, nor flags or a pid nothing asked for yet, nor (through its frame) the
    other callers' requests.

    Not counted: the nodes of the ``contextvars`` map each task's context copies when
    the workflow sets its variables, whose number and depth follow how many context
    variables the surrounding program set (a test run before this one: one more node
    per workflow)."""
    import workflow_app as app

    from garrison import _observe
    from garrison.persistence import SQLiteStore

    # latency histograms (on for the rest of the process once a test collected metrics)
    # hold a start time per waiting commit: what is counted here is the runtime's own
    monkeypatch.setattr(_observe, "timing", False)
    monkeypatch.setattr(_observe, "active", _observe.tracing)
    n = 200
    store = SQLiteStore(str(tmp_path / "wf.db"))
    held: list[int] = []
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, id="warm-up")
        await node.workflow("warm-up").result()
        gc.collect()
        base = _tracked()
        write = store._group._write_batch

        def census(batch: list) -> None:
            if len(batch) == n:  # the starts', then each of the first nine steps'
                gc.collect()
                held.append(_tracked() - base)
            write(batch)

        store._group._write_batch = census
        await _runs_steps(node, app, n)
    store.close()
    # one batch of starts and one per step but the last, whose outcome rides with each
    # workflow's end (a batch of all 200 ends only if every end came in one pass):
    # every step waited in a full batch
    assert len(held) in (10, 11), held
    per_workflow = max(held) / n
    # (about 15.3 now: 16.3 while a commit joining a batch waited in the engine's
    # coroutine, 20.3 while each also kept a cancel switch, two flags and a pid from its
    # start; 22.3 while a request's balance was a list and a step's transaction named
    # its workflow in a list)
    assert per_workflow < 16.5, f"{per_workflow:.1f} tracked objects per waiting workflow"


async def test_workflows_ending_in_one_group_commit_hold_few_objects(tmp_path, monkeypatch):
    """A thousand workflows started together end together: each waits for the batch of
    its end's commit as it waited for each step's, and what it holds meanwhile is
    walked by each garbage collection as then. Its end held lists for the workflows it
    ends or tells (it had none), for its watchers (none), and a cell object for the
    host (made by a generator expression of the host's ``finish``), one object more
    for each of them per waiting workflow."""
    import workflow_app as app

    from garrison import _observe
    from garrison.persistence import SQLiteStore
    from garrison.persistence._transaction import Op

    monkeypatch.setattr(_observe, "timing", False)  # (see the test above)
    monkeypatch.setattr(_observe, "active", _observe.tracing)
    n = 200
    store = SQLiteStore(str(tmp_path / "wf.db"))
    held: list[int] = []
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, 1, id="warm-up")
        await node.workflow("warm-up").result()
        gc.collect()
        base = _tracked()
        write = store._group._write_batch

        def census(batch: list) -> None:
            ends = sum(op is Op.UPDATE_WORKFLOW for request in batch for op, _ in request.tx.ops)
            if ends >= n // 2:
                gc.collect()
                held.append(_tracked() - base)
            write(batch)

        store._group._write_batch = census
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(functools.partial(node.start_workflow, app.steps, i, 1,
                                                     id=f"w{i}"))
        for i in range(n):
            assert await node.workflow(f"w{i}").result() == i + 1
    store.close()
    assert held, "no batch held the ends of half the workflows"
    per_workflow = max(held) / n
    assert per_workflow < 24.5, f"{per_workflow:.1f} tracked objects per ending workflow"


async def _runs_steps(node: garrison.Node, app: Any, n: int) -> None:
    """``n`` workflows of ``app.steps`` (ten steps each) started at once from a nursery,
    ``w0`` on, and each one's result awaited."""
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(functools.partial(node.start_workflow, app.steps, i,
                                                 id=f"w{i}"))
    for i in range(n):
        assert await node.workflow(f"w{i}").result() == i + 10


def _count_transactions(monkeypatch: Any, *modules: Any) -> list[int]:
    """Make ``modules``' ``Transaction`` count the transactions they make, in the list
    returned (``monkeypatch.undo()`` ends it)."""
    from garrison.persistence import Transaction

    made = [0]

    class Counted(Transaction):
        __slots__ = ()

        def __init__(self) -> None:
            made[0] += 1
            super().__init__()

    for module in modules:
        monkeypatch.setattr(module, "Transaction", Counted)
    return made


async def test_a_workflow_records_its_steps_in_one_transaction_of_its_own(
        tmp_path, monkeypatch):
    """A step's outcome rides with the workflow's next commit in the workflow's buffer
    (see ``Activities.activity``): with a thousand workflows running, each step's new
    transaction (and its list of operations) lived through the wait for its batch, was
    moved on by a young garbage collection and walked again by the next middle one. A
    workflow fills the one it committed last again: ten steps make one."""
    import workflow_app as app

    from garrison.hosts.workflow import _core
    from garrison.persistence import SQLiteStore

    n = 20
    store = SQLiteStore(str(tmp_path / "wf.db"))
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, id="warm-up")
        await node.workflow("warm-up").result()
        made = _count_transactions(monkeypatch, _core)
        await _runs_steps(node, app, n)
        monkeypatch.undo()
        # what each workflow recorded is there, step by step
        for i in range(n):
            history = node.workflow(f"w{i}").history()
            assert [e.seq for e in history] == list(range(1, 11))
            assert [e.outcome["ok"] for e in history] == list(range(i + 1, i + 11))
    store.close()
    assert made[0] <= n, f"{made[0]} buffers made for {n} workflows of ten steps each"


async def test_a_started_workflow_fills_its_starts_transaction_with_its_steps(
        tmp_path, monkeypatch):
    """The transaction of a workflow's start, committed, is the one its steps fill
    (``WorkflowCore.spare``): one transaction for a workflow's start and its ten steps.
    A new one at its first step was, with a thousand workflows starting at once, a
    thousand transactions and lists more made in a row, what sets off young garbage
    collections."""
    import workflow_app as app

    from garrison.hosts.workflow import _core, _host
    from garrison.persistence import SQLiteStore

    n = 20
    store = SQLiteStore(str(tmp_path / "wf.db"))
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, id="warm-up")
        await node.workflow("warm-up").result()
        made = _count_transactions(monkeypatch, _core, _host)
        await _runs_steps(node, app, n)
        monkeypatch.undo()
        for i in range(n):
            history = node.workflow(f"w{i}").history()
            assert [e.outcome["ok"] for e in history] == list(range(i + 1, i + 11))
    store.close()
    assert made[0] <= n, f"{made[0]} transactions made for {n} workflows of ten steps each"


async def _steps_then_waits(plain: bool) -> int:
    """A step, then one whose outcome is committed on its own (a plain function's, run
    in a worker thread, or a failure), then a wait for a message."""
    import workflow_app as app

    x = await app.add_one(0)
    if plain:
        x = await app.add_one_sync(x)
    else:
        try:
            await app.picky(x)
        except garrison.ActivityError:
            pass
    await process.inbox().receive()
    return x


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "failed"])
async def test_a_workflow_waiting_after_a_step_committed_alone_holds_no_transaction(
        node, autojump_clock, plain):
    """The transaction a step's commit emptied waits for that step's outcome (see
    ``WorkflowCore.spare``); one committed on its own (a plain function's, a failure's)
    never takes it, and a workflow waiting after it held it for its whole wait: one
    transaction and its list more for every collection to walk, per waiting
    workflow."""
    from garrison.persistence import Transaction

    for i in range(3):
        await node.start_workflow(_steps_then_waits, plain, id=f"s{i}")
    for i in range(3):
        while node.workflow(f"s{i}").status() != "waiting":
            await trio.sleep(0.01)
    host: Any = node.hosts["workflows"]
    for i in range(3):
        held = [o for o in gc.get_referents(host.active[f"s{i}"]) if type(o) is Transaction]
        assert held == [], f"workflow s{i} waits holding {held}"
    for i in range(3):
        await node.send(f"workflows/s{i}", "go", None)
        assert await node.workflow(f"s{i}").result() == (2 if plain else 1)


async def test_a_workflow_waiting_or_queued_before_its_first_step_holds_no_transaction(
        autojump_clock):
    """The transaction of a workflow's start, committed, waits for its first step's
    outcome (``WorkflowHost.start``, ``WorkflowCore.spare``); one whose code waits
    first (a message, for days), or that waits ``pending`` in its host's queue, held it
    for the whole wait: one transaction and its list more for every collection to walk,
    per waiting workflow (as after a step committed alone)."""
    import workflow_app as app

    from garrison.persistence import Transaction

    async with garrison.open_node(max_concurrent=1) as node:
        await node.start_workflow(app.receiver, id="waits")
        await node.start_workflow(app.receiver, id="queued")
        while node.workflow("waits").status() != "waiting":
            await trio.sleep(0.01)
        assert node.workflow("queued").status() == "pending"
        host: Any = node.hosts["workflows"]
        for wid in ("waits", "queued"):
            held = [o for o in gc.get_referents(host.active[wid]) if type(o) is Transaction]
            assert held == [], f"workflow {wid} waits holding {held}"
        await node.send("workflows/waits", "go", 1)
        assert await node.workflow("waits").result() == ["go", 1]
        await node.send("workflows/queued", "go", 2)
        assert await node.workflow("queued").result() == ["go", 2]


def _tracked() -> int:
    """How many objects the collector tracks, less the nodes of context maps."""
    return sum(not type(o).__name__.startswith("hamt") for o in gc.get_objects())



def test_a_workflow_instance_keeps_its_attributes_in_slots():
    """Every waiting workflow's attributes are read at each of its steps: in slots (one
    pointer each, in the object) rather than a dict of their own, which with a thousand
    workflows running misses the CPU's caches. A part of the instance added without
    ``__slots__ = ()`` would bring the dict back."""
    from garrison.hosts.workflow._instance import WorkflowInstance

    assert WorkflowInstance.__dictoffset__ == 0, [
        cls.__name__ for cls in WorkflowInstance.__mro__ if "__slots__" not in vars(cls)]


async def test_finished_workflows_leave_no_cyclic_garbage(tmp_path):
    """A workflow that ended is freed by reference counting alone: no reference cycle
    is left for the cyclic collector to find (with a thousand workflows a minute, such
    garbage is collector work on every one). The workflow kept its trio task, whose
    context holds the workflow as its runtime: a cycle, until the task is let go as the
    run ends."""
    from bench.workflow_steps import wf10

    async with garrison.open_node(store=str(tmp_path / "wf.db")) as node:
        for i in range(3):  # warm: imports, caches, the host's first tasks
            await node.start_workflow(wf10, i, id=f"warm-{i}")
            await node.workflow(f"warm-{i}").result()
        gc.collect()
        gc.disable()
        try:
            for i in range(20):
                await node.start_workflow(wf10, i, id=f"w-{i}")
                assert await node.workflow(f"w-{i}").result() == i + 10
            found = gc.collect()
        finally:
            gc.enable()
    assert found < 20, f"{found} objects in reference cycles after 20 workflows"


async def _returns_n_chars(n: int) -> str:
    return "x" * n


async def _fails_with_n_chars(n: int) -> None:
    raise ValueError("y" * n)


def _finished_held(host: Any) -> int:
    """The characters the workflow host's ``finished`` entries hold (results' JSON and
    errors' text)."""
    return sum(len(entry[1] or "") + (0 if entry[2] is None else len(entry[2].type)
                                      + len(entry[2].message) + len(entry[2].traceback))
               for entry in host.finished.values())


async def test_finished_workflows_hold_no_large_results_or_errors(node, autojump_clock):
    """A node keeps how its last 10,000 workflows ended, but not a result or error of a
    megabyte each (10 GB before the count's cap): those are read back from the store,
    where they are already, and every handle, wait and late monitor still gets them."""
    from garrison.persistence import WorkflowStatus

    n = 1_000_000
    for i in range(10):
        await node.start_workflow(_returns_n_chars, n, id=f"big-{i}")
        assert await node.workflow(f"big-{i}").result() == "x" * n
    await node.start_workflow(_fails_with_n_chars, 10_000, id="bad")  # (logged)
    with pytest.raises(garrison.WorkflowFailed) as failed:
        await node.workflow("bad").result()
    assert failed.value.error.message == "y" * 10_000
    await node.start_workflow(_returns_n_chars, 3, id="small")
    await node.workflow("small").result()
    host = node.hosts["workflows"]
    total = _finished_held(host)
    assert total < 10_000, total  # (the small one's: none of the megabytes)
    # all still answered as before, from the store
    assert await node.workflow("big-0").result() == "x" * n
    assert await node.wait(Pid("workflows", "big-9")) == "x" * n
    assert node.workflow("big-3").status() == WorkflowStatus.COMPLETED
    assert node.workflow("bad").status() == WorkflowStatus.FAILED
    with pytest.raises(garrison.WorkflowFailed) as failed:
        await node.workflow("bad").result()
    assert failed.value.error.message == "y" * 10_000

    async def late_monitor(fn: Any, n: int, wid: str) -> tuple[Any, Any]:
        # (a monitored start of a workflow that ended: its EXIT, with its outcome)
        await process.spawn_monitored(fn, n, host="workflows", id=wid)
        ev = await process.events().receive()
        return ev.result, ev.error

    assert await node.wait(await node.spawn(late_monitor, _returns_n_chars, n, "big-5")
                           ) == ("x" * n, None)
    result, error = await node.wait(await node.spawn(late_monitor, _fails_with_n_chars,
                                                     10_000, "bad"))
    assert result is None and error.type == "ValueError" and error.message == "y" * 10_000


async def test_finished_workflows_hold_results_up_to_a_total(node, autojump_clock,
                                                             monkeypatch):
    """Past the total the entries may hold, the oldest give up their results (the
    newest stay in memory, the fast path); every result is still right."""
    from garrison.hosts.workflow import _host

    monkeypatch.setattr(_host, "FINISHED_HELD_TOTAL", 10_000, raising=False)
    for i in range(10):
        await node.start_workflow(_returns_n_chars, 3000, id=f"w-{i}")
        assert await node.workflow(f"w-{i}").result() == "x" * 3000
    host = node.hosts["workflows"]
    total = _finished_held(host)
    assert total <= 10_000, total
    assert host.finished["w-9"][1] == '"' + "x" * 3000 + '"'  # the newest: held
    for i in range(10):
        assert await node.workflow(f"w-{i}").result() == "x" * 3000


async def test_a_workflow_that_ends_again_is_the_newest_end_kept(node, autojump_clock,
                                                                  monkeypatch):
    """An id that ended again (a retried workflow) kept its old place among the ends
    the node keeps, while its held result was the newest: it was forgotten first, as
    the oldest. Its new end is the newest in both orders."""
    from garrison.hosts.workflow import _host
    from garrison.persistence import WorkflowStatus

    monkeypatch.setattr(_host, "FINISHED_MEMORY", 3, raising=False)
    host = node.hosts["workflows"]
    for i in range(3):
        await node.start_workflow(_returns_n_chars, 3, id=f"w-{i}")
        await node.workflow(f"w-{i}").result()
    # w-0 ends again (as a retry's end does, on this node or another's)
    host._remember_end("w-0", WorkflowStatus.COMPLETED, '"yyy"', None, "_returns_n_chars")
    await node.start_workflow(_returns_n_chars, 3, id="w-3")
    await node.workflow("w-3").result()
    assert list(host.finished) == ["w-2", "w-0", "w-3"]  # (w-1 the oldest: forgotten)
    assert list(host._held) == list(host.finished)
    assert await node.workflow("w-0").result() == "yyy"


async def test_a_result_not_kept_is_not_answered_after_the_node_stopped(autojump_clock):
    """README: a result the node kept answers ``result()`` after the node stopped; one
    too large to keep would be read from the store, which has closed with the node.
    With no store given its error advised a store PATH there is none of: it says the
    store was in memory and went with the node."""
    async with garrison.open_node() as node:
        await node.start_workflow(_returns_n_chars, 3, id="small")
        await node.start_workflow(_returns_n_chars, 10_000, id="large")
        await node.workflow("large").result()
    assert await node.workflow("small").result() == "xxx"
    with pytest.raises(RuntimeError, match=r"node '.*' has stopped, and its store with it "
                       r"\(its store was in memory and went with the node: use the handle "
                       r"before the node closes, e\.g\. await result\(\) inside its block\)$"):
        await node.workflow("large").result()


async def test_calls_with_distinct_timeouts_leave_no_deadline_queues(node, autojump_clock):
    """Calls are timed in one queue per timeout value: a remaining-budget timeout (a
    value of its own per call) answered in time left its queue behind, empty, until
    the earliest deadline passed (10,000 calls near an hour: 10,000 queues for an
    hour). A call waiting meanwhile still times out when its deadline comes."""
    from garrison.hosts import _kernel

    async def echo() -> None:
        async for msg in process.inbox():
            await msg.reply(msg.payload)

    async def caller() -> tuple[int, float, float]:
        e = await process.spawn(echo)
        s = await process.spawn(_sleeper)
        timed_out = 0.0

        async def waits() -> None:
            nonlocal timed_out
            with pytest.raises(TimeoutError):
                await process.call(s, "q", timeout=10.0)
            timed_out = trio.current_time()

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waits)
            await trio.sleep(1.0)
            for i in range(1000):
                assert await process.call(e, "q", i, timeout=3600.0 - i * 1e-3) == i
            queues = len(_kernel.call_timeouts()._queues)
        return queues, timed_out - t0, trio.current_time() - t0

    queues, timed_out, waited = await node.wait(await node.spawn(caller))
    assert queues <= 2, f"{queues} deadline queues kept after 1000 answered calls"
    assert timed_out == pytest.approx(10.0, abs=1e-6) and waited == timed_out


async def test_a_schedule_paused_and_resumed_keeps_a_bounded_tick_heap(node, autojump_clock):
    """Every load of a schedule (a pause, a resume, an update) put its next tick in the
    scheduler's heap, and an entry no longer the schedule's next tick left only when
    its time came: a monthly schedule resumed 1000 times held 1000 entries for a
    month. They are dropped once they outnumber the live ones; the tick still fires,
    once."""
    import schedule_app as app

    app.STARTS.clear()
    sched = node.hosts["workflows"].scheduler
    handle = await node.schedule("monthly", app.job, every="30d")
    for _ in range(500):
        await handle.pause()
        await handle.resume()
    for i in range(500):  # created and deleted
        other = await node.schedule(f"gone-{i}", app.job, every="30d")
        await other.delete()
    assert len(sched._heap) <= 100, f"{len(sched._heap)} heap entries for one schedule"
    tick = handle.info().next_tick.timestamp()
    await trio.sleep(31 * 86400)
    assert [t for _, t in app.STARTS] == [tick]
    app.STARTS.clear()


async def test_workflows_cancelled_while_waiting_leave_the_queue_order(autojump_clock):
    """A workflow cancelled while it waited for a slot left the queue's ``held`` but
    not its order heap, whose entries go only as slots free: with the slots taken
    and cancels going on, it grew without bound. They are dropped once they outnumber
    the waiting ones, and the waiting still start in priority, then start order."""
    import schedule_app as app

    app.STARTS.clear()
    async with garrison.open_node(max_concurrent=1) as node:
        queue = node.hosts["workflows"].queue
        await node.start_workflow(app.job, 10.0, id="busy")
        for i in range(500):
            if i % 100 == 0:  # a few stay, in order by priority then start
                await node.start_workflow(app.job, id=f"stays-{i}", priority=i % 300)
            await node.start_workflow(app.job, id=f"gone-{i}", priority=i % 7)
            await node.workflow(f"gone-{i}").cancel()
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow(f"gone-{i}").result()
        assert len(queue.held) == 5
        assert len(queue._order) <= 100, f"{len(queue._order)} entries for 5 waiting"
        for i in range(0, 500, 100):
            await node.workflow(f"stays-{i}").result()
    assert [wid for wid, _ in app.STARTS] == [
        "busy", "stays-200", "stays-100", "stays-400", "stays-0", "stays-300"]
    app.STARTS.clear()


# ---------------------------------------------------------------- a workflow's watches
async def _returns_one() -> int:
    return 1


async def _watches_children_and_continues(run: int, runs: int) -> int:
    """Each run spawns plain processes monitored (one linked too, one only linked) and a
    child workflow monitored, hears each EXIT, and continues as new; the last run
    waits for a message."""
    if run == runs:
        workflow.set_state("run", run)
        await process.inbox().receive()
        return run
    events = process.events()
    for _ in range(5):
        await process.spawn_monitored(_returns_one, host="processes")
        await events.receive()
        await process.spawn_linked_monitored(_returns_one, host="processes")
        await events.receive()
        await process.spawn_linked(_returns_one, host="processes")
        await process.spawn_monitored(_returns_one)  # a child workflow
        await events.receive()
    workflow.continue_as_new(run + 1, runs)


async def _watches_of(node: Any, wid: str) -> tuple[int, int, int]:
    """How many pids the waiting workflow ``wid`` monitors and links to, and event ids
    it keeps for them."""
    handle = node.workflow(wid)
    with trio.fail_after(60):
        while handle.status() != "waiting":
            await trio.sleep(0.01)
    await trio.sleep(0.1)  # (events written again at a resume: dropped as delivered)
    wf = node.hosts["workflows"].active[wid]
    return len(wf.monitoring or ()), len(wf.links or ()), len(wf.signal_ids or ())


async def test_a_workflow_keeps_no_watch_of_children_that_ended(tmp_path, autojump_clock):
    """A long-lived workflow (a ``continue_as_new`` loop) that spawns monitored and
    linked children kept every one of them in its monitors, links and event ids for
    good: a child workflow's EXIT (delivered by the child's end) did not spend the
    monitor, a process that ended while its spawn was being committed (with a store
    that commits in a thread, as a rule) was recorded after its EXIT came, and
    ``continue_as_new`` carries the tables into the next run."""
    async with garrison.open_node(store=str(tmp_path / "wf.db")) as node:
        await node.start_workflow(_watches_children_and_continues, 0, 8, id="w")
        with trio.fail_after(60):
            while node.workflow("w").state("run") != 8:
                await trio.sleep(0.01)
        assert await _watches_of(node, "w") == (0, 0, 0)
        await node.workflow("w").signal("stop")
        assert await node.workflow("w").result() == 8


async def _watches_children_then_waits() -> int:
    events = process.events()
    for _ in range(5):
        await process.spawn_monitored(_returns_one, host="processes")
        await events.receive()
        await process.spawn_linked(_returns_one, host="processes")
        await process.spawn_monitored(_returns_one)  # a child workflow
        await events.receive()
    await process.inbox().receive()
    return 1


async def test_a_resumed_workflow_keeps_no_watch_of_children_that_ended(tmp_path,
                                                                       autojump_clock):
    """The tables are derived from the journal: a workflow resumed after a restart
    replays its spawns (their watches made again), and those whose ends it had heard
    of, or hears of now (a plain process lost with the node: ``noproc``), are spent."""
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(_watches_children_then_waits, id="w")
        assert await _watches_of(node, "w") == (0, 0, 0)
    async with garrison.open_node(store=db) as node:
        assert await _watches_of(node, "w") == (0, 0, 0)
        await node.workflow("w").signal("stop")
        assert await node.workflow("w").result() == 1


def _slot_offsets(cls: type) -> dict[str, int]:
    """Each slot of ``cls`` by its offset in the object (in bytes from its start)."""
    import ctypes

    obj = object.__new__(cls)
    marks: dict[int, str] = {}
    for klass in cls.__mro__:
        for name, member in vars(klass).items():
            if type(member).__name__ == "member_descriptor":
                mark = object()
                marks[id(mark)] = name
                member.__set__(obj, mark)
    words = (ctypes.c_void_p * (cls.__basicsize__ // 8)).from_address(id(obj))
    return {marks[word]: i * 8 for i, word in enumerate(words) if word in marks}


async def test_the_slots_every_step_reads_lie_at_the_start_of_a_workflow_instance(
        tmp_path, monkeypatch):
    """With a thousand workflows running, a waiting workflow's object has left the CPU's
    caches by its next step, and each cache line of it that the step reads is fetched
    again: the slots a step reads lie together at the object's start (three or four
    lines of its ten), not among the rarely used ones, in sorted order over all of it."""
    import workflow_app as app

    from garrison.hosts.workflow._instance import WorkflowInstance
    from garrison.persistence import SQLiteStore

    offsets = _slot_offsets(WorkflowInstance)
    reads: dict[str, int] = dict.fromkeys(offsets, 0)
    counting = [False]

    def counted(name: str, member: Any) -> property:
        def get(self: Any) -> Any:
            if counting[0]:
                reads[name] += 1
            return member.__get__(self, type(self))

        def put(self: Any, value: Any) -> None:
            if counting[0]:
                reads[name] += 1
            member.__set__(self, value)

        return property(get, put, member.__delete__)

    for klass in WorkflowInstance.__mro__:
        for name, member in list(vars(klass).items()):
            if type(member).__name__ == "member_descriptor":
                monkeypatch.setattr(klass, name, counted(name, member))
    n, steps = 20, 10
    store = SQLiteStore(str(tmp_path / "wf.db"))
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, id="warm-up")
        await node.workflow("warm-up").result()
        counting[0] = True
        await _runs_steps(node, app, n)
        counting[0] = False
    store.close()
    every_step = {name for name, count in reads.items() if count >= n * steps}
    assert every_step, reads
    far = {name: offsets[name] for name in every_step if offsets[name] >= 208}
    assert not far, f"read at every step, past the first lines of the instance: {far}"


async def _waiting(node: garrison.Node, ids: str) -> list[Any]:
    """The instances of workflows ``ids`` (one letter each), started and waiting for a
    message (``late_promise``)."""
    import workflow_app as app

    for wid in ids:
        await node.start_workflow(app.late_promise, id=wid)
    await trio.testing.wait_all_tasks_blocked()
    host: Any = node.hosts["workflows"]
    return [host.active[wid] for wid in ids]


async def test_workflows_with_no_timer_or_journal_share_one_empty_map_of_each(
        node, autojump_clock):
    """A step of a workflow reads its timers (is one pending at this seq?) and asks its
    journal for the entry at this seq: with neither, a dict of its own for each was two
    more objects that every step of every waiting workflow touched. They share one empty
    map of each, never added to: a timer is kept in the workflow's own."""
    import workflow_app as app

    a, b = await _waiting(node, "ab")
    assert a.timers is b.timers and not a.timers
    assert a.cursor.entries is b.cursor.entries and not a.cursor.entries
    with pytest.raises(TypeError, match="add a timer with"):
        a.timers[1] = 0.0
    await node.start_workflow(app.sleeper, "1h", id="s")
    await trio.testing.wait_all_tasks_blocked()
    s: Any = node.hosts["workflows"].active["s"]  # type: ignore[attr-defined]
    assert len(s.timers) == 1 and not a.timers and not b.timers
    await trio.sleep(3600)
    assert await node.workflow("s").result() == 3600.0
    assert not a.timers and not b.timers


async def test_a_waiting_workflow_holds_no_cancel_switch_until_it_is_stopped(
        node, autojump_clock, monkeypatch):
    """What stops a workflow's body from outside (a terminate, a kill, the node's close)
    is made when it is used: every waiting workflow held a switch of its own, one more
    object for the garbage collector to walk and one more that each of its steps read.
    Stopped, a waiting workflow ends at once as before, and the others wait on."""
    from garrison.actors._cancel_switch import CancelSwitch

    before = _count(CancelSwitch)
    a, _b, c = await _waiting(node, "abc")
    assert _count(CancelSwitch) == before
    made = []
    make = CancelSwitch.made_cancelled
    monkeypatch.setattr(CancelSwitch, "made_cancelled",
                        lambda task, root: made.append(task) or make(task, root))
    await node.workflow("b").terminate("enough")
    assert len(made) == 1  # (its switch, made by the terminate)
    assert node.workflow("b").status().value == "failed"
    with pytest.raises(garrison.WorkflowFailed, match="enough"):
        await node.workflow("b").result()
    assert not a.done.is_set() and not c.done.is_set()
    await node.send("workflows/a", "go", None)
    await node.workflow("a").promise("early").resolve(1)
    assert await node.workflow("a").result() == 1


async def test_a_waiting_workflow_holds_no_flags_or_pid_until_asked(node, autojump_clock):
    """A workflow's pid and the two flags of its end and its task's exit are made when
    first asked for, mostly as it ends: three objects fewer that every waiting workflow
    holds for the garbage collector to walk. Asked for, each is one object, kept."""
    from garrison.actors._flag import Flag

    flags, pids = _count(Flag), _count(Pid)
    a, b, c = await _waiting(node, "abc")
    assert (_count(Flag), _count(Pid)) == (flags, pids)
    assert a.pid == Pid("workflows", "a") and a.pid is a.pid
    assert a.done is a.done and a.exited is a.exited and not a.done.is_set()
    assert _count(Flag) == flags + 2
    await node.send("workflows/b", "go", None)
    await node.workflow("b").promise("early").resolve(2)
    assert await node.workflow("b").result() == 2
    assert b.done.is_set() and b.exited.is_set() and not c.done.is_set()


async def test_workflows_with_no_completed_promise_share_one_empty_map(node, autojump_clock):
    """A waiting workflow's completed promises and its inboxes were two dicts of its own,
    mostly never used, that each collection of the garbage collector touched as it
    walked the workflow: the promises are one shared empty map until one completes,
    kept in the workflow's own, and the inboxes are made by the first receive."""
    import workflow_app as app

    a, b, c = await _waiting(node, "abc")
    await node.start_workflow(app.sleeper, "1h", id="s")
    await trio.testing.wait_all_tasks_blocked()
    s: Any = node.hosts["workflows"].active["s"]  # type: ignore[attr-defined]
    assert s._inboxes is None and list(a._inboxes) == ["inbox"]
    assert a.promises is b.promises is s.promises and not a.promises
    with pytest.raises(TypeError, match="keep_promise"):
        a.promises["x"] = ("resolved", 1)
    await node.workflow("b").promise("early").resolve(2)
    assert b.promises == {"early": ("resolved", 2)} and not a.promises and not c.promises
    await node.send("workflows/b", "go", None)
    assert await node.workflow("b").result() == 2
    assert not a.promises and not c.promises


async def test_a_start_waiting_for_its_batch_holds_one_frame_of_the_host(tmp_path):
    """A thousand workflows started at once wait for their starts' batch together, and
    what each start holds meanwhile lives on through the young collections into the
    middle ones, as its workflow runs: the start waited in a coroutine of its own for
    the workflow's creation below the host's ``start``, one object more (and its
    locals) per waiting start. It waits in ``start``'s frame, on its commit's request
    (parked in the request's generator)."""
    import workflow_app as app

    from garrison.persistence import SQLiteStore

    n = 200
    store = SQLiteStore(str(tmp_path / "wf.db"))
    chains: set[tuple[str, ...]] = set()
    waiting = [0]
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, id="warm-up")
        await node.workflow("warm-up").result()
        write = store._group._write_batch

        def census(batch: list) -> None:
            for request in batch:
                if request.task is trio.lowlevel.current_task():
                    continue  # (the batch's leader, writing it)
                chain = []
                below: Any = request.task.coro
                while below is not None:
                    chain.append(getattr(below, "__qualname__", type(below).__name__))
                    below = getattr(below, "cr_await", None)
                if chain[0] == "Node.start_workflow":
                    waiting[0] += 1
                    chains.add(tuple(chain))
            write(batch)

        store._group._write_batch = census
        await _runs_steps(node, app, n)
    store.close()
    assert waiting[0] >= n // 2, waiting  # (most waited in a batch)
    assert chains == {("Node.start_workflow", "WorkflowHost.start",
                       "CommitRequest.__await__")}, chains


async def test_a_start_waiting_for_its_batch_holds_no_pid_and_no_list_of_arguments(
        tmp_path):
    """What a start's frame holds while its commit waits for the batch is walked by each
    garbage collection meanwhile (with a thousand starting at once, several): the
    start made the workflow's pid before it wrote anything, and held its arguments in
    the list it gives the workflow, one tracked object more each. The pid is made once
    the start is committed, and the arguments wait in a tuple (of plain values, let go
    by the collector at its first look); the workflow gets its list as before."""
    import workflow_app as app

    from garrison.persistence import SQLiteStore

    n = 200
    store = SQLiteStore(str(tmp_path / "wf.db"))
    held: set[str] = set()
    waiting = [0]
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, id="warm-up")
        await node.workflow("warm-up").result()
        write = store._group._write_batch

        def census(batch: list) -> None:
            for request in batch:
                if request.task is trio.lowlevel.current_task():
                    continue  # (the batch's leader, writing it)
                below: Any = request.task.coro
                while below is not None and getattr(below, "__qualname__", "") \
                        != "WorkflowHost.start":
                    below = getattr(below, "cr_await", None)
                if below is not None:
                    waiting[0] += 1
                    held.update(name for name, value in below.cr_frame.f_locals.items()
                                if isinstance(value, Pid | list))
            write(batch)

        store._group._write_batch = census
        await _runs_steps(node, app, n)  # (each workflow got its arguments)
    store.close()
    assert waiting[0] >= n // 2, waiting  # (most waited in a batch)
    assert not held, held


async def test_a_step_waiting_for_its_batch_holds_no_coroutine_of_the_engine(tmp_path):
    """A thousand workflows stepping at once wait for each step's batch together (the
    outcome of the step before rides with it), and what each holds meanwhile lives on
    through the young collections: the wait was in ``Activities.activity``'s coroutine
    below the ``@activity`` function's, one object more per waiting step, with a frame
    of two dozen locals for every collection to walk. The ``@activity`` wrapper waits
    for that commit itself, on its request (parked in the request's generator)."""
    import workflow_app as app

    from garrison.persistence import SQLiteStore

    n = 200
    store = SQLiteStore(str(tmp_path / "wf.db"))
    chains: set[tuple[str, ...]] = set()
    waiting = [0]
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, id="warm-up")
        await node.workflow("warm-up").result()
        write = store._group._write_batch

        def census(batch: list) -> None:
            for request in batch:
                if request.task is trio.lowlevel.current_task():
                    continue  # (the batch's leader, writing it)
                chain = []
                below: Any = request.task.coro
                while below is not None:
                    chain.append(getattr(below, "__qualname__", type(below).__name__))
                    below = getattr(below, "cr_await", None)
                if "add_one" in chain:
                    waiting[0] += 1
                    chains.add(tuple(chain))
            write(batch)

        store._group._write_batch = census
        await _runs_steps(node, app, n)
    store.close()
    assert waiting[0] >= n * 9 // 2, waiting  # (most steps waited in a batch)
    assert chains == {("WorkflowInstance._main", "steps", "add_one",
                       "CommitRequest.__await__")}, chains


async def test_an_end_waiting_for_its_batch_holds_no_coroutine_and_no_event(tmp_path):
    """A thousand workflows ending at once wait for their ends' batch together: each
    end waited in ``commit_checked``'s coroutine below the host's ``finish``, and held
    its ``EXIT`` event (and the pid it made) through the wait, though nothing in the
    transaction carried it. The end waits in ``finish``'s frame, on its commit's
    request, and its event is made once the end is committed."""
    import workflow_app as app

    from garrison.persistence import SQLiteStore

    n = 200
    store = SQLiteStore(str(tmp_path / "wf.db"))
    chains: set[tuple[str, ...]] = set()
    events: set[Any] = set()
    waiting = [0]
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, id="warm-up")
        await node.workflow("warm-up").result()
        write = store._group._write_batch

        def census(batch: list) -> None:
            for request in batch:
                if request.task is trio.lowlevel.current_task():
                    continue  # (the batch's leader, writing it)
                chain = []
                below: Any = request.task.coro
                while below is not None:
                    chain.append(getattr(below, "__qualname__", type(below).__name__))
                    if chain[-1] == "WorkflowHost.finish":
                        events.add(below.cr_frame.f_locals.get("event"))
                    below = getattr(below, "cr_await", None)
                if "WorkflowHost.finish" in chain:
                    waiting[0] += 1
                    chains.add(tuple(chain))
            write(batch)

        store._group._write_batch = census
        await _runs_steps(node, app, n)
        # every end delivered its EXIT all the same
        assert all(node.workflow(f"w{i}").status() == "completed" for i in range(n))
    store.close()
    assert waiting[0] >= n // 2, waiting  # (most ends waited in a batch)
    assert chains == {("WorkflowInstance._main", "WorkflowHost.finish",
                       "CommitRequest.__await__")}, chains
    assert events == {None}, events
