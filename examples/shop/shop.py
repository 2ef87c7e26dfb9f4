"""A new user's first app: services, an order workflow with retries, a promise raced
against a timer, and orders started by id from the root process."""

from __future__ import annotations

import attrs

import garrison
from garrison import RetryPolicy, process, workflow


@attrs.frozen
class Order:
    id: str
    item: str
    qty: int


# ------------------------------------------------------------------ services
async def inventory() -> None:
    """Stock by item: ``reserve`` answers True/False, ``stock`` the count left."""
    stock = {"apple": 10, "pear": 1}
    async for msg in process.inbox():       # stopped at once on shutdown: no CANCEL code
        if msg.topic == "reserve":
            item, qty = msg.payload
            ok = stock.get(item, 0) >= qty
            if ok:
                stock[item] -= qty
            await msg.reply(ok)
        elif msg.topic == "stock":
            await msg.reply(stock.get(msg.payload, 0))


async def mailer() -> None:
    async for msg in process.inbox():
        if msg.topic == "send":
            await msg.reply(f"mailed {msg.payload}")


# ------------------------------------------------------------------ the workflow
@garrison.activity(retry=RetryPolicy(max_attempts=3, initial_delay="1s"))
async def reserve(item: str, qty: int) -> bool:
    # an activity may call a service (plain messaging, retried by its policy)
    ok: bool = await process.call("shop:inventory", "reserve", [item, qty])
    return ok


@garrison.activity
async def notify(text: str) -> str:
    reply: str = await process.call("shop:mailer", "send", text)
    return reply


async def order_workflow(order: Order) -> str:
    if not await reserve(order.item, order.qty):
        return f"{order.id}: out of stock"
    payment = workflow.promise("payment")
    deadline = workflow.timer("1d")
    if await workflow.first(payment, deadline) is deadline:
        await notify(f"{order.id} expired")
        return f"{order.id}: payment timed out"
    await notify(f"{order.id} paid {await payment}")
    return f"{order.id}: shipped"


# ------------------------------------------------------------------ the root process
async def main() -> str:
    node = garrison.current_node()               # the node of `garrison run ... --main`
    orders = [Order("o-1", "apple", 3), Order("o-2", "pear", 5)]
    for order in orders:                          # by id: a rerun never starts a second
        await process.spawn(order_workflow, order, host="workflows", id=order.id)
    payment = node.workflow("o-1").promise("payment")
    if payment.status() == "pending":             # a rerun finds it paid already
        await payment.resolve("12.50 EUR")
    results = [await node.workflow(o.id).result() for o in orders]
    left = await process.call("shop:inventory", "stock", "apple")
    return "; ".join(results) + f" (apples left: {left})"
