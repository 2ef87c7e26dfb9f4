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

from typing import TYPE_CHECKING

from .actors._runtime import runtime_var

if TYPE_CHECKING:
    from .workflow import WorkflowRuntime

__all__ = ["ActivityScope", "WorkflowScope", "activity_owner", "current_workflow"]


class WorkflowScope:
    """Base of a workflow's runtime: marks the task it runs in as that workflow."""

    __slots__ = ()


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
