from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import garrison
import garrison.persistence

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "garrison", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout)


def test_garrison_run_whose_result_or_errors_cannot_be_written(tmp_path: Path) -> None:
    """helper-209: ``garrison run`` printed its result with a bare ``print``: a reader
    gone was a BrokenPipeError traceback and exit 1, a full disk an OSError traceback and
    exit 1 (as if the root failed). With stderr on a full disk, a config error's exit 2
    ("did not start") became 1; with stderr closed, the error went to standard output,
    where a caller reads the result."""
    (tmp_path / "big.py").write_text("async def main():\n    return 'x' * 200_000\n")
    (tmp_path / "bad.yaml").write_text("version: '1.0'\nnamespace: app\nentries: 5\n")
    python = [sys.executable, "-m", "garrison", "run"]

    def run(*args: str, **streams: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*python, *args], cwd=tmp_path, text=True, timeout=60,
                              **streams)

    reader = subprocess.Popen([*python, "big.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.read(10)
    reader.stdout.close()  # the reader goes away (| head -c 10)
    assert reader.wait(60) == 128 + signal.SIGPIPE
    assert "Traceback" not in reader.stderr.read()
    reader.stderr.close()
    with open("/dev/full", "w") as full:
        done = run("big.py", stdout=full, stderr=subprocess.PIPE)
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines()[-1] == ("garrison run: cannot write the result: No "
                                                "space left on device"), done.stderr
        assert "Traceback" not in done.stderr
        done = run("bad.yaml", stdout=subprocess.PIPE, stderr=full)
        assert (done.returncode, done.stdout) == (2, "")
        # the addresses of --ui and --metrics are the command's own messages: stderr
        # (helper-213: on stdout, a full disk there was a traceback, the root never ran)
        (tmp_path / "small.py").write_text("async def main():\n    return 'done'\n")
        done = run("small.py", "--ui", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                   stdout=full, stderr=subprocess.PIPE)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert "garrison run: web console at http://127.0.0.1:" in done.stderr
        assert "garrison run: metrics at http://127.0.0.1:" in done.stderr
        assert done.stderr.splitlines()[-1] == ("garrison run: cannot write the result: No "
                                                "space left on device"), done.stderr
    done = run("bad.yaml", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
               preexec_fn=lambda: os.close(2))  # (2>&-)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout


def start_run(cwd: Path, *args: str, flags: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """``garrison run ARGS`` (default ``app.yaml``) in ``cwd`` (``flags``: the
    interpreter's); a thread reads its log (``read_until``, ``finish``), so a test never
    blocks on a silent process."""
    proc = subprocess.Popen([sys.executable, *flags, "-m", "garrison", "run",
                             *(args or ("app.yaml",))],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    _logs[proc.pid] = lines
    return proc


_logs: dict[int, queue.Queue[str | None]] = {}


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 30) -> str:
    """The log lines of ``proc`` up to the one holding ``marker`` (or its end / timeout)."""
    lines = _logs[proc.pid]
    deadline = time.monotonic() + timeout
    seen = ""
    while marker not in seen:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            break
        if line is None:
            lines.put(None)  # the end stays visible to the next reader
            break
        seen += line
    return seen


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """Wait for ``proc`` to exit; its stdout and the rest of its log."""
    assert proc.stdout is not None
    proc.wait(timeout=timeout)
    return proc.stdout.read(), read_until(proc, "\0", timeout=10)


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
    assert "thread" not in done.stderr
    failed = cli("run", "prog.py:other", cwd=tmp_path)
    assert failed.returncode == 1
    assert "ValueError: nope" in failed.stderr


def test_run_says_it_waits_for_the_application_s_threads(tmp_path):
    """After the node stopped, the interpreter waits for the application's non-daemon
    threads: the command sat there saying nothing (a stop that looked hung)."""
    (tmp_path / "threads.py").write_text(textwrap.dedent("""
        import threading, time
        async def main():
            threading.Thread(target=time.sleep, args=(0.3,), name="reporter").start()
            return "done"
    """))
    done = cli("run", "threads.py", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr
    assert ("the node stopped; the process waits for 1 thread of the application to end "
            "before it exits (reporter): a SIGINT or SIGTERM now exits at once") in done.stderr


def test_run_tells_a_config_and_a_script_by_their_suffix_in_any_case(tmp_path):
    """``garrison run UP.YAML`` was imported as the module ``UP`` (ModuleNotFoundError),
    and ``JOB.PY`` as the module ``JOB``: a suffix is a suffix in any case, as for
    ``garrison check`` (which reads any file as a config)."""
    (tmp_path / "job.py").write_text(textwrap.dedent("""
        async def main():
            return "main ran"
    """))
    (tmp_path / "JOB.PY").write_text((tmp_path / "job.py").read_text())
    (tmp_path / "UP.YAML").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: main, kind: process.py, source: "job:main"}
    """))
    (tmp_path / "up.Yml").write_text((tmp_path / "UP.YAML").read_text())
    for args in (["UP.YAML", "--main", "app:main"], ["up.Yml", "--main", "app:main"],
                 ["JOB.PY"], ["JOB.PY:main"]):
        done = cli("run", *args, cwd=tmp_path)
        assert (done.returncode, done.stdout.strip()) == (0, "main ran"), (args, done.stderr)
    assert cli("check", "UP.YAML", cwd=tmp_path).returncode == 0
    wrong = cli("run", "UP.YAML", "--main", "app:nope", cwd=tmp_path)
    assert wrong.returncode == 2 and "of UP.YAML: app:main" in wrong.stderr, wrong.stderr


def test_run_reads_any_other_file_as_a_config_as_check_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``garrison check app.conf`` passed it (check reads any file as a config, "as
    garrison run would"), and ``garrison run app.conf`` imported it as the module
    ``app`` (``cannot import 'app.conf': ModuleNotFoundError``, exit 2): a file there
    is, with no ``:`` and no ``.py``, is a config to run too."""
    from garrison import _cli

    module = f"conf_{tmp_path.name.replace('-', '_')}"
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{module}.py").write_text("async def main():\n    return 'conf ran'\n")
    (tmp_path / "app.conf").write_text(
        f'version: "1.0"\nnamespace: app\nentries:\n'
        f'  - {{name: m, kind: process.py, source: "{module}:main"}}\n')
    (tmp_path / "bad.conf").write_text("version: '1.0'\nnamespace: app\nentries: 5\n")
    try:
        assert _cli.main(["check", "app.conf"]) == 0
        assert capsys.readouterr().out == "ok: app.conf\n"
        assert _cli.main(["run", "app.conf", "--main", "app:m"]) == 0
        out, err = capsys.readouterr()
        assert out == "conf ran\n", err
        assert _cli.main(["check", "bad.conf"]) == 1
        problems = capsys.readouterr().out
        assert problems.startswith("bad.conf: "), problems
        assert _cli.main(["run", "bad.conf"]) == 2
        assert capsys.readouterr().err == f"garrison run: invalid config:\n{problems}"
        # (review: a launcher script named as a module beside it is not read as YAML)
        (tmp_path / module).write_text("#!/bin/sh\nexec garrison run $0\n")
        assert _cli.main(["run", module]) == 0
        assert capsys.readouterr().out == "conf ran\n"
    finally:
        sys.modules.pop(module, None)


def test_run_reports_a_root_it_cannot_load_in_one_line(tmp_path):
    """A script or module:function that cannot be the root process is one line naming
    the target and exit 2 (the node did not start), never a traceback: a sync main
    raised the TypeError of spawn from deep inside, an empty target importlib's
    'Empty module name', a script with a failing import its ImportError."""
    (tmp_path / "sync.py").write_text("def main():\n    return 1\n")
    (tmp_path / "badimport.py").write_text("import no_such_module_here\n")
    (tmp_path / "syntax.py").write_text("async def main(:\n")
    (tmp_path / "nomain.py").write_text("x = 1\n")
    (tmp_path / "twomains.py").write_text(
        "from trio import sleep\n\nasync def start():\n    pass\n\n"
        "async def serve():\n    await sleep(0)\n\ndef helper():\n    pass\n\n"
        "async def _private():\n    pass\n")
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "quits4.py").write_text("import sys\nsys.exit(4)\n")
    (tmp_path / "folder.py").mkdir()
    (tmp_path / "two.py").write_text("async def main(a, b):\n    return a\n")
    (tmp_path / "two.yaml").write_text(
        'version: "1.0"\nnamespace: app\nentries:\n'
        '  - {name: two, kind: process.py, source: "two:main"}\n')
    for target, why in [
        # (a root that requires arguments ran, and failed with a traceback, exit 1)
        ("two.py", "'two.py' cannot be the root process: the root is called with no "
                   "arguments, and main(a, b) requires some (missing a required argument: "
                   "'a'); give it defaults, or run a process.service entry with an input"),
        ("two.yaml --main app:two", "--main 'app:two' cannot be the root process: the root "
                                    "is called with no arguments, and main(a, b) requires"),
        # (the reason came last, in brackets, after 'no config entry ...')
        ("two.yaml --main two:main", "--main 'two:main': 'two:main' cannot be the root "
                                     "process: the root is called with no arguments"),
        ("quits.py", "cannot import 'quits.py': ImportError: 'quits.py' called sys.exit(0) "
                     "while it was imported"),
        ("quits4:main", "cannot import 'quits4': ImportError: 'quits4' called sys.exit(4) "
                        "while it was imported"),
        ("sync.py", "'sync.py': main is not an async function (async def); the root "
                    "process must be one"),
        ("sync:main", "'sync:main': main is not an async function (async def); the root "
                      "process must be one"),
        ("", "no TARGET: expected a config (app.yaml), a script (script.py) or "
             "module:function"),
        ("badimport.py", "cannot import 'badimport.py': ModuleNotFoundError: No module "
                         "named 'no_such_module_here'"),
        ("badimport:main", "cannot import 'badimport': ModuleNotFoundError: No module "
                           "named 'no_such_module_here'"),
        ("syntax.py", "cannot import 'syntax.py': SyntaxError: "),
        ("nomain.py", "'nomain.py' has no function 'main'\n"),
        # (a new user's script of other names: they are listed, or the one meant named)
        ("twomains.py", "'twomains.py' has no function 'main'; its async functions are "
                        "start, serve (name one: twomains.py:start)\n"),
        ("twomains.py:strat", "'twomains.py:strat' has no function 'strat' (did you mean "
                              "'start'?)\n"),
        ("missing.py", "no such file 'missing.py'"),
        ("folder.py", "'folder.py' is a folder, not a script"),
    ]:
        done = cli("run", *(target.split(" ") if target else [target]), cwd=tmp_path)
        assert done.returncode == 2, (target, done.stderr)
        assert done.stderr.startswith(f"garrison run: {why}"), (target, done.stderr)
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_a_module_that_exits_at_import_is_an_import_error_for_every_command(tmp_path):
    """``sys.exit()`` at a module's top, imported by ``run --main``, ``workflows start``
    or ``workflows replay --module``: one line naming it, exit 2; before, the command
    exited with the script's code and said nothing (0 looked like success). Other bad
    selections of ``replay`` and ``list`` alike."""
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "one.yaml").write_text("version: '1.0'\nnamespace: app\nentries: []\n")
    store = str(tmp_path / "s.db")
    garrison.persistence.SQLiteStore(store).close()
    done = cli("run", "one.yaml", "--main", "quits:main", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "(cannot import 'quits': ImportError: 'quits' called sys.exit(0) while it was " \
           "imported)" in done.stderr, done.stderr
    for args, why in [
            (["start", "quits:main"], "cannot import 'quits:main': ImportError: 'quits' "
                                      "called sys.exit(0) while it was imported"),
            (["replay", "--module", "quits.py", "--all"],
             "--module 'quits.py': cannot import it: ImportError: 'quits.py' called "
             "sys.exit(0) while it was imported"),
            (["replay", "--module", "nosuchdir/", "--all"],
             "--module 'nosuchdir/': no such folder"),
            (["replay", "--module", "one.yaml", "--all"],  # (it said "no such folder")
             "--module 'one.yaml': a file, not a .py one"),
            # (an empty one was taken for the current folder; --all beside --status was
            # dropped without a word; a second list --id kept only the last prefix)
            (["replay", "--module", "", "--all"],
             "--module '': an empty path (give a folder, a file.py or a dotted module name)"),
            (["replay", "--status", "failed", "--all"],
             "--all replays every workflow: it cannot be combined with --status"),
            (["list", "--id", "a", "--id", "b"],
             "--id takes one id prefix, given more than once ('a', 'b')")]:
        done = cli("workflows", "--store", store, *args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and why in done.stderr, done.stderr


def test_run_main_naming_a_service_waits_for_that_service(tmp_path):
    """``--main app:svc`` of a ``process.service``: the run ends when the service the
    node runs ends for good (exit 0 once it returned, 1 once its restarts gave up).
    It used to spawn a second, bare copy of the service's process without the
    service's input (a TypeError, exit 1) beside the one the node ran (found by an
    adversarial review)."""
    (tmp_path / "mysvc.py").write_text(textwrap.dedent("""
        import trio
        async def handler(greeting):
            print("handler runs with", greeting, flush=True)
            await trio.sleep(0.2)
            if greeting == "fail":
                raise RuntimeError("told to fail")
            return "done " + greeting
    """))
    for greeting, auto in (("hello", "true"), ("fail", "false")):
        (tmp_path / "app.yaml").write_text(textwrap.dedent(f"""
            version: "1.0"
            namespace: app
            entries:
              - {{name: handler, kind: process.py, source: "mysvc:handler"}}
              - name: svc
                kind: process.service
                process: app:handler
                input: ["{greeting}"]
                lifecycle:
                  auto_start: {auto}
                  restart: {{max_attempts: 1, initial_delay: 10ms}}
        """))
        done = cli("run", "app.yaml", "--main", "app:svc", cwd=tmp_path)
        runs = done.stdout.count(f"handler runs with {greeting}")
        if greeting == "hello":
            assert (done.returncode, runs) == (0, 1), (done.stdout, done.stderr)
            # README: a result that is not None is the run's last line, as for a
            # process.py --main (the service's was not printed at all)
            assert done.stdout.splitlines()[-1] == "done hello", done.stdout
        else:
            assert (done.returncode, runs) == (1, 2), (done.stdout, done.stderr)
            assert "garrison run: app:svc gave up: RuntimeError: told to fail" in done.stderr
        assert "missing 1 required positional argument" not in done.stderr


def test_run_main_of_a_quick_service_runs_it_once_and_one_whose_requirement_returned_ends(
        tmp_path: Path) -> None:
    """``--main`` of an ``auto_start`` service that returned before the command looked
    (no await) started it again: it ran twice. A service whose requirement returned
    waited for it for ever, silently (``--main`` too): a requirement that returned is
    not restarted, so the service cannot start; the node says so once, and the run
    ends, exit 1."""
    (tmp_path / "quick.py").write_text(textwrap.dedent("""
        async def once():
            print("ONCE RUNS", flush=True)
            return "done"
        async def server():
            from garrison import process
            async for _ in process.inbox():
                pass
    """))
    (tmp_path / "once.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: o, kind: process.py, source: "quick:once"}
          - {name: s, kind: process.service, process: app:o, lifecycle: {auto_start: true}}
    """))
    done = cli("run", "once.yaml", "--main", "app:s", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ONCE RUNS\ndone\n", done.stdout
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: o, kind: process.py, source: "quick:once"}
          - {name: srv, kind: process.py, source: "quick:server"}
          - {name: s1, kind: process.service, process: app:o}
          - name: s2
            kind: process.service
            process: app:srv
            lifecycle: {auto_start: true, requires: [app:s1]}
    """))
    done = cli("run", "app.yaml", "--main", "app:s2", cwd=tmp_path, timeout=30)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert ("app:s2: cannot start: app:s1, which it requires, returned (a service that "
            "returns is not restarted") in done.stderr
    assert ("garrison run: app:s2 cannot start: app:s1, which it requires, returned: a "
            "service that returns is not restarted") in done.stderr


@pytest.mark.parametrize("dep_fails_after", [0.0, 0.5])
def test_run_main_naming_a_service_and_a_requirement_that_gives_up(tmp_path,
                                                                  dep_fails_after):
    """A requirement whose restarts gave up before the service started: the service
    waits for ever, so the run ends (exit 1) saying so (it never ended). One that gave
    up after the service started leaves it running without it (README: a service that
    gives up stops alone), and the run ends there too, exit 1 (README: "1 once its
    restarts, or those of a service it requires, gave up"): it went on until the service
    ended, and never ended when the service ran for ever (svc2.yaml of a review)."""
    wait = f"await trio.sleep({dep_fails_after})" if dep_fails_after else "pass"
    (tmp_path / "mysvc2.py").write_text(textwrap.dedent(f"""
        import trio
        async def dep():
            {wait}
            raise RuntimeError("dep is broken")
        async def handler():
            await trio.sleep_forever()
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: depp, kind: process.py, source: "mysvc2:dep"}
          - {name: handler, kind: process.py, source: "mysvc2:handler"}
          - name: dep
            kind: process.service
            process: app:depp
            lifecycle:
              restart: {max_attempts: 1, initial_delay: 10ms}
          - name: svc
            kind: process.service
            process: app:handler
            lifecycle:
              requires: [app:dep]
    """))
    done = cli("run", "app.yaml", "--main", "app:svc", cwd=tmp_path, timeout=30)
    if dep_fails_after:
        assert done.returncode == 1, done.stderr
        assert ("garrison run: app:svc runs on without it: app:dep, which it requires, "
                "gave up: RuntimeError: dep is broken") in done.stderr
        assert "app:svc: stopping" in done.stderr  # the node stopped gracefully
    else:
        assert done.returncode == 1, done.stderr
        assert ("garrison run: app:svc cannot start: app:dep, which it requires, gave "
                "up: RuntimeError: dep is broken") in done.stderr


def test_run_main_failing_as_a_service_is_down_names_that_service(tmp_path):
    """A service whose process failed at once (a wrong port) was between restarts as
    the node's start ended; the root, run all the same, failed on the name that service
    registers, and the run ended on ``NoSuchProcess: no process is registered as
    'pw0'``, the service and its error only in earlier log lines. The run's last words
    now name the service that is down and why (its error, its restart), then the root's
    failure; a call to the service's own id says it in its error."""
    (tmp_path / "pw.py").write_text(textwrap.dedent("""
        from garrison import process
        async def worker(port):
            int(port)
            process.register("pw0")
            async for msg in process.inbox():
                await msg.reply(port)
        async def main():
            return await process.call("pw0", "hi")
        async def by_id():
            return await process.call("app:pw", "hi")
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: worker, kind: process.py, source: "pw:worker"}
          - name: pw
            kind: process.service
            process: app:worker
            input: ["80a"]
            lifecycle:
              auto_start: true
              restart: {max_attempts: 2, initial_delay: 5s, jitter: 0}
    """))
    why = ("service app:pw is between restarts: its process failed with ValueError: "
           "invalid literal for int() with base 10: '80a'; restart 1/2 in ")
    done = cli("run", "app.yaml", "--main", "pw:main", cwd=tmp_path, timeout=30)
    assert done.returncode == 1, done.stderr
    last = done.stderr.rstrip("\n").split("\n")[-2:]
    assert last[0].startswith(f"garrison run: {why}"), done.stderr
    assert last[1] == ("garrison run: pw:main failed: NoSuchProcess: no process is "
                       "registered as 'pw0'"), done.stderr
    done = cli("run", "app.yaml", "--main", "pw:by_id", cwd=tmp_path, timeout=30)
    assert done.returncode == 1, done.stderr
    last = done.stderr.rstrip("\n").split("\n")[-1]  # (said once)
    assert last.startswith("garrison run: pw:by_id failed: NoSuchProcess: no process is "
                           f"registered as 'app:pw': {why}"), done.stderr


def test_run_main_failing_on_a_service_down_says_that_service_once(tmp_path):
    """A root failed on a call to the id of a service between restarts, its error
    saying why (``... restart 1/2 in 5.00s``); the run's lines before its last said that
    service again unless the error said it, compared word for word with the time left
    as of then: a root that took a moment to end (a cleanup, a workflow's end written)
    had the service said twice, the second time ``in 4.69s``."""
    (tmp_path / "pw.py").write_text(textwrap.dedent("""
        import trio
        from garrison import process
        async def worker(port):
            int(port)
            process.register("pw0")
        async def by_id():
            try:
                return await process.call("app:pw", "hi")
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(0.3)  # (its cleanup)
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: worker, kind: process.py, source: "pw:worker"}
          - name: pw
            kind: process.service
            process: app:worker
            input: ["80a"]
            lifecycle:
              auto_start: true
              restart: {max_attempts: 2, initial_delay: 5s, jitter: 0}
    """))
    done = cli("run", "app.yaml", "--main", "pw:by_id", cwd=tmp_path, timeout=30)
    assert done.returncode == 1, done.stderr
    said = [line for line in done.stderr.split("\n")
            if line.startswith("garrison run: ")]
    assert len(said) == 1, done.stderr
    assert said[0].startswith("garrison run: pw:by_id failed: NoSuchProcess: no process "
                              "is registered as 'app:pw': service app:pw is between "
                              "restarts: "), done.stderr


def test_check_reports_problems_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: '1.0'\nnamespace: app\nentries:\n  - {name: x, kind: nope}\n")
    done = cli("check", str(bad))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "bad.yaml" in done.stdout and "'app:x'" in done.stdout
    ok = cli("check", "examples/demo/app.yaml")
    assert ok.returncode == 0, ok.stdout


def test_check_whose_output_cannot_be_written_is_no_invalid_config(
        tmp_path, monkeypatch, capsys):
    """``garrison check ok.yaml > /dev/full`` exited 1, which says the config is
    invalid: output that cannot be written is exit 2, said on stderr, for a valid
    config and an invalid one alike (the check gave no answer)."""
    from garrison import _cli

    (tmp_path / "ok.yaml").write_text("version: '1.0'\nnamespace: app\nentries: []\n")
    (tmp_path / "bad.yaml").write_text("version: '1.0'\nnamespace: app\nentries: 5\n")
    for name in ("ok.yaml", "bad.yaml"):
        with open("/dev/full", "w") as full:
            monkeypatch.setattr(sys, "stdout", full)
            assert _cli.main(["check", str(tmp_path / name)]) == 2, name
        assert capsys.readouterr().err.splitlines()[-1] == (
            "garrison check: cannot write the output: No space left on device"), name


def test_json_log_format(tmp_path):
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        import logging
        import trio
        from garrison import process
        async def boom():
            raise RuntimeError("logged")
        async def main():
            await process.spawn(boom)
            await trio.sleep(0.01)
            logging.getLogger("garrison.app").info(
                "order %s", 17, extra={"workflow_id": "order-17", "run_id": "r1",
                                       "pid": process.pid(), "ratio": 0.5, "ok": True})
    """))
    (tmp_path / "svc.py").write_text(textwrap.dedent("""
        import trio
        async def flaky():
            raise ValueError('flaky')
        async def steady():
            await trio.sleep_forever()
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: flaky_fn, kind: process.py, source: "svc:flaky"}
          - {name: prog_main, kind: process.py, source: "prog:main"}
          - {name: flaky, kind: process.service, process: flaky_fn,
             lifecycle: {auto_start: true, restart: {max_attempts: 1, initial_delay: 10ms}}}
          - {name: steady_fn, kind: process.py, source: "svc:steady"}
          - {name: steady, kind: process.service, process: steady_fn,
             lifecycle: {auto_start: true}}
    """))
    done = cli("--log-format", "json", "run", "app.yaml", "--main", "app:prog_main",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    exit_log = next(r for r in records if "RuntimeError: logged" in r["message"])
    assert exit_log["level"] == "error" and exit_log["logger"] == "garrison.process"
    assert "\n" not in exit_log["message"]
    assert exit_log["traceback"].startswith("Traceback (most recent call last):")
    assert exit_log["traceback"].rstrip().endswith("RuntimeError: logged")
    restart = next(r for r in records if ": restart 1/1" in r["message"])
    assert restart["service"] == "app:flaky" and restart["attempt"] == 1
    assert isinstance(restart["delay"], float)
    assert restart["error"] == "ValueError: flaky" and restart["error_type"] == "ValueError"
    started = next(r for r in records if r["message"].startswith("app:steady: started as"))
    assert started["pid"] == started["message"].rsplit(" ", 1)[1]  # a Pid, as its string
    mine = next(r for r in records if r["logger"] == "garrison.app")
    assert mine["message"] == "order 17"
    assert (mine["workflow_id"], mine["run_id"], mine["ratio"], mine["ok"]) == (
        "order-17", "r1", 0.5, True)
    assert mine["pid"].startswith("processes/")
    # --main of a service that gives up: its last line is JSON too (it was plain text)
    done = cli("--log-format", "json", "run", "app.yaml", "--main", "app:flaky",
               cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    last = next(r for r in records if r["message"].startswith("app:flaky gave up"))
    assert last["message"] == "app:flaky gave up: ValueError: flaky", records
    assert last["level"] == "error" and last["error_type"] == "ValueError"


def test_log_formatters_keep_tracebacks_out_of_the_message():
    import logging

    from garrison._cli import _JsonFormatter, _TextFormatter, split_traceback
    from garrison.actors._values import ErrorInfo, Pid

    try:
        raise KeyError("k")
    except KeyError as exc:
        error = ErrorInfo.from_exception(exc)
        exc_info = sys.exc_info()

    def record(msg, *args, exc_info=None, **extra):
        rec = logging.LogRecord("garrison.t", logging.ERROR, __file__, 1, msg, args, exc_info)
        rec.__dict__.update(extra)
        return rec

    as_json = _JsonFormatter()
    # a record whose message has the traceback appended (the process host's exit log)
    out = json.loads(as_json.format(record("%s failed: %s\n%s", "w", error, error.traceback)))
    assert out["message"] == "w failed: KeyError: 'k'"
    assert out["traceback"] == error.traceback
    # exc_info, or a traceback= field: the same place
    out = json.loads(as_json.format(record("oops", exc_info=exc_info, attempt=3)))
    assert out["message"] == "oops" and out["attempt"] == 3
    assert out["traceback"].startswith("Traceback") and "KeyError: 'k'" in out["traceback"]
    out = json.loads(as_json.format(record("x", traceback=error.traceback, error=error,
                                           pid=Pid("processes", "a.1"), delay=float("inf"))))
    assert out["traceback"] == error.traceback.rstrip()
    assert (out["error"], out["error_type"]) == ("KeyError: 'k'", "KeyError")
    assert (out["pid"], out["delay"]) == ("processes/a.1", "inf")
    # the text format prints a traceback= field below the line
    text = _TextFormatter("%(message)s").format(record("x", traceback=error.traceback))
    assert text == "x\n" + error.traceback.rstrip()
    assert split_traceback("two\nlines") == ("two\nlines", None)
    # control characters of a workflow's error (a terminal escape that clears the
    # screen, a carriage return that writes over the line) are shown escaped in the
    # text format (helper-215); a tab and the traceback's newlines stay
    text = _TextFormatter("%(message)s").format(record(
        "w failed: RuntimeError: \x1b[2J\x1b]0;owned\x07gone\rfake\tend"))
    assert text == "w failed: RuntimeError: \\x1b[2J\\x1b]0;owned\\x07gone\\rfake\tend"


def test_run_s_own_line_for_a_failed_root_escapes_control_characters(
        capsys: pytest.CaptureFixture[str]) -> None:
    """helper-221: the log line above it showed them escaped; this last line wrote the
    terminal escape and the carriage return raw."""
    from garrison._cli import _run_failed

    _run_failed("l:bad failed", ValueError("evil\x1b[2J\rX\tY"))
    assert capsys.readouterr().err == "garrison run: l:bad failed: evil\\x1b[2J\\rX\tY\n"


def test_run_config_until_sigterm_then_graceful_stop(tmp_path):
    (tmp_path / "svc.py").write_text(textwrap.dedent("""
        import sys
        from garrison import process, EventKind
        async def first():
            ev = await process.events().receive()
            print("first got", ev.kind, flush=True)
        async def second():
            try:
                await process.inbox().receive()
            finally:
                print("second stopped", flush=True)
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: first_fn, kind: process.py, source: "svc:first"}
          - {name: second_fn, kind: process.py, source: "svc:second"}
          - {name: first, kind: process.service, process: first_fn,
             lifecycle: {auto_start: true}}
          - {name: second, kind: process.service, process: second_fn,
             lifecycle: {auto_start: true, requires: [first], stop_timeout: 200ms}}
    """))
    proc = start_run(tmp_path)
    try:
        seen = read_until(proc, "app:second: started")
        assert "app:second: started" in seen, seen
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    # reverse dependency order: second (terminated after its 200ms) before first (CANCEL)
    assert out.splitlines() == ["second stopped", "first got EXIT".replace("EXIT", "CANCEL")]
    assert "SIGTERM" in err and "Traceback" not in err


def test_second_signal_forces_an_immediate_stop(tmp_path):
    (tmp_path / "slow.py").write_text(textwrap.dedent("""
        import trio
        async def deaf():
            with trio.CancelScope(shield=True):   # ignores CANCEL and termination
                await trio.sleep(3600)
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: deaf_fn, kind: process.py, source: "slow:deaf"}
          - {name: deaf, kind: process.service, process: deaf_fn,
             lifecycle: {auto_start: true, stop_timeout: 1h}}
    """))
    proc = start_run(tmp_path)
    try:
        assert "app:deaf: started" in read_until(proc, "app:deaf: started")
        proc.send_signal(signal.SIGTERM)
        assert "shutting down" in read_until(proc, "shutting down")
        time.sleep(0.3)
        assert proc.poll() is None  # still waiting for the service's 1h stop timeout
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc, timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "forcing an immediate stop" in err


_QUIET_APP = """
    version: "1.0"
    namespace: app
    entries:
      - {name: idle_fn, kind: process.py, source: "idle:idle"}
      - {name: idle, kind: process.service, process: idle_fn,
         lifecycle: {auto_start: true}}
"""


def _quiet_app(where: Path) -> None:
    (where / "idle.py").write_text(textwrap.dedent("""
        import sys
        import trio
        async def idle():
            print("idle started", flush=True, file=sys.stderr)
            await trio.sleep_forever()
    """))
    (where / "app.yaml").write_text(textwrap.dedent(_QUIET_APP))


@pytest.mark.parametrize("moment", [
    "garrison._cli_signals",  # the first thing garrison imports: trio, the rest to come
    "trio",  # halfway
    "garrison._cli",  # all imported: the command parses, loads the config, starts trio
    "idle started",  # the node runs
])
def test_the_first_sigint_at_any_moment_exits_cleanly(tmp_path, moment):
    """A Ctrl-C in the first half second of ``garrison run`` (as garrison was still
    being imported, before the command listened for signals) was a KeyboardInterrupt
    traceback out of whatever module was importing, not the clean stop (exit 0) of a
    later one. ``-X importtime`` logs each import as it ends: the signal comes right
    after the one named (or once the node runs)."""
    _quiet_app(tmp_path)
    proc = start_run(tmp_path, "app.yaml", "--store", "app.db", flags=("-X", "importtime"))
    try:
        marker = moment if " " in moment else f" {moment}\n"  # (indented by depth)
        seen = read_until(proc, marker)
        assert marker in seen, seen[-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = finish(proc, timeout=30)
    finally:
        proc.kill()
    err = seen + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert proc.returncode == 0, err[-3000:]
    assert "received SIGINT: shutting down" in err


def test_a_second_early_sigint_stops_at_once(tmp_path):
    """Two Ctrl-C while garrison still imports: the second forces the stop, as it does
    once the node runs (exit 128 + 2), without a traceback."""
    _quiet_app(tmp_path)
    proc = start_run(tmp_path, "app.yaml", "--store", "app.db", flags=("-X", "importtime"))
    try:
        seen = read_until(proc, " garrison._cli_signals\n")
        proc.send_signal(signal.SIGINT)
        # (two signals sent at once may reach it as one: the second once it went on)
        seen += read_until(proc, "\n")
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = finish(proc, timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, (seen + err)[-3000:]
    assert "Traceback" not in err


def test_a_script_running_its_node_at_import_stops_on_the_first_sigint(tmp_path):
    """The command notes a signal until it listens (see the tests above); a script
    whose ``garrison.run(main)`` runs as ``garrison run`` imports it gets Ctrl-C back
    as its KeyboardInterrupt: the first one stops it (it was only noted, and the run
    went on until a second one)."""
    (tmp_path / "job.py").write_text(textwrap.dedent("""
        import sys
        import garrison, trio
        async def main():
            print("job running", file=sys.stderr, flush=True)
            await trio.sleep_forever()
        garrison.run(main)
    """))
    proc = start_run(tmp_path, "job.py")
    try:
        seen = read_until(proc, "job running")
        assert "job running" in seen, seen
        proc.send_signal(signal.SIGINT)
        _, err = finish(proc, timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, seen + err
    assert "Traceback" not in err


@pytest.mark.parametrize("ending, signum, code", [
    ('return "done"', signal.SIGTERM, 0),
    ('raise ValueError("x")', signal.SIGINT, 1),
])
def test_sigterm_after_the_node_stopped_is_not_swallowed(tmp_path, ending, signum, code):
    """Once ``garrison run``'s node has stopped, the command stops listening for
    signals: a SIGTERM while the process still waits (here for a thread of the
    application, at interpreter exit) exits at once. The noting handlers of
    ``_cli_signals`` came back when the command's signal receiver closed, so such a
    SIGTERM was only noted, and the process ran on until a second one. The root's
    outcome is the exit status (0 done, 1 failed): the signal only ends the wait (it
    exited 128 + the signal, a failed root's 1 lost)."""
    (tmp_path / "job.py").write_text(textwrap.dedent(f"""
        import sys, threading, time

        def linger():
            while threading.main_thread().is_alive():
                time.sleep(0.01)
            print("lingering at exit", file=sys.stderr, flush=True)
            time.sleep(120)

        async def main():
            threading.Thread(target=linger).start()  # (not a daemon: exit waits)
            {ending}
    """))
    proc = start_run(tmp_path, "job.py")
    try:
        seen = read_until(proc, "lingering at exit", timeout=60)
        assert "lingering at exit" in seen, seen
        proc.send_signal(signum)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the signal was swallowed: the process runs on")
    finally:
        proc.kill()
    assert proc.returncode == code, seen
    assert proc.stdout is not None
    assert proc.stdout.read() == ("done\n" if code == 0 else ""), seen


def test_a_spawned_child_of_the_garrison_command_takes_sigterm(tmp_path):
    """A ``multiprocessing`` child started the ``spawn`` way by an application run as
    the ``garrison`` console script gets the parent's ``sys.argv`` (``.../garrison``)
    before it imports garrison: it is not the command, and must not note SIGTERM (its
    ``terminate()`` did nothing: the child ran on)."""
    script = Path(sys.executable).parent / "garrison"
    if not script.exists():
        pytest.skip("no garrison console script next to the interpreter")
    (tmp_path / "job.py").write_text(textwrap.dedent("""
        import multiprocessing, time
        import trio

        def child(ready):
            import garrison  # (as the application's modules do)
            ready.set()
            time.sleep(120)

        def run_child():
            ctx = multiprocessing.get_context("spawn")
            ready = ctx.Event()
            proc = ctx.Process(target=child, args=(ready,))
            proc.start()
            assert ready.wait(60), "the child never ran"
            proc.terminate()
            proc.join(30)
            code = proc.exitcode
            if code is None:
                proc.kill()
                proc.join()
            return code

        async def main():
            return f"child exit {await trio.to_thread.run_sync(run_child)}"
    """))
    done = subprocess.run([str(script), "run", "job.py"], cwd=tmp_path, text=True,
                          capture_output=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"child exit {-signal.SIGTERM}", done.stderr[-3000:]


def test_a_signal_during_start_up_stops_the_node_at_once(tmp_path):
    """The first SIGINT while a service waited to run (a pool slot held by another)
    was acted on only once start-up ended: after the service's whole start_timeout,
    with a restart of it, the "running" banner, and then the stop."""
    (tmp_path / "svc.py").write_text(textwrap.dedent("""
        import trio
        async def hog():
            try:
                await trio.sleep_forever()
            finally:
                print("hog stopped", flush=True)
        async def late():
            print("late ran", flush=True)
            await trio.sleep_forever()
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: pool, kind: process.host, workers: 1}
          - {name: hog_fn, kind: process.py, source: "svc:hog"}
          - {name: late_fn, kind: process.py, source: "svc:late"}
          - {name: hogs, kind: process.service, process: hog_fn, host: pool,
             lifecycle: {auto_start: true}}
          - {name: lates, kind: process.service, process: late_fn, host: pool,
             lifecycle: {auto_start: true, start_timeout: 60s}}
    """))
    proc = start_run(tmp_path, "app.yaml", "--store", "app.db")
    try:
        seen = read_until(proc, "app:lates: spawned as")
        assert "it waits for a worker of host 'app:pool', whose 1 worker(s) are busy" \
            in seen, seen
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        began = time.monotonic()
        out, err = finish(proc, timeout=20)
        took = time.monotonic() - began
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert took < 10, (took, err)
    assert "received SIGINT: shutting down" in err
    assert "Ctrl-C to stop" not in err and "restart" not in err and "Traceback" not in err
    # README: no failure logged (it was "app:lates ... exited abnormally: Terminated")
    assert "abnormally" not in err and "WARNING" not in err, err
    assert "app:hogs: stopping" in err
    assert out == "hog stopped\n"


def test_run_starts_although_an_auto_start_service_cannot_spawn(tmp_path):
    (tmp_path / "svc.py").write_text(textwrap.dedent("""
        from garrison import process
        async def idle(*args):
            await process.events().receive()   # returns on CANCEL
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: idle_fn, kind: process.py, source: "svc:idle"}
          - {name: pool, kind: process.host, workers: 1}
          - {name: hog, kind: process.service, process: idle_fn, host: pool,
             lifecycle: {auto_start: true}}
          - {name: slow, kind: process.service, process: idle_fn, host: pool,
             lifecycle: {auto_start: true, start_timeout: 200ms,
                         restart: {max_attempts: 1, initial_delay: 50ms}}}
          - {name: fine, kind: process.service, process: idle_fn,
             lifecycle: {auto_start: true}}
    """))
    # (a workflow service whose input cannot be stored used to be the second one that
    # gave up here: the config check refuses that input now, as the next test's)
    proc = start_run(tmp_path)
    try:
        seen = read_until(proc, "app:slow: giving up", timeout=15)
        assert "app:fine: started" in seen, seen
        assert "app:slow: giving up" in seen, seen
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in seen + err
    assert "app:fine: stopping" in err


def test_run_refuses_a_service_input_the_store_cannot_hold_without_traceback(tmp_path):
    """An input of a workflow service or schedule that the store cannot hold (an
    unquoted YAML date, bytes) is a config error: check exits 1, run exits 2, each
    line naming the file, entry, field and type (run died with a 39-line traceback)."""
    (tmp_path / "jobs.py").write_text("async def report(day: str):\n    return day\n")
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: report, kind: workflow.py, source: "jobs:report"}
          - {name: nightly, kind: workflow.schedule, workflow: report, every: 1h,
             input: [2024-01-01]}
          - {name: bad, kind: process.service, process: report, host: workflows,
             input: [!!binary aGk=]}
    """))
    config = str(tmp_path / "app.yaml")
    at = f"{config}: entry 'app:{{}}' (index {{}}): field 'input': cannot store the input "
    for command, code in (("check", 1), ("run", 2)):
        done = cli(command, config)
        assert done.returncode == code, done.stderr
        out = done.stdout + done.stderr
        assert "Traceback" not in out, out
        assert at.format("nightly", 1) + "[datetime.date(2024, 1, 1)] for app:report: a " \
            "value of type datetime.date at [0] cannot be converted to JSON" in out
        assert at.format("bad", 2) + "[b'hi'] for app:report: a value of type bytes " \
            "at [0] cannot be converted to JSON" in out


def test_run_reports_a_bad_config_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: '1.0'\nnamespace: app\nentries:\n  - {name: x, kind: nope}\n"
                   "  - {name: y, kind: [process.py]}\n")
    done = cli("run", str(bad))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "ExceptionGroup" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "garrison run: invalid config:"
    assert lines[1].startswith(f"{bad}: entry 'app:x' (index 0): field 'kind': unknown kind 'nope'")
    assert lines[2].startswith(f"{bad}: entry 'app:y' (index 1): field 'kind': unknown kind")
    checked = cli("check", str(bad))
    assert checked.returncode == 1 and "Traceback" not in checked.stdout + checked.stderr
    assert checked.stdout.splitlines() == lines[1:]


def test_run_and_check_report_unusable_workflow_host_stores(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: empty, kind: workflow.host, store: ""}
          - {name: one, kind: workflow.host, store: one.db}
          - {name: two, kind: workflow.host, store: ./one.db}
    """))
    for command, code in (("run", 2), ("check", 1)):
        done = cli(command, "app.yaml", cwd=app)
        assert done.returncode == code, done.stderr
        out = done.stdout + done.stderr
        assert "Traceback" not in out
        assert ("app.yaml: entry 'app:empty' (index 0): field 'store': expected a file path"
                in out)
        assert ("app.yaml: entry 'app:two' (index 2): field 'store': expected a store of its "
                "own" in out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]  # no lock file beside it
    assert sorted(p.name for p in app.iterdir()) == ["app.yaml"]


def test_a_store_in_a_folder_that_cannot_be_searched_is_one_line_not_a_traceback(
        tmp_path: Path) -> None:
    """helper-409: ``Path.is_dir()`` raises ``PermissionError`` (rather than say False)
    for a path in a folder this process may not search (no ``x`` permission: another
    user's). ``garrison run --store locked/app.db`` and ``garrison check`` of a config
    whose store is there were a ``PermissionError`` traceback, exit 1. Both say it in
    one line naming the store: run exit 2 (did not start), check exit 1."""
    from test_persistence_file import run_without_override

    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "job.py").write_text("async def main():\n    return 1\n")
    (tmp_path / "app.yaml").write_text("version: '1.0'\nnamespace: app\nentries:\n"
                                       "  - {name: wf, kind: workflow.host, "
                                       "store: locked/app.db}\n")
    code = textwrap.dedent(f"""
        import os, subprocess, sys
        for args in (["run", "job.py", "--store", "locked/app.db"], ["check", "app.yaml"]):
            done = subprocess.run([sys.executable, "-m", "garrison", *args],
                                  cwd={str(tmp_path)!r}, capture_output=True, text=True,
                                  env={{**os.environ, "PYTHONPATH": {str(ROOT)!r}}})
            print(done.returncode, repr(done.stdout), repr(done.stderr))
    """)
    locked.chmod(0o600)
    try:
        done = run_without_override(code)
    finally:
        locked.chmod(0o700)
    store = str(tmp_path.resolve() / "locked" / "app.db")
    said = f"cannot reach {store!r}: Permission denied"
    ran = f"garrison run: --store: {said}\n"
    checked = f"app.yaml: entry 'app:wf' (index 0): field 'store': {said}\n"
    assert done.stdout.splitlines() == [
        f"2 '' {ran!r}", f"1 {checked!r} '1 problem(s) found\\n'",
    ], done.stderr + done.stdout


def test_run_and_check_name_the_entry_and_file_of_a_store_no_node_can_open(tmp_path):
    """A text file as a workflow.host store: check said "ok", and run failed naming
    neither the entry nor the config. Both report it as a config problem; neither
    creates a file (the text file got a lock file beside it from run)."""
    (tmp_path / "notdb.db").write_text("hello\n")
    (tmp_path / "app.yaml").write_text("version: '1.0'\nnamespace: app\nentries:\n"
                                       "  - {name: a, kind: workflow.host, store: notdb.db}\n")
    line = (f"app.yaml: entry 'app:a' (index 0): field 'store': cannot be opened: store "
            f"'{tmp_path.resolve()}/notdb.db': not a SQLite database, so not a garrison "
            "store (its first bytes are not SQLite's)")
    checked = cli("check", "app.yaml", cwd=tmp_path)
    assert (checked.returncode, checked.stdout) == (1, line + "\n"), checked
    ran = cli("run", "app.yaml", cwd=tmp_path, timeout=30)
    assert ran.returncode == 2, ran
    assert ran.stderr.splitlines() == ["garrison run: invalid config:", line], ran.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.yaml", "notdb.db"]


def test_check_reports_a_module_that_exits_at_import(tmp_path):
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "app.yaml").write_text(
        "version: '1.0'\nnamespace: app\nentries:\n"
        "  - {name: p, kind: process.py, source: 'quits:main'}\n")
    done = cli("check", "app.yaml", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ("app.yaml: entry 'app:p' (index 0): field 'source': module 'quits' "
                           "could not be imported: SystemExit: 3\n")


def test_run_reports_store_errors_at_start_up_in_one_line(tmp_path):
    import sqlite3

    from garrison.persistence import SQLiteStore

    (tmp_path / "prog.py").write_text("async def main():\n    return 'ran'\n")
    (tmp_path / "app.yaml").write_text("version: '1.0'\nnamespace: app\nentries: []\n")
    held = SQLiteStore(tmp_path / "held.db")  # this process is the node that holds it
    try:
        for target in ("prog.py", "app.yaml"):
            done = cli("run", target, "--store", "held.db", cwd=tmp_path)
            assert done.returncode == 2, done.stderr
            lock = os.path.realpath(tmp_path / "held.db") + ".lock"  # locked by the real file
            # what a CLI user can do (not the Python hint lock=False)
            assert done.stderr.splitlines() == [
                "garrison run: store 'held.db' is locked: another node has it open (lock file "
                f"'{lock}'); stop that node first, or leave it running and inspect and drive "
                "its workflows beside it with `garrison workflows --store held.db list` (and "
                "show, signal, cancel, ...)"]
        beside = cli("workflows", "--store", "held.db", "list", cwd=tmp_path)
        assert beside.returncode == 0, beside.stderr  # the advice works
        # a Python caller keeps the Python hint
        from garrison import StoreLocked

        try:
            SQLiteStore(tmp_path / "held.db")
        except StoreLocked as exc:
            assert str(exc) == (f"store '{tmp_path / 'held.db'}' is locked: another node has "
                                f"it open (lock file '{lock}'); stop that node first, or read "
                                "it and queue writes for that node beside it with SQLiteStore("
                                f"'{tmp_path / 'held.db'}', lock=False), as garrison workflows "
                                "does (and open_node(store=that) runs a node beside it)")
        else:
            raise AssertionError("a second node opened a held store")
    finally:
        held.close()
    future = sqlite3.connect(tmp_path / "future.db")  # written by a newer garrison
    future.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied REAL)")
    future.execute("INSERT INTO schema_version VALUES (99, 0)")
    future.commit()
    future.close()
    (tmp_path / "folder").mkdir()
    for store, message in [
        ("future.db", "garrison run: store 'future.db' has schema version 99, this version of "
                      "garrison knows schema version"),
        ("folder", f"garrison run: --store: expected a file path, got the folder "
                   f"'{tmp_path.resolve()}/folder'"),
        ("no/such.db", "garrison run: --store: expected a file in an existing folder"),
    ]:
        done = cli("run", "prog.py", "--store", store, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(message), done.stderr
    # the node's own store and a workflow.host entry cannot share a file (with one
    # workflow.host entry, --store is that entry's store: README's `garrison run app.yaml
    # --store app.db` beside `store: app.db` was refused)
    (tmp_path / "one.yaml").write_text("version: '1.0'\nnamespace: app\nentries:\n"
                                       "  - {name: w, kind: workflow.host, store: w.db}\n")
    (tmp_path / "main.py").write_text("async def main():\n    return 'ran one'\n")
    assert cli("run", "one.yaml", "--store", "./w.db", "--main", "main:main",
               cwd=tmp_path).stdout == "ran one\n"
    (tmp_path / "app.yaml").write_text("version: '1.0'\nnamespace: app\nentries:\n"
                                       "  - {name: w, kind: workflow.host, store: w.db}\n"
                                       "  - {name: v, kind: workflow.host, store: v.db}\n")
    done = cli("run", "app.yaml", "--store", "./w.db", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (f"garrison run: --store: expected a store of its own, but "
                           f"'{tmp_path.resolve()}/w.db' is also the store of workflow.host "
                           "entry 'app:w'\n")
    assert cli("run", "prog.py", "--store", "ok.db", cwd=tmp_path).stdout == "ran\n"


def test_run_script_stops_gracefully_on_sigterm(tmp_path):
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        import logging
        import trio
        import garrison
        from garrison import process

        async def approval():                       # a workflow that waits for a message
            msg = await process.inbox().receive()
            return msg.payload

        async def helper():
            try:
                await trio.sleep_forever()
            finally:
                print("helper stopped", flush=True)

        async def main():
            await process.spawn(helper)
            await process.spawn(approval, host="workflows")
            logging.getLogger("garrison.prog").warning("ready")
            await trio.sleep_forever()
    """))
    proc = start_run(tmp_path, "prog.py", "--store", "app.db")
    try:
        seen = read_until(proc, "ready")
        assert "ready" in seen, seen
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGTERM: shutting down" in err and "Traceback" not in err
    assert out == "helper stopped\n"
    listed = cli("workflows", "--store", "app.db", "list", "--json", cwd=tmp_path)
    assert [w["status"] for w in json.loads(listed.stdout)] == ["waiting"], listed.stdout


def test_run_module_function_gets_the_same_graceful_stop(tmp_path):
    (tmp_path / "jobs.py").write_text(textwrap.dedent("""
        import logging
        import trio
        async def serve():
            logging.getLogger("garrison.jobs").warning("serving")
            try:
                await trio.sleep_forever()
            finally:
                print("serve stopped", flush=True)
    """))
    proc = start_run(tmp_path, "jobs:serve")
    try:
        assert "serving" in read_until(proc, "serving")
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "serve stopped\n" and "received SIGINT" in err


def test_help_is_plain_text_everywhere():
    import argparse

    from garrison._cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    seen = list(parsers(build_parser()))
    assert {p.prog for p in seen} >= {"garrison", "garrison run", "garrison check",
                                      "garrison workflows", "garrison workflows list"}
    for parser in seen:
        text = parser.format_help()
        assert "`" not in text, (parser.prog, text)
    assert cli("--help").stdout.startswith("usage: garrison")


def test_a_verb_s_own_help_says_what_it_does():
    # (`garrison workflows prune --help` showed its options only: what it deletes
    # was said in `garrison workflows --help` alone)
    def helped(*verb):
        out = cli(*verb, "--help").stdout
        assert out.startswith("usage: garrison " + " ".join(verb)), out
        return " ".join(out.split("\noptions:")[0].split())  # (as argparse wraps it)

    assert "] Delete the ended workflows (completed, failed, cancelled) that ended" in \
        helped("workflows", "prune")
    assert "] Resume a failed or blocked workflow by replay from its journal (or " \
        "several: IDs, or a selection)." in helped("workflows", "retry")
    assert "] List schedules (--json" in helped("schedules", "list")


def test_run_on_a_postgresql_store(tmp_path, postgres_stores_url):
    from garrison.persistence import PostgresStore

    url = postgres_stores_url + "?schema=cli_run"
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        import garrison

        async def main():
            node = garrison.current_node()
            store = node.hosts["workflows"].store
            return f"{type(store).__name__} {store.path}"
    """))
    done = cli("run", "prog.py", "--store", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"PostgresStore {url}"
    held = PostgresStore(url)  # another writer: a PostgreSQL store is shared (a cluster)
    try:
        done = cli("run", "prog.py", "--store", url, cwd=tmp_path)
    finally:
        held.close()
    assert done.returncode == 0, done.stderr
    done = cli("run", "prog.py", "--store", url.replace("/stores?", "/nowhere?"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"garrison run: store '{url.replace('/stores?', '/nowhere?')}': cannot connect: "
        'database "nowhere" does not exist']


def test_run_checks_main_before_anything_starts(tmp_path):
    """A mistyped --main is one line and exit 2, before a service starts or a stored
    workflow resumes (not a traceback once the node runs)."""
    (tmp_path / "svc.py").write_text(textwrap.dedent("""
        from pathlib import Path

        async def marker():
            Path("started").write_text("yes")

        async def main():
            return "ran"
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: shop
        entries:
          - {name: main, kind: process.py, source: "svc:main"}
          - {name: mark, kind: process.py, source: "svc:marker"}
          - {name: marker, kind: process.service, process: shop:mark,
             lifecycle: {auto_start: true}}
          - {name: workflows, kind: workflow.host}
    """))
    for main, why in [
        ("shop:nope", "no config entry 'shop:nope'"),
        ("main", "no config entry 'main' (did you mean 'shop:main'?)"),
        ("shop:workflows", "config entry 'shop:workflows' is a workflow.host, not a runnable "
                           "target"),
    ]:
        done = cli("run", "app.yaml", "--main", main, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            f"garrison run: --main {main!r}: {why}; expected the id (namespace:name) of a "
            "process.py, workflow.py or process.service entry of app.yaml: shop:main, "
            "shop:mark, shop:marker, or a module:function (an async def) that imports\n")
        assert not (tmp_path / "started").exists()
    (tmp_path / "prog.py").write_text("async def main():\n    return 'ran'\n")
    done = cli("run", "prog.py", "--main", "shop:main", cwd=tmp_path)
    assert done.returncode == 2 and "is not a config" in done.stderr, done.stderr
    done = cli("run", "app.yaml", "--main", "shop:main", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == "ran\n", done.stderr


def test_run_main_of_a_workflow_entry_runs_a_durable_workflow(tmp_path):
    """helper-213: ``--main`` of a ``workflow.py`` entry, which README lists, ran its
    function as a plain process (``NotInProcess: workflow.sleep() must run inside a
    workflow``); it runs as a durable workflow on the config's workflow host, its
    result printed (exit 0) or its failure said (exit 1). A ``function.py`` entry (an
    activity) is no root: exit 2, one line (a plain ``def`` one was a traceback)."""
    (tmp_path / "wfm.py").write_text(textwrap.dedent("""
        from garrison import workflow

        async def wm(x: int = 20) -> int:
            await workflow.sleep("1ms")
            return x + 1

        async def bad() -> None:
            await workflow.sleep("1ms")
            raise ValueError("no luck")

        def fn() -> int:
            return 1
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: wm, kind: workflow.py, source: "wfm:wm"}
          - {name: bad, kind: workflow.py, source: "wfm:bad"}
          - {name: fn, kind: function.py, source: "wfm:fn"}
          - {name: workflows, kind: workflow.host, store: app.db}
    """))
    done = cli("run", "app.yaml", "--main", "app:wm", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "21\n"), done.stderr
    assert "Traceback" not in done.stderr
    done = cli("workflows", "--store", "app.db", "list", "--json", cwd=tmp_path)
    assert [(w["name"], w["status"]) for w in json.loads(done.stdout)] == [
        ("wfm:wm", "completed")], done.stdout
    done = cli("run", "app.yaml", "--main", "app:bad", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr.splitlines()[-1].startswith("garrison run: app:bad failed: "
                                                   "ValueError: no luck"), done.stderr
    done = cli("run", "app.yaml", "--main", "app:fn", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "garrison run: --main 'app:fn': config entry 'app:fn' is a function.py (an "
        "activity, run by workflows), not a runnable target; expected the id "
        "(namespace:name) of a process.py, workflow.py or process.service entry of "
        "app.yaml: app:wm, app:bad, or a module:function (an async def) that imports\n")


def test_run_config_main_takes_a_module_function(tmp_path):
    """``garrison run CONFIG --main mod:fn`` (API.md): a module's async function as the
    root process, beside the config's services (it took config entry ids only)."""
    (tmp_path / "svc.py").write_text(textwrap.dedent("""
        import garrison

        async def echo():
            from garrison import process
            while True:
                msg = await process.inbox().receive()
                await msg.reply(msg.payload * 2)

        async def root():
            return await garrison.current_node().call("shop:echo", "double", 21)
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: shop
        entries:
          - {name: echo_fn, kind: process.py, source: "svc:echo"}
          - {name: echo, kind: process.service, process: shop:echo_fn,
             lifecycle: {auto_start: true}}
    """))
    done = cli("run", "app.yaml", "--main", "svc:root", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == "42\n", done.stderr
    done = cli("run", "app.yaml", "--main", "svc:nope", cwd=tmp_path)
    assert done.returncode == 2 and "--main 'svc:nope': no config entry" in done.stderr


def test_run_config_main_of_a_module_both_folders_hold_is_refused_naming_both(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--main tasks:main`` with a ``tasks.py`` in the current directory and another in
    the config's folder (which the config's ``source: tasks:svc`` imported) silently ran
    the config folder's ``main`` (exit 0), and ``--main tasks:report``, defined in the
    current directory's only, said it had no such function: one module name, two files,
    refused naming both (exit 2), as a config source's is."""
    from garrison import _cli

    module = f"tasks_{tmp_path.name.replace('-', '_')}"
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{module}.py").write_text(
        "async def main():\n    return 'cwd main'\nasync def report():\n    return 'r'\n")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / f"{module}.py").write_text(
        "async def svc():\n    return 'cfg svc'\nasync def main():\n    return 'cfg main'\n")
    (tmp_path / "cfg" / "app.yaml").write_text(
        f'version: "1.0"\nnamespace: app\nentries:\n'
        f'  - {{name: svc, kind: process.py, source: "{module}:svc"}}\n')
    try:
        for func in ("main", "report"):
            assert _cli.main(["run", "cfg/app.yaml", "--main", f"{module}:{func}"]) == 2
            out, err = capsys.readouterr()
            assert (out, err) == ("", (
                f"garrison run: --main '{module}:{func}': the module {module!r} is two files, "
                f"{str(tmp_path / module) + '.py'!r} in the current directory and "
                f"{str(tmp_path / 'cfg' / module) + '.py'!r} in the config's folder: Python "
                "holds one module per name, so one would run in place of the other; give the "
                "modules distinct names or put each in a package of a distinct name\n"))
        assert _cli.main(["check", "cfg/app.yaml"]) == 0  # (no --main: no question)
    finally:
        sys.modules.pop(module, None)


def _verbs(group: str) -> dict[str, list[str]]:
    """Each verb of ``garrison GROUP`` and a value for each of its positionals."""
    import argparse

    from garrison._cli import build_parser

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    out = {}
    for name, verb in subparsers(subparsers(build_parser())[group]).items():
        out[name] = [f"{a.dest}-value" if a.nargs is None else "[]" for a in verb._actions
                     if not a.option_strings]
    return out


def test_every_option_of_a_command_group_is_accepted_before_or_after_its_verb(
        tmp_path: Path) -> None:
    """--store, --json, --log-level and --log-format, on every verb of workflows,
    schedules and nodes: the same command either way; --store given on neither side
    is an error naming it."""
    import pytest

    from garrison._cli import build_parser

    verbs = {group: _verbs(group) for group in ("workflows", "schedules", "nodes")}
    assert sorted(verbs["workflows"]) == sorted([
        "list", "show", "history", "signal", "resolve", "reject", "cancel", "start",
        "terminate", "retry", "prune", "replay", "export"])
    assert sorted(verbs["schedules"]) == ["delete", "list", "pause", "resume", "trigger"]
    assert sorted(verbs["nodes"]) == ["drain", "list"]
    options = ["--store", "s.db", "--json", "--log-level", "debug", "--log-format", "json"]
    checked = 0
    required = {"prune": ["--older-than", "30d"]}  # (an option a verb cannot go without)
    for group, group_verbs in verbs.items():
        for verb, given in group_verbs.items():
            positionals = [*given, *required.get(verb, [])]
            runs = [[group, *options, verb, *positionals],
                    [group, verb, *positionals, *options],
                    [group, "--store", "s.db", "--log-level", "debug", verb, *positionals,
                     "--json", "--log-format", "json"]]
            parsed = [vars(build_parser().parse_args(argv)) for argv in runs]
            for args in parsed:
                del args["group_parser"]
                del args["func"]
                assert (args["store"], args["json"], args["log_level"], args["log_format"]) \
                    == ("s.db", True, "debug", "json"), (group, verb, args)
            assert parsed[0] == parsed[1] == parsed[2], (group, verb)
            checked += 1
    assert checked == 20
    parsed = build_parser().parse_args(["workflows", "--store", "a.db", "list", "--store",
                                        "b.db"])
    assert parsed.store == "b.db"  # given after the verb, it wins
    for group, verb in (("workflows", "list"), ("schedules", "list"), ("nodes", "list")):
        args = build_parser().parse_args([group, verb])
        with pytest.raises(SystemExit) as info:
            args.func(args)
        assert info.value.code == 2


def test_store_after_the_verb_on_the_command_line(tmp_path: Path) -> None:
    """The forms the README shows, end to end: replay, start, schedules list and a
    missing --store."""
    db = str(tmp_path / "s.db")
    env_cwd = tmp_path
    (tmp_path / "jobs.py").write_text("async def job(n: int) -> int:\n    return n\n")
    made = subprocess.run([sys.executable, "-c", "from garrison.persistence import "
                           f"SQLiteStore; SQLiteStore({db!r}).close()"], cwd=ROOT)
    assert made.returncode == 0
    started = cli("workflows", "start", "jobs:job", "[3]", "--id", "j", "--store", db,
                  "--json", cwd=env_cwd)
    assert (started.returncode, json.loads(started.stdout)) == (
        0, {"workflow_id": "j", "created": True, "name": "jobs:job"}), started.stderr
    listed = cli("workflows", "list", "--store", db, cwd=env_cwd)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].startswith("j "), listed
    replayed = cli("workflows", "replay", "--store", db, "--json", cwd=env_cwd)
    assert replayed.returncode == 0, replayed.stderr
    assert [r["workflow_id"] for r in json.loads(replayed.stdout)] == ["j"]
    schedules = cli("schedules", "list", "--store", db, cwd=env_cwd)
    assert (schedules.returncode, schedules.stdout) == (0, "no schedules\n"), schedules.stderr
    missing = cli("schedules", "list", cwd=env_cwd)
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[-1] == (
        "garrison schedules: error: the following arguments are required: --store (before "
        "or after the command; or --config FILE naming it)")


def test_a_group_without_its_command_names_the_commands_not_a_variable(capsys) -> None:
    """``garrison schedules --store app.db`` said ``the following arguments are
    required: sc_command``: the parser's variable, not a word the user can act on. It
    lists the commands, as the usage line does."""
    from garrison._cli import build_parser

    for group, verbs in (("workflows", "{list,show,history,"),
                         ("schedules", "{list,pause,resume,trigger,delete}")):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([group, "--store", "app.db"])
        assert exited.value.code == 2
        last = capsys.readouterr().err.splitlines()[-1]
        assert last.startswith(f"garrison {group}: error: the following arguments are "
                               f"required: {verbs}"), last
        assert "_command" not in last


def test_a_libpq_keyword_string_as_a_store_is_refused_without_its_password(
        capsys, tmp_path, monkeypatch) -> None:
    """``host=db password=...`` is no file path: taken as one, it made a SQLite file
    named after it, password and all. Refused, the password masked, on the command
    line, in the API and in a config."""
    from garrison._cli import build_parser
    from garrison.config import check_config

    monkeypatch.chdir(tmp_path)
    dsn = "host=db user=app password=s3cret dbname=orders"
    for command in (["workflows", "list"], ["schedules", "list"]):
        args = build_parser().parse_args([*command, "--store", dsn])
        assert args.func(args) == 2
        _, err = capsys.readouterr()
        assert "libpq keyword string" in err and "postgresql://" in err, err
        assert "s3cret" not in err and err.count("\n") == 1, err
    with pytest.raises(ValueError, match="libpq keyword string") as info:
        garrison.persistence.open_store(dsn)
    assert "s3cret" not in str(info.value)
    (tmp_path / "app.yaml").write_text(
        'version: "1.0"\nnamespace: app\nentries:\n'
        f"  - {{name: w, kind: workflow.host, store: '{dsn}'}}\n")
    problems = check_config(tmp_path / "app.yaml")
    assert len(problems) == 1 and "libpq keyword string" in problems[0], problems
    assert "s3cret" not in problems[0]
    assert list(tmp_path.iterdir()) == [tmp_path / "app.yaml"]  # no file made


def test_a_store_that_names_no_file_is_one_line_and_exit_2(capsys) -> None:
    """``--store ''``, ``:memory:`` or ``file:...`` on every command that opens a store
    as a tool (``workflows``, ``schedules``, ``nodes``, ``ui``): one line naming the
    store, exit 2, as ``garrison run`` does; never the SQLiteStore ValueError's
    traceback."""
    from garrison._cli import build_parser

    commands = [["workflows", "list"], ["workflows", "replay", "--all"],
                ["workflows", "show", "w1"], ["schedules", "list"], ["nodes", "list"],
                ["ui", "--bind", "127.0.0.1:0"]]
    for store in ("", " ", ":memory:", "file::memory:", "file:s.db?mode=memory"):
        for command in commands:
            args = build_parser().parse_args([*command, "--store", store])
            code = args.func(args)
            out, err = capsys.readouterr()
            assert code == 2 and out == "", (store, command, out, err)
            assert err.count("\n") == 1, (store, command, err)
            assert err.startswith(f"garrison {command[0]}: store {store!r}: expected a "
                                  "SQLite file"), (store, command, err)


@pytest.mark.postgres
def test_nodes_ends_quietly_on_a_closed_pipe_and_refuses_a_name_that_is_not_text(
        postgres_url: str) -> None:
    """``garrison nodes --store URL | head -0``: exit 141 and nothing said, as
    ``garrison workflows`` (it was a BrokenPipeError traceback); ``drain $'\\xff'`` (an
    undecodable byte: no store keeps it) is bad arguments, one line, exit 2 (it was a
    psycopg traceback)."""
    from garrison.persistence import open_store

    open_store(postgres_url).close()  # (the schema)
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "garrison", "nodes", "--store",
                               postgres_url], cwd=ROOT, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, "")
    done = subprocess.run([sys.executable, "-m", "garrison", "nodes", "--store",
                           postgres_url, "drain", b"\xff"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("garrison nodes: a node name cannot hold the lone "
                                  "surrogate"), done.stderr


@pytest.mark.postgres
def test_nodes_pads_node_names_to_80_characters_and_never_cuts_one(postgres_url, capsys):
    """A node name of up to 1,000 bytes (allowed) padded every row's NAME column to
    it; then it was cut at 80 characters (``…``), where the name is what ``drain NAME``
    takes. The column is padded to at most 80 characters, a name is whole (a longer one
    pushes its own row's other values along); ``--json`` shows it whole too, and
    ``--wide`` (which ``nodes`` did not take) pads the column to the longest name."""
    from garrison import _cli
    from garrison.persistence import open_store
    from garrison.persistence._pg_cluster import PgCluster

    store = open_store(postgres_url)
    members = [PgCluster(store, name) for name in ("n1", "x" * 1000)]
    try:
        for member in members:
            member.join(member.new_epoch())
        assert _cli.main(["nodes", "--store", postgres_url]) == 0
        header, *rows = capsys.readouterr().out.splitlines()
        assert header.startswith("NAME" + " " * 78 + "STATUS  "), header
        assert [r[:90] for r in rows] == ["n1" + " " * 80 + "active  ",
                                          "x" * 90], rows
        assert rows[1].startswith("x" * 1000 + "  active  "), rows
        for wide in (["--wide"], ["list", "--wide"]):  # (list: the default verb)
            assert _cli.main(["nodes", "--store", postgres_url, *wide]) == 0
            header, *rows = capsys.readouterr().out.splitlines()
            assert header.startswith("NAME" + " " * 998 + "STATUS  "), header
            assert [r[:1010] for r in rows] == ["n1" + " " * 1000 + "active  ",
                                                "x" * 1000 + "  active  "], rows
        assert _cli.main(["nodes", "--store", postgres_url, "--json"]) == 0
        assert [n["name"] for n in json.loads(capsys.readouterr().out)] == ["n1", "x" * 1000]
    finally:
        for member in members:
            member.close()
        store.close()


@pytest.mark.postgres
def test_nodes_of_a_cluster_no_node_is_in_says_so(postgres_url, capsys):
    """nu463: ``garrison nodes`` of a store no node runs on printed a bare header row,
    where ``workflows list`` and ``schedules list`` say ``no workflows`` and ``no
    schedules``. It says ``no nodes``; ``--json`` is still ``[]``."""
    from garrison import _cli
    from garrison.persistence import open_store

    open_store(postgres_url).close()
    for argv in (["nodes", "--store", postgres_url], ["nodes", "list", "--store", postgres_url]):
        assert _cli.main(argv) == 0
        assert capsys.readouterr().out == "no nodes\n"
    assert _cli.main(["nodes", "--store", postgres_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_run_of_a_target_whose_module_raises_at_import_is_one_line_naming_where(tmp_path):
    """A script (or ``--main module:function``) whose module raises as it is imported
    (not an ImportError: a RuntimeError of its own) cannot be the root: exit 2, one line
    with the exception's type, message and where it was raised (it was a traceback,
    exit 1; with ``--main``, chained to the config's KeyError)."""
    (tmp_path / "boom.py").write_text("x = 1\nraise RuntimeError('boom at import')\n")
    (tmp_path / "app.yaml").write_text("version: '1.0'\nnamespace: app\nentries: []\n")
    for args, shown in ((["boom.py"], "'boom.py'"),
                        (["app.yaml", "--main", "boom:main"], "'boom'")):
        done = cli("run", *args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, \
            done.stderr
        assert f"cannot import {shown}: RuntimeError: boom at import (raised at " \
            in done.stderr, done.stderr
        assert "boom.py:2)" in done.stderr, done.stderr


def test_an_import_that_fails_in_a_library_names_the_users_line_first(tmp_path):
    """helper-393: a script whose line 2 is ``json.loads("{")`` said ``(raised at
    .../json/decoder.py:353)``: the user's file and line appeared nowhere. The line
    names the innermost frame of the user's code, then where the library raised; a
    module of the user's own that raises is the user's code too (its line alone)."""
    (tmp_path / "raises.py").write_text('import json\njson.loads("{")\n')
    (tmp_path / "helper.py").write_text("def fail():\n    raise ValueError('no')\n")
    (tmp_path / "uses.py").write_text("import helper\n\nhelper.fail()\n")
    decoder = os.path.join("json", "decoder.py")
    done = cli("run", "raises.py", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "cannot import 'raises.py': JSONDecodeError: " in line, line
    assert " (raised at " in line and "raises.py:2, in " in line, line
    assert line.rpartition(", in ")[2].startswith(decoder) or \
        f"{os.sep}{decoder}:" in line.rpartition(", in ")[2], line
    done = cli("run", "uses.py", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.endswith("helper.py:2)") and ", in " not in line, line


def test_run_with_a_name_no_node_can_have_is_one_line_and_exit_2(tmp_path):
    """``garrison run --name 'a/b'`` (or ``''``): the node would refuse the name as it
    starts (a ValueError traceback, exit 1); it is checked with the other options:
    one line, exit 2, nothing started."""
    (tmp_path / "job.py").write_text("async def main():\n    print('main ran')\n")
    for name, said in (("a/b", "got 'a/b'"), ("", "got ''"), ("x@y", "got 'x@y'")):
        done = cli("run", "job.py", "--name", name, cwd=tmp_path)
        assert done.returncode == 2, (name, done.stderr)
        assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("garrison run: --name: a node name must be a "
                                      "non-empty string"), done.stderr
        assert said in done.stderr, done.stderr


def test_a_node_name_with_spaces_around_it_is_refused_by_run_and_drain(tmp_path, capsys):
    """``garrison run --name ' n5 '`` joined, ``garrison nodes`` showed ``n5`` and
    ``garrison nodes drain n5`` said "no live node named 'n5'": such a name is bad
    input to both commands (exit 2, one line naming it), before any node or store."""
    from garrison import _cli

    (tmp_path / "job.py").write_text("async def main():\n    print('main ran')\n")
    assert _cli.main(["run", str(tmp_path / "job.py"), "--name", " n5 "]) == 2
    done = capsys.readouterr()
    assert done.out == "" and done.err == ("garrison run: --name: a node name must not "
                                           "have spaces around it, got ' n5 '\n"), done
    code = _cli.main(["nodes", "--store", "postgresql://nobody@127.0.0.1:1/none",
                      "drain", "n5 "])
    said = capsys.readouterr().err
    assert code == 2 and "a node name must not have spaces around it, got 'n5 '" in said, \
        said


def test_a_lease_without_a_unit_says_what_to_type(tmp_path, capsys):
    """``garrison run --lease 1`` said "only a number (not a string) means seconds":
    advice no command line can follow (every value there is text). The line says what
    to type; one rule for the command line's durations: a unit is always written."""
    from garrison import _cli

    (tmp_path / "job.py").write_text("async def main():\n    print('main ran')\n")
    for lease, said in (
            ("1", "invalid --lease '1': a duration needs its unit: type 1s for seconds "
                  "(or another unit: ms, m, h, d)\n"),
            ("1.5x", "invalid --lease '1.5x': expected a duration like '250ms', '30s', "
                     "'5m', '1.5h', '2d' or '1h30m' (no spaces)\n")):
        assert _cli.main(["run", str(tmp_path / "job.py"), "--lease", lease]) == 2
        out = capsys.readouterr()
        assert out.err == f"garrison run: {said}" and out.out == "", out


def test_a_handler_the_application_installed_stays_when_the_command_stops_noting():
    """The command puts the usual handlers back when it stops noting signals (before
    a node of ``garrison.run``, after ``garrison run``'s node stopped): only where its
    noting handler still is. A SIGTERM handler the application installed as it was
    imported (and that the node's signal receiver put back as it closed) stays."""
    from garrison import _cli_signals

    def mine(signum: int, frame: object) -> None:  # pragma: no cover - never called
        pass

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, _cli_signals._note)  # as the command's import did
        signal.signal(signal.SIGTERM, mine)  # as the application's import then did
        _cli_signals._deferring = True
        _cli_signals.restore()
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        _cli_signals._deferring = False
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_the_usual_handlers_come_back_however_often_the_command_stops_noting():
    """``restore`` may run more than once (``garrison.run`` in a worker thread of an
    application that ``garrison run`` runs, then the command once its node stopped):
    the first, made while the node's signal receiver held the signals, did nothing, and
    the last, once the receiver had put the noting handlers back, did nothing either
    (it was done already): a SIGTERM after the node stopped was only noted again."""
    from garrison import _cli_signals

    def receiver(signum: int, frame: object) -> None:  # pragma: no cover - never called
        pass

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _cli_signals._deferring = True  # as the command's import made it
        for signum in before:  # the node's signal receiver, while it runs
            signal.signal(signum, receiver)
        _cli_signals.restore()  # (garrison.run, say)
        for signum in before:  # the receiver closes: it puts back what it found
            signal.signal(signum, _cli_signals._note)
        _cli_signals.restore()  # the command, once it stopped listening
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        _cli_signals._deferring = False
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_run_says_when_the_roots_result_cannot_be_shown(tmp_path: Path) -> None:
    """A root whose result's ``__str__`` raises succeeded: ``garrison run`` printed a
    traceback from its own code and exited 1. It says so on one line, exit 0."""
    (tmp_path / "odd.py").write_text(textwrap.dedent("""
        class Odd:
            def __repr__(self):
                raise RuntimeError("no words for it")
            __str__ = __repr__
        async def main():
            return Odd()
    """))
    done = cli("run", "odd.py", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == "", (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert ("garrison run: the result of odd.py cannot be shown: str() of its Odd raised "
            "RuntimeError: no words for it") in done.stderr


def test_ctrl_c_in_a_command_that_is_no_node_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """Ctrl-C during ``garrison check`` (here while it imports a slow module) printed a
    KeyboardInterrupt traceback; it says it was interrupted, exit 130, as a shell
    expects of Ctrl-C."""
    (tmp_path / "slowmod.py").write_text(textwrap.dedent("""
        import pathlib, time
        pathlib.Path("imported").write_text("yes")
        time.sleep(60)
        async def main():
            pass
    """))
    (tmp_path / "app.yaml").write_text(textwrap.dedent("""
        version: "1.0"
        namespace: app
        entries:
          - {name: main, kind: process.py, source: "slowmod:main"}
    """))
    proc = subprocess.Popen([sys.executable, "-m", "garrison", "check", "app.yaml"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "imported").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _out, err = proc.communicate()
    assert err == "garrison check: interrupted\n", err


@pytest.mark.parametrize("argv", [["workflows", "--store", "x.db", "list"],
                                  ["schedules", "--store", "x.db", "list"],
                                  ["check", "app.yaml"]])
def test_a_ctrl_c_noted_before_the_command_listens_is_one_line(
        argv: list[str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGINT that came while garrison was imported is noted, then delivered when the
    command puts the usual handlers back: that ``KeyboardInterrupt`` came out of
    ``restore()``, before the command's ``except KeyboardInterrupt``, as a traceback."""
    from garrison import _cli, _cli_signals

    def delivered() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli_signals, "restore", delivered)
    assert _cli.main(argv) == 130
    assert capsys.readouterr().err == f"garrison {argv[0]}: interrupted\n"


def test_a_verb_s_positional_arguments_may_follow_its_options(capsys) -> None:
    """``garrison workflows start app:flow --id o-17 '[1]'`` said ``garrison: error:
    unrecognized arguments: [1]`` under the usage of ``garrison`` itself: argparse gave
    TARGET and its optional ARGS the one word before ``--id``, so the arguments written
    after it fitted nothing. A verb's positional arguments are read wherever they stand
    among its options (``signal ID --json TOPIC PAYLOAD`` too), as the usage line of
    the verb shows them after its options."""
    from garrison._cli import build_parser

    args = build_parser().parse_args(["workflows", "--store", "app.db", "start", "app:flow",
                                      "--id", "o-17", '[{"id": "o-17"}]'])
    assert (args.target, args.id, args.args) == ("app:flow", "o-17", '[{"id": "o-17"}]')
    args = build_parser().parse_args(["workflows", "signal", "o-17", "--store", "app.db",
                                      "approve", "--json", '{"by": "ann"}'])
    assert (args.id, args.topic, args.payload, args.json) \
        == ("o-17", "approve", '{"by": "ann"}', True)
    args = build_parser().parse_args(["workflows", "--store", "app.db", "terminate", "o-1",
                                      "--reason", "dup", "o-2"])
    assert (args.id, args.reason) == (["o-1", "o-2"], "dup")
    args = build_parser().parse_args(["workflows", "--store", "app.db", "start", "app:flow"])
    assert (args.target, args.args) == ("app:flow", "[]")  # (ARGS stays optional)
    # after --, a word that starts with - is a value, as before
    args = build_parser().parse_args(["workflows", "--store", "app.db", "signal", "--",
                                      "-odd", "adjust", "-1e3"])
    assert (args.id, args.topic, args.payload) == ("-odd", "adjust", "-1e3")
    args = build_parser().parse_args(["workflows", "--store", "app.db", "terminate", "--",
                                      "-a", "-b"])
    assert args.id == ["-a", "-b"]


def test_an_unknown_argument_of_a_verb_is_said_with_the_verb_s_usage(capsys) -> None:
    """``garrison workflows prune --older-than 30d --yes`` said ``garrison: error:
    unrecognized arguments: --yes`` under the usage of ``garrison`` itself, which does
    not show what ``prune`` takes. The verb says it, under its own usage."""
    from garrison._cli import build_parser

    for argv, verb in ((["workflows", "--store", "app.db", "prune", "--older-than", "30d",
                         "--yes"], "workflows prune"),
                       (["schedules", "--store", "app.db", "pause", "s", "--now"],
                        "schedules pause"),
                       (["check", "app.yaml", "--strict"], "check")):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"usage: garrison {verb} "), err
        assert err.splitlines()[-1] == \
            f"garrison {verb}: error: unrecognized arguments: {argv[-1]}", err


def test_an_option_value_that_starts_with_a_dash_says_how_to_write_it(capsys) -> None:
    """A workflow id may start with ``-``, but ``start app:flow --id -x`` said
    ``argument --id: expected one argument`` and no more: argparse reads ``-x`` as an
    option. The error says how to give such a value (``--id=-x``); the value so
    written is taken."""
    from garrison._cli import build_parser

    for argv, option, value in (
            (["workflows", "--store", "app.db", "start", "app:flow", "--id", "-dash"],
             "--id", "-dash"),
            (["workflows", "--store", "app.db", "terminate", "w", "--reason", "-oops"],
             "--reason", "-oops"),
            (["workflows", "--store", "-odd.db", "list"], "--store", "-odd.db")):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(argv)
        assert exited.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(
            f"argument {option}: expected one argument (its value {value!r} starts with "
            f"'-', read as an option: write {option}={value})")
    args = build_parser().parse_args(["workflows", "--store", "app.db", "start", "app:flow",
                                      "--id=-dash"])
    assert args.id == "-dash"
    # a positional value so: after --, as README says
    with pytest.raises(SystemExit):
        build_parser().parse_args(["workflows", "--store", "app.db", "show", "-dash"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "garrison workflows show: error: the following arguments are required: id "
        "('-dash' starts with '-', read as an option: give such a value after --, as in "
        "garrison workflows --store app.db show -- -dash)")
    assert build_parser().parse_args(["workflows", "--store", "app.db", "show", "--",
                                      "-dash"]).id == "-dash"
    # (not where the missing argument is a command: that is said as before)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["workflows", "--store", "app.db", "-x"])
    assert "starts with '-'" not in capsys.readouterr().err
    # an option that is missing its value is said as before
    with pytest.raises(SystemExit):
        build_parser().parse_args(["workflows", "--store", "app.db", "start", "app:flow",
                                   "--id"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "argument --id: expected one argument")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["workflows", "--store", "app.db", "start", "app:flow",
                                   "--id", "--json"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "argument --id: expected one argument")


def test_a_verb_s_arguments_after_its_options_and_after_double_dash(capsys) -> None:
    """README says a verb's arguments may stand among its options, and that after
    ``--`` a value that starts with ``-`` is read as one; but the two together,
    ``signal order-17 adjust --json -- -1e3`` or ``start app:flow --id o-17 -- -``,
    said ``garrison: error: unrecognized arguments: -- -1e3`` under the usage of
    ``garrison``: with ``--`` the verb fell back to argparse's own reading, which gave
    the optional argument the one word before the option. The words before ``--`` are
    read as without it, and those after it follow them, in order, options or not."""
    from garrison._cli import build_parser

    def parsed(*verb: str) -> Any:
        return build_parser().parse_args(["workflows", "--store", "app.db", *verb])

    args = parsed("signal", "order-17", "adjust", "--json", "--", "-1e3")
    assert (args.id, args.topic, args.payload, args.json) \
        == ("order-17", "adjust", "-1e3", True)
    args = parsed("start", "app:flow", "--id", "o-17", "--", "-")
    assert (args.target, args.id, args.args) == ("app:flow", "o-17", "-")
    args = parsed("signal", "--json", "w", "--", "adjust", "--json")  # (a value, after --)
    assert (args.id, args.topic, args.payload, args.json) == ("w", "adjust", "--json", True)
    args = parsed("terminate", "a", "--reason", "dup", "--", "-b", "--yes")
    assert (args.id, args.reason, args.yes) == (["a", "-b", "--yes"], "dup", False)
    args = parsed("signal", "--", "-odd", "adjust", "-1e3")  # (as before)
    assert (args.id, args.topic, args.payload) == ("-odd", "adjust", "-1e3")
    # an option right before -- is given no value: the words after it are arguments
    for verb, option in ((["start", "app:flow", "--id", "--", "x"], "--id"),
                         (["list", "--status", "--", "x"], "--status"),
                         (["signal", "w", "t", "--store", "--", "x"], "--store")):
        with pytest.raises(SystemExit) as exited:
            parsed(*verb)
        assert exited.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"garrison workflows {verb[0]}: error: argument {option}: expected one "
            "argument")
    # one too many, or an unknown option before --, is said under the verb's usage
    for verb, extra in ((["show", "x", "--json", "--", "y"], "y"),
                        (["start", "app:flow", "--bogus", "--", "[1]"], "--bogus")):
        with pytest.raises(SystemExit) as exited:
            parsed(*verb)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1] == (
            f"garrison workflows {verb[0]}: error: unrecognized arguments: {extra}"), err


def test_a_missing_option_is_not_said_as_a_value_that_starts_with_a_dash(capsys) -> None:
    """``garrison workflows prune --yes`` (prune takes no ``--yes``, and needs
    ``--older-than``) said ``required: --older-than ('--yes' starts with '-', read as
    an option: give such a value after --, as in garrison workflows prune -- --yes)``:
    advice for a verb argument written with a dash, where ``prune`` has none to give
    and the missing one is an option. The hint is for a missing argument only."""
    from garrison._cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["workflows", "--store", "app.db", "prune", "--yes"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "garrison workflows prune: error: the following arguments are required: "
        "--older-than")
    with pytest.raises(SystemExit):  # (a missing argument still gets it)
        build_parser().parse_args(["workflows", "--store", "app.db", "show", "-x"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "('-x' starts with '-', read as an option: give such a value after --, as in "
        "garrison workflows --store app.db show -- -x)")


def test_a_number_that_starts_with_a_dash_says_how_to_give_it(capsys) -> None:
    """README's own example, ``signal order-17 adjust -1e3`` without its ``--``, said
    ``unrecognized arguments: -1e3`` and no more, though a value read as an option
    says how to write it everywhere else (``--id -x``, ``show -x``). The error now says
    to give it after ``--``, with the command line that does (``-5`` is a number to
    argparse, and taken as it is)."""
    from garrison._cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["workflows", "--store", "app.db", "signal", "order-17",
                                   "adjust", "-1e3", "--json"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "garrison workflows signal: error: unrecognized arguments: -1e3 ('-1e3' starts "
        "with '-', read as an option: give such a value after --, as in garrison "
        "workflows --store app.db signal order-17 adjust --json -- -1e3)")
    args = build_parser().parse_args(["workflows", "--store", "app.db", "signal",
                                      "order-17", "adjust", "--json", "--", "-1e3"])
    assert args.payload == "-1e3"
    assert build_parser().parse_args(["workflows", "--store", "app.db", "signal", "o",
                                      "adjust", "-5"]).payload == "-5"
    with pytest.raises(SystemExit):  # (an option it lacks is said as before)
        build_parser().parse_args(["workflows", "--store", "app.db", "prune",
                                   "--older-than", "30d", "--yes"])
    assert capsys.readouterr().err.splitlines()[-1] == \
        "garrison workflows prune: error: unrecognized arguments: --yes"


def test_a_dashed_value_after_a_flag_is_not_given_to_the_flag(capsys) -> None:
    """``garrison workflows signal w adjust --json -1e3`` said ``argument --json:
    ignored explicit argument '-1e3'``: the command line's ``--opt -1s`` is read as
    ``--opt=-1s`` (so that an option's own check names a negative duration), and so
    was a flag that takes no value. A flag is left as it is: the value after it is
    said as any value read as an option is, with the command line that gives it."""
    from garrison._cli import main

    with pytest.raises(SystemExit) as exited:
        main(["workflows", "--store", "app.db", "signal", "w", "adjust", "--json", "-1e3"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "garrison workflows signal: error: unrecognized arguments: -1e3 ('-1e3' starts "
        "with '-', read as an option: give such a value after --, as in garrison "
        "workflows --store app.db signal w adjust --json -- -1e3)")
    with pytest.raises(SystemExit):  # (an option that takes a value: as before)
        main(["workflows", "--store", "app.db", "prune", "--older-than", "-1s"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "garrison workflows prune: error: argument --older-than: invalid duration '-1s': "
        "a duration cannot be negative")


def test_an_option_written_with_its_value_double_dash_gets_that_value(capsys) -> None:
    """``--id=--`` writes the value ``--`` as ``--id=-x`` writes ``-x`` (README), but
    argparse of Python 3.11 drops a ``--`` wherever it stands, the option's own too,
    and gives the option an empty list, which no check of the option looks at: ``list
    --status=--``, ``--search=--``, ``--limit=--``, ``prune --older-than=--`` and
    ``--store=--`` ended in a traceback (``'list' object has no attribute 'split'``),
    ``start --id=--`` said ``a workflow id must be a string, got list: []``. The option
    is given ``--``, and its own check, if it has one, says what is wrong with it."""
    from garrison._cli import build_parser

    def parsed(*words: str) -> Any:
        return build_parser().parse_args(["workflows", *words])

    assert parsed("--store", "app.db", "start", "app:flow", "--id=--").id == "--"
    assert parsed("--store", "app.db", "start", "app:flow", "--dedup=--").dedup == "--"
    assert parsed("--store", "app.db", "list", "--status=--").status == ["--"]
    assert parsed("--store", "app.db", "list", "--search=--").search == ["--"]
    assert parsed("--store=--", "list").store == "--"
    assert parsed("list", "--store=--").store == "--"
    args = parsed("--store", "app.db", "signal", "w", "--json", "t", "--", "--")
    assert (args.topic, args.payload) == ("t", "--")  # (after --: an argument, as before)
    for words, option in ((["list", "--limit=--"], "--limit"),
                          (["start", "app:flow", "--priority=--"], "--priority"),
                          (["prune", "--older-than=--"], "--older-than")):
        with pytest.raises(SystemExit) as exited:
            parsed("--store", "app.db", *words)
        assert exited.value.code == 2
        said = capsys.readouterr().err.splitlines()[-1]
        assert said.startswith(f"garrison workflows {words[0]}: error: argument "
                               f"{option}: "), said
        assert "'--'" in said, said  # (the option's own check names the value)


def test_a_dashed_argument_read_as_an_option_is_shown_with_a_line_that_works(
        capsys) -> None:
    """``signal -x adjust`` (an id that starts with ``-``) said to write ``garrison
    workflows signal -- -x``, which leaves out the topic written after it and fails
    again (``required: topic``); ``resolve -x p --json`` so too. The line given is the
    user's own, the dashed word and the arguments after it moved after ``--``, its
    options kept before it: it reads as meant."""
    import shlex

    from garrison._cli import build_parser

    for words, line, want in (
            (["show", "-x"], "show -- -x", {"id": "-x"}),
            (["signal", "-x", "adjust"], "signal -- -x adjust",
             {"id": "-x", "topic": "adjust"}),
            (["resolve", "-x", "p", "--json"], "resolve --json -- -x p",
             {"id": "-x", "promise": "p", "json": True}),
            (["signal", "-x", "--store", "s.db", "adjust"],
             "signal --store s.db -- -x adjust",
             {"id": "-x", "topic": "adjust", "store": "s.db"}),
            (["history", "-x", "--store=s.db"], "history --store=s.db -- -x",
             {"id": "-x", "store": "s.db"})):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["workflows", "--store", "app.db", *words])
        said = capsys.readouterr().err.splitlines()[-1]
        assert said.endswith(f"as in garrison workflows --store app.db {line})"), said
        args = build_parser().parse_args(["workflows", "--store", "app.db",
                                          *shlex.split(line)])
        assert {k: getattr(args, k) for k in want} == want, args


def test_a_command_line_error_escapes_a_control_character_of_a_word(capsys) -> None:
    """An error of the command line quotes the user's words (``unrecognized arguments:
    -1\\x1b[2J``, and the line with ``--`` that gives it): a word holding a terminal
    escape (an id pasted from an older store's list) acted on the terminal, twice, where
    every other line of the commands shows such a character as its escape."""
    from garrison._cli import build_parser

    for words in (["signal", "w", "t", "-1\x1b[2J"], ["list", "--bogus\x9b2J"],
                  ["show", "-x\x1b[2J"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["workflows", "--store", "app.db", *words])
        err = capsys.readouterr().err
        assert "\x1b" not in err and "\x9b" not in err, err
        assert "\\x1b[2J" in err or "\\x9b2J" in err, err


def test_an_unknown_option_is_said_alone_not_with_the_arguments_after_double_dash(
        capsys) -> None:
    """``garrison check app.yaml --json -- -odd.yaml`` (two configs, and ``--json``,
    which ``check`` has not) said ``unrecognized arguments: --json -odd.yaml``: the
    config after ``--`` listed as if it too were an option nobody knows, where ``--``
    says it is an argument. The unknown option split the command's arguments, and
    argparse gave those after it nothing: the error names the unknown option alone,
    and a word after ``--`` only if it is one too many."""
    from garrison._cli import build_parser

    for words, extra in (
            (["check", "app.yaml", "--json", "--", "-odd.yaml"], "--json"),
            (["check", "--json", "app.yaml", "--", "-odd.yaml", "b.yaml"], "--json"),
            (["workflows", "--store", "app.db", "start", "app:flow", "--bogus", "--", "[1]"],
             "--bogus"),
            (["workflows", "--store", "app.db", "show", "x", "--bogus", "--", "y"],
             "--bogus y")):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(words)
        assert exited.value.code == 2
        said = capsys.readouterr().err.splitlines()[-1]
        assert said.endswith(f": error: unrecognized arguments: {extra}"), said


def test_a_hint_s_command_line_keeps_the_options_written_before_the_verb(capsys) -> None:
    """``garrison workflows --store app.db signal o adjust -1e3`` said to give the value
    ``as in garrison workflows signal o adjust -- -1e3``: the ``--store`` written before
    the verb left out, so the line it suggested failed again (``--store`` is
    required). The line is the user's whole line, the dashed words moved after
    ``--``; it reads as meant (as does ``show -x``'s)."""
    import shlex

    from garrison._cli import build_parser, main

    for words, line in (
            (["workflows", "--store", "app.db", "signal", "o", "adjust", "-1e3"],
             "garrison workflows --store app.db signal o adjust -- -1e3"),
            (["workflows", "--store", "s.db", "signal", "-x", "adjust"],
             "garrison workflows --store s.db signal -- -x adjust")):
        with pytest.raises(SystemExit) as exited:
            main(words)
        assert exited.value.code == 2
        said = capsys.readouterr().err.splitlines()[-1]
        assert said.endswith(f"as in {line})"), said
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert (args.store, args.topic) == (words[2], "adjust"), args
