"""What observing the original (flag-off) path costs: the wrapper alone, and calls through LiteLLM end to end.

    python -m benchmarks.observe_original [--iterations 20000] [--calls 200] [--rounds 5]

1. The ``with observe(...)`` wrapper around a no-op "call" returning a LiteLLM-shaped response: bare code, logging
   not configured (the default), and logging to a file; microseconds per call, median and spread over rounds.
2. ``run_litellm_async`` against the local clean server (50 ms answers, 20 at once), logging off vs on, which one
   goes first alternating per round: p50/p99 latency and calls/s.

Results: ``benchmarks/results/observe_original.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from resilient_llm.dropin.observe_original import LITELLM_ROUTE, observe
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.fault_server import RemoteFaultServer

MODEL = "openai/gpt-4o-mini"
RESULTS = Path(__file__).parent / "results"
LOG_FILE = "RESILIENT_LLM_LOG_FILE"


def fake_response() -> Any:
    message = SimpleNamespace(content='{"score": 2}')
    usage = SimpleNamespace(prompt_tokens=40, completion_tokens=12, cost=None)
    return SimpleNamespace(
        choices=[SimpleNamespace(message=message)],
        usage=usage,
        model="gpt-4o-mini",
        id="gen-0123456789abcdef",
        _hidden_params={"response_cost": 7.35e-06},
    )


def wrapper_us(mode: str, iterations: int) -> float:
    """Microseconds per call of the original code's shape, with or without the observation."""
    response = fake_response()
    started = time.perf_counter()
    if mode == "bare":
        for _ in range(iterations):
            _ = response.choices[0].message.content or ""
    else:
        for _ in range(iterations):
            with observe("run_litellm", LITELLM_ROUTE, MODEL, system="s", user="u") as seen:
                _ = seen.answered(response, response.choices[0].message.content or "")
    return (time.perf_counter() - started) / iterations * 1e6


def litellm_round(url: str, calls: int) -> dict[str, float]:
    from resilient_llm.dropin import run_utils

    latencies: list[float] = []

    async def one(gate: asyncio.Semaphore, i: int) -> None:
        async with gate:
            started = time.perf_counter()
            await run_utils.run_litellm_async(MODEL, f"observe bench {i}", "judge")
            latencies.append((time.perf_counter() - started) * 1e3)

    async def batch() -> float:
        gate = asyncio.Semaphore(20)
        began = time.perf_counter()
        await asyncio.gather(*(one(gate, i) for i in range(calls)))
        return time.perf_counter() - began

    wall = asyncio.run(batch())
    lat = percentiles(latencies)
    return {"p50_ms": lat["p50"] or 0.0, "p99_ms": lat["p99"] or 0.0, "calls_per_s": calls / wall}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ["USE_OPENROUTER_DIRECT"] = "false"
    os.environ["OPENAI_API_KEY"] = "sk-bench-local-not-a-secret"
    report: dict[str, Any] = {"benchmark": "observe_original", "settings": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "calls.jsonl")
        wrapper: dict[str, list[float]] = {"bare": [], "logging_off": [], "logging_on": []}
        for _ in range(args.rounds):
            for mode in wrapper:
                os.environ.pop(LOG_FILE, None)
                if mode == "logging_on":
                    os.environ[LOG_FILE] = log
                wrapper[mode].append(wrapper_us(mode, args.iterations))
        report["wrapper_us_per_call"] = {mode: spread(values) for mode, values in wrapper.items()}
        print("wrapper", json.dumps(report["wrapper_us_per_call"]))

        import litellm

        litellm.suppress_debug_info = True
        runs: dict[str, list[dict[str, float]]] = {"logging_off": [], "logging_on": []}
        with RemoteFaultServer("clean", latency_s=0.05) as server:
            os.environ["OPENAI_API_BASE"] = server.url
            litellm_round(server.url, 20)  # LiteLLM's first-call set-up, outside the measurement
            for round_number in range(args.rounds):
                for mode in sorted(runs, reverse=bool(round_number % 2)):  # alternate which goes first
                    os.environ.pop(LOG_FILE, None)
                    if mode == "logging_on":
                        os.environ[LOG_FILE] = log
                    runs[mode].append(litellm_round(server.url, args.calls))
        report["litellm_end_to_end"] = {
            mode: {key: spread([r[key] for r in rounds]) for key in rounds[0]} for mode, rounds in runs.items()
        }
        print("litellm", json.dumps(report["litellm_end_to_end"]))
    (RESULTS / "observe_original.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
