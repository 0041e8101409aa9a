"""Independent plain-PyTorch reference for Fast-dLLM decoding (tests only).

``llada.LLaDA.from_pretrained(dir)`` loads a model; ``fast_dllm.generate(model,
prompt_ids, gen_length=...)`` decodes one request the way
docs/fast-dllm-semantics.md specifies; ``tiny.write_tiny_llada(dir)`` writes a
random hub-format checkpoint for tests.
"""

from .fast_dllm import FAMILIES, LLADA, Family, Result, generate
from .llada import LLaDA
from .tiny import write_tiny_llada

__all__ = ["FAMILIES", "LLADA", "Family", "LLaDA", "Result", "generate", "write_tiny_llada"]
