#!/usr/bin/env python3
"""Write tiny diffusion-LLM checkpoints with random weights, for tests and demos.

The writers live in ``vllm_dllm_plugin.testing.checkpoints`` (one module per
family); this is their command line::

    python scripts/make_checkpoints.py llada OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py dream OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py fast-dllm-v2 OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py llada OUT_DIR --preset 8b --dtype bfloat16 --dry-run   # sizes only
    python scripts/make_checkpoints.py fast-dllm-v2 OUT_DIR --preset 1.5b --dtype bfloat16 --dry-run
"""

import sys

from vllm_dllm_plugin.testing.checkpoints.cli import main

if __name__ == "__main__":
    sys.exit(main())
