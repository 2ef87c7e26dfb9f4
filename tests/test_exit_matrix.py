"""Every cell of the exit matrix in the README: how B's end reaches A.

Rows: B returns normally / raises / is cancelled (stops in time on CANCEL, is stopped by
trio cancellation because it never asked for its events, or is terminated after the
timeout) / is terminated.
Columns: A monitors B / A is linked to B / A is linked and traps links.
"""

import logging
import sys

import pytest
import trio

import garrison
from garrison import EventKind, ProcessError, process


async def _b_normal():
    return "fine"


async def _b_raises():
    raise ValueError("boom")


async def _b_obeys_cancel():
    ev = await process.events().receive()
    assert ev.kind == EventKind.CANCEL
    return "cleaned up"


async def _b_ignores_cancel():
    process.events()  # reads its events, so a cancel is a CANCEL event: ignored
    await trio.sleep_forever()


async def _b_never_reads_events():
    await trio.sleep_forever()


# how each kind of end is produced: (target, how A's helper ends it)
ENDS = {
    "normal": (_b_normal, None),
    "exception": (_b_raises, None),
    "cancel_obeyed": (_b_obeys_cancel, "cancel"),
    "cancel_without_events": (_b_never_reads_events, "cancel"),
    "cancel_escalated": (_b_ignores_cancel, "cancel"),
    "terminate": (_b_ignores_cancel, "terminate"),
}

# expected: EXIT (ok, error type) for a monitor; for a link: whether A dies;
# for a trapping link: whether a LINK_DOWN arrives
EXPECT = {
    "normal": ((True, None), False, False),
    "exception": ((False, "ValueError"), True, True),
    "cancel_obeyed": ((True, None), False, False),
    "cancel_without_events": ((True, None), False, False),
    "cancel_escalated": ((False, "Terminated"), True, True),
    "terminate": ((False, "Terminated"), True, True),
}


async def _ender(pid, how):
    await trio.sleep(0.5)  # B runs (and asks for its events, if it does) before this
    if how == "cancel":
        await process.cancel(pid, timeout="1s")
    elif how == "terminate":
        await process.terminate(pid)


@pytest.mark.parametrize("end", list(ENDS))
async def test_monitor_column(node, autojump_clock, end):
    target, how = ENDS[end]

    async def a():
        b = await process.spawn_monitored(target)
        if how:
            await process.spawn(_ender, b, how)
        ev = await process.events().receive()
        assert ev.kind == EventKind.EXIT and ev.pid == b
        return ev.ok, (ev.error.type if ev.error else None), ev.result

    ok, err, result = await node.wait(await node.spawn(a))
    assert (ok, err) == EXPECT[end][0]
    if end == "normal":
        assert result == "fine"


@pytest.mark.parametrize("end", list(ENDS))
async def test_link_column(node, autojump_clock, end):
    target, how = ENDS[end]

    async def a():
        b = await process.spawn_linked(target)
        if how:
            await process.spawn(_ender, b, how)
        await trio.sleep(10)
        return "survived"

    pid = await node.spawn(a)
    dies = EXPECT[end][1]
    if dies:
        with pytest.raises(Exception) as info:
            await node.wait(pid)
        assert info.value.error.type == "LinkedProcessFailed"
        assert str(info.value.error).startswith("LinkedProcessFailed: linked process")
    else:
        assert await node.wait(pid) == "survived"


@pytest.mark.parametrize("end", list(ENDS))
async def test_trapped_link_column(node, autojump_clock, end):
    target, how = ENDS[end]

    async def a():
        process.set_options(trap_links=True)
        b = await process.spawn_linked(target)
        if how:
            await process.spawn(_ender, b, how)
        ev = await process.events().receive(timeout="10s")
        if ev is None:
            return None
        assert ev.kind == EventKind.LINK_DOWN and ev.pid == b
        return ev.error.type

    got = await node.wait(await node.spawn(a))
    if EXPECT[end][2]:
        assert got == EXPECT[end][0][1]
    else:
        assert got is None


@pytest.mark.parametrize("timeout", [0, "0s", 0.0001])
async def test_a_cancel_with_no_time_still_lets_a_process_stop_at_its_checkpoint(
        node, autojump_clock, timeout):
    """README: a process that never asked for its events is stopped by a cancel at its
    next checkpoint, and its exit is a normal one; the timeout is for what its cleanup
    awaits. With ``timeout=0`` the cancel's wait could end before the process was next
    scheduled (trio runs a pass's tasks in either order), and the escalation replaced
    the stop: ``Terminated: did not stop within 0s of its cancel``, which killed the linked
    caller (in about half the runs). It now runs once before the timeout counts."""

    async def b():
        await trio.sleep_forever()

    async def shielded():
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(5)

    async def a():
        events = []
        for _ in range(8):  # (each order of a pass, many times over)
            linked = await process.spawn_linked(b)
            watched = await process.spawn_monitored(b)
            await process.cancel(linked, timeout=timeout)
            await process.cancel(watched, timeout=timeout)
            ev = await process.events().receive()
            assert (ev.kind, ev.pid) == (EventKind.EXIT, watched)
            events.append((ev.ok, ev.error))
        slow = await process.spawn_monitored(shielded)
        await trio.sleep(0.1)
        await process.cancel(slow, timeout=timeout)  # its cleanup has no time: terminated
        ev = await process.events().receive()
        assert ev.pid == slow and not ev.ok and ev.error.type == "Terminated", ev
        await trio.sleep(1)  # (a linked failure would have ended this process)
        return events

    assert await node.wait(await node.spawn(a)) == [(True, None)] * 8


async def test_link_is_bidirectional(node, autojump_clock):
    async def parent_fails():
        await process.spawn_linked(_b_ignores_cancel)
        await trio.sleep(1)
        raise RuntimeError("parent down")

    async def watch():
        p = await process.spawn_monitored(parent_fails)
        await process.events().receive()
        return p

    p = await node.wait(await node.spawn(watch))
    assert p is not None
    await trio.sleep(1)
    assert node.stats()["processes"] == 0  # the linked child died with it


async def test_linked_failure_chains_up(node, autojump_clock):
    async def leaf():
        await trio.sleep(1)
        raise ValueError("leaf")

    async def middle():
        await process.spawn_linked(leaf)
        await trio.sleep_forever()

    async def top():
        process.set_options(trap_links=True)
        await process.spawn_linked(middle)
        ev = await process.events().receive()
        return ev.error.type, ev.error.message

    kind, message = await node.wait(await node.spawn(top))
    assert kind == "LinkedProcessFailed" and "ValueError: leaf" in message


async def test_link_and_monitor_to_dead_pid_is_noproc(node, autojump_clock):
    async def gone():
        return None

    async def a(dead):
        process.monitor(dead)
        ev = await process.events().receive()
        assert ev.kind == EventKind.EXIT and ev.error.type == "noproc"
        process.set_options(trap_links=True)
        process.link(dead)
        ev = await process.events().receive()
        assert ev.kind == EventKind.LINK_DOWN and "noproc" in str(ev.error)
        return "ok"

    async def b(dead):
        process.link(dead)
        await trio.sleep(5)
        return "not reached"

    dead = await node.spawn(gone)
    await node.wait(dead)
    assert await node.wait(await node.spawn(a, dead)) == "ok"
    with pytest.raises(Exception, match="noproc"):
        await node.wait(await node.spawn(b, dead))


async def test_unlink_and_demonitor(node, autojump_clock):
    async def a():
        b = await process.spawn_linked_monitored(_b_raises)
        process.unlink(b)
        process.demonitor(b)
        await trio.sleep(1)
        return process.events().try_receive()

    assert await node.wait(await node.spawn(a)) is None


async def test_spawn_linked_monitored_gets_both(node, autojump_clock):
    async def a():
        process.set_options(trap_links=True)
        await process.spawn_linked_monitored(_b_raises)
        kinds = {(await process.events().receive()).kind for _ in range(2)}
        return kinds

    assert await node.wait(await node.spawn(a)) == {EventKind.EXIT, EventKind.LINK_DOWN}


async def _crash(where: str) -> None:
    if where == "here":
        raise RuntimeError("crash at the first place")
    raise RuntimeError("crash at the other place")


async def test_every_abnormal_exit_is_logged_a_repeated_traceback_as_one_line(
        node, autojump_clock, caplog):
    """No silent death, and no wall of identical tracebacks: the first crash through
    some lines is logged with its traceback, a later one through the same lines (a
    service crashing again) in one line saying when the traceback was logged."""
    caplog.set_level(logging.ERROR, logger="garrison.process")
    for where in ("here", "here", "there", "here"):
        pid = await node.spawn(_crash, where)
        with pytest.raises(ProcessError):
            await node.wait(pid)
    lines = [r.getMessage() for r in caplog.records if "exited abnormally" in r.getMessage()]
    assert len(lines) == 4
    assert [("Traceback" in m, "(traceback as logged at " in m) for m in lines] == [
        (True, False), (False, True), (True, False), (False, True)]
    assert all(len(m.splitlines()) == 1 for m in lines[1::2])
    assert lines[1].startswith("_crash ") and lines[1].split(" exited abnormally: ")[1] \
        .startswith("RuntimeError: crash at the first place (traceback as logged at ")
    assert all(r.error.type == "RuntimeError" for r in caplog.records)  # JSON fields kept


async def _b_sys_exit():
    await trio.sleep(1)
    sys.exit(3)  # argparse or click called inside a process, say


async def _bystander():
    await trio.sleep(10)
    return "still here"


async def test_sys_exit_ends_that_process_only_as_an_abnormal_exit(autojump_clock, caplog):
    """``sys.exit()`` in a process is that process's failure: its monitor gets an EXIT
    with the SystemExit, it is logged, a linked process fails through the link, and
    the node and every other process go on (it used to stop the whole node, silently,
    the monitor seeing 'Shutdown')."""
    caplog.set_level(logging.INFO, logger="garrison.process")

    async def a():
        b = await process.spawn_monitored(_b_sys_exit)
        ev = await process.events().receive()
        assert ev.kind == EventKind.EXIT and ev.pid == b
        return ev.ok, str(ev.error)

    async def linked():
        await process.spawn_linked(_b_sys_exit)
        await trio.sleep(10)

    async with garrison.open_node() as node:
        other = await node.spawn(_bystander)
        assert await node.wait(await node.spawn(a)) == (False, "SystemExit: 3")
        with pytest.raises(ProcessError) as info:
            await node.wait(await node.spawn(linked))
        assert "SystemExit: 3" in str(info.value.error)
        assert await node.wait(other) == "still here"
    lines = [r.getMessage() for r in caplog.records if "exited abnormally" in r.getMessage()]
    assert lines[0].startswith("_b_sys_exit ") and "SystemExit: 3" in lines[0]
    assert "Traceback" in lines[0] and "sys.exit(3)" in lines[0]


async def test_sys_exit_inside_a_nursery_of_the_process_ends_that_process_only(
        node, autojump_clock):
    async def b():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_b_sys_exit)
            await trio.sleep_forever()

    with pytest.raises(ProcessError) as info:
        await node.wait(await node.spawn(b))
    assert "SystemExit: 3" in info.value.error.message
    assert node.stats()["processes"] == 0


class _LibraryStop(BaseException):
    """A library's own BaseException (not an Exception, as asyncio's CancelledError)."""


@pytest.mark.parametrize("kind", ["asyncio.CancelledError", "a library's BaseException"])
async def test_another_base_exception_fails_that_process_only(autojump_clock, kind):
    """A BaseException that is neither trio's Cancelled nor KeyboardInterrupt
    (asyncio's CancelledError from an asyncio-minded library, a library's own) is the
    process's failure as ``sys.exit()`` is: it used to escape the process, stop the node
    and every process, and show the process itself as 'Shutdown'."""
    import asyncio

    async def bad():
        await trio.sleep(1)
        raise asyncio.CancelledError("asyncio") if kind.startswith("asyncio") \
            else _LibraryStop("stop")

    async def a():
        pid = await process.spawn_monitored(bad)
        ev = await process.events().receive()
        return ev.pid == pid, ev.error.type

    async with garrison.open_node() as node:
        other = await node.spawn(_bystander)
        expected = "CancelledError" if kind.startswith("asyncio") else "_LibraryStop"
        assert await node.wait(await node.spawn(a)) == (True, expected)
        assert await node.wait(other) == "still here"


@pytest.mark.parametrize("in_group", [False, True])
async def test_a_stray_cancelled_fails_that_process_only(autojump_clock, caplog, in_group):
    """trio's Cancelled raised by a process that nothing cancelled (one its code caught
    in its own scope and raised outside it) went up through the node's nurseries: every
    other process was stopped as 'Shutdown', the node died, and nothing named the
    process. It is that process's failure, logged, as another BaseException's is."""
    import workflow_app as app

    caplog.set_level(logging.ERROR, logger="garrison.process")

    async def a():
        pid = await process.spawn_monitored(app.raises_a_stray_cancelled, in_group)
        ev = await process.events().receive()
        return ev.pid == pid, ev.error.type, ev.error.message

    async with garrison.open_node() as node:
        other = await node.spawn(_bystander)
        same, kind, message = await node.wait(await node.spawn(a))
        assert (same, kind) == (True, "Cancelled")
        assert "nothing cancelled it" in message, message
        assert await node.wait(other) == "still here"
    assert any("raises_a_stray_cancelled" in r.getMessage() and "nothing cancelled it"
               in r.getMessage() for r in caplog.records), caplog.text


async def test_keyboard_interrupt_in_a_process_stops_the_node_and_says_where(
        autojump_clock, caplog):
    """KeyboardInterrupt stays trio's (Ctrl-C): trio may raise it in whichever task runs,
    so from a process it stops the node as Ctrl-C does; the process it came out of is
    logged, and its outcome is the KeyboardInterrupt, not 'Shutdown'."""
    caplog.set_level(logging.INFO, logger="garrison.process")

    async def interrupted():
        await trio.sleep(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        async with garrison.open_node() as node:
            pid = await node.spawn(interrupted)
            other = await node.spawn(_bystander)
            await trio.sleep(5)
    with pytest.raises(ProcessError) as info:
        await node.wait(pid)
    assert info.value.error.type == "KeyboardInterrupt"
    with pytest.raises(ProcessError, match="shutting down"):
        await node.wait(other)
    lines = [r.getMessage() for r in caplog.records if r.name == "garrison.process"]
    assert len(lines) == 1 and ".interrupted processes/" in lines[0] \
        and "KeyboardInterrupt" in lines[0] and "the node stops" in lines[0]


async def _raises_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def test_garrison_run_raises_keyboard_interrupt_when_a_process_raises_it() -> None:
    """README: ``garrison.run`` turns Ctrl-C into an orderly stop and then raises
    KeyboardInterrupt. One raised by the root process (awaited by ``run``, so its
    failure came out beside it) was a BaseExceptionGroup of the KeyboardInterrupt and
    a ProcessError: ``except KeyboardInterrupt`` around ``garrison.run`` missed it."""
    with pytest.raises(KeyboardInterrupt):
        garrison.run(_raises_keyboard_interrupt)


async def _wf_obeys_cancel() -> str:
    """A workflow B that waits for ever; a cancel ends it ``cancelled``."""
    await garrison.workflow.sleep("1h")
    return "slept"


@pytest.mark.parametrize("column", ["monitor", "link", "trap"])
async def test_a_cancelled_workflow_is_no_normal_exit(node, autojump_clock, column):
    """README, under the table: a workflow B that a cancel ends is ``cancelled``, not a
    normal exit: ``EXIT`` with ``WorkflowCancelled``, a linked A ends, a trapping one
    gets ``LINK_DOWN``."""

    async def a():
        if column == "trap":
            process.set_options(trap_links=True)
        spawn = process.spawn_monitored if column == "monitor" else process.spawn_linked
        b = await spawn(_wf_obeys_cancel, host="workflows")
        await trio.sleep(0.5)
        await process.cancel(b, timeout="1s")
        ev = await process.events().receive(timeout="10s")
        await trio.sleep(10)
        return None if ev is None else (ev.kind.value, ev.ok, ev.error.type)

    pid = await node.spawn(a)
    if column == "link":
        with pytest.raises(ProcessError) as info:
            await node.wait(pid)
        assert info.value.error.type == "LinkedProcessFailed"
        assert "WorkflowCancelled" in str(info.value.error)
        return
    kind = "EXIT" if column == "monitor" else "LINK_DOWN"
    assert await node.wait(pid) == (kind, False, "WorkflowCancelled")
