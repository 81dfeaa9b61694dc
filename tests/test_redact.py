"""The one redaction step: what it masks and what it leaves alone."""

from __future__ import annotations

from resilient_llm.redact import Redactor, url_secrets

KEY = "sk-or-v1-SCANKEY-a1b2c3d4e5f6"


def test_redactor_masks_secrets_their_escaped_forms_bearer_tokens_and_url_userinfo() -> None:
    """Configured secrets (raw, JSON-escaped, percent-encoded), any Bearer token and any URL user:password go."""
    redact = Redactor([KEY, 'pa"ss/word', "abc"])
    assert redact(f"key {KEY} again {KEY}") == "key *** again ***"
    assert redact('{"m": "pa\\"ss/word"}') == '{"m": "***"}'
    assert redact("redis://:pa%22ss%2Fword@h:1/0") == "redis://***@h:1/0"
    assert redact("Authorization: Bearer whatever-token.1") == "Authorization: Bearer ***"
    assert redact("see http://u:p@host/x and https://host/y") == "see http://***@host/x and https://host/y"
    assert redact("abc stays: too short to mask everywhere") == "abc stays: too short to mask everywhere"
    assert url_secrets("redis://user:p%40ss@h/0") == ["p%40ss", "p@ss"]
    assert url_secrets("https://sk-only@h/v1") == ["sk-only"]
    assert url_secrets("https://h/v1") == []
