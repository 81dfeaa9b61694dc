#!/usr/bin/env bash
# The main job: LiteLLM vs resilient_llm vs bare httpx on the embedded fault server (no API key, no network).
# Extra arguments go to `resilient-llm bench` (--quick, --profiles, --calls, --concurrency, --seed, --base-url).
# shellcheck source=scripts/_venv.sh
source "$(dirname "$0")/_venv.sh"
resilient-llm bench "$@"
