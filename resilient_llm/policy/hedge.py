"""Straggler decisions, per model: after how long an attempt counts as straggling (a duplicate is sent), when a hung
one is cut, and whether the hedge budget allows a duplicate. Pure: no clock, no I/O; the caller passes the times.

"The Tail at Scale" (Dean and Barroso, 2013): a request still unanswered after about the 95th percentile of recent
latencies gets a duplicate, for about 5% more requests; none while many recent attempts were refused (429s), since a
duplicate of a refused request reaches the endpoint inside its Retry-After. A hung attempt that no duplicate rescues
(the budget is spent, the limit is full) is cut after a multiple of the 99th percentile instead of the call's whole
timeout; the cut is suspended while many recent attempts were cut (the model got slower for everyone: cutting would
fail them all).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from resilient_llm.policy.percentiles import nearest_rank
from resilient_llm.policy.retry_budget import BudgetRules, RetryBudget

MIN_SAMPLES = 20  # below this many recent latencies neither threshold is guessed from noise
SAMPLES_PER_MODEL = 500
RECOMPUTE_EVERY = 10  # the sorted percentiles are refreshed once this many new latencies arrived
OUTCOMES_KEPT = 100  # attempts over which the shares of cut and refused ones are measured
MAX_CUT_SHARE = 0.2  # above this share of cut attempts, attempts are not cut (the model's latency moved)
MAX_REFUSED_SHARE = 0.1  # above this share of 429s / in-flight-budget 402s, no hedge: a duplicate would draw another
CUT, REFUSED, OTHER = 1, 2, 0  # how an attempt ended, as kept in the window
TIMEOUT_QUANTILE = 0.99


def hedge_delay(latencies: Sequence[float], *, quantile: float, floor: float, cap: float) -> float:
    """The ``quantile`` of recent successful latencies, clamped to [floor, cap]; the cap while samples are few."""
    if len(latencies) < MIN_SAMPLES:
        return cap
    value = nearest_rank(sorted(latencies), quantile)
    return min(cap, max(floor, value))


def attempt_timeout(p99: float | None, cut_share: float, *, factor: float, floor: float) -> float | None:
    """How long one attempt may run: ``factor`` times the recent p99, at least ``floor``; None for no such bound
    (``factor`` 0, too few samples, or too many recent attempts cut)."""
    if factor <= 0 or p99 is None or cut_share > MAX_CUT_SHARE:
        return None
    return max(floor, factor * p99)


class LatencyWindow:
    """One model's recent successful latencies (their percentiles cached) and which recent attempts were cut."""

    __slots__ = ("_counts", "_fresh", "_hedge_at", "_outcomes", "_p99", "_quantile", "_samples")

    def __init__(self, quantile: float) -> None:
        self._quantile = quantile
        self._samples: collections.deque[float] = collections.deque(maxlen=SAMPLES_PER_MODEL)
        self._fresh = 0  # samples since the percentiles were computed
        self._hedge_at: float | None = None
        self._p99: float | None = None
        self._outcomes: collections.deque[int] = collections.deque(maxlen=OUTCOMES_KEPT)  # CUT, REFUSED or OTHER
        self._counts = [0, 0, 0]  # of each in ``_outcomes``

    def answered(self, latency: float) -> None:
        self._samples.append(latency)
        self._fresh += 1
        if len(self._samples) >= MIN_SAMPLES and (self._p99 is None or self._fresh >= RECOMPUTE_EVERY):
            ordered = sorted(self._samples)
            self._hedge_at = nearest_rank(ordered, self._quantile)
            self._p99 = nearest_rank(ordered, TIMEOUT_QUANTILE)
            self._fresh = 0
        self._outcome(OTHER)

    def failed(self, *, cut: bool = False, refused: bool = False) -> None:
        """An attempt ended without an answer: ``cut`` by the attempt timeout, ``refused`` by the endpoint (a 429)."""
        self._outcome(CUT if cut else REFUSED if refused else OTHER)

    def _outcome(self, kind: int) -> None:
        if len(self._outcomes) == self._outcomes.maxlen:
            self._counts[self._outcomes[0]] -= 1
        self._outcomes.append(kind)
        self._counts[kind] += 1

    def _share(self, kind: int) -> float:
        return self._counts[kind] / len(self._outcomes) if self._outcomes else 0.0

    @property
    def cut_share(self) -> float:
        return self._share(CUT)

    @property
    def refused_share(self) -> float:
        return self._share(REFUSED)

    @property
    def p99(self) -> float | None:
        return self._p99

    @property
    def known(self) -> bool:
        """Whether enough answers arrived for the percentiles."""
        return self._p99 is not None

    def hedge_delay(self, *, floor: float, cap: float) -> float:
        """After how long an attempt straggles: the quantile, clamped to [floor, cap]; the cap while samples are few."""
        return cap if self._hedge_at is None else min(cap, max(floor, self._hedge_at))


class LatencyWindows:
    """Every model's window, made on first use."""

    __slots__ = ("_quantile", "_windows")

    def __init__(self, quantile: float) -> None:
        self._quantile = quantile
        self._windows: dict[str, LatencyWindow] = {}

    def of(self, model: str) -> LatencyWindow:
        found = self._windows.get(model)
        if found is None:
            found = self._windows[model] = LatencyWindow(self._quantile)
        return found


class HedgeBudget:
    """At most ``ratio`` hedges per attempt over the last ``window_s`` seconds: a token budget as the retry budget's,
    with no reserve (gRPC throttles its hedges and retries with the one token count)."""

    __slots__ = ("_tokens",)

    def __init__(self, ratio: float, window_s: float = 60.0) -> None:
        self._tokens = RetryBudget(BudgetRules(ratio=ratio, min_per_s=0.0, window_s=window_s))

    def record_attempt(self, now: float) -> None:
        self._tokens.deposit(now)

    def try_spend(self, now: float) -> bool:
        """Take one hedge from the budget if it has one."""
        if not self._tokens.has_room(now, 1.0):
            return False
        self._tokens.withdraw(now, 1.0)
        return True
