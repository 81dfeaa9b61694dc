"""The layer stack, built in one place so the order is readable at a glance."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resilient_llm.layers.cache import CacheHandler, CacheMode
from resilient_llm.layers.fallback import FallbackHandler
from resilient_llm.layers.http import HTTPHandler
from resilient_llm.layers.limit import LimitHandler
from resilient_llm.layers.observe import ObserveHandler
from resilient_llm.layers.retry import RetryHandler, Sleep
from resilient_llm.settings import Settings
from resilient_llm.stores import CacheStore
from resilient_llm.stores.disk import DiskStore
from resilient_llm.stores.redis import RedisStore

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Stack:
    """The outermost handler plus the layers the engine reports on or closes."""

    top: ObserveHandler
    cache: CacheHandler | None
    limit: LimitHandler
    http: HTTPHandler

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.cache is not None:
            await self.cache.aclose()


def make_store(settings: Settings) -> CacheStore | None:
    """The configured cache store, or None when caching is off."""
    if settings.cache_mode == CacheMode.OFF:
        return None
    if settings.cache_redis_url:
        return RedisStore(settings.cache_redis_url)
    return DiskStore(settings.cache_dir, settings.cache_size_limit)


def build_stack(
    settings: Settings,
    logger: Any,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep | None = None,
    rng: random.Random | None = None,
) -> Stack:
    """observe → cache → fallback → retry → limit → http, outermost first."""
    http = HTTPHandler(settings, transport)
    limit = LimitHandler(http, settings.max_concurrent)
    retry = RetryHandler(limit, settings, rng=rng, **({"sleep": sleep} if sleep else {}))
    fallback = FallbackHandler(retry, settings.neutral_text)
    store = make_store(settings)
    cache = None
    if store is not None:
        cache = CacheHandler(
            fallback,
            store,
            mode=CacheMode(settings.cache_mode),
            base_url=settings.base_url,
            ttl=settings.cache_ttl,
            cache_sampled=settings.cache_sampled,
            neutral_text=settings.neutral_text,
            logger=logger,
            fault_pause_s=settings.cache_fault_pause,
        )
    observe = ObserveHandler(cache or fallback, logger, log_prompts=settings.log_prompts)
    return Stack(top=observe, cache=cache, limit=limit, http=http)
