"""The trainer's calling pattern on a flaky endpoint: resilient_llm vs LiteLLM through the same run_utils calls.

A data thread runs ``asyncio.run`` for the batch; each rollout is scored on a thread-pool worker that runs its own
``asyncio.run`` over its judge calls (``run_litellm_async``), so every rollout has a brand-new event loop.
``workers x calls_per_rollout`` calls are in flight from the caller's side. Both clients use their defaults
(LiteLLM: ``num_retries=5``, retried through tenacity; resilient_llm's defaults) and the same client timeout. Each
reports the judge phase's wall time (a step waits for its slowest call), calls/s and the latency percentiles, and
resilient_llm's wall time as a multiple of LiteLLM's. Results: ``benchmarks/results/trainer_pattern.json``; the
step-shaped comparison over both patterns and two seeds is ``python -m benchmarks.step_time``.

    python -m benchmarks.trainer_pattern [--profile flaky] [--rollouts 125] [--calls-per-rollout 4] [--workers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM would fetch it from the internet

import resilient_llm
from open_instruct.search_rewards.utils import run_utils
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.remote import RemoteFaultServer
from resilient_llm.testing.reward_step import trainer_batch

MODEL = "openai/gpt-4o-mini"
RESULTS = Path(__file__).parent / "results"
T = TypeVar("T")


def run_pattern(rollouts: int, calls_per_rollout: int, workers: int, tag: str) -> dict[str, Any]:
    """One judge phase; its wall time (the step waits for its slowest call) and each call's latency."""
    answers: list[str] = []
    exceptions: list[str] = []
    latencies: list[float] = []

    async def timed(prompt: str) -> str:
        started = time.perf_counter()
        try:
            return await run_utils.run_litellm_async(MODEL, prompt, "You are a judge.")
        finally:
            latencies.append(time.perf_counter() - started)  # list.append holds the GIL: safe across the threads

    def score_rollout(rollout: int) -> list[str]:
        async def judge() -> list[str]:
            prompts = [f"{tag} rollout {rollout} rubric {i}" for i in range(calls_per_rollout)]
            return await asyncio.gather(*(timed(p) for p in prompts))

        return asyncio.run(judge())

    started = time.perf_counter()
    for outcome in trainer_batch(score_rollout, rollouts, workers):
        if isinstance(outcome, BaseException):
            exceptions.append(repr(outcome))
        else:
            answers.extend(outcome)
    wall = time.perf_counter() - started
    calls = rollouts * calls_per_rollout
    real = sum(a.startswith('{"score"') for a in answers)
    return {
        "calls": calls,
        "exceptions": len(exceptions),
        "real_answers": real,
        "real_answer_pct": 100.0 * real / calls,
        "wall_s": wall,
        "calls_per_s": calls / wall,
        "latency_ms": {k: None if v is None else round(v * 1e3, 1) for k, v in percentiles(latencies).items()},
        "exception_samples": exceptions[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", default="flaky")
    parser.add_argument("--rollouts", type=int, default=125)
    parser.add_argument("--calls-per-rollout", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=5.0, help="client timeout per attempt, both clients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clients", default="resilient_llm,litellm")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_file = RESULTS / "trainer_pattern.calls.jsonl"
    log_file.unlink(missing_ok=True)
    report: dict[str, Any] = {"benchmark": "trainer_pattern", "settings": vars(args), "clients": {}}
    for client in args.clients.split(","):
        with RemoteFaultServer(args.profile, seed=args.seed, latency_s=0.05, retry_after_s=1.0) as server:
            os.environ.update(
                USE_OPENROUTER_DIRECT="true" if client == "resilient_llm" else "false",
                OPENAI_API_KEY="sk-bench-local-not-a-secret",
                OPENAI_API_BASE=server.url,
                LITELLM_DEFAULT_TIMEOUT=str(args.timeout),
                RESILIENT_LLM_CACHE="off",  # measure the network path, not the cache
                RESILIENT_LLM_LOG_FILE=str(log_file),
            )
            resilient_llm.shutdown()
            result = run_pattern(args.rollouts, args.calls_per_rollout, args.workers, f"seed{args.seed}")
            stats = server.stats()
        result["server_requests_per_call"] = stats["requests"] / result["calls"]
        result["server"] = stats
        report["clients"][client] = result
        print(
            f"{client:>14}: {result['calls']} calls, {result['exceptions']} exceptions, "
            f"{result['real_answer_pct']:.2f}% real answers, {result['server_requests_per_call']:.3f} requests/call, "
            f"peak in flight {stats['peak_in_flight']}, Retry-After violations {stats['retry_after_violations']}, "
            f"judge phase {result['wall_s']:.1f} s ({result['calls_per_s']:.1f} calls/s), "
            f"slowest call {result['latency_ms']['max']} ms"
        )
    resilient_llm.shutdown()
    if {"resilient_llm", "litellm"} <= set(report["clients"]):
        ours, theirs = (report["clients"][c]["wall_s"] for c in ("resilient_llm", "litellm"))
        report["wall_vs_litellm"] = ours / theirs
        print(f"resilient_llm's judge phase took {ours / theirs:.2f}x LiteLLM's")
    (RESULTS / "trainer_pattern.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
