"""A misbehaving OpenAI-compatible server on 127.0.0.1, for the tests and the benchmark.

It answers ``POST .../chat/completions`` (``/v1/...`` and ``/api/v1/...``) deterministically from the request body,
after a configurable latency, and injects faults: scripted ones first (``script("reset", "http_429")``), then, per
request, one drawn from a named profile. The draw is seeded by the seed, the body and how often that body was seen,
so every client facing the same workload meets the same faults. It counts requests, connections, peak concurrency,
faults by kind and Retry-After violations (a request repeated sooner than the Retry-After it was given).

The ``capacity`` profile admits at most ``capacity`` requests at once (100 unless told; ``set_capacity`` or
``POST /_capacity`` changes it while running) and answers the rest at once with 429 and Retry-After, as a
concurrency-limited endpoint does. ``clean-500ms`` and ``capacity`` answer in 500 +- 100 ms, a short judge call.

Run it alone with ``python -m resilient_llm.testing.fault_server --profile flaky``; ``GET /_stats`` reports its
counters.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

# Every kind the server can produce; "ok" is a clean answer.
FAULT_KINDS = (
    "ok",
    "reset",  # TCP RST after reading the request
    "drop",  # connection closed without a response
    "protocol_error",  # garbage instead of an HTTP status line
    "truncated_body",  # Content-Length promised, half sent, connection closed
    "hang",  # no answer for ``hang_s`` seconds
    "http_429",  # rate limited, with Retry-After
    "http_408",
    "http_500",  # HTML error page
    "http_502",  # HTML error page
    "http_503",  # HTML error page
    "http_400",
    "http_401",
    "http_402",  # out of credits: final
    "budget_402",  # in-flight budget exhausted, with Retry-After: temporary
    "http_403",
    "http_404",
    "http_422",
    "error_in_200",  # {"error": {...}} with status 200
    "bad_json",  # 200 with an HTML body
    "truncated_json",  # 200 with half a JSON document
    "empty_choices",
    "null_content",
    "finish_error",  # finish_reason "error"
)


@dataclasses.dataclass(frozen=True)
class Profile:
    """Fault weights (the rest of the probability is "ok"), and an optional outage window after the first request."""

    faults: Mapping[str, float] = dataclasses.field(default_factory=dict)
    outage: tuple[float, float] | None = None  # (starts after s, lasts s): every request gets a 503
    capacity: int | None = None  # requests admitted at once; the rest get an immediate 429 with Retry-After
    latency: tuple[float, float] | None = None  # each answer's latency drawn from [low, high] s, unless latency_s


PROFILES: dict[str, Profile] = {
    "clean": Profile(),
    "flaky": Profile(
        {
            "reset": 0.035,
            "drop": 0.035,
            "http_429": 0.04,
            "http_500": 0.03,
            "http_502": 0.03,
            "http_503": 0.03,
            "error_in_200": 0.025,
            "truncated_json": 0.02,
            "empty_choices": 0.015,
            "null_content": 0.015,
            "protocol_error": 0.01,
            "truncated_body": 0.01,
            "hang": 0.01,
        }
    ),
    "ratelimit": Profile({"http_429": 0.6}),
    "outage": Profile(outage=(1.0, 4.0)),
    "hangs": Profile({"hang": 0.03}),  # otherwise clean: for hedging
    "clean-500ms": Profile(latency=(0.4, 0.6)),  # a short judge call's latency
    "capacity": Profile(capacity=100, latency=(0.4, 0.6)),  # at most 100 in flight, 429 beyond
}

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden"}
_REASONS |= {404: "Not Found", 408: "Request Timeout", 422: "Unprocessable Entity", 429: "Too Many Requests"}
_REASONS |= {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclasses.dataclass
class _Counters:
    requests: int = 0
    connections: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    admitted: int = 0  # capacity profile: requests holding a slot
    peak_admitted: int = 0
    capacity_refusals: int = 0
    retry_after_violations: int = 0
    faults: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


class FaultServer:
    """The server, run on a background thread of this process (``start``/``stop``, or as a context manager)."""

    def __init__(
        self,
        profile: str = "clean",
        *,
        seed: int = 0,
        latency_s: float | None = None,  # None: the profile's latency (none for most)
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        api_key: str | None = None,
        port: int = 0,
        capacity: int | None = None,  # overrides the capacity profile's 100
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
        self.profile_name = profile
        self._profile = PROFILES[profile]
        self._seed = seed
        self.latency_s = latency_s
        self.capacity = _capacity(capacity) if capacity is not None else self._profile.capacity
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self._api_key = api_key
        self._port = port
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._script: collections.deque[str] = collections.deque()
        self._seen: collections.Counter[str] = collections.Counter()
        self._not_before: dict[str, float] = {}
        self._first_request_at: float | None = None
        self.down = False  # when True every request is answered 503 (a manual outage)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control, from any thread ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The OpenRouter-style base URL to point a client at."""
        return f"http://127.0.0.1:{self._port}/api/v1"

    def script(self, *kinds: str) -> None:
        """The next requests get these faults, in order, before the profile is drawn from again."""
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}: expected some of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._script.extend(kinds)

    def set_capacity(self, capacity: int) -> None:
        """From now on admit at most ``capacity`` requests at once (requests already admitted finish)."""
        with self._lock:
            self.capacity = _capacity(capacity)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = self._counters
            return {
                "requests": c.requests,
                "connections": c.connections,
                "in_flight": c.in_flight,
                "peak_in_flight": c.peak_in_flight,
                "capacity": self.capacity,
                "admitted": c.admitted,
                "peak_admitted": c.peak_admitted,
                "capacity_refusals": c.capacity_refusals,
                "retry_after_violations": c.retry_after_violations,
                "faults": dict(c.faults),
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._counters = _Counters(in_flight=self._counters.in_flight, admitted=self._counters.admitted)
            self._seen.clear()
            self._not_before.clear()
            self._first_request_at = None

    def start(self) -> FaultServer:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", self._port, limit=1 << 20, backlog=1024)
            )
            self._port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"fault-server-{self.profile_name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await asyncio.sleep(0)
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = self._server = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- serving -----------------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._counters.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target = [*request_line.split(" "), "", ""][:2]
                headers = {}
                for line in header_lines:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if not await self._route(method, target.split("?")[0], headers, body, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _route(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must end."""
        if method == "GET" and path == "/_stats":
            return _respond(writer, 200, self.stats())
        if method == "POST" and path == "/_script":
            self.script(*json.loads(body))
            return _respond(writer, 200, {"scripted": True})
        if method == "POST" and path == "/_reset":
            self.reset_stats()
            return _respond(writer, 200, {"reset": True})
        if method == "POST" and path == "/_capacity":
            try:
                self.set_capacity(json.loads(body)["capacity"])
            except (ValueError, KeyError, TypeError) as exc:
                return _respond(writer, 400, _error(400, f'expected {{"capacity": n}}: {exc}'))
            return _respond(writer, 200, {"capacity": self.capacity})
        if method == "GET" and path.endswith("/models"):
            return _respond(writer, 200, {"data": [{"id": m} for m in KNOWN_MODELS]})
        if method == "GET" and path.endswith("/key"):  # OpenRouter's "who am I" endpoint
            if not self._authorized(headers):
                return _respond(writer, 401, {"error": {"code": 401, "message": "User not found."}})
            return _respond(writer, 200, {"data": {"label": "local test key", "limit": None, "usage": 0}})
        if method != "POST" or not path.endswith("/chat/completions"):
            return _respond(writer, 404, {"error": {"code": 404, "message": f"no route {method} {path}"}})
        if not self._authorized(headers):
            return _respond(writer, 401, {"error": {"code": 401, "message": "No auth credentials found"}})
        with self._lock:
            c = self._counters
            c.requests += 1
            c.in_flight += 1
            c.peak_in_flight = max(c.peak_in_flight, c.in_flight)
        admitted = False
        try:
            kind, delay, admitted = self._choose(body)
            if delay:
                await asyncio.sleep(delay)
            return await self._act(kind, body, writer)
        finally:
            with self._lock:
                self._counters.in_flight -= 1
                self._counters.admitted -= admitted

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        auth = headers.get("authorization", "")
        return auth.startswith("Bearer ") and (self._api_key is None or auth == f"Bearer {self._api_key}")

    def _choose(self, body: bytes) -> tuple[str, float, bool]:
        """The fault for this request, the seconds to wait before acting on it, and whether it holds a slot."""
        digest = hashlib.sha256(body).hexdigest()
        now = time.monotonic()
        with self._lock:
            if self._first_request_at is None:
                self._first_request_at = now
            not_before = self._not_before.pop(digest, None)
            if not_before is not None and now < not_before - 0.005:
                self._counters.retry_after_violations += 1
            seen = self._seen[digest]
            self._seen[digest] += 1
            admitted = False
            if self._script:
                kind = self._script.popleft()
            elif self.down or self._in_outage(now - self._first_request_at):
                kind = "http_503"
            elif self.capacity is not None and self._counters.admitted >= self.capacity:
                kind = "http_429"
                self._counters.capacity_refusals += 1
            else:
                kind = self._draw(f"{self._seed}:{digest}:{seen}")
                admitted = self.capacity is not None
            c = self._counters
            c.admitted += admitted
            c.peak_admitted = max(c.peak_admitted, c.admitted)
            delay = self._latency(f"{self._seed}:{digest}:{seen}")
            if not admitted and self.capacity is not None and kind == "http_429":
                delay = 0.0  # a full endpoint refuses at once
            if kind in ("http_429", "budget_402"):
                self._not_before[digest] = now + delay + self.retry_after_s
            self._counters.faults[kind] += 1
        return kind, delay, admitted

    def _latency(self, seed: str) -> float:
        if self.latency_s is not None:
            return self.latency_s
        if self._profile.latency is None:
            return 0.0
        low, high = self._profile.latency
        return random.Random(seed + ":latency").uniform(low, high)

    def _in_outage(self, since_first: float) -> bool:
        window = self._profile.outage
        return window is not None and window[0] <= since_first < window[0] + window[1]

    def _draw(self, seed: str) -> str:
        point = random.Random(seed).random()
        for kind, weight in self._profile.faults.items():
            point -= weight
            if point < 0:
                return kind
        return "ok"

    async def _act(self, kind: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if kind == "hang":
            await asyncio.sleep(self.hang_s)
            kind = "ok"
        if kind == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if kind == "drop":
            writer.close()
            return False
        if kind == "protocol_error":
            writer.write(b"SPLAT \x00\x01 not http\r\n\r\n")
            writer.close()
            return False
        retry_after = {"Retry-After": f"{self.retry_after_s:g}"}
        answer = _answer(body)
        match kind:
            case "ok":
                return _respond(writer, 200, answer)
            case "truncated_body":
                raw = json.dumps(answer).encode()
                writer.write(_head(200, "application/json", len(raw)) + raw[: len(raw) // 2])
                writer.close()
                return False
            case "http_429":
                return _respond(writer, 429, _error(429, "Rate limit exceeded"), retry_after)
            case "budget_402":
                error = _error(402, "In-flight budget exhausted", reason="in_flight_budget_exhausted")
                return _respond(writer, 402, error, retry_after)
            case "http_402":
                return _respond(writer, 402, _error(402, "Insufficient credits"))
            case "http_500" | "http_502" | "http_503":
                status = int(kind[5:])
                page = f"<html><body><h1>{status} {_REASONS[status]}</h1></body></html>".encode()
                return _respond_raw(writer, status, "text/html", page)
            case "error_in_200":
                return _respond(writer, 200, _error(502, "Upstream provider returned an error"))
            case "bad_json":
                return _respond_raw(writer, 200, "text/html", b"<html>gateway says hi</html>")
            case "truncated_json":
                raw = json.dumps(answer).encode()
                return _respond_raw(writer, 200, "application/json", raw[: len(raw) // 2])
            case "empty_choices":
                return _respond(writer, 200, {**answer, "choices": []})
            case "null_content":
                answer["choices"][0]["message"]["content"] = None
                return _respond(writer, 200, answer)
            case "finish_error":
                answer["choices"][0]["finish_reason"] = "error"
                return _respond(writer, 200, answer)
            case _:  # the remaining http_4xx caller mistakes
                status = int(kind[5:])
                return _respond(writer, status, _error(status, _REASONS.get(status, "error")))


def _capacity(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"capacity={value!r}: expected an integer >= 1")
    return value


KNOWN_MODELS = ("openai/gpt-4o-mini", "openai/gpt-4.1-mini", "anthropic/claude-3.5-haiku")


def _answer(body: bytes) -> dict[str, Any]:
    """The deterministic completion for a request body: a rubric-style score derived from its hash."""
    digest = hashlib.sha256(body).hexdigest()
    try:
        request = json.loads(body)
        model = str(request.get("model", "unknown"))
        prompt_chars = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
    except (ValueError, AttributeError, TypeError):
        model, prompt_chars = "unknown", 0
    content = json.dumps({"score": int(digest[:8], 16) % 3, "id": digest[:12]})
    if b"positive_rubrics" in body:  # a rubric-generation prompt gets the shape it asks for
        content = json.dumps(
            {"positive_rubrics": [f"covers {digest[:6]}"], "negative_rubrics": [f"omits {digest[6:12]}"]}
        )
    prompt_tokens, completion_tokens = max(1, prompt_chars // 4), 12
    return {
        "id": f"gen-{digest[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost": round((prompt_tokens * 0.15 + completion_tokens * 0.6) / 1e6, 12),
        },
    }


def _error(code: int, message: str, *, reason: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if reason is not None:
        error["metadata"] = {"reason": reason}
    return {"error": error}


def _head(status: int, content_type: str, length: int, extra: Mapping[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Type: {content_type}"]
    lines += [f"Content-Length: {length}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _respond_raw(
    writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes, extra: Mapping[str, str] | None = None
) -> bool:
    writer.write(_head(status, content_type, len(body), extra) + body)
    return True


def _respond(writer: asyncio.StreamWriter, status: int, payload: Any, extra: Mapping[str, str] | None = None) -> bool:
    return _respond_raw(writer, status, "application/json", json.dumps(payload).encode(), extra)


class RemoteFaultServer:
    """A FaultServer in a child process, so its work does not share our GIL; same control surface over HTTP."""

    def __init__(
        self,
        profile: str = "clean",
        *,
        seed: int = 0,
        latency_s: float | None = None,
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        capacity: int | None = None,
    ) -> None:
        argv = [sys.executable, "-m", "resilient_llm.testing.fault_server", "--profile", profile, "--seed", str(seed)]
        argv += ["--retry-after", str(retry_after_s), "--hang", str(hang_s)]
        argv += [] if latency_s is None else ["--latency", str(latency_s)]
        argv += [] if capacity is None else ["--capacity", str(capacity)]
        self._process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) != 2 or line[0] != "READY":
            self._process.kill()
            raise RuntimeError(f"fault server did not start: {line}")
        self.url = line[1]
        self._root = self.url.removesuffix("/api/v1")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy

    def _call(self, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        with self._opener.open(urllib.request.Request(self._root + path, data=data), timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return dict(self._call("/_stats"))

    def script(self, *kinds: str) -> None:
        self._call("/_script", list(kinds))

    def reset_stats(self) -> None:
        self._call("/_reset", {})

    def set_capacity(self, capacity: int) -> None:
        self._call("/_capacity", {"capacity": capacity})

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> RemoteFaultServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", default="clean", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--latency", type=float, default=None, help="seconds before each answer (default: the profile's)"
    )
    parser.add_argument("--capacity", type=int, default=None, help="requests admitted at once (capacity profile)")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After sent with 429 and 402")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds a 'hang' fault holds the request")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = FaultServer(
        args.profile,
        seed=args.seed,
        latency_s=args.latency,
        retry_after_s=args.retry_after,
        hang_s=args.hang,
        port=args.port,
        capacity=args.capacity,
    ).start()
    print("READY", server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
