"""Cancellation storms, then fresh calls: does the engine still send requests after thousands of cancelled calls?

    python -m benchmarks.cancel_storm [--seconds 80] [--calls 500] [--ceiling 4] [--latency 1] [--fresh 20]

Each storm starts ``--calls`` calls at once against a local server answering in ``--latency`` s, with at most
``--ceiling`` in flight, and cancels every one of them at a random moment: a few bursts (a trainer cancelling the
rollouts of a timed-out step) plus scattered single cancellations, so calls are cut at every stage (waiting for a
slot, connecting, waiting for the answer, reading it, releasing the connection). Storms repeat for ``--seconds``;
then ``--fresh`` calls must all come back real within ``--fresh-within`` s (issue 16's acceptance: 20 in 40 s).

Results: ``benchmarks/results/cancel_storm.json`` (per storm: cancelled calls, concurrency slots still held and pool
connections stuck once it is over; the fresh calls' outcomes and time; server requests). ``--out`` writes elsewhere
(e.g. to compare against an older checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import time
from pathlib import Path
from typing import Any

from resilient_llm import CacheConfig, Config, Engine, HTTPConfig, LimitConfig, LogConfig, Outcome, Secret
from resilient_llm.testing.fault_server import RemoteFaultServer

MODEL = "openai/gpt-4o-mini"
RESULTS = Path(__file__).parent / "results"


async def storm(engine: Engine, calls: int, seed: int, span_s: float) -> int:
    """One storm; returns how many calls ended cancelled."""
    rng = random.Random(seed)
    tasks = [asyncio.ensure_future(engine.acomplete(MODEL, user=f"storm {seed} call {i}")) for i in range(calls)]
    bursts = sorted(rng.uniform(0.0, span_s) for _ in range(4))
    started = time.monotonic()

    async def cancel(task: asyncio.Future[Any]) -> None:
        # Half the calls go in bursts (with a few ms of spread), half one by one at any moment.
        at = rng.choice(bursts) + rng.expovariate(500.0) if rng.random() < 0.5 else rng.uniform(0.0, span_s)
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        task.cancel()

    await asyncio.gather(*(cancel(t) for t in tasks))
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    return sum(isinstance(o, asyncio.CancelledError) for o in outcomes)


def stuck_connections(engine: Engine) -> int:
    """Pool connections neither idle nor closed while no call is in flight: each one is a slot lost for good."""
    pool = engine._stack.http._client._transport._pool  # type: ignore[attr-defined]  # httpx's private pool
    return sum(1 for c in list(pool.connections) if not c.is_idle() and not c.is_closed())


async def fresh_calls(engine: Engine, count: int, within_s: float) -> dict[str, Any]:
    started = time.monotonic()
    done, pending = await asyncio.wait(
        [asyncio.ensure_future(engine.acomplete(MODEL, user=f"fresh {i}")) for i in range(count)], timeout=within_s
    )
    for task in pending:
        task.cancel()
    outcomes = collections.Counter(
        str(t.result().outcome) if t.exception() is None else type(t.exception()).__name__ for t in done
    )
    real = outcomes.get(str(Outcome.OK), 0)
    return {
        "calls": count,
        "real": real,
        "not_back_within_limit": len(pending),
        "outcomes": dict(outcomes),
        "seconds": round(time.monotonic() - started, 2),
        "all_real_in_time": real == count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=80.0, help="total length of the storms")
    parser.add_argument("--calls", type=int, default=500, help="calls per storm")
    parser.add_argument("--ceiling", type=int, default=4, help="OPENROUTER_MAX_CONCURRENT_CALLS")
    parser.add_argument("--latency", type=float, default=1.0, help="server answer time, s")
    parser.add_argument("--span", type=float, default=4.0, help="length of one storm, s")
    parser.add_argument("--fresh", type=int, default=20)
    parser.add_argument("--fresh-within", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "cancel_storm.json")
    args = parser.parse_args()
    storms: list[dict[str, Any]] = []
    with RemoteFaultServer("clean", latency_s=args.latency) as server:
        # The library's defaults otherwise (600 s attempt timeout, 900 s deadline): a wedge shows as no answer.
        config = Config(
            http=HTTPConfig(api_key=Secret("sk-bench-local"), base_url=server.url),
            limit=LimitConfig(max_concurrent=args.ceiling),
            cache=CacheConfig(mode="off"),
            log=LogConfig(file="off"),
        )
        with Engine(config) as engine:
            began = time.monotonic()
            while time.monotonic() - began < args.seconds:
                seed = args.seed * 100_000 + len(storms)
                cancelled = asyncio.run(storm(engine, args.calls, seed, args.span))
                settle = time.monotonic() + 2.0  # let the last cancellations finish on the engine loop
                while (engine.in_flight or stuck_connections(engine)) and time.monotonic() < settle:
                    time.sleep(0.05)
                storms.append(
                    {
                        "seed": seed,
                        "cancelled": cancelled,
                        "slots_held_after": engine.in_flight,
                        "stuck_connections_after": stuck_connections(engine),
                    }
                )
            requests_in_storms = server.stats()["requests"]
            fresh = asyncio.run(fresh_calls(engine, args.fresh, args.fresh_within))
            renewals = getattr(engine._stack.http, "pool_renewals", None)
        report = {
            "benchmark": "cancel_storm",
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "storms": len(storms),
            "calls_cancelled": sum(s["cancelled"] for s in storms),
            "server_requests_during_storms": requests_in_storms,
            "stuck_connections_after_storms": storms[-1]["stuck_connections_after"],
            "pool_renewals": renewals,
            "fresh": fresh,
            "per_storm": storms,
        }
    print(json.dumps({k: v for k, v in report.items() if k != "per_storm"}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
