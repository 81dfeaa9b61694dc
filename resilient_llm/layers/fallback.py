"""When the primary route has failed for good, the caller still gets an answer: the configured neutral result."""

from __future__ import annotations

from resilient_llm.errors import CallFailed
from resilient_llm.policy.retry import is_caller_mistake
from resilient_llm.types import ChatRequest, ChatResult, Handler, Outcome


class FallbackHandler:
    """Turns a failed call into an ``neutral`` result; caller mistakes are raised instead when the caller asked."""

    def __init__(self, inner: Handler, neutral_text: str) -> None:
        self._inner = inner
        self._neutral_text = neutral_text

    async def handle(self, request: ChatRequest) -> ChatResult:
        try:
            return await self._inner.handle(request)
        except CallFailed as exc:
            if request.raise_caller_errors and is_caller_mistake(exc.last):
                raise
            return ChatResult(
                text=self._neutral_text,
                outcome=Outcome.NEUTRAL,
                model=request.model,
                attempts=len(exc.failures),
                failures=exc.failures,
                route="neutral",
            )
