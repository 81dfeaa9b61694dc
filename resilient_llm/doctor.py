"""``resilient-llm doctor``: is the direct path configured, reachable and ready, before a multi-day run?

One line per check, PASS / WARN / FAIL; the exit status is 1 when anything failed. Secrets are never printed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
from collections.abc import Mapping

from resilient_llm.errors import ConfigError, ProviderError
from resilient_llm.layers.http import HTTPHandler
from resilient_llm.settings import Settings

SECRET_VARIABLES = ("OPENAI_API_KEY", "FALLBACK_API_KEY")
VARIABLES = (
    "USE_OPENROUTER_DIRECT",
    "OPENAI_API_KEY",
    "OPENAI_API_BASE",
    "RUBRIC_JUDGE_MODEL",
    "RUBRIC_GENERATION_MODEL",
    "OPENROUTER_MAX_CONCURRENT_CALLS",
    "LITELLM_DEFAULT_TIMEOUT",
)


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
            lines.append(f"      {name} = {env[name]!r} [env]")
    return lines


async def _endpoint_checks(settings: Settings) -> list[Check]:
    checks = []
    http = HTTPHandler(settings)
    try:
        try:
            status, body = await http.get_json("/models")
        except ProviderError as exc:
            return [Check("FAIL", "endpoint", f"{settings.base_url} unreachable: {exc}")]
        if status != 200:
            return [Check("FAIL", "endpoint", f"GET {settings.base_url}/models answered HTTP {status}")]
        checks.append(Check("PASS", "endpoint", f"{settings.base_url} reachable"))
        known = {m.get("id") for m in body.get("data", [])} if isinstance(body, dict) else set()
        for variable, model in (
            ("RUBRIC_JUDGE_MODEL", settings.judge_model),
            ("RUBRIC_GENERATION_MODEL", settings.generation_model),
        ):
            if model is None:
                checks.append(Check("WARN", "model", f"{variable} not set: the trainer's default model is used"))
            elif model in known:
                checks.append(Check("PASS", "model", f"{variable}={model} is offered by the endpoint"))
            else:
                checks.append(Check("FAIL", "model", f"{variable}={model} is not in the endpoint's model list"))
        try:
            status, _ = await http.get_json("/key")
        except ProviderError as exc:
            checks.append(Check("FAIL", "key", f"could not check the key: {exc}"))
        else:
            if status == 200:
                checks.append(Check("PASS", "key", "accepted by the endpoint"))
            elif status in (401, 403):
                checks.append(Check("FAIL", "key", f"rejected by the endpoint (HTTP {status})"))
            else:
                checks.append(Check("WARN", "key", f"cannot verify here (GET /key answered HTTP {status})"))
    finally:
        await http.aclose()
    return checks


async def _cache_check(settings: Settings) -> Check:
    from resilient_llm.stack import make_store

    try:
        store = make_store(settings)
    except ConfigError as exc:
        return Check("FAIL", "cache", str(exc))
    if store is None:
        return Check("WARN", "cache", "off (RESILIENT_LLM_CACHE=off)")
    where = "Redis" if settings.cache_redis_url else settings.cache_dir
    try:
        await store.set("doctor:probe", b"{}", 60.0)
        if await store.get("doctor:probe") != b"{}":
            raise OSError("the value read back differs from the one written")
    except Exception as exc:
        return Check("FAIL", "cache", f"{store.name} store at {where} not usable: {type(exc).__name__}: {exc}")
    finally:
        await store.close()
    return Check("PASS", "cache", f"{store.name} store at {where} is writable (mode {settings.cache_mode})")


def _breaker_redis_check(settings: Settings) -> Check | None:
    if not settings.breaker_redis_url:
        return None
    try:
        import redis

        redis.Redis.from_url(settings.breaker_redis_url, socket_timeout=1, socket_connect_timeout=1).ping()
    except Exception as exc:
        return Check("FAIL", "breaker", f"shared state Redis unreachable: {type(exc).__name__}")
    return Check("PASS", "breaker", "shared state Redis reachable")


def _fallback_check(settings: Settings) -> Check:
    if "litellm" not in settings.fallback:
        return Check("PASS", "fallback", f"chain {','.join(settings.fallback)}")
    if not settings.fallback_model:
        return Check("WARN", "fallback", "litellm route inactive: RESILIENT_LLM_FALLBACK_MODEL is not set")
    if importlib.util.find_spec("litellm") is None:
        return Check("FAIL", "fallback", "litellm route configured but LiteLLM is not installed")
    return Check("PASS", "fallback", f"litellm route to {settings.fallback_model}, then {settings.fallback[-1]}")


def run_checks(env: Mapping[str, str] | None = None) -> list[Check]:
    """All checks, in order; later checks are skipped when the configuration itself is invalid."""
    env = os.environ if env is None else env
    checks: list[Check] = []
    direct = env.get("USE_OPENROUTER_DIRECT", "").strip().lower()
    if direct in ("1", "true", "yes", "on"):
        checks.append(Check("PASS", "switch", "USE_OPENROUTER_DIRECT=true: the trainer uses resilient_llm"))
    else:
        checks.append(Check("WARN", "switch", "USE_OPENROUTER_DIRECT is not true: the trainer uses LiteLLM"))
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        return [*checks, Check("FAIL", "config", str(exc))]
    checks.append(Check("PASS", "config", "every variable valid"))
    proxy = settings.proxy_for_base_url()
    checks.append(Check("PASS", "proxy", f"via {proxy}" if proxy else "none (direct connection)"))
    checks += asyncio.run(_endpoint_checks(settings))
    checks.append(asyncio.run(_cache_check(settings)))
    breaker = _breaker_redis_check(settings)
    if breaker is not None:
        checks.append(breaker)
    checks.append(_fallback_check(settings))
    return checks


def main() -> int:
    env = dict(os.environ)
    print("resilient-llm doctor")
    print("\n".join(configuration_lines(env)))
    checks = run_checks(env)
    for check in checks:
        print(check.line())
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"{len(checks)} checks: {failed} failed, {sum(c.status == 'WARN' for c in checks)} warnings")
    return 1 if failed else 0
