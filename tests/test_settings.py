"""Configuration: read once, validated, every mistake named with the accepted values."""

from __future__ import annotations

import pytest

from resilient_llm import ConfigError, Settings
from resilient_llm.settings import Secret, redact_url

KEY = {"OPENAI_API_KEY": "sk-or-v1-secret"}


def test_defaults_match_the_trainer() -> None:
    """Without our variables: OpenRouter, 20 concurrent calls, 600 s timeout, 5 retries."""
    settings = Settings.from_env(KEY)
    assert settings.base_url == "https://openrouter.ai/api/v1"
    assert (settings.max_concurrent, settings.timeout, settings.num_retries) == (20, 600.0, 5)
    assert settings.targets_openrouter


def test_missing_key_fails_before_anything_runs() -> None:
    """No key is a start-up error that says which variable to set."""
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        Settings.from_env({})


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("OPENROUTER_MAX_CONCURRENT_CALLS", "0", "an integer 1..10000"),
        ("OPENROUTER_MAX_CONCURRENT_CALLS", "many", "an integer 1..10000"),
        ("LITELLM_DEFAULT_TIMEOUT", "-1", "a number of seconds > 0"),
        ("LITELLM_DEFAULT_TIMEOUT", "inf", "a number of seconds > 0"),
        ("OPENAI_API_BASE", "openrouter.ai", "an http(s) URL"),
        ("RESILIENT_LLM_NUM_RETRIES", "-2", "an integer 0..100"),
        ("RESILIENT_LLM_DEADLINE", "0", "a number of seconds > 0"),
        ("RESILIENT_LLM_IGNORE_PROXY", "maybe", "true or false"),
        ("RESILIENT_LLM_LOG_FORMAT", "xml", "json or console"),
        ("RESILIENT_LLM_LOG_LEVEL", "loud", "debug, info, warning, error"),
        ("RESILIENT_LLM_CONNECT_TIMEOUT", "ten", "a number of seconds > 0"),
    ],
)
def test_bad_values_name_variable_value_and_accepted(name: str, value: str, accepted: str) -> None:
    """Every bad value stops start-up with the variable, the value and what is accepted."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env(KEY | {name: value})
    message = str(info.value)
    assert name in message
    assert repr(value) in message
    assert accepted in message


@pytest.mark.parametrize(
    ("model", "suggestion"),
    [
        ("gpt-4.1-mini", "openai/gpt-4.1-mini"),
        ("claude-3.5-haiku", "anthropic/claude-3.5-haiku"),
        ("mystery-model", "<provider>/mystery-model"),
    ],
)
def test_model_without_provider_prefix_is_rejected_with_the_fix(model: str, suggestion: str) -> None:
    """OpenRouter needs provider/model; the error suggests the corrected name."""
    with pytest.raises(ConfigError, match="RUBRIC_JUDGE_MODEL") as info:
        Settings.from_env(KEY | {"RUBRIC_JUDGE_MODEL": model})
    assert suggestion in str(info.value)


def test_prefixless_models_are_fine_for_other_endpoints_and_litellm_spelling_is_accepted() -> None:
    """Only OpenRouter needs prefixes; LiteLLM's 'openrouter/' prefix is stripped."""
    local = Settings.from_env(KEY | {"OPENAI_API_BASE": "http://127.0.0.1:8000/v1"})
    assert local.check_model("gpt-4.1-mini") == "gpt-4.1-mini"
    assert Settings.from_env(KEY).check_model("openrouter/openai/gpt-4o") == "openai/gpt-4o"


def test_key_never_shows_in_repr_or_description() -> None:
    """The API key is hidden from repr(), str() and the start-up description."""
    settings = Settings.from_env(KEY)
    assert "secret" not in repr(settings)
    assert "secret" not in str(settings.describe())
    assert settings.api_key.reveal() == "sk-or-v1-secret"
    assert repr(Secret("abc")) == "Secret('***')"


def test_proxy_is_reported_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy in use is named, its user:password never; the switch turns it off."""
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pa55@proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = Settings.from_env(KEY)
    assert settings.proxy_for_base_url() == "http://proxy.internal:3128"
    assert "pa55" not in str(settings.describe())
    assert Settings.from_env(KEY | {"RESILIENT_LLM_IGNORE_PROXY": "true"}).proxy_for_base_url() is None


def test_redact_url_keeps_everything_but_credentials() -> None:
    """Only the userinfo part is removed."""
    assert redact_url("http://u:p@h:1/x?y=1") == "http://h:1/x?y=1"
    assert redact_url("https://openrouter.ai/api/v1") == "https://openrouter.ai/api/v1"
