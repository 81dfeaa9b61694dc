"""A call's ``waited_s`` (time spent waiting for an open breaker) is never more than the call took."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from resilient_llm import Engine, Outcome
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL, call_lines


@pytest.mark.slow
def test_a_call_that_probes_several_times_counts_its_wait_once(
    server: FaultServer, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """The only call in flight makes every trial of a 1.5 s outage: its waited_s stays within its latency."""
    engine = make_engine(breaker_fail_max=3, breaker_reset_timeout=0.2, timeout=20.0)
    server.down = True
    timer = threading.Timer(1.5, lambda: setattr(server, "down", False))
    timer.start()
    started = time.monotonic()
    result = engine.complete(MODEL, user="the lone prober")
    took = time.monotonic() - started
    timer.join()
    assert result.outcome is Outcome.OK
    assert server.stats()["requests_while_down"] >= 5  # three failures, then more than one failed trial
    line = call_lines(log_path)[-1]
    assert line["waited_s"] <= took
