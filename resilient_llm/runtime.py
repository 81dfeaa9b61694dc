"""The engine's optional fast parts (the ``fast`` extra), each with a clean fallback to the standard library.

- uvloop runs the engine's own loop thread (never the caller's loop): ``RESILIENT_LLM_LOOP=auto`` (the default) uses
  it when installed, ``asyncio`` never, ``uvloop`` insists (a ConfigError without it).
- orjson writes request bodies and log lines and reads responses and cache entries when installed. Whatever it
  refuses (writing an integer beyond 64 bits, reading a NaN literal or a lone surrogate) goes to the standard library,
  so a call does not depend on which one is installed (one difference: orjson reads an integer beyond 64 bits as a
  float); cache keys always use the standard library, so they never change with it.

``describe`` is what ``engine_started`` logs: which loop, JSON library and HTTP transport the engine runs on.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from resilient_llm.errors import ConfigError
from resilient_llm.validation import Validated, choice, setting

orjson: ModuleType | None
uvloop: ModuleType | None
try:
    import orjson
except ImportError:  # pragma: no cover - depends on the installed extras
    orjson = None
try:
    import uvloop
except ImportError:  # pragma: no cover - depends on the installed extras
    uvloop = None

JSON = "orjson" if orjson is not None else "json"
LOOPS = ("auto", "asyncio", "uvloop")


@dataclass(frozen=True)
class RuntimeConfig(Validated):
    """Which event loop the engine's own thread runs: uvloop when installed (``auto``), ``asyncio``, or ``uvloop``."""

    loop: str = setting("auto", choice(LOOPS))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loop == "uvloop" and uvloop is None:
            raise ConfigError(
                "loop='uvloop' but uvloop is not installed (it comes with resilient-llm on CPython, not on Windows): "
                "pip install uvloop, or use auto or asyncio",
                field="loop",
            )


def new_loop(config: RuntimeConfig) -> tuple[asyncio.AbstractEventLoop, str]:
    """A fresh loop for the engine's thread, and the name of its kind (for ``engine_started``)."""
    if config.loop != "asyncio" and uvloop is not None:
        try:
            return uvloop.new_event_loop(), "uvloop"
        except Exception:
            if config.loop == "uvloop":
                raise
    return asyncio.new_event_loop(), "asyncio"


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` gives it.

    Callers check first that the value is JSON (``protocol.check_sendable``): orjson would write NaN as null.
    """
    if orjson is not None:
        try:
            return bytes(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
        except TypeError:  # orjson.JSONEncodeError included: e.g. an integer beyond 64 bits
            pass
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def loads(data: bytes | str) -> Any:
    """The value of a JSON document; ValueError (or UnicodeDecodeError) as ``json.loads`` raises them."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except ValueError:  # orjson.JSONDecodeError: let the standard library read it, or say why not
            pass
    return json.loads(data)


def log_line(value: Any, **options: Any) -> str:
    """structlog's JSON serializer: orjson when installed (``options["default"]`` for unknown types), else json.

    Both write the same compact UTF-8 line (``{"event":"llm_call",...}``), so a line does not change with the extra.
    """
    if orjson is not None:
        try:
            return str(orjson.dumps(value, default=options.get("default"), option=orjson.OPT_NON_STR_KEYS).decode())
        except TypeError:
            pass
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, **options)


def describe(loop: str, transport: str) -> dict[str, str]:
    """The parts the engine runs on, as ``engine_started`` logs them."""
    return {"loop": loop, "json": JSON, "transport": transport}
