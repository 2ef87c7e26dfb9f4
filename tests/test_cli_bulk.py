"""`garrison workflows retry|cancel|terminate` of several workflows: IDs, or a selection
by list's filters (which acts only with --yes), each acted on as one is, a failure of
one on its line while the others go on. ``store_path`` is a SQLite file or a
PostgreSQL URL (both run)."""

from __future__ import annotations

import json
from typing import Any

import ops_app
import pytest
import trio
from test_operate import cli_async, cli_here

import garrison
from garrison.persistence import Transaction, open_store


@pytest.fixture(autouse=True)
def _reset() -> None:
    ops_app.LOG.clear()
    ops_app.FAILS.clear()


@pytest.fixture
def store_path(store_spec: str) -> str:
    return store_spec


def _second_batch_fails(monkeypatch: pytest.MonkeyPatch, path: str, *,
                        node: bool = False, error: Exception | None = None) -> None:
    """The store the command opens fails its second ``write_each`` (``error``; by
    default its ``StoreError`` "the disk is full"); ``node``: it says a node holds it
    (one that ends none of the workflows)."""
    from garrison import StoreError, _cli_workflows

    real = _cli_workflows.tools.open_store

    def opened(*args: Any, **kwargs: Any) -> Any:
        store = real(*args, **kwargs)
        if node:
            store.node_running = lambda: True
        real_each = store.write_each
        calls = iter(range(10))

        def write_each(txs: Any, **kw: Any) -> Any:
            if next(calls) == 1:
                raise error or StoreError(path, "the disk is full")
            return real_each(txs, **kw)

        store.write_each = write_each
        return store

    monkeypatch.setattr(_cli_workflows.tools, "open_store", opened)


def _rows(path: str, rows: dict[str, str], search: dict[str, Any] | None = None,
          parent: str | None = None) -> None:
    """Workflows written straight to the store: id -> status (no node: fast)."""
    with open_store(path) as s:
        for wid, status in rows.items():
            s.write(Transaction().create_workflow(wid, "workflow_app:steps", [0, 1],
                                                  status=status, search=search,
                                                  parent=parent))


def _status(path: str) -> dict[str, tuple[str, int]]:
    with open_store(path, lock=False) as s:
        return {r.workflow_id: (str(r.status), r.attempt) for r in s.list_workflows()}


def test_several_ids_are_each_retried_as_one_is_and_one_id_is_as_before(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    _rows(store_path, {"a": "failed", "b": "blocked", "c": "failed", "d": "waiting"})
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "a", "b")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[0].startswith("workflow 'a' retried: "), out
    assert lines[1].startswith("workflow 'b' retried: "), out
    assert lines[2] == "retry: 2 of 2 workflow(s) done", out
    assert _status(store_path) == {"a": ("pending", 2), "b": ("pending", 2),
                                   "c": ("failed", 1), "d": ("waiting", 1)}
    # one id: its line alone, its refusal on stderr, exit 1, as ever
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "c")
    assert code == 0 and out.startswith("workflow 'c' retried: "), out
    assert out.count("\n") == 1 and out.endswith("\n") and err == ""
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "d")
    assert (code, out) == (1, ""), out
    assert err == ("garrison workflows: cannot retry workflow 'd': it is waiting (only a "
                   "failed or blocked workflow can be retried)\n"), err
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "a", "--json")
    assert code == 1 and out == "" and "it is pending" in err, (out, err)


def test_a_failure_of_one_is_on_its_line_and_the_others_go_on(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    _rows(store_path, {"a": "failed", "done": "completed", "c": "failed"})
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "a", "nope", "done",
                              "c", "a")  # (an id given twice is acted on once)
    assert code == 1, (out, err)
    lines = out.splitlines()
    assert lines[0].startswith("workflow 'a' retried: "), out
    assert lines[1].startswith("error: no workflow 'nope' in "), out
    assert lines[2] == ("error: cannot retry workflow 'done': it is completed (only a "
                        "failed or blocked workflow can be retried)"), out
    assert lines[3].startswith("workflow 'c' retried: "), out
    assert lines[4] == "retry: 2 of 4 workflow(s) done, 2 not (see their lines)", out
    assert err == ("garrison workflows: 2 of 4 workflow(s) could not be retried: 'nope', "
                   "'done'\n"), err
    assert _status(store_path)["c"] == ("pending", 2)
    # --json: one summary, each workflow as the single command's answer, or its error
    _rows(store_path, {"e": "failed"})
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "e", "nope", "--json")
    assert code == 1 and "1 of 2 workflow(s) could not be retried: 'nope'" in err
    summary = json.loads(out)
    assert {k: v for k, v in summary.items() if k != "workflows"} == {
        "command": "retry", "selected": 2, "done": 1, "failed": 1}
    first, second = summary["workflows"]
    assert first["workflow_id"] == "e" and first["ok"] is True
    assert first["status"] == "pending" and "journal record(s) replay" in first["retry"]
    assert second == {"workflow_id": "nope", "ok": False,
                      "error": second["error"]} and "no workflow 'nope'" in second["error"]


def test_a_selection_acts_only_with_yes_and_a_dry_run_lists_it(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    _rows(store_path, {f"o-{i:02}": "failed" for i in range(12)})
    _rows(store_path, {"b-1": "blocked", "w-1": "waiting", "x-1": "completed"})
    before = _status(store_path)
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "--status", "failed")
    assert code == 1, (out, err)
    assert out == ("retry would act on 12 workflow(s): o-00, o-01, o-02, o-03, o-04, o-05, "
                   "o-06, o-07, o-08, o-09 and 2 more\n"), out
    assert err == ("garrison workflows: nothing done: add --yes to retry these 12 "
                   "workflow(s), or --dry-run to list them all\n"), err
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "--all", "--dry-run")
    assert (code, err) == (0, ""), err
    assert out.splitlines() == [f"o-{i:02}  failed" for i in range(12)] + [
        "b-1   blocked", "retry would act on 13 workflow(s) (--dry-run: nothing done)"]
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "--all", "--json")
    assert code == 1 and "add --yes" in err
    assert json.loads(out) == {"command": "retry", "selected": 13, "done": 0, "workflows": [
        {"workflow_id": f"o-{i:02}", "status": "failed"} for i in range(12)] + [
        {"workflow_id": "b-1", "status": "blocked"}]}
    assert _status(store_path) == before  # nothing done
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "--status", "failed",
                              "--yes")
    assert (code, err) == (0, ""), err
    assert out.splitlines()[-1] == "retry: 12 of 12 workflow(s) done", out
    after = _status(store_path)
    assert all(after[f"o-{i:02}"] == ("pending", 2) for i in range(12)), after
    assert after["b-1"] == ("blocked", 1) and after["w-1"] == ("waiting", 1)
    # the same command again: the selection is empty, nothing is retried twice
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "--status", "failed",
                              "--yes")
    assert (code, out, err) == (0, "no workflows to retry\n", ""), (out, err)
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "--status", "failed")
    assert (code, out, err) == (0, "no workflows to retry\n", ""), (out, err)
    assert _status(store_path) == after


def test_a_selection_takes_lists_filters(store_path: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """--search, --prefix (list's --id PREFIX) and --parent select as list does; a
    pending workflow no node ran is cancelled at once, as one cancel does."""
    _rows(store_path, {"eu-1": "pending", "eu-2": "waiting"}, search={"region": "eu"})
    _rows(store_path, {"us-1": "pending"}, search={"region": "us"})
    _rows(store_path, {"kid-1": "pending", "kid-2": "completed"}, parent="workflows/eu-2")
    code, out, err = cli_here(capsys, "--store", store_path, "cancel", "--search",
                              "region=eu", "--yes")
    assert (code, err) == (0, ""), err
    assert out.splitlines() == ["cancelled 'eu-1' (it was pending, never run)",
                                "cancel requested for 'eu-2'",
                                "cancel: 2 of 2 workflow(s) done"], out
    code, out, err = cli_here(capsys, "--store", store_path, "terminate", "--parent",
                              "workflows/eu-2", "--reason", "cleanup", "--yes")
    assert (code, err) == (0, ""), err
    assert out.splitlines() == [
        "workflow 'kid-1' terminated (failed: Terminated: cleanup)",
        "terminate: 1 of 1 workflow(s) done"], out
    code, out, err = cli_here(capsys, "--store", store_path, "terminate", "--prefix", "us-",
                              "--status", "pending", "--yes", "--json")
    assert (code, err) == (0, ""), err
    assert json.loads(out) == {"command": "terminate", "selected": 1, "done": 1,
                               "failed": 0, "workflows": [{
                                   "workflow_id": "us-1", "status": "failed", "ok": True,
                                   "error": {"type": "Terminated", "message": (
                                       "terminated by garrison workflows terminate")}}]}
    got = _status(store_path)
    assert got["eu-1"][0] == "cancelled" and got["kid-1"][0] == "failed", got
    assert got["us-1"][0] == "failed" and got["kid-2"][0] == "completed", got


@pytest.mark.parametrize(("args", "said"), [
    (["retry"], "retry takes the id of a workflow (or several), or a selection: "
                "--status, --search, --prefix, --parent or --all (as list's filters)"),
    (["retry", "--status", "failed,waiting"],
     "retry acts on workflows that are failed, blocked: --status waiting selects none it "
     "can act on"),
    (["cancel", "--status", "completed", "--status", "cancelled"],
     "cancel acts on workflows that are pending, running, sleeping, waiting, blocked: "
     "--status completed, cancelled selects none it can act on"),
    (["terminate", "--status", "bogus"], "--status 'bogus' is not a workflow status"),
    (["retry", "a", "--status", "failed"],
     "the IDs select the workflows themselves: they cannot be combined with --status"),
    (["cancel", "--all", "--search", "k=v"],
     "--all selects every workflow cancel can act on: it cannot be combined with "
     "--search"),
    (["retry", "--all", "--yes", "--dry-run"],
     "--dry-run does nothing and --yes acts: give one of them"),
    (["terminate", "--all", "--reason", " "], "--reason: a terminate reason must say why"),
    (["cancel", "--search", "k"], "--search takes KEY=VALUE, got 'k'"),
    (["cancel", "--prefix", ""], "--prefix '': an empty prefix selects every workflow: "
                                 "give --all for that"),
])
def test_a_selection_that_cannot_act_is_refused_before_the_store_is_read(
        tmp_path: Any, capsys: pytest.CaptureFixture[str], args: list[str],
        said: str) -> None:
    """(the store named does not exist: the arguments are refused first)"""
    code, out, err = cli_here(capsys, "--store", str(tmp_path / "none.db"), *args)
    assert (code, out) == (2, ""), (out, err)
    assert err.startswith(f"garrison workflows: {said}"), err


async def test_a_node_running_on_the_store_resumes_the_retried_workflows(
        store_path: str, capsys: pytest.CaptureFixture[str], autojump_clock: Any) -> None:
    """The outage: a payment service was down, the workflows failed with their
    activity's final error; once it is back, one command retries them all while the
    node runs, and the node runs each on from the failed activity."""
    async with garrison.open_node(store=store_path) as node:
        for item in ("lamp", "cup", "mug"):
            ops_app.FAILS[item] = 2  # both attempts of charge fail
            await node.start_workflow(ops_app.order, item, id=f"o-{item}")
        await node.start_workflow(ops_app.order, "pen", id="o-pen")  # (not failed)
        for item in ("lamp", "cup", "mug"):
            with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
                await node.workflow(f"o-{item}").result()
        code, out, err = await cli_async(capsys, "--store", store_path, "retry",
                                         "--status", "failed", "--yes")
        assert (code, err) == (0, ""), err
        assert out.splitlines()[-1] == "retry: 3 of 3 workflow(s) done", out
        # (no virtual deadline while the node works in threads: pytest's timeout is it)
        for item in ("lamp", "cup", "mug"):
            handle = node.workflow(f"o-{item}")
            while handle.status() == "failed":  # (the node hears of the retry by its
                await trio.sleep(0.01)  # doorbell: until then it answers from memory)
            await handle.signal("ship")  # (kept in its inbox until the retried run reads it)
            assert await handle.result() == f"res-{item} pay-{item} ship"
        assert ops_app.LOG.count(("reserve", "lamp")) == 1  # replayed, not run again
        assert node.workflow("o-pen").status() == "waiting"
        # again: nothing failed is left, nothing is retried twice
        code, out, err = await cli_async(capsys, "--store", store_path, "retry",
                                         "--status", "failed", "--yes")
        assert (code, out, err) == (0, "no workflows to retry\n", "")


async def test_a_node_running_on_the_store_ends_the_terminated_workflows(
        store_path: str, capsys: pytest.CaptureFixture[str], autojump_clock: Any) -> None:
    """Several terminates a node is asked for are each answered once it ended them."""
    async with garrison.open_node(store=store_path) as node:
        for n in range(4):
            await node.start_workflow(ops_app.waiting_child, n, id=f"w-{n}")
        while any(node.workflow(f"w-{n}").status() != "waiting" for n in range(4)):
            await trio.sleep(0.1)
        code, out, err = await cli_async(capsys, "--store", store_path, "terminate",
                                         "w-0", "w-2", "w-3", "--reason", "runaway")
        assert (code, err) == (0, ""), err
        lines = out.splitlines()  # (each said once the node ended it: in any order)
        assert sorted(lines[:-1]) == [
            f"workflow 'w-{n}' terminated (failed: Terminated: runaway)" for n in (0, 2, 3)]
        assert lines[-1] == "terminate: 3 of 3 workflow(s) done", out
        for n in (0, 2, 3):
            with pytest.raises(garrison.WorkflowFailed, match="Terminated: runaway"):
                await node.workflow(f"w-{n}").result()
        assert node.workflow("w-1").status() == "waiting"
        code, out, err = await cli_async(capsys, "--store", store_path, "terminate",
                                         "w-0", "w-1")
        assert code == 1 and "cannot terminate workflow 'w-0': it is failed" in out, out
        assert "workflow 'w-1' terminated" in out
        assert err == "garrison workflows: 1 of 2 workflow(s) could not be terminated: " \
                      "'w-0'\n", err


@pytest.mark.parametrize("node", ["stays", "goes"])
def test_several_terminates_a_node_does_not_answer_are_said_as_one_is(
        tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        node: str) -> None:
    """A node holds the store when each terminate is asked, and ends none of them: once
    it has ended none for the wait, each is said as one terminate says it (requested,
    exit 0); a node gone by then leaves them to be ended in the store, as one is."""
    from garrison import _cli_workflows

    path = str(tmp_path / "s.db")
    _rows(path, {"w-0": "waiting", "w-1": "sleeping", "w-2": "completed"})
    real = _cli_workflows.tools.open_store

    def opened(*args: Any, **kwargs: Any) -> Any:
        store = real(*args, **kwargs)
        answers = iter([True])  # the asks (one look for their batch); then the node
        # stays, or is gone
        store.node_running = lambda: next(answers, node == "stays")
        return store

    monkeypatch.setattr(_cli_workflows.tools, "open_store", opened)
    monkeypatch.setattr(_cli_workflows, "TERMINATE_WAIT", 0.05)
    code, out, err = cli_here(capsys, "--store", path, "terminate", "--prefix", "w-", "--yes",
                              "--reason", "stop")
    assert (code, err) == (0, ""), err
    if node == "stays":
        assert out.splitlines() == [
            f"workflow 'w-{n}': terminate requested; the node holding the store has not "
            "ended it yet (it ends it before running anything more, unless it ends on its "
            "own first: see garrison workflows show)" for n in (0, 1)] + [
            "terminate: 2 of 2 workflow(s) done"], out
        assert _status(path) == {"w-0": ("waiting", 1), "w-1": ("sleeping", 1),
                                 "w-2": ("completed", 1)}
    else:
        assert out.splitlines() == [
            f"workflow 'w-{n}' terminated (failed: Terminated: stop)" for n in (0, 1)] + [
            "terminate: 2 of 2 workflow(s) done"], out
        assert _status(path) == {"w-0": ("failed", 1), "w-1": ("failed", 1),
                                 "w-2": ("completed", 1)}


async def test_a_selection_of_a_tree_terminated_with_no_node_counts_the_children_ended_with_it(
        store_path: str, capsys: pytest.CaptureFixture[str], autojump_clock: Any) -> None:
    """With no node, terminating a parent ends its unfinished descendants with it in the
    store; the selection had them too (unfinished when selected), and reaching each
    found it failed: 'cannot terminate workflow 'p.1': it is failed', exit 1, for what
    was done as asked. One this command's terminate ended is said as terminated, with
    the error it holds."""
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(ops_app.parent_of_many, 2, 1, id="p")
        while len(node.hosts["workflows"].store.list_workflows(["waiting"])) < 5:
            await trio.sleep(0.1)
    _rows(store_path, {"other": "failed"})  # (terminated before, by another: not selected)
    code, out, err = cli_here(capsys, "--store", store_path, "terminate", "--all", "--yes",
                              "--reason", "cleanup")
    assert (code, err) == (0, ""), (out, err)
    lines = out.splitlines()
    assert lines[0] == "workflow 'p' terminated (failed: Terminated: cleanup)", out
    assert sorted(lines[1:-1]) == [
        "workflow 'p.1' terminated (failed: Terminated: its parent workflow 'p' was "
        "terminated)",
        "workflow 'p.2' terminated (failed: Terminated: its parent workflow 'p' was "
        "terminated)",
        "workflow 'p.3' terminated (failed: Terminated: its parent workflow 'p' was "
        "terminated)",
        "workflow 'p.3.1' terminated (failed: Terminated: its parent workflow 'p.3' was "
        "terminated)"], out
    assert lines[-1] == "terminate: 5 of 5 workflow(s) done", out
    # an id whose workflow had ended before the command is refused, as ever
    code, out, err = cli_here(capsys, "--store", store_path, "terminate", "p.1", "p.2")
    assert code == 1 and "error: cannot terminate workflow 'p.1': it is failed" in out, out


async def test_a_node_running_on_the_store_cancels_the_selected_workflows(
        store_path: str, capsys: pytest.CaptureFixture[str], autojump_clock: Any) -> None:
    """A cancel of a selection beside a node only asks, as one cancel does, and the
    node runs each workflow's cancellation (its handler's activity too)."""
    async with garrison.open_node(store=store_path) as node:
        for n in range(3):
            await node.start_workflow(ops_app.guarded, f"item-{n}", id=f"g-{n}")
        await node.start_workflow(ops_app.waiting_child, 9, id="other")
        while len(node.hosts["workflows"].store.list_workflows(["waiting"])) < 4:
            await trio.sleep(0.1)
        code, out, err = await cli_async(capsys, "--store", store_path, "cancel",
                                         "--prefix", "g-", "--yes")
        assert (code, err) == (0, ""), err
        assert out.splitlines() == [f"cancel requested for 'g-{n}'" for n in range(3)] + [
            "cancel: 3 of 3 workflow(s) done"], out
        for n in range(3):
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow(f"g-{n}").result()
        assert sorted(x for kind, x in ops_app.LOG if kind == "release") == [
            f"res-item-{n}" for n in range(3)]
        assert node.workflow("other").status() == "waiting"


def test_a_bulk_retry_commits_in_batches_and_one_changed_meanwhile_is_refused_alone(
        store_path: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The retries are committed a batch at a time (a commit each made 5,000 retries
    on PostgreSQL take minutes); a workflow that changed between its read and its
    batch's commit (a node's retry of it meanwhile) is refused on its line, and the
    others of its batch are retried, each once."""
    from garrison import _cli_workflows
    from garrison.hosts.workflow import _operate

    _rows(store_path, {f"o-{n}": "failed" for n in range(5)})
    real_open, real_retry = _cli_workflows.tools.open_store, _operate.retry_transaction
    writes: list[int] = []

    def opened(*args: Any, **kwargs: Any) -> Any:
        store = real_open(*args, **kwargs)
        real_each = store.write_each
        store.write = lambda tx: pytest.fail(f"a commit of its own: {tx!r}")

        def write_each(txs: Any) -> Any:
            writes.append(len(txs))
            return real_each(txs)

        store.write_each = write_each
        return store

    def retry_transaction(store: Any, record: Any) -> Any:
        made = real_retry(store, record)
        if record.workflow_id == "o-3":  # another retries it after this one read it
            with open_store(store_path, lock=False) as other:
                other.write(Transaction().update_workflow("o-3", status="pending",
                                                          attempt=2))
        return made

    monkeypatch.setattr(_cli_workflows.tools, "open_store", opened)
    monkeypatch.setattr(_operate, "retry_transaction", retry_transaction)
    monkeypatch.setattr(_cli_workflows, "BATCH", 2)
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "--all", "--yes")
    assert code == 1, (out, err)
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == [
        "workflow 'o-0' retried", "workflow 'o-1' retried", "workflow 'o-2' retried",
        "error", "workflow 'o-4' retried"], out
    assert lines[3].startswith("error: workflow 'o-3' changed since it was read"), out
    assert lines[5] == "retry: 4 of 5 workflow(s) done, 1 not (see their lines)", out
    assert err == "garrison workflows: 1 of 5 workflow(s) could not be retried: 'o-3'\n"
    assert writes == [2, 2, 1]  # (a batch of 2, three commits)
    assert _status(store_path) == {f"o-{n}": ("pending", 2) for n in range(5)}


def test_a_damaged_row_in_a_selection_is_named_on_its_line_and_the_others_are_acted_on(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A row whose JSON is no JSON (edited by hand, a bad restore) among the selected
    workflows stopped the whole selection (exit 2, nothing done) where ``list`` steps
    over it; now the others are acted on, the damaged one gets its line naming it and
    what is damaged, and the command ends naming it (exit 2, as for a damaged
    journal). A dry run lists it so too."""
    import sqlite3

    sqlite_path = str(tmp_path / "s.db")
    _rows(sqlite_path, {f"o-{n}": "failed" for n in range(4)})
    raw = sqlite3.connect(sqlite_path)
    raw.execute("UPDATE workflows SET input = '[bad' WHERE workflow_id = 'o-1'")
    raw.commit()
    raw.close()
    code, out, err = cli_here(capsys, "--store", sqlite_path, "retry", "--all", "--dry-run")
    assert code == 2, (out, err)
    lines = out.splitlines()
    assert lines[:3] == ["o-0  failed", "o-2  failed", "o-3  failed"], out
    assert lines[3].startswith("o-1  damaged: its input is not JSON ("), out
    assert lines[4] == "retry would act on 4 workflow(s) (--dry-run: nothing done)", out
    assert err.startswith(f"garrison workflows: store {sqlite_path!r} is damaged: workflow "
                          "'o-1': its input is not JSON ("), err
    code, out, err = cli_here(capsys, "--store", sqlite_path, "retry", "--all", "--yes")
    assert code == 2, (out, err)
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [
        "workflow 'o-0' retried", "workflow 'o-2' retried", "workflow 'o-3' retried"], out
    assert lines[3].startswith(f"error: store {sqlite_path!r} is damaged: workflow 'o-1': "
                               "its input is not JSON ("), out
    assert lines[4] == "retry: 3 of 4 workflow(s) done, 1 not (see their lines)", out
    assert err == "garrison workflows: 1 of 4 workflow(s) could not be retried: 'o-1'\n"
    with open_store(sqlite_path, lock=False) as s:
        assert [(str(r.status), r.attempt) for w in ("o-0", "o-2", "o-3")
                if (r := s.get_workflow(w))] == [("pending", 2)] * 3
    code, out, err = cli_here(capsys, "--store", sqlite_path, "retry", "--all", "--yes",
                              "--json")
    assert code == 2 and "could not be retried: 'o-1'" in err, (out, err)
    summary = json.loads(out)
    assert {k: v for k, v in summary.items() if k != "workflows"} == {
        "command": "retry", "selected": 1, "done": 0, "failed": 1}, summary
    assert summary["workflows"] == [{"workflow_id": "o-1", "ok": False, "error": (
        summary["workflows"][0]["error"])}], summary
    assert "is damaged: workflow 'o-1': its input is not JSON" in \
        summary["workflows"][0]["error"]


def test_a_selected_workflow_retried_and_failed_again_meanwhile_is_not_retried_twice(
        store_path: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two operators run the same bulk retry at once, beside a node whose retried runs
    fail again at once (the service is still down): by the second command's turn, a
    workflow it selected failed was retried by the first and failed again. It was
    retried a second time (attempt 3) by one command meant to retry it once; now it is
    refused on its line, as one retry of a workflow that changed since it was read is."""
    from garrison import _cli_workflows

    _rows(store_path, {f"o-{n}": "failed" for n in range(3)})
    real_select = _cli_workflows._select

    def select(store: Any, args: Any, damaged: Any) -> Any:
        rows = real_select(store, args, damaged)
        with open_store(store_path, lock=False) as other:  # the other command, the node
            other.write(Transaction().update_workflow("o-1", status="failed", attempt=2))
        return rows

    monkeypatch.setattr(_cli_workflows, "_select", select)
    code, out, err = cli_here(capsys, "--store", store_path, "retry", "--status", "failed",
                              "--yes")
    assert code == 1, (out, err)
    lines = out.splitlines()
    assert lines[1] == ("error: cannot retry workflow 'o-1': it was retried since it was "
                        "selected (it is failed, attempt 2): nothing was written"), out
    assert lines[2].startswith("workflow 'o-2' retried: "), out
    assert _status(store_path) == {"o-0": ("pending", 2), "o-1": ("failed", 2),
                                   "o-2": ("pending", 2)}


def test_a_bulk_cancel_commits_its_flags_in_batches_and_one_changed_meanwhile_is_asked_alone(
        store_path: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancel flags of a selection are committed a batch at a time (a commit each:
    some 6 ms a workflow on PostgreSQL); one whose workflow changed between its read
    and the batch's commit (a node moved it on: waiting, then sleeping) is cancelled
    alone from a new read, as one cancel does it; the pending ones that never ran, with
    no node, are ended in the store as ever, in a commit of their own. Each is asked
    once."""
    from garrison import _cli_workflows
    from garrison.hosts.workflow import _operate

    _rows(store_path, {f"w-{n}": "waiting" for n in range(4)})
    _rows(store_path, {"w-4": "pending", "w-5": "pending"})
    real_open, real_flag = _cli_workflows.tools.open_store, _operate.flag_transaction
    writes: list[int] = []

    def opened(*args: Any, **kwargs: Any) -> Any:
        store = real_open(*args, **kwargs)
        real_each = store.write_each

        def write_each(txs: Any, **kw: Any) -> Any:
            writes.append(len(txs))
            return real_each(txs, **kw)

        store.write_each = write_each
        return store

    def flag_transaction(record: Any, time: Any = None) -> Any:
        made = real_flag(record, time)
        if record.workflow_id == "w-1" and record.status == "waiting":
            with open_store(store_path, lock=False) as other:
                other.write(Transaction().update_workflow("w-1", status="sleeping"))
        return made

    monkeypatch.setattr(_cli_workflows.tools, "open_store", opened)
    monkeypatch.setattr(_operate, "flag_transaction", flag_transaction)
    monkeypatch.setattr(_cli_workflows, "BATCH", 3)
    code, out, err = cli_here(capsys, "--store", store_path, "cancel", "--all", "--yes")
    assert (code, err) == (0, ""), (out, err)
    assert out.splitlines() == [f"cancel requested for 'w-{n}'" for n in range(4)] + [
        "cancelled 'w-4' (it was pending, never run)",
        "cancelled 'w-5' (it was pending, never run)", "cancel: 6 of 6 workflow(s) done"]
    assert writes == [3, 2, 1], writes  # (w-0..w-2; the ends of w-4, w-5; w-3's flag)
    with open_store(store_path, lock=False) as s:
        got = {r.workflow_id: (str(r.status), r.cancel_requested) for r in s.list_workflows()}
    assert got == {"w-0": ("waiting", True), "w-1": ("sleeping", True),
                   "w-2": ("waiting", True), "w-3": ("waiting", True),
                   "w-4": ("cancelled", False), "w-5": ("cancelled", False)}, got


@pytest.mark.parametrize("node", ["holds the store", "none"])
def test_several_terminates_are_asked_or_ended_in_one_commit(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, node: str) -> None:
    """The requests a node holding the store is sent for several terminates, or with no
    node their ends in the store, are committed together (a commit each: most of a
    bulk terminate's time); one that cannot be (ended) is refused on its line, the
    others asked or ended once each."""
    from garrison import _cli_workflows

    path = str(tmp_path / "s.db")
    _rows(path, {"w-0": "waiting", "w-1": "sleeping", "w-2": "completed", "w-3": "waiting"})
    real = _cli_workflows.tools.open_store
    writes: list[int] = []

    def opened(*args: Any, **kwargs: Any) -> Any:
        store = real(*args, **kwargs)
        if node != "none":
            store.node_running = lambda: True  # (a node that ends none of them)
        real_each = store.write_each
        store.write = lambda tx: pytest.fail(f"a commit of its own: {tx!r}")

        def write_each(txs: Any, **kw: Any) -> Any:
            writes.append(len(txs))
            return real_each(txs, **kw)

        store.write_each = write_each
        return store

    monkeypatch.setattr(_cli_workflows.tools, "open_store", opened)
    monkeypatch.setattr(_cli_workflows, "TERMINATE_WAIT", 0.05)
    code, out, err = cli_here(capsys, "--store", path, "terminate", "w-0", "w-1", "w-2",
                              "w-3", "--reason", "stop")
    assert code == 1, (out, err)
    lines = out.splitlines()
    refused = "error: cannot terminate workflow 'w-2': it is completed"
    if node == "none":
        assert lines[:4] == [f"workflow 'w-{n}' terminated (failed: Terminated: stop)"
                             for n in (0, 1)] + [refused] + [
            "workflow 'w-3' terminated (failed: Terminated: stop)"], out
    else:
        assert lines[0] == refused, out
        assert [line.split(":")[0] for line in lines[1:4]] == [
            f"workflow 'w-{n}'" for n in (0, 1, 3)], out
        assert all(": terminate requested;" in line for line in lines[1:4]), out
    assert writes == [3], writes
    with open_store(path, lock=False) as s:
        if node == "none":
            assert {w: str(s.get_workflow(w).status) for w in ("w-0", "w-1", "w-3")} == {
                w: "failed" for w in ("w-0", "w-1", "w-3")}
        else:
            asked = {w: [m.topic for m in s.pending_messages(w)] for w in ("w-0", "w-1", "w-3")}
            assert asked == {w: ["terminate"] for w in ("w-0", "w-1", "w-3")}, asked


def test_a_bulk_cancel_of_a_workflow_its_node_ends_meanwhile_says_it_ended(
        store_path: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The node ends a selected workflow on its own between the cancel's read and its
    batch's commit: nothing is written for it, its line says it ended (exit 1), and the
    others of its batch are asked, each once."""
    from garrison.hosts.workflow import _operate

    _rows(store_path, {f"w-{n}": "waiting" for n in range(3)})
    real_flag = _operate.flag_transaction

    def flag_transaction(record: Any, time: Any = None) -> Any:
        made = real_flag(record, time)
        if record.workflow_id == "w-1":  # the node completes it meanwhile
            with open_store(store_path, lock=False) as other:
                other.write(Transaction().update_workflow("w-1", status="completed",
                                                          result="done"))
        return made

    monkeypatch.setattr(_operate, "flag_transaction", flag_transaction)
    code, out, err = cli_here(capsys, "--store", store_path, "cancel", "--all", "--yes")
    assert code == 1, (out, err)
    assert out.splitlines() == [
        "cancel requested for 'w-0'", "error: cannot cancel workflow 'w-1': it is completed",
        "cancel requested for 'w-2'", "cancel: 2 of 3 workflow(s) done, 1 not (see their "
        "lines)"], out
    assert err == "garrison workflows: 1 of 3 workflow(s) could not be cancelled: 'w-1'\n"
    with open_store(store_path, lock=False) as s:
        got = {r.workflow_id: (str(r.status), r.cancel_requested) for r in s.list_workflows()}
    assert got == {"w-0": ("waiting", True), "w-1": ("completed", False),
                   "w-2": ("waiting", True)}, got


def test_a_child_its_node_ended_with_a_parent_of_an_earlier_batch_is_said_as_terminated(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside a node, a selection's parent is asked in one batch and the node ends it,
    its child with it, before a later batch reads the child: the child was ended by
    this command's terminate and is said as terminated with the error it holds, as with
    no node (it was refused, 'it is failed', exit 1)."""
    from garrison import _cli_workflows
    from garrison.hosts.workflow import parent_terminated

    path = str(tmp_path / "s.db")
    _rows(path, {"p": "waiting"})
    _rows(path, {"p.1": "waiting"}, parent="workflows/p")
    real = _cli_workflows.tools.open_store
    real_each = _cli_workflows.tools.ask_terminate_each

    def opened(*args: Any, **kwargs: Any) -> Any:
        store = real(*args, **kwargs)
        store.node_running = lambda: True  # (a node that ends the parent's tree)
        return store

    def ask_terminate_each(store: Any, ids: Any, reason: str) -> Any:
        made = real_each(store, ids, reason)
        if list(ids) == ["p"]:  # the node ends the parent and its child meanwhile
            with open_store(path, lock=False) as other:
                for wid, error in (("p", garrison.ErrorInfo("Terminated", reason)),
                                   ("p.1", parent_terminated("p"))):
                    other.write(Transaction().update_workflow(wid, status="failed",
                                                              error=error))
        return made

    monkeypatch.setattr(_cli_workflows.tools, "open_store", opened)
    monkeypatch.setattr(_cli_workflows.tools, "ask_terminate_each", ask_terminate_each)
    monkeypatch.setattr(_cli_workflows, "BATCH", 1)
    monkeypatch.setattr(_cli_workflows, "TERMINATE_WAIT", 0.05)
    code, out, err = cli_here(capsys, "--store", path, "terminate", "--all", "--yes",
                              "--reason", "cleanup")
    assert (code, err) == (0, ""), (out, err)
    assert sorted(out.splitlines()) == sorted([
        "workflow 'p' terminated (failed: Terminated: cleanup)",
        "workflow 'p.1' terminated (failed: Terminated: its parent workflow 'p' was "
        "terminated)",
        "terminate: 2 of 2 workflow(s) done"]), out


def test_a_store_failure_in_a_later_batch_leaves_the_terminates_asked_before_said(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside a node, the store fails at a later batch of a bulk terminate: the
    workflows an earlier batch asked the node to end (committed) are each said as one
    terminate says it, then the command ends with the store's error (exit 2). They had
    no line at all: each is said once the node ends it, after every batch, and the
    error ended the command first."""
    from garrison import _cli_workflows

    path = str(tmp_path / "s.db")
    _rows(path, {"w-0": "waiting", "w-1": "waiting"})
    _second_batch_fails(monkeypatch, path, node=True)
    monkeypatch.setattr(_cli_workflows, "BATCH", 1)
    monkeypatch.setattr(_cli_workflows, "TERMINATE_WAIT", 0.05)
    code, out, err = cli_here(capsys, "--store", path, "terminate", "--all", "--yes",
                              "--reason", "stop")
    assert code == 2, (out, err)
    assert out.splitlines() == [
        "workflow 'w-0': terminate requested; the node holding the store has not ended it "
        "yet (it ends it before running anything more, unless it ends on its own first: "
        "see garrison workflows show)"], out
    assert "the disk is full" in err, err


def test_a_child_its_node_cancelled_with_a_parent_of_an_earlier_batch_is_said_as_cancelled(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside a node, a selection's parent is asked to cancel in one batch and the node
    cancels it, its child and grandchild with it, before a later batch reads them: each
    was cancelled by this command's cancel and is said so, as a terminate says such a
    child terminated (they were refused, 'it is cancelled', exit 1). A workflow that
    ended cancelled with a parent this command did not cancel is refused as ever."""
    from garrison import _cli_workflows
    from garrison.hosts.workflow._core import cancelled_error

    path = str(tmp_path / "s.db")
    _rows(path, {"p": "waiting", "q": "waiting"})
    _rows(path, {"p.1": "waiting"}, parent="workflows/p")
    _rows(path, {"p.1.1": "waiting"}, parent="workflows/p.1")
    _rows(path, {"o.1": "waiting"}, parent="workflows/o")
    real = _cli_workflows.tools.open_store
    real_each = _cli_workflows.tools.cancel_each

    def opened(*args: Any, **kwargs: Any) -> Any:
        store = real(*args, **kwargs)
        store.node_running = lambda: True  # (a node that cancels the parent's tree)
        return store

    def cancel_each(store: Any, ids: Any) -> Any:
        made = real_each(store, ids)
        if list(ids) == ["p"]:  # the node cancels the parent's tree meanwhile, and
            with open_store(path, lock=False) as other:  # o.1 with a parent not ours
                for wid in ("p", "p.1", "p.1.1", "o.1"):
                    other.write(Transaction().update_workflow(
                        wid, status="cancelled", error=cancelled_error(wid)))
        return made

    monkeypatch.setattr(_cli_workflows.tools, "open_store", opened)
    monkeypatch.setattr(_cli_workflows.tools, "cancel_each", cancel_each)
    monkeypatch.setattr(_cli_workflows, "BATCH", 1)
    code, out, err = cli_here(capsys, "--store", path, "cancel", "p", "p.1", "p.1.1",
                              "q", "o.1")
    assert code == 1, (out, err)
    assert out.splitlines() == [
        "cancel requested for 'p'",
        "cancelled 'p.1' (with its parent 'p')",
        "cancelled 'p.1.1' (with its parent 'p.1')",
        "cancel requested for 'q'",
        "error: cannot cancel workflow 'o.1': it is cancelled",
        "cancel: 4 of 5 workflow(s) done, 1 not (see their lines)"], out
    assert err == "garrison workflows: 1 of 5 workflow(s) could not be cancelled: 'o.1'\n"


def test_json_of_a_bulk_command_whose_store_fails_at_a_later_batch_says_what_was_done(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--json, and the store fails at the second batch of a bulk retry: the summary is
    printed all the same, the first batch's workflow done (committed), the others in
    ``left`` with the store's ``error``, then the command fails as without --json (exit
    2, the error on stderr). It printed nothing: the retry committed was not said."""
    from garrison import _cli_workflows

    path = str(tmp_path / "s.db")
    _rows(path, {"w-0": "failed", "w-1": "failed", "w-2": "failed"})
    _second_batch_fails(monkeypatch, path)
    monkeypatch.setattr(_cli_workflows, "BATCH", 1)
    code, out, err = cli_here(capsys, "--store", path, "retry", "--all", "--yes", "--json")
    assert code == 2, (out, err)
    assert "the disk is full" in err, err
    got = json.loads(out)
    assert [(a["workflow_id"], a["ok"]) for a in got.pop("workflows")] == [("w-0", True)]
    assert got == {"command": "retry", "selected": 3, "done": 1, "failed": 0,
                   "left": ["w-1", "w-2"], "error": f"store {path!r}: the disk is full"}, got
    assert _status(path) == {"w-0": ("pending", 2), "w-1": ("failed", 1),
                             "w-2": ("failed", 1)}


@pytest.mark.parametrize("raw", ["psycopg", "sqlite3", "os"])
def test_json_of_a_bulk_command_names_the_store_in_a_raw_error_as_its_text_does(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    """The store fails a later batch with an error of its driver (psycopg's, as a
    PostgreSQL server that hangs up raises it; sqlite3's; the OS's), not a
    ``StoreError``: the command's error on stderr names the store, but --json's
    ``error`` was the driver's bare text, naming no store. It is the same text."""
    import sqlite3

    import psycopg

    from garrison import _cli_workflows

    error = {"psycopg": psycopg.OperationalError("server closed the connection "
                                                 "unexpectedly\n"),
             "sqlite3": sqlite3.OperationalError("disk I/O error"),
             "os": OSError(28, "No space left on device")}[raw]
    text, as_json = str(tmp_path / "text.db"), str(tmp_path / "json.db")
    for path in (text, as_json):
        _rows(path, {"w-0": "failed", "w-1": "failed"})
    _second_batch_fails(monkeypatch, text, error=error)
    monkeypatch.setattr(_cli_workflows, "BATCH", 1)
    code, out, err = cli_here(capsys, "--store", text, "retry", "--all", "--yes")
    assert code == 2, (out, err)
    said = err.removeprefix("garrison workflows: ").removesuffix("\n")
    assert said.startswith(f"store {text!r}") and said != err, err
    said = said.replace(text, as_json)
    code, out, err = cli_here(capsys, "--store", as_json, "retry", "--all", "--yes",
                              "--json")
    assert code == 2, (out, err)
    assert err == f"garrison workflows: {said}\n", err
    assert json.loads(out)["error"] == said, out


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_a_bulk_cancel_whose_flags_meet_a_store_failure_says_the_pending_it_ended(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, json_flag: tuple[str, ...]) -> None:
    """With no node, a cancel batch ends its pending workflows that never ran in one
    commit, then flags the others in another: the store fails at the second. The
    pending one ended (committed) is said as ended before the error ends the command
    (exit 2), the flagged one left. It was not said at all: the batch raised the error
    with nothing of it said, as if no write of it stood."""

    path = str(tmp_path / "s.db")
    _rows(path, {"a": "pending", "b": "waiting"})
    _second_batch_fails(monkeypatch, path)
    code, out, err = cli_here(capsys, "--store", path, "cancel", "a", "b", *json_flag)
    assert code == 2 and "the disk is full" in err, (out, err)
    if json_flag:
        got = json.loads(out)
        assert (got["workflows"], got["left"]) == ([
            {"workflow_id": "a", "cancel_requested": True, "cancelled": True,
             "ok": True}], ["b"]), got
    else:
        assert out.splitlines() == ["cancelled 'a' (it was pending, never run)"], out
    assert _status(path) == {"a": ("cancelled", 1), "b": ("waiting", 1)}
