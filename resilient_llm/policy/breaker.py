"""Breaker decisions: what an attempt's outcome says about the health of the endpoint."""

from __future__ import annotations

import asyncio
import enum

from resilient_llm.errors import (
    BACKPRESSURE_STATUSES,
    BreakerOpen,
    ErrorResponse,
    ProviderError,
    ProviderTimeout,
    is_caller_mistake,
)


class Verdict(enum.Enum):
    HEALTHY = "healthy"  # the endpoint answered (a caller mistake is an answer too)
    FAILING = "failing"  # the endpoint did not answer usefully
    SILENT = "silent"  # says nothing about the endpoint: cancelled, throttled, refused by the breaker itself


def verdict(error: BaseException | None) -> Verdict:
    """How one attempt's outcome counts for the breaker (pybreaker counts consecutive FAILING verdicts)."""
    if error is None or is_caller_mistake(error):
        return Verdict.HEALTHY
    if isinstance(error, (asyncio.CancelledError, BreakerOpen)):
        return Verdict.SILENT
    if isinstance(error, ProviderTimeout) and error.kind == "queue_timeout":
        return Verdict.SILENT  # it waited in our own queue: never sent
    if isinstance(error, ErrorResponse) and error.status in BACKPRESSURE_STATUSES:
        # Rate limits and budgets are the endpoint working as designed; the retry layer obeys their Retry-After.
        return Verdict.SILENT
    if isinstance(error, ProviderError):
        return Verdict.FAILING
    return Verdict.SILENT  # a bug of ours says nothing about the endpoint


def probe_delay(failed_trials: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds from the breaker opening to the next trial: ``base`` after the trip, doubling with every failed trial,
    capped; ``jitter`` (0..1, drawn by the caller) spreads processes that opened together by up to 20%.

    From 1 s doubling to a 30 s cap, a blip is noticed within about a second and an hour's outage costs the endpoint
    about two trials a minute.
    """
    return min(cap, base * 2.0 ** min(failed_trials, 30)) * (1.0 + 0.2 * jitter)


def outage_budget_left(now: float, waiting_since: float, *, budget: float, call_timeout: float) -> float:
    """Seconds a call may still wait for an open breaker: the outage budget from the moment it first met the open
    breaker, never past the call's own timeout."""
    return max(0.0, min(waiting_since + budget, waiting_since + call_timeout) - now)
