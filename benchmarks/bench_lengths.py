"""How each mode's cost grows with the generation length (64 to 512).

One request at a time on the embedded model, ``ignore_eos`` so that the whole
canvas is decoded (the setting of Fast-dLLM's throughput figures): without a
cache every step runs over the whole canvas, the prefix cache over the block
and everything after it, the dual cache over the block alone; the
parallel rules cut the number of steps.  Medians over ``--prompts`` prompts,
all measured in one run.

    python benchmarks/bench_lengths.py --lengths 64,128,256,512 --prompts 3

Writes ``docs/figures/length_scaling.png``.
"""

from __future__ import annotations

import argparse

from common import MODES, chat_prompts, diffusion_params, heldout_problems, median, model_arg
from common import model_dir_of, plot_per_length, print_table, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="64,128,256,512")
    ap.add_argument("--prompts", type=int, default=3)
    model_arg(ap)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]

    from vllm import LLM

    model_dir = model_dir_of(args)
    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=1024, enforce_eager=True, seed=0)
    prompts = chat_prompts(llm, [p["question"] for p in heldout_problems(model_dir, args.prompts)])
    llm.generate(prompts[:1], diffusion_params(MODES["prefix, threshold 0.9"], 64), use_tqdm=False)

    seconds = {}  # (mode, length) -> median seconds per request
    for name, mode in MODES.items():
        for length in lengths:
            params = diffusion_params(mode, length, ignore_eos=True)
            seconds[name, length] = median(
                [timed(llm.generate, [p], params, use_tqdm=False)[0] for p in prompts])
        print(name, " ".join(f"{seconds[name, g]:.2f}s" for g in lengths), flush=True)

    print(f"\nseconds per request (batch 1, whole canvas decoded, block length 32, "
          f"median of {len(prompts)} prompts); in brackets: tokens/s\n")
    rows = [[name] + [f"{seconds[name, g]:.2f} ({g / seconds[name, g]:.0f})" for g in lengths]
            for name in MODES]
    print_table(["mode"] + [f"G={g}" for g in lengths], rows)

    plot_per_length(
        {name: {g: seconds[name, g] for g in lengths} for name in MODES},
        xlabel="generation length (tokens)", ylabel="seconds per request",
        title="Cost of one request vs generation length (embedded model, batch 1)",
        name="length_scaling.png", log2_x=True)


if __name__ == "__main__":
    main()
