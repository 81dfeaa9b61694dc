"""The bench's report: the terminal table, the Markdown table and the plots of a run's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resilient_llm.testing.profiles import PROFILES


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
