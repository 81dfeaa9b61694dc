"""resilient-llm doctor against the local server: all good, bad key, unknown model, unreachable, read-only cache."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilient_llm.cli.doctor import run_checks
from resilient_llm.testing.fault_server import FaultServer

KEY = "sk-or-v1-doctor-test-key"


@pytest.fixture
def keyed_server() -> Iterator[FaultServer]:
    with FaultServer("clean", api_key=KEY) as srv:
        yield srv


def environment(server_url: str, cache_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "USE_OPENROUTER_DIRECT": "true",
        "OPENAI_API_KEY": KEY,
        "OPENAI_API_BASE": server_url,
        "RUBRIC_JUDGE_MODEL": "openai/gpt-4o-mini",
        "RUBRIC_GENERATION_MODEL": "openai/gpt-4.1-mini",
        "CITATION_JUDGE_MODEL": "openai/gpt-4o-mini",
        "HLE_JUDGE_MODEL": "openai/gpt-4.1-mini",
        "RESILIENT_LLM_CACHE_DIR": str(cache_dir),
        **extra,
    }


def statuses(checks: list[object]) -> dict[str, str]:
    return {f"{c.name}:{c.detail.split('=')[0]}" if c.name == "model" else c.name: c.status for c in checks}  # type: ignore[attr-defined]


def test_everything_configured_passes(keyed_server: FaultServer, tmp_path: Path) -> None:
    """A good configuration: every check passes except the inactive LiteLLM fallback (a warning)."""
    checks = run_checks(environment(keyed_server.url, tmp_path / "cache"))
    assert statuses(checks) == {
        "switch": "PASS",
        "config": "PASS",
        "proxy": "PASS",
        "endpoint": "PASS",
        "model:RUBRIC_JUDGE_MODEL": "PASS",
        "model:RUBRIC_GENERATION_MODEL": "PASS",
        "model:CITATION_JUDGE_MODEL": "PASS",
        "model:HLE_JUDGE_MODEL": "PASS",
        "key": "PASS",
        "cache": "PASS",
        "fallback": "WARN",
    }


def test_bad_key_unknown_model_and_unreachable_endpoint_fail(keyed_server: FaultServer, tmp_path: Path) -> None:
    """Each problem is a FAIL line naming it."""
    bad_key = run_checks(environment(keyed_server.url, tmp_path / "c1", OPENAI_API_KEY="sk-or-v1-wrong"))
    assert statuses(bad_key)["key"] == "FAIL"
    unknown = run_checks(environment(keyed_server.url, tmp_path / "c2", RUBRIC_JUDGE_MODEL="openai/gpt-9"))
    assert statuses(unknown)["model:RUBRIC_JUDGE_MODEL"] == "FAIL"
    unreachable = run_checks(environment("http://127.0.0.1:9/api/v1", tmp_path / "c3"))
    assert statuses(unreachable)["endpoint"] == "FAIL"
    bad_config = run_checks(environment(keyed_server.url, tmp_path / "c4", OPENROUTER_MAX_CONCURRENT_CALLS="lots"))
    assert [c.status for c in bad_config] == ["PASS", "FAIL"]
    assert "OPENROUTER_MAX_CONCURRENT_CALLS" in bad_config[-1].detail


def test_read_only_cache_dir_fails(keyed_server: FaultServer, read_only_dir: Path) -> None:
    """A cache directory that cannot be written is a FAIL, not a surprise mid-run."""
    checks = run_checks(environment(keyed_server.url, read_only_dir))
    assert statuses(checks)["cache"] == "FAIL"


@pytest.mark.slow
def test_cli_exit_status_and_no_secret_in_output(keyed_server: FaultServer, tmp_path: Path) -> None:
    """Exit 0 when nothing failed, 1 otherwise; the key never printed."""
    env = dict(os.environ, **environment(keyed_server.url, tmp_path / "cache"))
    done = subprocess.run(
        [sys.executable, "-m", "resilient_llm.cli", "doctor"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
    assert "OPENAI_API_KEY = (set, 24 characters) [env]" in done.stdout
    assert KEY not in done.stdout + done.stderr
    env["OPENAI_API_KEY"] = "sk-or-v1-wrong"
    failed = subprocess.run(
        [sys.executable, "-m", "resilient_llm.cli", "doctor"], env=env, capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert "FAIL  key" in failed.stdout
