"""Self-validating configuration values: each field names its accepted values once, and checks itself.

A config class (``RetryConfig``, ``HTTPConfig``, ...) is a frozen dataclass deriving from ``Validated`` whose fields are
declared with ``setting(default, check)``. Constructing one with a bad value raises ``ConfigError`` naming the field;
the environment table (``resilient_llm.config``) converts strings with the same check and names the variable instead.
"""

from __future__ import annotations

import dataclasses
import math
import re
import urllib.parse
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from resilient_llm.errors import ConfigError

T = TypeVar("T")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Secret:
    """A string that never shows itself in a repr, str or log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Check(Generic[T]):
    """What a field accepts: ``accepted`` in words, ``parse`` from an environment string, ``valid`` for a value."""

    accepted: str
    parse: Callable[[str], T]
    valid: Callable[[T], bool] = lambda _: True

    def from_text(self, raw: str) -> T:
        """The value of an environment string; ValueError when it is not acceptable."""
        value = self.parse(raw.strip())
        if not self.valid(value):
            raise ValueError(raw)
        return value


def setting(default: Any, check: Check[Any], *, optional: bool = False) -> Any:
    """A config field with its default and its check (``optional``: None is accepted too)."""
    metadata = {"check": check, "optional": optional}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or frozenset default")
    return dataclasses.field(default=default, metadata=metadata)


class Validated:
    """Mixin for frozen config dataclasses: every field declared with ``setting`` is checked on construction."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            check: Check[Any] | None = field.metadata.get("check")
            value = getattr(self, field.name)
            if check is None or (value is None and field.metadata.get("optional")):
                continue
            try:
                ok = value is not None and bool(check.valid(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(
                    f"{type(self).__name__}.{field.name}={_shown(value)} is not valid: expected {check.accepted}",
                    field=field.name,
                )


def _shown(value: object) -> str:
    text = redact_url(value) if isinstance(value, str) and "://" in value else value
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def redact_url(url: str) -> str:
    """The URL without any user:password part."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not parseable (e.g. an unclosed IPv6 bracket): drop any userinfo by its shape
        return re.sub(r"//[^/@]*@", "//", url)
    netloc = f"[{host}]" if ":" in host else host
    netloc = f"{netloc}:{port}" if port else netloc
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _url_ok(value: str, schemes: Collection[str]) -> bool:
    try:
        parts = urllib.parse.urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536  # .port raises ValueError when out of range
    except ValueError:
        return False
    if parts.scheme == "unix":
        return "unix" in schemes and bool(parts.path)
    return parts.scheme in schemes and bool(parts.hostname) and port_ok


SECONDS: Check[float] = Check("a number of seconds > 0", float, lambda v: _finite(v) and v > 0)
SECONDS_OR_ZERO: Check[float] = Check("a number of seconds >= 0", float, lambda v: _finite(v) and v >= 0)
FRACTION: Check[float] = Check("a number from 0 to 1", float, lambda v: _finite(v) and 0 <= v <= 1)
BOOL: Check[bool] = Check("true or false", _parse_bool, lambda v: isinstance(v, bool))
TEXT: Check[str] = Check("text", str, lambda v: isinstance(v, str))
HTTP_URL: Check[str] = Check("an http(s) URL", lambda raw: raw.rstrip("/"), lambda v: _url_ok(v, ("http", "https")))
REDIS_URL: Check[str] = Check(
    "a redis://, rediss:// or unix:// URL", str, lambda v: _url_ok(v, ("redis", "rediss", "unix"))
)


def int_in(low: int, high: int) -> Check[int]:
    return Check(f"an integer {low}..{high}", int, lambda v: _is_int(v) and low <= v <= high)


def choice(options: tuple[str, ...], *, joiner: str = ", ") -> Check[str]:
    return Check(joiner.join(options), str.lower, lambda v: v in options)


def header_text(what: str) -> Check[str]:
    """Text sent in an HTTP header: printable ASCII only, so it cannot fail every request later."""
    return Check(f"{what} in printable ASCII", str, lambda v: isinstance(v, str) and v.isascii() and v.isprintable())


def check_option(name: str, value: Any, check: Check[Any]) -> Any:
    """``value`` when ``check`` accepts it (None passes); ConfigError naming ``name`` otherwise."""
    if value is not None and not check.valid(value):
        raise ConfigError(f"{name}={value!r} is not valid: expected {check.accepted}", field=name)
    return value
