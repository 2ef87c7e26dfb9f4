from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "garrison", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout)


def test_run_python_file(tmp_path):
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        from garrison import process
        async def main():
            return f"root is {process.pid().host}"
        async def other():
            raise ValueError("nope")
    """))
    done = cli("run", "prog.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "root is processes"
    failed = cli("run", "prog.py:other", cwd=tmp_path)
    assert failed.returncode == 1
    assert "ValueError: nope" in failed.stderr


def test_check_reports_problems_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: '1.0'\nnamespace: app\nentries:\n  - {name: x, kind: nope}\n")
    done = cli("check", str(bad))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "bad.yaml" in done.stdout and "'app:x'" in done.stdout
    ok = cli("check", "examples/demo/app.yaml")
    assert ok.returncode == 0, ok.stdout


def test_json_log_format(tmp_path):
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        import trio
        from garrison import process
        async def boom():
            raise RuntimeError("logged")
        async def main():
            await process.spawn(boom)
            await trio.sleep(0.01)
    """))
    done = cli("--log-format", "json", "run", "prog.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any("RuntimeError: logged" in rec["message"] and rec["level"] == "error"
               for rec in lines)
