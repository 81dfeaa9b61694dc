"""The adaptive concurrency policy in the discrete-event simulation (``resilient_llm/testing/concurrency_sim.py``),
over seeds.

    python -m benchmarks.limit_policy [--seeds 5]

Simulated clock, so the numbers are the policy's alone (no client overhead, no network); a refusal shuts a
shared gate for its Retry-After when ``policy/gate.py`` says so (a burst), and every refused call waits its own.
Results: ``benchmarks/results/limit_policy.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resilient_llm.policy.concurrency import LimitPolicy, Sample, Signal, initial_state, update
from resilient_llm.testing.concurrency_sim import Endpoint, simulate

RESULTS = Path(__file__).parent / "results"
FAST = Endpoint(latency=lambda rng: rng.uniform(0.04, 0.06))


def clean(seed: int) -> dict[str, float]:
    adaptive = simulate(Endpoint(), callers=64, calls=1000, seed=seed)
    unlimited = simulate(Endpoint(), callers=64, calls=1000, seed=seed, fixed=10_000)
    fixed = simulate(Endpoint(), callers=64, calls=1000, seed=seed, fixed=20)
    return {
        "adaptive_vs_unlimited": adaptive.calls_per_s / unlimited.calls_per_s,
        "fixed20_vs_unlimited": fixed.calls_per_s / unlimited.calls_per_s,
        "permits_at_1s": adaptive.permits_at(1.0),
    }


def capacity(seed: int) -> dict[str, float]:
    result = simulate(Endpoint(capacity=100, retry_after=1.0), callers=1000, calls=3000, seed=seed)
    return {
        "calls_per_s_vs_200": result.calls_per_s / 200,
        "refusal_share": result.refusals / result.requests,
        "final_permits": result.permits_at(result.wall),
    }


def halving(seed: int) -> dict[str, float]:
    endpoint = Endpoint(capacity=100, capacity_changes=[(8.0, 50)], retry_after=1.0)
    result = simulate(endpoint, callers=1000, calls=5000, seed=seed)
    followed = next(at for at, permits in result.limits if at > 8.0 and permits <= 55)
    return {
        "seconds_to_55": followed - 8.0,
        "permits_at_18s": result.permits_at(18.0),
        "refusal_share_8_18s": result.refusal_share(8.0, 18.0),
        "refusal_share_after_18s": result.refusal_share(18.0, result.wall),
    }


def throttle(seed: int) -> dict[str, float]:
    endpoint = Endpoint(rate=50, burst=50, retry_after=1.0, latency=FAST.latency)
    result = simulate(endpoint, callers=32, calls=500, seed=seed)
    return {
        "requests_per_call": result.requests / result.completed,
        "calls_per_s": result.calls_per_s,
        "pauses": result.pauses,
    }


def throttle_late(seed: int) -> dict[str, float]:
    endpoint = Endpoint(rate=50, burst=50, retry_after=1.0, latency=FAST.latency, late_refusals=True)
    result = simulate(endpoint, callers=32, calls=500, seed=seed)
    return {
        "requests_per_call": result.requests / result.completed,
        "calls_per_s": result.calls_per_s,
        "pauses": result.pauses,
        "final_permits": result.limits[-1][1],
    }


def random_refusals(seed: int) -> dict[str, float]:
    endpoint = Endpoint(refuse_share=0.6, retry_after=0.5, latency=FAST.latency)
    adaptive = simulate(endpoint, callers=32, calls=500, seed=seed)
    fixed = simulate(endpoint, callers=32, calls=500, seed=seed, fixed=20)
    return {
        "adaptive_calls_per_s": adaptive.calls_per_s,
        "fixed20_calls_per_s": fixed.calls_per_s,
        "lowest_permits": min(permits for _, permits in adaptive.limits),
    }


def flaky_refusals(seed: int) -> dict[str, float]:
    endpoint = Endpoint(refuse_share=0.04, retry_after=1.0, latency=FAST.latency)
    result = simulate(endpoint, callers=32, calls=500, seed=seed)
    return {
        "calls_per_s": result.calls_per_s,
        "pauses": result.pauses,
        "lowest_permits": min(permits for _, permits in result.limits),
    }


def queue(seed: int) -> dict[str, float]:
    adaptive = simulate(Endpoint(workers=50), callers=200, calls=6000, seed=seed)
    fifty = simulate(Endpoint(workers=50), callers=200, calls=6000, seed=seed, fixed=50)
    unlimited = simulate(Endpoint(workers=50), callers=200, calls=6000, seed=seed, fixed=10_000)
    return {
        "calls_per_s_vs_fixed50": adaptive.calls_per_s / fifty.calls_per_s,
        "p50_s": statistics.median(adaptive.latencies[3000:]),
        "p50_s_unlimited": statistics.median(unlimited.latencies[3000:]),
        "p50_s_fixed50": statistics.median(fifty.latencies[3000:]),
    }


def update_cost_us() -> float:
    """Microseconds of one ``update`` (answers at a used limit, a refusal now and then)."""
    config, state, rng = LimitPolicy(), initial_state(LimitPolicy()), random.Random(0)
    samples = [
        Sample(Signal.BACKPRESSURE if rng.random() < 0.01 else Signal.OK, i * 0.01, i * 0.01 + 0.5, 20, 20, 12)
        for i in range(50_000)
    ]
    started = time.perf_counter()
    for sample in samples:
        state = update(config, state, sample)
    return (time.perf_counter() - started) / len(samples) * 1e6


SCENARIOS: dict[str, Callable[[int], dict[str, float]]] = {
    "clean 500+-100 ms, 64 callers, 1000 calls": clean,
    "capacity 100, 1000 callers, 3000 calls, Retry-After 1 s": capacity,
    "capacity 100 -> 50 at 8 s, 1000 callers, 5000 calls": halving,
    "token bucket 50/s burst 50, 32 callers, 500 calls, Retry-After 1 s": throttle,
    "token bucket 50/s burst 50, 429 after the answer latency, 32 callers, 500 calls": throttle_late,
    "60% 429 whatever the load, 32 callers, 500 calls, Retry-After 0.5 s": random_refusals,
    "4% 429 whatever the load, 32 callers, 500 calls, Retry-After 1 s": flaky_refusals,
    "50 workers + FIFO queue, 200 callers, 6000 calls": queue,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    report: dict[str, Any] = {"benchmark": "limit_policy", "seeds": args.seeds, "scenarios": {}}
    for name, scenario in SCENARIOS.items():
        runs = [scenario(seed) for seed in range(args.seeds)]
        summary = {
            key: {
                "mean": statistics.fmean(r[key] for r in runs),
                "min": min(r[key] for r in runs),
                "max": max(r[key] for r in runs),
            }
            for key in runs[0]
        }
        report["scenarios"][name] = summary
        print(name)
        for key, value in summary.items():
            print(f"    {key:28} mean {value['mean']:9.3f}   min {value['min']:9.3f}   max {value['max']:9.3f}")
    costs = [update_cost_us() for _ in range(3)]
    report["update_us"] = {"runs": costs}
    print(f"update(): {min(costs):.1f}-{max(costs):.1f} us per sample")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "limit_policy.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
