"""An httpx transport over aiohttp (``RESILIENT_LLM_HTTP_TRANSPORT=aiohttp``, the ``fast`` extra): httpx's API on
aiohttp's connection pool and its C HTTP parser.

Part of the HTTP layer (``endpoints/http.py`` builds it; nothing else uses it). Why: httpcore's pool rescans every
connection, and asks each idle socket whether it is readable, whenever a request starts or ends, so its CPU per call
grows with the pool (``benchmarks/results/profile.md``); aiohttp's pool hands out a kept-alive connection in O(1).
Every aiohttp failure becomes the httpx exception httpcore raises for the same fault, so the errors above (kinds,
retries, breaker verdicts) do not depend on the transport. Proxies are not its business: httpx mounts its own
transports for proxied URLs (``trust_env``), this one only carries direct requests.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from aiohttp import http_exceptions


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Direct HTTP/1.1 requests through one aiohttp session, created on first use on the running loop."""

    def __init__(self, max_connections: int, ssl_context: ssl.SSLContext, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context  # the HTTP layer's, made as httpx makes its own
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            response = await self._open().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except _FAILURES as exc:
            raise convert(exc) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _Body(httpx.AsyncByteStream):
    """The response body as aiohttp receives it (still encoded: ``endpoints/body.py`` decodes under its cap)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _FAILURES as exc:
            raise convert(exc) from exc

    async def aclose(self) -> None:
        # A body read to its end returns the connection to the pool; anything else closes it.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


_FAILURES: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    http_exceptions.HttpProcessingError,
    asyncio.TimeoutError,
    OSError,
)


def convert(exc: BaseException) -> httpx.TransportError:
    """The httpx exception httpcore raises for the same fault (so the HTTP layer's ``_convert`` gives the same kind)."""
    message = str(exc) or type(exc).__name__
    kind: Any
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake: nothing was sent
        kind = httpx.ConnectTimeout if isinstance(exc.os_error, TimeoutError) else httpx.ConnectError
    elif isinstance(exc, getattr(aiohttp, "ConnectionTimeoutError", ())):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, asyncio.TimeoutError):  # aiohttp's ServerTimeoutError / SocketTimeoutError included
        kind = httpx.ReadTimeout
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        kind = httpx.RemoteProtocolError  # closed before a whole response, or not HTTP: what h11 says for these
    elif isinstance(exc, http_exceptions.HttpProcessingError):
        kind = httpx.RemoteProtocolError
    elif isinstance(exc, (aiohttp.ClientOSError, aiohttp.ClientConnectionError, OSError)):
        kind = httpx.ReadError  # reset or broken pipe on an open connection
    else:
        kind = httpx.TransportError
    error: httpx.TransportError = kind(message)
    return error
