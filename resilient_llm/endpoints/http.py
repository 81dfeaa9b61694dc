"""The bottom of the stack: one POST to ``{base}/chat/completions`` over a shared httpx pool. The only httpx import."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from resilient_llm.endpoints.body import ACCEPT_ENCODING, MAX_BODY_BYTES, read_body
from resilient_llm.errors import ConfigError, ConnectionFailed, ProviderError, ProviderTimeout
from resilient_llm.protocol import parse_response, request_body
from resilient_llm.runtime import dumps
from resilient_llm.types import DEFAULT_TIMEOUT_S, ChatRequest, ChatResult
from resilient_llm.validation import (
    BOOL,
    HTTP_URL,
    SECONDS,
    Check,
    Secret,
    Validated,
    choice,
    header_text,
    redact_url,
    setting,
)

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
    transport: str = setting("httpx", choice(("httpx", "aiohttp"), joiner=" or "))  # aiohttp: the fast extra's

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", Secret(self.api_key))
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        super().__post_init__()
        if self.transport == "aiohttp" and importlib.util.find_spec("aiohttp") is None:
            raise ConfigError(
                "transport='aiohttp' but aiohttp is not installed: pip install 'resilient-llm[fast]', or use httpx",
                field="transport",
            )

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


WIND_DOWN_S = 5.0  # how long a stopped exchange may take to finish its clean-up (normally a few loop steps)

SHARD_CONNECTIONS = 8  # connections per httpx client at most (see HTTPHandler._shard_sizes)

_TIMEOUT_KINDS: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "connect_timeout",
    httpx.ReadTimeout: "read_timeout",
    httpx.WriteTimeout: "write_timeout",
    httpx.PoolTimeout: "pool_timeout",
}


class HTTPHandler:
    """Sends one attempt; converts every httpx failure into our ProviderError tree."""

    def __init__(
        self,
        config: HTTPConfig,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._config = config
        self._max_connections = max_connections
        self._max_body = max_body_bytes
        self._url = config.base_url + "/chat/completions"
        self._headers = _headers(config)
        self._transport = transport
        self._ssl = httpx.create_ssl_context(trust_env=not config.ignore_proxy)  # one for every pool: built once
        self._sizes = {self._new_client(size): size for size in self._shard_sizes()}  # connections, per client
        self._clients = list(self._sizes)
        self._users: dict[httpx.AsyncClient, int] = dict.fromkeys(self._clients, 0)  # exchanges running, per client
        self._closing: set[asyncio.Task[None]] = set()
        self.pool_renewals = 0

    def _shard_sizes(self) -> list[int]:
        """Pool sizes adding up to ``max_connections``: httpcore rescans its whole pool, polling each idle socket,
        whenever a request starts or ends, so its CPU per request grows with the pool; pools of at most
        ``SHARD_CONNECTIONS`` cost a fraction of one big one (``benchmarks/results/lean.md``). aiohttp's pool does not
        need it, and a transport given by the caller is used as it is."""
        size = self._max_connections
        if self._transport is not None or self._config.transport != "httpx":
            return [size]
        shards = -(-size // SHARD_CONNECTIONS)
        return [len(range(i, size, shards)) for i in range(shards)]

    def _new_client(self, size: int) -> httpx.AsyncClient:
        transport = self._transport
        if transport is None and self._config.transport == "aiohttp":
            from resilient_llm.endpoints.aiohttp_transport import AiohttpTransport

            transport = AiohttpTransport(size, self._ssl, keepalive_expiry=30.0)
        return httpx.AsyncClient(
            transport=transport,
            verify=self._ssl,
            trust_env=not self._config.ignore_proxy,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=30.0),
            follow_redirects=False,
        )

    async def handle(self, request: ChatRequest) -> ChatResult:
        # httpcore's pool breaks when asyncio cancels it at some of its awaits (encode/httpcore#1093: a connection
        # assigned to no request holds a pool slot for good, and its "shielded" clean-up can be interrupted too).
        # So the exchange runs in a task of its own that only an anyio cancel scope stops, which httpcore's shields
        # respect; a cancelled caller gets its CancelledError once the exchange has wound down (a few loop steps),
        # so the concurrency slot above covers the exchange to its end and the pool never has a queue.
        stop = anyio.CancelScope()
        exchange = asyncio.ensure_future(self._exchange(request, stop))
        try:
            result = await asyncio.shield(exchange)
        except asyncio.CancelledError:
            stop.cancel()
            await _wind_down(exchange)
            raise
        assert result is not None  # None only once stopped, and only a cancelled caller stops it
        return result

    async def _exchange(self, request: ChatRequest, stop: anyio.CancelScope) -> ChatResult | None:
        connect = min(self._config.connect_timeout, request.timeout)
        # No request ever waits for a connection (the limit above equals the pool size), so a pool timeout means
        # the pool leaked a connection: it is replaced (see _renew).
        timeout = httpx.Timeout(request.timeout, connect=connect, pool=connect)
        # The pool with the most free connections (the first while calls are few, so connections are reused).
        client = max(self._clients, key=lambda c: self._sizes[c] - self._users[c])
        self._users[client] += 1
        try:
            with stop:
                try:
                    # httpx times each read; the whole exchange (a server trickling bytes) is bounded here.
                    with anyio.fail_after(request.timeout):
                        body = dumps(request_body(request))
                        async with client.stream(
                            "POST", self._url, content=body, headers=self._headers, timeout=timeout
                        ) as response:
                            status, headers = response.status_code, response.headers
                            content = await read_body(response.aiter_raw(), status, headers, self._max_body)
                except TimeoutError as exc:
                    raise ProviderTimeout(
                        f"no complete answer within {request.timeout:g} s", kind="total_timeout"
                    ) from exc
                except httpx.PoolTimeout as exc:
                    self._renew(client)
                    raise _convert(exc) from exc
                except httpx.HTTPError as exc:
                    raise _convert(exc) from exc
                return parse_response(status, headers, content, request)
            return None  # stopped: the caller was cancelled and waits for no result
        finally:
            self._release(client)

    def _renew(self, client: httpx.AsyncClient) -> None:
        """Self-healing: a leaked pool is replaced by a fresh client; the old one closes when its last exchange ends."""
        if client not in self._clients or self._transport is not None:  # already renewed, or not ours to renew
            return
        size = self._sizes.pop(client)
        fresh = self._new_client(size)
        self._clients[self._clients.index(client)] = fresh
        self._sizes[fresh], self._users[fresh] = size, 0
        self.pool_renewals += 1

    def _release(self, client: httpx.AsyncClient) -> None:
        self._users[client] -= 1
        if client not in self._clients and self._users[client] == 0:
            del self._users[client]
            closing = asyncio.ensure_future(client.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def get_json(self, path: str) -> tuple[int, Any]:
        """GET ``{base}{path}`` with our headers (for ``doctor``): the status and the JSON body (None if not JSON)."""
        try:
            response = await self._clients[0].get(self._config.base_url + path, headers=self._headers, timeout=10.0)
        except httpx.HTTPError as exc:
            raise _convert(exc) from exc
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    async def aclose(self) -> None:
        for client in list(self._users):
            await client.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)


async def _wind_down(exchange: asyncio.Future[Any]) -> None:
    """Wait (a bounded time, whatever else is cancelled meanwhile) for a stopped exchange to finish its clean-up."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + WIND_DOWN_S
    while not exchange.done() and loop.time() < give_up:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({exchange}, timeout=give_up - loop.time())
    if not exchange.done():
        exchange.cancel()  # a clean-up stuck this long: the pool's own timeout and _renew are the last resort
    elif not exchange.cancelled():
        exchange.exception()  # retrieved: nobody waits for this attempt's outcome any more


def _headers(config: HTTPConfig) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {config.api_key.reveal()}", "Content-Type": "application/json"}
    headers["Accept-Encoding"] = ACCEPT_ENCODING  # only what endpoints/body.py decodes under its size cap
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
