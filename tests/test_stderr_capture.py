"""LiteLLM's stderr noise during the bench goes to a file, counted in one line after the table."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from resilient_llm.cli.stderr_capture import classify, summary

SCRIPT = textwrap.dedent(
    """
    import asyncio, atexit, gc, logging, os, sys, threading
    from pathlib import Path
    from resilient_llm.cli.stderr_capture import StderrCapture

    atexit.register(lambda: print("atexit of a library imported before", file=sys.stderr))
    print("before", file=sys.stderr, flush=True)
    with StderrCapture(Path(sys.argv[1])) as capture:
        print("python-level write", file=sys.stderr)
        os.write(2, b"fd-level write\\n")
        worker = threading.Thread(target=lambda: print("from a thread", file=sys.stderr))
        worker.start()
        worker.join()
        logging.getLogger("asyncio").error("via logging's last resort")

        async def fails():
            raise ValueError("nobody awaited me")

        loop = asyncio.new_event_loop()
        task = loop.create_task(fails())
        loop.run_until_complete(asyncio.sleep(0.01))
        del task  # "Task exception was never retrieved", with a traceback, when collected
    print("after", file=sys.stderr, flush=True)
    capture.until_exit()
    pending = loop.create_task(asyncio.sleep(60))  # destroyed while pending at interpreter exit
    """
)

LITELLM_CHAIN = """\
Task exception was never retrieved
future: <Task finished coro=<LoggingWorker._worker_loop() defined at /x/litellm/logging_worker.py:252>>
Traceback (most recent call last):
  File "/py/asyncio/tasks.py", line 476, in wait_for
    await waiter
asyncio.exceptions.CancelledError

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/x/litellm/litellm_core_utils/logging_worker.py", line 208, in _process_log_task
    await asyncio.wait_for(callback_task, timeout=self.timeout)
RuntimeError: <Queue at 0x7f> is bound to a different event loop
Task was destroyed but it is pending!
"""

OURS = """\
Traceback (most recent call last):
  File "/x/resilient_llm/engine.py", line 10, in run
    raise KeyError("state")
KeyError: 'state'
"""


def test_capture_takes_every_writer_to_stderr_and_the_shutdown_too(tmp_path: Path) -> None:
    """Python, fd-level, thread, last-resort and exit-time writes all land in the file, none on the real stderr."""
    log = tmp_path / "stderr.log"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, timeout=60, cwd=Path.cwd()
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "before\nafter\n"
    held = log.read_text()
    for line in ("python-level write", "fd-level write", "from a thread", "via logging's last resort"):
        assert line in held
    assert "Task exception was never retrieved" in held
    assert "ValueError: nobody awaited me" in held
    assert held.index("atexit of a library imported before") > held.index("nobody awaited me")
    assert "Task was destroyed but it is pending!" in held


def test_chained_tracebacks_count_each_and_are_attributed_by_frames_or_header(tmp_path: Path) -> None:
    """A LiteLLM chain counts two tracebacks of LiteLLM's; one of ours that follows it is not LiteLLM's."""
    noise = classify(LITELLM_CHAIN + OURS)
    assert (noise.litellm_tracebacks, noise.other_tracebacks, noise.litellm_logging_worker) == (2, 1, True)
    log = tmp_path / "bench.stderr.log"
    log.write_text(LITELLM_CHAIN + OURS)
    assert summary(log) == [
        f"LiteLLM printed 2 tracebacks: its logging worker is bound to a closed event loop; see {log}",
        f"stderr also held 1 traceback not from LiteLLM: see {log}",
    ]
    log.write_text("")
    assert summary(log) == []


def run_in_a_terminal(argv: list[str], cwd: Path, timeout_s: float) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal, as a user sees it (Rich draws its progress bar there)."""
    terminal, child_side = pty.openpty()
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="200", TERM="xterm")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=child_side, stderr=child_side, env=env, cwd=cwd)
    os.close(child_side)
    chunks = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not select.select([terminal], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        process.kill()
        os.close(terminal)
    return returncode, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))


@pytest.mark.slow
def test_bench_in_a_terminal_shows_no_traceback_and_counts_litellms(tmp_path: Path) -> None:
    """The trainer pattern through LiteLLM (its noisiest cell): no traceback on screen, the count names the file."""
    argv = [sys.executable, "-m", "resilient_llm.cli", "bench", "--quick", "--profiles", "clean"]
    argv += ["--clients", "litellm", "--patterns", "trainer", "--calls", "24", "--out", str(tmp_path), "--no-plots"]
    returncode, screen = run_in_a_terminal(argv, tmp_path, timeout_s=90)
    assert returncode == 0, screen[-3000:]
    assert "Traceback" not in screen
    assert "resilient-llm bench" in screen
    assert f"results: {tmp_path / 'bench.json'}" in screen
    log = tmp_path / "bench.stderr.log"
    printed = log.read_text().count("Traceback (most recent call last):") if log.exists() else 0
    if printed:
        assert f"LiteLLM printed {printed} traceback" in screen
        assert str(log) in screen
    else:
        assert "LiteLLM printed" not in screen
