"""How many attempts one endpoint has in flight: per model, a limit found from the model's own answers and a gate,
all under one endpoint-wide ceiling.

Held for one attempt only, so a backoff sleep never holds a slot. Each model has its own lane: its adaptive limit
(``policy/concurrency.py`` decides, this layer carries it out), its Retry-After gate (``policy/gate.py``), its pacing
at a rate limit (``policy/pacing.py``: in adaptive mode, once two gate cycles measured one), its pause and its queue,
served in arrival order. The sum of every lane's attempts stays under the endpoint's ceiling
(``max_concurrent``, the HTTP pool's size); a slot that frees up goes to the longest waiter whose own lane has room,
so a model in trouble (refused, paused, slow) never holds back another model's calls. ``mode="fixed"`` is the first
wave's fixed cap, for the endpoint.

A burst of 429s (or in-flight-budget 402s) with Retry-After shuts the model's gate: one wait instead of a wasted
request per queued call. A Retry-After longer than ``pause_max`` (a spent quota, an hour's rate limit) is not waited
for: the model is paused until then and every call to it fails at once with ``ModelPaused`` (not sent, not retried),
so the fallback chain answers; calls resume on their own when the pause ends. A gate that would keep a call waiting
past its deadline fails it the same way at once. With ``redis_url`` permits, limits and gates are shared by every
process using the endpoint (``SharedPermits``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from resilient_llm.clock import SYSTEM_CLOCK, Clock
from resilient_llm.errors import BreakerOpen, FailureKind, ProviderError, ProviderTimeout, Scope, is_backpressure
from resilient_llm.loop_lag import LoopLag
from resilient_llm.policy import concurrency, gate, pacing
from resilient_llm.stores.shared_permits import Lease, SharedPermits
from resilient_llm.timers import Timer, Timers
from resilient_llm.types import ChatRequest, ChatResult, Handler
from resilient_llm.validation import REDIS_URL, SECONDS, Validated, choice, int_in, setting

ADAPTIVE_CEILING = 256  # the adaptive limit's default ceiling: see policy/concurrency.py's "Bounds"
FIXED_CAP = 20  # the first wave's fixed cap, the fixed mode's default
LOG_EVERY_S = 1.0  # limit_change lines: at most one a second per model, unless the limit went down


@dataclass(frozen=True)
class LimitConfig(Validated):
    """Concurrency per endpoint: ``adaptive`` (found from answers, at most ``max_concurrent``) or ``fixed``."""

    mode: str = setting("adaptive", choice(("adaptive", "fixed"), joiner=" or "))
    max_concurrent: int | None = setting(None, int_in(1, 10_000), optional=True)  # None: 256 adaptive, 20 fixed
    initial: int = setting(FIXED_CAP, int_in(1, 10_000))  # where each model's adaptive limit starts
    redis_url: str | None = setting(None, REDIS_URL, optional=True)  # share permits, limits and gates
    pause_max: float = setting(60.0, SECONDS)  # a longer Retry-After pauses the model: its calls fail over at once

    @property
    def ceiling(self) -> int:
        """The most attempts ever in flight to the endpoint, all models together (the HTTP pool is sized to it)."""
        if self.max_concurrent is not None:
            return self.max_concurrent
        return ADAPTIVE_CEILING if self.mode == "adaptive" else FIXED_CAP

    def policy(self) -> concurrency.LimitPolicy:
        return concurrency.LimitPolicy(initial=min(self.initial, self.ceiling), max_limit=self.ceiling)


class ModelPaused(ProviderError):
    """The model is paused (told to wait longer than ``pause_max``, or longer than the call has left): calls to it are
    not sent, and the call that was told fails over now too.

    ``kind`` is ``model_paused`` (``quota_exhausted`` for the call whose answer said the quota is spent), ``scope``
    MODEL; not retryable, so the fallback chain answers at once.
    """

    def __init__(
        self, model: str, seconds: float, why: str, kind: str = FailureKind.MODEL_PAUSED, status: int | None = None
    ) -> None:
        super().__init__(
            f"{model} is paused for another {seconds:.1f} s ({why})",
            kind=kind,
            status=status,
            retry_after=seconds,
            scope=Scope.MODEL,
        )


class _QueueTimeout(Exception):
    """A queued attempt's wait for a slot ran out."""


class _Grant(NamedTuple):
    """A slot handed to an attempt: the model's attempts in flight then, itself included (the load it went out at,
    which the policies ask), and when (a queued attempt may resume after the limit changed)."""

    in_flight: int
    at: float


@dataclass(eq=False)
class _Waiter:
    order: int
    ends: float  # the call's deadline
    future: asyncio.Future[_Grant]
    timer: Timer | None = None


@dataclass(eq=False)
class _Lane:
    """One model's share of the endpoint: its limit, gate, pause and queue."""

    model: str
    state: concurrency.LimitState
    limit: int
    gate: gate.GateState = field(default_factory=gate.GateState)
    pace: pacing.PaceState = field(default_factory=pacing.PaceState)
    in_flight: int = 0
    waiters: collections.deque[_Waiter] = field(default_factory=collections.deque)
    paused_until: float = -math.inf  # calls fail over at once until then
    pause_why: str = ""
    gate_timer: Timer | None = None
    pace_timer: Timer | None = None
    generation: int = 0  # shared limit cuts seen so far (any process's)
    unpublished: float = 0.0  # growth of the limit not yet added to the shared one
    logged_at: float = -LOG_EVERY_S


@dataclass(frozen=True, slots=True)
class _Sent:
    """One attempt as it went out: when, when its slot was granted, our loop's lag total then, the model's attempts
    in flight (itself included), whether it judges the gate's last pause, and its shared-limit lease."""

    at: float
    granted: float
    lag: float
    in_flight: int
    judge: bool
    lease: Lease | None


def _expire(waiter: _Waiter) -> None:
    if not waiter.future.done():
        waiter.future.set_exception(_QueueTimeout())


class LimitHandler:
    """Per model at most its limit in flight, fewer while its gate is shut, none while it is paused; all models
    together at most the ceiling. The rest wait in arrival order."""

    def __init__(
        self,
        inner: Handler,
        config: LimitConfig,
        *,
        logger: Any = None,
        may_send: Callable[[ChatRequest], bool] = lambda request: True,
        shared: SharedPermits | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._inner = inner
        self._config = config
        self._adaptive = config.mode == "adaptive"
        self._policy = config.policy()
        self._ceiling = config.ceiling
        self._may_send = may_send  # asked once a slot is free: the breaker may have opened while this one queued
        self._shared = shared
        self._log = logger
        self._clock = clock
        self._timers = Timers(clock)
        self._lag = LoopLag(clock)
        self._gate_policy = gate.GatePolicy()
        self._pace_policy = pacing.PacePolicy()
        self._lanes: dict[str, _Lane] = {}
        self._order = itertools.count()
        self.in_flight = 0  # every model's attempts together
        if shared is not None:
            shared.watch(self._shared_view)

    @property
    def limit(self) -> int:
        """The endpoint's concurrency as the gauges show it: the largest model limit, within the ceiling."""
        if not self._lanes:
            return min(self._ceiling, self._policy.initial) if self._adaptive else self._ceiling
        return min(self._ceiling, max(lane.limit for lane in self._lanes.values()))

    def limit_of(self, model: str) -> int:
        """One model's limit (where a new model starts, if it has sent nothing yet)."""
        return self._lane(model).limit

    def has_room(self, model: str) -> bool:
        """Whether one more attempt to ``model`` could go now without queueing or drawing a likely 429: below its
        limit and the ceiling, its gate open, not paused, and its limit not back at a level the endpoint refused."""
        lane = self._lane(model)
        now = self._clock.now()
        if lane.paused_until > now or not self._room(lane, now):
            return False
        return not (self._adaptive and concurrency.at_capacity_edge(self._policy, lane.state))

    async def aclose(self) -> None:
        await self._timers.aclose()
        await self._lag.aclose()
        if self._shared is not None:
            await self._shared.aclose()

    def _lane(self, model: str) -> _Lane:
        lane = self._lanes.get(model)
        if lane is None:
            state = concurrency.initial_state(self._policy)
            lane = _Lane(model, state, state.permits if self._adaptive else self._ceiling)
            self._lanes[model] = lane
        return lane

    async def handle(self, request: ChatRequest) -> ChatResult:
        lane = self._lane(request.model)
        now = self._clock.now()
        ends = now + request.timeout if request.deadline is None else request.deadline
        self._refuse_if_paused(lane, now, ends)
        grant = await self._acquire(lane, ends)
        lease: Lease | None = None
        self._lag.busy()
        try:
            if not self._may_send(request):
                raise BreakerOpen("held back: the circuit opened while this attempt queued", kind="breaker_open")
            if self._shared is not None:
                lease = await self._shared.take(lane.model, lane.limit, max(0.0, ends - self._clock.now()))
                self._adopt(lane, lease.limit, lease.generation)
            started, lag = self._clock.now(), self._lag.total
            in_flight = grant.in_flight + (lease.others if lease is not None else 0)
            lane.gate, judge = gate.sending(self._gate_policy, lane.gate, started)
            request.record.limit = lane.limit
            sent = _Sent(started, grant.at, lag, in_flight, judge, lease)
            try:
                result = await self._inner.handle(request)
            except BaseException as exc:
                instead = self._learn(lane, exc, sent, None)
                if instead is not None:
                    raise instead from exc
                raise
            self._learn(lane, None, sent, result.usage.completion_tokens)
            return result
        finally:
            self._lag.idle()
            if lease is not None and self._shared is not None:
                self._shared.put_back(lease)
            self._release(lane)

    def _refuse_if_paused(self, lane: _Lane, now: float, ends: float) -> None:
        if lane.paused_until > now:
            raise ModelPaused(lane.model, lane.paused_until - now, lane.pause_why)
        if gate.is_shut(lane.gate, now) and lane.gate.shut_until > ends:
            raise ModelPaused(lane.model, lane.gate.shut_until - now, "Retry-After beyond the call's deadline")

    async def _acquire(self, lane: _Lane, ends: float) -> _Grant:
        """A slot in arrival order before ``ends`` (the call's deadline: waiting counts too)."""
        if not lane.waiters and self._room(lane, self._clock.now()):
            return self._grant(lane)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(next(self._order), ends, loop.create_future())
        lane.waiters.append(waiter)
        waiter.timer = self._timers.call_at(ends, lambda: _expire(waiter))
        self._arm_pace_timer(lane, self._clock.now())  # a slot may be free while pacing holds it
        try:
            return await waiter.future
        except BaseException as exc:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(lane)  # the slot was handed over as we gave up: pass it on
            else:
                future.cancel()
                if waiter in lane.waiters:
                    lane.waiters.remove(waiter)
            if isinstance(exc, _QueueTimeout):
                left = max(0.0, ends - self._clock.now())
                raise ProviderTimeout(
                    f"no slot free before the call's deadline ({left:g} s left)", kind=FailureKind.QUEUE_TIMEOUT
                ) from None
            raise
        finally:
            waiter.timer.cancel()

    def _room(self, lane: _Lane, now: float) -> bool:
        return self._open(lane, now) and self._pace_wait(lane, now) <= 0

    def _open(self, lane: _Lane, now: float) -> bool:
        """Room for one more attempt to the lane as far as its limit, the ceiling and its gate go (pacing aside)."""
        return lane.in_flight < lane.limit and self.in_flight < self._ceiling and not gate.is_shut(lane.gate, now)

    def _pace_wait(self, lane: _Lane, now: float) -> float:
        return pacing.wait_s(self._pace_policy, lane.pace, now) if self._adaptive else 0.0

    def _grant(self, lane: _Lane) -> _Grant:
        now = self._clock.now()
        lane.in_flight += 1
        self.in_flight += 1
        if self._adaptive:
            self._paced(lane, pacing.sent(self._pace_policy, lane.pace, now))
        return _Grant(lane.in_flight, now)

    def _release(self, lane: _Lane) -> None:
        lane.in_flight -= 1
        self.in_flight -= 1
        self._wake()
        if self._adaptive and not lane.in_flight and not lane.waiters:
            lane.pace = pacing.idle(lane.pace, self._clock.now())

    def _wake(self) -> None:
        """Hand free slots to the longest waiters whose lane has room (a slot goes straight to a waiter: no one can
        jump the queue of its own model, and a full or gated model does not hold back the others)."""
        now = self._clock.now()
        while self.in_flight < self._ceiling:
            best: _Lane | None = None
            for lane in self._lanes.values():
                while lane.waiters and lane.waiters[0].future.done():
                    lane.waiters.popleft()  # gave up (timeout, cancel) but not yet removed
                if (
                    lane.waiters
                    and self._room(lane, now)
                    and (best is None or lane.waiters[0].order < best.waiters[0].order)
                ):
                    best = lane
            if best is None:
                break
            waiter = best.waiters.popleft()
            waiter.future.set_result(self._grant(best))
        for lane in self._lanes.values():
            self._arm_pace_timer(lane, now)

    def _arm_pace_timer(self, lane: _Lane, now: float) -> None:
        """Wake the queue when pacing lets the lane's first waiter go, if pacing is all that holds it."""
        if not lane.waiters or not self._open(lane, now):
            return
        wait = self._pace_wait(lane, now)
        if wait <= 0:
            return
        timer = lane.pace_timer
        if timer is not None and not timer.cancelled:
            if timer.when <= now + wait:
                return
            timer.cancel()
        lane.pace_timer = self._timers.call_at(now + wait, self._wake)

    def _pause(self, lane: _Lane, seconds: float, why: str) -> None:
        """Fail the model's calls over at once for ``seconds``, queued ones included."""
        now = self._clock.now()
        lane.paused_until = max(lane.paused_until, now + seconds)
        lane.pause_why = why
        while lane.waiters:
            waiter = lane.waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(ModelPaused(lane.model, lane.paused_until - now, why))
        if self._log is not None:
            self._log.warning("model_paused", model=lane.model, seconds=round(seconds, 1), reason=why)

    def _shut_gate(self, lane: _Lane, until: float, share: bool) -> None:
        """New attempts to the model wait until ``until``; queued calls whose deadline comes first fail over now."""
        now = self._clock.now()
        if until <= now:
            return
        lane.gate = gate.shut(lane.gate, now, until)
        if lane.gate_timer is not None:
            lane.gate_timer.cancel()
        lane.gate_timer = self._timers.call_at(lane.gate.shut_until, self._wake)
        for waiter in [w for w in lane.waiters if w.ends < lane.gate.shut_until]:
            lane.waiters.remove(waiter)
            if not waiter.future.done():
                why = "Retry-After beyond the call's deadline"
                waiter.future.set_exception(ModelPaused(lane.model, lane.gate.shut_until - now, why))
        if share and self._shared is not None:
            self._shared.shut_gate(lane.model, min(until - now, self._config.pause_max))

    def _learn(self, lane: _Lane, error: BaseException | None, sent: _Sent, tokens: int | None) -> ProviderError | None:
        """Feed one finished attempt to the gate and the limit; returns the error to raise instead of ``error``
        (``ModelPaused`` when told to wait longer than ``pause_max``)."""
        now = self._clock.now()
        instead = self._hint(lane, error, now)
        resting = gate.refusals_ignore_load(lane.gate, now)
        attempt_signal = concurrency.signal_of(error)
        signal, burst = self._gate_learns(lane, error, attempt_signal, sent, now)
        if not self._adaptive:
            return instead
        sample = concurrency.Sample(
            signal,
            sent.at,
            max(sent.at, now),
            max(1, sent.in_flight),
            max(1, lane.in_flight),
            tokens,
            client_delay=self._lag.during(sent.lag),
            burst=burst,
            paced=lane.gate.helped,
            shut=gate.shut_so_far(lane.gate, now),
            background=lane.gate.background,
            granted=sent.granted,
        )
        before = lane.state.limit
        lane.state = concurrency.update(self._policy, lane.state, sample)
        self._pace_learns(lane, attempt_signal, sent, now, burst)
        if not resting and gate.refusals_ignore_load(lane.gate, now):
            lane.state = concurrency.forgive(self._policy, lane.state, now)
            if self._log is not None:
                rest = round(lane.gate.rest_until - now, 1)
                self._log.info("gate_rests", model=lane.model, seconds=rest, reason="pauses did not help")
        lane.unpublished += max(0.0, lane.state.limit - before)
        if lane.state.reason is None:
            return instead
        self._changed(lane, lane.state.reason)
        if self._shared is not None:
            # Growth comes in fractions of a permit per answer: carry all of it since the last publish, not only
            # the step that crossed a whole permit, or most of it is lost when the shared value is adopted.
            grown, lane.unpublished = lane.unpublished, 0.0
            start = before if lane.state.limit < before else lane.state.limit - grown
            generation = sent.lease.generation if sent.lease is not None else lane.generation
            self._shared.publish(
                lane.model, start, lane.state.limit, generation, self._policy.initial, lambda v: self._adopt(lane, v)
            )
        return instead

    def _hint(self, lane: _Lane, error: BaseException | None, now: float) -> ProviderError | None:
        """What a wait the server asked for means for the model: a spent quota shuts its gate until the reset; any
        wait longer than ``pause_max`` pauses it (fail over now). Request-scope failures concern no one else."""
        if not isinstance(error, ProviderError) or not error.retry_after or error.retry_after <= 0:
            return None
        if error.scope is Scope.REQUEST or error.scope is Scope.LOCAL:
            return None
        if not (is_backpressure(error) or error.kind == FailureKind.QUOTA_EXHAUSTED):
            return None
        seconds = error.retry_after
        if seconds > self._config.pause_max:
            quota = error.kind == FailureKind.QUOTA_EXHAUSTED
            why = "quota spent until its reset" if quota else f"told Retry-After {seconds:g} s"
            self._pause(lane, seconds, why)
            # this call fails over now too, instead of waiting (a spent quota keeps its kind: it says more)
            if quota:
                return ModelPaused(lane.model, seconds, why, kind=error.kind, status=error.status)
            return ModelPaused(lane.model, seconds, why)
        if error.kind == FailureKind.QUOTA_EXHAUSTED:
            self._shut_gate(lane, now + seconds, share=True)
        return None

    def _gate_learns(
        self, lane: _Lane, error: BaseException | None, signal: concurrency.Signal, sent: _Sent, now: float
    ) -> tuple[concurrency.Signal, bool]:
        """The gate's view of one finished attempt; a pause of the model when refusals come as a burst. Returns the
        attempt's signal for the limit (refusals say nothing about the load once pauses were shown futile, and a
        spent quota none at all) and whether it made the gate pause. ``signal`` is what the attempt itself said
        (``concurrency.signal_of(error)``)."""
        quota = isinstance(error, ProviderError) and error.kind == FailureKind.QUOTA_EXHAUSTED
        if quota or signal not in (concurrency.Signal.BACKPRESSURE, concurrency.Signal.OK):
            if sent.judge:
                lane.gate = gate.unjudged(lane.gate)
            return (concurrency.Signal.FAILURE if quota else signal), False
        refused = signal is concurrency.Signal.BACKPRESSURE
        retry_after = error.retry_after if refused and isinstance(error, ProviderError) else None
        if retry_after is not None and retry_after > self._config.pause_max:
            retry_after = None  # a pause, not a gate (``_hint``)
        before = lane.gate.shut_until
        probe = refused and self._adaptive and concurrency.probes_the_edge(lane.state, sent.in_flight)
        lane.gate = gate.finished(
            self._gate_policy, lane.gate, now, sent.at, refused, retry_after, sent.judge, probe=probe
        )
        burst = lane.gate.shut_until > before and lane.gate.shut_until > now
        if burst:
            self._shut_gate(lane, lane.gate.shut_until, share=True)
            if self._log is not None:
                seconds = round(lane.gate.shut_until - now, 3)
                share = round(lane.gate.background, 3)
                self._log.info("gate_pause", model=lane.model, seconds=seconds, refused_share=share)
        if refused and gate.refusals_ignore_load(lane.gate, now):
            return concurrency.Signal.FAILURE, burst
        return signal, burst

    def _pace_learns(self, lane: _Lane, signal: concurrency.Signal, sent: _Sent, now: float, burst: bool) -> None:
        """Pacing's view of one finished attempt: answers count in their cycle, a refusal cuts a paced rate, and a
        gate pause ends the cycle (``policy/pacing.py``)."""
        pace = lane.pace
        if signal is concurrency.Signal.OK:
            pace = pacing.answered(pace, now, now - sent.at)
        elif signal is concurrency.Signal.BACKPRESSURE:
            pace = pacing.refused(self._pace_policy, pace, now, sent.at)
        if burst:
            pace = pacing.paused(self._pace_policy, pace, now, lane.gate.shut_until, lane.state.limit, lane.gate.helped)
        self._paced(lane, pace)

    def _paced(self, lane: _Lane, pace: pacing.PaceState) -> None:
        """Keep the lane's pacing; a ``pace`` log line when a measurement started, changed or ended it."""
        before, lane.pace = lane.pace.measured, pace
        if pace.measured != before and self._log is not None:
            rate = None if pace.measured is None else round(pace.measured, 2)
            self._log.info("pace", model=lane.model, rate=rate, previous=None if before is None else round(before, 2))

    def _shared_view(self, model: str, limit: float | None, generation: int | None, gate_s: float) -> None:
        """What Redis says about a model (another process's cut, growth, or gate)."""
        lane = self._lane(model)
        if gate_s > 0:
            self._shut_gate(lane, self._clock.now() + min(gate_s, self._config.pause_max), share=False)
        self._adopt(lane, limit, generation)

    def _adopt(self, lane: _Lane, shared_limit: float | None, generation: int | None = None) -> None:
        """Take the limit every process shares (Redis has the last word on it), plus this process's growth not yet
        published; after a cut made by any process (a new ``generation``), also the cut's consequences: slow start
        ends and growth starts over from the cut, in every process, as in the one that made it."""
        if shared_limit is None or not self._adaptive:
            return
        before = lane.limit
        if generation is not None and generation != lane.generation:
            lane.generation, lane.unpublished = generation, 0.0
            lane.state = concurrency.follow(self._policy, lane.state, shared_limit, self._clock.now())
        else:
            lane.state = concurrency.adopt(self._policy, lane.state, shared_limit + lane.unpublished)
        if lane.state.permits != before:
            self._changed(lane, "shared")

    def _changed(self, lane: _Lane, reason: str) -> None:
        old, lane.limit = lane.limit, lane.state.permits
        if lane.limit > old:
            self._wake()
        now = self._clock.now()
        if self._log is None or old == lane.limit:
            return
        if lane.limit < old or now - lane.logged_at >= LOG_EVERY_S:
            lane.logged_at = now
            self._log.info(
                "limit_change",
                model=lane.model,
                limit=lane.limit,
                previous=old,
                reason=reason,
                in_flight=lane.in_flight,
                endpoint_in_flight=self.in_flight,
            )
