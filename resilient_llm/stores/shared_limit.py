"""One endpoint's concurrency shared through Redis by every process and machine that calls it: per model a limit, a
gate and the permits held, under one endpoint-wide ceiling.

Keys under ``resilient_llm:limit:<sha256(endpoint)[:12]>:`` (pass base URL and API key as ``endpoint``; only the
hash reaches Redis), the model's under ``...:m:<sha256(model)[:12]>:``:

- ``holders`` (endpoint) and the model's ``permits``: sorted sets of permits, member ``<process>:<model hash>:<n>``,
  score the lease's expiry (Redis's clock, ms). A permit is in both; the endpoint's set counts against the ceiling,
  the model's against the model's limit. ``reserve`` takes several at once (one Lua script: drop expired ones, read
  the model's gate and limit, add as many as fit under both), so a process holds a few permits ahead of need and
  most attempts never wait for Redis. A process killed with SIGKILL stops renewing, so its permits come back within
  ``lease_s``; a live process renews all of its own with one ``sync`` (which also re-adds any Redis lost, and reads
  every model's limit and gate back) every second or so.
- the model's ``limit``: a hash of the shared limit ``value`` and a ``generation`` counting decreases. Last-writer-
  wins would lose updates: two processes read 100, one grows it to 101, the other cuts it to 90 and writes last, and
  the growth is lost, or the other way round and the cut is. So increases are atomic adds (eight processes' answers
  grow the limit as one process's would with all of them), and a decrease applies only if no other process decreased
  since the attempt behind it was admitted (``cut_limit(model, target, generation)`` with the generation ``reserve``
  or ``sync`` returned): one overload seen by eight processes cuts once, not eight times (0.9^8 = 0.43). An increase
  given a generation applies only under that generation too: answers to attempts admitted before a cut do not undo
  it. The hash expires ``limit_ttl_s`` after its last change, so a stale limit does not outlive a run by much.
- the model's ``gate``: present while new attempts must wait (a 429 burst, a quota reset soon). Its remaining time is
  its PTTL, so machines with skewed clocks agree; ``set_gate`` only ever lengthens it, and never beyond ``gate_cap_s``
  (the limit's ``pause_max``): a longer wait is each process's own pause, and a process started later never waits it.

Calls block (redis-py, 0.25 s socket timeouts): run them off the event loop. When Redis fails or is slow, the call
raises ``SharedLimitDown`` (never a redis exception) and the caller limits locally; one warning is logged, Redis is
left alone for ``pause_s`` (calls raise at once, no timeout each), then tried again, and a recovery line is logged.
Attempts let out locally while Redis was away or slow are not in Redis: until the next ``sync`` after it answers
again, the shared count undercounts them.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from resilient_llm.errors import ConfigError, ResilientLLMError
from resilient_llm.stores import REDIS_SOCKET_TIMEOUT_S
from resilient_llm.stores.limit_scripts import SCRIPTS

T = TypeVar("T")


class SharedLimitDown(ResilientLLMError):
    """Redis failed, was too slow, or is being left alone after a fault: limit locally for now."""


@dataclass(frozen=True, slots=True)
class Reserved:
    """What one ``reserve`` saw, in one round trip."""

    permits: tuple[str, ...]  # granted now: hold them, ``release`` or keep renewing them with ``sync``
    model_in_flight: int  # the model's permits held across all processes, these included
    in_flight: int  # the endpoint's, every model
    limit: float  # the model's limit applied: the shared value, or the argument while none is stored
    gate_s: float  # seconds the model's gate stays shut (0: open; nothing is granted while shut)
    generation: int  # decreases so far; hand it to ``cut_limit`` for a decrease caused by an attempt under it
    fair: int = 0  # the most one process may hold: the limit shared by the processes active on the model


@dataclass(frozen=True, slots=True)
class ModelView:
    """One model as ``sync`` read it."""

    limit: float | None  # None while no process stored one
    generation: int
    gate_s: float
    in_flight: int
    fair: int = 0  # the most one process may hold (0: unknown while no limit is stored)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ConfigError(f"shared limit {name}={value!r}: expected a positive number of seconds")
    return float(value)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class SharedLimit:
    """The distributed permits, shared limits and gates of one endpoint's models. Thread-safe; every call blocks."""

    def __init__(
        self,
        url: str,
        endpoint: str,
        logger: Any,
        *,
        lease_s: float = 10.0,
        pause_s: float = 5.0,
        limit_ttl_s: float = 3600.0,
        gate_cap_s: float = 60.0,
        min_limit: int = 1,
        max_limit: int = 256,
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise ConfigError("a shared limit needs redis: pip install 'resilient-llm[redis]'") from exc
        self.lease_s = _positive("lease_s", lease_s)
        self._pause_s = _positive("pause_s", pause_s)
        self._ttl_ms = int(_positive("limit_ttl_s", limit_ttl_s) * 1000)
        self._gate_cap_ms = max(1, int(_positive("gate_cap_s", gate_cap_s) * 1000))
        if not 1 <= min_limit <= max_limit:
            raise ConfigError(f"shared limit min_limit={min_limit}, max_limit={max_limit}: expected 1 <= min <= max")
        self._bounds = (min_limit, max_limit)  # max_limit: the endpoint's ceiling, every model together
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
            health_check_interval=0,
        )
        self._prefix = f"resilient_llm:limit:{_hash(endpoint)}:"
        self._holders = self._prefix + "holders"
        self._scripts = {name: self._redis.register_script(body) for name, body in SCRIPTS.items()}
        self._log = logger
        self._lock = threading.Lock()
        self._held: dict[str, set[str]] = {}  # model -> permits this process holds
        self._pid = -1
        self._process = ""
        self._numbers = itertools.count()
        self._down_until = 0.0
        self._down = False

    def _keys(self, model: str) -> tuple[str, str, str, str]:
        """The model's permits, limit, gate and active keys."""
        base = f"{self._prefix}m:{_hash(model)}:"
        return base + "permits", base + "limit", base + "gate", base + "active"

    @property
    def held(self) -> int:
        """Permits this process holds, every model, as far as it knows."""
        with self._lock:
            return sum(len(permits) for permits in self._held.values())

    def _shared(self, remote: Callable[[], T]) -> T:
        if time.monotonic() < self._down_until:
            raise SharedLimitDown("Redis is left alone for a while after a fault")
        try:
            value = remote()
        except self._errors as exc:
            with self._lock:
                self._down_until = time.monotonic() + self._pause_s
                first, self._down = not self._down, True
            if first:
                self._log.warning("shared_limit_fault", error=f"{type(exc).__name__}: {exc}", pause_s=self._pause_s)
            raise SharedLimitDown(f"Redis failed: {type(exc).__name__}") from exc
        with self._lock:
            recovered, self._down = self._down, False
        if recovered:
            self._log.info("shared_limit_recovered")
        return value

    def _numbers_for(self, count: int) -> int:
        """The first of ``count`` fresh permit numbers of this process."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's permits are not ours
                self._pid, self._process, self._held = os.getpid(), uuid.uuid4().hex, {}
            first = next(self._numbers)
            for _ in range(count - 1):
                next(self._numbers)
            return first

    def reserve(self, model: str, wanted: int, limit: int) -> Reserved:
        """Up to ``wanted`` permits for ``model``, as many as fit under its shared limit (``limit`` while none is
        stored), the endpoint's ceiling and this process's fair share (the limit split among the processes that
        asked or held lately), none while its gate is shut."""
        for name, value in (("wanted", wanted), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"reserve {name}={value!r}: expected an integer >= 1")
        first = self._numbers_for(wanted)
        prefix = f"{self._process}:{_hash(model)}"
        keys = [self._holders, *self._keys(model)]
        args: list[str | int] = [prefix, first, wanted, int(self.lease_s * 1000), limit, self._bounds[1]]
        with self._lock:
            mine = len(self._held.get(model, ()))
        args += [mine, self._process]
        granted, model_count, total, value, gate_ms, generation, fair = self._shared(
            lambda: self._scripts["reserve"](keys=keys, args=args)
        )
        got = tuple(f"{prefix}:{first + i}" for i in range(int(granted)))
        with self._lock:
            self._held.setdefault(model, set()).update(got)
        gate_s = int(gate_ms) / 1000
        return Reserved(got, int(model_count), int(total), float(value), gate_s, int(generation), int(fair))

    def release(self, model: str, permits: Sequence[str]) -> None:
        """Give permits back (unknown or expired ones are a no-op)."""
        if not permits:
            return
        with self._lock:
            self._held.get(model, set()).difference_update(permits)
        self._release_now(model, list(permits))

    def sync(self, models: Sequence[str]) -> dict[str, ModelView]:
        """Renew every permit this process holds (re-adding those Redis lost) and read ``models`` back."""
        with self._lock:
            held = {model: sorted(permits) for model, permits in self._held.items()}
        names = sorted(set(models) | set(held))
        keys = [self._holders]
        self._numbers_for(1)  # this process's identity, after a fork too
        args: list[str | int] = [int(self.lease_s * 1000), self._process]
        for model in names:
            keys.extend(self._keys(model))
            mine = held.get(model, [])
            args.extend([len(mine), *mine])
        rows = self._shared(lambda: self._scripts["sync"](keys=keys, args=args))
        views = {}
        for model, (value, generation, gate_ms, count, fair) in zip(names, rows, strict=True):
            raw = value.decode() if isinstance(value, bytes) else str(value)
            limit = float(raw) if raw else None
            views[model] = ModelView(limit, int(generation), int(gate_ms) / 1000, int(count), int(fair))
        return views

    def in_flight(self, model: str | None = None) -> int:
        """Permits held across all processes, expired ones dropped: the model's, or the endpoint's (``None``)."""
        key = self._holders if model is None else self._keys(model)[0]
        return int(self._shared(lambda: self._scripts["in_flight"](keys=[key])))

    def set_gate(self, model: str, seconds: float) -> float:
        """Shut the model's gate for ``seconds`` (at most ``gate_cap_s``) unless it is already shut longer; returns
        the seconds it stays shut."""
        ms = max(1, int(_positive("seconds", seconds) * 1000))
        key = self._keys(model)[2]
        return int(self._shared(lambda: self._scripts["set_gate"](keys=[key], args=[ms, self._gate_cap_ms]))) / 1000

    def gate_remaining(self, model: str) -> float:
        """Seconds the model's gate stays shut (0: open)."""
        key = self._keys(model)[2]
        return max(0, int(self._shared(lambda: self._redis.pttl(key)))) / 1000

    def shared_limit(self, model: str) -> float | None:
        """The model's shared limit, or None while no process has stored one."""
        key = self._keys(model)[1]
        raw = self._shared(lambda: self._redis.hget(key, "value"))
        return None if raw is None else float(raw)

    def publish_limit(self, model: str, value: float) -> None:
        """Store ``value`` as the model's shared limit outright (a start value, an operator's override)."""
        low, high = self._bounds
        clamped = min(high, max(low, float(value)))
        key = self._keys(model)[1]
        pipe = self._redis.pipeline()
        pipe.hset(key, "value", repr(clamped))
        pipe.pexpire(key, self._ttl_ms)
        self._shared(pipe.execute)

    def add_to_limit(self, model: str, delta: float, initial: float, generation: int | None = None) -> float:
        """Add ``delta`` to the model's limit (``initial`` while none is stored), within the bounds; returns the new
        shared limit.

        With ``generation`` (from ``reserve`` or ``sync``), only if no decrease came since: growth learnt from
        attempts admitted before a cut is news about a limit already left behind, as ``cut_limit``'s second cut is.
        """
        seen = -1 if generation is None else int(generation)
        args: list[str | int] = [repr(float(delta)), *self._bounds, repr(float(initial)), self._ttl_ms, seen]
        key = self._keys(model)[1]
        return float(self._shared(lambda: self._scripts["add"](keys=[key], args=args)))

    def cut_limit(self, model: str, target: float, generation: int, initial: float) -> tuple[float, bool]:
        """Lower the model's shared limit to ``target`` unless another decrease came after ``generation``.

        Returns the shared limit afterwards and whether this cut was applied.
        """
        args: list[str | int] = [
            repr(float(target)),
            int(generation),
            self._bounds[0],
            repr(float(initial)),
            self._ttl_ms,
        ]
        key = self._keys(model)[1]
        applied, value, _ = self._shared(lambda: self._scripts["cut"](keys=[key], args=args))
        return float(value), bool(applied)

    def close(self) -> None:
        """Give back every permit this process holds (best effort) and close the connections."""
        with self._lock:
            held, self._held = self._held, {}
        for model, permits in held.items():
            if permits:
                with contextlib.suppress(SharedLimitDown):  # else they expire within lease_s
                    self._release_now(model, sorted(permits))
        self._redis.close()

    def _release_now(self, model: str, permits: list[str]) -> None:
        keys = [self._holders, self._keys(model)[0]]
        self._shared(lambda: self._scripts["release"](keys=keys, args=permits))
