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
(its ``callers`` hold the local callers waiting) and the caller a reply to it goes
to. When a node is lost (its lease lapsed, or it left), every local process that
monitors one of its processes gets ``EXIT`` with reason ``noconnection``, every link
to one acts as a linked failure ``noconnection``, and calls waiting on one fail.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import outcome
import psycopg

from .._errors import ProcessError, StoreError
from ..actors._values import ErrorInfo, Event, EventKind, Message, Pid
from ..hosts._kernel import Caller, noproc
from ..persistence import to_json

__all__ = ["Remote"]

log = logging.getLogger("garrison.cluster")

#: NOTIFY payloads must stay under 8000 bytes
_NOTIFY_MAX = 7900


def noconnection(pid: Pid, node: str) -> ErrorInfo:
    """The reason given for a process of a node that was lost."""
    return ErrorInfo("noconnection", f"the node {node} of process {pid} was lost")


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


class _Peer(Caller):
    """A process of another node, seen from here (see the module docs)."""

    __slots__ = ("remote",)

    def __init__(self, remote: Remote, pid: Pid) -> None:
        self.remote = remote
        self.node = remote.router
        self.pid = pid
        self.calls = None
        self.callers = None

    def deliver(self, msg: Message) -> None:
        """A request of a call (or a message) for the remote process."""
        self.remote.send(msg.sender, self.pid, msg)

    def finish_call(self, ref: int, result: outcome.Outcome[Any]) -> None:
        """The remote process's call ``ref`` to a local process ended: send the reply."""
        if isinstance(result, outcome.Value):
            self.remote.post(self.pid, {"k": "reply", "to": str(self.pid), "ref": ref,
                                        "v": _plain(result.value)})
        else:
            assert isinstance(result, outcome.Error)
            exc = result.error
            error = getattr(exc, "error", None) or ErrorInfo.from_exception(exc)
            self.remote.post(self.pid, {"k": "fail", "to": str(self.pid), "ref": ref,
                                        "why": str(exc), "error": _error_plain(error),
                                        "callee": str(getattr(exc, "pid", "") or "")})


class Remote:
    """A node's side of plain processes on other nodes."""

    def __init__(self, router: Any, member: Any) -> None:
        self.router = router
        self.member = member
        self.name: str = member.name
        self._conn: psycopg.Connection[Any] | None = None
        self.peers: dict[Pid, _Peer] = {}
        #: remote pid -> local pids monitoring it / linked to it
        self.watching: dict[Pid, set[Pid]] = {}
        self.linked: dict[Pid, set[Pid]] = {}

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

    def peer(self, pid: Pid) -> _Peer:
        peer = self.peers.get(pid)
        if peer is None:
            peer = self.peers[pid] = _Peer(self, pid)
        return peer

    # ------------------------------------------------------------ sending
    def post(self, to: Pid, body: dict[str, Any]) -> bool:
        """Send ``body`` to the node of ``to`` (at most once); False if it could not."""
        node = to.id.rpartition("@")[2]
        text = json.dumps(body, separators=(",", ":"))
        channel = self.member.pg.node_channel(node)
        try:
            conn = self._connection()
            if len(text.encode()) <= _NOTIFY_MAX:
                conn.execute("SELECT pg_notify(%s, %s)", (channel, text))
            else:
                s = self.member.pg._s
                with conn.transaction():
                    row = conn.execute(f"INSERT INTO {s}.messages (body, created) VALUES "
                                       f"(%s, {s}.now_s()) RETURNING id", (text,)).fetchone()
                    assert row is not None
                    conn.execute("SELECT pg_notify(%s, %s)",
                                 (channel, json.dumps({"k": "ref", "id": int(row[0])})))
            return True
        except (psycopg.Error, StoreError) as exc:
            log.warning("node %s: a message to node %s was lost: %s", self.name, node, exc)
            self.close()
            return False

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.member.store._connect("messages")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # pragma: no cover
                pass
        self._conn = None

    def send(self, sender: Pid | None, to: Pid, msg: Message) -> bool:
        text = to_json(msg.payload, what=f"the payload of message {msg.topic!r} to {to} "
                                         "(on another node)")
        return self.post(to, {"k": "msg", "to": str(to), "from": None if sender is None
                              else str(sender), "topic": msg.topic, "p": text, "id": msg.id,
                              "ref": msg.call_ref})

    def deliver_event(self, to: Pid, event: Event) -> None:
        if event.kind is EventKind.EXIT:
            watchers = self.watching.get(event.pid)
            if watchers is not None:
                watchers.discard(to)
        self.post(to, {"k": "event", "to": str(to), "kind": str(event.kind),
                       "pid": str(event.pid), "r": _plain(event.result),
                       "error": _error_plain(event.error)})

    def linked_exit(self, target: Pid, dead: Pid, error: ErrorInfo | None) -> None:
        self.post(target, {"k": "linked_exit", "target": str(target), "dead": str(dead),
                           "error": _error_plain(error)})

    def link(self, target: Pid, other: Pid) -> bool:
        self.linked.setdefault(target, set()).add(other)
        return self.post(target, {"k": "link", "target": str(target), "other": str(other)})

    def unlink(self, target: Pid, other: Pid) -> None:
        self.linked.get(target, set()).discard(other)
        self.post(target, {"k": "unlink", "target": str(target), "other": str(other)})

    def monitor(self, target: Pid, watcher: Pid) -> bool:
        self.watching.setdefault(target, set()).add(watcher)
        return self.post(target, {"k": "monitor", "target": str(target),
                                  "watcher": str(watcher)})

    def demonitor(self, target: Pid, watcher: Pid) -> None:
        self.watching.get(target, set()).discard(watcher)
        self.post(target, {"k": "demonitor", "target": str(target), "watcher": str(watcher)})

    def stop(self, target: Pid, by: Pid | None, kill: bool) -> None:
        self.post(target, {"k": "kill" if kill else "cancel", "target": str(target),
                           "by": None if by is None else str(by)})

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
            msg = Message(body["topic"], json.loads(body["p"]), sender, body["id"], ref)
            host = router.hosts.get(router.aliases.get(to.host, to.host))
            if ref is not None and sender is not None:
                callee = router.caller_of(to)
                if callee is None or not callee.accepts_calls:
                    self.peer(sender).finish_call(int(ref), outcome.Error(ProcessError(
                        f"call to {to} failed: {noproc(to)}", pid=to, error=noproc(to))))
                    return
                if callee.callers is None:
                    callee.callers = {}
                callee.callers[int(ref)] = self.peer(sender)  # its death fails the call
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
                caller.finish_call(int(body["ref"]), outcome.Value(body["v"]))
            else:
                callee = Pid.parse(body["callee"]) if body.get("callee") else None
                caller.finish_call(int(body["ref"]), outcome.Error(ProcessError(
                    body["why"], pid=callee, error=_error(body["error"]))))
        elif kind == "event":
            event = Event(EventKind(body["kind"]), Pid.parse(body["pid"]), body["r"],
                          _error(body["error"]))
            to = Pid.parse(body["to"])
            if event.kind is EventKind.EXIT:
                watchers = self.watching.get(event.pid)
                if watchers is not None:
                    watchers.discard(to)
            router.deliver_event(to, event)
        elif kind == "linked_exit":
            dead = Pid.parse(body["dead"])
            target = Pid.parse(body["target"])
            self.linked.get(dead, set()).discard(target)
            router.linked_exit(target, dead, _error(body["error"]))
        elif kind == "monitor":
            target, watcher = Pid.parse(body["target"]), Pid.parse(body["watcher"])
            if not router.monitor(target, watcher):
                self.deliver_event(watcher, Event(EventKind.EXIT, target, None, noproc(target)))
        elif kind == "demonitor":
            router.demonitor(Pid.parse(body["target"]), Pid.parse(body["watcher"]))
        elif kind == "link":
            target, other = Pid.parse(body["target"]), Pid.parse(body["other"])
            if not router.link(target, other):
                self.linked_exit(other, target, noproc(target))
        elif kind == "unlink":
            router.unlink(Pid.parse(body["target"]), Pid.parse(body["other"]))
        elif kind in ("kill", "cancel"):
            target = Pid.parse(body["target"])
            by = None if body["by"] is None else Pid.parse(body["by"])
            host = router.hosts.get(router.aliases.get(target.host, target.host))
            if host is None:
                return
            if kind == "kill":
                host.kill(target, ErrorInfo("Terminated", f"terminated by {by} (another node)"))
            else:
                host.cancel_event(target, by)

    # ------------------------------------------------------------ losing a node
    def node_gone(self, name: str, prefix: str | None) -> None:
        """Node ``name`` (its pids start with ``prefix``) was lost or left: monitors of
        its processes get ``EXIT`` ``noconnection``, links act, calls fail."""

        def gone(pid: Pid) -> bool:
            if pid.id.rpartition("@")[2] != name:
                return False
            return prefix is None or pid.id.startswith(prefix)

        for pid in [p for p in self.watching if gone(p)]:
            for watcher in self.watching.pop(pid):
                self.router.deliver_event(watcher, Event(EventKind.EXIT, pid, None,
                                                         noconnection(pid, name)))
        for pid in [p for p in self.linked if gone(p)]:
            for local in self.linked.pop(pid):
                self.router.linked_exit(local, pid, noconnection(pid, name))
        for pid in [p for p in self.peers if gone(p)]:
            peer = self.peers.pop(pid)
            peer.fail_callers(f"call to {pid} failed: {noconnection(pid, name)}",
                              noconnection(pid, name))
