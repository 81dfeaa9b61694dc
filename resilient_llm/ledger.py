"""What one call did on its way down the stack, for its log line: a small record in a context variable.

Each call runs in its own task on the engine loop, so a ContextVar set by the outermost layer is the call's own;
tasks the call spawns (a hedge) copy the context and share the record.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass
class CallLedger:
    waited_s: float = 0.0  # time spent waiting for an open breaker (an outage), holding no slot
    trial: bool = False  # the attempt now running is the breaker's half-open trial
    limit: int | None = None  # the concurrency limit when its last attempt was sent


_current: contextvars.ContextVar[CallLedger | None] = contextvars.ContextVar("resilient_llm_call", default=None)


def open_ledger() -> CallLedger:
    """A fresh record for the call running in this context."""
    ledger = CallLedger()
    _current.set(ledger)
    return ledger


def current_ledger() -> CallLedger:
    """The record of the call running in this context (a throwaway one outside any call)."""
    return _current.get() or CallLedger()
