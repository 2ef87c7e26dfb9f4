"""Fencing a node paused past its lease (SIGSTOP) whose run of a workflow cannot stop
at once: its writes stay fenced by the incarnation that ran it, also once the node
joined again under a new one and claimed the workflow back (tests/cluster/node.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

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
        # its new run was never taken from it: it did not leave the node again
        assert "workflow h left this node" not in log, log
    finally:
        look.close()
