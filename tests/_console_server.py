"""Start ``garrison run ... --ui 127.0.0.1:0`` (or ``garrison ui``) as a real process and
find the console's address in what it prints; shared by the example's test and the
browser test. :func:`chromium` finds the browser those tests drive."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
_URL = re.compile(r"web console at (http://\S+)")


def chromium() -> str:
    """Debian's chromium, which the browser tests drive (CI installs it): its path. A
    test fails without it, unless ``GARRISON_TEST_BROWSER=0`` skips the browser tests."""
    if os.environ.get("GARRISON_TEST_BROWSER") == "0":
        pytest.skip("browser tests disabled (GARRISON_TEST_BROWSER=0)")
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (or set "
                    "GARRISON_TEST_BROWSER=0 to skip the browser tests)")
    return path


class Console:
    """A running console process: its ``url``, everything it printed, a client."""

    def __init__(self, proc: subprocess.Popen[str], url: str, lines: queue.Queue[str],
                 stdout: list[str]) -> None:
        self.proc = proc
        self.url = url
        self._lines = lines
        self.stdout = stdout
        self.http = httpx.Client(base_url=url, timeout=10)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        """A POST as the console's page makes it (the CSRF cookie echoed in a header;
        the cookie is named for the console's port)."""
        name = f"garrison_csrf_{httpx.URL(self.url).port}"
        if name not in self.http.cookies:
            assert self.http.get("/").status_code == 200
        return self.http.post(path, json={} if body is None else body,
                              headers={"X-Garrison-CSRF": self.http.cookies[name]})

    def until(self, check: Any, what: str, timeout: float = 20.0) -> Any:
        """Poll ``check()`` (real time: another process runs) until it returns a truthy
        value; fail naming ``what`` after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > end or self.proc.poll() is not None:
                raise AssertionError(f"timed out waiting for {what}; output:\n"
                                     + "".join(self.stdout))
            time.sleep(0.05)


@contextmanager
def console(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
            ) -> Iterator[Console]:
    """``python -m garrison ARGS`` until it prints its console's address; on exit SIGINT
    and wait (the caller checks ``proc.returncode``). ``env``: added to the
    environment."""
    proc = subprocess.Popen([sys.executable, "-m", "garrison", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        url = None
        end = time.monotonic() + 30
        while url is None:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() > end or (proc.poll() is not None and lines.empty()
                                              and not reader.is_alive()):
                    raise AssertionError("the console printed no address; output:\n"
                                         + "".join(seen)) from None
                continue
            found = _URL.search(line)
            url = found.group(1) if found else None
        c = Console(proc, url, lines, seen)
        try:
            yield c
        finally:
            c.http.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
