"""A workflow's later commits wait for an earlier commit of its buffered records.

``workflow.start`` after a recorded value commits the buffer from a host task
(``flush_soon``): the workflow runs on. A later commit of the workflow (a send, a
reply, continue_as_new) waits for that flush and raises its failure: landing without it
(that batch failed, the next did not) sent a value the journal lost. Also: the effects
guarded by ``records_committed`` after a failed flush, the node closing and the store
failing while a workflow waits there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from _commit_faults import failing_commits, slow_commits

import garrison
from garrison import process, workflow

STORE: list[Any] = []
#: (the key a process got, the seqs of w's journal committed at that moment)
GOT: list[tuple[str, list[int]]] = []


def _got(key: str) -> None:
    GOT.append((key, [r.seq for r in STORE[0].journal("w")] if STORE else []))


def with_sink(db: str) -> Any:
    """A node on ``db`` whose key sink is a service: it runs before workflows resume."""
    from garrison.config import load_config_text

    cfg = load_config_text(f"""
version: "1.0"
namespace: t
entries:
  - {{name: sink, kind: process.py, source: "{__name__}:key_sink"}}
  - {{name: keys, kind: process.service, process: sink, lifecycle: {{auto_start: true}}}}
""", "sink.yaml")
    return garrison.open_node(config=cfg, store=db)


def flush_fails_once(monkeypatch: pytest.MonkeyPatch, store: Any, seq: int,
                     path: str) -> None:
    """The commit holding w's uuid4 at ``seq`` fails after half a second in flight (a
    transient failure: a full disk, a busy timeout, a dropped connection); later
    commits succeed."""
    failing_commits(monkeypatch, store, "uuid4", seq=seq, wid="w", then="once", after=0.5,
                    error=garrison.StoreError(path, "database or disk is full"))


@garrison.activity
async def noop(key: str) -> str:
    return key


async def key_sink() -> None:
    """A plain process acting on each key it is sent (or called with) at once."""
    process.register("keys")
    while True:
        msg = await process.inbox().receive()
        _got(msg.payload)
        if msg.call_ref is not None:
            await msg.reply(msg.payload)


async def start_then_send() -> str:
    await process.inbox().receive()             # seq 1 (the sink runs by then)
    key = str(workflow.uuid4())                 # seq 2
    h = workflow.start(noop, key)               # seq 3: flush_soon (seq 2)
    await process.send("keys", "key", key)      # seq 4: commits on its own
    await h
    return key


async def start_then_wait_then_send() -> str:
    key = str(workflow.uuid4())                 # seq 1
    h = workflow.start(noop, key)               # seq 2: flush_soon (seq 1)
    await process.inbox().receive()             # seq 3: parked (nothing buffered)
    await process.send("keys", "key", key)      # seq 4
    await h
    return key


async def _poke_w_later() -> None:
    await trio.sleep(0.1)
    await process.send(garrison.Pid("workflows", "w"), "go", None)


@pytest.mark.parametrize(("flow", "seq"), [(start_then_send, 2),
                                          (start_then_wait_then_send, 1)])
async def test_a_send_after_a_failed_flush_is_not_made(tmp_path: Path, autojump_clock: Any,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       flow: Any, seq: int) -> None:
    """The flush of the key fails, the store works again for the send: the process got
    a key that is not in the journal (the next node makes a new one and does not send
    again: the send is journaled), so the key the process acted on and the workflow's
    disagree."""
    from garrison.persistence import SQLiteStore

    GOT.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        STORE[:] = [store]
        flush_fails_once(monkeypatch, store, seq, db)
        await node.spawn(key_sink)
        await trio.sleep(0.01)
        await node.start_workflow(flow, id="w")
        await node.spawn(_poke_w_later)
        with trio.fail_after(10), pytest.raises(garrison.StoreError):
            await node.workflow("w").result()
        monkeypatch.undo()
    with SQLiteStore(db) as again:
        journal = {r.seq: (r.kind, r.outcome) for r in again.journal("w")}
    for key, _seqs in GOT:
        assert journal.get(seq) == ("uuid4", key), \
            f"the process got {key}; w's journal: {journal}"


# ------------------------------------------------ a send to a workflow of this node
RECEIVED: list[str] = []


async def receiver() -> str:
    msg = await process.inbox().receive()
    RECEIVED.append(msg.payload)
    return str(msg.payload)


async def start_wait_send_to_workflow() -> str:
    key = str(workflow.uuid4())                 # seq 1
    h = workflow.start(noop, key)               # seq 2: flush_soon (seq 1)
    await process.inbox().receive()             # seq 3
    await process.send(garrison.Pid("workflows", "r"), "key", key)   # seq 4
    await h
    return key


async def test_a_send_to_a_workflow_after_a_failed_flush(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver's inbox row is committed with the send's record, after the flush
    of the key failed: the receiver acts on a key its sender's next run does not have."""
    RECEIVED.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        flush_fails_once(monkeypatch, store, 1, db)
        await node.start_workflow(receiver, id="r")
        await trio.sleep(0.01)
        await node.start_workflow(start_wait_send_to_workflow, id="w")
        await node.spawn(_poke_w_later)
        with trio.fail_after(10), pytest.raises(garrison.StoreError):
            await node.workflow("w").result()
        monkeypatch.undo()
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(10):
            key = await node.workflow("w").result()
            got = await node.workflow("r").result()
    assert got == key, (RECEIVED, key)


# ------------------------------------------------ a workflow's reply
async def start_then_reply() -> str:
    key = str(workflow.uuid4())                 # seq 1
    h = workflow.start(noop, key)               # seq 2: flush_soon (seq 1)
    msg = await process.inbox().receive()       # seq 3: the call's request
    await msg.reply(key)                        # seq 4
    await h
    return key


async def calls_w_later() -> None:
    await trio.sleep(0.1)
    key = await process.call(garrison.Pid("workflows", "w"), "key", None)
    _got(key)


async def test_a_reply_after_a_failed_flush(tmp_path: Path, autojump_clock: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    GOT.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        STORE[:] = [node.hosts["workflows"].store]
        flush_fails_once(monkeypatch, STORE[0], 1, db)
        await node.start_workflow(start_then_reply, id="w")
        await node.spawn(calls_w_later)
        with trio.fail_after(10), pytest.raises(garrison.StoreError):
            await node.workflow("w").result()
        monkeypatch.undo()
    assert GOT == [], f"the caller got {GOT[0][0]} (w's journal then: seqs {GOT[0][1]})"


# ------------------------------------------------ effects already guarded (3b50fc6)
async def start_then_call() -> str:
    key = str(workflow.uuid4())
    h = workflow.start(noop, key)
    got = str(await process.call("keys", "key", key))   # records_committed: waits
    await h
    return got


async def keeps_key(key: str) -> None:
    _got(key)


async def start_then_spawn_process() -> str:
    key = str(workflow.uuid4())
    h = workflow.start(noop, key)
    await process.spawn(keeps_key, key, host="processes")
    await h
    return key


async def start_then_spawn_child() -> str:
    key = str(workflow.uuid4())
    h = workflow.start(noop, key)
    child = await process.spawn(keyed_child, key)  # no id: waits for the flush
    event = await process.events().receive()
    assert event.pid == child
    _got(event.result)
    await h
    return key


async def keyed_child(key: str) -> str:
    return key


@pytest.mark.parametrize("flow", [start_then_call, start_then_spawn_process,
                                  start_then_spawn_child])
async def test_guarded_effects_after_a_failed_flush(tmp_path: Path, autojump_clock: Any,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    flow: Any) -> None:
    GOT.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        STORE[:] = [node.hosts["workflows"].store]
        flush_fails_once(monkeypatch, STORE[0], 1, db)
        await node.spawn(key_sink)
        await trio.sleep(0.01)
        await node.start_workflow(flow, id="w")
        with trio.fail_after(10), pytest.raises(garrison.StoreError):
            await node.workflow("w").result()
        monkeypatch.undo()
    assert GOT == []
    STORE.clear()
    async with with_sink(db) as node:
        with trio.fail_after(10):
            key = await node.workflow("w").result()
    assert [k for k, _ in GOT] == [key]


# ------------------------------------------------ continue_as_new
async def start_then_continue(n: int) -> str:
    k = str(workflow.uuid4())
    workflow.start(noop, k)  # abandoned
    if n:
        workflow.continue_as_new(n - 1)
    return k


async def test_continue_as_new_after_a_failed_flush(tmp_path: Path, autojump_clock: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The old run's flush fails: nothing of it went out (its started activity waited
    and was cancelled); the new run's journal is its own."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        flush_fails_once(monkeypatch, store, 1, db)
        await node.start_workflow(start_then_continue, 1, id="w")
        with trio.fail_after(10):
            try:
                key = await node.workflow("w").result()
            except garrison.StoreError:
                key = None
        monkeypatch.undo()
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(10):
            again = await node.workflow("w").result()
        journal = [(r.seq, r.kind, r.outcome) for r in node.hosts["workflows"].store.journal("w")]
    assert key in (None, again)
    assert journal[1:] == [(1, "uuid4", again)], journal


# ------------------------------------------------ the end after a failed flush
async def start_then_return() -> str:
    k = str(workflow.uuid4())
    workflow.start(noop, k)  # not awaited: cancelled at the end, unrecorded
    return k


async def test_the_end_waits_for_a_flush_in_flight(tmp_path: Path, autojump_clock: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The run ends while workflow.start's flush of its uuid4 is in flight and fails:
    its end is not recorded over the lost record (the workflow stops on the store's
    failure, as at any commit); the next node runs it from its journal, whole."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        flush_fails_once(monkeypatch, store, 1, db)
        await node.start_workflow(start_then_return, id="w")
        with trio.fail_after(10), pytest.raises(garrison.StoreError):
            await node.workflow("w").result()
        monkeypatch.undo()
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(10):
            key = await node.workflow("w").result()
        journal = [(r.seq, r.kind, r.outcome) for r in node.hosts["workflows"].store.journal("w")]
    assert (1, "uuid4", key) in journal, journal


# ------------------------------------------------ the node closing during a wait
BLOCK: list[bool] = []
SEEN: list[str] = []


@garrison.activity
async def remember(key: str) -> str:
    SEEN.append(key)
    if BLOCK:
        await trio.sleep_forever()
    return key


async def start_then_call_remember() -> list[str]:
    k1 = str(workflow.uuid4())
    h = workflow.start(remember, k1)            # flush_soon (slow)
    k2 = await remember(str(workflow.uuid4()))  # waits in records_committed
    return [await h, k2]


async def test_closing_the_node_while_waiting_in_records_committed(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    SEEN.clear()
    BLOCK.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        slow_commits(monkeypatch, store, "uuid4", seq=1, wid="w")
        await node.start_workflow(start_then_call_remember, id="w")
        await trio.sleep(0.1)  # the flush of seq 1 is in flight, the workflow waits
        assert SEEN == []
        start = trio.current_time()
    assert trio.current_time() - start <= 1.0  # at most the flush in flight
    monkeypatch.undo()
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(10):
            keys = await node.workflow("w").result()
    assert sorted(SEEN) == sorted(keys)


async def test_a_store_failing_while_waiting_in_records_committed(
        tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flush in flight fails: the workflow waiting for it stops (no hang), neither
    activity ran, and the next node runs both with the keys it records."""
    SEEN.clear()
    BLOCK.clear()
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        store = node.hosts["workflows"].store
        flush_fails_once(monkeypatch, store, 1, db)
        await node.start_workflow(start_then_call_remember, id="w")
        with trio.fail_after(10), pytest.raises(garrison.StoreError):
            await node.workflow("w").result()
        assert SEEN == []
        monkeypatch.undo()
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(10):
            keys = await node.workflow("w").result()
    assert sorted(SEEN) == sorted(keys)


# ------------------------------------------------ a child on another workflow host
