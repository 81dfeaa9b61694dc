#!/usr/bin/env bash
# Run a DR Tulu training command with resilient-llm's direct OpenRouter path switched on.
#
#   ./train_dr_tulu_openrouter_direct.sh -- python open_instruct/grpo_fast.py ...
#
# The key comes from the environment or from a .env file beside this script (never from this file); without one
# the script stops. `resilient-llm doctor` must pass before the training command runs. Roll back with
# USE_OPENROUTER_DIRECT=false (or run the training command without this script).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -f "${ENV_FILE:-$here/.env}" ]]; then
  set -a
  # shellcheck disable=SC1090  # the .env file is the user's own
  source "${ENV_FILE:-$here/.env}"
  set +a
fi

if [[ -z "${OPENAI_API_KEY:-}" ]]; then
  echo "OPENAI_API_KEY is not set: export it or put it in ${ENV_FILE:-$here/.env} (see .env.example)" >&2
  exit 2
fi

export USE_OPENROUTER_DIRECT="${USE_OPENROUTER_DIRECT:-true}"
export OPENAI_API_BASE="${OPENAI_API_BASE:-https://openrouter.ai/api/v1}"
export RUBRIC_JUDGE_MODEL="${RUBRIC_JUDGE_MODEL:-openai/gpt-4.1-mini}"
export RUBRIC_GENERATION_MODEL="${RUBRIC_GENERATION_MODEL:-openai/gpt-4.1}"
# DR Tulu's citation and HLE judges default to bare OpenAI names; OpenRouter's ids for them:
export CITATION_JUDGE_MODEL="${CITATION_JUDGE_MODEL:-openai/gpt-4o-mini}"
export HLE_JUDGE_MODEL="${HLE_JUDGE_MODEL:-openai/gpt-4.1}"
# Concurrency is found from the endpoint's answers (from 20 up to 256); OPENROUTER_MAX_CONCURRENT_CALLS, if you set
# it, is a hard ceiling. RESILIENT_LLM_CONCURRENCY=fixed gives the first wave's fixed cap of 20.
export RESILIENT_LLM_CONCURRENCY="${RESILIENT_LLM_CONCURRENCY:-adaptive}"
export RESILIENT_LLM_CACHE_DIR="${RESILIENT_LLM_CACHE_DIR:-$HOME/.cache/resilient-llm}"
export RESILIENT_LLM_LOG_FILE="${RESILIENT_LLM_LOG_FILE:-$PWD/logs/resilient_llm.calls.jsonl}"

if [[ "${1:-}" != "--" ]]; then
  echo "usage: $0 -- TRAINING COMMAND..." >&2
  exit 2
fi
shift
if [[ $# -eq 0 ]]; then
  echo "usage: $0 -- TRAINING COMMAND... (no training command given)" >&2
  exit 2
fi

resilient-llm doctor
echo "resilient-llm: direct OpenRouter path on; call logs in $RESILIENT_LLM_LOG_FILE" >&2
exec "$@"
