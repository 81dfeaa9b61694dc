#!/usr/bin/env bash
# The main job: the side-by-side benchmark against an embedded local server (no API key, no network).
source "$(dirname "$0")/_venv.sh"
python -m benchmarks.engine_overhead "$@"
