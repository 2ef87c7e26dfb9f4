"""Order fulfillment with child workflows (Wippy's story): payment and shipping run as
durable children; the parent collects their ``EXIT`` events.

Run it:  python examples/order_fulfillment.py [STORE.db]

A workflow that spawns onto a workflow host gets a durable child workflow (id
``<parent>.<seq>``). Each child's ``EXIT`` (result or error) is committed to the
parent's inbox in the same transaction that records the child's end, so it reaches
the parent even across crashes. Cancelling the parent cancels its unfinished children.

The demo runs on trio's virtual clock, so the shipping child's one-day wait passes in
no real time; a real application runs ``trio.run(main)``.
"""

from __future__ import annotations

import sys
from typing import Any

import attrs
import trio
import trio.testing

import garrison
from garrison import process, workflow


@attrs.frozen
class Order:
    id: str
    total: int
    address: str


@garrison.activity
async def charge_card(order_id: str, amount: int) -> str:
    if amount > 1000:
        raise PermissionError(f"card declined for {amount}")
    return f"pay-{order_id}"


@garrison.activity
async def book_courier(order_id: str, address: str) -> str:
    return f"TRACK-{order_id}"


async def payment_workflow(order_id: str, amount: int) -> str:
    """A child: charge the card."""
    return await charge_card(order_id, amount)


async def shipping_workflow(order_id: str, address: str) -> str:
    """A child: wait a day for the warehouse, then book the courier."""
    await workflow.sleep("1d")
    return await book_courier(order_id, address)


async def order_workflow(order: Order) -> dict[str, Any]:
    """Spawn payment and shipping; wait for both EXITs."""
    workflow.attrs(search={"stage": "fulfilling"})
    payment = await process.spawn(payment_workflow, order.id, order.total)
    shipping = await process.spawn(shipping_workflow, order.id, order.address)
    results: dict[str, Any] = {}
    events = process.events()
    while len(results) < 2:
        ev = await events.receive()
        if ev.kind is not garrison.EventKind.EXIT:
            continue
        name = "payment" if ev.pid == payment else "shipping" if ev.pid == shipping else ""
        results[name] = ev.result if ev.ok else f"failed: {ev.error}"
    ok = all(not str(r).startswith("failed") for r in results.values())
    workflow.attrs(search={"stage": "completed" if ok else "needs attention"})
    return {"status": "completed" if ok else "failed", **results}


async def main(store: str | None = None) -> list[dict[str, Any]]:
    results = []
    async with garrison.open_node(store=store) as node:
        for order in (Order("o-1", 120, "1 Main St"), Order("o-2", 5000, "2 High St")):
            await node.start_workflow(order_workflow, order, id=f"order-{order.id}")
            results.append(await node.workflow(f"order-{order.id}").result())
            print(f"  order-{order.id}: {results[-1]}")
        for summary in node.workflows():
            print(f"  {summary.workflow_id:<12} {summary.name.split(':')[1]:<18} "
                  f"{summary.status:<10} {summary.search}")
    return results


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None,
             clock=trio.testing.MockClock(autojump_threshold=0))
