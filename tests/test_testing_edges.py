"""``garrison.testing`` at its edges (found by an adversarial review of the testing
utilities): a mocked error class that cannot be made, replay of code that does not
import or of a wrong target, and history files that are not one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import garrison
import garrison.testing
from garrison import workflow

GOLDEN = Path(__file__).resolve().parent.parent / "examples" / "histories" / "approve-doc-1.json"


# ---------------------------------------------------------------- workflows used here
@garrison.activity
async def decode(data: str) -> str:
    return data


async def decoding() -> str:
    return await decode("x")


def fetch_slowly(x: int) -> int:  # a plain activity: it works in a worker thread
    time.sleep(0.05)
    return x


async def fetch_or_give_up() -> str:
    fetched = workflow.start(fetch_slowly, 1)
    won = await workflow.first(fetched, workflow.timer("1h"))
    return "fetched" if won is fetched else "gave up"


ENVS: list[Any] = []


@garrison.activity
async def result_of(wid: str) -> str:
    return str(await ENVS[-1].node.workflow(wid).result())


async def waits_for_another(wid: str) -> str:
    return await result_of(wid)


async def sleeps_a_day() -> str:
    await workflow.sleep("1d")
    return "woke"


def check_slowly(n: int) -> int:  # a plain activity: a worker thread
    time.sleep(0.05)
    return n


async def approve_then_check() -> str:
    who = await workflow.promise("approval")
    workflow.set_state("checked", await workflow.call(check_slowly, 3))
    return str(who)


# ---------------------------------------------------------------- time and activities
async def test_virtual_time_stands_while_a_plain_activity_works() -> None:
    """A review found a 1 h timer beating a 0.05 s activity: the environment jumped
    virtual time as soon as every task waited, while the activity's thread worked. Time
    now stands while a plain activity works in its thread."""
    async with garrison.testing.workflow_env() as env:
        assert env.virtual
        await env.start(fetch_or_give_up, id="f")
        assert await env.result("f") == "fetched"


async def test_an_async_activity_waiting_for_a_workflow_lets_time_skip() -> None:
    """An async activity's waits are tasks waiting like any other: one waiting for a
    workflow that sleeps a day lets the day skip (a first version of the fix above held
    time while any activity ran: this waited for ever), and two environments count
    their activities apart."""
    async with garrison.testing.workflow_env() as env, \
            garrison.testing.workflow_env() as other:
        hosts = [h for e in (env, other) for h in e.node.hosts.values()
                 if getattr(h, "durable", False)]
        assert hosts[0].in_flight is not hosts[1].in_flight
        ENVS.append(env)
        await env.start(sleeps_a_day, id="w")
        await env.start(waits_for_another, "w", id="p")
        with trio.fail_after(10):
            assert await env.result("p") == "woke"
        await other.start(sleeps_a_day, id="o")
        with trio.fail_after(10):
            assert await other.result("o") == "woke"


async def test_resolve_returns_once_the_reaction_s_activity_ran() -> None:
    """env.resolve() returned while the workflow's reaction ran a plain activity in a
    worker thread (its state not yet set): every task waited, the thread worked."""
    async with garrison.testing.workflow_env() as env:
        await env.start(approve_then_check, id="a")
        await env.resolve("a", "approval", "ann")
        assert env.state("a", "checked") == 3


# ---------------------------------------------------------------- mocks
async def test_a_mocked_error_class_is_recorded_as_that_error() -> None:
    """README: 'error= (an exception instance or class) is recorded as the ActivityError
    a real final failure gives'. A class whose constructor needs arguments is accepted
    silently and the workflow fails with an unrelated 'TypeError: function takes exactly
    5 arguments (0 given)' from the mock itself."""
    async with garrison.testing.workflow_env() as env:
        try:
            env.mock_activity(decode, error=UnicodeDecodeError)
        except TypeError as exc:  # refusing it at the mock, naming the class, is fine too
            assert "UnicodeDecodeError" in str(exc)
            return
        await env.start(decoding, id="d")
        with pytest.raises(garrison.WorkflowFailed) as info:
            await env.result("d")
        assert "UnicodeDecodeError" in str(info.value.error)


# ---------------------------------------------------------------- replay
@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden file's workflow (examples/document_approval.py) importable, as in
    examples/test_document_approval.py."""
    monkeypatch.syspath_prepend(str(GOLDEN.parent.parent))


def test_the_golden_file_replays_here() -> None:
    """(control: the unmodified golden history replays ok in this setup)"""
    assert garrison.testing.replay(GOLDEN).ok


def _golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_replay_of_code_that_cannot_be_imported_is_not_a_divergence() -> None:
    """README (Operating workflows): 'Code that cannot be imported (run from another
    folder, a missing --module) is not a difference: the replay stops before replaying
    anything, naming the workflow and its code'. garrison.testing.replay raises a
    NonDeterminismError 'diverged from its journal at seq 0 ... keep the recorded path
    ... workflow.version' instead: a false divergence for a sys.path problem."""
    history = dict(_golden(), name="h7_moved_away.approvals:document_approval")
    with pytest.raises(Exception) as info:
        garrison.testing.replay(history)
    assert not isinstance(info.value, garrison.NonDeterminismError), str(info.value)
    assert "h7_moved_away" in str(info.value)


def test_replay_with_a_wrong_target_name_says_what_is_wrong() -> None:
    """replay(history, target='module:qualname'): a typo gives a bare
    ModuleNotFoundError from importlib (no word of 'target'); a name without ':' gives
    "AttributeError: module ... has no attribute ''"."""
    for target in ("document_aproval:document_approval", "document_approval"):
        with pytest.raises((ValueError, TypeError), match="target"):
            garrison.testing.replay(GOLDEN, target=target)


def test_replay_with_a_target_that_is_no_function_is_refused_not_a_divergence() -> None:
    """target=42 (not callable) is reported as the code diverging from its journal
    ('NonDeterminismError ... raise TypeError: 'int' object is not callable')."""
    with pytest.raises(TypeError, match="target"):
        garrison.testing.replay(GOLDEN, target=42)


def sync_workflow(order: Any) -> str:
    return "x"


@pytest.mark.parametrize("target", [sync_workflow, print, "builtins:print", decode,
                                    f"{__name__}:decode"])
def test_replay_with_a_target_no_workflow_can_run_is_a_type_error(target: Any) -> None:
    """A new user's replay(target=a sync function / an activity / print) was reported as
    the code diverging from its journal; it is the TypeError start_workflow gives."""
    with pytest.raises(TypeError, match="replay target"):
        garrison.testing.replay(GOLDEN, target=target)


async def takes_two(doc: Any, reviewer: str) -> str:
    return reviewer


@pytest.mark.parametrize("target", [takes_two, f"{__name__}:takes_two"])
def test_a_target_that_takes_other_arguments_is_named_not_the_recorded_one(
        target: Any) -> None:
    """replay(history, target=f) with an f taking other arguments said 'workflow
    document_approval:document_approval takes 2 argument(s) (doc, reviewer)': the
    recorded name with the target's signature."""
    with pytest.raises(garrison.NonDeterminismError) as info:
        garrison.testing.replay(GOLDEN, target=target)
    said = str(info.value)
    assert (f"workflow {__name__}:takes_two (the replay's target) takes 2 argument(s) "
            "(doc, reviewer), but it was started with 1") in said, said
    assert "document_approval:document_approval" not in said, said


#: a name a workflow's history may point at after a change: no function at all
NOT_A_WORKFLOW = {"a": 1}


@pytest.mark.parametrize("name, said", [
    ("sync_workflow", "a workflow function is an async function (async def)"),
    ("NOT_A_WORKFLOW", "a workflow function is an async function (async def)"),
    ("decode", f"cannot run the activity {__name__}:decode as a workflow: it is an activity, "
               "not a workflow function (call it from a workflow)")])
def test_a_recorded_name_no_workflow_can_run_now_is_a_difference(name: str, said: str) -> None:
    """A history whose function is now a sync def (or a dict, an activity) raised a bare
    TypeError ("'...:sync_workflow', the code of workflow 'approve-doc-1': a workflow
    function is an async function"), where ``garrison workflows replay`` reports that
    workflow as differing: the same difference, in the CLI's words (a ``target=`` that
    is no workflow function stays a TypeError, a wrong argument)."""
    recorded = f"{__name__}:{name}"
    history = dict(_golden(), name=recorded)
    with pytest.raises(garrison.NonDeterminismError) as info:
        garrison.testing.replay(history)
    assert str(info.value) == (
        f"workflow 'approve-doc-1' runs '{recorded}', which is no workflow function now: "
        f"{said}. A node running this code blocks the workflow; keep the function under "
        "its name for workflows started before the change"), str(info.value)
    assert (info.value.seq, info.value.recorded) == (None, recorded)
    result = trio.run(garrison.hosts.workflow.replay_history,
                      garrison.testing.History.from_json(history))
    assert (result.ok, result.checked, result.ending) == (
        False, 0, "its code is no workflow function")


@pytest.mark.parametrize("field,value", [("promises", [["approval", "resolved"]]), ("timers", 5),
                                         ("attempt", "first"), ("error", {"msg": "x"})])
def test_a_history_file_that_is_not_one_is_a_value_error_naming_it(tmp_path, field,
                                                                    value) -> None:
    """History.from_json promises 'ValueError naming where and the field when it is not
    one' (README: a file that is not a history must not end in a bare traceback); these
    give AttributeError / TypeError / a ValueError without the file / KeyError from
    deep inside."""
    path = tmp_path / "order-17.json"
    path.write_text(json.dumps(dict(_golden(), **{field: value})))
    with pytest.raises(ValueError, match=r"order-17\.json"):
        garrison.testing.replay(path)


def test_a_history_whose_journal_repeats_a_seq_is_a_value_error_naming_it(tmp_path) -> None:
    """A journal listed twice in a history file replayed as ``ok=True`` with twice the
    records checked (a golden test passing on a broken file): records must come in seq
    order, each seq once."""
    data = _golden()
    data["journal"] = data["journal"] + data["journal"]
    path = tmp_path / "twice.json"
    path.write_text(json.dumps(data))
    first = data["journal"][0]["seq"]
    with pytest.raises(ValueError, match=rf"twice\.json': journal record "
                                         rf"{len(data['journal']) // 2}: seq {first} comes "
                                         r"after seq \d+ \(a journal's records are in seq "
                                         r"order, each seq once\)"):
        garrison.testing.replay(path)


@pytest.mark.parametrize("seq", [0, -3])
def test_a_history_record_or_timer_at_no_position_is_a_value_error(tmp_path, seq) -> None:
    """A hand-edited seq of 0 or below replayed as ok (the record was never checked)."""
    data = _golden()
    data["journal"][0] = dict(data["journal"][0], seq=seq)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"edited\.json': journal record 0 \(\w+\): seq "
                                         rf"{seq} is no position in a journal"):
        garrison.testing.replay(path)
    data = _golden()
    data["timers"] = [{"seq": seq, "kind": "sleep", "deadline": "2026-01-01T00:00:00Z"}]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"edited\.json': timer 0: seq {seq} is no position"):
        garrison.testing.replay(path)


async def test_moving_time_after_the_env_block_is_refused_not_a_hang() -> None:
    """``env.sleep`` and ``env.settle`` past the ``workflow_env()`` block waited for ever
    (nothing skips time there any more); they raise as ``env.start`` does."""
    async with garrison.testing.workflow_env() as env:
        await env.start(sleeps_a_day, id="s")
        await env.settle()
    with trio.fail_after(5):
        with pytest.raises(RuntimeError, match=r"^env\.sleep\('1h'\): the workflow_env\(\) "
                           r"block has ended \(its node is closed\)"):
            await env.sleep("1h")
        with pytest.raises(RuntimeError, match=r"^env\.settle\(\): the workflow_env\(\) "
                           "block has ended"):
            await env.settle()
    # (a mock made after the block went unnoticed: it could never run)
    with pytest.raises(RuntimeError, match=r"^env\.mock_activity\(\): the workflow_env\(\) "
                       "block has ended"):
        env.mock_activity(check_slowly, result=1)


async def test_the_env_s_other_calls_after_its_block_say_it_has_ended() -> None:
    """Past the block ``env.result`` said the workflow "resumes when a node opens its
    store again" (an in-memory store, gone), ``env.resolve`` only ``store '<memory>' is
    closed``, ``env.signal`` raised ProcessError and ``env.status`` still answered
    (while ``env.state`` raised): each says the block has ended now."""
    async with garrison.testing.workflow_env() as env:
        await env.start(sleeps_a_day, id="s")
        await env.settle()
    calls: list[tuple[str, Any]] = [
        ("env.result('s')", lambda: env.result("s")),
        ("env.signal('s')", lambda: env.signal("s", "note")),
        ("env.resolve('s')", lambda: env.resolve("s", "p", 1)),
        ("env.reject('s')", lambda: env.reject("s", "p", "no")),
        ("env.start()", lambda: env.start(sleeps_a_day, id="t")),
        ("env.status('s')", lambda: env.status("s")),
        ("env.state('s')", lambda: env.state("s", "k"))]
    for shown, call in calls:
        with trio.fail_after(5), pytest.raises(RuntimeError, match=(
                "^" + shown.replace("(", r"\(").replace(")", r"\)") + ": the workflow_env"
                r"\(\) block has ended")):
            done = call()
            if hasattr(done, "__await__"):
                await done


async def test_a_handle_s_promise_after_the_env_block_says_the_node_has_stopped() -> None:
    """The handle ``env.start`` gave, used past the block: its cancel, history and state
    said the node has stopped with its store, but its promise's resolve and reject only
    ``store '<memory>' is closed`` (and ``status`` too)."""
    async with garrison.testing.workflow_env() as env:
        handle = await env.start(sleeps_a_day, id="s")
        await env.settle()
    promise = handle.promise("approval")
    for doing, call in [("resolve", lambda: promise.resolve(1)),
                        ("reject", lambda: promise.reject("no")),
                        ("read the status of", promise.status)]:
        with trio.fail_after(5), pytest.raises(RuntimeError, match=(
                rf"^cannot {doing} promise 'approval' of workflow 's': node '.*' has "
                r"stopped, and its store with it \(its store was in memory")):
            done = call()
            if hasattr(done, "__await__"):
                await done


CALLS: list[int] = []


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=5, initial_delay="1h",
                                              max_delay="2h"))
async def _always_fails(n: int) -> int:
    CALLS.append(n)
    raise RuntimeError("down")


async def _retried(n: int) -> int:
    return await _always_fails(n)


async def test_a_mock_set_while_an_activity_waits_to_retry_takes_its_next_attempt() -> None:
    """helper-220: the retries went on with the real activity (five calls, then its
    failure) when the mock came while it waited for its second attempt."""
    CALLS.clear()
    async with garrison.testing.workflow_env() as env:
        await env.node.start_workflow(_retried, 7, id="r")
        await env.sleep("10m")  # the first attempt failed; the next is an hour away
        assert CALLS == [7]
        mock = env.mock_activity(_always_fails, result=99)
        assert await env.node.workflow("r").result() == 99
        assert CALLS == [7] and mock.calls == [((7,), {})]


def test_workflow_env_under_asyncio_says_it_runs_on_trio() -> None:
    """Under asyncio (anyio's asyncio variant of a test) ``workflow_env()`` failed with
    trio's bare ``must be called from async context``: it says what ``open_node`` says."""
    import asyncio

    async def opens() -> None:
        async with garrison.testing.workflow_env():
            pass

    with pytest.raises(RuntimeError, match=r"^garrison.testing.workflow_env\(\) must be "
                       r"called inside a trio run: garrison runs on trio, and this call is "
                       r"in none \(from asyncio\? "):
        asyncio.run(opens())
