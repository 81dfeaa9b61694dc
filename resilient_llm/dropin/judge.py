"""The rubric judge: asks for ``{"score": x}`` on 0..scale and returns ``x / scale``.

A judge call that ends without a usable answer (neutral outcome, or a reply with no readable score) returns the
configured neutral score (``RESILIENT_LLM_NEUTRAL_SCORE``, default 0.5, the scale's midpoint), never a silent 0.0,
which for a negative rubric means "no penalty". Process-wide counters say how many rewards were neutral.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
from collections.abc import Mapping
from typing import Any

from resilient_llm.dropin.config import trainer_config
from resilient_llm.engine import Engine
from resilient_llm.process import default_engine
from resilient_llm.recorder import Source, register_source
from resilient_llm.types import ChatResult, Outcome

JUDGE_SYSTEM_PROMPT = (
    "You are a careful grader. Judge whether the response satisfies the given property of a good answer to the "
    'question. Reply with a JSON object only, of the form {"score": x}, where x is 0 (not satisfied), '
    "1 (partly satisfied) or 2 (fully satisfied)."
)
JUDGE_USER_TEMPLATE = 'Question:\n{question}\n\nResponse:\n{response}\n\nProperty:\n{prop}\n\nReturn {{"score": x}}.'
JUDGE_MAX_TOKENS = 64
ANSWERED = (Outcome.OK, Outcome.CACHED, Outcome.FALLBACK)


@dataclasses.dataclass(frozen=True)
class JudgeCounters:
    """Judge calls so far in this process: real scores, neutral ones (no answer), and unreadable replies."""

    calls: int = 0
    real: int = 0
    neutral: int = 0
    unparseable: int = 0

    @property
    def neutral_share(self) -> float:
        return (self.neutral + self.unparseable) / self.calls if self.calls else 0.0


class JudgeTally:
    """Thread-safe running counts of judge calls by kind (real, neutral, unparseable)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters = JudgeCounters()

    def record(self, kind: str) -> JudgeCounters:
        """Count one judge call; the counters after it."""
        with self._lock:
            now = self._counters
            self._counters = dataclasses.replace(now, calls=now.calls + 1, **{kind: getattr(now, kind) + 1})
            return self._counters

    def snapshot(self) -> JudgeCounters:
        return self._counters

    def reset(self) -> None:
        with self._lock:
            self._counters = JudgeCounters()


TALLY = JudgeTally()  # this process's judge calls, whatever engine served them


def judge_counters() -> JudgeCounters:
    """A snapshot of this process's judge counters."""
    return TALLY.snapshot()


def _tally_counts() -> dict[str, int]:
    now = TALLY.snapshot()
    return {
        "judge_calls": now.calls,
        "judge_real": now.real,
        "judge_neutral": now.neutral,
        "judge_unparseable": now.unparseable,
    }


# The engine's metrics (resilient_llm.metrics(), the Prometheus exporter) report the judge without importing it.
register_source(
    "judge", Source(_tally_counts, {"judge_neutral_share": (("judge_neutral", "judge_unparseable"), "judge_calls")})
)


_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a model's reply, from a ``{`` to the last ``}``: tried as is, then cleaned (trailing
    commas, control characters), then with doubled braces ``{{ }}`` collapsed, then from the next ``{``."""
    end = text.rfind("}")
    start = text.find("{")
    while start != -1 and start < end:
        candidate = text[start : end + 1]
        cleaned = _TRAILING_COMMA.sub(r"\1", _CONTROL.sub("", candidate))
        for attempt in (candidate, cleaned, cleaned.replace("{{", "{").replace("}}", "}")):
            try:
                parsed = json.loads(attempt)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
        start = text.find("{", start + 1)
    return None


def parse_score(text: str, scale: float) -> float | None:
    """``score / scale`` from a reply like ``{"score": 2}``; None when there is no score within 0..scale."""
    parsed = extract_json_object(text)
    raw = parsed.get("score") if parsed else None
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return None
    if not 0 <= raw <= scale:
        return None
    return float(raw) / scale


def judge_messages(
    response: str, question: str, prop: str, system_prompt: str | None, user_prompt: str | None
) -> list[Mapping[str, str]]:
    """Our prompt, or the caller's: a given ``user_prompt`` replaces the template, ``system_prompt`` the system text."""
    user = user_prompt or JUDGE_USER_TEMPLATE.format(question=question, response=response, prop=prop)
    return [{"role": "system", "content": system_prompt or JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def score_kind(result: ChatResult, score: float | None) -> str:
    """How a judge call counts: ``real`` (a readable score), ``unparseable`` (an answer without one) or ``neutral``."""
    if result.outcome not in ANSWERED:
        return "neutral"
    return "real" if score is not None else "unparseable"


def score_result(result: ChatResult, scale: float, engine: Engine) -> float:
    """The score a finished judge call gives; counts it, and logs one ``judge_score`` line."""
    score = parse_score(result.text, scale) if result.outcome in ANSWERED else None
    kind = score_kind(result, score)
    snapshot = TALLY.record(kind)
    final = trainer_config(engine.config).neutral_score if score is None else score
    engine.log.info(
        "judge_score",
        score=final,
        score_kind=kind,
        outcome=str(result.outcome),
        judge_calls=snapshot.calls,
        judge_real=snapshot.real,
        judge_neutral=snapshot.neutral,
        judge_unparseable=snapshot.unparseable,
        neutral_share=round(snapshot.neutral_share, 4),
    )
    return final


async def score_property_async(
    model: str,
    response: str,
    question: str,
    prop: str,
    system_prompt: str | None = None,
    user_prompt: str | None = None,
    score_scale: float = 2.0,
    engine: Engine | None = None,
) -> float:
    """Judge one property of one response, 0..1; the neutral score when the judge cannot answer."""
    eng = engine or default_engine()
    messages = judge_messages(response, question, prop, system_prompt, user_prompt)
    result = await eng.acomplete(model, messages, temperature=0, max_tokens=JUDGE_MAX_TOKENS, raise_caller_errors=False)
    return score_result(result, score_scale, eng)


def score_property(
    model: str,
    response: str,
    question: str,
    prop: str,
    system_prompt: str | None = None,
    user_prompt: str | None = None,
    score_scale: float = 2.0,
    engine: Engine | None = None,
) -> float:
    """The blocking twin of ``score_property_async``."""
    eng = engine or default_engine()
    messages = judge_messages(response, question, prop, system_prompt, user_prompt)
    result = eng.complete(model, messages, temperature=0, max_tokens=JUDGE_MAX_TOKENS, raise_caller_errors=False)
    return score_result(result, score_scale, eng)
