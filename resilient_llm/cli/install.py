"""``resilient-llm install PATH`` / ``--revert``: put the drop-in shims into a DR Tulu / open-instruct checkout, and
take them out again byte for byte.

The shims are three lines that import from the installed package, so the trainer's checkout never holds a copy of
our code to go stale, and upgrading the package upgrades the drop-in. Only ``run_utils.py`` and
``openrouter_replacement.py`` are written; ``rubric_utils.py`` and every other trainer module are never touched.
The originals go to ``.resilient_llm_backup/`` beside them with a manifest of hashes (a symlink is recorded as the
link, and comes back as one); a file changed since install stops both install and revert, before anything changes.

Both are transactions. Install prepares everything first (the backup in a staging folder, each shim in a temporary
file beside its target); renaming the staging folder into place is the commit point; then each shim replaces its
target (``os.replace``, atomic per file), and a failure there puts the originals back. Revert restores every file
or, failing half-way, puts the shims back. Each file is either the original or the shim at any moment, so a checkout
an interrupted run left half-installed is finished by ``install`` and undone by ``--revert``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

UTILS = Path("open_instruct") / "search_rewards" / "utils"
BACKUP = ".resilient_llm_backup"
STAGING = BACKUP + ".partial"  # an install killed before its commit point leaves this (cleared by the next run)
MANIFEST = "manifest.json"
TEMPORARY = ".resilient_llm.tmp"

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

Manifest = dict[str, dict[str, Any]]  # file name -> original_sha256 (None: absent), original_link, installed_sha256


class InstallError(Exception):
    """The checkout is not one we can change safely; what was changed, if anything, is said."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _installed_sha256(name: str) -> str:
    return hashlib.sha256(SHIMS[name].encode()).hexdigest()


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


def _read_manifest(backup: Path) -> Manifest | None:
    """The manifest of a committed install, None when there is none; InstallError when the folder is not ours."""
    if not backup.exists():
        return None
    path = backup / MANIFEST
    fix = f"check {' and '.join(SHIMS)} against the copies in {backup} and restore or remove them by hand"
    if not path.is_file():
        raise InstallError(
            f"{backup} exists but holds no {MANIFEST} (a stale or foreign folder); nothing changed: {fix}"
        )
    try:
        manifest = json.loads(path.read_text())
        valid = isinstance(manifest, dict) and set(manifest) == set(SHIMS) and all(map(_entry_ok, manifest.values()))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InstallError(f"{path} is unreadable ({exc}); nothing changed: {fix}") from None
    if not valid:
        raise InstallError(f"{path} is not a manifest this tool wrote; nothing changed: {fix}")
    for entry in manifest.values():
        entry.setdefault("original_link", None)  # manifests of earlier versions recorded no links
    return manifest  # type: ignore[no-any-return]


def _entry_ok(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("installed_sha256"), str)
        and isinstance(entry.get("original_sha256"), (str, type(None)))
        and isinstance(entry.get("original_link"), (str, type(None)))
    )


def _state(utils: Path, name: str, entry: dict[str, Any]) -> str:
    """``installed`` (the shim), ``original`` (as before install) or ``modified`` (anything else)."""
    target = utils / name
    if target.is_file() and not target.is_symlink() and _sha256(target) == entry["installed_sha256"]:
        return "installed"
    if entry["original_link"] is not None:
        original = target.is_symlink() and os.readlink(target) == entry["original_link"]
    elif entry["original_sha256"] is None:
        original = not os.path.lexists(target)
    else:
        original = target.is_file() and not target.is_symlink() and _sha256(target) == entry["original_sha256"]
    return "original" if original else "modified"


def _states(utils: Path, manifest: Manifest) -> dict[str, str]:
    try:
        states = {name: _state(utils, name, entry) for name, entry in manifest.items()}
    except OSError as exc:
        raise InstallError(f"cannot read {exc.filename}: {exc.strerror}; nothing changed") from None
    for name, state in states.items():
        if state == "modified":
            raise InstallError(f"{utils / name} was modified since install; nothing changed (resolve it by hand)")
    return states


def _clear_leftovers(utils: Path) -> None:
    """What an install or revert killed before its commit point left behind: only our own names."""
    shutil.rmtree(utils / STAGING, ignore_errors=True)
    for name in SHIMS:
        (utils / (name + TEMPORARY)).unlink(missing_ok=True)


def install(root: Path) -> str:
    """Install the shims; a no-op when they are already in place. Returns what was done."""
    utils = find_utils(root)
    backup = utils / BACKUP
    manifest = _read_manifest(backup)
    fresh = manifest is None
    if manifest is None:
        _clear_leftovers(utils)
        manifest = _commit_backup(utils, backup)
        pending = list(SHIMS)
    else:
        pending = [name for name, state in _states(utils, manifest).items() if state == "original"]
        if not pending:
            return f"already installed in {utils}"
    shims = {name: _shim(name) for name in pending}
    originals = {name: _original(backup, name, manifest[name]) for name in pending}
    try:
        _switch(utils, shims, back=originals)
    except _SwitchFailed as failed:
        if fresh and failed.undone:
            shutil.rmtree(backup, ignore_errors=True)
        raise InstallError(failed.describe("the checkout is as it was", "install --revert")) from None
    return f"installed in {utils} (originals in {backup})"


def _commit_backup(utils: Path, backup: Path) -> Manifest:
    """Copy the originals and the manifest into a staging folder, then rename it into place (the commit point)."""
    staging = utils / STAGING
    manifest: Manifest = {}
    try:
        staging.mkdir()
        for name in SHIMS:
            target = utils / name
            if os.path.lexists(target) and not target.is_file():
                raise InstallError(f"{target} is not a regular file or a link to one; nothing changed")
            entry: dict[str, Any] = {"original_sha256": None, "original_link": None}
            entry["installed_sha256"] = _installed_sha256(name)
            if target.is_symlink():
                entry["original_link"] = os.readlink(target)
            if target.is_file():
                shutil.copy2(target, staging / name)  # for a symlink, its content at install time, for reference
                entry["original_sha256"] = _sha256(staging / name)
            manifest[name] = entry
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(staging, backup)
    except OSError as exc:
        raise InstallError(f"could not back up the originals in {utils}: {exc}; nothing changed") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once renamed into place
    return manifest


def revert(root: Path) -> str:
    """Restore the originals byte for byte (symlinks as symlinks) and remove the backup folder."""
    utils = find_utils(root)
    backup = utils / BACKUP
    manifest = _read_manifest(backup)
    if manifest is None:
        raise InstallError(f"nothing to revert: {backup / MANIFEST} not found")
    pending = [name for name, state in _states(utils, manifest).items() if state == "installed"]
    for name in pending:
        entry = manifest[name]
        if entry["original_link"] is None and entry["original_sha256"] is not None:
            copy = backup / name
            if not copy.is_file() or _sha256(copy) != entry["original_sha256"]:
                raise InstallError(f"the backup of {name} in {backup} was changed; restore it by hand")
    _clear_leftovers(utils)
    originals = {name: _original(backup, name, manifest[name]) for name in pending}
    try:
        _switch(utils, originals, back={name: _shim(name) for name in pending})
    except _SwitchFailed as failed:
        raise InstallError(failed.describe("the checkout is still installed", "install --revert again")) from None
    shutil.rmtree(backup)
    return f"reverted {utils}"


Maker = Callable[[Path], object] | None  # writes a file's new content at the given path; None: the file is absent


def _shim(name: str) -> Maker:
    return lambda path: path.write_text(SHIMS[name])


def _original(backup: Path, name: str, entry: dict[str, Any]) -> Maker:
    link, digest = entry["original_link"], entry["original_sha256"]
    if link is not None:
        return lambda path: os.symlink(link, path)
    if digest is None:
        return None
    return lambda path: shutil.copy2(backup / name, path)


def _put(utils: Path, name: str, make: Maker) -> None:
    """One target becomes what ``make`` writes, atomically (a temporary beside it, then ``os.replace``)."""
    target = utils / name
    if make is None:
        target.unlink(missing_ok=True)
        return
    temporary = utils / (name + TEMPORARY)
    temporary.unlink(missing_ok=True)
    make(temporary)
    os.replace(temporary, target)


class _SwitchFailed(Exception):
    def __init__(self, path: Path, cause: OSError, undone: bool, undo_error: OSError | None = None) -> None:
        super().__init__(str(cause))
        self.path, self.cause, self.undone, self.undo_error = path, cause, undone, undo_error

    def describe(self, state: str, retry: str) -> str:
        what = f"could not write {self.path}: {self.cause.strerror or self.cause}"
        if self.undone:
            return f"{what}; {state}"
        return f"{what}; putting the files back failed too ({self.undo_error}): run `resilient-llm {retry}` once fixed"


def _switch(utils: Path, to: dict[str, Maker], *, back: dict[str, Maker]) -> None:
    """Every file in ``to`` gets its new content, or none does: on a failure the ones done get ``back``."""
    done: list[str] = []
    try:
        for name, make in to.items():
            _put(utils, name, make)
            done.append(name)
    except OSError as exc:
        failed = utils / next(name for name in to if name not in done)
        try:
            for name in reversed(done):
                _put(utils, name, back[name])
        except OSError as undo_error:
            raise _SwitchFailed(failed, exc, False, undo_error) from None
        raise _SwitchFailed(failed, exc, True) from None
    finally:
        for name in to:
            (utils / (name + TEMPORARY)).unlink(missing_ok=True)
