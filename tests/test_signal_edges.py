"""Signals, promises and their ids at the edges (an adversarial review of signals,
promises and receive timeouts): what a store keeps for ever must not be mistaken for
something new."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
import workflow_app as app

import garrison


async def test_signals_of_two_node_sessions_never_share_a_message_id(
        autojump_clock: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message from outside any workflow (``handle.signal``, ``node.send``) got the id
    ``<32 random bits>-<counter>``, the counter starting at 1 in each node session. A
    store keeps every message id for ever, in one index across all its workflows, and
    drops a message whose id it holds as a duplicate: two sessions whose 32 random bits
    agreed (a web app opening a client node per request reaches that within some
    77,000 requests, one time in two) lost the second one's signals, while ``signal``
    returned as if it had delivered them."""
    real = os.urandom

    def agreeing_prefix(n: int) -> bytes:  # (two sessions whose first 32 bits agree)
        return b"\xab\xcd\xef\x01" + real(n - 4) if n >= 4 else real(n)

    monkeypatch.setattr(os, "urandom", agreeing_prefix)
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.collector, 2, id="a")
        await node.workflow("a").signal("first", "from session 1")
    async with garrison.open_node(store=db) as node:
        await node.workflow("a").signal("second", "from session 2")
        with trio.fail_after(60):
            assert await node.workflow("a").result() == ["from session 1", "from session 2"]
