"""TCP proxies in front of the test PostgreSQL server that lose the server's answer to
one statement after the server ran (and committed) it: the client sees its connection
drop with the statement's outcome unknown, as after a network cut or a server crash
right after a commit (tests/test_pg_faults.py).

- :class:`CutProxy`: once ``armed``, the first client message containing one of its
  ``patterns`` is passed to the server, and the connection is cut without passing its
  answer back (an autocommit statement: it committed).
- :class:`CommitCutProxy`: once ``armed``, on a connection that sends ``pattern`` and
  whose answer contains ``marker`` (e.g. a workflow id in a claim's ``RETURNING``
  rows), the next message containing ``cut_at`` (``b"COMMIT"``) is passed to the
  server, and the connection is cut without passing its answer back.

``fired`` is set once the cut happened (half a second after the statement reached
the server, time for it to commit).

:class:`FreezeProxy` loses nothing: while ``frozen`` it holds every byte, sockets
open (a link that stops answering without breaking).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any


class _Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.armed = threading.Event()
        self.fired = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(100)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """``url`` (a ``postgresql://user@host:port/db`` URL) through this proxy."""
        host_port = url.split("@", 1)[1].split("/", 1)[0]
        return url.replace(host_port, f"127.0.0.1:{self.port}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            state: dict[str, Any] = {"doom": False, "cut": False, "watch": False}
            for src, dst, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, state, up),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, state: dict[str, Any],
              up: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if up and self._cut_here(data, state):
                    dst.sendall(data)  # the statement reaches the server ...
                    time.sleep(0.5)    # ... which runs and commits it
                    self.fired.set()
                    break              # ... and its answer never comes back
                if not up:
                    if state["cut"]:
                        continue
                    self._answer(data, state)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _cut_here(self, data: bytes, state: dict[str, Any]) -> bool:
        raise NotImplementedError

    def _answer(self, data: bytes, state: dict[str, Any]) -> None:
        pass


class CutProxy(_Proxy):
    def __init__(self, upstream_port: int, *patterns: bytes) -> None:
        super().__init__(upstream_port)
        self.patterns = patterns

    def _cut_here(self, data: bytes, state: dict[str, Any]) -> bool:
        if self.armed.is_set() and any(p in data for p in self.patterns):
            self.armed.clear()
            state["cut"] = True
            return True
        return False


class CommitCutProxy(_Proxy):
    def __init__(self, upstream_port: int, pattern: bytes, marker: bytes,
                 cut_at: bytes = b"COMMIT") -> None:
        super().__init__(upstream_port)
        self.pattern, self.marker, self.cut_at = pattern, marker, cut_at

    def _cut_here(self, data: bytes, state: dict[str, Any]) -> bool:
        if self.armed.is_set() and self.pattern in data:
            state["watch"] = True
        elif state["doom"] and self.cut_at in data:
            state["cut"] = True
            return True
        return False

    def _answer(self, data: bytes, state: dict[str, Any]) -> None:
        if state["watch"]:
            if self.marker in data:
                state["doom"] = True
                self.armed.clear()
            if b"Z" in data:  # ReadyForQuery: the statement's answer is complete
                state["watch"] = False


class FreezeProxy:
    """A TCP proxy in front of the server that, while ``frozen`` is set, holds every
    byte either way (and new connections) with both sockets open: a link that stops
    answering without breaking (the kernel acks what is sent, so no TCP timeout
    fires), as a hung network path or a frozen server does. Clearing it lets the
    held bytes through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.frozen = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(100)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """``url`` (a ``postgresql://user@host:port/db`` URL) through this proxy."""
        host_port = url.split("@", 1)[1].split("/", 1)[0]
        return url.replace(host_port, f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self.frozen.clear()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _hold(self) -> None:
        while self.frozen.is_set():
            time.sleep(0.01)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self._hold()
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                self._hold()
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
