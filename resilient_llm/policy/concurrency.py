"""Adaptive concurrency: how many attempts one endpoint should have in flight, learned from attempts that finish.

Pure: no clock, no I/O. The caller hands each finished attempt in as a ``Sample`` (start, end, in flight at both,
what came back) and keeps the ``LimitState``. Anchors: Netflix concurrency-limits, Envoy's adaptive concurrency, TCP.

**Growth.** Until the first decrease, every answer adds 2 permits (slow start, x3 per round trip): from the old
fixed cap of 20, 64 callers are served after one round trip. After a decrease, CUBIC (RFC 9438) on the time since
it: fast back to just under the level that drew the refusal, a long plateau there, then ever faster probing above
it. Refusals, and the Retry-After pauses of every call they bring, stay ~10 s apart at 100 in flight, yet a doubled
capacity is found within ~20 s. Only answers that found the limit in use count (``in_flight >= 0.5 * limit`` at the
start or the end, Netflix's rule): an idle limit has learned nothing and must not creep up to the ceiling.

**Refusals** (429, in-flight-budget 402) are judged once per window (one round trip and at least
``min_window_samples`` attempts). When every refused attempt had at least as many in flight as every answered one,
the endpoint's capacity is in between: cut to ``backoff_ratio`` times the lowest refused level, deeper when more of
the window's slot time went to refused attempts (``1 - share / 2``, DCTCP's rule, at most halving: a token bucket
whose 429 comes after an answer's latency has every attempt in flight refused by the time the first refusal is back,
and 10% per burst left 1.30 requests per call in the simulation, 1.18 with it). Slot time, not a count of attempts: a
429 sent back at once frees its slot for the next queued caller at once, so at a capacity edge with 1000 callers
refusals outnumber answers whatever the overshoot (counted, one cut took 92 to 57 after a pause); on the wire the
late-429 bucket went from 1.19-1.25 to 1.12-1.17 requests per call with slot time. A window with no answer at all is
cut by a plain tenth of the limit, yet CUBIC levels off below the fewest in flight that any of its attempts was
refused at (levelling off at the limit, 107 over an edge of 100, drew a second cut 6 s later). A window shorter than
half an answer's latency holds refusals sent back at once and hardly an answer, so its slot time is not weighed
(eight such 429s read as all slot time refused and halved the limit, 104 to 52, at an edge of 100). Then CUBIC levels
off one below the refused level. The cut ending slow start is squared: refusals in transit count as in flight, so an
overshoot's lowest refused level lies above capacity (~113 at 100; one 10% cut left the limit over it, drawing a
second pause).
Refusals among answers at higher levels, or a lone one while the limit idles (it cut 54 to 4 between a trainer's
batches), or too few at the top level to be told from a limiter refusing at random (a binomial tail at the
background share under 5%: 2 of 10 at 4% random 429s come once in 17 windows, and such windows cut a trainer's limit
54 to 2 in 5 s), are not about our concurrency: the gate (``policy/gate.py``) paces those. The reverse holds for the
limit's own probes: out of slow start, a 429 at or past the level refused last time (``probes_the_edge``; within a
tenth under it when slow start's overshoot found that level, which lies above the capacity: 104-122 on the wire for
an edge of 100, and the first 429 at 101 paused every call for 1 s) is CUBIC finding the known edge again, and its
cut answers it; the gate does not pause for it (three such 429s in a row come
within milliseconds when 1000 callers queue, and each pause idled the endpoint's other 100 slots for 1 s: capacity
16.9-18.2 s over three runs with this, 18.8-19.8 s without). Once per window: a burst of 429s counts once;
attempts whose slot was granted before a decrease are not judged again.

A rate limit (a token bucket) has no concurrency edge: it refuses whatever is in flight once its tokens are spent,
and a gate pause refills it. So once the gate's pauses were seen to help (``Sample.paced``), a burst is the limit's
to cut even among answers at higher levels (a late-429 bucket kept the limit at 66 over four pauses, 30 requests
lost in each, 1.32 requests per call; 1.12-1.22 over eleven runs with this), and the cut goes down to twice what
the endpoint sustained since the last cut, in attempts in flight: the seconds of answers it served over the seconds
elapsed (Little's law; BBR's gain of 2 on the bandwidth-delay product). A bucket of 50/s with 50 ms answers sustains
2.5 in flight, and 10% or DCTCP cuts from 20 left most of every burst's attempts refused (the simulation's late-429
bucket: 1.20 requests per call, 1.16 with it; the immediate one 1.08, 1.05). At a capacity edge, in steady state,
what was sustained is about the limit itself, so twice it does not bind; right after a gate pause, whose second
counted as elapsed, read a capacity edge as sustaining half of it (106 to 53, then 20 s of climbing back): the rate
is taken only once the gate has been open two answer latencies since the last cut, so the attempts have turned over.
Once two gate cycles have measured the bucket's rate, pacing (``policy/pacing.py``) holds attempts to it, finer than
any number in flight can.

Refusals that come whatever our load (a limiter refusing 60% at random) look like an edge when every attempt sees
the same in-flight level. The gate tells: when its pauses do not help, ``forgive`` takes back the cuts since the
last forgiveness and refusals teach the limit nothing for a while.

**Timeouts** cut by ``backoff_ratio`` at once, as a drop (Netflix AIMD), once per limit: from the level in use, or
from the limit when it idled (a hang at 2 in flight cut 54 to 2 between a trainer's batches).

**Queueing** (Gradient2 with rttTolerance, Envoy's gradient controller): a window whose mean latency signal exceeds
``tolerance`` times the baseline, while the limit was in use, cuts the limit by ``tolerance * baseline / mean``,
never below ``latency_backoff_min``. The baseline is the lowest window mean, creeping towards later ones by
``1 / baseline_windows`` per window. Window means, not single minima, because answers vary. Two latency cuts in a row
that did not make answers faster mean the endpoint itself got slower (another provider): the baseline moves there.
A queue we cause grows with what we send: when attempts started with under half the limit in flight were about as
slow as those started above it, the slowness is not ours to cut (a CPU-bound trainer's GIL slows every answer it
reads, at 5 in flight as at 17, by more than the loop lag shows; it cut 36 to 3 in a test of ten thread pools).

**The latency signal.** Judge answers vary in length, so raw latency mixes queueing with output size. Time to
headers does not help: OpenRouter sends a non-streamed answer's headers when generation is done. Per output token
mixes in the fixed part (routing, network, prompt), which dominates short answers. So the signal is the latency
scaled to an answer of ``token_floor`` tokens, ``latency * min(1, token_floor / completion_tokens)``: short answers
(a score) count at plain latency, where a queue shows as waiting; long ones per token, where a busy server shows as
slower decoding. 32 tokens is about where decoding (10-20 ms a token) outweighs the fixed 0.3-0.5 s.

**Bounds.** ``min_limit`` 1; ``max_limit`` 256, the ceiling the HTTP pool is sized to: 256 sockets fit the common
1024 open-files limit beside a second route's pool and the trainer's files, and 256 judge calls in flight at 1-2 s
are 130-250 calls/s, a step's thousands of judge calls in seconds; OpenRouter's limits are per account, so it pushes
back before that binds. Failures without a signal (resets, 5xx: the breaker's) and cancelled attempts change nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
from dataclasses import dataclass

from resilient_llm.errors import BreakerOpen, ConfigError, ProviderTimeout, is_backpressure

EDGE_MARGIN = 2.0  # permits past the last refused level after which the limit is no longer at the capacity's edge
CHANCE = 0.05  # refusals at the top level cut only when at least this unlikely to come at the background share
OVERSHOOT_MARGIN = 0.9  # a refusal this close under slow start's overshoot level is the edge found again
PACED_GAIN = 2.0  # a rate limit's cut: this many times the attempts in flight it sustained (BBR's cwnd gain)


class Signal(enum.StrEnum):
    """What one finished attempt says about the endpoint's capacity."""

    OK = "ok"  # a usable answer (a caller mistake is an answer too)
    BACKPRESSURE = "backpressure"  # 429, or 402 in-flight budget: too much in flight
    TIMEOUT = "timeout"  # the attempt ran out of time: treated as a drop
    FAILURE = "failure"  # failed in a way that says nothing about capacity
    CANCELLED = "cancelled"  # never finished: a hedge lost, the caller gave up, the breaker refused


def signal_of(error: BaseException | None) -> Signal:
    """The signal of an attempt that returned (``None``) or raised ``error``."""
    if error is None:
        return Signal.OK
    if isinstance(error, (asyncio.CancelledError, BreakerOpen)):
        return Signal.CANCELLED
    if is_backpressure(error):
        return Signal.BACKPRESSURE
    if isinstance(error, ProviderTimeout) and error.kind != "pool_timeout":  # our own pool is not the endpoint
        return Signal.TIMEOUT
    return Signal.FAILURE


def _check(name: str, value: object, ok: bool, accepted: str) -> None:
    if not ok or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"concurrency limit {name}={value!r}: expected {accepted}")


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """How the limit moves. Defaults are argued in the module docstring; ``ConfigError`` names a bad field."""

    initial: int = 20  # the old fixed cap: the first round trip behaves as before
    min_limit: int = 1
    max_limit: int = 256  # the ceiling; size the HTTP pool to it
    backoff_ratio: float = 0.9  # per backpressure window or timeout (Netflix AIMD's default)
    slow_start_step: float = 2.0  # permits per good answer until the first decrease: x3 per round trip
    cubic: float = 0.02  # CUBIC's C after a decrease, permits/s^3: ~11 s from one refusal to the next at 100
    min_utilisation: float = 0.5  # grow only while attempts find this share of the limit in use (Netflix's rule)
    separation: float = 0.9  # refusals count when refused in_flight >= this times the most that got answers
    tolerance: float = 1.5  # window latency over baseline beyond this is a queue (Gradient2's rttTolerance)
    latency_backoff_min: float = 0.75  # one latency decrease cuts at most this deep
    baseline_windows: int = 100  # a lasting rise moves the baseline 1/n of the gap per window
    min_window_samples: int = 8  # finished attempts a window needs before it is judged
    token_floor: int = 32  # latency is scaled to an answer of this many tokens
    min_refused_share: float = 0.15  # refusals cut when at least this share of what was sent at their level
    client_bound_share: float = 0.5  # our own delay beyond this share of an answer (or of the baseline): not timed

    def __post_init__(self) -> None:
        for name in ("initial", "min_limit", "max_limit", "baseline_windows", "min_window_samples", "token_floor"):
            value = getattr(self, name)
            _check(name, value, isinstance(value, int) and value >= 1, "an integer >= 1")
        _check("max_limit", self.max_limit, self.max_limit >= self.min_limit, f"an integer >= {self.min_limit}")
        span = f"an integer in [{self.min_limit}, {self.max_limit}] (min_limit..max_limit)"
        _check("initial", self.initial, self.min_limit <= self.initial <= self.max_limit, span)
        for name, low, high, accepted in (
            ("backoff_ratio", 0.5, 0.99, "a number in [0.5, 0.99]"),
            ("slow_start_step", 0.1, 4.0, "a number in [0.1, 4]"),
            ("cubic", 0.001, 10.0, "a number in [0.001, 10]"),
            ("min_utilisation", 0.0, 1.0, "a number in [0, 1]"),
            ("separation", 0.0, 1.0, "a number in [0, 1]"),
            ("tolerance", 1.05, 10.0, "a number in [1.05, 10]"),
            ("latency_backoff_min", 0.1, 0.99, "a number in [0.1, 0.99]"),
            ("min_refused_share", 0.0, 1.0, "a number in [0, 1]"),
            ("client_bound_share", 0.05, 1.0, "a number in [0.05, 1]"),
        ):
            value = getattr(self, name)
            _check(name, value, isinstance(value, int | float) and low <= value <= high, accepted)


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished attempt: times in seconds on the caller's monotonic clock; in-flight counts include itself."""

    signal: Signal
    start: float
    end: float
    in_flight: int  # attempts in flight when it started
    in_flight_end: int | None = None  # ... and when it finished (None: as at the start)
    completion_tokens: int | None = None  # from ``usage``, when the provider sent it
    client_delay: float = 0.0  # of its latency, seconds our own process was late (its event loop lagging)
    burst: bool = False  # a refusal that made the gate pause (refusals in a row: ``policy/gate.py``)
    paced: bool = False  # the gate's last judged pause helped: the endpoint refuses by rate (a token bucket)
    shut: float = 0.0  # seconds the model's gate has been shut so far, every pause added up (``gate.shut_so_far``)
    background: float = 0.0  # the share of the model's attempts refused in general (the gate's moving average)
    granted: float | None = None  # when its slot was granted, if before ``start`` (it queued; the limit may have moved)

    def __post_init__(self) -> None:
        _check("Sample.start", self.start, math.isfinite(self.start), "a finite number of seconds")
        _check("Sample.end", self.end, math.isfinite(self.end) and self.end >= self.start, "a time >= start")
        _check("Sample.in_flight", self.in_flight, isinstance(self.in_flight, int) and self.in_flight >= 1, ">= 1")
        end = self.in_flight_end
        _check("Sample.in_flight_end", end, end is None or (isinstance(end, int) and end >= 1), "None or >= 1")
        delay = self.client_delay
        _check("Sample.client_delay", delay, isinstance(delay, int | float) and delay >= 0, "a number of seconds >= 0")


@dataclass(frozen=True, slots=True)
class Window:
    """Attempts finished since the window opened; it closes one round trip later (an attempt started after it
    opened has come back) with at least ``min_window_samples`` attempts, and is then judged once."""

    opened: float | None = None
    shut_opened: float = 0.0  # the gate's seconds shut so far (``Sample.shut``) when the window opened
    samples: int = 0
    answered: int = 0
    timed: int = 0  # answered attempts whose latency was the server's (not mostly our own process's delay)
    latency_sum: float = 0.0  # of the timed attempts' latency signals
    low_timed: int = 0  # timed attempts started with under ``min_utilisation`` of the limit in flight
    low_latency_sum: float = 0.0  # ... and their latency signals
    delay_sum: float = 0.0  # of the answered attempts' client delays (our own process's part of their latency)
    peak: int = 0  # most attempts in flight seen
    answered_max: int = 0  # most attempts in flight at the start of one that got an answer
    refused_min: int | None = None  # fewest in flight at the start of one that was refused
    answered_top: int = 0  # answered with in flight >= ``separation`` times the most seen answered so far
    bursts: int = 0  # refusals among them that made the gate pause
    busy: float = 0.0  # seconds the window's attempts held their slots, added up
    refused_busy: float = 0.0  # ... of them, the refused attempts'


@dataclass(frozen=True, slots=True)
class LimitState:
    """The limit and what it remembers. ``reason`` says why the last ``update`` changed ``permits`` (else None)."""

    limit: float
    slow_start: bool = True
    decreased_at: float = -math.inf  # attempts started before this were sent under an older limit
    plateau: float = 0.0  # where CUBIC levels off after the last decrease (its W_max)
    cubic_k: float = 0.0  # seconds after the last decrease at which CUBIC reaches the plateau
    window: Window = Window()
    baseline: float | None = None  # the latency signal's observed floor
    cut_mean: float | None = None  # the window latency behind the last latency decrease, until the next window
    cut_ratio: float = 1.0  # the share of the attempts then in flight that it left
    futile_cuts: int = 0  # latency decreases in a row after which answers did not get faster
    refused_level: float | None = None  # the level the last backpressure cut found refused
    overshoot: bool = False  # ... by slow start's overshoot, which counts refusals in transit as in flight
    before_refusals: float | None = None  # the limit before the backpressure cuts since the last ``forgive``
    served: float = 0.0  # seconds of answered attempts since the last decrease (their latencies added up)
    shut: float = 0.0  # the gate's seconds shut so far, as of the last sample
    shut_at_decrease: float = 0.0  # ... as of the last decrease: time since then in which nothing could be sent
    reason: str | None = None

    @property
    def permits(self) -> int:
        """The limit as a whole number of attempts."""
        return int(self.limit)


def initial_state(config: LimitPolicy) -> LimitState:
    return LimitState(limit=float(config.initial))


def at_capacity_edge(config: LimitPolicy, state: LimitState) -> bool:
    """Whether the limit is back near the level the endpoint last refused (an extra attempt now, a hedge, would
    likely draw a 429): from just under it until the limit has passed it by a few permits without a new refusal."""
    level = state.refused_level
    return level is not None and config.backoff_ratio * level - 1.0 <= state.limit <= level + EDGE_MARGIN


def probes_the_edge(state: LimitState, in_flight: int) -> bool:
    """Whether a refusal of an attempt sent at ``in_flight`` is the limit's own probe past the capacity edge it found
    before: out of slow start, at or above the level refused last time (a tenth under it, if slow start's overshoot
    found it: refusals in transit counted as in flight). The limit's cut answers it; a gate pause
    would idle every other slot for the Retry-After (at 100 in flight, each cost 1 s of 200 calls/s)."""
    if state.slow_start or state.refused_level is None:
        return False
    return in_flight >= state.refused_level * (OVERSHOOT_MARGIN if state.overshoot else 1.0)


def adopt(config: LimitPolicy, state: LimitState, limit: float) -> LimitState:
    """The state with another limit (the shared value of several processes), clamped to the bounds."""
    _check("limit", limit, isinstance(limit, int | float) and not math.isnan(limit), "a number")
    return dataclasses.replace(state, limit=min(config.max_limit, max(config.min_limit, limit)), reason=None)


def follow(config: LimitPolicy, state: LimitState, limit: float, now: float) -> LimitState:
    """After another process cut the shared limit to ``limit`` at ``now``: as after a backpressure cut of one's own
    (slow start over, CUBIC back to just under the refused ``limit / backoff_ratio``). Adopting the value alone would
    leave a process that saw no refusal in slow start, adding 2 permits per answer over the edge found elsewhere."""
    state = adopt(config, state, limit)
    plateau = max(state.limit, state.limit / config.backoff_ratio - 1.0)
    return dataclasses.replace(
        state,
        slow_start=False,
        decreased_at=now,
        plateau=plateau,
        cubic_k=((plateau - state.limit) / config.cubic) ** (1 / 3),
        window=Window(),
        cut_mean=None,
        served=0.0,
        shut_at_decrease=state.shut,
    )


def forgive(config: LimitPolicy, state: LimitState, now: float) -> LimitState:
    """Take back the backpressure cuts since the last forgiveness: their refusals were shown to come whatever our
    load (the gate's pauses did not help, ``policy/gate.py``). CUBIC probes on from the level they cut."""
    if state.before_refusals is None:
        return state if state.reason is None else dataclasses.replace(state, reason=None)
    limit = max(state.limit, min(float(config.max_limit), state.before_refusals))
    return dataclasses.replace(
        state,
        limit=limit,
        slow_start=False,
        decreased_at=now,
        plateau=limit,
        cubic_k=0.0,
        window=Window(),
        cut_mean=None,
        refused_level=None,
        before_refusals=None,
        served=0.0,
        shut_at_decrease=state.shut,
        reason="forgiven" if int(limit) != state.permits else None,
    )


def update(config: LimitPolicy, state: LimitState, sample: Sample) -> LimitState:
    """The state after one finished attempt."""
    if state.reason is not None or sample.shut > state.shut:
        state = dataclasses.replace(state, reason=None, shut=max(state.shut, sample.shut))
    if sample.signal is Signal.OK and sample.end > state.decreased_at:
        state = dataclasses.replace(state, served=state.served + sample.end - max(sample.start, state.decreased_at))
    granted = sample.start if sample.granted is None else min(sample.start, sample.granted)
    if sample.signal in (Signal.FAILURE, Signal.CANCELLED) or granted < state.decreased_at:
        return state  # no news, or news about a limit already left behind (its slot was granted under it)
    if sample.signal is Signal.TIMEOUT:
        level = float(max(sample.in_flight, sample.in_flight_end or 0))
        level = state.limit if level < config.min_utilisation * state.limit else min(state.limit, level)
        return _decrease(config, state, level, config.backoff_ratio, sample.end, "timeout")
    if sample.signal is Signal.OK:
        state = _grow(config, state, sample)
    return _judge(config, state, _record(config, state.window, sample, state.limit), sample)


def _record(config: LimitPolicy, window: Window, sample: Sample, limit: float) -> Window:
    refused = sample.signal is Signal.BACKPRESSURE
    latency = sample.end - sample.start
    # Our own loop's lateness (CPU-bound callers, the GIL) is not the server's queue: taken out of the signal, and an
    # answer whose latency was mostly ours is not timed at all.
    timed = not refused and sample.client_delay <= config.client_bound_share * latency
    answered_max = window.answered_max if refused else max(window.answered_max, sample.in_flight)
    top = not refused and sample.in_flight >= config.separation * answered_max
    signal = max(0.0, latency - sample.client_delay)
    if sample.completion_tokens:
        signal *= min(1.0, config.token_floor / sample.completion_tokens)
    low = timed and sample.in_flight < config.min_utilisation * limit
    return Window(
        opened=sample.end if window.opened is None else window.opened,
        shut_opened=sample.shut if window.opened is None else window.shut_opened,
        samples=window.samples + 1,
        answered=window.answered + (not refused),
        timed=window.timed + timed,
        latency_sum=window.latency_sum + (signal if timed else 0.0),
        low_timed=window.low_timed + low,
        low_latency_sum=window.low_latency_sum + (signal if low else 0.0),
        delay_sum=window.delay_sum + (0.0 if refused else sample.client_delay),
        peak=max(window.peak, sample.in_flight, sample.in_flight_end or 0),
        answered_max=answered_max,
        refused_min=min(window.refused_min or sample.in_flight, sample.in_flight) if refused else window.refused_min,
        answered_top=window.answered_top + top,
        bursts=window.bursts + (refused and sample.burst),
        busy=window.busy + latency,
        refused_busy=window.refused_busy + (latency if refused else 0.0),
    )


def _judge(config: LimitPolicy, state: LimitState, window: Window, sample: Sample) -> LimitState:
    """Judge a window once it closes: first for refusals, then for queueing."""
    assert window.opened is not None
    if sample.start < window.opened or window.samples < config.min_window_samples:
        return dataclasses.replace(state, window=window)
    state = dataclasses.replace(state, window=Window())
    refused = window.refused_min
    hiccup = window.samples - window.answered < 2 and window.peak < config.min_utilisation * state.limit
    # Refusal share against load: a capacity edge refuses much of what is sent at the top of the levels in use, and
    # answers below it; a limiter refusing a request here and there whatever the load also answers most attempts
    # sent at the top. Those refusals are each request's own (it waits its Retry-After), not the limit's.
    refusals = window.samples - window.answered
    at_level = refusals + window.answered_top
    share = refusals / at_level if at_level else 0.0
    above_answers = refused is not None and refused >= config.separation * window.answered_max
    # In slow start the first refusal above the answered levels is the edge (an overshoot that doubles per round trip
    # must stop now); after it, refusals must be a burst the gate paused for, or a share of the top level's attempts
    # that chance does not explain at the background share (which an edge's own refusals raise: at most half the
    # share that cuts).
    background = min(sample.background, config.min_refused_share / 2)
    load_related = (
        state.slow_start
        or window.bursts > 0
        or (share >= config.min_refused_share and _chance_of(refusals, at_level, background) < CHANCE)
    )
    rate_limited = sample.paced and window.bursts > 0
    if refused is not None and (above_answers or rate_limited) and load_related and not hiccup:
        # Refused above every level that got answers (the capacity's edge), or a burst at a rate limit: cut just below
        # the refused level (none answered: a plain cut of the limit; CUBIC still levels off below the refused level).
        level = min(state.limit, float(refused)) if window.answered_max else state.limit
        ratio = config.backoff_ratio**2 if state.slow_start else config.backoff_ratio
        # DCTCP: deeper the more of the window's slot time went to refused attempts. Slot time, not a count: a 429
        # sent back at once frees its slot for the next queued caller, so with 1000 callers at a capacity edge
        # refusals outnumber answers whatever the overshoot (a count cut 92 to 57 there after a pause).
        refused_share = window.refused_busy / window.busy if window.busy > 0 else 0.0
        sending_s = sample.end - window.opened - (sample.shut - window.shut_opened)  # a pause in it sent nothing
        if state.baseline is not None and sending_s < state.baseline / 2:
            refused_share = 0.0  # quick refusals and hardly an answer yet: the slot time says nothing
        ratio = max(0.5, min(ratio, 1.0 - refused_share / 2))
        if rate_limited and math.isfinite(state.decreased_at) and sample.end > state.decreased_at:
            # A rate limit: what it sustained since the last cut, in attempts in flight (Little's law), twice over,
            # once the attempts have turned over; over the elapsed time, pauses included (a bucket refills in them).
            elapsed = sample.end - state.decreased_at
            open_s = elapsed - (state.shut - state.shut_at_decrease)
            answer_s = (window.busy - window.refused_busy) / window.answered if window.answered else math.inf
            if open_s >= 2 * answer_s:
                sustained = state.served / elapsed
                ratio = min(ratio, max(config.min_limit, PACED_GAIN * sustained) / max(level, 1.0))
        return _decrease(config, state, level, ratio, sample.end, "backpressure", edge=float(refused))
    if window.timed < config.min_window_samples:
        return state
    mean = window.latency_sum / window.timed
    baseline = mean if state.baseline is None else state.baseline
    if window.delay_sum / window.answered > config.client_bound_share * baseline:
        return state  # our own process is the bottleneck: fewer attempts in flight would not answer faster
    queueing = mean > config.tolerance * baseline and window.peak >= config.min_utilisation * state.limit
    if queueing and not _grows_with_load(config, window):
        queueing = False
    futile = 0
    if state.cut_mean is not None and mean >= state.cut_mean * (1.0 + state.cut_ratio) / 2:
        futile = state.futile_cuts + 1  # not even half as much faster as a shorter queue would have made it
    if queueing and futile >= 2:
        # Two latency decreases in a row did not shorten the answers: the endpoint itself got slower (another
        # provider, longer prompts). That is the new normal, not a reason to cut again.
        baseline, queueing, futile = mean, False, 0
    baseline = mean if mean < baseline else baseline + (mean - baseline) / config.baseline_windows
    state = dataclasses.replace(state, baseline=baseline, cut_mean=None, futile_cuts=futile)
    if not queueing:
        return state
    level = min(state.limit, float(window.peak))
    ratio = max(config.latency_backoff_min, config.tolerance * baseline / mean)
    cut = _decrease(config, state, level, ratio, sample.end, "latency")
    return dataclasses.replace(cut, cut_mean=mean, cut_ratio=cut.limit / max(level, 1.0), futile_cuts=futile)


def _chance_of(refused: int, attempts: int, background: float) -> float:
    """The chance that at least ``refused`` of ``attempts`` are refused when each is with probability ``background``
    (a binomial tail)."""
    if refused <= 0:
        return 1.0
    p = min(1.0, max(background, 1e-3))
    return sum(math.comb(attempts, k) * p**k * (1.0 - p) ** (attempts - k) for k in range(refused, attempts + 1))


def _grows_with_load(config: LimitPolicy, window: Window) -> bool:
    """Whether the window's answers were slower the more we had in flight: enough started with the limit in use,
    and they were at least half the tolerance slower than those started low, or too few started low to tell (a
    queue keeps the limit in use)."""
    enough = max(1, config.min_window_samples // 2)
    high = window.timed - window.low_timed
    if high < enough:
        return False
    if window.low_timed < enough:
        return True
    low_mean = window.low_latency_sum / window.low_timed
    high_mean = (window.latency_sum - window.low_latency_sum) / high
    return high_mean >= low_mean * (1.0 + (config.tolerance - 1.0) / 2)


def _decrease(
    config: LimitPolicy,
    state: LimitState,
    level: float,
    ratio: float,
    now: float,
    reason: str,
    edge: float | None = None,
) -> LimitState:
    """Cut to ``level * ratio``. CUBIC then climbs back to a plateau one below the refused level (``edge``, the fewest
    in flight a refused attempt saw, when lower than ``level``) and stays there a while, or, after a timeout or a
    queue (no level known to fail), probes upwards from the new limit."""
    limit = max(float(config.min_limit), min(state.limit, level * ratio))
    refused = reason == "backpressure"
    if refused:
        level = level if edge is None else min(level, edge)
    plateau = max(limit, level - 1.0) if refused else limit
    before = state.limit if state.before_refusals is None else state.before_refusals
    return dataclasses.replace(
        state,
        limit=limit,
        refused_level=level if refused else state.refused_level,
        overshoot=state.slow_start if refused else state.overshoot,
        before_refusals=before if refused else state.before_refusals,
        slow_start=False,
        decreased_at=now,
        plateau=plateau,
        cubic_k=((plateau - limit) / config.cubic) ** (1 / 3),
        window=Window(),
        cut_mean=None,
        served=0.0,
        shut_at_decrease=state.shut,
        reason=reason if int(limit) != state.permits else None,
    )


def _grow(config: LimitPolicy, state: LimitState, sample: Sample) -> LimitState:
    limit = state.limit
    if max(sample.in_flight, sample.in_flight_end or 0) >= config.min_utilisation * limit:
        if state.slow_start:
            step = config.slow_start_step
        else:  # CUBIC (RFC 9438), per answer a share of the way to its target, at most the slow-start step
            target = state.plateau + config.cubic * (sample.end - state.decreased_at - state.cubic_k) ** 3
            step = min(config.slow_start_step, (target - limit) / limit)
        limit = min(float(config.max_limit), limit + max(0.0, step))
    if int(limit) == state.permits:
        return dataclasses.replace(state, limit=limit)
    return dataclasses.replace(state, limit=limit, reason="slow_start" if state.slow_start else "increase")
