"""Forward counts of SDAR and LLaDA2.x: the published loops against the engine.

Runs the plain-PyTorch references (``vllm_dllm_plugin/testing/reference/
sdar_loop.py``, ``llada2_loop.py``) on the tiny test checkpoints and prints,
per setting, the published loop's forwards and those of an engine with an
exact block cache (the count the parity tests check the engine against:
one prefill for the prompt's whole blocks, the denoising forwards, a commit
forward per finished block the request goes on after). No end token stops
the runs (``eos_ids=()``), so every request generates ``max_tokens``.

    python benchmarks/stepped_forward_counts.py
"""

from __future__ import annotations

import random
import tempfile

import torch

from vllm_dllm_plugin.testing.checkpoints import write_llada2_checkpoint, write_sdar_checkpoint
from vllm_dllm_plugin.testing.reference import llada2_loop, sdar_loop
from vllm_dllm_plugin.testing.reference.llada2 import LLaDA2Moe
from vllm_dllm_plugin.testing.reference.sdar import SDAR

SHAPES = ((5, 64), (70, 96))   # (prompt tokens, max_tokens)
SETTINGS = (
    ("LLaDA2.0, threshold 0.95", "llada2", {}),
    ("LLaDA2.0, threshold 0.7", "llada2", dict(threshold=0.7)),
    ("LLaDA2.1, threshold 0.7, editing 0.5", "llada2", dict(threshold=0.7, editing_threshold=0.5)),
    ("SDAR, dynamic 0.85", "sdar", {}),
    ("SDAR, static S=4", "sdar", dict(remasking="low_confidence_static")),
)


def main() -> None:
    torch.set_num_threads(1)
    out = tempfile.mkdtemp()
    models = {"llada2": (LLaDA2Moe.from_pretrained(write_llada2_checkpoint(out + "/l2")),
                         llada2_loop.generate),
              "sdar": (SDAR.from_pretrained(write_sdar_checkpoint(out + "/sd")),
                       sdar_loop.generate)}
    rng = random.Random(0)
    print("| setting | P | max_tokens | published forwards | engine forwards "
          "(prefill + denoise + commit) |")
    print("| --- | --- | --- | --- | --- |")
    for name, family, options in SETTINGS:
        model, generate = models[family]
        for prompt_len, max_tokens in SHAPES:
            prompt = [rng.randrange(400) for _ in range(prompt_len)]
            result = generate(model, prompt, max_tokens=max_tokens, eos_ids=(), **options)
            kinds = result.kinds
            print(f"| {name} | {prompt_len} | {max_tokens} | {result.published_forwards} | "
                  f"{result.forwards} ({kinds.count('prefill')} + {kinds.count('denoise')} + "
                  f"{kinds.count('commit')}) |")


if __name__ == "__main__":
    main()
