"""Every example in README.md and docs/zh-CN.md is run here (or skipped for a stated reason), so the docs cannot rot."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_llm.testing.fault_server import FaultServer
from tests.test_install import make_checkout

REPO = Path(__file__).parent.parent
DOCUMENTS = ("README.md", "docs/zh-CN.md")
FENCE = re.compile(r"```(bash|python)\n(.*?)```", re.S)
FIXTURE_LOG = Path(__file__).parent / "fixtures" / "mixed.log"
# Commands these tests do not run, and why.
NOT_RUN = {
    "bash scripts/test.sh": "it is the command that runs this test (CI runs it)",
    "pip install": "installs packages; scripts/_venv.sh does the same install for every run",
}


# A few training steps' judge calls through the drop-in (two steps of three), in place of DR Tulu's grpo_fast.py.
TRAINER_STAND_IN = """
import asyncio
from resilient_llm.dropin import run_utils

async def step(n):
    prompts = [f"step {n} rubric {i}" for i in range(3)]
    return await asyncio.gather(*(run_utils.run_litellm_async("openai/gpt-4o-mini", p, "judge") for p in prompts))

for n in range(2):
    assert all(asyncio.run(step(n)))
"""


def blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        for language, body in FENCE.findall((REPO / document).read_text()):
            if language == kind:
                found.append((document, body))
    return found


def commands(body: str) -> list[str]:
    lines = []
    for raw in body.splitlines():
        line = raw.split("  #")[0].strip()  # a trailing "  # comment"
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def cli(*argv: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        list(argv), env=env | {"PATH": path}, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize(("document", "body"), blocks("bash"), ids=lambda v: v if len(v) < 30 else None)
def test_bash_examples_run(document: str, body: str, tmp_path: Path) -> None:
    """Each shell example runs against local stand-ins (a fake checkout, the fault server, a fixture log)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESILIENT_LLM_", "OPENAI_"))}
    env["RESILIENT_LLM_CACHE_DIR"] = str(tmp_path / "cache")
    checkout = tmp_path / "open-instruct"
    make_checkout(checkout)
    with FaultServer("clean") as server:
        for command in commands(body):
            if any(command.startswith(prefix) for prefix in NOT_RUN):
                continue
            words = shlex.split(command)
            if words[0] == "export":
                name, _, value = words[1].partition("=")
                # The documented endpoint is the real OpenRouter; here the local server stands in for it.
                env[name] = server.url if name == "OPENAI_API_BASE" else value
            elif command.startswith("bash scripts/bench.sh"):
                done = cli(
                    *words,
                    "--quick",
                    "--profiles",
                    "clean",
                    "--clients",
                    "resilient_llm",
                    "--out",
                    str(tmp_path / "bench"),
                    "--no-plots",
                    env=env,
                    cwd=REPO,
                )
                assert done.returncode == 0, done.stderr[-2000:]
            elif words[:2] == ["resilient-llm", "install"]:
                target = [str(checkout) if w.startswith("/path/to/") else w for w in words]
                assert cli(*target, env=env, cwd=tmp_path).returncode == 0
                assert cli(*target[:2], "--revert", target[2], env=env, cwd=tmp_path).returncode == 0
            elif "open_instruct/grpo_fast.py" in words:  # the trainer is not here: a stand-in makes its judge calls
                assignments = dict(w.split("=", 1) for w in words[: words.index("python")])
                trainer_env = env | assignments | {"OPENAI_API_KEY": "sk-or-v1-docs", "OPENAI_API_BASE": server.url}
                done = cli(sys.executable, "-c", TRAINER_STAND_IN, env=trainer_env, cwd=tmp_path)
                assert done.returncode == 0, done.stderr[-2000:]
            elif words[:3] == ["resilient-llm", "stats", "--compare"]:
                done = cli(*words, "--json", env=env, cwd=tmp_path)
                assert done.returncode == 0, done.stderr
                report = json.loads(done.stdout)
                assert report["a"]["routes"] == {"litellm_original": 6}
                assert report["b"]["routes"] == {"openrouter": 6}
                assert (tmp_path / words[words.index("--png") + 1]).read_bytes().startswith(b"\x89PNG")
            elif words[:2] == ["resilient-llm", "stats"]:
                log = tmp_path / words[2]
                log.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(FIXTURE_LOG, log)
                done = cli(*words, env=env, cwd=tmp_path)
                assert done.returncode == 0, done.stderr
                assert "breaker trips: 1" in done.stdout
            else:
                pytest.fail(f"{document}: no way to run the example {command!r}: teach this test, or change the doc")


@pytest.mark.parametrize(("document", "body"), blocks("python"), ids=lambda v: v if len(v) < 30 else None)
def test_python_examples_run(document: str, body: str, tmp_path: Path) -> None:
    """Each Python example runs as a script against the local server."""
    with FaultServer("clean") as server:
        env = dict(os.environ, OPENAI_API_KEY="sk-or-v1-docs", OPENAI_API_BASE=server.url)
        env |= {"RESILIENT_LLM_CACHE_DIR": str(tmp_path / "cache"), "RESILIENT_LLM_LOG_FILE": "off"}
        done = subprocess.run([sys.executable, "-c", body], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '{"score"' in done.stdout
