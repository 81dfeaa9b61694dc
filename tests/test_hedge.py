"""Hedged requests: the decisions, and a straggler answered by its duplicate against the local server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from resilient_llm import Engine, Outcome
from resilient_llm.policy.hedge import HedgeBudget, hedge_delay
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL, read_log


def test_delay_is_the_cap_until_there_are_enough_samples() -> None:
    """Few samples: wait the cap; enough: the quantile, clamped to [floor, cap]."""
    assert hedge_delay([0.1] * 5, quantile=0.9, floor=0.2, cap=9.0) == 9.0
    samples = [0.1 * i for i in range(1, 101)]
    assert hedge_delay(samples, quantile=0.9, floor=0.2, cap=9.0) == samples[89]
    assert hedge_delay(samples, quantile=0.9, floor=0.2, cap=5.0) == 5.0
    assert hedge_delay([0.01] * 50, quantile=0.9, floor=0.2, cap=5.0) == 0.2


def test_budget_allows_the_ratio_over_the_window() -> None:
    """5% of 100 attempts is 5 hedges; old attempts leave the window."""
    budget = HedgeBudget(0.05, window_s=60.0)
    for _ in range(100):
        budget.record_attempt(0.0)
    assert [budget.try_spend(1.0) for _ in range(7)] == [True] * 5 + [False] * 2
    budget.record_attempt(100.0)
    assert not budget.try_spend(100.0)  # the window now holds 1 attempt


def warm_up(engine: Engine, calls: int = 30) -> None:
    for i in range(calls):
        engine.complete(MODEL, user=f"warm {i}")


def test_a_straggler_is_answered_by_its_hedge(make_engine: Callable[..., Engine], log_path: Path) -> None:
    """A hung attempt gets a duplicate after the adaptive threshold; the duplicate's answer wins; no slot leaks."""
    with FaultServer("clean", latency_s=0.02, hang_s=10.0) as server:
        engine = make_engine(base_url=server.url, hedge=True, hedge_min_delay=0.05, hedge_quantile=0.9, timeout=20.0)
        warm_up(engine)
        server.reset_stats()
        server.script("hang")
        result = engine.complete(MODEL, user="straggler")
        assert result.outcome is Outcome.OK
        assert result.attempts == 1
        assert result.latency_s < 2.0  # not the 10 s hang, nor the 20 s timeout
        assert server.stats()["requests"] == 2
    assert engine.in_flight == 0
    events = [e["event"] for e in read_log(log_path)]
    assert events.count("hedge") == 1
    assert events.count("hedge_won") == 1


@pytest.mark.slow
def test_no_hedge_when_the_cap_is_full_or_hedging_is_off(make_engine: Callable[..., Engine], log_path: Path) -> None:
    """With one slot (taken by the straggler) no duplicate is sent; with hedging off neither."""
    with FaultServer("clean", latency_s=0.02, hang_s=1.0) as server:
        capped = make_engine(base_url=server.url, hedge=True, hedge_min_delay=0.05, max_concurrent=1)
        plain = make_engine(base_url=server.url)
        warm_up(capped)
        warm_up(plain)
        server.reset_stats()
        server.script("hang", "hang")
        assert capped.complete(MODEL, user="a").outcome is Outcome.OK
        assert plain.complete(MODEL, user="b").outcome is Outcome.OK
        assert server.stats()["requests"] == 2
    assert "hedge" not in [e["event"] for e in read_log(log_path)]
