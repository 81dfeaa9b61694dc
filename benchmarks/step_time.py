"""Issue 23's acceptance table in one command: step time under faults, token buckets, capacity, latency, outages.

    python -m benchmarks.step_time --all                        # every scenario on seeds 0 and 1, ~25 min today
    python -m benchmarks.step_time --all --name step_time_baseline  # the same, written under another name
    python -m benchmarks.step_time --scenarios step-flaky,throttle-late --seeds 0 --repeats 2

Writes ``benchmarks/results/<name>.json`` and ``.md`` (name: ``step_time``): each cell's wall time (min/median/max
over ``--repeats``, by default 2 for the step scenarios and 1 for the rest), calls/s, p50/p95/p99/max latency, real
answers, neutral answers and exceptions, server requests per call and Retry-After violations, then every target
checked per seed. A training step waits for its slowest judge call, so a cell's wall time is a judge phase's.

Scenarios (every cell on its own fresh fault server in a child process, the same seeded faults for every client):
- ``step-flaky`` / ``step-ratelimit``: 320 calls, 32 in flight, 50 ms answers, Retry-After 1 s, 3 s per attempt; one
  loop (``gather``) and the trainer's pattern (a fresh ``asyncio.run`` per rollout of 4 calls on 8 pool threads);
  LiteLLM as the trainer calls it (``num_retries=5``, retried through tenacity), resilient_llm, bare httpx (one
  attempt per call: the floor). Targets: phase wall time <= 0.3x LiteLLM's on flaky, <= 0.7x on ratelimit; every call
  real; 0 Retry-After violations; <= 1.6 requests per call on flaky.
- ``throttle`` / ``throttle-late``: a token bucket (50/s, bursts of 50) whose 429 comes at once / after the usual
  40-60 ms; 500 calls, 32 callers. Targets: every call real; <= 1.15 requests per call on throttle-late; throttle no
  worse than before (1.10-1.12 in the README).
- ``capacity``: at most 100 in flight, 500 +- 100 ms answers, 3000 calls, 1000 callers. Target: >= 0.85x of the
  capacity's 200 calls/s. ``clean500``: 500 +- 100 ms, 1000 calls, 64 callers. Target: >= 0.95x bare httpx.
  ``outage4`` / ``outage20``: every connection reset from 0.5 s for 4 / 20 s. Targets: every call real, <= 60
  requests into the outage. (``benchmarks.flow_control`` runs these; seeds change only the latency draws there.)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import heapq
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import flow_control
from resilient_llm.cli.bench import (
    STEP_CALLS,
    STEP_CONCURRENCY,
    STEP_REPEATS,
    STEP_RETRY_AFTER_S,
    Cell,
    measure,
    prepare_litellm,
)
from resilient_llm.cli.bench_report import markdown_table, summarize
from resilient_llm.cli.bench_workload import CALLS_PER_ROLLOUT, MODEL, judge_messages, workload_prompts
from resilient_llm.cli.stderr_capture import StderrCapture, summary
from resilient_llm.testing.fault_server import RETRY_AFTER_KINDS, draw_seed, prompt_key
from resilient_llm.testing.profiles import PROFILES

RESULTS = Path(__file__).parent / "results"
BENCH_CLIENTS = ("litellm", "resilient_llm", "httpx")
STEP_SCENARIOS = {"step-flaky": "flaky", "step-ratelimit": "ratelimit"}
BUCKET_SCENARIOS = ("throttle", "throttle-late")
BUCKET_CALLS, BUCKET_CALLERS = 500, 32
# flow_control's scenarios, and who runs each: the reference the target names, LiteLLM for context
FLOW_CLIENTS = {
    "capacity": ("resilient_llm", "litellm"),
    "clean500": ("resilient_llm", "httpx", "litellm"),
    "outage4": ("resilient_llm", "litellm"),
    "outage20": ("resilient_llm", "litellm"),
}
SCENARIOS = (*STEP_SCENARIOS, *BUCKET_SCENARIOS, *FLOW_CLIENTS)
CAPACITY_CALLS_PER_S = 100 / 0.5  # 100 admitted at once, 500 ms mean answers


def bench_cells(scenario: str, seed: int, repeat: int) -> list[Cell]:
    """The bench's cells for a step or token-bucket scenario."""
    if scenario in STEP_SCENARIOS:
        profile = STEP_SCENARIOS[scenario]
        step = Cell("step", profile, "", "", STEP_CALLS, STEP_CONCURRENCY, seed, repeat)
        step = dataclasses.replace(step, retry_after_s=STEP_RETRY_AFTER_S)
        return [
            dataclasses.replace(step, client=client, pattern=pattern)
            for pattern in ("gather", "trainer")
            for client in BENCH_CLIENTS
        ]
    bucket = Cell(scenario, scenario, "", "gather", BUCKET_CALLS, BUCKET_CALLERS, seed, repeat, None, 1.0)
    return [dataclasses.replace(bucket, client=client) for client in ("litellm", "resilient_llm")]


def flow_row(scenario: str, client: str, seed: int, repeat: int, out: Path) -> dict[str, Any]:
    """One flow_control cell, with the fields the bench's summary reads."""
    profile, calls, callers, *_ = flow_control.SCENARIOS[scenario]
    row = flow_control.run(scenario, client, out, seed)
    return row | {
        "profile": profile,
        "pattern": "gather",
        "seed": seed,
        "repeat": repeat,
        "concurrency": callers,
        "throughput_per_s": calls / row["wall_s"],
    }


def plan(scenarios: list[str], seeds: list[int], repeats: int | None, out: Path) -> list[Callable[[], dict[str, Any]]]:
    """Every run in order; every other round runs each workload's clients in reverse (a noisy, shared machine)."""
    runs: list[Callable[[], dict[str, Any]]] = []
    wanted = {s: repeats or (STEP_REPEATS if s in STEP_SCENARIOS else 1) for s in scenarios}
    rounds = [(seed, repeat) for seed in seeds for repeat in range(max(wanted.values()))]
    for round_number, (seed, repeat) in enumerate(rounds):
        for scenario in (s for s in scenarios if repeat < wanted[s]):
            if scenario in FLOW_CLIENTS:
                clients = FLOW_CLIENTS[scenario]
                for client in clients if round_number % 2 == 0 else clients[::-1]:
                    runs.append(functools.partial(flow_row, scenario, client, seed, repeat, out))
                continue
            cells = bench_cells(scenario, seed, repeat)
            if round_number % 2:
                cells = [c for pattern in ("gather", "trainer") for c in cells[::-1] if c.pattern == pattern]
            for cell in cells:
                log = out / f"{cell.name}.jsonl"
                runs.append(functools.partial(measure, cell, None, log, lambda: None))
    return runs


def retry_after_floor(cell: Cell) -> float:
    """The judge phase of an ideal client on ``cell``'s own faults: the fault server's draws for its prompts, every
    fault retried at once and costing one answer latency (a hang as if hedged at once), every 429 waited out for
    exactly its Retry-After, no overhead at all; calls in the pattern's shape (a pool of 32 callers in call order, or
    rollouts of 4 on 8 threads, each waiting for its slowest call). A lower bound for any client that obeys
    Retry-After on these faults, not a figure of this one."""
    profile = PROFILES[cell.profile]
    latency = cell.latency_s or 0.0

    def call(prompt: str) -> float:
        key = prompt_key(MODEL, judge_messages(prompt))
        took, seen = latency, 0
        while (kind := profile.draw(draw_seed(cell.seed, key, seen))) != "ok":
            took += latency + (cell.retry_after_s if kind in RETRY_AFTER_KINDS else 0.0)
            seen += 1
        return took

    took = [call(prompt) for prompt in workload_prompts(cell.prompt_tag, cell.calls)]
    if cell.pattern == "gather":
        free = [0.0] * cell.concurrency
        for seconds in took:
            heapq.heappush(free, heapq.heappop(free) + seconds)
    else:
        free = [0.0] * (cell.concurrency // CALLS_PER_ROLLOUT)
        for first in range(0, len(took), CALLS_PER_ROLLOUT):
            heapq.heappush(free, heapq.heappop(free) + max(took[first : first + CALLS_PER_ROLLOUT]))
    return max(free)


@dataclasses.dataclass(frozen=True)
class Check:
    """One acceptance target on one seed: what was measured against it, and whether it holds."""

    target: str
    seed: int
    measured: str
    holds: bool


def checks(lines: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[Check]:
    """Every target of issue 23 that the scenarios run, per seed (all runs of a cell must meet it)."""
    found: list[Check] = []

    def line(scenario: str, profile: str, client: str, pattern: str, seed: int) -> dict[str, Any] | None:
        key = (scenario, profile, client, pattern, seed)
        return next(
            (x for x in lines if (x["scenario"], x["profile"], x["client"], x["pattern"], x["seed"]) == key), None
        )

    def runs_of(scenario: str, client: str, seed: int) -> list[dict[str, Any]]:
        return [r for r in rows if (r["scenario"], r["client"], r["seed"]) == (scenario, client, seed)]

    def all_real(target: str, runs: list[dict[str, Any]], seed: int) -> None:
        if runs:
            real = min(r["real_answers"] for r in runs)
            found.append(Check(target, seed, f"{real}/{runs[0]['calls']} real (worst run)", real == runs[0]["calls"]))

    for seed in sorted({line["seed"] for line in lines}):
        for scenario, profile in STEP_SCENARIOS.items():
            most = 0.3 if profile == "flaky" else 0.7
            for pattern in ("gather", "trainer"):
                ours = line("step", profile, "resilient_llm", pattern, seed)
                if ours is None:
                    continue
                where = f"{scenario} {pattern}"
                ratio = ours["wall_vs_litellm"]
                theirs = line("step", profile, "litellm", pattern, seed)
                if ratio is not None and theirs is not None:
                    cell = next(c for c in bench_cells(scenario, seed, 0) if c.pattern == pattern)
                    floor = retry_after_floor(cell) / theirs["wall_s"]["median"]
                    measured = f"{ratio:.2f}x (this seed's Retry-After floor: {floor:.2f}x)"
                    found.append(Check(f"{where}: wall <= {most}x LiteLLM", seed, measured, ratio <= most))
                step_runs = [
                    r
                    for r in runs_of("step", "resilient_llm", seed)
                    if (r["profile"], r["pattern"]) == (profile, pattern)
                ]
                all_real(f"{where}: every call real", step_runs, seed)
                violations = ours["retry_after_violations"]
                found.append(Check(f"{where}: 0 Retry-After violations", seed, str(violations), violations == 0))
                if profile == "flaky":
                    rpc = ours["requests_per_call"]["max"]
                    found.append(Check(f"{where}: <= 1.6 requests/call", seed, f"{rpc:.3f} (worst run)", rpc <= 1.6))
        for scenario, most in (("throttle-late", 1.15), ("throttle", 1.12)):
            ours = line(scenario, scenario, "resilient_llm", "gather", seed)
            if ours is not None:
                rpc = ours["requests_per_call"]["max"]
                found.append(Check(f"{scenario}: <= {most} requests/call", seed, f"{rpc:.3f} (worst run)", rpc <= most))
                all_real(f"{scenario}: every call real", runs_of(scenario, "resilient_llm", seed), seed)
        if (ours := line("capacity", "capacity", "resilient_llm", "gather", seed)) is not None:
            share = ours["calls_per_s"] / CAPACITY_CALLS_PER_S
            found.append(Check("capacity: >= 0.85x of 200 calls/s", seed, f"{share:.2f}x", share >= 0.85))
        ours = line("clean500", "clean-500ms", "resilient_llm", "gather", seed)
        bare = line("clean500", "clean-500ms", "httpx", "gather", seed)
        if ours is not None and bare is not None:
            share = ours["calls_per_s"] / bare["calls_per_s"]
            found.append(Check("clean500: >= 0.95x bare httpx calls/s", seed, f"{share:.2f}x", share >= 0.95))
        for scenario in ("outage4", "outage20"):
            runs = runs_of(scenario, "resilient_llm", seed)
            all_real(f"{scenario}: every call real", runs, seed)
            if runs:
                into = max(r["requests_into_dead_endpoint"] for r in runs)
                found.append(Check(f"{scenario}: <= 60 requests into the outage", seed, str(into), into <= 60))
    return found


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# {report['name']}: issue 23's acceptance table",
        "",
        f"`{report['command']}` at commit {report['commit']}, {report['machine']['cpus']} cores shared with the fault "
        f"server and other work; load before: `{report['uptime_before']}`; after: `{report['uptime_after']}`; "
        f"{report['minutes']:.1f} min. Scenarios: `python -m benchmarks.step_time --help`.",
        "",
        "| target | seed | measured | holds |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c['target']} | {c['seed']} | {c['measured']} | {'yes' if c['holds'] else 'NO'} |" for c in report["checks"]
    ]
    flow = [r for r in report["rows"] if r["scenario"] in FLOW_CLIENTS]
    lines += [
        "",
        "Every cell (real and neutral/exc.: the worst run's; wall s: median (min-max) over the runs; latencies and"
        " requests per call: the median run's; max ms: the slowest call of any run):",
        "",
        markdown_table(report["summary"]),
    ]
    if flow:
        lines += [
            "",
            "| flow scenario | client | seed | run | 429 share | peak in flight | into outage | ends after recovery s"
            " |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in flow:
            extras = (
                r["share_429"],
                r["peak_in_flight"],
                r.get("requests_into_dead_endpoint"),
                r.get("run_ends_after_recovery_s"),
            )
            lines.append(
                f"| {r['scenario']} | {r['client']} | {r['seed']} | {r['repeat']} | "
                + " | ".join("-" if x is None else str(x) for x in extras)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every scenario: " + ", ".join(SCENARIOS))
    parser.add_argument("--scenarios", default=None, help="comma-separated, of: " + ", ".join(SCENARIOS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell and seed (default: 2 for a step)")
    parser.add_argument("--name", default="step_time", help="results/<name>.json and .md")
    args = parser.parse_args()
    if args.all == (args.scenarios is not None):
        parser.error("give --all or --scenarios")
    scenarios = list(SCENARIOS) if args.all else [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := [s for s in scenarios if s not in SCENARIOS]:
        parser.error(f"unknown scenarios {unknown}: expected some of {', '.join(SCENARIOS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    calls_dir = RESULTS / f"{args.name}_calls"
    calls_dir.mkdir(parents=True, exist_ok=True)
    prepare_litellm()
    before, started = uptime(), time.monotonic()
    rows = []
    with StderrCapture(RESULTS / f"{args.name}.stderr.log") as noise:
        for run in plan(scenarios, seeds, args.repeats, calls_dir):
            load = os.getloadavg()[0]
            row = run() | {"load_1m_before": load}
            row.pop("latencies_ms", None)
            row.pop("limit_series", None)
            rows.append(row)
            wall, rpc = row["wall_s"], row["server_requests_per_call"]
            print(
                f"{row['scenario']:>14} {row['profile']:>11} {row['client']:>13} {row['pattern']:>7} seed {row['seed']}"
                f" run {row['repeat']}: {wall:6.1f} s, {row['real_answers']}/{row['calls']} real, "
                f"{rpc:.2f} req/call, RA violations {row['retry_after_violations']}, load {load:.1f}",
                flush=True,
            )
    lines = summarize(rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    report = {
        "benchmark": "step_time",
        "name": args.name,
        "command": "python -m benchmarks.step_time "
        + ("--all" if args.all else f"--scenarios {','.join(scenarios)}")
        + f" --seeds {args.seeds}"
        + ("" if args.repeats is None else f" --repeats {args.repeats}")
        + ("" if args.name == "step_time" else f" --name {args.name}"),
        "commit": commit.stdout.strip() or "unknown",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "uptime_before": before,
        "uptime_after": uptime(),
        "minutes": (time.monotonic() - started) / 60,
        "checks": [dataclasses.asdict(c) for c in checks(lines, rows)],
        "summary": lines,
        "rows": rows,
    }
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))
    for line in summary(noise.path):
        print(line)


if __name__ == "__main__":
    main()
