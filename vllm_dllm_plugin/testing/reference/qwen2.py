"""Plain-PyTorch Qwen2 decoder, the architecture shared by Dream and Fast-dLLM v2.

Both families are Qwen2.5 checkpoints with Qwen2 weight names; they differ in
how they attend (Dream: fully bidirectional; Fast-dLLM v2: block-causal) and
in how they decode, not in the layer math. The layer math, checked against
the published Dream / Fast-dLLM v2 modeling code:

* pre-norm blocks: ``h = x + o_proj(attn(input_layernorm(x)))``,
  ``out = h + down_proj(silu(gate_proj(n)) * up_proj(n))`` with
  ``n = post_attention_layernorm(h)``;
* q/k/v projections with biases, ``o_proj`` and the MLP without;
* RMSNorm in float32, cast back, then times the weight (eps ``rms_norm_eps``);
* NeoX rotary at absolute positions, theta ``rope_theta``: the cos/sin tables
  are computed in float32 and cast to the model dtype, and the rotation runs
  in the model dtype;
* GQA when ``num_key_value_heads < num_attention_heads``;
* final ``model.norm`` and an untied ``lm_head`` (tied to the embeddings only
  if the checkpoint has no head and says ``tie_word_embeddings``).

The forward itself is ``common.ReferenceModel.forward``; which keys a row
attends to is the caller's choice (``KeysFn`` and the optional ``allowed``
matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .common import Geometry, LayerNames, ReferenceModel, output_head

EMBED = "model.embed_tokens.weight"
NORM = "model.norm.weight"
HEAD = "lm_head.weight"
NAMES = LayerNames(
    attn_norm="input_layernorm.weight",
    q="self_attn.q_proj.weight",
    k="self_attn.k_proj.weight",
    v="self_attn.v_proj.weight",
    o="self_attn.o_proj.weight",
    mlp_norm="post_attention_layernorm.weight",
    gate="mlp.gate_proj.weight",
    up="mlp.up_proj.weight",
    down="mlp.down_proj.weight",
    q_bias="self_attn.q_proj.bias",
    k_bias="self_attn.k_proj.bias",
    v_bias="self_attn.v_proj.bias",
)
LAYER_WEIGHTS = NAMES.all()


def qwen2_fields(cfg: dict) -> dict:
    """The Qwen2 part of a config.json, as keyword arguments of :class:`Qwen2Config`."""
    heads = cfg["num_attention_heads"]
    theta = cfg.get("rope_theta")
    if theta is None:  # transformers 5 style: rope settings in rope_parameters
        theta = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    if cfg.get("rope_scaling"):
        raise ValueError(f"reference Qwen2 has no rope scaling, config has {cfg['rope_scaling']}")
    return dict(
        hidden_size=cfg["hidden_size"],
        num_attention_heads=heads,
        num_key_value_heads=cfg.get("num_key_value_heads") or heads,
        num_hidden_layers=cfg["num_hidden_layers"],
        rope_theta=float(theta),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        vocab_size=cfg["vocab_size"],
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


@dataclass(frozen=True)
class Qwen2Config:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    rope_theta: float
    rms_norm_eps: float
    vocab_size: int
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, cfg: dict):
        return cls(**qwen2_fields(cfg))


class Qwen2(ReferenceModel):
    """Qwen2 with weights held as plain tensors (no nn.Module machinery).
    Subclasses set ``family`` and ``config_class`` (a :class:`Qwen2Config`
    with a ``mask_token_id``)."""

    names = NAMES
    rotate_in_model_dtype = True

    def __init__(self, config: Qwen2Config, weights: dict[str, torch.Tensor], eos_ids=frozenset()):
        super().__init__(config, eos_ids)
        self.dtype = weights[EMBED].dtype
        self.embed = weights[EMBED]
        self.final_norm = weights[NORM]
        self.head = output_head(weights, HEAD, EMBED, config.tie_word_embeddings, "tie_word_embeddings")
        self.layers = [
            {name: weights[f"model.layers.{i}.{name}"] for name in self.names.all()}
            for i in range(config.num_hidden_layers)
        ]
        self.geometry = Geometry(
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
            config.rope_theta,
            config.rms_norm_eps,
        )
        unexpected = [k for k in weights if k.endswith("o_proj.bias") or (".mlp." in k and k.endswith(".bias"))]
        if unexpected:
            raise ValueError(f"reference Qwen2 has no o_proj/MLP biases, checkpoint has {unexpected[:3]}")

    @property
    def norm(self) -> torch.Tensor:
        """The final norm under its checkpoint name (``model.norm``)."""
        return self.final_norm
