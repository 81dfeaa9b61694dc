"""Circuit breakers around one route, per attempt: one for the endpoint and one per model (``policy/breaker.py``
decides, this layer carries it out).

A model's breaker counts its model's failed attempts (the failure's scope is the model's or the endpoint's); the
endpoint's counts only what no model could answer through (refused, reset, timed out: ``Scope.ENDPOINT``), and
only a streak that spans two models (``ENDPOINT_WAVE_MODELS``; with one model in use, its own breaker does the job).
A failure scoped to the request (truncated, no provider for its parameters, moderation, a caller mistake) is an
answer, and cancellations, backpressure and our own refusals say nothing. An attempt goes out when both breakers
that govern its model are closed, so a model in trouble holds only its own calls.

An open breaker means "don't send", not "give up": a call that meets it waits (holding no concurrency slot, spending
none of its retries) until it closes, up to ``outage_wait`` seconds from the moment it first met it; then it fails
with BreakerOpen and the fallback chain answers. One trial at a time probes, spaced by a twentieth of the outage so
far within ``reset_timeout`` .. ``reset_timeout_max`` (across processes when the state is shared: one claim at a
time). The trial has a short timeout of its own, from its model's recent answers: a hung trial is a failed trial. A
call whose trial fails goes back to waiting instead of spending a retry. Waiting calls sleep until a breaker of theirs
changes or their trial is due (an event each), never polling.

With ``redis_url`` the breakers' state changes are shared (``stores/breaker_state.py``) and read back in the
background, one round trip per process every half second whatever the number of waiting calls: no call waits for
Redis, except a process's first call of a model (one bounded read) and a waiting call claiming a trial.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resilient_llm.clock import SYSTEM_CLOCK, Clock
from resilient_llm.errors import BreakerOpen, ProviderError, ProviderTimeout, Scope
from resilient_llm.policy import breaker as policy
from resilient_llm.policy.breaker import Circuit, State, Verdict
from resilient_llm.stores.breaker_state import SharedBreakerState, SharedView
from resilient_llm.types import ChatRequest, ChatResult, Handler
from resilient_llm.validation import REDIS_URL, SECONDS, SECONDS_OR_ZERO, Validated, int_in, setting

ENDPOINT = "endpoint"  # the endpoint's circuit; a model's is "model:<name>"
RECENT_ANSWERS = 20  # per model, for its trials' timeout
# The endpoint's breaker opens on a streak of endpoint-scope failures (refused, reset, timed out) that spans this many
# models. One model whose provider hangs times out in bursts (every attempt sent in a wave times out together), which
# with 1 here opens the endpoint's breaker and holds every healthy model (benchmarks/breaker.py, "isolation"); its own
# breaker holds it already. With one model in use, that model's breaker does the endpoint's job.
ENDPOINT_WAVE_MODELS = 2
TRIAL_GRACE_S = 0.5  # the trial's own layers time it out first; this guards against one that does not
WORST_FIRST = (State.OPEN, State.HALF_OPEN, State.CLOSED)
FAILED = (Verdict.MODEL_FAILED, Verdict.ENDPOINT_FAILED)
TRIAL_ELSEWHERE = "trial elsewhere"  # a claim another process's due time or trial refused


@dataclass(frozen=True)
class BreakerConfig(Validated):
    """When the breakers open, how they probe, how long calls wait for them, and where their state is shared."""

    fail_max: int = setting(10, int_in(1, 10_000))  # consecutive failed attempts that open one
    reset_timeout: float = setting(1.0, SECONDS)  # the first trial this long after opening
    reset_timeout_max: float = setting(30.0, SECONDS)  # trials space out (a twentieth of the outage so far) up to this
    half_open_trials: int = setting(1, int_in(1, 1000))
    success_threshold: int = setting(1, int_in(1, 1000))
    outage_wait: float = setting(120.0, SECONDS_OR_ZERO)  # a call waits this long for it to close; 0: fail fast
    redis_url: str | None = setting(None, REDIS_URL, optional=True)  # shared by every process that names it

    def policy(self) -> policy.CircuitPolicy:
        return policy.CircuitPolicy(
            fail_max=self.fail_max,
            reset_timeout=self.reset_timeout,
            reset_timeout_max=self.reset_timeout_max,
            half_open_trials=self.half_open_trials,
            success_threshold=self.success_threshold,
        )


@dataclass
class _Outage:
    """One outage episode of one breaker, from it opening to it closing again."""

    started: float
    waited: int = 0  # calls that met the open breaker and waited
    out_of_budget: int = 0  # of them, calls whose wait ran out: the fallback chain answered them


class _Breaker:
    """One circuit (the endpoint's or a model's) and what waits on it."""

    def __init__(self, name: str, model: str | None, rules: policy.CircuitPolicy, jitter: float) -> None:
        self.name = name
        self.model = model  # None: the endpoint's
        self.rules = rules
        self.circuit = policy.CLOSED
        self.version = 0  # local changes so far: a shared read older than the latest one is ignored
        self.changed = asyncio.Event()  # set (and replaced) when it or, for a model, the endpoint changes
        self.opened = asyncio.Event()  # for a model: set while it or the endpoint is not closed
        self.jitter = jitter
        self.trips = 0
        self.outage: _Outage | None = None
        self.waiting = 0  # calls waiting on it right now
        self.last_failure = ""
        self.recent = collections.deque[float](maxlen=RECENT_ANSWERS)  # for a model: its recent answers' latency
        self.known = False  # shared: its state was read from Redis once (or Redis could not say)
        self.reading: asyncio.Future[None] | None = None  # shared: that first read, while it runs
        self.claiming = False  # shared: a call here is claiming its trial in Redis (the others wait for the outcome)

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


Pair = tuple[_Breaker, _Breaker]  # the breakers that govern one call: the endpoint's, its model's


@dataclass(frozen=True)
class BreakerSnapshot:
    """What the breakers look like now: the endpoint's state and every model whose breaker is not closed."""

    endpoint: State
    models: Mapping[str, State]
    trips: int  # openings of any of them (the endpoint's and every model's)
    endpoint_trips: int  # of them, the endpoint's (which held every model)

    @property
    def worst(self) -> State:
        states = {self.endpoint, *self.models.values()}
        return next(s for s in WORST_FIRST if s in states)


class BreakerHandler:
    """Admits attempts while their model's breakers are closed; otherwise makes them wait for one trial to succeed."""

    def __init__(
        self,
        inner: Handler,
        config: BreakerConfig,
        *,
        route: str,
        logger: Any,
        outage_wait: float | None = None,
        shared: SharedBreakerState | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self._inner = inner
        self._policy = config.policy()
        self._outage_wait = config.outage_wait if outage_wait is None else outage_wait
        self._route = route
        self._log = logger
        self._shared = shared
        self._clock = clock
        self._rng = rng or random.Random()
        endpoint_rules = dataclasses.replace(self._policy, wave_models=ENDPOINT_WAVE_MODELS)
        self._endpoint = _Breaker(ENDPOINT, None, endpoint_rules, self._rng.random())
        self._models: dict[str, _Breaker] = {}
        self._breakers = {ENDPOINT: self._endpoint}
        self._sync: asyncio.Task[None] | None = None

    # -- what the other layers ask ---------------------------------------------------------------------------------

    def may_send(self, request: ChatRequest) -> bool:
        """For the layer that sends: whether an attempt admitted earlier may still go out (closed, or the trial)."""
        return request.trial or self.is_closed(request.model)

    def is_closed(self, model: str) -> bool:
        """Whether a call to ``model`` would go out at once (for hedging)."""
        return self._endpoint.circuit.state is State.CLOSED and self._model(model).circuit.state is State.CLOSED

    def opened(self, model: str) -> asyncio.Event:
        """Set while ``model``'s breaker or the endpoint's is not closed: a pending retry need not back off further."""
        return self._model(model).opened

    def snapshot(self) -> BreakerSnapshot:
        models = {m: b.circuit.state for m, b in self._models.items() if b.circuit.state is not State.CLOSED}
        return BreakerSnapshot(self._endpoint.circuit.state, models, self.trips, self._endpoint.trips)

    @property
    def state(self) -> str:
        """The worst state of the endpoint's breaker and any model's: open, half-open or closed."""
        return str(self.snapshot().worst)

    @property
    def trips(self) -> int:
        """How often a breaker here (the endpoint's or a model's) opened."""
        return sum(b.trips for b in self._breakers.values())

    async def aclose(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync
            self._sync = None
        if self._shared is not None:
            await self._shared.aclose()

    # -- the call ----------------------------------------------------------------------------------------------

    async def handle(self, request: ChatRequest) -> ChatResult:
        pair = (self._endpoint, self._model(request.model))
        if self._shared is not None and not (pair[0].known and pair[1].known):
            await self._first_read(pair)
        waiting_since: float | None = None
        try:
            while True:
                trialled = await self._admit(pair)
                if trialled is None:
                    if waiting_since is None:
                        waiting_since = self._start_waiting(pair)
                    await self._wait(request, pair, waiting_since)
                    continue
                started = self._clock.now()
                try:
                    if trialled:
                        result = await self._trial(request, pair[1], trialled)
                    else:
                        result = await self._inner.handle(request)
                except asyncio.CancelledError:
                    self._abandon(trialled)
                    raise
                except BreakerOpen:  # admitted while closed, held back at send time: it opened meanwhile
                    self._abandon(trialled)
                    if waiting_since is None:
                        waiting_since = self._start_waiting(pair)
                    continue
                except BaseException as exc:
                    outcome = policy.verdict(exc)
                    self._record(pair, trialled, outcome, exc)
                    if trialled and outcome in FAILED and not self._closed(pair):
                        continue  # the probe failed: wait for the next one instead of spending a retry
                    raise
                pair[1].recent.append(self._clock.now() - started)
                self._record(pair, trialled, Verdict.HEALTHY, None)
                return result
        finally:
            if waiting_since is not None:
                for b in pair:
                    b.waiting -= 1

    def _model(self, model: str) -> _Breaker:
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = _Breaker(f"model:{model}", model, self._policy, self._rng.random())
            self._breakers[found.name] = found
            self._update_opened(found)
        return found

    @staticmethod
    def _closed(pair: Pair) -> bool:
        return all(b.circuit.state is State.CLOSED for b in pair)

    async def _admit(self, pair: Pair) -> tuple[_Breaker, ...] | None:
        """``()`` to send normally; the breakers this attempt is the trial of; None to wait."""
        blocked = [b for b in pair if b.circuit.state is not State.CLOSED]
        if not blocked:
            return ()
        if not all(self._claimable(b, self._clock.now()) for b in blocked):
            return None
        if self._shared is not None and not await self._claim_shared(blocked, pair[1]):
            return None
        for b in blocked:
            self._set(b, policy.claimed(b.circuit), "next trial due")
        return tuple(blocked)

    def _claimable(self, b: _Breaker, now: float) -> bool:
        return not b.claiming and policy.may_claim(b.circuit, b.rules, now)

    async def _claim_shared(self, blocked: list[_Breaker], model: _Breaker) -> bool:
        """Claims the trial of each breaker across processes (while it does, no other call here tries). Refused (not
        due yet elsewhere, another process holds it, or it closed), it gives back what it took and the call waits."""
        assert self._shared is not None
        hold = policy.trial_timeout(model.recent, cap=float("inf")) + TRIAL_GRACE_S
        granted: list[_Breaker] = []
        for b in blocked:
            b.claiming = True
        try:
            for b in blocked:
                claim = await self._shared.claim_trial(b.name, hold)
                if not claim.granted:
                    if claim.closed:
                        self._set(b, policy.CLOSED, "closed elsewhere", share=False)
                    elif b.circuit.state is not State.CLOSED:  # not due yet elsewhere, or another process's trial
                        due = self._clock.now() + claim.wait_s
                        c = b.circuit
                        later = Circuit(State.OPEN, outage_started=c.outage_started, due=due, cause=c.cause)
                        self._set(b, later, TRIAL_ELSEWHERE, share=False)
                    break
                granted.append(b)
        finally:
            for b in blocked:
                b.claiming = False
        now = self._clock.now()
        if len(granted) == len(blocked) and all(policy.may_claim(b.circuit, b.rules, now) for b in blocked):
            return True
        for b in granted:
            self._shared.release_trial(b.name)
        for b in blocked:
            self._wake(b)  # the calls that waited on this claim look again
        return False

    async def _trial(self, request: ChatRequest, model: _Breaker, trialled: tuple[_Breaker, ...]) -> ChatResult:
        """The trial attempt, bounded by its own timeout: a trial that hangs is a failed trial."""
        timeout = policy.trial_timeout(model.recent, cap=request.timeout)
        attempt = asyncio.ensure_future(self._inner.handle(dataclasses.replace(request, trial=True, timeout=timeout)))
        finished = asyncio.Event()
        attempt.add_done_callback(lambda _: finished.set())
        try:
            if not await self._clock.wait(finished, timeout + TRIAL_GRACE_S):
                raise ProviderTimeout(
                    f"half-open trial got no answer within {timeout:.1f} s", kind="trial_timeout", scope=Scope.ENDPOINT
                )
            return attempt.result()
        finally:
            if not attempt.done():
                attempt.cancel()
                await asyncio.wait({attempt})
            if not attempt.cancelled():
                attempt.exception()  # retrieved: it was raised above, or superseded by the timeout

    def _abandon(self, trialled: tuple[_Breaker, ...]) -> None:
        for b in trialled:
            self._set(b, policy.trial_abandoned(b.circuit), "trial abandoned", share=False)
            if self._shared is not None:
                self._shared.release_trial(b.name)

    def _start_waiting(self, pair: Pair) -> float:
        for b in pair:
            b.waiting += 1
            if b.outage is not None:
                b.outage.waited += 1
        return self._clock.now()

    async def _wait(self, request: ChatRequest, pair: Pair, waiting_since: float) -> None:
        """Until a breaker of this call changes or its trial is due, within the outage budget; then BreakerOpen."""
        now = self._clock.now()
        call_ends = request.deadline if request.deadline is not None else waiting_since + request.timeout
        left = policy.outage_budget_left(now, waiting_since, budget=self._outage_wait, call_ends=call_ends)
        blocked = [b for b in pair if b.circuit.state is not State.CLOSED]
        if left <= 0:
            for b in blocked:
                if b.outage is not None:
                    b.outage.out_of_budget += 1
            what = " and ".join(f"{b.name} {b.circuit.state}" for b in blocked) or "closed"
            raise BreakerOpen(f"{self._route} circuit {what} (waited {now - waiting_since:.1f} s)", kind="breaker_open")
        # Every blocked breaker must let the trial go: the wait ends when the last one's is due (or something changes).
        due = max((self._trial_due(b, now) for b in blocked), default=now)
        try:
            await self._clock.wait(pair[1].changed, min(left, max(0.0, due - now)))
        finally:  # only the time spent here: a call that makes several trials must not count its first wait again
            request.record.waited_s += self._clock.now() - now

    def _trial_due(self, b: _Breaker, now: float) -> float:
        if self._claimable(b, now):
            return now
        if b.claiming:
            return float("inf")  # its outcome wakes us
        return b.circuit.due if b.circuit.state is State.OPEN else float("inf")  # half-open: its trial is out

    # -- outcomes and state changes ------------------------------------------------------------------------------

    def _record(self, pair: Pair, trialled: tuple[_Breaker, ...], outcome: Verdict, error: object) -> None:
        now = self._clock.now()
        cause = error.scope if isinstance(error, ProviderError) else None
        for b in pair:
            trial = b in trialled
            if outcome is Verdict.SILENT:
                if trial:
                    self._abandon((b,))
                continue
            if policy.fails(outcome, endpoint=b is self._endpoint):
                b.last_failure = str(error)[:200]
                new = policy.failed(
                    b.circuit, b.rules, now, trial=trial, cause=cause, jitter=b.jitter, model=pair[1].model or ""
                )
                self._set(b, new, "trial failed" if trial else f"{b.rules.fail_max} consecutive failures")
            else:
                self._set(b, policy.succeeded(b.circuit, b.rules, trial=trial), "trial succeeded")

    def _set(self, b: _Breaker, new: Circuit, reason: str, *, share: bool = True) -> None:
        """Moves a breaker to ``new``: wakes its waiters, logs and (``share``) publishes a change of state."""
        old, b.circuit = b.circuit, new
        if old == new:
            return
        b.version += 1
        if old.state is new.state:
            if new.due < old.due or new.trials < old.trials:
                self._wake(b)  # a trial became due sooner, or one was given up: waiters look again
            return
        now = self._clock.now()
        if new.state is State.OPEN and reason != TRIAL_ELSEWHERE:  # not a new opening: waiting for another's trial
            b.trips += 1
            b.jitter = self._rng.random()
            if b.outage is None:
                b.outage = _Outage(started=now)
                self._log.warning(
                    "outage", route=self._route, model=b.model, phase="started", last_failure=b.last_failure
                )
        if new.state is State.CLOSED:
            self._end_outage(b)
        if share and self._shared is not None:
            if new.state is State.OPEN:
                self._shared.mark_open(b.name, max(0.0, new.due - now))
            elif new.state is State.CLOSED:
                self._shared.mark_closed(b.name)
        self._log.warning(
            "breaker_state_change",
            route=self._route,
            model=b.model,
            from_state=str(old.state),
            to_state=str(new.state),
            reason=reason,
            failures=b.rules.fail_max if old.state is State.CLOSED else None,
            last_failure=b.last_failure if new.state is State.OPEN else None,
            trips=b.trips,
            next_trial_s=round(new.due - now, 3) if new.state is State.OPEN else None,
        )
        if b is self._endpoint and new.state is State.CLOSED:
            # The endpoint is back: a model stopped by the endpoint's own failures may try again at once.
            for m in self._models.values():
                if m.circuit.cause is Scope.ENDPOINT:
                    self._set(m, policy.due_now(m.circuit, now), "endpoint recovered")
        self._wake(b)

    def _wake(self, b: _Breaker) -> None:
        for affected in self._models.values() if b is self._endpoint else (b,):
            affected.wake()
            self._update_opened(affected)

    def _update_opened(self, model: _Breaker) -> None:
        if self._endpoint.circuit.state is not State.CLOSED or model.circuit.state is not State.CLOSED:
            model.opened.set()
        else:
            model.opened.clear()

    def _end_outage(self, b: _Breaker) -> None:
        outage, b.outage = b.outage, None
        if outage is not None:
            self._log.warning(
                "outage",
                route=self._route,
                model=b.model,
                phase="ended",
                duration_s=round(self._clock.now() - outage.started, 3),
                calls_waited=outage.waited,
                calls_resumed=b.waiting,  # still waiting as it closes: they go on through the limit now
                calls_out_of_budget=outage.out_of_budget,
            )

    # -- shared state ------------------------------------------------------------------------------------------

    async def _first_read(self, pair: Pair) -> None:
        """A process's first call (and a model's first call in it) learns the shared state before sending: one round
        trip, bounded; from then on the background task keeps it current."""
        assert self._shared is not None
        if self._sync is None:
            self._sync = asyncio.create_task(self._shared.run(self._versions, self._apply, self._resync))
        unread = [b for b in pair if not b.known and b.reading is None]
        if unread:
            reading = asyncio.ensure_future(self._read_once(unread))
            for b in unread:
                b.reading = reading
        await asyncio.gather(*{b.reading for b in pair if b.reading is not None})

    async def _read_once(self, unread: list[_Breaker]) -> None:
        assert self._shared is not None
        try:
            versions = {b.name: b.version for b in unread}
            views = await self._shared.read(list(versions))
            if views is not None:
                self._apply(views, versions)
        finally:
            for b in unread:
                b.known, b.reading = True, None

    def _versions(self) -> dict[str, int]:
        return {name: b.version for name, b in self._breakers.items()}

    def _apply(self, views: dict[str, SharedView], versions: Mapping[str, int]) -> None:
        """Takes what other processes did, for every breaker that did not change here since it was read."""
        now = self._clock.now()
        for name, view in views.items():
            b = self._breakers.get(name)
            if b is None or b.version != versions.get(name):
                continue
            c = b.circuit
            if not view.open:
                if c.state is not State.CLOSED and c.trials == 0:
                    self._set(b, policy.CLOSED, "closed elsewhere", share=False)
                continue
            if b.claiming or (c.state is State.HALF_OPEN and c.trials > 0):
                continue  # our own trial is being claimed or is out
            started = now - view.outage_s
            new = Circuit(State.OPEN, outage_started=min(started, c.outage_started or started), due=now + view.wait_s)
            if c.state is State.CLOSED or abs(new.due - c.due) > 0.05:
                self._set(b, dataclasses.replace(new, cause=c.cause), "opened elsewhere", share=False)

    def _resync(self) -> None:
        """Redis is back: write this process's view of every breaker that is not closed."""
        assert self._shared is not None
        now = self._clock.now()
        for b in self._breakers.values():
            if b.circuit.state is not State.CLOSED:
                self._shared.mark_open(b.name, max(0.0, b.circuit.due - now))
