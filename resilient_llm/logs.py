"""structlog set-up of our own logger (the user's global structlog configuration is left alone).

Every line is one JSON object with at least ``event``, ``level`` and ``timestamp``. Call lines (``event="llm_call"``)
carry ``call_id, model, outcome, latency_ms, attempts, failures, route, answered_by, provider, prompt_tokens,
completion_tokens, cost, response_id`` (``provider``: the upstream provider OpenRouter says answered, else null);
the start-up line (``event="engine_started"``) the effective configuration.
"""

from __future__ import annotations

import atexit
import collections
import datetime
import json
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, TextIO

import structlog

from resilient_llm.errors import ConfigError
from resilient_llm.redact import log_processor
from resilient_llm.runtime import log_line
from resilient_llm.validation import BOOL, TEXT, Validated, choice, setting

CALL_EVENT = "llm_call"
ANSWERED = ("ok", "cached")  # outcomes logged at info; every other outcome is a warning
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogConfig(Validated):
    """Where the JSON lines go (stderr, stdout, off, or a file path), in which format, from which level."""

    file: str = setting("stderr", TEXT)
    format: str = setting("json", choice(("json", "console"), joiner=" or "))
    level: str = setting("info", choice(LOG_LEVELS))
    prompts: bool = setting(False, BOOL)  # include the messages in llm_call lines


DROPPED_EVENT = "log_lines_dropped"


class LogSink:
    """Where the lines go: stderr, stdout, a file (appended), or nowhere.

    A writer thread takes the lines from a bounded buffer, so a slow, stalled or failing destination (an undrained
    pipe, a full disk, a closed descriptor) never blocks the engine loop nor changes a call's result: a line that
    cannot be buffered or written is dropped and counted, and the count is reported in one ``log_lines_dropped``
    line once the destination takes lines again. No lock is held across a write (lines go to the file descriptor
    with ``os.write``), so a fork in the middle of a write leaves the child nothing to wait for.
    """

    MAX_QUEUED = 10_000  # lines waiting for the writer; beyond this they are dropped
    BATCH_S = 0.01  # the writer gathers lines this long before writing them: few wake-ups and writes under load

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.enabled = destination != "off"
        self._fd: int | None = None
        self._owned_fd: int | None = None
        self._stream: TextIO | None = None  # a stream without a descriptor (e.g. a notebook's), written as text
        if destination in ("stderr", "stdout"):
            stream = sys.stderr if destination == "stderr" else sys.stdout
            try:
                self._fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                self._stream = stream
        elif self.enabled:
            try:  # a missing folder is made (the launcher's ./logs/ default relies on it)
                os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
                self._fd = self._owned_fd = os.open(destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(
                    f"RESILIENT_LLM_LOG_FILE={destination!r} cannot be opened for appending: {exc.strerror or exc}; "
                    "expected stderr, stdout, off or the path of a file",
                    field="file",
                ) from None
        self._refused = 0  # lines the full buffer refused (counted by callers)
        self._failed = 0  # lines the destination refused (counted by the writer)
        self._reported = 0
        self._reset()
        _SINKS.add(self)

    def _reset(self) -> None:
        """Fresh buffer, lock and (lazily started) writer: at creation, and in a forked child."""
        self._ready = threading.Condition()
        self._lines: collections.deque[str] = collections.deque()
        self._busy = False
        self._idle = False  # the writer waits for a first line (only then does a new line wake it)
        self._flushing = 0
        self._closing = False
        self._writer: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        """Lines lost so far, because the buffer was full or the destination failed."""
        return self._refused + self._failed

    def write(self, line: str) -> None:
        """Queue one line (ending in a newline); never blocks on the destination, never raises."""
        if not self.enabled:
            return
        with self._ready:
            if self._closing or len(self._lines) >= self.MAX_QUEUED:
                self._refused += 1
                return
            self._lines.append(line)
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="resilient-llm-log-writer", daemon=True)
                self._writer.start()
            if self._idle:
                self._ready.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued line is written (or dropped); False if that took longer than ``timeout``."""
        with self._ready:
            self._flushing += 1
            self._ready.notify_all()
            try:
                return self._ready.wait_for(lambda: not self._lines and not self._busy, timeout)
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most ``timeout``), then stop the writer; later lines are dropped."""
        self.flush(timeout)
        with self._ready:
            self._closing = True
            self._ready.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join(0.1)
        if self._owned_fd is not None and (writer is None or not writer.is_alive()):
            os.close(self._owned_fd)
            self._owned_fd = self._fd = None

    def _run(self) -> None:
        while True:
            with self._ready:
                self._idle = True
                self._ready.wait_for(lambda: self._lines or self._closing)
                self._idle = False
                self._ready.wait_for(lambda: self._closing or self._flushing > 0, self.BATCH_S)
                if not self._lines:
                    return
                batch = list(self._lines)
                self._lines.clear()
                self._busy = True
            if not self._put("".join(batch)):
                self._failed += len(batch)
            elif self.dropped > self._reported:
                self._report()
            with self._ready:
                self._busy = False
                self._ready.notify_all()

    def _put(self, text: str) -> bool:
        try:
            if self._fd is not None:
                data = memoryview(text.encode("utf-8", "replace"))
                while data:
                    data = data[os.write(self._fd, data) :]
            elif self._stream is not None:
                self._stream.write(text)
                self._stream.flush()
            return True
        except (OSError, ValueError):  # a full disk, a closed pipe or descriptor
            return False

    def _report(self) -> None:
        total = self.dropped
        line = {
            "event": DROPPED_EVENT,
            "level": "warning",
            "timestamp": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            "dropped": total - self._reported,
            "dropped_total": total,
            "logger_name": "resilient_llm",
        }
        if self._put(json.dumps(line) + "\n"):
            self._reported = total


class _SinkLogger:
    """The structlog logger that hands rendered lines to a LogSink."""

    def __init__(self, sink: LogSink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.write(message + "\n")

    log = debug = info = warn = warning = error = err = critical = exception = fatal = failure = msg


_SINKS: weakref.WeakSet[LogSink] = weakref.WeakSet()


def flush(timeout: float = 5.0) -> bool:
    """Wait until every sink of this process has written its queued lines (at most ``timeout`` in all)."""
    deadline = time.monotonic() + timeout
    return all([sink.flush(max(0.0, deadline - time.monotonic())) for sink in list(_SINKS)])


def _reset_in_child() -> None:
    # The parent's writer threads did not survive the fork, and their locks may be held: start afresh.
    for sink in list(_SINKS):
        sink._reset()


os.register_at_fork(after_in_child=_reset_in_child)
atexit.register(flush, 2.0)  # the writer threads are daemons: what they hold is written before the process ends


def make_logger(config: LogConfig, sink: LogSink) -> Any:
    """A bound logger that renders to ``sink`` in the configured format and level."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=log_line, sort_keys=False)
        if config.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    target: Any = _SinkLogger(sink) if sink.enabled else structlog.ReturnLogger()
    return structlog.wrap_logger(
        target,
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
            log_processor,  # last: the finished line, whatever put a secret into it
        ],
        wrapper_class=structlog.make_filtering_bound_logger(config.level if sink.enabled else "critical"),
        logger_name="resilient_llm",
    )


def log_call(logger: Any, outcome: str, latency_ms: float, *, call_id: int, model: str, **fields: Any) -> None:
    """Write one ``llm_call`` line: the one place its shape and level are decided, for the engine's calls, the
    drop-in's rejected calls and the original (flag-off) path alike."""
    level = "info" if outcome in ANSWERED else "warning"
    fields.setdefault("provider", None)  # in every line, so a reader can tell "none answered" from an old log
    getattr(logger, level)(CALL_EVENT, outcome=outcome, latency_ms=latency_ms, call_id=call_id, model=model, **fields)
