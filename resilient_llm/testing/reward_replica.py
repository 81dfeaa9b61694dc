"""A replica of DR Tulu's per-rollout reward, and samples shaped like DR Tulu's rollouts, for the reward-outage test
and benchmark where no DR Tulu checkout is at hand (``benchmarks/dr_tulu_reward.py`` loads the real one).

The real one is ``compute_weighted_rubric_reward_with_citation_and_format_reward`` in
``open_instruct/search_rewards/longform_rubric_rewards.py``, called as DR Tulu's ``RLRAGLongFormGeneralRubricVerifier``
calls it for each rollout (``mcp_parser_name="v20250824"``, as ``train_dr_tulu.sh`` sets it). It is sync: it runs
``asyncio.run`` over the rubric judge calls (``run_litellm_async``, gathered), then scores the citations with one
blocking ``run_litellm`` after another.

The replica (``replica_reward``, written from the reward's described behaviour, not from its code) calls the same
drop-in functions in the same order and keeps the parts an outage can change: a rubric judge reply without a score
counts 0.0 (a failed check lowers a positive rubric's reward and raises a negative one's); a failed "does this
sentence need a citation?" check counts as "no", which makes the sentence fully recalled (a failed check raises the
citation reward). The fault server answers both judges deterministically (``resilient_llm/testing/judge_answers.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import re
from collections.abc import Callable
from typing import Any

from resilient_llm.dropin import run_utils

RewardFn = Callable[[str, dict[str, Any]], dict[str, Any]]  # (rollout text, ground truth) -> {"reward", "log_values"}
JUDGE_MODELS = {"RUBRIC_JUDGE_MODEL": "openai/gpt-4.1-mini", "CITATION_JUDGE_MODEL": "openai/gpt-4o-mini"}
WORDS = re.findall(
    r"\w+",
    "soil microbiome nitrogen fixation drought yield legumes rotation carbon storage tillage cover crops fungal "
    "networks phosphorus uptake root exudates salinity irrigation biochar erosion pollinators pest resistance "
    "heat stress canopy transpiration seed banks grazing wetlands runoff nutrient cycling aphids wheat maize",
)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One rollout to score: the model's full text and its ground truth (query and weighted rubrics)."""

    response: str
    ground_truth: dict[str, Any]


def make_samples(count: int, seed: int) -> list[Sample]:
    """``count`` DR Tulu-shaped rollouts: searches with snippets, an answer with cited and uncited sentences (a few
    citing a snippet id that does not exist), 3-6 rubrics of weight 1, 2 or -1. The same seed, the same samples."""
    return [_sample(random.Random(f"{seed}:{index}"), index) for index in range(count)]


def _phrase(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _sample(rng: random.Random, index: int) -> Sample:
    question = f"Question {index}: how does {_phrase(rng, 3)} affect {_phrase(rng, 3)}?"
    ids = [f"{rng.getrandbits(32):08x}" for _ in range(rng.randint(2, 4))]
    context = "".join(
        f'<call_tool name="google_search">{_phrase(rng, 4)}</call_tool><tool_output>'
        f"<snippet id={sid}>Title: {_phrase(rng, 4)}\nSnippet: {_phrase(rng, 18)}.</snippet></tool_output>\n"
        for sid in ids
    )
    sentences = [f"In short, {_phrase(rng, 8)}."]
    for _ in range(rng.randint(2, 4)):
        cited = rng.choice(ids) if rng.random() > 0.15 else f"{rng.getrandbits(32):08x}"  # a made-up id now and then
        sentences.append(f'<cite id="{cited}">{_phrase(rng, 12).capitalize()}.</cite>')
        if rng.random() < 0.5:
            sentences.append(f"This suggests {_phrase(rng, 7)}.")
    rubrics = [
        {"title": f"{_phrase(rng, 2)} {k}", "description": f"The answer explains {_phrase(rng, 9)}.", "weight": w}
        for k, w in enumerate(rng.choice((1.0, 1.0, 2.0, -1.0)) for _ in range(rng.randint(3, 6)))
    ]
    response = f"{context}<answer>{' '.join(sentences)}</answer>"
    return Sample(response, {"query": question, "rubrics": rubrics})


JUDGE_SYSTEM = (
    'Score how well the response meets the criterion, from 0 (not at all) to 2 (fully). Output JSON: {"score": x}.'
)
NEEDS_CITATION = (
    "Question: {question}\nResponse: {response}\nSentence: {claim}\nIs the sentence a factual statement that needs "
    "a citation? Answer in the format: Need Citation: [[Yes/No]] Analysis: ..."
)
SUPPORTED = (
    "Question: {question}\nStatement: {claim}\nSnippets: {snippets}\nDo the snippets support the statement? Rate "
    "[[Fully supported]], [[Partially supported]] or [[No support]] in the format: Rating: [[...]] Analysis: ..."
)
RELEVANT = (
    "Question: {question}\nStatement: {claim}\nSnippets: {snippets}\nAre the snippets relevant to the statement? "
    "Rate [[Relevant]] or [[Unrelevant]] in the format: Rating: [[...]] Analysis: ..."
)
CITE = re.compile(r"<cite id=\"?([^\">\s]+)\"?>([^<]+)</cite>")
SNIPPET = re.compile(r"<snippet id=([^>\s]+)>(.*?)</snippet>", re.DOTALL)


def _rating(reply: str, label: str, scale: dict[str, float]) -> float:
    """The value of ``label: [[rating]]`` in a judge reply; 0.0 for a reply without one (a failed call: "")."""
    found = re.search(re.escape(label) + r" \[\[(.*?)\]\]", reply)
    return scale.get(found.group(1).strip().lower(), 0.0) if found else 0.0


async def _rubric_score(answer: str, question: str, criterion: str) -> float:
    user = f"<question>{question}</question>\n<response>{answer}</response>\n<criterion>{criterion}</criterion>"
    reply = await run_utils.run_litellm_async(os.environ["RUBRIC_JUDGE_MODEL"], user, JUDGE_SYSTEM)
    parsed = run_utils.extract_json_from_response(reply)
    try:
        return float(parsed["score"]) / 2.0  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return 0.0


def _citation_reward(question: str, response: str, snippets: dict[str, str]) -> float:
    model = os.environ["CITATION_JUDGE_MODEL"]
    cited = [(ids.split(",")[-1], text.strip()) for ids, text in CITE.findall(response)]
    uncited = [part.strip() for part in CITE.split(response)[::3] if part.strip()]
    uncited += [claim for sid, claim in cited if sid not in snippets]  # a made-up id cites nothing
    f1s = []
    for claim in uncited:  # precision 1 (nothing cited); recall 1 unless the judge says it needed a citation
        need = run_utils.run_litellm(model, NEEDS_CITATION.format(question=question, response=response, claim=claim))
        f1s.append(1.0 - _rating(need, "Need Citation:", {"yes": 1.0}))
    for sid, claim in cited:
        if sid in snippets:
            prompt = {"question": question, "claim": claim, "snippets": snippets[sid]}
            supported = run_utils.run_litellm(model, SUPPORTED.format(**prompt))
            recall = _rating(supported, "Rating:", {"fully supported": 1.0, "partially supported": 0.5})
            precision = _rating(run_utils.run_litellm(model, RELEVANT.format(**prompt)), "Rating:", {"relevant": 1.0})
            f1s.append(2 * recall * precision / (recall + precision) if recall + precision else 0.0)
    cited_ids = {sid for sid, _ in cited}
    id_share = len(cited_ids & snippets.keys()) / len(cited_ids) if cited_ids else 0.0  # no made-up ids
    return 0.6 * (sum(f1s) / len(f1s) if f1s else 0.0) + 0.4 * id_share


def replica_reward(response: str, ground_truth: dict[str, Any]) -> dict[str, Any]:
    """DR Tulu's reward as described: 0.5 rubric + 0.2 citation + 0.2 format + 0.1 search turns, same judge calls."""
    question, rubrics = ground_truth["query"], ground_truth["rubrics"]
    context, _, rest = response.partition("<answer>")
    answer = rest.partition("</answer>")[0].strip()
    turns = len(re.findall(r"<call_tool name=.*?>.*?</call_tool>", context, re.DOTALL))

    async def judge_rubrics() -> list[float]:
        return list(await asyncio.gather(*(_rubric_score(answer, question, r["description"]) for r in rubrics)))

    scores = asyncio.run(judge_rubrics())  # a new event loop per rollout, on the trainer's pool thread
    weighted = sum(s * r["weight"] for s, r in zip(scores, rubrics, strict=True))
    values = {
        "rubric_reward": weighted / max(sum(r["weight"] for r in rubrics if r["weight"] > 0), 1.0),
        "citation_reward": _citation_reward(question, response, dict(SNIPPET.findall(context))),
        "format_reward": 0.5 * bool(answer) + 0.3 * bool(CITE.search(response)) + 0.2 * bool(turns),
        "num_search_turns_reward": min(turns / 3, 1.0),
    }
    weights = {"rubric_reward": 0.5, "citation_reward": 0.2, "format_reward": 0.2, "num_search_turns_reward": 0.1}
    return {"reward": sum(w * values[k] for k, w in weights.items()), "log_values": values}
