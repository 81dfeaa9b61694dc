"""The OpenAI-compatible wire format: request body out, typed result or typed error in. Pure functions, no I/O."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from resilient_llm.errors import ConfigError, ErrorResponse, MalformedResponse
from resilient_llm.runtime import loads
from resilient_llm.types import ChatRequest, ChatResult, Message, Outcome, Usage

SAMPLING_FIELDS = ("temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty")


def prompt_messages(system: str | None, user: str | None) -> list[dict[str, Any]]:
    """``[system?, user]`` as the chat format has them (no validation: the trainer's original path uses it too)."""
    chat: list[dict[str, Any]] = [] if system is None else [{"role": "system", "content": system}]
    chat.append({"role": "user", "content": user})
    return chat


def build_messages(messages: Sequence[Message] | None, system: str | None, user: str | None) -> tuple[Message, ...]:
    """The messages of one call, from a list or from prompts; ConfigError when they cannot make a chat."""
    if messages is not None:
        if system is not None or user is not None:
            raise ConfigError("pass either messages or system/user prompts, not both")
        valid = isinstance(messages, Sequence) and not isinstance(messages, (str, bytes))
        if not valid or not messages or not all(isinstance(m, Mapping) and "role" in m for m in messages):
            raise ConfigError("messages must be a non-empty list of {'role': ..., 'content': ...} mappings")
        return tuple(dict(m) for m in messages)
    if user is None:
        raise ConfigError("a call needs messages or a user prompt")
    return tuple(prompt_messages(system, user))


def extra_fields(extra_body: Any) -> dict[str, Any]:
    """The extra body fields of a call as a dict; ConfigError unless a mapping with string keys."""
    if extra_body is None:
        return {}
    if not isinstance(extra_body, Mapping) or not all(isinstance(k, str) for k in extra_body):
        raise ConfigError(f"extra_body={_short(extra_body)} is not valid: expected a mapping of field names to values")
    return dict(extra_body)


def check_sendable(request: ChatRequest) -> None:
    """ConfigError naming the first argument JSON cannot carry (a set, an object, NaN), before anything is sent."""
    parts: list[tuple[str, Any]] = [(f"messages[{i}]", dict(m)) for i, m in enumerate(request.messages)]
    parts += [(name, getattr(request, name)) for name in SAMPLING_FIELDS]
    parts += [(f"extra_body[{key!r}]", value) for key, value in request.extra_body.items()]
    for name, value in parts:
        if not _is_json(value):
            raise ConfigError(
                f"{name}={_short(value)} cannot be sent as JSON: expected text, finite numbers, true/false, null, "
                "lists and objects",
                field=name,
            )


def _is_json(value: Any, depth: int = 0) -> bool:
    """What ``json.dumps(value, allow_nan=False)`` accepts, checked by type (a call's prompts are not encoded twice)."""
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth >= 100:  # json.dumps would hit a circular reference or the recursion limit
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_json(item, depth + 1) for item in value)
    if isinstance(value, dict):
        keys_ok = all(k is None or isinstance(k, (str, int, float)) for k in value)  # as json.dumps converts them
        return keys_ok and all(_is_json(item, depth + 1) for item in value.values())
    return False


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of POST /chat/completions; unset sampling parameters are omitted."""
    body: dict[str, Any] = {"model": request.model, "messages": [dict(m) for m in request.messages]}
    for name in SAMPLING_FIELDS:
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    body.update(request.extra_body)
    return body


def parse_response(status: int, headers: Mapping[str, str], content: bytes, request: ChatRequest) -> ChatResult:
    """Turn one HTTP response into a result, or raise the ProviderError that describes it."""
    retry_after = parse_retry_after(headers)
    try:
        payload: Any = loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        if status >= 400:
            raise ErrorResponse(
                _snippet(content), kind=f"http_{status}", status=status, retry_after=retry_after
            ) from exc
        raise MalformedResponse(f"body is not JSON: {_snippet(content)}", kind="bad_json", status=status) from exc
    error = payload.get("error") if isinstance(payload, dict) else None
    if status >= 400 or error:
        raise _error_response(status, error, retry_after)
    if not isinstance(payload, dict):
        raise MalformedResponse("body is not a JSON object", kind="bad_json", status=status)
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("response has no choices", kind="no_choices", status=status)
    choice = choices[0]
    if choice.get("finish_reason") == "error":
        raise MalformedResponse("generation ended with finish_reason 'error'", kind="finish_error", status=status)
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, str) or not text:
        raise MalformedResponse("response has no message content", kind="empty_content", status=status)
    response_id = payload.get("id")
    return ChatResult(
        text=text,
        outcome=Outcome.OK,
        model=str(payload.get("model") or request.model),
        usage=_usage(payload.get("usage")),
        response_id=response_id if isinstance(response_id, str) else None,
    )


def _error_response(status: int, error: Any, retry_after: float | None) -> ErrorResponse:
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    metadata = error.get("metadata") if isinstance(error.get("metadata"), dict) else {}
    # OpenRouter puts the upstream status in error.code, also when the HTTP status is 200.
    effective = code if isinstance(code, int) and 400 <= code < 600 else status
    reason = metadata.get("reason") if isinstance(metadata.get("reason"), str) else None
    message = str(error.get("message") or "provider returned an error")
    kind = f"http_{effective}" if status >= 400 else "error_in_body"
    return ErrorResponse(
        message[:500], kind=kind, status=effective if effective >= 400 else None, code=reason, retry_after=retry_after
    )


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()

    def number(name: str) -> Any:
        value = raw.get(name)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    cost = number("cost")
    return Usage(
        prompt_tokens=number("prompt_tokens"),
        completion_tokens=number("completion_tokens"),
        total_tokens=number("total_tokens"),
        cost=float(cost) if cost is not None else None,
    )


def _snippet(content: bytes) -> str:
    text = content[:200].decode("utf-8", errors="replace").strip()
    return text or "<empty body>"


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
