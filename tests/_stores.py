"""Raw SQL on a test store, whichever it is (a plain module, no pytest).

``sql(spec, query, params)`` runs ``query`` (``?`` placeholders, unqualified table
names) on the store ``spec`` names: a SQLite file, or a ``postgresql://...?schema=s``
URL (the schema is put on the search path). For tests that damage a store on purpose
or look at rows no store method returns.

``workflows_table_counts(url)``: on PostgreSQL, rows inserted into and read by
sequential scans of the workflows table, once the node's and store's sessions ended.

``with no_digit_limit():`` Python's limit on an int's decimal digits lifted for the
block: a store written (or read) there is as a process with
``sys.set_int_max_str_digits(0)`` leaves it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

__all__ = ["no_digit_limit", "sql", "workflows_table_counts"]


def sql(spec: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``query`` on the store ``spec`` (committed); its rows."""
    if spec.startswith(("postgresql://", "postgres://")):
        import psycopg

        parts = urllib.parse.urlsplit(spec)
        query_args = urllib.parse.parse_qsl(parts.query)
        schema = dict(query_args).get("schema", "garrison")
        rest = urllib.parse.urlencode([(k, v) for k, v in query_args if k != "schema"])
        url = urllib.parse.urlunsplit(parts._replace(query=rest))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET search_path TO " + '"' + schema.replace('"', '""') + '"')
            cur = conn.execute(query.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []
    with contextlib.closing(sqlite3.connect(spec)) as conn, conn:
        return conn.execute(query, params).fetchall()


def workflows_table_counts(url: str, timeout: float = 30.0) -> tuple[int, int]:
    """``(n_tup_ins, seq_tup_read)`` of the workflows table of the PostgreSQL store
    ``url``, read once no session of a garrison node (a store opened as a node's) is
    left and the counts stopped moving: a session's counts reach the statistics views
    as it ends, before it leaves ``pg_stat_activity``."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int] | None = None
    while True:
        (inserted, read), = sql(url, "SELECT n_tup_ins, seq_tup_read FROM pg_stat_user_tables "
                                     "WHERE relid = 'workflows'::regclass")
        now = (int(inserted), int(read))
        gone = not sql(url, "SELECT 1 FROM pg_stat_activity WHERE "
                            "starts_with(application_name, 'garrison node')")
        if (gone and now == last) or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.2)


@contextlib.contextmanager
def no_digit_limit() -> Iterator[None]:
    """Python's limit on the decimal digits of an int turned to or from text lifted
    (``sys.set_int_max_str_digits(0)``) within the block, and put back as it was after
    it, however the block ends: the ints longer than the default limit (4,300 digits)
    written to a store there are those a process without the limit stores."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(limit)
