"""Dream checkpoints in the hub layout of ``Dream-org/Dream-v0-Instruct-7B``:
Qwen2 tensor names, and the files of its remote-code tokenizer (``vocab.json``,
``merges.txt``, ``added_tokens.json``, ``special_tokens_map.json``,
``tokenizer_config.json``; no ``tokenizer.json``, no ``.py`` files)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from .core import DEFAULT_LOGIT_SCALE, write_json
from .qwen2 import (
    QWEN2_ADDED,
    QWEN2_ADDITIONAL,
    QWEN2_ENDOFTEXT,
    QWEN2_IM_END,
    QWEN2_IM_START,
    QWEN2_NOT_SPECIAL,
    QWEN2_TOKENIZER_CONFIG,
    Qwen2Family,
    qwen2_config,
    qwen2_generation_config,
    qwen2_weight_shapes,
    write_qwen2_checkpoint,
)
from .tokenizers import TokenizerFiles, build_qwen2_tokenizer, write_tokenizer

# Dream's tokenizer: Qwen2.5's tokens, then <|beginoftext|> (151665 in the
# 7B model) and <|mask|> (151666, config.json mask_token_id).
DREAM_EOS = QWEN2_ENDOFTEXT  # eos, pad and unk of the tokenizer; config eos/pad/bos id
DREAM_IM_START = QWEN2_IM_START
DREAM_IM_END = QWEN2_IM_END
DREAM_BOS = "<|beginoftext|>"  # the tokenizer's bos_token (Dream's own addition)
DREAM_MASK = "<|mask|>"  # Dream's own addition
DREAM_SPECIALS: list[tuple[str, bool]] = [*QWEN2_ADDED, (DREAM_BOS, True), (DREAM_MASK, True)]
DREAM_ADDITIONAL = QWEN2_ADDITIONAL

# The chat template of Dream-v0-Instruct-7B (tokenizer_config.json): the
# Qwen2 ChatML format with a default system turn and no bos token, e.g.
# "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n".
DREAM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

DREAM = Qwen2Family(
    label="Dream",
    added=DREAM_SPECIALS,
    mask=DREAM_MASK,
    # Dream's remote-code tokenizer (``DreamTokenizer``, a slow Qwen2-style
    # BPE in ``tokenization_dream.py``, which is *not* written): no
    # tokenizer.json, as on the hub.  The ``auto_map`` to the remote module
    # keeps plain transformers from loading it: the plugin registers a class
    # of that name (``vllm_dllm_plugin.models.dream_tokenizer``).
    tokenizer=TokenizerFiles(
        roles={"bos_token": DREAM_BOS, "eos_token": DREAM_EOS, "mask_token": DREAM_MASK, "pad_token": DREAM_EOS},
        additional_special_tokens=QWEN2_ADDITIONAL,
        chat_template=DREAM_CHAT_TEMPLATE,
        config={
            **QWEN2_TOKENIZER_CONFIG,
            "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
            "tokenizer_class": "DreamTokenizer",
        },
        not_special=QWEN2_NOT_SPECIAL,
        tokenizer_json=False,
        slow_files=True,
    ),
    # As on the hub: bos, eos and pad ids are all <|endoftext|> (the
    # tokenizer's bos_token <|beginoftext|> is not what config.json names),
    # no sliding window, ``use_cache`` false.
    config={
        "architectures": ["DreamModel"],
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "model_type": "Dream",
        "sliding_window": None,
        "transformers_version": "4.46.2",
        "use_cache": False,
    },
    config_token_ids={
        "bos_token_id": DREAM_EOS,
        "eos_token_id": DREAM_EOS,
        "mask_token_id": DREAM_MASK,
        "pad_token_id": DREAM_EOS,
    },
    # The fields of Dream's own ``diffusion_generate`` (``alg`` "origin",
    # ``steps`` 512, ``eps``, ...) next to bos = eos = pad = <|endoftext|>.
    # Chat turns end with <|im_end|>, which is not listed (as on the hub).
    generation_config={
        "_from_model_config": True,
        "alg": "origin",
        "alg_temp": None,
        "eps": 0.001,
        "mask_token_id": None,
        "output_history": False,
        "steps": 512,
        "temperature": 0.0,
        "top_k": None,
        "top_p": None,
        "transformers_version": "4.46.2",
    },
    generation_token_ids={"bos_token_id": DREAM_EOS, "eos_token_id": DREAM_EOS, "pad_token_id": DREAM_EOS},
)


def build_dream_tokenizer(vocab_size: int) -> tuple[Tokenizer, dict[str, int]]:
    """Dream's tokenizer covering ``[0, vocab_size)``, its 24 added tokens
    last (the 7B checkpoint pads its head to 152064 rows past the
    tokenizer's 151667; the tiny one has no such gap)."""
    return build_qwen2_tokenizer(DREAM_SPECIALS, vocab_size)


def write_dream_tokenizer_files(out_dir: Path, tok: Tokenizer, ids: dict[str, int]) -> None:
    """Dream's vocab.json, merges.txt, added_tokens.json,
    special_tokens_map.json and tokenizer_config.json (``DREAM.tokenizer``)."""
    write_tokenizer(out_dir, DREAM.tokenizer, tok, ids)


def write_dream_config(out_dir: Path, *, dtype: str, ids: dict[str, int], **sizes: int) -> dict:
    """config.json: every key of Dream-v0-Instruct-7B's, sizes substituted
    (``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
    ``num_key_value_heads``, ``intermediate_size``, ``vocab_size``,
    ``max_position_embeddings``)."""
    config = qwen2_config(DREAM, **sizes, dtype=dtype, ids=ids)
    write_json(out_dir / "config.json", config)
    return config


def write_dream_generation_config(out_dir: Path, ids: dict[str, int]) -> None:
    """generation_config.json as Dream-v0-Instruct-7B has it."""
    write_json(out_dir / "generation_config.json", qwen2_generation_config(DREAM, ids))


def dream_weight_shapes(**sizes: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of Dream's safetensors (Qwen2's, untied ``lm_head``)."""
    return qwen2_weight_shapes(**sizes)


def write_dream_checkpoint(
    out_dir,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 256,
    vocab_size: int = 512,
    max_position_embeddings: int = 1024,
    seed: int = 0,
    dtype: str = "float32",
    logit_scale: float = DEFAULT_LOGIT_SCALE,
) -> Path:
    """Write a random Dream checkpoint in the hub layout of
    ``Dream-org/Dream-v0-Instruct-7B`` into ``out_dir``; return its path.

    Files: config.json, generation_config.json, model.safetensors,
    vocab.json, merges.txt, added_tokens.json, special_tokens_map.json,
    tokenizer_config.json (no remote-code ``.py`` files).  The tokenizer
    covers every id of ``vocab_size``; its last 24 ids are the special
    tokens, the mask token last.
    """
    return write_qwen2_checkpoint(
        out_dir,
        DREAM,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        seed=seed,
        dtype=dtype,
        logit_scale=logit_scale,
    )
