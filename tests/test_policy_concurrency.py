"""The adaptive concurrency policy over sequences of samples and simulated endpoints: no clock, no sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from collections.abc import Iterable

import pytest

from resilient_llm.errors import BreakerOpen, ConfigError, ConnectionFailed, ErrorResponse, ProviderTimeout
from resilient_llm.policy.concurrency import (
    LimitPolicy,
    LimitState,
    Sample,
    Signal,
    adopt,
    follow,
    forgive,
    initial_state,
    probes_the_edge,
    signal_of,
    update,
)
from resilient_llm.testing.concurrency_sim import Endpoint, simulate

CONFIG = LimitPolicy()


def feed(state: LimitState, samples: Iterable[Sample], config: LimitPolicy = CONFIG) -> list[LimitState]:
    states = [state]
    for sample in sorted(samples, key=lambda s: s.end):
        states.append(update(config, states[-1], sample))
    return states


def rounds(
    count: int, size: int, *, latency: float = 0.5, start: float = 0.0, signal: Signal = Signal.OK, tokens: int = 12
) -> list[Sample]:
    """``count`` round trips of ``size`` attempts each, all started together with the limit in use."""
    return [
        Sample(signal, start + r * latency, start + (r + 1) * latency + i * 1e-4, size, size, tokens)
        for r in range(count)
        for i in range(size)
    ]


def test_defaults_are_the_old_cap_and_a_ceiling() -> None:
    """The limit starts at the old fixed cap of 20 and stays within 1..256."""
    state = initial_state(CONFIG)
    assert state.permits == 20
    assert (CONFIG.min_limit, CONFIG.max_limit) == (1, 256)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"initial": 0}, "initial=0"),
        ({"initial": 300}, "initial=300"),
        ({"min_limit": 10, "max_limit": 5}, "max_limit=5"),
        ({"backoff_ratio": 1.0}, "backoff_ratio=1.0"),
        ({"tolerance": float("nan")}, "tolerance=nan"),
        ({"cubic": 0}, "cubic=0"),
        ({"token_floor": True}, "token_floor=True"),
        ({"separation": "high"}, "separation='high'"),
    ],
)
def test_config_refuses_bad_values_by_name(overrides: dict[str, object], named: str) -> None:
    """A bad field is a ConfigError naming the field, the value and what is accepted."""
    with pytest.raises(ConfigError, match="expected") as caught:
        LimitPolicy(**overrides)  # type: ignore[arg-type]
    assert named in str(caught.value)


def test_sample_refuses_impossible_values() -> None:
    """A sample that ends before it starts, or counts no attempt in flight, is refused by name."""
    with pytest.raises(ConfigError, match=r"Sample\.end"):
        Sample(Signal.OK, 2.0, 1.0, 1)
    with pytest.raises(ConfigError, match=r"Sample\.in_flight=0"):
        Sample(Signal.OK, 1.0, 2.0, 0)


def test_signal_of_each_outcome() -> None:
    """429 and in-flight 402 are backpressure, timeouts drops, pool waits and resets no signal, cancels nothing."""
    assert signal_of(None) is Signal.OK
    assert signal_of(ErrorResponse("x", kind="http_429", status=429)) is Signal.BACKPRESSURE
    budget = ErrorResponse("x", kind="http_402", status=402, code="in_flight_budget_exhausted")
    assert signal_of(budget) is Signal.BACKPRESSURE
    assert signal_of(ErrorResponse("x", kind="http_402", status=402)) is Signal.FAILURE  # out of credits
    assert signal_of(ProviderTimeout("slow", kind="read_timeout")) is Signal.TIMEOUT
    assert signal_of(ProviderTimeout("pool", kind="pool_timeout")) is Signal.FAILURE
    assert signal_of(ConnectionFailed("reset", kind="connection_reset")) is Signal.FAILURE
    assert signal_of(asyncio.CancelledError()) is Signal.CANCELLED
    assert signal_of(BreakerOpen("open", kind="breaker_open")) is Signal.CANCELLED


def test_slow_start_adds_two_per_answer_while_the_limit_is_used() -> None:
    """Each answer adds 2 permits while at least half the limit is in flight: 20 in flight take it to 42."""
    states = feed(initial_state(CONFIG), rounds(1, 20))
    assert [s.permits for s in states[:4]] == [20, 22, 24, 26]
    assert states[-1].permits == 42
    assert {s.reason for s in states[1:12]} == {"slow_start"}


def test_idle_limit_does_not_grow() -> None:
    """Answers with few attempts in flight teach nothing: the limit stays put however many there are."""
    samples = [Sample(Signal.OK, i * 0.1, i * 0.1 + 0.5, 3, 3, 12) for i in range(10_000)]
    assert feed(initial_state(CONFIG), samples)[-1].permits == 20


def test_ceiling_and_floor_hold() -> None:
    """Endless answers stop at the ceiling; endless refusals stop at the floor."""
    config = LimitPolicy(max_limit=50, min_limit=2)
    up = feed(initial_state(config), rounds(40, 50), config)
    assert max(s.permits for s in up) == 50
    down = feed(up[-1], rounds(200, 50, latency=0.01, start=100.0, signal=Signal.BACKPRESSURE), config)
    assert min(s.permits for s in down) == 2


def test_a_burst_of_refusals_counts_once() -> None:
    """22 429s of attempts sent under one limit cut it once, to under the lowest refused level (by 19%: the cut that
    ends slow start goes twice as deep, the overshoot's lowest refused level being above the capacity)."""
    state = feed(initial_state(CONFIG), rounds(1, 20))[-1]  # 42 permits, 20 answered at 20 in flight
    burst = [Sample(Signal.BACKPRESSURE, 1.0, 1.001 + i * 1e-4, 21 + i, 42) for i in range(22)]
    late = Sample(Signal.BACKPRESSURE, 1.01, 1.011, 42)  # sent later, under the same limit: closes the window
    states = feed(state, [*burst, late])
    cuts = [s for s in states if s.reason == "backpressure"]
    assert len(cuts) == 1
    assert states[-1].permits == int(0.9 * 0.9 * 21)
    after = feed(states[-1], [Sample(Signal.BACKPRESSURE, 1.0, 1.02 + i * 1e-3, 42) for i in range(40)])
    assert after[-1].permits == states[-1].permits  # stragglers sent before the cut are already paid for


def test_attempts_granted_before_a_cut_are_not_judged_even_if_they_started_after_it() -> None:
    """A queued attempt handed its slot under the old limit may resume after the cut: its 429 is the old limit's,
    not a second reason to cut (a capacity run cut 92 to 83 on such refusals at 129-132 in flight)."""
    state = feed(initial_state(CONFIG), rounds(1, 20))[-1]
    burst = [Sample(Signal.BACKPRESSURE, 1.0, 1.001 + i * 1e-4, 30 + i, 42) for i in range(9)]
    cut = feed(state, burst)[-1]
    assert (cut.decreased_at, cut.permits) == (1.001, 24)
    resumed = [  # granted before the cut, started after it
        Sample(Signal.BACKPRESSURE, 1.02 + i * 1e-4, 1.021 + i * 1e-4, 40, 40, granted=1.0005) for i in range(20)
    ]
    assert feed(cut, resumed)[-1].permits == cut.permits
    sent_after = [
        Sample(Signal.BACKPRESSURE, 1.02 + i * 1e-4, 1.021 + i * 1e-4, 40, 40, granted=1.01) for i in range(20)
    ]
    assert feed(cut, sent_after)[-1].permits < cut.permits


def test_a_cut_with_no_answer_in_its_window_levels_off_below_the_lowest_refused_level() -> None:
    """Eight quick 429s at 101-108 in flight and no answer: the cut is the plain tenth of the limit (108 to 97), but
    CUBIC climbs back to 100, under the lowest refused level, not to 107 (where it drew another 429 and cut)."""
    state = LimitState(limit=108.0, slow_start=False, decreased_at=0.0, plateau=108.0, baseline=0.5)
    refused = [Sample(Signal.BACKPRESSURE, 1.0 + i * 1e-3, 1.001 + i * 1e-3, 101 + i, 101 + i) for i in range(9)]
    cut = feed(state, refused)[-1]
    assert cut.permits == int(0.9 * 108)
    assert (cut.plateau, cut.refused_level) == (100.0, 101.0)


def test_a_refusal_at_or_past_the_refused_level_is_the_limits_probe_of_the_edge() -> None:
    """Out of slow start, a 429 at or above the level refused last time is the limit probing past the edge it knows
    (its cut answers it); below that level, or in slow start, it is not."""
    state = LimitState(limit=101.0, slow_start=False, refused_level=101.0)
    assert probes_the_edge(state, 101)
    assert probes_the_edge(state, 104)
    assert not probes_the_edge(state, 100)
    assert not probes_the_edge(LimitState(limit=101.0, slow_start=True, refused_level=101.0), 101)
    assert not probes_the_edge(LimitState(limit=101.0, slow_start=False), 101)


def test_a_refusal_just_under_slow_starts_overshoot_is_the_edge_found_again() -> None:
    """Slow start's overshoot counts refusals in transit as in flight, so the level it found refused lies above the
    capacity (104-122 on the wire for an edge of 100): the first 429 at 101 once CUBIC has climbed back is the limit
    finding the edge again, not a reason to pause everyone; a later edge's level counts as it is."""
    growing = [*rounds(1, 20), *rounds(1, 60, start=0.5)]  # slow start: 20 -> 122 permits
    refused = rounds(1, 110, start=1.1, latency=0.01, signal=Signal.BACKPRESSURE)
    state = feed(initial_state(CONFIG), [*growing, *refused])[-1]
    assert state.refused_level == 110
    assert state.overshoot
    assert probes_the_edge(state, 101)
    assert not probes_the_edge(state, 98)
    later = dataclasses.replace(state, overshoot=False, refused_level=101.0)
    assert not probes_the_edge(later, 100)


def test_a_lone_refusal_while_the_limit_idles_does_not_cut() -> None:
    """Between a trainer's batches (5 in flight under a limit of 42) one 429 is a hiccup, not the capacity's edge;
    refusals that are a quarter of what was sent at the top level in one window still cut."""
    state = feed(initial_state(CONFIG), [*rounds(1, 20), Sample(Signal.OK, 0.9, 0.95, 4)])[-1]  # 42 permits
    quiet = [Sample(Signal.OK, 1.0, 1.5 + i * 1e-3, 4) for i in range(8)]
    hiccup = feed(state, [*quiet, Sample(Signal.BACKPRESSURE, 1.2, 1.201, 5), Sample(Signal.OK, 1.6, 2.2, 4)])
    assert hiccup[-1].permits == state.permits
    thrice = [Sample(Signal.BACKPRESSURE, 1.2 + i / 10, 1.201 + i / 10, 5) for i in range(3)]
    cut = feed(state, [*quiet, *thrice, Sample(Signal.OK, 1.6, 2.2, 4)])
    assert cut[-1].permits < state.permits


def test_refusals_among_answers_at_higher_levels_do_not_cut() -> None:
    """A rate limiter refusing at random (refused attempts below answered ones) leaves the limit to the gate."""
    state = initial_state(CONFIG)
    mixed = [
        Sample(Signal.BACKPRESSURE if i % 3 else Signal.OK, r * 0.5, r * 0.5 + (0.01 if i % 3 else 0.05), i + 1)
        for r in range(20)
        for i in range(20)
    ]
    states = feed(state, mixed)
    assert not [s for s in states if s.reason == "backpressure"]


def test_a_burst_among_answers_cuts_once_the_gate_found_a_rate_limit() -> None:
    """A token bucket refuses at any level, so its refusals sit among answers at the same levels; once the gate's
    pauses were seen to help (``paced``), a burst is the limit's to cut (to what the bucket sustained), where before
    the limit stayed at 66 over four pauses of a late-429 bucket and every pause cycle lost 30 requests."""
    state = LimitState(limit=66.0, slow_start=False, decreased_at=0.0, plateau=66.0)
    answered = [Sample(Signal.OK, 0.1 + i * 0.02, 0.15 + i * 0.02, 20 + i % 12, 20, 12) for i in range(50)]
    state = feed(state, answered)[-1]

    def burst(paced: bool) -> list[Sample]:
        among = [Sample(Signal.OK, 1.1, 1.15 + i * 1e-3, 31, 31, 12) for i in range(6)]
        refused = [
            Sample(
                Signal.BACKPRESSURE, 1.1 if i == 0 else 1.2, 1.25 + i * 1e-3, 20, 20, None, burst=i == 1, paced=paced
            )
            for i in range(4)
        ]
        return among + refused

    assert not [s for s in feed(state, burst(paced=False)) if s.reason == "backpressure"]
    cuts = [s for s in feed(state, burst(paced=True)) if s.reason == "backpressure"]
    assert len(cuts) == 1
    assert cuts[0].limit <= 6.0  # 50 answers of 0.05 s over 1.25 s: 2 in flight sustained, twice over


def test_refusals_as_few_at_the_top_level_as_anywhere_leave_the_limit_alone() -> None:
    """Out of slow start, a limit in full use (every attempt at 32 in flight) meeting 4% of 429s whatever the load:
    refused at the same level as most answers, a small share of them: each request's own, not the limit's."""
    state = LimitState(limit=32.0, slow_start=False, decreased_at=0.0, plateau=32.0)
    samples = [
        Sample(Signal.BACKPRESSURE if i % 25 == 7 else Signal.OK, r * 0.05, r * 0.05 + 0.05 + i * 1e-4, 32, 32, 12)
        for r in range(200)
        for i in range(32)
    ]
    states = feed(state, samples)
    assert not [s for s in states if s.reason == "backpressure"]
    assert states[-1].permits >= 32


def test_refusals_at_the_top_level_that_chance_explains_do_not_cut() -> None:
    """Two 429s among ten attempts at the top level, where 4% of attempts are refused at random, come by chance once
    in 17 windows: no cut. Six of ten do not: cut."""
    state = LimitState(limit=20.0, slow_start=False, decreased_at=0.0, plateau=20.0)

    def window(refused: int) -> list[Sample]:
        return [
            Sample(Signal.BACKPRESSURE if i < refused else Signal.OK, 1.0, 1.5 + i * 1e-3, 20, 20, 12, background=0.04)
            for i in range(10)
        ] + [Sample(Signal.OK, 1.6, 2.1, 20, 20, 12, background=0.04)]

    assert not [s for s in feed(state, window(2)) if s.reason == "backpressure"]
    assert [s for s in feed(state, window(6)) if s.reason == "backpressure"]


def test_refusals_that_are_a_large_share_at_the_top_level_cut() -> None:
    """Out of slow start, a third of the attempts at the top level refused (a limit in full use over a drained
    token bucket): the limit is cut."""
    state = LimitState(limit=32.0, slow_start=False, decreased_at=0.0, plateau=32.0)
    samples = [
        Sample(Signal.BACKPRESSURE if i % 3 == 0 else Signal.OK, r * 0.05, r * 0.05 + 0.05 + i * 1e-4, 32, 32, 12)
        for r in range(4)
        for i in range(32)
    ]
    assert [s for s in feed(state, samples) if s.reason == "backpressure"]


def test_a_refusal_that_made_the_gate_pause_counts_as_load() -> None:
    """One refusal at the top level among many answers cuts once the gate called it a burst (two in a row)."""
    state = LimitState(limit=32.0, slow_start=False, decreased_at=0.0, plateau=32.0)
    answers = [Sample(Signal.OK, 0.0, 0.05 + i * 1e-4, 32, 32, 12) for i in range(31)]
    lone = Sample(Signal.BACKPRESSURE, 0.06, 0.061, 32)
    closing = Sample(Signal.OK, 0.07, 0.12, 31, 31, 12)
    assert not [s for s in feed(state, [*answers, lone, closing]) if s.reason == "backpressure"]
    burst = Sample(Signal.BACKPRESSURE, 0.06, 0.061, 32, burst=True)
    assert [s for s in feed(state, [*answers, burst, closing]) if s.reason == "backpressure"]


def test_our_own_loop_delay_is_not_read_as_a_queue() -> None:
    """Answers that took three times the baseline, all of it our own process's delay (a CPU-bound caller), do not
    cut the limit; the same rise with no client delay does."""
    state = feed(LimitState(limit=40.0, slow_start=False, decreased_at=0.0, plateau=40.0), rounds(3, 30, latency=0.01))[
        -1
    ]
    assert state.baseline is not None

    def slow(client_delay: float) -> list[Sample]:
        return [
            Sample(Signal.OK, 1 + r * 0.03, 1 + (r + 1) * 0.03 + i * 1e-4, 30, 30, 12, client_delay=client_delay)
            for r in range(5)
            for i in range(30)
        ]

    assert not [s for s in feed(state, slow(0.02)) if s.reason == "latency"]
    assert [s for s in feed(state, slow(0.0)) if s.reason == "latency"]


def test_answers_as_slow_at_low_load_as_at_high_load_are_not_a_queue_we_cause() -> None:
    """Answers three times the baseline whether started with 5 or 30 in flight (a CPU-bound caller whose loop lag
    shows only part of it) do not cut the limit; the same rise only above half the limit does."""
    state = feed(LimitState(limit=40.0, slow_start=False, decreased_at=0.0, plateau=40.0), rounds(3, 30, latency=0.01))[
        -1
    ]

    def mixed(low_latency: float) -> list[Sample]:
        samples = []
        for r in range(5):
            start = 1 + r * 0.03
            for i in range(30):
                in_flight = 5 if i % 2 else 30
                latency = low_latency if in_flight == 5 else 0.03
                samples.append(Sample(Signal.OK, start, start + latency + i * 1e-4, in_flight, 30, 12))
        return samples

    assert not [s for s in feed(state, mixed(0.03)) if s.reason == "latency"]
    assert [s for s in feed(state, mixed(0.01)) if s.reason == "latency"]


def test_a_timeout_while_the_limit_idles_cuts_the_limit_not_to_the_idle_level() -> None:
    """A hang at 2 in flight under a limit of 42 is a plain 10% drop, not a cut to 2."""
    state = feed(initial_state(CONFIG), rounds(1, 20))[-1]  # 42 permits
    cut = feed(state, [Sample(Signal.TIMEOUT, 1.0, 31.0, 2)])[-1]
    assert cut.permits == int(0.9 * 42)


def test_timeouts_cut_once_per_limit() -> None:
    """Attempt timeouts are drops: the first cuts by 10%, those sent before it change nothing."""
    state = initial_state(CONFIG)
    timeouts = [Sample(Signal.TIMEOUT, 0.0, 30.0 + i, 20) for i in range(5)]
    states = feed(state, timeouts)
    assert [s.permits for s in states] == [20, 18, 18, 18, 18, 18]
    assert states[1].reason == "timeout"


def test_failures_and_cancellations_change_nothing() -> None:
    """Resets, 5xx and cancelled attempts say nothing about capacity."""
    state = initial_state(CONFIG)
    noise = [Sample(signal, i, i + 0.1, 20) for i in range(50) for signal in (Signal.FAILURE, Signal.CANCELLED)]
    assert feed(state, noise)[-1] == state


def test_cubic_levels_off_under_the_refused_level() -> None:
    """After a refusal at 101 in flight the limit climbs back under it within 5 s, stays there ~7 s, then probes."""
    state = LimitState(limit=101.0, slow_start=False)
    refused = [Sample(Signal.BACKPRESSURE, 0.0, 0.001, 101), *(Sample(Signal.OK, 0.0, 0.5, 100) for _ in range(8))]
    refused.append(Sample(Signal.BACKPRESSURE, 0.6, 0.601, 101))
    state = feed(state, refused)[-1]
    assert state.permits == 90
    assert state.reason == "backpressure"
    by_second: dict[int, int] = {}
    for i in range(4000):  # an answer every 5 ms, each finding the limit in use
        now = 0.7 + i * 0.005
        state = update(CONFIG, state, Sample(Signal.OK, now - 0.5, now, state.permits))
        by_second[int(now)] = state.permits
    assert by_second[1] > 90  # fast back towards the refused level
    assert {by_second[second] for second in range(5, 12)} <= {99, 100}  # a plateau just under it, no refusal
    assert by_second[19] > 110  # then probing for more


def test_long_answers_do_not_look_like_a_queue() -> None:
    """Latency is scaled to a 32-token answer: 1000-token answers at 10 ms a token are not queueing."""
    short = rounds(10, 20, latency=0.5, tokens=12)
    long = rounds(10, 20, latency=10.0, start=5.0, tokens=1000)
    config = LimitPolicy(max_limit=20)
    assert not [s for s in feed(initial_state(config), [*short, *long], config) if s.reason == "latency"]
    untokened = [Sample(s.signal, s.start, s.end, s.in_flight, s.in_flight_end) for s in long]
    assert [s for s in feed(initial_state(config), [*short, *untokened], config) if s.reason == "latency"]


def test_follows_a_clean_endpoint_up_fast() -> None:
    """64 callers against a 500 +- 100 ms endpoint with room: within 5% of no limit at all, no decrease."""
    adaptive = simulate(Endpoint(), callers=64, calls=1000)
    unlimited = simulate(Endpoint(), callers=64, calls=1000, fixed=10_000)
    assert adaptive.calls_per_s >= 0.94 * unlimited.calls_per_s
    assert adaptive.permits_at(1.2) >= 64
    assert not [s for s in adaptive.states if s.reason in ("backpressure", "latency", "timeout")]


def test_converges_to_a_capacity_limited_endpoint() -> None:
    """At most 100 in flight, 429 + Retry-After 1 s beyond: near 100, few refusals, ~85% of the ideal rate."""
    result = simulate(Endpoint(capacity=100), callers=1000, calls=3000)
    assert result.refusals / result.requests < 0.01
    assert 85 <= result.permits_at(result.wall) <= 101
    assert result.calls_per_s >= 0.8 * 200
    settled = [p for at, p in result.limits if at > 3.0]
    assert min(settled) >= 85
    assert max(settled) <= 101


def test_follows_a_capacity_halving() -> None:
    """Capacity 100 -> 50 at 8 s: the limit is near 50 within 10 s and refusals are back under 5%."""
    endpoint = Endpoint(capacity=100, capacity_changes=[(8.0, 50)])
    result = simulate(endpoint, callers=1000, calls=5000)
    assert 88 <= result.permits_at(7.9) <= 101
    assert 40 <= result.permits_at(18.0) <= 51
    assert result.refusal_share(18.0, result.wall) < 0.05


def test_random_refusals_paced_by_the_gate_do_not_collapse_the_limit() -> None:
    """60% 429s whatever the load, Retry-After obeyed by all: the limit keeps up with the callers."""
    endpoint = Endpoint(refuse_share=0.6, retry_after=0.5, latency=lambda rng: rng.uniform(0.04, 0.06))
    result = simulate(endpoint, callers=32, calls=500)
    fixed = simulate(endpoint, callers=32, calls=500, fixed=20)
    assert result.permits_at(result.wall) >= 32
    assert result.calls_per_s >= fixed.calls_per_s


def test_keeps_a_queueing_endpoint_from_piling_up() -> None:
    """50 workers and a FIFO queue, 200 callers: same throughput as a limit of 50, far less waiting than none."""
    adaptive = simulate(Endpoint(workers=50), callers=200, calls=6000)
    fifty = simulate(Endpoint(workers=50), callers=200, calls=6000, fixed=50)
    unlimited = simulate(Endpoint(workers=50), callers=200, calls=6000, fixed=10_000)
    assert adaptive.calls_per_s >= 0.95 * fifty.calls_per_s
    late = statistics.median(adaptive.latencies[3000:])
    assert late < 0.75 * statistics.median(unlimited.latencies[3000:])
    assert [s for s in adaptive.states if s.reason == "latency"]


def test_a_slower_endpoint_is_the_new_normal_after_two_futile_cuts() -> None:
    """Answers three times slower for good (not a queue): at most two latency cuts, then the limit regrows."""
    result = simulate(Endpoint(slowdown=(5.0, 3.0)), callers=200, calls=6000)
    assert result.permits_at(5.0) >= 200  # all 200 callers served before
    assert len([s for s in result.states if s.reason == "latency"]) <= 2
    assert min(p for at, p in result.limits if at > 5.0) >= 0.5 * 200
    assert result.permits_at(result.wall) >= 200


def test_refusals_deepen_the_cut_by_the_slot_time_they_held_not_by_their_count() -> None:
    """A window at a capacity edge where 429s come back at once (2 ms) and outnumber the 0.5 s answers three to one
    gets the plain cut; the same refusals taking as long as an answer (a late bucket) cut deeper (DCTCP)."""
    state = LimitState(limit=100.0, slow_start=False, decreased_at=0.0, plateau=100.0)

    def window(refusal_s: float) -> list[Sample]:
        answers = [Sample(Signal.OK, 1.0, 1.5 + i * 1e-3, 90, 100, 12) for i in range(10)]
        refused = [Sample(Signal.BACKPRESSURE, 1.2, 1.2 + refusal_s + i * 1e-3, 100, 100, None) for i in range(30)]
        closing = Sample(Signal.OK, 1.8, 2.3, 95, 95, 12)  # sent after the window opened: it closes it
        return [*answers, *refused, closing]

    quick = [s for s in feed(state, window(0.002)) if s.reason == "backpressure"]
    late = [s for s in feed(state, window(0.5)) if s.reason == "backpressure"]
    assert len(quick) == len(late) == 1
    assert quick[0].limit == pytest.approx(CONFIG.backoff_ratio * 100)
    assert late[0].limit < 0.7 * 100


def test_a_rate_limit_whose_pauses_help_is_cut_to_what_it_sustained() -> None:
    """A token bucket (the gate's pauses help: ``paced``): a burst cuts the limit to twice the attempts in flight it
    answered since the last cut (50 answers/s of 0.05 s: 2.5), not by a tenth; without ``paced``, the usual cut."""
    state = LimitState(limit=20.0, slow_start=False, decreased_at=0.0, plateau=20.0)
    answered = [Sample(Signal.OK, i * 0.02, i * 0.02 + 0.05, 3, 3, 12) for i in range(50)]
    state = feed(state, answered)[-1]

    def burst(paced: bool) -> list[Sample]:
        refused = Signal.BACKPRESSURE
        return [Sample(refused, 1.1, 1.15 + i * 1e-3, 20, 20, None, burst=i == 2, paced=paced) for i in range(10)]

    paced = [s for s in feed(state, burst(True)) if s.reason == "backpressure"]
    plain = [s for s in feed(state, burst(False)) if s.reason == "backpressure"]
    assert len(paced) == len(plain) == 1
    assert 4.0 <= paced[0].limit <= 6.0
    assert plain[0].limit >= 10.0


def test_a_window_of_quick_refusals_shorter_than_half_an_answer_gets_the_plain_cut() -> None:
    """Eight 429s sent back within 6 ms, before any answer of the window could come back (0.5 s answers), close a
    window whose slot time is all refused: that says nothing, so the cut is the plain tenth, not a halving."""
    state = LimitState(limit=104.0, slow_start=False, decreased_at=0.0, plateau=104.0, baseline=0.5)
    refused = [Sample(Signal.BACKPRESSURE, 1.0 + i * 1e-3, 1.001 + i * 1e-3, 104, 104, None) for i in range(9)]
    cuts = [s for s in feed(state, refused) if s.reason == "backpressure"]
    assert len(cuts) == 1
    assert cuts[0].limit == pytest.approx(CONFIG.backoff_ratio * 104)


def test_a_pause_inside_a_window_does_not_make_its_quick_refusals_look_long() -> None:
    """Quick 429s on both sides of a 1 s pause, with no answer yet: the window spans 1.1 s but sent for 0.1 s of it,
    under half an answer's latency, so it gets the plain cut (a capacity run halved 105 to 52 there)."""
    state = LimitState(limit=105.0, slow_start=False, decreased_at=0.0, plateau=105.0, baseline=0.5)
    before = [Sample(Signal.BACKPRESSURE, 1.0, 1.001 + i * 1e-3, 105, 105, None, shut=0.0) for i in range(4)]
    after = [Sample(Signal.BACKPRESSURE, 2.05, 2.06 + i * 1e-3, 105, 105, None, shut=1.0) for i in range(5)]
    cuts = [s for s in feed(state, before + after) if s.reason == "backpressure"]
    assert len(cuts) == 1
    assert cuts[0].limit == pytest.approx(CONFIG.backoff_ratio * 105)


def test_a_paced_cut_waits_until_the_gate_was_open_two_answer_latencies_since_the_last_cut() -> None:
    """Right after a cut and a 1 s pause, what was served says little about what the endpoint sustains (a capacity
    edge read as sustaining half of it): the burst gets the usual cut. Later, the paced cut applies, pauses counted
    as elapsed time (a token bucket refills in them)."""
    state = LimitState(limit=100.0, slow_start=False, decreased_at=0.0, plateau=100.0, shut=0.0)
    answers = [Sample(Signal.OK, 0.0, 0.5 + i * 1e-3, 100, 100, 12, shut=1.0) for i in range(20)]
    state = feed(state, answers)[-1]

    def burst(at: float) -> list[Sample]:
        return [
            Sample(Signal.BACKPRESSURE, at, at + 0.1 + i * 1e-3, 100, 100, None, burst=i == 0, paced=True, shut=1.0)
            for i in range(10)
        ]

    soon = [s for s in feed(state, burst(1.2)) if s.reason == "backpressure"]
    later = [s for s in feed(state, burst(4.0)) if s.reason == "backpressure"]
    assert soon[0].limit == pytest.approx(CONFIG.backoff_ratio * 100)
    assert later[0].limit < 0.5 * 100  # 10 s of answers over 4.1 s elapsed: 2.4 in flight sustained, twice over


def test_forgive_takes_back_the_backpressure_cuts_and_probes_on_from_there() -> None:
    """Refusals shown to come whatever the load (the gate's pauses did not help): the limit returns to where it was
    before their cuts, out of slow start, and a second forgiveness without new cuts changes nothing."""
    state = LimitState(limit=44.0)
    refused = rounds(2, 30, latency=0.05, signal=Signal.BACKPRESSURE)
    cut = feed(state, refused)[-1]
    assert cut.limit < 44.0
    assert cut.before_refusals == 44.0
    forgiven = forgive(CONFIG, cut, now=10.0)
    assert forgiven.limit == 44.0
    assert not forgiven.slow_start
    assert forgiven.reason == "forgiven"
    assert forgiven.refused_level is None
    assert forgive(CONFIG, forgiven, now=11.0).limit == 44.0
    assert forgive(CONFIG, forgiven, now=11.0).reason is None


def test_adopt_takes_a_shared_value_within_bounds() -> None:
    """A limit from other processes is taken as is, clamped to the bounds; NaN is refused."""
    state = initial_state(CONFIG)
    assert adopt(CONFIG, state, 40.5).limit == 40.5
    assert adopt(CONFIG, state, 10_000).permits == 256
    assert adopt(CONFIG, state, 0).permits == 1
    with pytest.raises(ConfigError, match="limit=nan"):
        adopt(CONFIG, state, float("nan"))


def test_follow_ends_slow_start_and_regrows_as_after_a_cut_of_its_own() -> None:
    """Another process's cut to 36 ends slow start here too: answers then grow the limit as CUBIC does after a cut
    of this process's own (back to the plateau under the refused level 40, slowly), not by 2 permits each."""
    slow = feed(initial_state(CONFIG), rounds(1, 20))[-1]
    assert slow.slow_start
    followed = follow(CONFIG, slow, 36.0, now=10.0)
    assert (followed.limit, followed.slow_start, followed.decreased_at) == (36.0, False, 10.0)
    assert followed.plateau == pytest.approx(39.0)  # one under the level 36 / 0.9 that drew the refusal
    refusals = [Sample(Signal.BACKPRESSURE, 9.5, 10.0 + i * 0.01, 40) for i in range(7)]
    own = feed(slow, [*refusals, Sample(Signal.BACKPRESSURE, 10.05, 10.1, 40)])[-1]  # refused at 40 here
    assert (own.permits, own.plateau) == (32, followed.plateau)  # its own cut ends slow start: 0.81 x 40
    after = feed(followed, rounds(4, 36, start=10.0))  # two seconds of answers
    assert after[-1].permits <= 39
    assert not [s for s in after if s.reason == "slow_start"]
