"""What the shared limit costs per attempt: ``try_acquire`` + ``release`` against a local redis-server.

    python -m benchmarks.shared_limit [--ops 3000] [--threads 1,8,32]

Each attempt through a shared limit makes these two round trips. Threads stand for ``asyncio.to_thread`` calls in
flight at once. Redis: a real server (``resilient_llm/testing/redis_server.py``).
Results: ``benchmarks/results/shared_limit.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from resilient_llm.policy.percentiles import percentiles
from resilient_llm.stores.shared_limit import SharedLimit
from resilient_llm.testing.redis_server import RedisServer

RESULTS = Path(__file__).parent / "results"


class Quiet:
    def warning(self, *args: Any, **fields: Any) -> None: ...

    info = warning


def measure(limit: SharedLimit, ops: int, threads: int) -> dict[str, Any]:
    def one(_: int) -> float:
        started = time.perf_counter()
        got = limit.try_acquire(10_000)
        assert got.lease is not None
        limit.release(got.lease)
        return (time.perf_counter() - started) * 1e6

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        took = list(pool.map(one, range(ops)))
        wall = time.perf_counter() - started
    return {"threads": threads, "pairs_per_s": ops / wall, "pair_us": percentiles(took)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--threads", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report: dict[str, Any] = {"benchmark": "shared_limit", "ops": args.ops, "runs": []}
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory)).start()
        try:
            limit = SharedLimit(server.url, "bench endpoint", Quiet())
            for threads in (int(t) for t in args.threads.split(",")):
                for _ in range(args.repeats):
                    run = measure(limit, args.ops, threads)
                    report["runs"].append(run)
                    lat = run["pair_us"]
                    print(
                        f"{threads:3} threads: {run['pairs_per_s']:8.0f} acquire+release/s, "
                        f"p50 {lat['p50']:7.0f} us, p99 {lat['p99']:7.0f} us"
                    )
            limit.close()
        finally:
            server.kill()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shared_limit.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
