"""vLLM plugin serving diffusion LLMs (LLaDA, Dream, Fast-dLLM v2) with Fast-dLLM decoding.

``register`` is the ``vllm.general_plugins`` entry point: vLLM runs it in
every process (API server, engine core, each worker, the model-inspection
subprocess), so it is idempotent and imports nothing heavy at import time.
The families served are the entries of ``vllm_dllm_plugin.registry``.
"""

from __future__ import annotations

from pathlib import Path

# The embedded default model: a small LLaDA trained on arithmetic and sorting
# (scripts/train_embedded_model.py), in LLaDA's hub layout.
EMBEDDED_MODEL = Path(__file__).parent / "assets" / "llada-arith"


def register() -> None:
    from vllm_dllm_plugin.startup.plugin import register_all

    register_all()
