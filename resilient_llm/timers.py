"""Callbacks at given times on an injected ``Clock``: one task serves every timer of its owner.

``loop.call_later`` runs on the event loop's own clock, which a ``FakeClock`` does not move; a timer here sleeps on the
injected clock instead, so a layer's waits (a queued attempt's deadline, a gate that reopens) run on virtual time in
its tests. One task and a heap rather than a task per timer: a queued attempt costs a heap entry, not a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable

from resilient_llm.clock import Clock


class Timer:
    """A scheduled callback; ``cancel`` before it fires and it never does."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """``call_at(when, callback)`` on ``clock`` time; the serving task starts with the first timer."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (when, next(self._order), timer))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._serve())
        elif earliest is None or when < earliest:
            self._changed.set()
        return timer

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self._clock.now() + max(0.0, seconds), callback)

    async def _serve(self) -> None:
        while self._heap:
            when, _, timer = self._heap[0]
            if timer.cancelled:
                heapq.heappop(self._heap)
                continue
            left = when - self._clock.now()
            if left > 0:
                self._changed.clear()
                await self._clock.wait(self._changed, left)
                continue
            heapq.heappop(self._heap)
            timer.callback()

    async def aclose(self) -> None:
        self._heap.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
