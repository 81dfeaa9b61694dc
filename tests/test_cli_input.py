"""The tools on bad arguments and odd input: a clear message and exit status, never a traceback or NaN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_llm.cli import main

ODD_LOG = "\n".join(
    [
        '{"event": "llm_call", "logger_name": "resilient_llm", "outcome": "ok", "model": "m", "latency_ms": NaN,'
        ' "cost": Infinity, "prompt_tokens": NaN, "completion_tokens": -Infinity, "attempts": 1,'
        ' "timestamp": "2026-01-01T00:00:00Z"}',
        '{"event": "llm_call", "logger_name": "resilient_llm", "outcome": "ok", "model": "m", "latency_ms": 12,'
        ' "cost": 0.5, "prompt_tokens": 3, "attempts": 2, "timestamp": "2026-01-01T00:00:01Z"}',
    ]
)


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient_llm.cli", *argv], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
@pytest.mark.parametrize("window", ["nan", "inf", "-inf", "0", "-5", "1e-300", "1e300", "soon"])
def test_stats_refuses_a_window_that_is_not_a_usable_number_of_seconds(window: str, tmp_path: Path) -> None:
    """--window nan / inf / 0 / absurd sizes: a usage error naming --window (exit 2), no traceback."""
    log = tmp_path / "calls.jsonl"
    log.write_text(ODD_LOG)
    done = run_cli("stats", str(log), "--window", window)
    assert done.returncode == 2
    assert "--window" in done.stderr
    assert "Traceback" not in done.stderr


def test_stats_json_is_strict_json_whatever_the_log_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NaN and infinities in a log line are skipped as numbers: --json prints strict JSON (no NaN), text works."""
    log = tmp_path / "calls.jsonl"
    log.write_text(ODD_LOG)
    assert main(["stats", str(log), "--json", "--window", "60"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in --json output"))
    assert report["total"]["calls"] == 2
    assert report["total"]["latency_ms"]["max"] == 12.0
    assert (report["total"]["cost"], report["total"]["prompt_tokens"]) == (0.5, 3)
    assert main(["stats", str(log)]) == 0


@pytest.mark.slow
def test_stats_png_into_a_missing_folder_makes_it(tmp_path: Path) -> None:
    """--png into a folder that does not exist yet: the folder is made and the chart written."""
    log = tmp_path / "calls.jsonl"
    log.write_text(ODD_LOG)
    png = tmp_path / "new" / "charts" / "outcomes.png"
    done = run_cli("stats", str(log), "--png", str(png))
    assert done.returncode == 0, done.stderr
    assert png.read_bytes().startswith(b"\x89PNG")


def test_stats_png_where_no_file_can_go_is_a_clear_error(tmp_path: Path) -> None:
    """--png under a regular file (no folder can be made there): the table still printed, then one line naming the
    path and exit 1, no traceback."""
    log = tmp_path / "calls.jsonl"
    log.write_text(ODD_LOG)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_cli("stats", str(log), "--png", str(blocker / "outcomes.png"))
    assert done.returncode == 1
    assert "skipped lines: 0 malformed" in done.stdout
    assert str(blocker) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_doctor_prints_a_non_ascii_title_on_any_terminal(encoding: str, tmp_path: Path) -> None:
    """A title the terminal cannot encode is refused as configuration and shown escaped, not a UnicodeEncodeError."""
    env = {
        "OPENAI_API_KEY": "sk-or-v1-doctor",
        "OPENAI_API_BASE": "http://127.0.0.1:9/v1",
        "RESILIENT_LLM_APP_TITLE": "Tülu 图",
        "RESILIENT_LLM_CACHE_DIR": str(tmp_path),
        "PYTHONIOENCODING": encoding,
    }
    done = subprocess.run(
        [sys.executable, "-m", "resilient_llm.cli", "doctor"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        encoding=encoding,
        errors="replace",
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr
    assert "FAIL  config         RESILIENT_LLM_APP_TITLE=" in done.stdout
    assert done.returncode == 1


@pytest.mark.parametrize(
    "models",
    [
        {"data": ["openai/gpt-4o-mini", 1, None, ["x"]]},
        {"data": [{"id": ["unhashable"]}, {"id": {"a": 1}}, {"name": "no id"}]},
        {"data": "openai/gpt-4o-mini"},
        ["openai/gpt-4o-mini"],
        "just text",
    ],
)
def test_doctor_survives_a_models_list_of_odd_shapes(models: object, tmp_path: Path) -> None:
    """/models answering non-objects, unhashable ids or no list at all: the model checks fail, doctor finishes."""
    from resilient_llm.cli.doctor import run_checks
    from resilient_llm.testing.fault_server import FaultServer

    with FaultServer("clean") as server:
        server.models_body = models
        env = {
            "OPENAI_API_KEY": "sk-or-v1-doctor",
            "OPENAI_API_BASE": server.url,
            "RUBRIC_JUDGE_MODEL": "openai/gpt-4o-mini",
            "RESILIENT_LLM_CACHE_DIR": str(tmp_path),
        }
        checks = run_checks(env)
    judge = [c for c in checks if c.name == "model" and "RUBRIC_JUDGE_MODEL" in c.detail]
    assert [c.status for c in judge] == ["FAIL"]
    assert [c.name for c in checks][-2:] == ["cache", "fallback"]
