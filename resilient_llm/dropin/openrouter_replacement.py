"""Direct OpenRouter calls for the trainer, through resilient_llm's process-wide engine.

Takes the trainer's calling convention (LiteLLM-style keyword arguments) and returns the answer text, or the
configured neutral text (default ``""``) when nothing could answer. It never raises into training, except a
``resilient_llm.ConfigError`` on the first call when the configuration itself is wrong. A call's own arguments are not
configuration: a mistake there (no prompt, empty messages, a zero timeout, a value JSON cannot carry) returns the
neutral text, as the LiteLLM path does, and logs one ``llm_call`` line with outcome ``error`` and route ``rejected``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import resilient_llm
from resilient_llm.dropin import judge
from resilient_llm.dropin.config import trainer_config
from resilient_llm.logs import log_call
from resilient_llm.protocol import SAMPLING_FIELDS
from resilient_llm.types import ChatOptions, next_call_id

__all__ = ["call_openrouter", "call_openrouter_async"]

LOGGER = logging.getLogger("open_instruct.search_rewards.utils.openrouter_replacement")

DR_TULU_SCORE_SCALE = 2.0  # rubric_utils asks its judge for {"score": 0..2}

# LiteLLM's own routing and client knobs: meaningless for a direct call, so not sent to the provider.
_LITELLM_ONLY = frozenset(
    {"fallbacks", "api_base", "base_url", "api_key", "api_version", "custom_llm_provider", "metadata", "caching"}
    | {"drop_params", "mock_response", "num_retries", "timeout", "request_timeout", "max_retries"}
)


def _options(
    system_prompt: str | None,
    user_prompt: str | None,
    messages: Sequence[Mapping[str, Any]] | None,
    timeout: float | None,
    num_retries: int | None,
    chat_kwargs: Mapping[str, Any],
) -> tuple[Sequence[Mapping[str, Any]] | None, ChatOptions]:
    options: ChatOptions = {"raise_caller_errors": False, "timeout": timeout, "num_retries": num_retries}
    if messages is None:
        options["system"] = system_prompt
        options["user"] = user_prompt
    for name in SAMPLING_FIELDS:
        if chat_kwargs.get(name) is not None:
            options[name] = chat_kwargs[name]  # type: ignore[literal-required]
    extra = {k: v for k, v in chat_kwargs.items() if k not in SAMPLING_FIELDS and k not in _LITELLM_ONLY}
    if extra:
        options["extra_body"] = extra
    return messages, options


def _answer_text(engine: resilient_llm.Engine, model: str, result: resilient_llm.ChatResult) -> str:
    """The text the trainer gets; a judge call that ended neutral gets RESILIENT_LLM_JUDGE_NEUTRAL_TEXT when set.

    That is how DR Tulu's own, unmodified rubric_utils scores a failed judge call as the neutral value (e.g.
    ``{"score": 1}`` is 0.5 after its division by 2) instead of 0.0. Judge calls are told apart by their model, and
    counted in the judge tally (real score, unparseable reply, neutral) as our own judge counts its calls.
    """
    trainer = trainer_config(engine.config)
    judge_model = trainer.judge_model
    if judge_model is None or engine.model_name(model) != engine.model_name(judge_model):
        return result.text
    if judge_model != trainer.generation_model:  # the same model for both: judge calls cannot be told apart
        score = judge.parse_score(result.text, DR_TULU_SCORE_SCALE) if result.outcome in judge.ANSWERED else None
        judge.TALLY.record(judge.score_kind(result, score))  # the judge counters of resilient_llm.metrics()
    if result.outcome is resilient_llm.Outcome.NEUTRAL and trainer.judge_neutral_text is not None:
        engine.log.warning("judge_neutral_text", model=model, text=trainer.judge_neutral_text)
        return trainer.judge_neutral_text
    return result.text


def _rejected(engine: resilient_llm.Engine, model: str, error: resilient_llm.ConfigError) -> str:
    """A call whose arguments cannot make a request: nothing is sent, one line says why, the neutral text returns."""
    log_call(
        engine.log,
        str(resilient_llm.Outcome.ERROR),
        0.0,
        call_id=next_call_id(),
        model=str(model),
        route="rejected",
        attempts=0,
        error=str(error),
    )
    return engine.config.fallback.neutral_text


def call_openrouter(
    model_name: str,
    user_prompt: str | None = None,
    system_prompt: str | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
    timeout: float | None = None,
    num_retries: int | None = None,
    **chat_kwargs: Any,
) -> str:
    """Blocking call; the answer text, or the neutral text."""
    chat, options = _options(system_prompt, user_prompt, messages, timeout, num_retries, chat_kwargs)
    engine = resilient_llm.default_engine()  # a ConfigError here is a start-up failure: let it stop the run
    trainer_config(engine.config)
    try:
        return _answer_text(engine, model_name, engine.complete(model_name, chat, **options))
    except resilient_llm.ConfigError as exc:  # the engine runs: this is the call's own arguments
        return _rejected(engine, model_name, exc)
    except Exception:
        LOGGER.exception("resilient_llm call failed unexpectedly; returning the neutral text")
        return engine.config.fallback.neutral_text


async def call_openrouter_async(
    model_name: str,
    user_prompt: str | None = None,
    system_prompt: str | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
    timeout: float | None = None,  # noqa: ASYNC109  (the trainer's per-call timeout, passed to the engine)
    num_retries: int | None = None,
    **chat_kwargs: Any,
) -> str:
    """Awaitable call from any event loop; the answer text, or the neutral text."""
    chat, options = _options(system_prompt, user_prompt, messages, timeout, num_retries, chat_kwargs)
    engine = resilient_llm.default_engine()
    trainer_config(engine.config)
    try:
        return _answer_text(engine, model_name, await engine.acomplete(model_name, chat, **options))
    except resilient_llm.ConfigError as exc:
        return _rejected(engine, model_name, exc)
    except Exception:
        LOGGER.exception("resilient_llm call failed unexpectedly; returning the neutral text")
        return engine.config.fallback.neutral_text
