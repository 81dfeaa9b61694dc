"""Breaker state shared through a real Redis: per model, on Redis's clock, written only when it changes, and never
in the way of a call when Redis is slow."""

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
import redis

from resilient_llm import Engine, Outcome
from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.testing.redis_server import RedisServer
from tests.conftest import MODEL, read_log

OTHER_MODEL = "anthropic/claude-3.5-haiku"

# One process of a fleet, whose wall clock is ``offset`` seconds off (time.time and datetime.now).
# "trip": its calls open the breaker (the endpoint answers 503), then it exits. "wait": 40 calls meet the open breaker;
# after 2 s it brings the endpoint back and reports how the calls ended.
PROCESS = """
import asyncio, datetime, json, sys, time
offset, role, server_url = float(sys.argv[1]), sys.argv[2], sys.argv[3]
real_time = time.time
time.time = lambda: real_time() + offset

class SkewedDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return super().now(tz) + datetime.timedelta(seconds=offset)

datetime.datetime = SkewedDatetime
import httpx, resilient_llm

MODEL = "openai/gpt-4o-mini"
if role == "trip":
    result = resilient_llm.complete(MODEL, user="trips it", raise_caller_errors=False)
    print(json.dumps({"kinds": [f.kind for f in result.failures]}))
else:
    async def main():
        calls = [asyncio.ensure_future(resilient_llm.acomplete(MODEL, user=f"waits {i}")) for i in range(40)]
        await asyncio.sleep(2.0)
        httpx.post(server_url.rsplit("/api/v1", 1)[0] + "/_down", json={"down": False})
        results = await asyncio.gather(*calls)
        print(json.dumps({"outcomes": [r.outcome for r in results]}))
    asyncio.run(main())
"""


def run_process(server: FaultServer, redis_url: str, tmp_path: Path, role: str, offset: float) -> dict[str, list[str]]:
    env = dict(
        os.environ,
        OPENAI_API_KEY="sk-fleet",
        OPENAI_API_BASE=server.url,
        RESILIENT_LLM_BREAKER_REDIS_URL=redis_url,
        RESILIENT_LLM_BREAKER_FAIL_MAX="3",
        RESILIENT_LLM_BREAKER_RESET_TIMEOUT="1",
        RESILIENT_LLM_OUTAGE_WAIT="0" if role == "trip" else "60",
        RESILIENT_LLM_RETRY_BACKOFF_BASE="0.01",
        RESILIENT_LLM_RETRY_BACKOFF_MAX="0.05",
        RESILIENT_LLM_CACHE="off",
        RESILIENT_LLM_LOG_FILE=str(tmp_path / f"{role}.jsonl"),
    )
    argv = [sys.executable, "-c", PROCESS, str(offset), role, server.url]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.parametrize(("tripper_offset", "waiter_offset"), [(300.0, 0.0), (0.0, 300.0), (-300.0, 0.0)])
def test_clocks_300_s_apart_agree_on_when_the_next_trial_is_due(
    server: FaultServer, redis_server: RedisServer, tmp_path: Path, tripper_offset: float, waiter_offset: float
) -> None:
    """One process opens the shared breaker and exits; another, its wall clock 300 s off, waits out the outage: the
    trial comes when due on Redis's clock, and at least 95% of its 40 calls get a real answer after the recovery."""
    server.down = True
    tripped = run_process(server, redis_server.url, tmp_path, "trip", tripper_offset)
    assert tripped["kinds"][-1] == "breaker_open"
    waited = run_process(server, redis_server.url, tmp_path, "wait", waiter_offset)
    assert waited["outcomes"].count("ok") >= 0.95 * 40
    opened_here = [e for e in read_log(tmp_path / "wait.jsonl") if e["event"] == "breaker_state_change"]
    assert opened_here[0]["reason"] == "opened elsewhere"  # it learned of the outage from Redis, not by failing


def commands(client: redis.Redis, *names: str) -> int:
    """How often Redis ran these commands so far."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


WRITES = ("set", "incr", "del", "eval", "evalsha", "expire", "pexpire")


@pytest.mark.slow
def test_calls_that_succeed_write_nothing_and_reads_are_a_few_a_second(
    server: FaultServer, make_engine: Callable[..., Engine], redis_server: RedisServer, tmp_path: Path
) -> None:
    """300 answered calls over about 2 s: no write to Redis at all, and the breaker's reads stay a few a second
    (one round trip per refresh, whatever the number of calls or models)."""
    (tmp_path / "limit").mkdir()
    limit_redis = RedisServer(tmp_path / "limit").start()  # the shared limit's traffic apart from the breaker's
    engine = make_engine(breaker_redis_url=redis_server.url, limit_redis_url=limit_redis.url)
    client = redis.Redis.from_url(redis_server.url)
    assert engine.complete(MODEL, user="warm").outcome is Outcome.OK  # its first call reads the state once
    writes, reads = commands(client, *WRITES), commands(client, "time")
    started = time.monotonic()

    async def calls() -> list[Outcome]:
        out: list[Outcome] = []
        for wave in range(10):
            results = await asyncio.gather(
                *(engine.acomplete(m, user=f"{wave} {i}") for i in range(15) for m in (MODEL, OTHER_MODEL))
            )
            out += [r.outcome for r in results]
            await asyncio.sleep(0.2)
        return out

    try:
        assert asyncio.run(calls()) == [Outcome.OK] * 300
    finally:
        limit_redis.kill()
    elapsed = time.monotonic() - started
    assert commands(client, *WRITES) == writes
    refreshes = commands(client, "time") - reads  # one TIME in each round trip the breaker makes
    assert refreshes / elapsed <= 3.0  # a refresh every 0.5 s, whatever the number of calls (and one per new model)


def test_a_models_open_breaker_is_shared_by_model(
    server: FaultServer, make_engine: Callable[..., Engine], redis_server: RedisServer
) -> None:
    """A model whose breaker another process opened: this process's calls to it fail fast without a request, while
    another model's calls go out as usual."""
    other = make_engine(
        breaker_redis_url=redis_server.url, breaker_fail_max=3, breaker_reset_timeout=30.0, breaker_outage_wait=0.0
    )
    server.down = True
    assert other.complete(MODEL, user="trip").failures[-1].kind == "breaker_open"
    server.down = False
    engine = make_engine(breaker_redis_url=redis_server.url, breaker_reset_timeout=30.0, breaker_outage_wait=0.0)
    requests = server.stats()["requests"]
    result = engine.complete(MODEL, user="held")
    assert (result.outcome, [f.kind for f in result.failures]) == (Outcome.NEUTRAL, ["breaker_open"])
    assert server.stats()["requests"] == requests
    assert engine.complete(OTHER_MODEL, user="goes").outcome is Outcome.OK
    keys = sorted(k.decode().rsplit(":", 2)[-2] for k in redis.Redis.from_url(redis_server.url).keys("*breaker*"))
    assert keys == [MODEL, MODEL]  # outage and due of the model's breaker; the endpoint's and the other model's: none


@pytest.mark.slow
def test_a_stalled_redis_costs_calls_nothing_and_the_breaker_decides_locally(
    server: FaultServer, make_engine: Callable[..., Engine], redis_server: RedisServer, log_path: Path
) -> None:
    """Redis stalls for 5 s (CLIENT PAUSE) while calls run: they go at loopback speed, the outage during the stall
    opens the breaker locally and its trial goes out without waiting for Redis; one warning, then one recovery line
    once Redis answers again."""
    engine = make_engine(
        breaker_redis_url=redis_server.url, breaker_fail_max=3, breaker_reset_timeout=0.3, breaker_outage_wait=1.0
    )
    assert engine.complete(MODEL, user="warm").outcome is Outcome.OK
    redis.Redis.from_url(redis_server.url).execute_command("CLIENT", "PAUSE", 5000, "ALL")
    paused_at = time.monotonic()
    time.sleep(0.3)
    started = time.monotonic()
    assert [engine.complete(MODEL, user=f"stalled {i}").outcome for i in range(20)] == [Outcome.OK] * 20
    assert time.monotonic() - started < 1.0  # Redis is not on their path
    server.down = True
    requests = server.stats()["requests"]
    started = time.monotonic()
    assert engine.complete(MODEL, user="outage during the stall").outcome is Outcome.NEUTRAL
    assert time.monotonic() - started < 2.5  # three failures, then its 1 s outage budget
    assert server.stats()["requests"] - requests >= 4  # the trial went out with Redis stalled
    assert engine.breaker_state == "open"
    time.sleep(max(0.0, paused_at + 5.0 - time.monotonic()))
    server.down = False
    time.sleep(2.5)  # Redis is tried again within 2 s, and the local state written back
    events = [e["event"] for e in read_log(log_path) if e["event"].startswith("breaker_storage")]
    assert events == ["breaker_storage_fault", "breaker_storage_recovered"]
    assert redis.Redis.from_url(redis_server.url).keys("*:outage")  # the outage seen during the stall, shared now
