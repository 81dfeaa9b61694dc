"""The engine against a real misbehaving server on 127.0.0.1: every fault kind, retries, limit, cancellation."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from resilient_llm import CallFailed, ConfigError, Engine, Outcome
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL, call_lines, read_log

needs_aiohttp = pytest.mark.skipif(importlib.util.find_spec("aiohttp") is None, reason="aiohttp is not installed")

RETRYABLE = {
    "reset": {"connection_reset", "protocol_error"},
    "drop": {"protocol_error", "connection_reset"},
    "protocol_error": {"protocol_error"},
    "truncated_body": {"protocol_error", "connection_reset"},
    "hang": {"read_timeout", "total_timeout"},
    "http_429": {"http_429"},
    "http_408": {"http_408"},
    "http_500": {"http_500"},
    "http_502": {"http_502"},
    "http_503": {"http_503"},
    "budget_402": {"http_402"},
    "error_in_200": {"error_in_body"},
    "bad_json": {"bad_json"},
    "truncated_json": {"bad_json"},
    "empty_choices": {"no_choices"},
    "null_content": {"empty_content"},
    "finish_error": {"finish_error"},
}


@pytest.mark.parametrize("transport", ["httpx", pytest.param("aiohttp", marks=needs_aiohttp)])
@pytest.mark.parametrize("fault", sorted(RETRYABLE))
def test_transient_fault_is_retried_to_a_real_answer(
    fault: str, transport: str, server: FaultServer, make_engine: Callable[..., Engine]
) -> None:
    """One transient fault costs one extra attempt and the caller gets the real answer, behind either transport."""
    engine = make_engine(timeout=0.5, transport=transport)
    server.script(fault)
    result = engine.complete(MODEL, user="q")
    assert result.outcome is Outcome.OK
    assert result.text.startswith('{"score"')
    assert result.attempts == 2
    assert result.failures[0].kind in RETRYABLE[fault]
    assert server.stats()["requests"] == 2


@pytest.mark.parametrize("fault", ["http_400", "http_401", "http_403", "http_404", "http_422"])
def test_caller_mistake_is_not_retried_and_raised_when_asked(
    fault: str, server: FaultServer, make_engine: Callable[..., Engine]
) -> None:
    """400/401/403/404/422 are sent once; a caller who wants errors gets CallFailed with the status."""
    engine = make_engine()
    server.script(fault)
    with pytest.raises(CallFailed) as info:
        engine.complete(MODEL, user="q")
    assert info.value.last.status == int(fault[5:])
    assert len(info.value.failures) == 1
    assert server.stats()["requests"] == 1


def test_caller_mistake_ends_neutral_for_callers_that_must_not_raise(
    server: FaultServer, make_engine: Callable[..., Engine]
) -> None:
    """With raise_caller_errors=False a 401 becomes the neutral text after one request."""
    engine = make_engine(neutral_text="NEUTRAL")
    server.script("http_401")
    result = engine.complete(MODEL, user="q", raise_caller_errors=False)
    assert (result.outcome, result.text, result.attempts) == (Outcome.NEUTRAL, "NEUTRAL", 1)
    assert server.stats()["requests"] == 1


def test_payment_required_is_final_but_in_flight_budget_is_retried(
    server: FaultServer, make_engine: Callable[..., Engine]
) -> None:
    """A plain 402 is not retried; 402 in_flight_budget_exhausted waits and retries."""
    engine = make_engine()
    server.script("http_402")
    assert engine.complete(MODEL, user="a").outcome is Outcome.NEUTRAL
    server.script("budget_402")
    result = engine.complete(MODEL, user="b")
    assert (result.outcome, result.attempts) == (Outcome.OK, 2)
    assert server.stats()["requests"] == 3


def test_retry_after_is_honoured(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """After a 429 with Retry-After the next attempt waits at least that long."""
    engine = make_engine()
    server.script("http_429", "http_429")
    started = time.monotonic()
    result = engine.complete(MODEL, user="q")
    assert result.attempts == 3
    assert all(f.wait_s is not None and f.wait_s >= 0.2 for f in result.failures)
    assert time.monotonic() - started >= 0.4
    assert server.stats()["retry_after_violations"] == 0


def test_retry_after_longer_than_allowed_ends_the_call(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """A Retry-After beyond RESILIENT_LLM_RETRY_AFTER_MAX is not cut short: the call ends neutral."""
    engine = make_engine(retry_after_max=0.1)
    server.script("http_429")
    result = engine.complete(MODEL, user="q")
    assert (result.outcome, result.attempts) == (Outcome.NEUTRAL, 1)
    assert server.stats()["requests"] == 1


def test_retries_are_bounded_by_num_retries(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """Five retries by default (six attempts); a caller's num_retries is honoured."""
    engine = make_engine()
    server.script(*["http_503"] * 10)
    result = engine.complete(MODEL, user="a")
    assert (result.outcome, result.attempts) == (Outcome.NEUTRAL, 6)
    assert server.stats()["requests"] == 6
    result = engine.complete(MODEL, user="b", num_retries=1)
    assert (result.outcome, result.attempts) == (Outcome.NEUTRAL, 2)
    assert server.stats()["requests"] == 8


def test_retries_are_bounded_by_the_deadline(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """When the next wait would cross the deadline the call ends, attempts left or not."""
    engine = make_engine(deadline=0.5, num_retries=50)
    server.script(*["http_429"] * 60)  # 0.2 s Retry-After each
    result = engine.complete(MODEL, user="q")
    assert result.outcome is Outcome.NEUTRAL
    assert 2 <= result.attempts <= 3


@pytest.mark.slow
def test_concurrency_cap_holds_across_threads_and_loops(make_engine: Callable[..., Engine]) -> None:
    """Calls from several threads, each with its own event loop, never exceed the process-wide cap."""
    with FaultServer("clean", latency_s=0.05) as slow:
        engine = make_engine(base_url=slow.url, max_concurrent=4)
        results: list[Outcome] = []

        def worker(offset: int) -> None:
            async def batch() -> None:
                answers = await asyncio.gather(*(engine.acomplete(MODEL, user=f"{offset}-{i}") for i in range(15)))
                results.extend(a.outcome for a in answers)

            asyncio.run(batch())

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = slow.stats()
    assert results == [Outcome.OK] * 60
    assert stats["peak_in_flight"] <= 4
    assert stats["requests"] == 60
    assert engine.in_flight == 0


def test_connections_are_reused(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """Sequential calls from fresh event loops share one keep-alive connection."""
    engine = make_engine()
    for i in range(20):
        assert asyncio.run(engine.acomplete(MODEL, user=str(i))).outcome is Outcome.OK
    assert server.stats()["connections"] == 1


def test_cancellation_frees_the_slot_and_is_logged(
    server: FaultServer, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """Cancelling a hung call releases its concurrency slot at once; the next call goes through."""
    engine = make_engine(max_concurrent=1, timeout=30.0)
    server.script("hang")

    async def cancel_hung_call() -> None:
        task = asyncio.ensure_future(engine.acomplete(MODEL, user="hung"))
        while server.stats()["in_flight"] == 0:  # noqa: ASYNC110  (polling another thread's server)
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_hung_call())
    result = engine.complete(MODEL, user="next")
    assert result.outcome is Outcome.OK
    assert engine.in_flight == 0
    assert [line["outcome"] for line in call_lines(log_path)] == ["cancelled", "ok"]


def test_every_call_logs_one_line_with_attempt_details(
    server: FaultServer, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """One JSON line per call with outcome, attempts, failed attempts, latency, tokens and cost."""
    engine = make_engine()
    server.script("http_502")
    engine.complete(MODEL, user="q")
    lines = read_log(log_path)
    assert lines[0]["event"] == "engine_started"
    assert lines[0]["message"] == "Using direct OpenRouter API calls instead of litellm"
    (call,) = call_lines(log_path)
    assert call["outcome"] == "ok"
    assert call["attempts"] == 2
    assert call["failures"][0]["kind"] == "http_502"
    assert call["failures"][0]["status"] == 502
    assert call["latency_ms"] > 0
    assert call["prompt_tokens"] >= 1
    assert call["cost"] > 0
    assert "q" not in str(call.get("messages", ""))  # no prompt text unless opted in


def test_api_key_never_leaves(server: FaultServer, make_engine: Callable[..., Engine], log_path: Path) -> None:
    """The key is in no log line, exception message or repr, whatever fails."""
    from tests.conftest import API_KEY

    engine = make_engine(neutral_text="")
    server.script("http_401", "reset", "http_500", "error_in_200")
    with pytest.raises(CallFailed) as info:
        engine.complete(MODEL, user="q")
    engine.complete(MODEL, user="r")
    unreachable = make_engine(base_url="http://127.0.0.1:9/api/v1", num_retries=0).complete(MODEL, user="s")
    texts = [log_path.read_text(), str(info.value), repr(info.value.failures), repr(unreachable)]
    texts += [repr(engine.config), str(engine.config.describe())]
    assert not [t for t in texts if API_KEY in t or API_KEY[6:20] in t]


def test_bad_arguments_are_config_errors(make_engine: Callable[..., Engine]) -> None:
    """Missing prompts, both messages and prompts, unroutable models and bad timeouts are caught before sending."""
    engine = make_engine(base_url="https://openrouter.ai/api/v1")
    assert engine.request("gpt-4.1-mini", user="q").model == "openai/gpt-4.1-mini"  # DR Tulu's bare OpenAI names
    with pytest.raises(ConfigError, match=r"anthropic/claude-3\.5-haiku"):
        engine.request("claude-3.5-haiku", user="q")
    with pytest.raises(ConfigError, match="not both"):
        engine.request(MODEL, [{"role": "user", "content": "q"}], user="q")
    with pytest.raises(ConfigError, match="user prompt"):
        engine.request(MODEL)
    with pytest.raises(ConfigError, match="timeout"):
        engine.request(MODEL, user="q", timeout=0)


def test_unreachable_endpoint_is_retried_then_neutral(make_engine: Callable[..., Engine]) -> None:
    """Connection refused is transient: retried, then the neutral result."""
    engine = make_engine(base_url="http://127.0.0.1:9/api/v1", neutral_text="")
    result = engine.complete(MODEL, user="q", raise_caller_errors=False)
    assert (result.outcome, result.attempts, result.text) == (Outcome.NEUTRAL, 6, "")
    assert {f.kind for f in result.failures} == {"connect_error"}


@pytest.mark.slow
def test_rate_limits_do_not_use_up_the_retries(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """Six 429s in a row (more than num_retries) are waited out: the endpoint is alive, just asking for time."""
    engine = make_engine(retry_after_max=1.0)
    server.script(*["http_429"] * 6)
    result = engine.complete(MODEL, user="q", num_retries=2)
    assert (result.outcome, result.attempts) == (Outcome.OK, 7)
    assert all(f.backpressure for f in result.failures)
    assert server.stats()["retry_after_violations"] == 0


def test_a_failed_start_leaves_no_engine_thread(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """When building the stack fails, the engine's loop thread is stopped before the error reaches the caller."""
    from resilient_llm import engine as engine_module
    from tests.conftest import fast_config

    def engine_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "resilient-llm-engine")

    def failing_build(*args: object, **kwargs: object) -> object:
        raise ConfigError("the store cannot be built")

    monkeypatch.setattr(engine_module, "build_stack", failing_build)
    before = engine_threads()
    with pytest.raises(ConfigError, match="cannot be built"):
        Engine(fast_config(server.url))
    assert engine_threads() == before


@pytest.mark.slow
def test_retry_after_zero_does_not_make_a_request_storm(make_engine: Callable[..., Engine]) -> None:
    """A 429 with "Retry-After: 0" over and over: the call backs off (a handful of requests in 2 s, not 100)."""
    with FaultServer("clean", retry_after_s=0.0) as zero:
        engine = make_engine(base_url=zero.url, backoff_base=0.5, backoff_max=8.0, deadline=2.0)
        zero.script(*["http_429"] * 100)
        result = engine.complete(MODEL, user="q")
        requests = zero.stats()["requests"]
    assert result.outcome is Outcome.NEUTRAL
    assert requests <= 10
