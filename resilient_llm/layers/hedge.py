"""Hedged requests: when an attempt runs longer than most recent ones did, send one duplicate; the first valid answer
wins and the other request is cancelled. Bounded by a budget, and never while the breaker is not closed, right after
the endpoint pushed back (429/402), or when the concurrency cap is full.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resilient_llm.errors import is_backpressure
from resilient_llm.policy.hedge import HedgeBudget, hedge_delay
from resilient_llm.types import ChatRequest, ChatResult, Handler
from resilient_llm.validation import BOOL, FRACTION, SECONDS, Validated, setting

BACKPRESSURE_QUIET_S = 10.0  # no hedging this long after a 429 / in-flight-budget 402
SAMPLES_PER_MODEL = 500


@dataclass(frozen=True)
class HedgeConfig(Validated):
    """Opt-in hedging: after the ``quantile`` of recent latencies (clamped), one duplicate, within ``budget``."""

    enabled: bool = setting(False, BOOL)
    quantile: float = setting(0.98, FRACTION)
    min_delay: float = setting(0.25, SECONDS)
    max_delay: float = setting(30.0, SECONDS)
    budget: float = setting(0.05, FRACTION)  # hedges per attempt over the last minute


class HedgeHandler:
    """Wraps one attempt; the duplicate goes through the same layers below (limit, http)."""

    def __init__(
        self,
        inner: Handler,
        config: HedgeConfig,
        *,
        may_hedge: Callable[[], bool],
        logger: Any,
    ) -> None:
        self._inner = inner
        self._quantile = config.quantile
        self._floor = config.min_delay
        self._cap = config.max_delay
        self._budget = HedgeBudget(config.budget)
        self._may_hedge = may_hedge
        self._log = logger
        self._latencies: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=SAMPLES_PER_MODEL)
        )
        self._pushed_back_at = -BACKPRESSURE_QUIET_S
        self.hedges = 0
        self.hedge_wins = 0

    async def handle(self, request: ChatRequest) -> ChatResult:
        started = time.monotonic()
        self._budget.record_attempt(started)
        delay = hedge_delay(self._latencies[request.model], quantile=self._quantile, floor=self._floor, cap=self._cap)
        primary = asyncio.create_task(self._inner.handle(request))
        tasks = {primary}
        started_at = {primary: started}
        try:
            done, _ = await asyncio.wait(tasks, timeout=delay)
            if not done and self._should_hedge():
                duplicate = asyncio.create_task(self._inner.handle(request))
                tasks.add(duplicate)
                started_at[duplicate] = time.monotonic()
                self.hedges += 1
                self._log.info("hedge", call_id=request.call_id, model=request.model, threshold_ms=round(delay * 1e3))
            return await self._first_valid(tasks, primary, request, started_at)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)  # the loser's slot is back before we return

    def _should_hedge(self) -> bool:
        now = time.monotonic()
        if now - self._pushed_back_at < BACKPRESSURE_QUIET_S or not self._may_hedge():
            return False
        return self._budget.try_spend(now)

    async def _first_valid(
        self,
        tasks: set[asyncio.Task[ChatResult]],
        primary: asyncio.Task[ChatResult],
        request: ChatRequest,
        started_at: dict[asyncio.Task[ChatResult], float],
    ) -> ChatResult:
        pending = set(tasks)
        error: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    result = task.result()
                    # The winner's own latency: the endpoint's pace, not how long this call waited in all.
                    self._latencies[request.model].append(time.monotonic() - started_at[task])
                    if task is not primary:
                        self.hedge_wins += 1
                        self._log.info("hedge_won", call_id=request.call_id, model=request.model)
                    return result
                exc = task.exception()
                if exc is not None and is_backpressure(exc):
                    self._pushed_back_at = time.monotonic()
                if task is primary or error is None:
                    error = exc
        assert error is not None
        raise error
