"""Each layer alone, against a fake inner handler: fast, deterministic, no server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from resilient_llm.errors import ErrorResponse, ProviderTimeout
from resilient_llm.layers.limit import LimitConfig, LimitHandler
from resilient_llm.types import ChatRequest, ChatResult, Outcome, Usage

MODEL = "openai/gpt-4o-mini"


def request(**fields: object) -> ChatRequest:
    return ChatRequest(MODEL, ({"role": "user", "content": "q"},), **fields)  # type: ignore[arg-type]


def answer(tokens: int = 5) -> ChatResult:
    return ChatResult("A", Outcome.OK, MODEL, usage=Usage(completion_tokens=tokens))


class Fake:
    """An inner handler from a function of the request."""

    def __init__(self, respond: Callable[[ChatRequest], Awaitable[ChatResult]]) -> None:
        self.respond = respond
        self.calls = 0

    async def handle(self, req: ChatRequest) -> ChatResult:
        self.calls += 1
        return await self.respond(req)


def test_waiting_attempts_are_served_in_arrival_order() -> None:
    """With one slot, attempts start in the order they arrived."""
    started: list[str] = []

    async def respond(req: ChatRequest) -> ChatResult:
        started.append(str(req.messages[0]["content"]))
        await asyncio.sleep(0.01)
        return answer()

    async def scenario() -> None:
        limit = LimitHandler(Fake(respond), LimitConfig(mode="fixed", max_concurrent=1))
        reqs = [ChatRequest(MODEL, ({"role": "user", "content": str(i)},)) for i in range(10)]
        await asyncio.gather(*(limit.handle(r) for r in reqs))

    asyncio.run(scenario())
    assert started == [str(i) for i in range(10)]


def test_the_deadline_covers_waiting_for_a_slot() -> None:
    """A call whose deadline passes while it waits for a slot ends then, with a queue timeout (never sent)."""

    async def hang(_: ChatRequest) -> ChatResult:
        await asyncio.sleep(10)
        return answer()

    async def scenario() -> float:
        limit = LimitHandler(Fake(hang), LimitConfig(mode="fixed", max_concurrent=1))
        holder = asyncio.ensure_future(limit.handle(request()))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(ProviderTimeout, match="no slot"):
            await limit.handle(request(deadline=time.monotonic() + 0.3))
        holder.cancel()
        return time.monotonic() - started

    assert 0.25 <= asyncio.run(scenario()) < 1.0


def test_a_burst_of_retry_after_refusals_pauses_every_attempt_to_the_endpoint() -> None:
    """Three 429s with Retry-After in a row shut the gate: the next attempts wait it out instead of each meeting one."""
    sent: list[float] = []

    async def respond(_: ChatRequest) -> ChatResult:
        sent.append(time.monotonic())
        if len(sent) <= 3:
            raise ErrorResponse("slow down", kind="http_429", status=429, retry_after=0.3)
        return answer()

    async def scenario() -> float:
        limit = LimitHandler(Fake(respond), LimitConfig())
        for _ in range(3):
            with pytest.raises(ErrorResponse):
                await limit.handle(request())
        told = time.monotonic()
        await asyncio.gather(*(limit.handle(request()) for _ in range(5)))
        return min(sent[3:]) - told

    assert asyncio.run(scenario()) >= 0.28


def test_a_lone_retry_after_refusal_among_answers_pauses_only_its_own_call() -> None:
    """One 429 among answers (a provider's hiccup) leaves the other calls going: only the refused call waits."""
    sent: list[float] = []

    async def respond(_: ChatRequest) -> ChatResult:
        sent.append(time.monotonic())
        if len(sent) == 4:
            raise ErrorResponse("slow down", kind="http_429", status=429, retry_after=5.0)
        return answer()

    async def scenario() -> float:
        limit = LimitHandler(Fake(respond), LimitConfig())
        for _ in range(3):
            await limit.handle(request())
        with pytest.raises(ErrorResponse):
            await limit.handle(request())
        told = time.monotonic()
        await asyncio.gather(*(limit.handle(request()) for _ in range(5)))
        return max(sent[4:]) - told

    assert asyncio.run(scenario()) < 1.0


def test_the_adaptive_limit_grows_while_answers_come_back_and_stays_under_the_ceiling() -> None:
    """64 callers against an endpoint that answers everything: the limit rises from 20, never past the ceiling."""

    async def respond(_: ChatRequest) -> ChatResult:
        await asyncio.sleep(0.005)
        return answer()

    async def scenario() -> tuple[int, int]:
        limit = LimitHandler(Fake(respond), LimitConfig(max_concurrent=48))
        peak = 0

        async def one() -> None:
            nonlocal peak
            await limit.handle(request())
            peak = max(peak, limit.in_flight)

        first = limit.limit
        for _ in range(10):
            await asyncio.gather(*(one() for _ in range(64)))
        assert peak <= 48
        return first, limit.limit

    first, last = asyncio.run(scenario())
    assert first == 20
    assert 20 < last <= 48


def test_a_single_flight_follower_waits_no_longer_than_its_own_timeout() -> None:
    """A follower with a 0.2 s timeout behind a 5 s leader goes on alone after 0.2 s instead of waiting 5 s."""
    from resilient_llm.layers.cache import CacheConfig, CacheHandler

    class Memory:
        name = "memory"

        async def get(self, key: str) -> bytes | None:
            return None

        async def set(self, key: str, value: bytes, ttl: float | None) -> None:
            return None

        async def delete(self, key: str) -> None:
            return None

        async def close(self) -> None:
            return None

    async def respond(req: ChatRequest) -> ChatResult:
        await asyncio.sleep(min(req.timeout, 5.0))
        return answer()

    async def scenario() -> float:
        cache = CacheHandler(Fake(respond), Memory(), CacheConfig(), base_url="http://x", neutral_text="", logger=None)
        leader = asyncio.ensure_future(cache.handle(request(temperature=0.0, timeout=5.0)))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        result = await cache.handle(request(temperature=0.0, timeout=0.2))
        assert result.outcome is Outcome.OK
        leader.cancel()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0
