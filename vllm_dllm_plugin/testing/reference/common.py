"""Transformer pieces shared by the reference models (LLaDA, Dream, Fast-dLLM v2, SDAR).

Everything works on one sequence (batch 1) with plain tensor ops so that each
numerical choice is visible:

* hidden states are ``[n, d_model]``;
* per-layer keys/values are ``[n_kv_heads, n, head_dim]`` and are stored *after*
  rotary (rotation depends only on the absolute position, so a cached key never
  needs re-rotating);
* a "KV cache" is a list with one ``(K, V)`` pair per layer.

A model forward is always "these query tokens, at these absolute positions,
attend to *some* keys". Which keys is decided by a ``KeysFn`` so that the three
cache modes of Fast-dLLM (none / prefix / dual) share one forward; an optional
boolean ``allowed`` matrix ``[queries, keys]`` masks individual pairs (the
block-causal prefill of Fast-dLLM v2); LLaDA and Dream never pass one.

The decoder itself (pre-norm blocks, RMSNorm, rotary attention, SwiGLU MLP) is
written once in :meth:`ReferenceModel.forward`; a family only names its weights
(:class:`LayerNames`) and says whether rotary runs in the model dtype; Qwen3's
per-head q/k RMSNorm (SDAR) runs where its names are given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

KV = tuple[torch.Tensor, torch.Tensor]
KVCache = list[KV]
# (layer index, fresh K of the query rows, fresh V of the query rows) -> (K, V) to attend to
KeysFn = Callable[[int, torch.Tensor, torch.Tensor], KV]


# --- loading a hub-format checkpoint directory (both families use the same files) ----------


def read_eos_ids(path: Path, config: dict) -> frozenset[int]:
    """End tokens: ``eos_token_id`` (int or list) of config.json and of
    generation_config.json when present, merged."""
    ids: set[int] = set()
    sources = [config]
    gen_cfg = path / "generation_config.json"
    if gen_cfg.exists():
        sources.append(json.loads(gen_cfg.read_text()))
    for src in sources:
        eos = src.get("eos_token_id")
        if eos is None:
            continue
        ids.update(eos if isinstance(eos, list) else [eos])
    return frozenset(int(i) for i in ids)


def load_safetensors_dir(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of every ``*.safetensors`` shard in the directory."""
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no *.safetensors in {path}")
    weights: dict[str, torch.Tensor] = {}
    for shard in shards:
        weights.update(load_file(str(shard)))
    return weights


def load_checkpoint(path, dtype: torch.dtype | None) -> tuple[dict, dict[str, torch.Tensor], frozenset[int]]:
    """``(config.json dict, weights, end-token ids)`` of a checkpoint directory;
    ``dtype`` casts all weights (``None``: keep the stored dtype).  The part of
    ``from_pretrained`` that does not depend on the family."""
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    weights = load_safetensors_dir(path)
    if dtype is not None:
        weights = {k: v.to(dtype) for k, v in weights.items()}
    return cfg, weights, read_eos_ids(path, cfg)


def output_head(weights: dict[str, torch.Tensor], head: str, embed: str, tied: bool, tie_key: str) -> torch.Tensor:
    """The untied head ``head``, or the embeddings ``embed`` when the checkpoint
    has no head and its config (key ``tie_key``) says the two are tied."""
    w = weights.get(head)
    if w is None:
        if not tied:
            raise KeyError(f"{head} (and {tie_key} is false)")
        w = weights[embed]
    return w


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: the reference models upcast norms/rotary/attention to
    float32, but a float64 test model should stay float64 so that exactness
    checks are tight."""
    return torch.promote_types(dtype, torch.float32)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm the way LLaDA and Qwen2 do it: the statistic and the division in
    (at least) float32, the result cast back to the input dtype, and only then
    multiplied by the weight (in the input dtype)."""
    xf = x.to(compute_dtype(x.dtype))
    normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def rotary_tables(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[n, head_dim]`` for NeoX-style rotary (the two halves of
    the head share frequencies). Angles are built in ``dtype`` (float32 for
    LLaDA, whose rotary runs in full precision)."""
    exponents = torch.arange(0, head_dim, 2, dtype=dtype) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    angles = positions.to(dtype)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[heads, n, head_dim]`` in the tables' dtype, then cast back.

    NeoX style: the head is split into halves (a, b) and mapped to
    ``(a*cos - b*sin, b*cos + a*sin)``, i.e. ``x*cos + rotate_half(x)*sin`` with
    ``rotate_half(a, b) = (-b, a)``."""
    xf = x.to(cos.dtype)
    half = xf.shape[-1] // 2
    a, b = xf[..., :half], xf[..., half:]
    rotated_half = torch.cat([-b, a], dim=-1)
    return (xf * cos + rotated_half * sin).to(x.dtype)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention, scale ``1/sqrt(head_dim)``; unmasked unless
    ``allowed`` (bool ``[n, m]``, True = query row may read key row) is given.

    ``q`` is ``[n_heads, n, hd]``, ``k``/``v`` are ``[n_kv_heads, m, hd]``; query
    head ``h`` reads kv head ``h // (n_heads / n_kv_heads)`` (grouped-query
    attention: consecutive query heads share a kv head). Scores and softmax in
    (at least) float32. Returns ``[n, n_heads * hd]`` in q's dtype."""
    n_heads, n, hd = q.shape
    group = n_heads // k.shape[0]
    acc = compute_dtype(q.dtype)
    k = k.repeat_interleave(group, dim=0).to(acc)
    v = v.repeat_interleave(group, dim=0).to(acc)
    scores = (q.to(acc) @ k.transpose(-1, -2)) / math.sqrt(hd)
    if allowed is not None:
        assert allowed.shape == scores.shape[1:], "allowed must be [queries, keys]"
        scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.to(q.dtype).transpose(0, 1).reshape(n, n_heads * hd)


def rotary_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    tables: tuple[torch.Tensor, torch.Tensor],
    layer: int,
    keys: "KeysFn",
    allowed: torch.Tensor | None = None,
    qk_norms: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, KV]:
    """The attention core of every family, between the q/k/v projections and
    the output projection: split ``[n, heads * hd]`` rows into heads,
    RMSNorm each head of q and k when ``qk_norms`` (q weight, k weight, eps)
    is given (Qwen3), rotate q and k with ``tables``, let ``keys`` choose
    what the rows attend to, attend (``allowed``: see :func:`attention`).
    Returns ``[n, n_heads * hd]`` and the rows' fresh post-rotary (K, V)."""
    n = q.shape[0]
    q = q.view(n, n_heads, head_dim).transpose(0, 1)
    k = k.view(n, n_kv_heads, head_dim).transpose(0, 1)
    v = v.view(n, n_kv_heads, head_dim).transpose(0, 1)
    if qk_norms is not None:
        q_norm, k_norm, eps = qk_norms
        q, k = rms_norm(q, q_norm, eps), rms_norm(k, k_norm, eps)
    cos, sin = tables
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    k_all, v_all = keys(layer, k, v)
    return attention(q, k_all, v_all, allowed), (k, v)


# --- which keys the query rows attend to -------------------------------------------------


def fresh_keys(layer: int, k: torch.Tensor, v: torch.Tensor) -> KV:
    """No cache: the query rows are the whole canvas and attend to themselves."""
    return k, v


def prefix_keys(prefix: KVCache) -> KeysFn:
    """Prefix cache: queries are ``x[s:]``; keys are the cached ``[0, s)`` rows
    followed by the queries' own fresh K/V (which is not stored anywhere)."""

    def keys(layer: int, k: torch.Tensor, v: torch.Tensor) -> KV:
        pk, pv = prefix[layer]
        return torch.cat([pk, k], dim=1), torch.cat([pv, v], dim=1)

    return keys


def dual_keys(cache: KVCache, start: int) -> KeysFn:
    """Dual cache: queries are ``x[s:e]``; their fresh K/V overwrite rows
    ``[s, e)`` of the full-length cache *in place* (as Fast-dLLM does), and the
    queries attend to all ``L`` rows. Rows outside ``[s, e)`` stay as they were
    at the last refresh."""

    def keys(layer: int, k: torch.Tensor, v: torch.Tensor) -> KV:
        ck, cv = cache[layer]
        end = start + k.shape[1]
        ck[:, start:end] = k
        cv[:, start:end] = v
        return ck, cv

    return keys


@dataclass(frozen=True)
class LayerNames:
    """Keys of one decoder layer's weight dict: a pre-norm block
    ``h = x + o(attn(attn_norm(x)))``, ``out = h + down(silu(gate(n)) * up(n))``
    with ``n = mlp_norm(h)``; q/k/v biases where a family has them, per-head
    q/k RMSNorm weights (before rotary) where it has those (Qwen3)."""

    attn_norm: str
    q: str
    k: str
    v: str
    o: str
    mlp_norm: str
    gate: str
    up: str
    down: str
    q_bias: str | None = None
    k_bias: str | None = None
    v_bias: str | None = None
    q_norm: str | None = None
    k_norm: str | None = None

    def all(self) -> tuple[str, ...]:
        """Every weight of a layer, biases and q/k norms included where the family has them."""
        names = (self.attn_norm, self.q, self.q_bias, self.k, self.k_bias, self.v, self.v_bias, self.o)
        names += (self.q_norm, self.k_norm, self.mlp_norm, self.gate, self.up, self.down)
        return tuple(n for n in names if n is not None)


@dataclass(frozen=True)
class Geometry:
    """The sizes and constants the shared decoder forward needs."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float


def _linear(x: torch.Tensor, w: dict, weight: str, bias: str | None) -> torch.Tensor:
    return F.linear(x, w[weight], w[bias] if bias is not None else None)


@dataclass
class ForwardOutput:
    """Logits ``[n, vocab]`` of the query rows (model dtype) and the query rows'
    fresh per-layer K/V (post-rotary)."""

    logits: torch.Tensor
    kv: KVCache


class ReferenceModel:
    """Base for the reference models: the decoder :meth:`forward` and the
    three cache-shaped entry points are written once here.

    Class attributes a subclass must set: ``family`` (name of its decoding
    family in ``fast_dllm.FAMILIES``), ``config_class`` (a dataclass with
    ``from_dict(config.json dict)`` and a ``mask_token_id``), ``names`` (its
    :class:`LayerNames`) and ``rotate_in_model_dtype`` (Qwen2: the float32
    cos/sin tables are cast to the model dtype and the rotation runs there;
    LLaDA: rotation in float32).  Its ``__init__`` sets ``dtype``, ``embed``,
    ``layers`` (one dict per layer, keyed by ``names``), ``final_norm``,
    ``head`` and ``geometry``.  Loading and the config / mask / end-token
    attributes are the same for every family, so they live here too."""

    family: str
    config_class: type
    names: LayerNames
    rotate_in_model_dtype: bool
    mask_id: int
    eos_ids: frozenset[int]
    dtype: torch.dtype
    embed: torch.Tensor
    layers: list[dict[str, torch.Tensor]]
    final_norm: torch.Tensor
    head: torch.Tensor
    geometry: Geometry
    checkpoint: Path | None = None  # set by from_pretrained

    def __init__(self, config, eos_ids=frozenset()):
        self.config = config
        self.mask_id = config.mask_token_id
        self.eos_ids = frozenset(eos_ids)

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None):
        """Load ``config.json`` + shards; ``dtype`` casts all weights (default:
        keep the stored dtype). End tokens: ``eos_token_id`` of config.json and
        generation_config.json. ``checkpoint`` remembers the directory, so
        the same model can be loaded again in another dtype."""
        cfg, weights, eos_ids = load_checkpoint(path, dtype)
        model = cls(cls.config_class.from_dict(cfg), weights, eos_ids)
        model.checkpoint = Path(path)
        return model

    @torch.no_grad()
    def forward(
        self, ids: torch.Tensor, start: int, keys: KeysFn, allowed: torch.Tensor | None = None
    ) -> ForwardOutput:
        """Run tokens ``ids`` placed at absolute positions ``start..start+n``;
        ``keys`` chooses what they attend to, ``allowed`` (bool ``[n, keys]``)
        optionally masks query/key pairs. Pre-norm blocks: RMSNorm, q/k/v (with
        biases where the family has them), per-head q/k RMSNorm (where the
        family names its weights), rotary, attention, output
        projection, residual; RMSNorm, SwiGLU MLP, residual; final norm, head.
        Logits in the model dtype, one row per input position, unshifted."""
        g, n = self.geometry, self.names
        ids = torch.as_tensor(ids, dtype=torch.long)
        positions = torch.arange(start, start + ids.shape[0])
        tables = rotary_tables(positions, g.head_dim, g.rope_theta, compute_dtype(self.dtype))
        if self.rotate_in_model_dtype:
            tables = (tables[0].to(self.dtype), tables[1].to(self.dtype))
        x = self.embed[ids]
        fresh = []
        for layer, w in enumerate(self.layers):
            normed = rms_norm(x, w[n.attn_norm], g.rms_norm_eps)
            q = _linear(normed, w, n.q, n.q_bias)
            k = _linear(normed, w, n.k, n.k_bias)
            v = _linear(normed, w, n.v, n.v_bias)
            qk_norms = None if n.q_norm is None else (w[n.q_norm], w[n.k_norm], g.rms_norm_eps)
            att, kv = rotary_attention(
                q, k, v, g.n_heads, g.n_kv_heads, g.head_dim, tables, layer, keys, allowed, qk_norms
            )
            fresh.append(kv)
            h = x + F.linear(att, w[n.o])
            m = rms_norm(h, w[n.mlp_norm], g.rms_norm_eps)
            x = h + F.linear(F.silu(F.linear(m, w[n.gate])) * F.linear(m, w[n.up]), w[n.down])
        logits = F.linear(rms_norm(x, self.final_norm, g.rms_norm_eps), self.head)
        return ForwardOutput(logits=logits, kv=fresh)

    @torch.no_grad()
    def full(self, ids: torch.Tensor) -> ForwardOutput:
        """Forward over the whole canvas; its ``kv`` is a refresh's cache."""
        return self.forward(ids, 0, fresh_keys)

    @torch.no_grad()
    def with_prefix(self, canvas: torch.Tensor, start: int, prefix: KVCache) -> ForwardOutput:
        """Prefix-cache step: queries ``canvas[start:]`` over cached K/V of ``[0, start)``."""
        assert all(k.shape[1] == start for k, _ in prefix), "prefix cache must cover [0, start)"
        return self.forward(canvas[start:], start, prefix_keys(prefix))

    @torch.no_grad()
    def with_dual(self, canvas: torch.Tensor, start: int, end: int, cache: KVCache) -> ForwardOutput:
        """Dual-cache step: queries ``canvas[start:end]`` over the full cache
        with rows ``[start, end)`` replaced (in place) by the fresh ones."""
        assert all(k.shape[1] == canvas.shape[0] for k, _ in cache), "dual cache must cover [0, L)"
        return self.forward(canvas[start:end], start, dual_keys(cache, start))
