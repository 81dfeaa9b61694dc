"""install / --revert as transactions: a failure half-way leaves the checkout as it was, symlinks come back as
symlinks, and a stale backup folder or a corrupt manifest is an InstallError, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilient_llm.cli import main
from resilient_llm.cli.install import BACKUP, MANIFEST, SHIMS, InstallError, install, revert
from tests.test_install import make_checkout, snapshot


def tree(root: Path) -> dict[str, object]:
    """Every entry under root: files by hash and mode, symlinks by target, folders as such."""
    entries: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            entries[name] = ("link", os.readlink(path))
        elif path.is_dir():
            entries[name] = "dir"
    return entries | snapshot(root)


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made immutable (chattr +i: even root cannot replace them) for the test, released afterwards."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def make_immutable(path: Path, registry: list[Path]) -> None:
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make a file immutable here: {made.stderr.strip()}")
    registry.append(path)


def test_a_failure_writing_the_second_shim_leaves_the_checkout_as_it_was(tmp_path: Path, immutable: list[Path]) -> None:
    """The second file cannot be replaced: InstallError, every file as before, no backup folder, no .tmp file;
    once it can, install and revert work."""
    utils = make_checkout(tmp_path)
    (utils / "openrouter_replacement.py").write_text("# the trainer's own replacement\n")
    make_immutable(utils / "openrouter_replacement.py", immutable)
    before = tree(tmp_path)
    with pytest.raises(InstallError, match=r"openrouter_replacement\.py"):
        install(tmp_path)
    assert tree(tmp_path) == before
    subprocess.run(["chattr", "-i", str(utils / "openrouter_replacement.py")], check=True)
    install(tmp_path)
    assert (utils / "openrouter_replacement.py").read_text() == SHIMS["openrouter_replacement.py"]
    revert(tmp_path)
    assert tree(tmp_path) == before


def test_a_failure_restoring_the_second_file_leaves_the_checkout_installed(
    tmp_path: Path, immutable: list[Path]
) -> None:
    """--revert that cannot restore everything restores nothing: still installed, backup kept, retry works."""
    utils = make_checkout(tmp_path)
    (utils / "openrouter_replacement.py").write_text("# the trainer's own replacement\n")
    before = tree(tmp_path)
    install(tmp_path)
    installed = tree(tmp_path)
    make_immutable(utils / "openrouter_replacement.py", immutable)
    with pytest.raises(InstallError, match=r"openrouter_replacement\.py"):
        revert(tmp_path)
    assert tree(tmp_path) == installed
    subprocess.run(["chattr", "-i", str(utils / "openrouter_replacement.py")], check=True)
    revert(tmp_path)
    assert tree(tmp_path) == before


def test_a_half_installed_checkout_is_completed_or_reverted(tmp_path: Path) -> None:
    """A checkout an interrupted install left with one shim in and one original still there: install finishes
    the job, --revert undoes it; no 'modified since install' dead end."""
    utils = make_checkout(tmp_path)
    before = tree(tmp_path)
    install(tmp_path)
    original = (utils / BACKUP / "run_utils.py").read_bytes()
    (utils / "run_utils.py").write_bytes(original)  # as if the run_utils shim had never been written
    assert "installed" in install(tmp_path)
    assert (utils / "run_utils.py").read_text() == SHIMS["run_utils.py"]
    (utils / "openrouter_replacement.py").unlink()  # as if only run_utils had been written
    revert(tmp_path)
    assert tree(tmp_path) == before


def test_a_symlinked_run_utils_comes_back_as_the_same_symlink(tmp_path: Path) -> None:
    """install replaces the link (never writes through it); --revert puts the link back, pointing where it did."""
    utils = make_checkout(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "run_utils_real.py").write_bytes((utils / "run_utils.py").read_bytes())
    (utils / "run_utils.py").unlink()
    (utils / "run_utils.py").symlink_to(Path("..", "..", "..", "shared", "run_utils_real.py"))
    before = tree(tmp_path)
    install(tmp_path)
    assert not (utils / "run_utils.py").is_symlink()
    assert (shared / "run_utils_real.py").read_bytes() != SHIMS["run_utils.py"].encode()
    revert(tmp_path)
    assert (utils / "run_utils.py").is_symlink()
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "manifest",
    [None, "{not json", '["a list"]', '{"run_utils.py": 1}', '{"run_utils.py": {"installed_sha256": 3}}'],
    ids=["stale folder", "not json", "a list", "entry not an object", "bad hash"],
)
def test_a_stale_backup_folder_or_corrupt_manifest_is_an_install_error(
    manifest: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """install and --revert stop with an InstallError naming the folder or file; nothing changes."""
    utils = make_checkout(tmp_path)
    (utils / BACKUP).mkdir()
    (utils / BACKUP / "run_utils.py").write_text("# a stale copy\n")
    if manifest is not None:
        (utils / BACKUP / MANIFEST).write_text(manifest)
    before = tree(tmp_path)
    for action in (install, revert):
        with pytest.raises(InstallError, match=BACKUP):
            action(tmp_path)
    assert main(["install", str(tmp_path)]) == 1
    assert BACKUP in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_leftovers_of_a_killed_install_are_cleared(tmp_path: Path) -> None:
    """A staging folder and temporary files from an install killed before its commit point go; install works."""
    utils = make_checkout(tmp_path)
    before = tree(tmp_path)
    staging = utils / (BACKUP + ".partial")
    staging.mkdir()
    (staging / MANIFEST).write_text(json.dumps({}))
    (utils / "run_utils.py.resilient_llm.tmp").write_text(SHIMS["run_utils.py"][:10])
    install(tmp_path)
    assert not staging.exists()
    assert not (utils / "run_utils.py.resilient_llm.tmp").exists()
    revert(tmp_path)
    assert tree(tmp_path) == before


def test_an_install_made_by_the_previous_version_reverts(tmp_path: Path) -> None:
    """Manifests written before links were recorded (no original_link) are still read and reverted."""
    utils = make_checkout(tmp_path)
    before = tree(tmp_path)
    install(tmp_path)
    manifest_path = utils / BACKUP / MANIFEST
    old = {
        name: {k: v for k, v in entry.items() if k != "original_link"}
        for name, entry in json.loads(manifest_path.read_text()).items()
    }
    manifest_path.write_text(json.dumps(old, indent=2) + "\n")
    assert "already installed" in install(tmp_path)
    revert(tmp_path)
    assert tree(tmp_path) == before
