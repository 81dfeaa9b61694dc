"""``resilient-llm``: bench (the side-by-side benchmark), stats (a reader for our JSON logs), doctor, install."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable


def _bench(args: argparse.Namespace) -> int:
    from resilient_llm.cli import bench  # the fault server, rich and matplotlib load only for this command

    parser = argparse.ArgumentParser(prog="resilient-llm bench", description=bench.__doc__)
    bench.add_arguments(parser)
    return bench.main(parser.parse_args(args.bench_options))


def _stats(args: argparse.Namespace) -> int:
    from resilient_llm.cli import charts, stats

    if args.compare:
        return _compare(args)
    if not args.logs:
        print("resilient-llm stats: give LOG files, or --compare A B", file=sys.stderr)
        return 2
    try:
        report = stats.summarize(args.logs, args.window)
    except OSError as exc:
        print(f"resilient-llm stats: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else stats.render_text(report))
    return _chart(args.png, lambda: charts.plot_outcomes(report, args.png))


def _compare(args: argparse.Namespace) -> int:
    from resilient_llm.cli import charts, compare

    if args.logs or args.window:
        print("resilient-llm stats: --compare takes exactly two logs, A and B, and no --window", file=sys.stderr)
        return 2
    try:
        a, b = (compare.read_side(path) for path in args.compare)
    except OSError as exc:
        print(f"resilient-llm stats: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    report = compare.compare(a, b, args.judge_model or os.environ.get("RUBRIC_JUDGE_MODEL") or None)
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else compare.render_text(report))
    series = [(f"{name}: {side.path}", side.total.latencies_ms) for name, side in (("A", a), ("B", b))]
    return _chart(args.png, lambda: charts.plot_latency_cdfs(series, args.png))


def _chart(path: str | None, draw: Callable[[], None]) -> int:
    """Draw the --png chart after the report is printed; a path that cannot be written is one line and exit 1."""
    if not path:
        return 0
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        draw()
    except ImportError:
        print("resilient-llm stats: --png needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # ValueError: a path matplotlib cannot use (e.g. a NUL byte)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"resilient-llm stats: cannot write the chart to {path!r}: {reason}", file=sys.stderr)
        return 1
    return 0


def _window(raw: str) -> float:
    """--window: seconds, finite, from a millisecond to about 30 years (window numbers must stay integers)."""
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0.001 <= seconds <= 1e9:  # also false for NaN
        raise argparse.ArgumentTypeError(f"expected a number of seconds from 0.001 to 1e9, got {raw!r}")
    return seconds


def _doctor(args: argparse.Namespace) -> int:
    from resilient_llm.cli import doctor

    return doctor.main()


def _install(args: argparse.Namespace) -> int:
    from pathlib import Path

    from resilient_llm.cli.install import InstallError, install, revert

    try:
        print((revert if args.revert else install)(Path(args.path)))
    except InstallError as exc:
        print(f"resilient-llm install: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resilient-llm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench_parser = commands.add_parser(
        "bench", help="LiteLLM vs resilient_llm vs bare httpx on a local fault server", add_help=False
    )
    bench_parser.set_defaults(func=_bench)
    stats_parser = commands.add_parser("stats", help="summarise structured JSON logs")
    stats_parser.add_argument("logs", nargs="*", help="JSON-lines log files")
    stats_parser.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="two runs side by side by model, with the ratio B/A"
    )
    stats_parser.add_argument(
        "--judge-model", default=None, help="with --compare: the judge model (default: RUBRIC_JUDGE_MODEL)"
    )
    stats_parser.add_argument("--window", type=_window, default=None, help="also group by windows of this many seconds")
    stats_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    stats_parser.add_argument(
        "--png", default=None, help="write an outcome chart (with --compare: both latency CDFs) to this PNG file"
    )
    stats_parser.set_defaults(func=_stats)
    doctor_parser = commands.add_parser("doctor", help="check the configuration, endpoint, models, key and cache")
    doctor_parser.set_defaults(func=_doctor)
    install_parser = commands.add_parser("install", help="put the drop-in into a DR Tulu checkout (or take it out)")
    install_parser.add_argument("path", help="the checkout (the folder holding open_instruct/)")
    install_parser.add_argument("--revert", action="store_true", help="restore the original files byte for byte")
    install_parser.set_defaults(func=_install)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_options = rest  # parsed by the bench itself, so its modules load only when it runs
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.func(args))
