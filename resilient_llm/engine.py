"""The engine: a long-lived event loop on a background thread that owns the HTTP pool, the concurrency limit and
every other piece of shared state. Both front doors, from any thread and any event loop (including a fresh
``asyncio.run`` per rollout), hand their call to it, so nothing is ever bound to a caller's dead loop.

``process.py`` keeps one engine per process (``complete()``, ``acomplete()``, ``configure()``, fork and exit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Unpack

from resilient_llm import hop, redact, runtime
from resilient_llm.clock import SYSTEM_CLOCK, Clock
from resilient_llm.config import Config
from resilient_llm.logs import LogSink, make_logger
from resilient_llm.prometheus import exporter
from resilient_llm.protocol import build_messages, check_sendable, extra_fields
from resilient_llm.recorder import Gauges, Metrics
from resilient_llm.stack import Stack, build_stack
from resilient_llm.types import ChatOptions, ChatRequest, ChatResult, Message
from resilient_llm.validation import SECONDS, check_option, int_in

if TYPE_CHECKING:
    import random

    import httpx

    from resilient_llm.layers.breaker import BreakerSnapshot


class Engine:
    """Owns the loop thread and the layer stack; ``complete`` / ``acomplete`` are its two front doors."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        refuse_at_exit()
        self.config = config
        self._pid = os.getpid()
        self._closed = False
        self._model_names: dict[str, str] = {}
        redact.register(config.secrets())  # before the first log line or error message
        self._metrics = Metrics(gauges=self._gauges)
        self._exporter = exporter(config.metrics, self._metrics)  # ConfigError without prometheus-client
        self._sink = LogSink(config.log.file)
        self.log = make_logger(config.log, self._sink)
        self._loop, loop_kind = runtime.new_loop(config.runtime)  # uvloop when installed: only this thread's loop
        self._thread = threading.Thread(target=self._loop.run_forever, name="resilient-llm-engine", daemon=True)
        self._thread.start()

        async def build() -> Stack:  # built on the engine loop, where its primitives will live
            return build_stack(config, self.log, transport=transport, clock=clock, rng=rng, metrics=self._metrics)

        try:
            self._stack = asyncio.run_coroutine_threadsafe(build(), self._loop).result()
        except BaseException:  # e.g. a ConfigError from an optional dependency: leave no thread behind
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()
            self._sink.close()
            raise
        self.log.info(
            "engine_started",
            message="Using direct OpenRouter API calls instead of litellm",
            pid=self._pid,
            **runtime.describe(loop_kind, config.http.transport),
            **config.describe(),
        )
        if self._exporter is not None:
            self._exporter.start(self.log)

    def request(
        self, model: str, messages: Sequence[Message] | None = None, **options: Unpack[ChatOptions]
    ) -> ChatRequest:
        """Validate the arguments and build the request; ConfigError names what is wrong."""
        timeout = check_option("timeout", options.get("timeout"), SECONDS)
        num_retries = check_option("num_retries", options.get("num_retries"), int_in(0, 100))
        request = ChatRequest(
            model=self.model_name(model),
            messages=build_messages(messages, options.get("system"), options.get("user")),
            temperature=options.get("temperature"),
            max_tokens=options.get("max_tokens"),
            top_p=options.get("top_p"),
            frequency_penalty=options.get("frequency_penalty"),
            presence_penalty=options.get("presence_penalty"),
            extra_body=self.config.extra_body(extra_fields(options.get("extra_body"))),
            timeout=self.config.http.timeout if timeout is None else timeout,
            num_retries=self.config.retry.num_retries if num_retries is None else num_retries,
            raise_caller_errors=options.get("raise_caller_errors", True),
        )
        check_sendable(request)
        return request

    def model_name(self, model: str, source: str = "model") -> str:
        """The name sent for ``model``; a mapped name (bare OpenAI name on OpenRouter) is logged once."""
        known = self._model_names.get(model) if isinstance(model, str) else None  # else: ConfigError below
        if known is not None:
            return known
        name = self.config.model_name(model, source)
        if name != model.strip():
            self.log.info("model_name_mapped", model=model, sent_as=name)
        self._model_names[model] = name
        return name

    def submit(self, request: ChatRequest) -> concurrent.futures.Future[ChatResult]:
        """Start the call on the engine loop; the future resolves exactly once."""
        self._check_usable()
        return asyncio.run_coroutine_threadsafe(self._stack.top.handle(request), self._loop)

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("this resilient_llm engine is closed")
        if os.getpid() != self._pid:
            raise RuntimeError("this engine belongs to the parent process; use resilient_llm.complete() in a child")

    def complete(
        self, model: str, messages: Sequence[Message] | None = None, **options: Unpack[ChatOptions]
    ) -> ChatResult:
        """Blocking call, from any thread (not from the engine's own)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("complete() would deadlock on the engine thread; use acomplete()")
        request = self.request(model, messages, **options)
        self._check_usable()
        hit = hop.answer_now(self._stack, request)  # a disk cache hit is read here: no hop to the engine thread
        if hit is not None:
            return hit
        return hop.wait(self.submit(request))

    async def acomplete(
        self, model: str, messages: Sequence[Message] | None = None, **options: Unpack[ChatOptions]
    ) -> ChatResult:
        """Awaitable call, from any event loop; cancelling it cancels the call on the engine."""
        request = self.request(model, messages, **options)
        self._check_usable()
        hit = hop.answer_now(self._stack, request)
        if hit is not None:
            return hit
        return await hop.call(self._loop, self._stack.top.handle, request)

    @property
    def outcomes(self) -> Mapping[str, int]:
        """Calls so far by outcome (a snapshot)."""
        return dict(self._stack.top.outcomes)

    @property
    def cache_counters(self) -> Mapping[str, int]:
        """Cache hits, misses, shared in-flight answers, replay misses and store faults so far (a snapshot)."""
        return {} if self._stack.cache is None else dict(self._stack.cache.counters)

    @property
    def breaker_state(self) -> str:
        """The OpenRouter route's breakers: closed, open or half-open, the worst of the endpoint's and any model's."""
        return self._stack.breaker.state

    @property
    def breakers(self) -> BreakerSnapshot:
        """The OpenRouter route's breakers now: the endpoint's state, every model whose breaker is not closed, trips."""
        return self._stack.breaker.snapshot()

    @property
    def breaker_trips(self) -> int:
        """How often the OpenRouter route's breakers (the endpoint's and its models') have opened."""
        return self._stack.breaker.trips

    @property
    def log_lines_dropped(self) -> int:
        """Log lines lost because the destination was stalled or failing (calls are never held up by logging)."""
        return self._sink.dropped

    @property
    def in_flight(self) -> int:
        """Attempts holding a concurrency slot right now."""
        return self._stack.limit.in_flight

    def metrics(self) -> dict[str, float]:
        """What happened since the previous call (or the engine's start), as ``llm/...`` numbers for wandb or
        TensorBoard: calls and shares by outcome, latency percentiles, attempts, tokens, cost, cache, breaker,
        concurrency (the README lists every key)."""
        return self._metrics.snapshot()

    def _gauges(self) -> Gauges:
        """The engine's state for metrics, read from any thread without blocking (the breaker's last seen state)."""
        return Gauges(
            in_flight=self._stack.limit.in_flight,
            concurrency_limit=self._stack.limit.limit,
            breaker_state=self._stack.breaker.state,
            breaker_trips=self._stack.breaker.trips,
        )

    def close(self, timeout: float = 5.0) -> None:
        """Cancel calls still running, close the connection pool and stop the loop thread. Idempotent."""
        if self._closed or os.getpid() != self._pid:
            self._closed = True
            return
        self._closed = True
        if self._exporter is not None:
            self._exporter.stop()

        async def shutdown() -> None:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self._stack.aclose()

        # A wedged or vanished loop is left to die with the process (it runs on a daemon thread).
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
        self._sink.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_exiting = False  # set at interpreter exit (process.py's atexit hook runs before finalization)


def refuse_at_exit() -> None:
    """RuntimeError once the interpreter is exiting: a new loop thread may never start then, and a call (e.g. from a
    ``__del__``) would wait for it forever."""
    if _exiting:
        raise RuntimeError("resilient_llm: the interpreter is exiting; no engine can start now")


def mark_exiting() -> None:
    global _exiting
    _exiting = True
