"""The API of workflow code: ``from garrison import workflow``.

Thin calls into the calling workflow's runtime: this module defines the
:class:`WorkflowRuntime` interface, and the workflow host (``garrison.hosts.workflow``)
implements it. Everything here is recorded in the workflow's journal, so a replay
after a crash sees the same values::

    from garrison import process, workflow

    async def order_workflow(order: Order) -> str:
        receipt = await workflow.call(charge, order.id, order.total,
                                      retry=RetryPolicy(max_attempts=5))
        await workflow.sleep("1h")                 # durable: survives restarts
        msg = await process.inbox().receive(timeout="2d")
        return receipt if msg and msg.topic == "approve" else "rejected"

Outside a workflow every call raises :class:`~garrison.NotInProcess`.
"""

from __future__ import annotations

import datetime as _dt
import logging as _logging
import math as _math
import re as _re
import uuid as _uuid
from collections.abc import Iterator, MutableMapping
from typing import Any, NoReturn, Protocol

import attrs as _attrs

from ._activity import RetryPolicy
from ._context import activity_owner, current_workflow
from ._duration import parse_duration
from ._errors import NotInProcess
from .actors._values import Pid

__all__ = [
    "WorkflowInfo",
    "WorkflowRuntime",
    "attrs",
    "call",
    "continue_as_new",
    "first",
    "gather",
    "get_state",
    "history_length",
    "history_size",
    "info",
    "logger",
    "now",
    "promise",
    "random",
    "set_state",
    "sleep",
    "sleep_until",
    "start",
    "timer",
    "uuid4",
    "version",
]


@_attrs.frozen
class WorkflowInfo:
    """What ``workflow.info()`` tells about the running workflow."""

    workflow_id: str
    run_id: str
    name: str
    host: str
    attempt: int
    start_time: _dt.datetime


class WorkflowRuntime(Protocol):
    """What a workflow host provides to the code of one workflow; every function of
    this module is one call of it. Recorded operations take the next journal seq: a
    replay returns what the first run recorded."""

    def info(self) -> WorkflowInfo: ...
    async def activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       retry: RetryPolicy | None, timeout: float | None,
                       name: str | None = None) -> Any: ...
    def start_activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       retry: RetryPolicy | None, timeout: float | None) -> Any: ...
    async def sleep(self, seconds: float) -> None: ...
    async def sleep_until(self, deadline: float) -> None: ...
    def now(self) -> _dt.datetime: ...
    def uuid4(self) -> _uuid.UUID: ...
    def random(self) -> float: ...
    def version(self, change_id: str, min_version: int, max_version: int) -> int: ...
    def history_length(self) -> int: ...
    def history_size(self) -> int: ...
    def set_attrs(self, search: dict[str, Any] | None, memo: dict[str, Any] | None) -> None: ...
    def set_state(self, key: str, value: Any) -> None: ...
    def get_state(self, key: str, default: Any) -> Any: ...
    def promise(self, name: str) -> Any: ...
    def timer(self, seconds: float) -> Any: ...
    async def first(self, awaitables: tuple[Any, ...]) -> Any: ...
    async def gather(self, awaitables: tuple[Any, ...]) -> list[Any]: ...
    def continue_as_new(self, args: tuple[Any, ...]) -> NoReturn: ...
    def is_replaying(self) -> bool: ...


class WorkflowLogger(_logging.LoggerAdapter[_logging.Logger]):
    """``workflow.logger``: log from workflow code without repeating yourself.

    A workflow's code runs again from the top after a restart (and in
    ``garrison workflows replay``): records it emits while it replays recorded history
    are dropped (they were logged the first time), so a line is logged once, where a
    ``print`` would repeat. Every record carries the fields ``workflow_id``, ``run_id``
    and ``pid`` (``garrison run --log-format json`` shows them), merged with your own
    ``extra=`` (a field of yours named as one of those, or as an attribute of every log
    record, ``message``, ``lineno``, ..., is kept beside it as ``extra_NAME``). Inside
    an activity (plain code, never replayed) it logs with the ``workflow_id`` of its
    workflow; outside any workflow it is a plain logger.

    >>> workflow.logger.info("order %s charged", order.id)   # doctest: +SKIP

    The records go to the standard logger ``garrison.workflow.user``.
    """

    def isEnabledFor(self, level: int) -> bool:
        rt = current_workflow()
        if rt is not None and rt.is_replaying():
            return False
        return self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]
                ) -> tuple[Any, MutableMapping[str, Any]]:
        rt = current_workflow()
        fields: dict[str, Any]
        if rt is not None:
            meta = rt.info()
            fields = {"workflow_id": meta.workflow_id, "run_id": meta.run_id,
                      "pid": str(Pid(meta.host, meta.workflow_id))}
        else:
            owner = activity_owner()
            fields = {} if owner is None else {"workflow_id": owner}
        extra = kwargs.get("extra")
        if extra:  # a field a record has already (the logging module would raise), or
            # one of the workflow's: kept beside it as extra_NAME
            fields.update({f"extra_{key}" if key in fields or key in _RECORD_ATTRIBUTES
                           else key: value for key, value in extra.items()})
        kwargs["extra"] = fields
        return msg, kwargs


#: the attributes of every log record (``extra=`` may not name one: ``KeyError``)
_RECORD_ATTRIBUTES = frozenset(vars(_logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime"}


#: the logger of workflow code (see :class:`WorkflowLogger`)
logger = WorkflowLogger(_logging.getLogger("garrison.workflow.user"))


def _require(what: str) -> WorkflowRuntime:
    """The calling workflow's runtime, or ``NotInProcess`` explaining ``what`` needs one."""
    rt = current_workflow()
    if rt is not None:
        return rt
    owner = activity_owner()
    if owner is not None:
        raise NotInProcess(f"{what} cannot be used inside an activity of workflow {owner!r}: "
                           "activities are plain code (only the workflow function itself "
                           "makes durable calls)")
    raise NotInProcess(f"{what} must run inside a workflow (spawn the function with "
                       "node.start_workflow or process.spawn(..., host='workflows'))")


async def call(fn: Any, *args: Any, retry: RetryPolicy | None = None, timeout: Any = None,
               **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` as an activity: journaled, retried by ``retry``
    (default ``RetryPolicy()``), each attempt limited to ``timeout``.

    Its result (or final error) is recorded once and replayed, never re-executed
    after it was recorded. A final failure raises :class:`~garrison.ActivityError`
    whose ``str()`` is ``TypeName: message`` of the activity's own exception::

        try:
            await workflow.call(charge, order_id, retry=RetryPolicy(max_attempts=2))
        except garrison.ActivityError as exc:
            await workflow.call(release, order_id)     # compensate
    """
    wf = _require("workflow.call()")
    seconds = None if timeout is None else parse_duration(timeout, what="activity timeout")
    return await wf.activity(fn, args, kwargs, retry=retry, timeout=seconds)


async def sleep(duration: Any) -> None:
    """Sleep durably: the deadline is journaled when the sleep starts, so after a
    restart only the remaining time is slept.

    >>> await workflow.sleep("2d")      # doctest: +SKIP
    """
    wf = _require("workflow.sleep()")
    await wf.sleep(parse_duration(duration, what="sleep duration"))


async def sleep_until(when: _dt.datetime) -> None:
    """Sleep durably until the aware datetime ``when`` (at once if it is past).

    Anything but a ``datetime`` (a ``date``, a string, a number) is a ``TypeError``; a
    naive one, or one whose ``tzinfo`` gives no UTC offset (naive to Python too), a
    ``ValueError``."""
    wf = _require("workflow.sleep_until()")
    if not isinstance(when, _dt.datetime):
        raise TypeError(f"sleep_until() needs an aware datetime, got "
                        f"{type(when).__name__}: {when!r}")
    if when.utcoffset() is None:
        naive = "" if when.tzinfo is None else \
            f" (its tzinfo {when.tzinfo!r} gives no UTC offset: naive to Python)"
        raise ValueError(f"sleep_until() needs an aware datetime, got {when!r}{naive}")
    await wf.sleep_until(when.timestamp())


def now() -> _dt.datetime:
    """The current time as an aware UTC datetime, recorded (a replay sees the same)."""
    return _require("workflow.now()").now()


def uuid4() -> _uuid.UUID:
    """A random UUID, recorded (a replay sees the same)."""
    return _require("workflow.uuid4()").uuid4()


def random() -> float:
    """A random float in [0, 1), recorded (a replay sees the same)."""
    return _require("workflow.random()").random()


def info() -> WorkflowInfo:
    """The running workflow's id, run id, name, host, attempt and start time."""
    return _require("workflow.info()").info()


def version(change_id: str, min_version: int, max_version: int) -> int:
    """Temporal-style patching: new executions get ``max_version``; replays get the
    version they recorded. Runs recorded before this call existed get a fixed default,
    ``1`` (``min_version`` when that is below 1, e.g. ``0`` from ``version(id, 0, 1)``),
    never recorded (the code without the call still replays them). A recorded version,
    or that default, outside ``[min, max]`` is a ``NonDeterminismError``: the workflow
    blocks (an old run on code that dropped its path does not take the new one).
    The version is fixed per change id for the run: the first call decides it, later
    calls with the same change id return it (one whose range leaves it out is a
    ``NonDeterminismError``); a new run after ``continue_as_new`` decides again.

    >>> if workflow.version("payment-v2", 1, 2) == 1:   # doctest: +SKIP
    ...     await workflow.call(old_payment, order)
    """
    wf = _require("workflow.version()")
    if not isinstance(change_id, str) or not change_id:
        raise TypeError(f"workflow.version(): change_id must be a non-empty string, got "
                        f"{change_id!r}")
    for what, v in (("min_version", min_version), ("max_version", max_version)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"workflow.version({change_id!r}): {what} must be an int, got {v!r}")
    if min_version > max_version:
        raise ValueError(f"workflow.version({change_id!r}, {min_version}, {max_version}): "
                         "min_version is greater than max_version")
    return wf.version(change_id, min_version, max_version)


def history_length() -> int:
    """How many records the journal holds so far (the same on a replay). A run that
    passes 10,000 records logs a warning suggesting :func:`continue_as_new`::

        if workflow.history_length() > 5_000:
            workflow.continue_as_new(state)
    """
    return _require("workflow.history_length()").history_length()


def history_size() -> int:
    """The size of the journal's recorded outcomes so far (characters of JSON; bytes for
    ASCII), but for the outcomes of activities started with :func:`start` (recorded
    when they end, at no fixed point of the code). Deterministic: a replay sees the
    same value at the same point::

        if workflow.history_length() > 5_000 or workflow.history_size() > 2_000_000:
            workflow.continue_as_new(cursor)
    """
    wf = _require("workflow.history_size()")
    return wf.history_size()


def attrs(search: dict[str, Any] | None = None, memo: dict[str, Any] | None = None) -> None:
    """Merge search attributes and memo (``node.workflows(search=...)`` filters on
    search attributes).

    >>> workflow.attrs(search={"status": "shipping"}, memo={"note": "priority"})  # doctest: +SKIP
    """
    wf = _require("workflow.attrs()")
    wf.set_attrs(check_attributes(search, "search"), check_attributes(memo, "memo"))


def check_attributes(values: Any, what: str) -> dict[str, Any] | None:
    """``values`` if it can be stored as search attributes or memo: a dict with string
    keys (no ``"``; a memo key not starting ``garrison.``) and JSON values without NaN or
    infinity (search attributes: and no
    surrogate character, see :func:`_check_surrogates`; no NUL character, checked where
    they are written); else an error naming it."""
    if values is None:
        return None
    if not isinstance(values, dict):
        raise TypeError(f"workflow.attrs({what}=...) takes a dict of attributes, got "
                        f"{type(values).__name__}: {values!r}")
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"workflow.attrs({what}=...): a key must be a non-empty string, "
                            f"got {key!r}")
        if '"' in key:
            raise ValueError(f"workflow.attrs({what}=...): key {key!r} contains a '\"', "
                             "which search attribute keys cannot hold")
        _check_finite(value, f"{what} attribute {key!r}")
        if what == "memo" and key.startswith("garrison."):
            # (its supervisor, its queue priority: a node reads them back, and a user's
            # value, or its removal by None, would change what the node does)
            raise ValueError(f"workflow.attrs(memo=...): key {key!r} is garrison's (memo "
                             "keys starting with 'garrison.' are kept by garrison: "
                             "'garrison.supervisor', 'garrison.priority'); use another name")
        if what == "search":
            _check_surrogates(key, f"workflow.attrs(search=...): key {key!r}")
            _check_surrogates(value, f"workflow.attrs(search=...): attribute {key!r}")
    return values


_SURROGATE = _re.compile("[\ud800-\udfff]")


def _check_surrogates(value: Any, what: str) -> None:
    """``ValueError`` if a string of ``value`` (a search attribute, at any depth, keys
    too) holds a surrogate character: a lone one (a name decoded with
    ``surrogateescape``, as ``os.listdir`` gives a file name that is not UTF-8) has no
    place in PostgreSQL's ``jsonb``, which a search attribute is, and both stores
    refuse it alike, at the call."""
    for item, _where in _walk(value, keys=True):
        if isinstance(item, str) and _SURROGATE.search(item):
            raise ValueError(f"{what} holds a surrogate character ({item!r}), which a "
                             "search attribute cannot hold (not UTF-8 text: decode it with "
                             "errors='replace', or keep it in memo)")


def _check_finite(value: Any, what: str) -> None:
    for item, where in _walk(value):
        if isinstance(item, float) and not _math.isfinite(item):
            raise ValueError(f"{what}{where} is {item!r}: NaN and infinity are not JSON "
                             "values")


def _walk(value: Any, keys: bool = False) -> Iterator[tuple[Any, str]]:
    """``value`` and what it holds at any depth (dicts' keys too, with ``keys``), each
    with where it is (``[0]['a']``), in order. A walk of its own, not a recursion: a
    value nested deeper than Python's recursion limit is the converter's to name (a
    ``PayloadError`` as the attributes are stored), not a ``RecursionError`` here."""
    todo: list[tuple[Any, str]] = [(value, "")]
    while todo:
        item, where = todo.pop()
        yield item, where
        if isinstance(item, dict):
            for k, v in reversed(item.items()):
                todo.append((v, f"{where}[{k!r}]"))
                if keys:
                    todo.append((k, where))
        elif isinstance(item, list | tuple):
            todo.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))


def set_state(key: str, value: Any) -> None:
    """Set a state value, readable from outside with ``handle.state(key)`` (committed
    before the workflow next waits, so visible while it waits)::

        workflow.set_state("status", "waiting for review")
        # outside: node.workflow(wid).state("status") == "waiting for review"
    """
    wf = _require("workflow.set_state()")
    wf.set_state(key, value)


def get_state(key: str, default: Any = None) -> Any:
    """A state value set by this workflow (``default`` if unset). A replay sees the
    value it saw the first time at the same point (a run starts empty, or with the
    state a ``continue_as_new`` carried over). A list or dict is a copy: change the
    state with :func:`set_state`, not by editing what this returns::

        count = workflow.get_state("count", 0)
        workflow.set_state("count", count + 1)
    """
    return _require("workflow.get_state()").get_state(key, default)


def promise(name: str) -> Any:
    """A durable promise, resolved from outside with
    ``await node.workflow(id).promise(name).resolve(value)`` (or ``.reject(message)``).

    ``await p`` returns the value or raises :class:`~garrison.PromiseRejected`;
    it may be raced with timers and activities in :func:`first`::

        approval = workflow.promise("approval")
        decision = await approval
    """
    wf = _require("workflow.promise()")
    return wf.promise(name)


def timer(duration: Any) -> Any:
    """A durable timer: its deadline is journaled now; ``await`` it, or race it with
    :func:`first` (``timer("1h")`` in ``first(promise, timer)`` is a deadline)."""
    wf = _require("workflow.timer()")
    return wf.timer(parse_duration(duration, what="timer duration"))


def start(fn: Any, *args: Any, retry: RetryPolicy | None = None, timeout: Any = None,
          **kwargs: Any) -> Any:
    """Start an activity without waiting for it; returns a handle to ``await`` (or to
    pass to :func:`first` / :func:`gather`). Journaled like :func:`call`::

        a = workflow.start(fetch, "a")
        b = workflow.start(fetch, "b")
        ra, rb = await workflow.gather(a, b)
    """
    wf = _require("workflow.start()")
    seconds = None if timeout is None else parse_duration(timeout, what="activity timeout")
    return wf.start_activity(fn, args, kwargs, retry=retry, timeout=seconds)


async def first(*awaitables: Any) -> Any:
    """The awaitable (promise, timer, started activity, inbox receive) that finished
    first, decided durably: a replay returns the same one. Compare with ``is``; ``await``
    it for its value. Ties go to the earliest argument. A receive that wins is consumed
    in the same transaction that records the decision; one that loses stays unconsumed
    (the message waits for a later receive)::

        deadline = workflow.timer("2d")
        done = await workflow.first(approval, deadline)
        if done is deadline: ...

        verified = process.listen("verified").receive()   # no timeout: race a timer
        if await workflow.first(verified, workflow.timer("1d")) is verified:
            msg = await verified
    """
    wf = _require("workflow.first()")
    if not awaitables:
        raise ValueError("workflow.first() needs at least one awaitable (with none it "
                         "would wait forever)")
    return await wf.first(awaitables)


async def gather(*awaitables: Any) -> list[Any]:
    """All their results, in argument order (the error of the first failing one, in
    argument order, is raised). Takes promises, timers (``None``), started activities
    and inbox receives::

        a, b = workflow.start(fetch, "a"), workflow.start(fetch, "b")
        ra, rb = await workflow.gather(a, b)
    """
    return await _require("workflow.gather()").gather(awaitables)


def continue_as_new(*args: Any) -> NoReturn:
    """End this run (this call never returns) and start a fresh run of the same
    workflow id with an empty journal and ``args``. Its inbox, state and promises are
    kept (the journal's seq 0 records the state the new run starts with). Use it to keep
    the journal of a long-lived workflow short::

        async def poller(cursor: int) -> None:
            for _ in range(1000):
                cursor = await fetch_page(cursor)
            workflow.continue_as_new(cursor)

    Arguments the workflow cannot take raise here, as at ``start_workflow``, and no
    new run starts: ``TypeError`` for too few or too many, :class:`~garrison.PayloadError`
    for a value that cannot become its parameter's annotated type.
    """
    wf = _require("workflow.continue_as_new()")
    wf.continue_as_new(args)
