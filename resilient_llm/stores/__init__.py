"""Cache stores behind one small protocol; every store keeps bytes under string keys."""

from __future__ import annotations

from typing import Protocol

REDIS_SOCKET_TIMEOUT_S = 0.25  # every Redis client here: a slow or dead server costs at most this per operation


class BadEntry(ValueError):
    """One stored entry is unusable (not bytes, a pickle): the store itself is fine, the entry is dropped."""


class CacheStore(Protocol):
    """Bytes by key. Methods may raise anything: the cache layer turns store faults into misses."""

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...

    async def set(self, key: str, value: bytes, ttl: float | None) -> None: ...

    async def close(self) -> None: ...
