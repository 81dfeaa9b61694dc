"""Process-wide cap on requests in flight. Held for one attempt only, so a backoff sleep never holds a slot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from resilient_llm.errors import BreakerOpen
from resilient_llm.types import ChatRequest, ChatResult, Handler
from resilient_llm.validation import Validated, int_in, setting


@dataclass(frozen=True)
class LimitConfig(Validated):
    """How many attempts may be in flight at once, process-wide."""

    max_concurrent: int = setting(20, int_in(1, 10_000))


class LimitHandler:
    """At most ``max_concurrent`` attempts run at once; the rest wait in FIFO order."""

    def __init__(self, inner: Handler, max_concurrent: int, may_send: Callable[[], bool] = lambda: True) -> None:
        self._inner = inner
        self._may_send = may_send  # asked once a slot is free: the breaker may have opened while this one queued
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_concurrent = max_concurrent
        self.in_flight = 0

    async def handle(self, request: ChatRequest) -> ChatResult:
        async with self._slots:  # released on return, error and cancellation alike
            if not self._may_send():
                raise BreakerOpen("held back: the circuit opened while this attempt queued", kind="breaker_open")
            self.in_flight += 1
            try:
                return await self._inner.handle(request)
            finally:
                self.in_flight -= 1
