"""Workflows and processes traced by tests/test_observe.py (importable by name, so
that a workflow resumed on a second node finds them)."""

from __future__ import annotations

from typing import Any

import garrison
from garrison import process, workflow

#: the OpenTelemetry tracer user code makes its own spans with (set by the test)
TRACER: Any = None


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=3, initial_delay="1s"))
async def add_one(x: int) -> int:
    """Fails on its first attempt for x == 41 (a retried activity: two attempt spans)."""
    if x == 41 and add_one_failures.get(x, 0) == 0:
        add_one_failures[x] = 1
        raise RuntimeError("first attempt fails")
    return x + 1


add_one_failures: dict[int, int] = {}


async def backend() -> None:
    """A process registered as ``backend``: doubles, inside a span of its own."""
    process.register("backend")
    async for msg in process.inbox():
        with TRACER.start_as_current_span("backend.work"):
            await msg.reply(msg.payload * 2)


async def middle() -> int:
    """A workflow: answers one call by an activity and a call to the backend."""
    msg = await process.inbox().receive()
    value = await add_one(msg.payload)
    answer: int = await process.call("backend", "double", value, timeout="10s")
    await msg.reply(answer)
    return answer


async def frontend() -> int:
    """A process: starts the middle workflow and calls it, inside a span of its own."""
    with TRACER.start_as_current_span("frontend.request"):
        pid = await process.spawn(middle, host="workflows", id="mid")
        result: int = await process.call(pid, "compute", 41, timeout="10s")
        return result


async def sleeper() -> int:
    """A workflow that sleeps, then handles one message with an activity."""
    workflow.now()  # a journal record before the sleep
    await workflow.sleep("1h")
    msg = await process.inbox().receive()
    return await add_one(msg.payload)


#: the code of ``changes`` changed since its journal was written (set by the test)
CHANGED = False


async def changes() -> int:
    """A workflow whose first step is another once ``CHANGED``: a resume diverges."""
    if CHANGED:
        workflow.uuid4()
    else:
        workflow.now()
    await workflow.sleep("1h")
    return 1


async def counter(n: int) -> int:
    """Continues as new until ``n`` reaches 0."""
    if n > 0:
        workflow.continue_as_new(n - 1)
    return await add_one(n)


async def receive_then_sleep() -> int:
    """A workflow that takes a message, sleeps, then acts on it with an activity."""
    msg = await process.inbox().receive()
    await workflow.sleep("1h")
    return await add_one(msg.payload)


async def try_then_act() -> int:
    """A workflow that sleeps, then takes a waiting message without waiting."""
    await workflow.sleep("1s")
    msg = process.inbox().try_receive()
    return await add_one(msg.payload)


@garrison.activity()
def sync_step(x: int) -> int:
    """A plain (thread) activity that opens a span of its own."""
    with TRACER.start_as_current_span("sync_step.work"):
        return x + 1


async def uses_sync_step(x: int) -> int:
    return await sync_step(x)


async def starts_sleeper() -> None:
    """A service that starts the workflow ``sleepy`` by id (idempotently, as a service
    started again after a crash does), then serves."""
    await garrison.current_node().start_workflow(sleeper, id="sleepy")
    async for _ in process.inbox():
        pass


async def two_steps() -> int:
    """A workflow that records a step, sleeps, records another, then sleeps long."""
    workflow.now()
    await workflow.sleep("1s")
    workflow.now()
    await workflow.sleep("1h")
    return 2
