"""Fast-dLLM v2 tokens/s of this checkout against an earlier revision, in one run.

Machines differ (this project's CPUs: Intel with AMX, AMD without), so a
speed figure is only comparable with one measured beside it.  This runs the
same workload on the plugin as checked out and on ``--rev`` (a ``git
worktree`` of it, imported first through ``PYTHONPATH``), alternating the two
``--rounds`` times, each engine in its own process, and prints the tokens/s
of each and their ratio.

    python benchmarks/bench_revisions.py --rev 76208c9 --rounds 2

Workload: the 88M bf16 Fast-dLLM v2 checkpoint of ``bench_fast_dllm_v2.py``,
64-token random prompts, 256 generated tokens each (``ignore_eos``),
threshold 0.9, sub-block 8, prefix and dual cache, 1, 8 and 16 requests
submitted together; one OpenMP thread, eager.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_fast_dllm_v2 import checkpoint_dirs
from common import ROOT, markdown_table, median, print_table

LEVELS = (1, 8, 16)
CACHES = ("prefix", "dual")


def worker(model: str) -> dict:
    import torch
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype="bfloat16", max_model_len=512, max_num_seqs=max(LEVELS),
              enforce_eager=True, seed=0)
    results = {}
    for cache in CACHES:
        params = SamplingParams(temperature=0.0, max_tokens=256, ignore_eos=True,
                                extra_args={"diffusion_threshold": 0.9,
                                            "diffusion_cache": cache,
                                            "diffusion_sub_block_length": 8})
        for n in LEVELS:
            g = torch.Generator().manual_seed(n)
            prompts = torch.randint(0, 900, (n, 64), generator=g).tolist()
            start = time.perf_counter()
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                use_tqdm=False)
            seconds = time.perf_counter() - start
            results[f"{cache}/{n}"] = sum(len(o.outputs[0].token_ids) for o in outs) / seconds
    return results


def run_side(checkout: Path, model: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(model)],
                         cwd=checkout,
                         env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD~1", help="the earlier revision")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return

    model, _ = checkpoint_dirs(8.0, "bfloat16")
    rev = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    started = time.perf_counter()
    runs = {"this checkout": [], rev: []}
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "rev"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), rev], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
        try:
            for _ in range(args.rounds):
                runs[rev].append(run_side(worktree, model))
                runs["this checkout"].append(run_side(ROOT, model))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT,
                           check=True)
    header = ["cache / requests", f"{rev} tok/s", "this checkout tok/s", "ratio"]
    rows = []
    for key in runs[rev][0]:
        old = median([r[key] for r in runs[rev]])
        new = median([r[key] for r in runs["this checkout"]])
        rows.append([key, f"{old:.1f}", f"{new:.1f}", f"{new / old:.2f}x"])
    print_table(header, rows)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    print(f"\n`python benchmarks/bench_revisions.py --rev {args.rev} --rounds {args.rounds}`; "
          f"median of {args.rounds} alternating rounds; {cpu}; "
          f"load average {os.getloadavg()[0]:.2f} at the end; "
          f"run {time.perf_counter() - started:.0f} s")
    (ROOT / "benchmarks" / "results" / "revisions.md").write_text(
        "\n".join(markdown_table(header, rows)) + "\n")


if __name__ == "__main__":
    main()
