"""``resilient-llm bench``: the same seeded workload through LiteLLM (as the trainer calls it), resilient_llm and a
bare httpx client, against the embedded fault server, in two calling patterns; a table, JSON, logs and plots.

Profiles: clean, flaky, ratelimit, outage (see ``resilient_llm.testing.fault_server``). Patterns: ``gather`` (one
event loop, ``asyncio.gather``) and ``trainer`` (a batch ``asyncio.run`` whose rollouts each run their own
``asyncio.run`` on a thread-pool worker). Every call is accounted for: a real answer, a neutral/fallback answer, or
an exception.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from resilient_llm import engine as engine_module
from resilient_llm.cli.stderr_capture import StderrCapture, summary
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.profiles import PROFILES
from resilient_llm.testing.remote import RemoteFaultServer

MODEL = "openai/gpt-4o-mini"
LOCAL_KEY = "sk-bench-local-not-a-secret"
CLIENTS = ("litellm", "resilient_llm", "resilient_llm+fallback", "resilient_llm+hedge", "httpx")
DEFAULT_PROFILES = ("clean", "flaky", "ratelimit", "outage")  # add "hangs" for hedging on vs off
PATTERNS = ("gather", "trainer")
CALLS_PER_ROLLOUT = 4
CLIENT_TIMEOUT_S = 3.0  # per attempt, both clients: a "hang" fault costs this much
RETRY_AFTER_S = 0.5
# The outage profile's calls are spread over this long, to cover its window and the recovery after it.
OUTAGE_SPAN_S, QUICK_OUTAGE_SPAN_S = 10.0, 5.0

CallFn = Callable[[str], Awaitable[str]]


def is_real(text: str, live: bool) -> bool:
    """A real answer: from the local server, its deterministic score object; live, any non-empty text."""
    return bool(text) if live else text.startswith('{"score"')


def make_call(client: str, url: str, key: str) -> tuple[CallFn, Callable[[], Awaitable[None]] | None]:
    """The client's call function in the calling event loop, and how to close it there."""
    if client == "httpx":
        import httpx

        http = httpx.AsyncClient(trust_env=False)  # as a user writes it: httpx's default pool of 100

        async def bare(prompt: str) -> str:
            body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
            headers = {"Authorization": f"Bearer {key}"}
            response = await http.post(f"{url}/chat/completions", json=body, headers=headers, timeout=CLIENT_TIMEOUT_S)
            return str(response.json()["choices"][0]["message"]["content"])

        return bare, http.aclose
    from resilient_llm.dropin.run_utils import run_litellm_async

    async def trainer_call(prompt: str) -> str:
        return await run_litellm_async(MODEL, prompt, "You are a judge.")

    return trainer_call, None


@contextmanager
def client_environment(
    client: str, url: str, key: str, log_file: Path, other_provider: str | None = None
) -> Iterator[None]:
    """The env flags a user sets: USE_OPENROUTER_DIRECT on for us, off for LiteLLM; everything else default, but
    ``resilient_llm+fallback`` also names another provider for its LiteLLM fallback route."""
    values = {
        "USE_OPENROUTER_DIRECT": "true" if client.startswith("resilient_llm") else "false",
        "OPENAI_API_KEY": key,
        "OPENAI_API_BASE": url,
        "LITELLM_DEFAULT_TIMEOUT": str(CLIENT_TIMEOUT_S),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "RESILIENT_LLM_LOG_FILE": str(log_file),
        "RESILIENT_LLM_CACHE": "off",  # measure the network path, not the cache
    }
    if client == "resilient_llm+hedge":
        values["RESILIENT_LLM_HEDGE"] = "true"
    if other_provider is not None:
        values |= {
            "RESILIENT_LLM_FALLBACK_MODEL": MODEL,
            "RESILIENT_LLM_FALLBACK_BASE_URL": other_provider,
            "FALLBACK_API_KEY": key,
        }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    engine_module.shutdown()
    try:
        yield
    finally:
        engine_module.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Tally:
    """Per-call records, from any thread."""

    def __init__(self, advance: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self.latencies: list[float] = []
        self.real = self.other = self.exceptions = 0
        self.exception_kinds: dict[str, int] = {}
        self._advance = advance

    async def measure(self, call: CallFn, prompt: str, live: bool) -> None:
        started = time.perf_counter()
        try:
            text = await call(prompt)
        except Exception as exc:
            with self._lock:
                self.exceptions += 1
                name = type(exc).__name__
                self.exception_kinds[name] = self.exception_kinds.get(name, 0) + 1
        else:
            with self._lock:
                self.latencies.append(time.perf_counter() - started)
                if is_real(text, live):
                    self.real += 1
                else:
                    self.other += 1
        self._advance()


def run_cell(
    client: str,
    pattern: str,
    url: str,
    key: str,
    calls: int,
    concurrency: int,
    pace_s: float,
    tag: str,
    live: bool,
    tally: Tally,
) -> float:
    """Run one cell's workload; returns wall seconds. ``pace_s`` > 0 spreads call starts over that many seconds."""
    prompts = [f"{tag} rubric {i}" for i in range(calls)]
    interval = pace_s / calls if pace_s else 0.0
    began = time.perf_counter()

    async def paced(call: CallFn, index: int, gate: asyncio.Semaphore | None) -> None:
        if interval:
            await asyncio.sleep(max(0.0, began + index * interval - time.perf_counter()))
        if gate is None:
            await tally.measure(call, prompts[index], live)
        else:
            async with gate:
                await tally.measure(call, prompts[index], live)

    async def one_loop(indices: range, limit: int | None) -> None:
        call, close = make_call(client, url, key)
        gate = asyncio.Semaphore(limit) if limit else None
        await asyncio.gather(*(paced(call, i, gate) for i in indices))
        if close is not None:
            await close()

    if pattern == "gather":
        asyncio.run(one_loop(range(calls), concurrency))
    else:
        rollouts = [range(i, min(i + CALLS_PER_ROLLOUT, calls)) for i in range(0, calls, CALLS_PER_ROLLOUT)]

        async def batch() -> None:
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(max(1, concurrency // CALLS_PER_ROLLOUT)) as pool:
                await asyncio.gather(*(loop.run_in_executor(pool, asyncio.run, one_loop(r, None)) for r in rollouts))

        asyncio.run(batch())
    return time.perf_counter() - began


def cell_log(out: Path, profile: str, client: str, pattern: str) -> Path:
    """Where one cell's call lines go: one file per cell, so ``stats --compare`` takes any two of them."""
    return out / "calls" / f"{profile}.{client}.{pattern}.jsonl"


def measure(
    profile: str, client: str, pattern: str, args: argparse.Namespace, log_file: Path, advance: Callable[[], None]
) -> dict[str, Any]:
    """One profile x client x pattern cell, against its own fresh server (or the live endpoint)."""
    live = args.base_url is not None
    pace = (QUICK_OUTAGE_SPAN_S if args.quick else OUTAGE_SPAN_S) if profile == "outage" and not live else 0.0
    tally = Tally(advance)
    tag = f"seed{args.seed} {profile} {client} {pattern}"

    def run(url: str, key: str, other_provider: str | None = None) -> tuple[float, float]:
        with client_environment(client, url, key, log_file, other_provider):
            cpu = time.process_time()
            wall = run_cell(client, pattern, url, key, args.calls, args.concurrency, pace, tag, live, tally)
            return wall, time.process_time() - cpu

    server_stats: dict[str, Any] | None = None
    if live:
        wall, cpu = run(args.base_url, os.environ.get("OPENAI_API_KEY", ""))
    else:
        server = RemoteFaultServer(
            profile, seed=args.seed, latency_s=args.latency, retry_after_s=RETRY_AFTER_S, hang_s=30
        )
        with contextlib.ExitStack() as stack:
            srv = stack.enter_context(server)
            other = None
            if client == "resilient_llm+fallback":
                other = stack.enter_context(RemoteFaultServer("clean", latency_s=args.latency)).url
            wall, cpu = run(srv.url, LOCAL_KEY, other)
            server_stats = srv.stats()
    latency = percentiles([x * 1e3 for x in tally.latencies])
    return {
        "profile": profile,
        "client": client,
        "pattern": pattern,
        "calls": args.calls,
        "real_answers": tally.real,
        "neutral": tally.other,
        "exceptions": tally.exceptions,
        "exception_kinds": tally.exception_kinds,
        "accounted": tally.real + tally.other + tally.exceptions == args.calls,
        "success_pct": 100.0 * tally.real / args.calls,
        "latency_ms": latency,
        "latencies_ms": sorted(round(x * 1e3, 3) for x in tally.latencies),
        "throughput_per_s": args.calls / wall,
        "wall_s": wall,
        "client_cpu_ms_per_call": cpu / args.calls * 1e3,
        "server_requests_per_call": server_stats["requests"] / args.calls if server_stats else None,
        "retry_after_violations": server_stats["retry_after_violations"] if server_stats else None,
        "server": server_stats,
        "calls_log": str(log_file),
    }


def cells(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    out = []
    for profile in args.profiles:
        for client in args.clients:
            if client == "httpx" and profile != "clean" and args.base_url is None:
                continue  # the bare client is the ceiling on clean; it has no answer to faults
            if client == "resilient_llm+fallback":
                if profile == "outage" and args.base_url is None:  # where a second provider makes a difference
                    out.append((profile, client, args.patterns[0]))
                continue
            if client == "resilient_llm+hedge":
                if profile == "hangs" or args.base_url is not None:  # where stragglers are
                    out += [(profile, client, pattern) for pattern in args.patterns]
                continue
            out += [(profile, client, pattern) for pattern in args.patterns]
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="resilient-llm bench", show_lines=False)
    for name in ("profile", "client", "pattern", "calls", "real", "neutral", "exceptions", "success %"):
        table.add_column(name, justify="right" if name not in ("profile", "client", "pattern") else "left")
    for name in ("p50 ms", "p95 ms", "p99 ms", "max ms", "calls/s", "req/call", "RA viol.", "cpu ms/call"):
        table.add_column(name, justify="right")
    for r in rows:
        lat = r["latency_ms"]
        table.add_row(
            r["profile"],
            r["client"],
            r["pattern"],
            str(r["calls"]),
            str(r["real_answers"]),
            str(r["neutral"]),
            str(r["exceptions"]),
            f"{r['success_pct']:.1f}",
            _ms(lat["p50"]),
            _ms(lat["p95"]),
            _ms(lat["p99"]),
            _ms(lat["max"]),
            f"{r['throughput_per_s']:.1f}",
            "-" if r["server_requests_per_call"] is None else f"{r['server_requests_per_call']:.2f}",
            "-" if r["retry_after_violations"] is None else str(r["retry_after_violations"]),
            f"{r['client_cpu_ms_per_call']:.2f}",
        )
    return table


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| profile | client | pattern | real | neutral | exceptions | success % | p50 ms | p99 ms | "
    head += "calls/s | requests/call | Retry-After violations |"
    lines = [head, "|" + " --- |" * 12]
    for r in rows:
        lat = r["latency_ms"]
        rpc = "-" if r["server_requests_per_call"] is None else f"{r['server_requests_per_call']:.2f}"
        lines.append(
            f"| {r['profile']} | {r['client']} | {r['pattern']} | {r['real_answers']} | {r['neutral']} | "
            f"{r['exceptions']} | {r['success_pct']:.1f} | {_ms(lat['p50'])} | {_ms(lat['p99'])} | "
            f"{r['throughput_per_s']:.1f} | {rpc} | {r['retry_after_violations']} |"
        )
    return "\n".join(lines)


_COLORS = {"resilient_llm": "C0", "litellm": "C1"}


def plot(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Latency CDF per client per profile, and success per profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    profiles = sorted({r["profile"] for r in rows}, key=list(PROFILES).index)
    figure, axes = plt.subplots(1, len(profiles), figsize=(4.5 * len(profiles), 3.8), squeeze=False)
    for ax, profile in zip(axes[0], profiles, strict=True):
        for r in (r for r in rows if r["profile"] == profile):
            values = r["latencies_ms"]
            if values:
                ax.plot(
                    values, [(i + 1) / r["calls"] for i in range(len(values))], label=f"{r['client']}/{r['pattern']}"
                )
        ax.set_xscale("log")
        ax.set_title(f"{profile}: latency CDF")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("share of calls returned")
        ax.legend(fontsize=7)
    figure.tight_layout()
    written.append(out_dir / "bench_latency_cdf.png")
    figure.savefig(written[-1], dpi=90)
    plt.close(figure)

    figure, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['profile']}\n{r['client']}\n{r['pattern']}" for r in rows]
    ax.bar(
        range(len(rows)),
        [r["success_pct"] for r in rows],
        color=[
            "C0" if r["client"].startswith("resilient_llm") else "C1" if r["client"] == "litellm" else "C2"
            for r in rows
        ],
    )
    ax.set_xticks(range(len(rows)), labels, fontsize=6)
    ax.set_ylabel("real answers, %")
    ax.set_ylim(0, 105)
    ax.set_title("success per profile (blue: resilient_llm, orange: LiteLLM, green: bare httpx)")
    figure.tight_layout()
    written.append(out_dir / "bench_success.png")
    figure.savefig(written[-1], dpi=90)
    plt.close(figure)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profiles", default=",".join(DEFAULT_PROFILES), help="comma-separated, of: " + ", ".join(PROFILES)
    )
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated: " + ", ".join(CLIENTS))
    parser.add_argument("--patterns", default=",".join(PATTERNS), help="comma-separated: " + ", ".join(PATTERNS))
    parser.add_argument("--calls", type=int, default=None, help="calls per cell (default 160, --quick 40)")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight from the caller's side")
    parser.add_argument("--latency", type=float, default=0.05, help="local server latency per answer, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run under a minute")
    parser.add_argument("--out", default="benchmarks/results", help="directory for JSON, logs and plots")
    parser.add_argument("--base-url", default=None, help="a live endpoint instead of the local server (key from env)")
    parser.add_argument("--no-plots", action="store_true")


def parse_list(raw: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    items = [x.strip() for x in raw.split(",") if x.strip()]
    unknown = [x for x in items if x not in allowed]
    if not items or unknown:
        raise SystemExit(f"{flag}={raw!r} is not valid: expected a comma-separated list of {', '.join(allowed)}")
    return items


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    args.profiles = parse_list(args.profiles, tuple(PROFILES), "--profiles")
    args.clients = parse_list(args.clients, CLIENTS, "--clients")
    args.patterns = parse_list(args.patterns, PATTERNS, "--patterns")
    if args.quick and args.patterns == list(PATTERNS):
        args.patterns = ["gather"]  # the smoke run: one pattern, fewer calls
    args.calls = args.calls or (40 if args.quick else 160)
    if args.base_url and not os.environ.get("OPENAI_API_KEY"):
        raise SystemExit("--base-url needs the endpoint's key in OPENAI_API_KEY")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calls").mkdir(exist_ok=True)
    for old_log in (out / "calls").glob("*.jsonl"):
        old_log.unlink()
    plan = cells(args)
    if "litellm" in args.clients:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else LiteLLM fetches it from the internet
        import litellm  # imported once up front, so its start-up does not count against its first cell

        litellm.suppress_debug_info = True  # its "Give Feedback" banner on every failure would bury the table
    console = Console() if sys.stdout.isatty() else Console(width=200)
    rows = []
    # LiteLLM's tracebacks (its logging worker under the trainer's asyncio.run per rollout) go to a file, not over
    # the table; Rich must not route sys.stderr to the console meanwhile.
    noise = StderrCapture(out / "bench.stderr.log")
    with noise, Progress(console=console, transient=True, redirect_stderr=False) as progress:
        task = progress.add_task("bench", total=len(plan) * args.calls)
        for profile, client, pattern in plan:
            progress.update(task, description=f"{profile} / {client} / {pattern}")
            log_file = cell_log(out, profile, client, pattern)
            rows.append(measure(profile, client, pattern, args, log_file, lambda: progress.advance(task)))
    report = {
        "benchmark": "bench",
        "command": "resilient-llm bench "
        + " ".join(
            f"--{k.replace('_', '-')} {','.join(v) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k not in ("func", "no_plots", "quick", "base_url", "out")
        ),
        "live_endpoint": args.base_url is not None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "cells": rows,
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(markdown_table(rows) + "\n")
    console.print(render_table(rows))
    for line in summary(noise.path):
        console.print(line, style=None if line.startswith("LiteLLM") else "bold red", highlight=False)
    if not args.no_plots:
        for path in plot(rows, out):
            console.print(f"plot: {path}")
    console.print(f"results: {out / 'bench.json'}; call logs, one per cell: {out / 'calls'}/")
    noise.until_exit()
    return 0
