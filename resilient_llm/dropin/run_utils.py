"""The trainer's ``run_utils`` helpers, switchable at call time between LiteLLM / the OpenAI SDK (as before) and
resilient_llm.

``USE_OPENROUTER_DIRECT=true`` routes every LLM-calling function through resilient_llm's engine (retries, a
process-wide concurrency limit, breaker, cache, structured logs); unset or false keeps the original path, and the
engine is never started. ``run_litellm`` / ``run_litellm_async`` never raise into training: a failed call returns
``""`` (on the direct path, the configured neutral text). With ``RESILIENT_LLM_LOG_FILE`` set, the original path
also writes one ``llm_call`` line per call (``dropin/observe_original.py``) and changes nothing else.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from resilient_llm.dropin.config import use_openrouter_direct
from resilient_llm.dropin.judge import extract_json_object
from resilient_llm.dropin.observe_original import AZURE_ROUTE, LITELLM_ROUTE, observe
from resilient_llm.protocol import prompt_messages
from resilient_llm.types import DEFAULT_NUM_RETRIES, DEFAULT_TIMEOUT_S

__all__ = [
    "extract_json_from_response",
    "load_jsonlines",
    "run_azure_openai",
    "run_chatopenai",
    "run_litellm",
    "run_litellm_async",
    "save_file_jsonl",
    "use_openrouter_direct",
]

LOGGER = logging.getLogger("open_instruct.search_rewards.utils.run_utils")

SYNC_MAX_TOKENS = 800
ASYNC_MAX_TOKENS = 16384
NUM_RETRIES = DEFAULT_NUM_RETRIES
SYNC_FALLBACKS = ("gpt-4.1-mini",)


def _litellm_timeout() -> float:
    return float(os.environ.get("LITELLM_DEFAULT_TIMEOUT", str(DEFAULT_TIMEOUT_S)))


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
    """One chat completion, blocking; the answer text, or ``""`` when nothing answered."""
    kwargs = _chat_defaults(chat_kwargs, SYNC_MAX_TOKENS)
    if use_openrouter_direct():
        from resilient_llm.dropin.openrouter_replacement import call_openrouter

        return call_openrouter(model_name, user_prompt, system_prompt, **kwargs)
    import litellm

    kwargs.setdefault("num_retries", NUM_RETRIES)
    kwargs.setdefault("timeout", _litellm_timeout())
    kwargs.setdefault("fallbacks", list(SYNC_FALLBACKS))
    with observe("run_litellm", LITELLM_ROUTE, model_name, system=system_prompt, user=user_prompt) as seen:
        try:
            response = litellm.completion(
                model=model_name, messages=prompt_messages(system_prompt, user_prompt), **kwargs
            )
            return seen.answered(response, response.choices[0].message.content or "")
        except Exception as exc:
            LOGGER.warning("run_litellm(%s) failed: %s", model_name, exc)
            return seen.swallowed(exc, "")


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
        from resilient_llm.dropin.openrouter_replacement import call_openrouter_async

        return await call_openrouter_async(model_name, user_prompt, system_prompt, messages, **kwargs)
    import litellm

    kwargs.setdefault("num_retries", NUM_RETRIES)
    kwargs.setdefault("timeout", _litellm_timeout())
    chat = list(messages) if messages is not None else prompt_messages(system_prompt, user_prompt)
    with observe("run_litellm_async", LITELLM_ROUTE, model_name, messages=chat) as seen:
        try:
            response = await litellm.acompletion(model=model_name, messages=chat, **kwargs)
            return seen.answered(response, response.choices[0].message.content or "")
        except Exception as exc:
            LOGGER.warning("run_litellm_async(%s) failed: %s", model_name, exc)
            return seen.swallowed(exc, "")


def extract_json_from_response(response: str) -> dict[str, Any] | None:
    """The first JSON object in a model's reply (code fences, prose and doubled braces tolerated), or None."""
    return extract_json_object(response)


def run_chatopenai(
    model_name: str, system_prompt: str | None, user_prompt: str, json_mode: bool = False, **chat_kwargs: Any
) -> str:
    """One chat completion; ``json_mode`` asks for a JSON object. On the LiteLLM path errors raise, as before."""
    chat_kwargs["temperature"] = chat_kwargs.get("temperature", 0)
    if json_mode:
        chat_kwargs["response_format"] = {"type": "json_object"}
    if use_openrouter_direct():
        from resilient_llm.dropin.openrouter_replacement import call_openrouter

        return call_openrouter(model_name, user_prompt, system_prompt, **chat_kwargs)
    import litellm

    with observe("run_chatopenai", LITELLM_ROUTE, model_name, system=system_prompt, user=user_prompt) as seen:
        response = litellm.completion(
            model=model_name, messages=prompt_messages(system_prompt, user_prompt), **chat_kwargs
        )
        return seen.answered(response, str(response.choices[0].message.content))


def run_azure_openai(
    model_name: str,
    system_prompt: str | None,
    user_prompt: str,
    endpoint: str | None = None,
    deployment: str | None = None,
    api_version: str = "2024-12-01-preview",
    **chat_kwargs: Any,
) -> str:
    """Azure OpenAI through the OpenAI SDK (``AZURE_OPENAI_API_KEY``, ``AZURE_OPENAI_ENDPOINT``); on the direct path,
    the same call goes to the engine with ``model_name`` as the model."""
    chat_kwargs = {
        "temperature": 0,
        "max_completion_tokens": SYNC_MAX_TOKENS,
        "top_p": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        **chat_kwargs,
    }
    if use_openrouter_direct():
        from resilient_llm.dropin.openrouter_replacement import call_openrouter

        chat_kwargs["max_tokens"] = chat_kwargs.pop("max_completion_tokens")
        return call_openrouter(model_name, user_prompt, system_prompt, **chat_kwargs)
    with observe("run_azure_openai", AZURE_ROUTE, model_name, system=system_prompt, user=user_prompt) as seen:
        api_key = os.environ.get("AZURE_OPENAI_API_KEY")
        if not api_key:
            raise ValueError("AZURE_OPENAI_API_KEY environment variable is required")
        endpoint = endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise ValueError(
                "Azure OpenAI endpoint must be provided or set in AZURE_OPENAI_ENDPOINT environment variable"
            )
        from openai import AzureOpenAI

        client = AzureOpenAI(api_version=api_version, azure_endpoint=endpoint, api_key=api_key)
        response = client.chat.completions.create(
            messages=prompt_messages(system_prompt, user_prompt),  # type: ignore[arg-type]
            model=deployment or model_name,
            **chat_kwargs,
        )
        return seen.answered(response, str(response.choices[0].message.content))


def load_jsonlines(file: str) -> list[Any]:
    """Every JSON value of a JSON-lines file, in order."""
    with open(file, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def save_file_jsonl(data: Any, fp: str) -> None:
    """Write each item of ``data`` as one JSON line (the file is replaced)."""
    with open(fp, "w", encoding="utf-8") as handle:
        for item in data:
            handle.write(json.dumps(item) + "\n")
