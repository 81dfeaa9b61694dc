"""Everything written to stderr while a block runs goes to a file; afterwards, one line saying what it held.

``resilient-llm bench`` runs LiteLLM under the trainer's calling pattern (an ``asyncio.run`` per rollout), where
LiteLLM's logging worker, bound to an event loop that is already closed, prints tracebacks from worker threads,
from asyncio's exception handler and from the garbage collector. They are part of the finding, but above the table
they read as the benchmark failing. The redirect is of file descriptor 2, not only ``sys.stderr``: that catches
every thread, C code, and the logging module's last-resort handler, whatever ``sys.stderr`` is bound to then.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import os
import re
import sys
from pathlib import Path
from types import TracebackType

TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
_HEADER_LINES = 2  # asyncio's "Task exception was never retrieved" / "future: <Task ...>" before a traceback


class StderrCapture:
    """``with StderrCapture(path):`` sends fd 2 into ``path`` (truncated) and puts it back on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: int | None = None

    def __enter__(self) -> StderrCapture:
        _flush_stderr()
        with self.path.open("wb") as sink:
            self._saved = os.dup(2)
            os.dup2(sink.fileno(), 2)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        gc.collect()  # tasks destroyed while pending say so now, into the file, not later over the table
        _flush_stderr()
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None

    def until_exit(self) -> None:
        """Append what the interpreter prints while it shuts down (atexit handlers, the last collection) too.

        Handlers run last-registered first, so this precedes those of every library imported before the call."""
        atexit.register(self._append_from_now_on)

    def _append_from_now_on(self) -> None:
        _flush_stderr()
        sink = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(sink, 2)
        os.close(sink)


def _flush_stderr() -> None:
    for stream in (sys.stderr, sys.__stderr__):
        if stream is not None:
            stream.flush()


@dataclasses.dataclass(frozen=True)
class Noise:
    """What a captured stderr held: tracebacks (chained ones count each), split by whose they are, and lines."""

    lines: int
    litellm_tracebacks: int
    other_tracebacks: int
    litellm_logging_worker: bool  # LiteLLM's own logging worker appears in its tracebacks


def classify(text: str) -> Noise:
    """Count the tracebacks in ``text``; a chain of them is LiteLLM's when a frame or its header names litellm."""
    lines = text.splitlines()
    reports: list[tuple[int, int, int]] = []  # (first line, end, tracebacks): a chain of them is one report
    for start, line in enumerate(lines):
        if not line.startswith(TRACEBACK):
            continue
        end = start + 1
        while end < len(lines) and lines[end][:1].isspace():  # frames and source lines, then the exception
            end += 1
        end = min(end + 1, len(lines))
        chained = any(previous.startswith(_CHAINED) for previous in lines[max(0, start - 3) : start])
        if chained and reports:
            first, _, count = reports[-1]
            reports[-1] = (first, end, count + 1)
        else:
            after_previous = reports[-1][1] if reports else 0
            reports.append((max(after_previous, start - _HEADER_LINES), end, 1))
    litellm = other = 0
    worker = False
    for first, end, count in reports:
        body = "\n".join(lines[first:end]).lower()
        if "litellm" in body:
            litellm += count
            worker = worker or "logging_worker" in body
        else:
            other += count
    return Noise(len(lines), litellm, other, worker)


def summary(path: Path) -> list[str]:
    """The lines to print after the results: nothing when stderr stayed empty."""
    text = path.read_text(errors="replace") if path.exists() else ""
    if not text.strip():
        return []
    noise = classify(text)
    out = []
    if noise.litellm_tracebacks:
        why = (
            "its logging worker is bound to a closed event loop"
            if noise.litellm_logging_worker
            else f"most often {_most_common_error(text)}"
        )
        out.append(f"LiteLLM printed {_count(noise.litellm_tracebacks, 'traceback')}: {why}; see {path}")
    if noise.other_tracebacks:
        out.append(f"stderr also held {_count(noise.other_tracebacks, 'traceback')} not from LiteLLM: see {path}")
    if not out:
        out.append(f"stderr during the run: {_count(noise.lines, 'line')}, no traceback; see {path}")
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _most_common_error(text: str) -> str:
    errors = re.findall(r"^((?:\w+\.)*\w+(?:Error|Exception)\b.*)$", text, flags=re.MULTILINE)
    return max(set(errors), key=errors.count)[:120] if errors else "no exception line"
