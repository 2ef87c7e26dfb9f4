"""Workflows for the tests of operating workflows: terminate, retry, replay, the logger
and the testing kit (importable by module:qualname)."""

from __future__ import annotations

from typing import Any

import garrison
from garrison import Pid, RetryPolicy, process, workflow

#: what the activities did, in order (reset by the tests)
LOG: list[Any] = []
#: per-item failure budgets of ``charge``
FAILS: dict[str, int] = {}
#: which step name ``versioned`` calls (a deploy that renames an activity)
USE_OLD_STEP = False


@garrison.activity(retry=RetryPolicy(max_attempts=2, initial_delay="1s"))
async def reserve(item: str) -> str:
    LOG.append(("reserve", item))
    return f"res-{item}"


@garrison.activity(retry=RetryPolicy(max_attempts=2, initial_delay="1s"))
async def charge(item: str) -> str:
    LOG.append(("charge", item))
    if FAILS.get(item, 0) > 0:
        FAILS[item] -= 1
        raise ConnectionError(f"payments are down for {item}")
    return f"pay-{item}"


@garrison.activity
async def release(reservation: str) -> None:
    LOG.append(("release", reservation))


async def order(item: str) -> str:
    """Reserve, charge, then wait for one message."""
    workflow.logger.info("order %s: reserving", item)
    reservation = await reserve(item)
    workflow.logger.info("order %s: charging", item, extra={"item": item})
    payment = await charge(item)
    msg = await process.inbox().receive()
    workflow.set_state("attempt", workflow.info().attempt)
    workflow.logger.info("order %s: %s", item, msg.topic)
    return f"{reservation} {payment} {msg.topic}"


async def fails_after_reserving(item: str) -> str:
    await reserve(item)
    raise ValueError(f"no {item} left")


async def guarded(item: str) -> str:
    """Reserve, wait for a promise; on cancel, release the reservation (durably)."""
    reservation = await reserve(item)
    try:
        return str(await workflow.promise("go"))
    except garrison.WorkflowCancelled:
        await release(reservation)  # a cancellation handler: terminate skips it
        raise


async def waiting_child(n: int) -> str:
    await workflow.promise("never")
    return f"child {n}"


async def parent_of_many(n: int, grandchildren: int = 0) -> str:
    """Start ``n`` child workflows that wait for ever, and one more with
    ``grandchildren`` of its own if any; then wait for ever too."""
    for k in range(n):
        await process.spawn(waiting_child, k, host="workflows")
    if grandchildren:
        await process.spawn(parent_of_many, grandchildren, host="workflows")
    await workflow.promise("never")
    return "never"


async def parent_of_one() -> str:
    """Start a child workflow and return how it ended (from its EXIT)."""
    await process.spawn(waiting_child, 1, host="workflows")
    event = await process.events().receive()
    return f"child ended: {event.error}"


async def spawns_and_returns() -> str:
    await process.spawn(waiting_child, 1, host="workflows")
    return "started"


async def charges_with_children(item: str) -> list[str]:
    """Start two child workflows, charge ``item`` (failed for good while ``FAILS`` says
    so), then gather how the children ended from their EXITs."""
    for n in (1, 2):
        await process.spawn(waiting_child, n, host="workflows")
    await charge(item)
    events = process.events()
    ended = [await events.receive() for _ in range(2)]
    return sorted(f"{e.pid.id}: {e.result if e.error is None else e.error}" for e in ended)


@garrison.activity
async def old_step() -> str:
    LOG.append(("old_step",))
    return "old"


@garrison.activity
async def new_step() -> str:
    LOG.append(("new_step",))
    return "new"


async def versioned() -> str:
    first = await (old_step() if USE_OLD_STEP else new_step())
    await workflow.promise("go")
    return first


async def reminders(days: int) -> str:
    """Wait for an approval (a promise) up to ``days`` days, reminding once a day."""
    approval = workflow.promise("approval")
    for day in range(1, days + 1):
        tick = workflow.timer("1d")
        if await workflow.first(approval, tick) is approval:
            return f"approved by {await approval} on day {day}"
        workflow.set_state("reminded", day)
        await remind(day)
    return "expired"


@garrison.activity
async def remind(day: int) -> str:
    LOG.append(("remind", day))
    return f"reminded on day {day}"


@garrison.activity
async def slow(item: str) -> str:
    import trio

    await trio.sleep(7200)
    LOG.append(("slow", item))
    return item


async def side_effects_quiet() -> str:
    """An activity abandoned to a timer at seq 2 (never recorded), in a completed run."""
    await reserve("before")
    abandoned = workflow.start(slow, "abandoned")
    await workflow.first(abandoned, workflow.timer("1h"))
    await reserve("after")
    return "done"


async def side_effects(to: str) -> str:
    """Sends, spawns and starts activities: a replay must do none of it."""
    await process.send(to, "hello", {"from": "side_effects"})
    child = await process.spawn(waiting_child, 7, host="workflows")
    abandoned = workflow.start(slow, "abandoned")
    timer = workflow.timer("1h")
    await workflow.first(abandoned, timer)  # the timer wins; the activity is abandoned
    await reserve("after")
    await workflow.sleep("1m")
    return f"done {child}"


async def loops_forever() -> None:
    while True:
        await reserve("again")
        await workflow.sleep("1h")


async def monitors_a_process(item: str, to: str) -> str:
    """Monitor the plain process ``to``, charge ``item`` (failed for good while ``FAILS``
    says so), then say how the process ended (from its EXIT)."""
    process.monitor(to)
    await charge(item)
    event = await process.events().receive()
    return f"{event.pid}: {event.error if event.error is not None else 'returned'}"


async def fails_on_go() -> None:
    """A plain process: fails when a message comes."""
    msg = await process.inbox().receive()
    raise RuntimeError(f"told to fail: {msg.topic}")


async def returns_at_once() -> str:
    return "done"


async def sleeps_forever() -> str:
    """A durable sleep "for ever" (``float('inf')``)."""
    await workflow.sleep(float("inf"))
    return f"woke at {workflow.now()}"


async def sleeps_until_the_last_moment() -> str:
    """A durable sleep until 9999-12-31T23:59:59Z, the last moment a workflow's clock
    tells."""
    import datetime as dt

    await workflow.sleep_until(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC))
    return f"woke at {workflow.now()}"


async def receives_forever() -> str:
    """A receive with no end (``timeout=float('inf')``)."""
    got = await process.inbox().receive(timeout=float("inf"))
    return f"received {got.payload if got is not None else None}"


async def charges_or_releases(item: str) -> str:
    """A compensation: charge ``item``; if that fails for good, release the reservation
    (recorded) and fail with the charge's error."""
    try:
        return await charge(item)
    except garrison.ActivityError:
        await release(f"res-{item}")
        raise


@garrison.activity
async def pack(item: str) -> str:
    import trio

    await trio.sleep(10)  # ends after charge has failed for good
    LOG.append(("pack", item))
    return f"packed-{item}"


async def packs_and_charges(item: str) -> str:
    """Two activities at once; the one awaited first (pack, started second) ends after
    the other failed."""
    paying = workflow.start(charge, item)
    packing = workflow.start(pack, item)
    packed = await packing
    return f"{packed} {await paying}"


async def notifies(to: Pid) -> str:
    """Takes a pid: from JSON, its 'host/id' text."""
    return str(to)


async def keyword_only(item: str, *, rush: bool) -> str:
    """A keyword-only parameter without a default, which no start can give."""
    return f"{item} {rush}"


async def fails_when_told() -> None:
    """Fail at the message ``fail<attempt>``: each attempt (a retry replays the
    messages of the one before) waits for a message of its own."""
    while True:
        msg = await process.inbox().receive()
        if msg.topic == f"fail{workflow.info().attempt}":
            raise RuntimeError(f"told to fail: {msg.topic}")


async def monitors_each_attempt(to: str, times: int) -> list[str]:
    """Monitor the workflow ``to`` and read its EXIT, ``times`` times, each after a
    message ``again`` (sent once ``to`` was retried); the errors, in order."""
    seen: list[str] = []
    for k in range(times):
        if k:
            await process.inbox().receive()
        process.monitor(to)
        event = await process.events().receive()
        seen.append(str(event.error))
    await process.inbox().receive()  # (and waits, still monitoring from its replay)
    return seen


async def monitors_again_before_reading(to: str) -> list[str]:
    """Monitor the workflow ``to``; at a message (``to`` has failed and been retried by
    then, its EXIT waits unread) monitor it again, and at another read both EXITs."""
    process.monitor(to)
    await process.inbox().receive()
    process.monitor(to)
    await process.inbox().receive()
    heard = []
    for _ in range(2):
        event = await process.events().receive()
        heard.append(str(event.error))
    return heard


async def monitors_then_reads(to: str) -> str:
    """Monitor the workflow ``to``, wait for a message, then read the EXIT."""
    process.monitor(to)
    await process.inbox().receive()
    event = await process.events().receive()
    return str(event.error)


async def monitors_then_fails(to: str) -> None:
    """Monitor the plain process ``to``, then fail at the first message (a retry that
    replays it fails again, with no live operation)."""
    process.monitor(to)
    msg = await process.inbox().receive()
    raise RuntimeError(f"told to fail: {msg.topic}")
