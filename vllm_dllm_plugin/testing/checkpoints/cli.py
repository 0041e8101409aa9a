"""Write tiny diffusion-LLM checkpoints with random weights, for tests and demos.

The command line of ``scripts/make_checkpoints.py``: one subcommand per
family, each writing a preset (or, with ``--dry-run``, printing the tensors
and files it would write)::

    python scripts/make_checkpoints.py llada OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py dream OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py fast-dllm-v2 OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py llada2 OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py sdar OUT_DIR [--preset tiny] [--seed 0] [--dtype float32]
    python scripts/make_checkpoints.py llada OUT_DIR --preset 8b --dtype bfloat16 --dry-run   # sizes only
    python scripts/make_checkpoints.py fast-dllm-v2 OUT_DIR --preset 1.5b --dtype bfloat16 --dry-run
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

from .core import DTYPES, shard_files
from .dream import write_dream_checkpoint
from .fast_dllm_v2 import write_fast_dllm_v2_checkpoint
from .llada import llada_weight_shapes, write_llada_checkpoint
from .llada2 import llada2_weight_shapes, write_llada2_checkpoint
from .presets import DREAM_PRESETS, LLADA2_PRESETS, PRESETS, SDAR_PRESETS, V2_PRESETS
from .qwen2 import qwen2_weight_shapes
from .sdar import write_sdar_checkpoint


def _run_writer(
    args: argparse.Namespace,
    label: str,
    presets: dict[str, dict],
    writer: Callable[..., Path],
    preset_shapes: Callable[[dict], dict[str, tuple[int, ...]]],
) -> None:
    """Write one preset with ``writer`` and print its size and time (every
    family's CLI); with ``--dry-run`` only print what it would write."""
    preset = presets[args.preset]
    if args.dry_run:
        print_plan(f"{label} {args.preset}", preset_shapes(preset), args.dtype)
        return
    start = time.perf_counter()
    path = writer(args.out_dir, **preset, seed=args.seed, dtype=args.dtype)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f"wrote {label} checkpoint ({args.preset}, {args.dtype}) to {path}: "
          f"{size / 1e6:.1f} MB in {time.perf_counter() - start:.2f} s")


def print_plan(label: str, shapes: dict[str, tuple[int, ...]], dtype: str) -> None:
    """Tensor count, parameters, bytes and files of a checkpoint's weights,
    computed from the shapes alone: nothing is built or written."""
    itemsize = DTYPES[dtype].itemsize
    files = shard_files(shapes, dtype)
    n_params = sum(math.prod(s) for s in shapes.values())
    print(f"{label} ({dtype}): {len(shapes)} tensors, {n_params:,} parameters, {n_params * itemsize:,} bytes")
    for file in dict.fromkeys(files.values()):
        names = [n for n, f in files.items() if f == file]
        size = sum(math.prod(shapes[n]) for n in names) * itemsize
        print(f"  {file}: {len(names)} tensors, {size / 1e9:.2f} GB ({names[0]} .. {names[-1]})")
    for name, shape in list(shapes.items())[:10] + list(shapes.items())[-2:]:
        print(f"  {name}: {tuple(shape)}")


def _llada_preset_shapes(preset: dict) -> dict[str, tuple[int, ...]]:
    sizes = {k: v for k, v in preset.items() if k != "max_sequence_length"}
    sizes.setdefault("n_kv_heads", sizes["n_heads"])  # as write_llada_checkpoint does
    return llada_weight_shapes(**sizes)


def _qwen2_preset_shapes(preset: dict) -> dict[str, tuple[int, ...]]:
    skip = ("max_position_embeddings", "tokenizer_size")
    return qwen2_weight_shapes(**{k: v for k, v in preset.items() if k not in skip})


def _sdar_preset_shapes(preset: dict) -> dict[str, tuple[int, ...]]:
    skip = ("max_position_embeddings", "tokenizer_size")
    return qwen2_weight_shapes(**{k: v for k, v in preset.items() if k not in skip}, qwen3=True)


def _cmd_llada(args: argparse.Namespace) -> None:
    _run_writer(args, "LLaDA", PRESETS, write_llada_checkpoint, _llada_preset_shapes)


def _cmd_dream(args: argparse.Namespace) -> None:
    _run_writer(args, "Dream", DREAM_PRESETS, write_dream_checkpoint, _qwen2_preset_shapes)


def _cmd_fast_dllm_v2(args: argparse.Namespace) -> None:
    _run_writer(args, "Fast-dLLM v2", V2_PRESETS, write_fast_dllm_v2_checkpoint, _qwen2_preset_shapes)


def _cmd_sdar(args: argparse.Namespace) -> None:
    _run_writer(args, "SDAR", SDAR_PRESETS, write_sdar_checkpoint, _sdar_preset_shapes)


def _cmd_llada2(args: argparse.Namespace) -> None:
    _run_writer(args, "LLaDA2.x", LLADA2_PRESETS, write_llada2_checkpoint, lambda p: llada2_weight_shapes(**p))


def _add_family(families, name: str, help: str, presets: dict[str, dict], func) -> None:
    """One FAMILY subcommand; all take the same OUT_DIR and options."""
    sub = families.add_parser(name, help=help)
    sub.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    sub.add_argument("--preset", choices=sorted(presets), default="tiny")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    sub.add_argument("--dry-run", action="store_true", help="print the tensors and files it would write; write nothing")
    sub.set_defaults(func=func)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    families = parser.add_subparsers(dest="family", required=True, metavar="FAMILY")

    _add_family(families, "llada", "LLaDA-8B-Instruct layout (GSAI-ML)", PRESETS, _cmd_llada)
    _add_family(families, "dream", "Dream-v0-Instruct-7B layout (Dream-org)", DREAM_PRESETS, _cmd_dream)
    _add_family(
        families,
        "fast-dllm-v2",
        "Fast_dLLM_v2_7B / _1.5B layout (Efficient-Large-Model)",
        V2_PRESETS,
        _cmd_fast_dllm_v2,
    )
    _add_family(families, "sdar", "SDAR-8B/4B/1.7B-Chat layout (JetLM)", SDAR_PRESETS, _cmd_sdar)

    _add_family(families, "llada2", "LLaDA2.0-mini / LLaDA2.1-mini layout (inclusionAI)", LLADA2_PRESETS,
                _cmd_llada2)

    args = parser.parse_args(argv)
    args.func(args)
