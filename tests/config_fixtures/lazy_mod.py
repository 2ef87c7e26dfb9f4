"""A module whose attributes are looked up lazily (PEP 562), and an object whose
attribute lookup raises something other than ``AttributeError``."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    from heavy_optional_dep import handlers  # (not installed)

    return getattr(handlers, name)


class Odd:
    """Every attribute it lacks raises ``KeyError``."""

    def __getattr__(self, name: str) -> Any:
        raise KeyError(name)


odd = Odd()
