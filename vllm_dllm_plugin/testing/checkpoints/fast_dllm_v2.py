"""Fast-dLLM v2 checkpoints in the hub layout of
``Efficient-Large-Model/Fast_dLLM_v2_7B`` (untied head) and ``_1.5B`` (tied
embeddings): Qwen2 tensor names, Qwen2.5's generation config, and a plain
``Qwen2Tokenizer`` with the mask token ``|<MASK>|`` added."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .core import DEFAULT_LOGIT_SCALE
from .qwen2 import (
    QWEN2_ADDED,
    QWEN2_ADDITIONAL,
    QWEN2_ENDOFTEXT,
    QWEN2_IM_END,
    QWEN2_NOT_SPECIAL,
    QWEN2_TOKENIZER_CONFIG,
    Qwen2Family,
    write_qwen2_checkpoint,
)
from .tokenizers import TokenizerFiles

# Fast-dLLM v2's tokenizer: Qwen2.5-Instruct's (no bos, eos <|im_end|>, pad
# <|endoftext|>) plus the mask token right after Qwen's added tokens (151665
# in both real checkpoints; config.json names no mask id, the model code
# hard-codes it).
V2_MASK = "|<MASK>|"
V2_SPECIALS: list[tuple[str, bool]] = [*QWEN2_ADDED, (V2_MASK, True)]
V2_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# ChatML with Qwen2.5's default system turn (used when the conversation does
# not start with its own) and no bos token, e.g. for one user turn "Hi":
# "<|im_start|>system\nYou are Qwen, ...<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n".
# Written for these checkpoints.
V2_CHAT_TEMPLATE = (
    "{%- set turns = messages -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = '" + V2_SYSTEM_PROMPT + "' -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' -}}"
    "{%- for turn in turns -%}"
    "{{- '<|im_start|>' + turn['role'] + '\\n' + turn['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

FAST_DLLM_V2 = Qwen2Family(
    label="Fast-dLLM v2",
    added=V2_SPECIALS,
    mask=V2_MASK,
    # Qwen2.5-Instruct's tokenizer files, as ``save_pretrained`` writes them:
    # a ``Qwen2Tokenizer`` that transformers ships (no remote code), no bos.
    # The mask token is an added special token without a role (no
    # ``mask_token``), as in the real checkpoints.
    tokenizer=TokenizerFiles(
        roles={"bos_token": None, "eos_token": QWEN2_IM_END, "pad_token": QWEN2_ENDOFTEXT},
        additional_special_tokens=QWEN2_ADDITIONAL,
        chat_template=V2_CHAT_TEMPLATE,
        config={**QWEN2_TOKENIZER_CONFIG, "add_bos_token": False, "tokenizer_class": "Qwen2Tokenizer"},
        not_special=QWEN2_NOT_SPECIAL,
        tokenizer_json=True,
        slow_files=True,
    ),
    # bd_size is the block-diffusion block length; no mask id.
    # ``transformers_version`` is the writer's own stamp (nothing reads it).
    config={
        "architectures": ["Fast_dLLM_QwenForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration.Fast_dLLM_QwenConfig",
            "AutoModel": "modeling.Fast_dLLM_QwenModel",
            "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM",
        },
        "bd_size": 32,
        "model_type": "Fast_dLLM_Qwen",
        "sliding_window": 131072,
        "transformers_version": "4.53.1",
        "use_cache": True,
    },
    config_token_ids={"bos_token_id": QWEN2_ENDOFTEXT, "eos_token_id": QWEN2_IM_END},
    # Inherited from Qwen2.5-Instruct: sampling settings of an autoregressive
    # chat model, which a diffusion server must not apply by default.
    generation_config={
        "do_sample": True,
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
        "transformers_version": "4.37.0",
    },
    generation_token_ids={
        "bos_token_id": QWEN2_ENDOFTEXT,
        "eos_token_id": [QWEN2_IM_END, QWEN2_ENDOFTEXT],
        "pad_token_id": QWEN2_ENDOFTEXT,
    },
)


def write_fast_dllm_v2_checkpoint(
    out_dir,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 256,
    vocab_size: int = 512,
    tokenizer_size: int = 496,
    max_position_embeddings: int = 4096,
    bd_size: int = 32,
    tie_word_embeddings: bool = False,
    seed: int = 0,
    dtype: str = "float32",
    logit_scale: float = DEFAULT_LOGIT_SCALE,
) -> Path:
    """Write a random Fast-dLLM v2 checkpoint in the hub layout of
    ``Efficient-Large-Model/Fast_dLLM_v2_7B`` (``tie_word_embeddings=False``:
    an ``lm_head.weight``) or ``Fast_dLLM_v2_1.5B`` (``True``: the head is
    ``model.embed_tokens.weight``) into ``out_dir``; return its path.

    Files: config.json (``Fast_dLLM_QwenForCausalLM``, ``bd_size``, no mask
    id), generation_config.json (Qwen2.5-Instruct's sampling defaults),
    model.safetensors, and a ``Qwen2Tokenizer``: tokenizer.json,
    tokenizer_config.json, vocab.json, merges.txt, added_tokens.json,
    special_tokens_map.json (no remote-code ``.py`` files).  The tokenizer
    has ``tokenizer_size`` ids, the 22 Qwen2.5 added tokens and ``|<MASK>|``
    last; the ``vocab_size - tokenizer_size`` rows above are padding.
    """
    family = replace(
        FAST_DLLM_V2,
        config={**FAST_DLLM_V2.config, "bd_size": bd_size},
        tie_word_embeddings=tie_word_embeddings,
    )
    return write_qwen2_checkpoint(
        out_dir,
        family,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        tokenizer_size=tokenizer_size,
        seed=seed,
        dtype=dtype,
        logit_scale=logit_scale,
    )
