"""The fast paths of a workflow's start, end and result: what they write and return is
what the general paths give (the converter's text, its JSON shape), and they are taken
for the common values (plain arguments and results), without the converter or a
decoding of the text just made."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

import garrison
from garrison.hosts.workflow import _activities, _ids
from garrison.hosts.workflow._codec import arguments_and_plain, result_plain, workflow_result
from garrison.persistence import SQLiteStore, _converter, _sqlite, _transaction, to_json

#: arguments the fast path writes by their leaf texts: every kind of leaf, and strings
#: that JSON escapes (quotes, backslashes, control characters, beyond ASCII, beyond the
#: BMP, a lone surrogate)
PLAIN_ARGS: list[tuple[Any, ...]] = [
    (),
    (0, -7, 2**70, True, False, None),
    ("", 'a "quoted" \\ back\nslash\t', "café ☃ 😀", "\ud800 lone"),
]


async def echo_args(*args: Any) -> list[Any]:
    return list(args)


def _stored(path: Path, column: str, wid: str) -> Any:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT {column} FROM workflows WHERE workflow_id = ?",
                            (wid,)).fetchone()[0]


@pytest.mark.parametrize("args", PLAIN_ARGS)
async def test_plain_arguments_are_stored_as_the_converter_writes_them(
        tmp_path: Path, args: tuple[Any, ...]) -> None:
    """Ints, strings, booleans and ``None``: the stored text is the one the converter
    gives, and the workflow gets them as it would read them back."""
    path = tmp_path / "wf.db"
    with SQLiteStore(str(path)) as store:
        async with garrison.open_node(store=store) as node:
            await node.start_workflow(echo_args, *args, id="w")
            assert await node.workflow("w").result() == list(args)
    assert _stored(path, "input", "w") == to_json(list(args), what="the arguments")


@pytest.mark.parametrize("args", PLAIN_ARGS)
def test_plain_arguments_are_written_without_the_converter(
        monkeypatch: pytest.MonkeyPatch, args: tuple[Any, ...]) -> None:
    """They are written by their leaf texts, without the converter's pass (it fails here
    if it is called), and their JSON shape is themselves, not a decoding of the text."""
    expected = to_json(list(args), what="the arguments")
    real = _converter._converter

    class Refusing:  # the converter, but its unstructuring
        def unstructure(self, *_a: Any, **_k: Any) -> Any:
            raise AssertionError("plain arguments went through the converter")

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(_converter, "_converter", Refusing())
    text, plain = arguments_and_plain(echo_args, args, "the arguments")
    assert (text, plain) == (expected, list(args))
    assert all(a is b for a, b in zip(plain, args, strict=True))


async def test_other_arguments_still_go_through_the_converter(tmp_path: Path) -> None:
    """A float, a list or a dict among them: the general path, as before; a string
    holding a surrogate pair as two code points is refused there, naming it."""
    path = tmp_path / "wf.db"
    with SQLiteStore(str(path)) as store:
        async with garrison.open_node(store=store) as node:
            await node.start_workflow(echo_args, 1, 2.5, [1, "a"], {"k": None}, id="w")
            assert await node.workflow("w").result() == [1, 2.5, [1, "a"], {"k": None}]
            with pytest.raises(garrison.PayloadError, match="surrogate pair"):
                await node.start_workflow(echo_args, 1, "\ud83d\ude00", id="split")
    assert _stored(path, "input", "w") == '[1,2.5,[1,"a"],{"k":null}]'


async def test_run_ids_and_made_ids_are_uuid4_hex_made_without_uuid4(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start's run id, and the id of a start that names none, are the 32 hex digits of
    a random version-4 UUID, as ``uuid.uuid4().hex`` gives, made from the random bytes
    without a ``UUID`` object (``uuid.uuid4`` fails here if a start calls it)."""

    def refuse() -> uuid.UUID:
        raise AssertionError("a start made a UUID object")

    path = tmp_path / "wf.db"
    with SQLiteStore(str(path)) as store:
        async with garrison.open_node(store=store) as node:
            with monkeypatch.context() as patched:
                patched.setattr(uuid, "uuid4", refuse)
                made = [await node.start_workflow(echo_args, i) for i in range(20)]
                await node.start_workflow(echo_args, id="named")
            for pid in made:
                await node.wait(pid)
    ids = [pid.id for pid in made] + [_stored(path, "run_id", pid.id) for pid in made]
    ids.append(_stored(path, "run_id", "named"))
    assert len(set(ids)) == len(ids) == 41
    for made_id in ids:
        parsed = uuid.UUID(made_id)
        assert parsed.hex == made_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


async def test_a_start_in_a_loop_runs_on_virtual_time(autojump_clock: trio.abc.Clock,
                                                      tmp_path: Path) -> None:
    """The same starts one after another, each awaited, then every result: each as the
    loop gave it (the shape the fast paths serve)."""
    with SQLiteStore(str(tmp_path / "wf.db")) as store:
        async with garrison.open_node(store=store) as node:
            for i in range(30):
                await node.start_workflow(echo_args, i, f"s{i}", id=f"l{i}")
            for i in range(30):
                assert await node.workflow(f"l{i}").result() == [i, f"s{i}"]


# ------------------------------------------------------------------ the end, the result
LEAF_RESULTS: list[Any] = [0, -12, 2**80, "", 'a "b" \\ café 😀', True, False, None]


async def returns(value: Any) -> Any:
    return value


@pytest.mark.parametrize("value", LEAF_RESULTS)
def test_a_plain_result_is_written_without_the_converter(
        monkeypatch: pytest.MonkeyPatch, value: Any) -> None:
    """An int, a string, a boolean or ``None`` a workflow returns is written by its leaf
    text (the converter fails here if it is called) and is its own JSON shape."""
    expected = to_json(value, what="the result")
    real = _converter._converter

    class Refusing:  # the converter, but its unstructuring
        def unstructure(self, *_a: Any, **_k: Any) -> Any:
            raise AssertionError("a plain result went through the converter")

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(_converter, "_converter", Refusing())
    text, plain, refused = workflow_result(returns, "w", "returns", value)
    assert (text, refused) == (expected, None)
    assert plain is value


@pytest.mark.parametrize("text", [
    "0", "7", "-7", "123456789012345678901234567890", "-0", "", "-", "1.5", "-1.5e3",
    "1e5", '"12"', "true", "false", "null", "[1]", '{"a":1}', "\u0663", "-\u0663", "0x1", "007",
    "-01", "00",
])
def test_a_stored_result_is_read_as_json_reads_it(text: str) -> None:
    """An int's text is read by ``int``: the same value as ``json.loads`` gives, and for
    any other text (a non-ASCII digit included) what ``json.loads`` gives or raises."""
    try:
        expected = json.loads(text)
    except ValueError as exc:
        with pytest.raises(type(exc)):
            result_plain(text)
        return
    got = result_plain(text)
    assert got == expected
    assert type(got) is type(expected)


async def test_results_of_every_kind_are_as_stored(tmp_path: Path) -> None:
    """What ``result()`` returns, on the node that ran the workflow and from the store
    after a restart, and the stored text, are the converter's, whatever the kind."""
    path = tmp_path / "wf.db"
    values = [*LEAF_RESULTS, 2.5, [1, "a", None], {"k": [True]}]
    with SQLiteStore(str(path)) as store:
        async with garrison.open_node(store=store) as node:
            for i, value in enumerate(values):
                await node.start_workflow(returns, value, id=f"r{i}")
            for i, value in enumerate(values):
                assert await node.workflow(f"r{i}").result() == value
    for i, value in enumerate(values):
        assert _stored(path, "result", f"r{i}") == to_json(value, what="the result")
    with SQLiteStore(str(path)) as store:
        async with garrison.open_node(store=store) as node:
            for i, value in enumerate(values):
                got = await node.workflow(f"r{i}").result()
                assert got == value
                assert type(got) is type(value)


# ------------------------------------------------------------------ a step
@garrison.activity
async def plus_one(x: int) -> int:
    return x + 1


async def ten_steps(x: int) -> int:
    for _ in range(10):
        x = await plus_one(x)
    return x


async def test_a_step_asks_whether_its_activity_is_async_once_per_function(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether an activity is an ``async def`` function is kept with its return hints
    from its first step on: a step does not ask it again (twice, as it did: a call and
    a cache lookup each time)."""
    asked: list[Any] = []
    real = _activities._is_async

    def counting(fn: Any) -> bool:
        if fn is plus_one.__wrapped__:
            asked.append(fn)
        return real(fn)

    monkeypatch.setattr(_activities, "_is_async", counting)
    monkeypatch.setattr(_activities, "_RETURN_HINTS", {})
    with SQLiteStore(str(tmp_path / "wf.db")) as store:
        async with garrison.open_node(store=store) as node:
            for i in range(3):
                await node.start_workflow(ten_steps, i, id=f"t{i}")
                assert await node.workflow(f"t{i}").result() == i + 10
            assert len(node.workflow("t0").history()) == 10
    assert len(asked) == 1, len(asked)


# ------------------------------------------------------------------ the rows
async def test_the_create_and_the_end_write_their_row_by_statements_made_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start names its status by the enum (no parsing of its text: it fails here if
    asked), and a workflow's end writes its row by the UPDATE made once for the
    columns it sets; the rows are as before."""

    def refuse(value: object) -> Any:
        raise AssertionError(f"a start parsed its status {value!r}")

    monkeypatch.setattr(_transaction, "parse_status", refuse)
    monkeypatch.setattr(_sqlite, "_UPDATES", {})
    path = tmp_path / "wf.db"
    with SQLiteStore(str(path)) as store:
        async with garrison.open_node(store=store) as node:
            for i in range(3):
                await node.start_workflow(ten_steps, i, id=f"u{i}")
                assert await node.workflow(f"u{i}").result() == i + 10
    assert _sqlite._UPDATES == {("status", "result", "error"): (
        "UPDATE workflows SET updated = ?, status = ?, result = ?, error = ? "
        "WHERE workflow_id = ?")}
    for i in range(3):
        assert (_stored(path, "status", f"u{i}"), _stored(path, "result", f"u{i}"),
                _stored(path, "error", f"u{i}")) == ("completed", str(i + 10), None)


# ------------------------------------------------------------------ run ids
def test_run_ids_read_their_random_bytes_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ids take their 16 random bytes each from blocks read by one ``os.urandom``
    call for many ids, not one call a start; all distinct, each a version-4 UUID."""
    reads: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        reads.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", counting)
    monkeypatch.setattr(_ids, "_random", [])
    made = [_ids.new_run_id() for _ in range(3 * _ids._RANDOM_IDS)]
    assert reads == [16 * _ids._RANDOM_IDS] * 3
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(m).version == 4 and uuid.UUID(m).hex == m for m in made)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
def test_a_forked_child_makes_other_run_ids_than_its_parent() -> None:
    """The bytes read ahead are dropped in a forked child: it and its parent, which
    keeps them, never make the same ids."""
    _ids.new_run_id()  # (the parent holds bytes read ahead)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        try:
            os.write(write, " ".join(_ids.new_run_id() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(child, 0)
    ours = {_ids.new_run_id() for _ in range(5)}
    assert len(theirs) == 5
    assert not ours & theirs


class Adder:
    """An activity that is an object with an ``async def __call__`` (a client, say)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, x: int, y: int = 1) -> int:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        return x + y


ADDER = Adder()


async def calls_an_object(x: int) -> list[int]:
    return [await garrison.workflow.call(ADDER, x),
            await garrison.workflow.call(functools.partial(ADDER, y=10), x),
            await garrison.workflow.call(ADDER, x, timeout="5s")]


async def test_an_object_with_an_async_call_is_awaited_as_an_activity(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    """An object whose ``__call__`` is an ``async def`` (as a process target may be), or
    a partial of one, is awaited as an ``async def`` activity is, once, and its result
    recorded; it was run in a worker thread, where its coroutine failed every attempt
    with trio's 'expected a sync function' until the workflow failed."""
    ADDER.calls = 0
    with SQLiteStore(str(tmp_path / "wf.db")) as store:
        async with garrison.open_node(store=store) as node:
            await node.start_workflow(calls_an_object, 5, id="o")
            assert await node.workflow("o").result() == [6, 15, 6]
            assert [r.outcome for r in node.workflow("o").history()] == [
                {"ok": 6}, {"ok": 15}, {"ok": 6}]
    assert ADDER.calls == 3


@dataclasses.dataclass
class Client:
    """An activity that is an unhashable object (a dataclass's ``__eq__`` drops its
    hash) with an ``async def __call__``."""

    base: int

    async def __call__(self, x: int) -> int:
        await trio.lowlevel.checkpoint()
        return self.base + x


@dataclasses.dataclass
class SyncClient:
    base: int

    def __call__(self, x: int) -> int:
        return self.base + x


@dataclasses.dataclass(frozen=True)
class ListClient:
    """Hashable as its fields are: not with a list among them."""

    bases: list[int]

    async def __call__(self, x: int) -> int:
        return sum(self.bases) + x


async def calls_unhashable(x: int) -> list[int]:
    return [await garrison.workflow.call(Client(1), x),
            await garrison.workflow.call(Client(2), x, timeout="5s"),
            await garrison.workflow.call(SyncClient(3), x),
            await garrison.workflow.call(ListClient([2, 2]), x)]


async def test_an_unhashable_callable_is_an_activity_as_any_other(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    """An unhashable callable (a dataclass instance) runs as an activity: its hints and
    whether it is awaited are not kept by it, not the workflow's failure with a bare
    ``TypeError: unhashable type: 'Client'``."""
    with SQLiteStore(str(tmp_path / "wf.db")) as store:
        async with garrison.open_node(store=store) as node:
            await node.start_workflow(calls_unhashable, 5, id="u")
            assert await node.workflow("u").result() == [6, 7, 8, 9]
