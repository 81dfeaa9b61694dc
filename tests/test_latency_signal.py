"""The adaptive limit against a client-bound process, on the real wire: our own CPU is not the server's queue."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from resilient_llm import CacheConfig, Config, Engine, HTTPConfig, LimitConfig, LogConfig, Secret
from resilient_llm.testing.remote import RemoteFaultServer

MODEL = "openai/gpt-4o-mini"


def burn(rounds: int) -> int:
    """Pure-Python work holding the GIL, as a rollout's reward parsing does."""
    total = 0
    for i in range(rounds):
        total += i * i
    return total


def test_a_cpu_bound_caller_with_a_new_thread_pool_per_batch_does_not_cut_the_limit(tmp_path: Path) -> None:
    """Ten batches of 64 calls, each from a new 32-thread pool whose threads burn CPU before calling, against a
    10 ms server in its own process: the limit stays at or above where it started (it fell to 3 while the GIL slowed
    every answer, at low load as at high, by more than the loop lag showed)."""
    with RemoteFaultServer("clean", latency_s=0.01) as server:
        config = Config(
            http=HTTPConfig(api_key=Secret("sk-or-v1-local"), base_url=server.url, ignore_proxy=True),
            limit=LimitConfig(),
            cache=CacheConfig(mode="off"),
            log=LogConfig(file=str(tmp_path / "calls.jsonl")),
        )
        engine = Engine(config)
        try:
            limits = []
            for batch in range(10):

                def one(i: int, batch: int = batch) -> str:
                    burn(20_000)
                    return engine.complete(MODEL, user=f"batch {batch} call {i}", temperature=0).text

                with concurrent.futures.ThreadPoolExecutor(32) as pool:
                    answers = list(pool.map(one, range(64)))
                assert all(answers)
                limits.append(int(engine.metrics()["llm/concurrency_limit"]))
        finally:
            engine.close()
    assert min(limits) >= 20, limits
