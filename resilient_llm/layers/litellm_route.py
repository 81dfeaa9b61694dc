"""The LiteLLM fallback route: another provider through ``litellm.acompletion``, imported only when configured.

The one place LiteLLM's exceptions become ours.
"""

from __future__ import annotations

from typing import Any

from resilient_llm.errors import (
    ConfigError,
    ConnectionFailed,
    ErrorResponse,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
)
from resilient_llm.protocol import request_body
from resilient_llm.settings import Settings
from resilient_llm.types import ChatRequest, ChatResult, Outcome, Usage


def import_litellm() -> Any:
    try:
        import litellm
    except ImportError as exc:
        raise ConfigError(
            "RESILIENT_LLM_FALLBACK names litellm but LiteLLM is not installed: pip install 'resilient-llm[litellm]'"
        ) from exc
    return litellm


class LiteLLMHandler:
    """One call (with LiteLLM's own small retry budget) to ``settings.fallback_model``."""

    def __init__(self, settings: Settings) -> None:
        assert settings.fallback_model is not None
        self._litellm = import_litellm()
        self._model = settings.fallback_model
        self._base_url = settings.fallback_base_url
        self._api_key = settings.fallback_api_key
        self._retries = settings.fallback_retries

    async def handle(self, request: ChatRequest) -> ChatResult:
        body = request_body(request)
        body.pop("model")
        options: dict[str, Any] = {"num_retries": self._retries, "timeout": request.timeout}
        if self._base_url:
            options["api_base"] = self._base_url
        if self._api_key.reveal():
            options["api_key"] = self._api_key.reveal()
        try:
            response = await self._litellm.acompletion(model=self._model, **body, **options)
        except Exception as exc:
            raise _convert(exc) from exc
        try:
            text = response.choices[0].message.content
            usage = getattr(response, "usage", None)
        except (AttributeError, IndexError, TypeError) as exc:
            raise MalformedResponse(f"unusable LiteLLM response: {exc}", kind="no_choices") from exc
        if not isinstance(text, str) or not text:
            raise MalformedResponse("LiteLLM response has no content", kind="empty_content")
        return ChatResult(
            text=text,
            outcome=Outcome.FALLBACK,
            model=str(getattr(response, "model", None) or self._model),
            usage=Usage(
                getattr(usage, "prompt_tokens", None),
                getattr(usage, "completion_tokens", None),
                getattr(usage, "total_tokens", None),
            ),
            response_id=getattr(response, "id", None),
            route="litellm",
        )


def _convert(exc: Exception) -> ProviderError:
    name = type(exc).__name__
    message = str(exc)[:300] or name
    status = getattr(exc, "status_code", None)
    if "Timeout" in name:
        return ProviderTimeout(message, kind="litellm_timeout")
    if isinstance(status, int) and status >= 400:
        return ErrorResponse(message, kind=f"http_{status}", status=status)
    return ConnectionFailed(message, kind="litellm_error")
