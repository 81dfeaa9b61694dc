"""One endpoint's concurrency limit shared through Redis by every process and machine that calls it.

Keys under ``resilient_llm:limit:<sha256(endpoint)[:12]>:`` (pass base URL and API key as ``endpoint``; only the
hash reaches Redis):

- ``holders``: a sorted set of permits, member ``<process id>:<n>``, score the lease's expiry (Redis's clock, ms).
  Acquiring is one Lua script: drop expired holders, read the gate and the limit, add a holder if fewer than the
  limit hold one. A process killed with SIGKILL stops renewing, so its permits come back within ``lease_s``; a live
  process renews all of its own with one command every ``lease_s / 3`` (``renew``), not one per permit.
- ``limit``: a hash of the shared limit ``value`` and a ``generation`` counting decreases. Last-writer-wins would
  lose updates: two processes read 100, one grows it to 101, the other cuts it to 90 and writes last, and the growth
  is lost, or the other way round and the cut is. So increases are atomic adds (eight processes' answers grow the
  limit as one process's would with all of them), and a decrease applies only if no other process decreased since
  the attempt behind it was admitted (``cut_limit(target, generation)`` with the generation ``try_acquire``
  returned): one overload seen by eight processes cuts once, not eight times (0.9^8 = 0.43). An increase given a
  generation applies only under that generation too: answers to attempts admitted before a cut do not undo it.
  The hash expires ``limit_ttl_s`` after its last change, so a stale limit does not outlive a run by much.
- ``gate``: present while new attempts must wait (a 429 or in-flight 402 with Retry-After). Its remaining time is
  its PTTL, so machines with skewed clocks agree; ``set_gate`` only ever lengthens it.

Calls block (redis-py, 0.25 s socket timeouts): run them off the event loop. When Redis fails or is slow, the call
raises ``SharedLimitDown`` (never a redis exception) and the caller limits locally; one warning is logged, Redis is
left alone for ``pause_s`` (calls raise at once, no timeout each), then tried again, and a recovery line is logged.
Permits granted locally while Redis was away are not in Redis: for about one round trip after it returns, the
shared count undercounts them.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from resilient_llm.errors import ConfigError, ResilientLLMError
from resilient_llm.stores import REDIS_SOCKET_TIMEOUT_S
from resilient_llm.stores.limit_scripts import SCRIPTS

T = TypeVar("T")


class SharedLimitDown(ResilientLLMError):
    """Redis failed, was too slow, or is being left alone after a fault: limit locally for now."""


@dataclass(frozen=True, slots=True)
class Acquired:
    """What one ``try_acquire`` saw, in one round trip."""

    lease: str | None  # the permit to release; None when refused (full, or the gate is shut)
    in_flight: int  # permits held across all processes, this one included
    limit: float  # the limit applied: the shared value, or the argument while none is stored
    gate_s: float  # seconds the gate stays shut (0: open)
    generation: int  # decreases so far; hand it to ``cut_limit`` for a decrease caused by this attempt


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ConfigError(f"shared limit {name}={value!r}: expected a positive number of seconds")
    return float(value)


class SharedLimit:
    """The distributed semaphore, shared limit and gate of one endpoint. Thread-safe; every call blocks."""

    def __init__(
        self,
        url: str,
        endpoint: str,
        logger: Any,
        *,
        lease_s: float = 10.0,
        pause_s: float = 5.0,
        limit_ttl_s: float = 3600.0,
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
        if not 1 <= min_limit <= max_limit:
            raise ConfigError(f"shared limit min_limit={min_limit}, max_limit={max_limit}: expected 1 <= min <= max")
        self._bounds = (min_limit, max_limit)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
            health_check_interval=0,
        )
        prefix = f"resilient_llm:limit:{hashlib.sha256(endpoint.encode()).hexdigest()[:12]}:"
        self._holders, self._limit, self._gate = prefix + "holders", prefix + "limit", prefix + "gate"
        self._scripts = {name: self._redis.register_script(body) for name, body in SCRIPTS.items()}
        self._log = logger
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._pid = -1
        self._process = ""
        self._numbers = itertools.count()
        self._down_until = 0.0
        self._down = False

    @property
    def renew_every_s(self) -> float:
        """How often to call ``renew``: three tries before a lease runs out."""
        return self.lease_s / 3

    @property
    def held(self) -> int:
        """Permits this process holds, as far as it knows."""
        with self._lock:
            return len(self._held)

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

    def _member(self) -> str:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's leases are not ours
                self._pid, self._process, self._held = os.getpid(), uuid.uuid4().hex, set()
            return f"{self._process}:{next(self._numbers)}"

    def try_acquire(self, limit: int) -> Acquired:
        """A permit, if the gate is open and fewer hold one than the shared limit (``limit`` while none is stored)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"try_acquire limit={limit!r}: expected an integer >= 1")
        member = self._member()
        lease_ms = int(self.lease_s * 1000)
        keys = [self._holders, self._limit, self._gate]
        granted, count, value, gate_ms, generation = self._shared(
            lambda: self._scripts["acquire"](keys=keys, args=[member, lease_ms, limit])
        )
        if granted:
            with self._lock:
                self._held.add(member)
        return Acquired(member if granted else None, int(count), float(value), int(gate_ms) / 1000, int(generation))

    def release(self, lease: str) -> None:
        """Give a permit back (an unknown or expired one is a no-op)."""
        with self._lock:
            self._held.discard(lease)
        self._shared(lambda: self._redis.zrem(self._holders, lease))

    def renew(self) -> int:
        """Extend every lease this process holds by ``lease_s``; returns how many had expired already (lost)."""
        with self._lock:
            members = sorted(self._held)
        if not members:
            return 0
        lost = self._shared(
            lambda: self._scripts["renew"](keys=[self._holders], args=[int(self.lease_s * 1000), *members])
        )
        names = {m.decode() if isinstance(m, bytes) else str(m) for m in lost}
        with self._lock:
            self._held -= names
        return len(names)

    def in_flight(self) -> int:
        """Permits held across all processes, expired leases dropped."""
        return int(self._shared(lambda: self._scripts["in_flight"](keys=[self._holders])))

    def set_gate(self, seconds: float) -> float:
        """Shut the gate for ``seconds`` unless it is already shut longer; returns the seconds it stays shut."""
        ms = max(1, int(_positive("seconds", seconds) * 1000))
        return int(self._shared(lambda: self._scripts["set_gate"](keys=[self._gate], args=[ms]))) / 1000

    def gate_remaining(self) -> float:
        """Seconds the gate stays shut (0: open)."""
        return max(0, int(self._shared(lambda: self._redis.pttl(self._gate)))) / 1000

    def shared_limit(self) -> float | None:
        """The shared limit, or None while no process has stored one."""
        raw = self._shared(lambda: self._redis.hget(self._limit, "value"))
        return None if raw is None else float(raw)

    def publish_limit(self, value: float) -> None:
        """Store ``value`` as the shared limit outright (a start value, an operator's override)."""
        low, high = self._bounds
        clamped = min(high, max(low, float(value)))
        pipe = self._redis.pipeline()
        pipe.hset(self._limit, "value", repr(clamped))
        pipe.pexpire(self._limit, self._ttl_ms)
        self._shared(pipe.execute)

    def add_to_limit(self, delta: float, initial: float, generation: int | None = None) -> float:
        """Add ``delta`` (``initial`` while none is stored), within the bounds; returns the new shared limit.

        With ``generation`` (from ``try_acquire``), only if no decrease came since: growth learnt from attempts
        admitted before a cut is news about a limit already left behind, as ``cut_limit``'s second cut is.
        """
        seen = -1 if generation is None else int(generation)
        args: list[str | int] = [repr(float(delta)), *self._bounds, repr(float(initial)), self._ttl_ms, seen]
        return float(self._shared(lambda: self._scripts["add"](keys=[self._limit], args=args)))

    def cut_limit(self, target: float, generation: int, initial: float) -> tuple[float, bool]:
        """Lower the shared limit to ``target`` unless another decrease came after ``generation``.

        Returns the shared limit afterwards and whether this cut was applied.
        """
        args: list[str | int] = [
            repr(float(target)),
            int(generation),
            self._bounds[0],
            repr(float(initial)),
            self._ttl_ms,
        ]
        applied, value, _ = self._shared(lambda: self._scripts["cut"](keys=[self._limit], args=args))
        return float(value), bool(applied)

    def close(self) -> None:
        """Give back every permit this process holds (best effort) and close the connections."""
        with self._lock:
            members, self._held = sorted(self._held), set()
        if members:
            with contextlib.suppress(SharedLimitDown):  # else they expire within lease_s
                self._shared(lambda: self._redis.zrem(self._holders, *members))
        self._redis.close()
