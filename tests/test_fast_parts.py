"""The lean engine's parts: the loop and JSON it runs on (with or without the fast extra), the opt-in aiohttp
transport (against every fault: in tests/test_engine.py), the lighter hop, and cache hits answered in the caller's
thread."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resilient_llm import CallFailed, Config, ConfigError, Engine, Outcome, RuntimeConfig, runtime
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL, call_lines, read_log
from tests.test_engine import needs_aiohttp


@pytest.mark.parametrize(
    "value",
    [
        {"model": "m", "messages": [{"role": "user", "content": "héllo \u2603 \U0001f600"}], "temperature": 0.25},
        {"logit_bias": {123: 5, 7: -1.5}, "n": None, "flag": True, "nested": [[1, 2], {"a": []}]},
        {"big": 2**70, "tuple": (1, "two")},
    ],
)
def test_dumps_writes_what_the_standard_library_reads_back(value: dict[str, Any]) -> None:
    """Request bodies and cache entries read back as the standard library wrote them, orjson or not."""
    expected = json.loads(json.dumps(value, ensure_ascii=False))
    assert json.loads(runtime.dumps(value)) == expected
    assert runtime.loads(runtime.dumps(value)) == expected


def test_loads_reads_whatever_the_standard_library_reads() -> None:
    """What orjson refuses (a NaN literal, a lone surrogate) is still read as json reads it; an integer beyond 64 bits
    is read as a number (orjson: a float)."""
    assert math.isnan(runtime.loads(b'{"a": NaN}')["a"])
    assert runtime.loads(b'{"a": "\\ud800"}')["a"] == "\ud800"
    assert runtime.loads(b'{"a": 123456789012345678901234567890}')["a"] == pytest.approx(1.2345678901234568e29)


def test_loads_refuses_what_is_not_json() -> None:
    """A body that is not JSON raises ValueError, as json.loads does (the protocol turns it into bad_json)."""
    with pytest.raises(ValueError, match="Expecting value"):
        runtime.loads(b"<html>oops</html>")


def test_log_line_renders_unknown_values_through_the_fallback() -> None:
    """structlog's default handler still renders values JSON has no type for."""
    line = json.loads(runtime.log_line({"event": "x", "odd": {1, 2}, "n": 1}, default=repr))
    assert line == {"event": "x", "odd": repr({1, 2}), "n": 1}


def test_log_lines_are_the_same_bytes_with_or_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log line is compact UTF-8 JSON whichever library renders it: greps and parsers see one format."""
    event = {"event": "llm_call", "outcome": "ok", "latency_ms": 21.5, "failures": [], "model": "modèle", "n": None}
    rendered = runtime.log_line(event, default=repr, sort_keys=False)
    monkeypatch.setattr(runtime, "orjson", None)
    assert runtime.log_line(event, default=repr, sort_keys=False) == rendered
    assert rendered.startswith('{"event":"llm_call","outcome":"ok"')


def test_the_loop_choice_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """RESILIENT_LLM_LOOP accepts auto, asyncio, uvloop; uvloop without the package is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="RESILIENT_LLM_LOOP"):
        Config.from_env({"OPENAI_API_KEY": "k", "RESILIENT_LLM_LOOP": "trio"})
    monkeypatch.setattr(runtime, "uvloop", None)
    with pytest.raises(ConfigError, match=r"RESILIENT_LLM_LOOP: .*uvloop is not installed"):
        Config.from_env({"OPENAI_API_KEY": "k", "RESILIENT_LLM_LOOP": "uvloop"})
    loop, kind = runtime.new_loop(RuntimeConfig())
    loop.close()
    assert kind == "asyncio"


def test_the_transport_choice_is_validated() -> None:
    """RESILIENT_LLM_HTTP_TRANSPORT accepts httpx or aiohttp."""
    with pytest.raises(ConfigError, match="RESILIENT_LLM_HTTP_TRANSPORT"):
        Config.from_env({"OPENAI_API_KEY": "k", "RESILIENT_LLM_HTTP_TRANSPORT": "curl"})


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_engine_started_names_the_parts_it_runs_on(
    loop: str, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """engine_started says which loop, JSON library and transport the engine runs on; the engine answers on each."""
    engine = make_engine(runtime_loop=loop)
    assert engine.complete(MODEL, user="q").outcome is Outcome.OK
    started = read_log(log_path)[0]
    expected_loop = "uvloop" if loop == "auto" and runtime.uvloop is not None else "asyncio"
    assert (started["loop"], started["json"], started["transport"]) == (expected_loop, runtime.JSON, "httpx")
    assert type(engine._loop).__module__.startswith(expected_loop)


@needs_aiohttp
def test_aiohttp_transport_keeps_connections_and_statuses(
    server: FaultServer, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """Calls reuse one kept-alive connection; a caller mistake keeps its status; engine_started names aiohttp."""
    engine = make_engine(transport="aiohttp")
    for i in range(10):
        assert engine.complete(MODEL, user=f"q{i}").outcome is Outcome.OK
    assert server.stats()["connections"] == 1
    server.script("http_401")
    with pytest.raises(CallFailed) as info:
        engine.complete(MODEL, user="q")
    assert info.value.last.status == 401
    assert read_log(log_path)[0]["transport"] == "aiohttp"


@pytest.mark.slow
@needs_aiohttp
def test_aiohttp_transport_survives_cancelled_calls(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """A call cancelled mid-exchange ends cancelled, and the pool still answers the next calls."""
    engine = make_engine(transport="aiohttp", max_concurrent=2, limit_mode="fixed")

    async def cancel_one() -> None:
        server.script("hang")
        task = asyncio.ensure_future(engine.acomplete(MODEL, user="slow"))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    for _ in range(3):
        asyncio.run(cancel_one())
    results = [engine.complete(MODEL, user=f"after {i}") for i in range(4)]
    assert all(r.outcome is Outcome.OK for r in results)
    assert engine.in_flight == 0


def test_cache_hit_is_answered_in_the_callers_thread(make_engine: Callable[..., Engine], log_path: Path) -> None:
    """With the engine's loop busy, a disk cache hit still answers (sync and async), logged and counted once each."""
    engine = make_engine(cache_mode="read-write", cache_dir=str(log_path.parent / "cache"))
    first = engine.complete(MODEL, user="cached?", temperature=0)
    assert first.cache == "miss"
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        release.wait(30)

    engine._loop.call_soon_threadsafe(hold)
    assert busy.wait(10)
    answers: list[Any] = []

    def ask() -> None:
        answers.append(engine.complete(MODEL, user="cached?", temperature=0))
        answers.append(asyncio.run(engine.acomplete(MODEL, user="cached?", temperature=0)))

    asker = threading.Thread(target=ask)
    asker.start()
    asker.join(20)
    release.set()
    assert not asker.is_alive(), "a cache hit waited for the engine's loop"
    assert [(a.outcome, a.cache, a.text) for a in answers] == [(Outcome.CACHED, "hit", first.text)] * 2
    assert engine.cache_counters["hit"] == 2
    assert engine.outcomes["cached"] == 2
    lines = call_lines(log_path)
    expected = [("ok", "miss"), ("cached", "hit"), ("cached", "hit")]
    assert [(line["outcome"], line["cache"]) for line in lines] == expected
    assert engine.metrics()["llm/calls"] == 3


def test_acomplete_answers_from_many_loops_and_threads(make_engine: Callable[..., Engine]) -> None:
    """The hop carries answers back to each caller's own loop, from many threads at once."""
    engine = make_engine(http_timeout=30.0)

    def rollout(n: int) -> list[Outcome]:
        async def judge() -> list[Outcome]:
            results = await asyncio.gather(*(engine.acomplete(MODEL, user=f"r{n} q{i}") for i in range(5)))
            return [r.outcome for r in results]

        return asyncio.run(judge())

    outcomes: list[list[Outcome]] = []
    threads = [threading.Thread(target=lambda n=n: outcomes.append(rollout(n))) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == [[Outcome.OK] * 5] * 6


class _EarlyTimers(asyncio.SelectorEventLoop):
    """A loop whose timers fire a few milliseconds early, as uvloop's millisecond clock can."""

    def call_later(self, delay: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        return super().call_later(max(0.0, delay - 0.005), callback, *args, context=context)


def test_the_retry_after_gate_reopens_on_a_loop_whose_timers_fire_early() -> None:
    """Attempts queued behind a Retry-After gate still go out when the gate's timer fires before the gate's time."""
    from resilient_llm.errors import ErrorResponse
    from resilient_llm.layers.limit import LimitConfig, LimitHandler
    from resilient_llm.types import ChatRequest, ChatResult

    calls = 0

    class Inner:
        async def handle(self, request: ChatRequest) -> ChatResult:
            nonlocal calls
            calls += 1
            if calls <= 2:  # a burst: the gate shuts for every attempt
                raise ErrorResponse("slow down", kind="http_429", status=429, retry_after=0.05)
            return ChatResult("A", Outcome.OK, MODEL)

    async def scenario() -> list[str]:
        limit = LimitHandler(Inner(), LimitConfig(mode="fixed", max_concurrent=4))
        request = ChatRequest(MODEL, ({"role": "user", "content": "q"},), timeout=5.0)
        for _ in range(2):
            with pytest.raises(ErrorResponse):
                await limit.handle(request)
        results = await asyncio.wait_for(asyncio.gather(*(limit.handle(request) for _ in range(3))), 3.0)
        return [r.text for r in results]

    loop = _EarlyTimers()
    try:
        assert loop.run_until_complete(scenario()) == ["A"] * 3
    finally:
        loop.close()


def test_httpx_pools_are_split_and_still_reuse_connections(
    server: FaultServer, make_engine: Callable[..., Engine]
) -> None:
    """A 32-connection pool is four httpx pools of 8 (httpcore's cost grows with its pool); calls one at a time
    reuse one connection, 32 at once open at most 32, and every call is answered."""
    engine = make_engine(max_concurrent=32, limit_mode="fixed")
    http = engine._stack.http
    assert sorted(http._sizes.values()) == [8, 8, 8, 8]
    for i in range(5):
        assert engine.complete(MODEL, user=f"one at a time {i}").outcome is Outcome.OK
    assert server.stats()["connections"] == 1

    async def burst() -> list[Outcome]:
        results = await asyncio.gather(*(engine.acomplete(MODEL, user=f"burst {i}") for i in range(96)))
        return [r.outcome for r in results]

    assert asyncio.run(burst()) == [Outcome.OK] * 96
    assert 1 < server.stats()["connections"] <= 32
    assert engine.in_flight == 0
