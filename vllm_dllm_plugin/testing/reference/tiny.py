"""Random LLaDA checkpoints in the real hub layout, for tests.

The head is scaled up (``head_scale``) so that a random model's confidences
spread over (0, 1): some positions clear a 0.9 threshold, many do not, which
exercises the multi-token commits of every rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .llada import PREFIX

# All masked positions share one embedding; only attention (through rotary)
# tells them apart. Sharp, position-sensitive attention with a strong value path
# keeps a random model from predicting one token everywhere.
QK_SCALE = 8.0
VO_SCALE = 3.0


def tiny_llada_state(
    *,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    n_layers: int = 2,
    mlp_hidden: int = 128,
    vocab: int = 256,
    head_scale: float = 12.0,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random float32 weights named as in a LLaDA hub checkpoint."""
    gen = torch.Generator().manual_seed(seed)
    head_dim = d_model // n_heads
    kv_dim = (n_kv_heads or n_heads) * head_dim

    def linear(out_dim: int, in_dim: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(out_dim, in_dim, generator=gen) * (scale / in_dim**0.5)

    def norm() -> torch.Tensor:
        return 1.0 + 0.1 * torch.randn(d_model, generator=gen)

    state = {PREFIX + "wte.weight": torch.randn(vocab, d_model, generator=gen)}
    for i in range(n_layers):
        b = f"{PREFIX}blocks.{i}."
        state.update(
            {
                b + "attn_norm.weight": norm(),
                b + "q_proj.weight": linear(d_model, d_model, QK_SCALE),
                b + "k_proj.weight": linear(kv_dim, d_model, QK_SCALE),
                b + "v_proj.weight": linear(kv_dim, d_model, VO_SCALE),
                b + "attn_out.weight": linear(d_model, d_model, VO_SCALE),
                b + "ff_norm.weight": norm(),
                b + "ff_proj.weight": linear(mlp_hidden, d_model),
                b + "up_proj.weight": linear(mlp_hidden, d_model),
                b + "ff_out.weight": linear(d_model, mlp_hidden),
            }
        )
    state[PREFIX + "ln_f.weight"] = norm()
    state[PREFIX + "ff_out.weight"] = linear(vocab, d_model, head_scale)
    return state


def write_tiny_llada(
    path,
    *,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    n_layers: int = 2,
    mlp_hidden: int = 128,
    vocab: int = 256,
    mask_id: int = 255,
    eos_token_id: int | list[int] | None = None,
    rope_theta: float = 10000.0,
    head_scale: float = 12.0,
    seed: int = 0,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (random unless ``state`` is
    given) into ``path``; returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if state is None:
        state = tiny_llada_state(
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            n_layers=n_layers,
            mlp_hidden=mlp_hidden,
            vocab=vocab,
            head_scale=head_scale,
            seed=seed,
        )
    config = {
        "model_type": "llada",
        "architectures": ["LLaDAModelLM"],
        "d_model": d_model,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads or n_heads,
        "n_layers": n_layers,
        "mlp_hidden_size": mlp_hidden,
        "rope_theta": rope_theta,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "embedding_size": vocab,
        "mask_token_id": mask_id,
        "weight_tying": False,
        "max_sequence_length": 4096,
    }
    if eos_token_id is not None:
        config["eos_token_id"] = eos_token_id
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    return path
