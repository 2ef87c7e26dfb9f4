"""The workflow host in one process: journal, replay, activities, timers, messages."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import logging
import sqlite3
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import workflow_app as app
from workflow_app import Color, Order, Receipt

import garrison
from garrison import process, workflow
from garrison.persistence import open_store

if TYPE_CHECKING:  # (for type checkers only: an annotation naming it cannot be resolved)
    from decimal import Decimal


@pytest.fixture(autouse=True)
def _reset() -> None:
    app.LOG.clear()
    app.FAILS.clear()


def kinds(handle: garrison.WorkflowHandle) -> list[tuple[str, str]]:
    return [(r.kind, r.name) for r in handle.history()]


async def wait_status(handle: garrison.WorkflowHandle, status: str) -> None:
    with trio.fail_after(5):
        while handle.status() != status:
            await trio.sleep(0.001)


# ------------------------------------------------------------------ basics
async def test_activities_are_journaled_and_result_returned(node: garrison.Node) -> None:
    pid = await node.start_workflow(app.steps, 0, 3, id="w1")
    assert pid == garrison.Pid("workflows", "w1")
    handle = node.workflow("w1")
    assert await handle.result() == 3
    assert handle.status() == "completed"
    assert kinds(handle) == [("activity", "workflow_app:add_one")] * 3
    assert [r.outcome for r in handle.history()] == [{"ok": 1}, {"ok": 2}, {"ok": 3}]
    assert [r.seq for r in handle.history()] == [1, 2, 3]
    assert await node.wait(pid) == 3


async def test_sync_activity_runs_in_a_thread_and_via_workflow_call(node: garrison.Node) -> None:
    await node.start_workflow(app.steps_sync, 1, id="s")
    assert await node.workflow("s").result() == 3
    assert app.LOG == [("add_one_sync", 1), ("add_one_sync", 2)]


async def test_activity_is_a_plain_call_outside_a_workflow() -> None:
    assert await app.add_one(1) == 2
    assert app.add_one_sync(1) == 2


async def _uuid_in_a_thread() -> str:
    return str(await trio.to_thread.run_sync(workflow.uuid4))


async def test_a_durable_call_from_a_worker_thread_fails_with_trios_own_error(
        node: garrison.Node) -> None:
    # workflow code handing a durable call to a worker thread: the workflow fails with
    # trio's "must be called from async context", not an AttributeError of its internals
    await node.start_workflow(_uuid_in_a_thread, id="thread")
    with pytest.raises(garrison.WorkflowFailed) as info:
        await node.workflow("thread").result()
    assert str(info.value.error).startswith("RuntimeError: must be called from async context")


_HOLD = threading.Event()  # released by the test: the thread's activity returns
_IN_THREAD = threading.Event()  # set by the activity as it begins


@garrison.activity
def _held_report(n: int) -> int:
    _IN_THREAD.set()
    _HOLD.wait(60)
    return n


async def _reports(n: int) -> int:
    return await _held_report(n)


async def test_a_plain_activity_left_running_in_its_thread_at_a_stop_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """helper-393: Ctrl-C while a plain (sync) activity ran in its worker thread stopped
    the node at once and left the thread running, abandoned, with nothing said (the
    activity runs again as the workflow resumes: at-least-once). One warning names
    what was left running, and of which workflow."""
    _HOLD.clear()
    _IN_THREAD.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="garrison.workflow"):
            async with garrison.open_node() as node:
                await node.start_workflow(_reports, 5, id="rep-1")
                await trio.to_thread.run_sync(_IN_THREAD.wait, 60)
                assert node.workflow("rep-1").status() == "running"
        said = [r.getMessage() for r in caplog.records]
        assert said == [
            "host workflows stopped while 1 plain activity call(s) ran in worker threads, "
            "left running there (their outcomes unrecorded): activity "
            "'test_workflow:_held_report' of workflow 'rep-1'; each runs again when its "
            "workflow resumes"], said
        assert caplog.records[0].workflow_id == "rep-1"
    finally:
        _HOLD.set()


async def test_start_is_idempotent_by_id_even_after_completion(node: garrison.Node) -> None:
    pid = await node.start_workflow(app.steps, 0, 2, id="same")
    assert await node.start_workflow(app.steps, 5, 2, id="same") == pid
    assert await node.workflow("same").result() == 2
    assert await node.start_workflow(app.steps, 7, 2, id="same") == pid
    assert await node.workflow("same").result() == 2
    assert len(app.LOG) == 2


async def test_a_start_of_another_function_under_an_id_in_use_warns(
        node: garrison.Node, caplog: pytest.LogCaptureFixture) -> None:
    """The start returns the existing workflow's pid, as any start of an id in use
    (API.md); that it runs another function was said nowhere, and the new work was
    silently never done."""
    pid = await node.start_workflow(app.steps, 0, 2, id="taken")
    assert await node.workflow("taken").result() == 2
    with caplog.at_level(logging.WARNING, logger="garrison.workflow"):
        assert await node.start_workflow(app.steps, 0, 2, id="taken") == pid
        assert not caplog.records  # the same function: an ordinary idempotent start
        assert await node.start_workflow(app.approval, "x", id="taken") == pid
    assert [r.getMessage() for r in caplog.records] == [
        "workflow taken exists already (workflow_app:steps, completed): this start of "
        "workflow_app:approval returns its pid and leaves it as it is (give the new "
        "workflow another id)"]
    assert caplog.records[0].workflow_id == "taken"
    assert await node.workflow("taken").result() == 2


async def test_a_start_with_other_arguments_under_an_id_in_use_warns(
        node: garrison.Node, caplog: pytest.LogCaptureFixture) -> None:
    """A second start of a running workflow's id with other arguments (another order
    under the same id, say) returned its pid and said nothing: the new work was silently
    never done. The same arguments are an ordinary idempotent start."""
    pid = await node.start_workflow(app.approval, "doc-1", id="open")
    with caplog.at_level(logging.WARNING, logger="garrison.workflow"):
        assert await node.start_workflow(app.approval, "doc-1", id="open") == pid
        assert not caplog.records
        assert await node.start_workflow(app.approval, "doc-2", id="open") == pid
    assert [r.getMessage() for r in caplog.records] == [
        'workflow open exists already, started with other arguments (["doc-1"], not '
        '["doc-2"]): this start returns its pid and leaves it as it is (give the new '
        "workflow another id)"]


async def test_a_start_with_other_arguments_of_a_finished_workflow_warns(
        node: garrison.Node, caplog: pytest.LogCaptureFixture) -> None:
    """Finished on this node, it was silent (the node kept no arguments of its finished
    ones, and read none), where a node that opened the store afresh warned."""
    pid = await node.start_workflow(app.steps, 0, 2, id="done")
    assert await node.workflow("done").result() == 2
    with caplog.at_level(logging.WARNING, logger="garrison.workflow"):
        assert await node.start_workflow(app.steps, 0, 2, id="done") == pid
        assert not caplog.records
        assert await node.start_workflow(app.steps, 1, 2, id="done") == pid
    assert [r.getMessage() for r in caplog.records] == [
        "workflow done exists already, started with other arguments ([0, 2], not [1, 2]): "
        "this start returns its pid and leaves it as it is (give the new workflow another "
        "id)"]


async def test_a_start_again_of_a_workflow_that_continued_as_new_does_not_warn(
        node: garrison.Node, caplog: pytest.LogCaptureFixture) -> None:
    """helper-305: its row holds the arguments its last run carried on with, so a
    program started again unchanged (the same id, as README advises) was told it gave
    other arguments ([0, 3], not [2, 0]) and to take another id."""
    pid = await node.start_workflow(app.countdown, 2, 0, id="cd")
    assert await node.workflow("cd").result()
    with caplog.at_level(logging.WARNING, logger="garrison.workflow"):
        assert await node.start_workflow(app.countdown, 2, 0, id="cd") == pid
    assert not caplog.records


async def test_lambda_and_closure_are_refused(node: garrison.Node) -> None:
    async def inner() -> None:
        pass

    with pytest.raises(TypeError, match="closure"):
        await node.start_workflow(inner)
    with pytest.raises(TypeError, match="lambda"):
        await node.start_workflow(lambda: None)


class _TemporalStyle:
    """A workflow written as Temporal's Python SDK writes one: a class with a run method."""

    async def run(self, n: int) -> int:
        return n

    @staticmethod
    async def run_static(n: int) -> int:
        return n + 1


async def test_a_bound_method_is_refused_saying_what_to_write_instead(
        node: garrison.Node) -> None:
    """A user porting a Temporal workflow class started `Flow().run` and was told that
    importing its name gives another object, nothing of what to write instead; a
    staticmethod, found again by its name, runs."""
    with pytest.raises(TypeError) as info:
        await node.start_workflow(_TemporalStyle().run, 1, id="m")
    assert str(info.value) == (
        "cannot run the method test_workflow:_TemporalStyle.run (bound to a _TemporalStyle "
        "instance) as a workflow: after a restart a workflow is found again by its "
        "module:qualname, without what it was bound to; make it a module-level async "
        "function (or a @staticmethod) and pass what the instance held as its arguments")
    await node.start_workflow(_TemporalStyle.run_static, 1, id="s")
    assert await node.workflow("s").result() == 2


async def test_typed_arguments_and_results_restored_from_annotations(node: garrison.Node) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    await node.start_workflow(app.typed, Order("o1", 30, Color.BLUE, when), id="t")
    assert await node.workflow("t").result() == Receipt("o1", 30)
    rec = node.workflow("t").history()[0]
    assert rec.outcome == {"ok": {"order_id": "o1", "amount": 30}}


async def test_unconvertible_argument_raises_payload_error_at_the_call(
        node: garrison.Node) -> None:
    with pytest.raises(garrison.PayloadError, match="set"):
        await node.start_workflow(app.steps, {1, 2}, id="bad")


@pytest.mark.parametrize("fn, arg, said", [
    (app.calls_asyncio_minded, {"a": 1}, 'as str: expected a string, got an object {"a": 1}'),
    (app.calls_asyncio_minded, None, "as str: expected a string, got null"),
    (app.steps, "5", 'as int: expected an integer, got a string "5"'),
    (app.steps, 2.5, "as int: expected an integer, got a number 2.5"),
])
async def test_an_argument_of_another_json_type_than_its_annotation_is_refused(
        node: garrison.Node, fn: Any, arg: Any, said: str) -> None:
    """A ``str`` argument took any JSON value as its ``str()`` (``{"a": 1}`` ran as
    ``"{'a': 1}"``), an ``int`` one a string of digits or a fraction (cut to 2)."""
    with pytest.raises(garrison.PayloadError) as info:
        await node.start_workflow(fn, arg, id="mistyped")
    assert str(info.value).endswith(said)
    assert "argument 1" in str(info.value)
    assert node.hosts["workflows"].store.get_workflow("mistyped") is None


async def test_unconvertible_payload_fails_the_workflow_naming_the_type(
        node: garrison.Node) -> None:
    await node.start_workflow(app.bad_payload, id="bp")
    with pytest.raises(garrison.WorkflowFailed, match=r"PayloadError.*set"):
        await node.workflow("bp").result()


async def test_failed_workflow_result_raises_workflow_failed(node: garrison.Node) -> None:
    pid = await node.start_workflow(app.fails, id="f")
    with pytest.raises(garrison.WorkflowFailed) as info:
        await node.workflow("f").result()
    assert info.value.error.type == "KeyError"
    assert node.workflow("f").status() == "failed"
    with pytest.raises(garrison.ProcessError, match="KeyError"):
        await node.wait(pid)


async def _returns_a_str(x: int) -> int:
    return "oops"


async def _returns_a_bad_receipt() -> Receipt:
    return {"order_id": "o1"}  # type: ignore[return-value]  # no amount


async def _continues_then_returns_a_str(n: int) -> int:
    if n:
        workflow.continue_as_new(n - 1)
    return "done"  # type: ignore[return-value]


async def _parent_of_a_bad_child() -> list[Any]:
    await process.spawn(_returns_a_str, 1, id="bad-child")
    ev = await process.events().receive()
    return [ev.kind.value, ev.result, ev.error.type if ev.error else None,
            ev.error.message if ev.error else None]


async def _int_as_float() -> float:
    return 3


async def _dict_as_receipt() -> Receipt:
    return {"order_id": "o1", "amount": 3}  # type: ignore[return-value]


async def _none_as_none() -> None:
    return None


async def _anything_unannotated(x):  # type: ignore[no-untyped-def]
    return {"x": x}


async def _anything_any() -> Any:
    return ["a", 1]


async def test_a_result_its_return_annotation_refuses_fails_the_workflow(
        node: garrison.Node) -> None:
    # it ends failed, naming the workflow, the function, the type and the annotation,
    # rather than completed with a result that every result() then cannot restore
    pid = await node.start_workflow(_returns_a_str, 1, id="w1")
    handle = node.workflow("w1")
    with pytest.raises(garrison.WorkflowFailed) as info:
        await handle.result()
    assert info.value.error.type == "TypeError"
    assert info.value.error.message.startswith(
        "workflow 'w1' (test_workflow:_returns_a_str) returned a str, which its return "
        "annotation int does not accept (")
    assert handle.status() == "failed"
    with pytest.raises(garrison.ProcessError, match="returned a str"):
        await node.wait(pid)
    store = node.hosts["workflows"].store
    record = store.get_workflow("w1")
    assert record is not None and record.status == "failed" and record.result is None

    await node.start_workflow(_returns_a_bad_receipt, id="w2")
    with pytest.raises(garrison.WorkflowFailed) as info:
        await node.workflow("w2").result()
    assert info.value.error.message.startswith(
        "workflow 'w2' (test_workflow:_returns_a_bad_receipt) returned a dict, which its "
        "return annotation workflow_app.Receipt does not accept (")
    assert "amount" in info.value.error.message


async def test_a_refused_result_after_continue_as_new_fails_the_last_run(
        node: garrison.Node) -> None:
    await node.start_workflow(_continues_then_returns_a_str, 2, id="can")
    with pytest.raises(garrison.WorkflowFailed, match=r"workflow 'can' \(test_workflow:"
                       r"_continues_then_returns_a_str\) returned a str, which its return "
                       r"annotation int does not accept"):
        await node.workflow("can").result()
    assert node.workflow("can").status() == "failed"


async def test_a_parent_sees_its_child_fail_on_a_refused_result(node: garrison.Node) -> None:
    await node.start_workflow(_parent_of_a_bad_child, id="parent")
    kind, result, error_type, message = await node.workflow("parent").result()
    assert (kind, result, error_type) == ("EXIT", None, "TypeError")
    assert message.startswith("workflow 'bad-child' (test_workflow:_returns_a_str) "
                              "returned a str")
    assert node.workflow("bad-child").status() == "failed"


async def test_results_the_annotation_can_restore_are_kept(node: garrison.Node) -> None:
    # the test is result()'s own: whatever result() reads back is never refused
    cases = [(_int_as_float, (), 3.0), (_dict_as_receipt, (), Receipt("o1", 3)),
             (_none_as_none, (), None), (_anything_unannotated, (1,), {"x": 1}),
             (_anything_any, (), ["a", 1])]
    for i, (fn, args, expected) in enumerate(cases):
        await node.start_workflow(fn, *args, id=f"ok{i}")
        assert await node.workflow(f"ok{i}").result() == expected
        assert node.workflow(f"ok{i}").status() == "completed"


@attrs.define
class _Card:
    last4: str


@attrs.define
class _Iban:
    last4: str


async def _pays_by(last4: str) -> _Card | _Iban:
    app.LOG.append("paid")
    return _Card(last4)


async def test_a_return_annotation_nothing_can_restore_is_refused_at_the_start() -> None:
    """``-> _Card | _Iban`` of the same fields: cattrs can restore no value by it, so the
    workflow ran to its end, its effects done, and then failed on its valid result with
    ``TypeError: Could not disambiguate ...``. Nothing is stored or run."""
    async with garrison.open_node() as node:
        with pytest.raises(garrison.PayloadError) as info:
            await node.start_workflow(_pays_by, "1234", id="pay")
        assert node.hosts["workflows"].store.get_workflow("pay") is None and app.LOG == []
    said = str(info.value)
    assert said.startswith("cannot restore the result of workflow test_workflow:_pays_by "
                           "(id 'pay'): its annotation "), said
    assert "itself cannot be restored (TypeError: Could not disambiguate" in said, said
    assert said.endswith("or annotate a single class"), said


@garrison.activity
async def _receipt_noted(note: Decimal | None = None) -> Receipt:
    return Receipt("r", 1)


async def _typed_beside_unresolvable(order: Order, note: Decimal | None = None) -> Receipt:
    got = await _receipt_noted()
    assert type(order) is Order and type(got) is Receipt, (order, got)
    return got


async def test_an_annotation_that_cannot_be_resolved_leaves_only_its_value_untyped(
        caplog: pytest.LogCaptureFixture) -> None:
    """One annotation naming what exists only under ``TYPE_CHECKING`` made every hint of
    the function fail together: the ``Order`` argument, the activity's ``Receipt`` and
    the workflow's result all came as dicts, and nothing said so. (One store: the
    hints, and their warning, are read once per function.)"""
    when = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    with caplog.at_level(logging.WARNING, logger="garrison.workflow"):
        async with garrison.open_node() as node:
            await node.start_workflow(_typed_beside_unresolvable,
                                      Order("o1", 30, Color.BLUE, when), id="unresolved")
            assert await node.workflow("unresolved").result() == Receipt("r", 1)
    said = [r.getMessage() for r in caplog.records if "cannot resolve" in r.getMessage()]
    why = ("cannot resolve the annotation of parameter 'note' ('Decimal | None': "
           "NameError: name 'Decimal' is not defined): that value is restored as plain "
           "JSON (a dict, list, str...), not as the type it names")
    assert said == [f"test_workflow:_typed_beside_unresolvable: {why}",
                    f"test_workflow:_receipt_noted: {why}"]


async def test_a_workflow_completed_with_a_refused_result_before_stays_completed(
        store_spec: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    # a garrison before the check completed it: its end is not decided again
    from garrison.hosts.workflow import _codec

    with monkeypatch.context() as patch:
        patch.setattr(_codec, "result_refused", lambda *_args: None)
        async with garrison.open_node(store=store_spec) as node:
            await node.start_workflow(_returns_a_str, 1, id="old")
            with pytest.raises(garrison.PayloadError):
                await node.workflow("old").result()
    async with garrison.open_node(store=store_spec) as node:
        assert node.workflow("old").status() == "completed"
        with pytest.raises(garrison.PayloadError, match="the result of workflow 'old'"):
            await node.workflow("old").result()
        assert node.workflow("old").status() == "completed"


async def test_a_replay_ends_a_refused_result_as_the_node_did(node: garrison.Node) -> None:
    from garrison.hosts.workflow import History, replay_history

    await node.start_workflow(_returns_a_str, 1, id="w1")
    with pytest.raises(garrison.WorkflowFailed):
        await node.workflow("w1").result()
    result = await replay_history(History.from_store(node.hosts["workflows"].store, "w1"))
    assert result.ok and result.status == "failed"
    assert result.ending.startswith("the code raised TypeError: workflow 'w1' "
                                    "(test_workflow:_returns_a_str) returned a str")
    assert "recorded" not in result.ending  # (as recorded: no "the workflow is recorded")


class _Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@garrison.activity
async def _orders_by_number(n: int) -> dict[int, Order]:
    return {i: Order(f"o{i}", 10 * i) for i in range(1, n + 1)}


@garrison.activity
async def _levels(n: int) -> dict[uuid.UUID, _Level]:
    return {uuid.UUID(int=i): _Level.HIGH if i > 1 else _Level.LOW for i in range(1, n + 1)}


async def _keyed(names: dict[int, str]) -> dict[int, str]:
    orders = await _orders_by_number(len(names))
    levels = await _levels(len(names))
    await process.inbox().receive()  # (a restart here: the rest runs after a replay)
    return {k: f"{names[k]} {orders[k].total} {levels[uuid.UUID(int=k)].name}"
            for k in sorted(names)}


async def test_a_dict_declared_with_non_str_keys_round_trips_live_and_after_a_replay(
        store_spec: str) -> None:
    """``dict[int, str]`` (or ``dict[int, Order]``, ``dict[uuid.UUID, ...]``) as a
    workflow's argument or result or an activity's result was refused (JSON object keys
    are strings): it is stored with its keys as text, and its keys come back as the
    annotation's type, to the live run and to one replayed from the journal."""
    want = {1: "a 10 LOW", 2: "b 20 HIGH"}
    async with garrison.open_node(store=store_spec) as node:
        for wid in ("live", "replayed"):
            await node.start_workflow(_keyed, {2: "b", 1: "a"}, id=wid)
            await wait_status(node.workflow(wid), "waiting")
        await node.workflow("live").signal("go")
        assert await node.workflow("live").result() == want
        assert [r.outcome for r in node.workflow("replayed").history()] == [
            {"ok": {"1": {"id": "o1", "total": 10, "color": "red", "when": None},
                    "2": {"id": "o2", "total": 20, "color": "red", "when": None}}},
            {"ok": {str(uuid.UUID(int=1)): 1, str(uuid.UUID(int=2)): 2}}]
    async with garrison.open_node(store=store_spec) as node:
        handle = node.workflow("replayed")
        await handle.signal("go")
        result = await handle.result()
        assert result == want and all(type(k) is int for k in result)
        store = node.hosts["workflows"].store
        assert store.get_workflow("replayed").input == [{"2": "b", "1": "a"}]
        from garrison.hosts.workflow import History, replay_history

        replayed = await replay_history(History.from_store(store, "replayed"))
        assert replayed.ok and replayed.status == "completed", replayed


async def _untyped(names: Any) -> None:
    pass


@garrison.activity
async def _a_plain_dict() -> dict:  # type: ignore[type-arg]
    return {1: "a"}


async def _calls_a_plain_dict() -> str:
    try:
        await _a_plain_dict()
    except garrison.ActivityError as exc:
        return str(exc)
    return "stored"


async def test_a_dict_of_non_str_keys_without_a_declared_key_type_is_still_refused(
        node: garrison.Node) -> None:
    keys = "a value of type int at {} (a key of the dict there) cannot be converted to JSON"
    with pytest.raises(garrison.PayloadError) as info:
        await node.start_workflow(_untyped, {1: "a"}, id="untyped")
    assert str(info.value).startswith("cannot store the arguments of workflow test_workflow:"
                                      "_untyped (id 'untyped'): " + keys.format("[0]"))
    await node.start_workflow(_calls_a_plain_dict, id="plain")
    said = await node.workflow("plain").result()
    assert "cannot store the result of activity 'test_workflow:_a_plain_dict': " + \
        keys.format("the top") in said


@garrison.activity
async def _adds_one(x: int) -> int:
    return x + 1


_NOT_AWAITED: list[Any] = []


async def _forgets_await(x: int) -> int:
    coro = _adds_one(x)  # (the slip this test makes)
    _NOT_AWAITED.append(coro)  # (closed by the test: no "never awaited" warning later)
    return coro


async def test_an_activity_result_returned_without_await_says_so(
        node: garrison.Node) -> None:
    await node.start_workflow(_forgets_await, 1, id="noawait")
    try:
        with pytest.raises(garrison.WorkflowFailed,
                           match=r"a value of type coroutine \(a coroutine: a missing "
                                 r"await\?\) cannot be converted to JSON"):
            await node.workflow("noawait").result()
    finally:
        while _NOT_AWAITED:
            _NOT_AWAITED.pop().close()


async def test_unknown_workflow(node: garrison.Node) -> None:
    from garrison._errors import NoSuchWorkflow

    with pytest.raises(NoSuchWorkflow):
        node.workflow("nope").status()
    with pytest.raises(NoSuchWorkflow):
        await node.workflow("nope").result()


async def test_the_handle_of_an_unknown_workflow_says_so_for_every_call(
        node: garrison.Node) -> None:
    # a mistyped id: a signal is not dropped as a dead letter, nor a state or a promise
    # read as "not set yet", while cancel, history, result ... raise NoSuchWorkflow
    handle = node.workflow("nope")
    with pytest.raises(garrison.NoSuchWorkflow, match="'nope'"):
        await handle.signal("approve", {"by": "ann"})
    with pytest.raises(garrison.NoSuchWorkflow, match="'nope'"):
        handle.state("status")
    with pytest.raises(garrison.NoSuchWorkflow, match="'nope'"):
        handle.promise("approval").status()
    with pytest.raises(garrison.NoSuchWorkflow, match="'nope'"):
        await handle.promise("approval").resolve(1)
    with pytest.raises(garrison.NoSuchWorkflow, match="'nope'"):
        await handle.cancel()
    assert node.stats()["dead_letters"] == 0
    # a finished workflow still answers: its state, its promises
    await node.start_workflow(app.steps, 0, 1, id="done")
    await node.workflow("done").result()
    assert node.workflow("done").state("status", "none") == "none"
    assert node.workflow("done").promise("approval").status() == "pending"


async def test_a_workflow_id_that_is_not_a_str_is_a_type_error(node: garrison.Node) -> None:
    # not NoSuchWorkflow on SQLite and a StoreError on PostgreSQL (text = smallint)
    for wid in (5, None, ("a",)):
        with pytest.raises(TypeError, match="a workflow id must be a string, got"):
            node.workflow(wid)  # type: ignore[arg-type]


async def test_a_workflows_pid_or_its_text_given_for_its_id_says_so(
        node: garrison.Node) -> None:
    """A new user's first try, ``node.workflow(pid)`` or ``node.workflow(str(pid))``:
    a bare ``got Pid`` and ``no workflow with id 'workflows/f1'``."""
    pid = await node.start_workflow(app.steps, 0, 1, id="f1")
    with pytest.raises(TypeError, match=r"got Pid: .* \(pass its id: pid\.id, 'f1'\)$"):
        node.workflow(pid)  # type: ignore[arg-type]
    handle = node.workflow(str(pid))
    hint = (f"^no workflow with id '{pid}' in the store \\(a pid's text\\? its id is "
            f"'f1'\\)$")
    with pytest.raises(garrison.NoSuchWorkflow, match=hint):
        handle.status()
    with pytest.raises(garrison.NoSuchWorkflow, match=hint):
        await handle.result()
    with pytest.raises(garrison.NoSuchWorkflow, match=hint):
        await handle.signal("go")
    with pytest.raises(garrison.NoSuchWorkflow, match=r"'workflows/nope' in the store$"):
        node.workflow("workflows/nope").status()  # (no such id there: no hint)
    assert await node.workflow(pid.id).result() == 1


async def test_a_wrong_type_to_a_public_function_is_refused_naming_the_argument(
        node: garrison.Node) -> None:
    """A new user's wrong types said only what Python said deep inside (``'int' object
    is not iterable``; ``expected str, bytes or os.PathLike object, not int``), and
    ``garrison.run(main, clock=5)`` was a ``TrioInternalError`` asking to file a bug
    with trio."""
    from garrison.persistence import SQLiteStore
    from garrison.supervision import Supervisor

    with pytest.raises(TypeError, match=r"^node\.workflows\(status=\.\.\.\) takes a status "
                                        r"or several \(a list\), got int: 5$"):
        node.workflows(status=5)
    for bad in (5, b"x.db", 1.5):
        with pytest.raises(TypeError, match=r"^SQLiteStore\(path\): a file path \(str or "
                                            r"os\.PathLike\) or None, got "):
            SQLiteStore(bad)  # type: ignore[arg-type]
    for bad in (5, None):
        with pytest.raises(TypeError, match=r"^Supervisor\(children\): an iterable of "
                                            r"ChildSpec values, got "):
            Supervisor(bad)  # type: ignore[arg-type]

    async def main() -> str:
        return "ran"

    with pytest.raises(TypeError, match=r"^garrison\.run\(clock=\.\.\.\): a trio\.abc\.Clock "
                                        r"\(such as trio\.testing\.MockClock\) or None, got "
                                        r"int: 5$"):
        garrison.run(main, clock=5)  # type: ignore[arg-type]


async def state_by_a_tuple_key() -> str:
    workflow.set_state(("stage", 1), "shipping")
    return "set"


async def test_a_state_key_or_promise_name_of_the_wrong_type_is_refused_at_the_call(
        node: garrison.Node) -> None:
    # a tuple key reached SQLite: the workflow stopped blocked on a "store failure"
    # (StoreError: Error binding parameter), and a handle raised sqlite3's
    # ProgrammingError; a promise named 5, None or "" was stored where no workflow
    # can declare it
    await node.start_workflow(state_by_a_tuple_key, id="tuple")
    with pytest.raises(garrison.WorkflowFailed,
                       match=r"TypeError: workflow.set_state\(\): a state key must be a "
                             r"string, got tuple: \('stage', 1\)"):
        await node.workflow("tuple").result()
    await node.start_workflow(app.steps, 0, 1, id="done")
    await node.workflow("done").result()
    handle = node.workflow("done")
    with pytest.raises(TypeError, match=r"state key must be a string, got tuple"):
        handle.state(("stage", 1))
    for name in ("", 5, None, ("a",)):
        with pytest.raises(ValueError, match="a promise name must be a non-empty string"):
            await handle.promise(name).resolve(1)  # type: ignore[arg-type]
    host = node.hosts["workflows"]
    assert host.store.get_promise("done", "") is None


async def test_an_empty_signal_topic_or_rejection_message_is_refused_as_the_tools_refuse_it(
        node: garrison.Node) -> None:
    """``handle.signal("", x)`` and ``promise.reject("")`` were written, where
    ``garrison workflows signal``/``reject`` and the console refuse them: no workflow
    listens for the empty topic, and a rejection without its reason tells nothing."""
    await node.start_workflow(app.sleeper, "1h", id="w")
    handle = node.workflow("w")
    with pytest.raises(ValueError, match=r"^workflow 'w': a signal needs a 'topic': a "
                                         r"non-empty string, got ''$"):
        await handle.signal("", 1)
    for message in ("", 5, None):
        with pytest.raises(ValueError, match=r"^workflow 'w': a rejection needs a 'message': "
                                             r"a non-empty string, got "):
            await handle.promise("p").reject(message)  # type: ignore[arg-type]
    host = node.hosts["workflows"]
    assert host.store.get_promise("w", "p") is None
    assert host.store.pending_messages("w") == []
    await handle.promise("p").reject("out of stock")  # a reason: taken
    assert handle.promise("p").status() == "rejected"


# ------------------------------------------------------------------ retries
async def test_retry_until_success_records_attempts_once(
        node: garrison.Node, autojump_clock: Any) -> None:
    app.FAILS["k"] = 2
    t0 = trio.current_time()
    await node.start_workflow(app.retrying, "k", id="r")
    assert await node.workflow("r").result() == "k ok"
    assert trio.current_time() - t0 == pytest.approx(3.0)  # 1s then 2s of backoff
    (rec,) = node.workflow("r").history()
    assert rec.attempts == 3 and rec.outcome == {"ok": "k ok"}


async def test_final_failure_reaches_the_workflow_as_activity_error(
        node: garrison.Node, autojump_clock: Any) -> None:
    app.FAILS["k"] = 5
    await node.start_workflow(app.retrying, "k", id="r")
    with pytest.raises(garrison.WorkflowFailed, match="ActivityError: ConnectionError: k is down"):
        await node.workflow("r").result()
    (rec,) = node.workflow("r").history()
    assert rec.attempts == 3
    assert rec.outcome["error"]["type"] == "ConnectionError"


async def test_an_activity_raising_another_base_exception_is_retried_as_a_failure(
        node: garrison.Node, autojump_clock: Any) -> None:
    """asyncio's CancelledError from an activity is a failed attempt, under its retry
    policy; it failed the whole workflow, unrecorded, once any BaseException failed
    only its own workflow (found by a review)."""
    app.FAILS["a"] = 2
    await node.start_workflow(app.calls_asyncio_minded, "a", id="r")
    assert await node.workflow("r").result() == "a ok"
    (rec,) = node.workflow("r").history()
    assert rec.attempts == 3 and rec.outcome == {"ok": "a ok"}


@pytest.mark.parametrize("sync", [False, True])
async def test_an_activity_result_no_store_can_hold_fails_once_not_retried(
        node: garrison.Node, autojump_clock: Any, sync: bool) -> None:
    """A result no store can hold is the activity's final failure (PayloadError), not
    a failed attempt: retrying ran its effect again for the same result (found by an
    adversarial review: three runs)."""
    app.LOG.clear()
    await node.start_workflow(app.calls_returns_opaque, sync, id="o")
    said = await node.workflow("o").result()
    assert said.startswith("PayloadError: cannot store the result of activity"), said
    assert len(app.LOG) == 1, app.LOG
    (rec,) = node.workflow("o").history()
    assert rec.attempts == 1 and rec.outcome["error"]["type"] == "PayloadError"


@garrison.activity
async def _says_five_as_text() -> int:
    app.LOG.append("ran")
    return "5"  # type: ignore[return-value]


async def _catches_what_its_activity_returned(started: bool) -> str:
    try:
        if started:
            await garrison.workflow.start(_says_five_as_text)
        else:
            await _says_five_as_text()
    except garrison.ActivityError as exc:
        return f"compensated: {exc}"
    return "not caught"


@pytest.mark.parametrize("started", [False, True])
async def test_a_result_its_annotation_refuses_is_the_activitys_final_failure(
        node: garrison.Node, autojump_clock: Any, started: bool) -> None:
    """README: an activity that returns a value its annotation does not accept fails
    for good (ActivityError with the PayloadError, recorded; not retried). The value
    was recorded as its result, and the PayloadError then raised past the workflow's
    ``except ActivityError``: the workflow failed, its compensation never ran, and a
    retry failed again at the same record."""
    app.LOG.clear()
    await node.start_workflow(_catches_what_its_activity_returned, started, id="five")
    said = await node.workflow("five").result()
    assert said.startswith("compensated: PayloadError: cannot restore the result of "
                           "activity 'test_workflow:_says_five_as_text' as int: expected an "
                           'integer, got a string "5"'), said
    assert app.LOG == ["ran"]  # once: it ran, and running it again repeats its effect
    (rec,) = node.workflow("five").history()
    assert rec.attempts == 1 and rec.outcome["error"]["type"] == "PayloadError"
    history = garrison.hosts.workflow.History.from_store(node.hosts["workflows"].store,
                                                         "five")
    assert (await garrison.hosts.workflow.replay_history(history)).ok


@garrison.activity
async def _returns_too_much() -> str:
    app.LOG.append("ran")
    return "x" * 150_000  # (more than the lowered limit itself)


async def _catches_too_much() -> str:
    try:
        await _returns_too_much()
    except garrison.ActivityError as exc:
        return f"compensated: {exc}"
    return "kept"


async def test_a_result_larger_than_the_store_holds_is_the_activitys_final_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    """README: a result no store can hold fails for good. One longer than SQLite's length
    limit (1,000,000,000 bytes by default; lowered here) failed the commit instead: the
    workflow was blocked, and each resume ran the activity again and blocked again."""
    connect = sqlite3.connect

    def lowered(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100_000)
        return conn

    monkeypatch.setattr(sqlite3, "connect", lowered)
    app.LOG.clear()
    async with garrison.open_node(store=str(tmp_path / "big.db")) as node:
        await node.start_workflow(_catches_too_much, id="big")
        with trio.fail_after(60):
            said = await node.workflow("big").result()
        assert said == ("compensated: PayloadError: cannot store the result of activity "
                        "'test_workflow:_returns_too_much': its JSON text is 150,002 bytes, "
                        "more than the store holds in one value (34,464)")
        assert app.LOG == ["ran"]
        (rec,) = node.workflow("big").history()
        assert rec.attempts == 1 and rec.outcome["error"]["type"] == "PayloadError"
        assert node.hosts["workflows"].store.value_limit == 100_000 - 65_536


async def test_a_retried_activity_fails_with_its_last_error_alone(
        node: garrison.Node, autojump_clock: Any) -> None:
    # the first attempt runs in the step's fast path and the retry in the policy's
    # loop: the last error's traceback must not carry the first as its context
    app.CHANGING.clear()
    await node.start_workflow(app.changing_twice, id="two")
    with pytest.raises(garrison.WorkflowFailed, match="KeyError"):
        await node.workflow("two").result()
    assert app.CHANGING == [1, 2]
    (rec,) = node.workflow("two").history()
    assert rec.attempts == 2
    error = rec.outcome["error"]
    assert error["type"] == "KeyError"
    assert "second attempt lost" in error["traceback"]
    assert "first attempt down" not in error["traceback"]


async def test_non_retryable_fails_at_once_and_compensation_runs(node: garrison.Node) -> None:
    await node.start_workflow(app.compensating, 7, id="c")
    assert await node.workflow("c").result() == "compensated after ValueError"
    assert app.LOG == [("picky", 7), ("compensate", "ValueError: bad value 7", "ValueError")]


async def test_activity_timeout_is_a_timeout_error(node: garrison.Node,
                                                   autojump_clock: Any) -> None:
    await node.start_workflow(app.timing_out, id="to")
    result = await node.workflow("to").result()
    assert result.startswith("TimeoutError: activity 'workflow_app:slow' attempt 2")
    assert app.LOG == [("slow",), ("slow",)]


def test_retry_policy_values() -> None:
    p = garrison.RetryPolicy(max_attempts=5, initial_delay="100ms", backoff=2, max_delay="1s")
    assert [p.delay(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert not garrison.RetryPolicy(non_retryable=["KeyError"]).retryable(KeyError())
    assert garrison.RetryPolicy(non_retryable=[KeyError]).retryable(ValueError())
    with pytest.raises(ValueError, match="max_attempts"):
        garrison.RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match=r"duration|delay"):
        garrison.RetryPolicy(initial_delay="soon")
    # a first delay past max_delay (the default 1m too) was cut to it without a word
    with pytest.raises(ValueError, match=r"^max_delay \(60s\) is shorter than initial_delay "
                                         r"\(3600s\): max_delay caps every retry delay"):
        garrison.RetryPolicy(initial_delay="1h")
    with pytest.raises(ValueError, match=r"^max_delay \(1s\) is shorter than initial_delay"):
        garrison.RetryPolicy(initial_delay="2s", max_delay="1s")
    assert garrison.RetryPolicy(initial_delay="1h", max_delay="1h").delay(3) == 3600.0
    for forever in ({"initial_delay": float("inf")}, {"max_delay": 1e400}):
        with pytest.raises(ValueError, match=r"^invalid retry delay inf: a retry that waits "
                                             "for ever neither runs again"):
            garrison.RetryPolicy(**forever)
    for bad in ("x", "2", True, None, 0.5):  # ("x" was float()'s own message)
        with pytest.raises(ValueError, match=r"^backoff must be a number >= 1\.0, got "):
            garrison.RetryPolicy(backoff=bad)


async def calls_with_retry_5() -> int:
    return int(await workflow.call(app.add_one, 1, retry=5))  # type: ignore[arg-type]


async def starts_with_retry_5() -> int:
    return int(await workflow.start(app.add_one, 1, retry=5))  # type: ignore[arg-type]


async def calls_none() -> int:
    return int(await workflow.call(None))


async def starts_42() -> int:
    return int(await workflow.start(42))


async def test_an_activity_s_retry_and_function_are_checked_at_the_call(
        node: garrison.Node, autojump_clock: Any) -> None:
    """README: bad input fails at the call, before anything is stored. ``retry=5`` was
    taken by ``@activity`` and ``workflow.call`` alike, and failed only at the first
    failed attempt (``AttributeError: 'int' object has no attribute 'max_attempts'``);
    ``workflow.call(None)`` was journaled as the activity ``?:NoneType`` and retried
    three times; ``garrison.activity(5)`` made an activity of an int."""
    for bad in (5, "fast", {"max_attempts": 2}):
        with pytest.raises(TypeError, match=r"^@garrison\.activity: retry= takes a "
                                            r"garrison\.RetryPolicy \(or None\), got "):
            garrison.activity(retry=bad)
        with pytest.raises(TypeError, match=r"^@garrison\.activity: retry= takes a "):
            garrison.activity(app.steps, retry=bad)
    with pytest.raises(TypeError, match=r"^@garrison\.activity decorates a function, got "
                                        r"int: 5$"):
        garrison.activity(5)
    # a journal name that is no text: 5 was journaled as the name 5 (compared as text
    # by a replay), "" fell back to module:qualname in silence
    with pytest.raises(TypeError, match=r"^@garrison\.activity: name= takes a non-empty "
                                        r"str \(the activity's journal name\), got int: 5$"):
        garrison.activity(name=5)  # type: ignore[arg-type]
    for blank in ("", "  "):
        with pytest.raises(ValueError, match=r"^@garrison\.activity: name= takes a "
                                             r"non-empty str .*, got '\s*'$"):
            garrison.activity(app.steps, name=blank)
    with pytest.raises(ValueError, match=r"NUL"):
        garrison.activity(name="a\x00b")
    # a lone surrogate failed the run as if its store had (UnicodeEncodeError), on
    # every node, and made every later metrics scrape of the process fail
    with pytest.raises(ValueError, match=r"^@garrison\.activity: name= .*: it cannot hold "
                                         r"the lone surrogate character '\\ud800', which "
                                         r"is not valid text .*, got 'bad\\ud800'$"):
        garrison.activity(app.steps, name="bad\ud800")
    cases = [(calls_with_retry_5, "workflow.call(): retry= takes a garrison.RetryPolicy "
                                  "(or None), got int: 5"),
             (starts_with_retry_5, "workflow.start(): retry= takes a garrison.RetryPolicy "
                                   "(or None), got int: 5"),
             (calls_none, "workflow.call() takes a function to run as an activity (or the "
                          "entry id of a function.py entry), got NoneType: None"),
             (starts_42, "workflow.start() takes a function to run as an activity (or the "
                         "entry id of a function.py entry), got int: 42")]
    for n, (wf, said) in enumerate(cases):
        await node.start_workflow(wf, id=f"bad-{n}")
        with pytest.raises(garrison.WorkflowFailed) as failed:
            await node.workflow(f"bad-{n}").result()
        assert str(failed.value.error) == f"TypeError: {said}", failed.value
        assert node.workflow(f"bad-{n}").history() == []  # nothing was journaled


# ------------------------------------------------------------------ timers
async def test_durable_sleep_48h_on_virtual_time(node: garrison.Node,
                                                 autojump_clock: Any) -> None:
    t0 = trio.current_time()
    await node.start_workflow(app.sleeper, "48h", id="z")
    await trio.sleep(1)
    assert node.workflow("z").status() == "sleeping"
    assert await node.workflow("z").result() == pytest.approx(48 * 3600)
    assert trio.current_time() - t0 == pytest.approx(48 * 3600)
    assert [k for k, _ in kinds(node.workflow("z"))] == ["now", "sleep", "now"]


async def test_sleep_until(node: garrison.Node, autojump_clock: Any) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    await node.start_workflow(app.sleep_until_then, when, id="su")
    got = dt.datetime.fromisoformat(await node.workflow("su").result())
    assert got >= when


async def test_receive_timeout_is_a_durable_timer(node: garrison.Node,
                                                  autojump_clock: Any) -> None:
    t0 = trio.current_time()
    await node.start_workflow(app.receiver, "2d", id="rt")
    assert await node.workflow("rt").result() is None
    assert trio.current_time() - t0 == pytest.approx(2 * 86400)
    (rec,) = node.workflow("rt").history()
    assert (rec.kind, rec.outcome) == ("receive", {"timeout": True})


@pytest.mark.parametrize("sent", ["before", "after"])
async def test_a_receive_timeout_that_passed_while_down_takes_only_what_came_before_it(
        store_spec: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any,
        sent: str) -> None:
    # The node stops while a workflow waits in receive(timeout="1h") and comes back two
    # hours later. A message committed meanwhile after the deadline (by a tool, or a
    # service as the node starts) was taken as if it had come in time: the receive
    # timed out at its deadline, as a node that ran on would have decided.
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(app.receiver, "1h", id="r")
        await wait_status(node.workflow("r"), "waiting")
    with open_store(store_spec, lock=False) as tool:
        (timer,) = tool.timers("r")
        deadline = timer.deadline.timestamp()
        tool.deliver("r", "hello", sent, time=deadline + (-60 if sent == "before" else 60))
    from garrison.hosts.workflow import _waits

    real_time = _waits._time.time
    monkeypatch.setattr(_waits, "_time", SimpleNamespace(time=lambda: real_time() + 7200))
    async with garrison.open_node(store=store_spec) as node:
        handle = node.workflow("r")
        if sent == "before":
            assert await handle.result() == ["hello", "before"]
        else:
            assert await handle.result() is None
            (rec,) = handle.history()
            assert rec.outcome == {"timeout": True}
    if sent == "after":  # still in the inbox, for a later receive
        with open_store(store_spec, lock=False) as tool:
            assert [m.payload for m in tool.pending_messages("r")] == ["after"]


# ------------------------------------------------------------------ messages
async def test_message_to_waiting_workflow(node: garrison.Node) -> None:
    pid = await node.start_workflow(app.receiver, id="m")
    await wait_status(node.workflow("m"), "waiting")
    await node.send(pid, "hello", {"a": [1, 2]})
    assert await node.workflow("m").result() == ["hello", {"a": [1, 2]}]
    (rec,) = node.workflow("m").history()
    assert rec.kind == "receive" and rec.outcome["message"]["payload"] == {"a": [1, 2]}


async def test_signal_before_the_workflow_receives(node: garrison.Node) -> None:
    await node.start_workflow(app.approval, "req-1", id="ap")
    await node.workflow("ap").signal("noise", 1)
    await node.workflow("ap").signal("approve", "ann")
    assert await node.workflow("ap").result() == "req-1 approved by ann"


async def test_workflow_to_workflow_messages_in_order(node: garrison.Node) -> None:
    rpid = await node.start_workflow(app.collector, 20, id="recv")
    await node.start_workflow(app.sender, str(rpid), 20, id="send")
    assert await node.workflow("recv").result() == list(range(20))
    assert [r.kind for r in node.workflow("send").history()] == ["send"] * 20


async def test_process_calls_a_workflow(node: garrison.Node) -> None:
    wpid = await node.start_workflow(app.echo_server, 2, id="echo")

    async def client() -> list[Any]:
        return [await process.call(wpid, "q", i) for i in range(2)]

    pid = await node.spawn(client)
    assert await node.wait(pid) == [{"echo": 0}, {"echo": 1}]
    assert await node.workflow("echo").result() == 2


async def test_try_receive_and_listen(node: garrison.Node) -> None:
    pid = await node.start_workflow(app.try_receiver, id="tr")
    await wait_status(node.workflow("tr"), "waiting")
    await node.send(pid, "x", 1)
    assert await node.workflow("tr").result() == [None, 1]
    lp = await node.start_workflow(app.lister, id="ls")
    await node.send(lp, "a", "first-a")
    await node.send(lp, "b", "first-b")
    assert await node.workflow("ls").result() == ["first-b", "first-a"]


async def test_messages_taken_leave_nothing_behind_once_committed(
        node: garrison.Node, autojump_clock: object) -> None:
    """A workflow remembers the inbox rows it took until their consume is committed (so
    a refresh from the store does not queue them again); once a commit of the workflow
    returns it forgets them, with ``try_receive`` too (its consume is buffered): a
    workflow draining messages held every row id it ever took."""
    pid = await node.start_workflow(app.try_drainer, 30, id="drain")
    for i in range(30):
        await node.send(pid, "m", i)
    await wait_status(node.workflow("drain"), "waiting")
    wf = node.hosts["workflows"].active["drain"]
    assert not wf.pending and not wf.taken
    await node.send(pid, "last", None)
    assert await node.workflow("drain").result() == 30


async def test_a_failure_from_a_nursery_names_the_error_inside(node: garrison.Node) -> None:
    """A workflow (or process) failing from a trio nursery of its own fails with the
    nursery's exception group, whose message said only how many errors it held."""
    await node.start_workflow(app.nursery_failure, id="nf")
    with pytest.raises(garrison.WorkflowFailed) as failed:
        await node.workflow("nf").result()
    error = failed.value.error
    assert error.type == "ExceptionGroup"
    assert error.message == ("Exceptions from Trio nursery (1 sub-exception): "
                             "ValueError: bad total 3")
    assert "ValueError: bad total 3" in str(failed.value)

    async def many() -> None:
        async def bad(i: int) -> None:
            raise KeyError(i)

        async with trio.open_nursery() as outer:
            outer.start_soon(app.nursery_failure)
            for i in range(6):
                outer.start_soon(bad, i)

    with pytest.raises(garrison.ProcessError) as raised:
        await node.wait(await node.spawn(many))
    message = raised.value.error.message
    assert message.startswith("Exceptions from Trio nursery (7 sub-exceptions): ")
    assert message.endswith("; and 2 more") and message.count("KeyError") + \
        message.count("ValueError: bad total 3") == 5, message


async def test_an_end_the_store_refuses_stops_that_workflow_not_the_node(
        node: garrison.Node, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A workflow's end commit refused by the store for a reason of its own (not the
    store failing: an operation it finds invalid, such as a consume of a row no longer
    pending, or an update of a row deleted meanwhile) went up out of the host's nursery
    and stopped the whole node. That workflow stops, nothing recorded as its outcome
    (it resumes from its journal on the next start), as for a store failure; the node
    and its other workflows run on."""
    from garrison.persistence import Op

    store = node.hosts["workflows"].store
    commit = store.commit

    async def refuse_the_end(tx: garrison.persistence.Transaction) -> list[Any]:
        if any(op is Op.UPDATE_WORKFLOW for op, _ in tx.ops) and \
                "doomed" in tx.workflow_ids:
            raise ValueError("inbox row 7 is not a pending message of workflow 'doomed'")
        return await commit(tx)

    monkeypatch.setattr(store, "commit", refuse_the_end)
    await node.start_workflow(app.steps, 0, 2, id="doomed")
    with pytest.raises(garrison.StoreError, match="not a pending message") as raised:
        await node.workflow("doomed").result()
    assert "the end of workflow 'doomed' could not be recorded" in str(raised.value)
    assert "resumes from its journal" in caplog.text
    # the node runs on
    await node.start_workflow(app.steps, 0, 2, id="fine")
    assert await node.workflow("fine").result() == 2


async def test_a_commit_in_flight_does_not_forget_a_row_taken_meanwhile(
        node: garrison.Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow forgot every row it took once any of its commits returned; a started
    activity's record, committed from its own task, can return while the commit of a
    ``try_receive`` made meanwhile has not (here it is held until the step's record has
    returned): a refresh then (a wakeup) queued the row again, and the next
    ``try_receive`` took the message a second time."""
    from garrison.hosts.workflow._activities import ActivityHandle
    from garrison.hosts.workflow._recovery import refresh
    from garrison.persistence import Op

    host = node.hosts["workflows"]
    store = host.store
    commit = store.commit
    gate, held, stepped = trio.Event(), trio.Event(), trio.Event()

    async def hold_the_step(tx: garrison.persistence.Transaction) -> list[Any]:
        if any(op is Op.APPEND_JOURNAL and "held_step" in str(params)
               for op, params in tx.ops) and not gate.is_set():
            held.set()
            await gate.wait()
        elif any(op is Op.CONSUME for op, _ in tx.ops):
            await stepped.wait()
        return await commit(tx)

    monkeypatch.setattr(store, "commit", hold_the_step)
    set_ = ActivityHandle._set

    def refreshed_then_set(self: ActivityHandle, result: Any) -> None:
        refresh(host, "tk")  # a wakeup, as the step's commit has returned
        set_(self, result)
        stepped.set()

    monkeypatch.setattr(ActivityHandle, "_set", refreshed_then_set)
    pid = await node.start_workflow(app.take_during_a_started_step, id="tk")
    await held.wait()
    await node.send(pid, "m", "hello")
    wf = host.active["tk"]
    while not wf.taken:  # taken, its consume uncommitted; the step's commit still held
        await trio.sleep(0.1)
    gate.set()
    assert await node.workflow("tk").result() == ["hello", 7, None]


async def test_message_to_finished_workflow_is_a_dead_letter(node: garrison.Node) -> None:
    pid = await node.start_workflow(app.steps, 0, 1, id="done")
    await node.workflow("done").result()
    before = node.stats()["dead_letters"]
    await node.send(pid, "late", 1)
    assert node.stats()["dead_letters"] == before + 1
    # a payload no store can hold is refused at the call, as while the workflow ran (it
    # was dropped in silence once the workflow had ended)
    with pytest.raises(garrison.PayloadError, match="the payload of message 'late' to "
                                                     "workflow 'done'"):
        await node.send(pid, "late", {1, 2})
    assert node.stats()["dead_letters"] == before + 1


# ------------------------------------------------------------------ spawn / EXIT
async def test_process_spawns_workflow_on_the_workflows_host(node: garrison.Node) -> None:
    async def main() -> list[Any]:
        pid = await process.spawn_monitored(app.child, 41, host="workflows")
        ev = await process.events().receive()
        return [pid.host, ev.kind.value, ev.pid == pid, ev.result]

    pid = await node.spawn(main)
    assert await node.wait(pid) == ["workflows", "EXIT", True, 42]


async def test_child_workflow_exit_reaches_parent_durably(node: garrison.Node) -> None:
    await node.start_workflow(app.parent, 1, id="p")
    child, kind, ev_pid, result = await node.workflow("p").result()
    assert (child, kind, ev_pid, result) == ("workflows/p.1", "EXIT", "workflows/p.1", 2)
    assert node.workflow("p.1").status() == "completed"
    await node.start_workflow(app.parent_of_failing, id="pf")
    assert await node.workflow("pf").result() == ["EXIT", "RuntimeError: child broke"]


async def _waits_for_go() -> str:
    await process.inbox().receive()
    return "went"


async def _demonitors_its_child() -> list[Any]:
    child = await process.spawn(_waits_for_go)
    process.demonitor(child)
    await process.send(child, "go")
    ev = await process.events().receive(timeout=60)
    return [] if ev is None else [ev.kind.value, str(ev.pid), ev.result]


async def test_demonitor_does_not_silence_a_childs_exit(node: garrison.Node,
                                                        autojump_clock: Any) -> None:
    """A child's EXIT always reaches its parent (API.md): a parent's ``demonitor`` of its
    child removed the stored monitor the EXIT comes through, and the EXIT never came."""
    await node.start_workflow(_demonitors_its_child, id="dp")
    assert await node.workflow("dp").result() == ["EXIT", "workflows/dp.1", "went"]


async def test_workflow_monitors_workflow(node: garrison.Node) -> None:
    target = await node.start_workflow(app.receiver, id="target")
    await node.start_workflow(app.watcher, str(target), id="w")
    await wait_status(node.workflow("w"), "waiting")
    await node.send(target, "t", 5)
    assert await node.workflow("w").result() == ["EXIT", ["t", 5]]
    # monitoring a finished workflow gives its EXIT at once
    await node.start_workflow(app.watcher, str(target), id="w2")
    assert await node.workflow("w2").result() == ["EXIT", ["t", 5]]


# ------------------------------------------------------------------ cancel
async def test_cancel_waiting_workflow_compensates_and_ends_cancelled(
        node: garrison.Node) -> None:
    await node.start_workflow(app.cancellable, id="cx")
    handle = node.workflow("cx")
    await wait_status(handle, "waiting")
    await handle.cancel()
    with pytest.raises(garrison.WorkflowCancelled):
        await handle.result()
    assert handle.status() == "cancelled"
    assert app.LOG == [("add_one", 1), ("compensating",), ("add_one", 100)]
    assert kinds(handle) == [("activity", "workflow_app:add_one"), ("cancel", ""),
                             ("activity", "workflow_app:add_one")]


async def test_cancel_sleeping_workflow(node: garrison.Node, autojump_clock: Any) -> None:
    await node.start_workflow(app.cancellable_sleep, id="cs")
    await wait_status(node.workflow("cs"), "sleeping")
    await node.workflow("cs").cancel()
    with pytest.raises(garrison.WorkflowCancelled):
        await node.workflow("cs").result()
    assert trio.current_time() < 3600


# ------------------------------------------------------------------ recorded values, info
async def test_info_history_and_version(node: garrison.Node) -> None:
    await node.start_workflow(app.info_flow, id="i")
    got = await node.workflow("i").result()
    assert got == {"id": "i", "name": "workflow_app:info_flow", "host": "workflows",
                   "len": 1, "size": True}
    await node.start_workflow(app.versioned, id="v")
    assert await node.workflow("v").result() == 2


async def test_version_calls_after_a_restart_do_not_walk_the_replayed_journal(
        tmp_path: Path, autojump_clock: object) -> None:
    """Each live ``workflow.version()`` of a resumed run looked through every replayed
    record for one at or after its seq: a loop with a gate per step slowed down
    quadratically after a restart (20,000 steps: 0.8 s before, 14 s after)."""
    db = str(tmp_path / "v.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.versioned_loop, 20, id="loop")
        await wait_status(node.workflow("loop"), "waiting")
    walks: list[int] = []

    class Counted(dict):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            walks.append(len(self))
            return super().__iter__()

    async with garrison.open_node(store=db) as node:
        await wait_status(node.workflow("loop"), "waiting")
        cursor = node.hosts["workflows"].active["loop"].cursor
        cursor.entries = Counted(cursor.entries)
        await node.workflow("loop").signal("go")
        assert await node.workflow("loop").result() == 2 * 40
    assert walks == []


async def test_attrs_search_and_state(node: garrison.Node) -> None:
    pid = await node.start_workflow(app.attrs_flow, id="a1")
    await wait_status(node.workflow("a1"), "waiting")
    found = node.workflows(search={"status": "shipping"})
    assert [s.workflow_id for s in found] == ["a1"]
    assert found[0].memo == {"note": "n"} and found[0].status == "waiting"
    assert node.workflow("a1").state("progress") == 50
    assert node.workflows(search={"status": "other"}) == []
    await node.send(pid, "go")
    await node.workflow("a1").result()
    assert [s.workflow_id for s in node.workflows(status="completed")] == ["a1"]


async def test_workflows_by_status_reads_no_finished_rows_it_was_not_asked_for(
        node: garrison.Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """``node.workflows(status="waiting")`` read every row of the store and filtered in
    Python: 50,000 finished workflows held the node's event loop for a second."""
    for i in range(3):
        await node.start_workflow(app.versioned, id=f"done-{i}")
        await node.workflow(f"done-{i}").result()
    await node.start_workflow(app.attrs_flow, id="a1")
    await wait_status(node.workflow("a1"), "waiting")
    store = node.hosts["workflows"].store
    listed = store.list_workflows
    read: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        rows = listed(*args, **kwargs)
        read.extend(r.workflow_id for r in rows)
        return rows

    monkeypatch.setattr(store, "list_workflows", counted)
    assert [s.workflow_id for s in node.workflows(status="waiting")] == ["a1"]
    assert read == ["a1"]
    assert [s.workflow_id for s in node.workflows(status=["completed", "waiting"])] == [
        "done-0", "done-1", "done-2", "a1"]


async def test_a_search_for_nan_is_a_value_error(node: garrison.Node) -> None:
    await node.start_workflow(app.attrs_flow, id="a1")
    await wait_status(node.workflow("a1"), "waiting")
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"search attribute 'status' is .*NaN and "
                                             "infinity are not JSON values"):
            node.workflows(search={"status": value})
    assert [s.workflow_id for s in node.workflows(search={"status": "shipping"})] == ["a1"]


async def test_a_search_for_a_lone_surrogate_finds_nothing(node: garrison.Node) -> None:
    """No attribute holds one (``workflow.attrs`` refuses them): nothing matches, on
    PostgreSQL too (whose jsonb refused the filter: a StoreError); a pair's escapes (an
    emoji) are no lone surrogate."""
    await node.start_workflow(app.attrs_flow, id="a1")
    await wait_status(node.workflow("a1"), "waiting")
    assert node.workflows(search={"status": "ship\udce9"}) == []
    assert node.workflows(search={"st\udce9": "shipping"}) == []
    assert node.workflows(search={"status": "\U0001f69a"}) == []
    assert [s.workflow_id for s in node.workflows(search={"status": "shipping"})] == ["a1"]


async def test_workflow_api_outside_a_workflow_raises() -> None:
    with pytest.raises(garrison.NotInProcess):
        workflow.now()
    with pytest.raises(garrison.NotInProcess):
        await workflow.sleep(1)


async def sleeps_in_its_own_nursery(receive_first: bool = False) -> list[str]:
    errors: list[str] = []
    if receive_first:  # (a receive once cleared the task the guard compares against)
        await process.inbox().receive()

    async def nap(seconds: int) -> None:
        try:
            await workflow.sleep(seconds)
        except garrison.NotInProcess as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(nap, 2)
        nursery.start_soon(nap, 1)
    return errors


@pytest.mark.parametrize("receive_first", [False, True])
async def test_durable_calls_from_a_task_of_the_workflows_own_nursery_are_refused(
        node: garrison.Node, receive_first: bool) -> None:
    # the tasks took journal seqs in trio's scheduling order, which a replay need not
    # repeat (a sleep replayed where the other was recorded): refused, naming the way
    # out; after a message was received too
    await node.start_workflow(sleeps_in_its_own_nursery, receive_first, id="nursery")
    if receive_first:
        await node.workflow("nursery").signal("go")
    errors = await node.workflow("nursery").result()
    assert len(errors) == 2
    assert "'nursery'" in errors[0] and "another trio task" in errors[0]
    assert "workflow.start()" in errors[0]
    assert [k for k, _ in kinds(node.workflow("nursery"))] == (
        ["receive"] if receive_first else [])


async def test_a_process_a_workflow_spawns_is_not_that_workflow(node: garrison.Node) -> None:
    """The spawned process inherits nothing of the workflow: its ``@activity`` calls
    are plain calls and the workflow API refuses it (before, both went into the
    workflow's journal, from another task, and its replay diverged)."""
    await node.start_workflow(app.spawns_a_helper, 1, id="spawner")
    out = await node.workflow("spawner").result()
    assert out["add_one"] == 101 and out["own"] == 2
    assert "must run inside a workflow" in out["now"]
    assert kinds(node.workflow("spawner")) == [
        ("spawn", "helper_of_a_workflow"), ("receive", "inbox"),
        ("activity", "workflow_app:add_one")]
    assert sorted(app.LOG) == [("add_one", 1), ("add_one", 100)]


async def test_promise_resolved_from_outside_wins_the_race(node: garrison.Node,
                                                           autojump_clock: Any) -> None:
    await node.start_workflow(app.promise_or_deadline, "1d", id="p")
    handle = node.workflow("p")
    await wait_status(handle, "waiting")
    await handle.promise("approval").resolve({"by": "ann"})
    assert await handle.result() == {"by": "ann"}
    assert trio.current_time() < 10
    with pytest.raises(garrison.PromiseAlreadyCompleted):
        await handle.promise("approval").resolve("again")
    assert handle.promise("approval").status() == "resolved"
    assert [k for k, _ in kinds(handle)] == ["promise", "timer", "first", "await_promise"]


async def test_promise_rejected_and_timer_that_wins(node: garrison.Node,
                                                    autojump_clock: Any) -> None:
    await node.start_workflow(app.promise_or_deadline, "1d", id="r")
    await wait_status(node.workflow("r"), "waiting")
    await node.workflow("r").promise("approval").reject("no budget")
    assert await node.workflow("r").result() == (
        "rejected: promise 'approval' of workflow 'r' was rejected: no budget")
    t0 = trio.current_time()
    await node.start_workflow(app.promise_or_deadline, "2h", id="t")
    assert await node.workflow("t").result() == "expired"
    assert trio.current_time() - t0 == pytest.approx(7200)


async def test_started_activities_and_gather(node: garrison.Node) -> None:
    await node.start_workflow(app.fan_out, id="g")
    assert await node.workflow("g").result() == [2, 11, "ValueError"]
    assert [k for k, _ in kinds(node.workflow("g"))] == ["activity"] * 3


async def test_a_killed_workflow_stops_its_started_activities_before_it_ends(
        node: garrison.Node) -> None:
    pid = await node.start_workflow(app.starts_and_waits, "k", id="k")
    with trio.fail_after(5):
        while app.LOG != [("held", "k")]:
            await trio.sleep(0.001)

    async def terminator() -> None:
        await process.terminate(pid)

    await node.wait(await node.spawn(terminator))
    with pytest.raises(garrison.WorkflowFailed, match="Terminated"):
        await node.workflow("k").result()
    # stopped before the workflow ended, and never recorded
    assert app.LOG == [("held", "k"), ("held cancelled", "k")]
    assert kinds(node.workflow("k")) == []


async def test_activities_a_run_did_not_await_are_cancelled_when_it_ends(
        node: garrison.Node) -> None:
    await node.start_workflow(app.starts_and_returns, "r", id="r")
    assert await node.workflow("r").result() == "returned"
    assert app.LOG == [("held", "r"), ("held cancelled", "r")]
    assert [k for k, _ in kinds(node.workflow("r"))] == ["sleep"]  # the activity: never
    # each run of a workflow that continues as new stops what it started first
    await node.start_workflow(app.starts_and_continues, 2, id="c")
    assert await node.workflow("c").result() == 0
    assert app.LOG[2:] == [("held", "run 2"), ("held cancelled", "run 2"),
                           ("held", "run 1"), ("held cancelled", "run 1"),
                           ("held", "run 0"), ("held cancelled", "run 0")]


def _recording_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error of garrison's own while a started activity's result is recorded: it
    escapes the activity's task (a result its annotation refuses did, before it was
    made the activity's final failure)."""
    from garrison.hosts.workflow import _activities

    def broken(plain: Any, hint: Any, name: str, *_mocks: Any) -> Any:
        raise RuntimeError(f"recording the result of {name} failed: not a number")

    monkeypatch.setattr(_activities, "_restored", broken)


async def test_an_error_escaping_a_started_activity_fails_its_workflow(
        node: garrison.Node, monkeypatch: pytest.MonkeyPatch) -> None:
    _recording_fails(monkeypatch)
    pid = await node.start_workflow(app.starts_a_bad_result, id="bad")
    with pytest.raises(garrison.ProcessError) as raised:
        await node.wait(pid)
    assert node.workflow("bad").status() == "failed"
    assert "not a number" in str(raised.value)


async def test_an_error_escaping_a_started_activity_after_the_function_returned_fails_it(
        node: garrison.Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """The function returned while the activity's result was being recorded: the error
    escapes when nothing of the function is left to cancel, and is not lost."""
    _recording_fails(monkeypatch)
    pid = await node.start_workflow(app.returns_while_a_bad_result_is_recorded, id="late")
    with pytest.raises(garrison.ProcessError, match="not a number"):
        await node.wait(pid)
    assert node.workflow("late").status() == "failed"
    assert [k for k, _ in kinds(node.workflow("late"))] == []  # (it failed before that)


@pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
def test_an_escaping_error_fails_its_workflow_without_strict_exception_groups(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same in a trio run whose nurseries raise an error bare, not in a group
    (deprecated in trio, still there)."""
    _recording_fails(monkeypatch)

    async def main() -> None:
        async with garrison.open_node() as node:
            pid = await node.start_workflow(app.starts_a_bad_result, id="bad")
            with pytest.raises(garrison.ProcessError, match="not a number"):
                await node.wait(pid)
            assert node.workflow("bad").status() == "failed"

    trio.run(main, strict_exception_groups=False)


async def test_each_started_activity_sees_the_context_it_was_started_in(
        node: garrison.Node) -> None:
    """As a nursery's start_soon gives: a copy of the context at the start, also for
    starts made before the run's activity nursery has opened."""
    await node.start_workflow(app.starts_under_two_tags, id="tags")
    assert await node.workflow("tags").result() == ["1:first", "2:second"]


async def test_continue_as_new_starts_a_fresh_journal(node: garrison.Node) -> None:
    await node.start_workflow(app.countdown, 3, 0, id="cd")
    total, length, has_run_id = await node.workflow("cd").result()
    assert (total, length, has_run_id) == (6, 1, True)
    # seq 0 records the state the run started with; then its one activity
    assert [r.kind for r in node.workflow("cd").history()] == ["continued", "activity"]
    assert [x[1] for x in app.LOG] == [3, 2, 1, 0]


async def test_promise_survives_a_restart(store_spec: str) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.promise_or_deadline, "1d", id="p")
        await wait_status(node.workflow("p"), "waiting")
    with open_store(db) as store:  # resolved while no node runs
        store.resolve_promise("p", "approval", "offline-ok")
    async with garrison.open_node(store=db) as node:
        assert await node.workflow("p").result() == "offline-ok"


# ------------------------------------------------------------------ restarts in one process
async def test_restart_resumes_waiting_workflow_and_replays_values(store_spec: str) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.random_then_wait, id="rv")
        await wait_status(node.workflow("rv"), "waiting")
        first = [r.outcome for r in node.workflow("rv").history()]
    async with garrison.open_node(store=db) as node:
        handle = node.workflow("rv")
        assert handle.status() == "waiting" or handle.status() == "running"
        await handle.signal("go")
        values = await handle.result()
        assert values[:3] == [dt.datetime.fromtimestamp(first[0], dt.UTC).isoformat(),
                              first[1], first[2]]


@pytest.mark.parametrize("flow", ["keyed_effect", "keyed_background_effect"])
async def test_a_recorded_value_is_committed_before_an_activity_runs(store_spec: str,
                                                                     flow: str) -> None:
    """``key = workflow.uuid4()`` then an activity with that key: the activity may be
    run again (the node went while it ran), and must get the same key then, or the
    idempotency key the user relied on is a new one and the effect happens twice. The
    recorded values were buffered until the activity's own commit, after it ran."""
    db = store_spec
    app.KEYS_SEEN.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(getattr(app, flow), id="k")
        with trio.fail_after(5):
            while not app.KEYS_SEEN:  # the first call runs (and never returns)...
                await trio.sleep(0.001)
    # ...and the node goes: nothing more of this run is journaled
    async with garrison.open_node(store=db) as node:
        with trio.fail_after(5):
            key = await node.workflow("k").result()
    assert [key, key] == app.KEYS_SEEN


async def test_closing_the_node_journals_nothing(store_spec: str) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.receiver, id="r")
        await wait_status(node.workflow("r"), "waiting")
    with open_store(db) as store:
        rec = store.get_workflow("r")
        # its last status is kept in its row (for `garrison workflows list`), not journaled
        assert rec is not None and rec.status == "waiting"
        assert store.journal("r") == []


async def test_a_workflow_that_ends_as_the_node_closes_keeps_its_end(store_spec: str) -> None:
    """The close writes the status of each parked workflow (``waiting``, ``sleeping``)
    after committing what the write-soon task held: a workflow that ended meanwhile (a
    cancel among those writes woke it) got its parked status back over its end, and
    looked unfinished to tools and to the next node."""
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.receiver, id="r")
        await wait_status(node.workflow("r"), "waiting")
        # what ``process.cancel(pid)`` does first: the request is committed soon
        assert node.hosts["workflows"].request_cancel("r")
    with open_store(db) as store:
        rec = store.get_workflow("r")
        assert rec is not None and [e.kind for e in store.journal("r")] == ["cancel"]
        assert rec.status == "cancelled"


async def test_second_node_on_the_same_store_is_refused(store_spec: str) -> None:
    db = store_spec
    async with garrison.open_node(store=db):
        with pytest.raises(garrison._errors.StoreLocked):
            async with garrison.open_node(store=db):
                pass


async def test_store_instance_is_used_as_is(store_spec: str) -> None:
    store = open_store(store_spec, synchronous="full")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(app.steps, 0, 3, id="x")
        assert await node.workflow("x").result() == 3
    assert store.get_workflow("x").status == "completed"
    store.close()


async def test_message_sent_while_no_node_runs(store_spec: str) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.receiver, id="r")
        await wait_status(node.workflow("r"), "waiting")
    with open_store(db) as store:  # a tool, while no node runs
        store.deliver("r", "offline", 7)
    async with garrison.open_node(store=db) as node:
        assert await node.workflow("r").result() == ["offline", 7]


async def test_message_from_a_tool_while_the_node_runs(store_spec: str) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.receiver, id="r")
        await wait_status(node.workflow("r"), "waiting")
        with open_store(db, lock=False) as tool:
            tool.deliver("r", "from-tool", 8)
        with trio.fail_after(5):
            assert await node.workflow("r").result() == ["from-tool", 8]


async def test_a_second_node_on_an_unlocked_store_sends_starts_and_waits(
        store_spec: str) -> None:
    db = store_spec
    async with garrison.open_node(store=db) as owner:
        await owner.start_workflow(app.receiver, id="r")
        await wait_status(owner.workflow("r"), "waiting")
        tool_store = open_store(db, lock=False)
        async with garrison.open_node(store=tool_store) as other:
            # a message from the other node is committed before send returns
            await other.send(garrison.Pid("workflows", "r"), "hi", 1)
            with open_store(db, lock=False) as peek:
                assert [m.topic for m in peek.pending_messages("r")] in (["hi"], [])
            with trio.fail_after(5):
                assert await other.workflow("r").result() == ["hi", 1]
            # the other node starts a workflow; the owner runs it
            await other.start_workflow(app.steps, 0, 2, id="s")
            with trio.fail_after(5):
                assert await other.workflow("s").result() == 2
            assert "s" not in other.hosts["workflows"].active
        tool_store.close()


async def test_workflows_filter_on_live_status(node: garrison.Node, autojump_clock: Any) -> None:
    await node.start_workflow(app.receiver, id="waits")
    await node.start_workflow(app.sleeper, "1h", id="sleeps")
    await wait_status(node.workflow("sleeps"), "sleeping")
    await wait_status(node.workflow("waits"), "waiting")
    assert [w.workflow_id for w in node.workflows(status="waiting")] == ["waits"]
    assert sorted(w.workflow_id for w in node.workflows(status=["sleeping", "waiting"])) == [
        "sleeps", "waits"]


async def test_workflow_whose_code_is_gone_is_blocked_not_failed(store_spec: str) -> None:
    db = store_spec
    with open_store(db) as store:
        from garrison.persistence import Transaction

        store.write(Transaction().create_workflow("gone", "workflow_app:no_such_fn", [],
                                                  status="running"))
    async with garrison.open_node(store=db) as node:
        if db.startswith("postgresql://"):
            # a node of a cluster (even alone) leaves it, unrun, to a node with the code
            # (README, Cluster: rolling deploys): it waits with its status, unowned
            import trio

            host = node.hosts["workflows"]
            with trio.fail_after(5):
                while host.ownership.owns("gone") or not host.ownership.refuses(
                        "workflow_app:no_such_fn"):
                    await trio.sleep(0.01)
            assert "gone" not in host.active
            assert node.workflow("gone").status() == "running"
            assert node.workflow("gone").history() == []
            return
        with pytest.raises(garrison.NonDeterminismError, match="no_such_fn") as info:
            await node.workflow("gone").result()
        assert node.workflow("gone").status() == "blocked"
    # an import, said as one (it read "diverged from its journal at seq 0 ... the code
    # now did no such function"); its module imports without it: renamed or removed
    message = str(info.value)
    assert message.startswith("workflow 'gone': its function 'workflow_app:no_such_fn' "
                              f"is not in its module ({app.__file__}) on this node "
                              "(AttributeError: "), message
    assert "diverged" not in message and "renamed or removed? " in message


async def test_a_workflow_blocked_for_its_missing_code_resumes_on_a_node_that_has_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the blocked workflow's message advises: a node started where its module
    imports resumes it."""
    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    with open_store(db) as store:
        store.write(Transaction().create_workflow("late", "late_code_mod:flow", [2]))
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.NonDeterminismError, match="No module named"):
            await node.workflow("late").result()
    code = tmp_path / "code"
    code.mkdir()
    (code / "late_code_mod.py").write_text("async def flow(x):\n    return x * 21\n")
    monkeypatch.syspath_prepend(str(code))
    async with garrison.open_node(store=db) as node:
        assert await node.workflow("late").result() == 42


async def test_a_blocked_workflow_resumed_by_a_node_with_its_code_loses_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resumed by a node that has its code, a blocked workflow kept the
    NonDeterminismError in its row until it ended: ``garrison workflows show`` said
    ``waiting`` with that error. Running again, it has no error (as after a retry)."""
    import trio

    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    with open_store(db) as store:
        store.write(Transaction().create_workflow("late", "late_waits_mod:flow", []))
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.NonDeterminismError, match="No module named"):
            await node.workflow("late").result()
        assert node.hosts["workflows"].store.get_workflow("late").error is not None
    code = tmp_path / "code"
    code.mkdir()
    (code / "late_waits_mod.py").write_text(
        "from garrison import workflow\n\n"
        "async def flow():\n    return await workflow.promise('go')\n")
    monkeypatch.syspath_prepend(str(code))
    async with garrison.open_node(store=db) as node:
        handle = node.workflow("late")
        store = node.hosts["workflows"].store
        with trio.fail_after(5):
            while store.get_workflow("late").status != "waiting":
                await trio.sleep(0.01)
        assert store.get_workflow("late").error is None
        await handle.promise("go").resolve(7)
        assert await handle.result() == 7


@pytest.mark.parametrize(("name", "args", "why"), [
    ("workflow_app:returns_opaque_sync", [], "a workflow function is an async function"),
    ("workflow_app:add_one", [1], "it is an activity, not a workflow function"),
    ("workflow_app:LOG", [], "a workflow function is an async function"),
])
async def test_workflow_whose_function_is_no_workflow_function_now_is_blocked_not_failed(
        tmp_path: Path, name: str, args: list[Any], why: str) -> None:
    """A recorded name that is no workflow function now (made a sync ``def``, an
    activity, no function) is a difference, as the replay says (``code_gone``): the
    node awaited what it imported, and the TypeError failed the workflow for good."""
    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    with open_store(db) as store:
        store.write(Transaction().create_workflow("made-sync", name, args, status="running"))
    async with garrison.open_node(store=db) as node:
        handle = node.workflow("made-sync")
        with pytest.raises(garrison.NonDeterminismError) as info:
            await handle.result()
        assert handle.status() == "blocked"
        assert handle.history() == []  # nothing journaled: no failure of it recorded
    assert str(info.value).startswith(
        f"workflow 'made-sync' runs {name!r}, which is no workflow function now: "), info.value
    assert why in str(info.value) and "A node running this code blocks" in str(info.value)
    assert app.LOG == []  # the sync def (or activity) never ran
    with open_store(db) as store:
        record = store.get_workflow("made-sync")
        assert (record.status, record.attempt) == ("blocked", 1)


async def test_a_workflow_blocked_for_a_sync_function_resumes_once_it_is_async_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a node does where the code is fixed: it resumes the blocked workflow."""
    import sys

    from garrison.persistence import Transaction

    db = str(tmp_path / "wf.db")
    with open_store(db) as store:
        store.write(Transaction().create_workflow("fixed", "made_sync_mod:flow", [2]))
    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(code))
    (code / "made_sync_mod.py").write_text("def flow(x):\n    return x * 21\n")
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.NonDeterminismError, match="no workflow function now"):
            await node.workflow("fixed").result()
    monkeypatch.delitem(sys.modules, "made_sync_mod")
    (code / "made_sync_mod.py").write_text("async def flow(x):\n    return x * 21\n")
    async with garrison.open_node(store=db) as node:
        assert await node.workflow("fixed").result() == 42
        assert node.workflow("fixed").status() == "completed"


def test_a_cluster_node_leaves_a_workflow_whose_function_is_now_sync_to_another() -> None:
    """On a cluster, a claimed workflow whose function is no workflow function here (a
    rolling deploy that made it a sync ``def``) is given up unrun, as one whose code
    does not import, for a node whose code runs it: once refused with the reason, then
    refused by its name (one warning per name)."""
    from garrison.hosts.workflow._recovery import runnable
    from garrison.persistence import WorkflowRecord

    refused: list[tuple[str, str, str | None]] = []

    class Ownership:
        def refuses(self, name: str) -> bool:
            return any(n == name for _, n, _ in refused)

        def refuse(self, wid: str, name: str, error: BaseException | None) -> None:
            refused.append((wid, name, None if error is None else str(error)))

    host: Any = SimpleNamespace(ownership=Ownership())
    for wid in ("s1", "s2"):
        record = WorkflowRecord(workflow_id=wid, name="workflow_app:returns_opaque_sync",
                                status="running", input=[])
        assert runnable(host, record) is False
    [(wid, name, error), again] = refused
    assert (wid, name) == ("s1", "workflow_app:returns_opaque_sync")
    assert error is not None and "a workflow function is an async function" in error
    assert again == ("s2", "workflow_app:returns_opaque_sync", None)
    runs = WorkflowRecord(workflow_id="a1", name="workflow_app:steps", status="running",
                          input=[])
    assert runnable(host, runs) is True


async def test_workflow_send_to_finished_workflow_is_a_dead_letter(node: garrison.Node) -> None:
    target = await node.start_workflow(app.steps, 0, 1, id="over")
    await node.workflow("over").result()
    before = node.stats()["dead_letters"]
    await node.start_workflow(app.sender, str(target), 2, id="snd")
    assert await node.workflow("snd").result() == 2
    assert node.stats()["dead_letters"] == before + 2
    assert [r.kind for r in node.workflow("snd").history()] == ["send", "send"]


async def test_workflow_calls_a_process_and_a_workflow(node: garrison.Node) -> None:
    await node.start_workflow(app.calls_a_process, id="caller")
    assert await node.workflow("caller").result() == ["echo:1", {"echo": 2}]
    assert [k for k, _ in kinds(node.workflow("caller"))] == [
        "spawn", "call", "spawn", "call", "terminate"]


async def test_a_payload_sent_to_a_plain_process_is_its_own_copy(
        node: garrison.Node) -> None:
    """A workflow's send to a plain process handed over the workflow's own object: a
    receiver that kept it and changed it later changed the workflow's variable, live
    only (a replay sends nothing), so the workflow ended differently after a crash."""
    await node.start_workflow(app.sends_to_a_keeper, id="keeps")
    assert await node.workflow("keeps").result() == ["mine"]


async def test_process_exit_reaches_a_workflow_durably(node: garrison.Node) -> None:
    await node.start_workflow(app.process_child, id="pc")
    assert await node.workflow("pc").result() == [True, "EXIT", "OSError: disk on fire"]
    rec = node.workflow("pc").history()[-1]
    assert rec.kind == "receive" and rec.outcome["event"]["error"]["type"] == "OSError"


async def test_process_cancel_and_terminate_a_workflow(node: garrison.Node) -> None:
    wpid = await node.start_workflow(app.cancellable, id="by-proc")
    await wait_status(node.workflow("by-proc"), "waiting")

    async def canceller() -> None:
        await process.cancel(wpid, timeout="5s")

    await node.wait(await node.spawn(canceller))
    assert node.workflow("by-proc").status() == "cancelled"

    tpid = await node.start_workflow(app.receiver, id="term")
    await wait_status(node.workflow("term"), "waiting")

    async def terminator() -> None:
        await process.terminate(tpid)

    await node.wait(await node.spawn(terminator))
    with pytest.raises(garrison.WorkflowFailed, match="Terminated"):
        await node.workflow("term").result()


async def test_linked_process_dies_with_a_failing_workflow(node: garrison.Node) -> None:
    async def linker() -> None:
        await process.spawn_linked(app.fails, host="workflows")
        await trio.sleep_forever()

    pid = await node.spawn(linker)
    with pytest.raises(garrison.ProcessError, match="LinkedProcessFailed"):
        await node.wait(pid)


async def test_config_workflow_host_has_its_own_store(store_spec: str) -> None:
    from garrison.config import load_config_text

    db = store_spec
    config = load_config_text(
        "version: '1.0'\nnamespace: app\nentries:\n"
        f"  - {{name: orders, kind: workflow.host, store: '{db}', synchronous: full}}\n")
    async with garrison.open_node(config=config) as node:
        pid = await node.start_workflow(app.steps, 0, 2, id="o1", host="app:orders")
        assert pid == garrison.Pid("app:orders", "o1")
        assert await node.workflow("o1", host="app:orders").result() == 2
        assert node.hosts["app:orders"].store.synchronous == "full"
    with open_store(db) as store:
        assert store.get_workflow("o1").status == "completed"


async def keyword_only(n: int, *, rush: bool) -> int:
    """A keyword-only parameter without a default: no start can give it."""
    return n


async def start_child_with(args: list[Any]) -> str:
    """A workflow spawning a child workflow with ``args``; the error it got, by type."""
    try:
        await process.spawn(app.steps, *args, host="workflows")
    except TypeError as exc:
        return f"TypeError: {exc}"
    return "started"


async def test_bad_arguments_fail_at_start_workflow_with_nothing_stored(
        store_spec: str) -> None:
    """start_workflow with arguments the workflow cannot take (too few, too many, a value
    that cannot be its parameter's type) raises at the call and stores nothing, as
    ``garrison workflows start`` and a schedule's input do: the workflow was created and
    failed at once. From a workflow, the child's spawn raises in the parent."""
    async with garrison.open_node(store=store_spec) as node:
        with pytest.raises(TypeError, match=r"workflow workflow_app:steps \(id 'none'\) "
                           r"takes 1 to 2 argument\(s\) \(x, n=10\), but it was given 0: \[\]"):
            await node.start_workflow(app.steps, id="none")
        with pytest.raises(TypeError, match=r"takes 1 to 2 argument\(s\) \(x, n=10\), but "
                           r"it was given 3: \[1, 2, 3\] \(too many positional"):
            await node.start_workflow(app.steps, 1, 2, 3, id="three")
        with pytest.raises(garrison.PayloadError, match=r"argument 1 \(order\) of workflow "
                           r"workflow_app:typed \(id 'untyped'\)"):
            await node.start_workflow(app.typed, {"id": 1}, id="untyped")
        with pytest.raises(garrison.PayloadError, match=r"argument 1 \(order\) of workflow "
                           r"workflow_app:typed \(id 'a-string'\) as Order: expected a JSON "
                           r"object with its fields \(id, [a-z, ]+\), got str \"o-18\""):
            await node.start_workflow(app.typed, "o-18", id="a-string")
        with pytest.raises(TypeError, match=r"takes 1 argument\(s\) \(order\), but it was "
                           r"given 2"):
            await node.start_workflow(app.typed, 1, 2, id="two")
        # (it said 'takes 1 argument(s) (n, *, rush), but it was given 1': a workflow is
        # given positional arguments only, which can never give rush)
        for args in [(1,), (1, True)]:
            with pytest.raises(TypeError, match=(
                    r"^workflow test_workflow:keyword_only \(id 'kw'\) has no default for "
                    r"the keyword-only parameter\(s\) 'rush' of \(n, \*, rush\), but a "
                    r"workflow is given positional arguments only \(no start can give a "
                    r"keyword argument\): give each a default, or make it positional$")):
                await node.start_workflow(keyword_only, *args, id="kw")
        assert node.workflows() == []
        assert await node.start_workflow(app.steps, 1, 2, id="fine") is not None
        assert await node.workflow("fine").result() == 3
        await node.start_workflow(start_child_with, [], id="parent")
        said = await node.workflow("parent").result()
        assert said.startswith(
            "TypeError: workflow workflow_app:steps (id 'parent.1') takes 1 to 2"), said
        assert sorted(s.workflow_id for s in node.workflows()) == ["fine", "parent"]


async def continues_with(n: int, bad: list[Any], catch: bool = True) -> str:
    """Continues as new with ``bad`` as its arguments; what the call raised, by type
    (raised on when not ``catch``)."""
    try:
        workflow.continue_as_new(*bad)
    except (TypeError, garrison.PayloadError) as exc:
        if not catch:
            raise
        return f"{type(exc).__name__}: {exc}"
    return "not reached"


async def test_bad_arguments_fail_at_continue_as_new_with_nothing_stored(
        node: garrison.Node) -> None:
    """continue_as_new with arguments the workflow cannot take raises at the call, as
    start_workflow does (TypeError for too few or too many, PayloadError for a value
    that cannot be its parameter's type), and stores nothing: no new run committed
    with them to fail at once, and at every retry."""
    name = "test_workflow:continues_with"
    await node.start_workflow(continues_with, 0, [1, 2, 3, 4], id="many")
    said = await node.workflow("many").result()
    assert said.startswith(f"TypeError: workflow {name} takes 2 to 3 argument(s) (n, bad, "
                           "catch=True), but workflow.continue_as_new() gave it 4: "
                           "[1, 2, 3, 4] (too many positional"), said
    await node.start_workflow(continues_with, 0, [], id="none")
    said = await node.workflow("none").result()
    assert said.startswith(f"TypeError: workflow {name} takes 2 to 3"), said
    await node.start_workflow(continues_with, 0, ["notint", []], id="untyped")
    said = await node.workflow("untyped").result()
    assert said.startswith(f"PayloadError: cannot restore argument 1 (n) of workflow {name} "
                           "as int"), said
    for wid in ("many", "none", "untyped"):
        assert [r.kind for r in node.workflow(wid).history()] == [], wid
    # not caught: the run fails there, its journal kept (a retry does the same, not a
    # run that fails for ever on arguments it was never given)
    await node.start_workflow(continues_with, 0, [1, 2, 3, 4], False, id="uncaught")
    with pytest.raises(garrison.WorkflowFailed, match="continue_as_new"):
        await node.workflow("uncaught").result()
    assert [r.kind for r in node.workflow("uncaught").history()] == []


async def swallows_continue(n: int) -> str:
    """Continues as new once for real (``n`` 1), then calls it again and swallows its
    exception with a bare ``except:``."""
    if n == 1:
        workflow.continue_as_new(0)
    try:
        workflow.continue_as_new(5)
    except:  # noqa: E722 (what the warning is for)
        workflow.set_state("swallowed", True)
    return "went on"


async def test_a_continue_as_new_the_code_swallows_is_warned_of(
        node: garrison.Node, caplog: pytest.LogCaptureFixture) -> None:
    """``workflow.continue_as_new`` raises (README: it never returns); a bare ``except:``
    or ``except BaseException:`` around it swallowed that, and the run completed with
    what the code returned then, no new run started, in silence. It is warned of,
    once, naming the workflow; its first run's continue, which went through, is not."""
    caplog.set_level(logging.WARNING, logger="garrison")
    await node.start_workflow(swallows_continue, 1, id="sw")
    assert await node.workflow("sw").result() == "went on"
    said = [r.getMessage() for r in caplog.records if "continue_as_new" in r.getMessage()]
    assert said == ["workflow sw: its code returned after workflow.continue_as_new(), "
                    "whose exception it caught (a bare except: or an except "
                    "BaseException: that did not raise it again): the run completed with "
                    "what it returned, and no new run started"], said  # (its 2nd run's)
    assert node.workflow("sw").state("swallowed") is True


async def _result_raises(handle: garrison.WorkflowHandle, outcome: list[str]) -> None:
    """``handle.result()`` raises RuntimeError (the node stopped): its message goes to
    ``outcome``."""
    with pytest.raises(RuntimeError) as info:
        await handle.result()
    outcome.append(str(info.value))


async def test_a_result_waiting_for_a_queued_workflow_raises_when_the_node_closes(
        autojump_clock: Any, tmp_path: Any) -> None:
    """A workflow held in the queue leaves the host unended as the node closes: the
    result() waiting for it raises too (it waited for ever)."""
    db = str(tmp_path / "s.db")
    outcome: list[str] = []

    async with trio.open_nursery() as outer:
        async with garrison.open_node(store=db, max_concurrent=1) as node:
            await node.start_workflow(app.receiver, id="w1")
            await node.start_workflow(app.receiver, id="w2")
            assert node.workflow("w2").status() == "pending"
            outer.start_soon(_result_raises, node.workflow("w2"), outcome)
            await trio.sleep(1)
        with trio.fail_after(5):
            while not outcome:
                await trio.sleep(0.1)
    assert "the node has stopped" in outcome[0]


async def _awaits_result(handle: garrison.WorkflowHandle) -> None:
    await handle.result()


@pytest.mark.parametrize("host", ["processes", "app:pool"])
async def test_a_process_waiting_for_a_workflow_s_result_is_stopped_quietly(
        autojump_clock: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture,
        host: str) -> None:
    """A node's stop parks its workflows before it stops its processes: a process
    waiting for a workflow's ``result()`` is stopped as every other process (not
    failed with "the node has stopped", logged with a traceback at every stop; a
    review found it once config process hosts no longer stopped first)."""
    config = tmp_path / "app.yaml"
    config.write_text('version: "1.0"\nnamespace: app\nentries:\n'
                      '  - {name: pool, kind: process.host}\n')
    async with garrison.open_node(config=str(config), store=str(tmp_path / "s.db")) as node:
        await node.start_workflow(app.receiver, id="w1")
        await wait_status(node.workflow("w1"), "waiting")
        pid = await node.spawn(_awaits_result, node.workflow("w1"), host=host)
        await trio.sleep(0.5)
        caplog.clear()
        caplog.set_level(logging.INFO)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    with pytest.raises(garrison.ProcessError, match="Shutdown"):
        await node.wait(pid)


async def test_after_the_node_closed_result_raises_and_status_is_the_stored_one(
        autojump_clock: Any, tmp_path: Any) -> None:
    """A waiting ``result()`` wakes when the node closes, and one called afterwards
    raises at once, like the handle's other calls (it waited for ever); ``status()``
    says what the store holds (``waiting``), not ``running``."""
    db = str(tmp_path / "s.db")
    outcome: list[str] = []

    async with trio.open_nursery() as outer:
        async with garrison.open_node(store=db) as node:
            await node.start_workflow(app.receiver, id="w1")
            handle = node.workflow("w1")
            outer.start_soon(_result_raises, handle, outcome)
            await trio.sleep(1)
            assert handle.status() == "waiting"
        with trio.fail_after(1):
            while not outcome:
                await trio.sleep(0.1)
    assert outcome == ["the node has stopped: workflow 'w1' did not end here (it is "
                       "waiting; it resumes when a node opens its store again)"]
    assert handle.status() == "waiting"
    with trio.fail_after(1), pytest.raises(RuntimeError, match="the node has stopped"):
        await handle.result()
    with pytest.raises(RuntimeError, match="the node has stopped"):
        await node.wait(handle.pid)
    with pytest.raises(RuntimeError, match=r"node '.*' has stopped, and its store with it"):
        handle.history()  # (it said "store '...' is closed")
    async with garrison.open_node(store=db) as node:  # it resumes on the next node
        await node.workflow("w1").signal("go", 7)
        assert await node.workflow("w1").result() == ["go", 7]


async def test_a_stopped_node_s_stats_count_no_live_process(
        autojump_clock: Any, tmp_path: Any) -> None:
    """Once the node stopped, its suspended workflows wait in the store, not live: its
    ``stats()`` counted them as ``processes`` still (7, with ``running`` 0)."""
    async def forever() -> None:
        await trio.sleep_forever()

    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        for _ in range(2):
            await node.start_workflow(app.sleeper, "1h")
        await node.spawn(forever)
        await trio.sleep(0.1)
        assert node.stats()["processes"] == 3
    assert node.stats()["processes"] == 0
    assert node.stats()["workflow_queues"]["workflows"]["running"] == 0


async def test_after_an_in_memory_node_closed_result_says_nothing_resumes_it(
        autojump_clock: Any) -> None:
    """It said the workflow resumes when a node opens its store again: that store was
    in memory, gone with the node."""
    async with garrison.open_node() as node:
        await node.start_workflow(app.receiver, id="w1")
        await trio.sleep(1)
    with pytest.raises(RuntimeError) as raised:
        await node.workflow("w1").result()
    assert str(raised.value) == (
        "the node has stopped: workflow 'w1' did not end here (it was waiting; its store "
        "was in memory and went with the node: nothing resumes it)")


@pytest.mark.parametrize(("target", "error"), [
    ("calls_sys_exit", "SystemExit: 3"),
    ("raises_asyncio_cancelled", "CancelledError: from asyncio")])
async def test_a_base_exception_in_a_workflow_fails_that_workflow_only(
        node: garrison.Node, target: str, error: str) -> None:
    """``sys.exit()`` in workflow code, or another BaseException that is not trio's
    (asyncio's CancelledError), fails the workflow as any exception (journaled); it used
    to escape the host and stop the node."""
    await node.start_workflow(app.receiver, id="other")
    await node.start_workflow(getattr(app, target), id="quits")
    with pytest.raises(garrison.WorkflowFailed, match=error):
        await node.workflow("quits").result()
    assert node.workflow("quits").status() == "failed"
    await node.workflow("other").signal("still", "here")
    assert await node.workflow("other").result() == ["still", "here"]


async def test_a_client_awaiting_a_workflow_the_node_blocked_gets_its_error(
        tmp_path: Path) -> None:
    """README: ``result()`` raises the NonDeterminismError that blocks a workflow. From
    another process (a store opened unlocked: a web app awaiting a workflow the node
    runs) it waited for ever: a client watched the store for as long as the workflow
    was unfinished, and a blocked one is."""
    import trio

    from garrison.persistence import SQLiteStore, Transaction

    db = str(tmp_path / "app.db")
    async with garrison.open_node(store=db) as node:
        async with garrison.open_node(store=SQLiteStore(db, lock=False)) as client:
            client.hosts["workflows"].store.write(Transaction().create_workflow(
                "gone", "workflow_app:no_such_fn", []))
            with trio.fail_after(10):  # (it waited for ever: TooSlowError)
                with pytest.raises(garrison.NonDeterminismError, match="no_such_fn"):
                    await client.workflow("gone").result()
            assert client.workflow("gone").status() == "blocked"
        assert node.workflow("gone").status() == "blocked"


async def test_a_client_awaiting_a_workflow_no_node_runs_says_why_it_waits(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, autojump_clock: object) -> None:
    """A web app (a client: the store opened unlocked) starts a workflow and awaits it
    while no node holds the store: it waited without a word, the workflow ``pending``
    for ever. It waits still (a node may open the store), and says once why, naming
    the workflow and the store; with a node running there is no such line."""
    import trio

    from garrison.persistence import SQLiteStore

    caplog.set_level(logging.WARNING, logger="garrison")
    db = str(tmp_path / "app.db")
    async with garrison.open_node(store=db):
        pass  # (the store a node made, and no node holds now)
    for running in (False, True):
        async with contextlib.AsyncExitStack() as stack:
            if running:
                await stack.enter_async_context(garrison.open_node(store=db))
            client = await stack.enter_async_context(
                garrison.open_node(store=SQLiteStore(db, lock=False)))
            await client.start_workflow(app.sleeper, "5s", id=f"w{running}")
            with trio.move_on_after(10):
                await client.workflow(f"w{running}").result()
        said = [r.getMessage() for r in caplog.records if "no node" in r.getMessage()]
        if running:
            assert said == [said[0]]  # (the one from before: none for this one)
        else:
            assert said == [f"workflow 'wFalse' waits: no node holds store {db!r} (it "
                            "is pending until a node opens the store)"]


async def test_a_node_follows_a_step_of_the_system_clock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A node read the system clock once, at its start: a later step (an NTP
    correction, a resumed VM) was never seen, and a durable sleep of an hour still took
    an hour of the monotonic clock after the system clock had moved an hour on (a
    nightly schedule kept firing late, ``workflow.now()`` stayed off). The node looks
    again every ``CLOCK_CHECK``: what waits for a time asks again. (Real time: the
    system clock is the subject.)"""
    import time

    real = time.time
    step = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + step[0])
    caplog.set_level(logging.WARNING, logger="garrison")
    async with garrison.open_node(store=str(tmp_path / "app.db")) as node:
        started = real()
        await node.start_workflow(app.sleeper, "1h", id="s")
        handle = node.workflow("s")
        with trio.fail_after(10):
            while handle.status() != "sleeping":
                await trio.sleep(0.01)
        step[0] = 3600.0  # the system clock steps an hour on
        with trio.fail_after(10):  # (it slept on, for an hour: TooSlowError)
            slept = await handle.result()
        assert 3600 <= slept < 3600 + (real() - started) + 1
    assert "the system clock stepped +3600" in caplog.text


async def test_a_search_attribute_or_filter_holding_an_integer_beyond_64_bits_is_refused(
        node: garrison.Node) -> None:
    """SQLite's JSON functions read an integer beyond 64 bits as a float: a filter on
    ``n=2**63`` matched ``2**63 + 1`` too. Such an integer is a ValueError where it is
    given, a filter or ``workflow.attrs``; one of 64 bits is kept and found exactly."""
    await node.start_workflow(app.tags_with, 2**63 - 1, id="edge")
    assert await node.workflow("edge").result() == "set"
    assert [w.workflow_id for w in node.workflows(search={"n": 2**63 - 1})] == ["edge"]
    await node.start_workflow(app.tags_with, [1, 2**63], id="wide")
    said = await node.workflow("wide").result()
    assert said.startswith("workflow.attrs(search=...): search attribute 'n' holds the "
                           "integer 9223372036854775808, beyond 64 bits"), said
    with pytest.raises(ValueError, match="search filter 'n' holds the integer "
                       "-9223372036854775809, beyond 64 bits"):
        node.workflows(search={"n": -(2**63) - 1})


async def test_a_search_attribute_too_deep_or_too_big_is_a_clear_error_at_the_call(
        node: garrison.Node) -> None:
    """helper-310: a search attribute (or memo) nested 5,000 deep failed the workflow
    with a bare RecursionError from the checks' own recursion, and an integer of 5,000
    digits with Python's "Exceeds the limit (4300 digits)" from the error message that
    named it. Each is an error at ``workflow.attrs`` naming the attribute."""
    for field, named in (("search", "the search attributes"), ("memo", "the memo")):
        await node.start_workflow(app.tags_nested, 5000, field, id=f"deep-{field}")
        said = await node.workflow(f"deep-{field}").result()
        assert said.startswith(f"PayloadError: cannot store {named} of 'deep-{field}': a "
                               "value of type dict is nested 5001 levels deep"), said
    await node.start_workflow(app.tags_nested, 300, "search", id="fine")
    assert await node.workflow("fine").result() == "set"
    await node.start_workflow(app.tags_with_power_of_ten, 5000, id="huge")
    said = await node.workflow("huge").result()
    assert said == ("workflow.attrs(search=...): search attribute 'n' holds an integer of "
                    "16,610 bits, beyond 64 bits: no store compares it exactly (give it as "
                    "a string)"), said


async def test_arguments_the_code_no_longer_takes_block_with_advice_that_fits(
        tmp_path: Path) -> None:
    """A workflow whose recorded arguments the new code's annotations refuse (a required
    field added, an int parameter for what was a string) diverged with the advice to
    branch with ``workflow.version``, which cannot help: they are restored before the
    function runs. It says so, and what does help."""
    from garrison.persistence import SQLiteStore, Transaction

    db = str(tmp_path / "app.db")
    with SQLiteStore(db) as store:  # started by an older version taking a string
        store.write(Transaction().create_workflow("w", "workflow_app:steps", ["5", 1])
                    .append_journal_text("w", 1, "activity", "workflow_app:add_one",
                                         '{"ok":6}', 1, 0.0))
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.NonDeterminismError) as info:
            await node.workflow("w").result()
    said = str(info.value)
    assert "the code now did raise PayloadError: cannot restore argument 1 (x)" in said
    assert ("they are restored before its code runs, so workflow.version cannot branch "
            "there: make the code take them too (a default for a new field or parameter"
            ) in said, said
    assert said.endswith("The workflow is blocked with its journal kept; restart a node "
                         "with code that takes the recorded path to resume it, or end it "
                         "with `garrison workflows terminate`"), said
    assert "deterministic" not in said  # (a change of signature: no random path)


async def test_a_path_that_differs_says_code_must_be_deterministic_and_the_way_out(
        tmp_path: Path) -> None:
    """helper-393: a workflow that branched on random.random() (or recorded
    datetime.now()), killed and resumed, was blocked with the advice to "restart a node
    with code that takes the recorded path", which no code of a random branch does. The
    message says workflow code must be deterministic and with what, and how such a run
    ends: terminate (a live run's blocked message, not a replay's)."""
    from garrison.persistence import SQLiteStore, Transaction

    db = str(tmp_path / "app.db")
    with SQLiteStore(db) as store:  # the first run took the other branch
        store.write(Transaction().create_workflow("w", "workflow_app:steps", [5, 1])
                    .append_journal_text("w", 1, "activity", "workflow_app:add_one_sync",
                                         '{"ok":6}', 1, 0.0))
    async with garrison.open_node(store=db) as node:
        with pytest.raises(garrison.NonDeterminismError) as info:
            await node.workflow("w").result()
        assert node.workflow("w").status() == "blocked"
    said = str(info.value)
    assert said.startswith(
        "workflow 'w' diverged from its journal at seq 1: the journal records activity "
        "'workflow_app:add_one_sync', but the code now did activity 'workflow_app:add_one' "
        f"(File \"{app.__file__}\", line {app.steps.__code__.co_firstlineno + 2}, in steps). "
        "The workflow is blocked with its journal kept; restart a node with code that "
        "takes the recorded path to resume it, or end it with `garrison workflows "
        "terminate`. "), said
    assert said.endswith(
        "Workflow code must be deterministic: use workflow.now(), workflow.random() and "
        "workflow.uuid4() for times, random numbers and uuids, and do I/O in "
        "activities"), said


SHARED_RECEIVES: dict[str, Any] = {}


async def makes_a_receive() -> str:
    SHARED_RECEIVES["r"] = process.inbox().receive()
    await workflow.sleep(1)
    got = await SHARED_RECEIVES["r"]
    return f"A got {got.payload}"


async def awaits_anothers_receive() -> str:
    try:
        got = await SHARED_RECEIVES["r"]
    except garrison.NotInProcess as exc:
        return str(exc)
    return f"C got {got.payload}"


async def test_a_receive_awaited_by_another_workflow_is_refused(
        node: garrison.Node, autojump_clock: Any) -> None:
    """helper-224: workflow C awaited workflow A's receive, so one message reached both
    (C with no journal record of it); a timer or promise shared so is refused."""
    SHARED_RECEIVES.clear()
    await node.start_workflow(makes_a_receive, id="A")
    await trio.sleep(0.1)
    await node.start_workflow(awaits_anothers_receive, id="C")
    await node.send("workflows/A", "m", 1)
    assert await node.workflow("A").result() == "A got 1"
    said = await node.workflow("C").result()
    assert said.startswith("an await of a receive of workflow 'A' was called from "
                           "workflow 'C': a handle"), said
    # (helper-228: once A had ended, C's await of its receive waited for ever)
    await node.start_workflow(leaves_a_receive, id="A2")
    assert await node.workflow("A2").result() == "left"
    await node.start_workflow(awaits_anothers_receive, id="C2")
    said = await node.workflow("C2").result()
    assert "workflow 'A2', whose run has ended here" in said, said


async def leaves_a_receive() -> str:
    SHARED_RECEIVES["r"] = process.inbox().receive()
    return "left"


@garrison.activity
async def shared_step() -> str:
    return "step"


async def shares_its_handles() -> str:
    SHARED_RECEIVES["h"] = workflow.start(shared_step)
    SHARED_RECEIVES["t"] = workflow.timer("0.5s")
    await workflow.sleep("1s")
    return "a"


async def uses_anothers_handles() -> list[str]:
    await workflow.sleep("0.1s")
    said = []
    for key in ("h", "t"):
        for use in ("await", "done"):
            try:
                if use == "await":
                    await SHARED_RECEIVES[key]
                else:
                    SHARED_RECEIVES[key].done()
                said.append("no error")
            except garrison.NotInProcess as exc:
                said.append(str(exc).partition(": ")[0])
    return said


async def test_a_started_activity_awaited_by_another_workflow_is_refused(
        node: garrison.Node, autojump_clock: Any) -> None:
    """helper-265: workflow B awaited workflow A's workflow.start handle (shared through
    a module global) and got its value with nothing in its own journal; a timer shared
    so was refused, as made from "a nursery in workflow code?". Both are refused, naming
    both workflows, and so is their done()."""
    SHARED_RECEIVES.clear()
    await node.start_workflow(shares_its_handles, id="A")
    await node.start_workflow(uses_anothers_handles, id="B")
    said = await node.workflow("B").result()
    assert said == [
        "an await of activity 'test_workflow:shared_step' of workflow 'A' was called "
        "from workflow 'B'",
        "done() of activity test_workflow:shared_step of workflow 'A' was called from "
        "workflow 'B'",
        "await_timer of workflow 'A' was called from workflow 'B'",
        "done() of timer of workflow 'A' was called from workflow 'B'"], said
    assert [r.kind for r in node.workflow("B").history()] == ["sleep"]
    assert await node.workflow("A").result() == "a"
    await node.start_workflow(uses_anothers_handles, id="B2")  # (A has ended)
    said = await node.workflow("B2").result()
    assert said[2:] == [
        "await_timer of workflow 'A', whose run has ended here, was called from workflow "
        "'B2'",
        "done() of timer of workflow 'A', whose run has ended here, was called from "
        "workflow 'B2'"], said
    assert [r.kind for r in node.workflow("A").history()] == ["activity", "timer", "sleep"]
