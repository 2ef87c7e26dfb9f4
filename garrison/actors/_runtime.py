"""The runtime interface behind ``garrison.process``.

Each host gives every process it runs an object implementing :class:`Runtime`;
``garrison.process`` functions look it up in a context variable and call it.
The process host's runtime acts at once; the workflow host's runtime journals.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import NotInProcess

if TYPE_CHECKING:
    from ._mailbox import Inbox
    from ._values import Message, Pid


class Runtime(Protocol):
    """What a host provides to the code of one process."""

    def current_pid(self) -> Pid: ...
    async def spawn(
        self, target: Any, args: tuple[Any, ...], host: str | None, *, link: bool,
        monitor: bool, id: str | None = None, supervised: bool = False,
    ) -> Pid: ...
    async def send(self, to: Pid | str, topic: str, payload: Any) -> None: ...
    def reply(self, msg: Message, value: Any) -> Awaitable[None]: ...
    def inbox(self) -> Inbox: ...
    def listen(self, topic: str) -> Inbox: ...
    def events(self) -> Inbox: ...
    def link(self, to: Pid | str) -> None: ...
    def unlink(self, to: Pid | str) -> None: ...
    def monitor(self, to: Pid | str) -> None: ...
    def demonitor(self, to: Pid | str) -> None: ...
    def set_options(self, *, trap_links: bool | None = None) -> None: ...
    def supervises(self, children: Callable[[], list[Pid]]) -> None:
        """The calling process is a ``Supervisor``: ``children()`` gives its live
        children in the order it stops them (reverse start order), which a node that
        stops follows, stopping them before the supervisor."""
    def hold_start(self) -> Callable[[], None]:
        """Who waits for the calling process to run (the service manager, starting a
        service) waits on until the returned function is called or the process ends:
        a ``Supervisor`` run as a process of its own runs once its children all do."""
    async def cancel(self, to: Pid | str, timeout: float) -> None: ...
    async def terminate(self, to: Pid | str) -> None: ...
    def register(self, name: str, scope: str = "node") -> None: ...
    def unregister(self, name: str) -> None: ...
    def lookup(self, name: str) -> Pid | None: ...
    def call(self, to: Pid | str, topic: str, payload: Any, timeout: float
             ) -> Awaitable[Any]: ...  # (an async def, or a def returning the awaitable)


#: the runtime of the calling task; ``runtime_var.get(None)`` is :func:`runtime_or_none`
#: without a call, for the hot paths of ``garrison.process`` and ``msg.reply``
runtime_var: contextvars.ContextVar[Runtime] = contextvars.ContextVar("garrison_process")


def current_runtime(what: str = "this call") -> Runtime:
    """The runtime of the calling process, or :class:`NotInProcess`."""
    try:
        return runtime_var.get()
    except LookupError:
        raise NotInProcess(
            f"{what} must run inside a garrison process (spawn it with node.spawn or "
            "process.spawn, or start it with garrison.run)"
        ) from None


def runtime_or_none() -> Runtime | None:
    """The runtime of the calling process, or ``None`` outside any process."""
    return runtime_var.get(None)


def set_runtime(runtime: Runtime) -> contextvars.Token[Runtime]:
    return runtime_var.set(runtime)

