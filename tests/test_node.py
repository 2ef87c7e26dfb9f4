import logging
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import trio

import garrison
from garrison import ProcessError, process


def test_run_returns_result_and_raises_process_error():
    async def main(a, b):
        return a + b

    assert garrison.run(main, 2, 3) == 5

    async def bad():
        raise KeyError("missing")

    with pytest.raises(ProcessError) as info:
        garrison.run(bad)
    assert info.value.error.type == "KeyError"
    assert "KeyError" in str(info.value)


def test_run_on_virtual_time():
    async def main():
        await trio.sleep(3600)
        return trio.current_time()

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert garrison.run(main, clock=clock) == 3600


async def test_spawn_rejects_non_async_targets(node, autojump_clock):
    def plain():
        return 1

    with pytest.raises(TypeError, match="async function"):
        await node.spawn(plain)
    with pytest.raises(ValueError, match="no config"):
        await node.spawn("app:missing")
    with pytest.raises(ValueError, match="no host named 'nowhere'"):
        await node.spawn(plain, host="nowhere")


async def test_spawn_accepts_async_callable_objects(node, autojump_clock):
    class Worker:
        async def __call__(self, x):
            return x * 2

    assert await node.wait(await node.spawn(Worker(), 4)) == 8


async def test_wait_on_unknown_pid(node, autojump_clock):
    with pytest.raises(ProcessError, match="noproc"):
        await node.wait(garrison.Pid("processes", "nope"))


async def test_wait_on_a_pid_whose_exit_was_forgotten_says_so(node, autojump_clock,
                                                              monkeypatch):
    from garrison import _router

    monkeypatch.setattr(_router, "EXIT_MEMORY", 3)

    async def quick():
        return None

    pids = []
    for _ in range(5):  # one after another: the first exit is the oldest
        pids.append(await node.spawn(quick))
        assert await node.wait(pids[-1]) is None
    with pytest.raises(ProcessError, match="no longer kept") as info:
        await node.wait(pids[0])
    assert info.value.error.type == "noproc"
    # a pid this node never gave out is still plainly unknown
    never = garrison.Pid("processes", pids[0].id.rsplit(".", 1)[0] + ".999")
    with pytest.raises(ProcessError, match="is unknown"):
        await node.wait(never)


async def test_a_wait_begun_while_the_process_ran_gets_its_outcome_however_many_end(
        node, autojump_clock, monkeypatch):
    """The node keeps the last EXIT_MEMORY exits for waits that come after; a wait that
    began while the process ran got "no longer kept" when more than that ended at once
    (scatter/gather: its waiter ran after the others' exits pushed this one out)."""
    from garrison import _router

    monkeypatch.setattr(_router, "EXIT_MEMORY", 3)
    go = trio.Event()

    async def worker(i):
        await go.wait()
        if i % 2:
            raise ValueError(f"odd {i}")
        return i

    pids = [await node.spawn(worker, i) for i in range(10)]
    got = {}

    async def waiter(i, pid):
        try:
            got[i] = await node.wait(pid)
        except ProcessError as exc:
            got[i] = str(exc)

    async with trio.open_nursery() as nursery:
        for i, pid in enumerate(pids):
            nursery.start_soon(waiter, i, pid)
        await trio.sleep(0.1)
        go.set()
    assert got == {i: i if i % 2 == 0 else f"process {pids[i]} failed: ValueError: odd {i}"
                   for i in range(10)}


async def test_shutdown_stops_children_before_parents(autojump_clock):
    order = []

    async def leaf(tag):
        try:
            await trio.sleep_forever()
        finally:
            order.append(tag)

    async def parent(tag):
        try:
            await process.spawn(leaf, tag + ".1")
            await process.spawn(leaf, tag + ".2")
            await trio.sleep_forever()
        finally:
            order.append(tag)

    async def root():
        try:
            await process.spawn(parent, "a")
            await process.spawn(parent, "b")
            await trio.sleep_forever()
        finally:
            order.append("root")

    async with garrison.open_node() as node:
        await node.spawn(root)
        await trio.sleep(1)
        assert node.stats()["processes"] == 7
    assert order.index("root") == 6
    for tag in ("a", "b"):
        assert order.index(tag) > order.index(tag + ".1")
        assert order.index(tag) > order.index(tag + ".2")
    assert set(order[:4]) == {"a.1", "a.2", "b.1", "b.2"}


async def test_a_deep_chain_of_processes_stops_deepest_first_in_one_pass(autojump_clock):
    """A chain of processes each spawning the next (a ring benchmark's shape) stopped in
    time quadratic in its depth: a pass over every process per level (6,000 deep took
    16 s to close). The stop's rounds are now computed in one pass over the tree; the
    order stays children before parents."""
    from garrison.hosts import _process_host

    order: list[int] = []
    passes: list[int] = []
    rounds = _process_host._stop_rounds

    def counted(procs, supervised):  # type: ignore[no-untyped-def]
        passes.append(len(procs))
        return rounds(procs, supervised)

    async def link(n: int) -> None:
        try:
            if n > 0:
                await process.spawn(link, n - 1)
            await trio.sleep_forever()
        finally:
            order.append(n)

    depth = 2000
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_process_host, "_stop_rounds", counted)
        async with garrison.open_node() as node:
            await node.spawn(link, depth)
            while node.stats()["processes"] < depth + 1:
                await trio.sleep(0.01)
    assert order == list(range(depth + 1))  # the deepest first, each before its parent
    assert passes == [depth + 1]  # one pass over the tree, not one per level


async def test_no_silent_death_logged_once(node, autojump_clock, caplog):
    async def boom():
        raise ValueError("kaboom")

    caplog.set_level(logging.INFO, logger="garrison")
    pid = await node.spawn(boom)
    with pytest.raises(ProcessError):
        await node.wait(pid)
    records = [r for r in caplog.records if "kaboom" in r.getMessage()]
    assert len(records) == 1
    text = records[0].getMessage()
    assert str(pid) in text and "ValueError: kaboom" in text and "Traceback" in text


async def test_normal_exit_is_not_logged_as_error(node, autojump_clock, caplog):
    async def fine():
        return 1

    caplog.set_level(logging.INFO, logger="garrison")
    await node.wait(await node.spawn(fine))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_shutdown_is_quiet(autojump_clock, caplog):
    async def idle():
        await trio.sleep_forever()

    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node() as node:
        for _ in range(3):
            await node.spawn(idle)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_shutdown_of_linked_processes_is_quiet(autojump_clock, caplog):
    """Children stop first: a parent linked to them then ends with the shutdown, not
    with a logged ``LinkedProcessFailed: ... Shutdown`` (a warning for each such parent);
    a real failure through a link is still one."""
    async def worker():
        async for _ in process.inbox():
            pass

    async def parent():
        for _ in range(3):
            await process.spawn_linked(worker)
        await trio.sleep_forever()

    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node() as node:
        top = await node.spawn(parent)
        await trio.sleep(1)
        assert node.stats()["processes"] == 4
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(ProcessError, match="Shutdown: the node is shutting down"):
        await node.wait(top)


async def test_spawn_during_shutdown_refused(autojump_clock):
    refused = []

    async def stubborn():
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await process.spawn(stubborn)
                except ProcessError as exc:
                    refused.append(str(exc))

    async with garrison.open_node() as node:
        await node.spawn(stubborn)
        await trio.sleep(0)
    assert refused and "shutting down" in refused[0]


async def test_spawn_refused_by_the_stop_ends_the_spawner_with_it(autojump_clock, caplog):
    """Children stop first, so a root that spawns in a loop still runs as its children
    end (here: it starts another as one ends), and its next spawn is refused: it ends
    with the shutdown (not logged, exit ``Shutdown``), not as a logged failure of its
    own; a spawn from outside any process still raises."""
    async def child():
        await trio.sleep(0.2)

    async def spawner():
        await process.spawn_monitored(child)
        async for _ in process.events():  # (an EXIT: the child ended, start another)
            await process.spawn_monitored(child)

    caplog.set_level(logging.INFO, logger="garrison")
    outside = []

    async def from_outside(node):  # (a task of the test's own, as the node stops)
        await trio.sleep(1.5)
        while not node.stopped:  # (the block ends at this time too)
            await trio.lowlevel.checkpoint()
        with pytest.raises(ProcessError, match="cannot spawn: the node is shutting down"):
            await node.spawn(child)
        outside.append(True)

    async with trio.open_nursery() as nursery, garrison.open_node() as node:
        root = await node.spawn(spawner)
        nursery.start_soon(from_outside, node)
        await trio.sleep(1.5)
    assert outside
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(ProcessError, match="Shutdown: the node is shutting down"):
        await node.wait(root)


def test_ctrl_c_stops_children_first(tmp_path):
    """A real SIGINT to a garrison.run program: children exit before parents."""
    script = tmp_path / "prog.py"
    out = tmp_path / "order.txt"
    script.write_text(textwrap.dedent(f"""
        import trio, garrison
        from garrison import process
        OUT = {str(out)!r}
        def note(tag):
            with open(OUT, "a") as f:
                f.write(tag + "\\n")
        async def leaf():
            try:
                await trio.sleep_forever()
            finally:
                note("leaf")
        async def main():
            await process.spawn(leaf)
            await process.spawn(leaf)
            note("ready")
            try:
                await trio.sleep_forever()
            finally:
                note("main")
        try:
            garrison.run(main)
        except KeyboardInterrupt:
            note("interrupted")
    """))
    # (SIGINT at its default: a suite run from a background shell ignores SIGINT, and a
    # child would inherit that, never seeing the Ctrl-C)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=os.getcwd(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for _ in range(1200):  # (a loaded machine: up to a minute to start)
            if out.exists() and "ready" in out.read_text():
                break
            trio_sleep_real(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert out.read_text().split() == ["ready", "leaf", "leaf", "main", "interrupted"]


def trio_sleep_real(seconds):
    import time

    time.sleep(seconds)


WORKERS_CONFIG = """
version: "1.0"
namespace: app
entries:
  - {name: pool, kind: process.host, workers: 2}
"""


async def test_process_host_workers_caps_how_many_run_at_once(autojump_clock):
    from garrison.config import load_config_text

    running: list[int] = []
    peak = [0]

    async def job(n: int) -> int:
        running.append(n)
        peak[0] = max(peak[0], len(running))
        await trio.sleep(1)
        running.remove(n)
        return n * 10

    async with garrison.open_node(config=load_config_text(WORKERS_CONFIG)) as node:
        start = trio.current_time()
        pids = [await node.spawn(job, n, host="app:pool") for n in range(5)]
        assert [await node.wait(p) for p in pids] == [0, 10, 20, 30, 40]
        assert peak[0] == 2  # never more than the cap ...
        assert trio.current_time() - start == 3  # ... so 5 one-second jobs take 3 rounds

        # a process waiting for a slot still has its pid, inbox and monitor; killing it
        # ends it at once, and shutdown does not wait for slots
        blockers = [await node.spawn(trio.sleep_forever, host="app:pool") for _ in range(2)]
        queued = await node.spawn(job, 9, host="app:pool")
        await node.send(queued, "hello")
        assert node.process_info(queued).queued == 1
        async def killer() -> None:
            await process.terminate(queued)
        await node.wait(await node.spawn(killer))
        with pytest.raises(ProcessError, match="Terminated"):
            await node.wait(queued)
        assert 9 not in running and len(blockers) == 2


async def test_a_workflow_entry_spawned_on_a_process_host_is_refused(autojump_clock):
    """helper-213: ``node.spawn("app:flow")`` of a ``workflow.py`` entry (and a
    supervisor's child naming one) ran its function as a plain process, which failed
    at its first workflow call (``NotInProcess``): a ``TypeError`` at the spawn says
    where it runs instead; on a workflow host it is a workflow."""
    from garrison.config import load_config_text
    from garrison.supervision import ChildSpec, Supervisor

    config = load_config_text('version: "1.0"\nnamespace: app\nentries:\n'
                              '  - {name: flow, kind: workflow.py, source: "workflow_app:steps"}\n')
    said = ("config entry 'app:flow' is a workflow.py: it runs as a durable workflow, on a "
            "workflow host (node.start_workflow('app:flow'), or spawn it with "
            "host='workflows'), not as a plain process")
    async with garrison.open_node(config=config) as node:
        with pytest.raises(TypeError) as info:
            await node.spawn("app:flow", 1)
        assert str(info.value) == said

        async def spawns():
            return await process.spawn("app:flow", 1)

        with pytest.raises(ProcessError, match=re.escape(said)):
            await node.wait(await node.spawn(spawns))
        sup = Supervisor([ChildSpec("c", "app:flow", args=(1,))], max_restarts=0)
        with pytest.raises(ProcessError, match=re.escape(said)):
            await node.wait(await node.spawn(sup))
        pid = await node.spawn("app:flow", 1, 2, host="workflows")
        assert await node.workflow(pid.id).result() == 3
