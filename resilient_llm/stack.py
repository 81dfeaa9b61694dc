"""The layer stack, built in one place so the order is readable at a glance."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resilient_llm.clock import SYSTEM_CLOCK, Clock
from resilient_llm.config import Config
from resilient_llm.endpoints.http import HTTPHandler
from resilient_llm.endpoints.litellm import LiteLLMHandler
from resilient_llm.layers.breaker import BreakerConfig, BreakerHandler
from resilient_llm.layers.cache import CacheConfig, CacheHandler, CacheMode
from resilient_llm.layers.fallback import FallbackHandler
from resilient_llm.layers.hedge import AttemptTimer, HedgeHandler
from resilient_llm.layers.limit import LimitConfig, LimitHandler
from resilient_llm.layers.observe import ObserveHandler
from resilient_llm.layers.retry import RetryHandler
from resilient_llm.policy.hedge import LatencyWindows
from resilient_llm.recorder import Metrics
from resilient_llm.stores import CacheStore
from resilient_llm.stores.breaker_state import SharedBreakerState
from resilient_llm.stores.disk import DiskStore
from resilient_llm.stores.redis import RedisStore
from resilient_llm.stores.shared_limit import SharedLimit
from resilient_llm.stores.shared_permits import SharedPermits
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
    timer: AttemptTimer
    http: HTTPHandler

    async def aclose(self) -> None:
        await self.breaker.aclose()
        await self.limit.aclose()
        await self.timer.aclose()
        await self.http.aclose()
        if self.cache is not None:
            await self.cache.aclose()


def make_store(config: CacheConfig) -> CacheStore | None:
    """The configured cache store, or None when caching is off."""
    if config.mode == CacheMode.OFF:
        return None
    if config.redis_url:
        return RedisStore(config.redis_url)
    return DiskStore(config.directory, config.size_limit_mb * 1024 * 1024)


def make_breaker(
    config: BreakerConfig,
    inner: Handler,
    route: str,
    endpoint: str,
    logger: Any,
    *,
    outage_wait: float,
) -> BreakerHandler:
    """The breakers of one route (its endpoint's and one per model); their state and trials shared through Redis when
    ``config.redis_url`` is set."""
    shared = SharedBreakerState(config.redis_url, route, endpoint, logger) if config.redis_url else None
    return BreakerHandler(inner, config, route=route, logger=logger, outage_wait=outage_wait, shared=shared)


def make_shared(config: Config, logger: Any) -> SharedPermits | None:
    """Permits, limit and gate shared through Redis when a URL is set (the breaker's, unless the limit has its own):
    processes that share a breaker train against the same account, whose limits are per account, not per process."""
    url = config.limit.redis_url or config.breaker.redis_url
    if not url:
        return None
    endpoint = f"{config.http.base_url}\n{config.http.api_key.reveal()}"  # only its hash reaches Redis
    store = SharedLimit(url, endpoint, logger, max_limit=config.limit.ceiling, gate_cap_s=config.limit.pause_max)
    return SharedPermits(store)


def build_stack(
    config: Config,
    logger: Any,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
    metrics: Metrics | None = None,
) -> Stack:
    """observe → cache → fallback(primary: retry → breaker → hedge → limit → timer → http; then litellm, neutral)."""
    http = HTTPHandler(config.http, config.limit.ceiling, transport)
    windows = LatencyWindows(config.hedge.quantile)
    timer = AttemptTimer(http, config.hedge, windows, clock=clock)
    shared = make_shared(config, logger)
    # The breaker wraps the limit, yet the limit asks it whether an attempt may still go out: bound once it exists.
    limit = LimitHandler(
        timer,
        config.limit,
        logger=logger,
        may_send=lambda request: breaker.may_send(request),
        shared=shared,
        clock=clock,
    )
    attempt: Handler = limit
    # A limit shared through Redis stands for an account's in-flight budget: a hedge's cancelled loser may still be
    # running at the endpoint after its permit is back, so no hedging there.
    if config.hedge.enabled and shared is None:
        # The hedge layer sits below the breaker it asks: bound once the breaker exists.
        attempt = HedgeHandler(
            limit,
            config.hedge,
            windows,
            may_hedge=lambda request: breaker.is_closed(request.model) and limit.has_room(request.model),
            logger=logger,
            clock=clock,
        )
    has_other_provider = "litellm" in config.fallback.routes and bool(config.litellm.model)
    # Another provider answering now beats waiting out an outage; with none, calls wait for the endpoint.
    outage_wait = 0.0 if has_other_provider else config.breaker.outage_wait
    breaker = make_breaker(config.breaker, attempt, "openrouter", config.http.base_url, logger, outage_wait=outage_wait)
    retry = RetryHandler(breaker, config.retry, clock=clock, rng=rng, interrupt=breaker.opened)
    routes: list[tuple[str, Handler]] = []
    if has_other_provider:
        litellm = LimitHandler(
            LiteLLMHandler(config.litellm), LimitConfig(mode="fixed", max_concurrent=config.limit.ceiling)
        )
        endpoint = f"{config.litellm.base_url}/{config.litellm.model}"
        route_breaker = make_breaker(config.breaker, litellm, "litellm", endpoint, logger, outage_wait=0.0)
        routes.append(("litellm", route_breaker))
    fallback = FallbackHandler(retry, routes, config.fallback)
    store = make_store(config.cache)
    cache = None
    if store is not None:
        cache = CacheHandler(
            fallback,
            store,
            config.cache,
            base_url=config.http.base_url,
            neutral_text=config.fallback.neutral_text,
            logger=logger,
            read_now=store.get_now if isinstance(store, DiskStore) else None,
        )
    observe = ObserveHandler(cache or fallback, logger, log_prompts=config.log.prompts, metrics=metrics)
    return Stack(top=observe, cache=cache, breaker=breaker, limit=limit, timer=timer, http=http)
