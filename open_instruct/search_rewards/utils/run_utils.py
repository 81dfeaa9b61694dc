"""The trainer's LLM-calling helpers, switchable at call time between LiteLLM (as before) and resilient_llm.

``USE_OPENROUTER_DIRECT=true`` routes every call through resilient_llm's engine (retries, a process-wide
concurrency limit, structured logs); unset or false keeps the original LiteLLM path. Either way a failed call
returns ``""`` (or ``RESILIENT_LLM_NEUTRAL_TEXT`` on the direct path) instead of raising into training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from resilient_llm.judge import extract_json_object
from resilient_llm.settings import parse_bool

LOGGER = logging.getLogger(__name__)

SYNC_MAX_TOKENS = 800
ASYNC_MAX_TOKENS = 16384
NUM_RETRIES = 5
SYNC_FALLBACKS = ("gpt-4.1-mini",)


def use_openrouter_direct() -> bool:
    """Read ``USE_OPENROUTER_DIRECT`` now (true/false); a bad value raises ConfigError naming it."""
    return parse_bool("USE_OPENROUTER_DIRECT", os.environ.get("USE_OPENROUTER_DIRECT"), default=False)


def _litellm_timeout() -> float:
    return float(os.environ.get("LITELLM_DEFAULT_TIMEOUT", "600"))


def _chat_defaults(chat_kwargs: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    return {
        "temperature": 0,
        "top_p": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "max_tokens": max_tokens,
        **chat_kwargs,
    }


def _messages(system_prompt: str | None, user_prompt: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    messages.append({"role": "user", "content": user_prompt})
    return messages


def run_litellm(model_name: str, user_prompt: str, system_prompt: str | None = None, **chat_kwargs: Any) -> str:
    """One chat completion, blocking; the answer text, or ``""`` when nothing answered."""
    kwargs = _chat_defaults(chat_kwargs, SYNC_MAX_TOKENS)
    if use_openrouter_direct():
        from open_instruct.search_rewards.utils.openrouter_replacement import call_openrouter

        return call_openrouter(model_name, user_prompt, system_prompt, **kwargs)
    import litellm

    kwargs.setdefault("num_retries", NUM_RETRIES)
    kwargs.setdefault("timeout", _litellm_timeout())
    kwargs.setdefault("fallbacks", list(SYNC_FALLBACKS))
    try:
        response = litellm.completion(model=model_name, messages=_messages(system_prompt, user_prompt), **kwargs)
        return response.choices[0].message.content or ""
    except Exception as exc:
        LOGGER.warning("run_litellm(%s) failed: %s", model_name, exc)
        return ""


async def run_litellm_async(
    model_name: str,
    user_prompt: str | None = None,
    system_prompt: str | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
    **chat_kwargs: Any,
) -> str:
    """One chat completion, awaitable; ``messages``, when given, replaces the prompts. ``""`` when nothing answered."""
    kwargs = _chat_defaults(chat_kwargs, ASYNC_MAX_TOKENS)
    if use_openrouter_direct():
        from open_instruct.search_rewards.utils.openrouter_replacement import call_openrouter_async

        return await call_openrouter_async(model_name, user_prompt, system_prompt, messages, **kwargs)
    import litellm

    kwargs.setdefault("num_retries", NUM_RETRIES)
    kwargs.setdefault("timeout", _litellm_timeout())
    chat = list(messages) if messages is not None else _messages(system_prompt, user_prompt)
    try:
        response = await litellm.acompletion(model=model_name, messages=chat, **kwargs)
        return response.choices[0].message.content or ""
    except Exception as exc:
        LOGGER.warning("run_litellm_async(%s) failed: %s", model_name, exc)
        return ""


def extract_json_from_response(response: str) -> dict[str, Any] | None:
    """The first JSON object in a model's reply (code fences, prose and doubled braces tolerated), or None."""
    return extract_json_object(response)
