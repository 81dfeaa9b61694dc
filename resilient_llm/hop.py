"""The way from a caller's thread to the engine's loop and back, kept light: a queued call holds little, and a cache
hit that the store can read in the caller's thread (disk) makes no hop at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Awaitable, Callable

from resilient_llm.stack import Stack
from resilient_llm.types import ChatRequest, ChatResult


def answer_now(stack: Stack, request: ChatRequest) -> ChatResult | None:
    """A cache hit answered in the caller's thread, logged and counted as the observe layer does; None otherwise."""
    if stack.cache is None:
        return None
    started = time.perf_counter()
    hit = stack.cache.answer_now(request)
    return None if hit is None else stack.top.answered_now(request, hit, started)


def wait(future: concurrent.futures.Future[ChatResult]) -> ChatResult:
    """The blocking caller's wait; interrupted (e.g. KeyboardInterrupt), it does not leave the call running."""
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


async def call(
    engine_loop: asyncio.AbstractEventLoop, handle: Callable[[ChatRequest], Awaitable[ChatResult]], request: ChatRequest
) -> ChatResult:
    """``handle(request)`` run on the engine's loop, awaited from the caller's; cancelling it cancels the call there."""
    hop = _Call(handle, request, asyncio.get_running_loop())
    engine_loop.call_soon_threadsafe(hop.start)
    try:
        return await hop.answer
    except asyncio.CancelledError:
        engine_loop.call_soon_threadsafe(hop.cancel)
        raise


class _Call:
    """One awaited call: a task on the engine's loop, one future in the caller's loop.

    Lighter than ``run_coroutine_threadsafe`` + ``wrap_future`` (no concurrent future, no lock, no chained callbacks):
    a call queued behind the limit holds only this, its task and its coroutines.
    """

    __slots__ = ("answer", "caller", "handle", "request", "task")

    def __init__(
        self,
        handle: Callable[[ChatRequest], Awaitable[ChatResult]],
        request: ChatRequest,
        caller: asyncio.AbstractEventLoop,
    ) -> None:
        self.handle = handle
        self.request: ChatRequest | None = request
        self.caller = caller
        self.answer: asyncio.Future[ChatResult] = caller.create_future()
        self.task: asyncio.Future[ChatResult] | None = None

    def start(self) -> None:  # on the engine's loop
        request, self.request = self.request, None
        if request is None:  # cancelled before it started
            return
        self.task = asyncio.ensure_future(self.handle(request))
        self.task.add_done_callback(self._done)

    def cancel(self) -> None:  # on the engine's loop
        self.request = None
        if self.task is not None:
            self.task.cancel()

    def _done(self, task: asyncio.Future[ChatResult]) -> None:  # on the engine's loop
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits any more
            self.caller.call_soon_threadsafe(self._deliver, task)

    def _deliver(self, task: asyncio.Future[ChatResult]) -> None:  # on the caller's loop
        if self.answer.done():
            if not task.cancelled():
                task.exception()  # retrieved: the caller gave up on it
        elif task.cancelled():
            self.answer.cancel()
        elif (error := task.exception()) is not None:
            self.answer.set_exception(error)
        else:
            self.answer.set_result(task.result())
