"""A misbehaving OpenAI-compatible server on 127.0.0.1, for the tests and the benchmark.

It answers ``POST .../chat/completions`` (``/v1/...`` and ``/api/v1/...``) deterministically from the request body,
after a configurable latency, and injects faults: scripted ones first (``script("reset", "http_429")``), then, per
request, one drawn from a named profile. The draw is seeded by the seed, the request's prompt (its model and messages)
and how often that prompt was seen, so every client asking the same questions meets the same faults, whatever else its
body carries. It counts requests, connections, peak concurrency, faults by kind and Retry-After violations (a request
repeated sooner than the Retry-After it was given).

``capacity`` admits at most ``capacity`` requests at once (``set_capacity`` changes it while running) and answers the
rest with an immediate 429 and Retry-After; ``clean-500ms`` and ``capacity`` answer in 500 +- 100 ms (a judge call).
``throttle`` is a token bucket (50 requests a second, bursts of 50): a request without a token gets an immediate 429;
``throttle-late`` answers it after the usual latency instead (a bucket behind a proxy).

Per model name it also fails the way OpenRouter fails for one model (``testing/catalogue.py``: a reasoning model
truncated by ``max_tokens``, no provider, a spent free quota, retry hints only in the body, moderation, ...); every
other model name meets the profile. ``stats()["per_model"]`` counts requests per model.

Run it alone with ``python -m resilient_llm.testing --profile flaky``; ``GET /_stats`` reports its counters, and
``POST /_down``, ``/_capacity``, ``/_script`` steer it (``RemoteFaultServer`` in ``testing/remote.py`` does so).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

from resilient_llm.testing.catalogue import CATALOGUE, HINTED_KINDS, IMMEDIATE_KINDS, behaviour_kind
from resilient_llm.testing.profiles import (
    FAULT_KINDS,
    KNOWN_MODELS,
    PROFILES,
    Counters,
    Profile,
    TokenBucket,
    check_capacity,
)
from resilient_llm.testing.wire import act, error_body, respond

__all__ = ["FAULT_KINDS", "PROFILES", "RETRY_AFTER_KINDS", "FaultServer", "Profile", "draw_seed", "prompt_key"]

RETRY_AFTER_KINDS = ("http_429", "budget_402", *HINTED_KINDS)  # refusals that carry the server's Retry-After


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
        quota_reset_s: float = 3600.0,  # the free-quota model answers 429 until this long after ``start``
        reasoning_budget: int = 1000,  # the reasoning model truncates when max_tokens is below this
        keepalive_s: float = 2.0,  # the keep-alive model's whitespace before its JSON
        catalogue: Mapping[str, str] | None = None,  # model name -> behaviour; default: catalogue.CATALOGUE
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
        self.profile_name = profile
        self._profile = PROFILES[profile]
        self._seed = seed
        self.latency_s = latency_s
        self.capacity = check_capacity(capacity) if capacity is not None else self._profile.capacity
        self.retry_after_s = retry_after_s
        self._bucket = TokenBucket(*self._profile.rate) if self._profile.rate else None
        self.hang_s = hang_s
        self.quota_reset_s = quota_reset_s
        self.reasoning_budget = reasoning_budget
        self.keepalive_s = keepalive_s
        self.catalogue = dict(CATALOGUE if catalogue is None else catalogue)
        self._quota_resets_at = (time.monotonic(), time.time())  # set again by ``start``
        self._api_key = api_key
        self._port = port
        self._lock = threading.Lock()
        self._counters = Counters()
        self._script: collections.deque[str] = collections.deque()
        self._seen: collections.Counter[str] = collections.Counter()
        # per prompt: when its last refusal goes out, and until when the prompt may not come back
        self._refused: dict[str, tuple[float, float]] = {}
        self._first_request_at: float | None = None
        self.down = False  # when True every request meets ``down_kind`` (a manual outage)
        self.down_kind = "http_503"  # or "reset": every connection reset, as a dead load balancer does
        self.models_body: Any = None  # what GET /models answers instead of the known models, when set
        self.key_body: Any = None  # what GET /key answers (to a good key) instead of an unlimited key, when set
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control, from any thread ------------------------------------------------------------------------------
    port = property(lambda self: self._port)

    @property
    def url(self) -> str:
        """The OpenRouter-style base URL to point a client at."""
        return f"http://127.0.0.1:{self._port}/api/v1"

    def script(self, *kinds: str) -> None:
        """The next requests get these faults, in order, before the profile is drawn from again."""
        if unknown := [k for k in kinds if k not in FAULT_KINDS]:
            raise ValueError(f"unknown fault kinds {unknown}: expected some of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._script.extend(kinds)

    def set_capacity(self, capacity: int) -> None:
        """From now on admit at most ``capacity`` requests at once (requests already admitted finish)."""
        with self._lock:
            self.capacity = check_capacity(capacity)

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
                "rate_refusals": c.rate_refusals,
                "requests_while_down": c.requests_while_down,
                "retry_after_violations": c.retry_after_violations,
                "per_model": dict(c.per_model),
                "faults": dict(c.faults),
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._counters = Counters(in_flight=self._counters.in_flight, admitted=self._counters.admitted)
            self._seen.clear()
            self._refused.clear()
            self._first_request_at = None

    def start(self) -> FaultServer:
        self._quota_resets_at = (time.monotonic() + self.quota_reset_s, time.time() + self.quota_reset_s)
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
            return respond(writer, 200, self.stats())
        if method == "POST" and path == "/_script":
            self.script(*json.loads(body))
            return respond(writer, 200, {"scripted": True})
        if method == "POST" and path == "/_reset":
            self.reset_stats()
            return respond(writer, 200, {"reset": True})
        if method == "POST" and path == "/_down":
            state = json.loads(body)
            self.down_kind = str(state.get("kind", "http_503"))
            self.down = bool(state["down"])
            return respond(writer, 200, {"down": self.down, "kind": self.down_kind})
        if method == "POST" and path == "/_capacity":
            try:
                self.set_capacity(json.loads(body)["capacity"])
            except (ValueError, KeyError, TypeError) as exc:
                return respond(writer, 400, error_body(400, f'expected {{"capacity": n}}: {exc}'))
            return respond(writer, 200, {"capacity": self.capacity})
        if method == "GET" and path.endswith("/models"):
            models = self.models_body if self.models_body is not None else {"data": [{"id": m} for m in KNOWN_MODELS]}
            return respond(writer, 200, models)
        if method == "GET" and path.endswith("/key"):  # OpenRouter's "who am I" endpoint
            if not self._authorized(headers):
                return respond(writer, 401, {"error": {"code": 401, "message": "User not found."}})
            unlimited = {"data": {"label": "local test key", "limit": None, "usage": 0}}
            return respond(writer, 200, unlimited if self.key_body is None else self.key_body)
        if method != "POST" or not path.endswith("/chat/completions"):
            return respond(writer, 404, {"error": {"code": 404, "message": f"no route {method} {path}"}})
        if not self._authorized(headers):
            return respond(writer, 401, {"error": {"code": 401, "message": "No auth credentials found"}})
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
            authorization = headers.get("authorization", "")
            reset_ms = int(self._quota_resets_at[1] * 1000)
            return await act(
                kind,
                body,
                writer,
                self.retry_after_s,
                self.hang_s,
                authorization,
                quota_reset_ms=reset_ms,
                keepalive_s=self.keepalive_s,
            )
        finally:
            with self._lock:
                self._counters.in_flight -= 1
                self._counters.admitted -= admitted

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        auth = headers.get("authorization", "")
        return auth.startswith("Bearer ") and (self._api_key is None or auth == f"Bearer {self._api_key}")

    def _choose(self, body: bytes) -> tuple[str, float, bool]:
        """The fault for this request, the seconds to wait before acting on it, and whether it holds a slot."""
        key, model, max_tokens = _read(body)
        now = time.monotonic()
        behaviour = self.catalogue.get(model, "healthy")
        with self._lock:
            self._counters.per_model[model] += 1
            if self._first_request_at is None:
                self._first_request_at = now
            refused_at, not_before = self._refused.get(key, (now, now))
            if refused_at <= now:  # a request that came before the refusal went out (a hedge) could not know of it
                self._refused.pop(key, None)
                if now < not_before - 0.005:
                    self._counters.retry_after_violations += 1
            seen = self._seen[key]
            self._seen[key] += 1
            admitted = at_once = False  # at_once: refused at once (the endpoint is full or out of tokens)
            if self._script:
                kind = self._script.popleft()
            elif self.down:
                kind = self.down_kind
                self._counters.requests_while_down += 1
            elif self._profile.in_outage(now - self._first_request_at):
                kind = "http_503"
            elif self.capacity is not None and self._counters.admitted >= self.capacity:
                kind, at_once = "http_429", True
                self._counters.capacity_refusals += 1
            elif self._bucket is not None and not self._bucket.take(now):
                kind, at_once = "http_429", not self._profile.late_refusals
                self._counters.rate_refusals += 1
            else:
                kind = behaviour_kind(
                    behaviour,
                    seen=seen,
                    max_tokens=max_tokens,
                    reasoning_budget=self.reasoning_budget,
                    quota_spent=now < self._quota_resets_at[0],
                )
                if kind == "ok":
                    kind = self._profile.draw(draw_seed(self._seed, key, seen))
                at_once = kind in IMMEDIATE_KINDS
                admitted = self.capacity is not None
            c = self._counters
            c.admitted += admitted
            c.peak_admitted = max(c.peak_admitted, c.admitted)
            delay = 0.0 if at_once else self._latency(draw_seed(self._seed, key, seen))
            if kind in RETRY_AFTER_KINDS:
                self._refused[key] = (now + delay, now + delay + self.retry_after_s)
            self._counters.faults[kind] += 1
        return kind, delay, admitted

    def _latency(self, seed: str) -> float:
        if self.latency_s is not None:
            return self.latency_s
        if self._profile.latency is None:
            return 0.0
        low, high = self._profile.latency
        return random.Random(seed + ":latency").uniform(low, high)


def prompt_key(model: str, messages: object) -> str:
    """What a request's faults and Retry-After are keyed on: its prompt, the model and messages, whatever else its body
    carries. The model without its provider prefix: LiteLLM sends ``openai/gpt-4o-mini`` as ``gpt-4o-mini``."""
    return hashlib.sha256(json.dumps([model.rpartition("/")[2], messages], sort_keys=True).encode()).hexdigest()


def draw_seed(seed: int, key: str, seen: int) -> str:
    """The seed the fault and the latency of a prompt's ``seen``-th request (from 0) are drawn from."""
    return f"{seed}:{key}:{seen}"


def _read(body: bytes) -> tuple[str, str, Any]:
    """A chat request body's fault key (``prompt_key``; the body's own hash without a model and messages), model name
    and ``max_tokens`` ("unknown", None when unreadable): the body parsed once."""
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return hashlib.sha256(body).hexdigest(), "unknown", None
    try:
        key = prompt_key(str(request["model"]), request["messages"])
    except (KeyError, TypeError):
        key = hashlib.sha256(body).hexdigest()
    return key, str(request.get("model", "unknown"))[:200], request.get("max_tokens")
