"""``resilient-llm bench``: the same seeded workload through LiteLLM (as the trainer calls it), resilient_llm and a
bare httpx client, against the embedded fault server, in two calling patterns; a table, JSON, logs and plots.

Profiles: clean, flaky, ratelimit, outage, ... (see ``resilient_llm.testing.profiles``). Patterns: ``gather`` (one
event loop, ``asyncio.gather``) and ``trainer`` (a batch ``asyncio.run`` whose rollouts each run their own
``asyncio.run`` on a thread-pool worker). Every call is accounted for: a real answer, a neutral/fallback answer, or
an exception.

A training step waits for its slowest judge call, so each cell's wall time is a judge phase's, and the ``step``
scenario has a real step's shape: 320 calls, 32 in flight (``--step-profiles``, repeated ``--repeats`` times, 2 by
default). The table shows each cell's wall time (min/median/max over the repeats) and resilient_llm's wall time as a
multiple of LiteLLM's on the same seeded faults.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resilient_llm.cli.bench_report import markdown_table, plot, render_table, summarize
from resilient_llm.cli.bench_workload import LOCAL_KEY, Tally, client_environment, run_cell
from resilient_llm.cli.stderr_capture import StderrCapture, summary
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.profiles import PROFILES
from resilient_llm.testing.remote import RemoteFaultServer

CLIENTS = ("litellm", "resilient_llm", "resilient_llm+fallback", "resilient_llm+hedge", "httpx")
DEFAULT_PROFILES = ("clean", "ratelimit", "outage")  # add "hangs" for hedging on vs off; flaky runs as the step
QUICK_PROFILES = ("clean", "outage")  # a minute: LiteLLM's backoff on ratelimit alone takes 1 + 2 + 4 + 8 s
DEFAULT_STEP_PROFILES = ("flaky",)
PATTERNS = ("gather", "trainer")
RETRY_AFTER_S = 0.5
# A judge phase shaped like a real training step: 320 calls (e.g. 64 rollouts x 5 rubric items), 32 in flight.
STEP_CALLS, STEP_CONCURRENCY, STEP_RETRY_AFTER_S, STEP_REPEATS = 320, 32, 1.0, 2
# The outage profile's calls are spread over this long, to cover its window and the recovery after it.
OUTAGE_SPAN_S, QUICK_OUTAGE_SPAN_S = 10.0, 5.0


@dataclasses.dataclass(frozen=True)
class Cell:
    """One measured run: a workload on a fresh fault server, one client, one calling pattern."""

    scenario: str  # the profile's name, or "step" for the judge phase of a training step
    profile: str
    client: str
    pattern: str
    calls: int
    concurrency: int
    seed: int = 0
    repeat: int = 0
    latency_s: float | None = 0.05  # None: the profile's own latency
    retry_after_s: float = RETRY_AFTER_S
    pace_s: float = 0.0  # > 0: call starts spread over this many seconds

    @property
    def name(self) -> str:
        scenario = self.profile if self.scenario == self.profile else f"{self.scenario}-{self.profile}"
        suffix = (f".seed{self.seed}" if self.seed else "") + (f".r{self.repeat}" if self.repeat else "")
        return f"{scenario}.{self.client}.{self.pattern}{suffix}"

    @property
    def prompt_tag(self) -> str:
        """What the cell's prompts start with: every client, in either pattern, asks the same and meets the same
        faults."""
        return f"seed{self.seed} {self.scenario} {self.profile}"


def measure(cell: Cell, base_url: str | None, log_file: Path, advance: Callable[[], None]) -> dict[str, Any]:
    """Run one cell against its own fresh fault server (or the live endpoint at ``base_url``); its row."""
    tally = Tally(advance)

    def run(url: str, key: str, other_provider: str | None = None) -> tuple[float, float]:
        with client_environment(cell.client, url, key, log_file, other_provider):
            cpu = time.process_time()
            live = base_url is not None
            tag = cell.prompt_tag
            wall = run_cell(
                cell.client, cell.pattern, url, key, cell.calls, cell.concurrency, cell.pace_s, tag, live, tally
            )
            return wall, time.process_time() - cpu

    server_stats: dict[str, Any] | None = None
    if base_url is not None:
        wall, cpu = run(base_url, os.environ.get("OPENAI_API_KEY", ""))
    else:
        server = RemoteFaultServer(
            cell.profile, seed=cell.seed, latency_s=cell.latency_s, retry_after_s=cell.retry_after_s, hang_s=30
        )
        with contextlib.ExitStack() as stack:
            srv = stack.enter_context(server)
            other = None
            if cell.client == "resilient_llm+fallback":
                other = stack.enter_context(RemoteFaultServer("clean", latency_s=cell.latency_s)).url
            wall, cpu = run(srv.url, LOCAL_KEY, other)
            server_stats = srv.stats()
    return {
        **dataclasses.asdict(cell),
        "real_answers": tally.real,
        "neutral": tally.other,
        "exceptions": tally.exceptions,
        "exception_kinds": tally.exception_kinds,
        "accounted": tally.real + tally.other + tally.exceptions == cell.calls,
        "success_pct": 100.0 * tally.real / cell.calls,
        "latency_ms": percentiles([x * 1e3 for x in tally.latencies]),
        "latencies_ms": sorted(round(x * 1e3, 3) for x in tally.latencies),
        "throughput_per_s": cell.calls / wall,
        "wall_s": wall,
        "client_cpu_ms_per_call": cpu / cell.calls * 1e3,
        "server_requests_per_call": server_stats["requests"] / cell.calls if server_stats else None,
        "retry_after_violations": server_stats["retry_after_violations"] if server_stats else None,
        "server": server_stats,
        "calls_log": str(log_file),
    }


def runs_on(profile: str, client: str, args: argparse.Namespace) -> list[str]:
    """The patterns ``client`` runs in on ``profile`` (none: the pairing says nothing)."""
    live = args.base_url is not None
    if profile == "outage" and not live and client != "resilient_llm+hedge":
        return [args.patterns[0]]  # its calls are paced over the outage: the calling pattern changes nothing
    if client == "resilient_llm+fallback":  # where a second provider makes a difference
        return []
    if client == "resilient_llm+hedge":  # where stragglers are
        return list(args.patterns) if profile == "hangs" or live else []
    return list(args.patterns)


def plan(args: argparse.Namespace) -> list[Cell]:
    """Every run, repeat by repeat; each repeat reverses the client order of the one before (a noisy machine)."""
    live = args.base_url is not None
    cells: list[tuple[int, Cell]] = []  # (repeats wanted, cell)
    for profile in args.profiles:
        pace = (QUICK_OUTAGE_SPAN_S if args.quick else OUTAGE_SPAN_S) if profile == "outage" and not live else 0.0
        for client in args.clients:
            if client == "httpx" and profile != "clean" and not live:
                continue  # the bare client is the ceiling on clean; it has no answer to faults
            for pattern in runs_on(profile, client, args):
                cell = Cell(profile, profile, client, pattern, args.calls, args.concurrency, args.seed)
                cells.append((args.repeats or 1, dataclasses.replace(cell, latency_s=args.latency, pace_s=pace)))
    for profile in args.step_profiles:
        for client in args.clients:  # bare httpx too: one attempt per call, the floor of the phase's wall time
            for pattern in runs_on(profile, client, args):
                cell = Cell("step", profile, client, pattern, args.step_calls, STEP_CONCURRENCY, args.seed)
                cell = dataclasses.replace(cell, latency_s=args.latency, retry_after_s=STEP_RETRY_AFTER_S)
                cells.append((args.repeats or (1 if args.quick else STEP_REPEATS), cell))
    ordered = []
    for repeat in range(max((wanted for wanted, _ in cells), default=0)):
        this_round = [dataclasses.replace(cell, repeat=repeat) for wanted, cell in cells if repeat < wanted]
        ordered += this_round if repeat % 2 == 0 else interleave_reversed(this_round)
    return ordered


def interleave_reversed(cells: list[Cell]) -> list[Cell]:
    """The same cells, each workload's clients in reverse order (who runs first matters on a shared machine)."""
    workloads: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in cells:
        workloads.setdefault((cell.scenario, cell.profile, cell.pattern), []).append(cell)
    return [cell for group in workloads.values() for cell in reversed(group)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profiles",
        default=None,
        help=f"comma-separated, of: {', '.join(PROFILES)} (default {','.join(DEFAULT_PROFILES)}; --quick "
        f"{','.join(QUICK_PROFILES)})",
    )
    parser.add_argument(
        "--step-profiles",
        default=",".join(DEFAULT_STEP_PROFILES),
        help="profiles to run as a training step's judge phase (--step-calls calls, 32 in flight); 'none' for none",
    )
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated: " + ", ".join(CLIENTS))
    parser.add_argument("--patterns", default=",".join(PATTERNS), help="comma-separated: " + ", ".join(PATTERNS))
    parser.add_argument("--calls", type=int, default=None, help="calls per cell (default 160, --quick 40)")
    parser.add_argument("--step-calls", type=int, default=None, help="calls per step cell (default 320, --quick 96)")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight from the caller's side")
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell (default: 2 for the step, else 1)")
    parser.add_argument("--latency", type=float, default=0.05, help="local server latency per answer, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run under a minute")
    parser.add_argument("--out", default="benchmarks/results", help="directory for JSON, logs and plots")
    parser.add_argument("--base-url", default=None, help="a live endpoint instead of the local server (key from env)")
    parser.add_argument("--no-plots", action="store_true")


def parse_list(raw: str, allowed: tuple[str, ...], flag: str, may_be_empty: bool = False) -> list[str]:
    items = [x.strip() for x in raw.split(",") if x.strip()]
    if may_be_empty and items == ["none"]:
        return []
    unknown = [x for x in items if x not in allowed]
    if (not items and not may_be_empty) or unknown:
        raise SystemExit(f"{flag}={raw!r} is not valid: expected a comma-separated list of {', '.join(allowed)}")
    return items


def prepare_litellm() -> None:
    """Import LiteLLM once up front (its start-up must not count against its first cell), offline and quiet."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else LiteLLM fetches it from the internet
    import litellm

    litellm.suppress_debug_info = True  # its "Give Feedback" banner on every failure would bury the table


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    default_profiles = QUICK_PROFILES if args.quick else DEFAULT_PROFILES
    args.profiles = parse_list(args.profiles or ",".join(default_profiles), tuple(PROFILES), "--profiles")
    args.step_profiles = parse_list(args.step_profiles, tuple(PROFILES), "--step-profiles", may_be_empty=True)
    args.clients = parse_list(args.clients, CLIENTS, "--clients")
    args.patterns = parse_list(args.patterns, PATTERNS, "--patterns")
    if args.quick and args.patterns == list(PATTERNS):
        args.patterns = ["gather"]  # the smoke run: one pattern, fewer calls
    args.calls = args.calls or (40 if args.quick else 160)
    args.step_calls = args.step_calls or (96 if args.quick else STEP_CALLS)
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"--repeats={args.repeats} is not valid: expected an integer >= 1")
    if args.base_url and not os.environ.get("OPENAI_API_KEY"):
        raise SystemExit("--base-url needs the endpoint's key in OPENAI_API_KEY")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calls").mkdir(exist_ok=True)
    for old_log in (out / "calls").glob("*.jsonl"):
        old_log.unlink()
    cells = plan(args)
    if "litellm" in args.clients:
        prepare_litellm()
    console = Console() if sys.stdout.isatty() else Console(width=220)
    rows = []
    # LiteLLM's tracebacks (its logging worker under the trainer's asyncio.run per rollout) go to a file, not over
    # the table; Rich must not route sys.stderr to the console meanwhile.
    noise = StderrCapture(out / "bench.stderr.log")
    with noise, Progress(console=console, transient=True, redirect_stderr=False) as progress:
        task = progress.add_task("bench", total=sum(cell.calls for cell in cells))
        for cell in cells:
            progress.update(task, description=f"{cell.scenario} {cell.profile} / {cell.client} / {cell.pattern}")
            log_file = out / "calls" / f"{cell.name}.jsonl"
            rows.append(measure(cell, args.base_url, log_file, lambda: progress.advance(task)))
    summaries = summarize(rows)
    report = {
        "benchmark": "bench",
        "command": "resilient-llm bench "
        + " ".join(
            f"--{k.replace('_', '-')} {(','.join(v) or 'none') if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k not in ("func", "no_plots", "quick", "base_url", "out") and v is not None
        ),
        "live_endpoint": args.base_url is not None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average": os.getloadavg(),
        "summary": summaries,
        "cells": rows,
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(markdown_table(summaries) + "\n")
    console.print(render_table(summaries))
    for line in summary(noise.path):
        console.print(line, style=None if line.startswith("LiteLLM") else "bold red", highlight=False)
    if not args.no_plots:
        for path in plot(rows, out):
            console.print(f"plot: {path}")
    console.print(f"results: {out / 'bench.json'}; call logs, one per cell: {out / 'calls'}/")
    noise.until_exit()
    return 0
