"""Blocking store calls from trio code: in a worker thread, so that a slow or stalled
database holds up the caller, not the node's event loop.

Under trio's ``MockClock`` (a test's virtual time) the call runs in the trio thread
instead: a worker thread would let virtual time jump while the store answers (as the
PostgreSQL store's group commit does for the same reason).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import trio

__all__ = ["run_blocking", "virtual_clock"]

T = TypeVar("T")


def virtual_clock() -> bool:
    """True under trio's ``MockClock``. (``trio.testing`` is not imported here: it
    imports pytest where that is installed; a clock of it exists only once it is.)"""
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
