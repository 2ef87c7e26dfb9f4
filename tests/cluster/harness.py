"""Running cluster nodes as subprocesses (tests/test_cluster.py, bench/cluster_*.py).

    node = Node.start(url, "a", lease=1.0, start=10)   # waits for "ready"
    node.kill(); node.stop(); node.pause(); node.resume()
    look = Look(url)                                     # reads the store as a tool
    look.owners() -> {workflow_id: owner}; look.steps(wid) -> [(i, node), ...]
    look.live_owners() -> {workflow_id: live owner or None}
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# The nodes' logs, read by failing tests' messages; the folder goes when the process ends.
_LOGS = tempfile.TemporaryDirectory(prefix="garrison-node-logs-")


class Node:
    """A node process (``node.py``)."""

    def __init__(self, proc: subprocess.Popen[str], name: str, log: Path) -> None:
        self.proc = proc
        self.name = name
        self.log = log
        self.epoch = 0

    @classmethod
    def start(cls, url: str, name: str, lease: float, *, start: int = 0, prefix: str = "w",
              steps: int = 10, delay: float = 0.05, wait: bool = True, pong: int = 0,
              config: str | None = None, env: dict[str, str] | None = None,
              echo: bool = False, max_concurrent: int | None = None,
              cluster_max_concurrent: int | None = None, rate: str | None = None,
              held: float | None = None, stop_wait: float | None = None) -> Node:
        handle, where = tempfile.mkstemp(prefix=f"node-{name}-", suffix=".log", dir=_LOGS.name)
        log = Path(where)
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        with os.fdopen(handle, "w") as err:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "node.py"), url, name, str(lease),
                 "--start", str(start), "--prefix", prefix, "--steps", str(steps),
                 "--delay", str(delay),
                 "--pong", str(pong), *(["--config", config] if config else []),
                 *(["--echo"] if echo else []),
                 *(["--max", str(max_concurrent)] if max_concurrent is not None else []),
                 *(["--cluster-max", str(cluster_max_concurrent)]
                   if cluster_max_concurrent is not None else []),
                 *(["--rate", rate] if rate is not None else []),
                 *(["--held", str(held)] if held is not None else []),
                 *(["--stop-wait", str(stop_wait)] if stop_wait is not None else [])],
                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        node = cls(proc, name, log)
        if wait:
            node.wait_ready()
        return node

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"node {self.name} ended before it was ready:\n"
                                     + self.stderr())
            if line.startswith("ready"):
                self.epoch = int(line.split()[1])
                return
        raise AssertionError(f"node {self.name} not ready within {timeout}s")

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def drain(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        with_stdout = self.proc.stdout
        if with_stdout is not None:
            with_stdout.close()


class Look:
    """The store, read as a tool."""

    def __init__(self, url: str) -> None:
        from garrison.persistence import PostgresStore

        deadline = time.monotonic() + 30
        while True:
            try:
                self.store = PostgresStore(url, lock=False)
                break
            except Exception:  # the first node has not created the schema yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self.store.close()

    def lapse(self, epoch: int) -> None:
        """Cut the node of incarnation ``epoch`` off: its lease ends now, as the server
        reads it (as if it had been paused past its lease)."""
        self.store._query("UPDATE garrison.nodes SET lease_until = lease_until - 100 "
                          "WHERE epoch = %s RETURNING 1", (epoch,))

    def owners(self) -> dict[str, str | None]:
        rows = self.store._query("SELECT workflow_id, owner FROM garrison.workflows "
                                 "WHERE status NOT IN ('completed', 'failed', 'cancelled')")
        return {wid: owner for wid, owner in rows}

    def live_owners(self) -> dict[str, str | None]:
        """``owners()`` as the cluster sees them now: the name of the live node whose
        incarnation owns each unfinished workflow, ``None`` for one no live node owns
        (its owner's lease lapsed: the name in the row is stale until it is claimed)."""
        rows = self.store._query(
            "SELECT w.workflow_id, n.name FROM garrison.workflows w LEFT JOIN "
            "garrison.nodes n ON n.epoch = w.owner_epoch AND n.status IN ('active', "
            "'draining') AND n.lease_until > garrison.now_s() "
            "WHERE w.status NOT IN ('completed', 'failed', 'cancelled')")
        return {wid: owner for wid, owner in rows}

    def holding(self, host: str = "workflows") -> int:
        """How many workflows of ``host`` hold a slot now (running or parked), by the
        store: what ``cluster_max_concurrent`` bounds."""
        rows = self.store._query("SELECT count(*) FROM garrison.workflows WHERE host = %s "
                                 "AND status IN ('running', 'waiting', 'sleeping')", (host,))
        return int(rows[0][0])

    def spans(self, ids: list[str]) -> dict[str, tuple[float, float]]:
        """``(first, last)`` time of each workflow's recorded steps: inside the time it
        held a slot, wherever it ran."""
        out = {}
        for wid in ids:
            times = [r.time.timestamp() for r in self.store.journal(wid)]
            out[wid] = (min(times), max(times))
        return out

    def statuses(self) -> dict[str, str]:
        return {r.workflow_id: str(r.status) for r in self.store.list_workflows()}

    def steps(self, wid: str) -> list[tuple[int, str]]:
        """``(i, node)`` of each recorded step of ``wid``, in seq order."""
        out = []
        for rec in self.store.journal(wid):
            if rec.kind == "activity":
                outcome: Any = rec.outcome
                value = outcome["ok"]
                out.append((int(value["i"]), str(value["node"])))
        return out

    def result(self, wid: str) -> Any:
        rec = self.store.get_workflow(wid)
        return None if rec is None else rec.result

    def nodes(self, *, all_rows: bool = False) -> list[Any]:
        from garrison.persistence._pg_cluster import PgCluster

        return PgCluster(self.store).nodes(all_rows=all_rows)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> float:
    """Poll ``check`` until truthy; the seconds it took. ``AssertionError`` naming
    ``what`` after ``timeout``."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
