"""Flow control and outages, side by side in one run (issues 11 and 12).

Clients: ``resilient_llm`` (defaults: adaptive limit, calls wait out outages), ``resilient_llm_fixed`` (the first
wave: ``RESILIENT_LLM_CONCURRENCY=fixed``, cap 20, ``RESILIENT_LLM_OUTAGE_WAIT=0``), ``litellm`` as the trainer calls
it, and a bare ``httpx.AsyncClient``; the trainer's ``run_litellm_async`` for the first three. Every cell has its own
fresh fault server in a child process.

    python -m benchmarks.flow_control [--scenarios clean500,capacity,halving,outage4,outage20,throttle] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from resilient_llm.cli.bench_workload import LOCAL_KEY, Tally, client_environment, run_cell
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.environment import env_flags
from resilient_llm.testing.remote import RemoteFaultServer

RESULTS = Path(__file__).parent / "results"
CLIENTS = ("resilient_llm", "resilient_llm_fixed", "litellm", "httpx")
FIRST_WAVE = {"RESILIENT_LLM_CONCURRENCY": "fixed", "RESILIENT_LLM_OUTAGE_WAIT": "0"}
# name: (profile, calls, callers, capacity, latency_s, outage_s)
SCENARIOS: dict[str, tuple[str, int, int, int | None, float | None, float]] = {
    "clean500": ("clean-500ms", 1000, 64, None, None, 0.0),
    "capacity": ("capacity", 3000, 1000, 100, None, 0.0),
    "halving": ("capacity", 3000, 1000, 100, None, 0.0),
    "clean50": ("clean", 1000, 32, None, 0.05, 0.0),
    "outage4": ("clean", 1000, 32, None, 0.05, 4.0),
    "outage20": ("clean", 1000, 32, None, 0.05, 20.0),
    "throttle": ("throttle", 500, 32, None, None, 0.0),
}
SCENARIO_TEXT = (
    "clean500: 500 +- 100 ms answers, 1000 calls, 64 callers. capacity: at most 100 in flight (429 + Retry-After 1 s "
    "beyond), 500 ms, 3000 calls, 1000 callers. halving: capacity 100 -> 50 at t=5 s. throttle: token bucket 50/s, "
    "bursts of 50 (429 + Retry-After 1 s beyond), 50 ms answers, 500 calls, 32 callers. outage4/outage20: 50 ms "
    "answers, 1000 calls, 32 callers, every connection reset from t=0.5 s for 4 / 20 s."
)
HALVE_AT_S = 5.0
OUTAGE_FROM_S = 0.5


def limit_series(log: Path, started_wall: float) -> list[tuple[float, int]]:
    """(seconds since start, limit) from the llm_call lines' ``limit`` field."""
    import datetime

    series = []
    if not log.exists():
        return series
    for raw in log.read_text().splitlines():
        line = json.loads(raw)
        if line.get("event") == "llm_call" and line.get("limit") is not None:
            stamp = datetime.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
            series.append((round(stamp - started_wall, 2), int(line["limit"])))
    return sorted(series)


def run(name: str, client: str, out: Path, seed: int = 0) -> dict[str, Any]:
    profile, calls, callers, capacity, latency, outage_s = SCENARIOS[name]
    log = out / f"flow.{name}.{client}.jsonl"
    log.unlink(missing_ok=True)
    trainer_client = "resilient_llm" if client.startswith("resilient_llm") else client
    extra = FIRST_WAVE if client == "resilient_llm_fixed" else {}
    tally = Tally(lambda: None)
    server = RemoteFaultServer(profile, seed=seed, latency_s=latency, retry_after_s=1.0, hang_s=30, capacity=capacity)
    with server:
        events: dict[str, float] = {}
        timers: list[threading.Timer] = []
        samples: list[dict[str, Any]] = []

        def at(seconds: float, what: str, action: Any) -> None:
            def fire() -> None:
                events[what] = time.monotonic()
                samples.append({"at": what, **server.stats()})
                action()

            timers.append(threading.Timer(seconds, fire))

        if name == "halving":
            at(HALVE_AT_S, "halved", lambda: server.set_capacity(50))
            at(HALVE_AT_S + 10.0, "halved+10s", lambda: None)
        if outage_s:
            at(OUTAGE_FROM_S, "down", lambda: server.set_down(True, kind="reset"))
            at(OUTAGE_FROM_S + outage_s, "up", lambda: server.set_down(False))
        with env_flags(extra), client_environment(trainer_client, server.url, LOCAL_KEY, log):
            started_wall, started = time.time(), time.monotonic()
            for timer in timers:
                timer.start()
            cpu = time.process_time()
            wall = run_cell(trainer_client, "gather", server.url, LOCAL_KEY, calls, callers, 0.0, name, False, tally)
            cpu = time.process_time() - cpu
        for timer in timers:
            timer.cancel()
        stats = server.stats()
    ended = started + wall
    row: dict[str, Any] = {
        "scenario": name,
        "client": client,
        "calls": calls,
        "callers": callers,
        "real_answers": tally.real,
        "neutral": tally.other,
        "exceptions": tally.exceptions,
        "wall_s": round(wall, 3),
        "calls_per_s": round(calls / wall, 2),
        "client_cpu_ms_per_call": round(cpu / calls * 1e3, 3),
        "latency_ms": {k: None if v is None else round(v * 1e3, 1) for k, v in percentiles(tally.latencies).items()},
        "server_requests": stats["requests"],
        "server_requests_per_call": round(stats["requests"] / calls, 3),
        "peak_in_flight": stats["peak_in_flight"],
        "refusals_429": stats["capacity_refusals"] + stats["rate_refusals"],
        "share_429": round((stats["capacity_refusals"] + stats["rate_refusals"]) / max(1, stats["requests"]), 4),
        "retry_after_violations": stats["retry_after_violations"],
    }
    if outage_s:
        row["requests_into_dead_endpoint"] = stats["requests_while_down"]
        row["run_ends_after_recovery_s"] = round(ended - events["up"], 2) if "up" in events else None
    if name == "halving" and len(samples) == 2:
        late = stats["requests"] - samples[1]["requests"]
        late_refused = stats["capacity_refusals"] - samples[1]["capacity_refusals"]
        row["share_429_from_halving_plus_10s"] = round(late_refused / max(1, late), 4)
        series = limit_series(log, started_wall)
        after = [limit for t, limit in series if t >= HALVE_AT_S + 10.0]
        row["limit_10s_after_halving"] = max(after) if after else None
        row["limit_series"] = series[:: max(1, len(series) // 60)]
    if client.startswith("resilient_llm") and name != "halving":
        row["limit_last"] = (limit_series(log, started_wall) or [(0.0, None)])[-1][1]
    return row


COLUMNS = (
    ("scenario", "scenario"),
    ("client", "client"),
    ("repeat", "run"),
    ("real_answers", "real"),
    ("neutral", "neutral"),
    ("exceptions", "exc"),
    ("calls_per_s", "calls/s"),
    ("client_cpu_ms_per_call", "cpu ms/call"),
    ("server_requests_per_call", "req/call"),
    ("share_429", "429 share"),
    ("retry_after_violations", "RA viol."),
    ("peak_in_flight", "peak in flight"),
    ("requests_into_dead_endpoint", "into outage"),
    ("run_ends_after_recovery_s", "ends after recovery s"),
    ("limit_10s_after_halving", "limit 10 s after halving"),
    ("share_429_from_halving_plus_10s", "429 share from +10 s"),
)


def markdown(report: dict[str, Any]) -> str:
    """The rows as a table, grouped by scenario and client (repeats side by side)."""
    rows = sorted(report["rows"], key=lambda r: (list(SCENARIOS).index(r["scenario"]), CLIENTS.index(r["client"])))
    lines = [
        "# Flow control and outages, side by side",
        "",
        f"`python -m benchmarks.flow_control --repeats {1 + max(r.get('repeat', 0) for r in rows)}` on a shared "
        f"{report.get('cpus', 2)}-core machine. " + (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "",
        SCENARIO_TEXT,
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(key) is None else str(row[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "flow_control.json")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    clients = args.clients.split(",")
    for repeat in range(args.repeats):
        for name in args.scenarios.split(","):
            order = clients if repeat % 2 == 0 else clients[::-1]  # alternate who runs first on a noisy machine
            for client in order:
                row = run(name, client, RESULTS) | {"repeat": repeat}
                rows.append(row)
                shown = {k: v for k, v in row.items() if k not in ("limit_series", "latency_ms")}
                print(json.dumps(shown), flush=True)
    report = {"benchmark": "flow_control", "machine": os.uname().machine, "cpus": os.cpu_count(), "rows": rows}
    args.out.write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
