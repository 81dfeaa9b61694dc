"""Breaker state shared through Redis, so every process and machine training against one endpoint trips together.

A pybreaker storage whose calls block (redis-py, short socket timeouts): the breaker layer runs them off the engine
loop. When Redis fails, the breaker carries on from a local copy of the state (one warning), and Redis is tried again
after a pause.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pybreaker

from resilient_llm.errors import ConfigError
from resilient_llm.stores import REDIS_SOCKET_TIMEOUT_S

T = TypeVar("T")


class SharedBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage in Redis under ``resilient_llm:breaker:<route>:<endpoint hash>:*``, with a local fallback."""

    def __init__(self, url: str, route: str, endpoint: str, logger: Any, pause_s: float = 5.0) -> None:
        super().__init__("redis")
        try:
            import redis
        except ImportError as exc:
            raise ConfigError(
                "RESILIENT_LLM_BREAKER_REDIS_URL is set but redis is not installed: pip install 'resilient-llm[redis]'"
            ) from exc
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(
            url, socket_timeout=REDIS_SOCKET_TIMEOUT_S, socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S
        )
        self._local = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self._prefix = f"resilient_llm:breaker:{route}:{hashlib.sha256(endpoint.encode()).hexdigest()[:12]}:"
        self._route = route
        self._log = logger
        self._pause_s = pause_s
        self._down_until = 0.0
        self._down = False

    def _shared(self, remote: Callable[[], T], local: Callable[[], T]) -> T:
        if time.monotonic() >= self._down_until:
            try:
                value = remote()
            except self._errors as exc:
                self._down_until = time.monotonic() + self._pause_s
                if not self._down:
                    self._down = True
                    self._log.warning("breaker_storage_fault", route=self._route, error=f"{type(exc).__name__}: {exc}")
            else:
                if self._down:
                    self._down = False
                    self._log.info("breaker_storage_recovered", route=self._route)
                return value
        return local()

    def _get(self, key: str) -> bytes | None:
        value = self._redis.get(self._prefix + key)
        return value if isinstance(value, bytes) else None

    @property
    def state(self) -> str:
        return self._shared(lambda: (self._get("state") or b"closed").decode(), lambda: self._local.state)

    @state.setter
    def state(self, state: str) -> None:
        self._local.state = state
        self._shared(lambda: self._redis.set(self._prefix + "state", state), lambda: None)

    def increment_counter(self) -> None:
        self._local.increment_counter()
        self._shared(lambda: self._redis.incr(self._prefix + "fail_counter"), lambda: None)

    def reset_counter(self) -> None:
        self._local.reset_counter()
        self._shared(lambda: self._redis.set(self._prefix + "fail_counter", 0), lambda: None)

    def increment_success_counter(self) -> None:
        self._local.increment_success_counter()
        self._shared(lambda: self._redis.incr(self._prefix + "success_counter"), lambda: None)

    def reset_success_counter(self) -> None:
        self._local.reset_success_counter()
        self._shared(lambda: self._redis.set(self._prefix + "success_counter", 0), lambda: None)

    @property
    def counter(self) -> int:
        return self._shared(lambda: int(self._get("fail_counter") or 0), lambda: self._local.counter)

    @property
    def success_counter(self) -> int:
        return self._shared(lambda: int(self._get("success_counter") or 0), lambda: self._local.success_counter)

    @property
    def opened_at(self) -> datetime.datetime | None:
        def remote() -> datetime.datetime | None:
            raw = self._get("opened_at")
            return None if raw is None else datetime.datetime.fromtimestamp(float(raw), datetime.UTC)

        return self._shared(remote, lambda: self._local.opened_at)

    @opened_at.setter
    def opened_at(self, now: datetime.datetime) -> None:
        self._local.opened_at = now
        self._shared(lambda: self._redis.set(self._prefix + "opened_at", now.timestamp()), lambda: None)

    def claim_trial(self, period_s: float) -> bool:
        """Whether this process may send the half-open trial: one claim per period across every process."""

        def remote() -> bool:
            return bool(self._redis.set(self._prefix + "trial", b"1", nx=True, px=max(1, int(period_s * 1000))))

        return self._shared(remote, lambda: True)
