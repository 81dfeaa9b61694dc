"""The limit layer's bridge to the Redis permits (``stores/shared_limit.py``), kept off the call's path.

Per model this process holds a few permits ahead of need (``spare``: an eighth of the model's limit, at least one),
never more than its fair share while other processes use the model (Redis splits the limit among them), taken from
Redis in blocks: an attempt takes a free one without a round trip, gives it back to the local pool when
it ends, and a background refill tops the pool up while it runs low. Once a second a ``sync`` renews every permit
held (re-adding any Redis lost), gives back what has sat unused beyond the spare, and reads every model's shared
limit and gate back for the limit layer (``watch``). Growth and cuts of a model's limit are published in the
background, one write at a time per model (changes made meanwhile are merged into the next).

Redis calls run on this bridge's own few threads, never on the event loop. An attempt that finds no free permit
waits for the refill at most ``redis_wait_s``: Redis slower than that (or down) and the attempt goes out on the local
limit alone, as do the others for ``local_s``, while the refill carries on in the background; its permits are used
once they come (the resync).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from resilient_llm.clock import SYSTEM_CLOCK, Clock
from resilient_llm.errors import ProviderTimeout
from resilient_llm.stores.shared_limit import ModelView, Reserved, SharedLimit, SharedLimitDown

T = TypeVar("T")
POLL_S = 0.02  # how soon a refused attempt asks again when no gate says how long to wait
REDIS_WAIT_S = 0.1  # a refill slower than this: the attempt goes on the local limit
LOCAL_S = 1.0  # after that, attempts go on the local limit at once for this long
SYNC_S = 1.0  # renew permits, give back the unused, read limits and gates
SPARE_SHARE = 0.125  # permits held ahead of need, as a share of the model's limit
THREADS = 4

Listener = Callable[[str, float | None, int | None, float], None]  # model, shared limit, generation, gate seconds


@dataclass(frozen=True)
class Lease:
    """One attempt's permit (``permit`` None: it went out on the local limit alone)."""

    model: str
    permit: str | None
    others: int  # the model's permits other processes held at the last look
    limit: float | None  # the model's shared limit, as Redis had it at the last look
    generation: int = 0


@dataclass(eq=False)
class _Pool:
    """One model's permits in this process."""

    free: list[str] = field(default_factory=list)
    busy: set[str] = field(default_factory=set)
    waiting: int = 0
    refill: asyncio.Future[Reserved | None] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    down: bool = False  # the last refill failed: Redis is away
    fair: int = 0  # the most this process may hold (the model's limit split among its active processes; 0: unknown)
    limit: float | None = None
    generation: int = 0
    others: int = 0
    gate_s: float = 0.0
    wanted_limit: int = 1
    growth: float = 0.0  # published growth not yet written
    growth_generation: int = 0
    cut: tuple[float, int] | None = None  # a cut not yet written: (target, generation)
    initial: int = 1
    adopt: Callable[[float], None] | None = None
    publishing: asyncio.Future[float | None] | None = None

    def spare(self) -> int:
        return max(1, math.ceil(self.wanted_limit * SPARE_SHARE))


class SharedPermits:
    """Permits, limits and gates of one endpoint's models, shared through Redis, used from the engine loop."""

    def __init__(self, store: SharedLimit, *, clock: Clock = SYSTEM_CLOCK, redis_wait_s: float = REDIS_WAIT_S) -> None:
        self._store = store
        self._clock = clock
        self._redis_wait_s = redis_wait_s
        self._pools: dict[str, _Pool] = {}
        self._listeners: list[Listener] = []
        self._local_until = -math.inf
        self._threads = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="resilient-llm-redis")
        self._syncing: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()

    def watch(self, listener: Listener) -> None:
        """Call ``listener`` with what Redis says about a model whenever a refill or sync reads it."""
        self._listeners.append(listener)

    async def take(self, model: str, limit: int, timeout: float) -> Lease:  # noqa: ASYNC109  (the call's deadline)
        """A permit for ``model`` within ``timeout``: a free one at once, else the refill's within ``redis_wait_s``,
        else the local limit alone. Waits while the fleet's limit for the model is full or its gate shut."""
        pool = self._pool(model)
        pool.wanted_limit = max(1, limit)
        self._keep_syncing()
        give_up = self._clock.now() + timeout
        pool.waiting += 1
        try:
            while True:
                if pool.free:
                    return self._lease(model, pool, pool.free.pop())
                now = self._clock.now()
                self._top_up(model, pool)
                if pool.down or now < self._local_until:
                    return self._lease(model, pool, None)
                arrived = pool.arrived
                if not await self._clock.wait(arrived, min(self._redis_wait_s, max(0.0, give_up - now))):
                    if self._clock.now() >= give_up:
                        raise ProviderTimeout(f"no shared permit within {timeout:g} s", kind="queue_timeout")
                    self._local_until = self._clock.now() + LOCAL_S  # Redis is slow: local decisions for a while
                    return self._lease(model, pool, None)
                if pool.free or pool.down:
                    continue
                pause = pool.gate_s or POLL_S  # the fleet holds every permit, or the gate is shut
                if self._clock.now() + pause > give_up:
                    raise ProviderTimeout(f"no shared permit free within {timeout:g} s", kind="queue_timeout")
                await self._clock.sleep(pause)
        finally:
            pool.waiting -= 1

    def put_back(self, lease: Lease) -> None:
        """The attempt ended: its permit goes back to this process's pool (Redis hears at the next sync), or to
        Redis when this process holds more than its fair share (other processes came to use the model)."""
        pool = self._pools[lease.model]
        if lease.permit is not None and lease.permit in pool.busy:
            pool.busy.discard(lease.permit)
            if pool.fair and len(pool.busy) + len(pool.free) >= pool.fair:
                self._in_background(self._store.release, lease.model, [lease.permit])
            else:
                pool.free.append(lease.permit)

    def shut_gate(self, model: str, seconds: float) -> None:
        self._in_background(self._store.set_gate, model, seconds)

    def publish(
        self, model: str, before: float, after: float, generation: int, initial: int, adopt: Callable[[float], None]
    ) -> None:
        """Carry a local change over to the model's shared limit (a rise adds unless a cut came since
        ``generation``, a cut applies once per overload), then adopt the shared value."""
        pool = self._pool(model)
        if after > before:
            pool.growth += after - before
            pool.growth_generation = generation
        else:
            pool.cut = (after, generation)
            pool.growth = 0.0
        pool.initial, pool.adopt = initial, adopt
        self._flush(model, pool)

    def _pool(self, model: str) -> _Pool:
        pool = self._pools.get(model)
        if pool is None:
            pool = self._pools[model] = _Pool()
        return pool

    def _lease(self, model: str, pool: _Pool, permit: str | None) -> Lease:
        if permit is not None:
            pool.busy.add(permit)
        if len(pool.free) < pool.spare():
            self._top_up(model, pool)
        return Lease(model, permit, pool.others, pool.limit, pool.generation)

    def _top_up(self, model: str, pool: _Pool) -> None:
        """Start a refill unless one runs: enough for every waiting attempt, plus the spare."""
        if pool.refill is not None:
            return
        wanted = pool.waiting + pool.spare() - len(pool.free)
        if wanted <= 0:
            return
        pool.arrived = asyncio.Event()
        refill = self._run(self._store.reserve, model, wanted, pool.wanted_limit)
        pool.refill = refill
        refill.add_done_callback(lambda done: self._refilled(model, pool, done))

    def _refilled(self, model: str, pool: _Pool, done: asyncio.Future[Reserved | None]) -> None:
        pool.refill = None
        got = None if done.cancelled() else done.result()
        pool.down = got is None
        if got is not None:
            pool.free.extend(got.permits)
            pool.limit, pool.generation, pool.gate_s = got.limit, got.generation, got.gate_s
            pool.fair = got.fair
            pool.others = max(0, got.model_in_flight - len(pool.free) - len(pool.busy))
            for listener in self._listeners:
                listener(model, got.limit, got.generation, got.gate_s)
        pool.arrived.set()
        if got is not None and got.permits and pool.waiting > len(pool.free):
            self._top_up(model, pool)

    def _flush(self, model: str, pool: _Pool) -> None:
        """Write the model's pending limit change, one at a time; adopt what Redis then has."""
        if pool.publishing is not None:
            return
        initial = pool.initial
        if pool.cut is not None:
            (target, generation), pool.cut = pool.cut, None
            writing = self._run(lambda: self._store.cut_limit(model, target, generation, initial)[0])
        elif pool.growth > 0:
            delta, pool.growth = pool.growth, 0.0
            generation = pool.growth_generation
            writing = self._run(lambda: self._store.add_to_limit(model, delta, initial, generation))
        else:
            return
        pool.publishing = writing

        def written(done: asyncio.Future[float | None]) -> None:
            pool.publishing = None
            value = None if done.cancelled() else done.result()
            if value is not None and pool.adopt is not None:
                pool.adopt(value)
            self._flush(model, pool)

        writing.add_done_callback(written)

    def _keep_syncing(self) -> None:
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.ensure_future(self._sync_forever())

    async def _sync_forever(self) -> None:
        while True:
            await self._clock.sleep(SYNC_S)
            for model, pool in self._pools.items():
                keep = pool.spare() + pool.waiting
                if pool.fair:
                    keep = min(keep, max(0, pool.fair - len(pool.busy)))
                unused = len(pool.free) - keep
                if unused > 0 and pool.refill is None:
                    extra, pool.free = pool.free[:unused], pool.free[unused:]
                    await self._run(self._store.release, model, extra)
            views: dict[str, ModelView] | None = await self._run(self._store.sync, list(self._pools))
            for model, view in (views or {}).items():
                pool = self._pool(model)
                pool.limit, pool.generation, pool.gate_s = view.limit, view.generation, view.gate_s
                pool.fair = view.fair or pool.fair
                pool.others = max(0, view.in_flight - len(pool.free) - len(pool.busy))
                for listener in self._listeners:
                    listener(model, view.limit, view.generation, view.gate_s)

    def _run(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T | None]:
        """``function(*args)`` on the bridge's threads; None when Redis is away (the store logs that once)."""
        future = asyncio.get_running_loop().run_in_executor(self._threads, _quiet(function), *args)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        return future

    def _in_background(self, function: Callable[..., Any], *args: Any) -> None:
        self._run(function, *args)

    async def aclose(self) -> None:
        if self._syncing is not None:
            self._syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncing
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(self._threads, self._store.close)
        self._threads.shutdown(wait=False)


def _quiet(function: Callable[..., T]) -> Callable[..., T | None]:
    """Redis trouble in a background call is the store's to report (once); it must not surface as a loop error."""

    def call(*args: Any) -> T | None:
        try:
            return function(*args)
        except SharedLimitDown:
            return None

    return call
