"""``resilient-llm install PATH`` / ``--revert``: put the drop-in shims into a DR Tulu / open-instruct checkout, and
take them out again byte for byte.

The shims are three lines that import from the installed package, so the trainer's checkout never holds a copy of
our code to go stale, and upgrading the package upgrades the drop-in. Only ``run_utils.py`` and
``openrouter_replacement.py`` are written; ``rubric_utils.py`` and every other trainer module are never touched.
The originals go to ``.resilient_llm_backup/`` beside them with a manifest of hashes; a file changed since install
stops both install and revert with a clear error, before anything is changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

UTILS = Path("open_instruct") / "search_rewards" / "utils"
BACKUP = ".resilient_llm_backup"
MANIFEST = "manifest.json"

SHIMS = {
    name: (
        f'"""resilient-llm drop-in: the code lives in resilient_llm.dropin.{name[:-3]} (pip install resilient-llm).\n\n'
        f"Put here by `resilient-llm install`; `resilient-llm install --revert PATH` restores the original.\n"
        f'"""\n\n'
        f"from resilient_llm.dropin.{name[:-3]} import *  # noqa: F403\n"
        f"from resilient_llm.dropin.{name[:-3]} import __all__  # noqa: F401\n"
    )
    for name in ("run_utils.py", "openrouter_replacement.py")
}


class InstallError(Exception):
    """The checkout is not one we can change safely; nothing was changed."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_utils(root: Path) -> Path:
    """``open_instruct/search_rewards/utils`` under ``root`` (or ``root`` itself), holding the trainer's run_utils."""
    if not root.exists():
        raise InstallError(f"{root} does not exist")
    candidates = [root] if root.as_posix().endswith(UTILS.as_posix()) else [root / UTILS, root / "src" / UTILS]
    for utils in candidates:
        if (utils / "run_utils.py").is_file():
            return utils
    raise InstallError(
        f"no {UTILS.as_posix()}/run_utils.py under {root}: point at an open-instruct / DR Tulu checkout "
        f"(the folder that holds open_instruct/)"
    )


def install(root: Path) -> str:
    """Install the shims; a no-op when they are already in place. Returns what was done."""
    utils = find_utils(root)
    backup = utils / BACKUP
    if (backup / MANIFEST).exists():
        _check_unchanged(utils, json.loads((backup / MANIFEST).read_text()))
        return f"already installed in {utils}"
    manifest: dict[str, dict[str, str | None]] = {}
    for name, text in SHIMS.items():
        target = utils / name
        manifest[name] = {
            "original_sha256": _sha256(target) if target.exists() else None,
            "installed_sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
    backup.mkdir()
    for name in SHIMS:
        if (utils / name).exists():
            shutil.copy2(utils / name, backup / name)
    (backup / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for name, text in SHIMS.items():
        _write_atomically(utils / name, text)
    return f"installed in {utils} (originals in {backup})"


def revert(root: Path) -> str:
    """Restore the originals byte for byte and remove the backup folder."""
    utils = find_utils(root)
    backup = utils / BACKUP
    if not (backup / MANIFEST).exists():
        raise InstallError(f"nothing to revert: {backup / MANIFEST} not found")
    manifest = json.loads((backup / MANIFEST).read_text())
    _check_unchanged(utils, manifest)
    for name, hashes in manifest.items():
        if hashes["original_sha256"] is None:
            (utils / name).unlink()
            continue
        if _sha256(backup / name) != hashes["original_sha256"]:
            raise InstallError(f"the backup of {name} in {backup} was changed; restore it by hand")
        shutil.copy2(backup / name, utils / name)
    shutil.rmtree(backup)
    return f"reverted {utils}"


def _check_unchanged(utils: Path, manifest: dict[str, dict[str, str | None]]) -> None:
    for name, hashes in manifest.items():
        current = utils / name
        if not current.exists() or _sha256(current) != hashes["installed_sha256"]:
            raise InstallError(f"{current} was modified since install; nothing changed (resolve it by hand)")


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".resilient_llm.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
