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


def entry(model: str, *parameters: str) -> dict[str, object]:
    """A model's entry as OpenRouter's GET /models lists it (the fields doctor reads)."""
    return {"id": model, "context_length": 128000, "supported_parameters": list(parameters)}


SAMPLING = ("temperature", "top_p", "max_tokens", "frequency_penalty", "presence_penalty")
REASONER = "deepseek/deepseek-r1"


def by_name(checks: list[object], name: str) -> list[object]:
    return [c for c in checks if c.name == name]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ({"data": {"limit": 50, "usage": 12.5, "limit_remaining": 37.5, "is_free_tier": False}}, {"key": "PASS"}),
        ({"data": {"limit": 10, "usage": 10.0, "limit_remaining": 0, "is_free_tier": False}}, {"credit": "FAIL"}),
        ({"data": {"limit": 10, "usage": 9.6, "is_free_tier": False}}, {"credit": "WARN"}),
        ({"data": {"limit": None, "usage": 0, "is_free_tier": True}}, {"key": "PASS", "free tier": "WARN"}),
        (
            {"data": {"limit": None, "usage": 3, "rate_limit": {"requests": 200, "interval": "10s"}}},
            {"key": "PASS", "rate limit": "PASS"},
        ),
        ({"data": {"limit": "lots", "usage": float("nan"), "is_free_tier": "no"}}, {"key": "PASS"}),
        ({"data": "who knows"}, {"key": "PASS"}),
    ],
)
def test_doctor_reads_the_key(
    key: dict[str, object], expected: dict[str, str], keyed_server: FaultServer, tmp_path: Path
) -> None:
    """GET /key: credit spent is a FAIL, little left or the free tier a WARN, the rate limit said; odd bodies pass."""
    keyed_server.key_body = key
    checks = run_checks(environment(keyed_server.url, tmp_path / "cache"))
    found = {c.name: c.status for c in checks if c.name in ("key", "credit", "free tier", "rate limit")}
    assert found == expected
    if "credit" in expected:
        assert "$10.00" in by_name(checks, "credit")[0].detail  # type: ignore[attr-defined]
    if "rate limit" in expected:
        assert by_name(checks, "rate limit")[0].detail == "200 requests per 10s"  # type: ignore[attr-defined]


def test_doctor_reads_each_models_entry(keyed_server: FaultServer, tmp_path: Path) -> None:
    """Parameters the trainer sends that a model lacks are a WARN (a FAIL when providers must support them); a
    reasoning model under the citation judge's 800 tokens is a WARN naming the fix, which then passes."""
    keyed_server.models_body = {
        "data": [
            entry("openai/gpt-4o-mini", *SAMPLING),
            entry("openai/gpt-4.1-mini", "temperature", "max_tokens"),
            entry(REASONER, *SAMPLING, "reasoning", "include_reasoning"),
        ]
    }
    env = environment(keyed_server.url, tmp_path / "cache", CITATION_JUDGE_MODEL=REASONER)
    checks = run_checks(env)
    parameters = {c.detail.split(":")[0]: c.status for c in by_name(checks, "parameters")}  # type: ignore[attr-defined]
    assert parameters == {
        "RUBRIC_JUDGE_MODEL": "PASS",
        "RUBRIC_GENERATION_MODEL": "WARN",
        "CITATION_JUDGE_MODEL": "PASS",
        "HLE_JUDGE_MODEL": "WARN",
    }
    (reasoning,) = by_name(checks, "reasoning")
    assert reasoning.status == "WARN"  # type: ignore[attr-defined]
    assert "CITATION_JUDGE_MODEL" in reasoning.detail  # type: ignore[attr-defined]
    assert "max_tokens 800" in reasoning.detail  # type: ignore[attr-defined]
    assert "RESILIENT_LLM_REASONING_MAX_TOKENS below 800" in reasoning.detail  # type: ignore[attr-defined]
    capped = run_checks(env | {"RESILIENT_LLM_REASONING_MAX_TOKENS": "400"})
    assert [c.status for c in by_name(capped, "reasoning")] == ["PASS"]  # type: ignore[attr-defined]
    strict = run_checks(env | {"RESILIENT_LLM_PROVIDER_REQUIRE_PARAMETERS": "true"})
    assert [c.status for c in by_name(strict, "parameters")].count("FAIL") == 2  # type: ignore[attr-defined]


def test_doctor_sends_litellm_vllm_names_to_a_vllm_server_without_the_prefix(
    keyed_server: FaultServer, tmp_path: Path
) -> None:
    """DR Tulu's hosted_vllm/<model> against a vLLM-style base URL: sent as <model>, found, and said so."""
    env = environment(keyed_server.url, tmp_path / "cache", RUBRIC_JUDGE_MODEL="hosted_vllm/openai/gpt-4o-mini")
    (judge,) = [c for c in run_checks(env) if c.name == "model" and "RUBRIC_JUDGE_MODEL" in c.detail]
    assert judge.status == "PASS"
    assert "(sent as openai/gpt-4o-mini)" in judge.detail


def test_cli_prints_the_key_and_reasoning_lines(keyed_server: FaultServer, tmp_path: Path) -> None:
    """The real command prints the credit FAIL and the reasoning WARN in plain lines, and exits 1."""
    keyed_server.key_body = {"data": {"limit": 5, "usage": 5, "limit_remaining": 0}}
    keyed_server.models_body = {"data": [entry(m, *SAMPLING) for m in ("openai/gpt-4o-mini", "openai/gpt-4.1-mini")]}
    keyed_server.models_body["data"].append(entry(REASONER, *SAMPLING, "include_reasoning"))
    env = dict(os.environ, **environment(keyed_server.url, tmp_path / "cache", CITATION_JUDGE_MODEL=REASONER))
    done = subprocess.run(
        [sys.executable, "-m", "resilient_llm.cli", "doctor"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "FAIL  credit         the key's credit limit $5.00 is spent" in done.stdout
    assert "WARN  reasoning      CITATION_JUDGE_MODEL: deepseek/deepseek-r1 is a reasoning model" in done.stdout
    assert "Traceback" not in done.stderr


def test_doctor_says_what_routing_is_pinned_and_whether_it_is_sent(keyed_server: FaultServer, tmp_path: Path) -> None:
    """Pinned routing is one line with the objects; on an endpoint other than OpenRouter, a WARN that it is not sent."""
    env = environment(keyed_server.url, tmp_path / "cache", RESILIENT_LLM_PROVIDER_ORDER="openai")
    (routing,) = by_name(run_checks(env), "routing")
    assert routing.status == "WARN"  # type: ignore[attr-defined]
    assert '{"provider":{"order":["openai"]}}' in routing.detail  # type: ignore[attr-defined]
    assert "not OpenRouter" in routing.detail  # type: ignore[attr-defined]
    assert not by_name(run_checks(environment(keyed_server.url, tmp_path / "cache")), "routing")
    bad = run_checks(env | {"RESILIENT_LLM_PROVIDER_SORT": "cheapest"})
    assert bad[-1].status == "FAIL"
    assert "RESILIENT_LLM_PROVIDER_SORT='cheapest'" in bad[-1].detail
