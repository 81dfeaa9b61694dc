"""OpenRouter's failures through the real wire: the fault server's per-model catalogue, an engine, and what each call
ends as (kind, scope, outcome) and costs (requests that reached the server)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resilient_llm import CallFailed, Engine, Outcome
from resilient_llm.errors import FailureKind, Scope
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import call_lines
from tests.test_metrics import free_port, scrape

HEALTHY = "openai/gpt-4o-mini"
HINT_S = 0.3


@pytest.fixture
def openrouter() -> Iterator[FaultServer]:
    """The catalogue server with short waits: 0.3 s hints, a 1 s keep-alive, a quota that resets in an hour."""
    with FaultServer("clean", retry_after_s=HINT_S, keepalive_s=1.0, quota_reset_s=3600.0) as srv:
        yield srv


@pytest.fixture
def engine_on(make_engine: Callable[..., Engine]) -> Callable[..., Engine]:
    def make(server: FaultServer, **overrides: object) -> Engine:
        return make_engine(base_url=server.url, **overrides)

    return make


def requests_for(server: FaultServer, model: str) -> int:
    return int(server.stats()["per_model"].get(model, 0))


def failed(engine: Engine, model: str, **options: object) -> CallFailed:
    with pytest.raises(CallFailed) as info:
        engine.complete(model, user=f"judge this {time.monotonic_ns()}", **options)  # type: ignore[arg-type]
    return info.value


def test_reasoning_model_truncated_by_max_tokens_ends_at_once_naming_the_fix(
    openrouter: FaultServer, engine_on: Callable[..., Engine]
) -> None:
    """A reasoning model that spends max_tokens on reasoning: one request, kind truncated, the fix in the message."""
    engine = engine_on(openrouter)
    error = failed(engine, "test/reasoning-truncates", max_tokens=800)
    assert (error.last.kind, error.last.scope) == (FailureKind.TRUNCATED, Scope.REQUEST)
    assert "max_tokens=800" in str(error.last)
    assert "reasoning" in str(error.last)
    assert requests_for(openrouter, "test/reasoning-truncates") == 1
    neutral = engine.complete("test/reasoning-truncates", user="other", max_tokens=800, raise_caller_errors=False)
    assert neutral.outcome is Outcome.NEUTRAL
    assert [f.kind for f in neutral.failures] == ["truncated"]
    assert requests_for(openrouter, "test/reasoning-truncates") == 2
    answered = engine.complete("test/reasoning-truncates", user="room to think", max_tokens=4000)
    assert answered.outcome is Outcome.OK


@pytest.mark.parametrize(("model", "status"), [("test/no-provider", 503), ("test/no-endpoints", 404)])
def test_no_provider_costs_one_request_per_call(
    openrouter: FaultServer, engine_on: Callable[..., Engine], model: str, status: int
) -> None:
    """No provider for the request (503 or 404, as OpenRouter sends it): never retried, one request per call."""
    engine = engine_on(openrouter)
    for n in range(5):
        result = engine.complete(model, user=f"call {n}", raise_caller_errors=False)
        assert result.outcome is Outcome.NEUTRAL
        assert [(f.kind, f.status) for f in result.failures] == [("no_provider", status)]
    assert requests_for(openrouter, model) == 5


def test_broken_models_do_not_open_the_breaker_for_a_healthy_one(
    openrouter: FaultServer, engine_on: Callable[..., Engine]
) -> None:
    """Truncating and no-provider models in the same phase as a healthy one: the breaker stays closed."""
    engine = engine_on(openrouter, breaker_fail_max=3)

    async def phase() -> list[Outcome]:
        calls = [engine.acomplete(HEALTHY, user=f"h{n}") for n in range(20)]
        calls += [engine.acomplete("test/reasoning-truncates", user=f"t{n}", max_tokens=800) for n in range(10)]
        calls += [engine.acomplete("test/no-provider", user=f"p{n}") for n in range(10)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return [r.outcome if not isinstance(r, BaseException) else Outcome.ERROR for r in results]

    outcomes = asyncio.run(phase())
    assert outcomes[:20] == [Outcome.OK] * 20
    assert engine.metrics()["llm/breaker_trips"] == 0
    assert requests_for(openrouter, "test/reasoning-truncates") == 10
    assert requests_for(openrouter, "test/no-provider") == 10


def test_spent_free_quota_ends_the_call_at_once_with_its_reset(
    openrouter: FaultServer, engine_on: Callable[..., Engine]
) -> None:
    """A free model's spent quota (429, X-RateLimit-Remaining 0, reset in an hour): one request, ends within 2 s."""
    engine = engine_on(openrouter, fallback_routes=("litellm",))  # no neutral result: the error is raised
    started = time.monotonic()
    error = failed(engine, "test/free-quota:free")
    assert time.monotonic() - started < 2.0
    assert (error.last.kind, error.last.scope, error.last.status) == (FailureKind.QUOTA_EXHAUSTED, Scope.MODEL, 429)
    assert error.last.retry_after == pytest.approx(3600.0, abs=5.0)
    assert requests_for(openrouter, "test/free-quota:free") == 1


@pytest.mark.slow
def test_spent_quota_is_remembered_until_its_reset(openrouter: FaultServer, engine_on: Callable[..., Engine]) -> None:
    """Once a model's quota is known spent, later calls end without a request until the reset; others unaffected."""
    engine = engine_on(openrouter, deadline=3.0)
    for n in range(5):
        result = engine.complete("test/free-quota:free", user=f"q{n}", raise_caller_errors=False)
        assert result.outcome is not Outcome.OK
    assert requests_for(openrouter, "test/free-quota:free") == 1
    assert engine.complete(HEALTHY, user="others go on").outcome is Outcome.OK


def test_free_quota_answers_again_after_its_reset(engine_on: Callable[..., Engine]) -> None:
    """After the reset time the free model answers again."""
    with FaultServer("clean", quota_reset_s=0.8) as srv:
        engine = engine_on(srv, retry_after_max=0.1)  # a reset further than 0.1 s ends the call at once
        assert engine.complete("test/free-quota:free", user="before", raise_caller_errors=False).outcome is not (
            Outcome.OK
        )
        time.sleep(1.0)
        assert engine.complete("test/free-quota:free", user="after").outcome is Outcome.OK


@pytest.mark.parametrize("model", ["test/hint-in-body", "test/hint-in-raw", "test/error-in-choice"])
def test_a_hint_only_in_the_body_is_obeyed_before_the_retry(
    openrouter: FaultServer, engine_on: Callable[..., Engine], model: str
) -> None:
    """429 hints in error.metadata, in the provider's raw body, or in a 200's choices[0].error: 0 retries before it."""
    engine = engine_on(openrouter)

    async def calls() -> list[Outcome]:
        results = await asyncio.gather(*(engine.acomplete(model, user=f"c{n}") for n in range(10)))
        return [r.outcome for r in results]

    started = time.monotonic()
    assert asyncio.run(calls()) == [Outcome.OK] * 10
    assert time.monotonic() - started >= HINT_S
    stats = openrouter.stats()
    assert stats["retry_after_violations"] == 0
    assert requests_for(openrouter, model) == 20  # each call: the 429, then the answer after the hint


@pytest.mark.slow  # LiteLLM's first import
def test_moderation_tries_the_fallback_provider(
    openrouter: FaultServer, engine_on: Callable[..., Engine], log_path: Path
) -> None:
    """A moderation 403: one request to the primary, then the fallback provider answers."""
    with FaultServer("clean") as other:
        engine = engine_on(
            openrouter, fallback_model=HEALTHY, fallback_base_url=other.url, fallback_api_key="sk-other-provider"
        )
        result = engine.complete("test/moderated", user="a text someone finds offensive")
        assert result.outcome is Outcome.FALLBACK
        assert [f.kind for f in result.failures] == ["moderation"]
        assert requests_for(openrouter, "test/moderated") == 1
        assert other.stats()["requests"] == 1


def test_moderation_without_a_fallback_is_flagged_and_counted_apart(
    openrouter: FaultServer, engine_on: Callable[..., Engine], log_path: Path
) -> None:
    """No other provider: the call ends flagged with the flagged text, counted apart from neutral calls."""
    port = free_port()
    engine = engine_on(openrouter, flagged_text='{"score": 0, "flagged": true}', metrics_port=port)
    result = engine.complete("test/moderated", user="a text someone finds offensive")
    assert (result.outcome, result.text) == (Outcome.FLAGGED, '{"score": 0, "flagged": true}')
    assert requests_for(openrouter, "test/moderated") == 1
    neutral = engine.complete("test/no-provider", user="x", raise_caller_errors=False)
    assert neutral.outcome is Outcome.NEUTRAL
    snapshot = engine.metrics()
    assert (snapshot["llm/calls_flagged"], snapshot["llm/calls_neutral"]) == (1, 1)
    page = scrape(port)
    outcomes = {s.labels["outcome"]: s.value for s in page["resilient_llm_calls"] if s.name.endswith("_total")}
    assert outcomes == {"flagged": 1.0, "neutral": 1.0}
    (line,) = [c for c in call_lines(log_path) if c["model"] == "test/moderated"]
    assert line["outcome"] == "flagged"


def test_keepalive_whitespace_before_the_json_is_an_answer(
    openrouter: FaultServer, engine_on: Callable[..., Engine]
) -> None:
    """200 at once, whitespace for a second, then the JSON: a normal answer, one request."""
    engine = engine_on(openrouter)
    result = engine.complete("test/keepalive", user="slow thinker")
    assert result.outcome is Outcome.OK
    assert result.latency_s >= 1.0
    assert requests_for(openrouter, "test/keepalive") == 1


def test_a_retry_after_of_an_hour_ends_the_call_at_once(
    openrouter: FaultServer, engine_on: Callable[..., Engine]
) -> None:
    """A model's 429 with Retry-After 3600: one request, the call ends now rather than waiting an hour."""
    engine = engine_on(openrouter)
    started = time.monotonic()
    result = engine.complete("test/retry-after-3600", user="later", raise_caller_errors=False)
    assert result.outcome is Outcome.NEUTRAL
    assert time.monotonic() - started < 2.0
    assert requests_for(openrouter, "test/retry-after-3600") == 1


@pytest.mark.slow
def test_a_retry_after_of_an_hour_pauses_only_its_model(
    openrouter: FaultServer, engine_on: Callable[..., Engine]
) -> None:
    """Two Retry-After 3600 answers on one model: another model's 32 calls all answer within 2 s."""
    engine = engine_on(openrouter, deadline=3.0)
    for n in range(2):
        engine.complete("test/retry-after-3600", user=f"r{n}", raise_caller_errors=False)

    async def others() -> list[Outcome]:
        results = await asyncio.gather(*(engine.acomplete(HEALTHY, user=f"o{n}") for n in range(32)))
        return [r.outcome for r in results]

    started = time.monotonic()
    assert asyncio.run(others()) == [Outcome.OK] * 32
    assert time.monotonic() - started < 2.0


@pytest.mark.slow
def test_one_models_provider_outage_leaves_the_breaker_closed_for_others(
    openrouter: FaultServer, engine_on: Callable[..., Engine]
) -> None:
    """A model whose provider is down (JSON 502s, model scope) opens no breaker for a healthy model."""
    engine = engine_on(openrouter, breaker_fail_max=3, num_retries=1, deadline=3.0)

    async def phase() -> tuple[list[Outcome], float]:
        down = [engine.acomplete("test/provider-down", user=f"d{n}", raise_caller_errors=False) for n in range(10)]
        await asyncio.gather(*down)  # its breaker opens; its calls wait out the outage within their deadline
        started = time.monotonic()
        healthy = await asyncio.gather(*(engine.acomplete(HEALTHY, user=f"h{n}") for n in range(20)))
        return [r.outcome for r in healthy], time.monotonic() - started

    outcomes, took = asyncio.run(phase())
    assert outcomes == [Outcome.OK] * 20
    assert engine.breakers.endpoint_trips == 0  # only the broken model's own breaker opened
    assert took < 3.0


@pytest.mark.parametrize(
    "model", ["test/usage-float", "test/usage-huge", "test/usage-negative", "test/usage-nonfinite"]
)
def test_odd_usage_never_costs_the_answer_nor_the_cache_nor_the_metrics(
    openrouter: FaultServer, engine_on: Callable[..., Engine], tmp_path: Path, model: str
) -> None:
    """Float, huge, negative, NaN/Infinity usage: the answer returns, a repeat is a cache hit, every figure finite."""
    port = free_port()
    engine = engine_on(openrouter, cache_mode="read-write", cache_dir=str(tmp_path / "cache"), metrics_port=port)
    first = engine.complete(model, user="count me", temperature=0.0)
    assert first.outcome is Outcome.OK
    for count in (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens):
        assert count is None or type(count) is int
    again = engine.complete(model, user="count me", temperature=0.0)
    assert (again.outcome, again.text) == (Outcome.CACHED, first.text)
    assert requests_for(openrouter, model) == 1
    assert all(math.isfinite(value) for value in engine.metrics().values())
    page = scrape(port)
    assert all(math.isfinite(sample.value) for samples in page.values() for sample in samples)
    if model == "test/usage-float":
        assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (12, 3)
    else:
        assert first.usage_dropped


def test_answers_say_which_provider_served_them(openrouter: FaultServer, engine_on: Callable[..., Engine]) -> None:
    """The provider OpenRouter routed to (its response's provider field) is on the result."""
    assert engine_on(openrouter).complete(HEALTHY, user="who").provider == "OpenAI"
