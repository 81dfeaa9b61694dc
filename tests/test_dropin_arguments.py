"""The drop-in never raises mid-run on a call's own arguments: only configuration, read on the first call, may."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from open_instruct.search_rewards.utils import run_utils
from resilient_llm import ConfigError
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL, call_lines

pytestmark = pytest.mark.usefixtures("direct_env")

BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("no user prompt", {"user_prompt": None}, "user prompt"),
    ("empty messages", {"user_prompt": None, "messages": []}, "messages"),
    ("a message without a role", {"user_prompt": None, "messages": [{"content": "hi"}]}, "messages"),
    ("zero timeout", {"user_prompt": "q", "timeout": 0}, "timeout"),
    ("negative retries", {"user_prompt": "q", "num_retries": -1}, "num_retries"),
    ("an empty model name", {"model_name": " ", "user_prompt": "q"}, "empty"),
    ("a value JSON cannot carry", {"user_prompt": "q", "response_format": {1, 2}}, "response_format"),
]


@pytest.mark.parametrize(("case", "arguments", "named"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_a_bad_call_returns_the_neutral_text_and_logs_one_line(
    case: str, arguments: dict[str, Any], named: str, server: FaultServer, log_path: Path
) -> None:
    """Sync and async: the neutral text (as on the LiteLLM path), nothing sent, one llm_call line per call with
    outcome error, route rejected and the argument named."""
    arguments = {"model_name": MODEL, **arguments}
    assert run_utils.run_litellm(**arguments) == ""
    assert asyncio.run(run_utils.run_litellm_async(**arguments)) == ""
    assert server.stats()["requests"] == 0
    lines = call_lines(log_path)
    assert [(line["outcome"], line["route"]) for line in lines] == [("error", "rejected")] * 2
    assert all(named in line["error"] and line["level"] == "warning" for line in lines)
    assert run_utils.run_litellm(MODEL, "and the next good call is answered").startswith('{"score"')


def test_a_bad_model_variable_still_raises_on_the_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration is not a call's argument: DR Tulu's model variables are checked when the engine starts."""
    monkeypatch.setenv("OPENAI_API_BASE", "https://openrouter.ai/api/v1")  # the prefix rule is OpenRouter's
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # should anything be sent after all: loopback, refused
    for name in ("NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CITATION_JUDGE_MODEL", "claude-3.5-haiku")
    with pytest.raises(ConfigError, match=r"CITATION_JUDGE_MODEL.*anthropic/claude-3.5-haiku"):
        run_utils.run_litellm(MODEL, "q")
