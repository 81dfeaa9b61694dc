"""``resilient-llm doctor``: is the direct path configured, reachable and ready, before a multi-day run?

One line per check, PASS / WARN / FAIL; the exit status is 1 when anything failed. Secrets are never printed.

It asks the endpoint for its models and the key; how it judges OpenRouter's answers (the key's credit and tier, each
model's supported parameters and reasoning budget) is in ``doctor_openrouter``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import sys
from collections.abc import Mapping
from typing import Any

from resilient_llm import redact
from resilient_llm.cli.doctor_openrouter import Check, key_checks, parameter_checks, routing_check
from resilient_llm.config import Config
from resilient_llm.dropin.config import TrainerConfig, use_openrouter_direct
from resilient_llm.endpoints.http import HTTPHandler
from resilient_llm.errors import ConfigError, ProviderError
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
            checks += parameter_checks(config, variable, sent, {p for p in supported if isinstance(p, str)})
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
            checks += key_checks(status, body)
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
    routing = routing_check(config)
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
