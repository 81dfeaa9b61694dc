"""Several real processes sharing one endpoint through a real Redis: the shared limit caps what the server sees, a
SIGKILLed process's permits come back within the lease, and a shared breaker sends one trial per period.

Shorter versions of ``benchmarks/fleet.py``; the workers are ``benchmarks/fleet_worker.py`` processes configured
from the environment, as a trainer's would be.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.testing.fleet_watch import Watch, outage_hits, periods, silent_process
from resilient_llm.testing.fleet_worker import Fleet
from resilient_llm.testing.redis_server import RedisServer

pytestmark = pytest.mark.slow  # real processes, seconds each

LEASE_S = 10.0  # the shared limit's lease


def all_answered(summaries: list[dict[str, int] | None]) -> bool:
    return all(s is None or set(s) == {"ok"} for s in summaries) and any(s for s in summaries)


def test_four_processes_never_have_more_in_flight_than_the_shared_limit(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """4 processes x 6 callers under a shared limit of 10: the server never sees more than 10 requests at once."""
    env = {
        "RESILIENT_LLM_LIMIT_REDIS_URL": redis_server.url,
        "RESILIENT_LLM_CONCURRENCY": "fixed",
        "OPENROUTER_MAX_CONCURRENT_CALLS": "10",
    }
    with FaultServer("clean", latency_s=0.2) as server, Fleet(4, 6, server.url, env, tmp_path) as fleet:
        fleet.start()
        fleet.go(3.0)
        summaries = fleet.finish(timeout=30.0)
        stats = server.stats()
    assert all_answered(summaries)
    assert stats["peak_in_flight"] <= 10
    assert stats["peak_in_flight"] >= 6  # the processes did contend for the permits


def test_a_sigkilled_process_gives_its_permits_back_within_the_lease(redis_server: RedisServer, tmp_path: Path) -> None:
    """Of 2 processes sharing 8 permits, one is SIGKILLed holding some: they expire within the lease, and the
    survivor then holds all 8."""
    env = {
        "RESILIENT_LLM_LIMIT_REDIS_URL": redis_server.url,
        "RESILIENT_LLM_CONCURRENCY": "fixed",
        "OPENROUTER_MAX_CONCURRENT_CALLS": "8",
    }
    with FaultServer("clean", latency_s=0.3) as server, Fleet(2, 8, server.url, env, tmp_path) as fleet:
        fleet.start()
        fleet.go(16.0)
        watch = Watch(server, redis_server.url).start(at=fleet.started_at)
        try:
            assert watch.wait_for(lambda s: s.t >= 2.0, within=10.0) is not None
            killed_at = watch.mark("kill")
            fleet.kill(0)
            assert watch.wait_for(lambda s: s.t >= killed_at + 2.0, within=10.0) is not None
            dead = silent_process(watch.samples, killed_at, 1.5)
            assert dead is not None
            held = next(s.holders for s in watch.samples if s.t >= killed_at + 0.2 and s.holders)
            assert held.get(dead, 0) >= 1
            back = watch.wait_for(lambda s: s.holders is not None and dead not in s.holders, within=LEASE_S + 3.0)
            assert back is not None
            assert watch.now() - killed_at <= LEASE_S + 3.0
            assert watch.wait_for(lambda s: sum((s.holders or {}).values()) == 8, within=3.0) is not None
        finally:
            watch.stop()
        summaries = fleet.finish(timeout=30.0)
    assert summaries[0] is None
    assert all_answered(summaries)


def test_processes_sharing_a_breaker_send_one_trial_per_period(redis_server: RedisServer, tmp_path: Path) -> None:
    """3 processes sharing a breaker through a 4 s outage: at most one request into it per probe period after the
    trip, and every call gets a real answer once it is over."""
    env = {
        "RESILIENT_LLM_BREAKER_REDIS_URL": redis_server.url,
        "RESILIENT_LLM_BREAKER_RESET_TIMEOUT": "0.5",
    }
    with FaultServer("clean", latency_s=0.1) as server, Fleet(3, 4, server.url, env, tmp_path) as fleet:
        fleet.start()
        fleet.go(8.0)
        watch = Watch(server, None, every_s=0.05).start(at=fleet.started_at)
        try:
            assert watch.wait_for(lambda s: s.t >= 1.0, within=10.0) is not None
            server.down_kind, server.down = "reset", True
            went_down = watch.mark("down")
            assert watch.wait_for(lambda s: s.t >= went_down + 4.0, within=10.0) is not None
            server.down = False
            assert watch.wait_for(lambda s: True, within=1.0) is not None  # one more look at the counters
        finally:
            watch.stop()
        summaries = fleet.finish(timeout=30.0)
    trips = fleet.trips()
    assert trips
    after_trip = min(trips) - went_down + 0.4  # the first trial is due reset_timeout (0.5 s) after the trip
    trials = [t for t in outage_hits(watch.samples, went_down) if t >= after_trip]
    assert trials  # the endpoint was probed
    assert max(len(group) for group in periods(trials, gap=0.25)) == 1  # periods are at least 0.5 s apart
    assert len(trials) <= 9  # at least reset_timeout (0.5 s) apart: at most 8 in a 4 s outage, one per process per
    # period would be up to 24
    assert all_answered(summaries)
