"""A workflow that waits (durably) for an approval message, with a deadline.

Run it:  python examples/approval.py [STORE.db]

The workflow submits the request (an activity), then waits on its inbox with a
durable timeout: the message is committed to the workflow's inbox before ``send``
returns, and a restart while it waits loses nothing (see examples/crash_demo.py).
"""

from __future__ import annotations

import sys

import trio

import garrison
from garrison import process


@garrison.activity
async def submit(request: str) -> str:
    print(f"  submitted {request!r} for approval")
    return f"ticket-{request}"


@garrison.activity
async def fulfil(ticket: str, approver: str) -> str:
    return f"{ticket} fulfilled (approved by {approver})"


async def approval_workflow(request: str, deadline: str = "2d") -> str:
    """Submit ``request``; wait for ``approve``/``reject`` until ``deadline``."""
    ticket = await submit(request)
    inbox = process.inbox()
    while True:
        msg = await inbox.receive(timeout=deadline)  # a durable timer
        if msg is None:
            return f"{ticket} expired without an answer"
        if msg.topic == "approve":
            return await fulfil(ticket, msg.payload["by"])
        if msg.topic == "reject":
            return f"{ticket} rejected: {msg.payload['reason']}"
        # anything else is ignored; the deadline restarts for simplicity


async def approver(wf: garrison.Pid) -> None:
    """A plain process that approves the request."""
    await process.send(wf, "approve", {"by": "ann"})


async def main(store: str | None = None) -> list[str]:
    results = []
    async with garrison.open_node(store=store) as node:
        pid = await node.start_workflow(approval_workflow, "laptop", id="approval-1")
        handle = node.workflow("approval-1")
        while handle.status() in ("pending", "running"):  # (a second run: completed)
            await trio.sleep(0.001)
        print(f"  {pid} is {handle.status()}")
        if handle.status() == "waiting":
            await node.spawn(approver, pid)
        results.append(await handle.result())
        print(f"  {results[-1]}")

        await node.start_workflow(approval_workflow, "yacht", "50ms", id="approval-2")
        results.append(await node.workflow("approval-2").result())
        print(f"  {results[-1]}")
        print("history of approval-1:",
              [(r.seq, r.kind, r.name) for r in handle.history()])
    return results


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None)
