"""The Retry-After gate: when one refused attempt pauses every attempt to its model. Pure: no clock, no I/O.

The limit layer keeps one gate per (endpoint, model). A 429 (or in-flight-budget 402) with Retry-After pauses new
attempts to the model when refusals come as a burst: at least ``burst_share`` of the last ``window`` finished attempts
refused (by default two in a row), as when a token bucket is drained or the endpoint is full. Then every queued
attempt would meet a 429 too, so one wait replaces a wasted request each. A 429 now and then among answers (an
upstream provider's hiccup: 4% of the flaky profile) pauses only the call it refused: that call waits its Retry-After
(the retry layer does), the others carry on. Two in a row, not more: refusals come back at once and free their slot
for the next queued attempt, so every further refusal a burst needs before it pauses is one more wasted request (token
bucket: 1.08-1.10 requests per call with two, 1.15-1.17 without pausing; random 60% refusals: the same throughput
either way once pausing rests).

A pause must earn its wait. When it ends, our own attempts in flight have drained, so the first ones sent then
(``judge_after`` of them, sent while at most that many were in flight) ask the endpoint at a low load: after a drained
token bucket or a full endpoint they get answers; a limiter refusing whatever the load (60% at random) refuses them as
often as ever. A pause whose low-load attempts were refused more than half as often as its burst did not help; after
``futile_limit`` of those in a row, bursts pause nobody for ``rest_s`` (then pausing is tried again), and the
concurrency limit stops learning from refusals meanwhile (``refusals_ignore_load``): they say nothing about our
load. The server's word is kept for every request it refused: a refused call never goes again before its own
Retry-After.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from resilient_llm.errors import ConfigError


@dataclass(frozen=True, slots=True)
class GatePolicy:
    window: int = 2  # finished attempts a burst is judged over: two refused in a row is a burst
    burst_share: float = 1.0  # refused share of them that makes a burst
    judge_after: int = 8  # low-load attempts sent after a pause that judge whether it helped
    futile_limit: int = 2  # pauses in a row that did not help before pausing rests
    rest_s: float = 30.0

    def __post_init__(self) -> None:
        counts = (self.window, self.judge_after, self.futile_limit)
        if min(counts) < 1 or not 0 < self.burst_share <= 1 or not 0 <= self.rest_s < math.inf:
            raise ConfigError(
                f"gate policy {self!r}: expected window, judge_after, futile_limit >= 1, burst_share in (0, 1], "
                "rest_s a finite number >= 0"
            )


@dataclass(frozen=True, slots=True)
class GateState:
    recent: tuple[bool, ...] = ()  # refused or not, of the last ``window`` attempts sent since the last pause
    shut_until: float = -math.inf  # new attempts wait until then
    burst_share: float = 0.0  # the refused share behind the pause being judged
    judging: tuple[float, float] | None = None  # attempts sent in [from, to) at a low load judge the last pause
    judged: int = 0
    judged_refused: int = 0
    futile: int = 0  # pauses in a row that did not help
    rest_until: float = -math.inf  # bursts pause nobody until then


def finished(
    policy: GatePolicy,
    state: GateState,
    now: float,
    sent: float,
    in_flight: int,
    refused: bool,
    retry_after: float | None,
) -> GateState:
    """The gate after an attempt sent at ``sent`` with ``in_flight`` attempts in flight (itself included) finished at
    ``now``; ``retry_after`` is what a refusal said."""
    judging = state.judging
    if judging is not None and judging[0] <= sent < judging[1] and in_flight <= policy.judge_after:
        state = _judged(policy, state, now, state.judged + 1, state.judged_refused + refused)
    if sent < state.shut_until:
        return state  # sent before the last pause ended: part of the burst that pause answers
    recent = (*state.recent, refused)[-policy.window :]
    state = dataclasses.replace(state, recent=recent)
    share = sum(recent) / policy.window
    if not refused or not retry_after or retry_after < 0 or now < state.rest_until or share < policy.burst_share:
        return state
    until = now + retry_after
    if state.judging is None or now - state.judging[1] > policy.rest_s:  # or a sample that never filled up
        return dataclasses.replace(
            state, recent=(), shut_until=until, burst_share=share, judging=(until, math.inf), judged=0, judged_refused=0
        )
    # The last pause is still being judged: the attempts sent since it ended, until this one began, are its sample.
    judging = (state.judging[0], min(state.judging[1], now))
    return dataclasses.replace(state, recent=(), shut_until=until, judging=judging)


def _judged(policy: GatePolicy, state: GateState, now: float, judged: int, refused: int) -> GateState:
    if judged < policy.judge_after:
        return dataclasses.replace(state, judged=judged, judged_refused=refused)
    futile = 0 if refused / judged <= state.burst_share / 2 else state.futile + 1
    rest_until = now + policy.rest_s if futile >= policy.futile_limit else state.rest_until
    return dataclasses.replace(state, judging=None, futile=futile % policy.futile_limit, rest_until=rest_until)


def is_shut(state: GateState, now: float) -> bool:
    return now < state.shut_until


def refusals_ignore_load(state: GateState, now: float) -> bool:
    """Pauses were shown not to help (refusals come whatever the load): the concurrency limit should not learn from
    them either, or it falls towards 1 for nothing."""
    return now < state.rest_until
