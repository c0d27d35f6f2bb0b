#!/usr/bin/env bash
# Set up (idempotent), then run every test tier: unit, API (fake engine), end-to-end (real vLLM).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}
exec .venv/bin/python -m pytest "$@"
