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
from typing import Any, TypeVar

import pybreaker

from resilient_llm.errors import BreakerOpen
from resilient_llm.policy.breaker import Verdict, verdict
from resilient_llm.types import ChatRequest, ChatResult, Handler

T = TypeVar("T")


class _Failed(Exception):
    """Stands in for a failed attempt when its outcome is replayed through pybreaker."""


class BreakerHandler:
    """Refuses attempts while the breaker is open; in half-open lets ``half_open_trials`` attempts through at once."""

    def __init__(
        self,
        inner: Handler,
        breaker: pybreaker.CircuitBreaker,
        *,
        route: str,
        half_open_trials: int,
        logger: Any,
        blocking_storage: bool = False,
    ) -> None:
        self._inner = inner
        self._breaker = breaker
        self._route = route
        self._max_trials = half_open_trials
        self._trials = 0
        self._log = logger
        self.opened = asyncio.Event()  # set while open: pending retries stop backing off
        self.local_state = pybreaker.STATE_CLOSED  # the last transition seen here; reading it never blocks
        self.trips = 0
        self._last_failure = ""
        self._blocking = blocking_storage
        self._loop: asyncio.AbstractEventLoop | None = None
        breaker.add_listener(_Transitions(self))

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
        opened_at = self._breaker._state_storage.opened_at  # pybreaker keeps it only there
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


class _Transitions(pybreaker.CircuitBreakerListener):
    """Logs every transition and keeps the ``opened`` event in step with the state."""

    def __init__(self, layer: BreakerHandler) -> None:
        self._layer = layer

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        layer = self._layer
        old = old_state.name if old_state is not None else None
        new = new_state.name
        if new == pybreaker.STATE_OPEN:
            layer.trips += 1
            reason = "trial failed" if old == pybreaker.STATE_HALF_OPEN else f"{cb.fail_max} consecutive failures"
        else:
            reason = "reset timeout elapsed" if new == pybreaker.STATE_HALF_OPEN else "trial succeeded"
        layer.local_state = new
        event = layer.opened.set if new == pybreaker.STATE_OPEN else layer.opened.clear
        if layer._loop is not None and layer._blocking:
            layer._loop.call_soon_threadsafe(event)  # the transition happened on a worker thread
        else:
            event()
        layer._log.warning(
            "breaker_state_change",
            route=layer._route,
            from_state=old,
            to_state=new,
            reason=reason,
            failures=cb.fail_counter,
            last_failure=layer._last_failure if new == pybreaker.STATE_OPEN else None,
            trips=layer.trips,
        )
