"""The shared limit against a real redis-server: permits in blocks, per-model limits and gates under the endpoint's
ceiling, the shared value, several processes, faults."""

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


MODEL = "openai/gpt-4o-mini"
OTHER = "meta-llama/llama-3.3-70b-instruct:free"


def test_permits_up_to_the_limit_then_refused(make_limit: Callable[..., SharedLimit]) -> None:
    """Three permits at limit 3 (in blocks: two, then one of two asked), the fourth refused; a release makes room
    (each of the two processes may hold its share, two of the three)."""
    one, two = make_limit(), make_limit()
    first = one.reserve(MODEL, 2, 3)
    second = two.reserve(MODEL, 2, 3)
    assert (len(first.permits), len(second.permits)) == (2, 1)
    assert (first.model_in_flight, second.model_in_flight) == (2, 3)
    refused = two.reserve(MODEL, 1, 3)
    assert refused.permits == ()
    assert refused.model_in_flight == 3
    assert (one.held, two.held, one.in_flight(MODEL), one.in_flight()) == (2, 1, 3, 3)
    one.release(MODEL, first.permits[:1])
    assert len(two.reserve(MODEL, 5, 3).permits) == 1


def test_each_model_has_its_own_limit_under_the_endpoint_ceiling(make_limit: Callable[..., SharedLimit]) -> None:
    """A model at its limit does not stop another; both together stop at the endpoint's ceiling."""
    one = make_limit(max_limit=5)
    assert len(one.reserve(MODEL, 10, 3).permits) == 3
    assert one.reserve(MODEL, 1, 3).permits == ()
    other = one.reserve(OTHER, 10, 4)
    assert len(other.permits) == 2  # 3 + 2 = the ceiling of 5
    assert (other.model_in_flight, other.in_flight) == (2, 5)
    assert (one.in_flight(MODEL), one.in_flight(OTHER), one.in_flight()) == (3, 2, 5)


def test_processes_using_a_model_share_its_limit_fairly(make_limit: Callable[..., SharedLimit]) -> None:
    """Alone, a process may hold the whole limit of 8; once another asks too, each may hold half: the first learns
    its share from sync and the second gets the permits the first gives back."""
    one, two = make_limit(), make_limit()
    first = one.reserve(MODEL, 8, 8)
    assert (len(first.permits), first.fair) == (8, 8)
    second = two.reserve(MODEL, 8, 8)
    assert (second.permits, second.fair) == ((), 4)
    assert one.sync([MODEL])[MODEL].fair == 0  # no shared value stored: the share comes with reserve
    one.publish_limit(MODEL, 8)
    assert one.sync([MODEL])[MODEL].fair == 4
    one.release(MODEL, first.permits[:4])
    assert len(two.reserve(MODEL, 8, 8).permits) == 4
    assert len(one.reserve(MODEL, 8, 8).permits) == 0  # holds its share already


def test_the_shared_value_overrides_the_argument(make_limit: Callable[..., SharedLimit]) -> None:
    """Once a model's limit is stored, every process reserves against it, whatever limit it passes; the other
    model's is its own."""
    one, two = make_limit(), make_limit()
    assert one.shared_limit(MODEL) is None
    one.publish_limit(MODEL, 2.7)
    assert two.shared_limit(MODEL) == 2.7
    got = two.reserve(MODEL, 5, 50)
    assert (len(got.permits), got.limit) == (2, 2.7)
    assert two.shared_limit(OTHER) is None
    assert len(two.reserve(OTHER, 5, 50).permits) == 5


def test_growth_adds_up_and_one_overload_cuts_once(make_limit: Callable[..., SharedLimit]) -> None:
    """Adds from two processes both count; of two cuts for one overload only the first applies; bounds hold."""
    one, two = make_limit(min_limit=2, max_limit=256), make_limit(min_limit=2, max_limit=256)
    assert one.add_to_limit(MODEL, 1.5, initial=20) == 21.5
    assert two.add_to_limit(MODEL, 0.5, initial=20) == 22.0
    generation = one.reserve(MODEL, 1, 22).generation
    assert two.reserve(MODEL, 1, 22).generation == generation
    assert one.cut_limit(MODEL, 19.8, generation, initial=20) == (19.8, True)
    assert two.cut_limit(MODEL, 18.0, generation, initial=20) == (19.8, False)  # the same overload, already paid
    assert two.reserve(MODEL, 1, 22).generation == generation + 1
    assert one.add_to_limit(MODEL, 10_000, initial=20) == 256
    assert one.cut_limit(MODEL, 0.5, generation + 1, initial=20) == (2.0, True)
    assert one.shared_limit(OTHER) is None  # another model's limit is untouched


def test_growth_learnt_before_a_cut_does_not_undo_it(make_limit: Callable[..., SharedLimit]) -> None:
    """An add under the generation a cut has replaced is dropped; under the current one (or none) it applies."""
    one, two = make_limit(), make_limit()
    generation = one.reserve(MODEL, 1, 20).generation
    assert two.cut_limit(MODEL, 18.0, generation, initial=20) == (18.0, True)
    assert one.add_to_limit(MODEL, 2.0, initial=20, generation=generation) == 18.0  # admitted before the cut
    assert one.add_to_limit(MODEL, 2.0, initial=20, generation=generation + 1) == 20.0
    assert one.add_to_limit(MODEL, 0.5, initial=20) == 20.5


def test_the_gate_holds_every_process_back_for_its_model_only(make_limit: Callable[..., SharedLimit]) -> None:
    """A shut gate refuses the model's permits to all until it expires, not another model's; a shorter Retry-After
    does not shorten it."""
    one, two = make_limit(), make_limit()
    assert one.gate_remaining(MODEL) == 0
    assert one.set_gate(MODEL, 0.6) == pytest.approx(0.6)
    assert two.set_gate(MODEL, 0.1) > 0.3
    refused = two.reserve(MODEL, 1, 10)
    assert refused.permits == ()
    assert 0 < refused.gate_s <= 0.6
    assert len(two.reserve(OTHER, 1, 10).permits) == 1
    waited = wait_for(lambda: two.gate_remaining(MODEL) == 0, within=3.0)
    assert waited < 1.5
    assert len(two.reserve(MODEL, 1, 10).permits) == 1


def test_the_gate_never_outlives_the_cap(make_limit: Callable[..., SharedLimit], redis_server: RedisServer) -> None:
    """Retry-After 3600 s written to the gate lasts the cap (0.5 s here) in Redis: a process started after it
    finds the gate open once the cap has passed, not an hour later."""
    one = make_limit(gate_cap_s=0.5)
    assert one.set_gate(MODEL, 3600) == pytest.approx(0.5)
    wait_for(lambda: one.gate_remaining(MODEL) == 0, within=2.0)
    later = make_limit(gate_cap_s=0.5)
    assert len(later.reserve(MODEL, 1, 10).permits) == 1


def test_unrenewed_permits_expire_and_sync_puts_them_back(make_limit: Callable[..., SharedLimit]) -> None:
    """Permits not renewed within lease_s are dropped; the next sync re-adds those this process still holds."""
    limit = make_limit(lease_s=0.3)
    assert len(limit.reserve(MODEL, 3, 10).permits) == 3
    wait_for(lambda: limit.in_flight(MODEL) == 0, within=3.0)
    view = limit.sync([MODEL])[MODEL]
    assert view.in_flight == 3
    assert limit.in_flight() == 3


@pytest.mark.slow
def test_sync_keeps_permits_alive_and_reads_limit_and_gate(make_limit: Callable[..., SharedLimit]) -> None:
    """One sync every lease_s / 3 keeps every permit held well past its lease; it reads each model's limit and gate."""
    limit, other = make_limit(lease_s=0.3), make_limit()
    assert len(limit.reserve(MODEL, 4, 10).permits) == 4
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        limit.sync([MODEL])
        time.sleep(0.1)
    assert limit.in_flight(MODEL) == 4
    other.publish_limit(MODEL, 7.0)
    other.set_gate(OTHER, 1.0)
    views = limit.sync([MODEL, OTHER])
    assert (views[MODEL].limit, views[MODEL].gate_s, views[OTHER].limit) == (7.0, 0, None)
    assert 0 < views[OTHER].gate_s <= 1.0


HOLDER = """
import sys, time
from resilient_llm.stores.shared_limit import SharedLimit
class Quiet:
    def warning(self, *a, **k): pass
    info = warning
limit = SharedLimit(sys.argv[1], sys.argv[2], Quiet(), lease_s=float(sys.argv[3]))
assert len(limit.reserve("m", 5, 10).permits) == 5
print("READY", flush=True)
while True:
    limit.sync(["m"])
    time.sleep(limit.lease_s / 3)
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
        assert observer.reserve("m", 1, 5).permits == ()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        returned = wait_for(lambda: observer.in_flight() == 0, within=lease_s + 3.0)
        assert returned <= lease_s + 0.5
        assert len(observer.reserve("m", 1, 5).permits) == 1
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
        while not (got := store.reserve(MODEL, 2, limit)).permits:
            time.sleep(0.001)
        holding = int(witness.incrby("test:holding", len(got.permits)))  # counted by the holders themselves
        most = max(most, holding, got.model_in_flight)
        time.sleep(0.001)
        witness.decrby("test:holding", len(got.permits))
        store.release(MODEL, got.permits)
    results.put(most)
    store.close()


@pytest.mark.slow
def test_concurrent_acquirers_in_several_processes_never_exceed_the_limit(redis_server: RedisServer) -> None:
    """4 processes x 75 reserves of up to 2 against a limit of 5: never more than 5 held at once, all served."""
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
    assert limit.reserve(MODEL, 1, 10).permits
    redis_server.kill()
    calls: list[Callable[[], object]] = [
        lambda: limit.reserve(MODEL, 1, 10),
        lambda: limit.sync([MODEL]),
        limit.in_flight,
        lambda: limit.set_gate(MODEL, 1.0),
    ]
    for call in calls:
        with pytest.raises(SharedLimitDown):
            call()
    started = time.monotonic()
    with pytest.raises(SharedLimitDown):
        limit.shared_limit(MODEL)
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
    assert limit.reserve(MODEL, 1, 10).permits
    pid = redis_server._process.pid if redis_server._process else None
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(SharedLimitDown):
            limit.reserve(MODEL, 1, 10)
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
        limit.reserve(MODEL, 1, 0)
    with pytest.raises(ConfigError, match="wanted=0"):
        limit.reserve(MODEL, 0, 1)
    with pytest.raises(ConfigError, match="seconds=-1"):
        limit.set_gate(MODEL, -1)
