"""The "real OpenRouter" judge phase: a healthy judge model and two broken models in one phase, 32 calls in flight.

One phase sends 240 calls to a healthy judge (``test/healthy``), 80 to a reasoning model that spends DR Tulu's
``max_tokens=800`` on reasoning and returns no content (``test/reasoning-truncates``: 200, ``finish_reason:
"length"``) and 80 to a model OpenRouter has no provider for (``test/no-provider``: 503), interleaved, every call
with ``max_tokens=800`` as the citation judge asks; a second phase sends the 240 healthy calls alone. Both go through
the trainer's ``run_litellm_async``, once on the direct path (resilient_llm) and once on LiteLLM against the same
local server (``testing/catalogue.py`` describes its models). Per model: calls, real answers, requests per call
(what reached the server), p50/p99; per phase: wall time and, for resilient_llm, how often the breaker opened.

Results: ``benchmarks/results/openrouter_mix.{json,md}``.

    python -m benchmarks.openrouter_mix [--repeats 2] [--latency 0.2] [--clients resilient_llm,litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM would fetch it from the internet

import resilient_llm
from open_instruct.search_rewards.utils import run_utils
from resilient_llm.policy.percentiles import nearest_rank
from resilient_llm.testing.remote import RemoteFaultServer

HEALTHY, TRUNCATES, NO_PROVIDER = "test/healthy", "test/reasoning-truncates", "test/no-provider"
PHASES = {
    "mixed": ((HEALTHY, 240), (TRUNCATES, 80), (NO_PROVIDER, 80)),
    "healthy_only": ((HEALTHY, 240),),
}
IN_FLIGHT = 32
MAX_TOKENS = 800  # DR Tulu's citation judge
RESULTS = Path(__file__).parent / "results"


def sent_name(client: str, model: str) -> str:
    """LiteLLM needs a provider prefix; ``openai/`` sends the rest of the name to OPENAI_API_BASE unchanged."""
    return f"openai/{model}" if client == "litellm" else model


async def run_phase(client: str, calls: list[tuple[str, int]]) -> tuple[dict[str, dict[str, list[Any]]], float]:
    """Every call of the phase, at most IN_FLIGHT at once; per model: each call's latency and answer text."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    seen: dict[str, dict[str, list[Any]]] = {}

    async def one(model: str, n: int) -> None:
        async with gate:
            started = time.perf_counter()
            prompt = f"Claim {n} for {model}: is it supported by the cited snippet? Answer with a score."
            text = await run_utils.run_litellm_async(
                sent_name(client, model), prompt, "You are a judge.", max_tokens=MAX_TOKENS
            )
            record = seen.setdefault(model, {"latency_s": [], "texts": []})
            record["latency_s"].append(time.perf_counter() - started)
            record["texts"].append(text)

    started = time.perf_counter()
    await asyncio.gather(*(one(model, n) for model, n in calls))
    return seen, time.perf_counter() - started


def phase_calls(phase: str, seed: int) -> list[tuple[str, int]]:
    calls = [(model, n) for model, count in PHASES[phase] for n in range(count)]
    random.Random(seed).shuffle(calls)  # the broken models' calls interleaved with the healthy judge's
    return calls


def measure(client: str, phase: str, latency_s: float, timeout_s: float, seed: int) -> dict[str, Any]:
    with RemoteFaultServer("clean", seed=seed, latency_s=latency_s, retry_after_s=1.0) as server:
        log_file = RESULTS / "openrouter_mix.calls.jsonl"
        os.environ.update(
            USE_OPENROUTER_DIRECT="true" if client == "resilient_llm" else "false",
            OPENAI_API_KEY="sk-bench-local-not-a-secret",
            OPENAI_API_BASE=server.url,
            LITELLM_DEFAULT_TIMEOUT=str(timeout_s),
            RESILIENT_LLM_CACHE="off",
            RESILIENT_LLM_LOG_FILE=str(log_file),
        )
        resilient_llm.shutdown()
        seen, wall_s = asyncio.run(run_phase(client, phase_calls(phase, seed)))
        breaker_trips = resilient_llm.metrics().get("llm/breaker_trips") if client == "resilient_llm" else None
        resilient_llm.shutdown()
        stats = server.stats()
    per_model: dict[str, Any] = {}
    for model, count in PHASES[phase]:
        record = seen.get(model, {"latency_s": [], "texts": []})
        latencies = sorted(record["latency_s"])
        real = sum(1 for text in record["texts"] if text.strip())
        requests = stats["per_model"].get(model, 0)
        per_model[model] = {
            "calls": count,
            "real_answers": real,
            "requests_per_call": requests / count,
            "p50_s": nearest_rank(latencies, 0.5) if latencies else None,
            "p99_s": nearest_rank(latencies, 0.99) if latencies else None,
        }
    return {"wall_s": wall_s, "breaker_trips": breaker_trips, "models": per_model, "server_requests": stats["requests"]}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """min / median / max of each figure over the repeats."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    out: dict[str, Any] = {"wall_s": spread([r["wall_s"] for r in runs])}
    trips = [r["breaker_trips"] for r in runs if r["breaker_trips"] is not None]
    out["breaker_trips"] = spread([float(t) for t in trips]) if trips else None
    out["models"] = {}
    for model in runs[0]["models"]:
        figures = {}
        for name in ("real_answers", "requests_per_call", "p50_s", "p99_s"):
            values = [r["models"][model][name] for r in runs if r["models"][model][name] is not None]
            figures[name] = spread(values) if values else None
        out["models"][model] = {"calls": runs[0]["models"][model]["calls"], **figures}
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# OpenRouter mix: a healthy judge beside a truncating reasoning model and a no-provider model",
        "",
        f"Settings: {json.dumps(report['settings'])}. Figures: median over {report['settings']['repeats']} runs "
        "(min-max in brackets); load: `uptime` before each run, in the JSON.",
        "",
        "| client | phase | model | calls | real answers | requests/call | p50 s | p99 s | phase wall s "
        "| breaker opens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(figure: dict[str, float] | None, digits: int = 2) -> str:
        if figure is None:
            return "-"
        return f"{figure['median']:.{digits}f} [{figure['min']:.{digits}f}-{figure['max']:.{digits}f}]"

    for client, phases in report["clients"].items():
        for phase, result in phases.items():
            s = result["summary"]
            for model, m in s["models"].items():
                lines.append(
                    f"| {client} | {phase} | {model} | {m['calls']} | {cell(m['real_answers'], 0)} | "
                    f"{cell(m['requests_per_call'])} | {cell(m['p50_s'])} | {cell(m['p99_s'])} | "
                    f"{cell(s['wall_s'], 1)} | {cell(s['breaker_trips'], 0)} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.2, help="the server's answer latency, s")
    parser.add_argument("--timeout", type=float, default=5.0, help="client timeout per attempt, both clients")
    parser.add_argument("--clients", default="resilient_llm,litellm")
    parser.add_argument("--phases", default="mixed,healthy_only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "openrouter_mix.calls.jsonl").unlink(missing_ok=True)
    report: dict[str, Any] = {"benchmark": "openrouter_mix", "settings": vars(args), "clients": {}}
    for client in args.clients.split(","):
        report["clients"][client] = {}
        for phase in args.phases.split(","):
            runs = []
            for repeat in range(args.repeats):
                load = os.getloadavg()
                run = measure(client, phase, args.latency, args.timeout, args.seed + repeat)
                run["load_1m_5m_15m"] = load
                runs.append(run)
                models = ", ".join(
                    f"{m}: {r['real_answers']}/{r['calls']} real, {r['requests_per_call']:.2f} req/call, "
                    f"p99 {r['p99_s']:.2f} s"
                    for m, r in run["models"].items()
                )
                print(
                    f"{client} {phase} #{repeat}: wall {run['wall_s']:.1f} s, breaker opens {run['breaker_trips']}, "
                    f"load {load[0]:.2f}; {models}",
                    flush=True,
                )
            report["clients"][client][phase] = {"runs": runs, "summary": summary(runs)}
    (RESULTS / "openrouter_mix.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "openrouter_mix.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
