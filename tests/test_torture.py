"""The short crash-and-fault torture: random SIGKILLs of a node whose workflows pass
messages to each other and call a plain process; exact results, every activity
recorded once, every message delivered once (tests/torture/run.py; the long run with
1,000 kills is ``python bench/torture.py``)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "torture"))

import run as torture_run


def test_random_kills_lose_and_duplicate_nothing() -> None:
    out = torture_run.torture(kills=25, size=20, rounds=40, seed=7)
    assert out["kills"] >= 25
    for check in torture_run.CHECKS:
        assert out[check] is True, out


def test_random_kills_at_full_durability(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = torture_run.torture(kills=10, size=10, rounds=30, seed=11, synchronous="full")
    for check in torture_run.CHECKS:
        assert out[check] is True, out
    assert not list(tmp_path.iterdir())  # a scenario that passed leaves nothing behind
