"""The workflow examples run as a user runs them (so the docs cannot drift)."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
from _leftovers import run_leaving_no_temp_files

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> str:
    done = run_leaving_no_temp_files([sys.executable, f"examples/{name}", *args], cwd=ROOT,
                                     timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_order_saga_compensates_in_reverse() -> None:
    out = run_example("order_saga.py")
    assert "Outcome(status='completed', step='', error='', tracking='TRACK-o-1'" in out
    assert ("step='charge', error='PermissionError: card declined for 99', tracking='', "
            "compensated=['release_inventory']") in out
    assert "compensated=['refund_payment', 'release_inventory']" in out
    assert out.index("refund pay-o-3") < out.index("release res-o-3")
    assert "ship_failed: ['order-o-3']" in out
    assert out.count("log: order o-3: ship failed (ValueError: cannot ship to ''), "
                     "compensating") == 1


def test_order_saga_on_a_durable_store(store_spec: str) -> None:
    out = run_example("order_saga.py", store_spec)
    assert "ship_failed: ['order-o-3']" in out
    # a second run finds the finished workflows (idempotent start) and runs nothing again
    again = run_example("order_saga.py", store_spec)
    assert "compensate:" not in again and "TRACK-o-1" in again
    assert "log:" not in again


def test_approval_waits_for_its_message(tmp_path: Path) -> None:
    out = run_example("approval.py", str(tmp_path / "s.db"))
    assert "workflows/approval-1 is waiting" in out
    assert "ticket-laptop fulfilled (approved by ann)" in out
    assert "ticket-yacht expired without an answer" in out
    assert "(2, 'receive', 'inbox')" in out
    # run again on its store, as its docstring says (it waited for ever for a
    # 'waiting' the finished workflow never shows again: helper-256)
    again = run_example("approval.py", str(tmp_path / "s.db"))
    assert "workflows/approval-1 is completed" in again
    assert "ticket-laptop fulfilled (approved by ann)" in again


def test_crash_demo_survives_kill_9() -> None:
    out = run_example("crash_demo.py")
    assert "with SIGKILL (exit -9)" in out
    assert out.count("step 1 runs") == 1
    assert "result: ['step 1 done', 'step 2 done', 'step 3 done']" in out
    assert "survived kill -9" in out
    # the resumed child ran the workflow's code from the top: what it logged before the
    # crash is not logged again
    assert out.count("log: workflow started") == 1
    resumed = out[out.index("[parent] killed"):]
    # the first child's log line after step 1 is shown (the parent stopped reading its
    # output at "step 1 runs" and the line was lost: helper-275)
    assert out.count("log: step 1 recorded, sleeping") == 1
    assert out.index("log: step 1 recorded, sleeping") < out.index("[parent] killed")
    assert "log: workflow started" not in resumed and "log: step 1 recorded" not in resumed
    assert resumed.count("log: awake: steps 2 and 3") == 1


def test_document_approval_promise_state_and_48h_timeout() -> None:
    out = run_example("document_approval.py")
    assert "[doc-1] waiting: state(status) = 'waiting for review'" in out
    assert "Decision(status='approved', approver='bob', comments='ship it')" in out
    assert "Decision(status='rejected', approver='', comments='needs numbers')" in out
    assert ("Decision(status='timeout', approver='', comments='') after 48 hours "
            "(virtual time); state(status) = 'timed out'") in out
    assert out.count("log: [doc-3] waiting up to 48h for a review") == 1
    assert out.index("log: [doc-3] no review in time") < out.index("[doc-3] Decision")


def test_the_example_tests_use_the_testing_kit() -> None:
    """examples/test_document_approval.py: tests a user writes with garrison.testing
    (the garrison_env fixture, mocked activities, a 48-hour deadline skipped, a golden
    history replayed)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q",
                           "-p", "no:cacheprovider", "examples/test_document_approval.py"],
                          cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_document_approval_on_a_durable_store(store_spec: str) -> None:
    out = run_example("document_approval.py", store_spec)
    assert out.count("published (approved by bob)") == 1
    again = run_example("document_approval.py", store_spec)
    # finished: not run again, and its 48 hours read from the store (not this run's clock)
    assert "published" not in again and "after 48 hours" in again


def test_order_fulfillment_collects_child_exits() -> None:
    out = run_example("order_fulfillment.py")
    assert ("order-o-1: {'status': 'completed', 'payment': 'pay-o-1', "
            "'shipping': 'TRACK-o-1'}") in out
    assert "'payment': 'failed: ActivityError: PermissionError: card declined for 5000'" in out
    assert "order-o-2.1  payment_workflow   failed" in out
    assert "order-o-2    order_workflow     completed  {'stage': 'needs attention'}" in out


def test_onboarding_waits_for_verification_with_a_deadline(tmp_path: Path) -> None:
    out = run_example("onboarding.py", str(tmp_path / "s.db"))
    assert out.count("[ann@example.com] email: reminder") == 1
    assert "ann@example.com (verified via link) is active" in out
    assert "bob@example.com never verified (after 3 days)" in out
    assert "(8, 'first', '')" in out
    again = run_example("onboarding.py", str(tmp_path / "s.db"))  # (it hung: helper-256)
    assert "reminder" not in again and "ann@example.com (verified via link) is active" in again
    assert "bob@example.com never verified (after 3 days)" in again


def test_asyncio_app_waits_without_holding_threads_and_says_why_a_node_did_not_open(
        tmp_path: Path) -> None:
    """helper-279: README's asyncio recipe awaited a workflow's result through
    ``asyncio.to_thread``, holding one of asyncio's executor threads per waiting request:
    six waits on a 2-CPU machine blocked every other request, the signal that would end
    them included. The example waits on futures (twenty at once here, more than the
    executor's threads), a cancelled request leaves its workflow running, and a node
    that cannot open (its store held) raises from ``start()`` where the recipe's thread
    died and the app waited for ever."""
    out = run_example("asyncio_app.py", str(tmp_path / "s.db"))
    assert "20 requests answered, e.g. 'req-0: approved by ann'" in out
    assert "req-gone is still waiting (its request was cancelled)" in out
    code = ("import sys, trio, garrison; sys.path.insert(0, 'examples'); "
            "import asyncio_app as a\n"
            "async def held():\n"
            f"    async with garrison.open_node(store={str(tmp_path / 's.db')!r}):\n"
            "        runner = a.NodeThread(store=" + repr(str(tmp_path / "s.db")) + ")\n"
            "        try:\n"
            "            runner.start()\n"
            "        except garrison.StoreLocked as exc:\n"
            "            print('refused:', type(exc).__name__)\n"
            "trio.run(held)\n")
    done = run_leaving_no_temp_files([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "refused: StoreLocked\n", done.stdout


def test_asyncio_app_node_thread_settles_every_call_and_restarts(tmp_path: Path) -> None:
    """helper-300: calls made while ``NodeThread.stop()`` ran crashed trio ("Nursery is
    closed to new arrivals") and their requests waited for ever; a second ``start()``
    after ``stop()`` returned the closed node and the next ``stop()`` hung (two
    ``with TestClient(app)`` blocks); one call's ``SystemExit`` stopped the node for
    every request, unlogged. Each call now settles, a stopped runner starts again, a
    second start of a running one is refused, and a call's SystemExit is its own (a
    RuntimeError from it: nu-348)."""
    store = str(tmp_path / "s.db")
    code = f"""
import asyncio, sys
sys.path.insert(0, 'examples')
import asyncio_app as a

async def one():
    return 1

async def leave():
    sys.exit(3)

async def main():
    runner = a.NodeThread(store={store!r})
    try:
        await runner.call(one)
    except RuntimeError as exc:
        print('before start:', exc)
    runner.start()
    try:
        runner.start()
    except RuntimeError as exc:
        print('twice:', exc)
    try:
        await runner.call(leave)
    except RuntimeError as exc:
        print('a call exits:', exc.__cause__.code)
    print('still serves:', await runner.call(one))
    stopping = asyncio.ensure_future(asyncio.to_thread(runner.stop))
    calls = []
    while not stopping.done():
        calls.append(runner.call(one))
        await asyncio.sleep(0)
    await stopping
    done, waiting = await asyncio.wait(calls, timeout=30)
    print('unsettled:', len(waiting))
    try:
        await runner.call(one)
    except RuntimeError as exc:
        print('after stop:', exc)
    runner.start()
    print('again:', await runner.call(one))
    runner.stop()
    runner.stop()

asyncio.run(main())
"""
    done = run_leaving_no_temp_files([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "before start: the node is not started: start() it first",
        "twice: this NodeThread runs already: stop() it before starting it again",
        "a call exits: 3",
        "still serves: 1",
        "unsettled: 0",
        "after stop: the node has stopped (NodeThread.stop, or it failed): start() it "
        "again to call into it",
        "again: 1",
    ], done.stdout


@pytest.fixture
def asyncio_app(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/asyncio_app.py imported in this process (its NodeThread in a thread)."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    return importlib.import_module("asyncio_app")


async def _outcome(call: Any) -> str:
    try:
        return f"returned {await call!r}"
    except BaseException as exc:  # (what the asyncio side sees, whatever it is)
        if exc.__cause__ is not None:  # (a BaseException of fn's: a RuntimeError)
            return f"raised {type(exc).__name__} from {exc.__cause__!r}"
        return f"raised {exc!r}"


def test_asyncio_app_a_calls_base_exception_is_its_own(asyncio_app: ModuleType) -> None:
    """helper-326: a call's ``fn`` raising a BaseException other than SystemExit (a
    KeyboardInterrupt of its own, trio's strict nursery group around a child's
    SystemExit) stopped the node: that call and every later one got "the node stopped",
    and ``stop()`` raised it into the app. It is now that call's error, and the node
    serves on; a call the node's own stop cuts short still says so. (Since nu-348 it
    comes as a RuntimeError from it, so asyncio never re-raises it out of its loop.)"""
    async def child_exits() -> None:
        async def child() -> None:
            raise SystemExit(3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)

    async def main() -> list[str]:
        runner = asyncio_app.NodeThread(store=None)
        runner.start()

        async def raises(exc: BaseException) -> None:
            raise exc

        async def one() -> int:
            return 1

        async def waits_in_a_nursery() -> None:  # (the stop's Cancelled: a group)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep_forever()

        seen = [await _outcome(runner.call(raises, KeyboardInterrupt("mine"))),
                await _outcome(runner.call(raises, BaseExceptionGroup("g", [SystemExit(4)]))),
                await _outcome(runner.call(child_exits)),
                await _outcome(runner.call(one))]
        async def exits_as_the_node_stops() -> None:  # (a group: Cancelled, SystemExit)
            async def child() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    raise SystemExit(5)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
                await trio.sleep_forever()

        cut = [asyncio.ensure_future(_outcome(runner.call(fn)))
               for fn in (trio.sleep_forever, waits_in_a_nursery, exits_as_the_node_stops)]
        await asyncio.sleep(0.05)
        try:
            runner.stop()
            seen.append("stopped")
        except BaseException as exc:
            seen.append(f"stop raised {exc!r}")
        return seen + list(await asyncio.gather(*cut))

    gone = "raised RuntimeError('the node stopped before the call ended')"
    assert asyncio.run(main()) == [
        "raised RuntimeError from KeyboardInterrupt('mine')",
        "raised RuntimeError from BaseExceptionGroup('g', [SystemExit(4)])",
        "raised RuntimeError from BaseExceptionGroup('Exceptions from Trio nursery', "
        "[SystemExit(3)])",
        "returned 1",
        "stopped",
        gone,
        gone,
        "raised RuntimeError from BaseExceptionGroup('Exceptions from Trio nursery', "
        "[SystemExit(5)])",
    ]


def test_asyncio_app_a_calls_system_exit_does_not_end_the_asyncio_loop(
        asyncio_app: ModuleType) -> None:
    """nu-348: a call's ``fn`` raising ``SystemExit`` set it on the asyncio future, and a
    handler awaiting it (one that catches ``Exception``, as a web framework does) let it
    through its task, which asyncio re-raises out of the loop: the whole server ended
    for one request. It is now a ``RuntimeError`` naming it, chained from it."""
    async def main() -> list[str]:
        runner = asyncio_app.NodeThread(store=None)
        runner.start()

        async def leave() -> None:
            raise SystemExit(3)

        async def interrupt() -> None:
            raise KeyboardInterrupt(4)

        async def one() -> int:
            return 1

        async def handler(call: Any) -> str:  # (a framework's: catches Exception only)
            try:
                return f"returned {await call!r}"
            except Exception as exc:
                return f"{exc} (from {exc.__cause__!r})"

        try:
            return list(await asyncio.gather(
                asyncio.ensure_future(handler(runner.call(leave))),
                asyncio.ensure_future(handler(runner.call(interrupt))),
                asyncio.ensure_future(handler(runner.call(one)))))
        finally:
            runner.stop()

    try:
        seen = asyncio.run(main())
    except BaseException as exc:  # (the old code: the loop itself ended)
        seen = [f"the loop ended: {exc!r}"]
    name = "test_asyncio_app_a_calls_system_exit_does_not_end_the_asyncio_loop.<locals>."
    why = ("(given as a RuntimeError: raised as is, a SystemExit or KeyboardInterrupt "
           "would end the asyncio loop, every request with it)")
    assert seen == [
        f"NodeThread.call of {name}main.<locals>.leave raised SystemExit(3) {why} "
        "(from SystemExit(3))",
        f"NodeThread.call of {name}main.<locals>.interrupt raised KeyboardInterrupt(4) "
        f"{why} (from KeyboardInterrupt(4))",
        "returned 1",
    ]


async def _adds(a: int, b: int) -> int:
    return a + b


def test_asyncio_app_call_passes_keyword_arguments(asyncio_app: ModuleType) -> None:
    """nu-348: ``NodeThread.call(fn, *args)`` took no keyword arguments, so
    ``runner.call(node.start_workflow, wf, x, id=...)`` was a TypeError; they go to
    ``fn`` now."""
    async def main() -> list[Any]:
        runner = asyncio_app.NodeThread(store=None)
        node = runner.start()

        try:
            pid = await runner.call(node.start_workflow, _adds, 1, 2, id="add-1")
            return [pid == node.workflow("add-1").pid,
                    await runner.call(node.workflow("add-1").result)]
        finally:
            runner.stop()

    assert asyncio.run(main()) == [True, 3]


def test_asyncio_app_call_runs_in_the_callers_context(asyncio_app: ModuleType) -> None:
    """helper-326: ``NodeThread.call`` ran ``fn`` in the context of trio's entry-queue
    task, not the caller's: its contextvars (a correlation id, OpenTelemetry's current
    span) were lost. Each call now sees the context it was made in, as
    ``trio.from_thread.run`` does."""
    request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="-")

    async def main() -> list[str]:
        runner = asyncio_app.NodeThread(store=None)
        runner.start()

        async def seen() -> str:
            return request.get()

        async def handler(name: str) -> str:
            request.set(name)
            return str(await runner.call(seen))

        try:
            return list(await asyncio.gather(handler("req-1"), handler("req-2"),
                                             runner.call(seen)))
        finally:
            runner.stop()

    assert asyncio.run(main()) == ["req-1", "req-2", "-"]


async def _one() -> int:
    return 1


async def _interrupts() -> None:
    await trio.sleep(0)
    raise KeyboardInterrupt  # (README: a process letting it out stops the node, as Ctrl-C)


def test_asyncio_app_tells_the_app_its_node_died_and_why(asyncio_app: ModuleType) -> None:
    """nu-403: a node whose run ended on its own (a process let a KeyboardInterrupt out)
    left the app unaware: ``NodeThread`` had no public way to see it, every later call
    said "the node has stopped (NodeThread.stop, or it failed)" without the cause, and
    ``stop()`` raised the bare KeyboardInterrupt into the ASGI lifespan (where ``call``
    gives a BaseException as a RuntimeError). ``alive`` and ``error`` say it now (a
    health check), a later call names the cause and is chained from it, ``stop()``
    raises a RuntimeError from it, as ``call`` does."""
    async def main() -> list[str]:
        runner = asyncio_app.NodeThread(store=None)
        seen = [f"before start: alive={runner.alive} error={runner.error!r}"]
        node = runner.start()
        seen.append(f"started: alive={runner.alive} error={runner.error!r}")
        await runner.call(node.spawn, _interrupts)
        for _ in range(3000):  # (its run ends at once: 30 s at most on a busy machine)
            if not runner.alive:
                break
            await asyncio.sleep(0.01)
        seen.append(f"died: alive={runner.alive} error={runner.error!r}")
        try:
            await runner.call(_one)
        except RuntimeError as exc:
            seen.append(f"a call: {exc} (from {exc.__cause__!r})")
        try:
            await runner.aclose()
        except RuntimeError as exc:
            seen.append(f"stop: {exc} (from {exc.__cause__!r})")
        seen.append(f"stopped: alive={runner.alive} error={runner.error!r}")
        await runner.aclose()  # (a second stop does nothing)
        runner.start()  # (a new run: its error is gone)
        seen.append(f"again: alive={runner.alive} error={runner.error!r} "
                    f"{await runner.call(_one)}")
        await runner.aclose()
        return seen

    assert asyncio.run(main()) == [
        "before start: alive=False error=None",
        "started: alive=True error=None",
        "died: alive=False error=KeyboardInterrupt()",
        "a call: the node has stopped: it failed with KeyboardInterrupt() (NodeThread.error); "
        "stop() it, then start() it again to call into it (from KeyboardInterrupt())",
        "stop: the node failed with KeyboardInterrupt() (given as a RuntimeError: raised as "
        "is, a SystemExit or KeyboardInterrupt would end the asyncio loop, every request "
        "with it) (from KeyboardInterrupt())",
        "stopped: alive=False error=KeyboardInterrupt()",
        "again: alive=True error=None 1",
    ]


async def _slow_to_stop() -> None:
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(1)  # (as a node holding 20,000 workflows takes seconds)


def test_asyncio_app_stops_its_node_off_the_asyncio_loop(asyncio_app: ModuleType) -> None:
    """nu-403: README's lifespan called ``runner.stop()`` on the asyncio loop: a node
    slow to stop (20,000 waiting workflows: 8.5 s) froze the loop, a second Ctrl-C
    included. ``await runner.aclose()`` stops it in a worker thread: the loop runs on."""
    async def main() -> int:
        runner = asyncio_app.NodeThread(store=None)
        node = runner.start()
        await runner.call(node.spawn, _slow_to_stop)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0)
        try:
            await runner.aclose()
        finally:
            ticker.cancel()
        return ticks

    assert asyncio.run(main()) >= 3  # (stop() on the loop: 0, it ran no tick meanwhile)


def test_asyncio_app_call_made_off_the_asyncio_loop_says_where_to_call_it(
        asyncio_app: ModuleType) -> None:
    """nu-403: ``runner.call`` from a sync thread (a sync FastAPI endpoint, in a
    threadpool) or from inside the node (fn itself, a process) failed with asyncio's
    bare 'no running event loop'. It says where a call is made and what to use there."""
    runner = asyncio_app.NodeThread(store=None)
    node = runner.start()
    try:
        with pytest.raises(RuntimeError) as caught:
            runner.call(_one)
        assert str(caught.value) == (
            "NodeThread.call(_one) is awaited on the app's asyncio loop (in an async "
            "handler), and this thread runs none: from a thread of your own (a sync "
            "endpoint's, in a threadpool) call trio.from_thread.run(fn, *args, "
            "trio_token=runner.node.trio_token), which holds that thread until fn "
            "returns; see README, 'From an asyncio or a threaded app'")

        async def inside() -> str:
            try:
                runner.call(_one)
            except RuntimeError as exc:
                return str(exc)
            return "no error"

        assert trio.from_thread.run(inside, trio_token=node.trio_token) == (
            "NodeThread.call(_one) is made inside the node's own trio run (a call's fn, a "
            "process, an activity): await _one(...) there directly")
        assert trio.from_thread.run(_one, trio_token=node.trio_token) == 1
    finally:
        runner.stop()
