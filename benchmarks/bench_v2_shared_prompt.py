"""Fast-dLLM v2: what a (shared) system prompt costs, against autoregressive prefill.

The plugin writes a v2 prompt's whole 32-token blocks in one block-causal
forward and shares whole blocks of a common prefix through vLLM's prefix
cache (docs/architecture.md, "Block diffusion").  This measures time to first
token (TTFT, batch 1) for requests that share a system prompt of ``S`` tokens
followed by a 16-token question, for several ``S``: on the plugin's v2 engine
with prefix caching (its default) and without, and on the same weights as a
stock ``Qwen2ForCausalLM`` with vLLM's prefix caching and without.  One
warm-up request per ``S`` puts the shared prompt in the caches first.

    python benchmarks/bench_v2_shared_prompt.py --system-lengths 0,128,256,448

A v2 request's first token arrives with its first decoded block, so its TTFT
is the prompt's cost plus the first block's denoising forwards (the ``S = 0``
row); the prompt's cost is the TTFT over the ``S = 0`` row's, compared with
the same difference for AR.  Writes ``benchmarks/results/v2_shared_prompt.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_fast_dllm_v2 import checkpoint_dirs, prompts_for
from common import ROOT, markdown_table, median, print_table

QUESTION = 16
SIDES = {"v2-cache": "v2, prefix caching on",
         "v2-nocache": "v2, prefix caching off",
         "ar-cache": "AR Qwen2, prefix caching on",
         "ar-nocache": "AR Qwen2, prefix caching off"}


def ttft(engine, request_id: str, prompt: list[int], params) -> tuple[float, int]:
    """Seconds until the first output token, and the engine steps it took."""
    start, steps = time.perf_counter(), 0
    engine.add_request(request_id, {"prompt_token_ids": prompt}, params)
    first = None
    while engine.has_unfinished_requests():
        outs = engine.step()
        steps += 1
        if first is None and any(o.outputs[0].token_ids for o in outs):
            first = (time.perf_counter() - start, steps)
    return first


def worker(args) -> dict:
    from vllm import LLM, SamplingParams

    v2, ar = checkpoint_dirs(8.0, args.dtype)
    side = args.worker
    lengths = [int(x) for x in args.system_lengths.split(",")]
    max_model_len = -(-(max(lengths) + QUESTION + 64) // 32) * 32
    llm = LLM(model=str(v2 if side.startswith("v2") else ar), dtype=args.dtype,
              max_model_len=max_model_len, max_num_batched_tokens=max(max_model_len, 2048),
              enforce_eager=True, seed=0, enable_prefix_caching=side.endswith("-cache"))
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True,
                            extra_args=({"diffusion_threshold": 0.9} if side.startswith("v2")
                                        else None))
    engine = llm.llm_engine
    results = {}
    for s in lengths:
        system = prompts_for(1, s, seed=100 + s)[0] if s else []
        questions = prompts_for(args.repeats + 1, QUESTION, seed=200 + s)
        ttft(engine, f"warm-{s}", system + questions[0], params)
        runs = [ttft(engine, f"{s}-{i}", system + q, params)
                for i, q in enumerate(questions[1:])]
        results[s] = dict(ttft_ms=1000 * median([r[0] for r in runs]), steps=runs[0][1])
        print(f"[{side}] S={s}: {results[s]}", file=sys.stderr, flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--system-lengths", default="0,128,256,448")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "v2_shared_prompt.md")
    ap.add_argument("--worker", choices=list(SIDES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    checkpoint_dirs(8.0, args.dtype)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}   # see bench_fast_dllm_v2.spawn
    started = time.perf_counter()
    results = {}
    for side in SIDES:
        cmd = [sys.executable, __file__, "--worker", side, "--system-lengths",
               args.system_lengths, "--repeats", str(args.repeats), "--dtype", args.dtype]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
        results[side] = {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    lengths = sorted(results["v2-cache"])

    def cost(side, s):   # the prompt's cost: TTFT over the S = 0 row's
        return results[side][s]["ttft_ms"] - results[side][lengths[0]]["ttft_ms"]

    header = ["system prompt S (+16)", *(f"{SIDES[s]}: TTFT ms (steps)" for s in SIDES),
              "prompt cost, v2 / AR, caching off", "prompt cost, v2 / AR, caching on"]
    rows = []
    for s in lengths:
        cells = [f"{results[side][s]['ttft_ms']:.1f} ({results[side][s]['steps']})"
                 for side in SIDES]
        ratios = []
        for v2_side, ar_side in (("v2-nocache", "ar-nocache"), ("v2-cache", "ar-cache")):
            v2_cost, ar_cost = cost(v2_side, s), cost(ar_side, s)
            ratios.append("-" if s == lengths[0] else
                          f"{v2_cost:+.1f} / {ar_cost:+.1f} ms")
        rows.append([str(s), *cells, *ratios])
    print_table(header, rows)
    load = os.getloadavg()[0]
    args.out.write_text(
        "# Fast-dLLM v2: time to first token with a shared system prompt\n\n"
        f"`python benchmarks/bench_v2_shared_prompt.py --system-lengths {args.system_lengths} "
        f"--repeats {args.repeats}`; {args.dtype}, eager, 1 OpenMP thread, batch 1, "
        f"median of {args.repeats}; load average {load:.2f} at the end; "
        f"run {time.perf_counter() - started:.0f} s.\n\n"
        + "\n".join(markdown_table(header, rows)) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
