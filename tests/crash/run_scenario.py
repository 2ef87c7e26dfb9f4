"""Child process of the crash tests: run (or resume) one workflow on a store (a SQLite
file or a postgresql:// URL).

    python run_scenario.py DB start WORKFLOW_ID TARGET [JSON_ARGS]
    python run_scenario.py DB resume WORKFLOW_ID [--send TOPIC JSON]

Prints one JSON line ``{"result": ..., "error": ...}`` when the workflow ends.
``GARRISON_KILL_AT`` makes this process SIGKILL itself at a precise point:
``record:<activity name>`` (the activity ran, its journal row is not committed) or
``replay:<seq>`` (while replaying that seq), ``ended:<wid>`` (right after the commit
that ends workflow ``<wid>``; the ends of other workflows asked before it are held,
never committed, so that nothing but that commit decides what the store keeps).
``start`` with ``--terminate-after TAG,...`` (``--cancel-after TAG,...[@ID]``):
terminate (cancel) the workflow (its handle; workflow ``ID`` if given) once those
markers are there; ``resume`` with
``--within SECONDS``: give up waiting then.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import crash_app
import trio

import garrison
from garrison.hosts.workflow import _core, _journal
from garrison.persistence import Op, SQLiteStore, is_postgres_url


def install_kill_point() -> None:
    where = os.environ.get("GARRISON_KILL_AT", "")
    if where.startswith("record:"):
        name = where.partition(":")[2]
        original = _core.WorkflowCore.record

        def record(self, tx, seq, kind, name_, outcome_json, attempts=1):  # type: ignore[no-untyped-def]
            if kind == "activity" and name_ == name:
                crash_app.mark(f"kill:record:{name}")
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, tx, seq, kind, name_, outcome_json, attempts)

        _core.WorkflowCore.record = record  # type: ignore[method-assign]
    elif where.startswith(("commit:", "committed:")):
        # the Nth write of this process: before it (commit:N) or right after it, before
        # the workflow sees the outcome (committed:N)
        when, _, n = where.partition(":")
        limit = int(n)
        calls = [0]
        store_class: type = SQLiteStore
        if is_postgres_url(sys.argv[1]):
            from garrison.persistence import PostgresStore

            store_class = PostgresStore
        original_commit = store_class.commit

        async def commit(self, tx):  # type: ignore[no-untyped-def]
            calls[0] += 1
            mine = calls[0]  # (others commit concurrently while this one waits)
            if mine == limit and when == "commit":
                crash_app.mark(f"kill:{where}")
                os.kill(os.getpid(), signal.SIGKILL)
            result = await original_commit(self, tx)
            if mine == limit:
                crash_app.mark(f"kill:{where}")
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        store_class.commit = commit
    elif where.startswith("ended:"):
        target = where.partition(":")[2]
        store_class = SQLiteStore
        if is_postgres_url(sys.argv[1]):
            from garrison.persistence import PostgresStore

            store_class = PostgresStore
        original_commit = store_class.commit

        def ends(tx):  # type: ignore[no-untyped-def]
            return [wid for (op, params), wid in zip(tx.ops, tx.workflow_ids, strict=True)
                    if op is Op.UPDATE_WORKFLOW
                    and any(k == "status" and v in ("failed", "completed", "cancelled")
                            for k, v in params[2])]

        async def commit(self, tx):  # type: ignore[no-untyped-def]
            ended = ends(tx)
            if ended and target not in ended:
                await trio.sleep_forever()  # (held: the kill comes first)
            result = await original_commit(self, tx)
            if target in ended:
                crash_app.mark(f"kill:{where}")
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        store_class.commit = commit
    elif where.startswith("replay:"):
        at = int(where.partition(":")[2])
        take = _journal.Cursor.take

        def take_and_die(self, kind, name):  # type: ignore[no-untyped-def]
            if self.seq == at and self.seq in self.entries:
                crash_app.mark(f"kill:replay:{at}")
                os.kill(os.getpid(), signal.SIGKILL)
            return take(self, kind, name)

        _journal.Cursor.take = take_and_die  # type: ignore[method-assign]


async def main() -> None:
    db, mode, wid = sys.argv[1:4]
    rest = sys.argv[4:]
    options = dict(zip(rest[::2], rest[1::2], strict=False))
    async with garrison.open_node(store=db) as node:
        opened = time.monotonic()
        crash_app.mark(f"node:{mode}")
        if mode == "start":
            target = getattr(crash_app, rest[0])
            args = json.loads(rest[1]) if len(rest) > 1 else []
            await node.start_workflow(target, *args, id=wid)
            if len(rest) > 3 and rest[2] in ("--terminate-after", "--cancel-after"):
                tags, _, which = rest[3].partition("@")
                while not set(tags.split(",")) <= set(crash_app.markers()):
                    await trio.sleep(0.02)
                if rest[2] == "--cancel-after":
                    await node.workflow(which or wid).cancel()
                else:
                    await node.workflow(wid).terminate()
        elif rest and rest[0] == "--send":
            await node.workflow(wid).signal(rest[1], json.loads(rest[2]))
        out: dict[str, object] = {}
        try:
            with trio.fail_after(float(options.get("--within", "inf"))):
                out["result"] = await node.workflow(wid).result()
        except Exception as exc:  # reported to the parent
            out["error"] = f"{type(exc).__name__}: {exc}"
        out["elapsed"] = time.monotonic() - opened  # from recovery to the result
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    install_kill_point()
    trio.run(main)
