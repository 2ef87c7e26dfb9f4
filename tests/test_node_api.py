"""The node API usable from anywhere: ``garrison.current_node()`` and ``node.call``."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
import workflow_app as app

import garrison
from garrison import NotInProcess, ProcessError, process


# ------------------------------------------------------------------ current_node
def test_current_node_in_the_root_process_of_run():
    async def child() -> garrison.Node:
        return garrison.current_node()

    async def main() -> tuple[bool, int]:
        node = garrison.current_node()
        pid = await node.spawn(child)  # the node API from the root process
        return await node.wait(pid) is node, node.stats()["spawned"]

    assert garrison.run(main) == (True, 2)


async def _spawns_a_workflow() -> None:
    await process.spawn(node_in_a_workflow, host="workflows", id="spawned-child")


async def _plain() -> None:
    pass


async def test_a_node_name_with_a_control_character_is_refused() -> None:
    """A newline in a node's name (``--name``, ``name=``) forged a row of ``garrison
    nodes``' table, an escape acted on the terminal: a name is printable text."""
    for bad in ("evil\nnode-b  active  999", "esc\x1b[31mRED", "cr\rX", "tab\tb"):
        with pytest.raises(ValueError, match="a node name must be printable text"):
            async with garrison.open_node(name=bad):
                pass
    async with garrison.open_node(name="node-ä 1") as node:  # (printable: fine)
        assert node.name == "node-ä 1"


async def test_a_node_name_with_spaces_around_it_is_refused() -> None:
    """A node named ``' n5 '`` joined its cluster, ``garrison nodes`` showed it as
    ``n5`` and ``garrison nodes drain n5`` found no such node: spaces around a node's
    name are refused, as around a registered name (inside one they are fine)."""
    for bad in (" n5 ", "n5 ", " n5"):
        with pytest.raises(ValueError, match=f"a node name must not have spaces around "
                                             f"it, got {bad!r}"):
            async with garrison.open_node(name=bad):
                pass
    async with garrison.open_node(name="n 5") as node:
        assert node.name == "n 5"


def test_run_refuses_a_node_name_with_spaces_around_it() -> None:
    with pytest.raises(ValueError, match="spaces around it, got ' n5'"):
        garrison.run(_plain, name=" n5")


def test_run_inside_a_trio_program_says_to_open_a_node() -> None:
    """helper-393: ``garrison.run(main)`` from trio code failed with trio's bare
    ``Attempted to call run() from inside a run()``: it says what garrison.run is and
    what to use inside trio code. From a running asyncio loop it runs, as trio.run does
    (holding that loop until it returns)."""
    ran: list[str] = []

    async def main() -> str:
        ran.append("main")
        return "ran"

    async def inside() -> None:
        garrison.run(main)

    with pytest.raises(RuntimeError) as info:
        trio.run(inside)
    assert str(info.value) == (
        "garrison.run() is called inside a trio run: it starts an event loop of its own, "
        "as trio.run does; inside trio code, open a node in it: `async with "
        "garrison.open_node() as node:`, then `await node.wait(await node.spawn(main))`")
    assert ran == []

    async def under_asyncio() -> str:
        return garrison.run(main)

    assert asyncio.run(under_asyncio()) == "ran"


async def test_spawned_counts_plain_processes_whatever_starts_a_workflow() -> None:
    """helper-223: `spawned` counted a workflow started by `node.spawn(host=...)` and
    not the same workflow started by `start_workflow` or a workflow's own spawn; it
    counts plain processes, and `workflow_starts` counts every workflow's start."""
    async with garrison.open_node() as node:
        await node.wait(await node.spawn(node_in_a_workflow, host="workflows"))
        await node.start_workflow(node_in_a_workflow, id="started")
        await node.start_workflow(_spawns_a_workflow, id="spawner")
        for wid in ("started", "spawner", "spawned-child"):
            assert await node.workflow(wid).result() in (True, None)
        await node.wait(await node.spawn(_plain))
        assert node.stats()["spawned"] == 1


def test_run_takes_every_node_option_open_node_takes():
    """README gives the ``workflows`` host its limits "through ``open_node`` /
    ``garrison.run``": ``cluster_max_concurrent`` (and ``name``, ``lease``) were a
    TypeError from ``run``."""
    async def main() -> tuple[object, str]:
        node = garrison.current_node()
        return node.stats()["workflow_queues"]["workflows"]["cluster_max_concurrent"], node.name

    assert garrison.run(main, cluster_max_concurrent=2, name="n-1", lease="5s") == (2, "n-1")


async def test_current_node_in_spawned_processes_and_the_open_node_block(autojump_clock):
    async def grandchild() -> garrison.Node:
        return garrison.current_node()

    async def child() -> garrison.Node:
        return await process.call(await process.spawn(_answer, grandchild), "go")

    async with garrison.open_node() as node:
        assert garrison.current_node() is node
        assert await node.wait(await node.spawn(child)) is node
        async with garrison.open_node() as inner:  # nested: the innermost block's node
            assert garrison.current_node() is inner
            assert await inner.wait(await inner.spawn(grandchild)) is inner
        assert garrison.current_node() is node
        wf = await node.start_workflow(node_in_a_workflow, id="cn")
        assert await node.wait(wf) is True
    with pytest.raises(NotInProcess, match=r"garrison.current_node\(\) has no node here"):
        garrison.current_node()


async def node_in_a_workflow() -> bool:
    return garrison.current_node() is not None and "workflows" in garrison.current_node().hosts


async def _answer(fn) -> None:
    msg = await process.inbox().receive()
    await msg.reply(await fn())


@garrison.activity
async def _start_a_child(wid: str) -> str:
    """An activity uses the node API: it starts a workflow (by id, so that a retry of
    the activity gets the same one) and awaits its result."""
    node = garrison.current_node()
    await node.start_workflow(node_in_a_workflow, id=wid)
    return f"{node.name}: {await node.workflow(wid).result()}"


@garrison.activity
def _node_name_in_a_thread() -> str:
    return garrison.current_node().name


async def _node_in_activities() -> list[str]:
    return [await _start_a_child("from-an-activity"), await _node_name_in_a_thread()]


async def test_current_node_in_an_activity(tmp_path: Path, autojump_clock: object) -> None:
    """API.md: current_node() is the node of the calling process, or of the running
    garrison.run. Inside an activity (async or in its thread) it raised NotInProcess,
    naming a `process.node()` that does not exist."""
    async with garrison.open_node(store=str(tmp_path / "s.db"), name="n1") as node:
        await node.start_workflow(_node_in_activities, id="acts")
        assert await node.workflow("acts").result() == ["n1: True", "n1"]


def test_current_node_outside_everything():
    with pytest.raises(NotInProcess) as info:
        garrison.current_node()
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ node.call
async def _echo() -> None:
    async for msg in process.inbox():
        if msg.topic == "die":
            raise RuntimeError("asked to die")
        if msg.topic == "slow":
            await trio.sleep(2)
        if msg.topic == "sender":
            await msg.reply(msg.sender)
            continue
        await msg.reply(msg.payload)


async def test_node_spawn_in_a_loop_is_not_a_scheduler_pass_per_process(node, autojump_clock):
    """node.spawn returns the pid at once, as process.spawn does: the processes start
    when the caller waits; a loop of spawns yields every BUDGET (64) spawns only."""
    passes = 0

    class Passes(trio.abc.Instrument):
        def after_io_wait(self, timeout: float) -> None:
            nonlocal passes
            passes += 1

    ran: list[int] = []

    async def worker(i: int) -> int:
        ran.append(i)
        return i

    instrument = Passes()
    trio.lowlevel.add_instrument(instrument)
    try:  # (250: not a multiple of 64, so the loop's last pass comes before its end
        # whatever spawns the node made as it opened)
        pids = [await node.spawn(worker, i) for i in range(250)]
    finally:
        trio.lowlevel.remove_instrument(instrument)
    assert passes <= 250 // 64 + 1
    assert len(ran) < 250  # the last ones have not run yet
    assert [await node.wait(pid) for pid in pids] == list(range(250))
    assert sorted(ran) == list(range(250))


async def test_node_call_plain_process_and_registered_name(node, autojump_clock):
    pid = await node.spawn(_echo)
    assert await node.call(pid, "q", 7) == 7

    async def named() -> None:
        process.register("echo")
        await _echo()

    await node.spawn(named)
    await trio.testing.wait_all_tasks_blocked()  # it registered its name
    assert await node.call("echo", "q", {"a": 1}) == {"a": 1}
    assert await node.call(str(pid), "q") is None
    with pytest.raises(garrison.NoSuchProcess):
        await node.call("nobody", "q")
    with pytest.raises(TypeError, match=r"node.call\(\): a topic must be a str"):
        await node.call(pid, 1)


async def _divides(n: int) -> int:
    return 10 // n  # the process's bug: the line a failed test's report must show


async def test_a_failed_process_s_error_shows_the_line_that_raised(node):
    """``node.wait`` raises a ProcessError whose frames are garrison's: the process's
    own traceback (its ErrorInfo's) comes with it as a note, as a failed workflow's."""
    pid = await node.spawn(_divides, 0)
    with pytest.raises(ProcessError) as info:
        await node.wait(pid)
    report = "".join(traceback.format_exception(info.value))
    assert "return 10 // n  # the process's bug" in report, report
    assert "traceback of the error, where it was raised:" in report
    assert str(info.value) == (f"process {pid} failed: ZeroDivisionError: integer division "
                               "or modulo by zero")


async def test_node_call_callee_death_timeout_and_late_reply(node, autojump_clock):
    pid = await node.spawn(_echo)
    t0 = trio.current_time()
    with pytest.raises(TimeoutError, match="got no reply within 1s"):
        await node.call(pid, "slow", timeout="1s")
    assert trio.current_time() - t0 == 1
    # the late reply (at 2s) is dropped; the next call gets its own reply
    assert await node.call(pid, "q", "after") == "after"
    assert trio.current_time() - t0 == 2
    with pytest.raises(ProcessError, match="exited before replying: RuntimeError: asked to die"):
        await node.call(pid, "die")
    assert trio.current_time() - t0 == 2
    with pytest.raises(ProcessError, match="noproc"):
        await node.call(pid, "q")
    assert node.hosts["processes"].callers == {}


async def test_node_call_sender_is_not_a_process(node, autojump_clock):
    pid = await node.spawn(_echo)
    sender = await node.call(pid, "sender")
    assert isinstance(sender, garrison.Pid) and sender.host == "processes"
    dead = node.stats()["dead_letters"]
    await node.send(sender, "hello")
    assert node.stats()["dead_letters"] == dead + 1

    async def calls_it() -> str:
        try:
            await process.call(sender, "q")
        except ProcessError as exc:
            return exc.error.type
        return "answered"

    assert await node.wait(await node.spawn(calls_it)) == "noproc"


async def test_node_call_a_workflow(node, autojump_clock):
    wf = await node.start_workflow(app.echo_server, 2, id="echo")
    assert await node.call(wf, "q", 5) == {"echo": 5}
    assert await node.call("workflows/echo", "q", "x") == {"echo": "x"}
    assert await node.workflow("echo").result() == 2
    with pytest.raises(ProcessError, match="noproc"):
        await node.call(wf, "q", 1)


async def test_an_entry_id_without_a_config_says_to_pass_the_function(autojump_clock):
    """A new user's ``start_workflow("orders:order_workflow")`` on a node without a
    config: the error says what to pass instead (API.md: an async function or an
    entry id), not only that entry ids cannot be resolved."""
    async with garrison.open_node() as node:
        with pytest.raises(ValueError) as err:
            await node.start_workflow("orders:order_workflow", {"id": "o-1"}, id="o-1")
        assert "pass the async function itself (from orders import order_workflow)" in str(
            err.value), err.value
        assert "load a config that declares 'orders:order_workflow'" in str(err.value)
        with pytest.raises(ValueError, match="pass the async function itself, or load"):
            await node.spawn("not an id")


# ------------------------------------------------------------------ class targets
class _AsyncCall:
    async def __call__(self) -> int:
        return 1


class _NotCallable:
    pass


async def test_a_class_is_refused_as_a_process_target_whatever_was_checked_before(
        autojump_clock):
    """A class is no process target (calling it makes an instance, not an awaitable):
    whether one was accepted depended on the first class checked, whose verdict was
    kept for every class (by ``type(target)``, ``type`` for all of them); a class
    with an async ``__call__`` ran, then failed ("can't be used in 'await'
    expression"). Each is refused at the spawn, the one with an async ``__call__``
    told to pass an instance, in either order, from a node, a process and a ChildSpec."""
    from garrison.supervision import ChildSpec

    instance = (r"_AsyncCall is a class: .*; pass an instance \(_AsyncCall\(\.\.\.\)\), not "
                "the class")
    plain = r"_NotCallable is a class: a process target must be an async function"
    async with garrison.open_node() as node:
        for order in ([(_AsyncCall, instance), (_NotCallable, plain), (dict, "dict is a class")],
                      [(_NotCallable, plain), (_AsyncCall, instance), (dict, "dict is a class")]):
            for cls, said in order:
                with pytest.raises(TypeError, match=said):
                    await node.spawn(cls)
                with pytest.raises(TypeError, match=f"child 'c': cannot spawn .*{said}"):
                    ChildSpec("c", cls)

        async def spawner() -> str:
            try:
                await process.spawn(_AsyncCall)
            except TypeError as exc:
                return str(exc)
            return "accepted"

        assert "pass an instance (_AsyncCall(...))" in await node.wait(await node.spawn(spawner))
        assert await node.wait(await node.spawn(_AsyncCall())) == 1  # an instance runs


async def test_cluster_off_a_cluster_names_this_node_with_its_start_time() -> None:
    """``node.cluster()`` on a node of its own (no PostgreSQL store) gave ``started=True``:
    the node's start time was overwritten by its started flag."""
    import time

    before = time.time()
    async with garrison.open_node(name="solo") as node:
        (me,) = node.cluster()
        assert me.name == "solo"
        assert type(me.started) is float
        assert before - 1 <= me.started <= me.heartbeat <= time.time() + 1


async def test_a_closed_node_says_so_when_asked_to_start_or_spawn() -> None:
    """A node kept past its ``open_node`` block: a workflow start failed with the
    store's own "store '<memory>' is closed", a spawn with "the node is shutting
    down"; both now name the node and say it is closed."""
    async with garrison.open_node(name="gone") as node:
        pass
    with pytest.raises(RuntimeError, match=r"cannot start a workflow: node 'gone' is closed"):
        await node.start_workflow(app.links_a_workflow, "x", id="late")
    with pytest.raises(ProcessError, match=r"cannot spawn: node 'gone' is closed"):
        await node.spawn(app.add_one, 1)


async def test_a_closed_node_refuses_a_send_or_call_instead_of_dropping_it() -> None:
    """A send from a closed node returned as if delivered: to a workflow, its message
    was lost without a word (a durable send is a write); a call failed with the
    callee's ``noproc``, as if the process had died. Both say the node is closed."""
    async with garrison.open_node(name="gone") as node:
        pid = await node.spawn(app.echo_process)
        await node.start_workflow(app.sleeper, "1h", id="w1")
    for to in (pid, "workflows/w1", str(pid)):
        with pytest.raises(ProcessError, match=r"cannot send: node 'gone' is closed"):
            await node.send(to, "ping", 1)
    with pytest.raises(ProcessError, match=r"cannot call: node 'gone' is closed"):
        await node.call(pid, "ping", 1)
    assert node.stats()["dead_letters"] == 0


async def test_a_handle_kept_past_its_node_names_the_node(tmp_path: Path) -> None:
    """A handle (and ``node.workflows()``) used after its node's block: what reads the
    store failed with the store's bare "store '<path>' is closed"; each names the node,
    says it stopped, and how to reach the store instead. (What the node knew in memory
    still answers: this parked workflow's status, its result() saying it did not end
    here.)"""
    async with garrison.open_node(name="gone", store=str(tmp_path / "s.db")) as node:
        await node.start_workflow(app.sleeper, "1h", id="w1")
    handle = node.workflow("w1")
    said = (r"workflow 'w1': node 'gone' has stopped, and its store with it \(use the "
            r"store itself: garrison workflows --store PATH")
    for doing, call in [("read the history of", handle.history),
                        ("read state 'k' of", lambda: handle.state("k"))]:
        with pytest.raises(RuntimeError, match=rf"^cannot {doing} {said}"):
            call()
    for doing, acall in [("cancel", handle.cancel), ("terminate", handle.terminate)]:
        with pytest.raises(RuntimeError, match=rf"^cannot {doing} {said}"):
            await acall()
    with pytest.raises(RuntimeError, match=r"^cannot list workflows: node 'gone' is closed"):
        node.workflows()
    # (helper-393: an id the node had not run read the closed store first: RuntimeError
    # "cannot signal workflow 'nope': node 'gone' has stopped, and its store with it",
    # where README says a handle's signal raises ProcessError, as send does)
    for wid in ("w1", "nope"):
        with pytest.raises(ProcessError, match=rf"^cannot signal workflow '{wid}': node "
                                               r"'gone' is closed \(its `async with"):
            await node.workflow(wid).signal("go")


async def _spawns_on_no_host() -> str:
    try:
        await process.spawn(app.echo_process, host="")
    except ValueError as exc:
        return str(exc)
    return "spawned"


async def test_a_host_named_without_its_namespace_or_mistyped_says_the_one_meant(
        tmp_path: Path) -> None:
    """A config's ``process.host`` entry ``pool`` is the host ``j:pool``: a spawn with
    ``host="pool"`` said ``no host named 'pool' on this node (hosts: j:pool, ...)``,
    leaving the reader to spot it, where a config entry's bare name or typo says the
    id meant everywhere else (``did you mean 'app:handler'?``). So does a host now."""
    config = tmp_path / "app.yaml"
    config.write_text('version: "1.0"\nnamespace: j\nentries:\n'
                      "  - {name: pool, kind: process.host, workers: 2}\n")
    async with garrison.open_node(config=str(config)) as node:
        for given, meant in (("pool", "j:pool"), ("j:pol", "j:pool"),
                             ("workflow", "workflows"), ("procesess", "processes")):
            with pytest.raises(ValueError) as info:
                await node.spawn(app.echo_process, host=given)
            assert str(info.value) == (
                f"no host named {given!r} on this node (hosts: j:pool, processes, "
                f"workflows; did you mean {meant!r}?)")
        with pytest.raises(ValueError) as info:
            node.workflows(host="mars")
        assert str(info.value) == \
            "no host named 'mars' on this node (hosts: j:pool, processes, workflows)"


async def test_an_empty_host_name_is_refused_not_taken_for_the_default() -> None:
    """``host=""`` is falsy: spawns, starts, schedules and their listings ran on the
    default host as if ``host`` were left out (a config's ``host: ""`` is refused)."""
    said = r"no host named '' on this node \(hosts: processes, workflows\)"
    async with garrison.open_node() as node:
        with pytest.raises(ValueError, match=said):
            await node.spawn(app.echo_process, host="")
        with pytest.raises(ValueError, match=said):
            await node.start_workflow(app.sleeper, "1h", id="w", host="")
        with pytest.raises(ValueError, match=said):
            await node.schedule("s", app.sleeper, "1h", every="1h", host="")
        for call in (lambda: node.workflows(host=""), lambda: node.schedules(host=""),
                     lambda: node.workflow("w", host=""),
                     lambda: node.schedule_handle("s", host="")):
            with pytest.raises(ValueError, match=said):
                call()
        assert node.workflows() == [] and node.schedules() == []
        assert (await node.wait(await node.spawn(_spawns_on_no_host))).startswith(
            "no host named '' on this node")


def test_garrison_s_exceptions_are_named_by_the_public_module() -> None:
    """A traceback printed ``garrison._errors.NonDeterminismError``, the private module
    a user cannot import from; it says ``garrison.NonDeterminismError``."""
    import traceback

    for name in ("NonDeterminismError", "StoreLocked", "StoreError", "PayloadError",
                 "WorkflowFailed", "ActivityError", "ProcessError"):
        assert getattr(garrison, name).__module__ == "garrison", name
    try:
        raise garrison.StoreError("app.db", "the disk is full")
    except garrison.StoreError as exc:
        shown = "".join(traceback.format_exception_only(exc))
    assert shown == "garrison.StoreError: store 'app.db': the disk is full\n", shown


async def _waits_for_ever() -> None:
    await process.inbox().receive()


async def test_a_workflow_handle_s_errors_name_the_workflow(autojump_clock: object) -> None:
    """helper-224: `signal(None)` named `node.send()`, which the caller never called;
    `signal("")`, `promise("")` and an unstorable promise value named no workflow."""
    async with garrison.open_node() as node:
        await node.start_workflow(_waits_for_ever, id="sink")
        handle = node.workflow("sink")
        with pytest.raises(TypeError, match=r"^workflow 'sink': signal\(\): a topic must be a "
                           r"str, got NoneType"):
            await handle.signal(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^workflow 'sink': a signal needs a 'topic'"):
            await handle.signal("")
        with pytest.raises(ValueError, match=r"^workflow 'sink': a promise name must be"):
            handle.promise("")
        with pytest.raises(garrison.PayloadError,
                           match=r"the value of promise 'p' of workflow 'sink'"):
            await handle.promise("p").resolve({1})
        with pytest.raises(TypeError, match=r"^workflow test_node_api:_waits_for_ever \(id "
                           r"'w-2'\) takes 0 argument"):
            await node.start_workflow(_waits_for_ever, "x", id="w-2")


async def test_a_process_waiting_for_its_own_end_is_refused(
        tmp_path: Path, autojump_clock: object) -> None:
    """``node.wait(process.pid())`` waited for ever: a process never sees its own exit."""
    async def waits_for_itself() -> None:
        await garrison.current_node().wait(process.pid())

    async with garrison.open_node(store=str(tmp_path / "w.db")) as node:
        with pytest.raises(ProcessError, match=r"ValueError: process .* cannot wait for "
                                               r"its own end: node.wait\(\) of the "
                                               r"calling process"):
            await node.wait(await node.spawn(waits_for_itself))


# ------------------------------------------------------------------ other runs, asyncio
@contextlib.contextmanager
def _node_in_a_thread(store: str | None = None) -> Iterator[garrison.Node]:
    """A node in a trio run of its own thread, as README's 'From an asyncio or a threaded
    app' runs one beside a web app; stopped at the end."""
    ready = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        stop = trio.Event()
        async with garrison.open_node(store=store) as node:
            box["node"], box["stop"] = node, stop
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10), "the node did not open"
    node = box["node"]
    assert isinstance(node, garrison.Node) and node.trio_token is not None
    try:
        yield node
    finally:
        stop = box["stop"]
        assert isinstance(stop, trio.Event)
        trio.from_thread.run_sync(stop.set, trio_token=node.trio_token)
        thread.join(10)


def test_a_node_used_from_another_trio_run_is_refused_before_it_acts(tmp_path: Path) -> None:
    """A sync app's view ran ``trio.run(view)`` on the node of another thread's run:
    trio's ``assert task._runner is self`` failed halfway (the workflow recorded
    ``failed`` with a bare AssertionError, a signal committed then refused, a
    ``result()`` stopping the workflow on the live node). Each async call now refuses
    at once, saying how to reach the node, and nothing was written; through
    ``trio.from_thread.run`` the same calls work."""
    with _node_in_a_thread(str(tmp_path / "t.db")) as node:
        async def place() -> garrison.Pid:
            return await node.start_workflow(app.approval, "r1", id="r1")

        assert str(trio.from_thread.run(place, trio_token=node.trio_token)) == "workflows/r1"
        handle = node.workflow("r1")
        nightly = trio.from_thread.run(lambda: node.schedule("s", app.approval, "x",
                                                             every="1h"),
                                       trio_token=node.trio_token)
        calls = {
            "node.start_workflow()": lambda: node.start_workflow(app.approval, "r2", id="r2"),
            "WorkflowHandle.signal()": lambda: handle.signal("approve", "bob"),
            "WorkflowHandle.result()": handle.result,
            "WorkflowHandle.cancel()": handle.cancel,
            "PromiseHandle.resolve()": lambda: handle.promise("p").resolve(1),
            "ScheduleHandle.trigger()": nightly.trigger,
            "node.spawn()": lambda: node.spawn(_plain),
            "node.send()": lambda: node.send(handle.pid, "approve", "bob"),
            "node.wait()": lambda: node.wait(handle.pid),
        }
        for doing, call in calls.items():
            with pytest.raises(RuntimeError) as caught:
                trio.run(call)
            assert str(caught.value).startswith(
                f"{doing}: node {node.name!r} runs in another trio run (another thread), "
                "and is used from that run only: from a thread, call "
                "trio.from_thread.run(fn, trio_token=node.trio_token) (not trio.run(fn))"), \
                caught.value

        async def finish() -> tuple[list[str], str]:
            ids = [w.workflow_id for w in node.workflows()]
            await handle.signal("approve", "ann")
            return ids, await handle.result()

        assert trio.from_thread.run(finish, trio_token=node.trio_token) == \
            (["r1"], "r1 approved by ann")  # nothing of the refused calls was done


def test_a_node_s_sync_methods_refuse_another_thread(tmp_path: Path) -> None:
    """nu-403: the node's sync methods (``processes()``, ``stats()``, a handle's
    ``status()``...) read its live tables unchecked from any thread, where its async
    ones refuse another run: from asyncio's thread or a threadpool's they raced the
    node's own changes, and once in ~21,000 calls raised ``dictionary changed size
    during iteration``. Each refuses another thread now, before it reads, saying how to
    reach the node (from asyncio: NodeThread.call); from the node's thread they work;
    a node that has stopped still says so (its store is closed) from any thread."""
    with _node_in_a_thread(str(tmp_path / "t.db")) as node:
        async def setup() -> garrison.ScheduleHandle:
            await node.start_workflow(app.approval, "r1", id="r1")
            return await node.schedule("s", app.approval, "x", every="1h")

        nightly = trio.from_thread.run(setup, trio_token=node.trio_token)
        handle = node.workflow("r1")  # (a handle is made anywhere: it reads nothing)
        calls = {
            "node.processes()": node.processes,
            "node.stats()": node.stats,
            "node.services()": node.services,
            "node.lookup()": lambda: node.lookup("nobody"),
            "node.resolve()": lambda: node.resolve("nobody"),
            "node.process_info()": lambda: node.process_info("processes/1"),
            "node.workflows()": node.workflows,
            "node.schedules()": node.schedules,
            "node.schedule_handle()": lambda: node.schedule_handle("s"),
            "node.cluster()": node.cluster,
            "node.drain()": node.drain,
            "WorkflowHandle.status()": handle.status,
            "WorkflowHandle.history()": handle.history,
            "WorkflowHandle.state()": lambda: handle.state("k"),
            "PromiseHandle.status()": handle.promise("p").status,
            "ScheduleHandle.info()": nightly.info,
        }
        for doing, call in calls.items():
            with pytest.raises(RuntimeError) as caught:  # (a thread of the app's)
                call()
            assert str(caught.value) == (
                f"{doing}: node {node.name!r} runs in another thread (its trio run's), and "
                "its tables are read from that thread only (from another, they change "
                "under the read: 'dictionary changed size during iteration', now and "
                "then): from a thread, call trio.from_thread.run_sync(fn, "
                "trio_token=node.trio_token), fn a function that makes this call; see "
                "README, 'From an asyncio or a threaded app'"), caught.value

        async def on_asyncio() -> str:  # (an async FastAPI handler's)
            try:
                node.stats()
            except RuntimeError as exc:
                return str(exc)
            return "no error"

        assert asyncio.run(on_asyncio()).endswith(
            "then): from asyncio, make it inside fn of `await runner.call(fn)` (NodeThread "
            "of examples/asyncio_app.py); see README, 'From an asyncio or a threaded app'")

        def read() -> dict[str, object]:  # (in the node's thread: they answer)
            return {doing: call() for doing, call in calls.items()
                    if doing not in ("node.process_info()", "node.resolve()",
                                     "node.drain()")}

        seen = trio.from_thread.run_sync(read, trio_token=node.trio_token)
        assert seen["node.lookup()"] is None and seen["node.processes()"] == []
        assert [w.workflow_id for w in seen["node.workflows()"]] == ["r1"]
        assert seen["WorkflowHandle.status()"] == "waiting"
        assert seen["PromiseHandle.status()"] == "pending"
    with pytest.raises(RuntimeError, match=r"^cannot read the history of workflow 'r1': "
                       r"node .* has stopped, and its store with it"):
        handle.history()  # (stopped: from any thread, what it said before)
    with pytest.raises(RuntimeError, match=r"^cannot list workflows: node .* is closed"):
        node.workflows()


def test_garrison_from_asyncio_says_it_runs_on_trio() -> None:
    """Under asyncio ``open_node`` failed deep inside trio (``'RunContext' object has no
    attribute 'runner'``), a node's async API with trio's bare ``must be called from
    async context``: both name the cause now. README's bridge from asyncio works.
    (nu-403: it pointed asyncio code at ``trio.from_thread.run``, which made in an async
    handler holds the loop until it returns: NodeThread.call now.)"""
    async def opens() -> None:
        async with garrison.open_node():
            pass

    with pytest.raises(RuntimeError, match=r"^garrison.open_node\(\) must be called inside "
                       r"a trio run: garrison runs on trio, and this call is in none \(from "
                       r"asyncio\? run the node in a thread of its own and await "
                       r"runner.call\(fn\) \(NodeThread of examples/asyncio_app.py\), fn "
                       r"an async function that makes this call; from a thread of your own "
                       r"\(not the asyncio loop's: it would hold the loop until fn returns\), "
                       r"trio.from_thread.run\(fn, trio_token=node.trio_token\); see README, "
                       r"'From an asyncio or a threaded app'\)$"):
        asyncio.run(opens())
    with _node_in_a_thread() as node:
        async def starts() -> None:
            await node.start_workflow(app.approval, "r1", id="r1")

        with pytest.raises(RuntimeError, match=r"^node.start_workflow\(\) must be called "
                           r"inside a trio run: garrison runs on trio"):
            asyncio.run(starts())

        async def place(request: str) -> str:  # runs in the node's run
            await node.start_workflow(app.approval, request, id=request)
            await node.workflow(request).signal("approve", "ann")
            return await node.workflow(request).result()

        async def endpoint() -> str:  # an asyncio web app's (FastAPI)
            return await asyncio.to_thread(trio.from_thread.run, place, "r1",
                                           trio_token=node.trio_token)

        assert asyncio.run(endpoint()) == "r1 approved by ann"


async def test_a_start_in_a_cancelled_scope_starts_nothing(
        store_spec: str, autojump_clock: object) -> None:
    """As spawn (trio's rule): a ``start_workflow`` (or ``node.spawn``) that raises
    ``Cancelled`` in a scope cancelled before the call started nothing. It raised
    Cancelled and the workflow ran to ``completed``; on a ``lock=False`` client node it
    returned, no checkpoint at all."""
    from garrison.persistence import open_store

    ran: list[int] = []

    async def plain() -> None:
        ran.append(1)

    async with garrison.open_node(store=store_spec) as node:
        with open_store(store_spec, lock=False) as store:
            async with garrison.open_node(store=store, name="client") as client:
                for who in (node, client):
                    with trio.CancelScope() as scope:
                        scope.cancel()
                        with pytest.raises(trio.Cancelled):
                            await who.start_workflow(app.approval, "r", id=f"a-{who.name}")
                        with pytest.raises(trio.Cancelled):
                            await who.spawn(plain)
        await trio.sleep(1)
        assert node.workflows() == [] and ran == []


async def test_a_config_s_one_workflow_host_is_the_node_s_workflows_host(
        tmp_path: Path, autojump_clock: object) -> None:
    """README (Config and services), as a new user read it: a config's one
    ``workflow.host`` entry is not "one more" host but the node's ``workflows`` host
    (starts and spawns without a host land on it, ``store=`` is its store); with two or
    more, each is a host beside the node's own ``workflows``. A ``process.host`` entry,
    named ``processes`` too, never stands in for the node's ``processes``."""
    from garrison.config import load_config_text

    head = ('version: "1.0"\nnamespace: app\nentries:\n'
            "  - {name: processes, kind: process.host}\n")
    one = load_config_text(head + "  - {name: workflows, kind: workflow.host}\n")
    async with garrison.open_node(config=one, store=str(tmp_path / "one.db")) as node:
        assert sorted(node.hosts) == ["app:processes", "app:workflows", "processes"]
        started = await node.start_workflow(app.approval, "r", id="w1")
        spawned = await node.spawn(app.approval, "r", host="workflows")
        assert (started.host, spawned.host) == ("app:workflows", "app:workflows")
        assert (await node.spawn(_returns)).host == "processes"
        assert node.hosts["app:workflows"].store.path == str(tmp_path / "one.db")
    several = load_config_text(head + "  - {name: a, kind: workflow.host}\n"
                                      "  - {name: b, kind: workflow.host}\n")
    async with garrison.open_node(config=several) as node:
        assert sorted(node.hosts) == ["app:a", "app:b", "app:processes", "processes",
                                      "workflows"]
        assert (await node.start_workflow(app.approval, "r", id="w1")).host == "workflows"


async def _returns() -> None:
    return None
