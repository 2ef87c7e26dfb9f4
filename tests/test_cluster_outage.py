"""A node's first SIGINT or SIGTERM while its PostgreSQL server does not answer
(stalled or down): real node processes (tests/cluster/node.py) on a server of the
test's own. Apart from test_cluster.py so that they run beside it."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from harness import Look, Node, wait_for


def _finished(look: Look, ids: list[str]) -> bool:
    statuses = look.statuses()
    return all(statuses.get(w) == "completed" for w in ids)


def _check_journals(look: Look, ids: list[str], steps: int) -> None:
    """Every step recorded once, in order, with the exact result."""
    for wid in ids:
        recorded = look.steps(wid)
        assert [i for i, _ in recorded] == list(range(steps)), (wid, recorded)
        assert look.result(wid) == list(range(steps)), wid


@pytest.mark.parametrize("outage", ["stalled", "down"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_node_stops_on_its_first_signal_while_its_server_does_not_answer(
        own_server: Any, nodes: list[Node], outage: str, signum: int) -> None:
    """The first SIGINT or SIGTERM (a drain) stops a node within seconds while its
    server does not answer: stalled (every server process stopped, the connections
    open) the node ran on until the server answered again; down, it waited out the
    store's ``retry_for`` (30 s), and a drain, which first wrote its status, for ever.
    The stop waits at most ``STOP_WAIT`` for the server; the next node resumes every
    workflow from its journal, each step recorded once."""
    import _postgres

    from garrison._node import STOP_WAIT

    url = _postgres.create_db(own_server, "outage")
    lease = 3.0
    ids = [f"w{i}" for i in range(6)]
    a = Node.start(url, "a", lease, start=len(ids), steps=40, delay=0.05)
    nodes.append(a)
    look = Look(url)
    try:
        wait_for(lambda: all(len(look.steps(w)) >= 2 for w in ids), 30, "progress on a")
    finally:
        look.close()
    (_postgres.stall if outage == "stalled" else _postgres.pause)(own_server)
    try:
        time.sleep(0.5)  # (writes in flight meet the outage)
        start = time.monotonic()
        a.proc.send_signal(signum)
        code = a.proc.wait(lease + 2 * STOP_WAIT + 10)  # (it ran on: TimeoutExpired)
        took = time.monotonic() - start
    finally:
        (_postgres.unstall if outage == "stalled" else _postgres.resume)(own_server)
    assert code == 0, a.stderr()
    assert took < lease + 2 * STOP_WAIT + 5, (took, a.stderr())
    assert "Traceback" not in a.stderr()
    b = Node.start(url, "b", lease)
    nodes.append(b)
    look = Look(url)
    try:
        wait_for(lambda: _finished(look, ids), 60, "every workflow to finish on b")
        _check_journals(look, ids, 40)
    finally:
        look.close()
