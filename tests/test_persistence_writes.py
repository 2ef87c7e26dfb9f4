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
from _commit_faults import FullDisk

from garrison._errors import PromiseAlreadyCompleted, StoreError
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

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def __enter__(self) -> _FailingCommit:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.rollback()
        full = sqlite3.OperationalError("database or disk is full")
        full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
        raise full


async def test_a_failing_batch_fails_every_caller_in_it(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    store.write(Transaction().create_workflow("w", "app:flow"))
    real = store._conn
    errors: list[BaseException] = []

    async def writer(i: int) -> None:
        try:
            await store.commit(Transaction().set_state("w", f"k{i}", i))
        except StoreError as exc:
            errors.append(exc)

    store._conn = _FailingCommit(real)  # type: ignore[assignment]
    try:
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(writer, i)
    finally:
        store._conn = real
    assert len(errors) == 20
    assert all(str(e) == f"store {store.path!r}: the disk is full (database or disk is "
               "full)" for e in errors), errors
    assert all(isinstance(e.__cause__, sqlite3.OperationalError) for e in errors)
    assert store.states("w") == {}
    # the store keeps working afterwards
    await store.commit(Transaction().set_state("w", "after", 1))
    assert store.get_state("w", "after") == 1


@pytest.mark.parametrize("how", ["write", "alone", "batch"])
async def test_a_write_on_a_full_disk_is_a_store_error_naming_the_file(
        sqlite_store: SQLiteStore, how: str) -> None:
    """nu397: a commit written alone in the trio thread (the group commit's fast path,
    ``store.write``'s path too) raised SQLite's own ``OperationalError: database or
    disk is full``, which names no file, where README promises a StoreError naming it;
    a batch's callers got it too. Each is the StoreError, SQLite's error its cause; an
    error of the written operations themselves is left as it is."""
    store = sqlite_store
    store.write(Transaction().create_workflow("w", "app:flow"))
    disk = FullDisk.of(store)
    disk.full = True
    errors: list[BaseException] = []

    async def writer(tx: Transaction) -> None:
        try:
            await store.commit(tx)
        except Exception as exc:
            errors.append(exc)

    tx = Transaction().set_state("w", "k", 1)
    if how == "write":
        with pytest.raises(StoreError) as info:
            store.write(tx)
        errors.append(info.value)
    elif how == "alone":
        await writer(tx)
    else:
        store._group._alone_inline = False  # (each would write alone)
        async with trio.open_nursery() as nursery:  # (each apart, as the batch failed)
            for i in range(5):
                nursery.start_soon(writer, Transaction().set_state("w", f"k{i}", i))
    assert len(errors) == (1 if how in ("write", "alone") else 5), errors
    for exc in errors:
        assert isinstance(exc, StoreError), repr(exc)
        assert str(exc) == (f"store {store.path!r}: the disk is full (database or disk "
                            "is full)")
        assert isinstance(exc.__cause__, sqlite3.OperationalError)
    disk.full = False
    with pytest.raises(sqlite3.IntegrityError):  # (the operations' own: as it is)
        store.write(Transaction().append_journal("w", 1, "activity", "a", 1)
                    .append_journal("w", 1, "activity", "a", 1))
    assert store.states("w") == {}


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


async def test_a_commit_written_alone_that_found_the_store_busy_is_timed_from_its_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # its first attempt waited for the lock in the trio thread (SQLite's busy_timeout)
    # before the write went on in a worker thread: one transaction, timed from there
    from garrison import _observe
    from garrison.persistence import _group_commit

    def write_one(tx: Any) -> list[Any]:
        time.sleep(0.03)
        raise _group_commit.Busy()

    def write_batch(batch: list[CommitRequest]) -> None:
        for request in batch:
            request.results = _group_commit.NONE_RESULT

    monkeypatch.setattr(_observe, "timing", True)
    engine = _group_commit.GroupCommit(write_one, write_batch, Strategy.THREAD)
    counts, before_sum = _observe.commit_seconds.cumulative()
    assert await engine.commit("tx") == [None]
    after, after_sum = _observe.commit_seconds.cumulative()
    assert after[-1][1] - counts[-1][1] == 1
    assert after_sum - before_sum >= 0.03


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
    wake-up frees its request's balance dict: the count stays level over the wake-ups
    (measured with the collector off, which still counts)."""
    from garrison.persistence._group_commit import INLINE_BATCH_MAX

    store = sqlite_store
    store._group._alone_inline = False
    n = INLINE_BATCH_MAX  # (the most one batch written in the trio thread holds)
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
    # (a level count: a few dozen, whatever the batch's size; not one per wake-up)
    assert resumed[0] - written[0] < n // 5, (written, resumed)


def test_a_waiting_commit_s_balance_is_nothing_the_collector_walks() -> None:
    """The object each waiting request holds only to be freed as it is woken (see the
    test above) is counted by the garbage collector when made and freed, but not
    tracked: an empty list was walked by every collection while its commit waited, and
    with a thousand workflows waiting it outlived middle collections into the old
    generation, one object more per waiting step for every later one to walk."""
    request = CommitRequest(Transaction(), None)  # type: ignore[arg-type]
    assert request.balance is not None and not gc.is_tracked(request.balance)


def test_a_step_s_transaction_holds_its_workflow_id_in_nothing_the_collector_keeps() -> None:
    """A transaction of one operation, a step's record waiting for its batch, names its
    workflow in a tuple, which the garbage collector lets go at its first look: a list
    was walked by every collection while the commit waited. A second operation, or
    another transaction's, makes it a list, kept in order."""
    tx = Transaction().append_journal_text("w1", 1, "activity", "app:step", '{"ok":1}', 1, 0.0)
    gc.collect()
    assert not gc.is_tracked(tx.workflow_ids), tx.workflow_ids
    assert list(tx.workflow_ids) == ["w1"]
    tx.append_journal("w2", 1, "activity", "app:step", 2)
    tx.delete_schedule("nightly")
    tx.extend(Transaction().remove_timer("w3", 4))
    assert tx.workflow_ids == ["w1", "w2", "", "w3"] and len(tx) == 4
    assert tx.schedule_ids == ["nightly"]
    alone = Transaction().extend(Transaction().remove_timer("w4", 1))
    assert list(alone.workflow_ids) == ["w4"] and len(alone) == 1


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


class _Interrupt(BaseException):
    """An interrupt that is no Exception (as KeyboardInterrupt and SystemExit are)."""


async def _commit_each(commit: Any, txs: list[Any]) -> list[BaseException | list[Any]]:
    """``await commit(tx)`` for each of ``txs`` in a task of its own, at once (the engine
    is told other tasks are runnable: nobody commits alone, and the commits form ONE
    batch); each one's results or what it raised."""
    got: list[BaseException | list[Any]] = []

    async def one(tx: Any) -> None:
        try:
            got.append(await commit(tx))
        except BaseException as exc:  # (the interrupt too: what each caller got)
            got.append(exc)

    with trio.fail_after(30):  # (a caller left waiting would hang here)
        async with trio.open_nursery() as nursery:
            for tx in txs:
                nursery.start_soon(one, tx)
    return got


async def test_an_interrupt_of_a_batch_is_raised_once_by_the_engine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A store's ``write_batch`` raises an interrupt (no Exception) without giving the
    requests an outcome: it goes on from the leader's commit, once, and the other
    callers resume with an error (each raised the interrupt again)."""
    from garrison.persistence import _group_commit

    def write_batch(batch: list[CommitRequest]) -> None:
        raise _Interrupt

    engine = _group_commit.GroupCommit(lambda tx: [None], write_batch, Strategy.INLINE)
    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    got = await _commit_each(engine.commit, ["tx0", "tx1", "tx2"])
    assert sorted(type(e).__name__ for e in got) == ["RuntimeError", "RuntimeError",
                                                     "_Interrupt"], got
    assert all("interrupted" in str(e) for e in got if isinstance(e, RuntimeError))


async def test_ctrl_c_is_held_off_while_a_commit_joins_writes_and_wakes_its_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Trio raises KeyboardInterrupt at any bytecode of code that is not KI-protected:
    in the middle of a batch's wake-ups it left the callers not yet woken parked for
    good (they refuse cancellation), and the program hung after Ctrl-C. The engine's
    writes and wake-ups run protected (the interrupt waits for the next checkpoint)."""
    from garrison.persistence import _group_commit

    seen: dict[str, list[bool]] = {"write_one": [], "write_batch": [], "wake": []}

    def write_one(tx: Any) -> list[Any]:
        seen["write_one"].append(trio.lowlevel.currently_ki_protected())
        return [None]

    def write_batch(batch: list[CommitRequest]) -> None:
        seen["write_batch"].append(trio.lowlevel.currently_ki_protected())
        for request in batch:
            request.results = [None]

    real = _group_commit._trio_fast.reschedule_now

    def reschedule_now() -> Any:
        reschedule = real()

        def wake(task: Any, value: Any) -> None:
            seen["wake"].append(trio.lowlevel.currently_ki_protected())
            reschedule(task, value)
        return wake

    monkeypatch.setattr(_group_commit._trio_fast, "reschedule_now", reschedule_now)
    engine = _group_commit.GroupCommit(write_one, write_batch, Strategy.INLINE)
    assert await engine.commit("alone") == [None]  # (nothing else runs: written alone)
    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    got = await _commit_each(engine.commit, ["tx0", "tx1", "tx2"])
    assert got == [[None]] * 3
    assert seen["write_one"] == [True] and seen["write_batch"] == [True], seen
    assert seen["wake"] and all(seen["wake"]), seen


async def test_a_commit_joining_a_forming_batch_waits_as_its_request_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit that joins a batch already forming held a coroutine of the engine
    over the generator parking it while it waited: with a thousand workflows stepping
    at once, one object more per waiting step for each young collection to walk and for
    the batch's wake-ups to read from memory again. Its caller awaits its request,
    parked by the request's one generator, joining the batch protected from Ctrl-C as
    before, and each caller gets its own results."""
    from garrison.persistence import _group_commit

    joined: list[bool] = []

    class Pending(list):  # type: ignore[type-arg]
        def append(self, request: Any) -> None:
            joined.append(trio.lowlevel.currently_ki_protected())
            super().append(request)

    awaited: list[str] = []

    def write_batch(batch: list[CommitRequest]) -> None:
        for request in batch:
            below = request.task.coro.cr_await  # (what its caller awaits, and below it)
            chain = []
            while below is not None:
                chain.append(getattr(below, "__qualname__", type(below).__name__))
                below = getattr(below, "cr_await", None) or getattr(below, "gi_yieldfrom",
                                                                    None)
            awaited.append(" ".join(chain))
            request.results = [request.tx]

    engine = _group_commit.GroupCommit(lambda tx: [tx], write_batch, Strategy.INLINE)
    engine._pending = Pending()
    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    got = await _commit_each(engine.commit, ["tx0", "tx1", "tx2", "tx3"])
    assert sorted(got) == [["tx0"], ["tx1"], ["tx2"], ["tx3"]]  # type: ignore[type-var]
    # the three that joined wait in their requests' generator; the leader runs (writes)
    assert sorted(awaited) == [""] + ["CommitRequest.__await__"] * 3, awaited
    assert joined == [True] * 4, joined


def test_ctrl_c_right_after_a_commit_joins_a_forming_batch_waits_for_its_park(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real Ctrl-C (SIGINT) landing the moment a commit's request has joined the
    batch forming, before it parks: raised there, it would leave in the batch a request
    whose task never waits, and the batch's wake-up would strike a task gone. The
    request's generator runs KI-protected, so trio holds the interrupt for the main
    task: every caller gets its own results, and the run ends with the interrupt."""
    from garrison.persistence import _group_commit

    struck: list[bool] = []

    class Pending(list):  # type: ignore[type-arg]
        def append(self, request: Any) -> None:
            super().append(request)
            if request.group is not None and not struck:  # (a request joining: once)
                struck.append(trio.lowlevel.currently_ki_protected())
                signal.raise_signal(signal.SIGINT)  # (its handler runs here, at once)

    def write_batch(batch: list[CommitRequest]) -> None:
        for request in batch:
            request.results = [request.tx]

    engine = _group_commit.GroupCommit(lambda tx: [tx], write_batch, Strategy.INLINE)
    engine._pending = Pending()
    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    got: list[Any] = []

    async def one(tx: str) -> None:
        got.append(await engine.commit(tx))

    async def main() -> None:
        with trio.fail_after(30):  # (a caller left waiting would hang here)
            async with trio.open_nursery() as nursery:
                for tx in ("tx0", "tx1", "tx2", "tx3"):
                    nursery.start_soon(one, tx)

    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # (trio's then)
    try:
        with pytest.raises(BaseException) as raised:
            trio.run(main)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert raised.group_contains(KeyboardInterrupt) if isinstance(
        raised.value, BaseExceptionGroup) else raised.type is KeyboardInterrupt, raised
    assert struck == [True]
    assert sorted(got) == [["tx0"], ["tx1"], ["tx2"], ["tx3"]], got
    assert engine._pending == [] and not engine.busy


async def test_a_commit_made_leader_or_first_run_after_its_batch_commits_as_any(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The requests that join a batch while another is written in a worker thread form
    the next one, led by the oldest of them: it gathers and writes it from its own
    wait. A commit asked for while a batch forms but first run after it ended (a task
    started with ``store.commit`` as its function) is written as any other: it is a
    coroutine for trio, and does nothing until it runs."""
    import threading
    from collections.abc import Coroutine

    from garrison.persistence import _group_commit

    writing, release = threading.Event(), threading.Event()
    batches: list[list[Any]] = []

    def write_batch(batch: list[CommitRequest]) -> None:  # (in a worker thread)
        batches.append([request.tx for request in batch])
        if len(batches) == 1:
            writing.set()
            release.wait(10)
        for request in batch:
            request.results = [request.tx]

    engine = _group_commit.GroupCommit(lambda tx: ["alone"], write_batch, Strategy.THREAD)
    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    got: dict[str, Any] = {}

    async def one(tx: str) -> None:
        got[tx] = await engine.commit(tx)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for tx in ("a0", "a1"):
                nursery.start_soon(one, tx)
            while not writing.is_set():  # (the first batch is in the worker thread)
                await trio.sleep(0.001)
            for tx in ("b0", "b1", "b2"):
                nursery.start_soon(one, tx)
            late = engine.commit("late")  # asked for now, run once the batches ended
            assert isinstance(late, Coroutine)
            nursery.start_soon(engine.commit, "task")  # (joins the second batch)
            while len(engine._pending) < 4:
                await trio.sleep(0.001)
            release.set()
        monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 0)
        assert await late == ["alone"]  # (nothing else runs: written alone)
    assert got == {tx: [tx] for tx in ("a0", "a1", "b0", "b1", "b2")}
    assert sorted(batches[0]) == ["a0", "a1"]
    assert sorted(batches[1]) == ["b0", "b1", "b2", "task"]
    assert len(batches) == 2 and not engine.busy


async def _await(awaitable: Any) -> None:
    await awaitable


async def test_a_commit_awaited_twice_is_refused_not_written_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit asked for while a batch forms is its request, a coroutine of its own:
    awaited a second time, it joined the next batch (or wrote alone) again, committing
    its transaction twice; awaited from a second task while the first waited, it left
    the first never woken. As an ``async def`` function's coroutine, it runs once: a
    second await raises, and writes nothing."""
    from garrison.persistence import _group_commit

    written: list[Any] = []

    def write_batch(batch: list[CommitRequest]) -> None:
        for request in batch:
            written.append(request.tx)
            request.results = [request.tx]

    def write_one(tx: Any) -> list[Any]:
        written.append(tx)
        return [tx]

    engine = _group_commit.GroupCommit(write_one, write_batch, Strategy.INLINE)
    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.commit, "lead")
            while not engine.busy:  # (its batch forms)
                await trio.lowlevel.checkpoint()
            twice = engine.commit("twice")
            assert isinstance(twice, CommitRequest)
            assert await twice == ["twice"]
            with pytest.raises(RuntimeError, match="awaited twice"):
                await twice
            nursery.start_soon(engine.commit, "again")
            while not engine.busy:  # (a batch forms again: the second await joined it)
                await trio.lowlevel.checkpoint()
            with pytest.raises(RuntimeError, match="awaited twice"):
                await twice
            shared = engine.commit("shared")  # (its batch still forms)
            nursery.start_soon(_await, shared)
            while shared not in engine._pending:  # (its first task waits in the batch)
                await trio.lowlevel.checkpoint()
            with pytest.raises(RuntimeError, match="awaited twice"):
                await shared
    assert sorted(written) == ["again", "lead", "shared", "twice"], written


def test_every_store_commit_of_garrison_is_awaited_or_handed_on() -> None:
    """A commit asked for while a batch forms is its request, which commits nothing
    until it is awaited and, unlike an ``async def`` function's coroutine, is dropped
    without Python's "never awaited" warning: a missing ``await`` before a
    ``store.commit(tx)`` would lose the write silently whenever the node is busy (and
    only warn when it is not). Every ``.commit(...)`` call with a transaction in
    garrison's code is awaited where it is made, or returned to a caller that awaits
    it (a plain function handing the coroutine on)."""
    import ast

    bare: list[str] = []
    for path in sorted((ROOT / "garrison").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree)
                   for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "commit" and node.args \
                    and not isinstance(parents.get(node), ast.Await | ast.Return):
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bare, f"store commits neither awaited nor returned: {bare}"


def test_a_commit_closed_or_thrown_into_before_it_ran_joins_no_batch() -> None:
    """A commit asked for while a batch forms is a coroutine that has not run: closed,
    or thrown into (as trio does to a task's coroutine), it raises there and joins no
    batch, whose writer would otherwise wake a task that never waited."""
    from garrison.persistence import _group_commit

    engine = _group_commit.GroupCommit(lambda tx: [tx], lambda batch: None, Strategy.INLINE)
    engine._flushing = True  # (a batch forms)
    engine.commit("closed").close()
    thrown = engine.commit("thrown")
    with pytest.raises(ValueError, match="boom"):
        thrown.throw(ValueError("boom"))
    assert engine._pending == []


@pytest.mark.parametrize("where", ["batch", "isolated"])
@pytest.mark.parametrize("strategy", [Strategy.INLINE, Strategy.THREAD])
async def test_an_interrupt_of_a_sqlite_batch_goes_on_and_fails_every_caller(
        sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, where: str,
        strategy: Strategy) -> None:
    """SQLite: an interrupt (no Exception: a KeyboardInterrupt, a SystemExit) while a
    batch is written (its one transaction, or its rewrite with a SAVEPOINT per caller),
    in the trio thread or a worker thread, goes on from the batch's leader, once; every
    other caller gets a StoreError saying its write was interrupted. (It was given to
    every caller as its outcome, and swallowed by the store.) Nothing of it committed,
    and the store writes on."""
    from garrison import StoreError
    from garrison.persistence import _group_commit

    store = sqlite_store
    store.write(Transaction().create_workflow("w", "app:flow"))
    real = store._apply
    calls: list[int] = []

    def apply(tx: Transaction) -> list[Any]:
        calls.append(1)
        if where == "isolated" and len(calls) == 1:
            raise ValueError("one caller's own error: the batch is written again")
        if where == "batch" or len(calls) == 2:
            raise _Interrupt
        return real(tx)

    monkeypatch.setattr(store, "_apply", apply)
    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    store._group.strategy = strategy
    store._group._alone_inline = False
    got = await _commit_each(store.commit, [Transaction().set_state("w", f"k{i}", i)
                                            for i in range(3)])
    assert [type(e) for e in got].count(_Interrupt) == 1, got
    others = [e for e in got if not isinstance(e, _Interrupt)]
    assert len(others) == 2 and all(isinstance(e, StoreError) for e in others), got
    assert all("interrupted (_Interrupt)" in str(e) for e in others), others
    monkeypatch.undo()
    assert store.states("w") == {}
    await store.commit(Transaction().set_state("w", "after", 1))
    assert store.states("w") == {"after": 1}


class _InterruptAfterBegin:
    """The store's writer connection, but the ``nth`` ``BEGIN IMMEDIATE`` it runs is
    followed by an interrupt (a KeyboardInterrupt landing right after the statement
    returned, before the ``with conn:`` block that commits or rolls back)."""

    def __init__(self, conn: sqlite3.Connection, nth: int) -> None:
        self.conn = conn
        self.begins = 0
        self.nth = nth

    def execute(self, sql: str, *args: Any) -> Any:
        cursor = self.conn.execute(sql, *args)
        if sql == "BEGIN IMMEDIATE":
            self.begins += 1
            if self.begins == self.nth:
                raise _Interrupt
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def __enter__(self) -> Any:
        return self.conn.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.conn.__exit__(*exc)


@pytest.mark.parametrize("where", ["write", "batch", "isolated", "wakeups"])
async def test_an_interrupt_right_after_begin_leaves_no_transaction_open(
        sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """SQLite: an interrupt landing between ``BEGIN IMMEDIATE`` and the ``with conn:``
    block (a synchronous write of several operations, a batch, its rewrite with a
    SAVEPOINT per caller, the take of the wakeups) rolls the transaction back. It was
    left open on the writer's connection, holding the file's write lock: every later
    transaction failed ("cannot start a transaction within a transaction"), and a
    write of one statement went into the open transaction, reported committed and lost
    when the store closed."""
    from garrison.persistence import _group_commit

    store = sqlite_store
    store.write(Transaction().create_workflow("w", "app:flow"))
    real = store._conn
    store._conn = _InterruptAfterBegin(real, 2 if where == "isolated" else 1)  # type: ignore[assignment]
    txs = [Transaction().set_state("w", f"k{i}", i).set_state("w", f"j{i}", i)
           for i in range(3)]
    if where == "write":
        with pytest.raises(_Interrupt):
            store.write(txs[0])
    elif where == "wakeups":
        with pytest.raises(_Interrupt):
            store.take_wakeups()
    else:
        if where == "isolated":  # (one caller's own error: the batch is written again)
            txs[1] = Transaction().update_workflow("missing", status="running")
        monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
        got = await _commit_each(store.commit, txs)
        assert [type(e) for e in got].count(_Interrupt) == 1, got
    store._conn = real
    assert not real.in_transaction
    store.write(Transaction().set_state("w", "after", 1))
    store.write(Transaction().set_state("w", "after2", 2).set_state("w", "after3", 3))
    with sqlite3.connect(str(store.path)) as other:
        keys = other.execute("SELECT key FROM state ORDER BY key").fetchall()
    assert keys == [("after",), ("after2",), ("after3",)]


def test_a_batch_written_after_the_store_closed_says_it_is_closed(
        sqlite_store: SQLiteStore) -> None:
    """SQLite: a batch written once the store was closed (formed before, written after:
    a node's shutdown) gives each caller the error of a call on a closed store, as a
    single commit gets, not the driver's "Cannot operate on a closed database" of the
    batch's rewrite with a SAVEPOINT per caller, tried as if one caller had failed."""
    store = sqlite_store
    store.write(Transaction().create_workflow("w", "app:flow"))
    batch = [CommitRequest(Transaction().set_state("w", f"k{i}", i), None)  # type: ignore[arg-type]
             for i in range(3)]
    store.close()
    store._write_batch(batch)
    assert all(isinstance(r.error, RuntimeError) and "is closed" in str(r.error)
               for r in batch), [r.error for r in batch]
    assert store.statistics().failed_batches == 0


@pytest.mark.parametrize("strategy", [Strategy.INLINE, Strategy.THREAD])
async def test_a_batch_written_in_the_trio_thread_holds_at_most_its_limit(
        monkeypatch: pytest.MonkeyPatch, strategy: Strategy) -> None:
    """Thousands of commits waiting at once (a parent's cancel ending 10,000 children)
    were one batch written in the trio thread, and its callers all woke in one
    scheduler pass: the node ran nothing else meanwhile. A batch written there holds
    INLINE_BATCH_MAX requests at most, the rest the next batches; one for a
    worker thread is not split. Every caller gets its own results."""
    from garrison.persistence import _group_commit

    limit = getattr(_group_commit, "INLINE_BATCH_MAX", 500)
    written: list[tuple[bool, list[str]]] = []

    def write_batch(batch: list[CommitRequest]) -> None:
        written.append((trio.lowlevel.in_trio_run(), [request.tx for request in batch]))
        for request in batch:
            request.results = [request.tx]

    engine = _group_commit.GroupCommit(lambda tx: [tx], write_batch, strategy)
    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    n = 2 * limit + 3
    got: dict[int, list[Any]] = {}

    async def commit(i: int) -> None:
        got[i] = await engine.commit(f"tx{i}")

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(commit, i)
    assert got == {i: [f"tx{i}"] for i in range(n)}
    assert sum(len(txs) for _, txs in written) == n
    inline = [txs for here, txs in written if here]
    assert all(len(txs) <= limit for txs in inline), [len(txs) for txs in inline]
    if strategy is Strategy.INLINE:
        assert len(inline) == len(written) >= 3


async def test_a_thousand_commits_waiting_at_once_are_one_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand workflows stepping at once commit as one batch in the trio thread:
    split in two, each half waited through the other's write, and each step cost more
    (its objects fetched from memory again, more SQLite pages written per step)."""
    from garrison.persistence import _group_commit

    written: list[int] = []

    def write_batch(batch: list[CommitRequest]) -> None:
        written.append(len(batch))
        for request in batch:
            request.results = [request.tx]

    engine = _group_commit.GroupCommit(lambda tx: [tx], write_batch, Strategy.INLINE)
    monkeypatch.setattr(_group_commit, "runnable_tasks", lambda: 1)  # nobody alone
    got: dict[int, list[Any]] = {}

    async def commit(i: int) -> None:
        got[i] = await engine.commit(f"tx{i}")

    async with trio.open_nursery() as nursery:
        for i in range(1000):
            nursery.start_soon(commit, i)
    assert got == {i: [f"tx{i}"] for i in range(1000)}
    assert written == [1000]
