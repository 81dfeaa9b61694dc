"""Bad input ends in a typed error naming what is wrong, never a bare OSError, TypeError or traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient_llm import ConfigError, Engine
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import fast_config


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
