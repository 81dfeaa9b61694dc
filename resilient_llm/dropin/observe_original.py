"""The original (flag-off) path, observed: one ``llm_call`` line per call of the trainer's LiteLLM / OpenAI SDK code,
and nothing else changed.

When it writes: only when ``RESILIENT_LLM_LOG_FILE`` is set to ``stderr``, ``stdout`` or a file path. Unset, blank
or ``off`` writes nothing and measures nothing: the original path never logged, so the engine's default (stderr)
does not apply here. ``RESILIENT_LLM_LOG_FORMAT``, ``_LEVEL`` and ``_PROMPTS`` apply as on the direct path. All four
are read at every call, like ``USE_OPENROUTER_DIRECT``; a bad value writes nothing and is reported once through the
standard ``logging`` module, never raised.

The line: ``route`` is ``litellm_original`` (``run_litellm``, ``run_litellm_async``, ``run_chatopenai``) or
``azure_openai_original`` (``run_azure_openai``), ``caller`` the function. ``outcome`` is ``ok`` for a non-empty
answer; ``neutral`` for a response without content (the helper returns ``""``, ``run_chatopenai`` its ``"None"``)
and for the ``""`` ``run_litellm*`` return after LiteLLM's own retries failed (the swallowed exception in
``failures``); ``error`` for an exception into the caller (``error``: its type and message); ``cancelled`` for a
cancelled await. Tokens come from ``response.usage``, the cost from LiteLLM's
``_hidden_params["response_cost"]`` or the provider's ``usage.cost`` (``litellm.completion_cost`` is not called: it
costs CPU on the caller's path and the hidden cost is the same computation). ``attempts`` is null: LiteLLM does not
say how many requests its retries made. Key-like strings are masked in messages; prompts only with
``RESILIENT_LLM_LOG_PROMPTS``.

It never changes a result: the observed call's value and exception pass through untouched, every step of the
observation is guarded, and nothing is started (no engine, no thread, no retry).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from resilient_llm.config import ENVIRONMENT, PREFIX, read_section
from resilient_llm.logs import LogConfig, LogSink, log_call, make_logger
from resilient_llm.protocol import prompt_messages
from resilient_llm.types import next_call_id

__all__ = ["AZURE_ROUTE", "LITELLM_ROUTE", "Observation", "observe"]

LITELLM_ROUTE = "litellm_original"
AZURE_ROUTE = "azure_openai_original"
LOG_FILE = PREFIX + "LOG_FILE"
_LOG_VARIABLES = tuple(v.name for v in ENVIRONMENT if v.section == "log")
_SECRET_VARIABLES = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY")
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")
MESSAGE_LIMIT = 300

LOGGER = logging.getLogger("resilient_llm.dropin.observe_original")


class Observation:
    """One call on the original path; this base records nothing (logging not configured).

    ``with observe(...) as seen:`` around the original code; ``seen.answered(response, text)`` and
    ``seen.swallowed(exc, text)`` hand ``text`` back unchanged.
    """

    def __enter__(self) -> Observation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None  # never swallows the caller's exception

    def answered(self, response: Any, text: str) -> str:
        return text

    def swallowed(self, error: BaseException, text: str) -> str:
        return text


_OFF = Observation()


class _Recording(Observation):
    def __init__(self, log: Any, prompts: bool, caller: str, route: str, model: Any, chat: _Chat) -> None:
        self._log, self._prompts, self._chat = log, prompts, chat
        self._caller, self._route, self._model = caller, route, model
        self._response: Any = None
        self._text: str | None = None
        self._swallowed: BaseException | None = None
        self._started = time.perf_counter()

    def answered(self, response: Any, text: str) -> str:
        self._response, self._text = response, text
        return text

    def swallowed(self, error: BaseException, text: str) -> str:
        self._swallowed, self._text = error, text
        return text

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        latency_ms = round((time.perf_counter() - self._started) * 1000.0, 3)
        try:
            self._emit(latency_ms, exc)
        except Exception as failure:  # a failure to log never changes a result
            _report_once(("emit", type(failure).__name__), "could not write an llm_call line: %r", failure)

    def _emit(self, latency_ms: float, exc: BaseException | None) -> None:
        fields: dict[str, Any] = {"caller": self._caller}
        if self._prompts:
            fields["messages"] = self._chat.messages()
        failures = [] if self._swallowed is None else [_failure(self._swallowed, self._route)]
        if exc is not None:
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            failures.append(_failure(exc, self._route))
            fields["error"] = f"{type(exc).__name__}: {_message(exc)}"
        elif self._text and _content(self._response):
            outcome = "ok"
        else:
            outcome = "neutral"
            if self._swallowed is None:
                failures.append(_failure(None, self._route))
        response, usage = self._response, getattr(self._response, "usage", None)
        log_call(
            self._log,
            outcome,
            latency_ms,
            call_id=next_call_id(),
            model=str(self._model),
            **fields,
            route=self._route,
            answered_by=_text_or_none(getattr(response, "model", None)),
            attempts=None,
            failures=failures,
            prompt_tokens=_count(getattr(usage, "prompt_tokens", None)),
            completion_tokens=_count(getattr(usage, "completion_tokens", None)),
            cost=_cost(response, usage),
            response_id=_text_or_none(getattr(response, "id", None)),
        )


class _Chat:
    """The call's messages, built only when prompts are logged."""

    def __init__(self, messages: Sequence[Mapping[str, Any]] | None, system: Any, user: Any) -> None:
        self._messages, self._system, self._user = messages, system, user

    def messages(self) -> list[dict[str, Any]]:
        chat = self._messages if self._messages is not None else prompt_messages(self._system, self._user)
        return [dict(m) for m in chat]


def observe(
    caller: str,
    route: str,
    model: Any,
    *,
    messages: Sequence[Mapping[str, Any]] | None = None,
    system: Any = None,
    user: Any = None,
) -> Observation:
    """The observation of one original-path call: recording when logging is configured, else a no-op."""
    if os.environ.get(LOG_FILE, "").strip() in ("", "off"):
        return _OFF  # the default: nothing read, nothing timed, nothing written
    try:
        target = _target()
        if target is None:
            return _OFF
        log, prompts = target
        return _Recording(log, prompts, caller, route, model, _Chat(messages, system, user))
    except Exception as failure:
        _report_once(("observe", type(failure).__name__), "not logging the original path: %r", failure)
        return _OFF


_lock = threading.Lock()
_current: tuple[tuple[str | None, ...], tuple[Any, bool] | None, LogSink | None] | None = None
_reported: set[tuple[str, ...]] = set()


def _target() -> tuple[Any, bool] | None:
    """The logger for the current log variables (rebuilt when they change), and whether prompts go in the lines."""
    global _current
    key = tuple(os.environ.get(name) for name in _LOG_VARIABLES)
    current = _current
    if current is not None and current[0] == key:
        return current[1]
    with _lock:
        if _current is not None and _current[0] == key:
            return _current[1]
        target: tuple[Any, bool] | None = None
        sink = None
        try:
            config: LogConfig = read_section(os.environ, "log", LogConfig, ENVIRONMENT)
            sink = LogSink(config.file)
            target = (make_logger(config, sink), config.prompts)
        except Exception as failure:  # a bad value or an unwritable file: no lines, one report
            _report_once(("config", *map(str, key)), "not logging the original path: %s", failure)
        if _current is not None and _current[2] is not None:
            # The variables changed mid-run: a line still being written to the old file by another thread fails
            # (and is reported once) rather than keeping every old file open.
            _current[2].close()
        _current = (key, target, sink)
        return target


def _forget_after_fork() -> None:
    global _lock, _current
    _lock, _current = threading.Lock(), None  # the child opens its own handle; the parent's stays the parent's


os.register_at_fork(after_in_child=_forget_after_fork)


def _report_once(key: tuple[str, ...], message: str, *args: object) -> None:
    try:
        if key not in _reported:
            _reported.add(key)
            LOGGER.warning(message, *args)
    except Exception:
        pass


def _content(response: Any) -> bool:
    try:
        content = response.choices[0].message.content
    except Exception:
        return False
    return isinstance(content, str) and bool(content)


def _failure(error: BaseException | None, route: str) -> dict[str, Any]:
    """A failed call in the shape of the engine's ``failures`` entries; ``None``: an answer without content."""
    status = getattr(error, "status_code", None)
    return {
        "kind": "empty_content" if error is None else type(error).__name__,
        "status": status if isinstance(status, int) else None,
        "message": "the response has no content" if error is None else _message(error),
        "wait_s": None,
        "route": route,
        "backpressure": status == 429,
    }


def _message(error: BaseException) -> str:
    """The exception's message, shortened, with the keys of the environment and key-like strings masked."""
    text = str(error)
    for name in _SECRET_VARIABLES:
        secret = os.environ.get(name, "")
        if len(secret) >= 8:
            text = text.replace(secret, "<redacted>")
    text = _KEY_LIKE.sub("sk-<redacted>", text)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _cost(response: Any, usage: Any) -> float | None:
    hidden = getattr(response, "_hidden_params", None)
    cost = _number(hidden.get("response_cost")) if isinstance(hidden, dict) else None
    return cost if cost is not None else _number(getattr(usage, "cost", None))
