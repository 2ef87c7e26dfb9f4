"""Fencing a node whose lease lapsed: paused past it (SIGSTOP) while its run of a
workflow cannot stop at once, that run's writes stay fenced by the incarnation that
ran it, also once the node joined again under a new one and claimed the workflow back
(tests/cluster/node.py); what the lapse refuses is told once, not as errors."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import garrison
from garrison import workflow
from garrison.persistence import Op

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from harness import Look, Node, wait_for

LEASE = 1.0


def test_a_run_held_past_the_lapse_writes_nothing_under_the_node_s_new_incarnation(
        postgres_url: str, nodes: list[Node]) -> None:
    """A lone node is paused past its lease while its workflow's step waits in a worker
    thread (which a cancel does not end): woken, the node stops the run, gives it a
    lease to end, joins again as a new incarnation and claims the workflow back, its
    old run still held by the thread. When the thread ends, that old run's record of
    the step was written under the new incarnation, which owns the workflow (a
    duplicate of the new run's: its store failed, and the workflow stayed ``running``
    for ever), and its end released the workflow from under the new run. It must be
    fenced by the incarnation it belongs to: refused, and the new run ends the
    workflow, each step recorded once."""
    url = postgres_url
    a = Node.start(url, "a", LEASE, held=5.5)
    nodes.append(a)
    look = Look(url)
    try:
        wait_for(lambda: len(look.steps("h")) == 1, 20, "the first step")
        time.sleep(0.3)  # the second one waits in its thread (5.5 s)
        a.pause()
        time.sleep(2 * LEASE)
        a.resume()
        wait_for(lambda: look.statuses().get("h") == "completed", 20,
                 "the workflow to complete on the node joined again")
        assert look.result("h") == [0, 1]
        assert [i for i, _ in look.steps("h")] == [0, 1]
        log = a.stderr()
        assert "lost its lease" in log
        assert "1 of its workflows did not stop within 1s of its lease lapsing (h)" in log
        assert "its store failed" not in log, log
        assert "run of this node's previous incarnation" in log, log
        # its new run was never taken from it: it did not leave the node again (its
        # old run, which stopped late, is not counted among those that left as the
        # lease lapsed either: helper-447 says those in one line)
        assert "left this node" not in log, log
    finally:
        look.close()


async def _approved() -> str:
    return str(await workflow.promise("go"))


async def test_queued_workflows_refused_at_a_lapse_are_no_error(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The start of workflows waiting in the node's queue, refused because the node's
    lease lapsed (the fence: they go to the next node that claims them, as its other
    workflows do), is what the lapse does, told by ``node a lost its lease``: not an
    ERROR of its own (``host workflows could not start 1 queued workflows``)."""
    async with garrison.open_node(store=postgres_url, name="a", lease="30s",
                                  cluster_max_concurrent=1) as node:
        first = await node.start_workflow(_approved, id="q1")
        await node.start_workflow(_approved, id="q2")  # waits in the queue for q1's slot
        store = type(node.hosts["workflows"].store)
        commit = store.commit
        refused: list[str] = []

        async def lapsed(self: Any, tx: Any) -> list[Any]:
            admits = [p for op, p in tx.ops if op is Op.ADMIT]
            if not refused and admits and "q1" not in tx.workflow_ids:
                refused.append(str(admits))
                raise garrison.WorkflowMoved(self.path, None, "this node's lease lapsed "
                                             "(it was cut off from the store)")
            return await commit(self, tx)

        monkeypatch.setattr(store, "commit", lapsed)
        with caplog.at_level(logging.INFO):
            await node.workflow(first.id).promise("go").resolve("yes")
            with trio.fail_after(10):
                while not refused:
                    await trio.sleep(0.02)
                await trio.sleep(0.2)
        monkeypatch.undo()
        said = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert not [m for level, m in said if level == "ERROR"], said
        assert any("1 queued workflows did not start here" in m for _, m in said), said


async def test_a_lapsed_lease_logs_one_line_of_the_workflows_that_left(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """helper-447: a node that lost its lease logged ``workflow ID left this node`` at
    INFO for each of its workflows: thousands of lines when it ran thousands. One line
    says how many left, naming the first few, and where to see the rest; the line of
    each is at DEBUG. (Real time: the lease is cut short in the store.)"""
    async with garrison.open_node(store=postgres_url, name="t", lease="1s") as node:
        for i in range(8):
            await node.start_workflow(_approved, id=f"w{i}")
        member = node._members[0]
        epoch = member.epoch
        look = Look(postgres_url)
        with caplog.at_level(logging.DEBUG):
            try:  # cut off: its lease ends now
                look.lapse(epoch)
            finally:
                look.close()
            with trio.fail_after(10):
                while member.epoch == epoch:  # it joined again, under a new epoch
                    await trio.sleep(0.02)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    each = [level for level, m in said if " left this node: " in m]
    assert each == ["DEBUG"] * 8, [(lv, m) for lv, m in said if "left this node" in m]
    [summary] = [m for level, m in said if level == "INFO" and "left this node" in m]
    named = summary.split("(", 1)[1].split(" and ")[0].split(", ")
    assert len(named) == 5 and set(named) < {f"w{i}" for i in range(8)}, summary
    assert summary.startswith("node t: 8 workflows left this node as its lease lapsed (")
    assert summary.endswith(" and 3 more); the node that claims one runs it (garrison "
                            "workflows show ID names it), and --log-level debug logs a "
                            "line for each ('workflow ID left this node')"), summary


def test_the_line_of_thousands_of_workflows_that_left_counts_them_as_the_manual_says(
        caplog: pytest.LogCaptureFixture) -> None:
    """helper-453: the line a lease loss logs of the workflows that left wrote their
    count bare (``2400 workflows``) beside the rest grouped (``and 2,395 more``),
    where the manual shows ``2,400 workflows``; a loss of one workflow says
    ``1 workflow``, and the count starts again at the next loss."""
    from types import SimpleNamespace

    from garrison.cluster._member import ClusterMember

    member: Any = SimpleNamespace(name="a", _lapse_left=0, _lapse_named=[])
    for i in range(2400):
        ClusterMember.left_as_lapsed(member, f"w{i}")
    with caplog.at_level(logging.INFO, logger="garrison"):
        ClusterMember._say_lapse_left(member)
        ClusterMember._say_lapse_left(member)  # (nothing left since: no line)
        ClusterMember.left_as_lapsed(member, "x")
        ClusterMember._say_lapse_left(member)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith("node a: 2,400 workflows left this node as its lease "
                              "lapsed (w0, w1, w2, w3, w4 and 2,395 more); "), said
    assert said[1].startswith("node a: 1 workflow left this node as its lease lapsed "
                              "(x); "), said
