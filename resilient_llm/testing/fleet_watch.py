"""Watching a fleet from outside: the fault server's counters and the shared limit's Redis keys, sampled on a thread.

The shared limit's keys are read the way its scripts read them (``stores/shared_limit.py``): a permit is a member of
the endpoint's ``holders`` sorted set named ``<process>:<model hash>:<n>`` whose score, its lease's expiry, is still
ahead of Redis's clock. Grouping members by ``<process>:<model hash>`` tells which process holds how many permits
(for a fleet calling one model, one group per process), without asking the processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis


class Server(Protocol):
    """A fault server, in this process (``FaultServer``) or in a child (``RemoteFaultServer``)."""

    def stats(self) -> dict[str, Any]: ...


@dataclass
class Sample:
    """One look at the server and at Redis, ``t`` seconds after the watch started."""

    t: float
    server: dict[str, Any]
    holders: dict[str, int] | None  # live permits per process; None when Redis did not answer
    limit: float | None  # the shared limit's value; None while unset or Redis is away
    newest: dict[str, int] = field(default_factory=dict)  # per process, its permits' latest expiry (Redis ms)


def read_limit_keys(client: redis.Redis) -> tuple[dict[str, int], dict[str, int], float | None]:
    """Live permits per process, their latest expiry per process, and the shared limit (one endpoint)."""
    now_s, now_us = client.time()
    now_ms = now_s * 1000 + now_us // 1000
    holders: dict[str, int] = {}
    newest: dict[str, int] = {}
    limit = None
    for key in client.scan_iter(match="resilient_llm:limit:*:holders"):
        members: list[tuple[bytes, float]] = client.zrangebyscore(  # type: ignore[assignment]
            key, now_ms, "+inf", withscores=True
        )
        for member, expiry in members:
            process, _, _ = member.decode().rpartition(":")
            holders[process] = holders.get(process, 0) + 1
            newest[process] = max(newest.get(process, -1), int(expiry))  # moves with every new or renewed permit
        for limit_key in client.scan_iter(match=key.decode().removesuffix("holders") + "m:*:limit"):
            raw = client.hget(limit_key, "value")
            if raw is not None:
                limit = max(float(raw), limit or 0.0)
    return holders, newest, limit


class Watch:
    """Samples ``server.stats()`` and the shared limit every ``every_s`` until stopped; ``mark`` notes an event."""

    def __init__(self, server: Server, redis_url: str | None, every_s: float = 0.1) -> None:
        self._server = server
        self._redis = (
            None
            if redis_url is None
            else redis.Redis.from_url(redis_url, socket_timeout=0.2, socket_connect_timeout=0.2)
        )
        self._every_s = every_s
        self.samples: list[Sample] = []
        self.marks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-watch", daemon=True)
        self.started = 0.0

    def start(self, at: float | None = None) -> Watch:
        """Start sampling; times count from ``at`` (a ``time.time()``, e.g. the fleet's ``go``) or from now."""
        self.started = time.time() if at is None else at
        self._thread.start()
        return self

    def now(self) -> float:
        return time.time() - self.started

    def mark(self, name: str) -> float:
        self.marks[name] = self.now()
        return self.marks[name]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                server = self._server.stats()
            except OSError:  # the server is gone (the run is failing): the caller finds out on its own
                self._stop.wait(self._every_s)
                continue
            holders: dict[str, int] | None = None
            newest: dict[str, int] = {}
            limit = None
            if self._redis is not None:
                try:
                    holders, newest, limit = read_limit_keys(self._redis)
                except (redis.RedisError, OSError):
                    holders = None
            self.samples.append(Sample(self.now(), server, holders, limit, newest))
            self._stop.wait(self._every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._redis is not None:
            self._redis.close()

    def wait_for(self, check: Callable[[Sample], bool], within: float) -> float | None:
        """Seconds from now until a new sample passes ``check``; None if none did within ``within``."""
        started = self.now()
        seen = len(self.samples)
        while self.now() - started < within:
            for sample in self.samples[seen:]:
                if check(sample):
                    return sample.t - started
            seen = len(self.samples)
            time.sleep(self._every_s / 2)
        return None


def silent_process(samples: list[Sample], since: float, after: float) -> str | None:
    """The process that neither took nor renewed a permit in the ``after`` seconds following the first look at Redis
    made at least 0.2 s after ``since`` (a process killed at ``since``; the others renew theirs every second), while
    holding some then; None if there is not exactly one."""
    base = next((s for s in samples if s.t >= since + 0.2 and s.holders), None)
    if base is None or base.holders is None:
        return None
    window = [s for s in samples if base.t < s.t <= base.t + after]
    if not window or window[-1].t < base.t + after - 1.0:
        return None
    quiet = [
        process
        for process in base.holders
        if max(s.newest.get(process, -1) for s in window) <= base.newest.get(process, -1)
    ]
    return quiet[0] if len(quiet) == 1 else None


def outage_hits(samples: list[Sample], since: float) -> list[float]:
    """When each request into a manual outage was counted (``requests_while_down``), in seconds from ``since``, to
    the sampling interval."""
    hits: list[float] = []
    seen = 0
    for sample in samples:
        count = sample.server["requests_while_down"]
        hits += [round(sample.t - since, 2)] * (count - seen)
        seen = count
    return hits


def periods(hits: list[float], gap: float) -> list[list[float]]:
    """``hits`` grouped: one group per run of hits less than ``gap`` apart (the trials of one probe period)."""
    groups: list[list[float]] = []
    for t in sorted(hits):
        if groups and t - groups[-1][-1] < gap:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups
