"""Read our structured JSON logs (training or benchmark) and summarise them: success rate, outcome mix, latency,
attempts, tokens, cost, breaker trips, neutral and flagged shares; grouped by model and route, by model and the
provider that answered (OpenRouter's upstream: a judge served by another provider is another judge), optionally per
time window.

A log reader must read whatever a crashed or foreign process left: lines that are not JSON objects (truncated,
binary, a stack trace) are counted as malformed, lines of other programs as foreign, and a field it cannot use (a
count of 1e308, a NaN, text where a number belongs, a timestamp of year 1) is left out of the figures and counted,
never the cause of a traceback. Any outcome string is counted under its own name.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from typing import Any

from resilient_llm.cli.log_reader import (
    MAX_ATTEMPTS,
    MAX_COST,
    MAX_LATENCY_MS,
    MAX_TOKENS,
    figure,
    judge_fields,
    name_of,
    outcome_of,
    read_lines,
    timestamp,
    window_start,
)
from resilient_llm.policy.percentiles import percentiles

ANSWERED = ("ok", "cached", "fallback")
# Outcomes in display order; any other outcome string a log holds follows them, sorted.
OUTCOMES = ("ok", "cached", "fallback", "flagged", "neutral", "error", "cancelled")
NO_PROVIDER = "-"  # calls no provider answered (errors, neutral, LiteLLM), old cache entries, logs before the field


@dataclasses.dataclass
class Group:
    """Accumulates the call lines of one group or window."""

    calls: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    attempts: list[int] = dataclasses.field(default_factory=list)
    prompt_tokens: float = 0
    completion_tokens: float = 0
    cost: float = 0.0
    unusable: int = 0  # fields present but not usable (wrong type, not finite, out of range)

    def add(self, line: dict[str, Any]) -> None:
        self.calls += 1
        self.outcomes[outcome_of(line) or "?"] += 1
        latency = self._figure(line, "latency_ms", MAX_LATENCY_MS)
        if latency is not None:
            self.latencies_ms.append(latency)
        attempts = line.get("attempts")
        if isinstance(attempts, int) and not isinstance(attempts, bool) and 0 <= attempts <= MAX_ATTEMPTS:
            self.attempts.append(attempts)
        elif attempts is not None:
            self.unusable += 1
        self.prompt_tokens += self._figure(line, "prompt_tokens", MAX_TOKENS) or 0.0
        self.completion_tokens += self._figure(line, "completion_tokens", MAX_TOKENS) or 0.0
        self.cost += self._figure(line, "cost", MAX_COST) or 0.0

    def _figure(self, line: dict[str, Any], name: str, limit: float) -> float | None:
        value = line.get(name)
        number = figure(value, limit)
        if number is None and value is not None:
            self.unusable += 1
        return number

    def share(self, outcome: str) -> float:
        return self.outcomes[outcome] / self.calls if self.calls else 0.0

    def summary(self) -> dict[str, Any]:
        answered = sum(self.outcomes[o] for o in ANSWERED)
        return {
            "calls": self.calls,
            "success_pct": 100.0 * answered / self.calls if self.calls else 0.0,
            "outcomes": {o: self.outcomes[o] for o in ordered_outcomes(self.outcomes)},
            "neutral_share": self.share("neutral"),
            "flagged_share": self.share("flagged"),
            "latency_ms": percentiles(self.latencies_ms),
            "attempts_mean": sum(self.attempts) / len(self.attempts) if self.attempts else 0.0,
            "attempts_max": max(self.attempts, default=0),
            "prompt_tokens": int(self.prompt_tokens),
            "completion_tokens": int(self.completion_tokens),
            "cost": round(self.cost, 8),
        }


def ordered_outcomes(counts: collections.Counter[str]) -> list[str]:
    """The outcomes seen, known ones in display order, then any others sorted."""
    return [o for o in OUTCOMES if counts[o]] + sorted(o for o in counts if o not in OUTCOMES and counts[o])


def summarize(paths: Iterable[str], window_s: float | None = None) -> dict[str, Any]:
    """The whole report as a dict (what ``--json`` prints)."""
    total = Group()
    groups: dict[tuple[str, str], Group] = collections.defaultdict(Group)
    providers: dict[tuple[str, str], Group] = collections.defaultdict(Group)
    windows: dict[int, Group] = collections.defaultdict(Group)
    skipped = collections.Counter({"malformed": 0, "foreign": 0})
    trips = substitutions = hedges = hedges_won = 0
    judge: dict[str, Any] = {}
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
            judge = judge_fields(line)
        if event != "llm_call":
            if line.get("logger_name") != "resilient_llm":
                skipped["foreign"] += 1
            continue
        if outcome_of(line) is None:
            skipped["malformed"] += 1
            continue
        model = name_of(line.get("model"))
        total.add(line)
        groups[(model, name_of(line.get("route")))].add(line)
        providers[(model, name_of(line.get("provider"), NO_PROVIDER))].add(line)
        ts = timestamp(line)
        if window_s and ts is not None:
            windows[int(ts // window_s)].add(line)
    model_calls = collections.Counter[str]()
    for (model, _), group in providers.items():
        model_calls[model] += group.calls
    report: dict[str, Any] = {
        "total": total.summary(),
        "by_model_route": [
            {"model": model, "route": route, **group.summary()} for (model, route), group in sorted(groups.items())
        ],
        "by_provider": [
            {"model": model, "provider": provider, "model_share": group.calls / model_calls[model], **group.summary()}
            for (model, provider), group in sorted(providers.items())
        ],
        "breaker_trips": trips,
        "judge": judge or None,
        "judge_neutral_texts": substitutions,
        "hedges": {"sent": hedges, "won": hedges_won},
        "skipped_lines": dict(skipped),
        "unusable_values": total.unusable,
    }
    if window_s:
        report["windows"] = [{"start": window_start(k, window_s), **g.summary()} for k, g in sorted(windows.items())]
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_text(report: dict[str, Any]) -> str:
    """A plain-text report for the terminal."""

    def row(name: str, s: dict[str, Any]) -> str:
        lat = s["latency_ms"]
        mix = " ".join(f"{k}={v}" for k, v in s["outcomes"].items())
        return (
            f"{name:<48} {s['calls']:>7} {s['success_pct']:>8.2f}% {s['neutral_share'] * 100:>8.2f}% "
            f"{s['flagged_share'] * 100:>8.2f}% {_ms(lat['p50']):>7} {_ms(lat['p99']):>7} {s['attempts_mean']:>6.2f} "
            f"{s['cost']:>10.4f}  {mix}"
        )

    header = (
        f"{'group':<48} {'calls':>7} {'success':>9} {'neutral':>9} {'flagged':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'att.':>6} {'cost $':>10}  outcomes"
    )
    lines = [header, row("all", report["total"])]
    if not report["total"]["calls"]:
        lines.append("no llm_call lines in these logs: was RESILIENT_LLM_LOG_FILE set for that run?")
    lines += [row(f"{g['model']} via {g['route']}", g) for g in report["by_model_route"]]
    for window in report.get("windows", []):
        lines.append(row(f"window {window['start']}", window))
    if any(p["provider"] != NO_PROVIDER for p in report["by_provider"]):
        lines += ["", "by the provider that answered (share of the model's calls):"]
        for p in report["by_provider"]:
            lines.append(row(f"{p['model']} from {p['provider']} ({p['model_share'] * 100:.1f}%)", p))
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
    lines.append(skipped_line(report["skipped_lines"], report["unusable_values"]))
    return "\n".join(lines)


def skipped_line(skipped: dict[str, int], unusable: int) -> str:
    """The one line that says what was left out."""
    line = f"skipped lines: {skipped['malformed']} malformed, {skipped['foreign']} foreign"
    return line + (f"; {unusable} unusable values left out of the figures" if unusable else "")
