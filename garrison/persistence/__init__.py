"""Durable storage for garrison: the store protocol, its SQLite and PostgreSQL
implementations, the store-neutral transaction of named operations, group commit, and
the one cattrs converter that turns values into durable JSON.

:func:`open_store` turns what a user passes as ``store=`` (``None``, a file path, a
``postgresql://`` URL, or a store object) into a store. ``PostgresStore`` is imported
on first use: ``import garrison`` works without psycopg installed.

>>> from garrison.persistence import SQLiteStore, Transaction
>>> with SQLiteStore() as store:     # in memory; SQLiteStore("app.db") is durable
...     _ = store.write(Transaction().create_workflow("w1", "app:flow", [1, 2]))
...     store.get_workflow("w1").status
<WorkflowStatus.PENDING: 'pending'>
"""

import contextlib
import os
import uuid
from typing import TYPE_CHECKING, Any

from .._errors import (
    DedupKeyTaken,
    NoSuchSchedule,
    NoSuchWorkflow,
    StoreError,
    StoreLocked,
    StoreVersionError,
)
from . import _file
from ._blocking import inline_store_calls, run_blocking
from ._converter import (
    LEAF_TEXT,
    RawJson,
    check_search_value,
    from_json,
    not_durable,
    structure,
    to_json,
    unstructure,
)
from ._group_commit import Busy
from ._records import (
    FINAL_STATUSES,
    MAX_TIME,
    MIN_TIME,
    DamagedRecord,
    InboxRecord,
    JournalHead,
    JournalRecord,
    PromiseRecord,
    PromiseStatus,
    QueuePlace,
    QueueRecord,
    ResumeRows,
    ScheduleRecord,
    StoreStatistics,
    TimerRecord,
    WakeupRecord,
    WorkflowRecord,
    WorkflowStatus,
    no_match,
    parse_status,
    requested_attempt,
    state_digest,
)
from ._schema import SCHEMA_VERSION
from ._sqlite import SQLiteStore
from ._store import Store
from ._transaction import Op, OperatorTransaction, Transaction, WorkflowEnded

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = [
    "FINAL_STATUSES",
    "LEAF_TEXT",
    "MAX_TIME",
    "MIN_TIME",
    "SCHEMA_VERSION",
    "Busy",
    "DamagedRecord",
    "DedupKeyTaken",
    "InboxRecord",
    "JournalHead",
    "JournalRecord",
    "NoSuchSchedule",
    "NoSuchWorkflow",
    "Op",
    "OperatorTransaction",
    "PostgresStore",
    "PromiseRecord",
    "PromiseStatus",
    "QueuePlace",
    "QueueRecord",
    "RawJson",
    "ResumeRows",
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
    "WorkflowEnded",
    "WorkflowRecord",
    "WorkflowStatus",
    "check_search_value",
    "create_store",
    "from_json",
    "inline_store_calls",
    "is_postgres_url",
    "migrate_store",
    "no_match",
    "not_durable",
    "open_store",
    "parse_status",
    "requested_attempt",
    "run_blocking",
    "state_digest",
    "structure",
    "to_json",
    "unstructure",
]


_POSTGRES_MISSING = (
    "the PostgreSQL store needs psycopg, which is not installed: "
    "pip install 'garrison[postgres]'"
)


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        try:
            from ._postgres import PostgresStore
        except ImportError as exc:
            if getattr(exc, "name", None) in ("psycopg", "psycopg_binary", "psycopg_c"):
                raise ImportError(_POSTGRES_MISSING, name="psycopg") from exc
            raise
        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_postgres_url(spec: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://"))


def open_store(spec: Any, *, lock: bool = True, synchronous: str | None = None) -> Any:
    """The store ``spec`` names: ``None`` an in-memory SQLite store, a file path a
    durable :class:`SQLiteStore`, a ``postgresql://user@host:port/db`` URL a
    :class:`PostgresStore` (``?schema=name`` picks the schema), a store object itself.

    ``lock=False`` opens as a tool (reads, and writes the node picks up);
    ``synchronous`` (``"normal"`` or ``"full"``; ``None``: the store's default) applies
    to a store opened here, not to a store object. Errors are those of the stores
    (``StoreError``, ``StoreLocked``, ``StoreVersionError``, ``FileNotFoundError`` for a
    tool on a missing file, ``ImportError`` naming ``garrison[postgres]`` when psycopg
    is missing).
    """
    if hasattr(spec, "commit") and hasattr(spec, "write"):
        return spec
    kw: dict[str, Any] = {"lock": lock}
    if synchronous is not None:
        kw["synchronous"] = synchronous
    if is_postgres_url(spec):
        return __getattr__("PostgresStore")(spec, **kw)
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f"store= expects None, a file path, a postgresql:// URL or a store, "
            f"got {type(spec).__name__}"
        )
    return SQLiteStore(spec, **kw)


def create_store(spec: str) -> bool:
    """Create the store ``spec`` names (a SQLite file, or the schema of a
    ``postgresql://`` URL) as a node opening it the first time would, unless it exists;
    nothing runs, and an existing store is left as it is (not migrated). True if it was
    created here: what a tool that writes (``garrison workflows start``) does where no
    node has opened the store yet."""
    if is_postgres_url(spec):
        from ._postgres import migrate_unused

        return migrate_unused(spec, only_create=True)
    try:
        os.stat(spec)
        return False
    except FileNotFoundError:
        pass
    except OSError:  # (cannot tell: a folder it may not search; its open says so)
        return False
    # (a symbolic link to a store not made yet: made where it leads, as a node makes it)
    real = os.path.realpath(spec)
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        SQLiteStore(spec).close()  # (its StoreError names the missing folder)
    why = _file.cannot_create_in(folder)
    if why is not None:
        raise StoreError(spec, f"cannot create it: cannot create files in {folder!r}: {why}")
    # Made whole beside it, then linked into place (a link never replaces a file): the
    # store's own lock is never taken, so a node opening it meanwhile is not refused,
    # and an opener never finds it half made. The one that comes first wins.
    made = os.path.join(folder, f".{os.path.basename(real)}.{uuid.uuid4().hex}.new")
    try:
        try:
            SQLiteStore(made).close()
        except StoreError as exc:  # (named as the store given, not its temporary name)
            raise StoreError(spec, f"cannot create it: {exc.reason}") from exc
        try:
            os.link(made, real)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links (FAT, some network ones)
            return _create_locked(spec)
        return True
    finally:
        for leftover in (made, made + "-wal", made + "-shm", _file.lock_file(made),
                         _file.doorbell_file(made)):
            with contextlib.suppress(OSError):
                os.remove(leftover)


def _create_locked(spec: str) -> bool:
    """Create the SQLite store ``spec`` as a node's first open does, holding its lock
    (on a file system without hard links the new file is renamed into place, which
    could replace a file another opener made meanwhile, were the lock not held): True
    if it was created here. A node holding the lock has made it (or is making it)."""
    if os.path.exists(spec):
        return False
    try:
        SQLiteStore(spec).close()
    except StoreLocked:
        return False
    return True


def migrate_store(spec: str) -> None:
    """Migrate the store ``spec`` names (a SQLite file that exists, or a
    ``postgresql://`` URL) to this garrison's schema, as a node opening it would, and
    run nothing: for a copy of a store of an older garrison (which cannot open it
    after that). A store a node runs is refused (``StoreLocked``)."""
    if is_postgres_url(spec):
        from ._postgres import migrate_unused

        migrate_unused(spec)
        return
    if not os.path.exists(spec):
        raise FileNotFoundError(spec)
    SQLiteStore(spec).close()
