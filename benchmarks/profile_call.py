"""Where the client CPU of one call goes, by layer: py-spy samples this process while the engine answers calls on a
clean local endpoint, and each sample is charged to the innermost layer on its stack.

The same workload as ``benchmarks/engine_overhead.py`` (distinct prompts, a fixed number in flight from one caller
loop, the server in a child process so its CPU is not ours), run under the sampler once per client: through
``resilient_llm.acomplete`` (httpx's transport, then the aiohttp one) and through a bare ``httpx.AsyncClient``,
so the breakdowns sit side by side.
A sample is attributed by walking its stack from the leaf outwards to the first frame that names an owner (a library
or one of our modules, see ``RULES``); stdlib frames (json, asyncio internals, dataclasses) are charged to whoever
called them. Needs ``py-spy`` (``pip install py-spy``; it attaches to this process, which needs ptrace rights).

    python -m benchmarks.profile_call [--calls 3000] [--concurrency 32] [--latency 0.02] [--rate 500]

Results: ``benchmarks/results/profile.json`` and ``profile.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import resilient_llm
from benchmarks.engine_overhead import KEY, bare_httpx, ours, run_workload
from resilient_llm import CacheConfig, Config, HTTPConfig, LimitConfig, LogConfig
from resilient_llm.testing.remote import RemoteFaultServer

RESULTS = Path(__file__).parent / "results"

# (path fragment, function names or None for any, category). The first rule matching a frame, walking from the
# leaf outwards, decides the sample's category. Order matters only between rules that can match the same frame.
RULES: tuple[tuple[str, tuple[str, ...] | None, str], ...] = (
    ("resilient_llm/protocol.py", ("parse_response", "_usage", "_error_response", "parse_retry_after"), "parse"),
    ("resilient_llm/protocol.py", ("request_body",), "request body"),
    ("resilient_llm/protocol.py", None, "front door (validate, build request)"),
    ("resilient_llm/policy/cache.py", None, "cache"),
    ("resilient_llm/layers/cache.py", None, "cache"),
    ("resilient_llm/stores/", None, "cache"),
    ("structlog/", None, "log line"),
    ("resilient_llm/logs.py", None, "log line"),
    ("resilient_llm/redact.py", None, "log line"),
    ("resilient_llm/recorder.py", None, "metrics recorder"),
    ("resilient_llm/layers/observe.py", None, "observe (timing, fields)"),
    ("tenacity/", None, "retry (tenacity)"),
    ("resilient_llm/layers/retry.py", None, "retry (tenacity)"),
    ("resilient_llm/errors.py", None, "retry (tenacity)"),
    ("resilient_llm/layers/breaker.py", None, "breaker"),
    ("resilient_llm/policy/breaker.py", None, "breaker"),
    ("resilient_llm/layers/limit.py", None, "limit"),
    ("resilient_llm/policy/concurrency.py", None, "limit"),
    ("resilient_llm/layers/fallback.py", None, "fallback"),
    ("anyio/", None, "http: anyio (httpcore's socket backend, our cancel scope)"),
    (
        "resilient_llm/endpoints/http.py",
        ("handle", "_wind_down"),
        "http: anyio (httpcore's socket backend, our cancel scope)",
    ),
    ("resilient_llm/endpoints/http.py", None, "http: httpx/httpcore/h11"),
    ("resilient_llm/endpoints/body.py", None, "http: httpx/httpcore/h11"),
    ("httpx/", None, "http: httpx/httpcore/h11"),
    ("httpcore/", None, "http: httpx/httpcore/h11"),
    ("h11/", None, "http: httpx/httpcore/h11"),
    ("aiohttp/", None, "http: aiohttp"),
    ("resilient_llm/endpoints/aiohttp_transport.py", None, "http: aiohttp"),
    ("resilient_llm/engine.py", ("request", "model_name", "_option"), "front door (validate, build request)"),
    ("resilient_llm/engine.py", None, "hop to the engine thread and back"),
    ("resilient_llm/process.py", None, "hop to the engine thread and back"),
    ("resilient_llm/types.py", None, "front door (validate, build request)"),
    ("concurrent/futures/", None, "hop to the engine thread and back"),
    (
        "asyncio/",
        (
            "run_coroutine_threadsafe",
            "wrap_future",
            "_chain_future",
            "_copy_future_state",
            "_set_concurrent_future_state",
            "_call_check_cancel",
            "_call_set_state",
            "call_soon_threadsafe",
            "_write_to_self",
            "_read_from_self",
            "_process_self_data",
        ),
        "hop to the engine thread and back",
    ),
    ("benchmarks/", None, "benchmark harness (caller side)"),
)
# Only when no frame of the stack names an owner: the loop's own work (polling, running callbacks).
GENERIC: tuple[tuple[str, tuple[str, ...] | None, str], ...] = (
    ("selectors.py", None, "event loop: epoll + scheduling"),
    ("asyncio/", None, "event loop: epoll + scheduling"),
    ("uvloop/", None, "event loop: epoll + scheduling"),
)


def categorize(frames: list[str]) -> str:
    """The category of one sample: ``frames`` run from the root to the leaf, as py-spy writes them."""
    for rules in (RULES, GENERIC):
        for frame in reversed(frames):
            name, _, where = frame.partition(" (")
            for fragment, functions, category in rules:
                if fragment in where and (functions is None or name in functions):
                    return category
    return "other"


def thread_of(frames: list[str]) -> str:
    """The caller's thread (the one running the caller's loop), or a background thread: the engine's loop thread
    and the log writer (the engine's loop has no Python frame at its root under uvloop, so they are not told apart)."""
    return "background threads (engine loop, log writer)" if "_bootstrap" in ";".join(frames) else "caller thread"


def read_samples(path: Path) -> list[tuple[list[str], int]]:
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.append((stack.split(";"), int(count)))
    return samples


def breakdown(samples: list[tuple[list[str], int]]) -> dict[str, Any]:
    by_category: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter()
    json_by_category: collections.Counter[str] = collections.Counter()
    owners: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for frames, count in samples:
        category = categorize(frames)
        by_category[category] += count
        owners[category][_short(frames[-1])] += count
        by_thread[thread_of(frames)] += count
        if any("json/" in f and ("encoder" in f or "decoder" in f or "__init__" in f) for f in frames):
            json_by_category[category] += count
    total = sum(by_category.values())
    return {
        "samples": total,
        "by_category": dict(by_category.most_common()),
        "by_thread": dict(by_thread.most_common()),
        "stdlib_json_by_category": dict(json_by_category.most_common()),
        "top_leaves": {category: dict(counter.most_common(8)) for category, counter in owners.items()},
    }


def _short(frame: str) -> str:
    """``function (package/module.py)`` without the line number or the site-packages prefix."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


class Sampler:
    """py-spy attached to this process for the life of the ``with`` block."""

    def __init__(self, output: Path, rate: int) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        argv = [binary, "record", "--pid", str(os.getpid()), "--rate", str(rate), "--format", "raw"]
        argv += ["--nonblocking", "--threads", "--output", str(output)]
        self._argv = argv

    def __enter__(self) -> Sampler:
        self._process = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # attached by then
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._process.send_signal(signal.SIGINT)
        _, err = self._process.communicate(timeout=60)
        if self._process.returncode not in (0, -signal.SIGINT):
            raise RuntimeError(f"py-spy failed: {err.strip()}")


def profile_client(
    name: str, make: Callable[[], tuple[Any, Callable[[], Awaitable[None]] | None]], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    async def warm() -> None:
        call, close = make()
        await run_workload(call, 200, args.concurrency, f"warm {name}")
        if close is not None:
            await close()

    asyncio.run(warm())
    result: dict[str, Any] = {}

    async def measured() -> None:
        call, close = make()
        result.update(await run_workload(call, args.calls, args.concurrency, f"profile {name}"))
        if close is not None:
            await close()

    with Sampler(out, args.rate):
        cpu = time.process_time()
        asyncio.run(measured())
        cpu = time.process_time() - cpu
    samples = read_samples(out)
    report = breakdown(samples)
    report["run"] = result
    report["cpu_ms_per_call_under_sampler"] = cpu / args.calls * 1e3
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"{report['settings']['calls']} calls, {report['settings']['concurrency']} in flight, server latency "
        f"{report['settings']['latency'] * 1000:g} ms, py-spy at {report['settings']['rate']} Hz (CPU samples only).",
        "",
    ]
    for name, data in report["clients"].items():
        per_call = data["run"]["client_cpu_ms_per_call"]
        lines += [
            f"### {name}: {per_call:.2f} ms CPU per call (under the sampler), {data['samples']} samples",
            "",
            "| where | share | ms per call | of which stdlib json |",
            "| --- | --- | --- | --- |",
        ]
        total = data["samples"] or 1
        for category, count in data["by_category"].items():
            share = count / total
            json_share = data["stdlib_json_by_category"].get(category, 0) / total
            lines.append(
                f"| {category} | {share:.1%} | {share * per_call:.3f} | {json_share * per_call:.3f} |".replace(
                    "| 0.000 |", "| |"
                )
            )
        lines.append("")  # by_thread stays in the JSON only: py-spy's thread split under uvloop is not reliable
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--clients", default="resilient_llm,resilient_llm_aiohttp,httpx")
    parser.add_argument("--tag", default="", help="results go to profile<tag>.json / .md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rllm-profile-"))
    report: dict[str, Any] = {
        "benchmark": "profile_call",
        "command": "python -m benchmarks.profile_call " + " ".join(sys.argv[1:]),
        "settings": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "clients": {},
    }
    try:
        with RemoteFaultServer("clean", latency_s=args.latency) as server:
            config = Config(
                http=HTTPConfig(api_key=KEY, base_url=server.url, ignore_proxy=True),
                limit=LimitConfig(mode="fixed", max_concurrent=args.concurrency),
                cache=CacheConfig(mode="off"),
                log=LogConfig(file=str(work / "calls.jsonl")),
            )
            configs = {
                "resilient_llm": config,
                "resilient_llm_aiohttp": config.replace(http={"transport": "aiohttp"}),
            }
            makers: dict[str, Callable[[], tuple[Any, Callable[[], Awaitable[None]] | None]]] = {
                "resilient_llm": lambda: (ours(), None),
                "resilient_llm_aiohttp": lambda: (ours(), None),
                "httpx": lambda: bare_httpx(server.url, args.concurrency),
            }
            for name in args.clients.split(","):
                if name in configs:
                    resilient_llm.configure(configs[name])
                report["clients"][name] = profile_client(name, makers[name], args, work / f"{name}.txt")
                print(f"{name}: {json.dumps(report['clients'][name]['by_category'])}")
            resilient_llm.configure(None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"profile{args.tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"profile{args.tag}.md").write_text(render(report) + "\n")
    print(render(report))


if __name__ == "__main__":
    main()
