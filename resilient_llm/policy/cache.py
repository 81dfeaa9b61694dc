"""Cache decisions: which calls may be cached, under what key, and how an answer is stored. No I/O."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from resilient_llm.errors import MalformedResponse
from resilient_llm.protocol import request_body
from resilient_llm.runtime import dumps, loads
from resilient_llm.types import ChatRequest, ChatResult, Outcome, Usage

KEY_VERSION = "v1"  # bump when the key's inputs or the stored shape change: old entries are then never read


def cache_key(request: ChatRequest, base_url: str) -> str:
    """``v1:`` + SHA-256 of a canonical JSON of everything that changes the answer (never key, timeouts, headers).

    The body is the one sent, so OpenRouter's pinned ``provider`` and ``reasoning`` objects (``Config.extra_body``)
    are in it: another provider or reasoning effort is another judge, and its answers are kept apart."""
    body = request_body(request)
    # An extra body field named like the key's own must not replace it: such a body is nested whole. Its canonical
    # JSON has no top-level "model", so it never equals an ordinary identity, and ordinary keys stay as they were.
    identity = {"base_url": base_url, "body": body} if "base_url" in body else {"base_url": base_url, **body}
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
    return dumps(
        {
            "text": result.text,
            "model": result.model,
            "response_id": result.response_id,
            "usage": [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cost],
            "provider": result.provider,  # who judged it: a replayed answer keeps its provider in the call line
        }
    )


def decode_answer(raw: bytes, route: str) -> ChatResult:
    """The cached answer as a ``cached`` result; anything of another shape is a MalformedResponse (dropped)."""
    try:
        data: Any = loads(raw)
        prompt, completion, total, cost = data["usage"]
        text, model, response_id = data["text"], data["model"], data.get("response_id")
        provider = data.get("provider")  # absent in entries written before it was stored
        if not isinstance(text, str) or not text or not isinstance(model, str):
            raise TypeError("text and model must be non-empty strings")
        if not all(_count(n) for n in (prompt, completion, total)) or not (cost is None or _finite(cost)):
            raise TypeError("token counts must be integers >= 0 and the cost a finite number")
        if not all(value is None or isinstance(value, str) for value in (response_id, provider)):
            raise TypeError("the response id and provider must be text")
        return ChatResult(
            text=text,
            outcome=Outcome.CACHED,
            model=model,
            attempts=0,
            usage=Usage(prompt, completion, total, cost),
            response_id=response_id,
            route=route,
            provider=provider,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MalformedResponse(f"unreadable cache entry: {exc}", kind="bad_cache_entry") from exc


def _count(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
