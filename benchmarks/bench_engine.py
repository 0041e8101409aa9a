"""Engine vs the plain-PyTorch reference, per decoding mode, and batching scaling.

Both sides run the same random-weight LLaDA-shaped checkpoint (written by
scripts/make_checkpoints.py) with the same settings, measured side by side in
one run; medians over the prompts.  Prints a markdown table.

    python benchmarks/bench_engine.py --gen-length 64 --prompts 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = {
    "baseline: none, 1 token/step": dict(cache="none", steps_per_block=32),
    "prefix, 1 token/step": dict(cache="prefix", steps_per_block=32),
    "none, threshold 0.9": dict(cache="none", threshold=0.9),
    "prefix, threshold 0.9": dict(cache="prefix", threshold=0.9),
    "dual, threshold 0.9": dict(cache="dual", threshold=0.9),
    "prefix, factor 1.0": dict(cache="prefix", factor=1.0),
}


def checkpoint(path: Path, d_model: int, layers: int) -> Path:
    from make_checkpoints import write_llada_checkpoint

    if not (path / "config.json").exists():
        write_llada_checkpoint(path, d_model=d_model, n_layers=layers,
                               n_heads=d_model // 64, mlp_hidden_size=d_model * 3,
                               vocab_size=1024, max_sequence_length=2048, seed=0)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gen-length", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch-sizes", default="1,4,16")
    args = parser.parse_args()

    import torch
    from vllm import LLM, SamplingParams

    from reference.fast_dllm import generate
    from reference.llada import LLaDA

    model_dir = checkpoint(ROOT / ".cache" / "models" / f"llada-d{args.d_model}-l{args.layers}",
                           args.d_model, args.layers)
    llm = LLM(model=str(model_dir), enforce_eager=True, max_model_len=1024,
              dtype="float32", max_num_seqs=64)
    ref = LLaDA.from_pretrained(model_dir)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 990, (int(n),), generator=g).tolist()
               for n in torch.linspace(24, 96, args.prompts)]

    def engine_params(mode):
        return SamplingParams(temperature=0.0, max_tokens=args.gen_length, ignore_eos=True,
                              extra_args={f"diffusion_{k}": v for k, v in mode.items()})

    llm.generate([{"prompt_token_ids": prompts[0]}], engine_params(MODES[next(iter(MODES))]),
                 use_tqdm=False)  # warm-up
    rows = []
    base_tps = None
    for name, mode in MODES.items():
        eng, refs, steps = [], [], []
        for p in prompts:
            t = time.perf_counter()
            llm.generate([{"prompt_token_ids": p}], engine_params(mode), use_tqdm=False)
            eng.append(args.gen_length / (time.perf_counter() - t))
            t = time.perf_counter()
            result = generate(ref, p, gen_length=args.gen_length, eos_ids=(), **mode)
            refs.append(args.gen_length / (time.perf_counter() - t))
            steps.append(args.gen_length / result.forwards)
        e, r = statistics.median(eng), statistics.median(refs)
        base_tps = base_tps or e
        rows.append((name, e, r, e / r, e / base_tps, statistics.median(steps)))

    print(f"\nbatch 1, gen length {args.gen_length}, model d{args.d_model} x {args.layers} "
          f"layers, {args.prompts} prompts (medians)\n")
    print("| mode | engine tok/s | reference tok/s | engine / reference | vs baseline | tokens/step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, e, r, ratio, speedup, tps in rows:
        print(f"| {name} | {e:.1f} | {r:.1f} | {ratio:.2f}x | {speedup:.2f}x | {tps:.2f} |")

    print("\ncontinuous batching, prefix + threshold 0.9\n")
    print("| concurrent requests | output tok/s | vs 1 request |")
    print("| --- | --- | --- |")
    single = None
    mode = MODES["prefix, threshold 0.9"]
    for n in (int(b) for b in args.batch_sizes.split(",")):
        batch = [{"prompt_token_ids": prompts[i % len(prompts)]} for i in range(n)]
        t = time.perf_counter()
        llm.generate(batch, engine_params(mode), use_tqdm=False)
        tps = n * args.gen_length / (time.perf_counter() - t)
        single = single or tps
        print(f"| {n} | {tps:.1f} | {tps / single:.2f}x |")


if __name__ == "__main__":
    main()
