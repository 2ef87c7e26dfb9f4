"""Operations on the workflows of a cluster from any node (found by an adversarial
review of the cluster with its operations): ``handle.retry()`` from a node that does
not own the workflow, or after its owner left; a drain whose last workflow ends by a
terminate; ``handle.terminate()`` of a workflow that moves away meanwhile; ``garrison
nodes drain`` of a node that is gone."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from harness import Look

import garrison
from garrison import workflow
from garrison._context import current_workflow
from garrison.persistence import RawJson, Transaction, open_store

FIXED = {"on": False}


@garrison.activity()
async def op_a(x: int) -> int:
    return x


@garrison.activity()
async def op_b(x: int) -> int:
    return x + 100


async def fixable() -> int:
    """Blocked while FIXED is off (its journal records op_a, the code calls op_b)."""
    if FIXED["on"]:
        got = await op_a(1)
    else:
        got = await op_b(1)
    await workflow.sleep(0.05)
    return got


async def fixable_then_waits() -> int:
    """As ``fixable``, then waits for a promise."""
    got = await (op_a(1) if FIXED["on"] else op_b(1))
    return got + int(await workflow.promise("go"))


async def sleepy(n: int, seconds: float) -> int:
    for _ in range(n):
        await workflow.sleep(seconds)
    return n


def _create_blocked(url: str, wid: str) -> None:
    with open_store(url, lock=False) as tool:
        tool.write(Transaction().create_workflow(wid, f"{__name__}:fixable", [])
                   .append_journal(wid, 1, "activity", f"{__name__}:op_a",
                                   RawJson('{"ok": 1}')))


async def _until(check, what: str, timeout: float = 10.0) -> None:
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


def _tried(node: garrison.Node, wid: str) -> bool:
    """Whether ``node``'s code blocked the workflow ``wid`` (and gave it up)."""
    return any(run[0] == wid for run in node._members[0]._blocked)


async def test_retry_from_another_node_of_a_workflow_blocked_on_its_owner(
        postgres_url: str) -> None:
    """A workflow blocked on nodes a and b (each gave it up), retried from node b's
    handle once the fix is deployed: it must run again (on some node) and complete."""
    FIXED["on"] = False
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        _create_blocked(postgres_url, "x")
        await _until(lambda: _tried(a, "x") and _tried(b, "x"), "blocked on a and b")
        FIXED["on"] = True
        await b.workflow("x").retry()
        with trio.fail_after(10):
            assert await b.workflow("x").result() == 1


async def test_a_blocked_workflow_claimed_by_a_node_with_its_code_loses_its_error(
        postgres_url: str) -> None:
    """Blocked on node a, given up by a, resumed by node b whose code takes its
    recorded path: its row kept the NonDeterminismError while it ran on b (status
    ``waiting`` with that error). Running again, it has none."""
    FIXED["on"] = False
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
        with open_store(postgres_url, lock=False) as tool:
            tool.write(Transaction().create_workflow("y", f"{__name__}:fixable_then_waits",
                                                     [])
                       .append_journal("y", 1, "activity", f"{__name__}:op_a",
                                       RawJson('{"ok": 1}')))
        await _until(lambda: _tried(a, "y"), "blocked on a")
        FIXED["on"] = True
        async with garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
            store = b.hosts["workflows"].store
            await _until(lambda: "y" in b.hosts["workflows"].active
                         and store.get_workflow("y").status == "waiting", "waiting on b")
            assert store.get_workflow("y").error is None
            await b.workflow("y").promise("go").resolve(1)
            with trio.fail_after(10):
                assert await b.workflow("y").result() == 2


async def test_terminate_from_b_while_a_drains(postgres_url: str) -> None:
    """Node a drains while node b terminates a's parked workflows: every terminate
    returns, every workflow ends terminated, and a's drain finishes (it hung, in about
    half the rounds, when the last workflow left a by its terminated end rather than by
    a hand-over: nothing woke the draining member to see ``active`` empty)."""
    for rnd in range(4):
        async with garrison.open_node(store=postgres_url, name=f"a{rnd}", lease="30s") as a, \
                garrison.open_node(store=postgres_url, name=f"b{rnd}", lease="30s") as b:
            ids = [f"r{rnd}w{i}" for i in range(5)]
            for wid in ids:
                await a.start_workflow(sleepy, 1000, 0.03, id=wid)
            await trio.sleep(0.2)
            a.drain()
            # (a terminate racing the hand-over was lost once in a few hundred: the
            # node handing it over committed the request's consume with its records,
            # without its end; the next node ran the workflow on, to its own end)
            with trio.fail_after(30):
                async with trio.open_nursery() as n:
                    for wid in ids:
                        n.start_soon(b.workflow(wid).terminate, "stop")
            look = Look(postgres_url)
            try:
                assert all(look.statuses()[w] == "failed" for w in ids)
            finally:
                look.close()
            with trio.fail_after(5):  # (each leaves as its task ends)
                while a.hosts["workflows"].active:
                    await trio.sleep(0.02)
            with trio.move_on_after(5):
                await a.drained()
            assert a._members[0].drained.is_set(), f"round {rnd}: a's drain never finished"


async def test_nodes_drain_of_a_node_whose_lease_lapsed_says_no_live_node(
        postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`garrison nodes drain NAME` of a node that is gone (its lease lapsed, no live node
    marked it lost yet): exit 1 'no live node', not 'draining ghost'."""
    from garrison._cli import build_parser

    async with garrison.open_node(store=postgres_url, name="z", lease="30s"):
        pass
    look = Look(postgres_url)
    try:
        # a node that died without leaving: its row active, its lease long gone
        look.store._query("INSERT INTO garrison.nodes (epoch, name, status, started, "
                          "heartbeat, lease, lease_until) SELECT epoch + 1000, 'ghost', 'active', "
                          "started, heartbeat - 100, lease, lease_until - 100 FROM garrison.nodes "
                          "WHERE name = 'z' RETURNING 1")
    finally:
        look.close()
    args = build_parser().parse_args(["nodes", "--store", postgres_url, "drain", "ghost"])
    code = await trio.to_thread.run_sync(args.func, args)
    out = capsys.readouterr()
    assert code == 1, out


@garrison.activity()
async def op_slow(seconds: float) -> str:
    await trio.sleep(seconds)
    return "slow"


async def in_activity(seconds: float) -> str:
    return await op_slow(seconds)


@pytest.mark.parametrize("moves", ["drain", "lapse"])
async def test_local_terminate_of_a_workflow_moving_away_returns_instead_of_raising(
        postgres_url: str, moves: str) -> None:
    """``a.workflow(w).terminate()`` while a hands w over (a drains, or its lease
    lapses) and w is inside an activity: the terminate is applied (w ends failed,
    Terminated), so the handle must return, not raise ``WorkflowMoved``."""
    async with garrison.open_node(store=postgres_url, name="a", lease="1s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="1s"):
        await a.start_workflow(in_activity, 3.0, id="w")
        await trio.sleep(0.3)
        if moves == "drain":
            a.drain()
            await trio.sleep(0.2)
        else:
            look = Look(postgres_url)
            try:
                look.lapse(a._members[0].epoch)
            finally:
                look.close()
        try:
            with trio.fail_after(8):
                await a.workflow("w").terminate("stop")
        except garrison.WorkflowMoved as exc:
            await trio.sleep(2)
            look = Look(postgres_url)
            try:
                rec = look.store.get_workflow("w")
                state = (str(rec.status), str(rec.error))
            finally:
                look.close()
            raise AssertionError(f"terminate raised {exc!r}; 2 s later the workflow is "
                                 f"{state}") from None
        look = Look(postgres_url)
        try:
            rec = look.store.get_workflow("w")
            right_after = (str(rec.status), str(rec.error))
            await trio.sleep(4)
            rec = look.store.get_workflow("w")
            later = (str(rec.status), str(rec.error))
        finally:
            look.close()
        assert right_after == ("failed", "Terminated: stop"), (
            f"terminate returned while the workflow was {right_after}; 4 s later: {later}")


FLAKY = {"fail": True}


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def op_flaky() -> str:
    if FLAKY["fail"]:
        raise RuntimeError("service missing")
    return "ok"


async def flaky_wf() -> str:
    return await op_flaky()


@pytest.mark.parametrize("a_left", [False, True], ids=["a-runs", "a-left"])
async def test_retry_from_another_node_of_a_workflow_that_failed_on_a(
        postgres_url: str, a_left: bool) -> None:
    """A workflow failed on node a; node b's handle retries it, with a still running or
    closed: it runs again and completes."""
    FLAKY["fail"] = True
    async with garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
            await a.start_workflow(flaky_wf, id="f")
            with pytest.raises(garrison.WorkflowFailed):
                with trio.fail_after(10):
                    await a.workflow("f").result()
            FLAKY["fail"] = False
            if not a_left:
                await _retried(b)
        if a_left:
            await _retried(b)


async def _retried(node: garrison.Node) -> None:
    """``node``'s handle retries workflow ``f``, which then completes."""
    await node.workflow("f").retry()
    with trio.fail_after(10):
        assert await node.workflow("f").result() == "ok"


async def test_retry_on_a_drained_node_runs_the_workflow_on_another_node(
        postgres_url: str) -> None:
    """a ran a workflow that failed, then drained (released its workflows). A retry
    from a's handle gets it run (by b: a takes no new work). (It was refused with
    WorkflowMoved, as from every node but the one still owning the row: a node's writes
    are fenced, and a retry is an operator's write, as a tool's.)"""
    FLAKY["fail"] = True
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(flaky_wf, id="f")
        with pytest.raises(garrison.WorkflowFailed):
            with trio.fail_after(10):
                await a.workflow("f").result()
        a.drain()
        with trio.fail_after(5):
            await a.drained()
        FLAKY["fail"] = False
        await a.workflow("f").retry()
        with trio.fail_after(5):
            assert await b.workflow("f").result() == "ok"


EFFECT_FIXED = {"on": False}
SIDE: list[str] = []


@garrison.activity()
async def rv_a(x: int) -> int:
    return x


@garrison.activity()
async def rv_b(x: int) -> int:
    return x + 100


@garrison.activity()
async def rv_effect(node_tag: str) -> str:
    SIDE.append(node_tag)
    return node_tag


async def fixable_effect() -> int:
    """Blocked while FIXED is off; once fixed, one effect after the replayed step."""
    got = await (rv_a(1) if EFFECT_FIXED["on"] else rv_b(1))
    await workflow.sleep(0.2)
    await rv_effect("x")
    return got


async def test_retry_from_another_node_runs_the_workflow_once(postgres_url: str) -> None:
    """A retry from node b of a workflow blocked on the live nodes a and b: the
    workflow runs on one node only (its effect once)."""
    from garrison.persistence import RawJson, Transaction

    EFFECT_FIXED["on"] = False
    SIDE.clear()
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        with open_store(postgres_url, lock=False) as tool:
            tool.write(Transaction().create_workflow("x", f"{__name__}:fixable_effect", [])
                       .append_journal("x", 1, "activity", f"{__name__}:rv_a",
                                       RawJson('{"ok": 1}')))
        await _until(lambda: _tried(a, "x") and _tried(b, "x"), "blocked on a and b")
        EFFECT_FIXED["on"] = True
        await b.workflow("x").retry()
        with trio.fail_after(10):
            assert await b.workflow("x").result() == 1
        await trio.sleep(1)
        running = [n for n, node in (("a", a), ("b", b))
                   if "x" in node.hosts["workflows"].active
                   and not node.hosts["workflows"].active["x"].done.is_set()]
    assert SIDE == ["x"], SIDE
    assert running == []



async def fails_until_fixed() -> str:
    await rv_a(1)
    if not EFFECT_FIXED["on"]:
        raise RuntimeError("not fixed")
    await workflow.sleep(0.2)
    await rv_effect("f")
    return "ok"


@pytest.mark.parametrize("from_node", ["a", "b"])
async def test_retry_of_a_failed_workflow_of_a_live_owner_runs_it_once(
        postgres_url: str, from_node: str) -> None:
    """A failed workflow whose node a is live, retried from a or b: it runs again on
    one node, its effect once, and ends."""
    EFFECT_FIXED["on"] = False
    SIDE.clear()
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="30s") as b:
        await a.start_workflow(fails_until_fixed, id="f")
        with trio.fail_after(10), pytest.raises(garrison.WorkflowFailed):
            await a.workflow("f").result()
        EFFECT_FIXED["on"] = True
        node = a if from_node == "a" else b
        await node.workflow("f").retry()
        with trio.fail_after(10):
            assert await node.workflow("f").result() == "ok"
        await trio.sleep(1)
    assert SIDE == ["f"], SIDE


# -- a rolling deploy: a workflow blocked on a node with old code -------------------------
#: the nodes (by name) that run the new release of ``audited``
NEW_RELEASE: set[str] = set()


async def audited() -> int:
    """One workflow type in two releases, by node: the new one (on the nodes named in
    NEW_RELEASE) adds an audit step behind ``workflow.version``, which the old one does
    not know: a run the new one recorded blocks on the old one."""
    node = current_workflow().host.node.public.name  # type: ignore[attr-defined]
    if workflow.version("add-audit", 1, 2 if node in NEW_RELEASE else 1) == 2:
        await op_b(0)
    return await op_a(1)


def _create_audited(url: str, wid: str) -> None:
    """A run of ``audited`` the new release recorded (version 2), drained onto the
    cluster."""
    with open_store(url, lock=False) as tool:
        tool.write(Transaction().create_workflow(wid, f"{__name__}:audited", [])
                   .append_journal(wid, 1, "version", "add-audit", RawJson("2")))


async def test_a_workflow_blocked_on_a_node_with_old_code_runs_on_a_node_with_new_code(
        postgres_url: str) -> None:
    """A rolling deploy: a run recorded by the new release blocks on node a, which runs
    the old one. a kept it, blocked and owned, as long as it lived: node b, started with
    the new release, never took it (a drain of a was the only way). a gives it up
    (owned by nobody, still blocked) and claims it no more; b claims and completes
    it."""
    NEW_RELEASE.clear()
    NEW_RELEASE.add("b")
    async with garrison.open_node(store=postgres_url, name="a", lease="30s") as a:
        look = Look(postgres_url)
        try:
            _create_audited(postgres_url, "y1")
            await _until(lambda: look.statuses().get("y1") == "blocked"
                         and look.owners().get("y1") is None, "blocked, and given up by a")
            assert "y1" not in a.hosts["workflows"].active
            async with garrison.open_node(store=postgres_url, name="b", lease="30s"):
                await _until(lambda: look.statuses()["y1"] == "completed", "b to complete it")
            assert look.result("y1") == 1
            assert [r.name for r in look.store.journal("y1")] == [
                "add-audit", f"{__name__}:op_b", f"{__name__}:op_a"]
        finally:
            look.close()


#: the nodes (by name) that run the old release of ``renamed``
OLD_RELEASE: set[str] = set()


async def renamed() -> int:
    """One workflow type in two releases, by node: the new one calls ``op_b`` where the
    old one called ``op_a`` (no ``workflow.version``): a run the old one recorded blocks
    on a node of the new one."""
    node = current_workflow().host.node.public.name  # type: ignore[attr-defined]
    return await (op_a(1) if node in OLD_RELEASE else op_b(1))


def _create_renamed(url: str, wid: str, fn: str = "renamed") -> None:
    """A run of ``renamed`` (or ``fn``, alike) the old release recorded (its first step,
    ``op_a``)."""
    with open_store(url, lock=False) as tool:
        tool.write(Transaction().create_workflow(wid, f"{__name__}:{fn}", [])
                   .append_journal(wid, 1, "activity", f"{__name__}:op_a",
                                   RawJson('{"ok": 1}')))


async def _result_as_the_old_release_joins(
        url: str, node: garrison.Node, wid: str,
        before: Callable[[], Awaitable[None]]) -> object:
    """``node``'s ``result()`` of ``wid``, called before ``before()`` runs and awaited
    until node a (the old release) has joined: the value, or the error it raised."""
    got: list[object] = []
    async with trio.open_nursery() as nursery:
        async def wait() -> None:
            try:
                got.append(await node.workflow(wid).result())
            except garrison.NonDeterminismError as exc:
                got.append(exc)

        nursery.start_soon(wait)
        await before()
        async with garrison.open_node(store=url, name="a", lease="1s"):
            with trio.fail_after(8):
                while not got:
                    await trio.sleep(0.01)
    return got[0]


async def test_result_waits_past_a_block_while_a_live_node_may_run_the_workflow(
        postgres_url: str) -> None:
    """A rolling deploy: node b (new code) blocks a run the old code recorded and gives
    it up; node a (old code) claims it and completes it. A ``result()`` waiting on b
    raised ``NonDeterminismError`` ("blocked but not running on this node") as soon as b
    recorded it ``blocked``, for a workflow that then completed: in a cluster that is
    final only once no live node claimed it for ``blocked_final_after``."""
    OLD_RELEASE.clear()
    OLD_RELEASE.add("a")
    async with garrison.open_node(store=postgres_url, name="b", lease="1s") as b, \
            garrison.open_node(store=postgres_url, name="c", lease="1s") as c:
        _create_renamed(postgres_url, "r1")  # (b and c, of the new release, block it)

        async def blocked() -> None:
            await _until(lambda: _tried(b, "r1") or _tried(c, "r1"), "a block")

        assert await _result_as_the_old_release_joins(postgres_url, b, "r1", blocked) == 1


GATE: dict[str, trio.Event] = {}


async def gated() -> int:
    """``renamed`` whose new release first waits for ``GATE["open"]``: it blocks on the
    node that runs it only when the test opens the gate (the run is that node's then)."""
    node = current_workflow().host.node.public.name  # type: ignore[attr-defined]
    if node in OLD_RELEASE:
        return await op_a(1)
    await GATE["open"].wait()
    return await op_b(1)


async def test_result_on_the_node_that_blocks_the_run_waits_for_another_to_take_it(
        postgres_url: str) -> None:
    """The caller's own node runs the workflow when it blocks (the balancer handed it a
    run of the old release): ``result()`` there raised the ``NonDeterminismError`` at
    once, from the node's own copy, though the old node then took the run over and
    completed it. It watches the store, as on any other node."""
    OLD_RELEASE.clear()
    OLD_RELEASE.add("a")
    GATE["open"] = trio.Event()
    async with garrison.open_node(store=postgres_url, name="b", lease="1s") as b, \
            garrison.open_node(store=postgres_url, name="c", lease="1s") as c:
        _create_renamed(postgres_url, "g1", "gated")
        await _until(lambda: any("g1" in n.hosts["workflows"].active for n in (b, c)),
                     "g1 to run on b or c")
        owner = b if "g1" in b.hosts["workflows"].active else c

        async def open_the_gate() -> None:
            await trio.sleep(0.05)  # (the call waits on the node's own copy)
            GATE["open"].set()

        assert await _result_as_the_old_release_joins(
            postgres_url, owner, "g1", open_the_gate) == 1


async def test_a_lone_node_s_result_of_a_run_it_blocked_raises_at_once(
        postgres_url: str) -> None:
    """A node alone in its cluster that blocked a run itself has nobody to wait for:
    its ``result()`` raises the ``NonDeterminismError`` at once, not after
    ``blocked_final_after`` (a lease and a second: 11 s for every blocked workflow of a
    lone PostgreSQL node at the default lease)."""
    OLD_RELEASE.clear()
    async with garrison.open_node(store=postgres_url, name="b", lease="1s") as b:
        b._members[0].blocked_final_after = 30.0
        _create_renamed(postgres_url, "r3")
        await _until(lambda: _tried(b, "r3"), "b to block it")
        with trio.fail_after(5), pytest.raises(garrison.NonDeterminismError,
                                               match=r"r3.*op_a"):
            await b.workflow("r3").result()


async def test_result_of_a_run_no_live_node_can_replay_raises_once_the_block_is_final(
        postgres_url: str) -> None:
    """Where no live node's code can replay the run, ``result()`` still raises the
    ``NonDeterminismError`` that blocks it, once ``blocked_final_after`` passed with the
    workflow claimed by no live node; at once if it was blocked that long before."""
    OLD_RELEASE.clear()
    async with garrison.open_node(store=postgres_url, name="b", lease="1s") as b, \
            garrison.open_node(store=postgres_url, name="c", lease="1s") as c:
        b._members[0].blocked_final_after = 0.3
        _create_renamed(postgres_url, "r2")
        await _until(lambda: _tried(b, "r2") or _tried(c, "r2"), "a block")
        started = time.monotonic()
        with trio.fail_after(5), pytest.raises(garrison.NonDeterminismError,
                                               match=r"r2.*op_a"):
            await b.workflow("r2").result()
        assert time.monotonic() - started >= 0.3
        # blocked long before a wait (over blocked_final_after ago): final at once
        started = time.monotonic()
        with trio.fail_after(5), pytest.raises(garrison.NonDeterminismError,
                                               match=r"r2.*op_a"):
            await b.workflow("r2").result()
        assert time.monotonic() - started < 0.25


async def test_a_run_no_live_node_can_replay_is_tried_once_by_each_and_stays_blocked(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Every live node has the old code: each claims the workflow once, blocks it and
    gives it up; then it stays ``blocked``, owned by nobody, claimed no more (no loop,
    one error line per node). A retry (a new attempt) lets each try once again; a node
    started with the new code runs it."""
    import logging

    from garrison.persistence._pg_cluster import PgCluster

    claims: list[tuple[str | None, int]] = []
    claim = PgCluster.claim

    def counted(self: PgCluster, *args: object, **kwargs: object) -> list[object]:
        got = claim(self, *args, **kwargs)  # type: ignore[arg-type]
        claims.extend((self.name, r.attempt) for r in got if r.workflow_id == "y2")
        return got  # type: ignore[return-value]

    monkeypatch.setattr(PgCluster, "claim", counted)
    caplog.set_level(logging.INFO, logger="garrison")
    NEW_RELEASE.clear()
    NEW_RELEASE.add("c")
    async with garrison.open_node(store=postgres_url, name="a", lease="1s") as a, \
            garrison.open_node(store=postgres_url, name="b", lease="1s") as b:
        look = Look(postgres_url)
        try:
            _create_audited(postgres_url, "y2")
            for attempt in (1, 2):
                tries = [(n, k) for n in "ab" for k in range(1, attempt + 1)]
                await _until(lambda: sorted(claims) == tries,  # noqa: B023
                             f"a and b to try attempt {attempt}")
                await _until(lambda: look.owners()["y2"] is None, "given up")
                await trio.sleep(0.5)  # rounds of both: neither claims it again
                assert len(claims) == 2 * attempt, claims
                record = look.store.get_workflow("y2")
                assert (record.status, record.attempt) == ("blocked", attempt)
                assert "add-audit" in str(record.error)
                assert look.owners() == {"y2": None}
                assert all("y2" not in n.hosts["workflows"].active for n in (a, b))
                if attempt == 1:
                    assert "replay" in await a.workflow("y2").retry()
            errors = [r for r in caplog.records
                      if r.getMessage().startswith("workflow y2 is blocked")]
            assert len(errors) == 4, [r.getMessage() for r in errors]
            async with garrison.open_node(store=postgres_url, name="c", lease="1s"):
                await _until(lambda: look.statuses()["y2"] == "completed", "c to run it")
            assert look.result("y2") == 1
        finally:
            look.close()


async def test_a_stale_terminate_of_a_run_a_node_blocked_is_consumed_by_one_claim(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminate of an earlier attempt asks nothing of a workflow: a node whose code
    blocked the workflow's run, claiming it for that row, consumes the row and leaves
    the workflow blocked and unowned, as for a name it refuses (not run again, blocked
    again and given up, every round)."""
    from garrison.persistence._pg_cluster import PgCluster

    claims: list[str] = []
    claim = PgCluster.claim

    def counted(self: PgCluster, *args: object, **kwargs: object) -> list[object]:
        got = claim(self, *args, **kwargs)  # type: ignore[arg-type]
        claims.extend(r.workflow_id for r in got)
        return got  # type: ignore[return-value]

    monkeypatch.setattr(PgCluster, "claim", counted)
    NEW_RELEASE.clear()
    async with garrison.open_node(store=postgres_url, name="a", lease="1s") as a:
        look = Look(postgres_url)
        try:
            _create_audited(postgres_url, "y3")
            await _until(lambda: _tried(a, "y3") and look.owners() == {"y3": None},
                         "blocked, and given up by a")
            look.store.write(Transaction().deliver(
                "y3", "terminate", {"terminate": {"type": "Terminated", "message": "old"},
                                    "attempt": 0}, kind="control", msg_id="stale"))
            a._members[0].poke()
            await _until(lambda: not look.store.pending_messages("y3")
                         and look.owners() == {"y3": None}, "the row consumed")
            await trio.sleep(0.5)  # rounds: a claims it no more
            assert claims == ["y3"]  # its first run only (the row: consumed by the claim)
            assert look.statuses() == {"y3": "blocked"}
            assert [r.name for r in look.store.journal("y3")] == ["add-audit"]
        finally:
            look.close()


async def renamed_then_waits() -> int:
    """``renamed``, then waits for a promise: a run of the old release parks, one a node
    of the new release replays blocks."""
    node = current_workflow().host.node.public.name  # type: ignore[attr-defined]
    got = await (op_a(1) if node in OLD_RELEASE else op_b(1))
    return got + int(await workflow.promise("go"))


async def test_a_node_that_blocked_a_name_is_handed_no_more_of_it_to_even_the_load(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A rolling deploy: node a (the old release) took over 8 waiting runs of a workflow
    whose code the new release changed; node b (the new release, with none) joins. a
    hands 4 to b to even the load: b blocks each and gives it up, a claims them back.
    At its next looks a handed b the other 4, blocked there too (a replay and an error
    line each: hundreds in a real cluster), as b's row said nothing of it. It says the
    names it blocked now, and a hands b no more of that name."""
    import logging

    from garrison.cluster import _member

    monkeypatch.setattr(_member, "BALANCE_LEASES", 0.25)  # a look every 0.25 s
    monkeypatch.setattr(_member, "BALANCE_MIN", 0.25)
    caplog.set_level(logging.INFO, logger="garrison")
    OLD_RELEASE.clear()
    OLD_RELEASE.add("a")
    ids = [f"s{i}" for i in range(8)]
    async with garrison.open_node(store=postgres_url, name="a", lease="1s") as a:
        host_a = a.hosts["workflows"]
        for wid in ids:  # (claimed, taken over: a may hand them on)
            _create_renamed(postgres_url, wid, "renamed_then_waits")
        await _until(lambda: len(host_a.active) == 8, "a to claim them")
        async with garrison.open_node(store=postgres_url, name="b", lease="1s") as b:
            await _until(lambda: sum(_tried(b, wid) for wid in ids) >= 4, "b to block 4")
            await _until(lambda: len(host_a.active) == 8, "a to claim them back")
            await trio.sleep(1)  # four more looks of a
            blocked = [r.getMessage() for r in caplog.records
                       if r.getMessage().startswith("workflow s")
                       and " is blocked" in r.getMessage()]
            assert len(blocked) == 4, blocked
            assert sum(_tried(b, wid) for wid in ids) == 4
            assert a.stats()["cluster"]["workflows"]["balanced"] == 4
        for wid in ids:  # all of them run on a, as recorded
            await a.workflow(wid).promise("go").resolve(1)
        with trio.fail_after(10):
            for wid in ids:
                assert await a.workflow(wid).result() == 2


def test_the_names_of_blocked_runs_are_said_for_a_while_not_until_a_restart() -> None:
    """A node says the names of runs it blocked (the balancer hands it no more of them)
    for ``BLOCKED_NAME_SAID`` seconds: after a rolling deploy the new release's nodes
    get runs of those names from the balancer again (they said them until a restart)."""
    from garrison.cluster._member import BLOCKED_NAME_SAID, recent

    names = {"app:old": 0.0, "app:other": 100.0}
    assert recent(names, 50.0 - BLOCKED_NAME_SAID) == ["app:old", "app:other"]
    assert recent(names, 50.0) == ["app:other"] and names == {"app:other": 100.0}
    assert recent(names, 100.0) == ["app:other"]  # (at its time: still said)
    assert recent(names, 100.5) == [] and names == {}
