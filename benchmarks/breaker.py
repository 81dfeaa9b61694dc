"""The breaker, measured: no trips on a flaky endpoint; fast fallback, one probe per reset period and recovery
through an outage; neutral judge scores with the endpoint down.

    python -m benchmarks.breaker [--flaky-calls 2000] [--reset-timeout 2]

Results: ``benchmarks/results/breaker.json`` and the call logs beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from resilient_llm import Config, Engine, HTTPConfig, Outcome
from resilient_llm.dropin import judge
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.profiles import PROFILES
from resilient_llm.testing.remote import RemoteFaultServer

MODEL = "openai/gpt-4o-mini"
RESULTS = Path(__file__).parent / "results"


def engine(url: str, log: str, timeout: float = 600.0, **sections: Any) -> Engine:
    config = Config(http=HTTPConfig(api_key="sk-bench-local", base_url=url, timeout=timeout))
    return Engine(config.replace(cache={"mode": "off"}, log={"file": str(RESULTS / log)}, **sections))


async def flaky(calls: int, concurrency: int) -> dict[str, Any]:
    with RemoteFaultServer("flaky", seed=7, latency_s=0.05, hang_s=30) as server:
        with engine(server.url, "breaker_flaky.calls.jsonl", timeout=5.0) as eng:
            gate = asyncio.Semaphore(concurrency)

            async def one(i: int) -> Outcome:
                async with gate:
                    return (await eng.acomplete(MODEL, user=f"flaky {i}")).outcome

            outcomes = await asyncio.gather(*(one(i) for i in range(calls)))
            trips = eng.breaker_trips
        stats = server.stats()
    faults = sum(v for k, v in stats["faults"].items() if k != "ok")
    return {
        "calls": calls,
        "trips": trips,
        "real_answers": outcomes.count(Outcome.OK),
        "server_requests": stats["requests"],
        "fault_share": faults / stats["requests"],
    }


async def outage(reset_timeout: float, concurrency: int, duration: float) -> dict[str, Any]:
    start_s, length_s = PROFILES["outage"].outage or (0.0, 0.0)
    rows: list[tuple[float, str, float]] = []
    with RemoteFaultServer("outage", latency_s=0.05) as server:
        with engine(server.url, "breaker_outage.calls.jsonl", breaker={"reset_timeout": reset_timeout}) as eng:
            began = time.monotonic()

            async def stream(worker: int) -> None:
                n = 0
                while time.monotonic() - began < duration:
                    result = await eng.acomplete(MODEL, user=f"outage {worker} {n}")
                    rows.append((time.monotonic() - began, result.outcome, result.latency_s))
                    n += 1

            await asyncio.gather(*(stream(w) for w in range(concurrency)))
        stats = server.stats()
    log = [json.loads(line) for line in (RESULTS / "breaker_outage.calls.jsonl").read_text().splitlines()]
    transitions = [e for e in log if e["event"] == "breaker_state_change"]
    trials = sum(1 for e in transitions if e["to_state"] == "half-open")
    outage_end = start_s + length_s
    open_latencies = [
        lat * 1e3 for t, outcome, lat in rows if outcome == Outcome.NEUTRAL and start_s + 1 < t < outage_end
    ]
    open_latency = percentiles(open_latencies)
    first_ok_after = min((t for t, outcome, _ in rows if outcome == Outcome.OK and t > outage_end), default=None)
    return {
        "outage_window_s": [start_s, outage_end],
        "reset_timeout_s": reset_timeout,
        "calls": len(rows),
        "outcomes": {o: sum(1 for _, out, _ in rows if out == o) for o in ("ok", "neutral")},
        "neutral_while_open_p50_ms": open_latency["p50"],
        "neutral_while_open_p99_ms": open_latency["p99"],
        "server_503s": stats["faults"].get("http_503", 0),
        "half_open_trials": trials,
        "reset_periods_in_outage": length_s / reset_timeout,
        "transitions": [(e["from_state"], e["to_state"], e["reason"]) for e in transitions],
        "real_answers_resumed_after_s": None if first_ok_after is None else first_ok_after - outage_end,
    }


async def judge_down(calls: int) -> dict[str, Any]:
    judge.TALLY.reset()
    with engine("http://127.0.0.1:9/api/v1", "breaker_judge.calls.jsonl", fallback={"routes": ("neutral",)}) as eng:
        scores = await asyncio.gather(
            *(
                judge.score_property_async(MODEL, f"answer {i}", "question", "is correct", engine=eng)
                for i in range(calls)
            )
        )
    counters = judge.judge_counters()
    return {
        "calls": calls,
        "neutral_scores": sum(1 for s in scores if s == 0.5),
        "counters": {"calls": counters.calls, "real": counters.real, "neutral": counters.neutral},
        "neutral_share": counters.neutral_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--flaky-calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reset-timeout", type=float, default=2.0)
    parser.add_argument("--outage-run", type=float, default=14.0, help="seconds of steady calls through the outage")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in ("breaker_flaky", "breaker_outage", "breaker_judge"):
        (RESULTS / f"{name}.calls.jsonl").unlink(missing_ok=True)
    report = {
        "benchmark": "breaker",
        "settings": vars(args),
        "flaky": asyncio.run(flaky(args.flaky_calls, args.concurrency)),
        "outage": asyncio.run(outage(args.reset_timeout, 8, args.outage_run)),
        "judge_down": asyncio.run(judge_down(200)),
    }
    (RESULTS / "breaker.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    main()
