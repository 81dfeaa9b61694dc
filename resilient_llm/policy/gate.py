"""The Retry-After gate: when one refused attempt pauses every attempt to its model. Pure: no clock, no I/O.

The limit layer keeps one gate per (endpoint, model). A 429 (or in-flight-budget 402) with Retry-After pauses new
attempts to the model when refusals come as a burst: at least ``burst_share`` of the last ``window`` finished attempts
refused (by default three in a row), as when a token bucket is drained or the endpoint is full. Then every queued
attempt would meet a 429 too, so one wait replaces a wasted request each. A 429 now and then among answers (an
upstream provider's hiccup: 4% of the flaky profile) pauses only the call it refused: that call waits its Retry-After
(the retry layer does), the others carry on. Three in a row: at 4% random refusals two in a row come about once in a
judge phase of 500 attempts, and the pause they drew held every call of a flaky phase for 1 s of its 5.5 s; three
come 25 times less often. Each refusal a burst needs before it pauses is one more wasted request when refusals come
back at once (a token bucket: about one per burst); when they come after an answer's latency, every attempt in
flight is refused by then anyway.

A pause must earn its wait. The first ``judge_after`` attempts sent after it ends (``sending`` marks them) judge it,
and no burst pauses again until they have: judged in the order they were sent, not finished, since refusals come back
before answers do (a capacity halving read as futile on its refusals alone); after a drained token bucket or a full
endpoint they get answers; a limiter refusing whatever the load (60% at random) refuses them as often as ever. A
pause helped when its judges were refused at most half as often as attempts are in general (``background``, at least
``helped_share``). Judged without pausing in between: under random 60% refusals a new burst came three attempts after
each pause, the judges never added up, and the gate stayed shut 95% of a 62 s judge phase (40 pauses). After
``futile_limit`` futile pauses in a row, bursts pause nobody for ``rest_s``, twice as long each time pausing is found
futile again without a pause helping in between (up to ``rest_max_s``; then pausing is tried again), and the
concurrency limit stops learning from refusals meanwhile and takes back the cuts they made
(``refusals_ignore_load``): they say nothing about our load. The server's word is kept for every request it refused:
a refused call never goes again before its own Retry-After. Refusals the concurrency limit draws probing past a
capacity edge it already knows (``probe``) make no burst: the limit's cut answers them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from resilient_llm.errors import ConfigError

BACKGROUND_WEIGHT = 1 / 32  # of the newest attempt in the background refused share


@dataclass(frozen=True, slots=True)
class GatePolicy:
    window: int = 3  # finished attempts a burst is judged over: three refused in a row is a burst
    burst_share: float = 1.0  # refused share of them that makes a burst
    judge_after: int = 16  # attempts sent after a pause that judge whether it helped
    helped_share: float = 0.1  # judges refused at most this share (or half the background share): it helped
    futile_limit: int = 2  # pauses in a row that did not help before pausing rests
    rest_s: float = 30.0
    rest_max_s: float = 600.0  # the longest rest, after futile pauses again and again

    def __post_init__(self) -> None:
        counts = (self.window, self.judge_after, self.futile_limit)
        shares_ok = 0 < self.burst_share <= 1 and 0 <= self.helped_share < 1
        rests_ok = 0 <= self.rest_s <= self.rest_max_s < math.inf
        if min(counts) < 1 or not shares_ok or not rests_ok:
            raise ConfigError(
                f"gate policy {self!r}: expected window, judge_after, futile_limit >= 1, burst_share in (0, 1], "
                "helped_share in [0, 1), rest_s and rest_max_s finite numbers with 0 <= rest_s <= rest_max_s"
            )


@dataclass(frozen=True, slots=True)
class GateState:
    recent: tuple[bool, ...] = ()  # refused or not, of the last ``window`` attempts sent since the last pause
    shut_until: float = -math.inf  # new attempts wait until then
    shut_s: float = 0.0  # seconds of every pause so far, added up (those under way to their end)
    background: float = 0.0  # refused share of finished attempts, a moving average
    judging_from: float | None = None  # attempts sent from then on judge the last pause
    judges_sent: int = 0  # judges ``sending`` handed out for the last pause
    judged: int = 0
    judged_refused: int = 0
    futile: int = 0  # pauses in a row that did not help
    rest_until: float = -math.inf  # bursts pause nobody until then
    rests: int = 0  # rests in a row, with no pause that helped between them
    helped: bool = False  # whether the last judged pause helped (refusals come by rate: a token bucket)


def sending(policy: GatePolicy, state: GateState, now: float) -> tuple[GateState, bool]:
    """An attempt goes out at ``now``: the gate, and whether the attempt is one of the judges of the last pause."""
    if state.judging_from is None or now < state.judging_from or state.judges_sent >= policy.judge_after:
        return state, False
    if now - state.judging_from > policy.rest_s:
        return state, False  # too late to judge it (``finished`` forgets it)
    return dataclasses.replace(state, judges_sent=state.judges_sent + 1), True


def unjudged(state: GateState) -> GateState:
    """A judge ended without an answer or a refusal (a hedge lost, the call gave up): the next attempt judges."""
    return dataclasses.replace(state, judges_sent=max(state.judged, state.judges_sent - 1))


def finished(
    policy: GatePolicy,
    state: GateState,
    now: float,
    sent: float,
    refused: bool,
    retry_after: float | None,
    judge: bool = False,
    probe: bool = False,
) -> GateState:
    """The gate after an attempt sent at ``sent`` finished at ``now``; ``retry_after`` is what a refusal said,
    ``judge`` what ``sending`` said of the attempt, and ``probe`` whether it was refused as the concurrency limit's
    probe past a known capacity edge (``concurrency.probes_the_edge``: the limit's cut answers it, not a pause)."""
    state = dataclasses.replace(state, background=state.background + BACKGROUND_WEIGHT * (refused - state.background))
    if judge and state.judging_from is not None:
        return _judged(policy, state, now, state.judged + 1, state.judged_refused + refused)
    if sent < state.shut_until:
        return state  # sent before the last pause ended: part of the burst that pause answers
    if state.judging_from is not None:
        if now - state.judging_from <= policy.rest_s:
            return state  # no pause until the last one is judged
        state = dataclasses.replace(state, judging_from=None)  # too few attempts to judge it: forget the pause
    if refused and probe:
        return state
    recent = (*state.recent, refused)[-policy.window :]
    state = dataclasses.replace(state, recent=recent)
    if not refused or not retry_after or retry_after < 0 or now < state.rest_until:
        return state
    if sum(recent) < policy.burst_share * policy.window:
        return state
    state = shut(state, now, now + retry_after)
    until = state.shut_until
    return dataclasses.replace(state, recent=(), judging_from=until, judges_sent=0, judged=0, judged_refused=0)


def _judged(policy: GatePolicy, state: GateState, now: float, judged: int, refused: int) -> GateState:
    if judged < policy.judge_after:
        return dataclasses.replace(state, judged=judged, judged_refused=refused)
    helped = refused / judged <= max(policy.helped_share, state.background / 2)
    futile = 0 if helped else state.futile + 1
    rests = 0 if helped else state.rests
    rest_until = state.rest_until
    if futile >= policy.futile_limit:
        rest_until = now + min(policy.rest_max_s, policy.rest_s * 2.0**rests)
        rests += 1
    return dataclasses.replace(
        state,
        judging_from=None,
        futile=futile % policy.futile_limit,
        rest_until=rest_until,
        rests=rests,
        helped=helped,
    )


def shut(state: GateState, now: float, until: float) -> GateState:
    """The gate kept shut until ``until`` at least (a pause, or a spent quota's wait)."""
    if until <= max(now, state.shut_until):
        return state
    return dataclasses.replace(state, shut_until=until, shut_s=state.shut_s + until - max(now, state.shut_until))


def is_shut(state: GateState, now: float) -> bool:
    return now < state.shut_until


def shut_so_far(state: GateState, now: float) -> float:
    """Seconds the gate has been shut up to ``now``, all pauses added up: time in which nothing could be sent."""
    return state.shut_s - max(0.0, state.shut_until - now)


def refusals_ignore_load(state: GateState, now: float) -> bool:
    """Pauses were shown not to help (refusals come whatever the load): the concurrency limit should not learn from
    them either, or it falls towards 1 for nothing."""
    return now < state.rest_until
