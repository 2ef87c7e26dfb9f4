"""The PostgreSQL store and cluster under faults found by an adversarial review: an
answer lost after the server committed (a claim's COMMIT, the DELETE that takes the
wakeups), a statement cancelled by ``statement_timeout`` under lock contention, long
schema names, libpq options in the URL, values PostgreSQL cannot hold (a lone
surrogate in a search attribute, a NUL in a name) and a keyword DSN's password.

Answers are lost by a TCP proxy in front of the server (tests/_cut_proxy.py), after
the statement reached the server and committed. Real network I/O: real clock.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pg_fault_app as app
import psycopg
import pytest
import trio
from _cut_proxy import CommitCutProxy, CutProxy, LinkProxy

import garrison
from garrison import StoreError
from garrison.persistence import PostgresStore, Transaction

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.postgres


def _rows(url: str, schema: str = "garrison") -> list[Any]:
    with psycopg.connect(url) as c:
        return c.execute(f"SELECT workflow_id, status, owner FROM {schema}.workflows "
                         "ORDER BY 1").fetchall()


def _port(url: str) -> int:
    return int(url.split("@", 1)[1].split("/", 1)[0].split(":")[1])


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "garrison", "workflows", "--store", url, *args],
        capture_output=True, text=True, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})


# ------------------------------------------------------------------ lost answers
async def test_a_claim_whose_commit_answer_is_lost_is_taken_up(postgres_url: str) -> None:
    """Node b drains; node a claims its workflow, the claim COMMITs on the server but
    its answer is lost. The store names a the owner (and a renews its lease), so no
    other node claims it: a must find out that it owns it, and run it."""
    proxy = CommitCutProxy(_port(postgres_url), b"SKIP LOCKED", marker=b"t1")
    try:
        async with garrison.open_node(store=proxy.url(postgres_url), name="a",
                                      lease="2s") as a:
            async with garrison.open_node(store=postgres_url, name="b", lease="2s") as b:
                await b.start_workflow(app.steps, 10, 0.3, id="t1")
                await trio.sleep(1)
                proxy.armed.set()
                b.drain()
                with trio.fail_after(10):
                    await b.drained()
            with trio.fail_after(10):
                while not proxy.fired.is_set():
                    await trio.sleep(0.05)
            with trio.move_on_after(30):
                assert await a.workflow("t1").result() == 45
                return
            pytest.fail(f"t1 never ran again within 30 s (lease 2 s); store: "
                        f"{_rows(postgres_url)}")
    finally:
        proxy.close()


async def test_a_wakeup_whose_delete_answer_is_lost_is_still_delivered(
        postgres_url: str) -> None:
    """The node takes the wakeup rows with DELETE ... RETURNING; its answer is lost
    after the server committed it. The tool's signal waits in the workflow's inbox and
    must still reach the workflow, without another message to wake it."""
    # the statement that deletes the wakeup rows (one DELETE ... RETURNING before)
    proxy = CutProxy(_port(postgres_url), b"RETURNING w.id, w.workflow_id, w.kind",
                     b'"garrison".wakeups WHERE id = ANY(')
    try:
        async with garrison.open_node(store=proxy.url(postgres_url), name="a",
                                      lease="3s") as a:
            await a.start_workflow(app.receiver, 2, id="r")
            await trio.sleep(1)

            def signal(k: int) -> None:
                done = _cli(postgres_url, "signal", "r", "hi", str(k))
                assert done.returncode == 0, done.stderr

            def received() -> int:
                return sum(1 for r in a.workflow("r").history() if "receive" in str(r.kind))

            await trio.to_thread.run_sync(signal, 0)
            with trio.fail_after(10):
                while received() < 1:
                    await trio.sleep(0.01)
            proxy.armed.set()
            await trio.to_thread.run_sync(signal, 1)
            with trio.move_on_after(20):
                while received() < 2:
                    await trio.sleep(0.05)
            assert proxy.fired.is_set()
            assert received() == 2, "the second signal waits in the inbox, never delivered"
            with trio.fail_after(10):
                assert await a.workflow("r").result() == [0, 1]
    finally:
        proxy.close()


# ------------------------------------------------------------------ transient errors
async def test_a_statement_timeout_under_lock_contention_is_retried(
        postgres_url: str) -> None:
    """A database with ``statement_timeout`` (a common guard) and a few seconds of lock
    contention (another session's LOCK TABLE, 2 s): the cancelled writes are transient, so
    they are retried, and no workflow is blocked with a StoreError."""
    dbname = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"ALTER DATABASE {dbname} SET statement_timeout = '500ms'")
    async with garrison.open_node(store=postgres_url, name="a", lease="3s") as a:
        for i in range(10):
            await a.start_workflow(app.steps, 4000, id=f"w{i}")
        await trio.sleep(0.2)
        running: list[int] = []

        def hold() -> None:
            with psycopg.connect(postgres_url, options="-c statement_timeout=0") as c:
                c.execute("LOCK TABLE garrison.workflows IN ACCESS EXCLUSIVE MODE")
                # (under the lock: what runs now writes into it)
                running.append(c.execute("SELECT count(*) FROM garrison.workflows "
                                         "WHERE status <> 'completed'").fetchone()[0])
                time.sleep(2)

        await trio.to_thread.run_sync(hold)
        assert running[0] > 0  # the workflows were still writing when the lock came
        errors = []
        with trio.fail_after(120):
            for i in range(10):
                try:
                    await a.workflow(f"w{i}").result()
                except StoreError as exc:
                    errors.append((f"w{i}", str(exc)[:200]))
        assert errors == []


def _refuse_once(store: PostgresStore, monkeypatch: pytest.MonkeyPatch, refused: Any
                 ) -> list[int]:
    """The batch is written statement by statement (its pipeline fails), and the write
    of plan ``refused`` is cancelled once, as by a statement timeout."""
    from garrison.persistence import _pg_write

    send = store._send

    def failing(conn: Any, composed: Any, mark: Any) -> Any:
        if len(composed.spots) == 1:  # one caller's transaction: sent as it is
            return (yield from send(conn, composed, mark))
        raise _pg_write._StatementFailed(0, RuntimeError("one of the batch failed"))

    apply = store._apply_explicit
    fired: list[int] = []

    def cancelled(conn: Any, plan: Any) -> Any:
        if plan is refused and not fired:
            fired.append(1)
            yield from apply(conn, plan)  # (written, then rolled back to its savepoint)
            raise _pg_write._StatementFailed(0, psycopg.errors.QueryCanceled(
                "canceling statement due to statement timeout"))
        return (yield from apply(conn, plan))

    monkeypatch.setattr(store, "_send", failing)
    monkeypatch.setattr(store, "_apply_explicit", cancelled)
    return fired


def test_a_batch_writes_again_only_the_callers_the_server_refused_for_now(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a batch written statement by statement (a SAVEPOINT per caller), one caller's
    write is cancelled: the others commit, and only that one is written again, in a
    transaction of its own (nothing twice, nothing lost)."""
    with PostgresStore(postgres_url) as store:
        plans = [store._plan(Transaction().create_workflow(f"w{i}", "app:f").append_journal(
            f"w{i}", 0, "activity", "s")) for i in range(3)]
        fired = _refuse_once(store, monkeypatch, plans[1])
        store._commit_plans(plans)
        assert fired and [p.error for p in plans] == [None] * 3
        assert [p.results for p in plans] == [[True, None]] * 3
        assert [len(store.journal(f"w{i}")) for i in range(3)] == [1, 1, 1]
        assert store.statistics().transactions == 2


async def test_a_batch_in_the_node_thread_hands_the_refused_callers_to_a_worker(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same in the trio thread (which must not wait for the server, nor pause
    there before trying again): the write goes on in a worker thread, which writes
    the callers the server refused for now again; every caller gets its own result."""
    from garrison.persistence import _postgres
    from garrison.persistence._group_commit import CommitRequest, HandedOver

    with PostgresStore(postgres_url) as store:
        txs = [Transaction().create_workflow(f"w{i}", "app:f") for i in range(3)]
        plans = [store._plan(tx) for tx in txs]
        _refuse_once(store, monkeypatch, plans[1])
        monkeypatch.setattr(_postgres, "runnable_tasks", lambda: 0)
        batch = [CommitRequest(plan, trio.lowlevel.current_task()) for plan in plans]
        with pytest.raises(HandedOver) as handed:
            store._write_batch_here(batch)
        await handed.value.wait()
        assert [(r.results, r.error) for r in batch] == [([True], None)] * 3
        assert sorted(w.workflow_id for w in store.list_workflows()) == ["w0", "w1", "w2"]
        assert store.statistics().transactions == 2


def test_callers_of_a_batch_that_committed_keep_their_results_when_the_rest_fails(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a batch written statement by statement, one caller's write is cancelled and
    the others commit; as it is written again, the connection is lost and cannot be made
    again: the store gives up. Only that caller gets the StoreError: the others
    committed, and keep their results (every caller of the batch got the StoreError, as
    if none had committed)."""
    from garrison.persistence import _pg_write
    from garrison.persistence._group_commit import CommitRequest

    with PostgresStore(postgres_url, retry_for=0.5) as store:
        txs = [Transaction().create_workflow(f"w{i}", "app:f") for i in range(3)]
        plans = [store._plan(tx) for tx in txs]
        _refuse_once(store, monkeypatch, plans[1])
        run = store._run
        runs: list[int] = []

        def lost_on_retry(conn: Any, plans: Any, n: int, bare: bool = False) -> Any:
            runs.append(len(plans))
            if len(runs) == 1:
                return (yield from run(conn, plans, n, bare))
            conn.close()
            raise _pg_write._ConnectionLost("the network went away")

        def unreachable(*, first: bool) -> Any:
            raise StoreError(store.path, "cannot connect (its writes connection): refused")

        monkeypatch.setattr(store, "_run", lost_on_retry)
        monkeypatch.setattr(store, "_connect_writer", unreachable)
        batch = [CommitRequest(plan, None) for plan in plans]  # type: ignore[arg-type]
        store._write_batch(batch)
        assert runs == [3, 1]
        assert [(r.results, r.error) for r in batch[::2]] == [([True], None)] * 2
        assert batch[1].results is None and isinstance(batch[1].error, StoreError)
        assert "could not be made again" in str(batch[1].error)
        assert store.failed is batch[1].error
    assert [r[0] for r in _rows(postgres_url)] == ["w0", "w2"]


def test_a_read_refused_for_now_after_a_failed_reconnect_is_retried(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read whose connection was lost, made again at the second try (the first
    refused: a server restarting), then cancelled by a ``statement_timeout``: the read's
    retry loop named the reconnect's error as its own ``again`` argument, which Python
    unbinds after the ``except`` clause, so the refusal raised ``UnboundLocalError``
    rather than being tried again for ``retry_for`` and then a StoreError."""
    with PostgresStore(postgres_url, retry_for=0.3) as store:
        real = PostgresStore._connect
        tries: list[str | None] = []

        def connect(self: PostgresStore, what: str | None, **kwargs: Any) -> Any:
            tries.append(what)
            if len(tries) == 1:
                raise StoreError(self.path, "cannot connect: the server is starting up")
            conn = real(self, what, **kwargs)
            conn.execute("SET statement_timeout = 50")
            return conn

        monkeypatch.setattr(PostgresStore, "_connect", connect)
        store._reader.close()
        with pytest.raises(StoreError, match="statement timeout"):
            store._query("SELECT pg_sleep(1)")
        assert tries[:2] == ["reads", "reads"], tries


# ------------------------------------------------------------------ the node's thread
async def _ticking(gaps: list[float]) -> None:
    """A plain task of the node: the longest it waited for its next tick goes in
    ``gaps`` (one tick every 100 ms: runnable seldom, so the commits it does not
    share are written in the node's thread)."""
    last = time.monotonic()
    while True:
        await trio.sleep(0.1)
        now = time.monotonic()
        gaps[0] = max(gaps[0], now - last)
        last = now


def _handed_over(monkeypatch: pytest.MonkeyPatch, then: Any = None) -> list[str]:
    """A list that gets one item each time a write in the node's thread goes on in a
    worker thread (``hand_over``), naming the thread that handed it over; ``then()``
    is called right after each hand-over, before its caller goes on."""
    from garrison.persistence import _postgres

    real = _postgres.hand_over
    handed: list[str] = []

    def spy(fn: Any) -> Any:
        handed.append(threading.current_thread().name)
        try:
            return real(fn)
        finally:
            if then is not None:
                then()

    monkeypatch.setattr(_postgres, "hand_over", spy)
    return handed


async def _until(condition: Any) -> None:
    with trio.fail_after(20):
        while not condition():
            await trio.sleep(0.01)


async def test_a_commit_in_the_node_thread_never_waits_for_a_write_lock_held_elsewhere(
        postgres_url: str) -> None:
    """A worker thread holds the writer (another write reconnecting with backoff during
    an outage, for up to ``retry_for``): a commit the node makes in its own thread goes
    to a worker thread rather than wait there for the lock, so every other task of the
    node keeps running; it commits once the lock is free, once."""
    with PostgresStore(postgres_url) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        held = threading.Event()

        def hold() -> None:
            with store._write_lock:
                held.set()
                time.sleep(1.5)

        woke: list[float] = []

        async def wake() -> None:
            await trio.sleep(0.3)
            woke.append(time.monotonic())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.to_thread.run_sync, hold))
            await trio.to_thread.run_sync(held.wait)
            started = time.monotonic()
            nursery.start_soon(wake)
            await trio.sleep(0)  # (it sleeps: nobody could share the commit)
            await store.commit(Transaction().append_journal("w", 0, "activity", "s"))
            done = time.monotonic()
        assert done - started > 1.0  # (it waited for the lock: in a worker thread)
        assert woke[0] - started < 0.6, (
            f"the node's thread stood still: a 0.3 s sleep took {woke[0] - started:.1f}s")
        assert [(r.seq, r.name) for r in store.journal("w")] == [(0, "s")]


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_a_server_that_stops_answering_does_not_stop_the_node(
        postgres_url: str, synchronous: str) -> None:
    """The link to the server hangs for 3 s (nothing answers, nothing breaks: no TCP
    timeout fires) under a workflow committing its steps from the node's thread: the
    wait goes to a worker thread, the node's other tasks keep running, and once the
    link answers again the workflow ends with every step recorded once."""
    proxy = LinkProxy(_port(postgres_url))
    try:
        with PostgresStore(proxy.url(postgres_url), synchronous=synchronous) as store:
            await _steps_through_a_hang(store, proxy)
    finally:
        proxy.close()


async def _steps_through_a_hang(store: PostgresStore, proxy: LinkProxy) -> None:
    async with garrison.open_node(store=store, name="a") as a:
        gaps = [0.0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_ticking, gaps)
            await a.start_workflow(app.steps, 200, 0.01, id="t1")
            await trio.sleep(0.5)
            proxy.hold()
            # (restored by a thread of its own: a stalled node's thread would never do it)
            thaw = threading.Timer(3, proxy.restore)
            thaw.start()
            await trio.to_thread.run_sync(thaw.join)
            frozen_gap = gaps[0]
            with trio.fail_after(60):
                assert await a.workflow("t1").result() == sum(range(200))
            nursery.cancel_scope.cancel()
        assert frozen_gap < 1.0, f"the node's thread stood still {frozen_gap:.1f}s"
        history = a.workflow("t1").history()
        seqs = [r.seq for r in history]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none lost, none twice
        assert [r.name for r in history if r.kind == "activity"] == ["pg_fault_app:step"] * 200


def _held_for(proxy: LinkProxy, seconds: float) -> threading.Timer:
    """Hold the link now, and restore it in ``seconds`` from a thread of its own."""
    proxy.hold()
    restore = threading.Timer(seconds, proxy.restore)
    restore.start()
    return restore


async def test_a_synchronous_write_in_the_node_thread_during_a_hand_over_completes(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit the node's thread handed over waits for the server (the write lock goes
    with it), and at the very next scheduling point another task makes a synchronous
    ``store.write`` in the node's thread: it waits for the lock, held by a worker
    thread already running (no checkpoint came between the hand-over and that
    thread's start), so it gets it once the server answers: no deadlock, both
    writes committed."""
    proxy = LinkProxy(_port(postgres_url))
    try:
        with PostgresStore(proxy.url(postgres_url)) as store:
            store.write(Transaction().create_workflow("w", "app:f").set_state("w", "z", 0))
            now = trio.Event()
            handed = _handed_over(monkeypatch, then=now.set)
            got: list[Any] = []

            async def commit() -> None:
                got.append(await store.commit(Transaction().set_state("w", "a", 1)))

            async def write() -> None:
                await now.wait()  # (runnable as the commit is handed over)
                got.append(store.write(Transaction().set_state("w", "b", 2)))

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    restore = _held_for(proxy, 1.5)
                    nursery.start_soon(write)
                    nursery.start_soon(commit)
            restore.join()
            assert handed == ["MainThread"] and got == [[None], [None]]
            assert store.states("w") == {"z": 0, "a": 1, "b": 2}
    finally:
        proxy.close()


async def test_a_handed_over_commit_returns_its_own_exact_results(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's answer comes after the write went on in a worker thread: the worker
    reads that write's own answers, so its results are exact for every operation (a
    created flag, an enqueue's sequence number, a schedule's compare-and-set won and
    lost), not read back after the fact."""
    proxy = LinkProxy(_port(postgres_url))
    try:
        with PostgresStore(proxy.url(postgres_url)) as store:
            def tx(wid: str, sid: str) -> Transaction:
                return (Transaction()
                        .create_workflow(wid, "app:f", run_id="r", host="h")
                        .create_workflow("old", "app:f")
                        .enqueue(wid, "r")
                        .update_schedule(sid, next_tick=160.0, expect_next_tick=100.0)
                        .update_schedule(sid, last_workflow=wid, expect_next_tick=100.0))

            store.write(Transaction().create_workflow("old", "app:f"))
            for sid in ("s0", "s"):
                store.write(Transaction().put_schedule(
                    sid, host="h", workflow="app:f", every=60.0, catchup_window=0.0,
                    next_tick=100.0))
            # (the same statements once before: prepared, so the write itself is held)
            assert (await store.commit(tx("q0", "s0")))[3:] == [True, False]
            handed = _handed_over(monkeypatch)
            restore = _held_for(proxy, 1.0)
            with trio.fail_after(30):
                created, again, seq, won, lost = await store.commit(tx("q", "s"))
            restore.join()
            assert handed == ["MainThread"]
            entry = next(e for e in store.queue_entries() if e.workflow_id == "q")
            assert (created, again, seq, won, lost) == (True, False, entry.seq, True, False)
            assert store.get_schedule("s").next_tick.timestamp() == 160.0  # type: ignore[union-attr]
    finally:
        proxy.close()


async def test_a_cancelled_caller_of_a_handed_over_commit_still_gets_it_written(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task whose commit went on in a worker thread is cancelled meanwhile: the
    commit's outcome is its caller's, so the task waits for it (the write is made, and
    acknowledged), then ends."""
    proxy = LinkProxy(_port(postgres_url))
    try:
        with PostgresStore(proxy.url(postgres_url)) as store:
            store.write(Transaction().create_workflow("w", "app:f").set_state("w", "k", 0))
            handed = _handed_over(monkeypatch)
            got: list[Any] = []

            async def commit() -> None:
                got.append(await store.commit(Transaction().set_state("w", "k", 1)))
                await trio.sleep(0)  # (cancelled here, once it has its outcome)
                got.append("not cancelled")

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    restore = _held_for(proxy, 1.0)
                    nursery.start_soon(commit)
                    await _until(lambda: handed)
                    nursery.cancel_scope.cancel()
            restore.join()
            assert got == [[None]]
            assert store.states("w") == {"k": 1}
    finally:
        proxy.close()


async def test_closing_the_store_under_a_handed_over_write_ends_it_with_an_error(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stops answering a write that went on in a worker thread, and the store
    is closed: ``close`` does not wait for the server forever, and the write's caller
    gets a StoreError saying whether it committed is unknown (not silence)."""
    proxy = LinkProxy(_port(postgres_url))
    try:
        with PostgresStore(proxy.url(postgres_url)) as store:
            store.write(Transaction().create_workflow("w", "app:f").set_state("w", "k", 0))
            handed = _handed_over(monkeypatch)
            got: list[Any] = []

            async def commit() -> None:
                try:
                    await store.commit(Transaction().set_state("w", "k", 1))
                except StoreError as exc:
                    got.append(exc)

            proxy.hold()  # (for good)
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(commit)
                    await _until(lambda: handed)
                    await trio.to_thread.run_sync(store.close, abandon_on_cancel=True)
            assert len(got) == 1
            assert "closed" in str(got[0]) and "unknown" in str(got[0])
    finally:
        proxy.close()


async def test_a_connection_cut_under_a_handed_over_write_is_settled_once(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server commits a write, takes longer than the node's thread waits (the write
    goes on in a worker thread), and the connection is cut before its answer: the
    worker reconnects and settles by the writer's number that it committed. Written
    once, and its caller gets its results."""
    proxy = CutProxy(_port(postgres_url), b"w-cut")
    try:
        with PostgresStore(proxy.url(postgres_url)) as store:
            def tx(wid: str) -> Transaction:
                return (Transaction().create_workflow(wid, "app:f")
                        .append_journal(wid, 0, "activity", "s"))

            await store.commit(tx("w-0"))  # (its statements prepared before the cut)
            before = store.statistics().transactions
            handed = _handed_over(monkeypatch)
            proxy.armed.set()
            with trio.fail_after(30):
                assert await store.commit(tx("w-cut")) == [True, None]
            assert proxy.fired.is_set() and handed == ["MainThread"]
            assert [(r.seq, r.name) for r in store.journal("w-cut")] == [(0, "s")]
            assert store.statistics().transactions == before + 1
    finally:
        proxy.close()


# ------------------------------------------------------------------ the URL
@pytest.mark.parametrize("schema", ["s" * 50, "s" * 63, "é" * 23, 'a"b'],
                         ids=["50-bytes", "63-bytes", "multibyte", "quote"])
async def test_a_schema_name_of_up_to_63_bytes_works(postgres_url: str, schema: str) -> None:
    """The schema may be 1 to 63 bytes; the store's NOTIFY channels (named after it)
    must fit PostgreSQL's 63 bytes all the same (and be quoted): a drain hands over,
    messages between nodes arrive, a tool's start is taken."""
    url = postgres_url + "?schema=" + urllib.parse.quote(schema)
    async with garrison.open_node(store=url, name="a", lease="2s") as a, \
            garrison.open_node(store=url, name="b", lease="2s") as b:
        await a.start_workflow(app.steps, 20, 0.2, id="d")
        await trio.sleep(0.5)
        a.drain()
        with trio.fail_after(20):
            await a.drained()
            assert await b.workflow("d").result() == 190
        done = await trio.to_thread.run_sync(
            lambda: _cli(url, "start", "pg_fault_app:steps", "[2]", "--id", "t"))
        assert done.returncode == 0, done.stderr
        with trio.fail_after(20):
            assert await b.workflow("t").result() == 1
        pid = await b.spawn(app.echo)
        with trio.fail_after(10):
            assert await a.call(pid, "echo", "hi") == "hi"


def test_retry_for_is_a_duration(postgres_url: str) -> None:
    """``retry_for`` takes what every duration of the API takes (seconds or a string
    like "5s"); a negative or malformed one is a ValueError naming it, before any
    connection is made."""
    with PostgresStore(postgres_url, retry_for="1m30s") as store:
        assert store.retry_for == 90.0
    with PostgresStore(postgres_url, retry_for=2) as store:
        assert store.retry_for == 2.0
    for bad in (-1, "abc", "5", True):
        with pytest.raises(ValueError, match=r"^invalid retry_for .*") as info:
            PostgresStore("postgresql://u@127.0.0.1:1/nowhere", retry_for=bad)
        assert "\n" not in str(info.value)


def test_libpq_options_in_the_url_reach_the_server(postgres_url: str) -> None:
    """Any libpq parameter may follow as a query parameter: percent-encoded values (a
    space is ``%20``) reach libpq as they are."""
    url = postgres_url + "?options=-c%20statement_timeout%3D5000"
    with psycopg.connect(url) as c:
        assert c.execute("SHOW statement_timeout").fetchone() == ("5s",)
    with PostgresStore(url) as store:
        assert store._query("SHOW statement_timeout") == [("5s",)]
    with PostgresStore(postgres_url + "?application_name=orders%20api+x") as store:
        assert store._query("SHOW application_name") == [("orders api+x",)]


def test_a_keyword_dsn_is_refused_without_echoing_its_password() -> None:
    """Messages name the store never with its password: a libpq keyword DSN (not a
    URL) is refused without it."""
    with pytest.raises(StoreError) as info:
        PostgresStore("host=127.0.0.1 port=1 user=app password=s3cret dbname=orders")
    assert "s3cret" not in str(info.value)
    assert "postgresql://user:password@host:port/dbname" in str(info.value)
    with pytest.raises(StoreError) as info:  # (a URL that does not parse)
        PostgresStore("postgresql://app@127.0.0.1:x/orders?password=s3cret")
    assert "s3cret" not in str(info.value)
    with pytest.raises(StoreError) as info:  # (helper-206: it read app:***@, README's
        # form has no password part at all)
        PostgresStore("postgresql://app:s3cret@127.0.0.1:x/orders")
    assert str(info.value).startswith("store 'postgresql://app@127.0.0.1:x/orders'"), \
        str(info.value)


# ------------------------------------------------------------------ values
async def test_a_search_attribute_with_a_lone_surrogate_is_a_value_error_at_the_call(
        postgres_url: str, tmp_path: Path) -> None:
    """A search attribute with a lone surrogate (a latin-1 file name decoded with
    surrogateescape) cannot be stored as JSON text by PostgreSQL: it is a ValueError at
    the call on both stores alike, never a store failure that blocks the workflow."""
    raw = "caf\xe9.txt"
    for store in (str(tmp_path / "s.db"), postgres_url):
        async with garrison.open_node(store=store, name="a") as n:
            await n.start_workflow(app.tag_file, raw, id="f")
            with trio.fail_after(10):
                assert await n.workflow("f").result() == "ValueError"


async def test_nul_in_what_a_workflow_stores_as_text_is_a_value_error_at_the_call(
        postgres_url: str, tmp_path: Path) -> None:
    """A state key, a search attribute, a promise name or a version's change id holding
    the NUL character (which PostgreSQL text and jsonb cannot hold) is a ValueError at
    the call on both stores alike; before, on PostgreSQL, the workflow's next commit
    failed and the workflow stopped, resumed and failed again at every start."""
    for store in (str(tmp_path / "s.db"), postgres_url):
        async with garrison.open_node(store=store, name="a") as n:
            await n.start_workflow(app.nul_everywhere, id="nul")
            with trio.fail_after(10):
                assert await n.workflow("nul").result() == [
                    "set_state", "search key", "search value", "promise", "version"]


async def test_a_journal_with_nul_an_older_version_kept_on_sqlite_still_replays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The NUL check is where a name is written, not where a replay matches it against
    the journal: a workflow an older garrison recorded on SQLite resumes (a review found
    it blocked with a NonDeterminismError). (A state key is written again by code past
    the journal's end: refused there.)"""
    import workflow_app

    from garrison.hosts.workflow import _instance

    db = str(tmp_path / "old.db")
    from garrison.hosts.workflow import _ids

    monkeypatch.setattr(_instance, "check_text", lambda value, what: None)  # older code
    monkeypatch.setattr(_ids, "check_text", lambda value, what: None)
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(workflow_app.names_with_nul, id="w1")
        with trio.fail_after(5):
            while node.workflow("w1").status() != "waiting":
                await trio.sleep(0.01)
    monkeypatch.undo()
    async with garrison.open_node(store=db) as node:
        await node.workflow("w1").signal("go")
        with trio.fail_after(5):
            assert await node.workflow("w1").result() == [2, "go"]


async def test_nul_in_a_cluster_name_or_node_name_is_a_clear_value_error(
        postgres_url: str) -> None:
    """A NUL character (which PostgreSQL text cannot hold) in a cluster-wide process
    name or a node's name is a ValueError at the call."""
    async with garrison.open_node(store=postgres_url, name="a") as a:
        out: list[Any] = []
        await a.spawn(app.holder, "x\x00y", out)
        with trio.fail_after(5):
            while not out:
                await trio.sleep(0.01)
        assert type(out[0]) is ValueError, out
    with pytest.raises(ValueError, match="NUL"):
        async with garrison.open_node(store=postgres_url, name="n\x00de"):
            pass


async def test_names_no_store_can_keep_are_a_value_error_at_the_call_on_both_stores(
        postgres_url: str, tmp_path: Path) -> None:
    """A review found a lone surrogate in a state key, promise name, change id or topic
    failing the workflow's next commit (a raw UnicodeEncodeError, on both stores), a NUL
    in a topic refused only by PostgreSQL, and a promise name, state key or id too long
    for PostgreSQL's indexes (more than 2,704 bytes) leaving the workflow blocked on
    PostgreSQL at every start, while SQLite took it. Each is a ValueError at the call,
    on both stores alike; the workflow goes on."""
    from garrison.hosts.workflow._ids import MAX_KEY_BYTES

    long = "é" * (MAX_KEY_BYTES // 2 + 1)  # (two bytes each: over the limit in bytes)
    every = ["set_state", "promise", "version", "send", "call"]
    for store in (str(tmp_path / "s.db"), postgres_url):
        async with garrison.open_node(store=store, name="a") as n:
            for wid, bad, marker, expected in [
                    ("surrogate", "a\udc80b", "lone surrogate", every),
                    ("nul", "t\x00x", "NUL", every),
                    ("long", long, "too long", ["set_state", "promise"])]:
                await n.start_workflow(app.bad_text_everywhere, bad, marker, id=wid)
                with trio.fail_after(10):
                    got = await n.workflow(wid).result()
                assert got[:len(expected)] == expected, (store, wid, got)
            # from outside: the same, at the call
            handle = n.workflow("nul")
            for bad, marker in [("a\udc80b", "lone surrogate"), ("t\x00x", "NUL")]:
                with pytest.raises(ValueError, match=marker):
                    await handle.signal(bad, 1)
            with pytest.raises(ValueError, match="bytes long in UTF-8"):
                await n.start_workflow(app.steps, 1, id="w" * (MAX_KEY_BYTES + 1))
            with pytest.raises(ValueError, match="dedup key"):
                await n.start_workflow(app.steps, 1, dedup="d" * (MAX_KEY_BYTES + 1))
            # what cannot be stored cannot be found: no raw UnicodeEncodeError
            with pytest.raises(garrison.NoSuchWorkflow):
                n.workflow("a\udc80b").status()
            assert n.workflow("nul").state("a\udc80b", "none") == "none"


async def test_a_search_filter_tells_true_from_1_on_both_stores(
        postgres_url: str, tmp_path: Path) -> None:
    """SQLite's json_extract made a stored true match a filter 1 (and 1 match true);
    PostgreSQL's jsonb does not. Now both: true matches true only, and a number matches
    a number of the same value (1 and 1.0)."""
    for store in (str(tmp_path / "s.db"), postgres_url):
        async with garrison.open_node(store=store, name="a") as n:
            for wid, value in [("t-true", True), ("t-int", 1), ("t-float", 1.0),
                               ("t-false", False), ("t-zero", 0), ("t-text", "1")]:
                await n.start_workflow(app.tagged, value, id=wid)
            with trio.fail_after(10):
                for wid in ("t-true", "t-int", "t-float", "t-false", "t-zero", "t-text"):
                    await n.workflow(wid).result()

            def found(value: Any) -> list[str]:
                return sorted(w.workflow_id for w in n.workflows(search={"v": value}))

            assert found(True) == ["t-true"], store
            assert found(False) == ["t-false"], store
            assert found(1) == ["t-float", "t-int"], store
            assert found(0) == ["t-zero"], store
            assert found("1") == ["t-text"], store


async def test_a_search_filter_on_an_object_or_array_matches_alike_on_both_stores(
        postgres_url: str, tmp_path: Path) -> None:
    """SQLite compared an object or array as its JSON text: ``{"b":2,"a":1}`` did not
    match ``{"a":1,"b":2}``, nor ``[1,2]`` match ``[1.0,2]``, where PostgreSQL's jsonb
    matches both. Now both compare them as jsonb does (``true`` still only ``true``)."""
    values = [("o", {"a": 1, "b": 2}), ("arr", [1.0, 2]), ("deep", {"x": [1.0, {"y": True}]}),
              ("flags", [True]), ("ones", [1]), ("text", "[1, 2]")]
    for store in (str(tmp_path / "s.db"), postgres_url):
        async with garrison.open_node(store=store, name="a") as n:
            for wid, value in values:
                await n.start_workflow(app.tagged, value, id=wid)
            with trio.fail_after(10):
                for wid, _ in values:
                    await n.workflow(wid).result()

            def found(value: Any) -> list[str]:
                return sorted(w.workflow_id for w in n.workflows(search={"v": value}))

            assert found({"b": 2, "a": 1}) == ["o"], store
            assert found({"a": 1.0, "b": 2}) == ["o"], store
            assert found({"a": 1}) == [], store
            assert found([1, 2]) == ["arr"], store
            assert found([2, 1]) == [], store
            assert found({"x": [1, {"y": True}]}) == ["deep"], store
            assert found({"x": [1, {"y": 1}]}) == [], store
            assert found([True]) == ["flags"], store
            assert found([1.0]) == ["ones"], store
            assert found("[1, 2]") == ["text"], store


def test_a_node_on_a_role_that_cannot_write_is_a_store_error(postgres_url: str) -> None:
    """A read-only role (or a read-only server) made opening a node a psycopg traceback
    (the node's first write at open); it is a StoreError saying what the node needs."""
    with PostgresStore(postgres_url):
        pass  # the schema exists
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute("DROP ROLE IF EXISTS garrison_test_reader")
        c.execute("CREATE ROLE garrison_test_reader LOGIN")
        c.execute("GRANT USAGE ON SCHEMA garrison TO garrison_test_reader")
        c.execute("GRANT SELECT ON ALL TABLES IN SCHEMA garrison TO garrison_test_reader")
    try:
        url = postgres_url.replace("postgres@", "garrison_test_reader@", 1)
        with pytest.raises(StoreError, match="cannot write to schema 'garrison'") as info:
            PostgresStore(url)
        assert "permission denied" in str(info.value)
        result = subprocess.run(
            [sys.executable, "-m", "garrison", "run", "pg_fault_app:echo", "--store", url],
            capture_output=True, text=True, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "cannot write to schema" in result.stderr
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as c:
            c.execute("DROP OWNED BY garrison_test_reader")
            c.execute("DROP ROLE garrison_test_reader")


@pytest.mark.parametrize("table", ["writers", "nodes"])
async def test_a_statement_cancelled_as_a_node_opens_is_tried_again(
        postgres_url: str, table: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A database with ``statement_timeout`` and another session holding a table of the
    schema locked for a moment (a maintenance ``LOCK TABLE``) as a node opens: the
    store's open (its writer's cleanup of ``writers``) and the node's join of its
    cluster (``nodes``) let psycopg's QueryCanceled out at once, although a statement
    cancelled so is a refusal for now. It is tried again, and the node opens once the
    lock is gone; it said nothing while it waited: one warning says what it waits
    for (after OPEN_WAIT_WARNING, a second)."""
    from garrison.persistence import _postgres

    monkeypatch.setattr(_postgres, "OPEN_WAIT_WARNING", 0.2, raising=False)
    with PostgresStore(postgres_url):
        pass  # the schema exists
    dbname = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"ALTER DATABASE {dbname} SET statement_timeout = '300ms'")
    locked = threading.Event()

    def hold() -> None:
        with psycopg.connect(postgres_url, options="-c statement_timeout=0") as c:
            c.execute(f"LOCK TABLE garrison.{table} IN ACCESS EXCLUSIVE MODE")
            locked.set()
            time.sleep(1.0)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        locked.wait()
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, "garrison.store"):
            async with garrison.open_node(store=postgres_url, name="a") as node:
                assert time.monotonic() - began >= 0.5  # (it waited for the lock)
                assert [n.name for n in node.cluster()] == ["a"]
    finally:
        holder.join()
    said = [r.getMessage() for r in caplog.records if r.name == "garrison.store"]
    assert len(said) == 1, said
    assert said[0].endswith("the server refuses statements for now (canceling "
                            "statement due to statement timeout): trying them again, for "
                            "up to 30s"), said


async def test_a_node_opening_while_the_workflows_are_locked_waits_naming_the_lock(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Another session holds ``workflows`` locked (a ``VACUUM FULL``, a migration) as a
    node opens, with no ``statement_timeout`` anywhere: the node's first claim waited
    for the lock until its cluster connection's bound and the open failed, "no answer
    from the server within 1s (its cluster connection)" (``garrison run``: exit 2).
    The claim's wait is ended by the session's ``lock_timeout`` now, a refusal for now
    that is tried again: the node opens once the lock is gone, and one warning says it
    waits for a lock another session holds."""
    from garrison.persistence import _postgres

    monkeypatch.setattr(_postgres, "OPEN_WAIT_WARNING", 0.2)
    with PostgresStore(postgres_url):
        pass  # the schema exists
    locked = threading.Event()

    def hold() -> None:
        with psycopg.connect(postgres_url) as c:
            c.execute("LOCK TABLE garrison.workflows IN ACCESS EXCLUSIVE MODE")
            locked.set()
            time.sleep(2.5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        locked.wait()
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, "garrison.store"):
            async with garrison.open_node(store=postgres_url, name="a", lease="2s") as node:
                assert time.monotonic() - began >= 2.0  # (it waited for the lock)
                assert [n.name for n in node.cluster()] == ["a"]
    finally:
        holder.join()
    said = [r.getMessage() for r in caplog.records if r.name == "garrison.store"]
    assert len(said) == 1, said
    assert said[0].endswith(
        "a lock another session holds on the store's tables was not released: canceling "
        "statement due to lock timeout (a session left in a transaction, or maintenance: "
        "see pg_locks): trying again, for up to 30s"), said


def test_a_role_that_may_not_update_the_nodes_is_a_store_error_at_the_join(
        postgres_url: str) -> None:
    """A role that may write the workflows but not update ``nodes`` (a cluster's
    membership): opening a node raised psycopg's InsufficientPrivilege from the join of
    the cluster, and ``garrison run`` printed its traceback and exited 1. It is a
    StoreError naming the store and the table; ``garrison run`` prints it as one line and
    exits 2."""
    with PostgresStore(postgres_url):
        pass  # the schema exists
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute("DROP ROLE IF EXISTS garrison_test_member")
        c.execute("CREATE ROLE garrison_test_member LOGIN")
        c.execute("GRANT USAGE ON SCHEMA garrison TO garrison_test_member")
        c.execute("GRANT ALL ON ALL TABLES IN SCHEMA garrison TO garrison_test_member")
        c.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA garrison TO garrison_test_member")
        c.execute("REVOKE UPDATE ON garrison.nodes FROM garrison_test_member")
    try:
        url = postgres_url.replace("postgres@", "garrison_test_member@", 1)

        async def opened() -> None:
            async with garrison.open_node(store=url, name="a"):
                pass

        with pytest.raises(StoreError, match="permission denied for table nodes") as info:
            trio.run(opened)
        assert str(info.value).startswith("store 'postgresql://garrison_test_member@")
        result = subprocess.run(
            [sys.executable, "-m", "garrison", "run", "pg_fault_app:echo", "--store", url],
            capture_output=True, text=True, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "permission denied for table nodes" in result.stderr
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as c:
            c.execute("DROP OWNED BY garrison_test_member")
            c.execute("DROP ROLE garrison_test_member")


async def test_promises_of_ids_or_names_at_the_edges(postgres_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A review of the name checks: resolving a promise of an id no store can hold gave
    a raw UnicodeEncodeError (a lone surrogate) or, on PostgreSQL only, a ValueError
    (NUL); it is NoSuchWorkflow as for every other operation. And a promise an older
    version declared with a name over today's limit (SQLite took it) could no longer be
    resolved: only a workflow's declaration checks the size now."""
    from garrison.hosts.workflow import _waits

    for store in (str(tmp_path / "s.db"), postgres_url):
        async with garrison.open_node(store=store, name="a") as n:
            for wid in ("a\x00", "\ud800", "nosuch"):
                for verb in ("resolve", "reject"):
                    promise = n.workflow(wid).promise("p")
                    with pytest.raises(garrison.NoSuchWorkflow):
                        await (promise.resolve(1) if verb == "resolve" else promise.reject("no"))
    db = str(tmp_path / "old.db")
    name = "P" * 1500
    monkeypatch.setattr(_waits, "check_key_size", lambda value, what: None)  # older code
    async with garrison.open_node(store=db) as n:
        await n.start_workflow(app.waits_for, name, id="old")
        with trio.fail_after(5):
            while n.workflow("old").status() != "waiting":
                await trio.sleep(0.01)
    monkeypatch.undo()
    async with garrison.open_node(store=db) as n:
        await n.workflow("old").promise(name).resolve("yes")
        with trio.fail_after(5):
            assert await n.workflow("old").result() == "yes"


# ------------------------------------------------------------------ results read back
@pytest.mark.parametrize("kind", ["enqueue", "update_schedule", "put_schedule"])
async def test_results_of_a_commit_whose_answer_was_lost_are_read_back(
        postgres_url: str, kind: str) -> None:
    """The server commits a write (in the node's thread, handed over or not) and the
    connection is cut before its answer: the store settles by the writer's number that
    it committed, and its caller must get the results the write had: an enqueue's queue
    row (not ``None``: "not this start's workflow"), a schedule update's compare-and-set
    outcome (not ``False``: "someone else changed it"), a schedule put's (not ``None``:
    "a config schedule stays")."""
    proxy = CutProxy(_port(postgres_url), b"cut-me")
    try:
        with PostgresStore(proxy.url(postgres_url)) as store:
            await store.commit(Transaction().create_workflow("wq", "app:f", run_id="r1")
                               .put_schedule("cut-me", host="h", workflow="app:f", every=60,
                                             catchup_window=0, next_tick=100.0))
            if kind == "enqueue":
                tx = Transaction().enqueue("wq", "r1", dedup="cut-me")
            elif kind == "put_schedule":  # (whether it wrote: not a config schedule)
                tx = Transaction().put_schedule("cut-me", host="h", workflow="app:f",
                                                every=120, catchup_window=0,
                                                next_tick=100.0)
            else:
                tx = Transaction().update_schedule("cut-me", next_tick=160.0,
                                                   expect_next_tick=100.0)
            proxy.armed.set()
            with trio.fail_after(30):
                got = await store.commit(tx)
            assert proxy.fired.is_set()
            if kind == "enqueue":
                with psycopg.connect(postgres_url) as c:
                    seq = c.execute("SELECT seq FROM garrison.queue WHERE workflow_id = 'wq'"
                                    ).fetchone()
                assert seq is not None and got == [seq[0]]
            else:
                assert got == [True]
    finally:
        proxy.close()


def test_closing_the_store_ends_a_write_the_server_refuses_for_now(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write the server keeps refusing for now (a statement timeout under lock
    contention) is tried again for ``retry_for``; the store is closed meanwhile: the
    write is not sent again (``close`` waited for all of ``retry_for``, in the node's
    thread at a node's end, while the store went on writing after it was closed), and
    its caller gets a StoreError saying it was closed and nothing was committed."""
    with PostgresStore(postgres_url, retry_for=30) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        tries: list[int] = []

        def refused(conn: Any, plans: Any, n: int, bare: bool = False) -> Any:
            tries.append(n)
            for plan in plans:
                plan.results = None
                plan.error = psycopg.errors.QueryCanceled(
                    "canceling statement due to statement timeout")
            return False
            yield  # (a resumable write)

        monkeypatch.setattr(store, "_run", refused)
        got: list[Any] = []

        def write() -> None:
            try:
                got.append(store.write(Transaction().set_state("w", "k", 1)))
            except Exception as exc:
                got.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        while len(tries) < 2:
            time.sleep(0.01)
        at_close = len(tries)
        store.close()
        writer.join()
        assert len(tries) <= at_close + 1  # (at most the try under way as it closed)
        assert len(got) == 1 and isinstance(got[0], StoreError), got
        assert "closed" in str(got[0]) and "not committed" in str(got[0])


def test_a_stopping_store_cuts_a_write_the_server_holds_and_writes_nothing_more(
        postgres_url: str) -> None:
    """``stopping(within)``: a server that answers is not hurried (the store writes on
    after the block); one that holds a write (a hung link) has it end ``within`` after
    the block began, with a StoreError saying so and that its outcome is unknown (it
    waited for ever); the store then writes nothing more, and closes at once."""
    proxy = LinkProxy(_port(postgres_url))
    try:
        store = PostgresStore(proxy.url(postgres_url))
        try:
            store.write(Transaction().create_workflow("w", "app:f"))
            with store.stopping(0.2):
                time.sleep(0.4)  # (past its time, nothing waiting: nothing cut)
            with store.stopping(30):
                store.write(Transaction().set_state("w", "k", 1))
            store.write(Transaction().set_state("w", "k", 2))
            proxy.hold()
            got: list[Any] = []

            def write() -> None:
                try:
                    got.append(store.write(Transaction().set_state("w", "k", 3)))
                except Exception as exc:
                    got.append(exc)

            start = time.monotonic()
            with store.stopping(0.5):
                writer = threading.Thread(target=write)
                writer.start()
                writer.join(20)
                store.close()
            assert time.monotonic() - start < 10
            assert len(got) == 1 and isinstance(got[0], StoreError), got
            assert "did not answer within 0.5s of the node's stop" in str(got[0]), got
            assert "whether it committed is unknown" in str(got[0]), got
            assert store.cut is not None and store.failed is not None
        finally:
            proxy.restore()
            store.close()
    finally:
        proxy.close()
    with PostgresStore(postgres_url, lock=False) as look:
        assert look.get_state("w", "k") in (2, 3)


def test_a_stopping_store_does_not_cut_a_write_waiting_for_a_lock_of_an_answering_server(
        postgres_url: str) -> None:
    """A write waiting for a lock another session holds (the server answers) was cut
    5 s into the node's stop as if the server were gone: its statuses lost, its leave
    skipped, and its still-open session kept its name taken. The stop looks whether the
    server takes a new connection before it cuts: it does, so the write waits on."""
    with PostgresStore(postgres_url) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        holder = psycopg.connect(postgres_url)
        holder.execute("LOCK TABLE garrison.workflows IN ACCESS EXCLUSIVE MODE")
        release = threading.Timer(3.0, holder.rollback)
        release.start()
        try:
            with store.stopping(0.3):
                store.write(Transaction().update_workflow("w", status="waiting"))
        finally:
            release.join()
            holder.close()
        assert store.cut is None and store.failed is None
        assert store.get_workflow("w").status == "waiting"


def test_a_write_waiting_long_for_the_server_is_said_naming_its_session(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A write the server did not answer (its session waiting for a lock another session
    holds, or a server process stopped: SIGSTOP, a hung disk) held the node's commits,
    and so its workflows, for as long as it lasted, the node renewing its lease all the
    while, and nothing said so. Past ``WRITE_WAIT_WARNING`` one warning names the store
    and the writer's session on the server (what to look up in pg_stat_activity and
    pg_locks); once answered, one line says after how long."""
    from garrison.persistence import _pg_write

    monkeypatch.setattr(_pg_write, "WRITE_WAIT_WARNING", 1.0)
    caplog.set_level(logging.INFO, logger="garrison.store")
    with PostgresStore(postgres_url) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        pid = store._writer_session[0]
        holder = psycopg.connect(postgres_url)
        holder.execute("LOCK TABLE garrison.workflows IN ACCESS EXCLUSIVE MODE")
        release = threading.Timer(2.0, holder.rollback)
        release.start()
        try:
            store.write(Transaction().update_workflow("w", status="waiting"))
        finally:
            release.join()
            holder.close()
        assert store.get_workflow("w").status == "waiting"
    said = [r.getMessage() for r in caplog.records if r.name == "garrison.store"]
    waited = [m for m in said if "has waited" in m]
    assert len(waited) == 1, said
    assert waited[0].startswith(
        f"store {store.path!r}: a write has waited 1s for the server's answer (its "
        f"session, pid {pid} on the server, "), waited
    answered = [m for m in said if "was answered after" in m]
    assert len(answered) == 1 and answered[0].startswith(
        f"store {store.path!r}: the write that waited for the server was answered after "
        ), said


@contextlib.contextmanager
def _read_only(postgres_url: str) -> Iterator[None]:
    """The database of ``postgres_url`` read-only (``ALTER DATABASE ... SET
    default_transaction_read_only``: maintenance, a failover) in the block, its
    sessions ended so that every new one is read-only; writable again after it."""
    dbname = postgres_url.rsplit("/", 1)[1]

    def admin(sql: str) -> None:
        with psycopg.connect(postgres_url.rsplit("/", 1)[0] + "/postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    admin(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    try:
        admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
              f"'{dbname}' AND pid <> pg_backend_pid()")
        yield
    finally:
        admin(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = off')


def test_a_read_only_database_is_a_store_error_and_the_store_writes_once_it_is_not(
        postgres_url: str) -> None:
    """A database made read-only refused a signal with psycopg's own
    ``ReadOnlySqlTransaction``, not a StoreError; and a session opened meanwhile stayed
    read-only for good, so writes kept failing after the database was writable again.
    The write is tried again on a new session for ``retry_for``, then is a StoreError
    saying why; once the database is writable, the next write succeeds."""
    with PostgresStore(postgres_url, retry_for=1) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        with _read_only(postgres_url), pytest.raises(
                StoreError, match=r"the server refused the write: cannot execute .* in a "
                r"read-only transaction \(the database, .* is read-only; tried again for "
                r"1s\)"):
            store.write(Transaction().deliver("w", "note", 1))
        store.write(Transaction().deliver("w", "note", 2))  # (its session was read-only)
        assert [m.payload for m in store.pending_messages("w")] == [2]


def test_a_read_only_database_as_a_node_opens_is_waited_for(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A database read-only as a node opened (a standby as a failover promotes another
    server, a maintenance window) was refused at once: ``garrison run`` exited 2 within
    a second, though a read-only database is a refusal for now everywhere else. The
    open is tried again on new sessions for ``retry_for``, a warning says once what
    the node waits for, and the node opens once the database takes writes."""
    from garrison.persistence import _postgres

    monkeypatch.setattr(_postgres, "OPEN_WAIT_WARNING", 0.2, raising=False)
    with PostgresStore(postgres_url):
        pass  # the schema exists
    read_only = threading.Event()

    def for_a_moment() -> None:
        with _read_only(postgres_url):
            read_only.set()
            time.sleep(0.5)

    thread = threading.Thread(target=for_a_moment)
    thread.start()
    try:
        read_only.wait()
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, "garrison.store"), \
                PostgresStore(postgres_url, retry_for=10) as store:
            assert time.monotonic() - began >= 0.3
            store.write(Transaction().create_workflow("w", "app:f"))
    finally:
        thread.join()
    said = [r.getMessage() for r in caplog.records if r.name == "garrison.store"]
    assert len(said) == 1, said
    assert said[0].startswith(f"store {store.path!r}: the server is read-only (cannot "
                              "execute DELETE in a read-only transaction: a standby, or a "
                              "database under maintenance): waiting for it to take "
                              "writes, for up to 10s"), said


def test_a_database_read_only_past_retry_for_as_a_node_opens_is_a_store_error(
        postgres_url: str) -> None:
    """Past ``retry_for`` a database still read-only as a node opens is the StoreError
    it was at once before, saying how long it was tried."""
    with PostgresStore(postgres_url):
        pass  # the schema exists
    with _read_only(postgres_url), pytest.raises(
            StoreError, match=r"cannot write to schema 'garrison': cannot execute DELETE in "
            r"a read-only transaction \(a node needs a role that may write its tables, on "
            r"a server that is not read-only; tried again for 0.3s\)$"):
        PostgresStore(postgres_url, retry_for=0.3)
    with _read_only(postgres_url), pytest.raises(  # (not tried again: nothing said so)
            StoreError, match=r"on a server that is not read-only\)$"):
        PostgresStore(postgres_url, retry_for=0)


@contextlib.contextmanager
def _nodes_locked(postgres_url: str) -> Iterator[None]:
    """Every statement on the cluster's ``nodes`` table cancelled by the database's
    ``statement_timeout`` (another session holds the table locked) in the block: a
    node's join of its cluster waits."""
    dbname = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"ALTER DATABASE {dbname} SET statement_timeout = '200ms'")
    with psycopg.connect(postgres_url, options="-c statement_timeout=0") as holder:
        holder.execute("LOCK TABLE garrison.nodes IN ACCESS EXCLUSIVE MODE")
        yield
        holder.rollback()
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"ALTER DATABASE {dbname} RESET statement_timeout")


@pytest.mark.parametrize("waits", ["open", "join"])
async def test_a_start_waiting_for_the_server_ends_at_once_when_stopped(
        postgres_url: str, waits: str) -> None:
    """A node's open waiting out a read-only database (or its join of the cluster, a
    table locked past ``statement_timeout``) ran in the trio thread: a cancel of the
    start (``open_node`` in a cancel scope) or ``garrison run``'s first SIGINT/SIGTERM
    (``interrupt_start``) ended nothing until the wait gave up, past ``retry_for``
    (30 s; exit 2 where a signal during the start exits 0, as on SQLite's locked
    store). The wait ends within a pause of its retries, and leaves nothing behind: a
    node of the same name starts at once after it."""
    from garrison._node import new_node, running_node

    with PostgresStore(postgres_url):
        pass  # the schema exists
    waiting = _read_only(postgres_url) if waits == "open" else _nodes_locked(postgres_url)
    with waiting:
        began = time.monotonic()
        with trio.move_on_after(0.3) as cancelled:
            async with garrison.open_node(store=postgres_url, name="a"):
                pytest.fail("the node started while its server refused it")
        assert cancelled.cancelled_caught
        assert time.monotonic() - began < 0.8
        node = new_node(store=postgres_url, name="a")

        async def signal_soon() -> None:
            await trio.sleep(0.3)
            node.interrupt_start()  # as garrison run does on its first signal

        began = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(signal_soon)
            async with running_node(node):
                assert time.monotonic() - began < 0.8  # (the stop follows at once)
                assert not node.clustered
    async with garrison.open_node(store=postgres_url, name="a") as node:
        assert [n.name for n in node.cluster()] == ["a"]


def test_a_stopping_store_does_not_try_a_write_the_server_refuses_for_now_again(
        postgres_url: str) -> None:
    """A node stopping while its database was read-only took ``retry_for`` (30 s by
    default) at each of its steps to stop: the server answers, so nothing is cut, and
    each write it refused was tried again until then. Past the stop's time a refused
    write is not tried again: its error says it was not committed, and the store
    writes once the database is writable (it was not cut)."""
    with PostgresStore(postgres_url, retry_for=60) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        began = time.monotonic()
        with _read_only(postgres_url), store.stopping(0.5), pytest.raises(
                StoreError, match=r"the node stopped while this write waited to be tried "
                r"again \(the server refused it for now: .*read-only transaction\); it "
                r"was not committed"):
            store.write(Transaction().deliver("w", "note", 1))
        assert time.monotonic() - began < 5
        assert store.cut is None and store.failed is None
        store.write(Transaction().deliver("w", "note", 2))
        assert [m.payload for m in store.pending_messages("w")] == [2]


def test_a_statement_whose_preparation_is_refused_for_now_is_tried_again(
        postgres_url: str) -> None:
    """Another session holds a table of the schema locked (a maintenance ``LOCK
    TABLE``) past the database's ``statement_timeout``, as the store prepares a
    statement inside a transaction (``set_attributes``: read, then write): the
    preparation is cancelled. That is a refusal for now, tried again once the lock is
    gone (it was the caller's raw QueryCanceled), and the transaction is rolled back
    (it was left open and aborted on the writer's connection: every later write of
    the store failed with InFailedSqlTransaction)."""
    dbname = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"ALTER DATABASE {dbname} SET statement_timeout = '300ms'")
    with PostgresStore(postgres_url) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        locked = threading.Event()

        def hold() -> None:
            with psycopg.connect(postgres_url, options="-c statement_timeout=0") as c:
                c.execute("LOCK TABLE garrison.workflows IN ACCESS EXCLUSIVE MODE")
                locked.set()
                time.sleep(1.5)

        holder = threading.Thread(target=hold)
        holder.start()
        locked.wait()
        try:
            assert store.write(Transaction().set_attributes("w", search={"a": 1})) == [None]
        finally:
            holder.join()
        store.write(Transaction().set_state("w", "k", 1))
        assert store.states("w") == {"k": 1}
        record = store.get_workflow("w")
        assert record is not None and record.search == {"a": 1}


@pytest.mark.parametrize("synchronous", ["full", "normal"])
async def test_a_step_whose_commit_answer_is_lost_is_recorded_once(
        postgres_url: str, synchronous: str) -> None:
    """A step's journal row commits and the connection is cut before its answer (at
    ``synchronous="full"`` a bare step, settled by its own row rather than the
    writer's number): its caller gets the step's result (it got an AssertionError of
    ``_unwrap``: the settle path found the row, marked it committed, and left it no
    results), once, and the next step follows."""
    proxy = CutProxy(_port(postgres_url), b"s-cut")
    try:
        with PostgresStore(proxy.url(postgres_url), synchronous=synchronous) as store:
            await store.commit(Transaction().create_workflow("w", "app:f"))
            await store.commit(Transaction().append_journal("w", 0, "activity", "s0"))
            proxy.armed.set()
            with trio.fail_after(30):
                got = await store.commit(
                    Transaction().append_journal("w", 1, "activity", "s-cut"))
            assert proxy.fired.is_set() and got == [None]
            await store.commit(Transaction().append_journal("w", 2, "activity", "s2"))
            assert [(r.seq, r.name) for r in store.journal("w")] == [
                (0, "s0"), (1, "s-cut"), (2, "s2")]
    finally:
        proxy.close()


def test_an_error_of_the_store_inside_a_transaction_leaves_no_transaction_open(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write statement by statement (``set_attributes``) in which something of the
    store itself fails (here the read that names what a failed statement means, as a
    ``_query`` does when the reader cannot reconnect or the store was closed): its
    caller gets that error, and the writer's transaction is rolled back, not left open
    and aborted (every later write of the store failed with InFailedSqlTransaction)."""
    with PostgresStore(postgres_url) as store:
        store.write(Transaction().create_workflow("w", "app:f"))

        def unreadable(*args: Any) -> BaseException:
            raise StoreError(store.path, "the reader cannot reconnect")

        monkeypatch.setattr(store, "_map_error", unreadable)
        with pytest.raises(StoreError, match="cannot reconnect"):
            store.write(Transaction().set_attributes("w", search={"a": 1}).consume("w", 99, 0))
        monkeypatch.undo()
        store.write(Transaction().set_state("w", "k", 1))
        assert store.states("w") == {"k": 1}
        record = store.get_workflow("w")
        assert record is not None and record.search == {}


# ------------------------------------------------------------------ an old session
def _waiting_for_a_lock(url: str, besides: list[int]) -> list[int]:
    """The client sessions waiting for a lock, but ``besides``."""
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                         "AND backend_type = 'client backend' AND pid <> ALL(%s)",
                         (besides,)).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("who", ["node", "tool", "tool-role"])
def test_a_write_whose_old_session_lives_on_is_applied_once(
        postgres_url: str, who: str) -> None:
    """A write's connection is cut on the client's side while its server session lives
    on with the transaction in flight (waiting here for a row another session holds;
    as well a half-open connection whose statements arrive late). The writer, on a store
    in no cluster (a tool's, or a node's before it joins), reconnects: it must end that
    old session before it reads its number. It did not: the number said "not committed",
    the write was sent again, and the old session committed it after all (here the
    second one then failed on the journal row the first had written: its caller was told
    its write failed, and it had committed). A role that is no superuser ends a session
    of its own (``tool-role``)."""
    with PostgresStore(postgres_url) as node:
        node.write(Transaction().create_workflow("w", "app:f").set_state("w", "k", 0))
    url = postgres_url
    if who == "tool-role":
        with psycopg.connect(postgres_url, autocommit=True) as c:
            c.execute("DROP ROLE IF EXISTS garrison_test_writer")
            c.execute("CREATE ROLE garrison_test_writer LOGIN")
            c.execute("GRANT USAGE ON SCHEMA garrison TO garrison_test_writer")
            c.execute("GRANT ALL ON ALL TABLES IN SCHEMA garrison TO garrison_test_writer")
            c.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA garrison TO garrison_test_writer")
        url = postgres_url.replace("postgres@", "garrison_test_writer@", 1)
    proxy = CutProxy(_port(postgres_url), b"old-session")
    proxy_url = proxy.url(url)
    holder = psycopg.connect(postgres_url)
    try:
        with PostgresStore(proxy_url, lock=who == "node") as store:
            store.write(Transaction().set_state("w", "j", 0))
            assert store._writer is not None
            old = store._writer.info.backend_pid
            holder.execute("SELECT 1 FROM garrison.state WHERE workflow_id = 'w' "
                           "AND key = 'k' FOR UPDATE")
            got: list[Any] = []

            def write() -> None:
                try:
                    got.append(store.write(
                        Transaction().append_journal("w", 0, "activity", "old-session")
                        .set_state("w", "k", 1)))
                except Exception as exc:
                    got.append(exc)

            proxy.armed.set()
            writer = threading.Thread(target=write)
            writer.start()
            mine = holder.info.backend_pid
            deadline = time.monotonic() + 30
            # the write, sent again on a new session, waits for the row: let it go
            while not _waiting_for_a_lock(postgres_url, [old, mine]):
                assert time.monotonic() < deadline and writer.is_alive(), got
                time.sleep(0.02)
            assert proxy.fired.is_set()
            holder.rollback()
            writer.join(30)
            assert got == [[None, None]], got
            assert [r.name for r in store.journal("w")] == ["old-session"]
            assert store.states("w") == {"j": 0, "k": 1}
            store.write(Transaction().set_state("w", "j", 1))
            assert store.states("w") == {"j": 1, "k": 1}
    finally:
        holder.close()
        proxy.close()
        if who == "tool-role":
            with psycopg.connect(postgres_url, autocommit=True) as c:
                c.execute("DROP OWNED BY garrison_test_writer")
                c.execute("DROP ROLE garrison_test_writer")


def test_a_batch_written_after_the_store_gave_up_gets_the_store_s_error(
        postgres_url: str) -> None:
    """A batch whose write began after the store had given up (an outage longer than
    ``retry_for``, ended by another batch) got ``UnboundLocalError: cannot access local
    variable 'rest'`` as its workflows' store failure, not the store's own error."""
    from garrison import StoreError
    from garrison.persistence import PostgresStore, Transaction

    PostgresStore(postgres_url).close()  # (a node made the store)
    store = PostgresStore(postgres_url, lock=False)
    try:
        gave_up = StoreError(store.path, "the connection could not be made again within 1s")
        store._failed = gave_up  # (what the batch that saw the outage left)
        plan = store._plan(Transaction().create_workflow("w", "m:f", []))
        with pytest.raises(StoreError) as raised:
            store._commit_plans([plan])
        assert raised.value is gave_up
    finally:
        store._failed = None
        store.close()
