"""Long generations through the server: G = 256, 512, 1000 tokens, each cache mode.

Starts ``vllm serve`` on the embedded model as ``make serve`` does (served name
``llada-arith``, ``--max-model-len 1024``, the checkpoint's dtype, torch.compile;
``--enforce-eager`` to compare) and sends ``/v1/completions``
requests one at a time (batch 1), ``temperature 0``, ``ignore_eos`` (exactly G
tokens are decoded: the whole canvas), the diffusion options in
``vllm_xargs``.  Modes: the baseline (no cache, 32 steps per 32-token block:
one token per step) and threshold 0.9 with each cache mode (none, prefix,
dual).  The prompts are the embedded model's held-out problems, bare (the chat
template's 34 tokens would not leave room for G = 1000 in 1024).

For fairness under a drifting machine load the modes are interleaved: for each
G and each prompt, one request per mode.  The baseline runs on the first
``--baseline-requests`` prompts (it costs ~G forwards over the whole canvas per
request), the threshold modes on ``--requests`` prompts.  Per cell: completion
tokens / summed wall time of its requests (client side, HTTP included), the
speed-up over the baseline's tokens/s at the same G, and the mean denoising
steps per request, read from the server's Prometheus counter
``vllm:diffusion_denoising_steps_total`` around each request.

    python benchmarks/bench_server_lengths.py --lengths 256,512,1000 --requests 8 --baseline-requests 3

Writes ``benchmarks/results/server_lengths.md`` and, with matplotlib,
``docs/figures/server_lengths.png``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import requests

from common import (BLOCK_LENGTH, ROOT, heldout_problems, model_arg, model_dir_of,
                    markdown_table, plot_per_length, print_table)

sys.path.insert(0, str(ROOT / "scripts"))
from local_server import local_server  # noqa: E402

NAME = "llada-arith"
BASELINE = "baseline: none, 1 token/step"
MODES = {
    BASELINE: {"diffusion_cache": "none", "diffusion_steps_per_block": BLOCK_LENGTH},
    "none, threshold 0.9": {"diffusion_cache": "none", "diffusion_threshold": 0.9},
    "prefix, threshold 0.9": {"diffusion_cache": "prefix", "diffusion_threshold": 0.9},
    "dual, threshold 0.9": {"diffusion_cache": "dual", "diffusion_threshold": 0.9},
}
STEPS_METRIC = re.compile(r"^vllm:diffusion_denoising_steps_total\{[^}]*\} ([0-9.e+-]+)$", re.M)


def denoising_steps(session: requests.Session, url: str) -> float:
    """The server's denoising-step counter (summed over engines)."""
    text = session.get(f"{url}/metrics", timeout=30).text
    values = STEPS_METRIC.findall(text)
    if not values:
        raise RuntimeError("vllm:diffusion_denoising_steps_total not in /metrics")
    return sum(float(v) for v in values)


def settled_steps(session: requests.Session, url: str, previous: float | None = None) -> float:
    """The counter once it stops moving (a step's stats may land just after its response)."""
    value = denoising_steps(session, url)
    for _ in range(20):
        time.sleep(0.05)
        again = denoising_steps(session, url)
        if again == value and (previous is None or again > previous):
            return again
        value = again
    return value


def complete(session: requests.Session, url: str, prompt: str, length: int, xargs: dict,
             timeout: float) -> tuple[float, dict]:
    """``(seconds, response JSON)`` of one completion request."""
    body = {"model": NAME, "prompt": prompt, "max_tokens": length, "temperature": 0,
            "ignore_eos": True, "vllm_xargs": {"diffusion_block_length": BLOCK_LENGTH, **xargs}}
    start = time.perf_counter()
    r = session.post(f"{url}/v1/completions", json=body, timeout=timeout)
    seconds = time.perf_counter() - start
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    return seconds, r.json()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="256,512,1000")
    ap.add_argument("--requests", type=int, default=8, help="prompts per threshold-mode cell")
    ap.add_argument("--baseline-requests", type=int, default=3, help="prompts per baseline cell")
    ap.add_argument("--enforce-eager", action="store_true",
                    help="serve with --enforce-eager (default: torch.compile, as make serve)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "server_lengths.md")
    ap.add_argument("--log", type=Path, default=ROOT / ".cache" / "bench_server_lengths.log",
                    help="the server's log")
    model_arg(ap)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    model_dir = model_dir_of(args)
    n = max(args.requests, args.baseline_requests)
    prompts = [p["question"] for p in heldout_problems(model_dir, n)]
    args.log.parent.mkdir(parents=True, exist_ok=True)

    seconds = {}      # (mode, G) -> summed wall seconds
    tokens = {}       # (mode, G) -> summed completion tokens
    steps = {}        # (mode, G) -> summed denoising steps
    count = {}        # (mode, G) -> requests
    texts = {}        # (mode, G, prompt index) -> text
    problems = []     # anything odd: wrong token counts, errors
    env = {"VLLM_CPU_KVCACHE_SPACE": "2"}  # as the Makefile exports
    start_run = time.perf_counter()
    with local_server(model_dir, NAME, log_path=args.log, max_model_len=1024, dtype=None,
                      enforce_eager=args.enforce_eager, env=env) as url, requests.Session() as s:
        print(f"server up after {time.perf_counter() - start_run:.1f}s ({url}); "
              f"log: {args.log}", file=sys.stderr, flush=True)
        for xargs in MODES.values():  # warm-up: every mode, a short and a long canvas
            for g in (64, max(lengths)):
                if xargs is MODES[BASELINE] and g > 64:
                    continue
                complete(s, url, prompts[0], g, xargs, args.timeout)
        previous = settled_steps(s, url)
        for g in lengths:
            for i, prompt in enumerate(prompts):
                for name, xargs in MODES.items():
                    if i >= (args.baseline_requests if name == BASELINE else args.requests):
                        continue
                    key = (name, g)
                    try:
                        sec, body = complete(s, url, prompt, g, xargs, args.timeout)
                    except Exception as e:  # noqa: BLE001 - reported
                        problems.append(f"{name} G={g} prompt {i}: {e!r}")
                        continue
                    after = settled_steps(s, url, previous)
                    used = body["usage"]["completion_tokens"]
                    if used != g:
                        problems.append(f"{name} G={g} prompt {i}: completion_tokens {used} != {g}")
                    seconds[key] = seconds.get(key, 0.0) + sec
                    tokens[key] = tokens.get(key, 0) + used
                    steps[key] = steps.get(key, 0.0) + after - previous
                    count[key] = count.get(key, 0) + 1
                    texts[name, g, i] = body["choices"][0]["text"]
                    previous = after
            print(f"G={g}: " + ", ".join(
                f"{name} {tokens[name, g] / seconds[name, g]:.0f} tok/s"
                for name in MODES if (name, g) in seconds), file=sys.stderr, flush=True)
    total = time.perf_counter() - start_run

    def tps(name, g):
        return tokens[name, g] / seconds[name, g]

    rows = []
    for g in lengths:
        for name in MODES:
            if (name, g) not in seconds:
                rows.append([g, name, "failed", "", "", "", ""])
                continue
            same = sum(texts.get((name, g, i)) == texts.get((BASELINE, g, i))
                       for i in range(args.baseline_requests) if (BASELINE, g, i) in texts)
            compared = sum((BASELINE, g, i) in texts and (name, g, i) in texts
                           for i in range(args.baseline_requests))
            mean_steps = steps[name, g] / count[name, g]
            rows.append([g, name, count[name, g], f"{tps(name, g):.0f}",
                         f"{tps(name, g) / tps(BASELINE, g):.2f}x" if (BASELINE, g) in seconds else "",
                         f"{mean_steps:.1f} ({g / mean_steps:.1f})", f"{same}/{compared}"])

    header = ["G", "mode", "requests", "tokens/s", "speed-up vs baseline",
              "denoising steps/request (tokens/step)", "same text as baseline"]
    command = ("python benchmarks/bench_server_lengths.py --lengths " + args.lengths +
               f" --requests {args.requests} --baseline-requests {args.baseline_requests}" +
               (" --enforce-eager" if args.enforce_eager else ""))
    lines = [f"`{command}`", "",
             f"`vllm serve` (embedded model, --max-model-len 1024, "
             f"{'--enforce-eager' if args.enforce_eager else 'torch.compile, as make serve'}), /v1/completions one "
             f"request at a time, ignore_eos, block length {BLOCK_LENGTH}; tokens/s = completion "
             f"tokens / summed request wall time (client side); load average at the end "
             f"{os.getloadavg()[0]:.2f}; whole run {total:.0f}s", ""]
    print("\n".join(lines))
    print_table(header, rows)
    if problems:
        print("problems:\n" + "\n".join(problems))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = markdown_table(header, rows)
    args.out.write_text("\n".join(lines + table + [""] + (["problems:"] + problems if problems else [])) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")

    plot_per_length(
        {name: {g: tps(name, g) for g in lengths if (name, g) in seconds} for name in MODES},
        xlabel="generation length G (tokens, ignore_eos)", ylabel="completion tokens/s",
        title="Through vllm serve, batch 1 (embedded model, 2-core CPU)",
        name="server_lengths.png")


if __name__ == "__main__":
    main()
