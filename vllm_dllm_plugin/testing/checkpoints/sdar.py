"""SDAR checkpoints in the hub layout of ``JetLM/SDAR-{1.7B,4B,8B}-Chat``:
Qwen3 tensor names (per-head ``q_norm`` / ``k_norm``, no biases), Qwen3's
tokenizer with ``<|MASK|>`` added, and the hub's generation config, written
by the Qwen2-layout writer (:func:`~.qwen2.write_qwen2_checkpoint` with
``Qwen2Family.qwen3``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .core import DEFAULT_LOGIT_SCALE, write_json
from .qwen2 import (
    QWEN2_ADDED,
    QWEN2_ADDITIONAL,
    QWEN2_ENDOFTEXT,
    QWEN2_IM_END,
    QWEN2_TOKENIZER_CONFIG,
    Qwen2Family,
    write_qwen2_checkpoint,
)
from .tokenizers import TokenizerFiles

# Qwen3's added tokens: Qwen2.5's 22, then the tool-response and think tags
# (ordinary added tokens, as Qwen3 marks them), 151665..151668 in the real
# tokenizer.  SDAR appends its mask token, 151669: ordinary too, but listed
# in ``additional_special_tokens`` and named by tokenizer_config's
# ``mask_token``.
QWEN3_ADDED: list[tuple[str, bool]] = [
    *QWEN2_ADDED,
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
SDAR_MASK = "<|MASK|>"
SDAR_SPECIALS: list[tuple[str, bool]] = [*QWEN3_ADDED, (SDAR_MASK, False)]
SDAR_ADDITIONAL = [*QWEN2_ADDITIONAL, SDAR_MASK]
# The hub's added_tokens.json and special_tokens_map.json call the mask
# "<MASK>" (a token that does not exist); transformers follows
# tokenizer_config.json, where it is "<|MASK|>".  Reproduced, so that code
# reading the mask from the wrong file fails here as on the real checkpoint.
SDAR_MASK_MISNAMED = "<MASK>"

# Qwen3's chat template, restated (written for these checkpoints): ChatML,
# no default system turn, no bos.  Earlier assistant turns (before the last
# user turn) lose their ``<think>...</think>`` part; with
# ``enable_thinking=False`` the generation prompt ends in an empty think
# block.  For one user turn "Hi":
# "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
# (+ "<think>\n\n</think>\n\n" when thinking is off).
SDAR_CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- set content = m['content'] if m['content'] is string else '' -%}"
    "{%- if m['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)

SDAR = Qwen2Family(
    label="SDAR",
    added=SDAR_SPECIALS,
    mask=SDAR_MASK,
    # Qwen3's tokenizer files as ``save_pretrained`` writes them: a
    # ``Qwen2Tokenizer`` that transformers ships (the stock fast class gives
    # the remote slow one's ids), no bos, eos and pad <|endoftext|>.
    tokenizer=TokenizerFiles(
        roles={
            "bos_token": None,
            "eos_token": QWEN2_ENDOFTEXT,
            "mask_token": SDAR_MASK,
            "pad_token": QWEN2_ENDOFTEXT,
        },
        additional_special_tokens=SDAR_ADDITIONAL,
        chat_template=SDAR_CHAT_TEMPLATE,
        config={**QWEN2_TOKENIZER_CONFIG, "add_bos_token": False, "tokenizer_class": "Qwen2Tokenizer"},
        not_special=frozenset(s for s, special in SDAR_SPECIALS if not special),
        tokenizer_json=True,
        slow_files=True,
    ),
    # The training copies' keys: block_size and mask_token_id (the hub file
    # may lack both: ``omit_block_keys``), flex attention and the fused loss
    # (training only; nothing here reads them).  ``transformers_version`` is
    # the version the remote code was written for.
    config={
        "architectures": ["SDARForCausalLM"],
        "attn_implementation": "flex_attention",
        "auto_map": {
            "AutoConfig": "configuration_sdar.SDARConfig",
            "AutoModel": "modeling_sdar.SDARModel",
            "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM",
        },
        "block_size": 4,
        "fuse_cross_entropy": True,
        "model_type": "sdar",
        "sliding_window": None,
        "transformers_version": "4.52.4",
        "use_cache": True,
    },
    config_token_ids={
        "bos_token_id": QWEN2_ENDOFTEXT,
        "eos_token_id": QWEN2_ENDOFTEXT,
        "mask_token_id": SDAR_MASK,
    },
    # Qwen3's sampling defaults: the published loop reads only the stop ids.
    generation_config={
        "do_sample": True,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.52.4",
    },
    generation_token_ids={
        "bos_token_id": QWEN2_ENDOFTEXT,
        "eos_token_id": [QWEN2_IM_END, QWEN2_ENDOFTEXT],
        "pad_token_id": QWEN2_ENDOFTEXT,
    },
    qwen3=True,
)


def _misname_mask(out: Path) -> None:
    """The hub's naming trap: ``<MASK>`` for the mask token in
    added_tokens.json and special_tokens_map.json (ids unchanged)."""
    added = json.loads((out / "added_tokens.json").read_text(encoding="utf-8"))
    added = {SDAR_MASK_MISNAMED if s == SDAR_MASK else s: i for s, i in added.items()}
    (out / "added_tokens.json").write_text(
        json.dumps(added, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    special = json.loads((out / "special_tokens_map.json").read_text())
    special["mask_token"]["content"] = SDAR_MASK_MISNAMED
    write_json(out / "special_tokens_map.json", special)


def write_sdar_checkpoint(
    out_dir,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int | None = None,
    intermediate_size: int = 256,
    vocab_size: int = 512,
    tokenizer_size: int = 496,
    max_position_embeddings: int = 4096,
    block_size: int = 4,
    omit_block_keys: bool = False,
    tie_word_embeddings: bool = False,
    seed: int = 0,
    dtype: str = "float32",
    logit_scale: float = DEFAULT_LOGIT_SCALE,
) -> Path:
    """Write a random SDAR checkpoint in the hub layout of
    ``JetLM/SDAR-{4B,8B}-Chat`` (``tie_word_embeddings=False``: an
    ``lm_head.weight``) or of a Qwen3-1.7B-shaped one (``True``: the head is
    ``model.embed_tokens.weight``) into ``out_dir``; return its path.

    Files: config.json (``SDARForCausalLM``, Qwen3 keys, ``block_size`` and
    ``mask_token_id`` unless ``omit_block_keys``), generation_config.json
    (Qwen3's sampling defaults, ``eos_token_id`` [<|im_end|>,
    <|endoftext|>]), model.safetensors, and a ``Qwen2Tokenizer``:
    tokenizer.json, tokenizer_config.json (``mask_token`` <|MASK|>),
    vocab.json, merges.txt, added_tokens.json and special_tokens_map.json
    (both with the hub's ``<MASK>`` misnomer).  No remote-code ``.py``
    files.  The tokenizer has ``tokenizer_size`` ids, Qwen3's 26 added
    tokens and ``<|MASK|>`` last; the ``vocab_size - tokenizer_size`` rows
    above are padding.
    """
    config = {**SDAR.config, "block_size": block_size}
    token_ids = dict(SDAR.config_token_ids)
    if omit_block_keys:
        del config["block_size"], token_ids["mask_token_id"]
    family = replace(SDAR, config=config, config_token_ids=token_ids, tie_word_embeddings=tie_word_embeddings)
    out = write_qwen2_checkpoint(
        out_dir,
        family,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        tokenizer_size=tokenizer_size,
        seed=seed,
        dtype=dtype,
        logit_scale=logit_scale,
    )
    _misname_mask(out)
    return out
