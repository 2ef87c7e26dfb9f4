"""The store protocol: what a durable store must do for the workflow host.

A store keeps workflows, their journals, durable inboxes, timers, promises, state,
search attributes, monitors, schedules and the queue rows of workflow hosts with
limits. The workflow host talks to it only through the named
operations below (and through :class:`~garrison.persistence.Transaction`, whose
operations every store maps to its own SQL); it never sees SQL or a connection.
:class:`~garrison.persistence.SQLiteStore` is the default implementation.

Every write is atomic: all the operations of a transaction commit together or none
does. A store opened by a tool (``owner`` false) reads freely, and its writes are
picked up by the node that owns the store through :meth:`Store.wakeups`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from .._errors import StoreError
from ..actors._values import Pid
from ._records import (
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
    StoreStatistics,
    TimerRecord,
    WakeupRecord,
    WorkflowRecord,
)
from ._transaction import Transaction

__all__ = ["Store"]


class Store(Protocol):
    """What the workflow host needs from a durable store.

    Writes: :meth:`write` commits now in the calling thread (cheap, local stores only);
    ``await`` :meth:`commit` shares one database transaction with every other commit
    waiting at that moment (group commit) and is what the host uses on its hot path.
    Reads return the records of ``garrison.persistence``.
    """

    #: where the store is, for messages (a file path, a server URL); ``None`` in memory
    path: str | None
    #: ``"normal"`` (survives a killed process) or ``"full"`` (survives power loss)
    synchronous: str
    #: the most bytes of JSON text one stored value may have (an activity's result): the
    #: store's limit for one string, less room for the rest of its row
    value_limit: int

    @property
    def owner(self) -> bool:
        """True for the node that runs the store's workflows; False for a tool (or a
        client) whose writes the owner picks up through :meth:`wakeups`."""
        ...

    @property
    def committing(self) -> bool:
        """True while a group commit is forming or being written."""
        ...

    def node_running(self) -> bool:
        """Whether a node runs this store's workflows now (its lock is held): a tool
        then asks it rather than act in its place. Unknown counts as running."""
        ...

    # -- writing -------------------------------------------------------------------
    def write(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` now, in the calling thread; returns each operation's result."""
        ...

    def write_each(self, txs: Sequence[Transaction], *, unless_node: bool = False
                   ) -> list[list[Any] | Exception] | None:
        """Commit each of ``txs`` on its own, all of them in one database transaction (one
        commit: a tool's writes of many workflows, a bulk ``retry``): one whose operations
        fail (a workflow changed since it was read, a dedup key taken) is rolled back
        alone, and its place in the answer holds the error :meth:`write` would raise for
        it; every other place holds its transaction's results, committed. A place that
        holds an error was not committed; the others' commits stand.

        A failure of the store itself is either:

        - raised, as :meth:`write` raises it, and then none of ``txs`` may be taken as
          committed, nor as not committed: SQLite (busy past its timeout, a full disk,
          a damaged file) commits none of them; PostgreSQL raises once it gives up
          before any committed (unreachable past ``retry_for``), or when it cannot read
          back the results of a commit whose answer was lost with its connection
          (they committed);
        - or, on PostgreSQL, the :class:`~garrison.StoreError` in the place of each
          transaction it concerns: a transaction the server refused for now (a lock
          wait, a deadlock, a read-only server) past ``retry_for``, or whose new try,
          after the others committed, failed; the one database transaction refused
          whole (its ``BEGIN``, the writer's mark or its ``COMMIT``) puts its error in
          every place (none committed).

        So a caller says what each place holds, and takes a raised error as the
        outcome of every transaction unknown. ``unless_node``: only while no node runs
        the store, as :meth:`write_unless_node` (``None``, nothing written, when one
        does); else never ``None``."""
        ...

    def write_unless_node(self, tx: Transaction) -> bool:
        """A tool's write that only stands while no node runs the store: commit ``tx``
        now unless a node runs it (False, nothing written; unknown counts as running).
        On SQLite the tool holds the node's lock while it commits, so no node opens the
        store and reads it before the commit is done (it would act on what it read)."""
        ...

    async def commit(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` with every other write waiting at that moment (group commit);
        returns each operation's result once it is committed. A cancellation does not
        interrupt it: once called it commits (or fails) and returns, and a cancellation
        that came meanwhile reaches the caller at its next checkpoint (a workflow's end
        is recorded this way as the node closes)."""
        ...

    def translate_error(self, exc: BaseException) -> StoreError | None:
        """The :class:`~garrison.StoreError` a failed write means (the store is unusable:
        disk full, file damaged or gone, server unreachable), naming the store; ``None``
        when the error belongs to the written operations themselves (a promise completed
        twice, a duplicate journal seq). Transient failures never reach here: ``commit``
        retries them."""
        ...

    def answers(self) -> bool:
        """Whether the store answers a read now: one look for a workflow by its id (the
        empty id, which none has), tried once, without the reconnects (PostgreSQL's
        ``retry_for``) or the wait for a lock (SQLite's busy timeout) the other reads
        make; a connection made again for it waits a few seconds at most. A read that
        failed while the store answers failed for what it read (a damaged page of one
        workflow's rows), not for the store. Any other error than the store's is
        raised."""
        ...

    async def wakeups(self) -> list[WakeupRecord]:
        """Wait until tools wrote something for this store's workflows (messages,
        promise resolutions, cancel requests, starts), then take and return those
        notices, oldest first. Cancel the caller to stop waiting."""
        ...

    def take_wakeups(self) -> list[WakeupRecord]:
        """Take the notices written so far without waiting (possibly none)."""
        ...

    # -- workflows -----------------------------------------------------------------
    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow's row, or ``None``."""
        ...

    def get_workflow_settled(self, workflow_id: str) -> WorkflowRecord | None:
        """:meth:`get_workflow` if no transaction that updates the row is in flight;
        else :class:`Busy` at once (ask again later). A node that has just committed a
        monitor of a workflow another node runs asks with it whether that workflow has
        ended: an end whose write read the store's monitors before the monitor was
        committed (``Transaction.deliver_to_monitors``) is in flight until it commits."""
        ...

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
        """Workflows filtered by status(es), search attributes, parent and the start of
        their id (``id_prefix``), in ``(created, workflow_id)`` order: oldest first, or
        newest first with ``newest_first``; at most ``limit`` of them (an int of at least
        0, or ``None``: all; else ``TypeError``/``ValueError`` naming it).

        Keyset paging (the web console's): ``after=(created, workflow_id)``, taken from
        the last record of the previous page, returns only the records after it in that
        order. A store keeps an index on ``(created, workflow_id)`` so that every page
        is one range scan (never ``OFFSET``), and compares the cursor with the exact
        stored ``created`` of workflow ``workflow_id`` (a record's datetime is rounded
        to microseconds); the cursor's ``created`` (aware datetime or unix seconds) is
        used only when that workflow no longer exists."""
        ...

    def count_workflows(self, status: str | Iterable[str] | None = None, *,
                        parent: Pid | str | None = None, host: str | None = None) -> int:
        """How many workflows :meth:`list_workflows` would return for that status (one
        or several), ``parent`` and ``host`` (the workflow host named in the row): one
        count over an index, no row read (the console's and ``garrison workflows show``'s
        count of a workflow's children, beside the first ones they list)."""
        ...

    def unfinished_children(self, parents: Sequence[Pid | str],
                            damaged: list[DamagedRecord] | None = None
                            ) -> list[WorkflowRecord]:
        """The workflows not completed, failed or cancelled whose parent is one of
        ``parents`` (pids), in ``(created, workflow_id)`` order: one read for a few
        hundred parents, not one per parent (a node cancelling or terminating a tree of
        thousands in a cluster asks the store for the children of each of its
        workflows). A damaged row (:class:`DamagedRecord`) is raised; with ``damaged``,
        it is added there instead (its ``parent`` set) and the others are read."""
        ...

    def children_of_ended(self, host: str, damaged: list[DamagedRecord] | None = None
                          ) -> list[WorkflowRecord]:
        """The workflows not completed, failed or cancelled whose parent is a workflow
        of ``host`` (a pid ``host/<id>``) that this store holds as ``cancelled`` or
        ``failed``, in ``(created, workflow_id)`` order: what a node's start, and a
        node of a cluster that another was lost to, look at for children left running
        under an ended parent (an ask of them the store failed, then the node stopped).
        Not a child of a ``cancelled`` parent whose cancel is flagged already (asked
        before: nothing to ask). A damaged row is raised, or with ``damaged`` added
        there (its ``parent`` set) and the others read. :meth:`prune_ended` keeps a
        parent while a child of it is listed here."""
        ...

    def workflows_by_id(self, workflow_ids: Sequence[str],
                        damaged: list[DamagedRecord] | None = None
                        ) -> dict[str, WorkflowRecord]:
        """The rows of ``workflow_ids`` (``get_workflow`` of each; one without a row
        left out), in one read for a few hundred of them. A damaged row is raised, or
        with ``damaged`` added there and the others read."""
        ...

    def unfinished_workflows(self, damaged: list[DamagedRecord] | None = None
                             ) -> list[WorkflowRecord]:
        """Every workflow not completed, failed or cancelled (for recovery). With
        ``damaged``, a damaged row (:class:`DamagedRecord`) is added to it and the
        others read, not raised."""
        ...

    def list_past_damage(self, statuses: Any, search: Any, damaged: list[DamagedRecord],
                         most: int | None = None, *, past_unreadable: bool = False,
                         **select: Any) -> list[WorkflowRecord]:
        """``list_workflows`` read past damaged rows, each added to ``damaged``; one
        whose own id is not UTF-8 text ends the read (``past_unreadable``: the read
        goes on after its instant of creation)."""
        ...

    def pages_past_damage(self, statuses: Any, search: Any, damaged: list[DamagedRecord],
                          most: int | None = None, *, past_unreadable: bool = False,
                          **select: Any) -> Iterator[list[WorkflowRecord]]:
        """:meth:`list_past_damage`'s rows a page at a time, each read as it is taken."""
        ...

    # -- retention -----------------------------------------------------------------
    def prune_ended(self, status: str, before: float, *, host: str | None = None,
                    after: tuple[float, str] | None = None, limit: int = 500
                    ) -> list[tuple[float, str]]:
        """Delete, in one transaction (on SQLite several when their journals are long,
        each deciding its own: see ``PRUNE_TX_RECORDS``; an error in one leaves what the
        ones before it deleted deleted), up to ``limit`` workflows of ``status``
        (completed, failed or cancelled; else ``ValueError``) that ended (``updated``)
        before ``before`` (unix seconds), of workflow host ``host`` (``None``: any),
        after the key ``(updated, workflow_id)`` ``after`` in that order, with every row
        they own (journal, inbox, timers, promises, state, the monitors they are and
        hold, queue row, wakeups). What is deleted is decided in the transaction that
        deletes it, so a write that makes one unfinished meanwhile (a retry) commits
        first (it is kept) or finds it gone. Kept too: a workflow whose parent workflow
        is in the store (its parent's replay reads how it ended; it goes once the parent
        is gone), a ``failed`` or ``cancelled`` workflow of a child that
        :meth:`children_of_ended` lists (a start reads those children by their parent:
        pruned first, it would ask them never; it goes once they ended), and
        the last run of a schedule (``last_workflow``: a tick whose workflow does not
        exist looks interrupted, and would start again). Returns the ``(updated,
        workflow_id)`` deleted, in that order (fewer than ``limit``: none is left after
        the last). Several callers at once (the nodes of a cluster) delete each
        workflow once. A blocking call: the node runs it in a worker thread, beside its
        own writes."""
        ...

    def count_prunable(self, statuses: Iterable[str], before: float, *,
                       host: str | None = None) -> int:
        """How many workflows :meth:`prune_ended` would delete now for ``statuses``,
        ``before`` and ``host``, repeated until it deletes none (children whose parent
        it deletes included): ``garrison workflows prune --dry-run``."""
        ...

    # -- journal -------------------------------------------------------------------
    def journal(self, workflow_id: str, *, kind: str | None = None,
                last: int | None = None) -> list[JournalRecord]:
        """The workflow's journal, ordered by seq; ``kind``: its records of that kind
        alone; ``last``: its newest ``last`` records alone (``ValueError`` unless a
        whole number >= 0)."""
        ...

    def journal_heads(self, workflow_id: str, head: int, after: int, limit: int, *,
                      newest: bool = False) -> list[JournalHead]:
        """At most ``limit`` records of the workflow's journal with a seq above
        ``after`` (the first ones, or with ``newest`` the newest ones), in seq order,
        each a :class:`JournalHead`: its outcome's stored JSON text whole when it has
        at most ``head`` characters, else only its first ``head``, never decoded, with
        the whole text's size (``ValueError`` naming a bad argument: whole numbers,
        ``head`` and ``limit`` >= 0, ``after`` >= -1). What the web console reads of a
        journal of big outcomes: the start of each, not megabytes to decode at each
        poll."""
        ...

    def journal_page(self, workflow_id: str, after: int, limit: int
                     ) -> list[tuple[JournalRecord, int]]:
        """At most ``limit`` records (a whole number >= 1) of the workflow's journal
        with a seq above ``after`` (a whole number >= -1: -1 reads from seq 0, a
        continued run's starting state), in seq order, each with the characters of its
        outcome's stored JSON text (what :meth:`journal_sizes` says of it); else
        ``ValueError`` naming the argument. One key range of the journal's index: what
        reads a long journal a page at a time, the next page after the last seq of this
        one (``garrison workflows history`` and ``export``, which hold a page, not the
        journal)."""
        ...

    def journal_entries(self, workflow_id: str) -> tuple[list[tuple[int, str, str, Any, int]], int]:
        """Recovery's fast path: ``([(seq, kind, name, outcome, attempts), ...], bytes)``
        in seq order, outcomes decoded, and the size of their JSON text."""
        ...

    def journal_sizes(self, workflow_id: str) -> dict[int, int]:
        """``{seq: characters of its outcome JSON}`` of the workflow's journal."""
        ...

    # -- inbox, timers, promises, state, monitors ----------------------------------
    def pending_messages(self, workflow_id: str) -> list[InboxRecord]:
        """Inbox rows (messages and events) not yet consumed, in arrival order."""
        ...

    def inbox_messages(self, msg_ids: Sequence[str]) -> dict[str, InboxRecord]:
        """The inbox rows of the messages ``msg_ids`` (``inbox_message`` of each; one
        without a row left out), in one read for a few hundred of them. A damaged row
        raises :class:`DamagedRecord`."""
        ...

    def inbox_message(self, msg_id: str) -> InboxRecord | None:
        """The inbox row of message ``msg_id`` (consumed or not), or ``None``."""
        ...

    def timers(self, workflow_id: str | None = None) -> list[TimerRecord]:
        """Timers (of one workflow, or all), earliest deadline first."""
        ...

    def promises(
        self, workflow_id: str, status: PromiseStatus | str | None = None
    ) -> list[PromiseRecord]:
        """The workflow's promises (optionally of one status), by name."""
        ...

    def get_promise(self, workflow_id: str, name: str) -> PromiseRecord | None:
        """The promise's row, or ``None``."""
        ...

    def get_state(self, workflow_id: str, key: str, default: Any = None) -> Any:
        """The decoded state value, or ``default``."""
        ...

    def states(self, workflow_id: str) -> dict[str, Any]:
        """Every state key of the workflow, decoded."""
        ...

    def state_digests(self, workflow_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """What the state of each of ``workflow_ids`` holds, in one read, as digests of
        its values' stored JSON text (:func:`state_digest`): ``{workflow_id: {key:
        digest}}``, a workflow with no state (or no row) left out. (What a node resuming
        many workflows reads to tell which values their code changed: not the values,
        which could be large.)"""
        ...

    def monitors(self, workflow_id: str, watcher: Pid | None = None) -> list[Pid]:
        """The pids watching the workflow, in the order they started watching; with
        ``watcher``, that one alone if it watches the workflow (one row read, however
        many watch it), else none."""
        ...

    def resume_rows(self, workflow_ids: Sequence[str], *, records: bool = False
                    ) -> dict[str, ResumeRows]:
        """What a node reads of each of ``workflow_ids`` to resume it
        (:class:`ResumeRows`: what ``journal_entries``, ``pending_messages``, ``timers``,
        ``monitors``, ``promises`` and, with ``records``, ``get_workflow`` return), one
        read of each table for a few hundred workflows, not one per workflow: a node
        resuming thousands after a restart or a takeover. A workflow with no rows has
        empty ones (and no record)."""
        ...

    # -- schedules and the queue ---------------------------------------------------
    def schedules(self) -> list[ScheduleRecord]:
        """Every schedule of the store, by id (the scheduler loads them once at start)."""
        ...

    def schedules_without_run(self) -> list[ScheduleRecord]:
        """The schedules whose last run (``last_workflow``) is no workflow of the store
        (a tick recorded, its workflow not created), by id."""
        ...

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """The schedule's row, or ``None``."""
        ...

    def queue_entries(self) -> list[QueueRecord]:
        """Every queue row, in queue order: ``priority`` highest first, then ``seq``
        (start order). Read when the node opens the store (pending workflows wait in this
        order; dedup keys are held by these rows)."""
        ...

    def queue_entry(self, workflow_id: str) -> QueueRecord | None:
        """The workflow's queue row (its priority and start order), or ``None`` without
        one: where a node places a pending workflow it picks up while it runs."""
        ...

    def queue_place(self, workflow_id: str) -> QueuePlace | None:
        """Where the workflow waits, ``pending`` in its host's queue (``None``: it is
        not pending, or has no queue row): a few counts over indexes, no row read
        but its own (``garrison workflows show`` and the console say why it waits)."""
        ...

    def kept_dedup(self, workflow_id: str) -> str | None:
        """The dedup key the workflow's queue row held when the row was dropped (at its
        end, ``Transaction.dequeue``): what a retry takes back. ``None`` without one."""
        ...

    def admitted_since(self, host: str, since: float) -> list[float]:
        """When the workflows of ``host`` admitted after ``since`` (unix seconds) were
        admitted (``Transaction.admit``), oldest first: what its ``rate`` counts."""
        ...

    # -- lifetime ------------------------------------------------------------------
    def statistics(self) -> StoreStatistics:
        """Counters of the write path."""
        ...

    async def wait_writable(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Wait (cancellable) until the store may be written, before a node's start
        writes to it; end at once once ``stopping()`` (the start was interrupted). A
        :class:`~garrison.StoreError` if it cannot be, as a write would raise."""
        ...

    def stopping(self, within: float) -> AbstractContextManager[None]:
        """The node stops in the block (its workflows park, it leaves its cluster, it
        closes the store): a wait for a server that does not answer ends at most
        ``within`` seconds after the block began, with a
        :class:`~garrison.StoreError` (a store on a local file has no such wait)."""
        ...

    def close(self) -> None:
        """Close the store and release its lock."""
        ...
