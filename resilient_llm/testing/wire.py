"""How the fault server writes answers and faults on a connection: OpenAI-shaped bodies, HTTP heads, broken wire."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from resilient_llm.testing.judge_answers import citation_rating

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden"}
REASONS |= {404: "Not Found", 408: "Request Timeout", 422: "Unprocessable Entity", 429: "Too Many Requests"}
REASONS |= {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


async def act(
    kind: str,
    body: bytes,
    writer: asyncio.StreamWriter,
    retry_after_s: float,
    hang_s: float,
    authorization: str = "",
    *,
    quota_reset_ms: int = 0,
    keepalive_s: float = 2.0,
) -> bool:
    """Carry out one fault kind on the connection; False when the connection must end. ``quota_reset_ms``: the
    epoch (ms) a spent quota resets at; ``keepalive_s``: how long ``keepalive`` sends whitespace before the JSON."""
    if kind == "keepalive":
        return await _keepalive(writer, answer_body(body), keepalive_s)
    if kind in CATALOGUE_FAULTS:
        return CATALOGUE_FAULTS[kind](writer, body, retry_after_s, quota_reset_ms)
    if kind == "hang":
        await asyncio.sleep(hang_s)
        kind = "ok"
    if kind == "reset":
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False
    if kind == "drop":
        writer.close()
        return False
    if kind == "protocol_error":
        writer.write(b"SPLAT \x00\x01 not http\r\n\r\n")
        writer.close()
        return False
    retry_after = {"Retry-After": f"{retry_after_s:g}"}
    answer = answer_body(body)
    match kind:
        case "ok":
            return respond(writer, 200, answer)
        case "truncated_body":
            raw = json.dumps(answer).encode()
            writer.write(http_head(200, "application/json", len(raw)) + raw[: len(raw) // 2])
            writer.close()
            return False
        case "http_429":
            return respond(writer, 429, error_body(429, "Rate limit exceeded"), retry_after)
        case "budget_402":
            error = error_body(402, "In-flight budget exhausted", reason="in_flight_budget_exhausted")
            return respond(writer, 402, error, retry_after)
        case "http_402":
            return respond(writer, 402, error_body(402, "Insufficient credits"))
        case "http_500" | "http_502" | "http_503":
            status = int(kind[5:])
            page = f"<html><body><h1>{status} {REASONS[status]}</h1></body></html>".encode()
            return respond_raw(writer, status, "text/html", page)
        case "echo_auth":
            return respond(writer, 401, error_body(401, f"Incorrect API key provided: {authorization}"))
        case "error_in_200":
            return respond(writer, 200, error_body(502, "Upstream provider returned an error"))
        case "bad_json":
            return respond_raw(writer, 200, "text/html", b"<html>gateway says hi</html>")
        case "truncated_json":
            raw = json.dumps(answer).encode()
            return respond_raw(writer, 200, "application/json", raw[: len(raw) // 2])
        case "empty_choices":
            return respond(writer, 200, {**answer, "choices": []})
        case "null_content":
            answer["choices"][0]["message"]["content"] = None
            return respond(writer, 200, answer)
        case "finish_error":
            answer["choices"][0]["finish_reason"] = "error"
            return respond(writer, 200, answer)
        case _:  # the remaining http_4xx caller mistakes
            status = int(kind[5:])
            return respond(writer, status, error_body(status, REASONS.get(status, "error")))


async def _keepalive(writer: asyncio.StreamWriter, answer: dict[str, Any], seconds: float) -> bool:
    """200 at once, whitespace every 0.25 s while the "model" works, then the JSON: as OpenRouter sends a non-streamed
    answer that takes long (a client must not time out on it, and must read the JSON after the whitespace)."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: keep-alive\r\n\r\n"
    )
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        writer.write(b"1\r\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(min(0.25, max(0.0, ends - time.monotonic())))
    raw = json.dumps(answer).encode()
    writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n0\r\n\r\n")
    return True


def _requested_model(body: bytes) -> str:
    try:
        return str(json.loads(body).get("model", "unknown"))
    except (ValueError, AttributeError):
        return "unknown"


def _truncated_reasoning(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    answer = answer_body(body)
    try:
        budget = int(json.loads(body).get("max_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        budget = 0
    choice = answer["choices"][0]
    choice["finish_reason"] = "length"
    choice["native_finish_reason"] = "max_tokens"
    choice["message"] = {"role": "assistant", "content": None, "reasoning": "Let me weigh the claim against the"}
    usage = answer["usage"]
    usage["completion_tokens"] = budget
    usage["total_tokens"] = usage["prompt_tokens"] + budget
    usage["completion_tokens_details"] = {"reasoning_tokens": budget}
    return respond(writer, 200, answer)


def _no_provider(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    message = "No available model provider that meets your routing requirements"
    return respond(writer, 503, error_body(503, message))


def _no_endpoints(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    message = (
        "No endpoints found that can handle the requested parameters. To learn more about provider routing, "
        "visit: https://openrouter.ai/docs/guides/routing/provider-selection"
    )
    return respond(writer, 404, error_body(404, message))


def _quota(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    limits = {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset_ms)}
    message = "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day"
    error = {"error": {"code": 429, "message": message, "metadata": {"headers": limits, "provider_name": None}}}
    return respond(writer, 429, error, limits)


def _hint_in_body(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    metadata = {
        "headers": {"Retry-After": f"{retry_after_s:g}"},
        "provider_name": "Fireworks",
        "raw": "upstream rate limit",
    }
    error = {"error": {"code": 429, "message": "Provider returned error", "metadata": metadata}}
    return respond(writer, 429, error)


def _hint_in_raw(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    raw = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{"retryDelay": f"{retry_after_s:g}s"}]}}
    metadata = {"provider_name": "Google AI Studio", "raw": json.dumps(raw)}
    error = {"error": {"code": 429, "message": "Provider returned error", "metadata": metadata}}
    return respond(writer, 429, error)


def _error_in_choice(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    answer = answer_body(body)
    inner = {"code": 429, "message": "Rate limit exceeded", "metadata": {"retry_after": retry_after_s}}
    answer["choices"][0] = {
        "index": 0,
        "message": {"role": "assistant", "content": ""},
        "finish_reason": "error",
        "error": inner,
    }
    return respond(writer, 200, answer)


def _moderation(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    model = _requested_model(body)
    metadata = {
        "reasons": ["harassment"],
        "flagged_input": "...the judged text...",
        "provider_name": "OpenAI",
        "model_slug": model,
    }
    message = f'{model} requires moderation on OpenAI. Your input was flagged for "harassment".'
    return respond(writer, 403, {"error": {"code": 403, "message": message, "metadata": metadata}})


def _retry_after_3600(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    return respond(writer, 429, error_body(429, "Rate limit exceeded"), {"Retry-After": "3600"})


def _provider_down(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
    metadata = {"provider_name": "Together", "raw": '{"error": "upstream connect error"}'}
    error = {"error": {"code": 502, "message": "Provider returned error", "metadata": metadata}}
    return respond(writer, 502, error)


ODD_USAGE: dict[str, dict[str, Any]] = {
    "usage_float": {"prompt_tokens": 12.0, "completion_tokens": 3.0, "total_tokens": 15.0, "cost": 0.0001},
    "usage_huge": {"prompt_tokens": 10**400, "completion_tokens": 1e308, "total_tokens": 10**400, "cost": 1e308},
    "usage_negative": {"prompt_tokens": -5, "completion_tokens": -1, "total_tokens": -6, "cost": -0.5},
    "usage_nonfinite": {
        "prompt_tokens": float("nan"),
        "completion_tokens": float("inf"),
        "total_tokens": float("-inf"),
        "cost": float("nan"),
    },
}


Fault = Callable[[asyncio.StreamWriter, bytes, float, int], bool]  # writer, request body, hint s, quota reset ms


def _odd_usage(kind: str) -> Fault:
    def answer(writer: asyncio.StreamWriter, body: bytes, retry_after_s: float, reset_ms: int) -> bool:
        raw = json.dumps({**answer_body(body), "usage": ODD_USAGE[kind]}).encode()  # NaN/Infinity as Python writes
        return respond_raw(writer, 200, "application/json", raw)

    return answer


CATALOGUE_FAULTS: dict[str, Fault] = {
    "truncated_reasoning": _truncated_reasoning,
    "no_provider_503": _no_provider,
    "no_endpoints_404": _no_endpoints,
    "quota_429": _quota,
    "hint_in_body_429": _hint_in_body,
    "hint_in_raw_429": _hint_in_raw,
    "error_in_choice_429": _error_in_choice,
    "moderation_403": _moderation,
    "retry_after_3600": _retry_after_3600,
    "provider_down_502": _provider_down,
    **{kind: _odd_usage(kind) for kind in ODD_USAGE},
}


def answer_body(body: bytes) -> dict[str, Any]:
    """The deterministic completion for a request body, from its hash: a rubric-style score, or a citation rating."""
    digest = hashlib.sha256(body).hexdigest()
    try:
        request = json.loads(body)
        model = str(request.get("model", "unknown"))
        contents = [str(m.get("content", "")) for m in request.get("messages", [])]
    except (ValueError, AttributeError, TypeError):
        model, contents = "unknown", []
    prompt, prompt_chars = "\n".join(contents), sum(map(len, contents))
    content = json.dumps({"score": int(digest[:8], 16) % 3, "id": digest[:12]})
    if (rating := citation_rating(prompt, digest)) is not None:  # DR Tulu's citation judge: a [[rating]]
        content = rating
    elif b"positive_rubrics" in body:  # a rubric-generation prompt gets the shape it asks for
        content = json.dumps(
            {"positive_rubrics": [f"covers {digest[:6]}"], "negative_rubrics": [f"omits {digest[6:12]}"]}
        )
    prompt_tokens, completion_tokens = max(1, prompt_chars // 4), 12
    return {
        "id": f"gen-{digest[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "provider": provider_of(model),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost": round((prompt_tokens * 0.15 + completion_tokens * 0.6) / 1e6, 12),
        },
    }


def provider_of(model: str) -> str:
    """The upstream provider name the server says it routed a model to (OpenRouter's ``provider`` field)."""
    vendor = model.split("/", 1)[0] if "/" in model else ""
    return {"openai": "OpenAI", "anthropic": "Anthropic", "google": "Google"}.get(vendor, "LocalFault")


def error_body(code: int, message: str, *, reason: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if reason is not None:
        error["metadata"] = {"reason": reason}
    return {"error": error}


def http_head(status: int, content_type: str, length: int, extra: Mapping[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Type: {content_type}"]
    lines += [f"Content-Length: {length}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def respond_raw(
    writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes, extra: Mapping[str, str] | None = None
) -> bool:
    writer.write(http_head(status, content_type, len(body), extra) + body)
    return True


def respond(writer: asyncio.StreamWriter, status: int, payload: Any, extra: Mapping[str, str] | None = None) -> bool:
    return respond_raw(writer, status, "application/json", json.dumps(payload).encode(), extra)
