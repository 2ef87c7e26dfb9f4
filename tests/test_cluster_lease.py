"""A node cut off from PostgreSQL measures its own lease: it stops its singleton
services (and gives up its cluster names) before another node may take over, whether
the link drops (connections refused) or hangs (sockets open, no byte passes), logs
the loss once, and joins again when the link is back. Real node processes
(tests/cluster/node.py) behind a proxy whose link the test takes away."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from _cut_proxy import LinkProxy
from harness import Look, Node, wait_for

LEASE = 2.0
CONFIG = str(Path(__file__).resolve().parent / "cluster" / "singleton.yaml")


def _beats(path: Path) -> list[tuple[str, float]]:
    out = []
    for line in path.read_text().splitlines():
        name, _, at = line.partition(" ")
        if at:
            out.append((name, float(at)))
    return out


@pytest.mark.parametrize("how", ["cut", "hold"])
def test_a_node_cut_off_stops_its_singleton_before_another_node_starts_it(
        postgres_url: str, nodes: list[Node], tmp_path: Path, how: str) -> None:
    port = int(postgres_url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    proxy = LinkProxy(port)
    beats = tmp_path / "beats"
    beats.touch()
    env = {"GARRISON_BEAT_FILE": str(beats)}
    try:
        # and a workflow inside an 8 s activity when the link goes
        a = Node.start(proxy.url(postgres_url), "a", LEASE, config=CONFIG, env=env, echo=True,
                       start=1, steps=2, delay=8.0)
        nodes.append(a)
        wait_for(lambda: len(_beats(beats)) >= 5, 10, "the singleton to run on a")
        b = Node.start(postgres_url, "b", LEASE, config=CONFIG, env=env)
        nodes.append(b)
        time.sleep(1.0)
        assert {n for n, _ in _beats(beats)} == {"a"}
        taken = time.time()
        proxy.cut() if how == "cut" else proxy.hold()
        wait_for(lambda: any(n == "b" for n, _ in _beats(beats)), 3 * LEASE, "b to start it")
        first_b = min(at for n, at in _beats(beats) if n == "b")
        last_a = max(at for n, at in _beats(beats) if n == "a")
        # one node at a time: a stopped before b started, within a lease of the cut
        assert last_a < first_b, (last_a - taken, first_b - taken)
        assert last_a - taken < LEASE, last_a - taken
        # the workflow stopped too, its activity cancelled (not run to its end)
        # (one line of those that left, helper-447: each one's at DEBUG)
        wait_for(lambda: "node a: 1 workflow left this node as its lease lapsed (w0)"
                 in a.stderr(), LEASE + 1, "a to stop its workflow")
        time.sleep(2 * LEASE)  # cut off for longer: a stays stopped
        assert max(at for n, at in _beats(beats) if n == "a") == last_a
        proxy.restore()
        wait_for(lambda: a.stderr().count("joined the cluster") >= 2, 20, "a to join again")
        time.sleep(LEASE)
        assert max(at for n, at in _beats(beats) if n == "a") == last_a  # b holds it
        assert a.stderr().count("lost its lease") == 1, a.stderr()
        # its processes' cluster names went with the lease (others may have taken them)
        assert "its processes lost their cluster names (echo)" in a.stderr(), a.stderr()
    finally:
        proxy.restore()


@pytest.mark.parametrize("lease", ["1ms", 0.01, 0.5, "50d", 86400.5, 0])
async def test_a_lease_out_of_range_is_refused_at_open_node(lease: object) -> None:
    import garrison

    # too short, renewals (every third of it) cannot keep it; too long, the server's
    # millisecond limits overflow ("cannot join the cluster") and a lost node's work
    # waits days
    with pytest.raises(ValueError, match=r"^lease= must be from 1s to 1d .*, got "):
        async with garrison.open_node(lease=lease):
            pass  # pragma: no cover


async def test_a_lease_at_the_limits_is_taken() -> None:
    import garrison

    for lease in ("1s", "1d", 1, 86400):
        async with garrison.open_node(lease=lease) as node:
            assert node.lease == float(1 if lease in ("1s", 1) else 86400)


@pytest.mark.parametrize("lease", ["1ms", "60d"])
def test_garrison_run_refuses_a_lease_out_of_range_with_exit_2(tmp_path: Path,
                                                               lease: str) -> None:
    import subprocess

    root = Path(__file__).resolve().parent.parent
    got = subprocess.run([sys.executable, "-m", "garrison", "run", CONFIG, "--store",
                          str(tmp_path / "s.db"), "--lease", lease], cwd=tmp_path, text=True,
                         capture_output=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert got.returncode == 2, got.stderr
    assert got.stderr.strip() == (f"garrison run: --lease must be from 1s to 1d (a node "
                                  f"renews its lease every third of it), got {lease!r}")


async def test_a_node_drained_by_its_lease_lapsing_does_not_join_again(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A node paused past its lease as it drained (its workflow inside an activity)
    found on waking that nothing was left to hand over: drained, it shut down, but
    first joined the cluster again under a new epoch and said it would claim orphaned
    workflows. A node that drained stays out of the cluster (no second row of it), and
    its workflow waits for the next node."""
    import logging

    import cluster_app
    import trio

    import garrison

    caplog.set_level(logging.INFO, logger="garrison")
    look: Look | None = None
    try:
        async with garrison.open_node(store=postgres_url, name="t", lease="1s") as node:
            look = Look(postgres_url)
            await node.start_workflow(cluster_app.steps, 1, 5.0, id="d")
            await trio.sleep(0.2)  # inside its activity: the drain waits for it
            node.drain()
            member = node._members[0]
            epoch = member.epoch
            # paused past its lease: the server says it lapsed
            look.lapse(epoch)
            with trio.fail_after(5):
                await node.drained()
            await trio.sleep(1.5)  # (its workflow's stop waited for, then a round)
            assert member.epoch == epoch
            joined = [m for m in caplog.messages if "joined the cluster" in m]
            assert len(joined) == 1, joined
        # its one row: ``left``, or ``lost`` (marked so by its own round, as it drained)
        [(name, status)] = look.store._query("SELECT name, status FROM garrison.nodes")
        assert (name, status in ("left", "lost")) == ("t", True), status
        assert look.owners() == {"d": None}
    finally:
        if look is not None:
            look.close()
