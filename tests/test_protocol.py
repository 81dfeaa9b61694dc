"""The wire format: request bodies out, every kind of response in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from resilient_llm.errors import ErrorResponse, MalformedResponse, ProviderError
from resilient_llm.protocol import parse_response, request_body
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
