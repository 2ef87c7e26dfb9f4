"""Workflows and services for tests/test_workflow_correctness.py (importable by name)."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import trio

import garrison
from garrison import process, workflow

#: what activities did (reset by the tests)
LOG: list[Any] = []


# ---------------------------------------------------------------- services
async def kv() -> None:
    """A config service: ``get``/``incr`` on a dict."""
    data: dict[str, int] = {}
    async for msg in process.inbox():
        if msg.topic == "incr":
            data[msg.payload] = data.get(msg.payload, 0) + 1
            await msg.reply(data[msg.payload])
        elif msg.topic == "get":
            await msg.reply(data.get(msg.payload, 0))
        elif msg.topic == "bump":  # a plain message, no reply
            data[msg.payload] = data.get(msg.payload, 0) + 1


async def named_sleeper(name: str) -> None:
    process.register(name)
    await trio.sleep_forever()


# ---------------------------------------------------------------- workflows
async def calls_service_between_sleeps(key: str) -> int:
    total = 0
    for _ in range(3):
        total += await process.call("app:kv", "incr", key)
        await workflow.sleep("10s")
    return total


async def watches_by_name() -> str:
    process.monitor("svc")
    found = process.lookup("svc")
    process.demonitor("svc")
    process.link("svc")
    process.unlink("svc")
    msg = await process.inbox().receive()
    assert msg is not None
    return f"{found} {msg.topic}"


async def child_value(x: int) -> int:
    return x * 10


async def parent_continuing(rounds: int, got: list[int]) -> list[int]:
    process.set_options(trap_links=True)
    events = process.events()
    child = await process.spawn(child_value, len(got) + 1, host="workflows")
    while True:
        ev = await events.receive()
        if ev.pid == child:
            break
    got = [*got, ev.result]
    if rounds > 1:
        workflow.continue_as_new(rounds - 1, got)
    return got


async def parent_of_one_child() -> tuple[str, int]:
    events = process.events()
    child = await process.spawn(child_value, 7, host="workflows")
    ev = await events.receive()
    assert ev.pid == child
    return str(child), ev.result


async def sleeps_forever_or_signal(kind: str) -> str:
    if kind == "sleep":
        stop = process.inbox().receive()
        won = await workflow.first(stop, workflow.timer(float("inf")))
        return "signal" if won is stop else "timer"
    msg = await process.inbox().receive(timeout=1e12)
    return "timeout" if msg is None else msg.topic


#: the earliest time a datetime holds, in a zone east of UTC: before year 1 in UTC
YEAR_ZERO = dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=9)))


async def sleeps_until_year_zero() -> str:
    """A sleep until :data:`YEAR_ZERO` (a "no wait" sentinel): past, it wakes at once."""
    await workflow.sleep_until(YEAR_ZERO)
    return "woke"


async def year_zero_then_waits() -> str:
    """:func:`sleeps_until_year_zero`, then a wait for a message."""
    await workflow.sleep_until(YEAR_ZERO)
    return (await process.inbox().receive()).topic


#: durations a workflow cannot be given as arguments, by name
DURATIONS: dict[str, Any] = {
    "None": None, "True": True, "Decimal": decimal.Decimal("1"),
    "timedelta": dt.timedelta(minutes=90), "timedelta(0)": dt.timedelta(0)}


async def waits_for(kind: str, which: str) -> float:
    """A ``kind`` wait (``sleep``, ``timer``, ``receive``) of ``DURATIONS[which]``; the
    seconds it took."""
    value, t0 = DURATIONS[which], workflow.now()
    if kind == "sleep":
        await workflow.sleep(value)
    elif kind == "timer":
        await workflow.timer(value)
    else:
        assert await process.inbox().receive(timeout=value) is None
    return (workflow.now() - t0).total_seconds()


class Floating(dt.tzinfo):
    """A zone without a UTC offset: a datetime of it is naive to Python."""

    def utcoffset(self, _when: dt.datetime | None) -> None:
        return None

    def dst(self, _when: dt.datetime | None) -> None:
        return None

    def tzname(self, _when: dt.datetime | None) -> None:
        return None


async def sleeps_until(which: str) -> str:
    """``workflow.sleep_until`` of a value that is no aware datetime, by name."""
    soon = workflow.now() + dt.timedelta(seconds=2)
    value: Any = {"date": soon.date(), "str": soon.isoformat(), "float": soon.timestamp(),
                  "None": None, "naive": soon.replace(tzinfo=None),
                  "floating": soon.replace(tzinfo=Floating())}[which]
    await workflow.sleep_until(value)
    return "woke"


async def bad_duration(value: Any) -> None:
    await workflow.sleep(value)


@garrison.activity
async def fetch(name: str) -> str:
    LOG.append(name)
    return name.upper()


async def awaits_twice() -> list[str]:
    a = workflow.start(fetch, "a")
    b = workflow.start(fetch, "b")
    first_b = await b
    both = await workflow.gather(a, b)
    again = await workflow.first(b)
    msg = await process.inbox().receive()  # a restart here replays all of the above
    assert msg is not None
    return [first_b, *both, await again]


async def counts_once(tag: str) -> str:
    return await fetch(tag)


async def bad_version(case: str) -> int:
    if case == "none":
        return workflow.version(None, 1, 2)  # type: ignore[arg-type]
    return workflow.version("v", 3, 1)


async def first_of_nothing() -> None:
    await workflow.first()


async def bad_attrs(case: str) -> None:
    if case == "nan":
        workflow.attrs(search={"score": float("nan")})
    elif case == "quote":
        workflow.attrs(search={'say "hi"': 1})
    elif case == "garrison's":  # (it would drop the priority a retry waits by)
        workflow.attrs(memo={"garrison.priority": None})
    else:
        workflow.attrs(search=case)  # type: ignore[arg-type]


async def awaits_rejected_promise() -> str:
    try:
        await workflow.promise("approval")
    except garrison.PromiseRejected as exc:
        return f"{exc.promise}: {exc.reason}"
    return "resolved"


@garrison.activity
async def note(text: str) -> None:
    LOG.append(text)


async def batch(day: str) -> str:
    await note(f"batch {day}")
    await process.inbox().receive()
    return f"done {day}"


async def spawns_batch_by_id(day: str) -> str:
    events = process.events()
    pid = await process.spawn(batch, day, host="workflows", id=f"batch-{day}")
    await process.send(pid, "go")
    ev = await events.receive()
    return f"{pid} -> {ev.result}"


@garrison.activity
async def talks_to_service(key: str) -> int:
    await process.send("app:kv", "bump", key)  # plain: from the workflow's pid
    n: int = await process.call("app:kv", "get", key)
    assert process.pid() == garrison.Pid("workflows", "talker")
    try:
        process.inbox()
    except garrison.NotInProcess as exc:
        LOG.append(str(exc))
    return n


async def talker(key: str) -> int:
    return await talks_to_service(key)
