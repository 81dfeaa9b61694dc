"""The bottom of the stack: one POST to ``{base}/chat/completions`` over a shared httpx pool. The only httpx import."""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import httpx

from resilient_llm.errors import ConnectionFailed, ProviderError, ProviderTimeout
from resilient_llm.protocol import parse_response, request_body
from resilient_llm.types import DEFAULT_TIMEOUT_S, ChatRequest, ChatResult
from resilient_llm.validation import BOOL, HTTP_URL, SECONDS, Check, Secret, Validated, header_text, redact_url, setting

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
API_KEY: Check[Secret] = Check(
    "a non-empty key of printable ASCII without spaces",
    Secret,
    lambda key: (
        isinstance(key, Secret)
        and key.reveal().isascii()
        and key.reveal().isprintable()
        and bool(key.reveal())
        and " " not in key.reveal()
    ),
)

BASE_URL: Check[str] = Check(
    "an http(s) URL without user:password (httpx would send them as Basic auth instead of the key)",
    HTTP_URL.parse,
    lambda url: HTTP_URL.valid(url) and "@" not in urllib.parse.urlsplit(url).netloc,
)


@dataclass(frozen=True)
class HTTPConfig(Validated):
    """Where requests go and how they are sent. ``api_key`` may be given as a plain string; it is kept as a Secret."""

    api_key: Secret = setting(Secret(""), API_KEY)
    base_url: str = setting(OPENROUTER_BASE_URL, BASE_URL)
    timeout: float = setting(DEFAULT_TIMEOUT_S, SECONDS)  # per call, when the call does not say
    connect_timeout: float = setting(10.0, SECONDS)
    ignore_proxy: bool = setting(False, BOOL)
    http_referer: str | None = setting(None, header_text("a URL"), optional=True)
    app_title: str | None = setting(None, header_text("a title"), optional=True)

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", Secret(self.api_key))
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        super().__post_init__()

    @property
    def targets_openrouter(self) -> bool:
        return urllib.parse.urlsplit(self.base_url).hostname == "openrouter.ai"

    def proxy(self) -> str | None:
        """The proxy that requests to the base URL go through, without credentials; None when direct."""
        if self.ignore_proxy:
            return None
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
            return None
        proxy = urllib.request.getproxies().get(parts.scheme) or urllib.request.getproxies().get("all")
        return redact_url(proxy) if proxy else None


_TIMEOUT_KINDS: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "connect_timeout",
    httpx.ReadTimeout: "read_timeout",
    httpx.WriteTimeout: "write_timeout",
    httpx.PoolTimeout: "pool_timeout",
}


class HTTPHandler:
    """Sends one attempt; converts every httpx failure into our ProviderError tree."""

    def __init__(
        self, config: HTTPConfig, max_connections: int, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._config = config
        self._url = config.base_url + "/chat/completions"
        self._headers = _headers(config)
        self._client = httpx.AsyncClient(
            transport=transport,
            trust_env=not config.ignore_proxy,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30.0,
            ),
            follow_redirects=False,
        )

    async def handle(self, request: ChatRequest) -> ChatResult:
        timeout = httpx.Timeout(request.timeout, connect=min(self._config.connect_timeout, request.timeout))
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
            response = await self._client.get(self._config.base_url + path, headers=self._headers, timeout=10.0)
        except httpx.HTTPError as exc:
            raise _convert(exc) from exc
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    async def aclose(self) -> None:
        await self._client.aclose()


def _headers(config: HTTPConfig) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {config.api_key.reveal()}", "Content-Type": "application/json"}
    if config.http_referer:
        headers["HTTP-Referer"] = config.http_referer
    if config.app_title:
        headers["X-OpenRouter-Title"] = config.app_title
        headers["X-Title"] = config.app_title  # the older spelling, still read by OpenRouter
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
