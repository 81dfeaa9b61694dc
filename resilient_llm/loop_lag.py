"""How late our own event loop runs: the part of an attempt's latency that was the client, not the server.

A process busy with its own CPU work (rollout threads holding the GIL, a new thread pool per batch) delays every
callback on the engine's loop, the one that reads the answer too. Seen from the loop, a 10 ms server then looks
like a 40 ms one, and a latency rule cuts the concurrency limit for a queue that is not there. A tick sleeps
``interval`` seconds at a time on the injected clock and notes how much later than asked it woke up: ``total`` adds
every tick's lateness (a stall during an attempt is the difference of ``total`` between its end and its start), and
``recent`` is the lateness of one wake-up lately (an average over about ten ticks), which every callback of an
attempt pays: sending it, and reading its answer. Ticks run only while someone is ``busy`` (attempts in flight),
so an idle engine does not wake up.
"""

from __future__ import annotations

import asyncio
import contextlib

from resilient_llm.clock import Clock

TICK_S = 0.01
RECENT_WEIGHT = 0.1  # of the newest tick in ``recent``


class LoopLag:
    """``total``: seconds the loop has run late so far, measured while ``busy()`` says so."""

    def __init__(self, clock: Clock, interval: float = TICK_S) -> None:
        self._clock = clock
        self._interval = interval
        self.total = 0.0
        self.recent = 0.0
        self._task: asyncio.Task[None] | None = None
        self._users = 0

    def busy(self) -> None:
        """One more reason to measure (an attempt started)."""
        self._users += 1
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._tick())

    def idle(self) -> None:
        """One reason fewer (an attempt ended); the ticks stop at the next one once none is left."""
        self._users = max(0, self._users - 1)

    async def _tick(self) -> None:
        while self._users:
            asked = self._clock.now() + self._interval
            await self._clock.sleep(self._interval)
            late = max(0.0, self._clock.now() - asked)
            self.total += late
            self.recent += RECENT_WEIGHT * (late - self.recent)

    def during(self, total_at_start: float) -> float:
        """Seconds of an attempt that were our own loop's delay, given ``total`` when it started: its stalls, and
        at least the current lateness of its two passes through the loop."""
        return max(self.total - total_at_start, 2 * self.recent)

    async def aclose(self) -> None:
        self._users = 0
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
