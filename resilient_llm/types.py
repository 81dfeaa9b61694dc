"""Frozen request and result types, and the one seam every layer implements."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from resilient_llm.errors import FailedAttempt

Message = Mapping[str, Any]
DEFAULT_TIMEOUT_S = 600.0  # the trainer's LITELLM_DEFAULT_TIMEOUT
DEFAULT_NUM_RETRIES = 5  # the trainer's num_retries


class Outcome(enum.StrEnum):
    """How a call ended; every call ends in exactly one."""

    OK = "ok"  # a fresh answer from the provider
    CACHED = "cached"  # served from the response cache
    FALLBACK = "fallback"  # answered by a fallback route
    NEUTRAL = "neutral"  # nothing answered; the caller gets the configured neutral text
    FLAGGED = "flagged"  # moderation refused the input and no fallback answered; the caller gets the flagged text
    ERROR = "error"  # a caller mistake, raised because the caller asked to see it


@dataclass(slots=True)
class CallRecord:
    """What one call did on its way down the stack, for its log line. One per call, made by the outermost layer and
    carried on the request (every attempt and hedge of the call shares it); layers below write, observe reads."""

    waited_s: float = 0.0  # time spent waiting for an open breaker (an outage), holding no slot
    limit: int | None = None  # the concurrency limit when its last attempt was sent


_call_ids = itertools.count(1)


def next_call_id() -> int:
    """Process-unique, increasing id for one call (cheap, and readable in logs)."""
    return next(_call_ids)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion call, as handed down the stack."""

    model: str
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT_S
    num_retries: int = DEFAULT_NUM_RETRIES
    raise_caller_errors: bool = True
    call_id: int = field(default_factory=next_call_id)
    deadline: float | None = None  # time.monotonic() by which the whole call ends (set by the retry layer)
    trial: bool = False  # this attempt is a breaker's half-open trial (set by the breaker, read by the limit)
    record: CallRecord = field(default_factory=CallRecord, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and cost, as the provider reported them (``None`` when it did not)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The answer to one call. ``text`` is the neutral text when ``outcome`` is ``neutral``."""

    text: str
    outcome: Outcome
    model: str
    attempts: int = 1
    failures: tuple[FailedAttempt, ...] = ()
    usage: Usage = Usage()
    response_id: str | None = None
    route: str = "openrouter"
    latency_s: float = 0.0
    cache: str | None = None  # hit, miss, shared (joined an identical call in flight), replay_miss; None: not cached
    cache_key: str | None = None
    provider: str | None = None  # the upstream provider OpenRouter routed the answer to, when it says
    usage_dropped: tuple[str, ...] = ()  # usage fields the provider sent unusable (negative, NaN, absurd): now None


class Handler(Protocol):
    """The seam: every layer takes a request and returns a result, or raises a ResilientLLMError."""

    async def handle(self, request: ChatRequest) -> ChatResult: ...


class ChatOptions(TypedDict, total=False):
    """Keyword options of ``complete`` / ``acomplete``; unset sampling parameters are left to the provider."""

    system: str | None
    user: str | None
    temperature: float | None
    max_tokens: int | None
    top_p: float | None
    frequency_penalty: float | None
    presence_penalty: float | None
    extra_body: Mapping[str, Any] | None
    timeout: float | None
    num_retries: int | None
    raise_caller_errors: bool
