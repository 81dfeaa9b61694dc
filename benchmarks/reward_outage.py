"""DR Tulu's reward through an outage (issue 12): does every sample get the reward it gets without the outage?

``--samples`` DR Tulu-shaped rollouts (``resilient_llm/testing/reward_replica.py``, from ``--seed``) are scored by
DR Tulu's own reward function (``--dr-tulu PATH``: a DR Tulu / open-instruct checkout, used unmodified; without it,
the replica) in the trainer's calling pattern (``resilient_llm/testing/reward_step.py``: the batch's ``asyncio.run``,
each rollout on a pool thread running its own ``asyncio.run`` for the rubric judge, then blocking citation-judge
calls), through the drop-in with ``USE_OPENROUTER_DIRECT=true`` and every other setting at its default (the cache off,
so every run really calls), against a local fault server (``clean``, ``--latency`` s per answer). Each setting runs
twice: no outage (the reference), then the endpoint resetting every connection for ``--outage`` s from
``--outage-start`` s into the step. Settings: ``defaults``, and ``fail_fast``, the first wave's behaviour
(``RESILIENT_LLM_OUTAGE_WAIT=0``, ``RESILIENT_LLM_FALLBACK=neutral``).

    python -m benchmarks.reward_outage --dr-tulu PATH [--samples 64] [--outage 5] [--repeats 3]

Results: ``benchmarks/results/reward_outage.json`` and ``.md``; call logs beside them (``reward_outage.*.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.dr_tulu_reward import load_dr_tulu
from resilient_llm.testing.remote import RemoteFaultServer
from resilient_llm.testing.reward_replica import RewardFn, make_samples, replica_reward
from resilient_llm.testing.reward_step import SETTINGS, compare, run_step

RESULTS = Path(__file__).parent / "results"


def outage_row(args: argparse.Namespace, server: RemoteFaultServer, reward: RewardFn, setting: str) -> dict[str, Any]:
    samples = make_samples(args.samples, args.seed)
    log = RESULTS / f"reward_outage.{setting}.reference.jsonl"
    reference = run_step(server, reward, samples, setting, log, None, args.workers)
    log = RESULTS / f"reward_outage.{setting}.outage.jsonl"
    outage = run_step(server, reward, samples, setting, log, (args.outage_start, args.outage), args.workers)
    summary = {k: v for k, v in outage.items() if k != "rewards"}
    added = round(outage["wall_s"] - reference["wall_s"], 3)  # what the outage cost the step
    return {
        "setting": setting,
        **compare(reference, outage),
        **summary,
        "reference_wall_s": reference["wall_s"],
        "added_s": added,
    }


def spread(rows: list[dict[str, Any]], key: str) -> str:
    """The value over the repeats, or its range: ``12``, ``5.78 to 6.08``."""
    values = [row[key] for row in rows]
    low, high = (f"{v:.2f}" if isinstance(v, float) else str(v) for v in (min(values), max(values)))
    return low if low == high else f"{low} to {high}"


def markdown(report: dict[str, Any]) -> str:
    counts = ("equal", "raised", "lowered", "rubric_lowered", "citation_raised", "judge_calls", "neutral")
    keys = (*counts, "requests_into_outage", "wall_s", "reference_wall_s", "added_s", "after_recovery_s")
    run = report["settings"]
    lines = [
        f"# DR Tulu's reward through a {run['outage']:g} s outage",
        "",
        f"Reward: {report['reward']}{run['label']}. {run['samples']} samples (seed {run['seed']}), "
        f"{run['workers']} rollouts at a time, {run['latency']:g} s per answer; the endpoint resets every "
        f"connection from {run['outage_start']:g} s into the step. Command: `{report['command']}`. "
        f"Ranges: min-max over {run['repeats']} repeats.",
        "",
        "| setting | samples | " + " | ".join(keys) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in keys) + " |",
    ]
    for setting in SETTINGS:
        rows = [row for row in report["rows"] if row["setting"] == setting]
        if rows:
            cells = [spread(rows, key) for key in keys]
            lines.append(f"| {setting} | {rows[0]['samples']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "equal: samples whose reward equals the no-outage reference; raised/lowered: the others; rubric_lowered /",
        "citation_raised: samples whose rubric part fell / citation part rose; judge_calls and neutral: from the call",
        "log; requests_into_outage: requests the dead endpoint saw; after_recovery_s: the step's end after the",
        "endpoint came back (negative: it ended during the outage); reference_wall_s: the same step without outage;",
        "added_s: wall_s - reference_wall_s, what the outage cost the step.",
    ]
    if report.get("dr_tulu_modules"):
        lines += ["", "DR Tulu modules (sha256, first 16 hex): " + json.dumps(report["dr_tulu_modules"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dr-tulu", type=Path, default=None, help="a DR Tulu checkout (holding open_instruct/)")
    parser.add_argument("--label", default="", help="said after the reward's name, e.g. which DR Tulu commit")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--outage-start", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", type=Path, default=RESULTS / "reward_outage.json")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dr-tulu-") as scratch:
        reward, modules = (replica_reward, {}) if args.dr_tulu is None else load_dr_tulu(args.dr_tulu, Path(scratch))
        rows = []
        with RemoteFaultServer("clean", latency_s=args.latency) as server:
            for repeat in range(args.repeats):
                for setting in args.settings.split(","):
                    rows.append(outage_row(args, server, reward, setting) | {"repeat": repeat})
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "exceptions"}), flush=True)
    report = {
        "benchmark": "reward_outage",
        "reward": "DR Tulu's compute_weighted_rubric_reward_with_citation_and_format_reward, unmodified"
        if modules
        else "the replica (resilient_llm/testing/reward_replica.py)",
        "dr_tulu_modules": modules,
        "command": "python -m benchmarks.reward_outage " + shlex.join(sys.argv[1:]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
