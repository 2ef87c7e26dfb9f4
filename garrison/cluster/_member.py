"""A node's membership in a cluster: its lease, the workflows it claims and hands on.

One :class:`ClusterMember` per workflow host whose store is a PostgreSQL store. Its
work is split in two:

- the **membership thread** (real time, its own connection, ``_pg_cluster.py``): every
  ``lease / 3``, and at once when the cluster channel is notified (a node left or
  drains, a tool created a workflow, a workflow was released), it renews the lease,
  marks the nodes whose lease lapsed ``lost``, releases what this node handed over,
  and claims its fair share of orphaned workflows. Every :data:`BALANCE_LEASES` leases
  it looks at how the workflows are spread: a node that holds clearly more than its
  share (at two looks in a row) hands workflows it took over, and that wait, to the
  nodes with fewer (a cold restart: the first node up claimed every orphan; a rolling
  deploy: the node restarted last got nothing). It also hears when a workflow of
  the host ended on any node (``slot_freed``), and tells the host's queue, which
  offers what waits for ``cluster_max_concurrent`` to the store again. A thread, not
  a trio task, so that a busy or virtual-time (``MockClock``) trio loop neither loses
  the lease nor spins;
- the **lease watch** (a thread of its own that does no I/O): the node measures its
  own lease. The server's ``lease_until`` is at least ``lease`` after the moment the
  last confirmed renewal was *sent*; unless a newer renewal is confirmed, the node
  takes its lease for lost :data:`LEASE_MARGIN` of a lease before that (so before any
  other node may take over), whatever the membership thread is doing (a renewal
  failing again and again, or one hung on a link that holds its bytes: every cluster
  statement is bounded too, ``PgCluster.bound``);
- the **trio side** (:meth:`run`): runs the claimed workflows, stops every workflow,
  singleton service and cluster name at once when the lease lapsed (by the server's
  answer, or by the node's own clock), then lets the thread join again under a new
  epoch once the store answers; hands workflows over when the node drains, and tells
  the node who was lost or left. The node that marked a node lost, and the oldest
  live node as a node is lost otherwise (its store gave up), ask for the children of
  ended parents it may have left unasked (``WorkflowHost.ask_children_of_ended_soon``):
  it may never start again.

The thread posts to trio with ``TrioToken.run_sync_soon`` (never blocks); trio pokes
the thread through a pipe.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg
import trio

from .._errors import StoreError, StoreLocked, WorkflowMoved
from ..hosts.workflow._ownership import adopt, hand_over, moved, parked
from ..persistence._blocking import virtual_clock
from ..persistence._pg_cluster import ClusterNode, PgCluster, Run

__all__ = ["ClusterMember"]

log = logging.getLogger("garrison.cluster")

#: the share of a lease a node keeps as a safety margin: it takes its own lease for
#: lost this much before the server may (clock rates, scheduling, the time the trio
#: side takes to stop what it runs)
LEASE_MARGIN = 0.25

#: rounds (each ``lease / 3``, at most 1 s while the store is out of reach) a node
#: that joined again after its lease lapsed waits at least before it claims orphaned
#: workflows: an outage past the lease lapsed every node's, and the others join again
#: about when the store answers (else the first one back, alone live, takes them all).
#: Past these rounds it waits on, one lease at most from its join, for the nodes it saw
#: live before the lapse to be live again (a loaded machine brings one back later)
REJOIN_WAIT = 2

#: leases between two looks of a node at how the cluster's workflows are spread (at
#: least :data:`BALANCE_MIN` seconds). A node hands workflows on to even the load only
#: when two looks in a row found it over its share (by :func:`balance`), so a burst of
#: its own starts, or a node that just joined and claims, moves nothing
BALANCE_LEASES = 3
BALANCE_MIN = 5.0
#: workflows a node remembers having handed on to even the load (see ``_handed``)
HANDED_KEPT = 10_000
#: the workflows the line of those that left as the lease lapsed names (it counts all)
LAPSE_NAMED = 5
#: runs of workflows a node remembers its code could not replay (see ``_blocked``)
BLOCKED_KEPT = 10_000
#: names of those runs a node says in its row (see ``_blocked_names``)
BLOCKED_NAMES_KEPT = 100
#: how long (seconds) a node says the name of a run it blocked: a rolling deploy's
#: old nodes have gone long before, and after it the balancer may hand the node runs
#: of that name again (by then the cluster's runs of it are the new release's)
BLOCKED_NAME_SAID = 600.0


def targets(loads: dict[int, tuple[int, int | None]]) -> tuple[int, dict[int, int]]:
    """The share of each node, given every active node's ``loads`` (``epoch: (workflows
    it owns, its room)``, room ``None``: no limit): the workflows over the nodes,
    rounded up, where a node that cannot take its share (what it owns and its room fall
    short) counts at what it can, and the others share the rest; ``(share, {epoch: what
    that node should own})``.

    >>> targets({1: (12, None), 2: (0, 2), 3: (10, None)})
    (10, {1: 10, 2: 2, 3: 10})
    """
    most = {e: n + room for e, (n, room) in loads.items() if room is not None}
    left, sharing = sum(n for n, _ in loads.values()), set(loads)
    share = 0
    while sharing:  # (a node that cannot take the share counts at what it can)
        share = -(-left // len(sharing))
        capped = {e for e in sharing if e in most and most[e] < share}
        if not capped:
            break
        left -= sum(most[e] for e in capped)
        sharing -= capped
    return share, {e: share if e in sharing else most[e] for e in loads}


def balance(loads: dict[int, tuple[int, int | None]], epoch: int) -> tuple[int, int]:
    """How many of its workflows the node ``epoch`` should hand on to even the load,
    given every active node's ``loads`` (``epoch: (workflows it owns, its room)``), and
    the share of each node (see :func:`targets`).

    The nodes over their share hand on together what the others lack of theirs;
    nothing unless that is at least 2 and a fifth of the share (a slight unevenness is
    not worth the replays). Each node's part is in proportion to how far over its share
    it is (the parts add up to the whole: two nodes over their share do not both fill
    one node's room).

    >>> balance({1: (12, None), 2: (0, None)}, 1)
    (6, 6)
    >>> balance({1: (12, None), 2: (0, 2), 3: (0, 0)}, 1)
    (2, 10)
    >>> balance({1: (16, None), 2: (0, 2), 3: (6, None)}, 1)
    (6, 10)
    >>> balance({1: (6, None), 2: (4, None)}, 1)
    (0, 5)
    """
    share, target = targets(loads)
    lack = sum(target[e] - n for e, (n, _room) in loads.items() if n < target[e])
    over = sorted((e, n - target[e]) for e, (n, _room) in loads.items() if n > target[e])
    excess = sum(x for _e, x in over)
    whole = min(excess, lack)
    if epoch not in dict(over) or whole < max(2, -(-share // 5)):
        return 0, share
    before = sum(x for e, x in over if e < epoch)  # (the parts, by epoch, add up exactly)
    mine = dict(over)[epoch]
    return whole * (before + mine) // excess - whole * before // excess, share


def recent(names: dict[str, float], since: float) -> list[str]:
    """The keys of ``names`` (each with its time, oldest first) from ``since`` on; the
    older ones are dropped from it.

    >>> names = {"a": 1.0, "b": 5.0}
    >>> recent(names, 2.0), names
    (['b'], {'b': 5.0})
    """
    while names and next(iter(names.values())) < since:
        del names[next(iter(names))]
    return list(names)


def pick(candidates: list[Any], count: int, takers: list[tuple[int, frozenset[str]]]
         ) -> list[Any]:
    """Up to ``count`` of the workflows ``candidates`` (each with a ``name``), each for
    one of the ``takers`` (``(how many it lacks, the names it refuses)``) that runs it;
    the taker refusing most is served first (what it runs goes to it, what it refuses
    may still go to another).

    >>> from types import SimpleNamespace as W
    >>> [w.wid for w in pick([W(wid="y", name="app:y"), W(wid="x", name="app:x")], 2,
    ...                      [(1, frozenset()), (1, frozenset({"app:x"}))])]
    ['y', 'x']
    """
    takers = sorted(takers, key=lambda taker: -len(taker[1]))
    lacks = [lack for lack, _names in takers]
    chosen: list[Any] = []
    for wf in candidates:
        if len(chosen) >= count:
            break
        for i, (_lack, names) in enumerate(takers):  # (the first that runs it)
            if lacks[i] > 0 and wf.name not in names:
                lacks[i] -= 1
                chosen.append(wf)
                break
    return chosen


class ClusterMember:
    """The cluster side of one workflow host (see the module docs)."""

    def __init__(self, host: Any, name: str, lease: float,
                 on_lost: Callable[[list[tuple[int, str]]], None] | None = None) -> None:
        self.host = host
        self.store = host.store
        self.name = name
        self.lease = lease
        self.interval = lease / 3
        self.pg = PgCluster(self.store, name, lease)
        self.draining = False
        #: set once a draining node has handed over every workflow
        self.drained = trio.Event()
        #: told of the nodes (``(epoch, name)``) that left the live set: lost (by this
        #: node's round or another's) or left; every node is told, not only the one that
        #: marked them lost
        self.on_lost = on_lost
        self._events: deque[tuple[str, Any]] = deque()
        self._ready = trio.Event()
        self._stop = threading.Event()
        self._rejoin = threading.Event()
        self._releases: list[str] = []
        #: pending workflows to claim at the next round whatever the room (see
        #: :meth:`claim_now`; guarded by ``_lock``)
        self._wanted: list[str] = []
        #: workflows this node stopped and gives up, until the thread released them:
        #: the store still names this node their owner meanwhile
        self._giving_up: set[str] = set()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._last_renew = 0.0
        #: (monotonic) when the last renewal (or join) the server confirmed was sent:
        #: the server's lease of this node ends at least ``lease`` after it
        self._confirmed = 0.0
        #: the lease was taken for lost ("lapsed" posted to the trio side) and the node
        #: has not joined again yet (guarded by ``_lock``)
        self._lapse_posted = False
        #: the trio side stopped everything after a lapse: the thread joins again
        #: (rounds do nothing else until a join succeeds)
        self._rejoining = False
        #: ... unless the node drained or stops: then it stays out of the cluster
        #: (see :meth:`_lapsed`), its thread idle until the node's close
        self._out = False
        self._watch_wake = threading.Condition(self._lock)
        self._watch: threading.Thread | None = None
        #: told when the lease lapsed (the node drops its cluster names)
        self.on_lapsed: Callable[[], None] | None = None
        self._first: list[Any] = []
        #: claimed by the thread, or at the join, not yet running (the trio side adopts
        #: them; the host resumes the join's: see :meth:`first_resumed`)
        self._in_flight = 0
        self._first_held = 0
        self._releasing = False
        #: when (this clock) the next other node's lease lapses unless it renews
        self._expiry = float("inf")
        #: (monotonic) no orphaned workflow is claimed before (see :data:`REJOIN_WAIT`)
        self._claim_after = 0.0
        #: after a rejoin: the names of the other nodes seen live before the lapse, not
        #: live again yet (a lease not lapsed, by the server's clock); and until when
        #: (monotonic) claims wait for them
        self._awaited: set[str] = set()
        self._await_until = 0.0
        #: a drain was notified since the last round: the round renews (which reads
        #: this node's status: a tool's drain is acted on at once)
        self._heard = False
        #: the config's singleton services (ids), those of them this node is to run
        #: (auto_start, required by one that is, or asked by ``start_service``: the
        #: only ones it claims; it takes over the others only once started elsewhere),
        #: and who to tell which this node holds, which other nodes hold (by name), and
        #: within how many seconds those it no longer holds must be gone (``None``:
        #: their stop timeouts); it returns an event set once applied, or ``None``
        self.singletons: list[str] = []
        self.wanted_singletons: frozenset[str] = frozenset()
        self.on_singletons: Callable[[set[str], dict[str, str] | None, float | None],
                                     trio.Event | None] | None = None
        self._nursery: trio.Nursery | None = None
        self._held: set[str] = set()
        self._elsewhere: dict[str, str] = {}
        #: claims of singletons asked by the trio side (guarded by ``_lock``), the last
        #: one a round answered (the thread), the last answer applied (the trio side)
        self._claims_asked = 0
        self._claims_posted = 0
        self._claims_applied = 0
        #: the singletons this node let go, as they gave up here (guarded by
        #: ``_lock``): it claims them no more, and releases those it holds still, until
        #: a ``start_service`` here asks for them again
        self._dropped: set[str] = set()
        self._claimed = trio.Event()
        #: other nodes' messages for this node's processes, and who acts on them
        self.on_remote: Callable[[list[str]], None] | None = None
        #: a node that was live is gone (lost or left): ``(name, pid prefix)``; also
        #: told of a node asked about (:meth:`check`) that is not live
        self.on_gone: Callable[[str, str | None, int | None], None] | None = None
        #: the live nodes changed: their ``(name, pid prefix)``s now
        self.on_live: Callable[[set[tuple[str, str | None]]], None] | None = None
        #: nodes (``(name, pid prefix)``) the trio side asks about (:meth:`check`)
        self._asked: set[tuple[str, str]] = set()
        self._live_keys: set[tuple[str, str | None]] | None = None
        #: told when this member starts draining, whoever asked (the node drains its
        #: other members too, so that ``Node.drained`` returns)
        self.on_drain: Callable[[], None] | None = None
        #: what other nodes need to know of this one (its process pids' prefix)
        self.info: dict[str, Any] = {}
        self._live: dict[int, dict[str, Any]] = {}
        #: the names of the other live nodes that claim workflows (not draining, their
        #: lease not lapsed) as this node released all its workflows (its drain done),
        #: read then; ``None`` until then, or if they could not be read
        self.released_to: list[str] | None = None
        #: the live nodes (``(name, pid prefix)``) when this node joined (read with the
        #: first claim: the thread's first view may come after those workflows resumed)
        self.live_at_join: set[tuple[str, str | None]] = set()
        #: the store gave up writing for good: this node left the cluster for good
        self.gave_up = False
        #: its row is written ``lost`` (after ``gave_up``: see ``_give_up``)
        self._marked_lost = False
        #: (trio side) set once the node acted on that: its workflows and singletons left
        #: it; ``failure`` is the store's error (``garrison run`` exits on it)
        self.left = trio.Event()
        self.failure: BaseException | None = None
        #: names of workflows whose code this node cannot import (``module:qualname``:
        #: the import error), never claimed again while it runs: a node of the cluster
        #: that has the code runs them (a rolling deploy)
        self._refused: dict[str, str] = {}
        #: the last :data:`BLOCKED_KEPT` runs (``(workflow id, run id, attempt)``) this
        #: node's code could not replay (see :meth:`blocked`), never claimed again while
        #: it runs (guarded by ``_lock``)
        self._blocked: dict[Run, None] = {}
        #: the names of the last :data:`BLOCKED_NAMES_KEPT` workflows whose runs this
        #: node's code could not replay, as its row says them: a node evening the load
        #: hands it none of those names (a run it took over, of the other release, would
        #: block here too: a replay and an error line each); orphans of them it still
        #: claims (a run of the new release, left by a node that drained, runs here);
        #: each with when it blocked (``time.monotonic()``), said for
        #: :data:`BLOCKED_NAME_SAID` seconds (guarded by ``_lock``)
        self._blocked_names: dict[str, float] = {}
        #: live nodes (epochs) whose cluster-wide limits were compared with this one's
        self._limits_seen: set[int] = set()
        #: :meth:`leave` stopped waiting for :meth:`leave_now` (the server did not answer)
        self._abandoned = False
        #: seconds between two looks at how the cluster's workflows are spread
        self.balance_every = max(BALANCE_MIN, BALANCE_LEASES * lease)
        self._next_balance = 0.0
        #: what the last look found this node could hand on (0: it was within its share)
        self._over = 0
        #: (monotonic) until then this node says it has no room and claims nothing: it
        #: handed workflows on to even the load, the nodes with fewer take them
        self._hold_until = 0.0
        #: the next round renews (says the node's room) whenever the last renewal was
        self._renew_now = False
        #: (epoch, the names this node refuses, the names of runs it blocked) its row
        #: said last (see ``PgCluster.loads``)
        self._said: tuple[int | None, frozenset[str], frozenset[str]] = (
            None, frozenset(), frozenset())
        #: (trio side) workflows this node took over (claimed) and runs: the ones it may
        #: hand on to even the load; one that runs where it was started stays there
        self._taken: set[str] = set()
        #: (trio side) the last :data:`HANDED_KEPT` workflows handed on to even the load:
        #: one that comes back (the others could not run it: no code for it there) is
        #: not handed on again, else it would go back and forth at every other look
        self._handed: dict[str, None] = {}
        # the workflows that left as the lease lapsed since it was last said: how many,
        # and the first LAPSE_NAMED of them
        self._lapse_left = 0
        self._lapse_named: list[str] = []
        #: workflows handed on to even the load, since the node started
        self.balanced = 0
        # (trio side) times this node's lease lapsed (its workflows left it), since the
        # node started, among the host's counts: ``garrison_cluster_lease_lapses_total``
        host.counts.setdefault("lease_lapses", 0)
        #: seconds a workflow stays ``blocked`` and claimed by no live node before a
        #: ``result()`` here takes its NonDeterminismError for its answer: the node that
        #: blocked it gives it up to any live node that has not tried it, and one whose
        #: code takes the recorded path (the node that handed it on to even the load,
        #: which claims nothing meanwhile: see :meth:`_shed`) claims it within a lease
        self.blocked_final_after = lease + 1.0

    @property
    def epoch(self) -> int | None:
        return self.pg.epoch

    # ------------------------------------------------------------ joining
    def join(self) -> None:
        """Join the cluster (at node start): a fresh epoch held by the store's writer,
        this node's row. ``StoreLocked`` if a live node has this name."""
        epoch = self.pg.new_epoch()
        self.store.set_fence(epoch, self.name, idle_ms=int(max(self.lease / 2, 0.5) * 1000))
        sent = time.monotonic()  # (the row's lease_until is the server's now + lease)
        try:
            refused = self._refused_names()  # (a node joining again still refuses them)
            blocked = self._blocked_name_list()
            # nodes whose lease lapsed are lost, as any live node would mark them: one of
            # this name (hung, not dead: its connections live on) no longer holds the
            # name when no other node is there to mark it
            self.pg.mark_lost()
            self.pg.join(epoch, {**self.info, "limits": self._shared_limits(),
                                 "refused": refused, "blocked": blocked})
        except BaseException:
            if self._thread is None:  # at start: the node does not start (joining again,
                self.store.set_fence(None, None)  # the fence stays: its epoch has no row,
            self.pg.close()                       # so every write is refused meanwhile)
            raise
        self._last_renew = time.monotonic()
        self._said = (epoch, frozenset(refused), frozenset(blocked))
        with self._lock:
            self._confirmed = sent
            self._lapse_posted = False
            self._watch_wake.notify_all()
        if self._thread is None:  # at start: what the node resumes (claimed now, before
            self.pg.mark_lost()   # the thread shares nothing of this connection)
            self._first = self.pg.claim(self._limit(), self._refused_names(),
                                        self._blocked_runs())
            with self._lock:  # (their slots, until the host has resumed them)
                self._first_held = len(self._first)
                self._in_flight += self._first_held
            # and the live nodes: a workflow it resumes asks a live node whether its
            # process is still there (a node not seen live: its processes are lost)
            self._live = self.pg.live_epochs()
            self._live_keys = self.live_at_join = {
                (str(info.get("name")), info.get("prefix")) for info in self._live.values()}
        log.info("node %s joined the cluster (epoch %d, lease %gs)", self.name, epoch,
                 self.lease)

    def _shared_limits(self) -> dict[str, Any]:
        """The host's limits that hold across the cluster (each node admits by its own
        config), as its row tells the other nodes; and its ``max_concurrent``, by which
        the store's admission tells a full node, whose waiting workflows hold up no
        other node's (they cannot start there now)."""
        limits = self.host.queue.limits
        return {"host": self.host.name, "cluster_max_concurrent": limits.cluster_max_concurrent,
                "rate": limits.rate, "starts": list(limits.starts or ()) or None,
                "max_concurrent": limits.max_concurrent}

    def _compare_limits(self, live: dict[int, dict[str, Any]]) -> None:
        """The thread: warn (once per node) of a live node whose host of this name has
        other cluster-wide limits: a node without ``cluster_max_concurrent`` or
        ``rate`` admits what it starts unchecked, so the limit silently holds for the
        other nodes' starts only."""
        mine = self._shared_limits()
        for epoch, info in live.items():
            if epoch == self.pg.epoch or epoch in self._limits_seen:
                continue
            self._limits_seen.add(epoch)
            theirs = info.get("limits")
            if not isinstance(theirs, dict) or theirs.get("host") != mine["host"]:
                continue  # (a node of an older garrison does not say)
            keys = ("cluster_max_concurrent", "starts")
            if all(theirs.get(k) == mine[k] for k in keys):
                continue

            def shown(limits: dict[str, Any]) -> str:
                return (f"cluster_max_concurrent={limits.get('cluster_max_concurrent')}, "
                        f"rate={limits.get('rate')}")

            log.warning("node %s: workflow host %r has %s here but %s on node %s: each "
                        "node admits the workflows it starts by its own config, so a "
                        "cluster-wide limit holds only where it is set; give every node the "
                        "same", self.name, mine["host"], shown(mine), shown(theirs),
                        info.get("name"))
        self._limits_seen.intersection_update(live)

    def _room(self) -> int | None:
        """How many more workflows this node takes (``None``: no limit): its host's room
        (``max_concurrent``), none while it hands workflows on to even the load."""
        if time.monotonic() < self._hold_until:
            return 0
        room: int | None = self.host.room()
        return room

    def _limit(self) -> int:
        """How many workflows to claim now: this node's fair share, within the room its
        host has (``max_concurrent``)."""
        share = self.pg.fair_share(self._refused_names(), self._blocked_runs())
        room = self._room()
        if room is None:
            return share
        with self._lock:  # claimed already, not running yet
            room -= self._in_flight
        return max(0, min(share, room))

    def first_claim(self) -> list[Any]:
        """The workflows this node resumes at start: orphans, up to its fair share
        (claimed when it joined)."""
        first, self._first = self._first, []
        self._took([r.workflow_id for r in first])
        return first

    def first_resumed(self) -> None:
        """The host resumed what :meth:`first_claim` gave (they hold their slots in its
        queue now): the thread's rounds no longer count them as claimed, not running.
        Counted until then, as the thread's first rounds run before the host resumes
        them: with its room still free they claimed more orphans beyond it."""
        with self._lock:
            self._in_flight -= self._first_held
            self._first_held = 0

    def _took(self, ids: list[str]) -> None:
        """(trio side) This node took the workflows ``ids`` over (claimed them)."""
        self._taken.update(wid for wid in ids if wid not in self._handed)

    def nodes(self) -> list[ClusterNode]:
        """The live nodes of the cluster."""
        return self.pg.nodes()

    # ------------------------------------------------------------ host hooks
    def stopped(self, wid: str) -> None:
        """A workflow stopped here without ending (handed over, or moved): if this node
        still owns it, release it so that another claims it at once."""
        self._taken.discard(wid)
        with self._lock:
            self._releases.append(wid)
            self._giving_up.add(wid)
        self.poke()
        if self.draining:
            self._ready.set()

    def left_as_lapsed(self, wid: str) -> None:
        """A workflow left this node because its lease lapsed (its write was refused,
        or the lapse stopped it): counted for the one line :meth:`_lapsed` logs."""
        self._lapse_left += 1
        if len(self._lapse_named) < LAPSE_NAMED:
            self._lapse_named.append(wid)

    def _say_lapse_left(self) -> None:
        """One line for the workflows that left as the lease lapsed (not one each:
        thousands of lines when a node that ran thousands loses its lease)."""
        count, named = self._lapse_left, self._lapse_named
        self._lapse_left, self._lapse_named = 0, []
        if count:
            log.info("node %s: %s workflow%s left this node as its lease lapsed (%s%s); "
                     "the node that claims one runs it (garrison workflows show ID names "
                     "it), and --log-level debug logs a line for each ('workflow ID left "
                     "this node')", self.name, f"{count:,}", "" if count == 1 else "s",
                     ", ".join(named), f" and {count - len(named):,} more"
                     if count > len(named) else "")

    def claim_now(self, wid: str) -> None:
        """A workflow here spawned ``wid`` (by its id), which waits ``pending`` in the
        store: claim it at once, whatever this node's room, if no live node has (it
        starts here outside the limits, as a child workflow does: ``queue.children``).
        A release of it still to be written (this node left it to the store as it was
        created, full) is dropped: its claim would find it this node's still, and the
        release, landing after, would take it from under its run."""
        with self._lock:
            self._wanted.append(wid)
            if wid in self._giving_up:
                self._giving_up.discard(wid)
                self._releases = [r for r in self._releases if r != wid]
        self.poke()

    def ended(self, wid: str, room: bool) -> None:
        """The workflow ``wid`` ended here: with a slot free (``room``), claim what waits;
        while draining, the drain may be over (it was the last one)."""
        self._taken.discard(wid)
        if room:
            self.poke()
        if self.draining:
            self._ready.set()

    def _refused_names(self) -> list[str]:
        with self._lock:
            return list(self._refused)

    def refused(self) -> dict[str, str]:
        """The workflow names this node refuses, each with its import error (see
        :meth:`refuse`): what ``node.stats()["cluster"]`` shows."""
        with self._lock:
            return dict(self._refused)

    def refuses(self, name: str) -> bool:
        """True if this node cannot run workflows named ``name`` (see :meth:`refuse`)."""
        with self._lock:
            return name in self._refused

    def refuse(self, wid: str, name: str, error: BaseException | None) -> None:
        """This node claimed the workflow ``wid`` but cannot import its code ``name``,
        or that is no workflow function here (``error``; ``None``: refused already): it
        gives the workflow up unrun and claims no workflow of that name again while it
        runs; a node that has the code claims it. One warning per name."""
        with self._lock:
            first = name not in self._refused
            if first:
                self._refused[name] = f"{type(error).__name__}: {error}"
        if first:
            log.warning("node %s cannot run workflow %s: its code %s does not run here "
                        "(%s); the workflow is left, unrun, to a node of the cluster that "
                        "has the code, and this node claims no %s workflow until it "
                        "restarts", self.name, wid, name, self._refused[name], name,
                        extra={"workflow_id": wid})
        else:
            log.debug("node %s leaves workflow %s to another node (no code for %s here)",
                      self.name, wid, name, extra={"workflow_id": wid})
        self.stopped(wid)

    def blocked(self, wid: str, run_id: str | None, attempt: int, name: str) -> None:
        """This node's code could not replay the workflow ``wid`` (it is recorded
        ``blocked``, its journal kept: a rolling deploy, its run recorded by code this
        node does not have): the host gives it up (:meth:`stopped`) for a node of the
        cluster whose code can, and this node claims that run's attempt no more while
        it runs. So every node tries it once, and where none can it stays blocked, owned
        by nobody; a node started with other code tries it, and so does every node
        after a retry (a new attempt). Its row says the workflow's ``name`` from the
        next renewal on: a node evening the load hands it no more of that name."""
        with self._lock:
            self._blocked[(wid, run_id, attempt)] = None
            while len(self._blocked) > BLOCKED_KEPT:
                del self._blocked[next(iter(self._blocked))]
            self._blocked_names.pop(name, None)  # (the latest last: kept longest)
            self._blocked_names[name] = time.monotonic()
            while len(self._blocked_names) > BLOCKED_NAMES_KEPT:
                del self._blocked_names[next(iter(self._blocked_names))]

    def _blocked_runs(self) -> list[Run]:
        with self._lock:
            return list(self._blocked)

    def _blocked_name_list(self) -> list[str]:
        """The names of runs this node blocked in the last :data:`BLOCKED_NAME_SAID`
        seconds (the older ones are forgotten)."""
        with self._lock:
            return recent(self._blocked_names, time.monotonic() - BLOCKED_NAME_SAID)

    def blocked_here(self, wid: str, run_id: str | None, attempt: int) -> bool:
        """True if this node's code could not replay that run of ``wid`` and gave it up
        (:meth:`blocked`) for a node of the cluster whose code can."""
        with self._lock:
            return (wid, run_id, attempt) in self._blocked

    def alone(self) -> bool:
        """True if no other node of the cluster is live in this node's view: a run it
        blocked has nobody else to try it, so that block is final now (a lone node's
        ``result()`` does not wait out :attr:`blocked_final_after`; a node joining
        later still tries it)."""
        epoch = self.pg.epoch
        return all(live == epoch for live in list(self._live))

    def tried_now(self, wid: str) -> bool:
        """True if a live node of the cluster owns the workflow ``wid`` (in the store): a
        ``blocked`` one is being tried there, or still given up by the node that blocked
        it (see :attr:`blocked_final_after`). Reads the store."""
        return self.pg.owned_live(wid)

    def giving_up(self, wid: str) -> bool:
        """True while this node has given ``wid`` up (:meth:`stopped`) and the thread has
        not released it yet: the store names this node its owner meanwhile."""
        with self._lock:
            return wid in self._giving_up

    def owns(self, wid: str) -> bool:
        """True if this node's incarnation owns the workflow ``wid`` (in the store), and
        has not given it up: until its release lands, the store names this node still,
        and a node that took it back then (a wakeup, ``result()``) would hold a workflow
        that others claim once released."""
        with self._lock:
            if wid in self._giving_up:
                return False
        return self.pg.owner_of(wid) == self.pg.epoch

    def moved(self, wf: Any, exc: WorkflowMoved) -> None:
        """The instance ``wf`` stopped because of ``exc`` (see ``_ownership.moved``)."""
        moved(self.host, wf, exc)

    def check(self, key: tuple[str, str]) -> None:
        """Ask whether the node ``key`` (``(name, pid prefix)``: a plain pid's node
        incarnation) is live: the next round (at once) tells ``on_gone`` if it is not."""
        with self._lock:
            if key in self._asked:
                return
            self._asked.add(key)
        self.poke()

    def poke(self) -> None:
        """Make the membership thread run a round now."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # pragma: no cover - closed, or the pipe is full (a round is due)
            pass

    # ------------------------------------------------------------ trio side
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until cancelled: start the membership thread, act on what it finds."""
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._thread_main, name=f"garrison-cluster-"
                                        f"{self.name}", daemon=True)
        self._thread.start()
        self._watch = threading.Thread(target=self._watch_main, name=f"garrison-lease-"
                                       f"{self.name}", daemon=True)
        self._watch.start()
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery  # (what a drain does meanwhile: see drain)
                await self._serve()
        finally:
            self._nursery = None
            self._stop.set()
            self._wake_watch()
            self.poke()

    async def _serve(self) -> None:
        """Act on what the membership thread posts, until cancelled."""
        while True:
            await self._ready.wait()
            # (the membership thread's first rounds may claim workflows before the
            # host runs: the node starts this task first, then the host)
            await self.host.until_serving()
            self._ready = trio.Event()
            while self._events:
                kind, data = self._events.popleft()
                if kind == "singletons":  # (answered, whatever its epoch)
                    epoch, data, elsewhere, answered = data
                    self._claims_applied = max(self._claims_applied, answered)
                    self._claimed.set()
                    self._claimed = trio.Event()
                if kind in ("claimed", "owned"):
                    epoch, data = data
                # found under an epoch whose lease lapsed since: the other nodes
                # take those (claimed workflows, singletons), not this one
                if kind in ("claimed", "owned", "singletons") and epoch is not None \
                        and not self._current(epoch):
                    if kind == "claimed":
                        with self._lock:
                            self._in_flight -= len(data)
                    continue
                if kind == "claimed":
                    try:
                        if self.draining:  # claimed as the drain began: hand them on
                            for record in data:
                                self.stopped(record.workflow_id)
                        else:  # (no more read once that epoch's lease lapsed, or a drain)
                            self._took(await adopt(self.host, data, self._still(epoch)))
                    finally:
                        with self._lock:  # (after they count in the host's active)
                            self._in_flight -= len(data)
                elif kind == "owned":
                    await self._owned(epoch, data)
                elif kind == "shed":
                    epoch, count, share, takers = data
                    if self._current(epoch):
                        self._shed(count, share, takers)
                elif kind == "lapsed":
                    await self._lapsed(by_server=bool(data))
                elif kind == "failed":
                    self._store_failed(data)
                elif kind == "drain":
                    self.drain()
                elif kind == "departed":  # (a node lost may never start again)
                    self.host.ask_children_of_ended_soon(data)
                elif kind == "lost" and self.on_lost is not None:
                    self.on_lost(data)
                elif kind == "singletons" and self.on_singletons is not None:
                    # (claimed as the drain began: not started, released with the rest);
                    # one no longer held is another node's now: it goes at once
                    if self.draining:
                        self.on_singletons(set(), elsewhere, None)
                    else:
                        with self._lock:  # (found before it was let go: released now)
                            data = data - self._dropped
                        self.on_singletons(data, elsewhere, 0.0)
                elif kind == "remote" and self.on_remote is not None:
                    self.on_remote(data)
                elif kind == "slots":
                    self.host.queue.poke()
                elif kind == "missed":  # (claim_now found them taken, or not pending)
                    self.host.queue.children.difference_update(data)
                elif kind == "released":
                    self.drained.set()
                elif kind == "live" and self.on_live is not None:
                    self.on_live(data)
                elif kind == "gone" and self.on_gone is not None:
                    for name, prefix, epoch in data:
                        self.on_gone(name, prefix, epoch)
            if (self.draining and not self.host.active and not self._releasing
                    and not self.drained.is_set()):
                self._releasing = True  # drained once the store says so
                with self._lock:
                    self._releases.append("*")
                self.poke()

    def _current(self, epoch: int) -> bool:
        """True if ``epoch`` is this node's incarnation and its lease has not lapsed (by
        the server's answer or this node's own clock): what a round found under an
        epoch whose lease lapsed since (claimed workflows, singletons held) is not run."""
        with self._lock:
            return epoch == self.pg.epoch and not self._lapse_posted

    def _still(self, epoch: int | None) -> Callable[[], bool]:
        """Whether what a round found under ``epoch`` is still this node's to run (see
        :meth:`_current`; ``None``: whatever the epoch), and the node does not drain
        (those not read yet are released with the rest): asked by ``adopt`` between the
        few hundred workflows it reads at a time."""
        return lambda: not self.draining and (epoch is None or self._current(epoch))

    def _post(self, kind: str, data: Any = None) -> None:
        """From the thread: hand an event to the trio side (never blocks)."""
        token = self._token
        if token is None:
            return

        def deliver() -> None:
            self._events.append((kind, data))
            self._ready.set()

        try:
            token.run_sync_soon(deliver)
        except trio.RunFinishedError:
            self._stop.set()

    async def _owned(self, epoch: int | None, records: list[Any]) -> None:
        """After a claim whose answer was lost: ``records`` are the unfinished workflows
        the store says this node owns. Those it neither runs, nor starts, nor gives up
        are what that claim took (it committed): they are run here (handed on by a
        draining node), else no node would run them while this one renews its lease."""
        host = self.host
        lost = [r for r in records if r.workflow_id not in host.active
                and not host.starting(r.workflow_id) and self.owns(r.workflow_id)]
        if not lost or host.closing:
            return
        log.warning("node %s: a claim whose answer was lost had committed: taking up the "
                    "%d workflows it claimed (%s)", self.name, len(lost),
                    ", ".join(r.workflow_id for r in lost[:10]))
        if self.draining:
            for record in lost:
                self.stopped(record.workflow_id)
        else:
            self._took(await adopt(self.host, lost, self._still(epoch)))

    def _shed(self, count: int, share: int, takers: list[tuple[int, frozenset[str]]]
              ) -> None:
        """Hand on up to ``count`` workflows this node took over and that wait (a message,
        a timer), each one a node under its ``share`` can run: ``takers`` are what
        each such node lacks and the names it refuses (code it does not have, or that
        blocked a run of that name there: see :meth:`blocked`). Those
        nodes claim them (this one claims nothing meanwhile, see :meth:`_room`). One
        that runs where it was started stays here."""
        host = self.host
        if self.draining or host.closing:
            return
        self._taken.intersection_update(host.active)  # (those that ended or moved go)
        chosen = pick([wf for wid, wf in host.active.items() if wid in self._taken
                       and parked(wf) and not self.giving_up(wid)], count, takers)
        if not chosen:
            return
        # no room said at once (before any of them is released): the nodes with fewer
        # claim them, not this one
        self._hold_until = time.monotonic() + max(2 * self.interval, 1.0)
        self._renew_now = True
        log.info("node %s runs %d workflows, over its share of the cluster's (%d): it hands "
                 "%d of those it took over, waiting, to the nodes with fewer", self.name,
                 len(host.active), share, len(chosen))
        exc = WorkflowMoved(self.store.path, None, f"node {self.name} evens the load: the "
                            "workflow moves to a node with fewer")
        for wf in chosen:
            hand_over(host, wf, exc, now=True)
            self._taken.discard(wf.wid)
            self._handed[wf.wid] = None
        while len(self._handed) > HANDED_KEPT:
            del self._handed[next(iter(self._handed))]
        self.balanced += len(chosen)

    async def _lapsed(self, *, by_server: bool = False) -> None:
        """The lease lapsed: every workflow here stops at once (their writes are refused
        anyway); once they are gone, the thread joins again under a new epoch. Its
        singletons are gone before another node may start them: their stop gets what
        is left of the lease (by this node's clock), none once it ended (a node that
        wakes from a pause past it, or the server said so: ``by_server``)."""
        host = self.host
        host.counts["lease_lapses"] += 1
        exc = WorkflowMoved(self.store.path, None, f"node {self.name}'s lease lapsed (it was "
                            "cut off from the store): its workflows go to the next node of "
                            "the cluster that claims them", lease_lapsed=True)
        if self.on_singletons is not None:
            with self._lock:  # (the server's lease ends at least a lease after it)
                ends = self._confirmed + self.lease
            self.on_singletons(set(), None, 0.0 if by_server else ends - time.monotonic())
        if self.on_lapsed is not None:
            self.on_lapsed()  # its cluster names count no more: others may take them
        running = [wf for wf in host.active.values() if not wf.done.is_set()]
        if host.closing or self.draining:  # (it does not join again)
            log.warning("node %s lost its lease as it %s: its %d workflows stop here; the "
                        "next node of the cluster that claims them resumes them", self.name,
                        "stopped" if host.closing else "drained", len(running))
        else:
            log.warning("node %s lost its lease: stopping its %d workflows still running "
                        "here (any whose writes were refused meanwhile left already) and "
                        "its singleton services (the other nodes of the cluster take them, "
                        "or this one once it joins again, when the store answers)",
                        self.name, len(running))
        for wf in list(host.active.values()):  # blocked ones too: they leave at once
            hand_over(host, wf, exc, now=True)
        if self.draining:
            # nothing is left to hand over (and the store, out of reach, would release
            # nothing): the node's stop ends what is still stopping
            self.drained.set()
        with trio.move_on_after(max(self.lease, 1.0)):
            for wf in running:
                await wf.exited.wait()
        self._say_lapse_left()
        late = []
        for wf in running:  # whatever did not stop in time is no longer ours anyway
            if host.active.get(wf.wid) is wf:
                del host.active[wf.wid]
                if not wf.exited.is_set():
                    late.append(wf.wid)
        if late:  # (fenced by the incarnation they ran under: they write nothing more)
            log.warning("node %s: %d of its workflows did not stop within %gs of its lease "
                        "lapsing (%s%s): what they run does not end when cancelled (a "
                        "blocking call in a worker thread, a commit the server has not "
                        "answered); they write nothing more, and end once it returns",
                        self.name, len(late), max(self.lease, 1.0), ", ".join(late[:10]),
                        ", ..." if len(late) > 10 else "")
        if host.closing or self.draining:
            # a node that stops, or drained (it stops next, as ``garrison run`` does),
            # stays out: joined again, it took a fresh epoch and said it would claim
            # orphans as it shut down. Its close leaves under the lapsed epoch (its row
            # ``left``, unless a node marked it lost). A drain begun meanwhile is over
            # too: nothing is left to hand over
            if self.draining:
                self.drained.set()
            self._out = True
        self._rejoin.set()

    def _store_failed(self, error: Any) -> None:
        """The store gave up writing for good and this node left the cluster: its
        workflows (stopped by the store's error, or stopping now) and its singleton
        services leave it; other nodes run them."""
        host = self.host
        if self.on_singletons is not None:  # (handed on in the store by the thread now,
            # or once this node's lease lapses: this node's copies stop)
            self.on_singletons(set(), None, 0.0)
        exc = WorkflowMoved(self.store.path, None, f"node {self.name}'s store failed "
                            f"({error}): its workflows go to the other nodes of the "
                            "cluster (with none live, to the next node)")
        for wf in list(host.active.values()):
            hand_over(host, wf, exc, now=True)
        if self.draining:  # nothing is left to hand over
            self.drained.set()
        self.failure = error
        self.left.set()

    def drain(self) -> None:
        """Take no new work; hand every workflow over at its next durable point (at once
        for one that waits). ``drained`` is set once none is left."""
        if self.draining:
            return
        self.draining = True
        host = self.host
        if self._nursery is not None:
            self._nursery.start_soon(self._give_singletons_up)
        log.info("node %s drains: handing over its %d workflows", self.name, len(host.active))
        exc = WorkflowMoved(self.store.path, None, f"node {self.name} drains: the workflow "
                            "moves to another node")
        for wf in list(host.active.values()):
            hand_over(host, wf, exc, now=False)
        self._ready.set()
        if self.on_drain is not None:
            self.on_drain()

    async def _give_singletons_up(self) -> None:
        """Draining: stop this node's singleton services, then let the thread release
        them in the store. (Released first, another node started its copy of a service
        while this one's still ran, for as long as it took to stop.)"""
        if self.on_singletons is not None:
            applied = self.on_singletons(set(), None, None)
            if applied is not None:
                await applied.wait()
        with self._lock:
            self._releases.append("!singletons")
        self.poke()

    def drop_singleton(self, service: str) -> None:
        """The singleton ``service`` gave up here (what requires it stopped): the next
        round releases it (its row goes: claimed by the next node that asks, one that
        auto-starts it or a ``start_service``), and this node claims it no more, nor
        takes it over, until :meth:`want_singletons` asks for it again."""
        with self._lock:
            self._dropped.add(service)
        self.poke()

    async def want_singletons(self, services: set[str]) -> None:
        """``start_service`` asks this node to run the singletons ``services``: the next
        round claims those nobody live holds; returns once that round's answer is
        applied (held here: started; held by another node: ``node`` of their
        ``node.services()``), or after a lease without one (the store out of reach, the
        node draining: they are not started here)."""
        if self.draining:  # (it claims nothing more: they are handed on)
            return
        self.wanted_singletons = self.wanted_singletons | services
        with self._lock:
            self._dropped -= services
            self._claims_asked += 1
            asked = self._claims_asked
        self.poke()
        with trio.move_on_after(self.lease):
            while self._claims_applied < asked:
                await self._claimed.wait()

    def request_drain(self) -> None:
        """Drain now, and mark this node draining in the store (the thread writes it at
        once; a store out of reach does not hold the drain back: with the lease lapsed
        meanwhile, nothing is left to hand over)."""
        with self._lock:
            self._releases.append("!drain")
        self.poke()
        self.drain()

    async def leave(self, within: float) -> None:
        """The node closes (its workflows stopped): :meth:`leave_now`, waiting at most
        ``within`` seconds for a server that does not answer (down, or stalled: the
        other nodes then take its workflows once its lease lapses). Never raises."""
        if virtual_clock():  # (a MockClock would jump past ``within`` at once)
            self.leave_now()
            return
        with trio.move_on_after(within) as waited:
            await trio.to_thread.run_sync(self.leave_now, abandon_on_cancel=True)
        if waited.cancelled_caught:
            self._abandoned = True  # (its own failure, later, is not told again)
            self.pg.cut()  # what it waits on ends now
            log.warning("node %s could not leave the cluster cleanly: the server did not "
                        "answer within %gs (its workflows move when its lease lapses)",
                        self.name, within)

    def leave_now(self) -> None:
        """Release the node's workflows and singletons, mark its row ``left``, stop the
        thread. Synchronous; never raises."""
        self._stop.set()
        self._wake_watch()
        self.poke()
        cut = self.store.cut  # the server did not answer the node's stop: not waited for
        if cut is not None:
            self.pg.cut()
        if self._thread is not None:
            self._thread.join(timeout=10 if cut is None else 1)
        try:
            if cut is not None:
                raise StoreError(self.store.path, cut)
            # (a node whose store gave up left already: its row is ``lost``, or lapses;
            # marking it ``left`` would not wait for a write of it in flight, as
            # ``give_up`` does, and a server out of reach would hold the node's exit)
            if self.pg.epoch is not None and not self.gave_up:
                self.pg.release_singletons()
                self.pg.release(None)
                self.pg.set_status("left")
        except (psycopg.Error, StoreError) as exc:
            if not self._abandoned:
                log.warning("node %s could not leave the cluster cleanly: %s (its "
                            "workflows move when its lease lapses)", self.name,
                            self.store.error_text(exc))
        finally:
            self.pg.close()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:  # pragma: no cover
                    pass

    # ------------------------------------------------------------ the lease watch
    def _wake_watch(self) -> None:
        with self._lock:
            self._watch_wake.notify_all()

    def deadline(self) -> float:
        """(monotonic) When this node takes its lease for lost unless a renewal is
        confirmed first: :data:`LEASE_MARGIN` of a lease before the server may."""
        return self._confirmed + self.lease * (1 - LEASE_MARGIN)

    def _watch_main(self) -> None:
        """The lease watch: no I/O, so neither a renewal failing nor one hung on a dead
        link keeps it from stopping this node's work before another node may take it."""
        with self._lock:
            while not self._stop.is_set():
                if self._lapse_posted or self.gave_up:
                    self._watch_wake.wait()
                    continue
                left = self.deadline() - time.monotonic()
                if left > 0:
                    self._watch_wake.wait(left)
                    continue
                self._lapse_posted = True
                log.debug("node %s: no renewal confirmed for %.2fs (lease %gs)", self.name,
                          time.monotonic() - self._confirmed, self.lease)
                self._post("lapsed")

    def _lapse(self) -> None:
        """The thread: the lease lapsed (by the server's answer, or by this node's own
        clock): the trio side stops everything (told once), then the rounds join again."""
        with self._lock:
            first = not self._lapse_posted
            self._lapse_posted = True
        if first:  # (the server said so: the watch had not taken it for lost yet)
            self._post("lapsed", True)
        while not self._rejoin.wait(0.1):
            if self._stop.is_set():
                return
        self._rejoin.clear()
        if self._out:  # (nothing more to hear: its close leaves, on a connection anew)
            self.pg.close()
            self._stop.wait()
            return
        with self._lock:
            self._releases.clear()
            self._giving_up.clear()
        self._held = set()
        self._rejoining = True
        self._join_again()

    def _join_again(self) -> None:
        """Join under a new epoch (raises while the store is out of reach: the next
        round tries again, and does nothing else until it succeeds). If a live node has
        this node's name now (started while this one was cut off), this one leaves the
        cluster for good: the name is the other's, and so is what it runs."""
        old = self.pg.epoch
        asked = self.pg.drain_asked(old)  # (a tool's drain the node never read)
        try:
            self.join()
        except StoreLocked as exc:
            self._rejoining = False
            self._give_up(self.store.stop_writing(
                f"node {self.name} cannot join the cluster again: {exc.held}; it took this "
                "node's place while this one was cut off from the store past its lease, so "
                "this node writes nothing more: stop it"), why="")
            return
        self._rejoining = False
        now = time.monotonic()
        self._claim_after = now + REJOIN_WAIT * min(self.interval, 1.0)
        self._awaited = {str(info.get("name")) for epoch, info in self._live.items()
                         if epoch != old and info.get("name") != self.name}
        self._await_until = max(now + self.lease, self._claim_after)
        if self._awaited:
            log.info("node %s joined the cluster again: it claims orphaned workflows once "
                     "%s (live before its lease lapsed) joined again too, or in %gs",
                     self.name, ", ".join(sorted(self._awaited)), self._await_until - now)
        self._over = 0  # (a look before the lapse says nothing of the cluster now)
        if asked or self.draining:  # the drain goes on under the new incarnation
            if asked and not self.draining:
                log.info("node %s: a drain was asked of it before its lease lapsed: it "
                         "drains now", self.name)
            with self._lock:
                self._releases.append("!drain")
            self.poke()

    # ------------------------------------------------------------ the thread
    def _thread_main(self) -> None:
        rounds = 0
        due = True
        inbox: list[str] = []
        try:
            self.pg.listen(self.pg.node_channel(self.name))
        except (psycopg.Error, StoreError) as exc:
            log.warning("node %s: cannot listen for other nodes' messages: %s", self.name,
                        self.store.error_text(exc))
        failing: str | None = None  # what the rounds fail of (told once, until it changes)
        while not self._stop.is_set():
            if due or time.monotonic() - self._last_renew >= self.interval:
                try:
                    self._round(rounds)
                    rounds += 1
                    due = False
                    if failing is not None and self.store.cut is None and not self.gave_up:
                        # (a round of a node that stops, its server out of reach, or
                        # that gave up, returns at once: it did not reach the server)
                        failing = None
                        log.info("node %s: its cluster rounds work again", self.name)
                except (psycopg.Error, StoreError, OSError) as exc:
                    if self._stop.is_set():  # (the node stops: cut off, or leaving)
                        return
                    said = self.pg.error_text(exc)
                    if said != failing:  # (once a round, it would fill the log)
                        failing = said
                        log.warning("node %s: cluster round failed: %s (tried again every "
                                    "%gs; said again only if it changes)", self.name, said,
                                    min(self.interval, 1.0))
                    if self.pg.kept(exc):  # (a lock's wait the server ended: listening)
                        if self._listen_for(min(self.interval, 1.0), inbox):
                            return
                        continue
                    self.pg.close()
                    if self._stop.wait(min(self.interval, 1.0)):
                        return
                    continue
            now = time.monotonic()
            # awake when the next renewal is due, or just after another node's lease
            # would lapse (so a lost node is taken over at once, not up to lease/3 later)
            wait = min(self.interval - (now - self._last_renew), self._expiry - now + 0.02)
            if self._claim_after > now:  # (a round as soon as it may claim)
                wait = min(wait, self._claim_after - now + 0.02)
            try:
                due = self.pg.wait(wait, self._wake_r, inbox)
                self._heard = self._heard or self.pg.drain_heard
                self.pg.drain_heard = False
            except (psycopg.Error, StoreError, OSError) as exc:
                # the server restarting or out of reach: this thread must outlive it
                # (it renews the lease and carries other nodes' messages)
                if self._stop.is_set():
                    return
                said = self.store.error_text(exc)
                if said != failing:
                    failing = said
                    log.warning("node %s: waiting for the cluster failed: %s", self.name,
                                said)
                self.pg.close()
                due = True
                if self._stop.wait(min(self.interval, 1.0)):
                    return
            if time.monotonic() >= self._expiry:
                due = True
                self._expiry = float("inf")
            if self._claim_after and time.monotonic() >= self._claim_after:
                due = True
                self._claim_after = 0.0
            if inbox:  # messages of other nodes: handed on at once, in order
                self._post("remote", self._bodies(inbox))
                inbox = []
            if self.pg.freed:  # a slot of a host with cluster_max_concurrent freed
                freed, self.pg.freed = self.pg.freed, set()
                if self.host.name in freed:
                    self._post("slots")

    def _listen_for(self, seconds: float, inbox: list[str]) -> bool:
        """(thread) A failed round's pause of ``seconds`` on the cluster session, kept
        through the failure (:meth:`PgCluster.kept`): the other nodes' messages, which
        need no table, are handed on meanwhile, not held until the rounds work again.
        True if the node stops."""
        until = time.monotonic() + seconds
        while not self._stop.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return False
            try:
                self.pg.wait(left, self._wake_r, inbox)
            except (psycopg.Error, StoreError, OSError):
                self.pg.close()  # (the next round connects again)
                return self._stop.wait(max(until - time.monotonic(), 0.0))
            if inbox:
                self._post("remote", self._bodies(inbox))
                inbox.clear()
            if self.pg.freed:
                freed, self.pg.freed = self.pg.freed, set()
                if self.host.name in freed:
                    self._post("slots")
        return True

    def _may_claim(self, live: dict[int, dict[str, Any]]) -> bool:
        """(thread) Whether this round may claim orphaned workflows: not before
        :data:`REJOIN_WAIT` rounds after a rejoin, and then not before the nodes seen
        live before the lapse are ``live`` again (one lease at most; see
        :data:`REJOIN_WAIT`)."""
        now = time.monotonic()
        if now < self._claim_after:
            return False
        if self._awaited:
            back = {str(info.get("name")) for info in live.values()
                    if info.get("left", 0.0) > 0}
            if self._awaited <= back:
                self._awaited = set()
            elif now < self._await_until:
                return False
            else:
                log.info("node %s claims orphaned workflows: %s did not join the cluster "
                         "again within its lease", self.name,
                         ", ".join(sorted(self._awaited - back)))
                self._awaited = set()
        return True

    def _look_at_balance(self) -> None:
        """(thread) Compare this node's workflows with its share of the cluster's; over
        it at two looks in a row (and no orphan waits to be claimed), ask the trio side
        to hand its part of the excess on (:meth:`_shed`: it then claims nothing for two
        rounds, renewing at once with no room, so the nodes with fewer take them)."""
        pg = self.pg
        if self.draining or self._stop.is_set() or pg.epoch is None:
            self._over = 0
            return
        orphans, loads = pg.loads()
        held = {e: (n, room) for e, (n, room, _names) in loads.items()}
        count, share = (0, 0) if orphans or pg.epoch not in loads else balance(held, pg.epoch)
        over, self._over = self._over, count
        if not count or not over:
            return
        self._over = 0
        # what each node short of its share lacks, and the names it refuses or blocked a
        # run of (one of those handed to it would come back, after a replay there)
        _share, target = targets(held)
        takers = [(target[e] - n, names) for e, (n, _room, names) in loads.items()
                  if n < target[e]]
        self._post("shed", (pg.epoch, min(count, over), share, takers))

    def _bodies(self, notes: list[str]) -> list[str]:
        out = []
        for text in notes:
            if text.startswith('{"k": "ref"'):  # a long one waits in the messages table
                try:
                    body = self.pg.take_message(int(json.loads(text)["id"]))
                except (psycopg.Error, StoreError, ValueError, KeyError) as exc:
                    log.warning("node %s: a long message was lost: %s", self.name,
                                self.store.error_text(exc))
                    continue
                if body is not None:
                    out.append(body)
            else:
                out.append(text)
        return out

    def _release(self, releases: list[str]) -> None:
        """The thread: what the trio side gave up (``stopped``: workflow ids; ``"*"``:
        all; ``"!drain"``: mark this node draining)."""
        pg = self.pg
        if "!drain" in releases:
            pg.set_status("draining")
            self._post("drain")
        if "!singletons" in releases and self._held:  # the trio side stopped them
            pg.release_singletons()
            self._held = set()
        ids = [w for w in releases if w not in ("*", "!drain", "!singletons")]
        if ids:
            pg.release(ids)
            with self._lock:
                self._giving_up.difference_update(ids)
        if "*" in releases:
            pg.release(None)
            try:  # (who takes them: a drained node's last line names them; a node
                # draining too claims none, nor one whose lease lapsed unmarked)
                if self.draining:
                    self.released_to = sorted({
                        str(info.get("name")) for epoch, info in pg.live_epochs().items()
                        if epoch != pg.epoch and info.get("status") == "active"
                        and info.get("left", 0.0) > 0})
            except (psycopg.Error, StoreError, OSError):
                self.released_to = None
            self._post("released")

    def _give_up(self, failed: StoreError, why: str = "its store failed: ") -> None:
        """The thread: the store writes nothing more (``failed``): renewing the lease
        would keep this node's workflows (and the orphans it claims) where nothing of
        them is recorded, so the node leaves the cluster at once, whether or not the
        server answers (it used to wait for its row to be written ``lost``: for a whole
        outage, a dead node that never exited). Marking the row ``lost`` is only a
        shortcut for the others, tried once on the cluster connection as it is; without
        it (the server out of reach, or a write of this node in flight), they take its
        workflows once its lease, never renewed again, lapses."""
        self.gave_up = True
        log.error("node %s leaves the cluster: %s%s; its workflows move to the other "
                  "nodes (with none live, they wait in the store for the next node)",
                  self.name, why, failed)
        self._post("failed", failed)
        if not self._mark_lost():
            log.warning("node %s could not mark itself lost in the cluster: the other "
                        "nodes take its workflows once its lease lapses (in %gs at most); "
                        "tried again at each round while its cluster connection is open",
                        self.name, self.lease)

    def _mark_lost(self) -> bool:
        """Try to write this node's row ``lost`` (``PgCluster.give_up``: on the cluster
        connection as it is, none made anew); True once it is."""
        try:
            self._marked_lost = bool(self.pg.give_up())
        except (psycopg.Error, StoreError, OSError):
            self._marked_lost = False
        return self._marked_lost

    def _left(self) -> None:
        """The thread's round once this node left the cluster for good (``gave_up``):
        nothing to renew, claim or release (its row is ``lost``, the others took its
        workflows), but a drain asked now is answered at once (``garrison run`` exits on
        SIGTERM: nothing is left to hand over). The next round is an interval away, as
        after a renewal: with none, the thread's wait was negative and it spun."""
        self._last_renew = time.monotonic()
        if not self._marked_lost:  # (a write of this node was in flight, say: again)
            self._mark_lost()
        with self._lock:
            releases, self._releases = self._releases, []
            self._giving_up.clear()
        if "!drain" in releases:
            self._post("drain")
        if "*" in releases:
            self._post("released")

    def _round(self, rounds: int) -> None:
        pg = self.pg
        if self.gave_up:
            self._left()
            return
        if self.store.cut is not None:  # the node stops, its server out of reach: it
            return  # leaves (no "leaves the cluster: its store failed" on the way out)
        failed = getattr(self.store, "failed", None)
        if failed is not None:
            self._give_up(failed)
            return
        if self._rejoining:  # lapsed, everything stopped: only joining again is left
            self._join_again()
            return
        with self._lock:
            lapsed = self._lapse_posted
        if lapsed:  # by this node's own clock (the lease watch): never renewed again
            self._lapse()
            return
        now = time.monotonic()
        heard, self._heard = self._heard, False
        if (now - self._last_renew >= self.interval / 2 or rounds == 0 or heard
                or self._renew_now):
            self._renew_now = False
            refused = frozenset(self._refused_names())  # (said when they change)
            blocked = frozenset(self._blocked_name_list())
            said = (pg.epoch, refused, blocked) == self._said
            status = pg.renew(self._room(), None if said else list(refused),
                              None if said else list(blocked))
            if pg.schema_found > self.store.schema_version:
                # a newer node migrated the schema: rows in the format this code knows
                # could break it, so this node writes nothing more, and leaves
                self._give_up(self.store.schema_migrated(pg.schema_found))
                return
            with self._lock:
                lapsed = status is None or self._lapse_posted
                if not lapsed:  # (the watch did not give the lease up meanwhile)
                    self._confirmed = now
                    self._watch_wake.notify_all()
            if lapsed:
                self._lapse()
                return
            self._said = (pg.epoch, refused, blocked)
            self._last_renew = now
            if status == "draining" and not self.draining:
                self._post("drain")
        with self._lock:
            releases, self._releases = self._releases, []
        try:
            self._release(releases)
        except BaseException:
            with self._lock:  # the next round tries them again (each is idempotent)
                self._releases[:0] = releases
            raise
        lost = pg.mark_lost()
        if lost:
            log.warning("node %s: nodes lost (lease lapsed): %s", self.name,
                        ", ".join(n for _e, n in lost))
        with self._lock:  # asked before the live nodes are read: a node that joined
            asked, self._asked = self._asked, set()  # since is found live
        # the children of ended parents a lost node may have left unasked (it may never
        # start again): asked by the node that marked it lost (it alone did), and, for
        # one lost otherwise (its store gave up: it marked itself), by the oldest live
        # node (these two at most: an ask made twice is harmless); not for a node that
        # stopped as asked (it starts again, as a rolling deploy's: an ask at each
        # stop, and its error lines, would be noise). Read before this round forgets
        # anything: a failure of a read fails the round, and the next one finds the
        # nodes that left this node's view again (tells of them, asks for them).
        marked = {e for e, _n in lost}
        try:
            live = pg.live_epochs()
            left = {epoch: info for epoch, info in self._live.items()
                    if epoch not in live and epoch != pg.epoch}
            unmarked = [e for e in left if e not in marked]
            gone_lost = (pg.lost_among(unmarked) if unmarked
                         and min(live, default=pg.epoch) == pg.epoch else set())
        except BaseException:
            with self._lock:
                self._asked |= asked
            raise
        self._compare_limits(live)
        keys = {(str(info.get("name")), info.get("prefix")) for info in live.values()}
        if keys != self._live_keys:
            self._live_keys = keys
            self._post("live", keys)
        lefts = [info["left"] for epoch, info in live.items() if epoch != pg.epoch]
        soonest = min(lefts) if lefts else float("inf")
        if soonest <= 0:  # lapsed, not marked yet (a write of it in flight): soon again
            soonest = self.interval / 4
        self._expiry = time.monotonic() + soonest
        gone: list[tuple[Any, Any, int | None]] = [
            (info.get("name"), info.get("prefix"), epoch) for epoch, info in left.items()]
        gone += [(*key, None) for key in asked if key not in keys
                 and not any(key == (n, p) for n, p, _e in gone)]
        self._live = live
        departed = [n for _e, n in lost]
        departed += [str(left[e].get("name")) for e in sorted(gone_lost)]
        if departed:
            self._post("departed", departed)
        # every node tells of the nodes that left its view (lost, whoever marked them,
        # or left), and of those it marked lost that it never saw live
        lost = sorted({**{e: str(info.get("name")) for e, info in left.items()},
                       **dict(lost)}.items())
        if lost:
            self._post("lost", lost)
        if gone:
            self._post("gone", gone)
        if pg.claim_unknown and not self._stop.is_set():
            # an earlier claim lost its answer: what it took (if it committed) is this
            # node's in the store, and only the trio side knows which of them it runs
            owned = pg.owned()
            pg.claim_unknown = False
            self._post("owned", (pg.epoch, owned))
        with self._lock:
            wanted, self._wanted = self._wanted, []
        if wanted:
            try:
                claimed = [] if self.draining or self._stop.is_set() else \
                    pg.claim_pending(wanted)
            except BaseException:
                # (a lock another session holds, the server away: the next round claims
                # them, as nothing else does while this node, full, owns no more)
                with self._lock:
                    self._wanted[:0] = [w for w in wanted if w not in self._wanted]
                raise
            if claimed:
                with self._lock:
                    self._in_flight += len(claimed)
                self._post("claimed", (pg.epoch, claimed))
            missed = set(wanted) - {r.workflow_id for r in claimed}
            if missed:  # (another live node has them, or they started or ended)
                self._post("missed", missed)
        if not self.draining and not self._stop.is_set() and self._may_claim(live):
            claimed = pg.claim(self._limit(), self._refused_names(), self._blocked_runs())
            if claimed:
                with self._lock:
                    self._in_flight += len(claimed)
                self._post("claimed", (pg.epoch, claimed))
        if time.monotonic() >= self._next_balance:
            self._next_balance = time.monotonic() + self.balance_every
            if rounds:  # (the first look is one period after the node joined)
                self._look_at_balance()
        if self.singletons and not self.draining and not self._stop.is_set():
            with self._lock:
                claims = self._claims_asked
                dropped = sorted(self._dropped)
            held, elsewhere = pg.claim_singletons(
                sorted(self.wanted_singletons.difference(dropped)), self.singletons, dropped)
            if held != self._held or elsewhere != self._elsewhere \
                    or claims != self._claims_posted:
                self._held, self._elsewhere = held, elsewhere
                self._claims_posted = claims
                self._post("singletons", (pg.epoch, held, elsewhere, claims))
        if rounds % 20 == 19:
            pg.cleanup_wakeups()
