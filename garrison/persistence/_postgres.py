"""The PostgreSQL store: the same tables, records and guarantees as the SQLite store,
on a server shared by processes and machines.

Connections
-----------
- the **writer** (synchronous psycopg, autocommit): every write. The node's group
  commit writes a batch from a worker thread when other tasks could run meanwhile (the
  node keeps running while the batch waits for the server), and in the trio thread
  when none could (a commit nobody could share, or a batch that every runnable task
  joined: the thread hop there and back would cost more than it frees);
  ``_write_batch_here``. There it never waits for the write lock (another write holding
  it, reconnecting through an outage say: :class:`Busy`, the commit is written from a
  worker thread) and waits at most ``TRIO_THREAD_WAIT`` in all for the server: the
  write is resumable (``_pg_write.py``), and the same write, with its connection, its
  statements in flight and the write lock, goes on in a worker thread started at once
  (``hand_over``), which reads its own answers (or reconnects and settles it); its
  caller waits for it, shielded. A node holds two session-level advisory locks on this
  connection: its cluster incarnation's (``_pg_cluster.py``: a second node of the same
  name gets :class:`~garrison.StoreLocked`) and its schema's node lock, shared by every
  node (a tool that can take it exclusively knows no node runs: ``node_running``). Both
  go when the node's connection does (a killed node frees them); ``close()`` lets go of
  them before it returns.
- the **reader** (synchronous psycopg, autocommit, prepared statements): every read,
  from the trio thread or a tool.
- the **taker** (synchronous psycopg, autocommit, made at a node's first
  ``wakeups()``): taking the wakeup rows, in a worker thread, so that a take waiting
  for the server (a lock on the wakeups table, a server process that does not run)
  holds neither the node's thread nor the reader's lock.
- the **listener** (:class:`~garrison.persistence._pg_trio.TrioConnection`, made by
  the first ``await wakeups()``): ``LISTEN`` on the store's channel. Tools (stores
  opened with ``lock=False``) add a wakeup row and ``pg_notify`` in the transaction of
  their write, so the node wakes when it commits: no polling.

Write path
----------
A :class:`~garrison.persistence.Transaction` is planned into prepared statements
(``_OP_SQL``) on the caller's side (a NUL character, which PostgreSQL text cannot
hold, is refused there with a ``ValueError``). Consecutive journal appends are sent
as one multi-row insert, and the first statement also sets the writer's number (and,
in a cluster, checks the fences: ``_pg_write.py``). One statement is sent as is (its
own implicit transaction: one round trip); several are sent in one pipeline ending
with a Sync, which the server runs as ONE implicit transaction (one round trip; an
error rolls the whole of it back). Checks that must abort the transaction (a missing
workflow, an inbox row already taken, a promise completed twice) are made on the
server (``expect()`` and ``complete_promise()`` of ``_pg_schema.py``) and come back
as the same exceptions as SQLite's. ``set_attributes`` reads the row ``FOR UPDATE``
and merges in Python (RFC 7396, SQLite's key order), in an explicit transaction. A
failed group-commit batch is written again with a SAVEPOINT per caller, so only the
callers whose own operations fail get an error.

The first statement of every transaction also sets this writer's row of
``writers`` to the transaction's number. That is what makes a lost connection safe:

- the connection drops (network, server restart, ``pg_terminate_backend``): the
  store reconnects with backoff (for ``retry_for`` seconds; a commit begun in the
  node's thread goes on in a worker thread for that, but under a ``MockClock``),
  takes its lock again, ends its old session on the server (which may not have
  noticed yet that its client went: its transaction in flight, or statements still on
  their way, could commit later) and waits until it is gone, and only then reads its
  number. Equal to the transaction in flight: it committed (the
  results are read back); equal to the previous one: it did not, and it is sent
  again. Nothing is applied twice and nothing is lost;
- lower than a transaction the server had confirmed: the server lost confirmed
  commits (``synchronous="normal"`` is ``synchronous_commit=off``: a server crash
  loses its last few hundred milliseconds). The store then refuses every further
  write with :class:`~garrison.StoreError` (the node's memory is ahead of the
  store); a restarted node resumes from what the store kept;
- at ``synchronous="full"`` a transaction that is one journal row of a workflow the
  store does not fence (a step of a sequential workflow) does not set the number: its
  own row settles a lost answer (there: committed; absent: sent again), and a server
  that keeps what it confirmed cannot have lost an earlier one;
- the server stays unreachable past ``retry_for``, the old session does not end
  within it, or another node took the lock meanwhile: the same refusal;
- the store is closed while a write waits for the server: that write ends with
  :class:`~garrison.StoreError` saying its outcome is unknown (``close`` does not
  wait for a server that stopped answering); one whose results are being read back
  after a lost answer, with a StoreError saying it committed; one the server refused
  for now (a statement timeout under lock contention), waiting to be tried again,
  with a StoreError saying it was not committed, and it is not sent again;
- the node stops (``stopping``) and the server does not answer within its time: the
  connections are cut, what waited ends as if the store were closed, and the store
  writes nothing more (a server that is down or stalled does not hold the stop).

A workflow is never marked failed because the network blinked: its end cannot be
recorded, and it resumes from its journal.

Reads retry the same way (they are idempotent).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time as _time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .._duration import parse_duration
from .._errors import StoreError, StoreLocked
from ..actors._values import Pid
from . import _pg_cluster, _pg_schema, is_postgres_url
from ._blocking import virtual_clock as _virtual_clock
from ._converter import check_limit, check_search_filters, search_json
from ._file import STRAY_AT, mask_password, stray_at, url_servers
from ._group_commit import (
    Busy,
    CommitRequest,
    GroupCommit,
    Strategy,
    fail_all,
    hand_over,
    interrupted,
    runnable_tasks,
)
from ._pg_write import (
    _DONE,
    _TRANSIENT,
    PgWritePath,
    _dumps,
    _Gen,
    _Plan,
    _quote,
    _reason,
    _Stmt,
    _unwrap,
    cut_connection,
    lock_wait_at_most,
    lock_wait_reason,
)
from ._prune import check_count, check_prune
from ._records import (
    FINAL_STATUSES,
    DamagedRecord,
    InboxRecord,
    JournalHead,
    JournalRecord,
    PromiseRecord,
    PromiseStatus,
    QueuePlace,
    QueueRecord,
    ResumeRows,
    ScheduleRecord,
    TimerRecord,
    WakeupRecord,
    WorkflowRecord,
    WorkflowStatus,
    group_resume_rows,
    journal_entries_of,
    journal_heads_select,
    journal_page_of,
    journal_page_select,
    journal_select,
    no_match,
    parse_status,
)
from ._shortcuts import StoreShortcuts
from ._transaction import Transaction, unix_seconds

#: the oldest psycopg the store runs on: its ``Connection.wait(timeout=)`` (3.3.6) bounds
#: a statement's wait for a server that stopped answering (the cluster's rounds, a
#: liveness probe); psycopg 3.2's ``notifies(timeout=, stop_after=)`` too
PSYCOPG_NEEDED = (3, 3, 6)


def psycopg_problem(version: str) -> str | None:
    """Why psycopg ``version`` cannot run the store (``None``: it can)."""
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
    if len(found) == 3 and found >= PSYCOPG_NEEDED:
        return None
    needed = ".".join(map(str, PSYCOPG_NEEDED))
    return (f"the PostgreSQL store needs psycopg {needed} or newer, and psycopg {version} "
            "is installed: pip install -U 'garrison[postgres]'")


if (_too_old := psycopg_problem(psycopg.__version__)) is not None:
    raise ImportError(_too_old)

__all__ = ["PostgresStore"]

T = TypeVar("T")

log = logging.getLogger("garrison.store")

#: how long a node waits for the schema's node lock held by another session alone
#: (a tool holds it for a moment) before it gives up (``_share_node_lock``)
NODE_LOCK_WAIT = 10.0
#: seconds a tool's statement (a store opened with ``lock=False``: ``garrison
#: workflows``, the console) waits for a lock another session holds before the server
#: cancels it (``lock_timeout``, unless the server's or the role's is shorter), to be
#: tried again for ``retry_for``: as a SQLite tool gives up after its busy timeout, not
#: a command that waits without end behind a session left in a transaction
TOOL_LOCK_WAIT = 5.0
#: A node's sessions are idle for as long as it has nothing to write or read, and that
#: is meant: its writer's holds the locks that say the node runs (a tool that finds
#: them free acts in the store itself), its cluster connection's waits between rounds,
#: its LISTEN session waits for a tool's writes. A DBA's ``idle_session_timeout`` (on
#: the server, the database or the role; PostgreSQL 14 on) would end them, so a node's
#: sessions turn it off for themselves; a tool's keep it (each reconnects when it reads).
_KEEP_IDLE_SESSION = "SET idle_session_timeout = 0"
_IDLE_SESSION_TIMEOUT_SINCE = 140000

#: seconds between two looks of a stopping store for a wait for the server past its
#: time: one seen at both is cut (see ``PostgresStore.stopping``)
CUT_CHECK = 0.5
#: seconds a stopping store's look at a server gives it to take a new connection, and
#: between two such looks while it answers (see ``PostgresStore.stopping``)
PROBE_WAIT = 2.0
PROBE_EVERY = 2.0
#: seconds a node's LISTEN session may stay silent before it is asked whether it still
#: answers (``SELECT 1``, given :data:`PROBE_WAIT`): a server process that stopped
#: (SIGSTOP, a hung disk) keeps its connection open without a word, and a tool's
#: writes, which wake the node's workflows through it, would wait for it for ever
LISTEN_CHECK = 10.0
#: seconds a node's take of the wakeups (``PostgresStore.wakeups``, in a worker thread)
#: waits for the server's answer before a warning says so, naming its session on the
#: server (a lock another session holds on the wakeups table, a server process that does
#: not run): a tool's writes wake the node's workflows only once it is answered
READ_WAIT_WARNING = 10.0
#: seconds between two warnings that a node cannot take the wakeups tools leave
#: (``PostgresStore.wakeups``: the same error, tried again every 2 s for as long as it
#: lasts, is said at its first try and once each this long, a changed one at once)
WAKEUPS_FAILING_SAID_EVERY = 60.0

#: the most bytes of JSON text one value may have: PostgreSQL's limit for a text value
#: (1 GB) less room for the rest of its row (ids, names, numbers)
_VALUE_LIMIT = (1 << 30) - 1 - 65_536
#: ``synchronous`` -> the writer's ``synchronous_commit``
_SYNCHRONOUS = {"normal": "off", "full": "on"}
#: libpq settings a store uses unless the URL sets them: fail fast when the server
#: cannot be reached, and notice a dead peer (no RST) within seconds, not minutes
_CONN_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "20000",
}
_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
_BAD = pq.ConnStatus.BAD


# ------------------------------------------------------------------ the URL
#: what a schema name may be (PostgreSQL's limit for a name; ``$`` would end a
#: dollar-quoted body of the schema's functions)
_SCHEMA_NAMES = "1 to 63 bytes, no NUL and no '$'"


def _schema_name_ok(name: object) -> bool:
    return (isinstance(name, str) and bool(name) and len(name.encode()) <= 63
            and "\x00" not in name and "$" not in name)


#: a '%' that does not begin a percent-encoded byte
_BAD_PERCENT = re.compile("%(?![0-9A-Fa-f]{2})")


def _password_problem(password: str) -> str | None:
    """What libpq refuses in a URL's ``password`` (as written), said without it."""
    if _BAD_PERCENT.search(password):
        return "the password holds a '%' not followed by two hex digits: write a '%' in it as %25"
    if "%00" in password:
        return "the password holds %00 (a NUL character), which libpq does not take"
    if " " in password:
        return "the password holds a space: write it as %20"
    return None


def _parse(url: str, schema: str | None) -> tuple[dict[str, str], str, str]:
    """``(libpq parameters, schema, display name)``; ``ValueError`` says what is wrong."""
    if not is_postgres_url(url):
        raise ValueError(f"expected a postgresql:// URL, got {_display_raw(url)!r}"
                         + (" (a libpq keyword string is not taken: write it as "
                            "postgresql://user:password@host:port/dbname)"
                            if isinstance(url, str) and "=" in url else ""))
    if stray_at(url) >= 0:  # (before urllib reads a piece of the password as the port)
        raise ValueError(f"invalid PostgreSQL URL {_display_raw(url)!r}: {STRAY_AT}")
    try:
        parts = urllib.parse.urlsplit(url)
        url_servers(url)  # (raises ValueError for a port, of any host, that is no number)
    except ValueError as exc:
        raise ValueError(f"invalid PostgreSQL URL {_display_raw(url)!r}: "
                         f"{str(exc).strip()}") from None  # (libpq's ends in a newline)
    # the query's items are passed on to libpq as written (libpq decodes %XX, and
    # takes '+' for itself, not for a space as form encoding does), schema= taken out
    items = [item for item in parts.query.split("&") if item]
    keyed = [(urllib.parse.unquote(item.partition("=")[0]), item) for item in items]
    in_url = [urllib.parse.unquote(item.partition("=")[2]) for k, item in keyed
              if k == "schema"]
    rest = "&".join(item for k, item in keyed if k != "schema")
    if len(set(in_url)) > 1:
        raise ValueError(f"the URL names schema= {len(in_url)} times, differently "
                         f"({', '.join(map(repr, in_url))}): name it once")
    if in_url and schema is not None and in_url[-1] != schema:
        raise ValueError(f"the URL names schema {in_url[-1]!r} and schema= says {schema!r}")
    chosen = schema if schema is not None else (in_url[-1] if in_url else None)
    chosen = chosen if chosen is not None else _pg_schema.DEFAULT_SCHEMA
    if not _schema_name_ok(chosen):
        raise ValueError(f"invalid schema name {chosen!r}: {_SCHEMA_NAMES}")
    # (the URL as written, its query replaced: urlunsplit would turn libpq's
    # postgresql:///dbname, an empty host, into postgresql:/dbname)
    bare = url.partition("#")[0].partition("?")[0] + (f"?{rest}" if rest else "")
    # the password as written (user:password@, ?password=): libpq's refusal of a URL
    # quotes the text it refused, so what is wrong with a password is said here, and
    # any password is cut out of what libpq says
    passwords = [item.partition("=")[2] for k, item in keyed if k == "password"]
    passwords += [parts.password] if parts.password is not None else []
    problem = ("the user name or password holds an '@': write it as %40"
               if parts.netloc.count("@") > 1 else  # (libpq: the host is what follows)
               next(filter(None, map(_password_problem, passwords)), None))
    if problem is not None:
        raise ValueError(f"invalid PostgreSQL URL {_display_raw(url)!r}: {problem}")
    try:
        parsed = conninfo_to_dict(bare)
    except psycopg.Error as exc:
        reason = str(exc).strip()  # (libpq's ends in a newline)
        secrets = {*passwords, *map(urllib.parse.unquote, passwords)} - {""}
        # (libpq quotes the text it refused: a quoted token holding a password is cut
        # whole, the rest of its words left as they are, "parameter" for a password "p")
        reason = re.sub(r'"[^"]*"', lambda token: '"***"' if any(
            secret in token.group() for secret in secrets) else token.group(), reason)
        raise ValueError(f"invalid PostgreSQL URL {_display_raw(url)!r}: {reason}"
                         ) from None
    params = {k: str(v) for k, v in parsed.items() if v is not None}
    # (what the URL leaves out, libpq takes from its environment variables: the name
    # says what it uses, so that a message names the server a bare postgresql:// of a
    # container's environment reached)
    host = params.get("host") or os.environ.get("PGHOST") or ""
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    user = params.get("user") or os.environ.get("PGUSER")
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user or ""
    if not host or host.startswith(("/", "@")):
        # libpq's default (a Unix-domain socket) or a socket's directory: shown as the
        # postgresql:///dbname form libpq takes, the directory as a query parameter
        shown = (f"postgresql://{user + '@' if user else ''}/{dbname}"
                 + (f"?host={host}&port={port}" if host else
                    f"?port={port}" if params.get("port") or os.environ.get("PGPORT")
                    else ""))
    else:
        # each host with its port (libpq: one port for all, or one per host); an IPv6
        # address in brackets
        hosts = host.split(",")
        ports = port.split(",") if "," in port else [port] * len(hosts)
        servers = ",".join(f"[{h}]:{p or 5432}" if ":" in h else f"{h}:{p or 5432}"
                           for h, p in zip(hosts, ports, strict=False))
        shown = f"postgresql://{user + '@' if user else ''}{servers}/{dbname}"
    if chosen != _pg_schema.DEFAULT_SCHEMA:
        shown += f"{'&' if '?' in shown else '?'}schema={chosen}"
    return params, chosen, shown


#: a node's statements at open (or as it joins its cluster) refused for now, or their
#: connection lost: after how long (seconds) a warning says what the node waits for
OPEN_WAIT_WARNING = 1.0

#: how far below the highest schedule wakeup a node took it looks again for one that
#: committed late (ids are taken as rows are inserted; ``take_wakeups``)
_SCHEDULE_SLACK = 10_000
#: how late (seconds) a schedule wakeup's commit may come after its insert's time and
#: still be read below the highest one taken
_SCHEDULE_LATE = 600.0

#: a lone surrogate character (a name decoded with ``surrogateescape``): jsonb cannot
#: hold one, and ``workflow.attrs`` refuses them, so no stored attribute has one
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


#: the server's words when a connection goes past its ``max_connections`` (what is
#: left is reserved for superusers), a role's or a database's ``CONNECTION LIMIT``
_NO_SLOT = ("too many clients already", "connection slots are reserved",
            "too many connections for")


def _connect_reason(exc: BaseException) -> str:
    """Why a connection was refused; past a connection limit, also how many sessions
    garrison's processes hold (the server says nothing of who holds the others)."""
    reason = _reason(exc)
    if any(words in reason for words in _NO_SLOT):
        reason += (" (a node holds 5 sessions for as long as it runs, a tool 2: the "
                   "server's max_connections, or the role's or database's CONNECTION "
                   "LIMIT, must leave room for every node and tool of the store)")
    return reason


def _migrate_hint(conn: psycopg.Connection[Any], schema: str) -> str:
    """What to do when this role may not migrate ``schema`` (it may write its tables,
    but a migration alters them, which only their owner may): who owns them."""
    try:
        row = conn.execute("SELECT tableowner FROM pg_catalog.pg_tables WHERE schemaname "
                           "= %s AND tablename = 'workflows'", (schema,)).fetchone()
    except psycopg.Error:
        row = None
    owner = f"role {row[0]!r}, which owns its tables" if row else "the role that owns its tables"
    return (f"(a migration alters the tables: open the store once with a node as {owner}, "
            "then this role's nodes run on it)")


#: psycopg's error for a wait past its timeout (an ``OperationalError``)
_WAIT_TIMEOUT: Any = getattr(pg_errors, "_WaitTimeout", ())


@contextlib.contextmanager
def _waits_at_most(conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
    """In the block, a statement of ``conn`` waits at most ``seconds`` for the server
    (then psycopg's wait timeout, an ``OperationalError``, is raised: the statement is
    still in flight, and the connection is of no more use). The connection is used by
    one thread at a time (its owner's lock held)."""
    plain = conn.wait

    def wait(gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        return plain(gen, interval, seconds if timeout is None else min(timeout, seconds))

    conn.wait = wait  # type: ignore[method-assign]
    try:
        yield
    finally:
        del conn.wait


class _Repeated:
    """When to say a failure tried again and again: at its first try, at a try whose
    error's text changed, and ``every`` seconds after it was last said; and, once a try
    works, that it ended (once)."""

    def __init__(self, every: float) -> None:
        self.every = every
        #: the failure's text, its tries in a row, when the first failed, when it was said
        self._text: str | None = None
        self._tries = 0
        self._since = 0.0
        self._said = 0.0

    def failed(self, text: str, now: float) -> bool:
        """A try failed with ``text`` at ``now``: whether to say it."""
        if self._tries == 0:
            self._since = now
        self._tries += 1
        if text == self._text and now - self._said < self.every:
            return False
        self._text, self._said = text, now
        return True

    @property
    def failing(self) -> bool:
        """Whether the last try failed."""
        return self._tries > 0

    def ended(self, now: float) -> tuple[int, float] | None:
        """A try worked at ``now``: the tries that failed in a row before it and for how
        long (to say), or ``None`` if none did."""
        if self._tries == 0:
            return None
        ended = (self._tries, now - self._since)
        self._text, self._tries = None, 0
        return ended


def _check_cancelled() -> None:
    """Raise ``trio.Cancelled`` in a thread ``trio.to_thread.run_sync`` runs once its
    task is cancelled (a node's start interrupted as its store waits for the server);
    nothing in any other thread."""
    with contextlib.suppress(RuntimeError):  # (not such a thread)
        trio.from_thread.check_cancelled()


def migrate_unused(url: str, *, only_create: bool = False) -> bool:
    """Migrate the schema ``url`` names to this garrison's version, as a node opening it
    would (nothing runs), holding the schema's node lock alone meanwhile: refused with
    :class:`~garrison.StoreLocked` while a node runs it (every node holds it shared).
    ``only_create``: only a schema without garrison's tables is made, and nothing else
    is done (no lock is taken). True if the schema had no garrison tables."""
    params, schema, display = _parse(url, None)
    try:
        conn = psycopg.connect(make_conninfo(**{**_CONN_DEFAULTS, **params}), autocommit=True)
    except psycopg.Error as exc:
        raise StoreError(display, f"cannot connect: {_connect_reason(exc)}") from None
    what = "create" if only_create else "migrate"
    wait: float | None = None
    try:
        wait = _tool_lock_wait(conn)  # (a tool's: no wait without end behind a lock)
        new = _pg_schema.version_of(conn, schema, display) == 0
        if only_create:
            # (no node runs a schema that is not there: no node lock to take; creators
            # at once, nodes included, take turns in ``migrate``, which reads again)
            # (True for the one of them that made it: it says so)
            return new and _pg_schema.migrate(conn, schema, allow_migrate=True,
                                              where=display) == 0
        key = _pg_schema.node_lock_key(schema)
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not got or not got[0]:
            raise StoreLocked(display, held=f"a node runs schema {schema!r} (it holds the "
                              "schema's node lock)", hint="migrate a copy, not a store in use")
        try:
            _pg_schema.migrate(conn, schema, allow_migrate=True, where=display)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return new
    except psycopg.Error as exc:
        why = (lock_wait_reason(exc, wait) if isinstance(exc, pg_errors.LockNotAvailable)
               else _reason(exc))
        raise StoreError(display, f"cannot {what} schema {schema!r}: {why}") from None
    finally:
        conn.close()


def _tool_lock_wait(conn: psycopg.Connection[Any]) -> float | None:
    """Set a tool's session's ``lock_timeout`` (``TOOL_LOCK_WAIT``, unless the one it
    has is shorter); the one it has then, in seconds."""
    return lock_wait_at_most(conn, TOOL_LOCK_WAIT)


def _lone_surrogate(text: str) -> bool:
    """True if the JSON ``text`` holds a lone surrogate (a ``\\udXXX`` escape that is no
    half of a pair)."""
    if "\\ud" not in text.lower():
        return False
    return bool(_LONE_SURROGATE.search(json.dumps(json.loads(text), ensure_ascii=False)))

#: ``password=VALUE`` in a URL's query
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


def _display_raw(url: str) -> str:
    """``url`` without its password (for a message about a URL that does not parse, or
    about a libpq keyword string given instead of a URL)."""
    if not isinstance(url, str):
        return repr(url)
    if not is_postgres_url(url):
        return mask_password(url)
    at, start = stray_at(url), url.index("//") + 2
    if at >= 0 and ":" in url[start:at]:  # (a password cut short: all before the '@' goes)
        url = url[:start] + "…" + url[at:]
    url = _QUERY_PASSWORD.sub(r"\1***", url)  # (?password=... is libpq's too)
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is not None:  # (dropped, as the store's own name has none)
            netloc = parts.netloc.replace(":" + parts.password + "@", "@", 1)
            return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "postgresql://…"
    return url


# ------------------------------------------------------------------ the store
def _ended(exc: psycopg.Error) -> bool:
    """True if ``exc`` ended its connection's session: the server or an administrator
    ended it (``pg_terminate_backend``, a shutdown: SQLSTATE class 57P), the link failed
    (class 08), or libpq found it gone (no SQLSTATE: ``server closed the connection
    unexpectedly``)."""
    state = exc.sqlstate
    return isinstance(exc, psycopg.OperationalError) and (
        state is None or state.startswith(("08", "57P")))



def _status_values(status: str | Iterable[str]) -> list[str]:
    """The statuses (one or several) of a workflow read or count filtered by status."""
    return [parse_status(s).value for s in ([status] if isinstance(status, str) else status)]

class PostgresStore(PgWritePath, StoreShortcuts):
    """The durable store on PostgreSQL (see the module docs for the write path).

    ``url`` is a libpq URL, ``"postgresql://user[:password]@host[:port]/dbname"``
    (any libpq parameter may follow as a query parameter, e.g. ``?sslmode=require``;
    several servers in libpq's form, ``host1:port1,host2:port2``, for a failover);
    ``schema`` (or ``?schema=`` in the URL) is the PostgreSQL schema holding the
    tables, ``"garrison"`` by default: one database can hold several stores. The
    schema and its tables are created (and migrated) when a node opens the store.

    ``synchronous="normal"`` (default) commits with ``synchronous_commit=off``: a
    killed node loses nothing it committed; a crash of the *server* can lose its last
    few hundred milliseconds, which the store notices when it reconnects (it then
    refuses to write, see the module docs). ``"full"`` waits for the server's WAL
    flush on every commit (group commit shares it): survives a server crash and power
    loss.

    ``lock=True`` (a node) holds the schema's node lock (shared: every node of a cluster
    on the same database and schema does) and, once it joins the cluster, its
    incarnation's lock (a second node of the same name gets
    :class:`~garrison.StoreLocked`). Tools open with
    ``lock=False``: they read freely, never create or migrate the schema, and their
    writes wake the node at once (a wakeup row and a notification in the same
    transaction).

    An unreachable server, bad credentials, a missing database or a bad URL raise
    :class:`~garrison.StoreError` at open, naming the server (``host:port/db``, never
    the password) and the reason. A connection lost later is retried with backoff for
    ``retry_for`` seconds, and so is a node's open on a read-only server (a standby
    during a failover; a role that may not write is refused at once).

    Use as a context manager or call :meth:`close`.
    """

    value_limit = _VALUE_LIMIT

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        lock: bool = True,
        synchronous: str = "normal",
        retry_for: float | str = 30.0,
    ) -> None:
        if not isinstance(synchronous, str) or synchronous.lower() not in _SYNCHRONOUS:
            raise ValueError(
                f"invalid synchronous mode {synchronous!r}: expected 'normal' "
                "(survives a killed node) or 'full' (also survives a server crash)"
            )
        self.synchronous = synchronous.lower()
        if schema is not None and not _schema_name_ok(schema):  # (an argument: not the URL)
            raise ValueError(f"schema={schema!r}: invalid schema name: {_SCHEMA_NAMES}")
        try:
            params, self.schema, path = _parse(url, schema)
        except ValueError as exc:
            raise StoreError(_display_raw(url), str(exc)) from None
        #: the server, database (and schema) for messages; never the password
        self.path: str | None = path
        self.retry_for = parse_duration(retry_for, what="retry_for")
        #: a tool's sessions' ``lock_timeout`` in seconds (``None``: a node's, which
        #: keep the server's)
        self.lock_wait: float | None = None
        self.locked = False
        self._owner = lock
        self._closed = False
        self._failed: StoreError | None = None
        #: why waits for the server end now (the node stopped and the server did not
        #: answer in time: :meth:`stopping`), or ``None``
        self._cut: str | None = None
        self._cut_now = threading.Event()
        self._retries_over = threading.Event()
        self._stop_watch: threading.Thread | None = None
        #: reads and writes begun (the stop's watch tells a wait that lasts from one
        #: that began since)
        self._reads_begun = 0
        self._writes_begun = 0
        self._writer_id = uuid.uuid4().hex
        self.fence_epoch: int | None = None
        self.fence_idle_ms = 0
        self.node_name: str | None = None
        #: the number of the last transaction the server confirmed
        self._acked = 0
        #: the number of the last transaction that set the writer's number (a bare
        #: step does not: ``PgWritePath._bare_step``)
        self._marked = 0
        self._s = _quote(self.schema)
        self._channel = _pg_schema.notify_channel(self.schema)
        params = {**_CONN_DEFAULTS, **params}
        params.setdefault("application_name", (
            f"garrison {'node' if lock else 'tool'} {socket.gethostname()}:{os.getpid()}"
        )[:63])
        self._params = params
        self._conninfo = make_conninfo(**params)
        self._stmts: dict[str, _Stmt] = {}
        self._update_stmts: dict[tuple[str, ...], _Stmt] = {}
        self._prepared: set[bytes] = set()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        #: the connection that prunes ended workflows (made at the first prune), and its
        #: lock
        self._pruner: psycopg.Connection[Any] | None = None
        self._prune_lock = threading.Lock()
        self._listener: Any = None
        #: a LISTEN session that did not answer was said (``_heard``)
        self._listener_said = False
        #: wakeup rows read whose delete failed: ``{id: (workflow_id, kind)}``, returned
        #: by the next ``take_wakeups`` (the delete may have committed)
        self._untaken: dict[int, tuple[str, str]] = {}
        #: the session that takes the wakeups (made at the first take), and its lock,
        #: held through a take (see take_wakeups)
        self._taker: psycopg.Connection[Any] | None = None
        self._take_lock = threading.Lock()
        #: wakeups taken in a worker thread, not yet handed to their caller (one
        #: cancelled meanwhile: the next ``wakeups`` returns them), and their lock
        self._late: list[WakeupRecord] = []
        self._late_lock = threading.Lock()
        #: the failures in a row to take the wakeups, said (``wakeups``)
        self._takes_failing = _Repeated(WAKEUPS_FAILING_SAID_EVERY)
        #: the highest schedule wakeup a cluster node took, and those it took within
        #: ``_SCHEDULE_SLACK`` ids below it (see take_wakeups)
        self._schedule_seen = 0
        self._schedule_taken: set[int] = set()
        self._writer: psycopg.Connection[Any] | None = None
        self._writer_session: tuple[int, Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        try:
            self._writer = self.retried(partial(self._connect_writer, first=True),
                                        refused=self._cannot_write)
            self._writer_session = self._session_of(self._writer)
            self._reader = self._connect(None)
        except BaseException:
            self._close_connections()
            raise
        if lock:
            # a batch is written in the trio thread when nothing else could run meanwhile,
            # else from a worker thread (``_write_batch_here``)
            self._group = GroupCommit(self._write_alone, self._write_batch_here,
                                      Strategy.INLINE)
            self._inline_group = GroupCommit(self._write_one, self._write_batch,
                                             Strategy.INLINE)
        else:  # a tool writes at once
            self._group = self._inline_group = GroupCommit(
                self._write_one, self._write_batch, Strategy.IMMEDIATE)
        self._stats = {
            "transactions": 0,
            "sync_writes": 0,
            "batches": 0,
            "batched_writes": 0,
            "largest_batch": 0,
            "failed_batches": 0,
        }

    # -- connecting ----------------------------------------------------------
    def _connect(self, what: str | None, *, by_key: bool = False,
                 within: float | None = None) -> psycopg.Connection[Any]:
        """A new connection; ``what`` names it in the error when it is not one the store
        opens with (``None``: at open, where a tool's user has no use for the store's
        own names of its connections).

        ``by_key``: every statement it runs again and again finds its rows by an index
        (the writer's; the cluster's rounds): its session plans with ``enable_seqscan``
        off. A plan kept for the session (a PL/pgSQL function's query; a statement
        psycopg prepared after five runs) that was made while the workflows table was
        small is a sequential scan, and it would read the whole table at every batch or
        round once the table has grown, until the server analyzes the table again.

        ``within``: the seconds the server has to take it (else the conninfo's
        ``connect_timeout``)."""
        conninfo = self._conninfo if within is None else make_conninfo(
            self._conninfo, connect_timeout=str(max(int(within), 1)))
        try:
            conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            which = "" if what is None else f" (its {what} connection)"
            raise StoreError(self.path, f"cannot connect{which}: {_connect_reason(exc)}"
                             ) from None
        try:
            conn.execute("SET standard_conforming_strings = on")
            conn.execute("SET synchronous_commit = " + _SYNCHRONOUS[self.synchronous])
            # each statement sees what committed before it, whatever the server's or
            # the role's default: an end's delivery to the monitors relies on it (see
            # Transaction.deliver_to_monitors), as the admission of a queue does
            conn.execute("SET default_transaction_isolation = 'read committed'")
            if not self._owner:  # (a node's own sessions wait as the server says)
                self.lock_wait = _tool_lock_wait(conn)
            elif conn.info.server_version >= _IDLE_SESSION_TIMEOUT_SINCE:
                conn.execute(_KEEP_IDLE_SESSION)
            if by_key:
                conn.execute("SET enable_seqscan = off")
                # a plan that must scan a table (a small one: ``nodes``) is priced so
                # high then that the server would compile it (JIT) at every run, which
                # takes tens of milliseconds, past a tight ``statement_timeout``
                conn.execute("SET jit = off")
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(self.path, f"cannot set up the connection: {_reason(exc)}") from None
        return conn

    def _connect_writer(self, *, first: bool) -> psycopg.Connection[Any]:
        """The writer's connection: the lock (a node), the schema (checked, or created
        and migrated by a node at open), the writers row. At open (``first``, in
        :meth:`retried`) a connection lost on the way is psycopg's error, which
        ``retried`` makes again (a server restart, ``pg_terminate_backend`` while the
        migration waits for another node's lock)."""
        conn = self._connect(None if first else "writes", by_key=True)
        try:
            if self._owner:
                # every node of the schema holds this lock shared while it runs: a tool
                # tells from it whether to ask a node or act itself (node_running)
                self._share_node_lock(conn)
                if self.fence_epoch is not None:  # a cluster node's incarnation
                    self._hold_epoch(conn, self.fence_epoch, take_over=not first)
                self.locked = True
            if first:
                self._open_schema(conn)
                if self._owner:  # rows of writers gone for a day (killed tools)
                    conn.execute(f"DELETE FROM {self._s}.writers WHERE updated < %s",
                                 (_time.time() - 86400,))
        except pg_errors.InsufficientPrivilege as exc:
            conn.close()
            self.locked = False
            raise self._cannot_write(exc) from None
        except BaseException:  # (a read-only server, a failover: tried again, see retried)
            conn.close()
            self.locked = False
            raise
        self._prepared = set()
        return conn

    def _cannot_write(self, exc: BaseException) -> BaseException:
        """The error of a node that may not write its schema at open: a role without
        the right to (at once), or a server read-only for longer than ``retry_for``
        (any other refusal: a write's, :meth:`_refusal`)."""
        if not isinstance(exc, (pg_errors.InsufficientPrivilege,
                                pg_errors.ReadOnlySqlTransaction)):
            return self._refusal(exc)
        waited = (f"; tried again for {self.retry_for:g}s"
                  if isinstance(exc, pg_errors.ReadOnlySqlTransaction) and self.retry_for > 0
                  else "")
        return StoreError(self.path, f"cannot write to schema {self.schema!r}: "
                          f"{_reason(exc)} (a node needs a role that may write its "
                          f"tables, on a server that is not read-only{waited})")

    def _share_node_lock(self, conn: psycopg.Connection[Any]) -> None:
        """Hold the schema's node lock shared. A tool takes it alone for a moment (to
        tell whether a node runs); held alone for longer it is a node of a garrison from
        before clusters, which runs the schema by itself: :class:`StoreLocked`, not a
        wait without end."""
        key = _pg_schema.node_lock_key(self.schema)
        deadline = _time.monotonic() + NODE_LOCK_WAIT
        while True:
            got = conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (key,)).fetchone()
            if got and got[0]:
                return
            if _time.monotonic() >= deadline:
                raise StoreLocked(self.path or "", held=(
                    f"another session holds (or waits to hold) schema {self.schema!r}'s "
                    f"node lock by itself for over {NODE_LOCK_WAIT:g}s: a node of a "
                    "garrison from before clusters, which runs the schema alone"),
                    hint="stop that node first (then upgrade it: nodes of this version "
                    "run side by side)")
            _time.sleep(0.05)

    def _open_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Check the schema (a node also creates and migrates it); every refusal of the
        server is a :class:`~garrison.StoreError` naming the schema and what to do."""
        schema = self.schema
        try:
            version = _pg_schema.version_of(conn, schema, self.path)
        except _TRANSIENT:  # (tried again: see retried)
            raise
        except pg_errors.InsufficientPrivilege as exc:
            raise StoreError(self.path, f"cannot read schema {schema!r}: {_reason(exc)} "
                             f"(the role needs USAGE on the schema and access to its "
                             "tables)") from None
        except psycopg.Error as exc:
            if conn.closed:  # (lost: made again, see retried)
                raise
            raise StoreError(self.path, f"cannot read schema {schema!r}: {_reason(exc)}"
                             ) from None
        if not self._owner and version == 0:
            raise StoreError(self.path, "no garrison store here (no schema "
                             f"{schema!r} with garrison's tables): start a node on it first")
        try:
            _pg_schema.migrate(conn, schema, allow_migrate=self._owner, where=self.path)
        except _TRANSIENT:  # (rolled back, tried again: see retried)
            raise
        except pg_errors.InsufficientPrivilege as exc:
            if version == 0:
                raise StoreError(self.path, f"cannot create schema {schema!r}: "
                                 f"{_reason(exc)}") from None
            raise StoreError(self.path, f"cannot migrate schema {schema!r} from version "
                             f"{version} to {_pg_schema.SCHEMA_VERSION}: {_reason(exc)} "
                             f"{_migrate_hint(conn, schema)}") from None
        except (pg_errors.DuplicateTable, pg_errors.DuplicateFunction,
                pg_errors.DuplicateObject) as exc:
            raise StoreError(self.path, f"schema {schema!r} already holds objects that are "
                             f"not garrison's ({_reason(exc)}): give the store a schema of "
                             "its own (schema= or ?schema=NAME)") from None
        except psycopg.Error as exc:
            if conn.closed:  # (lost: made again, see retried)
                raise
            raise StoreError(self.path, f"cannot set up schema {schema!r}: {_reason(exc)}"
                             ) from None

    def _hold_epoch(self, conn: psycopg.Connection[Any], epoch: int, *,
                    take_over: bool = False) -> None:
        """Hold the advisory lock of cluster incarnation ``epoch`` on the writer's
        connection: while it is held the node is alive (``_pg_cluster.py``).

        ``take_over`` (the writer reconnecting): a session holding it can only be this
        writer's own previous one, which the server has not seen go yet (a half-open
        connection lingers until the server's TCP keepalive, two hours by default). It
        is terminated, which also settles its transaction in flight, and the lock taken
        once it is gone; only then is the writer's number read (``_reconnect_writer``)."""
        key = (_pg_cluster.epoch_lock_class(self.schema), epoch)
        take = "SELECT pg_try_advisory_lock(%s, %s)"
        got = conn.execute(take, key).fetchone()
        if (not got or not got[0]) and take_over:
            try:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                    "'advisory' AND granted AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database()) AND classid = %s::bigint::oid "
                    "AND objid = %s::oid AND objsubid = 2 AND pid <> pg_backend_pid()", key)
                deadline = _time.monotonic() + 5.0
                while (not got or not got[0]) and _time.monotonic() < deadline:
                    _time.sleep(0.02)
                    got = conn.execute(take, key).fetchone()
            except psycopg.Error:
                got = None  # (not allowed to end it: the lock stays held)
        if not got or not got[0]:
            raise StoreLocked(self.path or "", held=f"cluster incarnation {epoch}")
        if self.fence_idle_ms:  # a transaction left open (a paused node) ends soon
            conn.execute(f"SET idle_in_transaction_session_timeout = {int(self.fence_idle_ms)}")

    def set_fence(self, epoch: int | None, name: str | None, idle_ms: int = 0) -> None:
        """Join the writer to cluster incarnation ``epoch`` (``None``: leave): from now
        on every write for a workflow is fenced by it (see ``_pg_write.py``)."""
        with self._write_lock:
            conn = self._writer
            old = self.fence_epoch
            self.fence_idle_ms = idle_ms
            if conn is not None and not conn.closed:
                try:
                    if old is not None:
                        conn.execute("SELECT pg_advisory_unlock(%s, %s)",
                                     (_pg_cluster.epoch_lock_class(self.schema), old))
                    if epoch is not None:
                        self._hold_epoch(conn, epoch)
                except psycopg.Error as exc:
                    if not conn.closed:
                        raise StoreError(self.path, f"cannot join the cluster: "
                                         f"{_reason(exc)}") from None
                    # lost (a server restart) with the locks it held: as one found
                    # closed, the writer made again at the next write holds ``epoch``
            self.fence_epoch = epoch
            self.node_name = name

    # -- writing: the store API ------------------------------------------------------
    def write(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` now, in the calling thread, as one transaction; returns each
        operation's result, or raises the first error (nothing of ``tx`` committed).
        Waits while a group commit is being written."""
        if not tx.ops:
            return []
        self._check_usable()
        return self._write_one(self._plan(tx))

    def write_each(self, txs: Sequence[Transaction], *, unless_node: bool = False
                   ) -> list[list[Any] | Exception] | None:
        """See :meth:`Store.write_each`: the transactions are sent as one (a group
        commit's batch, with its SAVEPOINT per transaction when one fails); a tool's
        each with its wakeup rows and notification. ``unless_node``: as
        :meth:`write_unless_node`."""
        if unless_node and self.node_running():
            return None
        self._check_usable()
        outcomes: list[list[Any] | Exception] = [[] for _ in txs]
        plans: list[tuple[int, _Plan]] = []
        for n, tx in enumerate(txs):
            if not tx.ops:
                continue
            try:
                plans.append((n, self._plan(tx)))
            except ValueError as exc:  # (a value PostgreSQL cannot hold: nothing sent)
                outcomes[n] = exc
        if plans:
            self._commit_plans([plan for _n, plan in plans])
            self._stats["sync_writes"] += 1
        for n, plan in plans:
            if plan.error is not None:
                error = plan.error
                outcomes[n] = error if isinstance(error, Exception) else RuntimeError(error)
            else:
                assert plan.results is not None
                outcomes[n] = plan.results
        return outcomes

    def _write_one(self, plan: _Plan) -> list[Any]:
        """Commit ``plan`` in this thread (waiting for the lock and the server)."""
        self._commit_plans([plan])
        return self._unwrap_one(plan)

    def _unwrap_one(self, plan: _Plan) -> list[Any]:
        results = _unwrap(plan)
        self._stats["sync_writes"] += 1
        return results

    def _write_alone(self, plan: _Plan) -> list[Any]:
        """A commit nobody could share, in the trio thread: :class:`Busy` if another
        write holds the connection (nothing sent), :class:`HandedOver` if the server
        took too long (``_drive_here``: it goes on in a worker thread)."""
        write = self._commit([plan], here=True)
        wait = self._drive_here(write)
        if wait is not _DONE:
            raise hand_over(lambda: self._finish_alone(plan, write, wait))
        return self._unwrap_one(plan)

    def _finish_alone(self, plan: _Plan, write: _Gen[None], wait: Any) -> list[Any]:
        self._drive(write, wait)  # (a worker thread)
        return self._unwrap_one(plan)

    def _write_batch_here(self, batch: list[CommitRequest]) -> None:
        """The node's batches. In the trio thread (the group commit's first try): the
        batch is written there only if no other task could run while the server answers
        (the thread hop there and back would cost more than it frees); otherwise, or if
        another write holds the connection, :class:`Busy` (nothing written) makes the
        group commit write it from a worker thread. A write the server is slow to answer
        (``_drive_here``), or whose connection dropped, goes on in a worker thread
        started at once (:class:`HandedOver`), which reads its answers (or reconnects and
        settles by the writer's number whether it committed)."""
        if not trio.lowlevel.in_trio_run():  # the worker thread
            self._write_batch(batch)
            return
        if runnable_tasks():
            raise Busy("other tasks can run: write from a worker thread")
        plans: list[_Plan] = [request.tx for request in batch]
        write = self._commit(plans, here=True)
        try:
            wait = self._drive_here(write)
        except Busy:
            raise
        except Exception as exc:
            fail_all(batch, exc)
            return
        except BaseException as exc:  # (a KeyboardInterrupt: it goes on, once)
            fail_all(batch, interrupted(self.path, exc))
            raise
        if wait is not _DONE:
            raise hand_over(lambda: self._finish_batch(batch, plans, write, wait))
        self._batched(batch, plans)

    def _finish_batch(self, batch: list[CommitRequest], plans: list[_Plan],
                      write: _Gen[None], wait: Any = _DONE) -> None:
        """Drive ``write`` (the batch's, from ``wait``: where ``_drive_here`` left it,
        if it did) to its end in this thread and give each request its outcome."""
        try:
            self._drive(write, wait)
        except Exception as exc:
            fail_all(batch, exc)
            return
        except BaseException as exc:  # (a KeyboardInterrupt: it goes on, once)
            fail_all(batch, interrupted(self.path, exc))
            raise
        self._batched(batch, plans)

    def _write_batch(self, batch: list[CommitRequest]) -> None:
        """One transaction for the whole batch (a SAVEPOINT per caller on failure), in
        this thread."""
        plans: list[_Plan] = [request.tx for request in batch]
        self._finish_batch(batch, plans, self._commit(plans, here=False))

    def _batched(self, batch: list[CommitRequest], plans: list[_Plan]) -> None:
        for request, plan in zip(batch, plans, strict=True):
            request.results, request.error = plan.results, plan.error
        stats = self._stats
        stats["batches"] += 1
        stats["batched_writes"] += len(batch)
        stats["largest_batch"] = max(stats["largest_batch"], len(batch))

    async def commit(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` by group commit; returns each operation's result once it is
        committed. A batch is written from a worker thread while other tasks run, in
        the trio thread when none could: there past ``TRIO_THREAD_WAIT`` without the
        server's answer it goes on in a worker thread, which this call waits for,
        shielded (under a trio ``MockClock``, always in the trio thread, so virtual
        time cannot jump while a commit is in flight)."""
        if not tx.ops:
            return []
        self._check_usable()
        plan = self._plan(tx)
        group = self._group
        if _virtual_clock():
            group = self._inline_group
        return await group.commit(plan)

    @property
    def owner(self) -> bool:
        """True unless opened with ``lock=False`` (a tool writing for the node)."""
        return self._owner

    def node_running(self) -> bool:
        """Whether a node (of a cluster or not) runs this schema's workflows now: every
        node holds the schema's node lock shared on its writer connection, so taking
        it exclusively fails while one does (then it is let go at once)."""
        if self._owner:
            return True
        key = _pg_schema.node_lock_key(self.schema)
        rows = self._query("SELECT pg_try_advisory_lock(%s)", (key,))
        if not rows or not rows[0][0]:
            return True
        self._query("SELECT pg_advisory_unlock(%s)", (key,))
        return False

    def write_unless_node(self, tx: Transaction) -> bool:
        """Commit ``tx`` unless a node runs the schema (see :meth:`Store.write_unless_node`;
        a node that starts meanwhile claims what it runs in the store first: the write's
        own conditions, ``unclaimed="by_any"``, see that claim)."""
        if self.node_running():
            return False
        self.write(tx)
        return True

    @property
    def cut(self) -> str | None:
        """Why the node's stop cut this store's waits for the server short (see
        :meth:`stopping`), or ``None``."""
        return self._cut

    @property
    def failed(self) -> StoreError | None:
        """The :class:`~garrison.StoreError` with which the store gave up writing for
        good (see the module docs), or ``None`` while it writes."""
        return self._failed

    @property
    def committing(self) -> bool:
        """True while a group commit is forming or being written."""
        return self._group.busy or self._inline_group.busy

    @property
    def schema_version(self) -> int:
        """The schema version this store is at."""
        return _pg_schema.SCHEMA_VERSION

    def schema_migrated(self, found: int) -> StoreError:
        """A node of a newer garrison migrated the schema to version ``found`` while this
        store was open: it writes nothing more from now on (rows in the format of the
        version it knows could break the newer nodes); the error it raises from now on."""
        return self.stop_writing(
            f"schema {self.schema!r} was migrated to schema version {found} by a newer "
            f"garrison while this node ran; this node knows schema version "
            f"{_pg_schema.SCHEMA_VERSION}, so its store writes nothing more (upgrade "
            "garrison on this node)")

    def stop_writing(self, reason: str) -> StoreError:
        """The node leaves its cluster for good (``reason`` says why): the store writes
        nothing more from now on, as when it gives up (:attr:`failed`); the error every
        write raises from now on (the first reason given, if it stopped already)."""
        if self._failed is None:
            self._failed = StoreError(self.path, reason)
        return self._failed

    @contextlib.contextmanager
    def stopping(self, within: float) -> Iterator[None]:
        """The node stops (its workflows park, it leaves the cluster, it closes the
        store) in the block: a wait for the server in it lasts at most about ``within``
        seconds from the block's start. A server that answers is not hurried (a wait
        past that is cut only if the server takes no new connection: a lock another
        session holds keeps a write waiting), but a write it refuses for now (a
        read-only database) is not tried again past that time (its
        :class:`~garrison.StoreError` says it was not committed); a wait on a server
        down, or stalled with the connection open, no longer holds the stop for
        ``retry_for`` or for ever: the store's connections are cut, what waited ends
        with a :class:`~garrison.StoreError` (a write's outcome unknown: the journal
        settles it on the next node that opens the store) and the store writes nothing
        more. Nested blocks are one."""
        if self._stop_watch is not None or self._closed:
            yield
            return
        over = threading.Event()
        watch = threading.Thread(target=self._watch_stop, args=(within, over),
                                 name="garrison-store-stop", daemon=True)
        self._stop_watch = watch
        watch.start()
        try:
            yield
        finally:
            over.set()
            watch.join()
            self._stop_watch = None
            self._retries_over.clear()

    def _watch_stop(self, within: float, over: threading.Event) -> None:
        """(:meth:`stopping`'s thread) Past ``within``, cut the store off once a read or
        a write is seen waiting at two looks :data:`CUT_CHECK` apart (the same one:
        none began between them)."""
        if over.wait(within):
            return
        self._retries_over.set()  # (a refusal for now is not waited out either)
        seen: tuple[int | None, int | None] = (None, None)
        while True:  # (``close`` itself may wait for the server: watched too)
            now = (self._writes_begun if self._write_lock.locked() else None,
                   self._reads_begun if self._read_lock.locked() else None)
            if any(n is not None and n == was for n, was in zip(now, seen, strict=True)):
                if not self._server_answers():
                    self._cut_off(within)
                    return
                # (it answers: the wait is the server's own, a lock another session
                # holds, say: not hurried; looked at again a while later)
                now = (None, None)
                if over.wait(PROBE_EVERY):
                    return
            seen = now
            if over.wait(CUT_CHECK):
                return

    def _server_answers(self) -> bool:
        """True if the server takes a new connection within :data:`PROBE_WAIT` (one
        that is down or stalled does not)."""
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True,
                                   connect_timeout=max(int(PROBE_WAIT), 1))
        except psycopg.Error:
            return False
        with contextlib.suppress(psycopg.Error):
            conn.close()
        return True

    def _cut_off(self, within: float) -> None:
        """:meth:`stopping`'s time is up with a wait for the server under way: every
        wait ends now, and the store writes nothing more."""
        self._cut = f"the server did not answer within {within:g}s of the node's stop"
        self._cut_now.set()  # (a pause before a retry ends now)
        if self._failed is None:
            self._failed = StoreError(self.path, f"{self._cut}; this store writes nothing "
                                      "more")
        for conn in (self._writer, self._reader, self._taker):
            cut_connection(conn)

    def error_text(self, exc: BaseException) -> str:
        """``exc`` (a psycopg error, an ``OSError``, a ``StoreError``) in one line that
        names this store: for a log line (psycopg's text repeats the server's address
        and spans lines)."""
        if isinstance(exc, StoreError):
            return str(exc)
        text = _reason(exc) if isinstance(exc, psycopg.Error) else f"{type(exc).__name__}: {exc}"
        return f"store {self.path!r}: {text}"

    def retried(self, fn: Callable[[], T], *,
                refused: Callable[[BaseException], BaseException] | None = None) -> T:
        """``fn()``: statements of the node's own outside the write path (opening the
        store, joining its cluster), which the server may refuse as it may a write: one
        refused for now (cancelled by a ``statement_timeout`` or ``lock_timeout``, a
        deadlock, a read-only database during a failover) is tried again, ``fn`` from its
        start on a new session (it drops the connection its error aborted), with
        growing pauses for ``retry_for`` seconds (not past the node's stop or the
        store's close); that one past them, or any other refusal, is the
        :class:`~garrison.StoreError` a write's caller gets (:meth:`_refusal`), never
        psycopg's own exception. A connection ``fn`` lost (a server restart,
        ``pg_terminate_backend``; a join may wait long for another node's) is made again
        by ``fn`` from its start, for ``retry_for`` seconds likewise, once the server
        takes a connection again (waited for); until one was lost, a connection refused
        fails at once. ``refused``: the error of a refusal for now past ``retry_for``
        (default: :meth:`_refusal`'s). A wait of over :data:`OPEN_WAIT_WARNING` seconds
        is said once (a warning naming what it waits for): nothing else is said
        meanwhile. Run by ``trio.to_thread.run_sync`` (a node's start), a cancel of its
        task ends a pause at once with ``trio.Cancelled`` (the attempt before it left
        nothing: its session is gone)."""
        began = _time.monotonic()
        said = False

        def say(waiting: str) -> None:  # (once, as a wait goes past OPEN_WAIT_WARNING)
            nonlocal said
            if not said and _time.monotonic() - began >= OPEN_WAIT_WARNING:
                said = True
                log.warning("store %r: %s, for up to %gs", self.path, waiting,
                            self.retry_for)

        busy_until: float | None = None
        pause = 0.05
        lost: str | None = None
        lost_until = 0.0
        delay = 0.05
        while True:
            try:
                if lost is not None:  # (a refusal here is waited out; fn's is not)
                    self._connect(None).close()
            except StoreError as exc:
                last = exc.reason_at(self.path)
            else:
                try:
                    return fn()
                except _TRANSIENT as exc:
                    if busy_until is None:
                        busy_until = _time.monotonic() + self.retry_for
                    left = busy_until - _time.monotonic()
                    if left <= 0 or self._closed or self._cut is not None \
                            or self._retries_over.is_set():
                        raise (refused or self._refusal)(exc) from None
                    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
                        say(f"the server is read-only ({_reason(exc)}: a standby, or a "
                            "database under maintenance): waiting for it to take writes")
                    elif isinstance(exc, pg_errors.LockNotAvailable):
                        say(f"{lock_wait_reason(exc, None)}: trying again")
                    else:
                        say(f"the server refuses statements for now ({_reason(exc)}): "
                            "trying them again")
                    self._pause(min(pause, left), self._retries_over, _check_cancelled)
                    pause = min(pause * 2, 1.0)
                    continue
                except psycopg.Error as exc:
                    if not _ended(exc):
                        raise self._refusal(exc) from None
                    last = _reason(exc)
                if lost is None:  # (made again at once: a session ended by hand)
                    lost = last
                    lost_until = _time.monotonic() + self.retry_for
                    continue
            left = lost_until - _time.monotonic()
            if left <= 0 or self._closed or self._cut is not None \
                    or self._retries_over.is_set():
                raise StoreError(self.path, f"the connection was lost ({lost}) and could not "
                                 f"be made again within {self.retry_for:g}s: {last}")
            say(f"the connection was lost ({lost}): waiting for the server")
            self._pause(min(delay, left), self._retries_over, _check_cancelled)
            delay = min(delay * 2, 2.0)

    # -- wakeups -----------------------------------------------------------------------
    def translate_error(self, exc: BaseException) -> StoreError | None:
        """The :class:`~garrison.StoreError` a failed write means, naming the server;
        ``None`` for an error of the written operations themselves."""
        if isinstance(exc, StoreError):
            return exc
        refused = self._refusal(exc)  # (as a write's caller gets it)
        return refused if isinstance(refused, StoreError) else None

    def take_wakeups(self) -> list[WakeupRecord]:
        """Remove and return the wakeups left by tools, oldest first.

        Read, then deleted by id: not one ``DELETE ... RETURNING``, whose answer, lost
        after it committed, would leave the rows gone and their workflows never woken
        (``_query`` runs a statement again on a new connection, and the second run
        finds nothing). Each of the two may run twice; rows whose delete failed (its
        outcome unknown) are returned by the next call, with what it reads.

        On a session of its own (made at the first call), not the reader's: a node takes
        them in a worker thread (:meth:`wakeups`), and the reader's lock held by a take
        that waits for the server (a lock another session holds on the wakeups table)
        would keep every read of the node's thread waiting with it."""
        with self._take_lock:
            try:
                self._check_open()
                return self._take_wakeups()
            finally:
                if self._closed:  # (meanwhile: its session is this thread's to close)
                    self._close_taker()

    def _close_taker(self) -> None:
        """(the take's lock held) Close the take's session."""
        taker, self._taker = self._taker, None
        if taker is not None:
            with contextlib.suppress(Exception):
                taker.close()

    def _take_rows(self, query: Any, params: Sequence[Any] = ()) -> list[Any]:
        return self._rows_on("_taker", "wakeups", query, params, True)

    def _take_wakeups(self) -> list[WakeupRecord]:
        if self.fence_epoch is not None:  # a cluster node: the wakeups of its workflows
            rows = self._take_rows(
                f"SELECT w.id, w.workflow_id, w.kind FROM {self._s}.wakeups w "
                f"JOIN {self._s}.workflows f ON f.workflow_id = w.workflow_id "
                "WHERE f.owner_epoch = %s AND w.kind <> 'schedule'", (self.fence_epoch,))
            # a schedule's: every node reads it again (each node runs every schedule), so
            # none deletes them (cleanup_wakeups drops them after a day). Ids are handed
            # out as rows are inserted, not as they commit: one committed late has an id
            # below some already read, so each look goes back _SCHEDULE_SLACK ids and
            # skips those it took (marked taken once this call returns them)
            # (below the highest taken, only the last minutes': a commit that late is
            # no concern, and a node with thousands of changes of the day reads few)
            floor = self._schedule_seen - _SCHEDULE_SLACK
            news = self._take_rows(
                f"SELECT id, workflow_id FROM {self._s}.wakeups WHERE kind = 'schedule' "
                "AND id > %s AND (id > %s OR created > %s) ORDER BY id",
                (floor, self._schedule_seen, _time.time() - _SCHEDULE_LATE))
            done = self._schedule_taken
            news = [(int(i), sid) for i, sid in news if int(i) not in done]
            scheduled = [WakeupRecord(sid, "schedule") for _id, sid in news]
        else:
            rows = self._take_rows(f"SELECT id, workflow_id, kind FROM {self._s}.wakeups")
            news, scheduled = [], []
        taken = self._untaken
        taken.update((int(row_id), (wid, kind)) for row_id, wid, kind in rows)
        if taken:
            self._take_rows(f"DELETE FROM {self._s}.wakeups WHERE id = ANY(%s)", (list(taken),))
            self._untaken = {}
        if news:  # (only now: a failed delete above returns them again next time)
            self._schedule_taken.update(i for i, _sid in news)
            self._schedule_seen = max(self._schedule_seen, news[-1][0])
            floor = self._schedule_seen - _SCHEDULE_SLACK
            self._schedule_taken = {i for i in self._schedule_taken if i > floor}
        return scheduled + [WakeupRecord(wid, kind)
                            for _id, (wid, kind) in sorted(taken.items())]

    async def wakeups(self) -> list[WakeupRecord]:
        """Wait until a tool (a store opened with ``lock=False``) or another process
        wrote for this store's workflows, then take and return those notices, oldest
        first. Woken by ``LISTEN``/``NOTIFY`` (no polling); a lost listener connection
        is made again (and the table read, so nothing written meanwhile is missed). A
        tool's own store waits forever."""
        if not self._owner:
            await trio.sleep_forever()
        delay = 0.05
        while True:
            if self._closed:  # nothing more can be written for this node
                await trio.sleep_forever()
            listening = False
            try:
                listener = await self._listen()
                if self._closed:  # closed while the listener connected
                    self._drop_listener()
                    await trio.sleep_forever()
                found = await self._take_meanwhile()
                self._say_takes_work()
                if found:
                    return found
                listening = True
                while not await self._heard(listener):
                    pass
                delay = 0.05
            except (psycopg.Error, StoreError, trio.ClosedResourceError, OSError) as exc:
                # the listener's connection broke, or the server is away (take_wakeups
                # gave up): listen again, then read the table (nothing is missed)
                if self._closed:
                    await trio.sleep_forever()
                if not listening:  # (``_heard`` says its own)
                    self._say_takes_fail(exc)
                self._drop_listener()
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _say_takes_fail(self, exc: BaseException) -> None:
        """(:meth:`wakeups`') A take of the wakeups (or the LISTEN session made before
        it) failed with ``exc``: a warning at the first failure in a row, at one whose
        error changed, and once each :data:`WAKEUPS_FAILING_SAID_EVERY` (tools' writes
        wake none of the node's workflows meanwhile); the others at DEBUG."""
        if isinstance(exc, StoreError):
            reason = exc.reason_at(self.path)
        elif isinstance(exc, psycopg.Error):
            reason = _reason(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        if self._takes_failing.failed(reason, _time.monotonic()):
            log.warning("store %r: cannot take the wakeups that tools leave (a signal, a "
                        "cancel, a start of theirs wakes none of this node's workflows "
                        "meanwhile): %s; tried again every 2s (said again each %gs while "
                        "it lasts)", self.path, reason, WAKEUPS_FAILING_SAID_EVERY)
        else:
            log.debug("store %r: cannot take the wakeups that tools leave: %s", self.path,
                      reason)

    def _say_takes_work(self) -> None:
        """(:meth:`wakeups`') A take of the wakeups worked: said if those before it
        failed."""
        ended = self._takes_failing.ended(_time.monotonic())
        if ended is not None:
            tries, lasted = ended
            log.info("store %r: the wakeups that tools leave are taken again, after %d "
                     "failed takes in %.1fs", self.path, tries, lasted)

    async def _take_meanwhile(self) -> list[WakeupRecord]:
        """:meth:`take_wakeups` in a worker thread (in the node's under a virtual clock,
        see ``_blocking``): the node runs while the server answers. A take that waited
        :data:`READ_WAIT_WARNING` for it is said (a warning naming the take's session on
        the server), and, once answered, after how long. A caller cancelled meanwhile
        (the node stops) does not wait for it: what it takes is returned by the next
        call (the store's close cuts its session)."""
        if _virtual_clock():
            return self.take_wakeups()

        def take() -> None:
            found = self.take_wakeups()
            with self._late_lock:  # (its caller's, or the next call's)
                self._late.extend(found)

        began = _time.monotonic()
        ended = False  # (answered, or failed: not given up by a cancelled caller)
        # (its error raised past the nursery: out of it, trio wraps it in an
        # ExceptionGroup, which neither ``wakeups`` nor its caller catches)
        failed: Exception | None = None
        async with trio.open_nursery() as nursery:
            said = trio.Event()
            nursery.start_soon(self._say_take_waits, said)
            try:
                await trio.to_thread.run_sync(take, abandon_on_cancel=True)
                ended = True
            except Exception as exc:
                ended = True
                failed = exc
            finally:
                nursery.cancel_scope.cancel()
                if said.is_set() and ended:
                    log.info("store %r: the take of the wakeups that waited for the server "
                             "ended after %.1fs", self.path, _time.monotonic() - began)
        if failed is not None:
            raise failed
        with self._late_lock:
            found, self._late = self._late, []
        return found

    async def _say_take_waits(self, said: trio.Event) -> None:
        """(:meth:`_take_meanwhile`'s) Say, past :data:`READ_WAIT_WARNING`, that a take
        of the wakeups waits for the server, naming its session there (or that it has
        none yet: the server refused it, or did not answer); not while the takes fail
        (the failure was said: this one, tried again, fails the same way, most likely)."""
        await trio.sleep(READ_WAIT_WARNING)
        if self._takes_failing.failing:
            return
        taker = self._taker
        pid: int | None = None
        if taker is not None:
            # (the take's thread may close it meanwhile: its pid is then an error, which
            # this task, in wakeups()'s nursery, must not raise)
            with contextlib.suppress(psycopg.Error):
                pid = None if taker.closed else taker.info.backend_pid
        said.set()
        if pid is None:  # (``_rows_on`` makes it again)
            waits = ("a session of its own on the server (refused, or not answered: it is "
                     f"made again for retry_for, {self.retry_for:g}s)")
        else:
            waits = (f"the server's answer (its session, pid {pid} on the server, waits for "
                     "a lock another session holds, see pg_locks, or its server process "
                     "does not run)")
        log.warning(
            "store %r: taking the wakeups that tools left has waited %gs for %s; the node "
            "runs meanwhile, and tools' writes wake its workflows once it is answered, "
            "nothing is lost", self.path, READ_WAIT_WARNING, waits)

    async def _heard(self, listener: Any) -> bool:
        """Wait for a notification on ``listener``: ``True`` once one came; ``False``
        after :data:`LISTEN_CHECK` of silence if the session answers a probe (``True``
        if a notification came as it answered); a
        :class:`~garrison.StoreError` if it does not within :data:`PROBE_WAIT` (said
        once until it answers again: the caller listens on a new session). Under a
        virtual clock it waits for the notification alone."""
        heard = False
        virtual = _virtual_clock()
        async for _note in listener.notifies(stop_after=1,
                                             timeout=None if virtual else LISTEN_CHECK):
            heard = True
        if heard or virtual:
            self._listener_said = False
            return True
        pid = listener.info.backend_pid  # (a probe cut off closes the connection)
        # one that comes as the session answers, outside ``notifies()``: an older
        # psycopg (3.2.3, its issue 962) hands it to the handlers alone, else drops it
        noted: list[Any] = []
        note = noted.append
        listener.add_notify_handler(note)
        try:
            with trio.move_on_after(PROBE_WAIT):
                await listener.execute("SELECT 1")
                self._listener_said = False
                return bool(noted)
        finally:
            listener.remove_notify_handler(note)
        error = StoreError(self.path, f"its LISTEN session (pid {pid} on the server) did "
                           f"not answer within {PROBE_WAIT:g}s")
        if not self._listener_said:
            self._listener_said = True
            log.warning("%s: listening on a new session (a tool's writes wake this node's "
                        "workflows through it)", error)
        raise error

    async def _listen(self) -> Any:
        if self._listener is not None and not self._listener.closed:
            return self._listener
        from ._pg_trio import TrioConnection

        params = dict(self._params)
        host = params.get("host", "")
        if host and "," not in host and not host.startswith("/") and "hostaddr" not in params:
            try:  # libpq would resolve the name with a blocking call
                infos = await trio.socket.getaddrinfo(host, params.get("port") or 5432,
                                                      type=trio.socket.SOCK_STREAM)
                params["hostaddr"] = str(infos[0][4][0])
            except OSError:
                pass
        conninfo = make_conninfo(**params)
        if _virtual_clock():
            # virtual time would run out the connect timeout while the server answers
            pgconn = pq.PGconn.connect(conninfo.encode())
            if pgconn.status != pq.ConnStatus.OK:
                message = pgconn.get_error_message()
                pgconn.finish()
                raise psycopg.OperationalError(message)
            conn = TrioConnection(pgconn)
            await conn.set_autocommit(True)
        else:
            conn = await TrioConnection.connect_trio(conninfo, autocommit=True,
                                                     timeout=float(params["connect_timeout"]))
        try:
            with trio.CancelScope(shield=True):
                if conn.info.server_version >= _IDLE_SESSION_TIMEOUT_SINCE:
                    await conn.execute(_KEEP_IDLE_SESSION)
                await conn.execute("LISTEN " + _quote(self._channel))
        except BaseException:
            conn.pgconn.finish()
            raise
        self._listener = conn
        return conn

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(Exception):
            fd = listener.pgconn.socket
            with contextlib.suppress(RuntimeError):
                trio.lowlevel.notify_closing(fd)  # wakes a task waiting on it
        listener.pgconn.finish()

    # -- reading ---------------------------------------------------------------------
    def _query(self, query: Any, params: Sequence[Any] = (), *, again: bool = True
               ) -> list[Any]:
        """Rows of ``query`` on the reader connection (reconnecting on a lost
        connection, and trying again after a transient refusal, a statement timeout
        under lock contention say, for ``retry_for`` seconds; with ``again=False``
        such a refusal raises :class:`~garrison.persistence.Busy` at once)."""
        if no_match(params, nul=True):  # PostgreSQL text cannot hold it: no row matches
            return []
        with self._read_lock:
            self._check_open()
            self._reads_begun += 1
            return self._rows_on("_reader", "reads", query, params, again)

    def _rows_on(self, slot: str, what: str, query: Any, params: Sequence[Any],
                 again: bool) -> list[Any]:
        """:meth:`_query` on the connection in the attribute ``slot`` (the caller holds
        its lock), made again as the connection for ``what`` once lost; not once the
        store was closed meanwhile (a :class:`~garrison.StoreError`)."""
        deadline: float | None = None
        delay = 0.05
        busy_until: float | None = None
        pause = 0.05
        while True:
            conn = getattr(self, slot)
            try:
                if conn is None or conn.closed:
                    raise psycopg.OperationalError("not connected")
                cur = conn.execute(query, params)
                return cur.fetchall() if cur.description is not None else []
            except _TRANSIENT as exc:
                if not again:
                    raise Busy(_reason(exc)) from None
                if self._cut is not None:  # (the node stops: no waiting for the server)
                    raise StoreError(self.path, f"{self._cut}: {_reason(exc)}") from None
                if busy_until is None:
                    busy_until = _time.monotonic() + self.retry_for
                left = busy_until - _time.monotonic()
                if left <= 0:  # (a last try at the deadline itself)
                    raise StoreError(self.path, self.waited_out(exc)) from None
                self._pause(min(pause, left))
                pause = min(pause * 2, 1.0)
            except psycopg.OperationalError as exc:
                if conn is not None and not conn.closed and not conn.broken:
                    raise StoreError(self.path, _reason(exc)) from None
                if self._cut is not None:
                    raise StoreError(self.path, f"{self._cut}: {_reason(exc)}") from None
                if self._closed:
                    raise StoreError(self.path, "the store was closed as a read "
                                     f"waited for the server: {_reason(exc)}") from None
                if deadline is None:
                    deadline = _time.monotonic() + self.retry_for
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                setattr(self, slot, None)
                try:
                    made = self._connect(what)
                except StoreError as failed:  # (not ``again``: the argument)
                    left = deadline - _time.monotonic()
                    if left <= 0:  # (a last try at the deadline itself)
                        because = failed.reason_at(self.path)
                        raise StoreError(
                            self.path, f"the connection was lost and could not be made "
                            f"again within {self.retry_for:g}s: {because}") from None
                else:
                    if self._closed:  # (meanwhile: a take's, in a worker thread)
                        made.close()
                        raise StoreError(self.path, "the store was closed as a read waited "
                                         f"for the server: {_reason(exc)}") from None
                    setattr(self, slot, made)
                    continue
                self._pause(min(delay, left))
                delay = min(delay * 2, 2.0)
            except psycopg.Error as exc:
                raise StoreError(self.path, _reason(exc)) from None

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow's row, or ``None``."""
        rows = self._query(
            f"SELECT {WorkflowRecord.COLUMNS} FROM {self._s}.workflows WHERE workflow_id = %s",
            (workflow_id,))
        return WorkflowRecord.from_row(rows[0]) if rows else None

    def answers(self) -> bool:
        """Whether the server answers a read now (see the Store protocol): one look on
        the reader connection, made again first if it was lost, with none of
        :meth:`_query`'s reconnects or retries for ``retry_for``; ``False`` once the
        store is closed or cut off. A node asks it in its own thread: each of its waits
        (for the reader, which another thread's read may hold; for the connection; for
        the answer) lasts at most :data:`PROBE_WAIT` seconds, past which the server does
        not answer (a lock another session holds on the table, a server process that
        does not run), and a look left without its answer drops its session (the next
        read makes a new one)."""
        if not self._read_lock.acquire(timeout=PROBE_WAIT):
            return False
        try:
            if self._closed or self._cut is not None:
                return False
            self._reads_begun += 1
            conn = self._reader
            try:
                if conn is None or conn.closed or conn.broken:
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    self._reader = None
                    self._reader = conn = self._connect("reads", within=PROBE_WAIT)
                with _waits_at_most(conn, PROBE_WAIT):
                    conn.execute(f"SELECT 1 FROM {self._s}.workflows WHERE workflow_id = %s",
                                 ("",)).fetchall()
            except _WAIT_TIMEOUT:  # (its statement still in flight: the session goes)
                dropped, self._reader = self._reader, None
                if dropped is not None:
                    with contextlib.suppress(Exception):
                        dropped.close()
                return False
            except (StoreError, psycopg.Error):
                return False
            return True
        finally:
            self._read_lock.release()

    def get_workflow_settled(self, workflow_id: str) -> WorkflowRecord | None:
        """:meth:`get_workflow` if no transaction that updates the row is in flight,
        else :class:`~garrison.persistence.Busy` at once (``FOR SHARE NOWAIT``: the
        lock is let go with the statement, the reader's own transaction; see the
        Store protocol)."""
        rows = self._query(
            f"SELECT {WorkflowRecord.COLUMNS} FROM {self._s}.workflows WHERE workflow_id = %s "
            "FOR SHARE NOWAIT", (workflow_id,), again=False)
        return WorkflowRecord.from_row(rows[0]) if rows else None

    def list_workflows(
        self,
        status: str | Iterable[str] | None = None,
        search: Mapping[str, Any] | None = None,
        *,
        parent: Pid | str | None = None,
        limit: int | None = None,
        after: tuple[datetime | float, str] | None = None,
        newest_first: bool = False,
        id_prefix: str | None = None,
    ) -> list[WorkflowRecord]:
        """Workflows in ``(created, workflow_id)`` order (oldest first, or newest first),
        filtered by status (one or several), by search attributes (every ``key=value``
        must match the stored JSON value), by parent pid and by the start of the id;
        keyset paging with ``after=(record.created, record.workflow_id)`` (as SQLite).
        At most :data:`~._converter.MAX_SEARCH_FILTERS` search keys (else ``ValueError``)."""
        check_search_filters(search)
        limit = check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ANY(%s)")
            params.append(_status_values(status))
        for key, value in (search or {}).items():
            text = search_json(key, value)
            if "\\u0000" in text or "\x00" in str(key) or _lone_surrogate(text) \
                    or _LONE_SURROGATE.search(str(key)):
                return []  # cannot be stored (jsonb): nothing matches
            if value is None:  # as SQLite: a missing key matches null too
                where.append("coalesce(search_jsonb -> %s, 'null'::jsonb) = 'null'::jsonb")
                params.append(str(key))
            else:
                where.append("search_jsonb @> %s::jsonb AND search_jsonb -> %s = %s::jsonb")
                params.extend([_dumps({str(key): value}), str(key), text])
        if parent is not None:
            where.append("parent = %s")
            params.append(str(parent))
        if id_prefix:
            where.append('left(workflow_id, %s) = %s COLLATE "C"')
            params.extend([len(id_prefix), id_prefix])
        if after is not None:
            created, after_id = after
            rows = self._query(f"SELECT created FROM {self._s}.workflows WHERE workflow_id = %s",
                               (after_id,))
            at = rows[0][0] if rows else unix_seconds(created)
            cmp = "<" if newest_first else ">"
            where.append(f'(created, workflow_id COLLATE "C") {cmp} (%s, %s COLLATE "C")')
            params.extend([at, after_id])
        query = f"SELECT {WorkflowRecord.COLUMNS} FROM {self._s}.workflows"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += (' ORDER BY created DESC, workflow_id COLLATE "C" DESC' if newest_first
                  else ' ORDER BY created, workflow_id COLLATE "C"')
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        return [WorkflowRecord.from_row(row) for row in self._query(query, params)]

    def unfinished_children(self, parents: Sequence[Pid | str],
                            damaged: list[DamagedRecord] | None = None
                            ) -> list[WorkflowRecord]:
        """The unfinished children of ``parents`` (see the Store protocol), in one read
        over ``workflows_by_parent``."""
        keys = [key for key in dict.fromkeys(map(str, parents))
                if not no_match((key,), nul=True)]
        if not keys:
            return []
        rows = self._query(
            f"SELECT {WorkflowRecord.COLUMNS} FROM {self._s}.workflows WHERE parent = ANY(%s) "
            'AND status <> ALL(%s) ORDER BY created, workflow_id COLLATE "C"',
            (keys, [status.value for status in FINAL_STATUSES]))
        return WorkflowRecord.from_rows(rows, damaged)

    def children_of_ended(self, host: str, damaged: list[DamagedRecord] | None = None
                          ) -> list[WorkflowRecord]:
        """The unfinished children of ``host``'s ended workflows (see the Store
        protocol): one read of the unfinished workflows (over the index of those,
        ``workflows_by_owner``, not the ended ones), each parent found by its id."""
        prefix = f"{host}/"
        if no_match((prefix,), nul=True):
            return []
        rows = self._query(
            f"SELECT {WorkflowRecord.COLUMNS} FROM {self._s}.workflows c "
            "WHERE c.status = ANY(%s) AND c.parent IS NOT NULL "
            "AND starts_with(c.parent, %s) AND EXISTS (SELECT 1 FROM "
            f"{self._s}.workflows p WHERE p.workflow_id = substr(c.parent, %s) "
            "AND (p.status = %s OR p.status = %s AND COALESCE(c.cancel_requested, 0) = 0)) "
            'ORDER BY c.created, c.workflow_id COLLATE "C"',
            ([status.value for status in WorkflowStatus if status not in FINAL_STATUSES],
             prefix, len(prefix) + 1,
             WorkflowStatus.FAILED.value, WorkflowStatus.CANCELLED.value))
        return WorkflowRecord.from_rows(rows, damaged)

    def workflows_by_id(self, workflow_ids: Sequence[str],
                        damaged: list[DamagedRecord] | None = None
                        ) -> dict[str, WorkflowRecord]:
        """The rows of ``workflow_ids`` (see the Store protocol), in one read."""
        ids = [wid for wid in dict.fromkeys(workflow_ids) if not no_match((wid,), nul=True)]
        if not ids:
            return {}
        rows = self._query(f"SELECT {WorkflowRecord.COLUMNS} FROM {self._s}.workflows "
                           "WHERE workflow_id = ANY(%s)", (ids,))
        return {r.workflow_id: r for r in WorkflowRecord.from_rows(rows, damaged)}

    def count_workflows(self, status: str | Iterable[str] | None = None, *,
                        parent: Pid | str | None = None, host: str | None = None) -> int:
        """How many workflows have that status (one or several), ``parent`` pid and
        ``host``: one ``count(*)`` over an index, no row read into Python (as SQLite)."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ANY(%s)")
            params.append(_status_values(status))
        if parent is not None:
            where.append("parent = %s")
            params.append(str(parent))
        if host is not None:
            where.append("host = %s")
            params.append(host)
        query = f"SELECT count(*) FROM {self._s}.workflows"
        if where:
            query += " WHERE " + " AND ".join(where)
        rows = self._query(query, params)  # (none for a NUL: no row matches)
        return int(rows[0][0]) if rows else 0

    def journal(self, workflow_id: str, *, kind: str | None = None,
                last: int | None = None) -> list[JournalRecord]:
        """The workflow's journal ordered by seq (``kind``: its records of that kind
        alone; ``last``: its newest ``last`` records alone); a record holding no JSON is
        a :class:`DamagedRecord` naming its workflow and seq."""
        rows = self._query(journal_select(f"{self._s}.journal", "%s", kind, last),
                           [workflow_id, *(() if kind is None else (kind,)),
                            *(() if last is None else (last,))])
        if last is not None:
            rows.reverse()  # (read newest first)
        from_row = JournalRecord.from_row
        return [from_row(row) for row in rows]

    def journal_heads(self, workflow_id: str, head: int, after: int, limit: int, *,
                      newest: bool = False) -> list[JournalHead]:
        """At most ``limit`` records with a seq above ``after``, their outcomes read up
        to ``head`` characters and not decoded (see the Store protocol), in seq order."""
        sql = journal_heads_select(f"{self._s}.journal", "%s", head, after, limit, newest)
        rows = self._query(sql, (workflow_id, after, limit))
        if newest:
            rows.reverse()
        return [JournalHead.from_row(row, head) for row in rows]

    def journal_page(self, workflow_id: str, after: int, limit: int
                     ) -> list[tuple[JournalRecord, int]]:
        """At most ``limit`` records of the workflow's journal with a seq above
        ``after``, in seq order, each with the characters of its outcome's stored JSON
        text (see the Store protocol); a record holding no JSON is a
        :class:`DamagedRecord`, as :meth:`journal` raises."""
        sql = journal_page_select(f"{self._s}.journal", "%s", after, limit)
        return journal_page_of(self._query(sql, (workflow_id, after, limit)))

    def journal_entries(self, workflow_id: str) -> tuple[list[tuple[int, str, str, Any, int]], int]:
        """Recovery's fast path: ``([(seq, kind, name, outcome, attempts), ...], bytes)``
        in seq order, outcomes decoded by one ``json.loads``, and their JSON's size."""
        rows = self._query(
            f"SELECT seq, kind, name, outcome, attempts FROM {self._s}.journal "
            "WHERE workflow_id = %s ORDER BY seq", (workflow_id,))
        if not rows:
            return [], 0
        texts = [row[3] for row in rows]
        try:
            outcomes = json.loads("[" + ",".join(texts) + "]")
            entries = [(seq, kind, name, out, attempts) for (seq, kind, name, _, attempts), out
                       in zip(rows, outcomes, strict=True)]
        except ValueError:  # a record that is no JSON
            return journal_entries_of(self.journal(workflow_id))  # (which names it)
        return entries, sum(map(len, texts))

    def journal_sizes(self, workflow_id: str) -> dict[int, int]:
        """``{seq: characters of its outcome JSON}`` of the workflow's journal."""
        rows = self._query(
            f"SELECT seq, length(outcome) FROM {self._s}.journal WHERE workflow_id = %s",
            (workflow_id,))
        return {int(seq): int(n) for seq, n in rows}

    def journal_size(self, workflow_id: str) -> tuple[int, int]:
        """``(records, characters of outcome JSON)`` of the workflow's journal."""
        rows = self._query(
            f"SELECT count(*), coalesce(sum(length(outcome)), 0) FROM {self._s}.journal "
            "WHERE workflow_id = %s", (workflow_id,))
        return int(rows[0][0]), int(rows[0][1])

    def workflow_node(self, workflow_id: str) -> str | None:
        """The name of the live node of the cluster that runs ``workflow_id`` now;
        ``None`` while none does (it waits to be claimed, or has finished; its node's
        lease lapsed)."""
        rows = self._query(
            f"SELECT n.name FROM {self._s}.workflows w JOIN {self._s}.nodes n ON n.epoch "
            "= w.owner_epoch AND n.status IN ('active', 'draining') AND n.lease_until > "
            f"{self._s}.now_s() "
            "WHERE w.workflow_id = %s AND w.status NOT IN ('completed', 'failed', "
            "'cancelled')", (workflow_id,))
        return str(rows[0][0]) if rows else None

    def pending_messages(self, workflow_id: str) -> list[InboxRecord]:
        """Inbox rows (messages and events) not consumed yet, in arrival order."""
        rows = self._query(
            f"SELECT {InboxRecord.COLUMNS} FROM {self._s}.inbox "
            "WHERE workflow_id = %s AND consumed_seq IS NULL ORDER BY id", (workflow_id,))
        return [InboxRecord.from_row(row) for row in rows]

    def inbox_message(self, msg_id: str) -> InboxRecord | None:
        """The inbox row of message ``msg_id`` (consumed or not), or ``None``."""
        rows = self._query(
            f"SELECT {InboxRecord.COLUMNS} FROM {self._s}.inbox WHERE msg_id = %s", (msg_id,))
        return InboxRecord.from_row(rows[0]) if rows else None

    def inbox_messages(self, msg_ids: Sequence[str]) -> dict[str, InboxRecord]:
        """The inbox rows of ``msg_ids`` (see the Store protocol), in one read."""
        ids = [i for i in dict.fromkeys(msg_ids) if not no_match((i,), nul=True)]
        if not ids:
            return {}
        rows = self._query(f"SELECT {InboxRecord.COLUMNS} FROM {self._s}.inbox "
                           "WHERE msg_id = ANY(%s)", (ids,))
        return {r.msg_id: r for r in map(InboxRecord.from_row, rows)}

    def timers(self, workflow_id: str | None = None) -> list[TimerRecord]:
        """Timers (of one workflow, or all), earliest deadline first."""
        if workflow_id is None:
            rows = self._query(
                f"SELECT {TimerRecord.COLUMNS} FROM {self._s}.timers ORDER BY deadline, seq")
        else:
            rows = self._query(
                f"SELECT {TimerRecord.COLUMNS} FROM {self._s}.timers WHERE workflow_id = %s "
                "ORDER BY deadline, seq", (workflow_id,))
        return [TimerRecord.from_row(row) for row in rows]

    def due_timers(self, now: datetime | float) -> list[TimerRecord]:
        """Timers whose deadline is at or before ``now``, earliest first."""
        rows = self._query(
            f"SELECT {TimerRecord.COLUMNS} FROM {self._s}.timers WHERE deadline <= %s "
            'ORDER BY deadline, workflow_id COLLATE "C", seq', (unix_seconds(now),))
        return [TimerRecord.from_row(row) for row in rows]

    def next_timer(self) -> TimerRecord | None:
        """The timer with the earliest deadline, or ``None``."""
        rows = self._query(
            f"SELECT {TimerRecord.COLUMNS} FROM {self._s}.timers "
            'ORDER BY deadline, workflow_id COLLATE "C", seq LIMIT 1')
        return TimerRecord.from_row(rows[0]) if rows else None

    def get_promise(self, workflow_id: str, name: str) -> PromiseRecord | None:
        """The promise's row, or ``None`` (neither declared nor resolved yet)."""
        rows = self._query(
            f"SELECT {PromiseRecord.COLUMNS} FROM {self._s}.promises "
            "WHERE workflow_id = %s AND name = %s", (workflow_id, name))
        return PromiseRecord.from_row(rows[0]) if rows else None

    def promises(
        self, workflow_id: str, status: PromiseStatus | str | None = None
    ) -> list[PromiseRecord]:
        """The workflow's promises (optionally of one status), by name."""
        query = f"SELECT {PromiseRecord.COLUMNS} FROM {self._s}.promises WHERE workflow_id = %s"
        params: list[Any] = [workflow_id]
        if status is not None:
            query += " AND status = %s"
            params.append(PromiseStatus(status).value)
        rows = self._query(query + ' ORDER BY name COLLATE "C"', params)
        return [PromiseRecord.from_row(row) for row in rows]

    def get_state(self, workflow_id: str, key: str, default: Any = None) -> Any:
        """The decoded value of state ``key``, or ``default``."""
        rows = self._query(
            f"SELECT value FROM {self._s}.state WHERE workflow_id = %s AND key = %s",
            (workflow_id, key))
        return json.loads(rows[0][0]) if rows else default

    def states(self, workflow_id: str) -> dict[str, Any]:
        """Every state key of the workflow, decoded."""
        rows = self._query(
            f"SELECT key, value FROM {self._s}.state WHERE workflow_id = %s "
            'ORDER BY key COLLATE "C"', (workflow_id,))
        return {key: json.loads(value) for key, value in rows}

    def state_digests(self, workflow_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Digests of the stored state values of each of ``workflow_ids``
        (``{workflow_id: {key: digest}}``, a workflow with no state left out; see the
        Store protocol), in one round trip: the server sends the digests, not the
        values."""
        ids = [wid for wid in dict.fromkeys(workflow_ids) if not no_match((wid,), nul=True)]
        if not ids:
            return {}
        rows = self._query(
            f"SELECT workflow_id, key, md5(value) FROM {self._s}.state "
            "WHERE workflow_id = ANY(%s)", (ids,))
        found: dict[str, dict[str, str]] = {}
        for wid, key, digest in rows:
            found.setdefault(wid, {})[key] = digest
        return found

    def resume_rows(self, workflow_ids: Sequence[str], *, records: bool = False
                    ) -> dict[str, ResumeRows]:
        """What a node reads of each of ``workflow_ids`` to resume it (see the Store
        protocol): one read of each table for all of them, not one per workflow."""
        ids = [wid for wid in dict.fromkeys(workflow_ids) if not no_match((wid,), nul=True)]
        if not ids:
            return {}
        s = self._s
        journal = self._query(
            f"SELECT workflow_id, seq, kind, name, outcome, attempts FROM {s}.journal "
            "WHERE workflow_id = ANY(%s) ORDER BY workflow_id, seq", (ids,))
        inbox = self._query(
            f"SELECT {InboxRecord.COLUMNS} FROM {s}.inbox WHERE workflow_id = ANY(%s) "
            "AND consumed_seq IS NULL ORDER BY id", (ids,))
        timers = self._query(
            f"SELECT {TimerRecord.COLUMNS} FROM {s}.timers WHERE workflow_id = ANY(%s) "
            "ORDER BY deadline, seq", (ids,))
        monitors = self._query(
            f"SELECT workflow_id, watcher FROM {s}.monitors WHERE workflow_id = ANY(%s) "
            'ORDER BY created, watcher COLLATE "C"', (ids,))
        promises = self._query(
            f"SELECT {PromiseRecord.COLUMNS} FROM {s}.promises WHERE workflow_id = ANY(%s) "
            'ORDER BY name COLLATE "C"', (ids,))
        rows = None
        if records:
            rows = {r.workflow_id: r for r in map(WorkflowRecord.from_row, self._query(
                f"SELECT {WorkflowRecord.COLUMNS} FROM {s}.workflows "
                "WHERE workflow_id = ANY(%s)", (ids,)))}
        return group_resume_rows(ids, journal, inbox, timers, monitors, promises, rows)

    def monitors(self, workflow_id: str, watcher: Pid | None = None) -> list[Pid]:
        """The pids watching the workflow, in the order they started watching; with
        ``watcher``, that one alone if it watches the workflow, else none."""
        if watcher is not None:
            rows = self._query(f"SELECT watcher FROM {self._s}.monitors "
                               "WHERE workflow_id = %s AND watcher = %s",
                               (workflow_id, str(watcher)))
            return [Pid.parse(row[0]) for row in rows]
        rows = self._query(
            f"SELECT watcher FROM {self._s}.monitors WHERE workflow_id = %s "
            'ORDER BY created, watcher COLLATE "C"', (workflow_id,))
        return [Pid.parse(row[0]) for row in rows]

    def schedules(self) -> list[ScheduleRecord]:
        """Every schedule of the store, by id."""
        rows = self._query(f"SELECT {ScheduleRecord.COLUMNS} FROM {self._s}.schedules "
                           'ORDER BY schedule_id COLLATE "C"')
        return [ScheduleRecord.from_row(row) for row in rows]

    def schedules_without_run(self) -> list[ScheduleRecord]:
        """The schedules whose last run (``last_workflow``) is no workflow of the store
        (a tick recorded, its workflow not created: its node stopped in between), by id."""
        rows = self._query(
            f"SELECT {ScheduleRecord.COLUMNS} FROM {self._s}.schedules s WHERE "
            f"s.last_workflow IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {self._s}.workflows "
            'w WHERE w.workflow_id = s.last_workflow) ORDER BY schedule_id COLLATE "C"')
        return [ScheduleRecord.from_row(row) for row in rows]

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """The schedule's row, or ``None``."""
        rows = self._query(f"SELECT {ScheduleRecord.COLUMNS} FROM {self._s}.schedules "
                           "WHERE schedule_id = %s", (schedule_id,))
        return ScheduleRecord.from_row(rows[0]) if rows else None

    def queue_entries(self) -> list[QueueRecord]:
        """The queue rows, in queue order: priority, highest first, then start order."""
        rows = self._query(f"SELECT {QueueRecord.COLUMNS} FROM {self._s}.queue "
                           "ORDER BY priority DESC, seq")
        return [QueueRecord.from_row(row) for row in rows]

    def queue_entry(self, workflow_id: str) -> QueueRecord | None:
        """The workflow's queue row, or ``None`` without one."""
        rows = self._query(f"SELECT {QueueRecord.COLUMNS} FROM {self._s}.queue "
                           "WHERE workflow_id = %s", (workflow_id,))
        return QueueRecord.from_row(rows[0]) if rows else None

    def queue_place(self, workflow_id: str) -> QueuePlace | None:
        """Where the ``pending`` workflow waits in its host's queue (as SQLite), and the
        host's limits as a live node of the cluster tells them in its row (``None``
        while no live node runs the host)."""
        rows = self._query(
            f"SELECT w.host, q.priority, q.seq FROM {self._s}.queue q JOIN {self._s}.workflows"
            " w ON w.workflow_id = q.workflow_id WHERE q.workflow_id = %s AND "
            "w.status = 'pending'", (workflow_id,))
        if not rows:
            return None
        host, priority, seq = rows[0]
        ahead = self._query(
            f"SELECT count(*) FROM {self._s}.queue q JOIN {self._s}.workflows w ON "
            "w.workflow_id = q.workflow_id WHERE w.host IS NOT DISTINCT FROM %s AND "
            "w.status = 'pending' AND (q.priority > %s OR (q.priority = %s AND q.seq < %s))",
            (host, priority, priority, seq))[0][0]
        if host is None:
            return QueuePlace(None, int(priority), int(ahead), 0)
        running = self.count_workflows(("running", "waiting", "sleeping"), host=host)
        said = self._query(
            f"SELECT info::jsonb -> 'limits' FROM {self._s}.nodes WHERE status IN "
            f"('active', 'draining') AND lease_until > {self._s}.now_s() AND "
            "info::jsonb -> 'limits' ->> 'host' = %s ORDER BY epoch DESC LIMIT 1", (host,))
        limits = said[0][0] if said and isinstance(said[0][0], dict) else None
        return QueuePlace(host, int(priority), int(ahead), running, limits)

    def kept_dedup(self, workflow_id: str) -> str | None:
        """The dedup key the workflow's queue row held when it was dropped (at its end):
        what a retry takes back. ``None`` without one."""
        rows = self._query(f"SELECT dedup FROM {self._s}.workflows WHERE workflow_id = %s",
                           (workflow_id,))
        return rows[0][0] if rows else None

    def admitted_since(self, host: str, since: float) -> list[float]:
        """When the workflows of ``host`` admitted after ``since`` (unix seconds) were
        admitted, oldest first (what its ``rate`` counts, on every node)."""
        rows = self._query(f"SELECT admitted FROM {self._s}.workflows WHERE host = %s "
                           "AND admitted > %s ORDER BY admitted", (host, float(since)))
        return [float(row[0]) for row in rows]

    def pending_count(self, host: str) -> int:
        """How many workflows of ``host`` wait ``pending`` in the store (the queues of
        every node, and those no node has claimed): one count on the status index,
        not tried again after a transient refusal (``Busy``: the caller may be the
        node's thread, ``stats()``)."""
        rows = self._query(f"SELECT count(*) FROM {self._s}.workflows WHERE status = "
                           "'pending' AND host = %s", (host,), again=False)
        return int(rows[0][0])

    def watched_by(self, watcher: Pid | str) -> list[str]:
        """The workflow ids ``watcher`` monitors."""
        rows = self._query(
            f"SELECT workflow_id FROM {self._s}.monitors WHERE watcher = %s "
            'ORDER BY created, workflow_id COLLATE "C"', (str(watcher),))
        return [row[0] for row in rows]

    # -- retention ---------------------------------------------------------------------
    def _no_unasked(self, alias: str = "w") -> str:
        """The condition of an ended workflow none of whose children a node's start
        would ask (``children_of_ended``: an unfinished child of a ``failed`` one, one
        not flagged of a ``cancelled`` one), over ``workflows_by_parent``: a parent
        pruned before they were asked left them running for good, nothing reading
        them again."""
        s, w = self._s, alias
        return (f"NOT EXISTS (SELECT 1 FROM {s}.workflows c WHERE "
                f"c.parent = {w}.host || '/' || {w}.workflow_id "
                "AND c.status NOT IN ('completed', 'failed', 'cancelled') "
                f"AND ({w}.status = 'failed' OR {w}.status = 'cancelled' "
                "AND COALESCE(c.cancel_requested, 0) = 0))")

    def _not_kept(self, alias: str = "w") -> str:
        """The condition of a workflow a prune does not keep (``Store.prune_ended``):
        no parent workflow in the store, no schedule's last run, and no child a start
        would ask (:meth:`_no_unasked`)."""
        s, w = self._s, alias
        return (f"({w}.parent IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.workflows p WHERE "
                f"p.workflow_id = substr({w}.parent, strpos({w}.parent, '/') + 1))) "
                f"AND NOT EXISTS (SELECT 1 FROM {s}.schedules sc "
                f"WHERE sc.last_workflow = {w}.workflow_id) AND {self._no_unasked(w)}")

    def prune_ended(self, status: str, before: float, *, host: str | None = None,
                    after: tuple[float, str] | None = None, limit: int = 500
                    ) -> list[tuple[float, str]]:
        """See :meth:`Store.prune_ended`: one statement (its own transaction) on a
        connection of its own. The rows it deletes are locked ``FOR UPDATE SKIP
        LOCKED`` as it picks them, and picked again on their newest version: a retry
        that committed meanwhile makes one unfinished (kept), one that holds its row
        makes this pass skip it, and another node pruning at once takes other rows.
        A statement run again (its answer lost with the connection) deletes what the
        first run left: each workflow is deleted once."""
        key = check_prune(status, before, host, after, limit)
        s = self._s
        owned = "".join(
            f"d_{table} AS (DELETE FROM {s}.{table} t USING doomed d "
            f"WHERE t.workflow_id = d.workflow_id), "
            for table in ("journal", "inbox", "timers", "promises", "state", "monitors",
                          "queue"))
        # (the statuses written out, as workflows_ended's WHERE is: a plan the server
        # keeps for the statement must be able to use that partial index)
        query = (
            f"WITH doomed AS (SELECT w.workflow_id, w.updated, w.host FROM {s}.workflows w "
            "WHERE w.status IN ('completed', 'failed', 'cancelled') "
            f"AND w.status = '{status}' AND w.updated < %s "
            "AND (%s::text IS NULL OR w.host = %s) "
            f"AND (w.updated, w.workflow_id) > (%s, %s) AND {self._not_kept()} "
            "ORDER BY w.updated, w.workflow_id LIMIT %s FOR UPDATE OF w SKIP LOCKED), "
            f"{owned}"
            f"d_watching AS (DELETE FROM {s}.monitors t USING doomed d "
            "WHERE t.watcher = d.host || '/' || d.workflow_id), "
            f"d_wakeups AS (DELETE FROM {s}.wakeups t USING doomed d "
            "WHERE t.workflow_id = d.workflow_id AND t.kind <> 'schedule'), "
            f"gone AS (DELETE FROM {s}.workflows t USING doomed d "
            "WHERE t.workflow_id = d.workflow_id RETURNING t.updated, t.workflow_id) "
            "SELECT updated, workflow_id FROM gone ORDER BY updated, workflow_id")
        params = (float(before), host, host, *key, limit)
        if no_match(params, nul=True):  # (a host's name PostgreSQL text cannot hold)
            return []

        def run() -> list[tuple[float, str]]:
            with self._prune_lock:
                self._check_open()
                conn = self._pruner
                if conn is None or conn.closed or conn.broken:
                    conn = self._pruner = self._connect("prune", by_key=True)
                rows = conn.execute(query, params).fetchall()
                return [(float(updated), str(wid)) for updated, wid in rows]

        return self.retried(run)

    def count_prunable(self, statuses: Iterable[str], before: float, *,
                       host: str | None = None) -> int:
        """See :meth:`Store.count_prunable`."""
        wanted = check_count(statuses, before, host)
        if not wanted:
            return 0
        s = self._s
        choice = ("w.status = ANY(%s) AND w.updated < %s AND (%s::text IS NULL OR "
                  "w.host = %s)")
        rows = self._query(
            f"WITH RECURSIVE gone(workflow_id, host) AS ("
            f"SELECT w.workflow_id, w.host FROM {s}.workflows w WHERE {choice} "
            f"AND {self._not_kept()} UNION SELECT w.workflow_id, w.host FROM gone g "
            f"JOIN {s}.workflows w ON w.parent = g.host || '/' || g.workflow_id "
            f"WHERE {choice} AND NOT EXISTS (SELECT 1 FROM {s}.schedules sc "
            f"WHERE sc.last_workflow = w.workflow_id) AND {self._no_unasked()}) "
            "SELECT count(*) FROM gone",
            (wanted, float(before), host, host, wanted, float(before), host, host))
        return int(rows[0][0])

    # -- lifetime ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"store {self.path!r} is closed")

    def close(self) -> None:
        """Close the connections (which releases the node's lock). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._drop_listener()
        # a take under way in a worker thread, its caller gone (the node stopped): its
        # wait for the server ends now, and it closes its session itself
        cut_connection(self._taker)
        if self._take_lock.acquire(blocking=False):
            try:
                self._close_taker()
            finally:
                self._take_lock.release()
        with self._write_lock:
            if self._writer is not None and not self._owner and not self._writer.closed:
                with contextlib.suppress(psycopg.Error):  # a tool's row goes with it
                    self._writer.execute(f"DELETE FROM {self._s}.writers WHERE writer = %s",
                                         (self._writer_id,))
            if self._writer is not None and self._owner and not self._writer.closed:
                # The node's locks (the schema's node lock, its incarnation's) are let go
                # now: the server frees a closed connection's after this returns, and a
                # tool asking at once (migrate_store) would find them held.
                with contextlib.suppress(psycopg.Error):
                    self._writer.execute("SELECT pg_advisory_unlock_all()")
        with self._read_lock:
            self._close_connections()
        self.locked = False

    def _close_connections(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._writer = self._reader = None
        with self._prune_lock:
            if self._pruner is not None:
                with contextlib.suppress(Exception):
                    self._pruner.close()
                self._pruner = None

    def __repr__(self) -> str:
        return (f"<PostgresStore {self.path!r} synchronous={self.synchronous} "
                f"locked={self.locked}>")


