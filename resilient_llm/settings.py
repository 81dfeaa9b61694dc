"""Every environment variable is read and validated here, once, into a frozen Settings."""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from resilient_llm.errors import ConfigError

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
PREFIX = "RESILIENT_LLM_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")
CACHE_MODES = ("read-write", "refresh", "replay", "off")
FALLBACK_ROUTES = ("litellm", "neutral")

T = TypeVar("T")


class Secret:
    """A string that never shows itself in a repr, str or log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one engine."""

    api_key: Secret
    base_url: str = OPENROUTER_BASE_URL
    judge_model: str | None = None
    generation_model: str | None = None
    max_concurrent: int = 20
    timeout: float = 600.0
    connect_timeout: float = 10.0
    num_retries: int = 5
    deadline: float = 900.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 120.0
    ignore_proxy: bool = False
    http_referer: str | None = None
    app_title: str | None = None
    neutral_text: str = ""
    log_file: str = "stderr"
    log_format: str = "json"
    log_level: str = "info"
    log_prompts: bool = False
    cache_mode: str = "read-write"
    cache_dir: str = dataclasses.field(default_factory=lambda: default_cache_dir(os.environ))
    cache_redis_url: str | None = None
    cache_ttl: float | None = None
    cache_size_limit: int = 1 << 30
    cache_sampled: bool = False
    cache_fault_pause: float = 5.0
    breaker_fail_max: int = 10
    breaker_reset_timeout: float = 5.0
    breaker_half_open_trials: int = 1
    breaker_success_threshold: int = 1
    breaker_redis_url: str | None = None
    fallback: tuple[str, ...] = ("litellm", "neutral")
    fallback_model: str | None = None
    fallback_base_url: str | None = None
    fallback_api_key: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    fallback_retries: int = 1
    neutral_score: float = 0.5
    judge_neutral_text: str | None = None
    hedge: bool = False
    hedge_quantile: float = 0.98
    hedge_min_delay: float = 0.25
    hedge_max_delay: float = 30.0
    hedge_budget: float = 0.05

    @property
    def targets_openrouter(self) -> bool:
        return urllib.parse.urlsplit(self.base_url).hostname == "openrouter.ai"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment; raise ConfigError naming the first bad variable."""
        env = os.environ if environ is None else environ
        key = env.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise ConfigError("OPENAI_API_KEY is not set: put your OpenRouter key (sk-or-...) in it")
        settings = cls(
            api_key=Secret(key),
            base_url=_parse(env, "OPENAI_API_BASE", OPENROUTER_BASE_URL, _url, "an http(s) URL"),
            judge_model=env.get("RUBRIC_JUDGE_MODEL") or None,
            generation_model=env.get("RUBRIC_GENERATION_MODEL") or None,
            max_concurrent=_parse(
                env, "OPENROUTER_MAX_CONCURRENT_CALLS", 20, _int_in(1, 10_000), "an integer 1..10000"
            ),
            timeout=_parse(env, "LITELLM_DEFAULT_TIMEOUT", 600.0, _seconds, "a number of seconds > 0"),
            connect_timeout=_parse(env, PREFIX + "CONNECT_TIMEOUT", 10.0, _seconds, "a number of seconds > 0"),
            num_retries=_parse(env, PREFIX + "NUM_RETRIES", 5, _int_in(0, 100), "an integer 0..100"),
            deadline=_parse(env, PREFIX + "DEADLINE", 900.0, _seconds, "a number of seconds > 0"),
            backoff_base=_parse(env, PREFIX + "BACKOFF_BASE", 0.5, _seconds, "a number of seconds > 0"),
            backoff_max=_parse(env, PREFIX + "BACKOFF_MAX", 8.0, _seconds, "a number of seconds > 0"),
            retry_after_max=_parse(env, PREFIX + "RETRY_AFTER_MAX", 120.0, _seconds, "a number of seconds > 0"),
            ignore_proxy=_parse(env, PREFIX + "IGNORE_PROXY", False, _bool, "true or false"),
            http_referer=env.get(PREFIX + "HTTP_REFERER") or None,
            app_title=env.get(PREFIX + "APP_TITLE") or None,
            neutral_text=env.get(PREFIX + "NEUTRAL_TEXT", ""),
            log_file=env.get(PREFIX + "LOG_FILE") or "stderr",
            log_format=_parse(env, PREFIX + "LOG_FORMAT", "json", _choice(LOG_FORMATS), " or ".join(LOG_FORMATS)),
            log_level=_parse(env, PREFIX + "LOG_LEVEL", "info", _choice(LOG_LEVELS), ", ".join(LOG_LEVELS)),
            log_prompts=_parse(env, PREFIX + "LOG_PROMPTS", False, _bool, "true or false"),
            cache_mode=_parse(env, PREFIX + "CACHE", "read-write", _choice(CACHE_MODES), ", ".join(CACHE_MODES)),
            cache_dir=env.get(PREFIX + "CACHE_DIR") or default_cache_dir(env),
            cache_redis_url=_parse(env, PREFIX + "CACHE_REDIS_URL", None, _redis_url, "a redis:// or rediss:// URL"),
            cache_ttl=_parse(env, PREFIX + "CACHE_TTL", None, _ttl, "seconds > 0, or 0 for no expiry") or None,
            cache_size_limit=_parse(
                env, PREFIX + "CACHE_SIZE_LIMIT_MB", 1 << 30, _megabytes, "a whole number of megabytes >= 1"
            ),
            cache_sampled=_parse(env, PREFIX + "CACHE_SAMPLED", False, _bool, "true or false"),
            cache_fault_pause=_parse(env, PREFIX + "CACHE_FAULT_PAUSE", 5.0, _seconds, "a number of seconds > 0"),
            breaker_fail_max=_parse(env, PREFIX + "BREAKER_FAIL_MAX", 10, _int_in(1, 10_000), "an integer 1..10000"),
            breaker_reset_timeout=_parse(
                env, PREFIX + "BREAKER_RESET_TIMEOUT", 5.0, _seconds, "a number of seconds > 0"
            ),
            breaker_half_open_trials=_parse(
                env, PREFIX + "BREAKER_HALF_OPEN_TRIALS", 1, _int_in(1, 1000), "an integer 1..1000"
            ),
            breaker_success_threshold=_parse(
                env, PREFIX + "BREAKER_SUCCESS_THRESHOLD", 1, _int_in(1, 1000), "an integer 1..1000"
            ),
            breaker_redis_url=_parse(
                env, PREFIX + "BREAKER_REDIS_URL", None, _redis_url, "a redis:// or rediss:// URL"
            ),
            fallback=_parse(
                env, PREFIX + "FALLBACK", ("litellm", "neutral"), _routes, "a comma-separated list of litellm, neutral"
            ),
            fallback_model=env.get(PREFIX + "FALLBACK_MODEL") or None,
            fallback_base_url=_parse(env, PREFIX + "FALLBACK_BASE_URL", None, _url, "an http(s) URL"),
            fallback_api_key=Secret(env.get(env.get(PREFIX + "FALLBACK_KEY_VAR") or "FALLBACK_API_KEY", "")),
            fallback_retries=_parse(env, PREFIX + "FALLBACK_RETRIES", 1, _int_in(0, 10), "an integer 0..10"),
            neutral_score=_parse(env, PREFIX + "NEUTRAL_SCORE", 0.5, _unit_interval, "a number from 0 to 1"),
            judge_neutral_text=env.get(PREFIX + "JUDGE_NEUTRAL_TEXT") or None,
            hedge=_parse(env, PREFIX + "HEDGE", False, _bool, "true or false"),
            hedge_quantile=_parse(env, PREFIX + "HEDGE_QUANTILE", 0.98, _unit_interval, "a number from 0 to 1"),
            hedge_min_delay=_parse(env, PREFIX + "HEDGE_MIN_DELAY", 0.25, _seconds, "a number of seconds > 0"),
            hedge_max_delay=_parse(env, PREFIX + "HEDGE_MAX_DELAY", 30.0, _seconds, "a number of seconds > 0"),
            hedge_budget=_parse(env, PREFIX + "HEDGE_BUDGET", 0.05, _unit_interval, "a number from 0 to 1"),
        )
        if settings.judge_neutral_text is not None:
            if not settings.judge_model:
                raise ConfigError(
                    f"{PREFIX}JUDGE_NEUTRAL_TEXT is set but RUBRIC_JUDGE_MODEL is not: it applies to judge calls, "
                    "which are told apart by that model name"
                )
            if settings.judge_model == settings.generation_model:
                raise ConfigError(
                    f"{PREFIX}JUDGE_NEUTRAL_TEXT needs RUBRIC_JUDGE_MODEL and RUBRIC_GENERATION_MODEL to differ "
                    f"(both are {settings.judge_model!r}): judge calls are told apart by their model name"
                )
        if PREFIX + "FALLBACK" in env and "litellm" in settings.fallback and not settings.fallback_model:
            raise ConfigError(
                f"{PREFIX}FALLBACK={env[PREFIX + 'FALLBACK']!r} names litellm but {PREFIX}FALLBACK_MODEL is not set: "
                "name the LiteLLM model of the other provider (e.g. 'gpt-4o-mini' for OpenAI directly)"
            )
        for variable, model in (
            ("RUBRIC_JUDGE_MODEL", settings.judge_model),
            ("RUBRIC_GENERATION_MODEL", settings.generation_model),
        ):
            if model is not None:
                settings.check_model(model, variable)
        return settings

    def describe(self) -> dict[str, object]:
        """The configuration as logged at start-up: every field, the key only as set or not."""
        described: dict[str, object] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        described["api_key"] = "set" if self.api_key.reveal() else "missing"
        described["base_url"] = redact_url(self.base_url)
        described["proxy"] = self.proxy_for_base_url() or "none"
        described["fallback_api_key"] = "set" if self.fallback_api_key.reveal() else "missing"
        for name in ("cache_redis_url", "breaker_redis_url"):
            if getattr(self, name):
                described[name] = redact_url(getattr(self, name))
        return described

    def check_model(self, model: str, source: str = "model") -> str:
        """Return the model name to send; reject a name OpenRouter would not route, suggesting the fix."""
        name = model.strip()
        if not name:
            raise ConfigError(f"{source} is empty: give a model name such as 'openai/gpt-4o-mini'")
        if not self.targets_openrouter:
            return name
        name = name.removeprefix("openrouter/")  # LiteLLM's spelling of the same route
        if "/" not in name:
            raise ConfigError(
                f"{source}={model!r} has no provider prefix, which OpenRouter needs: use {suggest_model(name)!r}"
            )
        return name

    def proxy_for_base_url(self) -> str | None:
        """The proxy that requests to the base URL go through, without credentials; None when direct."""
        if self.ignore_proxy:
            return None
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
            return None
        proxy = urllib.request.getproxies().get(parts.scheme) or urllib.request.getproxies().get("all")
        return redact_url(proxy) if proxy else None


def suggest_model(name: str) -> str:
    """Best guess of the OpenRouter name of a bare model name."""
    lowered = name.lower()
    for prefixes, provider in (
        (("gpt-", "o1", "o3", "o4", "chatgpt"), "openai"),
        (("claude",), "anthropic"),
        (("gemini", "gemma"), "google"),
        (("llama",), "meta-llama"),
        (("mistral", "mixtral"), "mistralai"),
        (("qwen", "qwq"), "qwen"),
        (("deepseek",), "deepseek"),
    ):
        if lowered.startswith(prefixes):
            return f"{provider}/{name}"
    return f"<provider>/{name}"


def redact_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _parse(env: Mapping[str, str], name: str, default: T, convert: Callable[[str], T], accepted: str) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return convert(raw.strip())
    except ValueError:
        shown = redact_url(raw) if "://" in raw else raw
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ConfigError(f"{name}={shown!r} is not valid: expected {accepted}") from None


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def parse_bool(name: str, raw: str | None, default: bool) -> bool:
    """A true/false flag read at call time elsewhere (USE_OPENROUTER_DIRECT), validated the same way."""
    return _parse({} if raw is None else {name: raw}, name, default, _bool, "true or false")


def _seconds(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(raw)
    return value


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return convert


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(raw)
        return raw.lower()

    return convert


def default_cache_dir(env: Mapping[str, str]) -> str:
    """``$XDG_CACHE_HOME/resilient-llm``, else ``~/.cache/resilient-llm``."""
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "resilient-llm")


def _ttl(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(raw)
    return value


def _megabytes(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value * 1024 * 1024


def _routes(raw: str) -> tuple[str, ...]:
    routes = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    if not routes or any(r not in FALLBACK_ROUTES for r in routes) or len(set(routes)) != len(routes):
        raise ValueError(raw)
    if "neutral" in routes and routes[-1] != "neutral":
        raise ValueError(raw)  # nothing can come after the neutral result
    return routes


def _unit_interval(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError(raw)
    return value


def _redis_url(raw: str) -> str:
    if urllib.parse.urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(raw)
    return raw


def _url(raw: str) -> str:
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(raw)
    return raw.rstrip("/")
