"""``stats`` and ``stats --compare`` on the corpus of broken logs in tests/fixtures/broken/: never a traceback; exit 0
with what was skipped said in one line, or one line of error and exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_llm.cli import main, stats

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = sorted((FIXTURES / "broken").iterdir())
GOOD = FIXTURES / "mixed.log"
# What each broken log must count: (calls read, malformed lines, unusable values).
EXPECTED = {
    "binary.log": (3, 8, 0),
    "deep_nesting.log": (1, 4, 0),
    "empty.log": (0, 0, 0),
    "huge_numbers.log": (5, 0, 14),
    "nonstrict_json.log": (4, 2, 8),
    "odd_outcomes.log": (12, 0, 0),
    "truncated.log": (2, 4, 0),
    "whitespace_only.log": (0, 0, 0),
    "wrong_types.log": (6, 10, 9),
    "year_one.log": (9, 0, 0),
}


def test_the_corpus_is_small_and_every_file_is_expected() -> None:
    """Each committed broken log has its expectation here, and the corpus stays small."""
    assert {path.name for path in BROKEN} == set(EXPECTED)
    assert sum(path.stat().st_size for path in BROKEN) < 64_000


def _finite_everywhere(value: object) -> bool:
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_everywhere(v) for v in value)
    return True


@pytest.mark.parametrize("log", BROKEN, ids=lambda p: p.name)
def test_stats_reads_each_broken_log(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Text, JSON, windows and a chart: exit 0, the counts expected, one skipped line, finite strict JSON."""
    calls, malformed, unusable = EXPECTED[log.name]
    png = tmp_path / "outcomes.png"
    assert main(["stats", str(log), "--window", "60", "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert png.read_bytes().startswith(b"\x89PNG")
    summary = [line for line in text.splitlines() if line.startswith("skipped lines:")]
    assert summary == [stats.skipped_line({"malformed": malformed, "foreign": summary_foreign(log)}, unusable)]
    assert main(["stats", str(log), "--json"]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)  # strict: no NaN or Infinity
    assert report["total"]["calls"] == calls
    assert report["skipped_lines"]["malformed"] == malformed
    assert report["unusable_values"] == unusable
    assert _finite_everywhere(report)


def summary_foreign(log: Path) -> int:
    return 1 if log.name == "wrong_types.log" else 0


@pytest.mark.parametrize("log", BROKEN, ids=lambda p: p.name)
def test_compare_reads_each_broken_log_on_either_side(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--compare with a broken log as A, then as B: exit 0, strict JSON, a latency chart."""
    for a, b in ((log, GOOD), (GOOD, log)):
        png = tmp_path / f"cdf-{a.name}.png"
        assert main(["stats", "--compare", str(a), str(b), "--png", str(png)]) == 0
        assert "skipped lines:" in capsys.readouterr().out
        assert png.read_bytes().startswith(b"\x89PNG")
        assert main(["stats", "--compare", str(a), str(b), "--json", "--judge-model", "openai/gpt-4o-mini"]) == 0
        report = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
        assert _finite_everywhere(report)
    side = report["b"]
    assert (side["calls"], side["skipped_lines"]["malformed"], side["unusable_values"]) == EXPECTED[log.name]


def test_the_whole_corpus_in_one_real_process(tmp_path: Path) -> None:
    """All broken logs at once through the installed command: exit 0, no traceback, no warning noise."""
    env = dict(os.environ, PYTHONWARNINGS="default")
    for argv in (
        ["stats", *map(str, BROKEN), "--window", "3600", "--png", str(tmp_path / "all.png")],
        ["stats", "--compare", str(FIXTURES / "broken" / "wrong_types.log"), str(FIXTURES / "broken" / "binary.log")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "resilient_llm.cli", *argv], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert "skipped lines:" in done.stdout


def test_odd_outcomes_are_counted_by_name_and_flagged_apart(capsys: pytest.CaptureFixture[str]) -> None:
    """Any outcome string is its own count (one named like a metric too); flagged is not neutral, nor a success."""
    report = stats.summarize([str(FIXTURES / "broken" / "odd_outcomes.log")])
    outcomes = report["total"]["outcomes"]
    assert (outcomes["flagged"], outcomes["neutral"], outcomes["calls"], outcomes["timeout_but_new"]) == (2, 1, 1, 1)
    assert outcomes["weird?thing"] == 1  # a control character is shown, not written to the terminal
    assert report["total"]["flagged_share"] == pytest.approx(2 / 12)
    assert report["total"]["success_pct"] == pytest.approx(100 * 3 / 12)
    assert main(["stats", "--compare", str(FIXTURES / "broken" / "odd_outcomes.log"), str(GOOD), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["metrics"]["outcome:calls"]["a"] == 1  # named like the calls metric, and kept apart from it
    assert row["metrics"]["calls"]["a"] == 12
    assert row["metrics"]["flagged"]["a"] == 2
    assert row["metrics"]["flagged_share"]["a"] == pytest.approx(2 / 12)


@pytest.mark.parametrize("where", ["under_a_file", "a_directory", "nul_byte"])
def test_an_unwritable_png_is_one_line_after_the_table(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--png where no file can be written: the table is printed, then one line naming the path, exit 1."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = {"under_a_file": str(blocker / "x.png"), "a_directory": str(tmp_path), "nul_byte": "chart\0.png"}[where]
    for argv in (["stats", str(GOOD)], ["stats", "--compare", str(GOOD), str(GOOD)]):
        assert main([*argv, "--png", path]) == 1
        captured = capsys.readouterr()
        assert "skipped" in captured.out
        assert len(captured.err.strip().splitlines()) == 1
        assert "cannot write the chart" in captured.err


def test_an_unreadable_log_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory or a missing file given as a log: one line naming it, exit 1, for stats and --compare."""
    for argv in (["stats", str(tmp_path)], ["stats", "--compare", str(GOOD), str(tmp_path / "missing.log")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert "cannot read" in err
