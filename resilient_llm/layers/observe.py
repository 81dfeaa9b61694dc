"""The outermost layer: one structured log line and one counter update per call, whatever happens."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from typing import Any

from resilient_llm.errors import CallFailed
from resilient_llm.logs import log_call
from resilient_llm.recorder import Metrics
from resilient_llm.types import ChatRequest, ChatResult, Handler, Outcome


class ObserveHandler:
    """Times the call, logs it, counts its outcome; never changes what the caller receives."""

    def __init__(
        self, inner: Handler, logger: Any, *, log_prompts: bool = False, metrics: Metrics | None = None
    ) -> None:
        self._inner = inner
        self._log = logger
        self._log_prompts = log_prompts
        self.metrics = metrics or Metrics()
        self.outcomes = collections.Counter({str(outcome): 0 for outcome in Outcome} | {"cancelled": 0})
        self._counting = threading.Lock()

    async def handle(self, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        record = request.record
        fields = self._fields(request)
        try:
            result = await self._inner.handle(request)
        except asyncio.CancelledError:
            self._emit("cancelled", started, fields)
            raise
        except CallFailed as exc:
            failures = [dataclasses.asdict(f) for f in exc.failures]
            self._emit(
                Outcome.ERROR,
                started,
                fields,
                attempts=len(failures),
                failures=failures,
                error=str(exc),
                waited_s=round(record.waited_s, 3),
            )
            raise
        except BaseException as exc:  # a bug below us: still exactly one line, then the caller sees it
            self._emit(Outcome.ERROR, started, fields, error=f"{type(exc).__name__}: {exc}")
            raise
        return self._answered(result, started, fields, record.waited_s, record.limit)

    def answered_now(self, request: ChatRequest, result: ChatResult, started: float) -> ChatResult:
        """Log and count a call answered outside the engine's loop (a cache hit read in the caller's thread)."""
        return self._answered(result, started, self._fields(request), 0.0, None)

    def _fields(self, request: ChatRequest) -> dict[str, Any]:
        fields: dict[str, Any] = {"call_id": request.call_id, "model": request.model}
        if self._log_prompts:
            fields["messages"] = [dict(m) for m in request.messages]
        return fields

    def _answered(
        self, result: ChatResult, started: float, fields: dict[str, Any], waited_s: float, limit: int | None
    ) -> ChatResult:
        result = dataclasses.replace(result, latency_s=time.perf_counter() - started)
        self._emit(
            result.outcome,
            started,
            fields,
            route=result.route,
            answered_by=result.model,
            provider=result.provider,
            attempts=result.attempts,
            failures=[dataclasses.asdict(f) for f in result.failures],
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            cost=result.usage.cost,
            response_id=result.response_id,
            usage_dropped=list(result.usage_dropped) or None,
            cache=result.cache,
            cache_key=result.cache_key[:19] if result.cache_key else None,
            waited_s=round(waited_s, 3),
            limit=limit,
        )
        return result

    def _emit(self, outcome: str, started: float, fields: dict[str, Any], **more: Any) -> None:
        with self._counting:  # calls end on the engine's thread, and cache hits on callers' threads
            self.outcomes[str(outcome)] += 1
        latency_s = time.perf_counter() - started
        self.metrics.record(str(outcome), latency_s, fields["model"], more)
        log_call(self._log, str(outcome), round(latency_s * 1000.0, 3), **fields, **more)
