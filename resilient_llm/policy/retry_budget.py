"""The retry budget: whether a failed attempt may be retried at once, decided for all calls together. Pure: no clock,
no I/O; the caller passes the time.

Per-call exponential backoff protects an endpoint only from one call's own retries, and makes every isolated fault
cost the call seconds. A budget over the process's recent calls protects the endpoint from all of them and costs an
isolated fault nothing: each call deposits ``ratio`` tokens, each quick retry withdraws one (a timeout two, as it
says more about the endpoint's health), and both expire after ``window_s``; a reserve of ``min_per_s`` retries a
second serves processes that make few calls. While the share of failed attempts stays below about ``ratio``, every
isolated fault is retried at once; when it rises above, the budget runs dry, and retries back off exponentially
until successes fill it again, so a struggling endpoint is never hammered. Only a surplus the calls earned
themselves (``has_surplus``: the reserve not touched) lets an unlucky call retry beyond its ``num_retries``: a lone
call against a dead endpoint is not bad luck. And whatever the tokens, quick retries stop while failed attempts
outnumber answered ones by ``failure_margin`` (gRPC's rule): many calls meeting an outage at once do not each spend
a quick retry on it.

The shape is Finagle's ``RetryBudget`` (deposits per request that expire after a ``ttl``, 20% of requests plus 10
retries a second by default), close to Envoy's ``retry_budget`` (retries as a share of active requests, with a
minimum), gRPC's retry throttling (a token count that failures lower and successes raise; retries stop below half)
and the AWS SDKs' retry quota (a retry costs 5 tokens, a timeout 10). The default ``ratio`` is higher than their 20%
because this budget only decides how soon a retry goes out, not whether it does: out of budget, a call still retries,
with backoff and within ``num_retries``, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resilient_llm.errors import ProviderError, ProviderTimeout

SLICES = 10  # the window is kept as this many slices; an entry expires with its slice
ROUNDING = 1e-9  # twenty deposits of 0.05 make one token, whatever the float sum says


@dataclass(frozen=True)
class BudgetRules:
    """How many quick retries the recent calls earn."""

    ratio: float = 0.5  # tokens each call deposits: quick retries per call, over the window
    min_per_s: float = 10.0  # quick retries a second allowed whatever the traffic
    window_s: float = 10.0  # deposits, withdrawals and outcomes count for this long
    failure_margin: float = 10.0  # quick retries stop once failed attempts outnumber answered ones by this many

    @property
    def reserve(self) -> float:
        return self.min_per_s * self.window_s


class RetryBudget:
    """A token balance over a sliding window: calls deposit, quick retries withdraw."""

    __slots__ = ("_answered", "_failed", "_net", "_rules", "_slice_of", "_slice_s")

    def __init__(self, rules: BudgetRules) -> None:
        self._rules = rules
        self._slice_s = rules.window_s / SLICES
        self._net = [0.0] * SLICES  # deposits minus withdrawals per slice
        self._failed = [0] * SLICES  # attempts that failed (isolated faults or worse) per slice
        self._answered = [0] * SLICES  # attempts that were answered per slice
        self._slice_of = [-1] * SLICES  # which absolute slice each entry holds; older ones are stale

    def _slot(self, now: float) -> int:
        """The entry for ``now``'s slice, emptied first if it still holds an expired one."""
        absolute = math.floor(now / self._slice_s)
        slot = absolute % SLICES
        if self._slice_of[slot] != absolute:
            self._slice_of[slot] = absolute
            self._net[slot] = 0.0
            self._failed[slot] = self._answered[slot] = 0
        return slot

    def _live(self, now: float, values: list[float] | list[int]) -> float:
        current = math.floor(now / self._slice_s)
        return sum(value for value, held in zip(values, self._slice_of, strict=True) if current - held < SLICES)

    def earned(self, now: float) -> float:
        """What the window's calls deposited minus what its quick retries took (negative once the reserve is used)."""
        return self._live(now, self._net)

    def failed(self, now: float) -> None:
        """An attempt failed in a way that says something about the endpoint (not backpressure, not the request)."""
        self._failed[self._slot(now)] += 1

    def answered(self, now: float) -> None:
        self._answered[self._slot(now)] += 1

    def failing(self, now: float) -> bool:
        """Whether failed attempts outnumber answered ones by ``failure_margin`` over the window (gRPC's throttle:
        retries stop once failures have drained half its tokens): concurrent calls meeting a dead endpoint at once
        must not each spend a quick retry before the reserve notices."""
        return self._live(now, self._failed) > self._live(now, self._answered) + self._rules.failure_margin

    def balance(self, now: float) -> float:
        """Tokens available at ``now``: the reserve plus what was earned."""
        return self._rules.reserve + self.earned(now)

    def deposit(self, now: float) -> None:
        """A call started: it earns ``ratio`` quick retries for the calls of the next window."""
        self._net[self._slot(now)] += self._rules.ratio

    def has_room(self, now: float, cost: float) -> bool:
        """Whether a quick retry costing ``cost`` may go out: tokens left, and the endpoint not failing."""
        return self.balance(now) >= cost - ROUNDING and not self.failing(now)

    def has_surplus(self, now: float, cost: float) -> bool:
        """Whether the recent calls' own deposits pay for a retry costing ``cost``, without the reserve: their share
        of failures is low, so one call's run of faults is bad luck rather than a failing endpoint."""
        return self.earned(now) >= cost - ROUNDING

    def withdraw(self, now: float, cost: float) -> None:
        """A quick retry goes out (after ``has_room`` said it may)."""
        self._net[self._slot(now)] -= cost


QUICK_RETRY_COST = 1.0
TIMEOUT_RETRY_COST = 2.0  # a timeout tells more about the endpoint's load than a reset does (as the AWS SDKs' 10 vs 5)


def retry_cost(error: ProviderError) -> float:
    """Tokens a quick retry after ``error`` takes from the budget."""
    return TIMEOUT_RETRY_COST if isinstance(error, ProviderTimeout) else QUICK_RETRY_COST
