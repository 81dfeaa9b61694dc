"""The layer stack, built in one place so the order is readable at a glance."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resilient_llm.layers.fallback import FallbackHandler
from resilient_llm.layers.http import HTTPHandler
from resilient_llm.layers.limit import LimitHandler
from resilient_llm.layers.observe import ObserveHandler
from resilient_llm.layers.retry import RetryHandler, Sleep
from resilient_llm.settings import Settings

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Stack:
    """The outermost handler plus the layers the engine reports on or closes."""

    top: ObserveHandler
    limit: LimitHandler
    http: HTTPHandler


def build_stack(
    settings: Settings,
    logger: Any,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep | None = None,
    rng: random.Random | None = None,
) -> Stack:
    """observe → fallback → retry → limit → http, outermost first."""
    http = HTTPHandler(settings, transport)
    limit = LimitHandler(http, settings.max_concurrent)
    retry = RetryHandler(limit, settings, rng=rng, **({"sleep": sleep} if sleep else {}))
    fallback = FallbackHandler(retry, settings.neutral_text)
    observe = ObserveHandler(fallback, logger, log_prompts=settings.log_prompts)
    return Stack(top=observe, limit=limit, http=http)
