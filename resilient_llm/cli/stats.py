"""Read our structured JSON logs (training or benchmark) and summarise them: success rate, outcome mix, latency,
attempts, tokens, cost, breaker trips, neutral share; grouped by model and route, optionally per time window.

Lines that are not JSON objects, or not ours, are counted and skipped: a log shared with other programs is fine.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from resilient_llm.policy.percentiles import percentiles

ANSWERED = ("ok", "cached", "fallback")
OUTCOMES = ("ok", "cached", "fallback", "neutral", "error", "cancelled")


@dataclasses.dataclass
class Group:
    """Accumulates the call lines of one (model, route) group or window."""

    calls: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    attempts: list[int] = dataclasses.field(default_factory=list)
    prompt_tokens: float = 0
    completion_tokens: float = 0
    cost: float = 0.0

    def add(self, line: dict[str, Any]) -> None:
        self.calls += 1
        self.outcomes[str(line.get("outcome"))] += 1
        latency = _number(line.get("latency_ms"), None)
        if latency is not None:
            self.latencies_ms.append(latency)
        if isinstance(line.get("attempts"), int) and not isinstance(line["attempts"], bool):
            self.attempts.append(line["attempts"])
        self.prompt_tokens += _number(line.get("prompt_tokens"))
        self.completion_tokens += _number(line.get("completion_tokens"))
        self.cost += _number(line.get("cost"))

    def summary(self) -> dict[str, Any]:
        answered = sum(self.outcomes[o] for o in ANSWERED)
        return {
            "calls": self.calls,
            "success_pct": 100.0 * answered / self.calls if self.calls else 0.0,
            "outcomes": {o: self.outcomes[o] for o in OUTCOMES if self.outcomes[o]},
            "neutral_share": self.outcomes["neutral"] / self.calls if self.calls else 0.0,
            "latency_ms": percentiles(self.latencies_ms),
            "attempts_mean": sum(self.attempts) / len(self.attempts) if self.attempts else 0.0,
            "attempts_max": max(self.attempts, default=0),
            "prompt_tokens": int(self.prompt_tokens),
            "completion_tokens": int(self.completion_tokens),
            "cost": round(self.cost, 8),
        }


def _number(value: Any, default: float | None = 0.0) -> Any:
    """A finite number from a log line, else ``default`` (a NaN or infinity there must not poison the sums)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else default


def read_lines(paths: Iterable[str]) -> Iterator[dict[str, Any] | None]:
    """Each line as a dict, or None for a line that is not a JSON object."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    yield None
                    continue
                yield line if isinstance(line, dict) else None


def _timestamp(line: dict[str, Any]) -> float | None:
    try:
        return datetime.datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None


def summarize(paths: Iterable[str], window_s: float | None = None) -> dict[str, Any]:
    """The whole report as a dict (what ``--json`` prints)."""
    total = Group()
    groups: dict[tuple[str, str], Group] = collections.defaultdict(Group)
    windows: dict[int, Group] = collections.defaultdict(Group)
    skipped = collections.Counter({"malformed": 0, "foreign": 0})
    trips = substitutions = hedges = hedges_won = 0
    judge: dict[str, Any] = {}
    first_ts: float | None = None
    for line in read_lines(paths):
        if line is None:
            skipped["malformed"] += 1
            continue
        event = line.get("event")
        if event == "breaker_state_change" and line.get("to_state") == "open":
            trips += 1
        elif event == "judge_neutral_text":
            substitutions += 1
        elif event == "hedge":
            hedges += 1
        elif event == "hedge_won":
            hedges_won += 1
        elif event == "judge_score":
            judge = {k: line.get(k) for k in ("judge_calls", "judge_real", "judge_neutral", "neutral_share")}
        if event != "llm_call":
            if line.get("logger_name") != "resilient_llm":
                skipped["foreign"] += 1
            continue
        if not isinstance(line.get("outcome"), str):
            skipped["malformed"] += 1
            continue
        total.add(line)
        groups[(str(line.get("model")), str(line.get("route", "?")))].add(line)
        ts = _timestamp(line)
        if window_s and ts is not None:
            first_ts = ts if first_ts is None else min(first_ts, ts)
            windows[int(ts // window_s)].add(line)
    report: dict[str, Any] = {
        "total": total.summary(),
        "by_model_route": [
            {"model": model, "route": route, **group.summary()} for (model, route), group in sorted(groups.items())
        ],
        "breaker_trips": trips,
        "judge": judge or None,
        "judge_neutral_texts": substitutions,
        "hedges": {"sent": hedges, "won": hedges_won},
        "skipped_lines": dict(skipped),
    }
    if window_s:
        report["windows"] = [
            {"start": datetime.datetime.fromtimestamp(k * window_s, datetime.UTC).isoformat(), **g.summary()}
            for k, g in sorted(windows.items())
        ]
    return report


def render_text(report: dict[str, Any]) -> str:
    """A plain-text report for the terminal."""

    def row(name: str, s: dict[str, Any]) -> str:
        lat = s["latency_ms"]
        p50 = "-" if lat["p50"] is None else f"{lat['p50']:.0f}"
        p99 = "-" if lat["p99"] is None else f"{lat['p99']:.0f}"
        mix = " ".join(f"{k}={v}" for k, v in s["outcomes"].items())
        return (
            f"{name:<48} {s['calls']:>7} {s['success_pct']:>8.2f}% {s['neutral_share'] * 100:>8.2f}% "
            f"{p50:>7} {p99:>7} {s['attempts_mean']:>6.2f} {s['cost']:>10.4f}  {mix}"
        )

    header = f"{'group':<48} {'calls':>7} {'success':>9} {'neutral':>9} {'p50 ms':>7} {'p99 ms':>7} {'att.':>6} "
    lines = [header + f"{'cost $':>10}  outcomes", row("all", report["total"])]
    lines += [row(f"{g['model']} via {g['route']}", g) for g in report["by_model_route"]]
    for window in report.get("windows", []):
        lines.append(row(f"window {window['start']}", window))
    lines.append(f"breaker trips: {report['breaker_trips']}")
    if report["hedges"]["sent"]:
        lines.append(f"hedges: {report['hedges']['sent']} sent, {report['hedges']['won']} answered first")
    if report["judge"]:
        j = report["judge"]
        lines.append(
            f"judge: {j['judge_calls']} calls, {j['judge_real']} real, {j['judge_neutral']} neutral "
            f"(neutral share {j['neutral_share']})"
        )
    if report["judge_neutral_texts"]:
        lines.append(f"judge calls answered with RESILIENT_LLM_JUDGE_NEUTRAL_TEXT: {report['judge_neutral_texts']}")
    skipped = report["skipped_lines"]
    lines.append(f"skipped lines: {skipped['malformed']} malformed, {skipped['foreign']} foreign")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    """Outcome mix per window (or per group without windows) as a stacked bar PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.get("windows") or report["by_model_route"]
    labels = [r.get("start", f"{r.get('model')} / {r.get('route')}")[-19:] for r in rows]
    figure, axes = plt.subplots(figsize=(max(6.0, len(rows) * 0.6), 4))
    bottom = [0.0] * len(rows)
    for outcome in OUTCOMES:
        values = [float(r["outcomes"].get(outcome, 0)) for r in rows]
        if any(values):
            axes.bar(labels, values, bottom=bottom, label=outcome)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_ylabel("calls")
    axes.set_title("outcomes")
    axes.legend()
    axes.tick_params(axis="x", rotation=60)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
