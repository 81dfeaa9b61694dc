"""The limit and breaker layers of two "processes" (two layers, each with its own Redis client and process identity)
sharing state through a real redis-server, against fake inner handlers."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from resilient_llm.errors import ConnectionFailed
from resilient_llm.layers.breaker import BreakerConfig, BreakerHandler
from resilient_llm.layers.limit import LimitConfig, LimitHandler
from resilient_llm.stack import make_breaker
from resilient_llm.stores.shared_limit import SharedLimit
from resilient_llm.stores.shared_permits import SharedPermits
from resilient_llm.testing.redis_server import RedisServer
from resilient_llm.types import ChatRequest, ChatResult, Outcome, Usage

MODEL = "openai/gpt-4o-mini"
ENDPOINT = "http://127.0.0.1:1/api/v1\nsk-or-v1-TESTKEY"


class Quiet:
    def warning(self, *args: Any, **fields: Any) -> None: ...

    info = warning


class Fake:
    """An inner handler from a function of the request."""

    def __init__(self, respond: Callable[[ChatRequest], Awaitable[ChatResult]]) -> None:
        self.respond = respond

    async def handle(self, req: ChatRequest) -> ChatResult:
        return await self.respond(req)


def request() -> ChatRequest:
    return ChatRequest(MODEL, ({"role": "user", "content": "q"},), timeout=30.0)


async def answer_after(seconds: float) -> ChatResult:
    await asyncio.sleep(seconds)
    return ChatResult("A", Outcome.OK, MODEL, usage=Usage(completion_tokens=5))


def shared_limit(url: str) -> LimitHandler:
    """An adaptive limit layer sharing its limit through Redis, over an endpoint answering in 20 ms."""
    store = SharedLimit(url, ENDPOINT, Quiet())
    return LimitHandler(Fake(lambda _: answer_after(0.02)), LimitConfig(), shared=SharedPermits(store))


async def busy(handler: LimitHandler, callers: int, rounds: int) -> None:
    """``rounds`` times ``callers`` calls at once: the limit in use, every answer counts."""
    for _ in range(rounds):
        await asyncio.gather(*(handler.handle(request()) for _ in range(callers)))


def test_a_cut_by_another_process_ends_slow_start_here_too(redis_server: RedisServer) -> None:
    """After another process cut the shared limit to 27, answers here no longer add 2 permits each (slow start):
    40 answers leave the shared limit near 27 instead of pushing it towards 100."""

    async def scenario() -> float:
        handler = shared_limit(redis_server.url)
        other = SharedLimit(redis_server.url, ENDPOINT, Quiet())
        other.publish_limit(MODEL, 30.0)
        assert other.cut_limit(MODEL, 27.0, other.reserve(MODEL, 1, 30).generation, initial=20) == (27.0, True)
        await busy(handler, 20, 2)
        await handler.aclose()
        value = other.shared_limit(MODEL)
        other.close()
        assert value is not None
        return value

    assert asyncio.run(scenario()) <= 30.0


def test_growth_in_fractions_of_a_permit_reaches_the_shared_limit(redis_server: RedisServer) -> None:
    """Growth of 0.25 permit per answer, published only when it crosses a whole permit: 40 answers add about 10
    to the shared limit, not only the steps that crossed (2.5) while adopting the shared value drops the rest."""

    async def scenario() -> float:
        handler = shared_limit(redis_server.url)
        handler._policy = dataclasses.replace(handler._policy, slow_start_step=0.25)
        await busy(handler, 20, 2)
        await handler.aclose()
        reader = SharedLimit(redis_server.url, ENDPOINT, Quiet())
        value = reader.shared_limit(MODEL)
        reader.close()
        assert value is not None
        return value

    assert asyncio.run(scenario()) >= 26.0  # 20 + 40 x 0.25, less answers that found the limit under half used


class Endpoint:
    """What the fake endpoint does now, and when each process sent to it."""

    def __init__(self) -> None:
        self.mode = "fail"  # "fail", "hang" (until ``release``, then fail) or "ok"
        self.release = asyncio.Event()
        self.sent: dict[str, list[float]] = {"a": [], "b": []}
        self.hanging = asyncio.Event()  # an attempt is held in "hang"

    def handler(self, name: str) -> Fake:
        async def respond(_: ChatRequest) -> ChatResult:
            self.sent[name].append(time.monotonic())
            if self.mode == "hang":
                self.hanging.set()
                await self.release.wait()
                raise ConnectionFailed("reset", kind="connection_reset")
            if self.mode == "fail":
                raise ConnectionFailed("reset", kind="connection_reset")
            return await answer_after(0.0)

        return Fake(respond)


async def send(handler: BreakerHandler) -> ChatResult:
    """One call (the breaker marks its trial on the request it hands down)."""
    return await handler.handle(request())


def breaker(config: BreakerConfig, endpoint: Endpoint, name: str) -> BreakerHandler:
    """A breaker over a limit layer that holds attempts back unless the breaker lets them out, as the stack does."""
    made: list[BreakerHandler] = []
    limit = LimitHandler(endpoint.handler(name), LimitConfig(mode="fixed"), may_send=lambda r: made[0].may_send(r))
    made.append(make_breaker(config, limit, "openrouter", "http://endpoint", Quiet(), outage_wait=10.0))
    return made[0]


def shared_breaker_config(url: str, reset_timeout: float) -> BreakerConfig:
    return BreakerConfig(fail_max=1, reset_timeout=reset_timeout, reset_timeout_max=30.0, redis_url=url)


def test_a_process_that_saw_the_breaker_open_sends_again_once_another_closed_it(redis_server: RedisServer) -> None:
    """B trips the shared breaker, A's trial closes it: B's next call goes out at once instead of being held back
    by B's own memory of the breaker open (which spun without end)."""
    endpoint = Endpoint()

    async def scenario() -> None:
        config = shared_breaker_config(redis_server.url, reset_timeout=0.2)
        a, b = breaker(config, endpoint, "a"), breaker(config, endpoint, "b")
        with pytest.raises(ConnectionFailed):
            await send(b)
        assert b.state == "open"
        endpoint.mode = "ok"
        await asyncio.sleep(0.3)  # the trial is due
        assert (await asyncio.wait_for(send(a), 5.0)).outcome is Outcome.OK
        assert (await asyncio.wait_for(send(b), 5.0)).outcome is Outcome.OK
        assert b.state == "closed"

    asyncio.run(scenario())


@pytest.mark.slow
def test_one_trial_across_processes_and_the_next_a_period_later(redis_server: RedisServer) -> None:
    """While A's trial is out, B waits for its outcome instead of sending a trial of its own; after it fails, the
    next trial (whoever sends it) comes a period (at least reset_timeout, 1 s) later, not at once."""
    endpoint = Endpoint()

    async def scenario() -> None:
        config = shared_breaker_config(redis_server.url, reset_timeout=1.0)
        a, b = breaker(config, endpoint, "a"), breaker(config, endpoint, "b")
        with pytest.raises(ConnectionFailed):
            await send(a)  # trips the shared breaker
        endpoint.mode = "hang"
        await asyncio.sleep(1.25)  # the first trial is due (1 s, up to 10 % jitter)
        calls = [asyncio.ensure_future(send(a))]
        await asyncio.wait_for(endpoint.hanging.wait(), 5.0)  # A's trial is out
        calls.append(asyncio.ensure_future(send(b)))
        await asyncio.sleep(0.3)
        assert endpoint.sent["b"] == []  # B waits for A's trial
        endpoint.release.set()  # A's trial fails
        failed_at = time.monotonic()
        endpoint.mode = "ok"
        results = await asyncio.wait_for(asyncio.gather(*calls), 10.0)
        assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK]
        next_trial = min(t for t in endpoint.sent["a"] + endpoint.sent["b"] if t > failed_at)
        assert next_trial - failed_at >= 0.9

    asyncio.run(scenario())
