"""What ``doctor`` reads from OpenRouter, judged against what the trainer sends: the key (``GET /key``: credit limit,
what is left, free tier, rate limit), each configured model's entry (``GET /models``: its ``supported_parameters``,
whether it reasons), and the pinned routing. Pure functions of the answers; ``doctor`` does the requests.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from resilient_llm.config import Config
from resilient_llm.dropin.judge import JUDGE_MAX_TOKENS
from resilient_llm.dropin.run_utils import ASYNC_MAX_TOKENS, SYNC_MAX_TOKENS

# The max_tokens the trainer sends with each model's calls: the rubric judge through our judge, the generation through
# run_litellm_async, the citation judge through run_chatopenai, the HLE judge through run_litellm.
TRAINER_MAX_TOKENS = {
    "RUBRIC_JUDGE_MODEL": JUDGE_MAX_TOKENS,
    "RUBRIC_GENERATION_MODEL": ASYNC_MAX_TOKENS,
    "CITATION_JUDGE_MODEL": SYNC_MAX_TOKENS,
    "HLE_JUDGE_MODEL": SYNC_MAX_TOKENS,
}
# The sampling parameters every one of those calls sends.
TRAINER_PARAMETERS = ("temperature", "top_p", "max_tokens", "frequency_penalty", "presence_penalty")
REASONING_PARAMETERS = ("reasoning", "include_reasoning")
# Below this many tokens a reasoning model's thinking can take the whole budget (OpenRouter: content null, finish
# reason length); a few thousand is what reasoning models commonly spend on a judging prompt.
REASONING_MIN_TOKENS = 4096
LOW_CREDIT_USD = 1.0


@dataclasses.dataclass(frozen=True)
class Check:
    status: str  # PASS, WARN or FAIL
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<14} {self.detail}"


def parameter_checks(config: Config, variable: str, model: str, supported: set[str]) -> list[Check]:
    """What the trainer and the pinned routing send, against what the model's entry says it supports."""
    checks = []
    strict = config.routing.provider_require_parameters is True
    missing = [p for p in TRAINER_PARAMETERS if p not in supported]
    if config.routing.reasoning() and not supported & set(REASONING_PARAMETERS):
        missing.append("reasoning (RESILIENT_LLM_REASONING_*)")
    if missing:
        if strict:
            checks.append(
                Check(
                    "FAIL",
                    "parameters",
                    f"{variable}: {model} does not support {', '.join(missing)}, and with "
                    "RESILIENT_LLM_PROVIDER_REQUIRE_PARAMETERS=true OpenRouter finds no provider for its calls: "
                    "unset that, or pick another model",
                )
            )
        else:
            checks.append(
                Check(
                    "WARN",
                    "parameters",
                    f"{variable}: {model} does not support {', '.join(missing)}; OpenRouter drops them from its calls",
                )
            )
    else:
        checks.append(Check("PASS", "parameters", f"{variable}: {model} supports every parameter the trainer sends"))
    if supported & set(REASONING_PARAMETERS):
        checks.append(_reasoning_check(config, variable, model))
    return checks


def _reasoning_check(config: Config, variable: str, model: str) -> Check:
    """A reasoning model and the trainer's max_tokens for its calls: may reasoning leave no room for the answer?"""
    budget = TRAINER_MAX_TOKENS[variable]
    routing = config.routing
    if routing.reasoning_max_tokens is not None and routing.reasoning_max_tokens < budget:
        return Check(
            "PASS",
            "reasoning",
            f"{variable}: {model} reasons; RESILIENT_LLM_REASONING_MAX_TOKENS={routing.reasoning_max_tokens} "
            f"leaves {budget - routing.reasoning_max_tokens} of the trainer's {budget} tokens for the answer",
        )
    if routing.reasoning_effort == "none" or budget >= REASONING_MIN_TOKENS:
        return Check("PASS", "reasoning", f"{variable}: {model} reasons, within the trainer's max_tokens {budget}")
    return Check(
        "WARN",
        "reasoning",
        f"{variable}: {model} is a reasoning model and the trainer gives its calls max_tokens {budget}: its "
        "reasoning may use them all and leave no answer (finish_reason length, empty content). Fix: set "
        f"RESILIENT_LLM_REASONING_MAX_TOKENS below {budget} (or RESILIENT_LLM_REASONING_EFFORT=low or none), or "
        "choose a model that does not reason",
    )


def routing_check(config: Config) -> Check | None:
    """The pinned provider and reasoning objects, and whether they will be sent at all."""
    pinned = config.routing.body_fields()
    if not pinned:
        return None
    shown = json.dumps(pinned, separators=(",", ":"))
    if not config.http.targets_openrouter:
        return Check("WARN", "routing", f"{shown} is set but OPENAI_API_BASE is not OpenRouter: it is not sent")
    return Check("PASS", "routing", f"sent with every OpenRouter call (a call's own object wins): {shown}")


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _number(data: Mapping[str, Any], name: str) -> float | None:
    """A finite number of the key's description, else None (absent, text, NaN, or too large for a float)."""
    value = data.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def key_checks(status: int, body: Any) -> list[Check]:
    """What ``GET /key`` says of the key: accepted, its credit, free tier, rate limit."""
    if status in (401, 403):
        return [Check("FAIL", "key", f"rejected by the endpoint (HTTP {status})")]
    if status != 200:
        return [Check("WARN", "key", f"cannot verify here (GET /key answered HTTP {status})")]
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return [Check("PASS", "key", "accepted by the endpoint (it does not describe the key)")]
    usage, limit, remaining = _number(data, "usage"), _number(data, "limit"), _number(data, "limit_remaining")
    if remaining is None and limit is not None and usage is not None:
        remaining = limit - usage
    used = f"{_money(usage)} used" if usage is not None else "usage unknown"
    checks = []
    if limit is None:
        checks.append(Check("PASS", "key", f"accepted; no credit limit on the key ({used})"))
    elif remaining is not None and remaining <= 0:
        checks.append(
            Check(
                "FAIL",
                "credit",
                f"the key's credit limit {_money(limit)} is spent ({used}): calls will fail with HTTP 402; raise the "
                "key's limit or add credits",
            )
        )
    elif remaining is not None and remaining < LOW_CREDIT_USD:
        checks.append(
            Check(
                "WARN", "credit", f"{_money(remaining)} left of the key's {_money(limit)} limit ({used}): low for a run"
            )
        )
    else:
        left = f"{_money(remaining)} left of " if remaining is not None else ""
        checks.append(Check("PASS", "key", f"accepted; {left}a {_money(limit)} credit limit ({used})"))
    if data.get("is_free_tier") is True:
        checks.append(
            Check(
                "WARN",
                "free tier",
                "the key is on the free tier (no credits bought): free models have a small daily request quota "
                "and paid models need credits; buy credits before a long run",
            )
        )
    rate = data.get("rate_limit")
    if isinstance(rate, dict) and _number(rate, "requests") is not None:
        interval = rate.get("interval") if isinstance(rate.get("interval"), str) else "interval"
        checks.append(Check("PASS", "rate limit", f"{int(rate['requests'])} requests per {interval}"))
    return checks
