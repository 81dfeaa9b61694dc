"""When the primary route has failed for good, the next route answers: LiteLLM towards another provider, then the
configured neutral result. Caller mistakes skip the chain: a bad request is bad everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from resilient_llm.errors import CallFailed, ProviderError
from resilient_llm.policy.retry import is_caller_mistake
from resilient_llm.types import ChatRequest, ChatResult, FailedAttempt, Handler, Outcome


class FallbackHandler:
    """Primary, then each fallback route in order, then (when configured) the neutral result."""

    def __init__(
        self,
        primary: Handler,
        routes: Sequence[tuple[str, Handler]],
        *,
        neutral: bool,
        neutral_text: str,
    ) -> None:
        self._primary = primary
        self._routes = tuple(routes)
        self._neutral = neutral
        self._neutral_text = neutral_text

    async def handle(self, request: ChatRequest) -> ChatResult:
        try:
            return await self._primary.handle(request)
        except CallFailed as exc:
            if is_caller_mistake(exc.last):
                if request.raise_caller_errors or not self._neutral:
                    raise
                return self._neutral_result(request, exc.failures)
            failures, last = list(exc.failures), exc.last
        for name, route in self._routes:
            try:
                result = await route.handle(request)
            except ProviderError as exc:
                failures.append(FailedAttempt.of(exc, route=name))
                last = exc
                continue
            return dataclasses.replace(
                result, outcome=Outcome.FALLBACK, attempts=len(failures) + 1, failures=tuple(failures), route=name
            )
        if not self._neutral:
            raise CallFailed(f"every route failed; last: {last}", failures, last)
        return self._neutral_result(request, failures)

    def _neutral_result(self, request: ChatRequest, failures: Sequence[FailedAttempt]) -> ChatResult:
        return ChatResult(
            text=self._neutral_text,
            outcome=Outcome.NEUTRAL,
            model=request.model,
            attempts=len(failures),
            failures=tuple(failures),
            route="neutral",
        )
