"""Shared fixtures: a real misbehaving server on 127.0.0.1 and engines pointed at it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import resilient_llm
from resilient_llm import Config, Engine, HTTPConfig, logs
from resilient_llm.config import SECTIONS
from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.testing.redis_server import RedisServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # keep LiteLLM off the internet: loopback only

API_KEY = "sk-or-v1-TESTKEY-0123456789abcdef"
MODEL = "openai/gpt-4o-mini"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer("clean", retry_after_s=0.2, hang_s=5.0) as srv:
        yield srv


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "calls.jsonl"


def _field_of(flat: str) -> tuple[str, str]:
    """``breaker_fail_max`` -> ("breaker", "fail_max"); a bare field name (``deadline``) finds its one section."""
    aliases = {
        "hedge": ("hedge", "enabled"),
        "cache_dir": ("cache", "directory"),
        "fallback_model": ("litellm", "model"),
        "fallback_base_url": ("litellm", "base_url"),
        "fallback_api_key": ("litellm", "api_key"),
    }
    if flat in aliases:
        return aliases[flat]
    for name, section in SECTIONS:
        fields = {f.name for f in dataclasses.fields(section)}  # type: ignore[arg-type]
        if flat.startswith(name + "_") and flat[len(name) + 1 :] in fields:
            return name, flat[len(name) + 1 :]
    owners = [name for name, section in SECTIONS if flat in {f.name for f in dataclasses.fields(section)}]  # type: ignore[arg-type]
    if len(owners) != 1:
        raise KeyError(f"no single config field named {flat!r}")
    return owners[0], flat


def fast_config(base_url: str, log_file: Path | str = "off", **overrides: Any) -> Config:
    """A config with short waits, so retries do not slow the suite; ``overrides`` by flat name (``max_concurrent``)."""
    values: dict[str, Any] = {
        "http_timeout": 2.0,
        "connect_timeout": 1.0,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "log_file": str(log_file),
        "cache_mode": "off",
        **overrides,
    }
    sections: dict[str, dict[str, Any]] = {}
    for flat, value in values.items():
        name, field = _field_of(flat)
        sections.setdefault(name, {})[field] = value
    http = HTTPConfig(api_key=API_KEY, base_url=base_url, **sections.pop("http", {}))
    return Config(http=http).replace(**sections)


@pytest.fixture
def make_engine(server: FaultServer, log_path: Path) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def make(**overrides: Any) -> Engine:
        engine = Engine(fast_config(overrides.pop("base_url", server.url), log_path, **overrides))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cached_engine(make_engine: Callable[..., Engine], cache_dir: Path) -> Callable[..., Engine]:
    """Engines with the disk cache on, in ``cache_dir``."""

    def make(**overrides: object) -> Engine:
        return make_engine(**{"cache_mode": "read-write", "cache_dir": str(cache_dir), **overrides})

    return make


@pytest.fixture
def direct_env(server: FaultServer, log_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment a user sets to switch the trainer to the direct path, against the local server."""
    resilient_llm.shutdown()
    for name, value in {
        "USE_OPENROUTER_DIRECT": "true",
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_API_BASE": server.url,
        "LITELLM_DEFAULT_TIMEOUT": "2",
        "RESILIENT_LLM_BACKOFF_BASE": "0.01",
        "RESILIENT_LLM_BACKOFF_MAX": "0.05",
        "RESILIENT_LLM_LOG_FILE": str(log_path),
        "RESILIENT_LLM_CACHE_DIR": str(log_path.parent / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    yield
    resilient_llm.shutdown()


def read_log(path: Path) -> list[dict[str, Any]]:
    logs.flush()  # lines are written by a background thread
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def call_lines(path: Path) -> list[dict[str, Any]]:
    return [line for line in read_log(path) if line["event"] == "llm_call"]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write into; root ignores permission bits, so it gets the immutable attribute."""
    directory = tmp_path / "read-only-cache"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make a read-only directory as root here: {made.stderr.strip()}")
    yield directory
    subprocess.run(["chattr", "-i", str(directory)], check=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    try:
        redis = RedisServer(tmp_path).start()
    except FileNotFoundError as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None  # not a skip: the dev extra brings one
    yield redis
    redis.kill()
