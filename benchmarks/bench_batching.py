"""Continuous batching: output tokens/s at 1, 4, 16, 64 concurrent requests.

The diffusion engine (embedded model, prefix cache + threshold 0.9) against an
autoregressive model of the same shape (``LlamaForCausalLM``: same width,
depth, heads, MLP and vocabulary, random weights) served by stock vLLM on the
same machine.  Both generate ``--gen-length`` tokens per request
(``ignore_eos``), from the same chat prompts; each concurrency level submits
that many requests at once; medians over ``--repeats``.  Each side runs in its
own process (one engine per process), one after the other, in one run.

    python benchmarks/bench_batching.py --concurrency 1,4,16,64 --gen-length 256

Writes ``docs/figures/batching.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import MODES, ROOT, chat_prompts, diffusion_params, heldout_problems, median, model_arg
from common import model_dir_of, print_table, save_figure
from common import timed



def ar_dir_for(model_dir: Path) -> Path:
    return ROOT / ".cache" / "models" / f"llama-ar-shaped-like-{model_dir.name}"


def write_ar_checkpoint(model_dir: Path, out: Path) -> Path:
    """A random LlamaForCausalLM shaped like the LLaDA checkpoint, its tokenizer copied."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    c = json.loads((model_dir / "config.json").read_text())
    config = LlamaConfig(
        vocab_size=c["vocab_size"], hidden_size=c["d_model"], intermediate_size=c["mlp_hidden_size"],
        num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"],
        num_key_value_heads=c["n_kv_heads"], max_position_embeddings=c["max_sequence_length"],
        rope_theta=c["rope_theta"], rms_norm_eps=c["rms_norm_eps"], tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=c["eos_token_id"], pad_token_id=c["pad_token_id"])
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(model_dir / name, out / name)
    return out


def measure(model: str, model_dir: Path, diffusion: bool, levels: list[int], gen_length: int,
            repeats: int) -> dict:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype="float32", max_model_len=1024, max_num_seqs=max(levels),
              enforce_eager=True, seed=0)
    prompts = chat_prompts(llm, [p["question"] for p in heldout_problems(model_dir)])
    if diffusion:
        params = diffusion_params(MODES["prefix, threshold 0.9"], gen_length, ignore_eos=True)
    else:
        params = SamplingParams(temperature=0.0, max_tokens=gen_length, ignore_eos=True)
    llm.generate(prompts[:4], params, use_tqdm=False)  # warm-up
    result = {}
    for n in levels:
        times = []
        for r in range(repeats):
            batch = prompts[r * n:(r + 1) * n]
            seconds, outputs = timed(llm.generate, batch, params, use_tqdm=False)
            assert all(len(o.outputs[0].token_ids) == gen_length for o in outputs)
            times.append(seconds)
        result[n] = n * gen_length / median(times)
        print(f"{'diffusion' if diffusion else 'autoregressive'} {n}: {result[n]:.1f} tok/s",
              file=sys.stderr, flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["diffusion", "ar"], help=argparse.SUPPRESS)
    model_arg(ap)
    args = ap.parse_args()
    model_dir = model_dir_of(args)
    levels = [int(x) for x in args.concurrency.split(",")]

    if args.only:  # child process: one engine, results as JSON on stdout
        model = str(model_dir) if args.only == "diffusion" else str(ar_dir_for(model_dir))
        print(json.dumps(measure(model, model_dir, args.only == "diffusion", levels,
                                 args.gen_length, args.repeats)))
        return

    write_ar_checkpoint(model_dir, ar_dir_for(model_dir))
    results = {}
    for side in ("diffusion", "ar"):
        out = subprocess.run([sys.executable, __file__, "--only", side, "--concurrency",
                              args.concurrency, "--gen-length", str(args.gen_length),
                              "--repeats", str(args.repeats), "--model", str(model_dir)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        results[side] = {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}

    d, a = results["diffusion"], results["ar"]
    print(f"\noutput tokens/s, generation length {args.gen_length} per request (ignore_eos), "
          f"median of {args.repeats}\n")
    print_table(["concurrent requests", "diffusion (prefix, 0.9) tok/s", "vs 1 request",
                 "autoregressive (stock vLLM) tok/s", "vs 1 request", "diffusion / AR"],
                [[n, f"{d[n]:.1f}", f"{d[n] / d[levels[0]]:.2f}x", f"{a[n]:.1f}",
                  f"{a[n] / a[levels[0]]:.2f}x", f"{d[n] / a[n]:.2f}x"] for n in levels])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(levels, [d[n] for n in levels], marker="o", label="diffusion: prefix cache + threshold 0.9")
    ax.plot(levels, [a[n] for n in levels], marker="s", label="autoregressive, same shape (stock vLLM)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("output tokens/s")
    ax.set_title(f"Continuous batching, generation length {args.gen_length}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, "batching.png")


if __name__ == "__main__":
    main()
