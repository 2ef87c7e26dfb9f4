"""Workflows and activities used by the workflow tests (importable by module:qualname)."""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
import sys
from typing import Any

import attrs
import trio

import garrison
from garrison import RetryPolicy, process, workflow

#: what the activities did, in order (reset by the tests)
LOG: list[Any] = []
#: per-key failure budgets for flaky activities
FAILS: dict[str, int] = {}


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Order:
    id: str
    total: int
    color: Color = Color.RED
    when: dt.datetime | None = None


@attrs.frozen
class Receipt:
    order_id: str
    amount: int


@garrison.activity
async def add_one(x: int) -> int:
    LOG.append(("add_one", x))
    return x + 1


@garrison.activity
def add_one_sync(x: int) -> int:
    LOG.append(("add_one_sync", x))
    return x + 1


@garrison.activity(retry=RetryPolicy(max_attempts=3, initial_delay="1s"))
async def flaky(key: str) -> str:
    LOG.append(("flaky", key))
    if FAILS.get(key, 0) > 0:
        FAILS[key] -= 1
        raise ConnectionError(f"{key} is down")
    return f"{key} ok"


@garrison.activity(retry=RetryPolicy(max_attempts=3, initial_delay="1s"))
async def asyncio_minded(key: str) -> str:
    """Raises asyncio's CancelledError (a BaseException) while ``FAILS[key]`` lasts."""
    import asyncio

    LOG.append(("asyncio_minded", key))
    if FAILS.get(key, 0) > 0:
        FAILS[key] -= 1
        raise asyncio.CancelledError(f"{key}: an asyncio library gave up")
    return f"{key} ok"


class Opaque:
    """A value no store can hold."""


@garrison.activity(retry=RetryPolicy(max_attempts=3, initial_delay="1s"))
async def returns_opaque(sync: bool = False) -> Any:
    LOG.append(("returns_opaque",))
    return Opaque()


def returns_opaque_sync() -> Any:
    LOG.append(("returns_opaque_sync",))
    return Opaque()


async def calls_asyncio_minded(key: str) -> str:
    return await asyncio_minded(key)


async def calls_returns_opaque(sync: bool) -> str:
    try:
        if sync:
            await workflow.call(returns_opaque_sync,
                                retry=RetryPolicy(max_attempts=3, initial_delay="1s"))
        else:
            await returns_opaque()
    except garrison.ActivityError as exc:
        return str(exc)
    return "stored"


@garrison.activity(retry=RetryPolicy(max_attempts=5, non_retryable=[ValueError]))
async def picky(x: int) -> int:
    LOG.append(("picky", x))
    raise ValueError(f"bad value {x}")


@garrison.activity(retry=RetryPolicy(max_attempts=2, initial_delay=0), timeout="1s")
async def slow() -> str:
    LOG.append(("slow",))
    await garrison_sleep(5)
    return "never"


async def garrison_sleep(seconds: float) -> None:
    import trio

    await trio.sleep(seconds)


@garrison.activity
async def charge(order: Order) -> Receipt:
    LOG.append(("charge", order.id))
    return Receipt(order.id, order.total)


async def steps(x: int, n: int = 10) -> int:
    for _ in range(n):
        x = await add_one(x)
    return x


async def steps_sync(x: int) -> int:
    x = await add_one_sync(x)
    return await workflow.call(add_one_sync, x)


async def typed(order: Order) -> Receipt:
    assert isinstance(order, Order) and isinstance(order.color, Color)
    receipt = await charge(order)
    assert isinstance(receipt, Receipt)
    return receipt


async def retrying(key: str) -> str:
    return await flaky(key)


#: attempts of ``changing`` so far
CHANGING: list[int] = []


@garrison.activity(retry=RetryPolicy(max_attempts=2, initial_delay="10ms"))
async def changing() -> str:
    """Fails twice, each attempt with an error of its own."""
    CHANGING.append(len(CHANGING) + 1)
    if len(CHANGING) == 1:
        raise ConnectionError("first attempt down")
    raise KeyError("second attempt lost")


async def changing_twice() -> str:
    return await changing()


async def compensating(x: int) -> str:
    try:
        await picky(x)
    except garrison.ActivityError as exc:
        LOG.append(("compensate", str(exc), exc.error.type))
        return f"compensated after {exc.error.type}"
    return "no error"


async def timing_out() -> str:
    try:
        return await slow()
    except garrison.ActivityError as exc:
        return str(exc)


async def sleeper(duration: str) -> float:
    t0 = workflow.now()
    await workflow.sleep(duration)
    return (workflow.now() - t0).total_seconds()


async def sleep_until_then(when: dt.datetime) -> str:
    await workflow.sleep_until(when)
    return workflow.now().isoformat()


async def receiver(timeout: Any = None) -> Any:
    msg = await process.inbox().receive(timeout=timeout)
    return None if msg is None else [msg.topic, msg.payload]


async def collector(n: int) -> list[Any]:
    inbox = process.inbox()
    got = []
    for _ in range(n):
        msg = await inbox.receive()
        got.append(msg.payload)
    return got


async def sender(to: str, n: int) -> int:
    pid = garrison.Pid.parse(to)
    for i in range(n):
        await process.send(pid, "n", i)
    return n


async def echo_server(n: int) -> int:
    inbox = process.inbox()
    for _ in range(n):
        msg = await inbox.receive()
        await msg.reply({"echo": msg.payload})
    return n


async def approval(request: str) -> str:
    inbox = process.inbox()
    while True:
        msg = await inbox.receive()
        if msg.topic == "approve":
            return f"{request} approved by {msg.payload}"
        if msg.topic == "reject":
            return f"{request} rejected"


async def randomness() -> list[Any]:
    return [workflow.now().isoformat(), str(workflow.uuid4()), workflow.random()]


#: the keys ``remember_key`` was called with in this process (a test clears it)
KEYS_SEEN: list[str] = []


@garrison.activity
async def remember_key(key: str) -> str:
    """An effect made with an idempotency key: its first call never returns (the node
    goes while it runs)."""
    KEYS_SEEN.append(key)
    if len(KEYS_SEEN) == 1:
        await trio.sleep_forever()
    return key


async def keyed_effect() -> str:
    """The idempotency-key pattern: a recorded uuid, then the activity that uses it."""
    return await remember_key(str(workflow.uuid4()))


async def keyed_background_effect() -> str:
    """The same, with the activity started in the background (``workflow.start``)."""
    return await workflow.start(remember_key, str(workflow.uuid4()))


async def random_then_wait() -> list[Any]:
    values = [workflow.now().isoformat(), str(workflow.uuid4()), workflow.random()]
    await process.inbox().receive()
    return [*values, workflow.now().isoformat(), str(workflow.uuid4()), workflow.random()]


async def cancellable() -> str:
    try:
        await add_one(1)
        await process.inbox().receive()
        return "not cancelled"
    except garrison.WorkflowCancelled:
        LOG.append(("compensating",))
        await add_one(100)  # durable operations still work while compensating
        raise


async def cancellable_sleep() -> str:
    await workflow.sleep("1h")
    return "slept"


async def child(x: int) -> int:
    return await add_one(x)


async def parent(x: int) -> list[Any]:
    pid = await process.spawn(child, x)
    ev = await process.events().receive()
    return [str(pid), ev.kind.value, str(ev.pid), ev.result]


async def failing_child() -> None:
    raise RuntimeError("child broke")


async def parent_of_failing() -> list[Any]:
    await process.spawn(failing_child)
    ev = await process.events().receive()
    return [ev.kind.value, str(ev.error)]


async def watcher(target: str) -> list[Any]:
    process.monitor(garrison.Pid.parse(target))
    ev = await process.events().receive()
    return [ev.kind.value, ev.result]


async def fails() -> None:
    raise KeyError("boom")


async def attrs_flow() -> str:
    workflow.attrs(search={"status": "shipping", "customer": "c1"}, memo={"note": "n"})
    workflow.set_state("progress", 50)
    await process.inbox().receive()
    return "done"


async def info_flow() -> dict[str, Any]:
    i = workflow.info()
    await add_one(0)
    return {"id": i.workflow_id, "name": i.name, "host": i.host, "len": workflow.history_length(),
            "size": workflow.history_size() > 0}


async def versioned() -> int:
    v = workflow.version("change-1", 1, 2)
    await add_one(v)
    return v


async def gated_twice() -> list[int]:
    """Two steps behind one change id, a wait between them (a run recorded by code
    without the gates resumes at the wait)."""
    first = workflow.version("change-2", 1, 2)
    await add_one(first)
    await process.inbox().receive()
    return [first, workflow.version("change-2", 1, 2)]


async def widened(lo2: int, hi2: int) -> list[int]:
    """One change id called twice, the second time with another range."""
    first = workflow.version("x", 1, 2)
    await add_one(first)
    return [first, workflow.version("x", lo2, hi2)]


async def versioned_runs(k: int) -> list[int]:
    """A run calls version("x") with a wider range than the run before (continue_as_new)."""
    v = workflow.version("x", 1, 2 + k)
    if k == 0:
        workflow.continue_as_new(1)
    return [v, workflow.version("x", 1, 2 + k)]


async def bad_payload() -> None:
    await process.send(process.pid(), "x", {1, 2})


# --- replay divergence: the "old" and "new" code of one workflow -----------------
async def step_a(x: int) -> int:
    return x


@garrison.activity
async def activity_a(x: int) -> int:
    LOG.append(("activity_a", x))
    return x * 10


@garrison.activity
async def activity_b(x: int) -> int:
    LOG.append(("activity_b", x))
    return x * 100


async def evolving(x: int) -> int:
    """Version 1: activity_a, then wait for a message, then activity_a."""
    y = await activity_a(x)
    await process.inbox().receive()
    return y + await activity_a(x + 1)


async def evolving_diverged(x: int) -> int:
    """A broken change: activity_b where activity_a was recorded."""
    y = await activity_b(x)
    await process.inbox().receive()
    return y + await activity_a(x + 1)


async def evolving_more_args(x: int, y: int) -> int:
    """A broken change: a parameter added (the recorded input has one argument)."""
    return await evolving(x + y)


async def evolving_retyped(x: Order) -> int:
    """A broken change: the parameter's type changed (the recorded input is an int)."""
    return await evolving(len(x.id))


async def evolving_raises(x: int) -> int:
    """A broken change: it raises before the recorded activity."""
    raise KeyError(f"no such setting for {x}")


async def try_receiver() -> Any:
    first = process.inbox().try_receive()
    msg = await process.inbox().receive()
    return [None if first is None else first.payload, msg.payload]


async def try_drainer(n: int) -> int:
    """Takes ``n`` messages with ``try_receive`` (a durable sleep while none waits),
    then waits for one more."""
    box = process.inbox()
    got = 0
    while got < n:
        if box.try_receive() is not None:
            got += 1
        else:
            await workflow.sleep(1)
    await box.receive()
    return got


async def nursery_failure() -> None:
    """Its own trio nursery fails: the workflow fails with the nursery's group."""

    async def bad(total: int) -> None:
        raise ValueError(f"bad total {total}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bad, 3)


async def lister() -> list[Any]:
    box = process.listen("b")
    got_b = await box.receive()
    got_any = await process.inbox().receive()
    return [got_b.payload, got_any.payload]


SWALLOW_FIRST = "activity_a"


async def swallower() -> str:
    """Catches every exception around its first activity (and so would hide a
    divergence if the runtime let it)."""
    try:
        await (activity_a if SWALLOW_FIRST == "activity_a" else activity_b)(1)
    except Exception:
        pass
    await process.inbox().receive()
    return "done"


async def promise_or_deadline(deadline: str) -> Any:
    approval = workflow.promise("approval")
    timer = workflow.timer(deadline)
    done = await workflow.first(approval, timer)
    if done is timer:
        await timer
        return "expired"
    try:
        return await approval
    except garrison.PromiseRejected as exc:
        return f"rejected: {exc}"


async def fan_out() -> list[Any]:
    a = workflow.start(add_one, 1)
    b = workflow.start(add_one, 10)
    c = workflow.start(picky, 3)
    results = await workflow.gather(a, b)
    try:
        await c
    except garrison.ActivityError as exc:
        results.append(exc.error.type)
    return results


async def countdown(n: int, total: int) -> list[Any]:
    await add_one(n)
    if n > 0:
        workflow.continue_as_new(n - 1, total + n)
    return [total, workflow.history_length(), workflow.info().run_id != ""]


async def echo_process() -> None:
    """A plain process answering calls."""
    inbox = process.inbox()
    while True:
        msg = await inbox.receive()
        await msg.reply(f"echo:{msg.payload}")


async def calls_a_process() -> list[Any]:
    pid = await process.spawn(echo_process, host="processes")
    first = await process.call(pid, "q", 1)
    other = await process.spawn(echo_server, 1)  # a child workflow answers too
    second = await process.call(other, "q", 2)
    await process.terminate(pid)
    return [first, second]


async def process_child() -> list[Any]:
    pid = await process.spawn_monitored(failing_process, host="processes")
    ev = await process.events().receive()
    return [ev.pid == pid, ev.kind.value, str(ev.error)]


async def failing_process() -> None:
    raise OSError("disk on fire")


async def idle_process() -> None:
    """A plain process that waits until it is stopped (lost when its node goes down)."""
    await process.inbox().receive()


async def watches_a_process() -> list[Any]:
    """Monitors a plain process and waits for its EXIT (``noproc`` after a restart)."""
    pid = await process.spawn_monitored(idle_process, host="processes")
    ev = await process.events().receive()
    return [ev.pid == pid, ev.kind.value, None if ev.error is None else ev.error.type]


async def traps_a_linked_process() -> list[Any]:
    process.set_options(trap_links=True)
    pid = await process.spawn_linked(idle_process, host="processes")
    ev = await process.events().receive()
    return [ev.pid == pid, ev.kind.value, None if ev.error is None else ev.error.type]


async def quick_process() -> None:
    return None


async def signals_a_dead_process_twice(to: str, kind: str) -> list[Any]:
    """Links to (trapping) or monitors the dead process ``to`` twice, each after a
    ``go``; after a third ``go``, waits a minute for any further event. What it got."""
    process.set_options(trap_links=True)
    got: list[Any] = []
    for _ in range(2):
        await process.inbox().receive()
        if kind == "link":
            process.link(to)
        else:
            process.monitor(to)
        ev = await process.events().receive()
        got.append([ev.kind.value, ev.pid == garrison.Pid.parse(to), ev.error.type])
    await process.inbox().receive()
    extra = await process.events().receive(timeout=60)
    got.append(None if extra is None else [extra.kind.value, extra.error.type])
    return got


async def links_a_quick_process() -> str:
    await process.spawn_linked(quick_process, host="processes")
    await process.inbox().receive()
    return "ok"


async def fails_on_a_message() -> None:
    await process.inbox().receive()
    raise RuntimeError("told to fail")


async def links_a_workflow(to: str) -> str:
    """Linked (not trapping) to the workflow ``to``; survives only if it never fails."""
    process.link(to)
    await workflow.sleep("1h")
    return "survived"


async def monitors_a_workflow(to: str) -> list[Any]:
    process.monitor(to)
    ev = await process.events().receive()
    return [ev.kind.value, None if ev.error is None else ev.error.type]


async def child_fails_later() -> None:
    await workflow.sleep("1s")
    raise RuntimeError("the child failed")


async def spawns_a_linked_child(by_id: bool) -> str:
    if by_id:
        await process.spawn_linked(child_fails_later, host="workflows", id="linked-kid")
    else:
        await process.spawn_linked(child_fails_later)
    await workflow.sleep("1h")
    return "survived"


async def reads_the_events_of_a_linked_child(fails_on_message: bool) -> str:
    """Linked (not trapping) to a child workflow, waiting on its events: the child's
    failure ends it, though its EXIT (a child's always arrives) is what it waits for."""
    events = process.events()
    await process.spawn_linked(fails_on_a_message if fails_on_message else child_fails_later)
    ev = await events.receive()
    return f"completed after {ev.kind.value}"


async def continues_past_a_linked_child(run: int) -> str:
    """Run 0 links a child that fails a second later and continues as new; run 1 (not
    trapping) waits for that child's EXIT (a child's always arrives)."""
    if run == 0:
        await process.spawn_linked(child_fails_later)
        workflow.continue_as_new(1)
    ev = await process.events().receive()
    return f"run {run} got {ev.kind.value} {None if ev.error is None else ev.error.type}"


async def traps_a_linked_child() -> list[Any]:
    process.set_options(trap_links=True)
    pid = await process.spawn_linked(child_fails_later)
    kinds = []
    for _ in range(2):  # its EXIT (a child's always arrives) and the LINK_DOWN
        ev = await process.events().receive()
        assert ev.pid == pid
        kinds.append([ev.kind.value, None if ev.error is None else ev.error.type])
    return kinds


async def signal_or_deadline(deadline: str) -> Any:
    """An inbox receive raced with a durable timer."""
    reply = process.inbox().receive()
    timer = workflow.timer(deadline)
    done = await workflow.first(reply, timer)
    if done is timer:
        return "expired"
    msg = await reply
    await process.inbox().receive()  # wait for "go" (a restart may happen here)
    return [msg.topic, msg.payload]


async def gather_everything() -> list[Any]:
    """gather over a promise, a timer, a started activity and an inbox receive."""
    p = workflow.promise("p")
    t = workflow.timer("1h")
    a = workflow.start(add_one, 1)
    r = process.inbox().receive()
    got = await workflow.gather(p, t, a, r)
    return [got[0], got[1], got[2], got[3].payload]


async def late_promise() -> Any:
    """Declares its promise only after a message: a resolution before that is kept."""
    await process.inbox().receive()
    return await workflow.promise("early")


async def counter(n: int) -> list[Any]:
    """get_state before set_state, across waits: replay must see the same values."""
    seen = []
    for _ in range(n):
        count = workflow.get_state("count", 0)
        seen.append(count)
        workflow.set_state("count", count + 1)
        await process.inbox().receive()
    return seen


async def sized(n: int) -> list[Any]:
    sizes = []
    for _ in range(n):
        await add_one(1)
        sizes.append([workflow.history_length(), workflow.history_size()])
        await process.inbox().receive()
    return sizes


async def chatty(n: int) -> int:
    for _ in range(n):
        workflow.random()
    return workflow.history_length()


async def version_range(lo: int, hi: int) -> int:
    v = workflow.version("change-1", lo, hi)
    await process.inbox().receive()
    return v


async def refund(order: str) -> str:
    return f"refunded {order}"


async def refunds_when_cancelled() -> str:
    """Its compensation starts a child workflow once it has seen its cancel."""
    try:
        await process.inbox().receive()
        return "not cancelled"
    except garrison.WorkflowCancelled:
        await process.spawn(refund, "o-1")
        raise


async def slow_refund(order: str) -> str:
    msg = await process.inbox().receive()
    return f"refunded {order} ({msg.topic})"


async def refunds_slowly_when_cancelled() -> str:
    """Its compensation starts a child that waits for a message, and takes an hour."""
    try:
        await process.inbox().receive()
        return "not cancelled"
    except garrison.WorkflowCancelled:
        await process.spawn(slow_refund, "o-2")
        await workflow.sleep("1h")
        raise


async def parent_of_waiters() -> str:
    await process.spawn(receiver)
    await process.spawn(cancellable_sleep)
    await process.inbox().receive()
    return "not cancelled"


async def continued(n: int) -> list[Any]:
    """continue_as_new keeps state, inbox and promises."""
    if n == 0:
        workflow.set_state("runs", 1)
        workflow.promise("kept")
        workflow.continue_as_new(1)
    msg = await process.inbox().receive()
    return [workflow.get_state("runs"), msg.payload, await workflow.promise("kept"),
            workflow.history_length()]


async def first_with_timeout() -> str:
    try:
        await workflow.first(process.inbox().receive(timeout="1s"), workflow.timer("1h"))
    except ValueError as exc:
        return str(exc)
    return "accepted"


@garrison.activity
async def nap_then_add_one(x: int, seconds: float) -> int:
    await garrison_sleep(seconds)
    return x + 1


async def slow_steps(x: int, n: int, seconds: float) -> int:
    """``n`` activities of ``seconds`` each (keeps a workflow writing for a while)."""
    for _ in range(n):
        x = await nap_then_add_one(x, seconds)
    return x


async def approval_or_deadline() -> str:
    """Waits for the "approval" promise, raced against a 20 s ``workflow.timer``."""
    approval = workflow.promise("approval")
    deadline = workflow.timer("20s")
    if await workflow.first(approval, deadline) is deadline:
        return "timed out"
    return "approved"


async def lost_race_then_waits() -> str:
    """A 1h ``workflow.timer`` loses a ``first()`` race to the "go" promise; then the
    workflow waits for a message only (probe p20)."""
    deadline = workflow.timer("1h")
    go = workflow.promise("go")
    assert await workflow.first(go, deadline) is go
    return (await process.inbox().receive()).topic


async def helper_of_a_workflow(parent: garrison.Pid) -> None:
    """A plain process a workflow spawns: it is not that workflow."""
    report = {"add_one": await add_one(100)}  # a plain call here, not journaled
    try:
        workflow.now()
        report["now"] = "allowed"
    except garrison.NotInProcess as exc:
        report["now"] = str(exc)
    await process.send(parent, "report", report)


async def spawns_a_helper(x: int) -> dict[str, Any]:
    await process.spawn(helper_of_a_workflow, process.pid(), host="processes")
    msg = await process.inbox().receive()
    return {**msg.payload, "own": await add_one(x)}


@garrison.activity
async def held(tag: str) -> str:
    """Waits for ever; logs when it is cancelled (its ``finally`` runs)."""
    import trio

    LOG.append(("held", tag))
    try:
        await trio.sleep_forever()
    finally:
        LOG.append(("held cancelled", tag))
    return tag  # pragma: no cover - never reached


async def starts_and_waits(tag: str) -> None:
    """Starts an activity that never ends, then waits for a message (to be killed)."""
    workflow.start(held, tag)
    await process.inbox().receive()


async def starts_and_returns(tag: str) -> str:
    """Starts an activity that never ends and returns without awaiting it."""
    workflow.start(held, tag)
    await workflow.sleep("1s")  # (it has begun by then)
    return "returned"


async def starts_and_continues(n: int) -> int:
    """Each run starts an activity that never ends, then continues as new."""
    workflow.start(held, f"run {n}")
    await workflow.sleep("1s")
    if n > 0:
        workflow.continue_as_new(n - 1)
    return n


@garrison.activity
async def says_a_number() -> int:
    return "not a number"  # type: ignore[return-value]


async def starts_a_bad_result() -> str:
    """A started activity whose result does not match its return annotation."""
    handle = workflow.start(says_a_number)
    await workflow.sleep("1h")
    await handle
    return "unreachable"


#: set by ``bad_result_then_signal`` as it returns (the workflow then returns too)
RETURNED: dict[str, Any] = {}


@garrison.activity
async def bad_result_then_signal() -> int:
    """Lets the workflow return while its (bad) result is being recorded."""
    RETURNED["event"].set()
    return "not a number"  # type: ignore[return-value]


async def returns_while_a_bad_result_is_recorded() -> str:
    """Starts an activity whose result cannot be restored, and returns as it ends."""
    import trio

    RETURNED["event"] = trio.Event()
    workflow.start(bad_result_then_signal)
    await RETURNED["event"].wait()  # (not durable: enough for a test on one node)
    return "returned"


#: a context variable of the application's own (a request id, a log context)
TAG: contextvars.ContextVar[str] = contextvars.ContextVar("workflow_app_tag", default="none")


@garrison.activity
async def tag_seen(i: int) -> str:
    return f"{i}:{TAG.get()}"


async def starts_under_two_tags() -> list[str]:
    """Two activities started in one step, each under its own value of TAG."""
    TAG.set("first")
    a = workflow.start(tag_seen, 1)
    TAG.set("second")
    b = workflow.start(tag_seen, 2)
    return [await a, await b]


async def held_step() -> int:
    """An activity the taken-rows test holds the commit of."""
    return 7


async def take_during_a_started_step() -> list[Any]:
    """Starts ``held_step`` in the background, takes one message with ``try_receive``
    (its consume buffered) while the step's record is being committed, awaits the
    step, then tries the inbox once more (empty: the message was taken once)."""
    handle = workflow.start(held_step)
    box = process.inbox()
    first = box.try_receive()
    while first is None:
        await workflow.sleep(1)
        first = box.try_receive()
    step = await handle
    again = box.try_receive()
    return [first.payload, step, None if again is None else again.payload]


async def raises_asyncio_cancelled() -> int:
    """Code of an asyncio-minded library raising asyncio's CancelledError (a
    BaseException): its workflow fails, the node runs on."""
    import asyncio

    await workflow.sleep(1)
    raise asyncio.CancelledError("from asyncio")


async def calls_sys_exit() -> int:
    """Code that calls ``sys.exit()`` (argparse, click): its workflow fails, the node runs on."""
    await workflow.sleep(1)
    sys.exit(3)


async def names_with_nul() -> list[object]:
    """A version change id and a promise name holding NUL (which an older garrison let a
    SQLite store keep), then a wait for one message."""
    v = workflow.version("a\x00b", 1, 2)
    workflow.promise("p\x00")
    msg = await process.inbox().receive()
    return [v, msg.topic]


#: what ``patched_canceller``'s deployed code does: "old" or "new" (a version() added
#: above its wait, in a deploy while a cancel's compensation was under way)
PATCHED = "old"


@garrison.activity(retry=RetryPolicy(max_attempts=1))
async def compensate(which: str) -> str:
    LOG.append(("compensate", which))
    await trio.sleep(10)
    return which


async def patched_canceller() -> str:
    v = workflow.version("added-later", 1, 2) if PATCHED == "new" else 1
    try:
        await process.inbox().receive()
        return "not cancelled"
    except garrison.WorkflowCancelled:
        await compensate("old" if v == 1 else "new")
        raise


@garrison.activity
async def slow_thousand(x: int) -> int:
    await trio.sleep(5)
    return x * 1000


async def sizes_around_a_started_activity() -> list[int]:
    """history_size() while an activity it started runs, after it, and after a wait that
    spans a restart: each the same in a replay."""
    handle = workflow.start(slow_thousand, 7)
    await workflow.sleep(1)  # the activity still runs (live)
    first = workflow.history_size()
    await handle
    second = workflow.history_size()
    SIZES.append((first, second))  # (live, then again in each replay)
    msg = await process.inbox().receive()
    return [first, second, workflow.history_size(), msg.payload]


SIZES: list[tuple[int, int]] = []


async def signals_across_a_continue(to: str, kind: str, run: int) -> list[Any]:
    """Links to (trapping) or monitors the live process ``to`` after a ``go``, then
    continues as new; the new run reads that link's or monitor's event, then links to
    or monitors ``to`` (dead by then) again at the seq the first run did, reads that
    event too, and waits a minute for any further one. What it got."""
    process.set_options(trap_links=True)
    if run == 1:
        await process.inbox().receive()  # seq 1
        if kind == "link":
            process.link(to)  # seq 2
        else:
            process.monitor(to)
        workflow.continue_as_new(to, kind, 2)
    got: list[Any] = []
    ev = await process.events().receive()  # seq 1: the first run's link's or monitor's
    got.append([ev.kind.value, ev.error.type if ev.error else None])
    if kind == "link":
        process.link(to)  # seq 2, as the first run's
    else:
        process.monitor(to)
    ev = await process.events().receive(timeout=60)
    got.append(None if ev is None else [ev.kind.value, ev.error.type if ev.error else None])
    return got


async def instant(x: int) -> int:
    """A workflow that ends at once (its EXIT can come before the spawn returns)."""
    return x


async def tags_with(value: Any) -> str:
    """Sets the search attribute ``n`` to ``value``; what that raised, if anything."""
    try:
        workflow.attrs(search={"n": value})
    except ValueError as exc:
        return str(exc)
    return "set"


async def tags_nested(depth: int, field: str) -> str:
    """Sets the search attribute (or memo, ``field``) ``n`` to a list nested ``depth``
    deep; what that raised, if anything."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    try:
        workflow.attrs(**{field: {"n": value}})
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "set"


async def raises_a_stray_cancelled(in_group: bool) -> str:
    """Raises trio's Cancelled, caught inside a cancelled scope of its own, outside it
    (code that keeps an exception to raise later), alone or in a group: a workflow here,
    a process in test_exit_matrix."""
    saved = None
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.sleep(1)
        except trio.Cancelled as exc:
            saved = exc
    assert saved is not None
    if in_group:
        raise BaseExceptionGroup("from a nursery", [saved])
    raise saved


STRAY_CALLS: list[int] = []


@garrison.activity(retry=RetryPolicy(max_attempts=2, initial_delay="1s"))
async def stray_cancelled_activity() -> str:
    """An activity whose code raises a Cancelled caught in its own scope."""
    STRAY_CALLS.append(1)
    await raises_a_stray_cancelled(False)
    return "unreached"


async def catches_a_stray_activity() -> str:
    try:
        return await stray_cancelled_activity()
    except garrison.ActivityError as exc:
        return f"caught {exc.error.type}: {exc.error.message}"


async def catches_a_stray_activity_timed() -> str:
    """The same through an attempt with a timeout (the engine's retry loop)."""
    try:
        return str(await workflow.call(stray_cancelled_activity, timeout="1h"))
    except garrison.ActivityError as exc:
        return f"caught {exc.error.type}: {exc.error.message}"


async def keeper_process() -> None:
    """A plain process that keeps what it is sent and changes it later (as a cache
    would), then answers a call."""
    kept: list[Any] = []
    async for msg in process.inbox():
        if msg.topic == "keep":
            kept.append(msg.payload)
        else:
            for value in kept:
                value.append("changed by the keeper")
            await msg.reply(len(kept))


async def sends_to_a_keeper() -> list[Any]:
    items = ["mine"]
    keeper = await process.spawn(keeper_process, host="processes")
    await process.send(keeper, "keep", items)
    await process.call(keeper, "change")
    await process.terminate(keeper)
    return items  # the workflow's own list, as a replay (which sends nothing) sees it


async def versioned_loop(n: int) -> int:
    """A long-lived loop with a version gate at every step, waiting halfway."""
    total = 0
    for i in range(2 * n):
        if i == n:
            await process.inbox().receive()
        total += workflow.version("fee", 1, 2) * await add_one(0)
    return total


async def raises_a_terminal_escape() -> None:
    raise RuntimeError("own\x1b[31mred\rY")


async def tags_with_power_of_ten(digits: int) -> str:
    """``tags_with`` of 10 ** ``digits`` (an integer made here: an argument of more
    than 4,300 digits is refused at the start)."""
    return await tags_with(10 ** digits)


async def raises_what_it_is_given(message: str, repeat: int = 1) -> None:
    """Raises ``ValueError`` of ``message`` ``repeat`` times over (a message of any length
    and characters, with a small input)."""
    raise ValueError(message * repeat)
