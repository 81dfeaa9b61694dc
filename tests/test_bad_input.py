"""Bad input ends in a typed error naming what is wrong, never a bare OSError, TypeError or traceback."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from resilient_llm import ConfigError, Engine
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL, fast_config


def test_a_log_file_that_cannot_be_opened_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    """A directory, or a path under a regular file, is a ConfigError at engine start naming RESILIENT_LLM_LOG_FILE."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for destination in (tmp_path, blocker / "calls.jsonl"):
        with pytest.raises(ConfigError, match="RESILIENT_LLM_LOG_FILE") as refused:
            Engine(fast_config("http://127.0.0.1:9/v1", destination))
        assert str(destination) in str(refused.value)


def test_a_missing_log_folder_is_created(tmp_path: Path, server: FaultServer) -> None:
    """The launcher's default (./logs/...) relies on it: a folder that can be made is made, and the log written."""
    destination = tmp_path / "new" / "folder" / "calls.jsonl"
    with Engine(fast_config(server.url, destination)):
        pass
    assert "engine_started" in destination.read_text()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"user": object()}, "messages[0]"),
        ({"user": "q", "temperature": float("nan")}, "temperature"),
        ({"user": "q", "extra_body": {"tags": {"a", "b"}}}, "extra_body['tags']"),
        ({"user": "q", "extra_body": [("seed", 1)]}, "extra_body"),
        ({"user": "q", "extra_body": {1: "x"}}, "extra_body"),
        ({"messages": 5}, "messages"),
    ],
)
@pytest.mark.parametrize("cache_mode", ["off", "read-write"])
def test_arguments_json_cannot_carry_are_a_config_error_naming_them(
    arguments: dict[str, object], named: str, cache_mode: str, server: FaultServer, tmp_path: Path
) -> None:
    """Sync and async, with the cache on or off: a ConfigError naming the argument, raised before anything is sent
    (not a bare TypeError or ValueError from deep inside)."""
    config = fast_config(server.url, cache_mode=cache_mode, cache_dir=str(tmp_path / "cache"))
    with Engine(config) as engine:
        options = {"temperature": 0, **arguments}
        messages = options.pop("messages", None)
        with pytest.raises(ConfigError, match=re.escape(named)):
            engine.complete(MODEL, messages, **options)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=re.escape(named)):
            asyncio.run(engine.acomplete(MODEL, messages, **options))  # type: ignore[arg-type]
    assert server.stats()["requests"] == 0


def test_what_json_carries_is_sent_as_before(server: FaultServer) -> None:
    """Integer keys (logit_bias by token id), tuples and nested objects are still accepted and answered."""
    with Engine(fast_config(server.url)) as engine:
        extra = {"logit_bias": {50256: -100}, "stop": ("\n\n",), "metadata": {"run": {"step": 3, "tags": ["a"]}}}
        assert engine.complete(MODEL, user="q", temperature=0, extra_body=extra).outcome == "ok"


@pytest.mark.parametrize("model", [["openai/gpt-4o-mini"], None, 42, "  "])
def test_a_model_that_is_not_a_name_is_a_config_error(model: object, server: FaultServer) -> None:
    """A list, None, a number or blanks as the model: a ConfigError naming 'model', not an unhashable-type crash."""
    with Engine(fast_config(server.url)) as engine, pytest.raises(ConfigError, match="model"):
        engine.complete(model, user="q")  # type: ignore[arg-type]
