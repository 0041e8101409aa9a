"""A written checkpoint's W8A8 int8 twin, in compressed-tensors' on-disk format.

``python -m vllm_dllm_plugin.testing.checkpoints.quantize SRC DST`` reads the
checkpoint directory ``SRC`` (any family: LLaDA's OLMo names or the Qwen2
layout; one ``model.safetensors`` or hub-style shards with an index) and
writes ``DST``: the same files, with

* every linear weight inside a transformer block (a 2-D ``.weight`` whose
  name contains ``.layers.`` or ``.blocks.``: q/k/v/o and the MLP
  projections) stored as ``int8`` under its own name plus a ``.weight_scale``
  of shape ``[out, 1]`` in the checkpoint dtype: symmetric, one scale per
  output channel, ``scale = max|w| / 127``, ``q = round(w / scale)``;
* embeddings, norms, biases and the output head unchanged (the head is
  listed in ``ignore``, as llm-compressor's W8A8 recipes do);
* ``config.json`` gaining the ``quantization_config`` compressed-tensors
  writes for its ``W8A8`` preset: one config group targeting ``Linear``,
  int8 channel-wise static weights, int8 per-token dynamic symmetric input
  activations, format ``int-quantized``, status ``compressed``.

vLLM reads that as ``CompressedTensorsW8A8Int8`` (channel strategy, dynamic
per-token activations); its CPU build runs it with the oneDNN int8 GEMM
(``CPUInt8ScaledMMLinearKernel``).  The config is serialised by the
``compressed_tensors`` package's own classes (a vLLM dependency), so its keys
are exactly the library's.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_INDEX = "model.safetensors.index.json"
_IN_BLOCK = re.compile(r"\.(layers|blocks)\.\d+\.")
_EMBEDDING = re.compile(r"(embed_tokens|wte)\.weight$")


def is_block_linear(name: str, tensor: torch.Tensor) -> bool:
    """A linear layer's weight inside a transformer block."""
    return (name.endswith(".weight") and tensor.dim() == 2 and tensor.is_floating_point()
            and bool(_IN_BLOCK.search(name)))


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8, one scale per output channel (row): ``(q, scale)`` with
    ``weight ~= q * scale``; the scale keeps the weight's dtype, shape ``[out, 1]``."""
    w = weight.float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127.0
    q = torch.round(w / scale).clamp(-128, 127).to(torch.int8)
    return q, scale.to(weight.dtype)


def quantization_config(ignore: list[str]) -> dict:
    """``config.json``'s ``quantization_config`` for the W8A8 int8 preset."""
    import transformers  # noqa: F401  (compressed_tensors imports transformers first)
    import compressed_tensors
    from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme

    scheme = preset_name_to_scheme("W8A8", ["Linear"])
    scheme.format = "int-quantized"
    config = QuantizationConfig(
        config_groups={"group_0": scheme}, format="int-quantized",
        quantization_status="compressed", ignore=ignore)
    out = config.to_dict()
    out["version"] = compressed_tensors.__version__
    return out


def _weight_files(src: Path) -> list[str]:
    index = src / WEIGHTS_INDEX
    if index.exists():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return ["model.safetensors"]


def quantize_checkpoint(src: Path | str, dst: Path | str) -> Path:
    """Write ``dst``, the W8A8 int8 twin of the checkpoint directory ``src``."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    files = _weight_files(src)
    weight_map: dict[str, str] = {}
    heads: list[str] = []
    quantized = 0
    for file in files:
        tensors = load_file(str(src / file))
        out: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            if is_block_linear(name, tensor):
                out[name], out[name + "_scale"] = quantize_weight(tensor)
                quantized += 1
            else:
                out[name] = tensor
                if (name.endswith(".weight") and tensor.dim() == 2
                        and not _IN_BLOCK.search(name) and not _EMBEDDING.search(name)):
                    heads.append(name[: -len(".weight")])
        save_file(out, str(dst / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in out})
    if not quantized:
        raise ValueError(f"{src}: no linear weights inside transformer blocks to quantize")

    for path in src.iterdir():
        if path.is_file() and path.name not in files and path.name not in (
                "config.json", WEIGHTS_INDEX):
            shutil.copy2(path, dst / path.name)
    if (src / WEIGHTS_INDEX).exists():
        index = json.loads((src / WEIGHTS_INDEX).read_text())
        index["weight_map"] = dict(sorted(weight_map.items()))
        index.get("metadata", {}).pop("total_size", None)
        (dst / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2) + "\n")

    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = quantization_config(sorted(heads) or ["lm_head"])
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return dst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="checkpoint directory to quantize")
    parser.add_argument("dst", type=Path, help="directory for the quantized twin")
    args = parser.parse_args(argv)
    print(quantize_checkpoint(args.src, args.dst))


if __name__ == "__main__":
    main()
