"""Plain processes of different nodes: messages, calls, monitors, links, names.

On a node of a cluster a plain pid names its node (``processes/<incarnation>.<n>@<node>``;
a workflow pid names none, it moves). The router hands every operation on a plain pid
of another node to :class:`Remote`, which sends it to that node through the store's
notification channel: ``NOTIFY`` on the node's own channel (``PgCluster.node_channel``),
from one connection per node, so order is kept per sender; a body over ``NOTIFY``'s
8000-byte limit goes through the ``messages`` table (the notification carries its id).
Delivery is at most once and only while both nodes are up: nothing is stored for a
node that is down. Payloads cross as JSON (as for workflows): the receiver sees plain
JSON values.

A remote process is represented locally by a :class:`_Peer`: the callee of a call to it
(its ``callers`` hold the local callers waiting; it is kept in ``peers`` only while
one waits) and the caller a reply to it goes to. Links and monitors across nodes are
kept on both sides: ``watching`` (remote pid -> the local pids monitoring it),
``watched_by`` (remote pid -> the local pids it monitors) and ``linked`` (remote pid
-> the local pids linked to it, whichever side made the link); an entry goes when the
link or monitor ends, so nothing of a dead process stays behind.

When a node is lost (its lease lapsed, or it left), every local process that
monitors one of its processes gets ``EXIT`` with reason ``noconnection``, every link
to one acts as a linked failure ``noconnection`` (made from either side), calls
waiting on one fail, and its processes' monitors of local processes are dropped. A
node incarnation (``(name, pid prefix)``) is ``live`` (the membership thread's last
view), ``gone`` (lost or left while this node ran, or found not live when asked), or
not known yet: then the membership thread is asked (``ClusterMember.check``), and an
operation made meanwhile is settled as above if the node is not live. A pid of a
gone node is a dead pid: a send to it is a dead letter, a monitor gets ``EXIT``
``noproc`` at once, a link acts as a linked failure ``noproc``, a call fails at once.
A send to a pid of a node not known yet (the first, from a node that started after
that node left, say) is held, in order with the next ones to that node, until the
membership thread has asked the store (its next round, at once): sent if the node is
live, a dead letter if not, counted then. The send itself never waits on the store.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

import outcome
import psycopg
import trio

from .._errors import ProcessError, StoreError
from ..actors._values import ErrorInfo, Event, EventKind, Message, Pid
from ..hosts._kernel import Caller, noproc
from ..persistence import to_json

__all__ = ["Remote"]

log = logging.getLogger("garrison.cluster")

#: NOTIFY payloads must stay under 8000 bytes
_NOTIFY_MAX = 7900
#: how many gone node incarnations are remembered
_GONE_MEMORY = 10_000
#: messages held for one node not known yet (:meth:`Remote.send`); past it, a send to
#: that node is a dead letter at once
HELD_MAX = 10_000
#: the longest a cancel (past its timeout) or terminate of a remote process waits for
#: its node to say the target ended (a node that cannot answer: an older garrison)
STOP_WAIT = 10.0
_INF = float("inf")


def noconnection(pid: Pid, node: str) -> ErrorInfo:
    """The reason given for a process of a node that was lost."""
    return ErrorInfo("noconnection", f"the node {node} of process {pid} was lost")


def lost_here(target: Pid, other: Pid, here: str) -> ErrorInfo:
    """The reason given to ``other``, of a node this one (``here``) takes for lost, for
    a monitor of (or link to) ``target``, a process here, that it asked for."""
    node = other.id.rpartition("@")[2]
    return ErrorInfo("noconnection", f"process {target} is on node {here}, which takes "
                     f"node {node} (of process {other}) for lost")


def cut_off(pid: Pid, node: str, here: str) -> ErrorInfo:
    """The reason given for a process of another node when this node's lease lapsed."""
    return ErrorInfo("noconnection", f"this node {here}'s lease lapsed (it was cut off "
                     f"from the cluster): process {pid} of node {node} is out of reach")


def _plain(value: Any) -> Any:
    """A value as JSON can carry it (its ``repr`` when it cannot)."""
    try:
        return json.loads(to_json(value, what="a value"))
    except Exception:
        return repr(value)


def _error(plain: Any) -> ErrorInfo | None:
    if plain is None:
        return None
    return ErrorInfo(plain.get("type", "Error"), plain.get("message", ""),
                     plain.get("traceback", ""))


def _error_plain(error: ErrorInfo | None) -> Any:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


class _Waiting(dict[str, Caller]):
    """A :class:`_Peer`'s ``callers``: the local callers waiting on it. The peer is in
    ``Remote.peers`` (where a lost node's calls are failed) while one waits, and no
    longer (a call ends with ``pop``, ``Caller.exchange``)."""

    __slots__ = ("peer",)

    def __init__(self, peer: _Peer) -> None:
        super().__init__()
        self.peer = peer

    def __setitem__(self, ref: str, caller: Caller) -> None:
        super().__setitem__(ref, caller)
        peer = self.peer
        peer.remote.peers[peer.pid] = peer

    def pop(self, ref: str, default: Any = None) -> Any:
        value = super().pop(ref, default)
        if not self:
            peer = self.peer
            peers = peer.remote.peers
            if peers.get(peer.pid) is peer:
                del peers[peer.pid]
        return value


class _Peer(Caller):
    """A process of another node, seen from here (see the module docs)."""

    __slots__ = ("at", "remote")

    def __init__(self, remote: Remote, pid: Pid, at: str | None = None) -> None:
        self.remote = remote
        self.node = remote.router
        self.pid = pid
        self.calls = None
        self.callers = _Waiting(self)
        #: the node it is on: a plain pid names it; a workflow's is its owner's
        self.at = at

    def deliver(self, msg: Message) -> None:
        """A request of a call (or a message) for the remote process."""
        self.remote.send(msg.sender, self.pid, msg, counted=False)

    def finish_call(self, ref: str, result: outcome.Outcome[Any]) -> None:
        """The remote process's call ``ref`` to a local process ended: send the reply
        (a value JSON cannot carry raises ``PayloadError``, in the replier)."""
        if isinstance(result, outcome.Value):
            text = to_json(result.value, what=f"the reply to a call of {self.pid} (on "
                                              "another node)")
            self.remote.post(self.pid, {"k": "reply", "to": str(self.pid), "ref": ref,
                                        "p": text}, self.at)
        else:
            assert isinstance(result, outcome.Error)
            exc = result.error
            error = getattr(exc, "error", None) or ErrorInfo.from_exception(exc)
            self.remote.post(self.pid, {"k": "fail", "to": str(self.pid), "ref": ref,
                                        "why": str(exc), "error": _error_plain(error),
                                        "callee": str(getattr(exc, "pid", "") or "")},
                             self.at)


class Remote:
    """A node's side of plain processes on other nodes."""

    def __init__(self, router: Any, member: Any) -> None:
        self.router = router
        self.member = member
        self.name: str = member.name
        self._conn: psycopg.Connection[Any] | None = None
        #: remote callees some local caller waits on
        self.peers: dict[Pid, _Peer] = {}
        #: remote pid -> local pids monitoring it / it monitors / linked to it
        self.watching: dict[Pid, set[Pid]] = {}
        self.watched_by: dict[Pid, set[Pid]] = {}
        self.linked: dict[Pid, set[Pid]] = {}
        #: the live node incarnations ``(name, pid prefix)`` (the membership thread's
        #: last view), and those that went (lost or left), latest last
        self.live: set[tuple[str, str | None]] = set()
        self.gone: OrderedDict[tuple[str, str], None] = OrderedDict()
        #: cancels and terminates of remote processes waiting for their target's end:
        #: ref -> (the target, set when its node says it has ended or the node is gone)
        self.stopping: dict[int, tuple[Pid, trio.Event]] = {}
        #: (from a random start: a late answer to this node's previous run under the
        #: same name matches none of this run's)
        self._stop_refs = secrets.randbits(48)
        #: messages to processes of node incarnations not known to be live or gone yet,
        #: in the order sent, until the membership thread says which (``(to, body,
        #: counted)``: ``counted``, the router counts it then, see :meth:`send`)
        self.held: dict[tuple[str, str], list[tuple[Pid, dict[str, Any], bool]]] = {}
        #: this node's lease lapsed: what it tells the other nodes (``(node, body)``),
        #: before anything else it sends them (:meth:`lapsed`)
        self.notices: deque[tuple[str, str]] = deque()
        #: node epochs whose loss was acted on here (:meth:`node_gone`), latest last
        self.acted: OrderedDict[int, None] = OrderedDict()

    # ------------------------------------------------------------ routing
    def node_of(self, pid: Pid) -> str | None:
        """The other node a plain pid lives on, or ``None`` (local, or a workflow)."""
        ident = pid.id
        if "@" not in ident:
            return None
        node = ident.rpartition("@")[2]
        if node == self.name:
            return None
        router = self.router
        host = router.hosts.get(router.aliases.get(pid.host, pid.host))
        if host is not None and host.durable:
            return None
        return node

    def peer(self, pid: Pid, at: str | None = None) -> _Peer:
        """The callee (or the caller to reply to) ``pid``; ``at``: the node it is on (a
        workflow's pid names none)."""
        peer = self.peers.get(pid)
        if peer is None:
            peer = _Peer(self, pid, at)  # (kept in ``peers`` while a caller waits on it)
        return peer

    def replier(self, pid: Pid) -> _Peer | None:
        """The workflow ``pid`` as the caller a reply goes to, if another node of the
        cluster runs it (the reply goes to that node: it is waiting there); ``None``
        otherwise."""
        node = self.owner_of(pid)
        return None if node is None else _Peer(self, pid, node)

    def owner_of(self, pid: Pid) -> str | None:
        """The other node that runs the workflow ``pid`` (the store names it its owner),
        or ``None``: a plain pid, a workflow this node runs, or one that no node runs
        now. Reads the store (``StoreError`` when it is out of reach)."""
        router = self.router
        host = router.hosts.get(router.aliases.get(pid.host, pid.host))
        if host is None or not host.durable or host.ownership is None \
                or pid.id in host.active:
            return None
        node = host.ownership.pg.owner_name(pid.id)
        return None if node is None or node == self.name else node

    def callee(self, pid: Pid) -> _Peer | None:
        """``pid`` as a callee; ``None`` if its node is gone (a dead pid)."""
        return None if self._gone(pid) else self.peer(pid)

    @staticmethod
    def _key(pid: Pid) -> tuple[str, str]:
        """The node incarnation of a plain pid: ``(node name, pid prefix)``."""
        ident, _, node = pid.id.rpartition("@")
        return node, ident.partition(".")[0] + "."

    def known_gone(self, pid: Pid) -> bool:
        """True if ``pid``'s node process is known to have ended: its node runs again
        under a newer incarnation. A node marked lost (its lease lapsed) is no proof:
        paused past its lease, it joins again with its plain processes alive."""
        name, prefix = self._key(pid)
        return any(other == name and theirs is not None and theirs != prefix
                   for other, theirs in self.live)

    def node_live(self, pid: Pid) -> bool:
        """True if the node incarnation of the plain pid ``pid`` is live in the
        membership thread's last view (only that node can tell whether it runs)."""
        return self._key(pid) in self.live

    def _gone(self, pid: Pid) -> bool:
        """True if ``pid``'s node is gone (lost or left). A node not known to be live
        is asked about (the answer comes as :meth:`node_gone` if it is not)."""
        key = self._key(pid)
        if key in self.live:
            return False
        if key in self.gone:
            return True
        check = getattr(self.member, "check", None)
        if check is not None:
            check(key)
        return False

    def set_live(self, live: set[tuple[str, str | None]]) -> None:
        """The membership thread's view of the live nodes changed."""
        before = self.live
        self.live = live
        for name, prefix in live:
            if prefix is not None:  # (a node whose lease lapsed joined again)
                self.gone.pop((name, prefix), None)
        if self.held:
            for key in [k for k in self.held if k in live]:
                self._release_held(key, True)
        if live - before:  # a node joined, maybe a newer incarnation of one
            self.router.nodes_renewed()

    def _release_held(self, key: tuple[str, str], live: bool) -> None:
        """The node ``key`` is known now: the messages held for it go (``live``), or
        are dead letters; those the router left to this count as they end."""
        router = self.router
        for to, body, counted in self.held.pop(key, ()):
            sent = live and self.post(to, body)
            if counted:
                if sent:
                    router.stats_messages += 1
                else:
                    router.stats_dead_letters += 1

    def _kept(self, remote: Pid, local: Pid) -> bool:
        """True if a link or monitor between ``remote`` and ``local`` that the other
        node made is kept here: both are plain processes (a workflow's links and
        monitors go through the store, and it moves)."""
        if self.node_of(remote) is None:
            return False
        router = self.router
        host = router.hosts.get(router.aliases.get(local.host, local.host))
        return host is not None and not host.durable

    @staticmethod
    def _forget(table: dict[Pid, set[Pid]], remote: Pid, local: Pid) -> None:
        locals_ = table.get(remote)
        if locals_ is not None:
            locals_.discard(local)
            if not locals_:
                del table[remote]

    # ------------------------------------------------------------ sending
    def post(self, to: Pid, body: dict[str, Any], node: str | None = None) -> bool:
        """Send ``body`` to the node of ``to`` (``node``: that one; at most once); False
        if it could not. What :meth:`lapsed` has still to tell goes first."""
        if self.notices and not self._tell_notices():
            return False
        return self._notify(node or to.id.rpartition("@")[2],
                            json.dumps(body, separators=(",", ":")))

    def _tell_notices(self) -> bool:
        """Send what :meth:`lapsed` has still to tell the other nodes; False if the
        store did not take it (the next post tries again, before its own)."""
        while self.notices:
            node, text = self.notices[0]
            if not self._notify(node, text):
                return False
            self.notices.popleft()
        return True

    def _notify(self, node: str, text: str) -> bool:
        channel = self.member.pg.node_channel(node)
        try:
            conn = self._connection()
            if len(text.encode()) <= _NOTIFY_MAX:
                conn.execute("SELECT pg_notify(%s, %s)", (channel, text))
            else:
                s = self.member.pg.quoted_schema
                with conn.transaction():
                    row = conn.execute(f"INSERT INTO {s}.messages (body, created) VALUES "
                                       f"(%s, {s}.now_s()) RETURNING id", (text,)).fetchone()
                    assert row is not None
                    conn.execute("SELECT pg_notify(%s, %s)",
                                 (channel, json.dumps({"k": "ref", "id": int(row[0])})))
            return True
        except (psycopg.Error, StoreError) as exc:
            log.warning("node %s: a message to node %s was lost: %s", self.name, node,
                        self.member.store.error_text(exc))
            self.close()
            return False

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.member.pg.messages_connection()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # pragma: no cover
                pass
        self._conn = None

    def send(self, sender: Pid | None, to: Pid, msg: Message, *,
             counted: bool = True) -> bool | None:
        """Send ``msg`` to ``to`` of another node: True if it went, False if it could
        not (a dead pid: a dead letter), ``None`` if it is held until the membership
        thread says whether ``to``'s node is live (a node this one has not seen yet):
        counted as a message or a dead letter then, unless ``counted`` is false (a
        call's request: its caller counted it)."""
        key = self._key(to)
        if key not in self.live and key in self.gone:
            return False  # a dead pid: a dead letter
        text = to_json(msg.payload, what=f"the payload of message {msg.topic!r} to {to} "
                                         "(on another node)")
        body = {"k": "msg", "to": str(to), "from": None if sender is None else str(sender),
                "topic": msg.topic, "p": text, "id": msg.id, "ref": msg.call_ref}
        if msg.call_ref is not None:  # where the reply goes (a workflow's pid names no node)
            body["n"] = self.name
        if key not in self.live:
            # not known yet: held (in order with the next ones) until the store says
            held = self.held.get(key)
            if held is None:
                held = self.held[key] = []
            elif len(held) >= HELD_MAX:
                return False
            held.append((to, body, counted))
            self._gone(to)  # (asks the membership thread)
            return None
        if key in self.held:  # (sent after the node became known: after those held)
            self._release_held(key, True)
        return self.post(to, body)

    def deliver_event(self, to: Pid, event: Event) -> None:
        if event.kind is EventKind.EXIT:  # that monitor is spent
            self._forget(self.watched_by, to, event.pid)
        self.post(to, {"k": "event", "to": str(to), "kind": str(event.kind),
                       "pid": str(event.pid), "r": _plain(event.result),
                       "error": _error_plain(event.error)})

    def linked_exit(self, target: Pid, dead: Pid, error: ErrorInfo | None,
                    node: str | None = None) -> None:
        """``dead``, linked to ``target`` of another node (``node``: the one that runs
        the workflow ``target``), ended."""
        self._forget(self.linked, target, dead)
        self.post(target, {"k": "linked_exit", "target": str(target), "dead": str(dead),
                           "error": _error_plain(error)}, node)

    def link(self, target: Pid, other: Pid) -> bool:
        if self._gone(target):
            return False  # a dead pid: a linked failure noproc
        if not self.post(target, {"k": "link", "target": str(target), "other": str(other)}):
            return False
        self.linked.setdefault(target, set()).add(other)
        return True

    def keep_link(self, target: Pid, other: Pid) -> None:
        """The workflow ``other``, resumed here, was linked to ``target`` (of another
        node) where it ran before (see ``Router.keep_link``): kept in ``linked``, and
        ``target``'s node is told, which makes the link again (a set: once) or, if
        ``target`` has ended, answers ``link_gone`` and it goes from ``linked`` here
        (and, if it remembers a failure of ``target``, sends that failure to the
        node that runs ``other``: the one it sent when it came went to the node lost)."""
        if self._gone(target):
            return  # (its node is lost: the caller's recovery check acts on it)
        body = {"k": "link_held", "target": str(target), "other": str(other),
                "from": self.name}
        if self.post(target, body):
            self.linked.setdefault(target, set()).add(other)

    def forget_local(self, local: Pid, remotes: Iterable[Pid]) -> None:
        """The local pid ``local`` (a workflow that left this node) links to and monitors
        none of ``remotes`` here any more: out of ``linked`` and ``watching`` (the other
        nodes are not told; see ``Router.forget_remote_watches``)."""
        for remote in remotes:
            self._forget(self.linked, remote, local)
            self._forget(self.watching, remote, local)

    def monitor_spent(self, target: Pid, watcher: Pid) -> None:
        """The ``EXIT`` of ``target`` (of another node, or none) reached ``watcher``
        another way than as an ``event`` here (a workflow's, through the store): that
        monitor is forgotten, as an ``event`` forgets it."""
        if self.watching:
            self._forget(self.watching, target, watcher)

    def unlink(self, target: Pid, other: Pid, node: str | None = None) -> None:
        """``other`` unlinked ``target`` of another node (``node``: the one that runs
        the workflow ``target``)."""
        self._forget(self.linked, target, other)
        self.post(target, {"k": "unlink", "target": str(target), "other": str(other)}, node)

    def monitor(self, target: Pid, watcher: Pid, id: str | None = None) -> bool:
        """``watcher`` monitors ``target`` of another node; ``id``: the inbox id of a
        workflow's event of this monitor, for that node's ``noproc`` (the one per
        process there may have been taken by an ``EXIT`` of ``target`` before)."""
        if self._gone(target):
            return False  # a dead pid: EXIT noproc at once
        body = {"k": "monitor", "target": str(target), "watcher": str(watcher)}
        if id is not None:
            body["id"] = id
        if not self.post(target, body):
            return False
        self.watching.setdefault(target, set()).add(watcher)
        return True

    def demonitor(self, target: Pid, watcher: Pid) -> None:
        self._forget(self.watching, target, watcher)
        self.post(target, {"k": "demonitor", "target": str(target), "watcher": str(watcher)})

    async def stop(self, target: Pid, by: Pid | None, kill: bool, seconds: float) -> None:
        """``process.cancel`` (``seconds``: its timeout) or ``terminate`` of a process of
        another node: its node does it (the cancel escalating to a terminate after
        ``seconds``, as here) and says when the target has ended; returns then (or when
        that node is gone; at most :data:`STOP_WAIT` seconds past the cancel's timeout,
        for a node too old to answer)."""
        self._stop_refs += 1
        ref = self._stop_refs
        ended = trio.Event()
        self.stopping[ref] = (target, ended)
        try:
            body = {"k": "kill" if kill else "cancel", "target": str(target),
                    "by": None if by is None else str(by), "ref": ref, "from": self.name,
                    "timeout": None if kill or seconds == float("inf") else seconds}
            if self._gone(target) or not self.post(target, body):
                await trio.lowlevel.checkpoint()
                return
            with trio.move_on_after((0 if kill else seconds) + STOP_WAIT):
                await ended.wait()
        finally:
            self.stopping.pop(ref, None)

    async def _stop_here(self, target: Pid, by: Pid | None, kill: bool,
                         seconds: float | None, ref: int | None, origin: str | None) -> None:
        """Another node's cancel or terminate of ``target`` (a process here): done, and
        its end told back (``ref`` to the node ``origin``)."""
        router = self.router
        try:
            if kill:
                await router.terminate(target, by)
            else:
                await router.cancel(target, by, seconds if seconds is not None else _INF)
        except ValueError as exc:  # refused here (the node's service manager)
            log.warning("node %s: %s (asked by %s, on node %s)", self.name, exc, by, origin)
        finally:
            if ref is not None and origin:
                self.post(target, {"k": "stopped", "ref": ref}, origin)

    # ------------------------------------------------------------ receiving
    def receive(self, bodies: list[str]) -> None:
        """Act on what other nodes sent (in the order they sent it)."""
        for text in bodies:
            try:
                self._receive(json.loads(text))
            except Exception as exc:  # a bad body must not stop the others
                log.warning("node %s: could not act on a message from another node: %s",
                            self.name, exc)

    def _receive(self, body: dict[str, Any]) -> None:
        router = self.router
        kind = body["k"]
        if kind == "msg":
            to = Pid.parse(body["to"])
            sender = None if body["from"] is None else Pid.parse(body["from"])
            ref = body.get("ref")
            if ref is not None:
                ref = str(ref)  # (an int from an older node)
            msg = Message(body["topic"], json.loads(body["p"]), sender, body["id"], ref)
            host = router.hosts.get(router.aliases.get(to.host, to.host))
            if ref is not None and sender is not None:
                # the caller, on the node that sent this (a workflow's pid names none); a
                # ref is unique to its call, whichever node made it (``next_call_ref``)
                caller = self.peer(sender, body.get("n"))
                callee = router.caller_of(to)
                if callee is None or not callee.accepts_calls:
                    caller.finish_call(ref, outcome.Error(ProcessError(
                        f"call to {to} failed: {noproc(to)}", pid=to, error=noproc(to))))
                    return
                if callee.callers is None:
                    callee.callers = {}
                callee.callers[ref] = caller  # its death fails the call
            if host is None or host.durable:  # (a workflow pid names no node)
                router.stats_dead_letters += 1
            elif host.deliver(to, msg):
                router.stats_messages += 1
            else:
                router.stats_dead_letters += 1
        elif kind in ("reply", "fail"):
            caller = router.caller_of(Pid.parse(body["to"]))
            if caller is None:
                return
            if kind == "reply":
                value = json.loads(body["p"]) if "p" in body else body.get("v")
                caller.finish_call(str(body["ref"]), outcome.Value(value))
            else:
                callee = Pid.parse(body["callee"]) if body.get("callee") else None
                caller.finish_call(str(body["ref"]), outcome.Error(ProcessError(
                    body["why"], pid=callee, error=_error(body["error"]))))
        elif kind == "event":
            event = Event(EventKind(body["kind"]), Pid.parse(body["pid"]), body["r"],
                          _error(body["error"]))
            to = Pid.parse(body["to"])
            if event.kind is EventKind.EXIT:
                self._forget(self.watching, event.pid, to)
            router.deliver_event(to, event)
        elif kind == "linked_exit":
            dead = Pid.parse(body["dead"])
            target = Pid.parse(body["target"])
            self._forget(self.linked, dead, target)
            # (a link both sides made to a workflow acts once: this node's watch of it
            # may have acted already)
            router.linked_exit_if_held(target, dead, _error(body["error"]))
        elif kind == "monitor":
            target, watcher = Pid.parse(body["target"]), Pid.parse(body["watcher"])
            plain = self._kept(watcher, target)
            if plain and self._key(watcher) in self.gone:
                # its node is lost here (it may be gone, or cut off and joining again:
                # then its watcher must hear, else it waits for ever): EXIT noconnection
                self.deliver_event(watcher, Event(EventKind.EXIT, target, None,
                                                  lost_here(target, watcher, self.name)))
                return
            if router.monitor(target, watcher):
                if plain:
                    self.watched_by.setdefault(watcher, set()).add(target)
            else:  # (the watcher may be a workflow, which names no node)
                event = Event(EventKind.EXIT, target, None, noproc(target))
                host = router.hosts.get(router.aliases.get(watcher.host, watcher.host))
                if body.get("id") and host is not None and host.durable:
                    # under the id of the monitor that asked: an EXIT of ``target`` this
                    # node gave the workflow before holds the one per process
                    if not host.deliver_event(watcher, event, msg_id=str(body["id"])):
                        router.stats_dead_letters += 1
                else:  # (a node too old to send the id: the one per process)
                    router.deliver_event(watcher, event)
        elif kind == "demonitor":
            target, watcher = Pid.parse(body["target"]), Pid.parse(body["watcher"])
            self._forget(self.watched_by, watcher, target)
            router.demonitor(target, watcher)
        elif kind == "link":
            target, other = Pid.parse(body["target"]), Pid.parse(body["other"])
            plain = self._kept(other, target)
            if plain and self._key(other) in self.gone:
                # its node is lost here (as for a monitor): a linked failure noconnection
                self.linked_exit(other, target, lost_here(target, other, self.name))
                return
            if router.link(target, other):
                if plain:  # two-way: kept here too, so that a lost node's links act here
                    self.linked.setdefault(other, set()).add(target)
            else:  # (the other side may be a workflow, which names no node)
                router.linked_exit(other, target, noproc(target))
        elif kind == "link_held":  # a workflow that moved keeps its link (keep_link)
            target, other = Pid.parse(body["target"]), Pid.parse(body["other"])
            if not router.link(target, other):
                # it ended meanwhile: the asking node forgets the link; a return ended
                # it quietly, but a failure went to the node that ran the workflow when
                # it came, which may have been lost with it (the workflow resumed
                # since): told again, to the node that runs it now (a non-trapping
                # workflow ends on it, once: a failure that reached it ended it there)
                self.post(other, {"k": "link_gone", "target": str(target),
                                  "other": str(other)}, str(body["from"]))
                error = router.failure_remembered(target)
                if error is not None:
                    router.linked_exit(other, target, error)
        elif kind == "link_gone":
            self._forget(self.linked, Pid.parse(body["target"]), Pid.parse(body["other"]))
        elif kind == "relinked":  # (a workflow this node runs: see WorkflowHost.relinked)
            target, other = Pid.parse(body["target"]), Pid.parse(body["other"])
            host = router.hosts.get(router.aliases.get(target.host, target.host))
            if host is not None and host.durable:
                host.relinked(target, other)
        elif kind == "unlink":
            target, other = Pid.parse(body["target"]), Pid.parse(body["other"])
            self._forget(self.linked, other, target)
            router.unlink(target, other)
        elif kind in ("kill", "cancel"):
            target = Pid.parse(body["target"])
            by = None if body["by"] is None else Pid.parse(body["by"])
            host = router.hosts.get(router.aliases.get(target.host, target.host))
            ref, origin = body.get("ref"), body.get("from")
            if host is None:  # no such process here: it has ended, as far as anyone can
                if ref is not None and origin:
                    self.post(target, {"k": "stopped", "ref": int(ref)}, origin)
                return
            if ref is None:  # (a node that does not wait: asked, no more)
                if kind == "kill":
                    host.kill(target, ErrorInfo("Terminated",
                                                f"terminated by {by} (another node)"))
                else:
                    host.cancel_event(target, by)
                return
            self.member.host.start_soon(self._stop_here, target, by, kind == "kill",
                                        body.get("timeout"), int(ref), origin)
        elif kind == "stopped":
            waiting = self.stopping.get(int(body["ref"]))
            if waiting is not None:
                waiting[1].set()
        elif kind == "lapsed":  # (see :meth:`lapsed`: sent before anything newer)
            self.node_gone(str(body["node"]), body.get("prefix"), int(body["epoch"]))

    # ------------------------------------------------------------ losing a node
    def lapsed(self) -> None:
        """This node's lease lapsed (by the server's answer or its own clock): the
        other nodes take it for lost, or will (its old incarnation leaves their view
        when it joins again, if not before), and drop what its processes had of theirs.
        So its plain processes' monitors of other nodes' processes get ``EXIT``
        ``noconnection`` now, their links to them act as a linked failure
        ``noconnection``, their calls waiting on them fail, and the other nodes'
        monitors of its processes go (those watchers get ``noconnection`` there): each
        watch ends once, here and there, and one made again after this holds. Else
        they waited for ever on watches the other side had dropped (or got a second
        ``EXIT`` from here). Every other node is told too (``lapsed``), before anything
        else this node sends it: it acts on the loss then, before the watches made
        again reach it, and not again when it sees this incarnation go (with nothing
        sent, it acts when it sees it go)."""
        member = self.member
        epoch, prefix = member.epoch, member.info.get("prefix")
        if epoch is not None:
            text = json.dumps({"k": "lapsed", "node": self.name, "prefix": prefix,
                               "epoch": epoch}, separators=(",", ":"))
            for other in sorted({n for n, _p in self.live if n != self.name}):
                self.notices.append((other, text))
        router = self.router

        def plain(local: Pid) -> bool:  # (a workflow moves: its watches go with it)
            host = router.hosts.get(router.aliases.get(local.host, local.host))
            return host is not None and not host.durable

        def node(pid: Pid) -> str:
            return pid.id.rpartition("@")[2]

        for table in (self.watching, self.linked):
            for pid in list(table):
                locals_ = table.pop(pid)
                kept = {local for local in locals_ if not plain(local)}
                if kept:
                    table[pid] = kept
                for local in sorted(locals_ - kept, key=str):
                    why = cut_off(pid, node(pid), self.name)
                    if table is self.watching:
                        router.deliver_event(local, Event(EventKind.EXIT, pid, None, why))
                    else:
                        router.linked_exit(local, pid, why)
        for pid in list(self.watched_by):
            for target in self.watched_by.pop(pid):
                router.demonitor(target, pid)
        for pid in list(self.peers):
            why = cut_off(pid, node(pid), self.name)
            self.peers.pop(pid).fail_callers(f"call to {pid} failed: {why}", why)
        # (the notices go with the next post, before it: not now, on this thread, where
        # a link to the server that holds its bytes would hold the whole node up)

    def node_gone(self, name: str, prefix: str | None, epoch: int | None = None) -> None:
        """Node ``name`` (its pids start with ``prefix``; ``epoch``: its incarnation, if
        known) was lost or left: monitors of its processes get ``EXIT``
        ``noconnection``, links (made from either side) act, calls fail, its processes'
        monitors of local ones go (once per incarnation: that node tells of its own
        lapsed lease, and this one sees the incarnation go later); its pids are dead
        pids from now on (until it is seen live again: a lapsed lease, joined again)."""
        if prefix is not None and (name, prefix) not in self.live:
            self.gone[(name, prefix)] = None
            self.gone.move_to_end((name, prefix))
            while len(self.gone) > _GONE_MEMORY:
                self.gone.popitem(last=False)
        if self.held:  # messages held until its node was known: dead letters
            for key in [k for k in self.held if k[0] == name and k not in self.live
                        and (prefix is None or k[1] == prefix)]:
                self._release_held(key, False)
        if epoch is not None:
            if epoch in self.acted:  # (acted on already: the watches made since hold)
                return
            self.acted[epoch] = None
            while len(self.acted) > _GONE_MEMORY:
                self.acted.popitem(last=False)

        def gone(pid: Pid) -> bool:
            if pid.id.rpartition("@")[2] != name:
                return False
            return prefix is None or pid.id.startswith(prefix)

        for pid in [p for p in self.watching if gone(p)]:
            for watcher in self.watching.pop(pid):
                self.router.deliver_event(watcher, Event(EventKind.EXIT, pid, None,
                                                         noconnection(pid, name)))
        for pid in [p for p in self.watched_by if gone(p)]:
            for target in self.watched_by.pop(pid):
                self.router.demonitor(target, pid)
        for pid in [p for p in self.linked if gone(p)]:
            for local in self.linked.pop(pid):
                self.router.linked_exit(local, pid, noconnection(pid, name))
        for _ref, (pid, ended) in list(self.stopping.items()):
            if gone(pid):
                ended.set()  # (its node is gone: so is the target)
        for pid in [p for p in self.peers if gone(p)]:
            peer = self.peers.pop(pid)
            peer.fail_callers(f"call to {pid} failed: {noconnection(pid, name)}",
                              noconnection(pid, name))
