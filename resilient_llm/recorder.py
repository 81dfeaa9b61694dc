"""Call metrics for a training loop and for Prometheus, counted once per call by the observe layer.

Two views of the same counts: ``Metrics.snapshot()`` is what happened since the previous snapshot, as a flat dict of
numbers for ``wandb.log`` or a TensorBoard writer; ``Metrics.totals()`` is the running totals the Prometheus exporter
serves. Calls finish on the engine thread and snapshots are taken from the trainer's threads, so both go through one
lock; a call costs a few dict updates under it (no log parsing, latencies kept in a bounded reservoir).

Other modules contribute counters without the core importing them: ``register_source`` (the drop-in's judge does).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from resilient_llm.policy.percentiles import nearest_rank

KEY_PREFIX = "llm/"
OUTCOMES = ("ok", "cached", "fallback", "neutral", "flagged", "error", "cancelled")
ANSWERED = ("ok", "cached", "fallback")
FRESH = ("ok", "fallback")  # answers a provider produced for this call: they carry its tokens and cost
CACHE_RESULTS = ("hit", "miss", "shared", "replay_miss")
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
# Upper bounds of the latency histogram (seconds), from a cache hit to the default 900 s deadline.
BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0)
RESERVOIR = 4096  # latencies kept per snapshot: exact percentiles up to this many calls, a uniform sample beyond
MAX_MODELS = 50  # distinct model label values in the totals; later models are counted as "other"


@dataclasses.dataclass(frozen=True)
class Gauges:
    """The engine's current state, read at each snapshot and scrape through the ``gauges`` callable it provides."""

    in_flight: int = 0  # attempts holding a concurrency slot
    concurrency_limit: int = 0  # the limit those slots are held against
    breaker_state: str = "closed"  # the OpenRouter route's breaker: closed, half-open or open
    breaker_trips: int = 0  # times that breaker opened since the engine started


@dataclasses.dataclass(frozen=True)
class Source:
    """Counters another module keeps: ``read`` returns their running totals (they only grow), reported per snapshot
    as the growth since the previous one. ``shares`` names ratios of that growth: share -> (parts, whole)."""

    read: Callable[[], Mapping[str, int]]
    shares: Mapping[str, tuple[tuple[str, ...], str]] = dataclasses.field(default_factory=dict)


_sources: dict[str, Source] = {}
_sources_lock = threading.Lock()


def register_source(name: str, source: Source) -> None:
    """Add (or replace) a process-wide source of counters; every engine's snapshots and scrapes include it."""
    with _sources_lock:
        _sources[name] = source


def sources() -> dict[str, Source]:
    with _sources_lock:
        return dict(_sources)


def _new_lock_in_child() -> None:
    global _sources_lock
    _sources_lock = threading.Lock()  # a fork while another thread held it must not leave the child's locked


os.register_at_fork(after_in_child=_new_lock_in_child)


@dataclasses.dataclass
class Histogram:
    """Latency counts per bucket of ``BUCKETS_S`` (the last one: above them all), and their sum in seconds."""

    counts: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    total_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.total_s += seconds


@dataclasses.dataclass
class Totals:
    """Running totals since the engine started, labelled for Prometheus (model labels capped at ``MAX_MODELS``)."""

    calls: collections.Counter[tuple[str, str, str]] = dataclasses.field(default_factory=collections.Counter)
    durations: dict[tuple[str, str], Histogram] = dataclasses.field(default_factory=dict)  # (model, outcome)
    attempts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # model
    tokens: collections.Counter[tuple[str, str]] = dataclasses.field(default_factory=collections.Counter)
    cost_usd: dict[str, float] = dataclasses.field(default_factory=dict)
    cache: collections.Counter[str] = dataclasses.field(
        default_factory=lambda: collections.Counter(dict.fromkeys(CACHE_RESULTS, 0))
    )

    def copy(self) -> Totals:
        durations = {k: Histogram(list(h.counts), h.total_s) for k, h in self.durations.items()}
        cache = collections.Counter(self.cache)
        tokens, cost = collections.Counter(self.tokens), dict(self.cost_usd)
        return Totals(
            collections.Counter(self.calls), durations, collections.Counter(self.attempts), tokens, cost, cache
        )


class _Window:
    """What happened since the last snapshot."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.counts: collections.Counter[str] = collections.Counter()
        self.cost_usd = 0.0
        self.latencies: list[float] = []  # a uniform sample of ``seen`` latencies, at most RESERVOIR of them
        self.seen = 0
        self.slowest = 0.0


class Metrics:
    """Counts calls by outcome, latency, attempts, tokens, cost and cache result; thread-safe."""

    def __init__(
        self,
        gauges: Callable[[], Gauges] = Gauges,
        *,
        reservoir: int = RESERVOIR,
        max_models: int = MAX_MODELS,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gauges = gauges
        self._reservoir = reservoir
        self._max_models = max_models
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._window = _Window(clock())
        self._totals = Totals()
        self._models: set[str] = set()
        self._trips = 0
        self._marks = {name: dict(source.read()) for name, source in sources().items()}

    def gauges(self) -> Gauges:
        return self._gauges()

    def record(self, outcome: str, latency_s: float, model: str, details: Mapping[str, Any]) -> None:
        """Count one finished call; ``details``: its log line's fields (attempts, route, tokens, cost, cache)."""
        attempts = int(details.get("attempts") or 0)
        cache = details.get("cache")
        fresh = outcome in FRESH and cache != "shared"  # a shared answer's tokens were counted for its leader
        prompt = _tokens(details.get("prompt_tokens")) if fresh else 0
        completion = _tokens(details.get("completion_tokens")) if fresh else 0
        cost = _dollars(details.get("cost")) if fresh else 0.0
        route = str(details.get("route") or "none")
        with self._lock:
            window = self._window
            counts = window.counts
            counts["calls"] += 1
            counts["calls_" + outcome] += 1
            if outcome != "cancelled":
                counts["finished"] += 1  # calls that know their attempts
            counts["attempts"] += attempts
            counts["prompt_tokens"] += prompt
            counts["completion_tokens"] += completion
            window.cost_usd += cost
            if cache in CACHE_RESULTS:
                counts["cache_" + cache] += 1
            self._sample(window, latency_s)

            label = self._model_label(model)
            totals = self._totals
            totals.calls[label, route, outcome] += 1
            histogram = totals.durations.get((label, outcome))
            if histogram is None:
                histogram = totals.durations[label, outcome] = Histogram()
            histogram.add(latency_s)
            totals.attempts[label] += attempts
            if fresh:
                totals.tokens[label, "prompt"] += prompt
                totals.tokens[label, "completion"] += completion
                totals.cost_usd[label] = totals.cost_usd.get(label, 0.0) + cost
            if cache in CACHE_RESULTS:
                totals.cache[cache] += 1

    def _sample(self, window: _Window, latency_s: float) -> None:
        window.seen += 1
        window.slowest = max(window.slowest, latency_s)
        if len(window.latencies) < self._reservoir:
            window.latencies.append(latency_s)
            return
        slot = self._rng.randrange(window.seen)  # Algorithm R: every latency is kept with the same probability
        if slot < self._reservoir:
            window.latencies[slot] = latency_s

    def _model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) < self._max_models:
            self._models.add(model)
            return model
        return "other"

    def totals(self) -> Totals:
        """A copy of the running totals since the engine started."""
        with self._lock:
            return self._totals.copy()

    def snapshot(self) -> dict[str, float]:
        """What happened since the previous snapshot (or the engine's start), keyed ``llm/...``; see the README."""
        gauges = self._gauges()
        readings = {name: (source, dict(source.read())) for name, source in sources().items()}
        now = self._clock()
        with self._lock:
            window, self._window = self._window, _Window(now)
            trips, self._trips = gauges.breaker_trips - self._trips, gauges.breaker_trips
            marks = self._marks
            self._marks = {name: reading for name, (_, reading) in readings.items()}
        values = _window_values(window, now - window.started)
        values["breaker_state"] = BREAKER_STATES.get(gauges.breaker_state, -1)
        values["breaker_trips"] = max(0, trips)
        values["in_flight"] = gauges.in_flight
        values["concurrency_limit"] = gauges.concurrency_limit
        for name, (source, reading) in readings.items():
            values.update(_source_values(source, reading, marks.get(name, {})))
        return {KEY_PREFIX + key: value for key, value in values.items()}


MAX_TOKENS = 10**12  # per call; beyond it a counter is broken (the wire drops such values already)
MAX_COST_USD = 1e6


def _tokens(value: Any) -> int:
    """A call's token count as an int to add up: anything unusable (NaN, negative, absurd) counts 0, never raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return 0
    return int(value) if 0 <= value <= MAX_TOKENS else 0


def _dollars(value: Any) -> float:
    """A call's cost as a finite float to add up: anything unusable counts 0, so no NaN reaches the totals."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        number = float(value)
    except OverflowError:
        return 0.0
    return number if math.isfinite(number) and 0 <= number <= MAX_COST_USD else 0.0


def _window_values(window: _Window, elapsed_s: float) -> dict[str, float]:
    counts = window.counts
    calls = counts["calls"]
    values: dict[str, float] = {"calls": calls}
    values |= {f"calls_{outcome}": counts["calls_" + outcome] for outcome in OUTCOMES}
    if elapsed_s > 0:
        values["calls_per_s"] = calls / elapsed_s
    if calls:  # ratios and latencies only when there is something to divide: no made-up zeros in the charts
        values["success_rate"] = sum(counts["calls_" + o] for o in ANSWERED) / calls
        values |= {f"{outcome}_share": counts["calls_" + outcome] / calls for outcome in OUTCOMES}
        ordered = sorted(window.latencies)
        for q in (50, 95, 99):
            values[f"latency_p{q}_s"] = nearest_rank(ordered, q / 100)
        values["latency_max_s"] = window.slowest
    values["attempts"] = counts["attempts"]
    if counts["finished"]:
        values["attempts_per_call"] = counts["attempts"] / counts["finished"]
    values["prompt_tokens"] = counts["prompt_tokens"]
    values["completion_tokens"] = counts["completion_tokens"]
    values["cost_usd"] = window.cost_usd
    lookups = sum(counts["cache_" + r] for r in CACHE_RESULTS)
    values["cache_lookups"] = lookups
    values["cache_hits"] = counts["cache_hit"]
    if lookups:
        values["cache_hit_rate"] = counts["cache_hit"] / lookups
    return values


def _source_values(source: Source, reading: Mapping[str, int], mark: Mapping[str, int]) -> dict[str, float]:
    """The growth of each counter since ``mark`` (a counter that went back was reset: all of it is new)."""
    grown = {k: v - mark.get(k, 0) if v >= mark.get(k, 0) else v for k, v in reading.items()}
    values: dict[str, float] = dict(grown)
    for share, (parts, whole) in source.shares.items():
        if grown.get(whole):
            values[share] = sum(grown.get(p, 0) for p in parts) / grown[whole]
    return values
