"""Plain-PyTorch LLaDA, loaded from a checkpoint directory in the hub format.

Written from the architecture description (docs/fast-dllm-semantics.md, section 5)
and checked against LLaDA's published modeling code for the numerical details:

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
import torch.nn.functional as F

from .common import (
    ForwardOutput,
    KeysFn,
    ReferenceModel,
    compute_dtype,
    output_head,
    rms_norm,
    rotary_attention,
    rotary_tables,
)

PREFIX = "model.transformer."
BLOCK_WEIGHTS = (
    "attn_norm",
    "q_proj",
    "k_proj",
    "v_proj",
    "attn_out",
    "ff_norm",
    "ff_proj",
    "up_proj",
    "ff_out",
)


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
    """LLaDA with weights held as plain tensors (no nn.Module machinery)."""

    family = "llada"
    config_class = LLaDAConfig

    def __init__(self, config: LLaDAConfig, weights: dict[str, torch.Tensor], eos_ids=frozenset()):
        super().__init__(config, eos_ids)
        self.dtype = weights[PREFIX + "wte.weight"].dtype
        self.wte = weights[PREFIX + "wte.weight"]
        self.ln_f = weights[PREFIX + "ln_f.weight"]
        self.head = output_head(
            weights, PREFIX + "ff_out.weight", PREFIX + "wte.weight", config.weight_tying, "weight_tying"
        )
        self.blocks = [
            {name: weights[f"{PREFIX}blocks.{i}.{name}.weight"] for name in BLOCK_WEIGHTS}
            for i in range(config.n_layers)
        ]
        biases = [k for k in weights if k.endswith(".bias")]
        if biases:
            raise ValueError(f"reference LLaDA has no biases, checkpoint has {biases[:3]}")

    def _attention(self, w: dict, x: torch.Tensor, layer: int, positions, keys: KeysFn):
        """Attention sub-block (input already normed): project, rotate, let
        ``keys`` choose what the rows attend to, output projection."""
        c = self.config
        q, k, v = (F.linear(x, w[name]) for name in ("q_proj", "k_proj", "v_proj"))
        att, kv = rotary_attention(q, k, v, c.n_heads, c.n_kv_heads, c.head_dim, positions, layer, keys)
        return F.linear(att, w["attn_out"]), kv

    def _mlp(self, w: dict, x: torch.Tensor) -> torch.Tensor:
        """SwiGLU: the SiLU branch is ``ff_proj``, the linear branch ``up_proj``,
        and the block's own ``ff_out`` projects back down."""
        return F.linear(F.silu(F.linear(x, w["ff_proj"])) * F.linear(x, w["up_proj"]), w["ff_out"])

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, start: int, keys: KeysFn) -> ForwardOutput:
        c = self.config
        ids = torch.as_tensor(ids, dtype=torch.long)
        positions = torch.arange(start, start + ids.shape[0])
        tables = rotary_tables(positions, c.head_dim, c.rope_theta, compute_dtype(self.dtype))
        x = self.wte[ids]
        fresh = []
        for layer, w in enumerate(self.blocks):
            att, kv = self._attention(w, rms_norm(x, w["attn_norm"], c.rms_norm_eps), layer, tables, keys)
            fresh.append(kv)
            h = x + att
            x = h + self._mlp(w, rms_norm(h, w["ff_norm"], c.rms_norm_eps))
        logits = F.linear(rms_norm(x, self.ln_f, c.rms_norm_eps), self.head)
        return ForwardOutput(logits=logits, kv=fresh)
