"""The layer stack, built in one place so the order is readable at a glance."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pybreaker

from resilient_llm.layers.breaker import BreakerHandler
from resilient_llm.layers.cache import CacheHandler, CacheMode
from resilient_llm.layers.fallback import FallbackHandler
from resilient_llm.layers.hedge import HedgeHandler
from resilient_llm.layers.http import HTTPHandler
from resilient_llm.layers.limit import LimitHandler
from resilient_llm.layers.litellm_route import LiteLLMHandler
from resilient_llm.layers.observe import ObserveHandler
from resilient_llm.layers.retry import RetryHandler, Sleep
from resilient_llm.policy.hedge import HedgeBudget
from resilient_llm.settings import Settings
from resilient_llm.stores import CacheStore
from resilient_llm.stores.breaker_state import SharedBreakerStorage
from resilient_llm.stores.disk import DiskStore
from resilient_llm.stores.redis import RedisStore
from resilient_llm.types import Handler

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Stack:
    """The outermost handler plus the layers the engine reports on or closes."""

    top: ObserveHandler
    cache: CacheHandler | None
    breaker: BreakerHandler
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


def make_breaker(settings: Settings, inner: Handler, route: str, endpoint: str, logger: Any) -> BreakerHandler:
    """A breaker for one route; its state shared through Redis when RESILIENT_LLM_BREAKER_REDIS_URL is set."""
    storage = None
    if settings.breaker_redis_url:
        storage = SharedBreakerStorage(settings.breaker_redis_url, route, endpoint, logger)
    breaker = pybreaker.CircuitBreaker(
        fail_max=settings.breaker_fail_max,
        reset_timeout=settings.breaker_reset_timeout,
        success_threshold=settings.breaker_success_threshold,
        state_storage=storage,
        name=route,
    )
    return BreakerHandler(
        inner,
        breaker,
        route=route,
        half_open_trials=settings.breaker_half_open_trials,
        logger=logger,
        blocking_storage=storage is not None,
    )


def build_stack(
    settings: Settings,
    logger: Any,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep | None = None,
    rng: random.Random | None = None,
) -> Stack:
    """observe → cache → fallback(primary: retry → breaker → [hedge] → limit → http; then litellm, neutral)."""
    http = HTTPHandler(settings, transport)
    limit = LimitHandler(http, settings.max_concurrent)
    attempt: Handler = limit
    if settings.hedge:
        attempt = HedgeHandler(
            limit,
            quantile=settings.hedge_quantile,
            floor_s=settings.hedge_min_delay,
            cap_s=settings.hedge_max_delay,
            budget=HedgeBudget(settings.hedge_budget),
            may_hedge=lambda: breaker.local_state == "closed" and limit.in_flight < limit.max_concurrent,
            logger=logger,
        )
    breaker = make_breaker(settings, attempt, "openrouter", settings.base_url, logger)
    retry = RetryHandler(breaker, settings, sleep=sleep, rng=rng, interrupt=breaker.opened)
    routes: list[tuple[str, Handler]] = []
    if "litellm" in settings.fallback and settings.fallback_model:
        litellm = LimitHandler(LiteLLMHandler(settings), settings.max_concurrent)
        endpoint = f"{settings.fallback_base_url}/{settings.fallback_model}"
        routes.append(("litellm", make_breaker(settings, litellm, "litellm", endpoint, logger)))
    fallback = FallbackHandler(
        retry, routes, neutral="neutral" in settings.fallback, neutral_text=settings.neutral_text
    )
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
    return Stack(top=observe, cache=cache, breaker=breaker, limit=limit, http=http)
