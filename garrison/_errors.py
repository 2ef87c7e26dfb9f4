"""The exception types of garrison.

Every error a user can catch is importable from ``garrison`` itself.
"""

from __future__ import annotations

import copy as _copy
import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actors._values import ErrorInfo, Pid


class GarrisonError(Exception):
    """Base class of every error garrison raises on purpose.

    Pickled or copied (``copy.copy``, ``copy.deepcopy``), one is the same type with the
    same message and attributes: it is built again from its ``args`` and attributes,
    not by its constructor, which words its own arguments."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuilt, (type(self), self.args), self.__dict__ or None)


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """(Unpickling) an error of ``cls`` whose ``args`` are ``args``, its constructor
    not run again (the attributes follow, as pickle's state)."""
    exc = cls.__new__(cls)
    exc.args = args
    return exc


def raised_again(exc: BaseException) -> BaseException:
    """A copy of ``exc`` (its type, message, attributes, notes and cause) with no
    traceback, to raise once more: an error kept and raised to many callers (a store's
    failure to every workflow of its batch, a blocked workflow's error to each
    ``result()``) would gather every raise's frames in its one traceback, and callers'
    tasks switching in between would mix them. ``exc`` itself when it cannot be copied."""
    copy: BaseException
    try:
        if isinstance(exc, OSError | BaseExceptionGroup):
            # (rebuilt by the constructor, as pickle does: errno, strerror and filename,
            # or the group's exceptions)
            copy = _copy.copy(exc)
        else:  # (no __init__ again: garrison's errors format their arguments there)
            copy = type(exc).__new__(type(exc))
            copy.args = exc.args
            copy.__dict__.update(vars(exc))
    except Exception:
        return exc
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        copy.__notes__ = list(notes)
    copy.__cause__ = exc.__cause__
    copy.__suppress_context__ = exc.__suppress_context__
    return copy


class NotInProcess(GarrisonError, RuntimeError):
    """A ``garrison.process`` / ``garrison.workflow`` call was made outside a process."""


class NoSuchProcess(GarrisonError, LookupError):
    """A registered name (or entry id) that nobody holds was used as a destination.

    ``why``: for a service's id, why that service runs no process (between restarts
    after its error, gave up, not started...), said after the name."""

    def __init__(self, name: object, why: str | None = None) -> None:
        said = f"no process is registered as {name!r}"
        super().__init__(said if why is None else f"{said}: {why}")
        self.name = name
        self.why = why


class ProcessError(GarrisonError):
    """A process ended abnormally; ``.error`` is its :class:`ErrorInfo`.

    Raised by ``Node.wait`` for a failed process and by ``process.call`` when the
    callee dies before it replies.
    """

    def __init__(self, message: str, *, pid: Pid | None = None, error: ErrorInfo | None = None):
        super().__init__(message)
        self.pid = pid
        self.error = error
        if error is not None and error.traceback:
            # (raised where it is awaited, its frames are garrison's: the traceback of the
            # error, a process's own or, a supervisor's, its child's, says which line)
            self.add_note(f"traceback of the error, where it was raised:\n"
                          f"{error.traceback.rstrip()}")


class PayloadError(GarrisonError, TypeError):
    """A value could not be converted to or from durable JSON; names the offending type."""


class ConfigError(GarrisonError, ValueError):
    """A configuration problem; the message names the file, entry and field.

    ``.problems`` holds every problem found (a config is checked whole, not
    stopped at the first mistake).
    """

    def __init__(self, problems: list[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class NonDeterminismError(GarrisonError):
    """Replay of a workflow took a different path than its journal records."""

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str | None = None,
        seq: int | None = None,
        recorded: Any = None,
        current: Any = None,
        where: str | None = None,
    ) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.seq = seq
        self.recorded = recorded
        self.current = current
        #: the line of the workflow's code that took the other path, as a traceback's
        #: frame names it (``File "app/orders.py", line 21, in order_workflow``);
        #: ``None`` where no code of it ran there (it returned, or was not called)
        self.where = where


class WorkflowFailed(GarrisonError):
    """A workflow ended with an error; ``.error`` is its :class:`ErrorInfo`."""

    def __init__(self, workflow_id: str, error: ErrorInfo) -> None:
        super().__init__(f"workflow {workflow_id!r} failed: {error}")
        self.workflow_id = workflow_id
        self.error = error
        if error.traceback:
            # (this error is raised where its result is awaited, so its own frames are
            # garrison's: the workflow's traceback, recorded where it raised, is what
            # says which line failed; a test's report and a printed traceback show notes)
            self.add_note(f"traceback of workflow {workflow_id!r}, where it raised:\n"
                          f"{error.traceback.rstrip()}")


class WorkflowCancelled(GarrisonError):
    """The workflow was cancelled (raised inside it at its next durable operation,
    and by ``WorkflowHandle.result()`` outside)."""


class ActivityError(GarrisonError):
    """An activity failed for good (after its retries); ``.error`` is its :class:`ErrorInfo`.

    ``str(exc)`` reads ``TypeName: message`` of the activity's own exception,
    the same on the first run and on replay.
    """

    def __init__(self, error: ErrorInfo, *, name: str | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.name = name
        if error.traceback:
            # (raised in the workflow from the recorded failure, its frames are the
            # workflow's and garrison's: the activity's own traceback, recorded where it
            # raised, says which line failed, in the workflow's traceback too)
            # (a result its annotation refused fails where it is restored: not "where the
            # activity raised")
            of = "the activity" if name is None else f"activity {name!r}"
            self.add_note(f"the failure of {of}, as recorded:\n{error.traceback.rstrip()}")


class PromiseRejected(GarrisonError):
    """A durable promise was rejected from outside; ``.reason`` is the rejection's message
    (the same live and on replay), ``.promise`` the promise's name."""

    def __init__(self, message: str, *, reason: str = "", promise: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.promise = promise


class PromiseAlreadyCompleted(GarrisonError):
    """A durable promise was resolved or rejected a second time."""


class StoreLocked(GarrisonError, RuntimeError):
    """A durable store is already open (by another node, in this or another process).

    ``.path`` is the store's file as given, ``.lock_file`` the lock file (beside the
    resolved file: a symlink to a held store is refused too). A PostgreSQL store is
    locked by an advisory lock of the node's connection; ``held`` names its holder
    (application name, client address, server pid). Tools that only read,
    or queue writes for the running node, open the store with
    ``SQLiteStore(path, lock=False)``.
    """

    def __init__(self, path: str, lock_file: str | None = None, *, held: str | None = None,
                 hint: str | None = None, cli_hint: str | None = None) -> None:
        sqlite = held is None
        if held is None:
            lock_file = lock_file if lock_file is not None else path + ".lock"
            held = f"lock file {lock_file!r}"
        #: what is wrong, without advice: ``store 'x.db' is locked: ... (lock file ...)``
        self.reason = f"store {path!r} is locked: another node has it open ({held})"
        #: the advice for a Python caller (part of ``str(exc)``)
        kind = "SQLiteStore" if sqlite else "PostgresStore"
        self.hint = hint or (
            f"stop that node first, or read it and queue writes for that node beside it "
            f"with {kind}({path!r}, lock=False), as garrison workflows does (and "
            "open_node(store=that) runs a node beside it)")
        self._cli_hint = cli_hint
        super().__init__(f"{self.reason}; {self.hint}")
        self.path = path
        #: the lock file (SQLite), or ``None`` (a PostgreSQL store: ``held`` says who)
        self.lock_file = lock_file
        #: who holds it: ``lock file '...'``, or for PostgreSQL the holder's description
        self.held = held

    @property
    def cli_message(self) -> str:
        """The message for a command-line user (``garrison run``): the reason, and what
        to do from the shell instead of the Python ``lock=False`` hint."""
        import shlex

        hint = self._cli_hint or (
            f"stop that node first, or leave it running and inspect and drive its "
            f"workflows beside it with `garrison workflows --store {shlex.quote(self.path)} "
            "list` (and show, signal, cancel, ...)")
        return f"{self.reason}; {hint}"


class StoreVersionError(GarrisonError, RuntimeError):
    """A store's schema version is not the one this code works with."""

    def __init__(self, path: str, found: int, expected: int, hint: str = "") -> None:
        message = (
            f"store {path!r} has schema version {found}, "
            f"this version of garrison knows schema version {expected}"
        )
        super().__init__(message + (f": {hint}" if hint else ""))
        self.path = path
        self.found = found
        self.expected = expected


class StoreError(GarrisonError, RuntimeError):
    """A durable store cannot be used: it stayed unreachable or locked past the retries,
    its file was deleted, truncated or damaged, or its disk refuses writes.

    ``.path`` names the store (a file path, or a server for a database store). A
    transient failure (another connection holding the write lock for a moment) is
    retried with backoff and never surfaces; this is what remains when retrying did
    not help. Workflows are never marked failed because of it: they resume from their
    journal once the store works again.
    """

    def __init__(self, path: str | None, message: str) -> None:
        where = path if path is not None else "<memory>"
        super().__init__(f"store {where!r}: {message}")
        self.path = path
        self.reason = message

    def reason_at(self, path: str | None) -> str:
        """What is wrong, without the store's name when the store is ``path`` (for a
        message that names that store already), else the whole text."""
        return self.reason if self.path == path else str(self)


class WorkflowMoved(StoreError):
    """A workflow's writes were refused because another node of the cluster runs it
    now (its owner's lease lapsed and it was taken over, or the node handed it over
    while draining). The workflow stops on this node at once, nothing recorded as its
    outcome; ``.workflow_id`` names it (``None``: every workflow of a node whose lease
    lapsed, or that hands them over); ``.lease_lapsed``: they move because the node's
    lease lapsed (the node logs one line of how many left, not one a workflow)."""

    def __init__(self, path: str | None, workflow_id: str | None, message: str, *,
                 lease_lapsed: bool = False) -> None:
        super().__init__(path, message)
        self.workflow_id = workflow_id
        self.lease_lapsed = lease_lapsed


class NoSuchWorkflow(GarrisonError, LookupError):
    """A workflow id that is not in the store."""

    def __init__(self, workflow_id: str, hint: str = "") -> None:
        super().__init__(f"no workflow with id {workflow_id!r} in the store{hint}")
        self.workflow_id = workflow_id


class NoSuchSchedule(GarrisonError, LookupError):
    """A schedule id that is not in the store; ``known`` (the store's schedule ids)
    lets the message suggest the id meant: a config schedule's namespaced id for its
    bare name, or the id it is a typo of (:func:`id_hint`)."""

    def __init__(self, schedule_id: str, known: Iterable[str] = ()) -> None:
        super().__init__(f"no schedule with id {schedule_id!r} in the store"
                         f"{id_hint(schedule_id, known)}")
        self.schedule_id = schedule_id


def schedule_hint(schedule_id: str, known: Iterable[str]) -> str:
    """`` (did you mean 'app:nightly'?)`` when ``schedule_id`` is the bare name of
    exactly one of the ``known`` ids (a config schedule's id carries its namespace)."""
    near = _named(schedule_id, known)
    return f" (did you mean {near!r}?)" if near is not None else ""


def _named(name: str, known: Iterable[str]) -> str | None:
    """The one id of ``known`` whose name (after its namespace) ``name`` is, or ``None``."""
    near = [k for k in known if k != name and k.rpartition(":")[2] == name]
    return near[0] if len(near) == 1 else None


def close_match(key: object, allowed: Iterable[str]) -> str | None:
    """The one of ``allowed`` that ``key`` is most likely a typo of (``evry``: ``every``),
    or ``None``: the one rule of every "did you mean" garrison says."""
    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.75)
    return close[0] if close else None


def closest_id(wanted: str, known: Iterable[str]) -> str | None:
    """The id of ``known`` that ``wanted`` most likely meant: the one whose name it is
    (``cache`` for ``app:cache``: an id carries its namespace, see
    :func:`schedule_hint`), else the one whose name its name is a typo of, in its
    namespace (``app:handlr``; ``handlr``: in any one), else the one it is a typo of
    (``ap:handler``), or ``None``. (Names are compared apart from their namespace,
    which would make any two short ids of one namespace look alike.)"""
    known = [k for k in known if k != wanted]
    named = _named(wanted, known)
    if named is not None:
        return named
    namespace, colon, name = wanted.rpartition(":")
    by_name: dict[str, list[str]] = {}
    for k in known:
        if not colon or k.rpartition(":")[0] == namespace:
            by_name.setdefault(k.rpartition(":")[2], []).append(k)
    guess = close_match(name, by_name)
    if guess is not None:
        return by_name[guess][0] if len(by_name[guess]) == 1 else None
    return close_match(wanted, [k for k in known if k.rpartition(":")[0] != namespace]) \
        if colon else None


def id_hint(wanted: str, known: Iterable[str]) -> str:
    """`` (did you mean 'app:cache'?)`` for the id :func:`closest_id` finds, else ``""``."""
    near = closest_id(wanted, known)
    return f" (did you mean {near!r}?)" if near is not None else ""


class NoSuchEntry(GarrisonError, KeyError):
    """A config entry id that names no entry of the config, given as a spawn target
    (``node.spawn("app:nope")``, a ``ChildSpec``'s, ``start_workflow``'s). A ``KeyError``,
    as a missing key of the config's entries, but its text is its message (a
    ``KeyError``'s is the quoted repr of it); ``.entry_id`` is the id."""

    def __init__(self, entry_id: str, detail: str = "", *, prefix: str = "") -> None:
        super().__init__(f"{prefix}no config entry {entry_id!r}{detail}")
        self.entry_id = entry_id
        self.detail = detail

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DedupKeyTaken(GarrisonError):
    """A store's answer to a start whose ``dedup`` key an unfinished workflow of the
    store already holds (``.workflow_id``): nothing of that start was written. The
    workflow host turns it into the holder's pid; users never see it."""

    def __init__(self, dedup: str, workflow_id: str) -> None:
        super().__init__(f"dedup key {dedup!r} is held by workflow {workflow_id!r}")
        self.dedup = dedup
        self.workflow_id = workflow_id
