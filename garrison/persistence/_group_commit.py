"""Group commit: every write waiting at one moment shares one database transaction.

A store hands :class:`GroupCommit` two functions: ``write_one(tx)`` commits one
transaction now, in the calling thread, and ``write_batch(batch)`` commits a list of
:class:`CommitRequest` as ONE transaction (isolating a request whose own operations
fail, so only that caller gets the error), filling each request's ``results`` or
``error``. ``await GroupCommit.commit(tx)`` decides how:

- **alone**: no other task is runnable and no batch is forming, so nobody could share
  the transaction: ``write_one`` at once, in the trio thread (no scheduling, no thread
  hop). Stores that must never block the trio thread (a network database) turn this
  off with ``alone_inline=False``.
- **batch**: otherwise the caller joins the forming batch. The first caller leads: it
  lets every runnable task reach its own commit first (a few scheduler passes), then
  writes the batch: in the trio thread (``Strategy.INLINE``: a cheap commit, such as
  SQLite with ``synchronous=NORMAL``), or in a worker thread (``Strategy.THREAD``: an
  fsync or a network round trip; the node keeps running, and every commit arriving
  meanwhile queues and forms the next batch, led by the oldest waiter: the classic
  leader/follower scheme of databases' WAL writers). A ``THREAD`` batch that every
  runnable task has joined is written in the trio thread all the same, unless the
  store turned ``alone_inline`` off: nothing could run during the write, and the hop
  to the thread and back would cost more than it frees (a loop of awaited starts
  waits for such batches one after another). "Every runnable task" is judged at the
  last two scheduler passes of the gathering (a task that runs later in the leader's
  own pass cannot be seen: two passes in a row without one make it unlikely that
  another task is running, as for a commit written alone).
- ``Strategy.IMMEDIATE`` writes every transaction at once in the trio thread (an
  in-memory store: nothing to share, and no worker thread lets a ``MockClock`` jump
  time under a commit in flight).

A caller resumes only once its writes are committed; waiting cannot be cancelled
half-way (the write happens either way, and its outcome is the caller's).

Transient failures: a store raises :class:`Busy` when nothing was committed because
the database was busy (another connection holding its write lock). The write is then
retried in a worker thread with a growing pause (so the trio thread never waits for the
lock), for up to ``retry_for`` seconds; a store that stays busy that long fails every
caller of the batch with the store's ``unusable(exc)`` error (a ``StoreError``).

A write started in the trio thread that must wait longer than it should there (a
network database slow to answer) goes on in a worker thread the store starts at once
(:func:`hand_over`): ``write_one`` or ``write_batch`` raises :class:`HandedOver`, and
the caller waits for that thread's outcome (shielded: the write happens either way).
"""

from __future__ import annotations

import enum
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from time import perf_counter
from typing import Any

import outcome
import trio

from .. import _observe, _trio_fast
from .._errors import StoreError, raised_again
from .._trio_fast import runnable_tasks

__all__ = ["NONE_RESULT", "Busy", "CommitRequest", "GroupCommit", "HandedOver", "Strategy",
           "fail_all", "hand_over", "interrupted", "runnable_tasks"]

#: The results a store's ``write_batch`` gives a request whose one operation returns
#: ``None`` (a step's journal append). Its caller gets a list of its own, made when it
#: resumes: a thousand lists made in a row by the writer, with nothing freed between
#: them, would set off a young garbage collection that walks every waiting commit.
NONE_RESULT: list[Any] = [None]


class Busy(Exception):
    """Raised by a store's write functions: nothing was committed because the database
    was busy; the same write may be tried again. (Also by ``get_workflow_settled``: a
    write of the row is in flight; ask again.)"""

class HandedOver(Exception):
    """Raised by a store's ``write_one``/``write_batch`` in the trio thread: the write
    goes on in a worker thread already started (:func:`hand_over`); ``await
    exc.wait()`` waits for it (shielded) and returns its outcome (``write_one``'s
    results; ``write_batch``'s requests are filled)."""

    def __init__(self, wait: Callable[[], Awaitable[Any]]) -> None:
        super().__init__("the write goes on in a worker thread")
        self.wait = wait


def hand_over(fn: Callable[[], Any]) -> HandedOver:
    """Start ``fn`` in a worker thread now (``trio.lowlevel.start_thread_soon``: no
    checkpoint, no limiter between this call and the thread running, so a lock the
    caller passes on with ``fn`` is held by a running thread), from the trio thread;
    the :class:`HandedOver` whose ``wait()`` returns its outcome."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    got: list[outcome.Outcome[Any]] = []

    def deliver(result: outcome.Outcome[Any]) -> None:  # (in the worker thread)
        got.append(result)
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:  # pragma: no cover - its waiter is shielded
            pass

    try:
        trio.lowlevel.start_thread_soon(fn, deliver, name="garrison store write")
    except BaseException:  # pragma: no cover - no thread to be had: finish it here
        got.append(outcome.capture(fn))
        done.set()

    async def wait() -> Any:
        with trio.CancelScope(shield=True):  # the write's outcome is its caller's
            await done.wait()
        return got[0].unwrap()

    return HandedOver(wait)


#: scheduler passes a batch's leader waits at most for other commits to join
GATHER_PASSES = 6

#: commits written alone in a row before one of them yields to the scheduler
ALONE_BUDGET = 16

#: requests one batch written in the trio thread holds at most; the rest form the next
#: batch, a scheduler pass later (their oldest leads it). Thousands of commits waiting
#: at once (a parent's cancel or terminate ending its children) made one batch whose
#: write, and then its callers' wake-ups, all ran in one pass: nothing else on the node
#: ran meanwhile (0.45 s at 10,000 on SQLite). A batch for a worker thread is not split
#: (it does not hold up the node), nor is a commit alone or a small batch slowed. A
#: thousand workflows stepping at once are one batch: split in two, each half waited
#: through the other's write, and each step cost more (more interpreter work, more of
#: its objects fetched from memory again, and more SQLite pages written: the rows of
#: half as many steps share the B-tree's leaves, one WAL frame each per commit).
INLINE_BATCH_MAX = 1000


class Strategy(enum.Enum):
    """Where a batch is written (see the module docs)."""

    IMMEDIATE = "immediate"
    INLINE = "inline"
    THREAD = "thread"


class CommitRequest(Coroutine[Any, Any, list[Any]]):
    """One ``commit()`` call waiting for its batch.

    Joining a batch that is already forming (the common case, with many workflows
    stepping at once) makes no coroutine of the engine: ``GroupCommit.commit`` returns
    the request itself, and its caller awaits it, parked by one generator
    (:meth:`__await__`). What its waiter holds is what a young garbage collection
    walks, and what is read from memory again when its batch wakes it, a thousand
    other steps later. (A request never awaited commits nothing, as a coroutine never
    awaited; unlike one, it is dropped without Python's "never awaited" warning. As a
    coroutine, it runs once: awaited again, it raises ``RuntimeError``.)"""

    __slots__ = ("balance", "done", "error", "group", "leader", "results", "sub", "task",
                 "tx")

    def __init__(self, tx: Any, task: trio.lowlevel.Task | None,
                 group: GroupCommit | None = None) -> None:
        self.tx = tx
        self.task = task
        self.done = False
        self.leader = False
        self.results: list[Any] | None = None
        self.error: BaseException | None = None
        #: made with the request, dropped by the writer as it wakes the request's task
        #: (see ``GroupCommit._lead``): an empty dict, which the collector counts as it
        #: is made and freed but does not track (an empty list is walked by every
        #: collection while the request waits, and outlives a middle one with a
        #: thousand waiting)
        self.balance: dict[Any, Any] | None = {}
        #: the engine whose batch it joins (``None``: a request a store's test builds)
        self.group = group
        #: :meth:`__await__`'s generator, when trio runs the request as a task's
        #: coroutine (``send``)
        self.sub: Generator[Any, Any, list[Any]] | None = None

    # (KI-protected as ``GroupCommit._commit``: see there)
    @trio.lowlevel.enable_ki_protection
    def __await__(self) -> Generator[Any, Any, list[Any]]:
        """Join the batch forming now and park until the engine wakes it: its results,
        or its error raised; or lead the batch formed while its own was written, if the
        engine made it that batch's leader. (A batch that ended before it first ran: it
        commits as any other, by ``GroupCommit._commit``.)"""
        group = self.group
        assert group is not None
        if self.task is not None:  # (run before: its transaction is written once)
            raise RuntimeError("a store commit was awaited twice: it is a coroutine, "
                               "which runs once (its transaction is committed once)")
        run = _trio_fast.RUN
        self.task = run.task if run is not None else trio.lowlevel.current_task()
        if not group._flushing:
            return (yield from group._commit(self.tx).__await__())
        group._pending.append(self)
        resumed = yield _PARK
        if resumed is not _RESUMED:  # pragma: no cover - only the engine wakes it
            resumed.unwrap()
        if self.done:
            group._released -= 1
            if self.error is None:  # (what _unwrap does, without its call)
                got = self.results
                if got is NONE_RESULT:
                    return [None]
                if got is not None:
                    return got
            return _unwrap(self)
        # made leader of the batch formed while its own was written
        return (yield from group._lead(self, False).__await__())

    # A coroutine for trio too (``nursery.start_soon(store.commit, tx)``): its steps go
    # to the generator of ``__await__``, made at the first.
    def send(self, value: Any) -> Any:
        """A step of :meth:`__await__`'s generator."""
        if self.sub is None:
            self.sub = self.__await__()
        return self.sub.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """Raise in :meth:`__await__`'s generator."""
        if self.sub is None:
            self.sub = self.__await__()
        return self.sub.throw(typ, val, tb)

    def close(self) -> None:
        """Close :meth:`__await__`'s generator, if it was made."""
        if self.sub is not None:
            self.sub.close()


def fail_all(batch: list[CommitRequest], error: BaseException) -> None:
    """Give every request of ``batch`` ``error`` as its outcome (nothing of it was
    committed): what a store's ``write_batch`` does when the whole batch fails."""
    for request in batch:
        request.results = None
        request.error = error


def interrupted(path: str | None, exc: BaseException) -> StoreError:
    """The outcome of each request of a batch whose write ``exc`` interrupted, ``exc``
    being no Exception (a KeyboardInterrupt, a SystemExit): the store's ``write_batch``
    gives it to every request, so that no caller waits on, and raises ``exc`` itself,
    so that it goes on once (from the batch's leader), not swallowed nor raised again
    by every caller."""
    return StoreError(path, f"the write was interrupted ({type(exc).__name__}) before it "
                      "ended: whether it committed is unknown")


def _refuse_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # the commit happens either way: wait for it


# Parking a waiting commit as few objects as possible: with many workflows waiting for
# one batch, everything a waiter holds is walked by every young garbage collection.
# ``trio.lowlevel.wait_task_rescheduled`` makes a coroutine, a generator and a
# ``WaitTaskRescheduled`` (with its ``__dict__``) per call: here it is one generator
# yielding a shared trap (its abort function is always the same), and the engine
# reschedules its waiters with one shared outcome (nothing else reschedules them, and
# a refused abort means trio never does).
_PARK: Any
try:
    from trio._core._traps import WaitTaskRescheduled as _WaitTaskRescheduled

    _PARK = _WaitTaskRescheduled(_refuse_abort)
except (ImportError, TypeError):  # pragma: no cover - another trio version
    _PARK = None
_RESUMED = outcome.Value(None)


if _PARK is not None:

    @types.coroutine
    def _park() -> Generator[Any, Any, None]:
        """Wait until the engine reschedules this task (never cancelled half-way)."""
        resumed = yield _PARK
        if resumed is not _RESUMED:  # pragma: no cover - only the engine reschedules
            resumed.unwrap()
else:  # pragma: no cover - another trio version

    async def _park() -> None:  # type: ignore[misc]
        await trio.lowlevel.wait_task_rescheduled(_refuse_abort)


class GroupCommit:
    """The group-commit engine of one store (see the module docs)."""

    def __init__(
        self,
        write_one: Callable[[Any], list[Any]],
        write_batch: Callable[[list[CommitRequest]], None],
        strategy: Strategy,
        *,
        alone_inline: bool = True,
        retry_for: float = 60.0,
        unusable: Callable[[Busy], BaseException] | None = None,
    ) -> None:
        self._write_one = write_one
        self._write_batch = write_batch
        self.strategy = strategy
        self._alone_inline = alone_inline
        #: how long a busy store is retried before its writes fail
        self.retry_for = retry_for
        self._unusable = unusable or (lambda exc: exc)
        self._pending: list[CommitRequest] = []
        #: a leader is gathering or writing a batch
        self._flushing = False
        #: callers of the last batch that have not run again yet (their next commit
        #: should join a batch rather than write alone ahead of them)
        self._released = 0
        #: commits written alone since the last scheduler pass this engine asked for
        self._alone = 0
        #: commits written alone that went on in a worker thread (slow), not over yet
        self._handed = 0

    @property
    def busy(self) -> bool:
        """True while a batch is forming or being written, or a commit written alone
        goes on in a worker thread."""
        return self._flushing or self._handed > 0

    def commit(self, tx: Any) -> Coroutine[Any, Any, list[Any]]:
        """Commit ``tx`` (sharing the transaction with every commit waiting now);
        returns one result per operation once it is committed.

        (A plain function returning the coroutine that commits: a batch forming now is
        joined by the :class:`CommitRequest` itself, with no coroutine of the engine
        held while it waits; anything else by :meth:`_commit`'s. Either does nothing
        until it is first awaited or sent to, as an ``async def`` function's.)"""
        if self._flushing and _PARK is not None:
            return CommitRequest(tx, None, self)
        return self._commit(tx)

    # Ctrl-C (trio raises KeyboardInterrupt in code that is not KI-protected, at any
    # bytecode) must not strike between a request joining ``_pending`` and its park, nor
    # in the middle of a batch's wake-ups: a waiter never woken cannot be cancelled (it
    # refuses aborts) and would hold up the run's end for good. Protected, the interrupt
    # goes to the main task at its next checkpoint instead.
    # (``CommitRequest.__await__`` is too: it joins a forming batch and parks in one step)
    @trio.lowlevel.enable_ki_protection
    async def _commit(self, tx: Any) -> list[Any]:
        """:meth:`commit`'s coroutine: written alone, or led, or (the batch it saw
        forming ended before it first ran) joined.

        (No local name for the pending list: a waiter's frame holding it would keep
        the whole batch, every caller's request, transaction and results, alive until
        the last of them resumes, and then free it all at once; the garbage collector
        counts allocations minus deallocations, and deallocations in bulk right after
        a collection are not counted, so the next collections come sooner.)"""
        busy = False
        if self.strategy is Strategy.IMMEDIATE or (
                self._alone_inline and not self._pending and not self._flushing
                and not self._released and not runnable_tasks()):
            started = perf_counter() if _observe.timing else 0.0
            try:
                results = self._write_one(tx)  # nobody could join a batch now
            except Busy:
                busy = True  # the lock is taken: wait for it in a thread, not here
            except HandedOver as handed:  # slow: it goes on in a worker thread
                self._handed += 1
                try:
                    handed_results: list[Any] = await handed.wait()
                finally:
                    self._handed -= 1
                if started:  # (the slowest commits: their time is the thread's too)
                    _observe.committed(started, 1)
                return handed_results
            else:
                if started:
                    _observe.committed(started, 1)
                self._alone += 1
                if self._alone >= ALONE_BUDGET:  # a caller committing in a loop lets others run
                    self._alone = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()  # committed: no Cancelled
                return results
        run = _trio_fast.RUN
        request = CommitRequest(tx, run.task if run is not None else trio.lowlevel.current_task())
        self._pending.append(request)
        if self._flushing:
            # follow: park until our batch is written, or until we are made leader
            # (a batch forming as the coroutine first ran: a commit joining one as it is
            # called is the request's own, CommitRequest.__await__, which inlines _unwrap)
            await _park()
            if request.done:
                self._released -= 1
                return _unwrap(request)
        return await self._lead(request, busy, started if busy else 0.0)

    @trio.lowlevel.enable_ki_protection
    async def _lead(self, request: CommitRequest, busy: bool, started: float = 0.0
                    ) -> list[Any]:
        """Write the batch ``request`` leads, and return its results; ``started``: when a
        commit written alone that found the store busy began (its write's time counts
        from there)."""
        self._flushing = True
        batch: list[CommitRequest] | None = None
        try:
            threaded = busy or self.strategy is not Strategy.INLINE
            # no other task was seen runnable at the last two passes of the gathering
            quiet = was_idle = False
            # Two passes at least (three for a batch that may go to a thread): trio runs
            # a pass's tasks in random order and ``runnable_tasks()`` cannot see the
            # rest of the pass under way, so after one pass the tasks released with
            # this one may not have run yet, and a task returning from its commit may
            # need a pass more. A cheap inline commit that misses one costs one more
            # cheap commit; a threaded one tells from its last two passes whether it
            # may be written inline after all (``quiet``), and a miss there is an fsync
            min_passes = 2 if self.strategy is Strategy.INLINE else 3
            if not busy:
                # let every runnable task reach its own commit and join this batch
                for passes in range(1, GATHER_PASSES + 1):
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    idle = not runnable_tasks() and not self._released
                    quiet = idle and was_idle
                    was_idle = idle
                    if passes >= min_passes and idle:
                        break
            pending = self._pending
            if threaded and quiet and self._alone_inline \
                    and len(pending) <= INLINE_BATCH_MAX:
                threaded = False  # nothing could run while it is written: no hop
            if threaded or len(pending) <= INLINE_BATCH_MAX:
                batch, self._pending = pending, []
            else:  # (the rest: the next batch, led by its oldest, see ``finally``)
                batch, self._pending = pending[:INLINE_BATCH_MAX], pending[INLINE_BATCH_MAX:]
            del pending  # (see ``commit``: no local holds the requests while it waits)
            if not started:
                started = perf_counter() if _observe.timing else 0.0
            again = False  # the thread writes a batch whose inline attempt was busy
            if not threaded:
                try:
                    self._write_batch(batch)
                except Busy:  # the lock is taken: wait for it in a thread, not here
                    threaded = again = True
                except HandedOver as handed:  # slow: it goes on in a worker thread
                    await handed.wait()
            if threaded:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._write_until_done, batch, again)
            if started:
                _observe.committed(started, len(batch))
        except BaseException as exc:  # a failed hop, an interrupt (a KeyboardInterrupt)
            if batch is None:
                batch, self._pending = self._pending, []
            if isinstance(exc, Exception):  # (an interrupt goes on once, from here)
                for waiting in batch:
                    if waiting.results is None and waiting.error is None:
                        waiting.error = exc
            raise
        finally:
            assert batch is not None
            reschedule = _trio_fast.reschedule_now()
            for waiting in batch:
                if waiting.results is None and waiting.error is None:
                    waiting.error = RuntimeError("the group commit was interrupted")
                waiting.done = True
                # Trio makes an object to wake a task (its coroutine's bound ``send``),
                # freed when the task runs. The collector starts a young collection when
                # allocations minus deallocations pass its threshold: a thousand wake-ups
                # in a row would set one off at every batch, walking every waiting
                # step's objects. Each wake-up frees the request's balance dict as it
                # makes that object, so the count stays level.
                waiting.balance = None
                if waiting is not request:
                    self._released += 1
                    reschedule(waiting.task, _RESUMED)
            if self._pending:
                # commits that arrived while this batch was written: the oldest leads
                leader = self._pending[0]
                leader.leader = True
                reschedule(leader.task, _RESUMED)
            else:
                self._flushing = False
        return _unwrap(request)

    def _write_until_done(self, batch: list[CommitRequest], again: bool = False) -> None:
        """Worker thread: write ``batch``; while the store is busy, pause (10 ms, then
        twice as long each time, at most 1 s) and try again, for ``retry_for`` seconds.

        Nothing of a busy attempt was committed, whatever outcomes it gave some of its
        requests before the lock stopped it (a request it isolated as failing, say):
        each attempt after the first starts from none (``again``: the first one here
        follows a busy attempt already)."""
        deadline = time.monotonic() + self.retry_for
        pause = 0.01
        while True:
            if again:
                for request in batch:
                    request.results = request.error = None
            try:
                self._write_batch(batch)
                return
            except Busy as exc:
                if time.monotonic() + pause > deadline:
                    fail_all(batch, self._unusable(exc))
                    return
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                again = True


def _unwrap(request: CommitRequest) -> list[Any]:
    if request.error is not None:  # (one error for a batch's every request: a copy each)
        raise raised_again(request.error)
    results = request.results
    assert results is not None
    return [None] if results is NONE_RESULT else results
