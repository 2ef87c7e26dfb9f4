"""A supervisor's workflow child, and a workflow service, across kill -9 of the node.

A normal stop records the cancel of a supervisor's workflow child (the supervisor
started at the next node start starts its own). A crash recorded nothing: each kill
left the old child running beside the new one, for ever (a durable service ran two,
three times over). The node that loads such a child after its supervisor has ended
cancels it. (Real subprocesses and real time: each run takes a second or two.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from garrison.persistence import WorkflowRecord, WorkflowStatus, open_store

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

WORKFLOWS = """\
from garrison import workflow

async def sleeper(tag: str) -> str:
    await workflow.sleep("1h")
    return tag
"""

SUPERVISED = """\
import signal
import sys
import trio
import garrison
from garrison.supervision import ChildSpec, Supervisor
import supwf

async def main():
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with garrison.open_node(store=sys.argv[1]) as node:
            sup = Supervisor([ChildSpec("wf", supwf.sleeper, args=("x",), host="workflows")],
                             name="sup")
            await node.spawn(sup)
            async for _ in signals:  # a normal stop
                break

trio.run(main)
"""

CONFIG = """\
version: "1.0"
namespace: t
entries:
  - {name: wf, kind: workflow.py, source: "supwf:sleeper"}
  - {name: store, kind: workflow.host, store: app.db}
  - name: svc
    kind: process.service
    process: wf
    host: t:store
    input: [x]
    lifecycle: {auto_start: true}
"""


def _records(db: Path) -> list[WorkflowRecord]:
    with open_store(str(db), lock=False) as store:
        return list(store.list_workflows())


def _until(check: Callable[[], bool], what: str, proc: subprocess.Popen[str]) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the node ended before {what}: {proc.stderr.read()}")
        try:
            if check():
                return
        except Exception:  # (the store may not exist yet)
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("shape", ["supervisor", "service"])
def test_a_supervised_workflow_child_left_by_a_crash_is_cancelled(
        tmp_path: Path, shape: str) -> None:
    (tmp_path / "supwf.py").write_text(WORKFLOWS)
    db = tmp_path / "app.db"
    if shape == "supervisor":
        (tmp_path / "run.py").write_text(SUPERVISED)
        argv = [sys.executable, str(tmp_path / "run.py"), str(db)]
    else:
        (tmp_path / "app.yaml").write_text(CONFIG)
        argv = [sys.executable, "-m", "garrison", "run", "app.yaml"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}

    def run() -> subprocess.Popen[str]:
        return subprocess.Popen(argv, cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def old_ones_cancelled() -> bool:
        records = _records(db)
        return len(records) == 3 and sorted(str(r.status) for r in records).count(
            WorkflowStatus.CANCELLED.value) == 2

    proc = None
    try:
        for started in (1, 2):  # each run starts a child; each is killed
            proc = run()
            _until(lambda n=started: len(_records(db)) == n, f"child {started}", proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        proc = run()  # this run cancels the two left behind, and starts its own
        _until(old_ones_cancelled, "the two children of the killed runs to be cancelled",
               proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read() if proc.stderr else ""
    # (the second run cancelled the first run's child, this one the second's)
    assert "cancelled, as its supervisor processes/" in stderr, stderr
    records = sorted(_records(db), key=lambda r: r.created or 0)
    assert [str(r.status) for r in records[:2]] == ["cancelled", "cancelled"]
    # the third run's child: cancelled at the normal stop (its cancel recorded, or, if
    # it met the cancel before the node stopped, already ended so)
    assert records[2].cancel_requested or str(records[2].status) == "cancelled"
    assert all(r.memo.get("garrison.supervisor", "").startswith("processes/")
               for r in records)


CLUSTER_NODE = """\
import signal
import sys
import trio
import garrison
from garrison.supervision import ChildSpec, Supervisor
import supwf

async def main():
    url, name, supervise = sys.argv[1:4]
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with garrison.open_node(store=url, name=name, lease="2s") as node:
            if supervise == "yes":
                await node.spawn(Supervisor(
                    [ChildSpec("wf", supwf.sleeper, args=(name,), host="workflows")],
                    name="sup"))
            async for _ in signals:
                break

trio.run(main)
"""


def _owners(url: str) -> dict[str, tuple[str, bool, str | None]]:
    """Each workflow's status, whether its cancel is asked, and its owner node."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT workflow_id, status, cancel_requested, owner "
                            "FROM garrison.workflows ORDER BY created").fetchall()
    return {wid: (status, bool(asked), owner) for wid, status, asked, owner in rows}


def test_in_a_cluster_a_paused_supervisors_child_runs_on_and_a_restarted_ones_is_cancelled(
        tmp_path: Path, postgres_url: str) -> None:
    """A node marked lost may only have been paused: its supervisor lives on, and the
    child another node took over must run on (a first version cancelled it, and the
    supervisor never heard of it). A node that runs again under its name proves its
    old supervisor ended: the node holding the old one's child cancels it then."""
    (tmp_path / "supwf.py").write_text(WORKFLOWS)
    (tmp_path / "node.py").write_text(CLUSTER_NODE)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}

    def start(name: str, supervise: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(tmp_path / "node.py"), postgres_url,
                                 name, supervise], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    a, b = start("a", "yes"), start("b", "no")
    procs = [a, b]
    try:
        _until(lambda: len(_owners(postgres_url)) == 1, "a's supervisor's child", a)
        (first,) = _owners(postgres_url)
        _until(lambda: _owners(postgres_url)[first][2] == "a", "a to own it", a)
        a.send_signal(signal.SIGSTOP)  # past its 2 s lease: b takes the child over
        _until(lambda: _owners(postgres_url)[first][2] == "b", "b to take it over", b)
        a.send_signal(signal.SIGCONT)
        time.sleep(3)  # a joins again, its supervisor alive
        assert _owners(postgres_url)[first][:2] == ("sleeping", False)
        a.send_signal(signal.SIGKILL)
        a.wait(30)
        a = start("a", "yes")  # the same name, a newer incarnation: a new child
        procs.append(a)
        _until(lambda: len(_owners(postgres_url)) == 2, "the new supervisor's child", a)
        _until(lambda: _owners(postgres_url)[first][0] == "cancelled",
               "b to cancel the old supervisor's child", b)
        second = next(w for w in _owners(postgres_url) if w != first)
        # (it may still be on its way to its sleep: 'running' for a moment)
        _until(lambda: _owners(postgres_url)[second][0] not in ("running", "pending"),
               "the new supervisor's child to reach its sleep", a)
        assert _owners(postgres_url)[second][:2] == ("sleeping", False)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
