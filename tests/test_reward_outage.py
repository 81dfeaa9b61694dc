"""DR Tulu's reward through an outage, in the trainer's calling pattern (benchmarks/reward_outage.py, smaller): with
the defaults every sample keeps the reward it gets without the outage; failing fast, as the first wave did, does not.

The reward here is the replica in resilient_llm/testing/reward_replica.py (DR Tulu's own code is not part of this
repository);
``python -m benchmarks.reward_outage --dr-tulu PATH`` runs the same steps with DR Tulu's code, unmodified."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resilient_llm.testing.judge_answers import citation_rating
from resilient_llm.testing.remote import RemoteFaultServer
from resilient_llm.testing.reward_replica import make_samples, replica_reward
from resilient_llm.testing.reward_step import compare, run_step
from resilient_llm.testing.wire import answer_body

SAMPLES = make_samples(12, seed=3)
OUTAGE = (0.2, 2.0)  # (start, length) s: every connection reset, from shortly after the step begins


@pytest.fixture(scope="module")
def endpoint() -> Iterator[RemoteFaultServer]:
    with RemoteFaultServer("clean", latency_s=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def reference(endpoint: RemoteFaultServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    log = tmp_path_factory.mktemp("reference") / "calls.jsonl"
    return run_step(endpoint, replica_reward, SAMPLES, "defaults", log)


@pytest.mark.slow
def test_the_reference_step_scores_every_sample_from_real_answers(reference: dict[str, Any]) -> None:
    """Without an outage: no exception, no neutral answer, and rewards that differ between samples."""
    assert reference["exceptions"] == []
    assert reference["neutral"] == 0
    assert reference["judge_calls"] >= 12 * 5
    assert len({r["reward"] for r in reference["rewards"]}) > 6


@pytest.mark.slow
def test_with_the_defaults_every_sample_keeps_its_reward_through_an_outage(
    endpoint: RemoteFaultServer, reference: dict[str, Any], tmp_path: Path
) -> None:
    """A 2 s outage during the step: every sample's reward equals the reference's, and no call ended neutral."""
    run = run_step(endpoint, replica_reward, SAMPLES, "defaults", tmp_path / "calls.jsonl", OUTAGE)
    assert run["exceptions"] == []
    assert run["requests_into_outage"] > 0  # the outage met the step's calls
    assert run["neutral"] == 0
    assert run["judge_calls"] == reference["judge_calls"]
    assert [r["reward"] for r in run["rewards"]] == [r["reward"] for r in reference["rewards"]]
    assert compare(reference, run)["equal"] == len(SAMPLES)


@pytest.mark.slow
def test_failing_fast_through_the_same_outage_changes_rewards(
    endpoint: RemoteFaultServer, reference: dict[str, Any], tmp_path: Path
) -> None:
    """The first wave's behaviour (no outage wait, neutral fallback): calls end neutral and rewards move."""
    run = run_step(endpoint, replica_reward, SAMPLES, "fail_fast", tmp_path / "calls.jsonl", OUTAGE)
    assert run["exceptions"] == []
    assert run["neutral"] > 0
    assert compare(reference, run)["equal"] < len(SAMPLES)


def test_the_fault_server_answers_citation_prompts_in_the_rating_format_they_ask_for() -> None:
    """Each citation-judge prompt gets a [[rating]] it names, the same for the same request; others a score."""

    def content(prompt: str) -> str:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}]}).encode()
        return str(answer_body(body)["choices"][0]["message"]["content"])

    needs = content("Sentence: x. Answer in the format: Need Citation: [[Yes/No]] Analysis: ...")
    assert needs.startswith(("Need Citation: [[Yes]]", "Need Citation: [[No]]"))
    supported = [
        content(f"claim {i}: rate [[Fully supported]], [[Partially supported]] or [[No support]]") for i in range(30)
    ]
    assert {s.split("]]")[0] for s in supported} == {
        "Rating: [[Fully supported",
        "Rating: [[Partially supported",
        "Rating: [[No support",
    }
    relevant = content("rate [[Relevant]] or [[Unrelevant]]")
    assert relevant.startswith(("Rating: [[Relevant]]", "Rating: [[Unrelevant]]"))
    assert content("rate [[Relevant]] or [[Unrelevant]]") == relevant
    assert json.loads(content('Output JSON: {"score": x}'))["score"] in (0, 1, 2)
    assert citation_rating("no format named here", "0" * 64) is None
