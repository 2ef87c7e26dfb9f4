"""The web console end to end in a real browser: Debian's chromium driven by Playwright.

The console's node runs examples/console/app.yaml in another process (``garrison run
... --ui 127.0.0.1:0``); Playwright's sync API runs its own event loop in this one.
The test opens the list, filters it, opens a waiting report, signals it (a payload of
markup that must stay text), resolves its promise through the page and sees it
complete, then looks at the node page. Screenshots of the list and of the workflow go
to pytest's tmp dir (and to ``$GARRISON_CONSOLE_SCREENSHOTS/`` when that is set: that
is how ``docs/console-*.png`` were made).

Chromium is required: the test fails when it is missing, unless
``GARRISON_TEST_BROWSER=0`` (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from _console_server import ROOT, console
from _console_server import chromium as _chromium

from garrison._store_tools import open_store, start
from garrison.persistence import SQLiteStore, Transaction

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
EVIL = '<img src=x onerror="alert(1)">'


def _shots(tmp_path: Path) -> list[Path]:
    out = [tmp_path]
    if os.environ.get("GARRISON_CONSOLE_SCREENSHOTS"):
        out.append(Path(os.environ["GARRISON_CONSOLE_SCREENSHOTS"]))
    return out


@pytest.fixture(scope="module")
def chromium_engine() -> Iterator[Any]:
    """One Chromium for the module's tests, each in a context of its own (see
    ``_browser``): starting Playwright and Chromium took seconds of each test."""
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def engine(chromium_engine: Any) -> Iterator[Any]:
    """The module's Chromium for one test: the contexts it leaves open (a test that
    failed before its ``browser.close()``) are closed after it, as its own Chromium
    was, so that no page of it polls on through the next tests."""
    yield chromium_engine
    for context in list(chromium_engine.contexts):
        context.close()


def _browser(engine: Any, width: int = 1280, height: int = 860
             ) -> tuple[Any, Any, list[str]]:
    """A browser context of its own (cookies, storage and cache none of another test's,
    as a fresh profile's), its first page, and the list of the page's uncaught script
    errors (a test ends asserting it empty)."""
    browser = engine.new_context(viewport={"width": width, "height": height})
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return browser, page, errors


def _poll_forward(page: Any, every: int, shown: Callable[[], object]) -> None:
    """Bring the page's next poll (every ``every`` ms) forward until ``shown`` (an
    ``expect`` with a short timeout, or a check that raises ``AssertionError``) holds. A
    jump while a poll is in flight is, to the page, the time that poll took (its clock
    is Playwright's), and it waits ten times that, 30 s at most, for the next: so the
    jumps go on, ``every`` ms at a time, through 30 s of its timers, and then ``shown``
    is asked once more (its error says what the page does not show)."""
    for _ in range(30_000 // every + 1):
        page.clock.fast_forward(every)
        try:
            shown()
            return
        except AssertionError:
            pass
    shown()


def test_follow_and_act_on_a_workflow_in_the_browser(
        tmp_path: Path, engine: Any) -> None:
    from playwright.sync_api import expect

    app = str(ROOT / "examples" / "console" / "app.yaml")
    with console("run", app, "--store", "expenses.db", "--ui", "127.0.0.1:0",
                 cwd=tmp_path) as ui:
        ui.until(lambda: len(ui.http.get("/api/workflows").json()["workflows"]) == 3,
                 "the three reports")
        browser, page, errors = _browser(engine)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        expect.set_options(timeout=15_000)

        # the list, then filtered to the waiting reports of team travel
        page.goto(ui.url)
        rows = page.locator("#rows tr")
        expect(rows).to_have_count(3)
        expect(page.locator("#rows tr[data-id=exp-1003] .status")).to_have_text("failed")
        for folder in _shots(tmp_path):
            page.screenshot(path=str(folder / "console-list.png"))
        page.check("input[name=status][value=waiting]")
        page.click("#apply")
        expect(rows).to_have_count(2)
        assert "status=waiting" in page.url
        # a quoted value may hold ", KEY=": one term (the box cut it there, helper-244)
        page.fill("#search", 'team=travel, note="a, b=c"')
        page.click("#apply")
        expect(rows).to_have_count(0)
        assert parse_qs(urlsplit(page.url).query)["search"] == ["team=travel",
                                                                'note="a, b=c"'], page.url
        page.fill("#search", "team=travel")
        page.click("#apply")
        expect(rows).to_have_count(1)
        page.click("#rows a:text('exp-1001')")

        # one workflow: send a signal whose payload is markup (shown as text)
        expect(page.locator("#wf-status")).to_have_text("waiting")
        # (its topic as typed: the API takes any text, and " a b " was sent as "a b")
        page.fill("#signal-topic", " a b ")
        page.fill("#signal-payload", json.dumps(EVIL))
        page.click("#signal-button")
        expect(page.locator("#confirm")).to_be_visible()
        page.click("#confirm-yes")
        expect(page.locator("#inbox td.mono").nth(1)).to_have_text(EVIL)
        assert ui.http.get("/api/workflows/exp-1001").json()["inbox"][0]["topic"] == " a b "
        # a payload with a right-to-left override: shown as its escape, not reordered
        page.fill("#signal-payload", json.dumps("invoice\u202egpj.exe"))
        page.click("#signal-button")
        page.click("#confirm-yes")
        expect(page.locator("#inbox td.mono", has_text="gpj.exe")).to_have_text(
            "invoice\\u202Egpj.exe")
        # characters that show nothing, too (a topic "appr\u200boval" read as "approval")
        page.fill("#signal-topic", "appr\u200boval")
        # (and every other default-ignorable one: a combining grapheme joiner, a
        # variation selector, a tag character, helper-244)
        page.fill("#signal-payload", json.dumps("a\u2060b\ufeffc\u034fd\ufe0fe\U000e0041"))
        page.click("#signal-button")
        expect(page.locator("#confirm-text")).to_contain_text("appr\\u200Boval")
        page.click("#confirm-yes")
        expect(page.locator("#inbox td.mono", has_text="\\u2060")).to_have_text(
            "a\\u2060b\\uFEFFc\\u034Fd\\uFE0Fe\\uDB40\\uDC41")
        # whole numbers sent as typed and shown as stored, to the digit (a double made
        # them 9007199254740992 and 1.2345678901234568e+29)
        page.fill("#signal-topic", "note")
        page.fill("#signal-payload", '{"order_id": 9007199254740993, '
                                     '"n": 123456789012345678901234567890}')
        page.click("#signal-button")
        expect(page.locator("#confirm-text")).to_contain_text("9007199254740993")
        page.click("#confirm-yes")
        expect(page.locator("#inbox td.mono", has_text="order_id")).to_have_text(
            '{"order_id":9007199254740993,"n":123456789012345678901234567890}')
        # what the API refuses reaches it, and its 400 is shown (1e400 was sent as
        # null, a key given twice once)
        for typed, refused in (('{"n": 1e400}', "1e400 is too large for a JSON number"),
                               ('{"a": 10, "a": 1000000}', "the key 'a' appears twice")):
            page.fill("#signal-payload", typed)
            page.click("#signal-button")
            page.click("#confirm-yes")
            expect(page.locator("#toast.error")).to_contain_text(refused)
        expect(page.locator("#inbox tr")).to_have_count(4)
        # a carriage return shows as its escape too: "approve\r" read as "approve", and
        # "approve\r\n\r\nTOTALLY DIFFERENT" as a line of its own (helper-313)
        r = ui.post("/api/workflows/exp-1001/signal",
                    {"topic": "approve\r\n\r\nTOTALLY DIFFERENT"})
        assert r.status_code == 200, r.text
        topic = page.locator("#inbox td.mono", has_text="TOTALLY")
        expect(topic).to_contain_text("approve\\u000D")
        assert topic.text_content() == "approve\\u000D\n\\u000D\nTOTALLY DIFFERENT"
        # the reading where a browser gives no number's text to JSON.parse's reviver
        # (and has no JSON.rawJSON) keeps the digits too, and each number as written
        assert page.evaluate("[WITH_SOURCE, RAW_JSON]") == [True, True]
        read = page.evaluate("""writeJson(parseTokens('{"a": [-12345678901234567890, 1.5e300,'
                                + ' 1.0, 2.5, "\\\\u00e9\\\\"", {}, []],'
                                + ' "__proto__": null}'), "", "")""")
        assert read == ('{"a":[-12345678901234567890,1.5e300,1.0,2.5,"\u00e9\\"",{},[]],'
                        '"__proto__":null}')

        # resolve its promise through the page; it pays out and completes
        value = page.locator("tr[data-promise=approval] input.promise-value")
        value.fill('{"by": "ann"}')
        page.click("tr[data-promise=approval] button.resolve")
        expect(page.locator("#confirm-text")).to_contain_text('Resolve promise "approval"')
        for folder in _shots(tmp_path):
            page.screenshot(path=str(folder / "console-workflow.png"), full_page=True)
        page.click("#confirm-yes")
        expect(page.locator("#toast")).to_contain_text("promise approval resolved")
        expect(page.locator("#wf-status")).to_have_text("completed")
        expect(page.locator("#wf-result")).to_contain_text("PAY-exp-1001-ann")
        expect(page.locator("#journal li[data-seq] .kind").filter(has_text="await_promise")
               ).to_have_count(1)
        expect(page.locator("#children a")).to_have_count(1)
        expect(page.locator("#signal-form")).to_be_hidden()
        expect(page.locator("#retry-button")).to_be_hidden()  # completed: nothing to retry

        # the node: services with restart counts, the supervision tree
        page.click("header nav a:text('Node')")
        expect(page.locator("tr[data-service='app:pulse'] .restarts")).to_have_text("1")
        expect(page.locator("#tree")).to_contain_text("ledger")

        # the failed report: retried by replay (its receipts are still missing, so the
        # check runs again and fails again, now in attempt 2)
        page.goto(ui.url.rstrip("/") + "/workflows/exp-1003")
        expect(page.locator("#wf-status")).to_have_text("failed")
        page.click("#retry-button")
        expect(page.locator("#confirm-text")).to_contain_text("Retry workflow exp-1003")
        page.click("#confirm-yes")
        expect(page.locator("#toast")).to_contain_text(
            "retry started: 0 journal record(s) replay; the workflow runs again from "
            "seq 1, where activity 'expenses:check_receipts' failed")
        expect(page.locator("#wf-facts dt:text-is('attempt') + dd")).to_have_text("2")
        expect(page.locator("#wf-status")).to_have_text("failed")

        # reject the other report's promise: the message goes as typed (it was trimmed)
        page.goto(ui.url.rstrip("/") + "/workflows/exp-1002")
        page.locator("tr[data-promise=approval] input.promise-value").fill("  over budget ")
        page.click("tr[data-promise=approval] button.reject")
        expect(page.locator("#confirm-text")).to_contain_text('"  over budget "')
        page.click("#confirm-yes")
        expect(page.locator("#wf-status")).to_have_text("completed")
        promises = ui.http.get("/api/workflows/exp-1002").json()["promises"]
        assert [(p["name"], p["error"]) for p in promises] == [("approval", "  over budget ")]
        browser.close()
        assert errors == [] and dialogs == []
    assert ui.proc.returncode == 0, "".join(ui.stdout)


TOKEN = "a-token-for-the-browser-test"
HANDS_OFF = """\
version: "1.0"
namespace: t
entries:
  - {name: orders, kind: workflow.host, store: orders.db}   # the only one: "workflows"
  - {name: seed_fn, kind: process.py, source: "console_app:seed"}
  - name: seeder
    kind: process.service
    process: t:seed_fn
    lifecycle: {auto_start: true}
"""


def test_login_form_node_figures_children_and_paging_in_the_browser(
        tmp_path: Path, engine: Any) -> None:
    """What only a browser shows: the /login form logs in (Chromium posted it with
    ``Origin: null`` under ``Referrer-Policy: no-referrer``) and goes back to the page
    asked for; a finished workflow keeps polling its running child, and calls the EXIT
    that came after its end never received; the node's queue and schedule figures are
    text (they were ``[object Object]``); a reload keeps the list's page, and Back and
    Forward go through its pages and filters. The only
    workflow host of the config is named ``orders`` (the console crashed on it)."""
    from playwright.sync_api import expect

    (tmp_path / "app.yaml").write_text(HANDS_OFF)
    with console("run", "app.yaml", "--ui", "127.0.0.1:0", "--token", TOKEN, cwd=tmp_path,
                 # (this checkout's garrison, as the test's, and its test apps)
                 env={"PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests")))}
                 ) as ui:
        ui.http.headers["Authorization"] = f"Bearer {TOKEN}"
        ui.until(lambda: len(ui.http.get("/api/workflows?limit=100").json()["workflows"])
                 == 57, "55 gated workflows, the parent and its child")
        assert sum("web console at" in line for line in ui.stdout) == 1, ui.stdout
        browser, page, errors = _browser(engine)
        expect.set_options(timeout=15_000)
        # (the page's timers run in real time, and a poll the test waits for is brought
        # forward: what it shows is the same, without waiting out its interval)
        page.clock.install()

        # the login form, then back to the workflow asked for
        page.goto(ui.url + "workflows/parent")
        assert "/login?next=" in page.url
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        expect(page.locator("#wf-status")).to_have_text("completed")
        assert page.url == ui.url + "workflows/parent"

        # finished, with a child still waiting: the page still polls (slowly), so an
        # event that arrives after the end shows, and so does the child's new status
        child = page.locator("#children li .status")
        expect(child).to_have_text("waiting")
        expect(page.locator("#inbox-title")).to_have_text(
            "Inbox (never received: the workflow had finished)")
        late = open_store(str(tmp_path / "orders.db"))  # a tool, as garrison workflows is
        try:
            late.write(Transaction().deliver("parent", "EXIT", {"late": True}, kind="event"))
        finally:
            late.close()
        _poll_forward(page, 5000, lambda: expect(page.locator("#inbox tr td").nth(1))
                      .to_have_text("event", timeout=1000))  # (the finished one's poll)
        child_id = page.locator("#children a").inner_text()
        r = ui.http.post(f"/api/workflows/{child_id}/promises/go/resolve", json={"value": 1})
        assert r.status_code == 200, r.text
        _poll_forward(page, 5000, lambda: expect(child).to_have_text("completed",
                                                                     timeout=1000))

        # the node's figures per workflow host
        page.click("header nav a:text('Node')")
        expect(page.locator("dd[data-stat=workflow_queues]")).to_contain_text("t:orders")
        expect(page.locator("dd[data-stat=schedules]")).to_contain_text("schedules 0")
        expect(page.locator("#stats")).not_to_contain_text("[object")
        # a workflow parked here links to its page, as in the list (it was plain text)
        expect(page.locator("#processes a.wf-link", has_text="g-000")).to_have_attribute(
            "href", "/workflows/g-000")

        # the list: page 2 survives a reload
        page.click("header nav a:text('Workflows')")
        rows = page.locator("#rows tr")
        expect(rows).to_have_count(50)
        page.click("#next-page")
        expect(page.locator("#page-label")).to_have_text("page 2")
        expect(rows).to_have_count(7)
        page.reload()
        expect(page.locator("#page-label")).to_have_text("page 2")
        expect(rows).to_have_count(7)
        page.click("#prev-page")
        expect(page.locator("#page-label")).to_have_text("page 1")
        expect(rows).to_have_count(50)
        # each page move is an entry of the browser's history: Back shows the page
        # before again, Forward the next (Back left the console)
        page.go_back()
        expect(page.locator("#page-label")).to_have_text("page 2")
        expect(rows).to_have_count(7)
        page.go_forward()
        expect(page.locator("#page-label")).to_have_text("page 1")
        expect(rows).to_have_count(50)
        # back to a page (or filter) seen before: its rows, not the last ones shown
        # (helper-215: an unchanged page's answer is a 304, and the rows were not drawn)
        page.click("#next-page")
        expect(page.locator("#page-label")).to_have_text("page 2")
        expect(rows).to_have_count(7)
        page.click("#first-page")
        expect(page.locator("#page-label")).to_have_text("page 1")
        expect(rows).to_have_count(50)
        # the address of page 2 opened afresh (a bookmark, another tab: no history
        # state) knows no pages before it: not "page 2" with a Previous that skipped
        # pages to the first (a bookmark of page 3 said "page 2"; helper-313)
        page.click("#next-page")
        expect(page.locator("#page-label")).to_have_text("page 2")
        page.evaluate("history.replaceState(null, '', location.href)")
        page.reload()
        expect(page.locator("#page-label")).to_have_text(
            "a later page (opened by its address: First page goes back)")
        expect(rows).to_have_count(7)
        expect(page.locator("#prev-page")).to_be_disabled()
        page.click("#first-page")
        expect(page.locator("#page-label")).to_have_text("page 1")
        expect(rows).to_have_count(50)
        expect(page.locator("#first-page")).to_be_disabled()
        page.check("#status-filter input[value=completed]")
        page.click("#apply")
        expect(rows).to_have_count(2)
        page.go_back()  # (so are new filters)
        expect(rows).to_have_count(50)
        expect(page.locator("#status-filter input[value=completed]")).not_to_be_checked()
        page.go_forward()
        expect(rows).to_have_count(2)
        expect(page.locator("#status-filter input[value=completed]")).to_be_checked()
        # a query refused (or a node that no longer answers): its error, and none of
        # the rows of the query before under it (they stayed, helper-313)
        page.fill("#search", "garbage")
        page.click("#apply")
        expect(page.locator("#list-error")).to_contain_text(
            "search takes KEY=VALUE, got 'garbage'")
        expect(rows).to_have_count(0)
        page.click("#clear")
        expect(rows).to_have_count(50)
        expect(page.locator("#list-error")).to_be_hidden()
        # the answer to an earlier request that comes after a later one's is not drawn
        # over it (page 1's rows under "page 2", helper-313): a poll's answer of page 1
        # is held until page 2's is shown
        page.evaluate("""() => {
            window.realFetch = window.fetch;
            window.held = [];
            window.fetch = (url, init) => String(url).includes("after=") ?
                window.realFetch(url, init) :
                new Promise((done) => window.held.push(() => done(window.realFetch(url, init))));
        }""")
        # (the list's next poll, brought forward; wait_for_function's polling evaluates a
        # string, which the console's CSP refuses)
        def held() -> None:
            page.wait_for_timeout(200)
            assert page.evaluate("window.held.length"), "no poll of the list held"

        _poll_forward(page, 2000, held)
        page.click("#next-page")
        expect(page.locator("#page-label")).to_have_text("page 2")
        expect(rows).to_have_count(7)
        page.evaluate("""async () => {
            window.fetch = window.realFetch;
            await Promise.all(window.held.map((release) => release()));
            await new Promise((done) => setTimeout(done, 300));
        }""")
        assert rows.count() == 7
        expect(page.locator("#page-label")).to_have_text("page 2")
        page.click("#first-page")
        expect(rows).to_have_count(50)
        # a poll that gets no answer (a network blip): the rows stay, marked, until the
        # next answer (they were wiped until then)
        page.evaluate("() => { window.fetch = async () => { throw new TypeError('no answer'); }; }")
        page.click("#apply")
        expect(page.locator("#list-offline")).to_be_visible()
        assert rows.count() == 50 and page.locator("#list-error").is_hidden()
        page.evaluate("window.fetch = window.realFetch")
        page.click("#apply")
        expect(page.locator("#list-offline")).to_be_hidden()
        expect(rows).to_have_count(50)

        # a long id with no place to break wraps in its cell: the page is no wider than
        # the window (it was twice as wide, every other column squeezed)
        tool = open_store(str(tmp_path / "orders.db"))
        try:
            tool.write(Transaction().create_workflow("L" * 255, "t:nothing_here", []))
        finally:
            tool.close()
        _poll_forward(page, 2000, lambda: expect(page.locator("#rows tr").first)
                      .to_have_attribute("data-id", "L" * 255, timeout=1000))  # (its poll)
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.goto(ui.url + "workflows/" + "L" * 255)
        expect(page.locator("h1")).to_contain_text("LLLL")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280

        # long text with no place to break (a promise's name, a rejection's message, a
        # topic) wraps in its cell: the Resolve button stays in view (the promises were
        # 495,000 px wide, the inbox 38,000)
        tool = open_store(str(tmp_path / "orders.db"))
        try:
            start(tool, "console_app:one_promise", ["P" * 300], "long")
            tool.write(Transaction().reject_promise("long", "R" * 300, "x" * 200_000)
                       .deliver("long", "T" * 5000, "y" * 500))
        finally:
            tool.close()
        page.goto(ui.url + "workflows/long")
        resolve = page.locator("#promises button.resolve")
        expect(resolve).to_be_visible()
        expect(page.locator("#inbox td.mono").first).to_contain_text("TTTT")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        assert page.evaluate("[...document.querySelectorAll('.card')].every("
                             "(c) => c.scrollWidth <= c.clientWidth)")
        box = resolve.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1280, box

        # a failed workflow whose retry would replay to the same failure: the note is
        # beside its Retry button before it is asked (it was said only after)
        tool = open_store(str(tmp_path / "orders.db"))
        try:
            start(tool, "console_app:charges_or_refunds", [], "same")
        finally:
            tool.close()
        ui.until(lambda: ui.http.get("/api/workflows/same").json()["workflow"]["status"]
                 == "failed", "the charge to fail")
        page.goto(ui.url + "workflows/same")
        expect(page.locator("#retry-button")).to_be_visible()
        expect(page.locator("#retry-note")).to_contain_text(
            "nothing is taken back, and the same code replays to the same failure")

        # a workflow that is not there: said once, not asked for every second for
        # ever (six 404s in six seconds, helper-313)
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/api/workflows/nope" in r.url
                else None)
        with page.expect_response(lambda r: "/api/workflows/nope" in r.url):
            page.goto(ui.url + "workflows/nope")
        for _ in range(3):
            page.clock.run_for(5000)
            page.wait_for_timeout(100)
        assert len(asked) == 1, asked
        expect(page.locator("#wf-error-load")).to_contain_text("no workflow 'nope'")

        # log out: back at the login form, and the session is gone
        page.click("#logout")
        page.wait_for_url(ui.url + "login")
        page.goto(ui.url)
        assert "/login" in page.url
        browser.close()
        assert errors == []
    assert ui.proc.returncode == 0, "".join(ui.stdout)


def test_an_ended_session_keeps_the_page_and_says_what_was_not_done(
        tmp_path: Path, engine: Any) -> None:
    """helper-389: when the session ended (its idle time, its maximum age, a log-out
    elsewhere) the page's next poll went to /login at once, and what the operator was
    typing was lost; an action confirmed then was not done, and after the login nothing
    said so. Now a poll's 401 leaves the page as it is, under a banner that links to
    the login, and stops polling; a confirmed action refused so goes to the login, which
    says what was not done, and so does the page it comes back to, once, with what was
    typed. The cookies are named for the console's port, and the page echoes its own."""
    from playwright.sync_api import expect

    SQLiteStore(str(tmp_path / "app.db")).close()  # (as a node creates it)
    store = open_store(str(tmp_path / "app.db"))
    try:
        for i in range(1, 62):  # (two pages of the list)
            start(store, "console_app:gated", ["x"], f"g-{i}")
    finally:
        store.close()
    with console("ui", "--store", "app.db", "--bind", "127.0.0.1:0", "--token", TOKEN,
                 cwd=tmp_path) as ui:
        ui.http.headers["Authorization"] = f"Bearer {TOKEN}"
        port = urlsplit(ui.url).port
        browser, page, errors = _browser(engine)
        expect.set_options(timeout=15_000)
        page.clock.install()  # (in real time; the wait for polls that must not come is run)
        here = ui.url + "workflows/g-1"

        page.goto(here)
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        expect(page.locator("#wf-status")).to_have_text("pending")
        names = {c["name"]: c for c in browser.cookies()}
        assert set(names) == {f"garrison_session_{port}", f"garrison_csrf_{port}"}, names
        assert names[f"garrison_session_{port}"]["httpOnly"] and \
            names[f"garrison_session_{port}"]["sameSite"] == "Strict"

        # the session ends (here: a log-out from another tab) while the operator types
        page.fill("#signal-topic", "approve")
        page.fill("#signal-payload", '{"by": "ann"}')
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/api/" in r.url else None)
        r = browser.request.post(ui.url + "api/logout", headers={
            "X-Garrison-CSRF": names[f"garrison_csrf_{port}"]["value"]})
        assert r.json() == {"logged_out": True}
        banner = page.locator("#session-ended")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("session has ended")
        expect(banner.locator("a")).to_have_attribute("href", "/login?next=%2Fworkflows%2Fg-1")
        # the page stays, with what was typed, and asks no more (in 3 s of its timers;
        # each second's is run, and its request given time to be seen)
        for _ in range(3):
            page.clock.run_for(1000)
            page.wait_for_timeout(100)
        assert page.url == here
        assert page.input_value("#signal-topic") == "approve"
        assert page.input_value("#signal-payload") == '{"by": "ann"}'
        assert len(asked) == 1, asked

        # a confirmed action refused: nothing sent, and the login page says so
        page.click("#signal-button")
        page.click("#confirm-yes")
        page.wait_for_url("**/login?next=%2Fworkflows%2Fg-1")
        note = page.locator("#session-note")
        said = 'the signal "approve" to workflow g-1 was not sent'
        expect(note).to_contain_text(said)
        assert ui.http.get("/api/workflows/g-1").json()["inbox"] == []
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(here)
        # back on the page: said once more, with what was typed back in its fields
        expect(note).to_contain_text(said)
        expect(page.locator("#wf-status")).to_have_text("pending")
        assert page.input_value("#signal-topic") == "approve"
        assert page.input_value("#signal-payload") == '{"by": "ann"}'
        page.reload()
        expect(page.locator("#wf-status")).to_have_text("pending")
        expect(note).to_be_hidden()
        # and sent again, it is sent (the page echoes the CSRF cookie of its port)
        page.fill("#signal-topic", "approve")
        page.click("#signal-button")
        page.click("#confirm-yes")
        expect(page.locator("#toast")).to_contain_text("signal approve sent")
        assert [m["topic"] for m in ui.http.get("/api/workflows/g-1").json()["inbox"]] \
            == ["approve"]

        # on the list: a page move once the session ended asks nothing (each poll it
        # restarted got 401 again, and the pager stayed held): it is the operator's own
        # action, so it goes to the login, which comes back to the page moved to
        # (Next waits for the first page's answer: enabled before it, a click did
        # nothing, and a session ended before it left the button dead for good)
        held: list = []
        page.route("**/api/workflows?*", lambda route: held.append(route))
        page.goto(ui.url)
        while not held:  # (the first page asked for, not answered)
            page.wait_for_timeout(50)
        expect(page.locator("#next-page")).to_be_disabled()
        for route in held:
            route.continue_()
        page.unroute("**/api/workflows?*")
        expect(page.locator("#next-page")).to_be_enabled()
        r = browser.request.post(ui.url + "api/logout", headers={
            "X-Garrison-CSRF": {c["name"]: c for c in browser.cookies()}[
                f"garrison_csrf_{port}"]["value"]})
        assert r.json() == {"logged_out": True}
        expect(banner).to_be_visible()
        asked.clear()
        page.click("#next-page")
        page.wait_for_url("**/login?next=*")
        assert "after%3D" in page.url
        assert not [url for url in asked if "/api/workflows" in url], asked
        browser.close()
        assert errors == []
    assert ui.proc.returncode == 0, "".join(ui.stdout)


ORDERS = """\
version: "1.0"
namespace: t
entries:
  - {name: orders, kind: workflow.host, store: orders.db}
"""


def test_typing_paging_keys_retries_and_narrow_windows_in_the_browser(
        tmp_path: Path, engine: Any) -> None:
    """The pages under a narrow window, a quick hand and a poll (helper-389's probe):
    - at 400 px no page scrolls sideways and Resolve… is in view (it was off to the
      right, in a card that scrolled sideways); at 1280 px a status badge keeps its
      word (it broke, "complete|d"), a 500-character id wraps in a column of bounded
      width (it took 800 px), the node's statistics wrap in their card (they hid
      behind a sideways scroll);
    - two clicks on Next while the next page is on its way move one page (the label
      said "page 3" over page 2's rows);
    - a stored 1.0 shows as 1.0, as `garrison workflows show` prints it (it showed 1);
    - what is typed into a promise's box stays, and the focus, when the table is drawn
      again for another promise (both were lost); Enter in the box asks as Resolve…
      does, Escape takes the question back, and after an action the focus is on the
      page's heading (it was on nothing);
    - a failed workflow's page keeps asking: a retry from elsewhere shows (it stopped,
      and said failed for ever)."""
    from playwright.sync_api import expect

    (tmp_path / "app.yaml").write_text(ORDERS)
    with console("run", "app.yaml", "--ui", "127.0.0.1:0", cwd=tmp_path,
                 env={"PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests")))}
                 ) as ui:
        tool = open_store(str(tmp_path / "orders.db"))
        try:
            tx = Transaction()
            for i in range(55):  # (a page and a bit, after the long id: newer than the rest)
                tx.create_workflow(f"w-{i:03d}", "console_app:gated", [], status="completed",
                                   time=1.8e9 + i)
            tx.create_workflow("L" * 500, "console_app:gated", [], status="completed",
                               time=1.9e9)
            tx.create_workflow("floats", "console_app:gated", [], status="completed",
                               time=1.7e9)
            tx.update_workflow("floats", result={"f": 1.0, "e": 1e2, "n": 9007199254740993})
            tool.write(tx)
            start(tool, "console_app:two_promises", [], "two")
            start(tool, "console_app:boom", ["no receipts"], "failed")
        finally:
            tool.close()
        ui.until(lambda: {w["workflow_id"]: w["status"] for w in ui.http.get(
            "/api/workflows?id=failed").json()["workflows"]}.get("failed") == "failed",
            "the failed workflow")
        ui.until(lambda: ui.http.get("/api/workflows/two").json()["actions"]["resolve"],
                 "the promises of 'two'")
        browser, page, errors = _browser(engine, width=400, height=800)
        expect.set_options(timeout=15_000)
        fits = """() => document.documentElement.scrollWidth <= innerWidth &&
            [...document.querySelectorAll('.card')].every((c) => c.scrollWidth <= c.clientWidth)"""

        # 400 px: no page scrolls sideways, the promise's buttons are in view
        page.goto(ui.url + "workflows/two")
        expect(page.locator("#promises button.reject")).to_have_count(2)
        assert page.evaluate(fits)
        for button in page.locator("#promises button").all():
            box = button.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 400, box
        page.goto(ui.url)
        expect(page.locator("#rows tr")).to_have_count(50)
        assert page.evaluate(fits)
        page.goto(ui.url + "node")
        expect(page.locator("#stats dd").first).to_be_visible()
        assert page.evaluate(fits)

        # 1280 px: the node's statistics wrap in their card; a badge keeps its word, and
        # a 500-character id wraps in a column of bounded width
        page.set_viewport_size({"width": 1280, "height": 860})
        page.reload()
        expect(page.locator("#stats dd").first).to_be_visible()
        assert page.evaluate(fits)
        page.goto(ui.url)
        expect(page.locator("#rows tr").first).to_have_attribute("data-id", "L" * 500)
        assert page.evaluate(fits)
        assert page.evaluate("[...document.querySelectorAll('#rows .status')].every("
                             "(b) => b.getClientRects().length === 1 && "
                             "b.getBoundingClientRect().height < 24)")
        id_width = page.evaluate("document.querySelector('thead th').getBoundingClientRect().width")
        assert id_width < 500, id_width

        # two clicks on Next while the next page is on its way (a slow server): the
        # second is not a move from the page not yet shown (it showed "page 3" over
        # page 2's rows, and Previous then page 2)
        page.evaluate("""() => {
            const realFetch = window.fetch;
            window.fetch = (url, init) => new Promise((done) => setTimeout(
                () => done(realFetch(url, init)), String(url).includes("after=") ? 400 : 0));
        }""")
        page.click("#next-page")
        page.click("#next-page", force=True)
        expect(page.locator("#rows tr").first).to_have_attribute("data-id", "w-005")
        expect(page.locator("#page-label")).to_have_text("page 2")
        page.click("#prev-page")
        expect(page.locator("#page-label")).to_have_text("page 1")
        expect(page.locator("#rows tr").first).to_have_attribute("data-id", "L" * 500)

        # values as stored, as `garrison workflows show` prints them (1.0 showed as 1)
        page.goto(ui.url + "workflows/floats")
        expect(page.locator("#wf-result")).to_have_text(
            '{\n  "f": 1.0,\n  "e": 100.0,\n  "n": 9007199254740993\n}')

        # a value typed into one promise's box, and the focus, stay while the other
        # promise is resolved elsewhere (the table is drawn again)
        page.goto(ui.url + "workflows/two")
        second = page.locator("tr[data-promise='approval/promises/x'] input.promise-value")
        second.fill('"typed here"')
        second.focus()
        r = ui.post("/api/workflows/two/promises/approval%2Fmanager/resolve", {"value": 1})
        assert r.status_code == 200, r.text
        expect(page.locator("tr[data-promise='approval/manager'] .status")).to_have_text(
            "resolved")
        expect(second).to_have_value('"typed here"')
        expect(second).to_be_focused()
        # Enter asks as Resolve… does; Escape takes it back, to the box
        page.keyboard.press("Enter")
        expect(page.locator("#confirm-text")).to_contain_text(
            'Resolve promise "approval/promises/x" of two with "typed here"?')
        expect(page.locator("#confirm-yes")).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.locator("#confirm")).to_be_hidden()
        expect(second).to_be_focused()
        page.keyboard.press("Enter")
        page.keyboard.press("Enter")  # (Confirm)
        expect(page.locator("#toast")).to_contain_text("promise approval/promises/x resolved")
        expect(page.locator("#wf-status")).to_have_text("completed")
        # the focus is on the page's heading (the button it came from is gone), not lost
        assert page.evaluate("document.activeElement.id") == "wf-title"

        # a failed workflow's page keeps asking (slowly): retried elsewhere, it shows
        page.clock.install()
        page.goto(ui.url + "workflows/failed")
        attempt = page.locator("#wf-facts dt:text-is('attempt') + dd")
        expect(attempt).to_have_text("1")
        r = ui.post("/api/workflows/failed/retry")
        assert r.status_code == 200, r.text
        ui.until(lambda: ui.http.get("/api/workflows/failed").json()["workflow"]["attempt"]
                 == 2, "the retry")
        page.clock.run_for(6000)
        expect(attempt).to_have_text("2")
        browser.close()
        assert errors == []
    assert ui.proc.returncode == 0, "".join(ui.stdout)


def test_a_workflow_with_more_children_than_listed_says_so_and_links_to_all(
        tmp_path: Path, engine: Any) -> None:
    """(helper-413) A workflow page lists its first 500 children: it says how many there
    are (``500 of 507 children shown``; it listed 500 as if they were all) and links to
    the workflow list filtered on them, which pages through all of them and which
    Clear turns back into the whole list."""
    from playwright.sync_api import expect

    with SQLiteStore(str(tmp_path / "app.db")) as owner:
        tx = Transaction().create_workflow("p", "app:flow", [], status="waiting",
                                           host="workflows", time=1.8e9)
        for i in range(507):
            tx.create_workflow(f"c-{i:04d}", "app:flow", [], status="waiting",
                               parent="workflows/p", host="workflows", time=1.8e9 + 1 + i)
        owner.write(tx)
    with console("ui", "--store", "app.db", "--bind", "127.0.0.1:0", cwd=tmp_path
                 ) as ui:
        browser, page, errors = _browser(engine)
        expect.set_options(timeout=15_000)
        page.goto(ui.url + "workflows/p")
        expect(page.locator("#children li")).to_have_count(500)
        expect(page.locator("#children-count")).to_have_text("(500 of 507 children shown)")
        page.click("#children-all")
        rows = page.locator("#rows tr")
        expect(rows).to_have_count(50)
        expect(page.locator("#parent-filter")).to_contain_text("workflows/p")
        expect(rows.first).to_have_attribute("data-id", "c-0000")  # oldest first
        for _ in range(10):
            page.click("#next-page")
        expect(page.locator("#page-label")).to_have_text("page 11")
        expect(rows).to_have_count(7)
        expect(rows.last).to_have_attribute("data-id", "c-0506")
        page.click("#clear")
        expect(page.locator("#parent-filter")).to_be_hidden()
        expect(page.locator("#page-label")).to_have_text("page 1")
        assert "parent=" not in page.url
        expect(rows.first).to_have_attribute("data-id", "c-0506")  # every workflow again
        browser.close()
        assert errors == []


def test_a_pending_workflow_s_page_says_why_it_waits(
        tmp_path: Path, engine: Any) -> None:
    """(helper-413) The page of a workflow waiting ``pending`` in its host's queue says
    where and why it waits (it showed nothing of it): here, on a store no node holds."""
    from playwright.sync_api import expect

    with SQLiteStore(str(tmp_path / "app.db")) as owner:
        tx = Transaction().create_workflow("busy", "app:flow", [], status="waiting",
                                           host="workflows", time=1.8e9)
        for wid in ("next", "last"):
            tx.create_workflow(wid, "app:flow", [], status="pending", host="workflows",
                               run_id=f"r-{wid}", time=1.8e9)
            tx.enqueue(wid, f"r-{wid}", time=1.8e9)
        owner.write(tx)
    with console("ui", "--store", "app.db", "--bind", "127.0.0.1:0", cwd=tmp_path
                 ) as ui:
        browser, page, errors = _browser(engine)
        expect.set_options(timeout=15_000)
        page.goto(ui.url + "workflows/last")
        expect(page.locator("#wf-status")).to_have_text("pending")
        expect(page.locator("#wf-queue")).to_have_text(
            "waiting in queue 'workflows': no node holds the store now (1 running, 1 ahead "
            "of it) (its limits are the config of the node that runs the host, which the "
            "store does not keep)")
        page.goto(ui.url + "workflows/busy")
        expect(page.locator("#wf-status")).to_have_text("waiting")
        expect(page.locator("#wf-queue")).to_have_count(0)
        browser.close()
        assert errors == []
