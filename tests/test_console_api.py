"""The web console's JSON API and pages, through httpx's ASGI transport (no sockets):
on a store (as ``garrison ui`` opens it, with and without a node holding it) and
attached to a running node; paging, filters, actions, and the security rules."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import console_app
import httpx
import ops_app
import pytest
import trio
import trio.testing
from _stores import no_digit_limit

import garrison
from garrison import _store_tools
from garrison.console import check_bind
from garrison.console._app import make_app
from garrison.console._backend import NodeBackend, StoreBackend
from garrison.persistence import SQLiteStore, Transaction

BASE = "http://127.0.0.1:8233"
TOKEN = "s3cret-token-for-the-tests"
#: the cookies of a console the browser addresses as BASE: named for its port
CSRF = "garrison_csrf_8233"
SESSION = "garrison_session_8233"


def client(app: Any, base: str = BASE) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


async def post(c: httpx.AsyncClient, path: str, body: Any = None) -> httpx.Response:
    """A POST as the console's page makes it: the CSRF cookie echoed in the header."""
    name = "garrison_csrf" + (f"_{c.base_url.port}" if c.base_url.port else "")
    if name not in c.cookies:
        assert (await c.get("/")).status_code == 200
    return await c.post(path, json={} if body is None else body,
                        headers={"X-Garrison-CSRF": c.cookies[name]})


async def until(predicate: Any) -> None:
    while not predicate():
        await trio.sleep(0.01)


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "console.db")


@pytest.fixture
async def seeded(store_path: str, autojump_clock: Any) -> AsyncIterator[str]:
    """A store with a waiting ``gated`` workflow, a ``listening`` one and a failed one
    (no node holds it afterwards: parked workflows keep their last status)."""
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(console_app.gated, "alpha", id="g-1")
        await node.start_workflow(console_app.listening, id="l-1")
        await node.start_workflow(console_app.boom, "<script>alert(1)</script>", id="b-1")
        await until(lambda: node.workflow("g-1").status() == "waiting"
                    and node.workflow("l-1").status() == "waiting")
        with pytest.raises(garrison.WorkflowFailed):
            await node.workflow("b-1").result()
    yield store_path


# ------------------------------------------------------------------ reads
async def test_the_page_of_a_workflow_no_store_holds_is_a_404(seeded: str) -> None:
    """A link to a workflow that is not there (a typo, one deleted with its store)
    answers 404 with the reason on the page, as its API does (it was a 200 page that
    only its script filled with the error)."""
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        page = await c.get("/workflows/nope")
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert f"no workflow &#39;nope&#39; in {seeded}" in page.text, page.text
        api = await c.get("/api/workflows/nope")
        assert api.status_code == 404 and api.json()["error"] == f"no workflow 'nope' in {seeded}"
        assert (await c.get("/workflows/g-1")).status_code == 200
        bad_host = await c.get("/workflows/g-1?host=x")  # the page loads; its API says why
        assert bad_host.status_code == 200
        # a crafted link's bidi control shows as its \uXXXX in the title and heading
        # (as the script shows every text of the data), not reordering the text
        crafted = await c.get("/workflows/pay-%E2%80%AEtxt.exe")
        assert crafted.status_code == 404 and "\u202e" not in crafted.text.split(
            "data-workflow-id")[0] + crafted.text.split("</h1>")[0].split("<h1")[1]
        assert "<title>pay-\\u202Etxt.exe · garrison</title>" in crafted.text
        # and so do the characters that show nothing (helper-215: "appr\u200boval" read
        # as "approval"), and control characters; a tab or newline stays
        hidden = await c.get("/workflows/appr%E2%80%8Boval%EF%BB%BF%1B%C2%85")
        assert "<title>appr\\u200Boval\\uFEFF\\u001B\\u0085 · garrison</title>" in \
            hidden.text, hidden.text[:300]
        # a carriage return too ("approve\r" read as "approve"), and every character
        # console.js shows escaped (a combining grapheme joiner, a tag character as its
        # two, as JSON and the script write it; helper-313)
        alike = await c.get("/workflows/appr%CD%8Foval%F3%A0%81%81%0D")
        assert "<title>appr\\u034Foval\\uDB40\\uDC41\\u000D · garrison</title>" in \
            alike.text, alike.text[:300]
        assert "appr\\u034Foval\\uDB40\\uDC41\\u000D</span>" in alike.text
    store.close()


async def test_list_detail_and_capabilities_on_a_store(seeded: str) -> None:
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        caps = (await c.get("/api/capabilities")).json()
        assert caps["live"] is False and caps["retry"] is True
        assert caps["actions"] == ["signal", "resolve", "reject", "cancel", "retry"]
        assert "waiting" in caps["statuses"]

        page = (await c.get("/api/workflows")).json()
        assert [w["workflow_id"] for w in page["workflows"]] == ["b-1", "l-1", "g-1"]
        assert page["next"] is None
        oldest = (await c.get("/api/workflows?order=oldest")).json()
        assert [w["workflow_id"] for w in oldest["workflows"]] == ["g-1", "l-1", "b-1"]
        waiting = (await c.get("/api/workflows?status=waiting")).json()["workflows"]
        assert {w["workflow_id"] for w in waiting} == {"g-1", "l-1"}
        searched = (await c.get("/api/workflows", params={"search": "label=alpha"})).json()
        assert [w["workflow_id"] for w in searched["workflows"]] == ["g-1"]
        assert searched["workflows"][0]["search"] == {"label": "alpha", "team": "red"}
        by_id = (await c.get("/api/workflows?id=l-")).json()["workflows"]
        assert [w["workflow_id"] for w in by_id] == ["l-1"]

        d = (await c.get("/api/workflows/g-1")).json()
        w = d["workflow"]
        assert w["status"] == "waiting" and w["input"] == ["alpha"]
        assert w["name"] == "console_app:gated" and w["pid"] == "workflows/g-1"
        assert d["state"] == {"stage": "waiting for go"}
        assert [(p["name"], p["status"]) for p in d["promises"]] == [("go", "pending")]
        assert [(t["kind"], t["seq"]) for t in d["timers"]] == [("timer", 2)]
        kinds = [(r["seq"], r["kind"], r["name"]) for r in d["journal"]]
        assert kinds[:2] == [(1, "promise", "go"), (2, "timer", "")]
        assert all(set(r) >= {"seq", "kind", "name", "outcome", "attempts", "time", "ok"}
                   for r in d["journal"])
        assert d["actions"] == {"signal": True, "cancel": True, "resolve": ["go"],
                                "retry": False, "retry_note": None}
        assert d["parent"] is None and d["children"] == []

        failed = (await c.get("/api/workflows/b-1")).json()
        assert failed["workflow"]["status"] == "failed"
        error = failed["workflow"]["error"]
        assert error["type"] == "RuntimeError" and error["message"] == "<script>alert(1)</script>"
        assert "Traceback (most recent call last)" in error["traceback"]
        assert failed["actions"] == {"signal": False, "cancel": False, "resolve": [],
                                     "retry": True, "retry_note": None}

        missing = await c.get("/api/workflows/nope")
        assert missing.status_code == 404 and "no workflow 'nope'" in missing.json()["error"]
        bad = await c.get("/api/workflows?status=sleepy")
        assert bad.status_code == 400 and "'sleepy' is not a workflow status" in bad.json()["error"]
        bad = await c.get("/api/workflows?after=garbage!")
        assert bad.status_code == 400 and "cursor" in bad.json()["error"]
        assert (await c.get("/api/workflows?limit=0")).status_code == 400
        # an Arabic-Indic digit or spaces (int() reads both) are no limit; a long one
        # is named cut, not echoed whole
        for odd in ("%D9%A3", "%203%20", "+3"):
            got = await c.get(f"/api/workflows?limit={odd}")
            assert got.status_code == 400, odd
            assert "expected a whole number" in got.json()["error"]
        long = await c.get("/api/workflows?limit=" + "9" * 5000)
        assert long.status_code == 400
        assert long.json()["error"] == ("limit=9999999999999999999999999999999999999999... "
                                        "(5000 characters): expected 1..500"), long.json()
        assert (await c.get("/api/node")).status_code == 404
        # (and so is its page: it only polled that 404 for ever, helper-215)
        page = await c.get("/node")
        assert page.status_code == 404 and page.text.startswith(
            "the console is not attached to a running node"), page.text
    store.close()


async def test_actions_on_a_store_wake_the_node_that_holds_it(
        store_path: str, autojump_clock: Any) -> None:
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(console_app.gated, "beta", None, id="g-2")
        await node.start_workflow(console_app.listening, id="l-2")
        await node.start_workflow(console_app.gated, "gamma", None, id="g-3")
        await node.start_workflow(console_app.gated, "delta", None, id="g-4")
        await until(lambda: all(node.workflow(w).status() == "waiting"
                                for w in ("g-2", "l-2", "g-3", "g-4")))
        store = _store_tools.open_store(store_path)  # a tool's store, as garrison ui opens it
        async with client(make_app(StoreBackend(store))) as c:
            r = await post(c, "/api/workflows/g-2/promises/go/resolve", {"value": {"by": "ann"}})
            assert r.status_code == 200 and r.json()["resolved"] == {"by": "ann"}
            assert await node.workflow("g-2").result() == {"label": "beta",
                                                           "go": {"by": "ann"}}
            r = await post(c, "/api/workflows/l-2/signal", {"topic": "ping", "payload": [1]})
            assert r.status_code == 200 and r.json()["message_id"].startswith("cli-")
            assert await node.workflow("l-2").result() == {"topic": "ping", "payload": [1]}
            r = await post(c, "/api/workflows/g-3/promises/go/reject", {"message": "no"})
            assert r.status_code == 200
            with pytest.raises(garrison.WorkflowFailed, match="rejected: no"):
                await node.workflow("g-3").result()
            assert (await post(c, "/api/workflows/g-4/cancel")).status_code == 200
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("g-4").result()

            # a finished workflow refuses every action, naming its status
            r = await post(c, "/api/workflows/g-2/signal", {"topic": "late"})
            assert r.status_code == 409 and "it is completed" in r.json()["error"]
            r = await post(c, "/api/workflows/g-2/promises/go/resolve", {"value": 1})
            assert r.status_code == 409
            r = await post(c, "/api/workflows/missing/cancel")
            assert r.status_code == 404
            r = await post(c, "/api/workflows/g-2/signal", {"payload": 1})
            assert r.status_code == 400 and "'topic'" in r.json()["error"]
            r = await post(c, "/api/workflows/g-2/promises/go/reject", {"message": 3})
            assert r.status_code == 400 and "'message'" in r.json()["error"]
            r = await c.post("/api/workflows/g-2/cancel", content=b"[1,",
                             headers={"X-Garrison-CSRF": c.cookies[CSRF]})
            assert r.status_code == 400 and "JSON object" in r.json()["error"]
            r = await post(c, "/api/workflows/g-2/retry")
            assert r.status_code == 409 and "cannot retry workflow 'g-2': it is completed" \
                in r.json()["error"]
            assert (await post(c, "/api/workflows/missing/retry")).status_code == 404

            # retry: the service is back; the node that holds the store runs it again
            ops_app.FAILS["lamp"] = 2
            await node.start_workflow(ops_app.order, "lamp", id="o-1")
            with pytest.raises(garrison.WorkflowFailed):
                await node.workflow("o-1").result()
            detail = (await c.get("/api/workflows/o-1")).json()
            assert detail["actions"]["retry"] is True
            assert detail["actions"]["retry_note"] is None  # (the charge runs again)
            r = await post(c, "/api/workflows/o-1/retry")
            assert r.status_code == 200, r.text
            assert r.json() == {"ok": True, "workflow_id": "o-1", "retry": (
                "1 journal record(s) replay; the workflow runs again from seq 2, where "
                "activity 'ops_app:charge' failed")}
            await until(lambda: node.workflow("o-1").status() == "waiting")
            await node.workflow("o-1").signal("ship")
            assert await node.workflow("o-1").result() == "res-lamp pay-lamp ship"
            assert store.get_workflow("o-1").attempt == 2
        store.close()


async def test_a_retry_that_replays_to_the_same_failure_is_noted_before_it_is_asked(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A workflow that failed with an activity's final error and recorded a step after
    it (a compensation) replays to the same failure when retried: the console offered
    Retry as for any failed workflow, and said so only once it had retried (where
    ``garrison workflows retry`` says it). Its answer notes it beside ``retry`` now, on
    a store and attached to a node, and the retry is still done (code deployed since
    may handle the error), saying the same."""
    ops_app.FAILS["lamp"] = 2
    note = ("note: it failed with the final error of activity 'ops_app:charge' (seq 1), "
            "which its code raised after the journal's last record (activity "
            "'ops_app:release', seq 2): nothing is taken back, and the same code replays "
            "to the same failure")
    store_path = str(tmp_path / "s.db")
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(ops_app.charges_or_releases, "lamp", id="s-1")
        with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
            await node.workflow("s-1").result()
        store = _store_tools.open_store(store_path)
        for backend in (NodeBackend(node), StoreBackend(store)):
            async with client(make_app(backend)) as c:
                actions = (await c.get("/api/workflows/s-1")).json()["actions"]
                assert actions["retry"] is True
                assert actions["retry_note"].startswith(note), actions
        async with client(make_app(StoreBackend(store))) as c:
            r = await post(c, "/api/workflows/s-1/retry")
            assert r.status_code == 200 and note in r.json()["retry"], r.text
        with pytest.raises(garrison.WorkflowFailed, match="payments are down"):
            await node.workflow("s-1").result()
        assert store.get_workflow("s-1").attempt == 2
        store.close()


def test_a_store_on_a_read_only_file_system_is_shown_and_its_actions_refused(
        tmp_path: Path) -> None:
    """A backup on a read-only mount: ``garrison ui --store`` (and ``serve_console``)
    opened it for writing and stopped at once ("cannot be opened for writing:
    Read-only file system"), where ``garrison workflows list`` reads it. The console
    opens it read-only now, shows it (the header says read-only), and refuses each
    action, 409 naming the store, rather than fail on SQLite's write."""
    import textwrap

    from test_persistence_file import _read_only_available, run_on_read_only

    if not _read_only_available(tmp_path):
        pytest.skip("needs unshare and mount in a user namespace")
    data = tmp_path / "ro"
    data.mkdir()
    path = str(data / "wf.db")
    with SQLiteStore(path) as s:
        s.write(Transaction().create_workflow("w1", "app:flow", [1]))
    code = textwrap.dedent(f"""
        from functools import partial
        import httpx, trio
        from garrison import _cli
        from garrison.console import serve_console

        def stop(fn):  # (garrison ui opened the store: it stops at once)
            raise KeyboardInterrupt
        _cli._unwrapped = stop
        print("ui", _cli.main(["ui", "--store", {path!r}, "--bind", "127.0.0.1:0"]))

        async def main():
            async with trio.open_nursery() as nursery:
                where = await nursery.start(partial(serve_console, store={path!r},
                                                    bind="127.0.0.1:0"))
                async with httpx.AsyncClient(base_url=where.url) as c:
                    page = await c.get("/")
                    print("page", page.status_code, "(read-only)" in page.text)
                    rows = (await c.get("/api/workflows")).json()["workflows"]
                    print("list", [w["workflow_id"] for w in rows])
                    print("show", (await c.get("/api/workflows/w1")).status_code)
                    csrf = {{"X-Garrison-CSRF":
                            c.cookies[f"garrison_csrf_{{httpx.URL(where.url).port}}"]}}
                    for action, body in (("signal", {{"topic": "go"}}),
                                         ("promises/p/resolve", {{"value": 1}}),
                                         ("promises/p/reject", {{"message": "no"}}),
                                         ("cancel", {{}}), ("retry", {{}})):
                        r = await c.post("/api/workflows/w1/" + action, json=body,
                                         headers=csrf)
                        print(action, r.status_code, r.json()["error"], flush=True)
                nursery.cancel_scope.cancel()
        trio.run(main)
    """)
    done = run_on_read_only(data, code)
    lines = done.stdout.splitlines()
    assert lines[:4] == ["ui 130", "page 200 True", "list ['w1']", "show 200"], (
        done.stdout + done.stderr)
    said = (f"store {path!r} is open read-only (as a file on a read-only file system, or "
            "one this process may not write, is opened): the console shows its workflows "
            "and changes nothing")
    assert lines[4:] == [
        f"signal 409 cannot signal workflow 'w1': {said}",
        f"promises/p/resolve 409 cannot resolve a promise of workflow 'w1': {said}",
        f"promises/p/reject 409 cannot reject a promise of workflow 'w1': {said}",
        f"cancel 409 cannot cancel workflow 'w1': {said}",
        f"retry 409 cannot retry workflow 'w1': {said}"], done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr


async def test_a_store_file_this_process_may_not_write_is_opened_read_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store file the console's user may read but not write: SQLite opened it
    read-only unasked, and an action failed on its write, a 503 saying the store was
    damaged. ``garrison ui`` opens it read-only (as on a read-only mount) and refuses
    the actions, 409. (Root writes any file: this process is told it may not.)"""
    path = str(tmp_path / "wf.db")
    with SQLiteStore(path) as s:
        s.write(Transaction().create_workflow("w1", "app:flow", [1]))
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False
                        if p == path and mode & os.W_OK else access(p, mode, **kw))
    store = _store_tools.open_store(path, reads=True)  # as garrison ui opens it
    async with client(make_app(StoreBackend(store))) as c:
        assert "(read-only)" in (await c.get("/")).text
        r = await post(c, "/api/workflows/w1/cancel")
        assert r.status_code == 409, r.text
        assert r.json()["error"].startswith(f"cannot cancel workflow 'w1': store {path!r} is "
                                            "open read-only")
    store.close()
    with SQLiteStore(path, lock=False) as s:
        assert not s.get_workflow("w1").cancel_requested


async def test_attached_to_a_node_live_statuses_actions_and_processes(
        tmp_path: Path, autojump_clock: Any) -> None:
    async with garrison.open_node(config=_services_config(tmp_path),
                                  store=str(tmp_path / "live.db")) as node:
        await node.start_workflow(console_app.gated, "bravo", None, id="g-5")
        await node.start_workflow(console_app.parent_of_gated, id="p-1")
        await node.start_workflow(console_app.listening, id="l-3")
        await until(lambda: all(node.workflow(w).status() == "waiting"
                                for w in ("g-5", "p-1", "l-3")))
        await until(lambda: node.workflow("p-1.1").status() == "waiting")
        # the host tells the store within PARKED_DELAY; the list's filters query the store
        store = node.hosts["workflows"].store
        await until(lambda: {w.workflow_id for w in store.list_workflows("waiting")}
                    == {"g-5", "p-1", "p-1.1", "l-3"})
        async with client(make_app(NodeBackend(node))) as c:
            assert (await c.get("/api/capabilities")).json()["live"] is True
            # the store says running; the node knows they wait
            waiting = (await c.get("/api/workflows?status=waiting&limit=2")).json()
            assert len(waiting["workflows"]) == 2 and waiting["next"] is not None
            rest = (await c.get("/api/workflows", params={"status": "waiting",
                                                          "after": waiting["next"]})).json()
            ids = [w["workflow_id"] for w in waiting["workflows"] + rest["workflows"]]
            assert sorted(ids) == sorted(["g-5", "p-1", "p-1.1", "l-3"]) and rest["next"] is None
            assert (await c.get("/api/workflows?status=running")).json()["workflows"] == []

            parent = (await c.get("/api/workflows/p-1")).json()
            assert [(k["workflow_id"], k["status"]) for k in parent["children"]] == [
                ("p-1.1", "waiting")]
            child = (await c.get("/api/workflows/p-1.1")).json()
            assert child["parent"] == {"pid": "workflows/p-1", "workflow_id": "p-1",
                                       "host": "workflows"}

            assert (await post(c, "/api/workflows/p-1.1/promises/go/resolve",
                               {"value": "yes"})).status_code == 200
            assert await node.workflow("p-1").result() == {"label": "child", "go": "yes"}
            assert (await post(c, "/api/workflows/l-3/signal",
                               {"topic": "ping", "payload": None})).status_code == 200
            assert await node.workflow("l-3").result() == {"topic": "ping", "payload": None}
            assert (await post(c, "/api/workflows/g-5/cancel")).status_code == 200
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("g-5").result()
            r = await post(c, "/api/workflows/g-5/promises/go/resolve", {"value": 1})
            assert r.status_code == 409 and "cancelled" in r.json()["error"]

            r = await post(c, "/api/workflows/l-3/retry")  # completed
            assert r.status_code == 409 and "only a failed or blocked" in r.json()["error"]
            ops_app.FAILS["cup"] = 2
            await node.start_workflow(ops_app.order, "cup", id="o-2")
            with pytest.raises(garrison.WorkflowFailed):
                await node.workflow("o-2").result()
            r = await post(c, "/api/workflows/o-2/retry")
            assert r.status_code == 200 and "runs again" in r.json()["retry"]
            assert node.workflow("o-2").status() != "failed"
            await until(lambda: node.workflow("o-2").status() == "waiting")
            await node.workflow("o-2").signal("ship")
            assert await node.workflow("o-2").result() == "res-cup pay-cup ship"

            view = (await c.get("/api/node")).json()
            assert view["stats"]["processes"] == 2  # the service manager and app:worker
            services = {s["id"]: s for s in view["services"]}
            assert services["app:worker"]["status"] == "running"
            assert services["app:worker"]["restarts"] == 0
            pid = services["app:worker"]["pid"]
            assert any(p["pid"] == pid and p["service"] == "app:worker"
                       for p in view["processes"])
            # the tree: the service manager, with the service under it
            root = next(t for t in view["tree"] if t["label"] == "garrison.services")
            assert [k["pid"] for k in root["children"]] == [pid]
            page = await c.get("/node")
            assert page.status_code == 200 and 'data-page="node"' in page.text


async def test_a_signal_to_a_workflow_that_finishes_meanwhile_is_a_409_not_lost(
        store_path: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console reads the status, then delivers: a workflow that ended in between (a
    cancel answered at the same moment) got the message as a dead letter, and the
    console answered 200 (helper-205 saw 16 of 200 so). The delivery itself decides."""
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(console_app.listening, id="l-9")
        await until(lambda: node.workflow("l-9").status() == "waiting")
        backend = NodeBackend(node)
        checked = backend._acting_on

        async def then_it_ends(workflow_id: str, what: str, host: str | None) -> str | None:
            name = await checked(workflow_id, what, host)
            await node.workflow(workflow_id).terminate("ended meanwhile")
            return name

        monkeypatch.setattr(backend, "_acting_on", then_it_ends)
        dead = node.stats()["dead_letters"]
        async with client(make_app(backend)) as c:
            r = await post(c, "/api/workflows/l-9/signal", {"topic": "late"})
            assert r.status_code == 409, r.text
            assert r.json()["error"] == ("cannot signal workflow 'l-9': it finished before "
                                         "the message was delivered")
        assert node.stats()["dead_letters"] == dead + 1
        monkeypatch.undo()
        async with client(make_app(NodeBackend(node))) as c:  # and no sooner
            await node.start_workflow(console_app.listening, id="l-10")
            r = await post(c, "/api/workflows/l-10/signal", {"topic": "t", "payload": 2})
            assert r.status_code == 200 and r.json()["ok"] is True, r.text
            assert await node.workflow("l-10").result() == {"topic": "t", "payload": 2}
        assert node.stats()["messages"] >= 1


def _services_config(tmp_path: Path) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(
        'version: "1.0"\nnamespace: app\nentries:\n'
        '  - {name: idle, kind: process.py, source: "console_app:idle"}\n'
        '  - {name: worker, kind: process.service, process: app:idle,'
        ' lifecycle: {auto_start: true}}\n')
    return path


# ------------------------------------------------------------------ paging
def _fill(store: SQLiteStore, n: int, start: int = 0, base: float = 1.8e9) -> None:
    """``n`` workflows straight through the store; every 4 share one creation time, so
    the order among them is the id's."""
    tx = Transaction()
    for i in range(start, start + n):
        tx.create_workflow(f"w-{i:05d}", "console_app:gated", [i],
                           status="completed" if i % 2 else "failed",
                           search={"team": "blue" if i % 3 else "red"},
                           time=base + (i // 4) * 0.001)
    store.write(tx)


async def _pages(c: httpx.AsyncClient, query: str) -> list[list[str]]:
    pages, after = [], None
    while True:
        r = await c.get("/api/workflows?" + query + (f"&after={after}" if after else ""))
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([w["workflow_id"] for w in body["workflows"]])
        after = body["next"]
        if after is None:
            return pages


async def test_attached_to_a_node_whose_store_file_was_deleted_answers_503(
        tmp_path: Path) -> None:
    """The node notices its file deleted within about a second (its workflows stop);
    the console attached to it answered reads with 200 from the deleted file after
    that, only actions with 503. Reads are 503 too now, naming the store. (Real time:
    the node's watcher thread looks at the file once a second.)"""
    db = tmp_path / "gone.db"
    async with garrison.open_node(store=str(db)) as node:
        await node.start_workflow(console_app.listening, id="l-1")
        async with client(make_app(NodeBackend(node))) as c:
            assert (await c.get("/api/workflows")).status_code == 200
            for path in tmp_path.glob("gone.db*"):
                if path.suffix != ".lock":
                    path.unlink()
            with trio.fail_after(10):
                while (listed := await c.get("/api/workflows")).status_code == 200:
                    await trio.sleep(0.05)
            assert listed.status_code == 503, listed.text
            assert "deleted or replaced while the node ran" in listed.json()["error"]
            detail = await c.get("/api/workflows/l-1")
            assert detail.status_code == 503, detail.text
        with pytest.raises(garrison.StoreError, match="deleted or replaced"):
            node.workflow("l-1").history()


async def test_keyset_paging_is_complete_ordered_and_stable(store_path: str) -> None:
    with SQLiteStore(store_path) as owner:
        _fill(owner, 2000)
        store = _store_tools.open_store(store_path)
        async with client(make_app(StoreBackend(store))) as c:
            every = sorted((f"w-{i:05d}" for i in range(2000)), reverse=True)
            pages = await _pages(c, "limit=100")
            assert [len(p) for p in pages] == [100] * 20
            assert [w for p in pages for w in p] == every  # newest first, ties by id
            oldest = await _pages(c, "limit=300&order=oldest")
            assert [w for p in oldest for w in p] == every[::-1]
            failed = await _pages(c, "limit=70&status=failed&search=team=red")
            want = [w for w in every if int(w[2:]) % 2 == 0 and int(w[2:]) % 3 == 0]
            assert [w for p in failed for w in p] == want

            # Stable: workflows created while a user pages (at the newest end) do not
            # shift the pages after the first, as OFFSET paging would.
            first = (await c.get("/api/workflows?limit=100")).json()
            _fill(owner, 50, start=2000)
            second = (await c.get(f"/api/workflows?limit=100&after={first['next']}")).json()
            assert [w["workflow_id"] for w in second["workflows"]] == every[100:200]
            # ... and a deleted cursor row still pages on from its time
            owner.write(Transaction().delete_workflow(every[199]))
            third = (await c.get(f"/api/workflows?limit=100&after={second['next']}")).json()
            assert [w["workflow_id"] for w in third["workflows"]] == every[200:300]
        # Keyset, not OFFSET: each page is one range scan of the (created, id) index.
        plan = store._reader.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM workflows WHERE created <= ? AND "
            "(created < ? OR workflow_id < ?) ORDER BY created DESC, workflow_id DESC "
            "LIMIT 100", (1.9e9, 1.9e9, "w-01000")).fetchall()
        assert "USING INDEX workflows_by_created" in str(plan)
        store.close()


async def test_a_version_1_store_gets_the_paging_index(store_path: str) -> None:
    with SQLiteStore(store_path) as s:
        _fill(s, 10)
        s.db.conn.execute("DROP INDEX workflows_by_created")
        s.db.conn.execute("DROP INDEX workflows_by_status_created")
        s.db.conn.execute("DROP TABLE schedules")  # what version 4 added
        s.db.conn.execute("DROP TABLE queue")
        s.db.conn.execute("DELETE FROM schema_version WHERE version >= 2")
    with pytest.raises(_store_tools.ToolError, match="open it once with a node"):
        _store_tools.open_store(store_path)  # a tool never migrates behind a node's back
    with SQLiteStore(store_path) as s:  # a node migrates it
        names = {r[0] for r in s.db.conn.execute("SELECT name FROM sqlite_master")}
        assert {"workflows_by_created", "workflows_by_status_created"} <= names
        assert len(s.list_workflows(limit=20)) == 10


# ------------------------------------------------------------------ security
async def test_csrf_guard_host_check_and_headers(seeded: str) -> None:
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        page = await c.get("/")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        csrf = c.cookies[CSRF]
        url = "/api/workflows/l-1/signal"
        no_header = await c.post(url, json={"topic": "ping"})
        assert no_header.status_code == 403 and "CSRF" in no_header.json()["error"]
        wrong = await c.post(url, json={"topic": "ping"}, headers={"X-Garrison-CSRF": "x"})
        assert wrong.status_code == 403
        cross = await c.post(url, json={"topic": "ping"},
                             headers={"X-Garrison-CSRF": csrf, "Origin": "http://evil.example"})
        assert cross.status_code == 403 and "evil.example" in cross.json()["error"]
        assert store.pending_messages("l-1") == []  # nothing got through
        ok = await c.post(url, json={"topic": "ping"},
                          headers={"X-Garrison-CSRF": csrf, "Origin": BASE})
        assert ok.status_code == 200
        assert [m.topic for m in store.pending_messages("l-1")] == ["ping"]
    # DNS rebinding: a loopback console answers loopback names only
    async with client(make_app(StoreBackend(store)), "http://evil.example:8233") as c:
        r = await c.get("/api/workflows")
        assert r.status_code == 403 and "loopback" in r.json()["error"]
    async with client(make_app(StoreBackend(store)), "http://localhost:8233") as c:
        assert (await c.get("/api/workflows")).status_code == 200
        # a malformed Host (an unclosed IPv6 address) or Origin: refused, not a 500
        r = await c.get("/api/workflows", headers={"Host": "[::1"})
        assert r.status_code == 400 and r.json() == {"error": "malformed Host header '[::1'"}
        # only a name and a port: a list of two (or a user before an @) is no address,
        # though its name is loopback (it answered 200)
        for given in ("127.0.0.1:8271, evil.com", "localhost:8233 evil.com",
                      "evil.com@localhost", "localhost:x"):
            r = await c.get("/api/capabilities", headers={"Host": given})
            assert r.status_code == 400, (given, r.text)
            assert r.json() == {"error": f"malformed Host header {given!r}"}
        for given in ("[::1]:8233", "LOCALHOST", "127.0.0.1:"):
            r = await c.get("/api/capabilities", headers={"Host": given})
            assert r.status_code == 200, (given, r.text)
        c.cookies.set(CSRF, "x")
        r = await c.post(url, json={"topic": "ping"},
                         headers={"X-Garrison-CSRF": "x", "Origin": "http://[x"})
        assert r.status_code == 403, r.text
        assert "malformed Origin header 'http://[x'" in r.json()["error"]
    store.close()


async def test_token_bearer_one_time_link_and_login(seeded: str) -> None:
    store = _store_tools.open_store(seeded)
    app = make_app(StoreBackend(store), token=TOKEN, loopback=False)
    base = "http://console.example:8233"
    async with client(app, base) as c:
        r = await c.get("/api/workflows")
        assert r.status_code == 401 and "Bearer" in r.json()["error"]
        r = await c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        r = await c.get("/api/workflows", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await c.get("/api/workflows", headers=auth)).status_code == 200
        # a script with the token needs no CSRF cookie
        r = await c.post("/api/workflows/l-1/signal", json={"topic": "t"}, headers=auth)
        assert r.status_code == 200
        r = await c.post("/api/workflows/l-1/signal", json={"topic": "t"})
        assert r.status_code == 401

        code = app.code
        assert code is not None
        r = await c.get(f"/auth?code={code}")
        assert r.status_code == 303 and SESSION in c.cookies
        assert "httponly" in r.headers["set-cookie"].lower()
        assert (await c.get("/api/workflows")).status_code == 200
        assert (await c.get("/")).status_code == 200
    async with client(app, base) as other:  # the link works once
        assert (await other.get(f"/auth?code={code}")).status_code == 403
        r = await other.post("/login", data={"token": "nope"})
        assert r.status_code == 401 and "not the token" in r.text
        r = await other.post("/login", data={"token": TOKEN})
        assert r.status_code == 303 and (await other.get("/api/workflows")).status_code == 200
        r = await other.post("/login", data={"token": TOKEN},
                             headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
    store.close()


async def test_a_request_body_over_the_limit_is_refused_as_it_arrives(seeded: str) -> None:
    """/login is open to anyone: its body was read whole before any check (helper-205: a
    400 MB POST took 800 MB of the node's memory), and an action's too. A body over
    MAX_BODY (a login form over 16 KiB) is a 413, from its Content-Length or, streamed
    without one, as it comes."""
    from garrison.console._app import MAX_BODY

    store = _store_tools.open_store(seeded)
    app = make_app(StoreBackend(store), token=TOKEN, loopback=False)
    read = 0

    async def endless() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        nonlocal read
        for _ in range(1000):
            read += 64 * 1024
            yield b"x" * (64 * 1024)

    async with client(app, "http://console.example:8233") as c:
        r = await c.post("/login", content=b"token=" + b"x" * MAX_BODY)
        assert r.status_code == 413 and "login form is over 16 KiB" in r.text
        r = await c.post("/login", content=endless())  # (read up to 16 KiB, a chunk more)
        assert r.status_code == 413 and read <= 128 * 1024, read
        auth = {"Authorization": f"Bearer {TOKEN}"}
        big = {"topic": "t", "payload": "x" * MAX_BODY}
        r = await c.post("/api/workflows/l-1/signal", json=big, headers=auth)
        assert r.status_code == 413, r.text
        assert r.json()["error"] == (
            "the request body is over 1024 KiB, the console's limit (a larger payload or "
            "value: garrison workflows signal/resolve with - for it, reading its JSON from "
            "standard input, or the Python API)")
        assert store.pending_messages("l-1") == []
        fits = {"topic": "t", "payload": "x" * (MAX_BODY - 100)}
        r = await c.post("/api/workflows/l-1/signal", json=fits, headers=auth)
        assert r.status_code == 200, r.text
    store.close()


async def test_the_login_forms_read_at_once_are_bounded(seeded: str, autojump_clock: Any) -> None:
    """A probe (helper-295): 150 clients each sending just under 1 MiB to /login (open
    to anyone) and stalling grew the node by 160 MB. A login form is read up to 16 KiB,
    and at most LOGINS_AT_ONCE at once: one more is refused at once (503) without
    reading it, and once those are read a form is read again. A request with the token
    is not held up by them (review: a flood of logins refused every operator)."""
    from garrison.console._app import LOGINS_AT_ONCE

    app = make_app(StoreBackend(SQLiteStore(seeded)), token=TOKEN, loopback=False)
    go = trio.Event()

    async def login(stall: bool, path: str = "/login", body: bytes = b"token=x",
                    bearer: bool = False) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        parts = [{"type": "http.request", "body": body, "more_body": stall}]

        async def receive() -> dict[str, Any]:
            if parts:
                return parts.pop()
            await go.wait()
            return {"type": "http.request", "body": b"y", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "client": ("192.0.2.7", 50000), "server": ("console.example", 8233),
                 "headers": [(b"host", b"console.example:8233"),
                             (b"content-type", b"application/x-www-form-urlencoded"),
                             *([(b"authorization", f"Bearer {TOKEN}".encode())]
                               if bearer else [])]}
        await app(scope, receive, send)
        return sent

    statuses: list[int] = []

    async def stalled() -> None:
        statuses.append((await login(True))[0]["status"])

    async with trio.open_nursery() as nursery:
        for _ in range(LOGINS_AT_ONCE):
            nursery.start_soon(stalled)
        await trio.testing.wait_all_tasks_blocked()
        refused = await login(False)
        assert refused[0]["status"] == 503, refused
        assert b"reading 32 login forms at once" in refused[-1]["body"], refused
        # (a request with the token reads its body all the same: a field it does not
        # take is named, 400)
        api = await login(False, "/api/workflows/nope/signal", b'{"topik": 1}', bearer=True)
        assert api[0]["status"] == 400 and b"topik" in api[-1]["body"], api
        go.set()
    assert statuses == [401] * LOGINS_AT_ONCE  # (read whole: a wrong token)
    assert (await login(False))[0]["status"] == 401
    too_long = await login(False, body=b"token=" + b"x" * 16 * 1024)
    assert too_long[0]["status"] == 413 and b"login form is over 16 KiB" in too_long[-1]["body"]



def test_binding_off_loopback_needs_a_token() -> None:
    assert check_bind("127.0.0.1:8233", None) == ("127.0.0.1", 8233, True)
    assert check_bind("[::1]:0", None) == ("::1", 0, True)
    assert check_bind("localhost:9000", None)[2] is True
    with pytest.raises(ValueError, match=r"not a loopback address.*needs a token= argument"):
        check_bind("0.0.0.0:8233", None)
    with pytest.raises(ValueError, match="at least 16 characters"):
        check_bind("0.0.0.0:8233", "short")
    assert check_bind("0.0.0.0:8233", TOKEN) == ("0.0.0.0", 8233, False)
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        check_bind("8233", None)


async def test_serve_console_names_an_argument_of_the_wrong_type() -> None:
    """``store=12345`` started the console, then every API request was a 500 with a
    traceback logged; ``bind=8233`` and ``token=<int>`` were an AttributeError and a
    TypeError from deep inside. Each is a ``TypeError`` naming the argument now."""
    with pytest.raises(TypeError, match=r"^serve_console\(store=...\): expected a store's "
                       r"path, a postgresql:// URL or an open store, got int 12345"):
        await garrison.console.serve_console(store=12345)
    with pytest.raises(TypeError, match=r"^bind: expected 'HOST:PORT' as a string"):
        await garrison.console.serve_console(store=12345, bind=8233)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^token: expected a string, got int"):
        await garrison.console.serve_console(store=12345, token=5)  # type: ignore[arg-type]
    # node=5 was an AttributeError ('int' object has no attribute 'hosts'), and a node
    # with a store served the node's console, the store ignored
    with pytest.raises(TypeError, match=r"^serve_console\(node=...\): expected a garrison "
                       r"Node \(from garrison.open_node\(\) .*got int 5"):
        await garrison.console.serve_console(node=5)
    async with garrison.open_node() as node:
        with pytest.raises(ValueError, match=r"^serve_console takes node= or store=, not "
                           r"both"):
            await garrison.console.serve_console(node=node, store="other.db")


async def test_serve_console_names_a_session_duration_of_the_wrong_type(
        store_path: str) -> None:
    """A probe (helper-370): ``session_idle=[1]`` (a dict, ``None``) was a ValueError,
    ``invalid session_idle [1] of type list``; as for ``bind`` and ``token``, a wrong
    type is a ``TypeError`` naming the argument and the type. A bad value (negative,
    a string that is no duration) is still a ``ValueError``."""
    for idle, age, said in (([1], "1h", "session_idle: expected seconds or a duration "
                                        "string like '30m', got list"),
                            ("1h", {}, "session_max_age: expected seconds or a duration "
                                       "string like '30m', got dict"),
                            (None, "1h", "session_idle: expected seconds or a duration "
                                         "string like '30m', got NoneType"),
                            (True, "1h", "session_idle: expected seconds or a duration "
                                         "string like '30m', got bool")):
        with pytest.raises(TypeError, match=f"^{re.escape(said)}$"):
            await garrison.console.serve_console(store=store_path, session_idle=idle,
                                                 session_max_age=age)
    async with garrison.open_node() as node:
        with pytest.raises(ValueError, match=r"^invalid session_idle '-5s'"):
            await garrison.console.serve_console(node=node, session_idle="-5s")
        with pytest.raises(TypeError, match=r"^session_idle: expected .* got list$"):
            await garrison.console.serve_console(node=node, session_idle=[1])


async def test_serve_console_on_a_missing_store_is_a_value_error(tmp_path: Path) -> None:
    """It was the tools' private ``ToolError``: neither a ``ValueError`` nor public."""
    missing = str(tmp_path / "nope" / "x.db")
    with pytest.raises(ValueError, match=r"^serve_console\(store=...\): no workflow store "
                       r"at '.*x\.db'"):
        await garrison.console.serve_console(store=missing)


async def test_a_token_no_bearer_header_can_carry_is_refused_at_start(
        seeded: str) -> None:
    # an HTTP header is Latin-1 text and its value is trimmed: a token with a non-ASCII
    # letter, a space, or the newline a secret file ends with would start the console
    # and then never match an 'Authorization: Bearer' (only the login form took it)
    store = _store_tools.open_store(seeded)
    token = "pässwörd-of-the-console"
    async with client(make_app(StoreBackend(store), token=token, loopback=False)) as c:
        sent = await c.get("/api/capabilities", headers={
            "Authorization": b"Bearer " + token.encode()})
        assert sent.status_code == 401  # what it was: started, and unusable by a script
    store.close()
    for bad, named in ((token, "'ä'"), (TOKEN + "\n", "'\\n'"),
                       ("two words of the token", "' '")):
        with pytest.raises(ValueError, match=f"^token: .*{re.escape(named)}"):
            check_bind("0.0.0.0:8233", bad)
    assert check_bind("0.0.0.0:8233", "A-z_0.9~+/=" * 2)[2] is False


async def test_payloads_and_tracebacks_are_escaped(store_path: str, autojump_clock: Any) -> None:
    evil = "<script>alert(1)</script>"
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(console_app.boom, evil, id=evil)
        with pytest.raises(garrison.WorkflowFailed):
            await node.workflow(evil).result()
        async with client(make_app(NodeBackend(node))) as c:
            page = await c.get("/workflows/" + evil)
            assert page.status_code == 200
            assert evil not in page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
            d = (await c.get("/api/workflows/" + evil)).json()
            assert d["workflow"]["workflow_id"] == evil
            assert d["workflow"]["error"]["message"] == evil
            assert page.headers["content-type"].startswith("text/html")
            api = await c.get("/api/workflows/" + evil)
            assert api.headers["content-type"] == "application/json"
    # the script renders data with textContent only
    js = (Path(garrison.__file__).parent / "console" / "static" / "console.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", js)


# ------------------------------------------------------------------ workflow hosts
def _hosts_config(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text('version: "1.0"\nnamespace: app\nentries:\n' + "".join(
        f"  - {{name: {name}, kind: workflow.host, store: {tmp_path / (name + '.db')}}}\n"
        for name in names))
    return path


async def test_a_config_whose_only_workflow_host_has_another_name(
        tmp_path: Path, autojump_clock: Any) -> None:
    """One workflow.host (``orders``) is *the* ``workflows`` host: the console serves it
    (it crashed with KeyError 'workflows')."""
    async with garrison.open_node(config=_hosts_config(tmp_path, "orders")) as node:
        await node.start_workflow(console_app.gated, "alpha", None, id="g-1")
        await until(lambda: node.workflow("g-1").status() == "waiting")
        async with client(make_app(NodeBackend(node))) as c:
            caps = (await c.get("/api/capabilities")).json()
            assert caps["host"] == "app:orders"
            assert caps["store"] == str(tmp_path / "orders.db")
            assert caps["hosts"] == [{"name": "app:orders", "store": caps["store"]}]
            rows = (await c.get("/api/workflows")).json()["workflows"]
            assert [(w["workflow_id"], w["host"], w["status"]) for w in rows] == [
                ("g-1", "app:orders", "waiting")]
            d = (await c.get("/api/workflows/g-1")).json()
            assert d["workflow"]["pid"] == "app:orders/g-1"
            # "workflows" is the alias of that host
            aliased = (await c.get("/api/workflows?host=workflows")).json()["workflows"]
            assert [(w["workflow_id"], w["host"]) for w in aliased] == [("g-1", "app:orders")]
            r = await post(c, "/api/workflows/g-1/promises/go/resolve", {"value": 1})
            assert r.status_code == 200, r.text
            assert await node.workflow("g-1").result() == {"label": "alpha", "go": 1}


async def test_every_durable_workflow_host_of_the_node(tmp_path: Path,
                                                       autojump_clock: Any) -> None:
    """Two workflow.host entries (and the in-memory ``workflows`` host beside them): the
    console lists each, starting with the first whose store persists (it showed the
    empty in-memory host only); a workflow is found on whichever host holds it."""
    async with garrison.open_node(config=_hosts_config(tmp_path, "main", "orders")) as node:
        await node.start_workflow(console_app.gated, "m", None, id="m-1", host="app:main")
        await node.start_workflow(console_app.gated, "o", None, id="o-1", host="app:orders")
        await node.start_workflow(console_app.gated, "x", None, id="x-1")  # in memory
        await until(lambda: all(  # as the stores say (within PARKED_DELAY)
            node.hosts[h].store.get_workflow(w).status == "waiting"
            for w, h in (("m-1", "app:main"), ("o-1", "app:orders"), ("x-1", "workflows"))))
        async with client(make_app(NodeBackend(node))) as c:
            caps = (await c.get("/api/capabilities")).json()
            assert caps["host"] == "app:main"
            assert {h["name"]: h["store"] for h in caps["hosts"]} == {
                "workflows": None, "app:main": str(tmp_path / "main.db"),
                "app:orders": str(tmp_path / "orders.db")}

            async def ids(query: str) -> list[tuple[str, str]]:
                r = await c.get("/api/workflows" + query)
                assert r.status_code == 200, r.text
                return [(w["workflow_id"], w["host"]) for w in r.json()["workflows"]]

            assert await ids("") == [("m-1", "app:main")]
            assert await ids("?host=app:orders") == [("o-1", "app:orders")]
            assert await ids("?host=workflows&status=waiting") == [("x-1", "workflows")]
            bad = await c.get("/api/workflows?host=nope")
            assert bad.status_code == 400
            assert "'nope' is not a workflow host" in bad.json()["error"]
            assert "app:orders" in bad.json()["error"]

            # one workflow: on the host named, or the first that holds it
            d = (await c.get("/api/workflows/o-1")).json()
            assert d["workflow"]["host"] == "app:orders" and d["actions"]["resolve"] == ["go"]
            assert (await c.get("/api/workflows/o-1?host=app:main")).status_code == 404
            r = await post(c, "/api/workflows/o-1/promises/go/resolve?host=app:orders",
                           {"value": "ok"})
            assert r.status_code == 200, r.text
            assert await node.workflow("o-1", host="app:orders").result() == {
                "label": "o", "go": "ok"}
            assert (await post(c, "/api/workflows/x-1/cancel")).status_code == 200
            with pytest.raises(garrison.WorkflowCancelled):
                await node.workflow("x-1").result()


# ------------------------------------------------------------------ bad and odd values
def _strict(text: str) -> Any:
    """``text`` as standard JSON (a browser's JSON.parse refuses NaN and Infinity)."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


async def test_non_finite_numbers_are_refused_in_and_rendered_safely_out(
        store_path: str, autojump_clock: Any) -> None:
    """A NaN (or 1e400, Infinity) in a request is 400 and reaches nothing; what a store
    holds anyway (Python's JSON writes NaN: a workflow's result and state, a search
    attribute written by a tool) is shown as "NaN" / "Infinity", never a 500."""
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(console_app.listening, id="l-1")
        await node.start_workflow(console_app.gated, "g", None, id="g-1")
        await node.start_workflow(console_app.ratio, 1.0, 0.0, id="r-1")
        assert math.isnan(await node.workflow("r-1").result())
        await until(lambda: node.workflow("l-1").status() == "waiting"
                    and node.workflow("g-1").status() == "waiting")
        node.hosts["workflows"].store.write(Transaction().create_workflow(
            "odd-1", "console_app:gated", [float("nan")], status="completed",
            search={"size": float("inf")}))
        async with client(make_app(NodeBackend(node))) as c:
            headers = {"X-Garrison-CSRF": (await c.get("/")).cookies[CSRF],
                       "Content-Type": "application/json"}
            for body in (b'{"topic": "t", "payload": NaN}',
                         b'{"topic": "t", "payload": [Infinity]}',
                         b'{"topic": "t", "payload": {"x": -Infinity}}',
                         b'{"topic": "t", "payload": 1e400}',
                         b'{"topic": "t", "payload": "\\ud800"}',
                         b'{"topic": "t", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                         # helper-230: a repeated key (the last one won: another reader
                         # of the same body may take the first), a body not in UTF-8
                         b'{"topic": "t", "payload": {"amount": 10, "amount": 1000000}}',
                         b'{"topic": "t", "topic": "u"}',
                         '{"topic": "u16"}'.encode("utf-16"),
                         b'\xef\xbb\xbf{"topic": "bom"}'):
                r = await c.post("/api/workflows/l-1/signal", content=body, headers=headers)
                assert r.status_code == 400, (body[:60], r.text)
                assert "must be a JSON object" in r.json()["error"]
            r = await c.post("/api/workflows/l-1/signal", headers=headers,
                             content=b'{"topic": "t", "payload": {"a": 1, "a": 2}}')
            assert "the key 'a' appears twice in one object" in r.json()["error"], r.text
            r = await c.post("/api/workflows/g-1/promises/go/resolve",
                             content=b'{"value": NaN}', headers=headers)
            assert r.status_code == 400 and "NaN is not a JSON number" in r.json()["error"]
            assert node.hosts["workflows"].store.pending_messages("l-1") == []
            assert node.workflow("g-1").status() == "waiting"
            bad = await c.get("/api/workflows", params={"search": "size=Infinity"})
            assert bad.status_code == 400 and "size=Infinity" in bad.json()["error"]

            r = await c.get("/api/workflows/r-1")
            assert r.status_code == 200, r.text
            d = _strict(r.text)
            assert d["workflow"]["result"] == "NaN"
            assert d["state"] == {"ratio": "NaN", "limits": ["Infinity", "-Infinity"]}
            r = await c.get("/api/workflows")
            assert r.status_code == 200, r.text
            odd = next(w for w in _strict(r.text)["workflows"] if w["workflow_id"] == "odd-1")
            assert odd["search"] == {"size": "Infinity"}
            assert _strict((await c.get("/api/workflows/odd-1")).text)["workflow"]["input"] == [
                "NaN"]
            page = await c.get("/workflows/r-1")
            assert page.status_code == 200


async def test_a_cursor_is_checked_whole(seeded: str) -> None:
    """Every malformed ``after`` is 400 naming it, never a 500 (an int too large for a
    float was an OverflowError)."""
    store = _store_tools.open_store(seeded)

    def cursor(raw: str) -> str:
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    async with client(make_app(StoreBackend(store))) as c:
        for raw in (json.dumps([10**400, "x"]), json.dumps([1e300, "x"]), "[NaN, \"x\"]",
                    "[1e400, \"x\"]", '[1, "\\ud800"]', "[1]", '[1, "x", 2]', "[1, 2]",
                    '["1", "x"]', '[true, "x"]', '{"a": 1, "b": "x"}', "5", "[" * 5000,
                    "not json"):
            r = await c.get("/api/workflows", params={"after": cursor(raw)})
            assert r.status_code == 400, (raw[:30], r.text)
            assert "is not a cursor of this console" in r.json()["error"]
        for text in ("%%%", "a", "!!"):
            r = await c.get("/api/workflows", params={"after": text})
            assert r.status_code == 400, (text, r.text)
        good = cursor(json.dumps([1.9e9, "zzz"]))
        assert (await c.get("/api/workflows", params={"after": good})).status_code == 200
    store.close()


async def test_a_value_no_store_can_hold_is_400_naming_it(seeded: str) -> None:
    """JSON that parses but that the store's converter cannot hold (nested deeper than
    it recurses) was a 500 with a stack trace, from an action's body and from a search
    filter alike; it is 400 naming what could not be stored, on a store and on a node."""
    deep = "[" * 900 + "]" * 900

    async def check(c: httpx.AsyncClient) -> None:
        await c.get("/")
        headers = {"X-Garrison-CSRF": c.cookies[CSRF]}
        for path, body, said in [
                ("/api/workflows/g-1/signal", f'{{"topic": "x", "payload": {deep}}}',
                 "cannot store the payload of message 'x' to workflow 'g-1'"),
                ("/api/workflows/g-1/promises/go/resolve", f'{{"value": {deep}}}',
                 "cannot store the value of promise 'go'"),
                # (it said: use sys.set_int_max_str_digits() to increase the limit)
                ("/api/workflows/g-1/promises/go/resolve", '{"value": ' + "9" * 5000 + "}",
                 "a whole number of 5000 digits is too long: at most 4300 digits")]:
            r = await c.post(path, content=body, headers=headers)
            assert r.status_code == 400 and said in r.json()["error"], (path, r.text)
        r = await c.get("/api/workflows", params={"search": "k=" + deep})
        assert r.status_code == 400, r.text
        assert "cannot store search attribute 'k'" in r.json()["error"]
        detail = (await c.get("/api/workflows/g-1")).json()
        assert detail["inbox"] == [] and detail["actions"]["resolve"] == ["go"]

    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        await check(c)
    store.close()
    async with garrison.open_node(store=seeded) as node, \
            client(make_app(NodeBackend(node))) as c:
        await check(c)


# ------------------------------------------------------------------ big workflows
async def test_an_action_body_with_a_missing_or_unknown_field_is_400_naming_it(
        seeded: str) -> None:
    """JSON in is strict about fields too: a resolve without "value" (a typo: "valeu")
    resolved the promise with null, for good, and a signal dropped a misspelt
    "paylod". Every action's body takes its own fields only, a required one must be
    there; else 400 naming the field, and nothing is done."""

    async def check(c: httpx.AsyncClient) -> None:
        for path, body, said in [
                ("promises/go/resolve", {"valeu": {"by": "ann"}},
                 "unknown field 'valeu', missing field 'value'"),
                ("promises/go/resolve", {}, "missing field 'value'"),
                ("promises/go/resolve", {"value": 1, "vaule": 2}, "unknown field 'vaule'"),
                ("promises/go/reject", {"message": "no", "mesage": "no"},
                 "unknown field 'mesage'"),
                ("signal", {"topic": "x", "paylod": 1}, "unknown field 'paylod'"),
                ("signal", {"topci": "x"}, "unknown field 'topci'"),
                ("cancel", {"reason": "x"}, "unknown field 'reason'"),
                ("retry", {"force": True}, "unknown field 'force'")]:
            r = await post(c, "/api/workflows/g-1/" + path, body)
            assert r.status_code == 400, (path, body, r.text)
            error = r.json()["error"]
            assert said in error and "\n" not in error, (path, body, error)
        r = await post(c, "/api/workflows/g-1/promises/go/resolve", {"valeu": 1})
        assert r.json()["error"] == ('the request body of a resolve is {"value": any}; got '
                                     "unknown field 'valeu', missing field 'value'")
        r = await post(c, "/api/workflows/g-1/cancel", {"x": 1})
        assert r.json()["error"] == ("the request body of a cancel is {} or empty: it takes "
                                     "no fields; got unknown field 'x'")
        detail = (await c.get("/api/workflows/g-1")).json()
        assert detail["workflow"]["status"] == "waiting", detail["workflow"]
        assert detail["inbox"] == [] and detail["actions"]["resolve"] == ["go"]
        assert detail["workflow"]["cancel_requested"] is False
        # the bodies the README's table writes still do what they say
        r = await post(c, "/api/workflows/l-1/signal", {"topic": "t"})  # payload optional
        assert r.status_code == 200, r.text
        r = await post(c, "/api/workflows/l-1/cancel", None)
        assert r.status_code == 200, r.text

    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        await check(c)
    store.close()


async def test_big_inbox_promises_and_state_are_cut_and_counted(store_path: str) -> None:
    """A workflow page answers the first INBOX_SHOWN messages, PROMISES_SHOWN promises
    (the pending first) and STATE_SHOWN state keys, with their totals (it answered
    50,000 messages: megabytes every second); a poll that sends the ETag back gets 304."""
    from garrison.console import _backend

    with SQLiteStore(store_path) as owner:
        tx = Transaction().create_workflow("big", "console_app:listening", [],
                                           status="waiting")
        for i in range(1200):
            tx.deliver("big", "note", {"n": i}, msg_id=f"m-{i}")
        for i in range(700):
            tx.create_promise("big", f"p-{i:03d}")
        for i in range(0, 700, 2):
            tx.resolve_promise("big", f"p-{i:03d}", i)
        for i in range(600):
            tx.set_state("big", f"k-{i:03d}", i)
        owner.write(tx)
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/api/workflows/big")
        d = r.json()
        assert len(d["inbox"]) == _backend.INBOX_SHOWN == 500 and d["inbox_total"] == 1200
        assert [m["payload"]["n"] for m in d["inbox"][:3]] == [0, 1, 2]  # the first to arrive
        assert len(d["promises"]) == 500 and d["promises_total"] == 700
        assert [p["status"] for p in d["promises"][:350]] == ["pending"] * 350
        assert d["promises"][0]["name"] == "p-001"
        assert d["promises"][0]["completed"] is None  # not ""
        assert d["promises"][350]["status"] == "resolved"
        assert len(d["actions"]["resolve"]) == 350
        assert len(d["state"]) == 500 and d["state_total"] == 600
        assert len(r.content) < 200_000

        tag = r.headers["etag"]
        again = await c.get("/api/workflows/big", headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        # a list, a weak tag, or * (RFC 9110; a proxy or browser sends such): 200 before
        for sent in (f'"other", {tag}', f"W/{tag}", "*"):
            again = await c.get("/api/workflows/big", headers={"If-None-Match": sent})
            assert again.status_code == 304, sent
        assert (await c.get("/api/workflows/big", headers={
            "If-None-Match": '"other", W/"else"'})).status_code == 200
        with SQLiteStore(store_path, lock=False) as tool:
            tool.write(Transaction().set_state("big", "k-000", "changed"))
        changed = await c.get("/api/workflows/big", headers={"If-None-Match": tag})
        assert changed.status_code == 200 and changed.json()["state"]["k-000"] == "changed"
    store.close()


async def test_a_live_status_filter_is_an_indexed_query_not_a_scan(
        store_path: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attached to a node, ``?status=running`` reads the store's rows of that status
    (an index), not every unfinished workflow to ask the node about each (130-290 ms
    a request, every 2 s, at 10,000 parked workflows)."""
    async with garrison.open_node(store=store_path) as node:
        for i in range(120):
            await node.start_workflow(console_app.gated, f"w{i}", None, id=f"w-{i:03d}")
        store = node.hosts["workflows"].store
        await until(lambda: len(store.list_workflows("waiting")) == 120)
        read = []
        real = store.list_workflows

        def counting(*args: Any, **kw: Any) -> Any:
            rows = real(*args, **kw)
            read.extend(rows)
            return rows

        monkeypatch.setattr(store, "list_workflows", counting)
        async with client(make_app(NodeBackend(node))) as c:
            r = await c.get("/api/workflows?status=running,sleeping")
            assert r.json() == {"workflows": [], "next": None}
            assert read == []
            r = await c.get("/api/workflows?status=waiting&limit=10")
            assert len(r.json()["workflows"]) == 10 and len(read) <= 11


async def test_the_list_reads_the_store_off_the_node_s_event_loop(
        store_path: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attached to a node, the list reads the store in a worker thread: a stalled
    database (a PostgreSQL server that does not answer) holds up that request, not the
    node's event loop, whose workflows go on meanwhile."""
    async with garrison.open_node(store=store_path) as node:
        for i in range(2):
            await node.start_workflow(console_app.gated, f"w{i}", None, id=f"w-{i}")
        store = node.hosts["workflows"].store
        await until(lambda: len(store.list_workflows("waiting")) == 2)
        gate = threading.Event()
        threads: list[threading.Thread] = []
        real = store.list_workflows

        def stalled(*args: Any, **kw: Any) -> Any:
            threads.append(threading.current_thread())
            gate.wait(5)
            return real(*args, **kw)

        monkeypatch.setattr(store, "list_workflows", stalled)
        got: list[httpx.Response] = []
        async with client(make_app(NodeBackend(node))) as c, trio.open_nursery() as nursery:
            async def fetch() -> None:
                got.append(await c.get("/api/workflows?status=waiting"))

            nursery.start_soon(fetch)
            await until(lambda: threads)
            assert got == [] and len(threads) == 1  # the read is under way, stalled
            await node.workflow("w-0").promise("go").resolve("now")  # the node goes on
            assert (await node.workflow("w-0").result())["go"] == "now"
            gate.set()
        assert [w["workflow_id"] for w in got[0].json()["workflows"]] == ["w-1"]
        assert threading.main_thread() not in threads

        # one workflow's page, and an action, find the workflow in a thread too
        monkeypatch.undo()
        gate.clear()
        threads.clear()
        real_get = store.get_workflow
        armed = [True]

        def stalled_get(*args: Any, **kw: Any) -> Any:
            if armed:  # the first read after arming: the page's
                armed.clear()
                threads.append(threading.current_thread())
                gate.wait(5)
            return real_get(*args, **kw)

        monkeypatch.setattr(store, "get_workflow", stalled_get)
        got.clear()
        async with client(make_app(NodeBackend(node))) as c, trio.open_nursery() as nursery:
            async def fetch_one() -> None:
                got.append(await c.get("/api/workflows/w-1"))

            nursery.start_soon(fetch_one)
            await until(lambda: threads)
            assert got == []
            gate.set()
        assert got[0].json()["workflow"]["workflow_id"] == "w-1"
        assert threads[0] is not threading.main_thread()
        async with client(make_app(NodeBackend(node))) as c:
            r = await post(c, "/api/workflows/w-1/promises/go/resolve", {"value": "later"})
            assert r.status_code == 200
            assert (await node.workflow("w-1").result())["go"] == "later"


# ------------------------------------------------------------------ browsers and proxies
async def test_referrers_stay_on_the_console_and_login_returns_to_the_page(
        seeded: str) -> None:
    """``Referrer-Policy: same-origin`` (with no-referrer Chromium posts the login form
    with ``Origin: null``, which the guard refused); a login goes back to the page
    asked for, never to another site."""
    store = _store_tools.open_store(seeded)
    app = make_app(StoreBackend(store), token=TOKEN)
    async with client(app) as c:
        r = await c.get("/workflows/g-1?x=1")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Fworkflows%2Fg-1%3Fx%3D1"
        assert r.headers["referrer-policy"] == "same-origin"
        form = await c.get(r.headers["location"])
        assert 'name="next" value="/workflows/g-1?x=1"' in form.text
        r = await c.post("/login", data={"token": TOKEN, "next": "/workflows/g-1?x=1"},
                         headers={"Origin": BASE})
        assert r.status_code == 303 and r.headers["location"] == "/workflows/g-1?x=1"
        for elsewhere in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            r = await c.post("/login", data={"token": TOKEN, "next": elsewhere})
            assert r.status_code == 303 and r.headers["location"] == "/", elsewhere
    store.close()


async def test_behind_a_tls_proxy(seeded: str) -> None:
    """The browser says ``Origin: https://console.example``, the console sees http: a
    proxy that keeps the Host header needs nothing (every action was refused); one
    that rewrites it is believed only from ``forwarded_allow_ips``, and then also
    about the scheme (and the cookies are Secure)."""
    store = _store_tools.open_store(seeded)
    public = "https://console.example"

    async def act(c: httpx.AsyncClient, name: str = "garrison_csrf",
                  **headers: str) -> httpx.Response:
        """A signal with the CSRF cookie ``name`` (the port of the address the
        console took the request for names it)."""
        csrf = c.cookies.get(name) or "fixed-csrf-value"
        c.cookies.set(name, csrf)
        return await c.post("/api/workflows/l-1/signal", json={"topic": "t"},
                            headers={"X-Garrison-CSRF": csrf, **headers})

    # a proxy that keeps the Host header, before a console bound to 0.0.0.0
    app = make_app(StoreBackend(store), token=TOKEN, loopback=False)
    async with client(app, "http://console.example") as c:
        c.cookies.set("garrison_session", app.new_session())
        assert (await act(c, Origin=public)).status_code == 200
        r = await act(c, Origin="https://evil.example")
        assert r.status_code == 403 and "evil.example" in r.json()["error"]
        r = await act(c, Origin="null")
        assert r.status_code == 403

    # a proxy on 127.0.0.1 that rewrites Host to the console's address
    forwarded = {"X-Forwarded-Host": "console.example", "X-Forwarded-Proto": "https"}
    untrusted = make_app(StoreBackend(store), token=TOKEN)
    async with client(untrusted) as c:  # (its cookies: of the Host, 127.0.0.1:8233)
        c.cookies.set(SESSION, untrusted.new_session())
        r = await act(c, CSRF, Origin=public, **forwarded)
        assert r.status_code == 403
        assert "--forwarded-allow-ips" in r.json()["error"]
    trusted = make_app(StoreBackend(store), token=TOKEN, forwarded_allow_ips="127.0.0.1")
    async with client(trusted) as c:
        c.cookies.set("garrison_session", trusted.new_session())
        assert (await act(c, Origin=public, **forwarded)).status_code == 200
        # the scheme is known now: an http page of that name is another origin
        r = await act(c, Origin="http://console.example", **forwarded)
        assert r.status_code == 403
        c.cookies.delete("garrison_csrf")
        page = await c.get("/", headers=forwarded)
        assert "secure" in page.headers["set-cookie"].lower()
        # the loopback-name check is the proxy's business (a token is required)
        assert (await c.get("/api/workflows", headers=forwarded)).status_code == 200
    # from any other client the X-Forwarded headers mean nothing
    other = httpx.ASGITransport(app=trusted, client=("10.9.9.9", 4000))
    async with httpx.AsyncClient(transport=other, base_url=BASE) as c:
        c.cookies.set(SESSION, trusted.new_session())
        assert (await act(c, CSRF, Origin=public, **forwarded)).status_code == 403
        c.cookies.delete(CSRF)
        page = await c.get("/", headers=forwarded)
        assert "secure" not in page.headers["set-cookie"].lower()

    with pytest.raises(ValueError, match="needs a token= argument"):
        check_bind("127.0.0.1:8233", None, "127.0.0.1")
    with pytest.raises(ValueError, match=r"^--forwarded-allow-ips: .*needs --token \(or "
                       r"GARRISON_UI_TOKEN\)"):
        check_bind("127.0.0.1:8233", None, "127.0.0.1", cli=True)
    # (named as Python spells it: it said --forwarded-allow-ips)
    with pytest.raises(ValueError, match=r"^forwarded_allow_ips: 'nonsense' is not an IP "
                       r"address"):
        check_bind("127.0.0.1:8233", TOKEN, "10.0.0.1,nonsense")
    with pytest.raises(ValueError, match=r"^--forwarded-allow-ips: 'nonsense' is not an IP"):
        check_bind("127.0.0.1:8233", TOKEN, "nonsense", cli=True)
    assert check_bind("127.0.0.1:8233", TOKEN, "10.0.0.0/8, *")[2] is True
    store.close()


async def test_get_on_an_action_is_405(seeded: str) -> None:
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        for action in ("signal", "cancel", "retry", "promises/go/resolve",
                       "promises/go/reject"):
            r = await c.get(f"/api/workflows/g-1/{action}")
            assert r.status_code == 405, (action, r.text)
            assert r.headers["allow"] == "POST" and "POST only" in r.json()["error"]
        assert (await c.get("/api/workflows/nope/signal")).status_code == 405
    # ... unless a workflow has that very id
    with SQLiteStore(seeded) as owner:
        owner.write(Transaction().create_workflow("g-1/signal", "console_app:gated", []))
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/api/workflows/g-1/signal")
        assert r.status_code == 200 and r.json()["workflow"]["workflow_id"] == "g-1/signal"
    store.close()


async def test_a_post_to_an_action_the_console_has_not_names_its_actions(
        seeded: str) -> None:
    """``POST /api/workflows/g-1/terminate`` (Temporal's UI terminates) answered
    ``{"error": "Method Not Allowed"}``: the method is the one every action takes, and
    nothing said that the console has no such action, nor which it has. It names the
    action and lists the console's, still 405."""
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        r = await post(c, "/api/workflows/g-1/terminate")
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == "GET, HEAD"
        assert r.json()["error"] == (
            "the console has no action 'terminate' (POST /api/workflows/g-1/terminate; a "
            "workflow's URL takes GET): a workflow's actions are POST "
            "/api/workflows/ID/signal, /cancel, /retry, "
            "/promises/NAME/resolve and /promises/NAME/reject (to terminate: garrison "
            "workflows terminate, or the handle's terminate())")
        r = await post(c, "/api/workflows/g-1")
        assert r.status_code == 405, r.text
        assert r.json()["error"] == (
            "POST /api/workflows/g-1: a workflow's URL takes GET; a workflow's actions "
            "are POST /api/workflows/ID/signal, /cancel, /retry, /promises/NAME/resolve "
            "and /promises/NAME/reject")
        r = await post(c, "/api/workflows/g-1/pause")
        assert "no action 'pause'" in r.json()["error"] and "terminate" not in r.text
        # the actions it has are as they were
        assert (await post(c, "/api/workflows/g-1/signal", {"topic": "go"})).status_code \
            == 200
    store.close()


async def test_a_post_to_an_action_with_a_slash_at_its_end_says_so(seeded: str) -> None:
    """``POST /api/workflows/g-1/cancel/`` (a client that ends its URLs with ``/``) said
    ``the console has no action ''``, naming an action no one wrote. It says the
    action takes no ``/`` at its end, naming the URL that does it; still 405, nothing
    done."""
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        for path in ("/api/workflows/g-1/cancel/", "/api/workflows/g-1/promises/p/resolve/"):
            r = await post(c, path)
            assert r.status_code == 405, r.text
            assert r.json()["error"].startswith(
                f"POST {path}: an action's URL has no '/' at its end (POST {path[:-1]}): "
                "a workflow's actions are POST /api/workflows/ID/signal, "), r.text
        assert store.get_workflow("g-1").cancel_requested is False
    store.close()


async def test_a_console_left_open_on_a_node_that_stopped_says_so(
        store_path: str, autojump_clock: Any) -> None:
    # a console served from a nursery that outlives the node: every API answer names
    # the stopped node (503), where it was a bare 500 from the closed store
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(console_app.listening, id="w-1")
        app = make_app(NodeBackend(node))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        c.cookies.set(CSRF, "c" * 32)  # (a page loaded before the stop)
        answers = [await c.get(path) for path in (
            "/api/capabilities", "/api/workflows", "/api/workflows/w-1", "/api/node")]
        answers += [await post(c, f"/api/workflows/w-1/{action}", body)
                    for action, body in (("signal", {"topic": "t"}), ("cancel", {}),
                                         ("retry", {}), ("promises/go/resolve", {}))]
        for r in answers:
            assert r.status_code == 503, (r.url, r.text)
            assert "the node this console is attached to has stopped" in r.json()["error"]
        # the pages too (they answered 200, the page then failing as it loaded)
        for path in ("/", "/node", "/workflows/w-1"):
            r = await c.get(path)
            assert r.status_code == 503, (path, r.status_code)
            assert "the node this console is attached to has stopped" in r.text


async def test_a_promise_whose_name_has_a_slash_is_resolved_and_rejected(
        store_path: str, autojump_clock: Any) -> None:
    # a promise name is any non-empty string: the page's Resolve button for
    # "approval/manager" posted to a URL no route matched (405 'Method Not Allowed')
    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(console_app.two_promises, id="p/1")
        # the other cut of p/1's "approval/promises/x": a promise 'x' of this workflow,
        # which the longest-id rule took for the page's action on p/1 (helper-244)
        await node.start_workflow(console_app.one_promise, "x", id="p/1/promises/approval")
        await until(lambda: node.workflow("p/1").status() == "waiting")
        async with client(make_app(NodeBackend(node))) as c:
            detail = (await c.get("/api/workflows/p%2F1")).json()
            assert detail["actions"]["resolve"] == ["approval/manager", "approval/promises/x"]
            r = await post(c, "/api/workflows/p%2F1/promises/approval%2Fmanager/resolve",
                           {"value": "yes"})
            assert r.status_code == 200, r.text
            assert r.json()["promise"] == "approval/manager"
            r = await post(c, "/api/workflows/p%2F1/promises/approval%2Fpromises%2Fx/reject",
                           {"message": "no"})
            assert r.status_code == 200, r.text
            assert r.json()["promise"] == "approval/promises/x"
            r = await post(c, "/api/workflows/p%2F1/promises//resolve", {"value": 1})
            assert r.status_code == 400 and "promise name" in r.json()["error"]
            assert (await c.get("/api/workflows/p%2F1/promises/a%2Fb/resolve")).status_code \
                == 405
        assert await node.workflow("p/1").result() == [
            "yes", "promise 'approval/promises/x' of workflow 'p/1' was rejected: no"]
        assert node.workflow("p/1/promises/approval").status() == "waiting"


def test_a_wildcard_address_prints_a_name_a_browser_can_open() -> None:
    from garrison.console._serve import _browsable

    assert _browsable("http://0.0.0.0:8233/") == f"http://{socket.gethostname()}:8233/"
    assert _browsable("http://[::]:8233/") == f"http://{socket.gethostname()}:8233/"
    assert _browsable("http://127.0.0.1:8233/") == "http://127.0.0.1:8233/"


# ------------------------------------------------------------------ PostgreSQL
async def test_the_console_on_each_store(store_spec: str, autojump_clock: Any) -> None:
    """``garrison ui --store postgresql://...`` and ``--ui`` on a node whose store is
    PostgreSQL work as on SQLite: list, filters, paging, detail, actions."""
    cluster = store_spec.startswith("postgresql://")
    async with garrison.open_node(store=store_spec) as node:
        for i in range(5):
            await node.start_workflow(console_app.gated, f"b{i}", None, id=f"g-{i}")
        await node.start_workflow(console_app.listening, id="l-1")
        store = node.hosts["workflows"].store
        await until(lambda: len(store.list_workflows("waiting")) == 6)
        async with client(make_app(NodeBackend(node))) as c:
            first = (await c.get("/api/workflows?status=waiting&limit=4")).json()
            rest = (await c.get("/api/workflows", params={
                "status": "waiting", "limit": 4, "after": first["next"]})).json()
            assert [w["workflow_id"] for w in first["workflows"] + rest["workflows"]] == [
                "l-1", "g-4", "g-3", "g-2", "g-1", "g-0"]
            found = (await c.get("/api/workflows", params={"search": "label=b3"})).json()
            assert [w["workflow_id"] for w in found["workflows"]] == ["g-3"]
            r = await post(c, "/api/workflows/g-0/promises/go/resolve", {"value": "pg"})
            assert r.status_code == 200, r.text
            assert await node.workflow("g-0").result() == {"label": "b0", "go": "pg"}
            # (helper-370) the node of the cluster that runs it, as garrison workflows
            # show names it (null once none does); a SQLite store has one node: absent
            for wid, runs in (("g-1", node.name), ("g-0", None)):
                w = (await c.get(f"/api/workflows/{wid}")).json()["workflow"]
                assert w.get("node", "absent") == (runs if cluster else "absent"), w
            # a NUL in an id or a search value: nothing matches (no server error)
            assert (await c.get("/api/workflows/a%00b")).status_code == 404
            r = await c.get("/api/workflows", params={"id": "g\x00", "search": "label=\x00"})
            assert r.status_code == 200 and r.json()["workflows"] == []
        tool = _store_tools.open_store(store_spec)  # as garrison ui opens it
        try:
            async with client(make_app(StoreBackend(tool))) as c:
                d = (await c.get("/api/workflows/g-1")).json()
                assert d["workflow"]["status"] == "waiting" and d["promises"][0]["name"] == "go"
                assert d["workflow"].get("node", "absent") == (node.name if cluster
                                                               else "absent")
                r = await post(c, "/api/workflows/l-1/signal", {"topic": "hi", "payload": 1})
                assert r.status_code == 200, r.text
                assert await node.workflow("l-1").result() == {"topic": "hi", "payload": 1}
        finally:
            tool.close()


async def test_workflow_ids_dot_and_dot_dot_survive_the_url(store_path: str) -> None:
    """A browser drops a path segment ``.`` or ``..`` (``%2E%2E`` too): the pages write
    those two ids or promise names percent-encoded twice (``%252E%252E``) and the
    console takes ``%2E`` / ``%2E%2E`` for them, so the workflows ``.`` and ``..`` open
    and take actions; every other id means what it says encoded once (``50%41`` is not
    ``50A``); a login returns to such a page as it was asked for."""
    with SQLiteStore(store_path) as s:
        for wid in (".", "..", "50%41", "%2E", "%2e%2E", ".%2E"):
            s.write(Transaction().create_workflow(wid, "app:flow", [], status="waiting"))
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        for path, wid in (("%252E", "."), ("%252E%252E", ".."), ("50%2541", "50%41"),
                          ("%2E%2E", ".."),  # (httpx, unlike a browser, keeps %2E%2E)
                          # ids that decode to . or .. are encoded twice too: the id
                          # %2E never names the workflow . (nor %2e%2E ..)
                          ("%25252E", "%2E"), ("%25252e%25252E", "%2e%2E"),
                          (".%252E", ".%2E")):
            r = await c.get(f"/api/workflows/{path}")
            assert r.status_code == 200 and r.json()["workflow"]["workflow_id"] == wid, path
        assert (await c.get("/api/workflows/..%252F.")).status_code == 404
        page = await c.get("/workflows/%252E%252E")
        assert page.status_code == 200 and 'data-workflow-id=".."' in page.text
        r = await post(c, "/api/workflows/%252E%252E/signal", {"topic": "t"})
        assert r.status_code == 200 and r.json()["workflow_id"] == ".."
        r = await post(c, "/api/workflows/%252E/promises/%252E%252E/resolve", {"value": 1})
        assert (r.status_code, r.json()["workflow_id"], r.json()["promise"]) == \
            (200, ".", "..")
        assert (await post(c, "/api/workflows/%252E/cancel")).status_code == 200
    assert [m.topic for m in store.pending_messages("..")] == ["t"]
    assert store.pending_messages(".") == []
    assert [(p.name, p.value) for p in store.promises(".")] == [("..", 1)]
    assert store.get_workflow(".").cancel_requested and \
        not store.get_workflow("..").cancel_requested

    # the page script encodes ids so (the function the links and API calls use; it is
    # run in test_an_id_that_reads_like_an_encoded_dot_is_not_taken_for_a_dot)
    script = (Path(garrison.__file__).parent / "console/static/console.js").read_text()
    assert "function segment(text)" in script
    assert "encodeURIComponent(id)" not in script and "encodeURIComponent(wid)" not in script

    app = make_app(StoreBackend(store), token=TOKEN)
    async with client(app) as c:
        r = await c.get("/workflows/%252E%252E?host=x")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Fworkflows%2F%25252E%25252E%3Fhost%3Dx"
        r = await c.post("/login", data={"token": TOKEN, "next": "/workflows/%252E%252E"},
                         headers={"Origin": BASE})
        assert r.status_code == 303 and r.headers["location"] == "/workflows/%252E%252E"
    store.close()


def _page_segments(texts: list[str]) -> dict[str, str]:
    """Each workflow id or promise name as the console's pages write it in a URL's path:
    the function ``segment`` of console.js, run by Debian's chromium (as the browser
    tests run the pages)."""
    from _console_server import chromium as find_chromium
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()

    script = (Path(garrison.__file__).parent / "console" / "static" / "console.js").read_text()
    found = re.search(r"^const DOTS = .*?^function segment\(text\) \{$.*?^\}$", script,
                      re.M | re.S)
    assert found is not None, "console.js has no DOTS and function segment(text)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            out = browser.new_page().evaluate(
                "(texts) => {\n" + found.group(0) + "\nreturn texts.map(segment);\n}", texts)
        finally:
            browser.close()
    return dict(zip(texts, out, strict=True))


async def test_an_id_that_reads_like_an_encoded_dot_is_not_taken_for_a_dot(
        store_path: str) -> None:
    """The console takes the segment ``%2E`` / ``%2E%2E`` for the ids ``.`` / ``..``
    (which a browser drops from a path). The ids ``%2E`` and ``%2E%2E`` themselves,
    written as any other id, then named ``.`` and ``..``: their pages and actions went
    to those workflows (a cancel of ``%2E`` cancelled ``.``), or to none. The pages now
    write such an id with one level of encoding more, which the console takes off."""
    ids = [".", "..", "%2E", "%2e", "%2E%2E", "%2e%2E", "%252E", "%2E%252E", "50%41",
           "...", "%2E.", ".%2E", "%", "%%2E", "%zz", "%E9", "a/b", "naïve", "a b", "%2F",
           "%25"]
    with SQLiteStore(store_path) as s:
        for wid in ids:
            s.write(Transaction().create_workflow(wid, "app:flow", [], status="waiting"))
    segments = _page_segments(ids)
    for wid, written in segments.items():  # none is a segment a browser drops
        assert written.upper() not in {".", "..", ".%2E", "%2E.", "%2E%2E"}, wid
    assert segments["."] == "%252E" and segments["50%41"] == "50%2541"  # as before
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        for wid in ids:
            path = segments[wid]
            r = await c.get(f"/api/workflows/{path}")
            assert r.status_code == 200 and r.json()["workflow"]["workflow_id"] == wid, path
            page = await c.get(f"/workflows/{path}")
            assert f'data-workflow-id="{wid}"' in page.text, path
        r = await post(c, f"/api/workflows/{segments['%2E']}/cancel")
        assert r.status_code == 200 and r.json()["workflow_id"] == "%2E"
        r = await post(c, f"/api/workflows/{segments['.']}/promises/"
                          f"{segments['%2E%2E']}/resolve", {"value": 1})
        assert (r.status_code, r.json()["workflow_id"], r.json()["promise"]) == \
            (200, ".", "%2E%2E")
    assert store.get_workflow("%2E").cancel_requested
    assert not store.get_workflow(".").cancel_requested
    assert [(p.name, p.value) for p in store.promises(".")] == [("%2E%2E", 1)]


async def test_sessions_expire_when_idle_and_at_their_maximum_age(
        store_path: str, autojump_clock: Any) -> None:
    """A login session unused for ``session_idle``, or older than ``session_max_age``
    however busy, is refused as no session is (401 for the API, the login page for a
    page); the browser keeps its cookie no longer than the maximum age."""
    SQLiteStore(store_path).close()
    store = _store_tools.open_store(store_path)
    assert (make_app(StoreBackend(store), token=TOKEN).session_idle,
            make_app(StoreBackend(store), token=TOKEN).session_max_age) == (3600, 43200)
    app = make_app(StoreBackend(store), token=TOKEN, session_idle=60, session_max_age=300)

    async def log_in(c: httpx.AsyncClient) -> None:
        r = await c.post("/login", data={"token": TOKEN, "next": "/"},
                         headers={"Origin": BASE})
        assert r.status_code == 303 and "max-age=300" in r.headers["set-cookie"].lower()

    async with client(app) as c:
        await log_in(c)
        for _ in range(5):  # used every 50 s: alive until 300 s after the login
            assert (await c.get("/api/workflows")).status_code == 200
            await trio.sleep(50)
        assert (await c.get("/api/workflows")).status_code == 200  # 250 s
        await trio.sleep(50)
        r = await c.get("/api/workflows")  # 300 s: too old, however busy
        assert r.status_code == 401 and "session has expired" in r.json()["error"]
        assert app.sessions == {}
        r = await c.get("/workflows/x")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fworkflows%2Fx"

        await log_in(c)
        await trio.sleep(59)
        assert (await c.get("/api/workflows")).status_code == 200
        await trio.sleep(60)  # idle for 60 s
        c.cookies.set(CSRF, "csrf")
        r = await c.post("/api/workflows/x/cancel", headers={"X-Garrison-CSRF": "csrf"})
        assert r.status_code == 401 and "session has expired" in r.json()["error"]
        assert (await c.get("/")).status_code == 303
        # a login forgets the expired sessions of others too
        stale = app.new_session()
        await trio.sleep(60)
        await log_in(c)
        assert stale not in app.sessions and len(app.sessions) == 1
        # the bearer token has no session to expire
        c.cookies.delete(SESSION)
        await trio.sleep(301)
        assert (await c.get("/api/workflows", headers={
            "Authorization": f"Bearer {TOKEN}"})).status_code == 200
    store.close()

    for idle, age, said in (("0s", "1h", "session_idle '0s': expected a positive"),
                            # (it said "must be a non-negative number", yet 0 is refused)
                            (-1, "1h", "session_idle -1: expected a positive duration"),
                            ("1h", "soon", "invalid session_max_age 'soon'")):
        with pytest.raises(ValueError, match=re.escape(said)):
            await garrison.console.serve_console(store=store_path, session_idle=idle,
                                                 session_max_age=age)


async def test_log_out_ends_the_session(store_path: str, autojump_clock: Any) -> None:
    """helper-215: an operator on a shared machine could not end a session (only its
    idle time or maximum age did). ``POST /api/logout`` forgets it and drops the
    cookie: the same cookie is then refused as no session is. It needs the CSRF header
    (another site cannot log an operator out), and with a bearer token or without a
    token there is no session, and nothing to end (200 all the same)."""
    SQLiteStore(store_path).close()
    store = _store_tools.open_store(store_path)
    app = make_app(StoreBackend(store), token=TOKEN)
    async with client(app) as c:
        r = await c.post("/login", data={"token": TOKEN, "next": "/"}, headers={"Origin": BASE})
        assert r.status_code == 303
        cookie = c.cookies[SESSION]
        assert (await c.get("/api/workflows")).status_code == 200
        c.cookies.set(CSRF, "csrf")
        r = await c.post("/api/logout", headers={"Origin": BASE})
        assert r.status_code == 403 and "CSRF" in r.json()["error"]
        r = await c.post("/api/logout", headers={"X-Garrison-CSRF": "csrf", "Origin": BASE})
        assert r.status_code == 200 and r.json() == {"logged_out": True}, r.text
        assert f'{SESSION}=""' in r.headers["set-cookie"] or \
            "max-age=0" in r.headers["set-cookie"].lower(), r.headers["set-cookie"]
        assert app.sessions == {}
        c.cookies.set(SESSION, cookie)  # (a copy the browser kept)
        r = await c.get("/api/workflows")
        assert r.status_code == 401 and "needs its token" in r.json()["error"]
        assert (await c.get("/")).status_code == 303
        r = await c.post("/api/logout", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json() == {"logged_out": False}
    async with client(make_app(StoreBackend(store))) as c:  # no token: no sessions
        r = await post(c, "/api/logout")
        assert r.status_code == 200 and r.json() == {"logged_out": False}
    store.close()


async def test_two_token_consoles_on_one_host_keep_their_own_cookies(seeded: str) -> None:
    """A browser sends a host's cookies to every port of it (RFC 6265) and keeps one
    cookie per name: two consoles on one machine (two SSH tunnels, two nodes) that both
    wrote ``garrison_session`` logged each other out, each login overwriting the
    other's (helper-389). The names carry the port the browser addressed: each console
    sets and reads its own, in one browser's cookie jar."""
    import http.cookiejar

    store = _store_tools.open_store(seeded)
    other_token = "another-console-token-0123"
    first = make_app(StoreBackend(store), token=TOKEN)
    second = make_app(StoreBackend(store), token=other_token)
    jar = http.cookiejar.CookieJar()  # one browser: cookies by host name, not port

    def tab(app: Any, base: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base,
                                 cookies=jar)  # (a CookieJar is shared, not copied)

    async with tab(first, "http://127.0.0.1:8393") as a, \
            tab(second, "http://127.0.0.1:8395") as b:
        logged_in = await a.post("/login", data={"token": TOKEN, "next": "/"})
        assert logged_in.status_code == 303, logged_in.text
        r = await b.post("/login", data={"token": other_token, "next": "/"})
        assert r.status_code == 303, r.text
        # the second login did not log the first console's tab out
        assert (await a.get("/api/workflows")).status_code == 200
        assert (await b.get("/api/workflows")).status_code == 200
        said = logged_in.headers["set-cookie"].lower()
        assert said.startswith("garrison_session_8393=") and "httponly" in said \
            and "samesite=strict" in said, said
        page = await a.get("/")
        said = page.headers["set-cookie"].lower()
        assert said.startswith("garrison_csrf_8393=") and "httponly" not in said \
            and "samesite=strict" in said, said
        # the page tells its script which cookie to echo
        assert 'data-csrf-cookie="garrison_csrf_8393"' in page.text
        assert (await b.get("/")).status_code == 200
        assert {c.name for c in jar} == {"garrison_session_8393", "garrison_csrf_8393",
                                         "garrison_session_8395", "garrison_csrf_8395"}
        csrf = {c.name: c.value for c in jar}
        r = await a.post("/api/workflows/l-1/signal", json={"topic": "t"},
                         headers={"X-Garrison-CSRF": csrf["garrison_csrf_8395"]})
        assert r.status_code == 403
        assert "equal to the 'garrison_csrf_8393' cookie" in r.json()["error"], r.text
        r = await a.post("/api/workflows/l-1/signal", json={"topic": "t"},
                         headers={"X-Garrison-CSRF": csrf["garrison_csrf_8393"]})
        assert r.status_code == 200, r.text
        # one console's log-out drops its own cookie, not the other's session
        r = await a.post("/api/logout", headers={"X-Garrison-CSRF": csrf["garrison_csrf_8393"]})
        assert r.json() == {"logged_out": True}
        assert r.headers["set-cookie"].startswith("garrison_session_8393=")
        assert (await a.get("/api/workflows")).status_code == 401
        assert (await b.get("/api/workflows")).status_code == 200
    # a session cookie under another name (the other port's, the unnumbered one) is
    # not this console's
    session = first.new_session()
    async with client(first, "http://127.0.0.1:8393") as c:
        for name in ("garrison_session", "garrison_session_8395"):
            r = await c.get("/api/workflows", headers={"Cookie": f"{name}={session}"})
            assert r.status_code == 401, name
        r = await c.get("/api/workflows",
                        headers={"Cookie": f"garrison_session_8393={session}"})
        assert r.status_code == 200
        r = await c.get("/api/workflows", headers={
            "Host": "[::1]:8393", "Cookie": f"garrison_session_8393={session}"})
        assert r.status_code == 200
    store.close()


async def test_behind_a_proxy_the_cookies_are_named_for_the_port_the_browser_used(
        seeded: str) -> None:
    """Behind a trusted proxy the port is the one in ``X-Forwarded-Host`` (what the
    browser's cookie jar keys on), for the cookies set and read alike; an address with
    no port (the scheme's own) names them without one."""
    store = _store_tools.open_store(seeded)
    app = make_app(StoreBackend(store), token=TOKEN, forwarded_allow_ips="127.0.0.1")
    async with client(app) as c:
        for public, suffix in (("console.example:8443", "_8443"), ("console.example", "")):
            proxy = {"X-Forwarded-Host": public, "X-Forwarded-Proto": "https"}
            r = await c.post("/login", data={"token": TOKEN, "next": "/"}, headers=proxy)
            assert r.status_code == 303, r.text
            said = r.headers["set-cookie"].lower()
            assert said.startswith(f"garrison_session{suffix}=") and "secure" in said, said
            # (Secure: sent back by hand, as the browser sends it over HTTPS)
            session = f"garrison_session{suffix}={r.cookies[f'garrison_session{suffix}']}"
            page = await c.get("/", headers={"Cookie": session, **proxy})
            assert page.status_code == 200, page.text
            assert page.headers["set-cookie"].startswith(f"garrison_csrf{suffix}=")
            csrf = page.cookies[f"garrison_csrf{suffix}"]
            r = await c.post("/api/workflows/l-1/signal", json={"topic": "t"}, headers={
                "Cookie": f"{session}; garrison_csrf{suffix}={csrf}",
                "X-Garrison-CSRF": csrf, **proxy})
            assert r.status_code == 200, r.text
            # the console's own address (no proxy) is another port: not this cookie's
            r = await c.get("/api/workflows", headers={"Cookie": session})
            assert r.status_code == 401, r.text
    store.close()


async def test_login_on_a_console_without_a_token_goes_to_the_console(seeded: str) -> None:
    """A console started without a token needs no login: ``/login`` showed a form that
    could never succeed (no token matches). It goes to the page asked for instead."""
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/login")
        assert r.status_code == 303 and r.headers["location"] == "/"
        r = await c.get("/login?next=%2Fworkflows%2Fg-1")
        assert r.status_code == 303 and r.headers["location"] == "/workflows/g-1"
        r = await c.get("/login?next=//evil.example/")
        assert r.status_code == 303 and r.headers["location"] == "/"
        r = await c.post("/login", data={"token": "anything", "next": "/node"})
        assert r.status_code == 303 and r.headers["location"] == "/node"
        assert "set-cookie" not in r.headers
        r = await c.get("/login", follow_redirects=True)
        assert r.status_code == 200 and "Log in" not in r.text
    store.close()


@pytest.mark.parametrize("max_age", [math.inf, 1e300])
async def test_a_session_with_no_maximum_age_logs_in(store_path: str, autojump_clock: Any,
                                                     max_age: float) -> None:
    """``session_max_age=math.inf`` (sessions too old never) was accepted, and then every
    login failed with a 500 (the cookie's Max-Age, int(inf), overflowed); a huge one
    wrote a Max-Age of 301 digits. The cookie is kept 400 days at most (the most a
    browser keeps one), the session as long as it is used."""
    SQLiteStore(store_path).close()
    store = _store_tools.open_store(store_path)
    app = make_app(StoreBackend(store), token=TOKEN, session_idle=math.inf,
                   session_max_age=max_age)
    async with client(app) as c:
        r = await c.post("/login", data={"token": TOKEN, "next": "/"},
                         headers={"Origin": BASE})
        assert r.status_code == 303, r.text
        assert "max-age=34560000;" in r.headers["set-cookie"].lower()
        await trio.sleep(30 * 86400.0)
        assert (await c.get("/api/workflows")).status_code == 200
    store.close()


def test_the_command_line_checks_the_session_options(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    from garrison._cli import build_parser

    SQLiteStore(store_path).close()
    for argv, said in (
            (["ui", "--store", store_path, "--session-idle", "0"],
             "garrison ui: invalid --session-idle '0'"),
            (["ui", "--store", store_path, "--session-max-age", "0s"],
             "garrison ui: --session-max-age '0s': expected a positive duration"),
            (["run", "nowhere:main", "--session-idle", "5m"],
             "garrison run: --session-idle is an option of the console (--ui)")):
        parsed = build_parser().parse_args(argv)
        assert parsed.func(parsed) == 2, argv
        assert capsys.readouterr().err.startswith(said), argv
    # a value that begins with a dash was argparse's "expected one argument"
    from garrison._cli import main

    assert main(["ui", "--store", store_path, "--session-idle", "-1s"]) == 2
    assert capsys.readouterr().err.startswith(
        "garrison ui: invalid --session-idle '-1s': a duration cannot be negative")


def test_a_session_option_without_a_unit_says_what_to_type(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--session-idle 5`` said "only a number (not a string) means seconds", which
    no command line can give: it says what to type, as ``--lease`` does."""
    from garrison._cli import main

    SQLiteStore(store_path).close()
    for option in ("--session-idle", "--session-max-age"):
        assert main(["ui", "--store", store_path, option, "5"]) == 2
        assert capsys.readouterr().err == (
            f"garrison ui: invalid {option} '5': a duration needs its unit: type 5s for "
            "seconds (or another unit: ms, m, h, d)\n")


async def test_a_store_error_is_a_json_503_naming_the_store(seeded: str, tmp_path: Path) -> None:
    """A store the console cannot use answers the console's JSON error with 503 and the
    StoreError's message (it was Starlette's plain-text 500): a store locked past the
    busy timeout, and a store file replaced under ``garrison ui`` (a backup restored
    with ``mv``), whose actions must not land in the file no path reaches any more."""
    import shutil
    import sqlite3

    other = sqlite3.connect(seeded, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another program writing, for a long time
        with SQLiteStore(seeded, lock=False, busy_timeout=0.1) as store:
            async with client(make_app(StoreBackend(store))) as c:
                r = await post(c, "/api/workflows/l-1/signal", {"topic": "note", "payload": 1})
                assert r.status_code == 503, r.text
                assert r.headers["content-type"] == "application/json"
                error = r.json()["error"]
                assert seeded in error and "busy timeout (0.1s)" in error, error
                assert "\n" not in error
        other.execute("ROLLBACK")
    finally:
        other.close()

    backup = str(tmp_path / "backup.db")
    shutil.copy(seeded, backup)
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        assert (await c.get("/api/workflows/l-1")).status_code == 200
        os.replace(backup, seeded)  # the operator restores a backup
        r = await post(c, "/api/workflows/l-1/signal", {"topic": "note", "payload": 1})
        assert r.status_code == 503, r.text
        assert seeded in r.json()["error"] and "replaced" in r.json()["error"]
        for path in ("/api/workflows/l-1", "/api/workflows"):
            r = await c.get(path)
            assert r.status_code == 503 and "replaced" in r.json()["error"], r.text
    store.close()
    with SQLiteStore(seeded, lock=False) as restored:
        assert restored.pending_messages("l-1") == []


async def test_big_values_are_cut_and_encoded_off_the_event_loop(
        store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow whose result, input, state, search attributes, memo, journal outcome
    and inbox payload are megabytes: the console served them whole (50 MB a poll,
    encoded and hashed on the node's trio thread; the list put whole search attributes
    in every row). Each value is cut at VALUE_SHOWN bytes of its JSON text (a list
    row's search attributes at LIST_VALUE_SHOWN), marked with its whole size."""
    from garrison.console import _backend

    big = "x" * 3_000_000
    with SQLiteStore(store_path) as owner:
        tx = Transaction().create_workflow("huge", "console_app:listening", [big, 1],
                                           status="waiting",
                                           search={"blob": big, "small": "s"},
                                           memo={"note": {"text": big}})
        tx.set_state("huge", "big", [big]).set_state("huge", "small", 7)
        tx.append_journal("huge", 1, "activity", "app:step", {"value": big})
        tx.deliver("huge", "note", {"body": big}, msg_id="m-1")
        tx.update_workflow("huge", status="completed", result={"data": big})
        for i in range(5):
            tx.create_workflow(f"row-{i}", "app:flow", [], search={"blob": big, "n": i})
        owner.write(tx)

    def is_cut(value: Any, size: int) -> bool:
        return (value["$cut"] is True and value["bytes"] == size
                and len(value["head"].encode()) == _backend.VALUE_SHOWN)

    # the encoding (the cut's and the answer's) and the ETag's hash run in worker
    # threads, not on the thread of the node's event loop
    from garrison.console import _app

    threads: set[threading.Thread] = set()

    def watched(real: Any) -> Any:
        def run(*args: Any, **kw: Any) -> Any:
            threads.add(threading.current_thread())
            return real(*args, **kw)
        return run

    monkeypatch.setattr(_app, "_encode", watched(_app._encode))
    monkeypatch.setattr(_backend, "_json_text", watched(_backend._json_text))
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/api/workflows/huge")
        assert r.status_code == 200
        assert len(r.content) < 1_000_000, len(r.content)
        d = r.json()
        w = d["workflow"]
        result = w["result"]
        assert result["$cut"] is True and result["bytes"] == len(big) + len('{"data":""}')
        assert result["head"].startswith('{"data":"xxx')
        assert len(result["head"].encode()) == _backend.VALUE_SHOWN
        assert w["input"]["$cut"] is True and w["input"]["bytes"] == len(big) + len('["",1]')
        assert w["search"]["small"] == "s" and is_cut(w["search"]["blob"], len(big) + 2)
        assert w["memo"]["note"]["$cut"] is True
        assert d["state"]["small"] == 7 and d["state"]["big"]["$cut"] is True
        assert d["journal"][0]["outcome"]["$cut"] is True and d["journal"][0]["ok"] is True
        assert d["inbox"][0]["payload"]["$cut"] is True
        # the ETag still tells an unchanged answer
        again = await c.get("/api/workflows/huge", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304

        listed = await c.get("/api/workflows", params={"id": "row-"})
        assert len(listed.content) < 50_000, len(listed.content)
        rows = listed.json()["workflows"]
        assert len(rows) == 5
        for row in rows:
            blob = row["search"]["blob"]
            assert blob["$cut"] is True and blob["bytes"] == len(big) + 2
            assert len(blob["head"]) == _backend.LIST_VALUE_SHOWN
            assert isinstance(row["search"]["n"], int)
    store.close()
    assert threads and threading.main_thread() not in threads


def test_the_cut_keeps_small_values_and_text_whole() -> None:
    from garrison.console._backend import shown, shown_text

    for value in (None, 1, 1.5, True, "text", [1, "a"], {"k": "v"}, "é" * 16000):
        assert shown(value) == value
    cut = shown("é" * 40000)  # 80,002 bytes of JSON text
    assert cut["bytes"] == 80002 and len(cut["head"].encode()) <= 64 * 1024
    assert shown_text("short") == "short"
    long = shown_text("y" * 100_000)
    assert long.endswith("… (cut: 100,000 bytes in all)") and long.startswith("yyy")


async def test_a_page_of_many_values_each_under_the_cut_stays_small(store_path: str) -> None:
    """A review of the cut: each value was cut at 64 KiB, but a page of hundreds of
    values just under it was hundreds of megabytes (a list row of thousands of search
    attributes, 100 MB a page). An answer's values share an allowance: past it each is
    cut short, marked as cut."""
    from garrison.console import _backend

    near = "v" * 60_000
    with SQLiteStore(store_path) as owner:
        tx = Transaction().create_workflow("many", "app:flow", [], status="waiting",
                                           search={f"a{i}": "w" * 900 for i in range(200)})
        for seq in range(1, 101):
            tx.append_journal("many", seq, "activity", "app:step", {"v": near})
        for k in range(50):
            tx.set_state("many", f"k{k}", near)
        owner.write(tx)
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/api/workflows/many")
        assert r.status_code == 200
        assert len(r.content) < _backend.DETAIL_SHOWN + 200_000, len(r.content)
        d = r.json()
        assert d["journal"][0]["outcome"] == {"v": near}  # the first ones whole
        assert d["state"]["k49"]["$cut"] is True and d["state"]["k49"]["bytes"] == 60_002
        listed = await c.get("/api/workflows")
        assert len(listed.content) < 40_000, len(listed.content)  # (180 KB whole)
        row = listed.json()["workflows"][0]
        assert len(row["search"]) + row["search_omitted"] == 200 and row["search_omitted"]
        # a repeated filter is one: 65 of the same is no more than the 64 keys allowed
        same = await c.get("/api/workflows", params=[("search", "a=1")] * 65)
        assert same.status_code == 200, same.text
        many = await c.get("/api/workflows", params=[("search", f"a{i}=1") for i in range(65)])
        assert many.status_code == 400 and "65 keys" in many.json()["error"]
    store.close()



async def test_a_journal_of_big_outcomes_is_shown_from_the_start_of_each(
        store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-447: a workflow page decoded every outcome of the journal it shows whole
    (2,000 records of 100 KB: 200 MB decoded, then encoded again to be cut, 1-2 s a
    poll). It reads of each stored outcome as much as the page shows of it, and decodes
    only those it may show whole: the rows are what decoding them all gave (a failed
    workflow's page still reads its journal whole, for its Retry note), but for a cut
    outcome's size, that of its stored text (its escapes, ``\\u00e9``, count 6)."""
    from _stores import sql

    emoji = "é😀\x01" * 60
    with SQLiteStore(store_path) as owner:
        tx = Transaction().create_workflow("big", "console_app:listening", [1],
                                           status="waiting")
        for seq in range(1, 301):
            if seq % 50 == 7:  # a failure: shown whole, then cut, ok False either way
                out: Any = {"error": {"type": "E", "message": "m" * 30_000}}
            elif seq % 10 == 3:  # small, with escapes
                out = {"ok": "é✓ \n\x01\\u00e9" * 3}
            elif seq == 5:  # over VALUE_SHOWN: cut as the first
                out = {"ok": ["x" * 70_000]}
            elif seq == 299:
                out = {"ok": emoji}
            else:
                out = {"ok": {"n": seq, "text": "x" * 20_000}}
            tx.append_journal("big", seq, "activity", "app:step", out)
        owner.write(tx)
    stored = sum(n for (n,) in sql(store_path, "SELECT length(outcome) FROM journal"))
    store = _store_tools.open_store(store_path)
    read: list[int] = []
    real = store.journal_heads

    def counting(*args: Any, **kw: Any) -> Any:
        heads = real(*args, **kw)
        read.append(sum(len(h.text) for h in heads))
        return heads

    monkeypatch.setattr(store, "journal_heads", counting)
    async with client(make_app(StoreBackend(store))) as c:
        shown = (await c.get("/api/workflows/big")).json()["journal"]
        assert stored > 5_000_000 and sum(read) < 2_500_000, (stored, read)
        sql(store_path, "UPDATE workflows SET status = 'failed' WHERE workflow_id = 'big'")
        whole = (await c.get("/api/workflows/big")).json()["journal"]
    store.close()
    assert shown[4]["outcome"]["$cut"] is True and shown[6]["ok"] is False
    assert shown[256]["outcome"]["$cut"] is True and shown[256]["ok"] is False
    assert shown[2]["outcome"] == {"ok": "é✓ \n\x01\\u00e9" * 3}
    assert shown[:298] == whole[:298]
    assert shown[299] == whole[299]
    cut, was = shown[298]["outcome"], whole[298]["outcome"]
    assert cut["head"] == was["head"] and was["bytes"] == len(json.dumps(
        {"ok": emoji}, ensure_ascii=False, separators=(",", ":")).encode())
    assert cut["bytes"] == len(json.dumps({"ok": emoji}, separators=(",", ":")))

async def test_a_damaged_outcome_cut_on_a_running_workflow_s_page_is_named_not_shown(
        store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A big journal record whose stored text is no JSON (a hand edit): a running
    workflow's page showed the start of it cut, as if it were a value (only a failed
    workflow's page reads its journal whole, which names it). It is the 503 naming the
    record in the words ``garrison workflows history`` says it in, a big one and one
    cut once the page's allowance is spent alike."""
    from _stores import sql
    from test_operate import cli_here

    with SQLiteStore(store_path) as owner:
        tx = Transaction()
        for wid in ("big", "late"):
            tx.create_workflow(wid, "console_app:listening", [1], status="waiting")
        for seq in range(1, 41):  # (40 of 100 KB: the allowance is spent before seq 40)
            tx.append_journal("late", seq, "activity", "app:step", {"ok": "x" * 100_000})
        tx.append_journal("big", 1, "activity", "app:step", {"ok": 1})
        tx.append_journal("big", 2, "activity", "app:step", {"ok": "x" * 300_000})
        owner.write(tx)
    for wid, seq in (("big", 2), ("late", 40)):  # (a key whose colon is gone)
        sql(store_path, "UPDATE journal SET outcome = replace(outcome, '\"ok\":', "
                        "'\"ok\" ') WHERE workflow_id = ? AND seq = ?", (wid, seq))
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        for wid, seq in (("big", 2), ("late", 40)):
            code, _out, err = cli_here(capsys, "--store", store_path, "history", wid)
            said = (f"workflow {wid!r}: the outcome of its journal record seq {seq} is not "
                    "JSON (Expecting ':' delimiter: line 1 column 7 (char 6))")
            assert code == 2 and err.endswith(f"is damaged: {said}\n"), err
            r = await c.get(f"/api/workflows/{wid}")
            assert r.status_code == 503, r.text[:300]
            assert said in r.json()["error"], r.json()
    store.close()


async def test_a_cut_outcome_stored_with_spaces_shows_the_head_decoding_it_shows(
        store_path: str) -> None:
    """An outcome stored with spaces after its colons and commas (by hand, or another
    writer of JSON): cut on a running workflow's page, its head kept them, where the
    same outcome decoded (a failed workflow's page) is shown without them."""
    from _stores import sql

    with SQLiteStore(store_path) as owner:
        owner.write(Transaction().create_workflow("w", "console_app:listening", [1],
                                                  status="waiting")
                    .append_journal("w", 1, "activity", "app:step", 0))
    spaced = json.dumps({"ok": {"a": [1, 2, {"b": "c, d: e"}], "f": "x " * 150_000}},
                        indent=1)
    sql(store_path, "UPDATE journal SET outcome = ? WHERE workflow_id = 'w'", (spaced,))
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        cut = (await c.get("/api/workflows/w")).json()["journal"][0]["outcome"]
        sql(store_path, "UPDATE workflows SET status = 'failed' WHERE workflow_id = 'w'")
        whole = (await c.get("/api/workflows/w")).json()["journal"][0]["outcome"]
    store.close()
    assert cut["$cut"] is True and whole["$cut"] is True
    assert cut["head"] == whole["head"], (cut["head"][:80], whole["head"][:80])
    assert cut["head"].startswith('{"ok":{"a":[1,2,{"b":"c, d: e"}],"f":"x x x '), cut


def test_a_cut_start_of_spaced_text_is_a_start_of_the_decoded_head() -> None:
    """The head of an outcome cut from its stored text, stored with spaces and lines
    between its tokens, is the head decoding it shows, or a start of it (the spaces
    read leave less of it): never other characters. A NaN or infinity begun at the end
    of the start read, which compacting brings within the head, is shown as the start
    of the string the decoded one shows (it was bare: ``-Inf`` for ``"-In``)."""
    import random

    from garrison.console._backend import _compact, _head, _json_text, _unescaped

    rnd = random.Random(7)
    leaves = [0, -1, 1.5, True, None, math.nan, -math.inf, "a\u00e9\"\\ , : \n\x01\U0001f600",
              "", "\\u00e9 x"]

    def value(depth: int = 0) -> Any:
        r = rnd.random()
        if depth > 3 or r < 0.3:
            return rnd.choice(leaves)
        if r < 0.65:
            return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
        return {rnd.choice(["a", 'b "', "\u00e9", "error"]) + str(i): value(depth + 1)
                for i in range(rnd.randint(0, 4))}

    shorter = 0
    for _ in range(600):
        v = value()
        decoded = _json_text(v)
        for separators, indent in (((", ", ": "), None), ((" ,", " : "), 2),
                                   ((",", ":"), None)):
            stored = json.dumps(v, separators=separators, indent=indent)
            for limit in (8, 20, 64):
                if len(stored) > 3 * limit + 12:
                    got = _head(_unescaped(_compact(stored[:3 * limit + 12])), limit)
                    want = _head(decoded, limit)
                    assert want.startswith(got), (stored[:80], got, want)
                    shorter += got != want
    assert shorter > 0
    assert _head(_unescaped(_compact('[\n  [\n    -Inf')), 8) == '[["-Inf'


def test_the_head_of_a_cut_outcome_holding_long_runs_of_backslashes_is_as_decoded() -> None:
    """The escapes of a cut outcome's start were found by a search that tried each
    backslash of a run of them to its end (``(\\+)u....``, and the cut escape at the
    end, ``(\\+)...$``): quadratic in the run. A string of 8,000 backslashes (16,000 in
    its stored text: say a value holding JSON of JSON of JSON...) took 5 s on each poll
    of a running workflow's page, one of 40,000 some 23 s. A run is tried from its first
    backslash alone; the head is as before. (Its time is no assertion here: the suite
    asserts no timing.)"""
    from garrison.console._backend import _compact, _head, _json_text, _unescaped

    for value in (["\\" * 40000 + "\u00e9"], ["x\\" * 20000 + "\u00e9\\u00e9"]):
        stored = json.dumps(value)
        got = _head(_unescaped(_compact(stored[:-3])), 64 * 1024)
        assert _json_text(value).startswith(got) and len(got) > 40000, got[-20:]
    assert _unescaped('["\\\\u00e9\\u00e9\\\\\\u00e9\\') == '["\\\\u00e9\u00e9\\\\\u00e9'


async def test_a_cut_outcome_holding_nan_shows_it_as_a_decoded_one_does(
        store_path: str) -> None:
    """helper-453: a journal outcome too big to decode is cut from its stored text,
    where a NaN or an infinity is bare (``NaN``, as Python's JSON writes it); the page
    showed it so, no JSON reader's text, where the same outcome decoded, then cut,
    shows ``"NaN"`` as every value of the console does. And a lone surrogate (which
    the page's text leaves out) was left out before the cut, not after it, so the cut
    head held more of the text than the decoded one; and one after an escaped
    backslash and the letters 'u00e9' stayed an escape. The heads are the same."""
    from _stores import sql

    nan, inf = float("nan"), float("inf")
    with SQLiteStore(store_path) as owner:
        tx = Transaction().create_workflow("nan", "console_app:listening", [1],
                                           status="waiting")
        tx.append_journal("nan", 1, "activity", "app:step",
                          {"ok": [nan, inf, -inf, "x\u00e9", 1.5] * 20_000})
        tx.append_journal("nan", 2, "activity", "app:step", {"ok": [-inf, 2] * 40_000})
        # (a lone surrogate: a character of the page's text, as the decoded one has it)
        tx.append_journal("nan", 3, "activity", "app:step",
                          {"ok": "\ud800é\udc00\U0001f600" * 20 + "x" * 300_000})
        # (a backslash, then 'u00e9' and a lone low surrogate: not a pair of escapes)
        tx.append_journal("nan", 4, "activity", "app:step",
                          {"ok": "\\u00e9\udc00é" * 20 + "x" * 300_000})
        owner.write(tx)
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        shown = (await c.get("/api/workflows/nan")).json()["journal"]
        sql(store_path, "UPDATE workflows SET status = 'failed' WHERE workflow_id = 'nan'")
        whole = (await c.get("/api/workflows/nan")).json()["journal"]
    store.close()
    for cut, was in zip(shown, whole, strict=True):
        assert cut["outcome"]["$cut"] is True and was["outcome"]["$cut"] is True
        assert cut["outcome"]["head"] == was["outcome"]["head"]
        assert cut["outcome"]["head"].startswith('{"ok":')


async def test_a_record_written_in_a_gap_as_the_page_reads_leaves_the_others_whole(
        store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-453: a workflow page lists its journal's records, then reads their
    outcomes by a count of records from the first one's seq. A record written meanwhile
    in a gap of seqs (an operation that finished after one begun later: activities run
    side by side) took the place of the last one listed, which was then shown from the
    200 characters listed of it: a small outcome as ``$cut`` with a head of 60 bytes.
    Each record listed is shown as it is stored."""
    with SQLiteStore(store_path) as owner:
        tx = Transaction().create_workflow("gap", "console_app:listening", [1],
                                           status="waiting")
        tx.append_journal("gap", 1, "activity", "app:step", {"ok": 1})
        tx.append_journal("gap", 3, "activity", "app:step", {"ok": "y" * 1_000})
        owner.write(tx)
    store = _store_tools.open_store(store_path)
    real = store.journal_heads
    written: list[int] = []

    def meanwhile(*args: Any, **kw: Any) -> Any:
        if not kw.get("newest") and not written:  # (as the outcomes are read, once)
            written.append(2)
            with SQLiteStore(store_path, lock=False) as other:
                other.write(Transaction().append_journal("gap", 2, "activity",
                                                         "app:step", {"ok": 2}))
        return real(*args, **kw)

    monkeypatch.setattr(store, "journal_heads", meanwhile)
    async with client(make_app(StoreBackend(store))) as c:
        shown = (await c.get("/api/workflows/gap")).json()["journal"]
    store.close()
    assert [(r["seq"], r["outcome"]) for r in shown] == [
        (1, {"ok": 1}), (3, {"ok": "y" * 1_000})]


def test_control_characters_count_six_bytes_in_the_cut() -> None:
    """'\\x00' is 6 bytes of JSON text (\\u0000): 16,383 of them (98,300 bytes) passed
    the quick 'short text' test and were shown whole."""
    from garrison.console._backend import shown

    cut = shown("\x00" * 16_383)
    assert cut["$cut"] is True and cut["bytes"] == 98_300


async def test_a_damaged_store_is_the_json_503_not_a_plain_500(store_path: str) -> None:
    """A review: a read of a damaged SQLite file raised sqlite3's own error, Starlette's
    plain-text 500; it is the console's JSON error, 503, as a StoreError is."""
    import os

    with SQLiteStore(store_path) as owner:
        tx = Transaction()
        for i in range(3000):
            tx.create_workflow(f"w{i}", "app:flow", [], status="waiting", search={"k": "v" * 50})
        owner.write(tx)
    size = os.path.getsize(store_path)
    with open(store_path, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * (size // 2 - 4096))
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/api/workflows", params={"search": "k=x"})
        assert r.status_code == 503, r.text
        assert "the store cannot be read" in r.json()["error"]
    store.close()


async def test_the_allowance_counts_keys_and_control_characters(store_path: str) -> None:
    """A review of the allowance: a memo of 5,000 keys of 1 KB each made a 5 MB page (keys
    were not counted), and 2,000 outcomes of NUL characters a 12 MB one (each counted as
    1 byte a character, 6 in JSON). Keys count; once the allowance is spent a mapping's
    further entries are left out, and ``memo_omitted`` says how many."""
    from garrison.console import _backend

    with SQLiteStore(store_path) as owner:
        tx = Transaction().create_workflow(
            "keys", "app:flow", [], status="waiting",
            memo={f"{i:06d}" + "k" * 1000: 1 for i in range(5000)})
        tx.create_workflow("ctl", "app:flow", [], status="waiting")
        for seq in range(1, 2001):
            tx.append_journal("ctl", seq, "activity", "app:step", "\x00" * 10_000)
        tx.create_workflow("row", "app:flow", [], status="waiting",
                           search={f"{i:03d}" + "k" * 2000: 1 for i in range(60)})
        owner.write(tx)
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        for wid in ("keys", "ctl"):  # (and 2,000 journal records' own fields)
            r = await c.get(f"/api/workflows/{wid}")
            assert r.status_code == 200
            assert len(r.content) < _backend.DETAIL_SHOWN + 600_000, (wid, len(r.content))
        w = (await c.get("/api/workflows/keys")).json()["workflow"]
        assert 0 < len(w["memo"]) < 5000 and w["memo_omitted"] == 5000 - len(w["memo"])
        listed = await c.get("/api/workflows", params={"id": "row"})
        row = listed.json()["workflows"][0]
        assert len(listed.content) < 3 * _backend.ROW_SHOWN, len(listed.content)
        assert row["search_omitted"] == 60 - len(row["search"])
    store.close()


async def test_topics_names_and_keys_are_cut_within_the_allowance(store_path: str) -> None:
    """A probe (helper-295): ten signals whose topics were 1 MB each made a 10 MB page
    (a topic has no limit, and only values went through the cut), and one search key of
    3 MB a 3 MB row of the list (keys were counted, never cut). Every name the page
    shows from the workflow's data is cut as a text and counted; a state key or
    promise name within the 1,000 bytes a workflow may give is whole, one longer (an
    older garrison's) is cut, and offers no Resolve… (it would resolve another name)."""
    from garrison.console import _backend

    old_name = "p" * 5000
    with SQLiteStore(store_path) as owner:
        tx = Transaction().create_workflow("names", "app:flow", [], status="waiting")
        for i in range(10):
            tx.deliver("names", f"T{i}" + "t" * 300_000, 1, msg_id=f"m-{i}")
        for seq in range(1, 41):  # (2.6 MB once cut at 64 KiB: the allowance is spent)
            tx.append_journal("names", seq, "send", f"S{seq:02d}" + "s" * 70_000, None)
        tx.create_promise("names", "approval").create_promise("names", old_name)
        tx.set_state("names", "k" * 900, 1)
        tx.create_workflow("bigkeys", "app:flow", [], status="waiting",
                           search={"s" * 3_000_000: 1}, memo={"m" * 3_000_000: 1})
        owner.write(tx)
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/api/workflows/names")
        assert r.status_code == 200
        assert len(r.content) < _backend.DETAIL_SHOWN + 200_000, len(r.content)
        d = r.json()
        assert [m["topic"][:2] for m in d["inbox"]] == [f"T{i}" for i in range(10)]
        assert d["inbox"][-1]["topic"].endswith("… (cut: 300,002 bytes in all)")
        assert d["journal"][0]["name"].endswith("… (cut: 70,003 bytes in all)")
        assert len(d["journal"][-1]["name"].encode()) < 100
        assert d["state"] == {"k" * 900: 1}
        names = [p["name"] for p in d["promises"]]
        assert names[0] == "approval" and names[1].endswith("… (cut: 5,000 bytes in all)")
        assert d["actions"]["resolve"] == ["approval"]
        listed = await c.get("/api/workflows", params={"id": "bigkeys"})
        assert listed.status_code == 200
        assert len(listed.content) < 3 * _backend.ROW_SHOWN, len(listed.content)
        (key,) = listed.json()["workflows"][0]["search"]
        assert key.startswith("sss") and key.endswith("… (cut: 3,000,000 bytes in all)")
        r = await c.get("/api/workflows/bigkeys")
        assert len(r.content) < _backend.DETAIL_SHOWN + 200_000, len(r.content)
        w = r.json()["workflow"]
        assert list(w["search"].values()) == [1] and list(w["memo"].values()) == [1]
        assert next(iter(w["memo"])).endswith("… (cut: 3,000,000 bytes in all)")
    store.close()


async def test_a_path_that_is_not_utf_8_is_400_naming_the_segment(seeded: str) -> None:
    """A probe (helper-295): bytes of the path that are no UTF-8 became U+FFFD, and the
    action ran on that name: a promise named '\ufffd\ufffd\ufffd' was resolved (200),
    a cancel looked up the workflow '\ufffd'. The command line refuses such a name, a
    JSON body such text: the path is 400 too, naming the segment, and nothing is done."""
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        r = await post(c, "/api/workflows/g-1/promises/%ED%A0%80/resolve", {"value": 1})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == ("the path segment '%ED%A0%80' is not valid UTF-8 once "
                                     "its %XX are decoded (a workflow id or promise name "
                                     "is text)")
        r = await post(c, "/api/workflows/%ff/cancel")
        assert r.status_code == 400 and "'%ff' is not valid UTF-8" in r.json()["error"]
        r = await c.get("/api/workflows/g%FF-1")
        assert r.status_code == 400 and "'g%FF-1'" in r.json()["error"]
        page = await c.get("/workflows/%ff")
        assert page.status_code == 400 and page.headers["content-type"].startswith("text/plain")
        # valid UTF-8, encoded or not, is as before
        assert (await c.get("/api/workflows/%C3%A9")).status_code == 404
        d = (await c.get("/api/workflows/g-1")).json()
        assert [p["status"] for p in d["promises"]] == ["pending"]
    store.close()


async def test_a_query_parameter_not_utf_8_or_given_twice_is_400_naming_it(
        seeded: str) -> None:
    """A probe (helper-370): a query's bytes that are no UTF-8 became U+FFFD (``id=%FF``
    listed a workflow whose id starts so; ``limit=%FF`` was refused as ``'\ufffd'``, not
    what was sent), and a parameter that takes one value, given twice, had one of them
    picked. Both are 400 naming the parameter, as a path segment that is not UTF-8 is;
    ``status`` and ``search`` still repeat."""
    store = _store_tools.open_store(seeded)
    async with client(make_app(StoreBackend(store))) as c:
        for query, said in (
                ("id=%FF", "the value '%FF' of the query parameter 'id' is not valid "
                           "UTF-8 once its %XX are decoded (a query parameter is text)"),
                ("limit=%ff", "the value '%ff' of the query parameter 'limit' is not"),
                ("search=%FF%FE=1", "the value '%FF%FE=1' of the query parameter 'search'"),
                ("status=waiting&%FF=1", "the query parameter name '%FF' is not valid")):
            r = await c.get(f"/api/workflows?{query}")
            assert r.status_code == 400 and r.json()["error"].startswith(said), \
                (query, r.text)
        page = await c.get("/workflows/g-1?host=%FF")
        assert page.status_code == 400 and page.headers["content-type"].startswith("text/plain")
        assert (await c.get("/api/workflows?id=%C3%A9")).json()["workflows"] == []
        for query in ("limit=1&limit=2", "order=newest&order=oldest", "id=g&id=l",
                      "after=x&after=y", "host=a&host=b"):
            name = query.partition("=")[0]
            r = await c.get(f"/api/workflows?{query}")
            assert r.status_code == 400, (query, r.text)
            assert r.json()["error"] == (f"the query parameter {name!r} is given 2 times: "
                                         "it takes one value"), r.text
        r = await c.get("/api/workflows/g-1?host=a&host=b")
        assert r.status_code == 400 and "'host' is given 2 times" in r.json()["error"]
        both = (await c.get("/api/workflows?status=waiting&status=failed")).json()
        assert {w["workflow_id"] for w in both["workflows"]} == {"g-1", "l-1", "b-1"}
        r = await c.get("/api/workflows?search=a=1&search=a=2")
        assert r.status_code == 200 and r.json()["workflows"] == []
    store.close()


async def test_a_row_whose_json_is_damaged_is_the_json_503(store_path: str) -> None:
    """A column holding text that is no JSON (the file edited by hand, a bad restore)
    raised json's own error: a plain-text 500 with its traceback."""
    import sqlite3

    with SQLiteStore(store_path) as owner:
        owner.write(Transaction().create_workflow("w7", "app:flow", [1], status="waiting"))
    raw = sqlite3.connect(store_path)
    raw.execute("UPDATE workflows SET input = '[1,' WHERE workflow_id = 'w7'")
    raw.commit()
    raw.close()
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/api/workflows/w7")
        assert r.status_code == 503 and "the store cannot be read" in r.json()["error"]
    store.close()


async def test_a_stored_int_longer_than_the_readers_limit_is_the_json_503_naming_it(
        store_path: str) -> None:
    """A result holding an int longer than this Python reads (stored under
    ``sys.set_int_max_str_digits(0)``) raised a bare ValueError: a 500. It is the JSON
    503 naming the workflow and how to read it, not calling the store damaged."""

    with no_digit_limit(), SQLiteStore(store_path) as owner:
        owner.write(Transaction().create_workflow("w7", "app:flow", status="completed")
                    .update_workflow("w7", result=10**5000))
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/api/workflows/w7")
        assert r.status_code == 503, r.text
        assert r.json()["error"].startswith(
            "the store cannot be read by this Python: workflow 'w7': its result holds a "
            "whole number of 5,001 digits"), r.json()
        assert "damaged" not in r.json()["error"], r.json()
    store.close()


async def test_a_message_holding_an_int_longer_than_the_readers_limit_is_the_503_naming_it(
        store_path: str) -> None:
    """A pending message holding an int longer than this Python reads (sent under
    ``sys.set_int_max_str_digits(0)``): the workflow's page raised a bare ValueError, a
    500. It is the JSON 503 naming the workflow, the message and how to read it."""

    with no_digit_limit(), SQLiteStore(store_path) as owner:
        owner.write(Transaction().create_workflow("w7", "app:flow", status="waiting")
                    .deliver("w7", "big", {"n": 10**5000}, msg_id="m7"))
    store = _store_tools.open_store(store_path)
    async with client(make_app(StoreBackend(store))) as c:
        r = await c.get("/api/workflows/w7")
        assert r.status_code == 503, r.text
        assert r.json()["error"].startswith(
            "the store cannot be read by this Python: workflow 'w7': the payload of its "
            "inbox message 'm7' (topic 'big') holds a whole number of 5,001 digits"), r.json()
    store.close()


# ------------------------------------------------------------------ a stalled database
@pytest.mark.postgres
async def test_an_action_on_another_node_s_workflow_does_not_stall_the_node(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a PostgreSQL node, a console signal or cancel to a workflow the node does not
    run (another node's; here one whose code no node of the cluster has) reads and
    writes the store in a worker thread: while the database does not answer, that
    request waits, the node's event loop (another request) does not. Real time: under
    a ``MockClock`` the store is called in the trio thread."""
    async with garrison.open_node(store=postgres_url) as node:
        tool = _store_tools.open_store(postgres_url)
        try:
            tool.write(Transaction().create_workflow("elsewhere", "nowhere:flow", []))
        finally:
            tool.close()
        host = node.hosts["workflows"]
        store = host.store
        assert "elsewhere" not in host.active
        gate = threading.Event()
        threads: list[threading.Thread] = []
        real_write = store.write

        def stalled_write(tx: Any, *args: Any, **kw: Any) -> Any:
            if any(params[:1] == ("elsewhere",) for _op, params in tx.ops):
                threads.append(threading.current_thread())
                gate.wait(5)  # (a table an operator locked in psql)
            return real_write(tx, *args, **kw)

        monkeypatch.setattr(store, "write", stalled_write)
        for action, body in [("signal", {"topic": "hi", "payload": 1}), ("cancel", {})]:
            gate.clear()
            threads.clear()
            got: list[httpx.Response] = []
            async with client(make_app(NodeBackend(node))) as c, \
                    trio.open_nursery() as nursery:
                await c.get("/")  # (the CSRF cookie)

                async def act(c: httpx.AsyncClient = c, action: str = action,
                              body: Any = body, got: list[httpx.Response] = got) -> None:
                    got.append(await post(c, f"/api/workflows/elsewhere/{action}", body))

                nursery.start_soon(act)
                with trio.fail_after(3):
                    await until(lambda: threads)
                    # the node's loop goes on meanwhile
                    assert (await c.get("/api/capabilities")).status_code == 200
                assert got == [], (action, got[0].text)  # the action waits
                gate.set()
            assert got[0].status_code == 200, got[0].text
            assert threading.main_thread() not in threads
        assert [m.topic for m in store.pending_messages("elsewhere")] == ["hi"]
        # (it never ran: a cancel ends it at once, as one waiting in a queue, README)
        assert store.get_workflow("elsewhere").status == "cancelled"


async def test_a_store_console_s_action_waits_for_the_database_off_the_event_loop(
        store_path: str) -> None:
    """``garrison ui``: an action writes through ``garrison._store_tools`` in a worker
    thread: while another process holds SQLite's write lock, that request waits, the
    console (another request) answers meanwhile. Real time: under a ``MockClock`` the
    tools run in the trio thread."""
    import sqlite3

    async with garrison.open_node(store=store_path) as node:
        await node.start_workflow(console_app.listening, id="l-1")
        await until(lambda: node.workflow("l-1").status() == "waiting")
    tool = _store_tools.open_store(store_path)
    holder = sqlite3.connect(store_path, isolation_level=None)
    try:
        got: list[httpx.Response] = []
        async with client(make_app(StoreBackend(tool))) as c:
            await c.get("/")  # (the CSRF cookie)
            holder.execute("BEGIN EXCLUSIVE")  # (another process writing, stuck)
            try:
                async with trio.open_nursery() as nursery:
                    async def act() -> None:
                        got.append(await post(c, "/api/workflows/l-1/signal",
                                              {"topic": "hi", "payload": 1}))

                    nursery.start_soon(act)
                    await trio.sleep(0.3)
                    with trio.fail_after(1):  # the console answers meanwhile
                        assert (await c.get("/api/capabilities")).status_code == 200
                    assert got == []  # the signal waits for the write lock
                    holder.execute("ROLLBACK")
            finally:
                if holder.in_transaction:
                    holder.execute("ROLLBACK")
        assert got[0].status_code == 200, got[0].text
        assert [m.topic for m in tool.pending_messages("l-1")] == ["hi"]
    finally:
        holder.close()
        tool.close()


async def _idle_process() -> None:
    async for _ in garrison.process.inbox():
        pass


async def test_the_node_page_builds_only_the_processes_it_shows(
        autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``GET /api/node`` on a node of many processes snapshots only the ones it shows
    (the first ``PROCESSES_SHOWN``; the tree's from who started whom): it built a row
    for every process, then cut (1.3 s of the event loop for 100,000 idle ones)."""
    from garrison.console import _backend
    from garrison.hosts import _process_host

    monkeypatch.setattr(_backend, "PROCESSES_SHOWN", 50)
    async with garrison.open_node() as node:
        for _ in range(300):
            await node.spawn(_idle_process)
        total = node.stats()["processes"]
        snapshots = [0]
        real = _process_host._Process.info

        def counted(self: Any) -> Any:
            snapshots[0] += 1
            return real(self)

        monkeypatch.setattr(_process_host._Process, "info", counted)
        view = NodeBackend(node).node_view()
        assert snapshots[0] <= 50 + 5, snapshots  # (not one per process)
        assert view["processes_total"] == total >= 300
        assert len(view["processes"]) == 50
        assert [p["pid"] for p in view["processes"]] == [
            str(i.pid) for i in node.processes()[:50]]

        def count(rows: list[dict[str, Any]]) -> int:
            return sum(1 + count(r["children"]) for r in rows)

        assert count(view["tree"]) == 50


async def test_the_node_page_lists_and_counts_the_workflows_as_its_stats_do(
        store_path: str, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow running or parked on the node is a process of its host: the stats
    count it (its inbox may be the largest), and the Node page neither listed nor
    counted it ("Processes (3)" beside "processes 135", the largest inbox's pid nowhere
    in the table; helper-313). Listed after the processes, within the same limit, each
    naming its workflow (the page links it)."""
    from garrison.console import _backend

    async with garrison.open_node(store=store_path) as node:
        idle = await node.spawn(_idle_process)
        await node.start_workflow(console_app.gated, "alpha", None, id="g-1")
        await node.start_workflow(console_app.gated, "beta", None, id="g-2")
        await until(lambda: node.workflow("g-2").status() == "waiting")
        for n in range(3):
            await node.workflow("g-1").signal("note", n)
        await until(lambda: node.stats()["largest_inbox"] == 3)
        view = NodeBackend(node).node_view()
        stats = view["stats"]
        assert view["processes_total"] == stats["processes"] == 3
        rows = {p["pid"]: p for p in view["processes"]}
        assert list(rows) == [str(idle), "workflows/g-1", "workflows/g-2"]
        assert stats["largest_inbox_pid"] == "workflows/g-1"
        assert rows["workflows/g-1"]["label"] == "console_app:gated"
        assert rows["workflows/g-1"]["queued"] == 3
        # a workflow's row names its id and host (the page links it to the workflow's
        # page, as the list does: it was plain text); a process's names none
        assert [(r["workflow_id"], r["host"]) for r in rows.values()] == [
            (None, None), ("g-1", "workflows"), ("g-2", "workflows")]
        # the limit takes the processes first, then the workflows
        monkeypatch.setattr(_backend, "PROCESSES_SHOWN", 2)
        view = NodeBackend(node).node_view()
        assert [p["pid"] for p in view["processes"]] == [str(idle), "workflows/g-1"]
        assert view["processes_total"] == 3


def test_the_trial_binds_skip_an_address_family_the_kernel_lacks_and_blame_only_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-228: the trial bind of every --ui/--metrics address crashed on a host with
    IPv6 off in its kernel whose 'localhost' still resolves to ::1 (trio's listeners skip
    that family); and another program holding the port of one address was blamed on
    the command's other option when only the ports matched."""
    import errno
    import socket

    from garrison._bind import bind_problems

    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))])
    monkeypatch.setattr(socket, "socket", no_ipv6)
    assert bind_problems([("metrics on localhost:0", "localhost", 0, "trio")]) is None
    monkeypatch.undo()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said = bind_problems([("the console on 127.0.0.2:P", "127.0.0.2", port, "hypercorn"),
                              ("metrics on 127.0.0.1:P", "127.0.0.1", port, "trio")])
    assert said == "cannot serve metrics on 127.0.0.1:P: Address already in use", said


def test_garrison_run_refuses_a_taken_address_and_a_token_without_ui_before_starting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--ui`` or ``--metrics`` on an address another socket listens on: the node
    started its services and resumed its workflows, then exited 2; ``--token`` without
    ``--ui`` was dropped without a word. Each is refused before anything starts."""
    import socket

    from garrison._cli import build_parser

    ran = tmp_path / "ran"
    (tmp_path / "started_app.py").write_text(
        "import pathlib\n"
        f"async def main():\n    pathlib.Path({str(ran)!r}).write_text('ran')\n")
    # (a service runs as the node opens, before --ui and --metrics were bound)
    (tmp_path / "app.yaml").write_text(
        'version: "1.0"\nnamespace: t\nentries:\n'
        '  - {name: main, kind: process.py, source: "started_app:main"}\n'
        '  - {name: svc, kind: process.service, process: main, lifecycle: {auto_start: true}}\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        free = other.getsockname()[1]  # (free once closed)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for argv, said in (
                (["--ui", f"127.0.0.1:{port}"],
                 f"garrison run: cannot serve the console on 127.0.0.1:{port}: "),
                (["--metrics", f"127.0.0.1:{port}"],
                 f"garrison run: cannot serve metrics on 127.0.0.1:{port}: "),
                (["--token", TOKEN],
                 "garrison run: --token is an option of the console (--ui)"),
                # helper-223: these were tried only after the node had run its services
                # and resumed its workflows (exit 2, "the node did not start")
                (["--metrics", "nonexistent.invalid:9464"],  # (the resolver's reason)
                 "garrison run: cannot serve metrics on nonexistent.invalid:9464: "),
                (["--metrics", "192.0.2.1:9464"],  # (no interface of this machine's)
                 "garrison run: cannot serve metrics on 192.0.2.1:9464: Cannot assign "
                 "requested address"),
                (["--ui", f"127.0.0.1:{free}", "--metrics", f"127.0.0.1:{free}"],
                 f"garrison run: cannot serve metrics on 127.0.0.1:{free}: Address "
                 "already in use (given to another option of this command too)")):
            parsed = build_parser().parse_args(["run", "app.yaml", *argv])
            assert parsed.func(parsed) == 2, argv
            assert capsys.readouterr().err.startswith(said), argv
            assert not ran.exists(), argv


async def test_a_body_that_trickles_or_stops_halfway_ends_its_request_quietly(
        seeded: str, caplog: pytest.LogCaptureFixture, autojump_clock: Any) -> None:
    """helper-230: a body sent a byte every few seconds held its connection (and a file
    descriptor of the node's) for ever, 200 of them shutting the token holder out; a
    client that closed mid-body put a 46-line ERROR traceback in the node's log."""
    from garrison.console._app import BODY_TIMEOUT

    app = make_app(StoreBackend(SQLiteStore(seeded)))

    async def call(after_first: Any) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        parts = [{"type": "http.request", "body": b'{"topic":', "more_body": True}]

        async def receive() -> dict[str, Any]:
            if parts:
                return parts.pop()
            return await after_first()

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/api/workflows/l-1/signal",
                 "raw_path": b"/api/workflows/l-1/signal", "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 8233),
                 "headers": [(b"host", b"127.0.0.1:8233"),
                             (b"content-type", b"application/json"),
                             (b"content-length", b"100"),
                             (b"cookie", b"garrison_csrf_8233=x"), (b"x-garrison-csrf", b"x")]}
        with trio.fail_after(BODY_TIMEOUT + 5):
            await app(scope, receive, send)
        return sent

    async def trickle() -> dict[str, Any]:
        await trio.sleep(5)
        return {"type": "http.request", "body": b" ", "more_body": True}

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    started = trio.current_time()
    sent = await call(trickle)
    assert trio.current_time() - started <= BODY_TIMEOUT + 1
    assert sent[0]["status"] == 408, sent
    assert b"did not arrive within 10s" in sent[-1]["body"], sent
    caplog.clear()
    sent = await call(gone)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


# ------------------------------------------------------------------ children (helper-413)
def _family(spec: str, children: int) -> None:
    """Workflow ``p`` (host ``workflows``) with ``children`` children, ``c-0000``...,
    created in that order, and an unrelated workflow ``other``."""
    from garrison.persistence import open_store

    with open_store(spec) as owner:
        tx = Transaction().create_workflow("p", "console_app:listening", [], status="waiting",
                                           host="workflows", time=1.8e9)
        for i in range(children):
            tx.create_workflow(f"c-{i:04d}", "console_app:listening", [], status="waiting",
                               parent="workflows/p", host="workflows", time=1.8e9 + 1 + i)
        tx.create_workflow("other", "console_app:listening", [], status="waiting",
                           host="workflows", time=1.8e9 + 1)
        owner.write(tx)


async def test_a_workflow_page_counts_the_children_it_does_not_list(
        store_spec: str) -> None:
    """A workflow page lists its first CHILDREN_SHOWN children and counts them all
    (``children_total``: the store's count, no row read), and the list's ``parent=``
    pages through all of them (the page links there). It listed 500 of 1,204 children
    as if they were all."""
    from garrison.console import _backend

    _family(store_spec, _backend.CHILDREN_SHOWN + 7)
    store = _store_tools.open_store(store_spec)
    try:
        async with client(make_app(StoreBackend(store))) as c:
            d = (await c.get("/api/workflows/p")).json()
            assert len(d["children"]) == 500 and d["children_total"] == 507
            assert d["children"][0]["workflow_id"] == "c-0000"
            few = (await c.get("/api/workflows/other")).json()
            assert few["children"] == [] and few["children_total"] == 0
            # the rest, page by page, as the workflow list pages
            seen: list[str] = []
            after = None
            while True:
                params = {"parent": "workflows/p", "order": "oldest", "limit": 200}
                if after:
                    params["after"] = after
                page = (await c.get("/api/workflows", params=params)).json()
                seen += [w["workflow_id"] for w in page["workflows"]]
                after = page["next"]
                if after is None:
                    break
            assert seen == [f"c-{i:04d}" for i in range(507)]
        assert store.count_workflows(parent="workflows/p") == 507
        assert store.count_workflows(parent="workflows/p", status="running") == 0
        assert store.count_workflows(["waiting", "running"], host="workflows") == 509
        assert store.count_workflows(parent="workflows/nope") == 0
    finally:
        store.close()


# ------------------------------------------------------------------ why pending (helper-413)
async def test_a_pending_workflow_says_why_it_waits_and_where(
        store_spec: str, autojump_clock: Any) -> None:
    """A workflow waiting ``pending`` in its host's queue showed no place and no
    reason. Its page says it (``workflow.queue.reason``, and the numbers beside it):
    attached to the node, with the node's limits; on a store, with what the store can
    tell (PostgreSQL: the limits a live node of the cluster states in its row; SQLite
    keeps none, and says so)."""
    cluster = store_spec.startswith("postgresql://")
    async with garrison.open_node(store=store_spec, max_concurrent=1) as node:
        await node.start_workflow(console_app.listening, id="busy")
        await node.start_workflow(console_app.listening, id="next")
        await node.start_workflow(console_app.listening, id="last", priority=-1)
        await until(lambda: node.workflow("busy").status() == "waiting")
        q = "queue 'workflows'"
        async with client(make_app(NodeBackend(node))) as c:
            busy = (await c.get("/api/workflows/busy")).json()["workflow"]
            assert busy["queue"] is None
            nxt = (await c.get("/api/workflows/next")).json()["workflow"]
            last = (await c.get("/api/workflows/last")).json()["workflow"]
        assert nxt["status"] == last["status"] == "pending"
        if cluster:
            assert nxt["queue"]["reason"] == (f"waiting in {q} for a node with room: "
                                              "1 running, max 1 on each node")
            assert last["queue"]["reason"] == (f"waiting its turn in {q}: 1 running, "
                                               "1 ahead of it")
        else:
            assert nxt["queue"]["reason"] == f"waiting for a slot in {q}: 1 running of max 1"
            assert last["queue"]["reason"] == (f"waiting for a slot in {q}: 1 running of "
                                               "max 1, 1 ahead of it")
        assert {k: last["queue"][k] for k in ("host", "priority", "ahead", "running",
                                              "max_concurrent")} == {
            "host": "workflows", "priority": -1, "ahead": 1, "running": 1,
            "max_concurrent": 1}
        tool = _store_tools.open_store(store_spec)  # as garrison ui opens it
        try:
            async with client(make_app(StoreBackend(tool))) as c:
                nxt = (await c.get("/api/workflows/next")).json()["workflow"]
            if cluster:  # (the node's row states its limits)
                assert nxt["queue"]["reason"] == (f"waiting in {q} for a node with room: "
                                                  "1 running, max 1 on each node")
            else:
                assert nxt["queue"]["reason"] == (
                    f"waiting in {q} for a node to admit it: 1 running (its limits are the "
                    "config of the node that runs the host, which the store does not keep)")
            assert _store_tools.detail(tool, tool.get_workflow("next"))["queue"] == nxt["queue"]
        finally:
            tool.close()
        await node.send(garrison.Pid("workflows", "busy"), "go")
        await node.send(garrison.Pid("workflows", "next"), "go")
        await node.send(garrison.Pid("workflows", "last"), "go")
        assert (await node.workflow("last").result())["topic"] == "go"


def test_a_workflow_held_by_its_host_s_rate_says_so(store_spec: str) -> None:
    """The rate: how many of the host's workflows started in its last period (the
    store's admissions), against the rate the host's limits give."""
    import time as _time

    from garrison.persistence import open_store

    with open_store(store_spec) as owner:
        now = _time.time()
        tx = Transaction()
        for wid in ("a", "b"):
            tx.create_workflow(wid, "console_app:listening", [], status="pending",
                               host="workflows", run_id=f"r-{wid}", time=now)
            tx.enqueue(wid, f"r-{wid}", time=now)
        tx.admit("workflows", [("a", "r-a")], max_running=None, rate=(1, 3600.0), time=now)
        owner.write(tx)
        limits = {"max_concurrent": None, "cluster_max_concurrent": None, "rate": "1/1h",
                  "starts": [1, 3600.0]}
        said = _store_tools.queue_json(owner, owner.get_workflow("b"), limits)
        assert said is not None and said["reason"] == (
            "waiting for rate 1/1h in queue 'workflows': 1 started in its last period")
        assert said["started"] == 1 and said["rate"] == "1/1h"
        assert _store_tools.queue_json(owner, owner.get_workflow("a"), limits) is None


async def test_a_long_journal_is_read_by_its_end_not_whole(
        store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow page, ``garrison workflows show`` and a resolve's note read a long
    journal's newest JOURNAL_SHOWN records, its ``timer`` (or ``promise``) records and
    its size, not every record: each poll of the page read a journal of 100,000
    records, or of 200 MB of results, whole (0.85 s, and the megabytes, every poll).
    The page decodes none but its timers: it reads the outcomes in part
    (``journal_heads``, helper-447)."""
    from garrison.console import _backend

    monkeypatch.setattr(_backend, "JOURNAL_SHOWN", 50)
    deadline = 4.0e9  # (ahead: still pending)
    with SQLiteStore(store_path) as owner:
        tx = Transaction().create_workflow("long", "console_app:listening", [],
                                           status="waiting")
        tx.append_journal("long", 1, "timer", "", {"deadline": deadline})
        tx.append_journal("long", 2, "promise", "approval", None)
        for seq in range(3, 401):
            tx.append_journal("long", seq, "activity", "console_app:step", {"ok": seq})
        owner.write(tx)
    store = _store_tools.open_store(store_path)
    read: list[int] = []
    real = store.journal

    def counting(*args: Any, **kw: Any) -> Any:
        records = real(*args, **kw)
        read.extend(r.seq for r in records)
        return records

    monkeypatch.setattr(store, "journal", counting)
    heads: list[int] = []
    real_heads = store.journal_heads

    def counting_heads(*args: Any, **kw: Any) -> Any:
        records = real_heads(*args, **kw)
        heads.extend(r.seq for r in records)
        return records

    monkeypatch.setattr(store, "journal_heads", counting_heads)
    async with client(make_app(StoreBackend(store))) as c:
        d = (await c.get("/api/workflows/long")).json()
    assert [r["seq"] for r in d["journal"]] == list(range(351, 401))
    assert d["journal_records"] == 400 and d["journal_truncated"] is True
    assert [t["seq"] for t in d["timers"]] == [1]
    assert read == [1]
    assert heads == list(range(350, 401))  # (one more: is there more?)
    with SQLiteStore(store_path, lock=False) as tool:  # (a journal shorter than a page)
        tx = Transaction().create_workflow("short", "console_app:listening", [],
                                           status="waiting")
        tx.append_journal("short", 1, "timer", "", {"deadline": deadline})
        tx.append_journal("short", 2, "activity", "console_app:step", {"ok": 2})
        tool.write(tx)
    read.clear()
    heads.clear()
    async with client(make_app(StoreBackend(store))) as c:
        d = (await c.get("/api/workflows/short")).json()
    assert d["journal_records"] == 2 and [t["seq"] for t in d["timers"]] == [1]
    assert read == [] and heads == [1, 2]  # not again for its timers

    read.clear()
    shown = _store_tools.detail(store, store.get_workflow("long"))
    assert [t["seq"] for t in shown["timers"]] == [1] and shown["journal_records"] == 400
    assert read == [1]
    read.clear()
    note = _store_tools.undeclared_promise(store, "long", "aproval")
    assert note is not None and "'approval'" in note and read == [2]
    store.close()

