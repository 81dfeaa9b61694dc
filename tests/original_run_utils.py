"""The oracle: the drop-in's flag-off path exactly as it was before it was observed (resilient_llm/dropin/run_utils.py
at d0ac8d7, with the switch to the direct path taken out). The observed path must return and raise what this does."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from resilient_llm.protocol import prompt_messages

LOGGER = logging.getLogger("open_instruct.search_rewards.utils.run_utils")

SYNC_MAX_TOKENS = 800
ASYNC_MAX_TOKENS = 16384
NUM_RETRIES = 5
SYNC_FALLBACKS = ("gpt-4.1-mini",)


def _litellm_timeout() -> float:
    return float(os.environ.get("LITELLM_DEFAULT_TIMEOUT", str(600.0)))


def _chat_defaults(chat_kwargs: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    return {
        "temperature": 0,
        "top_p": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "max_tokens": max_tokens,
        **chat_kwargs,
    }


def run_litellm(model_name: str, user_prompt: str, system_prompt: str | None = None, **chat_kwargs: Any) -> str:
    kwargs = _chat_defaults(chat_kwargs, SYNC_MAX_TOKENS)
    import litellm

    kwargs.setdefault("num_retries", NUM_RETRIES)
    kwargs.setdefault("timeout", _litellm_timeout())
    kwargs.setdefault("fallbacks", list(SYNC_FALLBACKS))
    try:
        response = litellm.completion(model=model_name, messages=prompt_messages(system_prompt, user_prompt), **kwargs)
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
    kwargs = _chat_defaults(chat_kwargs, ASYNC_MAX_TOKENS)
    import litellm

    kwargs.setdefault("num_retries", NUM_RETRIES)
    kwargs.setdefault("timeout", _litellm_timeout())
    chat = list(messages) if messages is not None else prompt_messages(system_prompt, user_prompt)
    try:
        response = await litellm.acompletion(model=model_name, messages=chat, **kwargs)
        return response.choices[0].message.content or ""
    except Exception as exc:
        LOGGER.warning("run_litellm_async(%s) failed: %s", model_name, exc)
        return ""


def run_chatopenai(
    model_name: str, system_prompt: str | None, user_prompt: str, json_mode: bool = False, **chat_kwargs: Any
) -> str:
    chat_kwargs["temperature"] = chat_kwargs.get("temperature", 0)
    if json_mode:
        chat_kwargs["response_format"] = {"type": "json_object"}
    import litellm

    response = litellm.completion(model=model_name, messages=prompt_messages(system_prompt, user_prompt), **chat_kwargs)
    return str(response.choices[0].message.content)


def run_azure_openai(
    model_name: str,
    system_prompt: str | None,
    user_prompt: str,
    endpoint: str | None = None,
    deployment: str | None = None,
    api_version: str = "2024-12-01-preview",
    **chat_kwargs: Any,
) -> str:
    chat_kwargs = {
        "temperature": 0,
        "max_completion_tokens": SYNC_MAX_TOKENS,
        "top_p": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        **chat_kwargs,
    }
    api_key = os.environ.get("AZURE_OPENAI_API_KEY")
    if not api_key:
        raise ValueError("AZURE_OPENAI_API_KEY environment variable is required")
    endpoint = endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
    if not endpoint:
        raise ValueError("Azure OpenAI endpoint must be provided or set in AZURE_OPENAI_ENDPOINT environment variable")
    from openai import AzureOpenAI

    client = AzureOpenAI(api_version=api_version, azure_endpoint=endpoint, api_key=api_key)
    response = client.chat.completions.create(
        messages=prompt_messages(system_prompt, user_prompt),  # type: ignore[arg-type]
        model=deployment or model_name,
        **chat_kwargs,
    )
    return str(response.choices[0].message.content)
