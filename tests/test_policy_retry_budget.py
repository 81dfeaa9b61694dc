"""The retry budget alone (policy/retry_budget.py): deposits, withdrawals and their expiry over simulated time."""

from __future__ import annotations

import random

from resilient_llm.errors import ConnectionFailed, ProviderTimeout
from resilient_llm.policy.retry_budget import (
    QUICK_RETRY_COST,
    TIMEOUT_RETRY_COST,
    BudgetRules,
    RetryBudget,
    retry_cost,
)

RULES = BudgetRules(ratio=0.5, min_per_s=10.0, window_s=10.0)


def test_the_reserve_serves_a_process_that_makes_few_calls() -> None:
    """With no calls yet, min_per_s * window_s quick retries are allowed, then no more."""
    budget = RetryBudget(RULES)
    granted = 0
    while budget.has_room(5.0, 1.0):
        budget.withdraw(5.0, 1.0)
        granted += 1
    assert granted == 100


def test_each_call_earns_ratio_quick_retries() -> None:
    """1000 calls at ratio 0.5 add 500 tokens to the reserve's 100."""
    budget = RetryBudget(RULES)
    for _ in range(1000):
        budget.deposit(3.0)
    assert budget.balance(3.0) == 600.0


def test_deposits_and_withdrawals_expire_after_the_window() -> None:
    """What happened more than window_s ago no longer counts, either way."""
    budget = RetryBudget(RULES)
    for _ in range(100):
        budget.deposit(0.0)
    budget.withdraw(0.5, 100.0)
    assert budget.balance(0.5) == 50.0
    assert budget.balance(9.9) == 50.0
    assert budget.balance(10.5) == 100.0  # both slices expired: the reserve alone


def test_a_low_failure_share_never_runs_the_budget_dry() -> None:
    """20 calls a second for 100 s, 30% of attempts failing (the flaky profile): every retry is granted at once."""
    rng = random.Random(4)
    budget = RetryBudget(RULES)
    refused = granted = 0
    for tick in range(2000):
        now = tick * 0.05
        budget.deposit(now)
        while rng.random() < 0.3:  # this call's attempts fail until one succeeds
            if budget.has_room(now, 1.0):
                budget.withdraw(now, 1.0)
                granted += 1
            else:
                refused += 1
                break
    assert granted > 700
    assert refused == 0


def test_a_high_failure_share_is_throttled_and_recovers_when_failures_stop() -> None:
    """When most attempts fail, retries are held to about ratio per call; once failures stop the budget refills."""
    budget = RetryBudget(BudgetRules(ratio=0.5, min_per_s=0.0, window_s=10.0))
    granted = 0
    for tick in range(1000):  # 10 calls a second for 100 s, each wanting 3 retries
        now = tick * 0.1
        budget.deposit(now)
        for _ in range(3):
            if budget.has_room(now, 1.0):
                budget.withdraw(now, 1.0)
                granted += 1
    assert granted <= 0.5 * 1000 + 1
    assert not budget.has_room(99.9, 1.0)
    for tick in range(100):  # a healthy stretch: calls that need no retries
        budget.deposit(100.0 + tick * 0.1)
    assert budget.has_room(110.0, 1.0)


def test_a_timeout_costs_twice_a_reset() -> None:
    """A timeout says more about the endpoint's load: its quick retry takes two tokens."""
    assert retry_cost(ConnectionFailed("reset", kind="connection_reset")) == QUICK_RETRY_COST
    assert retry_cost(ProviderTimeout("slow", kind="read_timeout")) == TIMEOUT_RETRY_COST == 2 * QUICK_RETRY_COST


def test_only_an_earned_surplus_extends_a_call_beyond_its_retries() -> None:
    """The reserve allows quick retries but no surplus: a lone failing call is not bad luck. Calls that succeed earn
    one; their retries spend it."""
    budget = RetryBudget(RULES)
    assert budget.has_room(0.0, 1.0)
    assert not budget.has_surplus(0.0, 1.0)
    for _ in range(10):
        budget.deposit(0.0)
    assert budget.has_surplus(0.0, 5.0)
    budget.withdraw(0.0, 5.0)
    assert not budget.has_surplus(0.0, 1.0)
    assert budget.has_room(0.0, 1.0)


def test_quick_retries_stop_while_failures_outnumber_answers() -> None:
    """Forty calls meeting a dead endpoint at once: quick retries stop after failure_margin more failures than
    answers, whatever tokens remain; answers bring them back."""
    budget = RetryBudget(RULES)
    for _ in range(40):
        budget.deposit(0.0)
    granted = 0
    for _ in range(40):
        budget.failed(0.0)
        if budget.has_room(0.0, 1.0):
            budget.withdraw(0.0, 1.0)
            granted += 1
    assert granted == RULES.failure_margin
    assert budget.balance(0.0) > 1.0  # tokens were left: the failing share stopped them
    for _ in range(31):
        budget.answered(0.0)
    assert budget.has_room(0.0, 1.0)
