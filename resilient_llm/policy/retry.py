"""Retry decisions: how long to wait before the next attempt (whether to retry at all is ``errors.is_retryable``)."""

from __future__ import annotations

import math
import random

from resilient_llm.errors import ProviderError


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
