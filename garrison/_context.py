"""Which workflow the calling code runs in: the context variables behind
``garrison.workflow`` and ``@garrison.activity``.

A workflow host sets the runtime of each workflow task with :func:`set_workflow`
(it implements :class:`garrison.workflow.WorkflowRuntime`); while one of the
workflow's activities runs, :func:`activity_scope` hides it, so workflow calls are
refused there and an ``@activity`` called from an activity is a plain call.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from .actors._runtime import Runtime, reset_runtime, set_runtime

if TYPE_CHECKING:
    from .workflow import WorkflowRuntime

__all__ = ["activity_owner", "activity_scope", "current_workflow", "set_workflow"]


class _InActivity:
    """What the context variable holds while an activity of ``workflow_id`` runs."""

    __slots__ = ("workflow_id",)

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id


#: the workflow runtime of the calling task, an :class:`_InActivity` inside one of its
#: activities, or ``None`` (one variable: an activity sets and resets it once)
_scope: contextvars.ContextVar[Any] = contextvars.ContextVar("garrison_workflow",
                                                              default=None)


def current_workflow() -> WorkflowRuntime | None:
    """The runtime of the calling workflow, or ``None`` (also inside an activity)."""
    rt = _scope.get()
    if rt is None or type(rt) is _InActivity:
        return None
    runtime: WorkflowRuntime = rt
    return runtime


def set_workflow(runtime: WorkflowRuntime) -> None:
    """Make ``runtime`` the workflow of the calling task (and the tasks it starts)."""
    _scope.set(runtime)


def activity_owner() -> str | None:
    """The id of the workflow whose activity is running here, or ``None``."""
    rt = _scope.get()
    return rt.workflow_id if type(rt) is _InActivity else None


class activity_scope:
    """Run an activity of ``workflow_id`` inside: no workflow runtime there, and
    ``process_runtime`` (plain messaging on behalf of the workflow) as the process one.

    A class rather than ``@contextmanager``: it is entered once per activity call."""

    __slots__ = ("_outer", "_process", "process_runtime", "workflow_id")

    def __init__(self, workflow_id: str, process_runtime: Runtime) -> None:
        self.workflow_id = workflow_id
        self.process_runtime = process_runtime

    def __enter__(self) -> None:
        self._outer = _scope.set(_InActivity(self.workflow_id))
        self._process = set_runtime(self.process_runtime)

    def __exit__(self, *exc: object) -> None:
        reset_runtime(self._process)
        _scope.reset(self._outer)
