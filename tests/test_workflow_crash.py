"""Real crashes: a child process running a workflow is killed with SIGKILL at each kind
of point, then a new process resumes it from the store.

Asserted every time: the result, exactly-once recording in the journal, at-least-once
execution of the activity that was in flight, and no lost or duplicated message.
(Real time here; each scenario takes a second or two.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _stores import sql

from garrison.persistence import open_store

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "crash" / "run_scenario.py"
ROOT = HERE.parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


class Scenario:
    def __init__(self, tmp: Path, store: str) -> None:
        self.db = store
        self.markers = tmp / "markers.txt"
        self.env = {**os.environ, "GARRISON_MARKERS": str(self.markers),
                    "PYTHONPATH": str(ROOT)}

    def lines(self) -> list[str]:
        return self.markers.read_text().splitlines() if self.markers.exists() else []

    def count(self) -> Counter[str]:
        return Counter(self.lines())

    def popen(self, *args: str, kill_at: str | None = None) -> subprocess.Popen[str]:
        env = dict(self.env)
        if kill_at:
            env["GARRISON_KILL_AT"] = kill_at
        return subprocess.Popen([sys.executable, str(SCRIPT), self.db, *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_marker(self, tag: str, proc: subprocess.Popen[str], timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if tag in self.lines():
                return
            if proc.poll() is not None:
                raise AssertionError(f"child ended before {tag!r}: {proc.stderr.read()}")
            time.sleep(0.01)
        raise AssertionError(f"no marker {tag!r} within {timeout}s: {self.lines()}")

    def kill(self, proc: subprocess.Popen[str]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL

    def finish(self, proc: subprocess.Popen[str], timeout: float = 20) -> Any:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        data = json.loads(out.strip().splitlines()[-1])
        assert "error" not in data, data
        self.elapsed = data["elapsed"]
        return data["result"]

    def resume(self, wid: str, *extra: str) -> Any:
        return self.finish(self.popen("resume", wid, *extra))

    def journal(self, wid: str) -> list[tuple[str, str]]:
        with open_store(self.db, lock=False) as store:
            return [(r.kind, r.name) for r in store.journal(wid)]

    def status(self, wid: str) -> str:
        with open_store(self.db, lock=False) as store:
            rec = store.get_workflow(wid)
            assert rec is not None
            return str(rec.status)


@pytest.fixture
def sc(tmp_path: Path, store_spec: str) -> Scenario:
    return Scenario(tmp_path, store_spec)


def test_kill_during_an_activity(sc: Scenario) -> None:
    proc = sc.popen("start", "w", "three_steps")
    sc.wait_marker("slow:two:start", proc)
    sc.kill(proc)
    assert sc.status("w") == "running"
    assert sc.resume("w") == "one,two,three"
    c = sc.count()
    assert c["step:one"] == 1 and c["step:three"] == 1
    assert c["slow:two:start"] == 2 and c["slow:two:end"] == 1  # at least once
    assert sc.journal("w") == [("activity", "crash_app:step"), ("activity", "crash_app:slow_step"),
                               ("activity", "crash_app:step")]  # exactly once


def test_kill_between_activity_and_commit(sc: Scenario) -> None:
    proc = sc.popen("start", "w", "plain_steps", kill_at="record:crash_app:step")
    proc.wait(20)
    assert proc.returncode == -signal.SIGKILL
    assert sc.count()["step:one"] == 1 and sc.journal("w") == []
    assert sc.resume("w") == "one,two,three"
    c = sc.count()
    assert (c["step:one"], c["step:two"], c["step:three"]) == (2, 1, 1)
    assert sc.journal("w") == [("activity", "crash_app:step")] * 3


def test_kill_during_a_sleep_sleeps_only_the_remainder(sc: Scenario) -> None:
    t0 = time.monotonic()
    proc = sc.popen("start", "w", "sleepy", "[2.0]")
    sc.wait_marker("step:before", proc)
    time.sleep(0.8)
    sc.kill(proc)
    slept = sc.resume("w")
    assert slept >= 2.0 and time.monotonic() - t0 >= 2.0
    # from recovery to the result: the remainder (~1.2 s), not the whole 2 s again
    assert sc.elapsed < 1.8, f"the resumed run slept {sc.elapsed:.2f}s"
    c = sc.count()
    assert (c["step:before"], c["step:after"]) == (1, 1)
    assert [k for k, _ in sc.journal("w")] == ["activity", "now", "sleep", "now", "activity"]


def test_kill_while_waiting_for_a_message_sent_while_down(sc: Scenario) -> None:
    proc = sc.popen("start", "w", "waits_for_message")
    sc.wait_marker("step:before", proc)
    time.sleep(0.3)
    sc.kill(proc)
    with open_store(sc.db) as store:  # no node runs: the message waits in the store
        store.deliver("w", "hello", "world")
    assert sc.resume("w") == ["hello", "world"]
    c = sc.count()
    assert (c["step:before"], c["step:got:world"]) == (1, 1)


def test_kill_during_replay(sc: Scenario) -> None:
    proc = sc.popen("start", "w", "five_then_wait")
    sc.wait_marker("step:s5", proc)
    time.sleep(0.3)
    sc.kill(proc)
    proc = sc.popen("resume", "w", kill_at="replay:3")
    proc.wait(20)
    assert proc.returncode == -signal.SIGKILL and "kill:replay:3" in sc.lines()
    assert sc.resume("w", "--send", "go", '"done"') == ["s1", "s2", "s3", "s4", "s5", "done"]
    c = sc.count()
    assert all(c[f"step:s{i}"] == 1 for i in range(1, 6))
    assert [k for k, _ in sc.journal("w")] == ["activity"] * 5 + ["receive"]


def test_no_message_lost_or_duplicated_across_a_kill(sc: Scenario) -> None:
    proc = sc.popen("start", "p", "pair", "[30]")
    sc.wait_marker("step:tick:10", proc)
    # kill in the sender's 0.3 s pause, once the step's result is journaled (an
    # activity whose result was not yet written runs again: at least once)
    end = time.monotonic() + 10
    while "activity" not in [k for k, _ in sc.journal("p.2")] and time.monotonic() < end:
        time.sleep(0.01)
    sc.kill(proc)
    assert sc.resume("p") == list(range(30))
    ids = [r[0] for r in sql(sc.db, "SELECT msg_id FROM inbox WHERE workflow_id = 'p.1'")]
    assert len(ids) == len(set(ids)) == 30
    assert [k for k, _ in sc.journal("p.2")].count("send") == 30
    c = sc.count()
    assert c["step:tick:10"] == 1 and c["step:tick:30"] == 1


def test_message_from_another_os_process_while_the_node_runs(sc: Scenario) -> None:
    proc = sc.popen("start", "w", "waits_for_message")
    sc.wait_marker("step:before", proc)
    with open_store(sc.db, lock=False) as tool:  # this test process is the other node
        tool.deliver("w", "hello", "from-afar")
    assert sc.finish(proc) == ["hello", "from-afar"]
    assert sc.count()["step:got:from-afar"] == 1


@pytest.mark.parametrize("points", [
    ["commit:3", "committed:9", "commit:17", "committed:5", "commit:30"],
    ["committed:2", "commit:12", "committed:21", "commit:8"],
])
def test_killed_at_many_commit_points_until_done(sc: Scenario, points: list[str]) -> None:
    """Kill the node before or right after its Nth write, over and over (each restart
    counts anew), then let it finish: the result and the records are as if nothing
    happened."""
    proc = sc.popen("start", "p", "pair", "[30]", kill_at=points[0])
    proc.wait(20)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()  # type: ignore[union-attr]
    for point in points[1:]:
        proc = sc.popen("resume", "p", kill_at=point)
        proc.wait(20)
        if proc.returncode == 0:  # finished before reaching that point
            break
        assert proc.returncode == -signal.SIGKILL
    assert sum(line.startswith("kill:") for line in sc.lines()) >= 3
    assert sc.resume("p") == list(range(30))
    ids = [r[0] for r in sql(sc.db, "SELECT msg_id FROM inbox WHERE workflow_id = 'p.1'")]
    with open_store(sc.db, lock=False) as store:
        sends = [r.kind for r in store.journal("p.2")].count("send")
        ticks = [r.outcome for r in store.journal("p.2") if r.kind == "activity"]
        statuses = {w.workflow_id: str(w.status) for w in store.list_workflows()}
    assert len(ids) == len(set(ids)) == 30  # no message lost or duplicated
    assert sends == 30
    assert ticks == [{"ok": "tick:10"}, {"ok": "tick:20"}, {"ok": "tick:30"}]  # once each
    assert statuses == {"p": "completed", "p.1": "completed", "p.2": "completed"}


def test_kill_while_a_workflow_watches_a_process_gives_noproc(sc: Scenario) -> None:
    """The plain process dies with the node; after recovery its EXIT arrives as noproc."""
    proc = sc.popen("start", "w", "watches_a_process")
    sc.wait_marker("step:watching", proc)
    time.sleep(0.2)
    sc.kill(proc)
    assert sc.resume("w") == [True, "EXIT", "noproc"]
    assert [k for k, _ in sc.journal("w")] == ["spawn", "activity", "receive"]


def test_kill_after_a_continue_as_new_still_gives_noproc_of_a_process_watched_before(
        sc: Scenario) -> None:
    """A monitor of a plain process holds on into the run a continue_as_new starts (its
    EXIT reaches the new run, live). The monitor lived in the node's memory only: after
    a kill the new run's journal did not know it, so its EXIT never came (the run
    waited for ever) where a run that made the monitor itself gets noproc. The new
    run's first record now carries the monitors it keeps."""
    proc = sc.popen("start", "w", "watches_a_process_across_a_continue", "[null]")
    sc.wait_marker("step:watching", proc)
    time.sleep(0.2)
    sc.kill(proc)
    assert sc.resume("w", "--within", "8") == [True, "EXIT", "noproc"]
    assert [k for k, _ in sc.journal("w")] == ["continued", "activity", "receive"]


def test_kill_while_a_promise_waits_then_resolved_while_down(sc: Scenario) -> None:
    proc = sc.popen("start", "w", "promise_or_deadline", "[3600]")
    sc.wait_marker("step:waiting", proc)
    time.sleep(0.2)
    sc.kill(proc)
    with open_store(sc.db) as store:  # no node runs: the resolution waits in the store
        store.resolve_promise("w", "approval", {"by": "ann"})
    assert sc.resume("w") == ["approved", {"by": "ann"}]
    assert [k for k, _ in sc.journal("w")] == [
        "promise", "timer", "now", "activity", "first", "now", "await_promise"]
    assert sc.count()["step:waiting"] == 1


def test_kill_during_a_timer_inside_first_waits_only_the_remainder(sc: Scenario) -> None:
    proc = sc.popen("start", "w", "promise_or_deadline", "[2.0]")
    sc.wait_marker("step:waiting", proc)
    time.sleep(0.8)
    sc.kill(proc)
    status, waited = sc.resume("w")
    assert status == "expired" and waited >= 2.0
    assert sc.elapsed < 1.8, f"the resumed run waited {sc.elapsed:.2f}s"


def test_kill_the_parent_while_its_children_run(sc: Scenario) -> None:
    proc = sc.popen("start", "p", "parent_of_two", "[1.0]")
    sc.wait_marker("step:children", proc)
    time.sleep(0.2)
    sc.kill(proc)
    # unfinished (the store shows a parked child as sleeping shortly after it parks)
    assert {sc.status("p.1"), sc.status("p.2")} <= {"running", "sleeping"}
    assert sc.resume("p") == {"payment": "child:payment", "shipping": "child:shipping"}
    c = sc.count()
    assert (c["step:children"], c["step:child:payment"], c["step:child:shipping"]) == (1, 1, 1)
    assert [k for k, _ in sc.journal("p")] == ["spawn", "spawn", "activity", "receive",
                                               "receive"]


def _child_ends(sc: Scenario, wid: str) -> dict[str, str]:
    """The ``error`` the children of ``wid`` end with on a node resuming the store."""
    ends: dict[str, str] = {}
    children = [r[0] for r in sql(sc.db, "SELECT workflow_id FROM workflows WHERE "
                                         "parent = ? ORDER BY workflow_id", (f"workflows/{wid}",))]
    assert len(children) == 2, children
    for child in children:
        proc = sc.popen("resume", child, "--within", "8")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        data = json.loads(out.strip().splitlines()[-1])
        ends[child] = data.get("error", "not ended")
    return ends


@pytest.mark.parametrize("how", ["spawn", "spawn_linked"])
def test_kill_right_after_a_terminated_parent_ends_still_ends_its_children(
        sc: Scenario, how: str) -> None:
    # handle.terminate() with the node running; SIGKILL right after the parent's end
    # commits (its children's own ends not written): a new node ends the children
    proc = sc.popen("start", "p", "parent_of_waiting", json.dumps([how, "wait"]),
                    "--terminate-after", "step:waiting:a,step:waiting:b", kill_at="ended:p")
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sc.status("p") == "failed"
    ends = _child_ends(sc, "p")
    assert all("Terminated: its parent workflow 'p' was terminated" in e
               for e in ends.values()), ends


def test_kill_right_after_a_parent_fails_still_ends_its_linked_children(sc: Scenario) -> None:
    # the parent raises while its spawn_linked children wait; SIGKILL right after its
    # failed end commits: a new node fails the children (LinkedProcessFailed) as the
    # node that ran on would have
    proc = sc.popen("start", "p", "parent_of_waiting", json.dumps(["spawn_linked", "raise"]),
                    kill_at="ended:p")
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sc.status("p") == "failed"
    ends = _child_ends(sc, "p")
    assert all("LinkedProcessFailed" in e and "ValueError: the parent fails" in e
               for e in ends.values()), ends



def _chain_ends(sc: Scenario, top: str) -> dict[str, str]:
    """``status: error`` of each workflow of the chain under ``top`` (``top``, ``top.1``,
    ``top.1.1``) as the store has it, each id written ``a`` for ``top``."""
    out = {}
    with open_store(sc.db, lock=False) as store:
        for wid in (top, f"{top}.1", f"{top}.1.1"):
            rec = store.get_workflow(wid)
            assert rec is not None, wid
            text = f"{rec.status}: {rec.error}".replace(f"workflows/{top}", "workflows/a")
            out["a" + wid[len(top):]] = text.replace(f"'{top}", "'a")
    return out


def _waiting(top: str) -> str:
    return ",".join(f"step:waiting:{wid}" for wid in (top, f"{top}.1", f"{top}.1.1"))


def test_a_cancelled_linked_chain_ends_the_same_with_a_kill_after_its_top_ends(
        sc: Scenario) -> None:
    # x spawn_linked x.1 spawn_linked x.1.1, none trapping, x cancelled: its cancel
    # cancels its children, and each one's WorkflowCancelled reaches the one below by
    # the link too, which leaves it to its own cancel. First with the node running on,
    # then with a SIGKILL right after the top's cancelled end commits (the other ends
    # held): the node that resumes the chain ends it as the first one did (the live
    # outcome varied: a level failed, LinkedProcessFailed, when its parent's end
    # reached it before its own cancelled end was committed)
    proc = sc.popen("start", "n", "linked_chain", "[2]", "--cancel-after", _waiting("n"))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    live = _chain_ends(sc, "n")
    assert live == {"a": "cancelled: WorkflowCancelled: workflow 'a' was cancelled",
                    "a.1": "cancelled: WorkflowCancelled: workflow 'a.1' was cancelled",
                    "a.1.1": "cancelled: WorkflowCancelled: workflow 'a.1.1' was cancelled"}
    proc = sc.popen("start", "a", "linked_chain", "[2]", "--cancel-after", _waiting("a"),
                    kill_at="ended:a")
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sc.status("a") == "cancelled"
    proc = sc.popen("resume", "a.1.1", "--within", "8")
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert _chain_ends(sc, "a") == live


def test_kill_right_after_a_parent_fails_still_gives_its_trapping_linked_children_link_down(
        sc: Scenario) -> None:
    # as above, the children trapping links: their LINK_DOWN is written with the
    # parent's failed end, not after it (a SIGKILL between lost it: they waited for ever)
    proc = sc.popen("start", "p", "parent_of_waiting",
                    json.dumps(["spawn_linked", "raise", "trapping_child"]), kill_at="ended:p")
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sc.status("p") == "failed"
    children = [r[0] for r in sql(sc.db, "SELECT workflow_id FROM workflows WHERE "
                                         "parent = ? ORDER BY workflow_id", ("workflows/p",))]
    assert len(children) == 2, children
    for child in children:
        proc = sc.popen("resume", child, "--within", "8")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        data = json.loads(out.strip().splitlines()[-1])
        assert data.get("result") == "workflows/p ValueError: the parent fails", data


def test_kill_right_after_a_cancelled_workflow_ends_still_fails_the_one_it_linked(
        sc: Scenario) -> None:
    # p's child c links to p (not trapping) and is cancelled: c's cancelled end fails p
    # (LinkedProcessFailed: WorkflowCancelled), by a request written with that end; a
    # SIGKILL right after it commits left p waiting for good (only c kept the link)
    proc = sc.popen("start", "p", "linked_from_below", "[]", "--cancel-after",
                    "step:waiting:top,step:waiting:p.1@p.1", kill_at="ended:p.1")
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sc.status("p.1") == "cancelled"
    proc = sc.popen("resume", "p", "--within", "8")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    data = json.loads(out.strip().splitlines()[-1])
    assert data.get("error") == (
        "WorkflowFailed: workflow 'p' failed: LinkedProcessFailed: linked process "
        "workflows/p.1 failed: WorkflowCancelled: workflow 'p.1' was cancelled"), data
