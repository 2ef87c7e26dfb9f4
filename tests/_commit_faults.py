"""Faults in a store's commits, for tests: the commit of a transaction holding a given
journal record is slowed down or fails (patched on the store's class with pytest's
``monkeypatch``; ``monkeypatch.undo()`` ends it)."""

from __future__ import annotations

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
