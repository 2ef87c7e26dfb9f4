"""Workflows used by the schedule and queue tests (importable by module:qualname)."""

from __future__ import annotations

from garrison import process, workflow

#: (workflow id, wall-clock start in unix seconds) of every run, in start order
STARTS: list[tuple[str, float]] = []


async def job(seconds: float = 0.0) -> str:
    """Record the start, run ``seconds`` (a durable sleep), return its id."""
    info = workflow.info()
    started = workflow.now().timestamp()  # recorded: a replay sees the first run's time
    if not any(wid == info.workflow_id for wid, _ in STARTS):
        STARTS.append((info.workflow_id, started))
    if seconds:
        await workflow.sleep(seconds)
    return info.workflow_id


async def waits_for_go() -> str:
    """Wait for a ``go`` message; return its payload."""
    msg = await process.inbox().receive()
    assert msg is not None
    return str(msg.payload)
