"""Circuit breaker and fallback chain against real local servers; the judge's neutral score."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from resilient_llm import Engine, Outcome
from resilient_llm.errors import BreakerOpen, ConnectionFailed, ErrorResponse, MalformedResponse, ProviderTimeout, Scope
from resilient_llm.policy.breaker import Verdict, verdict
from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.testing.redis_server import RedisServer
from tests.conftest import MODEL, read_log

BREAKER = {"breaker_fail_max": 3, "breaker_reset_timeout": 0.5, "breaker_outage_wait": 0.0}  # fail fast


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, Verdict.HEALTHY),
        (ErrorResponse("bad key", kind="http_401", status=401), Verdict.HEALTHY),
        (ErrorResponse("bad request", kind="http_400", status=400), Verdict.HEALTHY),
        (MalformedResponse("truncated", kind="truncated", scope=Scope.REQUEST), Verdict.HEALTHY),
        (ErrorResponse("slow down", kind="http_429", status=429), Verdict.SILENT),
        (ErrorResponse("quota", kind="http_429", status=429, scope=Scope.MODEL), Verdict.SILENT),
        (ErrorResponse("budget", kind="http_402", status=402), Verdict.SILENT),
        (asyncio.CancelledError(), Verdict.SILENT),
        (BreakerOpen("open", kind="breaker_open"), Verdict.SILENT),
        (ProviderTimeout("queued", kind="queue_timeout"), Verdict.SILENT),
        (ErrorResponse("down", kind="http_503", status=503), Verdict.MODEL_FAILED),
        (MalformedResponse("no choices", kind="no_choices"), Verdict.MODEL_FAILED),
        (ConnectionFailed("reset", kind="connection_reset"), Verdict.ENDPOINT_FAILED),
        (ProviderTimeout("slow", kind="read_timeout"), Verdict.ENDPOINT_FAILED),
        (KeyError("our bug"), Verdict.SILENT),
    ],
)
def test_what_counts_against_the_model_and_the_endpoint(error: BaseException | None, expected: Verdict) -> None:
    """A failure counts by its scope: request-scope ones are answers; cancellations, rate limits, quota and our own
    refusals say nothing; a model's failures count for it, unreachable endpoints for the endpoint too."""
    assert verdict(error) is expected


def breaker_events(log_path: Path) -> list[tuple[str, str]]:
    return [(e["from_state"], e["to_state"]) for e in read_log(log_path) if e["event"] == "breaker_state_change"]


@pytest.mark.slow
def test_outage_opens_fails_fast_probes_once_per_period_and_recovers(
    server: FaultServer, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """With RESILIENT_LLM_OUTAGE_WAIT=0: opens in the first wave, fails fast, one probe per period; recovery closes."""
    engine = make_engine(**BREAKER, neutral_text="N")
    server.down = True
    first = engine.complete(MODEL, user="first")
    assert first.outcome is Outcome.NEUTRAL
    assert [f.kind for f in first.failures] == ["http_503"] * 3 + ["breaker_open"]
    assert engine.breaker_state == "open"
    requests = server.stats()["requests"]
    fast = [engine.complete(MODEL, user=f"fast {i}") for i in range(20)]
    assert {r.outcome for r in fast} == {Outcome.NEUTRAL}
    assert server.stats()["requests"] == requests  # nothing reached the dead endpoint
    time.sleep(0.7)  # the first trial is due 0.5 s (+ up to 10% jitter) after the trip
    probed = [engine.complete(MODEL, user=f"probe {i}") for i in range(5)]
    assert {r.outcome for r in probed} == {Outcome.NEUTRAL}
    assert server.stats()["requests"] == requests + 1  # one trial, which failed
    server.down = False
    time.sleep(1.3)  # the next trial is due a period (0.5 s, the outage being short) after the failed one
    recovered = [engine.complete(MODEL, user=f"back {i}") for i in range(5)]
    assert {r.outcome for r in recovered} == {Outcome.OK}
    assert engine.breaker_state == "closed"
    assert breaker_events(log_path) == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]


@pytest.mark.slow
def test_half_open_lets_one_trial_through_fifty_callers(make_engine: Callable[..., Engine]) -> None:
    """After the reset timeout, of 50 concurrent callers exactly one reaches the endpoint."""
    with FaultServer("clean", latency_s=0.3) as slow:
        engine = make_engine(base_url=slow.url, **BREAKER)
        slow.down = True
        engine.complete(MODEL, user="trip")
        assert engine.breaker_state == "open"
        slow.down = False
        time.sleep(0.7)
        slow.reset_stats()

        async def wave() -> list[Outcome]:
            results = await asyncio.gather(*(engine.acomplete(MODEL, user=f"c{i}") for i in range(50)))
            return [r.outcome for r in results]

        outcomes = asyncio.run(wave())
        assert slow.stats()["requests"] == 1
    assert outcomes.count(Outcome.OK) == 1
    assert outcomes.count(Outcome.NEUTRAL) == 49
    assert engine.breaker_state == "closed"


@pytest.mark.slow
def test_flaky_endpoint_does_not_trip_the_breaker(make_engine: Callable[..., Engine]) -> None:
    """~30% mixed transient faults over 600 calls: zero trips at the default threshold."""
    with FaultServer("flaky", seed=11, retry_after_s=0.05, hang_s=4.0) as flaky:
        engine = make_engine(base_url=flaky.url, timeout=1.5)  # a hang times out; a busy machine's answer does not

        async def run() -> list[Outcome]:
            gate = asyncio.Semaphore(32)

            async def one(i: int) -> Outcome:
                async with gate:
                    return (await engine.acomplete(MODEL, user=f"flaky {i}")).outcome

            return list(await asyncio.gather(*(one(i) for i in range(600))))

        outcomes = asyncio.run(run())
    assert engine.breaker_trips == 0
    assert outcomes.count(Outcome.OK) >= 598


def test_caller_mistakes_and_cancellations_never_trip(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """Five 401s and five cancelled calls in a row leave a fail_max=3 breaker closed."""
    engine = make_engine(**BREAKER, timeout=30.0)
    server.script(*["http_401"] * 5)
    for i in range(5):
        assert engine.complete(MODEL, user=f"bad {i}", raise_caller_errors=False).outcome is Outcome.NEUTRAL
    server.script(*["hang"] * 5)

    async def cancel_one(i: int) -> None:
        task = asyncio.ensure_future(engine.acomplete(MODEL, user=f"hang {i}"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    for i in range(5):
        asyncio.run(cancel_one(i))
    assert engine.breaker_state == "closed"
    assert engine.complete(MODEL, user="fine").outcome is Outcome.OK


SECOND_PROCESS = """
import json, resilient_llm
result = resilient_llm.complete("openai/gpt-4o-mini", user="from the second process", raise_caller_errors=False)
print(json.dumps({"outcome": result.outcome, "kinds": [f.kind for f in result.failures]}))
"""


def test_two_processes_share_breaker_state_through_redis(
    server: FaultServer, make_engine: Callable[..., Engine], redis_server: RedisServer, tmp_path: Path
) -> None:
    """A breaker tripped in one process makes another process fail fast without touching the endpoint."""
    engine = make_engine(
        breaker_fail_max=3, breaker_reset_timeout=60.0, breaker_redis_url=redis_server.url, breaker_outage_wait=0.0
    )
    server.down = True
    engine.complete(MODEL, user="trip")
    assert engine.breaker_state == "open"
    requests = server.stats()["requests"]
    env = dict(
        os.environ,
        OPENAI_API_KEY="sk-second",
        OPENAI_API_BASE=server.url,
        RESILIENT_LLM_BREAKER_REDIS_URL=redis_server.url,
        RESILIENT_LLM_BREAKER_RESET_TIMEOUT="60",
        RESILIENT_LLM_OUTAGE_WAIT="0",
        RESILIENT_LLM_CACHE="off",
        RESILIENT_LLM_LOG_FILE=str(tmp_path / "second.jsonl"),
    )
    done = subprocess.run([sys.executable, "-c", SECOND_PROCESS], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"outcome": "neutral", "kinds": ["breaker_open"]}
    assert server.stats()["requests"] == requests


def test_redis_down_means_local_breaker_state_logged_once(
    server: FaultServer, make_engine: Callable[..., Engine], redis_server: RedisServer, log_path: Path
) -> None:
    """With its Redis gone the breaker keeps working on local state, with one warning."""
    engine = make_engine(**BREAKER, breaker_redis_url=redis_server.url)
    assert engine.complete(MODEL, user="before").outcome is Outcome.OK
    redis_server.kill()
    assert [engine.complete(MODEL, user=f"during {i}").outcome for i in range(3)] == [Outcome.OK] * 3
    server.down = True
    engine.complete(MODEL, user="trip")
    assert engine.breaker_state == "open"

    def faults() -> int:
        return sum(1 for e in read_log(log_path) if e["event"] == "breaker_storage_fault")

    waited = 0.0
    while faults() == 0 and waited < 3.0:  # the background task meets the dead Redis within a refresh or two
        time.sleep(0.1)
        waited += 0.1
    time.sleep(2.5)  # and keeps meeting it, retrying every 2 s: still one warning
    assert faults() == 1
