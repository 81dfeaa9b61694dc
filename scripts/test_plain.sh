#!/usr/bin/env bash
# The engine without its optional fast parts (no uvloop, no orjson, no aiohttp): the tests of every path those parts
# change (the engine's loop, JSON out and in, log lines, cache entries, the hop, cancellation), in a second virtualenv
# with the dev extra only. The full suite runs with every extra in scripts/test.sh; CI runs both.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-plain
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet -e '.[dev,redis]'
  # uvloop and orjson come with the default install: take them out, this run is about the engine without them.
  "$VENV/bin/python" -m pip uninstall --quiet --yes uvloop orjson
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
# The point of this run: none of the fast parts may be importable here.
"$VENV/bin/python" - <<'PY'
import importlib.util
present = [name for name in ("uvloop", "orjson", "aiohttp") if importlib.util.find_spec(name) is not None]
assert not present, f"the plain run must not have {present}"
PY
"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_fast_parts.py tests/test_engine.py tests/test_layers.py tests/test_protocol.py tests/test_cache.py \
  tests/test_cache_tampering.py tests/test_cancellation.py tests/test_response_limits.py tests/test_bad_input.py "$@"
