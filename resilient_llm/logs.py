"""structlog set-up of our own logger (the user's global structlog configuration is left alone).

Every line is one JSON object with at least ``event``, ``level`` and ``timestamp``. Call lines (``event="llm_call"``)
carry ``call_id, model, outcome, latency_ms, attempts, failures, route, answered_by, prompt_tokens,
completion_tokens, cost, response_id``; the start-up line (``event="engine_started"``) the effective configuration.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import structlog

from resilient_llm.errors import ConfigError
from resilient_llm.redact import log_processor
from resilient_llm.runtime import log_line
from resilient_llm.validation import BOOL, TEXT, Validated, choice, setting

CALL_EVENT = "llm_call"
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogConfig(Validated):
    """Where the JSON lines go (stderr, stdout, off, or a file path), in which format, from which level."""

    file: str = setting("stderr", TEXT)
    format: str = setting("json", choice(("json", "console"), joiner=" or "))
    level: str = setting("info", choice(LOG_LEVELS))
    prompts: bool = setting(False, BOOL)  # include the messages in llm_call lines


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
            try:  # a missing folder is made (the launcher's ./logs/ default relies on it)
                os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
                self._owned = self.file = open(destination, "a", buffering=1, encoding="utf-8")  # noqa: SIM115  (lives as long as the engine)
            except OSError as exc:
                raise ConfigError(
                    f"RESILIENT_LLM_LOG_FILE={destination!r} cannot be opened for appending: {exc.strerror or exc}; "
                    "expected stderr, stdout, off or the path of a file",
                    field="file",
                ) from None

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None


def make_logger(config: LogConfig, sink: LogSink) -> Any:
    """A bound logger that renders to ``sink`` in the configured format and level."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=log_line, sort_keys=False)
        if config.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    target: Any = structlog.WriteLogger(sink.file) if sink.file is not None else structlog.ReturnLogger()
    return structlog.wrap_logger(
        target,
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
            log_processor,  # last: the finished line, whatever put a secret into it
        ],
        wrapper_class=structlog.make_filtering_bound_logger(config.level if sink.file else "critical"),
        logger_name="resilient_llm",
    )
