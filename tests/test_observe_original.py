"""The original (flag-off) path, observed: results exactly as before, one llm_call line per call only when
RESILIENT_LLM_LOG_FILE is set, never a failure because of the logging."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import resilient_llm
from open_instruct.search_rewards.utils import run_utils
from resilient_llm import logs, process
from resilient_llm.testing.fault_server import FaultServer
from tests import original_run_utils
from tests.conftest import API_KEY, MODEL, call_lines

Call = Callable[[ModuleType, FaultServer], str]


@pytest.fixture
def original_env(server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The flag off, the trainer's key and base pointing at the local server, no logging variables at all."""
    resilient_llm.shutdown()
    monkeypatch.chdir(tmp_path)
    for name in ("USE_OPENROUTER_DIRECT", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("RESILIENT_LLM_LOG_FILE", "RESILIENT_LLM_LOG_PROMPTS", "RESILIENT_LLM_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_API_BASE", server.url)
    monkeypatch.setenv("LITELLM_DEFAULT_TIMEOUT", "2")
    yield
    resilient_llm.shutdown()


def outcome(call: Call, module: ModuleType, server: FaultServer) -> tuple[Any, ...]:
    try:
        return ("returned", call(module, server))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


# Each scripted fault list is used up exactly by one run of its call.
SCENARIOS: dict[str, tuple[tuple[str, ...], Call]] = {
    "answer": ((), lambda m, s: m.run_litellm(MODEL, "q answer", "sys")),
    "null content": (("null_content",), lambda m, s: m.run_litellm(MODEL, "q null")),
    "400 then the fallback model": (("http_400",), lambda m, s: m.run_litellm(MODEL, "q 400")),
    "503s within the retries, async": (
        ("http_503", "http_503"),
        lambda m, s: asyncio.run(
            m.run_litellm_async(MODEL, messages=[{"role": "user", "content": "m"}], num_retries=1)
        ),
    ),
    "retries used up, async": (("DOWN",), lambda m, s: asyncio.run(m.run_litellm_async(MODEL, "q", num_retries=1))),
    "empty choices, async": (("empty_choices",), lambda m, s: asyncio.run(m.run_litellm_async(MODEL, "q empty"))),
    "chatopenai answer": ((), lambda m, s: m.run_chatopenai(MODEL, "sys", "q chat", json_mode=True)),
    "chatopenai null content": (("null_content",), lambda m, s: m.run_chatopenai(MODEL, None, "q chat null")),
    "chatopenai empty choices raises": (("empty_choices",), lambda m, s: m.run_chatopenai(MODEL, None, "q chat ec")),
    "chatopenai 401 raises": (("http_401",), lambda m, s: m.run_chatopenai(MODEL, None, "q chat 401")),
    "chatopenai truncated json raises": (("truncated_json",), lambda m, s: m.run_chatopenai(MODEL, None, "q tj")),
    "azure without a key raises": ((), lambda m, s: m.run_azure_openai("gpt-4o", None, "q azure")),
    "azure 401 raises": (
        ("AZURE",),
        lambda m, s: m.run_azure_openai("gpt-4o", "sys", "q", s.url.removesuffix("/api/v1")),
    ),
}


RETRYING = ("503s within the retries, async", "retries used up, async")  # LiteLLM's own retries: a second each


@pytest.mark.usefixtures("original_env")
@pytest.mark.parametrize("logging", ["off", "on"])
@pytest.mark.parametrize(
    "scenario",
    [pytest.param(s, marks=pytest.mark.slow) if s in RETRYING else s for s in SCENARIOS],
)
def test_flag_off_returns_and_raises_what_the_original_does(
    scenario: str, logging: str, server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same value or same exception (type and message) and the same requests as the original; with logging off
    nothing is written and no engine starts, with it on exactly one line."""
    faults, call = SCENARIOS[scenario]
    server.down = "DOWN" in faults
    if "AZURE" in faults:
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-not-a-bearer-token")  # the server answers 401
    faults = tuple(f for f in faults if f.islower())
    server.script(*faults)
    expected = outcome(call, original_run_utils, server)
    requests = server.stats()["requests"]
    log = tmp_path / "calls.jsonl"
    if logging == "on":
        monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", str(log))
    server.script(*faults)
    assert outcome(call, run_utils, server) == expected
    assert server.stats()["requests"] == 2 * requests
    assert process._default is None
    if logging == "off":
        assert list(tmp_path.iterdir()) == []
    else:
        (line,) = call_lines(log)
        assert line["route"] in ("litellm_original", "azure_openai_original")
        returned = expected[0] == "returned" and expected[1] not in ("", "None")
        assert line["outcome"] == ("ok" if returned else "neutral" if expected[0] == "returned" else "error")


@pytest.mark.slow
@pytest.mark.usefixtures("original_env")
def test_flaky_profile_answers_as_the_original_with_the_same_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the flaky profile, logging off: the same answers per prompt and the same requests and faults at the
    server (no retry added); with logging on, the answers are the same again and each call has its line."""
    profile = "flaky"
    prompts = [f"{profile} rubric {i}" for i in range(16)]

    def run(module: ModuleType) -> tuple[list[str], dict[str, Any]]:
        with FaultServer(profile, seed=5, retry_after_s=0.2, hang_s=5.0) as srv:
            monkeypatch.setenv("OPENAI_API_BASE", srv.url)

            async def batch() -> list[str]:
                return await asyncio.gather(*(module.run_litellm_async(MODEL, p, "judge") for p in prompts))

            answers = asyncio.run(batch())
            stats = srv.stats()
        return answers, {k: stats[k] for k in ("requests", "faults")}

    expected = run(original_run_utils)
    assert expected[1]["requests"] > len(prompts)  # faults were met and LiteLLM retried them
    assert run(run_utils) == expected
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", str(tmp_path / "calls.jsonl"))
    assert run(run_utils)[0] == expected[0]
    lines = call_lines(tmp_path / "calls.jsonl")
    assert sorted(line["outcome"] for line in lines) == sorted("ok" if a else "neutral" for a in expected[0])


@pytest.mark.usefixtures("original_env")
@pytest.mark.parametrize("value", ["", "  ", "off"])
def test_unset_blank_or_off_writes_nothing(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Only a destination turns the lines on: unset, blank and off leave stdout, stderr and the disk untouched."""
    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", value)
    assert run_utils.run_litellm(MODEL, "q").startswith('{"score"')
    assert "llm_call" not in "".join(capfd.readouterr())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("original_env")
def test_stderr_destination_and_prompts_opt_in(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """RESILIENT_LLM_LOG_FILE=stderr is honoured; prompts appear only with RESILIENT_LLM_LOG_PROMPTS=true."""
    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", "stderr")
    run_utils.run_litellm(MODEL, "the secret rubric", "sys")
    logs.flush()  # lines are written by a background thread
    err = capfd.readouterr().err
    assert '"event":"llm_call"' in err
    assert "the secret rubric" not in err
    monkeypatch.setenv("RESILIENT_LLM_LOG_PROMPTS", "true")
    run_utils.run_litellm(MODEL, "the secret rubric", "sys")
    logs.flush()
    assert '"content":"the secret rubric"' in capfd.readouterr().err


@pytest.mark.usefixtures("original_env")
def test_tokens_cost_and_answering_model_are_logged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An answer's line carries LiteLLM's usage and cost, the response id and the model that answered."""
    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", str(tmp_path / "calls.jsonl"))
    run_utils.run_chatopenai(MODEL, None, "count my tokens please")
    (line,) = call_lines(tmp_path / "calls.jsonl")
    assert (line["caller"], line["outcome"], line["attempts"]) == ("run_chatopenai", "ok", None)
    assert line["prompt_tokens"] > 0
    assert line["completion_tokens"] > 0
    assert line["cost"] > 0
    assert line["response_id"].startswith("gen-")
    assert line["answered_by"]


@pytest.mark.usefixtures("original_env")
def test_a_bad_log_setting_or_unwritable_file_never_changes_a_result(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad RESILIENT_LLM_LOG_FORMAT or a log path that is a directory: the same answer, no line, one warning."""
    expected = original_run_utils.run_litellm(MODEL, "q bad log")
    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("RESILIENT_LLM_LOG_FORMAT", "xml")
    assert run_utils.run_litellm(MODEL, "q bad log") == expected
    assert run_utils.run_litellm(MODEL, "q bad log") == expected
    assert not (tmp_path / "calls.jsonl").exists()
    warnings = [r.getMessage() for r in caplog.records if "not logging the original path" in r.getMessage()]
    assert len(warnings) == 1
    assert "RESILIENT_LLM_LOG_FORMAT='xml'" in warnings[0]
    monkeypatch.delenv("RESILIENT_LLM_LOG_FORMAT")
    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", str(tmp_path))  # a directory cannot be appended to
    assert run_utils.run_litellm(MODEL, "q bad log") == expected


@pytest.mark.usefixtures("original_env")
def test_an_exception_into_the_caller_is_an_error_line_without_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The caller's exception passes through unchanged; its line has the type and message, keys masked."""
    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-secret-0123456789")
    with pytest.raises(ValueError, match="endpoint must be provided"):
        run_utils.run_azure_openai("gpt-4o", None, "q")
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")
    with pytest.raises(ValueError, match="AZURE_OPENAI_API_KEY"):
        run_utils.run_azure_openai("gpt-4o", None, "q", api_key=API_KEY)
    from resilient_llm.dropin.observe_original import LITELLM_ROUTE, observe

    leak = RuntimeError(f"bad key {API_KEY} and sk-proj-abcdefghijklmnop")
    with pytest.raises(RuntimeError) as raised, observe("run_chatopenai", LITELLM_ROUTE, MODEL):
        raise leak
    assert raised.value is leak
    first, second, third = call_lines(tmp_path / "calls.jsonl")
    assert (first["outcome"], first["route"], first["caller"]) == ("error", "azure_openai_original", "run_azure_openai")
    assert first["error"].startswith("ValueError: Azure OpenAI endpoint must be provided")
    assert second["error"] == "ValueError: AZURE_OPENAI_API_KEY environment variable is required"
    assert third["error"] == "RuntimeError: bad key <redacted> and sk-<redacted>"
    text = (tmp_path / "calls.jsonl").read_text()
    assert API_KEY not in text
    assert "abcdefghijklmnop" not in text


@pytest.mark.usefixtures("original_env")
def test_a_cancelled_await_is_logged_and_still_cancelled(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A caller's timeout cancels the LiteLLM await as before; the line says cancelled."""
    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", str(tmp_path / "calls.jsonl"))
    server.script("hang")

    async def impatient() -> str:
        return await asyncio.wait_for(run_utils.run_litellm_async(MODEL, "q slow"), 0.3)

    with pytest.raises(TimeoutError):
        asyncio.run(impatient())
    (line,) = call_lines(tmp_path / "calls.jsonl")
    assert line["outcome"] == "cancelled"
    assert line["failures"][0]["kind"] == "CancelledError"
