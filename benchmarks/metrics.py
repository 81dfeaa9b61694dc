"""What the metrics cost: recording one call (on the engine thread, every call), taking a snapshot (the trainer, once
per step) and rendering the Prometheus page (once per scrape), on the real ``Metrics`` and exporter collector.

Calls are drawn from 8 models, 4 routes and every outcome, with log-normal latencies; each measurement is repeated
``--rounds`` times and reported as median and range. Results: ``benchmarks/results/metrics.json``.

    python -m benchmarks.metrics [--calls 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from resilient_llm.prometheus import Exporter, MetricsConfig
from resilient_llm.recorder import OUTCOMES, RESERVOIR, Metrics

RESULTS = Path(__file__).parent / "results"
ROUTES = ("openrouter", "litellm", "neutral", "cache:disk")


def workload(calls: int, seed: int) -> list[tuple[str, float, str, dict[str, Any]]]:
    rng = random.Random(seed)
    lines = []
    for _ in range(calls):
        outcome = rng.choice(OUTCOMES)
        details = {"route": rng.choice(ROUTES), "attempts": rng.randint(0, 3), "prompt_tokens": 500}
        details |= {"completion_tokens": 20, "cost": 1e-4, "cache": rng.choice(("hit", "miss", None))}
        lines.append((outcome, rng.lognormvariate(-0.7, 0.8), f"provider/model-{rng.randrange(8)}", details))
    return lines


def spread(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def measure(calls: int, rounds: int) -> dict[str, Any]:
    record_us, snapshot_ms, scrape_ms, page_bytes = [], [], [], 0
    for round_ in range(rounds):
        lines = workload(calls, seed=round_)
        metrics = Metrics()
        started = time.perf_counter()
        for outcome, latency, model, details in lines:
            metrics.record(outcome, latency, model, details)
        record_us.append((time.perf_counter() - started) / calls * 1e6)
        registry = Exporter(MetricsConfig(port=9464), metrics).registry  # the engine's registry; no server started
        started = time.perf_counter()
        page = generate_latest(registry)
        scrape_ms.append((time.perf_counter() - started) * 1e3)
        page_bytes = len(page)
        started = time.perf_counter()
        snap = metrics.snapshot()  # a full window: more calls than the reservoir keeps
        snapshot_ms.append((time.perf_counter() - started) * 1e3)
        assert snap["llm/calls"] == calls
    return {
        "calls_per_round": calls,
        "rounds": rounds,
        "reservoir": RESERVOIR,
        "record_us_per_call": spread(record_us),
        "snapshot_ms": spread(snapshot_ms),
        "scrape_render_ms": spread(scrape_ms),
        "page_bytes": page_bytes,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.calls, args.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
