"""Shared fixtures.

PostgreSQL: ``postgres_url`` gives each test a fresh database on one throwaway
server per session, one per pytest-xdist worker (tests/_postgres.py); tests using it
are marked ``postgres`` (deselect with ``-m "not postgres"``).
``GARRISON_TEST_POSTGRES=0`` skips them; otherwise a server that cannot start is an
error naming why. With
``GARRISON_TEST_POSTGRES_REPORT=FILE`` the outcome of every such test is appended
to FILE (.ci/run checks that none was skipped).

Time: every test that waits takes pytest-trio's ``autojump_clock`` fixture
(``MockClock(autojump_threshold=0)``) *as its own argument* -- pytest-trio only
passes a clock to ``trio.run`` when the test function itself receives it.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import garrison

ROOT = Path(__file__).resolve().parent.parent
# The blocked-event-loop watchdog warns after 60 s here, not 3 (in this process and the
# nodes its tests start as subprocesses): on a loaded machine a test's loop can stall
# for seconds, and many tests assert that a node logged no warning at all; the
# watchdog's own tests (test_watchdog.py) set their thresholds themselves.
os.environ.setdefault("GARRISON_WATCHDOG_SECONDS", "60")
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


@pytest.fixture(autouse=True)
def _cli_state_restored() -> Iterator[None]:
    """A test that runs the CLI in-process (``_cli.main``) leaves its logging set up
    (a handler on stderr as it was, at INFO, not propagating) and ``sys.stderr``
    wrapped; restored after each test so that no later test, on whichever worker
    runs it, sees those records or writes to a stream pytest has closed."""
    logger = logging.getLogger("garrison")
    saved = (logger.handlers[:], logger.level, logger.propagate, sys.stderr)
    yield
    logger.handlers[:], logger.level, logger.propagate, sys.stderr = (
        saved[0], saved[1], saved[2], saved[3])


@pytest.fixture
async def node(autojump_clock: object, node_store: str | None) -> AsyncIterator[garrison.Node]:
    """A node, stopped after the test: on an in-memory store, and in
    tests/test_workflow*.py also on a fresh PostgreSQL store (``node_store``). On
    virtual time only when the test itself asks for ``autojump_clock`` too: pytest-trio
    takes the clock from the test's own arguments, not from its fixtures'."""
    async with garrison.open_node(store=node_store) as n:
        yield n


#: the durable stores a test runs on (``store_spec``, ``node_store``)
STORE_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
_schema_numbers = itertools.count(1)


def _postgres_store_url(request: pytest.FixtureRequest) -> str:
    """A store nobody opened yet: a fresh schema of the session's store database."""
    base = request.getfixturevalue("postgres_stores_url")
    return f"{base}?schema=s{next(_schema_numbers)}"


@pytest.fixture
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A durable store nobody opened yet, as ``store=`` takes it: a SQLite file path,
    or a ``postgresql://`` URL (a fresh schema of one database of the session's
    server). Opening the same spec again reopens the same store (restart tests).
    Parametrized over both stores (``sqlite``, ``postgres``)."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return _postgres_store_url(request)


@pytest.fixture
def node_store(request: pytest.FixtureRequest) -> str | None:
    """The store of the ``node`` fixture: ``None`` (in memory), or a fresh PostgreSQL
    store for the workflow tests (see ``pytest_generate_tests``)."""
    if getattr(request, "param", "memory") == "memory":
        return None
    return _postgres_store_url(request)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "store_spec" in names:
        metafunc.parametrize("store_spec", STORE_KINDS, indirect=True)
    if "node_store" in names and metafunc.module.__name__.startswith("test_workflow"):
        metafunc.parametrize(
            "node_store", ["memory", pytest.param("postgres", marks=pytest.mark.postgres)],
            indirect=True)


# ------------------------------------------------------------------ PostgreSQL
_PG_DISABLED = "PostgreSQL tests disabled (GARRISON_TEST_POSTGRES=0)"
_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """One throwaway PostgreSQL server for the session, stopped at its end."""
    if os.environ.get("GARRISON_TEST_POSTGRES") == "0":
        pytest.skip(_PG_DISABLED)
    import _postgres

    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise _postgres.PostgresUnavailable(
            f"psycopg is not installed ({exc}); pip install -e '.[test]'"
        ) from exc
    server = _postgres.start(fsync=False)  # (no test measures its commits' latency)
    try:
        yield server
    finally:
        _postgres.stop(server)


@pytest.fixture(scope="session")
def postgres_stores_url(postgres_server: object) -> str:
    """The session's database for stores (each test store is a schema of its own)."""
    import _postgres

    assert isinstance(postgres_server, _postgres.PostgresServer)
    return _postgres.create_db(postgres_server, "stores")


@pytest.fixture
def postgres_url(postgres_server: object) -> Iterator[str]:
    """A fresh, empty database (``test_<n>``) on the session's server: its URL. Dropped
    after the test, so that the server's directory stays small (removing hundreds of
    databases' files when the session ends took ten seconds)."""
    import _postgres

    assert isinstance(postgres_server, _postgres.PostgresServer)
    name = f"test_{next(_db_numbers)}"
    yield _postgres.create_db(postgres_server, name)
    _postgres.drop_db(postgres_server, name)


@pytest.fixture
def nodes() -> Iterator[list[object]]:
    """Cluster nodes a test starts as subprocesses (tests/cluster/harness.py's
    ``Node.start``) and appends here: each is stopped at the end."""
    started: list[object] = []
    yield started
    for node in started:
        node.stop()  # type: ignore[attr-defined]


@pytest.fixture
def own_server(postgres_server: object) -> Iterator[object]:
    """A PostgreSQL server of the test's own, to stop, pause or restart (the session's
    server is what the others use: it gates the PostgreSQL tests, see below)."""
    import _postgres

    server = _postgres.start(fsync=False)
    try:
        yield server
    finally:
        _postgres.stop(server)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get("GARRISON_TEST_POSTGRES_REPORT")
    if not path or "postgres" not in report.keywords:
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # (a worker's reports reach the controller, which writes them once)
    if report.when == "call" or report.outcome != "passed":
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{report.outcome} {report.when} {report.nodeid}\n")
