"""Fast-dLLM v2's hub config (``model_type: Fast_dLLM_Qwen``) without remote code.

The checkpoints' ``configuration.py`` is Qwen2's config plus ``bd_size`` (the
block length the model was trained with), and their remote code does not
import under transformers 5.  :class:`FastDLLMQwenConfig` is a
:class:`~transformers.Qwen2Config` with ``bd_size``; registered with
``AutoConfig`` it wins over ``auto_map``.

The config has no mask id: the published code hard-codes 151665, the id of
the tokenizer's added token ``|<MASK>|``.  The engine reads it from the
tokenizer at start-up (the registry entry's ``mask_token``) and sets
``mask_token_id``.
"""

from __future__ import annotations

from transformers import Qwen2Config


class FastDLLMQwenConfig(Qwen2Config):
    model_type = "Fast_dLLM_Qwen"

    bd_size: int = 32
    mask_token_id: int = 151665   # replaced by the tokenizer's |<MASK>| id
