"""Which workflow the calling code runs in, read from the one context variable behind
``garrison.process`` (``actors/_runtime.py``): the runtime of the calling task.

A workflow's runtime is a :class:`WorkflowScope` (it implements
:class:`garrison.workflow.WorkflowRuntime`); while one of its activities runs,
:class:`ActivityScope` is there instead (the workflow host sets the variable around the
activity's call), so workflow calls are refused and an ``@activity`` called from an
activity is a plain call.

One variable, not one for the process runtime and one for the workflow: a task
inherits its spawner's context, and every process sets its own runtime as it starts,
so a process that a workflow spawns is never taken for that workflow (with a variable
of its own the workflow would leak into it, and the process's ``@activity`` calls
would be journaled into the workflow's history, from another task).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .actors._runtime import runtime_var

if TYPE_CHECKING:
    from ._activity import RetryPolicy
    from .persistence import Transaction
    from .workflow import WorkflowRuntime

__all__ = ["ActivityScope", "WorkflowScope", "activity_owner", "current_workflow"]


class WorkflowScope:
    """Base of a workflow's runtime: marks the task it runs in as that workflow.

    It declares what the ``@garrison.activity`` wrapper calls on the runtime it finds
    (an instance of the workflow host's engine, which overrides each): mypy checks
    those calls, and the engine's methods, against these. (Methods of a base class:
    the engine's own are found first, at no cost to a step.)"""

    __slots__ = ()

    def step_outcome(self, name: str) -> Transaction | None:  # pragma: no cover
        """The first half of a step of activity ``name``: the outcome of the step
        before, its seq taken, for the wrapper to commit; or ``None``."""
        raise NotImplementedError

    def committing(self, tx: Transaction) -> Awaitable[list[Any]]:  # pragma: no cover
        """The awaitable committing ``tx`` (:meth:`step_outcome`'s)."""
        raise NotImplementedError

    def commit_failed(self, exc: Exception) -> None:  # pragma: no cover
        """``exc`` failed the commit of :meth:`committing`: raises the store failure it
        means, or returns for the caller to raise ``exc`` as it is."""
        raise NotImplementedError

    async def activity(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       retry: RetryPolicy | None = None, timeout: float | None = None,
                       name: str | None = None, begun: Transaction | None = None
                       ) -> Any:  # pragma: no cover
        """Run ``fn`` as a journaled activity (``begun``: :meth:`step_outcome`'s
        transaction, committed)."""
        raise NotImplementedError


class ActivityScope:
    """Base of the process runtime inside an activity of a workflow."""

    __slots__ = ()

    @property
    def activity_of(self) -> str:  # pragma: no cover - every subclass has its own
        """The id of the workflow whose activity runs here."""
        raise NotImplementedError


def current_workflow() -> WorkflowRuntime | None:
    """The runtime of the calling workflow, or ``None`` (also inside an activity)."""
    rt = runtime_var.get(None)  # (every activity call asks: no call more than needed)
    return rt if isinstance(rt, WorkflowScope) else None


def activity_owner() -> str | None:
    """The id of the workflow whose activity is running here, or ``None``."""
    rt = runtime_var.get(None)
    return rt.activity_of if isinstance(rt, ActivityScope) else None
