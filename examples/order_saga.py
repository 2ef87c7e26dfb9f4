"""The order saga of the seeds: reserve, charge, ship; on a failure, compensate in reverse.

Run it:  python examples/order_saga.py [STORE.db or postgresql://URL]

Every step is an activity: journaled, retried by its policy, never re-run after its
outcome was recorded. A step that fails for good reaches the workflow as
``garrison.ActivityError`` (the same on a replay after a crash), so the ``except``
branch that compensates is taken again, identically, after a restart. The workflow
logs with ``workflow.logger`` (not ``print``): a replay does not log again.
"""

from __future__ import annotations

import logging
import sys

import attrs
import trio

import garrison
from garrison import RetryPolicy, workflow


@attrs.frozen
class Order:
    id: str
    items: list[str]
    total: int
    address: str
    #: for the demo: the step that fails ("reserve", "charge", "ship" or "")
    fail_at: str = ""


@attrs.frozen
class Outcome:
    status: str
    step: str = ""
    error: str = ""
    tracking: str = ""
    compensated: list[str] = attrs.field(factory=list)


NO_RETRY_DELAY = RetryPolicy(max_attempts=2, initial_delay="10ms")


@garrison.activity(retry=NO_RETRY_DELAY)
async def reserve_inventory(order: Order) -> str:
    if order.fail_at == "reserve":
        raise LookupError(f"out of stock: {order.items[0]}")
    return f"res-{order.id}"


@garrison.activity
async def release_inventory(reservation: str) -> None:
    print(f"  compensate: release {reservation}")


@garrison.activity(retry=NO_RETRY_DELAY)
async def charge_payment(order: Order) -> str:
    if order.fail_at == "charge":
        raise PermissionError(f"card declined for {order.total}")
    return f"pay-{order.id}"


@garrison.activity
async def refund_payment(payment: str) -> None:
    print(f"  compensate: refund {payment}")


@garrison.activity(retry=RetryPolicy(max_attempts=3, initial_delay="10ms",
                                     non_retryable=[ValueError]))
async def ship_order(order: Order) -> str:
    if order.fail_at == "ship":
        raise ValueError(f"cannot ship to {order.address!r}")
    return f"TRACK-{order.id}"


async def order_workflow(order: Order) -> Outcome:
    """Reserve, charge, ship; undo what was done, in reverse, when a step fails."""
    compensations: list[tuple[object, str, str]] = []
    step = "reserve"
    try:
        workflow.attrs(search={"status": "reserving", "order": order.id})
        reservation = await reserve_inventory(order)
        compensations.insert(0, (release_inventory, reservation, "release_inventory"))

        step = "charge"
        workflow.attrs(search={"status": "charging"})
        payment = await charge_payment(order)
        compensations.insert(0, (refund_payment, payment, "refund_payment"))

        step = "ship"
        workflow.attrs(search={"status": "shipping"})
        tracking = await ship_order(order)
    except garrison.ActivityError as exc:
        workflow.logger.warning("order %s: %s failed (%s), compensating", order.id, step, exc)
        done = []
        for undo, arg, name in compensations:  # most recent first
            await undo(arg)  # type: ignore[operator]
            done.append(name)
        workflow.attrs(search={"status": f"{step}_failed"})
        return Outcome("failed", step, str(exc), compensated=done)
    workflow.attrs(search={"status": "completed"})
    return Outcome("completed", tracking=tracking)


ORDERS = [
    Order("o-1", ["book"], 30, "1 Main St"),
    Order("o-2", ["lamp"], 99, "2 Side St", fail_at="charge"),
    Order("o-3", ["desk"], 250, "", fail_at="ship"),
]


async def main(store: str | None = None) -> list[Outcome]:
    results = []
    async with garrison.open_node(store=store) as node:
        for order in ORDERS:
            print(f"order {order.id}:")
            await node.start_workflow(order_workflow, order, id=f"order-{order.id}")
            outcome = await node.workflow(f"order-{order.id}").result()
            print(f"  {outcome}")
            results.append(outcome)
        failed = node.workflows(search={"status": "ship_failed"})
        print("ship_failed:", [w.workflow_id for w in failed])
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="  log: %(message)s")
    logging.getLogger("garrison").setLevel(logging.ERROR)  # the workflow's own lines only
    logging.getLogger("garrison.workflow.user").setLevel(logging.INFO)
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None)
