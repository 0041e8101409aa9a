"""Independent plain-PyTorch reference for Fast-dLLM decoding (tests only).

``llada.LLaDA.from_pretrained(dir)`` and ``dream.Dream.from_pretrained(dir)``
load a model; ``fast_dllm.generate(model, prompt_ids, gen_length=...)`` decodes
one request the way docs/fast-dllm-semantics.md specifies, with the model's
decoding family; ``tiny.write_tiny_llada(dir)`` writes a random hub-format
LLaDA checkpoint for tests (Dream ones come from
``scripts/make_checkpoints.py``).
"""

from .dream import Dream
from .fast_dllm import DREAM, FAMILIES, LLADA, Family, Result, generate
from .llada import LLaDA
from .tiny import write_tiny_llada

__all__ = ["DREAM", "FAMILIES", "LLADA", "Dream", "Family", "LLaDA", "Result", "generate", "write_tiny_llada"]
