"""The step-time bench: LiteLLM's retries really run, the late token bucket refuses late, step cells repeat and are
compared with LiteLLM's wall time."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from resilient_llm.cli.bench_report import summarize
from resilient_llm.cli.bench_workload import LOCAL_KEY, MODEL, client_environment, is_real, make_call
from resilient_llm.testing.fault_server import FaultServer


def test_litellm_retries_isolated_faults_through_tenacity(tmp_path: Path) -> None:
    """LiteLLM as the bench calls it (num_retries=5) sends a call again after 500s and returns the real answer."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with FaultServer("clean", latency_s=0.0) as server:
        server.script("http_500", "http_502")
        with client_environment("litellm", server.url, LOCAL_KEY, tmp_path / "calls.jsonl"):
            call, _ = make_call("litellm", server.url, LOCAL_KEY)
            answer = asyncio.run(call("rubric 1"))
        stats = server.stats()
    assert is_real(answer, live=False)
    assert stats["requests"] == 3
    assert stats["faults"] == {"http_500": 1, "http_502": 1, "ok": 1}


async def _burst(url: str, requests: int) -> list[tuple[int, float]]:
    """(status, seconds) of ``requests`` distinct calls sent at once."""
    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=requests)) as http:

        async def one(i: int) -> tuple[int, float]:
            started = time.perf_counter()
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"burst {i}"}]}
            headers = {"Authorization": f"Bearer {LOCAL_KEY}"}
            response = await http.post(f"{url}/chat/completions", json=body, headers=headers, timeout=10)
            return response.status_code, time.perf_counter() - started

        return list(await asyncio.gather(*(one(i) for i in range(requests))))


def test_late_token_bucket_refuses_after_the_answer_latency() -> None:
    """throttle-late spends its burst of 50 tokens, then answers the rest with a 429 only after 40-60 ms."""
    with FaultServer("throttle-late") as server:
        outcomes = asyncio.run(_burst(server.url, 80))
        stats = server.stats()
    refused = [seconds for status, seconds in outcomes if status == 429]
    assert stats["rate_refusals"] == len(refused) >= 20
    assert min(refused) >= 0.04


def _row(client: str, wall: float, repeat: int, real: int = 10, pattern: str = "gather") -> dict[str, Any]:
    latency = {"p50": wall * 100, "p95": wall * 500, "p99": wall * 900, "max": wall * 1000}
    return {
        "scenario": "step",
        "profile": "flaky",
        "client": client,
        "pattern": pattern,
        "seed": 0,
        "repeat": repeat,
        "calls": 10,
        "concurrency": 32,
        "wall_s": wall,
        "throughput_per_s": 10 / wall,
        "latency_ms": latency,
        "real_answers": real,
        "neutral": 10 - real,
        "exceptions": 0,
        "server_requests_per_call": 1.0 + wall / 10,
        "retry_after_violations": 1 if client == "litellm" else 0,
        "client_cpu_ms_per_call": 1.0,
    }


def test_summary_spreads_repeats_and_divides_wall_time_by_litellms() -> None:
    """Repeats fold into one line: wall min/median/max, the worst run's counts, the slowest call, and resilient_llm's
    median wall time over LiteLLM's for the same workload, pattern and seed."""
    rows = [_row("litellm", 8.0, 0, real=9), _row("litellm", 12.0, 1, real=7), _row("resilient_llm", 2.0, 0)]
    rows += [_row("resilient_llm", 4.0, 1), _row("resilient_llm", 30.0, 0, pattern="trainer")]
    ours, theirs, lone = sorted(summarize(rows), key=lambda line: (line["pattern"], line["client"] != "resilient_llm"))
    assert (ours["client"], ours["runs"]) == ("resilient_llm", 2)
    assert ours["wall_s"] == {"min": 2.0, "median": 3.0, "max": 4.0}
    assert ours["wall_vs_litellm"] == 3.0 / 10.0
    assert ours["latency_ms"]["max"] == 4000.0
    assert theirs["real_answers_min"] == 7
    assert theirs["neutral_max"] == 3
    assert theirs["retry_after_violations"] == 2
    assert lone["pattern"] == "trainer"
    assert lone["wall_vs_litellm"] is None


def test_bench_step_cells_repeat_and_compare_with_litellm(tmp_path: Path) -> None:
    """The bench runs the step scenario for every client (bare httpx too), twice, and reports resilient_llm's wall
    time against LiteLLM's; every call of every run is accounted for."""
    argv = ["bench", "--quick", "--profiles", "clean", "--calls", "8", "--step-calls", "24", "--repeats", "2"]
    argv += ["--clients", "litellm,resilient_llm,httpx", "--out", str(tmp_path), "--no-plots"]
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    done = subprocess.run([sys.executable, "-m", "resilient_llm.cli", *argv], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    step_runs = [c for c in report["cells"] if c["scenario"] == "step"]
    assert sorted((c["client"], c["repeat"]) for c in step_runs) == [
        (client, repeat) for client in ("httpx", "litellm", "resilient_llm") for repeat in (0, 1)
    ]
    assert all(c["accounted"] and c["calls"] == 24 and c["server"]["requests"] >= 24 for c in step_runs)
    lines = {(s["scenario"], s["client"]): s for s in report["summary"]}
    ours = lines["step", "resilient_llm"]
    assert ours["runs"] == 2
    assert ours["wall_s"]["min"] <= ours["wall_s"]["median"] <= ours["wall_s"]["max"]
    assert ours["wall_vs_litellm"] > 0
    assert ours["retry_after_violations"] == 0
    assert lines["clean", "resilient_llm"]["runs"] == 2  # an explicit --repeats holds for every cell
    assert "| step flaky 24x32 | resilient_llm | gather | 2 |" in (tmp_path / "bench.md").read_text()
