"""Breaker state shared through Redis, so every process and machine calling one endpoint sees its outages together.

What is shared is only what changes rarely: that a circuit (the endpoint's, or one model's) is open, since when, when
its next trial is due, and who holds that trial. Failure counts stay in each process, so a call that succeeds writes
nothing. Per circuit, under ``resilient_llm:breaker:<route>:<endpoint hash>:<circuit>:``:

- ``outage``: present while the circuit is not closed; its value is when the outage began, on Redis's clock (``TIME``);
- ``due``: present until the next trial may go (its expiry is the probe spacing: read back with ``PTTL``);
- ``trial``: the trial's claim, held by one process for as long as the trial may take (``SET NX PX``).

Everything compared across machines is a key's remaining life or a difference of two Redis ``TIME`` readings, never a
machine's own clock, so machines whose clocks disagree by minutes still agree on when the next trial is due.

Calls never wait for Redis in the common case: the breaker layer keeps the state locally; this store writes state
changes and reads every circuit back in one round trip every ``REFRESH_S``, on a background task. The only round trip
on a call's path is the claim of a trial, made by a call that is already waiting out an outage. Every operation is
bounded (``REDIS_SOCKET_TIMEOUT_S``): when Redis fails or is slower than that, the breaker decides locally (one
warning), Redis is tried again every ``RETRY_S``, and once it answers the local state is written back (one info line).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from resilient_llm.clock import SYSTEM_CLOCK, Clock
from resilient_llm.errors import ConfigError
from resilient_llm.stores import REDIS_SOCKET_TIMEOUT_S

T = TypeVar("T")
REFRESH_S = 0.5  # how often the shared state is read back: another process's open or close is seen this late
RETRY_S = 2.0  # after Redis failed, how long the breaker decides alone before trying it again
OUTAGE_KEY_TTL_MS = 3_600_000  # an outage nobody probes any more (every process gone) is forgotten after an hour

# KEYS: outage, due, trial. ARGV: ms until the next trial. Returns how long the outage has lasted (ms, Redis time).
MARK_OPEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], now, 'NX')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', math.max(1, tonumber(ARGV[1])))
redis.call('DEL', KEYS[3])
return now - tonumber(redis.call('GET', KEYS[1]))
"""

# KEYS: outage, due, trial. ARGV: this process's token, ms the trial may take. Returns -1: closed (nothing to claim),
# 0: claimed (also when this process held it: a trial given up here passes to its next call at once), n > 0: not now,
# the trial is not due yet or another process holds it for n ms more.
CLAIM_TRIAL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local due = redis.call('PTTL', KEYS[2])
if due > 0 then return due end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] then return math.max(1, redis.call('PTTL', KEYS[3])) end
redis.call('SET', KEYS[3], ARGV[1], 'PX', math.max(1, tonumber(ARGV[2])))
return 0
"""


@dataclasses.dataclass(frozen=True)
class SharedView:
    """One circuit as Redis has it."""

    open: bool  # an outage is recorded (open or half-open)
    outage_s: float = 0.0  # how long it has lasted, on Redis's clock
    wait_s: float = 0.0  # until the next trial may be claimed (not due yet, or another process holds it)


CLOSED_VIEW = SharedView(open=False)


@dataclasses.dataclass(frozen=True)
class TrialClaim:
    """The answer to a claim: ``granted``; or not, ``closed`` (the outage ended elsewhere), or ``wait_s`` more."""

    granted: bool
    closed: bool = False
    wait_s: float = 0.0


GRANTED = TrialClaim(granted=True)


class SharedBreakerState:
    """Reads and writes the shared circuits of one route and endpoint; decides nothing (the layer does)."""

    def __init__(self, url: str, route: str, endpoint: str, logger: Any, *, clock: Clock = SYSTEM_CLOCK) -> None:
        try:
            import redis.asyncio  # noqa: F401  (checked here: a missing extra is a start-up error, not a call's)
        except ImportError as exc:
            raise ConfigError(
                "RESILIENT_LLM_BREAKER_REDIS_URL is set but redis is not installed: pip install 'resilient-llm[redis]'"
            ) from exc
        self._url = url
        self._prefix = f"resilient_llm:breaker:{route}:{hashlib.sha256(endpoint.encode()).hexdigest()[:12]}:"
        self._route = route
        self._log = logger
        self._clock = clock
        self._token = os.urandom(8).hex()  # whose trial claim it is, in Redis
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._writes: collections.deque[Callable[[Any], Awaitable[object]]] = collections.deque()
        self._wake = asyncio.Event()
        self._retry_at = 0.0
        self.down = False

    def _redis(self) -> Any:
        """The client, made on the running loop (a redis.asyncio client belongs to the loop that made it)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=REDIS_SOCKET_TIMEOUT_S, socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S
            )
            self._client_loop = loop
        return self._client

    def _keys(self, circuit: str) -> list[str]:
        base = self._prefix + circuit
        return [base + ":outage", base + ":due", base + ":trial"]

    async def _bounded(self, operation: Callable[[Any], Awaitable[T]], *, retry_now: bool = False) -> T | None:
        """One Redis operation within the bound; None when Redis failed, was too slow, or is still resting."""
        import redis

        if self.down and not retry_now and self._clock.now() < self._retry_at:
            return None
        try:
            value = await asyncio.wait_for(operation(self._redis()), REDIS_SOCKET_TIMEOUT_S)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            self._retry_at = self._clock.now() + RETRY_S
            if not self.down:
                self.down = True
                self._log.warning("breaker_storage_fault", route=self._route, error=f"{type(exc).__name__}: {exc}")
            return None
        if self.down:
            self.down = False
            self._log.info("breaker_storage_recovered", route=self._route)
        return value

    # -- writes: queued, made in order by ``run`` ----------------------------------------------------------------

    def mark_open(self, circuit: str, next_trial_s: float) -> None:
        """Record the circuit open, its next trial ``next_trial_s`` from now (and any trial of ours ended)."""
        keys, due_ms = self._keys(circuit), max(1, round(next_trial_s * 1000))

        self._queue(lambda r: r.eval(MARK_OPEN, 3, *keys, due_ms, OUTAGE_KEY_TTL_MS))

    def mark_closed(self, circuit: str) -> None:
        """Record the circuit closed: the outage is over for every process."""
        keys = self._keys(circuit)
        self._queue(lambda r: r.delete(*keys))

    def release_trial(self, circuit: str) -> None:
        """Give up a trial claimed here that ended without an outcome: the next caller anywhere may take it."""
        key = self._keys(circuit)[2]
        self._queue(lambda r: r.delete(key))

    def _queue(self, write: Callable[[Any], Awaitable[object]]) -> None:
        if self.down:
            return  # the resync writes the state as it is once Redis is back
        self._writes.append(write)
        self._wake.set()

    async def _flush(self) -> bool:
        """The queued writes, in order; False when Redis failed (the rest stay queued for the resync)."""
        while self._writes:
            if await self._bounded(self._writes[0]) is None:
                return False
            self._writes.popleft()
        return True

    # -- reads ---------------------------------------------------------------------------------------------------

    async def claim_trial(self, circuit: str, hold_s: float) -> TrialClaim:
        """Whether this process may send the circuit's trial, holding it for ``hold_s``; granted when Redis cannot say
        (the breaker then decides alone, as it does without Redis)."""
        keys, hold_ms = self._keys(circuit), max(1, round(hold_s * 1000))
        answer = await self._bounded(lambda r: r.eval(CLAIM_TRIAL, 3, *keys, self._token, hold_ms))
        if answer is None or int(answer) == 0:
            return GRANTED
        if int(answer) < 0:
            return TrialClaim(granted=False, closed=True)
        return TrialClaim(granted=False, wait_s=int(answer) / 1000.0)

    async def read(self, circuits: list[str]) -> dict[str, SharedView] | None:
        """Every circuit named, in one round trip; None when Redis cannot say."""

        async def fetch(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.time()
            for circuit in circuits:
                outage, due, trial = self._keys(circuit)
                pipe.get(outage)
                pipe.pttl(due)
                pipe.pttl(trial)
            return list(await pipe.execute())

        answer = await self._bounded(fetch, retry_now=True)
        if answer is None:
            return None
        seconds, micros = answer[0]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        views: dict[str, SharedView] = {}
        for i, circuit in enumerate(circuits):
            started, due_ms, trial_ms = answer[1 + 3 * i : 4 + 3 * i]
            if started is None:
                views[circuit] = CLOSED_VIEW
                continue
            wait_ms = max(0, int(due_ms), int(trial_ms))  # PTTL: -2 when absent
            views[circuit] = SharedView(True, max(0, now_ms - int(started)) / 1000.0, wait_ms / 1000.0)
        return views

    async def run(
        self,
        circuits: Callable[[], Mapping[str, int]],
        apply: Callable[[dict[str, SharedView], Mapping[str, int]], None],
        resync: Callable[[], None],
    ) -> None:
        """The background task: write what changed here, read back what changed elsewhere, every ``REFRESH_S``.

        ``circuits()`` names the circuits to read with their local version; ``apply(views, versions)`` takes the
        answer (the layer ignores a circuit whose version moved meanwhile); ``resync()`` is called once Redis answers
        again after failing, to queue the local state of every circuit that is not closed."""
        self._wake = asyncio.Event()  # on this loop
        while True:
            if self.down and self._clock.now() < self._retry_at:
                await self._clock.sleep(self._retry_at - self._clock.now())
                continue
            was_down = self.down
            versions = dict(circuits())
            views = await self.read(list(versions))
            if views is None:
                continue
            if was_down:
                self._writes.clear()  # dropped while down anyway: the local state now is what counts
                resync()
            if self._writes:
                await self._flush()
                continue  # read again, after our own writes
            apply(views, versions)
            self._wake.clear()
            await self._clock.wait(self._wake, REFRESH_S)

    async def aclose(self) -> None:
        """Makes the writes still queued (a process that opened a breaker and exits tells the others), then closes."""
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._flush()
            await self._client.aclose()
        self._client = None
