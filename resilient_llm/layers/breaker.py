"""Circuit breaker around one route, per attempt: pybreaker keeps the state, this layer decides who may pass.

pybreaker counts consecutive failures and moves closed → open → half-open → closed. Its own call path is not
asyncio-aware (it would count a cancellation as a failure and let every concurrent caller through in half-open), so
the awaited attempt runs outside it: the layer admits the attempt, awaits it holding no lock, then replays the outcome
through ``breaker.call`` so pybreaker's counters and transitions stay the single source of truth.

An open breaker means "don't send", not "give up": a call that meets it waits (holding no concurrency slot, spending
none of its retries) until the breaker closes, up to ``outage_wait`` seconds from the moment it first met it; then it
fails with BreakerOpen and the fallback chain answers. One trial at a time probes the endpoint, spaced by a tenth of
the outage so far, within ``reset_timeout`` .. ``reset_timeout_max`` (across processes when the state is shared: one
claim per period). A call whose trial fails goes back to waiting instead of spending a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pybreaker

from resilient_llm.errors import BreakerOpen
from resilient_llm.policy.breaker import Verdict, outage_budget_left, probe_delay, verdict
from resilient_llm.types import ChatRequest, ChatResult, Handler
from resilient_llm.validation import REDIS_URL, SECONDS, SECONDS_OR_ZERO, Validated, int_in, setting

T = TypeVar("T")
SHARED_STATE_POLL_S = 0.5  # how often a waiter re-reads state another process may have changed
TRIAL_ELSEWHERE = "half-open elsewhere"  # shared, half-open for another process's trial: wait for its outcome


@dataclass(frozen=True)
class BreakerConfig(Validated):
    """When the breaker opens, how it probes, how long calls wait for it, and where its state is shared."""

    fail_max: int = setting(10, int_in(1, 10_000))  # consecutive failed attempts that open it
    reset_timeout: float = setting(1.0, SECONDS)  # the first trial this long after opening
    reset_timeout_max: float = setting(30.0, SECONDS)  # trials space out (a tenth of the outage so far) up to this
    half_open_trials: int = setting(1, int_in(1, 1000))
    success_threshold: int = setting(1, int_in(1, 1000))
    outage_wait: float = setting(120.0, SECONDS_OR_ZERO)  # a call waits this long for it to close; 0: fail fast
    redis_url: str | None = setting(None, REDIS_URL, optional=True)  # shared by every process that names it


class BreakerStatus:
    """What the engine and the hedge layer may read about a breaker without blocking: its last seen state."""

    def __init__(self) -> None:
        self.state = pybreaker.STATE_CLOSED
        self.opened = asyncio.Event()  # set while open: pending retries stop backing off
        self.trips = 0

    def may_send(self, request: ChatRequest) -> bool:
        """For the layer that sends: whether an attempt admitted earlier may still go out (closed, or the trial)."""
        return self.state == pybreaker.STATE_CLOSED or request.trial


@dataclass
class _Outage:
    """One outage episode, from the breaker opening to it closing again."""

    started: float
    waited: int = 0  # calls that met the open breaker and waited
    out_of_budget: int = 0  # of them, calls whose wait ran out: the fallback chain answered them


class _Failed(Exception):
    """Stands in for a failed attempt when its outcome is replayed through pybreaker."""


class BreakerHandler:
    """Admits attempts while closed; while open makes them wait (within the outage budget) for one trial to succeed."""

    def __init__(
        self,
        inner: Handler,
        breaker: pybreaker.CircuitBreaker,
        storage: pybreaker.CircuitBreakerStorage,
        config: BreakerConfig,
        *,
        route: str,
        logger: Any,
        outage_wait: float | None = None,
        claim_trial: Callable[[float], bool] = lambda period_s: True,
        status: BreakerStatus | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._inner = inner
        self._breaker = breaker
        self._storage = storage  # the breaker's storage, which we made: opened_at lives there
        self._config = config
        self._outage_wait = config.outage_wait if outage_wait is None else outage_wait
        self._claim_trial = claim_trial
        self._holds_trial = False  # this process moved the breaker to half-open: the trial is its to send
        self._route = route
        self._log = logger
        self._rng = rng or random.Random()
        self.status = status or BreakerStatus()
        self._trials = 0
        self._waiting = 0  # calls waiting for the breaker right now
        self._jitter = self._rng.random()
        self._wakeup = asyncio.Event()
        self._outage: _Outage | None = None
        self._last_failure = ""
        self._blocking = not isinstance(storage, pybreaker.CircuitMemoryStorage)
        self._loop: asyncio.AbstractEventLoop | None = None
        breaker.add_listener(_Transitions(self.on_transition))

    @property
    def state(self) -> str:
        return str(self._breaker.current_state)

    def is_closed(self, model: str) -> bool:
        """Whether a call to ``model`` would go out at once (for hedging)."""
        return self.status.state == pybreaker.STATE_CLOSED

    def opened(self, model: str) -> asyncio.Event:
        """Set while ``model``'s breaker is open: a pending retry need not back off further."""
        return self.status.opened

    async def handle(self, request: ChatRequest) -> ChatResult:
        self._loop = asyncio.get_running_loop()
        met_open_at: float | None = None
        try:
            while True:
                state = await self._off_loop(self._state_now)
                if state != pybreaker.STATE_CLOSED and met_open_at is None:
                    met_open_at = self._start_waiting()
                trial = await self._admit_or_wait(state, request, met_open_at)
                if trial is None:
                    continue  # woke up: look at the state again
                try:
                    result = await self._inner.handle(dataclasses.replace(request, trial=True) if trial else request)
                except asyncio.CancelledError:
                    raise  # says nothing about the endpoint
                except BreakerOpen:  # admitted while closed, held back at send time: it opened meanwhile
                    met_open_at = met_open_at or self._start_waiting()
                    continue
                except BaseException as exc:
                    outcome = verdict(exc)
                    await self._off_loop(self._record, outcome, exc)
                    if trial and outcome is Verdict.FAILING and met_open_at is not None:
                        continue  # the probe failed: wait for the next one instead of spending a retry
                    raise
                else:
                    await self._off_loop(self._record, Verdict.HEALTHY, None)
                    return result
                finally:
                    if trial:
                        self._trials -= 1
        finally:
            if met_open_at is not None:
                self._waiting -= 1

    def _start_waiting(self) -> float:
        self._waiting += 1
        if self._outage is not None:
            self._outage.waited += 1
        return time.monotonic()

    async def _admit_or_wait(self, state: str, request: ChatRequest, met_open_at: float | None) -> bool | None:
        """True for a trial, False for a normal attempt, None after a wait; BreakerOpen once the budget is spent."""
        admitted = state == pybreaker.STATE_CLOSED or (
            state == pybreaker.STATE_HALF_OPEN and self._trials < self._config.half_open_trials
        )
        if admitted:
            if state == pybreaker.STATE_HALF_OPEN:
                self._trials += 1
                return True
            return False
        assert met_open_at is not None
        now = time.monotonic()
        call_ends = request.deadline if request.deadline is not None else met_open_at + request.timeout
        left = outage_budget_left(now, met_open_at, budget=self._outage_wait, call_ends=call_ends)
        if left <= 0:
            waited = now - met_open_at
            if self._outage is not None:
                self._outage.out_of_budget += 1
            detail = "open" if state == pybreaker.STATE_OPEN else "trial in progress"
            raise BreakerOpen(f"{self._route} circuit {detail} (waited {waited:.1f} s)", kind="breaker_open")
        pause = SHARED_STATE_POLL_S if state == TRIAL_ELSEWHERE else min(left, max(0.01, self._until_probe()))
        if self._blocking:
            pause = min(pause, SHARED_STATE_POLL_S)
        wakeup = self._wakeup
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), pause)
        finally:  # only the time spent here: a call that makes several trials must not count its first wait again
            request.record.waited_s += time.monotonic() - now
        return None

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        """pybreaker's own calls: inline with local state, on a worker thread when its storage blocks (Redis)."""
        if self._blocking:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    def _state_now(self) -> str:
        """The state, moved from open to half-open once the next trial is due (and, shared, this process claimed it).
        Shared, half-open is another process's trial unless this one claimed it: wait for its outcome, and claim the
        next only if it has not ended within a period (its process died, or its attempt hangs)."""
        # ``state``, not ``current_state``: status must learn of a close made elsewhere, or attempts stay held back.
        state = str(self._breaker.state.name)
        if state == pybreaker.STATE_OPEN and self._until_probe() <= 0 and self._claim_trial(self._probe_period()):
            self._breaker.half_open()
            self._holds_trial = True
            return pybreaker.STATE_HALF_OPEN
        half_open = state == pybreaker.STATE_HALF_OPEN
        if half_open and not self._holds_trial and not self._claim_trial(self._probe_period()):
            return TRIAL_ELSEWHERE
        self._holds_trial = half_open
        return state

    def _probe_period(self) -> float:
        c = self._config
        lasted = time.monotonic() - self._outage.started if self._outage is not None else 0.0
        return probe_delay(lasted, base=c.reset_timeout, cap=c.reset_timeout_max, jitter=self._jitter)

    def _until_probe(self) -> float:
        opened_at = self._storage.opened_at
        if opened_at is None:
            return 0.0
        due = opened_at + datetime.timedelta(seconds=self._probe_period())
        return (due - datetime.datetime.now(datetime.UTC)).total_seconds()

    def _record(self, outcome: Verdict, error: BaseException | None) -> None:
        if outcome is Verdict.SILENT or self._breaker.current_state == pybreaker.STATE_OPEN:
            return  # late outcomes of attempts admitted before the trip say nothing new
        if outcome is Verdict.FAILING:
            self._last_failure = str(error)[:200]

        def replay() -> None:
            if outcome is Verdict.FAILING:
                raise _Failed

        with contextlib.suppress(_Failed, pybreaker.CircuitBreakerError):
            self._breaker.call(replay)

    def on_transition(self, old: str | None, new: str, fail_counter: int) -> None:
        """Keeps ``status``, the probe spacing and the outage episode in step; logs (possibly on a worker thread)."""
        if self._loop is not None and self._blocking:
            self._loop.call_soon_threadsafe(self._transition, old, new, fail_counter)
        else:
            self._transition(old, new, fail_counter)

    def _transition(self, old: str | None, new: str, fail_counter: int) -> None:
        status = self.status
        status.state = new
        if new == pybreaker.STATE_OPEN:
            status.trips += 1
            status.opened.set()
            self._jitter = self._rng.random()
            if old == pybreaker.STATE_HALF_OPEN:
                reason = "trial failed"
            else:
                reason = f"{self._config.fail_max} consecutive failures"
                self._outage = self._outage or _Outage(started=time.monotonic())
                self._log.warning("outage", route=self._route, phase="started", last_failure=self._last_failure)
        else:
            status.opened.clear()
            reason = "next trial due" if new == pybreaker.STATE_HALF_OPEN else "trial succeeded"
        if new == pybreaker.STATE_CLOSED:
            self._end_outage()
        self._wakeup.set()  # waiters look at the new state
        self._wakeup = asyncio.Event()
        self._log.warning(
            "breaker_state_change",
            route=self._route,
            from_state=old,
            to_state=new,
            reason=reason,
            failures=fail_counter,
            last_failure=self._last_failure if new == pybreaker.STATE_OPEN else None,
            trips=status.trips,
            next_trial_s=round(self._probe_period(), 3) if new == pybreaker.STATE_OPEN else None,
        )

    def _end_outage(self) -> None:
        outage, self._outage = self._outage, None
        if outage is not None:
            self._log.warning(
                "outage",
                route=self._route,
                phase="ended",
                duration_s=round(time.monotonic() - outage.started, 3),
                calls_waited=outage.waited,
                calls_resumed=self._waiting,  # still waiting as it closes: they go on through the limit now
                calls_out_of_budget=outage.out_of_budget,
            )


class _Transitions(pybreaker.CircuitBreakerListener):
    """Forwards pybreaker's state changes to a callback."""

    def __init__(self, callback: Callable[[str | None, str, int], None]) -> None:
        self._callback = callback

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        self._callback(old_state.name if old_state is not None else None, new_state.name, cb.fail_counter)
