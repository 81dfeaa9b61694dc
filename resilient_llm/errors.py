"""The exception tree. Foreign exceptions (httpx, JSON, settings) are converted where they arise, chained with ``from``.

::

    ResilientLLMError
     ├── ConfigError              a setting or argument is wrong; no retry can fix it
     ├── ProviderError            one attempt failed; ``kind`` names how, ``status`` the HTTP status if any
     │    ├── ConnectionFailed    refused, reset, dropped, HTTP protocol error
     │    ├── ProviderTimeout     connect, read, write, pool or total timeout
     │    ├── ErrorResponse       HTTP status >= 400, or an ``{"error": ...}`` object inside a 200
     │    ├── MalformedResponse   bad or truncated JSON, no choices, empty content, ``finish_reason: "error"``
     │    └── BreakerOpen         the route's circuit breaker is open (or its half-open trial is taken): not sent
     └── CallFailed               failed for good: a caller mistake, or the retry budget (attempts or deadline)
                                  ran out; ``failures`` lists every attempt, ``last`` is the final ProviderError

The classification of a ProviderError (retryable? backpressure? the caller's mistake? how far does it reach?) lives
here too, beside the tree it reads: the retry, breaker, limit, hedge and fallback layers all ask the same questions.

**Scope** says what a failure tells about *other* requests (``Scope``): a request-scope failure (truncated by
``max_tokens``, no provider for its parameters, moderation, a caller mistake) will repeat for this request and says
nothing about the endpoint; a model-scope one (the model's quota, its provider's outage, its rate limit) concerns
this model under this key; an endpoint-scope one (refused or reset connections, timeouts) concerns every model. Only
endpoint-scope failures may open the endpoint's breaker; model-scope ones the model's.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from resilient_llm.redact import redact


class Scope(enum.StrEnum):
    """How far one failure reaches: which other requests it says something about."""

    REQUEST = "request"  # this request fails the same way again; says nothing about the model or the endpoint
    MODEL = "model"  # this model, under this key: its quota, its provider's outage, its rate limit
    ENDPOINT = "endpoint"  # the endpoint itself, for every model: connections refused or reset, timeouts
    LOCAL = "local"  # never reached the endpoint: refused by our own breaker or queue


class ResilientLLMError(Exception):
    """Root of every exception this library raises."""


class ConfigError(ResilientLLMError, ValueError):
    """A setting or argument is invalid; the message names it, the value and what is accepted."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(redact(message))
        self.field = field  # the config field at fault, when one is


class ProviderError(ResilientLLMError):
    """One attempt at the provider failed."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        scope: Scope | None = None,
    ) -> None:
        super().__init__(redact(message))  # a body may echo the key it was sent
        self.kind = kind
        self.status = status
        self.code = code
        self.retry_after = retry_after  # seconds the provider asked us to wait (any hint it sent), when it did
        self.scope = scope if scope is not None else default_scope(self)

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.kind}{where}: {self.args[0]}"


class ConnectionFailed(ProviderError):
    """The connection was refused, reset or dropped, or the peer broke the HTTP protocol."""


class ProviderTimeout(ProviderError):
    """The provider did not answer in time."""


class ErrorResponse(ProviderError):
    """The provider answered with an error: an HTTP error status or an error object in the body."""


class MalformedResponse(ProviderError):
    """The provider answered 200 but the body is not a usable chat completion."""


class BreakerOpen(ProviderError):
    """The circuit breaker refused the attempt without sending it."""


class CallFailed(ResilientLLMError):
    """The call failed for good; ``failures`` lists every attempt in order, ``last`` is the final error."""

    def __init__(self, message: str, failures: Sequence[FailedAttempt], last: ProviderError) -> None:
        super().__init__(redact(message))
        self.failures = tuple(failures)
        self.last = last


TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
CALLER_MISTAKE_STATUSES = frozenset({400, 401, 403, 404, 413, 422})
BACKPRESSURE_STATUSES = frozenset({402, 429})
IN_FLIGHT_BUDGET_EXHAUSTED = "in_flight_budget_exhausted"


def default_scope(error: ProviderError) -> Scope:
    """The scope of a failure that did not say (the wire parser sets it where OpenRouter's answer tells more)."""
    if isinstance(error, BreakerOpen) or error.kind == "queue_timeout":
        return Scope.LOCAL
    if isinstance(error, (ConnectionFailed, ProviderTimeout)):
        return Scope.ENDPOINT
    if isinstance(error, ErrorResponse) and error.status in CALLER_MISTAKE_STATUSES:
        return Scope.REQUEST
    return Scope.MODEL  # an answer that was an error or unusable: the model's provider, until shown wider


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt could succeed where this one failed."""
    if isinstance(error, (ConnectionFailed, ProviderTimeout, MalformedResponse)):
        return True
    if not isinstance(error, ErrorResponse):
        return False
    if error.status is None:  # an error object inside a 200 without a status: the upstream hiccupped
        return True
    if error.status == 402:  # payment required is final, unless OpenRouter says the budget frees up
        return error.code == IN_FLIGHT_BUDGET_EXHAUSTED or error.retry_after is not None
    return error.status in TRANSIENT_STATUSES or error.status >= 500


def is_backpressure(error: BaseException) -> bool:
    """The endpoint is up and asks us to slow down (429, or 402 in-flight budget): obeyed, not a failure.

    Such attempts do not use up ``num_retries`` (a rate-limited judge call should wait, not turn into a neutral
    reward); the deadline still bounds them.
    """
    return isinstance(error, ErrorResponse) and error.status in BACKPRESSURE_STATUSES and is_retryable(error)


def is_caller_mistake(error: BaseException) -> bool:
    """A failure only the caller can fix (bad request, bad key, unknown model)."""
    return isinstance(error, ErrorResponse) and error.status in CALLER_MISTAKE_STATUSES


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """What went wrong in one attempt, and how long the retry layer waited after it."""

    kind: str
    status: int | None = None
    message: str = ""
    wait_s: float | None = None
    route: str = "openrouter"
    backpressure: bool = False  # the endpoint asked us to slow down (429, in-flight budget)

    @classmethod
    def of(cls, error: BaseException, wait_s: float | None = None, route: str = "openrouter") -> FailedAttempt:
        if isinstance(error, ProviderError):
            return cls(error.kind, error.status, str(error.args[0]), wait_s, route, is_backpressure(error))
        return cls(type(error).__name__, None, redact(str(error)), wait_s, route)
