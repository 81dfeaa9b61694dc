"""Cache stores behind one small protocol; every store keeps bytes under string keys."""

from __future__ import annotations

from typing import Protocol


class CacheStore(Protocol):
    """Bytes by key. Methods may raise anything: the cache layer turns store faults into misses."""

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None) -> None: ...

    async def close(self) -> None: ...
