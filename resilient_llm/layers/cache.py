"""Content-hash response cache with single flight: a hit skips everything below; identical calls in flight share one.

Store faults never fail a call: the call goes on without the cache, one warning per fault kind is logged, the store is
left alone for ``fault_pause_s`` and then tried again, so the cache comes back by itself when the store recovers.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from resilient_llm.errors import MalformedResponse
from resilient_llm.policy.cache import cache_key, decode_answer, encode_answer, is_cacheable
from resilient_llm.stores import BadEntry, CacheStore
from resilient_llm.types import ChatRequest, ChatResult, Handler, Outcome
from resilient_llm.validation import BOOL, REDIS_URL, SECONDS, SECONDS_OR_ZERO, TEXT, Validated, choice, int_in, setting


class CacheMode(enum.StrEnum):
    READ_WRITE = "read-write"  # serve hits, store fresh answers
    REFRESH = "refresh"  # skip reads, store fresh answers
    REPLAY = "replay"  # answers only from the cache, never the network; a miss ends neutral
    OFF = "off"


def default_cache_dir(xdg_cache_home: str | None = None) -> str:
    """``$XDG_CACHE_HOME/resilient-llm``, else ``~/.cache/resilient-llm``."""
    return os.path.join(xdg_cache_home or os.path.join(os.path.expanduser("~"), ".cache"), "resilient-llm")


@dataclasses.dataclass(frozen=True)
class CacheConfig(Validated):
    """Where answers are kept (a folder, or Redis when a URL is given), for how long, and which calls qualify."""

    mode: str = setting(CacheMode.READ_WRITE.value, choice(tuple(CacheMode)))
    directory: str = setting(default_cache_dir(), TEXT)
    redis_url: str | None = setting(None, REDIS_URL, optional=True)
    ttl: float = setting(0.0, SECONDS_OR_ZERO)  # 0: entries never expire
    size_limit_mb: int = setting(1024, int_in(1, 1 << 20))  # the disk store's, up to 1 TiB
    sampled: bool = setting(False, BOOL)  # cache calls at temperature > 0 (or unset) too
    fault_pause: float = setting(5.0, SECONDS)  # a failing store is left alone this long


@dataclasses.dataclass
class _Flight:
    task: asyncio.Task[ChatResult]
    waiters: int = 0


class CacheHandler:
    """Caches real answers (outcome ``ok``) of cacheable calls; never fallbacks, neutral results or errors."""

    def __init__(
        self,
        inner: Handler,
        store: CacheStore,
        config: CacheConfig,
        *,
        base_url: str,
        neutral_text: str,
        logger: Any,
        read_now: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self._inner = inner
        self._store = store
        self._read_now = read_now  # a store's read that is safe in any thread (disk), for hits without the hop
        self._mode = CacheMode(config.mode)
        self._base_url = base_url
        self._ttl = config.ttl or None
        self._cache_sampled = config.sampled
        self._neutral_text = neutral_text
        self._log = logger
        self._fault_pause_s = config.fault_pause
        self._flights: dict[str, _Flight] = {}
        self._warned: set[str] = set()
        self._store_down = False
        self._paused_until = 0.0
        kinds = ("hit", "miss", "shared", "replay_miss", "store_fault", "dropped")
        self.counters = collections.Counter(dict.fromkeys(kinds, 0))
        self._hits = threading.Lock()  # hits are counted on callers' threads too (answer_now)

    def answer_now(self, request: ChatRequest) -> ChatResult | None:
        """A hit read in the calling thread when the store can (disk), without the hop to the engine's loop; None for
        anything else (a miss, a bad entry, a fault, a paused store, a store that cannot), which the engine's path then
        handles as it always does."""
        if self._read_now is None or not self._reads or time.monotonic() < self._paused_until:
            return None
        key = self._key(request)
        if key is None:
            return None
        try:
            raw = self._read_now(key)
            hit = None if raw is None else decode_answer(raw, f"cache:{self._store.name}")
        except Exception:
            return None
        return None if hit is None else self._served(hit, key)

    async def handle(self, request: ChatRequest) -> ChatResult:
        key = self._key(request)
        if key is None:
            return await self._inner.handle(request)
        if self._reads:
            hit = await self._read(key)
            if hit is not None:
                return self._served(hit, key)
        if self._mode is CacheMode.REPLAY:
            self.counters["replay_miss"] += 1
            return ChatResult(
                self._neutral_text,
                Outcome.NEUTRAL,
                request.model,
                attempts=0,
                route="replay",
                cache="replay_miss",
                cache_key=key,
            )
        self.counters["miss"] += 1
        return await self._single_flight(key, request)

    @property
    def _reads(self) -> bool:
        return self._mode in (CacheMode.READ_WRITE, CacheMode.REPLAY)

    def _key(self, request: ChatRequest) -> str | None:
        """The call's cache key; None for a call the cache lets through (replay looks every call up: a sampled
        recording replays too, and nothing in replay reaches the network)."""
        if self._mode is not CacheMode.REPLAY and not is_cacheable(request, cache_sampled=self._cache_sampled):
            return None
        return cache_key(request, self._base_url)

    def _served(self, hit: ChatResult, key: str) -> ChatResult:
        with self._hits:
            self.counters["hit"] += 1
        return dataclasses.replace(hit, cache="hit", cache_key=key)

    async def _single_flight(self, key: str, request: ChatRequest) -> ChatResult:
        flight = self._flights.get(key)
        leader = flight is None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(self._fetch_and_store(key, request)))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda _: self._flights.pop(key, None))
        flight.waiters += 1
        try:
            # A follower waits no longer than its own timeout: a leader allowed longer must not hold it past it.
            result = await asyncio.wait_for(asyncio.shield(flight.task), None if leader else request.timeout)
        except TimeoutError:
            self.counters["shared_timeout"] += 1
            return await self._inner.handle(request)  # go on alone, within this call's own limits
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # every caller gave up: so does the upstream call
        if leader:
            return result
        self.counters["shared"] += 1
        return dataclasses.replace(result, attempts=0, failures=(), cache="shared")

    async def _fetch_and_store(self, key: str, request: ChatRequest) -> ChatResult:
        result = await self._inner.handle(request)
        if result.outcome is Outcome.OK:
            await self._write(key, result)
        return dataclasses.replace(result, cache="miss", cache_key=key)

    async def _read(self, key: str) -> ChatResult | None:
        if time.monotonic() < self._paused_until:
            return None
        try:
            raw = await self._store.get(key)
            result = None if raw is None else decode_answer(raw, f"cache:{self._store.name}")
        except (MalformedResponse, BadEntry) as exc:  # this entry is bad, not the store: drop it, keep serving
            await self._drop(key, exc)
            return None
        except Exception as exc:
            self._fault("read", exc)
            return None
        self._recovered()
        return result

    async def _write(self, key: str, result: ChatResult) -> None:
        if time.monotonic() < self._paused_until:
            return
        try:
            await self._store.set(key, encode_answer(result), self._ttl)
        except Exception as exc:
            self._fault("write", exc)
        else:
            self._recovered()

    async def _drop(self, key: str, exc: BaseException) -> None:
        self.counters["dropped"] += 1
        self._log.warning("cache_entry_dropped", store=self._store.name, cache_key=key[:19], error=str(exc)[:300])
        try:
            await self._store.delete(key)
        except Exception as fault:
            self._fault("delete", fault)

    def _fault(self, operation: str, exc: BaseException) -> None:
        self.counters["store_fault"] += 1
        self._store_down = True  # a failing store is left alone for a while
        self._paused_until = time.monotonic() + self._fault_pause_s
        kind = type(exc).__name__
        if kind not in self._warned:
            self._warned.add(kind)
            self._log.warning(
                "cache_fault",
                store=self._store.name,
                operation=operation,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )

    def _recovered(self) -> None:
        if self._store_down:
            self._store_down = False
            self._warned.clear()
            self._log.info("cache_recovered", store=self._store.name)

    async def aclose(self) -> None:
        await self._store.close()
