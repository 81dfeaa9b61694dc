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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resilient_llm.types import FailedAttempt


class ResilientLLMError(Exception):
    """Root of every exception this library raises."""


class ConfigError(ResilientLLMError, ValueError):
    """A setting or argument is invalid; the message names it, the value and what is accepted."""


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
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.code = code
        self.retry_after = retry_after

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
        super().__init__(message)
        self.failures = tuple(failures)
        self.last = last
