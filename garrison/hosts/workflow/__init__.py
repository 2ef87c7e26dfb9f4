"""The durable workflow host, split along its seams (one concept per module):

- ``_journal``: record kinds (the stored format), the replay cursor, plain forms
- ``_codec``: typed arguments and results, the JSON round trip
- ``_ids``: the rule for workflow ids (and the schedule ids built on it)
- ``_core``: the state and primitives every part of an instance shares
- ``_inbox``: the durable inbox and journaled receives
- ``_waits``: wall clock, sleeps, timers, promises, ``first``/``gather``
- ``_activities``: activities with retries, ``workflow.start``
- ``_interop``: spawn, send, reply, call, links, monitors, cancel, names
- ``_instance``: one workflow's lifecycle, recorded values, state
- ``_recovery``: loading, resuming on open, wake-ups written by tools
- ``_queue``: limits, priorities and dedup keys of a host; waiting ``pending`` workflows
- ``_schedules``: when a schedule ticks (cron in a time zone, or an interval), tick ids
- ``_scheduler``: the schedules of a host's store, one timer, ticks that start workflows
- ``_host``: the node-facing side: start, finish, results, routing
- ``_operate``: terminate and retry (store writes the handle, CLI and console share)
- ``_replay``: replay mode: a journal against today's code, no effects
"""

from ._host import WorkflowHost
from ._instance import WorkflowInstance
from ._journal import Cursor, Entry, JournalKind, code_gone
from ._operate import (
    cancel_pending_transaction,
    check_reason,
    flag_cancel,
    never_ran,
    retry_transaction,
    retry_workflow,
    terminate_transaction,
    terminate_unless_node,
    terminate_workflow,
    terminated,
)
from ._recovery import parent_terminated, request_transaction
from ._replay import History, ReplayResult, replay_history

__all__ = ["Cursor", "Entry", "History", "JournalKind", "ReplayResult", "WorkflowHost",
           "WorkflowInstance", "cancel_pending_transaction", "check_reason", "code_gone",
           "flag_cancel", "never_ran", "parent_terminated", "replay_history",
           "request_transaction", "retry_transaction",
           "retry_workflow",
           "terminate_transaction", "terminate_unless_node", "terminate_workflow",
           "terminated"]
