"""Repeating a benchmark in one invocation (``--runs N``): medians and ranges."""

from __future__ import annotations

import statistics
from typing import Any


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: the value of a single run, else ``[median, min, max]`` (nested dicts
    merged key by key; a ratio is always taken within one run, then summarized)."""

    def merge(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            keys = [k for k in values[0] if all(isinstance(v, dict) and k in v for v in values)]
            return {k: merge([v[k] for v in values]) for k in keys}
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            rounded = [round(float(v), 2) for v in values]
            if len(values) == 1:
                return rounded[0]
            return [round(statistics.median(values), 2), min(rounded), max(rounded)]
        return values[0] if len(values) == 1 or all(v == values[0] for v in values) else values

    return {k: merge([r[k] for r in runs]) for k in runs[0] if all(k in r for r in runs)}


def median(value: Any) -> Any:
    """The median of a summarized figure (the figure itself after a single run)."""
    return value[0] if isinstance(value, list) and value else value
