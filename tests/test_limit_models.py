"""The limit layer per model under the endpoint's ceiling, on a fake clock: isolation, pauses, deadlines, has_room."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import structlog

from resilient_llm.errors import BreakerOpen, ErrorResponse, Scope, is_retryable
from resilient_llm.layers.limit import LimitConfig, LimitHandler, ModelPaused
from resilient_llm.testing.clock import FakeClock
from resilient_llm.types import ChatRequest, ChatResult, Handler, Outcome, Usage

T = TypeVar("T")
HEALTHY = "openai/gpt-4o-mini"
TROUBLED = "meta-llama/llama-3.3-70b-instruct:free"


def request(model: str, **fields: Any) -> ChatRequest:
    return ChatRequest(model, ({"role": "user", "content": "q"},), **fields)


class Endpoint:
    """A fake endpoint on the fake clock: per model a latency, or an error to raise; counts what was sent."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.latency: dict[str, float] = {}
        self.errors: dict[str, Callable[[], BaseException]] = {}
        self.sent: dict[str, list[float]] = {}
        self.in_flight = 0
        self.peak = 0

    async def handle(self, req: ChatRequest) -> ChatResult:
        self.sent.setdefault(req.model, []).append(self.clock.now())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.clock.sleep(self.latency.get(req.model, 0.5))
            make_error = self.errors.get(req.model)
            if make_error is not None:
                raise make_error()
            return ChatResult("A", Outcome.OK, req.model, usage=Usage(completion_tokens=5))
        finally:
            self.in_flight -= 1


def run(clock: FakeClock, scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(clock.run(scenario()))


def refused(retry_after: float, kind: str = "http_429") -> Callable[[], BaseException]:
    return lambda: ErrorResponse("slow down", kind=kind, status=429, retry_after=retry_after, scope=Scope.MODEL)


async def timed(clock: FakeClock, call: Awaitable[T]) -> tuple[T | BaseException, float]:
    """What a call returned or raised, and how long it took on the fake clock."""
    started = clock.now()
    try:
        result: T | BaseException = await call
    except Exception as exc:
        result = exc
    return result, clock.now() - started


def test_a_model_refused_in_a_burst_does_not_slow_another_model() -> None:
    """Three 429s with Retry-After 30 s in a row shut the troubled model's gate; the healthy model's calls go on at
    their own latency meanwhile, and the troubled model's next call waits the 30 s."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock)
    endpoint.errors[TROUBLED] = refused(30.0)
    limit = LimitHandler(endpoint, LimitConfig(), clock=clock)

    async def scenario() -> tuple[list[float], float]:
        for _ in range(3):
            with pytest.raises(ErrorResponse):
                await limit.handle(request(TROUBLED))
        del endpoint.errors[TROUBLED]
        waiting = asyncio.ensure_future(timed(clock, limit.handle(request(TROUBLED))))
        healthy = await asyncio.gather(*(timed(clock, limit.handle(request(HEALTHY))) for _ in range(40)))
        _, troubled_took = await waiting
        return [took for _, took in healthy], troubled_took

    healthy, troubled = run(clock, scenario)
    assert max(healthy) <= 1.0  # 40 calls, 20 slots at first, 0.5 s each
    assert troubled >= 29.0


def test_every_model_together_stays_under_the_endpoint_ceiling_and_a_full_model_holds_no_one_back() -> None:
    """Ceiling 6: a slow model's 20 queued calls never take the endpoint past 6 in flight, and a fast model's
    calls, arriving after them, are served as the fast model's own limit allows, not behind the slow queue."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock)
    endpoint.latency[TROUBLED] = 10.0
    limit = LimitHandler(endpoint, LimitConfig(mode="fixed", max_concurrent=6), clock=clock)

    async def scenario() -> list[float]:
        slow = [asyncio.ensure_future(limit.handle(request(TROUBLED))) for _ in range(20)]
        await clock.sleep(0.1)
        assert limit.in_flight == 6
        # Only when a slow call ends is there room: the first slot freed goes to the longest waiter, the slow model's.
        fast = await asyncio.gather(*(timed(clock, limit.handle(request(HEALTHY))) for _ in range(4)))
        await asyncio.gather(*slow)
        return [took for _, took in fast]

    fast = run(clock, scenario)
    assert endpoint.peak <= 6
    assert max(fast) <= 35.0  # arrival order across models: behind the slow calls that queued first, no more


def test_a_full_model_lane_does_not_block_another_model_under_the_ceiling() -> None:
    """A model at its own limit (20 in flight, 30 queued) leaves the endpoint's other slots to another model."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock)
    endpoint.latency[TROUBLED] = 60.0
    limit = LimitHandler(endpoint, LimitConfig(max_concurrent=64), clock=clock)

    async def scenario() -> float:
        slow = [asyncio.ensure_future(limit.handle(request(TROUBLED))) for _ in range(50)]
        await clock.sleep(0.1)
        assert limit.limit_of(TROUBLED) == 20
        _, took = await timed(clock, limit.handle(request(HEALTHY)))
        await asyncio.gather(*slow)
        return took

    assert run(clock, scenario) == pytest.approx(0.5, abs=0.05)


def test_a_retry_after_beyond_pause_max_fails_the_model_over_until_it_ends() -> None:
    """Retry-After 3600 s (pause_max 60 s): that call ends with ModelPaused (model scope, not retryable, the time left
    in its message); the model's next calls fail at once without a request; another model is untouched; after the
    hour the model's calls are sent again."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock)
    endpoint.errors[TROUBLED] = refused(3600.0)
    limit = LimitHandler(endpoint, LimitConfig(), clock=clock)

    async def scenario() -> None:
        with pytest.raises(ModelPaused) as told:
            await limit.handle(request(TROUBLED))
        assert (told.value.kind, told.value.scope, is_retryable(told.value)) == ("model_paused", Scope.MODEL, False)
        assert isinstance(told.value.__cause__, ErrorResponse)
        del endpoint.errors[TROUBLED]
        result, took = await timed(clock, limit.handle(request(TROUBLED)))
        assert isinstance(result, ModelPaused)
        assert took == 0.0
        assert "paused for another 3600.0 s" in str(result)
        assert len(endpoint.sent[TROUBLED]) == 1
        assert not limit.has_room(TROUBLED)
        assert (await limit.handle(request(HEALTHY))).outcome is Outcome.OK
        await clock.sleep(3600.0)
        assert (await limit.handle(request(TROUBLED))).outcome is Outcome.OK

    run(clock, scenario)


def test_a_spent_quota_is_remembered_until_its_reset() -> None:
    """quota_exhausted with its reset in 2 h: one request (its call fails over at once, still named a spent quota),
    then every call fails over at once for 2 h, then goes."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock)
    endpoint.errors[TROUBLED] = refused(7200.0, kind="quota_exhausted")
    limit = LimitHandler(endpoint, LimitConfig(), clock=clock)

    async def scenario() -> None:
        with pytest.raises(ModelPaused) as told:
            await limit.handle(request(TROUBLED))
        assert (told.value.kind, told.value.status, is_retryable(told.value)) == ("quota_exhausted", 429, False)
        for _ in range(49):
            with pytest.raises(ModelPaused, match="quota"):
                await limit.handle(request(TROUBLED))
        assert len(endpoint.sent[TROUBLED]) == 1
        del endpoint.errors[TROUBLED]
        await clock.sleep(7200.0)
        assert (await limit.handle(request(TROUBLED))).outcome is Outcome.OK

    run(clock, scenario)


def test_a_quota_reset_soon_shuts_the_model_gate_until_then() -> None:
    """quota_exhausted resetting in 20 s (under pause_max): the model's next calls wait for the reset, once each."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock)
    endpoint.errors[TROUBLED] = refused(20.0, kind="quota_exhausted")
    limit = LimitHandler(endpoint, LimitConfig(), clock=clock)

    async def scenario() -> list[float]:
        with pytest.raises(ErrorResponse):
            await limit.handle(request(TROUBLED))
        del endpoint.errors[TROUBLED]
        calls = await asyncio.gather(*(timed(clock, limit.handle(request(TROUBLED))) for _ in range(5)))
        return [took for _, took in calls]

    took = run(clock, scenario)
    assert all(19.0 <= t <= 21.0 for t in took)
    assert len(endpoint.sent[TROUBLED]) == 6


def test_a_gate_never_holds_a_call_past_its_deadline() -> None:
    """A 30 s gate and a call with 5 s left: it fails over at once (ModelPaused), queued or arriving."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock)
    endpoint.errors[TROUBLED] = refused(30.0)
    limit = LimitHandler(endpoint, LimitConfig(), clock=clock)

    async def scenario() -> tuple[BaseException | ChatResult, float]:
        for _ in range(3):
            with pytest.raises(ErrorResponse):
                await limit.handle(request(TROUBLED))
        return await timed(clock, limit.handle(request(TROUBLED, deadline=clock.now() + 5.0)))

    result, took = run(clock, scenario)
    assert isinstance(result, ModelPaused)
    assert took == 0.0


def test_the_limit_goes_on_the_call_record_and_the_trial_on_the_request() -> None:
    """record.limit is the model's limit when the attempt went out; may_send sees the request, so only the
    breaker's trial passes while it holds the rest back."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock)
    limit = LimitHandler(endpoint, LimitConfig(initial=7), clock=clock, may_send=lambda r: r.trial)

    async def scenario() -> None:
        trial = request(HEALTHY, trial=True)
        assert (await limit.handle(trial)).outcome is Outcome.OK
        assert trial.record.limit == 7
        with pytest.raises(BreakerOpen):
            await limit.handle(request(HEALTHY))

    run(clock, scenario)


def test_has_room_follows_the_model_limit_and_the_ceiling() -> None:
    """has_room: below the model's limit and the ceiling; not while its gate is shut; per model."""
    clock = FakeClock(start=0.0)
    endpoint = Endpoint(clock)
    endpoint.latency[TROUBLED] = 100.0
    limit = LimitHandler(endpoint, LimitConfig(mode="fixed", max_concurrent=3), clock=clock)

    async def scenario() -> None:
        assert limit.has_room(TROUBLED)
        assert limit.has_room(HEALTHY)
        held = [asyncio.ensure_future(limit.handle(request(TROUBLED))) for _ in range(3)]
        await clock.sleep(1.0)
        assert not limit.has_room(HEALTHY)  # the endpoint's ceiling
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        assert limit.has_room(HEALTHY)
        assert limit.in_flight == 0

    run(clock, scenario)


async def obeying_caller(limit: LimitHandler, clock: FakeClock, calls: int) -> None:
    """A caller making ``calls`` calls one after another, each tried again after the Retry-After it was refused with."""
    for _ in range(calls):
        while True:
            try:
                await limit.handle(request(HEALTHY))
                break
            except ErrorResponse as exc:
                await clock.sleep(exc.retry_after or 1.0)


def crowd_log(clock: FakeClock, endpoint: Handler, callers: int, calls: int) -> list[tuple[str, dict[str, Any]]]:
    """``callers`` obeying callers of ``calls`` calls each through a default limit layer: its log lines, in order."""
    log = structlog.testing.CapturingLogger()
    limit = LimitHandler(endpoint, LimitConfig(), clock=clock, logger=log)

    async def scenario() -> None:
        await asyncio.gather(*(obeying_caller(limit, clock, calls) for _ in range(callers)))

    run(clock, scenario)
    return [(call.args[0], call.kwargs) for call in log.calls]


class CapacityEndpoint:
    """A fake endpoint that admits ``capacity`` attempts at once, answers them in 0.5-0.51 s (no two at the same
    instant, as on a real clock), and refuses the rest at once with Retry-After 1 s."""

    def __init__(self, clock: FakeClock, capacity: int) -> None:
        self.clock = clock
        self.capacity = capacity
        self.admitted = 0
        self.answered = 0

    async def handle(self, req: ChatRequest) -> ChatResult:
        if self.admitted >= self.capacity:
            raise refused(1.0)()
        self.admitted += 1
        self.answered += 1
        try:
            await self.clock.sleep(0.5 + (self.answered % 97) * 1e-4)
            return ChatResult("A", Outcome.OK, req.model, usage=Usage(completion_tokens=5))
        finally:
            self.admitted -= 1


def test_the_limits_probes_past_a_capacity_edge_it_knows_cut_it_without_pausing_anyone() -> None:
    """Against a capacity of 30 and 200 callers: the edge's first finding may pause the gate once; afterwards CUBIC's
    probes find the edge again and again, and each time the limit is cut with no pause (a pause would idle the other
    29 slots for the Retry-After)."""
    clock = FakeClock(start=0.0)
    events = crowd_log(clock, CapacityEndpoint(clock, capacity=30), callers=200, calls=8)
    pauses = [fields for event, fields in events if event == "gate_pause"]
    cuts = [fields for event, fields in events if event == "limit_change" and fields["reason"] == "backpressure"]
    assert len(pauses) <= 1
    assert len(cuts) >= 3
    assert all(cut["limit"] < 30 for cut in cuts)


class BucketEndpoint:
    """A fake token bucket (``rate`` a second, ``burst`` at most): an attempt without a token is refused with
    Retry-After 1 s after the usual 50 ms, as behind a proxy; answers take 50 ms (no two at the same instant)."""

    def __init__(self, clock: FakeClock, rate: float, burst: int) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.refilled = clock.now()
        self.attempts: list[tuple[float, bool]] = []  # (sent at, refused)

    async def handle(self, req: ChatRequest) -> ChatResult:
        now = self.clock.now()
        self.tokens = min(float(self.burst), self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        admitted = self.tokens >= 1
        self.tokens -= admitted
        self.attempts.append((now, not admitted))
        await self.clock.sleep(0.05 + (len(self.attempts) % 97) * 1e-5)
        if not admitted:
            raise refused(1.0)()
        return ChatResult("A", Outcome.OK, req.model, usage=Usage(completion_tokens=5))


def test_a_token_bucket_is_paced_at_the_rate_it_refills_at_once_two_cycles_measured_it() -> None:
    """A bucket of 50/s whose 429 comes after the answer latency, 32 callers: the first two gate cycles measure
    the rate, then attempts go about that fast and the bucket is hardly drained again (without pacing every pause
    refilled it, the next burst drained it, and the attempts in flight were refused: 1.19 requests per call)."""
    clock = FakeClock(start=0.0)
    endpoint = BucketEndpoint(clock, rate=50.0, burst=50)
    events = crowd_log(clock, endpoint, callers=32, calls=16)
    paces = [fields for event, fields in events if event == "pace"]
    assert len(paces) == 1
    assert 40 <= paces[0]["rate"] <= 55
    first_cycles = [refused_ for at, refused_ in endpoint.attempts if at < 3.0]
    paced = [refused_ for at, refused_ in endpoint.attempts if at >= 3.0]
    assert sum(first_cycles) > 30  # the price of learning the bucket
    assert len(paced) > 300
    assert sum(paced) <= 5
    assert len(endpoint.attempts) / (32 * 16) <= 1.15


def test_a_capacity_edge_is_not_paced() -> None:
    """At a capacity edge the limit keeps itself in use, so its gate cycles are no rate limit's: nothing is
    paced however many pauses come."""
    clock = FakeClock(start=0.0)
    events = crowd_log(clock, CapacityEndpoint(clock, capacity=30), callers=200, calls=8)
    assert not [fields for event, fields in events if event == "pace"]
