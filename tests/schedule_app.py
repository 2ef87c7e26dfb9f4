"""Workflows used by the schedule and queue tests (importable by module:qualname)."""

from __future__ import annotations

import garrison
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


async def child(tag: str) -> str:
    await workflow.sleep(1.0)
    return tag


async def parent_of_two() -> list[str]:
    """Two child workflows (on its own host), then their results."""
    me = workflow.info().workflow_id
    for i in range(2):
        await process.spawn(child, f"{me}-c{i}", id=f"{me}-c{i}")
    results = []
    for _ in range(2):
        event = await process.events().receive()
        assert event is not None
        results.append(event.result)
    return sorted(results)


async def spawns_later(child_id: str, after: float = 1.0) -> str:
    """After ``after`` seconds, spawn (monitored) ``job`` by the id ``child_id``; its
    result."""
    await workflow.sleep(after)
    await process.spawn_monitored(job, id=child_id)
    event = await process.events().receive()
    assert event is not None
    return f"{child_id}: {event.result}"


FAIL = {"on": False}


async def fails_while_asked() -> str:
    """Record the start; raise while ``FAIL["on"]``."""
    info = workflow.info()
    STARTS.append((info.workflow_id, workflow.now().timestamp()))
    if FAIL["on"]:
        raise RuntimeError("asked to fail")
    return info.workflow_id


#: while ``DIVERGE["on"]`` the first step of ``diverging`` is another than the one its
#: code records with it off: a run recorded one way and resumed the other is blocked
#: (a ``NonDeterminismError``), as by a deploy that changed the code
DIVERGE = {"on": False}


async def diverging() -> str:
    """A first step that ``DIVERGE`` chooses, then wait for a ``go`` message; return its
    payload."""
    if DIVERGE["on"]:
        workflow.uuid4()
    else:
        workflow.now()
    msg = await process.inbox().receive()
    assert msg is not None
    return str(msg.payload)


@garrison.activity
async def enqueue(wid: str, seconds: float) -> str:
    """Start ``job`` as ``wid`` in the node's queue (not as a child): its pid's text."""
    return str(await garrison.current_node().start_workflow(job, seconds, id=wid))


async def enqueues(n: int) -> list[str]:
    """DBOS's enqueue from a workflow: ``n`` jobs through the queue, then their
    results, in the order their EXITs came (through monitors)."""
    me = workflow.info().workflow_id
    pids = [await enqueue(f"{me}-job{i}", 10.0) for i in range(n)]
    for pid in pids:
        process.monitor(pid)
    results = []
    for _ in pids:
        event = await process.events().receive()
        assert event is not None
        results.append(event.result)
    return results


async def links_then_sleeps(target: str, seconds: float, trap: bool = False) -> str:
    """Link to the workflow ``target`` (a pid's text), trapping links if ``trap``, then
    sleep ``seconds``; then what reached its inbox meanwhile (``"slept"`` for nothing)."""
    if trap:
        process.set_options(trap_links=True)
    process.link(target)
    await workflow.sleep(seconds)
    if trap:
        event = await process.events().receive(timeout=0)
        if event is not None:
            return f"{event.kind}: {event.error}"
    return "slept"
