"""Independent plain-PyTorch reference for Fast-dLLM decoding (for tests, scripts, benchmarks).

``llada.LLaDA.from_pretrained(dir)`` and ``dream.Dream.from_pretrained(dir)``
load a model; ``fast_dllm.generate(model, prompt_ids, gen_length=...)`` decodes
one request as Fast-dLLM does (arXiv 2505.22618, code: NVlabs/Fast-dLLM; the
options of docs/options.md), with the model's decoding family;
``tiny.write_tiny_llada(dir)`` writes a random hub-format LLaDA checkpoint for
tests (the other families' come from ``vllm_dllm_plugin.testing.checkpoints``).

Fast-dLLM v2 (block diffusion, arXiv 2509.26328) has its own loop:
``fast_dllm_v2.FastDLLMv2.from_pretrained(dir)`` and
``fast_dllm_v2.generate(model, prompt_ids, max_tokens=...)``. Dream and v2
share the Qwen2 decoder of ``qwen2.py``; every model shares the forward of
``common.ReferenceModel``.  SDAR (block diffusion on Qwen3, arXiv 2510.06303):
``sdar.SDAR.from_pretrained(dir)``, the Qwen2 decoder with Qwen3's q/k
norms and the block-causal forwards of ``block_causal.py``.

LLaDA2.x (a BailingMoeV2 MoE, block diffusion): ``llada2.LLaDA2Moe.from_pretrained(dir)``,
its own MoE forward with the block-causal forwards of ``block_causal.py``.

Structured output: every loop's ``generate`` takes ``grammar=``, an
acceptor from ``grammar.py`` (``Acceptor.regex / choice / json_schema``,
written to agree with vLLM's xgrammar backend), and then commits only
left-to-right runs the grammar accepts (docs/options.md).

Independent of the engine on purpose: imports torch, safetensors and the
standard library only (``grammar.py`` also the ``regex`` package), never
vllm, xgrammar or other ``vllm_dllm_plugin`` modules.
"""

from .dream import Dream
from .fast_dllm import DREAM, FAMILIES, LLADA, Family, Result, generate
from .fast_dllm_v2 import FastDLLMv2
from .llada import LLaDA
from .llada2 import LLaDA2Moe
from .sdar import SDAR
from .tiny import write_tiny_llada

__all__ = [
    "DREAM",
    "FAMILIES",
    "LLADA",
    "Dream",
    "Family",
    "FastDLLMv2",
    "LLaDA",
    "LLaDA2Moe",
    "Result",
    "SDAR",
    "generate",
    "write_tiny_llada",
]
