"""When the primary route has failed for good, the next route answers: LiteLLM towards another provider, then the
configured neutral result. Caller mistakes skip the chain: a bad request is bad everywhere.

A moderation refusal is the exception among them: another provider may judge the text differently, so the chain is
tried; when nothing answers, the call ends ``flagged`` with its own text (``flagged_text``, by default the neutral
text), counted apart from outages so a policy that learns to get its answers flagged shows in the metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from resilient_llm.errors import CallFailed, FailedAttempt, FailureKind, ProviderError, is_caller_mistake
from resilient_llm.types import ChatRequest, ChatResult, Handler, Outcome
from resilient_llm.validation import TEXT, Check, Validated, setting

ROUTES = ("litellm", "neutral")


def _routes_ok(routes: tuple[str, ...]) -> bool:
    known = isinstance(routes, tuple) and bool(routes) and all(r in ROUTES for r in routes)
    # nothing can come after the neutral result
    return known and len(set(routes)) == len(routes) and ("neutral" not in routes or routes[-1] == "neutral")


FALLBACK_ROUTES: Check[tuple[str, ...]] = Check(
    "a comma-separated list of litellm, neutral (neutral last)",
    lambda raw: tuple(part.strip().lower() for part in raw.split(",") if part.strip()),
    _routes_ok,
)


@dataclass(frozen=True)
class FallbackConfig(Validated):
    """What answers when the primary route failed for good: these routes in order (litellm only when configured)."""

    routes: tuple[str, ...] = setting(ROUTES, FALLBACK_ROUTES)
    neutral_text: str = setting("", TEXT)  # the text of a neutral result
    flagged_text: str | None = setting(None, TEXT, optional=True)  # a moderation refusal's text; None: neutral_text

    @property
    def neutral(self) -> bool:
        return "neutral" in self.routes


class FallbackHandler:
    """Primary, then each fallback route in order, then (when configured) the neutral result."""

    def __init__(
        self,
        primary: Handler,
        routes: Sequence[tuple[str, Handler]],
        config: FallbackConfig,
    ) -> None:
        self._primary = primary
        self._routes = tuple(routes)
        self._neutral = config.neutral
        self._neutral_text = config.neutral_text
        self._flagged_text = config.neutral_text if config.flagged_text is None else config.flagged_text

    async def handle(self, request: ChatRequest) -> ChatResult:
        try:
            return await self._primary.handle(request)
        except CallFailed as exc:
            flagged = exc.last.kind == FailureKind.MODERATION
            if is_caller_mistake(exc.last) and not flagged:
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
        if flagged:
            return self._neutral_result(request, failures, Outcome.FLAGGED, self._flagged_text)
        return self._neutral_result(request, failures)

    def _neutral_result(
        self,
        request: ChatRequest,
        failures: Sequence[FailedAttempt],
        outcome: Outcome = Outcome.NEUTRAL,
        text: str | None = None,
    ) -> ChatResult:
        return ChatResult(
            text=self._neutral_text if text is None else text,
            outcome=outcome,
            model=request.model,
            attempts=len(failures),
            failures=tuple(failures),
            route="neutral",
        )
