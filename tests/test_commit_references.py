"""No store keeps a transaction (nor its list of operations) once its commit returned.

A workflow fills the transaction its step's commit just committed again with its next
step's outcome (``WorkflowCore.spare``: emptied in place, ``tx.ops.clear()``). That is
only sound if no path a commit takes to a store holds the transaction, or its ``ops``,
after the awaited ``commit`` returned: a store that read it later (a retry, a batch
split, an answer settled after a lost connection, statistics of the last batch) would
read the next step's records, or none. Each path is taken here, on both stores, and
each caller counts the references to its transaction and to its list as its commit
returns: the same as before it began. And workflows that step, set states and start
activities in the background on each store hand no transaction to the store twice at
once, nor change one while its commit is in flight, and their journals hold every
record.

Real threads and network I/O: these tests run on trio's real clock (but the last).
"""

from __future__ import annotations

import functools
import gc
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import garrison
from garrison import process, workflow
from garrison.persistence import PostgresStore, SQLiteStore, Transaction, open_store
from garrison.persistence import _pg_write as pgstore


def _steps(n: int, seq: int) -> list[Transaction]:
    """A step's commit of each of ``n`` workflows (one journal record), and every third
    one's with more (a state, a status: a transaction of several operations)."""
    txs = []
    for i in range(n):
        tx = Transaction().append_journal(f"w{i}", seq, "activity", "step", {"ok": i})
        if i % 3 == 0:
            tx.set_state(f"w{i}", "k", seq).update_workflow(f"w{i}", status="running")
        txs.append(tx)
    return txs


def _created(store: Any, n: int) -> None:
    tx = Transaction()
    for i in range(n):
        tx.create_workflow(f"w{i}", "app:flow", status="running")
    store.write(tx)


async def _commit_all(store: Any, txs: list[Transaction], *, strict: bool = True
                      ) -> list[str]:
    """Commit ``txs`` at once, a task each; what each caller found still held once its
    commit returned (or raised: a journal seq taken twice). Not ``strict``: what is
    still held once every caller has resumed (the error of a request the store wrote
    alone after its batch failed holds, until its caller takes it, the frame of that
    write, and so the batch: a copy without that traceback is raised to its caller)."""
    held: list[str] = []
    later: list[tuple[Transaction, list[Any], tuple[int, int]]] = []

    def check(tx: Transaction, ops: list[Any], before: tuple[int, int]) -> str | None:
        # (``before`` as counted here: this frame holds both once more)
        if (sys.getrefcount(tx), sys.getrefcount(ops)) == before:
            return None
        gc.collect()  # (a garbage cycle holds nothing anyone reads)
        after = sys.getrefcount(tx), sys.getrefcount(ops)
        if after == before:
            return None
        return (f"{tx!r}: references {before} before its commit, {after} after; "
                f"held by {[type(r).__name__ for r in gc.get_referrers(tx)]}, "
                f"its ops by {[type(r).__name__ for r in gc.get_referrers(ops)]}")

    def counted(tx: Transaction, ops: list[Any]) -> tuple[int, int]:
        return sys.getrefcount(tx), sys.getrefcount(ops)

    async def one(tx: Transaction) -> None:
        ops = tx.ops
        before = counted(tx, ops)
        try:
            await store.commit(tx)
        except Exception:
            pass
        found = check(tx, ops, before)
        if found is not None:
            if strict:
                held.append(found)
            else:
                # (as counted below: ``later``'s tuple in place of this task's frame,
                # and that loop's names in place of ``counted``'s)
                later.append((tx, ops, (before[0] + 1, before[1] + 1)))

    async with trio.open_nursery() as nursery:
        for tx in txs:
            nursery.start_soon(one, tx)
        del tx
    for tx, ops, before in later:
        found = check(tx, ops, before)
        if found is not None:
            held.append(found)
    assert store.journal("w0")  # (the commits did land)
    return held


async def _alone_batched_and_failing(store: Any) -> None:
    """A commit alone, a batch of 40, and a batch of 40 one of whose commits fails (a
    journal seq written twice): none of them kept by ``store`` once committed."""
    assert await _commit_all(store, _steps(1, 1)) == []
    assert await _commit_all(store, _steps(40, 2)) == []
    failing = _steps(40, 3)
    failing.append(Transaction().append_journal("w1", 3, "activity", "again"))
    assert await _commit_all(store, failing, strict=False) == []


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_a_sqlite_store_keeps_no_transaction_it_committed(
        tmp_path: Path, synchronous: str) -> None:
    with SQLiteStore(str(tmp_path / "s.db"), synchronous=synchronous) as store:
        _created(store, 40)
        # alone (no other task), a batch (in the trio thread, or in a worker thread for
        # ``full``), a batch one of whose commits fails (each written alone again)
        await _alone_batched_and_failing(store)


async def test_an_in_memory_store_keeps_no_transaction_it_committed() -> None:
    with SQLiteStore() as store:
        _created(store, 10)
        assert await _commit_all(store, _steps(10, 1)) == []


async def test_a_busy_sqlite_store_keeps_no_transaction_it_committed(tmp_path: Path) -> None:
    """Another connection holds the write lock: the commits wait for it in a worker
    thread and are written when it lets go."""
    db = str(tmp_path / "s.db")
    with SQLiteStore(db) as store:
        _created(store, 20)
        for n in (1, 20):
            held = threading.Event()

            def hold() -> None:
                conn = sqlite3.connect(db, isolation_level=None)
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    held.set()  # noqa: B023
                    time.sleep(0.3)
                    conn.execute("COMMIT")
                finally:
                    conn.close()

            holder = threading.Thread(target=hold)
            holder.start()
            held.wait()
            try:
                assert await _commit_all(store, _steps(n, n)) == []
            finally:
                holder.join()
        assert [r.seq for r in store.journal("w0")] == [1, 20]


@pytest.fixture
def pg(postgres_server: Any, request: pytest.FixtureRequest) -> str:
    """A fresh store URL (a new schema of the session's store database)."""
    from conftest import _postgres_store_url

    return _postgres_store_url(request)


@pytest.mark.postgres
async def test_a_postgres_store_keeps_no_transaction_it_committed(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with PostgresStore(pg) as store:
        _created(store, 40)
        # alone, a batch (from a worker thread while other tasks run), a batch one of
        # whose commits fails (a SAVEPOINT each)
        await _alone_batched_and_failing(store)
        # the connection drops: before a batch is sent (sent again), after it committed
        # (settled by the writer's number, its results read back)
        for seq, after in ((4, False), (5, True)):
            real = PostgresStore._send
            fired: list[int] = []

            def send(self: PostgresStore, conn: Any, calls: Any, mark: Any,
                     after: bool = after, real: Any = real, fired: list[int] = fired
                     ) -> Any:
                if fired:
                    return (yield from real(self, conn, calls, mark))
                fired.append(1)
                if after:
                    yield from real(self, conn, calls, mark)
                conn.close()
                raise pgstore._ConnectionLost("the network blinked")

            monkeypatch.setattr(PostgresStore, "_send", send)
            assert await _commit_all(store, _steps(40, seq)) == []
            assert fired
            monkeypatch.undo()
        assert [r.seq for r in store.journal("w0")] == [1, 2, 3, 4, 5]
        assert [r.seq for r in store.journal("w1")] == [2, 3, 4, 5]


# ------------------------------------------------------------------ workflows
@garrison.activity
async def bump(x: int) -> int:
    await trio.sleep(0)
    return x + 1


async def mixed(x: int) -> int:
    """Steps whose outcomes ride with the next commit, a state set between two, and
    activities started in the background (their outcome's commit takes the buffer
    from its own task) awaited after a step."""
    for i in range(5):
        x = await bump(x)
        workflow.set_state("at", i)
        started = workflow.start(bump, x)
        x = await bump(x)
        x = max(x, await started)
        workflow.uuid4()
    return x


def _watched(store: Any) -> list[str]:
    """Wrap ``store.commit``: what went wrong with the transactions a workflow handed
    it (one handed again while its commit was in flight, or changed meanwhile)."""
    wrong: list[str] = []
    in_flight: list[Transaction] = []
    real = store.commit

    async def commit(tx: Transaction) -> list[Any]:
        for other in in_flight:
            if other is tx or other.ops is tx.ops:
                wrong.append(f"{tx!r} committed again while its commit was in flight")
        ops = list(tx.ops)
        in_flight.append(tx)
        try:
            return await real(tx)  # type: ignore[no-any-return]
        finally:
            in_flight.remove(tx)
            if tx.ops != ops:
                wrong.append(f"{tx!r} changed while its commit was in flight: {ops}")

    store.commit = commit
    return wrong


@pytest.mark.parametrize("kind", ["memory", "sqlite", "sqlite-full",
                                  pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_workflow_hands_each_transaction_over_once_and_keeps_its_records(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    """Twenty workflows at once whose steps' outcomes ride with their next commit (the
    buffer a step committed is filled again by the next step's outcome), with states
    and background activities between: no transaction is handed to the store again,
    nor changed, while its commit is in flight, and every record is in the journal."""
    if kind == "postgres":
        from conftest import _postgres_store_url

        request.getfixturevalue("postgres_server")
        store = open_store(_postgres_store_url(request))
    else:
        store = SQLiteStore(None if kind == "memory" else str(tmp_path / "s.db"),
                            synchronous="full" if kind == "sqlite-full" else "normal")
    wrong = _watched(store)
    n = 20
    try:
        async with garrison.open_node(store=store) as node:
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(functools.partial(
                        node.start_workflow, mixed, i * 100, id=f"w{i}"))
            for i in range(n):
                assert await node.workflow(f"w{i}").result() == i * 100 + 10
            for i in range(n):
                history = node.workflow(f"w{i}").history()
                assert [e.seq for e in history] == list(range(1, len(history) + 1))
                kinds = [str(e.kind) for e in history]
                assert kinds.count("activity") == 15, kinds
                assert node.workflow(f"w{i}").state("at") == 4
    finally:
        store.close()
    assert wrong == []


async def takes_then_steps(n: int) -> int:
    """Takes ``n`` messages with ``try_receive``, a step after each (the consume rides
    with that step's commit), then waits for one more."""
    box = process.inbox()
    got = 0
    while got < n:
        if box.try_receive() is not None:
            got = await bump(got)
        else:
            await workflow.sleep(1)
    await box.receive()
    return got


async def test_a_step_forgets_the_messages_its_commit_consumed(autojump_clock: object
                                                              ) -> None:
    """The rows a workflow took stay taken until their consume is committed; a step's
    commit carries the consumes buffered before it, and the transaction it committed
    is emptied for the next step's outcome only once it has forgotten them (emptied
    first, the rows stayed taken for the workflow's whole run)."""
    async with garrison.open_node() as node:
        pid = await node.start_workflow(takes_then_steps, 20, id="t")
        for i in range(20):
            await node.send(pid, "m", i)
        handle = node.workflow("t")
        while handle.status() != "waiting":
            await trio.sleep(0.01)
        wf = node.hosts["workflows"].active["t"]
        assert not wf.pending and not wf.taken
        await node.send(pid, "last", None)
        assert await handle.result() == 20
