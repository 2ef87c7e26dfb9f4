"""A one-way flag with ``trio.Event``'s interface, whose event is made only when a task
waits for it.

Every workflow instance holds two (its end and its task's exit) for as long as it
lives, mostly never waited for: a ``trio.Event`` is two objects (the event and the
set of its waiters, about 270 bytes), each walked by the cyclic garbage collector
with the rest of a waiting workflow. A :class:`Flag` is one small object until a task
waits.
"""

from __future__ import annotations

import trio

__all__ = ["Flag"]


class Flag:
    """``is_set()``, ``set()`` and ``await wait()``, as a ``trio.Event``.

    >>> done = Flag()
    >>> done.is_set()
    False
    >>> done.set()    # wakes every task waiting in ``await done.wait()``
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<Flag {'set' if self._set else 'unset'}>"

    def is_set(self) -> bool:
        """True once :meth:`set` was called."""
        return self._set

    def set(self) -> None:
        """Set it (once; again is a no-op) and wake every task waiting for it."""
        if not self._set:
            self._set = True
            if self._event is not None:
                self._event.set()

    def wake_waiters(self) -> None:
        """Wake every task waiting for it without setting it (they find ``is_set()``
        false): the thing it stands for will not happen here (the node stopped)."""
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait(self) -> None:
        """Return once it is set (a checkpoint, as ``trio.Event.wait``, if it already is)."""
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()
