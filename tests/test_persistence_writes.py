"""Group commit from trio, and durability across SIGKILL (on both stores)."""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from garrison._errors import PromiseAlreadyCompleted
from garrison.persistence import RawJson, SQLiteStore, Transaction, open_store
from garrison.persistence._group_commit import CommitRequest, Strategy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(store_spec: str):  # type: ignore[no-untyped-def]
    with open_store(store_spec) as s:
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with SQLiteStore(str(tmp_path / "app.db")) as s:
        yield s


async def test_many_concurrent_writers_share_few_transactions(store: SQLiteStore) -> None:
    writers, steps = 100, 5
    # Tasks woken in one scheduler pass cannot see each other (trio's runq holds only
    # the next pass), so each would take the "alone" fast path and write at once; this
    # test is about the batches, so it turns the fast path off.
    store._group._alone_inline = False
    store.write(Transaction().create_workflow("receiver", "app:r"))
    for w in range(writers):
        store.write(Transaction().create_workflow(f"w{w}", "app:flow"))
    before = store.statistics()

    async def writer(w: int) -> None:
        for seq in range(steps):
            tx = (
                Transaction()
                .append_journal(f"w{w}", seq, "send", "ping", {"n": seq})
                .deliver("receiver", "ping", [w, seq], msg_id=f"{w}-{seq}")
                .update_workflow(f"w{w}", status="running")
            )
            results = await store.commit(tx)
            assert isinstance(results[1], int)
            # resumed only after commit: the reader connection sees it already
            assert store.inbox_message(f"{w}-{seq}") is not None

    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(writer, w)

    stats = store.statistics()
    calls = stats.batched_writes - before.batched_writes
    batches = stats.batches - before.batches
    assert calls == writers * steps
    assert batches <= calls // 10, stats  # far fewer transactions than calls
    assert stats.largest_batch >= writers // 2
    assert stats.sync_writes == before.sync_writes
    assert len(store.pending_messages("receiver")) == writers * steps
    assert all(len(store.journal(f"w{w}")) == steps for w in range(writers))


async def test_one_failing_caller_does_not_fail_the_others(store: SQLiteStore) -> None:
    store.write(Transaction().create_workflow("w", "app:flow"))
    store.resolve_promise("w", "done", 1)
    outcomes: dict[int, Any] = {}
    # batches written in a worker thread (as with synchronous="full"), never alone: the
    # test holds the writer lock from the trio thread
    store._group.strategy = Strategy.THREAD
    store._group._alone_inline = False

    async def ok(i: int) -> None:
        outcomes[i] = await store.commit(Transaction().set_state("w", f"k{i}", i))

    async def bad() -> None:
        try:
            await store.commit(Transaction().resolve_promise("w", "done", 2).set_state("w", "x", 1))
        except PromiseAlreadyCompleted as exc:
            outcomes[-1] = exc

    # Hold the writer so the first caller's batch waits and everyone else
    # queues behind it: the bad caller then shares a batch with nine others.
    store._write_lock.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ok, 0)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(1, 5):
            nursery.start_soon(ok, i)
        nursery.start_soon(bad)
        for i in range(5, 10):
            nursery.start_soon(ok, i)
        await trio.testing.wait_all_tasks_blocked()
        store._write_lock.release()

    assert isinstance(outcomes.pop(-1), PromiseAlreadyCompleted)
    assert sorted(outcomes) == list(range(10))
    assert store.states("w") == {f"k{i}": i for i in range(10)}  # "x" was rolled back
    stats = store.statistics()
    assert stats.failed_batches == 1 and stats.largest_batch == 10


async def test_a_run_of_journal_appends_shares_a_statement_and_isolates_a_duplicate(
        sqlite_store: SQLiteStore) -> None:
    """SQLite: a batch's single-append requests are written by one executemany per run of them;
    a duplicate seq among them fails only its own caller, in order with the others."""
    store = sqlite_store
    for w in ("a", "b", "c", "d", "e"):
        store.write(Transaction().create_workflow(w, "app:flow"))
    store.write(Transaction().append_journal("c", 1, "activity", "x", RawJson("0"), time=1.0))
    store._group.strategy = Strategy.THREAD  # (as in the test above)
    store._group._alone_inline = False
    outcomes: dict[str, Any] = {}

    async def append(w: str) -> None:
        tx = Transaction().append_journal(w, 1, "activity", "x", RawJson(f'"{w}"'), time=2.0)
        try:
            outcomes[w] = await store.commit(tx)
        except sqlite3.IntegrityError as exc:
            outcomes[w] = exc

    async def other() -> None:  # not a single append: it splits the run
        outcomes["state"] = await store.commit(Transaction().set_state("b", "k", 1))

    store._write_lock.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(append, "a")
        await trio.testing.wait_all_tasks_blocked()
        for w in ("b", "c"):
            nursery.start_soon(append, w)
        nursery.start_soon(other)
        for w in ("d", "e"):
            nursery.start_soon(append, w)
        await trio.testing.wait_all_tasks_blocked()
        store._write_lock.release()

    assert isinstance(outcomes.pop("c"), sqlite3.IntegrityError)
    assert outcomes == {"a": [None], "b": [None], "d": [None], "e": [None], "state": [None]}
    assert [r.outcome for r in store.journal("c")] == [0]  # the record it had
    for w in ("a", "b", "d", "e"):
        assert [(r.seq, r.outcome) for r in store.journal(w)] == [(1, w)]
    assert store.states("b") == {"k": 1}
    stats = store.statistics()
    assert stats.failed_batches == 1 and stats.largest_batch == 5

    # and without a failure: every request of the batch committed, in one transaction
    before = store.statistics()
    store._write_lock.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(append_at, store, "a", 2)
        await trio.testing.wait_all_tasks_blocked()
        for w in ("b", "c", "d", "e"):
            nursery.start_soon(append_at, store, w, 2)
        await trio.testing.wait_all_tasks_blocked()
        store._write_lock.release()
    after = store.statistics()
    assert after.transactions - before.transactions == 2  # "a" alone, then the other four
    assert after.failed_batches == before.failed_batches
    assert all(len(store.journal(w)) == 2 for w in ("a", "b", "c", "d", "e"))


async def append_at(store: SQLiteStore, w: str, seq: int) -> None:
    await store.commit(Transaction().append_journal(w, seq, "activity", "x", RawJson("1"),
                                                    time=3.0))


class _FailingCommit:
    """Wraps the writer connection; COMMIT fails like a full disk."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, *args: Any) -> Any:
        return self._conn.execute(*args)

    def executemany(self, *args: Any) -> Any:
        return self._conn.executemany(*args)

    def __enter__(self) -> _FailingCommit:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.rollback()
        raise sqlite3.OperationalError("database or disk is full")


async def test_a_failing_batch_fails_every_caller_in_it(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    store.write(Transaction().create_workflow("w", "app:flow"))
    real = store._conn
    errors: list[BaseException] = []

    async def writer(i: int) -> None:
        try:
            await store.commit(Transaction().set_state("w", f"k{i}", i))
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    store._conn = _FailingCommit(real)  # type: ignore[assignment]
    try:
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(writer, i)
    finally:
        store._conn = real
    assert len(errors) == 20
    assert all("disk is full" in str(e) for e in errors)
    assert store.states("w") == {}
    # the store keeps working afterwards
    await store.commit(Transaction().set_state("w", "after", 1))
    assert store.get_state("w", "after") == 1


async def test_a_batch_written_again_after_a_busy_attempt_starts_from_no_outcome(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a busy attempt may have given some requests an outcome (one isolated as failing)
    # before the lock stopped it; nothing of it was committed, and the attempt that
    # commits decides every request's outcome again
    from garrison.persistence import _group_commit

    attempts: list[int] = []

    def write_batch(batch: list[CommitRequest]) -> None:
        attempts.append(len(batch))
        if len(attempts) == 1:
            batch[0].error = ValueError("from the attempt that was busy")
            raise _group_commit.Busy()
        for request in batch:
            request.results = _group_commit.NONE_RESULT

    engine = _group_commit.GroupCommit(lambda tx: [None], write_batch, Strategy.INLINE)
    got: dict[int, Any] = {}

    async def commit(i: int) -> None:
        try:
            got[i] = await engine.commit(f"tx{i}")
        except ValueError as exc:
            got[i] = exc

    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(commit, i)
    assert attempts == [3, 3]
    assert got == {0: [None], 1: [None], 2: [None]}


async def test_a_commit_asked_for_finishes_even_if_its_caller_is_cancelled(
    store: SQLiteStore,
) -> None:
    store.write(Transaction().create_workflow("w", "app:flow"))
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(store.commit, Transaction().set_state("w", f"k{i}", i))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert len(store.states("w")) == 20


async def test_sync_and_group_writes_mix(store: SQLiteStore) -> None:
    store.write(Transaction().create_workflow("w", "app:flow"))

    async def group(i: int) -> None:
        await store.commit(Transaction().append_journal("w", i, "activity", "a", i))

    async with trio.open_nursery() as nursery:
        for i in range(0, 40, 2):
            nursery.start_soon(group, i)
            store.write(Transaction().append_journal("w", i + 1, "now", "now", float(i)))
            await trio.lowlevel.checkpoint()
    assert [r.seq for r in store.journal("w")] == list(range(40))
    assert await store.commit(Transaction()) == []


_KILL_SCRIPT = """
import sys, trio
sys.path.insert(0, {root!r})
from garrison.persistence import Transaction, open_store

store = open_store({path!r})
WORKFLOWS = 8
for w in range(WORKFLOWS):
    store.write(Transaction().create_workflow(f"w{{w}}", "app:flow"))
store.write(Transaction().create_workflow("sink", "app:sink"))

async def writer(w):
    seq = 0
    while True:
        tx = (Transaction()
              .append_journal(f"w{{w}}", seq, "send", "tick", {{"seq": seq, "pad": "x" * 200}})
              .deliver("sink", "tick", [w, seq], msg_id=f"{{w}}-{{seq}}")
              .set_state(f"w{{w}}", "last", seq))
        if seq % 3 == 0:
            store.write(tx)          # synchronous commits too
        else:
            await store.commit(tx)   # group commit
        seq += 1
        if seq == 50 and w == 0:
            print("ready", flush=True)

async def main():
    async with trio.open_nursery() as nursery:
        for w in range(WORKFLOWS):
            nursery.start_soon(writer, w)

trio.run(main)
"""


def test_sigkill_mid_writes_leaves_a_consistent_store(store_spec: str) -> None:
    path = store_spec
    script = _KILL_SCRIPT.format(root=str(ROOT), path=path)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # let it write under load
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    with open_store(path) as store:  # the kernel released the lock
        if isinstance(store, SQLiteStore):
            assert store.db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total = 0
        for w in range(8):
            seqs = [r.seq for r in store.journal(f"w{w}")]
            assert seqs == list(range(len(seqs)))  # no gaps
            if seqs:
                # the three writes of one step committed together, or not at all
                assert store.get_state(f"w{w}", "last") == seqs[-1]
                assert store.inbox_message(f"{w}-{seqs[-1]}") is not None
                assert store.inbox_message(f"{w}-{seqs[-1] + 1}") is None
            total += len(seqs)
        assert total >= 50
        assert len(store.pending_messages("sink")) == total


async def test_each_caller_of_a_batch_frees_its_own_request_as_it_resumes(
        sqlite_store: SQLiteStore) -> None:
    """A caller's request (its transaction, its results) goes as that caller resumes,
    not with the last caller of the batch: waiting callers that held the batch kept
    every request alive until the last one resumed, which then freed them all at once,
    deallocations the garbage collector's count misses (young collections came several
    times as often with many workflows waiting)."""
    store = sqlite_store
    store._group._alone_inline = False  # (see test_many_concurrent_writers_share...)
    n = 20
    for w in range(n):
        store.write(Transaction().create_workflow(f"w{w}", "app:flow"))
    left: list[int] = []

    async def writer(w: int) -> None:
        await store.commit(Transaction().append_journal(f"w{w}", 1, "send", "ping", w))
        me = trio.lowlevel.current_task()
        left.append(sum(1 for obj in gc.get_objects()
                        if type(obj) is CommitRequest and obj.task is me))

    async with trio.open_nursery() as nursery:
        for w in range(n):
            nursery.start_soon(writer, w)
    assert store.statistics().largest_batch >= n // 2  # they did share batches
    assert left == [0] * n


async def test_waking_a_batch_s_callers_leaves_the_collector_s_count_level(
        sqlite_store: SQLiteStore) -> None:
    """Trio makes an object to wake each caller of a batch; made a thousand in a row with
    nothing freed between, they count as a thousand allocations to the garbage collector
    and start a young collection at every batch, walking every waiting step's objects
    (at 1,000 concurrent workflows each step's objects were walked once that way). Each
    wake-up frees its request's balance list: the count stays level over the wake-ups
    (measured with the collector off, which still counts)."""
    store = sqlite_store
    store._group._alone_inline = False
    n = 1000
    store.write(Transaction().create_workflow("w", "app:flow"))
    written: list[int] = []
    resumed: list[int] = []
    write = store._group._write_batch

    def counting(batch: list[CommitRequest]) -> None:
        write(batch)
        written.append(gc.get_count()[0])  # the wake-ups follow at once

    store._group._write_batch = counting

    async def writer(seq: int) -> None:
        await store.commit(Transaction().append_journal("w", seq, "send", "ping", seq))
        if not resumed:  # the batch's leader: it returns right after the wake-ups
            resumed.append(gc.get_count()[0])

    gc.disable()
    try:
        async with trio.open_nursery() as nursery:
            for seq in range(1, n + 1):
                nursery.start_soon(writer, seq)
    finally:
        gc.enable()
    assert store.statistics().largest_batch == n  # one batch: all waited together
    assert resumed[0] - written[0] < n // 10, (written, resumed)


async def test_a_loop_of_awaited_starts_shares_commits_with_the_running_workflows(
        tmp_path: Path) -> None:
    """``await start_workflow`` one after another (a web handler's shape): each start's
    commit joins the batch of the workflows started just before it, rather than the
    leader of a batch writing alone because trio had not yet run the tasks released
    with it (a pass runs its tasks in random order)."""
    import workflow_app as app

    import garrison

    store = SQLiteStore(str(tmp_path / "wf.db"))
    async with garrison.open_node(store=store) as node:
        tx0 = store.statistics().transactions
        for i in range(100):
            await node.start_workflow(app.steps, i, id=f"l{i}")
        for i in range(100):
            assert await node.workflow(f"l{i}").result() == i + 10
        transactions = store.statistics().transactions - tx0
    store.close()
    # 100 starts + 1,000 steps + 100 ends: one batch per start, and a few at the end
    assert transactions < 140, transactions


async def test_a_full_batch_that_every_task_joined_is_written_without_a_thread_hop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At ``synchronous="full"`` a batch goes to a worker thread so that the node runs
    during the fsync; when every runnable task is in the batch nothing could run, so it
    is written in the trio thread (no hop there and back). With a task that keeps
    running, the batches go to the thread again."""
    import random
    import threading

    import workflow_app as app

    import garrison

    # trio runs a pass's tasks in a random order: fix it, so that which batches see the
    # busy task below does not change from run to run
    monkeypatch.setattr(trio._core._run, "_r", random.Random(17))
    store = SQLiteStore(str(tmp_path / "wf.db"), synchronous="full")
    assert store._group.strategy is Strategy.THREAD
    written: list[tuple[bool, int]] = []  # (in the trio thread, batch size)
    write_batch = store._group._write_batch

    def spy(batch: list[Any]) -> None:
        written.append((threading.current_thread() is threading.main_thread(), len(batch)))
        write_batch(batch)

    store._group._write_batch = spy
    async with garrison.open_node(store=store) as node:

        async def start(i: int, wid: str) -> None:
            await node.start_workflow(app.steps, i, id=wid)

        async def start_all(tag: str) -> None:
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(start, i, f"{tag}{i}")
            for i in range(20):
                assert await node.workflow(f"{tag}{i}").result() == i + 10

        await start_all("a")
        assert any(size > 1 for _, size in written), written
        assert all(here for here, _ in written), written
        written.clear()
        running = True

        async def busy() -> None:  # always runnable: the node has other work
            while running:
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            await start_all("b")
            running = False
        # (a task that runs later in the same scheduler pass as the batch's leader is
        # not visible to it: such batches are still written in the trio thread)
        threaded = sum(1 for here, _ in written if not here)
        assert threaded >= len(written) // 4, written
    store.close()


def test_the_node_store_checkpoints_its_wal_in_a_thread_of_its_own(tmp_path: Path) -> None:
    """The writer connection no longer checkpoints (a commit in the trio thread never
    copies the WAL back nor fsyncs for it); a thread does, and the WAL starts over."""
    from garrison.persistence._checkpoint import BACKSTOP_PAGES

    path = str(tmp_path / "wf.db")
    with SQLiteStore(path) as store:
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
        checkpointer = store._checkpointer
        assert checkpointer is not None
        payload = "x" * 3000
        seq = 0

        def transactions(n: int) -> None:
            nonlocal seq
            for _ in range(n):
                seq += 1
                store.write(Transaction().set_state("w", f"k{seq % 50}", payload))

        store.write(Transaction().create_workflow("w", "m:f", "[]", time=0.0))
        transactions(checkpointer.interval)
        assert checkpointer.wait(1, timeout=30)
        # under constant writes the WAL still starts over: it stays far below what the
        # writer would let it reach by itself
        wal = path + "-wal"
        for round_ in range(2, 12):
            transactions(checkpointer.interval)
            assert checkpointer.wait(round_, timeout=30)
        page = store._conn.execute("PRAGMA page_size").fetchone()[0]
        assert os.path.getsize(wal) < 2 * checkpointer.target_frames * (page + 24)
        assert 2 * checkpointer.target_frames < BACKSTOP_PAGES
    with SQLiteStore(path, lock=False) as tool:  # a tool's store has no such thread
        assert tool._checkpointer is None
        assert tool.get_state("w", "k1") == payload


def test_a_full_store_writes_its_wal_over_zeros_and_recovers_from_it(tmp_path: Path) -> None:
    """At ``synchronous="full"`` the node's store gives its WAL its working size in
    zeros when it opens (an fsync of a file written over in place is cheaper than one
    of a file that grew). What a commit made durable is still recovered from that WAL
    after a crash: before the first checkpoint, and once the WAL started over on top of
    older frames."""
    import shutil

    from garrison.persistence._checkpoint import PREALLOCATED_FRAMES

    path = str(tmp_path / "wf.db")
    wal = path + "-wal"
    with SQLiteStore(str(tmp_path / "normal.db")):  # no fsync per commit: left as it is
        assert os.path.getsize(str(tmp_path / "normal.db") + "-wal") < 4096 * 8
    store = SQLiteStore(path, synchronous="full")
    try:
        page = store._conn.execute("PRAGMA page_size").fetchone()[0]
        size = os.path.getsize(wal)
        assert size >= PREALLOCATED_FRAMES * (page + 24)
        store.write(Transaction().create_workflow("w", "m:f", "[]", time=0.0))
        written = 0

        def write(n: int) -> None:
            nonlocal written
            for _ in range(n):
                written += 1
                store.write(Transaction().set_state("w", f"k{written}", written))

        def crash_copy(name: str) -> SQLiteStore:
            """The files as a power cut would leave them (no -shm: recovery reads the WAL)."""
            copy = tmp_path / name
            copy.mkdir()
            shutil.copy(path, copy / "wf.db")
            shutil.copy(wal, copy / "wf.db-wal")
            return SQLiteStore(str(copy / "wf.db"), lock=False)

        write(40)
        assert os.path.getsize(wal) == size  # written over the zeros, not grown
        with crash_copy("first") as copy:
            assert [copy.get_state("w", f"k{i}") for i in range(1, 41)] == list(range(1, 41))
        checkpointer = store._checkpointer
        assert checkpointer is not None
        write(checkpointer.interval)  # wakes the checkpoint thread
        assert checkpointer.wait(1, timeout=30)
        write(5)  # the WAL starts over: these frames lie on top of older ones
        with crash_copy("second") as copy:
            assert copy.db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert all(copy.get_state("w", f"k{i}") == i for i in range(1, written + 1))
            assert copy.get_state("w", f"k{written + 1}") is None
    finally:
        store.close()


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_a_commit_is_not_interrupted_by_a_cancellation_of_its_caller(
        store_spec: str, synchronous: str) -> None:
    """The store protocol's promise, on every store: a commit called in a cancelled scope
    (alone, or while a batch forms) commits and returns its results; the cancellation
    reaches the caller at its next checkpoint. A workflow's end relies on it (it is
    recorded without a shielded scope of its own)."""
    from garrison.persistence import open_store

    store = open_store(store_spec, synchronous=synchronous)
    try:
        store.write(Transaction().create_workflow("w", "app:flow"))
        reached: list[str] = []

        async def commit_cancelled(key: str) -> None:
            with trio.CancelScope() as scope:
                scope.cancel()
                assert await store.commit(Transaction().set_state("w", key, 1)) == [None]
                reached.append(key)
                await trio.lowlevel.checkpoint()
                reached.append("never")

        await commit_cancelled("alone")
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(commit_cancelled, f"batched{i}")
        assert sorted(reached) == ["alone"] + [f"batched{i}" for i in range(5)]
        assert sorted(store.states("w")) == sorted(reached)
    finally:
        store.close()


async def test_a_batch_the_store_closed_under_fails_as_closed_not_as_sqlite(
        tmp_path: Path) -> None:
    """A batch of several commits taken by the writer as the store closed (a node's
    close racing starts from outside it): the "store is closed" refusal failed the
    batch, which was then written again request by request on the closed connection,
    and every caller got sqlite3's ``ProgrammingError: Cannot operate on a closed
    database`` instead."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    me = trio.lowlevel.current_task()
    batch = [CommitRequest(Transaction().set_state(f"w{i}", "k", RawJson("1")), me)
             for i in range(2)]
    store.close()
    store._write_batch_locked(batch)
    for request in batch:
        assert isinstance(request.error, RuntimeError), request.error
        assert str(request.error) == f"store {str(tmp_path / 's.db')!r} is closed"
