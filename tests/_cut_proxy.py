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
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def _close_both(*sockets: socket.socket) -> None:
    """Shut pumped sockets down and close them (their pumps' recv then ends too)."""
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


class _Listening:
    """A proxy's listening socket on a free port of 127.0.0.1, in front of the server
    at ``upstream_port``; its subclass accepts in a thread of its own (``_accept``)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(100)
        self.port: int = self.sock.getsockname()[1]

    def url(self, url: str) -> str:
        """``url`` (a ``postgresql://user@host:port/db`` URL) through this proxy."""
        host_port = url.split("@", 1)[1].split("/", 1)[0]
        return url.replace(host_port, f"127.0.0.1:{self.port}")

    def _accept(self) -> None:
        raise NotImplementedError

    def _connections(self, admit: Callable[[], bool] = lambda: True
                     ) -> Iterator[tuple[socket.socket, socket.socket]]:
        """Each accepted client with its new connection to the server, until the
        listening socket closes; a client ``admit`` refuses (asked once it is accepted),
        or one whose server connection fails, is closed."""
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not admit():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            yield client, server


class _Proxy(_Listening):
    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.armed = threading.Event()
        self.fired = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        for client, server in self._connections():
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
        _close_both(src, dst)

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


class LinkProxy(_Listening):
    """A TCP proxy in front of the test PostgreSQL server whose link can be taken away:
    :meth:`hold` keeps every socket open but passes no byte either way (a server or
    network that stopped answering; new connections hang too), :meth:`cut` drops every
    connection and refuses new ones (the server unreachable); :meth:`restore` brings
    the link back."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self._flowing = threading.Event()
        self._flowing.set()
        self._cut = False
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        self._flowing.clear()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, []
        _close_both(*sockets)

    def restore(self) -> None:
        with self._lock:
            self._cut = False
        self._flowing.set()

    def close(self) -> None:
        self.cut()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _admit(self) -> bool:
        self._flowing.wait()
        with self._lock:
            return not self._cut

    def _accept(self) -> None:
        for client, server in self._connections(self._admit):
            with self._lock:
                self._open += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                self._flowing.wait()
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        _close_both(src, dst)
