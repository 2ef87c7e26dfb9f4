"""Watchers on node b of a workflow t that node a runs, when t fails and is retried
before b reads its end (garrison/hosts/workflow/_elsewhere.py; README's Cluster
section). b learns of t's end only by reading t's row every 50 ms: a retry before that
read left the row ``pending`` at a later attempt, and b waited for the end of the attempt
it watched for ever."""

from __future__ import annotations

import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ops_app

import garrison
from garrison import Pid, process, workflow

#: what the plain processes of these tests heard, by name
HEARD: dict[str, list[list[object]]] = {}


def _event(ev: Any) -> list[object]:
    return [str(ev.kind), str(ev.pid), ev.error.type if ev.error else None,
            ev.error.message if ev.error else None]


def test_the_end_of_a_watched_attempt_is_read_from_the_failures_a_retry_kept() -> None:
    """``end_of_attempt``: a watch of attempt 1 of a workflow retried twice hears the
    first failure; a link made after it (its time) the second's; one of the attempt
    that runs, nothing; a blocked attempt (no failure kept) goes on as the one that
    runs; a watch of nothing known takes the attempt the row shows. Each retry keeps
    the failure it ends, the last FAILURES_KEPT, and a memo not of this form is no
    failure."""
    import datetime

    from garrison.hosts.workflow._attempts import (
        FAILED_MEMO,
        FAILURES_KEPT,
        Watch,
        end_of_attempt,
        failures,
        kept_failures,
    )
    from garrison.persistence import WorkflowRecord

    def at(second: int) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(second, datetime.UTC)

    record = WorkflowRecord("t", "app:t", "failed", attempt=1, updated=at(10),
                            error=garrison.ErrorInfo("RuntimeError", "one", "tb"))
    memo = {FAILED_MEMO: kept_failures(record)}
    record = WorkflowRecord("t", "app:t", "failed", attempt=2, updated=at(20), memo=memo,
                            error=garrison.ErrorInfo("RuntimeError", "two"))
    memo = {FAILED_MEMO: kept_failures(record)}
    assert memo[FAILED_MEMO] == [[1, 10.0, {"type": "RuntimeError", "message": "one"}],
                                 [2, 20.0, {"type": "RuntimeError", "message": "two"}]]
    t = Pid("workflows", "t")
    now = WorkflowRecord("t", "app:t", "running", attempt=3, memo=memo)
    assert end_of_attempt(t, now, Watch(1)) == (
        1, (None, garrison.ErrorInfo("RuntimeError", "one")))
    assert end_of_attempt(t, now, Watch(since=15.0)) == (
        2, (None, garrison.ErrorInfo("RuntimeError", "two")))
    assert end_of_attempt(t, now, Watch(since=25.0)) == (3, None)
    assert end_of_attempt(t, now, Watch(3)) == (3, None)
    assert end_of_attempt(t, now, Watch()) == (3, None)
    blocked = WorkflowRecord("t", "app:t", "completed", attempt=3, result=7,
                             memo={FAILED_MEMO: memo[FAILED_MEMO][1:]})
    assert end_of_attempt(t, blocked, Watch(1)) == (3, (7, None))
    assert end_of_attempt(t, None, Watch(2))[1] == (None, garrison.ErrorInfo(
        "noproc", "process workflows/t is not alive"))
    for attempt in range(3, FAILURES_KEPT + 5):
        record = WorkflowRecord("t", "app:t", "failed", attempt=attempt, updated=at(attempt),
                                memo=memo)
        memo = {FAILED_MEMO: kept_failures(record)}
    assert [f[0] for f in memo[FAILED_MEMO]] == list(range(5, FAILURES_KEPT + 5))
    for bad in ("x", [[1, 2]], [["1", 2.0, {}]], [[1, "2", {}]], [[1, 2.0, "e"]]):
        assert failures(WorkflowRecord("t", "app:t", "running", attempt=3,
                                       memo={FAILED_MEMO: bad})) == {}


async def plain_watcher(name: str, target: str, how: str) -> None:
    """A plain process that traps links and monitors or links to ``target``; each event
    it reads goes to ``HEARD[name]``."""
    process.set_options(trap_links=True)
    if how == "monitor":
        process.monitor(Pid.parse(target))
    else:
        process.link(Pid.parse(target))
    heard = HEARD.setdefault(name, [])
    while True:
        heard.append(_event(await process.events().receive()))


async def workflow_watcher(target: str, how: str) -> None:
    """A workflow that traps links and monitors or links to ``target``; the events it
    reads are its state ``heard``."""
    process.set_options(trap_links=True)
    if how == "monitor":
        process.monitor(Pid.parse(target))
    else:
        process.link(Pid.parse(target))
    workflow.set_state("watching", True)
    heard: list[list[object]] = []
    while True:
        heard.append(_event(await process.events().receive()))
        workflow.set_state("heard", heard)


class _Gate:
    """Holds node b's reads of t's row made in worker threads (those of its watch of
    workflows other nodes run) until :meth:`open`."""

    def __init__(self, store: Any) -> None:
        self.opened = threading.Event()
        self.held = 0
        read = store.get_workflow

        def get_workflow(wid: str, *args: Any, **kwargs: Any) -> Any:
            if wid == "t" and threading.current_thread() is not threading.main_thread():
                self.held += 1
                assert self.opened.wait(60)
            return read(wid, *args, **kwargs)

        store.get_workflow = get_workflow

    def open(self) -> None:
        self.opened.set()


async def _until(check: Callable[[], Awaitable[bool] | bool], what: str,
                 seconds: float = 20) -> None:
    with trio.fail_after(seconds):
        while True:
            got = check()
            if not isinstance(got, bool):
                got = await got
            if got:
                return
            await trio.sleep(0.05)


async def _fail_and_retry(a: garrison.Node, attempt: int) -> None:
    await a.workflow("t").signal(f"fail{attempt}")
    with pytest.raises(garrison.WorkflowFailed, match=f"told to fail: fail{attempt}"):
        with trio.fail_after(20):
            await a.workflow("t").result()
    await a.workflow("t").retry()
    await _until(lambda: a.workflow("t").status() == "waiting", "the retried t")


FAIL1 = "told to fail: fail1"


def _left_to_b(a: garrison.Node, b: garrison.Node) -> None:
    """Node a claims no workflow of w's code: w, released as b closes, waits for b
    (as if b had been killed and a had not taken w yet)."""
    name = b.hosts["workflows"].store.get_workflow("w").name
    a.hosts["workflows"].ownership._refused[name] = "left to node b by the test"


async def _watched_by_w_then_retried(a: garrison.Node, postgres_url: str, then: str,
                                     watcher: Callable[[Pid], tuple[Any, ...]]) -> Pid:
    """t started on a, and watched by w on a node b (``b.start_workflow(*watcher(t),
    id="w")``) that read t's row once, then closed with w left to it; t fails and is
    retried meanwhile (and fails again, ``then`` ``"fails_again"``). Returns t."""
    async with garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
        t = await a.start_workflow(ops_app.fails_when_told, id="t")
        await _until(lambda: a.workflow("t").status() == "waiting", "t")
        await b.start_workflow(*watcher(t), id="w")
        await _until(lambda: b.workflow("w").state("watching") is not None, "w")
        await trio.sleep(0.3)  # (b has read t's row)
        _left_to_b(a, b)
    await _fail_and_retry(a, 1)
    if then == "fails_again":
        await a.workflow("t").signal("fail2")
        with pytest.raises(garrison.WorkflowFailed, match="fail2"):
            with trio.fail_after(20):
                await a.workflow("t").result()
    return t


@pytest.mark.parametrize("how", ["monitor", "link"])
async def test_a_plain_process_hears_of_an_attempt_retried_before_its_node_read_it(
        postgres_url: str, how: str) -> None:
    """A plain process on b monitors (links to, trapping) t on a; t fails and is retried
    before b reads t's row: the process hears of the failure, once, with its error. A
    process that watches t from after the retry hears only of the retried attempt's
    end, and the first one nothing more."""
    HEARD.clear()
    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
        gate = _Gate(b.hosts["workflows"].store)
        t = await a.start_workflow(ops_app.fails_when_told, id="t")
        await _until(lambda: a.workflow("t").status() == "waiting", "t")
        await b.spawn(plain_watcher, "first", str(t), how)
        await _until(lambda: gate.held > 0, "b's first read")
        await _fail_and_retry(a, 1)
        gate.open()
        await _until(lambda: bool(HEARD.get("first")), "the first watcher's event")
        kind = "EXIT" if how == "monitor" else "LINK_DOWN"
        assert HEARD["first"] == [[kind, str(t), "RuntimeError", FAIL1]]
        await b.spawn(plain_watcher, "second", str(t), how)
        await trio.sleep(0.3)
        assert not HEARD.get("second")
        await a.workflow("t").signal("fail2")
        await _until(lambda: bool(HEARD.get("second")), "the second watcher's event")
        await trio.sleep(0.3)
        assert HEARD["second"] == [[kind, str(t), "RuntimeError", "told to fail: fail2"]]
        assert HEARD["first"] == [[kind, str(t), "RuntimeError", FAIL1]]


@pytest.mark.parametrize("how", ["monitor", "link"])
async def test_a_workflow_hears_of_an_attempt_retried_before_its_node_read_it(
        postgres_url: str, how: str) -> None:
    """A trapping workflow w on b links to (monitors) t on a, whose node knows nothing
    of w's link; t fails and is retried before b reads t's row: w hears of the failure
    once (its LINK_DOWN waited for ever), and nothing of the retried attempt's end."""
    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
        gate = _Gate(b.hosts["workflows"].store)
        t = await a.start_workflow(ops_app.fails_when_told, id="t")
        await _until(lambda: a.workflow("t").status() == "waiting", "t")
        await b.start_workflow(workflow_watcher, str(t), how, id="w")
        await _until(lambda: b.workflow("w").state("watching") is not None, "w's watch")
        if how == "link":
            await _until(lambda: gate.held > 0, "b's first read")
        await _fail_and_retry(a, 1)
        gate.open()
        kind = "EXIT" if how == "monitor" else "LINK_DOWN"
        await _until(lambda: b.workflow("w").state("heard") is not None, "w's event")
        assert b.workflow("w").state("heard") == [[kind, str(t), "RuntimeError", FAIL1]]
        await a.workflow("t").signal("fail2")
        with pytest.raises(garrison.WorkflowFailed, match="fail2"):
            with trio.fail_after(20):
                await a.workflow("t").result()
        await trio.sleep(0.5)
        assert b.workflow("w").state("heard") == [[kind, str(t), "RuntimeError", FAIL1]]


@pytest.mark.parametrize("then", ["runs", "fails_again"])
@pytest.mark.parametrize("how", ["monitor", "link"])
async def test_a_workflow_hears_of_an_attempt_retried_while_its_node_was_down(
        postgres_url: str, how: str, then: str) -> None:
    """A trapping workflow w on b links to (monitors) t on a; b stops, t fails and is
    retried (``fails_again``: and its retried attempt fails too) before b runs w again:
    w's replay made its link again to the attempt that ran then, and w never heard of
    the failure of the one it linked to (or heard of the retried attempt's). It hears
    of that failure, once."""
    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a:
        t = await _watched_by_w_then_retried(
            a, postgres_url, then, lambda t: (workflow_watcher, str(t), how))
        async with garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
            kind = "EXIT" if how == "monitor" else "LINK_DOWN"
            await _until(lambda: b.workflow("w").state("heard") is not None, "w's event")
            await trio.sleep(0.5)
            assert b.workflow("w").state("heard") == [[kind, str(t), "RuntimeError", FAIL1]]
            if then == "runs":
                await a.workflow("t").signal("fail2")
                with pytest.raises(garrison.WorkflowFailed, match="fail2"):
                    with trio.fail_after(20):
                        await a.workflow("t").result()
                await trio.sleep(0.5)
                assert b.workflow("w").state("heard") == [
                    [kind, str(t), "RuntimeError", FAIL1]]


async def test_a_node_closing_during_a_read_of_a_watched_workflow_closes_cleanly(
        postgres_url: str) -> None:
    """A plain process on b monitors t on a, and b closes while its read of t's row
    is under way in a worker thread: the read met the store the close had closed, and
    its RuntimeError ('store ... is closed') failed b's close (seen in these tests'
    own closes). A read of a node that stops asks nothing more: the watch ends."""
    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a:
        t = await a.start_workflow(ops_app.fails_when_told, id="t")
        await _until(lambda: a.workflow("t").status() == "waiting", "t")
        async with trio.open_nursery() as nursery, \
                garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
            store = b.hosts["workflows"].store
            gate = _Gate(store)
            await b.spawn(plain_watcher, "closing", str(t), "monitor")
            await _until(lambda: gate.held > 0, "b's read")

            async def open_once_closed() -> None:
                await _until(lambda: store._closed, "b's store to close")
                gate.open()

            nursery.start_soon(open_once_closed)
        assert not HEARD.get("closing")


class _HeldAfterRead:
    """Once :attr:`armed`, holds node b's next read of t's row in a worker thread once
    it has read the row (what it returns is the row as it was then) until :meth:`open`."""

    def __init__(self, store: Any) -> None:
        self.armed = threading.Event()
        self.read_done = threading.Event()
        self.opened = threading.Event()
        read = store.get_workflow

        def get_workflow(wid: str, *args: Any, **kwargs: Any) -> Any:
            record = read(wid, *args, **kwargs)
            if wid == "t" and threading.current_thread() is not threading.main_thread() \
                    and self.armed.is_set() and not self.opened.is_set():
                self.read_done.set()
                assert self.opened.wait(60)
            return record

        store.get_workflow = get_workflow

    def open(self) -> None:
        self.opened.set()


@pytest.mark.parametrize("how", ["monitor", "link"])
async def test_a_watch_made_during_a_read_is_not_of_the_attempt_that_read_found(
        postgres_url: str, how: str) -> None:
    """b's read of t's row (for a first watcher) found attempt 1 running; before it
    came back t failed, was retried, and a second process of b watched t: a watch of
    attempt 2, as the monitor's own read said (a link: by its time). The late read took
    it for a watch of attempt 1, and the next read made the second process hear the
    first attempt's failure, which came before its watch: an EXIT (a LINK_DOWN) of a
    workflow that runs. It hears nothing until attempt 2 ends, then that end."""
    HEARD.clear()
    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
        held = _HeldAfterRead(b.hosts["workflows"].store)
        t = await a.start_workflow(ops_app.fails_when_told, id="t")
        await _until(lambda: a.workflow("t").status() == "waiting", "t")
        await b.spawn(plain_watcher, "first", str(t), how)
        await trio.sleep(0.3)  # (b has read t's row, attempt 1 running)
        held.armed.set()
        await _until(held.read_done.is_set, "b's read of attempt 1")
        await _fail_and_retry(a, 1)
        await b.spawn(plain_watcher, "second", str(t), how)
        await trio.sleep(0.1)
        held.open()
        kind = "EXIT" if how == "monitor" else "LINK_DOWN"
        await _until(lambda: bool(HEARD.get("first")), "the first watcher's event")
        await trio.sleep(0.5)
        assert HEARD["first"] == [[kind, str(t), "RuntimeError", FAIL1]]
        assert not HEARD.get("second"), HEARD["second"]
        await a.workflow("t").signal("fail2")
        await _until(lambda: bool(HEARD.get("second")), "the second watcher's event")
        assert HEARD["second"] == [[kind, str(t), "RuntimeError", "told to fail: fail2"]]


def test_the_failures_a_retry_keeps_hold_a_long_message_cut_in_the_middle() -> None:
    """A workflow failing with a long error message (an activity that raised with a
    service's whole answer in it), retried FAILURES_KEPT times, kept each message
    whole in its memo: 16 MB for a 1 MB message, carried by every read of its row (a
    watching node's every 50 ms: 0.24 s each on SQLite). Each is kept within
    MESSAGE_KEPT characters, its start and its end, saying how much was left out."""
    import datetime
    import json

    from garrison.hosts.workflow._attempts import (
        FAILED_MEMO,
        FAILURES_KEPT,
        MESSAGE_KEPT,
        Watch,
        end_of_attempt,
        kept_failures,
    )
    from garrison.persistence import WorkflowRecord

    long = "begin " + "x" * 1_000_000 + " end"
    memo: dict[str, Any] = {}
    for attempt in range(1, FAILURES_KEPT + 1):
        record = WorkflowRecord(
            "t", "app:t", "failed", attempt=attempt, memo=memo,
            updated=datetime.datetime.fromtimestamp(attempt, datetime.UTC),
            error=garrison.ErrorInfo("RuntimeError", long))
        memo = {FAILED_MEMO: kept_failures(record)}
    assert len(json.dumps(memo)) < FAILURES_KEPT * (MESSAGE_KEPT + 200)
    running = WorkflowRecord("t", "app:t", "running", attempt=FAILURES_KEPT + 1, memo=memo)
    _attempt, end = end_of_attempt(Pid("workflows", "t"), running, Watch(1))
    assert end is not None and end[1] is not None
    message = end[1].message
    assert message.startswith("begin xxx") and message.endswith("xxx end")
    assert f"({len(long) - MESSAGE_KEPT} characters of the message left out)" in message
    short = WorkflowRecord("t", "app:t", "failed", attempt=1,
                           error=garrison.ErrorInfo("RuntimeError", "x" * MESSAGE_KEPT))
    assert kept_failures(short)[0][2]["message"] == "x" * MESSAGE_KEPT


async def spawn_linking_watcher(target_id: str) -> None:
    """A workflow that traps links and links to workflow ``target_id`` (of another
    node) by a linked spawn of its id; the events it reads are its state ``heard``."""
    process.set_options(trap_links=True)
    await process.spawn_linked(ops_app.fails_when_told, id=target_id)
    workflow.set_state("watching", True)
    heard: list[list[object]] = []
    while True:
        heard.append(_event(await process.events().receive()))
        workflow.set_state("heard", heard)


@pytest.mark.parametrize("then", ["runs", "fails_again"])
async def test_a_linked_spawn_hears_of_an_attempt_retried_while_its_node_was_down(
        postgres_url: str, then: str) -> None:
    """As for a workflow's link above, for a link made by a linked spawn of t's id: its
    journal kept no time of the link, and w's resume made the link again to the attempt
    that ran then: w never heard the LINK_DOWN of the failure of the attempt it had
    linked to (or heard the retried attempt's). It hears that failure, once (and, as
    t's spawner, its EXIT)."""
    async with garrison.open_node(store=postgres_url, name="a", lease="5s") as a:
        t = await _watched_by_w_then_retried(
            a, postgres_url, then, lambda _t: (spawn_linking_watcher, "t"))
        async with garrison.open_node(store=postgres_url, name="b", lease="5s") as b:
            def link_downs() -> list[list[object]]:
                return [e for e in b.workflow("w").state("heard") or []
                        if e[0] == "LINK_DOWN"]

            await _until(lambda: bool(link_downs()), "w's LINK_DOWN")
            await trio.sleep(0.5)
            assert link_downs() == [["LINK_DOWN", str(t), "RuntimeError", FAIL1]]
            if then == "runs":
                await a.workflow("t").signal("fail2")
                with pytest.raises(garrison.WorkflowFailed, match="fail2"):
                    with trio.fail_after(20):
                        await a.workflow("t").result()
                await trio.sleep(0.5)
                assert link_downs() == [["LINK_DOWN", str(t), "RuntimeError", FAIL1]]
