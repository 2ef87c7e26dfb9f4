"""The API every process uses: ``from garrison import process``.

Each function asks the calling process's host for its runtime and calls it, so
the same code is plain on a process host and journaled on a workflow host.
Outside a process every call raises :class:`~garrison.NotInProcess`.

Wherever a destination is taken (``to``), it is a :class:`~garrison.Pid`, its
text form ``str(pid)`` (``"workflows/order-17"``: a string with a ``/``) or a
registered name (never contains ``/``). A message topic is a ``str``.
"""

from __future__ import annotations

from typing import Any

from .actors._mailbox import Inbox
from .actors._runtime import current_runtime, runtime_var
from .actors._values import Event, Message, Pid, check_topic

__all__ = [
    "call",
    "cancel",
    "demonitor",
    "events",
    "inbox",
    "link",
    "listen",
    "lookup",
    "monitor",
    "pid",
    "register",
    "send",
    "set_options",
    "spawn",
    "spawn_linked",
    "spawn_linked_monitored",
    "spawn_monitored",
    "terminate",
    "unlink",
    "unregister",
]


def pid() -> Pid:
    """The pid of the calling process."""
    return current_runtime("process.pid()").current_pid()


async def spawn(target: Any, *args: Any, host: str | None = None, id: str | None = None) -> Pid:
    """Start ``target(*args)`` as a new process; returns its pid at once.

    ``host`` defaults to the caller's own host. ``target`` is an async function,
    an object with an async ``__call__`` or a config entry id. On a workflow host
    ``id=`` names the workflow, idempotently (as ``node.start_workflow``: the same id
    returns the existing workflow's pid, running or finished); on a process host it is
    a ``TypeError``::

        pid = await process.spawn(nightly_batch, day, host="app:workflows", id=f"batch-{day}")
    """
    return await current_runtime("process.spawn()").spawn(target, args, host, link=False,
                                                           monitor=False, id=id)


async def spawn_monitored(target: Any, *args: Any, host: str | None = None,
                          id: str | None = None) -> Pid:
    """Like :func:`spawn`; the caller receives the child's ``EXIT`` event."""
    return await current_runtime("process.spawn_monitored()").spawn(target, args, host,
                                                                    link=False, monitor=True,
                                                                    id=id)


async def spawn_linked(target: Any, *args: Any, host: str | None = None,
                       id: str | None = None) -> Pid:
    """Like :func:`spawn`, linked: a failure of either ends the other (see ``trap_links``)."""
    return await current_runtime("process.spawn_linked()").spawn(target, args, host, link=True,
                                                                 monitor=False, id=id)


async def spawn_linked_monitored(target: Any, *args: Any, host: str | None = None,
                                 id: str | None = None) -> Pid:
    """:func:`spawn_linked` and :func:`spawn_monitored` at once."""
    return await current_runtime("process.spawn_linked_monitored()").spawn(
        target, args, host, link=True, monitor=True, id=id
    )


async def send(to: Pid | str, topic: str, payload: Any = None) -> None:
    """Send a message; never blocks on the receiver.

    Order is kept per sender and receiver. A message to a dead pid is dropped and
    counted as a dead letter; a name nobody holds raises ``NoSuchProcess``.
    """
    if type(topic) is not str:
        topic = check_topic(topic, "process.send()")
    runtime = runtime_var.get(None)  # the hot path: current_runtime() without a call
    if runtime is None:
        runtime = current_runtime("process.send()")
    await runtime.send(to, topic, payload)


def inbox() -> Inbox[Message]:
    """The calling process's general inbox (messages of topics not ``listen``-ed)."""
    return current_runtime("process.inbox()").inbox()


def listen(topic: str) -> Inbox[Message]:
    """An inbox of messages of ``topic`` only.

    From now on those messages no longer reach the general inbox; the ones
    already waiting there move to this inbox, in order.
    """
    return current_runtime("process.listen()").listen(topic)


def events() -> Inbox[Event]:
    """The process's lifecycle events (``EXIT``, ``LINK_DOWN``, ``CANCEL``).

    Events are queued from the moment the process starts, so calling this late
    loses nothing.
    """
    return current_runtime("process.events()").events()


def link(to: Pid | str) -> None:
    """Link to a process: a failure of either ends the other (or is a ``LINK_DOWN``
    event for one that traps links). Linking to a process that is gone acts as a
    linked failure with reason ``noproc``."""
    current_runtime("process.link()").link(to)


def unlink(to: Pid | str) -> None:
    """Remove a link (both directions)."""
    current_runtime("process.unlink()").unlink(to)


def monitor(to: Pid | str) -> None:
    """Receive ``to``'s ``EXIT`` event when it ends; a dead pid gives an ``EXIT``
    with reason ``noproc`` at once."""
    current_runtime("process.monitor()").monitor(to)


def demonitor(to: Pid | str) -> None:
    """Stop monitoring ``to``."""
    current_runtime("process.demonitor()").demonitor(to)


def set_options(*, trap_links: bool | None = None) -> None:
    """``trap_links=True``: a linked process's failure arrives as a ``LINK_DOWN``
    event instead of ending this process."""
    if trap_links is not None and type(trap_links) is not bool:
        raise TypeError(f"process.set_options(trap_links=...) takes True or False, got "
                        f"{type(trap_links).__name__}: {trap_links!r}")
    current_runtime("process.set_options()").set_options(trap_links=trap_links)


async def cancel(to: Pid | str, timeout: Any = "5s") -> None:
    """Stop ``to``; returns once it has ended.

    A process that asked for :func:`events` gets a ``CANCEL`` event and may clean
    up; if it is still running after ``timeout`` it is terminated. Any other
    process is stopped by trio cancellation at its next checkpoint (its ``finally``
    blocks run) and exits normally.
    """
    await current_runtime("process.cancel()").cancel(to, timeout)


async def terminate(to: Pid | str) -> None:
    """End ``to`` at once (reason ``Terminated``); returns once it has ended."""
    await current_runtime("process.terminate()").terminate(to)


def register(name: str, scope: str = "node") -> None:
    """Register the calling process under ``name``; a name another live process
    holds raises ``ValueError`` naming the holder. Released when the process ends,
    before its ``EXIT`` is delivered.

    ``scope="cluster"`` (on a node of a cluster): unique across the cluster's nodes,
    and found by ``lookup`` and ``send`` on any of them (local names first); also
    released when the holder's node is lost. While the store is out of reach it raises
    ``StoreError`` (as does a ``lookup`` that must ask the store), and a holder's exit
    does not wait: its name is released once the store answers again."""
    if scope not in ("node", "cluster"):
        raise ValueError(f"process.register(scope={scope!r}): expected 'node' or 'cluster'")
    current_runtime("process.register()").register(name, scope)


def unregister(name: str) -> None:
    """Release ``name`` if the calling process holds it (a ``str``, else ``TypeError``,
    as ``register`` and ``lookup``: ``unregister(pid)`` is a mistake, not a no-op)."""
    runtime = current_runtime("process.unregister()")
    if not isinstance(name, str):
        raise TypeError(f"unregister() takes a registered name (a str), got "
                        f"{type(name).__name__}: {name!r}")
    runtime.unregister(name)


def lookup(name: str) -> Pid | None:
    """The pid registered under ``name``, or ``None``."""
    return current_runtime("process.lookup()").lookup(name)


async def call(to: Pid | str, topic: str, payload: Any = None, timeout: Any = "5s") -> Any:
    """Send a request and wait for the reply (the callee answers with
    ``await msg.reply(value)``).

    One ``timeout`` covers the whole exchange (``TimeoutError``); the callee is
    watched, so its death fails the call at once with ``ProcessError``; a reply
    that arrives after the call gave up is dropped.
    """
    if type(topic) is not str:
        topic = check_topic(topic, "process.call()")
    runtime = runtime_var.get(None)  # the hot path: current_runtime() without a call
    if runtime is None:
        runtime = current_runtime("process.call()")
    return await runtime.call(to, topic, payload, timeout)
