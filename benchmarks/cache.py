"""The response cache, measured: hit latency through the public async API (disk and Redis), the cost of the miss path
against the cache turned off, and hit latency and directory size with 10,000 entries under a size limit.

    python -m benchmarks.cache [--hits 2000] [--miss-scenarios 0.5:400,0.05:1000] [--entries 10000] [--size-limit-mb 2]

Results: ``benchmarks/results/cache.json``. Redis runs when ``redis-server`` is installed (started on a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from resilient_llm import Config, Engine, HTTPConfig
from resilient_llm.policy.percentiles import percentiles
from resilient_llm.testing.remote import RemoteFaultServer

MODEL = "openai/gpt-4o-mini"
RESULTS = Path(__file__).parent / "results"


def latency_ms(samples: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds, the same nearest-rank definition as ``resilient-llm stats``."""
    return {f"{name}_ms": value for name, value in percentiles([x * 1e3 for x in samples]).items()}


def engine(url: str, **cache: Any) -> Engine:
    """An engine on ``url`` whose cache section has ``cache``'s fields changed."""
    config = Config(http=HTTPConfig(api_key="sk-bench-local", base_url=url))
    return Engine(config.replace(cache=cache, log={"file": "off"}))


async def fill(eng: Engine, prefix: str, count: int, concurrency: int = 20) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await eng.acomplete(MODEL, user=f"{prefix} {i}", temperature=0)

    await asyncio.gather(*(one(i) for i in range(count)))


async def hit_latencies(eng: Engine, prefix: str, population: int, hits: int) -> list[float]:
    """Sequential hits on random-looking entries of an already filled population."""
    samples = []
    for n in range(hits):
        i = (n * 7919) % population
        started = time.perf_counter()
        result = await eng.acomplete(MODEL, user=f"{prefix} {i}", temperature=0)
        samples.append(time.perf_counter() - started)
        assert result.cache == "hit", result
    return samples


async def throughput(eng: Engine, prefix: str, calls: int) -> float:
    started = time.perf_counter()
    await fill(eng, prefix, calls)
    return calls / (time.perf_counter() - started)


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextmanager
def redis_server() -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument(
        "--miss-scenarios",
        default="0.5:400,0.05:1000",
        help="server latency (s) : distinct calls per round, for the miss path against the cache off",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--size-limit-mb", type=int, default=2)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "cache",
        "settings": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    work = Path(tempfile.mkdtemp(prefix="rllm-cache-bench-"))
    try:
        with RemoteFaultServer("clean") as fast:
            # 1. Hit latency, disk and Redis, 1,000 entries.
            hit_rows: dict[str, Any] = {}
            with redis_server() as redis_url:
                stores: dict[str, dict[str, Any]] = {"disk": {"directory": str(work / "hits")}}
                if redis_url:
                    stores["redis"] = {"redis_url": redis_url, "directory": str(work / "unused")}
                for name, store in stores.items():
                    with engine(fast.url, **store) as eng:
                        asyncio.run(fill(eng, "hit", 1000))
                        samples = asyncio.run(hit_latencies(eng, "hit", 1000, args.hits))
                    hit_rows[name] = latency_ms(samples)
                    print(f"hit latency {name:>5}: {hit_rows[name]}")
            report["hit_latency"] = hit_rows

            # 2. Miss path vs cache off: distinct calls, same server, alternating rounds.
            report["miss_path"] = []
            for scenario in args.miss_scenarios.split(","):
                latency, calls = float(scenario.split(":")[0]), int(scenario.split(":")[1])
                rates: dict[str, list[float]] = {"off": [], "disk_miss": []}
                with RemoteFaultServer("clean", latency_s=latency) as slow:
                    for round_no in range(args.rounds):
                        for mode in rates:
                            where = work / f"miss-{latency}-{round_no}"
                            options = {"mode": "off"} if mode == "off" else {"directory": str(where)}
                            with engine(slow.url, **options) as eng:
                                rate = asyncio.run(throughput(eng, f"miss {mode} {round_no}", calls))
                            rates[mode].append(rate)
                            print(f"latency {latency:g} s round {round_no + 1}: {mode:>9} {rate:8.1f} calls/s")
                off, miss = statistics.median(rates["off"]), statistics.median(rates["disk_miss"])
                report["miss_path"].append(
                    {"latency_s": latency, "calls": calls, "off": off, "disk_miss": miss, "ratio": miss / off}
                    | {"runs": rates}
                )

            # 3. 10,000 entries under a size limit: hit latency early vs late, directory size.
            limit = args.size_limit_mb * 1024 * 1024
            big_dir = work / "big"
            with engine(fast.url, directory=str(big_dir), size_limit_mb=args.size_limit_mb) as eng:
                asyncio.run(fill(eng, "early", 500))
                early = latency_ms(asyncio.run(hit_latencies(eng, "early", 500, args.hits)))
                asyncio.run(fill(eng, "bulk", args.entries))
                asyncio.run(fill(eng, "late", 500))
                late = latency_ms(asyncio.run(hit_latencies(eng, "late", 500, args.hits)))
            size = directory_bytes(big_dir)
            report["many_entries"] = {
                "entries_written": args.entries + 1000,
                "hit_latency_first_500": early,
                "hit_latency_after_all": late,
                "directory_bytes": size,
                "size_limit_bytes": limit,
                "under_limit": size <= limit,
            }
            print(f"{args.entries} entries: early {early}, late {late}, directory {size} B of {limit} B")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cache.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("hit_latency", "miss_path", "many_entries")}, indent=2))


if __name__ == "__main__":
    main()
