#!/usr/bin/env bash
# Set up (idempotent), then serve. No flags: the embedded tiny model on CPU, port 8000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}
exec .venv/bin/python -m server "$@"
