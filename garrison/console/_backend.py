"""What the console shows and does, as JSON-ready dicts: one backend on a store (a
tool, ``lock=False``) and one attached to a running node.

Both read the workflows from the store. The node backend adds what only a running
node knows: live statuses (``sleeping``, ``waiting``), its processes, services and
their supervision tree, and it acts through the node API (``node.workflow(id)``);
the store backend acts through ``garrison._store_tools``, exactly as ``garrison
workflows`` does, so a node that holds the store is woken at once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import time
from collections.abc import Sequence
from typing import Any

import trio

from .. import _store_tools as tools
from .._errors import NoSuchWorkflow, PromiseAlreadyCompleted
from ..actors._values import Pid
from ..persistence import WorkflowStatus

__all__ = ["ApiError", "Backend", "NodeBackend", "StoreBackend"]

#: statuses the store keeps only as ``running`` while a node runs the workflow
_UNFINISHED = ("pending", "running", "sleeping", "waiting", "blocked")
#: the journal records one workflow page shows at most (the latest ones)
JOURNAL_SHOWN = 2000
#: the processes the node page lists at most
PROCESSES_SHOWN = 2000
#: the children of one workflow listed at most
CHILDREN_SHOWN = 500
#: the statuses a workflow can be retried from (resumed by replay from its journal)
RETRYABLE = ("failed", "blocked")


class ApiError(Exception):
    """A refused request: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def encode_cursor(created: Any, workflow_id: str) -> str:
    """The opaque ``next`` cursor of a page: the last record's ``(created, id)``."""
    stamp = created.timestamp() if created is not None else 0.0
    raw = json.dumps([stamp, workflow_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """``(created, workflow_id)`` of a cursor; :class:`ApiError` 400 if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, workflow_id = json.loads(raw)
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) \
                or not isinstance(workflow_id, str):
            raise ValueError(cursor)
    except (ValueError, binascii.Error, TypeError):
        raise ApiError(400, f"after={cursor!r} is not a cursor of this console (use the "
                            "'next' value of the previous page)") from None
    return float(stamp), workflow_id


def parse_statuses(values: Sequence[str]) -> list[str]:
    """``status=a,b`` (or repeated): checked against the workflow statuses."""
    statuses = [s.strip() for value in values for s in value.split(",") if s.strip()]
    known = [s.value for s in WorkflowStatus]
    for status in statuses:
        if status not in known:
            raise ApiError(400, f"status {status!r} is not a workflow status: expected one "
                                f"of {', '.join(known)}")
    return statuses


def _outcome_ok(outcome: Any) -> bool:
    """False for a journal record that holds a failure (an activity's or call's error,
    a rejected promise, a failed child)."""
    return not (isinstance(outcome, dict) and ("error" in outcome or "rejected" in outcome))


class Backend:
    """The reads both backends share (they differ in live status and in actions)."""

    #: attached to a running node (live statuses, processes, services)
    live = False
    store: Any

    # -- to override -----------------------------------------------------------------
    def status_of(self, rec: Any) -> str:
        """The workflow's status as the console shows it."""
        return str(rec.status)

    def close(self) -> None:
        """Release what the backend opened."""

    # -- capabilities ------------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        """What this console can do (``GET /api/capabilities``)."""
        return {
            "live": self.live,
            "store": self.store.path,
            "statuses": [s.value for s in WorkflowStatus],
            "actions": ["signal", "resolve", "reject", "cancel", "retry"],
            "retry": True,
        }

    # -- the list ----------------------------------------------------------------------
    def list_page(self, statuses: list[str], search: dict[str, Any], id_prefix: str | None,
                  after: str | None, limit: int, newest_first: bool = True) -> dict[str, Any]:
        """One page of the workflow list, and the cursor of the next (``None``: last)."""
        cursor: tuple[float, str] | None = decode_cursor(after) if after else None
        wanted = set(statuses)
        # While a node runs them, the store says ``running`` for sleeping and waiting
        # workflows: ask it for every unfinished status and keep the live ones wanted.
        filter_live = self.live and bool(wanted & set(_UNFINISHED))
        store_statuses = sorted(wanted | set(_UNFINISHED)) if filter_live else sorted(wanted)
        rows: list[tuple[Any, str]] = []
        batch = limit + 1
        while len(rows) <= limit:
            found = self.store.list_workflows(
                store_statuses or None, search or None, limit=batch, after=cursor,
                newest_first=newest_first, id_prefix=id_prefix or None)
            for rec in found:
                status = self.status_of(rec)
                if not filter_live or status in wanted:
                    rows.append((rec, status))
                    if len(rows) > limit:
                        break
            if len(found) < batch:
                break
            cursor = (found[-1].created.timestamp(), found[-1].workflow_id)
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1][0] if rows else None
        return {
            "workflows": [self._summary(rec, status) for rec, status in rows],
            "next": encode_cursor(last.created, last.workflow_id) if more and last else None,
        }

    @staticmethod
    def _summary(rec: Any, status: str) -> dict[str, Any]:
        return {"workflow_id": rec.workflow_id, "name": rec.name, "status": status,
                "created": tools.when(rec.created), "updated": tools.when(rec.updated),
                "search": rec.search}

    # -- one workflow ------------------------------------------------------------------
    def record(self, workflow_id: str) -> Any:
        """The workflow's record; :class:`ApiError` 404 if there is none."""
        rec = self.store.get_workflow(workflow_id)
        if rec is None:
            raise ApiError(404, f"no workflow {workflow_id!r} in {self.store.path}")
        return rec

    async def detail(self, workflow_id: str) -> dict[str, Any]:
        """Everything about one workflow (``GET /api/workflows/{id}``).

        The journal, which may be long, is read in a worker thread (the store's reads
        are thread-safe), so a page that polls it never holds up the node's workflows."""
        store = self.store
        rec = self.record(workflow_id)
        wid = rec.workflow_id
        journal = await trio.to_thread.run_sync(store.journal, wid)
        status = self.status_of(rec)
        shown = journal[-JOURNAL_SHOWN:]
        pid = Pid(rec.host or "workflows", wid)
        parent = None
        if rec.parent is not None:
            is_workflow = store.get_workflow(rec.parent.id) is not None
            parent = {"pid": str(rec.parent),
                      "workflow_id": rec.parent.id if is_workflow else None}
        children = store.list_workflows(parent=pid, limit=CHILDREN_SHOWN)
        promises = store.promises(wid)
        final = status in tools.FINAL
        workflow = tools.record_json(rec)
        workflow.update(status=status, pid=str(pid),
                        error=tools.error_json(rec.error, traceback=True))
        return {
            "workflow": workflow,
            "journal": [{"seq": r.seq, "time": tools.when(r.time), "kind": r.kind,
                         "name": r.name, "outcome": r.outcome, "attempts": r.attempts,
                         "ok": _outcome_ok(r.outcome)} for r in shown],
            "journal_records": len(journal),
            "journal_truncated": len(shown) < len(journal),
            "state": store.states(wid),
            "promises": [{"name": p.name, "status": str(p.status), "value": p.value,
                          "error": p.error, "created": tools.when(p.created),
                          "completed": tools.when(p.completed)} for p in promises],
            "timers": self._timers(wid, journal, final),
            "inbox": [{"id": m.id, "message_id": m.msg_id, "topic": m.topic,
                       "payload": m.payload, "sender": str(m.sender) if m.sender else None,
                       "kind": m.kind, "created": tools.when(m.created)}
                      for m in store.pending_messages(wid)],
            "parent": parent,
            "children": [{"workflow_id": c.workflow_id, "name": c.name,
                          "status": self.status_of(c)} for c in children],
            "actions": {
                "signal": not final,
                "cancel": not final and not rec.cancel_requested,
                "resolve": [] if final else
                [p.name for p in promises if str(p.status) == "pending"],
                "retry": status in RETRYABLE,
            },
        }

    def _timers(self, wid: str, journal: list[Any], final: bool) -> list[dict[str, Any]]:
        """Pending timers: durable sleeps and receive timeouts (the store's timers), and
        ``workflow.timer`` deadlines (journaled where the timer was made) still ahead."""
        if final:
            return []
        found = {t.seq: ("sleep", t.deadline.timestamp()) for t in self.store.timers(wid)}
        now = time.time()
        for r in journal:
            if r.kind == "timer" and r.seq not in found and isinstance(r.outcome, dict):
                deadline = r.outcome.get("deadline")
                if isinstance(deadline, int | float) and deadline > now:
                    found[r.seq] = ("timer", float(deadline))
        return [{"seq": seq, "kind": kind,
                 "deadline": tools.when(_dt.datetime.fromtimestamp(deadline, _dt.UTC))}
                for seq, (kind, deadline) in sorted(found.items(), key=lambda i: i[1][1])]

    # -- actions -------------------------------------------------------------------------
    def _acting_on(self, workflow_id: str, what: str) -> Any:
        rec = self.record(workflow_id)
        status = self.status_of(rec)
        if status in tools.FINAL:
            raise ApiError(409, f"cannot {what} workflow {workflow_id!r}: it is {status}")
        return rec

    async def signal(self, workflow_id: str, topic: str, payload: Any) -> dict[str, Any]:
        """Send the workflow a message."""
        raise NotImplementedError

    async def resolve(self, workflow_id: str, promise: str, value: Any) -> None:
        """Resolve the workflow's promise."""
        raise NotImplementedError

    async def reject(self, workflow_id: str, promise: str, message: str) -> None:
        """Reject the workflow's promise."""
        raise NotImplementedError

    async def cancel(self, workflow_id: str) -> None:
        """Ask the workflow to cancel."""
        raise NotImplementedError

    async def retry(self, workflow_id: str) -> str:
        """Resume a failed or blocked workflow by replay from its journal; what happens,
        in words."""
        raise NotImplementedError

    def _retryable(self, workflow_id: str) -> None:
        rec = self.record(workflow_id)
        status = self.status_of(rec)
        if status not in RETRYABLE:
            raise ApiError(409, f"cannot retry workflow {workflow_id!r}: it is {status} (only "
                                "a failed or blocked workflow can be retried)")

    def node_view(self) -> dict[str, Any]:
        """Live processes, services and the supervision tree (``GET /api/node``)."""
        raise ApiError(404, "the console is not attached to a running node (start it with "
                            "garrison run CONFIG --ui ADDRESS to see processes and services)")


class StoreBackend(Backend):
    """A store opened as a tool (``lock=False``), with or without a node holding it."""

    def __init__(self, store: Any, *, owned: bool = False) -> None:
        self.store = store
        self._owned = owned

    def close(self) -> None:
        if self._owned:
            self.store.close()

    async def signal(self, workflow_id: str, topic: str, payload: Any) -> dict[str, Any]:
        self._acting_on(workflow_id, "signal")
        msg_id = self._tool(tools.signal, workflow_id, topic, payload)
        await trio.lowlevel.checkpoint()
        return {"message_id": msg_id}

    async def resolve(self, workflow_id: str, promise: str, value: Any) -> None:
        self._acting_on(workflow_id, "resolve a promise of")
        self._tool(tools.resolve, workflow_id, promise, value)
        await trio.lowlevel.checkpoint()

    async def reject(self, workflow_id: str, promise: str, message: str) -> None:
        self._acting_on(workflow_id, "reject a promise of")
        self._tool(tools.reject, workflow_id, promise, message)
        await trio.lowlevel.checkpoint()

    async def cancel(self, workflow_id: str) -> None:
        self._acting_on(workflow_id, "cancel")
        self._tool(tools.cancel, workflow_id)
        await trio.lowlevel.checkpoint()

    async def retry(self, workflow_id: str) -> str:
        self._retryable(workflow_id)
        note: str = self._tool(tools.retry, workflow_id)
        await trio.lowlevel.checkpoint()
        return note

    def _tool(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(self.store, *args)
        except tools.ToolError as exc:
            raise ApiError(409 if exc.code == 1 else 400, str(exc)) from None
        except NoSuchWorkflow as exc:  # deleted between our read and our write
            raise ApiError(404, str(exc)) from None


class NodeBackend(Backend):
    """Attached to a running node: live statuses and data; actions through its API."""

    live = True

    def __init__(self, node: Any, host: str = "workflows") -> None:
        self.node = node
        self.host = host
        self.store = node.hosts[host].store

    def status_of(self, rec: Any) -> str:
        try:
            return str(self.node.workflow(rec.workflow_id, host=self.host).status())
        except NoSuchWorkflow:  # pragma: no cover - deleted meanwhile
            return str(rec.status)

    async def signal(self, workflow_id: str, topic: str, payload: Any) -> dict[str, Any]:
        self._acting_on(workflow_id, "signal")
        await self.node.workflow(workflow_id, host=self.host).signal(topic, payload)
        return {}

    async def resolve(self, workflow_id: str, promise: str, value: Any) -> None:
        self._acting_on(workflow_id, "resolve a promise of")
        try:
            await self.node.workflow(workflow_id, host=self.host).promise(promise).resolve(value)
        except PromiseAlreadyCompleted as exc:
            raise ApiError(409, str(exc)) from None

    async def reject(self, workflow_id: str, promise: str, message: str) -> None:
        self._acting_on(workflow_id, "reject a promise of")
        try:
            await self.node.workflow(workflow_id, host=self.host).promise(promise).reject(message)
        except PromiseAlreadyCompleted as exc:
            raise ApiError(409, str(exc)) from None

    async def cancel(self, workflow_id: str) -> None:
        self._acting_on(workflow_id, "cancel")
        await self.node.workflow(workflow_id, host=self.host).cancel()

    async def retry(self, workflow_id: str) -> str:
        self._retryable(workflow_id)
        try:
            note: str = await self.node.workflow(workflow_id, host=self.host).retry()
            return note
        except ValueError as exc:  # its status changed meanwhile
            raise ApiError(409, str(exc)) from None

    def node_view(self) -> dict[str, Any]:
        node = self.node
        stats = {key: str(value) if isinstance(value, Pid) else value
                 for key, value in node.stats().items()}
        services = node.services()
        service_of = {str(s.pid): s.id for s in services if s.pid is not None}
        infos = node.processes()
        live = {str(info.pid) for info in infos}
        rows = [{"pid": str(i.pid), "label": i.label,
                 "parent": str(i.parent) if i.parent else None,
                 "service": service_of.get(str(i.pid)),
                 "queued": i.queued, "events": i.events, "names": list(i.names),
                 "links": sorted(map(str, i.links)), "monitors": sorted(map(str, i.monitors)),
                 "trap_links": i.trap_links} for i in infos]
        children: dict[str | None, list[dict[str, Any]]] = {}
        for row in rows:
            parent = row["parent"] if row["parent"] in live else None
            children.setdefault(parent, []).append(row)

        # iterative (a chain of spawns may be deeper than Python's recursion limit)
        roots: list[dict[str, Any]] = []
        stack: list[tuple[str | None, list[dict[str, Any]]]] = [(None, roots)]
        budget = PROCESSES_SHOWN
        while stack and budget > 0:
            parent, into = stack.pop()
            for row in children.get(parent, ())[:budget]:
                budget -= 1
                node_row = {"pid": row["pid"], "label": row["label"],
                            "service": row["service"], "queued": row["queued"],
                            "children": []}
                into.append(node_row)
                stack.append((row["pid"], node_row["children"]))

        return {
            "node": {"store": self.store.path, "hosts": sorted(node.hosts)},
            "stats": stats,
            "services": [{"id": s.id, "status": str(s.status),
                          "pid": str(s.pid) if s.pid else None, "restarts": s.restarts,
                          "last_error": str(s.last_error) if s.last_error else None}
                         for s in services],
            "processes": rows[:PROCESSES_SHOWN],
            "processes_total": len(rows),
            "tree": roots,
        }
