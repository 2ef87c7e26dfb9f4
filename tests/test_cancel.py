import pytest
import trio

from garrison import EventKind, ProcessError, process


async def test_cancel_lets_process_clean_up(node, autojump_clock):
    log = []

    async def worker():
        ev = await process.events().receive()
        assert ev.kind == EventKind.CANCEL
        log.append(("cancel from", ev.pid))
        await trio.sleep(1)  # cleanup takes a while but less than the timeout
        log.append("cleaned")
        return "stopped cleanly"

    async def boss(w):
        t0 = trio.current_time()
        await process.cancel(w, timeout="5s")
        return trio.current_time() - t0, process.pid()

    w = await node.spawn(worker)
    took, boss_pid = await node.wait(await node.spawn(boss, w))
    assert took == 1
    assert log == [("cancel from", boss_pid), "cleaned"]
    assert await node.wait(w) == "stopped cleanly"


async def test_cancel_escalates_to_terminate(node, autojump_clock):
    async def stubborn():
        await trio.sleep_forever()

    async def boss(w):
        t0 = trio.current_time()
        await process.cancel(w, timeout="3s")
        return trio.current_time() - t0

    w = await node.spawn(stubborn)
    assert await node.wait(await node.spawn(boss, w)) == 3
    with pytest.raises(ProcessError) as info:
        await node.wait(w)
    assert info.value.error.type == "Terminated"
    assert "did not stop within 3s" in info.value.error.message


async def test_terminate_is_immediate_even_when_shielded_work_is_pending(node, autojump_clock):
    async def victim():
        await trio.sleep_forever()

    async def killer(v):
        t0 = trio.current_time()
        await process.terminate(v)
        await process.terminate(v)  # already gone: no error
        return trio.current_time() - t0

    v = await node.spawn(victim)
    assert await node.wait(await node.spawn(killer, v)) == 0
    with pytest.raises(ProcessError, match="Terminated"):
        await node.wait(v)


async def test_cancel_of_dead_process_returns(node, autojump_clock):
    async def quick():
        return 1

    async def boss(q):
        await process.cancel(q)
        return "ok"

    q = await node.spawn(quick)
    await node.wait(q)
    assert await node.wait(await node.spawn(boss, q)) == "ok"


async def test_terminate_before_first_run(node, autojump_clock):
    async def never():
        raise AssertionError("must not run")

    async def boss():
        v = await process.spawn(never)
        await process.terminate(v)
        return v

    v = await node.wait(await node.spawn(boss))
    with pytest.raises(ProcessError, match="Terminated"):
        await node.wait(v)
