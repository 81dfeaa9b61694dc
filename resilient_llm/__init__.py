"""resilient-llm: a resilient OpenRouter (OpenAI-compatible) chat caller for RL training loops."""

from resilient_llm.engine import Engine, acomplete, complete, default_engine, shutdown
from resilient_llm.errors import (
    BreakerOpen,
    CallFailed,
    ConfigError,
    ConnectionFailed,
    ErrorResponse,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    ResilientLLMError,
)
from resilient_llm.judge import JudgeCounters, judge_counters
from resilient_llm.settings import Settings
from resilient_llm.types import ChatOptions, ChatRequest, ChatResult, FailedAttempt, Outcome, Usage

__all__ = [
    "BreakerOpen",
    "CallFailed",
    "ChatOptions",
    "ChatRequest",
    "ChatResult",
    "ConfigError",
    "ConnectionFailed",
    "Engine",
    "ErrorResponse",
    "FailedAttempt",
    "JudgeCounters",
    "MalformedResponse",
    "Outcome",
    "ProviderError",
    "ProviderTimeout",
    "ResilientLLMError",
    "Settings",
    "Usage",
    "acomplete",
    "complete",
    "default_engine",
    "judge_counters",
    "shutdown",
]
