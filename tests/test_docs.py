"""The documentation cannot rot: every example in README.md, docs/*.md and benchmarks/README.md is run here (or
skipped for a stated reason), and every repository path and ``python -m`` module they name exists."""

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
PAGES = sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))
DOCUMENTS = ("README.md", *PAGES, "benchmarks/README.md")
FENCE = re.compile(r"```(bash|python)\n(.*?)```", re.S)
CODE_SPAN = re.compile(r"`([^`\s]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
MODULE = re.compile(r"python -m ([\w.]+)")
TOP = {p.name for p in REPO.iterdir() if not p.name.startswith(".git")}
PACKAGE = REPO / "resilient_llm"
SUBPACKAGES = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
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


def test_the_documents_are_the_ones_the_readme_links() -> None:
    """Each page in docs/ is linked from the README's reading list, so none is an orphan."""
    readme = (REPO / "README.md").read_text()
    pages = [d for d in DOCUMENTS if d.startswith("docs/")]
    assert len(pages) > 8
    assert [d for d in pages if f"]({d})" not in readme] == []


def named_paths(text: str, folder: Path) -> set[str]:
    """The repository paths a document in ``folder`` names: code spans that look like a path and start at the
    repository's top (or inside the package, as ``policy/gate.py``), and the targets of its relative links."""
    found = set()
    for span in CODE_SPAN.findall(text):
        first = span.split("/")[0]
        if "/" not in span or "<" in span or "*" in span or "..." in span:
            continue
        if first in TOP:
            found.add(span)
        elif first in SUBPACKAGES:
            found.add(f"resilient_llm/{span}")
    for target in LINK.findall(text):
        if not target.startswith(("http://", "https://", "#")):
            found.add(str(folder.joinpath(target.split("#")[0]).resolve().relative_to(REPO)))
    return found


def exists(path: str) -> bool:
    """A file or folder, or ``module.attribute`` of a module file (``testing/profiles.FAULT_KINDS``)."""
    if (REPO / path).exists():
        return True
    module, dot, _ = path.rpartition(".")
    return bool(dot) and (REPO / f"{module}.py").exists()


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_path_a_document_names_exists(document: str) -> None:
    """A path in a document (code span or link) names a file or folder of this repository."""
    paths = named_paths((REPO / document).read_text(), (REPO / document).parent)
    assert [p for p in sorted(paths) if not exists(p)] == []


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_module_a_document_runs_exists(document: str) -> None:
    """Each ``python -m X`` in a document names a module of this repository."""
    modules = MODULE.findall((REPO / document).read_text())
    missing = [
        m
        for m in modules
        if not (REPO / m.replace(".", "/")).with_suffix(".py").exists() and not (REPO / m.replace(".", "/")).is_dir()
    ]
    assert missing == []


def test_the_path_check_sees_a_stale_path() -> None:
    """The check is not vacuous: a moved file and a broken link are caught; templates, URLs and attributes pass."""
    text = (
        "`resilient_llm/fault_server.py` `policy/gate.py` `layers/<name>.py` `redis://` `testing/profiles.FAULT_KINDS`"
        " [a](missing.md) [b](architecture.md#where) [c](https://example.org/x)"
    )
    paths = named_paths(text, REPO / "docs")
    assert paths == {
        "resilient_llm/fault_server.py",
        "resilient_llm/policy/gate.py",
        "resilient_llm/testing/profiles.FAULT_KINDS",
        "docs/missing.md",
        "docs/architecture.md",
    }
    assert sorted(p for p in paths if not exists(p)) == ["docs/missing.md", "resilient_llm/fault_server.py"]


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize(("document", "body"), blocks("python"), ids=lambda v: v if len(v) < 30 else None)
def test_python_examples_run(document: str, body: str, tmp_path: Path) -> None:
    """Each Python example runs as a script against the local server."""
    with FaultServer("clean") as server:
        env = dict(os.environ, OPENAI_API_KEY="sk-or-v1-docs", OPENAI_API_BASE=server.url)
        env |= {"RESILIENT_LLM_CACHE_DIR": str(tmp_path / "cache"), "RESILIENT_LLM_LOG_FILE": "off"}
        done = subprocess.run([sys.executable, "-c", body], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '{"score"' in done.stdout
