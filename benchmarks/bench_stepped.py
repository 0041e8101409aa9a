"""SDAR and LLaDA2.x (step-schedule block diffusion): tokens/forward and tokens/s.

For each family (``--family sdar|llada2``, both by default) one random-weight
checkpoint (``vllm_dllm_plugin.testing.checkpoints``) decoded by the plugin's
engine in the family's settings, against the same checkpoint decoded one token
per forward (SDAR: ``low_confidence_static`` with steps = block length 4;
LLaDA2.0: threshold 1.0, its quota of one token a step) and against the SAME
weights served autoregressively by stock vLLM (SDAR as ``Qwen3ForCausalLM``,
LLaDA2 as ``BailingMoeV2ForCausalLM``: the checkpoint copied, config.json
rewritten).  Greedy, ``ignore_eos``, ``--gen-length`` tokens per request, the
same random prompts (``--prompt-length`` token ids) on every side, the same
dtype, ``enforce_eager``, ``max_model_len`` and OpenMP threads (``--threads``,
1 by default).  Batch 1: median over ``--repeats`` requests run one at a
time; concurrency: that many requests submitted together, once.  Every run
gets fresh prompts (no prefix-cache hits).  Each engine runs in its own
process (the script re-invokes itself with ``--worker``), one after the
other, in one run.

    python benchmarks/bench_stepped.py --gen-length 128 --concurrency 8,16 --repeats 2

Forwards are the plugin scheduler's per-request counts (prefill of the
prompt's whole blocks, every denoising / post step, each block's commit
forward); for the AR engine, ``gen_length`` (prefill + decode steps).
Random weights: how many tokens a forward commits at a threshold depends on
the checkpoint's logit scale, not on anything a trained model does.

LLaDA2 only: the cost per token of the MoE MLP block (router, top-k of the
routed experts, shared expert) against layer 0's dense MLP of the same
checkpoint, whose width equals the MoE block's active width
((top-k + shared) x moe_intermediate_size), timed directly on the loaded
vLLM modules at a few token counts.

vLLM 0.32 has no config class for ``model_type: bailing_moe_v2`` (Ling-2.0's;
transformers 5 neither), and the hub's remote code cannot be used offline,
so the AR worker registers one with ``AutoConfig``: the plugin's
``LLaDA2MoeConfig`` (every hub key, the attribute names vLLM's
``BailingMoeV2ForCausalLM`` reads) under that model type.  The model class is
vLLM's own.  Writes ``benchmarks/results/stepped.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_fast_dllm_v2 import (
    _cpu_name,
    _vllm_version,
    model_class,
    prompts_for,
    run_level,
    scheduler,
)
from common import ROOT, markdown_table, median, print_table

MAX_MODEL_LEN = 512
LOGIT_SCALE = 8.0

# SDAR: Qwen3-shaped (q/k norms, explicit head_dim 64, 2:1 GQA as 1.7B's
# 16/8, MLP 3x hidden as 1.7B's 6144/2048), blocks of 4 as every SDAR-Chat.
SDAR_SHAPE = dict(hidden_size=1024, num_hidden_layers=6, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=64, intermediate_size=3072,
                  vocab_size=1024, tokenizer_size=1024, max_position_embeddings=4096,
                  tie_word_embeddings=False)
# LLaDA2: LLaDA2.0-mini's structure shrunk: layer 0 dense, then MoE layers
# of 32 experts in 4 groups (top-4 from 2 groups) and one shared expert; the
# dense MLP as wide as the MoE block's active experts, (4 + 1) x 256.
LLADA2_SHAPE = dict(hidden_size=512, num_hidden_layers=5, num_attention_heads=8,
                    num_key_value_heads=2, head_dim=64, intermediate_size=1280,
                    moe_intermediate_size=256, num_experts=32, num_experts_per_tok=4,
                    n_group=4, topk_group=2, num_shared_experts=1, first_k_dense_replace=1,
                    vocab_size=1024, tokenizer_size=1024, max_position_embeddings=4096)

FAMILIES = {
    "sdar": dict(
        label="SDAR", block=4, shape=SDAR_SHAPE, ar_arch="Qwen3ForCausalLM", ar_type="qwen3",
        drop_keys=("block_size", "mask_token_id", "auto_map", "attn_implementation",
                   "fuse_cross_entropy"),
        one="static, S=4 (1 token/forward)",
        modes={
            "static, S=4 (1 token/forward)": dict(remasking="low_confidence_static",
                                                  steps_per_block=4),
            "dynamic, threshold 0.85": dict(threshold=0.85),
            "dynamic, threshold 0.5": dict(threshold=0.5),
        }),
    "llada2": dict(
        label="LLaDA2.x", block=32, shape=LLADA2_SHAPE, ar_arch="BailingMoeV2ForCausalLM",
        ar_type="bailing_moe_v2", drop_keys=("auto_map",),
        one="2.0, threshold 1.0 (1 token/forward)",
        modes={
            "2.0, threshold 1.0 (1 token/forward)": dict(threshold=1.0),
            "2.0, threshold 0.95": dict(threshold=0.95),
            "2.0, threshold 0.7": dict(threshold=0.7),
            "2.1, threshold 0.7, editing 0.5": dict(threshold=0.7, editing_threshold=0.5),
        }),
}
AR = "autoregressive (stock vLLM)"
MOE_TOKENS = (1, 8, 32, 128, 512)


def checkpoint_dirs(family: str, dtype: str) -> tuple[Path, Path]:
    """The diffusion checkpoint and its autoregressive copy (same weights and tokenizer)."""
    from vllm_dllm_plugin.testing.checkpoints import (
        write_llada2_checkpoint,
        write_sdar_checkpoint,
    )

    spec = FAMILIES[family]
    tag = "-".join(str(v) for v in spec["shape"].values()) + f"-s{LOGIT_SCALE:g}-{dtype}"
    diff = ROOT / ".cache" / "models" / f"{family}-bench-{tag}"
    ar = ROOT / ".cache" / "models" / f"{family}-ar-bench-{tag}"
    if not (diff / "config.json").exists():
        writer = write_sdar_checkpoint if family == "sdar" else write_llada2_checkpoint
        writer(diff, **spec["shape"], seed=0, dtype=dtype, logit_scale=LOGIT_SCALE)
    if not (ar / "config.json").exists():
        shutil.copytree(diff, ar, dirs_exist_ok=True)
        config = json.loads((diff / "config.json").read_text())
        config.update(architectures=[spec["ar_arch"]], model_type=spec["ar_type"])
        for key in spec["drop_keys"]:
            config.pop(key, None)
        (ar / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return diff, ar


def register_bailing_moe_v2_config() -> None:
    """Stock vLLM's BailingMoeV2 needs a config class for ``bailing_moe_v2``
    that neither vLLM nor transformers ships (module docstring)."""
    from transformers import AutoConfig

    from vllm_dllm_plugin.models.llada2_config import LLaDA2MoeConfig

    class BailingMoeV2Config(LLaDA2MoeConfig):
        model_type = "bailing_moe_v2"

    AutoConfig.register("bailing_moe_v2", BailingMoeV2Config)


# -- worker: one engine, results as JSON on stdout ---------------------------------


def the_model(llm):
    executor = llm.llm_engine.engine_core.engine_core.model_executor
    worker = getattr(executor, "driver_worker", None)
    worker = getattr(worker, "worker", worker)
    return worker.model_runner.model, worker.model_runner.vllm_config


def time_moe_vs_dense(llm, dtype: str, reps: int) -> dict:
    """ms per call of layer 0's dense MLP and layer 1's MoE block on ``T`` random
    hidden rows (the modules vLLM loaded; no attention, no engine)."""
    import torch
    from vllm.forward_context import set_forward_context

    model, vllm_config = the_model(llm)
    layers = model.model.layers
    dense, moe = layers[0].mlp, layers[1].mlp
    kinds = {"dense MLP (layer 0)": dense, "MoE block (layer 1)": moe}
    hidden = LLADA2_SHAPE["hidden_size"]
    g = torch.Generator().manual_seed(0)
    out = {}
    with torch.inference_mode(), set_forward_context(None, vllm_config):
        for t in MOE_TOKENS:
            x = torch.randn(t, hidden, generator=g).to(getattr(torch, dtype))
            for name, module in kinds.items():
                for _ in range(3):
                    module(x)
                samples = []
                for _ in range(reps):
                    start = time.perf_counter()
                    for _ in range(5):
                        module(x)
                    samples.append((time.perf_counter() - start) / 5)
                out.setdefault(name, {})[t] = 1e3 * median(samples)
    print(f"[moe] {type(dense).__name__} vs {type(moe).__name__}: {out}", file=sys.stderr,
          flush=True)
    return dict(ms=out, classes=[type(dense).__name__, type(moe).__name__,
                                 type(moe.experts).__name__])


def worker(args) -> dict:
    from vllm import LLM, SamplingParams

    spec = FAMILIES[args.family]
    diffusion = args.worker == "diffusion"
    if not diffusion and args.family == "llada2":
        register_bailing_moe_v2_config()
    levels = [int(x) for x in args.concurrency.split(",") if x]
    llm = LLM(model=args.model, dtype=args.dtype, max_model_len=MAX_MODEL_LEN,
              max_num_seqs=max(levels + [1]), enforce_eager=True, seed=0)
    sched = scheduler(llm)
    info = dict(scheduler=f"{type(sched).__module__}.{type(sched).__name__}",
                model=model_class(llm))
    tag = f"{args.family}/{args.worker}"
    print(f"[{tag}] scheduler {info['scheduler']}, model {info['model']}",
          file=sys.stderr, flush=True)
    if diffusion:
        modes = {name: SamplingParams(
                     temperature=0.0, max_tokens=args.gen_length, ignore_eos=True,
                     extra_args={f"diffusion_{k}": v for k, v in mode.items()})
                 for name, mode in spec["modes"].items()}
    else:
        modes = {AR: SamplingParams(temperature=0.0, max_tokens=args.gen_length,
                                    ignore_eos=True)}
    seed = 0 if args.family == "sdar" else 100
    prompts = prompts_for(len(modes) * (args.repeats + sum(levels)), args.prompt_length,
                          seed=seed)
    warm = prompts_for(2 * len(modes), args.prompt_length, seed=seed + 1)
    results = {}
    for name, params in modes.items():
        warm_params = params.clone()
        warm_params.max_tokens = min(args.gen_length, 2 * spec["block"])
        run_level(llm, warm[:2], warm_params, diffusion)                # warm-up
        warm = warm[2:]
        per = {}
        runs = [run_level(llm, [p], params, diffusion) for p in prompts[:args.repeats]]
        prompts = prompts[args.repeats:]
        per[1] = dict(tok_s=median([r["tokens"] / r["seconds"] for r in runs]),
                      forwards=[f for r in runs for f in r["forwards"]])
        for n in levels:
            r = run_level(llm, prompts[:n], params, diffusion)
            prompts = prompts[n:]
            per[n] = dict(tok_s=r["tokens"] / r["seconds"], forwards=r["forwards"])
        results[name] = per
        print(f"[{tag}] {name}: " + ", ".join(
            f"{n}: {v['tok_s']:.1f} tok/s" for n, v in per.items()), file=sys.stderr, flush=True)
    moe = None
    if diffusion and args.family == "llada2":
        moe = time_moe_vs_dense(llm, args.dtype, reps=5)
    return dict(info=info, results=results, moe=moe)


# -- parent: every worker, one table per family ------------------------------------


def spawn(family: str, side: str, model: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--family", family, "--model", str(model),
           "--gen-length", str(args.gen_length), "--prompt-length", str(args.prompt_length),
           "--concurrency", args.concurrency, "--repeats", str(args.repeats),
           "--dtype", args.dtype]
    # As bench_fast_dllm_v2: --threads OpenMP threads per engine (1 by default),
    # so another job on the shared machine does not stall every op.
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode:
        print(f"[{family}/{side}] worker failed (exit {proc.returncode}); row skipped",
              file=sys.stderr, flush=True)
        return dict(error=f"worker exited {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prefill_forwards(family: str, prompt_length: int) -> int:
    """Forwards the plugin spends on the prompt: one for its whole blocks, if any."""
    return 1 if prompt_length >= FAMILIES[family]["block"] else 0


def family_table(family: str, diff: dict, auto: dict, args) -> tuple[list[str], list[list]]:
    spec = FAMILIES[family]
    levels = [1] + [int(x) for x in args.concurrency.split(",") if x]
    results = dict(diff["results"])
    has_ar = "results" in auto
    if has_ar:
        results.update(auto["results"])
    blocks = -(-(args.prompt_length + args.gen_length) // spec["block"]) \
        - args.prompt_length // spec["block"]
    rows = []
    for n in levels:
        key = str(n)
        for name in [*spec["modes"], *([AR] if has_ar else [])]:
            r = results[name][key]
            if name == AR:
                forwards = float(args.gen_length)   # prefill (first token) + decode steps
                fwd_block, vs_one = "-", f"{r['tok_s'] / results[spec['one']][key]['tok_s']:.2f}x"
            else:
                forwards = median(r["forwards"])
                fwd_block = f"{(forwards - prefill_forwards(family, args.prompt_length)) / blocks:.2f}"
                vs_one = f"{r['tok_s'] / results[spec['one']][key]['tok_s']:.2f}x"
            # Requests of one level advance in lockstep: wall time / forwards per request.
            ms_step = 1e3 * n * args.gen_length / r["tok_s"] / forwards
            vs_ar = f"{r['tok_s'] / results[AR][key]['tok_s']:.2f}x" if has_ar else "n/a"
            rows.append([n, name, f"{r['tok_s']:.1f}", f"{forwards:.0f}", fwd_block,
                         f"{args.gen_length / forwards:.2f}", f"{ms_step:.1f}", vs_one, vs_ar])
    header = ["requests", "setting", "tok/s", "forwards/request", "forwards/block",
              "tokens/forward", "ms/step", "vs 1 token/forward", "vs AR"]
    return header, rows


def moe_table(moe: dict) -> tuple[list[str], list[list]]:
    ms = moe["ms"]
    dense, sparse = ms["dense MLP (layer 0)"], ms["MoE block (layer 1)"]
    rows = []
    for t in MOE_TOKENS:
        d, m = dense[str(t)], sparse[str(t)]
        rows.append([t, f"{d:.3f}", f"{m:.3f}", f"{1e3 * d / t:.1f}", f"{1e3 * m / t:.1f}",
                     f"{m / d:.2f}x"])
    header = ["tokens", "dense MLP ms", "MoE block ms", "dense us/token", "MoE us/token",
              "MoE / dense"]
    return header, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=[*FAMILIES, "both"], default="both")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--prompt-length", type=int, default=64)
    ap.add_argument("--concurrency", default="8,16")
    ap.add_argument("--repeats", type=int, default=2, help="batch-1 requests (median)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenMP threads per engine (OMP_NUM_THREADS of the workers)")
    ap.add_argument("--quick", action="store_true",
                    help="--gen-length 32 --concurrency 4 --repeats 1 (a smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stepped.md")
    ap.add_argument("--worker", choices=["diffusion", "ar"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.gen_length, args.concurrency, args.repeats = 32, "4", 1

    if args.worker:
        print(json.dumps(worker(args)))
        return

    families = list(FAMILIES) if args.family == "both" else [args.family]
    start, load_start = time.perf_counter(), os.getloadavg()
    runs = {}
    for family in families:
        diff_dir, ar_dir = checkpoint_dirs(family, args.dtype)
        runs[family] = (spawn(family, "diffusion", diff_dir, args),
                        spawn(family, "ar", ar_dir, args))
    elapsed, load_end = time.perf_counter() - start, os.getloadavg()

    lines = [
        f"`python benchmarks/bench_stepped.py --family {args.family} --gen-length "
        f"{args.gen_length} --prompt-length {args.prompt_length} --concurrency "
        f"{args.concurrency} --repeats {args.repeats} --dtype {args.dtype} "
        f"--threads {args.threads}`",
        "",
        f"{args.dtype}, enforce_eager, {args.threads} OpenMP thread(s) per engine, "
        f"max_model_len {MAX_MODEL_LEN}, greedy, ignore_eos, logit scale {LOGIT_SCALE:g}. "
        f"Prompts: {args.prompt_length} random token ids; {args.gen_length} tokens per "
        f"request. Batch 1: median of {args.repeats} requests one at a time; n > 1: n "
        f"requests submitted together, once.",
        "",
        f"Machine: {os.cpu_count()} CPUs ({_cpu_name()}), vLLM {_vllm_version()}, "
        f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end; "
        f"whole run {elapsed:.0f} s.",
        "",
    ]
    for family in families:
        spec, (diff, auto) = FAMILIES[family], runs[family]
        shape = ", ".join(f"{k} {v}" for k, v in spec["shape"].items())
        lines += [f"### {spec['label']}", "", f"Checkpoint: {shape}; block {spec['block']}.", ""]
        if "results" not in diff:
            lines += [f"diffusion worker failed: {diff.get('error')}", ""]
            continue
        ar_line = (f"AR (`{spec['ar_arch']}`, model_type `{spec['ar_type']}`): scheduler "
                   f"`{auto['info']['scheduler']}` / model `{auto['info']['model']}`."
                   if "info" in auto else f"AR (`{spec['ar_arch']}`): {auto.get('error')}.")
        lines += [f"Engines: diffusion scheduler `{diff['info']['scheduler']}` / model "
                  f"`{diff['info']['model']}`; {ar_line}", ""]
        header, rows = family_table(family, diff, auto, args)
        print(f"\n{spec['label']}")
        print_table(header, rows)
        lines += markdown_table(header, rows) + [""]
        if diff.get("moe"):
            header, rows = moe_table(diff["moe"])
            classes = diff["moe"]["classes"]
            lines += [f"MoE block (`{classes[1]}`, experts `{classes[2]}`) against layer 0's "
                      f"dense MLP (`{classes[0]}`, intermediate "
                      f"{spec['shape']['intermediate_size']} = (top-k + shared) x "
                      f"moe_intermediate_size), {args.dtype}, median of 5 x 5 calls:", ""]
            print("MoE vs dense")
            print_table(header, rows)
            lines += markdown_table(header, rows) + [""]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
