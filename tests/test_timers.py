"""Timers on an injected clock: they fire in order on virtual time, cancelled ones never, and do not pile up."""

from __future__ import annotations

import asyncio

from resilient_llm.testing.clock import FakeClock
from resilient_llm.timers import Timers


def test_timers_fire_in_order_on_the_clock_and_cancelled_ones_never() -> None:
    """Three timers set out of order fire at their times; a cancelled one does not; a later, earlier one still fires
    first."""
    clock = FakeClock(start=0.0)
    fired: list[tuple[str, float]] = []

    async def scenario() -> None:
        timers = Timers(clock)
        timers.call_at(5.0, lambda: fired.append(("five", clock.now())))
        timers.call_at(2.0, lambda: fired.append(("two", clock.now())))
        timers.call_at(3.0, lambda: fired.append(("three", clock.now()))).cancel()
        await clock.sleep(0.5)
        timers.call_later(0.5, lambda: fired.append(("one", clock.now())))
        await clock.sleep(10.0)
        await timers.aclose()

    asyncio.run(clock.run(scenario()))
    assert fired == [("one", 1.0), ("two", 2.0), ("five", 5.0)]


def test_cancelled_timers_do_not_pile_up() -> None:
    """10,000 timers set an hour ahead and cancelled at once (queued attempts that got a slot) leave a small heap."""
    clock = FakeClock(start=0.0)

    async def scenario() -> int:
        timers = Timers(clock)
        for _ in range(10_000):
            timers.call_later(3600.0, lambda: None).cancel()
        size = len(timers._heap)
        await timers.aclose()
        return size

    assert asyncio.run(clock.run(scenario())) < 200
