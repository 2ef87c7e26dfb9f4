"""Activities: the side-effecting steps of a workflow, with their retry policy.

Inside a workflow an activity call is journaled: it runs (with retries) until it
succeeds or fails for good, and only that final outcome is recorded; a replay
returns the recorded result (or raises the recorded :class:`~garrison.ActivityError`)
without running the function again. Outside a workflow an activity is a plain call.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ._context import WorkflowScope, current_workflow
from ._duration import parse_duration
from ._targets import main_function_module
from .actors._runtime import runtime_var

__all__ = ["ActivityOptions", "RetryPolicy", "activity"]

F = TypeVar("F", bound=Callable[..., Any])


def _delay_seconds(value: Any) -> float:
    seconds = parse_duration(value, what="retry delay")
    if math.isinf(seconds):  # (as a service's restart delays)
        raise ValueError(f"invalid retry delay {value!r}: a retry that waits for ever "
                         "neither runs again nor fails the activity; give a finite "
                         "duration (or max_attempts=1: no retry)")
    return seconds


def _check_max_delay(inst: Any, _attr: object, value: float) -> None:
    if value < inst.initial_delay:
        raise ValueError(f"max_delay ({value:g}s) is shorter than initial_delay "
                         f"({inst.initial_delay:g}s): max_delay caps every retry delay, so "
                         "the first would be cut to it; give a max_delay of at least "
                         "initial_delay (the default max_delay is 1m)")


def _check_attempts(_inst: object, _attr: object, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"max_attempts must be an int >= 1 (it counts the first attempt), "
                         f"got {value!r}")


def _backoff(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1.0:
        raise ValueError(f"backoff must be a number >= 1.0, got {value!r}")
    return float(value)


def _check_non_retryable(_inst: object, _attr: object, value: tuple[Any, ...]) -> None:
    for item in value:
        if not (isinstance(item, str) or (isinstance(item, type)
                                           and issubclass(item, BaseException))):
            raise ValueError(f"non_retryable holds exception classes or their names, "
                             f"got {item!r}")


def _to_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | type):
        return (value,)
    return tuple(value)


@attrs.frozen
class RetryPolicy:
    """How often and how fast an activity is retried.

    ``max_attempts`` counts every attempt including the first; the delay before
    attempt ``n + 1`` is ``initial_delay * backoff ** (n - 1)`` capped at
    ``max_delay`` (no shorter than ``initial_delay``: ``ValueError``).
    ``non_retryable`` holds exception classes or their names (``"ValueError"``) that
    fail the activity at once.

    >>> RetryPolicy(max_attempts=5, initial_delay="100ms").delay(3)
    0.4
    >>> RetryPolicy(max_attempts=1)   # no retries
    RetryPolicy(max_attempts=1, initial_delay=1.0, backoff=2.0, max_delay=60.0, non_retryable=())
    """

    max_attempts: int = attrs.field(default=3, validator=_check_attempts)
    initial_delay: float = attrs.field(default=1.0, converter=_delay_seconds)
    backoff: float = attrs.field(default=2.0, converter=_backoff)
    max_delay: float = attrs.field(default=60.0, converter=_delay_seconds,
                                   validator=_check_max_delay)
    non_retryable: tuple[Any, ...] = attrs.field(default=(), converter=_to_tuple,
                                                 validator=_check_non_retryable)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            grown = self.initial_delay * self.backoff ** (attempt - 1)
        except OverflowError:  # (a long policy's growth passes what a float holds;
            return float(self.max_delay) if self.initial_delay else 0.0  # none grows none)
        return float(min(self.max_delay, grown))

    def retryable(self, exc: BaseException) -> bool:
        """False when ``exc`` is one of :attr:`non_retryable` (by class or by name)."""
        names = {cls.__name__ for cls in type(exc).__mro__}
        names |= {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}
        for item in self.non_retryable:
            if isinstance(item, str):
                if item in names:
                    return False
            elif isinstance(exc, item):
                return False
        return True


DEFAULT_RETRY = RetryPolicy()


def check_retry(retry: Any, where: str) -> None:
    """``TypeError`` naming ``where`` unless ``retry`` is a :class:`RetryPolicy` or
    ``None``."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"{where}: retry= takes a garrison.RetryPolicy (or None), got "
                        f"{type(retry).__name__}: {retry!r}")


#: the journal names of every ``@activity`` defined so far (a mock by name is checked
#: against them: ``garrison.testing``'s ``mock_activity``)
_ACTIVITY_NAMES: set[str] = set()


def is_activity_name(name: str) -> bool:
    """True if an ``@activity`` with this journal name has been defined (imported)."""
    return name in _ACTIVITY_NAMES


@attrs.frozen
class ActivityOptions:
    """What ``@activity`` attached to a function: its name, retry policy and timeout."""

    name: str
    retry: RetryPolicy | None = None
    timeout: float | None = None


def activity_name(fn: Any) -> str:
    """The journal name of an activity: ``module:qualname`` (or its ``@activity(name=)``)."""
    opts = getattr(fn, "__garrison_activity__", None)
    if opts is not None:
        return str(opts.name)
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    module = getattr(inner, "__module__", None) or "?"
    qualname = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    if module == "__main__":  # a script run as `python app.py`: app elsewhere
        module = main_function_module(inner, qualname)
    return f"{module}:{qualname}"


def _check_name(name: object) -> None:
    """An ``@activity(name=)``: a non-empty ``str`` a store can hold (it is journaled,
    and a replay compares it as text)."""
    said = "@garrison.activity: name= takes a non-empty str (the activity's journal name)"
    if not isinstance(name, str):
        raise TypeError(f"{said}, got {type(name).__name__}: {name!r}")
    if not name.strip():
        raise ValueError(f"{said}, got {name!r}")
    if "\x00" in name:  # (as every store refuses it: PostgreSQL's text cannot hold it)
        raise ValueError(f"{said}: it cannot hold the NUL character (\\x00), got {name!r}")
    try:  # (a lone surrogate: no store encodes it, nor a metrics scrape its label)
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{said}: it cannot hold the lone surrogate character "
                         f"{name[exc.start]!r}, which is not valid text and cannot be "
                         f"stored, got {name!r}") from None


def activity(
    fn: F | None = None,
    *,
    retry: RetryPolicy | None = None,
    timeout: Any = None,
    name: str | None = None,
) -> Any:
    """Mark a function as an activity of workflows.

    Called inside a workflow, the call is journaled like ``workflow.call(fn, ...)``
    with this ``retry`` policy and per-attempt ``timeout``; called anywhere else
    it is a plain call. The function may be ``async def`` (awaited in the
    workflow's task) or plain ``def`` (run in a worker thread so it cannot block
    the node; inside a workflow the call returns an awaitable, elsewhere the
    plain result)::

        @garrison.activity(retry=RetryPolicy(max_attempts=5), timeout="10s")
        async def charge(order_id: str, amount: int) -> str:
            return await payments.charge(order_id, amount)

        async def order_workflow(order):
            receipt = await charge(order.id, order.total)   # journaled

    ``name`` overrides the journal name (default ``module:qualname``), which replay
    checks: renaming an activity in flight is a ``NonDeterminismError``.
    """
    check_retry(retry, "@garrison.activity")
    if name is not None:
        _check_name(name)
    if fn is None:
        return functools.partial(activity, retry=retry, timeout=timeout, name=name)
    if not callable(fn):
        raise TypeError(f"@garrison.activity decorates a function, got "
                        f"{type(fn).__name__}: {fn!r}")
    seconds = None if timeout is None else parse_duration(timeout, what="activity timeout")
    opts = ActivityOptions(name or activity_name(fn), retry, seconds)
    _ACTIVITY_NAMES.add(opts.name)
    wrapper: Any
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            # (current_workflow() without its call: every step; typed ``object``, as the
            # variable's ``Runtime`` protocol and WorkflowScope make an intersection mypy
            # takes for impossible: the branch went unchecked)
            rt: object = runtime_var.get(None)
            if isinstance(rt, WorkflowScope):
                tx = rt.step_outcome(opts.name)
                if tx is None:
                    return await rt.activity(fn, args, kwargs, retry=opts.retry,
                                             timeout=opts.timeout, name=opts.name)
                # the step before's outcome, committed in this frame (the engine's
                # commit_checked body, inlined: see there, and step_outcome)
                try:
                    await rt.committing(tx)
                except Exception as exc:
                    rt.commit_failed(exc)
                    raise
                return await rt.activity(fn, args, kwargs, retry=opts.retry,
                                         timeout=opts.timeout, name=opts.name, begun=tx)
            return await fn(*args, **kwargs)
    else:

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wf = current_workflow()
            if wf is not None:  # an awaitable: ``await charge(...)`` in the workflow
                return wf.activity(fn, args, kwargs, retry=opts.retry,
                                   timeout=opts.timeout, name=opts.name)
            return fn(*args, **kwargs)

    wrapper.__garrison_activity__ = opts
    return wrapper
