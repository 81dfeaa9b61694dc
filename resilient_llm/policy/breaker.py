"""Breaker decisions: what an attempt's outcome says, and the state machine of one circuit (an endpoint or a model).

A circuit counts consecutive failed attempts while closed; at ``fail_max`` it opens (don't send). Its next trial is
due a while later (``probe_delay``); the first caller to find it due claims the trial and the circuit is half-open
until the trial's outcome closes it (a success) or opens it again (a failure). Every function here is pure: the time
comes in as an argument (the layer's injected monotonic clock), nothing is read or written elsewhere.

Why not pybreaker (the mission's listed breaker library, which this project used until the per-model rewrite): its
state machine only fits a synchronous call path. Driven from asyncio it had to be fed replayed outcomes, because

- its async support is Tornado-only, and its ``call`` would count an ``asyncio.CancelledError`` as a failure;
- half-open lets every concurrent caller through, where an outage needs exactly one trial at a time;
- its durations are wall-clock ``datetime``s (``opened_at + reset_timeout`` against ``datetime.now``): not an
  injectable monotonic clock, and wrong across machines whose clocks differ;
- its storage is written on every outcome (the failure counter reset on each success), synchronously: with Redis
  that is a blocking round trip on every call's path.

What is left once those are taken out (a counter and three states) is this module.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from resilient_llm.errors import BACKPRESSURE_STATUSES, BreakerOpen, ProviderError, Scope, is_backpressure

TRIAL_TIMEOUT_MULTIPLE = 3.0  # a trial may take this many times the slowest of its model's recent answers
TRIAL_TIMEOUT_FLOOR_S = 2.0  # but never less: a fast model on a busy machine still gets a fair trial
TRIAL_TIMEOUT_UNKNOWN_S = 10.0  # a model with no recent answer to go by


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Verdict(enum.Enum):
    """What one attempt's outcome says about the model it asked and the endpoint it went to."""

    HEALTHY = "healthy"  # answered (an answer that fails the same way for this request is an answer too)
    MODEL_FAILED = "model_failed"  # the model did not answer usefully; the endpoint did answer
    ENDPOINT_FAILED = "endpoint_failed"  # nothing came back: refused, reset, timed out
    SILENT = "silent"  # says nothing: cancelled, throttled, never sent, a bug of ours


def verdict(error: BaseException | None) -> Verdict:
    """How one attempt's outcome counts, from the failure's scope (``errors.Scope``)."""
    if error is None:
        return Verdict.HEALTHY
    if not isinstance(error, ProviderError) or isinstance(error, BreakerOpen):
        return Verdict.SILENT  # cancelled, or a bug of ours: nothing about the endpoint
    if is_backpressure(error) or error.status in BACKPRESSURE_STATUSES:
        return Verdict.SILENT  # rate limits and budgets are the endpoint working as designed (the retry layer obeys)
    if error.scope is Scope.LOCAL:
        return Verdict.SILENT  # never reached the endpoint
    if error.scope is Scope.REQUEST:
        return Verdict.HEALTHY  # this request will fail this way again; the model answered it
    if error.scope is Scope.MODEL:
        return Verdict.MODEL_FAILED
    return Verdict.ENDPOINT_FAILED


def fails(outcome: Verdict, *, endpoint: bool) -> bool:
    """Whether ``outcome`` counts as a failure for an endpoint's circuit or (``endpoint=False``) a model's.

    A model's circuit counts everything its model's attempts met (a model whose provider hangs looks like timeouts);
    the endpoint's counts only what no model could answer through: a model's own failures came back through a
    working endpoint, so for the endpoint they are answers. (The endpoint's also needs its streak to span two models,
    ``CircuitPolicy.wave_models``: timeouts of one hanging model arrive in bursts that would otherwise open it.)
    """
    if endpoint:
        return outcome is Verdict.ENDPOINT_FAILED
    return outcome in (Verdict.MODEL_FAILED, Verdict.ENDPOINT_FAILED)


@dataclasses.dataclass(frozen=True)
class CircuitPolicy:
    fail_max: int = 10  # consecutive failed attempts that open it
    reset_timeout: float = 1.0  # the first trial this long after opening
    reset_timeout_max: float = 30.0  # trials space out (a twentieth of the outage so far) up to this
    half_open_trials: int = 1  # trials out at once
    success_threshold: int = 1  # successful trials that close it
    wave_models: int = 1  # the failure streak that opens it must span this many models (the endpoint's: 2)


@dataclasses.dataclass(frozen=True)
class Circuit:
    """One circuit's state. Times are on the caller's monotonic clock."""

    state: State = State.CLOSED
    failures: int = 0  # consecutive failed attempts, while closed
    failed_models: frozenset[str] = frozenset()  # the models those attempts asked (up to ``wave_models`` of them)
    trials: int = 0  # trials out now, while half-open
    successes: int = 0  # successful trials so far, while half-open
    outage_started: float | None = None  # when this outage began (it first opened), until it closes
    due: float = 0.0  # while open: when the next trial may go
    cause: Scope | None = None  # while open: the scope of the failure that opened it


CLOSED = Circuit()


def probe_delay(outage_s: float, *, base: float, cap: float, jitter: float) -> float:
    """Seconds from the breaker (re)opening to the next trial, a twentieth of how long the outage has lasted so far,
    within ``[base, cap]``; ``jitter`` (0..1, drawn by the caller) spreads processes that opened together by up to 10%.

    So recovery is noticed within about a twentieth of the outage (a blip or a 20 s outage within ``base``, a minute's
    within 3 s): a trainer's step waits on it, and draining the calls that waited takes a second or two more. A long
    outage still costs the endpoint little: ~20 trials in the first 20 s, then spacing grows to the 30 s cap after 10
    minutes, two a minute from then on (an hour: ~180 trials). Doubling per failed trial costs fewer trials but notices
    a 20 s outage's end ~10 s late; a tenth of the outage (an earlier rule) noticed it ~2 s late, most of the 3 s a
    step may lose after the endpoint is back.
    """
    return min(cap, max(base, outage_s / 20.0)) * (1.0 + 0.1 * jitter)


def opened(circuit: Circuit, policy: CircuitPolicy, now: float, *, cause: Scope | None, jitter: float) -> Circuit:
    """Open (again): no attempt until the next trial is due."""
    started = now if circuit.outage_started is None else circuit.outage_started
    delay = probe_delay(now - started, base=policy.reset_timeout, cap=policy.reset_timeout_max, jitter=jitter)
    return Circuit(State.OPEN, outage_started=started, due=now + delay, cause=cause or circuit.cause)


def failed(
    circuit: Circuit,
    policy: CircuitPolicy,
    now: float,
    *,
    trial: bool,
    cause: Scope | None,
    jitter: float,
    model: str = "",
) -> Circuit:
    """After a failed attempt (of ``model``): one more consecutive failure while closed, and it opens once there are
    ``fail_max`` of them across ``wave_models`` models; a failed trial opens it again. Outcomes of attempts sent before
    it opened (not trials) say nothing new while it is open or half-open."""
    if circuit.state is State.CLOSED:
        models = circuit.failed_models
        if len(models) < policy.wave_models:
            models = models | {model}
        if circuit.failures + 1 >= policy.fail_max and len(models) >= policy.wave_models:
            return opened(circuit, policy, now, cause=cause, jitter=jitter)
        return dataclasses.replace(circuit, failures=circuit.failures + 1, failed_models=models)
    if trial and circuit.state is State.HALF_OPEN:
        return opened(circuit, policy, now, cause=cause, jitter=jitter)
    return circuit


def succeeded(circuit: Circuit, policy: CircuitPolicy, *, trial: bool) -> Circuit:
    """After an answer: the failure streak ends; enough successful trials close it."""
    if circuit.state is State.CLOSED:
        return circuit if circuit.failures == 0 else CLOSED
    if trial and circuit.state is State.HALF_OPEN:
        if circuit.successes + 1 >= policy.success_threshold:
            return CLOSED
        return dataclasses.replace(circuit, trials=max(0, circuit.trials - 1), successes=circuit.successes + 1)
    return circuit


def trial_abandoned(circuit: Circuit) -> Circuit:
    """A trial that ended without a verdict (cancelled, throttled, never sent): its place goes to the next caller."""
    if circuit.state is State.HALF_OPEN:
        return dataclasses.replace(circuit, trials=max(0, circuit.trials - 1))
    return circuit


def may_claim(circuit: Circuit, policy: CircuitPolicy, now: float) -> bool:
    """Whether a caller may send the next trial now."""
    if circuit.state is State.OPEN:
        return now >= circuit.due
    return circuit.state is State.HALF_OPEN and circuit.trials < policy.half_open_trials


def claimed(circuit: Circuit) -> Circuit:
    """The circuit once a caller took a trial (half-open, one more trial out)."""
    if circuit.state is State.OPEN:
        return Circuit(State.HALF_OPEN, trials=1, outage_started=circuit.outage_started, cause=circuit.cause)
    return dataclasses.replace(circuit, trials=circuit.trials + 1)


def due_now(circuit: Circuit, now: float) -> Circuit:
    """An open circuit whose next trial may go at once (the endpoint came back: a model it had stopped may too)."""
    if circuit.state is State.OPEN and circuit.due > now:
        return dataclasses.replace(circuit, due=now)
    return circuit


def trial_timeout(recent: Sequence[float], *, cap: float) -> float:
    """How long a half-open trial may take before it counts as failed: a multiple of the slowest of its model's recent
    answers (at least a floor), a fixed value with none to go by, never more than ``cap`` (the attempt's own timeout).

    A hung trial otherwise holds every waiting call until the call's own timeout, long after the endpoint is back.
    """
    if not recent:
        return min(cap, TRIAL_TIMEOUT_UNKNOWN_S)
    return min(cap, max(TRIAL_TIMEOUT_FLOOR_S, TRIAL_TIMEOUT_MULTIPLE * max(recent)))


def outage_budget_left(now: float, waiting_since: float, *, budget: float, call_ends: float) -> float:
    """Seconds a call may still wait for an open breaker: the outage budget from the moment it first met the open
    breaker, never past the end of the call (its deadline)."""
    return max(0.0, min(waiting_since + budget, call_ends) - now)
