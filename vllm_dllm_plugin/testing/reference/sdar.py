"""Plain-PyTorch SDAR (JetLM/SDAR-*-Chat, arXiv 2510.06303): the model and
its block-causal forwards; the decoding loop lives elsewhere.

SDAR is a Qwen3 checkpoint decoded as block diffusion: attention is causal
across blocks of ``block_size`` (4) positions and bidirectional inside one
(:mod:`.block_causal`).  The layer math is ``qwen2.Qwen2``'s with Qwen3's
two differences, checked against Qwen3's published modeling code:

* no q/k/v biases (``attention_bias`` false);
* per-head RMSNorm of q and k (``self_attn.q_norm`` / ``k_norm``, weights of
  ``head_dim``) after the projections and before rotary, same RMSNorm as the
  others (float32 statistic, cast back, times the weight);
* ``head_dim`` is a config key (4B: 128 on a hidden size of 2560).

Rotary, GQA, SwiGLU, final norm and head (untied ``lm_head``, or the
embeddings when the checkpoint has none and says ``tie_word_embeddings``)
are Qwen2's; logits come out unshifted (row j predicts position j).

Ids: the mask is the tokenizer's ``<|MASK|>``, read by name from
tokenizer.json / tokenizer_config.json (``mask_token`` names it); the hub's
added_tokens.json and special_tokens_map.json call it ``<MASK>``, a token
that does not exist, so they are not read.  ``block_size`` is config.json's,
4 when absent (as the hub file may be).  End ids: generation_config.json's
``eos_token_id`` list ([<|im_end|>, <|endoftext|>]), the stop ids the
published loop takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .block_causal import BlockCausalForwards
from .common import ForwardOutput, LayerNames, load_checkpoint
from .fast_dllm_v2 import read_added_tokens
from .qwen2 import NAMES as QWEN2_NAMES
from .qwen2 import Qwen2, qwen2_fields

ARCHITECTURE = "SDARForCausalLM"
MASK_TOKEN = "<|MASK|>"
DEFAULT_BLOCK_SIZE = 4

NAMES = LayerNames(
    attn_norm=QWEN2_NAMES.attn_norm,
    q=QWEN2_NAMES.q,
    k=QWEN2_NAMES.k,
    v=QWEN2_NAMES.v,
    o=QWEN2_NAMES.o,
    mlp_norm=QWEN2_NAMES.mlp_norm,
    gate=QWEN2_NAMES.gate,
    up=QWEN2_NAMES.up,
    down=QWEN2_NAMES.down,
    q_norm="self_attn.q_norm.weight",
    k_norm="self_attn.k_norm.weight",
)
LAYER_WEIGHTS = NAMES.all()


def mask_token_id(path) -> int:
    """The id of the tokenizer's mask token: tokenizer_config.json's
    ``mask_token`` (default ``<|MASK|>``) looked up among the added tokens
    of tokenizer.json / tokenizer_config.json."""
    path = Path(path)
    name = MASK_TOKEN
    tok_cfg = path / "tokenizer_config.json"
    if tok_cfg.exists():
        mask = json.loads(tok_cfg.read_text()).get("mask_token") or MASK_TOKEN
        name = mask["content"] if isinstance(mask, dict) else mask
    added = read_added_tokens(path)
    if name not in added:
        raise ValueError(f"tokenizer has no added token {name!r}")
    return added[name]


def generation_eos_ids(path, config: dict) -> frozenset[int]:
    """generation_config.json's ``eos_token_id`` (int or list); config.json's
    when there is no generation config."""
    gen = Path(path) / "generation_config.json"
    eos = json.loads(gen.read_text()).get("eos_token_id") if gen.exists() else None
    if eos is None:
        eos = config.get("eos_token_id")
    if eos is None:
        return frozenset()
    return frozenset(int(i) for i in (eos if isinstance(eos, list) else [eos]))


@dataclass(frozen=True)
class SDARConfig:
    """Qwen2 keys plus ``head_dim`` and ``block_size``; the mask id is the
    tokenizer's."""

    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    rope_theta: float
    rms_norm_eps: float
    vocab_size: int
    head_dim: int
    tie_word_embeddings: bool = False
    block_size: int = DEFAULT_BLOCK_SIZE
    mask_token_id: int = -1

    @classmethod
    def from_dict(cls, cfg: dict, mask_id: int = -1) -> "SDARConfig":
        if ARCHITECTURE not in (cfg.get("architectures") or []):
            raise ValueError(f"not an SDAR checkpoint: architectures {cfg.get('architectures')}")
        if cfg.get("attention_bias"):
            raise ValueError("reference SDAR has no attention biases (attention_bias is true)")
        if cfg.get("use_sliding_window"):
            raise ValueError("reference SDAR has no sliding window")
        fields = qwen2_fields(cfg)
        return cls(
            **fields,
            head_dim=int(cfg.get("head_dim") or fields["hidden_size"] // fields["num_attention_heads"]),
            block_size=int(cfg.get("block_size") or DEFAULT_BLOCK_SIZE),
            mask_token_id=mask_id,
        )


class SDAR(BlockCausalForwards, Qwen2):
    """SDAR (Qwen3 weights) with block-causal forwards: ``prefill(ids, bs)``
    and ``block_forward(ids, start, cache, bs)``."""

    family = "sdar"  # not a ``fast_dllm.FAMILIES`` family
    config_class = SDARConfig
    names = NAMES

    def __init__(self, config: SDARConfig, weights: dict[str, torch.Tensor], eos_ids=frozenset()):
        biases = [k for k in weights if k.endswith("proj.bias")]
        if biases:
            raise ValueError(f"reference SDAR has no projection biases, checkpoint has {biases[:3]}")
        super().__init__(config, weights, eos_ids)

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None) -> "SDAR":
        """config.json (Qwen3 keys, ``block_size`` default 4), the safetensors
        shards (``dtype`` casts them; default: as stored), the mask id
        ``<|MASK|>`` from the tokenizer files, the end ids from
        generation_config.json."""
        cfg, weights, _ = load_checkpoint(path, dtype)
        config = SDARConfig.from_dict(cfg, mask_token_id(path))
        model = cls(config, weights, eos_ids=generation_eos_ids(path, cfg))
        model.checkpoint = Path(path)
        return model

    def prefill(self, ids, block_size: int | None = None) -> ForwardOutput:
        """The block-causal forward over ``ids`` at positions ``0..n`` (blocks of ``block_size``)."""
        return BlockCausalForwards.prefill(self, ids, block_size or self.config.block_size)

    def block_forward(self, ids, start: int, cache, block_size: int | None = None) -> ForwardOutput:
        """Queries ``ids`` at ``start..`` over the exact cache of ``[0, start)``."""
        return BlockCausalForwards.block_forward(self, ids, start, cache, block_size or self.config.block_size)
