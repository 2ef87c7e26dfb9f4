"""Tools on a workflow store, shared by ``garrison workflows`` and the web console.

A tool opens the store without its lock (``lock=False``): it reads committed state,
and its writes (a signal, a promise resolved or rejected, a cancel request, a start,
a termination, a retry) commit at once and leave a wakeup that the node holding the
store picks up immediately (a stopped node on its next start). Every refusal is a
:class:`ToolError` carrying a one-line message and the exit status the command line
uses for it. ``replay`` and ``export`` open the store read-only (``readonly=True``):
they never change its file (and so do ``list``, ``show`` and ``history`` on a read-only
file system, see :func:`open_store`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from ._errors import (
    DedupKeyTaken,
    GarrisonError,
    NoSuchWorkflow,
    PromiseAlreadyCompleted,
    StoreVersionError,
    closest_id,
    id_hint,
)
from ._schedule_handle import as_shown
from .actors._values import Pid

__all__ = [
    "FINAL",
    "TerminateAsked",
    "ToolError",
    "ask_terminate",
    "cancel",
    "check_arity",
    "check_reason",
    "check_rejection",
    "check_topic",
    "delete_schedule",
    "detail",
    "error_json",
    "get",
    "journal_pages",
    "json_arg",
    "key_value",
    "open_store",
    "pause_schedule",
    "prune",
    "queue_json",
    "record_json",
    "refuse_final",
    "reject",
    "resolve",
    "resume_schedule",
    "retry",
    "retry_note",
    "schedule_json",
    "search_filters",
    "signal",
    "standard_json",
    "start",
    "start_transaction",
    "strict_json",
    "terminate",
    "terminate_ended",
    "terminate_unanswered",
    "trigger_schedule",
    "when",
    "when_json",
]

#: the statuses a workflow never leaves
FINAL = frozenset({"completed", "failed", "cancelled"})
#: the children of one workflow ``show`` and the console list at most (oldest first);
#: they count them all
CHILDREN_SHOWN = 500

#: the journal records ``history`` and ``export`` read at a time (:func:`journal_pages`):
#: what they hold of a journal, never the whole of a long one
JOURNAL_PAGE = 64

class ToolError(Exception):
    """A request a tool refuses: ``code`` 1 (the workflow or promise is not there, or
    refuses: finished, already resolved) or 2 (bad input, an unusable store)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def open_store(path: str, *, readonly: bool = False, migrate: bool = False,
               create: Callable[[str], None] | None = None, reads: bool = False) -> Any:
    """The store at ``path`` (a SQLite file or a ``postgresql://`` URL), opened as a
    tool (``lock=False``; ``readonly``: a SQLite file opened read-only): no path (``''``,
    ``:memory:``, ``file:...``), a missing file, a damaged one, an unreachable server or
    one of another schema version is a :class:`ToolError` (code 2). ``migrate``: a store
    of an older garrison is migrated first, as a node would (nothing of it runs).
    ``create``: a store that does not exist is created first, as a node's first open
    would, and ``create(name)`` is called to say so (``name``: the store's own name for
    itself, never with a password). ``reads``: the command only reads, so a SQLite file
    on a read-only file system (a backup on a read-only mount, which no node writes),
    where a tool's open fails, or one this process may not write (which SQLite opens
    read-only unasked, and whose first write fails), is opened read-only."""
    from .persistence import create_store, is_postgres_url, migrate_store
    from .persistence._file import keyword_dsn, read_only_fs

    dsn = keyword_dsn(path)
    if dsn is not None:
        raise ToolError(dsn, 2)
    if not path.strip() or path == ":memory:" or path.startswith("file:"):
        # SQLiteStore refuses these with a ValueError: a tool has no in-memory store
        raise ToolError(f"store {path!r}: expected a SQLite file or a "
                        "postgresql://user@host:port/db URL (an in-memory store is the "
                        "node's own: a tool cannot open one)", 2)
    if reads and not is_postgres_url(path) and (
            read_only_fs(path) or (os.path.isfile(path) and not os.access(path, os.W_OK))):
        readonly = True
    try:
        created = create is not None and create_store(path)
        try:
            store = _open_tool(path, readonly)
        except StoreVersionError as exc:
            if not (migrate and exc.found < exc.expected):
                raise
            migrate_store(path)  # (a store a node runs: StoreLocked)
            store = _open_tool(path, readonly)
        if created and create is not None:  # (named as the store names itself: a
            create(store.path or path)       # postgresql:// URL without its password)
        return store
    except FileNotFoundError:
        raise ToolError(f"no workflow store at {path!r} (a node creates it the first "
                        "time it opens it: `garrison run CONFIG --store PATH`, or "
                        "garrison.open_node(store=PATH), or `garrison workflows start`; "
                        "the other tools only open a store that exists)", 2) from None
    except StoreVersionError as exc:
        older = exc.found < exc.expected and readonly
        raise ToolError(str(exc) + ("; or, on a copy of it, `garrison workflows --store "
                                    "COPY replay --migrate` (the older garrison cannot open "
                                    "it after that)" if older else ""), 2) from None
    except GarrisonError as exc:  # StoreError, StoreLocked: names the store
        raise ToolError(str(exc), 2) from None
    except ImportError as exc:  # a postgresql:// store without psycopg installed
        raise ToolError(str(exc), 2) from None


def _open_tool(path: str, readonly: bool) -> Any:
    from .persistence import SQLiteStore, is_postgres_url
    from .persistence import open_store as open_any

    if readonly and not is_postgres_url(path):
        return SQLiteStore(path, lock=False, readonly=True)
    # a tool's write (a signal, a start, a terminate) is reported done once it is
    # durable, whatever the node's ``synchronous``: it says "committed", and its writes
    # are few (on SQLite an fsync of the -wal each; on PostgreSQL a WAL flush)
    return open_any(path, lock=False, synchronous="full")


# ------------------------------------------------------------------ reads
def get(store: Any, workflow_id: str) -> Any:
    """The workflow's record; :class:`ToolError` when the store has no such workflow."""
    rec = store.get_workflow(workflow_id)
    if rec is None:
        raise ToolError(f"no workflow {workflow_id!r} in {store.path}")
    return rec


def refuse_final(rec: Any, what: str) -> None:
    """:class:`ToolError` if the workflow has finished (nothing can act on it)."""
    if str(rec.status) in FINAL:
        raise ToolError(f"cannot {what} workflow {rec.workflow_id!r}: it is {rec.status}")


def detail(store: Any, rec: Any) -> dict[str, Any]:
    """What ``garrison workflows show`` prints: the row (on a cluster's store, with the
    ``node`` that runs it now), the journal's size, pending inbox items, promises,
    state and timers, and its first :data:`CHILDREN_SHOWN` children (id and status,
    oldest first) with ``children_total``, the store's count of them all."""
    count, size = store.journal_size(rec.workflow_id)
    pid = Pid(rec.host or "workflows", rec.workflow_id)  # (as the console names it)
    children = store.list_workflows(parent=pid, limit=CHILDREN_SHOWN)
    return {
        **record_json(rec),
        **node_json(store, rec.workflow_id),
        "journal_records": count,
        "journal_bytes": size,
        "pending_messages": [{"topic": m.topic, "payload": m.payload, "kind": m.kind}
                             for m in store.pending_messages(rec.workflow_id)],
        "promises": {p.name: {"status": str(p.status), "value": p.value, "error": p.error}
                     for p in store.promises(rec.workflow_id)},
        "state": store.states(rec.workflow_id),
        "timers": ([] if str(rec.status) in FINAL else
                   pending_timers(store.timers(rec.workflow_id),
                                  store.journal(rec.workflow_id, kind="timer"))),
        "queue": queue_json(store, rec),
        "children": [{"workflow_id": c.workflow_id, "status": str(c.status)}
                     for c in children],
        "children_total": len(children) if len(children) < CHILDREN_SHOWN
        else store.count_workflows(parent=pid),
    }


def queue_json(store: Any, rec: Any, limits: dict[str, Any] | None = None
               ) -> dict[str, Any] | None:
    """Why a ``pending`` workflow waits (``None`` for any other status), as ``garrison
    workflows show`` and the console say it: ``{"host", "priority", "ahead", "running",
    "max_concurrent", "cluster_max_concurrent", "rate", "started", "reason"}``. The
    store tells its queue row and counts (``store.queue_place``); the host's limits are
    ``limits`` (a node attached: its host's), else what a live node of a cluster says
    in its row (PostgreSQL), else unknown (``None``: SQLite keeps no config) and the
    reason says so. ``started``: the host's admissions in the rate's last period."""
    if str(rec.status) != "pending":
        return None
    place = store.queue_place(rec.workflow_id)
    nobody = not getattr(store, "owner", True) and not store.node_running()
    if place is None:  # (pending with no queue row: a start being written)
        return {"host": rec.host, "priority": None, "ahead": None, "running": None,
                "max_concurrent": None, "cluster_max_concurrent": None, "rate": None,
                "started": None,
                "reason": "waiting for a node to start it: no node holds the store now"
                if nobody else "waiting for its node to start it"}
    limits = limits if limits is not None else place.limits
    clustered = getattr(store, "workflow_node", None) is not None
    most = mine = theirs = rate = started = allowed = None
    if limits is not None:
        mine, theirs = limits.get("max_concurrent"), limits.get("cluster_max_concurrent")
        rate = limits.get("rate")
        # (one node alone on its store: the smaller of the two; in a cluster the store
        # counts the host's workflows against cluster_max_concurrent, each node its own)
        most = theirs if clustered else min((n for n in (mine, theirs) if n), default=None)
        starts = limits.get("starts")
        if rate is not None and isinstance(starts, list | tuple) and len(starts) == 2:
            allowed, period = int(starts[0]), float(starts[1])
            started = len(store.admitted_since(place.host, time.time() - period))
    queue = f"queue {place.host!r}"
    of = f"{place.running} running" + (f" of max {most}" if most is not None else "")
    ahead = f", {place.ahead} ahead of it" if place.ahead else ""
    if place.host is None:
        reason = ("waiting for a node to run it: no node holds the store now (the next "
                  "node that opens it runs it, or queues it)" if nobody else
                  "waiting for a node to run it: no node has taken it from the store yet")
    elif nobody:
        reason = f"waiting in {queue}: no node holds the store now ({of}{ahead})"
    elif most is not None and place.running >= most:
        reason = f"waiting for a slot in {queue}: {of}{ahead}"
    elif started is not None and allowed is not None and started >= allowed:
        reason = (f"waiting for rate {rate} in {queue}: {started} started in its last "
                  f"period{ahead}")
    elif place.ahead:
        reason = f"waiting its turn in {queue}: {of}{ahead}"
    elif clustered and mine is not None:
        reason = f"waiting in {queue} for a node with room: {of}, max {mine} on each node"
    else:
        reason = f"waiting in {queue} for a node to admit it: {of}"
    if limits is None and place.host is not None:
        reason += (" (its limits are the config of the node that runs the host, which "
                   "the store does not keep)")
    return {"host": place.host, "priority": place.priority, "ahead": place.ahead,
            "running": place.running, "max_concurrent": mine,
            "cluster_max_concurrent": theirs, "rate": rate, "started": started,
            "reason": reason}


def node_json(store: Any, workflow_id: str) -> dict[str, Any]:
    """``{"node": name}``, the node of a cluster that runs the workflow now (``None``
    while none does), on a cluster's store (PostgreSQL); ``{}`` on a store of one
    node (SQLite). ``garrison workflows show`` and the console show it."""
    node = getattr(store, "workflow_node", None)  # (a cluster's store: PostgreSQL)
    return {"node": node(workflow_id)} if node is not None else {}


def pending_timers(stored: list[Any], journal: list[Any]) -> list[dict[str, Any]]:
    """A workflow's pending timers, soonest first, as ``{"seq", "kind", "deadline"}``
    (``journal``: its ``timer`` records, ``store.journal(id, kind="timer")``, or more):
    durable sleeps and receive timeouts (the store's ``timers``, kind ``"sleep"`` or
    ``"receive"``; ``"sleep"`` too for a timer stored before schema version 7, which
    did not say) and ``workflow.timer`` deadlines (journaled where the timer was made,
    kind ``"timer"``) still ahead: also one a ``first()`` race decided against (its
    record names the winner, not the timers that lost, and the code may await or race
    such a timer again). ``garrison workflows show`` and the console print these."""
    found = {t.seq: (t.kind or "sleep", t.deadline.timestamp()) for t in stored}
    now = time.time()
    for r in journal:
        if r.kind == "timer" and r.seq not in found and isinstance(r.outcome, dict):
            deadline = r.outcome.get("deadline")
            if isinstance(deadline, int | float) and math.isfinite(deadline) \
                    and deadline > now:
                found[r.seq] = ("timer", float(deadline))
    out = []
    for seq, (kind, deadline) in sorted(found.items(), key=lambda i: i[1][1]):
        try:
            at = when(_dt.datetime.fromtimestamp(deadline, _dt.UTC))
        except (OverflowError, OSError, ValueError):  # a deadline no date has
            at = str(deadline)
        out.append({"seq": seq, "kind": kind, "deadline": at})
    return out


# ------------------------------------------------------------------ writes
def check_name(promise: object) -> str:
    """``promise`` if it can name a promise, else ``ToolError`` (exit 2, bad arguments;
    the console's 400): a non-empty string of valid text. (Its size: see
    :func:`check_declarable`.)"""
    from .hosts.workflow._ids import check_promise_name

    try:
        return check_promise_name(promise)
    except ValueError as exc:
        raise ToolError(str(exc), 2) from None


def check_declarable(store: Any, workflow_id: str, promise: str) -> None:
    """``ToolError`` (exit 2, bad arguments; the console's 400) for a promise name
    longer than ``MAX_KEY_BYTES`` bytes of UTF-8 that the workflow has not declared:
    ``workflow.promise`` refuses such a name (a value stored under it would never be
    read) and PostgreSQL's index cannot hold it. One an older garrison declared (its
    SQLite store took it) can still be completed."""
    from .hosts.workflow._ids import MAX_KEY_BYTES, check_key_size

    if len(promise) * 4 <= MAX_KEY_BYTES or store.get_promise(workflow_id, promise):
        return
    try:
        check_key_size(promise, "a promise name")
    except ValueError as exc:
        raise ToolError(str(exc), 2) from None


def check_topic(topic: object) -> str:
    """``topic`` if a signal may carry it (a non-empty string), else :class:`ToolError`
    (code 2, bad arguments; the console's 400): the one rule of ``garrison workflows
    signal`` and the console's ``POST .../signal``, ``WorkflowHandle.signal``'s."""
    from .hosts.workflow._ids import check_signal_topic

    try:
        return check_signal_topic(topic)
    except ValueError as exc:
        raise ToolError(str(exc), 2) from None


def check_rejection(message: object) -> str:
    """``message`` if a promise may be rejected with it (a non-empty string), else
    :class:`ToolError` (code 2; the console's 400): the one rule of ``garrison
    workflows reject`` and the console's ``POST .../reject``, ``PromiseHandle.reject``'s."""
    from .hosts.workflow._ids import check_rejection as rule

    try:
        return rule(message)
    except ValueError as exc:
        raise ToolError(str(exc), 2) from None


def _write_unfinished(store: Any, rec: Any, what: str, write: Callable[[Any], Any]) -> None:
    """Commit ``write(tx)`` (a signal, a promise completed) only if the workflow has
    not ended when it commits: the look and the write are one step in the store
    (``Transaction.expect_unfinished``), so a workflow that ends between the tool's
    read and its write gets nothing (a message kept in a finished workflow's inbox is
    never read) and the tool says it had ended, as :func:`refuse_final` does."""
    from .persistence import Transaction, WorkflowEnded

    try:
        store.write(write(Transaction().expect_unfinished(rec.workflow_id)))
    except WorkflowEnded as exc:
        raise ToolError(f"cannot {what} workflow {rec.workflow_id!r}: it is {exc.status} "
                        "(it ended before the write)") from None
    except NoSuchWorkflow:
        raise ToolError(f"no workflow {rec.workflow_id!r} in {store.path} (it was "
                        "deleted before the write)") from None


def signal(store: Any, workflow_id: str, topic: str, payload: Any) -> str:
    """Queue a message on the workflow's durable inbox; returns its message id."""
    check_topic(topic)
    rec = get(store, workflow_id)
    refuse_final(rec, "signal")
    msg_id = f"cli-{uuid.uuid4().hex}"
    _write_unfinished(store, rec, "signal", lambda tx: tx.deliver(
        rec.workflow_id, topic, payload, msg_id=msg_id, sender=None))
    return msg_id


def resolve(store: Any, workflow_id: str, promise: str, value: Any) -> None:
    """Resolve the workflow's promise (refused if it was completed before)."""
    check_name(promise)  # bad arguments (exit 2) before the store is read
    rec = get(store, workflow_id)
    check_declarable(store, rec.workflow_id, promise)
    refuse_final(rec, "resolve a promise of")
    try:
        _write_unfinished(store, rec, "resolve a promise of", lambda tx: tx.resolve_promise(
            rec.workflow_id, promise, value))
    except PromiseAlreadyCompleted as exc:
        raise ToolError(str(exc)) from None


def reject(store: Any, workflow_id: str, promise: str, message: str) -> None:
    """Reject the workflow's promise (refused if it was completed before)."""
    check_rejection(message)  # bad arguments (exit 2) before the store is read
    check_name(promise)
    rec = get(store, workflow_id)
    check_declarable(store, rec.workflow_id, promise)
    refuse_final(rec, "reject a promise of")
    try:
        _write_unfinished(store, rec, "reject a promise of", lambda tx: tx.reject_promise(
            rec.workflow_id, promise, message))
    except PromiseAlreadyCompleted as exc:
        raise ToolError(str(exc)) from None


def undeclared_promise(store: Any, workflow_id: str, promise: str) -> str | None:
    """A note when workflow ``workflow_id`` has declared promises, but not ``promise``
    (a misspelled name, most likely): the resolution is kept all the same, for when the
    code declares it (README: a promise resolved early), and nothing else says that the
    workflow goes on waiting. ``None`` when it declared ``promise``, or none yet (the
    journal's ``promise`` records are the declarations)."""
    rec = store.get_workflow(workflow_id)
    if rec is None or str(rec.status) in FINAL:
        return None
    declared = sorted({r.name for r in store.journal(rec.workflow_id, kind="promise")
                       if r.name})
    if not declared or promise in declared:
        return None
    return (f"workflow {rec.workflow_id!r} has not declared promise {promise!r} "
            f"(declared: {', '.join(repr(d) for d in declared)}); kept for when it does")


def cancel(store: Any, workflow_id: str) -> bool:
    """Cancel the workflow. One ``pending`` that never ran (``never_ran``: its first
    attempt, or a retry of one terminated while it waited), while no node holds the
    store, ends ``cancelled`` in the store at once (as a node ends one cancelled in
    its queue: its ``dedup`` key is free again, its watchers get its ``EXIT``), written
    only if no live node claimed it meanwhile; True then. Otherwise the workflow is
    flagged for cancellation and the node that runs it acts on the flag (at once, or
    on its next start); False."""
    from .hosts.workflow import cancel_pending_transaction, never_ran

    rec = get(store, workflow_id)
    refuse_final(rec, "cancel")
    if str(rec.status) == "pending" and never_ran(store, rec):
        try:
            # (with the store's lock held on SQLite: a node that opened it between a
            # look and this write had read it pending, and would run it over the end)
            if store.write_unless_node(cancel_pending_transaction(store, rec)):
                return True
        except ValueError:  # a node claimed it (or it changed) meanwhile: ask instead
            rec = get(store, workflow_id)
            refuse_final(rec, "cancel")
    _flag_cancel(store, rec)
    return False


def cancel_each(store: Any, workflow_ids: Sequence[str]) -> list[bool | Exception]:
    """:func:`cancel` of each of ``workflow_ids``, their writes committed together
    (``store.write_each``: each workflow's write on its own): the ends of the pending
    ones that never ran while no node holds the store (one commit, with the store's
    lock held on SQLite, as :func:`cancel`'s), then the flags of the others, and of
    those if a node holds it (another). One whose write found it changed since it was
    read (nothing of it written) is cancelled alone as :func:`cancel` does it, from a
    new read. In their order, each one's answer (True: ended in the store), or why it
    was not cancelled: the :class:`ToolError` :func:`cancel` raises, ``NoSuchWorkflow``
    (removed meanwhile), or the ``DamagedRecord`` of its row. A failure of the store
    itself is raised, or is the place of each workflow whose write it concerns (a
    PostgreSQL store's: see ``write_each``), which was not written; once the pending
    ones are ended, a failure of the flags' commit is each flag's place (its outcome
    unknown), theirs their end."""
    from .hosts.workflow import cancel_pending_transaction, never_ran
    from .hosts.workflow._operate import flag_transaction

    def alone(wid: str) -> bool | Exception:
        try:
            return cancel(store, wid)
        except (ToolError, NoSuchWorkflow, json.JSONDecodeError) as exc:
            return exc

    def settle(at: list[tuple[int, Any]], written: list[Any], ended: bool) -> None:
        for (n, _rec), outcome in zip(at, written, strict=True):
            if isinstance(outcome, NoSuchWorkflow):
                outcomes[n] = outcome
            elif isinstance(outcome, ValueError):  # it changed since it was read
                outcomes[n] = alone(workflow_ids[n])
            elif isinstance(outcome, Exception):
                outcomes[n] = outcome
            else:
                outcomes[n] = ended

    outcomes: list[bool | Exception] = []
    unran: list[tuple[int, Any]] = []  # (pending, never ran: ended in the store if no node)
    flags: list[tuple[int, Any]] = []
    for wid in workflow_ids:
        try:
            rec = get(store, wid)
            refuse_final(rec, "cancel")
            pending = str(rec.status) == "pending" and never_ran(store, rec)
        except (ToolError, json.JSONDecodeError) as exc:  # (a damaged row: no refusal)
            outcomes.append(exc)
            continue
        (unran if pending else flags).append((len(outcomes), rec))
        outcomes.append(False)
    ended = None
    if unran:
        ended = store.write_each([cancel_pending_transaction(store, rec) for _n, rec in unran],
                                 unless_node=True)
        if ended is None:  # a node holds the store: it is asked, as for the others
            flags = sorted(flags + unran, key=lambda pair: pair[0])
        else:
            settle(unran, ended, True)
    try:
        flagged = store.write_each([flag_transaction(rec) for _n, rec in flags])
    except Exception as exc:
        if ended is None:  # (nothing of these committed: raised as ever)
            raise
        # the pending ones ended stand, committed: each flag's place holds the store's
        # error (its outcome unknown), theirs their end
        flagged = [exc] * len(flags)
    settle(flags, flagged, False)
    return outcomes


def _flag_cancel(store: Any, rec: Any) -> None:
    """Flag ``rec``'s workflow for cancellation (``flag_cancel``), or say why not:
    finished meanwhile, or ended and retried since it was read (the cancel was moot)."""
    from .hosts.workflow import flag_cancel

    moot = flag_cancel(store, rec)
    if moot is None:
        return
    if moot.attempt != rec.attempt:
        raise ToolError(f"cannot cancel workflow {rec.workflow_id!r}: it was retried "
                        f"before the cancel reached it (it is {moot.status}, attempt "
                        f"{moot.attempt}); nothing was written")
    refuse_final(moot, "cancel")
    raise ToolError(f"cannot cancel workflow {rec.workflow_id!r}: its status changed at "
                    "each try; nothing was written")


def start(store: Any, target: str, args: list[Any], workflow_id: str | None = None,
          config: Any = None, *, priority: int = 0,
          dedup: str | None = None) -> tuple[str, bool, str]:
    """Create the workflow ``target(*args)`` (``module:function``, imported here to check
    it and its arguments, or an entry id of ``config``, a loaded config), ``pending``
    until a node runs it: the node holding the store at once, else the next one; in its
    host's queue by ``priority``, holding the ``dedup`` key if given.
    ``(workflow id, created, name)``: ``name`` is the function's ``module:qualname`` as
    stored (an entry id resolves to it); ``created`` is False when a workflow with that
    id exists (it is left as it is, as ``start_workflow`` does). ``DedupKeyTaken``
    (naming the holder) when an unfinished workflow holds ``dedup``: nothing written."""
    wid, name, tx = start_transaction(target, args, workflow_id, config,
                                      priority=priority, dedup=dedup)
    created = bool(store.write(tx)[0])
    return wid, created, name


def start_transaction(target: str, args: list[Any], workflow_id: str | None = None,
                      config: Any = None, *, priority: int = 0,
                      dedup: str | None = None) -> tuple[str, str, Any]:
    """:func:`start`'s checks, without a store: ``(workflow id, name, the transaction
    that creates the workflow)``; a :class:`ToolError` (code 2) for what is wrong
    (``priority`` and ``dedup`` checked as ``start_workflow`` checks them, the error
    naming ``--priority`` or ``--dedup``)."""
    from ._targets import entry_refusal, import_target, target_name
    from .hosts.workflow._codec import restore_args
    from .hosts.workflow._host import check_workflow_id
    from .hosts.workflow._queue import check_dedup, check_priority, tool_start
    from .persistence import Transaction

    for option, check, value in (("--priority", check_priority, priority),
                                 ("--dedup", check_dedup, dedup)):
        try:
            check(value)  # (before the target is imported: the command's own arguments)
        except (TypeError, ValueError) as exc:
            raise ToolError(f"{option}: {exc}", 2) from None

    if config is not None and target in config.entries:
        try:
            fn = config.resolve_target(target)
        except KeyError as exc:
            raise ToolError(str(exc.args[0]), 2) from None
        refused = entry_refusal(config, target, durable=True)  # (a function.py)
        if refused is not None:
            raise ToolError(refused, 2)
    else:
        # (the config's workflow entry a typo or a bare name meant, as a spawn's
        # NoSuchEntry names it; said, not taken)
        near = None if config is None else closest_id(
            target, [i for i, e in config.entries.items() if e.kind == "workflow.py"])
        meant = "" if near is None else f" (did you mean {near!r}?)"
        if ":" not in target:
            raise ToolError(f"TARGET {target!r} must name the workflow function as "
                            "module:function (e.g. app.orders:order_workflow), or an entry "
                            f"id of the config given with --config{meant}", 2)
        try:
            fn = import_target(target)
        except Exception as exc:
            hint = ("; an entry id of a config needs --config FILE" if config is None else
                    "; it is no entry id of the config either" + (
                        "" if near is None else f": did you mean {near!r}?"))
            raise ToolError(f"cannot import {target!r}: {type(exc).__name__}: {exc} (run "
                            "the command where the application's code is importable"
                            f"{hint})", 2) from None
    try:
        name = target_name(fn)  # an activity is refused
        wid = uuid.uuid4().hex if workflow_id is None else check_workflow_id(workflow_id)
        check_arity(fn, name, args)
        restore_args(fn, args, f"workflow {name}")  # typed arguments: checked now
        tx = tool_start(Transaction(), wid, name, args, run_id=uuid.uuid4().hex,
                        priority=priority, dedup=dedup)
    except (TypeError, ValueError, GarrisonError) as exc:
        raise ToolError(str(exc), 2) from None
    return wid, name, tx


def check_arity(fn: Any, name: str, args: list[Any]) -> None:
    """``ValueError`` unless ``fn`` (workflow ``name``) takes ``args`` as its positional
    arguments, naming the workflow, what it takes and what was given."""
    from .hosts.workflow._codec import arity_problem

    why = arity_problem(fn, name, args, "JSON_ARGS gives")
    if why is not None:
        raise ValueError(why)


def terminate(store: Any, workflow_id: str, reason: str, *, wait: float = 5.0) -> bool:
    """End the workflow as ``failed`` with ``Terminated: <reason>`` (its unfinished
    children too), without its cancellation handlers. A node holding the store ends it
    (asked through its inbox; this waits up to ``wait`` seconds to see it ended); with
    no node, it is ended in the store at once. True once it has ended; False when a
    node was asked but has not ended it within ``wait``. A blank ``reason`` is a
    :class:`ToolError` (code 2), as the handle's ``ValueError``. (It is
    :func:`ask_terminate`, then :func:`terminate_ended` until ``wait`` has passed, then
    :func:`terminate_unanswered`.)"""
    asked = ask_terminate(store, workflow_id, reason)
    if asked is None:
        return True
    deadline = time.monotonic() + wait
    while True:
        ended = terminate_ended(store, asked)
        if ended is not None:
            return ended
        if time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return terminate_unanswered(store, asked)


@attrs.frozen
class TerminateAsked:
    """A terminate :func:`ask_terminate` asked of the node holding the store: the
    workflow, the error it is to end with and the attempt it is to end."""

    workflow_id: str
    error: Any
    attempt: int


def ask_terminate(store: Any, workflow_id: str, reason: str) -> TerminateAsked | None:
    """The first half of :func:`terminate`: ``None`` once the workflow has ended (no
    node held the store: ended in it), else the request written for the node that
    holds it. :class:`ToolError` as :func:`terminate` says."""
    from .hosts.workflow import request_transaction, terminate_unless_node, terminated

    check_reason(reason)  # bad arguments: refused before the store is read
    rec = get(store, workflow_id)
    refuse_final(rec, "terminate")
    error = terminated(reason)
    attempt = rec.attempt
    try:
        rec = terminate_unless_node(store, rec, error)
    except NoSuchWorkflow:
        rec = get(store, workflow_id)  # (its ToolError)
    if rec is None:
        return None  # no node holds the store: ended in it
    if rec.attempt != attempt:  # ended and retried since: this terminate ended nothing
        raise ToolError(f"cannot terminate workflow {workflow_id!r}: it was retried "
                        f"before the terminate reached it (it is {rec.status}, attempt "
                        f"{rec.attempt}); nothing was written")
    if str(rec.status) in FINAL:
        _ended_as_asked(rec, attempt)
        return None
    store.write(request_transaction(workflow_id, error, attempt))
    return TerminateAsked(workflow_id, error, attempt)


def ask_terminate_each(store: Any, workflow_ids: Sequence[str], reason: str
                       ) -> list[TerminateAsked | Exception | bool | None]:
    """:func:`ask_terminate` of each of ``workflow_ids``, their writes committed
    together (``store.write_each``: one commit, each workflow's write on its own). In
    their order, each one's answer: while a node holds the store, the request for it
    (:class:`TerminateAsked`), or why it was not asked: the :class:`ToolError`
    :func:`ask_terminate` raises, ``NoSuchWorkflow`` (removed meanwhile), or the
    ``DamagedRecord`` of its row; while none does, True once it is ended in the store
    (its descendants with it), or ``None``: not written, to be asked alone by
    :func:`ask_terminate` (it cannot be ended as read: it changed, ended, or a
    descendant of one ended here is among them; or a node opened the store
    meanwhile). A node that stops meanwhile leaves its requests to
    :func:`terminate_unanswered`, as one terminate's. A failure of the store itself is
    raised, or concerns some workflows' writes only (a PostgreSQL store's: see
    ``write_each``), which were not written: each one's place holds it while a node
    holds the store, else ``None`` (asked alone, as any write of it that failed)."""
    from .hosts.workflow import request_transaction, terminate_transaction, terminated

    check_reason(reason)
    error = terminated(reason)
    outcomes: list[TerminateAsked | Exception | bool | None] = []
    txs: list[Any] = []
    at: list[int] = []
    node = store.node_running()
    for wid in workflow_ids:
        try:
            rec = get(store, wid)
            refuse_final(rec, "terminate")
            tx = (request_transaction(wid, error, rec.attempt) if node else
                  terminate_transaction(store, rec, error))
        except (ToolError, json.JSONDecodeError) as exc:  # (a damaged row: no refusal)
            outcomes.append(exc if node else None)
            continue
        at.append(len(outcomes))
        outcomes.append(TerminateAsked(wid, error, rec.attempt) if node else True)
        txs.append(tx)
    written = store.write_each(txs, unless_node=not node)
    if written is None:  # a node opened the store meanwhile: each asked alone
        return [None] * len(workflow_ids)
    for n, outcome in zip(at, written, strict=True):
        if isinstance(outcome, Exception):
            outcomes[n] = outcome if node else None
    return outcomes


def terminate_ended(store: Any, asked: TerminateAsked) -> bool | None:
    """Whether the node has acted on ``asked``: True once the workflow ended so (or was
    retried since, or removed), ``None`` while it has not; :class:`ToolError` if it
    ended on its own first."""
    now = store.get_workflow(asked.workflow_id)
    if now is None or now.attempt != asked.attempt or str(now.status) in FINAL:
        return now is None or _ended_as_asked(now, asked.attempt)
    return None


def terminate_unanswered(store: Any, asked: TerminateAsked) -> bool:
    """The last look of a terminate the node has not acted on in time: the node that
    was asked may have gone meanwhile (killed), and with none holding the store now the
    workflow is ended here, as when none held it at first. True once it has ended;
    False while a node that holds the store has still not ended it."""
    from .hosts.workflow import terminate_unless_node

    ended = terminate_ended(store, asked)
    if ended is not None:
        return ended
    now = store.get_workflow(asked.workflow_id)
    try:
        now = None if now is None else terminate_unless_node(store, now, asked.error)
    except NoSuchWorkflow:
        return True
    return now is None or (str(now.status) in FINAL and _ended_as_asked(now, asked.attempt))


def check_reason(reason: str) -> None:
    """:class:`ToolError` (code 2) naming ``--reason`` unless ``reason`` can be a
    terminate's reason (``handle.terminate``'s rule: not empty or blank)."""
    from .hosts.workflow import check_reason as rule

    try:
        rule(reason)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"--reason: {exc}", 2) from None


def _ended_as_asked(rec: Any, attempt: int) -> bool:
    """True if the ``attempt`` of the workflow a terminate was asked for has ended
    terminated (this or another terminate), or was retried since (a terminate never
    ends the attempt a retry started); :class:`ToolError` if it ended on its own
    before the terminate reached it."""
    from .hosts.workflow._operate import TERMINATED

    if rec.attempt != attempt or (rec.error is not None and rec.error.type == TERMINATED):
        return True
    raise ToolError(f"cannot terminate workflow {rec.workflow_id!r}: it ended {rec.status} "
                    "before the terminate reached it")


def retry(store: Any, workflow_id: str) -> str:
    """Resume a failed or blocked workflow by replay from its journal (see
    ``garrison.hosts.workflow._operate``); what happens, in words."""
    from .hosts.workflow._operate import key_taken, retry_transaction

    rec = get(store, workflow_id)
    try:
        tx, note = retry_transaction(store, rec)
        store.write(tx)  # (ValueError: the workflow changed since it was read)
    except json.JSONDecodeError:  # a damaged journal record (DamagedRecord): no refusal
        raise
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    except DedupKeyTaken as taken:
        raise ToolError(str(key_taken(workflow_id, taken))) from None
    return note


def retry_each(store: Any, workflow_ids: Sequence[str],
               selected: Mapping[str, int] | None = None) -> list[str | Exception]:
    """:func:`retry` of each of ``workflow_ids``, their writes committed together
    (``store.write_each``: one commit, each workflow's write on its own): in their
    order, each one's note, or why it was not retried: the :class:`ToolError`
    :func:`retry` raises, or the ``DamagedRecord`` of its row or journal (nothing
    written for it). A workflow in ``selected`` (id: the attempt it was selected at)
    that was retried since is refused: it failed again since, and one command retries
    it once. A failure of the store itself is raised, or is the place of each workflow
    whose write it concerns (a PostgreSQL store's: see ``write_each``), which was not
    written."""
    from .hosts.workflow._operate import key_taken, retry_transaction

    outcomes: list[str | Exception] = []
    txs: list[Any] = []
    notes: list[tuple[int, str]] = []
    for wid in workflow_ids:
        try:
            rec = get(store, wid)
            if selected is not None and selected.get(wid, rec.attempt) != rec.attempt:
                raise ToolError(f"cannot retry workflow {wid!r}: it was retried since it "
                                f"was selected (it is {rec.status}, attempt {rec.attempt}): "
                                "nothing was written")
            tx, note = retry_transaction(store, rec)
        except json.JSONDecodeError as exc:  # a damaged row or record: no refusal
            outcomes.append(exc)
        except ValueError as exc:
            outcomes.append(ToolError(str(exc)))
        except ToolError as exc:
            outcomes.append(exc)
        else:
            notes.append((len(outcomes), note))
            outcomes.append(note)
            txs.append(tx)
    for (n, _note), written in zip(notes, store.write_each(txs), strict=True):
        if isinstance(written, DedupKeyTaken):
            outcomes[n] = ToolError(str(key_taken(workflow_ids[n], written)))
        elif isinstance(written, ValueError):  # the workflow changed since it was read
            outcomes[n] = ToolError(str(written))
        elif isinstance(written, Exception):
            outcomes[n] = written
    return outcomes


def prune(store: Any, older_than: float, statuses: Sequence[str] = (), *,
          host: str | None = None, dry_run: bool = False,
          now: float | None = None) -> tuple[int, float]:
    """Delete the ended workflows of ``statuses`` (default: completed, failed and
    cancelled; another status is a :class:`ToolError`, code 2, naming it) of ``host``
    (``None``: every host) that ended more than ``older_than`` seconds before ``now``
    (default: the system's time), as a host's retention does (see
    ``garrison.hosts.workflow._retention``: children of workflows in the store, a
    schedule's last run and the ended parents of children still to be asked are
    kept), beside a running node or none; with ``dry_run``,
    count them and delete nothing. ``(how many, the cutoff in unix seconds)``."""
    from .hosts.workflow._retention import prune as prune_store
    from .persistence._prune import PRUNABLE, check_statuses

    try:
        wanted = check_statuses(statuses or PRUNABLE)
    except ValueError as exc:
        raise ToolError(f"--status: {exc}", 2) from None
    before = (time.time() if now is None else now) - older_than
    if dry_run:
        return store.count_prunable(wanted, before, host=host), before
    # (beside a running node, leave the store to its commits between batches, as its
    # own retention does)
    return prune_store(store, before, wanted, host=host, pause=store.node_running()), before


def journal_pages(store: Any, workflow_id: str) -> Iterator[list[tuple[Any, int]]]:
    """The workflow's journal a page (:data:`JOURNAL_PAGE` records) at a time, in seq
    order, each record with its stored size (the store's ``journal_page``): each page is
    read as it is taken, one key range after the last seq of the one before."""
    after = -1
    while True:
        page = store.journal_page(workflow_id, after, JOURNAL_PAGE)
        if page:
            yield page
        if len(page) < JOURNAL_PAGE:
            return
        after = page[-1][0].seq

def retry_note(rec: Any, journal: list[Any]) -> str | None:
    """The note :func:`retry` gives when the failed workflow ``rec`` (its journal's
    records, in seq order) would replay to the same failure, or ``None``: the console
    shows it beside its Retry button (a retry is not refused: code deployed since may
    handle the recorded error)."""
    from .hosts.workflow._operate import same_failure_note

    return same_failure_note(rec, [(r.seq, r.kind, r.name, r.outcome) for r in journal])


# ------------------------------------------------------------------ schedules
def get_schedule(store: Any, schedule_id: str) -> Any:
    """The schedule's record; :class:`ToolError` when the store has no such schedule
    (code 2 when ``schedule_id`` cannot be a schedule id, as ``node.schedule`` says)."""
    from .hosts.workflow._schedules import held_schedule_id

    try:  # (one an older garrison stored under an id the rule now refuses: found)
        held_schedule_id(schedule_id, lambda sid: store.get_schedule(sid) is not None)
    except ValueError as exc:
        raise ToolError(str(exc), 2) from None
    rec = store.get_schedule(schedule_id)
    if rec is None:
        hint = id_hint(schedule_id, (r.schedule_id for r in store.schedules()))
        raise ToolError(f"no schedule {schedule_id!r} in {store.path}{hint}")
    return rec


def pause_schedule(store: Any, schedule_id: str) -> None:
    """Pause the schedule: its ticks start nothing until it is resumed (a tick waiting
    for the last run to end is dropped)."""
    from .persistence import Transaction

    get_schedule(store, schedule_id)
    store.write(Transaction().update_schedule(schedule_id, paused=True, buffered_tick=None))


def resume_schedule(store: Any, schedule_id: str, now: float | None = None) -> None:
    """Resume the schedule from its first tick after ``now`` (default: the time now); a
    compare-and-set on the schedule as read, read again when an update of its timing
    or another resume committed meanwhile (as ``Scheduler.resume``)."""
    from .hosts.workflow._schedules import resume_transaction

    while True:
        rec = get_schedule(store, schedule_id)
        if not rec.paused:
            return
        if store.write(resume_transaction(rec, time.time() if now is None else now))[0]:
            return


def trigger_schedule(store: Any, schedule_id: str, now: float | None = None) -> str:
    """Start the schedule's workflow now (``<id>@<now>``), paused or not; returns its
    workflow id. The workflow is created ``pending``: the node that owns the store
    starts it (at once, or when its host's queue has room; a stopped node when it
    starts). It becomes the schedule's ``last_workflow`` as ``Scheduler.trigger``
    decides (``trigger_takes_last``: not over an unfinished run, nor over a tick whose
    workflow is not created yet), a compare-and-set on the one read."""
    from .hosts.workflow._queue import tool_start
    from .hosts.workflow._schedules import (
        next_trigger,
        tick_refusal,
        trigger_id,
        trigger_takes_last,
    )
    from .persistence import Transaction

    rec = get_schedule(store, schedule_id)
    refusal = tick_refusal(schedule_id)
    if refusal is not None:  # (its workflow's id would break the id rule)
        raise ToolError(refusal)
    last = rec.last_workflow
    found = None if last is None else store.get_workflow(last)
    takes_last = trigger_takes_last(schedule_id, last, None if found is None else found.status)
    at = time.time() if now is None else now
    while True:  # a new workflow each time, also for two triggers in one millisecond
        wid = trigger_id(schedule_id, at)
        if store.get_workflow(wid) is None:
            run_id = uuid.uuid4().hex  # (to tell this create from a racing one's)
            tx = tool_start(Transaction(), wid, rec.workflow, rec.input, run_id=run_id,
                            host=rec.host)
            if takes_last:
                tx.update_schedule(schedule_id, last_workflow=wid, expect_last_workflow=last)
            store.write(tx)
            created = store.get_workflow(wid)
            if created is not None and created.run_id == run_id:
                return wid
        at = next_trigger(at)  # that id is taken: the next millisecond


def delete_schedule(store: Any, schedule_id: str) -> bool:
    """Remove the schedule (the workflows it started are not touched); True if it was
    declared in a config (a node started with that config creates it again)."""
    from .persistence import Transaction

    rec = get_schedule(store, schedule_id)
    store.write(Transaction().delete_schedule(schedule_id))
    return bool(rec.source == "config")


def schedule_json(rec: Any) -> dict[str, Any]:
    """Every column of a schedule's row, as JSON; a paused schedule's ``next_tick`` is
    ``null``, as in the table (it has none: resuming sets it from then)."""
    return {"schedule_id": rec.schedule_id, "workflow": rec.workflow, "input": rec.input,
            "cron": rec.cron, "every": rec.every, "timezone": rec.timezone,
            "overlap": rec.overlap, "catchup_window": rec.catchup_window,
            "paused": rec.paused, "next_tick": when_json(as_shown(rec).next_tick),
            "last_tick": when_json(rec.last_tick), "last_workflow": rec.last_workflow,
            "buffered_tick": when_json(rec.buffered_tick), "source": rec.source,
            "host": rec.host, "created": when(rec.created), "updated": when(rec.updated)}


# ------------------------------------------------------------------ JSON in
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (NaN and infinity cannot be stored)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a JSON number (it would be infinity)")
    return value


def _whole_number(text: str) -> int:
    digits = len(text) - text.startswith("-")
    limit = sys.get_int_max_str_digits()
    if limit and digits > limit:  # (int() would say: use sys.set_int_max_str_digits())
        raise ValueError(f"a whole number of {digits} digits is too long: at most {limit} "
                         "digits can be read back")
    return int(text)


def _keys_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ValueError(f"the key {key[:40]!r} appears twice in one object")
            seen.add(key)
    return out


def _check_text(value: Any) -> None:
    """``ValueError`` for a string (or key) that is not valid Unicode text: a lone
    surrogate, which JSON can escape but no store can hold."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{item[:40]!r} is not valid text (a lone surrogate "
                                 "character)") from None
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())


def strict_json(text: str | bytes) -> Any:
    """``text`` parsed as JSON that a store can hold: finite numbers (no ``NaN``,
    ``Infinity`` or ``1e400``), valid text, each key once in an object (the last of
    two would win, where another reader may take the first), bytes in UTF-8 (no other
    encoding guessed, no byte-order mark); ``ValueError`` naming what is wrong."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # (UnicodeDecodeError: a ValueError, naming the byte)
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float,
                           parse_int=_whole_number, object_pairs_hook=_keys_once)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    _check_text(value)
    return value


# ------------------------------------------------------------------ JSON out
def finite(value: Any) -> Any:
    """``value`` with NaN and the infinities (which Python's JSON, and so a store, may
    hold) as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``: valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def standard_json(value: Any, **dumps: Any) -> str:
    """``json.dumps(value, **dumps)`` as standard JSON whatever the store holds: a NaN
    or an infinity in it written as :func:`finite` does (``"NaN"``), never as the bare
    ``NaN`` no other JSON reader takes. The console's answers and the command line's
    ``--json`` both."""
    try:
        return json.dumps(value, allow_nan=False, **dumps)
    except ValueError:  # rare: walk it only then
        return json.dumps(finite(value), allow_nan=False, **dumps)


# ------------------------------------------------------------------ JSON forms
def record_json(rec: Any) -> dict[str, Any]:
    """Every column of a workflow's row, as JSON."""
    return {"workflow_id": rec.workflow_id, "name": rec.name, "status": str(rec.status),
            "created": when(rec.created), "updated": when(rec.updated),
            "search": rec.search, "memo": rec.memo,
            "input": rec.input,
            "result": rec.result,
            "error": error_json(rec.error),
            "parent": str(rec.parent) if rec.parent else None,
            "run_id": rec.run_id,
            "attempt": rec.attempt,
            "host": rec.host,
            "cancel_requested": rec.cancel_requested}


def error_json(error: Any, *, traceback: bool = False) -> Any:
    """An ``ErrorInfo`` as ``{"type", "message"}`` (and its ``traceback`` if asked)."""
    if error is None:
        return None
    out = {"type": error.type, "message": error.message}
    if traceback:
        out["traceback"] = error.traceback
    return out


def when(value: Any) -> str:
    """A time as ISO 8601 UTC with milliseconds (``2026-01-02T03:04:05.678Z``)."""
    if isinstance(value, _dt.datetime):
        return value.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return "" if value is None else str(value)


def when_json(value: Any) -> str | None:
    """A time for JSON output: :func:`when`'s text, or ``null`` for no time."""
    return None if value is None else when(value)


def key_value(item: str, option: str = "--search") -> tuple[str, Any]:
    """``KEY=VALUE`` of a search filter: the value is JSON, or else a plain string; JSON
    no search attribute can hold (``NaN``, ``Infinity``, ``1e400``: see
    :func:`strict_json`) is :class:`ToolError` (code 2) naming the filter. The one rule
    of ``garrison workflows list --search`` and the console's ``search=``."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ToolError(f"{option} takes KEY=VALUE, got {item!r}", 2)
    try:
        return key, strict_json(raw)
    except json.JSONDecodeError:
        return key, raw
    except ValueError as exc:
        try:
            json.loads(raw)
        except json.JSONDecodeError:  # not JSON at all ("NaNa"): a plain string
            return key, raw
        except (ValueError, RecursionError):
            pass
        raise ToolError(f"{option.lstrip('-')} {item!r}: {exc}", 2) from None


def search_filters(items: Sequence[str], option: str = "--search") -> dict[str, Any] | None:
    """The search filters ``KEY=VALUE`` (:func:`key_value`) as one mapping, every one
    of which must match; ``None`` when a key is given twice with different values (no
    workflow can match both: the list is empty). The one rule of ``garrison workflows
    list --search`` and the console's ``search=``. More than
    :data:`~.persistence._converter.MAX_SEARCH_FILTERS` keys are refused (code 2)."""
    from .persistence._converter import MAX_SEARCH_FILTERS, check_search_value

    if len(items) > 100 * MAX_SEARCH_FILTERS:  # (before parsing them all)
        raise ToolError(f"too many {option.lstrip('-')} filters ({len(items)}): at most "
                        f"{MAX_SEARCH_FILTERS} keys (each KEY=VALUE must match)", 2)
    out: dict[str, Any] = {}
    contradicts = False
    for item in items:
        key, value = key_value(item, option)
        try:  # (an integer past 64 bits: refused here, not by the store's own check)
            check_search_value(key, value, "search filter")
        except ValueError as exc:
            raise ToolError(str(exc), 2) from None
        if key in out and not _same_json(out[key], value):
            contradicts = True
        out[key] = value
    if len(out) > MAX_SEARCH_FILTERS:  # (keys: a filter repeated is one)
        raise ToolError(f"too many {option.lstrip('-')} filters ({len(out)} keys): at most "
                        f"{MAX_SEARCH_FILTERS} (each KEY=VALUE must match)", 2)
    return None if contradicts else out


def _same_json(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are one filter value: two numbers of one value (``1``, ``1.0``, as
    the stores compare a key's number), or the same JSON text (``true`` is not ``1``;
    ``[1]`` and ``[1.0]`` count as two values)."""
    if type(a) in (int, float) and type(b) in (int, float):
        return bool(a == b)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def json_arg(text: str, what: str, example: str = "'{\"ok\": true}' or '\"text\"'") -> Any:
    """``text`` parsed as strict JSON (:func:`strict_json`, as the console takes it);
    :class:`ToolError` (code 2) with ``example`` otherwise."""
    try:
        return strict_json(text)
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            why = exc.msg if len(text) <= _QUOTED else f"{exc.msg} (at character {exc.pos})"
        else:
            why = str(exc)
        quoted = repr(text) if len(text) <= _QUOTED else \
            f"{text[:_QUOTED]!r}... ({len(text):,} characters)"
        raise ToolError(f"the {what} must be JSON (e.g. {example}): {why} in {quoted}",
                        2) from None


#: the characters of a bad argument an error quotes (a 100 KB payload is not echoed)
_QUOTED = 200
