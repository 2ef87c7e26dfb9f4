"""The torture harness's node processes, each forked from a server process that has
imported the node's code (``node.py``): a fresh ``python node.py`` spent most of its
short life importing garrison (the harness starts one for each kill), and a kill soon
after the start landed in Python's imports, not in the node's start and recovery.

    with Forks() as forks:
        proc = forks.spawn(["STORE", "SIZE", "ROUNDS", "normal"], env, "node-1.err")
        proc.stdout.readline(); proc.send_signal(signal.SIGKILL); proc.wait()

A forked node is the server's child: the server waits for it when asked (``poll``,
``wait``), and kills and waits for any left when the harness closes it.

    python _forks.py FD    # the server, on the socket FD (a SOCK_SEQPACKET pair's end)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent


class Forked:
    """A forked node, as much of ``subprocess.Popen`` as the harness uses."""

    def __init__(self, forks: Forks, pid: int, stdout: IO[str]) -> None:
        self._forks = forks
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._forks._ask({"pid": self.pid, "block": False})
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = self._forks._ask({"pid": self.pid, "block": True})
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:  # (not waited for: the pid is still this node's)
            os.kill(self.pid, signum)


class Forks:
    """The fork server: started on entering, ended on leaving."""

    def __enter__(self) -> Forks:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        with theirs:
            self._server = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()  # (the server kills and waits for the nodes left, then ends)
        self._server.wait(30)

    def spawn(self, argv: list[str], env: dict[str, str], stderr: str) -> Forked:
        """``node.py ARGV`` with ``env`` added to its environment and its standard
        error to the file ``stderr``; its standard output is the returned one's."""
        read, write = os.pipe()
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            socket.send_fds(self._sock, [json.dumps({"argv": argv, "env": env}).encode()],
                            [write, err])
        finally:
            os.close(write)
            os.close(err)
        pid = self._ask(None)
        assert isinstance(pid, int), pid
        return Forked(self, pid, os.fdopen(read, "r"))

    def _ask(self, ask: dict[str, Any] | None) -> Any:
        if ask is not None:
            self._sock.send(json.dumps(ask).encode())
        answer = self._sock.recv(65536)
        if not answer:
            raise RuntimeError(f"the fork server ended (exit {self._server.poll()})")
        return json.loads(answer)


def _child(sock: socket.socket, ask: dict[str, Any], fds: list[int]) -> None:
    """(in the fork) Run the node on ``fds`` (standard output, standard error); never
    returns."""
    code = 1
    try:
        sock.close()
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        os.environ.update(ask["env"])
        sys.argv = [str(HERE / "node.py"), *ask["argv"]]
        import node

        node.run_node()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _serve(fd: int) -> None:
    sys.path.insert(0, str(HERE))
    import node  # noqa: F401  (garrison, trio and the scenario's code: each fork has them)

    sock = socket.socket(fileno=fd)
    children: set[int] = set()
    try:
        while True:
            data, fds, _flags, _addr = socket.recv_fds(sock, 65536, 2)
            if not data:
                return  # the harness closed its end
            ask = json.loads(data)
            if "argv" in ask:
                pid = os.fork()
                if pid == 0:
                    _child(sock, ask, fds)
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                sock.send(json.dumps(pid).encode())
                continue
            pid = ask["pid"]
            got, status = os.waitpid(pid, 0 if ask["block"] else os.WNOHANG)
            code = None if got == 0 else os.waitstatus_to_exitcode(status)
            if code is not None:
                children.discard(pid)
            sock.send(json.dumps(code).encode())
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
