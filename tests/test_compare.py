"""``stats --compare``: the same workload through the original LiteLLM path and the direct path, each logged, and
the comparison reports what the callers saw; plus the comparison's own rules on hand-written logs."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Any

import pytest

import resilient_llm
from open_instruct.search_rewards.utils import run_utils
from resilient_llm.cli import compare, main
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL, read_log

pytestmark = pytest.mark.usefixtures("direct_env")

SYNC_CALLS = 8


def workload(flag: str, log: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[collections.Counter[str], int]:
    """40 judge calls at once through run_litellm_async, then 8 run_chatopenai calls (the first one scripted to a
    400, the second to no choices) on a fresh flaky server; what the callers saw, and the server's request count."""
    resilient_llm.shutdown()
    monkeypatch.setenv("USE_OPENROUTER_DIRECT", flag)
    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", str(log))
    monkeypatch.setenv("LITELLM_DEFAULT_TIMEOUT", "1")
    seen: collections.Counter[str] = collections.Counter()

    def tally(text: str) -> None:
        seen["answer" if text.startswith('{"score"') else "empty"] += 1
        assert text in ("", "None") or text.startswith('{"score"')

    with FaultServer("flaky", seed=2, retry_after_s=0.2, hang_s=5.0) as flaky:
        monkeypatch.setenv("OPENAI_API_BASE", flaky.url)

        async def judge() -> list[str]:
            return await asyncio.gather(
                *(run_utils.run_litellm_async(MODEL, f"rubric {i}", "judge") for i in range(40))
            )

        for text in asyncio.run(judge()):
            tally(text)
        flaky.script("http_400", "empty_choices")
        for i in range(SYNC_CALLS):
            try:
                tally(run_utils.run_chatopenai(MODEL, "judge", f"claim {i}", timeout=1))
            except Exception as exc:
                seen[f"raised {type(exc).__name__}"] += 1
        requests = flaky.stats()["requests"]
    resilient_llm.shutdown()
    return seen, requests


@pytest.mark.slow
def test_compare_reports_what_the_callers_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flag off (LiteLLM) vs flag on, both logged: calls, answers, "" returns and exceptions per side match the
    callers' own count, the exception types match the error lines, requests per call match the server."""
    a_log, b_log, png = tmp_path / "litellm.jsonl", tmp_path / "direct.jsonl", tmp_path / "cdf.png"
    a_seen, _ = workload("false", a_log, monkeypatch)
    b_seen, b_requests = workload("true", b_log, monkeypatch)
    assert a_seen["empty"] > 0  # LiteLLM lost some calls to the faults
    assert any(k.startswith("raised") for k in a_seen)  # and raised into run_chatopenai's caller
    capsys.readouterr()  # LiteLLM's own prints
    assert main(["stats", "--compare", str(a_log), str(b_log), "--json", "--png", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    everything = report["rows"][0]["metrics"]
    for side, seen in (("a", a_seen), ("b", b_seen)):
        raised = sum(n for k, n in seen.items() if k.startswith("raised"))
        assert everything["calls"][side] == 40 + SYNC_CALLS
        assert everything["ok"][side] == seen["answer"]
        assert everything["neutral"][side] == seen["empty"]
        assert everything["error"][side] == raised
        assert everything["success_pct"][side] == pytest.approx(100.0 * seen["answer"] / (40 + SYNC_CALLS))
        assert everything["p50_ms"][side] > 0
        assert everything["tokens_per_call"][side] > 0
        assert everything["cost_per_call"][side] > 0
    errors = collections.Counter(
        "raised " + line["error"].split(":")[0] for line in read_log(a_log) if line.get("outcome") == "error"
    )
    assert errors == {k: n for k, n in a_seen.items() if k.startswith("raised")}
    assert report["a"]["routes"] == {"litellm_original": 40 + SYNC_CALLS}
    assert everything["requests_per_call"]["a"] is None  # LiteLLM does not say
    assert everything["requests_per_call"]["b"] * (40 + SYNC_CALLS) == pytest.approx(b_requests)
    assert everything["ok"]["ratio"] == pytest.approx(b_seen["answer"] / a_seen["answer"])
    assert [row["model"] for row in report["rows"]] == ["all", MODEL]
    assert png.read_bytes().startswith(b"\x89PNG")


def write_log(path: Path, lines: list[Any]) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def call(model: str, outcome: str, latency_ms: float, **more: Any) -> dict[str, Any]:
    return {"event": "llm_call", "logger_name": "resilient_llm", "model": model, "outcome": outcome, **more} | {
        "latency_ms": latency_ms
    }


def test_models_pair_by_bare_name_and_ratios_are_b_over_a(tmp_path: Path) -> None:
    """A bare model name meets its provider-prefixed twin; ratios are B/A; unknowns and zero denominators are None;
    the judge model's neutral share is reported per side; bad lines are counted."""
    a = write_log(
        tmp_path / "a.jsonl",
        [
            call("gpt-4.1-mini", "ok", 100, cost=0.002, prompt_tokens=10, completion_tokens=2),
            call("gpt-4.1-mini", "neutral", 300),
            call("other/model", "ok", 50),
            "not json",
            {"event": "something else", "logger_name": "someone"},
        ],
    )
    b = write_log(
        tmp_path / "b.jsonl",
        [
            call("openai/gpt-4.1-mini", "ok", 50, attempts=1, cost=0.001, prompt_tokens=10, completion_tokens=2),
            call("openai/gpt-4.1-mini", "ok", 100, attempts=3, cost=0.001, prompt_tokens=10, completion_tokens=2),
            {"event": "judge_neutral_text", "logger_name": "resilient_llm"},
        ],
    )
    report = compare.compare(compare.read_side(a), compare.read_side(b), judge_model="gpt-4.1-mini")
    rows = {row["model"]: row["metrics"] for row in report["rows"]}
    assert set(rows) == {"all", "gpt-4.1-mini | openai/gpt-4.1-mini", "other/model"}
    judge = rows["gpt-4.1-mini | openai/gpt-4.1-mini"]
    assert judge["success_pct"] == {"a": 50.0, "b": 100.0, "ratio": 2.0}
    assert judge["p50_ms"] == {"a": 100, "b": 50, "ratio": 0.5}
    assert judge["requests_per_call"] == {"a": None, "b": 2.0, "ratio": None}
    assert judge["cost_per_call"] == {"a": 0.001, "b": 0.001, "ratio": 1.0}
    assert judge["tokens_per_call"]["a"] == 6.0
    assert judge["neutral"] == {"a": 1, "b": 0, "ratio": 0.0}
    assert rows["other/model"]["calls"] == {"a": 1, "b": 0, "ratio": 0.0}
    assert rows["other/model"]["success_pct"]["b"] is None
    assert report["judge"] == {"model": "gpt-4.1-mini", "a": 0.5, "b": 0.0, "ratio": 0.0}
    assert report["a"]["skipped_lines"] == {"malformed": 1, "foreign": 1}
    assert report["b"]["judge_neutral_texts"] == 1
    assert "gpt-4.1-mini | openai/gpt-4.1-mini" in compare.render_text(report)


def test_bad_input_is_reported_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file exits 1 naming it; an empty or foreign log compares as zero calls with a hint; misuse exits 2."""
    empty = write_log(tmp_path / "empty.jsonl", [])
    foreign = write_log(tmp_path / "foreign.log", ["plain text", "{}"])
    assert main(["stats", "--compare", empty, str(tmp_path / "missing.jsonl")]) == 1
    assert f"cannot read {tmp_path / 'missing.jsonl'}" in capsys.readouterr().err
    assert main(["stats", "--compare", empty, foreign]) == 0
    out = capsys.readouterr().out
    assert "A has no llm_call lines" in out
    assert "1 malformed, 1 foreign" in out
    assert main(["stats", "--compare", empty, foreign, empty]) == 2
    assert main(["stats"]) == 2
    assert "--compare" in capsys.readouterr().err
