"""The lean engine's acceptance numbers, side by side in one run (issue 14).

1. ``overhead``: client CPU per call and throughput, 20 ms answers, 1000 calls, 32 in flight, a fixed cap of 32:
   a bare ``httpx.AsyncClient`` vs resilient_llm on its defaults (uvloop and orjson when installed, httpx's
   transport), on the asyncio loop (what uvloop is worth), and with ``transport="aiohttp"``. The clients take turns;
   the order flips every repeat (2 cores shared with other work: drift must not favour one client).
2. ``queued``: 10,000 calls queued at once through the drop-in's ``run_litellm_async`` (50 ms answers), each repeat
   in a fresh process: peak RSS and whether every call was answered.
3. ``cache_hit``: disk hit latency through ``acomplete`` and ``complete`` (2,000 hits on 1,000 entries).
4. ``json``: what orjson saves per call on the three JSON jobs of a call (body out, answer in, log line).

    python -m benchmarks.lean [--repeats 3] [--calls 1000] [--queued 10000] [--parts overhead,queued,cache_hit,json]

Results: ``benchmarks/results/lean.json`` and ``lean.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.cache import fill, hit_latencies, latency_ms
from benchmarks.engine_overhead import KEY, MODEL, bare_httpx, run_workload
from resilient_llm import CacheConfig, Config, Engine, HTTPConfig, LimitConfig, LogConfig, RuntimeConfig, runtime
from resilient_llm.testing.remote import RemoteFaultServer

RESULTS = Path(__file__).parent / "results"
CallFn = Callable[[str], Awaitable[str]]


def engine_config(url: str, log_file: str, **http: Any) -> Config:
    return Config(
        http=HTTPConfig(api_key=KEY, base_url=url, ignore_proxy=True, **http),
        limit=LimitConfig(mode="fixed", max_concurrent=32),
        cache=CacheConfig(mode="off"),
        log=LogConfig(file=log_file),
    )


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def overhead(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every client against one 20 ms server, in turns; ratios are to bare httpx in the same repeat."""
    variants: dict[str, dict[str, Any]] = {
        "resilient_llm": {},
        "resilient_llm (asyncio loop)": {"loop": "asyncio"},
        "resilient_llm (aiohttp transport)": {"transport": "aiohttp"},
        "resilient_llm (aiohttp transport + asyncio loop)": {"transport": "aiohttp", "loop": "asyncio"},
    }
    names = ["httpx", *(name for name in variants if args.clients == "all" or name in args.clients.split(","))]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with RemoteFaultServer("clean", latency_s=args.latency) as server:
        for repeat in range(args.repeats):
            order = names if repeat % 2 == 0 else names[::-1]
            for name in order:
                engine: Engine | None = None
                if name == "httpx":
                    make: Callable[[], tuple[CallFn, Callable[[], Awaitable[None]] | None]] = lambda: bare_httpx(  # noqa: E731
                        server.url, args.concurrency
                    )
                else:
                    options = dict(variants[name])
                    loop = options.pop("loop", "auto")
                    config = engine_config(server.url, str(work / "overhead.jsonl"), **options)
                    engine = Engine(config.replace(runtime=RuntimeConfig(loop=loop)))

                    async def call(prompt: str, engine: Engine = engine) -> str:
                        return (await engine.acomplete(MODEL, user=prompt, temperature=0)).text

                    make = lambda call=call: (call, None)  # noqa: E731

                async def measure(make: Any = make, name: str = name, repeat: int = repeat) -> dict[str, Any]:
                    call, close = make()
                    await run_workload(call, 100, args.concurrency, f"warm {name} {repeat}")
                    result = await run_workload(call, args.calls, args.concurrency, f"{name} {repeat}")
                    if close is not None:
                        await close()
                    return result

                result = asyncio.run(measure())  # a fresh caller loop per client and repeat, as a trainer's batch
                if engine is not None:
                    engine.close()
                runs[name].append(result)
                print(
                    f"overhead repeat {repeat + 1}: {name:>34}: {result['client_cpu_ms_per_call']:.2f} ms CPU/call, "
                    f"{result['throughput_per_s']:.0f} calls/s, {result['real_answers']}/{args.calls} answered",
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for name in names:
        cpu = [r["client_cpu_ms_per_call"] for r in runs[name]]
        rate = [r["throughput_per_s"] for r in runs[name]]
        row: dict[str, Any] = {"cpu_ms_per_call": spread(cpu), "throughput_per_s": spread(rate)}
        row["answered"] = min(r["real_answers"] for r in runs[name])
        if name != "httpx":
            base = runs["httpx"]
            row["cpu_vs_httpx"] = spread(
                [
                    r["client_cpu_ms_per_call"] / b["client_cpu_ms_per_call"]
                    for r, b in zip(runs[name], base, strict=True)
                ]
            )
            row["throughput_vs_httpx"] = spread(
                [r["throughput_per_s"] / b["throughput_per_s"] for r, b in zip(runs[name], base, strict=True)]
            )
        summary[name] = row
    return {"summary": summary, "runs": runs}


QUEUED_CHILD = """
import asyncio, json, os, resource, sys, time
from open_instruct.search_rewards.utils import run_utils
import resilient_llm
calls = int(sys.argv[1])
async def main():
    prompts = [f"queued {i}" for i in range(calls)]
    return await asyncio.gather(*(run_utils.run_litellm_async("openai/gpt-4o-mini", p) for p in prompts))
started = time.perf_counter()
answers = asyncio.run(main())
wall = time.perf_counter() - started
resilient_llm.shutdown()
print(json.dumps({"calls": calls, "answered": sum(a.startswith('{"score"') for a in answers), "wall_s": wall,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def queued(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Each repeat in a fresh process (peak RSS is per process): the default transport, then aiohttp."""
    variants = {"resilient_llm": "httpx", "resilient_llm (aiohttp transport)": "aiohttp"}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with RemoteFaultServer("clean", latency_s=0.05) as server:
        for repeat in range(args.repeats):
            order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
            for name in order:
                env = os.environ | {
                    "USE_OPENROUTER_DIRECT": "true",
                    "OPENAI_API_KEY": KEY,
                    "OPENAI_API_BASE": server.url,
                    "RESILIENT_LLM_CACHE": "off",
                    "RESILIENT_LLM_LOG_FILE": str(work / "queued.jsonl"),
                    "RESILIENT_LLM_CONCURRENCY": "fixed",
                    "OPENROUTER_MAX_CONCURRENT_CALLS": "32",
                    "RESILIENT_LLM_HTTP_TRANSPORT": variants[name],
                }
                done = subprocess.run(
                    [sys.executable, "-c", QUEUED_CHILD, str(args.queued)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=900,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[name].append(result)
                print(f"queued repeat {repeat + 1}: {name:>34}: {result}", flush=True)
    summary = {
        name: {
            "peak_rss_mb": spread([r["peak_rss_mb"] for r in rs]),
            "wall_s": spread([r["wall_s"] for r in rs]),
            "all_answered": all(r["answered"] == r["calls"] for r in rs),
        }
        for name, rs in runs.items()
    }
    return {"summary": summary, "runs": runs}


def cache_hit(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    async_p50: list[float] = []
    sync_p50: list[float] = []
    rows: list[dict[str, Any]] = []
    with RemoteFaultServer("clean") as server:
        config = engine_config(server.url, "off").replace(cache={"mode": "read-write", "directory": str(work / "c")})
        with Engine(config) as engine:
            asyncio.run(fill(engine, "hit", 1000))
            for _ in range(args.repeats):
                on_async = latency_ms(asyncio.run(hit_latencies(engine, "hit", 1000, 2000)))
                samples = []
                for n in range(2000):
                    started = time.perf_counter()
                    result = engine.complete(MODEL, user=f"hit {(n * 7919) % 1000}", temperature=0)
                    samples.append(time.perf_counter() - started)
                    assert result.cache == "hit", result
                on_sync = latency_ms(samples)
                rows.append({"acomplete": on_async, "complete": on_sync})
                async_p50.append(float(on_async["p50_ms"] or 0))
                sync_p50.append(float(on_sync["p50_ms"] or 0))
                print(f"cache hit: acomplete {on_async}, complete {on_sync}", flush=True)
    return {"summary": {"acomplete_p50_ms": spread(async_p50), "complete_p50_ms": spread(sync_p50)}, "runs": rows}


def json_costs(args: argparse.Namespace) -> dict[str, Any]:
    """Microseconds per call for each JSON job, orjson vs the standard library (skipped without orjson)."""
    from resilient_llm.protocol import parse_response, request_body
    from resilient_llm.types import ChatRequest

    if runtime.orjson is None:
        return {"skipped": "orjson is not installed"}
    request = ChatRequest(
        MODEL,
        ({"role": "system", "content": "You are a judge." * 20}, {"role": "user", "content": "x" * 4000}),
        temperature=0,
    )
    answer = json.dumps(
        {
            "id": "gen-1",
            "model": MODEL,
            "choices": [{"message": {"role": "assistant", "content": '{"score": 2}' * 20}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 60, "total_tokens": 1260, "cost": 0.0002},
        }
    ).encode()
    line = {
        "event": "llm_call",
        "level": "info",
        "timestamp": "2026-01-01T00:00:00Z",
        "call_id": 1,
        "model": MODEL,
        "outcome": "ok",
        "latency_ms": 21.5,
        "route": "openrouter",
        "answered_by": MODEL,
        "attempts": 1,
        "failures": [],
        "prompt_tokens": 1200,
        "completion_tokens": 60,
        "cost": 0.0002,
        "response_id": "gen-1",
        "cache": None,
        "cache_key": None,
        "waited_s": 0.0,
        "limit": 32,
    }
    jobs: dict[str, Callable[[], object]] = {
        "request body": lambda: runtime.dumps(request_body(request)),
        "answer parsing": lambda: parse_response(200, {}, answer, request),
        "log line": lambda: runtime.log_line(line),
    }
    saved = runtime.orjson
    table: dict[str, dict[str, float]] = {}
    for name, job in jobs.items():
        times: dict[str, list[float]] = {"orjson": [], "json": []}
        for _ in range(args.repeats):
            for lib in ("orjson", "json"):
                runtime.orjson = saved if lib == "orjson" else None
                times[lib].append(min(timeit.repeat(job, number=2000, repeat=5)) / 2000 * 1e6)
        runtime.orjson = saved
        table[name] = {f"{lib}_us": statistics.median(values) for lib, values in times.items()}
        print(f"json {name}: {table[name]}", flush=True)
    return {"summary": table}


def render(report: dict[str, Any]) -> str:
    lines = [f"Command: `{report['command']}` ({report['machine']})", ""]
    if "overhead" in report:
        s = report["settings"]
        lines += [
            f"### Client CPU per call: {s['latency'] * 1000:g} ms answers, {s['calls']} calls, {s['concurrency']} in "
            f"flight, fixed cap 32; median (min-max) of {s['repeats']} repeats",
            "",
            "| client | CPU ms/call | vs bare httpx (same repeat) | calls/s | throughput vs httpx |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, row in report["overhead"]["summary"].items():
            cpu, rate = row["cpu_ms_per_call"], row["throughput_per_s"]
            ratio = row.get("cpu_vs_httpx")
            tput = row.get("throughput_vs_httpx")
            lines.append(
                f"| {name} | {_mm(cpu, '.2f')} | {_mm(ratio, '.2f', 'x') if ratio else '1'} | {_mm(rate, '.0f')} | "
                f"{_mm(tput, '.2f', 'x') if tput else '1'} |"
            )
        lines.append("")
    if "queued" in report:
        lines += [
            f"### {report['settings']['queued']:,} calls queued at once through run_litellm_async, 50 ms answers",
            "",
            "| client | peak RSS MB | wall s | all answered |",
            "| --- | --- | --- | --- |",
        ]
        for name, row in report["queued"]["summary"].items():
            lines.append(
                f"| {name} | {_mm(row['peak_rss_mb'], '.0f')} | {_mm(row['wall_s'], '.1f')} | {row['all_answered']} |"
            )
        lines.append("")
    if "cache_hit" in report:
        row = report["cache_hit"]["summary"]
        lines += [
            "### Disk cache hit, p50 ms (2,000 hits on 1,000 entries)",
            "",
            f"acomplete {_mm(row['acomplete_p50_ms'], '.3f')}, complete {_mm(row['complete_p50_ms'], '.3f')}",
            "",
        ]
    if "json" in report and "summary" in report["json"]:
        lines += ["### JSON per call, µs (orjson vs json)", "", "| job | orjson | json |", "| --- | --- | --- |"]
        for name, row in report["json"]["summary"].items():
            lines.append(f"| {name} | {row['orjson_us']:.1f} | {row['json_us']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def _mm(row: dict[str, float], spec: str, unit: str = "") -> str:
    return f"{row['median']:{spec}}{unit} ({row['min']:{spec}}-{row['max']:{spec}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--parts", default="overhead,queued,cache_hit,json")
    parser.add_argument("--clients", default="all", help="overhead: which resilient_llm variants beside bare httpx")
    parser.add_argument("--tag", default="", help="results go to lean<tag>.json / .md")
    args = parser.parse_args()
    parts = args.parts.split(",")
    report: dict[str, Any] = {
        "benchmark": "lean",
        "command": "python -m benchmarks.lean " + " ".join(sys.argv[1:]),
        "settings": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1m": os.getloadavg()[0]},
        "runtime": {"uvloop": runtime.uvloop is not None, "json": runtime.JSON},
    }
    with tempfile.TemporaryDirectory(prefix="rllm-lean-") as tmp:
        work = Path(tmp)
        if "overhead" in parts:
            report["overhead"] = overhead(args, work)
        if "queued" in parts:
            report["queued"] = queued(args, work)
        if "cache_hit" in parts:
            report["cache_hit"] = cache_hit(args, work)
        if "json" in parts:
            report["json"] = json_costs(args)
    report["machine"]["load_1m_after"] = os.getloadavg()[0]
    report["machine"]["peak_rss_mb_harness"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"lean{args.tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"lean{args.tag}.md").write_text(render(report) + "\n")
    print(render(report))


if __name__ == "__main__":
    main()
