"""A cancel scope around a task's whole body, made only when it is used.

Every process and every workflow is a trio task that another task may have to stop
(``process.kill``, a linked exit, a supervisor's shutdown, a workflow's kill). A
``trio.CancelScope`` entered for the task's whole body does that, but entering and
leaving one costs about as much as the rest of a trivial task (the scope, its
``CancelStatus``, two context managers), and almost no task is ever stopped that way.

:class:`CancelSwitch` makes the scope only when :meth:`~CancelSwitch.cancel` is
called. It puts a new, cancelled ``CancelStatus`` between the task's nursery and the
statuses the task entered itself: the same re-parenting trio's own
``TaskStatus.started`` does to move a task between nurseries. From then on the body,
and every task it started, sees ``Cancelled`` at each checkpoint, exactly as inside a
cancelled scope around it (shields inside the body still hold). At the end of the
body :meth:`~CancelSwitch.close` takes that status out again and swallows the
``Cancelled`` it caused, unless a cancellation from outside (the nursery's) also
applies: what a scope's exit does.

One switch per task: a second one entered inside the first (in the same task) would,
if cancelled after the outer one, re-parent the outer one's status under its own, and
leaving it would cut the task off from its nursery. Every process and workflow task
has exactly one (its body's).

The fast path uses trio internals (``CancelStatus``, ``Task._cancel_status``), as
``persistence/_group_commit.py`` does; with a trio whose internals differ, the switch
is a plain ``CancelScope`` entered by :meth:`~CancelSwitch.attach` and left by
:meth:`~CancelSwitch.close`, with the same behaviour.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from .. import _trio_fast
from ._values import ErrorInfo

__all__ = ["CancelSwitch", "body_root", "is_stray", "stray_cancelled", "stray_message"]

_CancelStatus: Any
try:
    from trio._core._run import CancelStatus as _CancelStatus
    from trio._core._run import Task as _Task

    # everything the fast path touches, checked once
    _FAST = all(hasattr(_CancelStatus, name) for name in (
        "parent", "close", "parent_cancellation_is_visible_to_us", "_tasks", "_children")
    ) and all(hasattr(_Task, name) for name in ("_cancel_status", "_activate_cancel_status")) \
        and hasattr(trio.CancelScope, "_cancel_status")
except ImportError:  # pragma: no cover - another trio version
    _FAST = False


class CancelSwitch:
    """Stops one task's body from outside, as a cancelled scope around it would.

    A context manager used as a ``CancelScope`` is, around a task's whole body
    (:meth:`attach` and :meth:`close` are its two halves); :meth:`cancel` works from any
    task of the run, before or after the body began.

    >>> switch = CancelSwitch()   # another task may call switch.cancel()
    >>> with switch:
    ...     await serve()
    """

    __slots__ = ("_cancelled", "_fast", "_root", "_scope", "_status", "_task")

    def __init__(self) -> None:
        self._fast = _FAST
        self._task: Any = None
        self._root: Any = None  # the status the task's own statuses hang from
        self._status: Any = None  # the one cancel() inserted
        self._scope: trio.CancelScope | None = None
        self._cancelled = False

    @classmethod
    def made_cancelled(cls, task: trio.lowlevel.Task, root: Any) -> CancelSwitch:
        """A cancelled switch for the body ``task`` began with no switch, under ``root``
        (what :func:`body_root` returned as it began): as if attached then and cancelled
        now. A body that is almost never stopped keeps no switch while it runs."""
        switch = cls()
        switch._task, switch._root = task, root
        switch.cancel()
        return switch

    @property
    def cancel_called(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def attach(self) -> None:
        """Begin the body in the calling task (after any ``task_status.started()``:
        the task's nursery then is the one it stays in)."""
        run = _trio_fast.RUN  # (the task read from trio's run context: see ``_trio_fast``)
        task = run.task if run is not None else trio.lowlevel.current_task()
        self._task = task
        if self._fast:
            self._root = task._cancel_status
            if self._cancelled:
                self._insert()
        else:
            scope = self._scope = trio.CancelScope()
            scope.__enter__()
            if self._cancelled:
                scope.cancel()

    def cancel(self) -> None:
        """Stop the body: ``Cancelled`` at its next checkpoint and at every one after
        (idempotent; called before :meth:`attach`, it applies from there)."""
        if self._cancelled:
            return
        self._cancelled = True
        if self._task is None:
            return
        if self._fast:
            self._insert()
        else:
            assert self._scope is not None
            self._scope.cancel()

    def close(self, exc: BaseException | None) -> BaseException | None:
        """End the body, which is leaving with ``exc`` (``None``: it returned). Returns
        what should go on leaving the task: ``exc`` itself, or ``None`` when ``exc``
        was only this switch's ``Cancelled`` (as a scope's exit swallows it)."""
        if self._fast:
            if self._status is None:  # never cancelled: nothing was made
                self._task = self._root = None  # (the task's context may hold our owner)
                return exc
            return self._remove(exc)
        self._task = None
        scope = self._scope
        assert scope is not None
        if scope.__exit__(type(exc) if exc is not None else None, exc,
                          exc.__traceback__ if exc is not None else None):
            return None
        return exc

    def __enter__(self) -> CancelSwitch:
        run = _trio_fast.RUN
        if run is not None and self._fast and not self._cancelled:
            # attach's common path, written out (every process's start enters one)
            task = self._task = run.task
            self._root = task._cancel_status
        else:
            self.attach()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> bool:
        if self._status is None and self._fast:  # never cancelled (the common case)
            self._task = self._root = None
            return False
        remaining = self.close(exc)
        if remaining is exc:
            return False
        if remaining is None:
            return True
        context = remaining.__context__  # what is left of a group: raised as it was
        try:
            raise remaining
        finally:
            remaining.__context__ = context

    @trio.lowlevel.enable_ki_protection
    def _insert(self) -> None:
        task, root = self._task, self._root
        scope = trio.CancelScope()
        status = _CancelStatus(scope=scope, parent=root)
        scope._has_been_entered = True  # (nobody may enter it by hand)
        scope._cancel_status = status
        self._scope, self._status = scope, status
        # the outermost status the task entered itself now hangs from the new one
        own = task._cancel_status
        if own is root:
            task._activate_cancel_status(status)
        else:
            while own is not None and own.parent is not root:
                own = own.parent
            if own is not None:
                own.parent = status
            else:  # pragma: no cover - a misnested scope broke the chain: trio reports it
                task._activate_cancel_status(status)
        scope.cancel()

    @trio.lowlevel.enable_ki_protection
    def _remove(self, exc: BaseException | None) -> BaseException | None:
        task, status = self._task, self._status
        if task._cancel_status is status:
            task._activate_cancel_status(self._root)
        swallow = (exc is not None and status.effectively_cancelled
                   and not status.parent_cancellation_is_visible_to_us)
        status.close()
        self._scope._cancel_status = None  # type: ignore[union-attr]
        self._task = self._root = self._status = None
        if not swallow:
            return exc
        if isinstance(exc, trio.Cancelled):
            return None
        if isinstance(exc, BaseExceptionGroup):
            _, rest = exc.split(trio.Cancelled)
            return rest
        return exc


def body_root() -> Any:
    """Where the calling task's body begins, for a switch made only if it is cancelled
    (:meth:`CancelSwitch.made_cancelled`): the task's cancel status now, before the
    body enters any scope of its own. ``None`` with a trio whose internals differ: the
    body is then given a switch as it begins (:meth:`CancelSwitch.attach`)."""
    if not _FAST:  # (another trio version)
        return None
    run = _trio_fast.RUN
    task = run.task if run is not None else trio.lowlevel.current_task()
    return task._cancel_status


def is_stray(exc: BaseException) -> bool:
    """Whether ``exc`` (trio's ``Cancelled``, or a group of nothing else), caught where
    a task's body (a process, a workflow, an activity's attempt) ends, comes while no
    cancellation applies to the task: its code raised a ``Cancelled`` outside the cancel
    scope it came from (caught, kept and raised later). ``False`` for a real
    cancellation (a kill, the node stopping, a timeout), which goes on up.

    Left to go up, such a ``Cancelled`` passed through every nursery above it (none of
    their scopes was cancelled to stop it) and ended the node."""
    if isinstance(exc, BaseExceptionGroup):
        if exc.split(trio.Cancelled)[1] is not None:
            return False
    elif not isinstance(exc, trio.Cancelled):
        return False
    return trio.current_effective_deadline() != -math.inf  # (-inf: cancelled for real)


def stray_message(what: str) -> str:
    """What a stray ``Cancelled`` (see :func:`is_stray`) out of ``what`` says."""
    return (f"trio.Cancelled came out of {what}, though nothing cancelled it: its code "
            "raised a Cancelled outside the cancel scope it came from (one caught and "
            "raised again later); re-raise a Cancelled where it was caught, inside its "
            "scope")


def stray_cancelled(exc: BaseException, what: str) -> ErrorInfo | None:
    """A stray ``exc`` (see :func:`is_stray`) out of ``what`` (a process, a workflow)
    as the failure of ``what`` only; ``None`` for a real cancellation."""
    if not is_stray(exc):
        return None
    return ErrorInfo("Cancelled", stray_message(what), ErrorInfo.from_exception(exc).traceback)
