"""``resilient-llm stats --compare A.jsonl B.jsonl``: two runs side by side, by model, with the ratio B/A.

A is typically a run on the original LiteLLM path (``USE_OPENROUTER_DIRECT=false`` with ``RESILIENT_LLM_LOG_FILE``
set), B the same work on the direct path; any two call logs of ours compare, the benchmark's included. Per model
and for all calls: success rate, outcome mix, latency percentiles, requests per call (where the log knows them:
LiteLLM does not say how often it retried), tokens and cost per call (over all calls, from the calls that report
them), and the judge model's neutral share.

A model named bare on one side (``gpt-4.1-mini``) and with its provider on the other (``openai/gpt-4.1-mini``) is
paired when that is the only match.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from typing import Any

from resilient_llm.cli.stats import ANSWERED, OUTCOMES, Group, read_lines
from resilient_llm.logs import CALL_EVENT

LATENCY = ("p50", "p95", "p99", "max")
# Every row's metrics, in display order: (key, label, decimals).
METRICS = (
    ("calls", "calls", 0),
    ("success_pct", "success %", 2),
    *((o, o, 0) for o in OUTCOMES),
    ("neutral_share", "neutral share", 4),
    *((f"{p}_ms", f"latency {p} ms", 1) for p in LATENCY),
    ("requests_per_call", "requests per call", 3),
    ("tokens_per_call", "tokens per call", 1),
    ("cost_per_call", "cost $ per call", 8),
)


@dataclasses.dataclass
class Tally(Group):
    """A stats group that also knows how many calls reported tokens and cost."""

    with_tokens: int = 0
    with_cost: int = 0

    def add(self, line: dict[str, Any]) -> None:
        super().add(line)
        self.with_tokens += any(_is_number(line.get(k)) for k in ("prompt_tokens", "completion_tokens"))
        self.with_cost += _is_number(line.get("cost"))


@dataclasses.dataclass
class Side:
    """One log file, read."""

    path: str
    total: Tally = dataclasses.field(default_factory=Tally)
    models: dict[str, Tally] = dataclasses.field(default_factory=lambda: collections.defaultdict(Tally))
    routes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    skipped: collections.Counter[str] = dataclasses.field(
        default_factory=lambda: collections.Counter({"malformed": 0, "foreign": 0})
    )
    judge_scores: dict[str, Any] | None = None
    judge_neutral_texts: int = 0


def read_side(path: str) -> Side:
    """Every call line of one log; lines that are not JSON objects, or not ours, are counted (OSError if unreadable)."""
    side = Side(path)
    for line in read_lines([path]):
        if line is None:
            side.skipped["malformed"] += 1
            continue
        event = line.get("event")
        if event == "judge_score":
            side.judge_scores = {
                k: line.get(k) for k in ("judge_calls", "judge_real", "judge_neutral", "neutral_share")
            }
        elif event == "judge_neutral_text":
            side.judge_neutral_texts += 1
        if event != CALL_EVENT:
            if line.get("logger_name") != "resilient_llm":
                side.skipped["foreign"] += 1
            continue
        if not isinstance(line.get("outcome"), str):
            side.skipped["malformed"] += 1
            continue
        side.total.add(line)
        side.models[str(line.get("model"))].add(line)
        side.routes[str(line.get("route"))] += 1
    return side


def metrics(group: Tally | None) -> dict[str, float | None]:
    """The row values of one group (all None when the side has no such calls)."""
    if group is None or not group.calls:
        return {key: (0 if key == "calls" else None) for key, _, _ in METRICS}
    calls = group.calls
    latency = group.summary()["latency_ms"]
    return {
        "calls": calls,
        "success_pct": 100.0 * sum(group.outcomes[o] for o in ANSWERED) / calls,
        **{o: group.outcomes[o] for o in OUTCOMES},
        "neutral_share": group.outcomes["neutral"] / calls,
        **{f"{p}_ms": latency[p] for p in LATENCY},
        "requests_per_call": sum(group.attempts) / len(group.attempts) if group.attempts else None,
        "tokens_per_call": (group.prompt_tokens + group.completion_tokens) / calls if group.with_tokens else None,
        "cost_per_call": group.cost / calls if group.with_cost else None,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """B/A, or None when either is unknown or A is zero."""
    return None if a is None or b is None or a == 0 else b / a


def bare(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def pair_models(a: Iterable[str], b: Iterable[str]) -> list[tuple[str | None, str | None]]:
    """Models of A and B side by side: same name first, then the same bare name when it is the only match."""
    left, right = sorted(a), set(b)
    pairs: dict[str, str | None] = {}
    for model in left:
        if model in right:
            pairs[model] = model
            right.discard(model)
    for model in (m for m in left if m not in pairs):
        matches = [other for other in right if bare(other) == bare(model)]
        pairs[model] = matches[0] if len(matches) == 1 else None
        right.discard(pairs[model] or "")
    return [*pairs.items(), *((None, m) for m in sorted(right))]


def _judge_share(side: Side, judge_model: str | None) -> float | None:
    if judge_model is None:
        return None
    exact = [g for m, g in side.models.items() if m == judge_model]
    groups = exact or [g for m, g in side.models.items() if bare(m) == bare(judge_model)]
    calls = sum(g.calls for g in groups)
    return sum(g.outcomes["neutral"] for g in groups) / calls if calls else None


def _row(name: str, a: Tally | None, b: Tally | None) -> dict[str, Any]:
    ma, mb = metrics(a), metrics(b)
    return {"model": name, "metrics": {k: {"a": ma[k], "b": mb[k], "ratio": ratio(ma[k], mb[k])} for k in ma}}


def _describe(side: Side, judge_model: str | None) -> dict[str, Any]:
    return {
        "path": side.path,
        "calls": side.total.calls,
        "routes": dict(side.routes),
        "skipped_lines": dict(side.skipped),
        "judge_neutral_share": _judge_share(side, judge_model),
        "judge_scores": side.judge_scores,
        "judge_neutral_texts": side.judge_neutral_texts,
    }


def compare(a: Side, b: Side, judge_model: str | None = None) -> dict[str, Any]:
    """The comparison as a dict (what ``--json`` prints)."""
    rows = [_row("all", a.total, b.total)]
    for model_a, model_b in pair_models(a.models, b.models):
        name = (
            model_a
            if model_a == model_b or model_b is None
            else model_b
            if model_a is None
            else f"{model_a} | {model_b}"
        )
        rows.append(_row(str(name), a.models.get(model_a or ""), b.models.get(model_b or "")))
    judge_a, judge_b = _judge_share(a, judge_model), _judge_share(b, judge_model)
    return {
        "a": _describe(a, judge_model),
        "b": _describe(b, judge_model),
        "judge": {"model": judge_model, "a": judge_a, "b": judge_b, "ratio": ratio(judge_a, judge_b)},
        "rows": rows,
    }


def _cell(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def render_text(report: dict[str, Any]) -> str:
    """Plain text: where each side came from, then one block per model with A, B and B/A."""
    lines = []
    for key in ("a", "b"):
        side = report[key]
        routes = " ".join(f"{r}={n}" for r, n in sorted(side["routes"].items())) or "none"
        skipped = side["skipped_lines"]
        lines.append(
            f"{key.upper()}: {side['path']}  ({side['calls']} calls; routes {routes}; "
            f"skipped {skipped['malformed']} malformed, {skipped['foreign']} foreign lines)"
        )
        if not side["calls"]:
            lines.append(f"   {key.upper()} has no llm_call lines: was RESILIENT_LLM_LOG_FILE set for that run?")
    for row in report["rows"]:
        lines += ["", f"{row['model']:<40} {'A':>14} {'B':>14} {'B/A':>9}"]
        for key, label, decimals in METRICS:
            cell = row["metrics"][key]
            if key in OUTCOMES and not (cell["a"] or cell["b"]):
                continue
            lines.append(
                f"  {label:<38} {_cell(cell['a'], decimals):>14} {_cell(cell['b'], decimals):>14} "
                f"{_cell(cell['ratio'], 3):>9}"
            )
    judge = report["judge"]
    lines.append("")
    if judge["model"] is None:
        lines.append("judge neutral share: - (name the judge with --judge-model or RUBRIC_JUDGE_MODEL)")
    else:
        lines.append(
            f"judge neutral share ({judge['model']}): A {_cell(judge['a'], 4)}, B {_cell(judge['b'], 4)}, "
            f"B/A {_cell(judge['ratio'], 3)}"
        )
    for key in ("a", "b"):
        side = report[key]
        if side["judge_neutral_texts"]:
            lines.append(f"{key.upper()}: judge calls answered with the neutral text: {side['judge_neutral_texts']}")
    return "\n".join(lines)


def plot(a: Side, b: Side, path: str) -> None:
    """Both latency CDFs (all calls) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, side in (("A", a), ("B", b)):
        values = sorted(side.total.latencies_ms)
        if values:
            shares = [(i + 1) / len(values) for i in range(len(values))]
            axes.step(values, shares, where="post", label=f"{name}: {side.path} ({len(values)} calls)")
    axes.set_xscale("log")
    axes.set_xlabel("latency, ms (log)")
    axes.set_ylabel("share of calls at or below")
    axes.set_ylim(0, 1.02)
    axes.set_title("latency CDF")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
