"""Time, injected: the layers ask a ``Clock`` for the monotonic time and to sleep, so their tests can run on a fake one
(``resilient_llm.testing.clock.FakeClock``) without real waits. Wall-clock time is for log timestamps only; state
compared across machines uses the shared store's own clock (Redis ``TIME`` / key expiry), never this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds and sleeping on them."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109  (a bounded wait is the point)
        """Wait for ``event`` at most ``timeout`` seconds; whether it was set."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and asyncio's sleeps."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109
        if event.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.0, timeout))
        return event.is_set()


SYSTEM_CLOCK = SystemClock()
