"""Cache decisions: which calls may be cached, under what key, and how an answer is stored. No I/O."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from resilient_llm.errors import MalformedResponse
from resilient_llm.protocol import request_body
from resilient_llm.types import ChatRequest, ChatResult, Outcome, Usage

KEY_VERSION = "v1"  # bump when the key's inputs or the stored shape change: old entries are then never read


def cache_key(request: ChatRequest, base_url: str) -> str:
    """``v1:`` + SHA-256 of a canonical JSON of everything that changes the answer (never key, timeouts, headers)."""
    identity = {"base_url": base_url, **request_body(request)}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"{KEY_VERSION}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def is_cacheable(request: ChatRequest, *, cache_sampled: bool) -> bool:
    """Deterministic calls (temperature 0) only, unless sampled answers are explicitly allowed.

    An unset temperature is the provider's default (1.0 on most models): sampled, so not cached by default.
    """
    return cache_sampled or request.temperature == 0


def encode_answer(result: ChatResult) -> bytes:
    """JSON bytes of a real answer (never a pickle: a writable pickle cache runs anyone's code)."""
    usage = result.usage
    return json.dumps(
        {
            "text": result.text,
            "model": result.model,
            "response_id": result.response_id,
            "usage": [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cost],
        },
        separators=(",", ":"),
    ).encode()


def decode_answer(raw: bytes, route: str) -> ChatResult:
    """The cached answer as a ``cached`` result; anything unexpected is a MalformedResponse (treated as a miss)."""
    try:
        data: Any = json.loads(raw)
        prompt, completion, total, cost = data["usage"]
        text, model = data["text"], data["model"]
        if not isinstance(text, str) or not text or not isinstance(model, str):
            raise TypeError("text and model must be non-empty strings")
        return ChatResult(
            text=text,
            outcome=Outcome.CACHED,
            model=model,
            attempts=0,
            usage=Usage(prompt, completion, total, cost),
            response_id=data.get("response_id"),
            route=route,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedResponse(f"unreadable cache entry: {exc}", kind="bad_cache_entry") from exc
