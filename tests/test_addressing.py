"""Addressing: a pid's text form is accepted wherever a pid is; topics are str."""

from __future__ import annotations

import enum
import os

import pytest
import trio
import workflow_app as app

import garrison
from garrison import EventKind, NoSuchProcess, Pid, ProcessError, ProcessInfo, process


async def _echo() -> None:
    async for msg in process.inbox():
        if msg.call_ref is not None:
            await msg.reply(msg.payload)


async def _sleeper() -> None:
    await trio.sleep_forever()


async def _returns(value: object) -> object:
    return value


# ------------------------------------------------------------------ pid text form
async def test_pid_text_is_accepted_everywhere(node, autojump_clock):
    async def main() -> list[object]:
        out: list[object] = []
        e = str(await process.spawn(_echo))
        await process.send(e, "hello")
        out.append(await process.call(e, "q", 7))
        process.monitor(str(await process.spawn(_returns, "done")))
        ev = await process.events().receive()
        out.append((ev.kind, ev.result))
        process.set_options(trap_links=True)
        s = str(await process.spawn(_sleeper))
        process.link(s)
        await process.terminate(s)
        ev = await process.events().receive()
        out.append((ev.kind, ev.error.type))
        c = await process.spawn(_sleeper)
        process.monitor(c)
        await process.cancel(str(c), timeout=1)
        ev = await process.events().receive()
        out.append((ev.kind, ev.pid == c))
        process.unlink(s)
        process.demonitor(e)
        return out

    assert await node.wait(str(await node.spawn(main))) == [
        7, (EventKind.EXIT, "done"), (EventKind.LINK_DOWN, "Terminated"), (EventKind.EXIT, True)]
    pid = await node.spawn(_echo)
    await node.send(str(pid), "x")
    assert node.resolve(str(pid)) == pid


async def test_pid_text_of_a_workflow_reaches_it(node, autojump_clock):
    wf = await node.start_workflow(app.receiver, id="t")

    async def forward(to: str) -> None:  # the pid arrived as a plain string
        await process.send(to, "approve", {"by": "ann"})

    await node.wait(await node.spawn(forward, str(wf)))
    assert str(wf) == "workflows/t"
    assert await node.workflow("t").result() == ["approve", {"by": "ann"}]
    assert await node.wait("workflows/t") == ["approve", {"by": "ann"}]


async def test_pid_text_of_a_dead_process_is_a_dead_letter(node, autojump_clock):
    pid = await node.spawn(_returns, 1)
    await node.wait(pid)
    before = node.stats()["dead_letters"]
    await node.send(str(pid), "late")
    assert node.stats()["dead_letters"] == before + 1
    await node.send("nowhere/1", "late")  # a host this node does not have
    assert node.stats()["dead_letters"] == before + 2


async def test_a_pid_of_an_earlier_node_run_names_no_process_of_a_later_one(
        autojump_clock, monkeypatch):
    """A plain pid is ``<host>/<incarnation>.<serial>``, its incarnation drawn as the
    node opens. It had 32 random bits: a pid kept from an earlier run (in a workflow's
    state, a store's row) named a live process of a later run whose 32 bits agreed (one
    time in two within some 77,000 runs: a client node per web request), the same
    serial counted again, so a send meant for a process long gone reached another."""
    real = os.urandom

    def agreeing(n: int) -> bytes:  # (two runs whose first 32 bits agree)
        return b"\xab\xcd\xef\x01" + real(n - 4) if n >= 4 else real(n)

    monkeypatch.setattr(os, "urandom", agreeing)
    async with garrison.open_node() as node:
        old = await node.spawn(_sleeper)
    async with garrison.open_node() as node:
        new = await node.spawn(_echo)
        assert new.id.rsplit(".", 1)[1] == old.id.rsplit(".", 1)[1]  # (its serial)
        assert not node.process_info(old).alive
        before = node.stats()["dead_letters"]
        await node.send(str(old), "for the process of the earlier run")
        assert node.stats()["dead_letters"] == before + 1
        assert node.process_info(new).queued == 0
        assert len(new.id.split(".")[0]) == 16, new  # 64 bits, in hex


async def test_bad_pid_text_and_names_with_a_slash(node, autojump_clock):
    with pytest.raises(ValueError, match="cannot parse a pid from '/x'"):
        await node.send("/x", "t")
    with pytest.raises(NoSuchProcess):
        await node.send("nobody", "t")

    async def registers(name: str) -> None:
        process.register(name)

    with pytest.raises(ProcessError, match="must not contain '/'"):
        await node.wait(await node.spawn(registers, "a/b"))
    # a name with spaces around it or a control character was taken: a lookup or send
    # by the name as anyone writes it ('x') then found nothing
    for name in (" x ", "x\n", "a\tb"):
        with pytest.raises(ProcessError, match=(
                r"a registered name is printable text \(no newline, tab or other control "
                r"character\) without leading or trailing spaces")):
            await node.wait(await node.spawn(registers, name))
    await node.wait(await node.spawn(registers, "order service"))  # inner spaces: taken


async def test_a_pid_of_a_host_this_node_lacks_names_no_process(node, autojump_clock):
    # as a dead pid of a known host (a dead letter, noproc): wait, cancel and
    # terminate raised ValueError('no host named ...') for it instead
    with pytest.raises(ProcessError, match="noproc") as exc:
        await node.wait("nowhere/1")
    assert exc.value.error.type == "noproc"

    async def stops(to: str) -> str:
        await process.cancel(to)
        await process.terminate(to)
        return "done"

    assert await node.wait(await node.spawn(stops, "nowhere/1")) == "done"
    # process_info reads it as it reads a dead pid (it raised "no host named 'nowhere'")
    assert node.process_info("nowhere/1") == ProcessInfo(Pid("nowhere", "1"), alive=False)


async def test_wrong_types_for_hosts_names_and_options_are_named(node, autojump_clock):
    # these gave "TypeError: unhashable type: 'list'" from deep inside, and
    # set_options(trap_links="no") silently trapped links
    with pytest.raises(TypeError, match=r"a host is named by a str, got list: \['x'\]"):
        await node.spawn(_sleeper, host=["x"])
    with pytest.raises(TypeError, match="a host is named by a str, got int: 5"):
        await node.spawn(_sleeper, host=5)
    with pytest.raises(TypeError, match=r"lookup\(\) takes a registered name \(a str\), got list"):
        node.lookup([1])

    async def misuses() -> list[str]:
        out = []
        for call in (lambda: process.spawn(_sleeper, host=["x"]), lambda: process.lookup(5),
                     lambda: process.register(5), lambda: process.unregister(5),
                     lambda: process.set_options(trap_links="no")):
            try:
                result = call()
                if hasattr(result, "__await__"):
                    await result
            except TypeError as exc:
                out.append(str(exc))
        return out

    assert await node.wait(await node.spawn(misuses)) == [
        "a host is named by a str, got list: ['x']",
        "lookup() takes a registered name (a str), got int: 5",
        "register() takes a registered name (a str), got int: 5",
        "unregister() takes a registered name (a str), got int: 5",  # (it did nothing)
        "process.set_options(trap_links=...) takes True or False, got str: 'no'",
    ]


async def test_a_coroutine_where_a_pid_goes_asks_about_a_missing_await(node, autojump_clock):
    """helper-393: ``child = process.spawn(...)`` without ``await``, then ``send(child,
    ...)`` (or link, monitor, wait) said only "got coroutine: <coroutine object spawn
    ...>". A coroutine there is a missing ``await``: the error asks."""
    import warnings

    async def forgets(how: str) -> str:
        child = process.spawn(_sleeper)  # (no await)
        try:
            if how == "send":
                await process.send(child, "hi")  # type: ignore[arg-type]
            elif how == "link":
                process.link(child)  # type: ignore[arg-type]
            else:
                process.monitor(child)  # type: ignore[arg-type]
        except TypeError as exc:
            return str(exc)
        finally:
            child.close()
        return "accepted"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for how in ("send", "link", "monitor"):
            said = await node.wait(await node.spawn(forgets, how))
            assert said.startswith("expected a Pid, its text form or a registered name, "
                                   "got coroutine: <coroutine object "), (how, said)
            assert said.endswith("(did you forget `await` on the call that made it?)"), \
                (how, said)
        made = node.spawn(_sleeper)
        with pytest.raises(TypeError, match="did you forget `await` on the call"):
            await node.wait(made)  # type: ignore[arg-type]
        made.close()
    # any other wrong type: no such question
    with pytest.raises(TypeError) as info:
        await node.wait(5)  # type: ignore[arg-type]
    assert str(info.value) == "expected a Pid, its text form or a registered name, got int: 5"


# ------------------------------------------------------------------ topics
# ------------------------------------------------------------------ topics
class Topic(enum.StrEnum):
    PING = "ping"


async def test_topic_must_be_a_str(node, autojump_clock):
    e = await node.spawn(_echo)

    async def main(topic: object, how: str) -> str:
        try:
            if how == "send":
                await process.send(e, topic)
            else:
                await process.call(e, topic)
        except TypeError as exc:
            return str(exc)
        return "accepted"

    for how in ("send", "call"):
        got = await node.wait(await node.spawn(main, 42, how))
        assert got == f"process.{how}(): a topic must be a str, got int: 42"
        got = await node.wait(await node.spawn(main, None, how))
        assert got == f"process.{how}(): a topic must be a str, got NoneType: None"
    with pytest.raises(TypeError, match=r"node.send\(\): a topic must be a str, got bytes"):
        await node.send(e, b"x")
    wf = await node.start_workflow(app.receiver, id="typed")
    with pytest.raises(TypeError, match="got int"):
        await node.send(wf, 42)
    with pytest.raises(TypeError, match="got int"):
        await node.workflow("typed").signal(42)


async def test_str_subclass_topic_becomes_a_plain_str(node, autojump_clock):
    async def receiver() -> tuple[type, str]:
        msg = await process.inbox().receive()
        return type(msg.topic), msg.topic

    pid = await node.spawn(receiver)
    await node.send(pid, Topic.PING)
    assert await node.wait(pid) == (str, "ping")


async def bad_topic_sender() -> str:
    try:
        await process.send("somebody", 42)  # type: ignore[arg-type]
    except TypeError as exc:
        return f"TypeError: {exc}"
    return "accepted"


async def test_workflow_send_with_a_bad_topic_fails_at_the_call(node, autojump_clock):
    wf = await node.start_workflow(bad_topic_sender, id="bt")
    assert await node.workflow("bt").result() == "TypeError: process.send(): a topic must " \
        "be a str, got int: 42"
    assert wf == garrison.Pid("workflows", "bt")
