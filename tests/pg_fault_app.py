"""Workflows and processes of tests/test_pg_faults.py (importable by module:qualname)."""

from __future__ import annotations

from typing import Any

import trio

import garrison
from garrison import process, workflow


@garrison.activity
async def step(i: int) -> int:
    return i


async def steps(n: int, delay: float = 0.0) -> int:
    total = 0
    for i in range(n):
        total += await step(i)
        if delay:
            await workflow.sleep(delay)
    return total


async def receiver(n: int) -> list[Any]:
    got = []
    for _ in range(n):
        m = await process.inbox().receive()
        got.append(m.payload)
    return got


async def nul_everywhere() -> list[str]:
    """Each call a workflow makes with a NUL character where the store keeps text (a
    state key, a search attribute's key and value, a promise name, a version's
    change id): what each raised. Then a step, which commits: the workflow goes on."""
    calls = {
        "set_state": lambda: workflow.set_state("k\x00", 1),
        "search key": lambda: workflow.attrs(search={"a\x00": 1}),
        "search value": lambda: workflow.attrs(search={"a": ["x\u0000y"]}),
        "promise": lambda: workflow.promise("p\x00"),
        "version": lambda: workflow.version("v\x00", 1, 2),
    }
    raised = []
    for what, call in calls.items():
        try:
            call()
        except ValueError as exc:
            assert "NUL" in str(exc), exc
            raised.append(what)
    workflow.set_state("k", 1)
    await step(0)
    return raised


async def bad_text_everywhere(bad: str, marker: str) -> list[str]:
    """Each call a workflow makes with ``bad`` where the store keeps text as a name or a
    key (a state key, a promise name, a version's change id, a message's topic): those
    that raised a ValueError saying ``marker``. Then a step, which commits: the workflow
    goes on."""
    calls: dict[str, Any] = {
        "set_state": lambda: workflow.set_state(bad, 1),
        "promise": lambda: workflow.promise(bad),
        "version": lambda: workflow.version(bad, 1, 2),
        "send": lambda: process.send("workflows/nobody", bad, 1),
        "call": lambda: process.call("workflows/nobody", bad, 1, timeout=1),
    }
    raised = []
    for what, call in calls.items():
        try:
            out = call()
            if hasattr(out, "__await__"):
                await out
        except ValueError as exc:
            if marker in str(exc):
                raised.append(what)
        except Exception as exc:  # (a send to nobody: not what this is about)
            raised.append(f"{what}: {type(exc).__name__}")
    workflow.set_state("k", 1)
    await step(0)
    return raised


async def tag_file(latin1_name: str) -> str:
    """Tags the workflow with a file name as os.listdir gives a latin-1 one on a UTF-8
    system (a lone surrogate); the type of the error the call raises, if any."""
    name = latin1_name.encode("latin-1").decode("utf-8", "surrogateescape")
    await step(0)
    try:
        workflow.attrs(search={"file": name})
    except ValueError as exc:
        await step(1)
        return type(exc).__name__
    await step(1)
    return "done"


async def holder(name: str, out: list[Any]) -> None:
    """Registers ``name`` cluster-wide; appends "ok" or the error to ``out``."""
    try:
        process.register(name, scope="cluster")
        out.append("ok")
    except Exception as exc:  # (the test looks at which one)
        out.append(exc)
    await trio.sleep_forever()


async def echo() -> None:
    """Answers every call with its payload."""
    while True:
        msg = await process.inbox().receive()
        await msg.reply(msg.payload)


async def tagged(value: Any) -> Any:
    """Tags the workflow with the search attribute ``v``."""
    workflow.attrs(search={"v": value})
    await step(0)
    return value


async def waits_for(name: str) -> Any:
    """Waits for the promise ``name``; its value."""
    return await workflow.promise(name)
