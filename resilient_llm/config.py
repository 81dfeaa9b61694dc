"""The engine's configuration: one frozen ``Config`` of per-layer sections, and the one table that reads it from the
environment.

Each section lives beside its layer and validates itself (``HTTPConfig`` in ``endpoints/http.py``, ...). This module
only gathers them and maps environment variables to their fields; a bad value stops start-up with the variable, the
value and what is accepted. Build a ``Config`` in code (``Config(http=HTTPConfig(api_key=...))``) or from the
environment (``Config.from_env()``), and hand it to ``Engine(config)`` or ``resilient_llm.configure(config)``.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from resilient_llm.endpoints.http import HTTPConfig
from resilient_llm.endpoints.litellm import LiteLLMRouteConfig
from resilient_llm.errors import ConfigError
from resilient_llm.layers.breaker import BreakerConfig
from resilient_llm.layers.cache import CacheConfig, default_cache_dir
from resilient_llm.layers.fallback import FallbackConfig
from resilient_llm.layers.hedge import HedgeConfig
from resilient_llm.layers.limit import LimitConfig
from resilient_llm.layers.retry import RetryConfig
from resilient_llm.logs import LogConfig
from resilient_llm.model_names import endpoint_name
from resilient_llm.prometheus import MetricsConfig
from resilient_llm.redact import url_secrets
from resilient_llm.routing import RoutingConfig
from resilient_llm.runtime import RuntimeConfig
from resilient_llm.validation import Check, Secret, Validated, redact_url

PREFIX = "RESILIENT_LLM_"


@dataclass(frozen=True)
class Config:
    """Everything one engine needs, one section per layer."""

    http: HTTPConfig
    retry: RetryConfig = dataclasses.field(default_factory=RetryConfig)
    limit: LimitConfig = dataclasses.field(default_factory=LimitConfig)
    breaker: BreakerConfig = dataclasses.field(default_factory=BreakerConfig)
    hedge: HedgeConfig = dataclasses.field(default_factory=HedgeConfig)
    cache: CacheConfig = dataclasses.field(default_factory=CacheConfig)
    fallback: FallbackConfig = dataclasses.field(default_factory=FallbackConfig)
    litellm: LiteLLMRouteConfig = dataclasses.field(default_factory=LiteLLMRouteConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    routing: RoutingConfig = dataclasses.field(default_factory=RoutingConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read and validate the environment; ConfigError names the first bad variable."""
        env = os.environ if environ is None else environ
        if not env.get("OPENAI_API_KEY", "").strip():
            raise ConfigError("OPENAI_API_KEY is not set: put your OpenRouter key (sk-or-...) in it")
        defaults: dict[str, dict[str, Any]] = {"cache": {"directory": default_cache_dir(env.get("XDG_CACHE_HOME"))}}
        fallback_key_var = env.get(PREFIX + "FALLBACK_KEY_VAR") or "FALLBACK_API_KEY"
        defaults["litellm"] = {"api_key": Secret(env.get(fallback_key_var, ""))}
        sections = {name: read_section(env, name, cls, ENVIRONMENT, defaults.get(name)) for name, cls in SECTIONS}
        config = cls(**sections)
        if PREFIX + "FALLBACK" in env and "litellm" in config.fallback.routes and not config.litellm.model:
            raise ConfigError(
                f"{PREFIX}FALLBACK={env[PREFIX + 'FALLBACK']!r} names litellm but {PREFIX}FALLBACK_MODEL is not set: "
                "name the LiteLLM model of the other provider (e.g. 'gpt-4o-mini' for OpenAI directly)"
            )
        return config

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some fields of some sections changed, e.g. ``config.replace(retry={"deadline": 30})``."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **fields) if isinstance(fields, Mapping) else fields
            for name, fields in sections.items()
        }
        return dataclasses.replace(self, **changed)

    def model_name(self, model: str, source: str = "model") -> str:
        """The model name to send (bare OpenAI names get ``openai/`` on OpenRouter, ``hosted_vllm/`` is dropped on
        another server); ConfigError when unroutable."""
        return endpoint_name(model, source, openrouter=self.http.targets_openrouter)

    def extra_body(self, extra_body: Mapping[str, Any]) -> dict[str, Any]:
        """A call's extra body fields as sent: with the pinned provider and reasoning objects on OpenRouter."""
        return self.routing.apply(extra_body, openrouter=self.http.targets_openrouter)

    def secrets(self) -> list[str]:
        """Every credential this configuration holds: its keys, the passwords in its URLs, and the proxies'."""
        found: list[str] = []
        for name, _ in SECTIONS:
            for value in dataclasses.asdict(getattr(self, name)).values():
                if isinstance(value, Secret):
                    found.append(value.reveal())
                elif isinstance(value, str) and "://" in value:
                    found += url_secrets(value)
        found += [secret for url in urllib.request.getproxies().values() for secret in url_secrets(url)]
        return [secret for secret in found if secret]

    def describe(self) -> dict[str, object]:
        """The configuration as logged at start-up: every field, secrets only as set or missing, no URL password."""
        described: dict[str, object] = {}
        for name, _ in SECTIONS:
            for field, value in dataclasses.asdict(getattr(self, name)).items():
                if isinstance(value, Secret):
                    value = "set" if value else "missing"
                elif isinstance(value, str) and "://" in value:
                    value = redact_url(value)
                described[f"{name}_{field}"] = value
        described["proxy"] = self.http.proxy() or "none"
        return described


class Variable(NamedTuple):
    """One environment variable and the config field it sets."""

    name: str
    section: str
    field: str


SECTIONS: tuple[tuple[str, type[Validated]], ...] = (
    ("http", HTTPConfig),
    ("retry", RetryConfig),
    ("limit", LimitConfig),
    ("breaker", BreakerConfig),
    ("hedge", HedgeConfig),
    ("cache", CacheConfig),
    ("fallback", FallbackConfig),
    ("litellm", LiteLLMRouteConfig),
    ("log", LogConfig),
    ("metrics", MetricsConfig),
    ("runtime", RuntimeConfig),
    ("routing", RoutingConfig),
)

ENVIRONMENT: tuple[Variable, ...] = (
    Variable("OPENAI_API_KEY", "http", "api_key"),
    Variable("OPENAI_API_BASE", "http", "base_url"),
    Variable("LITELLM_DEFAULT_TIMEOUT", "http", "timeout"),
    Variable(PREFIX + "CONNECT_TIMEOUT", "http", "connect_timeout"),
    Variable(PREFIX + "IGNORE_PROXY", "http", "ignore_proxy"),
    Variable(PREFIX + "HTTP_REFERER", "http", "http_referer"),
    Variable(PREFIX + "APP_TITLE", "http", "app_title"),
    Variable(PREFIX + "HTTP_TRANSPORT", "http", "transport"),
    Variable(PREFIX + "NUM_RETRIES", "retry", "num_retries"),
    Variable(PREFIX + "DEADLINE", "retry", "deadline"),
    Variable(PREFIX + "BACKOFF_BASE", "retry", "backoff_base"),
    Variable(PREFIX + "BACKOFF_MAX", "retry", "backoff_max"),
    Variable(PREFIX + "RETRY_AFTER_MAX", "retry", "retry_after_max"),
    Variable(PREFIX + "RETRY_BUDGET", "retry", "budget"),
    Variable("OPENROUTER_MAX_CONCURRENT_CALLS", "limit", "max_concurrent"),
    Variable(PREFIX + "CONCURRENCY", "limit", "mode"),
    Variable(PREFIX + "CONCURRENCY_INITIAL", "limit", "initial"),
    Variable(PREFIX + "LIMIT_REDIS_URL", "limit", "redis_url"),
    Variable(PREFIX + "PAUSE_MAX", "limit", "pause_max"),
    Variable(PREFIX + "BREAKER_FAIL_MAX", "breaker", "fail_max"),
    Variable(PREFIX + "BREAKER_RESET_TIMEOUT", "breaker", "reset_timeout"),
    Variable(PREFIX + "BREAKER_RESET_TIMEOUT_MAX", "breaker", "reset_timeout_max"),
    Variable(PREFIX + "OUTAGE_WAIT", "breaker", "outage_wait"),
    Variable(PREFIX + "BREAKER_HALF_OPEN_TRIALS", "breaker", "half_open_trials"),
    Variable(PREFIX + "BREAKER_SUCCESS_THRESHOLD", "breaker", "success_threshold"),
    Variable(PREFIX + "BREAKER_REDIS_URL", "breaker", "redis_url"),
    Variable(PREFIX + "HEDGE", "hedge", "enabled"),
    Variable(PREFIX + "HEDGE_QUANTILE", "hedge", "quantile"),
    Variable(PREFIX + "HEDGE_MIN_DELAY", "hedge", "min_delay"),
    Variable(PREFIX + "HEDGE_MAX_DELAY", "hedge", "max_delay"),
    Variable(PREFIX + "HEDGE_BUDGET", "hedge", "budget"),
    Variable(PREFIX + "ATTEMPT_TIMEOUT_FACTOR", "hedge", "attempt_timeout_factor"),
    Variable(PREFIX + "ATTEMPT_TIMEOUT_MIN", "hedge", "attempt_timeout_min"),
    Variable(PREFIX + "CACHE", "cache", "mode"),
    Variable(PREFIX + "CACHE_DIR", "cache", "directory"),
    Variable(PREFIX + "CACHE_REDIS_URL", "cache", "redis_url"),
    Variable(PREFIX + "CACHE_TTL", "cache", "ttl"),
    Variable(PREFIX + "CACHE_SIZE_LIMIT_MB", "cache", "size_limit_mb"),
    Variable(PREFIX + "CACHE_SAMPLED", "cache", "sampled"),
    Variable(PREFIX + "CACHE_FAULT_PAUSE", "cache", "fault_pause"),
    Variable(PREFIX + "FALLBACK", "fallback", "routes"),
    Variable(PREFIX + "NEUTRAL_TEXT", "fallback", "neutral_text"),
    Variable(PREFIX + "FLAGGED_TEXT", "fallback", "flagged_text"),
    Variable(PREFIX + "FALLBACK_MODEL", "litellm", "model"),
    Variable(PREFIX + "FALLBACK_BASE_URL", "litellm", "base_url"),
    Variable(PREFIX + "FALLBACK_RETRIES", "litellm", "retries"),
    Variable(PREFIX + "LOG_FILE", "log", "file"),
    Variable(PREFIX + "LOG_FORMAT", "log", "format"),
    Variable(PREFIX + "LOG_LEVEL", "log", "level"),
    Variable(PREFIX + "LOG_PROMPTS", "log", "prompts"),
    Variable(PREFIX + "METRICS_PORT", "metrics", "port"),
    Variable(PREFIX + "METRICS_HOST", "metrics", "host"),
    Variable(PREFIX + "LOOP", "runtime", "loop"),
    Variable(PREFIX + "PROVIDER_ORDER", "routing", "provider_order"),
    Variable(PREFIX + "PROVIDER_ALLOW_FALLBACKS", "routing", "provider_allow_fallbacks"),
    Variable(PREFIX + "PROVIDER_REQUIRE_PARAMETERS", "routing", "provider_require_parameters"),
    Variable(PREFIX + "PROVIDER_DATA_COLLECTION", "routing", "provider_data_collection"),
    Variable(PREFIX + "PROVIDER_SORT", "routing", "provider_sort"),
    Variable(PREFIX + "PROVIDER_QUANTIZATIONS", "routing", "provider_quantizations"),
    Variable(PREFIX + "PROVIDER_ONLY", "routing", "provider_only"),
    Variable(PREFIX + "PROVIDER_IGNORE", "routing", "provider_ignore"),
    Variable(PREFIX + "REASONING_EFFORT", "routing", "reasoning_effort"),
    Variable(PREFIX + "REASONING_MAX_TOKENS", "routing", "reasoning_max_tokens"),
    Variable(PREFIX + "REASONING_EXCLUDE", "routing", "reasoning_exclude"),
)


def read_section(
    env: Mapping[str, str],
    name: str,
    section: type[Validated],
    table: tuple[Variable, ...],
    defaults: Mapping[str, Any] | None = None,
) -> Any:
    """Section ``name`` from the variables of ``table`` that set it; unset or blank variables keep the default."""
    values: dict[str, Any] = dict(defaults or {})
    fields = {f.name: f for f in dataclasses.fields(section)}  # type: ignore[arg-type]
    variables = [v for v in table if v.section == name]
    for variable in variables:
        raw = env.get(variable.name)
        if raw is None or raw.strip() == "":
            continue
        check: Check[Any] = fields[variable.field].metadata["check"]
        try:
            values[variable.field] = check.from_text(raw)
        except ValueError:
            shown = f"<hidden, {len(raw)} characters>" if check.parse is Secret else _shown(raw)
            raise ConfigError(
                f"{variable.name}={shown} is not valid: expected {check.accepted}", field=variable.field
            ) from None
    try:
        return section(**values)
    except ConfigError as exc:  # a default that does not fit, or a rule across fields: name the variable behind it
        names = [v.name for v in variables if v.field == exc.field]
        raise ConfigError(f"{', '.join(names) or name}: {exc}", field=exc.field) from None


def _shown(raw: str) -> str:
    shown = redact_url(raw) if "://" in raw else raw
    return repr(shown if len(shown) <= 80 else shown[:77] + "...")
