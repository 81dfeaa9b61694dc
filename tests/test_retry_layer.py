"""The retry layer alone, on a fake clock against scripted inner handlers: quick retries on the budget, backoff once
it runs dry, Retry-After, backpressure, request-scope faults, the breaker's interrupt, the deadline; no real sleeps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from resilient_llm.errors import (
    CallFailed,
    ConnectionFailed,
    ErrorResponse,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    Scope,
)
from resilient_llm.layers.retry import RetryConfig, RetryHandler
from resilient_llm.policy.retry import QUICK_DELAY_S
from resilient_llm.policy.retry_budget import BudgetRules
from resilient_llm.testing.clock import FakeClock
from resilient_llm.types import ChatRequest, ChatResult, Outcome

MODEL = "openai/gpt-4o-mini"
T = TypeVar("T")
Reply = ProviderError | ChatResult


def request(**fields: Any) -> ChatRequest:
    return ChatRequest(MODEL, ({"role": "user", "content": "q"},), **fields)


def answer() -> ChatResult:
    return ChatResult("A", Outcome.OK, MODEL)


def reset() -> ProviderError:
    return ConnectionFailed("reset by peer", kind="connection_reset")


class Scripted:
    """An inner handler that answers each attempt with the next reply of a script (the last one repeats), after
    ``latency`` seconds of the fake clock (a timeout when the attempt's own is shorter); it notes when each attempt
    arrived and what it was sent."""

    def __init__(self, clock: FakeClock, replies: Sequence[Reply], latency: float = 0.0) -> None:
        self.clock = clock
        self.replies = list(replies)
        self.latency = latency
        self.sent_at: list[float] = []
        self.requests: list[ChatRequest] = []

    async def handle(self, req: ChatRequest) -> ChatResult:
        self.sent_at.append(self.clock.now())
        self.requests.append(req)
        if self.latency > req.timeout:
            await self.clock.sleep(req.timeout)
            raise ProviderTimeout(f"no answer within {req.timeout:g} s", kind="total_timeout")
        if self.latency:
            await self.clock.sleep(self.latency)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, ProviderError):
            raise reply
        return reply


def run(clock: FakeClock, coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(clock.run(coro))


def handler(clock: FakeClock, inner: Scripted, **config: Any) -> RetryHandler:
    return RetryHandler(inner, RetryConfig(**config), clock=clock, rng=random.Random(1))


def test_isolated_faults_are_retried_at_once() -> None:
    """Three resets in a row cost milliseconds, not seconds of backoff: each retry waits under the quick delay."""
    clock = FakeClock(start=0.0)
    inner = Scripted(clock, [reset(), reset(), reset(), answer()])
    result = run(clock, handler(clock, inner).handle(request()))
    assert (result.outcome, result.attempts) == (Outcome.OK, 4)
    assert all(f.wait_s is not None and f.wait_s <= QUICK_DELAY_S for f in result.failures)
    assert inner.sent_at[-1] <= 3 * QUICK_DELAY_S


def test_an_unlucky_call_keeps_trying_while_the_budget_has_a_surplus() -> None:
    """With num_retries=2, a call that meets eight isolated faults among calls that succeed still gets its answer;
    a lone call with the same luck stops after three attempts (the reserve is no evidence of bad luck)."""
    clock = FakeClock(start=0.0)
    lone = Scripted(clock, [reset()] * 8 + [answer()])
    with pytest.raises(CallFailed, match="retries exhausted after 3 attempt"):
        run(clock, handler(clock, lone).handle(request(num_retries=2)))

    inner = Scripted(clock, [answer()])
    retry = handler(clock, inner)

    async def among_successes() -> ChatResult:
        for _ in range(100):
            await retry.handle(request())
        inner.replies = [reset()] * 8 + [answer()]
        return await retry.handle(request(num_retries=2))

    result = run(clock, among_successes())
    assert (result.outcome, result.attempts) == (Outcome.OK, 9)


def test_without_budget_num_retries_bounds_the_call_and_every_failure_is_listed() -> None:
    """Budget 0 (always back off): 1 + num_retries attempts, then CallFailed with each failure in order."""
    clock = FakeClock(start=0.0)
    inner = Scripted(clock, [ProviderTimeout("slow", kind="read_timeout")])
    with pytest.raises(CallFailed, match="retries exhausted after 3 attempt") as info:
        run(clock, handler(clock, inner, budget=0).handle(request(num_retries=2)))
    assert [f.kind for f in info.value.failures] == ["read_timeout"] * 3
    waits = [f.wait_s for f in info.value.failures[:-1]]
    assert all(w is not None and 0 <= w <= 0.5 * 2**i for i, w in enumerate(waits))  # full jitter under the backoff


def test_a_failing_endpoint_gets_backoff_not_quick_retries() -> None:
    """Against an endpoint that fails everything, quick retries stop as soon as failed attempts outnumber answered
    ones by the budget's margin (tokens left or not); every further retry backs off, and num_retries ends each call."""
    clock = FakeClock(start=0.0)
    inner = Scripted(clock, [MalformedResponse("no choices", kind="no_choices")], latency=0.05)
    retry = handler(clock, inner, backoff_base=1.0, backoff_max=1.0)

    async def many() -> list[BaseException | ChatResult]:
        calls = (retry.handle(request(num_retries=3)) for _ in range(200))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = run(clock, many())
    assert all(isinstance(o, CallFailed) for o in outcomes)
    waits = [f.wait_s for o in outcomes if isinstance(o, CallFailed) for f in o.failures if f.wait_s is not None]
    assert len(waits) == 200 * 3  # num_retries bounds every call
    quick = sum(1 for w in waits if w <= QUICK_DELAY_S)
    assert quick <= BudgetRules().failure_margin + 0.04 * len(waits)  # a backoff draws under 20 ms 2% of the time


def test_retry_after_is_obeyed_for_its_prompt() -> None:
    """A 503 with Retry-After 2 s: the next attempt goes 2 s (plus at most 10%) later, even with budget to spare."""
    clock = FakeClock(start=0.0)
    inner = Scripted(clock, [ErrorResponse("busy", kind="http_503", status=503, retry_after=2.0), answer()])
    result = run(clock, handler(clock, inner).handle(request()))
    assert result.outcome is Outcome.OK
    assert 2.0 <= inner.sent_at[1] <= 2.2


@pytest.mark.parametrize(("retry_after", "why"), [(50.0, "deadline reached"), (300.0, "beyond the maximum")])
def test_a_retry_after_past_the_deadline_or_the_maximum_ends_the_call_at_once(retry_after: float, why: str) -> None:
    """Waiting past the call's deadline, or longer than retry_after_max, would only delay the fallback: no wait."""
    clock = FakeClock(start=0.0)
    inner = Scripted(clock, [ErrorResponse("later", kind="http_429", status=429, retry_after=retry_after)])
    with pytest.raises(CallFailed, match=why):
        run(clock, handler(clock, inner, deadline=30.0, retry_after_max=120.0).handle(request()))
    assert clock.now() == 0.0
    assert len(inner.sent_at) == 1


def test_backpressure_waits_its_retry_after_without_spending_num_retries() -> None:
    """Four 429s with Retry-After 0.5 s and num_retries=0: the call waits each out and gets its answer."""
    clock = FakeClock(start=0.0)
    refusal = ErrorResponse("slow down", kind="http_429", status=429, retry_after=0.5)
    inner = Scripted(clock, [refusal] * 4 + [answer()])
    result = run(clock, handler(clock, inner, budget=0).handle(request(num_retries=0)))
    assert (result.outcome, result.attempts) == (Outcome.OK, 5)
    gaps = [b - a for a, b in zip(inner.sent_at, inner.sent_at[1:], strict=False)]
    assert all(0.5 <= gap <= 0.55 for gap in gaps)


def test_a_request_scope_failure_is_not_retried() -> None:
    """A failure that will repeat for this request ends the call at once, whatever the budget and num_retries."""
    clock = FakeClock(start=0.0)
    for error in (
        ErrorResponse("bad request", kind="http_400", status=400),
        ErrorResponse("no provider for these parameters", kind="http_503", status=503, scope=Scope.REQUEST),
    ):
        inner = Scripted(clock, [error])
        with pytest.raises(CallFailed, match="not retryable after 1 attempt"):
            run(clock, handler(clock, inner).handle(request(num_retries=5)))
        assert len(inner.sent_at) == 1


def test_a_pending_backoff_ends_when_the_breaker_opens() -> None:
    """A call backing off tries again as soon as its model's breaker opens (the breaker then holds it)."""
    clock = FakeClock(start=0.0)
    opened = asyncio.Event()
    inner = Scripted(clock, [reset(), answer()])

    async def scenario() -> ChatResult:
        retry = RetryHandler(
            inner, RetryConfig(budget=0, backoff_base=8.0, backoff_max=8.0), clock=clock, interrupt=lambda _: opened
        )

        async def trip() -> None:
            await clock.sleep(0.001)
            opened.set()

        tripping = asyncio.ensure_future(trip())
        result = await retry.handle(request())
        await tripping
        return result

    result = run(clock, scenario())
    assert (result.outcome, result.attempts) == (Outcome.OK, 2)
    assert inner.sent_at[1] <= 0.001


def test_a_retry_after_is_waited_out_even_when_the_breaker_opens() -> None:
    """The breaker opening does not shorten a Retry-After: it belongs to the prompt it came with."""
    clock = FakeClock(start=0.0)
    opened = asyncio.Event()
    opened.set()
    inner = Scripted(clock, [ErrorResponse("slow down", kind="http_429", status=429, retry_after=3.0), answer()])
    retry = RetryHandler(inner, RetryConfig(), clock=clock, interrupt=lambda _: opened)
    assert run(clock, retry.handle(request())).outcome is Outcome.OK
    assert inner.sent_at[1] >= 3.0


def test_every_attempt_carries_the_deadline_and_fits_in_what_is_left_of_it() -> None:
    """The layer sets the call's deadline on each attempt; an attempt's timeout never outlasts it."""
    clock = FakeClock(start=100.0)
    inner = Scripted(clock, [ProviderTimeout("slow", kind="read_timeout")] * 2 + [answer()], latency=4.0)
    result = run(clock, handler(clock, inner, deadline=20.0).handle(request(timeout=600.0)))
    assert result.attempts == 3
    assert {r.deadline for r in inner.requests} == {120.0}
    assert inner.requests[0].timeout == 20.0
    assert all(r.timeout == pytest.approx(120.0 - at) for r, at in zip(inner.requests, inner.sent_at, strict=True))


def test_the_deadline_ends_a_call_that_keeps_failing() -> None:
    """With retries to spare, a call against a failing endpoint stops at its deadline; its last attempt is cut to
    what is left of it."""
    clock = FakeClock(start=0.0)
    inner = Scripted(clock, [reset()], latency=1.0)
    with pytest.raises(CallFailed, match="deadline reached"):
        run(clock, handler(clock, inner, deadline=5.0).handle(request(num_retries=50)))
    assert 4.9 <= clock.now() <= 5.0
    assert len(inner.sent_at) == 5


def test_one_models_failures_leave_another_models_budget_alone() -> None:
    """The budget is per model: a model that fails everything does not turn another model's faults into backoff."""
    clock = FakeClock(start=0.0)
    broken = Scripted(clock, [MalformedResponse("no choices", kind="no_choices")])
    retry = handler(clock, broken)

    async def drain() -> None:
        await asyncio.gather(*(retry.handle(request(num_retries=3)) for _ in range(200)), return_exceptions=True)

    run(clock, drain())
    other = retry.budget("anthropic/claude-3.5-haiku")
    drained = retry.budget(MODEL)
    assert other is not None
    assert drained is not None
    assert other.has_room(clock.now(), 1.0)
    assert not drained.has_room(clock.now(), 1.0)
