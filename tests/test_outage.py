"""Outages: calls wait (no slot, no retries spent) for the breaker to close, within a budget; probes space out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resilient_llm import Engine, Outcome
from resilient_llm.errors import Scope
from resilient_llm.policy import breaker as policy
from resilient_llm.policy.breaker import outage_budget_left, probe_delay
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL, call_lines, read_log

WAITING = {"breaker_fail_max": 3, "breaker_reset_timeout": 0.2, "timeout": 20.0}


def test_probes_are_spaced_by_a_twentieth_of_the_outage_within_base_and_cap() -> None:
    """1 s apart for the first 20 s of outage, 6 s after 2 minutes, 30 s once it lasts 10; jitter adds at most 10%."""
    assert [probe_delay(t, base=1.0, cap=30.0, jitter=0.0) for t in (0, 5, 20, 120, 600, 3600)] == [
        1.0,
        1.0,
        1.0,
        6.0,
        30.0,
        30.0,
    ]
    assert probe_delay(0, base=1.0, cap=30.0, jitter=1.0) == pytest.approx(1.1)
    elapsed, trials, late = 0.0, 0, 0
    while elapsed < 3600:
        elapsed += probe_delay(elapsed, base=1.0, cap=30.0, jitter=0.5)
        trials += 1
        late += elapsed > 600
    assert trials / 60 < 3.5  # a few requests a minute into a one-hour outage
    assert late / 50 <= 2.0  # two a minute once it has lasted ten minutes


def test_the_budget_counts_from_the_first_meeting_and_never_passes_the_call_timeout() -> None:
    """A call that met the open breaker at t=10 with a 60 s budget may wait until t=70, or its deadline."""
    assert outage_budget_left(40.0, 10.0, budget=60.0, call_ends=610.0) == 30.0
    assert outage_budget_left(40.0, 10.0, budget=60.0, call_ends=30.0) == 0.0
    assert outage_budget_left(11.0, 10.0, budget=0.0, call_ends=610.0) == 0.0


def bring_back_after(server: FaultServer, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: setattr(server, "down", False))
    timer.start()
    return timer


@pytest.mark.slow
def test_calls_wait_out_a_short_outage_and_all_get_real_answers(
    server: FaultServer, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """40 calls during a 1.5 s outage: every one answered for real, few requests into the dead endpoint."""
    engine = make_engine(**WAITING)
    server.down = True
    timer = bring_back_after(server, 1.5)

    async def wave() -> list[Outcome]:
        results = await asyncio.gather(*(engine.acomplete(MODEL, user=f"c{i}") for i in range(40)))
        return [r.outcome for r in results]

    started = time.monotonic()
    outcomes = asyncio.run(wave())
    timer.join()
    assert outcomes == [Outcome.OK] * 40
    assert time.monotonic() - started < 6.0
    assert server.stats()["requests"] - 40 <= 30  # the first wave, then one trial per period
    lines = call_lines(log_path)
    assert sum(1 for line in lines if line["waited_s"] > 1.0) >= 30
    assert all(line["attempts"] <= 3 for line in lines)  # waiting spent no retries
    outage = [e for e in read_log(log_path) if e["event"] == "outage"]
    assert [e["phase"] for e in outage] == ["started", "ended"]
    assert outage[1]["calls_waited"] >= 30
    assert outage[1]["calls_resumed"] >= 30
    assert outage[1]["calls_out_of_budget"] == 0


@pytest.mark.slow
def test_an_outage_longer_than_the_budget_ends_neutral_when_the_budget_runs_out(
    server: FaultServer, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """With a 1 s budget and an endpoint that stays down, calls end neutral about 1 s after meeting the breaker."""
    engine = make_engine(**WAITING, breaker_outage_wait=1.0, neutral_text="N")
    server.down = True
    engine.complete(MODEL, user="trip", raise_caller_errors=False)
    started = time.monotonic()
    result = engine.complete(MODEL, user="waits", raise_caller_errors=False)
    took = time.monotonic() - started
    assert (result.outcome, result.text) == (Outcome.NEUTRAL, "N")
    assert 0.9 <= took <= 3.0
    assert result.failures[-1].kind == "breaker_open"
    assert call_lines(log_path)[-1]["waited_s"] >= 0.9


@pytest.mark.slow
def test_cancelling_a_waiting_call_frees_it_at_once(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """A call waiting for an open breaker is cancelled within a moment, and the engine goes on."""
    engine = make_engine(**WAITING, deadline=1.5)
    server.down = True
    engine.complete(MODEL, user="trip", raise_caller_errors=False)  # trips it, then waits out its deadline

    async def cancel_waiting() -> float:
        task = asyncio.ensure_future(engine.acomplete(MODEL, user="waiting"))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(cancel_waiting()) < 0.5
    server.down = False
    assert engine.complete(MODEL, user="after").outcome is Outcome.OK


@pytest.fixture
def other_provider() -> Iterator[FaultServer]:
    with FaultServer("clean") as srv:
        yield srv


def test_with_another_provider_configured_calls_fail_over_at_once(
    server: FaultServer, other_provider: FaultServer, make_engine: Callable[..., Engine]
) -> None:
    """A second provider answering now beats waiting: with LiteLLM configured, no call waits for the breaker."""
    engine = make_engine(
        **WAITING, fallback_model="openai/gpt-4o-mini", fallback_base_url=other_provider.url, fallback_api_key="sk-2"
    )
    server.down = True
    engine.complete(MODEL, user="trip")
    started = time.monotonic()
    result = engine.complete(MODEL, user="fails over")
    assert result.outcome is Outcome.FALLBACK
    assert time.monotonic() - started < 1.0


def test_a_circuit_opens_after_fail_max_failures_across_enough_models() -> None:
    """The endpoint's circuit (two models to a wave) stays closed through any streak of one model and opens on the
    failure that brings the second model in; any answer ends the streak."""
    rules = policy.CircuitPolicy(fail_max=3, wave_models=2)
    circuit = policy.CLOSED
    for _ in range(5):
        circuit = policy.failed(circuit, rules, 0.0, trial=False, cause=Scope.ENDPOINT, jitter=0.0, model="a")
    assert circuit.state is policy.State.CLOSED
    circuit = policy.failed(circuit, rules, 0.0, trial=False, cause=Scope.ENDPOINT, jitter=0.0, model="b")
    assert (circuit.state, circuit.due) == (policy.State.OPEN, 1.0)
    assert policy.succeeded(policy.claimed(circuit), rules, trial=True) == policy.CLOSED
    streak = policy.failed(policy.CLOSED, rules, 0.0, trial=False, cause=None, jitter=0.0, model="a")
    assert policy.succeeded(streak, rules, trial=False) == policy.CLOSED


def test_a_trial_may_take_a_few_times_its_models_slowest_recent_answer() -> None:
    """3x the slowest recent answer, at least 2 s, 10 s with none to go by, never above the attempt's timeout."""
    assert policy.trial_timeout([0.05, 0.2], cap=60.0) == 2.0
    assert policy.trial_timeout([1.0, 4.0], cap=60.0) == 12.0
    assert policy.trial_timeout([30.0], cap=60.0) == 60.0
    assert policy.trial_timeout([], cap=60.0) == 10.0
    assert policy.trial_timeout([], cap=5.0) == 5.0
