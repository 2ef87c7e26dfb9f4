"""Workflows for the web console's tests (importable by module:qualname)."""

from __future__ import annotations

from typing import Any

import trio

import garrison
from garrison import RetryPolicy, process, workflow


async def gated(label: str, deadline: str | None = "7d") -> dict[str, Any]:
    """Waits for its ``go`` promise (or ``deadline``), keeps a state and search attributes.

    (A test on virtual time where a thread runs meanwhile, the node's watcher of a tool's
    writes or the console's journal read, passes no deadline: the clock would jump past
    it while the thread works.)"""
    workflow.attrs(search={"label": label, "team": "blue" if label.startswith("b") else "red"})
    workflow.set_state("stage", "waiting for go")
    go = workflow.promise("go")
    if deadline is not None:
        timer = workflow.timer(deadline)
        if await workflow.first(go, timer) is timer:
            return {"label": label, "go": None}
    value = await go
    workflow.set_state("stage", "done")
    return {"label": label, "go": value}


async def listening() -> Any:
    """Returns the payload of the first message it receives."""
    msg = await process.inbox().receive()
    assert msg is not None
    return {"topic": msg.topic, "payload": msg.payload}


async def two_promises() -> list[Any]:
    """Waits for two promises whose names hold a ``/``; what they gave (an error's
    message for a rejected one)."""
    promises = [workflow.promise(name) for name in ("approval/manager",
                                                    "approval/promises/x")]
    out: list[Any] = []
    for promise in promises:
        try:
            out.append(await promise)
        except Exception as exc:
            out.append(str(exc))
    return out


async def one_promise(name: str) -> Any:
    """Waits for the promise ``name``; what it gave."""
    return await workflow.promise(name)


async def boom(text: str) -> None:
    raise RuntimeError(text)


@garrison.activity(retry=RetryPolicy(max_attempts=1))
async def charge() -> None:
    raise ConnectionError("payments are down")


@garrison.activity
async def refund() -> None:
    """A compensation (nothing to undo): recorded after the charge's error."""


async def charges_or_refunds() -> None:
    """Fails with the charge's final error after recording its compensation: a retry
    replays to the same failure (nothing is taken back)."""
    try:
        await charge()
    except garrison.ActivityError:
        await refund()
        raise


async def parent_of_gated() -> Any:
    """Spawns one ``gated`` child workflow and waits for its EXIT."""
    await process.spawn_monitored(gated, "child", None, host="workflows")
    event = await process.events().receive()
    return event.result if event is not None else None


async def idle() -> None:
    """A service that runs until stopped."""
    await trio.sleep_forever()


async def ratio(a: float, b: float) -> float:
    """Keeps and returns ``a / b``, NaN when ``b`` is 0 (JSON in Python allows it)."""
    value = a / b if b else float("nan")
    workflow.set_state("ratio", value)
    workflow.set_state("limits", [float("inf"), float("-inf")])
    return value


async def hands_off() -> str:
    """Starts a ``gated`` child workflow, monitored, and finishes without waiting for
    it: the child's EXIT arrives after the end and is never received."""
    await process.spawn_monitored(gated, "late", None, host="workflows")
    return "left a child running"


async def seed(count: int = 55) -> None:
    """A service that starts ``count`` gated workflows and one ``hands_off`` (idempotent
    ids), then idles."""
    import garrison

    node = garrison.current_node()
    for i in range(count):
        await node.start_workflow(gated, f"n{i}", None, id=f"g-{i:03d}")
    await node.start_workflow(hands_off, id="parent")
    await trio.sleep_forever()
