"""How many attempts one endpoint has in flight: a limit found from the endpoint's own answers, and a gate.

Held for one attempt only, so a backoff sleep never holds a slot. Waiting attempts are served in arrival order. The
limit is adaptive by default (``policy/concurrency.py`` decides, this layer carries it out), never above
``max_concurrent``; ``mode="fixed"`` is the first wave's fixed cap. A burst of 429s (or in-flight-budget 402s) with
Retry-After shuts the gate for every attempt to the endpoint, not only the ones told: it costs one wait, not a wasted
request per queued call (``policy/gate.py`` decides when a pause helps). With
``redis_url`` the permits, the limit and the gate are shared by every process using the endpoint (``SharedPermits``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resilient_llm.errors import BreakerOpen, ErrorResponse, ProviderTimeout
from resilient_llm.layers.shared_permits import SharedPermits
from resilient_llm.policy import concurrency, gate
from resilient_llm.types import ChatRequest, ChatResult, Handler
from resilient_llm.validation import REDIS_URL, Validated, choice, int_in, setting

ADAPTIVE_CEILING = 256  # the adaptive limit's default ceiling: see policy/concurrency.py's "Bounds"
FIXED_CAP = 20  # the first wave's fixed cap, the fixed mode's default
LOG_EVERY_S = 1.0  # limit_change lines: at most one a second, unless the limit went down


@dataclass(frozen=True)
class LimitConfig(Validated):
    """Concurrency per endpoint: ``adaptive`` (found from answers, at most ``max_concurrent``) or ``fixed``."""

    mode: str = setting("adaptive", choice(("adaptive", "fixed"), joiner=" or "))
    max_concurrent: int | None = setting(None, int_in(1, 10_000), optional=True)  # None: 256 adaptive, 20 fixed
    initial: int = setting(FIXED_CAP, int_in(1, 10_000))  # where the adaptive limit starts
    redis_url: str | None = setting(None, REDIS_URL, optional=True)  # share permits, limit and gate

    @property
    def ceiling(self) -> int:
        """The most attempts ever in flight (the HTTP pool is sized to it)."""
        if self.max_concurrent is not None:
            return self.max_concurrent
        return ADAPTIVE_CEILING if self.mode == "adaptive" else FIXED_CAP

    def policy(self) -> concurrency.LimitPolicy:
        return concurrency.LimitPolicy(initial=min(self.initial, self.ceiling), max_limit=self.ceiling)


class _QueueTimeout(Exception):
    """A queued attempt's wait for a slot ran out."""


def _expire(waiter: asyncio.Future[int]) -> None:
    if not waiter.done():
        waiter.set_exception(_QueueTimeout())


class LimitHandler:
    """At most ``limit`` attempts run at once, fewer while the gate is shut; the rest wait in FIFO order."""

    def __init__(
        self,
        inner: Handler,
        config: LimitConfig,
        *,
        logger: Any = None,
        may_send: Callable[[ChatRequest], bool] = lambda request: True,
        shared: SharedPermits | None = None,
    ) -> None:
        self._inner = inner
        self._adaptive = config.mode == "adaptive"
        self._policy = config.policy()
        self._state = concurrency.initial_state(self._policy)
        self.limit = self._state.permits if self._adaptive else config.ceiling
        self._may_send = may_send  # asked once a slot is free: the breaker may have opened while this one queued
        self._shared = shared
        self._log = logger
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[int]] = collections.deque()
        self._gate_policy = gate.GatePolicy()
        self._gate = gate.GateState()
        self._gate_timer: asyncio.TimerHandle | None = None
        self._logged_at = -LOG_EVERY_S
        self._generation = 0  # shared limit cuts seen so far (any process's)
        self._unpublished = 0.0  # growth of the limit not yet added to the shared one

    async def aclose(self) -> None:
        if self._gate_timer is not None:
            self._gate_timer.cancel()
        if self._shared is not None:
            await self._shared.aclose()

    async def handle(self, request: ChatRequest) -> ChatResult:
        ends = time.monotonic() + request.timeout if request.deadline is None else request.deadline
        granted_at = await self._acquire(max(0.0, ends - time.monotonic()))
        lease = None
        try:
            if not self._may_send(request):
                raise BreakerOpen("held back: the circuit opened while this attempt queued", kind="breaker_open")
            if self._shared is not None:
                lease = await self._shared.acquire(self.limit, max(0.0, ends - time.monotonic()))
                self._adopt(lease.limit, lease.generation)
            started = time.monotonic()
            in_flight = lease.in_flight if lease is not None and lease.in_flight else granted_at
            request.record.limit = self.limit
            try:
                result = await self._inner.handle(request)
            except BaseException as exc:
                self._learn(exc, started, in_flight, None, lease.generation if lease else 0)
                raise
            self._learn(None, started, in_flight, result.usage.completion_tokens, lease.generation if lease else 0)
            return result
        finally:
            if lease is not None and self._shared is not None:
                self._shared.release(lease)
            self._release()

    async def _acquire(self, timeout: float) -> int:  # noqa: ASYNC109  (the call's remaining deadline)
        """A slot in arrival order, within ``timeout`` (what is left of the call's deadline: waiting counts too);
        returns the attempts in flight once it was granted, itself included (not when it gets to run: slots freed
        together are granted one after another, and the load each attempt went out at is what the policies ask)."""
        if not self._waiters and self.in_flight < self.limit and not self._gate_shut():
            self.in_flight += 1
            return self.in_flight
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiters.append(waiter)
        # A timer instead of wait_for(shield(...)): a queued attempt holds one future and one timer handle, no more.
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # the slot was handed over as we gave up: pass it on
            else:
                waiter.cancel()
            if isinstance(exc, _QueueTimeout):
                raise ProviderTimeout(f"no slot free within {timeout:g} s", kind="queue_timeout") from None
            raise
        finally:
            timer.cancel()

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the longest waiters (a slot goes straight to a waiter: no one can jump the queue)."""
        while self._waiters and self.in_flight < self.limit and not self._gate_shut():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(self.in_flight)

    def has_room(self, model: str) -> bool:
        """Whether an attempt to ``model`` would get a slot at once (for hedging)."""
        return not self._waiters and self.in_flight < self.limit and not self._gate_shut()

    def _gate_shut(self) -> bool:
        return gate.is_shut(self._gate, time.monotonic())

    def _gate_learns(self, error: BaseException | None, started: float, in_flight: int) -> concurrency.Signal:
        """The gate's view of one finished attempt; a pause for every attempt when refusals come as a burst. Returns
        the attempt's signal for the limit (refusals say nothing about the load once pauses were shown futile)."""
        signal = concurrency.signal_of(error)
        if signal is not concurrency.Signal.BACKPRESSURE and signal is not concurrency.Signal.OK:
            return signal
        refused = signal is concurrency.Signal.BACKPRESSURE
        retry_after = error.retry_after if refused and isinstance(error, ErrorResponse) else None
        now = time.monotonic()
        before = self._gate.shut_until
        self._gate = gate.finished(self._gate_policy, self._gate, now, started, in_flight, refused, retry_after)
        if self._gate.shut_until > before and self._gate.shut_until > now:
            seconds = self._gate.shut_until - now
            if self._gate_timer is not None:
                self._gate_timer.cancel()
            self._gate_timer = asyncio.get_running_loop().call_later(seconds, self._gate_opens)
            if self._shared is not None:
                self._shared.shut_gate(seconds)
            if self._log is not None:
                self._log.info("gate_pause", seconds=round(seconds, 3), burst_share=round(self._gate.burst_share, 2))
        if refused and gate.refusals_ignore_load(self._gate, now):
            return concurrency.Signal.FAILURE
        return signal

    def _gate_opens(self) -> None:
        left = self._gate.shut_until - time.monotonic()
        if left > 0:  # the timer fired a little early (uvloop's clock counts milliseconds): wait out the rest
            self._gate_timer = asyncio.get_running_loop().call_later(left, self._gate_opens)
            return
        self._gate_timer = None
        self._wake()

    def _learn(self, error: BaseException | None, started: float, in_flight: int, tokens: int | None, gen: int) -> None:
        signal = self._gate_learns(error, started, max(1, in_flight))
        if not self._adaptive:
            return
        sample = concurrency.Sample(
            signal,
            started,
            max(started, time.monotonic()),
            max(1, in_flight),
            max(1, self.in_flight),
            tokens,
        )
        before = self._state.limit
        self._state = concurrency.update(self._policy, self._state, sample)
        self._unpublished += max(0.0, self._state.limit - before)
        if self._state.reason is None:
            return
        self._changed(self._state.reason)
        if self._shared is not None:
            # Growth comes in fractions of a permit per answer: carry all of it since the last publish, not only
            # the step that crossed a whole permit, or most of it is lost when the shared value is adopted.
            grown, self._unpublished = self._unpublished, 0.0
            start = before if self._state.limit < before else self._state.limit - grown
            self._shared.publish(start, self._state.limit, gen, self._policy.initial, self._adopt)

    def _adopt(self, shared_limit: float | None, generation: int | None = None) -> None:
        """Take the limit every process shares (Redis has the last word on it), plus this process's growth not yet
        published; after a cut made by any process (a new ``generation``), also the cut's consequences: slow start
        ends and growth starts over from the cut, in every process, as in the one that made it."""
        if shared_limit is None or not self._adaptive:
            return
        before = self.limit
        if generation is not None and generation != self._generation:
            self._generation, self._unpublished = generation, 0.0
            self._state = concurrency.follow(self._policy, self._state, shared_limit, time.monotonic())
        else:
            self._state = concurrency.adopt(self._policy, self._state, shared_limit + self._unpublished)
        if self._state.permits != before:
            self._changed("shared")

    def _changed(self, reason: str) -> None:
        old, self.limit = self.limit, self._state.permits
        if self.limit > old:
            self._wake()
        now = time.monotonic()
        if self._log is not None and old != self.limit and (self.limit < old or now - self._logged_at >= LOG_EVERY_S):
            self._logged_at = now
            self._log.info("limit_change", limit=self.limit, previous=old, reason=reason, in_flight=self.in_flight)
