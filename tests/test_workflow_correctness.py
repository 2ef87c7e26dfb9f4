"""Workflows that used to fail, hang or be lost after ordinary restarts, races and bad
input (issue 9 of the project) and what a new user reaches for first (issue 10)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import correctness_app as app
import pytest
import trio

import garrison
import garrison.testing
from garrison import process
from garrison.config import load_config_text
from garrison.persistence import SQLiteStore, Transaction, open_store

SERVICE_CONFIG = """
version: "1.0"
namespace: app
entries:
  - {name: kv_store, kind: process.py, source: "correctness_app:kv"}
  - name: kv
    kind: process.service
    process: app:kv_store
    lifecycle: {auto_start: true}
"""


async def wait_status(handle: garrison.WorkflowHandle, *statuses: str) -> None:
    with trio.fail_after(60):
        while handle.status() not in statuses:
            await trio.sleep(0.01)


# ---------------------------------------------------------------- restarts
async def test_resumed_workflows_find_the_config_services(tmp_path: Path,
                                                          autojump_clock: Any) -> None:
    db = str(tmp_path / "wf.db")
    config = load_config_text(SERVICE_CONFIG)
    async with garrison.open_node(config=config, store=db) as node:
        for i in range(10):
            await node.start_workflow(app.calls_service_between_sleeps, f"k{i}", id=f"w{i}")
        for i in range(10):
            await wait_status(node.workflow(f"w{i}"), "sleeping")
    # the node restarts: the services must run before the workflows resume
    async with garrison.open_node(config=config, store=db) as node:
        results = [await node.workflow(f"w{i}").result() for i in range(10)]
    # each workflow's first call hit the first kv service (1), the next two the new one
    assert results == [1 + 1 + 2] * 10


async def test_operations_on_a_name_replay_without_resolving_it(tmp_path: Path,
                                                               autojump_clock: Any) -> None:
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        svc = await node.spawn(app.named_sleeper, "svc")
        await trio.sleep(0.1)
        await node.start_workflow(app.watches_by_name, id="w")
        await wait_status(node.workflow("w"), "waiting")
        kinds = [(r.kind, r.name, r.outcome) for r in node.workflow("w").history()]
    assert kinds == [("monitor", "svc", {"pid": str(svc)}), ("lookup", "svc", {"pid": str(svc)}),
                     ("demonitor", "svc", {"pid": str(svc)}), ("link", "svc", {"pid": str(svc)}),
                     ("unlink", "svc", {"pid": str(svc)})]
    # the next node has no "svc" at all: the replay takes the pids from the journal
    async with garrison.open_node(store=db) as node:
        await node.workflow("w").signal("go")
        assert await node.workflow("w").result() == f"{svc} go"


async def test_continue_as_new_with_child_workflows(node: garrison.Node) -> None:
    await node.start_workflow(app.parent_continuing, 3, [], id="p")
    assert await node.workflow("p").result() == [10, 20, 30]


async def test_an_existing_workflow_is_never_adopted_as_a_child(node: garrison.Node) -> None:
    await node.start_workflow(app.child_value, 1, id="order.1")  # a user's own id
    assert await node.workflow("order.1").result() == 10
    await node.start_workflow(app.parent_of_one_child, id="order")
    child, result = await node.workflow("order").result()
    assert result == 70 and child != "workflows/order.1"
    assert child.startswith("workflows/order.")


@pytest.mark.parametrize("kind", ["sleep", "receive"])
async def test_waiting_forever_survives_a_restart(tmp_path: Path, autojump_clock: Any,
                                                  kind: str, capsys: Any) -> None:
    db = str(tmp_path / "wf.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.sleeps_forever_or_signal, kind, id="w")
        await wait_status(node.workflow("w"), "waiting")
    from garrison._cli import main

    assert main(["workflows", "--store", db, "show", "w"]) == 0
    if kind == "receive":  # its timer row: "forever" reads as a date
        assert "9999-12-31" in capsys.readouterr().out
    async with garrison.open_node(store=db) as node:
        await node.workflow("w").signal("stop")
        assert await node.workflow("w").result() == ("signal" if kind == "sleep" else "stop")


@pytest.mark.parametrize("value", [float("nan"), -1, "-5s"])
async def test_nan_and_negative_durations_are_refused(node: garrison.Node, value: Any) -> None:
    await node.start_workflow(app.bad_duration, str(value) if isinstance(value, str) else value,
                              id="w")
    with pytest.raises(garrison.WorkflowFailed, match="ValueError: invalid sleep duration"):
        await node.workflow("w").result()


@pytest.mark.parametrize("kind", ["sleep", "timer", "receive"])
@pytest.mark.parametrize("which", ["None", "True", "Decimal"])
async def test_a_duration_of_another_type_fails_the_workflow_with_a_type_error(
        node: garrison.Node, kind: str, which: str) -> None:
    """probe p01: ``sleep(True)``, ``timer(None)``, ``receive(timeout=Decimal("1"))``
    raised ValueError; a value of the wrong type is a TypeError (a ValueError too, as
    API.md has it), naming the value. (``receive(timeout=None)`` waits without one.)"""
    if (kind, which) == ("receive", "None"):
        return
    await node.start_workflow(app.waits_for, kind, which, id="w")
    what = {"sleep": "sleep duration", "timer": "timer duration", "receive": "timeout"}[kind]
    with pytest.raises(garrison.WorkflowFailed) as info:
        await node.workflow("w").result()
    assert str(info.value.error).startswith(
        f"DurationTypeError: invalid {what} {app.DURATIONS[which]!r}"), info.value.error
    assert issubclass(garrison.DurationTypeError, TypeError)


@pytest.mark.parametrize("kind", ["sleep", "timer", "receive"])
@pytest.mark.parametrize(("which", "seconds"), [("timedelta", 5400.0), ("timedelta(0)", 0.0)])
async def test_a_timedelta_is_a_workflow_duration(
        node: garrison.Node, autojump_clock: Any, kind: str, which: str,
        seconds: float) -> None:
    await node.start_workflow(app.waits_for, kind, which, id="w")
    assert await node.workflow("w").result() == pytest.approx(seconds, abs=0.01)


@pytest.mark.parametrize(("which", "error"), [
    ("date", "TypeError"), ("str", "TypeError"), ("float", "TypeError"), ("None", "TypeError"),
    ("naive", "ValueError"), ("floating", "ValueError")])
async def test_sleep_until_refuses_what_is_no_aware_datetime_by_its_kind(
        node: garrison.Node, autojump_clock: Any, which: str, error: str) -> None:
    """probes p03, p28: a date, text, a number or None raised ``ValueError: sleep_until()
    needs an aware datetime``, a TypeError's case; a datetime whose tzinfo gives no UTC
    offset (naive, to Python) passed the check and failed deep inside Python (``can't
    subtract offset-naive and offset-aware datetimes``). It is naive: a ValueError, as
    for any naive one."""
    await node.start_workflow(app.sleeps_until, which, id="w")
    with pytest.raises(garrison.WorkflowFailed) as info:
        await node.workflow("w").result()
    assert str(info.value.error).startswith(
        f"{error}: sleep_until() needs an aware datetime"), info.value.error


async def test_a_timedelta_is_a_duration_of_the_testing_environment_and_a_schedule() -> None:
    import datetime as dt

    async with garrison.testing.workflow_env() as env:
        start = env.now()
        await env.sleep(dt.timedelta(hours=2))
        assert env.now() - start == dt.timedelta(hours=2)
        handle = await env.node.schedule("s", app.waits_for, "sleep", "timedelta(0)",
                                         every=dt.timedelta(hours=1),
                                         catchup_window=dt.timedelta(minutes=5))
        assert (handle.info().every, handle.info().catchup_window) == (3600.0, 300.0)
        with pytest.raises(TypeError, match=r"^invalid duration None of type NoneType"):
            await env.sleep(None)


async def test_a_started_activity_may_be_awaited_again(tmp_path: Path,
                                                      autojump_clock: Any) -> None:
    db = str(tmp_path / "wf.db")
    app.LOG.clear()
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(app.awaits_twice, id="w")
        await wait_status(node.workflow("w"), "waiting")
    async with garrison.open_node(store=db) as node:  # replays every await of the handles
        await node.workflow("w").signal("go")
        assert await node.workflow("w").result() == ["B", "A", "B", "B"]
    assert sorted(app.LOG) == ["a", "b"]  # each ran once


async def test_concurrent_starts_of_one_id_run_it_once(tmp_path: Path) -> None:
    app.LOG.clear()
    pids: list[garrison.Pid] = []

    async with garrison.open_node(store=str(tmp_path / "wf.db")) as node:
        async def start() -> None:
            pids.append(await node.start_workflow(app.counts_once, "x", id="same"))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(start)
        assert await node.workflow("same").result() == "X"
        assert node.workflow("same").status() == "completed"
    assert set(pids) == {garrison.Pid("workflows", "same")} and len(pids) == 20
    assert app.LOG == ["x"]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(("target", "arg", "error"), [
    (app.bad_version, "none", "TypeError: workflow.version(): change_id must be a non-empty"),
    (app.bad_version, "range", "ValueError: workflow.version('v', 3, 1): min_version is "),
    (app.bad_attrs, "nan", "ValueError: search attribute 'score' is nan"),
    (app.bad_attrs, "quote", "ValueError: workflow.attrs(search=...): key 'say \"hi\"'"),
    (app.bad_attrs, "abc", "TypeError: workflow.attrs(search=...) takes a dict"),
    (app.bad_attrs, "garrison's", "ValueError: workflow.attrs(memo=...): key "
                                  "'garrison.priority' is garrison's"),
])
async def test_bad_workflow_calls_fail_at_the_call(node: garrison.Node, target: Any, arg: str,
                                                   error: str) -> None:
    await node.start_workflow(target, arg, id="w")
    with pytest.raises(garrison.WorkflowFailed) as info:
        await node.workflow("w").result()
    assert str(info.value.error).startswith(error), info.value.error
    assert node.workflow("w").history() == []  # nothing stored


async def test_first_of_nothing_is_refused(node: garrison.Node) -> None:
    await node.start_workflow(app.first_of_nothing, id="w")
    with pytest.raises(garrison.WorkflowFailed, match="needs at least one awaitable"):
        await node.workflow("w").result()


async def test_bad_ids_and_statuses_are_refused(node: garrison.Node) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        await node.start_workflow(app.child_value, 1, id="")
    with pytest.raises(ValueError, match="lone surrogate"):
        await node.start_workflow(app.child_value, 1, id="a\udc80b")
    with pytest.raises(TypeError, match="must be a string"):
        await node.start_workflow(app.child_value, 1, id=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid workflow status 'bogus'"):
        node.workflows(status="bogus")
    with pytest.raises(TypeError, match="takes a dict"):
        node.workflows(search="abc")  # type: ignore[arg-type]
    assert node.workflows() == []


@pytest.mark.parametrize(("bad", "why"), [
    ("", "it is empty"), (" ", "leading or trailing spaces"), (" a", "leading or trailing"),
    ("a\nb", "unprintable character '\\n'"), ("a\tb", "unprintable character '\\t'"),
    ("a\x00b", "unprintable character '\\x00'"), ("a\x1b[2Jb", "unprintable"),
    ("a\u2028b", "unprintable"), ("a\udc80b", "lone surrogate")])
async def test_one_rule_for_workflow_ids_wherever_one_is_given(node: garrison.Node, bad: str,
                                                               why: str) -> None:
    """An id that would break the list table or a log line (blank, a newline, a control
    character) is refused with the same ValueError by start_workflow, process.spawn and
    schedules (whose workflow ids derive from theirs); nothing is stored."""
    rule = "printable characters"
    with pytest.raises(ValueError) as info:
        await node.start_workflow(app.child_value, 1, id=bad)
    assert str(info.value).startswith(f"invalid workflow id {bad!r}: ")
    assert why in str(info.value) and rule in str(info.value), info.value

    async def spawner() -> str:
        try:
            await process.spawn(app.child_value, 1, host="workflows", id=bad)
        except ValueError as exc:
            return str(exc)
        return "spawned"

    spawned = await node.wait(await node.spawn(spawner))
    assert why in spawned and rule in spawned, spawned
    with pytest.raises(ValueError) as info:
        await node.schedule(bad, app.child_value, 1, every="1h")
    assert str(info.value).startswith(f"invalid schedule id {bad!r}: ")
    assert why in str(info.value) and rule in str(info.value), info.value
    assert node.workflows() == [] and node.schedules() == []
    for good in ("order-17", "a b", "naïve/ünïcode", "x@y"):
        await node.start_workflow(app.child_value, 1, id=good)


async def test_a_rejected_promise_carries_its_reason(node: garrison.Node) -> None:
    await node.start_workflow(app.awaits_rejected_promise, id="w")
    await wait_status(node.workflow("w"), "waiting")
    await node.workflow("w").promise("approval").reject("too expensive")
    assert await node.workflow("w").result() == "approval: too expensive"


# ---------------------------------------------------------------- starting by id
async def test_spawn_with_an_id_is_idempotent_across_a_restart(tmp_path: Path,
                                                               autojump_clock: Any) -> None:
    db = str(tmp_path / "wf.db")
    app.LOG.clear()

    async def root() -> garrison.Pid:
        node = garrison.current_node()
        assert node is not None
        return await process.spawn(app.batch, "d1", host="workflows", id="batch-d1")

    async with garrison.open_node(store=db) as node:
        first = await node.wait(await node.spawn(root))
        assert first == await node.wait(await node.spawn(root))  # the same workflow
    async with garrison.open_node(store=db) as node:  # a rerun after a crash
        assert await node.wait(await node.spawn(root)) == first
        await node.send(first, "go")
        assert await node.workflow("batch-d1").result() == "done d1"
    assert app.LOG == ["batch d1"]  # started once

    async with garrison.open_node() as node:
        async def on_process_host() -> None:
            await process.spawn(app.batch, "x", id="nope")

        with pytest.raises(garrison.ProcessError, match=r"TypeError: spawn.*process host"):
            await node.wait(await node.spawn(on_process_host))


async def test_a_workflow_spawns_a_workflow_by_id(node: garrison.Node) -> None:
    await node.start_workflow(app.spawns_batch_by_id, "d2", id="w")
    assert await node.workflow("w").result() == "workflows/batch-d2 -> done d2"


async def test_an_activity_messages_as_plain_code(node: garrison.Node) -> None:
    app.LOG.clear()
    config = load_config_text(SERVICE_CONFIG)
    async with garrison.open_node(config=config) as node2:
        await node2.start_workflow(app.talker, "k", id="talker")
        assert await node2.workflow("talker").result() == 1
    assert len(app.LOG) == 1 and "only process.send, process.call and msg.reply" in app.LOG[0]


def test_nan_is_still_refused_by_the_duration_parser() -> None:
    with pytest.raises(ValueError):
        garrison.parse_duration(math.nan)


def test_store_rows_with_huge_deadlines_read_as_forever(tmp_path: Path) -> None:
    from garrison.persistence import Transaction

    with SQLiteStore(str(tmp_path / "s.db")) as store:
        store.write(Transaction().create_workflow("w", "a:b"))
        store.db.conn.execute(  # an old row
            "INSERT INTO timers (workflow_id, seq, deadline) VALUES ('w', 1, 1e12)")
        assert store.timers("w")[0].deadline.year == 9999


#: 0001-01-01T00:00:00Z, the earliest time a stored deadline holds
YEAR_ONE = -62135596800.0


def _year_zero_rows(wid: str, name: str) -> Transaction:
    """Workflow ``wid`` running ``name`` as a node killed between the two commits of
    its first sleep left it before deadlines were clamped at year 1: its timer row at
    ``correctness_app.YEAR_ZERO``, 9 hours before 0001-01-01 UTC (no date holds it)."""
    return (Transaction()
            .create_workflow(wid, f"correctness_app:{name}", status="running",
                             host="workflows")
            .add_timer(wid, 1, app.YEAR_ZERO.timestamp(), "sleep"))


async def test_a_sleep_until_before_year_one_is_past_and_recorded_at_year_one(
        store_spec: str, autojump_clock: Any) -> None:
    """probe p05: ``sleep_until(datetime.min)`` in a zone east of UTC (a "no wait"
    sentinel) recorded a deadline before 0001-01-01 UTC, which no date holds: a node
    killed between the sleep's two commits left a timer row no node could read back.
    Its deadline is clamped at year 1 now, as a late one is at 9999-12-31."""
    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(app.sleeps_until_year_zero, id="w")
        with trio.fail_after(10):
            assert await node.workflow("w").result() == "woke"
        assert [(r.kind, r.outcome) for r in node.workflow("w").history()] == [
            ("sleep", {"deadline": YEAR_ONE})]


async def test_a_stored_deadline_before_year_one_reads_as_past(
        store_spec: str, autojump_clock: Any, capsys: Any) -> None:
    """probe p05: the timer row of such a sleep (an older garrison's) made ``garrison
    workflows show`` and ``export`` fail with a traceback (``year 0 is out of range``)
    and every node log ``cannot resume workflow w`` and never run it. Read, it is the
    earliest time a record holds: past, the sleep ends at once."""
    from garrison._cli import main

    with open_store(store_spec) as store:
        store.write(_year_zero_rows("w", "sleeps_until_year_zero"))
        assert [t.deadline.isoformat() for t in store.timers("w")] == [
            "0001-01-01T00:00:00+00:00"]
    assert main(["workflows", "--store", store_spec, "show", "w"]) == 0
    assert "0001-01-01T00:00:00" in capsys.readouterr().out
    assert main(["workflows", "--store", store_spec, "export", "w"]) == 0
    assert "0001-01-01T00:00:00" in capsys.readouterr().out
    async with garrison.open_node(store=store_spec) as node:
        with trio.fail_after(10):
            assert await node.workflow("w").result() == "woke"
        assert [(r.kind, r.outcome) for r in node.workflow("w").history()] == [
            ("sleep", {"deadline": YEAR_ONE})]


@pytest.mark.parametrize("verb", ["terminate", "cancel"])
async def test_a_tools_workflow_with_a_deadline_before_year_one_leaves_the_node_running(
        store_spec: str, verb: str) -> None:
    """probe p05b: such a timer row, met by a running node as a tool's write woke it
    (``garrison workflows terminate`` or ``cancel`` of a workflow it could not
    resume), ended the node's wakeup watcher with a ValueError, and the node with it.
    It runs the workflow now, and the tool's verb ends it; the other workflows run on."""
    from garrison._cli import main

    async with garrison.open_node(store=store_spec) as node:
        await node.start_workflow(app.year_zero_then_waits, id="healthy")
        with open_store(store_spec, lock=False) as tool:
            tool.write(_year_zero_rows("w", "year_zero_then_waits"))
        await wait_status(node.workflow("w"), "waiting")
        code = await trio.to_thread.run_sync(main, ["workflows", "--store", store_spec,
                                                    verb, "w"])
        assert code == 0
        with trio.fail_after(10):
            with pytest.raises(garrison.WorkflowFailed if verb == "terminate"
                               else garrison.WorkflowCancelled):
                await node.workflow("w").result()
            await node.workflow("healthy").signal("go")
            assert await node.workflow("healthy").result() == "go"


# ---------------------------------------------------------------- config traps
ONE_HOST_CONFIG = """
version: "1.0"
namespace: p
entries:
  - {name: workflows, kind: workflow.host, store: p.db}
"""

TWO_HOSTS_CONFIG = """
version: "1.0"
namespace: p
entries:
  - {name: orders, kind: workflow.host, store: orders.db}
  - {name: mail, kind: workflow.host, store: mail.db}
"""


async def _spawn_on_workflows() -> garrison.Pid:
    return await process.spawn(app.child_value, 4, host="workflows", id="spawned")


async def test_workflows_means_the_configs_only_workflow_host(tmp_path: Path,
                                                             autojump_clock: Any) -> None:
    (tmp_path / "app.yaml").write_text(ONE_HOST_CONFIG)
    async with garrison.open_node(config=str(tmp_path / "app.yaml")) as node:
        pid = await node.wait(await node.spawn(_spawn_on_workflows))
        assert pid == garrison.Pid("p:workflows", "spawned")  # durable, not in memory
        await node.start_workflow(app.child_value, 5, id="started")
        assert await node.workflow("started").result() == 50
        assert node.workflow("started").pid.host == "p:workflows"
        # a pid's text form with the short name reaches the same workflow
        assert node.resolve("workflows/started") == garrison.Pid("p:workflows", "started")
    with SQLiteStore(str(tmp_path / "p.db")) as store:  # relative to the config's folder
        assert {r.workflow_id for r in store.list_workflows()} == {"spawned", "started"}


async def test_store_overrides_the_configs_stores(tmp_path: Path, autojump_clock: Any) -> None:
    (tmp_path / "app.yaml").write_text(ONE_HOST_CONFIG)
    config = str(tmp_path / "app.yaml")
    test_db = str(tmp_path / "test.db")
    async with garrison.open_node(config=config, store=test_db) as node:
        await node.start_workflow(app.child_value, 1, id="w")
        assert await node.workflow("w").result() == 10
    assert not (tmp_path / "p.db").exists()  # the app's own store was not touched
    with SQLiteStore(test_db) as store:
        assert store.get_workflow("w") is not None
    # README: a host whose entry names a file runs in memory when mapped to None (a
    # plain store=None, the default, leaves it the store its entry names)
    async with garrison.open_node(config=config, store={"p:workflows": None}) as node:
        await node.start_workflow(app.child_value, 1, id="m")
        assert await node.workflow("m").result() == 10
    assert not (tmp_path / "p.db").exists()

    (tmp_path / "two.yaml").write_text(TWO_HOSTS_CONFIG)
    two = str(tmp_path / "two.yaml")
    async with garrison.open_node(config=two, store={"p:orders": str(tmp_path / "o.db"),
                                                     "p:mail": None}) as node:
        await node.start_workflow(app.child_value, 2, id="o", host="p:orders")
        assert await node.workflow("o", host="p:orders").result() == 20
        await node.start_workflow(app.child_value, 3, id="d")  # the default host: separate
        assert node.workflow("d").pid.host == "workflows"
    assert (tmp_path / "o.db").exists() and not (tmp_path / "orders.db").exists()
    with pytest.raises(ValueError, match=r"no workflow host 'p:nope' \(the config's "
                                         r"workflow hosts: p:orders, p:mail; 'workflows' "
                                         r"names the node's own\)"):
        async with garrison.open_node(config=two, store={"p:nope": None}):
            pass
