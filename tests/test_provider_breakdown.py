"""The provider that answered: in every llm_call line, and ``stats`` / ``--compare`` by provider so judge provider
drift between two runs shows."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from resilient_llm import Engine, logs
from resilient_llm.cli import main, stats
from resilient_llm.errors import CallFailed, ErrorResponse, FailedAttempt
from resilient_llm.layers.observe import ObserveHandler
from resilient_llm.logs import LogConfig, LogSink, make_logger
from resilient_llm.types import ChatRequest, ChatResult, Outcome
from tests.conftest import MODEL, call_lines

FIXTURES = Path(__file__).parent / "fixtures"
A, B = FIXTURES / "providers_a.log", FIXTURES / "providers_b.log"


class _Answers:
    """A fake inner handler: answers as the given provider, or fails the call."""

    def __init__(self, provider: str | None, fail: bool = False) -> None:
        self.provider = provider
        self.fail = fail

    async def handle(self, request: ChatRequest) -> ChatResult:
        if self.fail:
            error = ErrorResponse("no provider", kind="http_503", status=503)
            raise CallFailed("failed", [FailedAttempt.of(error)], error)
        return ChatResult(text="{}", outcome=Outcome.OK, model=request.model, provider=self.provider)


def test_every_call_line_names_the_provider_or_null(tmp_path: Path) -> None:
    """An answered call's line carries the provider that answered; a failed call's line carries provider null."""
    import asyncio

    path = tmp_path / "calls.jsonl"
    sink = LogSink(str(path))
    logger = make_logger(LogConfig(file=str(path)), sink)
    request = ChatRequest(model=MODEL, messages=({"role": "user", "content": "x"},))
    asyncio.run(ObserveHandler(_Answers("Azure"), logger).handle(request))
    with pytest.raises(CallFailed):
        asyncio.run(ObserveHandler(_Answers(None, fail=True), logger).handle(request))
    sink.close()
    lines = call_lines(path)
    assert [(line["outcome"], line["provider"]) for line in lines] == [("ok", "Azure"), ("error", None)]


def test_engine_call_lines_carry_the_provider_field(make_engine: Callable[..., Engine], log_path: Path) -> None:
    """Through the whole stack on the real wire, each llm_call line has the provider key (null when not said)."""
    engine = make_engine()
    engine.complete(MODEL, user="judge this")
    logs.flush()
    (line,) = call_lines(log_path)
    assert "provider" in line


def test_stats_breaks_results_down_by_model_and_provider(capsys: pytest.CaptureFixture[str]) -> None:
    """Per model, each provider's calls, share of the model's calls, success rate and latency."""
    report = stats.summarize([str(B)])
    rows = {(r["model"], r["provider"]): r for r in report["by_provider"]}
    azure, openai = rows[(MODEL, "Azure")], rows[(MODEL, "OpenAI")]
    assert (azure["calls"], openai["calls"]) == (8, 2)
    assert azure["model_share"] == pytest.approx(8 / 11)
    assert azure["latency_ms"]["p50"] == 900.0
    assert rows[(MODEL, "-")]["outcomes"] == {"flagged": 1}  # nothing answered it: no provider
    assert main(["stats", str(B)]) == 0
    text = capsys.readouterr().out
    assert "by the provider that answered" in text
    assert "openai/gpt-4o-mini from Azure (72.7%)" in text


def test_compare_shows_judge_provider_drift() -> None:
    """The same judge answered by OpenAI in A and mostly by Azure in B: both providers listed with each side's share,
    success and latency; flagged counted apart from neutral."""
    done = subprocess.run(
        [sys.executable, "-m", "resilient_llm.cli", "stats", "--compare", str(A), str(B), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    drift = {(p["model"], p["provider"]): p for p in report["providers"]}
    assert drift[(MODEL, "Azure")]["a"] is None
    assert drift[(MODEL, "Azure")]["b"]["model_share"] == pytest.approx(8 / 11)
    assert drift[(MODEL, "Azure")]["b"]["p50_ms"] == 900.0
    assert drift[(MODEL, "OpenAI")]["a"]["model_share"] == pytest.approx(10 / 11)
    assert drift[(MODEL, "OpenAI")]["a"]["success_pct"] == 100.0
    everything = report["rows"][0]["metrics"]
    assert everything["flagged"] == {"a": 0, "b": 1, "ratio": None}
    assert everything["neutral"]["b"] == 0
    text = subprocess.run(
        [sys.executable, "-m", "resilient_llm.cli", "stats", "--compare", str(A), str(B)],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "openai/gpt-4o-mini from Azure: A none, B 8 calls (72.7%), 100.0% ok, p50 900" in text
    assert "flagged share" in text


def test_a_cached_answer_keeps_the_provider_that_gave_it() -> None:
    """The cache stores who answered, so a replayed judge answer is still attributed; older entries read as unknown,
    and a provider that is not text makes the entry unreadable (dropped), like any other bad field."""
    from resilient_llm.errors import MalformedResponse
    from resilient_llm.policy.cache import decode_answer, encode_answer

    answer = ChatResult(text="{}", outcome=Outcome.OK, model=MODEL, provider="Azure")
    assert decode_answer(encode_answer(answer), "cache:disk").provider == "Azure"
    older = json.loads(encode_answer(answer))
    del older["provider"]
    assert decode_answer(json.dumps(older).encode(), "cache:disk").provider is None
    with pytest.raises(MalformedResponse):
        decode_answer(json.dumps(older | {"provider": 7}).encode(), "cache:disk")
