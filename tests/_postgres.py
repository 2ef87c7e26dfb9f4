"""A throwaway PostgreSQL server for tests and benchmarks (a plain module, no pytest).

    server = start()                     # a fresh cluster in a temp dir, pg_ctl start, wait
    url = create_db(server, "test_1")    # postgresql://postgres@127.0.0.1:PORT/test_1
    pause(server); resume(server)        # stop and start again (outage tests)
    stop(server)                         # pg_ctl stop -m immediate, remove the temp dir

The server binaries are found with ``pg_config --bindir`` (Debian keeps them off
PATH, in /usr/lib/postgresql/<major>/bin); ``GARRISON_PG_BINDIR`` overrides.
When running as root (CI, these machines), initdb and pg_ctl run as the
``postgres`` user through ``runuser``; otherwise as the current user. The server
listens on 127.0.0.1 only, on a free port, with trust authentication, and keeps
``fsync=on`` by default so that commit latencies measured against it (benchmarks) are
real; the test fixtures start theirs with ``fsync=False`` (a test kills processes,
never the machine, so what a server wrote survives it without fsync).

Every server started here is also stopped at interpreter exit (``atexit``), so a
Ctrl-C or an error between start and stop does not leave a postmaster behind.
Failures raise :class:`PostgresUnavailable` with the reason (which binary is
missing, the tail of the server log, ...).
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PostgresServer", "PostgresUnavailable", "create_db", "drop_db", "find_bindir", "pause",
    "resume", "start", "stop",
]


class PostgresUnavailable(RuntimeError):
    """A throwaway PostgreSQL server could not be started (the message says why)."""


@dataclass
class PostgresServer:
    """A running throwaway server: its port, its directories, how to reach it."""

    bindir: Path
    root: Path  # temporary directory holding data/, sock/ and server.log
    port: int
    user: str | None  # OS user the server runs as (None: the current user)
    stopped: bool = field(default=False)
    options: str = ""  # the postgres options it was started with (for restart)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` on this server (TCP on 127.0.0.1, user postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


_RUNNING: list[PostgresServer] = []


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl; raises :class:`PostgresUnavailable`."""
    candidates: list[Path] = []
    if env := os.environ.get("GARRISON_PG_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            )
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    # Debian's layout, newest major version first (pg_config may be a client-only one).
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: looked in "
        + (", ".join(str(c) for c in candidates) or "pg_config --bindir, /usr/lib/postgresql/*/bin")
        + "; install them (Debian: apt-get install postgresql) or set GARRISON_PG_BINDIR"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


def _run(user: str | None, argv: list[str], what: str, timeout: float = 120) -> None:
    try:
        done = subprocess.run(_as_user(user, argv), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-10:]
        raise PostgresUnavailable(f"{what} failed (exit {done.returncode}): " + " | ".join(detail))


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no server log)"


# (bindir, user) -> a cluster initdb made once in this process, which each server
# started copies: the same files, in a tenth of initdb's time (a test that needs a
# server of its own to stop or stall started one, initdb and all, each time)
_TEMPLATES: dict[tuple[Path, str | None], Path] = {}


def _initialized(bindir: Path, user: str | None) -> Path:
    """The data directory of a fresh cluster (``initdb``), made at the first call for
    ``bindir`` and ``user`` and removed at interpreter exit; never started itself."""
    key = (bindir, user)
    if key in _TEMPLATES:
        return _TEMPLATES[key]
    root = Path(tempfile.mkdtemp(prefix="garrison-pg-initdb-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    try:
        if user is not None:
            pw = pwd.getpwnam(user)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        _run(
            user,
            [str(bindir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            "initdb",
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    _TEMPLATES[key] = root / "data"
    return root / "data"


def start(*, fsync: bool = True, settings: dict[str, str] | None = None) -> PostgresServer:
    """A fresh cluster in a temporary directory (a copy of one initdb made once per
    process), started on a free port.

    ``settings`` are extra ``-c name=value`` server options. Raises
    :class:`PostgresUnavailable` naming the reason when it cannot.
    """
    bindir = find_bindir()
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise PostgresUnavailable(
                "running as root, but there is no 'postgres' OS user to run the server as"
            ) from exc
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root, but runuser is not installed")
        user = "postgres"
    template = _initialized(bindir, user)
    root = Path(tempfile.mkdtemp(prefix="garrison-pg-"))
    try:
        (root / "sock").mkdir()
        if user is not None:
            for p in (root, root / "sock"):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        _run(user, ["cp", "-a", str(template), str(root / "data")],
             "copying the initdb'd cluster")
        options = {
            "listen_addresses": "127.0.0.1",
            "fsync": "on" if fsync else "off",
            "max_connections": "200",
            **(settings or {}),
        }
        last: PostgresUnavailable | None = None
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            opts = f"-p {port} -k {root / 'sock'} " + " ".join(
                f"-c {k}={v}" for k, v in options.items()
            )
            server = PostgresServer(bindir, root, port, user, options=opts)
            try:
                _run(
                    user,
                    [str(bindir / "pg_ctl"), "-D", str(server.datadir), "-l", str(server.log),
                     "-o", opts, "-w", "-t", "60", "start"],
                    "pg_ctl start",
                )  # fmt: skip
            except PostgresUnavailable as exc:
                last = PostgresUnavailable(f"{exc}; server log: {_log_tail(server.log)}")
                if "already in use" not in _log_tail(server.log):
                    raise last from exc
                continue
            _RUNNING.append(server)
            return server
        assert last is not None
        raise last
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def stop(server: PostgresServer) -> None:
    """Stop the server at once (``-m immediate``) and remove its directory. Idempotent."""
    if server.stopped:
        return
    server.stopped = True
    try:
        try:  # (a stalled one would not stop)
            unstall(server)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
        subprocess.run(
            _as_user(
                server.user,
                [str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-m", "immediate",
                 "-w", "stop"],
            ),
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(server.root, ignore_errors=True)
        if server in _RUNNING:
            _RUNNING.remove(server)


def pause(server: PostgresServer) -> None:
    """Stop the server (``-m fast``: every connection is closed), keeping its data."""
    _run(server.user, [str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-m", "fast",
                       "-w", "stop"], "pg_ctl stop")


def resume(server: PostgresServer) -> None:
    """Start a paused server again, on the same port with the same options."""
    _run(server.user, [str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-l",
                       str(server.log), "-o", server.options, "-w", "-t", "60", "start"],
         "pg_ctl start")


def _server_pids(server: PostgresServer) -> list[int]:
    """The postmaster's pid and its children's (every backend)."""
    postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                              text=True, timeout=30).stdout.split()
    return [postmaster, *map(int, children)]


def _signal_all(server: PostgresServer, signum: int) -> None:
    """``signum`` to the postmaster first (stopped, it forks no new backend), then to
    its children; one that ended meanwhile (a backend whose client left) is skipped."""
    postmaster, *_ = _server_pids(server)
    os.kill(postmaster, signum)
    for pid in _server_pids(server)[1:]:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def stall(server: PostgresServer) -> None:
    """Stop every process of the server (SIGSTOP): connections stay open, nothing
    answers (a hung server, or a network that holds its packets)."""
    _signal_all(server, signal.SIGSTOP)


def unstall(server: PostgresServer) -> None:
    """Let a stalled server go on (SIGCONT)."""
    _signal_all(server, signal.SIGCONT)


def create_db(server: PostgresServer, name: str) -> str:
    """``CREATE DATABASE name`` on ``server``; returns its URL."""
    import psycopg  # imported here: the module is usable to start a server without it
    from psycopg import sql

    with psycopg.connect(server.url(), autocommit=True, connect_timeout=30) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.url(name)


def drop_db(server: PostgresServer, name: str) -> None:
    """``DROP DATABASE name WITH (FORCE)`` (closing what is still connected to it), if
    the server is up; a database it cannot drop is left to :func:`stop`."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(server.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
    except psycopg.Error:
        pass


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        stop(server)
