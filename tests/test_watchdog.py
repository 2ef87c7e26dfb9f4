"""The blocked-event-loop watchdog (garrison/_watchdog.py): one warning naming where
the node's trio thread is blocked, one line once it runs again, and no blame for time
the whole process was paused. The unit tests drive ``Watchdog.tick`` with a fake
clock (no thread, no real waiting); the others block a real node for ~0.6 s."""

from __future__ import annotations

import logging
import sys
import threading

import pytest
import trio

import garrison
from garrison import _frames, _watchdog
from garrison._watchdog import Watchdog

IDENT = 4242  # the fake trio thread's ident


@pytest.fixture(autouse=True)
def _default_threshold(monkeypatch):
    """The suite sets GARRISON_WATCHDOG_SECONDS (conftest.py): the tests here set the
    threshold themselves."""
    monkeypatch.delenv("GARRISON_WATCHDOG_SECONDS", raising=False)


def _blocked_here():  # the user's frame the fake trio thread is "in"
    return sys._getframe()


BLOCKED_LINE = _blocked_here.__code__.co_firstlineno + 1


class Fake:
    """The watchdog's clocks and the trio side: ``step`` advances real time (and the
    process's CPU time) and ticks; ``run_callbacks`` is the trio thread running."""

    def __init__(self, frame=None):
        self.now = 1000.0
        self.cpu = 5.0
        self.posted: list = []
        self.frame = frame if frame is not None else _blocked_here()
        self.dog = Watchdog(self.posted.append, IDENT, interval=0.5, threshold=3.0,
                            clock=lambda: self.now, cpu_clock=lambda: self.cpu,
                            wait=lambda _: True, frames=lambda: {IDENT: self.frame})
        self.dog.names = ("n1",)

    def step(self, seconds=0.5, cpu=0.0):
        self.now += seconds
        self.cpu += cpu
        return self.dog.tick()

    def run_callbacks(self):
        posted, self.posted[:] = list(self.posted), []
        for callback in posted:
            callback()


def _warnings(caplog):
    return [r for r in caplog.records
            if r.name == "garrison.node" and r.levelno >= logging.WARNING]


def test_blocked_loop_warns_once_naming_the_users_frame_then_says_it_ran(caplog):
    fake = Fake()
    fake.step()  # posts the first callback
    assert len(fake.posted) == 1
    for _ in range(5):  # 2.5 s unanswered: under the threshold
        fake.step()
    assert _warnings(caplog) == []
    for _ in range(20):  # 3 s and on: one warning, however long it lasts
        fake.step()
    assert fake.posted and len(fake.posted) == 1  # (one callback outstanding at a time)
    [warning] = _warnings(caplog)
    text = warning.getMessage()
    assert text.startswith("the event loop of node 'n1' has not run for 3.0 s: code in "
                           "its thread blocks it, at ")
    assert f"{__file__}:{BLOCKED_LINE} in _blocked_here" in text
    assert "trio.to_thread.run_sync" in text
    assert warning.blocked_at == f"{__file__}:{BLOCKED_LINE}"
    assert warning.blocked_in == "_blocked_here"
    assert warning.stack_info.startswith("The node's thread, innermost last")
    assert f'File "{__file__}", line {BLOCKED_LINE}, in _blocked_here' in warning.stack_info
    caplog.clear()
    fake.run_callbacks()  # the loop runs again
    fake.step()
    [ran] = _warnings(caplog)
    assert ran.getMessage() == "the event loop of node 'n1' ran again after 13.0 s blocked"
    caplog.clear()
    for _ in range(20):  # healthy: every callback answered
        fake.step()
        fake.run_callbacks()
    assert _warnings(caplog) == []


def test_a_paused_process_is_not_blamed_on_the_loop(caplog):
    """SIGSTOP, a paused VM, a debugger holding every thread: the watchdog oversleeps
    too and the process uses no CPU meanwhile; that time is not counted."""
    fake = Fake()
    fake.step()
    # paused for a minute, the callback posted before it unanswered (a few ms of CPU:
    # the threads that ran on until the stop reached them)
    fake.step(60.0, cpu=0.01)
    fake.step()  # the process runs again; the trio thread has not got to it yet
    fake.run_callbacks()
    fake.step()
    assert _warnings(caplog) == []
    # blocked for 2 s, paused for an hour, blocked on: blamed for what it was blocked
    fake.run_callbacks()
    fake.step()
    for _ in range(4):
        fake.step()
    fake.step(3600.0)  # (counted as one interval: 2.5 s)
    assert _warnings(caplog) == []
    fake.step()
    [warning] = _warnings(caplog)
    assert "has not run for 3.0 s" in warning.getMessage()
    fake.run_callbacks()
    fake.step()
    assert _warnings(caplog)[-1].getMessage() == \
        "the event loop of node 'n1' ran again after 3.5 s blocked"


def test_a_watchdog_late_by_a_little_counts_that_time(caplog):
    fake = Fake()
    fake.step()
    for _ in range(3):
        fake.step(1.4)  # a busy host wakes the watchdog late, within the slack
    [warning] = _warnings(caplog)
    assert "has not run for 4.2 s" in warning.getMessage()


def test_a_call_holding_the_gil_is_said_after_it(caplog):
    """The watchdog overslept while the process used the CPU: a call held the GIL, so
    no thread ran Python, the loop's included; said once, as it is over."""
    fake = Fake()
    fake.step()
    fake.now += 6.0
    fake.cpu += 6.0
    fake.run_callbacks()  # the callback posted before ran as soon as the call ended
    fake.dog.tick()
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "did not run for 6.0 s; nor did any other thread of the process: a call " \
           "held the GIL" in warnings[0].getMessage()
    fake.run_callbacks()
    fake.step()
    fake.run_callbacks()
    fake.step()
    assert len(_warnings(caplog)) == 1  # over: no "ran again" line


def test_a_call_holding_the_gil_still_holding_the_loop_is_named(caplog):
    fake = Fake()
    fake.step()
    # the GIL is free again, the loop has not run yet; the process had a third of a
    # CPU meanwhile (a busy host), which a paused one does not get
    fake.step(6.0, cpu=2.0)
    [warning] = _warnings(caplog)
    assert warning.getMessage().startswith(
        "the event loop of node 'n1' has not run for 6.0 s; nor did any other thread of "
        "the process: a call held the GIL (a C extension's, or a builtin's such as "
        "sorted() or re on big data), in the node's thread or another, at ")
    assert warning.blocked_in == "_blocked_here"
    fake.run_callbacks()
    fake.step()
    assert _warnings(caplog)[-1].getMessage() == \
        "the event loop of node 'n1' ran again after 6.5 s blocked"


def test_the_last_line_is_said_as_the_node_closes(caplog):
    fake = Fake()
    fake.step()
    for _ in range(8):
        fake.step()
    assert len(_warnings(caplog)) == 1
    fake.now += 0.2
    assert fake.dog.tick(closing=True) is False  # the node closes: its thread runs
    assert _warnings(caplog)[-1].getMessage() == \
        "the event loop of node 'n1' ran again after 4.2 s blocked"


def test_a_finished_run_stops_the_watchdog():
    def finished(_callback):
        raise trio.RunFinishedError("run finished")

    dog = Watchdog(finished, IDENT, clock=lambda: 0.0, cpu_clock=lambda: 0.0)
    assert dog.tick() is False


def _watchdogs():
    return [t for t in threading.enumerate() if t.name == "garrison-watchdog"]


def test_blocking_async_code_is_named_and_the_node_close_joins_the_thread(
        caplog, monkeypatch):
    """A process blocks the trio thread until the warning naming it is logged (a
    threading.Event set by a log handler, not a sleep of a fixed length: on a loaded
    machine a starved watchdog could miss a 0.6 s block, and another stall of the
    thread, a lazy import as the node opens, could add a warning of its own)."""
    monkeypatch.setattr(_watchdog, "THRESHOLD", 0.25)
    monkeypatch.setattr(_watchdog, "INTERVAL", 0.05)
    line = []
    named = threading.Event()

    class Release(logging.Handler):
        def emit(self, record):
            if "in blocker" in record.getMessage():
                named.set()

    async def blocker():
        line.append(sys._getframe().f_lineno + 1)
        named.wait(30)
        return "done"

    async def main():
        assert _watchdogs() == []
        async with garrison.open_node(name="blocked") as node:
            assert len(_watchdogs()) == 1
            assert await node.wait(await node.spawn(blocker)) == "done"
        assert _watchdogs() == []  # joined as the node closed

    release = Release(logging.WARNING)
    logging.getLogger("garrison.node").addHandler(release)
    try:
        with caplog.at_level(logging.WARNING, logger="garrison"):
            trio.run(main)
    finally:
        logging.getLogger("garrison.node").removeHandler(release)
    assert named.is_set()
    warnings = _warnings(caplog)
    [at] = [i for i, w in enumerate(warnings) if "in blocker" in w.getMessage()]
    warning, ran = warnings[at:at + 2]
    assert "the event loop of node 'blocked' has not run for" in warning.getMessage()
    assert f"at {__file__}:{line[0]} in blocker" in warning.getMessage()
    stack = warning.stack_info.splitlines()  # (then threading's frames, what it called)
    frame_at = stack.index(f'  File "{__file__}", line {line[0]}, in blocker')
    assert stack[frame_at + 1] == "    named.wait(30)"
    assert ran.getMessage().startswith("the event loop of node 'blocked' ran again after ")


def test_one_thread_per_run_until_its_last_node_closes_and_none_after_a_failed_open(
        tmp_path):
    async def main():
        async with garrison.open_node(name="a"):
            async with garrison.open_node(name="b"):
                assert len(_watchdogs()) == 1  # one trio thread: one watchdog
            assert len(_watchdogs()) == 1
        assert _watchdogs() == []
        with pytest.raises(garrison.StoreError, match="does not exist"):  # (in its start)
            async with garrison.open_node(store=str(tmp_path / "missing" / "x.db")):
                pass
        assert _watchdogs() == []

    trio.run(main)
    assert garrison.run(_nothing) is None
    assert _watchdogs() == []


async def _nothing():
    return None


def test_a_watchdog_that_cannot_start_leaves_the_node_running(caplog, monkeypatch):
    def cannot(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(Watchdog, "start", cannot)

    async def main():
        async with garrison.open_node(name="bare") as node:
            assert _watchdogs() == []
            return await node.wait(await node.spawn(_nothing))

    assert trio.run(main) is None
    [warning] = _warnings(caplog)
    assert warning.getMessage() == (
        "node 'bare' runs unwatched: its watchdog thread did not start (can't start new "
        "thread); a blocked event loop will not be said")


def _frame_of(path, source, name, ns):
    """Define function ``name`` from ``source`` as if it were in file ``path``."""
    exec(compile(source, path, "exec"), ns)
    return ns[name]


def test_an_app_installed_as_a_package_is_named_by_its_own_outermost_frame(
        caplog, monkeypatch):
    """An app installed into site-packages (a Docker image's ``pip install .``) has no
    frame outside the libraries: the warning named the innermost frame, the standard
    library's socket or threading line, where the app's own function (the process's or
    activity's, called by garrison) is what to fix."""
    import os
    import sysconfig

    from garrison._frames import GARRISON_DIR

    site = os.path.dirname(os.path.realpath(__file__)) + os.sep  # (this folder: "installed")
    monkeypatch.setattr(_frames, "LIBRARIES", (site, os.path.realpath(
        sysconfig.get_paths()["stdlib"]) + os.sep, GARRISON_DIR))
    ns: dict = {"sys": sys}
    stdlib_file = os.path.join(sysconfig.get_paths()["stdlib"], "socket.py")
    _frame_of(stdlib_file, "def recv_into():\n    return sys._getframe()\n", "recv_into", ns)
    _frame_of(os.path.join(site, "shop_tasks.py"),
              "def charge_card():\n    return recv_into()\n", "charge_card", ns)
    runner = _frame_of(os.path.join(GARRISON_DIR, "_runner_stand_in.py"),
                       "def run_process():\n    return charge_card()\n", "run_process", ns)
    fake = Fake(runner())
    for _ in range(8):
        fake.step()
    [warning] = _warnings(caplog)
    assert warning.blocked_in == "charge_card", warning.getMessage()
    assert warning.blocked_at == f"{os.path.join(site, 'shop_tasks.py')}:2"


def test_a_watchdog_that_fails_says_so_and_stops(caplog):
    """A fault of the watchdog's own (here its clock) ended its thread with nothing
    said but threading's stderr report: the node ran on unwatched, unknown to anyone."""
    ticks = iter([0.0])

    def clock():
        return next(ticks)  # (StopIteration on the second look)

    dog = Watchdog(lambda _callback: None, IDENT, interval=0.5, threshold=3.0,
                   clock=clock, wait=lambda _: False)
    dog.names = ("n1",)
    dog._run()
    [said] = _warnings(caplog)
    assert said.getMessage() == "the watchdog of node 'n1' stopped: the node runs on unwatched"
    assert said.exc_info is not None


def test_the_threshold_comes_from_the_environment_and_0_turns_the_watchdog_off(
        caplog, monkeypatch):
    """``GARRISON_WATCHDOG_SECONDS``: the seconds before the warning (a node whose
    code blocks its loop for a while by design, or a loaded test machine, raises it);
    ``0`` starts no watchdog; a value that is no number of seconds is said, once a
    node opens, and the default holds."""
    async def main():
        async with garrison.open_node():
            return [dog._threshold for dog in _watchdog._watching.values()], _watchdogs()

    monkeypatch.setenv("GARRISON_WATCHDOG_SECONDS", "12.5")
    thresholds, threads = trio.run(main)
    assert thresholds == [12.5] and len(threads) == 1
    monkeypatch.setenv("GARRISON_WATCHDOG_SECONDS", "0")
    assert trio.run(main) == ([], [])
    for bad in ("soon", "-1", "nan", "inf"):
        caplog.clear()
        monkeypatch.setenv("GARRISON_WATCHDOG_SECONDS", bad)
        thresholds, _threads = trio.run(main)
        assert thresholds == [_watchdog.THRESHOLD]
        assert [r.getMessage() for r in _warnings(caplog)] == [
            f"GARRISON_WATCHDOG_SECONDS={bad!r} is no number of seconds (0 or more): "
            f"the watchdog warns after {_watchdog.THRESHOLD:g} s"]


class Raising(logging.Handler):
    """A handler whose emit raises (no handleError of its own): logging passes the
    exception on to whoever logged."""

    def emit(self, record):
        raise OSError("the log collector is gone")


@pytest.fixture
def raising_handler():
    handler = Raising(logging.WARNING)
    logging.getLogger("garrison.node").addHandler(handler)
    yield handler
    logging.getLogger("garrison.node").removeHandler(handler)


def test_a_log_handler_that_raises_does_not_stop_the_watchdog(
        caplog, capsys, raising_handler):
    """A handler raising as the warning was logged ended the watchdog's thread (its own
    report of the fault raised in that handler too, so only threading's stderr report
    said anything): the node ran on unwatched. The watchdog goes on; each line logging
    raised on is written to stderr with what raised (as logging's own handleError
    does), so it is not lost."""
    fake = Fake()
    for _ in range(8):
        assert fake.step() is True
    fake.run_callbacks()
    assert fake.step() is True  # the "ran again" line: the handler raises on it too
    err = capsys.readouterr().err
    assert err.count("--- garrison's watchdog: logging raised on its line ---") == 2
    assert "OSError: the log collector is gone" in err
    assert "Line: the event loop of node 'n1' has not run for 3.0 s: code in its " \
           "thread blocks it, at " in err
    assert f'File "{__file__}", line {BLOCKED_LINE}, in _blocked_here' in err  # its stack
    assert "Line: the event loop of node 'n1' ran again after 4.0 s blocked" in err
    assert _warnings(caplog) == []  # (the raising handler stopped its propagation)
    logging.getLogger("garrison.node").removeHandler(raising_handler)
    caplog.clear()
    for _ in range(8):  # watching on: the next blockage is said
        fake.step()
    [warning] = _warnings(caplog)
    assert "has not run for 3.0 s" in warning.getMessage()
    assert capsys.readouterr().err == ""


def test_a_watchdog_that_fails_under_a_raising_handler_says_so_on_stderr(
        capsys, raising_handler):
    dog = Watchdog(lambda _callback: None, IDENT, interval=0.5, threshold=3.0,
                   clock=iter([0.0]).__next__, wait=lambda _: False)
    dog.names = ("n1",)
    dog._run()  # (returns: nothing raised out of the thread)
    err = capsys.readouterr().err
    assert "OSError: the log collector is gone" in err
    assert "Line: the watchdog of node 'n1' stopped: the node runs on unwatched" in err
    assert "StopIteration" in err  # (the watchdog's own fault, below the line)


def test_a_watchdog_that_died_is_replaced_as_the_next_node_of_its_run_opens(
        caplog, monkeypatch):
    """A dead watchdog stayed registered for its trio run: every later node of the run
    found it and started none, so the run went unwatched for good. The next node to
    open starts a new one, watching the nodes still open as well as itself."""
    monkeypatch.setattr(_watchdog, "INTERVAL", 0.01)
    failing = [True]
    tick = Watchdog.tick

    def faulty(self, *, closing=False):
        if failing[0]:
            raise RuntimeError("a fault of its own")
        return tick(self, closing=closing)

    monkeypatch.setattr(Watchdog, "tick", faulty)

    async def main():
        async with garrison.open_node(name="a"):
            [first] = [dog._thread for dog in _watchdog._watching.values()]
            await trio.to_thread.run_sync(first.join, 30)  # (dies at its first look)
            assert _watchdogs() == []
            failing[0] = False
            async with garrison.open_node(name="b"):
                [second] = _watchdogs()
                assert [dog.names for dog in _watchdog._watching.values()] == [("a", "b")]
            assert _watchdogs() == [second]  # ("a" is still open)
            assert [dog.names for dog in _watchdog._watching.values()] == [("a",)]
        assert _watchdogs() == []
        assert _watchdog._watching == {}

    trio.run(main)
    [said] = [r for r in _warnings(caplog) if "watchdog" in r.getMessage()]
    assert said.getMessage() == "the watchdog of node 'a' stopped: the node runs on unwatched"
