"""``garrison.testing``: ``workflow_env()`` (timers skip), activity mocks, the
``garrison_env`` pytest fixture."""

from __future__ import annotations

import datetime as dt
import time
import traceback
from typing import Any

import ops_app
import pytest
import trio

import garrison
import garrison.testing
from garrison import process, workflow


@pytest.fixture(autouse=True)
def _reset() -> None:
    ops_app.LOG.clear()
    ops_app.FAILS.clear()


async def test_a_30_day_approval_is_tested_in_milliseconds() -> None:
    """No clock asked for (trio's real clock): the environment skips workflow time
    itself, whenever every task waits."""
    started = time.monotonic()
    async with garrison.testing.workflow_env() as env:
        assert env.virtual
        t0 = env.now()
        reminders = env.mock_activity(ops_app.remind, result="sent")
        await env.start(ops_app.reminders, 30, id="a")
        await env.start(ops_app.reminders, 30, id="b")
        await env.sleep("2d")
        assert env.now() - t0 == dt.timedelta(days=2)
        assert env.state("a", "reminded") == 2 and env.status("a") == "waiting"
        await env.resolve("a", "approval", "ann")
        assert env.status("a") == "completed"
        assert await env.result("a") == "approved by ann on day 3"
        assert await env.result("b") == "expired"  # 28 more days pass while it waits
        assert env.now() - t0 == dt.timedelta(days=30)
    assert len(reminders.calls) == 2 + 30 and reminders.calls[0] == ((1,), {})
    assert ops_app.LOG == []  # the real activity never ran
    assert time.monotonic() - started < 5


async def test_the_same_on_trio_autojump_clock(autojump_clock: Any) -> None:
    async with garrison.testing.workflow_env() as env:
        assert not env.virtual
        env.mock_activity(ops_app.remind, result="sent")
        await env.start(ops_app.reminders, 30, id="a")
        await env.sleep("2d")
        assert trio.current_time() == 2 * 86400
        assert env.state("a", "reminded") == 2
        await env.resolve("a", "approval", "ann")
        assert await env.result("a") == "approved by ann on day 3"
        await env.start(ops_app.reminders, 30, id="b")
        assert await env.result("b") == "expired"
        assert trio.current_time() == 32 * 86400


async def test_a_mocked_error_is_the_activity_error_a_real_failure_gives() -> None:
    async with garrison.testing.workflow_env() as env:
        charge = env.mock_activity(ops_app.charge, error=ConnectionError("payments down"))
        env.mock_activity("ops_app:reserve", error=PermissionError)
        await env.start(ops_app.order, "pen", id="o")
        with pytest.raises(garrison.WorkflowFailed) as info:
            await env.result("o")
        assert str(info.value.error) == "ActivityError: PermissionError"
        assert charge.calls == []

        env.mock_activity(ops_app.reserve, result="res-mocked")
        await env.start(ops_app.order, "cup", id="o2")
        with pytest.raises(garrison.WorkflowFailed) as info:
            await env.result("o2")
        assert str(info.value.error) == "ActivityError: ConnectionError: payments down"
        last = env.workflow("o2").history()[-1]
        assert last.outcome["error"]["type"] == "ConnectionError" and last.attempts == 1
        assert "ConnectionError: payments down" in last.outcome["error"]["traceback"]
    assert ops_app.LOG == []


async def divides_by_zero(total: int) -> float:
    await workflow.sleep("1h")
    return total / 0  # the user's bug: the line a failed test's report must show


async def test_a_failed_workflows_error_shows_the_line_that_raised() -> None:
    """pytest reports a failed ``env.result`` with the frames of the raise, garrison's:
    the workflow's own traceback, recorded where it raised, comes with it (a note)."""
    async with garrison.testing.workflow_env() as env:
        await env.start(divides_by_zero, 3, id="z")
        with pytest.raises(garrison.WorkflowFailed) as info:
            await env.result("z")
    report = "".join(traceback.format_exception(info.value))
    assert "return total / 0  # the user's bug" in report
    assert ", in divides_by_zero\n" in report and "ZeroDivisionError" in report
    assert "traceback of workflow 'z'" in str(info.getrepr())  # (pytest's own report)
    assert str(info.value) == "workflow 'z' failed: ZeroDivisionError: division by zero"


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def parses(text: str) -> int:
    return int(text.split(",")[3])  # the activity's bug: the line the report must show


async def imports(text: str) -> int:
    return await parses(text)


async def test_a_failed_activitys_line_is_in_its_workflows_error() -> None:
    """The workflow's traceback ends at garrison's raise of the ActivityError: the
    activity's own (recorded with its failure) comes with it, as the ActivityError's
    note, so the report of a workflow failed by an activity shows the activity's line."""
    async with garrison.testing.workflow_env() as env:
        await env.start(imports, "a,b", id="i")
        with pytest.raises(garrison.WorkflowFailed) as info:
            await env.result("i")
    report = "".join(traceback.format_exception(info.value))
    assert "return await parses(text)" in report
    assert "return int(text.split(\",\")[3])  # the activity's bug" in report, report
    assert f"the failure of activity '{__name__}:parses', as recorded:" in report
    assert str(info.value.error) == "ActivityError: IndexError: list index out of range"


async def test_a_mock_without_result_says_its_none_is_what_the_annotation_refused(
        ) -> None:
    """``mock_activity(fn)`` without ``result=`` returns None, which ``-> str`` refuses:
    the workflow's PayloadError said 'expected a string, got null' as if the activity
    had returned it, not the mock the test forgot to give a result."""
    async with garrison.testing.workflow_env() as env:
        env.mock_activity(ops_app.reserve)  # (forgot result=)
        await env.start(ops_app.order, "pen", id="o")
        with pytest.raises(garrison.WorkflowFailed) as info:
            await env.result("o")
        assert str(info.value.error) == (
            "ActivityError: PayloadError: cannot restore the result of activity "
            "'ops_app:reserve' as str: expected a string, got null (the value of its mock, "
            "env.mock_activity, which returns None without result=: give it result=, a "
            "value its return annotation takes)")
        env.mock_activity(ops_app.reserve, call=lambda item: 5)
        await env.start(ops_app.order, "cup", id="o2")
        with pytest.raises(garrison.WorkflowFailed) as info:
            await env.result("o2")
        assert str(info.value.error).endswith(
            "got an integer 5 (the value of its mock, env.mock_activity: give it a value its "
            "return annotation takes)")
    assert ops_app.LOG == []


async def test_a_mock_is_for_its_environment_only_and_can_call_a_function() -> None:
    seen: list[str] = []

    async def fake_charge(item: str) -> str:
        seen.append(item)
        return f"fake-{item}"

    async with garrison.testing.workflow_env() as env:
        env.mock_activity(ops_app.charge, call=fake_charge)
        await env.start(ops_app.order, "pen", id="o")
        await env.signal("o", "ship")
        assert await env.result("o") == "res-pen fake-pen ship"
    assert seen == ["pen"] and ops_app.LOG == [("reserve", "pen")]

    async with garrison.testing.workflow_env() as env:  # a new environment: the real one
        await env.start(ops_app.order, "cup", id="o")
        await env.signal("o", "ship")
        assert await env.result("o") == "res-cup pay-cup ship"
    assert ("charge", "cup") in ops_app.LOG

    async with garrison.testing.workflow_env() as env:
        with pytest.raises(TypeError, match="takes an exception instance or class"):
            env.mock_activity(ops_app.charge, error="boom")
        # (no activity's failure: it stopped the test's run instead of being recorded)
        for stop in (KeyboardInterrupt(), SystemExit, GeneratorExit()):
            with pytest.raises(TypeError, match=r"takes an exception instance or class "
                                                r"\(an Exception, as an activity's failure"):
                env.mock_activity(ops_app.charge, error=stop)
        assert env.mocks == {}


async def test_retry_delays_of_real_activities_skip_too() -> None:
    ops_app.FAILS["pen"] = 1  # the first attempt fails; the next one is 1s later
    async with garrison.testing.workflow_env() as env:
        t0 = env.now()
        await env.start(ops_app.order, "pen", id="o")
        await env.settle()  # what can happen without time passing
        # (its retry timer only can wake it: sleeping, as API.md says)
        assert env.now() == t0 and env.status("o") == "sleeping"
        assert ops_app.LOG == [("reserve", "pen"), ("charge", "pen")]
        await env.sleep("1s")
        assert env.status("o") == "waiting"
        assert ops_app.LOG == [("reserve", "pen"), ("charge", "pen"), ("charge", "pen")]


async def test_the_garrison_env_fixture(garrison_env: garrison.testing.WorkflowEnv) -> None:
    """The pytest plugin garrison registers (entry point pytest11) gives the fixture."""
    env = garrison_env
    env.mock_activity(ops_app.remind, result="sent")
    await env.start(ops_app.reminders, 3, id="a")
    assert await env.result("a") == "expired"
    assert env.mocks["ops_app:remind"].calls == [((1,), {}), ((2,), {}), ((3,), {})]


async def test_a_mock_given_two_outcomes_is_refused() -> None:
    """result= and error= (or call=) together: one of them was silently ignored."""
    async with garrison.testing.workflow_env() as env:
        with pytest.raises(TypeError, match=r"takes one of result=, error= or call=, got "
                                            r"result= and error="):
            env.mock_activity("ops_app:remind", result="sent", error=OSError("down"))
        with pytest.raises(TypeError, match="got result= and call="):
            env.mock_activity("ops_app:remind", result="sent", call=lambda *a: "x")
        assert env.mocks == {}


async def test_mocking_what_is_not_an_activity_is_refused() -> None:
    """A typo or a workflow passed to mock_activity used to be accepted silently, and the
    real activity ran: now a clear error, at the mock (or, for a workflow not known as
    one yet, at its start)."""
    async with garrison.testing.workflow_env() as env:
        with pytest.raises(ValueError, match=r"mock_activity\('ops_app:nothing'\): unknown "
                           r"activity: no @garrison.activity has this name, and it does not "
                           r"import as module:qualname \(AttributeError: "):
            env.mock_activity("ops_app:nothing", result=1)
        with pytest.raises(ValueError, match="unknown activity"):
            env.mock_activity("no_such_module_here:thing", result=1)
        with pytest.raises(TypeError, match=r"expected an activity .* got int"):
            env.mock_activity(42, result=1)
        await env.start(ops_app.reminders, 1, id="r")  # known as a workflow from now on
        with pytest.raises(TypeError, match="ops_app:reminders is a workflow \\(it was started "
                           "as one here\\), not an activity: mock the activities it calls"):
            env.mock_activity(ops_app.reminders, result=1)
        with pytest.raises(TypeError, match="is a workflow"):
            env.mock_activity("ops_app:reminders", result=1)
        assert env.mocks == {}
        # a workflow not known as one yet: refused when it starts
        env.mock_activity(ops_app.order, result="x")
        with pytest.raises(TypeError, match="cannot start ops_app:order as a workflow: it is "
                           "mocked as an activity"):
            await env.start(ops_app.order, "pen", id="o")
        assert ops_app.LOG == []
        # activities by function and by journal name still work
        remind = env.mock_activity("ops_app:remind", result="sent")
        assert await env.result("r") == "expired" and remind.calls == [((1,), {})]


async def test_a_workflow_entry_of_the_config_cannot_be_mocked(tmp_path) -> None:
    (tmp_path / "app.yaml").write_text(
        'version: "1.0"\nnamespace: app\nentries:\n'
        '  - {name: order, kind: workflow.py, source: "ops_app:order"}\n')
    async with garrison.testing.workflow_env(config=tmp_path / "app.yaml") as env:
        with pytest.raises(TypeError, match=r"config entry 'app:order' is a workflow\.py"):
            env.mock_activity(ops_app.order, result=1)
        # by its entry id (was a ValueError: "unknown activity ... No module named 'app'")
        with pytest.raises(TypeError, match=r"^mock_activity\('app:order'\): 'app:order' is "
                           r"the config's workflow\.py entry \(ops_app:order\), not an "
                           r"activity: mock the activities it calls"):
            env.mock_activity("app:order", result=1)
        assert env.mocks == {}


async def _schedules_tick(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                          virtual: bool) -> None:
    """A config schedule and a ``node.schedule`` one, hourly, for 3 hours of
    ``env.sleep``: each tick starts its workflow at its time (wall time starts on the
    hour, so the ticks are known)."""
    import schedule_app

    from garrison.hosts.workflow._schedules import tick_id
    from garrison.hosts.workflow._waits import WallClock

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()

    def init(self: WallClock) -> None:
        self.trio0 = trio.current_time()
        self.wall0 = t0

    monkeypatch.setattr(WallClock, "__init__", init)
    schedule_app.STARTS.clear()
    (tmp_path / "app.yaml").write_text(
        'version: "1.0"\nnamespace: app\nentries:\n'
        '  - {name: job, kind: workflow.py, source: "schedule_app:job"}\n'
        '  - {name: hourly, kind: workflow.schedule, workflow: job, every: 1h, '
        'input: [60]}\n')
    async with garrison.testing.workflow_env(config=tmp_path / "app.yaml") as env:
        assert env.virtual is virtual
        await env.node.schedule("api", schedule_app.job, 60.0, every="1h")
        await env.sleep("3h")
        assert env.now().timestamp() == t0 + 3 * 3600
        expected = sorted((tick_id(sid, t0 + h * 3600), t0 + h * 3600)
                          for sid in ("api", "app:hourly") for h in (1, 2, 3))
        assert sorted(schedule_app.STARTS) == expected
        stats = env.node.stats()["schedules"]["workflows"]
        assert (stats["started"], stats["missed"], stats["skipped"]) == (6, 0, 0)
        assert env.status("api@2026-01-01T02:00:00Z") == "completed"
    schedule_app.STARTS.clear()


async def test_schedules_tick_on_the_environment_s_virtual_time(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """README (Schedules): the scheduler runs on the host's clock, "so virtual time skips
    to the next tick in tests"; (Testing) env.sleep(d) fires what falls due on the way.
    With no clock asked for, the environment's own virtual clock used to skip past the
    ticks: schedules never ticked."""
    await _schedules_tick(tmp_path, monkeypatch, virtual=True)


async def test_schedules_tick_on_trio_autojump_clock(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    await _schedules_tick(tmp_path, monkeypatch, virtual=False)


async def test_a_wait_for_ever_never_ends_in_the_env_and_time_stays_where_it_was(
        ) -> None:
    """A workflow's ``sleep(float("inf"))`` or ``receive(timeout=float("inf"))`` waits
    for ever (README), recorded as the latest deadline there is: the environment jumped
    its clock there (9999-12-31), woke them, and every timer after fired at once."""
    async with garrison.testing.workflow_env() as env:
        start = env.now()
        sleeper = await env.start(ops_app.sleeps_forever, id="s")
        receiver = await env.start(ops_app.receives_forever, id="r")
        timed = await env.start(ops_app.reminders, 2, id="t")
        await env.settle()
        with trio.move_on_after(2) as waited:  # (virtual time: nothing else is due)
            await sleeper.result()
        assert waited.cancelled_caught
        assert env.status("s") == "sleeping" and env.status("r") == "waiting"
        assert await timed.result() == "expired"  # two days, a day at a time
        assert (env.now() - start).total_seconds() == 2 * 86400
        await receiver.signal("note", "hello")
        assert await receiver.result() == "received hello"
        assert env.status("s") == "sleeping"


async def test_env_sleep_past_the_last_date_or_forever_is_refused_and_the_env_goes_on() -> None:
    """``env.sleep(1e20)`` returned and left ``env.now()`` an OverflowError (and every
    workflow's clock past any date); ``env.sleep(float("inf"))`` blocked for good.
    Both are a ValueError naming the duration, and the environment stays usable."""
    import math

    async with garrison.testing.workflow_env() as env:
        for too_far in (1e20, "99999999999d", math.inf):
            with pytest.raises(ValueError, match=r"^env\.sleep\(.*\): time cannot pass "
                                                 r"beyond 9999-12-31T23:59:59Z"):
                await env.sleep(too_far)
        before = env.now()
        await env.sleep("1d")
        assert (env.now() - before).total_seconds() == 86400


async def _sleep_to_the_last_moment() -> None:
    env: Any
    async with garrison.testing.workflow_env() as env:
        until = await env.start(ops_app.sleeps_until_the_last_moment, id="u")
        forever = await env.start(ops_app.sleeps_forever, id="f")
        await env.settle()
        last = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
        await env.sleep(last - env.now())
        assert env.now() == last
        # time is there: the waits recorded at that moment (a wait for ever's too) end,
        # as on a node whose clock reaches it
        assert await until.result() == "woke at 9999-12-31 23:59:59+00:00"
        assert await forever.result() == "woke at 9999-12-31 23:59:59+00:00"
        with pytest.raises(ValueError, match=r"time cannot pass beyond 9999-12-31"):
            await env.sleep("1s")
        await env.sleep(0)
        assert env.now() == last


async def test_env_sleep_to_the_last_moment_returns_there() -> None:
    """README (Testing): only a ``d`` *past* 9999-12-31T23:59:59Z is a ValueError. One
    that ends exactly there passed the check and then hung: the environment's own
    clock took that moment for "for ever" (never due), its own sleep included."""
    with trio.fail_after(30):  # (real time: the hang this was)
        await _sleep_to_the_last_moment()


async def test_env_sleep_to_the_last_moment_on_trio_autojump_clock(
        autojump_clock: Any) -> None:
    await _sleep_to_the_last_moment()


async def _rate_limited_starts(tmp_path: Any) -> None:
    """Four starts on a host allowing one an hour: each starts an hour after the one
    before, on the environment's time."""
    (tmp_path / "app.yaml").write_text(
        'version: "1.0"\nnamespace: app\nentries:\n'
        '  - {name: jobs, kind: workflow.host, store: jobs.db, rate: "1/1h"}\n')
    async with garrison.testing.workflow_env(config=tmp_path / "app.yaml") as env:
        t0 = env.now()
        for n in range(4):
            await env.start(ops_app.returns_at_once, id=f"j{n}", host="app:jobs")
        await env.settle()
        assert [env.status(f"j{n}") for n in range(4)] == ["completed"] + ["pending"] * 3
        with trio.fail_after(10 if env.virtual else 86400):
            assert await env.result("j3") == "done"
        assert 3 * 3600 <= (env.now() - t0).total_seconds() < 3 * 3600 + 60


async def test_a_rate_limited_host_starts_its_queue_on_the_environment_s_time(
        tmp_path: Any) -> None:
    """The queue waited for a rate's slot on a deadline of the environment's virtual
    clock the environment never jumped to: the queued workflows never started."""
    await _rate_limited_starts(tmp_path)


async def test_a_rate_limited_host_starts_its_queue_on_trio_autojump_clock(
        tmp_path: Any, autojump_clock: Any) -> None:
    await _rate_limited_starts(tmp_path)


@garrison.activity
async def _real_io(seconds: float) -> str:
    await trio.sleep(seconds)  # (an activity's own I/O: real time, not skipped)
    return "done"


async def _does_real_io() -> str:
    return await _real_io(0.2)


async def test_env_result_of_a_workflow_nothing_can_end_raises_instead_of_hanging(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``env.result`` of a workflow waiting for a message nobody sends (or waiting for
    ever) waited for ever, in real time: a test hung until pytest's timeout. Once every
    workflow waits, nothing is due and nothing else woke one for STUCK_AFTER, it raises.
    One whose activity awaits its own I/O meanwhile is not taken for stuck."""
    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 0.05)
    async with garrison.testing.workflow_env() as env:
        await env.start(ops_app.receives_forever, id="r")
        with pytest.raises(RuntimeError, match=r"^env.result\('r'\): workflow 'r' is waiting "
                                               "and nothing can end it: every task waits"):
            await env.result("r")
        await env.start(_does_real_io, id="io")  # runs its step longer than STUCK_AFTER
        assert await env.result("io") == "done"
        await env.node.workflow("r").signal("note", "late")  # still alive, and ends
        assert await env.result("r") == "received late"


_RELEASE: list[trio.Event] = []


@garrison.activity
async def _awaits_release() -> str:
    await _RELEASE[0].wait()  # (its I/O that never returns, until the test lets it)
    return "released"


async def _calls_a_slow_activity() -> str:
    return await _awaits_release()  # the workflow's line the warning names


async def test_env_result_warns_of_a_step_that_runs_on_in_real_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An async activity that never returns (no timeout) counts as running, as its I/O
    may end it: ``env.result`` then waited for ever, in silence, the test hung with no
    word of where. Once its step ran STUCK_AFTER real seconds with nothing due, a
    warning (in pytest's captured log when the test is ended) names where it waits."""
    import logging

    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 0.05)
    said: list[str] = []
    warned = trio.Event()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())
            warned.set()

    catch = Catch(logging.WARNING)
    logging.getLogger("garrison.testing").addHandler(catch)
    _RELEASE[:] = [trio.Event()]
    got: list[str] = []
    try:
        async with garrison.testing.workflow_env() as env:
            await env.start(_calls_a_slow_activity, id="slow")

            async def await_result() -> None:
                got.append(await env.result("slow"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(await_result)
                with trio.move_on_after(10):  # (real time: without the warning, a failure)
                    await warned.wait()
                _RELEASE[0].set()
    finally:
        logging.getLogger("garrison.testing").removeHandler(catch)
    assert got == ["released"]
    warning, = said
    assert warning.startswith("env.result('slow'): workflow 'slow' has run a step for "
                              "0.05 s of real time"), warning
    assert f'File "{__file__}", line ' in warning
    assert "in _awaits_release\n    await _RELEASE[0].wait()" in warning, warning
    assert "in _calls_a_slow_activity\n    return await _awaits_release()" in warning
    assert "mock it (env.mock_activity) or give it a timeout" in warning


async def _waits_on_approval() -> str:
    return str(await workflow.promise("approval"))


async def _parent_of_a_waiter() -> str:
    await process.spawn(_waits_on_approval)
    got = await process.listen("note").receive()
    return str(got.payload)


async def test_env_result_stuck_names_what_the_workflow_and_its_children_wait_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The error of a workflow nothing can end said 'a promise nobody resolves, a
    message nobody sends, a wait for ever', not which: it names the waits of the
    workflow and of its children."""
    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 0.05)
    async with garrison.testing.workflow_env() as env:
        await env.start(_parent_of_a_waiter, id="p")
        with trio.fail_after(5), pytest.raises(RuntimeError) as info:
            await env.result("p")
        said = str(info.value)
        child = next(w.workflow_id for w in env.node.workflows() if w.workflow_id != "p")
        assert ("(workflow 'p' waits on a receive of topic 'note', workflow "
                f"{child!r} on promise 'approval')") in said, said
        await env.start(ops_app.receives_forever, id="r")
        with trio.fail_after(5), pytest.raises(
                RuntimeError, match=r"\(workflow 'r' waits on a receive from its inbox\)"):
            await env.result("r")


async def test_the_handle_env_start_gives_raises_as_env_result_does_when_stuck(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """README: ``env.start`` returns the workflow's handle, and its ``result()`` (or
    ``env.workflow(id).result()``) waited for ever for a workflow nothing can end, where
    ``env.result(id)`` raises: the handles of the environment have its check."""
    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 0.05)
    async with garrison.testing.workflow_env() as env:
        handle = await env.start(ops_app.receives_forever, id="r")
        for each in (handle, env.workflow("r")):
            with trio.fail_after(5), pytest.raises(
                    RuntimeError, match=r"^env.result\('r'\): workflow 'r' is waiting and "
                                        "nothing can end it"):
                await each.result()
        assert isinstance(handle, garrison.WorkflowHandle) and handle.pid.id == "r"
        await handle.signal("note", "late")
        assert await handle.result() == "received late"


async def _heartbeat() -> None:
    while True:
        await workflow.sleep("1h")


async def _sleeps_days(days: int) -> str:
    await workflow.sleep(f"{days}d")
    return "woke"


async def _parent_of_a_sleeper(days: int) -> str:
    child = await process.spawn(_sleeps_days, days)
    async for event in process.events():
        if event.pid == child:
            return f"child ended: {event.error}"
    return "no event"


async def test_env_result_stuck_beside_a_workflow_that_repeats_a_timer_raises(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-312: a workflow that sleeps in a loop (a heartbeat, a poller) kept time
    skipping for ever, so ``env.result`` of a workflow waiting for a message nobody
    sends never raised (to 2031 in 15 s; the year 9999 without a timeout). Once IDLE_JUMPS
    jumps of time, made by other workflows' timers, left the awaited workflow as it
    was while neither it nor a child of its had a timer of its own, it raises; a
    workflow waiting on its own timer, or its child's, beside the heartbeat is not
    stuck however many jumps that takes."""
    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 0.05)
    monkeypatch.setattr(_env, "IDLE_JUMPS", 20)
    async with garrison.testing.workflow_env() as env:
        await env.start(_heartbeat, id="hb")
        await env.start(ops_app.receives_forever, id="r")
        t0 = env.now()
        with trio.fail_after(5), pytest.raises(
                RuntimeError, match=r"^env.result\('r'\): workflow 'r' is waiting and nothing "
                r"can end it: every task waits, no timer of its own is due \(20 jumps of "
                r"time, by other workflows' timers, left it as it was: if one of those workflows "
                r"ends it later, await env.sleep\(\) past that first\) and no activity runs"):
            await env.result("r")
        assert env.now() - t0 < dt.timedelta(hours=30)
        await env.start(_sleeps_days, 3, id="own")  # 72 of the heartbeat's jumps
        assert await env.result("own") == "woke"
        await env.start(_parent_of_a_sleeper, 3, id="parent")
        assert await env.result("parent") == "child ended: None"
        await env.workflow("r").signal("note", "late")  # still alive, and ends
        assert await env.result("r") == "received late"


async def test_a_workflow_a_real_time_sender_ends_beside_a_heartbeat_is_not_stuck(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-329: the guard above counted jumps of time only, which a heartbeat makes in
    a blink: a workflow that the test's own task signals after a little real time (as a
    plain process answering from real I/O would) was taken for stuck before the signal
    came. Time stands once the jumps are spent, for STUCK_AFTER real seconds."""
    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 2.0)
    monkeypatch.setattr(_env, "IDLE_JUMPS", 20)
    async with garrison.testing.workflow_env() as env:
        await env.start(_heartbeat, id="hb")
        await env.start(ops_app.receives_forever, id="r")

        async def signal_later() -> None:
            await trio.sleep(0.3)  # (real time: the environment's own clock skips)
            await env.workflow("r").signal("note", "in time")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(signal_later)
            with trio.fail_after(5):
                assert await env.result("r") == "received in time"


async def _races_real_io() -> str:
    io = workflow.start(_real_io, 0.2)
    won = await workflow.first(io, workflow.promise("cancel"))
    return str(await io) if won is io else "cancelled"


async def test_env_result_of_a_workflow_racing_a_started_activity_is_not_stuck(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow parked in ``first`` on an activity it started (and a promise) was
    taken for stuck while the async activity awaited its I/O: ``first`` parks it
    (``waiting``, where awaiting the activity alone leaves it running), and the guard
    counted only plain activities' threads."""
    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 0.05)
    async with garrison.testing.workflow_env() as env:
        await env.start(_races_real_io, id="x")
        assert await env.result("x") == "done"


async def _never_replies() -> None:
    process.register("silent")
    async for _ in process.inbox():
        pass


async def _calls_silent(to: str = "silent", timeout: str = "1h") -> str:
    try:
        return str(await process.call(to, "q", timeout=timeout))
    except TimeoutError as exc:
        return f"timed out: {exc}"


async def test_a_workflow_s_call_timeout_falls_due_on_the_environment_s_time() -> None:
    """A workflow's ``process.call(..., timeout="1h")`` to a workflow that never replies
    waited the hour in real time on the environment's own clock: ``env.sleep("2h")``
    returned with the workflow still running. Its timeout is due on the workflow's
    time, as its timers are (the callee, a workflow, answers on that time too)."""
    async with garrison.testing.workflow_env() as env:
        await env.start(ops_app.sleeps_forever, id="s")  # (its inbox is never read)
        await env.settle()
        t0 = env.now()
        await env.start(_calls_silent, "workflows/s", id="c")
        await env.sleep("2h")
        assert env.status("c") == "completed"
        assert await env.result("c") == ("timed out: call to workflows/s (topic 'q') got "
                                         "no reply within 3600s")
        assert env.now() - t0 == dt.timedelta(hours=2)


async def _prices_slowly(seconds: float) -> None:
    """A plain process working in real time before each reply (as on a DB driver's
    thread or I/O)."""
    process.register("pricer")
    async for msg in process.inbox():
        await trio.sleep(seconds)
        await msg.reply(msg.payload * 3)


async def _asks_price(qty: int) -> int:
    return int(await process.call("pricer", "price", qty))


async def test_a_workflow_s_call_to_a_plain_process_times_out_in_real_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain process answers in real time: while it awaited its I/O (a thread, a
    ``trio.sleep``) every task waited, and the environment jumped its clock past the
    workflow's call timeout (5s of virtual time after 0.2s of real time): the workflow
    failed with ``TimeoutError``. Such a call's timeout is real time; the caller runs
    its step meanwhile, so a short STUCK_AFTER does not take it for stuck."""
    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 0.05)
    async with garrison.testing.workflow_env() as env:
        await env.node.spawn(_prices_slowly, 0.2)
        await env.settle()
        t0 = env.now()
        await env.start(_asks_price, 2, id="o")
        assert await env.result("o") == 6
        assert env.now() == t0  # (nothing was due: time did not skip)


async def test_a_workflow_s_call_to_a_silent_plain_process_ends_at_its_real_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The call's real timeout, longer than STUCK_AFTER, ends it (not the stuck
    check's ``RuntimeError``, nor a jump of virtual time at once), with the
    ``TimeoutError`` a node gives."""
    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 0.05)
    async with garrison.testing.workflow_env() as env:
        await env.node.spawn(_never_replies)
        await env.settle()
        started = time.monotonic()
        await env.start(_calls_silent, "silent", "0.3s", id="c")
        assert await env.result("c") == (f"timed out: call to {env.node.lookup('silent')} "
                                         "(topic 'q') got no reply within 0.3s")
        assert time.monotonic() - started >= 0.3


async def _dies_on_a_call() -> None:
    process.register("silent")
    await process.inbox().receive()
    raise ValueError("boom")


async def _calls_silent_catching() -> str:
    try:
        return str(await process.call("silent", "q", timeout="1h"))
    except garrison.ProcessError as exc:
        return f"died: {exc.error.message}"


async def test_a_workflow_s_call_with_a_timeout_fails_on_the_environment_s_time_as_live(
) -> None:
    """helper-267: the call's virtual timeout ran its wait in a nursery, which wrapped
    the callee's death in an ExceptionGroup: the workflow's ``except ProcessError``
    never matched, nothing was journaled, and it failed with an ExceptionGroup. The
    call's errors come out as they do on a node."""
    async with garrison.testing.workflow_env() as env:
        await env.node.spawn(_dies_on_a_call)
        await env.settle()
        await env.start(_calls_silent_catching, id="c")
        assert await env.result("c") == "died: boom"
        assert [r.kind for r in env.workflow("c").history()] == ["call"]


async def _tells_x_to_go() -> None:
    await process.send("workflows/x", "go", "from the schedule")


async def test_env_result_stuck_beside_a_schedule_raises_after_idle_ticks(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recurring schedule (one of the config's too) disabled the hang guard: a tick
    was always due, so ``env.result`` of a workflow waiting for a message nobody sends
    skipped from tick to tick for ever (to 2031, 43,124 workflows in 20 s). Once ticks
    are all that is due and IDLE_TICKS fired without the awaited workflow changing,
    they count as nothing that can end it; a tick whose workflow ends it still does."""
    import schedule_app

    from garrison.testing import _env

    monkeypatch.setattr(_env, "STUCK_AFTER", 0.05)
    monkeypatch.setattr(_env, "IDLE_TICKS", 5)
    (tmp_path / "app.yaml").write_text(
        'version: "1.0"\nnamespace: app\nentries:\n'
        '  - {name: job, kind: workflow.py, source: "schedule_app:job"}\n'
        '  - {name: hourly, kind: workflow.schedule, workflow: job, every: 1h}\n')
    async with garrison.testing.workflow_env(config=tmp_path / "app.yaml") as env:
        await env.node.schedule("api", schedule_app.job, 60.0, every="1h")  # sleeps 1 min
        await env.start(schedule_app.waits_for_go, id="w")
        with trio.fail_after(2), pytest.raises(
                RuntimeError, match=r"^env.result\('w'\): workflow 'w' is waiting and nothing "
                r"can end it: every task waits, no timer is due but schedules' ticks \(\d+ "
                r"fired, each schedule's once at least, without changing it\) and no "
                r"activity runs"):
            await env.result("w")
        assert len(env.node.workflows()) < 20
        # (a tick of its own comes after more than IDLE_TICKS of the hourly ones)
        await env.node.schedule("daily", _tells_x_to_go, every="1d")
        await env.start(schedule_app.waits_for_go, id="x")
        with trio.fail_after(2):
            assert await env.result("x") == "from the schedule"
    schedule_app.STARTS.clear()


async def _waits_for_approval() -> str:
    msg = await process.listen("approval").receive()
    return str(msg.payload)


async def test_after_the_env_s_node_stopped_its_stats_count_no_queued_message(
        autojump_clock: Any) -> None:
    """A workflow parked in a receive, with messages of other topics in its inbox: once
    the env's node stopped, ``stats()`` counted no live process but those messages
    still (``queued`` 2, ``largest_inbox_pid`` the workflow), as if it ran on."""
    async with garrison.testing.workflow_env() as env:
        await env.start(_waits_for_approval, id="w")
        for n in range(2):
            await env.signal("w", "reminder", n)
        await env.settle()
        stats = env.node.stats()
        assert (stats["processes"], stats["queued"], stats["largest_inbox"]) == (1, 2, 2)
    stats = env.node.stats()
    assert (stats["processes"], stats["queued"], stats["largest_inbox"],
            stats["largest_inbox_pid"]) == (0, 0, 0, None)


async def test_the_environment_s_store_calls_run_in_the_trio_thread() -> None:
    """The environment's clock jumps once every task waits, as a MockClock does: a store
    call in a worker thread (``run_blocking``) let it jump meanwhile (a schedule's read
    saw an hour go by). Its node's calls run in the trio thread, as under a MockClock;
    past the environment, in a worker thread again."""
    import threading

    from garrison.persistence import run_blocking

    here = threading.get_ident()
    async with garrison.testing.workflow_env():
        assert await run_blocking(threading.get_ident) == here
    assert await run_blocking(threading.get_ident) != here


async def _echo(value: Any = None) -> Any:
    return value


async def test_an_env_handle_given_as_a_payload_says_what_to_store_instead() -> None:
    """``env.start`` gives a subclass of the node's workflow handle: the refusal of a
    handle as a payload must hold for it too (it said 'NameError: name 'Node' is not
    defined', the converter reading the handle's fields as a record's), since a test's
    handle is the one a test writer most likely passes on."""
    async with garrison.testing.workflow_env() as env:
        handle = await env.start(_echo, id="a")
        with pytest.raises(garrison.PayloadError, match=(
                r"at \[0\] cannot be converted to JSON: a workflow's handle is not "
                r"durable: store the workflow's id")) as refused:
            await env.start(_echo, handle, id="b")
        assert "NameError" not in str(refused.value)
        with pytest.raises(garrison.PayloadError, match=r"a workflow's handle is not durable"):
            await handle.signal("t", {"h": handle})
