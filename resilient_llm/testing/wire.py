"""How the fault server writes answers and faults on a connection: OpenAI-shaped bodies, HTTP heads, broken wire."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

from resilient_llm.testing.judge_answers import citation_rating

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden"}
REASONS |= {404: "Not Found", 408: "Request Timeout", 422: "Unprocessable Entity", 429: "Too Many Requests"}
REASONS |= {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


async def act(
    kind: str, body: bytes, writer: asyncio.StreamWriter, retry_after_s: float, hang_s: float, authorization: str = ""
) -> bool:
    """Carry out one fault kind on the connection; False when the connection must end."""
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
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost": round((prompt_tokens * 0.15 + completion_tokens * 0.6) / 1e6, 12),
        },
    }


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
