"""Fast-dLLM v2 (block diffusion): tokens/s per mode, batch 1 and concurrent.

One random-weight Fast-dLLM v2 checkpoint (``Fast_dLLM_QwenForCausalLM``,
``scripts/make_checkpoints.py``) decoded by the plugin's block-diffusion
engine in four modes (prefix / dual sub-block cache, threshold 0.9 and 1.0,
sub-block 8), against the same model decoded one token per forward
(threshold 1.0, same cache mode) and against the SAME weights served as a
stock ``Qwen2ForCausalLM`` by stock vLLM (autoregressive, one token per
decode step).  Greedy, ``ignore_eos``, ``--gen-length`` tokens per request,
the same random prompts (``--prompt-length`` token ids) on both sides, the
same dtype (bfloat16 by default: with AMX a 32-row GEMM runs 4x faster than in
float32), ``enforce_eager``, ``max_model_len`` and OpenMP threads
(``--threads``, 1 by default: see ``spawn``).  Batch 1: one request
at a time, median over ``--repeats`` prompts; concurrency: that many
requests submitted together.  Each engine runs in its own process (the
script re-invokes itself with ``--worker``), one after the other, in one run.

    python benchmarks/bench_fast_dllm_v2.py --gen-length 256 --concurrency 8,16 --repeats 3

Forwards are the plugin scheduler's per-request counts: the prompt's whole
blocks (one window each), every denoising forward, and each decoded block's
commit forward (none after the last block).  Random weights: how many tokens
a forward commits at threshold 0.9 depends on the checkpoint's
``--logit-scale`` (how peaked its output distributions are), not on anything
a trained model would do; the table reports the measured commits next to
each speed.  ``ms/step`` is wall time over forwards per request (the requests
of one level advance in lockstep).  Writes ``benchmarks/results/fast_dllm_v2.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import BLOCK_LENGTH, ROOT, diffusion_params, markdown_table, median, print_table
from common import timed

# A Qwen2.5-like layout (head_dim 64, 6:1 GQA as the 1.5B, MLP 5.3x hidden as
# the 7B), small enough for a 2-core CPU and large enough that the forwards,
# not the Python around them, take most of the time.  The 1024-id tokenizer
# of make_checkpoints' 7b/1.5b presets.
SHAPE = dict(hidden_size=768, num_hidden_layers=8, num_attention_heads=12,
             num_key_value_heads=2, intermediate_size=4096, vocab_size=1024,
             tokenizer_size=1024, max_position_embeddings=4096)
SUB_BLOCK = 8
MODES = {
    "prefix, threshold 1.0 (1 token/forward)": dict(cache="prefix", threshold=1.0),
    "prefix, threshold 0.9": dict(cache="prefix", threshold=0.9),
    "dual, threshold 1.0 (1 token/forward)": dict(cache="dual", threshold=1.0),
    "dual, threshold 0.9": dict(cache="dual", threshold=0.9),
}
AR = "autoregressive Qwen2 (stock vLLM)"
MAX_MODEL_LEN = 512
PROMPT_VOCAB = 990   # prompt ids stay below the tokenizer's special tokens


def checkpoint_dirs(logit_scale: float, dtype: str) -> tuple[Path, Path]:
    """The v2 checkpoint and its stock-Qwen2 copy (same weights, same tokenizer)."""
    from vllm_dllm_plugin.testing.checkpoints import write_fast_dllm_v2_checkpoint

    tag = "-".join(str(v) for v in SHAPE.values()) + f"-s{logit_scale:g}-{dtype}"
    v2 = ROOT / ".cache" / "models" / f"fast-dllm-v2-bench-{tag}"
    ar = ROOT / ".cache" / "models" / f"qwen2-ar-bench-{tag}"
    if not (v2 / "config.json").exists():
        write_fast_dllm_v2_checkpoint(v2, **SHAPE, seed=0, dtype=dtype,
                                      logit_scale=logit_scale)
    if not (ar / "config.json").exists():
        shutil.copytree(v2, ar, dirs_exist_ok=True)
        config = json.loads((v2 / "config.json").read_text())
        config.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
        for key in ("bd_size", "auto_map"):
            config.pop(key, None)
        (ar / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return v2, ar


def prompts_for(count: int, length: int, seed: int = 0) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, PROMPT_VOCAB, (count, length), generator=g).tolist()


# -- worker: one engine, results as JSON on stdout ---------------------------------


def scheduler(llm):
    return llm.llm_engine.engine_core.engine_core.scheduler


def model_class(llm) -> str:
    executor = llm.llm_engine.engine_core.engine_core.model_executor
    worker = getattr(executor, "driver_worker", None)
    worker = getattr(worker, "worker", worker)
    model = worker.model_runner.model
    return f"{type(model).__module__}.{type(model).__name__}"


def run_level(llm, prompts, params, diffusion: bool) -> dict:
    """Submit ``prompts`` together; seconds, and per-request forwards."""
    seconds, outputs = timed(llm.generate, [{"prompt_token_ids": p} for p in prompts],
                             params, use_tqdm=False)
    lengths = [len(o.outputs[0].token_ids) for o in outputs]
    assert all(n == params.max_tokens for n in lengths), lengths
    forwards = []
    if diffusion:
        # The engine suffixes the LLM API's ids ("3" -> "3-<hex>").
        finished = {k.rsplit("-", 1)[0]: v.forwards
                    for k, v in scheduler(llm).diffusion_stats.finished.items()}
        forwards = [finished[o.request_id] for o in outputs]
    return dict(seconds=seconds, tokens=sum(lengths), forwards=forwards)


def worker(args) -> dict:
    from vllm import LLM, SamplingParams

    levels = [int(x) for x in args.concurrency.split(",") if x]
    model = args.v2 if args.worker == "diffusion" else args.ar
    llm = LLM(model=model, dtype=args.dtype, max_model_len=MAX_MODEL_LEN,
              max_num_seqs=max(levels + [1]), enforce_eager=True, seed=0)
    sched = scheduler(llm)
    info = dict(scheduler=f"{type(sched).__module__}.{type(sched).__name__}",
                model=model_class(llm))
    print(f"[{args.worker}] scheduler {info['scheduler']}, model {info['model']}",
          file=sys.stderr, flush=True)
    diffusion = args.worker == "diffusion"
    if diffusion:
        modes = {name: diffusion_params(dict(sub_block_length=SUB_BLOCK, **mode),
                                        args.gen_length, ignore_eos=True)
                 for name, mode in MODES.items()}
    else:
        modes = {AR: SamplingParams(temperature=0.0, max_tokens=args.gen_length,
                                    ignore_eos=True)}
    # Fresh prompts for every run of a mode (no prefix-cache hits on the AR side).
    prompts = prompts_for(args.repeats + sum(levels), args.prompt_length)
    warm = prompts_for(2, args.prompt_length, seed=1)
    results = {}
    for name, params in modes.items():
        warm_params = params.clone()
        warm_params.max_tokens = 2 * BLOCK_LENGTH
        run_level(llm, warm, warm_params, diffusion)                # warm-up
        per = {}
        runs = [run_level(llm, [p], params, diffusion) for p in prompts[:args.repeats]]
        per[1] = dict(tok_s=median([r["tokens"] / r["seconds"] for r in runs]),
                      forwards=[f for r in runs for f in r["forwards"]])
        first = args.repeats
        for n in levels:
            r = run_level(llm, prompts[first:first + n], params, diffusion)
            first += n
            per[n] = dict(tok_s=r["tokens"] / r["seconds"], forwards=r["forwards"])
        results[name] = per
        print(f"[{args.worker}] {name}: " + ", ".join(
            f"{n}: {v['tok_s']:.1f} tok/s" for n, v in per.items()), file=sys.stderr, flush=True)
    return dict(info=info, results=results)


# -- parent: both workers, one table -----------------------------------------------


def spawn(side: str, args, v2: Path, ar: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--v2", str(v2), "--ar", str(ar),
           "--gen-length", str(args.gen_length), "--prompt-length", str(args.prompt_length),
           "--concurrency", args.concurrency, "--repeats", str(args.repeats),
           "--dtype", args.dtype]
    # vLLM's CPU worker keeps torch at every bound core; on a shared machine a
    # job on the other core then stalls each multi-threaded op (both engines
    # alike), so the engines get --threads OpenMP threads, 1 by default.
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def blocks_with_output(prompt_length: int, gen_length: int) -> int:
    """Blocks holding generated tokens (each decoded; all but the last get a commit forward)."""
    return -(-(prompt_length + gen_length) // BLOCK_LENGTH) - prompt_length // BLOCK_LENGTH


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--prompt-length", type=int, default=64)
    ap.add_argument("--concurrency", default="8,16")
    ap.add_argument("--repeats", type=int, default=3, help="batch-1 requests (median)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--logit-scale", type=float, default=8.0,
                    help="std of the random checkpoint's logits (commits per forward)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenMP threads per engine (OMP_NUM_THREADS of the workers)")
    ap.add_argument("--quick", action="store_true",
                    help="--gen-length 64 --concurrency 4 --repeats 1 (a smoke run)")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "fast_dllm_v2.md")
    ap.add_argument("--worker", choices=["diffusion", "ar"], help=argparse.SUPPRESS)
    ap.add_argument("--v2", help=argparse.SUPPRESS)
    ap.add_argument("--ar", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.gen_length, args.concurrency, args.repeats = 64, "4", 1

    if args.worker:
        print(json.dumps(worker(args)))
        return

    start, load_start = time.perf_counter(), os.getloadavg()
    v2, ar = checkpoint_dirs(args.logit_scale, args.dtype)
    diff = spawn("diffusion", args, v2, ar)
    auto = spawn("ar", args, v2, ar)
    elapsed, load_end = time.perf_counter() - start, os.getloadavg()

    levels = [1] + [int(x) for x in args.concurrency.split(",") if x]
    results = {**diff["results"], **auto["results"]}
    prompt_windows = args.prompt_length // BLOCK_LENGTH
    blocks = blocks_with_output(args.prompt_length, args.gen_length)
    rows = []
    for n in levels:
        key = str(n)
        ar_tok_s = results[AR][key]["tok_s"]
        for name in [*MODES, AR]:
            r = results[name][key]
            if name == AR:
                forwards = float(args.gen_length)   # prefill (first token) + decode steps
                fwd_block, vs_one = "-", "-"
            else:
                forwards = median(r["forwards"])
                one = name.replace("threshold 0.9", "threshold 1.0 (1 token/forward)")
                fwd_block = f"{(forwards - prompt_windows) / blocks:.2f}"
                vs_one = f"{r['tok_s'] / results[one][key]['tok_s']:.2f}x"
            # Requests of one level advance in lockstep: wall time / forwards per request.
            ms_step = 1e3 * n * args.gen_length / r["tok_s"] / forwards
            rows.append([n, name, f"{r['tok_s']:.1f}", f"{forwards:.0f}", fwd_block,
                         f"{args.gen_length / forwards:.2f}", f"{ms_step:.1f}", vs_one,
                         f"{r['tok_s'] / ar_tok_s:.2f}x"])
    header = ["requests", "mode", "tok/s", "forwards/request", "forwards/block",
              "tokens/forward", "ms/step", "vs threshold 1.0 (same cache)", "vs AR"]
    params_m = _parameters(SHAPE) / 1e6
    lines = [
        f"`python benchmarks/bench_fast_dllm_v2.py --gen-length {args.gen_length} "
        f"--prompt-length {args.prompt_length} --concurrency {args.concurrency} "
        f"--repeats {args.repeats} --dtype {args.dtype} --logit-scale {args.logit_scale:g} "
        f"--threads {args.threads}`",
        "",
        f"Random-weight Fast-dLLM v2 checkpoint: hidden {SHAPE['hidden_size']}, "
        f"{SHAPE['num_hidden_layers']} layers, {SHAPE['num_attention_heads']} query / "
        f"{SHAPE['num_key_value_heads']} KV heads, MLP {SHAPE['intermediate_size']}, vocabulary "
        f"{SHAPE['vocab_size']} ({params_m:.0f}M parameters), logit scale "
        f"{args.logit_scale:g}, bd_size 32, sub-block {SUB_BLOCK}; {args.dtype}, enforce_eager, "
        f"{args.threads} OpenMP thread(s) per engine, "
        f"max_model_len {MAX_MODEL_LEN}, greedy, ignore_eos. Prompts: {args.prompt_length} random "
        f"token ids ({prompt_windows} prompt windows); {args.gen_length} tokens per request "
        f"({blocks} blocks). Batch 1: median of {args.repeats} requests one at a time; "
        f"n > 1: n requests submitted together, once.",
        "",
        f"Engines: diffusion scheduler `{diff['info']['scheduler']}` / model "
        f"`{diff['info']['model']}`; AR (same weights as `Qwen2ForCausalLM`) scheduler "
        f"`{auto['info']['scheduler']}` / model `{auto['info']['model']}`.",
        "",
        f"Machine: {os.cpu_count()} CPUs ({_cpu_name()}), vLLM {_vllm_version()}, "
        f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end; "
        f"whole run {elapsed:.0f} s.",
        "",
    ]
    table = markdown_table(header, rows)
    print("\n" + "\n".join(lines))
    print_table(header, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines + table) + "\n")
    print(f"wrote {args.out}")


def _cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.machine())
    return name + (", AMX" if " amx_bf16" in info else "")


def _vllm_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("vllm")


def _parameters(shape: dict) -> int:
    h, i, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layer = h * h * 2 + h * kv * 2 + h + 2 * kv + 3 * h * i + 2 * h
    return shape["num_hidden_layers"] * layer + 2 * v * h + h


if __name__ == "__main__":
    main()
