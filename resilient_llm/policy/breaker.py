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


def probe_delay(outage_s: float, *, base: float, cap: float, jitter: float) -> float:
    """Seconds from the breaker (re)opening to the next trial, a twentieth of how long the outage has lasted so far,
    within ``[base, cap]``; ``jitter`` (0..1, drawn by the caller) spreads processes that opened together by up to 10%.

    So recovery is noticed within about a twentieth of the outage (a blip or a 20 s outage within ``base``, a minute's
    within 3 s): a trainer's step waits on it, and draining the calls that waited takes a second or two more. A long
    outage still costs the endpoint little: ~20 trials in the first 20 s, then spacing grows to the 30 s cap after 10
    minutes, two a minute from then on (an hour: ~180 trials). Doubling per failed trial costs fewer trials but notices
    a 20 s outage's end ~10 s late; a tenth of the outage (the earlier rule) noticed it ~2 s late, most of the 3 s a
    step may lose after the endpoint is back.
    """
    return min(cap, max(base, outage_s / 20.0)) * (1.0 + 0.1 * jitter)


def outage_budget_left(now: float, waiting_since: float, *, budget: float, call_ends: float) -> float:
    """Seconds a call may still wait for an open breaker: the outage budget from the moment it first met the open
    breaker, never past the end of the call (its deadline)."""
    return max(0.0, min(waiting_since + budget, call_ends) - now)
