"""The web console demo: expense reports that wait for your approval.

``garrison run examples/console/app.yaml --store expenses.db --ui 127.0.0.1:8233``
starts a node with three services and a console attached to it:

- ``app:submissions`` files three expense reports, each a durable workflow. Two wait
  for a decision on their ``approval`` promise; one fails (a receipt is missing), so
  the console shows its error and traceback.
- ``app:audit`` runs a supervisor with two children (the supervision tree).
- ``app:pulse`` fails once and is restarted (its restart count).

In the console, open a waiting report, resolve its ``approval`` promise with
``{"by": "ann"}`` (or reject it) and watch it pay out and finish.
"""

from __future__ import annotations

from typing import Any

import trio

import garrison
from garrison import PromiseRejected, RetryPolicy, process, workflow
from garrison.supervision import ChildSpec, Supervisor

REPORTS = [
    {"id": "exp-1001", "employee": "ann", "team": "travel", "amount": 420.0,
     "receipts": ["train", "hotel"]},
    {"id": "exp-1002", "employee": "bob", "team": "office", "amount": 89.5,
     "receipts": ["chair"]},
    {"id": "exp-1003", "employee": "cyd", "team": "travel", "amount": 1310.0,
     "receipts": []},
]


@garrison.activity(retry=RetryPolicy(max_attempts=2, initial_delay="100ms"))
async def check_receipts(report: dict[str, Any]) -> int:
    """Every report needs at least one receipt."""
    if not report["receipts"]:
        raise ValueError(f"report {report['id']} has no receipts for {report['amount']}")
    return len(report["receipts"])


@garrison.activity
async def pay(report: dict[str, Any], approver: str) -> str:
    return f"PAY-{report['id']}-{approver}"


async def payout_notice(employee: str, reference: str) -> str:
    """A child workflow of a paid report."""
    return f"told {employee} about {reference}"


async def expense_report(report: dict[str, Any]) -> dict[str, Any]:
    """Check the receipts, wait (up to a week) for an approval, then pay."""
    workflow.attrs(search={"team": report["team"], "employee": report["employee"]},
                   memo={"amount": report["amount"]})
    workflow.set_state("stage", "checking receipts")
    receipts = await check_receipts(report)
    workflow.set_state("stage", "waiting for approval")
    approval = workflow.promise("approval")
    deadline = workflow.timer("7d")
    if await workflow.first(approval, deadline) is deadline:
        workflow.set_state("stage", "expired")
        return {"status": "expired"}
    try:
        decision = await approval
    except PromiseRejected as exc:
        workflow.set_state("stage", "rejected")
        return {"status": "rejected", "reason": str(exc)}
    approver = decision.get("by", "someone") if isinstance(decision, dict) else str(decision)
    reference = await pay(report, approver)
    await process.spawn(payout_notice, report["employee"], reference, host="workflows")
    workflow.set_state("stage", "paid")
    return {"status": "paid", "reference": reference, "receipts": receipts}


async def submit_reports() -> None:
    """File the demo's reports (again after a restart: the ids make it idempotent)."""
    node = garrison.current_node()
    for report in REPORTS:
        await node.start_workflow("app:expense_report", report, id=report["id"])


async def ledger() -> None:
    process.register("ledger")
    async for msg in process.inbox():
        await msg.reply({"ok": True})


async def mailer() -> None:
    await trio.sleep_forever()


async def audit_tree() -> None:
    """This process is a supervisor of two children."""
    await Supervisor([ChildSpec("ledger", ledger), ChildSpec("mailer", mailer)])()


_pulses = 0


async def heartbeat() -> None:
    """Fails on its first run (a simulated outage), then beats quietly."""
    global _pulses
    _pulses += 1
    await trio.sleep(0.3)
    if _pulses == 1:
        raise ConnectionError("lost the line to the monitoring host")
    await trio.sleep_forever()
