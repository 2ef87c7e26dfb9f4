"""A cluster on the PostgreSQL store: membership, leases, ownership of workflows.

The database is the coordinator (no consensus of our own). Tables (schema v2,
``_pg_schema.py``): ``nodes`` (one row per node incarnation, ``epoch`` from a
sequence) and ``workflows.owner_epoch``/``owner``. Every time is the SERVER's clock
(``now_s()``), never a node's.

- **Join**: a fresh epoch; the node's writer connection holds the advisory lock
  ``(epoch_lock_class(schema), epoch)`` for as long as the node lives (a killed node's
  connection drops, and the lock with it); its cluster connection holds
  ``(_alive_lock_class(schema), epoch)`` too. Then, under a join lock, a live row with
  the same name is refused (:class:`~garrison.StoreLocked`) unless both locks are free
  (the node is dead: a restart under the same name), and every live row whose locks
  are both free is marked ``lost`` at once (a restarted single node resumes without
  waiting out a lease; a live node whose one connection dropped keeps its work).
- **Lease**: ``renew`` every ``lease / 3``: ``lease_until = now_s() + lease``, only while
  the lease has not lapsed. A lapsed lease is never renewed: the node drops its
  workflows and joins again with a new epoch. The same statement reads the schema
  version: a node that finds it migrated past what it knows (by a newer node) leaves
  (``ClusterMember``) and its store writes nothing more.
- **Lost**: a live row whose ``lease_until`` passed is marked ``lost`` by any node,
  with ``FOR UPDATE`` on the row: that waits for every write of that node which passed
  its fence (``fence()`` holds ``FOR KEY SHARE`` on the row), so the takeover sees all
  of them and none commits after it.
- **Claim**: unfinished workflows owned by nobody, by a lost or left node, or by an
  epoch with no row, ``FOR UPDATE SKIP LOCKED``, at most ``limit`` (the node's fair
  share), in start order; the claim is itself fenced (a node whose lease lapsed claims
  nothing). Workflows whose code the node found it cannot import (their ``name``) are
  left to the others, unless a terminate asks to end them.
- **Release**: a draining or closing node sets its workflows' owner to ``NULL`` and
  notifies ``<channel>:cluster``, so the others claim them at once.
- **Bounded**: a node's statements here wait at most :attr:`PgCluster.bound` seconds for
  the server (less than the lease): a link that holds its bytes (a server or a network
  that stopped answering, the socket still open) fails the round instead of holding
  the membership thread, which would then never join again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import psycopg

from .._errors import StoreError, StoreLocked
from ._pg_schema import CHANNEL_MAX, notify_channel
from ._pg_write import (
    _quote,
    cut_connection,
    lock_wait_at_most,
    lock_wait_reason,
    refused_for_now,
)
from ._records import DamagedRecord, WorkflowRecord, requested_attempt

__all__ = ["LIVE", "ClusterNode", "PgCluster", "Run", "epoch_lock_class"]

log = logging.getLogger("garrison.workflow")

#: seconds after which the body of a long node-to-node message nobody took is deleted
MESSAGE_TTL = 3600.0
#: how long a schedule's wakeup stays for the nodes to read (seconds)
SCHEDULE_WAKEUP_TTL = 86400.0
#: statuses of a live node
LIVE = ("active", "draining")
_UNFINISHED = "status NOT IN ('completed', 'failed', 'cancelled')"
#: the most workflows a claim takes beyond the node's room for a terminate asked of them
#: (``PgCluster.claim``; more are taken at the next round)
CLAIM_ASKED_MAX = 1000
#: the columns of a claimed workflow (``w``), as a claim returns them
_CLAIMED = ", ".join("w." + c.strip() for c in WorkflowRecord.COLUMNS.split(","))
#: a workflow ``w`` no live node owns (nobody, or a node lost or gone): one to claim
_ORPHANED = (
    "(w.owner_epoch IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.nodes n WHERE "
    "n.epoch = w.owner_epoch AND n.status IN ('active', 'draining')))")
#: a claimable workflow ``w`` this node may take: not named in the refused names (the
#: first parameter: code it cannot import), nor a run this node's code blocked (the next
#: three: their workflow ids, run ids and attempts, see :func:`_refusing`), unless a
#: request waits in its inbox (a terminate, ``_recovery.request_transaction``: ending it
#: takes no code). The payload is not read here: a ``control`` row need not be JSON
#: (``RawJson``, a row written by hand), and a cast failing would fail every claim of
#: this node; :meth:`PgCluster.claim` reads it.
_NOT_REFUSED = (
    "(NOT (w.name = ANY(%s) OR EXISTS (SELECT 1 FROM unnest(%s::text[], %s::text[], "
    "%s::bigint[]) b(id, run, attempt) WHERE b.id = w.workflow_id AND b.attempt = "
    "w.attempt AND b.run IS NOT DISTINCT FROM w.run_id)) OR EXISTS (SELECT 1 FROM "
    "{s}.inbox i WHERE i.workflow_id = w.workflow_id AND i.consumed_seq IS NULL "
    "AND i.kind = 'control'))")

#: a run of a workflow: ``(workflow id, run id, attempt)`` (a retry is a new attempt,
#: ``continue_as_new`` a new run)
Run = tuple[str, str | None, int]


def _refusing(refused: Iterable[str] | None, blocked: Iterable[Run] | None) -> list[Any]:
    """The parameters of :data:`_NOT_REFUSED`: the workflow names ``refused`` and the
    runs ``blocked``."""
    runs = list(blocked or ())
    return [list(refused or ()), [r[0] for r in runs], [r[1] for r in runs],
            [r[2] for r in runs]]


def _claimed(rows: Iterable[Any]) -> list[WorkflowRecord]:
    """The records of the workflows a claim took (``rows`` in ``COLUMNS`` order). A
    damaged row (:class:`DamagedRecord`) is left out, named in one error line, as a
    SQLite node's start names one: it stays claimed by this node, unrun and as it is
    (claimed by nobody, it would be claimed again, and named, every round), until this
    node leaves. It failed the claim, and so the node's start or its cluster rounds."""
    records: list[WorkflowRecord] = []
    for row in rows:
        try:
            records.append(WorkflowRecord.from_row(row))
        except DamagedRecord as exc:
            log.error("cannot resume workflow %s: %s", exc.workflow_id, exc,
                      extra={"workflow_id": exc.workflow_id})
    return records


#: psycopg's error for a wait past its timeout (an ``OperationalError``)
_WAIT_TIMEOUT: Any = getattr(psycopg.errors, "_WaitTimeout", ())


def _bound(conn: psycopg.Connection[Any], seconds: float, path: str | None) -> None:
    """Make every statement of ``conn`` that waits without a timeout of its own wait at
    most ``seconds`` for the server (``StoreError`` past it: the connection is then
    unusable, its owner drops it)."""
    plain = conn.wait

    def wait(gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        if timeout is not None:  # its caller's own (``notifies``: it expects the error)
            return plain(gen, interval, timeout)
        try:
            return plain(gen, interval, seconds)
        except _WAIT_TIMEOUT:
            raise StoreError(path, f"no answer from the server within {seconds:g}s (its "
                             "cluster connection)") from None

    conn.wait = wait  # type: ignore[method-assign]


def _request_attempt(payload: str) -> int | None:
    """:func:`requested_attempt` of a ``control`` row's payload text (JSON, or anything
    written by hand: ``None``, any attempt, if it does not decode)."""
    try:
        plain = json.loads(payload)
    except ValueError:
        return None
    return requested_attempt(plain)


def epoch_lock_class(schema: str) -> int:
    """The first key of the advisory locks ``(class, epoch)`` held by live nodes."""
    digest = hashlib.blake2b(f"garrison-epoch:{schema}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def _alive_lock_class(schema: str) -> int:
    """The first key of the advisory locks ``(class, epoch)`` a live node's cluster
    connection holds: with the writer's (:func:`epoch_lock_class`), the node is dead
    only when both are free (one connection of a live node may drop and come back)."""
    digest = hashlib.blake2b(f"garrison-alive:{schema}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def _join_lock(schema: str) -> int:
    digest = hashlib.blake2b(f"garrison-join:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


#: how many times :meth:`PgCluster.register_name` tries when the name's holder keeps
#: releasing it between its statements
_NAME_TRIES = 5


@attrs.frozen
class ClusterNode:
    """A live node of a cluster (``node.cluster()``, ``garrison nodes``).

    ``started`` and ``heartbeat`` are the store server's clock (unix seconds);
    ``workflows`` counts the unfinished workflows it runs; ``status`` is ``active`` or
    ``draining``; ``lease_until`` is when it is lost unless it renews."""

    name: str
    started: float
    heartbeat: float
    workflows: int
    status: str = "active"
    epoch: int = 0
    lease_until: float = 0.0
    info: dict[str, Any] = attrs.field(factory=dict)


class PgCluster:
    """The cluster statements of one node (or a tool) on ``store``, on a connection of
    their own (used by one thread at a time: the node's membership thread)."""

    def __init__(self, store: Any, name: str | None = None, lease: float = 10.0) -> None:
        self.store = store
        self.name = name
        self.lease = float(lease)
        #: the longest a statement of a node waits for the server (seconds): shorter
        #: than the lease (a hung link fails a round), longer than ``mark_lost``'s
        #: lock timeout
        self.bound = min(max(self.lease / 2, 0.75), 10.0) if name is not None else None
        #: a node's cluster session's ``lock_timeout`` in seconds (set at each connect:
        #: a third of :attr:`bound`, unless the server's or the role's is shorter), so
        #: that a wait for a lock another session holds on the store's tables (a
        #: ``LOCK TABLE``, a ``VACUUM FULL``) is ended by the server with the session
        #: kept: ended by :attr:`bound` instead, the session dropped went on waiting in
        #: the lock's queue, one more at every round; and the round fails soon enough
        #: for the next one to renew the lease in time
        self.lock_wait: float | None = None
        self.epoch: int | None = None
        self.started = 0.0
        self._s = _quote(store.schema)
        channel = notify_channel(store.schema)  # (the store's: every node and tool agrees)
        self.channel = channel + ":cluster"
        self.wake_channel = channel
        self._lock_class = epoch_lock_class(store.schema)
        self._alive_class = _alive_lock_class(store.schema)
        #: the epoch whose ``_alive_class`` lock this connection holds
        self._alive_epoch: int | None = None
        self.conn: psycopg.Connection[Any] | None = None
        self.extra_channel: str | None = None
        #: ``slot_freed`` notifications (``Transaction.slot_freed``): a workflow of a
        #: host with ``cluster_max_concurrent`` ended on some node
        self.queue_channel = channel + ":queue"
        #: the hosts named by those notifications since the caller last took them
        self.freed: set[str] = set()
        #: a drain was notified on the cluster channel (:meth:`set_status`); the
        #: reader sets it back
        self.drain_heard = False
        #: the schema version the last :meth:`renew` read (0: none read yet)
        self.schema_found = 0
        #: a claim of this epoch lost its connection before its answer came: it may
        #: have committed (the store names this node the owner of workflows it never
        #: heard of) until :meth:`owned` is read
        self.claim_unknown = False
        #: the singletons let go (``claim_singletons``'s ``dropped``) whose rows this
        #: node deleted: it claims them no more, so no row of theirs is left to delete
        #: while they stay let go
        self._let_go: set[str] = set()

    # -- the connection ----------------------------------------------------------
    def connect(self) -> psycopg.Connection[Any]:
        """(Re)connect; listens on the cluster and wakeup channels."""
        if self.conn is not None and not self.conn.closed and not self.conn.broken:
            return self.conn
        self.close()
        conn = self.store._connect("cluster", by_key=True)
        if self.bound is not None:
            _bound(conn, self.bound, self.store.path)
        try:
            if self.bound is not None:
                self.lock_wait = lock_wait_at_most(conn, self.bound / 3)
            conn.execute("LISTEN " + _quote(self.channel))
            conn.execute("LISTEN " + _quote(self.queue_channel))
            if self.extra_channel is not None:
                conn.execute("LISTEN " + _quote(self.extra_channel))
        except psycopg.Error:
            conn.close()
            raise
        self.conn = conn
        self._alive_epoch = None
        if self.epoch is not None and self.name is not None:
            self._hold_alive(conn, self.epoch)
        return conn

    def _hold_alive(self, conn: psycopg.Connection[Any], epoch: int) -> None:
        """Hold this node's ``alive`` lock of ``epoch`` on the cluster connection (the
        one of a previous epoch is let go)."""
        if self._alive_epoch == epoch:
            return
        if self._alive_epoch is not None:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)",
                         (self._alive_class, self._alive_epoch))
            self._alive_epoch = None
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                           (self._alive_class, epoch)).fetchone()
        if got and got[0]:  # (else an old session of this connection still holds it)
            self._alive_epoch = epoch

    def error_text(self, exc: BaseException) -> str:
        """``exc``, raised by a statement here, in one line naming the store (as
        ``PostgresStore.error_text``); a wait for a lock ended by :attr:`lock_wait`
        says it was a lock another session holds, not the server, that held it."""
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return f"store {self.store.path!r}: {lock_wait_reason(exc, self.lock_wait)}"
        return str(self.store.error_text(exc))

    def kept(self, exc: BaseException) -> bool:
        """True if the cluster connection is still of use after ``exc``, raised by a
        statement here: the server ended the statement (a wait for a lock another
        session holds, past :attr:`lock_wait`; a ``statement_timeout``), the session
        idle and listening. Dropped, it would hear nothing until connected again."""
        conn = self.conn
        return (isinstance(exc, (psycopg.errors.LockNotAvailable,
                                 psycopg.errors.QueryCanceled))
                and conn is not None and not conn.closed and not conn.broken
                and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)

    def cut(self) -> None:
        """Shut the cluster connection's socket down (from any thread): what waits on it
        ends at once (the node stops, and the server does not answer)."""
        cut_connection(self.conn)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None
        self._alive_epoch = None

    def _rows(self, query: str, params: Iterable[Any] = ()) -> list[Any]:
        conn = self.connect()
        cur = conn.execute(query.replace("{s}", self._s), tuple(params))
        return cur.fetchall() if cur.description is not None else []

    # -- membership ----------------------------------------------------------------
    def new_epoch(self) -> int:
        """A fresh incarnation number (never reused)."""
        return int(self._rows("SELECT nextval('{s}.node_epochs')")[0][0])

    def join(self, epoch: int, extra: dict[str, Any] | None = None) -> None:
        """Insert this node's row for ``epoch`` (its writer holds the epoch lock
        already); a live node of the same name refuses it with ``StoreLocked``."""
        assert self.name is not None
        conn = self.connect()
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), **(extra or {})})
        s = self._s
        if self._alive_epoch not in (None, epoch):  # a rejoin: the old incarnation is gone
            conn.execute("SELECT pg_advisory_unlock(%s, %s)",
                         (self._alive_class, self._alive_epoch))
            self._alive_epoch = None
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_join_lock(self.store.schema),))
            dead = self._dead_live_epochs(conn)
            if dead:  # their connections are gone: no write of theirs can be in flight
                conn.execute(f"UPDATE {s}.nodes SET status = 'lost' WHERE epoch = ANY(%s)",
                             (dead,))
            row = conn.execute(
                f"SELECT epoch, info FROM {s}.nodes WHERE name = %s AND status IN "
                "('active', 'draining')", (self.name,)).fetchone()
            if row is not None:
                held = json.loads(row[1]) if row[1] else {}
                raise StoreLocked(self.store.path or "", held=(
                    f"node name {self.name!r} is taken by a live node of the cluster "
                    f"(host {held.get('host')}, pid {held.get('pid')})"),
                    hint="pick another name= for this node",
                    cli_hint="pick another --name for this node")
            got = conn.execute(
                f"INSERT INTO {s}.nodes (epoch, name, status, started, heartbeat, lease, "
                f"lease_until, info) VALUES (%s, %s, 'active', {s}.now_s(), {s}.now_s(), %s, "
                f"{s}.now_s() + %s, %s) RETURNING started",
                (epoch, self.name, self.lease, self.lease, info)).fetchone()
            assert got is not None
            self.started = float(got[0])
            # rows of incarnations long gone (a day) are forgotten
            conn.execute(f"DELETE FROM {s}.nodes WHERE status IN ('lost', 'left') "
                         f"AND heartbeat < {s}.now_s() - 86400")
        self.epoch = epoch
        self.claim_unknown = False  # a new incarnation owns nothing yet
        self._hold_alive(conn, epoch)

    def _dead_live_epochs(self, conn: psycopg.Connection[Any]) -> list[int]:
        """Live rows whose node is gone: neither its writer's lock nor its cluster
        connection's is held (a live node whose writer's connection dropped, idle since,
        holds the other: it is not dead)."""
        rows = conn.execute(
            f"SELECT n.epoch FROM {self._s}.nodes n WHERE n.status IN ('active', 'draining') "
            "AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) AND l.classid IN (%s::bigint::oid, "
            "%s::bigint::oid) AND l.objid = n.epoch::oid AND l.objsubid = 2)",
            (self._lock_class, self._alive_class)).fetchall()
        return [int(r[0]) for r in rows]

    def renew(self, room: int | None = None, refused: list[str] | None = None,
              blocked: list[str] | None = None) -> str | None:
        """Renew the lease (and say how many more workflows this node has room for,
        ``None``: no limit; and, when given, the workflow names it refuses, see
        :meth:`claim`, and those of runs its code blocked, kept in its row's ``info``
        for the others' :meth:`loads`); the node's status (``active`` / ``draining``),
        or ``None`` when the lease had lapsed (the node must drop its workflows and join
        again). Reads the schema's version in the same statement
        (:attr:`schema_found`): a newer node may have migrated it since this one opened
        the store."""
        names = None if refused is None else json.dumps(sorted(refused))
        blocks = None if blocked is None else json.dumps(sorted(blocked))
        rows = self._rows(
            "WITH r AS (UPDATE {s}.nodes SET heartbeat = {s}.now_s(), "
            "lease_until = {s}.now_s() + lease, room = %s, info = CASE WHEN %s::text IS "
            "NULL AND %s::text IS NULL THEN info ELSE (info::jsonb || jsonb_strip_nulls("
            "jsonb_build_object('refused', %s::jsonb, 'blocked', %s::jsonb)))::text END "
            "WHERE epoch = %s AND status IN ('active', 'draining') "
            "AND lease_until > {s}.now_s() RETURNING status) "
            "SELECT (SELECT status FROM r), (SELECT max(version) FROM {s}.schema_version)",
            (room, names, blocks, names, blocks, self.epoch))
        status, version = rows[0]
        self.schema_found = int(version or 0)
        return None if status is None else str(status)

    def mark_lost(self) -> list[tuple[int, str]]:
        """Mark the nodes whose lease lapsed ``lost`` (waiting for their writes in
        flight); ``[(epoch, name), ...]`` of those this call marked."""
        conn = self.connect()
        s = self._s
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '500ms'")
                rows = conn.execute(
                    f"UPDATE {s}.nodes SET status = 'lost' WHERE epoch IN (SELECT epoch FROM "
                    f"{s}.nodes WHERE status IN ('active', 'draining') AND lease_until < "
                    f"{s}.now_s() FOR UPDATE) AND status IN ('active', 'draining') "
                    f"AND lease_until < {s}.now_s() RETURNING epoch, name").fetchall()
        except psycopg.errors.LockNotAvailable:
            return []  # a write of that node is still in flight: next round
        return [(int(e), str(n)) for e, n in rows]

    def lost_among(self, epochs: Iterable[int]) -> set[int]:
        """Those of ``epochs`` whose row is ``lost`` (their lease lapsed, or their store
        gave up), not ``left`` (stopped as asked)."""
        wanted = list(epochs)
        if not wanted:
            return set()
        rows = self._rows("SELECT epoch FROM {s}.nodes WHERE epoch = ANY(%s) "
                          "AND status = 'lost'", (wanted,))
        return {int(epoch) for (epoch,) in rows}

    def give_up(self) -> bool:
        """This node leaves because its store gave up writing for good: its row is marked
        ``lost`` (after any write of it still in flight, by the row lock, as
        :meth:`mark_lost`) and its singletons are handed on, so the others take its
        workflows and singletons at once. False if a write of it is still in flight, or
        if the cluster connection is not open (dropped in an outage): no new one is
        made, as the server may not answer, and the node leaves without waiting for it
        (the others mark it lost once its lease lapses)."""
        conn = self.conn
        if conn is None or conn.closed or conn.broken:
            return False
        s = self._s
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '500ms'")
                conn.execute(f"SELECT 1 FROM {s}.nodes WHERE epoch = %s FOR UPDATE",
                             (self.epoch,))
                conn.execute(f"UPDATE {s}.nodes SET status = 'lost' WHERE epoch = %s "
                             "AND status IN ('active', 'draining')", (self.epoch,))
                conn.execute(f"UPDATE {s}.singletons SET epoch = 0 WHERE epoch = %s",
                             (self.epoch,))
        except psycopg.errors.LockNotAvailable:
            return False
        self.notify()
        return True

    def set_status(self, status: str, name: str | None = None) -> int:
        """Set a live node's status (``draining``; ``left`` when it closes); by name
        (a tool) or this node's own row. Notifies the cluster; returns rows changed."""
        # a drain asked stays in the row's info (``drain_asked``): a node cut off before
        # it read the status joins again under a new row, and drains then
        info = ("info = CASE WHEN %s = 'draining' THEN (info::jsonb || "
                "'{\"drain\": true}')::text ELSE info END")
        if name is None:
            rows = self._rows("UPDATE {s}.nodes SET status = %s, " + info + " WHERE epoch = %s "
                              "AND status IN ('active', 'draining') RETURNING epoch",
                              (status, status, self.epoch))
        else:
            # (a node whose lease lapsed is gone, though no live node marked it lost yet)
            rows = self._rows("UPDATE {s}.nodes SET status = %s, " + info + " WHERE name = %s "
                              "AND status IN ('active', 'draining') AND lease_until > "
                              "{s}.now_s() RETURNING epoch", (status, status, name))
        self.notify(_DRAIN_NOTE if status == "draining" else "")
        return len(rows)

    def drain_asked(self, epoch: int | None) -> bool:
        """Whether a drain was asked of incarnation ``epoch`` (see :meth:`set_status`),
        whatever its status is now (``lost``, once its lease lapsed)."""
        if epoch is None:
            return False
        rows = self._rows("SELECT info::jsonb ? 'drain' FROM {s}.nodes WHERE epoch = %s",
                          (epoch,))
        return bool(rows and rows[0][0])

    def notify(self, payload: str = "") -> None:
        self._rows("SELECT pg_notify(%s, %s)", (self.channel, payload))

    # -- ownership -------------------------------------------------------------------
    def fair_share(self, refused: list[str] | None = None,
                   blocked: list[Run] | None = None) -> int:
        """How many workflows this node may claim now: the claimable ones (owned by
        nobody, or by a node that is not live; not named in ``refused``, nor runs
        ``blocked``, see :meth:`claim`) shared over the active nodes that have room
        (``renew(room)``), rounded up, so that every round spreads them and what one
        node cannot take another takes on its next round."""
        rows = self._rows(
            f"SELECT (SELECT count(*) FROM {{s}}.workflows w WHERE {_UNFINISHED} AND "
            f"{_ORPHANED} AND {_NOT_REFUSED}), "
            "(SELECT count(*) FROM {s}.nodes WHERE status = 'active' "
            "AND lease_until > {s}.now_s() AND (room IS NULL OR room > 0))",
            _refusing(refused, blocked))
        claimable, nodes = (int(v) for v in rows[0])
        return -(-claimable // max(nodes, 1))

    def loads(self) -> tuple[int, dict[int, tuple[int, int | None, frozenset[str]]]]:
        """How the cluster's work is spread: the orphans some active node with room
        would claim (nobody live owns them; not ``pending``, those wait for a queue's
        admission; not of a name every such node refuses, see :meth:`renew`: code no
        node has waits for ever; not ``blocked``, left by a node whose code could not
        replay them: once every node tried, they wait for ever too), and for each
        active node (its lease not lapsed) ``epoch: (unfinished workflows it owns, its
        room, the names it refuses or blocked a run of)`` (what :meth:`renew` last said:
        room ``None`` is no limit; a node claims orphans of a name it blocked a run of,
        but one handed on to even the load, of a release its code cannot replay, would
        block there again)."""
        s = self._s
        rows = self._rows(
            f"SELECT n.epoch, (SELECT count(*) FROM {s}.workflows w WHERE w.owner_epoch = "
            f"n.epoch AND w.{_UNFINISHED}), n.room, coalesce(n.info::jsonb -> 'refused', "
            f"'[]'::jsonb)::text, coalesce(n.info::jsonb -> 'blocked', '[]'::jsonb)::text "
            f"FROM {s}.nodes n WHERE n.status = 'active' AND n.lease_until > {s}.now_s()")
        refusing = {int(e): (int(owned), None if room is None else int(room),
                             frozenset(json.loads(names)), frozenset(json.loads(blocked)))
                    for e, owned, room, names, blocked in rows}
        loads = {e: (owned, room, names | blocked)
                 for e, (owned, room, names, blocked) in refusing.items()}
        takers = [names for _n, room, names, _b in refusing.values()
                  if room is None or room > 0]
        if not takers:  # (no node would claim one)
            return 0, loads
        nobody = frozenset.intersection(*takers)  # (a name every one of them refuses)
        counted = self._rows(
            f"SELECT count(*) FROM {{s}}.workflows w WHERE w.{_UNFINISHED} AND "
            f"w.status NOT IN ('pending', 'blocked') AND {_ORPHANED} AND {_NOT_REFUSED}",
            _refusing(nobody, None))
        return int(counted[0][0]), loads

    def claim(self, limit: int, refused: list[str] | None = None,
              blocked: list[Run] | None = None) -> list[WorkflowRecord]:
        """Take up to ``limit`` orphaned or unowned unfinished workflows: those that ran
        first (oldest first), then those waiting in a queue (``pending``: by priority,
        then start order); their records, now owned by this node. Workflows named in
        ``refused`` (code this node cannot import), and the runs ``blocked`` (this
        node's code could not replay them), are left to the others, unless a
        terminate asks to end them (that takes no code).

        A claim whose connection is lost before its answer came (its COMMIT may have
        reached the server) sets :attr:`claim_unknown`: the caller reads :meth:`owned`
        once connected again, else what it claimed would stay this node's in the store,
        run by no one, while this node renews its lease.

        Those a terminate asks to end (a live request in their inbox) are taken beyond
        ``limit``, at most :data:`CLAIM_ASKED_MAX` a claim: ending one takes no code and
        no slot (left to the limit, one waited in a full cluster until a slot freed)."""
        records = self._claiming(lambda conn: self._claim(conn, limit, refused, blocked))
        records.sort(key=lambda r: (r.created, r.workflow_id))
        return records

    def _claiming(self, take: Callable[[psycopg.Connection[Any]], list[WorkflowRecord]]
                  ) -> list[WorkflowRecord]:
        """``take(conn)`` in a transaction of the cluster's connection: the workflows it
        claimed, whose wakeups are spent with it (their new owner loads everything). A
        connection lost before the answer sets :attr:`claim_unknown` (see :meth:`claim`)."""
        conn = self.connect()
        try:
            with conn.transaction():
                records = take(conn)
                if records:
                    conn.execute(f"DELETE FROM {self._s}.wakeups WHERE workflow_id = ANY(%s)",
                                 ([r.workflow_id for r in records],))
        except psycopg.OperationalError:
            if conn.closed or conn.broken:  # the outcome is unknown
                self.claim_unknown = True
            raise
        return records

    def _claim(self, conn: psycopg.Connection[Any], limit: int, refused: list[str] | None,
               blocked: list[Run] | None) -> list[WorkflowRecord]:
        s = self._s
        rows = [] if limit <= 0 else conn.execute(
            f"WITH c AS (SELECT w.workflow_id FROM {s}.workflows w "
            f"LEFT JOIN {s}.queue q ON q.workflow_id = w.workflow_id WHERE {_UNFINISHED} "
            f"AND {_ORPHANED.replace('{s}', s)} AND {_NOT_REFUSED.replace('{s}', s)} "
            "ORDER BY w.status = 'pending', q.priority DESC NULLS LAST, q.seq, w.created, "
            'w.workflow_id COLLATE "C" LIMIT %s FOR UPDATE OF w SKIP LOCKED) '
            f"UPDATE {s}.workflows w SET owner_epoch = %s, owner = %s FROM c "
            f"WHERE w.workflow_id = c.workflow_id AND {s}.fence(%s, NULL) "
            f"RETURNING {_CLAIMED}",
            (*_refusing(refused, blocked), limit, self.epoch, self.name,
             self.epoch)).fetchall()
        # and, whatever the room, those a terminate asks to end (read from the inbox's
        # unconsumed rows, few: not a look at each workflow waiting in a full cluster)
        asked = conn.execute(
            f"WITH c AS (SELECT w.workflow_id FROM {s}.workflows w WHERE {_UNFINISHED} "
            f"AND {_ORPHANED.replace('{s}', s)} AND w.workflow_id IN (SELECT i.workflow_id "
            f"FROM {s}.inbox i WHERE i.consumed_seq IS NULL AND i.kind = 'control') "
            'ORDER BY w.created, w.workflow_id COLLATE "C" LIMIT %s '
            "FOR UPDATE OF w SKIP LOCKED) "
            f"UPDATE {s}.workflows w SET owner_epoch = %s, owner = %s FROM c "
            f"WHERE w.workflow_id = c.workflow_id AND {s}.fence(%s, NULL) "
            f"RETURNING {_CLAIMED}",
            (CLAIM_ASKED_MAX, self.epoch, self.name, self.epoch)).fetchall()
        records = _claimed([*rows, *asked])
        if refused or blocked or asked:
            records = self._drop_stale(conn, records, set(refused or ()), set(blocked or ()),
                                       {str(row[0]) for row in asked})
        return records

    def claim_pending(self, workflow_ids: list[str]) -> list[WorkflowRecord]:
        """Take those of ``workflow_ids`` that wait ``pending`` owned by no live node, or
        by this one (left to the store as it was created here, its release dropped:
        ``ClusterMember.claim_now``), whatever this node's room (a workflow of this node
        spawned them by id: they start at once, as its children would); their records,
        now owned by this node. Fenced, and of unknown outcome on a lost connection, as
        :meth:`claim`."""
        if not workflow_ids:
            return []
        s = self._s

        def take(conn: psycopg.Connection[Any]) -> list[WorkflowRecord]:
            return _claimed(conn.execute(
                f"WITH c AS (SELECT w.workflow_id FROM {s}.workflows w "
                "WHERE w.workflow_id = ANY(%s) AND w.status = 'pending' "
                f"AND ({_ORPHANED.replace('{s}', s)} OR w.owner_epoch = %s) "
                # (waiting for a lock, not skipping the row: the spawner's own commit
                # holds it a moment, its monitor's key referring to it)
                "FOR UPDATE OF w) "
                f"UPDATE {s}.workflows w SET owner_epoch = %s, owner = %s FROM c "
                f"WHERE w.workflow_id = c.workflow_id AND {s}.fence(%s, NULL) "
                f"RETURNING {_CLAIMED}",
                (list(workflow_ids), self.epoch, self.epoch, self.name,
                 self.epoch)).fetchall())

        return self._claiming(take)

    def owned(self) -> list[WorkflowRecord]:
        """The unfinished workflows the store says this node's incarnation owns (after a
        claim of unknown outcome: those it does not run are the ones that claim took),
        in start order."""
        rows = self._rows(
            f"SELECT {WorkflowRecord.COLUMNS} FROM {{s}}.workflows WHERE owner_epoch = %s "
            f'AND {_UNFINISHED} ORDER BY created, workflow_id COLLATE "C"', (self.epoch,))
        return _claimed(rows)

    def _drop_stale(self, conn: psycopg.Connection[Any], records: list[WorkflowRecord],
                    refused: set[str], blocked: set[Run], asked: set[str]
                    ) -> list[WorkflowRecord]:
        """Of ``records`` (just claimed, in the claim's transaction), those of a
        ``refused`` name, or a run ``blocked`` here, and those ``asked`` (their ids:
        claimed beyond the room) were claimed for a request in their
        inbox: one that asks nothing more (a terminate of an earlier attempt, by
        :func:`requested_attempt`, the node's rule too) is consumed here and its workflow
        left unowned, in the same transaction. Consumed later by the node that loads the
        workflow, it raced that node's release of it: the release landing first, the
        consume was refused (fenced) and the workflow claimed and released again every
        round."""
        mine = {r.workflow_id: r for r in records if r.name in refused
                or (r.workflow_id, r.run_id, r.attempt) in blocked or r.workflow_id in asked}
        if not mine:
            return records
        rows = conn.execute(
            f"SELECT id, workflow_id, payload FROM {self._s}.inbox WHERE workflow_id = "
            "ANY(%s) AND consumed_seq IS NULL AND kind = 'control'", (list(mine),)).fetchall()
        stale: dict[str, list[int]] = {wid: [] for wid in mine}
        for row_id, wid, payload in rows:
            if wid not in stale:
                continue
            attempt = _request_attempt(payload)
            if attempt is not None and attempt < mine[wid].attempt:
                stale[wid].append(int(row_id))
            else:
                del stale[wid]  # a live request: the node ends the workflow
        if not stale:
            return records
        conn.execute(f"UPDATE {self._s}.inbox SET consumed_seq = 0 WHERE id = ANY(%s) "
                     "AND consumed_seq IS NULL", ([i for ids in stale.values() for i in ids],))
        conn.execute(f"UPDATE {self._s}.workflows SET owner_epoch = NULL, owner = NULL "
                     "WHERE workflow_id = ANY(%s)", (list(stale),))
        return [r for r in records if r.workflow_id not in stale]

    def owner_of(self, workflow_id: str) -> int | None:
        """The epoch owning ``workflow_id`` (read on the store's reader)."""
        rows = self.store._query(f"SELECT owner_epoch FROM {self._s}.workflows "
                                 "WHERE workflow_id = %s", (workflow_id,))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def owner_name(self, workflow_id: str) -> str | None:
        """The name of the node that owns ``workflow_id`` (read on the store's reader),
        or ``None`` while none does."""
        rows = self.store._query(f"SELECT owner FROM {self._s}.workflows "
                                 "WHERE workflow_id = %s", (workflow_id,))
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    def owned_live(self, workflow_id: str) -> bool:
        """Whether a live node (its lease not lapsed) owns ``workflow_id`` (read on the
        store's reader)."""
        s = self._s
        rows = self.store._query(
            f"SELECT 1 FROM {s}.workflows w JOIN {s}.nodes n ON n.epoch = w.owner_epoch "
            "WHERE w.workflow_id = %s AND n.status IN ('active', 'draining') "
            f"AND n.lease_until > {s}.now_s()", (workflow_id,))
        return bool(rows)

    def release(self, workflow_ids: list[str] | None) -> int:
        """Give up workflows this node runs (``None``: all of them) so that other nodes
        claim them at once; returns how many.

        An ended workflow keeps the node that ran it (as one that ended on a node that
        was lost does): only unfinished rows are released, found by the index of their
        owners. (Every row of the node's epoch would be each workflow it ever ended: a
        scan of the table and a new version of each row at every close.)"""
        if workflow_ids is None:
            rows = self._rows("UPDATE {s}.workflows SET owner_epoch = NULL, owner = NULL "
                              f"WHERE owner_epoch = %s AND {_UNFINISHED} RETURNING 1",
                              (self.epoch,))
        elif not workflow_ids:
            return 0
        else:
            rows = self._rows("UPDATE {s}.workflows SET owner_epoch = NULL, owner = NULL "
                              "WHERE owner_epoch = %s AND workflow_id = ANY(%s) RETURNING 1",
                              (self.epoch, workflow_ids))
        if rows:
            self.notify()
        return len(rows)

    # -- singleton services ----------------------------------------------------------
    def claim_singletons(self, wanted: list[str], services: list[str],
                         dropped: list[str] | None = None
                         ) -> tuple[set[str], dict[str, str]]:
        """Take the singleton services of ``wanted`` (those this node is to run) nobody
        live holds, and of the other ``services`` those started already whose holder is
        no longer live (lost, or it handed them on: see :meth:`release_singletons`);
        ``(those this node holds now, {service: the live node that holds it})``. A
        singleton no node asked for has no row: no node claims it. ``dropped``: those
        this node let go (they gave up here): it takes none of them over, and their
        rows it holds go (as of a singleton no node asked for: the next node that asks
        for one takes it): deleted once, in the first round that names them, not in
        every round while they stay let go."""
        if not services:
            return set(), {}
        s = self._s
        dropped = dropped or []
        taken = [sid for sid in services if sid not in dropped]
        # (one asked for again leaves the set before the round runs: a COMMIT that
        # lands but whose answer is lost leaves its row held here, to delete again)
        self._let_go.difference_update(wanted, taken)
        release = [sid for sid in dropped if sid not in self._let_go]
        released = 0
        conn = self.connect()
        # (a draining node holds its singletons until it has stopped them)
        gone = (f"NOT EXISTS (SELECT 1 FROM {s}.nodes n WHERE n.epoch = singletons.epoch "
                f"AND n.status IN ('active', 'draining') AND n.lease_until > {s}.now_s())")
        with conn.transaction():
            if release:
                released = conn.execute(
                    f"DELETE FROM {s}.singletons WHERE service = ANY(%s) AND epoch = %s",
                    (release, self.epoch)).rowcount
            if wanted:
                conn.execute(
                    f"INSERT INTO {s}.singletons (service, epoch, acquired) "
                    f"SELECT unnest(%s::text[]), %s, {s}.now_s() WHERE {s}.fence(%s, NULL) "
                    "ON CONFLICT (service) DO UPDATE SET epoch = EXCLUDED.epoch, "
                    "acquired = EXCLUDED.acquired WHERE singletons.epoch <> EXCLUDED.epoch "
                    f"AND {gone}", (wanted, self.epoch, self.epoch))
            conn.execute(
                f"UPDATE {s}.singletons SET epoch = %s, acquired = {s}.now_s() "
                f"WHERE service = ANY(%s) AND epoch <> %s AND {gone} "
                f"AND {s}.fence(%s, NULL)", (self.epoch, taken, self.epoch, self.epoch))
            rows = conn.execute(
                f"SELECT s.service, s.epoch, n.name FROM {s}.singletons s JOIN {s}.nodes n "
                "ON n.epoch = s.epoch AND n.status IN ('active', 'draining') AND "
                f"n.lease_until > {s}.now_s() WHERE s.service = ANY(%s)",
                (services,)).fetchall()
        # (committed: those let go now are deleted; one asked for again here left the
        # set above, and is deleted again when it is let go again)
        self._let_go = set(dropped)
        if released:  # (the others claim it at once)
            self.notify()
        held = {r[0] for r in rows if r[1] == self.epoch}
        return held, {r[0]: str(r[2]) for r in rows if r[1] != self.epoch}

    def release_singletons(self) -> None:
        """Hand this node's singleton services on (it drains or closes, its copies
        stopped): their rows stay, held by no node (epoch 0), so that another live
        node takes them over, as from a node lost (the next node to start, with none)."""
        rows = self._rows("UPDATE {s}.singletons SET epoch = 0 WHERE epoch = %s "
                          "RETURNING 1", (self.epoch,))
        if rows:
            self.notify()

    # -- cluster names ----------------------------------------------------------------
    # (run by ``garrison.cluster._names`` on a connection of its own, off the trio
    # thread and without the reader's retries: a statement that fails raises)
    def names_connection(self) -> Any:
        """A new connection for the cluster's names."""
        return self.store._connect("names")

    @staticmethod
    def refused_for_now(exc: BaseException) -> bool:
        """True if ``exc``, raised by a statement here, is the server refusing it for
        now rather than for what it does (cancelled by a ``statement_timeout`` or
        ``lock_timeout``, a deadlock, a read-only database during a failover): what the
        store tries again for its own writes (see ``PostgresStore.retried``)."""
        return refused_for_now(exc)

    def register_name(self, conn: Any, name: str, pid: str,
                      epoch: int | None = None) -> str | None:
        """Take ``name`` for ``pid`` unless a live node's process holds it; ``None`` on
        success, else the holder's pid. The row is this node's (``epoch``: its
        incarnation, by default the current one); the same pid takes it from another
        node (a workflow that moved here)."""
        s = self._s
        if epoch is None:
            epoch = self.epoch
        for _ in range(_NAME_TRIES):
            row = conn.execute(
                f"WITH t AS (INSERT INTO {s}.names (name, pid, epoch) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET pid = EXCLUDED.pid, epoch = EXCLUDED.epoch "
                "WHERE names.pid = EXCLUDED.pid OR NOT EXISTS (SELECT 1 FROM "
                f"{s}.nodes n WHERE n.epoch = names.epoch AND n.status IN "
                f"('active', 'draining')) RETURNING 1) SELECT (SELECT count(*) FROM t), "
                f"(SELECT pid FROM {s}.names WHERE name = %s)",
                (name, pid, epoch, name)).fetchone()
            taken, holder = row
            if taken:
                return None
            if holder is None:
                # the holder's row was committed while this statement waited for it: the
                # conflict saw it, this statement's snapshot (its SELECT) did not; a
                # statement of its own sees it (or, released since, the name is free)
                again = conn.execute(f"SELECT pid FROM {s}.names WHERE name = %s",
                                     (name,)).fetchone()
                holder = None if again is None else again[0]
            if holder is not None:
                return str(holder)
        raise StoreError(self.store.path, f"cluster name {name!r} was taken and released "
                         f"{_NAME_TRIES} times while this node registered it: try again")

    def unregister_name(self, conn: Any, name: str, pid: str,
                        epoch: int | None = None) -> None:
        """Release ``name`` if ``pid`` holds it under ``epoch`` (this node's incarnation
        that registered it; by default the current one). Not a row another node took
        for the same pid since: a workflow that moved there, from a node cut off that
        stops it (and releases its names) only when it wakes, holds its name there."""
        if epoch is None:
            epoch = self.epoch
        conn.execute(f"DELETE FROM {self._s}.names WHERE name = %s AND pid = %s "
                     "AND epoch = %s", (name, pid, epoch))

    def lookup_name(self, conn: Any, name: str) -> str | None:
        """The pid holding ``name`` on a live node, or ``None``."""
        row = conn.execute(
            f"SELECT m.pid FROM {self._s}.names m JOIN {self._s}.nodes n ON n.epoch = m.epoch "
            "WHERE m.name = %s AND n.status IN ('active', 'draining')", (name,)).fetchone()
        return None if row is None else str(row[0])

    # -- node-to-node messages ----------------------------------------------------------
    @property
    def quoted_schema(self) -> str:
        """The store's schema as an identifier quoted for SQL (``"garrison"``): its
        tables are ``{quoted_schema}.messages`` and so on."""
        return self._s

    def messages_connection(self) -> Any:
        """A new connection for the node-to-node messages (``garrison.cluster._remote``:
        a body too long for a ``NOTIFY`` is written to the messages table on it)."""
        return self.store._connect("messages")

    def node_channel(self, name: str) -> str:
        """The ``NOTIFY`` channel of the node ``name`` (at most 63 bytes)."""
        digest = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
        channel = f"{self.channel[:40]}:n:{digest}"
        if len(channel.encode()) > CHANNEL_MAX:  # a schema name of multibyte characters
            prefix = hashlib.blake2b(self.channel.encode(), digest_size=8).hexdigest()
            channel = f"garrison:#{prefix}:n:{digest}"
        return channel

    def live_epochs(self) -> dict[int, dict[str, Any]]:
        """``{epoch: info}`` of the live nodes (``info`` holds ``name`` too, ``status``,
        ``active`` or ``draining``, and ``left``: the seconds until its lease lapses
        unless renewed, by the server's clock). Read on the cluster's own connection,
        as the rounds' other statements: not on the store's reader, where a read of the
        node's that waits (a lock another session holds on ``workflows``, which this
        read does not need) would hold the rounds, and with them the lease's renewals."""
        rows = self._rows(
            "SELECT epoch, name, info, lease_until - {s}.now_s(), status "
            "FROM {s}.nodes WHERE status IN ('active', 'draining')")
        return {int(e): {**json.loads(info or "{}"), "name": n, "left": float(left),
                         "status": str(status)}
                for e, n, info, left, status in rows}

    def take_message(self, ref: int) -> str | None:
        """The body of a long message (and it is gone)."""
        rows = self._rows("DELETE FROM {s}.messages WHERE id = %s RETURNING body", (ref,))
        return str(rows[0][0]) if rows else None

    def cleanup_wakeups(self) -> None:
        """Wakeups of workflows that ended (or never existed) go (a schedule's stay for a
        day: every node reads them, see ``PostgresStore.take_wakeups``); so do the bodies of
        long node-to-node messages nobody took within an hour (sent to a node that was
        down or gone: its notification reached no one, and nothing else deletes them)."""
        self._rows(f"DELETE FROM {{s}}.wakeups w WHERE w.kind <> 'schedule' AND NOT EXISTS "
                   f"(SELECT 1 FROM {{s}}.workflows f WHERE f.workflow_id = w.workflow_id "
                   f"AND {_UNFINISHED})")
        self._rows("DELETE FROM {s}.wakeups WHERE kind = 'schedule' AND created < %s",
                   (time.time() - SCHEDULE_WAKEUP_TTL,))
        self._rows("DELETE FROM {s}.messages WHERE created < {s}.now_s() - %s",
                   (MESSAGE_TTL,))

    # -- reading -------------------------------------------------------------------
    def server_now(self) -> float:
        """The database server's clock (unix seconds), which leases are kept in."""
        return float(self._rows("SELECT {s}.now_s()")[0][0])

    def nodes(self, *, all_rows: bool = False) -> list[ClusterNode]:
        """The live nodes (every row with ``all_rows``), by name."""
        s = self._s
        where = "" if all_rows else "WHERE n.status IN ('active', 'draining')"
        rows = self.store._query(
            f"SELECT n.name, n.started, n.heartbeat, (SELECT count(*) FROM {s}.workflows w "
            f"WHERE w.owner_epoch = n.epoch AND w.{_UNFINISHED}), n.status, n.epoch, "
            f"n.lease_until, n.info FROM {s}.nodes n {where} ORDER BY n.name, n.epoch")
        return [ClusterNode(name, float(started), float(beat), int(count), status, int(epoch),
                            float(until), json.loads(info or "{}"))
                for name, started, beat, count, status, epoch, until, info in rows]

    def listen(self, channel: str) -> None:
        """Also listen on ``channel`` (this node's own: messages from other nodes)."""
        self.extra_channel = channel
        self._rows("LISTEN " + _quote(channel))

    def wait(self, timeout: float, wake_fd: int | None = None,
             inbox: list[str] | None = None) -> bool:
        """Wait up to ``timeout`` seconds for a notification on the cluster channels
        (or for ``wake_fd`` to be readable); True if one came. Payloads of the node's
        own channel go to ``inbox``; the hosts of ``slot_freed`` notifications to
        :attr:`freed` (they end the wait, but do not count)."""
        import select

        conn = self.connect()
        before = len(inbox) if inbox is not None else 0
        # notifications that arrived during other statements wait in psycopg's backlog,
        # where select() cannot see them: take those first
        if self._drain(conn, inbox) or (inbox is not None and len(inbox) > before):
            return True
        if self.freed:
            return False
        fds = [conn.pgconn.socket] + ([wake_fd] if wake_fd is not None else [])
        # (poll, not select: a node with over 1,024 descriptors open has some past
        # select's limit, where it raises at once and this thread would spin)
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        try:
            ready = [fd for fd, _events in poller.poll(max(timeout, 0.0) * 1000)]
        except OSError:
            return False
        got = False
        if wake_fd is not None and wake_fd in ready:
            with contextlib.suppress(OSError):
                os.read(wake_fd, 4096)
            got = True
        if conn.pgconn.socket in ready:
            got = self._drain(conn, inbox) or got
        return got

    def _drain(self, conn: psycopg.Connection[Any], inbox: list[str] | None) -> bool:
        got = False
        try:
            for note in conn.notifies(timeout=0.0):
                if note.channel == self.queue_channel:
                    self.freed.add(note.payload)
                    continue
                if note.channel == self.extra_channel:
                    if inbox is not None:
                        inbox.append(note.payload)
                    continue
                got = True
                if note.payload == _DRAIN_NOTE:
                    self.drain_heard = True
        except psycopg.OperationalError:
            self.close()
        return got


#: the payload of a drain's notification: the nodes read their status at once
_DRAIN_NOTE = "drain"


def require_cluster_store(store: Any) -> None:
    """``StoreError`` unless ``store`` is a PostgreSQL store at schema v2."""
    if not hasattr(store, "set_fence"):
        raise StoreError(getattr(store, "path", None),
                         "a cluster needs a PostgreSQL store (postgresql://...)")
