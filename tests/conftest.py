"""Shared fixtures.

Time: every test that waits takes pytest-trio's ``autojump_clock`` fixture
(``MockClock(autojump_threshold=0)``) *as its own argument* -- pytest-trio only
passes a clock to ``trio.run`` when the test function itself receives it.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import garrison

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


@pytest.fixture
async def node(autojump_clock: object) -> AsyncIterator[garrison.Node]:
    """A node on virtual time, stopped after the test."""
    async with garrison.open_node() as n:
        yield n
