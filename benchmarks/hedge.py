"""Stragglers, same run: 3% of requests hang (otherwise clean, 0.5 s answers), 16 calls in flight (cap 20), with
neither defence (a hang costs the whole attempt timeout), the latency-aware attempt timeout alone, and the defaults
(hedging after the p95 and the attempt timeout).

    python -m benchmarks.hedge [--calls 2000] [--latency 0.5] [--timeout 3]

Results: ``benchmarks/results/hedge.json`` (p50/p99 latency, p99/p50, server requests per call, hedges).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from resilient_llm import Config, Engine, HTTPConfig, Outcome
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.remote import RemoteFaultServer

MODEL = "openai/gpt-4o-mini"
RESULTS = Path(__file__).parent / "results"


async def run(engine: Engine, calls: int, concurrency: int) -> tuple[list[float], int]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    real = 0

    async def one(i: int) -> None:
        nonlocal real
        async with gate:
            started = time.perf_counter()
            result = await engine.acomplete(MODEL, user=f"hedge bench {i}")
            latencies.append((time.perf_counter() - started) * 1e3)
            real += result.outcome is Outcome.OK

    await asyncio.gather(*(one(i) for i in range(calls)))
    return latencies, real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=3.0, help="client timeout per attempt")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight; below the cap of 20")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"benchmark": "hedge", "settings": vars(args), "variants": {}}
    variants = {
        "neither": {"enabled": False, "attempt_timeout_factor": 0.0},
        "attempt_timeout": {"enabled": False},
        "defaults": {},
    }
    for name, hedge in variants.items():
        log = RESULTS / f"hedge_{name}.calls.jsonl"
        log.unlink(missing_ok=True)
        with RemoteFaultServer("hangs", seed=3, latency_s=args.latency, hang_s=60) as server:
            config = Config(http=HTTPConfig(api_key="sk-bench-local", base_url=server.url, timeout=args.timeout))
            config = config.replace(cache={"mode": "off"}, hedge=hedge, log={"file": str(log)})
            with Engine(config) as engine:
                latencies, real = asyncio.run(run(engine, args.calls, args.concurrency))
            stats = server.stats()
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        lat = percentiles(latencies)
        report["variants"][name] = {
            "calls": args.calls,
            "real_answers": real,
            "latency_ms": lat,
            "p99_over_p50": (lat["p99"] or 0) / (lat["p50"] or 1),
            "server_requests": stats["requests"],
            "extra_requests_pct": 100.0 * (stats["requests"] - args.calls) / args.calls,
            "hangs_served": stats["faults"].get("hang", 0),
            "hedges": sum(1 for x in lines if x["event"] == "hedge"),
            "hedges_won": sum(1 for x in lines if x["event"] == "hedge_won"),
        }
        print(name, json.dumps(report["variants"][name]))
    (RESULTS / "hedge.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
