"""A value a workflow recorded before an activity runs is committed by then: an
idempotency key made with ``workflow.uuid4()`` survives a crash while the activity runs
(awaited or started with ``workflow.start``), flushes in flight overlap, a store that
fails under the flush stops the workflow before the activity runs, and nothing is
committed more when nothing is buffered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from _commit_faults import failing_commits, slow_commits

import garrison
import garrison.testing
from garrison import process, workflow

#: the store the activities read the journal of (set by each test)
STORE: list[Any] = []


@garrison.activity
async def durable_seqs(tag: str) -> list[int]:
    """The seqs of this workflow's journal that are committed as this activity starts."""
    return [r.seq for r in STORE[0].journal(process.pid().id)]


async def two_flushes() -> list[list[int]]:
    k1 = str(workflow.uuid4())                      # seq 1
    h = workflow.start(durable_seqs, k1)            # seq 2: flush_soon (seq 1)
    k2 = str(workflow.uuid4())                      # seq 3
    r2 = await durable_seqs(k2)                     # seq 4: commits seq 3 first
    return [await h, r2]


async def two_starts() -> list[list[int]]:
    a = workflow.start(durable_seqs, str(workflow.uuid4()))    # seq 1, 2: flush_soon
    b = workflow.start(durable_seqs, str(workflow.uuid4()))    # seq 3, 4: flush_soon
    return list(await workflow.gather(a, b))


@pytest.mark.parametrize("flow", [two_flushes, two_starts])
async def test_an_activity_waits_for_every_flush_in_flight(
        store_spec: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        flow: Any) -> None:
    """Two commits of buffered records in flight at once (workflow.start's, then an
    awaited activity's or another start's), the first one slower: ``flushing`` names
    the last one only, so each activity waits for that one and runs while the first
    (its key at seq 1) is not committed yet."""
    async with garrison.open_node(store=store_spec) as node:
        store = node.hosts["workflows"].store
        STORE[:] = [store]
        slow_commits(monkeypatch, store, "uuid4", seq=1)
        await node.start_workflow(flow, id="w")
        with trio.fail_after(10):
            first, second = await node.workflow("w").result()
    assert 1 in first, first  # its own key
    assert {1, 3} <= set(second), second

RAN: list[str] = []


@garrison.activity
async def effect(key: str) -> str:
    RAN.append(key)
    return key


async def keyed_start() -> str:
    return await workflow.start(effect, str(workflow.uuid4()))


async def keyed_call() -> str:
    return await effect(str(workflow.uuid4()))


async def keyed_start_then_wait() -> str:
    h = workflow.start(effect, str(workflow.uuid4()))
    await workflow.sleep(5)
    return await h


@pytest.mark.parametrize("flow", [keyed_start, keyed_call, keyed_start_then_wait])
async def test_a_store_failing_under_the_flush_stops_the_workflow(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        flow: Any) -> None:
    """The commit of the recorded key fails for good: the activity never runs, the
    workflow stops as on any store failure (result() raises the StoreError), and the
    next node runs it from its journal, once. (workflow.start: the failure came back
    before ``_background`` first ran, ``flushing`` was ``None`` again, so it ran the
    activity without looking at ``store_error``; a real store fails that fast when it
    already failed, e.g. its file was deleted or replaced: ``SQLiteStore._failure``.)"""
    RAN.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        failing_commits(monkeypatch, store, "uuid4", seq=1, then="all",
                        error=garrison.StoreError(db, "database or disk is full"))
        await node.start_workflow(flow, id="w")
        with trio.fail_after(10), pytest.raises(garrison.StoreError, match="disk is full"):
            await node.workflow("w").result()
        ran_before = list(RAN)
        monkeypatch.undo()
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(10):
            key = await node.workflow("w").result()
    assert ran_before == [], f"ran with {ran_before} on the node whose store failed, then {RAN}"
    assert [key] == RAN


SEEN: list[str] = []
#: while true, ``remember`` never returns (the node closes while it runs)
BLOCK: list[bool] = []


@garrison.activity
async def remember(key: str) -> str:
    SEEN.append(key)
    if BLOCK:
        await trio.sleep_forever()
    return key


async def keyed_remember_started() -> str:
    return await workflow.start(remember, str(workflow.uuid4()))


async def keyed_remember_gathered() -> list[str]:
    a = workflow.start(remember, str(workflow.uuid4()))
    workflow.set_state("s", 1)
    b = workflow.start(remember, str(workflow.uuid4()))
    return await workflow.gather(a, b)


@pytest.mark.parametrize("passes", range(8))
@pytest.mark.parametrize("flow", [keyed_remember_started, keyed_remember_gathered])
async def test_closing_the_node_at_any_point_keeps_the_key(
        tmp_path: Path, autojump_clock: Any, passes: int, flow: Any) -> None:
    SEEN.clear()
    BLOCK[:] = [True]
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(flow, id="w")
        for _ in range(passes):
            await trio.lowlevel.checkpoint()
    first = list(SEEN)
    BLOCK.clear()
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(10):
            result = await node.workflow("w").result()
    keys = result if isinstance(result, list) else [result]
    assert set(first) <= set(keys), (first, SEEN, keys)


@pytest.mark.parametrize("flow", [keyed_start, keyed_call])
async def test_with_tracing_on_the_key_is_committed_before_the_activity(
        tmp_path: Path, autojump_clock: Any, flow: Any) -> None:
    """The flush goes through the observed commit (a ``store.commit`` span) too."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    garrison.tracing.enable(provider)
    try:
        async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
            store = node.hosts["workflows"].store
            STORE[:] = [store]
            await node.start_workflow(flow_durable[flow], id="w")
            with trio.fail_after(10):
                seqs = await node.workflow("w").result()
    finally:
        garrison.tracing.disable()
    assert seqs == [1]
    commits = [s for s in exporter.get_finished_spans() if s.name == "store.commit"]
    assert commits


async def key_then_started_check() -> list[int]:
    return await workflow.start(durable_seqs, str(workflow.uuid4()))


async def key_then_awaited_check() -> list[int]:
    return await durable_seqs(str(workflow.uuid4()))


flow_durable = {keyed_start: key_then_started_check, keyed_call: key_then_awaited_check}


async def keyed_start_sleep_call() -> list[str]:
    k = str(workflow.uuid4())
    h = workflow.start(effect, k)
    await workflow.sleep("1d")
    workflow.set_state("k", k)
    return [await h, await effect(str(workflow.uuid4()))]


async def test_workflow_env_and_mock_activity() -> None:
    """Not on trio's autojump clock: the env's skipper moves time."""
    async with garrison.testing.workflow_env() as env:
        mock = env.mock_activity(f"{__name__}:effect", call=lambda key: key)
        await env.start(keyed_start_sleep_call, id="w")
        first, second = await env.result("w")
        assert [c[0][0] for c in mock.calls] == [first, second]
        assert env.state("w", "k") == first


async def keyed_start_then_continue(n: int) -> str:
    k = str(workflow.uuid4())
    workflow.start(effect, k)  # abandoned: cancelled as the run ends
    if n:
        workflow.continue_as_new(n - 1)
    return k


async def test_continue_as_new_with_a_flush_in_flight(tmp_path: Path,
                                                      autojump_clock: Any) -> None:
    """The old run's flush is written before the new run's journal starts: the last
    run's journal holds only its own records."""
    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        store = node.hosts["workflows"].store
        await node.start_workflow(keyed_start_then_continue, 3, id="w")
        with trio.fail_after(10):
            key = await node.workflow("w").result()
        journal = store.journal("w")
    assert [(r.seq, r.kind) for r in journal] == [(0, "continued"), (1, "uuid4")]
    assert journal[1].outcome == key



async def child_of_keyed() -> str:
    return "child"


async def key_start_spawn_key_call() -> list[list[int]]:
    h = workflow.start(durable_seqs, str(workflow.uuid4()))    # seq 1, 2: flush_soon
    workflow.set_state("s", 1)
    await process.spawn(child_of_keyed)                        # seq 3 (prefix_tx)
    k = str(workflow.uuid4())                                  # seq 4
    return [await h, await durable_seqs(k)]                    # seq 5


async def test_a_child_spawned_between_a_start_and_a_call(
        store_spec: str, autojump_clock: Any) -> None:
    async with garrison.open_node(store=store_spec) as node:
        STORE[:] = [node.hosts["workflows"].store]
        await node.start_workflow(key_start_spawn_key_call, id="w")
        with trio.fail_after(10):
            started, awaited = await node.workflow("w").result()
    assert 1 in started
    assert {1, 3, 4} <= set(awaited)


async def test_replay_mode_never_writes_a_flush(tmp_path: Path, autojump_clock: Any) -> None:
    """A journal replayed up to an activity started (or called) after recorded values:
    the replay ends there, nothing is written (a write would raise ReplayRefused)."""
    from garrison.hosts.workflow._replay import History, replay_history

    SEEN.clear()
    BLOCK[:] = [True]
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(keyed_remember_gathered, id="g")
        await node.start_workflow(keyed_remember_started, id="s")
        with trio.fail_after(10):
            while len(SEEN) < 2:
                await trio.sleep(0.01)
        store = node.hosts["workflows"].store
        for wid in ("g", "s"):
            result = await replay_history(History.from_store(store, wid))
            assert result.ok, result
    BLOCK.clear()


@garrison.activity
async def inc(x: int) -> int:
    return x + 1


async def ten_steps() -> int:
    x = 0
    for _ in range(10):
        x = await inc(x)
    return x


async def ten_started_steps() -> int:
    x = 0
    for _ in range(10):
        x = await workflow.start(inc, x)
    return x


async def ten_sleeps_and_steps() -> int:
    x = 0
    for _ in range(10):
        await workflow.sleep(1)
        x = await inc(x)
    return x


async def ten_timestamped_steps() -> int:
    x = 0
    for _ in range(10):
        workflow.now()
        x = await inc(x)
    return x


@pytest.mark.parametrize(("flow", "expected"), [
    (ten_steps, 11),           # start, 10 steps (the last one with the finish)
    (ten_started_steps, 12),   # start, 10 steps, finish
    # a step's outcome rides with the next sleep's timer (42 before it did)
    (ten_sleeps_and_steps, 32),
    # now() committed before each step, with the step before's outcome (22 before)
    (ten_timestamped_steps, 12),
])
async def test_transactions_of_a_lone_workflow(tmp_path: Path, autojump_clock: Any,
                                               flow: Any, expected: int) -> None:
    from garrison.persistence import SQLiteStore

    store = SQLiteStore(str(tmp_path / "s.db"))
    async with garrison.open_node(store=store) as node:
        before = store.statistics().transactions
        await node.start_workflow(flow, id="w")
        with trio.fail_after(100):
            assert await node.workflow("w").result() == 10
        transactions = store.statistics().transactions - before
    store.close()
    assert transactions == expected



# ------------------------------------------------ other effects that leave the workflow
#: what a plain process got: (the key, the seqs of workflow w's journal committed then)
GOT: list[tuple[str, list[int]]] = []


def _got(key: str) -> None:
    GOT.append((key, [r.seq for r in STORE[0].journal("w")]))


async def keeps_key(key: str) -> None:
    """A plain process that does its effect with ``key`` at once."""
    _got(key)


async def key_server() -> None:
    """A plain process answering calls with their key."""
    process.register("keys")
    while True:
        msg = await process.inbox().receive()
        _got(msg.payload)
        await msg.reply(msg.payload)


async def keyed_spawn() -> str:
    key = str(workflow.uuid4())
    await process.spawn(keeps_key, key, host="processes")  # a plain process
    return key


async def keyed_process_call() -> str:
    key = str(workflow.uuid4())
    return str(await process.call("keys", "key", key))


async def keyed_child(key: str) -> str:
    return key


async def keyed_child_by_id() -> list[str]:
    key = str(workflow.uuid4())
    child = await process.spawn(keyed_child, key, host="workflows", id="child")
    event = await process.events().receive()
    assert event.pid == child
    return [key, event.result]


@pytest.mark.parametrize("flow", [keyed_spawn, keyed_process_call])
async def test_a_recorded_value_is_committed_before_a_process_gets_it(
        store_spec: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        flow: Any) -> None:
    """A plain process spawned with a recorded key, or called with one, may act on it
    at once: the key is committed by then (a crash before the spawn or the call is
    recorded makes them again, with the same key, as for an activity)."""
    GOT.clear()
    async with garrison.open_node(store=store_spec) as node:
        store = node.hosts["workflows"].store
        STORE[:] = [store]
        slow_commits(monkeypatch, store, "spawn")  # (the spawned process runs meanwhile)
        await node.spawn(key_server)
        await trio.sleep(0.1)  # (it registers its name)
        await node.start_workflow(flow, id="w")
        with trio.fail_after(10):
            key = await node.workflow("w").result()
    assert [k for k, _ in GOT] == [key]
    assert 1 in GOT[0][1], GOT  # the key's record (seq 1) was committed by then


async def test_a_recorded_value_is_committed_before_a_child_workflow_by_id_starts(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``process.spawn(child, key, host="workflows", id=...)`` starts the child (with
    its input) before the spawn is recorded: the store failing just then stops the
    parent, and its next run starts the child by the same id again, which returns the
    child that exists. That child has the first run's key, so the parent's must be it
    too: the key was committed before the child started."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        failing_commits(monkeypatch, store, "spawn", wid="w",
                        error=garrison.StoreError(db, "database or disk is full"))
        await node.start_workflow(keyed_child_by_id, id="w")
        with trio.fail_after(10), pytest.raises(garrison.StoreError):
            await node.workflow("w").result()
        monkeypatch.undo()
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(10):
            key, childs = await node.workflow("w").result()
    assert key == childs


@pytest.mark.parametrize("flow", [keyed_start, keyed_call, keyed_start_then_wait])
async def test_a_flush_failing_with_an_error_of_its_own_stops_the_activity_too(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch,
        flow: Any) -> None:
    """The commit of the recorded key fails with an error that is not the store failing
    (a ValueError: an operation's own error, as a garrison bug would raise): the
    workflow fails with it and the activity never runs, awaited or started (a started
    one was woken by the failed flush and ran, its key lost)."""
    RAN.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        failing_commits(monkeypatch, store, "uuid4", seq=1, then="once",
                        error=ValueError("an operation's own error"))
        await node.start_workflow(flow, id="w")
        with trio.fail_after(10), pytest.raises(garrison.WorkflowFailed,
                                                match="operation's own error"):
            await node.workflow("w").result()
    assert RAN == []


async def typed_child(n: int) -> int:
    return n


async def keyed_refused_spawn(refusal: str) -> str:
    key = str(workflow.uuid4())                                 # seq 1
    workflow.set_state("stage", "keyed")
    bad: tuple[Any, tuple[Any, ...]] = {
        "count": (typed_child, (1, 2)),
        "type": (typed_child, ("oops",)),
        "target": (lambda: None, ()),
    }[refusal]
    try:
        await process.spawn(bad[0], *bad[1])                    # seq 2: refused
    except (TypeError, garrison.PayloadError):
        pass
    else:  # pragma: no cover - the test fails on the result
        return "spawned"
    await workflow.sleep(0.1)                                   # seq 3
    return key


@pytest.mark.parametrize("refusal", ["count", "type", "target"])
async def test_a_refused_child_spawn_keeps_the_records_before_it(
        store_spec: str, autojump_clock: Any, refusal: str) -> None:
    """A child workflow refused at its spawn (arguments it cannot take, a target that
    cannot be imported) raises, and stores nothing of its own; what the parent recorded
    before it (a key, its state) is still committed with the parent's next record. (The
    records were handed to the child's start and lost with it: the key was made anew
    after a restart.)"""
    async with garrison.open_node(store=store_spec) as node:
        store = node.hosts["workflows"].store
        await node.start_workflow(keyed_refused_spawn, refusal, id="w")
        with trio.fail_after(10):
            key = await node.workflow("w").result()
        journal = store.journal("w")
        assert node.workflow("w").state("stage") == "keyed"
    assert [(r.seq, r.kind) for r in journal] == [(1, "uuid4"), (3, "sleep")]
    assert journal[0].outcome == key


async def test_a_store_failure_raised_to_many_callers_keeps_a_short_traceback(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-222: every workflow of a failed store, and each result() of them, raised
    the one StoreError object, whose traceback gathered every raise's frames (660 lines
    for 20 workflows): each caller gets a copy with its own."""
    import traceback

    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        failing_commits(monkeypatch, store, "uuid4", then="each",
                        error=garrison.StoreError(db, "database or disk is full"))
        for i in range(5):
            await node.start_workflow(keyed_call, id=f"w{i}")
        lengths = []
        for _ in range(3):
            for i in range(5):
                with trio.fail_after(10), pytest.raises(garrison.StoreError) as info:
                    await node.workflow(f"w{i}").result()
                lengths.append(len(traceback.extract_tb(info.value.__traceback__)))
                assert "disk is full" in str(info.value)
        assert len(set(lengths)) == 1, lengths
        monkeypatch.undo()


def test_an_error_raised_again_is_a_whole_copy() -> None:
    """helper-228: the copy kept the message and attributes of garrison's errors, but an
    OSError lost its errno and filename, a group could not be copied (the copy's error
    would have replaced it), and the notes were the original's list."""
    from garrison._errors import raised_again

    error = garrison.StoreError("s.db", "boom")
    error.add_note("first")
    copy = raised_again(error)
    copy.add_note("second")
    assert (str(copy), copy.path, type(copy)) == (str(error), "s.db", garrison.StoreError)
    assert error.__notes__ == ["first"] and copy.__notes__ == ["first", "second"]
    disk = raised_again(OSError(28, "No space left on device", "/x"))
    assert isinstance(disk, OSError) and (disk.errno, disk.filename) == (28, "/x")
    group = raised_again(ExceptionGroup("g", [ValueError(1)]))
    assert isinstance(group, ExceptionGroup) and len(group.exceptions) == 1

    class Odd(Exception):
        __slots__ = ()

        def __new__(cls, *args: object) -> Odd:
            raise RuntimeError("no")

    odd = Odd.__base__.__new__(Odd)  # type: ignore[union-attr]
    assert raised_again(odd) is odd  # (cannot be copied: raised as it is)
