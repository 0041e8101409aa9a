"""What differs between diffusion families, as data.

The scheduler, the runner and the rule functions are shared; a family
description says how a family reads its logits, decides, and lays out its
canvas.

* LLaDA: position ``p`` reads its own logits row; confidence is the float64
  softmax probability of the argmax; thresholds are ``>=``.
* Dream: position ``p`` reads row ``p - 1`` (logits shifted right by one);
  the first forward of a block commits only the block's first position;
  confidence is the softmax maximum in the model dtype, and thresholds are
  compared in that dtype.
* Fast-dLLM v2 (block diffusion): Dream's shift and confidence, a strict
  ``>`` threshold plus the top candidate, and a block-causal canvas: finished
  blocks keep their exact K/V, each forward is one block (or sub-block)
  window, and a commit forward after each block yields the next block's first
  token.  Only its checkpoint's block length and the threshold rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from vllm_dllm_plugin.decoding.confidence import dream_predict, llada_predict, top_p_predict
from vllm_dllm_plugin.options import OptionSpace

# The block-diffusion family's config.json ``model_type`` and mask token text.
FAST_DLLM_V2_MODEL_TYPE = "Fast_dLLM_Qwen"
FAST_DLLM_V2_MASK_TOKEN = "|<MASK>|"


@dataclasses.dataclass(frozen=True)
class DecodingFamily:
    name: str
    predict: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    logit_shift: int = 0
    first_step_commits_first: bool = False
    # dtype in which confidences are compared with thresholds (None: float64)
    compare_dtype: torch.dtype | None = None
    # threshold rule: commit ``conf > tau`` (else ``conf >= tau``)
    strict_threshold: bool = False
    # canvas layout: finished blocks are exact, one block window per forward
    block_causal: bool = False
    options: OptionSpace = OptionSpace()
    # the checkpoint's generation_config.json sampling values are not the
    # family's decoding defaults (inherited from the AR base model)
    ignores_generation_config: bool = False

    @property
    def sampler(self) -> str:
        """How ``temperature > 0`` rows draw: ``"gumbel"`` (noise per vocabulary
        entry, LLaDA/Dream) or ``"top_p"`` (one uniform per row, v2)."""
        return self.options.sampler


def family_for(hf_config, model_dtype: torch.dtype) -> DecodingFamily:
    model_type = getattr(hf_config, "model_type", "") or ""
    if model_type == FAST_DLLM_V2_MODEL_TYPE:
        bd_size = int(getattr(hf_config, "bd_size", 32))
        return DecodingFamily(
            "fast_dllm_v2", top_p_predict, logit_shift=1, compare_dtype=model_dtype,
            strict_threshold=True, block_causal=True, ignores_generation_config=True,
            options=OptionSpace(cache_modes=("prefix", "dual"), rules=("threshold",),
                                block_length=bd_size, sub_blocks=True, sampler="top_p",
                                family="Fast-dLLM v2"))
    if model_type.lower() == "dream":
        return DecodingFamily("dream", dream_predict, logit_shift=1,
                              first_step_commits_first=True, compare_dtype=model_dtype,
                              options=OptionSpace(family="Dream"))
    return DecodingFamily("llada", llada_predict, options=OptionSpace(family="LLaDA"))
