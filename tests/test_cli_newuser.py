"""What a new user met following README literally: the command line's answers read as
what the user asked for, not as garrison's insides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "garrison", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, env=env)


def test_a_read_only_tool_that_cannot_connect_does_not_say_writes(tmp_path: Path) -> None:
    """``garrison workflows --store postgresql://... list`` on a server that is not there
    said ``cannot connect (writes)``: the store's own name of its connection, on a tool
    that only reads."""
    url = "postgresql://postgres@127.0.0.1:1/postgres"
    done = cli("workflows", "--store", url, "list", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"garrison workflows: store '{url}': cannot connect: "), \
        done.stderr
    assert "writes" not in done.stderr


def test_version() -> None:
    from importlib.metadata import version

    done = cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"garrison {version('garrison')}\n"
