"""``resilient-llm stats --compare A.jsonl B.jsonl``: two runs side by side, by model, with the ratio B/A.

A is typically a run on the original LiteLLM path (``USE_OPENROUTER_DIRECT=false`` with ``RESILIENT_LLM_LOG_FILE``
set), B the same work on the direct path; any two call logs of ours compare, the benchmark's included. Per model
and for all calls: success rate, outcome mix, latency percentiles, requests per call (where the log knows them:
LiteLLM does not say how often it retried), tokens and cost per call (over all calls, from the calls that report
them), and the judge model's neutral share; then, per model, the upstream providers that answered (OpenRouter's, from
the ``provider`` field) with their share of the model's calls, success rate and latency on each side, so a judge
whose provider drifted between the runs shows. Any outcome string is counted under its own name (flagged apart
from neutral); lines and values the reader cannot use are skipped and counted, as ``stats`` does.

A model named bare on one side (``gpt-4.1-mini``) and with its provider on the other (``openai/gpt-4.1-mini``) is
paired when that is the only match.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from typing import Any

from resilient_llm.cli.log_reader import MAX_COST, MAX_TOKENS, figure, judge_fields, name_of, outcome_of, read_lines
from resilient_llm.cli.stats import ANSWERED, NO_PROVIDER, OUTCOMES, Group, ordered_outcomes, skipped_line
from resilient_llm.logs import CALL_EVENT

LATENCY = ("p50", "p95", "p99", "max")
# Every row's metrics, in display order: (key, label, decimals); the outcome counts come after success %.
HEAD = (("calls", "calls", 0), ("success_pct", "success %", 2))
TAIL = (
    ("neutral_share", "neutral share", 4),
    ("flagged_share", "flagged share", 4),
    *((f"{p}_ms", f"latency {p} ms", 1) for p in LATENCY),
    ("requests_per_call", "requests per call", 3),
    ("tokens_per_call", "tokens per call", 1),
    ("cost_per_call", "cost $ per call", 8),
)
BASE_KEYS = frozenset(key for key, _, _ in (*HEAD, *TAIL))


@dataclasses.dataclass
class Tally(Group):
    """A stats group that also knows how many calls reported tokens and cost."""

    with_tokens: int = 0
    with_cost: int = 0

    def add(self, line: dict[str, Any]) -> None:
        super().add(line)
        tokens = (figure(line.get(k), MAX_TOKENS) for k in ("prompt_tokens", "completion_tokens"))
        self.with_tokens += any(n is not None for n in tokens)
        self.with_cost += figure(line.get("cost"), MAX_COST) is not None


@dataclasses.dataclass
class Side:
    """One log file, read."""

    path: str
    total: Tally = dataclasses.field(default_factory=Tally)
    models: dict[str, Tally] = dataclasses.field(default_factory=lambda: collections.defaultdict(Tally))
    providers: dict[tuple[str, str], Tally] = dataclasses.field(default_factory=lambda: collections.defaultdict(Tally))
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
            side.judge_scores = judge_fields(line)
        elif event == "judge_neutral_text":
            side.judge_neutral_texts += 1
        if event != CALL_EVENT:
            if line.get("logger_name") != "resilient_llm":
                side.skipped["foreign"] += 1
            continue
        if outcome_of(line) is None:
            side.skipped["malformed"] += 1
            continue
        model = name_of(line.get("model"))
        side.total.add(line)
        side.models[model].add(line)
        side.providers[(model, name_of(line.get("provider"), NO_PROVIDER))].add(line)
        side.routes[name_of(line.get("route"))] += 1
    return side


def outcome_key(outcome: str) -> str:
    """The metrics key of an outcome count: its name, unless a log's outcome is named like another metric."""
    return f"outcome:{outcome}" if outcome in BASE_KEYS else outcome


def row_outcomes(*groups: Tally | None) -> list[str]:
    """Every known outcome (a count of 0 included), then any other seen in one of the groups."""
    seen = collections.Counter[str]()
    for group in groups:
        if group is not None:
            seen.update(group.outcomes)
    return [*OUTCOMES, *(o for o in ordered_outcomes(seen) if o not in OUTCOMES)]


def metrics(group: Tally | None, outcomes: list[str]) -> dict[str, float | None]:
    """The row values of one group, with a count for each of ``outcomes`` (all None when the side has no such
    calls)."""
    keys = [key for key, _, _ in HEAD] + [outcome_key(o) for o in outcomes] + [key for key, _, _ in TAIL]
    if group is None or not group.calls:
        return {key: (0 if key == "calls" else None) for key in keys}
    calls = group.calls
    latency = group.summary()["latency_ms"]
    return {
        "calls": calls,
        "success_pct": 100.0 * sum(group.outcomes[o] for o in ANSWERED) / calls,
        **{outcome_key(o): group.outcomes[o] for o in outcomes},
        "neutral_share": group.share("neutral"),
        "flagged_share": group.share("flagged"),
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
    outcomes = row_outcomes(a, b)
    ma, mb = metrics(a, outcomes), metrics(b, outcomes)
    return {
        "model": name,
        "outcomes": outcomes,
        "metrics": {k: {"a": ma[k], "b": mb[k], "ratio": ratio(ma[k], mb[k])} for k in ma},
    }


def _provider_side(side: Side, model: str | None, provider: str) -> dict[str, Any] | None:
    group = side.providers.get((model, provider)) if model is not None else None
    if group is None or not group.calls:
        return None
    latency = group.summary()["latency_ms"]
    return {
        "calls": group.calls,
        "model_share": group.calls / side.models[model].calls if model is not None else None,
        "success_pct": 100.0 * sum(group.outcomes[o] for o in ANSWERED) / group.calls,
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
    }


def provider_rows(a: Side, b: Side) -> list[dict[str, Any]]:
    """Per paired model, each provider that answered on either side, with its share of the model's calls."""
    rows = []
    for model_a, model_b in pair_models(a.models, b.models):
        names = {p for (m, p) in a.providers if m == model_a} | {p for (m, p) in b.providers if m == model_b}
        for provider in sorted(names):
            rows.append(
                {
                    "model": model_a or model_b,
                    "provider": provider,
                    "a": _provider_side(a, model_a, provider),
                    "b": _provider_side(b, model_b, provider),
                }
            )
    return rows


def _describe(side: Side, judge_model: str | None) -> dict[str, Any]:
    return {
        "path": side.path,
        "calls": side.total.calls,
        "routes": dict(side.routes),
        "skipped_lines": dict(side.skipped),
        "unusable_values": side.total.unusable,
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
        "providers": provider_rows(a, b),
    }


def _cell(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def _provider_cell(side: dict[str, Any] | None) -> str:
    if side is None:
        return "none"
    return (
        f"{side['calls']} calls ({side['model_share'] * 100:.1f}%), {side['success_pct']:.1f}% ok, "
        f"p50 {_cell(side['p50_ms'], 0)}"
    )


def render_text(report: dict[str, Any]) -> str:
    """Plain text: where each side came from, then one block per model with A, B and B/A."""
    lines = []
    for key in ("a", "b"):
        side = report[key]
        routes = " ".join(f"{r}={n}" for r, n in sorted(side["routes"].items())) or "none"
        lines.append(
            f"{key.upper()}: {side['path']}  ({side['calls']} calls; routes {routes}; "
            f"{skipped_line(side['skipped_lines'], side['unusable_values'])})"
        )
        if not side["calls"]:
            lines.append(f"   {key.upper()} has no llm_call lines: was RESILIENT_LLM_LOG_FILE set for that run?")
    for row in report["rows"]:
        lines += ["", f"{row['model']:<40} {'A':>14} {'B':>14} {'B/A':>9}"]
        shown = [*HEAD, *((outcome_key(o), o, 0) for o in row["outcomes"]), *TAIL]
        for key, name, decimals in shown:
            cell = row["metrics"][key]
            if (key == "flagged_share" or key in row["outcomes"]) and not (cell["a"] or cell["b"]):
                continue
            lines.append(
                f"  {name:<38} {_cell(cell['a'], decimals):>14} {_cell(cell['b'], decimals):>14} "
                f"{_cell(cell['ratio'], 3):>9}"
            )
    answered_by = [p for p in report["providers"] if p["provider"] != NO_PROVIDER]
    if answered_by:
        lines += ["", "providers that answered (share of the model's calls, success %, p50 ms):"]
        for p in answered_by:
            lines.append(f"  {p['model']} from {p['provider']}: A {_provider_cell(p['a'])}, B {_provider_cell(p['b'])}")
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
