"""The Retry-After gate's decision (policy/gate.py), over sequences of finished attempts: no clocks, no I/O."""

from __future__ import annotations

import pytest

from resilient_llm.errors import ConfigError
from resilient_llm.policy.gate import GatePolicy, GateState, finished, is_shut, refusals_ignore_load

POLICY = GatePolicy()


def run(state: GateState, now: float, outcomes: str, *, sent: float | None = None, in_flight: int = 20) -> GateState:
    """Attempts finishing at ``now`` in order: ``r`` refused with Retry-After 1 s, ``a`` answered."""
    for outcome in outcomes:
        refused = outcome == "r"
        at = now if sent is None else sent
        state = finished(POLICY, state, now, at, in_flight, refused, 1.0 if refused else None)
    return state


def test_a_lone_refusal_among_answers_pauses_nobody() -> None:
    """One 429 among answers is the refused call's own business: the gate stays open."""
    state = run(GateState(), 1.0, "aaaaaraaaaaraaa")
    assert not is_shut(state, 1.0)


def test_two_refusals_in_a_row_pause_every_attempt_for_the_retry_after() -> None:
    """A burst (two attempts refused one after the other) shuts the gate for the Retry-After it was told."""
    state = run(GateState(), 1.0, "aaarar")
    assert not is_shut(state, 1.0)
    state = run(state, 1.0, "r")
    assert is_shut(state, 1.5)
    assert not is_shut(state, 2.0)


def test_refusals_of_attempts_sent_before_the_pause_ended_do_not_lengthen_it() -> None:
    """The rest of a burst, coming back during the pause, is already answered by it: one burst costs one wait."""
    state = run(GateState(), 1.0, "rr")
    state = run(state, 1.5, "rrrrrr", sent=0.9)
    assert state.shut_until == 2.0


def test_a_refusal_without_retry_after_never_pauses() -> None:
    """Without Retry-After there is no wait to share: the limit and each call's backoff handle it."""
    state = GateState()
    for _ in range(10):
        state = finished(POLICY, state, 1.0, 1.0, 20, True, None)
    assert not is_shut(state, 1.0)


def test_pauses_after_which_low_load_attempts_are_answered_keep_being_used() -> None:
    """A drained token bucket: after each pause the first attempts are answered, so bursts keep pausing everyone."""
    state = GateState()
    for cycle in range(5):
        now = cycle * 2.0
        state = run(state, now, "rr")
        assert is_shut(state, now + 0.5)
        state = run(state, now + 1.05, "aaaaaaaa", sent=now + 1.0, in_flight=4)
    assert not refusals_ignore_load(state, 10.0)


def test_futile_pauses_rest_the_gate_and_tell_the_limit_to_ignore_refusals() -> None:
    """Refusals whatever the load: two pauses whose low-load attempts were refused as often as before stop pausing
    for ``rest_s`` (and the limit stops learning from refusals), then pausing is tried again."""
    state = GateState()
    for cycle in range(2):
        now = cycle * 3.0
        state = run(state, now, "rr")
        assert is_shut(state, now + 0.5)
        state = run(state, now + 1.05, "rarrarar", sent=now + 1.0, in_flight=4)
    assert refusals_ignore_load(state, 6.0)
    state = run(state, 6.0, "rrrrrr")
    assert not is_shut(state, 6.0)
    later = 4.1 + POLICY.rest_s
    assert not refusals_ignore_load(state, later)
    assert is_shut(run(state, later, "rr"), later + 0.5)


def test_attempts_sent_at_a_high_load_do_not_judge_a_pause() -> None:
    """Only attempts sent while few were in flight judge a pause: the load question is asked at a low load."""
    state = run(GateState(), 0.0, "rr")
    state = run(state, 1.05, "rrrrrrrr", sent=1.0, in_flight=50)
    assert state.judging is not None
    assert state.futile == 0


def test_a_bad_gate_policy_is_a_config_error_naming_the_accepted_values() -> None:
    """A window of 0 or a share above 1 fails at construction, saying what is accepted."""
    for bad in ({"window": 0}, {"burst_share": 1.5}, {"rest_s": -1.0}):
        with pytest.raises(ConfigError, match="burst_share in"):
            GatePolicy(**bad)
