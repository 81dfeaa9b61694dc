"""resilient-llm: a resilient OpenRouter (OpenAI-compatible) chat caller for RL training loops."""

from resilient_llm.config import Config
from resilient_llm.endpoints.http import HTTPConfig
from resilient_llm.endpoints.litellm import LiteLLMRouteConfig
from resilient_llm.engine import Engine
from resilient_llm.errors import (
    BreakerOpen,
    CallFailed,
    ConfigError,
    ConnectionFailed,
    ErrorResponse,
    FailedAttempt,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    ResilientLLMError,
)
from resilient_llm.layers.breaker import BreakerConfig
from resilient_llm.layers.cache import CacheConfig
from resilient_llm.layers.fallback import FallbackConfig
from resilient_llm.layers.hedge import HedgeConfig
from resilient_llm.layers.limit import LimitConfig
from resilient_llm.layers.retry import RetryConfig
from resilient_llm.logs import LogConfig
from resilient_llm.process import acomplete, complete, configure, default_engine, metrics, shutdown
from resilient_llm.prometheus import MetricsConfig
from resilient_llm.runtime import RuntimeConfig
from resilient_llm.types import ChatOptions, ChatRequest, ChatResult, Outcome, Usage
from resilient_llm.validation import Secret

__all__ = [
    "BreakerConfig",
    "BreakerOpen",
    "CacheConfig",
    "CallFailed",
    "ChatOptions",
    "ChatRequest",
    "ChatResult",
    "Config",
    "ConfigError",
    "ConnectionFailed",
    "Engine",
    "ErrorResponse",
    "FailedAttempt",
    "FallbackConfig",
    "HTTPConfig",
    "HedgeConfig",
    "LimitConfig",
    "LiteLLMRouteConfig",
    "LogConfig",
    "MalformedResponse",
    "MetricsConfig",
    "Outcome",
    "ProviderError",
    "ProviderTimeout",
    "ResilientLLMError",
    "RetryConfig",
    "RuntimeConfig",
    "Secret",
    "Usage",
    "acomplete",
    "complete",
    "configure",
    "default_engine",
    "metrics",
    "shutdown",
]
