"""The core every part of a workflow instance shares: its state, the journal cursor,
the write buffer and commit, cancellation checks and parking.

A workflow instance is one object (:class:`~._instance.WorkflowInstance`) assembled
from one class per concern (inbox, waits, activities, interop with processes), each
in its own module and each a subclass of :class:`WorkflowCore`, which holds what they
all use. Every durable operation goes through :meth:`WorkflowCore._take`: it takes the
next journal seq and returns the recorded entry (replay) or ``None`` (run it live, then
``_record`` its outcome into a transaction that is committed before the code sees it).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import outcome
import trio

from ... import _observe, _trio_fast
from ..._context import ActivityScope, WorkflowScope, activity_owner
from ..._errors import (
    GarrisonError,
    NotInProcess,
    StoreError,
    WorkflowCancelled,
    WorkflowMoved,
    raised_again,
)
from ...actors._cancel_switch import CancelSwitch
from ...actors._flag import Flag
from ...actors._runtime import runtime_var
from ...actors._values import ErrorInfo, EventKind, Pid
from ...persistence import MAX_TIME, MIN_TIME, Op, Transaction, WorkflowStatus
from .._kernel import Caller
from ._codec import json_round_trip
from ._journal import (
    CANCEL,
    Cursor,
    Entry,
    JournalKind,
    initial_monitors,
    initial_names,
    op_text,
    retry_timer,
    run_started,
    whole_run_id,
)

if TYPE_CHECKING:
    from ._activities import StartedActivities
    from ._host import WorkflowHost
    from ._inbox import DurableInbox, InboxItem

log = logging.getLogger("garrison.workflow")


_dumps = json.dumps
#: a run whose journal passes this many records logs a warning (continue-as-new)
HISTORY_WARNING = 10_000
#: the latest deadline a durable timer records (9999-12-31 23:59:59 UTC): a longer wait,
#: ``workflow.sleep(float("inf"))`` included, is "forever", stored as this date
FOREVER = MAX_TIME
#: the earliest deadline a durable timer records (0001-01-01 00:00:00 UTC): an earlier
#: one (``sleep_until(datetime.min)`` in a zone east of UTC) is past all the same,
#: stored as this date, which a store reads back (no date holds an earlier one)
EARLIEST = MIN_TIME
#: durable operations a workflow may do without yielding to the scheduler
BUDGET = 64
#: seconds after an unlink during which a linked exit of that pid from another node
#: (sent before that node heard of the unlink) is ignored
UNLINK_GRACE = 10.0
#: a pending timer's wait, by its stored kind (``None``: stored before kinds were)
_UNDER_WAY: dict[str | None, str] = {
    "sleep": "a sleep under way",
    "receive": "a receive timeout under way",
    None: "a sleep or receive timeout under way",
}

T = TypeVar("T")


def recordable(deadline: float) -> float:
    """``deadline`` (wall-clock unix seconds) as a durable timer records it: from
    :data:`EARLIEST` to :data:`FOREVER`, dates a store reads back."""
    return min(max(deadline, EARLIEST), FOREVER)


def added(items: set[T] | None, item: T) -> set[T]:
    """``items`` with ``item`` added, made by the first add (``None`` before).

    A workflow makes its sets of pids, topics and request ids on first use: most
    workflows never use them, and every container a thousand live workflows hold is
    walked again and again by the garbage collector."""
    if items is None:
        return {item}
    items.add(item)
    return items


class _SharedEmpty(dict[Any, Any]):
    """One empty dict shared by every workflow that has no entry in it: its ``timers``
    (read by each step: ``seq in self.timers``) and its completed ``promises``, where a
    dict of its own per workflow was one more object that every step (the timers) or
    every collection of the garbage collector (both) touched for every waiting workflow.
    It is never added to (the method it names makes the workflow its own dict); a pop or
    clear of it does nothing, as of any empty dict."""

    __slots__ = ("_add_with",)

    def __init__(self, add_with: str) -> None:
        super().__init__()
        self._add_with = add_with

    def _refused(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"the shared empty dict of a workflow's {self._add_with}")

    __setitem__ = setdefault = update = __ior__ = _refused


#: the ``timers`` of every workflow with none (see :class:`_SharedEmpty`)
NO_TIMERS: dict[int, float] = _SharedEmpty("timers: add a timer with WorkflowCore.add_timer")
#: the ``promises`` of every workflow with no completed one (see :class:`_SharedEmpty`)
NO_PROMISES: dict[str, tuple[str, Any]] = _SharedEmpty(
    "promises: keep a completed one with WorkflowCore.keep_promise")


def cancelled_error(wid: str) -> ErrorInfo:
    """The error of workflow ``wid`` cancelled before it ever ran (waiting in a queue,
    or ``pending`` in the store)."""
    return ErrorInfo.from_exception(WorkflowCancelled(f"workflow {wid!r} was cancelled"))


class EngineStop(BaseException):
    """The engine's own way out of workflow code (a new run, the end of a replay): a
    ``BaseException`` the code cannot swallow, and never the workflow's failure."""


class ContinueAsNew(EngineStop):
    """Raised by ``workflow.continue_as_new``: ends this run, starts a fresh one."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        super().__init__("continue_as_new")
        self.args_ = args


class WaitCancelled(Exception):
    """A wait was interrupted by a cancel request (the caller journals it at its seq)."""


class Settles(Protocol):
    """A handle of a workflow (a receive, timer, promise or started activity), as
    ``done()`` and ``first`` read it."""

    @property
    def recorded_as(self) -> str:
        """What it is in the journal: ``first`` records what it races by it."""
        ...

    def settled(self) -> bool:
        """Whether it is done now, unrecorded."""
        ...


class Replayed:
    """The state keys, search attributes and memo (each merged) a resumed run's code set
    on the path its journal replays: not written there (stored the first time); and
    what the store held of them when the run was loaded, read with it, to tell which
    values differ without a read of the run's own."""

    __slots__ = ("held_memo", "held_search", "held_state", "memo", "search", "state")

    def __init__(self, held_search: dict[str, Any] | None = None,
                 held_memo: dict[str, Any] | None = None) -> None:
        self.state: set[str] = set()
        self.search: dict[str, Any] = {}
        self.memo: dict[str, Any] = {}
        #: the stored state, as digests of its values' JSON (``Store.state_digests``;
        #: ``None``: not read with the load, read at the settle), and search attributes
        #: and memo (``None``: unknown, what the run set is stored as it is)
        self.held_state: dict[str, str] | None = None
        self.held_search = held_search
        self.held_memo = held_memo

    def set_any(self) -> bool:
        """Whether the replayed path set anything (else there is nothing to settle)."""
        return bool(self.state or self.search or self.memo)


#: how many ends of workflows a workflow keeps in :attr:`WorkflowCore.ends_read`
ENDS_HEARD = 1024


class _Hot(Caller, WorkflowScope):
    """The slots of a workflow instance that every step of it reads or writes, laid out
    first (see :class:`WorkflowCore`)."""

    # CPython lays an object's slots out as its classes declare them, base classes
    # first and each class's own in sorted order: declared here, these few share the
    # object's first cache lines, where spread over the whole object (alphabetically
    # among the rarely used ones) a step of a waiting workflow touched most of its lines,
    # each a likely cache miss with a thousand workflows running. (A slot read on every
    # step belongs here; one read at its start, end, or on a rare path does not:
    # ``test_memory`` checks which a step reads.)
    __slots__ = ("_buffer", "_spare", "cancel_at", "cancel_requested", "check_lost",
                 "cursor", "epoch", "flushing", "history_bytes", "host", "left_outcome",
                 "replayed", "scope", "store", "store_error", "taken", "task", "timers",
                 "unsized", "wid")


class WorkflowCore(_Hot):
    """State and primitives shared by every part of a workflow instance."""

    # Slots, not a __dict__: every waiting workflow's attributes are read on each of its
    # steps, and with a thousand workflows running those reads miss the CPU's caches;
    # a slot is one pointer in the object itself (the parts of a workflow below are
    # mixins with empty slots; an attribute not named here or in ``_Hot`` cannot be set)
    __slots__ = ("_budget", "_done", "_exited", "_inboxes", "_journal_sizes", "_pid", "_wake",
                 "asks_replayed", "attempt", "backoff", "body_root", "cancel_delivered",
                 "cancel_mark", "children_end", "continue_asked", "continued", "created",
                 "defaulted", "durable_watchers", "ends_read", "error", "flushes", "fn",
                 "handed_over", "held_names", "host_unwritten", "input_plain", "kill_reason",
                 "link_times", "links", "may_be_queued", "monitoring", "name", "orphaned",
                 "parent", "pending", "promise_times", "promises", "refreshed", "requests",
                 "requests_taken", "resend_seq", "result_json", "run_id", "signal_ids",
                 "started", "state", "status", "stored_status", "timer_kinds", "topics",
                 "trace", "trap_links", "unlinked", "versions", "wait_deadline", "waits_on",
                 "watchers", "whole_run_id")

    def __init__(self, host: WorkflowHost, wid: str, name: str, input_plain: list[Any], *,
                 run_id: str, attempt: int, parent: Pid | None, created: float,
                 journal: list[Entry], pending: list[InboxItem] | tuple[()],
                 timers: dict[int, float],
                 cancel_requested: bool, watchers: list[Pid] | None,
                 state: dict[str, Any], timer_kinds: dict[int, str] | None = None) -> None:
        self.host = host
        #: in a cluster, the node incarnation this run belongs to (the store's fence
        #: epoch as it was made; ``None`` off a cluster): every write of the run is fenced
        #: by it, so that a run still stopping after its node's lease lapsed (an activity
        #: in a worker thread holds it) writes nothing once the node joined again under a
        #: new epoch, even for a workflow the new one claimed back (``_committing``)
        self.epoch: int | None = getattr(host.store, "fence_epoch", None)
        #: the store may hold a queue row for it (written by this node, another node or
        #: a tool), which its end drops; ``False`` only for a workflow this node created
        #: and ran at once (no row was written with it, and none is written later)
        self.may_be_queued = True
        #: its store row names no host (a tool created it): the transaction that starts
        #: it from the queue names this one, as the store counts the host's starts and
        #: running workflows by that column (see ``_recovery.load``)
        self.host_unwritten = False
        self.node = host.node
        self.store = host.store
        self.wid = wid
        self._pid: Pid | None = None  # (see ``pid``)
        self.name = name
        self.input_plain = input_plain
        self.run_id = run_id
        self.attempt = attempt
        self.parent = parent
        self.created = run_started(journal, created)  # (a continued run's own)
        self.cursor = Cursor(wid, journal)
        #: a run started by continue_as_new (its journal begins with a CONTINUED record)
        #: its code called ``workflow.continue_as_new`` in this run (whose exception,
        #: if the run returns after all, the code caught: warned of)
        self.continue_asked = False
        self.continued = bool(journal) and journal[0].seq == 0 and \
            journal[0].kind == JournalKind.CONTINUED
        #: its message ids carry its whole run id, not its first 12 hex digits (a run
        #: an older garrison continued keeps those: see ``_journal.whole_run_id``)
        self.whole_run_id = whole_run_id(journal)
        #: inbox items delivered and not consumed yet, in arrival order (an empty tuple
        #: until the first: see :meth:`queue_item`)
        self.pending: list[InboxItem] | tuple[()] = pending or ()
        #: ids of inbox rows a receive took whose consume may not be committed yet (the
        #: store still lists them pending: a refresh must not queue them again); each
        #: leaves when the commit carrying its consume returns (:meth:`_consumes_committed`),
        #: or when a refresh finds it consumed
        self.taken: set[int] | None = None
        #: ids of inbox rows a refresh from the store queued that are not consumed yet:
        #: a row this node delivered itself is pushed once its commit returns, and a
        #: refresh in between (a wakeup) may have queued it already (:meth:`push`)
        self.refreshed: set[int] | None = None
        #: requests to the host pending in the inbox (kind ``control``: a terminate)
        self.requests: list[Any] | tuple[()] = ()
        #: ids of the requests it ends by (consumed with its end): seen again, ignored
        #: (``None`` until the first; also the sets below: see ``added``)
        self.requests_taken: set[int] | None = None
        #: durable timers of this run: seq -> wall-clock deadline (:data:`NO_TIMERS`
        #: while it has none; added to by :meth:`add_timer`)
        self.timers = timers or NO_TIMERS
        #: the operation waiting on each stored timer of ``timers`` loaded at recovery
        #: (``"sleep"`` or ``"receive"``): a replay that takes its seq with the other one
        #: diverges. A timer of a store older than schema 7 has none (either may take it)
        self.timer_kinds = timer_kinds or None
        self.cancel_requested = cancel_requested
        self.cancel_delivered = False
        #: when a cancel was asked that this run has not reached yet (unix seconds): one
        #: asked while no node ran the workflow, read from the store. It comes in its
        #: place in time, as on a node that ran on: what was done before it (a deadline,
        #: a message committed, a promise completed) decides the waits first, and it
        #: arrives (``cancel_requested``) at the first wait nothing done before it
        #: decides, or at an activity or process call (under way when it was asked).
        #: ``None``: no such cancel (a cancel asked of a running workflow arrives at once)
        self.cancel_at: float | None = None
        #: the last inbox row that had arrived when a cancel of the running workflow was
        #: flagged (``None``: none, or no such cancel): a receive takes the items up to
        #: it before the cancel comes, as it would have had it run before the request
        #: (and as ``cancel_at`` decides for one asked while no node ran it)
        self.cancel_mark: int | None = None
        #: the scope of an activity call's wait before its next attempt (a cancel
        #: request ends it: the call raises ``WorkflowCancelled`` instead of retrying)
        self.backoff: trio.CancelScope | None = None
        #: workflow pids that get my EXIT durably (``None``: none yet)
        self.durable_watchers = watchers or None
        self.watchers: set[Pid] | None = None  # process pids that get my EXIT in memory
        self.links: set[Pid] | None = None
        #: when it linked to each workflow of its links its journal says the time of
        #: (unix seconds, as its node's clock gave it): the attempt of that workflow the
        #: link is of, for a node that resumes it after that workflow's retry (see
        #: ``_attempts.Watch``)
        self.link_times: dict[Pid, float] | None = None
        #: pids it unlinked lately (and did not link again), to when: a linked exit of
        #: one that another node sent before it heard of the unlink is ignored, as
        #: locally (for :data:`UNLINK_GRACE` seconds)
        self.unlinked: dict[Pid, float] | None = None
        self.monitoring: set[Pid] | None = None
        #: the ``EXIT``s and ``LINK_DOWN``s of workflows that reached it (or its replay
        #: read), each since its last monitor of, link to or spawn of that workflow, as
        #: ``(kind, pid)``, the last :data:`ENDS_HEARD` (oldest first: see
        #: :meth:`heard_end`): its recovery takes those monitors and links as spent, and
        #: a later ``EXIT`` of one (of an attempt a retry began) as not asked for
        #: (``Interop._ends_read``, ``Interop.asks_nothing_of``)
        self.ends_read: dict[tuple[EventKind, Pid], None] | None = None
        #: while it replays: how many monitors of (links to, spawns of) each workflow
        #: its replay made since it last read that workflow's end, ``-1`` for one
        #: linked to it live meanwhile (see :meth:`heard_end`); ``None`` once its
        #: recovery is done
        self.asks_replayed: dict[tuple[EventKind, Pid], int] | None = None
        #: the message id of the seq of the link (``LINK_DOWN``) or monitor (``EXIT``) of
        #: each pid that this workflow made last, as its code made them (a replay too):
        #: what names the inbox id of the event it gets of it (``Interop.event_id``).
        #: Taken when the link or monitor is made: one made before a ``continue_as_new``
        #: keeps its run's id (the new run's seqs start from 1 again)
        self.signal_ids: dict[tuple[EventKind, Pid], str] | None = None
        # (a continued run holds on to the monitors of the run before: its first
        # record names them, so a node resuming it after a crash knows them too)
        for pid, at in initial_monitors(journal).items():
            self.monitoring = added(self.monitoring, pid)
            if at is not None:
                if self.signal_ids is None:
                    self.signal_ids = {}
                self.signal_ids[(EventKind.EXIT, pid)] = at
        self.trap_links = False
        self.state = state
        self.status: WorkflowStatus = WorkflowStatus.RUNNING
        #: the status the store shows (parked statuses are written by the host shortly
        #: after a workflow parks; ``running`` again with its next commit)
        self.stored_status: WorkflowStatus = WorkflowStatus.RUNNING
        #: what this run started with ``workflow.start`` (``None``: nothing yet)
        self.started: StartedActivities | None = None
        #: completed: name -> (status, value) (:data:`NO_PROMISES` while none is; added
        #: to by :meth:`keep_promise`)
        self.promises: dict[str, tuple[str, Any]] = NO_PROMISES
        #: when each completed promise was completed (wall clock; ``workflow.first``
        #: decides by it after a stop), made at the first
        self.promise_times: dict[str, float] | None = None
        self.topics: set[str] | None = None
        #: ``workflow.version()`` of this run: change id -> the version its first call
        #: fixed (``None``: no call yet)
        self.versions: dict[str, int] | None = None
        #: the change ids among them whose version the run got for being recorded
        #: before the call existed (the default: never recorded, at any call)
        self.defaulted: set[str] | None = None
        #: the names it registered, as its code last left them: ``{name: scope}``
        #: (``None``: none). Registered with the node as well (``host.names``) once a
        #: replay caught up: a replay only counts them, it takes them again where it
        #: goes live (``Interop._hold_names``)
        self.held_names: dict[str, str] | None = initial_names(journal)
        #: a supervisor's child whose supervisor has ended: the one started in its place
        #: holds its names, this one neither takes them again nor keeps them
        #: (``Interop.give_up_names``)
        self.orphaned = False
        self._inboxes: dict[str, DurableInbox] | None = None  # (made by the first)
        self._wake: trio.Event | None = None
        #: while parked: the trio time it wakes at by itself (``None``: only when notified)
        self.wait_deadline: float | None = None
        #: while parked: what it waits on, in words (``promise 'approval'``; ``""``
        #: unsaid), for the testing kit's error of a workflow nothing can end
        self.waits_on = ""
        self._buffer: Transaction | None = None
        #: the buffer a step's commit emptied, filled again by the next step's outcome
        #: (see ``spare``)
        self._spare: Transaction | None = None
        #: set once buffered records taken into a commit are committed (``None``: no
        #: such commit in flight); an activity waits for it (see ``records_committed``)
        self.flushing: Flag | None = None
        #: commits of buffered records in flight (``flushing`` is cleared at the last)
        self.flushes = 0
        #: named to the host as having left a step's outcome in the buffer, and not
        #: looked at by it since (see ``WorkflowHost.outcome_left``)
        self.left_outcome = False
        self._budget = 0
        self._done: Flag | None = None  # (see ``done`` and ``exited``)
        self._exited: Flag | None = None
        self.result_json: str | None = None
        self.error: ErrorInfo | None = None
        self.kill_reason: ErrorInfo | None = None
        #: set when it is terminated: the error its unfinished children end with, also
        #: a child whose start was being committed as the terminate came
        self.children_end: ErrorInfo | None = None
        #: the store failed for good under this workflow (see ``_commit``)
        self.store_error: StoreError | None = None
        #: handed over at its next durable point (a drain): what it started and still
        #: runs records its outcome before the run ends (``end_started``); not so for a
        #: write refused as another node owns it, whose records would be refused too
        self.handed_over = False
        #: what stops its body from outside (a kill, a terminate, the node's close): made
        #: by the first :meth:`cancel_body`, or as the body begins with a trio whose
        #: internals the switch cannot use (``None``: none was made)
        self.scope: CancelSwitch | None = None
        #: while its body runs with no switch: where it began (``body_root``), to make
        #: one there when it is cancelled (``None``: not begun, or ended)
        self.body_root: Any = None
        self.calls = None  # the call table (see Caller)
        self.callers = None
        #: characters of journal JSON recorded live in this run (see history_size)
        self.history_bytes = 0
        #: seqs of activities started with ``workflow.start``, left out of history_size
        self.unsized: set[int] | None = None
        self._journal_sizes: dict[int, int] | None = None
        self.fn: Any = None
        #: recovered from a journal: check watched processes once replay has caught up
        self.check_lost = bool(journal)
        #: what its code set on the path its journal replays, to store where it differs
        #: from the store once the replay is past its journal (code deployed since set
        #: another value there: ``_settle_replayed``); made as a resumed run is loaded
        #: (holding what the store held), else by the first value set there; ``None``
        #: once settled
        self.replayed: Replayed | None = None
        #: the seq past its journal when it was loaded from the store (0: started here):
        #: a call there may have sent its request before a crash (``Interop.call``)
        self.resend_seq = 0
        #: the trace context it was started in (``garrison.tracing``), or ``None``
        self.trace: dict[str, str] | None = None
        #: the trio task its code runs in (``None`` until it runs): the only task whose
        #: durable calls it takes (see ``_op``)
        self.task: trio.lowlevel.Task | None = None

    def heard_end(self, kind: EventKind, pid: Pid) -> None:
        """The ``kind`` event (``EXIT``, ``LINK_DOWN``) of ``pid`` reached this workflow
        (or its replay read it): if ``pid`` is a workflow's, noted in
        :attr:`ends_read`, the last :data:`ENDS_HEARD` at least kept (twice as many
        trimmed to those at once; one forgotten: a later ``EXIT`` of it is read, as
        any).

        Its replay reads the event where its code read it, which may be after a
        monitor (link, spawn) made again once the event had come (it waited unread
        while the workflow was retried): live, that event spent only the one made
        before it, and the one made again is of the retried run. A read after two or
        more of them since the last is not noted so: which ones it spent is not known,
        and they are kept (at worst an ``EXIT`` heard twice, never one lost). Nor is
        a read of one asked for live while it replays (a link the other side made
        again, its retried run's recovery): that came after every end the replay
        reads."""
        h = self.node.hosts.get(pid.host)
        if h is None or not h.durable:
            return
        key = (kind, pid)
        if self.check_lost and self.asks_replayed:
            asks = self.asks_replayed.get(key, 0)
            if asks < 0:  # (asked for live while it replays: the end read came before)
                return
            if asks:
                del self.asks_replayed[key]
                if asks > 1:
                    return
        heard = self.ends_read
        if heard is None:
            heard = self.ends_read = {}
        heard.pop(key, None)
        heard[key] = None
        if len(heard) > 2 * ENDS_HEARD:
            self.ends_read = dict.fromkeys(itertools.islice(heard, ENDS_HEARD, None))

    def asked_again(self, kind: EventKind, pid: Pid, *, live: bool = False) -> None:
        """A monitor of (``EXIT``), link to (``LINK_DOWN``) or spawn of ``pid``: its
        event is asked for again (see :attr:`ends_read`; counted while it replays, see
        :meth:`heard_end`). ``live``: made now by the other side (a link), not by
        this workflow's code, which may be replaying."""
        if self.ends_read:
            self.ends_read.pop((kind, pid), None)
        if self.check_lost:
            h = self.node.hosts.get(pid.host)
            if h is None or not h.durable:  # (a plain process's end is not noted)
                return
            asks = self.asks_replayed
            if asks is None:
                asks = self.asks_replayed = {}
            made = asks.get((kind, pid), 0)
            asks[kind, pid] = -1 if live or made < 0 else made + 1

    def queue_item(self, item: InboxItem) -> None:
        """Add ``item`` to :attr:`pending`, made a list by the first (most workflows
        never receive: a list each is one more object per running workflow that the
        garbage collector walks)."""
        pending = self.pending
        if isinstance(pending, list):
            pending.append(item)
        else:
            self.pending = [item]

    def unqueue_item(self, item: InboxItem) -> None:
        """Take ``item`` out of :attr:`pending` (it is there)."""
        pending = self.pending
        assert isinstance(pending, list)
        pending.remove(item)

    # Its pid and its two flags are made when first asked for, mostly as it ends: three
    # objects fewer that every waiting workflow holds, for the garbage collector to walk
    @property
    def pid(self) -> Pid:
        """This workflow's pid (``host/id``)."""
        pid = self._pid
        if pid is None:
            pid = self._pid = Pid(self.host.name, self.wid)
        return pid

    @pid.setter
    def pid(self, pid: Pid) -> None:  # (a Caller's pid may be set)
        self._pid = pid

    @property
    def done(self) -> Flag:
        """Set at its end (recorded, or stopped here)."""
        flag = self._done
        if flag is None:
            flag = self._done = Flag()
        return flag

    @property
    def exited(self) -> Flag:
        """Set once its task has ended (or it left without one: see ``mark_exited``)."""
        flag = self._exited
        if flag is None:
            flag = self._exited = Flag()
        return flag

    def cancel_body(self) -> None:
        """Stop its body from outside, as a cancelled scope around it would (a kill, a
        terminate, the node's close): ``Cancelled`` at its next checkpoint and every one
        after. Nothing before the body began (what asks checks again as it begins) or
        after it ended.

        Its switch is made here, the first time: every waiting workflow kept one of its
        own, one more object for the garbage collector to walk, and a step read it
        (``Activities.activity``: stopped, a step checkpoints)."""
        scope = self.scope
        if scope is None:
            root, task = self.body_root, self.task
            if root is None or task is None:
                return
            self.scope = CancelSwitch.made_cancelled(task, root)
        else:
            scope.cancel()

    def add_timer(self, seq: int, deadline: float) -> None:
        """Keep the durable timer at ``seq`` in :attr:`timers` (made the workflow's own
        dict by the first: see :class:`_SharedEmpty`)."""
        timers = self.timers
        if timers is NO_TIMERS:
            timers = self.timers = {}
        timers[seq] = deadline

    def keep_promise(self, name: str, completed: tuple[str, Any]) -> None:
        """Keep promise ``name`` completed as ``(status, value)`` in :attr:`promises`
        (made the workflow's own dict by the first: see :class:`_SharedEmpty`)."""
        promises = self.promises
        if promises is NO_PROMISES:
            promises = self.promises = {}
        promises[name] = completed

    def __repr__(self) -> str:
        return f"<workflow {self.wid} {self.name} {self.status}>"

    def finish_call(self, ref: str, result: outcome.Outcome[Any]) -> None:
        """A reply to one of its journaled calls (a ref with ``#``, see ``Interop.call``)
        is recorded as JSON: a value that cannot be converted raises ``PayloadError``
        in the replier's ``msg.reply`` (the call still waits). (An activity's calls,
        not journaled, take their replies as they are.)"""
        if "#" in ref and type(result) is outcome.Value:
            result = outcome.Value(json_round_trip(
                result.value, f"the reply to a call of workflow {self.wid!r}")[1])
        Caller.finish_call(self, ref, result)

    # ------------------------------------------------------------ write path
    def buffered(self) -> Transaction:
        """The transaction of this workflow's synchronous records, flushed at its next
        commit (and at its end): nothing is visible outside before it commits."""
        buf = self._buffer
        if buf is None:
            buf = self._spare
            if buf is None:
                buf = Transaction()
            else:
                self._spare = None
            self._buffer = buf
        return buf

    def spare(self, tx: Transaction) -> None:
        """``tx``, the buffer a step has just committed (its commit returned: no store
        keeps a transaction it wrote), emptied and kept for the next step's outcome
        (:meth:`buffered`). A workflow of sequential steps fills one transaction for
        its whole run: a new one each step (and its list of operations) lived through
        the wait for its batch, which with a thousand workflows running a young garbage
        collection meets, so each moved on and was walked again by the next middle
        one. (Only a buffer no one else holds: ``Activities.activity``'s; which lets
        it go when its step's outcome is committed on its own instead.)"""
        tx.ops.clear()
        tx.workflow_ids = ()
        tx.schedule_ids = ()
        tx.epoch = None
        self._spare = tx

    def take_buffer(self) -> Transaction:
        """The buffered records as a transaction to extend (the buffer starts empty)."""
        buf = self._buffer or Transaction()
        self._buffer = None
        return buf

    async def _commit(self, tx: Transaction) -> list[Any]:
        """Commit ``tx`` after the buffered records; the results of ``tx``'s operations.

        A store that fails for good (the disk is full, the file is gone, it stayed
        locked too long) raises :class:`~garrison.StoreError`; it is kept, raised again
        at every later durable operation, and stops the workflow without recording it
        as its outcome.

        A commit of buffered records still in flight (``flush_soon``) is waited for
        first: a later commit never lands without the records made before it (the
        effect it stands for, a send, a reply, would go out carrying values the
        journal lost)."""
        if self.flushing is not None:
            await self._flushed()
        buf = self._buffer
        if buf is None:
            try:  # (commit_checked's body, inlined: see there)
                results = await self._committing(tx)
            except Exception as exc:
                self._raise_store_failure(exc)
                raise
        else:
            self._buffer = None
            n = len(buf)
            buf.extend(tx)
            return (await self._flush(buf))[n:]  # (it forgets the rows it consumed)
        if self.taken is not None:
            self._consumes_committed(tx)
        return results

    def _consumes_committed(self, tx: Transaction) -> None:
        """``tx`` is committed: the rows it consumed leave :attr:`taken`. Only those: a
        commit in flight (a started activity's record, from its own task) may return
        after the workflow took another row, its consume still buffered; forgotten
        then, a refresh queued that row again and it was taken twice."""
        taken = self.taken
        if taken is not None:
            taken.difference_update(params[1] for op, params in tx.ops if op is Op.CONSUME)
            if not taken:
                self.taken = None

    def _flush_begins(self) -> Flag:
        """A commit of buffered records starts: the flag of those in flight (one for
        all of them, set when the last ends: a later one may end first)."""
        done = self.flushing
        if done is None:
            done = self.flushing = Flag()
        self.flushes += 1
        return done

    async def _flush(self, tx: Transaction, done: Flag | None = None) -> list[Any]:
        """Commit ``tx``, which holds buffered records: :attr:`flushing` is set
        meanwhile (until every such commit in flight has ended)."""
        if done is None:
            done = self._flush_begins()
        try:
            results = await self._committing(tx)
        except Exception as exc:
            self._raise_store_failure(exc)
            raise
        finally:
            self.flushes -= 1
            if not self.flushes:
                self.flushing = None
                done.set()
        if self.taken is not None:
            self._consumes_committed(tx)
        return results

    def flush_soon(self) -> None:
        """Start committing the buffered records now, from a task of the host
        (``workflow.start``: the run goes on; the activity it started, and any other
        about to run, waits for them in :meth:`records_committed`)."""
        done = self._flush_begins()  # at once: the task runs later
        self.host.start_soon(self._flush_shielded, self.take_buffer(), done)

    def flush_with(self, tx: Transaction, then: Callable[[list[Any]], None]) -> None:
        """As :meth:`flush_soon`, ``tx`` committed with the buffered records (a row that
        lands with the record that made it, or not at all: a replay of that record
        finds it); ``then`` gets ``tx``'s results once they are committed."""
        done = self._flush_begins()
        buf = self.take_buffer()
        n = len(buf)
        buf.extend(tx)
        self.host.start_soon(self._flush_shielded, buf, done, n, then)

    async def _flush_shielded(self, tx: Transaction, done: Flag, n: int = 0,
                              then: Callable[[list[Any]], None] | None = None) -> None:
        with trio.CancelScope(shield=True):  # asked for: written even as the node closes
            try:
                results = await self._flush(tx, done)
            except Exception as exc:  # a store failure is kept as store_error: the
                if self.store_error is None:  # waiters raise it; anything else ends the run
                    self.stop_with(ErrorInfo.from_exception(exc))
                else:  # and the run stops where it is (its code may await something
                    self.cancel_body()  # else: it would run on unaware)
                return
        if then is not None:
            then(results[n:])

    def buffer_left(self) -> bool:
        """Whether records sit in the buffer of a workflow that runs on, with no store
        failure (a drain's hand-over is none: it records what was done before it
        moves): what ``flush_soon`` may write."""
        return (self._buffer is not None and self.kill_reason is None
                and not self.done.is_set()
                and (self.store_error is None or isinstance(self.store_error, WorkflowMoved)))

    async def flush_left(self) -> None:
        """The node stops this run where it is (not parked: parking commits first):
        what it buffered is written, so that a step's outcome left there
        (``Activities.activity``) does not run the step again on the next node. A
        failure is logged: the next node runs from what is committed."""
        if not self.buffer_left():
            return
        with trio.CancelScope(shield=True):
            try:
                await self._flush(self.take_buffer())
            except WorkflowMoved:
                pass  # (its lease lapsed: another node runs it from its last commit)
            except Exception as exc:
                log.warning("workflow %s: what it recorded since its last commit could not "
                            "be written as the node stopped (%s); the next node runs it from "
                            "its last commit", self.wid, exc,
                            extra={"workflow_id": self.wid, "pid": self.pid})

    @property
    def records_pending(self) -> bool:
        """Records made and not committed yet: buffered, or in a commit in flight."""
        return self._buffer is not None or self.flushing is not None

    async def _flushed(self) -> None:
        """Return once no commit of buffered records is in flight; raise the
        store's failure if one failed."""
        while self.flushing is not None:
            await self.flushing.wait()
        if self.store_error is not None:
            raise raised_again(self.store_error)

    async def records_committed(self) -> None:
        """Return once every record this workflow has made is committed: before an
        effect leaves the workflow ahead of its own record (an activity runs, a call's
        request or a spawned plain process goes out, a child workflow by id starts, a
        process is cancelled or terminated). The effect may carry a recorded value (a
        ``workflow.uuid4()`` as an idempotency key): made again after a crash, it must
        carry the same one, so the value is durable before the effect."""
        if self._buffer is not None:
            await self._commit(Transaction())
        await self._flushed()

    async def commit_checked(self, tx: Transaction) -> list[Any]:
        """``store.commit(tx)``, after a commit of buffered records still in flight (as
        :meth:`_commit`); a failure of the store itself becomes (and stays) this
        workflow's :class:`~garrison.StoreError`.

        Its body is inlined on purpose where a step or a workflow's end waits for its
        batch (``try: await self._committing(tx)``, ``except Exception as exc:
        self._raise_store_failure(exc); raise``; from outside this class through
        :attr:`committing` and :attr:`commit_failed`), each copy with no commit of
        buffered records in flight (checked, or waited for, first): this coroutine's
        frame would be held meanwhile, and with a thousand workflows waiting in one
        batch what they hold outlives the young garbage collections into the middle
        ones, walked again by each. The copies point here rather than explain again."""
        if self.flushing is not None:
            await self._flushed()
        try:
            return await self._committing(tx)
        except Exception as exc:
            self._raise_store_failure(exc)
            raise

    def _committing(self, tx: Transaction) -> Awaitable[list[Any]]:
        """The awaitable committing ``tx``: timed and inside a ``store.commit`` span when
        observability is on. (A plain method: awaiting what it returns makes no frame
        of its own.)"""
        tx.epoch = self.epoch
        if _observe.active:
            return _observe.workflow_commit(self, tx)
        return self.store.commit(tx)

    def _raise_store_failure(self, exc: Exception) -> None:
        """Called with the error of a failed commit: raises the
        :class:`~garrison.StoreError` it means (kept as this workflow's) from it, or
        returns when ``exc`` is the written operations' own error (a promise completed
        twice), for the caller to raise as it is."""
        failed = self.store.translate_error(exc)
        if failed is None:
            if isinstance(exc, GarrisonError | ValueError | TypeError):
                return
            # anything else is the store failing: never the workflow's failure
            failed = StoreError(self.store.path,
                                f"the store failed: {type(exc).__name__}: {exc}")
        self.store_error = failed
        if failed is exc:  # (the store's own StoreError: its cause is the store's error)
            raise failed
        raise failed from exc

    #: :meth:`_committing` and :meth:`_raise_store_failure` (the same functions: no call
    #: more) for code outside this class that inlines :meth:`commit_checked`'s body (the
    #: ``@activity`` wrapper, the host's end of a workflow: see there)
    committing = _committing
    commit_failed = _raise_store_failure

    def record(self, tx: Transaction, seq: int, kind: JournalKind, name: str,
                outcome_json: str, attempts: int = 1, at: float | None = None) -> None:
        """Journal ``seq`` in ``tx``, at the time ``at`` (unix seconds; now if ``None``)."""
        tx.append_journal_text(self.wid, seq, kind, name, outcome_json, attempts,
                               self.host.clock.now() if at is None else at)
        if self.unsized is None or seq not in self.unsized:
            self.history_bytes += len(outcome_json)
        if seq == HISTORY_WARNING + 1:
            log.warning("workflow %r (%s) has passed %d journal records: replay after a "
                        "restart gets slower as it grows; consider workflow.continue_as_new() "
                        "to start a fresh run", self.wid, self.name, HISTORY_WARNING,
                        extra={"workflow_id": self.wid, "pid": str(self.pid)})

    def is_replaying(self) -> bool:
        """True while the code runs through what it did before (``workflow.logger`` drops
        its records then: they were logged the first time): up to the last journal
        record, or to a durable timer still pending from before (a sleep or a receive
        timeout under way when the node stopped, recorded only when it ends)."""
        if self.cursor.in_history:
            return True
        timers = self.timers
        return bool(timers) and self.cursor.seq <= max(timers)

    def history_length(self) -> int:
        """Records in the journal so far (the same at the same point of a replay)."""
        return self.cursor.seq - 1

    def history_size(self) -> int:
        """Characters of journal JSON so far: the replayed records (as stored) and the
        live ones; the same at the same point of a replay. Not the outcomes of
        activities started with ``workflow.start`` (``unsized``): recorded when they
        end, at no fixed point of the code, which a replay reads at their start."""
        size = self.history_bytes
        entries = self.cursor.entries
        if entries:
            if self._journal_sizes is None:
                self._journal_sizes = self.store.journal_sizes(self.wid)
            seq = self.cursor.seq
            unsized = self.unsized or ()
            size += sum(n for s, n in self._journal_sizes.items()
                        if 0 < s < seq and s in entries and s not in unsized)
        return size

    # ------------------------------------------------------------ taking a seq
    def _op(self, what: str) -> None:
        self._in_own_task(what)
        if self.store_error is not None:
            raise raised_again(self.store_error)
        self.cursor.check()

    def _in_own_task(self, what: str) -> None:
        """``NotInProcess`` unless ``what`` comes from the workflow function's own task
        while it runs: not an activity's, a nursery's of its code, another workflow's,
        nor any once its run ended (the order of journal seqs is its code's alone)."""
        if activity_owner() is not None:
            raise NotInProcess(f"{what} cannot be used inside an activity of workflow "
                               f"{self.wid!r}: activities are plain code")
        self.check_caller(what)
        task = self.task
        if task is None and self.exited.is_set():  # (its handle, kept by other code)
            raise NotInProcess(f"{what} of workflow {self.wid!r}, whose run has ended "
                               "here: durable calls must come from the workflow function "
                               "itself, while it runs")
        if task is not None and _trio_fast.current_task() is not task:
            # a task of the code's own nursery: the order its calls take journal seqs in
            # is trio's scheduling, which a replay does not repeat
            raise NotInProcess(
                f"{what} of workflow {self.wid!r} was called from another trio task than "
                "the workflow's own (a nursery in workflow code?): durable calls must come "
                "from the workflow function itself; run things at once with "
                "workflow.start() and workflow.gather() / first()")

    def check_caller(self, what: str) -> None:
        """``NotInProcess`` naming both when another workflow's code does ``what`` with a
        handle of this one (a receive, timer, promise or started activity shared through
        a module global): its outcome is this workflow's, recorded in this journal, and
        the other would get it with nothing in its own (a receive's message would reach
        both)."""
        caller = runtime_var.get(None)
        if caller is not self and isinstance(caller, WorkflowCore):
            ended = ", whose run has ended here," if self.task is None else ""
            raise NotInProcess(
                f"{what} of workflow {self.wid!r}{ended} was called from workflow "
                f"{caller.wid!r}: a handle (receive, timer, promise, workflow.start) "
                "belongs to the workflow that made it; pass values between workflows "
                "by messages, promises or child workflows")

    def recorded_done(self, handle: Settles) -> bool:
        """``handle.done()`` (a receive, timer, promise or started activity of this
        workflow), recorded as ``now()`` is, under the name ``first`` records it by: a
        replay returns what the first run saw, not the outcome, promise, clock or inbox
        the store fills in before the code gets there. No cancel is delivered here (a
        read, as ``version()``). A journal written before ``done()`` was recorded has no
        record for it: replayed inside such a journal (records or a timer follow), it
        takes no seq and reads the handle, as it did."""
        name, done = handle.recorded_as, handle.settled
        self._op(f"done() of {name}")  # (also when no seq is taken, below)
        entry = self.cursor.peek()
        if entry is not None and entry.kind == JournalKind.DONE:
            entry = self._take(JournalKind.DONE, name, cancel=False)  # checks the name
            return entry is not None and entry.outcome is True
        if self.is_replaying():
            return done()
        self._take(JournalKind.DONE, name, cancel=False)
        value = bool(done())
        self.record(self.buffered(), self.cursor.seq - 1, JournalKind.DONE, name,
                    "true" if value else "false")
        return value

    def _take(self, kind: JournalKind, name: str, timed: bool = False,
              cancel: bool = True) -> Entry | None:
        """Take the next seq: the recorded entry, or ``None`` (live). Delivers a pending
        cancel request (journaled at this seq) as ``WorkflowCancelled``, unless
        ``cancel`` is false (``workflow.version``: no cancel is delivered there).

        ``timed``: the operation keeps a durable timer at its seq (a sleep, a receive
        with a timeout). A timer pending at the seq (a wait under way when the node
        stopped, recorded only when it ends) taken by any other operation is a
        divergence: code changed while the workflow waited."""
        # _op's checks, read inline (every step passes here); it raises what is wrong
        # (no task: a run that has ended, whose handle another workflow's code holds)
        task = self.task
        run = _trio_fast.RUN
        if (run is None or self.store_error is not None or task is None
                or isinstance(runtime_var.get(None), ActivityScope)
                or getattr(run, "task", None) is not task):
            self._op(kind)  # (no task outside trio: a worker thread gets trio's error)
        entry = self.cursor.take(kind, name)  # (raises a kept divergence, as _op's check)
        if entry is not None:
            if entry.kind == CANCEL:
                self.cancel_delivered = True
                raise self._cancelled_error()
            return entry
        seq = self.cursor.seq - 1
        if seq in self.timers:
            self._check_timer(seq, kind, name, timed)
        if self.check_lost:
            self._deliver_lost()
            _observe.replayed(self)
        if self.replayed is not None and seq > self.cursor.last:
            self._settle_replayed()
        if (self.cancel_requested and not self.cancel_delivered and cancel
                and not self.is_replaying()):  # (at a gap: recorded later, or a wait's)
            self._deliver_cancel(self.cursor.seq - 1)
        return None

    def _check_timer(self, seq: int, kind: JournalKind, name: str, timed: bool) -> None:
        """The operation ``kind`` takes ``seq``, where a durable timer is pending from
        before (a wait under way when the node stopped, recorded only when it ends):
        a divergence unless it is the same kind of wait (a sleep, or a receive with a
        timeout; a timer stored without its kind is taken by either)."""
        kinds = self.timer_kinds
        known = kinds.get(seq) if kinds else None
        if timed and (known is None or known == kind):
            return
        retry = retry_timer(known)
        if retry is not None and kind == JournalKind.ACTIVITY and retry[1] == name:
            return  # the same activity's retries under way (``Activities.retrying``)
        raise self.cursor.diverge(seq, "timer", self.under_way(seq), op_text(kind, name))

    def under_way(self, seq: int) -> str:
        """What the pending timer at ``seq`` says is under way, for a divergence."""
        kinds = self.timer_kinds
        known = kinds.get(seq) if kinds else None
        retry = retry_timer(known)
        if retry is not None:
            return f"the retries of activity {retry[1]!r} under way"
        return _UNDER_WAY.get(known, _UNDER_WAY[None])

    def _sync_op(self, kind: JournalKind, name: str, data: Any) -> bool:
        """Journal a synchronous operation; True when it is live (not replayed)."""
        if self._take(kind, name) is not None:
            return False
        self.record(self.buffered(), self.cursor.seq - 1, kind, name, _dumps(data))
        return True

    def _deliver_lost(self) -> None:
        """Hook of the interop part: events for processes lost in a crash."""
        self.check_lost = False

    def _settle_replayed(self) -> None:
        """Hook of the instance: store what the replayed path set that the store lacks."""
        self.replayed = None

    def _deliver_cancel(self, seq: int, outcome: str = "null") -> NoReturn:
        """Journal the delivery of the cancel request at ``seq`` and raise it
        (``outcome``: where it was delivered, when no operation of its own took ``seq``:
        see ``ActivityHandle``)."""
        self.cancel_delivered = True
        tx = self.buffered()
        self.record(tx, seq, CANCEL, "", outcome)
        self.drop_timer(tx, seq)
        raise self._cancelled_error()

    def drop_timer(self, tx: Transaction, seq: int) -> None:
        """The wait at ``seq`` is over (its record, or a cancel, is in ``tx``): its
        durable timer, if it has one, goes with ``tx``."""
        if self.timers.pop(seq, None) is not None:
            tx.remove_timer(self.wid, seq)
            if self.timer_kinds:
                self.timer_kinds.pop(seq, None)

    def _cancel_at_await(self, seq: int) -> NoReturn:
        """Deliver the cancel request at an await of the operation that took ``seq``
        earlier (other operations took seqs since: an activity started with
        ``workflow.start``, a receive made before it is awaited): journaled at the next
        seq, naming ``seq``, so that a replay raises at the same await
        (:meth:`cancelled_at_await`), not where the operation began."""
        self._op("an await")
        at = self.cursor.seq
        self.cursor.seq = at + 1
        self.drop_timer(self.buffered(), seq)  # (a receive's timeout: it ends here)
        self._deliver_cancel(at, json.dumps({"await": seq}))

    def cancelled_at_await(self, seq: int) -> None:
        """Replaying: raise ``WorkflowCancelled`` if the next record is the cancel the
        first run met awaiting the operation that took ``seq`` (:meth:`_cancel_at_await`)."""
        entry = self.cursor.peek()
        if (entry is not None and entry.kind == CANCEL and isinstance(entry.outcome, dict)
                and entry.outcome.get("await") == seq
                and _trio_fast.current_task() is self.task):
            self.cursor.take(CANCEL, "")
            self.cancel_delivered = True
            raise self._cancelled_error()

    def cancel_first(self, done_at: float = math.inf) -> bool:
        """The wait under way is decided by what was done at ``done_at`` (wall clock: a
        deadline, a message's commit; ``inf``: nothing decides it yet). True if the
        cancel asked before this run (``cancel_at``) came first: it arrives now, and the
        wait raises ``WaitCancelled``."""
        at = self.cancel_at
        if at is None:
            return False
        if self.cancel_delivered:  # (replayed: its record is in the journal)
            self.cancel_at = None
            return False
        if done_at < at:
            return False
        self.cancel_at = None
        self.cancel_requested = True
        self.host.cancel_children(self)  # type: ignore[arg-type]  # (an instance's)
        return True

    def _cancelled_error(self) -> WorkflowCancelled:
        return WorkflowCancelled(f"workflow {self.wid!r} was cancelled")

    # ------------------------------------------------------------ scheduling
    async def _yield(self) -> None:
        self._budget += 1
        if self._budget >= BUDGET:
            self._budget = 0
            await trio.lowlevel.checkpoint()

    def stop_with(self, reason: ErrorInfo) -> None:
        """End this workflow as failed with ``reason`` at its next checkpoint (a kill;
        the first reason stays)."""
        if self.kill_reason is None:
            self.kill_reason = reason
            self.cancel_body()

    def wake(self) -> None:
        """Something the workflow may wait for happened (a message, an activity's end, a
        cancel request: that one also ends an activity call's wait before its retry)."""
        ev = self._wake
        if ev is not None:
            self._wake = None
            ev.set()
        backoff = self.backoff
        if backoff is not None and self.cancel_requested and not self.cancel_delivered:
            backoff.cancel()

    async def _wait(self, trio_deadline: float | None, status: WorkflowStatus,
                    on: str = "") -> None:
        """Park until notified (or the deadline), waiting ``on`` (in words); raises
        ``WaitCancelled`` on a cancel request.

        Buffered synchronous records (state, search attributes, ``now()``...) are
        committed first, so they are visible from outside while the workflow waits.
        The wake-up event exists before that commit: a message, promise or event that
        arrives while it is written wakes the workflow at once (not lost)."""
        ev = self._wake = trio.Event()
        if self.store_error is not None:
            raise raised_again(self.store_error)
        if self._buffer is not None:
            await self._commit(Transaction())
        # (an emptied buffer kept for a step's outcome, its start's say, is not held
        # through the wait, for days maybe, for every collection to walk: see ``spare``)
        self._spare = None
        if self.cancel_at is not None:
            self.cancel_first()  # nothing done before it decided this wait
        if self.cancel_requested and not self.cancel_delivered:
            if self._wake is ev:
                self._wake = None
            raise WaitCancelled
        self.status = status
        self.host.parked(self)  # type: ignore[arg-type]  # this core is an instance's
        self.wait_deadline, self.waits_on = trio_deadline, on
        try:
            if trio_deadline is None:
                await ev.wait()
            else:
                with trio.move_on_at(trio_deadline):
                    await ev.wait()
        except trio.Cancelled:
            if self.host.closing:  # parked as the node stops (its store row says so)
                self.host.parked_at_stop[self] = status  # type: ignore[index]  # an instance
            raise
        finally:
            self.status = WorkflowStatus.RUNNING
            self.wait_deadline, self.waits_on = None, ""
            if self._wake is ev:
                self._wake = None
        if self.store_error is not None:
            raise raised_again(self.store_error)
        if self.stored_status is not WorkflowStatus.RUNNING:  # with its next commit
            self.buffered().update_workflow(self.wid, status=WorkflowStatus.RUNNING)
            self.stored_status = WorkflowStatus.RUNNING
        if self.cancel_requested and not self.cancel_delivered:
            raise WaitCancelled
