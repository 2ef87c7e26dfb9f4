"""Every example in examples/ runs, as a user would run it (so docs cannot drift)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def garrison_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "garrison", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def test_demo_runs_and_finishes_on_its_own():
    done = garrison_cli("run", "examples/demo/app.yaml", "--main", "app:main")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "hello, world!" in out
    assert "returned [1, 4, 9]" in out
    assert "trapped LINK_DOWN" in out and "RuntimeError: disk on fire" in out
    assert "died with its partner: LinkedProcessFailed" in out
    assert "app:clock crashed and was restarted: 3 starts, 6 ticks" in out
    assert "sending SIGKILL" in out
    assert "workflow survived kill -9" in out
    assert out.count("step 1 runs") == 1 and "step 3 runs" in out
    assert out.rstrip().endswith("demo finished")
    # no silent death: every failure was logged, with its traceback
    err = done.stderr
    assert err.count("flaky processes/") == 2 and "bystander processes/" in err
    assert "app:clock: restart 1 in" in err and "app:clock: restart 2 in" in err
    assert err.index("app:kv: started") < err.index("app:clock: started")
    # app:clock (which requires app:kv) is done before app:kv stops
    assert err.rindex("app:clock") < err.index("app:kv: stopping")
