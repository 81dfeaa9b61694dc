"""Retries with tenacity: explicit retryable errors, bounded attempts and total time, Retry-After obeyed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.stop import stop_base

from resilient_llm.errors import CallFailed, FailedAttempt, ProviderError, is_backpressure, is_retryable
from resilient_llm.policy.retry import retry_wait
from resilient_llm.types import DEFAULT_NUM_RETRIES, ChatRequest, ChatResult, Handler
from resilient_llm.validation import SECONDS, Validated, int_in, setting

Sleep = Callable[[float], Awaitable[None]]
MAX_ATTEMPTS = 100  # a hard ceiling, whatever the mix of failures and backpressure


@dataclasses.dataclass(frozen=True)
class RetryConfig(Validated):
    """How long a call keeps trying: attempts (backpressure not counted) and total time, both bounded."""

    num_retries: int = setting(DEFAULT_NUM_RETRIES, int_in(0, 100))  # when the call does not say
    deadline: float = setting(900.0, SECONDS)  # the whole call, every attempt and wait included
    backoff_base: float = setting(0.5, SECONDS)
    backoff_max: float = setting(8.0, SECONDS)
    retry_after_max: float = setting(120.0, SECONDS)  # a longer Retry-After ends the call instead


class _StopAfterFailures(stop_base):
    """Stop once ``failures`` attempts failed for real; backpressure (429, in-flight budget) is not counted."""

    def __init__(self, failures: int, history: list[FailedAttempt]) -> None:
        self._failures = failures
        self._history = history

    def __call__(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        current = 0 if error is not None and is_backpressure(error) else 1
        counted = sum(1 for f in self._history if not f.backpressure) + current
        return counted >= self._failures or state.attempt_number >= MAX_ATTEMPTS


class _StopBeforeDeadline(stop_base):
    """Stop when the next wait would end at or after the call's deadline (tenacity's stop_before_delay, measured from
    the call's start rather than from tenacity's, which begins after the happy path's attempt)."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        return time.monotonic() + (state.upcoming_sleep or 0.0) >= self._deadline


class RetryHandler:
    """Runs until ``1 + request.num_retries`` attempts have failed (backpressure not counted), the next wait would
    cross ``config.deadline``, or a failure is not retryable; then raises CallFailed with every attempt."""

    def __init__(
        self,
        inner: Handler,
        config: RetryConfig,
        *,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        interrupt: asyncio.Event | None = None,
    ) -> None:
        self._inner = inner
        self._config = config
        self._sleep = sleep or self._interruptible_sleep
        self._rng = rng or random.Random()
        self._interrupt = interrupt

    async def _interruptible_sleep(self, seconds: float) -> None:
        """Backoff that ends early when the breaker opens: the next attempt then fails fast into the fallback."""
        if self._interrupt is None:
            await asyncio.sleep(seconds)
        elif not self._interrupt.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._interrupt.wait(), seconds)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        assert isinstance(error, ProviderError)  # guaranteed: only ProviderErrors are retried
        c = self._config
        return retry_wait(
            state.attempt_number,
            error,
            base=c.backoff_base,
            cap=c.backoff_max,
            retry_after_max=c.retry_after_max,
            rng=self._rng,
        )

    async def handle(self, request: ChatRequest) -> ChatResult:
        deadline = time.monotonic() + self._config.deadline
        # Happy path first: most calls succeed at once, and need none of tenacity's bookkeeping (objects per call,
        # which a call queued behind the limit would hold too). Its first failure is replayed into tenacity below.
        try:
            result = await self._attempt(request, deadline)
        except ProviderError as exc:
            return await self._retrying(request, deadline, exc)
        return dataclasses.replace(result, attempts=1, failures=())

    async def _attempt(self, request: ChatRequest, deadline: float) -> ChatResult:
        # Each attempt gets what is left of the deadline, so the last one cannot overrun it.
        remaining = max(0.001, deadline - time.monotonic())
        bounded = dataclasses.replace(request, timeout=min(request.timeout, remaining), deadline=deadline)
        return await self._inner.handle(bounded)

    async def _retrying(self, request: ChatRequest, deadline: float, first: ProviderError) -> ChatResult:
        failures: list[FailedAttempt] = []
        pending: ProviderError | None = first

        def record(state: RetryCallState) -> None:
            if state.outcome is not None and (error := state.outcome.exception()) is not None:
                failures.append(FailedAttempt.of(error, wait_s=state.upcoming_sleep))

        async def attempt() -> ChatResult:
            nonlocal pending
            if pending is not None:  # the happy path's failure: tenacity's first attempt
                error, pending = pending, None
                raise error
            return await self._attempt(request, deadline)

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            stop=_StopAfterFailures(1 + request.num_retries, failures) | _StopBeforeDeadline(deadline),
            wait=self._wait,
            before_sleep=record,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            result: ChatResult = await retrying(attempt)
        except ProviderError as exc:
            failures.append(FailedAttempt.of(exc))
            why = "retries exhausted" if is_retryable(exc) else "not retryable"
            raise CallFailed(f"{why} after {len(failures)} attempt(s); last: {exc}", failures, exc) from exc
        return dataclasses.replace(result, attempts=len(failures) + 1, failures=tuple(failures))
