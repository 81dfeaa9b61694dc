"""``python -m resilient_llm.testing``: one fault server on 127.0.0.1, printing ``READY <url>`` once it listens."""

from __future__ import annotations

import argparse
import contextlib
import threading

from resilient_llm.testing.fault_server import PROFILES, FaultServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", default="clean", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--latency", type=float, default=None, help="seconds before each answer (default: the profile's)"
    )
    parser.add_argument("--capacity", type=int, default=None, help="requests admitted at once (capacity profile)")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After sent with 429 and 402")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds a 'hang' fault holds the request")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quota-reset", type=float, default=3600.0, help="s until the free-quota model answers")
    parser.add_argument("--reasoning-budget", type=int, default=1000, help="the reasoning model truncates below it")
    parser.add_argument("--keepalive", type=float, default=2.0, help="s of whitespace before the keep-alive JSON")
    args = parser.parse_args(argv)
    server = FaultServer(
        args.profile,
        seed=args.seed,
        latency_s=args.latency,
        retry_after_s=args.retry_after,
        hang_s=args.hang,
        port=args.port,
        capacity=args.capacity,
        quota_reset_s=args.quota_reset,
        reasoning_budget=args.reasoning_budget,
        keepalive_s=args.keepalive,
    ).start()
    print("READY", server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


main()
