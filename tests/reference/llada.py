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

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from .common import (
    ForwardOutput,
    KeysFn,
    ReferenceModel,
    apply_rotary,
    bidirectional_attention,
    compute_dtype,
    rms_norm,
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


def load_safetensors_dir(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of every ``*.safetensors`` shard in the directory."""
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no *.safetensors in {path}")
    weights: dict[str, torch.Tensor] = {}
    for shard in shards:
        weights.update(load_file(str(shard)))
    return weights


class LLaDA(ReferenceModel):
    """LLaDA with weights held as plain tensors (no nn.Module machinery)."""

    family = "llada"

    def __init__(self, config: LLaDAConfig, weights: dict[str, torch.Tensor], eos_ids=frozenset()):
        self.config = config
        self.mask_id = config.mask_token_id
        self.eos_ids = frozenset(eos_ids)
        self.dtype = weights[PREFIX + "wte.weight"].dtype
        self.wte = weights[PREFIX + "wte.weight"]
        self.ln_f = weights[PREFIX + "ln_f.weight"]
        head = weights.get(PREFIX + "ff_out.weight")
        if head is None:
            if not config.weight_tying:
                raise KeyError(PREFIX + "ff_out.weight (and weight_tying is false)")
            head = self.wte
        self.head = head
        self.blocks = [
            {name: weights[f"{PREFIX}blocks.{i}.{name}.weight"] for name in BLOCK_WEIGHTS}
            for i in range(config.n_layers)
        ]
        biases = [k for k in weights if k.endswith(".bias")]
        if biases:
            raise ValueError(f"reference LLaDA has no biases, checkpoint has {biases[:3]}")

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None) -> "LLaDA":
        """Load ``config.json`` + shards; ``dtype`` casts all weights (default:
        keep the stored dtype)."""
        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        weights = load_safetensors_dir(path)
        if dtype is not None:
            weights = {k: v.to(dtype) for k, v in weights.items()}
        return cls(LLaDAConfig.from_dict(cfg), weights, read_eos_ids(path, cfg))

    def _attention(self, w: dict, x: torch.Tensor, layer: int, positions, keys: KeysFn):
        """Attention sub-block (input already normed): project, rotate, let
        ``keys`` choose what the rows attend to, output projection."""
        c = self.config
        n = x.shape[0]
        q = F.linear(x, w["q_proj"]).view(n, c.n_heads, c.head_dim).transpose(0, 1)
        k = F.linear(x, w["k_proj"]).view(n, c.n_kv_heads, c.head_dim).transpose(0, 1)
        v = F.linear(x, w["v_proj"]).view(n, c.n_kv_heads, c.head_dim).transpose(0, 1)
        cos, sin = positions
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k_all, v_all = keys(layer, k, v)
        return F.linear(bidirectional_attention(q, k_all, v_all), w["attn_out"]), (k, v)

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
