"""A fake clock for layer tests: virtual monotonic time that moves only when every task waits on it.

``FakeClock.run(coro)`` runs a coroutine while time jumps straight to the next sleeper's deadline whenever the event
loop has nothing else to do, so a test of a 30 s outage takes milliseconds and is deterministic. Only waits made
through the clock (``sleep``, ``wait``) are virtual: real I/O still takes real time, so use it with fake inner
handlers (``handler_from``), not with sockets.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
IDLE_SPINS = 20  # loop turns without progress before time is moved on


class FakeClock:
    """Implements ``resilient_llm.clock.Clock`` on virtual time, starting at ``start``."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        timer = asyncio.ensure_future(self.sleep(timeout))
        try:
            await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, timer):
                task.cancel()
        return event.is_set()

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` and wake every sleeper due by then."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end, moving time to the next deadline whenever nothing else can run."""
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(IDLE_SPINS):
                await asyncio.sleep(0)
                if task.done():
                    break
            else:
                live = [s for s in self._sleepers if not s[2].done()]
                if not live:
                    await asyncio.sleep(0.001)  # waiting on something real (a thread, a socket): let it run
                    continue
                self.advance(max(0.0, min(s[0] for s in live) - self._now))
        return task.result()
