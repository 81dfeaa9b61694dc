"""One DR Tulu training step's rewards through an outage, for the reward-outage test and benchmark.

``run_step`` scores samples as the trainer does (``trainer_batch``: the batch's ``asyncio.run``, each rollout on a pool
thread running its own ``asyncio.run``) through the drop-in with ``USE_OPENROUTER_DIRECT=true``, against a fault server
that may reset every connection for a while; ``compare`` says how many samples kept the reward of a step without one.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from resilient_llm.logs import CALL_EVENT
from resilient_llm.testing.environment import env_flags
from resilient_llm.testing.remote import RemoteFaultServer
from resilient_llm.testing.reward_replica import JUDGE_MODELS, RewardFn, Sample

T = TypeVar("T")
LOCAL_KEY = "sk-reward-step-local-not-a-secret"
CLIENT_TIMEOUT_S = 3.0  # per attempt, as in the bench
SETTINGS: dict[str, dict[str, str]] = {
    "defaults": {},
    "fail_fast": {"RESILIENT_LLM_OUTAGE_WAIT": "0", "RESILIENT_LLM_FALLBACK": "neutral"},  # the first wave
}


def trainer_batch(score_rollout: Callable[[int], T], rollouts: int, workers: int) -> list[T | BaseException]:
    """One batch as the trainer scores it: ``asyncio.run`` over the batch, each rollout on a pool thread
    (``run_in_executor``) that may run its own ``asyncio.run``; a rollout that raised has its exception in its place."""

    async def batch() -> list[T | BaseException]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(workers) as pool:
            rollout_futures = (loop.run_in_executor(pool, score_rollout, r) for r in range(rollouts))
            return list(await asyncio.gather(*rollout_futures, return_exceptions=True))

    return asyncio.run(batch())


def drop_in_environment(base_url: str, log: Path, setting: str) -> dict[str, str]:
    """The flags a DR Tulu user sets (the direct path on, the judge models), one of ``SETTINGS``, the cache off so
    every run really calls, and every call logged to ``log``."""
    return {
        "USE_OPENROUTER_DIRECT": "true",
        "OPENAI_API_KEY": LOCAL_KEY,
        "OPENAI_API_BASE": base_url,
        "LITELLM_DEFAULT_TIMEOUT": str(CLIENT_TIMEOUT_S),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "RESILIENT_LLM_LOG_FILE": str(log),
        "RESILIENT_LLM_CACHE": "off",
        **JUDGE_MODELS,
        **SETTINGS[setting],
    }


def call_outcomes(log: Path) -> list[str]:
    """The outcome of each call logged in ``log``."""
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.strip())
    return [line["outcome"] for line in lines if line.get("event") == CALL_EVENT]


def run_step(
    server: RemoteFaultServer,
    reward: RewardFn,
    samples: Sequence[Sample],
    setting: str,
    log: Path,
    outage: tuple[float, float] | None = None,
    workers: int = 8,
) -> dict[str, Any]:
    """Score ``samples`` once, as one training step does; ``outage``: (start, length) s of connection resets."""
    server.reset_stats()
    log.unlink(missing_ok=True)
    marks: dict[str, float] = {}

    def mark(name: str, down: bool) -> None:
        server.set_down(down, kind="reset")
        marks[name] = time.monotonic()

    timers = []
    if outage is not None:
        timers = [threading.Timer(outage[0], mark, ("down", True)), threading.Timer(sum(outage), mark, ("up", False))]
    with env_flags(drop_in_environment(server.url, log, setting)):
        started = time.monotonic()
        for timer in timers:
            timer.start()
        results = trainer_batch(lambda i: reward(samples[i].response, samples[i].ground_truth), len(samples), workers)
        ended = time.monotonic()
    for timer in timers:
        timer.join()  # a fail-fast step may end during the outage: the endpoint is back before the next step
    outcomes = call_outcomes(log)
    return {
        "rewards": [None if isinstance(r, BaseException) else r for r in results],
        "exceptions": [repr(r) for r in results if isinstance(r, BaseException)],
        "wall_s": round(ended - started, 3),
        "after_recovery_s": round(ended - marks["up"], 3) if "up" in marks else None,  # < 0: ended during it
        "judge_calls": len(outcomes),
        "neutral": outcomes.count("neutral"),
        "requests_into_outage": server.stats()["requests_while_down"],
    }


def compare(reference: dict[str, Any], run: dict[str, Any]) -> dict[str, int]:
    """How many samples got the reference's reward, and how the others moved (overall, rubric and citation parts)."""
    counts = dict.fromkeys(("samples", "equal", "raised", "lowered"), 0)
    counts |= dict.fromkeys(("rubric_raised", "rubric_lowered", "citation_raised", "citation_lowered"), 0)
    for ref, got in zip(reference["rewards"], run["rewards"], strict=True):
        counts["samples"] += 1
        if got is None:
            continue
        delta = got["reward"] - ref["reward"]
        counts["equal" if delta == 0 else "raised" if delta > 0 else "lowered"] += 1
        for part in ("rubric", "citation"):
            moved = got["log_values"][f"{part}_reward"] - ref["log_values"][f"{part}_reward"]
            counts[f"{part}_raised"] += moved > 0
            counts[f"{part}_lowered"] += moved < 0
    return counts
