"""The embedded default store: diskcache in a directory, JSON bytes only, safe to share between processes.

SQLite blocks (a write takes ~0.3 ms, a database locked by another process up to the busy timeout), so the async
methods run it on a worker thread, never on the engine's loop; ``get_now`` is the synchronous read for a caller's
own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import diskcache

from resilient_llm.stores import BadEntry

# SQLite busy timeout: a store locked by another process for longer is skipped (a miss), never waited on.
BUSY_TIMEOUT_S = 0.1


class _BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """Refuses to unpickle anything, so a tampered cache directory cannot run code in the trainer."""

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise BadEntry("refusing a pickled cache value (only JSON bytes are stored)")
        return super().fetch(mode, filename, value, read)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise ValueError("refusing a pickled cache key")
        return super().get(key, raw)


def _checked(value: Any) -> bytes | None:
    if value is not None and not isinstance(value, bytes):
        raise BadEntry(f"cache value of type {type(value).__name__}, expected bytes")
    return value


class DiskStore:
    """diskcache with a size limit (least-recently-stored evicted first) and optional TTL.

    Opening is lazy and redone after any failure, so a directory that was read-only, full or corrupted serves again
    once it is usable (the cache layer decides how often to try).
    """

    name = "disk"

    def __init__(self, directory: str, size_limit: int) -> None:
        self.directory = directory
        self._size_limit = size_limit
        self._cache: diskcache.Cache | None = None
        self._handle = threading.Lock()  # worker threads open and drop the one handle (it is thread-safe itself)

    def _open(self) -> diskcache.Cache:
        with self._handle:
            if self._cache is None:
                self._cache = diskcache.Cache(
                    self.directory,
                    timeout=BUSY_TIMEOUT_S,
                    disk=_BytesOnlyDisk,
                    size_limit=self._size_limit,
                    eviction_policy="least-recently-stored",
                )
            return self._cache

    def _failed(self) -> None:
        # Drop the handle: a corrupted, replaced or vanished database is opened afresh next time.
        with self._handle:
            cache, self._cache = self._cache, None
        if cache is not None:
            with contextlib.suppress(Exception):
                cache.close()

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: str) -> bytes | None:
        try:
            value = self._open().get(key, default=None, retry=False)
        except BadEntry:
            raise
        except Exception:
            self._failed()
            raise
        return _checked(value)

    def get_now(self, key: str) -> bytes | None:
        """A read in the calling thread, for a hit without the hop to the engine's loop (diskcache gives each thread
        its own SQLite connection; readers never wait for a writer in its WAL mode). Raises LookupError while the
        store is not open, and whatever the read raises: the engine's own path then reads, and handles faults."""
        cache = self._cache
        if cache is None:
            raise LookupError("the store is opened by the engine's first read")
        return _checked(cache.get(key, default=None, retry=False))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> None:
        try:
            self._open().delete(key, retry=False)
        except Exception:
            self._failed()
            raise

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await asyncio.to_thread(self._set, key, value, ttl)

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        try:
            self._open().set(key, value, expire=ttl, retry=False)
        except Exception:
            self._failed()
            raise

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._handle:
            cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()
