"""Raw SQL on a test store, whichever it is (a plain module, no pytest).

``sql(spec, query, params)`` runs ``query`` (``?`` placeholders, unqualified table
names) on the store ``spec`` names: a SQLite file, or a ``postgresql://...?schema=s``
URL (the schema is put on the search path). For tests that damage a store on purpose
or look at rows no store method returns.
"""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from typing import Any

__all__ = ["sql"]


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
