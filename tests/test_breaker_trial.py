"""A hung half-open trial, on the real wire: it times out on its own, and the calls waiting behind it sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from resilient_llm import Engine, Outcome
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL

CALLS = 200


@pytest.mark.slow
def test_a_hung_trial_neither_stalls_nor_spins_the_calls_waiting_behind_it(make_engine: Callable[..., Engine]) -> None:
    """With a 60 s request timeout, 200 calls wait out an outage; the endpoint comes back but the first trial hangs
    (for two minutes). The trial times out on its own (10 s: no recent answer to go by), the next one succeeds, and at
    least 95% of the calls get a real answer within 15 s of the recovery; while they wait behind the hung trial the
    whole process uses at most 0.3 s of CPU in 5 s."""
    with FaultServer("clean", hang_s=120.0) as server:
        engine = make_engine(base_url=server.url, timeout=60.0, breaker_fail_max=3, breaker_reset_timeout=1.0)
        server.down = True
        finished: list[float] = []

        async def one(i: int) -> Outcome:
            result = await engine.acomplete(MODEL, user=f"waits {i}")
            finished.append(time.monotonic())
            return result.outcome

        async def scenario() -> tuple[list[Outcome], float, float]:
            calls = [asyncio.ensure_future(one(i)) for i in range(CALLS)]
            while engine.breaker_state != "open":  # noqa: ASYNC110  (the engine's state, on its own loop)
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            server.script("hang")  # the next request, the trial, hangs
            server.down = False
            recovered_at = time.monotonic()
            await asyncio.sleep(1.5)  # the trial is out by now (one is due every ~1 s)
            cpu_before = time.process_time()
            await asyncio.sleep(5.0)
            cpu = time.process_time() - cpu_before
            return list(await asyncio.gather(*calls)), recovered_at, cpu

        outcomes, recovered_at, cpu = asyncio.run(scenario())
        assert server.stats()["faults"].get("hang") == 1
    in_time = sum(1 for t in finished if t - recovered_at <= 15.0)
    assert outcomes.count(Outcome.OK) == CALLS
    assert in_time >= 0.95 * CALLS
    assert cpu <= 0.3
