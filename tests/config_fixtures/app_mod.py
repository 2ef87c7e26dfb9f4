"""Targets for ``source:`` fields in the config tests."""

from __future__ import annotations

from typing import Any


async def main(*args: Any) -> None:
    """A process body."""


async def other(*args: Any) -> None:
    """Another process body."""


async def order_workflow(order: Any = None) -> Any:
    """A module-level workflow."""
    return order


def charge(amount: int = 0) -> int:
    """A sync activity."""
    return amount


async def async_charge(amount: int = 0) -> int:
    """An async activity."""
    return amount


def sync_main() -> None:
    """Not async: invalid as a process."""


class Service:
    """An object with an async ``__call__`` is a valid process target."""

    async def __call__(self) -> None:
        return None


service_instance = Service()

not_callable = 42


def _make_closure() -> Any:
    async def inner() -> None:
        return None

    return inner


closure_workflow = _make_closure()


async def report(n: int = 0) -> int:
    """A workflow with one annotated, optional argument (schedule input checks)."""
    return n


async def _decorated_activity(n: int) -> int:
    return n


def _as_activity() -> Any:
    import garrison

    return garrison.activity(_decorated_activity)


#: an @activity: not a workflow (a workflow.py entry naming it is refused)
refund = _as_activity()


async def session(user: str) -> None:
    """A process body with exactly one argument (service input checks)."""


async def alert(threshold: float) -> float:
    """A workflow whose input is a float (a config's ``1e-3``)."""
    return threshold


async def stream(*args: Any) -> Any:
    """An async generator: no process body."""
    yield args


async def greet_all(names: list[str]) -> list[str]:
    """A workflow of one list argument (a schedule's input: [[...]])."""
    return names
