"""Cancelled calls never wedge the connection pool (encode/httpcore#1093), against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpcore

from resilient_llm import Engine
from resilient_llm.endpoints.http import HTTPHandler
from resilient_llm.errors import ProviderError
from resilient_llm.layers.limit import LimitConfig, LimitHandler
from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.types import ChatRequest, Outcome
from tests.conftest import MODEL, fast_config


def _request(text: str, timeout: float = 2.0) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=({"role": "user", "content": text},), timeout=timeout)


async def _cancel_after(handler: LimitHandler, text: str, steps: int) -> bool:
    """Start one call, let the loop run ``steps`` times, cancel it; True if it had already finished."""
    task = asyncio.ensure_future(handler.handle(_request(text)))
    for _ in range(steps):
        await asyncio.sleep(0)
    finished = task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, ProviderError):
        await task
    return finished


def test_cancellation_at_every_point_of_an_exchange_leaves_the_pool_usable(server: FaultServer) -> None:
    """With one slot, a call cancelled at any step of its exchange leaves no stuck connection behind: the next
    call is answered (before the fix one cancellation at httpcore's lock checkpoint orphaned the only connection)."""

    async def sweep(limit: LimitHandler, latencies: list[float]) -> int:
        """Cancel after 0, 1, 2, ... loop steps until the exchange finishes before the cancel five times running."""
        finished_in_a_row, steps = 0, 0
        while finished_in_a_row < 5 and steps < 400:
            finished = await _cancel_after(limit, f"cancel-{steps}", steps)
            finished_in_a_row = finished_in_a_row + 1 if finished else 0
            started = time.monotonic()
            result = await limit.handle(_request(f"after-{steps}"))
            latencies.append(time.monotonic() - started)
            assert result.outcome is Outcome.OK
            steps += 1
        return steps

    async def sweeps() -> tuple[list[float], list[int]]:
        http = HTTPHandler(fast_config(server.url).http, 1)
        limit = LimitHandler(http, LimitConfig(mode="fixed", max_concurrent=1))
        latencies: list[float] = []
        try:
            steps = [await sweep(limit, latencies) for _ in range(5)]  # server timing moves the points: repeat
            assert limit.in_flight == 0
        finally:
            await http.aclose()
        return latencies, steps

    latencies, steps = asyncio.run(sweeps())
    assert min(steps) > 5  # each sweep really walked through an exchange
    assert max(latencies) < 1.5  # no call waited for a pool slot


def test_a_leaked_pool_is_replaced(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """Should the pool leak a connection anyway (the upstream bug's effect, planted here), the attempt that waits
    for a slot fails as pool_timeout within the connect timeout, the client is renewed and the retry is answered."""
    engine = make_engine(max_concurrent=1, connect_timeout=0.5)
    assert engine.complete(MODEL, user="warm").outcome is Outcome.OK
    http = engine._stack.http
    pool = http._clients[0]._transport._pool  # type: ignore[attr-defined]
    pool._connections.append(pool.create_connection(httpcore.Origin(b"http", b"127.0.0.1", server.port)))

    started = time.monotonic()
    result = engine.complete(MODEL, user="after the leak")
    assert result.outcome is Outcome.OK
    assert [f.kind for f in result.failures] == ["pool_timeout"]
    assert time.monotonic() - started < 3.0
    assert http.pool_renewals == 1
    assert engine.complete(MODEL, user="next").attempts == 1
