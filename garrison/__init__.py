"""garrison: Erlang-style processes, supervision and durable workflows on trio.

>>> import garrison
>>> from garrison import process
>>> async def main(name):
...     return f"hello {name} from {process.pid()}"
>>> garrison.run(main, "world")
"""

# _cli_signals first (it imports only the standard library): in the ``garrison``
# command, a Ctrl-C that comes while the rest imports is noted, not a traceback
from . import _cli_signals, metrics, process, tracing, workflow  # noqa: F401 (_cli_signals)
from ._activity import RetryPolicy, activity
from ._duration import DurationTypeError, parse_duration
from ._errors import (
    ActivityError,
    ConfigError,
    GarrisonError,
    NonDeterminismError,
    NoSuchEntry,
    NoSuchProcess,
    NoSuchSchedule,
    NoSuchWorkflow,
    NotInProcess,
    PayloadError,
    ProcessError,
    PromiseAlreadyCompleted,
    PromiseRejected,
    StoreError,
    StoreLocked,
    StoreVersionError,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowMoved,
)
from ._handle import WorkflowHandle, WorkflowSummary
from ._node import Node, current_node, open_node, run
from ._schedule_handle import ScheduleHandle
from .actors import ErrorInfo, Event, EventKind, Inbox, Message, Pid, ProcessInfo

__all__ = [
    "ActivityError",
    "ConfigError",
    "DurationTypeError",
    "ErrorInfo",
    "Event",
    "EventKind",
    "GarrisonError",
    "Inbox",
    "Message",
    "NoSuchEntry",
    "NoSuchProcess",
    "NoSuchSchedule",
    "NoSuchWorkflow",
    "Node",
    "NonDeterminismError",
    "NotInProcess",
    "PayloadError",
    "Pid",
    "ProcessError",
    "ProcessInfo",
    "PromiseAlreadyCompleted",
    "PromiseRejected",
    "RetryPolicy",
    "ScheduleHandle",
    "StoreError",
    "StoreLocked",
    "StoreVersionError",
    "WorkflowCancelled",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowMoved",
    "WorkflowSummary",
    "activity",
    "current_node",
    "metrics",
    "open_node",
    "parse_duration",
    "process",
    "run",
    "tracing",
    "workflow",
]

# the exceptions are garrison's, wherever they are defined: a traceback says
# `garrison.StoreLocked`, not the private module's name
for _error in (ActivityError, ConfigError, DurationTypeError, GarrisonError,
               NonDeterminismError, NoSuchEntry, NoSuchProcess, NoSuchSchedule,
               NoSuchWorkflow, NotInProcess, PayloadError, ProcessError,
               PromiseAlreadyCompleted, PromiseRejected, StoreError, StoreLocked,
               StoreVersionError, WorkflowCancelled, WorkflowFailed, WorkflowMoved):
    _error.__module__ = __name__
del _error
