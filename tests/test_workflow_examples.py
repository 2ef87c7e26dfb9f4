"""The workflow examples run as a user runs them (so the docs cannot drift)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, f"examples/{name}", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_order_saga_compensates_in_reverse() -> None:
    out = run_example("order_saga.py")
    assert "Outcome(status='completed', step='', error='', tracking='TRACK-o-1'" in out
    assert ("step='charge', error='PermissionError: card declined for 99', tracking='', "
            "compensated=['release_inventory']") in out
    assert "compensated=['refund_payment', 'release_inventory']" in out
    assert out.index("refund pay-o-3") < out.index("release res-o-3")
    assert "ship_failed: ['order-o-3']" in out


def test_order_saga_on_a_durable_store(tmp_path: Path) -> None:
    out = run_example("order_saga.py", str(tmp_path / "orders.db"))
    assert "ship_failed: ['order-o-3']" in out
    # a second run finds the finished workflows (idempotent start) and runs nothing again
    again = run_example("order_saga.py", str(tmp_path / "orders.db"))
    assert "compensate:" not in again and "TRACK-o-1" in again


def test_approval_waits_for_its_message() -> None:
    out = run_example("approval.py")
    assert "workflows/approval-1 is waiting" in out
    assert "ticket-laptop fulfilled (approved by ann)" in out
    assert "ticket-yacht expired without an answer" in out
    assert "(2, 'receive', 'inbox')" in out


def test_crash_demo_survives_kill_9() -> None:
    out = run_example("crash_demo.py")
    assert "with SIGKILL (exit -9)" in out
    assert out.count("step 1 runs") == 1
    assert "result: ['step 1 done', 'step 2 done', 'step 3 done']" in out
    assert "survived kill -9" in out
