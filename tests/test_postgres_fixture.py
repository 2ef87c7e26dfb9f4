"""The throwaway PostgreSQL server fixture itself (tests/_postgres.py)."""

from __future__ import annotations

import psycopg
import pytest


def test_select_1(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.dbname.startswith("test_")
        # the tests' server runs without fsync (the benchmarks' keeps it on)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)


def test_each_test_gets_a_fresh_database(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE left_behind (x int)")


def test_marked_postgres(request: pytest.FixtureRequest, postgres_url: str) -> None:
    assert request.node.get_closest_marker("postgres") is not None


def test_start_failure_names_the_reason(postgres_server: object) -> None:
    # (uses the session server only so that it is skipped/errored like its siblings)
    import _postgres

    with pytest.raises(_postgres.PostgresUnavailable, match="no_such_setting"):
        _postgres.start(settings={"no_such_setting": "1"})
