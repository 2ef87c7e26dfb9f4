"""A plain process a workflow watched is lost when its node crashes: after recovery the
workflow gets a durable ``EXIT`` (or ``LINK_DOWN``) with reason ``noproc``; a link that
does not trap fails it. Links between workflows outlive a restart.

A node that closes normally stops its processes first, so their real ``EXIT``
(``Shutdown``) reaches the workflow; a crash leaves the store as :func:`crash_close`
does: no event from the lost process. (tests/test_workflow_crash.py does it with SIGKILL.)
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import workflow_app as app
from _stores import sql

import garrison


async def wait_status(handle: garrison.WorkflowHandle, status: str) -> None:
    with trio.fail_after(5):
        while handle.status() != status:
            await trio.sleep(0.001)


async def crash_close(db: str) -> None:
    """The store as a SIGKILL during the wait leaves it: no event of the lost process."""
    sql(db, "DELETE FROM inbox WHERE kind = 'event'")


async def test_graceful_close_delivers_the_real_exit(store_spec: str, autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.watches_a_process, id="w")
        await wait_status(node.workflow("w"), "waiting")
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5):
            assert await node.workflow("w").result() == [True, "EXIT", "Shutdown"]


async def test_monitored_process_lost_in_a_restart_gives_noproc_exit(
        store_spec: str, autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.watches_a_process, id="w")
        await wait_status(node.workflow("w"), "waiting")
    await crash_close(db)
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5):
            assert await node.workflow("w").result() == [True, "EXIT", "noproc"]
        rec = node.workflow("w").history()[-1]
        assert rec.kind == "receive" and rec.outcome["event"]["error"]["type"] == "noproc"
    # one event row: the noproc EXIT (its id would drop a second one)
    events = sql(db, "SELECT msg_id FROM inbox WHERE workflow_id = 'w'")
    assert len(events) == 1


async def test_trapped_link_to_a_lost_process_gives_noproc_link_down(
        store_spec: str, autojump_clock: Any) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.traps_a_linked_process, id="l")
        await wait_status(node.workflow("l"), "waiting")
    await crash_close(db)
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5):
            assert await node.workflow("l").result() == [True, "LINK_DOWN", "noproc"]


async def test_a_link_to_a_process_that_returned_outlives_a_restart(
        store_spec: str, autojump_clock: Any) -> None:
    """A linked process that returned ends the link quietly (not journaled): after a
    restart the link to it, gone, must not end a workflow that does not trap."""
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.links_a_quick_process, id="l")
        await wait_status(node.workflow("l"), "waiting")
        await trio.sleep(1)  # the process returned long ago
    async with garrison.open_node(store=db) as node:
        await trio.sleep(1)
        await node.send("workflows/l", "go", None)
        with trio.fail_after(5):
            assert await node.workflow("l").result() == "ok"


@pytest.mark.parametrize("restart_at", ["before", "after"])
async def test_a_link_between_workflows_outlives_a_restart(
        store_spec: str, autojump_clock: Any, restart_at: str) -> None:
    """Links are not stored: the linking workflow makes its link again as it resumes,
    so the other one's failure still ends it, whether it comes after the restart or
    while the node was down (here: between its failure's commit and the linked exit)."""
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.fails_on_a_message, id="F")
        await node.start_workflow(app.links_a_workflow, "workflows/F", id="W")
        await wait_status(node.workflow("W"), "sleeping")
    if restart_at == "after":
        async with garrison.open_node(store=db) as node:
            await wait_status(node.workflow("W"), "sleeping")
            await node.send("workflows/F", "fail", None)
            with pytest.raises(garrison.WorkflowFailed, match="told to fail"):
                await node.workflow("F").result()
            with trio.fail_after(5), pytest.raises(garrison.WorkflowFailed,
                                                   match=r"LinkedProcessFailed.*told to fail"):
                await node.workflow("W").result()
        return
    sql(db, "UPDATE workflows SET status = 'failed', error = ? WHERE workflow_id = 'F'",
        ('{"type": "RuntimeError", "message": "told to fail", "traceback": ""}',))
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5), pytest.raises(garrison.WorkflowFailed,
                                               match=r"LinkedProcessFailed.*told to fail"):
            await node.workflow("W").result()


@pytest.mark.parametrize("by_id", [False, True])
async def test_a_linked_child_workflows_failure_ends_its_parent(
        node: garrison.Node, autojump_clock: Any, by_id: bool) -> None:
    await node.start_workflow(app.spawns_a_linked_child, by_id, id="p")
    with trio.fail_after(5), pytest.raises(garrison.WorkflowFailed,
                                           match=r"LinkedProcessFailed.*the child failed"):
        await node.workflow("p").result()


async def test_a_linked_childs_failure_ends_a_parent_waiting_on_its_events(
        node: garrison.Node, autojump_clock: Any) -> None:
    """The child's EXIT reaches the parent's events with its end, and the linked failure
    right after: the parent, woken by that EXIT, is ended by the link all the same (as a
    plain process is: a kill is not refused), not ``completed``."""
    await node.start_workflow(app.reads_the_events_of_a_linked_child, False, id="p")
    with trio.fail_after(5), pytest.raises(garrison.WorkflowFailed,
                                           match=r"LinkedProcessFailed.*the child failed"):
        await node.workflow("p").result()


async def test_a_linked_childs_failure_while_down_ends_a_parent_waiting_on_its_events(
        store_spec: str, autojump_clock: Any) -> None:
    """The same on replay: the child failed while the node was down (its EXIT is in the
    parent's inbox); the resumed parent is ended by the link, not by what it reads."""
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.reads_the_events_of_a_linked_child, True, id="p")
        await wait_status(node.workflow("p"), "waiting")
        await wait_status(node.workflow("p.1"), "waiting")
    error = '{"type": "RuntimeError", "message": "told to fail", "traceback": ""}'
    sql(db, "UPDATE workflows SET status = 'failed', error = ? WHERE workflow_id = 'p.1'",
        (error,))
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5), pytest.raises(garrison.WorkflowFailed,
                                               match=r"LinkedProcessFailed.*told to fail"):
            await node.workflow("p").result()


@pytest.mark.parametrize("restart", [False, True])
async def test_links_of_a_run_end_with_it_at_continue_as_new(
        store_spec: str, autojump_clock: Any, restart: bool) -> None:
    """A run that continues as new ends, and its links with it (its journal, which made
    them, is gone: a node resuming the new run could not make them again): the old
    run's linked child failing later does not end the new run, whether the node ran on
    or was restarted in between."""
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.continues_past_a_linked_child, 0, id="p")
        await wait_status(node.workflow("p"), "waiting")
        if not restart:
            with trio.fail_after(5):
                assert await node.workflow("p").result() == "run 1 got EXIT RuntimeError"
            return
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5):
            assert await node.workflow("p").result() == "run 1 got EXIT RuntimeError"


async def test_a_trapping_parent_gets_its_linked_childs_link_down(
        node: garrison.Node, autojump_clock: Any) -> None:
    await node.start_workflow(app.traps_a_linked_child, id="p")
    with trio.fail_after(5):
        kinds = await node.workflow("p").result()
    assert sorted(kinds) == [["EXIT", "RuntimeError"], ["LINK_DOWN", "RuntimeError"]]


async def test_exit_delivered_before_the_restart_is_not_doubled(
        store_spec: str, autojump_clock: Any) -> None:
    """The process ended (its EXIT is in the inbox) but the workflow had not received it
    yet when the node went down: it gets that EXIT, not a noproc one."""
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.process_child, id="pc")
        assert await node.workflow("pc").result() == [True, "EXIT", "OSError: disk on fire"]
    async with garrison.open_node(store=db) as node:
        assert await node.workflow("pc").result() == [True, "EXIT", "OSError: disk on fire"]


async def test_every_workflow_monitoring_a_workflow_gets_its_exit(
        node: garrison.Node, autojump_clock: Any) -> None:
    """Inbox message ids are unique across the store: the EXIT's id names its watcher
    (the second monitor of a workflow got none)."""
    await node.start_workflow(app.fails_on_a_message, id="F")
    for wid in ("W1", "W2", "W3"):
        await node.start_workflow(app.monitors_a_workflow, "workflows/F", id=wid)
    await wait_status(node.workflow("W3"), "waiting")
    await node.send("workflows/F", "fail", None)
    with trio.fail_after(5):
        for wid in ("W1", "W2", "W3"):
            assert await node.workflow(wid).result() == ["EXIT", "RuntimeError"]


async def wait_receives(handle: garrison.WorkflowHandle, count: int) -> None:
    """Until ``count`` receives are journaled (and the workflow waits for the next)."""
    with trio.fail_after(5):
        while sum(r.kind == "receive" for r in handle.history()) < count or \
                handle.status() != "waiting":
            await trio.sleep(0.001)


@pytest.mark.parametrize("kind", ["link", "monitor"])
@pytest.mark.parametrize("restarts", ["none", "two", "old ids"])
async def test_each_link_or_monitor_of_a_dead_process_gets_its_own_event(
        store_spec: str, autojump_clock: Any, kind: str, restarts: str) -> None:
    """Each link (trapping) or monitor of a dead process yields its own ``noproc``, as
    in Erlang: a second one had the inbox id of the first (one per process, kind and
    workflow), dropped as delivered already. A restart between the two and one after
    both make no third: a recovery's ``noproc`` has the id of the operation's own, or
    finds the event under the id one per process (``old ids``: as a store of before
    has the first)."""
    db = store_spec
    event = "LINK_DOWN" if kind == "link" else "EXIT"
    async with garrison.open_node(store=db) as node:
        dead = await node.spawn(app.quick_process, host="processes")
        await node.wait(dead)
        await node.start_workflow(app.signals_a_dead_process_twice, str(dead), kind, id="s")
        await wait_receives(node.workflow("s"), 0)
        await node.send("workflows/s", "go", None)  # the first link or monitor
        await wait_receives(node.workflow("s"), 2)
        if restarts == "none":
            await node.send("workflows/s", "go", None)
            await wait_receives(node.workflow("s"), 4)
            await node.send("workflows/s", "go", None)
            with trio.fail_after(120):
                got = await node.workflow("s").result()
    if restarts != "none":
        if restarts == "old ids":
            sql(db, "UPDATE inbox SET msg_id = ? WHERE workflow_id = 's' AND kind = 'event'",
                (f"{dead}#{event}@s",))
        async with garrison.open_node(store=db) as node:
            await wait_receives(node.workflow("s"), 2)
            await node.send("workflows/s", "go", None)  # the second
            await wait_receives(node.workflow("s"), 4)
        async with garrison.open_node(store=db) as node:
            await wait_receives(node.workflow("s"), 4)
            await node.send("workflows/s", "go", None)
            with trio.fail_after(120):
                got = await node.workflow("s").result()
    assert got == [[event, True, "noproc"], [event, True, "noproc"], None]
    events = sql(db, "SELECT msg_id FROM inbox WHERE workflow_id = 's' AND kind = 'event'")
    assert len(events) == 2, events


# (a link no longer carries into a continued run: see
# test_links_of_a_run_end_with_it_at_continue_as_new)
@pytest.mark.parametrize("kind", ["monitor"])
async def test_a_link_or_monitor_carried_into_a_continued_run_keeps_its_own_event_id(
        store_spec: str, autojump_clock: Any, kind: str) -> None:
    """A link or monitor the first run made, whose event comes in the run continued as
    new, named its event by its seq and the run the event came in: a second link or
    monitor of the (dead) process at that seq of the new run got the same inbox id,
    and its ``noproc`` was dropped as delivered."""
    db = store_spec
    event = "LINK_DOWN" if kind == "link" else "EXIT"
    async with garrison.open_node(store=db) as node:
        target = await node.spawn(app.fails_on_a_message, host="processes")
        await node.start_workflow(app.signals_across_a_continue, str(target), kind, 1,
                                  id="c")
        await wait_receives(node.workflow("c"), 0)
        await node.send("workflows/c", "go", None)
        with trio.fail_after(5):
            while [r.kind for r in node.workflow("c").history()] != ["continued"] or \
                    node.workflow("c").status() != "waiting":
                await trio.sleep(0.001)  # (the new run waits for the event)
        await node.send(target, "fail", None)
        with trio.fail_after(120):
            got = await node.workflow("c").result()
    assert got == [[event, "RuntimeError"], [event, "noproc"]]
