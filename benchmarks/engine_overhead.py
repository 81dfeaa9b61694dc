"""What the engine costs on a clean endpoint: resilient_llm vs a bare httpx.AsyncClient vs LiteLLM, one run.

Every client sends the same calls to the same local server (a separate process, fixed latency) at the same
concurrency; the clients take turns, round after round, so drift on a shared machine hits them all alike.
Throughput and latency percentiles are per client (median over rounds); client CPU is this process's CPU time
per call (the server runs elsewhere). Results: ``benchmarks/results/engine_overhead.json``.

    python -m benchmarks.engine_overhead [--scenarios 0.5:400,0.05:2000] [--concurrency 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

import resilient_llm
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.remote import RemoteFaultServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM would fetch it from the internet

MODEL = "openai/gpt-4o-mini"
KEY = "sk-bench-local-not-a-secret"
RESULTS = Path(__file__).parent / "results"

CallFn = Callable[[str], Awaitable[str]]


async def run_workload(call: CallFn, calls: int, concurrency: int, tag: str) -> dict[str, Any]:
    """``calls`` distinct prompts, at most ``concurrency`` in flight, from one event loop."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    ok = 0

    async def one(i: int) -> None:
        nonlocal ok
        async with gate:
            started = time.perf_counter()
            text = await call(f"{tag} rubric {i}")
            latencies.append((time.perf_counter() - started) * 1e3)
            ok += text.startswith('{"score"')

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    latency = percentiles(latencies)
    return {
        "calls": calls,
        "real_answers": ok,
        "throughput_per_s": calls / wall,
        "p50_ms": latency["p50"],
        "p95_ms": latency["p95"],
        "p99_ms": latency["p99"],
        "client_cpu_ms_per_call": cpu / calls * 1e3,
    }


def bare_httpx(url: str, concurrency: int) -> tuple[CallFn, Callable[[], Awaitable[None]]]:
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency), trust_env=False
    )
    headers = {"Authorization": f"Bearer {KEY}"}

    async def call(prompt: str) -> str:
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
        response = await client.post(f"{url}/chat/completions", json=body, headers=headers, timeout=60)
        return str(response.json()["choices"][0]["message"]["content"])

    return call, client.aclose


def ours() -> CallFn:
    async def call(prompt: str) -> str:
        return (await resilient_llm.acomplete(MODEL, user=prompt, temperature=0)).text

    return call


def litellm_call(url: str) -> CallFn:
    import litellm

    async def call(prompt: str) -> str:
        response = await litellm.acompletion(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            api_base=url,
            api_key=KEY,
            num_retries=5,
        )
        return str(response.choices[0].message.content)

    return call


def measure_scenario(latency: float, calls: int, concurrency: int, rounds: int, with_litellm: bool) -> dict[str, Any]:
    """All clients against one server with the given latency, taking turns for ``rounds`` rounds."""
    with RemoteFaultServer("clean", latency_s=latency) as server:
        resilient_llm.shutdown()
        os.environ.update(OPENAI_API_BASE=server.url)
        clients: dict[str, Callable[[], tuple[CallFn, Callable[[], Awaitable[None]] | None]]] = {
            "httpx": lambda: bare_httpx(server.url, concurrency),
            "resilient_llm": lambda: (ours(), None),
        }
        if with_litellm:
            clients["litellm"] = lambda: (litellm_call(server.url), None)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
        for round_no in range(rounds):
            for name, make in clients.items():

                async def measure(make: Any = make, name: str = name, round_no: int = round_no) -> dict[str, Any]:
                    call, close = make()
                    await run_workload(call, 50, concurrency, f"warm {name} {round_no}")
                    result = await run_workload(call, calls, concurrency, f"{latency} r{round_no}")
                    if close is not None:
                        await close()
                    return result

                # A fresh event loop per client and round, as the trainer's batches have.
                runs[name].append(asyncio.run(measure()))
                rate = runs[name][-1]["throughput_per_s"]
                print(f"latency {latency:g} s, round {round_no + 1}/{rounds}, {name:>14}: {rate:8.1f} calls/s")
        server_stats = server.stats()
    resilient_llm.shutdown()
    summary = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    for row in summary.values():
        row["throughput_vs_httpx"] = row["throughput_per_s"] / summary["httpx"]["throughput_per_s"]
    if with_litellm:
        ratio = summary["resilient_llm"]["throughput_per_s"] / summary["litellm"]["throughput_per_s"]
        summary["resilient_llm"]["throughput_vs_litellm"] = ratio
    return {"latency_s": latency, "calls": calls, "summary": summary, "rounds": runs, "server": server_stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--scenarios",
        default="0.5:400,0.05:2000",
        help="server latency (s) : calls, comma-separated; 0.5 s is near a real judge call, 0.05 s makes CPU the limit",
    )
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-litellm", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_file = RESULTS / "engine_overhead.calls.jsonl"
    log_file.unlink(missing_ok=True)
    os.environ.update(
        OPENAI_API_KEY=KEY,
        OPENROUTER_MAX_CONCURRENT_CALLS=str(args.concurrency),
        RESILIENT_LLM_CACHE="off",  # measure the network path, not the cache
        RESILIENT_LLM_LOG_FILE=str(log_file),
    )
    scenarios = []
    for item in args.scenarios.split(","):
        latency, calls = item.split(":")
        scenarios.append(
            measure_scenario(float(latency), int(calls), args.concurrency, args.rounds, not args.no_litellm)
        )
    report = {
        "benchmark": "engine_overhead",
        "command": "python -m benchmarks.engine_overhead " + " ".join(sys.argv[1:]),
        "settings": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "scenarios": scenarios,
    }
    (RESULTS / "engine_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    print(render_table(scenarios))


def render_table(scenarios: list[dict[str, Any]]) -> str:
    """The Markdown table the README shows."""
    lines = [
        "| server latency | client | calls/s | vs httpx | p50 ms | p99 ms | client CPU ms/call |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario in scenarios:
        for name, row in scenario["summary"].items():
            lines.append(
                f"| {scenario['latency_s'] * 1000:g} ms | {name} | {row['throughput_per_s']:.1f} | "
                f"{row['throughput_vs_httpx']:.3f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                f"{row['client_cpu_ms_per_call']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
