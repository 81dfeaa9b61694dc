"""The exception tree. Foreign exceptions (httpx, JSON, settings) are converted where they arise, chained with ``from``.

::

    ResilientLLMError
     ├── ConfigError              a setting or argument is wrong; no retry can fix it
     ├── ProviderError            one attempt failed; ``kind`` (a ``FailureKind``) names how, ``status`` the HTTP
     │    │                       status if any, ``scope`` how far it reaches, ``retry_after`` any wait asked for
     │    ├── ConnectionFailed    refused, reset, dropped, HTTP protocol error
     │    ├── ProviderTimeout     connect, read, write, pool or total timeout
     │    ├── ErrorResponse       HTTP status >= 400, or an error object inside a 200 (top level or in
     │    │                       ``choices[0]``): rate limits, spent quotas, no provider, moderation, ...
     │    ├── MalformedResponse   bad or truncated JSON, no choices, empty content, ``finish_reason: "error"``,
     │    │                       or no content because ``max_tokens`` ran out (``truncated``)
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


class FailureKind(enum.StrEnum):
    """Every ``ProviderError.kind`` this library produces (a ``str``: logs and comparisons with plain text still work).

    ``http_<status>`` kinds exist for the statuses seen in practice; ``FailureKind.http(status)`` names any other one.
    """

    # the provider answered with an error status (or that status inside a 200's error object)
    HTTP_400 = "http_400"
    HTTP_401 = "http_401"
    HTTP_402 = "http_402"
    HTTP_403 = "http_403"
    HTTP_404 = "http_404"
    HTTP_408 = "http_408"
    HTTP_409 = "http_409"
    HTTP_413 = "http_413"
    HTTP_422 = "http_422"
    HTTP_425 = "http_425"
    HTTP_429 = "http_429"
    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    HTTP_504 = "http_504"
    HTTP_520 = "http_520"
    HTTP_522 = "http_522"
    HTTP_524 = "http_524"
    HTTP_529 = "http_529"
    ERROR_IN_BODY = "error_in_body"  # a 200 carrying an error object (top level or ``choices[0].error``)
    # OpenRouter's failures that say what went wrong (request scope unless noted)
    TRUNCATED = "truncated"  # 200, finish_reason "length", no content: max_tokens spent (on reasoning, usually)
    NO_PROVIDER = "no_provider"  # no provider serves this model with the request's parameters / routing
    CONTEXT_LENGTH = "context_length"  # the prompt (plus max_tokens) is over the model's context
    MODERATION = "moderation"  # 403: the input was flagged by the model's moderation
    QUOTA_EXHAUSTED = "quota_exhausted"  # model scope: 429 with X-RateLimit-Remaining 0 until X-RateLimit-Reset
    # a 200 that is not a usable completion
    BAD_JSON = "bad_json"
    NO_CHOICES = "no_choices"
    EMPTY_CONTENT = "empty_content"
    FINISH_ERROR = "finish_error"
    BAD_ENCODING = "bad_encoding"
    TOO_LARGE = "too_large"
    BAD_CACHE_ENTRY = "bad_cache_entry"
    # the connection (endpoint scope)
    CONNECT_ERROR = "connect_error"
    CONNECTION_RESET = "connection_reset"
    PROTOCOL_ERROR = "protocol_error"
    PROXY_ERROR = "proxy_error"
    CONNECT_TIMEOUT = "connect_timeout"
    READ_TIMEOUT = "read_timeout"
    WRITE_TIMEOUT = "write_timeout"
    TIMEOUT = "timeout"
    TOTAL_TIMEOUT = "total_timeout"
    LITELLM_TIMEOUT = "litellm_timeout"
    LITELLM_ERROR = "litellm_error"
    # never sent (local scope)
    POOL_TIMEOUT = "pool_timeout"  # no connection free in our own pool
    QUEUE_TIMEOUT = "queue_timeout"  # no concurrency slot free in time
    BREAKER_OPEN = "breaker_open"

    @classmethod
    def http(cls, status: int) -> str:
        """The kind of an HTTP error status: the member when there is one, else the same ``http_<status>`` text."""
        name = f"http_{status}"
        return cls(name) if name in cls._value2member_map_ else name


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
        provider: str | None = None,
    ) -> None:
        super().__init__(redact(message))  # a body may echo the key it was sent
        self.kind = kind
        self.status = status
        self.code = code
        self.retry_after = retry_after  # seconds the provider asked us to wait (any hint it sent), when it did
        self.provider = provider  # the upstream provider OpenRouter blames (``error.metadata.provider_name``)
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
# What the same request meets again, whatever the endpoint's health (the wire parser names them from OpenRouter's
# answer): retrying it cannot help, and it says nothing about the model or the endpoint.
REQUEST_KINDS = frozenset(
    {FailureKind.TRUNCATED, FailureKind.NO_PROVIDER, FailureKind.CONTEXT_LENGTH, FailureKind.MODERATION}
)
LOCAL_KINDS = frozenset({FailureKind.QUEUE_TIMEOUT, FailureKind.POOL_TIMEOUT, FailureKind.BREAKER_OPEN})


def default_scope(error: ProviderError) -> Scope:
    """The scope of a failure that did not say (the wire parser sets it where OpenRouter's answer tells more)."""
    if isinstance(error, BreakerOpen) or error.kind in LOCAL_KINDS:
        return Scope.LOCAL
    if error.kind in REQUEST_KINDS:
        return Scope.REQUEST
    if isinstance(error, (ConnectionFailed, ProviderTimeout)):
        return Scope.ENDPOINT
    if isinstance(error, ErrorResponse) and error.status in CALLER_MISTAKE_STATUSES:
        return Scope.REQUEST
    if isinstance(error, ErrorResponse) and error.status == 402 and not _budget_frees_up(error):
        return Scope.REQUEST  # out of credits: this key's every request, until someone pays
    return Scope.MODEL  # an answer that was an error or unusable: the model's provider, until shown wider


def _budget_frees_up(error: ProviderError) -> bool:
    return error.code == IN_FLIGHT_BUDGET_EXHAUSTED or error.retry_after is not None


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt could succeed where this one failed.

    Request-scope failures are never retried: the same request meets the same answer. A reasoning model truncated
    by ``max_tokens`` spends the same budget on reasoning again; "no provider" depends on the request's parameters
    and routing, not on time; a context overflow on its length; a caller mistake on the caller. Moderation is judged
    on the text: the same provider flags it again, so it is not retried either; another provider may judge it
    differently, and that is what the fallback chain (not a retry) tries. The one place where a single retry can
    change a request's answer is kept model-scoped and retryable on purpose: an answer with no content that was
    *not* cut by ``max_tokens`` (``empty_content``, ``finish_reason`` "stop") is a provider's hiccup, not the
    request's fault, so the next attempt usually answers.

    A spent quota (``quota_exhausted``) is retryable: after ``retry_after`` (its reset) the same request succeeds;
    the retry layer's ``retry_after_max`` turns a far reset into "give up now" rather than a wait.
    """
    if not isinstance(error, ProviderError) or error.scope is Scope.REQUEST:
        return False
    if isinstance(error, (ConnectionFailed, ProviderTimeout, MalformedResponse)):
        return True
    if not isinstance(error, ErrorResponse):
        return False
    if error.status is None:  # an error object inside a 200 without a status: the upstream hiccupped
        return True
    if error.status == 402:  # payment required is final, unless OpenRouter says the budget frees up
        return _budget_frees_up(error)
    return error.status in TRANSIENT_STATUSES or error.status >= 500


def is_backpressure(error: BaseException) -> bool:
    """The endpoint is up and asks us to slow down (429, or 402 in-flight budget): obeyed, not a failure.

    Such attempts do not use up ``num_retries`` (a rate-limited judge call should wait, not turn into a neutral
    reward); the deadline still bounds them. A spent quota (``quota_exhausted``) is not backpressure: sending less
    at once does not bring it back, only its reset does.
    """
    return (
        isinstance(error, ErrorResponse)
        and error.status in BACKPRESSURE_STATUSES
        and error.kind != FailureKind.QUOTA_EXHAUSTED
        and is_retryable(error)
    )


def is_caller_mistake(error: BaseException) -> bool:
    """A failure only the caller can fix: a request-scope failure (bad request, bad key, unknown model, a reasoning
    model truncated by ``max_tokens``, no provider for the request's parameters, a context overflow, flagged input),
    except running out of credits (another route, with its own key, may still answer).

    Moderation counts here (the endpoint answered; the text was the problem), but the fallback layer gives it its own
    outcome before it asks this question.
    """
    if not isinstance(error, ProviderError) or error.scope is not Scope.REQUEST:
        return False
    return not (isinstance(error, ErrorResponse) and error.status == 402)


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """What went wrong in one attempt, and how long the retry layer waited after it."""

    kind: str
    status: int | None = None
    message: str = ""
    wait_s: float | None = None
    route: str = "openrouter"
    backpressure: bool = False  # the endpoint asked us to slow down (429, in-flight budget)
    scope: str | None = None  # how far the failure reaches (``Scope``): request, model, endpoint or local

    @classmethod
    def of(cls, error: BaseException, wait_s: float | None = None, route: str = "openrouter") -> FailedAttempt:
        if isinstance(error, ProviderError):
            backpressure = is_backpressure(error)
            return cls(error.kind, error.status, str(error.args[0]), wait_s, route, backpressure, str(error.scope))
        return cls(type(error).__name__, None, redact(str(error)), wait_s, route)
