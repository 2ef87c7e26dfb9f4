"""The PostgreSQL store on a server set up as teams deploy it: settings a DBA puts on
the database or the role (``idle_session_timeout`` and the like), which the store's
sessions meet on every connection.

Real network I/O and real server timeouts: real clock, waits of a few seconds.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from functools import partial
from pathlib import Path

import pg_fault_app as app
import psycopg
import pytest
import trio

import garrison
from garrison.persistence import PostgresStore

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
