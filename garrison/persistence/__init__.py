"""Durable storage for garrison: the store protocol, its SQLite implementation,
the store-neutral transaction of named operations, group commit, and the one cattrs
converter that turns values into durable JSON.

>>> from garrison.persistence import SQLiteStore, Transaction
>>> with SQLiteStore() as store:     # in memory; SQLiteStore("app.db") is durable
...     _ = store.write(Transaction().create_workflow("w1", "app:flow", [1, 2]))
...     store.get_workflow("w1").status
<WorkflowStatus.PENDING: 'pending'>
"""

from .._errors import (
    DedupKeyTaken,
    NoSuchSchedule,
    NoSuchWorkflow,
    StoreError,
    StoreLocked,
    StoreVersionError,
)
from ._converter import RawJson, from_json, structure, to_json, unstructure
from ._records import (
    FINAL_STATUSES,
    MAX_TIME,
    InboxRecord,
    JournalRecord,
    PromiseRecord,
    PromiseStatus,
    QueueRecord,
    ScheduleRecord,
    StoreStatistics,
    TimerRecord,
    WakeupRecord,
    WorkflowRecord,
    WorkflowStatus,
    parse_status,
)
from ._schema import SCHEMA_VERSION
from ._sqlite import SQLiteStore
from ._store import Store
from ._transaction import Op, Transaction

__all__ = [
    "FINAL_STATUSES",
    "MAX_TIME",
    "SCHEMA_VERSION",
    "DedupKeyTaken",
    "InboxRecord",
    "JournalRecord",
    "NoSuchSchedule",
    "NoSuchWorkflow",
    "Op",
    "PromiseRecord",
    "PromiseStatus",
    "QueueRecord",
    "RawJson",
    "SQLiteStore",
    "ScheduleRecord",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreStatistics",
    "StoreVersionError",
    "TimerRecord",
    "Transaction",
    "WakeupRecord",
    "WorkflowRecord",
    "WorkflowStatus",
    "from_json",
    "parse_status",
    "structure",
    "to_json",
    "unstructure",
]
