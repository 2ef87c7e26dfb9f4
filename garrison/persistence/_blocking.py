"""Blocking store calls from trio code: in a worker thread, so that a slow or stalled
database holds up the caller, not the node's event loop.

Under trio's ``MockClock`` (a test's virtual time) the call runs in the trio thread
instead: a worker thread would let virtual time jump while the store answers (as the
PostgreSQL store's group commit does for the same reason). So it does in the tasks of
a ``garrison.testing`` environment whose clock of its own jumps the same way
(:func:`inline_store_calls`).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import trio

__all__ = ["inline_store_calls", "run_blocking", "virtual_clock"]

T = TypeVar("T")

#: store calls run in the trio thread in this context (see :func:`inline_store_calls`)
_inline: contextvars.ContextVar[bool] = contextvars.ContextVar("garrison_inline_store_calls",
                                                               default=False)


@contextlib.contextmanager
def inline_store_calls() -> Iterator[None]:
    """Within it, and in the tasks started within it (a node opened there: each copies
    the context it starts in), :func:`virtual_clock` is true: for a clock of virtual time
    other than trio's ``MockClock`` that also jumps once every task waits
    (``garrison.testing.workflow_env``'s)."""
    token = _inline.set(True)
    try:
        yield
    finally:
        _inline.reset(token)


def virtual_clock() -> bool:
    """True under trio's ``MockClock``, or within :func:`inline_store_calls`.
    (``trio.testing`` is not imported here: it imports pytest where that is installed; a
    clock of it exists only once it is.)"""
    if _inline.get():
        return True
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)


async def run_blocking(fn: Callable[..., T], *args: Any,
                       limiter: trio.CapacityLimiter | None = None) -> T:
    """``fn(*args)`` in a worker thread (in the trio thread under a ``MockClock``),
    one of ``limiter``'s (default: trio's). It runs to its end even if the caller is
    cancelled meanwhile (a write happens either way); the caller then sees the
    cancellation."""
    if virtual_clock():
        result = fn(*args)
        await trio.lowlevel.checkpoint()
        return result
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
