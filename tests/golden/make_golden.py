"""Regenerate the golden journals: ``python tests/golden/make_golden.py``.

Each file holds a workflow's name, input, journal and result as recorded by a real
run. ``tests/test_workflow_replay.py`` replays them against today's code: a change
that alters the recorded path of a workflow shows up as a failing golden test.
Only regenerate on purpose (and say why in the commit).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import trio

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]

import workflow_app  # noqa: E402

import garrison  # noqa: E402
from examples import approval, order_saga  # noqa: E402
from garrison.persistence import SQLiteStore  # noqa: E402


async def record(node: garrison.Node, name: str, target: object, *args: object,
                 signal: tuple[str, object] | None = None, cancel: bool = False,
                 resolve: tuple[str, object] | None = None) -> None:
    wid = name
    await node.start_workflow(target, *args, id=wid)
    handle = node.workflow(wid)
    if signal is not None or cancel or resolve is not None:
        while handle.status() != "waiting":
            await trio.sleep(0.001)
    if signal is not None:
        await handle.signal(*signal)
    if resolve is not None:
        await handle.promise(resolve[0]).resolve(resolve[1])
    if cancel:
        await handle.cancel()
    try:
        result = await handle.result()
    except garrison.WorkflowCancelled as exc:
        result = exc
    store: SQLiteStore = node.hosts["workflows"].store
    rec = store.get_workflow(wid)
    assert rec is not None
    data = {
        "workflow": rec.name,
        "input": rec.input,
        "journal": [{"seq": r.seq, "kind": r.kind, "name": r.name, "outcome": r.outcome,
                     "attempts": r.attempts} for r in store.journal(wid)],
        "result": store.get_workflow(wid).result,  # type: ignore[union-attr]
        "note": f"recorded by make_golden.py from a run of {rec.name}; result {result!r}",
    }
    (HERE / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


async def main() -> None:
    db = str(Path(tempfile.mkdtemp()) / "golden.db")
    async with garrison.open_node(store=db) as node:
        await record(node, "order_saga_completed", order_saga.order_workflow,
                     order_saga.ORDERS[0])
        await record(node, "order_saga_ship_failed", order_saga.order_workflow,
                     order_saga.ORDERS[2])
        await record(node, "approval", approval.approval_workflow, "laptop",
                     signal=("approve", {"by": "ann"}))
        await record(node, "cancelled", workflow_app.cancellable, cancel=True)
        await record(node, "sleep_and_values", workflow_app.sleeper, "20ms")
        await record(node, "promise_race", workflow_app.promise_or_deadline, "1h",
                     resolve=("approval", {"by": "ann"}))
        await record(node, "fan_out", workflow_app.fan_out)


if __name__ == "__main__":
    trio.run(main)
