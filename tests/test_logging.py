"""Logging never changes a result nor blocks a call: full disk, a stalled stderr pipe, a fork mid-write."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from resilient_llm import Engine, Outcome
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import API_KEY, MODEL, fast_config

ROOT = Path(__file__).resolve().parents[1]
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full (a disk that is always full)")


def _spawn(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A Python child whose stderr is a pipe this test does not read (it fills at 64 KB)."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _read_line(child: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The child's next stdout line, or b"" if none came within ``timeout`` (the child is then killed)."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    if not ready:
        child.kill()
        child.communicate()
        return b""
    return child.stdout.readline()


@needs_dev_full
def test_a_full_disk_never_changes_a_result(server: FaultServer) -> None:
    """With the log file on a full disk every call still returns its real answer; the lost lines are counted."""
    with Engine(fast_config(server.url, log_file="/dev/full")) as engine:
        results = [engine.complete(MODEL, user=f"q{i}") for i in range(20)]
    assert [r.outcome for r in results] == [Outcome.OK] * 20
    assert engine.log_lines_dropped == 21  # engine_started and one line per call


@needs_dev_full
@pytest.mark.usefixtures("direct_env")
def test_a_full_disk_never_turns_the_drop_in_answer_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's drop-in returns the real answer, not "", when its log file cannot be written."""
    from open_instruct.search_rewards.utils import run_utils

    monkeypatch.setenv("RESILIENT_LLM_LOG_FILE", "/dev/full")
    answers = [run_utils.run_litellm(MODEL, f"q{i}") for i in range(5)]
    assert all(a.startswith('{"score"') for a in answers)


STALLED_PIPE_CHILD = """
import json, sys, time
from resilient_llm import CacheConfig, Config, Engine, HTTPConfig, LogConfig
from resilient_llm.logs import LogSink

LogSink.MAX_QUEUED = 10  # a small buffer, so this short run also shows lines being dropped
config = Config(
    http=HTTPConfig(api_key=sys.argv[2], base_url=sys.argv[1], timeout=5.0),
    cache=CacheConfig(mode="off"),
    log=LogConfig(file="stderr", prompts=True),
)
engine = Engine(config)
started = time.monotonic()
outcomes = [str(engine.complete("openai/gpt-4o-mini", user=f"{i} " + "x" * 20_000).outcome) for i in range(50)]
print(json.dumps({"outcomes": outcomes, "seconds": time.monotonic() - started}), flush=True)
sys.stdin.readline()  # the test drains stderr, then lets us close
engine.close()
print(json.dumps({"dropped": engine.log_lines_dropped}), flush=True)
"""


@pytest.mark.slow
def test_an_undrained_stderr_pipe_never_blocks_calls(server: FaultServer) -> None:
    """Logging to a stderr nobody reads: 50 calls with 20 KB log lines all return at once; every line is either
    written or counted as dropped, and the drops are reported in exactly one line once stderr flows again."""
    child = _spawn(STALLED_PIPE_CHILD, server.url, API_KEY)
    line = _read_line(child, timeout=30)
    assert line, "the calls stalled behind the undrained stderr pipe"
    first = json.loads(line)
    assert first["outcomes"] == ["ok"] * 50
    assert first["seconds"] < 20

    assert child.stderr is not None
    assert child.stdin is not None
    stderr = child.stderr
    drained: list[bytes] = []
    drainer = threading.Thread(target=lambda: drained.append(stderr.read()))
    drainer.start()
    child.stdin.write(b"go\n")
    child.stdin.flush()
    last = json.loads(_read_line(child, timeout=30))
    child.wait(30)
    drainer.join(30)
    lines = [json.loads(x) for x in drained[0].splitlines() if x.startswith(b"{")]
    written = sum(1 for x in lines if x["event"] in ("engine_started", "llm_call"))
    reports = [x for x in lines if x["event"] == "log_lines_dropped"]
    assert last["dropped"] > 0
    assert written + last["dropped"] == 51
    assert len(reports) == 1
    assert reports[0]["dropped_total"] == last["dropped"]


FORK_CHILD = """
import os, sys, threading, time
import resilient_llm

def calls():  # big log lines: stderr (a pipe nobody reads) fills and the log write in progress blocks
    for i in range(5):
        resilient_llm.complete("openai/gpt-4o-mini", user=f"{i} " + "x" * 40_000)

threading.Thread(target=calls, daemon=True).start()
time.sleep(1.5)
pid = os.fork()
if pid == 0:
    answer = []
    worker = threading.Thread(target=lambda: answer.append(resilient_llm.complete("openai/gpt-4o-mini", user="child")))
    worker.daemon = True
    worker.start()
    worker.join(15)
    os.write(1, (str(answer[0].outcome) if answer else "hung").encode() + b"\\n")
    os._exit(0)
print("forked", flush=True)
_, status = os.waitpid(pid, 0)
os._exit(0)
"""


@pytest.mark.slow
def test_a_fork_during_a_blocked_log_write_leaves_the_child_working(server: FaultServer) -> None:
    """A fork while a log line is being written to a full stderr pipe: the child's first call returns."""
    env = dict(
        os.environ,
        OPENAI_API_KEY=API_KEY,
        OPENAI_API_BASE=server.url,
        RESILIENT_LLM_LOG_FILE="stderr",
        RESILIENT_LLM_LOG_PROMPTS="true",
        RESILIENT_LLM_CACHE="off",
    )
    child = _spawn(FORK_CHILD, env=env)
    lines = [_read_line(child, timeout=30), _read_line(child, timeout=30)]
    child.kill()
    child.communicate()
    assert sorted(lines) == [b"forked\n", b"ok\n"]
