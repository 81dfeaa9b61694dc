"""Pacing at a rate limit (policy/pacing.py), over sequences of attempts on a simulated timeline: no clocks, no I/O."""

from __future__ import annotations

import pytest

from resilient_llm.errors import ConfigError
from resilient_llm.policy.pacing import (
    PacePolicy,
    PaceState,
    answered,
    idle,
    paused,
    rate_at,
    refused,
    sent,
    wait_s,
)
from resilient_llm.testing.concurrency_sim import Endpoint, simulate

POLICY = PacePolicy()
LATENCY = 0.05


def burst(state: PaceState, start: float, answers: int, *, gap: float = 0.002) -> PaceState:
    """``answers`` attempts sent ``gap`` apart from ``start``, each answered ``LATENCY`` later."""
    times = [start + i * gap for i in range(answers)]
    events = sorted([(t, "send") for t in times] + [(t + LATENCY, "answer") for t in times])
    for at, kind in events:
        state = sent(POLICY, state, at) if kind == "send" else answered(state, at, LATENCY)
    return state


def bucket_cycles(cycles: int, *, answers: int = 55, retry_after: float = 1.0, limit: float = 32.0) -> PaceState:
    """A token bucket of 50/s: each cycle a burst of ``answers`` answers, then a pause of ``retry_after`` that the
    gate judged to help; the first cycle starts with the first attempt."""
    state, start = PaceState(), 0.0
    for _ in range(cycles):
        state = burst(state, start, answers)
        pause_at = start + answers * 0.002 + LATENCY
        state = paused(POLICY, state, pause_at, pause_at + retry_after, limit, helped=True)
        start = pause_at + retry_after
    return state


def test_nothing_is_paced_before_a_rate_limit_is_measured() -> None:
    """Without two agreeing cycles there is no rate to keep: every attempt may go at once."""
    state = bucket_cycles(1)
    assert rate_at(POLICY, state, 5.0) is None
    assert wait_s(POLICY, state, 5.0) == 0.0


def test_two_cycles_that_agree_set_the_rate_the_bucket_refills_at() -> None:
    """Two gate cycles in a row, each a burst of 55 answers and a 1 s pause, measure about 48 answers a second; from
    the second pause's end attempts go that fast at most, after a burst of ``burst`` once they have waited."""
    state = bucket_cycles(2)
    reopened = state.cycle.start if state.cycle is not None else 0.0
    rate = rate_at(POLICY, state, reopened)
    assert rate is not None
    assert 45 < rate < 52
    assert wait_s(POLICY, state, reopened) == pytest.approx(1 / rate)
    later = reopened + 1.0
    for _ in range(int(POLICY.burst)):
        assert wait_s(POLICY, state, later) == 0.0
        state = sent(POLICY, state, later)
    grown = rate_at(POLICY, state, later)
    assert grown is not None
    assert wait_s(POLICY, state, later) == pytest.approx(1 / grown)


def test_cycles_whose_rates_disagree_measure_nothing() -> None:
    """Pauses that come at random (a flaky limiter's refusals in a row) make cycles of any length: rates that
    differ by more than an eighth are no rate limit's."""
    state = burst(PaceState(), 0.0, 55)
    state = paused(POLICY, state, 0.16, 1.16, 32.0, helped=True)
    state = burst(state, 1.16, 200)
    state = paused(POLICY, state, 1.6, 2.6, 32.0, helped=True)
    assert rate_at(POLICY, state, 3.0) is None


def test_a_cycle_that_kept_the_limit_in_use_is_a_capacity_edge_not_a_rate() -> None:
    """Cycles that sustained more than half the concurrency limit in flight are a capacity edge's, which the limit
    finds: no pacing, however well they agree."""
    state = bucket_cycles(3, limit=4.0)
    assert rate_at(POLICY, state, 10.0) is None


def test_a_pause_found_not_to_help_ends_pacing() -> None:
    """Once the gate judges a pause futile (refusals whatever the load), the measured rate was no bucket's."""
    state = bucket_cycles(2)
    start = state.cycle.start if state.cycle is not None else 0.0
    assert rate_at(POLICY, state, start) is not None
    state = burst(state, start, 55)
    state = paused(POLICY, state, start + 0.5, start + 1.5, 32.0, helped=False)
    assert rate_at(POLICY, state, start + 1.5) is None


def test_the_paced_rate_grows_and_a_refusal_cuts_it_once_per_round_trip() -> None:
    """The rate rises by ``growth_per_s`` a second; a refusal cuts it to ``backoff`` of what it grew to, refusals
    of attempts sent before that cut change nothing, and no cut goes below ``floor_share`` of the measured rate."""
    state = bucket_cycles(2)
    start = state.cycle.start if state.cycle is not None else 0.0
    measured = rate_at(POLICY, state, start)
    assert measured is not None
    grown = rate_at(POLICY, state, start + 4.0)
    assert grown == pytest.approx(measured * (1 + 4 * POLICY.growth_per_s))
    state = refused(POLICY, state, start + 4.0, sent_at=start + 3.95)
    assert rate_at(POLICY, state, start + 4.0) == pytest.approx(POLICY.backoff * grown)
    state = refused(POLICY, state, start + 4.01, sent_at=start + 3.96)
    assert rate_at(POLICY, state, start + 4.01) == pytest.approx(POLICY.backoff * grown, rel=1e-3)
    for step in range(1, 10):
        state = refused(POLICY, state, start + 4.0 + step, sent_at=start + 4.0 + step)
    assert rate_at(POLICY, state, start + 13.0) == pytest.approx(POLICY.floor_share * measured)


def test_answers_count_in_the_cycle_their_attempt_was_sent_in() -> None:
    """A bucket whose 429 comes back at once pauses while the cycle's last answers are still on their way: they
    count for the cycle that sent them, measured when the pause ends."""
    state = burst(PaceState(), 0.0, 55)
    state = paused(POLICY, state, 0.12, 1.12, 32.0, helped=True)  # 20 answers still on their way
    state = burst(state, 1.12, 55)
    state = paused(POLICY, state, 1.24, 2.24, 32.0, helped=True)
    rate = rate_at(POLICY, state, 2.24)
    assert rate is not None
    assert 45 < rate < 52


def test_idle_spells_are_not_the_endpoints_rate() -> None:
    """A trainer between batches asks for nothing: time with nothing in flight or queued is left out of a cycle,
    so its rate is what the endpoint let through while asked."""
    state = bucket_cycles(1)
    start = state.cycle.start if state.cycle is not None else 0.0
    state = burst(state, start, 25)
    state = idle(state, start + 0.1)
    state = burst(state, start + 5.1, 30)
    state = paused(POLICY, state, start + 5.21, start + 6.21, 32.0, helped=True)
    rate = rate_at(POLICY, state, start + 6.21)
    assert rate is not None
    assert 45 < rate < 52


def test_a_bad_pace_policy_names_what_it_expects() -> None:
    """Out-of-range settings fail at construction with the accepted ranges."""
    with pytest.raises(ConfigError, match="backoff in"):
        PacePolicy(backoff=1.0)
    with pytest.raises(ConfigError, match="burst"):
        PacePolicy(burst=0.5)


@pytest.mark.parametrize("share", [0.04, 0.15, 0.6])
def test_refusals_at_random_are_never_paced(share: float) -> None:
    """A limiter refusing a share of attempts whatever the load pauses now and then, in cycles of any length: no two
    agree, so nothing is paced and the simulated calls go as fast as without pacing (before the agreement test, 15%
    random refusals paced a model down to 1 call/s)."""
    endpoint = Endpoint(refuse_share=share, retry_after=1.0, latency=lambda rng: rng.uniform(0.04, 0.06))
    for seed in range(3):
        paced = simulate(endpoint, callers=32, calls=3000, seed=seed)
        unpaced = simulate(endpoint, callers=32, calls=3000, seed=seed, pace=False)
        assert paced.calls_per_s == pytest.approx(unpaced.calls_per_s, rel=0.02)


def test_a_token_bucket_is_paced_in_the_simulation() -> None:
    """The simulation's late-429 bucket (50/s, bursts of 50, 32 callers): pacing saves most of the refusals after the
    first two cycles, at the same throughput."""
    endpoint = Endpoint(rate=50, burst=50, retry_after=1.0, latency=lambda rng: rng.uniform(0.04, 0.06))
    endpoint.late_refusals = True
    for seed in range(3):
        paced = simulate(endpoint, callers=32, calls=500, seed=seed)
        unpaced = simulate(endpoint, callers=32, calls=500, seed=seed, pace=False)
        assert paced.requests / 500 <= 1.13
        assert paced.refusals < 0.7 * unpaced.refusals
        assert paced.calls_per_s >= 0.95 * unpaced.calls_per_s
