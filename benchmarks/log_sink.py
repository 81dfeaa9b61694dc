"""What a log line costs the engine: the buffered sink (a writer thread) vs writing in the caller (structlog's
WriteLogger, the old path; same processors), same run, alternating, to a file.

    python -m benchmarks.log_sink [--lines 20000] [--paced 2000] [--rate 400] [--repeats 5]

``burst``: lines back to back. ``paced``: one line every 1/rate s, as the engine logs calls. Per line: the time the
caller spends in ``log.info`` and the process CPU (writer thread included).
Results: ``benchmarks/results/log_sink.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from resilient_llm.logs import LogConfig, LogSink, make_logger
from resilient_llm.redact import log_processor

RESULTS = Path(__file__).parent / "results"
FIELDS = {"model": "openai/gpt-4o-mini", "outcome": "ok", "latency_ms": 512.3, "attempts": 1, "cost": 1.2e-05}


def sink_logger(path: Path) -> tuple[Any, Callable[[], None]]:
    sink = LogSink(str(path))
    return make_logger(LogConfig(file=str(path)), sink), sink.close


def inline_logger(path: Path) -> tuple[Any, Callable[[], None]]:
    file = path.open("a", buffering=1, encoding="utf-8")
    logger = structlog.wrap_logger(
        structlog.WriteLogger(file),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=False),
            log_processor,
        ],
        wrapper_class=structlog.make_filtering_bound_logger("info"),
    )
    return logger, file.close


def one_run(make: Callable[[Path], tuple[Any, Callable[[], None]]], lines: int, gap_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calls.jsonl"
        log, close = make(path)
        in_caller = 0.0
        cpu = time.process_time()
        for i in range(lines):
            started = time.perf_counter()
            log.info("llm_call", call_id=i, **FIELDS)
            in_caller += time.perf_counter() - started
            if gap_s:
                time.sleep(gap_s)
        close()
        cpu = time.process_time() - cpu
        written = sum(1 for _ in path.open())
    assert written == lines, f"{written} of {lines} lines written"
    return {"caller_us": in_caller / lines * 1e6, "cpu_us": cpu / lines * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=20_000, help="lines per burst run")
    parser.add_argument("--paced", type=int, default=2_000, help="lines per paced run")
    parser.add_argument("--rate", type=float, default=400.0, help="lines per second in the paced runs")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    report: dict[str, Any] = {"benchmark": "log_sink", "settings": vars(args), "results": {}}
    for pattern, lines, gap in (("burst", args.lines, 0.0), ("paced", args.paced, 1.0 / args.rate)):
        runs: dict[str, list[dict[str, float]]] = {"sink": [], "inline": []}
        for _ in range(args.repeats):  # alternating, so machine drift hits both alike
            runs["sink"].append(one_run(sink_logger, lines, gap))
            runs["inline"].append(one_run(inline_logger, lines, gap))
        report["results"][pattern] = {
            name: {
                key: {
                    "median": round(statistics.median(r[key] for r in rs), 2),
                    "min": round(min(r[key] for r in rs), 2),
                    "max": round(max(r[key] for r in rs), 2),
                }
                for key in ("caller_us", "cpu_us")
            }
            for name, rs in runs.items()
        }
        print(pattern, json.dumps(report["results"][pattern]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "log_sink.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
