"""The --png charts of ``stats`` (the outcome mix per window or group) and ``--compare`` (both latency CDFs).

matplotlib loads only when a chart is asked for. Whatever a log holds, a chart is drawn or an OSError / ValueError says
why the file could not be written: names are cleaned (matplotlib reads ``$...$`` as a formula, and a bad one fails the
whole figure), the number of bars is bounded, and warnings about glyphs or margins stay off the terminal.
"""

from __future__ import annotations

import collections
import warnings
from typing import Any

from resilient_llm.cli.log_reader import clean
from resilient_llm.cli.stats import ordered_outcomes


def label(text: str) -> str:
    """Text for a chart: cleaned, and ``$`` escaped so it is not read as a formula."""
    return clean(text).replace("$", r"\$")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_outcomes(report: dict[str, Any], path: str) -> None:
    """Outcome mix per window (or per group without windows) of a ``stats`` report as a stacked bar PNG."""
    plt = _pyplot()
    rows = (report.get("windows") or report["by_model_route"])[-200:]  # a chart of more bars is unreadable anyway
    labels = [label(str(r.get("start", f"{r.get('model')} / {r.get('route')}"))[-19:]) for r in rows]
    with warnings.catch_warnings():  # a glyph the font lacks, a label too long for tight margins: the chart is made
        warnings.simplefilter("ignore")
        figure_, axes = plt.subplots(figsize=(min(40.0, max(6.0, len(rows) * 0.6)), 4))
        try:
            bottom = [0.0] * len(rows)
            seen = collections.Counter[str]()
            for r in rows:
                seen.update(r["outcomes"])
            for outcome in ordered_outcomes(seen):
                values = [float(r["outcomes"].get(outcome, 0)) for r in rows]
                axes.bar(range(len(rows)), values, bottom=bottom, label=label(outcome))
                bottom = [b + v for b, v in zip(bottom, values, strict=True)]
            axes.set_xticks(range(len(rows)), labels)
            axes.set_ylabel("calls")
            axes.set_title("outcomes")
            if seen:
                axes.legend()
            axes.tick_params(axis="x", rotation=60)
            figure_.tight_layout()
            figure_.savefig(path, dpi=100, format="png")
        finally:
            plt.close(figure_)


def plot_latency_cdfs(series: list[tuple[str, list[float]]], path: str) -> None:
    """Each named series of latencies (ms) as a CDF, in one PNG."""
    plt = _pyplot()
    with warnings.catch_warnings():  # a glyph the font lacks in a path: the chart is made all the same
        warnings.simplefilter("ignore")
        figure_, axes = plt.subplots(figsize=(7, 4))
        try:
            for name, latencies in series:
                values = sorted(latencies)
                if values:
                    shares = [(i + 1) / len(values) for i in range(len(values))]
                    axes.step(values, shares, where="post", label=label(f"{name} ({len(values)} calls)"))
            axes.set_xscale("log")
            axes.set_xlabel("latency, ms (log)")
            axes.set_ylabel("share of calls at or below")
            axes.set_ylim(0, 1.02)
            axes.set_title("latency CDF")
            if any(latencies for _, latencies in series):
                axes.legend(fontsize=7, loc="lower right")
            figure_.tight_layout()
            figure_.savefig(path, dpi=100, format="png")
        finally:
            plt.close(figure_)
