"""Run a command as a user would, and check it cleans up after itself: a demo or an
example that finishes on its own must not leave a directory in the user's temp folder
at each run (the demo's kill -9 store did, 140 KB a run)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path


def run_leaving_no_temp_files(cmd: list[str], *, cwd: Path, timeout: float
                              ) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` with a fresh ``TMPDIR`` of its own, asserted empty after."""
    with tempfile.TemporaryDirectory(prefix="garrison-test-tmp-") as tmp:
        env = dict(os.environ, TMPDIR=tmp)
        done = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True,
                              timeout=timeout)
        left = sorted(os.listdir(tmp))
        assert not left, f"{' '.join(cmd[1:])} left {left} in its temp folder"
    return done
