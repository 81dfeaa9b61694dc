"""Retry decisions for one call: whether a failure may be retried, how long to wait first, and when the call stops.
Pure: the retry layer hands in the failure, what the call met so far, and whether the budget (``retry_budget.py``)
allows a quick retry; ``errors.is_retryable`` says whether another attempt could succeed at all."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from resilient_llm.errors import ProviderError, Scope, is_backpressure, is_retryable

MAX_ATTEMPTS = 100  # a hard ceiling, whatever the mix of failures, backpressure and budget
REQUEST_SCOPE_RETRIES = 1  # a failure that will repeat for this request: at most one more try, where one may help
QUICK_DELAY_S = 0.02  # a quick retry waits a jittered 0..20 ms: concurrent retries of one fault do not arrive at once


@dataclass(frozen=True, slots=True)
class Tally:
    """What one call met so far: attempts sent, failures that count against ``num_retries``, request-scope ones."""

    attempts: int = 0
    counted: int = 0  # failures that were not backpressure
    backpressure: int = 0  # 429s and in-flight-budget 402s: obeyed, not counted
    request_scope: int = 0

    def after(self, error: ProviderError) -> Tally:
        """The tally once ``error`` ended another attempt."""
        pushed_back = is_backpressure(error)
        return Tally(
            attempts=self.attempts + 1,
            counted=self.counted + (0 if pushed_back else 1),
            backpressure=self.backpressure + (1 if pushed_back else 0),
            request_scope=self.request_scope + (1 if error.scope is Scope.REQUEST else 0),
        )


def may_retry(error: BaseException, tally: Tally) -> bool:
    """Whether another attempt could succeed: ``is_retryable``, and a request-scope failure only once per call (it
    repeats for this request whatever the endpoint's health, so it is never retried blindly)."""
    if not is_retryable(error):
        return False
    if isinstance(error, ProviderError) and error.scope is Scope.REQUEST:
        return tally.request_scope <= REQUEST_SCOPE_RETRIES
    return True


def quick_retry_allowed(error: ProviderError) -> bool:
    """Whether the budget may spend a quick retry on ``error``: an isolated fault. Backpressure waits its Retry-After
    (or backs off), and a request-scope failure is not worth the budget's tokens."""
    return not is_backpressure(error) and error.scope is not Scope.REQUEST


def out_of_retries(error: ProviderError, tally: Tally, num_retries: int, *, extend: bool) -> bool:
    """Whether the call stops after ``error``, its latest failure (``tally`` includes it). Backpressure never spends
    ``num_retries`` (the deadline bounds it). ``extend``: the budget's earned surplus pays for a quick retry, so a call
    that has met ``num_retries`` isolated faults keeps going (within its deadline: the layer checks it), and an
    unlucky call is not lost to a count; otherwise ``num_retries`` bounds the failures, and always once one was
    request-scope."""
    if tally.attempts >= MAX_ATTEMPTS:
        return True
    if is_backpressure(error):
        return False
    exhausted = tally.counted >= 1 + num_retries
    return exhausted and (not extend or tally.request_scope > 0)


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
