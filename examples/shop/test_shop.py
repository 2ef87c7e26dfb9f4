"""Tests of the shop app, as its developers would write them: the app's config on a
temporary store, virtual time (a day passes at once), the testing kit's style.

Run with ``python -m pytest examples/shop`` (pytest-trio; ``pytestmark`` marks every
test, so they run in a project without ``trio_mode = true`` too)."""

from __future__ import annotations

from pathlib import Path

import pytest
import shop

import garrison

pytestmark = pytest.mark.trio
CONFIG = str(Path(__file__).with_name("app.yaml"))


async def test_a_paid_order_ships(tmp_path, autojump_clock):
    async with garrison.open_node(config=CONFIG, store=tmp_path / "test.db") as node:
        await node.start_workflow(shop.order_workflow, shop.Order("t-1", "apple", 2), id="t-1")
        await node.workflow("t-1").promise("payment").resolve("9 EUR")
        assert await node.workflow("t-1").result() == "t-1: shipped"
        assert await node.call("shop:inventory", "stock", "apple") == 8


async def test_an_unpaid_order_times_out_after_a_day(tmp_path, autojump_clock):
    async with garrison.open_node(config=CONFIG, store=tmp_path / "test.db") as node:
        await node.start_workflow(shop.order_workflow, shop.Order("t-2", "apple", 1), id="t-2")
        assert await node.workflow("t-2").result() == "t-2: payment timed out"


async def test_an_order_survives_a_restart(tmp_path, autojump_clock):
    db = tmp_path / "test.db"
    async with garrison.open_node(config=CONFIG, store=db) as node:
        await node.start_workflow(shop.order_workflow, shop.Order("t-3", "apple", 1), id="t-3")
    async with garrison.open_node(config=CONFIG, store=db) as node:  # a new node resumes it
        await node.workflow("t-3").promise("payment").resolve("1 EUR")
        assert await node.workflow("t-3").result() == "t-3: shipped"
