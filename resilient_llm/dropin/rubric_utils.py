"""The rubric judge for the trainer, with the trainer's signature.

``USE_OPENROUTER_DIRECT=true``: resilient_llm's judge, which scores a call that could not be answered with
``RESILIENT_LLM_NEUTRAL_SCORE`` (default 0.5) and counts it. Otherwise: LiteLLM through ``run_utils``, where a failed
or unreadable judge call scores 0.0, as the original does.
"""

from __future__ import annotations

import os

from resilient_llm.dropin import judge
from resilient_llm.dropin.config import use_openrouter_direct
from resilient_llm.dropin.run_utils import extract_json_from_response, run_litellm, run_litellm_async

__all__ = ["_score_property", "_score_property_async", "judge_model"]

DEFAULT_JUDGE_MODEL = "gpt-4.1-mini"


def judge_model() -> str:
    default = f"openai/{DEFAULT_JUDGE_MODEL}" if use_openrouter_direct() else DEFAULT_JUDGE_MODEL
    return os.environ.get("RUBRIC_JUDGE_MODEL") or default


def _litellm_score(reply: str, score_scale: float) -> float:
    parsed = extract_json_from_response(reply) if reply else None
    try:
        return float(parsed["score"]) / score_scale if parsed else 0.0
    except (KeyError, TypeError, ValueError):
        return 0.0


async def _score_property_async(
    response: str,
    question: str,
    prop: str,
    system_prompt: str | None = None,
    user_prompt: str | None = None,
    score_scale: float = 2.0,
) -> float:
    """Score one rubric property of a response, 0..1."""
    if use_openrouter_direct():
        return await judge.score_property_async(
            judge_model(), response, question, prop, system_prompt, user_prompt, score_scale
        )
    messages = judge.judge_messages(response, question, prop, system_prompt, user_prompt)
    reply = await run_litellm_async(judge_model(), messages=messages, max_tokens=judge.JUDGE_MAX_TOKENS)
    return _litellm_score(reply, score_scale)


def _score_property(
    response: str,
    question: str,
    prop: str,
    system_prompt: str | None = None,
    user_prompt: str | None = None,
    score_scale: float = 2.0,
) -> float:
    """The blocking twin of ``_score_property_async``."""
    if use_openrouter_direct():
        return judge.score_property(judge_model(), response, question, prop, system_prompt, user_prompt, score_scale)
    system, user = judge.judge_messages(response, question, prop, system_prompt, user_prompt)
    reply = run_litellm(judge_model(), user["content"], system["content"], max_tokens=judge.JUDGE_MAX_TOKENS)
    return _litellm_score(reply, score_scale)
