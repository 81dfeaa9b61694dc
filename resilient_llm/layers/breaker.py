"""Circuit breaker around one route, per attempt: pybreaker keeps the state, this layer decides who may pass.

pybreaker counts consecutive failures and moves closed → open → half-open → closed. Its own call path is not
asyncio-aware (it would count a cancellation as a failure and let every concurrent caller through in half-open), so
the awaited attempt runs outside it: the layer admits or refuses the attempt, awaits it holding no lock, then replays
the outcome through ``breaker.call`` so pybreaker's counters and transitions stay the single source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pybreaker

from resilient_llm.errors import BreakerOpen
from resilient_llm.policy.breaker import Verdict, verdict
from resilient_llm.types import ChatRequest, ChatResult, Handler
from resilient_llm.validation import REDIS_URL, SECONDS, Validated, int_in, setting

T = TypeVar("T")


@dataclass(frozen=True)
class BreakerConfig(Validated):
    """When the breaker opens (consecutive failures), when it tries again, and where its state is shared."""

    fail_max: int = setting(10, int_in(1, 10_000))
    reset_timeout: float = setting(5.0, SECONDS)
    half_open_trials: int = setting(1, int_in(1, 1000))
    success_threshold: int = setting(1, int_in(1, 1000))
    redis_url: str | None = setting(None, REDIS_URL, optional=True)  # shared by every process that names it


class _Failed(Exception):
    """Stands in for a failed attempt when its outcome is replayed through pybreaker."""


class BreakerStatus:
    """What the engine and the hedge layer may read about a breaker without blocking: its last seen state."""

    def __init__(self) -> None:
        self.state = pybreaker.STATE_CLOSED
        self.opened = asyncio.Event()  # set while open: pending retries stop backing off
        self.trips = 0


class BreakerHandler:
    """Refuses attempts while the breaker is open; in half-open lets ``half_open_trials`` attempts through at once."""

    def __init__(
        self,
        inner: Handler,
        breaker: pybreaker.CircuitBreaker,
        storage: pybreaker.CircuitBreakerStorage,
        *,
        route: str,
        half_open_trials: int,
        logger: Any,
        status: BreakerStatus | None = None,
    ) -> None:
        self._inner = inner
        self._breaker = breaker
        self._storage = storage  # the breaker's storage, which we made: opened_at lives there
        self._route = route
        self._max_trials = half_open_trials
        self._trials = 0
        self._log = logger
        self.status = status or BreakerStatus()
        self._last_failure = ""
        self._blocking = not isinstance(storage, pybreaker.CircuitMemoryStorage)
        self._loop: asyncio.AbstractEventLoop | None = None
        breaker.add_listener(_Transitions(self.on_transition))

    @property
    def state(self) -> str:
        return str(self._breaker.current_state)

    async def handle(self, request: ChatRequest) -> ChatResult:
        self._loop = asyncio.get_running_loop()
        trial = self._admit(await self._off_loop(self._state_now))
        try:
            result = await self._inner.handle(request)
        except asyncio.CancelledError:
            raise  # says nothing about the endpoint
        except BaseException as exc:
            await self._off_loop(self._record, verdict(exc), exc)
            raise
        else:
            await self._off_loop(self._record, Verdict.HEALTHY, None)
            return result
        finally:
            if trial:
                self._trials -= 1

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        """pybreaker's own calls: inline with local state, on a worker thread when its storage blocks (Redis)."""
        if self._blocking:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    def _state_now(self) -> str:
        """The state, moved from open to half-open once the reset timeout has elapsed."""
        state = str(self._breaker.current_state)
        if state == pybreaker.STATE_OPEN and self._reset_timeout_elapsed():
            self._breaker.half_open()
            return pybreaker.STATE_HALF_OPEN
        return state

    def _admit(self, state: str) -> bool:
        """True for a half-open trial; raises BreakerOpen when the attempt may not be sent."""
        if state == pybreaker.STATE_OPEN:
            raise BreakerOpen(f"{self._route} circuit open", kind="breaker_open")
        if state != pybreaker.STATE_HALF_OPEN:
            return False
        if self._trials >= self._max_trials:
            raise BreakerOpen(f"{self._route} circuit half-open, trial in progress", kind="breaker_open")
        self._trials += 1
        return True

    def _reset_timeout_elapsed(self) -> bool:
        opened_at = self._storage.opened_at
        if opened_at is None:
            return True
        now = datetime.datetime.now(datetime.UTC)
        return now >= opened_at + datetime.timedelta(seconds=self._breaker.reset_timeout)

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
        """Logs a transition and keeps ``status`` in step (pybreaker calls it, possibly on a worker thread)."""
        status = self.status
        if new == pybreaker.STATE_OPEN:
            status.trips += 1
            reason = (
                "trial failed" if old == pybreaker.STATE_HALF_OPEN else f"{self._breaker.fail_max} consecutive failures"
            )
        else:
            reason = "reset timeout elapsed" if new == pybreaker.STATE_HALF_OPEN else "trial succeeded"
        status.state = new
        event = status.opened.set if new == pybreaker.STATE_OPEN else status.opened.clear
        if self._loop is not None and self._blocking:
            self._loop.call_soon_threadsafe(event)  # the transition happened on a worker thread
        else:
            event()
        self._log.warning(
            "breaker_state_change",
            route=self._route,
            from_state=old,
            to_state=new,
            reason=reason,
            failures=fail_counter,
            last_failure=self._last_failure if new == pybreaker.STATE_OPEN else None,
            trips=status.trips,
        )


class _Transitions(pybreaker.CircuitBreakerListener):
    """Forwards pybreaker's state changes to a callback."""

    def __init__(self, callback: Callable[[str | None, str, int], None]) -> None:
        self._callback = callback

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        self._callback(old_state.name if old_state is not None else None, new_state.name, cb.fail_counter)
