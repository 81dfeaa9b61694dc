"""DR Tulu's own reward function from a DR Tulu checkout, for ``benchmarks/reward_outage.py --dr-tulu PATH``.

``load_dr_tulu`` copies the checkout's ``open_instruct/search_rewards`` to a scratch folder, puts our drop-in into the
copy with ``resilient-llm install`` (as a user does) and imports it: the reward code runs unmodified, and the checkout
itself is never touched. Without a checkout the benchmark uses the replica
(``resilient_llm/testing/reward_replica.py``).
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import sys
from pathlib import Path
from typing import Any

from resilient_llm.cli.install import find_utils, install
from resilient_llm.testing.reward_replica import RewardFn

PARSER = "v20250824"  # DR Tulu's tool-call format: <call_tool name="...">query</call_tool>
REWARD_MODULES = (
    "longform_rubric_rewards",
    "utils/rubric_utils",
    "utils/citation_utils",
    "utils/format_utils",
    "utils/search_utils",
)


def load_dr_tulu(checkout: Path, scratch: Path) -> tuple[RewardFn, dict[str, str]]:
    """DR Tulu's reward function from ``checkout`` (the folder holding ``open_instruct/``), with the drop-in installed
    into a copy under ``scratch``; and the sha256 of each reward module that runs, to say which code this was."""
    package = find_utils(checkout).parent.parent
    target = scratch / "open_instruct"
    shutil.copytree(package / "search_rewards", target / "search_rewards")
    (target / "__init__.py").write_text("")  # DR Tulu's own only holds comments
    install(scratch)
    if "open_instruct" in sys.modules:
        raise RuntimeError("load_dr_tulu must import open_instruct first: another open_instruct is imported already")
    sys.path.insert(0, str(scratch))
    module = importlib.import_module("open_instruct.search_rewards.longform_rubric_rewards")
    assert Path(module.__file__ or "").is_relative_to(scratch)
    score = module.compute_weighted_rubric_reward_with_citation_and_format_reward
    hashes = {
        name: hashlib.sha256((target / "search_rewards" / f"{name}.py").read_bytes()).hexdigest()[:16]
        for name in REWARD_MODULES
    }

    def reward(response: str, ground_truth: dict[str, Any]) -> dict[str, Any]:
        return dict(score(response, ground_truth, mcp_parser_name=PARSER))

    return reward, hashes
