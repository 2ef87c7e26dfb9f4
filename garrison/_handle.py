"""Handles on workflows from outside: ``node.workflow(id)`` and ``node.workflows()``."""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import ProcessError, StoreError
from .actors._values import Pid
from .hosts.workflow._ids import (
    check_promise_name,
    check_rejection,
    check_signal_topic,
    check_state_key,
)
from .persistence import DamagedRecord, JournalRecord, WorkflowStatus, not_durable

if TYPE_CHECKING:
    from ._node import Node
    from .hosts.workflow import WorkflowHost

__all__ = ["PromiseHandle", "WorkflowHandle", "WorkflowSummary"]


@attrs.frozen
class WorkflowSummary:
    """One workflow as ``node.workflows()`` lists it."""

    workflow_id: str
    name: str
    status: WorkflowStatus
    search: dict[str, Any]
    memo: dict[str, Any]
    created: _dt.datetime | None
    updated: _dt.datetime | None


@contextlib.contextmanager
def _naming(workflow_id: str) -> Iterator[None]:
    """A ``ValueError`` of the checks inside said again, naming the workflow."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"workflow {workflow_id!r}: {exc}") from None


@attrs.frozen
class WorkflowHandle:
    """A workflow by id, from outside it.

    >>> handle = node.workflow("order-17")             # doctest: +SKIP
    >>> handle.status()                                # doctest: +SKIP
    <WorkflowStatus.WAITING: 'waiting'>
    >>> await handle.signal("approve", {"by": "ann"})  # doctest: +SKIP
    >>> await handle.result()                          # doctest: +SKIP
    'shipped'
    """

    node: Node = attrs.field(repr=False)
    host: WorkflowHost = attrs.field(repr=False)
    workflow_id: str

    @property
    def pid(self) -> Pid:
        """The workflow's pid (the same before and after a restart)."""
        return Pid(self.host.name, self.workflow_id)

    async def result(self) -> Any:
        """Wait for the end; the result (typed from the workflow's return annotation).

        Raises ``WorkflowFailed`` (with the workflow's ``ErrorInfo``),
        ``WorkflowCancelled``, or the ``NonDeterminismError`` that blocks it.
        """
        self.host.node.check_run("WorkflowHandle.result()")
        try:  # (_store_open's, without its generator at every result)
            return await self.host.result(self.workflow_id)
        except (DamagedRecord, RuntimeError) as exc:
            said = self._store_error(exc, "wait for the result of")
            if said is None:
                raise
            raise said from None

    def status(self) -> WorkflowStatus:
        """``pending``, ``running``, ``sleeping``, ``waiting``, ``blocked``,
        ``completed``, ``failed`` or ``cancelled``."""
        self.host.node.check_thread("WorkflowHandle.status()")
        with self._store_open("read the status of"):
            return self.host.status(self.workflow_id)

    def history(self) -> list[JournalRecord]:
        """The journal: records with ``.seq``, ``.kind``, ``.name``, ``.outcome``, ``.time``."""
        self.host.node.check_thread("WorkflowHandle.history()")
        with self._store_open("read the history of"):
            self.host.status(self.workflow_id)  # NoSuchWorkflow for an unknown id
            return self.host.store.journal(self.workflow_id)

    @contextlib.contextmanager
    def _store_open(self, doing: str) -> Iterator[None]:
        """A use of the store, which a node that has stopped has closed: its error names
        the node and how to reach the store instead of the store's bare ``is closed``
        (a store in memory went with the node: nothing reaches it)."""
        try:
            yield
        except (DamagedRecord, RuntimeError) as exc:
            said = self._store_error(exc, doing)
            if said is None:
                raise
            raise said from None

    def _store_error(self, exc: Exception, doing: str) -> Exception | None:
        """What :meth:`_store_open` raises for ``exc``, met as the handle did ``doing``;
        ``None``: ``exc`` itself."""
        if isinstance(exc, DamagedRecord):  # (a JSON error, as a read met it: the store's)
            return StoreError(self.host.store.path, f"{exc} (cannot {doing} it: "
                              f"{exc.fault})")
        if not self.node.stopped or "is closed" not in str(exc):
            return None
        if self.host.store.path is None:
            where = ("its store was in memory and went with the node: use the handle "
                     "before the node closes, e.g. await result() inside its block")
        else:
            where = ("use the store itself: garrison workflows --store PATH ..., or "
                     "garrison.persistence.open_store(PATH)")
        return RuntimeError(
            f"cannot {doing} workflow {self.workflow_id!r}: node {self.node.name!r} "
            f"has stopped, and its store with it ({where})")

    async def signal(self, topic: str, payload: Any = None) -> None:
        """Send the workflow a message (committed to its inbox before this returns).

        ``NoSuchWorkflow`` for an id the store does not hold (a mistyped id is not a
        silent dead letter); a finished workflow's message is a dead letter, as a
        ``node.send`` to its pid is. An empty ``topic`` is a ``ValueError``, as
        ``garrison workflows signal`` refuses it. A node that has closed raises
        ``ProcessError``, as its ``send`` does (nothing is read or written)."""
        node = self.host.node
        if node.closed:  # (not its closed store's error: what node.send says)
            raise ProcessError(f"cannot signal workflow {self.workflow_id!r}: "
                               f"{node.closed_text()}")
        if not isinstance(topic, str):
            raise TypeError(f"workflow {self.workflow_id!r}: signal(): a topic must be a "
                            f"str, got {type(topic).__name__}")
        self.host.node.check_run("WorkflowHandle.signal()")  # (before the message is committed)
        with _naming(self.workflow_id):
            check_signal_topic(topic)
        with self._store_open("signal"):
            await self.host.read_status(self.workflow_id)  # NoSuchWorkflow if unknown
        await self.node.send(self.pid, topic, payload)

    async def cancel(self) -> None:
        """Ask the workflow to stop: it sees ``WorkflowCancelled`` at its next durable
        operation, may compensate, and ends ``cancelled``. Returns once the request is
        in the store (a node that restarts resumes the workflow cancelled); a store that
        refuses it (a full disk) raises ``StoreError`` naming the store and the
        workflow, and nothing is requested (ask again once the store works)."""
        import trio

        self.host.node.check_run("WorkflowHandle.cancel()")
        with self._store_open("cancel"):
            if not await self.host.cancel_workflow(self.workflow_id):
                await self.host.read_status(self.workflow_id)  # NoSuchWorkflow if unknown
        await trio.lowlevel.checkpoint()

    async def terminate(self, reason: str | None = None) -> None:
        """End the workflow at once, without running its cancellation handlers (unlike
        :meth:`cancel`): it ends ``failed`` with the error ``Terminated: <reason>``, its
        ``EXIT`` reaches its watchers, its unfinished child workflows are terminated
        with it. Returns once it has ended; nothing happens to a finished workflow.
        ``reason=None``: ``terminated by WorkflowHandle.terminate()``; an empty or blank
        reason is a ``ValueError`` (as ``garrison workflows terminate --reason ''`` is
        refused), nothing ended."""
        from .hosts.workflow import terminate_workflow

        self.host.node.check_run("WorkflowHandle.terminate()")
        with self._store_open("terminate"):
            await terminate_workflow(self.host, self.workflow_id,
                                     "terminated by WorkflowHandle.terminate()"
                                     if reason is None else reason)

    async def retry(self) -> str:
        """Resume a ``failed`` or ``blocked`` workflow by replay from its journal: it runs
        from the top with ``workflow.info().attempt`` counted up, its recorded steps
        replay (none runs again) and it continues live after the journal's end; the
        final error of an activity that failed the workflow (the journal's last record)
        is taken back, so the code runs again from there. Returns what happens, in words
        (``"4 journal record(s) replay; the workflow runs again from seq 5, where
        activity 'app:charge' failed"``). ``ValueError`` for a workflow in any other
        status."""
        from .hosts.workflow import retry_workflow

        self.host.node.check_run("WorkflowHandle.retry()")
        return await retry_workflow(self.host, self.workflow_id)

    def state(self, key: str, default: Any = None) -> Any:
        """A value the workflow stored with ``workflow.set_state`` (committed ones);
        ``default`` for a key it has not set, ``NoSuchWorkflow`` for an unknown id."""
        check_state_key(key, "WorkflowHandle.state()")
        self.host.node.check_thread("WorkflowHandle.state()")
        with self._store_open(f"read state {key!r} of"):
            self.host.status(self.workflow_id)  # NoSuchWorkflow for an unknown id
            return self.host.store.get_state(self.workflow_id, key, default)

    def promise(self, name: str) -> PromiseHandle:
        """The workflow's durable promise ``name``, to resolve or reject from outside
        (``ValueError`` unless ``name`` is a non-empty string, as for
        ``workflow.promise``; a name longer than ``MAX_KEY_BYTES`` bytes of UTF-8 is
        refused when it is resolved or rejected, unless the workflow declared it: an
        older garrison's store may hold one)."""
        with _naming(self.workflow_id):
            return PromiseHandle(self, check_promise_name(name))


@attrs.frozen
class PromiseHandle:
    """A workflow's durable promise seen from outside.

    >>> await node.workflow("order-17").promise("approval").resolve({"by": "ann"})  # doctest: +SKIP
    """

    handle: WorkflowHandle
    name: str

    async def resolve(self, value: Any = None) -> None:
        """Complete the promise with ``value``; a second completion raises
        ``PromiseAlreadyCompleted``."""
        self.handle.host.node.check_run("PromiseHandle.resolve()")
        with self.handle._store_open(f"resolve promise {self.name!r} of"):
            await self.handle.host.complete_promise(self.handle.workflow_id, self.name,
                                                    "resolved", value)

    async def reject(self, message: str) -> None:
        """Reject the promise: the workflow's ``await`` raises ``PromiseRejected(message)``.

        ``message`` must be a non-empty string (``ValueError``), as ``garrison workflows
        reject`` says."""
        with _naming(self.handle.workflow_id):
            check_rejection(message)
        self.handle.host.node.check_run("PromiseHandle.reject()")
        with self.handle._store_open(f"reject promise {self.name!r} of"):
            await self.handle.host.complete_promise(self.handle.workflow_id, self.name,
                                                    "rejected", message)

    def status(self) -> str:
        """``pending``, ``resolved`` or ``rejected`` (``pending`` if not declared yet);
        ``NoSuchWorkflow`` for an unknown workflow id."""
        self.handle.host.node.check_thread("PromiseHandle.status()")
        with self.handle._store_open(f"read the status of promise {self.name!r} of"):
            self.handle.host.status(self.handle.workflow_id)  # NoSuchWorkflow if unknown
            rec = self.handle.host.store.get_promise(self.handle.workflow_id, self.name)
        return "pending" if rec is None else str(rec.status)


not_durable(WorkflowHandle, "a workflow's handle is not durable: store the workflow's id "
            "(handle.workflow_id) and call node.workflow(id) where it is used")
not_durable(PromiseHandle, "a promise's handle is not durable: store its workflow's id and "
            "its name, and call node.workflow(id).promise(name) where it is used")
