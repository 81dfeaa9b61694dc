"""The one redaction step every log line, error message and doctor line passes: secrets become ``***``.

What is masked: every secret the process was configured with (API keys, URL passwords; registered by each engine
at start and by ``doctor``) in its raw, JSON-escaped and percent-encoded spellings, any ``Bearer`` token, and the
``user:password@`` part of any URL. A secret shorter than ``MIN_SECRET_LENGTH`` is masked only inside URLs: masking
every ``abc`` in every line would make the logs unreadable and hide nothing worth hiding.

Registration only ever adds (a key seen once stays masked for the life of the process), so a log line written
while a second engine starts can never show the first one's key.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 4
_BEARER = re.compile(r"\b(Bearer\s+)[^\s\"',;\\]{8,}")
_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@\"'<>]+@")


def url_secrets(url: str) -> list[str]:
    """The secret part of a URL's userinfo: the password (as written and decoded), or a lone user name."""
    try:
        parts = urllib.parse.urlsplit(url)
        secret = parts.password if parts.password is not None else parts.username
    except ValueError:
        return []
    if not secret:
        return []
    decoded = urllib.parse.unquote(secret)
    return [secret] if decoded == secret else [secret, decoded]


class Redactor:
    """Masks the given secrets, bearer credentials and URL userinfo in a text; callable, pure."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if isinstance(secret, str) and len(secret) >= MIN_SECRET_LENGTH:
                forms |= {secret, json.dumps(secret)[1:-1], urllib.parse.quote(secret, safe="")}
        self.secrets = frozenset(forms)
        self._ordered = sorted(forms, key=len, reverse=True)  # longest first: no half-masked secret is left

    def __call__(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
        return _BEARER.sub(rf"\1{MASK}", text) if "Bearer" in text else text

    def including(self, secrets: Iterable[str]) -> Redactor:
        return Redactor([*self.secrets, *secrets])


_lock = threading.Lock()
_current = Redactor()


def register(secrets: Iterable[str]) -> None:
    """Mask these secrets (e.g. a new engine's key and URL passwords) from now on, process-wide."""
    global _current
    new = [s for s in secrets if s and s not in _current.secrets]
    if new:
        with _lock:
            _current = _current.including(new)


def redact(text: str) -> str:
    """``text`` with every registered secret, bearer credential and URL userinfo masked."""
    return _current(text)


def log_processor(_logger: Any, _method: str, line: Any) -> Any:
    """structlog processor, placed after the renderer: the finished line passes ``redact`` whole."""
    return redact(line) if isinstance(line, str) else line
