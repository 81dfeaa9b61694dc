"""The shared limit against a real redis-server: leases, the gate, the shared value, several processes, faults."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilient_llm.errors import ConfigError
from resilient_llm.stores.shared_limit import SharedLimit, SharedLimitDown
from resilient_llm.testing.redis_server import RedisServer

ENDPOINT = "http://127.0.0.1:1/api/v1\nsk-or-v1-TESTKEY"


class Recorder:
    """A structlog-shaped logger that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))


@pytest.fixture
def make_limit(redis_server: RedisServer) -> Iterator[Callable[..., SharedLimit]]:
    made: list[SharedLimit] = []

    def make(**options: Any) -> SharedLimit:
        options.setdefault("logger", Recorder())
        limit = SharedLimit(redis_server.url, ENDPOINT, **options)
        made.append(limit)
        return limit

    yield make
    for limit in made:
        limit.close()


def wait_for(check: Callable[[], bool], within: float) -> float:
    """Seconds until ``check()`` held; fails after ``within``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "condition not reached in time"
        time.sleep(0.02)
    return time.monotonic() - started


def test_permits_up_to_the_limit_then_refused(make_limit: Callable[..., SharedLimit]) -> None:
    """Three permits at limit 3, the fourth refused; a release makes room; counts are across holders."""
    one, two = make_limit(), make_limit()
    leases = [one.try_acquire(3), two.try_acquire(3), one.try_acquire(3)]
    assert [a.in_flight for a in leases] == [1, 2, 3]
    assert all(a.lease for a in leases)
    refused = two.try_acquire(3)
    assert refused.lease is None
    assert refused.in_flight == 3
    assert (one.held, two.held, one.in_flight()) == (2, 1, 3)
    assert leases[0].lease is not None
    one.release(leases[0].lease)
    assert two.try_acquire(3).lease is not None


def test_the_shared_value_overrides_the_argument(make_limit: Callable[..., SharedLimit]) -> None:
    """Once a limit is stored, every process acquires against it, whatever limit it passes."""
    one, two = make_limit(), make_limit()
    assert one.shared_limit() is None
    one.publish_limit(2.7)
    assert two.shared_limit() == 2.7
    assert [two.try_acquire(50).lease is not None for _ in range(3)] == [True, True, False]
    assert two.try_acquire(50).limit == 2.7


def test_growth_adds_up_and_one_overload_cuts_once(make_limit: Callable[..., SharedLimit]) -> None:
    """Adds from two processes both count; of two cuts for one overload only the first applies; bounds hold."""
    one, two = make_limit(min_limit=2, max_limit=256), make_limit(min_limit=2, max_limit=256)
    assert one.add_to_limit(1.5, initial=20) == 21.5
    assert two.add_to_limit(0.5, initial=20) == 22.0
    generation = one.try_acquire(22).generation
    assert two.try_acquire(22).generation == generation
    assert one.cut_limit(19.8, generation, initial=20) == (19.8, True)
    assert two.cut_limit(18.0, generation, initial=20) == (19.8, False)  # the same overload, already paid for
    assert two.try_acquire(22).generation == generation + 1
    assert one.add_to_limit(10_000, initial=20) == 256
    assert one.cut_limit(0.5, generation + 1, initial=20) == (2.0, True)


def test_growth_learnt_before_a_cut_does_not_undo_it(make_limit: Callable[..., SharedLimit]) -> None:
    """An add under the generation a cut has replaced is dropped; under the current one (or none) it applies."""
    one, two = make_limit(), make_limit()
    generation = one.try_acquire(20).generation
    assert two.cut_limit(18.0, generation, initial=20) == (18.0, True)
    assert one.add_to_limit(2.0, initial=20, generation=generation) == 18.0  # admitted before the cut: stale
    assert one.add_to_limit(2.0, initial=20, generation=generation + 1) == 20.0
    assert one.add_to_limit(0.5, initial=20) == 20.5


def test_the_gate_holds_every_process_back_and_only_lengthens(make_limit: Callable[..., SharedLimit]) -> None:
    """A shut gate refuses permits to all until it expires; a shorter Retry-After does not shorten it."""
    one, two = make_limit(), make_limit()
    assert one.gate_remaining() == 0
    assert one.set_gate(0.6) == pytest.approx(0.6)
    assert two.set_gate(0.1) > 0.3
    refused = two.try_acquire(10)
    assert refused.lease is None
    assert 0 < refused.gate_s <= 0.6
    waited = wait_for(lambda: two.gate_remaining() == 0, within=3.0)
    assert waited < 1.5
    assert two.try_acquire(10).lease is not None


def test_unrenewed_leases_expire_and_renewal_reports_them(make_limit: Callable[..., SharedLimit]) -> None:
    """Leases not renewed within lease_s are dropped; renew says how many were lost and forgets them."""
    limit = make_limit(lease_s=0.3)
    for _ in range(3):
        assert limit.try_acquire(10).lease is not None
    wait_for(lambda: limit.in_flight() == 0, within=3.0)
    assert limit.renew() == 3
    assert limit.held == 0


@pytest.mark.slow
def test_renewal_keeps_leases_alive(make_limit: Callable[..., SharedLimit]) -> None:
    """One renew every lease_s / 3 keeps every permit of the process held well past its lease."""
    limit = make_limit(lease_s=0.3)
    for _ in range(4):
        assert limit.try_acquire(10).lease is not None
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        assert limit.renew() == 0
        time.sleep(limit.renew_every_s)
    assert limit.in_flight() == 4


HOLDER = """
import sys, time
from resilient_llm.stores.shared_limit import SharedLimit
class Quiet:
    def warning(self, *a, **k): pass
    info = warning
limit = SharedLimit(sys.argv[1], sys.argv[2], Quiet(), lease_s=float(sys.argv[3]))
for _ in range(5):
    assert limit.try_acquire(10).lease
print("READY", flush=True)
while True:
    limit.renew()
    time.sleep(limit.renew_every_s)
"""


@pytest.mark.slow
def test_a_process_killed_with_sigkill_gives_its_permits_back_within_the_lease(
    make_limit: Callable[..., SharedLimit], redis_server: RedisServer
) -> None:
    """A holder that renews keeps its 5 permits; SIGKILLed, they come back within lease_s."""
    lease_s = 1.0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server.url, ENDPOINT, str(lease_s)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "READY"
        observer = make_limit()
        time.sleep(2 * lease_s)  # renewed meanwhile
        assert observer.in_flight() == 5
        assert observer.try_acquire(5).lease is None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        returned = wait_for(lambda: observer.in_flight() == 0, within=lease_s + 3.0)
        assert returned <= lease_s + 0.5
        assert observer.try_acquire(5).lease is not None
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def _contend(url: str, limit: int, acquires: int, results: Any) -> None:
    """One of several processes: acquire, note how many hold one, release, again."""
    import redis

    store = SharedLimit(url, ENDPOINT, Recorder())
    witness = redis.Redis.from_url(url)
    most = 0
    for _ in range(acquires):
        while (got := store.try_acquire(limit)).lease is None:
            time.sleep(0.001)
        holding = int(witness.incr("test:holding"))  # counted by the holders themselves, not by the script
        most = max(most, holding, got.in_flight)
        time.sleep(0.001)
        witness.decr("test:holding")
        store.release(got.lease)
    results.put(most)
    store.close()


@pytest.mark.slow
def test_concurrent_acquirers_in_several_processes_never_exceed_the_limit(redis_server: RedisServer) -> None:
    """4 processes x 75 acquires against a limit of 5: never more than 5 held at once, every acquire served."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_contend, args=(redis_server.url, 5, 75, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    most = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)
        assert worker.exitcode == 0
    assert max(most) <= 5
    assert max(most) >= 2  # they did overlap


def test_redis_killed_mid_run_means_local_limiting_one_warning_and_a_recovery(
    make_limit: Callable[..., SharedLimit], redis_server: RedisServer
) -> None:
    """Redis gone: SharedLimitDown (no redis error leaks), fast while paused, one warning; back: one recovery line."""
    logger = Recorder()
    limit = make_limit(logger=logger, pause_s=0.5)
    assert limit.try_acquire(10).lease is not None
    redis_server.kill()
    for call in (lambda: limit.try_acquire(10), limit.renew, limit.in_flight, lambda: limit.set_gate(1.0)):
        with pytest.raises(SharedLimitDown):
            call()
    started = time.monotonic()
    with pytest.raises(SharedLimitDown):
        limit.shared_limit()
    assert time.monotonic() - started < 0.1  # paused: Redis is not tried again yet
    redis_server.start()
    wait_for(lambda: _works(limit), within=5.0)
    assert [(level, event) for level, event, _ in logger.lines] == [
        ("warning", "shared_limit_fault"),
        ("info", "shared_limit_recovered"),
    ]


def test_a_stalled_redis_counts_as_down(make_limit: Callable[..., SharedLimit], redis_server: RedisServer) -> None:
    """Redis that stops answering costs one short socket timeout, then SharedLimitDown."""
    limit = make_limit(pause_s=0.2)
    assert limit.try_acquire(10).lease is not None
    pid = redis_server._process.pid if redis_server._process else None
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(SharedLimitDown):
            limit.try_acquire(10)
        assert time.monotonic() - started < 2.0
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: _works(limit), within=5.0)


def _works(limit: SharedLimit) -> bool:
    try:
        limit.in_flight()
    except SharedLimitDown:
        return False
    return True


def test_bad_arguments_are_refused_by_name(make_limit: Callable[..., SharedLimit]) -> None:
    """A non-positive lease, limit or gate time is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="lease_s=0"):
        make_limit(lease_s=0)
    with pytest.raises(ConfigError, match="max_limit=1"):
        make_limit(min_limit=2, max_limit=1)
    limit = make_limit()
    with pytest.raises(ConfigError, match="limit=0"):
        limit.try_acquire(0)
    with pytest.raises(ConfigError, match="seconds=-1"):
        limit.set_gate(-1)
