"""The OpenAI-compatible wire format: request body out, typed result or typed error in. Pure functions, no I/O."""

from __future__ import annotations

import email.utils
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from resilient_llm.errors import ConfigError, ErrorResponse, FailureKind, MalformedResponse, Scope
from resilient_llm.runtime import loads
from resilient_llm.types import ChatRequest, ChatResult, Message, Outcome, Usage

_LOG = logging.getLogger("resilient_llm.protocol")
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


def parse_response(
    status: int, headers: Mapping[str, str], content: bytes, request: ChatRequest, *, now: float | None = None
) -> ChatResult:
    """Turn one HTTP response into a result, or raise the ProviderError that describes it (kind, scope and every
    retry hint OpenRouter sent). ``now``: the wall-clock epoch to read reset times against (``time.time()``)."""
    now = time.time() if now is None else now
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        payload: Any = loads(content)  # leading whitespace (OpenRouter's keep-alive before the JSON) is fine
    except (ValueError, UnicodeDecodeError) as exc:
        if status >= 400:
            raise _error_response(status, None, lowered, now, body=_snippet(content)) from exc
        raise MalformedResponse(
            f"body is not JSON: {_snippet(content)}", kind=FailureKind.BAD_JSON, status=status
        ) from exc
    error = payload.get("error") if isinstance(payload, dict) else None
    if status >= 400 or error:
        raise _error_response(status, error, lowered, now)
    if not isinstance(payload, dict):
        raise MalformedResponse("body is not a JSON object", kind=FailureKind.BAD_JSON, status=status)
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("response has no choices", kind=FailureKind.NO_CHOICES, status=status)
    choice = choices[0]
    if choice.get("error"):  # an error met after the answer started: OpenRouter puts it in the choice, status 200
        raise _error_response(status, choice["error"], lowered, now)
    if choice.get("finish_reason") == "error":
        raise MalformedResponse(
            "generation ended with finish_reason 'error'", kind=FailureKind.FINISH_ERROR, status=status
        )
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, str) or not text:
        if choice.get("finish_reason") == "length":
            raise _truncated(request, message, payload, status)
        raise MalformedResponse("response has no message content", kind=FailureKind.EMPTY_CONTENT, status=status)
    response_id = payload.get("id")
    usage, dropped = normalise_usage(payload.get("usage"))
    if dropped:
        _report_dropped_usage(dropped)
    provider = payload.get("provider")
    return ChatResult(
        text=text,
        outcome=Outcome.OK,
        model=str(payload.get("model") or request.model),
        usage=usage,
        response_id=response_id if isinstance(response_id, str) else None,
        provider=provider[:100] if isinstance(provider, str) and provider else None,
        usage_dropped=dropped,
    )


def _truncated(request: ChatRequest, message: Any, payload: Mapping[str, Any], status: int) -> MalformedResponse:
    """The request-scope error of a 200 cut by ``max_tokens`` before any content, naming the fix."""
    reasoning = message.get("reasoning") if isinstance(message, dict) else None
    usage = payload.get("usage")
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    reasoning_tokens = details.get("reasoning_tokens") if isinstance(details, dict) else None
    budget = "max_tokens" if request.max_tokens is None else f"max_tokens={request.max_tokens}"
    model = request.model
    if reasoning or (isinstance(reasoning_tokens, int) and reasoning_tokens > 0):
        message_text = (
            f"{model} spent all of {budget} on reasoning and returned no content (finish_reason 'length'); the same "
            "request truncates again. Raise max_tokens, or bound the reasoning below it: "
            "extra_body={'reasoning': {'effort': 'low'}} or {'reasoning': {'max_tokens': N}} "
            "({'reasoning': {'exclude': true}} only leaves the reasoning out of the answer; its tokens still count)"
        )
    else:
        message_text = (
            f"{model} was cut by {budget} before any content (finish_reason 'length'); raise max_tokens, or for a "
            "reasoning model bound its reasoning with extra_body={'reasoning': {'effort': 'low'}} or "
            "{'reasoning': {'max_tokens': N}} ({'reasoning': {'exclude': true}} only hides it)"
        )
    return MalformedResponse(message_text, kind=FailureKind.TRUNCATED, status=status, scope=Scope.REQUEST)


# How OpenRouter words the failures whose status alone does not tell them apart (its docs and public bug reports).
_NO_PROVIDER = re.compile(
    r"no endpoints found|no (allowed |available )?(model )?providers? (are |is )?available|"
    r"no available (model )?provider|no provider",
    re.IGNORECASE,
)
_CONTEXT_LENGTH = re.compile(
    r"context[ _-]?length|context window|maximum context|prompt is too long|too many tokens|context_length_exceeded",
    re.IGNORECASE,
)
_MODERATION = re.compile(r"moderation|flagged", re.IGNORECASE)


def _error_response(
    status: int, error: Any, headers: Mapping[str, str], now: float, *, body: str | None = None
) -> ErrorResponse:
    """The ErrorResponse of an error status or an error object (top level or in ``choices[0]``), classified."""
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    raw_metadata = error.get("metadata")
    metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    # OpenRouter puts the upstream status in error.code, also when the HTTP status is 200.
    effective = code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600 else status
    reason = metadata.get("reason") if isinstance(metadata.get("reason"), str) else None
    provider_name = metadata.get("provider_name")
    provider = provider_name[:100] if isinstance(provider_name, str) and provider_name else None
    message = body if body is not None else str(error.get("message") or "provider returned an error")
    retry_after, quota = _retry_hint(headers, metadata, now)
    status_out = effective if effective >= 400 else None
    kind: str = FailureKind.http(effective) if status >= 400 else FailureKind.ERROR_IN_BODY
    scope: Scope | None = None
    if body is not None and status >= 500:
        scope = Scope.ENDPOINT  # an HTML error page, not OpenRouter's JSON: the gateway in front, for every model
    elif effective == 429 and quota:
        kind, scope = FailureKind.QUOTA_EXHAUSTED, Scope.MODEL
        message = f"{message} (quota spent until its reset in {retry_after:.0f} s)" if retry_after else message
    elif effective == 403 and (_is_moderation(metadata) or _MODERATION.search(message)):
        kind, scope = FailureKind.MODERATION, Scope.REQUEST
        reasons = metadata.get("reasons")
        if isinstance(reasons, list) and reasons:
            reason = ",".join(str(r) for r in reasons)[:200]
    elif effective in (404, 503) and _NO_PROVIDER.search(message):
        kind, scope = FailureKind.NO_PROVIDER, Scope.REQUEST
    elif effective in (400, 413, 422) and _CONTEXT_LENGTH.search(message):
        kind, scope = FailureKind.CONTEXT_LENGTH, Scope.REQUEST
    return ErrorResponse(
        message[:500],
        kind=kind,
        status=status_out,
        code=reason,
        retry_after=retry_after,
        scope=scope,
        provider=provider,
    )


def _is_moderation(metadata: Mapping[str, Any]) -> bool:
    return "reasons" in metadata or "flagged_input" in metadata


# -- retry hints -------------------------------------------------------------------------------------------------
_RETRY_SECONDS = ("retry_after", "retry_after_seconds", "retryafter", "retry-after")
_RETRY_MS = ("retry_after_ms", "retryafterms", "retry-after-ms")
_MAX_HINT_DEPTH = 4


def _retry_hint(headers: Mapping[str, str], metadata: Mapping[str, Any], now: float) -> tuple[float | None, bool]:
    """Seconds to wait, from every place OpenRouter may put it, and whether it is a spent quota.

    In order: the response's ``Retry-After`` / ``retry-after-ms``; the retry fields of ``error.metadata``; the
    provider's own headers or body passed on in ``metadata.headers`` / ``metadata.raw``; and a quota's
    ``X-RateLimit-Remaining: 0`` with its ``X-RateLimit-Reset`` (the response's, or the provider's).
    """
    hint = parse_retry_after(headers, now)
    if hint is None:
        hint = _hint_in(metadata, now, 0)
    reset = _quota_reset(headers, now)
    nested = metadata.get("headers")
    if reset is None and isinstance(nested, dict):
        reset = _quota_reset({str(k).lower(): str(v) for k, v in nested.items()}, now)
    if reset is None:
        return hint, False
    return (hint if hint is not None else reset), True


def _hint_in(value: Any, now: float, depth: int) -> float | None:
    """A retry hint anywhere in a metadata object (fields, nested headers, a provider's raw JSON body)."""
    if depth > _MAX_HINT_DEPTH:
        return None
    if isinstance(value, str):
        text = value.strip()
        if depth == 0 or not text.startswith(("{", "[")) or len(text) > 100_000:
            return None
        try:
            value = loads(text)
        except (ValueError, UnicodeDecodeError):
            return None
    if isinstance(value, list):
        for item in value[:20]:
            if (found := _hint_in(item, now, depth + 1)) is not None:
                return found
        return None
    if not isinstance(value, dict):
        return None
    for key, raw in value.items():
        name = str(key).lower()
        if name in _RETRY_SECONDS and (seconds := _seconds(raw)) is not None:
            return seconds
        if name in _RETRY_MS and (millis := _seconds(raw)) is not None:
            return millis / 1000.0
        google = name == "retrydelay" and isinstance(raw, str) and raw.endswith("s")  # Google's RetryInfo: "37s"
        if google and (seconds := _seconds(raw[:-1])) is not None:
            return seconds
    if isinstance(headers := value.get("headers"), dict):
        found = parse_retry_after({str(k): str(v) for k, v in headers.items()}, now)
        if found is not None:
            return found
    for key in ("raw", "error", "details", "metadata"):
        if key in value and (found := _hint_in(value[key], now, depth + 1)) is not None:
            return found
    return None


def _seconds(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if math.isfinite(value) and 0 <= value <= MAX_HINT_S else None


MAX_HINT_S = 7 * 24 * 3600.0  # a hint beyond a week is nonsense; ignored rather than obeyed


def _quota_reset(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` when ``X-RateLimit-Remaining`` is 0 (a spent quota), else None.

    OpenRouter sends the reset as a millisecond epoch; a second epoch and a plain number of seconds are read too.
    """
    remaining, raw = headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
    if remaining is None or raw is None:
        return None
    try:
        left, value = float(remaining), float(raw)
    except ValueError:
        return None
    if not left <= 0 or not math.isfinite(value) or value < 0:  # quota left (or NaN), or no usable reset
        return None
    if value > 1e11:  # milliseconds since the epoch
        value = value / 1000.0 - now
    elif value > 1e9:  # seconds since the epoch
        value -= now
    return min(max(0.0, value), MAX_HINT_S)


# -- usage -------------------------------------------------------------------------------------------------------
MAX_TOKENS_REPORTED = 10**12  # more tokens than any call can have: a broken counter, not a count
MAX_COST_REPORTED = 1e6  # dollars for one call


def normalise_usage(raw: Any) -> tuple[Usage, tuple[str, ...]]:
    """The usage block as counts we can add up, and the names of the fields dropped as unusable.

    Integral floats (``12.0``, which some providers send) become ints; negative, non-finite, fractional or absurdly
    large values (``1e308``, a 400-digit integer) become None: a bad usage block never costs the answer, and never
    reaches the cache, the metrics or the Prometheus page.
    """
    if not isinstance(raw, dict):
        return Usage(), ()
    dropped: list[str] = []

    def count(name: str) -> int | None:
        value = raw.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            dropped.append(name)
            return None
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                dropped.append(name)
                return None
            value = int(value)
        if not 0 <= value <= MAX_TOKENS_REPORTED:
            dropped.append(name)
            return None
        return value

    def cost() -> float | None:
        value = raw.get("cost")
        if value is None:
            return None
        try:
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        except OverflowError:  # a 400-digit integer
            number = math.nan
        if not (math.isfinite(number) and 0 <= number <= MAX_COST_REPORTED):
            dropped.append("cost")
            return None
        return number

    usage = Usage(count("prompt_tokens"), count("completion_tokens"), count("total_tokens"), cost())
    return usage, tuple(dropped)


_reported_usage: set[str] = set()


def _report_dropped_usage(dropped: Sequence[str]) -> None:
    """One warning per process and field (a provider that sends floats would otherwise log on every call); each
    result still names what it dropped (``ChatResult.usage_dropped``, in its ``llm_call`` line)."""
    fresh = [name for name in dropped if name not in _reported_usage]
    if fresh:
        _reported_usage.update(fresh)
        _LOG.warning("usage fields dropped as unusable (negative, non-finite or absurd): %s", ", ".join(fresh))


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
