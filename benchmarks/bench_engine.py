"""The engine against the plain-PyTorch reference, per decoding mode, at batch 1.

Both sides run the same random-weight LLaDA-shaped checkpoint (~100M
parameters by default: ``scripts/make_checkpoints.py``'s ``small-100m``
preset, large enough that compute dominates) with the same settings, measured
side by side in one run, one request at a time, ``ignore_eos`` (the whole
canvas); medians over the prompts.

    python benchmarks/bench_engine.py --gen-length 64 --prompts 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common import BASELINE, MODES, ROOT, diffusion_params, median, print_table, timed


def checkpoint(preset: str) -> Path:
    from vllm_dllm_plugin.testing.checkpoints import PRESETS, write_llada_checkpoint

    path = ROOT / ".cache" / "models" / f"llada-{preset}"
    if not (path / "config.json").exists():
        write_llada_checkpoint(path, **PRESETS[preset], seed=0)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--preset", default="small-100m")
    args = ap.parse_args()

    from vllm import LLM

    from vllm_dllm_plugin.testing.reference.fast_dllm import generate
    from vllm_dllm_plugin.testing.reference.llada import LLaDA

    model_dir = checkpoint(args.preset)
    llm = LLM(model=str(model_dir), max_model_len=1024, dtype="float32", enforce_eager=True, seed=0)
    ref = LLaDA.from_pretrained(model_dir)
    params_m = sum(t.numel() for t in [ref.wte, ref.head, ref.ln_f]) + sum(
        t.numel() for block in ref.blocks for t in block.values())
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 990, (int(n),), generator=g).tolist()
               for n in torch.linspace(24, 96, args.prompts)]
    llm.generate([{"prompt_token_ids": prompts[0]}], diffusion_params(MODES[BASELINE], 32,
                                                                      ignore_eos=True), use_tqdm=False)

    rows, base = [], None
    for name, mode in MODES.items():
        params = diffusion_params(mode, args.gen_length, ignore_eos=True)
        eng, refs, steps, same = [], [], [], 0
        for p in prompts:
            seconds, outputs = timed(llm.generate, [{"prompt_token_ids": p}], params, use_tqdm=False)
            eng.append(args.gen_length / seconds)
            seconds, result = timed(generate, ref, p, gen_length=args.gen_length, eos_ids=(),
                                    block_length=32, **mode)
            refs.append(args.gen_length / seconds)
            steps.append(args.gen_length / result.forwards)
            same += list(outputs[0].outputs[0].token_ids) == result.tokens
        e, r = median(eng), median(refs)
        base = base or e
        rows.append([name, f"{e:.1f}", f"{r:.1f}", f"{e / r:.2f}x", f"{e / base:.2f}x",
                     f"{median(steps):.2f}", f"{same}/{len(prompts)}"])
        print(rows[-1], flush=True)

    print(f"\nbatch 1, generation length {args.gen_length}, block length 32, model "
          f"{args.preset} ({params_m / 1e6:.0f}M parameters), {args.prompts} prompts of 24-96 "
          f"tokens (medians)\n")
    print_table(["mode", "engine tok/s", "reference tok/s", "engine / reference", "vs baseline",
                 "tokens/step", "same tokens"], rows)


if __name__ == "__main__":
    main()
