"""Plain-PyTorch LLaDA, loaded from a checkpoint directory in the hub format.

Written from the LLaDA architecture (arXiv 2502.09992; GSAI-ML/LLaDA-8B-Instruct's
config) and checked against LLaDA's published modeling code for the numerical details:

* pre-norm blocks: ``h = x + attn_out(attn(attn_norm(x)))``,
  ``out = h + ff_out(silu(ff_proj(ff_norm(h))) * up_proj(ff_norm(h)))``;
* RMSNorm in float32, cast back, then times the weight;
* NeoX rotary in float32 at absolute canvas positions, theta = ``rope_theta``;
* fully bidirectional attention (no mask at all), GQA when ``n_kv_heads < n_heads``;
* final ``ln_f`` and an untied head ``model.transformer.ff_out`` (tied to ``wte``
  only if the checkpoint has no head and says ``weight_tying``).
No biases (LLaDA-8B has none); a checkpoint carrying any is rejected rather
than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .common import Geometry, LayerNames, ReferenceModel, output_head

PREFIX = "model.transformer."
# ``model.transformer.blocks.{i}.<name>.weight``: attention norm, q/k/v, output
# projection ``attn_out``; MLP norm, SiLU branch ``ff_proj``, linear branch
# ``up_proj`` and the block's own ``ff_out`` projecting back down.
NAMES = LayerNames(
    attn_norm="attn_norm",
    q="q_proj",
    k="k_proj",
    v="v_proj",
    o="attn_out",
    mlp_norm="ff_norm",
    gate="ff_proj",
    up="up_proj",
    down="ff_out",
)
BLOCK_WEIGHTS = NAMES.all()


@dataclass(frozen=True)
class LLaDAConfig:
    d_model: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    rope_theta: float
    rms_norm_eps: float
    vocab_size: int
    mask_token_id: int
    weight_tying: bool = False

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dict(cls, cfg: dict) -> "LLaDAConfig":
        n_heads = cfg["n_heads"]
        return cls(
            d_model=cfg["d_model"],
            n_heads=n_heads,
            # LLaDA's config allows null meaning "same as n_heads"
            n_kv_heads=cfg.get("n_kv_heads") or n_heads,
            n_layers=cfg["n_layers"],
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            vocab_size=cfg.get("embedding_size") or cfg["vocab_size"],
            mask_token_id=cfg["mask_token_id"],
            weight_tying=bool(cfg.get("weight_tying", False)),
        )


class LLaDA(ReferenceModel):
    """LLaDA with weights held as plain tensors (no nn.Module machinery); the
    forward is the shared decoder of ``common.ReferenceModel``. ``wte``,
    ``blocks`` and ``ln_f`` name the same tensors as ``embed``, ``layers`` and
    ``final_norm``, as in the checkpoint."""

    family = "llada"
    config_class = LLaDAConfig
    names = NAMES
    rotate_in_model_dtype = False  # LLaDA rotates in float32

    def __init__(self, config: LLaDAConfig, weights: dict[str, torch.Tensor], eos_ids=frozenset()):
        super().__init__(config, eos_ids)
        self.dtype = weights[PREFIX + "wte.weight"].dtype
        self.wte = self.embed = weights[PREFIX + "wte.weight"]
        self.ln_f = self.final_norm = weights[PREFIX + "ln_f.weight"]
        self.head = output_head(
            weights, PREFIX + "ff_out.weight", PREFIX + "wte.weight", config.weight_tying, "weight_tying"
        )
        self.blocks = self.layers = [
            {name: weights[f"{PREFIX}blocks.{i}.{name}.weight"] for name in BLOCK_WEIGHTS}
            for i in range(config.n_layers)
        ]
        self.geometry = Geometry(config.n_heads, config.n_kv_heads, config.head_dim, config.rope_theta, config.rms_norm_eps)
        biases = [k for k in weights if k.endswith(".bias")]
        if biases:
            raise ValueError(f"reference LLaDA has no biases, checkpoint has {biases[:3]}")
