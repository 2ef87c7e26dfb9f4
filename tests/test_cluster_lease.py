"""A node cut off from PostgreSQL measures its own lease: it stops its singleton
services (and gives up its cluster names) before another node may take over, whether
the link drops (connections refused) or hangs (sockets open, no byte passes), logs
the loss once, and joins again when the link is back. Real node processes
(tests/cluster/node.py) behind a proxy whose link the test takes away."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from _cut_proxy import LinkProxy
from harness import Node, wait_for

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
        a = Node.start(proxy.url(postgres_url), "a", LEASE, config=CONFIG, env=env, echo=True)
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
