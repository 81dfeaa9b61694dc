"""The command line: stats on a fixture log, and the bench as a smoke run whose every call is accounted for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_llm.cli import main, stats

FIXTURE = Path(__file__).parent / "fixtures" / "mixed.log"


def test_stats_counts_known_lines_and_skips_the_rest() -> None:
    """Outcome mix, success rate, latency, attempts, tokens, cost, trips, judge share; bad lines counted."""
    report = stats.summarize([str(FIXTURE)])
    total = report["total"]
    assert total["calls"] == 6
    assert total["outcomes"] == {"ok": 2, "cached": 1, "fallback": 1, "neutral": 1, "error": 1}
    assert total["success_pct"] == pytest.approx(4 / 6 * 100)
    assert total["neutral_share"] == pytest.approx(1 / 6)
    assert total["latency_ms"] == {"p50": 50.0, "p95": 900.0, "p99": 900.0, "max": 900.0}
    assert total["attempts_max"] == 7
    assert (total["prompt_tokens"], total["completion_tokens"]) == (40, 20)
    assert total["cost"] == pytest.approx(0.003)
    assert report["breaker_trips"] == 1
    assert report["judge"]["neutral_share"] == 0.25
    assert report["skipped_lines"] == {"malformed": 3, "foreign": 1}
    groups = {(g["model"], g["route"]): g["calls"] for g in report["by_model_route"]}
    assert groups[("openai/gpt-4o-mini", "openrouter")] == 2
    assert groups[("anthropic/claude-3.5-haiku", "openrouter")] == 1


@pytest.mark.slow
def test_stats_windows_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--window groups by time; --json prints the report; --png writes a chart; text output never crashes."""
    png = tmp_path / "outcomes.png"
    assert main(["stats", str(FIXTURE), "--window", "60", "--json", "--png", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [w["calls"] for w in report["windows"]] == [3, 2, 1]
    assert png.read_bytes().startswith(b"\x89PNG")
    assert main(["stats", str(FIXTURE)]) == 0
    assert "skipped lines: 3 malformed, 1 foreign" in capsys.readouterr().out


def test_stats_on_a_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing log file is one line naming it and exit 1, not a traceback."""
    assert main(["stats", "/nonexistent/calls.jsonl"]) == 1
    assert "cannot read /nonexistent/calls.jsonl" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_quick_smoke_accounts_for_every_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The quick bench on one profile writes a result file in which every call is accounted for, and a call log per
    cell that ``stats --compare`` reads to the same counts."""
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    argv = ["bench", "--quick", "--profiles", "flaky", "--step-profiles", "none", "--calls", "24"]
    argv += ["--out", str(tmp_path), "--no-plots"]
    done = subprocess.run(
        [sys.executable, "-m", "resilient_llm.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    cells = report["cells"]
    assert {(c["client"], c["pattern"]) for c in cells} == {("litellm", "gather"), ("resilient_llm", "gather")}
    for cell in cells:
        assert cell["calls"] == 24
        assert cell["accounted"] is True
        assert cell["real_answers"] + cell["neutral"] + cell["exceptions"] == 24
        assert set(cell["latency_ms"]) == {"p50", "p95", "p99", "max"}
        assert cell["server"]["requests"] >= 24
    ours = next(c for c in cells if c["client"] == "resilient_llm")
    assert ours["exceptions"] == 0
    assert ours["retry_after_violations"] == 0
    assert "sk-" not in (tmp_path / "bench.json").read_text().replace("sk-bench-local-not-a-secret", "")
    litellm_log, ours_log = (Path(cell["calls_log"]) for cell in cells)
    assert litellm_log == tmp_path / "calls" / "flaky.litellm.gather.jsonl"
    assert main(["stats", "--compare", str(litellm_log), str(ours_log), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["a"]["routes"] == {"litellm_original": 24}
    everything = report["rows"][0]["metrics"]
    for side, cell in zip(("a", "b"), cells, strict=True):
        assert everything["ok"][side] == cell["real_answers"]
        assert everything["neutral"][side] == cell["neutral"]
        assert everything["error"][side] == cell["exceptions"]


def test_bench_rejects_unknown_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --profiles value names the accepted ones."""
    with pytest.raises(SystemExit, match="clean, flaky, ratelimit, outage"):
        main(["bench", "--profiles", "stormy", "--no-plots"])
