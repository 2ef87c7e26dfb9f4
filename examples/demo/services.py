"""The demo's two services: a key-value store and a ticker that crashes now and then."""

from __future__ import annotations

from typing import Any

import trio

from garrison import EventKind, process


async def kv_store() -> None:
    """Answers ``get`` / ``incr`` calls; stops cleanly on CANCEL."""
    data: dict[str, Any] = {}

    async def serve() -> None:
        async for msg in process.inbox():
            if msg.topic == "get":
                await msg.reply(data.get(msg.payload))
            elif msg.topic == "incr":
                data[msg.payload] = data.get(msg.payload, 0) + 1
                await msg.reply(data[msg.payload])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        async for ev in process.events():
            if ev.kind == EventKind.CANCEL:
                nursery.cancel_scope.cancel()


async def ticker(period: float) -> None:
    """Counts its starts and ticks in the store; every third tick it crashes."""
    await process.call("app:kv", "incr", "ticker_starts")
    events = process.events()
    while True:
        ev = await events.receive(timeout=period)
        if ev is not None and ev.kind == EventKind.CANCEL:
            return  # asked to stop: stop cleanly
        ticks = await process.call("app:kv", "incr", "ticks")
        if ticks % 3 == 0:
            raise RuntimeError(f"tick {ticks}: the ticker tripped (restarted by its service)")
