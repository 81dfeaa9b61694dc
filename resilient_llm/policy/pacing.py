"""Pacing: at a rate limit, send no faster than the endpoint lets through. Pure: no clock, no I/O.

A token bucket (a key's requests per second or minute) admits a rate, not a number in flight. 50 requests/s with
50 ms answers is 2.5 attempts in flight, finer than a concurrency limit can hold, and the limit's probes climb back
towards the level refused last time while the bucket refills. So every gate pause refills the bucket, the next
burst drains it, and the attempts in flight when it empties are refused: 8-20 per cycle in the simulation's late-429
bucket, 1.19 requests per call.

The rate is measured over a gate cycle: from the end of one pause (or the first attempt: a bucket starts full) to the
end of the next, the answers to the attempts it sent, per second, the pause included (a bucket refills in it, so
over a cycle what was spent is what was refilled) and idle spells left out (a trainer between batches asked for
nothing: that is not the endpoint's rate). It is measured when its pause ends, once the attempts sent before the
pause have come back (a 429 sent at once pauses while the cycle's answers are still on their way).

Two cycles in a row whose rates agree within ``agreement`` measure a rate limit (BBR's policer test: a bucket gives
the same rate cycle after cycle; pauses that come at random, refusals of a flaky limiter in a row, end cycles of any
length), when the gate judged its pauses to help (refusals follow our load) and the cycle sustained at most
``limit_share`` of the concurrency limit in flight (answer seconds per second, Little's law: a capacity edge keeps
its limit in use, a bucket sustains a fraction of it, 2.6 in flight under a limit of 66). Without the agreement, a
limiter refusing 15% at random was paced down to nothing in the simulation. Attempts then go out at the two cycles'
mean rate at most, through a bucket of our own holding ``burst`` attempts, and the rate rises by ``growth_per_s``
of itself each second: a bucket that grew, or a rate measured low, is found again. A refusal while pacing means the
rate grew past the endpoint's: it is cut to ``backoff`` of what it grew to, once per round trip, never below
``floor_share`` of the measured rate (a stray 429 among paced answers cannot pace a model down to nothing). A pause
found not to help (refusals at random) ends pacing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from resilient_llm.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PacePolicy:
    agreement: float = 0.125  # two cycles in a row whose rates differ by at most this share measure a rate limit
    limit_share: float = 0.5  # ... when they sustained at most this share of the concurrency limit in flight
    growth_per_s: float = 0.05  # while pacing, the rate rises by this share of itself each second
    backoff: float = 0.9  # a refusal while pacing cuts the rate to this share of what it had grown to ...
    floor_share: float = 0.8  # ... but not below this share of the measured rate
    burst: float = 2.0  # attempts that may go at once after a quiet spell
    min_answers: int = 8  # a cycle with fewer answers measures nothing

    def __post_init__(self) -> None:
        shares = (self.agreement, self.limit_share, self.growth_per_s, self.floor_share)
        ok = (
            all(0 < share <= 1 for share in shares)
            and self.floor_share <= self.backoff < 1
            and 1 <= self.burst < math.inf
            and isinstance(self.min_answers, int)
            and self.min_answers >= 1
        )
        if not ok:
            raise ConfigError(
                f"pace policy {self!r}: expected agreement, limit_share, growth_per_s, floor_share in (0, 1], "
                "backoff in [floor_share, 1), burst a finite number >= 1, min_answers an integer >= 1"
            )


@dataclass(frozen=True, slots=True)
class Cycle:
    """Answers to the attempts sent from ``start`` on, and the seconds nothing was in flight or queued since then."""

    start: float
    answers: int = 0
    answer_s: float = 0.0  # their latencies added up
    idle_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Closing:
    """A cycle the gate's pause ended at ``paused``: measured once the pause ends (``until``), when the attempts
    sent before it have come back."""

    cycle: Cycle
    paused: float
    until: float
    limit: float  # the concurrency limit then
    helped: bool  # what the gate had judged of its pauses then
    previous_rate: float | None  # the rate of the cycle before it


@dataclass(frozen=True, slots=True)
class PaceState:
    rate: float | None = None  # attempts per second at most, as of ``paced_at``; None: not pacing
    paced_at: float = 0.0  # when ``rate`` was set (it grows from then)
    measured: float | None = None  # the rate limit's rate, as two cycles in a row measured it
    last_rate: float | None = None  # the last cycle's rate, whatever it said
    tokens: float = 0.0  # attempts our bucket lets go at once, as of ``refilled``
    refilled: float = -math.inf
    cycle: Cycle | None = None  # the cycle under way, from the first attempt or the last pause's end
    closing: Closing | None = None
    idle_since: float | None = None  # nothing in flight or queued since then


def _settled(policy: PacePolicy, state: PaceState, now: float) -> PaceState:
    """The state with a closing cycle measured, once its pause has ended."""
    closing = state.closing
    if closing is None or now < closing.until:
        return state
    cycle = closing.cycle
    span = closing.until - cycle.start - cycle.idle_s
    cycle_rate = cycle.answers / span if cycle.answers >= policy.min_answers and span > 0 else None
    state = dataclasses.replace(
        state,
        closing=None,
        last_rate=cycle_rate,
        tokens=0.0 if state.refilled <= closing.until else state.tokens,
        refilled=max(state.refilled, closing.until),
    )
    if not closing.helped:
        return dataclasses.replace(state, rate=None, measured=None)  # refusals come at random: no rate to keep
    previous = closing.previous_rate
    if cycle_rate is None or previous is None or abs(cycle_rate - previous) > policy.agreement * previous:
        return state
    if state.rate is None and cycle.answer_s / span > policy.limit_share * closing.limit:
        return state  # it kept the limit in use: a capacity edge, which the limit finds
    measured = (cycle_rate + previous) / 2
    return dataclasses.replace(state, rate=measured, paced_at=closing.until, measured=measured)


def rate_at(policy: PacePolicy, state: PaceState, now: float) -> float | None:
    """Attempts per second allowed at ``now``; None while not pacing."""
    return _rate(policy, _settled(policy, state, now), now)


def _rate(policy: PacePolicy, state: PaceState, now: float) -> float | None:
    """``rate_at`` of a state already settled at ``now``."""
    if state.rate is None:
        return None
    return state.rate * (1.0 + policy.growth_per_s * max(0.0, now - state.paced_at))


def _tokens(policy: PacePolicy, state: PaceState, rate: float, now: float) -> float:
    return min(policy.burst, state.tokens + max(0.0, now - state.refilled) * rate)


def wait_s(policy: PacePolicy, state: PaceState, now: float) -> float:
    """Seconds before the next attempt may go (0: now)."""
    state = _settled(policy, state, now)
    rate = _rate(policy, state, now)
    if rate is None:
        return 0.0
    tokens = _tokens(policy, state, rate, now)
    return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate


def sent(policy: PacePolicy, state: PaceState, now: float) -> PaceState:
    """An attempt went out at ``now``; call after ``wait_s`` said 0."""
    state = _busy(_settled(policy, state, now), now)
    if state.cycle is None and state.closing is None:
        state = dataclasses.replace(state, cycle=Cycle(now))  # the first cycle: an endpoint's bucket starts full
    rate = _rate(policy, state, now)
    if rate is None:
        return state
    return dataclasses.replace(state, tokens=_tokens(policy, state, rate, now) - 1.0, refilled=now)


def answered(state: PaceState, now: float, latency: float) -> PaceState:
    """An attempt sent at ``now - latency`` got an answer at ``now``: counted in the cycle it was sent in."""
    at = now - latency
    if state.cycle is not None and at >= state.cycle.start:
        return dataclasses.replace(state, cycle=_count(state.cycle, latency))
    closing = state.closing
    if closing is not None and closing.cycle.start <= at < closing.paused:
        return dataclasses.replace(state, closing=dataclasses.replace(closing, cycle=_count(closing.cycle, latency)))
    return state


def _count(cycle: Cycle, latency: float) -> Cycle:
    return dataclasses.replace(cycle, answers=cycle.answers + 1, answer_s=cycle.answer_s + latency)


def refused(policy: PacePolicy, state: PaceState, now: float, sent_at: float) -> PaceState:
    """An attempt sent at ``sent_at`` was refused at ``now``: while pacing, the rate had grown past the endpoint's,
    so it is cut to ``backoff`` of what it was and grows again from there; once per round trip (attempts sent
    before the last cut say nothing about the rate since)."""
    state = _settled(policy, state, now)
    rate = _rate(policy, state, now)
    if rate is None or sent_at < state.paced_at:
        return state
    floor = policy.floor_share * (state.measured or rate)
    return dataclasses.replace(state, rate=max(floor, policy.backoff * rate), paced_at=now)


def idle(state: PaceState, now: float) -> PaceState:
    """Nothing is in flight or queued from ``now``."""
    return state if state.idle_since is not None else dataclasses.replace(state, idle_since=now)


def _busy(state: PaceState, now: float) -> PaceState:
    if state.idle_since is None:
        return state
    cycle = state.cycle
    if cycle is not None and now > cycle.start:
        cycle = dataclasses.replace(cycle, idle_s=cycle.idle_s + now - max(state.idle_since, cycle.start))
    return dataclasses.replace(state, cycle=cycle, idle_since=None)


def paused(policy: PacePolicy, state: PaceState, now: float, until: float, limit: float, helped: bool) -> PaceState:
    """The gate paused every attempt from ``now`` until ``until``, with the concurrency limit at ``limit`` and
    ``helped`` what the gate judged of its last pause. The cycle under way closes (measured when the pause ends:
    paced at its rate when it was a rate limit's; pacing stops when pauses do not help) and the next begins at
    ``until``."""
    state = _busy(_settled(policy, state, now), now)
    closing = state.closing
    if state.cycle is not None:
        closing = Closing(state.cycle, now, until, limit, helped, state.last_rate)
    return dataclasses.replace(state, cycle=Cycle(until), closing=closing)
