"""Retry decisions: is this failure worth another attempt, and how long to wait first."""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping

from resilient_llm.errors import ConnectionFailed, ErrorResponse, MalformedResponse, ProviderError, ProviderTimeout

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
CALLER_MISTAKE_STATUSES = frozenset({400, 401, 403, 404, 413, 422})
IN_FLIGHT_BUDGET_EXHAUSTED = "in_flight_budget_exhausted"


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt could succeed where this one failed."""
    if isinstance(error, (ConnectionFailed, ProviderTimeout, MalformedResponse)):
        return True
    if not isinstance(error, ErrorResponse):
        return False
    if error.status is None:  # an error object inside a 200 without a status: the upstream hiccupped
        return True
    if error.status == 402:  # payment required is final, unless OpenRouter says the budget frees up
        return error.code == IN_FLIGHT_BUDGET_EXHAUSTED or error.retry_after is not None
    return error.status in TRANSIENT_STATUSES or error.status >= 500


BACKPRESSURE_STATUSES = frozenset({402, 429})


def is_backpressure(error: BaseException) -> bool:
    """The endpoint is up and asks us to slow down (429, or 402 in-flight budget): obeyed, not a failure.

    Such attempts do not use up ``num_retries`` (a rate-limited judge call should wait, not turn into a neutral
    reward); the deadline still bounds them.
    """
    return isinstance(error, ErrorResponse) and error.status in BACKPRESSURE_STATUSES and is_retryable(error)


def is_caller_mistake(error: BaseException) -> bool:
    """A failure only the caller can fix (bad request, bad key, unknown model)."""
    return isinstance(error, ErrorResponse) and error.status in CALLER_MISTAKE_STATUSES


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter after the given (1-based) failed attempt."""
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    return rng.uniform(0.0, ceiling)


def retry_wait(
    attempt: int,
    error: ProviderError,
    *,
    base: float,
    cap: float,
    retry_after_max: float,
    rng: random.Random,
) -> float:
    """Seconds to wait before the next attempt; ``math.inf`` means "do not retry".

    A Retry-After is obeyed exactly (plus up to 10% jitter, so a crowd told the same time does not return at once);
    one longer than ``retry_after_max`` ends the retries instead of being cut short, since retrying earlier than the
    provider asked only earns another refusal. One shorter than ``base`` ("Retry-After: 0", a date already past) is
    no licence to hammer: the wait is then at least the backoff, which grows with the attempts.
    """
    if error.retry_after is None:
        return backoff_delay(attempt, base=base, cap=cap, rng=rng)
    if error.retry_after > retry_after_max:
        return math.inf
    asked = error.retry_after + rng.uniform(0.0, 0.1 * error.retry_after)
    if error.retry_after < base:
        return max(asked, backoff_delay(attempt, base=base, cap=cap, rng=rng))
    return asked


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
