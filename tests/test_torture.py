"""The short crash-and-fault torture: random SIGKILLs of a node whose workflows pass
messages to each other and call a plain process; exact results, every activity
recorded once, every message delivered once (tests/torture/run.py; the long run with
1,000 kills is ``python bench/torture.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "torture"))

import run as torture_run


def test_random_kills_lose_and_duplicate_nothing() -> None:
    out = torture_run.torture(kills=25, size=20, rounds=40, seed=7)
    assert out["kills"] >= 25
    for check in torture_run.CHECKS:
        assert out[check] is True, out


def test_random_kills_at_full_durability() -> None:
    out = torture_run.torture(kills=10, size=10, rounds=30, seed=11, synchronous="full")
    for check in torture_run.CHECKS:
        assert out[check] is True, out
