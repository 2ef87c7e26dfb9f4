"""The torture scenario's code: a ring of workflows that pass tokens to each other,
call a plain process every round, and record each step as an activity.

Workflow ``r<i>`` runs ``ROUNDS`` rounds; in round ``k`` it
1. records an activity ``step`` (returns ``i * 1000 + k``),
2. calls the plain process ``echo`` (a config service) with ``k`` and gets ``2k``,
3. sends ``token`` ``{round: k, from: i}`` to ``r<i+1>``, and
4. receives the token of round ``k`` from ``r<i-1>``.

Its result is exact: ``sum(i*1000 + k + 2k + k)`` over the rounds, with the tokens it
received in order. The activity writes a line to ``GARRISON_TORTURE_LOG`` each time it
runs (a crash may run one twice; the journal records it once).
"""

from __future__ import annotations

import os

import garrison
from garrison import process, workflow


@garrison.activity
async def step(i: int, k: int) -> int:
    fd = os.open(os.environ["GARRISON_TORTURE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 0o644)
    try:
        os.write(fd, f"r{i} {k}\n".encode())
    finally:
        os.close(fd)
    return i * 1000 + k


async def echo() -> None:
    """The plain process every workflow calls (a config service, registered by id)."""
    async for msg in process.inbox():
        if msg.topic == "double":
            await msg.reply(msg.payload * 2)


async def ring_member(i: int, size: int, rounds: int) -> dict[str, object]:
    total = 0
    got: list[int] = []
    tokens = process.listen("token")
    for k in range(rounds):
        total += await step(i, k)
        total += await process.call("torture:echo", "double", k, timeout="30s")
        await process.send(f"workflows/r{(i + 1) % size}", "token", {"round": k, "from": i})
        msg = await tokens.receive()
        assert msg is not None and msg.payload["from"] == (i - 1) % size, msg
        got.append(msg.payload["round"])
        total += msg.payload["round"]
        if k % 3 == 2:
            await workflow.sleep(0.01)
    return {"total": total, "got": got}


def expected(i: int, rounds: int) -> dict[str, object]:
    return {"total": sum(i * 1000 + k + 2 * k + k for k in range(rounds)),
            "got": list(range(rounds))}
