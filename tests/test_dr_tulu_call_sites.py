"""A replica of DR Tulu's call sites (written from their described behaviour), driven in the trainer's pattern
through our drop-in run_utils against the fault server: flaky endpoint, then a dead one."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from open_instruct.search_rewards.utils import run_utils
from resilient_llm.testing.remote import RemoteFaultServer
from tests.conftest import read_log

JUDGE_MODEL = "openai/gpt-4o-mini"
GENERATION_MODEL = "openai/gpt-4.1-mini"
CITATION_MODEL = "anthropic/claude-3.5-haiku"
JUDGE_TEMPLATE = 'Question: {q}\nResponse: {r}\nProperty: {p}\nReturn {{"score": x}} with x in 0, 1, 2.'

pytestmark = pytest.mark.usefixtures("direct_env")


async def score_property(response: str, question: str, prop: str, score_scale: float = 2.0) -> float:
    """The trainer's judge: {"score": x} on 0-2, divided by 2; 0.0 when the reply has no score."""
    reply = await run_utils.run_litellm_async(
        JUDGE_MODEL, JUDGE_TEMPLATE.format(q=question, r=response, p=prop), "You are a grader."
    )
    parsed = run_utils.extract_json_from_response(reply)
    try:
        return float(parsed["score"]) / score_scale  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return 0.0


async def generate_rubrics(question: str) -> tuple[list[str], list[str]]:
    """The adaptive-rubric generator: expects {"positive_rubrics": [...], "negative_rubrics": [...]}."""
    reply = await run_utils.run_litellm_async(
        GENERATION_MODEL, f"Write positive_rubrics and negative_rubrics: {question}"
    )
    parsed = run_utils.extract_json_from_response(reply) or {}
    return list(parsed.get("positive_rubrics", [])), list(parsed.get("negative_rubrics", []))


def judge_citations(claims: list[str]) -> list[bool]:
    """The citation judge: one sync run_litellm per claim."""
    return [bool(run_utils.run_litellm(CITATION_MODEL, f"Is this claim supported? {c}")) for c in claims]


def run_training(batches: int, rollouts: int, rubrics: int) -> tuple[list[float], list[int], list[BaseException]]:
    scores: list[float] = []
    rubric_counts: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def rollout(batch: int, index: int) -> None:
        async def score() -> tuple[list[float], int]:
            positive, negative = await generate_rubrics(f"question {batch}.{index}")
            results = await asyncio.gather(
                *(score_property(f"response {batch}.{index}", "q", f"rubric {k}") for k in range(rubrics))
            )
            return list(results), len(positive) + len(negative)

        judged, count = asyncio.run(score())  # a brand-new event loop per rollout, on a pool thread
        judge_citations([f"claim {batch}.{index}.{c}" for c in range(2)])
        with lock:
            scores.extend(judged)
            rubric_counts.append(count)

    async def batch_reward(batch: int) -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(8) as pool:
            await asyncio.gather(*(loop.run_in_executor(pool, rollout, batch, i) for i in range(rollouts)))

    def data_thread() -> None:
        for batch in range(batches):
            try:
                asyncio.run(batch_reward(batch))
            except BaseException as exc:
                errors.append(exc)

    thread = threading.Thread(target=data_thread)
    thread.start()
    thread.join()
    return scores, rubric_counts, errors


@pytest.mark.slow
def test_replica_on_a_flaky_endpoint(monkeypatch: pytest.MonkeyPatch, log_path: Path) -> None:
    """16 rollouts x 8 rubrics x 4 batches on ~30% faults: no exception, real scores, rubrics generated."""
    # in its own process, as the endpoint is: an in-process server shares our GIL, and its lag would read two
    # requests sent apart as sent together
    with RemoteFaultServer("flaky", seed=5, retry_after_s=0.05, hang_s=5.0) as flaky:
        monkeypatch.setenv("OPENAI_API_BASE", flaky.url)
        monkeypatch.setenv("LITELLM_DEFAULT_TIMEOUT", "1")
        scores, rubric_counts, errors = run_training(batches=4, rollouts=16, rubrics=8)
        stats = flaky.stats()
    assert errors == []
    assert len(scores) == 4 * 16 * 8
    assert set(scores) <= {0.0, 0.5, 1.0}
    assert rubric_counts == [2] * 64
    assert stats["peak_in_flight"] <= 20
    assert stats["retry_after_violations"] == 0
    outcomes = [e["outcome"] for e in read_log(log_path) if e["event"] == "llm_call"]
    assert len(outcomes) == 4 * 16 * (8 + 1 + 2)
    assert outcomes.count("ok") >= 0.99 * len(outcomes)


def test_replica_with_the_endpoint_down_scores_neutral(monkeypatch: pytest.MonkeyPatch, log_path: Path) -> None:
    """Endpoint down for good, fail-fast outages, judge neutral text: every score is 0.5, nothing crashes, logged."""
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/api/v1")
    monkeypatch.setenv("RESILIENT_LLM_OUTAGE_WAIT", "0")  # by default calls would wait 120 s for it to come back
    monkeypatch.setenv("RUBRIC_JUDGE_MODEL", JUDGE_MODEL)
    monkeypatch.setenv("RUBRIC_GENERATION_MODEL", GENERATION_MODEL)
    monkeypatch.setenv("RESILIENT_LLM_JUDGE_NEUTRAL_TEXT", '{"score": 1}')
    scores, rubric_counts, errors = run_training(batches=2, rollouts=4, rubrics=8)
    assert errors == []
    assert scores == [0.5] * (2 * 4 * 8)
    assert rubric_counts == [0] * 8  # generation keeps its own neutral result: no rubrics
    substituted = [e for e in read_log(log_path) if e["event"] == "judge_neutral_text"]
    assert len(substituted) == 2 * 4 * 8
