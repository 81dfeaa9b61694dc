"""The breaker layer on a fake clock: per-model isolation, the endpoint's breaker, trials and their timeout, waiting."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from resilient_llm.errors import (
    BreakerOpen,
    ConnectionFailed,
    ErrorResponse,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    Scope,
)
from resilient_llm.layers.breaker import BreakerConfig, BreakerHandler
from resilient_llm.policy import breaker as policy
from resilient_llm.testing.clock import FakeClock
from resilient_llm.types import ChatRequest, ChatResult, Outcome

T = TypeVar("T")
HEALTHY, SICK = "healthy/model", "sick/model"
CONFIG = BreakerConfig(fail_max=3, reset_timeout=1.0, reset_timeout_max=30.0, outage_wait=120.0)


class Log:
    """Keeps every event the layer logs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    info = warning

    def changes(self, model: str | None) -> list[tuple[str, str]]:
        return [
            (e["from_state"], e["to_state"])
            for e in self.events
            if e["event"] == "breaker_state_change" and e["model"] == model
        ]


class Endpoint:
    """A fake endpoint on the fake clock: per model, what the next attempts meet."""

    def __init__(self, clock: FakeClock, latency: float = 0.5) -> None:
        self.clock = clock
        self.latency = latency
        self.failing: dict[str, Callable[[], ProviderError] | None] = collections.defaultdict(lambda: None)
        self.hang: set[str] = set()  # models whose next attempt hangs until cancelled
        self.sent: list[tuple[float, str, bool]] = []  # (when, model, trial)

    async def handle(self, request: ChatRequest) -> ChatResult:
        self.sent.append((self.clock.now(), request.model, request.trial))
        if request.model in self.hang:
            self.hang.discard(request.model)
            await self.clock.sleep(10_000)
        await self.clock.sleep(self.latency)
        failure = self.failing[request.model]
        if failure is not None:
            raise failure()
        return ChatResult("A", Outcome.OK, request.model)

    def sent_for(self, model: str, since: float = 0.0) -> int:
        return sum(1 for t, m, _ in self.sent if m == model and t >= since)


def reset() -> ProviderError:
    return ConnectionFailed("reset", kind="connection_reset")


def http_503() -> ProviderError:
    return ErrorResponse("down", kind="http_503", status=503)


def request(model: str, timeout: float = 60.0) -> ChatRequest:
    return ChatRequest(model, ({"role": "user", "content": "q"},), timeout=timeout)


def run(scenario: Callable[[FakeClock], Coroutine[Any, Any, T]]) -> T:
    clock = FakeClock()
    return asyncio.run(clock.run(scenario(clock)))


def layer(clock: FakeClock, endpoint: Endpoint, config: BreakerConfig = CONFIG) -> tuple[BreakerHandler, Log]:
    log = Log()
    return BreakerHandler(endpoint, config, route="openrouter", logger=log, clock=clock), log


async def outcome(breaker: BreakerHandler, model: str) -> str:
    try:
        await breaker.handle(request(model))
    except ProviderError as exc:
        return exc.kind
    return "ok"


def test_a_models_outage_holds_only_that_models_calls() -> None:
    """A model answering 503s opens its own breaker; another model's calls go out at once, the endpoint stays closed."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock)
        breaker, log = layer(clock, endpoint)
        endpoint.failing[SICK] = http_503
        assert [await outcome(breaker, SICK) for _ in range(3)] == ["http_503"] * 3
        assert not breaker.is_closed(SICK)
        assert breaker.is_closed(HEALTHY)
        assert breaker.opened(SICK).is_set()
        assert not breaker.opened(HEALTHY).is_set()
        started = clock.now()
        assert await outcome(breaker, HEALTHY) == "ok"
        assert clock.now() - started == pytest.approx(endpoint.latency)  # not held back at all
        assert log.changes(None) == []  # the endpoint's breaker never moved
        assert log.changes(SICK) == [("closed", "open")]
        assert breaker.snapshot().models == {SICK: policy.State.OPEN}

    run(scenario)


def test_timeouts_of_one_model_do_not_open_the_endpoint_while_others_answer() -> None:
    """A model whose provider hangs (timeouts: endpoint scope) trips its own breaker; the healthy model's answers in
    between keep the endpoint's breaker closed."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock)
        breaker, log = layer(clock, endpoint)
        endpoint.failing[SICK] = lambda: ProviderTimeout("slow", kind="read_timeout")
        for _ in range(3):
            assert await outcome(breaker, SICK) == "read_timeout"
            assert await outcome(breaker, HEALTHY) == "ok"
        assert log.changes(None) == []
        assert log.changes(SICK) == [("closed", "open")]
        assert breaker.is_closed(HEALTHY)

    run(scenario)


def test_request_scope_failures_and_backpressure_never_count() -> None:
    """Truncated answers, moderation, 429s and 402s, ten of each in a row, leave every breaker closed."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock)
        breaker, log = layer(clock, endpoint)
        failures: list[Callable[[], ProviderError]] = [
            lambda: MalformedResponse("truncated", kind="truncated", scope=Scope.REQUEST),
            lambda: ErrorResponse("flagged", kind="moderation", status=403, scope=Scope.REQUEST),
            lambda: ErrorResponse("slow down", kind="http_429", status=429, scope=Scope.MODEL),
            lambda: ErrorResponse("budget", kind="http_402", status=402),
        ]
        for failure in failures:
            endpoint.failing[SICK] = failure
            for _ in range(10):
                await outcome(breaker, SICK)
        assert breaker.state == "closed"
        assert log.changes(None) == log.changes(SICK) == []

    run(scenario)


def test_an_endpoint_outage_holds_every_model_and_one_trial_brings_all_back() -> None:
    """Resets across models open the endpoint's breaker; calls of both models wait; the trial that succeeds closes
    it, and the model whose own breaker the resets opened too tries again at once instead of a probe period later."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock)
        breaker, log = layer(clock, endpoint)
        endpoint.failing[SICK] = endpoint.failing[HEALTHY] = reset
        assert [await outcome(breaker, m) for m in (SICK, SICK, SICK, HEALTHY)] == ["connection_reset"] * 4
        assert log.changes(SICK) == [("closed", "open")]  # its own three
        assert log.changes(None) == [("closed", "open")]  # four in a row, across two models
        assert breaker.opened(HEALTHY).is_set()  # the endpoint holds every model
        calls = [asyncio.ensure_future(outcome(breaker, m)) for m in (HEALTHY, SICK) * 20]
        await clock.sleep(5.0)
        during = len(endpoint.sent)
        endpoint.failing[SICK] = endpoint.failing[HEALTHY] = None
        recovered_at = clock.now()
        assert await asyncio.gather(*calls) == ["ok"] * 40
        assert during <= 4 + 5  # one trial a second while down
        assert clock.now() - recovered_at <= 1.1 + endpoint.latency * 3  # due, the trial, then at once the rest
        assert breaker.state == "closed"
        assert log.changes(None)[-1] == ("half-open", "closed")
        assert log.changes(SICK)[-1] == ("half-open", "closed")

    run(scenario)


def test_a_burst_of_timeouts_from_one_model_leaves_the_endpoint_closed() -> None:
    """Ten attempts of one hanging model time out together (nothing answered in between): its breaker opens, the
    endpoint's does not (its streak must span two models), and another model's next call goes out at once."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock)
        breaker, log = layer(clock, endpoint)
        endpoint.failing[SICK] = lambda: ProviderTimeout("slow", kind="read_timeout")
        assert await asyncio.gather(*(outcome(breaker, SICK) for _ in range(10))) == ["read_timeout"] * 10
        assert log.changes(None) == []
        assert log.changes(SICK) == [("closed", "open")]
        assert await outcome(breaker, HEALTHY) == "ok"

    run(scenario)


def test_a_hung_trial_times_out_and_the_next_one_brings_the_waiters_back() -> None:
    """The trial hangs: after a few times the model's recent latency (at least 2 s) it counts as failed, the next
    trial a probe period later succeeds, and every one of 200 waiting calls gets a real answer well within 15 s."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock)
        breaker, log = layer(clock, endpoint)
        assert await outcome(breaker, SICK) == "ok"  # a recent answer: 0.5 s
        endpoint.failing[SICK] = http_503
        for _ in range(3):
            await outcome(breaker, SICK)
        calls = [asyncio.ensure_future(outcome(breaker, SICK)) for _ in range(200)]
        await clock.sleep(0.1)
        endpoint.failing[SICK] = None
        endpoint.hang.add(SICK)  # the endpoint is back, but the first trial hangs
        recovered_at = clock.now()
        assert await asyncio.gather(*calls) == ["ok"] * 200
        assert clock.now() - recovered_at < 1.1 + 2.0 + 0.5 + 1.1 + 1.0  # due, hung 2 s (+ grace), due again
        trials = [t for t, m, trial in endpoint.sent if trial]
        assert len(trials) == 2
        assert log.changes(SICK)[1:] == [
            ("open", "half-open"),
            ("half-open", "open"),
            ("open", "half-open"),
            ("half-open", "closed"),
        ]

    run(scenario)


def test_waiting_calls_sleep_until_notified() -> None:
    """200 calls behind a trial that hangs 5 s: they do not wake up, or touch the endpoint, until it ends."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock, latency=5.0)
        breaker, _ = layer(clock, endpoint)
        wakeups = 0
        real_wait = clock.wait

        async def counted(event: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109
            nonlocal wakeups
            wakeups += 1
            return await real_wait(event, timeout)

        clock.wait = counted  # type: ignore[method-assign]
        endpoint.failing[SICK] = http_503
        for _ in range(3):
            await outcome(breaker, SICK)
        calls = [asyncio.ensure_future(outcome(breaker, SICK)) for _ in range(200)]
        endpoint.failing[SICK] = None
        assert await asyncio.gather(*calls) == ["ok"] * 200
        assert wakeups <= 3 * 200 + 10  # a wait until the trial is due, one until its outcome, a spare

    run(scenario)


def test_the_outage_budget_ends_a_call_with_breaker_open_and_counts_the_wait() -> None:
    """With a 10 s outage budget and a model that stays down, a call ends with BreakerOpen after 10 s, and the time
    it waited is on its record."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock)
        breaker, log = layer(clock, endpoint, BreakerConfig(fail_max=3, outage_wait=10.0))
        endpoint.failing[SICK] = http_503
        for _ in range(3):
            await outcome(breaker, SICK)
        waiting = request(SICK)
        started = clock.now()
        with pytest.raises(BreakerOpen):
            await breaker.handle(waiting)
        assert clock.now() - started == pytest.approx(10.0, abs=0.6)
        assert waiting.record.waited_s == pytest.approx(10.0 - 0.5 * len(endpoint.sent[4:]), abs=0.6)
        assert [e["phase"] for e in log.events if e["event"] == "outage"] == ["started"]

    run(scenario)


def test_a_cancelled_trial_hands_the_trial_to_the_next_caller() -> None:
    """Cancelling the call that holds the trial says nothing about the model: the next waiter sends its own trial."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock, latency=3.0)
        breaker, log = layer(clock, endpoint)
        endpoint.failing[SICK] = http_503
        for _ in range(3):
            await outcome(breaker, SICK)
        endpoint.failing[SICK] = None
        first = asyncio.ensure_future(outcome(breaker, SICK))
        await clock.sleep(1.5)  # its trial is out
        second = asyncio.ensure_future(outcome(breaker, SICK))
        await clock.sleep(0.5)
        first.cancel()
        assert await second == "ok"
        assert [trial for _, _, trial in endpoint.sent[3:]] == [True, True]
        assert ("half-open", "open") not in log.changes(SICK)

    run(scenario)


def test_may_send_lets_a_trial_through_and_holds_other_attempts_while_open() -> None:
    """The limit layer's question: an attempt marked as the trial goes; another attempt of an open model waits."""

    async def scenario(clock: FakeClock) -> None:
        endpoint = Endpoint(clock)
        breaker, _ = layer(clock, endpoint)
        endpoint.failing[SICK] = http_503
        for _ in range(3):
            await outcome(breaker, SICK)
        assert not breaker.may_send(request(SICK))
        assert breaker.may_send(ChatRequest(SICK, (), trial=True))
        assert breaker.may_send(request(HEALTHY))

    run(scenario)
