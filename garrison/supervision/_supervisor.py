"""Supervisors: OTP restart strategies for garrison processes.

A :class:`Supervisor` is an ordinary process target. It starts its children
(described by :class:`ChildSpec` values) one at a time in order, watches them,
restarts them according to their restart type and its strategy, and gives up
(stops everything and fails) when children need more than ``max_restarts``
restarts within ``within`` seconds::

    from garrison.supervision import ChildSpec, Supervisor

    sup = Supervisor(
        [ChildSpec("db", db_pool), ChildSpec("web", web_server, args=(8080,))],
        strategy="rest_for_one", max_restarts=3, within="5s",
    )
    pid = await node.spawn(sup)

How it watches its children: the supervisor *monitors* every child (it spawns
them with ``spawn_monitored``) and reads their ``EXIT`` events from
``process.events()``. It does not link to them and does not trap links, so a
failure of a process linked to the supervisor (say, its own parent) ends the
supervisor like any process -- and then, as on every way out, its cleanup
stops its children in reverse start order. The cleanup runs in a shielded
cancel scope, so it also happens when the supervisor is terminated.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import outcome
import trio

from .. import process
from .._duration import LONGEST_WAIT, parse_duration
from .._errors import NoSuchEntry, ProcessError
from .._targets import check_entry, check_target
from ..actors._runtime import current_runtime
from ..actors._values import ErrorInfo, Event, EventKind, Pid
from ..hosts._kernel import supervisor_stop, supervisor_stop_reason

if TYPE_CHECKING:
    from ..hosts._kernel import NodeContext

__all__ = [
    "BRUTAL_KILL",
    "INFINITY",
    "RESTART_TYPES",
    "STRATEGIES",
    "ChildSpec",
    "Supervisor",
    "SupervisorError",
    "SupervisorGaveUp",
]

log = logging.getLogger("garrison.supervision")

#: the restart types of a child, as in OTP
RESTART_TYPES = ("permanent", "transient", "temporary")
#: the restart strategies of a supervisor, as in OTP
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
#: ``ChildSpec(shutdown=BRUTAL_KILL)``: terminate the child at once, no ``CANCEL`` first
BRUTAL_KILL = "brutal_kill"
#: ``ChildSpec(shutdown=INFINITY)``: wait for the child to stop after ``CANCEL``, forever
INFINITY = "infinity"
#: why a longer one is refused
_TOO_LONG = ("a restart that waits more than 100 years neither restarts nor gives up; "
             "give a shorter delay, or max_restarts=0 to give up at once")


def _check_backoff_function(backoff: Any) -> None:
    """``TypeError`` for a ``backoff`` callable that can never give a delay: an async
    function (its coroutine is no duration) or one that takes no attempt number; found
    when the supervisor is made, not at its first restart, which it would fail."""
    name = getattr(backoff, "__qualname__", None) or repr(backoff)
    expected = (f"backoff={name}: expected a plain function of the restart's attempt "
                "number returning a duration")
    if inspect.iscoroutinefunction(backoff):
        raise TypeError(f"{expected}; an async function's coroutine is no duration")
    try:
        inspect.signature(backoff).bind(1)
    except TypeError:
        raise TypeError(f"{expected}; it takes no attempt number (backoff(1) would "
                        "fail)") from None
    except ValueError:  # (no signature to read: a builtin; its call will say)
        pass


#: why an infinite backoff is refused
_FOREVER = ("a restart that waits for ever neither restarts nor gives up; give a finite "
            "duration (or restart='temporary': no restart)")
#: in a supervisor's final cleanup, how much longer than its ``shutdown`` a child
#: may take to end after it was terminated before the supervisor moves on
CLEANUP_GRACE = 5.0
#: scheduler passes a dynamic operation waits for a supervisor spawned just before it
_FIRST_RUN_PASSES = 2


async def wait_ending_with(node: NodeContext, dead: Pid, *, ended: float, bound: float,
                           name: str, who: str, logger: logging.Logger,
                           extra: Mapping[str, Any] | None = None) -> None:
    """Wait until the processes of ``node`` that the end of ``dead`` is ending through
    their links to it (its ``spawn_linked`` helpers) have ended, at most ``bound``
    seconds after trio time ``ended``, when ``dead`` ended. One whose cleanup awaits
    (shielded: closing a socket) would outlive a restart of ``dead`` and clash with
    the new process's (a name it still holds), failing it at once, again and again
    until its supervisor (or the service manager) gives up. Past the bound, ``logger``
    says which still run, how long after ``dead`` ended (the bound, or more if the
    wait began later), and that ``who`` goes on (``name``: the child or service, first
    in the line). Not at a node's stop, which ends them itself: at once."""
    if node.stopping:
        return
    ending = node.ending_with(dead)
    late = trio.current_time() - ended
    with trio.move_on_at(ended + bound):
        for other in ending:
            await node.hosts[other.host].wait_exited(other)
        return
    still = [pid for pid in ending if node.hosts[pid.host].is_alive(pid)]
    if still:
        logger.warning("%s: %s (linked to its process %s, ending with it) still run(s) %s "
                       "after it ended; %s goes on", name, ", ".join(map(str, still)), dead,
                       _fmt_seconds(max(bound, round(late, 3))), who, extra=extra)


# ----------------------------------------------------------------------------- errors
class SupervisorError(ProcessError):
    """A supervisor failed: a child could not be started, or it gave up.

    A supervisor raises it as the error it exits with, so its own supervisor or
    monitor sees an ``EXIT`` whose ``error.type`` names the subclass.
    """

    __module__ = "garrison.supervision"


class SupervisorGaveUp(SupervisorError):
    """Raised (as its exit error) by a supervisor whose children needed more than
    ``max_restarts`` restarts within ``within`` seconds.

    The message names the supervisor, the child whose exit was one too many, the
    count, the window and that child's error, e.g.::

        supervisor 'app' (processes/ab12.7) gave up: child 'worker' needed restart 4
        within 5s (max_restarts=3); last error: ValueError: boom

    ``.child_id``, ``.restarts``, ``.within`` (seconds) and ``.error`` (the child's
    :class:`~garrison.ErrorInfo`, ``None`` for a normal exit) hold the parts.
    """

    __module__ = "garrison.supervision"

    def __init__(self, message: str, *, pid: Pid | None, child_id: str, restarts: int,
                 within: float, error: ErrorInfo | None) -> None:
        super().__init__(message, pid=pid, error=error)
        self.child_id = child_id
        self.restarts = restarts
        self.within = within


# ----------------------------------------------------------------------------- intensity
def add_restart(stamps: list[float], now: float, within: float, max_restarts: int
                ) -> tuple[list[float], int, bool]:
    """OTP's restart intensity as a pure function (``supervisor:add_restart/1``).

    ``stamps`` are the times of earlier restarts; a restart at ``now`` keeps those of the
    last ``within`` seconds (a stamp exactly ``within`` old has left the window) plus
    ``now``. Returns ``(stamps, attempt, allowed)``: ``attempt`` is this restart's number
    within the window, ``allowed`` is false once it exceeds ``max_restarts``.

    >>> add_restart([0.0, 1.0], 5.0, 5.0, 3)
    ([1.0, 5.0], 2, True)
    """
    kept = [t for t in stamps if now - t < within]
    kept.append(now)
    return kept, len(kept), len(kept) <= max_restarts


# ----------------------------------------------------------------------------- ChildSpec
def _check_id(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"invalid child id {value!r}: expected a non-empty string")


def _check_target(inst: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, str):
        if not value:
            raise ValueError(f"child {inst.id!r}: target must not be an empty string")
        return  # a config entry id, resolved when the child starts
    try:
        check_target(value)
    except TypeError as exc:
        raise TypeError(f"child {inst.id!r}: {exc}") from None


def _check_restart(inst: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in RESTART_TYPES:
        raise ValueError(
            f"child {inst.id!r}: invalid restart {value!r}: expected 'permanent', "
            "'transient' or 'temporary'"
        )


def _shutdown(value: object, inst: Any) -> float | str:
    if value == BRUTAL_KILL:
        return BRUTAL_KILL
    if value == INFINITY:
        return math.inf
    try:
        seconds = parse_duration(value, what="shutdown")
    except ValueError as exc:  # (named by its child, as ChildSpec's other checks are)
        more = "" if not isinstance(value, str) else (
            f"; or {BRUTAL_KILL!r} (terminate at once) or {INFINITY!r} (wait for it as long "
            "as it takes)")
        raise ValueError(f"child {inst.id!r}: {exc}{more}") from None
    # (inf is how INFINITY is kept: a spec made again from its fields takes it back)
    if LONGEST_WAIT < seconds < math.inf:
        raise ValueError(f"child {inst.id!r}: invalid shutdown {value!r}: a stop that waits "
                         "more than 100 years may never end; give a shorter duration, or "
                         f"{INFINITY!r} to wait for it as long as it takes")
    return seconds


def _kwargs(value: Mapping[str, Any] | None, inst: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"child {inst.id!r}: kwargs must be a mapping of keyword arguments "
                        f"(names to values), got {type(value).__name__}: {value!r}")
    return dict(value) if value else None


def _args(value: Any, inst: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise TypeError(f"child {inst.id!r}: args must be a tuple (or list) of positional "
                        f"arguments, got {type(value).__name__}: {value!r}"
                        + (f" (one argument: args=({value!r},))"
                           if isinstance(value, str | bytes) else ""))
    return tuple(value)


def _check_host(inst: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"child {inst.id!r}: invalid host {value!r}: expected a host name")


def _check_label(inst: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"child {inst.id!r}: invalid label {value!r}: expected a non-empty string")


@attrs.frozen
class ChildSpec:
    """How a supervisor starts, restarts and stops one child.

    - ``id``: the child's name within its supervisor (unique there).
    - ``target``, ``args``, ``kwargs``: the child runs ``target(*args, **kwargs)``;
      ``target`` is an async function, an object with an async ``__call__`` (such as
      another :class:`Supervisor`) or a config entry id like ``"app:handler"``.
    - ``restart``: ``"permanent"`` (always restarted), ``"transient"`` (restarted only
      after a failure; a normal return ends it for good) or ``"temporary"`` (never
      restarted; its spec is dropped once it ends, also when a group strategy stopped it).
    - ``shutdown``: how long the child may take to stop after its ``CANCEL`` event
      before it is terminated -- a duration (stored as seconds), ``"brutal_kill"``
      (terminate at once) or ``"infinity"`` (wait as long as it takes; stored as
      ``math.inf``; sensible for a nested supervisor).
    - ``host``: the host to run on; ``None`` is the supervisor's own host.
    - ``label``: the name log lines use for the child (default: ``id``); the
      config-driven services layer passes the service id here.

    >>> ChildSpec("worker", worker, args=(1,), restart="transient", shutdown="250ms")
    ChildSpec(id='worker', target=<function worker ...>, args=(1,), kwargs=None,
              restart='transient', shutdown=0.25, host=None, label=None)
    >>> ChildSpec("worker", worker, restart="always")
    Traceback (most recent call last):
    ValueError: child 'worker': invalid restart 'always': expected 'permanent', ...
    """

    id: str = attrs.field(validator=_check_id)
    target: Any = attrs.field(validator=_check_target)
    args: tuple[Any, ...] = attrs.field(
        default=(), converter=attrs.Converter(_args, takes_self=True))  # type: ignore[misc]
    kwargs: dict[str, Any] | None = attrs.field(
        default=None, converter=attrs.Converter(_kwargs, takes_self=True))  # type: ignore[misc]
    restart: str = attrs.field(default="permanent", validator=_check_restart)
    shutdown: float | str = attrs.field(
        default="5s", converter=attrs.Converter(_shutdown, takes_self=True))  # type: ignore[misc]
    host: str | None = attrs.field(default=None, validator=_check_host)
    label: str | None = attrs.field(default=None, validator=_check_label)

    @property
    def name(self) -> str:
        """The name used in log lines: ``label`` if set, else ``id``."""
        return self.label or self.id


# ----------------------------------------------------------------------------- internals
@attrs.define(eq=False)
class _Child:
    """A child as the running supervisor tracks it."""

    spec: ChildSpec
    pid: Pid | None = None
    #: trio time at which a restart is due (a restart waiting for its backoff), or None
    pending: float | None = None
    #: the ``start_child`` or ``restart_child`` call that waits for it to start with
    #: the children before it, which wait for their restart (see ``_behind_restart``)
    caller: _Request | None = None

    @property
    def active(self) -> bool:
        """Running, or waiting to be restarted."""
        return self.pid is not None or self.pending is not None


#: what ``_do`` returns for a call it answers later (``_Child.caller``)
_LATER: Any = object()


@attrs.define(eq=False)
class _Request:
    """A call from ``start_child`` & co. into the running supervisor's loop."""

    op: str
    arg: Any
    done: trio.Event = attrs.Factory(trio.Event)
    result: outcome.Outcome[Any] | None = None

    def finish(self, result: outcome.Outcome[Any]) -> None:
        if self.result is None:
            self.result = result
            self.done.set()


class _ChildMain:
    """The target a supervisor spawns on a process host: it tells the supervisor
    that the child runs (then the supervisor starts the next one) and runs the
    child's own target. A nested :class:`Supervisor` tells it only once its own
    children all run, as an OTP supervisor's ``init`` does."""

    __hash__ = None  # type: ignore[assignment]  # keeps it out of the node's target cache

    def __init__(self, fn: Any, started: trio.Event, label: str, child_id: str) -> None:
        self._fn = fn
        self._started = started
        self._child_id = child_id
        #: why the child did not start: its target could not be called with its
        #: arguments, or (a nested supervisor) its children did not all run
        self.failure: BaseException | None = None
        self.__qualname__ = label  # the process label in the process host's logs

    def _signal(self, failure: BaseException | None) -> None:
        if not self._started.is_set():
            self.failure = failure
            self._started.set()

    async def __call__(self, *args: Any) -> Any:
        fn = self._fn
        if isinstance(fn, Supervisor) and not args:
            if fn._pid is not None:  # (one instance as two children: a failed start)
                self._signal(RuntimeError(
                    f"child {self._child_id!r}: its Supervisor already runs as process "
                    f"{fn._pid}; a Supervisor instance runs in one process: give each "
                    "child a Supervisor(...) of its own"))
                return None
            return await fn._run(self._signal)
        # the call binds the arguments (no code of the child runs before its first
        # await): a call that fails, or gives no awaitable, is a failed start -- the
        # supervisor raises it (start_child, its own start) -- not a crash to restart
        try:
            running = fn(*args)
        except TypeError as exc:
            self._signal(TypeError(f"child {self._child_id!r}: cannot call its target "
                                   f"{_target_label(fn)} with args={args!r}: {exc}"))
            return None
        except Exception as exc:
            self._signal(exc)
            return None
        if not inspect.isawaitable(running):
            self._signal(TypeError(
                f"child {self._child_id!r}: its target {_target_label(fn)} returned "
                f"{type(running).__name__}, not an awaitable: a child's target must be an "
                "async function (async def) or an object with an async __call__"))
            return None
        self._started.set()
        return await running


def spawned(supervisor: Supervisor, pid: Pid) -> None:
    """The node spawned the process ``pid`` to run ``supervisor`` (called at the spawn,
    in spawn order): of two spawns of one instance, the first one's process runs it and
    the second one's fails, whichever of them trio runs first."""
    supervisor._spawns.append(pid)


def _cannot_start(spec: ChildSpec, exc: KeyError | TypeError) -> TypeError | NoSuchEntry:
    """The error naming the child for a target it cannot start with: a config entry id
    that names no entry (``NoSuchEntry`` again), or no runnable one (the config's
    ``KeyError``), or a workflow that cannot take its args (``TypeError``)."""
    if isinstance(exc, NoSuchEntry):
        return NoSuchEntry(exc.entry_id, exc.detail, prefix=f"child {spec.id!r}: ")
    said = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return TypeError(f"child {spec.id!r}: {said}")


def _target_label(fn: Any) -> str:
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    name = getattr(inner, "__qualname__", None) or type(inner).__name__
    module = getattr(inner, "__module__", None)
    label = f"{module}:{name}" if module else name
    if isinstance(fn, functools.partial) and fn.keywords:
        label += f" (kwargs={fn.keywords!r})"
    return label


async def _started_or_exited(started: Callable[[], Awaitable[None]], node: Any, pid: Pid,
                             who: str) -> None:
    """Wait until ``started()`` returns (the child signals that it runs; a workflow
    child has left its host's queue), or until the child has ended (a child killed
    before its code ever ran never signals; its EXIT is then handled as usual). A wait
    past :data:`START_WARNING` is said once (``who``: the child), as the wait goes on:
    a host whose ``workers`` are all taken, or a workflow host whose queue's slots are,
    holds it for as long as they run."""
    if node is None:
        await started()
        return
    async with trio.open_nursery() as nursery:

        async def on_exit() -> None:
            await node.hosts[pid.host].wait_exited(pid)
            nursery.cancel_scope.cancel()

        nursery.start_soon(on_exit)
        with trio.move_on_after(START_WARNING):
            await started()
            nursery.cancel_scope.cancel()
            return
        host = node.hosts.get(pid.host)
        workers = getattr(host, "workers", None)
        queued = getattr(host, "waits_in_queue", None)
        limits = queued(pid) if queued is not None else None
        log.warning("child %s (%s) has not started %gs after its spawn%s; the supervisor waits "
                    "for it (and starts nothing after it meanwhile)", who, pid, START_WARNING,
                    f": its host {pid.host!r} runs at most {workers} process(es) at once, "
                    "and they may all be taken" if workers else
                    f": it waits in the queue of its host {pid.host!r}, whose limits "
                    f"({limits}) are all taken" if limits is not None else "")
        await started()
        nursery.cancel_scope.cancel()


#: seconds a supervisor waits for a child to run before it says so (it waits on)
START_WARNING = 5.0


def _fmt_seconds(seconds: float) -> str:
    if math.isinf(seconds):
        return "ever"
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _describe_exit(error: ErrorInfo | None) -> str:
    return str(error) if error is not None else "normal exit"


_Item = Event | _Request


# ----------------------------------------------------------------------------- Supervisor
class Supervisor:
    """An OTP-style supervisor; an instance is a process target.

    >>> sup = Supervisor([ChildSpec("a", worker_a), ChildSpec("b", worker_b)],
    ...                  strategy="one_for_all", max_restarts=3, within="5s")
    >>> pid = await node.spawn(sup)
    >>> await sup.start_child(ChildSpec("c", worker_c))  # waits for it to run
    Pid(host='processes', id='...')
    >>> sup.which_children()
    [('a', Pid(...), 'permanent'), ('b', Pid(...), 'permanent'), ('c', Pid(...), 'permanent')]

    Semantics (OTP's):

    - **Start.** Children start one at a time in spec order; each runs (its code has
      reached its first ``await``; a nested supervisor has started all its own
      children) before the next one starts.
    - **Restart types.** ``permanent`` children are always restarted, ``transient``
      ones only after a failure (an exit with an error, including being terminated),
      ``temporary`` ones never; a temporary child's spec is dropped once it ends.
    - **Strategies.** ``one_for_one`` restarts the child alone. ``one_for_all`` stops
      every other running child (reverse start order) and restarts them all in start
      order. ``rest_for_one`` does that for the children started after the failed
      one. Children stopped by ``terminate_child`` or finished (transient, normal exit)
      are not part of a group restart (unlike OTP's, which starts them again with the
      group); stopped temporary children are dropped.
    - **Intensity.** Every restart decision (a group restart counts once) is stamped
      with ``trio.current_time()``. If the stamps of the last ``within`` seconds
      (a stamp exactly ``within`` old has left the window) number more than
      ``max_restarts``, the supervisor gives up: it logs one line, stops its children
      in reverse start order and exits with :class:`SupervisorGaveUp`. So exactly
      ``max_restarts`` restarts within the window are survived; ``max_restarts=0``
      gives up on the first restartable exit.
    - **Backoff.** ``backoff=None`` restarts at once. A duration (``"1s"``, ``0.5``)
      waits that long before each restart; a callable ``backoff(attempt) -> duration``
      gets the restart's number in the current crash loop -- e.g.
      ``lambda n: min(2 ** n, 30)``: 1 for the first, and 1 again only once the
      restarted children have run for ``within`` without a failure needing a restart.
      Delays that space restarts at least ``within / max_restarts`` apart keep the
      window from filling: the loop is slowed, and the supervisor never gives up.
      Group siblings are stopped at once and restarted together after the delay.
      While a restart waits, the supervisor keeps serving
      (``CANCEL``, other exits, dynamic-child calls); ``which_children`` shows the
      waiting child with pid ``None``. The intensity stamp is taken when the exit is
      handled, not when the delayed restart happens.
    - **Stopping a child.** ``process.cancel(pid, timeout=spec.shutdown)``: the child
      gets ``CANCEL``, and is terminated if it still runs after ``shutdown``
      (``"brutal_kill"``: terminated at once). The processes ending with a child
      through their links (its ``spawn_linked`` helpers) are waited for before it is
      restarted or ``terminate_child`` returns: at most ``shutdown`` + ``CLEANUP_GRACE``,
      or until the supervisor's ``CANCEL``; not at the supervisor's own stop.
    - **Stopping the supervisor.** On ``CANCEL`` it stops its children in reverse
      start order and returns ``None``. Terminated or failed through a link, it
      does the same in a shielded cancel scope (each child gets ``shutdown`` +
      ``CLEANUP_GRACE`` seconds) and then ends. A node that stops ends its children
      itself, at once, in the same order, then the supervisor (see
      ``Runtime.supervises``). It never restarts anything while it or its node is
      stopping.
    - **Dynamic children.** :meth:`start_child`, :meth:`terminate_child`,
      :meth:`restart_child`, :meth:`delete_child`, :meth:`which_children` talk to the
      running supervisor from any task or process. Under ``rest_for_one``
      (``one_for_all``) a child started while the children before it (the others)
      wait for their restart starts with them, after them; the call returns then.
    - **Binding.** An instance runs in at most one process at a time; spawning it
      while it runs, or twice before either process runs, makes the second spawn's
      process fail with a ``RuntimeError``. After its
      process ended it may be spawned again (that is how a supervisor restarts a
      nested supervisor) and starts afresh from the children it was built with.

    Restarts, give-ups and children that end for good are logged on
    ``logging.getLogger("garrison.supervision")``, one line each, child name first::

        worker: restarting (attempt 2; restart 2 within 5s) after ValueError: boom

    ``name`` (optional) names the supervisor in its log lines and errors.
    """

    def __init__(
        self,
        children: Iterable[ChildSpec] = (),
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        within: Any = "5s",
        backoff: Any = None,
        *,
        name: str | None = None,
    ) -> None:
        if isinstance(children, str | bytes) or not isinstance(children, Iterable):
            raise TypeError(f"Supervisor(children): an iterable of ChildSpec values, got "
                            f"{type(children).__name__}: {children!r}")
        specs = tuple(children)
        seen: set[str] = set()
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise TypeError(f"Supervisor children must be ChildSpec values, got {spec!r}")
            if spec.id in seen:
                raise ValueError(f"duplicate child id {spec.id!r}: child ids must be unique "
                                 "within a supervisor")
            seen.add(spec.id)
        if strategy not in STRATEGIES:
            raise ValueError(f"invalid strategy {strategy!r}: expected 'one_for_one', "
                             "'one_for_all' or 'rest_for_one'")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"invalid max_restarts {max_restarts!r}: expected an int >= 0")
        seconds = parse_duration(within, what="within")
        if seconds <= 0:
            raise ValueError(f"invalid within {within!r}: the restart window must be longer than 0")
        if backoff is not None and not callable(backoff):
            self._backoff_seconds = parse_duration(backoff, what="backoff")
            if math.isinf(self._backoff_seconds):
                raise ValueError(f"invalid backoff {backoff!r}: {_FOREVER}")
            if self._backoff_seconds > LONGEST_WAIT:
                raise ValueError(f"invalid backoff {backoff!r}: {_TOO_LONG}")
        else:
            self._backoff_seconds = 0.0
            if backoff is not None:
                _check_backoff_function(backoff)
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"invalid supervisor name {name!r}: expected a non-empty string")
        self.children: tuple[ChildSpec, ...] = specs
        self.strategy = strategy
        self.max_restarts = max_restarts
        #: the restart window in seconds
        self.within = seconds
        self.backoff = backoff
        self.name = name
        if name is not None:  # the process label in the process host's logs (its exit)
            self.__qualname__ = f"Supervisor {name!r}"
        # state of the current run
        self._pid: Pid | None = None
        #: the processes spawned to run it that have not run yet, in spawn order (see
        #: :func:`spawned`): the first of them runs it, whichever trio runs first
        self._spawns: list[Pid] = []
        #: how its last run ended, in words (``None``: it never ran, or runs)
        self._ended: str | None = None
        self._node: Any = None
        self._children: list[_Child] = []
        self._restarts: list[float] = []
        #: the number of the last restart of the current crash loop (``backoff``'s
        #: attempt), and when its children were restarted (after their backoff)
        self._attempt = 0
        self._restarted_at = -math.inf
        self._stopping = False
        self._send: trio.MemorySendChannel[_Item] | None = None
        self._inflight: _Request | None = None
        #: the wait that a CANCEL cuts short: for a child to run (a child waiting for a
        #: host's busy worker may never run), or for the helpers ending with one
        self._cut_short: trio.CancelScope | None = None

    def __repr__(self) -> str:
        state = f"running as {self._pid}" if self._pid is not None else "not running"
        who = f" {self.name!r}" if self.name else ""
        return f"<Supervisor{who} {self.strategy} {state}>"

    # ------------------------------------------------------------------ public API
    @property
    def pid(self) -> Pid | None:
        """The pid of the process running this supervisor, or ``None``."""
        return self._pid

    async def __call__(self) -> None:
        """Run the supervisor in the calling process (spawn the instance, don't call it)."""
        await self._run(None)

    def which_children(self) -> list[tuple[str, Pid | None, str]]:
        """``(id, pid or None, restart)`` of every child, in start order.

        The pid is ``None`` while a child is stopped (``terminate_child``, a transient
        child that returned) or waiting for its restart (backoff).

        >>> sup.which_children()
        [('db', Pid(host='processes', id='...'), 'permanent'), ('job', None, 'transient')]
        """
        self._check_running("which_children()")
        return [(c.spec.id, c.pid, c.spec.restart) for c in self._children]

    async def start_child(self, spec: ChildSpec) -> Pid:
        """Add ``spec`` as the last child and start it; returns its pid once it runs.

        A child with the same id (running or not) raises ``ValueError``; a spec
        whose start fails is not kept and the error is raised here.

        >>> pid = await sup.start_child(ChildSpec("job", job, restart="transient"))
        """
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child() takes a ChildSpec, got {spec!r}")
        result: Pid = await self._call("start_child", spec)
        return result

    async def terminate_child(self, id: str) -> None:
        """Stop child ``id`` (``CANCEL``, terminated after its ``shutdown``).

        As in OTP the spec is kept (``which_children`` shows pid ``None``; bring it
        back with :meth:`restart_child`, drop it with :meth:`delete_child`), except
        a temporary child's, which is dropped. A pending restart is called off.
        An unknown id raises ``ValueError``.

        >>> await sup.terminate_child("job")
        """
        await self._call("terminate_child", id)

    async def restart_child(self, id: str) -> Pid:
        """Start the stopped child ``id`` again; returns its pid.

        ``ValueError`` if there is no such child or it is running (or waiting for
        its restart). Not counted toward ``max_restarts``.
        """
        result: Pid = await self._call("restart_child", id)
        return result

    async def delete_child(self, id: str) -> None:
        """Drop the spec of the stopped child ``id``; ``ValueError`` if it runs."""
        await self._call("delete_child", id)

    # ------------------------------------------------------------------ the run
    async def _run(self, started: Callable[[BaseException | None], None] | None) -> None:
        """Run as the current process. ``started`` (a nested supervisor's) is told
        ``None`` once every child runs, or the error that stopped it before."""
        pid = process.pid()
        runtime = current_runtime()
        earlier = self._spawned_before(pid, getattr(runtime, "node", None))
        if self._pid is not None:
            raise RuntimeError(
                f"this Supervisor already runs as process {self._pid}: a Supervisor instance "
                f"is bound to the one process that runs it (process {pid} cannot run it too); "
                "build another Supervisor(...) to run a second one"
            )
        if earlier is not None:  # (it runs it once trio runs it: this one must not)
            raise RuntimeError(
                f"this Supervisor was spawned as process {earlier} before process {pid}: "
                "a Supervisor instance is bound to the one process that runs it, the first "
                f"spawned (process {pid} cannot run it too); build another Supervisor(...) "
                "to run a second one"
            )
        self._pid = pid
        self._ended = None
        # a node that stops stops the children in this order, then this process
        runtime.supervises(lambda: [c.pid for c in reversed(self._children)
                                    if c.pid is not None])
        if started is None:  # a process of its own (a service's, say): it runs, for who
            # waits for it to (what requires the service), once its children all run,
            # as a nested supervisor does; a start that fails ends the process
            running = runtime.hold_start()
            started = lambda failure: running() if failure is None else None  # noqa: E731
        self._node = getattr(runtime, "node", None)
        self._children = [_Child(spec) for spec in self.children]
        self._restarts = []
        self._attempt = 0
        self._restarted_at = -math.inf
        self._stopping = False
        self._inflight = None
        send, recv = trio.open_memory_channel[_Item](math.inf)
        self._send = send
        error: BaseException | None = None
        ended = "was terminated (killed, or failed through a link)"  # (unless it returns)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, send)
                try:
                    error = await self._serve(recv, started)
                except Exception as exc:  # a bug of ours: still clean up, then fail with it
                    error = exc
                nursery.cancel_scope.cancel()
            ended = ("returned (cancelled)" if error is None else
                     f"failed with {type(error).__name__}: {error}")
        finally:
            if error is None and getattr(self._node, "stopping", False):
                # (the node's stop ends it by cancellation, as a kill would)
                ended = "was stopped as its node stopped"
            self._ended = f"its process {pid} {ended}"
            self._stopping = True
            self._send = None
            send.close()
            with trio.CancelScope(shield=True):
                await self._stop_children(final=True)
            self._fail_requests(recv)
            self._pid = None
            if started is not None:  # (ignored once it was told the children all run)
                # told only now: its parent restarting it at once must find it stopped
                started(error or ProcessError(
                    f"supervisor {self._who()} stopped before its children all ran"))
        if error is not None:
            raise error

    def _spawned_before(self, pid: Pid, node: Any) -> Pid | None:
        """``pid`` runs now: it no longer waits to (``_spawns``). The first process
        spawned before it to run this instance that has not run yet and still may (it is
        alive), or ``None``; those that ended without running are dropped."""
        spawns = self._spawns
        if pid not in spawns:
            return None  # (a child's process: its parent started it alone)
        at = spawns.index(pid)
        before = spawns[:at]
        del spawns[at]

        def alive(other: Pid) -> bool:
            host = node.hosts.get(other.host) if node is not None else None
            return host is not None and bool(host.is_alive(other))

        self._spawns = [other for other in spawns if alive(other)]
        return next((other for other in before if other in self._spawns), None)

    async def _pump(self, send: trio.MemorySendChannel[_Item]) -> None:
        async for event in process.events():
            if event.kind is EventKind.CANCEL:  # nothing restarts from now on, also one
                self._stopping = True           # due while the serve loop stops a group
                if self._cut_short is not None:  # nor waits for a child to run, or for
                    self._cut_short.cancel()     # the helpers ending with one
            send.send_nowait(event)

    async def _serve(self, recv: trio.MemoryReceiveChannel[_Item],
                     started: Callable[[BaseException | None], None] | None
                     ) -> SupervisorError | None:
        """Start the children, then handle events and requests until told to stop.

        Returns the error to exit with (``None`` for a normal return).
        """
        for child in list(self._children):
            try:
                await self._start(child)
            except Exception as exc:
                if self._halted():  # its CANCEL came while it started them, or the
                    return None         # node's stop (spawned just before it): it stops
                info = ErrorInfo.from_exception(exc)
                log.error("%s: failed to start, supervisor %s stops: %s",
                          child.spec.name, self._who(), info)
                return SupervisorError(
                    f"supervisor {self._who()}: child {child.spec.id!r} failed to start: {info}",
                    pid=self._pid, error=info,
                )
        if started is not None:
            started(None)
        while True:
            deadline = math.inf if self._halted() else min(
                (c.pending for c in self._children if c.pending is not None),
                default=math.inf)
            item: _Item | None = None
            with trio.move_on_at(deadline):
                item = await recv.receive()
            gave_up: SupervisorGaveUp | None = None
            if isinstance(item, _Request):
                await self._handle(item)
            elif isinstance(item, Event):
                if item.kind is EventKind.CANCEL:
                    log.debug("supervisor %s: CANCEL from %s, stopping", self._who(), item.pid)
                    self._stopping = True
                    return None
                if item.kind is EventKind.EXIT:
                    exited = self._by_pid(item.pid)
                    if exited is not None:
                        gave_up = await self._child_exited(exited, item.error)
            if gave_up is None:
                gave_up = await self._start_due()
            if gave_up is not None:
                return gave_up

    # ------------------------------------------------------------------ restarts
    def _halted(self) -> bool:
        return self._stopping or bool(getattr(self._node, "stopping", False))

    def _by_pid(self, pid: Pid) -> _Child | None:
        for child in self._children:
            if child.pid == pid:
                return child
        return None

    def _by_id(self, id: str) -> _Child:
        for child in self._children:
            if child.spec.id == id:
                return child
        raise ValueError(f"supervisor {self._who()} has no child with id {id!r}")

    async def _child_exited(self, child: _Child,
                            error: ErrorInfo | None) -> SupervisorGaveUp | None:
        """``child`` ended (or failed to restart) with ``error``: apply the restart rules,
        once the processes ending with it have ended (see :meth:`_wait_linked`)."""
        pid, child.pid = child.pid, None
        if pid is not None:
            await self._wait_linked(child.spec, pid)
        if self._halted():
            return None
        spec = child.spec
        # (a transient child ended through a link by its sibling's orderly stop is not
        # restarted, as OTP's shutdown: that stop is no failure)
        restart = spec.restart == "permanent" or (
            spec.restart == "transient" and error is not None and not supervisor_stop(error))
        if not restart:
            if spec.restart == "temporary":
                self._children.remove(child)
            log.info("%s: ended (%s), not restarted (%s)", spec.name, _describe_exit(error),
                     spec.restart)
            return None
        now = trio.current_time()
        self._restarts, restarts, allowed = add_restart(self._restarts, now, self.within,
                                                       self.max_restarts)
        window = _fmt_seconds(self.within)
        if not allowed:
            log.error("%s: giving up, supervisor %s stops its children: restart %d within %s "
                      "exceeds max_restarts=%d; last error: %s", spec.name, self._who(), restarts,
                      window, self.max_restarts, _describe_exit(error))
            self._stopping = True
            return SupervisorGaveUp(
                f"supervisor {self._who()} gave up: child {spec.id!r} needed restart {restarts} "
                f"within {window} (max_restarts={self.max_restarts}); last error: "
                f"{_describe_exit(error)}",
                pid=self._pid, child_id=spec.id, restarts=restarts, within=self.within, error=error,
            )
        # the attempt counts the restarts of a crash loop, not those within the window: a
        # backoff that spaces restarts out empties the window, and an exponential one would
        # never grow; it starts again at 1 once the restarted children ran for ``within``
        quiet = now - self._restarted_at >= self.within
        attempt = self._attempt = 1 if quiet else self._attempt + 1
        delay = self._delay(attempt, spec.id)
        self._restarted_at = now + delay
        group = self._group(child)
        again = [c.spec.name for c in group if c.spec.restart != "temporary"]
        gone = [c.spec.name for c in group if c.spec.restart == "temporary"]
        also = (f"; {self.strategy} also restarts {', '.join(again)}" if again else "")
        if gone:  # (stopped with the others, never started again)
            also += f"; {self.strategy} stops {', '.join(gone)} (temporary: not restarted)"
        when = f" in {_fmt_seconds(delay)}" if delay > 0 else ""
        log.warning("%s: restarting%s (attempt %d; restart %d within %s) after %s%s", spec.name,
                    when, attempt, restarts, window, _describe_exit(error), also)
        for sibling in reversed(group):
            if sibling.pid is not None:
                await self._stop(sibling)
        due = now + delay
        for c in [*group, child]:
            if c.spec.restart == "temporary" and c is not child:
                self._call_off(c, f"was stopped by the {self.strategy} restart after "
                               f"{spec.id!r} failed")
                if c in self._children:
                    self._children.remove(c)
            else:
                c.pending = due
        return None

    def _group(self, child: _Child) -> list[_Child]:
        """The other children a restart of ``child`` stops and restarts (start order)."""
        if self.strategy == "one_for_all":
            others = [c for c in self._children if c is not child]
        elif self.strategy == "rest_for_one":
            others = self._children[self._children.index(child) + 1:]
        else:
            others = []
        return [c for c in others if c.active]

    def _delay(self, attempt: int, child_id: str) -> float:
        """The wait before restart ``attempt`` of child ``child_id``. A callable
        ``backoff`` that raises or returns no duration fails the supervisor with a
        :class:`SupervisorError` naming it, the supervisor and the child."""
        backoff = self.backoff
        if backoff is None:
            return 0.0
        if not callable(backoff):
            return self._backoff_seconds
        try:
            value = backoff(attempt)
        except Exception as exc:
            raise SupervisorError(f"{self._backoff_failed(child_id, attempt)} raised "
                                  f"{type(exc).__name__}: {exc}") from exc
        try:
            seconds = parse_duration(value, what="backoff delay")
            if math.isinf(seconds):
                raise ValueError(_FOREVER)
            if seconds > LONGEST_WAIT:
                raise ValueError(_TOO_LONG)
        except ValueError as exc:
            raise SupervisorError(f"{self._backoff_failed(child_id, attempt)} "
                                  f"returned {value!r}: {exc}") from None
        return seconds

    def _backoff_failed(self, child_id: str, attempt: int) -> str:
        """What a failed ``backoff`` call was: the start of its error."""
        name = getattr(self.backoff, "__qualname__", None) or repr(self.backoff)
        return (f"supervisor {self._who()}: backoff={name} for the restart of child "
                f"{child_id!r} (attempt {attempt})")

    async def _start_due(self) -> SupervisorGaveUp | None:
        """Start the children whose restart is due, in start order."""
        while True:
            now = trio.current_time()
            child = next((c for c in self._children if c.pending is not None and c.pending <= now),
                         None)
            if child is None or self._halted():
                return None
            child.pending = None
            caller = child.caller  # (kept on it until answered: a kill meanwhile fails it)
            try:
                pid = await self._start(child)
            except Exception as exc:
                if caller is not None:  # the failed start of the call's child: the call's
                    # error (not kept, as a start_child that fails at once), no restart
                    child.caller = None
                    if caller.op == "start_child" and child.pid is None:
                        self._children.remove(child)
                    caller.finish(outcome.Error(exc))
                    continue
                # counts as a failure of that child
                gave_up = await self._child_exited(child, ErrorInfo.from_exception(exc))
                if gave_up is not None:
                    return gave_up
            else:
                if caller is not None:
                    child.caller = None
                    caller.finish(outcome.Value(pid))

    # ------------------------------------------------------------------ start / stop
    async def _start(self, child: _Child) -> Pid:
        """Spawn ``child`` (monitored) and wait until it runs."""
        if self._halted():
            raise ProcessError(f"supervisor {self._who()} is stopping: not starting "
                               f"child {child.spec.id!r}")
        spec = child.spec
        node = self._node
        host_name = spec.host or (self._pid.host if self._pid is not None else None)
        host = node.hosts.get(host_name) if node is not None and host_name else None
        target = spec.target
        if host is not None and host.durable:
            if spec.kwargs:
                raise ValueError(f"child {spec.id!r}: kwargs are not supported for a child on "
                                 f"the durable host {host_name!r}; pass args")
            with trio.CancelScope(shield=True):  # as below: the pid is recorded
                # (supervised: a node that finds it after a crash stopped this supervisor
                # cancels it, as this supervisor's stop would have)
                try:
                    pid = await current_runtime().spawn(target, tuple(spec.args), spec.host,
                                                        link=False, monitor=True,
                                                        supervised=True)
                except (KeyError, TypeError) as exc:  # no such entry, args it cannot take
                    # (chained: one raised deeper in the start keeps its traceback)
                    raise _cannot_start(spec, exc) from exc
                except ValueError as exc:  # an entry id on a node with no config, say
                    raise ValueError(f"child {spec.id!r}: {exc}") from exc
            child.pid = pid
            # one created waiting in its host's queue (its limits taken) has not run:
            # the next child waits for it, as for a process waiting for a worker
            await self._wait_started(spec, pid, functools.partial(
                node.hosts[pid.host].wait_started, pid))
            log.debug("%s: started as %s", spec.name, pid)
            return pid
        if isinstance(target, str) and node is not None:
            try:
                target = node.resolve_target(target)
            except KeyError as exc:
                raise _cannot_start(spec, exc) from None
            except ValueError as exc:  # an entry id on a node with no config
                raise ValueError(f"child {spec.id!r}: {exc}") from None
            try:
                check_entry(node.config, spec.target, durable=False)
            except TypeError as exc:
                raise TypeError(f"child {spec.id!r}: {exc}") from None
            try:  # (a callable target was checked when its ChildSpec was made)
                check_target(target)
            except TypeError as exc:
                raise TypeError(f"child {spec.id!r}: config entry {spec.target!r} is no "
                                f"process target: {exc}") from None
        if spec.kwargs:
            target = functools.partial(target, **spec.kwargs)
        started = trio.Event()
        main = _ChildMain(target, started, spec.name, spec.id)
        # shielded: a kill of the supervisor landing at the spawn's checkpoint would
        # raise there, after the child was spawned but before its pid was recorded, and
        # the final cleanup could not stop it (an orphan)
        with trio.CancelScope(shield=True):
            pid = await process.spawn_monitored(main, *spec.args, host=spec.host)
        child.pid = pid
        await self._wait_started(spec, pid, started.wait)
        if main.failure is not None:  # its call failed, or a nested supervisor's children
            # did not all run
            child.pid = None  # (its EXIT, on its way, is no longer this child's)
            raise main.failure
        log.debug("%s: started as %s", spec.name, pid)
        return pid

    async def _wait_started(self, spec: ChildSpec, pid: Pid,
                            started: Callable[[], Awaitable[None]]) -> None:
        """Wait until the child ``spec``, spawned as ``pid``, runs (``started()``
        returns) or has ended; a ``CANCEL`` cuts the wait short, a ``ProcessError``
        (its pid is kept: the final cleanup stops it)."""
        with self._until_cancel() as waiting:
            await _started_or_exited(started, self._node, pid, spec.name)
        if waiting.cancelled_caught:
            raise ProcessError(f"supervisor {self._who()} is stopping: child {spec.id!r} "
                               "had not started")

    @contextlib.contextmanager
    def _until_cancel(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that the supervisor's ``CANCEL`` cancels (see ``_pump``), at
        once if it came already."""
        with trio.CancelScope() as waiting:
            self._cut_short = waiting
            if self._stopping:
                waiting.cancel()
            try:
                yield waiting
            finally:
                self._cut_short = None

    async def _stop(self, child: _Child, *, final: bool = False) -> None:
        """Stop ``child``: ``CANCEL``, terminated after its ``shutdown``; then, unless
        ``final`` (the supervisor's own stop), wait for its helpers (:meth:`_wait_linked`).

        The child keeps its pid until it has ended: if the supervisor is killed while
        it waits (a child slow to stop), its final cleanup still stops the child."""
        pid = child.pid
        if pid is None:
            return
        shutdown = child.spec.shutdown
        if shutdown == BRUTAL_KILL:
            await process.terminate(pid)
        else:
            if self._node is not None:  # its helpers (spawn_linked) end with it, quietly
                self._node.stop_links_with(pid, supervisor_stop_reason(self._who()))
            await process.cancel(pid, timeout=shutdown)
        if child.pid == pid:
            child.pid = None
        if not final:
            await self._wait_linked(child.spec, pid)
        log.debug("%s: stopped (%s)", child.spec.name, pid)

    async def _wait_linked(self, spec: ChildSpec, pid: Pid) -> None:
        """Wait until the processes that the end of ``pid`` (child ``spec``) is ending
        through their links to it have ended (its ``spawn_linked`` helpers), before it
        is restarted or ``terminate_child`` returns: see :func:`wait_ending_with`. At
        most ``shutdown`` + ``CLEANUP_GRACE`` (the grace alone for ``brutal_kill`` and
        ``infinity``); past it, that is logged and the supervisor goes on. A ``CANCEL``
        ends it: the supervisor stops (not waiting for them: its own stop is not held
        up by their cleanup, as the parent that stops it gives it its shutdown only)."""
        node = self._node
        if node is None:
            return
        shutdown = spec.shutdown
        bound = CLEANUP_GRACE + (0.0 if isinstance(shutdown, str) or math.isinf(shutdown)
                                 else shutdown)
        with self._until_cancel():
            await wait_ending_with(node, pid, ended=trio.current_time(), bound=bound,
                                   name=spec.name, who=f"supervisor {self._who()}",
                                   logger=log)

    async def _stop_children(self, *, final: bool = False) -> None:
        """Stop every running child, in reverse start order; call off pending restarts."""
        for child in reversed(self._children):
            child.pending = None
            if child.pid is None:
                continue
            if not final:
                await self._stop(child)
                continue
            if self._cancelled_at_node_stop(child.pid):
                child.pid = None
                continue
            shutdown = child.spec.shutdown
            bound = CLEANUP_GRACE + (0.0 if isinstance(shutdown, str) else shutdown)
            pid = child.pid
            with trio.move_on_after(bound):
                await self._stop(child, final=True)
                continue
            log.error("%s: %s did not end within %s of being stopped; supervisor %s moves on",
                      child.spec.name, pid, _fmt_seconds(bound), self._who())

    def _cancelled_at_node_stop(self, pid: Pid) -> bool:
        """A workflow child while the node stops: its cancel is recorded (it is this
        supervisor's child: a supervisor started at the next node start starts its own,
        and this one must not run on beside it) and takes effect when a node resumes it;
        not waited for, as its host has stopped (the wait held the node's stop for the
        child's whole shutdown grace). True if so; else the child is stopped as usual."""
        node = self._node
        if node is None or not getattr(node, "stopping", False):
            return False
        try:
            host = node.host(pid.host)
        except ValueError:
            return False
        if not getattr(host, "durable", False):
            return False
        if not host.cancel_event(pid, self._pid):  # not running here: queued, say
            host.request_cancel_stored(pid.id)
        return True

    # ------------------------------------------------------------------ requests
    def _who(self) -> str:
        if self.name:
            return f"{self.name!r} ({self._pid})" if self._pid is not None else repr(self.name)
        return str(self._pid) if self._pid is not None else "(not running)"

    async def _first_run(self) -> trio.MemorySendChannel[_Item] | None:
        """``node.spawn`` (and ``process.spawn``) return before the process runs: a
        supervisor spawned just before this call starts within the next two scheduler
        passes (trio runs a pass's tasks in either order), so ``pid = await
        node.spawn(sup)`` then ``await sup.start_child(spec)`` works. Its request
        channel then, or ``None`` if it did not start (never spawned, or waiting for a
        slot of a host with ``workers``)."""
        for _ in range(_FIRST_RUN_PASSES):
            await trio.lowlevel.checkpoint()
            if self._pid is not None:
                break
        return self._send

    def _check_running(self, what: str) -> None:
        if self._pid is None and self._ended is not None and not self._spawns:
            raise RuntimeError(
                f"{what}: {self!r} is not running: {self._ended}; spawn it again (pid = "
                "await node.spawn(sup)) to run it afresh from its children's specs")
        if self._pid is None:
            raise RuntimeError(
                f"{what}: {self!r} is not running; spawn it first "
                "(pid = await node.spawn(sup)) and call this while its process runs (one "
                "spawned on a host whose workers are all busy runs once it gets one)"
            )

    async def _call(self, op: str, arg: Any) -> Any:
        send = self._send
        if send is None and self._pid is None:
            send = await self._first_run()
        if send is None:
            self._check_running(f"{op}()")
            raise RuntimeError(f"{op}(): supervisor {self._who()} is stopping")
        request = _Request(op, arg)
        try:
            send.send_nowait(request)
        except trio.ClosedResourceError:
            raise RuntimeError(f"{op}(): supervisor {self._who()} has stopped") from None
        await request.done.wait()
        assert request.result is not None
        return request.result.unwrap()

    async def _handle(self, request: _Request) -> None:
        self._inflight = request
        try:
            value = await self._do(request)
        except Exception as exc:
            request.finish(outcome.Error(exc))
        else:
            if value is not _LATER:
                request.finish(outcome.Value(value))
        # a cancellation (the supervisor killed) leaves it in flight: the run's end
        # answers it (``_fail_requests``), else its caller would wait forever
        self._inflight = None

    async def _do(self, request: _Request) -> Any:
        op, arg = request.op, request.arg
        if op == "start_child":
            spec: ChildSpec = arg
            if any(c.spec.id == spec.id for c in self._children):
                raise ValueError(f"supervisor {self._who()} already has a child with id "
                                 f"{spec.id!r} (running or stopped; delete_child it first)")
            if spec.host is not None and self._node is not None:
                try:
                    self._node.host(spec.host)
                except ValueError as exc:  # (named as in a start from its children list)
                    raise ValueError(f"supervisor {self._who()}: child {spec.id!r} failed to "
                                     f"start: {exc}") from None
            child = _Child(spec)
            self._children.append(child)
            if self._behind_restart(child, request):
                return _LATER
            try:
                return await self._start(child)
            except BaseException:
                if child.pid is None:  # not spawned: not kept
                    self._children.remove(child)
                # else the supervisor was killed while the child started: it stays a
                # child, so the supervisor's final cleanup stops it
                raise
        child = self._by_id(arg)
        if op == "terminate_child":
            child.pending = None
            self._call_off(child, "was terminated before it started")
            await self._stop(child)
            if child.spec.restart == "temporary" and child in self._children:
                self._children.remove(child)
            return None
        if op == "restart_child":
            if child.pid is not None:
                raise ValueError(f"child {arg!r} of supervisor {self._who()} is running")
            if child.pending is not None:
                raise ValueError(f"child {arg!r} of supervisor {self._who()} is waiting for "
                                 "its restart (backoff): it restarts by itself then "
                                 "(terminate_child it first to restart it now)")
            if self._behind_restart(child, request):
                return _LATER
            return await self._start(child)
        if op == "delete_child":
            if child.active:
                raise ValueError(f"child {arg!r} of supervisor {self._who()} "
                                 f"{self._state_of(child)}; terminate_child it first")
            self._children.remove(child)
            return None
        raise AssertionError(op)

    def _behind_restart(self, child: _Child, request: _Request) -> bool:
        """Under ``rest_for_one`` (``one_for_all``), ``child``, added or restarted by
        ``request`` while the children before it (the others) wait for their restart
        (backoff), starts with them, after them, as a group restart starts its children
        in order: it waits, and ``request`` is answered once it runs (``_start_due``).
        True if so; else it starts now."""
        if self.strategy == "one_for_one":
            return False
        before = (self._children if self.strategy == "one_for_all"
                  else self._children[:self._children.index(child)])
        due = max((c.pending for c in before if c is not child and c.pending is not None),
                  default=None)
        if due is None:
            return False
        child.pending = due
        child.caller = request
        log.info("%s: starts after %s, which wait for their restart", child.spec.name,
                 ", ".join(c.spec.name for c in before if c.pending is not None
                           and c is not child))
        return True

    def _call_off(self, child: _Child, why: str) -> None:
        """The call waiting for ``child`` to start (``_behind_restart``) fails: ``why``;
        a ``start_child``'s spec is not kept (the caller removes the child)."""
        caller, child.caller = child.caller, None
        if caller is None:
            return
        if caller.op == "start_child" and child in self._children:
            self._children.remove(child)
        caller.finish(outcome.Error(RuntimeError(
            f"{caller.op}(): child {child.spec.id!r} of supervisor {self._who()} {why} (it "
            "waited to start after the children before it, which wait for their restart)")))

    @staticmethod
    def _state_of(child: _Child) -> str:
        """``is running``, or ``is waiting for its restart (backoff)`` (its pid is
        ``None`` then, in ``which_children``)."""
        return "is running" if child.pid is not None else "is waiting for its restart (backoff)"

    def _fail_requests(self, recv: trio.MemoryReceiveChannel[_Item]) -> None:
        """The run is over: answer every request it did not handle with an error."""
        def failure(request: _Request) -> outcome.Error:
            return outcome.Error(RuntimeError(
                f"{request.op}(): supervisor {self._who()} stopped before it handled the call"))

        if self._inflight is not None:
            self._inflight.finish(failure(self._inflight))
            self._inflight = None
        for child in self._children:  # (waiting to start after a restart, see _behind_restart)
            if child.caller is not None:
                child.caller.finish(failure(child.caller))
                child.caller = None
        while True:
            try:
                item = recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(item, _Request):
                item.finish(failure(item))
