"""Retry decisions for one call: how long to wait before the next attempt, and when the call stops. Pure: the retry
layer hands in the failure, what the call met so far, and whether the budget (``retry_budget.py``) allows a quick
retry. Whether another attempt could succeed at all is ``errors.is_retryable``'s answer, followed as it is: a
request-scope failure (truncated by ``max_tokens``, no provider, moderation, a caller mistake) is never retried."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from resilient_llm.errors import ProviderError, is_backpressure

MAX_ATTEMPTS = 100  # a hard ceiling, whatever the mix of failures, backpressure and budget
QUICK_DELAY_S = 0.02  # a quick retry waits a jittered 0..20 ms: concurrent retries of one fault do not arrive at once


@dataclass(frozen=True, slots=True)
class Tally:
    """What one call met so far: attempts sent, failures that count against ``num_retries``, backpressure."""

    attempts: int = 0
    counted: int = 0  # failures that were not backpressure
    backpressure: int = 0  # 429s and in-flight-budget 402s: obeyed, not counted

    def after(self, error: ProviderError) -> Tally:
        """The tally once ``error`` ended another attempt."""
        pushed_back = is_backpressure(error)
        return Tally(
            attempts=self.attempts + 1,
            counted=self.counted + (0 if pushed_back else 1),
            backpressure=self.backpressure + (1 if pushed_back else 0),
        )


def quick_retry_allowed(error: ProviderError) -> bool:
    """Whether the budget may spend a quick retry on ``error``: an isolated fault with no hint. Backpressure and any
    failure that came with a Retry-After wait for it (or back off, when it is shorter than the backoff's base)."""
    return not is_backpressure(error) and error.retry_after is None


def out_of_retries(error: ProviderError, tally: Tally, num_retries: int, *, extend: bool) -> bool:
    """Whether the call stops after ``error``, its latest failure (``tally`` includes it). Backpressure never spends
    ``num_retries`` (the deadline bounds it). ``extend``: the budget's earned surplus pays for a quick retry, so a call
    that has met ``num_retries`` isolated faults keeps going (within its deadline: the layer checks it), and an
    unlucky call is not lost to a count; otherwise ``num_retries`` bounds the failures."""
    if tally.attempts >= MAX_ATTEMPTS:
        return True
    if is_backpressure(error):
        return False
    return tally.counted >= 1 + num_retries and not extend


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
    quick: bool = False,
) -> float:
    """Seconds to wait before the next attempt; ``math.inf`` means "do not retry".

    ``quick``: the budget allows a quick retry, so the wait is a few jittered milliseconds instead of the backoff of
    the ``attempt``-th failure. A Retry-After is obeyed exactly (plus up to 10% jitter, so a crowd told the same time
    does not return at once); one longer than ``retry_after_max`` ends the retries instead of being cut short, since
    retrying earlier than the provider asked only earns another refusal. One shorter than ``base`` ("Retry-After: 0",
    a date already past) is no licence to hammer: the wait is then at least the backoff (or the quick delay).
    """
    floor = rng.uniform(0.0, QUICK_DELAY_S) if quick else backoff_delay(attempt, base=base, cap=cap, rng=rng)
    if error.retry_after is None:
        return floor
    if error.retry_after > retry_after_max:
        return math.inf
    asked = error.retry_after + rng.uniform(0.0, 0.1 * error.retry_after)
    if error.retry_after < base:
        return max(asked, floor)
    return asked
