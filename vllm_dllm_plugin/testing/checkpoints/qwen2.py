"""The Qwen2 layout that Dream and Fast-dLLM v2 share: Qwen2.5's added
tokens, config keys, tensor names and initialisation, and the one writer
(:func:`write_qwen2_checkpoint`); what differs between the two is data (a
:class:`Qwen2Family`).  SDAR's Qwen3 layout is the same writer with
``Qwen2Family.qwen3`` set: per-head q/k RMSNorm weights instead of q/k/v
biases, and ``head_dim`` / ``attention_bias`` in config.json."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from .core import DEFAULT_LOGIT_SCALE, check_shapes, write_json, write_weights
from .tokenizers import TokenizerFiles, build_qwen2_tokenizer, unreadable_ids, write_tokenizer

# Qwen2.5's added tokens, in id order: in the real tokenizers they follow the
# 151643 BPE tokens, so <|endoftext|> is 151643, <|im_start|> 151644,
# <|im_end|> 151645, ..., <|file_sep|> 151664.  The flag says whether the
# token is "special" (Qwen2.5 marks the tool-call and fill-in-the-middle
# tokens as ordinary added tokens).  Each family appends its own tokens; the
# tiny tokenizers keep the order and put the block at the end of their small
# vocabulary.
QWEN2_ENDOFTEXT = "<|endoftext|>"
QWEN2_IM_START = "<|im_start|>"
QWEN2_IM_END = "<|im_end|>"  # ends a chat turn
QWEN2_ADDED: list[tuple[str, bool]] = [
    (QWEN2_ENDOFTEXT, True),
    (QWEN2_IM_START, True),
    (QWEN2_IM_END, True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
# "additional_special_tokens" of Qwen2.5 (the chat and vision markers).
QWEN2_ADDITIONAL = [s for s, _ in QWEN2_ADDED[1:14]]
QWEN2_NOT_SPECIAL = frozenset(s for s, special in QWEN2_ADDED if not special)
# tokenizer_config.json keys every Qwen2 BPE tokenizer has.
QWEN2_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "clean_up_tokenization_spaces": False,
    "errors": "replace",
    "model_max_length": 131072,
    "split_special_tokens": False,
    "unk_token": None,
}
# Weight of the Qwen3 layout's q/k norms: normalised q and k rows of RMS 3
# give scores of standard deviation about 9, as the 3x q/k projections (with
# biases) do in the Qwen2 layout.
QK_NORM_GAIN = 3.0


@dataclass(frozen=True)
class Qwen2Family:
    """Everything a Qwen2-layout family writes differently; the rest
    (Qwen2 tensor names and init, the Qwen2 BPE, the files) is
    :func:`write_qwen2_checkpoint`'s.

    ``added`` are the added tokens (content, "special") in id order after
    the BPE; ``mask`` is the one whose head row is zeroed.  ``config`` and
    ``generation_config`` are the family's keys of config.json and
    generation_config.json beyond the shared Qwen2 ones; the ``*_token_ids``
    maps name keys whose values are token ids, by token content (a list of
    contents gives a list of ids).  ``qwen3``: the Qwen3 layout (q/k norms,
    no biases, ``head_dim`` and ``attention_bias`` keys).
    """

    label: str
    added: Sequence[tuple[str, bool]]
    mask: str
    tokenizer: TokenizerFiles
    config: Mapping[str, object]
    config_token_ids: Mapping[str, str]
    generation_config: Mapping[str, object]
    generation_token_ids: Mapping[str, str | Sequence[str]]
    tie_word_embeddings: bool = False
    qwen3: bool = False


def qwen2_config(
    family: Qwen2Family,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    vocab_size: int,
    max_position_embeddings: int,
    dtype: str,
    ids: dict[str, int],
    head_dim: int | None = None,
) -> dict:
    """config.json of a ``family`` checkpoint: Qwen2's keys with the hub
    values (``rope_theta`` 1e6, RMSNorm eps 1e-6, ``max_window_layers``
    equal to the layer count, no sliding window), the sizes, and the
    family's keys; Qwen3 adds ``head_dim`` (default: hidden / heads) and
    ``attention_bias`` false."""
    qwen3 = {}
    if family.qwen3:
        qwen3 = {"attention_bias": False, "head_dim": head_dim or hidden_size // num_attention_heads}
    elif head_dim is not None:
        raise ValueError(f"{family.label}: head_dim is a Qwen3-layout key")
    return {
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "num_key_value_heads": num_key_value_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": family.tie_word_embeddings,
        "torch_dtype": dtype,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
        **qwen3,
        **family.config,
        **{key: ids[s] for key, s in family.config_token_ids.items()},
    }


def qwen2_generation_config(family: Qwen2Family, ids: dict[str, int]) -> dict:
    """generation_config.json of a ``family`` checkpoint."""
    token_ids = {
        key: ids[s] if isinstance(s, str) else [ids[x] for x in s] for key, s in family.generation_token_ids.items()
    }
    return {**family.generation_config, **token_ids}


def qwen2_weight_shapes(
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    vocab_size: int,
    tie_word_embeddings: bool = False,
    qwen3: bool = False,
    head_dim: int | None = None,
) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a Qwen2 safetensors file (biases on q/k/v
    only; ``lm_head`` unless the embeddings are tied).  ``qwen3``: Qwen3's
    instead, no biases and per-head ``self_attn.q_norm`` / ``k_norm``
    weights after ``o_proj`` (``head_dim`` default: hidden / heads)."""
    if head_dim is not None and not qwen3:
        raise ValueError("head_dim is a Qwen3-layout key")
    head_dim = head_dim or hidden_size // num_attention_heads
    q_dim = num_attention_heads * head_dim
    kv_dim = num_key_value_heads * head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, hidden_size)}
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden_size,)
        shapes[p + "self_attn.q_proj.weight"] = (q_dim, hidden_size)
        if not qwen3:
            shapes[p + "self_attn.q_proj.bias"] = (q_dim,)
        shapes[p + "self_attn.k_proj.weight"] = (kv_dim, hidden_size)
        if not qwen3:
            shapes[p + "self_attn.k_proj.bias"] = (kv_dim,)
        shapes[p + "self_attn.v_proj.weight"] = (kv_dim, hidden_size)
        if not qwen3:
            shapes[p + "self_attn.v_proj.bias"] = (kv_dim,)
        shapes[p + "self_attn.o_proj.weight"] = (hidden_size, q_dim)
        if qwen3:
            shapes[p + "self_attn.q_norm.weight"] = (head_dim,)
            shapes[p + "self_attn.k_norm.weight"] = (head_dim,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden_size,)
        shapes[p + "mlp.gate_proj.weight"] = (intermediate_size, hidden_size)
        shapes[p + "mlp.up_proj.weight"] = (intermediate_size, hidden_size)
        shapes[p + "mlp.down_proj.weight"] = (hidden_size, intermediate_size)
    shapes["model.norm.weight"] = (hidden_size,)
    if not tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab_size, hidden_size)
    return shapes


def _qwen2_tensor(
    name: str, shape: tuple[int, ...], gen: torch.Generator, logit_scale: float, head_name: str
) -> torch.Tensor:
    """One random Qwen2 tensor.  Same scheme as LLaDA's (:func:`_init_std`):
    1/sqrt(fan_in) projections, 3x larger q and k for sharp, position-sensitive
    attention, small (0.3) embeddings, and a head (``head_name``: the
    embeddings themselves when tied) giving logits of standard deviation
    about ``logit_scale``.  The biases are random too (std 0.3 for q/k, 0.1
    for v) and the norm weights are ``1 + 0.1 * N(0, 1)``, so that an
    implementation that dropped a bias or a norm weight would give different
    outputs.  Qwen3's per-head q/k norms undo the q/k scale, so their
    weights are ``QK_NORM_GAIN`` times that: attention scores of about the
    same spread as the Qwen2 layout's."""
    if name.endswith(("q_norm.weight", "k_norm.weight")):
        return QK_NORM_GAIN * (1.0 + 0.1 * torch.randn(shape, generator=gen))
    if name.endswith("norm.weight"):
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    if name.endswith(("q_proj.bias", "k_proj.bias")):
        return 0.3 * torch.randn(shape, generator=gen)
    if name.endswith("v_proj.bias"):
        return 0.1 * torch.randn(shape, generator=gen)
    fan_in = shape[-1]
    if name == head_name:
        std = logit_scale / math.sqrt(fan_in)
    elif name == "model.embed_tokens.weight":
        std = 0.3
    elif name.endswith(("q_proj.weight", "k_proj.weight")):
        std = 3.0 / math.sqrt(fan_in)
    else:
        std = 1.0 / math.sqrt(fan_in)
    return torch.randn(shape, generator=gen) * std


def write_qwen2_checkpoint(
    out_dir,
    family: Qwen2Family,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    vocab_size: int,
    max_position_embeddings: int,
    tokenizer_size: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
    logit_scale: float = DEFAULT_LOGIT_SCALE,
    head_dim: int | None = None,
) -> Path:
    """Write a random checkpoint of a Qwen2-layout ``family`` into ``out_dir``;
    return its path.

    The tokenizer covers ids ``[0, tokenizer_size)`` (default: all of
    ``vocab_size``), the family's added tokens last; embedding and head rows
    past it are padding, as in the real checkpoints.  Weights: one CPU
    generator seeded with ``seed``, tensors drawn in Qwen2 order; the head
    rows of the mask token, of byte tokens that alone decode to no readable
    text (see :func:`unreadable_token_ids`) and of the padding are zero (the
    embedding rows too when tied), so the model practically never emits them.
    ``head_dim`` (Qwen3 layout only) defaults to hidden / heads.
    """
    check_shapes(
        hidden_size,
        num_attention_heads,
        num_key_value_heads,
        dtype,
        names=("hidden_size", "num_attention_heads", "num_key_value_heads"),
        head_dim=head_dim,
    )
    tokenizer_size = vocab_size if tokenizer_size is None else tokenizer_size
    if tokenizer_size > vocab_size:
        raise ValueError(f"tokenizer_size={tokenizer_size} is larger than vocab_size={vocab_size}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
    )
    tok, ids = build_qwen2_tokenizer(family.added, tokenizer_size)
    write_tokenizer(out, family.tokenizer, tok, ids)
    config = qwen2_config(
        family, **sizes, max_position_embeddings=max_position_embeddings, dtype=dtype, ids=ids, head_dim=head_dim
    )
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", qwen2_generation_config(family, ids))
    head_name = "model.embed_tokens.weight" if family.tie_word_embeddings else "lm_head.weight"
    write_weights(
        out,
        qwen2_weight_shapes(
            **sizes, tie_word_embeddings=family.tie_word_embeddings, qwen3=family.qwen3, head_dim=head_dim
        ),
        partial(_qwen2_tensor, logit_scale=logit_scale, head_name=head_name),
        seed=seed,
        dtype=dtype,
        head_name=head_name,
        silent_ids=unreadable_ids(tok, ids, family.mask) + list(range(tokenizer_size, vocab_size)),
    )
    return out
