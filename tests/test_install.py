"""resilient-llm install / --revert on a fake DR Tulu checkout: shims in, originals back byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from resilient_llm.cli import main
from resilient_llm.cli.install import BACKUP, SHIMS, InstallError, install, revert

REPO = Path(__file__).parent.parent
ORIGINAL_RUN_UTILS = b"import litellm\n\ndef run_litellm(model_name, user_prompt, system_prompt=None, **kw):\n    ...\n"


def make_checkout(root: Path) -> Path:
    utils = root / "open_instruct" / "search_rewards" / "utils"
    utils.mkdir(parents=True)
    (root / "open_instruct" / "__init__.py").write_text("")
    (root / "open_instruct" / "grpo_fast.py").write_text("# the trainer\n")
    (utils / "run_utils.py").write_bytes(ORIGINAL_RUN_UTILS)
    (utils / "rubric_utils.py").write_text("from .run_utils import run_litellm_async\n")
    (utils / "citation_utils.py").write_text("from .run_utils import run_litellm\n")
    (utils / "run_utils.py").chmod(0o640)
    return utils


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file's hash and mode under root."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_install_then_revert_leaves_the_checkout_byte_identical(tmp_path: Path) -> None:
    """Shims go in (rubric_utils untouched), install twice is a no-op, revert restores every byte and mode."""
    utils = make_checkout(tmp_path)
    before = snapshot(tmp_path)
    assert "installed" in install(tmp_path)
    assert (utils / "run_utils.py").read_text() == SHIMS["run_utils.py"]
    assert (utils / "openrouter_replacement.py").read_text() == SHIMS["openrouter_replacement.py"]
    assert (utils / "rubric_utils.py").read_text() == "from .run_utils import run_litellm_async\n"
    assert (utils / BACKUP / "run_utils.py").read_bytes() == ORIGINAL_RUN_UTILS
    assert "already installed" in install(tmp_path)
    assert "reverted" in revert(tmp_path)
    assert snapshot(tmp_path) == before


def test_the_repositorys_drop_in_files_are_the_shims() -> None:
    """open_instruct/search_rewards/utils in this repository holds exactly what install writes."""
    for name, text in SHIMS.items():
        assert (REPO / "open_instruct" / "search_rewards" / "utils" / name).read_text() == text


def test_a_file_modified_since_install_stops_everything(tmp_path: Path) -> None:
    """Neither install nor revert touches a checkout whose drop-in was edited after install."""
    utils = make_checkout(tmp_path)
    install(tmp_path)
    (utils / "run_utils.py").write_text("# edited by hand\n")
    before = snapshot(tmp_path)
    with pytest.raises(InstallError, match="modified since install"):
        revert(tmp_path)
    with pytest.raises(InstallError, match="modified since install"):
        install(tmp_path)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("layout", ["missing", "unknown", "empty-utils"])
def test_unknown_layouts_are_clear_errors(tmp_path: Path, layout: str) -> None:
    """A missing folder, a folder without open_instruct, or one without run_utils.py: an error, no change."""
    root = tmp_path / "checkout"
    if layout == "unknown":
        (root / "something_else").mkdir(parents=True)
    elif layout == "empty-utils":
        (root / "open_instruct" / "search_rewards" / "utils").mkdir(parents=True)
    before = snapshot(tmp_path)
    with pytest.raises(InstallError):
        install(root)
    assert snapshot(tmp_path) == before


def test_revert_without_install_is_an_error(tmp_path: Path) -> None:
    """Reverting a checkout that was never installed says so."""
    make_checkout(tmp_path)
    with pytest.raises(InstallError, match="nothing to revert"):
        revert(tmp_path)


def test_cli_install_and_revert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line reports what it did, and exits 1 with the reason on an error."""
    make_checkout(tmp_path)
    assert main(["install", str(tmp_path)]) == 0
    assert main(["install", "--revert", str(tmp_path)]) == 0
    assert main(["install", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
