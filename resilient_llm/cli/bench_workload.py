"""The bench's workload: each client's call as the trainer makes it, the env flags that switch the drop-in, and one
cell's run in either calling pattern (one loop with gather, or the trainer's loop per rollout on pool threads).
Shared with ``benchmarks/*``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from resilient_llm.testing.environment import env_flags

MODEL = "openai/gpt-4o-mini"
LOCAL_KEY = "sk-bench-local-not-a-secret"
CALLS_PER_ROLLOUT = 4
CLIENT_TIMEOUT_S = 3.0  # per attempt, both clients: a "hang" fault costs this much
JUDGE_SYSTEM = "You are a judge."

CallFn = Callable[[str], Awaitable[str]]


def is_real(text: str, live: bool) -> bool:
    """A real answer: from the local server, its deterministic score object; live, any non-empty text."""
    return bool(text) if live else text.startswith('{"score"')


def make_call(client: str, url: str, key: str) -> tuple[CallFn, Callable[[], Awaitable[None]] | None]:
    """The client's call function in the calling event loop, and how to close it there."""
    if client == "httpx":
        import httpx

        http = httpx.AsyncClient(trust_env=False)  # as a user writes it: httpx's default pool of 100

        async def bare(prompt: str) -> str:
            body = {"model": MODEL, "messages": judge_messages(prompt), "temperature": 0}
            headers = {"Authorization": f"Bearer {key}"}
            response = await http.post(f"{url}/chat/completions", json=body, headers=headers, timeout=CLIENT_TIMEOUT_S)
            return str(response.json()["choices"][0]["message"]["content"])

        return bare, http.aclose
    from resilient_llm.dropin.run_utils import run_litellm_async

    async def trainer_call(prompt: str) -> str:
        return await run_litellm_async(MODEL, prompt, JUDGE_SYSTEM)

    return trainer_call, None


@contextmanager
def client_environment(
    client: str, url: str, key: str, log_file: Path, other_provider: str | None = None
) -> Iterator[None]:
    """The env flags a user sets: USE_OPENROUTER_DIRECT on for us, off for LiteLLM; everything else default, but
    ``resilient_llm+fallback`` also names another provider for its LiteLLM fallback route."""
    values = {
        "USE_OPENROUTER_DIRECT": "true" if client.startswith("resilient_llm") else "false",
        "OPENAI_API_KEY": key,
        "OPENAI_API_BASE": url,
        "LITELLM_DEFAULT_TIMEOUT": str(CLIENT_TIMEOUT_S),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "RESILIENT_LLM_LOG_FILE": str(log_file),
        "RESILIENT_LLM_CACHE": "off",  # measure the network path, not the cache
    }
    if client == "resilient_llm+hedge":
        values["RESILIENT_LLM_HEDGE"] = "true"
    if other_provider is not None:
        values |= {
            "RESILIENT_LLM_FALLBACK_MODEL": MODEL,
            "RESILIENT_LLM_FALLBACK_BASE_URL": other_provider,
            "FALLBACK_API_KEY": key,
        }
    with env_flags(values):
        yield


class Tally:
    """Per-call records, from any thread; ``latencies`` has every call's, an exception's too (the slowest call is the
    one a training step waits for, whatever it returned)."""

    def __init__(self, advance: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self.latencies: list[float] = []
        self.real = self.other = self.exceptions = 0
        self.exception_kinds: dict[str, int] = {}
        self._advance = advance

    async def measure(self, call: CallFn, prompt: str, live: bool) -> None:
        started = time.perf_counter()
        try:
            text = await call(prompt)
        except Exception as exc:
            with self._lock:
                self.latencies.append(time.perf_counter() - started)
                self.exceptions += 1
                name = type(exc).__name__
                self.exception_kinds[name] = self.exception_kinds.get(name, 0) + 1
        else:
            with self._lock:
                self.latencies.append(time.perf_counter() - started)
                if is_real(text, live):
                    self.real += 1
                else:
                    self.other += 1
        self._advance()


def workload_prompts(tag: str, calls: int) -> list[str]:
    """A cell's distinct judge prompts, in the order its calls start."""
    return [f"{tag} rubric {i}" for i in range(calls)]


def judge_messages(prompt: str) -> list[dict[str, str]]:
    """The messages every client sends for ``prompt``, as the trainer's judge call builds them."""
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]


def run_cell(
    client: str,
    pattern: str,
    url: str,
    key: str,
    calls: int,
    concurrency: int,
    pace_s: float,
    tag: str,
    live: bool,
    tally: Tally,
) -> float:
    """Run one cell's workload; returns wall seconds. ``pace_s`` > 0 spreads call starts over that many seconds."""
    prompts = workload_prompts(tag, calls)
    interval = pace_s / calls if pace_s else 0.0
    began = time.perf_counter()

    async def paced(call: CallFn, index: int, gate: asyncio.Semaphore | None) -> None:
        if interval:
            await asyncio.sleep(max(0.0, began + index * interval - time.perf_counter()))
        if gate is None:
            await tally.measure(call, prompts[index], live)
        else:
            async with gate:
                await tally.measure(call, prompts[index], live)

    async def one_loop(indices: range, limit: int | None) -> None:
        call, close = make_call(client, url, key)
        gate = asyncio.Semaphore(limit) if limit else None
        await asyncio.gather(*(paced(call, i, gate) for i in indices))
        if close is not None:
            await close()

    if pattern == "gather":
        asyncio.run(one_loop(range(calls), concurrency))
    else:
        rollouts = [range(i, min(i + CALLS_PER_ROLLOUT, calls)) for i in range(0, calls, CALLS_PER_ROLLOUT)]

        async def batch() -> None:
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(max(1, concurrency // CALLS_PER_ROLLOUT)) as pool:
                await asyncio.gather(*(loop.run_in_executor(pool, asyncio.run, one_loop(r, None)) for r in rollouts))

        asyncio.run(batch())
    return time.perf_counter() - began
