"""``resilient-llm doctor``: is the direct path configured, reachable and ready, before a multi-day run?

One line per check, PASS / WARN / FAIL; the exit status is 1 when anything failed. Secrets are never printed.

It reads the key as OpenRouter describes it (``GET /key``: credit limit, usage and what is left, free tier, rate
limit) and each configured model's entry in ``GET /models``: that it exists, that its ``supported_parameters`` hold
what the trainer sends (else OpenRouter drops them, or with ``require_parameters`` finds no provider), and whether it
is a reasoning model whose reasoning may use up the trainer's ``max_tokens`` for that call and leave no answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import io
import json
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from resilient_llm import redact
from resilient_llm.config import Config
from resilient_llm.dropin.config import TrainerConfig, use_openrouter_direct
from resilient_llm.dropin.judge import JUDGE_MAX_TOKENS
from resilient_llm.dropin.run_utils import ASYNC_MAX_TOKENS, SYNC_MAX_TOKENS
from resilient_llm.errors import ConfigError, ProviderError
from resilient_llm.layers.http import HTTPHandler
from resilient_llm.redact import url_secrets
from resilient_llm.validation import redact_url

SECRET_VARIABLES = ("OPENAI_API_KEY", "FALLBACK_API_KEY")
VARIABLES = (
    "USE_OPENROUTER_DIRECT",
    "OPENAI_API_KEY",
    "OPENAI_API_BASE",
    "RUBRIC_JUDGE_MODEL",
    "RUBRIC_GENERATION_MODEL",
    "CITATION_JUDGE_MODEL",
    "HLE_JUDGE_MODEL",
    "OPENROUTER_MAX_CONCURRENT_CALLS",
    "LITELLM_DEFAULT_TIMEOUT",
)
# Every model variable DR Tulu reads, with DR Tulu's own default (None: the trainer passes a model of its own).
MODEL_VARIABLES: tuple[tuple[str, str | None], ...] = (
    ("RUBRIC_JUDGE_MODEL", "gpt-4.1-mini"),
    ("RUBRIC_GENERATION_MODEL", None),
    ("CITATION_JUDGE_MODEL", "gpt-4o-mini"),
    ("HLE_JUDGE_MODEL", "gpt-4.1"),
)
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


def configuration_lines(env: Mapping[str, str]) -> list[str]:
    """Every flag we read, with where its value comes from; secrets only as set or not."""
    names = list(VARIABLES) + sorted(k for k in env if k.startswith("RESILIENT_LLM_"))
    key_var = env.get("RESILIENT_LLM_FALLBACK_KEY_VAR", "FALLBACK_API_KEY")
    lines = []
    for name in names:
        if name not in env:
            lines.append(f"      {name} = (default)")
        elif name in SECRET_VARIABLES or name == key_var or "PASSWORD" in name:
            lines.append(f"      {name} = (set, {len(env[name])} characters) [env]")
        else:
            value = redact_url(env[name]) if "://" in env[name] else env[name]
            lines.append(f"      {name} = {value!r} [env]")
    return lines


def _model_checks(config: Config, env: Mapping[str, str], catalogue: Mapping[str, Mapping[str, Any]]) -> list[Check]:
    """Each model DR Tulu will ask for, as it will be sent (bare OpenAI names become ``openai/...``)."""
    checks = []
    for variable, default in MODEL_VARIABLES:
        model = env.get(variable) or default
        if model is None:
            checks.append(Check("WARN", "model", f"{variable} not set: the trainer's own model is used"))
            continue
        source = f"{variable}={model}" if env.get(variable) else f"{variable} unset, DR Tulu's default {model}"
        try:
            sent = config.model_name(model, variable)
        except ConfigError as exc:
            checks.append(Check("FAIL", "model", str(exc)))
            continue
        shown = source if sent == model else f"{source} (sent as {sent})"
        entry = catalogue.get(sent)
        if entry is None:
            checks.append(Check("FAIL", "model", f"{shown} is not in the endpoint's model list"))
            continue
        checks.append(Check("PASS", "model", f"{shown} is offered by the endpoint"))
        supported = entry.get("supported_parameters")
        if isinstance(supported, list):  # OpenRouter lists them; other servers do not say
            checks += _parameter_checks(config, variable, sent, {p for p in supported if isinstance(p, str)})
    return checks


def _parameter_checks(config: Config, variable: str, model: str, supported: set[str]) -> list[Check]:
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


def _routing_check(config: Config) -> Check | None:
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


def _key_checks(status: int, body: Any) -> list[Check]:
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


async def _endpoint_checks(config: Config, env: Mapping[str, str]) -> list[Check]:
    checks = []
    base_url = redact_url(config.http.base_url)
    http = HTTPHandler(config.http, max_connections=2)
    try:
        try:
            status, body = await http.get_json("/models")
        except ProviderError as exc:
            return [Check("FAIL", "endpoint", f"{base_url} unreachable: {exc}")]
        if status != 200:
            return [Check("FAIL", "endpoint", f"GET {base_url}/models answered HTTP {status}")]
        checks.append(Check("PASS", "endpoint", f"{base_url} reachable"))
        data = body.get("data") if isinstance(body, dict) else None
        models = data if isinstance(data, list) else []
        catalogue = {m["id"]: m for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)}
        checks += _model_checks(config, env, catalogue)
        try:
            status, body = await http.get_json("/key")
        except ProviderError as exc:
            checks.append(Check("FAIL", "key", f"could not check the key: {exc}"))
        else:
            checks += _key_checks(status, body)
    finally:
        await http.aclose()
    return checks


async def _cache_check(config: Config) -> Check:
    from resilient_llm.stack import make_store

    try:
        store = make_store(config.cache)
    except ConfigError as exc:
        return Check("FAIL", "cache", str(exc))
    if store is None:
        return Check("WARN", "cache", "off (RESILIENT_LLM_CACHE=off)")
    where = "Redis" if config.cache.redis_url else config.cache.directory
    try:
        await store.set("doctor:probe", b"{}", 60.0)
        if await store.get("doctor:probe") != b"{}":
            raise OSError("the value read back differs from the one written")
    except Exception as exc:
        return Check("FAIL", "cache", f"{store.name} store at {where} not usable: {type(exc).__name__}: {exc}")
    finally:
        await store.close()
    return Check("PASS", "cache", f"{store.name} store at {where} is writable (mode {config.cache.mode})")


def _breaker_redis_check(config: Config) -> Check | None:
    if not config.breaker.redis_url:
        return None
    try:
        import redis

        redis.Redis.from_url(config.breaker.redis_url, socket_timeout=1, socket_connect_timeout=1).ping()
    except Exception as exc:
        return Check("FAIL", "breaker", f"shared state Redis unreachable: {type(exc).__name__}")
    return Check("PASS", "breaker", "shared state Redis reachable")


def _fallback_check(config: Config) -> Check:
    routes = config.fallback.routes
    if "litellm" not in routes:
        return Check("PASS", "fallback", f"chain {','.join(routes)}")
    if not config.litellm.model:
        return Check("WARN", "fallback", "litellm route inactive: RESILIENT_LLM_FALLBACK_MODEL is not set")
    if importlib.util.find_spec("litellm") is None:
        return Check("FAIL", "fallback", "litellm route configured but LiteLLM is not installed")
    return Check("PASS", "fallback", f"litellm route to {config.litellm.model}, then {routes[-1]}")


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """The keys and every URL password in the environment, for ``redact``."""
    key_var = env.get("RESILIENT_LLM_FALLBACK_KEY_VAR", "FALLBACK_API_KEY")
    keys = [env.get(name, "") for name in (*SECRET_VARIABLES, key_var)]
    return keys + [secret for value in env.values() if "://" in value for secret in url_secrets(value)]


def run_checks(env: Mapping[str, str] | None = None) -> list[Check]:
    """All checks, in order; later checks are skipped when the configuration itself is invalid."""
    env = os.environ if env is None else env
    redact.register(env_secrets(env))
    checks: list[Check] = []
    try:
        direct = use_openrouter_direct(env)
    except ConfigError as exc:
        return [Check("FAIL", "switch", str(exc))]
    if direct:
        checks.append(Check("PASS", "switch", "USE_OPENROUTER_DIRECT=true: the trainer uses resilient_llm"))
    else:
        checks.append(Check("WARN", "switch", "USE_OPENROUTER_DIRECT is not true: the trainer uses LiteLLM"))
    try:
        config = Config.from_env(env)
        TrainerConfig.from_env(config, env)
    except ConfigError as exc:
        return [*checks, Check("FAIL", "config", str(exc))]
    checks.append(Check("PASS", "config", "every variable valid"))
    proxy = config.http.proxy()
    checks.append(Check("PASS", "proxy", f"via {proxy}" if proxy else "none (direct connection)"))
    routing = _routing_check(config)
    if routing is not None:
        checks.append(routing)
    checks += asyncio.run(_endpoint_checks(config, env))
    checks.append(asyncio.run(_cache_check(config)))
    breaker = _breaker_redis_check(config)
    if breaker is not None:
        checks.append(breaker)
    checks.append(_fallback_check(config))
    return checks


def main() -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # a title or message the terminal cannot encode prints escaped
        sys.stdout.reconfigure(errors="backslashreplace")
    env = dict(os.environ)
    redact.register(env_secrets(env))
    print("resilient-llm doctor")
    print(redact.redact("\n".join(configuration_lines(env))))
    checks = run_checks(env)
    for check in checks:
        print(redact.redact(check.line()))
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"{len(checks)} checks: {failed} failed, {sum(c.status == 'WARN' for c in checks)} warnings")
    return 1 if failed else 0
