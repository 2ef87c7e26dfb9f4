"""Document approval with a 48-hour deadline (Restate's human-in-the-loop story).

Run it:  python examples/document_approval.py [STORE.db]

The workflow asks a reviewer, then waits for a durable promise ``"approval"`` raced
with a 48-hour durable timer. While it waits, anyone can read its progress with
``handle.state("status")`` and resolve (or reject) the promise with
``handle.promise("approval")``. A restart while it waits loses nothing: the promise,
the timer's deadline and the state are in the store.

The demo runs on trio's virtual clock (``MockClock``), so the 48 hours pass in no
real time; a real application runs ``trio.run(main)``. Its tests, with
``garrison.testing``: ``examples/test_document_approval.py``.
"""

from __future__ import annotations

import logging
import sys

import attrs
import trio
import trio.testing

import garrison
from garrison import workflow


@attrs.frozen
class Document:
    id: str
    author: str
    content: str


@attrs.frozen
class Decision:
    status: str  # "approved", "rejected" or "timeout"
    approver: str = ""
    comments: str = ""


@garrison.activity
async def notify_reviewer(doc: Document) -> str:
    print(f"  [{doc.id}] review requested from the reviewers' channel")
    return f"review-{doc.id}"


@garrison.activity
async def publish(doc: Document, approver: str) -> None:
    print(f"  [{doc.id}] published (approved by {approver})")


async def document_approval(doc: Document, deadline: str = "48h") -> Decision:
    """Wait up to ``deadline`` for a reviewer's decision on ``doc``."""
    workflow.set_state("status", "submitted")
    await notify_reviewer(doc)
    approval = workflow.promise("approval")
    timeout = workflow.timer(deadline)
    workflow.set_state("status", "waiting for review")
    workflow.logger.info("[%s] waiting up to %s for a review", doc.id, deadline)
    done = await workflow.first(approval, timeout)
    if done is timeout:
        workflow.set_state("status", "timed out")
        workflow.logger.info("[%s] no review in time", doc.id)
        return Decision("timeout")
    try:
        answer = await approval
    except garrison.PromiseRejected as exc:
        workflow.set_state("status", "rejected")
        return Decision("rejected", comments=str(exc).rpartition(": ")[2])
    await publish(doc, answer["approver"])
    workflow.set_state("status", "approved")
    return Decision("approved", answer["approver"], answer.get("comments", ""))


async def wait_until(handle: garrison.WorkflowHandle, status: str) -> bool:
    """Wait for ``status``; False if the workflow already ended (a second run on a store)."""
    while handle.status() != status:
        if handle.status() in ("completed", "failed", "cancelled"):
            return False
        await trio.sleep(0.001)
    return True


async def main(store: str | None = None) -> list[Decision]:
    results = []
    async with garrison.open_node(store=store) as node:
        doc = Document("doc-1", "ann", "Q3 plan")
        await node.start_workflow(document_approval, doc, id="approve-doc-1")
        handle = node.workflow("approve-doc-1")
        if await wait_until(handle, "waiting"):
            print(f"  [doc-1] {handle.status()}: state(status) = {handle.state('status')!r}")
            await handle.promise("approval").resolve({"approver": "bob", "comments": "ship it"})
        results.append(await handle.result())
        print(f"  [doc-1] {results[-1]}")

        await node.start_workflow(document_approval, Document("doc-2", "cy", "draft"),
                                  id="approve-doc-2")
        if await wait_until(node.workflow("approve-doc-2"), "waiting"):
            await node.workflow("approve-doc-2").promise("approval").reject("needs numbers")
        results.append(await node.workflow("approve-doc-2").result())
        print(f"  [doc-2] {results[-1]}")

        await node.start_workflow(document_approval, Document("doc-3", "di", "memo"),
                                  id="approve-doc-3")
        results.append(await node.workflow("approve-doc-3").result())
        # (from its stored times, not this run's clock: a second run reads the first's)
        (doc3,) = [w for w in node.workflows() if w.workflow_id == "approve-doc-3"]
        hours = (doc3.updated - doc3.created).total_seconds() / 3600
        print(f"  [doc-3] {results[-1]} after {hours:.0f} hours (virtual time); "
              f"state(status) = {node.workflow('approve-doc-3').state('status')!r}")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="  log: %(message)s")
    logging.getLogger("garrison").setLevel(logging.ERROR)  # the workflow's own lines only
    logging.getLogger("garrison.workflow.user").setLevel(logging.INFO)
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None,
             clock=trio.testing.MockClock(autojump_threshold=0))
