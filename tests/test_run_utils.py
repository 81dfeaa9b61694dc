"""The trainer's drop-in: both paths, the trainer's event-loop pattern, fork, exit."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import resilient_llm
from open_instruct.search_rewards.utils import run_utils
from open_instruct.search_rewards.utils.openrouter_replacement import call_openrouter, call_openrouter_async
from resilient_llm import process
from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.testing.remote import RemoteFaultServer
from tests.conftest import API_KEY, MODEL, call_lines, read_log

pytestmark = pytest.mark.usefixtures("direct_env")


def run_trainer_batches(
    batches: int, rollouts: int, calls_per_rollout: int, workers: int = 4
) -> tuple[list[str], list[BaseException]]:
    """The trainer's pattern: a data thread runs asyncio.run per batch; each rollout is scored on a pool worker
    with its own asyncio.run; sync calls run from another thread at the same time."""
    answers: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def score_rollout(batch: int, rollout: int) -> list[str]:
        async def judge() -> list[str]:
            prompts = [f"b{batch} r{rollout} rubric {i}" for i in range(calls_per_rollout)]
            return await asyncio.gather(*(run_utils.run_litellm_async(MODEL, p, "judge") for p in prompts))

        return asyncio.run(judge())

    async def batch_reward(batch: int) -> list[list[str]]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(workers) as pool:
            return await asyncio.gather(*(loop.run_in_executor(pool, score_rollout, batch, r) for r in range(rollouts)))

    def data_thread() -> None:
        for batch in range(batches):
            try:
                for rollout_answers in asyncio.run(batch_reward(batch)):
                    with lock:
                        answers.extend(rollout_answers)
            except BaseException as exc:
                errors.append(exc)

    def sync_caller() -> None:
        for i in range(10):
            try:
                text = run_utils.run_litellm(MODEL, f"citation claim {i}")
                with lock:
                    answers.append(text)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=data_thread), threading.Thread(target=sync_caller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers, errors


def test_direct_path_answers_sync_and_async(server: FaultServer, log_path: Path) -> None:
    """USE_OPENROUTER_DIRECT=true sends both helpers through the engine with the trainer's defaults."""
    assert run_utils.run_litellm(MODEL, "q", "sys").startswith('{"score"')
    assert asyncio.run(run_utils.run_litellm_async(MODEL, messages=[{"role": "user", "content": "m"}]))
    assert [line["outcome"] for line in call_lines(log_path)] == ["ok", "ok"]


@pytest.mark.slow
def test_trainer_pattern_on_a_flaky_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh loops per rollout on many threads, plus sync calls, on ~30% faults: no exception, real answers."""
    with RemoteFaultServer("flaky", seed=3, retry_after_s=0.2, hang_s=5.0) as flaky:  # apart, as the endpoint is
        monkeypatch.setenv("OPENAI_API_BASE", flaky.url)
        monkeypatch.setenv("LITELLM_DEFAULT_TIMEOUT", "1")
        answers, errors = run_trainer_batches(batches=2, rollouts=8, calls_per_rollout=8)
        stats = flaky.stats()
    assert errors == []
    assert len(answers) == 2 * 8 * 8 + 10
    assert sum(1 for a in answers if a.startswith('{"score"')) >= 0.99 * len(answers)
    assert stats["peak_in_flight"] <= 20
    assert stats["retry_after_violations"] == 0
    assert stats["connections"] < stats["requests"] / 2  # keep-alive survives the loops coming and going
    assert sum(stats["faults"].values()) - stats["faults"].get("ok", 0) > 0.15 * stats["requests"]


def test_nothing_answers_means_empty_string_never_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the endpoint unreachable both helpers return "" (the neutral text) instead of raising."""
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/api/v1")
    monkeypatch.setenv("RESILIENT_LLM_NUM_RETRIES", "1")
    assert run_utils.run_litellm(MODEL, "q") == ""
    assert asyncio.run(run_utils.run_litellm_async(MODEL, "q")) == ""
    assert call_openrouter(MODEL, "q", num_retries=0) == ""


def test_bad_flag_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A USE_OPENROUTER_DIRECT that is not true/false stops the call with the variable named."""
    monkeypatch.setenv("USE_OPENROUTER_DIRECT", "yes please")
    with pytest.raises(resilient_llm.ConfigError, match=r"USE_OPENROUTER_DIRECT='yes please'.*true or false"):
        run_utils.run_litellm(MODEL, "q")


def test_bad_configuration_stops_the_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration errors are not swallowed into "" answers: the first call raises them."""
    monkeypatch.setenv("OPENROUTER_MAX_CONCURRENT_CALLS", "zero")
    resilient_llm.shutdown()
    with pytest.raises(resilient_llm.ConfigError, match="OPENROUTER_MAX_CONCURRENT_CALLS"):
        asyncio.run(run_utils.run_litellm_async(MODEL, "q"))


def test_litellm_only_kwargs_are_not_sent_and_the_rest_pass_through(server: FaultServer, log_path: Path) -> None:
    """fallbacks/api_key stay behind; response_format reaches the provider; num_retries and timeout apply."""
    server.script("http_503", "http_503")
    text = asyncio.run(
        call_openrouter_async(
            MODEL, "q", num_retries=1, timeout=1.0, fallbacks=["x"], response_format={"type": "json_object"}
        )
    )
    assert text == ""
    (line,) = call_lines(log_path)
    assert (line["outcome"], line["attempts"]) == ("neutral", 2)


def _child_call(queue: multiprocessing.Queue[str]) -> None:
    queue.put(run_utils.run_litellm(MODEL, "from the child"))


def test_fork_builds_a_fresh_engine_in_the_child(server: FaultServer) -> None:
    """After os.fork() the child gets its own engine and answers; the parent's keeps working."""
    assert run_utils.run_litellm(MODEL, "parent before")
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_child_call, args=(queue,))
    child.start()
    child_answer = queue.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0
    assert child_answer.startswith('{"score"')
    assert run_utils.run_litellm(MODEL, "parent after").startswith('{"score"')


@pytest.mark.slow
def test_interpreter_exits_cleanly_without_shutdown(server: FaultServer, tmp_path: Path) -> None:
    """A script that never calls shutdown() exits 0 promptly, with nothing on stderr."""
    script = (
        "import asyncio\n"
        "from open_instruct.search_rewards.utils.run_utils import run_litellm, run_litellm_async\n"
        f"print(run_litellm({MODEL!r}, 'q'))\n"
        f"print(asyncio.run(run_litellm_async({MODEL!r}, 'q')))\n"
    )
    env = dict(os.environ, RESILIENT_LLM_LOG_FILE=str(tmp_path / "child.jsonl"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.count('{"score"') == 2


def test_flag_off_runs_litellm_unchanged(server: FaultServer, monkeypatch: pytest.MonkeyPatch, log_path: Path) -> None:
    """USE_OPENROUTER_DIRECT=false calls LiteLLM (against the local server) and our engine is never built; with
    RESILIENT_LLM_LOG_FILE set, each call adds its llm_call line and nothing else."""
    monkeypatch.setenv("USE_OPENROUTER_DIRECT", "false")
    resilient_llm.shutdown()
    assert run_utils.run_litellm(MODEL, "q", "sys").startswith('{"score"')
    assert asyncio.run(run_utils.run_litellm_async(MODEL, "q")).startswith('{"score"')
    assert server.stats()["requests"] == 2
    assert process._default is None
    assert [(line["event"], line["route"], line["outcome"]) for line in read_log(log_path)] == [
        ("llm_call", "litellm_original", "ok")
    ] * 2


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 2}', {"score": 2}),
        ('Sure! ```json\n{"score": 1}\n```', {"score": 1}),
        ('{{"score": 2}}', {"score": 2}),
        ('{"score": 2,}', {"score": 2}),
        ('note {not json} then {"score": 0}', {"score": 0}),
        ("no json here", None),
        ("{ unbalanced", None),
        ("", None),
    ],
)
def test_extract_json_from_response(reply: str, expected: dict[str, int] | None) -> None:
    """The first parseable object wins; fences, doubled braces and trailing commas are tolerated."""
    assert run_utils.extract_json_from_response(reply) == expected


def test_key_is_not_in_the_log(server: FaultServer, log_path: Path) -> None:
    """The drop-in's logs carry no key."""
    server.script("http_401")
    run_utils.run_litellm(MODEL, "q")
    assert API_KEY not in log_path.read_text()
