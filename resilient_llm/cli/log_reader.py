"""Reading a log that any process may have left: every line a JSON object or None, every figure usable or None.

A crashed process leaves a truncated last line, a foreign one binary or a stack trace, a buggy one NaN, 1e308 or text
where a number belongs, a clock gone wrong a timestamp of year 1. These functions never raise on such input: the
callers count what they return as unusable.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

# Beyond these a figure is not a measurement (one call, one line): it is left out and counted as unusable.
MAX_TOKENS = 1e12
MAX_COST = 1e6
MAX_LATENCY_MS = 1e10
MAX_ATTEMPTS = 100_000
MAX_NAME = 200  # characters of a model, route, provider or outcome name kept


def figure(value: Any, limit: float) -> float | None:
    """A usable figure of a log line: a finite number from 0 to ``limit``, else None (bool is not a number)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)  # a 400-digit integer does not fit a float
    except OverflowError:
        return None
    return number if math.isfinite(number) and 0 <= number <= limit else None


def clean(text: str) -> str:
    """Text from a log fit for a terminal: cut to MAX_NAME, control characters shown as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_NAME])


def name_of(value: Any, missing: str = "?") -> str:
    """A model, route or provider name for grouping: text as it is (cleaned), anything else ``missing``."""
    return clean(value) if isinstance(value, str) and value else missing


def outcome_of(line: dict[str, Any]) -> str | None:
    """The line's outcome (cleaned), or None when it has no usable one."""
    outcome = line.get("outcome")
    return clean(outcome) if isinstance(outcome, str) and outcome else None


def finite_or_none(value: Any) -> Any:
    """A value of a log line fit for a report: finite numbers, true/false and text (cut) as they are, else None."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, (int, float)):
        try:
            return value if math.isfinite(float(value)) else None
        except OverflowError:  # an integer too large for a float: not a count anyone logged
            return None
    return None


def read_lines(paths: Iterable[str]) -> Iterator[dict[str, Any] | None]:
    """Each line as a dict, or None for a line that is not a JSON object (OSError when a file cannot be read)."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except (ValueError, RecursionError):  # not JSON, too many digits, or nested without end
                    yield None
                    continue
                yield line if isinstance(line, dict) else None


def timestamp(line: dict[str, Any]) -> float | None:
    """Seconds since the epoch of the line's ISO timestamp (UTC when it has no zone), None when unusable."""
    raw = line.get("timestamp")
    if not isinstance(raw, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        when.astimezone(datetime.UTC)  # OverflowError when the UTC time falls outside years 1 to 9999
        return when.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def window_start(index: int, window_s: float) -> str:
    """The ISO start of window ``index``, or ``?`` when it falls outside the calendar (years 1 to 9999)."""
    try:
        return datetime.datetime.fromtimestamp(index * window_s, datetime.UTC).isoformat()
    except (ValueError, OverflowError, OSError):
        return "?"


def judge_fields(line: dict[str, Any]) -> dict[str, Any]:
    """The judge counters of a ``judge_score`` line, each a finite number or None."""
    return {k: finite_or_none(line.get(k)) for k in ("judge_calls", "judge_real", "judge_neutral", "neutral_share")}
