"""Replay mode: ``garrison workflows replay`` / ``export`` and ``garrison.testing.replay``.

A store's (or an exported history's) journals replayed against the code installed
now, with no effects, up to the end of each journal."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import ops_app
import pytest
import trio

import garrison
import garrison.testing
from garrison import workflow
from garrison.hosts.workflow import History, replay_history
from garrison.hosts.workflow._replay import ReplayNode, ReplayRefused
from garrison.persistence import RawJson, SQLiteStore, Transaction

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(autouse=True)
def _reset() -> None:
    ops_app.LOG.clear()
    ops_app.FAILS.clear()


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "garrison", "workflows", *args], cwd=cwd,
                          text=True, capture_output=True, timeout=60)


def cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from garrison._cli import build_parser

    parsed = build_parser().parse_args(["workflows", *args])
    code = parsed.func(parsed)
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SHOP_V1 = '''
    import trio
    import garrison
    from garrison import process

    @garrison.activity
    async def reserve(item: str) -> str:
        return f"res-{item}"

    @garrison.activity
    async def charge(item: str) -> str:
        if item == "bad":
            raise PermissionError("card declined")
        return f"pay-{item}"

    @garrison.activity
    async def hang() -> None:
        await trio.sleep_forever()

    async def order(item: str) -> str:
        reservation = await reserve(item)
        payment = await charge(item)
        msg = await process.inbox().receive()
        return f"{reservation} {payment} {msg.topic}"

    async def stuck() -> None:
        await reserve("x")
        await hang()
'''


async def test_replay_cli_passes_unchanged_code_and_catches_a_renamed_activity(
        tmp_path: Path, autojump_clock: Any) -> None:
    """Workflows of every kind (running, waiting, blocked, completed, failed) in a
    store; the CLI replays them against the code on disk: unchanged code is ok (exit
    0), a deploy that renames an activity is caught (exit 1) with the workflow, the
    position and both names."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "shop.py").write_text(textwrap.dedent(SHOP_V1))
    sys.path.insert(0, str(code))
    store = str(tmp_path / "shop.db")
    try:
        import shop  # type: ignore[import-not-found]

        async with garrison.open_node(store=store) as node:
            await node.start_workflow(shop.order, "book", id="waiting-1")
            await node.start_workflow(shop.order, "lamp", id="done-1")
            await node.start_workflow(shop.order, "bad", id="failed-1")
            await node.start_workflow(shop.stuck, id="running-1")
            await trio.sleep(1)
            await node.workflow("done-1").signal("ship")
            assert await node.workflow("done-1").result() == "res-lamp pay-lamp ship"
            with pytest.raises(garrison.WorkflowFailed):
                await node.workflow("failed-1").result()
            assert node.workflow("waiting-1").status() == "waiting"
        with SQLiteStore(store) as s:  # one recorded by code that called another activity
            s.write(Transaction().create_workflow("blocked-1", "shop:order", ["cup"],
                                                  status="blocked")
                    .append_journal("blocked-1", 1, "activity", "shop:reserve_v0",
                                    RawJson('{"ok": "r"}')))
            assert s.get_workflow("running-1").status == "running"
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("shop", None)

    ok = cli("--store", store, "replay", "--module", str(code), "--status",
             "running,waiting,completed,failed")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = dict(line.split(None, 1) for line in ok.stdout.splitlines()[:-1])
    assert set(lines) == {"waiting-1", "done-1", "failed-1", "running-1"}
    assert all(text.startswith("ok (") for text in lines.values()), ok.stdout
    assert "the code returned" in lines["done-1"]
    assert lines["failed-1"].endswith(  # (as its retry resumes it)
        "goes on with activity 'shop:charge' (live work); a retry takes back its last "
        "record, the final error of activity 'shop:charge' (seq 2), and runs the code again "
        "from there)")
    assert "goes on with receive 'inbox'" in lines["waiting-1"]
    assert "goes on with activity 'shop:hang'" in lines["running-1"]
    assert ok.stdout.splitlines()[-1] == "4 workflow(s) replayed: 4 ok, 0 differ"

    blocked = cli("--store", store, "replay", "--module", str(code))  # unfinished ones
    assert blocked.returncode == 1
    assert "blocked-1  NonDeterminismError: workflow 'blocked-1' diverged from its journal " \
           "at seq 1: the journal records activity 'shop:reserve_v0', but the code now did " \
           f"activity 'shop:reserve' (File \"{code / 'shop.py'}\", line " in blocked.stdout
    assert ", in order). Nothing was changed (a dry run); a node running this " \
           "code would block the workflow when it replays it: keep the recorded path for " \
           "workflows started before the change (branch with workflow.version), or deploy " \
           "the change once they have finished" in blocked.stdout
    assert "restart a node" not in blocked.stdout  # a replay blocks nothing
    assert "1 of 3 workflow(s) differ from their journal: blocked-1" in blocked.stderr

    # the deploy: charge is renamed
    (code / "shop.py").write_text(textwrap.dedent(SHOP_V1).replace("def charge", "def bill")
                                  .replace("await charge(", "await bill("))
    changed = cli("--store", store, "replay", "--module", str(code), "--all", "--json")
    assert changed.returncode == 1
    results = {r["workflow_id"]: r for r in json.loads(changed.stdout)}
    assert results["running-1"]["ok"]
    # (failed by charge's final error, its last record: a retry takes that back and runs
    # bill there, as the replay of a failed workflow says)
    assert results["failed-1"]["ok"] and "goes on with activity 'shop:bill' (live work); " \
        "a retry takes back its last record" in results["failed-1"]["ending"]
    for wid in ("waiting-1", "done-1"):
        err = results[wid]["error"]
        assert results[wid]["ok"] is False and err["seq"] == 2
        assert err["recorded"] == "activity 'shop:charge'"
        assert err["current"] == "activity 'shop:bill'"
        assert f"workflow {wid!r} diverged from its journal at seq 2" in err["message"]

    # a workflow function renamed or removed, in a module that still imports, is a
    # difference of that workflow (a node blocks it), and the others are replayed
    # (helper-216: a setup error, exit 2, "run from the application's folder")
    (code / "shop.py").write_text(textwrap.dedent(SHOP_V1).replace("def stuck", "def waits"))
    gone = cli("--store", store, "replay", "--module", str(code), "--all", "--json")
    assert gone.returncode == 1, gone.stderr
    results = {r["workflow_id"]: r for r in json.loads(gone.stdout)}
    assert results["done-1"]["ok"] and results["waiting-1"]["ok"], gone.stdout
    err = results["running-1"]["error"]
    assert results["running-1"]["ok"] is False and err["seq"] is None
    assert err["recorded"] == "shop:stuck" and err["current"] is None
    assert err["message"] == (
        "workflow 'running-1' runs 'shop:stuck', which its module no longer has "
        "(AttributeError: module 'shop' has no attribute 'stuck'): renamed or removed? A "
        "node running this code blocks the workflow; keep the function under its name "
        "for workflows started before the change")
    assert results["running-1"]["checked"] == 0
    (code / "shop.py").write_text(textwrap.dedent(SHOP_V1))

    # code that cannot be found (the wrong folder, no --module) is not a difference
    lost = cli("--store", store, "replay", "--id", "done-1")
    assert lost.returncode == 2 and lost.stdout == "", lost.stdout
    assert "cannot import 'shop:order', the code of workflow 'done-1': " \
           "ModuleNotFoundError: No module named 'shop'; run from the application's folder " \
           "or pass --module PATH" in lost.stderr, lost.stderr
    both = cli("--store", store, "replay", "--module", str(code), "--id", "done-1", "--all")
    assert both.returncode == 2 and "cannot be combined with --all" in both.stderr
    # a mistyped --id is bad input (2), never taken for a workflow that differs (1)
    typo = cli("--store", store, "replay", "--module", str(code), "--id", "done-1",
               "--id", "done-2")
    assert typo.returncode == 2 and typo.stdout == "", typo.stdout
    assert f"no workflow 'done-2' in {store}" in typo.stderr, typo.stderr
    # an id given twice is replayed once
    twice = cli("--store", store, "replay", "--module", str(code), "--id", "done-1",
                "--id", "done-1", "--json")
    assert [r["workflow_id"] for r in json.loads(twice.stdout)] == ["done-1"], twice.stdout


def _flow_made_sync(item: str) -> str:  # a workflow function changed to a plain def
    return item


def test_replay_cli_says_a_workflow_function_made_sync_is_no_workflow_function(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The recorded function is now a sync def: the replay refuses it (a TypeError, as
    for a wrong target) and the CLI reports that workflow as differing in those words,
    as a function renamed away, not as "diverged at seq 1 ... raise TypeError: object
    str can't be used in 'await' expression"."""
    store = str(tmp_path / "s.db")
    with SQLiteStore(store) as s:
        s.write(Transaction().create_workflow("w", f"{__name__}:_flow_made_sync", ["x"])
                .append_journal("w", 1, "activity", "ops_app:reserve", RawJson('{"ok": "r"}')))
    code, out, err = cli_here(capsys, "--store", store, "replay", "--id", "w", "--json")
    assert code == 1, err
    [result] = json.loads(out)
    assert result["ending"] == "its code is no workflow function" and result["checked"] == 0
    assert result["error"]["message"] == (
        f"workflow 'w' runs '{__name__}:_flow_made_sync', which is no workflow function "
        "now: a workflow function is an async function (async def). A node running this "
        "code blocks the workflow; keep the function under its name for workflows started "
        "before the change")
    assert result["error"]["seq"] is None


async def test_replay_never_writes_the_store_file(tmp_path: Path, autojump_clock: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A copy of a live store (its -wal holding transactions not yet in the file) is
    replayed and exported: neither file changes by a byte, and the replay sees the
    transactions in the -wal."""
    live = tmp_path / "live.db"
    copy = tmp_path / "copy.db"
    async with garrison.open_node(store=str(live)) as node:
        await node.start_workflow(ops_app.order, "book", id="o-1")
        await trio.sleep(1)
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{live}{suffix}", f"{copy}{suffix}")
    assert Path(f"{copy}-wal").stat().st_size > 0
    before = digest(copy), digest(Path(f"{copy}-wal"))

    def replay_and_export() -> tuple[int, str, int, str]:
        code, out, _err = cli_here(capsys, "--store", str(copy), "replay")
        exp_code, exp_out, _ = cli_here(capsys, "--store", str(copy), "export", "o-1")
        return code, out, exp_code, exp_out

    code, out, exp_code, exported = await trio.to_thread.run_sync(replay_and_export)
    assert code == 0 and out.startswith("o-1  ok (2 of 2 records replayed"), out
    assert exp_code == 0 and json.loads(exported)["workflow_id"] == "o-1"
    assert (digest(copy), digest(Path(f"{copy}-wal"))) == before
    assert ops_app.LOG == [("reserve", "book"), ("charge", "book")]  # nothing ran again

    # what a tool opening the copy for writing would have done: SQLite moves the -wal
    # into the file when the last connection closes
    SQLiteStore(str(copy), lock=False).close()
    assert digest(copy) != before[0]


async def test_a_replay_has_no_effects_and_goes_past_an_abandoned_activity(
        autojump_clock: Any) -> None:
    """A workflow that sent a message, spawned a child and abandoned an activity
    replays to its end: nothing is sent, spawned, run or written (the replay's node
    refuses every effect)."""
    received: list[Any] = []

    async def listener() -> None:
        from garrison import process

        process.register("listener")
        async for msg in process.inbox():
            received.append(msg.payload)

    async with garrison.open_node() as node:
        await node.spawn(listener)
        await trio.sleep(0.1)
        await node.start_workflow(ops_app.side_effects, "listener", id="fx")
        assert (await node.workflow("fx").result()).startswith("done workflows/fx.")
        store = node.hosts["workflows"].store
        history = History.from_store(store, "fx")
        journal_before = store.journal("fx")
    assert received == [{"from": "side_effects"}]
    assert [r.seq for r in journal_before] == [1, 2, 4, 5, 6, 7]  # seq 3: abandoned
    log_before = list(ops_app.LOG)

    result = await replay_history(history)
    assert result.ok, result
    assert (result.records, result.checked, result.ending) == (6, 6, "the code returned")
    assert log_before == ops_app.LOG
    assert received == [{"from": "side_effects"}]

    with pytest.raises(ReplayRefused, match="replay mode refused a node operation"):
        ReplayNode().send_message  # noqa: B018  (any effect is refused)


async def test_history_of_a_finished_workflow_says_a_gap_never_finished(
        tmp_path: Path, autojump_clock: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """helper-224: the seq of an activity that lost a first() was "still running, or it
    raised before it was recorded" in the history of a completed workflow."""
    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.start_workflow(ops_app.side_effects_quiet, id="q")
        assert (await node.workflow("q").result()).startswith("done")
    code, out, _err = await trio.to_thread.run_sync(
        lambda: cli_here(capsys, "--store", db, "history", "q"))
    assert code == 0, out
    gap = next(line for line in out.splitlines() if line.startswith("2 "))
    assert "never finished (lost a first(), or not awaited)" in gap, out
    assert "still running" not in out, out


async def test_replay_stops_at_the_end_of_the_journal_and_catches_code_that_ends_early(
        autojump_clock: Any) -> None:
    async with garrison.open_node() as node:
        await node.start_workflow(ops_app.order, "pen", id="w")
        await trio.sleep(1)
        store = node.hosts["workflows"].store
        waiting = History.from_store(store, "w")
        await node.workflow("w").signal("ship")
        await node.workflow("w").result()
        done = History.from_store(store, "w")

    result = await replay_history(waiting)
    assert result.ok and result.status == "waiting"
    assert str(result) == ("ok (2 of 2 records replayed; the journal ends where the code "
                           "goes on with receive 'inbox' (live work))")

    async def order_without_charge(item: str) -> str:
        return await ops_app.reserve(item)

    short = await replay_history(done, order_without_charge)
    assert not short.ok and short.error is not None
    assert short.error.seq == 2 and short.error.recorded == "activity 'ops_app:charge'"
    assert short.error.current == "nothing (the workflow function returned)"
    assert ops_app.LOG == [("reserve", "pen"), ("charge", "pen")]


def test_a_replay_stopping_at_a_gap_in_its_journal_is_no_divergence() -> None:
    """The replay's own stop (a BaseException through the workflow code) is not the code
    raising: it was taken for one once any BaseException failed only its workflow (a
    review of that change), and a replay stopping at a gap said NonDeterminismError."""
    from garrison import workflow

    async def started_then_charged(item: str) -> str:
        started = workflow.start(ops_app.reserve, item)  # seq 1: under way, unrecorded
        await ops_app.charge(item)  # seq 2
        reservation = await started  # waits for seq 1: the replay stops here
        return reservation + await ops_app.reserve("more")  # seq 3

    history = History.from_json({"name": "ops_app:order", "input": ["x"], "journal": [
        {"seq": 2, "kind": "activity", "name": "ops_app:charge", "outcome": {"ok": "p"}},
        {"seq": 3, "kind": "activity", "name": "ops_app:reserve", "outcome": {"ok": "r"}}]})
    result = trio.run(replay_history, history, started_then_charged)
    assert result.ok, str(result)
    assert "could not be checked" in result.ending


async def test_export_then_replay_the_file_in_a_test(
        tmp_path: Path, autojump_clock: Any, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(ops_app.reminders, 5, id="r-1")
        await trio.sleep(2.5 * 86400)
        await node.workflow("r-1").promise("approval").resolve("ann")
        assert await node.workflow("r-1").result() == "approved by ann on day 3"

    code, out, _err = await trio.to_thread.run_sync(
        lambda: cli_here(capsys, "--store", store, "export", "r-1"))
    assert code == 0
    data = json.loads(out)
    assert data["format"] == "garrison-history/1" and data["name"] == "ops_app:reminders"
    assert data["status"] == "completed" and data["input"] == [5]
    assert [r["kind"] for r in data["journal"]][:3] == ["promise", "timer", "first"]
    path = tmp_path / "r-1.json"
    path.write_text(out)
    # --json (standard JSON, a NaN as "NaN") would not be the history the code saw
    code, out, err = await trio.to_thread.run_sync(
        lambda: cli_here(capsys, "--store", store, "export", "r-1", "--json"))
    assert (code, out) == (2, "") and "is not for export" in err

    result = garrison.testing.replay(path)  # from a trio test: a thread of its own
    assert result.ok and result.checked == result.records == len(data["journal"])
    assert garrison.testing.replay(data).ok  # parsed JSON too

    async def reminders_v2(days: int) -> str:
        approval = garrison.workflow.promise("approval")
        await garrison.workflow.sleep("1d")  # a sleep where a timer was recorded
        return str(await approval)

    with pytest.raises(garrison.NonDeterminismError) as info:
        garrison.testing.replay(path, target=reminders_v2)
    assert info.value.seq == 2 and info.value.recorded == "timer"
    assert info.value.current == "sleep"
    assert ops_app.LOG.count(("remind", 1)) == 1  # the replays ran no activity
    # the failure points at the test, not into garrison's engine (pytest printed each
    # of its frames with their source around the one line that matters)
    import traceback

    frames = [f.filename for f in traceback.extract_tb(info.tb)]
    assert not any("/garrison/hosts/" in f for f in frames), frames


async def napper() -> str:
    await garrison.workflow.sleep("1h")
    return "slept"


async def napper_now_first() -> str:  # a step moved before the sleep
    garrison.workflow.now()
    await garrison.workflow.sleep("1h")
    return "slept"


async def napper_receives() -> str:  # the sleep became a receive with a timeout
    return str(await garrison.process.inbox().receive(timeout="1h"))


async def napper_gone() -> str:  # the sleep was removed
    return "no nap"


async def napper_raises() -> str:  # new code fails where the first run went on
    raise ValueError("new code fails here")


async def napper_versioned() -> str:  # the change made right, behind a version gate
    if garrison.workflow.version("no-nap", 1, 2) == 1:
        await garrison.workflow.sleep("1h")
        return "slept"
    return "no nap"


async def test_a_replay_checks_a_sleep_under_way_as_a_node_does(
        tmp_path: Path, autojump_clock: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sleep under way when the store was read is a timer row, not a journal record:
    the replay loads the timers as a node resuming the workflow does, so code that does
    something else at its seq, or returns before it, differs (it said ok, and the node
    then blocked the workflow)."""
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(napper, id="z")
        while node.workflow("z").status() != "sleeping":
            await trio.sleep(0.001)
    with SQLiteStore(store, readonly=True) as s:
        history = History.from_store(s, "z")
    assert history.records == 0 and list(history.timers) == [1]
    assert history.timers[1][1] == "sleep"
    same = await replay_history(history)
    assert same.ok and same.ending == ("the journal ends where the code goes on with "
                                       "workflow.sleep() (live work)")
    assert (await replay_history(history, napper_versioned)).ok  # the old path: the sleep
    for changed, current in ((napper_now_first, "now"),
                             (napper_receives, "receive 'inbox'"),
                             (napper_gone, "nothing (the workflow function returned)"),
                             (napper_raises, "raise ValueError: new code fails here")):
        result = await replay_history(history, changed)
        assert result.error is not None, changed
        assert result.error.seq == 1 and result.error.recorded == "timer 'a sleep under way'"
        assert result.error.current == current
    # an exported history keeps its timers
    exported = History.from_json(json.loads(json.dumps(history.to_json())))
    assert exported.timers.keys() == {1} and exported.timers[1][1] == "sleep"
    assert (await replay_history(exported, napper_gone)).error is not None

    monkeypatch.setitem(globals(), "napper", napper_receives)  # the deploy
    code, out, _err = await trio.to_thread.run_sync(
        lambda: cli_here(capsys, "--store", store, "replay", "--id", "z"))
    assert code == 1, out
    assert "diverged from its journal at seq 1: the journal records timer 'a sleep under " \
           "way', but the code now did receive 'inbox'" in out


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.json")))
def test_golden_histories_replay_with_garrison_testing(name: str) -> None:
    """The golden journals of tests/golden, replayed the way a user keeps them."""
    result = garrison.testing.replay(GOLDEN / f"{name}.json")
    assert result.ok and result.checked == result.records > 0


def test_a_history_that_is_not_one_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json' is not JSON"):
        garrison.testing.replay(bad)
    with pytest.raises(ValueError, match="cannot read it"):
        garrison.testing.replay(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"^history path is empty: give the path of the file"):
        garrison.testing.replay("")  # was "history '.': cannot read it: Is a directory"
    with pytest.raises(ValueError, match="timer 0 needs an integer 'seq', a 'deadline'"):
        garrison.testing.replay({"name": "ops_app:order", "journal": [],
                                 "timers": [{"seq": 1, "kind": "nap", "deadline": 5}]})
    with pytest.raises(ValueError, match="'name' must be the workflow's module:qualname"):
        garrison.testing.replay({"journal": []})
    with pytest.raises(ValueError, match="journal record 0 needs an integer 'seq'"):
        garrison.testing.replay({"name": "ops_app:order", "journal": [{"seq": "1"}]})
    # a byte that is not UTF-8 (was a bare UnicodeDecodeError, no file named)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b'{"name": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"bin\.json' is not JSON: its byte 10 is not UTF-8"):
        garrison.testing.replay(binary)
    # an outcome of the wrong shape: it replayed ok=True, the code "raising" a TypeError
    # or KeyError of garrison's own reading of it
    for kind, outcome in (("activity", 5), ("activity", {"weird": 1}), ("sleep", {}),
                          ("timer", {"deadline": "soon"}), ("first", {"index": "0"}),
                          ("await_promise", None)):
        with pytest.raises(ValueError, match=rf"^history: journal record 0 \(seq 1, {kind}\): "
                           r"'outcome' must be \{"):
            garrison.testing.replay({"name": "ops_app:order", "journal": [
                {"seq": 1, "kind": kind, "name": "x", "outcome": outcome}]})
    # a kind no record has, a name that is no string: the code was blamed (a
    # NonDeterminismError: "the journal records x 'pay:give'")
    with pytest.raises(ValueError, match=r"^history: journal record 0 \(seq 1\): 'kind' "
                       r"'x' is no journal record kind \(one of activity, "):
        garrison.testing.replay({"name": "ops_app:order", "journal": [
            {"seq": 1, "kind": "x", "name": "ops_app:reserve", "outcome": {"ok": 1}}]})
    for name in (None, [], 1):
        with pytest.raises(ValueError, match=r"^history: journal record 0 \(seq 1\): "
                           r"'name' must be a string"):
            garrison.testing.replay({"name": "ops_app:order", "journal": [
                {"seq": 1, "kind": "activity", "name": name, "outcome": {"ok": 1}}]})
    # code that does not import is no divergence (it was reported as one at seq 0)
    missing = garrison.hosts.workflow.History.from_json(
        {"name": "no_such_module_here:flow", "journal": []})
    with pytest.raises(ValueError, match=r"^cannot import 'no_such_module_here:flow', the "
                       r"code of workflow 'replayed': ModuleNotFoundError"):
        trio.run(replay_history, missing)
    # a function its module (which imports) no longer has, renamed or removed, is a
    # difference, as the CLI says (it said "cannot import ... (run where the
    # application's code is importable)"); a replay target not found is a wrong target
    renamed = {"name": "ops_app:no_such_function", "journal": [
        {"seq": 1, "kind": "activity", "name": "ops_app:reserve", "outcome": {"ok": "r"}}]}
    said = ("workflow 'replayed' runs 'ops_app:no_such_function', which its module no longer "
            "has (AttributeError: module 'ops_app' has no attribute 'no_such_function'): "
            "renamed or removed? A node running this code blocks the workflow; keep the "
            "function under its name for workflows started before the change")
    with pytest.raises(garrison.NonDeterminismError) as info:
        garrison.testing.replay(renamed)
    assert str(info.value) == said and info.value.recorded == "ops_app:no_such_function"
    result = trio.run(replay_history, History.from_json(renamed))
    assert not result.ok and str(result.error) == said
    assert (result.records, result.checked, result.ending) == (1, 0, "its code is gone")
    with pytest.raises(ValueError, match=r"^cannot import replay target "
                       r"'ops_app:no_such_function': AttributeError"):
        garrison.testing.replay({"name": "ops_app:order", "journal": []},
                                "ops_app:no_such_function")


async def _nondurable(item: str) -> str:
    await ops_app.reserve(item)
    await trio.sleep(10)  # not a durable wait: the replay cannot get past it
    return await ops_app.charge(item)


@garrison.activity
async def reserve(item: str) -> str:  # ops_app's reserve, moved here
    return f"res-{item}"


@garrison.activity(name="ops_app:reserve")
async def reserve_named(item: str) -> str:  # ... keeping the journal name it had there
    return f"res-{item}"


async def _reserves_moved(item: str) -> str:
    return await reserve(item)


async def _reserves_moved_named(item: str) -> str:
    return await reserve_named(item)


async def _charges_first(item: str) -> str:
    await ops_app.charge(item)  # the changed line: the journal's seq 1 is reserve
    return await ops_app.reserve(item)


async def _checks_stock(item: str) -> str:
    return await _reserves_checked(item)


async def _reserves_checked(item: str) -> str:
    await workflow.sleep("1s")  # a helper's step, in place of the recorded reserve
    return await ops_app.reserve(item)


def test_a_divergence_names_the_line_of_the_workflow_that_differs() -> None:
    """A divergence said its seq and the two steps, but not which line of the new code
    took the other path: a note, shown in pytest's report, names it as a traceback's
    frame does (the innermost frame of the workflow's code, a helper's too)."""
    history = {"name": "ops_app:order", "input": ["x"], "status": "completed", "journal": [
        {"seq": 1, "kind": "activity", "name": "ops_app:reserve", "outcome": {"ok": "r"}}]}
    for target, line, function in [
            (_charges_first, "await ops_app.charge(item)  # the changed line", "_charges_first"),
            (_checks_stock, 'await workflow.sleep("1s")  # a helper', "_reserves_checked")]:
        with pytest.raises(garrison.NonDeterminismError) as info:
            garrison.testing.replay(history, target)
        note, = info.value.__notes__
        assert note.startswith(f"the code that differs (seq 1): File \"{__file__}\", line "), note
        assert f", in {function}\n    {line}" in note, note
        assert "(seq 1)" in str(info.getrepr())
        assert "the code now did" in str(info.value)  # (the message as it was)


def test_an_activity_moved_to_another_module_says_how_to_keep_its_journal_name() -> None:
    """Moving a module renames its activities (a journal name is ``module:qualname``):
    the divergence said to branch with workflow.version, which cannot help there; it
    says the activity moved, and how to keep its recorded name, which then replays."""
    history = {"name": "ops_app:order", "input": ["x"], "status": "completed", "journal": [
        {"seq": 1, "kind": "activity", "name": "ops_app:reserve", "outcome": {"ok": "r"}}]}
    with pytest.raises(garrison.NonDeterminismError) as info:
        garrison.testing.replay(history, _reserves_moved)
    assert str(info.value) == (
        "workflow 'replayed' diverged from its journal at seq 1: the journal records "
        f"activity 'ops_app:reserve', but the code now did activity '{__name__}:reserve' "
        f"(File \"{__file__}\", line {_reserves_moved.__code__.co_firstlineno + 1}, in "
        "_reserves_moved). "
        "Moved to another module? An activity's journal name is its module:qualname: keep "
        "the recorded one with @garrison.activity(name='ops_app:reserve'). Nothing was "
        "changed (a dry run); a node running this code would block the workflow when it "
        "replays it")
    assert garrison.testing.replay(history, _reserves_moved_named).ok
    with pytest.raises(garrison.NonDeterminismError) as info:  # another qualname: renamed
        garrison.testing.replay(history, _charges_instead)
    assert "Moved" not in str(info.value) and "workflow.version" in str(info.value)


def test_a_replay_compares_an_activity_s_name_not_its_arguments() -> None:
    """README says so (as in Temporal): the journal keeps an activity's outcome, not
    its arguments. ``order("book")``'s journal, replayed by a run whose input makes it
    reserve and charge ``"pen"``, is ok and gets the recorded results."""
    book = {"name": "ops_app:order", "input": ["pen"], "journal": [
        {"seq": 1, "kind": "activity", "name": "ops_app:reserve", "outcome": {"ok": "res-book"}},
        {"seq": 2, "kind": "activity", "name": "ops_app:charge", "outcome": {"ok": "paid"}}]}
    result = garrison.testing.replay(book)
    assert (result.ok, result.checked) == (True, 2), result
    assert ops_app.LOG == []  # (no activity ran: the recorded results were the answers)


def test_a_replay_stuck_on_a_non_durable_wait_stops_and_says_so() -> None:
    history = History.from_json({"name": "ops_app:order", "input": ["x"], "journal": [
        {"seq": 1, "kind": "activity", "name": "ops_app:reserve", "outcome": {"ok": "r"}},
        {"seq": 2, "kind": "activity", "name": "ops_app:charge", "outcome": {"ok": "p"}}]})
    result = trio.run(replay_history, history, _nondurable)
    assert result.ok and result.checked == 1
    assert "waits on something no journal record answers" in result.ending
    assert "the 1 later record(s) could not be checked" in result.ending


def test_a_read_only_store_refuses_writes_and_an_in_memory_one(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(str(path)) as s:
        s.write(Transaction().create_workflow("w", "ops_app:order", ["x"]))
    with SQLiteStore(str(path), readonly=True) as ro:
        assert ro.get_workflow("w") is not None and not ro.owner and not ro.locked
        with pytest.raises(garrison.StoreError, match="opened read-only"):
            ro.write(Transaction().create_workflow("v", "ops_app:order", []))
        with pytest.raises(garrison.StoreError, match="opened read-only"):
            trio.run(ro.commit, Transaction().set_state("w", "k", 1))
    with pytest.raises(ValueError, match="readonly=True needs a store file"):
        SQLiteStore(readonly=True)
    with pytest.raises(FileNotFoundError):
        SQLiteStore(str(tmp_path / "missing.db"), readonly=True)


async def approver() -> str:
    approval = garrison.workflow.promise("approval")
    if await garrison.workflow.first(approval, garrison.workflow.timer("30d")) is approval:
        return "approved"
    return "timed out"


async def test_a_replay_ending_at_a_race_names_workflow_first(
        tmp_path: Path, autojump_clock: Any) -> None:
    """``garrison workflows replay`` of a workflow waiting in ``workflow.first`` said
    ``... goes on with first '' (live work)``: its record has no name."""
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(approver, id="a")
        while node.workflow("a").status() != "waiting":
            await trio.sleep(0.001)
    with SQLiteStore(store, readonly=True) as s:
        history = History.from_store(s, "a")
    result = await replay_history(history)
    assert result.ok and result.ending == ("the journal ends where the code goes on with "
                                           "workflow.first() (live work)"), result.ending


async def _charges_instead(item: str) -> str:
    return await ops_app.charge(item)


async def _two_steps(item: str) -> str:
    return await ops_app.reserve(item) + await ops_app.charge(item)


async def _two_steps_then_fails(item: str) -> str:
    await ops_app.reserve(item)
    await ops_app.charge(item)
    raise ValueError("now it fails")


async def _three_steps(item: str) -> str:
    return await _two_steps(item) + await ops_app.reserve("more")


def test_a_completed_history_the_code_no_longer_completes_differs() -> None:
    """A golden history of a completed workflow replayed ok when today's code raised
    after its steps, or took a step more: a golden test passed on code that no longer
    completes it (helper-203). Code that returns there is ok."""
    completed = {"name": "ops_app:order", "input": ["x"], "status": "completed",
                 "journal": [
                     {"seq": 1, "kind": "activity", "name": "ops_app:reserve",
                      "outcome": {"ok": "r"}},
                     {"seq": 2, "kind": "activity", "name": "ops_app:charge",
                      "outcome": {"ok": "p"}}]}
    history = History.from_json(completed)
    assert trio.run(replay_history, history, _two_steps).ok
    for code, now in [(_two_steps_then_fails, "the code raised ValueError: now it fails"),
                      (_three_steps, "the journal ends where the code goes on with activity "
                                     "'ops_app:reserve' (live work)")]:
        result = trio.run(replay_history, history, code)
        assert not result.ok and result.error is not None
        assert str(result.error).startswith(
            "workflow 'replayed' is recorded completed at the end of its journal, but the "
            f"code now does not return there: {now}. Nothing was changed"), str(result.error)
    with pytest.raises(ValueError, match=r"'status' must be one of pending, .*got 'exploded'"):
        History.from_json({**completed, "status": "exploded"})
    with pytest.raises(ValueError, match="'workflow_id' must be a string, got 3"):
        History.from_json({**completed, "workflow_id": 3})
    with pytest.raises(ValueError, match="journal record 0 needs an integer 'seq'"):
        History.from_json({**completed, "journal": [{**completed["journal"][0], "seq": True}]})


async def _two_steps_gated_at_end(item: str) -> str:  # a version gate added at the end
    receipt = await _two_steps(item)
    if garrison.workflow.version("receipt-v2", 1, 2) == 2:
        receipt = receipt.upper()
    return receipt


async def _two_steps_old_path_dropped(item: str) -> str:
    receipt = await _two_steps(item)
    garrison.workflow.version("receipt-v2", 2, 2)
    return receipt.upper()


async def test_a_version_gate_added_at_the_end_of_a_finished_history_takes_the_old_path(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A version gate added after the last step failed every completed golden history
    ("... does not return there: the journal ends where the code goes on with version
    'receipt-v2' (live work)"): the recorded run went on to its end with the code before
    the call, so it gets the default (1, recorded nowhere), as a gate mid-run does. A
    range that leaves 1 out still differs; an unfinished run whose journal ends there
    goes on live with the new version, on a node and in its replay alike."""
    journal = [{"seq": 1, "kind": "activity", "name": "ops_app:reserve", "outcome": {"ok": "r"}},
               {"seq": 2, "kind": "activity", "name": "ops_app:charge", "outcome": {"ok": "p"}}]
    history = History.from_json({"name": "ops_app:order", "input": ["x"],
                                 "status": "completed", "journal": journal})
    result = await replay_history(history, _two_steps_gated_at_end)
    assert result.ok and result.ending == "the code returned", result
    dropped = await replay_history(history, _two_steps_old_path_dropped)
    assert dropped.error is not None and "workflow.version('receipt-v2', 2, 2) leaves out " \
        "version 1, the version of a run recorded before this call existed" in str(dropped.error)
    # a running one, and a failed one (as its retry resumes it: test below), go on live
    for status in ("running", "failed"):
        running = await replay_history(History.from_json(
            {"name": "ops_app:order", "input": ["x"], "status": status, "journal": journal}),
            _two_steps_gated_at_end)
        assert running.ok and running.ending == ("the journal ends where the code goes on "
                                                 "with version 'receipt-v2' (live work)")
    store = str(tmp_path / "s.db")  # a node resuming such a run: the new path, recorded
    with SQLiteStore(store) as s:
        tx = Transaction().create_workflow("r", f"{__name__}:_two_steps_gated_at_end", ["x"],
                                           status="running")
        for e in journal:
            tx.append_journal("r", e["seq"], "activity", e["name"], RawJson(json.dumps(
                e["outcome"])))
        s.write(tx)
    async with garrison.open_node(store=store) as node:
        assert await node.workflow("r").result() == "RP"
        assert [(r.kind, r.outcome) for r in node.workflow("r").history()][2:] == [
            ("version", 2)]


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def _declines(item: str) -> str:
    raise ValueError(f"{item} declined")


@garrison.activity
async def _charges_v2(item: str) -> str:
    return f"charged {item}"


async def _pays(item: str) -> list[str]:
    return [await ops_app.release(item) or "released", await _declines(item)]


async def _pays_v2(item: str) -> list[str]:
    return [await ops_app.release(item) or "released", await _charges_v2(item)]


async def test_a_failed_history_replays_as_a_retry_would_resume_it(tmp_path: Path) -> None:
    """helper-324: a workflow failed by an activity's final error, its last record,
    replayed against code that calls another activity there, differed ("... records
    activity _declines, but the code now did activity _charges_v2 ... a node would
    block it"), while ``retry`` takes that record back and runs the new activity to the
    end; and a version gate after a failed run's last record got the old path, where
    the retry records the newest. A failed workflow is replayed as a retry resumes it."""
    store = str(tmp_path / "s.db")
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(_pays, "x", id="p")
        with pytest.raises(garrison.WorkflowFailed):
            await node.workflow("p").result()
    with SQLiteStore(store, lock=False) as s:
        history = History.from_store(s, "p")
    assert history.status == "failed" and history.records == 2
    taken = ("; a retry takes back its last record, the final error of activity "
             f"'{__name__}:_declines' (seq 2), and runs the code again from there")
    for code, goes_on in ((_pays_v2, "_charges_v2"), (_pays, "_declines")):
        result = await replay_history(history, code)
        assert result.ok and (result.records, result.checked) == (1, 1), result
        assert result.ending == ("the journal ends where the code goes on with activity "
                                 f"'{__name__}:{goes_on}' (live work){taken}"), result


@pytest.mark.parametrize("change, said", [
    # (a record without a name was read as '' and replayed as a divergence of the code)
    ({"journal": [{"seq": 1, "kind": "activity", "outcome": {"ok": "r"}}]},
     "journal record 0 (seq 1): 'name' must be a string ('' for a record without one), "
     "got 'nothing'"),
    ({"journal": [{"seq": 1, "kind": "activity", "name": "ops_app:reserve",
                   "outcome": {"ok": "r"}, "time": "yesterday"}]},
     "journal record 0 (seq 1): 'time' must be null, unix seconds or an ISO 8601 time "
     "('2026-12-05T10:00:00.000Z'), got 'yesterday'"),
    ({"journal": [{"seq": 1, "kind": "activity", "name": "ops_app:reserve",
                   "outcome": {"ok": "r"}, "size": "big"}]},
     "journal record 0 (seq 1): 'size' must be a whole number of bytes, got 'big'"),
    ({"created": [2026]}, "'created' must be null, unix seconds or an ISO 8601 time"),
    ({"updated": True}, "'updated' must be null, unix seconds or an ISO 8601 time"),
    ({"created": float("nan")}, "'created' must be null, unix seconds or an ISO 8601 time"),
    ({"updated": 1e300}, "'updated' must be null, unix seconds or an ISO 8601 time"),
    ({"host": 7}, "'host' must be a string, got 7"),
    ({"run_id": ["r"]}, "'run_id' must be a string, got ['r']"),
    ({"promises": {"go": "yes"}},
     "promise 'go' must be an object with a 'status' of 'pending', 'resolved', 'rejected' "
     "(and a rejected one's 'error' message), got 'yes'"),
    ({"promises": {"go": {"status": "done", "value": 1}}}, "promise 'go' must be an object"),
    ({"promises": {"go": {"status": "rejected", "error": None}}},
     "promise 'go' must be an object"),
])
def test_a_damaged_history_field_is_a_file_error(change: dict[str, Any], said: str) -> None:
    """helper-203 (closing41, left alone then): these fields were taken as they came,
    a wrong one read as nothing (a promise of another status dropped, a time as none)
    or, for a record's missing name, replayed as if the code had diverged."""
    history = {"name": "ops_app:order", "input": ["x"], "journal": [
        {"seq": 1, "kind": "activity", "name": "ops_app:reserve", "outcome": {"ok": "r"},
         "time": "2026-12-05T10:00:00.000Z", "size": 5}],
        "created": 1764928800, "updated": None,
        "promises": {"a": {"status": "pending"}, "b": {"status": "rejected", "error": "no"}}}
    parsed = History.from_json(history)
    assert parsed.promises == {"b": ("rejected", "no")}
    # (a record's time is kept: exported again, the history says it)
    assert parsed.to_json()["journal"][0]["time"] == "2026-12-05T10:00:00.000Z"
    with pytest.raises(ValueError) as info:
        History.from_json({**history, **change}, "h.json")
    assert str(info.value).startswith("h.json: " + said), str(info.value)


@pytest.mark.parametrize(("kind", "outcome", "shape"), [
    ("now", "yesterday", "unix seconds"),
    ("now", True, "unix seconds"),
    ("uuid4", "not-a-uuid", "a UUID's text"),
    ("uuid4", 7, "a UUID's text"),
    ("random", "x", "a number from 0 up to 1"),
    ("random", 1.5, "a number from 0 up to 1"),
    ("version", "2", "a whole number"),
    ("receive", "hi", "an object"),
    ("receive", {"inbox": 1, "message": "hi"}, "an object"),
    ("receive", {"inbox": 1, "message": {"payload": 1}}, "an object"),
    ("receive", {"inbox": 1, "event": {"kind": "nope", "pid": "x"}}, "an object"),
    ("receive", {"inbox": "1", "message": {"topic": "t"}}, "an object"),
    ("first", {"index": 5, "of": ["timer", "promise go"]}, "{\"index\": "),
    ("first", {"index": -1}, "{\"index\": "),
])
def test_a_damaged_recorded_value_is_a_file_error(kind: str, outcome: Any, shape: str) -> None:
    """helper-220: a recorded value of the wrong shape (a `now` of "yesterday", a receive
    whose message is a string, a `first` won by an awaitable it did not race) replayed
    as the code raising at the next record (`diverged ... at seq 2: the journal records
    uuid4, but the code now did raise TypeError`), blaming a deploy for a damaged file."""
    history = {"name": "ops_app:order", "input": ["x"], "journal": [
        {"seq": 1, "kind": kind, "name": "", "outcome": outcome}]}
    with pytest.raises(ValueError) as info:
        History.from_json(history, "h.json")
    said = str(info.value)
    assert said.startswith(f"h.json: journal record 0 (seq 1, {kind}): 'outcome' must be "
                           f"{shape}"), said


@pytest.mark.parametrize("outcome", ["x", {"state": [1]}, {"state": {}, "names": "x"},
                                     {"state": {}, "names": {"n": 1}}])
def test_a_damaged_continued_record_is_a_file_error(outcome: Any) -> None:
    """helper-220: a damaged seq-0 record of a continued run was a bare TypeError or
    AttributeError from deep inside the replay, naming no file or record."""
    history = {"name": "ops_app:order", "input": ["x"], "journal": [
        {"seq": 0, "kind": "continued", "name": "", "outcome": outcome}]}
    with pytest.raises(ValueError, match=r"^h\.json: journal record 0 \(seq 0, continued\): "
                       r"'outcome' must be \{\"state\": "):
        History.from_json(history, "h.json")


def test_recorded_values_of_the_right_shape_are_read() -> None:
    """The shapes a node writes pass (and the golden files' receives, above)."""
    History.from_json({"name": "ops_app:order", "journal": [
        {"seq": 0, "kind": "continued", "name": "", "outcome": {"state": {"n": 1},
                                                                 "names": {"a": "node"}}},
        {"seq": 1, "kind": "now", "name": "", "outcome": 1764928800.5},
        {"seq": 2, "kind": "uuid4", "name": "",
         "outcome": "0b6f5a3e-5c1f-4a0e-9d0a-2f3b4c5d6e7f"},
        {"seq": 3, "kind": "random", "name": "", "outcome": 0.25},
        {"seq": 4, "kind": "version", "name": "c", "outcome": 2},
        {"seq": 5, "kind": "receive", "name": "inbox", "outcome": {"timeout": True}},
        {"seq": 6, "kind": "receive", "name": "inbox", "outcome": {"empty": True}},
        {"seq": 7, "kind": "receive", "name": "inbox", "outcome": {
            "inbox": 3, "message": {"topic": "t", "payload": [1], "sender": None}}},
        {"seq": 8, "kind": "first", "name": "", "outcome": {"index": 1,
                                                             "of": ["timer", "promise go"]}},
        {"seq": 9, "kind": "receive", "name": "events", "outcome": {
            "inbox": 4, "event": {"kind": "EXIT", "pid": "workers/7", "result": 1,
                                  "error": None}}}]})
    # (and what the code reads of a spawn, call, lookup, link or register)
    History.from_json({"name": "ops_app:order", "journal": [
        {"seq": 1, "kind": "spawn", "name": "kid", "outcome": {"pid": "workflows/o.1"}},
        {"seq": 2, "kind": "call", "name": "t", "outcome": {"ok": None}},
        {"seq": 3, "kind": "call", "name": "t", "outcome": {
            "error": {"type": "TimeoutError", "message": "m", "traceback": ""},
            "pid": "workers/7", "timeout": False}},
        {"seq": 4, "kind": "call", "name": "t", "outcome": {
            "error": {"type": "TimeoutError", "message": "m"}, "timeout": True}},
        {"seq": 5, "kind": "call", "name": "t", "outcome": {
            "error": {"type": "NoSuchProcess", "message": "m"}, "raised": "NoSuchProcess",
            "name": "echo"}},
        {"seq": 6, "kind": "lookup", "name": "echo", "outcome": {"pid": None}},
        {"seq": 7, "kind": "lookup", "name": "echo", "outcome": {"pid": "workers/7"}},
        {"seq": 8, "kind": "monitor", "name": "echo", "outcome": {"pid": "workers/7"}},
        {"seq": 9, "kind": "link", "name": "workers/7", "outcome": None},
        {"seq": 10, "kind": "cancel_process", "name": "echo", "outcome": {
            "error": {"type": "NoSuchProcess", "message": "m"}, "raised": "NoSuchProcess"}},
        {"seq": 11, "kind": "send", "name": "t", "outcome": {"to": "workers/7", "id": "o#11"}},
        {"seq": 12, "kind": "register", "name": "n", "outcome": {"scope": "node"}},
        {"seq": 13, "kind": "activity", "name": "a", "outcome": {
            "error": {"type": "ValueError", "message": "m", "traceback": "tb"}}},
        {"seq": 14, "kind": "now", "name": "", "outcome": -62135596800}]})


@pytest.mark.parametrize(("kind", "name", "outcome", "shape"), [
    ("spawn", "kid", "garbage", '{"pid": '),
    ("spawn", "kid", {}, '{"pid": '),
    ("spawn", "kid", {"pid": 5}, '{"pid": '),
    ("spawn", "kid", {"pid": "no-host"}, '{"pid": '),
    ("call", "t", "garbage", '{"ok": value}'),
    ("call", "t", {"error": "x"}, '{"ok": value}'),
    ("call", "t", {"error": {"type": "ProcessError", "message": "m"}}, '{"ok": value}'),
    ("call", "t", {"raised": 5}, '{"ok": value}'),
    ("lookup", "echo", "garbage", '{"pid": '),
    ("lookup", "echo", {"pid": 5}, '{"pid": '),
    ("activity", "a", {"error": {"type": 5}}, '{"ok": value}'),
    ("activity", "a", {"error": {"type": "X", "message": 5}}, '{"ok": value}'),
    ("activity", "a", {"error": {"type": "X", "message": "m", "traceback": 5}},
     '{"ok": value}'),
    ("activity", "a", {"ok": 1, "error": "x"}, '{"ok": value}'),
    ("now", "", -1e11, "unix seconds"),
    ("receive", "events", {"inbox": 1, "event": {"kind": "EXIT", "pid": "w/1",
                                                 "error": {"type": 1}}}, "an object"),
    ("monitor", "echo", "zz", '{"pid": '),
    ("link", "echo", {"pid": "no-host"}, '{"pid": '),
    ("cancel_process", "echo", {"raised": "NoSuchProcess", "error": "x"}, '{"pid": '),
    ("send", "t", {"raised": "NoSuchProcess", "error": {"type": 5}}, "what it sent"),
    ("register", "n", {"raised": 7}, '{"scope": '),
])
def test_a_damaged_outcome_the_code_reads_is_a_file_error(kind: str, name: str, outcome: Any,
                                                          shape: str) -> None:
    """helper-294: a spawn, call or lookup outcome of the wrong shape, an activity error
    whose type is no string, a `now` before year 1... replayed as the code raising at the
    next record (`diverged ... at seq 2: the journal records receive 'events', but the
    code now did raise TypeError: string indices must be integers`): a damaged file
    blamed on the code, at the wrong seq. It names the file, record and workflow."""
    history = {"workflow_id": "o-1", "name": "ops_app:order", "input": ["x"], "journal": [
        {"seq": 1, "kind": kind, "name": name, "outcome": outcome}]}
    with pytest.raises(ValueError) as info:
        History.from_json(history, "h.json")
    said = str(info.value)
    assert said.startswith(f"h.json: journal record 0 (seq 1, {kind}) of workflow 'o-1': "
                           f"'outcome' must be {shape}"), said


def test_a_damaged_spawn_in_a_history_file_is_no_divergence(tmp_path: Path) -> None:
    """The probe's case end to end: `garrison.testing.replay` of an exported file whose
    spawn outcome was edited said the code diverged at the next record."""
    path = tmp_path / "f.json"
    path.write_text(json.dumps({
        "format": "garrison-history/1", "workflow_id": "m1", "name": "ops_app:parent_of_one",
        "input": [], "journal": [
            {"seq": 1, "kind": "spawn", "name": "waiting_child", "outcome": "garbage"},
            {"seq": 2, "kind": "receive", "name": "events", "outcome": {"inbox": 2, "event": {
                "kind": "EXIT", "pid": "workflows/m1.1", "result": None, "error": None}}}]}))
    with pytest.raises(ValueError, match=r"f\.json': journal record 0 \(seq 1, spawn\) of "
                                         r"workflow 'm1': 'outcome' must be \{\"pid\": "):
        garrison.testing.replay(path)


async def spawn_refusals() -> list[str]:
    """Spawns a node refuses without a record, each caught: its own id, an invalid id,
    a child given an argument it does not take; then a step, and after the journal's
    last record (a state set first: its write is committed before a start by id) one
    more."""
    said: list[str] = []

    async def spawn(*args: Any, id: str | None = None) -> None:
        try:
            await garrison.process.spawn(ops_app.waiting_child, *args, id=id)
        except (ValueError, TypeError) as exc:
            said.append(type(exc).__name__)

    await spawn(1, id=garrison.workflow.info().workflow_id)
    await spawn(1, id=" x")
    await spawn(1, 2)
    await garrison.workflow.sleep("1s")
    garrison.workflow.set_state("said", said)
    await spawn(1, id="")
    return said


async def spawns_a_child_at_seq_1() -> list[str]:  # a spawn a node carries out
    await garrison.process.spawn(ops_app.waiting_child, 1)
    await garrison.workflow.sleep("1s")
    return []


async def spawns_onto_another_host() -> list[str]:
    try:
        await garrison.process.spawn(ops_app.waiting_child, 1, host="elsewhere", id="k")
    except (ValueError, TypeError) as exc:
        return [type(exc).__name__]
    return []


async def test_a_replay_raises_the_spawn_refusals_a_node_raises_unrecorded(
        autojump_clock: Any) -> None:
    """A spawn a node refuses is not journaled (its own id, an invalid id, arguments
    the child does not take): the node resuming the workflow refuses it again at the
    same seq. The replay turned down the host access those checks make, and a workflow
    that caught the refusal and went on was reported as stopping at seq 1 (not ok, its
    later records unchecked). It runs the node's checks now and raises the same errors;
    a spawn a node would carry out there still differs, and one onto another host (of
    which a replay knows nothing) stops, saying why."""
    async with garrison.open_node() as node:
        await node.start_workflow(spawn_refusals, id="r")
        assert await node.workflow("r").result() == ["ValueError", "ValueError", "TypeError",
                                                     "ValueError"]
        history = History.from_store(node.hosts["workflows"].store, "r")
    assert [e.seq for e in history.journal] == [4]  # seqs 1 to 3: taken, not recorded

    result = await replay_history(history)
    assert result.ok, str(result)
    assert (result.records, result.checked, result.ending) == (1, 1, "the code returned")
    assert garrison.testing.replay(history.to_json()).ok  # an exported file's too

    differs = await replay_history(history, spawns_a_child_at_seq_1)
    assert not differs.ok
    assert "stopped at seq 1: the code spawn 'waiting_child'; the 1 later record(s) could " \
           "not be checked" in str(differs.error), str(differs)

    elsewhere = await replay_history(history, spawns_onto_another_host)
    assert not elsewhere.ok
    assert "stopped at seq 1: the code spawn 'waiting_child' onto host 'elsewhere', which " \
           "a replay cannot look at (a node refuses it there, unrecorded, if that host is " \
           "a workflow host with a store of its own, or a process host and id= is given; " \
           "a replay cannot tell); the 1 later record(s)" in str(elsewhere.error), \
        str(elsewhere)
