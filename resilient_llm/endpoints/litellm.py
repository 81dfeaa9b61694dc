"""The LiteLLM fallback route: another provider through ``litellm.acompletion``, imported only when configured.

The one place LiteLLM's exceptions become ours.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
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
from resilient_llm.routing import without_openrouter_fields
from resilient_llm.types import ChatRequest, ChatResult, Outcome, Usage
from resilient_llm.validation import HTTP_URL, TEXT, Check, Secret, Validated, int_in, setting

SECRET: Check[Secret] = Check("a key", Secret, lambda key: isinstance(key, Secret))


@dataclass(frozen=True)
class LiteLLMRouteConfig(Validated):
    """The other provider, reached through LiteLLM: its model name in LiteLLM's spelling, base URL and key."""

    model: str | None = setting(None, TEXT, optional=True)
    base_url: str | None = setting(None, HTTP_URL, optional=True)
    api_key: Secret = setting(Secret(""), SECRET)
    retries: int = setting(1, int_in(0, 10))  # LiteLLM's own, per fallback call

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", Secret(self.api_key))
        super().__post_init__()


def import_litellm() -> Any:
    try:
        import litellm
    except ImportError as exc:
        raise ConfigError(
            "RESILIENT_LLM_FALLBACK names litellm but LiteLLM is not installed: pip install 'resilient-llm[litellm]'"
        ) from exc
    return litellm


class LiteLLMHandler:
    """One call (with LiteLLM's own small retry budget) to ``config.model``."""

    def __init__(self, config: LiteLLMRouteConfig) -> None:
        assert config.model is not None
        self._litellm = import_litellm()
        self._model = config.model
        self._base_url = config.base_url
        self._api_key = config.api_key
        self._retries = config.retries
        # OpenRouter's own request fields (provider, reasoning) would be refused by any other provider.
        self._openrouter = self._model.startswith("openrouter/") or _host(self._base_url) == "openrouter.ai"

    async def handle(self, request: ChatRequest) -> ChatResult:
        body = request_body(request)
        body.pop("model")
        if not self._openrouter:
            body = without_openrouter_fields(body)
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


def _host(url: str | None) -> str | None:
    return urllib.parse.urlsplit(url).hostname if url else None


def _convert(exc: Exception) -> ProviderError:
    name = type(exc).__name__
    message = str(exc)[:300] or name
    status = getattr(exc, "status_code", None)
    if "Timeout" in name:
        return ProviderTimeout(message, kind="litellm_timeout")
    if isinstance(status, int) and status >= 400:
        return ErrorResponse(message, kind=f"http_{status}", status=status)
    return ConnectionFailed(message, kind="litellm_error")
