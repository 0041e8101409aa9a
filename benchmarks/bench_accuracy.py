"""Accuracy and throughput of each decoding mode on the embedded model's held-out set.

The embedded model (``vllm_dllm_plugin/assets/llada-arith``, trained by
``scripts/train_embedded_model.py``) answers arithmetic and sorting questions;
``heldout.jsonl`` beside it holds problems it never saw.  Every mode decodes
the same problems through the engine (chat template, greedy, all problems
submitted at once so they share engine steps), side by side in one run:

* accuracy: exact match of the answer text;
* throughput: output tokens/s as vLLM counts them (answer, end-of-turn and the
  end token), and the speed-up over the baseline's wall time (medians over
  ``--repeats``);
* tokens per step and forwards per request, from the plugin's scheduler.

    python benchmarks/bench_accuracy.py --problems 200 --gen-length 256
    python benchmarks/bench_accuracy.py --problems 200 --gen-length 256 --dtype bfloat16

``--dtype`` is the engine's (``LLM(dtype=...)``); float32 by default, bfloat16
is what GPU deployments serve in (and what vLLM's CPU build picks for this
float32 checkpoint when no dtype is given).

Writes ``docs/figures/accuracy_modes.png`` (``accuracy_modes_<dtype>.png`` for a
dtype other than float32).
"""

from __future__ import annotations

import argparse

from common import BASELINE, MODES, chat_prompts, diffusion_params, heldout_problems, median
from common import model_arg, model_dir_of, print_table
from common import save_figure, scheduler_counters, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="the engine's dtype (default: float32)")
    model_arg(ap)
    args = ap.parse_args()

    from vllm import LLM

    model_dir = model_dir_of(args)
    problems = heldout_problems(model_dir, args.problems)
    llm = LLM(model=str(model_dir), dtype=args.dtype, max_model_len=1024, enforce_eager=True,
              max_num_seqs=args.max_num_seqs, seed=0)
    prompts = chat_prompts(llm, [p["question"] for p in problems])
    llm.generate(prompts[:4], diffusion_params(MODES[BASELINE], args.gen_length), use_tqdm=False)

    results = {}
    for name, mode in MODES.items():
        params = diffusion_params(mode, args.gen_length)
        times = []
        for _ in range(args.repeats):
            forwards0, committed0 = scheduler_counters(llm)
            seconds, outputs = timed(llm.generate, prompts, params, use_tqdm=False)
            forwards1, committed1 = scheduler_counters(llm)
            times.append(seconds)
        texts = [o.outputs[0].text.strip() for o in outputs]
        correct = sum(t == p["answer"] for t, p in zip(texts, problems))
        out_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        results[name] = dict(
            accuracy=correct / len(problems), seconds=median(times), out_tokens=out_tokens,
            tokens_per_step=(committed1 - committed0) / (forwards1 - forwards0),
            forwards=(forwards1 - forwards0) / len(problems))
        print(f"{name}: accuracy {correct}/{len(problems)}, {median(times):.2f}s", flush=True)

    base = results[BASELINE]
    print(f"\n{len(problems)} held-out problems, {args.dtype}, chat template, generation length "
          f"{args.gen_length}, block length 32, up to {args.max_num_seqs} requests per step, "
          f"median of {args.repeats} runs\n")
    rows = []
    for name, r in results.items():
        rows.append([name, f"{100 * r['accuracy']:.1f}%", f"{r['seconds']:.2f}",
                     f"{r['out_tokens'] / r['seconds']:.1f}",
                     f"{base['seconds'] / r['seconds']:.2f}x",
                     f"{r['tokens_per_step']:.2f}", f"{r['forwards']:.1f}"])
    print_table(["mode", "accuracy", "wall s", "output tok/s", "speed-up vs baseline",
                 "tokens/step", "forwards/request"], rows)
    plot(results, base, args)


def plot(results, base, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    speedups = [base["seconds"] / results[n]["seconds"] for n in names]
    ax1.barh(names, speedups, color="tab:blue")
    ax1.set_xlabel("throughput vs baseline (x)")
    ax1.invert_yaxis()
    for y, v in enumerate(speedups):
        ax1.text(v, y, f" {v:.1f}x", va="center")
    acc = [100 * results[n]["accuracy"] for n in names]
    ax2.barh(names, acc, color="tab:green")
    ax2.set_xlabel("held-out accuracy (%)")
    ax2.set_xlim(0, 105)
    ax2.set_yticklabels([])
    ax2.invert_yaxis()
    for y, v in enumerate(acc):
        ax2.text(v, y, f" {v:.1f}", va="center")
    fig.suptitle(f"Embedded model, {args.problems} held-out problems, {args.dtype}, "
                 f"generation length {args.gen_length}")
    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    save_figure(fig, f"accuracy_modes{suffix}.png")


if __name__ == "__main__":
    main()
