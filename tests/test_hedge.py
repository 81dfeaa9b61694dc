"""Hedged requests and the latency-aware attempt timeout: the decisions, the layer on a fake clock, and a straggler
answered by its duplicate against the local server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

from resilient_llm import Engine, Outcome
from resilient_llm.errors import ErrorResponse, ProviderError, ProviderTimeout
from resilient_llm.layers.hedge import AttemptTimer, HedgeConfig, HedgeHandler
from resilient_llm.policy.hedge import (
    MAX_CUT_SHARE,
    MIN_SAMPLES,
    HedgeBudget,
    LatencyWindow,
    LatencyWindows,
    attempt_timeout,
    hedge_delay,
)
from resilient_llm.testing.clock import FakeClock
from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.types import ChatRequest, ChatResult
from tests.conftest import MODEL, read_log

T = TypeVar("T")


def test_delay_is_the_cap_until_there_are_enough_samples() -> None:
    """Few samples: wait the cap; enough: the quantile, clamped to [floor, cap]."""
    assert hedge_delay([0.1] * 5, quantile=0.9, floor=0.2, cap=9.0) == 9.0
    samples = [0.1 * i for i in range(1, 101)]
    assert hedge_delay(samples, quantile=0.9, floor=0.2, cap=9.0) == samples[89]
    assert hedge_delay(samples, quantile=0.9, floor=0.2, cap=5.0) == 5.0
    assert hedge_delay([0.01] * 50, quantile=0.9, floor=0.2, cap=5.0) == 0.2


def test_the_window_keeps_the_percentiles_of_recent_answers() -> None:
    """The hedge delay follows the window's quantile and the p99 its 99th percentile, once enough answers arrived."""
    window = LatencyWindow(quantile=0.95)
    for _ in range(MIN_SAMPLES - 1):
        window.answered(0.1)
    assert window.p99 is None
    assert window.hedge_delay(floor=0.05, cap=9.0) == 9.0
    for i in range(500):
        window.answered(0.01 * (i % 100 + 1))  # 10 ms .. 1 s, evenly: the first answers have left the window
    assert window.hedge_delay(floor=0.05, cap=9.0) == pytest.approx(0.95, abs=0.02)
    assert window.p99 == pytest.approx(0.99, abs=0.02)


def test_the_share_of_cut_attempts_is_over_the_recent_ones() -> None:
    """Cut attempts are counted over the last hundred outcomes; older ones leave the share."""
    window = LatencyWindow(quantile=0.95)
    for _ in range(30):
        window.failed(cut=True)
    for _ in range(70):
        window.answered(0.1)
    assert window.cut_share == pytest.approx(0.3)
    for _ in range(100):
        window.failed(cut=False)
    assert window.cut_share == 0.0


def test_an_attempt_timeout_is_a_multiple_of_the_p99_with_a_floor() -> None:
    """factor x p99, at least the floor; none without samples, with factor 0, or when many attempts were cut."""
    assert attempt_timeout(0.5, 0.0, factor=4.0, floor=1.0) == 2.0
    assert attempt_timeout(0.1, 0.0, factor=4.0, floor=1.0) == 1.0
    assert attempt_timeout(None, 0.0, factor=4.0, floor=1.0) is None
    assert attempt_timeout(0.5, 0.0, factor=0.0, floor=1.0) is None
    assert attempt_timeout(0.5, MAX_CUT_SHARE + 0.01, factor=4.0, floor=1.0) is None


def test_budget_allows_the_ratio_over_the_window() -> None:
    """5% of 100 attempts is 5 hedges; old attempts leave the window."""
    budget = HedgeBudget(0.05, window_s=60.0)
    for _ in range(100):
        budget.record_attempt(0.0)
    assert [budget.try_spend(1.0) for _ in range(7)] == [True] * 5 + [False] * 2
    budget.record_attempt(100.0)
    assert not budget.try_spend(100.0)  # the window holds 1 attempt


class Endpoint:
    """A fake endpoint on the fake clock: each attempt takes ``latency`` (or the next of ``script``: a number of
    seconds, or an error), honouring the attempt's timeout as the HTTP layer does."""

    def __init__(self, clock: FakeClock, latency: float = 0.1) -> None:
        self.clock = clock
        self.latency = latency
        self.script: list[float | ProviderError] = []
        self.timeouts: list[float] = []
        self.cancelled = 0

    async def handle(self, request: ChatRequest) -> ChatResult:
        self.timeouts.append(request.timeout)
        step = self.script.pop(0) if self.script else self.latency
        if isinstance(step, ProviderError):
            raise step
        try:
            if step > request.timeout:
                await self.clock.sleep(request.timeout)
                raise ProviderTimeout(f"no answer within {request.timeout:g} s", kind="total_timeout")
            await self.clock.sleep(step)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return ChatResult(f"after {step:g} s", "ok", request.model)  # type: ignore[arg-type]


def run(clock: FakeClock, coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(clock.run(coro))


def layer(
    clock: FakeClock, endpoint: Endpoint, may_hedge: Callable[[ChatRequest], bool] = lambda _: True, **config: Any
) -> HedgeHandler:
    """The hedge layer over the attempt timer over ``endpoint`` (the limit between them is left out)."""
    settings = HedgeConfig(**config)
    windows = LatencyWindows(settings.quantile)
    timer = AttemptTimer(endpoint, settings, windows, clock=clock)
    return HedgeHandler(timer, settings, windows, may_hedge=may_hedge, logger=structlog.get_logger(), clock=clock)


def timer(clock: FakeClock, endpoint: Endpoint, **config: Any) -> tuple[AttemptTimer, LatencyWindows]:
    """The attempt timer alone over ``endpoint``, as the stack has it with hedging off."""
    settings = HedgeConfig(**config)
    windows = LatencyWindows(settings.quantile)
    return AttemptTimer(endpoint, settings, windows, clock=clock), windows


def request(timeout: float = 60.0) -> ChatRequest:
    return ChatRequest(MODEL, ({"role": "user", "content": "q"},), timeout=timeout)


async def warm(hedge: HedgeHandler | AttemptTimer, calls: int = 50) -> None:
    for _ in range(calls):
        await hedge.handle(request())


def test_a_straggler_gets_one_duplicate_after_the_p95_and_the_first_answer_wins() -> None:
    """An attempt still running at the model's p95 is duplicated; the duplicate answers first, the primary is
    cancelled before the call returns."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    hedge = layer(clock, endpoint, min_delay=0.05)

    async def scenario() -> tuple[ChatResult, float]:
        await warm(hedge)
        endpoint.script = [30.0]  # the primary hangs; the duplicate takes the usual 0.1 s
        started = clock.now()
        result = await hedge.handle(request())
        return result, clock.now() - started

    result, took = run(clock, scenario())
    assert result.text == "after 0.1 s"
    assert took == pytest.approx(0.2)  # the p95 (0.1 s), then the duplicate's 0.1 s
    assert (hedge.hedges, hedge.hedge_wins, endpoint.cancelled) == (1, 1, 1)


def test_a_retry_after_heard_by_the_duplicate_binds_the_call_when_both_fail() -> None:
    """The primary hangs and is cut by its attempt timeout after the duplicate was refused with Retry-After: the
    call fails with the refusal, so the retry layer waits it out instead of retrying the prompt at once."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    hedge = layer(clock, endpoint, min_delay=0.05)
    refusal = ErrorResponse("Rate limit exceeded", status=429, kind="http_429", retry_after=1.0)

    async def scenario() -> BaseException:
        await warm(hedge)
        endpoint.script = [30.0, refusal]
        try:
            await hedge.handle(request())
        except ProviderError as exc:
            return exc
        raise AssertionError("the call should have failed")

    error = run(clock, scenario())
    assert error is refusal
    assert hedge.hedges == 1


def test_no_duplicate_without_room_in_the_limit() -> None:
    """``may_hedge`` saying no (the limit full, the breaker not closed): the straggler runs alone."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    hedge = layer(clock, endpoint, may_hedge=lambda _: False, attempt_timeout_factor=0.0)

    async def scenario() -> ChatResult:
        await warm(hedge)
        endpoint.script = [3.0]
        return await hedge.handle(request())

    assert run(clock, scenario()).text == "after 3 s"
    assert hedge.hedges == 0


def test_the_timer_counts_from_the_send_not_from_a_wait_for_a_slot() -> None:
    """Latencies are measured below the limit: a call that queued 5 s for a slot adds 0.1 s to the window, not 5.1 s."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    attempts, windows = timer(clock, endpoint)

    async def queued_then_sent() -> None:
        for _ in range(30):
            await clock.sleep(5.0)  # what the limit above would make it wait
            await attempts.handle(request())

    run(clock, queued_then_sent())
    assert windows.of(MODEL).p99 == pytest.approx(0.1)


def test_hedges_stay_within_their_budget() -> None:
    """When every attempt straggles, only budget x attempts get a duplicate."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    hedge = layer(clock, endpoint, budget=0.05, attempt_timeout_factor=0.0)

    async def scenario() -> None:
        await warm(hedge, 100)
        endpoint.latency = 1.0  # every attempt from now on straggles
        await asyncio.gather(*(hedge.handle(request()) for _ in range(100)))

    run(clock, scenario())
    assert hedge.hedges == pytest.approx(0.05 * 200, abs=1)


def test_no_hedge_while_many_recent_attempts_were_refused() -> None:
    """When over a tenth of a model's recent attempts drew a 429, a duplicate would reach the endpoint inside a
    Retry-After: stragglers run alone until the refusals thin out."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    hedge = layer(clock, endpoint, attempt_timeout_factor=0.0)
    refusal = ErrorResponse("slow down", kind="http_429", status=429, retry_after=0.5)

    async def scenario() -> list[int]:
        await warm(hedge, 80)
        endpoint.script = [refusal] * 20
        for _ in range(20):
            with pytest.raises(ErrorResponse):
                await hedge.handle(request())
        endpoint.script = [2.0]
        await hedge.handle(request())
        refused = hedge.hedges
        await warm(hedge, 100)  # the refusals leave the last hundred outcomes
        endpoint.script = [2.0]
        await hedge.handle(request())
        return [refused, hedge.hedges]

    assert run(clock, scenario()) == [0, 1]
    assert hedge.hedges == 1


class LaggingClock(FakeClock):
    """A fake clock whose bounded waits wake ``lag`` seconds late, as a loop busy with other work does."""

    def __init__(self, lag: float) -> None:
        super().__init__(start=0.0)
        self.lag = lag

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109
        woke = await super().wait(event, timeout)
        if not woke:
            await self.sleep(self.lag)
        return woke


def test_no_hedge_from_a_loop_that_woke_late() -> None:
    """A hedge timer that fires far past its time means the loop lags: the primary's answer may already wait unread
    (or its 429), so no duplicate is sent."""
    clock = LaggingClock(lag=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    hedge = layer(clock, endpoint, attempt_timeout_factor=0.0)

    async def scenario() -> list[int]:
        await warm(hedge)
        clock.lag = 1.0
        endpoint.script = [3.0]
        await hedge.handle(request())
        late = hedge.hedges
        clock.lag = 0.0
        endpoint.script = [3.0]
        await hedge.handle(request())
        return [late, hedge.hedges]

    assert run(clock, scenario()) == [0, 1]


class ReadInTurns(Endpoint):
    """Answers its next call with ``refusal`` after ``latency``, read ``turns`` loop turns later: a 429 that reached the
    socket as the hedge timer fired, read once the loop gets to it."""

    def __init__(self, clock: FakeClock, refusal: ProviderError, turns: int) -> None:
        super().__init__(clock, latency=0.1)
        self.refusal: ProviderError | None = refusal
        self.turns = turns

    async def handle(self, request: ChatRequest) -> ChatResult:
        refusal, self.refusal = self.refusal, None
        if refusal is None:
            return await super().handle(request)
        await self.clock.sleep(self.latency)
        for _ in range(self.turns):
            await asyncio.sleep(0)
        raise refusal


@pytest.mark.parametrize("turns", [0, 6])
def test_no_duplicate_while_the_primary_answer_waits_to_be_read(turns: int) -> None:
    """A 429 that arrived as the hedge delay ran out is read before a duplicate goes: the prompt is not sent again
    inside its Retry-After, and the call fails with the refusal for the retry layer to wait out."""
    clock = FakeClock(start=0.0)
    refusal = ErrorResponse("Rate limit exceeded", status=429, kind="http_429", retry_after=1.0)
    endpoint = ReadInTurns(clock, refusal, turns)
    hedge = layer(clock, endpoint, min_delay=0.05, attempt_timeout_factor=0.0)

    async def scenario() -> BaseException:
        endpoint.refusal, waiting = None, endpoint.refusal
        await warm(hedge)  # the p95, so the hedge delay, is the refusal's own 0.1 s
        endpoint.refusal = waiting
        with pytest.raises(ErrorResponse) as caught:
            await hedge.handle(request())
        return caught.value

    assert run(clock, scenario()) is refusal
    assert hedge.hedges == 0


def test_a_hung_attempt_is_cut_after_a_multiple_of_the_p99() -> None:
    """With hedging unable to help, a hung attempt ends at factor x p99 (floor permitting), not the call's timeout."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.5)
    hedge, _ = timer(clock, endpoint, attempt_timeout_factor=4.0, attempt_timeout_min=1.0)

    async def scenario() -> float:
        await warm(hedge)
        endpoint.script = [600.0]
        started = clock.now()
        with pytest.raises(ProviderTimeout):
            await hedge.handle(request(timeout=60.0))
        return clock.now() - started

    assert run(clock, scenario()) == pytest.approx(2.0)
    assert endpoint.timeouts[0] == 60.0  # before enough samples: the call's own timeout
    assert endpoint.timeouts[-1] == pytest.approx(2.0)


def test_a_hang_among_the_first_attempts_is_cut_once_the_others_show_it_overdue() -> None:
    """The very first attempt hangs while thirty others are answered in 0.1 s: once those give the model a p99, the
    hung one is cut (at the floor, 1 s) instead of holding its call for the whole 60 s timeout."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    hedge, windows = timer(clock, endpoint, attempt_timeout_factor=4.0, attempt_timeout_min=1.0)

    async def scenario() -> tuple[BaseException | ChatResult, float]:
        endpoint.script = [600.0]
        started = clock.now()
        hung = asyncio.ensure_future(hedge.handle(request(timeout=60.0)))
        await asyncio.gather(*(hedge.handle(request()) for _ in range(30)))
        outcome = (await asyncio.gather(hung, return_exceptions=True))[0]
        took = clock.now() - started
        await hedge.aclose()
        return outcome, took

    outcome, took = run(clock, scenario())
    assert isinstance(outcome, ProviderTimeout)
    assert outcome.kind == "total_timeout"
    assert took == pytest.approx(1.0)
    assert windows.of(MODEL).cut_share > 0


def test_a_first_attempt_cancelled_by_its_caller_stays_cancelled() -> None:
    """The watch over an attempt sent before the model had latencies turns only its own cut into a timeout: the
    caller's cancellation (a hedge lost, the call given up) still arrives as a cancellation."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    hedge, _ = timer(clock, endpoint, attempt_timeout_factor=4.0, attempt_timeout_min=1.0)

    async def scenario() -> bool:
        endpoint.script = [600.0]
        hung = asyncio.ensure_future(hedge.handle(request(timeout=60.0)))
        await clock.sleep(0.5)
        hung.cancel()
        outcome = (await asyncio.gather(hung, return_exceptions=True))[0]
        await hedge.aclose()
        return isinstance(outcome, asyncio.CancelledError)

    assert run(clock, scenario())


def test_the_cut_is_suspended_when_the_model_got_slower_for_everyone() -> None:
    """Once more than MAX_CUT_SHARE of recent attempts were cut, attempts get the call's whole timeout again, so the
    slower answers arrive and the percentiles catch up."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock, latency=0.1)
    hedge, windows = timer(clock, endpoint, attempt_timeout_factor=4.0, attempt_timeout_min=1.0)

    async def scenario() -> list[float]:
        await warm(hedge, 100)
        endpoint.latency = 5.0
        outcomes = await asyncio.gather(*(hedge.handle(request()) for _ in range(40)), return_exceptions=True)
        assert sum(isinstance(o, ProviderTimeout) for o in outcomes) == 40
        slow = await hedge.handle(request())
        return [slow.text == "after 5 s", windows.of(MODEL).cut_share]

    answered, share = run(clock, scenario())
    assert answered
    assert share > MAX_CUT_SHARE


def warm_up(engine: Engine, calls: int = 30) -> None:
    for i in range(calls):
        engine.complete(MODEL, user=f"warm {i}")


def test_a_straggler_is_answered_by_its_hedge(make_engine: Callable[..., Engine], log_path: Path) -> None:
    """On the real wire, by default: a hung attempt gets a duplicate after the model's p95; the duplicate's answer
    wins; no slot leaks."""
    with FaultServer("clean", latency_s=0.02, hang_s=10.0) as server:
        engine = make_engine(base_url=server.url, hedge_min_delay=0.05, timeout=20.0)
        warm_up(engine)
        server.reset_stats()
        server.script("hang")
        result = engine.complete(MODEL, user="straggler")
        assert result.outcome is Outcome.OK
        assert result.attempts == 1
        assert result.latency_s < 1.0  # not the 10 s hang, nor the 20 s timeout
        assert server.stats()["requests"] == 2
    assert engine.in_flight == 0
    events = [e["event"] for e in read_log(log_path)]
    assert events.count("hedge") == 1
    assert events.count("hedge_won") == 1


@pytest.mark.slow
def test_with_hedging_off_a_hung_attempt_is_cut_and_retried(make_engine: Callable[..., Engine], log_path: Path) -> None:
    """On the real wire with hedging off: the hung attempt is cut after the attempt timeout's floor (1 s), not the
    10 s hang, and the retry answers."""
    with FaultServer("clean", latency_s=0.02, hang_s=10.0) as server:
        engine = make_engine(base_url=server.url, hedge=False, timeout=20.0)
        warm_up(engine)
        server.reset_stats()
        server.script("hang")
        result = engine.complete(MODEL, user="straggler")
        assert result.outcome is Outcome.OK
        assert result.attempts == 2
        assert 1.0 <= result.latency_s < 2.0
        assert server.stats()["requests"] == 2
    assert "hedge" not in [e["event"] for e in read_log(log_path)]
