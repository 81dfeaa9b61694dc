"""The one percentile definition every report and decision uses: nearest rank (a value that was observed)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 < q <= 1) of values sorted ascending: the smallest value with at least q of them at or
    below it."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max of ``values`` (all None when there are none)."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "p50": nearest_rank(ordered, 0.5),
        "p95": nearest_rank(ordered, 0.95),
        "p99": nearest_rank(ordered, 0.99),
        "max": ordered[-1],
    }
