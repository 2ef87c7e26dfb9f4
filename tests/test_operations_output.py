"""What operators read (found by an adversarial review of metrics, logs and the
console): the console's list by an id prefix ending just below the surrogates, JSON
log lines whose extra fields are named like their own, a store failure's log line,
``garrison run``'s failure line in JSON mode, and bind addresses with digits that are
not ASCII."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import console_app
import httpx
import pytest
import trio

import garrison
from garrison import _store_tools
from garrison._cli import _JsonFormatter
from garrison.console._app import make_app
from garrison.console._backend import NodeBackend, StoreBackend

BASE = "http://127.0.0.1:8233"


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url=BASE)


async def _waiting_node_store(path: str) -> None:
    async with garrison.open_node(store=path) as node:
        await node.start_workflow(console_app.gated, "alpha", id="g-1")
        while node.workflow("g-1").status() != "waiting":
            await trio.sleep(0.01)


# ------------------------------------------------------------------ console
async def test_console_id_prefix_ending_in_u_d7ff_is_not_a_500_live(
        tmp_path: Path, autojump_clock: Any) -> None:
    # ?id= is "the start of the id": any text. One ending in U+D7FF (a valid,
    # printable CJK-area code point) makes the SQLite store bind the lone surrogate
    # U+D800 as the range's upper bound: an unhandled 500, not JSON at all
    async with garrison.open_node(store=str(tmp_path / "a.db")) as node:
        await node.start_workflow(console_app.gated, "alpha", id="g-1")
        async with client(make_app(NodeBackend(node))) as c:
            r = await c.get("/api/workflows", params={"id": "g\ud7ff"})
            assert r.status_code == 200, (r.status_code, r.text)
            assert r.json() == {"workflows": [], "next": None}


async def test_console_id_prefix_ending_in_u_d7ff_is_not_a_500_on_a_store(
        tmp_path: Path, autojump_clock: Any) -> None:
    path = str(tmp_path / "a.db")
    await _waiting_node_store(path)
    store = _store_tools.open_store(path)
    try:
        async with client(make_app(StoreBackend(store))) as c:
            r = await c.get("/api/workflows?id=%ED%9F%BF")  # U+D7FF, UTF-8 encoded
            assert r.status_code == 200, (r.status_code, r.text)
            assert r.json()["workflows"] == []
    finally:
        store.close()


# ------------------------------------------------------------------ JSON logs
def _line(record: logging.LogRecord) -> dict[str, Any]:
    text = _JsonFormatter().format(record)
    assert "\n" not in text
    return json.loads(text)


def test_json_log_extra_fields_do_not_overwrite_time_level_and_logger() -> None:
    # README: a JSON line has time, level, logger and message, *then* every field the
    # record carries; an application's extra={"level": ...} (a common name: a tier, a
    # log level of its own) replaced the record's level, so a filter on level=error
    # misses the line and the line claims a level that is no level
    logger = logging.getLogger("garrison.adv_h8")
    record = logger.makeRecord("garrison.adv_h8", logging.ERROR, __file__, 1,
                               "disk %s full", ("/var",), None,
                               extra={"level": "gold", "logger": "mine",
                                      "time": 12})
    out = _line(record)
    assert out["level"] == "error", out
    assert out["logger"] == "garrison.adv_h8", out
    assert isinstance(out["time"], str) and out["time"].endswith("Z"), out


# ------------------------------------------------------------------ metrics bind
@pytest.mark.parametrize("bind", ["127.0.0.1:\u00b9", "127.0.0.1:9\u00b2"])
def test_metrics_bind_with_a_digit_python_cannot_read_names_the_input(bind: str) -> None:
    # str.isdigit() accepts superscript digits, int() does not: the check lets the
    # address through and int() raises its own message, without --metrics or the
    # expected form (README: a malformed address is exit 2, named)
    with pytest.raises(ValueError, match=r"expected HOST:PORT"):
        garrison.metrics.parse_bind(bind)


@pytest.mark.parametrize("bind", ["127.0.0.1:\u00b9", "127.0.0.1:8\u00b2"])
def test_console_bind_with_a_digit_python_cannot_read_names_the_input(bind: str) -> None:
    # same flaw in the console's check (`garrison run --ui 127.0.0.1:¹` prints
    # "garrison run: invalid literal for int() with base 10: '¹'")
    from garrison.console import check_bind

    with pytest.raises(ValueError, match=r"expected HOST:PORT"):
        check_bind(bind, None)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_json_log_of_a_failed_store_has_the_error_type(
        tmp_path: Path, autojump_clock: Any) -> None:
    # README: an error field is "its string (error_type gives the error's type name)",
    # as `"error": "RuntimeError: tick 6", "error_type": "RuntimeError"`. The line a
    # host logs when its store fails for good passes extra={"error": str(exc)}: no
    # type in the error, and no error_type, on the one line an operator alerts on
    from garrison._errors import StoreError

    handler = _Lines()
    logger = logging.getLogger("garrison")
    logger.addHandler(handler)
    try:
        async with garrison.open_node(store=str(tmp_path / "a.db")) as node:
            node.hosts["workflows"].store_failed(
                StoreError(str(tmp_path / "a.db"), "the disk refuses writes"))
    finally:
        logger.removeHandler(handler)
    line = next(x for x in handler.lines if "store failed" in x["message"])
    assert line.get("error_type") == "StoreError", line


def test_run_with_json_logs_says_its_servers_addresses_as_json_lines(
        tmp_path: Path) -> None:
    # `--metrics` and `--ui` said where they answer as plain lines on stderr
    # (`garrison run: metrics at http://...`) amid the JSON ones: a log shipper that
    # reads stderr as one JSON object per line refuses them, and the address (of port 0,
    # picked at start) is lost; said as a JSON line, it is one of the log's records,
    # whatever --log-level says (as the plain line is)
    import os
    import subprocess
    import sys

    script = tmp_path / "quick.py"
    script.write_text("async def main():\n    return 7\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "garrison", "run", str(script),
                           "--metrics", "127.0.0.1:0", "--ui", "127.0.0.1:0",
                           "--log-format", "json", "--log-level", "error"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stdout) == (0, "7\n"), done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    metrics = next(r for r in records if r["message"].startswith("metrics at "))
    assert metrics["url"].startswith("http://127.0.0.1:"), metrics
    assert metrics["message"] == f"metrics at {metrics['url']}"
    assert (metrics["logger"], metrics["level"]) == ("garrison.cli", "info")
    console = next(r for r in records if r["message"].startswith("web console at "))
    assert console["message"] == f"web console at {console['url']}", console


def test_run_with_json_logs_writes_only_json_lines_on_stderr(tmp_path: Path) -> None:
    # `--log-format json` is "one JSON object per line"; a root that fails with a
    # message of two lines ends with `garrison run: boom.py failed: RuntimeError: boom`
    # and then `line2` on stderr: two lines no JSON reader (a container's log shipper)
    # can take, the second of them not even naming garrison
    import os
    import subprocess
    import sys

    script = tmp_path / "boom.py"
    script.write_text("async def main():\n    raise RuntimeError('boom\\nline2')\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "garrison", "run", str(script),
                           "--log-format", "json"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    bad = []
    for line in done.stderr.splitlines():
        try:
            assert isinstance(json.loads(line), dict)
        except (ValueError, AssertionError):
            bad.append(line)
    assert bad == [], bad
