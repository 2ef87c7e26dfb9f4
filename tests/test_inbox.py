import trio

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
