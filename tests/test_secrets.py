"""No secret leaves the process in clear: not in a log line, an error message, doctor's output or a cache file."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

import resilient_llm
from open_instruct.search_rewards.utils import run_utils
from resilient_llm import CallFailed, Config, ConfigError, HTTPConfig
from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.testing.redis_server import RedisServer
from tests.conftest import MODEL, read_log

KEY = "sk-or-v1-SCANKEY-a1b2c3d4e5f6"
FALLBACK_KEY = "fb-SCANKEY-9f8e7d6c5b4a"
REDIS_PASSWORD = "redis-pw-SCAN-5150"
PROXY_PASSWORD = "proxy-pw-SCAN-4242"
BASE_PASSWORD = "base-pw-SCAN-7777"
FALLBACK_URL_PASSWORD = "fburl-pw-SCAN-3333"
SECRETS = (KEY, FALLBACK_KEY, REDIS_PASSWORD, PROXY_PASSWORD, BASE_PASSWORD, FALLBACK_URL_PASSWORD)


def with_userinfo(url: str, user: str, password: str) -> str:
    return url.replace("://", f"://{user}:{password}@", 1)


@pytest.fixture
def servers() -> Iterator[tuple[FaultServer, FaultServer]]:
    with FaultServer("clean", api_key=KEY) as primary, FaultServer("clean", api_key=FALLBACK_KEY) as fallback:
        yield primary, fallback


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[str]:
    """A real redis-server that wants a password; its URL carries it."""
    try:
        server = RedisServer(tmp_path).start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    import redis

    redis.Redis(port=server.port).config_set("requirepass", REDIS_PASSWORD)
    yield f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"
    server.kill()


def debug_env(primary: FaultServer, fallback_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    proxy = f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:9"
    return {
        "USE_OPENROUTER_DIRECT": "true",
        "OPENAI_API_KEY": KEY,
        "OPENAI_API_BASE": primary.url,
        "FALLBACK_API_KEY": FALLBACK_KEY,
        "RESILIENT_LLM_FALLBACK_MODEL": "openai/gpt-4o-mini",
        "RESILIENT_LLM_FALLBACK_BASE_URL": fallback_url,
        "RESILIENT_LLM_FALLBACK_RETRIES": "0",
        "RESILIENT_LLM_BREAKER_REDIS_URL": redis_url,
        "RESILIENT_LLM_LOG_LEVEL": "debug",
        "RESILIENT_LLM_LOG_PROMPTS": "true",
        "RESILIENT_LLM_LOG_FILE": str(tmp_path / "debug.jsonl"),
        "RESILIENT_LLM_CACHE_DIR": str(tmp_path / "cache"),
        "RESILIENT_LLM_NUM_RETRIES": "1",
        "RESILIENT_LLM_BACKOFF_BASE": "0.01",
        "RESILIENT_LLM_BACKOFF_MAX": "0.02",
        "LITELLM_DEFAULT_TIMEOUT": "5",
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "NO_PROXY": "127.0.0.1,localhost",
    }


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    resilient_llm.shutdown()
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def error_text(exc: BaseException) -> str:
    """Everything a traceback of ``exc`` would show, chained causes included."""
    return "".join(traceback.format_exception(exc))


def doctor_output(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "resilient_llm.cli", "doctor"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_debug_run_with_failures_leaks_no_key_and_no_url_password(
    servers: tuple[FaultServer, FaultServer],
    locked_redis: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Debug level, prompts logged, failures forced (bodies echoing the key), a keyed fallback, passwords in the
    Redis, proxy, base and fallback URLs: no secret in any log line, error message, doctor output or cache file."""
    primary, fallback = servers
    env = debug_env(primary, fallback.url, locked_redis, tmp_path)
    use_env(monkeypatch, env)
    seen: list[str] = []

    primary.script("echo_auth")  # the public API raises the caller mistake, with the body's message
    with pytest.raises(CallFailed) as failed:
        resilient_llm.complete(MODEL, user="scan 1", temperature=0)
    seen.append(error_text(failed.value))

    primary.script("echo_auth")  # the drop-in returns neutral
    seen.append(run_utils.run_litellm(MODEL, "scan 2"))

    primary.script("http_500", "http_500")  # the primary fails for good, the fallback's body echoes its key
    fallback.script("echo_auth")
    result = resilient_llm.complete(MODEL, user="scan 3", temperature=0)
    assert result.outcome == "neutral"
    seen += [f.message for f in result.failures]

    primary.script("http_500", "http_500")  # the fallback answers
    assert resilient_llm.complete(MODEL, user="scan 4", temperature=0).outcome == "fallback"
    assert resilient_llm.complete(MODEL, user="scan 5", temperature=0).outcome == "ok"
    assert resilient_llm.complete(MODEL, user="scan 5", temperature=0).outcome == "cached"

    with_password = {**env, "OPENAI_API_BASE": with_userinfo(primary.url, "user", BASE_PASSWORD)}
    use_env(monkeypatch, with_password)
    with pytest.raises(ConfigError) as refused:
        run_utils.run_litellm(MODEL, "scan 6")
    seen.append(error_text(refused.value))

    # the fallback's URL carries a password: LiteLLM would send it as Basic auth; the run goes on without it
    fallback_with_password = with_userinfo(fallback.url, "fbuser", FALLBACK_URL_PASSWORD)
    use_env(monkeypatch, {**env, "RESILIENT_LLM_FALLBACK_BASE_URL": fallback_with_password})
    primary.script("http_500", "http_500")
    result = resilient_llm.complete(MODEL, user="scan 7", temperature=0)
    seen += [f.message for f in result.failures]
    resilient_llm.shutdown()

    doctor_env = {**env, "RESILIENT_LLM_FALLBACK_BASE_URL": fallback_with_password}
    seen.append(doctor_output({**doctor_env, "RESILIENT_LLM_CACHE_REDIS_URL": locked_redis}))
    seen.append(doctor_output(with_password))
    log_text = (tmp_path / "debug.jsonl").read_text()
    cache_files = [p.read_bytes().decode("latin-1") for p in (tmp_path / "cache").rglob("*") if p.is_file()]

    # the run did what it claims: echoed bodies, a fallback answer, a cached one, the refused base URL
    events = read_log(tmp_path / "debug.jsonl")
    assert "Incorrect API key provided" in log_text
    assert {line.get("outcome") for line in events} >= {"error", "neutral", "fallback", "ok", "cached"}
    assert any(line["event"] == "engine_started" and line["litellm_base_url"] for line in events)
    assert "OPENAI_API_BASE" in str(refused.value)
    assert "PASS  cache          redis store" in seen[-2]
    assert "FAIL  config" in seen[-1]
    assert cache_files
    for secret in SECRETS:
        assert secret not in log_text, secret
        assert not any(secret in text for text in seen), secret
        assert not any(secret in text for text in cache_files), secret


def test_credentials_in_the_base_url_are_refused_not_sent_as_basic_auth(
    servers: tuple[FaultServer, FaultServer],
) -> None:
    """user:password in OPENAI_API_BASE would replace the Bearer key (httpx sends it as Basic auth): start-up
    refuses it, naming the variable and showing the URL without the password."""
    primary, _ = servers
    url = with_userinfo(primary.url, "user", BASE_PASSWORD)
    with pytest.raises(ConfigError, match="OPENAI_API_BASE") as refused:
        Config.from_env({"OPENAI_API_KEY": KEY, "OPENAI_API_BASE": url})
    assert BASE_PASSWORD not in str(refused.value)
    assert primary.url.removeprefix("http://") in str(refused.value)
    with pytest.raises(ConfigError, match="base_url"):
        HTTPConfig(api_key=KEY, base_url=url)


@pytest.mark.parametrize("key", ["sk-or\x7fv1", "sk-or\u200bv1", "sk-or\nv1", "sk-or v1", "sk-or\tv1"])
def test_a_key_with_an_illegal_header_character_is_refused_at_start(key: str) -> None:
    """Such a key would fail every request before sending (and put 'Bearer <key>' into the error): refused at
    start-up, the key itself never shown."""
    with pytest.raises(ConfigError, match="OPENAI_API_KEY=<hidden") as refused:
        Config.from_env({"OPENAI_API_KEY": key})
    assert key not in str(refused.value)
