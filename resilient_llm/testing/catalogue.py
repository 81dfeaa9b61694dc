"""The fault server's model catalogue: per model name, the way OpenRouter fails for that model (its docs and public
bug reports), beside the endpoint-wide profiles that apply to every other model.

A catalogue model fails deterministically from the request alone (its ``max_tokens``, how often that body was seen,
the time), as the real one does, so a test or benchmark knows what each call meets:

- ``test/healthy``: answers (the profile applies, as for the known models);
- ``test/reasoning-truncates``: a reasoning model; with ``max_tokens`` below ``reasoning_budget`` it spends them all
  on reasoning: 200, ``content: null``, ``finish_reason: "length"``, the reasoning text in ``message.reasoning``;
- ``test/no-provider``: 503 "No available model provider that meets your routing requirements", every time;
- ``test/no-endpoints``: 404 "No endpoints found that can handle the requested parameters.", every time;
- ``test/free-quota:free``: the free daily quota is spent: 429 with ``X-RateLimit-Limit/Remaining: 0/Reset`` (ms
  epoch, also in ``error.metadata.headers``) and no ``Retry-After`` until ``quota_reset_s`` after the server started;
  then it answers;
- ``test/hint-in-body``: each body's first request gets a 429 whose hint is only in ``error.metadata.headers``;
- ``test/hint-in-raw``: the same, the hint only in the provider's raw body (Google's ``retryDelay: "Ns"``);
- ``test/error-in-choice``: each body's first request gets a 200 whose ``choices[0].error`` is a 429 with the hint in
  its metadata (an error met after the answer started);
- ``test/keepalive``: 200 at once, then whitespace every 0.25 s for ``keepalive_s``, then the JSON;
- ``test/moderated``: 403 moderation refusal with ``metadata.reasons``, ``flagged_input``, ``provider_name``;
- ``test/retry-after-3600``: 429 with ``Retry-After: 3600``, every time;
- ``test/provider-down``: the model's provider is down: 502 "Provider returned error" (JSON, with
  ``metadata.provider_name`` and ``raw``), every time: a model's outage, not the endpoint's;
- ``test/usage-float``, ``-huge``, ``-negative``, ``-nonfinite``: answers whose usage block is odd (``12.0``;
  ``1e308`` and a 400-digit integer; negative counts; ``NaN`` and ``Infinity``).
"""

from __future__ import annotations

from typing import Any

# model name -> its behaviour (a key of ``behaviour_kind``'s match)
CATALOGUE: dict[str, str] = {
    "test/healthy": "healthy",
    "test/reasoning-truncates": "reasoning",
    "test/no-provider": "no_provider",
    "test/no-endpoints": "no_endpoints",
    "test/free-quota:free": "quota",
    "test/hint-in-body": "hint_in_body",
    "test/hint-in-raw": "hint_in_raw",
    "test/error-in-choice": "error_in_choice",
    "test/keepalive": "keepalive",
    "test/moderated": "moderation",
    "test/retry-after-3600": "retry_after_3600",
    "test/provider-down": "provider_down",
    "test/usage-float": "usage_float",
    "test/usage-huge": "usage_huge",
    "test/usage-negative": "usage_negative",
    "test/usage-nonfinite": "usage_nonfinite",
}

# The fault kinds the catalogue produces (FAULT_KINDS includes them: ``script`` can ask for them too).
CATALOGUE_KINDS = (
    "truncated_reasoning",
    "no_provider_503",
    "no_endpoints_404",
    "quota_429",
    "hint_in_body_429",
    "hint_in_raw_429",
    "error_in_choice_429",
    "keepalive",
    "moderation_403",
    "retry_after_3600",
    "provider_down_502",
    "usage_float",
    "usage_huge",
    "usage_negative",
    "usage_nonfinite",
)
# Decided by OpenRouter before any model runs: answered at once, without the server's latency.
IMMEDIATE_KINDS = ("no_provider_503", "no_endpoints_404", "quota_429", "moderation_403", "retry_after_3600")
HINTED_KINDS = ("hint_in_body_429", "hint_in_raw_429", "error_in_choice_429")  # hint: the server's retry_after_s


def behaviour_kind(behaviour: str, *, seen: int, max_tokens: Any, reasoning_budget: int, quota_spent: bool) -> str:
    """The fault kind a catalogue model's behaviour gives this request ("ok": it answers, the profile may still
    draw a fault for it); ``seen``: how often this very body was seen before."""
    match behaviour:
        case "reasoning":
            small = not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < reasoning_budget
            return "truncated_reasoning" if small else "ok"
        case "no_provider":
            return "no_provider_503"
        case "no_endpoints":
            return "no_endpoints_404"
        case "quota":
            return "quota_429" if quota_spent else "ok"
        case "hint_in_body" | "hint_in_raw" | "error_in_choice":
            return f"{behaviour}_429" if seen == 0 else "ok"
        case "keepalive" | "retry_after_3600" | "usage_float" | "usage_huge" | "usage_negative" | "usage_nonfinite":
            return behaviour
        case "provider_down":
            return "provider_down_502"
        case "moderation":
            return "moderation_403"
    return "ok"
