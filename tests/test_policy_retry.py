"""Pure retry decisions: no server, no clock."""

from __future__ import annotations

import email.utils
import math
import random

import pytest

from resilient_llm.errors import (
    ConnectionFailed,
    ErrorResponse,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    Scope,
    is_caller_mistake,
    is_retryable,
)
from resilient_llm.policy.retry import (
    MAX_ATTEMPTS,
    QUICK_DELAY_S,
    Tally,
    backoff_delay,
    out_of_retries,
    quick_retry_allowed,
    retry_wait,
)
from resilient_llm.protocol import parse_retry_after


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectionFailed("reset", kind="connection_reset"), True),
        (ProviderTimeout("slow", kind="read_timeout"), True),
        (MalformedResponse("no choices", kind="no_choices"), True),
        (ErrorResponse("x", kind="http_408", status=408), True),
        (ErrorResponse("x", kind="http_409", status=409), True),
        (ErrorResponse("x", kind="http_429", status=429), True),
        (ErrorResponse("x", kind="http_500", status=500), True),
        (ErrorResponse("x", kind="http_502", status=502), True),
        (ErrorResponse("x", kind="http_503", status=503), True),
        (ErrorResponse("x", kind="http_400", status=400), False),
        (ErrorResponse("x", kind="http_401", status=401), False),
        (ErrorResponse("x", kind="http_403", status=403), False),
        (ErrorResponse("x", kind="http_404", status=404), False),
        (ErrorResponse("x", kind="http_422", status=422), False),
        (ErrorResponse("x", kind="http_402", status=402), False),
        (ErrorResponse("x", kind="http_402", status=402, code="in_flight_budget_exhausted"), True),
        (ErrorResponse("x", kind="http_402", status=402, retry_after=3.0), True),
        (ErrorResponse("x", kind="error_in_body", status=None), True),
        (ErrorResponse("x", kind="error_in_body", status=400), False),
        (ValueError("not ours"), False),
    ],
)
def test_is_retryable(error: BaseException, retryable: bool) -> None:
    """Transient failures are retried, caller mistakes and final 402s are not."""
    assert is_retryable(error) is retryable


def test_caller_mistakes_are_the_4xx_a_caller_can_fix() -> None:
    """400/401/403/404/422 are caller mistakes; 429 and transport faults are not."""
    assert is_caller_mistake(ErrorResponse("x", kind="http_401", status=401))
    assert not is_caller_mistake(ErrorResponse("x", kind="http_429", status=429))
    assert not is_caller_mistake(ConnectionFailed("x", kind="connect_error"))


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    """The n-th delay lies in [0, min(cap, base * 2**(n-1))] and spreads over that range."""
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (20, 30.0)]:
        delays = [backoff_delay(attempt, base=1.0, cap=30.0, rng=rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling
        assert min(delays) < 0.2 * ceiling


def test_retry_after_is_obeyed_never_shortened() -> None:
    """A Retry-After wins over backoff and the wait is never shorter than asked."""
    rng = random.Random(1)
    error = ErrorResponse("slow down", kind="http_429", status=429, retry_after=7.0)
    waits = [retry_wait(1, error, base=1.0, cap=30.0, retry_after_max=60.0, rng=rng) for _ in range(200)]
    assert all(7.0 <= w <= 7.7 for w in waits)


def test_retry_after_beyond_the_cap_ends_retrying() -> None:
    """A Retry-After longer than allowed gives an infinite wait (stop), never a shortened one."""
    error: ProviderError = ErrorResponse("quota", kind="http_429", status=429, retry_after=3600.0)
    assert retry_wait(1, error, base=1.0, cap=30.0, retry_after_max=120.0, rng=random.Random()) == math.inf


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "5"}, 5.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"Retry-After": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "junk", "Retry-After": "9"}, 9.0),
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Seconds, milliseconds and garbage are read as OpenRouter and proxies send them."""
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    """An HTTP date is converted to seconds from now; a past date means no wait."""
    now = 1_800_000_000.0
    future = email.utils.formatdate(now + 30, usegmt=True)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"Retry-After": future}, now=now) == pytest.approx(30.0)
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0


@pytest.mark.parametrize("header", ["0", "past date"])
def test_a_retry_after_of_no_time_still_backs_off(header: str) -> None:
    """A Retry-After of 0 or a date already past is no licence to hammer: the waits grow like the backoff."""
    now = 1_800_000_000.0
    value = email.utils.formatdate(now - 30, usegmt=True) if header == "past date" else header
    retry_after = parse_retry_after({"Retry-After": value}, now=now)
    assert retry_after == 0.0
    error = ErrorResponse("slow down", kind="http_429", status=429, retry_after=retry_after)
    rng = random.Random(3)
    for _ in range(20):
        total = sum(retry_wait(n, error, base=0.5, cap=8.0, retry_after_max=60.0, rng=rng) for n in range(1, 11))
        assert total > 5.0  # ten attempts take seconds, not the milliseconds an obeyed 0 gives


def test_a_short_retry_after_is_never_shortened_by_the_backoff_floor() -> None:
    """Below the backoff base the wait is the larger of the backoff and what the server asked."""
    error = ErrorResponse("slow down", kind="http_429", status=429, retry_after=0.3)
    rng = random.Random(5)
    assert all(retry_wait(1, error, base=0.5, cap=8.0, retry_after_max=60.0, rng=rng) >= 0.3 for _ in range(200))


RESET = ConnectionFailed("reset", kind="connection_reset")
REFUSED = ErrorResponse("slow down", kind="http_429", status=429, retry_after=1.0)
NO_PROVIDER = ErrorResponse("no provider", kind="http_503", status=503, scope=Scope.REQUEST)


def tally_of(*errors: ProviderError) -> Tally:
    tally = Tally()
    for error in errors:
        tally = tally.after(error)
    return tally


def test_the_tally_counts_failures_but_not_backpressure() -> None:
    """Attempts, counted failures and backpressure are kept apart."""
    assert tally_of(RESET, REFUSED, RESET, REFUSED) == Tally(attempts=4, counted=2, backpressure=2)


def test_a_quick_retry_waits_milliseconds_and_still_obeys_a_retry_after() -> None:
    """With the budget's leave, the wait is a few jittered ms instead of the backoff; a Retry-After still wins."""
    rng = random.Random(2)
    quick = [retry_wait(6, RESET, base=0.5, cap=8.0, retry_after_max=60.0, rng=rng, quick=True) for _ in range(200)]
    assert all(0.0 <= w <= QUICK_DELAY_S for w in quick)
    assert len(set(quick)) > 100  # jittered: concurrent retries of one fault spread out
    busy = ErrorResponse("busy", kind="http_503", status=503, retry_after=2.0)
    assert 2.0 <= retry_wait(1, busy, base=0.5, cap=8.0, retry_after_max=60.0, rng=rng, quick=True) <= 2.2


def test_only_isolated_faults_without_a_hint_may_spend_the_budget() -> None:
    """Backpressure and any failure with a Retry-After wait for it: neither gets a quick retry."""
    assert quick_retry_allowed(RESET)
    assert quick_retry_allowed(MalformedResponse("no choices", kind="no_choices"))
    assert not quick_retry_allowed(REFUSED)
    assert not quick_retry_allowed(ErrorResponse("busy", kind="http_503", status=503, retry_after=2.0))


def test_a_request_scope_failure_is_never_retried() -> None:
    """A failure that will repeat for this request (here a 503 "no provider") is not retryable, whatever its status."""
    assert not is_retryable(NO_PROVIDER)
    assert is_retryable(ErrorResponse("busy", kind="http_503", status=503))


@pytest.mark.parametrize(
    ("errors", "num_retries", "extend", "stops"),
    [
        ([RESET] * 3, 2, False, True),  # out of budget: num_retries bounds the call
        ([RESET] * 2, 2, False, False),
        ([RESET] * 3, 2, True, False),  # the budget has a surplus: an unlucky call keeps trying
        ([RESET] * 40, 2, True, False),
        ([RESET, RESET, RESET, REFUSED], 2, False, False),  # backpressure never spends num_retries
        ([REFUSED] * 50, 0, False, False),
    ],
)
def test_out_of_retries(errors: list[ProviderError], num_retries: int, extend: bool, stops: bool) -> None:
    """num_retries ends a call unless the budget's surplus pays for more; backpressure is never counted."""
    assert out_of_retries(errors[-1], tally_of(*errors), num_retries, extend=extend) is stops


def test_the_hard_ceiling_ends_any_call() -> None:
    """Whatever the mix and the budget, a call ends after MAX_ATTEMPTS attempts."""
    assert out_of_retries(RESET, tally_of(*[RESET] * MAX_ATTEMPTS), 5, extend=True)
    assert out_of_retries(REFUSED, tally_of(*[REFUSED] * MAX_ATTEMPTS), 5, extend=False)
