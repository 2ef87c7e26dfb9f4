"""What a new user met following README literally: the command line's answers read as
what the user asked for, not as garrison's insides."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
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


def test_resolving_a_promise_the_workflow_has_not_declared_says_so(tmp_path: Path) -> None:
    """``resolve exp-1002 aproval`` while the workflow waits on ``approval`` said
    ``resolved`` and nothing else. It is still kept (an early resolution, README), but
    a note names the promises the workflow has declared."""
    import json

    import trio
    import workflow_app as app

    import garrison

    store = str(tmp_path / "s.db")

    async def waiting() -> None:
        async with garrison.open_node(store=store) as node:
            await node.start_workflow(app.promise_or_deadline, "30d", id="exp-1002")
            while node.workflow("exp-1002").status() != "waiting":
                await trio.sleep(0.01)

    trio.run(waiting)
    note = ("note: workflow 'exp-1002' has not declared promise 'aproval' (declared: "
            "'approval'); kept for when it does")
    done = cli("workflows", "--store", store, "resolve", "exp-1002", "aproval",
               '{"by": "ann"}', cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "promise 'aproval' of 'exp-1002' resolved\n"
    assert done.stderr == note + "\n"
    done = cli("workflows", "--store", store, "reject", "exp-1002", "aprov", "no",
               "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # (the JSON's note without the stderr line's "note: ": it read "note": "note: ...")
    assert json.loads(done.stdout)["note"] == note.replace("aproval", "aprov", 1)[6:]
    # the declared one: no note
    done = cli("workflows", "--store", store, "resolve", "exp-1002", "approval", '"ok"',
               cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


def test_run_of_a_config_without_main_says_it_runs(tmp_path: Path) -> None:
    """``garrison run app.yaml`` without ``--main`` printed nothing until Ctrl-C (it
    looked hung): one line on stderr names the node, its store, what runs and how to
    stop it; stdout stays empty."""
    (tmp_path / "svc.py").write_text(textwrap.dedent("""
        from garrison import process
        async def serve():
            async for msg in process.inbox():
                pass
        async def job():
            return 1
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: workflows, kind: workflow.host, store: app.db}
          - {name: serve_fn, kind: process.py, source: "svc:serve"}
          - {name: job, kind: workflow.py, source: "svc:job"}
          - {name: server, kind: process.service, process: app:serve_fn,
             lifecycle: {auto_start: true}}
          - {name: idle, kind: process.service, process: app:serve_fn}
          - {name: nightly, kind: workflow.schedule, workflow: app:job, cron: "0 3 * * *"}
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "garrison", "run", "app.yaml",
                             "--name", "n1"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr or ()],
                         daemon=True).start()
        seen = line = ""
        while "Ctrl-C to stop" not in line:
            line = lines.get(timeout=30)  # (queue.Empty: it said nothing)
            seen += line
        assert line.rstrip().endswith(
            f"node n1 running; workflows: app:workflows on {tmp_path / 'app.db'}; "
            "services: app:server; schedules: app:nightly. Ctrl-C to stop"), seen
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == ""


def test_a_script_that_runs_its_node_when_imported_is_not_run_twice(tmp_path: Path) -> None:
    """``garrison.run(main)`` at a script's top level, without the ``__main__`` guard:
    ``garrison run script.py`` imported it (one run) and then ran main again. Now the
    import's run is the run, and a warning says why, and what to change."""
    (tmp_path / "job.py").write_text(textwrap.dedent("""
        import garrison
        async def main():
            print("main runs")
            return 42
        print(garrison.run(main))
    """))
    done = cli("run", "job.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "main runs\n42\n"
    assert done.stderr == (
        "garrison run: warning: job.py calls garrison.run(main) when it is imported (it has "
        "no 'if __name__ == \"__main__\":' guard), so it ran there, without this command's "
        "options (--store, --ui, ...), and is not run again; put that call under the "
        "guard\n")
    # a run at import of another function is not the target's: the target runs
    (tmp_path / "setup_first.py").write_text(textwrap.dedent("""
        import garrison
        async def setup():
            print("setup runs")
        garrison.run(setup)
        async def main():
            print("main runs")
        async def report():
            print("report runs")
    """))
    for target, ran in (("setup_first.py", "main"), ("setup_first:report", "report")):
        done = cli("run", target, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, f"setup runs\n{ran} runs\n"), done
    # a functools.partial of the target is the target
    (tmp_path / "partial_job.py").write_text(textwrap.dedent("""
        import functools, garrison
        async def main(who="world"):
            print("main ran", who)
        garrison.run(functools.partial(main, "import"))
    """))
    done = cli("run", "partial_job.py", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "main ran import\n"), done
    assert "is not run again" in done.stderr
    (tmp_path / "guarded.py").write_text(textwrap.dedent("""
        import garrison
        async def main():
            print("main runs")
            return 42
        if __name__ == "__main__":
            print(garrison.run(main))
    """))
    done = cli("run", "guarded.py", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "main runs\n42\n", "")
