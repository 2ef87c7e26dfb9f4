import pytest
import trio
import trio.testing

from garrison import NoSuchProcess, process


async def test_fifo_per_sender_and_sender_field(node, autojump_clock):
    async def sink(n):
        box = process.inbox()
        return [(m.sender, m.payload) for m in [await box.receive() for _ in range(n)]]

    async def source(to, tag):
        for i in range(100):
            await process.send(to, tag, i)
        return process.pid()

    s = await node.spawn(sink, 200)
    a = await node.spawn(source, s, "a")
    b = await node.spawn(source, s, "b")
    got = await node.wait(s)
    pa, pb = await node.wait(a), await node.wait(b)
    assert [p for who, p in got if who == pa] == list(range(100))
    assert [p for who, p in got if who == pb] == list(range(100))


async def test_dead_letters_counted_and_message_ids_unique(node, autojump_clock):
    async def quick():
        return None

    pid = await node.spawn(quick)
    await node.wait(pid)
    before = node.stats()["dead_letters"]
    await node.send(pid, "hello")
    assert node.stats()["dead_letters"] == before + 1

    async def collect():
        box = process.inbox()
        return [(await box.receive()).id for _ in range(3)]

    c = await node.spawn(collect)
    for _ in range(3):
        await node.send(c, "x")
    ids = await node.wait(c)
    assert len(set(ids)) == 3 and all(ids)


async def test_send_to_unknown_name_raises(node, autojump_clock):
    with pytest.raises(NoSuchProcess, match="nobody"):
        await node.send("nobody", "x")

    async def proc():
        with pytest.raises(NoSuchProcess):
            await process.send("nobody", "x")
        return "ok"

    assert await node.wait(await node.spawn(proc)) == "ok"


async def test_register_lookup_and_release_before_exit(node, autojump_clock):
    async def named():
        process.register("svc")
        process.register("svc")  # idempotent for the holder
        await process.inbox().receive()
        raise RuntimeError("bye")

    async def rival():
        with pytest.raises(ValueError, match="already registered by"):
            process.register("svc")
        return "refused"

    async def watcher(target):
        process.monitor(target)
        await process.events().receive()
        # the name is released before the EXIT is delivered
        return process.lookup("svc")

    pid = await node.spawn(named)
    await trio.testing.wait_all_tasks_blocked()  # it has run up to its receive
    assert node.lookup("svc") == pid
    assert await node.wait(await node.spawn(rival)) == "refused"
    w = await node.spawn(watcher, pid)
    await trio.testing.wait_all_tasks_blocked()  # it monitors the holder
    await node.send("svc", "go")
    assert await node.wait(w) is None
    assert node.lookup("svc") is None


async def test_unregister(node, autojump_clock):
    async def proc():
        process.register("n1")
        assert process.lookup("n1") == process.pid()
        process.unregister("n1")
        return process.lookup("n1")

    assert await node.wait(await node.spawn(proc)) is None


async def test_stats_count_messages_and_processes(node, autojump_clock):
    async def idle():
        await process.inbox().receive()

    pid = await node.spawn(idle)
    s = node.stats()
    assert s["processes"] >= 1
    before = s["messages"]
    await node.send(pid, "go")
    await node.wait(pid)
    assert node.stats()["messages"] == before + 1
    assert node.stats()["processes"] == 0
