"""Eight trainer processes sharing one endpoint through Redis, against real processes (issues 11 and 12's fleet
acceptance): the shared limit under a capacity of 40, one process SIGKILLed, Redis killed, and a shared breaker
through a 10 s outage.

    python -m benchmarks.fleet [--repeats 2] [--processes 8]

Every process is ``resilient_llm/testing/fleet_worker.py`` (the process-wide engine, configured from the
environment), the endpoint a ``RemoteFaultServer``, Redis a real server (``resilient_llm/testing/redis_server.py``);
``resilient_llm/testing/fleet_watch.py`` samples the server's counters and the shared limit's Redis keys from outside.
Results: ``benchmarks/results/fleet.json`` and ``fleet.md``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.fleet_report import markdown
from resilient_llm.testing.fleet_watch import Watch, outage_hits, periods, silent_process
from resilient_llm.testing.fleet_worker import Fleet
from resilient_llm.testing.redis_server import RedisServer
from resilient_llm.testing.remote import RemoteFaultServer

RESULTS = Path(__file__).parent / "results"
CAPACITY = 40
LEASE_S = 10.0  # the shared limit's lease (stores/shared_limit.py's default)
LIMIT_REDIS, BREAKER_REDIS = "RESILIENT_LLM_LIMIT_REDIS_URL", "RESILIENT_LLM_BREAKER_REDIS_URL"


def per_second(calls: list[dict[str, Any]], seconds: float, keep: Callable[[dict[str, Any]], bool]) -> list[int]:
    """Calls finished in each one-second window after ``go``."""
    counts = collections.Counter(int(c["t1"]) for c in calls if keep(c) and 0 <= c["t1"] < seconds)
    return [counts[i] for i in range(int(seconds))]


def rate(calls: list[dict[str, Any]], start: float, end: float, keep: Callable[[dict[str, Any]], bool]) -> float:
    return sum(1 for c in calls if keep(c) and start <= c["t1"] < end) / max(end - start, 1e-9)


def outcomes(calls: list[dict[str, Any]]) -> dict[str, int]:
    return dict(collections.Counter(c["outcome"] for c in calls))


def shared_limit_bound(watch: Watch) -> dict[str, Any]:
    """What the server saw in flight beside what the shared limit allowed, over every sample."""
    limits = [int(s.limit) for s in watch.samples if s.limit is not None]
    holders = [sum(s.holders.values()) for s in watch.samples if s.holders is not None]
    over = [s.server["in_flight"] - sum(s.holders.values()) for s in watch.samples if s.holders is not None]
    last = watch.samples[-1].server
    return {
        "server_peak_in_flight": last["peak_in_flight"],
        "server_peak_admitted": last["peak_admitted"],
        "shared_limit_max": max(limits, default=None),
        "shared_limit_median": statistics.median(limits) if limits else None,
        "permits_held_max": max(holders, default=None),
        "server_in_flight_minus_permits_max": max(over, default=None),
        "requests": last["requests"],
        "capacity_refusals": last["capacity_refusals"],
        "refusal_share": last["capacity_refusals"] / max(1, last["requests"]),
    }


@contextlib.contextmanager
def fleet_run(
    directory: Path, processes: int, callers: int, seconds: float, shared: str, server: RemoteFaultServer, watch: bool
) -> Iterator[tuple[RedisServer, Fleet, Watch]]:
    """Redis, ``processes`` workers sharing it through the variable ``shared``, started and let go for ``seconds``,
    and a watch on the server (and on the shared limit's keys when ``watch``) from the moment they went."""
    with server:
        redis = RedisServer(directory).start()
        try:
            with Fleet(processes, callers, server.url, {shared: redis.url}, directory) as fleet:
                fleet.start()
                server.reset_stats()
                fleet.go(seconds)
                redis_url = redis.url if watch else None
                yield redis, fleet, Watch(server, redis_url, every_s=0.1 if watch else 0.05).start(at=fleet.started_at)
        finally:
            redis.kill()


def sigkill_run(directory: Path, processes: int, callers: int, seconds: float, kill_at: float) -> dict[str, Any]:
    """The shared limit at capacity 40; one process SIGKILLed at ``kill_at``: when do its permits come back?"""
    server = RemoteFaultServer("capacity", capacity=CAPACITY)
    with fleet_run(directory, processes, callers, seconds, LIMIT_REDIS, server, watch=True) as (_, fleet, watch):
        time.sleep(kill_at)
        killed_at = watch.mark("kill")
        fleet.kill(0)
        dead = None
        if watch.wait_for(lambda s: s.t >= killed_at + 2.0, within=5.0) is not None:
            dead = silent_process(watch.samples, killed_at, 1.5)
        held = next((s.holders for s in watch.samples if s.t >= killed_at + 0.2 and s.holders), None)
        summaries = fleet.finish()
        watch.stop()
        calls = fleet.calls()
    returned = next(
        (s.t for s in watch.samples if dead and s.t > killed_at and s.holders is not None and dead not in s.holders),
        None,
    )
    back_at = returned
    survivors: Callable[[dict[str, Any]], bool] = lambda c: c["worker"] != "worker-0"  # noqa: E731
    everyone: Callable[[dict[str, Any]], bool] = lambda c: True  # noqa: E731
    after = (back_at or seconds) + 1.0
    return {
        "processes": processes,
        "callers_per_process": callers,
        "seconds": seconds,
        "killed_at_s": round(killed_at, 2),
        "killed_held_permits": None if dead is None or held is None else held.get(dead, 0),
        "killed_permits_back_after_s": None if returned is None else round(returned - killed_at, 2),
        "lease_s": LEASE_S,
        "calls_per_s": {
            "all_before_kill": rate(calls, 2.0, killed_at, everyone),
            "survivors_before_kill": rate(calls, 2.0, killed_at, survivors),
            "survivors_while_leases_run": rate(calls, killed_at, back_at or seconds, survivors),
            "survivors_after_return": rate(calls, after, seconds, survivors),
        },
        "per_second_all": per_second(calls, seconds, everyone),
        "per_second_survivors": per_second(calls, seconds, survivors),
        "outcomes": outcomes(calls),
        "survivor_summaries": [s for s in summaries if s is not None],
        **shared_limit_bound(watch),
    }


def redis_kill_run(
    directory: Path, processes: int, callers: int, seconds: float, down: tuple[float, float]
) -> dict[str, Any]:
    """The shared limit at capacity 40 with Redis killed at ``down[0]`` and started again at ``down[1]``."""
    server = RemoteFaultServer("capacity", capacity=CAPACITY)
    with fleet_run(directory, processes, callers, seconds, LIMIT_REDIS, server, watch=True) as (redis, fleet, watch):
        time.sleep(down[0])
        watch.mark("redis_killed")
        redis.kill()
        time.sleep(down[1] - down[0])
        redis.start()
        watch.mark("redis_back")
        fleet.finish()
        watch.stop()
        calls = fleet.calls()
        events = fleet.events("shared_limit_fault", "shared_limit_recovered")
    phases = {"before": (0.0, down[0]), "redis_down": down, "after": (down[1], seconds)}
    refusals = {}
    for name, (start, end) in phases.items():
        inside = [s.server for s in watch.samples if start <= s.t < end]
        if len(inside) >= 2:
            asked = inside[-1]["requests"] - inside[0]["requests"]
            refusals[name] = (inside[-1]["capacity_refusals"] - inside[0]["capacity_refusals"]) / max(1, asked)
    everyone: Callable[[dict[str, Any]], bool] = lambda c: True  # noqa: E731
    return {
        "processes": processes,
        "callers_per_process": callers,
        "seconds": seconds,
        "redis_down_s": list(down),
        "outcomes": outcomes(calls),
        "calls": len(calls),
        "calls_per_s": {name: rate(calls, start, end, everyone) for name, (start, end) in phases.items()},
        "refusal_share": refusals,
        "per_second_all": per_second(calls, seconds, everyone),
        "fault_lines": sum(1 for e in events if e["event"] == "shared_limit_fault"),
        "recovery_lines": sum(1 for e in events if e["event"] == "shared_limit_recovered"),
        "server_peak_admitted": watch.samples[-1].server["peak_admitted"],
        "server_peak_in_flight": watch.samples[-1].server["peak_in_flight"],
    }


def breaker_run(
    directory: Path, processes: int, callers: int, seconds: float, down: tuple[float, float]
) -> dict[str, Any]:
    """A shared breaker (and limit) through a manual outage (connections reset) from ``down[0]`` to ``down[1]``."""
    server = RemoteFaultServer("clean", latency_s=0.2)
    with fleet_run(directory, processes, callers, seconds, BREAKER_REDIS, server, watch=False) as (_, fleet, watch):
        time.sleep(down[0])
        server.set_down(True, kind="reset")
        went_down = watch.mark("down")
        time.sleep(down[1] - down[0])
        server.set_down(False)
        came_up = watch.mark("up")
        fleet.finish()
        watch.stop()
        calls = fleet.calls()
    hits = outage_hits(watch.samples, went_down)
    trips = [t - went_down for t in fleet.trips()]
    # Sent before the breaker tripped (or in flight as it did); the first trial is due a reset_timeout (1 s) later.
    trial_from = min(trips, default=0.0) + 0.9
    burst = [t for t in hits if t < trial_from]
    trials = [t for t in hits if t >= trial_from]
    grouped = periods(trials, gap=0.5)  # trials are at least reset_timeout (1 s) apart
    spanning = [c for c in calls if c["t0"] < came_up and c["t1"] > went_down]
    everyone: Callable[[dict[str, Any]], bool] = lambda c: True  # noqa: E731
    return {
        "processes": processes,
        "callers_per_process": callers,
        "seconds": seconds,
        "outage_s": list(down),
        "requests_into_outage": len(hits),
        "breaker_tripped_after_s": round(min(trips), 2) if trips else None,
        "burst_at_outage_start": len(burst),
        "trials": len(trials),
        "trial_periods": [{"at_s": p[0], "requests": len(p)} for p in grouped],
        "most_requests_in_one_period": max((len(p) for p in grouped), default=0),
        "outcomes": outcomes(calls),
        "calls_through_outage": len(spanning),
        "last_of_them_done_after_recovery_s": max((c["t1"] - came_up for c in spanning), default=None),
        "per_second_all": per_second(calls, seconds, everyone),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "fleet",
        "command": "python -m benchmarks.fleet " + f"--repeats {args.repeats} --processes {args.processes}",
        "capacity": CAPACITY,
        "sigkill": [],
        "redis_kill": [],
        "breaker": [],
    }
    started = time.monotonic()
    for repeat in range(args.repeats):
        for name, run in (
            ("sigkill", lambda d: sigkill_run(d, args.processes, 16, 32.0, 10.0)),
            ("redis_kill", lambda d: redis_kill_run(d, args.processes, 16, 24.0, (8.0, 16.0))),
            ("breaker", lambda d: breaker_run(d, args.processes, 8, 24.0, (4.0, 14.0))),
        ):
            with tempfile.TemporaryDirectory(prefix=f"fleet-{name}-") as directory:
                result = run(Path(directory))
            report[name].append(result)
            print(f"{name} #{repeat + 1}: {json.dumps({k: v for k, v in result.items() if 'per_second' not in k})}")
    report["wall_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "fleet.md").write_text(markdown(report))
    print(f"wrote {RESULTS / 'fleet.json'} and fleet.md in {report['wall_s']} s")


if __name__ == "__main__":
    main()
