"""Fast-dLLM v2's hub config (``model_type: Fast_dLLM_Qwen``) without remote code.

The checkpoints' ``configuration.py`` is Qwen2's config plus ``bd_size`` (the
block length the model was trained with), and their remote code does not
import under transformers 5.  :class:`FastDLLMQwenConfig` is a
:class:`~transformers.Qwen2Config` with ``bd_size``; registered with
``AutoConfig`` it wins over ``auto_map``.

The config has no mask id: the published code hard-codes 151665, the id of
the tokenizer's added token ``|<MASK>|``.  The engine reads it from the
tokenizer (:func:`mask_token_id_from_tokenizer`) and sets ``mask_token_id``.
"""

from __future__ import annotations

from transformers import Qwen2Config

from vllm_dllm_plugin.decoding.family import FAST_DLLM_V2_MASK_TOKEN, FAST_DLLM_V2_MODEL_TYPE


class FastDLLMQwenConfig(Qwen2Config):
    model_type = FAST_DLLM_V2_MODEL_TYPE

    bd_size: int = 32
    mask_token_id: int = 151665   # replaced by the tokenizer's |<MASK>| id


def mask_token_id_from_tokenizer(tokenizer: str, **kwargs) -> int:
    """The id of ``|<MASK>|`` in the checkpoint's tokenizer (an added token)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer, **kwargs)
    token_id = tok.convert_tokens_to_ids(FAST_DLLM_V2_MASK_TOKEN)
    if token_id is None or token_id == tok.unk_token_id or (
            tok.convert_ids_to_tokens(token_id) != FAST_DLLM_V2_MASK_TOKEN):
        raise ValueError(f"the tokenizer {tokenizer!r} has no {FAST_DLLM_V2_MASK_TOKEN!r} "
                         "token; Fast-dLLM v2 checkpoints add it as a special token")
    return int(token_id)
