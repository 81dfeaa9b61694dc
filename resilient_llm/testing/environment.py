"""Env flags for one block, as a user would set them: the process-wide engine rebuilt from them, all restored after."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from resilient_llm import process


@contextlib.contextmanager
def env_flags(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block; the process-wide engine is shut down on entry and on exit, so the
    next call builds one from the flags in force, and every variable is restored as it was."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    process.shutdown()
    try:
        yield
    finally:
        process.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
