"""A discrete-event simulation of callers, the adaptive limit and an endpoint, on a simulated clock (no sleeps).

Callers each make calls one after another; every attempt takes a permit of the limit (FIFO), and a refused attempt
is tried again after the endpoint's Retry-After, which pauses every caller (the shared gate). The endpoint takes at
most ``capacity`` attempts at once (beyond: an immediate 429), serves them with ``workers`` parallel workers (beyond:
a FIFO queue, so latency rises) and can change its capacity at given times.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from resilient_llm.policy import gate as gates
from resilient_llm.policy import pacing
from resilient_llm.policy.concurrency import (
    LimitPolicy,
    LimitState,
    Sample,
    Signal,
    forgive,
    initial_state,
    probes_the_edge,
    update,
)

REFUSAL_S = 0.002  # a 429 comes back at once


@dataclass
class Endpoint:
    capacity: int | None = None  # attempts admitted at once; None: unlimited
    workers: int | None = None  # attempts served at once, the rest queue; None: unlimited
    latency: Callable[[random.Random], float] = lambda rng: rng.uniform(0.4, 0.6)
    tokens: Callable[[random.Random], int | None] = lambda rng: 12
    retry_after: float = 1.0
    rate: float | None = None  # a token bucket: admitted attempts per second, beyond: an immediate 429
    burst: int = 50
    refuse_share: float = 0.0  # this share of attempts gets a 429 whatever the load (a flaky rate limiter)
    late_refusals: bool = False  # a 429 takes as long as an answer (a bucket behind a proxy), not ``REFUSAL_S``
    capacity_changes: list[tuple[float, int]] = field(default_factory=list)  # (at time, new capacity)
    slowdown: tuple[float, float] | None = None  # (from time, factor): every answer takes this much longer


@dataclass
class Result:
    limits: list[tuple[float, int]]  # (time, permits) at every change
    wall: float
    completed: int
    requests: int
    refusals: int
    peak_admitted: int
    states: list[LimitState]
    latencies: list[float]  # of the attempts that got an answer, in the order they finished
    arrivals: list[tuple[float, bool]]  # (time, refused) of every attempt the endpoint saw
    pauses: int = 0  # times the gate paused every caller

    @property
    def calls_per_s(self) -> float:
        return self.completed / self.wall

    def permits_at(self, when: float) -> int:
        value = self.limits[0][1]
        for at, permits in self.limits:
            if at > when:
                break
            value = permits
        return value

    def refusal_share(self, start: float, end: float) -> float:
        """The share of attempts refused among those that reached the endpoint in [start, end)."""
        window = [refused for at, refused in self.arrivals if start <= at < end]
        return sum(window) / max(1, len(window))


def simulate(
    endpoint: Endpoint,
    *,
    callers: int,
    calls: int,
    config: LimitPolicy | None = None,
    fixed: int | None = None,
    seed: int = 0,
    gate: bool = True,
    gate_policy: gates.GatePolicy | None = None,
    pace: bool = True,
    pace_policy: pacing.PacePolicy | None = None,
) -> Result:
    """Run ``calls`` calls from ``callers`` callers; ``fixed`` replaces the adaptive limit by a fixed one (and
    turns pacing off, as the limit layer's fixed mode does); ``pace`` False turns pacing off."""
    config = config or LimitPolicy()
    rng = random.Random(seed)
    state = initial_state(config)
    permits = fixed if fixed is not None else state.permits
    events: list[tuple[float, int, str, tuple[object, ...]]] = []
    seq = itertools.count()
    waiting: collections.deque[int] = collections.deque()
    queue: collections.deque[tuple[float, int, int]] = collections.deque()  # admitted, waiting for a worker
    capacity = endpoint.capacity
    now = 0.0
    in_flight = admitted = serving = started_calls = completed = requests = refusals = peak = 0
    gate_policy, gate_state = gate_policy or gates.GatePolicy(), gates.GateState()
    pace_state = pacing.PaceState()
    pace_policy = (pace_policy or pacing.PacePolicy()) if pace and fixed is None else None
    pace_woken = -1.0  # when a "pace" event is due, if one is
    pauses = 0
    tokens, refilled = float(endpoint.burst), 0.0
    limits = [(0.0, permits)]
    states: list[LimitState] = []
    arrivals: list[tuple[float, bool]] = []
    latencies: list[float] = []

    def push(at: float, kind: str, *payload: object) -> None:
        heapq.heappush(events, (at, next(seq), kind, payload))

    judges: set[int] = set()  # callers whose attempt in flight judges the gate's last pause

    def start_attempt(caller: int) -> None:
        nonlocal in_flight, admitted, serving, requests, refusals, peak, tokens, refilled, gate_state, pace_state
        if pace_policy is not None:
            pace_state = pacing.sent(pace_policy, pace_state, now)
        if gate:
            gate_state, judge = gates.sending(gate_policy, gate_state, now)
            if judge:
                judges.add(caller)
        in_flight += 1
        requests += 1
        if endpoint.rate is not None:
            tokens, refilled = min(float(endpoint.burst), tokens + (now - refilled) * endpoint.rate), now
        full = capacity is not None and admitted >= capacity
        if full or (endpoint.rate is not None and tokens < 1) or rng.random() < endpoint.refuse_share:
            refusals += 1
            arrivals.append((now, True))
            push(now + (service() if endpoint.late_refusals else REFUSAL_S), "done", caller, now, in_flight, False)
            return
        arrivals.append((now, False))
        tokens -= 1
        admitted += 1
        peak = max(peak, admitted)
        if endpoint.workers is None or serving < endpoint.workers:
            serving += 1
            push(now + service(), "done", caller, now, in_flight, True)
        else:
            queue.append((now, caller, in_flight))

    def service() -> float:
        factor = endpoint.slowdown[1] if endpoint.slowdown and now >= endpoint.slowdown[0] else 1.0
        return endpoint.latency(rng) * factor

    def drain() -> None:
        nonlocal pace_state, pace_woken
        while waiting and in_flight < permits and not gates.is_shut(gate_state, now):
            wait = 0.0 if pace_policy is None else pacing.wait_s(pace_policy, pace_state, now)
            if wait > 0:
                if pace_woken <= now:
                    pace_woken = now + wait
                    push(pace_woken, "pace")
                return
            start_attempt(waiting.popleft())
        if pace_policy is not None and not waiting and not in_flight:
            pace_state = pacing.idle(pace_state, now)

    for caller in range(min(callers, calls)):
        started_calls += 1
        push(0.0, "want", caller)
    for at, new_capacity in endpoint.capacity_changes:
        push(at, "capacity", new_capacity)
    while events and completed < calls:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "capacity":
            capacity = int(payload[0])  # type: ignore[call-overload]
        elif kind == "want":
            waiting.append(int(payload[0]))  # type: ignore[call-overload]
        elif kind == "done":
            finished, began, flight, served = payload
            assert isinstance(finished, int)
            assert isinstance(began, float | int)
            assert isinstance(flight, int)
            in_flight -= 1
            if served:
                admitted -= 1
                serving -= 1
                if queue:
                    queued_at, next_caller, next_flight = queue.popleft()
                    serving += 1
                    push(now + service(), "done", next_caller, queued_at, next_flight, True)
            output = endpoint.tokens(rng) if served else None
            was_shut = gates.is_shut(gate_state, now)
            resting = gates.refusals_ignore_load(gate_state, now)
            if gate:
                retry_after = None if served else endpoint.retry_after
                judge = finished in judges
                judges.discard(finished)
                probe = not served and fixed is None and probes_the_edge(state, flight)
                gate_state = gates.finished(
                    gate_policy, gate_state, now, float(began), not served, retry_after, judge, probe=probe
                )
            signal = Signal.OK if served else Signal.BACKPRESSURE
            if not served and gates.refusals_ignore_load(gate_state, now):
                signal = Signal.FAILURE  # refusals whatever the load: not about the limit
            burst = not was_shut and gates.is_shut(gate_state, now)
            paced = gate_state.helped
            sample = Sample(
                signal,
                float(began),
                now,
                flight,
                in_flight + 1,
                output,
                burst=burst,
                paced=paced,
                shut=gates.shut_so_far(gate_state, now),
                background=gate_state.background,
            )
            if fixed is None:
                state = update(config, state, sample)
                if not resting and gates.refusals_ignore_load(gate_state, now):
                    state = forgive(config, state, now)
                states.append(state)
                if state.permits != permits:
                    permits = state.permits
                    limits.append((now, permits))
            if served:
                if pace_policy is not None:
                    pace_state = pacing.answered(pace_state, now, now - float(began))
                latencies.append(now - float(began))
                completed += 1
                if started_calls < calls:
                    started_calls += 1
                    waiting.append(finished)
            if not served:
                if pace_policy is not None:
                    pace_state = pacing.refused(pace_policy, pace_state, now, float(began))
                push(now + endpoint.retry_after, "want", finished)  # a refused call waits its own Retry-After
            if burst:
                pauses += 1
                push(gate_state.shut_until, "gate")
                if pace_policy is not None:
                    pace_state = pacing.paused(
                        pace_policy, pace_state, now, gate_state.shut_until, state.limit, gate_state.helped
                    )
        drain()
    return Result(limits, now, completed, requests, refusals, peak, states, latencies, arrivals, pauses)
