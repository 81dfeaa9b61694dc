"""``resilient-llm bench``: the same seeded workload through LiteLLM (as the trainer calls it), resilient_llm and a
bare httpx client, against the embedded fault server, in two calling patterns; a table, JSON, logs and plots.

Profiles: clean, flaky, ratelimit, outage (see ``resilient_llm.testing.fault_server``). Patterns: ``gather`` (one
event loop, ``asyncio.gather``) and ``trainer`` (a batch ``asyncio.run`` whose rollouts each run their own
``asyncio.run`` on a thread-pool worker). Every call is accounted for: a real answer, a neutral/fallback answer, or
an exception.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resilient_llm.cli.bench_report import markdown_table, plot, render_table
from resilient_llm.cli.bench_workload import LOCAL_KEY, Tally, client_environment, run_cell
from resilient_llm.cli.stderr_capture import StderrCapture, summary
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.profiles import PROFILES
from resilient_llm.testing.remote import RemoteFaultServer

CLIENTS = ("litellm", "resilient_llm", "resilient_llm+fallback", "resilient_llm+hedge", "httpx")
DEFAULT_PROFILES = ("clean", "flaky", "ratelimit", "outage")  # add "hangs" for hedging on vs off
PATTERNS = ("gather", "trainer")
RETRY_AFTER_S = 0.5
# The outage profile's calls are spread over this long, to cover its window and the recovery after it.
OUTAGE_SPAN_S, QUICK_OUTAGE_SPAN_S = 10.0, 5.0


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
