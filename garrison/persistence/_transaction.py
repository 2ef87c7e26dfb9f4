"""A transaction: the store-neutral list of writes a store commits atomically.

The workflow host describes every write as a :class:`Transaction` of named
operations (:class:`Op`): create a workflow, append a journal record, deliver to an
inbox, consume an inbox row, set a timer, complete a promise... Building one does no
I/O: each method converts its values to JSON text now (a ``PayloadError`` surfaces
at the call that passed the value) and appends ``(op, params)``. A store (SQLite,
PostgreSQL) maps each operation to its own SQL and applies the whole list in one
database transaction; the host never sees SQL.

What each operation returns (one result per operation, in order) and raises is part
of the contract every store implements:

========================  ===============================================================
``CREATE_WORKFLOW``       ``True`` if the row was created, ``False`` if the id existed
``UPDATE_WORKFLOW``       ``None``; ``NoSuchWorkflow`` if the row does not exist
``EXPECT_WORKFLOW``       ``None``; ``ValueError`` (:func:`workflow_changed`) unless the row
                          still has that status and attempt (a compare-and-set: nothing of
                          the transaction is written otherwise)
``SET_ATTRIBUTES``        ``None``; merges (RFC 7396: a key set to ``null`` is removed)
``RESET_RUN``             ``None``; drops the journal and the timers of the workflow
``DELETE_WORKFLOW``       ``None``; removes the workflow and every row it owns
``APPEND_JOURNAL``        ``None``; a second row for one ``(workflow_id, seq)`` fails
``DELIVER``               the inbox row id (arrival order), ``None`` if ``msg_id`` existed
                          (or, ``if_unfinished``, the workflow is not there or has ended)
``DELIVER_TO_MONITORS``   ``[(watcher workflow id, inbox row id), ...]``: the rows put in
                          the inboxes of the unfinished workflows of one host (or any)
                          that the store holds as monitoring the workflow (read in the
                          write: see :meth:`Transaction.deliver_to_monitors`); a watcher
                          whose message id existed is left out
``CONSUME``               ``None``; ``ValueError`` unless the row is pending for that workflow
                          (``if_pending``: no row changed then); at a ``seq`` above 0 the
                          row keeps no payload (nor trace)
``ADD_TIMER``             ``None``; replaces the deadline (and kind) of the same ``seq``
``REMOVE_TIMER``          ``None``
``RECORD_REPLY``          ``None``; no row changed if the message is not in that inbox
``CREATE_PROMISE``        ``None``; no-op if the promise exists
``COMPLETE_PROMISE``      ``None``; ``PromiseAlreadyCompleted`` / ``NoSuchWorkflow``
``SET_STATE``             ``None``
``ADD_MONITOR``           ``None``; idempotent
``REMOVE_MONITOR``        ``None``
``FORGET_MONITORS``       ``None``; removes every monitor of the workflow (its watchers)
``TRUNCATE_JOURNAL``      ``None``; removes the workflow's journal records from ``seq`` on
``ENQUEUE``               the queue row's ``seq`` (start order), or ``None`` when the
                          workflow's stored ``run_id`` is not the given one (its create in
                          this transaction was a no-op: the id existed); an existing row of
                          that workflow is kept (its ``seq`` returned);
                          ``DedupKeyTaken`` if another workflow's row holds ``dedup``
``DEQUEUE``               ``None``; drops the workflow's queue row, if any (the dedup key
                          it held is kept on the workflow's row: ``kept_dedup``)
``ADMIT``                 the ids (in the given order) of the ``pending`` workflows now
                          ``running``: as many as the host's limits across the store
                          allow (see :meth:`Transaction.admit`)
``SLOT_FREED``            ``None``; tells the other nodes of a cluster at commit (a
                          PostgreSQL notification); nothing in SQLite (one node)
``PUT_SCHEDULE``          ``None``; creates the schedule or replaces its spec, ``source``
                          and ``next_tick`` (keeps ``paused``, ``last_*``, ``buffered_tick``,
                          ``created``, and ``next_tick`` too when the stored schedule has
                          the same ``cron``, ``every`` and ``timezone``: read in the write)
``UPDATE_SCHEDULE``       ``True`` if the row was updated: it exists and, when
                          ``expect_next_tick`` is given, it is not paused and its
                          ``next_tick`` is that value, and when ``expect_last_workflow``,
                          ``expect_paused`` or ``expect_timing`` is given, its
                          ``last_workflow``, ``paused`` or ``cron``, ``every`` and
                          ``timezone`` are those values (NULL-safe compares); ``False``
                          otherwise (nothing changed)
``DELETE_SCHEDULE``       ``None``
========================  ===============================================================

Each operation is about one workflow (``workflow_ids``, parallel to ``ops``) or, for
the schedule operations, one schedule (``schedule_ids``; its ``workflow_ids`` entry is
``""``, as for ``ADMIT`` and ``SLOT_FREED``, which are about a workflow host): a
tool's write leaves a wakeup for each, so the node that owns the store picks it up.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import time as _time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..actors._values import ErrorInfo, Pid
from ._converter import RawJson, to_json
from ._records import WorkflowStatus, cancel_flag, parse_status

__all__ = ["Op", "Transaction", "WorkflowEnded", "unix_seconds", "workflow_changed"]

_json_dumps = json.dumps


class Op(enum.StrEnum):
    """The named write operations of a :class:`Transaction` (see the module docs)."""

    CREATE_WORKFLOW = "create_workflow"
    UPDATE_WORKFLOW = "update_workflow"
    EXPECT_WORKFLOW = "expect_workflow"
    EXPECT_UNFINISHED = "expect_unfinished"
    SET_ATTRIBUTES = "set_attributes"
    RESET_RUN = "reset_run"
    DELETE_WORKFLOW = "delete_workflow"
    APPEND_JOURNAL = "append_journal"
    DELIVER = "deliver"
    DELIVER_TO_MONITORS = "deliver_to_monitors"
    CONSUME = "consume"
    ADD_TIMER = "add_timer"
    REMOVE_TIMER = "remove_timer"
    RECORD_REPLY = "record_reply"
    CREATE_PROMISE = "create_promise"
    COMPLETE_PROMISE = "complete_promise"
    SET_STATE = "set_state"
    ADD_MONITOR = "add_monitor"
    REMOVE_MONITOR = "remove_monitor"
    FORGET_MONITORS = "forget_monitors"
    TRUNCATE_JOURNAL = "truncate_journal"
    ENQUEUE = "enqueue"
    DEQUEUE = "dequeue"
    ADMIT = "admit"
    SLOT_FREED = "slot_freed"
    PUT_SCHEDULE = "put_schedule"
    UPDATE_SCHEDULE = "update_schedule"
    DELETE_SCHEDULE = "delete_schedule"


_UNSET: Any = object()


def unix_seconds(value: _dt.datetime | float | None) -> float:
    """A time as unix seconds: ``None`` is now, an aware datetime its timestamp."""
    if type(value) is float:  # the hot path: the workflow clock's reading
        return value
    if value is None:
        return _time.time()
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: durable times must be timezone-aware")
        return value.timestamp()
    return float(value)


def _encode(value: Any, what: str) -> str:
    if isinstance(value, RawJson):
        return value.text
    return to_json(value, what=what)


def _encode_lazily(value: Any, what: Callable[[], str]) -> str:
    """:func:`_encode` on a hot path: ``what`` is only formatted for an error message."""
    if type(value) is RawJson:
        return value.text
    return _encode(value, what())


def _status(value: str) -> str:
    if type(value) is WorkflowStatus:
        return str.__str__(value)  # its value, without the enum machinery (hot path)
    return parse_status(value).value


def _pid_text(pid: Pid | str | None) -> str | None:
    return None if pid is None else str(pid)


def _trace_text(trace: Mapping[str, str] | None) -> str | None:
    """A trace context (W3C ``traceparent`` / ``tracestate`` headers) as JSON text."""
    if not trace:
        return None
    return _json_dumps({str(k): str(v) for k, v in trace.items()}, separators=(",", ":"))


def workflow_changed(workflow_id: str, status: str, attempt: int) -> ValueError:
    """The error of an ``EXPECT_WORKFLOW`` that failed (the same from every store)."""
    return ValueError(f"workflow {workflow_id!r} changed since it was read (it is no longer "
                      f"{status}, attempt {attempt}; another operator acted on it?): nothing "
                      "was written")


class WorkflowEnded(ValueError):
    """The error of an ``EXPECT_UNFINISHED`` that failed: the workflow had ended
    (``status``: completed, failed or cancelled) when the write came; nothing of the
    transaction was written (the same from every store)."""

    def __init__(self, workflow_id: str, status: str) -> None:
        super().__init__(f"workflow {workflow_id!r} has ended (it is {status}): nothing "
                         "was written")
        self.workflow_id = workflow_id
        self.status = status


class Transaction:
    """A list of writes committed atomically by a store's ``write`` / ``commit``.

    Methods return the transaction, so calls chain::

        tx = Transaction().append_journal(wid, 4, "send", "order.paid", outcome)
        tx.deliver(other_wid, "order.paid", payload, sender=me)
        tx.update_workflow(wid, status="waiting")
        results = await store.commit(tx)   # one result per operation, in order

    Operations that refer to a workflow require its row to exist;
    ``update_workflow`` on a missing row raises ``NoSuchWorkflow``.
    """

    __slots__ = ("epoch", "ops", "schedule_ids", "workflow_ids")

    def __init__(self) -> None:
        #: ``(Op, params)`` pairs, applied in order
        self.ops: list[tuple[Op, tuple[Any, ...]]] = []
        #: in a cluster: the node incarnation whose run of a workflow writes this
        #: transaction, which fences it (``None``: the store's current one). A run of
        #: an incarnation whose lease lapsed, still stopping as the node joined again,
        #: writes nothing under the new one (which may have claimed the workflow again)
        self.epoch: int | None = None
        #: the workflow each operation is about (parallel to ``ops``; ``""`` for an
        #: operation on a schedule or on a workflow host's queue): a tuple while it
        #: has one operation (a step's record, the most common transaction), a list
        #: from the second. A tuple of strings is let go by the garbage collector at its
        #: first look, where a list stayed tracked, walked by each collection while its
        #: commit waited (and, with a thousand waiting, by the old generation's)
        self.workflow_ids: list[str] | tuple[str, ...] = ()
        #: the schedules the schedule operations are about, in order (an empty tuple
        #: until the first: most transactions have none, and a list per transaction
        #: is one more object for the garbage collector while the commit waits)
        self.schedule_ids: list[str] | tuple[()] = ()

    def __len__(self) -> int:
        return len(self.ops)

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __repr__(self) -> str:
        return f"<Transaction {[str(op) for op, _ in self.ops]}>"

    def _add(self, workflow_id: str, op: Op, params: tuple[Any, ...]) -> Transaction:
        self.ops.append((op, params))
        ids = self.workflow_ids
        if type(ids) is list:
            ids.append(workflow_id)
        else:
            self.workflow_ids = [*ids, workflow_id] if ids else (workflow_id,)
        return self

    def _add_schedule(self, schedule_id: str, op: Op, params: tuple[Any, ...]) -> Transaction:
        self._add("", op, params)
        if self.schedule_ids:
            self.schedule_ids.append(schedule_id)
        else:
            self.schedule_ids = [schedule_id]
        return self

    def extend(self, other: Transaction) -> Transaction:
        """Append every operation of ``other`` (after this one's)."""
        self.ops.extend(other.ops)
        ids = self.workflow_ids
        if type(ids) is list:
            ids.extend(other.workflow_ids)
        elif other.workflow_ids:
            self.workflow_ids = [*ids, *other.workflow_ids]
        if other.schedule_ids:
            self.schedule_ids = [*self.schedule_ids, *other.schedule_ids]
        return self

    # -- workflows ---------------------------------------------------------

    def create_workflow(
        self,
        workflow_id: str,
        name: str,
        input: Sequence[Any] | RawJson = (),
        *,
        status: str = "pending",
        parent: Pid | str | None = None,
        run_id: str | None = None,
        attempt: int = 1,
        host: str | None = None,
        search: Mapping[str, Any] | None = None,
        memo: Mapping[str, Any] | None = None,
        time: _dt.datetime | float | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Transaction:
        """Insert a workflow row unless ``workflow_id`` exists (result: created or not).

        ``name`` is the workflow function's ``module:qualname``; ``trace`` the trace
        context it was started in (``garrison.tracing``).
        """
        input_json = (
            input.text
            if isinstance(input, RawJson)
            else to_json(list(input), what=f"the arguments of workflow {name!r}")
        )
        search_json = to_json(dict(search), what=f"the search attributes of {workflow_id!r}") \
            if search else "{}"
        memo_json = to_json(dict(memo), what=f"the memo of {workflow_id!r}") if memo else "{}"
        now = unix_seconds(time)
        params = (
            workflow_id, name, _status(status), input_json, _pid_text(parent),
            run_id if run_id is not None else uuid.uuid4().hex, attempt, host, now, now,
            search_json, memo_json, _trace_text(trace),
        )  # fmt: skip
        return self._add(workflow_id, Op.CREATE_WORKFLOW, params)

    def update_workflow(
        self,
        workflow_id: str,
        *,
        status: str | None = None,
        result: Any = _UNSET,
        error: ErrorInfo | None = _UNSET,
        run_id: str | None = None,
        attempt: int | None = None,
        input: Sequence[Any] | RawJson | None = None,
        cancel_requested: bool | None = None,
        host: str | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Set the given columns (and ``updated``). Params: ``(workflow_id, updated,
        ((column, value), ...))`` with JSON columns as text."""
        sets: list[tuple[str, Any]] = []
        if status is not None:
            sets.append(("status", _status(status)))
        if result is not _UNSET:
            sets.append(("result", _encode_lazily(
                result, lambda: f"the result of workflow {workflow_id!r}")))
        if error is not _UNSET:
            sets.append(("error", None if error is None else _encode(error, "a workflow error")))
        if run_id is not None:
            sets.append(("run_id", run_id))
        if attempt is not None:
            sets.append(("attempt", attempt))
        if input is not None:
            sets.append(("input", input.text if isinstance(input, RawJson) else to_json(
                list(input), what=f"the arguments of workflow {workflow_id!r}")))
        if cancel_requested is not None:
            sets.append(("cancel_requested", int(cancel_requested)))
        if host is not None:
            sets.append(("host", host))
        return self._add(workflow_id, Op.UPDATE_WORKFLOW,
                         (workflow_id, unix_seconds(time), tuple(sets)))

    def resume_workflow(self, workflow_id: str, *,
                        time: _dt.datetime | float | None = None) -> Transaction:
        """A node runs the workflow again (resumed ``pending``, ``blocked`` or parked):
        status ``running``, and the error it held cleared (a blocked one's
        ``NonDeterminismError`` is over once code that replays it runs it)."""
        return self.update_workflow(workflow_id, status="running", error=None, time=time)

    def set_attributes(
        self,
        workflow_id: str,
        *,
        search: Mapping[str, Any] | None = None,
        memo: Mapping[str, Any] | None = None,
    ) -> Transaction:
        """Merge into the search attributes / memo (a key set to ``None`` is removed)."""
        search_json = to_json(dict(search or {}), what=f"the search attributes of {workflow_id!r}")
        memo_json = to_json(dict(memo or {}), what=f"the memo of {workflow_id!r}")
        return self._add(workflow_id, Op.SET_ATTRIBUTES,
                         (workflow_id, search_json, memo_json, _time.time()))

    def request_cancel(self, workflow_id: str, *,
                       time: _dt.datetime | float | None = None) -> Transaction:
        """Flag the workflow for cancellation (a tool's way to cancel; the node acts on it),
        asked at ``time`` (default now): the flag holds that time (see
        :func:`cancel_flag`), so that a node resuming the workflow puts the cancel in its
        place among the deadlines and messages that came while no node ran it."""
        at = unix_seconds(time)
        return self._add(workflow_id, Op.UPDATE_WORKFLOW,
                         (workflow_id, at, (("cancel_requested", cancel_flag(at)),)))

    def reset_run(
        self,
        workflow_id: str,
        input: Sequence[Any] | RawJson,
        *,
        run_id: str | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Continue-as-new: drop the journal and timers, set new input and run id,
        status ``running``. Inbox, state, promises and monitors are kept."""
        self._add(workflow_id, Op.RESET_RUN, (workflow_id,))
        return self.update_workflow(
            workflow_id,
            status="running",
            input=input,
            run_id=run_id if run_id is not None else uuid.uuid4().hex,
            result=None,
            error=None,
            time=time,
        )

    def delete_workflow(self, workflow_id: str) -> Transaction:
        """Remove the workflow and every row that belongs to it."""
        return self._add(workflow_id, Op.DELETE_WORKFLOW, (workflow_id,))

    # -- journal -----------------------------------------------------------

    def append_journal(
        self,
        workflow_id: str,
        seq: int,
        kind: str,
        name: str,
        outcome: Any = None,
        *,
        attempts: int = 1,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Record what durable operation ``seq`` did; a second row for the same
        ``(workflow_id, seq)`` fails the transaction."""
        # (no closure for the error message: one would make a cell of every local it
        # names at each call, and every step appends a record)
        if type(outcome) is RawJson:
            text = outcome.text
        else:
            text = _encode(outcome, f"the outcome of {kind} {name!r} (seq {seq} of "
                                    f"{workflow_id!r})")
        params = (workflow_id, seq, str(kind), name, text, attempts, unix_seconds(time))
        return self._add(workflow_id, Op.APPEND_JOURNAL, params)

    def append_journal_text(self, workflow_id: str, seq: int, kind: str, name: str,
                            text: str, attempts: int, time: float) -> Transaction:
        """:meth:`append_journal` of an outcome already JSON text, at a time already unix
        seconds: a workflow's own record of a step (its hot path: nothing to encode or
        convert, and no call more)."""
        self.ops.append((Op.APPEND_JOURNAL, (workflow_id, seq, str(kind), name, text,
                                             attempts, time)))
        ids = self.workflow_ids  # (_add's, without its call)
        if type(ids) is list:
            ids.append(workflow_id)
        else:
            self.workflow_ids = [*ids, workflow_id] if ids else (workflow_id,)
        return self

    def expect_workflow(self, workflow_id: str, *, status: str, attempt: int,
                        unclaimed: bool | str = False) -> Transaction:
        """Write this transaction only if the workflow still has ``status`` and
        ``attempt`` (what a tool read before it decided: ``retry``); else nothing of it
        is written and the commit raises :func:`workflow_changed`'s ``ValueError``.
        With ``unclaimed``, also only if no other live node of a cluster owns it
        (PostgreSQL: it has no owner, its owner's node is not live, or the owner is the
        node writing; the row is locked, so a claim of it at the same moment either
        commits first, and this fails, or waits and finds it changed);
        ``unclaimed="by_any"``: owned by no live node, the writing one included (a
        write from a worker thread, which cannot know whether its own node claimed
        the workflow meanwhile). A SQLite store has no owners. Params:
        ``(workflow_id, status, attempt, unclaimed)``."""
        if unclaimed not in (False, True, "by_any"):
            raise ValueError(f"unclaimed= takes a bool or 'by_any', got {unclaimed!r}")
        return self._add(workflow_id, Op.EXPECT_WORKFLOW,
                         (workflow_id, _status(status), int(attempt), unclaimed))

    def expect_unfinished(self, workflow_id: str) -> Transaction:
        """Write this transaction only if the workflow has not ended (not completed,
        failed or cancelled) when it commits: else nothing of it is written and the
        commit raises :class:`WorkflowEnded` (``NoSuchWorkflow`` if there is no such
        workflow). The look and the write are one step (SQLite: the write lock is held;
        PostgreSQL: the row is locked until the transaction ends, so the write that
        ends the workflow either commits first, and this finds it ended, or waits):
        a tool's signal or promise for a workflow that ends at the same moment is
        either written while it runs, or refused, never kept unread in a finished
        workflow. Params: ``(workflow_id,)``."""
        return self._add(workflow_id, Op.EXPECT_UNFINISHED, (workflow_id,))

    def truncate_journal(self, workflow_id: str, from_seq: int) -> Transaction:
        """Remove the journal records at ``from_seq`` and after (``retry`` takes back the
        failing step of a failed workflow so that it runs again). Params:
        ``(workflow_id, from_seq)``."""
        return self._add(workflow_id, Op.TRUNCATE_JOURNAL, (workflow_id, int(from_seq)))

    # -- inbox -------------------------------------------------------------

    def deliver(
        self,
        workflow_id: str,
        topic: str,
        payload: Any = None,
        *,
        msg_id: str | None = None,
        sender: Pid | str | None = None,
        kind: str = "message",
        call_ref: str | None = None,
        time: _dt.datetime | float | None = None,
        trace: Mapping[str, str] | None = None,
        if_unfinished: bool = False,
    ) -> Transaction:
        """Put a message (``kind="message"``) or event (``kind="event"``) in the
        workflow's durable inbox (result: the row id, or ``None`` if a message with
        this ``msg_id`` was already delivered). ``trace``: the message's trace context.
        ``kind="control"`` is a request to the host that runs the workflow (a tool's
        ``terminate``), never handed to its code. ``if_unfinished``: written only if
        the store holds the workflow and it has not ended (read in the write; else
        nothing is written and the result is ``None``), where a row for a workflow
        that is gone would fail the whole transaction."""
        if kind not in ("message", "event", "control"):
            raise ValueError(f"invalid inbox kind {kind!r}: expected 'message', 'event' "
                             "or 'control'")
        params: tuple[Any, ...] = (
            workflow_id,
            msg_id if msg_id is not None else uuid.uuid4().hex,
            topic,
            _encode_lazily(payload, lambda: f"the payload of {kind} {topic!r} to workflow "
                                            f"{workflow_id!r}"),
            _pid_text(sender),
            kind,
            call_ref,
            unix_seconds(time),
            _trace_text(trace),
        )
        if if_unfinished:  # (a tenth parameter: the stores' guarded statement)
            params = (*params, True)
        return self._add(workflow_id, Op.DELIVER, params)

    def deliver_to_monitors(
        self,
        workflow_id: str,
        topic: str,
        payload: Any = None,
        *,
        host: str | None,
        msg_id_prefix: str,
        sender: Pid | str | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Put an event in the inbox of every workflow of ``host`` that may run again
        (unfinished, or ``failed``: a retry reads it; not completed or cancelled) that the
        store holds as monitoring ``workflow_id`` (an ``add_monitor`` of a ``host/id``
        watcher; ``host=None``: of any host), with message id ``msg_id_prefix`` + the
        watcher's id; a watcher whose message id exists gets nothing more (result:
        ``(watcher id, row id)`` of each row put).

        The monitors are read by the write itself, so nothing committed before the
        write is missed: an ending workflow delivers its ``EXIT`` without a read of its
        own. A monitor committed after it, while the end's transaction (whose
        ``update_workflow`` of the row comes first) is still open, is the maker's to
        answer: its ``get_workflow_settled`` is ``Busy`` until that transaction has
        committed, and then finds the workflow ended. The watchers' nodes are woken as
        by ``deliver`` (but a failed watcher's: nothing runs it until a retry).

        Example, a workflow's end::

            tx.update_workflow(wid, status="completed", result=value)
            tx.deliver_to_monitors(wid, "EXIT", exit_event, host="workflows",
                                   msg_id_prefix=f"{wid}#exit@", sender=pid)
        """
        params = (
            workflow_id,
            "" if host is None else host + "/",
            msg_id_prefix,
            topic,
            _encode_lazily(payload, lambda: f"the payload of event {topic!r} to the "
                                            f"monitors of workflow {workflow_id!r}"),
            _pid_text(sender),
            unix_seconds(time),
        )
        return self._add(workflow_id, Op.DELIVER_TO_MONITORS, params)

    def consume(self, workflow_id: str, inbox_id: int, seq: int, *,
                if_pending: bool = False) -> Transaction:
        """Mark inbox row ``inbox_id`` as taken by the receive at journal ``seq``.

        At a ``seq`` above 0 (a receive, whose journal record holds the message) the
        store drops the row's payload and trace (``InboxRecord.payload`` is then
        ``None``): the row stays for its id, which makes the same message delivered
        again a duplicate (a sender's replay, a call made again), and for the reply
        kept on it, while what a long-lived workflow received does not pile up in its
        inbox (its journal's copy goes at ``continue_as_new``). ``seq`` 0 (a request
        discarded, taken by the workflow's end) keeps it. ``if_pending``: a row consumed
        already (by another writer meanwhile: a request that asks nothing more, which a
        node discards as a retry drops it) is left as it is, not an error."""
        if if_pending:
            return self._add(workflow_id, Op.CONSUME, (seq, inbox_id, workflow_id, True))
        return self._add(workflow_id, Op.CONSUME, (seq, inbox_id, workflow_id))

    # -- timers ------------------------------------------------------------

    def add_timer(self, workflow_id: str, seq: int, deadline: _dt.datetime | float,
                  kind: str | None = None) -> Transaction:
        """A durable timer for operation ``seq``; ``deadline`` is wall clock (aware or
        unix seconds); ``kind`` the operation that waits on it (``"sleep"`` or
        ``"receive"``; ``None``: not said, either may take it on replay). Re-adding the
        same ``seq`` replaces the deadline and the kind."""
        return self._add(workflow_id, Op.ADD_TIMER,
                         (workflow_id, seq, unix_seconds(deadline),
                          None if kind is None else str(kind)))

    def remove_timer(self, workflow_id: str, seq: int) -> Transaction:
        """Drop the timer of operation ``seq`` (it fired or was cancelled)."""
        return self._add(workflow_id, Op.REMOVE_TIMER, (workflow_id, seq))

    def record_reply(self, workflow_id: str, msg_id: str, value_json: str) -> Transaction:
        """Keep the reply ``value_json`` (JSON text) that workflow ``workflow_id`` gave to
        the call request ``msg_id`` of its inbox, on that row
        (:attr:`InboxRecord.reply`): the caller, a workflow that crashed before it
        recorded the reply, finds it there (``Store.inbox_message``)."""
        return self._add(workflow_id, Op.RECORD_REPLY, (value_json, msg_id, workflow_id))

    # -- promises ----------------------------------------------------------

    def create_promise(
        self, workflow_id: str, name: str, *, time: _dt.datetime | float | None = None
    ) -> Transaction:
        """Declare a pending promise; no-op if it exists (it may be resolved already)."""
        return self._add(workflow_id, Op.CREATE_PROMISE, (workflow_id, name, unix_seconds(time)))

    def resolve_promise(
        self,
        workflow_id: str,
        name: str,
        value: Any = None,
        *,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Resolve the promise (creating it if the workflow has not declared it yet).

        At commit: ``garrison.PromiseAlreadyCompleted`` if it was resolved or
        rejected before, ``NoSuchWorkflow`` if the workflow does not exist."""
        text = _encode(value, f"the value of promise {name!r} of workflow {workflow_id!r}")
        return self._add(workflow_id, Op.COMPLETE_PROMISE,
                         (workflow_id, name, "resolved", text, None, unix_seconds(time)))

    def reject_promise(
        self,
        workflow_id: str,
        name: str,
        message: str,
        *,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Reject the promise with ``message``; same rules as :meth:`resolve_promise`."""
        return self._add(workflow_id, Op.COMPLETE_PROMISE,
                         (workflow_id, name, "rejected", None, str(message), unix_seconds(time)))

    # -- state and monitors -----------------------------------------------

    def set_state(
        self, workflow_id: str, key: str, value: Any, *, time: _dt.datetime | float | None = None
    ) -> Transaction:
        """Set a workflow's state ``key`` (readable from outside with ``get_state``)."""
        params = (
            workflow_id,
            key,
            _encode_lazily(value, lambda: f"state {key!r} of workflow {workflow_id!r}"),
            unix_seconds(time),
        )
        return self._add(workflow_id, Op.SET_STATE, params)

    def add_monitor(self, workflow_id: str, watcher: Pid | str) -> Transaction:
        """``watcher`` gets the workflow's ``EXIT`` durably; idempotent."""
        return self._add(workflow_id, Op.ADD_MONITOR, (workflow_id, str(watcher), _time.time()))

    def remove_monitor(self, workflow_id: str, watcher: Pid | str) -> Transaction:
        """Stop ``watcher`` watching the workflow."""
        return self._add(workflow_id, Op.REMOVE_MONITOR, (workflow_id, str(watcher)))

    def forget_monitors(self, workflow_id: str) -> Transaction:
        """Stop every watcher watching the workflow (those it has as a watcher are
        kept): a retry of a failed workflow, whose failure told them all."""
        return self._add(workflow_id, Op.FORGET_MONITORS, (workflow_id,))

    # -- the queue of a workflow host --------------------------------------

    def enqueue(
        self,
        workflow_id: str,
        run_id: str,
        *,
        priority: int = 0,
        dedup: str | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Put the workflow in its host's queue (result: the row's ``seq``, the start
        order), if its stored ``run_id`` is ``run_id`` (so a ``create_workflow`` of an id
        that existed, earlier in this transaction, enqueues nothing: result ``None``).

        At commit: ``garrison.DedupKeyTaken`` (naming the holder) if the queue row of
        another workflow holds ``dedup``; nothing of the transaction is then written."""
        return self._add(workflow_id, Op.ENQUEUE,
                         (workflow_id, run_id, int(priority), dedup, unix_seconds(time)))

    def dequeue(self, workflow_id: str) -> Transaction:
        """Drop the workflow's queue row (it ended): its dedup key is free again. The
        store keeps the key on the workflow's row (``kept_dedup``): a retry takes it
        back."""
        return self._add(workflow_id, Op.DEQUEUE, (workflow_id,))

    def admit(
        self,
        host: str,
        workflows: Sequence[tuple[str, str]],
        *,
        max_running: int | None = None,
        rate: tuple[int, float] | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Start the ``pending`` workflows ``workflows`` (``(workflow id, run id)`` pairs,
        in queue order) of ``host`` as far as its limits across the whole store allow;
        result: the ids admitted (now ``running``, their ``admitted`` time ``time``).

        ``max_running``: at most this many of the host's workflows running or parked
        (``running``, ``waiting``, ``sleeping``) at once, these included; ``rate``:
        ``(count, period)``, at most ``count`` admitted in any ``period`` seconds (by
        their ``admitted`` times, which the store keeps; a workflow admitted again, a
        retry, whose earlier admission is inside the period keeps that time: it is one
        admission of the workflow, counted once, and the period does not forget it;
        admitted after it left the period, it is a new admission, at ``time``; either
        way it is admitted only as the rate has room, its earlier admission counted
        while inside the period, as a new start is; a kept one's admission adds none to
        the period, so ``workflows`` are admitted as they would be one at a time: a new
        start after it uses the room it left). The count and the admission
        are one step: PostgreSQL holds a lock of the host for the rest of the
        transaction, so two nodes admitting at once never exceed the limits; in a
        cluster only workflows this node owns are admitted (the lease is checked
        too). A pair whose workflow is not ``pending`` with that run id is passed over.
        PostgreSQL keeps the host's queue order across the nodes too: it stops at the
        first pair whose queue row does not come before (priority, then start order)
        every ``pending`` workflow of the host not among them that waits to be admitted
        elsewhere (another live node's, unless that node is at its ``max_concurrent``;
        or one no live node owns that a node with room would claim), leaving the slot
        to it.
        (SQLite: the one node has all of them in its queue.)
        """
        entries = _json_dumps([[str(wid), str(run)] for wid, run in workflows])
        count, period = rate if rate is not None else (None, None)
        return self._add("", Op.ADMIT, (
            host, entries, None if max_running is None else int(max_running),
            None if count is None else int(count), None if period is None else float(period),
            unix_seconds(time)))

    def slot_freed(self, host: str) -> Transaction:
        """A workflow of ``host`` stopped holding a slot (it ended or is blocked): at
        commit the other nodes of a cluster hear of it, so one of them admits what
        waits for ``cluster_max_concurrent`` at once (PostgreSQL; SQLite: nothing)."""
        return self._add("", Op.SLOT_FREED, (host,))

    # -- schedules ---------------------------------------------------------

    def put_schedule(
        self,
        schedule_id: str,
        *,
        host: str,
        workflow: str,
        input: Sequence[Any] | RawJson = (),
        cron: str | None = None,
        every: float | None = None,
        timezone: str = "UTC",
        overlap: str = "skip",
        catchup_window: float,
        next_tick: _dt.datetime | float | None,
        source: str = "api",
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Create the schedule, or replace its spec (workflow, input, timing, overlap,
        catch-up window), ``source`` and ``next_tick``; an existing schedule keeps
        ``paused``, ``last_tick``, ``last_workflow``, ``buffered_tick`` and ``created``,
        and its ``next_tick`` when its timing (``cron``, ``every``, ``timezone``) is the
        same. That is decided on the row as the write finds it, so an update read
        before a tick was recorded never writes back the next tick it read (the tick
        would be acted on again). A config schedule (``source="config"``) is replaced
        only by a put of the config's: another (``node.schedule``'s) writes nothing
        over it, decided on the row as the write finds it too (result: whether the
        schedule was written)."""
        input_json = (
            input.text
            if isinstance(input, RawJson)
            else to_json(list(input), what=f"the input of schedule {schedule_id!r}")
        )
        now = unix_seconds(time)
        params = (
            schedule_id, host, workflow, input_json, cron,
            None if every is None else float(every), timezone, overlap, float(catchup_window),
            None if next_tick is None else unix_seconds(next_tick), source, now, now,
        )  # fmt: skip
        return self._add_schedule(schedule_id, Op.PUT_SCHEDULE, params)

    def update_schedule(
        self,
        schedule_id: str,
        *,
        paused: bool | None = None,
        next_tick: _dt.datetime | float | None = _UNSET,
        last_tick: _dt.datetime | float | None = _UNSET,
        last_workflow: str | None = _UNSET,
        buffered_tick: _dt.datetime | float | None = _UNSET,
        expect_next_tick: _dt.datetime | float | None = _UNSET,
        expect_last_workflow: str | None = _UNSET,
        expect_paused: bool | None = None,
        expect_timing: tuple[str | None, float | None, str] | None = None,
        time: _dt.datetime | float | None = None,
    ) -> Transaction:
        """Set the given columns of a schedule (and ``updated``); result ``True`` if it was
        updated. With ``expect_next_tick`` only if it is not paused and its
        ``next_tick`` is still that (a compare-and-set: of two nodes acting on one tick,
        one wins; a tick read before a pause committed starts nothing); with
        ``expect_last_workflow`` only if its ``last_workflow`` is still that; with
        ``expect_paused`` only if it is (or is not) paused; with ``expect_timing``, its
        ``(cron, every, timezone)`` as read, only if its timing is still that (a next
        tick computed from a timing an update changed since is not written). Params:
        ``(schedule_id, updated, ((column, value), ...), ((column, expected), ...))``,
        the expected columns ``next_tick``, ``last_workflow``, ``paused``, ``cron``,
        ``every`` and ``timezone``."""
        sets: list[tuple[str, Any]] = []
        if paused is not None:
            sets.append(("paused", int(paused)))
        for column, value in (("next_tick", next_tick), ("last_tick", last_tick),
                              ("buffered_tick", buffered_tick)):
            if value is not _UNSET:
                sets.append((column, None if value is None else unix_seconds(value)))
        if last_workflow is not _UNSET:
            sets.append(("last_workflow", last_workflow))
        expect: list[tuple[str, Any]] = []
        if expect_next_tick is not _UNSET:
            expect.append(("next_tick", None if expect_next_tick is None
                           else unix_seconds(expect_next_tick)))
        if expect_last_workflow is not _UNSET:
            expect.append(("last_workflow", expect_last_workflow))
        if expect_paused is not None:
            expect.append(("paused", int(expect_paused)))
        if expect_timing is not None:
            cron, every, timezone = expect_timing
            expect.extend((("cron", cron), ("every", None if every is None else float(every)),
                           ("timezone", timezone)))
        return self._add_schedule(schedule_id, Op.UPDATE_SCHEDULE,
                                  (schedule_id, unix_seconds(time), tuple(sets),
                                   tuple(expect)))

    def delete_schedule(self, schedule_id: str) -> Transaction:
        """Remove the schedule (the workflows it started are not touched)."""
        return self._add_schedule(schedule_id, Op.DELETE_SCHEDULE, (schedule_id,))


class OperatorTransaction(Transaction):
    """An operator's act on a workflow (``retry``), guarded by ``expect_workflow``
    rather than by who runs the workflow: any node of a cluster writes it, whoever
    owns the workflow or if no node does (a PostgreSQL store does not fence it, and
    wakes the nodes as a tool's write does, so that its owner, or any node if it has
    none, runs what it asks)."""

    __slots__ = ()
