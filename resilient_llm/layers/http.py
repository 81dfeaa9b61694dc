"""The bottom of the stack: one POST to ``{base}/chat/completions`` over a shared httpx pool. The only httpx import."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from resilient_llm.errors import ConnectionFailed, ProviderError, ProviderTimeout
from resilient_llm.protocol import parse_response, request_body
from resilient_llm.settings import Settings
from resilient_llm.types import ChatRequest, ChatResult

_TIMEOUT_KINDS: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "connect_timeout",
    httpx.ReadTimeout: "read_timeout",
    httpx.WriteTimeout: "write_timeout",
    httpx.PoolTimeout: "pool_timeout",
}


class HTTPHandler:
    """Sends one attempt; converts every httpx failure into our ProviderError tree."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._url = settings.base_url + "/chat/completions"
        self._headers = _headers(settings)
        self._client = httpx.AsyncClient(
            transport=transport,
            trust_env=not settings.ignore_proxy,
            limits=httpx.Limits(
                max_connections=settings.max_concurrent,
                max_keepalive_connections=settings.max_concurrent,
                keepalive_expiry=30.0,
            ),
            follow_redirects=False,
        )

    async def handle(self, request: ChatRequest) -> ChatResult:
        timeout = httpx.Timeout(request.timeout, connect=min(self._settings.connect_timeout, request.timeout))
        try:
            # httpx times each read; the whole exchange (a server trickling bytes) is bounded here.
            async with asyncio.timeout(request.timeout):
                response = await self._client.post(
                    self._url, json=request_body(request), headers=self._headers, timeout=timeout
                )
        except TimeoutError as exc:
            raise ProviderTimeout(f"no complete answer within {request.timeout:g} s", kind="total_timeout") from exc
        except httpx.HTTPError as exc:
            raise _convert(exc) from exc
        return parse_response(response.status_code, response.headers, response.content, request)

    async def get_json(self, path: str) -> tuple[int, Any]:
        """GET ``{base}{path}`` with our headers (for ``doctor``): the status and the JSON body (None if not JSON)."""
        try:
            response = await self._client.get(self._settings.base_url + path, headers=self._headers, timeout=10.0)
        except httpx.HTTPError as exc:
            raise _convert(exc) from exc
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    async def aclose(self) -> None:
        await self._client.aclose()


def _headers(settings: Settings) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {settings.api_key.reveal()}", "Content-Type": "application/json"}
    if settings.http_referer:
        headers["HTTP-Referer"] = settings.http_referer
    if settings.app_title:
        headers["X-OpenRouter-Title"] = settings.app_title
        headers["X-Title"] = settings.app_title  # the older spelling, still read by OpenRouter
    return headers


def _convert(exc: httpx.HTTPError) -> ProviderError:
    """The one place httpx exceptions become ours; messages never carry headers, so never the key."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(detail, kind=_TIMEOUT_KINDS.get(type(exc), "timeout"))
    if isinstance(exc, httpx.ConnectError):
        return ConnectionFailed(detail, kind="connect_error")
    if isinstance(exc, httpx.RemoteProtocolError):
        return ConnectionFailed(detail, kind="protocol_error")
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return ConnectionFailed(detail, kind="connection_reset")
    if isinstance(exc, httpx.ProxyError):
        return ConnectionFailed(detail, kind="proxy_error")
    return ConnectionFailed(detail, kind=_snake(type(exc).__name__))


def _snake(name: str) -> str:
    out: list[Any] = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
