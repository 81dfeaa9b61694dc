"""``resilient-llm``: bench (the side-by-side benchmark), stats (a reader for our JSON logs), doctor, install."""

from __future__ import annotations

import argparse
import json
import sys


def _bench(args: argparse.Namespace) -> int:
    from resilient_llm.cli import bench  # the fault server, rich and matplotlib load only for this command

    parser = argparse.ArgumentParser(prog="resilient-llm bench", description=bench.__doc__)
    bench.add_arguments(parser)
    return bench.main(parser.parse_args(args.bench_options))


def _stats(args: argparse.Namespace) -> int:
    from resilient_llm.cli import stats

    try:
        report = stats.summarize(args.logs, args.window)
    except OSError as exc:
        print(f"resilient-llm stats: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else stats.render_text(report))
    if args.png:
        stats.plot(report, args.png)
    return 0


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
    stats_parser.add_argument("logs", nargs="+", help="JSON-lines log files")
    stats_parser.add_argument("--window", type=float, default=None, help="also group by windows of this many seconds")
    stats_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    stats_parser.add_argument("--png", default=None, help="write an outcome chart to this PNG file")
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
