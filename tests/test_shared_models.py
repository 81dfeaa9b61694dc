"""Per-model limits and gates shared through a real redis-server by limit layers standing for separate processes
(each its own Redis client and process identity), over fake inner handlers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from resilient_llm.errors import ErrorResponse, Scope
from resilient_llm.layers.limit import LimitConfig, LimitHandler, ModelPaused
from resilient_llm.stores.shared_limit import SharedLimit
from resilient_llm.stores.shared_permits import SharedPermits
from resilient_llm.testing.redis_server import RedisServer
from resilient_llm.types import ChatRequest, ChatResult, Outcome, Usage

ENDPOINT = "http://127.0.0.1:1/api/v1\nsk-or-v1-TESTKEY"
HEALTHY = "openai/gpt-4o-mini"
TROUBLED = "meta-llama/llama-3.3-70b-instruct:free"


class Quiet:
    def warning(self, *args: Any, **fields: Any) -> None: ...

    info = warning


class Endpoint:
    """Answers in 20 ms; refuses a model with a Retry-After while told to; counts what each model was sent."""

    def __init__(self) -> None:
        self.refuse: dict[str, float] = {}
        self.sent: dict[str, int] = {}

    async def handle(self, req: ChatRequest) -> ChatResult:
        self.sent[req.model] = self.sent.get(req.model, 0) + 1
        await asyncio.sleep(0.02)
        if req.model in self.refuse:
            seconds = self.refuse[req.model]
            raise ErrorResponse("slow down", kind="http_429", status=429, retry_after=seconds, scope=Scope.MODEL)
        return ChatResult("A", Outcome.OK, req.model, usage=Usage(completion_tokens=5))


def process(url: str, endpoint: Endpoint, pause_max: float = 60.0) -> LimitHandler:
    """One process's limit layer, sharing through Redis."""
    store = SharedLimit(url, ENDPOINT, Quiet(), gate_cap_s=pause_max)
    return LimitHandler(endpoint, LimitConfig(pause_max=pause_max), shared=SharedPermits(store))


def request(model: str) -> ChatRequest:
    return ChatRequest(model, ({"role": "user", "content": "q"},), timeout=30.0)


async def took(call: Any) -> float:
    started = time.monotonic()
    await call
    return time.monotonic() - started


def test_a_burst_on_one_model_pauses_that_model_in_every_process_and_no_other(redis_server: RedisServer) -> None:
    """Process A meets three 429s with Retry-After 2 s on one model: process B's calls to that model wait for the
    shared gate, B's calls to another model do not."""
    endpoint = Endpoint()

    async def scenario() -> tuple[float, float]:
        a, b = process(redis_server.url, endpoint), process(redis_server.url, endpoint)
        endpoint.refuse[TROUBLED] = 2.0
        for _ in range(3):
            with pytest.raises(ErrorResponse):
                await a.handle(request(TROUBLED))
        del endpoint.refuse[TROUBLED]
        healthy = await asyncio.gather(*(took(b.handle(request(HEALTHY))) for _ in range(20)))
        troubled = await took(b.handle(request(TROUBLED)))
        await a.aclose()
        await b.aclose()
        return max(healthy), troubled

    healthy, troubled = asyncio.run(scenario())
    assert healthy < 1.0
    assert troubled >= 1.0  # the 2 s gate, less the time the healthy calls took


def test_an_hour_long_retry_after_pauses_the_model_here_not_in_a_process_started_later(
    redis_server: RedisServer,
) -> None:
    """Retry-After 3600 s beyond pause_max: this process fails that model over at once; a process started later
    sends to it (no hour-long shared gate), and both send to another model as usual."""
    endpoint = Endpoint()

    async def scenario() -> None:
        first = process(redis_server.url, endpoint)
        endpoint.refuse[TROUBLED] = 3600.0
        with pytest.raises(ModelPaused):
            await first.handle(request(TROUBLED))
        del endpoint.refuse[TROUBLED]
        with pytest.raises(ModelPaused):
            await first.handle(request(TROUBLED))
        assert endpoint.sent[TROUBLED] == 1
        assert (await first.handle(request(HEALTHY))).outcome is Outcome.OK
        later = process(redis_server.url, endpoint)
        assert await took(later.handle(request(TROUBLED))) < 1.0
        assert endpoint.sent[TROUBLED] == 2
        await first.aclose()
        await later.aclose()

    asyncio.run(scenario())


def test_a_gate_longer_than_the_cap_lasts_the_cap_in_redis(redis_server: RedisServer) -> None:
    """A burst with Retry-After 0.9 s under pause_max 1 s: the model's shared gate key is written for what was
    asked, within the cap."""
    endpoint = Endpoint()

    async def scenario() -> float:
        a = process(redis_server.url, endpoint, pause_max=1.0)
        endpoint.refuse[TROUBLED] = 0.9
        for _ in range(3):
            with pytest.raises(ErrorResponse):
                await a.handle(request(TROUBLED))
        await asyncio.sleep(0.2)  # the gate is written in the background
        reader = SharedLimit(redis_server.url, ENDPOINT, Quiet())
        left = reader.gate_remaining(TROUBLED)
        reader.close()
        await a.aclose()
        return left

    left = asyncio.run(scenario())
    assert 0.4 < left <= 0.9
