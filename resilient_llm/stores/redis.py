"""A Redis store, for many machines training together: same keys, TTL, short socket timeouts."""

from __future__ import annotations

from typing import Any

from resilient_llm.errors import ConfigError
from resilient_llm.stores import REDIS_SOCKET_TIMEOUT_S


class RedisStore:
    """redis.asyncio on the engine loop; a slow or dead server costs at most a short timeout per call."""

    name = "redis"

    def __init__(self, url: str) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:
            raise ConfigError(
                "RESILIENT_LLM_CACHE_REDIS_URL is set but redis is not installed: pip install 'resilient-llm[redis]'"
            ) from exc
        self._client: Any = aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
            retry_on_timeout=False,
            health_check_interval=0,
        )

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(key)
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await self._client.set(key, value, px=int(ttl * 1000) if ttl else None)

    async def delete(self, key: str) -> None:
        await self._client.delete(key)

    async def close(self) -> None:
        await self._client.aclose()
