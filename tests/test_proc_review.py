"""Defects of the plain-process runtime found in review (notes/s19/rev-proc.md):
each test failed before its fix."""

import logging

import pytest
import trio

import garrison
from garrison import EventKind, Pid, process
from garrison.actors._mailbox import BUDGET


class _ApiError(Exception):
    """A common library pattern: no ``super().__init__(msg)``, a ``__str__`` that fails."""

    def __init__(self, response):
        self.response = response

    def __str__(self):
        return f"HTTP {self.response['status']}"  # KeyError: the response has no status


class _NotAStr(Exception):
    def __str__(self):
        return 42  # type: ignore[return-value]  # str() raises TypeError


async def _watch_failure(node, bad):
    """``bad`` fails beside a bystander; returns what a monitor of ``bad`` saw."""

    async def bystander():
        await trio.sleep(5)
        return "bystander finished"

    async def watcher(p):
        process.monitor(p)
        return (await process.events().receive()).error

    b = await node.spawn(bystander)
    p = await node.spawn(bad)
    w = await node.spawn(watcher, p)
    error = await node.wait(w)
    assert await node.wait(b) == "bystander finished"
    return error


# ---------------------------------------------------------------- 1: str() fails
@pytest.mark.parametrize("exc", [_ApiError({}), _NotAStr()], ids=["raises", "not-a-str"])
async def test_exception_whose_str_fails_is_that_process_failure(exc, autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="garrison")

    async def bad():
        await trio.sleep(0.1)
        raise exc

    async with garrison.open_node() as node:
        error = await _watch_failure(node, bad)
    assert error.type == type(exc).__name__
    assert str(error).startswith(f"{type(exc).__name__}: <exception str() failed: ")
    assert error.traceback  # the traceback is kept
    logged = [r for r in caplog.records if "exited abnormally" in r.getMessage()]
    assert len(logged) == 1 and type(exc).__name__ in logged[0].getMessage()


async def test_group_with_a_leaf_whose_str_fails(node, autojump_clock):
    async def bad():
        async with trio.open_nursery():
            raise _ApiError({})

    error = await _watch_failure(node, bad)
    assert "_ApiError: <exception str() failed: KeyError: 'status'>" in error.message


# ---------------------------------------------------------------- 2: GeneratorExit
def _gen():
    yield 1


async def test_generator_exit_raised_by_code_is_that_process_failure(autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="garrison")

    async def bad():
        await trio.sleep(0.1)
        g = _gen()
        next(g)
        g.throw(GeneratorExit)  # the generator does not catch it: it comes out here

    async with garrison.open_node() as node:
        error = await _watch_failure(node, bad)
    assert error.type == "GeneratorExit"
    assert any("exited abnormally: GeneratorExit" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- 3: shared inbox
@pytest.mark.parametrize("how", ["receive", "anext"])
async def test_two_tasks_of_one_process_share_its_inbox(node, autojump_clock, how):
    n = BUDGET * 3 + 1  # past the budget, where receive yields to the scheduler

    async def proc():
        inbox = process.inbox()
        await trio.sleep(1)  # let the messages pile up
        got = []

        async def worker():
            if how == "receive":
                while (m := await inbox.receive(timeout=0.5)) is not None:
                    got.append(m.payload)
            else:
                with trio.move_on_after(0.5):
                    async for m in inbox:
                        got.append(m.payload)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            nursery.start_soon(worker)
        return got

    pid = await node.spawn(proc)
    for i in range(n):
        await node.send(pid, "m", i)
    assert sorted(await node.wait(pid)) == list(range(n))


# ---------------------------------------------------------------- 6: receive timeout
@pytest.mark.parametrize("bad", ["not a duration", -5, float("nan"), True, "5"])
async def test_receive_validates_timeout_also_when_a_message_waits(node, autojump_clock, bad):
    async def proc():
        await trio.sleep(1)
        box = process.inbox()
        with pytest.raises(ValueError, match="timeout"):
            await box.receive(timeout=bad)
        return (await box.receive(timeout="1s")).payload  # the message was not taken

    pid = await node.spawn(proc)
    await node.send(pid, "m", "kept")
    assert await node.wait(pid) == "kept"


# ---------------------------------------------------------------- 7: Pid values
@pytest.mark.parametrize("host, ident, error, match", [
    ("h", "", ValueError, "id"),
    ("", "x", ValueError, "host"),
    ("a/b", "x", ValueError, "host"),
    ("h", 5, TypeError, "id.*int"),
    (5, "x", TypeError, "host.*int"),
    (None, "x", TypeError, "host.*NoneType"),
])
def test_pid_refuses_what_would_not_round_trip(host, ident, error, match):
    with pytest.raises(error, match=match):
        Pid(host, ident)


def test_pid_of_str_subclasses_is_plain():
    import enum

    class Host(enum.StrEnum):
        P = "processes"

    pid = Pid(Host.P, "x.1")
    assert type(pid.host) is str and Pid.parse(str(pid)) == pid
    assert sorted([pid, Pid("a", "b")]) == [Pid("a", "b"), pid]


# ---------------------------------------------------------------- 8: link chains
async def test_linked_failure_reason_does_not_nest_along_a_chain(node, autojump_clock):
    depth = 50

    async def link_chain(k):
        if k == 0:
            await trio.sleep(1)
            raise ValueError("leaf")
        await process.spawn_linked(link_chain, k - 1)
        await trio.sleep_forever()

    async def top():
        process.set_options(trap_links=True)
        await process.spawn_linked(link_chain, depth)
        ev = await process.events().receive()
        assert ev.kind is EventKind.LINK_DOWN
        return ev.error

    error = await node.wait(await node.spawn(top))
    assert error.type == "LinkedProcessFailed"
    assert error.message.count("ValueError: leaf") == 1
    assert error.message.count("linked process") == 1
    assert f"(through {depth} links from " in error.message
    assert len(error.message) < 200


# ---------------------------------------------------------------- 5: shielded stop
async def test_node_stop_names_a_process_that_shields_itself(autojump_clock):
    seen = []

    class Record(logging.Handler):
        def emit(self, record):
            seen.append((trio.current_time(), record.levelno, record.getMessage()))

    handler = Record()
    logger = logging.getLogger("garrison.process")
    logger.addHandler(handler)

    async def stubborn():
        with trio.CancelScope(shield=True):
            await trio.sleep(3600)

    async def quick():
        await trio.sleep_forever()

    try:
        async with garrison.open_node() as node:
            pid = await node.spawn(stubborn)
            await node.spawn(quick)
            await trio.sleep(1)
            t0 = trio.current_time()
    finally:
        logger.removeHandler(handler)
    assert trio.current_time() - t0 == 3599  # the stop waits for it (it cannot be ended)
    warned = [(t - t0, m) for t, level, m in seen if "has not ended" in m]
    assert len(warned) == 1  # once, naming it, at KILL_WARNING
    assert warned[0][0] == 5.0 and str(pid) in warned[0][1] and "stubborn" in warned[0][1]
    assert not any("quick" in m for _, _, m in seen)


# ---------------------------------------------------------------- 4: monitors per pair
async def _exits(timeout=10):
    """Every EXIT that reaches the caller within ``timeout``: (pid, error type)."""
    got = []
    while (ev := await process.events().receive(timeout=timeout)) is not None:
        got.append((ev.pid, ev.error.type if ev.error else None))
    return got


async def test_each_monitor_of_a_dead_pid_gives_its_exit(node, autojump_clock):
    async def gone():
        return None

    async def watcher(dead):
        process.monitor(dead)
        process.monitor(dead)
        return await _exits(timeout=1)

    dead = await node.spawn(gone)
    await node.wait(dead)
    got = await node.wait(await node.spawn(watcher, dead))
    assert got == [(dead, "noproc"), (dead, "noproc")]


async def _crashes_at_5():
    await trio.sleep(5)
    raise ValueError("worker crashed")


async def test_monitoring_a_live_pid_twice_gives_one_exit(node, autojump_clock):
    async def owner():
        w = await process.spawn_monitored(_crashes_at_5)
        process.monitor(w)
        return w, await _exits()

    w, got = await node.wait(await node.spawn(owner))
    assert got == [(w, "ValueError")]


async def test_another_process_demonitor_leaves_my_monitor(node, autojump_clock):
    async def helper(pid):
        process.monitor(pid)
        await trio.sleep(0.1)
        process.demonitor(pid)

    async def owner():
        w = await process.spawn_monitored(_crashes_at_5)
        await node.wait(await process.spawn(helper, w))
        return w, await _exits()

    w, got = await node.wait(await node.spawn(owner))
    assert got == [(w, "ValueError")]


async def test_demonitor_ends_the_callers_one_monitor_of_a_pid(node, autojump_clock):
    """Per pair, not counted (API: ``monitor(pid)`` / ``demonitor(pid)``, no references):
    a monitor made twice, once by spawn_monitored, ends with one demonitor."""

    async def owner():
        w = await process.spawn_monitored(_crashes_at_5)
        process.monitor(w)
        process.demonitor(w)
        return await _exits()

    assert await node.wait(await node.spawn(owner)) == []


# -- the review of these fixes ---------------------------------------------------------
def _throws_back():
    yield 1


def _generator_exit_from_code():
    g = _throws_back()
    next(g)
    g.throw(GeneratorExit)  # re-raised by the generator: into the caller's code


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def _activity_raising_generator_exit() -> None:
    _generator_exit_from_code()


async def _workflow_raising_generator_exit() -> None:
    await garrison.workflow.sleep(1)
    _generator_exit_from_code()


async def _workflow_whose_activity_raises_generator_exit() -> str:
    try:
        await _activity_raising_generator_exit()
    except garrison.ActivityError as exc:
        return f"activity failed: {exc.error.type}"
    return "no failure"


async def test_generator_exit_from_a_workflows_or_activitys_code_is_its_failure(
        node, autojump_clock):
    """A GeneratorExit a workflow's (or its activity's) code raised went through as the
    interpreter closing the coroutine: the whole node stopped, and every node that
    opened the store replayed the workflow into the same stop."""
    await node.start_workflow(_workflow_raising_generator_exit, id="g1")
    with pytest.raises(garrison.WorkflowFailed, match="GeneratorExit"):
        await node.workflow("g1").result()
    await node.start_workflow(_workflow_whose_activity_raises_generator_exit, id="g2")
    assert await node.workflow("g2").result() == "activity failed: GeneratorExit"


class _StrExits(Exception):
    def __str__(self):
        raise SystemExit(3)


async def test_an_exception_whose_str_raises_system_exit_is_its_process_failure(
        node, autojump_clock):
    async def bad():
        await trio.sleep(1)
        raise _StrExits()

    seen = await _watch_failure(node, bad)
    assert "str() failed: SystemExit" in str(seen)


async def _fails_after(seconds: float) -> None:
    await garrison.workflow.sleep(seconds)
    raise ValueError("root")


async def test_a_linked_failure_through_a_workflow_id_with_a_space_keeps_its_root(
        node, autojump_clock):
    async def chain(k, w):
        if k == 0:
            process.link(w)
        else:
            await process.spawn_linked(chain, k - 1, w)
        await trio.sleep_forever()

    async def top(w):
        process.set_options(trap_links=True)
        await process.spawn_linked(chain, 4, w)
        return str((await process.events().receive()).error)

    w = await node.start_workflow(_fails_after, 1, id="order 17")
    got = await node.wait(await node.spawn(top, w))
    assert "ValueError: root" in got and "through 5 links from workflows/order 17)" in got, got


async def test_a_timeout_too_big_for_a_float_means_forever_every_time(
        node, autojump_clock):
    """An int timeout past what a float holds was a ValueError ("out of range"), where
    README says very long timeouts mean forever (and -10**400 is refused as negative)."""
    async def receiver():
        await process.send(process.pid(), "t", 1)
        outcomes = []
        with trio.move_on_after(10 ** 6):
            for _ in range(2):  # a message waiting, then none: waits on
                await process.inbox().receive(timeout=10 ** 400)
                outcomes.append("taken")
        try:
            await process.inbox().receive(timeout=-10 ** 400)
        except ValueError as exc:
            outcomes.append(str(exc))
        return outcomes

    got = await node.wait(await node.spawn(receiver))
    assert got[0] == "taken" and len(got) == 2 and "non-negative" in got[1], got


async def test_a_process_that_catches_its_kill_still_exits_with_the_kill_s_reason(
        node, autojump_clock):
    """A process whose code catches trio.Cancelled and returns (or ends shielded) read
    as a normal exit after a terminate or a linked failure: its monitor saw ok, its
    links were not told, a failure chain was cut there. A kill is not refused."""

    async def swallower():
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            return "survived"

    async def watcher():
        victim = await process.spawn_monitored(swallower)
        await trio.sleep(0.01)
        await process.terminate(victim)
        return (await process.events().receive()).error.type

    async def chain():
        process.set_options(trap_links=True)
        middle = await process.spawn_linked(swallower)

        async def crasher():
            process.link(middle)
            await trio.sleep(0.01)
            raise ValueError("boom")

        await process.spawn(crasher)
        event = await process.events().receive(timeout=1)
        return event.kind, event.pid == middle, event.error.message

    assert await node.wait(await node.spawn(watcher)) == "Terminated"
    kind, from_middle, why = await node.wait(await node.spawn(chain))
    assert kind is EventKind.LINK_DOWN and from_middle and "ValueError: boom" in why


async def test_unlink_and_demonitor_by_a_name_nobody_holds_do_nothing(node, autojump_clock):
    """Cleanup code (``finally: process.demonitor("svc")``) raised NoSuchProcess once the
    name's holder had ended: there is nothing to undo."""

    async def svc():
        process.register("svc")
        await trio.sleep(0.01)

    async def user():
        process.monitor("svc")
        process.link("svc")
        await process.events().receive()  # its EXIT: the name is free now
        process.demonitor("svc")
        process.unlink("svc")
        with pytest.raises(garrison.NoSuchProcess):  # (a new watch still says so)
            process.monitor("svc")
        return "ok"

    await node.spawn(svc)
    await trio.sleep(0)
    assert await node.wait(await node.spawn(user)) == "ok"


async def _cleanup_fails(tag: str) -> None:
    try:
        await trio.sleep_forever()
    finally:
        raise ValueError(f"cleanup of {tag} failed")


async def test_a_cleanup_that_raises_while_the_process_is_ended_is_logged(autojump_clock,
                                                                           caplog):
    """A process terminated (or stopped with its node) whose ``finally`` raised: its exit
    is the kill's reason, and the cleanup's error went nowhere, not even at DEBUG (no
    silent death: what its cleanup failed to do is worth a line)."""
    caplog.set_level(logging.DEBUG, logger="garrison")
    async with garrison.open_node() as node:
        a = await node.spawn(_cleanup_fails, "a")
        await node.spawn(_cleanup_fails, "b")
        await trio.sleep(1)

        async def killer() -> None:
            await process.terminate(a)

        await node.spawn(killer)
        with pytest.raises(garrison.ProcessError, match="Terminated"):
            await node.wait(a)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("its cleanup raised ValueError: cleanup of a failed while it was being "
               "ended (Terminated: " in m and "its exit stays Terminated" in m
               and "Traceback" in m for m in said), said
    # (at the node's stop a warning: a cleanup calling a process the stop ended first
    # fails at every stop)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("its cleanup raised ValueError: cleanup of b failed while it was being "
               "ended (Shutdown: the node is shutting down); its exit stays Shutdown" in m
               for m in warned), warned


async def _crashes_on_a_call() -> None:
    async for _msg in process.inbox():
        raise RuntimeError("worker crashed")


async def _calls_its_linked_worker() -> object:
    worker = await process.spawn_linked(_crashes_on_a_call)
    return await process.call(worker, "job", None, timeout=5)


async def test_a_call_failing_as_the_linked_callee_dies_is_no_cleanup_failure(
        autojump_clock, caplog):
    """The call's ProcessError came out of code that ran on unaware, before the linked
    failure's kill landed: it was logged as "its cleanup raised" with a traceback (a
    review of the cleanup log); only what code raises while being cancelled is."""
    caplog.set_level(logging.DEBUG, logger="garrison")
    async with garrison.open_node() as node:
        pid = await node.spawn(_calls_its_linked_worker)
        with pytest.raises(garrison.ProcessError, match="LinkedProcessFailed"):
            await node.wait(pid)
    assert not [r for r in caplog.records if "its cleanup raised" in r.getMessage()]


def test_only_this_nodes_shutdown_or_a_supervisors_stop_is_orderly():
    """Another node's shutdown reason (arriving as type Shutdown without a traceback)
    is a failure of the process there: a process linked to it here ends logged, as a
    LinkedProcessFailed, not quietly as if this node stopped."""
    from garrison.hosts._kernel import orderly_stop

    class _Node:
        shutdown_reason = garrison.ErrorInfo("Shutdown", "the node is shutting down")

    node = _Node()
    assert orderly_stop(node, node.shutdown_reason)
    assert not orderly_stop(node, garrison.ErrorInfo("Shutdown", "the node is shutting down"))
    assert orderly_stop(node, garrison.ErrorInfo("Shutdown", "stopped by its supervisor 's'"))
    assert not orderly_stop(node, garrison.ErrorInfo(
        "Shutdown", "stopped by its supervisor 's'", "Traceback ..."))  # a user's class


async def _sleeper() -> None:
    await trio.sleep_forever()


async def _links_then_fails() -> None:
    await process.spawn_linked(_sleeper)  # the child has not run yet when this raises
    raise ValueError("the parent fails")


async def test_a_linked_child_ended_before_it_ran_is_logged(autojump_clock, caplog):
    """A child spawn_linked by a process that failed before the child's first step ended
    with LinkedProcessFailed and was never logged (had it run one step, it was): the
    logging depended on scheduling. Nobody else says it ended, so it is logged."""
    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node() as node:
        parent = await node.spawn(_links_then_fails)
        with pytest.raises(garrison.ProcessError):
            await node.wait(parent)
        await trio.sleep(1)
    said = [r.getMessage() for r in caplog.records if r.name == "garrison.process"]
    assert any("_sleeper" in m and "exited abnormally: LinkedProcessFailed: linked process "
               f"{parent} failed: ValueError: the parent fails" in m for m in said), said


async def test_a_spawn_that_raises_cancelled_did_not_happen_a_send_did(autojump_clock):
    """Inside a cancelled scope, spawn_monitored started the child and then raised
    Cancelled (its pid lost, its EXIT later for a pid the caller never had): trio's rule
    is that an operation raising Cancelled did not happen. A send delivers first (a
    goodbye from a ``finally`` being cancelled arrives), then raises."""
    seen: dict[str, object] = {}

    async def sink() -> None:
        await trio.sleep(1)
        seen["inbox"] = process.inbox().try_receive()

    async def root() -> None:
        events = process.events()
        node = garrison.current_node()
        before = node.stats()["spawned"]
        with trio.CancelScope() as scope:
            scope.cancel()
            await process.spawn_monitored(_sleeper)
        seen["spawned"] = node.stats()["spawned"] - before
        target = await process.spawn(sink)
        with trio.CancelScope() as scope:
            scope.cancel()
            await process.send(target, "sent-while-cancelled")
        seen["exit"] = await events.receive(timeout=5)

    async with garrison.open_node() as node:
        await node.wait(await node.spawn(root))
    assert seen["spawned"] == 0 and seen["exit"] is None
    assert getattr(seen["inbox"], "topic", None) == "sent-while-cancelled"


async def test_a_call_to_itself_is_served_by_another_task_and_a_monitor_of_itself_is_nothing(
        autojump_clock):
    """Monitoring itself counted a process's own EXIT as a dead letter when it ended. A
    call to itself is answered by another task of the process (a nursery task serving
    its inbox), so it is no error (a review of a change that refused it)."""
    said: list[object] = []

    async def itself() -> None:
        process.monitor(process.pid())

        async def serve() -> None:
            msg = await process.inbox().receive()
            await msg.reply(msg.payload * 2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            said.append(await process.call(process.pid(), "double", 21, timeout=5))

    async with garrison.open_node() as node:
        pid = await node.spawn(itself)
        await node.wait(pid)
        await trio.sleep(1)
        assert node.stats()["dead_letters"] == 0
    assert said == [42]
