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
    args = parser.parse_args(argv)
    server = FaultServer(
        args.profile,
        seed=args.seed,
        latency_s=args.latency,
        retry_after_s=args.retry_after,
        hang_s=args.hang,
        port=args.port,
        capacity=args.capacity,
    ).start()
    print("READY", server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


main()
