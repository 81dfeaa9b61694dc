"""The bench's report: a summary line per cell over its repeats, the terminal and Markdown tables, the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resilient_llm.testing.profiles import PROFILES

GROUP = ("scenario", "profile", "client", "pattern", "seed")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": _median(values), "max": max(values)}


def _latency_median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r["latency_ms"][key] for r in runs if r["latency_ms"][key] is not None]
    if not values:
        return None
    return max(values) if key == "max" else _median(values)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per workload x client x pattern x seed over its repeats: the wall time's min/median/max, the worst
    run's counts, median latencies (the slowest call of any run), and the wall time as a multiple of LiteLLM's."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP), []).append(row)
    lines = []
    for key, runs in groups.items():
        rpc = [r["server_requests_per_call"] for r in runs if r["server_requests_per_call"] is not None]
        violations = [r["retry_after_violations"] for r in runs if r["retry_after_violations"] is not None]
        lines.append(
            dict(zip(GROUP, key, strict=True))
            | {
                "calls": runs[0]["calls"],
                "concurrency": runs[0]["concurrency"],
                "runs": len(runs),
                "wall_s": _spread([r["wall_s"] for r in runs]),
                "calls_per_s": _median([r["throughput_per_s"] for r in runs]),
                "latency_ms": {k: _latency_median(runs, k) for k in ("p50", "p95", "p99", "max")},
                "real_answers_min": min(r["real_answers"] for r in runs),
                "neutral_max": max(r["neutral"] for r in runs),
                "exceptions_max": max(r["exceptions"] for r in runs),
                "requests_per_call": _spread(rpc) if rpc else None,
                "retry_after_violations": sum(violations) if violations else None,
                "client_cpu_ms_per_call": _median([r["client_cpu_ms_per_call"] for r in runs]),
            }
        )
    litellm = {(s["scenario"], s["profile"], s["pattern"], s["seed"]): s for s in lines if s["client"] == "litellm"}
    for line in lines:
        theirs = litellm.get((line["scenario"], line["profile"], line["pattern"], line["seed"]))
        line["wall_vs_litellm"] = line["wall_s"]["median"] / theirs["wall_s"]["median"] if theirs else None
    return lines


def _wall(line: dict[str, Any]) -> str:
    wall = line["wall_s"]
    if line["runs"] == 1:
        return f"{wall['median']:.1f}"
    return f"{wall['median']:.1f} ({wall['min']:.1f}-{wall['max']:.1f})"


def _cells(line: dict[str, Any]) -> list[str]:
    lat = line["latency_ms"]
    rpc, ratio, violations = line["requests_per_call"], line["wall_vs_litellm"], line["retry_after_violations"]
    workload = line["profile"] if line["scenario"] == line["profile"] else f"{line['scenario']} {line['profile']}"
    return [
        f"{workload} {line['calls']}x{line['concurrency']}" + (f" seed {line['seed']}" if line["seed"] else ""),
        line["client"],
        line["pattern"],
        str(line["runs"]),
        _wall(line),
        "-" if ratio is None or line["client"] == "litellm" else f"{ratio:.2f}",
        f"{line['calls_per_s']:.1f}",
        _ms(lat["p50"]),
        _ms(lat["p95"]),
        _ms(lat["p99"]),
        _ms(lat["max"]),
        f"{line['real_answers_min']}/{line['calls']}",
        f"{line['neutral_max']}/{line['exceptions_max']}",
        "-" if rpc is None else f"{rpc['median']:.2f}",
        "-" if violations is None else str(violations),
    ]


COLUMNS = (
    "workload",
    "client",
    "pattern",
    "runs",
    "wall s (min-max)",
    "wall / LiteLLM",
    "calls/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "real",
    "neutral/exc.",
    "req/call",
    "RA viol.",
)


def render_table(summaries: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="resilient-llm bench (worst run's counts; medians over runs; max: the slowest call)")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("workload", "client", "pattern") else "right")
    for line in summaries:
        table.add_row(*_cells(line))
    return table


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    """The summary as Markdown: real is the worst run's, latencies and requests per call the median run's."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(line)) + " |" for line in summaries]
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
        for r in (r for r in rows if r["profile"] == profile and r["repeat"] == 0):
            values = r["latencies_ms"]
            if values:
                label = f"{r['scenario']} {r['client']}/{r['pattern']}"
                ax.plot(values, [(i + 1) / r["calls"] for i in range(len(values))], label=label)
        ax.set_xscale("log")
        ax.set_title(f"{profile}: latency CDF")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("share of calls returned")
        ax.legend(fontsize=7)
    figure.tight_layout()
    written.append(out_dir / "bench_latency_cdf.png")
    figure.savefig(written[-1], dpi=90)
    plt.close(figure)

    rows = [r for r in rows if r["repeat"] == 0]
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
