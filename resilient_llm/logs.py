"""structlog set-up of our own logger (the user's global structlog configuration is left alone).

Every line is one JSON object with at least ``event``, ``level`` and ``timestamp``. Call lines (``event="llm_call"``)
carry ``call_id, model, outcome, latency_ms, attempts, failures, route, answered_by, prompt_tokens,
completion_tokens, cost, response_id``; the start-up line (``event="engine_started"``) the effective configuration.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

import structlog

from resilient_llm.settings import Settings


class LogSink:
    """Where the lines go: stderr, stdout, a file (appended, one write per line), or nowhere."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._owned: TextIO | None = None
        if destination == "stderr":
            self.file: TextIO | None = sys.stderr
        elif destination == "stdout":
            self.file = sys.stdout
        elif destination == "off":
            self.file = None
        else:
            parent = os.path.dirname(os.path.abspath(destination))
            os.makedirs(parent, exist_ok=True)
            self._owned = self.file = open(destination, "a", buffering=1, encoding="utf-8")  # noqa: SIM115  (lives as long as the engine)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None


def make_logger(settings: Settings, sink: LogSink) -> Any:
    """A bound logger that renders to ``sink`` in the configured format and level."""
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    target: Any = structlog.WriteLogger(sink.file) if sink.file is not None else structlog.ReturnLogger()
    return structlog.wrap_logger(
        target,
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(settings.log_level if sink.file else "critical"),
        logger_name="resilient_llm",
    )
