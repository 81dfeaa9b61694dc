"""The fake clock the layer tests run on, and the system clock it stands in for."""

from __future__ import annotations

import asyncio

from resilient_llm.clock import SYSTEM_CLOCK
from resilient_llm.testing.clock import FakeClock


def test_fake_clock_jumps_to_the_next_deadline_when_every_task_waits() -> None:
    """Concurrent sleeps overlap in virtual time: two 30 s sleeps end at +30 s, not +60 s, in no real time."""
    clock = FakeClock(start=0.0)

    async def both() -> list[float]:
        async def nap(seconds: float) -> float:
            await clock.sleep(seconds)
            return clock.now()

        return list(await asyncio.gather(nap(30.0), nap(30.0), nap(5.0)))

    assert asyncio.run(clock.run(both())) == [30.0, 30.0, 5.0]


def test_fake_clock_wait_returns_early_when_the_event_is_set() -> None:
    """A bounded wait ends when its event is set, at the virtual time it was set, and reports it."""
    clock = FakeClock(start=0.0)

    async def scenario() -> tuple[bool, float, bool, float]:
        event = asyncio.Event()

        async def setter() -> None:
            await clock.sleep(2.0)
            event.set()

        task = asyncio.ensure_future(setter())
        woke = await clock.wait(event, 10.0)
        at = clock.now()
        await task
        timed_out = await clock.wait(asyncio.Event(), 3.0)
        return woke, at, timed_out, clock.now()

    assert asyncio.run(clock.run(scenario())) == (True, 2.0, False, 5.0)


def test_system_clock_wait_times_out_without_the_event() -> None:
    """The real clock's bounded wait reports an unset event after its timeout."""

    async def scenario() -> tuple[bool, bool]:
        event = asyncio.Event()
        missed = await SYSTEM_CLOCK.wait(event, 0.01)
        event.set()
        return missed, await SYSTEM_CLOCK.wait(event, 0.01)

    assert asyncio.run(scenario()) == (False, True)
