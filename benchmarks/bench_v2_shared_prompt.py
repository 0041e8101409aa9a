"""Fast-dLLM v2: what a shared system prompt costs, and what prefix caching would save.

The plugin writes a v2 prompt's whole 32-token blocks one window per engine
step and does not enable vLLM's prefix caching (docs/architecture.md,
"Prefix caching and the prompt").  This measures time to first token (TTFT,
batch 1) for requests that share a system prompt of ``S`` tokens followed by
a 16-token question, for several ``S``: on the plugin's v2 engine, and on the
same weights as a stock ``Qwen2ForCausalLM`` with vLLM's prefix caching (on:
the shared prompt's KV blocks are reused) and without it.  One warm-up
request per ``S`` puts the shared prompt in the AR prefix cache first.

    python benchmarks/bench_v2_shared_prompt.py --system-lengths 0,128,256,448

The v2 TTFT grows with ``S`` by one engine step per prompt block; the
difference to ``S = 0`` is what prefix caching at 32-token granularity could
remove.  Writes ``benchmarks/results/v2_shared_prompt.md``.
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
MAX_MODEL_LEN = 512
SIDES = {"v2": "Fast-dLLM v2 (plugin, threshold 0.9)",
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
    llm = LLM(model=str(v2 if side == "v2" else ar), dtype=args.dtype,
              max_model_len=MAX_MODEL_LEN, enforce_eager=True, seed=0,
              enable_prefix_caching=side == "ar-cache")
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True,
                            extra_args={"diffusion_threshold": 0.9} if side == "v2" else None)
    engine = llm.llm_engine
    results = {}
    for s in [int(x) for x in args.system_lengths.split(",")]:
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
    lengths = sorted(results["v2"])
    header = ["system prompt S (+16)", *(f"{SIDES[s]}: TTFT ms (steps)" for s in SIDES),
              "v2 TTFT - its S=0 TTFT"]
    rows = []
    for s in lengths:
        cells = [f"{results[side][s]['ttft_ms']:.1f} ({results[side][s]['steps']})"
                 for side in SIDES]
        extra = results["v2"][s]["ttft_ms"] - results["v2"][lengths[0]]["ttft_ms"]
        rows.append([str(s), *cells, f"{extra:+.1f} ms"])
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
