#!/usr/bin/env bash
# Apply patches/*.patch to the vLLM that PYTHON imports (safe to re-run).
# Each patch is described in patches/README.md; a patch already applied is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBIN=${PYTHON:-.venv/bin/python}
SITE=$("$PYBIN" -c 'import os, vllm; print(os.path.dirname(os.path.dirname(vllm.__file__)))')
for p in patches/*.patch; do
  if patch -p1 -d "$SITE" -R -s -f --dry-run < "$p" >/dev/null 2>&1; then
    echo "patch already applied: $p"
  else
    patch -p1 -d "$SITE" -s -f --no-backup-if-mismatch < "$p"
    echo "patch applied: $p"
  fi
done
