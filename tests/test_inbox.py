import pytest
import trio
import workflow_app as app

import garrison
from garrison import process


async def test_receive_try_receive_and_timeout(node, autojump_clock):
    async def proc():
        box = process.inbox()
        assert box.try_receive() is None
        t0 = trio.current_time()
        assert await box.receive(timeout="2s") is None
        assert trio.current_time() - t0 == 2.0
        first = await box.receive()
        await trio.sleep(1)
        assert box.try_receive().payload == 2
        return first.payload

    pid = await node.spawn(proc)
    await trio.sleep(5)
    await node.send(pid, "n", 1)
    await node.send(pid, "n", 2)
    assert await node.wait(pid) == 1


async def test_async_iteration(node, autojump_clock):
    async def proc():
        got = []
        async for msg in process.inbox():
            if msg.topic == "stop":
                return got
            got.append(msg.payload)

    pid = await node.spawn(proc)
    for i in range(5):
        await node.send(pid, "n", i)
    await node.send(pid, "stop")
    assert await node.wait(pid) == [0, 1, 2, 3, 4]


async def test_an_item_put_that_is_an_outcome_reaches_its_receiver_as_it_is(
        node, autojump_clock):
    """A receiver parked on an inbox is woken with the item itself, and by trio's
    cancellation with an outcome: an item that is an outcome (``Inbox.put`` is a public
    method: a process may put anything back in its own inbox) was taken for a wake-up,
    an ``outcome.Error`` raised its exception in the receiver and an ``outcome.Value``
    came unwrapped. Each one reaches the receiver as it was put, whichever way it
    waits."""
    import outcome

    items = [outcome.Value(1), outcome.Error(ValueError("kept")), outcome.Value(None)]

    async def proc():
        box = process.inbox()
        got = []
        async with trio.open_nursery() as nursery:
            async def put_each():
                for item in items:
                    await trio.sleep(1)  # (the receiver has parked)
                    box.put(item)

            nursery.start_soon(put_each)
            got.append(await box.receive())
            got.append(await box.receive(timeout="10s"))
            got.append(await box.__anext__())
        return got

    got = await node.wait(await node.spawn(proc))
    assert len(got) == len(items) and all(a is b for a, b in zip(got, items, strict=True)), got


async def test_listen_moves_waiting_messages_and_filters(node, autojump_clock):
    async def proc():
        await trio.sleep(1)  # let the four messages arrive first
        box = process.listen("b")
        got_b = [box.try_receive().payload, box.try_receive().payload]
        assert box.try_receive() is None
        general = process.inbox()
        got_a = [general.try_receive().payload, general.try_receive().payload]
        assert general.try_receive() is None
        # later messages of the topic go to the topic inbox only
        late = await box.receive()
        assert process.listen("b") is box
        return got_a, got_b, late.payload

    pid = await node.spawn(proc)
    for topic, n in [("a", 1), ("b", 2), ("a", 3), ("b", 4)]:
        await node.send(pid, topic, n)
    await trio.sleep(2)
    await node.send(pid, "b", 5)
    assert await node.wait(pid) == ([1, 3], [2, 4], 5)


async def test_events_are_queued_from_start(node, autojump_clock):
    async def child():
        return "done"

    async def proc():
        await process.spawn_monitored(child)
        await trio.sleep(1)  # the EXIT arrives before we ask for events()
        ev = await process.events().receive()
        return ev.kind, ev.result

    assert await node.wait(await node.spawn(proc)) == ("EXIT", "done")


async def test_receive_timeout_accepts_numbers(node, autojump_clock):
    async def proc():
        t0 = trio.current_time()
        assert await process.inbox().receive(timeout=0.25) is None
        return trio.current_time() - t0

    assert await node.wait(await node.spawn(proc)) == 0.25


async def test_busy_receiver_does_not_starve_others(node, autojump_clock):
    """A process that always finds a message waiting still yields to others."""
    ticks = []

    async def ticker():
        for _ in range(3):
            ticks.append(1)
            await trio.lowlevel.checkpoint()

    async def busy():
        box = process.inbox()
        for i in range(5000):
            await process.send(process.pid(), "x", i)
            await box.receive()
        return len(ticks)

    await node.spawn(ticker)
    assert await node.wait(await node.spawn(busy)) == 3


# ---------------------------------------------------------------- visibility
# An inbox has no limit (send never blocks); what waits is visible in node.stats()
# and node.process_info(), and an inbox that passes open_node(inbox_warning=...)
# logs one warning, armed again once it drains below half.


async def _holder(n_events: int = 0) -> None:
    """Reads nothing until told (a call with topic 'drain' and how many to keep)."""
    process.register("holder")
    for _ in range(n_events):
        await process.spawn_monitored(_quick)
    await trio.sleep_forever()


async def _quick() -> None:
    return None


async def test_stats_show_what_waits_and_where(node, autojump_clock):
    assert (node.stats()["queued"], node.stats()["largest_inbox"],
            node.stats()["largest_inbox_pid"]) == (0, 0, None)
    big = await node.spawn(_holder, 3)
    small = await node.spawn(trio.sleep_forever)
    await trio.sleep(1)
    for i in range(50):
        await node.send(big, "m", i)
    for i in range(10):
        await node.send(small, "m", i)
    stats = node.stats()
    assert (stats["queued"], stats["largest_inbox"], stats["largest_inbox_pid"]) == (63, 53, big)


async def test_process_info(node, autojump_clock):
    async def watcher(target):
        process.register("watcher")
        process.link(target)
        process.monitor(target)
        process.listen("urgent")
        process.events()
        await trio.sleep_forever()

    target = await node.spawn(_holder, 2)
    w = await node.spawn(watcher, target)
    await trio.sleep(1)
    await node.send(w, "urgent")
    await node.send(w, "later")
    await node.send(w, "later")
    info = node.process_info("watcher")
    assert info == garrison.ProcessInfo(
        pid=w, alive=True, label="test_process_info.<locals>.watcher", parent=None,
        queued=3, events=0, links=frozenset({target}), monitors=frozenset({target}),
        monitored_by=frozenset(), names=("watcher",), trap_links=False, reads_events=True)
    t = node.process_info(str(target))
    assert (t.queued, t.events, t.links, t.monitored_by, t.names) == (
        0, 2, frozenset({w}), frozenset({w}), ("holder",))
    await node.send(w, "x")  # process_info is a snapshot
    assert info.queued == 3 and node.process_info(w).queued == 4
    gone = await node.spawn(_quick)
    await node.wait(gone)
    assert node.process_info(gone) == garrison.ProcessInfo(pid=gone, alive=False)
    wf = await node.start_workflow(app.receiver, id="pi")
    with pytest.raises(ValueError, match=r"'workflows' is a workflow host; use node.workflow"):
        node.process_info(wf)
    with pytest.raises(garrison.NoSuchProcess):
        node.process_info("nobody")


async def test_processes_lists_every_live_process_with_its_parent(node, autojump_clock):
    async def leaf():
        await trio.sleep_forever()

    async def branch():
        await process.spawn(leaf)
        await process.spawn(leaf)
        await trio.sleep_forever()

    assert node.processes() == []
    root = await node.spawn(branch)
    await node.start_workflow(app.receiver, id="not-a-process")
    await trio.sleep(1)
    infos = node.processes()
    assert infos[0].pid == root and len(infos) == 3  # start order, no workflow
    assert [i.parent for i in infos] == [None, root, root]
    assert all(i.alive for i in infos) and infos[0] == node.process_info(root)
    await node.wait(await node.spawn(_quick))
    assert len(node.processes()) == 3  # ended processes are gone


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "garrison.process" and "no limit" in r.getMessage()]


async def test_inbox_warning_once_then_rearmed_after_draining(autojump_clock, caplog):
    async def slow_reader():  # reads its inbox only when told, down to what it is told
        box = process.inbox()
        async for msg in process.listen("drain"):
            while len(box) > msg.payload:
                box.try_receive()
            await msg.reply(len(box))

    async with garrison.open_node(inbox_warning=100) as node:
        pid = await node.spawn(trio.sleep_forever)
        for i in range(99):
            await node.send(pid, "m", i)
        assert _warnings(caplog) == []
        await node.send(pid, "m", 99)
        assert _warnings(caplog) == [
            f"sleep_forever {pid} has 100 messages waiting in its inbox: an inbox has no "
            "limit (send never blocks), so a process that does not keep up grows without "
            "bound (warned again once this inbox has drained below 50)"]
        for i in range(1000):
            await node.send(pid, "m", i)
        assert len(_warnings(caplog)) == 1  # once, not per message

        reader = await node.spawn(slow_reader)
        for i in range(150):
            await node.send(reader, "m", i)
        assert len(_warnings(caplog)) == 2
        assert await node.call(reader, "drain", 60) == 60  # not below half: still warned
        for i in range(100):
            await node.send(reader, "m", i)
        assert len(_warnings(caplog)) == 2
        assert await node.call(reader, "drain", 49) == 49  # below half: armed again
        for i in range(50):
            await node.send(reader, "m", i)
        assert len(_warnings(caplog)) == 2
        await node.send(reader, "m", 0)
        assert len(_warnings(caplog)) == 3
        assert node.stats()["largest_inbox_pid"] == pid


async def test_inbox_warning_names_the_inbox_and_can_be_turned_off(autojump_clock, caplog):
    async def listener():
        process.listen("jobs")
        process.events()
        for _ in range(3):
            await process.spawn_monitored(_quick)
        await trio.sleep_forever()

    async with garrison.open_node(inbox_warning=3) as node:
        pid = await node.spawn(listener)
        await trio.sleep(1)
        for _ in range(3):
            await node.send(pid, "jobs")
        got = _warnings(caplog)
        assert len(got) == 2
        assert "has 3 events waiting in its events()" in got[0]
        assert "has 3 messages waiting in its listen('jobs') inbox" in got[1]
    caplog.clear()
    for off in (0, None):
        async with garrison.open_node(inbox_warning=off) as node:
            pid = await node.spawn(trio.sleep_forever)
            for i in range(20_000):
                await node.send(pid, "m", i)
            assert node.stats()["queued"] == 20_000
    assert _warnings(caplog) == []
    with pytest.raises(ValueError, match="inbox_warning must be a whole number"):
        async with garrison.open_node(inbox_warning=-1):
            pass


async def test_default_inbox_warning_is_10_000(node, autojump_clock, caplog):
    pid = await node.spawn(trio.sleep_forever)
    for i in range(9_999):
        await node.send(pid, "m", i)
    assert _warnings(caplog) == []
    await node.send(pid, "m", 0)
    assert len(_warnings(caplog)) == 1


async def test_an_inbox_is_its_own_process_s_only(node, autojump_clock):
    """helper-212: an inbox kept past its process (a handler object that caches
    ``process.inbox()``, run again by a supervisor) was read by the next process: it
    waited for ever on the dead one's inbox while its own filled, and a live process's
    inbox could be emptied by another. Any use of an inbox outside its own process is a
    ``RuntimeError`` saying whose it is; the process's own tasks (a nursery in it) and
    a ``listen``/``events`` inbox are the process's too."""
    kept: dict[str, object] = {}

    async def first():
        kept["inbox"] = process.inbox()
        kept["events"] = process.events()
        kept["topic"] = process.listen("t")
        async with trio.open_nursery() as nursery:  # (the process's own tasks: fine)
            nursery.start_soon(process.inbox().receive, 0)
        return process.pid()

    async def second(which: str, how: str):
        box = kept[which]
        if how == "receive":
            return await box.receive(timeout="1s")
        if how == "try":
            return box.try_receive()
        async for msg in box:
            return msg

    owner = await node.wait(await node.spawn(first))
    for which in ("inbox", "events", "topic"):
        for how in ("receive", "try", "iterate"):
            pid = await node.spawn(second, which, how)
            with pytest.raises(garrison.ProcessError) as failed:
                await node.wait(pid)
            assert str(failed.value).endswith(
                f"RuntimeError: an inbox of process {owner}, which has ended, was used by "
                f"process {pid}: process.inbox(), listen() and events() give the calling "
                "process's own inboxes; get them again in each process (a restarted "
                "process is a new process)"), str(failed.value)

    async def holder():
        kept["live"] = process.inbox()
        await trio.sleep(10)
        return kept["live"].try_receive().payload

    alive = await node.spawn(holder)
    await trio.sleep(1)
    await node.send(alive, "n", 7)
    thief = await node.spawn(second, "live", "try")
    with pytest.raises(garrison.ProcessError, match=f"an inbox of process {alive} was used by "
                                                    f"process {thief}"):
        await node.wait(thief)
    assert await node.wait(alive) == 7
    with pytest.raises(RuntimeError, match="was used outside any process"):
        kept["live"].try_receive()
