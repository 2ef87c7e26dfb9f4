"""Durable storage for garrison: the store protocol, its SQLite implementation,
and the one cattrs converter that turns values into durable JSON.

>>> from garrison.persistence import SQLiteStore, Transaction
>>> with SQLiteStore() as store:     # in memory; SQLiteStore("app.db") is durable
...     _ = store.write(Transaction().create_workflow("w1", "app:flow", [1, 2]))
...     store.get_workflow("w1").status
<WorkflowStatus.PENDING: 'pending'>
"""

from .._errors import NoSuchWorkflow, StoreLocked, StoreVersionError
from ._converter import RawJson, from_json, structure, to_json, unstructure
from ._schema import SCHEMA_VERSION
from ._sqlite import SQLiteStore, Transaction
from ._store import (
    FINAL_STATUSES,
    InboxRecord,
    JournalRecord,
    PromiseRecord,
    PromiseStatus,
    Store,
    StoreStatistics,
    TimerRecord,
    WakeupRecord,
    WorkflowRecord,
    WorkflowStatus,
)

__all__ = [
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "InboxRecord",
    "JournalRecord",
    "NoSuchWorkflow",
    "PromiseRecord",
    "PromiseStatus",
    "RawJson",
    "SQLiteStore",
    "Store",
    "StoreLocked",
    "StoreStatistics",
    "StoreVersionError",
    "TimerRecord",
    "Transaction",
    "WakeupRecord",
    "WorkflowRecord",
    "WorkflowStatus",
    "from_json",
    "structure",
    "to_json",
    "unstructure",
]
