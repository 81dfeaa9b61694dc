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

COMPACT_AT = 64


class Timer:
    """A scheduled callback; ``cancel`` before it fires and it never does."""

    __slots__ = ("_owner", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None], owner: Timers) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._owner = owner

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._owner._cancelled += 1


class Timers:
    """``call_at(when, callback)`` on ``clock`` time; the serving task starts with the first timer."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cancelled = 0  # cancelled timers still in the heap

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        if self._cancelled > COMPACT_AT and self._cancelled > len(self._heap) // 2:
            # Queued attempts cancel their deadline timers when they get a slot, long before it is due: drop them
            # (as asyncio does with its own cancelled timers) instead of keeping one per attempt for its whole timeout.
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0
        timer = Timer(when, callback, self)
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
                self._cancelled -= 1
                continue
            left = when - self._clock.now()
            if left > 0:
                self._changed.clear()
                await self._clock.wait(self._changed, left)
                continue
            heapq.heappop(self._heap)
            timer.cancelled = True  # fired: a later cancel() must not count it as still in the heap
            timer.callback()

    async def aclose(self) -> None:
        self._heap.clear()
        self._cancelled = 0
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
