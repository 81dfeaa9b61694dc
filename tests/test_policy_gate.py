"""The Retry-After gate's decision (policy/gate.py), over sequences of finished attempts: no clocks, no I/O."""

from __future__ import annotations

import pytest

from resilient_llm.errors import ConfigError
from resilient_llm.policy.gate import (
    GatePolicy,
    GateState,
    finished,
    is_shut,
    refusals_ignore_load,
    sending,
    shut,
    shut_so_far,
    unjudged,
)

POLICY = GatePolicy()


def run(state: GateState, now: float, outcomes: str, *, sent: float | None = None) -> GateState:
    """Attempts all sent at ``sent`` (default ``now``), then finishing at ``now`` in order: ``r`` refused with
    Retry-After 1 s, ``a`` answered."""
    at = now if sent is None else sent
    judges = []
    for _ in outcomes:
        state, judge = sending(POLICY, state, at)
        judges.append(judge)
    for outcome, judge in zip(outcomes, judges, strict=True):
        refused = outcome == "r"
        state = finished(POLICY, state, now, at, refused, 1.0 if refused else None, judge)
    return state


def test_a_lone_refusal_among_answers_pauses_nobody() -> None:
    """One 429 among answers is the refused call's own business: the gate stays open."""
    state = run(GateState(), 1.0, "aaaaaraaaaaraaa")
    assert not is_shut(state, 1.0)


def test_three_refusals_in_a_row_pause_every_attempt_for_the_retry_after() -> None:
    """A burst (three attempts refused one after the other; two in a row come by chance at 4% random refusals)
    shuts the gate for the Retry-After it was told."""
    state = run(GateState(), 1.0, "aaarrarr")
    assert not is_shut(state, 1.0)
    state = run(state, 1.0, "r")
    assert is_shut(state, 1.5)
    assert not is_shut(state, 2.0)


def test_the_limits_probes_past_a_known_edge_pause_nobody_but_count_as_refused() -> None:
    """Refusals the concurrency limit drew probing past a capacity edge it knows (``probe``) are its cut's to
    answer: any number in a row leave the gate open, and they still raise the refused share in general."""
    state = GateState()
    for _ in range(5):
        state = finished(POLICY, state, 1.0, 1.0, True, 1.0, probe=True)
    assert not is_shut(state, 1.0)
    assert state.background > 0.1
    assert is_shut(run(state, 1.0, "rrr"), 1.5)  # refusals that are not probes still pause


def test_refusals_of_attempts_sent_before_the_pause_ended_do_not_lengthen_it() -> None:
    """The rest of a burst, coming back during the pause, is already answered by it: one burst costs one wait."""
    state = run(GateState(), 1.0, "rrr")
    state = run(state, 1.5, "rrrrrr", sent=0.9)
    assert state.shut_until == 2.0


def test_the_seconds_shut_add_up_over_pauses_and_overlaps_count_once() -> None:
    """A burst's pause and a longer wait laid over it (a spent quota) add up to the time nothing could be sent,
    counted up to now while a pause is under way."""
    state = run(GateState(), 1.0, "rrr")  # shut 1.0 .. 2.0
    assert shut_so_far(state, 1.5) == pytest.approx(0.5)
    state = shut(state, 1.5, 3.0)  # extended to 3.0: the overlap counts once
    assert shut_so_far(state, 2.0) == pytest.approx(1.0)
    assert shut_so_far(state, 10.0) == pytest.approx(2.0)
    assert shut(state, 10.0, 9.0) is state  # a wait already over changes nothing


def test_a_refusal_without_retry_after_never_pauses() -> None:
    """Without Retry-After there is no wait to share: the limit and each call's backoff handle it."""
    state = GateState()
    for _ in range(10):
        state = finished(POLICY, state, 1.0, 1.0, True, None)
    assert not is_shut(state, 1.0)


def test_pauses_after_which_attempts_are_answered_keep_being_used() -> None:
    """A drained token bucket: after each pause the first attempts are answered, so bursts keep pausing everyone."""
    state = run(GateState(), 0.0, "aaaarrr")
    for cycle in range(5):
        now = cycle * 2.0
        state = run(state, now, "rrr")
        assert is_shut(state, now + 0.5)
        state = run(state, now + 1.05, "a" * POLICY.judge_after, sent=now + 1.0)
    assert not refusals_ignore_load(state, 10.0)


def test_futile_pauses_rest_the_gate_and_tell_the_limit_to_ignore_refusals() -> None:
    """Refusals whatever the load: two pauses after which attempts were refused as often as before stop pausing
    for ``rest_s`` (and the limit stops learning from refusals), then pausing is tried again."""
    state = run(GateState(), 0.0, "ra" * 20)
    for cycle in range(2):
        now = 1.0 + cycle * 3.0
        state = run(state, now, "rrr")
        assert is_shut(state, now + 0.5)
        state = run(state, now + 1.05, "rarrarar" * 2, sent=now + 1.0)
    assert refusals_ignore_load(state, 7.0)
    state = run(state, 7.0, "rrrrrr")
    assert not is_shut(state, 7.0)
    later = 5.1 + POLICY.rest_s
    assert not refusals_ignore_load(state, later)
    assert is_shut(run(state, later, "rrr"), later + 0.5)


def test_each_rest_after_futile_pauses_again_is_twice_as_long() -> None:
    """Random refusals for good: after the first rest, two more futile pauses rest twice as long (the probing costs
    two pauses each time); a pause that helps starts over from ``rest_s``."""

    def futile_pair(state: GateState, at: float) -> GateState:
        for cycle in range(2):
            now = at + cycle * 3.0
            state = run(state, now, "rrr")
            state = run(state, now + 1.05, "rarrarar" * 2, sent=now + 1.0)
        return state

    state = futile_pair(run(GateState(), 0.0, "ra" * 20), 1.0)
    assert state.rest_until == pytest.approx(1.0 + 4.05 + POLICY.rest_s)  # judged 4.05 s after the first burst
    again = state.rest_until + 1.0
    state = futile_pair(state, again)
    assert state.rest_until == pytest.approx(again + 4.05 + 2 * POLICY.rest_s)
    assert state.rests == 2
    state = run(state, state.rest_until + 1.0, "rrr")
    state = run(state, state.shut_until + 0.05, "a" * POLICY.judge_after, sent=state.shut_until)
    assert state.rests == 0


def test_no_burst_pauses_again_until_the_last_pause_is_judged() -> None:
    """Bursts among the attempts judging a pause do not pause again: the judges must add up, or random refusals
    keep the gate shut (a new burst came three attempts after each pause)."""
    state = run(GateState(), 0.0, "rrr")
    state = run(state, 1.05, "rrr", sent=1.0)
    assert not is_shut(state, 1.1)
    assert state.judged == 3


def test_pauses_are_judged_by_the_attempts_sent_first_not_the_first_to_finish() -> None:
    """After a pause the first attempts sent are answered (slowly) while later ones are refused (at once): the
    quick refusals do not judge it; a judge that ends otherwise (a lost hedge) hands its place to the next one."""
    state = run(GateState(), 0.0, "rrr")
    judges = []
    for _ in range(POLICY.judge_after + 8):
        state, judge = sending(POLICY, state, 1.0)
        judges.append(judge)
    assert judges == [True] * POLICY.judge_after + [False] * 8
    for _ in range(8):
        state = finished(POLICY, state, 1.01, 1.0, True, 1.0, False)  # the late ones' refusals
    state = unjudged(state)
    state, judge = sending(POLICY, state, 1.02)
    assert judge
    for _ in range(POLICY.judge_after):
        state = finished(POLICY, state, 1.5, 1.0, False, None, True)
    assert state.judging_from is None
    assert state.futile == 0


def test_a_pause_never_judged_is_forgotten_after_the_rest_period() -> None:
    """Too few attempts after a pause to judge it (traffic stopped): a later burst pauses again."""
    state = run(GateState(), 0.0, "rrr")
    later = 2.0 + POLICY.rest_s
    assert is_shut(run(state, later, "rrr", sent=later), later + 0.5)


def test_a_bad_gate_policy_is_a_config_error_naming_the_accepted_values() -> None:
    """A window of 0 or a share above 1 fails at construction, saying what is accepted."""
    for bad in ({"window": 0}, {"burst_share": 1.5}, {"rest_s": -1.0}, {"helped_share": 1.0}, {"rest_max_s": 1.0}):
        with pytest.raises(ConfigError, match="burst_share in"):
            GatePolicy(**bad)
