"""What differs between diffusion families at decision time.

LLaDA: position ``p`` reads its own logits row; confidence is the float64
softmax probability of the argmax.  Dream: position ``p`` reads row ``p - 1``
(logits shifted right by one); the first forward of a block commits only the
block's first position; confidence is the softmax maximum in the model dtype,
and thresholds are compared in that dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from vllm_dllm_plugin.decoding.confidence import dream_predict, llada_predict


@dataclasses.dataclass(frozen=True)
class DecodingFamily:
    name: str
    predict: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    logit_shift: int = 0
    first_step_commits_first: bool = False
    # dtype in which confidences are compared with thresholds (None: float64)
    compare_dtype: torch.dtype | None = None


def family_for(model_type: str, model_dtype: torch.dtype) -> DecodingFamily:
    if model_type.lower() == "dream":
        return DecodingFamily("dream", dream_predict, logit_shift=1,
                              first_step_commits_first=True, compare_dtype=model_dtype)
    return DecodingFamily("llada", llada_predict)
