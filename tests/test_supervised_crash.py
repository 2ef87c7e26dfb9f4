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

    for started in (1, 2):  # each run starts a child; each is killed
        proc = run()
        _until(lambda n=started: len(_records(db)) == n, f"child {started}", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    proc = run()  # this run cancels the two left behind, and starts its own

    def old_ones_cancelled() -> bool:
        records = _records(db)
        return len(records) == 3 and sorted(str(r.status) for r in records).count(
            WorkflowStatus.CANCELLED.value) == 2

    _until(old_ones_cancelled, "the two children of the killed runs to be cancelled", proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, proc.stderr.read()
    stderr = proc.stderr.read() if proc.stderr else ""
    # (the second run cancelled the first run's child, this one the second's)
    assert "cancelled, as its supervisor processes/" in stderr, stderr
    records = sorted(_records(db), key=lambda r: r.created or 0)
    assert [str(r.status) for r in records[:2]] == ["cancelled", "cancelled"]
    # the third run's child: its cancel recorded at the normal stop (as before)
    assert records[2].cancel_requested
    assert all(r.memo.get("garrison.supervisor", "").startswith("processes/")
               for r in records)
