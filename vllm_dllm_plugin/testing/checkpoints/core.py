"""What every family writes the same way: JSON files, shape checks and the
safetensors weights (sharded like the hub when large), kept once so the
families cannot drift."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

# Head sizes the vLLM CPU attention backend accepts; keeping to them lets the
# checkpoints be served on machines without a GPU.
SUPPORTED_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Weights larger than this are split into model-0000i-of-0000n.safetensors
# shards plus model.safetensors.index.json, as on the hub (the 8B preset
# gets six, like LLaDA-8B-Instruct); one shard is held in memory at a time.
MAX_SHARD_BYTES = 3_000_000_000

# Default standard deviation of the output logits.  Chosen (by measuring a
# plain forward pass of the tiny preset on random prompts) so that argmax
# confidences of masked positions spread over (0, 1): a fair share is above
# 0.7 and some above 0.9, so confidence-threshold decoding rules really fire.
DEFAULT_LOGIT_SCALE = 8.0


def write_json(path: Path, obj: dict) -> None:
    """Pretty-printed with sorted keys, like ``save_pretrained`` output."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def check_shapes(
    hidden: int, heads: int, kv_heads: int, dtype: str, *, names: tuple[str, str, str], head_dim: int | None = None
) -> None:
    """Reject a dtype or head layout the plugin cannot load.

    ``names`` are the family's own spellings of (hidden, heads, kv_heads), so
    the error message uses the same argument names as the caller's signature.
    ``head_dim`` is given where the layout sets it apart from the hidden size
    (Qwen3: 4B has 32 heads of 128 on a hidden size of 2560).
    """
    hidden_name, heads_name, kv_name = names
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if (head_dim is None and hidden % heads) or heads % kv_heads:
        raise ValueError(f"{hidden_name} must divide by {heads_name}, and {heads_name} by {kv_name}")
    head_dim = hidden // heads if head_dim is None else head_dim
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {head_dim} is not one of {SUPPORTED_HEAD_DIMS}")


def write_weights(
    out_dir: Path,
    shapes: dict[str, tuple[int, ...]],
    make_tensor: Callable[[str, tuple[int, ...], torch.Generator], torch.Tensor],
    *,
    seed: int,
    dtype: str,
    head_name: str,
    silent_ids: Sequence[int],
) -> int:
    """model.safetensors (or its shards, see :func:`shard_files`) from
    ``make_tensor`` (one CPU generator seeded with ``seed``, tensors drawn in
    the order of ``shapes``, so a seed gives the same bytes on every
    machine); rows ``silent_ids`` of ``head_name`` are zeroed.  Only one
    shard is in memory at a time.  Returns the parameter count."""
    gen = torch.Generator().manual_seed(seed)
    files = shard_files(shapes, dtype)
    weight_map = {}
    for file in dict.fromkeys(files.values()):
        tensors = {}
        for name in (n for n, f in files.items() if f == file):
            t = make_tensor(name, shapes[name], gen)
            if name == head_name:
                t[list(silent_ids)] = 0.0
            tensors[name] = t.to(DTYPES[dtype]).contiguous()
            weight_map[name] = file
        save_file(tensors, str(out_dir / file), metadata={"format": "pt"})
    n_params = sum(math.prod(s) for s in shapes.values())
    if len(set(files.values())) > 1:
        write_json(
            out_dir / "model.safetensors.index.json",
            {"metadata": {"total_size": n_params * DTYPES[dtype].itemsize},
             "weight_map": weight_map},
        )
    return n_params


def shard_files(shapes: dict[str, tuple[int, ...]], dtype: str) -> dict[str, str]:
    """The file each tensor goes to: all in model.safetensors when they fit
    ``MAX_SHARD_BYTES``, else consecutive runs of tensors of at most that
    size (a larger tensor alone) in model-0000i-of-0000n.safetensors."""
    itemsize = DTYPES[dtype].itemsize
    shard_of, shard, size = {}, 0, 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * itemsize
        if size and size + nbytes > MAX_SHARD_BYTES:
            shard, size = shard + 1, 0
        shard_of[name] = shard
        size += nbytes
    n = shard + 1
    if n == 1:
        return dict.fromkeys(shapes, "model.safetensors")
    return {name: f"model-{i + 1:05d}-of-{n:05d}.safetensors" for name, i in shard_of.items()}
