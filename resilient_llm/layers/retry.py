"""Retries: an isolated fault is retried at once while the retry budget has room, with backoff once it runs dry;
Retry-After always obeyed; every attempt and wait within the call's deadline.

tenacity runs the retries the way its documentation shows: ``AsyncRetrying`` with a retry predicate (may another
attempt succeed?), a wait (the budget's quick delay, the backoff or the Retry-After), a stop (out of retries, or the
next wait would cross the call's deadline) and a ``before_sleep`` hook (the quick retry takes its tokens from the
budget, the failed attempt is recorded). The decisions themselves are pure (``policy/retry.py``,
``policy/retry_budget.py``).

A call that succeeds at once, as most do, never builds tenacity's state (about 3.4 KB and 50 µs a call, which a call
queued behind the limit would hold too): its first attempt runs before tenacity, a failure of it goes through the
same decisions (``_Call``), and tenacity then runs the real attempts that follow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from resilient_llm.clock import SYSTEM_CLOCK, Clock
from resilient_llm.errors import CallFailed, FailedAttempt, ProviderError, Scope, is_backpressure, is_retryable
from resilient_llm.policy import retry as policy
from resilient_llm.policy.retry_budget import BudgetRules, RetryBudget, retry_cost
from resilient_llm.types import DEFAULT_NUM_RETRIES, ChatRequest, ChatResult, Handler
from resilient_llm.validation import SECONDS, Check, Validated, int_in, setting

BUDGET_RATIO: Check[float] = Check(
    "a number from 0 to 10", float, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 10
)


@dataclasses.dataclass(frozen=True)
class RetryConfig(Validated):
    """How long a call keeps trying, and how soon: the retry budget, attempts and total time, all bounded."""

    num_retries: int = setting(DEFAULT_NUM_RETRIES, int_in(0, 100))  # when the call does not say
    deadline: float = setting(900.0, SECONDS)  # the whole call, every attempt and wait included
    backoff_base: float = setting(0.5, SECONDS)
    backoff_max: float = setting(8.0, SECONDS)
    retry_after_max: float = setting(120.0, SECONDS)  # a longer Retry-After ends the call instead
    budget: float = setting(0.5, BUDGET_RATIO)  # quick retries each call earns (over 10 s); 0: always back off


class RetryHandler:
    """Runs attempts until one succeeds, a failure is not retryable, the call is out of retries (``num_retries``
    failures beyond the first, backpressure not counted, unless the budget's earned surplus pays for one more) or
    the next wait would cross ``config.deadline``; then raises CallFailed with every attempt.

    ``interrupt(model)`` returns an event set while that model's breaker is open: a pending backoff ends then (the
    next attempt waits at the breaker, holding nothing); a Retry-After wait does not, it belongs to its prompt.
    """

    def __init__(
        self,
        inner: Handler,
        config: RetryConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        interrupt: Callable[[str], asyncio.Event] | None = None,
    ) -> None:
        self._inner = inner
        self._config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._interrupt = interrupt
        self._rules = BudgetRules(ratio=config.budget) if config.budget > 0 else None
        self._budgets: dict[str, RetryBudget] = {}  # per model: one model's failures do not slow another's retries

    def budget(self, model: str) -> RetryBudget | None:
        """``model``'s retry budget (None when quick retries are off)."""
        if self._rules is None:
            return None
        found = self._budgets.get(model)
        if found is None:
            found = self._budgets[model] = RetryBudget(self._rules)
        return found

    async def handle(self, request: ChatRequest) -> ChatResult:
        now = self._clock.now()
        deadline = now + self._config.deadline
        budget = self.budget(request.model)
        if budget is not None:
            budget.deposit(now)
        try:
            result = await self._attempt(request, deadline)
        except ProviderError as first:
            return await self._retrying(request, deadline, first)
        return dataclasses.replace(result, attempts=1, failures=())

    async def _attempt(self, request: ChatRequest, deadline: float) -> ChatResult:
        # Each attempt gets what is left of the deadline, so the last one cannot overrun it.
        remaining = max(0.001, deadline - self._clock.now())
        bounded = dataclasses.replace(request, timeout=min(request.timeout, remaining), deadline=deadline)
        budget = self.budget(request.model)
        try:
            result = await self._inner.handle(bounded)
        except ProviderError as exc:
            if budget is not None and says_about_the_endpoint(exc):
                budget.failed(self._clock.now())
            raise
        if budget is not None:
            budget.answered(self._clock.now())
        return result

    async def _retrying(self, request: ChatRequest, deadline: float, first: ProviderError) -> ChatResult:
        call = _Call(
            self._config, self._clock, self._rng, self._interrupt, self.budget(request.model), request, deadline
        )
        if not await call.go_on_after(first):
            raise call.failed(first) from first
        retrying = AsyncRetrying(
            retry=retry_if_exception(call.may_retry),
            wait=lambda state: call.wait_after(_error(state)),
            stop=lambda state: call.stops_after(_error(state), state.upcoming_sleep),
            before_sleep=lambda state: call.note(_error(state), state.upcoming_sleep),
            sleep=call.sleep,
            reraise=True,
        )
        try:
            result: ChatResult = await retrying(self._attempt, request, deadline)
        except ProviderError as exc:
            raise call.failed(exc) from exc
        return dataclasses.replace(result, attempts=len(call.failures) + 1, failures=tuple(call.failures))


def says_about_the_endpoint(error: ProviderError) -> bool:
    """Whether a failure counts towards the budget's failing share: not backpressure (obeyed, not a fault), not a
    request-scope failure (it says nothing about the endpoint), not refused locally (the breaker, the queue)."""
    return not is_backpressure(error) and error.scope in (Scope.MODEL, Scope.ENDPOINT)


def _error(state: RetryCallState) -> ProviderError:
    error = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(error, ProviderError)  # guaranteed: only ProviderErrors pass ``may_retry``
    return error


class _Call:
    """One failing call's retries: what it met so far, and the decisions tenacity asks for after each failure."""

    __slots__ = (
        "_budget",
        "_clock",
        "_config",
        "_deadline",
        "_extend",
        "_interrupt",
        "_interruptible",
        "_quick",
        "_request",
        "_rng",
        "_why",
        "failures",
        "tally",
    )

    def __init__(
        self,
        config: RetryConfig,
        clock: Clock,
        rng: random.Random,
        interrupt: Callable[[str], asyncio.Event] | None,
        budget: RetryBudget | None,
        request: ChatRequest,
        deadline: float,
    ) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng
        self._interrupt = interrupt
        self._budget = budget
        self._request = request
        self._deadline = deadline
        self.tally = policy.Tally()
        self.failures: list[FailedAttempt] = []
        self._quick = False  # the latest failure is retried quickly, on the budget
        self._extend = False  # and the budget's earned surplus would pay for it beyond num_retries
        self._interruptible = True  # the latest wait is a backoff, not a Retry-After
        self._why = "retries exhausted"

    async def go_on_after(self, error: ProviderError) -> bool:
        """The first attempt's failure, outside tenacity: the same decisions, then the wait; whether to go on."""
        if not self.may_retry(error):
            return False
        delay = self.wait_after(error)
        if self.stops_after(error, delay):
            return False
        self.note(error, delay)
        await self.sleep(delay)
        return True

    def may_retry(self, error: BaseException) -> bool:
        """tenacity's retry predicate: counts the failure, then asks ``is_retryable`` (request-scope: never)."""
        if not isinstance(error, ProviderError):
            return False
        self.tally = self.tally.after(error)
        if is_retryable(error):
            return True
        self._why = "not retryable"
        return False

    def wait_after(self, error: ProviderError) -> float:
        """tenacity's wait: quick while the budget has room for this fault, else the backoff; Retry-After obeyed."""
        budget, now, cost = self._budget, self._clock.now(), retry_cost(error)
        self._quick = budget is not None and policy.quick_retry_allowed(error) and budget.has_room(now, cost)
        self._extend = self._quick and budget is not None and budget.has_surplus(now, cost)
        self._interruptible = error.retry_after is None
        nth = self.tally.backpressure if is_backpressure(error) else self.tally.counted
        return policy.retry_wait(
            max(1, nth),
            error,
            base=self._config.backoff_base,
            cap=self._config.backoff_max,
            retry_after_max=self._config.retry_after_max,
            rng=self._rng,
            quick=self._quick,
        )

    def stops_after(self, error: ProviderError, delay: float | None) -> bool:
        """tenacity's stop: out of retries, a Retry-After beyond the maximum, or the wait would cross the deadline."""
        wait = delay or 0.0
        if math.isinf(wait):
            self._why = f"Retry-After {error.retry_after:g} s is beyond the maximum"
            return True
        if self._clock.now() + wait >= self._deadline:
            self._why = "deadline reached"
            return True
        return policy.out_of_retries(error, self.tally, self._request.num_retries, extend=self._extend)

    def note(self, error: ProviderError, delay: float | None) -> None:
        """tenacity's before_sleep: the retry goes ahead; a quick one takes its tokens, the failure is recorded."""
        if self._quick and self._budget is not None:
            self._budget.withdraw(self._clock.now(), retry_cost(error))
        self.failures.append(FailedAttempt.of(error, wait_s=delay))

    async def sleep(self, seconds: float) -> None:
        """A backoff ends early when the model's breaker opens; a Retry-After is waited out in full."""
        if self._interrupt is None or not self._interruptible:
            await self._clock.sleep(seconds)
        else:
            await self._clock.wait(self._interrupt(self._request.model), seconds)

    def failed(self, error: ProviderError) -> CallFailed:
        self.failures.append(FailedAttempt.of(error))
        return CallFailed(f"{self._why} after {len(self.failures)} attempt(s); last: {error}", self.failures, error)
