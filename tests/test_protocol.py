"""The wire format: request bodies out, every kind of response in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from resilient_llm.errors import (
    ErrorResponse,
    FailureKind,
    MalformedResponse,
    ProviderError,
    Scope,
    is_backpressure,
    is_caller_mistake,
    is_retryable,
)
from resilient_llm.protocol import normalise_usage, parse_response, request_body
from resilient_llm.types import ChatRequest, Outcome

REQUEST = ChatRequest(model="openai/gpt-4o-mini", messages=({"role": "user", "content": "hi"},))


def completion(**choice: Any) -> bytes:
    base_choice = {"message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"} | choice
    return json.dumps(
        {
            "id": "gen-1",
            "model": "openai/gpt-4o-mini-2024",
            "choices": [base_choice],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "cost": 0.00012},
        }
    ).encode()


def test_request_body_omits_unset_sampling_and_merges_extra_body() -> None:
    """Only the parameters the caller set are sent; extra body fields pass through."""
    request = ChatRequest(
        model="m/x",
        messages=({"role": "user", "content": "q"},),
        temperature=0.0,
        max_tokens=5,
        extra_body={"response_format": {"type": "json_object"}},
    )
    assert request_body(request) == {
        "model": "m/x",
        "messages": [{"role": "user", "content": "q"}],
        "temperature": 0.0,
        "max_tokens": 5,
        "response_format": {"type": "json_object"},
    }


def test_a_good_answer_carries_text_usage_cost_model_and_id() -> None:
    """A 200 completion becomes an ok result with everything the provider reported."""
    result = parse_response(200, {}, completion(), REQUEST)
    assert (result.text, result.outcome, result.model, result.response_id) == (
        "fine",
        Outcome.OK,
        "openai/gpt-4o-mini-2024",
        "gen-1",
    )
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.cost) == (3, 1, 0.00012)


@pytest.mark.parametrize(
    ("status", "headers", "body", "error_type", "kind", "error_status"),
    [
        (200, {}, b'{"error": {"code": 502, "message": "upstream"}}', ErrorResponse, "error_in_body", 502),
        (200, {}, b'{"error": {"message": "boom"}}', ErrorResponse, "error_in_body", None),
        (429, {"Retry-After": "3"}, b'{"error": {"code": 429, "message": "slow"}}', ErrorResponse, "http_429", 429),
        (502, {}, b"<html>Bad Gateway</html>", ErrorResponse, "http_502", 502),
        (401, {}, b'{"error": {"code": 401, "message": "bad key"}}', ErrorResponse, "http_401", 401),
        (200, {}, b"<html>hello</html>", MalformedResponse, "bad_json", 200),
        (200, {}, completion()[:40], MalformedResponse, "bad_json", 200),
        (200, {}, b"[1, 2]", MalformedResponse, "bad_json", 200),
        (200, {}, b'{"id": "x", "choices": []}', MalformedResponse, "no_choices", 200),
        (200, {}, b'{"id": "x"}', MalformedResponse, "no_choices", 200),
        (200, {}, completion(message={"role": "assistant", "content": None}), MalformedResponse, "empty_content", 200),
        (200, {}, completion(message={"role": "assistant", "content": ""}), MalformedResponse, "empty_content", 200),
        (200, {}, completion(finish_reason="error"), MalformedResponse, "finish_error", 200),
    ],
)
def test_every_failure_is_a_typed_error(
    status: int,
    headers: dict[str, str],
    body: bytes,
    error_type: type[ProviderError],
    kind: str,
    error_status: int | None,
) -> None:
    """A response that is not a real answer raises the matching ProviderError, never returns."""
    with pytest.raises(error_type) as info:
        parse_response(status, headers, body, REQUEST)
    assert (info.value.kind, info.value.status) == (kind, error_status)


def test_retry_after_and_budget_reason_are_kept() -> None:
    """The 402 in-flight-budget reason and Retry-After reach the retry policy."""
    body = b'{"error": {"code": 402, "message": "busy", "metadata": {"reason": "in_flight_budget_exhausted"}}}'
    with pytest.raises(ErrorResponse) as info:
        parse_response(402, {"Retry-After": "2"}, body, REQUEST)
    assert (info.value.code, info.value.retry_after) == ("in_flight_budget_exhausted", 2.0)


# -- OpenRouter's failure language: kind, scope and retry hints ---------------------------------------------------

NOW = 1_800_000_000.0  # a fixed wall clock for reset times


def error(code: int, message: str, **metadata: Any) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message}
    if metadata:
        body["metadata"] = metadata
    return json.dumps({"error": body}).encode()


def raised(status: int, body: bytes, headers: dict[str, str] | None = None, request: ChatRequest = REQUEST) -> Any:
    with pytest.raises(ProviderError) as info:
        parse_response(status, headers or {}, body, request, now=NOW)
    return info.value


def test_a_reasoning_model_cut_by_max_tokens_is_a_request_failure_naming_the_fix() -> None:
    """200, content null, finish_reason length, reasoning text: truncated, request scope, not retried, fix named."""
    request = ChatRequest(model="deepseek/deepseek-r1", messages=REQUEST.messages, max_tokens=800)
    body = completion(
        message={"role": "assistant", "content": None, "reasoning": "Let me think"}, finish_reason="length"
    )
    exc = raised(200, body, request=request)
    assert (exc.kind, exc.scope) == (FailureKind.TRUNCATED, Scope.REQUEST)
    assert not is_retryable(exc)
    assert is_caller_mistake(exc)
    text = str(exc)
    assert "max_tokens=800" in text
    assert "reasoning" in text
    assert "'effort'" in text
    assert "'max_tokens'" in text
    assert "'exclude'" in text


def test_an_empty_answer_not_cut_by_max_tokens_stays_a_retryable_model_hiccup() -> None:
    """No content with finish_reason stop is the provider's hiccup: model scope, retried."""
    exc = raised(200, completion(message={"role": "assistant", "content": None}, finish_reason="stop"))
    assert (exc.kind, exc.scope, is_retryable(exc)) == (FailureKind.EMPTY_CONTENT, Scope.MODEL, True)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (503, "No available model provider that meets your routing requirements"),
        (404, "No endpoints found that support tool use. To learn more about provider routing, visit: ..."),
        (404, "No endpoints found that can handle the requested parameters."),
    ],
)
def test_no_provider_is_a_request_failure(status: int, message: str) -> None:
    """OpenRouter's "no provider / no endpoints" (404 or 503) ends the call: request scope, never retried."""
    exc = raised(status, error(status, message))
    assert (exc.kind, exc.scope, exc.status) == (FailureKind.NO_PROVIDER, Scope.REQUEST, status)
    assert not is_retryable(exc)


def test_a_plain_503_from_a_model_stays_a_retryable_model_failure() -> None:
    """A JSON 503 that is not about routing is the model's provider failing: model scope, retried."""
    exc = raised(503, error(503, "Provider returned error", provider_name="Together", raw="overloaded"))
    assert (exc.kind, exc.scope, exc.provider, is_retryable(exc)) == ("http_503", Scope.MODEL, "Together", True)


def test_an_html_error_page_is_the_endpoint() -> None:
    """A 5xx that is not OpenRouter's JSON is the gateway in front of every model: endpoint scope."""
    exc = raised(502, b"<html><body>502 Bad Gateway</body></html>")
    assert (exc.kind, exc.scope, is_retryable(exc)) == ("http_502", Scope.ENDPOINT, True)


def test_context_overflow_is_a_request_failure() -> None:
    """400 "maximum context length" is the request's length: its own kind, not retried."""
    exc = raised(400, error(400, "This endpoint's maximum context length is 8192 tokens. However, you requested 9000"))
    assert (exc.kind, exc.scope, is_retryable(exc)) == (FailureKind.CONTEXT_LENGTH, Scope.REQUEST, False)


def test_moderation_403_carries_its_reasons_and_provider() -> None:
    """A moderation refusal is its own kind, request scope, with the reasons and the provider that flagged it."""
    body = error(
        403,
        'openai/gpt-4o requires moderation on OpenAI. Your input was flagged for "harassment".',
        reasons=["harassment", "violence"],
        flagged_input="...",
        provider_name="OpenAI",
        model_slug="openai/gpt-4o",
    )
    exc = raised(403, body)
    assert (exc.kind, exc.scope, exc.code, exc.provider) == (
        FailureKind.MODERATION,
        Scope.REQUEST,
        "harassment,violence",
        "OpenAI",
    )
    assert not is_retryable(exc)


def test_a_403_that_is_not_moderation_stays_a_caller_mistake() -> None:
    """A permissions 403 keeps today's kind: http_403, request scope."""
    exc = raised(403, error(403, "Key is not allowed to use this model"))
    assert (exc.kind, exc.scope, is_caller_mistake(exc)) == ("http_403", Scope.REQUEST, True)


def test_spent_quota_waits_until_its_reset_model_scope() -> None:
    """429 with X-RateLimit-Remaining 0 and a ms-epoch Reset: quota_exhausted, model scope, hint = time to reset."""
    headers = {
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int((NOW + 90) * 1000)),
    }
    exc = raised(429, error(429, "Rate limit exceeded: free-models-per-day"), headers)
    assert (exc.kind, exc.scope, exc.status) == (FailureKind.QUOTA_EXHAUSTED, Scope.MODEL, 429)
    assert exc.retry_after == pytest.approx(90.0)
    assert is_retryable(exc)
    assert not is_backpressure(exc)


def test_spent_quota_in_the_error_metadata_headers_is_read_too() -> None:
    """OpenRouter also nests the limits in error.metadata.headers; a seconds epoch is read as well."""
    limits = {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW + 30))}
    exc = raised(429, error(429, "Rate limit exceeded", headers=limits, provider_name=None))
    assert (exc.kind, exc.retry_after) == (FailureKind.QUOTA_EXHAUSTED, pytest.approx(30.0))


def test_quota_left_is_an_ordinary_rate_limit() -> None:
    """Remaining above 0 is not a spent quota: an ordinary 429, backpressure."""
    headers = {"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": str(int((NOW + 60) * 1000)), "Retry-After": "2"}
    exc = raised(429, error(429, "Rate limit exceeded"), headers)
    assert (exc.kind, exc.retry_after, is_backpressure(exc)) == ("http_429", 2.0, True)


@pytest.mark.parametrize(
    ("metadata", "hint"),
    [
        ({"retry_after": 7}, 7.0),
        ({"retry_after_ms": 1500}, 1.5),
        ({"headers": {"Retry-After": "4"}, "provider_name": "Fireworks"}, 4.0),
        ({"headers": {"retry-after-ms": "250"}}, 0.25),
        ({"raw": json.dumps({"error": {"details": [{"retryDelay": "37s"}]}}), "provider_name": "Google"}, 37.0),
        ({"raw": json.dumps({"error": {"retry_after": 3}})}, 3.0),
        ({"raw": "not json, no hint"}, None),
        ({"retry_after": "soon"}, None),
        ({"retry_after": -4}, None),
    ],
)
def test_retry_hints_in_the_body(metadata: dict[str, Any], hint: float | None) -> None:
    """Every place OpenRouter may put the hint in a 429's body ends up in retry_after (nonsense is ignored)."""
    exc = raised(429, error(429, "Provider returned error", **metadata))
    assert exc.retry_after == hint
    assert is_backpressure(exc)


def test_the_header_hint_wins_over_the_body() -> None:
    """Retry-After on the response is OpenRouter's own word: it wins over the provider's body."""
    exc = raised(429, error(429, "x", retry_after=30), {"Retry-After": "2"})
    assert exc.retry_after == 2.0


def test_an_error_in_the_first_choice_of_a_200_is_backpressure_with_its_hint() -> None:
    """A 200 whose choices[0].error carries code 429 and a hint: backpressure, hint kept, not a malformed answer."""
    inner = {"code": 429, "message": "Rate limit exceeded", "metadata": {"retry_after": 0.5}}
    body = completion(message={"role": "assistant", "content": ""}, finish_reason="error", error=inner)
    exc = raised(200, body)
    assert isinstance(exc, ErrorResponse)
    assert (exc.kind, exc.status, exc.retry_after, exc.scope) == (FailureKind.ERROR_IN_BODY, 429, 0.5, Scope.MODEL)
    assert is_backpressure(exc)


def test_whitespace_before_the_json_is_read() -> None:
    """OpenRouter's keep-alive whitespace before a non-streamed answer does not make it malformed."""
    result = parse_response(200, {}, b"\n\n   \n" + completion(), REQUEST)
    assert result.text == "fine"


def test_the_provider_that_answered_is_recorded() -> None:
    """The response's provider field lands in ChatResult.provider."""
    body = json.loads(completion())
    body["provider"] = "DeepInfra"
    assert parse_response(200, {}, json.dumps(body).encode(), REQUEST).provider == "DeepInfra"


@pytest.mark.parametrize(
    ("usage", "expected", "dropped"),
    [
        ({"prompt_tokens": 12.0, "completion_tokens": 3.0, "total_tokens": 15.0}, (12, 3, 15, None), ()),
        (
            {"prompt_tokens": 10**400, "completion_tokens": 1e308, "total_tokens": 5, "cost": 10**400},
            (None, None, 5, None),
            ("prompt_tokens", "completion_tokens", "cost"),
        ),
        ({"prompt_tokens": -1, "completion_tokens": 2, "cost": -0.1}, (None, 2, None, None), ("prompt_tokens", "cost")),
        (
            {"prompt_tokens": float("nan"), "completion_tokens": float("inf"), "cost": float("nan")},
            (None, None, None, None),
            ("prompt_tokens", "completion_tokens", "cost"),
        ),
        ({"prompt_tokens": 2.5, "completion_tokens": "7", "cost": True}, (None, None, None, None), None),
    ],
)
def test_usage_is_normalised_at_the_wire(usage: dict[str, Any], expected: tuple[Any, ...], dropped: Any) -> None:
    """Integral floats become ints; negative, fractional, non-finite or absurd values become None, named as dropped."""
    result, names = normalise_usage(usage)
    assert (result.prompt_tokens, result.completion_tokens, result.total_tokens, result.cost) == expected
    if dropped is not None:
        assert names == dropped
    assert all(type(v) is int for v in (result.prompt_tokens, result.completion_tokens) if v is not None)


def test_failure_kinds_read_as_plain_text() -> None:
    """FailureKind values compare equal to the strings logs and older code use."""
    assert FailureKind.http(429) == "http_429"
    assert FailureKind.http(429) is FailureKind.HTTP_429
    assert FailureKind.http(418) == "http_418"
    assert FailureKind.TRUNCATED == "truncated"
