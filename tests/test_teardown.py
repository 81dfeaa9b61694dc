"""Calls at interpreter exit end at once: a ``__del__`` that calls us during teardown cannot hang the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import API_KEY, MODEL

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = f"""
import os, sys
import resilient_llm

class Holder:
    def __del__(self, write=os.write):
        try:
            result = resilient_llm.complete({MODEL!r}, user="from __del__")
            write(1, f"answered {{result.outcome}}\\n".encode())
        except Exception as exc:
            write(1, f"refused {{type(exc).__name__}}: {{exc}}\\n".encode())

holder = Holder()
if sys.argv[1] == "used":
    print(resilient_llm.complete({MODEL!r}, user="before exit").outcome, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["used", "unused"])
def test_a_call_from_del_at_exit_is_refused_not_hung(server: FaultServer, engine: str) -> None:
    """Whether or not the engine ran before, a call from a __del__ at exit raises a clear RuntimeError and the
    process ends (before the fix it rebuilt the engine and waited forever for its thread)."""
    env = dict(
        os.environ,
        OPENAI_API_KEY=API_KEY,
        OPENAI_API_BASE=server.url,
        RESILIENT_LLM_LOG_FILE="off",
        RESILIENT_LLM_CACHE="off",
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, engine], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    expected = ["ok"] if engine == "used" else []
    assert done.stdout.splitlines() == [
        *expected,
        "refused RuntimeError: resilient_llm: the interpreter is exiting; no engine can start now",
    ]
