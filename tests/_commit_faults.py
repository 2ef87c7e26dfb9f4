"""Faults in a store's commits, for tests: the commit of a transaction holding a given
journal record is slowed down or fails (patched on the store's class with pytest's
``monkeypatch``; ``monkeypatch.undo()`` ends it); or every write of a SQLite store
fails as on a full disk (:class:`FullDisk`)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import trio

from garrison.persistence import Op, Transaction


def holds(tx: Transaction, kind: str, seq: int | None = None, wid: str | None = None) -> bool:
    """Whether ``tx`` appends a journal record of ``kind`` (at ``seq``, of ``wid``)."""
    return any(op is Op.APPEND_JOURNAL and params[2] == kind
               and (seq is None or params[1] == seq) and (wid is None or params[0] == wid)
               for op, params in tx.ops)


def slow_commits(monkeypatch: pytest.MonkeyPatch, store: Any, kind: str,
                 seq: int | None = None, wid: str | None = None, seconds: float = 1) -> None:
    """A commit holding that record takes ``seconds`` (of the trio clock) more."""
    commit = type(store).commit

    async def slow(self: Any, tx: Transaction) -> list[Any]:
        if holds(tx, kind, seq, wid):
            await trio.sleep(seconds)
        return await commit(self, tx)

    monkeypatch.setattr(type(store), "commit", slow)


def failing_commits(monkeypatch: pytest.MonkeyPatch, store: Any, kind: str,
                    seq: int | None = None, wid: str | None = None, *, error: Exception,
                    then: str = "each", after: float = 0) -> None:
    """A commit holding that record fails with ``error`` (``after`` seconds in flight).
    ``then``: ``"each"`` (every such commit fails), ``"once"`` (the first one only: a
    transient failure) or ``"all"`` (that one and every commit after it: the disk stays
    full)."""
    commit = type(store).commit
    failed: list[bool] = []

    async def failing(self: Any, tx: Transaction) -> list[Any]:
        if (then == "all" and failed) or (
                holds(tx, kind, seq, wid) and not (then == "once" and failed)):
            failed.append(True)
            if after:
                await trio.sleep(after)
            raise error
        return await commit(self, tx)

    monkeypatch.setattr(type(store), "commit", failing)


class FullDisk:
    """A SQLite store's writer connection on a disk that has filled up: while ``full``
    is set, every statement that writes fails as SQLite fails there (``SQLITE_FULL``,
    "database or disk is full"), nothing of it written; reads and everything else go
    through. ``FullDisk.of(store)`` puts it in place of the store's connection (a
    node's store: ``node.hosts["workflows"].store``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.full = False

    @classmethod
    def of(cls, store: Any) -> FullDisk:
        disk = cls(store._conn)
        store._conn = disk
        return disk

    def _check(self, sql: str) -> None:
        if self.full and sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
            error.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
            raise error

    def execute(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return self._conn.executemany(sql, *args)

    def __enter__(self) -> Any:
        return self._conn.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._conn.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
