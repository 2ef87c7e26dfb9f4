"""What only the PostgreSQL store has: errors at open, the advisory lock, values
PostgreSQL cannot hold, lost connections (a backend terminated, the server stopped
and started again under a running node), and wakeups by LISTEN/NOTIFY.

The store behaviour it shares with SQLite is tested on both stores by the tests that
take ``store_spec`` (test_persistence*.py, test_workflow*.py, test_cli_workflows.py).
Real network I/O: these tests run on trio's real clock.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _postgres
import psycopg
import pytest
import trio
import workflow_app as app
from _stores import sql, workflows_table_counts

import garrison
from garrison import StoreError, StoreVersionError, WorkflowMoved
from garrison.persistence import PostgresStore, SQLiteStore, Transaction, open_store
from garrison.persistence import _pg_write as pgstore

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_server: Any, request: pytest.FixtureRequest) -> str:
    """A fresh store URL (a new schema of the session's store database)."""
    from conftest import _postgres_store_url

    return _postgres_store_url(request)


def terminate(spec: str, application: str = "garrison node%") -> int:
    """``pg_terminate_backend`` of the store's connections (by application name)."""
    rows = sql(spec, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE application_name LIKE ? AND pid <> pg_backend_pid()", (application,))
    return int(rows[0][0])


# ------------------------------------------------------------------ open
def test_errors_at_open_name_the_server_and_the_reason(postgres_server: Any) -> None:
    server = postgres_server
    base = f"postgresql://postgres@127.0.0.1:{server.port}"
    with pytest.raises(StoreError) as info:
        PostgresStore(f"{base}/no_such_db")
    assert f"127.0.0.1:{server.port}/no_such_db" in str(info.value)
    assert 'database "no_such_db" does not exist' in str(info.value)

    with pytest.raises(StoreError, match='role "nobody" does not exist'):
        PostgresStore(f"postgresql://nobody@127.0.0.1:{server.port}/postgres")

    with socket_closed_port() as port, pytest.raises(StoreError) as info:
        PostgresStore(f"postgresql://ann:s3cret-pw@127.0.0.1:{port}/db")  # refused
    message = str(info.value)
    assert f"postgresql://ann@127.0.0.1:{port}/db" in message and "refused" in message
    assert "s3cret-pw" not in message

    with pytest.raises(StoreError, match="invalid PostgreSQL URL") as info:
        PostgresStore("postgresql://ann:pw@host:notaport/db")
    assert "pw@" not in str(info.value)
    # (libpq's message ends in a newline: the command line printed an empty line after)
    with pytest.raises(StoreError, match=r'invalid URI query parameter: "bogus"$') as info:
        PostgresStore(f"{base}/postgres?bogus=1")
    assert not str(info.value).endswith("\n")
    with pytest.raises(StoreError, match="invalid schema name"):
        PostgresStore(f"{base}/postgres?schema=a$b")
    # (an argument of the wrong value is a ValueError, as synchronous= and retry_for=)
    for bad in ("", "a$b", "x" * 64):
        with pytest.raises(ValueError, match=r"^schema=.*: invalid schema name: 1 to 63"):
            PostgresStore(f"{base}/postgres", schema=bad)
    with pytest.raises(ValueError, match="'sometimes'"):
        PostgresStore(f"{base}/postgres", synchronous="sometimes")


def test_a_url_libpq_cannot_parse_never_shows_its_password() -> None:
    """libpq's refusal of a URL quotes the text it refused: a password with a bad
    percent-encoding was printed as written (``invalid percent-encoded token:
    "Tops3cret%G1"``), a ``?password=`` one too though the URL shown masked it. The
    message names the part that is wrong, never its value."""
    for url in ("postgresql://app:Tops3cret%G1@db.internal/orders",
                "postgresql://app@db.internal/orders?password=Tops3cret%G1",
                "postgresql://app:Tops3cret%2@db.internal/orders"):
        with pytest.raises(StoreError) as info:
            PostgresStore(url)
        assert "Tops3cret" not in str(info.value), str(info.value)
        assert str(info.value).endswith(
            "the password holds a '%' not followed by two hex digits: write a '%' in it "
            "as %25"), str(info.value)
    for url, part in (("postgresql://app:Top%00s3cret@db/orders", "3cret"),  # (%00)
                      ("postgresql://app:Tops 3cret@db/orders", "3cret"),  # (a space)
                      ("postgresql://app:s3c@ret@db/orders", "ret@")):  # (host 'ret@db')
        with pytest.raises(StoreError, match="invalid PostgreSQL URL") as info:
            PostgresStore(url)
        assert part not in str(info.value), str(info.value)
    # (review: the password was cut out of libpq's text wherever it stood: a password
    # "p" made its "parameter" "***arameter"; a quoted token holding it is cut whole)
    with pytest.raises(StoreError) as info:
        PostgresStore("postgresql://app:p@db.internal/orders?x=1")
    assert str(info.value).endswith('invalid URI query parameter: "x"'), str(info.value)


def test_a_slash_question_mark_or_hash_left_in_a_password_is_named_not_shown() -> None:
    """A '/', '?' or '#' left unencoded in a password ends the URL's host part early:
    urllib and libpq read a piece of the password as the port (``Port could not be cast
    to integer value as 'Tops'``) and the URL shown held all of it. The stray '@' after
    the host part is named; neither shows the password. An '@' in a query parameter's
    value after the path (``/orders?user=app@server``) is taken as written; before any
    '/' (``app:1234?s=3cret@db``) libpq reads it as the password's end, so it is named
    too, where urllib read a port and a query."""
    for url in ("postgresql://app:Tops/3cret@db.internal/orders",
                "postgresql://app:Tops?3cret@db.internal:5433/orders?sslmode=require",
                "postgresql://app:Tops#3cret@db.internal/orders",
                "postgresql://app:Tops?3=cret@db.internal/orders",
                "postgresql://app:1234/3cret@db.internal/orders",
                # (digits, then '?': urllib took them for a port and the rest for a
                # query, '@db.internal' in a value; libpq, for the password)
                "postgresql://app:1234?sslmode=3cret@db.internal/orders?x=1",
                "postgresql://app:1234?s=3cret@db.internal/orders",
                "postgres://:Tops/3cret@db.internal/orders"):
        with pytest.raises(StoreError) as info:
            PostgresStore(url)
        message = str(info.value)
        assert "Tops" not in message and "3cret" not in message and "1234" not in message, \
            message
        assert message.endswith(
            "the URL has an '@' after its host part: a '/', '?' or '#' in the password must "
            "be percent-encoded (%2F, %3F, %23), an '@' in the database name as %40"), message
        assert "@db.internal" in message, message
    for url in ("postgresql://db.internal/orders?user=app@server",
                "postgresql://app:pw@db.internal/orders?application_name=a@b",
                "postgresql://app@db.internal/orders?sslmode=disable",
                "postgresql://db.internal/orders?user=app&password=x"):
        with socket_closed_port() as port, pytest.raises(StoreError, match="cannot connect"):
            PostgresStore(url.replace("db.internal", f"127.0.0.1:{port}"))


class socket_closed_port:
    """A local TCP port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        pass


def test_a_node_creates_the_schema_a_tool_never_does(pg: str) -> None:
    with pytest.raises(StoreError, match="no garrison store here"):
        PostgresStore(pg, lock=False)
    with PostgresStore(pg) as node:
        assert node.schema_version == sql(pg, "SELECT max(version) FROM schema_version")[0][0]
        with PostgresStore(pg, lock=False) as tool:
            assert tool.list_workflows() == []
    sql(pg, "INSERT INTO schema_version VALUES (?, 0)", (node.schema_version + 1,))
    for lock in (True, False):
        with pytest.raises(StoreVersionError, match="newer garrison"):
            PostgresStore(pg, lock=lock)


def test_a_tool_waits_a_bounded_time_for_a_lock_another_session_holds(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-409: a session holding a lock on the store's tables (an operator's psql
    left in a transaction after ``LOCK TABLE``, a ``VACUUM FULL``) made every
    ``garrison workflows`` command wait for ever, ``list`` too: a tool's sessions had
    no ``lock_timeout``, where a SQLite tool gives up after its busy timeout (5 s). A
    tool's statement now waits ``TOOL_LOCK_WAIT`` for a lock and is tried again for
    ``retry_for``; then its ``StoreError`` says so. A node's sessions keep the
    server's setting (they wait)."""
    from garrison.persistence import _postgres as pgmod

    monkeypatch.setattr(pgmod, "TOOL_LOCK_WAIT", 0.2, raising=False)
    with PostgresStore(pg) as node:
        node.write(Transaction().create_workflow("w", "app:f"))
        assert node._query("SHOW lock_timeout") == [("0",)]
    base, _, schema = pg.partition("?schema=")
    with psycopg.connect(base) as holder:
        holder.execute(f'LOCK TABLE "{schema}".workflows IN ACCESS EXCLUSIVE MODE')
        with PostgresStore(pg, lock=False, retry_for=0.5) as tool:
            began = time.monotonic()
            with pytest.raises(StoreError) as read:
                tool.get_workflow("w")
            with pytest.raises(StoreError) as wrote:
                tool.write(Transaction().request_cancel("w"))
            assert time.monotonic() - began < 10
    waited = ("a lock another session holds on the store's tables was not released "
              "within 0.2s (lock_timeout), tried again for 0.5s: canceling statement "
              "due to lock timeout (a session left in a transaction, or maintenance: "
              "see pg_locks)")
    assert str(read.value) == f"store {tool.path!r}: {waited}"
    assert str(wrote.value) == f"store {tool.path!r}: the server refused the write: {waited}"
    with PostgresStore(pg, lock=False) as tool:  # (the lock released: it reads)
        assert tool.get_workflow("w") is not None


def test_a_start_creating_its_store_waits_a_bounded_time_for_another_sessions_lock(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-409: ``garrison workflows start`` (``create_store``) and ``replay
    --migrate`` (``migrate_store``) look at the schema on a connection of their own,
    which had no ``lock_timeout``: behind a session holding a lock on the schema's
    tables they waited for ever. They wait ``TOOL_LOCK_WAIT`` now, as a tool's
    statements do, then say whose lock it was."""
    from garrison.persistence import _postgres as pgmod
    from garrison.persistence import create_store, migrate_store

    monkeypatch.setattr(pgmod, "TOOL_LOCK_WAIT", 0.2, raising=False)
    with PostgresStore(pg) as node:
        shown = node.path
    base, _, schema = pg.partition("?schema=")
    with psycopg.connect(base) as holder:
        holder.execute(f'LOCK TABLE "{schema}".schema_version IN ACCESS EXCLUSIVE MODE')
        began = time.monotonic()
        with pytest.raises(StoreError) as created:
            create_store(pg)
        with pytest.raises(StoreError) as migrated:
            migrate_store(pg)
        assert time.monotonic() - began < 10
    said = ("a lock another session holds on the store's tables was not released within "
            "0.2s (lock_timeout): canceling statement due to lock timeout (a session left "
            "in a transaction, or maintenance: see pg_locks)")
    assert str(created.value) == f"store {shown!r}: cannot create schema {schema!r}: {said}"
    assert str(migrated.value) == f"store {shown!r}: cannot migrate schema {schema!r}: {said}"
    assert create_store(pg) is False  # (the lock released: the store is there)


def test_schema_in_the_url_or_as_argument(pg: str) -> None:
    base, _, schema = pg.partition("?schema=")
    with PostgresStore(base, schema=schema) as a:
        a.write(Transaction().create_workflow("w", "app:f"))
        assert a.path is not None and a.path.endswith(f"?schema={schema}")
    with PostgresStore(pg) as b:
        assert b.get_workflow("w") is not None
    with pytest.raises(StoreError, match="names schema"):
        PostgresStore(pg, schema="other")
    # (two different schema= in one URL: refused, not the last one taken in silence)
    with pytest.raises(StoreError, match=r"names schema= 2 times, differently \('a', 'b'\)"):
        PostgresStore(base + "?schema=a&schema=b")
    with PostgresStore(f"{pg}&schema={schema}") as again:  # (the same one twice is fine)
        assert again.get_workflow("w") is not None
    with PostgresStore(base) as default:  # the "garrison" schema: another store
        assert default.get_workflow("w") is None
        assert default.path is not None and "schema" not in default.path


def test_open_store_picks_the_store_and_says_when_psycopg_is_missing(
        pg: str, tmp_path: Path) -> None:
    with open_store(pg, synchronous="full") as store:
        assert isinstance(store, PostgresStore) and store.synchronous == "full"
        assert open_store(store) is store
    with open_store(str(tmp_path / "a.db")) as other:
        assert isinstance(other, SQLiteStore)
    with pytest.raises(TypeError, match="store= expects"):
        open_store(42)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["psycopg"] = None  # as if it were not installed
        sys.path.insert(0, {str(ROOT)!r})
        import garrison
        from garrison.persistence import open_store
        try:
            open_store({pg!r})
        except ImportError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "pip install 'garrison[postgres]'" in out


# ------------------------------------------------------------------ values
def test_nul_is_refused_before_anything_is_sent(pg: str) -> None:
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        before = store.statistics().transactions
        with pytest.raises(ValueError, match=r"NUL.*") as info:
            store.write(Transaction().set_state("w", "k", 1).deliver("w", "to\x00pic", 1))
        assert "deliver" in str(info.value)
        with pytest.raises(ValueError, match=r"NUL.*") as info:  # a step: its own encoder
            store.write(Transaction().append_journal("w", 0, "activity", "na\x00me"))
        assert "append_journal" in str(info.value)
        with pytest.raises(ValueError, match="jsonb"):
            store.write(Transaction().create_workflow("v", "app:f", search={"k": "a\x00b"}))
        with pytest.raises(ValueError, match="jsonb"):
            store.write(Transaction().set_attributes("w", search={"k": "\x00"}))
        assert store.statistics().transactions == before
        assert store.states("w") == {}
        # a NUL inside a JSON value is an escape in text: stored and read back
        store.set_state("w", "k", "a\x00b")
        assert store.get_state("w", "k") == "a\x00b"
        # reads of what cannot be stored find nothing
        assert store.get_workflow("w\x00") is None
        assert store.list_workflows(search={"k": "\x00"}) == []


def test_set_attributes_merges_as_sqlite_does(pg: str, tmp_path: Path) -> None:
    patches: list[dict[str, Any]] = [
        {"b": 1, "a": {"x": 1, "y": None}, "c": [1, 2]},
        {"a": {"y": 2, "x": None}, "d": None, "b": None},
        {"c": {"n": {"m": None, "k": 1}}, "e": "z"},
    ]
    results = []
    for store in (PostgresStore(pg), SQLiteStore(str(tmp_path / "s.db"))):
        with store:
            store.write(Transaction().create_workflow("w", "app:f", search={"z": 0, "a": 5},
                                                      memo={"m": 1}))
            for patch in patches:
                store.write(Transaction().set_attributes("w", search=patch, memo=patch))
            rec = store.get_workflow("w")
            assert rec is not None
            results.append((list(rec.search.items()), list(rec.memo.items())))
    assert results[0] == results[1]


# ------------------------------------------------------------------ lost connections
def test_a_terminated_writer_reconnects_and_nothing_is_doubled(pg: str) -> None:
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        assert terminate(pg) >= 1
        assert store.write(Transaction().append_journal("w", 0, "activity", "a", 1)) == [None]
        assert store.get_workflow("w") is not None  # the reader reconnects too
        assert terminate(pg) >= 1
        assert store.list_workflows()[0].workflow_id == "w"
        assert [r.seq for r in store.journal("w")] == [0]
        assert store.locked and store.write(Transaction().set_state("w", "k", 1)) == [None]


def _lose_answer(store: PostgresStore, monkeypatch: pytest.MonkeyPatch, *, after: bool) -> None:
    """The next transaction's connection drops: before it is sent, or after it committed
    (its answer lost on the way back)."""
    real = PostgresStore._send
    fired = []

    def send(self: PostgresStore, conn: Any, calls: Any, mark: Any) -> Any:
        if fired:
            return (yield from real(self, conn, calls, mark))
        fired.append(1)
        if after:
            yield from real(self, conn, calls, mark)
        conn.close()
        raise pgstore._ConnectionLost("the network blinked")

    monkeypatch.setattr(PostgresStore, "_send", send)


@pytest.mark.parametrize("after", [False, True], ids=["before-send", "after-commit"])
def test_an_unknown_outcome_is_settled_by_the_writers_number(
        pg: str, monkeypatch: pytest.MonkeyPatch, after: bool) -> None:
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        _lose_answer(store, monkeypatch, after=after)
        tx = (Transaction().create_workflow("v", "app:g").append_journal("w", 0, "send", "t")
              .deliver("w", "t", 7, msg_id="m-1"))
        created, _, row = store.write(tx)
        # the same results as if nothing had happened, whether it was sent again or not
        assert created is True and row == store.inbox_message("m-1").id  # type: ignore[union-attr]
        assert [r.seq for r in store.journal("w")] == [0]
        assert len(store.pending_messages("w")) == 1
        assert store.statistics().transactions == 2


def _lose_one_answer(monkeypatch: pytest.MonkeyPatch, *, after: bool) -> list[int]:
    """As ``_lose_answer`` for a transaction of one statement (``_run_one``: a step);
    returns a list that gets one item when it fired."""
    real = PostgresStore._run_one
    fired: list[int] = []

    def run_one(self: PostgresStore, conn: Any, plan: Any, n: int, bare: bool = False
                ) -> Any:
        if fired:
            return (yield from real(self, conn, plan, n, bare))
        fired.append(1)
        if after:
            yield from real(self, conn, plan, n, bare)
        conn.close()
        raise pgstore._ConnectionLost("the network blinked")

    monkeypatch.setattr(PostgresStore, "_run_one", run_one)
    return fired


@pytest.mark.parametrize("after", [False, True], ids=["before-send", "after-commit"])
def test_a_full_step_whose_answer_is_lost_is_settled_by_its_own_row(
        pg: str, monkeypatch: pytest.MonkeyPatch, after: bool) -> None:
    """At synchronous="full" a step's journal row is written without the writer's
    number; a lost answer is settled by reading the row back: written once, either way,
    and the writer's number still settles the transactions around it."""
    with PostgresStore(pg, synchronous="full") as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        store.write(Transaction().append_journal("w", 0, "activity", "a", 1))
        fired = _lose_one_answer(monkeypatch, after=after)
        assert store.write(Transaction().append_journal("w", 1, "activity", "a", 2)) == [None]
        assert fired
        assert [(r.seq, r.outcome) for r in store.journal("w")] == [(0, 1), (1, 2)]
        # a transaction with the writer's number after bare steps: its lost answer too
        fired = _lose_one_answer(monkeypatch, after=after)
        store.write(Transaction().set_state("w", "k", 1))
        assert fired and store.get_state("w", "k") == 1
        assert store.write(Transaction().append_journal("w", 2, "activity", "a", 3)) == [None]
        assert [r.seq for r in store.journal("w")] == [0, 1, 2]
        assert store.statistics().transactions == 5
        # the steps did not set the writer's number: it is the set_state's, the fourth
        assert sql(pg, "SELECT batch FROM writers") == [(4,)]


@pytest.mark.parametrize("after", [False, True], ids=["before-send", "after-commit"])
async def test_a_full_step_of_a_cluster_node_is_fenced_without_the_writers_number(
        pg: str, monkeypatch: pytest.MonkeyPatch, after: bool) -> None:
    """A node on PostgreSQL is a cluster node: its steps are fenced. At "full" a step is
    still written without the writer's number (a first version wrote only unfenced
    steps so, which no node has): the fence, then the row, one statement; a lost answer
    is settled by the row."""
    with PostgresStore(pg, synchronous="full") as store:
        _join(pg, store)
        await store.commit(Transaction().create_workflow("w", "app:f"))
        marked = sql(pg, "SELECT batch FROM writers")
        for seq in range(3):
            await store.commit(Transaction().append_journal("w", seq, "activity", "a", seq))
        assert sql(pg, "SELECT batch FROM writers") == marked
        fired = _lose_one_answer(monkeypatch, after=after)
        assert await store.commit(Transaction().append_journal("w", 3, "activity", "a", 3)) \
            == [None]
        assert fired
        assert [r.outcome for r in store.journal("w")] == [0, 1, 2, 3]


def _closing_after_reconnect(store: PostgresStore, monkeypatch: pytest.MonkeyPatch
                             ) -> list[threading.Thread]:
    """Once the writer reconnected after a lost connection, ``close()`` is called from
    another thread (which waits for the write to end): the list gets that thread."""
    real = store._reconnect_writer
    closing: list[threading.Thread] = []

    def reconnect(deadline: float, reason: str) -> int:
        found = real(deadline, reason)
        closing.append(threading.Thread(target=store.close))
        closing[0].start()
        while not store._closed:  # (close marks the store closed, then waits for the lock)
            time.sleep(0.001)
        return found

    monkeypatch.setattr(store, "_reconnect_writer", reconnect)
    return closing


@pytest.mark.parametrize("how", ["write", "commit"])
async def test_a_store_closed_while_a_committed_write_is_read_back_says_it_committed(
        pg: str, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A write commits and its answer is lost; the writer reconnects and finds by its
    number that it committed, and the store is closed before its results are read back.
    Its caller (a synchronous write, the node's commit) gets a StoreError saying so and
    that the write committed: it got the bare RuntimeError of a call on a closed store,
    for a write that committed."""
    store = PostgresStore(pg)
    try:
        store.write(Transaction().create_workflow("w", "app:f"))
        _lose_answer(store, monkeypatch, after=True)
        closing = _closing_after_reconnect(store, monkeypatch)
        tx = Transaction().create_workflow("v", "app:g").set_state("v", "k", 1)
        with pytest.raises(StoreError) as info:
            if how == "write":
                store.write(tx)
            else:
                with trio.fail_after(30):
                    await store.commit(tx)
        closing[0].join(10)
        assert not closing[0].is_alive()
        message = str(info.value)
        assert "closed while" in message and "it committed" in message, message
        assert sql(pg, "SELECT key FROM state WHERE workflow_id = 'v'") == [("k",)]
    finally:
        store.close()


def _next_write_is_not_lost(store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a committed write whose read-back failed: the next write, whose connection
    drops before it is sent, is sent again and committed (the failed read-back's write
    was counted: the next one does not take its number and pass for committed)."""
    monkeypatch.undo()
    _lose_answer(store, monkeypatch, after=False)
    assert store.write(Transaction().set_state("w", "k", 2).set_state("w", "j", 3)) \
        == [None, None]
    assert store.states("w") == {"j": 3, "k": 2}
    assert store.statistics().transactions == 3


def test_a_read_back_failing_otherwise_still_says_the_write_committed(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write commits, its answer is lost, and reading its results back fails with
    something else than a StoreError (a row it cannot make sense of): its caller still
    gets a StoreError saying the write committed (it got that error as it was), and the
    store counts the write (the next one took its number: a lost answer of that one
    was settled as committed, and it was silently lost)."""
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        _lose_answer(store, monkeypatch, after=True)

        def unreadable(plan: Any) -> None:
            raise ValueError("a row it cannot make sense of")

        monkeypatch.setattr(store, "_recover_results", unreadable)
        with pytest.raises(StoreError) as info:
            store.write(Transaction().create_workflow("v", "app:g").set_state("v", "k", 1))
        message = str(info.value)
        assert "(ValueError: a row it cannot make sense of): it committed" in message, message
        _next_write_is_not_lost(store, monkeypatch)


def test_a_committed_write_whose_results_cannot_be_read_back_counts_as_committed(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write commits, its answer is lost, and its results cannot be read back (the
    reader cannot reconnect): its caller gets a StoreError saying it committed (it got
    the reader's error alone), and the store counts it as committed. The next write,
    whose connection drops before it is sent, is sent again: it was taken for
    committed (it had the same number as the one before it) and silently lost."""
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        _lose_answer(store, monkeypatch, after=True)
        real_reconnect, real_query = store._reconnect_writer, store._query
        unreadable: list[int] = []

        def reconnect(deadline: float, reason: str) -> int:
            unreadable.append(1)
            return real_reconnect(deadline, reason)

        def query(*args: Any, **kwargs: Any) -> Any:
            if unreadable:
                unreadable.clear()
                raise StoreError(store.path, "the connection was lost and could not be "
                                 "made again within 30s: refused")
            return real_query(*args, **kwargs)

        monkeypatch.setattr(store, "_reconnect_writer", reconnect)
        monkeypatch.setattr(store, "_query", query)
        with pytest.raises(StoreError) as info:
            store.write(Transaction().create_workflow("v", "app:g").set_state("v", "k", 1))
        message = str(info.value)
        assert "it committed" in message and "could not be made again" in message, message
        assert message.count(repr(store.path)) == 1, message  # (named once)
        assert store.failed is None
        _next_write_is_not_lost(store, monkeypatch)


def test_a_store_closed_while_a_full_step_s_row_is_looked_for_is_a_store_error(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At synchronous="full" a step whose answer was lost is settled by looking for its
    row; the store is closed before that read: a StoreError saying whether the step
    committed is unknown (it was the RuntimeError of a call on a closed store)."""
    store = PostgresStore(pg, synchronous="full")
    try:
        store.write(Transaction().create_workflow("w", "app:f"))
        _lose_one_answer(monkeypatch, after=True)
        closing = _closing_after_reconnect(store, monkeypatch)
        with pytest.raises(StoreError, match=r"the store was closed while looking for this "
                           r"step's journal row .*: whether it committed is unknown"):
            store.write(Transaction().append_journal("w", 0, "activity", "a", 1))
        closing[0].join(10)
        assert not closing[0].is_alive()
    finally:
        store.close()


def test_a_store_closed_while_a_taken_dedup_key_is_read_is_a_store_error(pg: str) -> None:
    """A start's enqueue hits the unique index of dedup keys (another start took the key
    at the same moment): the holder is read to name it, and the store was closed
    meanwhile. The start gets a StoreError saying it was not committed (it was the
    RuntimeError of a call on a closed store)."""
    base, _, schema = pg.partition("?schema=")
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w1", "app:f", status="pending", run_id="r1")
                    .enqueue("w1", "r1", dedup="k")
                    .create_workflow("w2", "app:f", status="pending", run_id="r2"))
        with psycopg.connect(base) as c, pytest.raises(psycopg.errors.UniqueViolation) as taken:
            c.execute(f'INSERT INTO "{schema}".queue (workflow_id, dedup, enqueued) '
                      "VALUES ('w2', 'k', 0)")
        assert taken.value.diag.constraint_name == "queue_dedup"
        plan = store._plan(Transaction().enqueue("w2", "r2", dedup="k"))
        store.close()
        with pytest.raises(StoreError, match=r"the store was closed while reading which "
                           r"workflow holds dedup key 'k' .*: it was not committed"):
            store._map_error(taken.value, plan, 0)


class _Clock:
    """A clock for the write path (``_pg_write._time``): its pauses advance it at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.time = time.time

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _lost_twice(monkeypatch: pytest.MonkeyPatch, *, second_after: bool) -> list[float]:
    """The next transaction's connection drops before it is sent, and again as it is
    sent again (``second_after``: after it committed); returns a list that gets the
    time of each send."""
    real = PostgresStore._send
    sends: list[float] = []

    def send(self: PostgresStore, conn: Any, composed: Any, mark: Any) -> Any:
        sends.append(pgstore._time.monotonic())
        if len(sends) > 2:
            return (yield from real(self, conn, composed, mark))
        if len(sends) == 2 and second_after:
            yield from real(self, conn, composed, mark)
        conn.close()
        raise pgstore._ConnectionLost("the network blinked")

    monkeypatch.setattr(PostgresStore, "_send", send)
    return sends


def test_a_second_lost_connection_of_a_write_keeps_the_deadline_of_the_first(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write's connection drops, the server comes back after 20 s (of ``retry_for``
    30 s), the write is sent again and its connection drops again, for good: the write
    gives up 30 s after the first loss, not 30 s after the second."""
    with PostgresStore(pg, retry_for=30) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        clock = _Clock()
        monkeypatch.setattr(pgstore, "_time", clock)
        sends = _lost_twice(monkeypatch, second_after=False)
        real = store._connect_writer

        def connect(*, first: bool) -> Any:
            if clock.now < 20 or len(sends) > 1:  # (back at 20 s, lost for good after)
                raise StoreError(store.path, "cannot connect (its writes connection): refused")
            return real(first=first)

        monkeypatch.setattr(store, "_connect_writer", connect)
        with pytest.raises(StoreError, match="could not be made again within 30s") as info:
            store.write(Transaction().set_state("w", "k", 1).set_state("w", "j", 2))
        assert len(sends) == 2 and 20 <= sends[1] < 25
        message = str(info.value)  # (the store named once, not again for the last error)
        assert message.count(repr(store.path)) == 1 and message.endswith(
            "within 30s: cannot connect (its writes connection): refused; this store "
            "writes nothing more"), message
        assert 28 <= clock.now <= 30
    assert sql(pg, "SELECT key FROM state") == []


def test_a_write_whose_connection_drops_twice_is_applied_once(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write's connection drops before it is sent; sent again, it commits and its
    answer is lost: the writer's number settles that it committed, and it is not sent
    a third time. Its caller gets its results, and it is written once."""
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        sends = _lost_twice(monkeypatch, second_after=True)
        tx = (Transaction().create_workflow("v", "app:g").append_journal("w", 0, "send", "t")
              .deliver("w", "t", 7, msg_id="m-1"))
        created, _, row = store.write(tx)
        assert len(sends) == 2
        assert created is True and row == store.inbox_message("m-1").id  # type: ignore[union-attr]
        assert [r.seq for r in store.journal("w")] == [0]
        assert len(store.pending_messages("w")) == 1
        assert store.statistics().transactions == 2


def test_a_connection_lost_again_as_the_writer_reconnects_is_retried(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write's connection drops, and the new connection drops too as the writer sets
    it up (takes its lock again): that is tried again as a connection that cannot be
    made is (it was the raw ``psycopg.OperationalError`` of the setup, out of the
    write). The write is sent again, once."""
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        _lose_answer(store, monkeypatch, after=False)
        real = store._share_node_lock
        dropped: list[int] = []

        def share(conn: Any) -> None:
            if not dropped:
                dropped.append(1)
                conn.close()
            real(conn)

        monkeypatch.setattr(store, "_share_node_lock", share)
        assert store.write(Transaction().set_state("w", "k", 1).set_state("w", "j", 2)) \
            == [None, None]
        assert dropped and store.states("w") == {"j": 2, "k": 1}
        assert store.statistics().transactions == 2


def test_a_lost_writer_tries_again_until_retry_for_has_passed(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is back 1.8 s after a write lost its connection, with
    ``retry_for=2``: the store gave up about 1.55 s in, its next pause running past the
    deadline (so a short ``retry_for`` was about halved). It tries once more at the
    deadline itself now, and the write goes through."""
    with PostgresStore(pg, retry_for=2) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        clock = _Clock()
        monkeypatch.setattr(pgstore, "_time", clock)
        _lose_answer(store, monkeypatch, after=False)
        real = store._connect_writer
        tries: list[float] = []

        def connect(*, first: bool) -> Any:
            tries.append(clock.now)
            if clock.now < 1.8:  # (the server is down)
                raise StoreError(store.path, "cannot connect (its writes connection): refused")
            return real(first=first)

        monkeypatch.setattr(store, "_connect_writer", connect)
        assert store.write(Transaction().set_state("w", "k", 1).set_state("w", "j", 2)) \
            == [None, None]
        assert tries[-1] == pytest.approx(2.0) and len(tries) > 2
    assert sorted(sql(pg, "SELECT key FROM state")) == [("j",), ("k",)]


def test_a_writer_whose_old_session_does_not_end_gives_up(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write's connection is lost and its old server session does not end (the server
    refuses to end it, and it has not noticed its client went): the write is not sent
    again, which could apply it twice, and the store gives up ``retry_for`` after the
    loss, saying why. (The session living on is tests/test_pg_faults.py's.)"""
    with PostgresStore(pg, retry_for=30) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        assert store._writer is not None
        old = store._writer_session
        assert old is not None and old[0] == store._writer.info.backend_pid
        clock = _Clock()
        monkeypatch.setattr(pgstore, "_time", clock)
        _lose_answer(store, monkeypatch, after=False)
        monkeypatch.setattr(pgstore, "_SESSION_ALIVE",  # (it lives on, as far as it can tell)
                            "SELECT 1 WHERE %s::int IS NOT NULL AND %s IS NOT NULL")
        with pytest.raises(StoreError, match=rf"its old session on the server \(pid {old[0]}\) "
                           r"did not end within 30s: the write it was sending may still "
                           r"commit there, so it cannot be sent again"):
            store.write(Transaction().set_state("w", "k", 1).set_state("w", "j", 2))
        assert 29 <= clock.now <= 30
        assert store.failed is not None and not store.locked
    assert sql(pg, "SELECT key FROM state") == []


def test_a_store_closed_while_the_old_session_is_waited_for_ends_the_write(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is closed while the writer waits for its old session to end: the write
    ends at once with a StoreError saying whether it committed is unknown (``close``
    waited for all of ``retry_for``)."""
    store = PostgresStore(pg, retry_for=30)
    try:
        store.write(Transaction().create_workflow("w", "app:f"))
        clock = _Clock()
        closing: list[threading.Thread] = []

        def sleep(seconds: float) -> None:
            clock.now += seconds
            if clock.now > 1 and not closing:  # (a second into the wait)
                closing.append(threading.Thread(target=store.close))
                closing[0].start()
                while not store._closed:
                    time.sleep(0.001)

        clock.sleep = sleep  # type: ignore[method-assign]
        monkeypatch.setattr(pgstore, "_time", clock)
        _lose_answer(store, monkeypatch, after=False)
        monkeypatch.setattr(pgstore, "_SESSION_ALIVE",  # (it lives on, as far as it can tell)
                            "SELECT 1 WHERE %s::int IS NOT NULL AND %s IS NOT NULL")
        with pytest.raises(StoreError, match=r"the store was closed while a write waited "
                           r"for the server .*: whether it committed is unknown"):
            store.write(Transaction().set_state("w", "k", 1).set_state("w", "j", 2))
        assert clock.now < 2
        closing[0].join(10)
        assert not closing[0].is_alive()
    finally:
        store.close()


def test_a_full_store_still_finds_confirmed_commits_the_server_lost(pg: str) -> None:
    with PostgresStore(pg, synchronous="full") as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        store.write(Transaction().set_state("w", "k", 1))
        store.write(Transaction().append_journal("w", 0, "activity", "a", 1))
        sql(pg, "UPDATE writers SET batch = batch - 1")  # as a lost commit would leave it
        terminate(pg)
        with pytest.raises(StoreError, match="lost transactions it had confirmed"):
            store.write(Transaction().append_journal("w", 1, "activity", "a", 2))
        assert [r.seq for r in store.journal("w")] == [0]


def test_commits_the_server_lost_stop_every_write(pg: str) -> None:
    """With synchronous='normal' a server crash can lose confirmed commits; the store
    finds out when it reconnects (the writers row is behind) and writes nothing more."""
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        store.write(Transaction().set_state("w", "k", 1))
        sql(pg, "UPDATE writers SET batch = batch - 1")  # as a crash would leave it
        terminate(pg)
        with pytest.raises(StoreError, match="lost transactions it had confirmed"):
            store.write(Transaction().set_state("w", "k", 2))
        with pytest.raises(StoreError, match="writes nothing more"):
            store.write(Transaction().set_state("w", "k", 3))
        assert store.get_state("w", "k") == 1  # reads still work


def test_a_server_gone_past_retry_for_is_a_store_error(
        postgres_server: Any, tmp_path: Path) -> None:
    server = _postgres.start()
    try:
        url = _postgres.create_db(server, "outage")
        with PostgresStore(url, retry_for=0.5) as store:
            store.write(Transaction().create_workflow("w", "app:f"))
            _postgres.pause(server)
            t0 = time.monotonic()
            with pytest.raises(StoreError) as info:
                store.write(Transaction().set_state("w", "k", 1))
            assert time.monotonic() - t0 < 5
            message = str(info.value)
            assert message.count(f"127.0.0.1:{server.port}/outage") == 1, message
            assert "could not be made again within 0.5s: cannot connect" in message
            with pytest.raises(StoreError) as read:
                store.get_workflow("w")
            message = str(read.value)  # (the store named once, not again for the last error)
            assert message.count(f"127.0.0.1:{server.port}/outage") == 1, message
            assert "could not be made again within 0.5s: cannot connect" in message
    finally:
        _postgres.stop(server)


def pause_then_resume(server: Any, seconds: float) -> None:
    _postgres.pause(server)
    time.sleep(seconds)
    _postgres.resume(server)


async def test_a_running_node_rides_out_a_server_restart(own_server: Any) -> None:
    """The server is stopped and started again while 20 workflows run their steps:
    every workflow finishes, nothing is recorded twice, none is marked failed."""
    url = _postgres.create_db(own_server, "restart")
    async with garrison.open_node(store=url) as node:
        for i in range(20):
            await node.start_workflow(app.slow_steps, 0, 30, 0.02, id=f"w{i}")
        await trio.sleep(0.2)
        # a thread of its own: the node's reads wait for the server in the node's thread
        outage = threading.Thread(target=pause_then_resume, args=(own_server, 0.5))
        outage.start()
        with trio.fail_after(60):
            results = [await node.workflow(f"w{i}").result() for i in range(20)]
        outage.join()
        assert results == [30] * 20
        # the thread that renews the node's lease rode out the restart too
        assert [t for t in threading.enumerate() if t.name.startswith("garrison-cluster-")]
        store = node.hosts["workflows"].store
        assert store.locked
    with PostgresStore(url, lock=False) as tool:
        for i in range(20):
            assert [r.seq for r in tool.journal(f"w{i}")] == list(range(1, 31))
        assert {str(w.status) for w in tool.list_workflows()} == {"completed"}


# ------------------------------------------------------------------ the write path
#: values an array literal must quote (journal appends of a transaction are sent as
#: one multi-row insert of arrays)
AWKWARD = ["", "NULL", 'a "quoted" name', "back\\slash", "{braces}, commas", "→ ünï",
           "line\nbreak", "\\\"", "trailing\\"]


def _join(spec: str, store: PostgresStore, epoch: int = 1) -> None:
    """Make ``store`` the writer of live cluster node ``epoch`` (lease for an hour)."""
    sql(spec, "INSERT INTO nodes (epoch, name, status, started, heartbeat, lease, "
              "lease_until) VALUES (?, ?, 'active', 0, 0, 3600, ?)",
        (epoch, f"n{epoch}", time.time() + 3600))
    store.set_fence(epoch, f"n{epoch}")


async def _at_once(monkeypatch: pytest.MonkeyPatch, fn: Any, args: Any) -> None:
    """``fn(arg)`` for each arg, in tasks of their own whose commits form ONE group-commit
    batch (the engine is told other tasks are runnable: nobody commits alone, and the
    batch's leader waits its most scheduler passes for the others to join)."""
    from garrison.persistence import _group_commit

    with monkeypatch.context() as patch:
        patch.setattr(_group_commit, "runnable_tasks", lambda: 1)
        async with trio.open_nursery() as nursery:
            for arg in args:
                nursery.start_soon(fn, arg)


def _sent(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The statements of each transaction the store sends from now on."""
    real = PostgresStore._send
    sent: list[list[str]] = []

    def send(self: PostgresStore, conn: Any, composed: Any, mark: Any) -> Any:
        sent.append([call.stmt.name.decode() for call in composed.calls])
        return (yield from real(self, conn, composed, mark))

    monkeypatch.setattr(PostgresStore, "_send", send)
    return sent


async def test_journal_appends_go_in_one_statement_and_read_back_exactly(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with PostgresStore(pg) as store:
        _join(pg, store)
        for i in range(4):
            await store.commit(Transaction().create_workflow(f"w{i}", "app:f"))
        sent = _sent(monkeypatch)
        tx = Transaction()
        for seq, name in enumerate(AWKWARD):
            tx.append_journal("w0", seq, "activity", name, {"name": name, "n": None},
                              attempts=seq + 1, time=1000.5 + seq)
        await store.commit(tx)
        assert sent == [["g_append_journal_many"]]
        got = store.journal("w0")
        assert [(r.seq, r.name, r.outcome, r.attempts) for r in got] == [
            (seq, name, {"name": name, "n": None}, seq + 1) for seq, name in enumerate(AWKWARD)]
        assert store.journal_entries("w0")[0][3][3] == {"name": AWKWARD[3], "n": None}

        # the steps of several workflows waiting at once: one transaction, one statement
        sent.clear()

        async def step(wid: str) -> None:
            await store.commit(Transaction().append_journal(wid, 0, "activity", wid + '"\\', 1))

        await _at_once(monkeypatch, step, [f"w{i}" for i in range(1, 4)])
        assert store.statistics().largest_batch == 3
        assert sent == [["g_append_journal_many"]]
        for i in range(1, 4):
            assert [(r.name, r.outcome) for r in store.journal(f"w{i}")] == [(f"w{i}" + '"\\', 1)]


def test_a_batch_sends_its_steps_in_one_insert_around_starts_and_finishes(pg: str) -> None:
    """The plans that only append to a journal go first, in one multi-row insert, even
    between the start and the finish of other workflows; a step of a workflow another
    plan of the batch writes for keeps its place (the journal of ``w3`` is truncated
    before its new row, as the batch's order says)."""
    with PostgresStore(pg) as store:
        for wid in ("w1", "w2", "w3", "w4"):
            store.write(Transaction().create_workflow(wid, "app:f"))
        store.write(Transaction().append_journal("w3", 0, "activity", "old"))
        txs = [Transaction().append_journal("w1", 0, "activity", "s"),
               Transaction().create_workflow("x", "app:f"),
               Transaction().append_journal("w2", 0, "activity", "s"),
               Transaction().truncate_journal("w3", 0),
               Transaction().append_journal("w3", 0, "activity", "new"),
               Transaction().update_workflow("w4", status="completed")]
        plans = [store._plan(tx) for tx in txs]
        composed = store._compose(plans)
        assert [c.stmt.name.decode() for c in composed.calls] == [
            "g_append_journal_many", "g_create_workflow", "g_truncate_journal",
            "g_append_journal", "g_update_status"]
        assert [len(spots) for spots in composed.spots] == [0, 1, 0, 0, 0, 0]
        store._commit_plans(plans)
        assert [p.error for p in plans] == [None] * 6
        assert plans[1].results == [True]
        assert [(r.seq, r.name) for r in store.journal("w3")] == [(0, "new")]
        assert [len(store.journal(w)) for w in ("w1", "w2", "x")] == [1, 1, 0]
        rec = store.get_workflow("w4")
        assert rec is not None and str(rec.status) == "completed"


async def test_a_batch_is_fenced_per_workflow(pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One workflow of a group-commit batch moved to another node: its step is refused
    with ``WorkflowMoved``, the others commit (the batch is written again with a
    SAVEPOINT per caller, each fenced first)."""
    with PostgresStore(pg) as store:
        _join(pg, store)
        for wid in "abcd":
            await store.commit(Transaction().create_workflow(wid, "app:f"))
        sql(pg, "UPDATE workflows SET owner_epoch = 2 WHERE workflow_id = 'c'")
        got: dict[str, Any] = {}

        async def step(wid: str) -> None:
            try:
                got[wid] = await store.commit(
                    Transaction().append_journal(wid, 0, "activity", "s", wid))
            except WorkflowMoved as exc:
                got[wid] = exc

        await _at_once(monkeypatch, step, "abcd")
        assert store.statistics().largest_batch == 4
        assert store.statistics().failed_batches == 1
        assert isinstance(got["c"], WorkflowMoved) and got["c"].workflow_id == "c"
        assert {w: got[w] for w in "abd"} == {w: [None] for w in "abd"}
        assert [len(store.journal(w)) for w in "abcd"] == [1, 1, 0, 1]


async def test_a_batch_s_fence_reads_its_workflows_by_key_however_the_table_grew(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence of a batch (``fence_many``, a PL/pgSQL function) finds its workflows by
    key. PostgreSQL plans its query once for the writer's session, when the workflows
    table is small (a new store): a sequential scan, which then read the whole table at
    every batch once it had grown (5,000 rows read per batch here; a node's first
    minutes, before the server analyzes the table again)."""
    wids = [f"w{i}" for i in range(8)]
    with PostgresStore(pg) as store:
        _join(pg, store)
        for wid in wids:
            await store.commit(Transaction().create_workflow(wid, "app:f"))

        async def steps(seq: int) -> None:
            async def step(wid: str) -> None:
                await store.commit(Transaction().append_journal(wid, seq, "activity", "s"))

            await _at_once(monkeypatch, step, wids)

        for seq in range(6):  # (the session keeps a generic plan after five runs)
            await steps(seq)
        grown = 5000
        sql(pg, "INSERT INTO workflows (workflow_id, name, status, created, updated) "
                "SELECT 'old-' || i, 'app:f', 'completed', 0, 0 FROM generate_series(1, ?) i",
            (grown,))
        for seq in range(6, 16):
            await steps(seq)
        assert store.statistics().batches >= 16
    inserted, read = workflows_table_counts(pg)  # (the writer's own counts included)
    assert inserted >= grown + len(wids)
    assert read < grown


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_a_lapsed_lease_refuses_every_write_of_the_node(pg: str, synchronous: str
                                                             ) -> None:
    """(At "full" a step is a statement of its own, fenced before its row: see
    test_a_full_step_of_a_cluster_node_is_fenced_without_the_writers_number.)"""
    with PostgresStore(pg, synchronous=synchronous) as store:
        _join(pg, store)
        await store.commit(Transaction().create_workflow("a", "app:f"))
        sql(pg, "UPDATE nodes SET lease_until = 0")
        with pytest.raises(WorkflowMoved, match="lease lapsed"):
            await store.commit(Transaction().create_workflow("b", "app:f"))
        with pytest.raises(WorkflowMoved, match="'a' is no longer this node incarnation's "
                           r"in the store \(its lease lapsed, or "):
            await store.commit(Transaction().append_journal("a", 0, "activity", "s"))
        assert store.get_workflow("b") is None and store.journal("a") == []


async def test_a_write_refused_after_the_node_itself_took_its_workflow_back_says_so(
        pg: str) -> None:
    """A lone node lost its lease and joined again under a new epoch, which claimed its
    workflow: a write of its old incarnation was refused as the workflow having
    "another owner in the store now (a node of the cluster claimed it)", though there
    is no other node. The message names this node's new incarnation as a claimer."""
    with PostgresStore(pg) as store:
        _join(pg, store)
        await store.commit(Transaction().create_workflow("a", "app:f"))
        sql(pg, "UPDATE nodes SET status = 'lost' WHERE epoch = 1")
        sql(pg, "INSERT INTO nodes (epoch, name, status, started, heartbeat, lease, "
                "lease_until) VALUES (2, 'n1', 'active', 0, 0, 3600, ?)",
            (time.time() + 3600,))
        sql(pg, "UPDATE workflows SET owner_epoch = 2 WHERE workflow_id = 'a'")
        with pytest.raises(WorkflowMoved) as info:
            await store.commit(Transaction().append_journal("a", 0, "activity", "s"))
        assert info.value.workflow_id == "a"
        assert "another owner" not in str(info.value)
        assert str(info.value).endswith(
            "workflow 'a' is no longer this node incarnation's in the store (its lease "
            "lapsed, or a node of the cluster claimed the workflow: another node, or this "
            "one after it joined the cluster again as a new incarnation): its write is "
            "refused"), str(info.value)


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_a_moved_workflow_is_refused_even_when_its_write_fails_too(
        pg: str, synchronous: str) -> None:
    """The fence and the write are one statement, evaluated in no set order: a journal
    row the new owner wrote meanwhile must not turn the refusal into a store failure."""
    with PostgresStore(pg, synchronous=synchronous) as store:
        _join(pg, store)
        await store.commit(Transaction().create_workflow("a", "app:f"))
        sql(pg, "UPDATE workflows SET owner_epoch = 2 WHERE workflow_id = 'a'")
        sql(pg, "INSERT INTO journal (workflow_id, seq, kind, name, outcome, attempts, time) "
                "VALUES ('a', 0, 'activity', 's', '1', 1, 0)")
        with pytest.raises(WorkflowMoved) as info:
            await store.commit(Transaction().append_journal("a", 0, "activity", "s", 2))
        assert info.value.workflow_id == "a"
        assert [r.outcome for r in store.journal("a")] == [1]


@pytest.mark.parametrize("lost", [None, "before-send", "after-commit"])
async def test_a_batch_is_written_in_the_node_thread_only_when_nothing_else_can_run(
        pg: str, monkeypatch: pytest.MonkeyPatch, lost: str | None) -> None:
    """A batch goes from the trio thread when no other task could run meanwhile (the
    hop to a worker thread and back would cost more); if its connection drops there,
    it is written again from a worker thread, which settles by the writer's number
    whether it had committed: nothing is lost or doubled."""
    from garrison.persistence import _postgres

    with PostgresStore(pg) as store:
        for i in range(3):
            await store.commit(Transaction().create_workflow(f"w{i}", "app:f"))
        real = PostgresStore._send
        where: list[str] = []

        def send(self: PostgresStore, conn: Any, composed: Any, mark: Any) -> Any:
            where.append("node thread" if trio.lowlevel.in_trio_run() else "worker thread")
            if lost is None or len(where) > 1:
                return (yield from real(self, conn, composed, mark))
            if lost == "after-commit":
                yield from real(self, conn, composed, mark)
            conn.close()
            raise pgstore._ConnectionLost("the network blinked")

        monkeypatch.setattr(PostgresStore, "_send", send)

        async def step(wid: str) -> None:
            assert await store.commit(
                Transaction().append_journal(wid, 0, "activity", "s", 1)) == [None]

        with monkeypatch.context() as patch:
            patch.setattr(_postgres, "runnable_tasks", lambda: 0)  # nothing else to run
            await _at_once(monkeypatch, step, ["w0", "w1", "w2"])
        # (after a commit whose answer was lost, the writer's number says it committed:
        # nothing is sent again)
        assert where == (["node thread", "worker thread"] if lost == "before-send"
                         else ["node thread"])
        assert [len(store.journal(f"w{i}")) for i in range(3)] == [1, 1, 1]
        assert store.statistics().transactions == 4

        # other tasks could run meanwhile: from a worker thread
        where.clear()
        lost = None
        with monkeypatch.context() as patch:
            patch.setattr(_postgres, "runnable_tasks", lambda: 1)
            await _at_once(monkeypatch, _create, [(store, "v0"), (store, "v1")])
        assert where == ["worker thread"]


async def test_a_commit_written_alone_that_goes_on_in_a_thread_is_timed(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit written alone that the server is slow to answer goes on in a worker
    thread: it is one group-commit transaction all the same, in the commit histograms
    once, timed to its end in that thread (it was missing: the slowest commits)."""
    from garrison import _observe
    from garrison.persistence import _postgres

    real, poll = _postgres.hand_over, pgstore._poll
    handed: list[int] = []

    def slow_hand_over(fn: Any) -> Any:
        handed.append(1)
        return real(lambda: (time.sleep(0.05), fn())[1])  # (the server's slow answer)

    def not_yet(wait: Any, timeout_ms: int) -> int:  # (a local server may answer at once)
        return 0 if trio.lowlevel.in_trio_run() else poll(wait, timeout_ms)

    monkeypatch.setattr(_observe, "timing", True)
    monkeypatch.setattr(pgstore, "TRIO_THREAD_WAIT", 0.0)  # any wait for the server
    monkeypatch.setattr(_postgres, "hand_over", slow_hand_over)
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        counts, before_sum = _observe.commit_seconds.cumulative()
        before = counts[-1][1]
        size_before = _observe.commit_batch_size.cumulative()[0][-1][1]
        with monkeypatch.context() as patch:
            patch.setattr(pgstore, "_poll", not_yet)
            for i in range(2):
                assert await store.commit(Transaction().set_state("w", f"k{i}", i)) == [None]
        counts, after_sum = _observe.commit_seconds.cumulative()
        assert handed == [1, 1]
        assert counts[-1][1] - before == 2
        assert _observe.commit_batch_size.cumulative()[0][-1][1] - size_before == 2
        assert after_sum - before_sum >= 0.1


class _Interrupt(BaseException):
    """An interrupt that is no Exception (as KeyboardInterrupt and SystemExit are)."""


@pytest.mark.parametrize("where", ["node thread", "handed over", "worker thread"])
async def test_an_interrupt_of_a_batch_goes_on_and_fails_every_caller(
        pg: str, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """An interrupt (no Exception: a KeyboardInterrupt, a SystemExit) while a batch is
    written, in the node's thread, in the worker thread it handed the write over to, or
    in a worker thread from the start, goes on from the batch's leader,
    once; every other caller gets a StoreError saying its write was interrupted. (It was
    given to every caller as its outcome, and swallowed by the store.) Whether the write
    committed is unknown: the store writes nothing more, and lets go of its lock."""
    from garrison.persistence import _postgres

    def run(self: PostgresStore, conn: Any, plans: Any, n: int, bare: bool = False) -> Any:
        if where == "handed over":
            yield pgstore._BLOCK  # (the node's thread hands the write over here)
            assert not trio.lowlevel.in_trio_run()
        raise _Interrupt
        yield  # (a resumable write)

    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        monkeypatch.setattr(PostgresStore, "_run", run)
        monkeypatch.setattr(_postgres, "runnable_tasks",
                            lambda: 1 if where == "worker thread" else 0)
        got: list[BaseException | list[Any]] = []

        async def commit(i: int) -> None:
            try:
                got.append(await store.commit(Transaction().set_state("w", f"k{i}", i)))
            except BaseException as exc:  # (the interrupt too: what each caller got)
                got.append(exc)

        with trio.fail_after(30):  # (a caller left waiting would hang here)
            await _at_once(monkeypatch, commit, range(3))
        assert [type(e) for e in got].count(_Interrupt) == 1, got
        others = [e for e in got if not isinstance(e, _Interrupt)]
        assert len(others) == 2 and all(isinstance(e, StoreError) for e in others), got
        assert all("interrupted (_Interrupt)" in str(e) for e in others), others
        assert store.failed is not None and "interrupted" in str(store.failed)
        assert store._write_lock.acquire(blocking=False)
        store._write_lock.release()
    assert sql(pg, "SELECT key FROM state") == []


def test_an_interrupt_while_a_write_waits_for_the_server_lets_go_of_the_connection(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt while a write waits for the server's answer (in its driver,
    not in the write): the write is abandoned there and then, letting go of the write
    lock. It kept it until the exception was gone, and ``close`` (a ``with`` block's
    end, while the KeyboardInterrupt went on) waited for it forever."""
    real = pgstore._poll
    polls: list[int] = []

    def poll(wait: Any, timeout_ms: int) -> int:
        if not polls:
            polls.append(1)
            raise KeyboardInterrupt
        return real(wait, timeout_ms)

    store = PostgresStore(pg)
    store.write(Transaction().create_workflow("w", "app:f"))
    monkeypatch.setattr(pgstore, "_poll", poll)
    with pytest.raises(KeyboardInterrupt) as info:
        store.write(Transaction().set_state("w", "k", 1).set_state("w", "j", 2))
    closing = threading.Thread(target=store.close, daemon=True)
    closing.start()
    closing.join(10)
    alive = closing.is_alive()
    del info  # (its traceback holds the write: a close still waiting ends now)
    closing.join(10)
    assert polls and not alive
    assert store.failed is not None and "abandoned" in str(store.failed)


async def _create(args: tuple[PostgresStore, str]) -> None:
    store, wid = args
    await store.commit(Transaction().create_workflow(wid, "app:f"))


# ------------------------------------------------------------------ wakeups
async def test_a_tool_write_wakes_the_node_without_polling(pg: str) -> None:
    with PostgresStore(pg) as node_store:
        node_store.write(Transaction().create_workflow("w", "app:f"))
        got: list[Any] = []

        async def waiter() -> None:
            got.extend(await node_store.wakeups())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            while node_store._listener is None:
                await trio.sleep(0.001)
            await trio.sleep(0.05)
            assert got == []  # nothing written: still waiting
            t0 = time.monotonic()
            with PostgresStore(pg, lock=False) as tool:
                tool.deliver("w", "hello", 1)
            with trio.fail_after(5):
                while not got:
                    await trio.sleep(0.001)
            assert time.monotonic() - t0 < 1
        assert [(w.workflow_id, w.kind) for w in got] == [("w", "tool")]
        # the listener's connection dies: what is written meanwhile is not missed
        terminate(pg, "garrison node%")
        with PostgresStore(pg, lock=False) as tool:
            tool.request_cancel("w")
        with trio.fail_after(10):
            again = await node_store.wakeups()
        assert [w.workflow_id for w in again] == ["w"]


def test_psycopg_errors_of_the_cli_are_one_line(pg: str) -> None:
    with PostgresStore(pg):
        pass
    done = subprocess.run(
        [sys.executable, "-m", "garrison", "workflows", "--store",
         pg.replace("?schema=", "?schema=missing_"), "list"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no garrison store here" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    with psycopg.connect(pg.partition("?")[0]) as conn:  # the server is up
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_schema_made_for_a_role_without_create_on_the_database_is_used(
        postgres_url: str) -> None:
    """helper-384: a DBA's usual set-up for a role that may not create schemas (no
    CREATE on the database: PostgreSQL 15's default for a database it does not own) is
    a schema made for it; the node's CREATE SCHEMA IF NOT EXISTS still needed CREATE
    on the database (``permission denied for database``). A schema that exists is used;
    one that does not is still the error naming the right needed."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS garrison_tenant")
        conn.execute("CREATE ROLE garrison_tenant LOGIN")
        conn.execute("CREATE SCHEMA tenant AUTHORIZATION garrison_tenant")
    tenant = postgres_url.replace("postgres@", "garrison_tenant@")
    with PostgresStore(tenant + "?schema=tenant") as store:  # a node made the store there
        assert store.list_workflows() == []
    with pytest.raises(StoreError, match=r"cannot create schema 'garrison': permission "
                                         r"denied for database"):
        PostgresStore(tenant)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA tenant CASCADE")
        conn.execute("DROP ROLE garrison_tenant")


def test_a_schema_that_is_not_garrisons_or_out_of_reach_is_named(
        postgres_server: Any, postgres_url: str) -> None:
    """A schema holding another application's tables failed with a bare
    ``psycopg.errors.DuplicateTable`` (``relation "workflows" already exists``), and a
    role without access to an existing store's schema with a bare
    ``InsufficientPrivilege`` (a tool) or a ``cannot create the schema`` it never tried
    (a node): each is a ``StoreError`` naming the store, the schema and the reason."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA theirs")
        conn.execute("CREATE TABLE theirs.workflows (x int)")
        conn.execute("DROP ROLE IF EXISTS garrison_outsider")
        conn.execute("CREATE ROLE garrison_outsider LOGIN")
    with pytest.raises(StoreError) as info:
        PostgresStore(postgres_url + "?schema=theirs")
    message = str(info.value)
    assert "?schema=theirs" in message and "schema 'theirs' already holds" in message
    assert "(tables workflows)" in message
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # tables of other names
        conn.execute("CREATE TABLE public.orders (x int)")
    with pytest.raises(StoreError, match=r"schema 'public' already holds objects that are "
                                         r"not garrison's \(tables orders\)"):
        PostgresStore(postgres_url + "?schema=public")
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # nothing was made there
        assert conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchall() == [("orders",)]
    # a table by garrison's name that is another application's (Flyway 4's, versions as
    # text): its max(version) '2' was taken for garrison's (a node: relation workflows
    # does not exist; a tool: migrate it with a node; '12': written by a newer garrison)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA flyway")
        conn.execute("CREATE TABLE flyway.schema_version (installed_rank int, "
                     "version varchar(50), description varchar(200))")
        conn.execute("INSERT INTO flyway.schema_version VALUES (1, '2', 'a'), (2, '12', 'b')")
    for lock in (True, False):
        with pytest.raises(StoreError, match=r"schema 'flyway' holds a table schema_version "
                           r"that is not garrison's \(its columns: description character "
                           r"varying\(200\), installed_rank integer, version character "
                           r"varying\(50\); .*give the store a schema of its own"):
            PostgresStore(postgres_url + "?schema=flyway", lock=lock)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # nothing was made there
        assert conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'flyway'"
                            ).fetchall() == [("schema_version",)]

    with PostgresStore(postgres_url):  # a node made the store in schema garrison
        pass
    outsider = postgres_url.replace("postgres@", "garrison_outsider@")
    for lock in (False, True):
        with pytest.raises(StoreError) as info:
            PostgresStore(outsider, lock=lock)
        message = str(info.value)
        assert "garrison_outsider@" in message, message
        assert "cannot read schema 'garrison': permission denied for schema garrison" in (
            message), message


def test_a_write_waiting_on_the_server_lets_the_other_threads_run(pg: str) -> None:
    """A transaction of several statements is sent as one pipeline, whose results were
    read with libpq's blocking ``PQgetResult``: psycopg holds the GIL in it, so while
    the server had not answered (a row lock, a slow fsync, the network) every thread of
    the process stood still: the node's event loop, and its membership thread, whose
    lease then lapsed. The wait for the answer releases the GIL now."""
    base, _, schema = pg.partition("?schema=")
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("w", "app:f"))
        holder = psycopg.connect(base)
        # (a safety net: with the GIL held this thread could never end the wait itself)
        holder.execute("SET idle_in_transaction_session_timeout = '5s'")
        holder.execute(f'SELECT 1 FROM "{schema}".workflows WHERE workflow_id = %s FOR UPDATE',
                       ("w",))
        errors: list[BaseException] = []

        def write() -> None:
            try:  # two statements: a pipeline; the update waits for the row lock
                store.write(Transaction().update_workflow("w", status="waiting", time=1.0)
                            .set_state("w", "k", 1, time=1.0))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        blocked = False
        with psycopg.connect(base, autocommit=True) as watch:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not blocked:
                blocked = bool(watch.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (holder.info.backend_pid,)).fetchall())
                time.sleep(0.01)
        try:
            assert blocked, "this thread stood still while the write waited for the server"
            holder.commit()  # this thread ends the wait
        finally:
            writer.join(10)
            holder.close()
        assert errors == []
        assert store.get_state("w", "k") == 1
        assert store.get_workflow("w").status == "waiting"


def test_a_dedup_key_taken_by_a_concurrent_start_is_dedup_key_taken(pg: str) -> None:
    """Two starts with one dedup key committing at once (two nodes): the second one's
    check saw no holder yet, and its insert hit the unique index when the first
    committed: a bare ``psycopg.errors.UniqueViolation`` reached ``start_workflow``,
    which only turns ``DedupKeyTaken`` into the holder's pid. It is ``DedupKeyTaken``
    naming the holder, as when the holder had committed before."""
    from garrison.persistence import DedupKeyTaken

    base, _, schema = pg.partition("?schema=")
    with PostgresStore(pg) as store:
        holder = psycopg.connect(base)  # the other node's start, not committed yet
        holder.execute(f'INSERT INTO "{schema}".workflows (workflow_id, name, status, run_id, '
                       "created, updated) VALUES ('w1', 'app:f', 'pending', 'r1', 0, 0)")
        holder.execute(f"SELECT \"{schema}\".enqueue('w1', 'r1', 0, 'k', 0)")
        errors: list[BaseException] = []

        def start() -> None:
            try:
                store.write(Transaction().create_workflow("w2", "app:f", status="pending",
                                                          run_id="r2")
                            .enqueue("w2", "r2", dedup="k", time=1.0))
            except BaseException as exc:
                errors.append(exc)

        starter = threading.Thread(target=start)
        starter.start()
        try:
            with psycopg.connect(base, autocommit=True) as watch:
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not watch.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                        (holder.info.backend_pid,)).fetchall():
                    time.sleep(0.01)
            holder.commit()
        finally:
            starter.join(10)
            holder.close()
        assert len(errors) == 1 and isinstance(errors[0], DedupKeyTaken), errors
        assert errors[0].workflow_id == "w1" and errors[0].dedup == "k"
        assert store.get_workflow("w2") is None  # nothing of that start was written


def _blocked(watch: psycopg.Connection[Any], n: int, done: Any = lambda: False) -> bool:
    """True once ``n`` backends of the server wait for a lock (False after 5 s, or once
    ``done()``: a writer that was to wait did not)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = watch.execute("SELECT count(*) FROM pg_stat_activity "
                             "WHERE cardinality(pg_blocking_pids(pid)) > 0").fetchall()
        if rows[0][0] >= n:
            return True
        if done():
            return False
        time.sleep(0.01)
    return False


def test_a_settled_read_is_busy_while_an_end_is_being_committed(pg: str) -> None:
    """A workflow on another node began to monitor one that was ending: the end's write
    read the store's monitors (``deliver_to_monitors``) before the monitor was committed,
    and the monitor's maker, reading the workflow after its commit, found it not yet
    ended: nobody delivered the EXIT. The maker's read (``get_workflow_settled``) is
    ``Busy`` while the end's transaction is open (the maker asks again), and finds the
    workflow ended once it has committed."""
    from garrison.persistence import Busy

    base, _, schema = pg.partition("?schema=")
    me = garrison.Pid("workflows", "t")
    with PostgresStore(pg) as store, PostgresStore(pg, lock=False) as other:
        for wid in ("t", "w", "x"):
            store.write(Transaction().create_workflow(wid, "app:f", status="running"))
        holder = psycopg.connect(base)  # holds the end's transaction open
        holder.execute("SET idle_in_transaction_session_timeout = '10s'")
        holder.execute(f'SELECT 1 FROM "{schema}".workflows WHERE workflow_id = %s FOR UPDATE',
                       ("x",))
        outcome: list[Any] = []

        def end() -> None:
            # its row updated, the monitors read (none yet), then a write the holder's
            # lock stops before the commit
            try:
                outcome.append(store.write(
                    Transaction().update_workflow("t", status="completed", time=2.0)
                    .deliver_to_monitors("t", "EXIT", None, host="workflows",
                                         msg_id_prefix="t#exit@", sender=me, time=2.0)
                    .update_workflow("x", status="waiting", time=2.0)))
            except BaseException as exc:  # pragma: no cover - reported below
                outcome.append(exc)

        ender = threading.Thread(target=end)
        try:
            with psycopg.connect(base, autocommit=True) as watch:
                ender.start()
                assert _blocked(watch, 1, lambda: bool(outcome))
            other.write(Transaction().add_monitor("t", "workflows/w"))  # committed now
            assert other.get_workflow("t").status == "running"  # the plain read: not ended
            with pytest.raises(Busy):
                other.get_workflow_settled("t")
            holder.commit()
        finally:
            ender.join(10)
            holder.close()
        assert outcome == [[None, [], None]]  # the monitor came after its read
        assert other.get_workflow_settled("t").status == "completed"


def test_monitors_delivered_to_are_read_back_exactly_after_a_lost_answer(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An end's transaction committed and its answer was lost: the results read back
    for ``deliver_to_monitors`` also listed the watcher the same transaction had
    delivered to itself (same message id), and the node gave that watcher the EXIT
    twice (its second consume failed it: 'not a pending message')."""
    me = garrison.Pid("workflows", "t")
    with PostgresStore(pg) as store:
        for wid in ("t", "w", "v"):
            store.write(Transaction().create_workflow(wid, "app:f", status="running"))
        store.write(Transaction().add_monitor("t", "workflows/w"))
        store.write(Transaction().add_monitor("t", "workflows/v"))
        _lose_answer(store, monkeypatch, after=True)
        results = store.write(
            Transaction().update_workflow("t", status="completed", time=2.0)
            .deliver("w", "EXIT", None, msg_id="t#exit@w", sender=me, kind="event", time=2.0)
            .deliver_to_monitors("t", "EXIT", None, host="workflows", msg_id_prefix="t#exit@",
                                 sender=me, time=2.0))
        row_w = store.inbox_message("t#exit@w")
        row_v = store.inbox_message("t#exit@v")
        assert row_w is not None and row_v is not None
        assert results == [None, row_w.id, [("v", row_v.id)]]
        assert store.statistics().transactions == 6  # (written once)


def test_a_retry_that_kept_its_admission_is_read_back_admitted_after_a_lost_answer(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An admission with a rate committed and its answer was lost: what it admitted is
    read back by the time it wrote, but a retry admitted inside the rate's period
    keeps its earlier admission's time: it is read back as admitted too."""
    with PostgresStore(pg) as store:
        store.write(Transaction().create_workflow("p0", "app:f", status="pending",
                                                  run_id="r", host="h")
                    .create_workflow("p1", "app:f", status="pending", run_id="r", host="h"))
        assert store.write(Transaction().admit("h", [("p0", "r")], rate=(3, 60.0),
                                               time=100.0)) == [["p0"]]
        store.write(Transaction().update_workflow("p0", status="pending", attempt=2))
        _lose_answer(store, monkeypatch, after=True)
        assert store.write(Transaction().admit("h", [("p0", "r"), ("p1", "r")],
                                               rate=(3, 60.0), time=130.0)) == [["p0", "p1"]]
        assert store.admitted_since("h", 0.0) == [100.0, 130.0]


def test_a_node_lock_held_alone_is_store_locked_not_a_wait_without_end(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node of a garrison from before clusters holds the schema's node lock by itself
    while it runs: a node of this version opening the store waited for it, silently,
    until that node stopped. It is StoreLocked after a while; a lock held only for a
    moment (a tool telling whether a node runs) is waited for."""
    from garrison import StoreLocked
    from garrison.persistence import _postgres as pg_module
    from garrison.persistence._pg_schema import node_lock_key

    PostgresStore(pg).close()  # (the schema, made by a node)
    schema = PostgresStore(pg, lock=False)
    key = node_lock_key(schema.schema)
    schema.close()
    monkeypatch.setattr(pg_module, "NODE_LOCK_WAIT", 0.5)
    with psycopg.connect(pg.partition("?")[0], autocommit=True) as old:
        old.execute("SELECT pg_advisory_lock(%s)", (key,))
        with pytest.raises(StoreLocked, match="from before clusters"):
            PostgresStore(pg)
        timer = threading.Timer(0.2, lambda: old.execute("SELECT pg_advisory_unlock(%s)",
                                                         (key,)))
        timer.start()
        try:
            PostgresStore(pg).close()  # held for a moment: waited for
        finally:
            timer.join()


@contextlib.contextmanager
def _sessions_ended_while_waiting(pg: str, lock: int, which: str) -> Iterator[list[int]]:
    """Hold the advisory ``lock`` (another node's migration or join) while a thread
    ends (``pg_terminate_backend``, as a server restart does) the node's sessions that
    ``which`` (SQL on ``pg_stat_activity``; each ``?`` in it the node's sessions'
    ``application_name`` pattern) selects, once there are any, then lets the
    lock go; yields the list of those ended."""
    ended: list[int] = []

    def end_them() -> None:
        try:
            deadline = time.monotonic() + 10
            while not ended and time.monotonic() < deadline:
                ended.extend(row[0] for row in sql(pg, (
                    "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity WHERE "
                    f"application_name LIKE ? AND {which}"),
                    ("garrison node%",) * (1 + which.count("?"))))
                time.sleep(0.01)
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (lock,))

    with psycopg.connect(pg.partition("?")[0], autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock,))
        ender = threading.Thread(target=end_them)
        ender.start()
        try:
            yield ended
        finally:
            ender.join()


def test_a_connection_lost_as_a_node_opens_the_store_is_made_again(pg: str) -> None:
    """The node's session ended (``pg_terminate_backend``, as a server restart ends it)
    while its migration waited for another's lock: the open failed at once, ``cannot set
    up schema ...: terminating connection due to administrator command``, where a lost
    connection is made again for ``retry_for``, as the running store's is."""
    from garrison.persistence._pg_schema import _lock_key

    schema = pg.rpartition("schema=")[2]
    with _sessions_ended_while_waiting(pg, _lock_key(schema),
                                       "wait_event = 'advisory'") as ended:
        store = PostgresStore(pg, retry_for=10)
    assert ended == [1]
    with store:  # (opened on the new session: the schema made, the store usable)
        store.write(Transaction().create_workflow("w1", "app:flow", []))
        assert store.get_workflow("w1") is not None


async def test_a_connection_lost_as_a_node_joins_its_cluster_is_made_again(pg: str) -> None:
    """The node's sessions ended (``pg_terminate_backend`` of each, as a server restart
    ends them) while its join of the cluster waited for another node's: the node's start
    failed at once, ``the server refused the write: terminating connection due to
    administrator command`` (its writer's, ``cannot join the cluster: ...``), where a
    lost connection is made again for ``retry_for``, as at the store's open."""
    from garrison.persistence._pg_cluster import _join_lock

    PostgresStore(pg).close()  # (the schema: the open waits for nothing)
    schema = pg.rpartition("schema=")[2]
    # (each session of the node, once one of them waits on the lock)
    with _sessions_ended_while_waiting(
            pg, _join_lock(schema), "EXISTS (SELECT FROM pg_stat_activity WHERE "
            "application_name LIKE ? AND wait_event = 'advisory')") as ended:
        async with garrison.open_node(store=pg, name="a") as node:
            assert [n.name for n in node.cluster()] == ["a"]
            await node.start_workflow(app.child, 1, id="w1")
            assert await node.workflow("w1").result() == 2  # (the store usable)
    assert len(ended) >= 2  # (the join's session and the writer's, at least)
    assert sql(pg, "SELECT name, status FROM nodes") == [("a", "left")]


def test_a_lost_connection_not_made_again_within_retry_for_fails_the_join(
        pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the loss, a server that takes no connection is waited for until
    ``retry_for`` has passed; then the join fails naming the loss and the last refusal."""
    with PostgresStore(pg, retry_for=0.3) as store:
        joins: list[int] = []

        def join() -> None:
            joins.append(1)
            raise psycopg.errors.AdminShutdown("terminating connection due to administrator "
                                               "command")

        def refused(what: str | None, **_: Any) -> None:
            raise StoreError(store.path, "cannot connect: connection refused")

        monkeypatch.setattr(store, "_connect", refused)
        began = time.monotonic()
        with pytest.raises(StoreError, match=(
                r"the connection was lost \(terminating connection due to administrator "
                r"command\) and could not be made again within 0.3s: cannot connect: "
                r"connection refused$")):
            store.retried(join)
        assert time.monotonic() - began >= 0.3 and joins == [1]


def test_libpq_s_socket_url_form_and_ipv6_hosts_in_messages(postgres_server: Any) -> None:
    """``postgresql:///dbname?host=/socket/dir&port=N`` (libpq's standard form for a
    Unix-domain socket, an empty host) opens the store (urlunsplit made it
    ``postgresql:/dbname``, which libpq refused); a message names it in that form, its
    password masked, and an IPv6 host keeps its brackets."""
    server = postgres_server
    url = (f"postgresql:///postgres?host={server.sockdir}&port={server.port}"
           "&user=postgres&schema=sock_form")
    store = PostgresStore(url)
    try:
        assert store.path == (f"postgresql://postgres@/postgres?host={server.sockdir}"
                              f"&port={server.port}&schema=sock_form")
        store.write(Transaction().create_workflow("w1", "app:flow", []))
        assert store.get_workflow("w1") is not None
    finally:
        store.close()
    with pytest.raises(StoreError) as info:  # (a database that does not exist)
        PostgresStore(f"postgresql://:s3cret-pw@/no_such_db?host={server.sockdir}"
                      f"&port={server.port}&user=postgres")
    assert "s3cret-pw" not in str(info.value)
    assert f"postgresql://postgres@/no_such_db?host={server.sockdir}" in str(info.value)
    with socket_closed_port() as port, pytest.raises(StoreError) as info:
        PostgresStore(f"postgresql://ann:s3cret-pw@[::1]:{port}/db")
    assert f"postgresql://ann@[::1]:{port}/db" in str(info.value)
    assert "s3cret-pw" not in str(info.value)


def test_a_url_of_several_hosts_is_shown_with_each_host_s_port() -> None:
    """libpq's ``host1:port1,host2:port2`` was shown as ``host1,host2:port1,port2``."""
    with socket_closed_port() as p1, socket_closed_port() as p2:
        for url, shown in (
                (f"postgresql://ann:pw@127.0.0.1:{p1},[::1]:{p2}/db",
                 f"postgresql://ann@127.0.0.1:{p1},[::1]:{p2}/db"),
                (f"postgresql://ann@127.0.0.1,localhost/db?port={p2}",  # (one for all)
                 f"postgresql://ann@127.0.0.1:{p2},localhost:{p2}/db")):
            with pytest.raises(StoreError) as info:
                PostgresStore(url, retry_for=0)
            assert shown in str(info.value), str(info.value)


def test_libpq_s_multi_host_url_opens_the_store(postgres_server: Any) -> None:
    """``postgresql://user@host1:port1,host2:port2/db?target_session_attrs=read-write``
    (libpq's failover setup) was refused as a URL whose port is no number
    (``5432,127.0.0.1:5433``): the store opens on the host that answers, messages
    name every host without the password, and a port that is no number, of any host,
    is refused naming it."""
    server = postgres_server
    with socket_closed_port() as closed:
        url = (f"postgresql://postgres:s3cret-pw@127.0.0.1:{closed},127.0.0.1:{server.port}"
               "/postgres?target_session_attrs=read-write&schema=multi_host")
        with PostgresStore(url) as store:
            assert store.path == (f"postgresql://postgres@127.0.0.1:{closed},"
                                  f"127.0.0.1:{server.port}/postgres?schema=multi_host")
            store.write(Transaction().create_workflow("w1", "app:flow", []))
            assert store.get_workflow("w1") is not None
        with pytest.raises(StoreError) as info:  # (a database that does not exist)
            PostgresStore(url.replace("/postgres?", "/no_such_db?"), retry_for=0)
        assert "s3cret-pw" not in str(info.value)
        assert (f"postgresql://postgres@127.0.0.1:{closed},127.0.0.1:{server.port}"
                "/no_such_db") in str(info.value)
    with pytest.raises(StoreError, match=r"^store 'postgresql://postgres@127.0.0.1:5432,"
                       r"127.0.0.1:x/postgres': invalid PostgreSQL URL 'postgresql://"
                       r"postgres@127.0.0.1:5432,127.0.0.1:x/postgres': Port could not be "
                       r"cast to integer value as 'x'$"):
        PostgresStore("postgresql://postgres:s3cret-pw@127.0.0.1:5432,127.0.0.1:x/postgres")
