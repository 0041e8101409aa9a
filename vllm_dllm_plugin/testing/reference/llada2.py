"""Plain-PyTorch LLaDA2.x (``LLaDA2MoeModelLM``: LLaDA2.0 / 2.1, BailingMoeV2 MoE), batch 1.

Written from docs/llada2-semantics.md section 2 (the published
``modeling_llada2_moe.py``'s numerics):

* pre-norm blocks ``h = x + dense(attn(input_layernorm(x)))``,
  ``out = h + mlp(post_attention_layernorm(h))``; RMSNorm in float32, cast
  back, times the weight (:func:`common.rms_norm`);
* attention: fused ``query_key_value`` split q|k|v; per-head RMSNorm on q
  and k (``query_layernorm`` / ``key_layernorm``, weights ``[head_dim]``);
  NeoX rotary on the first ``rotary_dim`` dims of each head only (angles in
  float32, cos/sin cast to the model dtype, rotation there), the rest passed
  through; GQA; scale ``head_dim ** -0.5``; ``dense``;
* MLP: SwiGLU in the first ``first_k_dense_replace`` layers; then MoE:
  router logits ``h(fp32) @ W(fp32)``, scores ``sigmoid``, routing scores
  ``scores + expert_bias``; a group's score is the sum of its two best
  routing scores, the ``topk_group`` best groups are kept, the top
  ``num_experts_per_tok`` experts by routing score chosen; their weights are
  the *unbiased* scores over (their sum + 1e-20) times
  ``routed_scaling_factor``, in float32; experts run in the model dtype and
  are mixed in float32, cast back, plus the shared expert;
* final ``model.norm``, untied ``lm_head``; no token shift (row j predicts
  position j).  Logits are returned in the model dtype, as
  ``common.ReferenceModel.forward`` does (callers upcast).

Attention is block-causal (``BlockCausalForwards``); the mask id is the
tokenizer's ``<|mask|>`` (the config has none), the end id ``<|endoftext|>``
(generation_config ``eos_token_id`` / config ``pad_token_id``).  Imports
torch and the other reference modules only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .block_causal import BlockCausalForwards
from .common import (
    ForwardOutput,
    Geometry,
    KeysFn,
    ReferenceModel,
    apply_rotary,
    attention,
    load_checkpoint,
    rms_norm,
    rotary_tables,
)
from .fast_dllm_v2 import read_added_tokens

ARCHITECTURE = "LLaDA2MoeModelLM"
MASK_TOKEN = "<|mask|>"
END_TOKEN = "<|endoftext|>"
DEFAULT_BLOCK = 32

EMBED = "model.word_embeddings.weight"
NORM = "model.norm.weight"
HEAD = "lm_head.weight"
ATTN = ("input_layernorm.weight", "attention.query_key_value.weight", "attention.query_layernorm.weight",
        "attention.key_layernorm.weight", "attention.dense.weight", "post_attention_layernorm.weight")
SWIGLU = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")


@dataclass(frozen=True)
class LLaDA2Config:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rotary_dim: int
    num_hidden_layers: int
    first_k_dense_replace: int
    num_experts: int
    num_experts_per_tok: int
    n_group: int
    topk_group: int
    num_shared_experts: int
    routed_scaling_factor: float
    norm_topk_prob: bool
    rope_theta: float
    rms_norm_eps: float
    vocab_size: int
    mask_token_id: int = -1
    end_token_id: int = -1

    @classmethod
    def from_dict(cls, cfg: dict, added_tokens: dict[str, int] | None = None) -> "LLaDA2Config":
        """The keys the forward reads; anything the reference does not
        implement (biases, LayerNorm q/k norms, softmax routing, tied head,
        rope scaling) is rejected rather than ignored."""
        if ARCHITECTURE not in (cfg.get("architectures") or []):
            raise ValueError(f"not a LLaDA2.x checkpoint: architectures {cfg.get('architectures')}")
        unsupported = {
            "use_bias": cfg.get("use_bias", False), "use_qkv_bias": cfg.get("use_qkv_bias", False),
            "use_qk_norm": not cfg.get("use_qk_norm", True), "use_rmsnorm": not cfg.get("use_rmsnorm", True),
            "score_function": cfg.get("score_function", "sigmoid") != "sigmoid",
            "moe_router_enable_expert_bias": not cfg.get("moe_router_enable_expert_bias", True),
            "tie_word_embeddings": cfg.get("tie_word_embeddings", False), "rope_scaling": cfg.get("rope_scaling"),
            "norm_head": cfg.get("norm_head", False), "use_sliding_window": cfg.get("use_sliding_window", False),
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ValueError(f"reference LLaDA2.x does not implement config {bad}")
        added = added_tokens or {}
        missing = [t for t in (MASK_TOKEN, END_TOKEN) if t not in added]
        if missing:
            raise ValueError(f"tokenizer has no added token(s) {missing}")
        heads = cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
        rotary_dim = cfg.get("rotary_dim") or int(head_dim * cfg.get("partial_rotary_factor", 1.0))
        return cls(
            hidden_size=cfg["hidden_size"],
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rotary_dim=rotary_dim,
            num_hidden_layers=cfg["num_hidden_layers"],
            first_k_dense_replace=cfg.get("first_k_dense_replace", 0),
            num_experts=cfg["num_experts"],
            num_experts_per_tok=cfg["num_experts_per_tok"],
            n_group=cfg["n_group"],
            topk_group=cfg["topk_group"],
            num_shared_experts=cfg.get("num_shared_experts") or 0,
            routed_scaling_factor=float(cfg.get("routed_scaling_factor", 1.0)),
            norm_topk_prob=bool(cfg.get("norm_topk_prob", True)),
            rope_theta=float(cfg.get("rope_theta", 600000.0)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            vocab_size=cfg["vocab_size"],
            mask_token_id=added[MASK_TOKEN],
            end_token_id=added[END_TOKEN],
        )


def route(h: torch.Tensor, gate: torch.Tensor, expert_bias: torch.Tensor, n_group: int, topk_group: int,
          top_k: int, scaling: float, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(experts [n, top_k], weights [n, top_k] float32)`` of the rows ``h``.

    Sigmoid scores of float32 router logits; the bias steers selection only:
    groups ranked by the sum of their two best biased scores, the best
    ``topk_group`` kept, the ``top_k`` best biased scores among them chosen;
    weights are the chosen *unbiased* scores over (their sum + 1e-20), times
    ``scaling``."""
    scores = torch.sigmoid(F.linear(h.float(), gate.float()))
    biased = scores + expert_bias.float()
    n, n_experts = biased.shape
    group_scores = biased.view(n, n_group, -1).topk(2, dim=-1).values.sum(dim=-1)
    groups = group_scores.topk(topk_group, dim=-1).indices
    keep = torch.zeros(n, n_group, dtype=torch.bool).scatter(1, groups, True)
    keep = keep.repeat_interleave(n_experts // n_group, dim=1)
    experts = biased.masked_fill(~keep, float("-inf")).topk(top_k, dim=-1).indices
    weights = scores.gather(1, experts)
    if normalize and top_k > 1:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return experts, weights * scaling


def swiglu(x: torch.Tensor, w: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, w[prefix + "gate_proj.weight"])) * F.linear(x, w[prefix + "up_proj.weight"]),
                    w[prefix + "down_proj.weight"])


class LLaDA2Moe(BlockCausalForwards, ReferenceModel):
    """LLaDA2.x with weights held as plain tensors.  ``layers[i]`` maps the
    layer's checkpoint names (without ``model.layers.{i}.``) to tensors;
    ``geometry`` has ``n_kv_heads`` / ``head_dim`` for the block-causal
    caches; ``eos_ids`` is ``{<|endoftext|>}``."""

    family = "llada2"  # decoded by this module's loops, not fast_dllm.FAMILIES
    config_class = LLaDA2Config

    def __init__(self, config: LLaDA2Config, weights: dict[str, torch.Tensor], eos_ids=frozenset()):
        super().__init__(config, eos_ids)
        self.dtype = weights[EMBED].dtype
        self.embed = weights[EMBED]
        self.final_norm = weights[NORM]
        self.head = weights[HEAD]
        self.layers = []
        for i in range(config.num_hidden_layers):
            p = f"model.layers.{i}."
            names = list(ATTN)
            if i < config.first_k_dense_replace:
                names += ["mlp." + s for s in SWIGLU]
            else:
                names += ["mlp.gate.weight", "mlp.gate.expert_bias"]
                names += [f"mlp.experts.{e}.{s}" for e in range(config.num_experts) for s in SWIGLU]
                if config.num_shared_experts:
                    names += ["mlp.shared_experts." + s for s in SWIGLU]
            self.layers.append({name: weights[p + name] for name in names})
        self.geometry = Geometry(config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                                 config.rope_theta, config.rms_norm_eps)

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None) -> "LLaDA2Moe":
        """config.json, the safetensors shards (``dtype`` casts them; default:
        as stored), ``<|mask|>`` and ``<|endoftext|>`` from the tokenizer
        files; end ids: ``<|endoftext|>`` (and generation_config's
        ``eos_token_id`` / config ``pad_token_id``, which name the same)."""
        path = Path(path)
        cfg, weights, eos_ids = load_checkpoint(path, dtype)
        config = LLaDA2Config.from_dict(cfg, read_added_tokens(path))
        ends = {config.end_token_id}
        gen = path / "generation_config.json"
        if gen.exists():
            ends.update(i for i in (json.loads(gen.read_text()).get("pad_token_id"),) if i is not None)
        model = cls(config, weights, eos_ids=ends | set(eos_ids))
        model.checkpoint = path
        return model

    def moe(self, x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
        """The routed experts mixed in float32, cast back, plus the shared expert."""
        c = self.config
        experts, weights = route(x, w["mlp.gate.weight"], w["mlp.gate.expert_bias"], c.n_group, c.topk_group,
                                 c.num_experts_per_tok, c.routed_scaling_factor, c.norm_topk_prob)
        out = torch.zeros(x.shape, dtype=torch.float32)
        for e in experts.unique().tolist():
            rows, slot = (experts == e).nonzero(as_tuple=True)
            y = swiglu(x[rows], w, f"mlp.experts.{e}.")
            out.index_add_(0, rows, y.float() * weights[rows, slot, None])
        out = out.to(x.dtype)
        if c.num_shared_experts:
            out = out + swiglu(x, w, "mlp.shared_experts.")
        return out

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, start: int, keys: KeysFn, allowed: torch.Tensor | None = None
                ) -> ForwardOutput:
        """Tokens ``ids`` at absolute positions ``start..start+n``; ``keys``
        chooses what they attend to, ``allowed`` masks query/key pairs (see
        ``common.ReferenceModel.forward``).  Logits in the model dtype;
        ``kv``: the rows' per-layer post-norm, post-rotary K and V."""
        c, g = self.config, self.geometry
        ids = torch.as_tensor(ids, dtype=torch.long)
        n, nh, nkv, hd, rd = ids.shape[0], g.n_heads, g.n_kv_heads, g.head_dim, c.rotary_dim
        cos, sin = rotary_tables(torch.arange(start, start + n), rd, g.rope_theta, torch.float32)
        cos, sin = cos.to(self.dtype), sin.to(self.dtype)
        x = self.embed[ids]
        fresh = []
        for layer, w in enumerate(self.layers):
            normed = rms_norm(x, w["input_layernorm.weight"], g.rms_norm_eps)
            q, k, v = F.linear(normed, w["attention.query_key_value.weight"]).split(
                [nh * hd, nkv * hd, nkv * hd], dim=-1)
            q = rms_norm(q.view(n, nh, hd), w["attention.query_layernorm.weight"], g.rms_norm_eps).transpose(0, 1)
            k = rms_norm(k.view(n, nkv, hd), w["attention.key_layernorm.weight"], g.rms_norm_eps).transpose(0, 1)
            v = v.view(n, nkv, hd).transpose(0, 1)
            q = torch.cat([apply_rotary(q[..., :rd], cos, sin), q[..., rd:]], dim=-1)
            k = torch.cat([apply_rotary(k[..., :rd], cos, sin), k[..., rd:]], dim=-1)
            k_all, v_all = keys(layer, k, v)
            fresh.append((k, v))
            h = x + F.linear(attention(q, k_all, v_all, allowed), w["attention.dense.weight"])
            m = rms_norm(h, w["post_attention_layernorm.weight"], g.rms_norm_eps)
            x = h + (self.moe(m, w) if "mlp.gate.weight" in w else swiglu(m, w, "mlp."))
        logits = F.linear(rms_norm(x, self.final_norm, g.rms_norm_eps), self.head)
        return ForwardOutput(logits=logits, kv=fresh)

    def prefill(self, ids, block_size: int = DEFAULT_BLOCK) -> ForwardOutput:
        """The block-causal forward over ``ids`` at positions ``0..n``."""
        return BlockCausalForwards.prefill(self, ids, block_size)

    def block_forward(self, ids, start: int, cache, block_size: int = DEFAULT_BLOCK) -> ForwardOutput:
        """Queries ``ids`` at ``start..`` over the exact cache of ``[0, start)``."""
        return BlockCausalForwards.block_forward(self, ids, start, cache, block_size)
