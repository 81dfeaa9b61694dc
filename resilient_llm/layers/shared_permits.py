"""The limit layer's bridge to the Redis semaphore (``stores/shared_limit.py``): its blocking calls run on worker
threads, one task per process renews this process's leases, and when Redis fails the process carries on with its
local limit (the store logs one warning and one recovery line)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resilient_llm.errors import ProviderTimeout
from resilient_llm.stores.shared_limit import SharedLimit, SharedLimitDown

POLL_S = 0.02  # how soon a refused attempt asks again when no gate says how long to wait


@dataclass(frozen=True)
class Lease:
    """A shared permit (``id`` None: Redis is down and the attempt runs on the local limit alone)."""

    id: str | None
    in_flight: int | None  # across every process, this attempt included
    limit: float | None  # the shared limit, as Redis has it
    generation: int = 0


class SharedPermits:
    """Permits, limit and gate of one endpoint, shared through Redis, awaited from the engine loop."""

    def __init__(self, store: SharedLimit) -> None:
        self._store = store
        self._renewing: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()

    async def acquire(self, limit: int, timeout: float) -> Lease:  # noqa: ASYNC109  (the call's deadline)
        """A shared permit within ``timeout``; waits while every permit is taken or the shared gate is shut."""
        give_up = time.monotonic() + timeout
        while True:
            try:
                got = await asyncio.to_thread(self._store.try_acquire, limit)
            except SharedLimitDown:
                return Lease(None, None, None)
            if got.lease is not None:
                self._keep_renewing()
                return Lease(got.lease, got.in_flight, got.limit, got.generation)
            pause = got.gate_s or POLL_S
            if time.monotonic() + pause > give_up:
                raise ProviderTimeout(f"no shared permit free within {timeout:g} s", kind="queue_timeout")
            await asyncio.sleep(pause)

    def release(self, lease: Lease) -> None:
        if lease.id is not None:
            self._in_background(self._store.release, lease.id)

    def shut_gate(self, seconds: float) -> None:
        self._in_background(self._store.set_gate, seconds)

    def publish(
        self, before: float, after: float, generation: int, initial: int, adopt: Callable[[float], None]
    ) -> None:
        """Carry a local change over to the shared limit (a rise adds unless a cut came since ``generation``, a cut
        applies once per overload), then adopt the shared value."""

        def carry() -> float:
            if after > before:
                return self._store.add_to_limit(after - before, initial, generation)
            return self._store.cut_limit(after, generation, initial)[0]

        loop = asyncio.get_running_loop()
        future = self._in_background(carry)
        future.add_done_callback(
            lambda done: loop.call_soon(adopt, done.result()) if not done.cancelled() and not done.exception() else None
        )

    def _in_background(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().run_in_executor(None, _quiet(function), *args)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        return future

    def _keep_renewing(self) -> None:
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._store.renew_every_s)
            with contextlib.suppress(SharedLimitDown):
                await asyncio.to_thread(self._store.renew)

    async def aclose(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.to_thread(self._store.close)


def _quiet(function: Callable[..., Any]) -> Callable[..., Any]:
    """Redis trouble in a background call is the store's to report (once); it must not surface as a loop error."""

    def call(*args: Any) -> Any:
        try:
            return function(*args)
        except SharedLimitDown:
            return None

    return call
