"""Process-wide cap on requests in flight. Held for one attempt only, so a backoff sleep never holds a slot."""

from __future__ import annotations

import asyncio

from resilient_llm.types import ChatRequest, ChatResult, Handler


class LimitHandler:
    """At most ``max_concurrent`` attempts run at once; the rest wait in FIFO order."""

    def __init__(self, inner: Handler, max_concurrent: int) -> None:
        self._inner = inner
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_concurrent = max_concurrent

    @property
    def in_flight(self) -> int:
        return self.max_concurrent - self._slots._value

    async def handle(self, request: ChatRequest) -> ChatResult:
        async with self._slots:  # released on return, error and cancellation alike
            return await self._inner.handle(request)
