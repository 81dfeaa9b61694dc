"""What sharing the limit through Redis costs a run: calls/s with no Redis, a local Redis, and Redis 20 ms away.

    python -m benchmarks.shared_limit [--calls 3000] [--callers 32] [--latency 0.02] [--rtt 0.02] [--repeats 2]

One engine (defaults: adaptive limit), a 20 ms fault server in a child process, 32 callers. "Redis 20 ms away" puts
a TCP proxy in front of a real redis-server that holds every chunk 10 ms in each direction (a cross-zone round
trip). The limit's Redis work is off the call's path (permits reserved in blocks ahead of need, renewed and read
back once a second in the background), so the far Redis should cost little. Redis: a real server
(``resilient_llm/testing/redis_server.py``). Results: ``benchmarks/results/shared_limit.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.engine_overhead import KEY, MODEL, run_workload
from resilient_llm import CacheConfig, Config, Engine, HTTPConfig, LimitConfig, LogConfig
from resilient_llm.testing.redis_server import RedisServer, free_port
from resilient_llm.testing.remote import RemoteFaultServer

RESULTS = Path(__file__).parent / "results"


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that delivers every chunk ``delay_s`` late, in each direction, in order."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.port = free_port()
        self._upstream = upstream_port
        self._delay = delay_s
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()
            writer.close()

        delivering = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self._delay, chunk))
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(Exception):
                await delivering


def redis_rtt_ms(port: int, pings: int = 20) -> float:
    """The median PING round trip through ``port``."""
    import redis

    client = redis.Redis(port=port, socket_timeout=2)
    took = []
    for _ in range(pings):
        started = time.perf_counter()
        client.ping()
        took.append((time.perf_counter() - started) * 1e3)
    client.close()
    return statistics.median(took)


@contextlib.contextmanager
def engine(url: str, redis_url: str | None, log: Path) -> Iterator[Engine]:
    config = Config(
        http=HTTPConfig(api_key=KEY, base_url=url, ignore_proxy=True),
        limit=LimitConfig(redis_url=redis_url),
        cache=CacheConfig(mode="off"),
        log=LogConfig(file=str(log)),
    )
    made = Engine(config)
    try:
        yield made
    finally:
        made.close()


def one_run(url: str, redis_url: str | None, args: argparse.Namespace, log: Path, label: str) -> dict[str, Any]:
    with engine(url, redis_url, log) as made:

        async def call(prompt: str) -> str:
            return (await made.acomplete(MODEL, user=prompt, temperature=0)).text

        async def measure() -> dict[str, Any]:
            await run_workload(call, 100, args.callers, f"warm {label}")
            return await run_workload(call, args.calls, args.callers, label)

        result = asyncio.run(measure())
    return {"throughput_per_s": result["throughput_per_s"], "real_answers": result["real_answers"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--rtt", type=float, default=0.02, help="the far Redis's added round trip, seconds")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    report: dict[str, Any] = {"benchmark": "shared_limit", "args": vars(args), "runs": []}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        server = RedisServer(work).start()
        try:
            with (
                DelayProxy(server.port, args.rtt / 2) as proxy,
                RemoteFaultServer("clean", latency_s=args.latency) as faults,
            ):
                report["redis_rtt_ms"] = {"local": redis_rtt_ms(server.port), "far": redis_rtt_ms(proxy.port)}
                print(f"Redis PING round trip: {report['redis_rtt_ms']}", flush=True)
                variants = {
                    "no redis": None,
                    "local redis": server.url,
                    "redis +20 ms": f"redis://127.0.0.1:{proxy.port}/0",
                }
                for repeat in range(args.repeats):
                    order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
                    for name in order:
                        load = os.getloadavg()[0]
                        row = one_run(faults.url, variants[name], args, work / "calls.jsonl", f"{name} {repeat}")
                        row |= {"variant": name, "repeat": repeat, "load_1min": round(load, 2)}
                        report["runs"].append(row)
                        print(json.dumps(row), flush=True)
        finally:
            server.kill()
    summary: dict[str, Any] = {}
    for name in ("no redis", "local redis", "redis +20 ms"):
        rates = [r["throughput_per_s"] for r in report["runs"] if r["variant"] == name]
        summary[name] = {"min": min(rates), "median": statistics.median(rates), "max": max(rates)}
    base = {r["repeat"]: r["throughput_per_s"] for r in report["runs"] if r["variant"] == "no redis"}
    ratios = [r["throughput_per_s"] / base[r["repeat"]] for r in report["runs"] if r["variant"] == "redis +20 ms"]
    summary["far_vs_no_redis"] = {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}
    report["summary"] = summary
    report["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(json.dumps(summary, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shared_limit.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
