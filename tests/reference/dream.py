"""Plain-PyTorch Dream, loaded from a checkpoint directory in the hub format.

Dream-v0-7B is the Qwen2.5-7B decoder run without a causal mask
(docs/fast-dllm-semantics.md, section 5). Written from that description and
checked against Dream's published modeling code for the numerical details:

* pre-norm blocks: ``h = x + o_proj(attn(input_layernorm(x)))``,
  ``out = h + down_proj(silu(gate_proj(n)) * up_proj(n))`` with
  ``n = post_attention_layernorm(h)``;
* q/k/v projections with biases, ``o_proj`` and the MLP without;
* RMSNorm in float32, cast back, then times the weight (eps ``rms_norm_eps``);
* NeoX rotary at absolute canvas positions, theta ``rope_theta``: the cos/sin
  tables are computed in float32 and cast to the model dtype, and the rotation
  runs in the model dtype (as Qwen2/Dream do; LLaDA rotates in float32);
* fully bidirectional attention, GQA when ``num_key_value_heads < num_attention_heads``;
* final ``model.norm`` and an untied ``lm_head`` (tied to the embeddings only
  if the checkpoint has no head and says ``tie_word_embeddings``).

Logits come out in the model dtype, one row per input position, *unshifted*:
the Dream decoding family (``fast_dllm.DREAM``) applies the shift by one.

Decoding (``fast_dllm.generate`` with this model's family ``"dream"``):

* the prediction for block position ``p`` comes from output row ``p - 1`` of
  the same forward (row 0 keeps its own); in a cached step the rows start at
  ``s``, so position ``s + j`` uses step row ``j - 1`` and position ``s``
  (committed by the refresh) keeps row 0;
* ``probs = softmax(logits)`` in the model dtype, ``conf, pred = probs.max(-1)``
  (temperature > 0: ``pred`` from Gumbel noise as for LLaDA, ``conf`` still the
  un-noised probability at ``pred``);
* the refresh (first forward of a block) commits only position ``s``,
  unconditionally; the rule runs from the next step;
* fixed schedule: with ``m`` masks at the block start the refresh leaves
  ``m' = m - 1``; the following steps ``i = 0, 1, ...`` use
  ``k = min(steps_per_block, m')`` steps and commit
  ``q_i = m' // k + (1 if i < m' % k else 0)`` tokens (nothing after the
  refresh when ``m' == 0``);
* threshold / factor bars are compared with the model-dtype confidence as
  tensor vs. Python float, i.e. effectively rounded to the model dtype.
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

EMBED = "model.embed_tokens.weight"
NORM = "model.norm.weight"
HEAD = "lm_head.weight"
LAYER_WEIGHTS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


@dataclass(frozen=True)
class DreamConfig:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    rope_theta: float
    rms_norm_eps: float
    vocab_size: int
    mask_token_id: int
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, cfg: dict) -> "DreamConfig":
        heads = cfg["num_attention_heads"]
        theta = cfg.get("rope_theta")
        if theta is None:  # transformers 5 style: rope settings in rope_parameters
            theta = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        if cfg.get("rope_scaling"):
            raise ValueError(f"reference Dream has no rope scaling, config has {cfg['rope_scaling']}")
        return cls(
            hidden_size=cfg["hidden_size"],
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("num_key_value_heads") or heads,
            num_hidden_layers=cfg["num_hidden_layers"],
            rope_theta=float(theta),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            vocab_size=cfg["vocab_size"],
            mask_token_id=cfg.get("mask_token_id", 151666),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


class Dream(ReferenceModel):
    """Dream with weights held as plain tensors (no nn.Module machinery)."""

    family = "dream"
    config_class = DreamConfig

    def __init__(self, config: DreamConfig, weights: dict[str, torch.Tensor], eos_ids=frozenset()):
        super().__init__(config, eos_ids)
        self.dtype = weights[EMBED].dtype
        self.embed = weights[EMBED]
        self.norm = weights[NORM]
        self.head = output_head(weights, HEAD, EMBED, config.tie_word_embeddings, "tie_word_embeddings")
        self.layers = [
            {name: weights[f"model.layers.{i}.{name}"] for name in LAYER_WEIGHTS}
            for i in range(config.num_hidden_layers)
        ]
        unexpected = [k for k in weights if k.endswith("o_proj.bias") or (".mlp." in k and k.endswith(".bias"))]
        if unexpected:
            raise ValueError(f"reference Dream has no o_proj/MLP biases, checkpoint has {unexpected[:3]}")

    def _attention(self, w: dict, x: torch.Tensor, layer: int, tables, keys: KeysFn):
        """Attention sub-block (input already normed): biased q/k/v, rotary,
        ``keys`` picks what the rows attend to, unbiased output projection."""
        c = self.config
        q = F.linear(x, w["self_attn.q_proj.weight"], w["self_attn.q_proj.bias"])
        k = F.linear(x, w["self_attn.k_proj.weight"], w["self_attn.k_proj.bias"])
        v = F.linear(x, w["self_attn.v_proj.weight"], w["self_attn.v_proj.bias"])
        att, kv = rotary_attention(
            q, k, v, c.num_attention_heads, c.num_key_value_heads, c.head_dim, tables, layer, keys
        )
        return F.linear(att, w["self_attn.o_proj.weight"]), kv

    @staticmethod
    def _mlp(w: dict, x: torch.Tensor) -> torch.Tensor:
        gate = F.silu(F.linear(x, w["mlp.gate_proj.weight"]))
        return F.linear(gate * F.linear(x, w["mlp.up_proj.weight"]), w["mlp.down_proj.weight"])

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, start: int, keys: KeysFn) -> ForwardOutput:
        c = self.config
        ids = torch.as_tensor(ids, dtype=torch.long)
        positions = torch.arange(start, start + ids.shape[0])
        cos, sin = rotary_tables(positions, c.head_dim, c.rope_theta, compute_dtype(self.dtype))
        tables = (cos.to(self.dtype), sin.to(self.dtype))
        x = self.embed[ids]
        fresh = []
        for layer, w in enumerate(self.layers):
            normed = rms_norm(x, w["input_layernorm.weight"], c.rms_norm_eps)
            att, kv = self._attention(w, normed, layer, tables, keys)
            fresh.append(kv)
            h = x + att
            x = h + self._mlp(w, rms_norm(h, w["post_attention_layernorm.weight"], c.rms_norm_eps))
        logits = F.linear(rms_norm(x, self.norm, c.rms_norm_eps), self.head)
        return ForwardOutput(logits=logits, kv=fresh)
