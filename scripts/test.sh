#!/usr/bin/env bash
# The test command: lint, format check, strict typing, then the whole suite (real local servers, no network).
# shellcheck source=scripts/_venv.sh
source "$(dirname "$0")/_venv.sh"
ruff check .
ruff format --check .
mypy --strict resilient_llm open_instruct
python -m pytest -q "$@"
