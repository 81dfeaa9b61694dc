"""Hedging decisions: after how long an attempt counts as straggling, and whether the budget allows a duplicate."""

from __future__ import annotations

import collections
from collections.abc import Sequence

from resilient_llm.policy.percentiles import nearest_rank

MIN_SAMPLES = 20  # below this many recent latencies the threshold is the cap: no guessing from noise


def hedge_delay(latencies: Sequence[float], *, quantile: float, floor: float, cap: float) -> float:
    """The ``quantile`` of recent successful latencies, clamped to [floor, cap]; the cap while samples are few."""
    if len(latencies) < MIN_SAMPLES:
        return cap
    value = nearest_rank(sorted(latencies), quantile)
    return min(cap, max(floor, value))


class HedgeBudget:
    """At most ``ratio`` hedges per attempt over the last ``window_s`` seconds (a sliding window)."""

    def __init__(self, ratio: float, window_s: float = 60.0) -> None:
        self._ratio = ratio
        self._window_s = window_s
        self._attempts: collections.deque[float] = collections.deque()
        self._hedges: collections.deque[float] = collections.deque()

    def _trim(self, now: float) -> None:
        for times in (self._attempts, self._hedges):
            while times and times[0] < now - self._window_s:
                times.popleft()

    def record_attempt(self, now: float) -> None:
        self._attempts.append(now)

    def try_spend(self, now: float) -> bool:
        """Take one hedge from the budget if it has one."""
        self._trim(now)
        if len(self._hedges) + 1 > self._ratio * len(self._attempts):
            return False
        self._hedges.append(now)
        return True
