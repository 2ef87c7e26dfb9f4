"""The demo's two services: a key-value store and a ticker that crashes now and then."""

from __future__ import annotations

from typing import Any

import trio

from garrison import process


async def kv_store() -> None:
    """Answers ``get`` / ``incr`` / ``set`` calls. A process that never reads its events
    is stopped at its next checkpoint when the node stops it: no CANCEL handling needed."""
    data: dict[str, Any] = {}
    async for msg in process.inbox():
        if msg.topic == "get":
            await msg.reply(data.get(msg.payload))
        elif msg.topic == "incr":
            data[msg.payload] = data.get(msg.payload, 0) + 1
            await msg.reply(data[msg.payload])
        elif msg.topic == "set":
            key, value = msg.payload
            data[key] = value
            await msg.reply(None)


async def ticker(period: float) -> None:
    """Counts its starts and ticks in the store; every third tick it crashes."""
    starts = await process.call("app:kv", "incr", "ticker_starts")
    ticks = await process.call("app:kv", "get", "ticks") or 0
    await process.call("app:kv", "set", [f"ticks_before_start_{starts}", ticks])
    while True:
        await trio.sleep(period)
        ticks = await process.call("app:kv", "incr", "ticks")
        if ticks % 3 == 0:
            raise RuntimeError(f"tick {ticks}: the ticker tripped (restarted by its service)")
