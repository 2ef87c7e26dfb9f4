"""The PostgreSQL store on a server set up as teams deploy it: settings a DBA puts on
the database or the role (``idle_session_timeout`` and the like), which the store's
sessions meet on every connection.

Real network I/O and real server timeouts: real clock, waits of a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pg_fault_app as app
import psycopg
import pytest
import trio

import garrison
from garrison import _store_tools
from garrison.persistence import PostgresStore, _pg_schema, _postgres

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.postgres


def _set_on_database(url: str, **settings: str) -> None:
    """``ALTER DATABASE <url's database> SET name = value`` (what a DBA does): every
    session opened on it afterwards starts with those settings."""
    dbname = url.rsplit("/", 1)[1].split("?", 1)[0]
    with psycopg.connect(url, autocommit=True) as c:
        for name, value in settings.items():
            c.execute(f'ALTER DATABASE "{dbname}" SET {name} = {value}')


async def test_a_node_idle_past_the_servers_idle_session_timeout_keeps_its_sessions(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A DBA's ``idle_session_timeout`` (here 1 s, 60 s in practice) ended the sessions
    of a node that had nothing to write for that long: its writer's, which holds the
    locks that say the node runs, so that a tool (``garrison workflows terminate``,
    ``cancel``) took the store for one no node holds and acted in it itself under the
    node running the workflow; and its cluster connection's, between two rounds, said
    as a warning each time. A node's sessions are meant to be idle: they keep open."""
    _set_on_database(postgres_url, idle_session_timeout="'1s'")
    caplog.set_level(logging.INFO)
    async with garrison.open_node(store=postgres_url, name="a") as node:
        await node.start_workflow(app.receiver, 1, id="r")
        await trio.sleep(2.5)  # (real time: past the server's timeout)
        with PostgresStore(postgres_url, lock=False) as tool:
            assert tool.node_running()
        # a tool's message, woken by the node's LISTEN session (idle until now)
        done = await trio.to_thread.run_sync(partial(
            subprocess.run, [sys.executable, "-m", "garrison", "workflows", "--store",
                             postgres_url, "signal", "r", "t", '"hi"'],
            capture_output=True, text=True, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}))
        assert done.returncode == 0, done.stderr
        with trio.fail_after(10):
            assert await node.workflow("r").result() == ["hi"]
    lost = [r.getMessage() for r in caplog.records if "connection is lost" in r.getMessage()]
    assert not lost, lost


async def test_a_node_past_the_servers_connection_limit_says_how_many_it_needs(
        postgres_url: str) -> None:
    """A server (or a role, or a database) whose connection limit a node's sessions
    go past refused the node's open with the server's words alone ('too many
    connections for role ...'), nothing of how many a node holds: it says so."""
    with PostgresStore(postgres_url):
        pass  # the schema exists
    role = "garrison_test_limited"
    dbname = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"DROP ROLE IF EXISTS {role}")
        c.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 5")
        c.execute(f'GRANT CONNECT, CREATE ON DATABASE "{dbname}" TO {role}')
        c.execute(f"GRANT USAGE ON SCHEMA garrison TO {role}")
        c.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA garrison "
                  f"TO {role}")
        c.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA garrison TO {role}")
    url = postgres_url.replace("postgres@", f"{role}@", 1)
    try:
        async with garrison.open_node(store=url, name="a"):
            with pytest.raises(garrison.StoreError) as info:
                async with garrison.open_node(store=url, name="b"):
                    pass
            message = str(info.value)
            assert f'too many connections for role "{role}"' in message, message
            assert "a node holds 5 sessions" in message, message
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")


@contextlib.contextmanager
def _role(postgres_url: str, role: str, limit: int = -1) -> Iterator[str]:
    """A role that may use the store's tables (made in the block, its ``CONNECTION
    LIMIT`` ``limit``, -1: none), as a DBA makes a node's: a URL that logs in as it."""
    with PostgresStore(postgres_url):
        pass  # the schema exists
    dbname = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"DROP ROLE IF EXISTS {role}")
        c.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {limit}")
        c.execute(f'GRANT CONNECT, CREATE ON DATABASE "{dbname}" TO {role}')
        c.execute(f"GRANT USAGE ON SCHEMA garrison TO {role}")
        c.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA garrison "
                  f"TO {role}")
        c.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA garrison TO {role}")
    try:
        yield postgres_url.replace("postgres@", f"{role}@", 1)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")


async def test_a_node_that_may_not_take_the_wakeups_runs_on_and_takes_them_once_it_may(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A take of the wakeups that failed (the node's role lost its grant on the table: a
    DBA's ``REVOKE``; or the server away past ``retry_for``) raised out of the nursery
    of the take's thread wrapped in an ``ExceptionGroup``, which ``wakeups()`` does not
    catch: the node stopped with the store's error rather than take them again. It
    runs on, and the signal a tool wrote meanwhile reaches its workflow once the grant
    is back. And it says so: the takes failed, tried again every 2 s for ever, without
    a word while tools' writes woke none of its workflows. The first failure is a
    warning naming the store and the server's error (not one a try); once a take works
    again, one line says so."""
    failed: list[garrison.StoreError] = []
    plain = PostgresStore.take_wakeups

    def counted(store: PostgresStore) -> list[Any]:
        try:
            return plain(store)
        except garrison.StoreError as exc:
            failed.append(exc)
            raise

    monkeypatch.setattr(PostgresStore, "take_wakeups", counted)
    caplog.set_level(logging.INFO, logger="garrison.store")

    def said(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == level and "the wakeups that tools leave" in r.getMessage()]

    role = "garrison_test_taker"
    with _role(postgres_url, role) as url:
        async with garrison.open_node(store=url, name="a") as node:
            await node.start_workflow(app.receiver, 1, id="r")
            with psycopg.connect(postgres_url, autocommit=True) as c:
                c.execute(f"REVOKE SELECT, DELETE ON garrison.wakeups FROM {role}")
            with PostgresStore(postgres_url, lock=False) as tool:  # (wakes the node)
                _store_tools.signal(tool, "r", "t", "hi")
            with trio.fail_after(20):  # (three takes failed: 0.05 s, 0.1 s, 0.2 s apart)
                while len(failed) < 3:
                    await trio.sleep(0.05)
            assert "permission denied for table wakeups" in str(failed[0]), failed
            store = node.hosts["workflows"].store
            warned = said(logging.WARNING)
            assert len(warned) == 1, warned
            assert warned[0].startswith(
                f"store {store.path!r}: cannot take the wakeups that tools leave (a "
                "signal, a cancel, a start of theirs wakes none of this node's workflows "
                "meanwhile): permission denied for table wakeups; tried again every "
                "2s"), warned
            assert not said(logging.INFO)
            with psycopg.connect(postgres_url, autocommit=True) as c:
                c.execute(f"GRANT SELECT, DELETE ON garrison.wakeups TO {role}")
            with trio.fail_after(20):
                assert await node.workflow("r").result() == ["hi"]
            again = said(logging.INFO)
            assert len(again) == 1, again
            assert again[0].startswith(
                f"store {store.path!r}: the wakeups that tools leave are taken again, "
                f"after {len(failed)} failed takes in "), again
    assert len(said(logging.WARNING)) == 1


def test_a_failure_to_take_the_wakeups_is_said_at_first_on_a_change_and_each_minute(
        ) -> None:
    """(the rule of the test above) A failure that lasts is said at its first try, at
    a try whose error's text changed, and a minute after it was last said; not at the
    others. Once a take works, its end is said once (how many tries failed, since
    when); a later failure is said again at once."""
    said = _postgres._Repeated(every=60.0)
    assert said.failed("denied", now=100.0)
    assert not said.failed("denied", now=102.0)
    assert not said.failed("denied", now=159.0)
    assert said.failed("refused", now=160.0)  # (another error)
    assert not said.failed("refused", now=161.0)
    assert said.failed("refused", now=220.5)  # (a minute after it was said)
    assert said.ended(now=230.0) == (6, 130.0)
    assert said.ended(now=231.0) is None  # (said once)
    assert said.failed("refused", now=232.0)


def test_a_migration_longer_than_the_servers_statement_timeout_completes(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DBA's ``statement_timeout`` (30 s, say) cancelled a migration's statement that
    takes longer, an index built again on a large workflows table, at every try, so a
    node of the new release could not open the store at all (``tried again for ...``).
    A migration runs once, under its own lock: its statements are not timed out.
    (The migration's last step waits here 1.5 s, past the database's 0.5 s.)"""
    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:-1])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", len(_pg_schema.MIGRATIONS))
    with PostgresStore(postgres_url):
        pass  # the store, one version behind
    monkeypatch.undo()
    last = _pg_schema.MIGRATIONS[-1]

    def slow(cur: Any, s: Any) -> None:
        cur.execute("SELECT pg_sleep(1.5)")
        last(cur, s)

    monkeypatch.setattr(_pg_schema, "MIGRATIONS", [*_pg_schema.MIGRATIONS[:-1], slow])
    _set_on_database(postgres_url, statement_timeout="'500ms'")
    with PostgresStore(postgres_url, retry_for=2) as store:
        assert store.list_workflows() == []
    with psycopg.connect(postgres_url) as c:
        assert c.execute("SELECT max(version) FROM garrison.schema_version").fetchone() == (
            _pg_schema.SCHEMA_VERSION,)
        assert c.execute("SHOW statement_timeout").fetchone() == ("500ms",)


def test_a_url_that_leaves_its_server_to_pg_variables_is_named_by_them(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare ``postgresql://`` with libpq's PGHOST, PGPORT, PGUSER and PGDATABASE set
    (as a container's environment does) connected, but every message named the store
    ``postgresql:///``: which server refused, or which database was missing, was not
    said. The name says what libpq used (the URL's own parts first, as libpq takes
    them), never the password (PGPASSWORD)."""
    server = urllib.parse.urlsplit(postgres_url)
    monkeypatch.setenv("PGHOST", str(server.hostname))
    monkeypatch.setenv("PGPORT", str(server.port))
    monkeypatch.setenv("PGUSER", "postgres")
    monkeypatch.setenv("PGPASSWORD", "s3cret-pw")
    monkeypatch.setenv("PGDATABASE", "no_such_db")
    with pytest.raises(garrison.StoreError) as info:
        PostgresStore("postgresql://")
    message = str(info.value)
    assert message.startswith(
        f"store 'postgresql://postgres@{server.hostname}:{server.port}/no_such_db': "
        "cannot connect: "), message
    assert "s3cret-pw" not in message
    dbname = server.path.strip("/")
    with PostgresStore(f"postgresql:///{dbname}?schema=env") as store:
        assert store.path == (f"postgresql://postgres@{server.hostname}:{server.port}/"
                              f"{dbname}?schema=env")
    monkeypatch.setenv("PGHOST", "/var/run/no-such-dir")
    with pytest.raises(garrison.StoreError) as info:
        PostgresStore(f"postgresql://app2@/{dbname}")
    assert str(info.value).startswith(
        f"store 'postgresql://app2@/{dbname}?host=/var/run/no-such-dir&port={server.port}': "
    ), info.value


def test_a_role_that_may_only_write_the_tables_is_told_who_migrates_them(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A role an administrator granted the schema's tables to (USAGE, SELECT, INSERT,
    UPDATE, DELETE: not their owner) runs nodes, but a release with a new schema
    version failed its open with 'cannot migrate schema 'garrison': must be owner of
    index ...', nothing of what to do: it names the versions and the owner to open it
    once as."""
    monkeypatch.setattr(_pg_schema, "MIGRATIONS", _pg_schema.MIGRATIONS[:-1])
    monkeypatch.setattr(_pg_schema, "SCHEMA_VERSION", len(_pg_schema.MIGRATIONS))
    with PostgresStore(postgres_url):
        pass  # made by the administrator, one version behind
    monkeypatch.undo()
    role = "garrison_test_writer"
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"DROP ROLE IF EXISTS {role}")
        c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(f"GRANT USAGE ON SCHEMA garrison TO {role}")
        c.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA garrison "
                  f"TO {role}")
        c.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA garrison TO {role}")
    url = postgres_url.replace("postgres@", f"{role}@", 1)
    try:
        with pytest.raises(garrison.StoreError) as info:
            PostgresStore(url)
        message = str(info.value)
        assert "cannot migrate schema 'garrison' from version " \
            f"{_pg_schema.SCHEMA_VERSION - 1} to {_pg_schema.SCHEMA_VERSION}: must be " \
            "owner of " in message, message
        assert "open the store once with a node as role 'postgres', which owns" in message
        with PostgresStore(postgres_url):
            pass  # the owner migrates it
        with PostgresStore(url) as store:  # and the role runs it again
            assert store.list_workflows() == []
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("version", ["3.2.0", "3.3.5", "3.4.0.dev1"])
def test_a_psycopg_older_than_the_store_needs_is_named_at_import_not_a_typeerror_later(
        version: str) -> None:
    # (psycopg 3.2 to 3.3.5 has no Connection.wait(timeout=): the cluster's bounded
    # statements failed with a TypeError at their first round)
    code = (f"import psycopg; psycopg.__version__ = {version!r}\n"
            "from garrison.persistence import open_store\n"
            "try:\n"
            "    open_store('postgresql://nowhere/db?connect_timeout=1')\n"
            "except ImportError as exc:\n"
            "    print('ImportError:', exc)\n"
            "except Exception as exc:\n"
            "    print('imported:', type(exc).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    if version == "3.4.0.dev1":
        assert done.stdout.startswith("imported: "), done.stdout
    else:
        assert done.stdout.strip() == (
            f"ImportError: the PostgreSQL store needs psycopg 3.3.6 or newer, and psycopg "
            f"{version} is installed: pip install -U 'garrison[postgres]'")
