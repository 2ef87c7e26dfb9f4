import threading
from typing import Any

import pytest
import trio
import trio.testing

import garrison
from garrison import ProcessError, process


async def _echo():
    async for msg in process.inbox():
        await msg.reply((msg.topic, msg.payload))


async def test_call_round_trip(node, autojump_clock):
    async def client(server):
        return [await process.call(server, "q", i) for i in range(3)]

    server = await node.spawn(_echo)
    assert await node.wait(await node.spawn(client, server)) == [("q", 0), ("q", 1), ("q", 2)]


async def test_a_reply_that_is_an_outcome_or_none_reaches_the_caller_as_it_is(
        node, autojump_clock):
    # (a reply wakes its caller with the value itself, trio's cancellation and a
    # failure with an outcome: a value that is an outcome is not taken for one)
    import outcome

    values = [outcome.Value(1), outcome.Error(ValueError("kept")), None, ProcessError("x")]

    async def replier():
        async for msg in process.inbox():
            await msg.reply(values[msg.payload])

    async def client(server):
        return [await process.call(server, "q", i) for i in range(len(values))]

    server = await node.spawn(replier)
    assert await node.wait(await node.spawn(client, server)) == values
    assert await node.call(server, "q", 1) is values[1]  # (node.call's caller too)


async def test_a_caller_cancelled_while_it_waits_gets_the_next_reply_not_the_late_one(
        node, autojump_clock):
    async def slow():
        async for msg in process.inbox():
            await trio.sleep(2)
            await msg.reply(msg.payload)  # the first: its caller was cancelled, dropped

    async def client(server):
        with trio.move_on_after(1) as scope:
            await process.call(server, "q", "first", timeout="10s")
        assert scope.cancelled_caught
        return await process.call(server, "q", "second"), trio.current_time()

    server = await node.spawn(slow)
    t0 = trio.current_time()
    assert await node.wait(await node.spawn(client, server)) == ("second", t0 + 4)


async def test_call_by_name(node, autojump_clock):
    async def named():
        process.register("echo")
        await _echo()

    async def client():
        return await process.call("echo", "hi")

    await node.spawn(named)
    await trio.sleep(0)
    assert await node.wait(await node.spawn(client)) == ("hi", None)


async def test_call_timeout_covers_whole_exchange_and_late_reply_dropped(node, autojump_clock):
    async def slow():
        msg = await process.inbox().receive()
        await trio.sleep(3)
        await msg.reply("late")  # dropped: the caller gave up
        msg = await process.inbox().receive()
        await msg.reply("fresh")

    async def client(server):
        t0 = trio.current_time()
        with pytest.raises(TimeoutError, match="no reply within 2s"):
            await process.call(server, "q", timeout="2s")
        assert trio.current_time() - t0 == 2
        await trio.sleep(5)
        assert process.inbox().try_receive() is None  # the late reply went nowhere
        return await process.call(server, "q2")

    server = await node.spawn(slow)
    assert await node.wait(await node.spawn(client, server)) == "fresh"


async def test_callee_death_fails_call_at_once(node, autojump_clock):
    async def dies():
        await process.inbox().receive()
        await trio.sleep(1)
        raise RuntimeError("crashed mid-call")

    async def client(server):
        t0 = trio.current_time()
        with pytest.raises(ProcessError) as info:
            await process.call(server, "q", timeout="30s")
        assert trio.current_time() - t0 == 1
        assert info.value.error.type == "RuntimeError"
        return "ok"

    server = await node.spawn(dies)
    assert await node.wait(await node.spawn(client, server)) == "ok"


async def test_call_dead_pid_fails_at_once(node, autojump_clock):
    async def quick():
        return 1

    dead = await node.spawn(quick)
    await node.wait(dead)

    async def client():
        with pytest.raises(ProcessError, match="noproc"):
            await process.call(dead, "q")
        return "ok"

    assert await node.wait(await node.spawn(client)) == "ok"


async def test_replies_do_not_reach_the_inbox(node, autojump_clock):
    async def client(server):
        await process.call(server, "q", 1)
        return process.inbox().try_receive()

    server = await node.spawn(_echo)
    assert await node.wait(await node.spawn(client, server)) is None


async def test_many_calls_with_mixed_timeouts_each_end_at_their_own_deadline(
        node, autojump_clock):
    """Call deadlines are watched by one task of the run (not a cancel scope per call):
    calls with different timeouts, started at different times, each time out at their
    own deadline; answered ones return; a call abandoned by its caller's own cancel
    scope leaves nothing behind that could fail a later call."""

    async def picky():
        async for msg in process.inbox():
            if msg.payload % 3 == 0:  # answered after a while; others never
                await trio.sleep(msg.payload / 10)
                await msg.reply(msg.payload)

    ended: dict[int, tuple[str, float]] = {}

    async def one(server, i: int, timeout: float) -> None:
        t0 = trio.current_time()
        try:
            await process.call(server, "q", i, timeout=timeout)
            ended[i] = ("ok", trio.current_time() - t0)
        except TimeoutError:
            ended[i] = ("timeout", trio.current_time() - t0)

    async def client(server):
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(one, server, i, (5.0, 1.0, 3.0)[i % 3])
                await trio.sleep(0.25)
        with trio.move_on_after(0.5):  # abandoned by its caller: no timeout later
            await process.call(server, "q", 1, timeout=1.0)
        t0 = trio.current_time()
        assert await process.call(server, "q", 0, timeout=2.0) == 0
        await trio.sleep(10)  # nothing fires for the abandoned call meanwhile
        return trio.current_time() - t0

    server = await node.spawn(picky)
    assert await node.wait(await node.spawn(client, server)) == 10
    for i in range(12):
        timeout = (5.0, 1.0, 3.0)[i % 3]
        if i % 3 == 0 and i / 10 < timeout:
            assert ended[i][0] == "ok", (i, ended[i])
        else:
            assert ended[i] == ("timeout", timeout), (i, ended[i])


async def test_a_bad_timeout_is_named_without_a_leftover_lookup_error(node):
    """``timeout=None`` (or any value that is no duration) is a ValueError naming it; its
    traceback carried 'During handling of the above exception' with the cache's
    KeyError, as if the lookup had failed."""
    async def caller():
        try:
            await process.call(process.pid(), "x", None, timeout=None)
        except ValueError as exc:
            assert "invalid timeout None" in str(exc)
            return exc.__context__
        return None

    assert await node.wait(await node.spawn(caller)) is None


async def test_a_zero_timeout_never_waits_the_request_is_sent_and_it_times_out(
        node, autojump_clock):
    """``timeout=0`` (or ``"0s"``) gives no time for a reply: the request is sent, the
    call raises ``TimeoutError`` at once and the reply is dropped, every time (the first
    call of a run used to get the reply, later ones not, as the run's deadline watcher
    had woken or not)."""
    seen = []

    async def echo():
        async for msg in process.inbox():
            seen.append(msg.payload)
            await msg.reply("r")

    async def client(server):
        out = []
        for timeout in (0, "0s", 0, 0.0, "0ms"):
            try:
                out.append(await process.call(server, "q", timeout, timeout=timeout))
            except TimeoutError as exc:
                out.append(str(exc))
        await trio.sleep(1)
        assert process.inbox().try_receive() is None  # the replies went nowhere
        return out

    server = await node.spawn(echo)
    out = [*await node.wait(await node.spawn(client, server))]
    for timeout in (0, "0s"):
        try:
            out.append(await node.call(server, "q", timeout, timeout=timeout))
        except TimeoutError as exc:
            out.append(str(exc))
    assert out == [f"call to {server} (topic 'q') got no reply within 0s"] * 7
    await trio.sleep(1)
    assert seen == [0, "0s", 0, 0.0, "0ms", 0, "0s"]  # each request was delivered
    assert await node.call(server, "q", timeout="1s") == "r"
    gone = await node.spawn(_returns)
    await node.wait(gone)
    with pytest.raises(ProcessError, match="noproc"):  # a dead callee: as with any timeout
        await node.call(gone, "q", timeout=0)


async def _returns():
    return None


async def test_a_reply_that_comes_while_the_request_is_delivered_is_kept(
        autojump_clock: Any) -> None:
    """A request that takes an await to deliver (committed to a workflow's inbox, say)
    can be answered before its caller parks: the reply was dropped as a late one, and
    the call waited out its timeout."""
    import outcome

    from garrison import Pid
    from garrison.hosts._kernel import Caller

    class Table(Caller):
        __slots__ = ()

        def __init__(self, name: str) -> None:
            self.node = None  # type: ignore[assignment]
            self.pid = Pid("test", name)
            self.calls = None
            self.callers = None

    caller, callee = Table("caller"), Table("callee")

    async def deliver(ref: int) -> None:
        await trio.sleep(0)
        callee.callers.pop(ref).finish_call(ref, outcome.Value("early"))

    with trio.fail_after(1):
        assert await caller.exchange(callee, callee.pid, "ask", 5.0, deliver) == "early"
    assert caller.calls == {} and callee.callers == {}


@pytest.mark.parametrize("second", ["reply", "death"])
async def test_a_second_result_that_comes_while_the_request_is_delivered_is_dropped(
        second: str, autojump_clock: Any) -> None:
    """A request that takes an await to deliver (a process's call to a workflow another
    node runs, written to the store in a worker thread) can be answered twice before its
    caller parks: the reply another node sends comes to the caller itself (it is not
    taken out of the callee's table of callers), then the workflow's recorded reply or
    its end (``Elsewhere``: ``finish_call`` again, ``fail_callers``). The second result
    took the first one, kept for the caller, for the caller's task: it crashed the
    replier, and the caller lost its reply (a ``KeyError`` from its call). The first
    result stands; the second is dropped, as it is once the caller has parked."""
    import outcome

    from garrison import ErrorInfo, Pid
    from garrison.hosts._kernel import Caller

    class Table(Caller):
        __slots__ = ()
        finish_reply = Caller.finish_reply_raw  # (as a process's)

        def __init__(self, name: str) -> None:
            self.node = None  # type: ignore[assignment]
            self.pid = Pid("test", name)
            self.calls = None
            self.callers = None

    caller, callee = Table("caller"), Table("callee")

    async def deliver(ref: str) -> None:
        await trio.sleep(0)
        caller.finish_call(ref, outcome.Value("first"))  # (another node's reply)
        if second == "reply":
            caller.finish_reply(ref, "second")
            caller.finish_call(ref, outcome.Value("third"))
        else:
            callee.fail_callers("it ended", ErrorInfo("noproc", "gone"))

    with trio.fail_after(1):
        assert await caller.exchange(callee, callee.pid, "ask", 5.0, deliver) == "first"
    assert caller.calls == {} and not callee.callers


async def test_a_reply_to_a_message_that_is_no_call_says_its_topic_cut(node, autojump_clock):
    """helper-383: the ValueError of a reply to a plain message held its whole topic (a
    topic has no limit: 100,000 characters went into the error and the exit log)."""
    async def replier() -> str:
        msg = await process.inbox().receive()
        with pytest.raises(ValueError) as info:
            await msg.reply("x")
        return str(info.value)

    pid = await node.spawn(replier)
    await node.send(pid, "a" * 100_000)
    said = await node.wait(pid)
    assert said.endswith("... (100002 characters)) is not a call: nothing to reply to")
    assert len(said) < 200, said
    await node.send(pid := await node.spawn(replier), "short")
    assert "(topic 'short') is not a call" in await node.wait(pid)


async def _timed_out_after(to, timeout: float) -> float:
    t0 = trio.current_time()
    with pytest.raises(TimeoutError):
        await process.call(to, "q", None, timeout=timeout)
    return trio.current_time() - t0


def test_call_deadlines_fall_on_each_runs_own_clock_across_nodes_runs_and_threads():
    """A node keeps its run's table of call deadlines from its first call (1fb7137):
    two nodes of one run share it, a node opened after another closed finds it, and
    runs one after another, or at once in two threads, each keep their own, each on
    its own clock (virtual or trio's default)."""

    async def one_run(timeout: float) -> list[float]:
        took = []
        async with garrison.open_node() as a, garrison.open_node() as b:
            for n in (a, b):
                silent = await n.spawn(trio.sleep_forever)
                took.append(await n.wait(await n.spawn(_timed_out_after, silent, timeout)))
            assert a._router.call_timeouts is b._router.call_timeouts
        async with garrison.open_node() as c:  # (the first two closed)
            silent = await c.spawn(trio.sleep_forever)
            took.append(await c.wait(await c.spawn(_timed_out_after, silent, timeout)))
            t0 = trio.current_time()
            with pytest.raises(TimeoutError):
                await c.call(silent, "q", timeout=timeout)
            took.append(trio.current_time() - t0)
        return took

    def virtual(timeout: float) -> list[float]:
        return trio.run(one_run, timeout, clock=trio.testing.MockClock(autojump_threshold=0))

    assert virtual(7.0) == pytest.approx([7.0] * 4)
    assert all(0.02 <= t < 5 for t in trio.run(one_run, 0.02))  # trio's default clock
    assert virtual(3.0) == pytest.approx([3.0] * 4)
    out: dict[str, list[float]] = {}
    threads = [threading.Thread(target=lambda: out.setdefault("virtual", virtual(9.0))),
               threading.Thread(target=lambda: out.setdefault("real", trio.run(one_run, 0.02)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert out["virtual"] == pytest.approx([9.0] * 4)
    assert all(0.02 <= t < 5 for t in out["real"])
