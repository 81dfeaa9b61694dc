"""Configuration: per-layer sections that validate themselves, read once from one environment table."""

from __future__ import annotations

import dataclasses

import pytest

from resilient_llm import CacheConfig, Config, ConfigError, HTTPConfig, LimitConfig, RetryConfig, Secret
from resilient_llm.config import ENVIRONMENT, SECTIONS
from resilient_llm.dropin.config import TrainerConfig, use_openrouter_direct
from resilient_llm.validation import redact_url

KEY = {"OPENAI_API_KEY": "sk-or-v1-secret"}


def test_defaults_match_the_trainer() -> None:
    """Without our variables: OpenRouter, an adaptive limit starting at 20 (ceiling 256), 600 s timeout, 5 retries."""
    config = Config.from_env(KEY)
    assert config.http.base_url == "https://openrouter.ai/api/v1"
    assert (config.http.timeout, config.retry.num_retries) == (600.0, 5)
    assert (config.limit.mode, config.limit.initial, config.limit.ceiling) == ("adaptive", 20, 256)
    fixed = Config.from_env(KEY | {"RESILIENT_LLM_CONCURRENCY": "fixed"})
    assert fixed.limit.ceiling == 20  # the first wave's fixed cap, exactly
    assert config.http.targets_openrouter


def test_missing_key_fails_before_anything_runs() -> None:
    """No key is a start-up error that says which variable to set."""
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        Config.from_env({})


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("OPENROUTER_MAX_CONCURRENT_CALLS", "0", "an integer 1..10000"),
        ("OPENROUTER_MAX_CONCURRENT_CALLS", "many", "an integer 1..10000"),
        ("LITELLM_DEFAULT_TIMEOUT", "-1", "a number of seconds > 0"),
        ("LITELLM_DEFAULT_TIMEOUT", "inf", "a number of seconds > 0"),
        ("OPENAI_API_BASE", "openrouter.ai", "an http(s) URL"),
        ("OPENAI_API_BASE", "http://127.0.0.1:99999/v1", "an http(s) URL"),
        ("OPENAI_API_BASE", "http://[::1/v1", "an http(s) URL"),
        ("RESILIENT_LLM_NUM_RETRIES", "-2", "an integer 0..100"),
        ("RESILIENT_LLM_DEADLINE", "0", "a number of seconds > 0"),
        ("RESILIENT_LLM_IGNORE_PROXY", "maybe", "true or false"),
        ("RESILIENT_LLM_LOG_FORMAT", "xml", "json or console"),
        ("RESILIENT_LLM_LOG_LEVEL", "loud", "debug, info, warning, error"),
        ("RESILIENT_LLM_CONNECT_TIMEOUT", "ten", "a number of seconds > 0"),
        ("RESILIENT_LLM_CACHE_SIZE_LIMIT_MB", "99999999999999999999", "an integer 1..1048576"),
        ("RESILIENT_LLM_CACHE_REDIS_URL", "redis://127.0.0.1:70000/0", "a redis://"),
        ("RESILIENT_LLM_APP_TITLE", "Tülu\ntrainer", "printable ASCII"),
        ("RESILIENT_LLM_FALLBACK", "neutral,litellm", "neutral last"),
    ],
)
def test_bad_values_name_variable_value_and_accepted(name: str, value: str, accepted: str) -> None:
    """Every bad value stops start-up with the variable, the value and what is accepted."""
    with pytest.raises(ConfigError) as info:
        Config.from_env(KEY | {name: value})
    message = str(info.value)
    assert name in message
    assert repr(value.strip()) in message or repr(value) in message
    assert accepted in message


def test_a_key_that_cannot_be_sent_is_refused_without_showing_it() -> None:
    """A key with a zero-width space (invisible when pasted) fails at start-up, and the message hides the key."""
    with pytest.raises(ConfigError, match="OPENAI_API_KEY") as info:
        Config.from_env({"OPENAI_API_KEY": "sk-or-v1-abc\u200bdef"})
    assert "abc" not in str(info.value)


def test_sections_validate_themselves_in_code() -> None:
    """A section built in code checks its values too, naming the field and what is accepted."""
    with pytest.raises(ConfigError, match=r"RetryConfig\.deadline=0 is not valid: expected a number of seconds > 0"):
        RetryConfig(deadline=0)
    with pytest.raises(ConfigError, match="max_concurrent"):
        LimitConfig(max_concurrent=0)
    with pytest.raises(ConfigError, match="mode"):
        CacheConfig(mode="sometimes")
    assert HTTPConfig(api_key="sk-plain").api_key == Secret("sk-plain")


def test_replace_changes_fields_and_still_validates() -> None:
    """``Config.replace`` changes named fields of named sections; bad values are still refused."""
    config = Config(http=HTTPConfig(api_key="sk"))
    changed = config.replace(retry={"deadline": 3.0}, limit={"max_concurrent": 4})
    assert (changed.retry.deadline, changed.limit.max_concurrent, changed.retry.num_retries) == (3.0, 4, 5)
    with pytest.raises(ConfigError):
        config.replace(retry={"deadline": -1.0})


def test_every_variable_maps_to_a_checked_field() -> None:
    """The environment table names real fields, each declared with its check, and no variable twice."""
    sections = dict(SECTIONS)
    for variable in ENVIRONMENT:
        fields = {f.name: f for f in dataclasses.fields(sections[variable.section])}  # type: ignore[arg-type]
        assert "check" in fields[variable.field].metadata, variable
    assert len({v.name for v in ENVIRONMENT}) == len(ENVIRONMENT)


@pytest.mark.parametrize(
    ("model", "sent"),
    [("gpt-4.1-mini", "openai/gpt-4.1-mini"), ("gpt-4o-mini", "openai/gpt-4o-mini"), ("o3-mini", "openai/o3-mini")],
)
def test_bare_openai_names_are_mapped_on_openrouter(model: str, sent: str) -> None:
    """DR Tulu's own defaults (bare OpenAI names) are sent as openai/<name> when the base is OpenRouter."""
    config = Config.from_env(KEY | {"RUBRIC_JUDGE_MODEL": model})
    assert config.model_name(model) == sent
    TrainerConfig.from_env(config, KEY | {"RUBRIC_JUDGE_MODEL": model})


@pytest.mark.parametrize(
    ("model", "suggestion"),
    [("claude-3.5-haiku", "anthropic/claude-3.5-haiku"), ("mystery-model", "<provider>/mystery-model")],
)
def test_other_bare_names_are_refused_with_the_fix(model: str, suggestion: str) -> None:
    """A bare non-OpenAI name is not guessed: the error names the variable and suggests the corrected name."""
    env = KEY | {"RUBRIC_JUDGE_MODEL": model}
    with pytest.raises(ConfigError, match="RUBRIC_JUDGE_MODEL") as info:
        TrainerConfig.from_env(Config.from_env(env), env)
    assert suggestion in str(info.value)


def test_prefixless_models_are_fine_for_other_endpoints_and_litellm_spelling_is_accepted() -> None:
    """Only OpenRouter needs prefixes; LiteLLM's 'openrouter/' prefix is stripped."""
    local = Config.from_env(KEY | {"OPENAI_API_BASE": "http://127.0.0.1:8000/v1"})
    assert local.model_name("mystery-model") == "mystery-model"
    assert Config.from_env(KEY).model_name("openrouter/openai/gpt-4o") == "openai/gpt-4o"


def test_switch_is_validated() -> None:
    """USE_OPENROUTER_DIRECT accepts true/false spellings; anything else names the variable."""
    assert use_openrouter_direct({"USE_OPENROUTER_DIRECT": "yes"}) is True
    assert use_openrouter_direct({}) is False
    with pytest.raises(ConfigError, match=r"USE_OPENROUTER_DIRECT='maybe'.*true or false"):
        use_openrouter_direct({"USE_OPENROUTER_DIRECT": "maybe"})


def test_key_never_shows_in_repr_or_description() -> None:
    """The API key is hidden from repr(), str() and the start-up description."""
    config = Config.from_env(KEY)
    assert "secret" not in repr(config)
    assert "secret" not in str(config.describe())
    assert config.http.api_key.reveal() == "sk-or-v1-secret"
    assert repr(Secret("abc")) == "Secret('***')"


def test_proxy_is_reported_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy in use is named, its user:password never; the switch turns it off."""
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pa55@proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    config = Config.from_env(KEY)
    assert config.http.proxy() == "http://proxy.internal:3128"
    assert "pa55" not in str(config.describe())
    assert Config.from_env(KEY | {"RESILIENT_LLM_IGNORE_PROXY": "true"}).http.proxy() is None


def test_redact_url_keeps_everything_but_credentials() -> None:
    """Only the userinfo part is removed."""
    assert redact_url("http://u:p@h:1/x?y=1") == "http://h:1/x?y=1"
    assert redact_url("https://openrouter.ai/api/v1") == "https://openrouter.ai/api/v1"


@pytest.mark.parametrize(
    ("model", "sent"),
    [("azure/gpt-4o", "openai/gpt-4o"), ("gemini/gemini-2.0-flash", "google/gemini-2.0-flash")],
)
def test_litellm_prefixes_with_a_sure_counterpart_are_translated_on_openrouter(model: str, sent: str) -> None:
    """LiteLLM's azure/<OpenAI name> and gemini/<name> go to OpenRouter as openai/... and google/..."""
    assert Config.from_env(KEY).model_name(model) == sent


@pytest.mark.parametrize("model", ["hosted_vllm/Qwen/Qwen3-8B", "ollama/llama3", "azure/my-deployment"])
def test_other_litellm_prefixes_are_refused_on_openrouter_with_the_fix(model: str) -> None:
    """A LiteLLM-only prefix on OpenRouter: the variable, the prefix, and both ways out (base URL, OpenRouter name)."""
    env = KEY | {"RUBRIC_JUDGE_MODEL": model}
    with pytest.raises(ConfigError, match="RUBRIC_JUDGE_MODEL") as info:
        TrainerConfig.from_env(Config.from_env(env), env)
    message = str(info.value)
    assert f"LiteLLM's '{model.split('/')[0]}/' prefix" in message
    assert "OPENAI_API_BASE" in message
    assert "OpenRouter's name" in message


def test_hosted_vllm_is_dropped_for_a_vllm_server() -> None:
    """Against another base URL (DR Tulu's tests: a vLLM server) hosted_vllm/<model> is sent as <model>."""
    local = Config.from_env(KEY | {"OPENAI_API_BASE": "http://127.0.0.1:8000/v1"})
    assert local.model_name("hosted_vllm/Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert local.model_name("openai/gpt-4o-mini") == "openai/gpt-4o-mini"  # other prefixes are the server's business
    with pytest.raises(ConfigError):
        local.model_name("hosted_vllm/")
