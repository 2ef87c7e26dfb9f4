"""process.service entries: start order, restarts, backoff, give-up, dependents, stop."""

from __future__ import annotations

import itertools
import logging
import re
import textwrap

import attrs
import pytest
import svc_app
import trio
import trio.testing

import garrison
from garrison import process
from garrison.config import (
    Config,
    Lifecycle,
    RestartPolicy,
    ServiceEntry,
    load_config_text,
)
from garrison.supervision._services import ServiceStatus


@pytest.fixture(autouse=True)
def _reset():
    svc_app.LOG.clear()
    svc_app.FAILS.clear()


def config(services: str):
    return load_config_text(textwrap.dedent("""
        version: "1.0"
        namespace: t
        entries:
          - {name: steady, kind: process.py, source: "svc_app:steady"}
          - {name: polite, kind: process.py, source: "svc_app:polite"}
          - {name: stubborn, kind: process.py, source: "svc_app:stubborn"}
          - {name: shielded, kind: process.py, source: "svc_app:shielded"}
          - {name: crasher, kind: process.py, source: "svc_app:crasher"}
          - {name: finisher, kind: process.py, source: "svc_app:finisher"}
          - {name: instant, kind: process.py, source: "svc_app:instant_crasher"}
          - {name: tidy, kind: process.py, source: "svc_app:tidy"}
    """) + textwrap.indent(textwrap.dedent(services), "  "), "test.yaml")


def starts(name):
    return [t for t, who, what in svc_app.LOG if who == name and what == "start"]


async def test_auto_start_in_dependency_order_and_stop_in_reverse(autojump_clock):
    cfg = config("""
        - name: c
          kind: process.service
          process: polite
          input: [c]
          lifecycle: {auto_start: true, requires: [b]}
        - name: a
          kind: process.service
          process: polite
          input: [a]
          lifecycle: {auto_start: true}
        - name: b
          kind: process.service
          process: steady
          input: [b]
          lifecycle: {auto_start: true, depends_on: [a]}
        - name: manual
          kind: process.service
          process: steady
          input: [manual]
    """)
    async with garrison.open_node(config=cfg) as node:
        assert [w for _, w, what in svc_app.LOG if what == "start"] == ["a", "b", "c"]
        assert {s.id: s.status for s in node.services()}["t:manual"] == ServiceStatus.STOPPED
        # a service is addressable by its entry id
        assert node.lookup("t:b") is not None
    stops = [w for _, w, what in svc_app.LOG if what == "stop"]
    assert stops == ["c", "b", "a"]


async def test_a_service_whose_cleanup_raises_at_the_node_stop_is_a_warning(
        autojump_clock, caplog):
    """helper-209: a service's finally that raised as the node stopped it was an ERROR
    "exited abnormally" with a traceback, where a plain process ended by the same stop
    gets README's warning ("its cleanup raised ... while it was being ended"): the
    service manager stops a service with a cancel, not the stop's own kill."""
    caplog.set_level(logging.INFO, logger="garrison")
    cfg = load_config_text(textwrap.dedent("""
        version: "1.0"
        namespace: t
        entries:
          - {name: cf, kind: process.py, source: "svc_app:cleanup_fails"}
          - {name: svc, kind: process.service, process: cf, input: [svc],
             lifecycle: {auto_start: true}}
    """), "test.yaml")
    async with garrison.open_node(config=cfg):
        await trio.sleep(1)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("its cleanup raised ValueError: cleanup of svc failed while it was being "
               "ended (Shutdown: the node is shutting down); its exit stays Shutdown" in m
               for m in warned), warned


async def test_restart_delay_grows_then_gives_up_alone(autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="garrison")
    svc_app.FAILS["crasher"] = 99
    cfg = config("""
        - name: other
          kind: process.service
          process: steady
          input: [other]
          lifecycle: {auto_start: true}
        - name: svc_crasher
          kind: process.service
          process: crasher
          input: [crasher, 0]
          lifecycle:
            auto_start: true
            restart: {max_attempts: 3, initial_delay: 1s, backoff_factor: 2, max_delay: 3s,
                      jitter: 0}
    """)
    async with garrison.open_node(config=cfg) as node:
        t0 = trio.current_time()
        await trio.sleep(100)
        times = [t - t0 for t in starts("crasher")]
        # first start, then restarts after 1s, 2s, 3s (capped): max_attempts 3 = 4 starts
        assert times == [0, 1, 3, 6]
        info = {s.id: s for s in node.services()}
        assert info["t:svc_crasher"].status == ServiceStatus.GAVE_UP
        assert info["t:svc_crasher"].last_error.type == "RuntimeError"
        assert info["t:other"].status == ServiceStatus.RUNNING  # the rest keeps running
    restarts = [r.getMessage() for r in caplog.records if ": restart " in r.getMessage()]
    assert restarts[0] == "t:svc_crasher: restart 1/3 in 1.00s after RuntimeError: crasher crashed"
    assert len(restarts) == 3
    gave_up = [r.getMessage() for r in caplog.records if "giving up" in r.getMessage()]
    assert gave_up == ["t:svc_crasher: giving up after 3 restarts; last error: "
                       "RuntimeError: crasher crashed"]


async def test_a_service_whose_requirement_gave_up_says_so(autojump_clock, caplog):
    """A service whose requirement gave up stayed ``waiting`` for good with nothing
    logged after its ``waiting for`` line: now an error says it cannot start, and why
    (as ``garrison run --main`` says it); one that runs says it runs without it."""
    caplog.set_level(logging.INFO, logger="garrison")
    svc_app.FAILS["crasher"] = 99
    cfg = config("""
        - name: never
          kind: process.service
          process: instant
          input: [instant]
          lifecycle:
            auto_start: true
            restart: {max_attempts: 1, initial_delay: 1s, jitter: 0}
        - name: waits
          kind: process.service
          process: steady
          input: [waits]
          lifecycle: {auto_start: true, requires: [never]}
        - name: db
          kind: process.service
          process: crasher
          input: [crasher, 2]
          lifecycle:
            auto_start: true
            restart: {max_attempts: 1, initial_delay: 1s, jitter: 0}
        - name: api
          kind: process.service
          process: steady
          input: [api]
          lifecycle: {auto_start: true, requires: [db]}
    """)
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(20)
        info = {s.id: s.status for s in node.services()}
        assert info == {"t:never": ServiceStatus.GAVE_UP, "t:waits": ServiceStatus.WAITING,
                        "t:db": ServiceStatus.GAVE_UP, "t:api": ServiceStatus.RUNNING}
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelname == "ERROR"
            and "which it requires" in r.getMessage()]
    assert said == [
        ("ERROR", "t:waits: cannot start: t:never, which it requires, gave up "
                  "(RuntimeError: instant crashed at once)"),
        # (helper-393: it read "runs without what it requires: t:db, which it requires")
        ("ERROR", "t:api: runs on without it: t:db, which it requires, gave up "
                  "(RuntimeError: crasher crashed)")], said
    assert starts("waits") == [] and len(starts("api")) == 2  # (again after db's restart)


async def test_crash_loop_of_a_service_that_fails_at_once(autojump_clock, caplog):
    # the process raises before its first checkpoint, so it is dead before the
    # manager's start returns: every exit must still be seen and restarted
    caplog.set_level(logging.INFO, logger="garrison")
    cfg = config("""
        - name: svc_instant
          kind: process.service
          process: instant
          input: [instant]
          lifecycle:
            auto_start: true
            restart: {max_attempts: 3, initial_delay: 1s, backoff_factor: 1, jitter: 0}
        - name: needs_instant
          kind: process.service
          process: steady
          input: [needs_instant]
          lifecycle: {auto_start: true, requires: [svc_instant]}
    """)
    async with garrison.open_node(config=cfg) as node:
        t0 = trio.current_time()
        await trio.sleep(60)
        assert [t - t0 for t in starts("instant")] == [0, 1, 2, 3]
        assert starts("needs_instant") == []  # what it requires never ran
        info = node.services()[0]
        assert info.status == ServiceStatus.GAVE_UP
        assert info.pid is None
        assert str(info.last_error) == "RuntimeError: instant crashed at once"
    messages = [r.getMessage() for r in caplog.records if r.name == "garrison.services"]
    assert len([m for m in messages if ": restart " in m]) == 3
    assert ("t:svc_instant: giving up after 3 restarts; last error: "
            "RuntimeError: instant crashed at once") in messages
    # never said "started" (after its crash, as it was once): it never counted as
    # running; each crash names its process
    logged = [r.getMessage() for r in caplog.records]
    assert [m for m in logged if "svc_instant: started as" in m] == [], logged
    crashed = [m for m in logged if "exited abnormally" in m]
    assert len(crashed) == 4
    assert all(m.startswith("t:svc_instant processes/") for m in crashed), crashed


async def test_auto_start_services_that_cannot_spawn_back_off_and_the_node_starts(
        autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="garrison")
    once = "restart: {max_attempts: 1, initial_delay: 1s, jitter: 0}"
    cfg = config(f"""
        - {{name: pool, kind: process.host, workers: 1}}
        - {{name: hog, kind: process.service, process: steady, host: pool, input: [hog],
           lifecycle: {{auto_start: true}}}}
        - name: too_slow            # waits for pool's one worker, which hog keeps
          kind: process.service
          process: steady
          host: pool
          input: [too_slow]
          lifecycle: {{auto_start: true, start_timeout: 1s, {once}}}
        - {{name: steady_wf, kind: workflow.py, source: "svc_app:steady"}}
        - name: fine
          kind: process.service
          process: steady
          input: [fine]
          lifecycle: {{auto_start: true}}
    """)
    # a Config built by hand is not checked: an entry id that names nothing, and an
    # input that cannot be stored as a workflow argument (bytes; the loader refuses it)
    once_policy = Lifecycle(auto_start=True, restart=RestartPolicy(max_attempts=1, jitter=0))
    lost = ServiceEntry(id="t:lost", process="t:nowhere", lifecycle=once_policy)
    bad_input = ServiceEntry(id="t:bad_input", process="t:steady_wf", host="workflows",
                             input=(b"hi",), lifecycle=once_policy)
    entries = {k: v for k, v in cfg.entries.items() if k != "t:fine"}
    cfg = Config({**entries, bad_input.id: bad_input, "t:fine": cfg["t:fine"], lost.id: lost})
    with trio.fail_after(100):  # it used to hang in open_node
        async with garrison.open_node(config=cfg) as node:
            await trio.sleep(10)
            info = {s.id: s for s in node.services()}
            assert info["t:fine"].status == ServiceStatus.RUNNING
            for sid, error in [("t:too_slow", "TimeoutError"), ("t:bad_input", "PayloadError"),
                               ("t:lost", "NoSuchEntry")]:
                assert info[sid].status == ServiceStatus.GAVE_UP, sid
                assert info[sid].last_error.type == error, info[sid].last_error
                assert info[sid].restarts == 1
    gave_up = sorted(r.getMessage().split(":")[1] for r in caplog.records
                     if "giving up" in r.getMessage())
    assert gave_up == ["bad_input", "lost", "too_slow"]
    assert starts("fine") == [0.0]  # at once: too_slow waits for a worker, not fine


async def test_a_service_that_waits_to_run_holds_up_only_what_requires_it(
        autojump_clock, caplog):
    """Services started one at a time, each awaited until it ran or hit its
    start_timeout: one waiting for a busy worker held up every service after it in the
    file (4 s here), those that did not require it too. Now each starts once what it
    requires runs; the node's start still ends once every start is done."""
    caplog.set_level(logging.INFO, logger="garrison")
    cfg = config("""
        - {name: pool, kind: process.host, workers: 1}
        - {name: hog, kind: process.service, process: steady, host: pool, input: [hog],
           lifecycle: {auto_start: true}}
        - name: starved           # waits for pool's one worker, which hog keeps
          kind: process.service
          process: steady
          host: pool
          input: [starved]
          lifecycle:
            auto_start: true
            start_timeout: 4s
            restart: {max_attempts: 1, initial_delay: 10s, jitter: 0}
        - {name: indep, kind: process.service, process: steady, input: [indep],
           lifecycle: {auto_start: true}}
        - {name: after_hog, kind: process.service, process: steady, input: [after_hog],
           lifecycle: {auto_start: true, requires: [hog]}}
        - {name: after_starved, kind: process.service, process: steady,
           input: [after_starved], lifecycle: {auto_start: true, requires: [starved]}}
    """)
    async with garrison.open_node(config=cfg) as node:
        assert trio.current_time() == 4.0  # (the start ends once starved's timed out)
        assert starts("hog") == starts("indep") == starts("after_hog") == [0.0]
        assert starts("starved") == starts("after_starved") == []
        status = {s.id: s.status for s in node.services()}
        assert status["t:starved"] == ServiceStatus.BACKOFF
        assert status["t:after_starved"] == ServiceStatus.WAITING
    logged = [r.getMessage() for r in caplog.records if r.name == "garrison.services"]
    # the services ready at once spawn in file order (each host numbers its pids in
    # the order it spawns them; "started as" is said as each runs, in no set order),
    # and what waits says so once
    spawned = {m.split(":")[1]: m.split(" as ")[1].split(";")[0]
               for m in logged if " as " in m}
    assert sorted(spawned) == ["after_hog", "hog", "indep", "starved"], logged
    serial = {name: int(pid.rsplit(".", 1)[1]) for name, pid in spawned.items()}
    assert serial["hog"] < serial["starved"] and serial["indep"] < serial["after_hog"]
    assert [m for m in logged if "waiting for" in m] == [
        "t:after_starved: waiting for t:starved"], logged


async def test_jitter_spreads_delays(autojump_clock):
    svc_app.FAILS["crasher"] = 5
    cfg = config("""
        - name: svc_crasher
          kind: process.service
          process: crasher
          input: [crasher, 0]
          lifecycle:
            auto_start: true
            restart: {initial_delay: 10s, backoff_factor: 2, max_delay: 1000s, jitter: 0.1}
    """)
    async with garrison.open_node(config=cfg):
        await trio.sleep(2000)
    times = starts("crasher")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 5
    for n, gap in enumerate(gaps):
        base = 10 * 2**n
        assert base * 0.9 <= gap <= base * 1.1
    assert gaps != [10 * 2**n for n in range(5)]  # really jittered


async def test_stable_run_resets_restart_count(autojump_clock):
    svc_app.FAILS["crasher"] = 4
    cfg = config("""
        - name: svc_crasher
          kind: process.service
          process: crasher
          input: [crasher, 10]
          lifecycle:
            auto_start: true
            stable_threshold: 5s
            restart: {max_attempts: 1, initial_delay: 1s, jitter: 0}
    """)
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(200)
        # each run lasts 10s > stable_threshold, so max_attempts 1 is never exceeded
        assert len(starts("crasher")) == 5
        assert node.services()[0].status == ServiceStatus.RUNNING


async def test_dependents_restart_after_their_requirement(autojump_clock):
    svc_app.FAILS["crasher"] = 1
    cfg = config("""
        - name: base
          kind: process.service
          process: crasher
          input: [crasher, 3]
          lifecycle: {auto_start: true, restart: {initial_delay: 2s, jitter: 0}}
        - name: mid
          kind: process.service
          process: polite
          input: [mid]
          lifecycle: {auto_start: true, requires: [base]}
        - name: top
          kind: process.service
          process: polite
          input: [top]
          lifecycle: {auto_start: true, requires: [mid]}
    """)
    async with garrison.open_node(config=cfg):
        await trio.sleep(20)
    events = [(t, w, what) for t, w, what in svc_app.LOG]
    # base crashes at t=3; at t=5 what depends on it stops (in reverse), base
    # restarts, and the dependents start again in order
    assert [(t, w, what) for t, w, what in events if t >= 5 and t < 20] == [
        (5, "top", "stop"), (5, "mid", "stop"), (5, "crasher", "start"),
        (5, "mid", "start"), (5, "top", "start"),
    ]


async def test_normal_return_is_not_restarted(autojump_clock):
    cfg = config("""
        - name: svc_finisher
          kind: process.service
          process: finisher
          input: [finisher]
          lifecycle: {auto_start: true}
    """)
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(60)
        assert len(starts("finisher")) == 1
        assert node.services()[0].status == ServiceStatus.COMPLETED


async def test_start_service_does_not_run_a_requirement_that_returned_again(
        autojump_clock, caplog):
    """A one-shot requirement (a migration) that returned: ``start_service`` of what
    requires it ran it a second time behind the caller's back, then refused to start
    the dependent all the same (it returned again). It is not run again; the dependent
    says at once that it cannot start. Its own start_service runs it again."""
    cfg = config("""
        - name: init
          kind: process.service
          process: finisher
          input: [init]
          lifecycle: {auto_start: true}
        - name: api
          kind: process.service
          process: steady
          input: [api]
          lifecycle: {requires: [init]}
    """)
    caplog.set_level(logging.INFO, logger="garrison.services")
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(1)
        assert len(starts("init")) == 1
        await node.start_service("t:api")
        await trio.sleep(1)
        assert len(starts("init")) == 1 and starts("api") == []
        status = {s.id: s.status for s in node.services()}
        assert status == {"t:init": ServiceStatus.COMPLETED, "t:api": ServiceStatus.WAITING}
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors == ["t:api: cannot start: t:init, which it requires, returned (a "
                          "service that returns is not restarted: it starts again only by "
                          "start_service)"], errors
        await node.start_service("t:init")  # by its own start: it runs again
        await trio.sleep(1)
        assert len(starts("init")) == 2


def _slow_service():
    """The config with a service ``t:slow`` that answers each call after an hour."""
    return config("""
        - {name: slow_replier, kind: process.py, source: "svc_app:slow_replier"}
        - name: slow
          kind: process.service
          process: slow_replier
          input: [slow]
          lifecycle: {auto_start: true}
    """)


async def test_a_call_to_a_service_the_node_stops_is_no_failure_of_the_caller(
        autojump_clock, caplog):
    """The node stops its services before its other processes: a process waiting on a
    call to one failed with 'exited before replying: normal exit', logged as an error
    with its traceback (README: node shutdown is not logged as an error). The call
    fails with the node's shutdown, and the caller that lets it go ends as stopped."""
    cfg = _slow_service()
    caplog.set_level(logging.INFO)
    said: list[str] = []

    async def caller():
        try:
            return await process.call("t:slow", "q", 1, timeout="2h")
        except garrison.ProcessError as exc:
            said.append(str(exc))
            raise

    async with garrison.open_node(config=cfg) as node:
        pid = await node.spawn(caller)
        await trio.sleep(1)
    assert len(said) == 1 and said[0].endswith("was stopped with the node before replying")
    with pytest.raises(garrison.ProcessError) as ended:
        await node.wait(pid)
    assert ended.value.error is not None and ended.value.error.type == "Shutdown"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("workflow", ["calls_slow", "activity_calls_slow"])
async def test_a_workflow_s_call_to_a_service_the_node_stops_is_made_again_later(
        autojump_clock, tmp_path, workflow):
    """The same for a workflow (or its activity, with no retries): the call's failure
    was journaled, and the node's stop failed the workflow for good. Nothing is
    recorded; the workflow parks, and the next node makes the call again."""
    cfg = _slow_service()
    store = str(tmp_path / "s.db")
    for run in range(2):
        async with garrison.open_node(config=cfg, store=store) as node:
            if run == 0:
                await node.start_workflow(getattr(svc_app, workflow), id="w")
            await trio.sleep(1)
            assert node.workflow("w").status() == "running"
    from garrison.persistence import SQLiteStore

    with SQLiteStore(store, readonly=True) as s:
        row = s.get_workflow("w")
        assert (row.status, row.error, s.journal("w")) == ("running", None, [])
    assert len(starts("slow")) == 2  # (each node's service was called: the call again)


async def test_stop_cancels_then_terminates_after_stop_timeout(autojump_clock):
    cfg = config("""
        - name: svc_stubborn
          kind: process.service
          process: stubborn
          input: [stubborn]
          lifecycle: {auto_start: true, stop_timeout: 7s}
    """)
    async with garrison.open_node(config=cfg):
        pass
    t_start = starts("stubborn")[0]
    killed = [t for t, w, what in svc_app.LOG if what == "killed"]
    assert killed == [t_start + 7]


async def test_services_stop_after_what_requires_them_the_others_together(autojump_clock):
    """Services stopped one after another: five that ignore CANCEL took the sum of
    their stop timeouts. Now a service stops once every service that requires it
    (directly, or through one that is not running) has stopped, the others at once."""
    svc_app.FAILS["b"] = 2
    cfg = config("""
        - {name: c, kind: process.service, process: stubborn, input: [c],
           lifecycle: {auto_start: true, stop_timeout: 2s}}
        - name: b                 # gives up: a runs without it, c still stops after a
          kind: process.service
          process: crasher
          input: [b, 1]
          lifecycle:
            auto_start: true
            requires: [c]
            restart: {max_attempts: 1, initial_delay: 1s, jitter: 0}
        - {name: a, kind: process.service, process: stubborn, input: [a],
           lifecycle: {auto_start: true, requires: [b], stop_timeout: 1s}}
        - {name: x, kind: process.service, process: stubborn, input: [x],
           lifecycle: {auto_start: true, stop_timeout: 2s}}
        - {name: y, kind: process.service, process: stubborn, input: [y],
           lifecycle: {auto_start: true, stop_timeout: 2s}}
    """)
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(20)
        status = {s.id: s.status for s in node.services()}
        assert status["t:b"] == ServiceStatus.GAVE_UP and status["t:a"] == ServiceStatus.RUNNING
        closed = trio.current_time()
    killed = {w: t - closed for t, w, what in svc_app.LOG if what == "killed"
              and t >= closed}
    assert killed == {"a": 1.0, "x": 2.0, "y": 2.0, "c": 3.0}, killed


async def test_a_service_that_shields_its_cleanup_is_named_in_the_log(autojump_clock, caplog):
    """A service shielding a long cleanup from its termination held up the node's stop
    (and ``garrison run``'s first SIGTERM) with nothing in the log saying which one or
    why: now a warning names it, 5 s after it was terminated; the stop still waits."""
    cfg = config("""
        - name: svc_shielded
          kind: process.service
          process: shielded
          input: [shielded]
          lifecycle: {auto_start: true, stop_timeout: 2s}
    """)
    with caplog.at_level(logging.WARNING, logger="garrison.process"):
        async with garrison.open_node(config=cfg):
            pass
    t_start = starts("shielded")[0]
    assert [t for t, w, what in svc_app.LOG if what == "cleaned up"] == [t_start + 2 + 30]
    stuck = [r for r in caplog.records if "has not ended 5s after it was terminated" in
             r.getMessage()]
    assert len(stuck) == 1, caplog.text
    assert "t:svc_shielded" in stuck[0].getMessage() and "shielded cancel scope" in \
        stuck[0].getMessage()


async def test_start_service_on_demand_with_requirements(autojump_clock):
    cfg = config("""
        - name: a
          kind: process.service
          process: steady
          input: [a]
        - name: b
          kind: process.service
          process: steady
          input: [b]
          lifecycle: {requires: [a]}
    """)
    async with garrison.open_node(config=cfg) as node:
        assert svc_app.LOG == []
        await node.start_service("t:b")
        assert [w for _, w, _ in svc_app.LOG] == ["a", "b"]
        async def client():
            return await garrison.process.call("t:b", "q", 1)
        assert await node.wait(await node.spawn(client)) == "b got 1"
        with pytest.raises(ValueError, match="no service"):
            await node.start_service("t:nope")


async def test_start_service_of_an_entry_of_another_kind_names_its_kind(autojump_clock):
    """start_service of a process.py entry said "no service 't:steady' in the config",
    as if the id were a typo: it names the entry's kind now."""
    cfg = config("""
        - {name: a, kind: process.service, process: steady, input: [a]}
    """)
    async with garrison.open_node(config=cfg) as node:
        with pytest.raises(ValueError, match=r"^cannot start 't:steady': it is a process.py "
                           r"entry of the config, not a process.service$"):
            await node.start_service("t:steady")


async def test_start_service_of_an_id_no_service_has_says_the_id_meant(autojump_clock):
    """A new user following README wrote ``node.start_service("cache")`` for the
    service ``t:cache`` and got ``no service 'cache' in the config``: the id meant is
    said now, as ``garrison schedules`` says a config schedule's namespaced id (a name
    without its namespace, or a typo)."""
    cfg = config("""
        - {name: cache, kind: process.service, process: steady, input: [c]}
    """)
    async with garrison.open_node(config=cfg) as node:
        for given in ("cache", "t:cach"):
            with pytest.raises(ValueError) as info:
                await node.start_service(given)
            assert str(info.value) == (f"no service {given!r} in the config (did you mean "
                                       "'t:cache'?)")
        with pytest.raises(ValueError, match=r"^no service 't:nope' in the config$"):
            await node.start_service("t:nope")


def _restarts_total(node) -> dict[str, float]:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(garrison.metrics.collect(node)).decode()
    return {s.labels["service"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "garrison_service_restarts_total"}


async def test_the_restarts_metric_counts_the_restarts_that_happened(autojump_clock, caplog):
    """garrison_service_restarts_total counted a restart when it was scheduled: one
    scraped in its backoff counted it already, one that never happened (what it
    requires returned meanwhile) counted for ever; a restart because a requirement
    restarted never counted. It counts each start again of the service now."""
    caplog.set_level(logging.INFO, logger="garrison")
    svc_app.FAILS.update(c=99, user=1)
    cfg = config("""
        - {name: once, kind: process.py, source: "svc_app:returns_after"}
        - name: c
          kind: process.service
          process: crasher
          input: [c, 1]
          lifecycle:
            auto_start: true
            restart: {max_attempts: 2, initial_delay: 200ms, backoff_factor: 1, jitter: 0}
        - {name: b, kind: process.service, process: steady, input: [b],
           lifecycle: {auto_start: true, requires: [c]}}
        - {name: init, kind: process.service, process: once, input: [init, 0.3]}
        - name: user
          kind: process.service
          process: crasher
          input: [user, 0.5]
          lifecycle:
            auto_start: true
            requires: [init]
            restart: {initial_delay: 200ms, jitter: 0}
    """)
    async with garrison.open_node(config=cfg) as node:
        t0 = trio.current_time()
        await trio.sleep_until(t0 + 1.1)  # c crashed at 1, restarts at 1.2
        assert _restarts_total(node) == {"t:c": 0, "t:b": 0, "t:init": 0, "t:user": 0}
        await trio.sleep_until(t0 + 1.5)
        assert _restarts_total(node) == {"t:c": 1, "t:b": 1, "t:init": 0, "t:user": 0}
        await trio.sleep_until(t0 + 5)  # c gave up after its second restart
        assert _restarts_total(node) == {"t:c": 2, "t:b": 2, "t:init": 0, "t:user": 0}
        assert {s.id: s.restarts for s in node.services()}["t:c"] == 2
    assert len(starts("b")) == 3 and len(starts("user")) == 1
    assert "t:user: cannot start: t:init, which it requires, returned" in caplog.text
    assert "t:c: giving up after 2 restarts" in caplog.text


async def test_an_auto_start_service_starts_what_it_requires(autojump_clock, caplog):
    """An auto_start service requiring one that is not auto_start waited for it forever
    (one 'waiting for' line, never started), while start_service starts a service with
    what it requires. Auto-start does that too, through requirements of requirements;
    a service nothing auto-started requires stays stopped."""
    caplog.set_level(logging.INFO, logger="garrison")
    cfg = config("""
        - {name: a, kind: process.service, process: steady, input: [a]}
        - {name: b, kind: process.service, process: steady, input: [b],
           lifecycle: {requires: [a]}}
        - {name: c, kind: process.service, process: polite, input: [c],
           lifecycle: {auto_start: true, requires: [b]}}
        - {name: idle, kind: process.service, process: steady, input: [idle]}
    """)
    with trio.fail_after(10):
        async with garrison.open_node(config=cfg) as node:
            status = {s.id: s.status for s in node.services()}
            assert status == {"t:a": ServiceStatus.RUNNING, "t:b": ServiceStatus.RUNNING,
                              "t:c": ServiceStatus.RUNNING, "t:idle": ServiceStatus.STOPPED}
            assert [w for _, w, what in svc_app.LOG if what == "start"] == ["a", "b", "c"]
    logged = [r.getMessage() for r in caplog.records if r.name == "garrison.services"]
    assert "t:a: starts because t:c requires it" in logged
    assert "t:b: starts because t:c requires it" in logged
    assert not any("waiting for" in m for m in logged), logged


async def test_a_required_singleton_held_later_starts_and_so_does_what_waits_for_it(
        autojump_clock: object) -> None:
    """In a cluster a node holds no singleton at its first start pass: a singleton
    without auto_start that an auto_start service requires was never started once the
    node held it, and the service waited for ever. A chain of auto_start services is
    wanted in linear time (each walk stops at what is wanted already)."""
    cfg = config("""
        - {name: a, kind: process.service, process: steady, input: [a],
           lifecycle: {singleton: true}}
        - {name: b, kind: process.service, process: steady, input: [b],
           lifecycle: {auto_start: true, requires: [a]}}
    """)
    with trio.fail_after(10):
        async with garrison.open_node(config=cfg) as node:
            manager = node._router.services
            assert manager is not None
            manager.set_singletons(set())  # (as a cluster node at its start: none held)
            await trio.sleep(1)
            status = {s.id: s.status for s in node.services()}
            assert status["t:a"] == ServiceStatus.STOPPED
            manager.set_singletons({"t:a"})
            await trio.sleep(1)
            status = {s.id: s.status for s in node.services()}
            assert status == {"t:a": ServiceStatus.RUNNING, "t:b": ServiceStatus.RUNNING}


async def test_a_singleton_whose_node_lost_its_lease_stops_within_what_is_left_of_it(
        autojump_clock: object) -> None:
    """A node cut off stops its singleton at three quarters of its lease, but the
    singleton's clean-up (up to its stop_timeout) ran on past the lease's end, after
    another node had started its copy: two copies for as long as it took (1.5 s). Its
    stop gets what is left of the lease (terminated then), none once it lapsed."""
    cfg = config("""
        - {name: beat, kind: process.service, process: tidy, input: [1.5],
           lifecycle: {auto_start: true, singleton: true, stop_timeout: 10s}}
    """)
    with trio.fail_after(30):
        async with garrison.open_node(config=cfg) as node:
            manager = node._router.services
            assert manager is not None
            applied = manager.set_singletons({"t:beat"})  # (a cluster node holds it)
            assert applied is not None
            await applied.wait()
            lost = trio.current_time()
            applied = manager.set_singletons(set(), within=0.5)
            assert applied is not None
            await applied.wait()
            assert [(t - lost, what) for t, _, what in svc_app.LOG] == [
                (-0.0, "start"), (0.0, "cancel"), (0.5, "ended")]
            applied = manager.set_singletons({"t:beat"})  # (held again)
            assert applied is not None
            await applied.wait()
            del svc_app.LOG[:]
            lost = trio.current_time()
            applied = manager.set_singletons(set(), within=0.0)  # (lapsed already)
            assert applied is not None
            await applied.wait()
            assert [(t - lost, what) for t, _, what in svc_app.LOG] == [(0.0, "ended")]


async def test_what_requires_a_singleton_stops_with_it_when_the_node_no_longer_holds_it(
        autojump_clock: object) -> None:
    """A service that requires a singleton runs only on the node that runs it, but the
    node that lost the singleton (its lease lapsed, or it drained) stopped only the
    singleton: what required it ran on there, and on the node that took the singleton
    over too. What requires it (directly or not) stops first, and waits for it again."""
    cfg = config("""
        - {name: beat, kind: process.service, process: tidy, input: [1.5],
           lifecycle: {auto_start: true, singleton: true, stop_timeout: 10s}}
        - {name: user, kind: process.service, process: steady, input: [user],
           lifecycle: {auto_start: true, requires: [beat]}}
        - {name: user2, kind: process.service, process: steady, input: [user2],
           lifecycle: {auto_start: true, requires: [user]}}
    """)
    with trio.fail_after(30):
        async with garrison.open_node(config=cfg) as node:
            manager = node._router.services
            assert manager is not None

            async def holds(held: set[str], within: float | None = None) -> dict[str, str]:
                applied = manager.set_singletons(held, within=within)
                assert applied is not None
                await applied.wait()
                await trio.sleep(0.1)
                return {s.id: s.status for s in node.services()}

            running = {"t:beat": "running", "t:user": "running", "t:user2": "running"}
            assert await holds({"t:beat"}) == running
            del svc_app.LOG[:]
            assert await holds(set(), within=0.0) == {  # (its lease lapsed)
                "t:beat": "stopped", "t:user": "waiting", "t:user2": "waiting"}
            assert [(who, what) for _t, who, what in svc_app.LOG] == [
                ("user2", "stop"), ("user", "stop"), (node.name, "ended")]
            assert await holds({"t:beat"}) == running  # (held again)
            del svc_app.LOG[:]
            await holds(set())  # (it drains: within their stop timeouts)
            assert [(who, what) for _t, who, what in svc_app.LOG] == [
                ("user2", "stop"), ("user", "stop"), (node.name, "cancel"),
                (node.name, "cleaned up"), (node.name, "ended")]


async def test_a_singleton_that_gave_up_is_let_go_and_what_requires_it_stops(
        autojump_clock: object) -> None:
    """A singleton that gave up on a node of a cluster kept that node's claim (it ran
    nowhere, the other nodes said it ran there), and what required it ran on without
    it: on this node, and on the node that ran the singleton next too. What requires it
    stops, then the node lets it go (``on_dropped``); what requires it waits."""
    cfg = config("""
        - {name: a, kind: process.service, process: crasher, input: [a, 1],
           lifecycle: {singleton: true, restart: {max_attempts: 1, initial_delay: 1s, jitter: 0}}}
        - {name: b, kind: process.service, process: steady, input: [b],
           lifecycle: {auto_start: true, requires: [a]}}
    """)
    svc_app.FAILS["a"] = 2
    dropped: list[str] = []
    with trio.fail_after(30):
        async with garrison.open_node(config=cfg) as node:
            manager = node._router.services
            assert manager is not None
            manager.on_dropped = dropped.append
            applied = manager.set_singletons({"t:a"})  # (a cluster node holds it)
            assert applied is not None
            await applied.wait()
            await trio.sleep(10)
            status = {s.id: s.status for s in node.services()}
            assert status == {"t:a": ServiceStatus.GAVE_UP, "t:b": ServiceStatus.WAITING}
            assert dropped == ["t:a"]
            assert manager.held == set()
            assert [(who, what) for _t, who, what in svc_app.LOG][-1] == ("b", "stop")


async def test_start_service_while_the_node_stops_fails_instead_of_waiting_forever(
        autojump_clock):
    # the service manager stops first when a node closes; a start asked after that
    # (here from a process's shielded cleanup) waited forever for a manager that was
    # gone, and held up the node's close with it
    cfg = config("""
        - name: a
          kind: process.service
          process: steady
          input: [a]
    """)
    outcome = []

    async def cleanup_starts_a_service():
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                try:
                    await garrison.current_node().start_service("t:a")
                    outcome.append("started")
                except RuntimeError as exc:
                    outcome.append(str(exc))
            if not outcome:
                outcome.append("still waiting after 30s")

    async with garrison.open_node(config=cfg) as node:
        await node.spawn(cleanup_starts_a_service)
        await trio.testing.wait_all_tasks_blocked()
    assert outcome == ["cannot start service 't:a': the node's services are stopping"]
    assert svc_app.LOG == []


async def test_a_service_id_names_no_process_once_its_process_ended(autojump_clock):
    # as a registered name is released before its holder's EXIT is delivered, a
    # service's id stops naming its process when that ends: a watcher that got the
    # EXIT found the id still naming the dead pid (until the manager handled the
    # exit), so a send was a dead letter and a monitor a noproc EXIT, not NoSuchProcess
    cfg = config("""
        - name: db
          kind: process.service
          process: crasher
          input: [db, 1]
          lifecycle: {auto_start: true, restart: {initial_delay: 5s}}
    """)
    svc_app.FAILS["db"] = 1

    async def watcher():
        first = process.lookup("t:db")
        process.monitor("t:db")
        ev = await process.events().receive()
        return first, ev.pid, ev.ok, process.lookup("t:db")

    async with garrison.open_node(config=cfg) as node:
        first, exited, ok, after = await node.wait(await node.spawn(watcher))
        assert first == exited and not ok
        assert after is None
        await trio.sleep(10)  # restarted after its backoff: the id names the new process
        assert node.lookup("t:db") not in (None, exited)


async def test_a_service_id_cannot_be_registered_by_another_process(autojump_clock):
    """A service's entry id names its running process: another process registering it
    took its traffic (lookup, send, call went to the squatter); now that is refused,
    naming the service's process, and so it is while the service is down (it would take
    the name back from nobody once restarted). The service's own process may."""
    cfg = config("""
        - name: db
          kind: process.service
          process: crasher
          input: [db, 1]
          lifecycle: {auto_start: true, restart: {initial_delay: 5s}}
        - name: other
          kind: process.service
          process: steady
          input: [other]
          lifecycle: {auto_start: true}
        - name: named
          kind: process.service
          process: itself
          input: [t:named]
          lifecycle: {auto_start: true}
    """ + """
        - {name: itself, kind: process.py, source: "svc_app:registers_itself"}
    """)
    svc_app.FAILS["db"] = 1

    async def squatter(name):
        try:
            process.register(name)
        except ValueError as exc:
            return str(exc)
        return "registered"

    async with garrison.open_node(config=cfg) as node:
        other = node.lookup("t:other")
        assert await node.wait(await node.spawn(squatter, "t:other")) == (
            f"name 't:other' is the entry id of a service, held by its running process "
            f"{other}")
        assert node.lookup("t:other") == other
        assert await node.call("t:other", "q", 1) == "other got 1"
        await trio.sleep(1)
        assert node.process_info("t:named").names == ("t:named",)  # its own process may
        await trio.sleep(2)  # t:db crashed at once: restarts in 5s
        assert node.lookup("t:db") is None
        assert await node.wait(await node.spawn(squatter, "t:db")) == (
            "name 't:db' is the entry id of a service (not running now): only its "
            "process names it")
        await trio.sleep(10)
        db = node.lookup("t:db")
        assert db is not None and node.process_info(db).label == "t:db"
        assert await node.wait(await node.spawn(squatter, "t:dbx")) == "registered"


async def test_a_service_waiting_for_a_busy_worker_says_so(autojump_clock, caplog):
    """A service spawned on a host whose workers are all busy was logged 'started as'
    while it waited, then its termination for the start timeout as an abnormal exit of a
    process that never ran ('Terminated: terminated by ...'), then 'not started within
    0.3s' with no reason. It is 'spawned as ...; it waits for a worker', the timeout
    names the busy workers, and the process that never ran logs no exit."""
    cfg = load_config_text(textwrap.dedent("""
        version: "1.0"
        namespace: t
        entries:
          - {name: pool, kind: process.host, workers: 1}
          - {name: steady, kind: process.py, source: "svc_app:steady"}
          - {name: hog, kind: process.service, process: steady, input: [hog], host: pool,
             lifecycle: {auto_start: true}}
          - {name: late, kind: process.service, process: steady, input: [late], host: pool,
             lifecycle: {auto_start: true, start_timeout: 300ms,
                         restart: {max_attempts: 1, initial_delay: 100ms, jitter: 0}}}
    """), "test.yaml")
    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(5)
        late = {s.id: s for s in node.services()}["t:late"]
        assert late.status == ServiceStatus.GAVE_UP and starts("late") == []
    why = ("not started within 0.3s: it waited for a worker of host 't:pool', whose 1 "
           "worker(s) were busy")
    assert late.last_error is not None and late.last_error.message == why
    lines = [(r.levelname, r.getMessage()) for r in caplog.records
             if "t:late" in r.getMessage()]
    assert [text for _, text in lines if "started as" in text] == [], lines
    assert sum("t:late: spawned as t:pool/" in text and text.endswith(
        "; it waits for a worker of host 't:pool', whose 1 worker(s) are busy")
        for _, text in lines) == 2, lines
    assert [level for level, text in lines if "abnormally" in text] == [], lines
    assert ("WARNING", f"t:late: restart 1/1 in 0.10s after TimeoutError: {why}") \
        in lines, lines


def _queued(services: str):
    """A config whose workflow host ``q`` runs one workflow at a time."""
    return config("""
        - {name: q, kind: workflow.host, max_concurrent: 1}
        - {name: ticker, kind: workflow.py, source: "svc_app:ticker"}
        - {name: brief, kind: workflow.py, source: "svc_app:brief"}
    """ + services)


async def test_a_workflow_service_waiting_in_its_host_s_queue_is_not_running(
        autojump_clock, caplog):
    """A workflow service created waiting in its host's queue (max_concurrent, full)
    counted as running at once: what required it started, and its start_timeout never
    fired though its code never ran. It waits for the queue as a process service waits
    for a busy worker, says so, and its start_timeout fails it naming the queue."""
    cfg = _queued("""
        - {name: hog, kind: process.service, process: ticker, host: q, input: [hog],
           lifecycle: {auto_start: true}}
        - {name: late, kind: process.service, process: ticker, host: q, input: [late],
           lifecycle: {auto_start: true, start_timeout: 1s,
                       restart: {max_attempts: 1, initial_delay: 100ms, jitter: 0}}}
        - {name: dep, kind: process.service, process: steady, input: [dep],
           lifecycle: {auto_start: true, requires: [late]}}
    """)
    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(5)
        info = {s.id: s for s in node.services()}
        assert {sid: s.status for sid, s in info.items()} == {
            "t:hog": "running", "t:late": "gave_up", "t:dep": "waiting"}
        assert starts("late") == starts("dep") == []
    why = ("not started within 1s: it waited in the queue of workflow host 't:q', whose "
           "limits (max_concurrent=1) were all taken")
    late = info["t:late"]
    assert late.last_error is not None and late.last_error.message == why
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("t:late:")]
    assert sum(text.startswith("t:late: spawned as t:q/") and text.endswith(
        "; it waits in the queue of workflow host 't:q', whose limits (max_concurrent=1) "
        "are all taken") for text in lines) == 2, lines
    assert not [text for text in lines if "started as" in text], lines


async def test_a_workflow_service_runs_once_it_leaves_its_host_s_queue(autojump_clock):
    """Behind a workflow that holds the queue's one slot for 2 s, a workflow service
    runs once that slot frees; what requires it starts then, not before."""
    cfg = _queued("""
        - {name: first, kind: process.service, process: brief, host: q, input: [first],
           lifecycle: {auto_start: true}}
        - {name: next, kind: process.service, process: ticker, host: q, input: [next],
           lifecycle: {auto_start: true}}
        - {name: dep, kind: process.service, process: steady, input: [dep],
           lifecycle: {auto_start: true, requires: [next]}}
    """)
    async with garrison.open_node(config=cfg) as node:
        assert trio.current_time() == 2.0  # (the node's start waits for next's)
        assert starts("first") == [0.0] and starts("next") == starts("dep") == [2.0]
        assert {s.id: s.status for s in node.services()} == {
            "t:first": "completed", "t:next": "running", "t:dep": "running"}


async def test_node_closing_during_a_dependent_restart_is_no_service_failure(
        autojump_clock, caplog):
    """The node closes while a restart stops a slow dependent first: the service is then
    not started (the node refuses spawns), quietly; that used to be logged as its next
    failure ('restart 2/5 ... after ProcessError: cannot spawn: the node is shutting
    down'), using up a restart attempt."""
    svc_app.FAILS["db"] = 2
    cfg = config("""
        - name: db
          kind: process.service
          process: crasher
          input: [db, 3]
          lifecycle: {auto_start: true, restart: {max_attempts: 5, initial_delay: 1s, jitter: 0}}
        - name: web
          kind: process.service
          process: stubborn
          input: [web]
          lifecycle: {auto_start: true, requires: [db], stop_timeout: 4s}
    """)
    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(5)  # db crashed at 3; its restart at 4 stops web (4s: till 8)
        info = {s.id: s for s in node.services()}
        assert info["t:db"].restarts == 1 and info["t:web"].status == "waiting"
    assert starts("db") == [0]  # not started again: the node was closing
    info = {s.id: s for s in node.services()}
    assert info["t:db"].restarts == 1 and info["t:db"].status == "stopped"
    assert not [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and "shutting down" in r.getMessage()]


async def test_node_closing_while_a_restart_waits_to_run_stops_at_once(autojump_clock, caplog):
    """A restart waiting for its service to run (a pool slot another service holds)
    held the manager's lock, so the node's stop waited out the whole stop budget, then
    terminated the manager: the services were not stopped in order ("stopping")."""
    svc_app.FAILS["flaky"] = 1
    cfg = config("""
        - {name: pool, kind: process.host, workers: 1}
        - name: flaky
          kind: process.service
          process: crasher
          host: pool
          input: [flaky, 2]
          lifecycle: {auto_start: true, start_timeout: 1h,
                      restart: {max_attempts: 5, initial_delay: 1s, jitter: 0}}
        - {name: hog, kind: process.service, process: polite, host: pool, input: [hog]}
    """)
    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(2.5)  # flaky crashed at 2 (its slot free), restarts at 3
        await node.start_service("t:hog")  # takes the slot: flaky's restart waits for it
        await trio.sleep(2)
        info = {s.id: s for s in node.services()}
        assert info["t:flaky"].status == "starting" and info["t:hog"].status == "running"
        closing = trio.current_time()
    assert trio.current_time() - closing < 1
    assert starts("flaky") == [0] and starts("hog") == [2.5]
    assert [t for t, who, what in svc_app.LOG if (who, what) == ("hog", "stop")] == [4.5]
    said = [r.getMessage() for r in caplog.records]
    assert "t:hog: stopping" in said
    assert not [m for m in said if "restart 2" in m]


def _crash_loop(name: str) -> str:
    """A service ``name`` that crashes 0.3 s after each start, restarted 0.1 s later."""
    return f"""
        - name: {name}
          kind: process.service
          process: crasher
          input: [{name}, 0.3]
          lifecycle:
            auto_start: true
            restart: {{initial_delay: 100ms, backoff_factor: 1, jitter: 0}}
    """


def _every(times: list[float], gap: float, *, until: float) -> bool:
    """Whether ``times`` begin at 0 and follow one another every ``gap`` s up to ``until``."""
    return (times[0] == 0 and until - gap <= times[-1] <= until + 1e-6
            and [b - a for a, b in itertools.pairwise(times)] == pytest.approx(
                [gap] * (len(times) - 1)))


async def test_a_start_waiting_for_a_worker_holds_up_no_other_service(autojump_clock, caplog):
    """The manager held one lock across a whole start: a service waiting for a busy
    worker (up to its start_timeout, here 4 s, or for ever) held up every other
    service's exit and restart: a crashed service stayed down the whole wait, its
    "restart 1 in 0.10s" false, and a start_service of another service waited too."""
    caplog.set_level(logging.INFO, logger="garrison.services")
    svc_app.FAILS["cr"] = 99
    cfg = config("""
        - {name: pool, kind: process.host, workers: 1}
        - {name: busy, kind: process.service, process: steady, host: pool, input: [busy],
           lifecycle: {auto_start: true}}
        - name: waiter
          kind: process.service
          process: steady
          host: pool
          input: [waiter]
          lifecycle: {auto_start: true, start_timeout: 4s, restart: {max_attempts: 1}}
        - {name: forever, kind: process.service, process: steady, host: pool,
           input: [forever], lifecycle: {start_timeout: 36500d}}
        - {name: other, kind: process.service, process: steady, input: [other]}
    """ + _crash_loop("cr"))
    async with garrison.open_node(config=cfg) as node:
        assert trio.current_time() == 4.0  # (the node's start waits for waiter's)
        # cr runs 0.3 s, restarts 0.1 s later, while waiter waited (was: once, at 4 s)
        assert _every(starts("cr"), 0.4, until=4)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.start_service, "t:forever")  # waits for ever
            await trio.sleep(1)
            await node.start_service("t:other")  # not held up by forever's
            assert starts("other") == [5.0]
            await trio.sleep(3)
            nursery.cancel_scope.cancel()
        assert _every(starts("cr"), 0.4, until=8)
        assert {s.id: s.status for s in node.services()}["t:forever"] == "starting"
    assert starts("forever") == starts("waiter") == []
    logged = [r.getMessage() for r in caplog.records]
    assert "t:cr: restart 1 in 0.10s after RuntimeError: cr crashed" in logged


async def test_a_slow_stop_of_a_dependent_holds_up_no_other_service(autojump_clock):
    """A restart stopped the services that require the restarting one under the
    manager's lock, each up to its stop_timeout: an unrelated service that crashed
    meanwhile was restarted only once they had stopped (3 s late, every time)."""
    svc_app.FAILS["db"] = svc_app.FAILS["cr"] = 99
    cfg = config("""
        - {name: api, kind: process.service, process: stubborn, input: [api],
           lifecycle: {auto_start: true, requires: [db], stop_timeout: 3s}}
    """ + _crash_loop("db") + _crash_loop("cr"))
    async with garrison.open_node(config=cfg):
        await trio.sleep(8)
    assert _every(starts("cr"), 0.4, until=8)
    # db crashes at 0.3, its restart at 0.4 stops api first (3 s: killed at 3.4), then
    # starts db and api again; db crashes 0.3 s later, and so on
    assert starts("db") == pytest.approx([0, 3.4, 6.8])
    assert starts("api") == pytest.approx([0, 3.4, 6.8])
    killed = [t for t, who, what in svc_app.LOG if (who, what) == ("api", "killed")]
    assert killed[:2] == pytest.approx([3.4, 6.8])


async def test_start_service_waits_for_a_requirement_that_starts_already(autojump_clock):
    """With starts no longer holding the manager's lock, a start_service of a service
    whose requirement was starting already (a restart waiting for a worker) must still
    return once that start is done and the service started, not at once."""
    svc_app.FAILS["r"] = 1
    cfg = config("""
        - {name: pool, kind: process.host, workers: 1}
        - {name: r, kind: process.service, process: crasher, host: pool, input: [r, 1],
           lifecycle: {auto_start: true, start_timeout: 10s,
                       restart: {initial_delay: 1s, jitter: 0}}}
        - {name: x, kind: process.service, process: steady, input: [x],
           lifecycle: {requires: [r]}}
    """)
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(1.5)  # r crashed at 1; its restart at 2 waits for the worker
        await node.spawn(svc_app.hog, 3, host="t:pool")  # (till 4.5)
        await trio.sleep(1.5)
        await node.start_service("t:x")
        assert trio.current_time() == 4.5
        assert starts("r") == [0, 4.5] and starts("x") == [4.5]


async def test_a_node_start_interrupted_while_a_service_waits_to_run_ends_at_once(
        autojump_clock):
    """garrison run's first signal while its node starts: the start ended only once the
    service waiting for a pool slot ran or timed out (start_timeout), then restarted it."""
    from garrison._node import new_node, running_node

    cfg = config("""
        - {name: pool, kind: process.host, workers: 1}
        - {name: hog, kind: process.service, process: polite, host: pool, input: [hog],
           lifecycle: {auto_start: true}}
        - {name: late, kind: process.service, process: steady, host: pool, input: [late],
           lifecycle: {auto_start: true, start_timeout: 1h}}
    """)
    node = new_node(config=cfg)

    async def interrupt() -> None:
        await trio.sleep(5)
        node.interrupt_start()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(interrupt)
        async with running_node(node):
            entered = trio.current_time()
    assert entered == 5 and trio.current_time() == 5
    assert svc_app.LOG == [(0, "hog", "start"), (5, "hog", "stop")]  # late never ran
    assert {s.id: s.status for s in node.services()} == {"t:hog": "stopped",
                                                         "t:late": "stopped"}


@pytest.mark.parametrize("how", ["interrupt_start", "stop"])
async def test_a_workflow_service_created_while_its_start_is_cut_short_is_cancelled_at_the_stop(
        autojump_clock, how):
    """A signal during garrison run's start-up (interrupt_start), or the node's stop
    (the end of an open_node block while start_service runs) when a workflow service's
    creating commit is under way: the cancellation surfaced after the workflow was
    created and ran, its pid never recorded -- its service read "stopped" and the stop
    left it running (its row ``sleeping``). The start completes; the stop cancels it,
    durably."""
    from garrison._node import new_node, running_node
    from garrison.persistence import open_store

    auto = "true" if how == "interrupt_start" else "false"
    cfg = config(f"""
        - {{name: ticker, kind: workflow.py, source: "svc_app:ticker"}}
        - {{name: wfs, kind: process.service, process: ticker, host: workflows, input: [w],
           lifecycle: {{auto_start: {auto}}}}}
    """)
    store = open_store(None)
    node = new_node(config=cfg, store=store)
    running = trio.CancelScope()
    commit = store.commit

    async def commit_interrupted(tx):  # the signal lands while the workflow commits
        manager = node._router.services
        if manager is not None and not svc_app.LOG and not running.cancel_called:
            running.cancel()
            if how == "interrupt_start":  # as garrison run does on its first signal
                node.interrupt_start()
            else:  # the block ends: the node's stop begins
                while not manager.stopping:
                    await trio.sleep(0.01)
        return await commit(tx)

    store.commit = commit_interrupted

    async def start_service() -> None:
        await node.start_service("t:wfs")  # (served: the workflow was created)

    async with trio.open_nursery() as outer, running_node(node):
        with running:
            if how == "stop":
                outer.start_soon(start_service)
            await trio.sleep_forever()
    assert [what for _, who, what in svc_app.LOG] == ["start"]
    assert node.services()[0].status == ServiceStatus.STOPPED
    [record] = store.list_workflows(None, None)
    assert record.status == "cancelled"


async def test_a_node_start_interrupted_while_workflows_resume_starts_nothing_more(
        autojump_clock, monkeypatch):
    """garrison run's first signal once a workflow host resumed its workflows: its
    schedules ran anyway (the scheduler started, and ticked as the store closed), and
    the next host resumed its workflows too, code that ran after the signal."""
    from garrison._node import new_node, running_node
    from garrison.hosts.workflow import _host
    from garrison.persistence import open_store

    entries = """
        - {name: sleeper, kind: workflow.py, source: "svc_app:sleeper"}
        - {name: tick, kind: workflow.py, source: "svc_app:tick"}
        - {name: other, kind: workflow.host}
    """
    stores = {"workflows": open_store(None), "t:other": open_store(None)}
    async with garrison.open_node(config=config(entries), store=stores) as node:
        await node.start_workflow("t:sleeper", "first", id="first")
        await node.start_workflow("t:sleeper", "second", id="second", host="t:other")
        await trio.sleep(1)
    svc_app.LOG.clear()

    cfg = config(entries + """
        - {name: every, kind: workflow.schedule, workflow: t:tick, every: 1s, host: t:other}
    """)
    node = new_node(config=cfg, store=stores)
    resume_all = _host.resume_all

    async def resume_all_then_signal(host, nursery):
        await resume_all(host, nursery)
        node.interrupt_start()  # (the signal task runs at the next checkpoint)

    monkeypatch.setattr(_host, "resume_all", resume_all_then_signal)
    async with running_node(node):
        pass
    # (t:other resumes first) the workflow it resumed before the signal runs, its
    # scheduler never started, the next host's workflows are left for the next start
    assert [who for _, who, _ in svc_app.LOG] == ["second"]
    assert stores["t:other"].schedules() == []
    assert [(r.workflow_id, r.status) for r in stores["workflows"].list_workflows(None, None)] \
        == [("first", "sleeping")]


async def test_interrupt_start_on_a_node_that_runs_does_nothing(autojump_clock):
    """Called once the node had started, it stopped its services for good while the
    node ran on: a crashed service was never restarted, start_service raised."""
    svc_app.FAILS["flaky"] = 1
    cfg = config("""
        - {name: flaky, kind: process.service, process: crasher, input: [flaky, 1],
           lifecycle: {auto_start: true, restart: {initial_delay: 1s, jitter: 0}}}
        - {name: manual, kind: process.service, process: steady, input: [manual]}
    """)
    async with garrison.open_node(config=cfg) as node:
        node.interrupt_start()
        await trio.sleep(3)  # flaky crashes at 1, restarts at 2
        await node.start_service("t:manual")
        info = {s.id: s for s in node.services()}
        assert info["t:flaky"].status == "running" and info["t:flaky"].restarts == 1
        assert info["t:manual"].status == "running"
    assert starts("flaky") == [0, 2] and starts("manual") == [3]


def test_what_a_service_does_once_a_requirement_gave_up_is_one_rule() -> None:
    """The node's log and ``garrison run --main SERVICE`` said it by two rules: one in
    ``backoff`` (between restarts: its next start waits for what it requires) was
    "cannot start" in the log and "runs without what it requires" on the command line."""
    from garrison.supervision import ServiceStatus

    up = {ServiceStatus.RUNNING, ServiceStatus.STARTING}
    for status in ServiceStatus:
        assert status.without_requirement() == (
            "runs on without it" if status in up else "cannot start"), status


async def test_no_process_stops_the_service_manager(autojump_clock):
    """A process could terminate (or cancel) the node's service manager, or end it
    through a link: the services ran on unwatched, a crash was never restarted,
    ``node.services()`` said ``running`` with dead pids and ``start_service`` said the
    node's services were stopping."""
    svc_app.FAILS["crasher"] = 1
    cfg = config("""
        - name: svc_crasher
          kind: process.service
          process: crasher
          input: [crasher, 5]
          lifecycle: {auto_start: true, restart: {initial_delay: 1s, jitter: 0}}
    """)
    refused: list[str] = []

    async def stopper(how: str) -> None:
        manager = process.lookup("garrison.services")
        try:
            if how == "terminate":
                await process.terminate(manager)
            else:
                await process.cancel(manager, timeout=1)
        except ValueError as exc:
            refused.append(str(exc))

    async def linked_failure() -> None:
        process.link(process.lookup("garrison.services"))
        raise RuntimeError("a linked process failed")

    async with garrison.open_node(config=cfg) as node:
        manager = node.lookup("garrison.services")
        for how in ("terminate", "cancel"):
            await node.wait(await node.spawn(stopper, how))
        with pytest.raises(garrison.ProcessError):
            await node.wait(await node.spawn(linked_failure))
        assert len(refused) == 2 and all(
            f"{manager}: it is the node's service manager (registered as "
            "'garrison.services'), which runs the config's services and stops with the "
            "node" in r for r in refused), refused
        assert refused[0].startswith("cannot terminate ")
        assert refused[1].startswith("cannot cancel ")
        await trio.sleep(10)  # the crash (at 5 s) is restarted, by the same manager
        assert len(starts("crasher")) == 2
        assert node.lookup("garrison.services") == manager
        info = {s.id: s for s in node.services()}["t:svc_crasher"]
        assert info.status == ServiceStatus.RUNNING and info.restarts == 1


async def test_each_start_of_a_service_gets_its_own_copy_of_the_input(autojump_clock):
    """A service's input was one Python object for every start: what a run appended to
    it, the next run started with, and so did another service sharing it through a
    YAML alias (and ``node.config``)."""
    svc_app.SEEN.clear()
    cfg = load_config_text(textwrap.dedent("""
        version: "1.0"
        namespace: t
        entries:
          - {name: m, kind: process.py, source: "svc_app:appender"}
          - name: one
            kind: process.service
            process: m
            input: [&shared {items: [a]}]
            lifecycle: {auto_start: true, restart: {max_attempts: 5, initial_delay: 1s}}
          - {name: two, kind: process.service, process: m, input: [*shared],
             lifecycle: {auto_start: true, restart: {max_attempts: 5, initial_delay: 1s}}}
    """), "test.yaml")
    async with garrison.open_node(config=cfg) as node:
        await trio.sleep(10)
        assert node.config.entries["t:one"].input == ({"items": ["a"]},)
    assert len(svc_app.SEEN) >= 6
    assert set(svc_app.SEEN) == {"{'items': ['a']}"}


async def test_stable_threshold_counts_the_run_not_the_wait_for_a_worker(autojump_clock):
    """A service on a host whose one worker was busy waited 6 s for it and then crashed
    at once: the wait counted as a run past ``stable_threshold`` (5 s), so its restart
    count started again each time and ``max_attempts: 1`` never gave up."""
    cfg = config("""
        - {name: pool, kind: process.host, workers: 1}
        - name: svc
          kind: process.service
          process: instant
          host: t:pool
          input: [instant]
          lifecycle:
            auto_start: true
            start_timeout: 60s
            stable_threshold: 5s
            restart: {max_attempts: 1, initial_delay: 1s, max_delay: 1s, jitter: 0}
    """)
    async with garrison.open_node(config=cfg) as node:
        for _ in range(3):
            while {s.id: s for s in node.services()}["t:svc"].status not in (
                    ServiceStatus.BACKOFF, ServiceStatus.GAVE_UP):
                await trio.sleep(0.001)
            if {s.id: s for s in node.services()}["t:svc"].status is ServiceStatus.GAVE_UP:
                break
            await node.spawn(svc_app.hog, 6, host="t:pool")  # the worker, before the restart
        await trio.sleep(30)
        info = {s.id: s for s in node.services()}["t:svc"]
        assert info.status is ServiceStatus.GAVE_UP
    assert len(starts("instant")) == 2  # the first start and its one restart


async def test_a_service_restarted_with_what_it_requires_takes_its_helpers_along(
        autojump_clock):
    """The manager restarts a service when one it requires restarts, by a cancel: the
    helpers the service had spawn_linked outlived each restart (as a Supervisor's did)."""
    svc_app.HELPERS.clear()
    svc_app.FAILS["crasher"] = 3
    cfg = config("""
        - {name: helped, kind: process.py, source: "svc_app:with_helper"}
        - name: base
          kind: process.service
          process: crasher
          input: [crasher, 1]
          lifecycle: {auto_start: true, restart: {initial_delay: 1s, jitter: 0}}
        - name: dep
          kind: process.service
          process: helped
          input: [dep]
          lifecycle: {auto_start: true, requires: [base]}
    """)
    async with garrison.open_node(config=cfg):
        await trio.sleep(20)
        assert len(starts("dep")) >= 3  # restarted with base
        assert len(svc_app.HELPERS) == 1


async def test_a_service_input_shares_the_objects_a_programmatic_config_gives(
        autojump_clock):
    """Copying each start's input (lists, dicts: what a run changes) must not detach an
    object a programmatic config hands its service (a trio event, a channel)."""
    event = trio.Event()
    box: list[str] = []
    cfg = config("""
        - {name: sharer, kind: process.py, source: "svc_app:shares"}
        - {name: svc, kind: process.service, process: sharer, input: [[], 0],
           lifecycle: {auto_start: true}}
    """)
    entry = cfg.entries["t:svc"]
    cfg.entries["t:svc"] = attrs.evolve(entry, input=(box, event))
    async with garrison.open_node(config=cfg):
        with trio.fail_after(5):
            await event.wait()  # the very event given
    assert box == []  # the list was copied


# -- helpers ending with a service's process, waited for --------------------------------
def conn_config(services: str):
    return config('- {name: conn_user, kind: process.py, source: "svc_app:with_conn"}'
                  + textwrap.dedent(services))


async def test_a_crashed_service_is_restarted_once_its_helpers_have_ended(autojump_clock):
    """helper-369: a service that crashed once, its spawn_linked helper's (shielded)
    cleanup taking 50 ms, gave up: each restart's helper found the name "conn" still
    held by the old one, which failed the new process through its link, again and
    again until max_attempts, all within that cleanup."""
    svc_app.FAILS["svc"] = 1
    cfg = conn_config("""
        - name: svc
          kind: process.service
          process: conn_user
          input: [svc, 0.05]
          lifecycle:
            auto_start: true
            restart: {max_attempts: 2, initial_delay: 10ms, jitter: 0}
    """)
    async with garrison.open_node(config=cfg) as node:
        old = node.lookup("conn")
        await trio.sleep(1)
        info = {s.id: s for s in node.services()}["t:svc"]
        assert info.status is ServiceStatus.RUNNING, info
        assert info.restarts == 1 and info.last_error.type == "RuntimeError"
        assert node.lookup("conn") not in (None, old)
    # the restart waited for the old helper (50 ms), not past it
    first, second = starts("svc")
    assert second - first == pytest.approx(0.15)


async def test_a_service_restarted_with_what_it_requires_waits_for_its_helpers(
        autojump_clock):
    """helper-369: a service the manager stopped because one it requires restarted
    started again while its old helper still ran its cleanup and held "conn": the new
    one failed at once, again and again until it gave up."""
    svc_app.FAILS["crasher"] = 1
    cfg = conn_config("""
        - name: base
          kind: process.service
          process: crasher
          input: [crasher, 0.5]
          lifecycle: {auto_start: true, restart: {initial_delay: 10ms, jitter: 0}}
        - name: dep
          kind: process.service
          process: conn_user
          input: [dep, 0.05]
          lifecycle:
            auto_start: true
            requires: [base]
            restart: {max_attempts: 1, initial_delay: 10ms, jitter: 0}
    """)
    async with garrison.open_node(config=cfg) as node:
        old = node.lookup("conn")
        await trio.sleep(1)
        info = {s.id: s for s in node.services()}["t:dep"]
        assert info.status is ServiceStatus.RUNNING, info
        assert info.restarts == 0 and info.last_error is None
        assert node.lookup("conn") not in (None, old)
    assert len(starts("dep")) == 2


@pytest.mark.parametrize("delay, gap", [("10ms", 6.1), ("10s", 10.1)])
async def test_the_wait_for_a_service_s_helpers_is_bounded_and_said(
        autojump_clock, caplog, delay, gap):
    """The wait for the helpers ending with a service's process lasts at most its
    stop_timeout plus 5 s from its end, then the manager says so and restarts it. The
    warning says how long after the end (helper-377: with a 10 s restart delay it said
    "6s", its bound, taken before the delay)."""
    caplog.set_level(logging.WARNING, logger="garrison.services")
    svc_app.FAILS["svc"] = 1
    cfg = conn_config(f"""
        - name: svc
          kind: process.service
          process: conn_user
          input: [svc, 60, false]
          lifecycle:
            auto_start: true
            stop_timeout: 1s
            restart: {{initial_delay: {delay}, jitter: 0}}
    """)
    async with garrison.open_node(config=cfg) as node:
        crashed = {s.id: s for s in node.services()}["t:svc"].pid
        await trio.sleep(11)
        first, second = starts("svc")
        assert second - first == pytest.approx(gap)
        said = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "still run" in r.getMessage()]
        assert len(said) == 1 and re.fullmatch(
            rf"t:svc: processes/\S+ \(linked to its process {crashed}, ending with it\) "
            rf"still run\(s\) {int(gap)}s after it ended; the service manager goes on",
            said[0]), said


async def test_a_service_running_a_supervisor_runs_once_its_children_all_run(
        autojump_clock, caplog):
    """README's supervision tree from a config: a service whose process runs a
    Supervisor counted as running as soon as that process began, so what requires it
    started while the tree's children were still starting (a child's registered name
    not there yet: NoSuchProcess). As a nested supervisor does, it runs once its
    children all run; a tree that cannot start them within start_timeout says so."""
    caplog.set_level(logging.INFO, logger="garrison.services")
    cfg = config("""
        - {name: pool, kind: process.host, workers: 1}
        - {name: hog, kind: process.py, source: "svc_app:hog"}
        - {name: tree_p, kind: process.py, source: "svc_app:tree"}
        - {name: busy, kind: process.service, process: hog, host: pool, input: [3],
           lifecycle: {auto_start: true}}
        - {name: tree, kind: process.service, process: tree_p, input: [tree],
           lifecycle: {auto_start: true}}
        - {name: api, kind: process.service, process: steady, input: [api],
           lifecycle: {auto_start: true, requires: [tree]}}
        - {name: slow, kind: process.service, process: tree_p, input: [slow],
           lifecycle: {start_timeout: 1s, restart: {max_attempts: 1}}}
    """)
    async with garrison.open_node(config=cfg) as node:
        # tree's child 'late' waits for the pool's one worker, which busy holds 3 s
        assert starts("tree.late") == [3.0]
        assert starts("api") == [3.0]
        order = [who for _, who, what in svc_app.LOG if what == "start"]
        assert order.index("tree.late") < order.index("api")
        await node.start_service("t:slow")  # its 'late' waits behind tree's for ever
        await trio.sleep(5)
        info = {s.id: s for s in node.services()}["t:slow"]
        assert info.status == ServiceStatus.GAVE_UP
        assert info.last_error is not None
        assert str(info.last_error) == (
            "TimeoutError: not started within 1s: it waited for the children of its "
            "Supervisor to start")


async def test_a_service_running_a_supervisor_is_said_started_once_its_children_run(
        autojump_clock, caplog):
    """'started as' was logged as the tree's process was spawned, before its children
    ran: the log said it started while what requires it still waited, and a tree that
    never got its children running had been said started. The line comes as the
    service counts as running, once its children all run; a tree whose children do not
    start in time is never said started, only why its start failed."""
    caplog.set_level(logging.INFO, logger="garrison")
    cfg = config("""
        - {name: pool, kind: process.host, workers: 1}
        - {name: hog, kind: process.py, source: "svc_app:hog"}
        - {name: tree_p, kind: process.py, source: "svc_app:tree"}
        - {name: busy, kind: process.service, process: hog, host: pool, input: [3],
           lifecycle: {auto_start: true}}
        - {name: tree, kind: process.service, process: tree_p, input: [tree],
           lifecycle: {auto_start: true}}
        - {name: slow, kind: process.service, process: tree_p, input: [slow],
           lifecycle: {start_timeout: 1s, restart: {max_attempts: 1}}}
    """)

    def said(service):
        return [r.getMessage() for r in caplog.records
                if r.getMessage().startswith(f"t:{service}:")]

    class When(logging.Handler):  # (each line with its trio time)
        def emit(self, record):
            lines.append((trio.current_time(), record.getMessage()))

    lines: list = []
    when = When()
    logging.getLogger("garrison.services").addHandler(when)
    try:
        async with garrison.open_node(config=cfg) as node:
            # its child 'late' waits for the pool's one worker, which busy holds 3 s
            assert starts("tree.first") == [0.0] and starts("tree.late") == [3.0]
            tree = {s.id: s for s in node.services()}["t:tree"]
            assert [(t, m) for t, m in lines if m.startswith("t:tree: started as")] == [
                (3.0, f"t:tree: started as {tree.pid}")], lines
            await node.start_service("t:slow")  # its 'late' waits behind tree's for ever
            await trio.sleep(5)
    finally:
        logging.getLogger("garrison.services").removeHandler(when)
    slow = said("slow")
    assert [m for m in slow if "started as" in m] == [], slow
    assert slow[-1] == ("t:slow: giving up after 1 restart; last error: TimeoutError: "
                        "not started within 1s: it waited for the children of its "
                        "Supervisor to start"), slow


async def test_a_send_to_a_service_that_is_not_running_says_why(autojump_clock):
    """A service whose process fails at once (a wrong argument, say) is between restarts
    as the node's start ends: a call to its id from the root raised only ``no process is
    registered as 't:db'``, the service and its error in earlier log lines. It now says
    which service that is and why it runs no process: between restarts after its
    error, gave up (after "1 restart", not "1 restarts"), not started, waiting for what
    it requires."""
    cfg = config("""
        - name: db
          kind: process.service
          process: instant
          input: [db]
          lifecycle: {auto_start: true, restart: {max_attempts: 1, initial_delay: 1s, jitter: 0}}
        - name: api
          kind: process.service
          process: steady
          input: [api]
          lifecycle: {auto_start: true, requires: [db]}
        - name: spare
          kind: process.service
          process: steady
          input: [spare]
    """)

    async def refused(to):
        with pytest.raises(garrison.NoSuchProcess) as caught:
            await node.send(to, "hello")
        return str(caught.value)

    async with garrison.open_node(config=cfg) as node:
        assert await refused("t:db") == (
            "no process is registered as 't:db': service t:db is between restarts: its "
            "process failed with RuntimeError: db crashed at once; restart 1/1 in 1.00s")
        assert await refused("t:api") == (
            "no process is registered as 't:api': service t:api waits for t:db, which "
            "it requires, to run")
        assert await refused("t:spare") == (
            "no process is registered as 't:spare': service t:spare is not started (it "
            "is not auto_start: node.start_service starts it)")
        assert await refused("nobody") == "no process is registered as 'nobody'"
        await trio.sleep(5)
        assert await refused("t:db") == (
            "no process is registered as 't:db': service t:db gave up after 1 restart; "
            "last error: RuntimeError: db crashed at once")
