"""``benchmarks/results/fleet.md`` from ``fleet.json``: one table per scenario, one row per repeat."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]


def _windows(values: list[int]) -> str:
    return " ".join(str(v) for v in values)


def checks(report: dict[str, Any]) -> list[str]:
    """The acceptance, read off every repeat."""
    kill, redis, breaker = report["sigkill"], report["redis_kill"], report["breaker"]
    runs = kill + redis + breaker
    failed = sum(n for r in runs for outcome, n in r["outcomes"].items() if outcome != "ok")
    peak = all(r["server_peak_in_flight"] <= (r["shared_limit_max"] or 0) for r in kill)
    back = [r["killed_permits_back_after_s"] for r in kill]
    lease = kill[0]["lease_s"] if kill else 0.0
    recovered = all(
        r["calls_per_s"]["survivors_after_return"] >= r["calls_per_s"]["survivors_before_kill"] for r in kill
    )
    most = max((r["most_requests_in_one_period"] for r in breaker), default=0)
    return [
        f"- Server peak in flight <= the shared limit's highest value in every run: {'yes' if peak else 'NO'}.",
        f"- Permits of the SIGKILLed process back after {', '.join(_fmt(b) for b in back)} s (lease {lease:g} s, "
        "sampled every 0.1 s); survivors' calls/s after >= before the kill: " + ("yes" if recovered else "NO") + ".",
        f"- Calls that did not end with a real answer, all runs (Redis killed included): {failed}.",
        f"- Most requests into the dead endpoint in one trial period, 8 processes: {most}.",
    ]


def markdown(report: dict[str, Any]) -> str:
    capacity = report["capacity"]
    out = [
        "# Fleet: processes sharing one endpoint through Redis",
        "",
        f"`{report['command']}` ({report['wall_s']} s). Each process is `resilient_llm/testing/fleet_worker.py` "
        "(the process-wide engine from the environment, defaults otherwise); the endpoint a `RemoteFaultServer`, "
        "Redis a real server.",
        "",
        *checks(report),
        "",
        f"## Shared limit, capacity {capacity} (at most {capacity} requests admitted, an immediate 429 beyond), "
        "one process SIGKILLed",
        "",
    ]
    rows = []
    for r in report["sigkill"]:
        cps = r["calls_per_s"]
        rows.append(
            [
                r["server_peak_in_flight"],
                r["server_peak_admitted"],
                r["shared_limit_max"],
                r["permits_held_max"],
                r["server_in_flight_minus_permits_max"],
                r["refusal_share"],
                r["killed_held_permits"],
                r["killed_permits_back_after_s"],
                cps["all_before_kill"],
                cps["survivors_before_kill"],
                cps["survivors_while_leases_run"],
                cps["survivors_after_return"],
                r["outcomes"],
            ]
        )
    out += _table(
        [
            "server peak in flight",
            "peak admitted",
            "shared limit max",
            "permits held max",
            "server in flight - permits, max",
            "429 share",
            "permits of the killed",
            "back after s",
            "calls/s all before",
            "survivors before",
            "survivors during leases",
            "survivors after",
            "outcomes",
        ],
        rows,
    )
    for i, r in enumerate(report["sigkill"]):
        out += [
            "",
            f"Run {i + 1}, calls finished per second (all processes; killed at {r['killed_at_s']} s): "
            f"{_windows(r['per_second_all'])}",
            f"Survivors only: {_windows(r['per_second_survivors'])}",
        ]
    out += ["", f"## Redis killed mid-run (capacity {capacity})", ""]
    rows = [
        [
            r["redis_down_s"],
            r["outcomes"],
            r["calls_per_s"],
            r["refusal_share"],
            r["server_peak_admitted"],
            r["fault_lines"],
            r["recovery_lines"],
        ]
        for r in report["redis_kill"]
    ]
    out += _table(
        ["Redis down s", "outcomes", "calls/s by phase", "429 share by phase", "peak admitted", "fault", "recovered"],
        rows,
    )
    for i, r in enumerate(report["redis_kill"]):
        out += ["", f"Run {i + 1}, calls finished per second: {_windows(r['per_second_all'])}"]
    out += ["", "## Shared breaker, connections reset for 10 s", ""]
    rows = [
        [
            r["outage_s"],
            r["requests_into_outage"],
            r["burst_at_outage_start"],
            r["trials"],
            " ".join(f"{p['at_s']:.1f}s x{p['requests']}" for p in r["trial_periods"]),
            r["outcomes"],
            r["calls_through_outage"],
            r["last_of_them_done_after_recovery_s"],
        ]
        for r in report["breaker"]
    ]
    out += _table(
        [
            "outage s",
            "requests into it",
            "burst at start",
            "trials",
            "trial periods (from outage start)",
            "outcomes",
            "calls through it",
            "last done after recovery s",
        ],
        rows,
    )
    return "\n".join(out) + "\n"
