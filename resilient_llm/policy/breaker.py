"""Breaker decisions: what an attempt's outcome says about the health of the endpoint."""

from __future__ import annotations

import asyncio
import enum

from resilient_llm.errors import BACKPRESSURE_STATUSES, BreakerOpen, ErrorResponse, ProviderError, is_caller_mistake


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
    if isinstance(error, ErrorResponse) and error.status in BACKPRESSURE_STATUSES:
        # Rate limits and budgets are the endpoint working as designed; the retry layer obeys their Retry-After.
        return Verdict.SILENT
    if isinstance(error, ProviderError):
        return Verdict.FAILING
    return Verdict.SILENT  # a bug of ours says nothing about the endpoint
