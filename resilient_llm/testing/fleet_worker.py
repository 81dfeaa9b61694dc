"""A fleet of processes calling one endpoint: the worker (a child process) and ``Fleet``, which starts and steers them.

A worker makes ``callers`` concurrent calls in a loop through the process-wide engine, configured from the
environment as a trainer's would be (the shared Redis limit or breaker included), one line per finished call:

    python -m resilient_llm.testing.fleet_worker --out calls.jsonl --callers 16

Prints ``READY`` once its engine is up, then waits for a line ``go <seconds>`` on stdin and calls for that long;
calls in flight at the end are awaited (every call returns exactly once) and a ``DONE {...}`` summary is printed.
Each line of ``--out`` is ``{"worker", "t0", "t1", "outcome", "attempts"}`` with wall-clock times, written as the call
ends, so a worker killed with SIGKILL leaves the record of every call it finished. Used by ``benchmarks/fleet.py``
and ``tests/test_processes_sharing_an_endpoint.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import resilient_llm

MODEL = "openai/gpt-4o-mini"
API_KEY = "sk-fleet-local-0123456789"
ROOT = Path(__file__).resolve().parents[2]  # where ``python -m resilient_llm.testing.fleet_worker`` is found


async def run(worker: str, callers: int, seconds: float, out: TextIO) -> collections.Counter[str]:
    until = time.time() + seconds
    outcomes: collections.Counter[str] = collections.Counter()

    async def caller(index: int) -> None:
        n = 0
        while time.time() < until:
            started = time.time()
            # A prompt of its own for every call: nothing may be served from a cache or shared in flight.
            prompt = f"{worker} caller {index} call {n}"
            try:
                result = await resilient_llm.acomplete(MODEL, [{"role": "user", "content": prompt}], max_tokens=8)
                outcome, attempts = str(result.outcome), result.attempts
            except Exception as exc:  # the library promised a result: a raise is a finding, recorded as such
                outcome, attempts = f"raised {type(exc).__name__}", 0
            outcomes[outcome] += 1
            line = {"worker": worker, "t0": started, "t1": time.time(), "outcome": outcome, "attempts": attempts}
            out.write(json.dumps(line) + "\n")
            n += 1

    await asyncio.gather(*(caller(i) for i in range(callers)))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", required=True, help="one JSON line per finished call")
    parser.add_argument("--callers", type=int, default=16, help="calls in flight at once from this process")
    parser.add_argument("--name", default="worker")
    args = parser.parse_args()
    resilient_llm.default_engine()  # start-up (imports, Redis connections) before the clock starts
    print("READY", flush=True)
    command = sys.stdin.readline().split()
    if len(command) != 2 or command[0] != "go":
        raise SystemExit(f"expected 'go <seconds>' on stdin, got {command}")
    with open(args.out, "a", buffering=1) as out:  # line-buffered: each call's line is on disk as it ends
        outcomes = asyncio.run(run(args.name, args.callers, float(command[1]), out))
    resilient_llm.shutdown()
    print("DONE", json.dumps(dict(outcomes)), flush=True)


class Fleet:
    """``size`` worker processes against ``base_url``, each configured by ``env`` on top of ours; files in ``directory``
    (``worker-<i>.calls.jsonl``, the call records; ``worker-<i>.log.jsonl``, the engine's own log)."""

    def __init__(self, size: int, callers: int, base_url: str, env: Mapping[str, str], directory: Path) -> None:
        self.directory = directory
        self._size, self._callers = size, callers
        self._env = {
            **os.environ,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_API_BASE": base_url,
            "RESILIENT_LLM_CACHE": "off",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.workers: list[subprocess.Popen[str]] = []
        self.killed: set[int] = set()
        self.started_at = 0.0

    def calls_path(self, index: int) -> Path:
        return self.directory / f"worker-{index}.calls.jsonl"

    def log_path(self, index: int) -> Path:
        return self.directory / f"worker-{index}.log.jsonl"

    def start(self, timeout: float = 60.0) -> Fleet:
        """Start every worker and wait until each has its engine up."""
        for i in range(self._size):
            argv = [sys.executable, "-m", "resilient_llm.testing.fleet_worker", "--out", str(self.calls_path(i))]
            argv += ["--callers", str(self._callers), "--name", f"worker-{i}"]
            env = {**self._env, "RESILIENT_LLM_LOG_FILE": str(self.log_path(i))}
            self.workers.append(
                subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            assert worker.stdout is not None
            line = worker.stdout.readline().strip()  # blocks; a worker that dies gives "" at once
            if line != "READY" or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"a fleet worker did not start: {line!r}")
        return self

    def go(self, seconds: float) -> None:
        """Every worker calls for ``seconds`` from now."""
        self.started_at = time.time()
        for worker in self.workers:
            assert worker.stdin is not None
            worker.stdin.write(f"go {seconds}\n")
            worker.stdin.flush()

    def kill(self, index: int) -> None:
        """SIGKILL one worker: no clean-up runs, its leases are left to expire."""
        os.kill(self.workers[index].pid, signal.SIGKILL)
        self.workers[index].wait()
        self.killed.add(index)

    def finish(self, timeout: float = 120.0) -> list[dict[str, int] | None]:
        """Wait for every live worker's summary (outcome counts); None for a killed one. A worker still running
        ``timeout`` seconds from now is killed: its calls did not all return."""
        deadline = time.monotonic() + timeout
        summaries: list[dict[str, int] | None] = []
        for i, worker in enumerate(self.workers):
            if i in self.killed:
                summaries.append(None)
                continue
            assert worker.stdout is not None
            ready, _, _ = select.select([worker.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = worker.stdout.readline().strip() if ready else ""
            if not ready:
                worker.kill()
            worker.wait(timeout)
            if not line.startswith("DONE "):
                raise RuntimeError(f"worker {i} ended without a summary (exit {worker.returncode}): {line!r}")
            summaries.append(json.loads(line.removeprefix("DONE ")))
        return summaries

    def calls(self) -> list[dict[str, Any]]:
        """Every finished call of every worker (a killed worker's up to its death), times relative to ``go``."""
        rows = []
        for i in range(len(self.workers)):
            path = self.calls_path(i)
            for line in path.read_text().splitlines() if path.exists() else []:
                if line.endswith("}"):  # a killed worker may leave half a line
                    row = json.loads(line)
                    row["t0"] -= self.started_at
                    row["t1"] -= self.started_at
                    rows.append(row)
        return rows

    def events(self, *names: str) -> list[dict[str, Any]]:
        """The engines' log lines with one of these event names, each with ``worker`` (its index) added."""
        found = []
        for i in range(len(self.workers)):
            path = self.log_path(i)
            for line in path.read_text().splitlines() if path.exists() else []:
                if line.endswith("}") and any(f'"{name}"' in line for name in names):
                    row = json.loads(line)
                    if row.get("event") in names:
                        found.append({**row, "worker": i})
        return found

    def trips(self) -> list[float]:
        """When a breaker tripped (closed -> open) in any worker, in seconds from ``go`` (from the log lines)."""
        return [
            datetime.datetime.fromisoformat(e["timestamp"]).timestamp() - self.started_at
            for e in self.events("breaker_state_change")
            if (e.get("from_state"), e.get("to_state")) == ("closed", "open")
        ]

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            for stream in (worker.stdin, worker.stdout):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
