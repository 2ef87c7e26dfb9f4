"""Code that changed under workflows already running: what a node does with them and
what a replay (the pre-deploy check) says, for changes a replay used to pass while a
node then blocked or failed the workflows (helper-197)."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

import garrison
from garrison.hosts.workflow import History, replay_history
from garrison.persistence import SQLiteStore, Transaction

MODULE = "code_change_app"

GAP_V1 = '''
    import trio
    import garrison
    from garrison import process, workflow

    RAN: list[int] = []

    @garrison.activity
    async def slow(n: int) -> int:
        await trio.sleep(n)
        return n

    @garrison.activity
    async def quick(n: int) -> int:
        RAN.append(n)
        return n

    async def flow(x: int) -> int:
        started = workflow.start(slow, 100)
        await quick(x)
        await process.inbox().receive()
        return await started
'''

ANNOTATED_V1 = '''
    import garrison
    from garrison import process

    RAN: list[int] = []

    @garrison.activity
    async def step(n: int) -> int:
        RAN.append(n)
        return n + 1

    async def flow(x: int) -> int:
        y = await step(x)
        await process.inbox().receive()
        return y
'''


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` holding :data:`MODULE`, written by :func:`deploy`."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    yield tmp_path
    sys.modules.pop(MODULE, None)


def deploy(folder: Path, source: str) -> object:
    """Install ``source`` as the module the workflows name (the code a node runs)."""
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(source))
    sys.modules.pop(MODULE, None)
    importlib.invalidate_caches()
    return importlib.import_module(MODULE)


async def run_node(store: str, seconds: float = 1.0, start: object = None) -> dict[str, str]:
    """Open a node on ``store`` for ``seconds`` (starting ``start``'s ``flow(1)`` as w1
    first); the workflows' statuses when it closes."""
    async with garrison.open_node(store=store) as node:
        if start is not None:
            await node.start_workflow(start.flow, 1, id="w1")  # type: ignore[attr-defined]
        await trio.sleep(seconds)
        return {r.workflow_id: r.status for r in node.workflows()}


def journal(store: str, wid: str = "w1") -> list[tuple[int, str, str]]:
    with SQLiteStore(store, lock=False) as look:
        return [(r.seq, r.kind, r.name) for r in look.journal(wid)]


async def replayed(store: str, wid: str = "w1") -> garrison.testing.ReplayResult:
    with SQLiteStore(store, lock=False) as look:
        history = History.from_store(look, wid)
    return await replay_history(history)


async def test_an_awaited_step_where_the_journal_has_a_gap_differs_and_leaves_the_journal(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """v1 starts a slow activity (seq 1) and records a quick one (seq 2) while it runs;
    v2 drops the start. The replay said ok ("could not be checked"); a node on v2 ran the
    quick step again, wrote it into seq 1, then blocked at seq 2, and rolling back to v1
    no longer resumed the workflow (seq 1 now held the wrong step)."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, GAP_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}
    assert journal(store) == [(2, "activity", f"{MODULE}:quick")]

    v2 = deploy(code, GAP_V1.replace("started = workflow.start(slow, 100)", "started = 5")
                .replace("return await started", "return started"))
    result = await replayed(store)
    assert not result.ok and result.error is not None and result.error.seq == 1
    assert "cannot be checked past seq 1: the journal records no step at seq 1, then " \
           "activity 'code_change_app:quick' at seq 2, but the code now does activity " \
           "'code_change_app:quick', awaited at seq 1" in str(result.error)
    assert "a replay cannot tell them apart" in str(result.error)

    assert await run_node(store) == {"w1": "blocked"}
    assert v2.RAN == [1]  # type: ignore[attr-defined]  # (at least once: it ran)
    assert journal(store) == [(2, "activity", f"{MODULE}:quick")]  # as recorded

    deploy(code, GAP_V1)  # the deploy rolled back: the workflow resumes
    assert (await replayed(store)).ok
    assert await run_node(store) == {"w1": "waiting"}


async def test_a_recorded_result_its_new_annotation_refuses_blocks_instead_of_failing(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """The step's annotation went from ``-> int`` to ``-> str``: the replay said ok ("the
    code raised PayloadError") and a node failed the waiting workflow for good."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, ANNOTATED_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}

    deploy(code, ANNOTATED_V1.replace("async def step(n: int) -> int:",
                                      "async def step(n: int) -> str:"))
    result = await replayed(store)
    assert not result.ok and result.error is not None and result.error.seq == 1
    assert "with a return annotation that no longer takes its recorded result " \
           "(cannot restore the result of activity 'code_change_app:step' as str" \
           in str(result.error)
    assert await run_node(store) == {"w1": "blocked"}  # not failed: its journal is kept

    deploy(code, ANNOTATED_V1)
    assert await run_node(store) == {"w1": "waiting"}


async def test_a_parameter_added_with_records_in_the_journal_is_named_as_such(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """A required parameter added after the workflow recorded steps was reported as
    "the code now did raise TypeError: flow() missing 1 required positional argument",
    with workflow.version advised (which cannot branch before the function runs)."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, ANNOTATED_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}

    deploy(code, ANNOTATED_V1.replace("async def flow(x: int) -> int:",
                                      "async def flow(x: int, y: int) -> int:"))
    result = await replayed(store)
    assert not result.ok and result.error is not None
    assert "workflow code_change_app:flow takes 2 argument(s) (x, y), but it was started " \
           "with 1" in str(result.error)
    assert "make the code take them too" in str(result.error)
    assert "TypeError" not in str(result.error)
    assert await run_node(store) == {"w1": "blocked"}


REORDERED_V1 = '''
    import garrison
    from garrison import process

    @garrison.activity
    async def reserve(n: int) -> int:
        return n

    @garrison.activity
    async def charge(n: int) -> int:
        return n

    async def flow(x: int) -> int:
        await reserve(x)
        await charge(x)
        await process.inbox().receive()
        return x
'''


async def test_a_blocked_workflow_s_error_names_the_line_of_the_code_that_differs(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """Two activities swapped under a waiting workflow: the node blocked it with
    'diverged from its journal at seq 1: the journal records activity reserve, but the
    code now did activity charge', in its log line, its row (``show``, ``list``, the
    console) and ``garrison workflows replay``'s line alike, none naming which line of
    the new code took the other path (only a golden replay's note, in pytest, did)."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, REORDERED_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}

    deploy(code, REORDERED_V1.replace("await reserve(x)\n        await charge(x)",
                                      "await charge(x)\n        await reserve(x)"))
    where = f'File "{code / MODULE}.py", line 14, in flow'
    result = await replayed(store)
    assert result.error is not None and result.error.seq == 1
    assert f"but the code now did activity '{MODULE}:charge' ({where})" in str(result.error)
    assert result.error.where == where

    assert await run_node(store) == {"w1": "blocked"}
    with SQLiteStore(store, lock=False) as look:
        rec = look.get_workflow("w1")
    assert rec is not None and rec.error is not None
    assert f"the code now did activity '{MODULE}:charge' ({where})" in rec.error.message


async def test_a_version_gate_that_drops_an_unfinished_run_s_path_names_its_line(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """``workflow.version('v', 2, 2)`` added above a step an unfinished run recorded
    blocks it ('leaves out version 1 ...'): which call, of those the code has, is said
    too."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, REORDERED_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}

    deploy(code, REORDERED_V1.replace(
        "await reserve(x)\n", "await reserve(x)\n        workflow.version('v', 2, 2)\n")
        .replace("from garrison import process", "from garrison import process, workflow"))
    where = f'File "{code / MODULE}.py", line 15, in flow'
    result = await replayed(store)
    assert result.error is not None and result.error.where == where
    assert f"until no such run is unfinished (the call: {where}). " in str(result.error)
    assert await run_node(store) == {"w1": "blocked"}


def test_replay_s_json_names_the_line_that_differs(
        code: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``garrison workflows replay --json``: the error's ``where``, beside its seq, the
    two steps, and its message (the text line's)."""
    import json

    from garrison._cli import build_parser

    store = str(tmp_path / "s.db")
    v1 = deploy(code, REORDERED_V1)
    assert trio.run(run_node, store, 1.0, v1,
                    clock=trio.testing.MockClock(autojump_threshold=0)) == {"w1": "waiting"}
    deploy(code, REORDERED_V1.replace("await reserve(x)\n        await charge(x)",
                                      "await charge(x)\n        await reserve(x)"))
    where = f'File "{code / MODULE}.py", line 14, in flow'
    parsed = build_parser().parse_args(["workflows", "--store", store, "--json", "replay"])
    assert parsed.func(parsed) == 1
    error, = (r["error"] for r in json.loads(capsys.readouterr().out))
    assert error["seq"] == 1 and error["where"] == where
    assert f"({where})" in error["message"]


async def test_a_renamed_workflow_function_blocks_saying_so_and_an_alias_resumes_it(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """The workflow function renamed under a waiting workflow: the node blocked it with
    the advice for code missing from its path ('start a node that can import it (run
    from your code's folder, or install it)'), which a node run from the right folder
    already was; ``replay`` said 'renamed or removed?'. The node says so too, names the
    module file it imported, and the way out; the old name kept as an alias resumes it."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, REORDERED_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}

    renamed = REORDERED_V1.replace("async def flow(", "async def order_flow(")
    deploy(code, renamed)
    assert await run_node(store) == {"w1": "blocked"}
    with SQLiteStore(store, lock=False) as look:
        rec = look.get_workflow("w1")
    assert rec is not None and rec.error is not None
    message = rec.error.message
    assert message.startswith(
        f"workflow 'w1': its function '{MODULE}:flow' is not in its module "
        f"({code / MODULE}.py) on this node (AttributeError: "), message
    assert "renamed or removed? " in message
    assert "keep the function under its name for workflows started before the change (an " \
           "alias of the new function will do: flow = new_name)" in message
    assert "run from your code's folder" not in message

    deploy(code, renamed + "\n    flow = order_flow\n")
    assert await run_node(store) == {"w1": "waiting"}


STATE_V1 = '''
    import garrison
    from garrison import process, workflow

    @garrison.activity
    async def step(n: int) -> int:
        return n + 1

    async def flow(x: int) -> int:
        y = await step(x)
        workflow.set_state("stage", "charged")
        workflow.attrs(search={"stage": "charged"})
        z = await step(y)
        await process.inbox().receive()
        workflow.set_state("seen", workflow.get_state("stage"))
        return z
'''


async def test_state_and_search_attributes_new_code_sets_on_the_replayed_path_are_stored(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """A deploy changed a ``set_state`` (and an ``attrs``) the waiting workflow had
    passed: resumed, its code read the new value (``get_state``), while
    ``handle.state()``, ``show`` and a search by the attribute kept the old one for good,
    as a set on a replayed path was never written; a key the new code added there was
    never stored at all. What the code set where it goes live is stored."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, STATE_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}

    deploy(code, STATE_V1.replace('"charged"', '"paid"').replace(
        '        z = await step(y)\n',
        '        workflow.set_state("new", [1])\n        z = await step(y)\n'))
    async with garrison.open_node(store=store) as node:
        await trio.sleep(1)
        handle = node.workflow("w1")
        assert handle.status() == "waiting"
        assert handle.state("stage") == "paid"
        assert handle.state("new") == [1]
        assert [w.workflow_id for w in node.workflows(search={"stage": "paid"})] == ["w1"]
        await handle.signal("go", None)
        assert await handle.result() == 3
        assert handle.state("seen") == "paid"  # (what its code read: the same)


async def test_resumed_workflows_tell_what_their_replayed_paths_changed_without_a_read_each(
        code: Path, tmp_path: Path, autojump_clock: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Workflows resumed together whose replayed paths set state and search attributes:
    which values differ from the store's was read from the store in the node's thread,
    once or twice per workflow as each went on past its journal (on PostgreSQL a
    blocking round trip each: thousands of workflows resumed after a takeover froze the
    node for seconds). The stored state is read once for all of them with their load,
    the attributes come with the rows loaded; what changed is stored as before, and
    unchanged code stores nothing."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, STATE_V1)
    async with garrison.open_node(store=store) as node:
        for wid in ("w1", "w2"):
            await node.start_workflow(v1.flow, 1, id=wid)  # type: ignore[attr-defined]
        await trio.sleep(1)
        assert {r.status for r in node.workflows()} == {"waiting"}

    reads: list[str] = []  # (what the settle read itself, and wrote)
    batched: list[list[str]] = []
    writes: list[str] = []

    def settles(name: str) -> bool:
        return sys._getframe(2).f_code.co_name == "_settle_replayed"
    for cls, names, into in ((SQLiteStore, ("states", "get_workflow", "get_state"), reads),
                             (Transaction, ("set_state", "set_attributes"), writes)):
        for name in names:
            def called(self: object, *args: object, _name: str = name, _into: list[str] = into,
                       _orig: object = getattr(cls, name), **kw: object) -> object:
                if settles(_name):
                    _into.append(_name)
                return _orig(self, *args, **kw)  # type: ignore[operator]
            monkeypatch.setattr(cls, name, called)
    digests = SQLiteStore.state_digests

    def read_many(self: SQLiteStore, ids: list[str]) -> dict[str, dict[str, str]]:
        if sys._getframe(1).f_code.co_name == "_settle_replayed":
            reads.append("state_digests")  # (a run loaded alone reads its own)
        else:
            batched.append(sorted(ids))
        return digests(self, ids)
    monkeypatch.setattr(SQLiteStore, "state_digests", read_many)

    assert await run_node(store) == {"w1": "waiting", "w2": "waiting"}  # (unchanged code)
    assert (reads, batched, writes) == ([], [["w1", "w2"]], [])

    batched.clear()
    deploy(code, STATE_V1.replace('"charged"', '"paid"'))
    async with garrison.open_node(store=store) as node:
        await trio.sleep(1)
        assert (reads, batched) == ([], [["w1", "w2"]])
        assert sorted(writes) == ["set_attributes"] * 2 + ["set_state"] * 2
        for wid in ("w1", "w2"):
            handle = node.workflow(wid)
            assert handle.status() == "waiting"
            assert handle.state("stage") == "paid"
        assert sorted(w.workflow_id for w in node.workflows(search={"stage": "paid"})) == \
            ["w1", "w2"]


async def test_a_run_loaded_alone_reads_what_its_state_holds_as_it_goes_past_its_journal(
        code: Path, tmp_path: Path, autojump_clock: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run loaded without the others (a tool's retry; here every run, the read of the
    ones resumed together left out) reads its own state's digests once past its journal,
    and stores only what changed."""
    from garrison.hosts.workflow import _recovery

    store = str(tmp_path / "s.db")
    v1 = deploy(code, STATE_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}
    monkeypatch.setattr(_recovery, "hold_states", lambda host, loaded: None)
    writes: list[tuple[str, object]] = []
    set_state = Transaction.set_state

    def written(self: Transaction, wid: str, key: str, value: object, **kw: object) -> object:
        writes.append((key, value))
        return set_state(self, wid, key, value, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(Transaction, "set_state", written)
    deploy(code, STATE_V1.replace('        z = await step(y)\n',
                                  '        workflow.set_state("new", 1)\n'
                                  '        z = await step(y)\n'))
    async with garrison.open_node(store=store) as node:
        await trio.sleep(1)
        handle = node.workflow("w1")
        assert handle.status() == "waiting"
        assert (handle.state("stage"), handle.state("new")) == ("charged", 1)
    assert [(key, getattr(value, "text", value)) for key, value in writes] == [("new", "1")]


async def test_a_refused_read_of_the_resumed_workflows_state_stores_what_their_code_set(
        code: Path, tmp_path: Path, autojump_clock: object,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The one read of the state of the workflows resumed together is refused: each
    stores what its replayed path set as it is (a value that did not change is written
    again, none is lost), and the node says so once."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, STATE_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}

    def refused(self: SQLiteStore, ids: list[str]) -> dict[str, dict[str, str]]:
        raise garrison.StoreError(store, "disk I/O error")
    monkeypatch.setattr(SQLiteStore, "state_digests", refused)
    deploy(code, STATE_V1.replace('workflow.attrs(search={"stage": "charged"})',
                                  'workflow.attrs(search={"stage": "paid"})').replace(
        '        z = await step(y)\n', '        workflow.set_state("new", 1)\n'
        '        z = await step(y)\n'))
    async with garrison.open_node(store=store) as node:
        await trio.sleep(1)
        handle = node.workflow("w1")
        assert handle.status() == "waiting"
        assert (handle.state("stage"), handle.state("new")) == ("charged", 1)
        assert [w.workflow_id for w in node.workflows(search={"stage": "paid"})] == ["w1"]
    said = [r.getMessage() for r in caplog.records if "could not read the state" in
            r.getMessage()]
    assert len(said) == 1 and said[0].startswith("could not read the state of 1 resumed "
                                                 "workflows (store "), said
    assert said[0].endswith("disk I/O error): the state their code sets on their replayed "
                            "paths is stored again as it is"), said


async def test_new_code_that_raises_before_a_recorded_step_names_the_line_that_raised(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """A check added above a step the waiting workflow recorded raises on its replay:
    'the code now did raise ValueError: ...' named no line (the code's frames are gone
    when a divergence is made of what it raised); it names the line that raised."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, REORDERED_V1)
    assert await run_node(store, start=v1) == {"w1": "waiting"}

    deploy(code, REORDERED_V1.replace(
        "await reserve(x)\n", "await reserve(x)\n        raise ValueError('a new check')\n"))
    where = f'File "{code / MODULE}.py", line 15, in flow'
    result = await replayed(store)
    assert result.error is not None and result.error.where == where
    assert f"the code now did raise ValueError: a new check ({where}). " in str(result.error)
    assert await run_node(store) == {"w1": "blocked"}


CAN_V1 = '''
    import garrison
    from garrison import process, workflow

    async def flow(x: int) -> int:
        if x == 0:
            workflow.set_state("stage", "charged")
            workflow.attrs(search={"stage": "charged"})
            await process.inbox().receive()
            await process.inbox().receive()
        await process.inbox().receive()
        return x
'''


async def _waiting_then_deployed(code: Path, tmp_path: Path, then: str) -> str:
    """``CAN_V1``'s w1 run until it waits for its second message, then a deploy that
    sets 'paid' where it set 'charged' and does ``then`` where it waited: its store."""
    store = str(tmp_path / "s.db")
    v1 = deploy(code, CAN_V1)
    async with garrison.open_node(store=store) as node:
        await node.start_workflow(v1.flow, 0, id="w1")  # type: ignore[attr-defined]
        await trio.sleep(1)
        await node.workflow("w1").signal("go", None)
        await trio.sleep(1)
        assert node.workflow("w1").status() == "waiting"

    deploy(code, CAN_V1.replace("charged", "paid").replace(
        "            await process.inbox().receive()\n"
        "            await process.inbox().receive()\n",
        "            await process.inbox().receive()\n"
        f"            {then}\n"))
    return store


async def test_state_new_code_sets_on_the_replayed_path_is_stored_by_a_continue_as_new(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """The replayed path's values are stored when the run goes on past its journal by a
    ``continue_as_new`` right away too (v2 continues where v1 waited for a second
    message): the new run carries them (its ``get_state``), and ``handle.state()`` and
    a search read the same, not the old run's for good."""
    store = await _waiting_then_deployed(code, tmp_path, "workflow.continue_as_new(1)")
    async with garrison.open_node(store=store) as node:
        await trio.sleep(1)
        handle = node.workflow("w1")
        assert handle.status() == "waiting"  # (the new run: x == 1, sets nothing)
        assert journal(store)[0][1] == "continued"
        assert handle.state("stage") == "paid"
        assert [w.workflow_id for w in node.workflows(search={"stage": "paid"})] == ["w1"]


async def test_state_new_code_sets_on_the_replayed_path_is_stored_by_a_failure_there(
        code: Path, tmp_path: Path, autojump_clock: object) -> None:
    """And by the failed end the run meets right after its replay (the README's 'or its
    end'): the failed workflow's ``state()`` and search read what its code set."""
    store = await _waiting_then_deployed(code, tmp_path, "raise ValueError('new check')")
    async with garrison.open_node(store=store) as node:
        await trio.sleep(1)
        handle = node.workflow("w1")
        assert handle.status() == "failed"
        assert handle.state("stage") == "paid"
        assert [w.workflow_id for w in node.workflows(search={"stage": "paid"})] == ["w1"]
