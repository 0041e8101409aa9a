#!/usr/bin/env python3
"""GPU acceptance check: serve a diffusion LLM with the plugin, compare it with
the plain-PyTorch reference and measure its throughput, in one command.

On a GPU host with CUDA vLLM and the plugin installed::

    python scripts/gpu_acceptance.py                                   # 8B-shaped random LLaDA, bf16
    python scripts/gpu_acceptance.py --model GSAI-ML/LLaDA-8B-Instruct  # or a local checkpoint dir
    python scripts/gpu_acceptance.py --modes prefix dual --concurrency 1 8 32

Steps:

1. **Model.** ``--model`` (a LLaDA or Dream directory, or a hub id fetched
   with huggingface_hub), else a random-weight checkpoint with LLaDA-8B-Instruct's
   exact shapes, written once in bfloat16 into ``--workdir`` (16 GB, six
   shards; ``make_checkpoints.py``'s ``8b`` preset) and reused after.
2. **Reference.** For every mode, the plain-PyTorch reference
   (``vllm_dllm_plugin.testing.reference``) decodes ``--prompts`` chat prompts on ``--device``
   in ``--dtype``.  It runs before the server starts and frees its memory.
3. **Server.** ``vllm serve`` once, in ``--dtype``, with vLLM's defaults:
   torch.compile and the plugin's PIECEWISE CUDA graphs (``--enforce-eager``
   turns both off).  The attention backend and CUDA-graph mode vLLM chose are
   read from its log.
4. **Per mode.** Agreement: the fraction of generated positions equal to the
   reference's on the same prompt ids, and the first position that differs.
   Throughput at each ``--concurrency``: completion tokens / wall time of
   ``--rounds`` x concurrency requests.  All requests are greedy with
   ``ignore_eos``, so each decodes exactly ``--gen-length`` tokens.

Prints a table and writes it, with the environment, to
``WORKDIR/acceptance.json``.  Exits 1 when a request fails (an HTTP error, or
a token count other than ``--gen-length``) or agreement is below
``--min-agreement``.  In bfloat16 a random-weight model need not agree 100%
(its many near-ties between logits break differently in different kernels,
and one different token changes everything after it); a real checkpoint,
whose predictions are mostly confident, should agree far more.
``--dtype float32`` (bfloat16 weights cast up, in the server and the
reference alike) is the exact check.

Without a GPU, at tiny scale (in float32 the reference must agree 100%)::

    python scripts/make_checkpoints.py llada /tmp/tiny --preset tiny
    python scripts/gpu_acceptance.py --model /tmp/tiny --device cpu --dtype float32 \\
        --enforce-eager --gen-length 64 --min-agreement 100
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch

from vllm_dllm_plugin.testing.checkpoints import PRESETS, write_llada_checkpoint
from vllm_dllm_plugin.testing.reference import Dream, LLaDA, generate
from vllm_dllm_plugin.testing.reference.common import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))  # local_server.py, a script beside this one
from local_server import local_server  # noqa: E402

SERVED_NAME = "acceptance"
BLOCK_LENGTH = 32  # Fast-dLLM's default block length
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
REFERENCE_CLASSES = {"llada": LLaDA, "Dream": Dream}  # config.json model_type -> reference model

# name -> (what it is, vllm_xargs).  The baseline commits one token per step
# without a cache (LLaDA's original decoding); the others are Fast-dLLM's.
MODES: dict[str, tuple[str, dict]] = {
    "baseline": ("none, 1 token/step",
                 {"diffusion_cache": "none", "diffusion_steps_per_block": BLOCK_LENGTH}),
    "prefix": ("prefix, threshold 0.9", {"diffusion_cache": "prefix", "diffusion_threshold": 0.9}),
    "dual": ("dual, threshold 0.9", {"diffusion_cache": "dual", "diffusion_threshold": 0.9}),
    "none": ("none, threshold 0.9", {"diffusion_cache": "none", "diffusion_threshold": 0.9}),
    "prefix-factor": ("prefix, factor 1.0", {"diffusion_cache": "prefix", "diffusion_factor": 1.0}),
}

# User turns, sent through the checkpoint's chat template.  Agreement uses the
# first --prompts of them; throughput requests cycle through all.
PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a short poem about the moon.",
    "Tom has three apples and gives one to Mary. How many apples does he have left? Think step by step.",
    "Give three tips for learning a new language.",
    "Explain what a diffusion language model is to a ten-year-old.",
    "List the planets of the solar system in order from the sun.",
    "Write a Python function that returns the sum of a list of numbers.",
    "Summarize the story of Cinderella in two sentences.",
]


class RequestFailed(RuntimeError):
    """A completion request that errored or broke the ``ignore_eos`` contract."""


# ---------------------------------------------------------------------------
# Model and prompts
# ---------------------------------------------------------------------------


def random_8b_checkpoint(workdir: Path) -> Path:
    """LLaDA-8B-shaped random weights in bfloat16, written once (into a
    temporary directory renamed when complete) and reused after."""
    path = workdir / "llada-8b-random-bf16"
    if (path / "config.json").exists():
        print(f"reusing {path}")
        return path
    partial = workdir / "llada-8b-random-bf16.partial"
    shutil.rmtree(partial, ignore_errors=True)
    print(f"writing an 8B-shaped random LLaDA checkpoint (bfloat16, 16 GB) to {path} ...")
    start = time.perf_counter()
    write_llada_checkpoint(partial, **PRESETS["8b"], seed=0, dtype="bfloat16")
    partial.rename(path)
    print(f"  written in {time.perf_counter() - start:.0f} s")
    return path


def resolve_model(model: str | None, workdir: Path) -> Path:
    """A local checkpoint directory: ``model`` itself, its hub snapshot, or
    the random 8B-shaped one."""
    if model is None:
        return random_8b_checkpoint(workdir)
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    print(f"fetching {model} from the hub ...")
    return Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.py"]))


def model_type(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") not in REFERENCE_CLASSES:
        raise SystemExit(f"{model_dir}: model_type {config.get('model_type')!r} is not one of "
                         f"{sorted(REFERENCE_CLASSES)}")
    return config["model_type"]


def prompt_token_ids(model_dir: Path) -> list[list[int]]:
    """``PROMPTS`` as token ids: one user turn each through the chat
    template when the tokenizer has one, else the bare text."""
    from transformers import AutoTokenizer

    import vllm_dllm_plugin

    vllm_dllm_plugin.register()  # Dream's tokenizer class
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.chat_template:
        return [[int(i) for i in tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                    return_dict=False)]
                for p in PROMPTS]
    return [list(tokenizer(p)["input_ids"]) for p in PROMPTS]


# ---------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------


def load_reference(model_dir: Path, device: str, dtype: str):
    """The reference model with its weights in ``dtype`` on ``device``
    (moved one tensor at a time, so host memory holds at most one copy)."""
    config, weights, eos_ids = load_checkpoint(model_dir, DTYPES[dtype])
    for name in list(weights):
        weights[name] = weights[name].to(device)
    cls = REFERENCE_CLASSES[config["model_type"]]
    return cls(cls.config_class.from_dict(config), weights, eos_ids)


def reference_options(options: dict) -> dict:
    """``vllm_xargs`` as keyword arguments of ``reference.generate``."""
    return {key.removeprefix("diffusion_"): value for key, value in options.items()}


def run_reference(model_dir: Path, prompts: list[list[int]], modes: list[str], *,
                  gen_length: int, device: str, dtype: str) -> dict[str, list[list[int]]]:
    """Generated tokens per mode and prompt.  ``ignore_eos`` on the server is
    no end tokens and no early stop here.  Tensors the reference creates
    (canvas, positions) land on ``device`` through torch's device context."""
    start = time.perf_counter()
    model = load_reference(model_dir, device, dtype)
    print(f"loaded on {device} in {dtype} in {time.perf_counter() - start:.1f} s")
    tokens = {}
    with torch.device(device):
        for mode in modes:
            start = time.perf_counter()
            tokens[mode] = [
                generate(model, ids, gen_length=gen_length, block_length=BLOCK_LENGTH, eos_ids=(),
                         stop_early=False, **reference_options(MODES[mode][1])).tokens
                for ids in prompts]
            print(f"  {mode:<14} {len(prompts)} prompts in {time.perf_counter() - start:.1f} s")
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return tokens


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


def complete(url: str, prompt_ids: list[int], options: dict, gen_length: int, timeout: float) -> list[int]:
    """One greedy ``/v1/completions`` request; its generated token ids."""
    body = {"model": SERVED_NAME, "prompt": prompt_ids, "max_tokens": gen_length, "temperature": 0,
            "ignore_eos": True, "return_token_ids": True,
            "vllm_xargs": {"diffusion_block_length": BLOCK_LENGTH, **options}}
    try:
        r = requests.post(f"{url}/v1/completions", json=body, timeout=timeout)
    except requests.RequestException as e:
        raise RequestFailed(repr(e)) from e
    if r.status_code != 200:
        raise RequestFailed(f"HTTP {r.status_code}: {r.text[:500]}")
    choice = r.json()["choices"][0]
    if choice.get("prompt_token_ids") != prompt_ids:
        raise RequestFailed("the server decoded other prompt ids than were sent")
    if len(choice["token_ids"]) != gen_length:
        raise RequestFailed(f"{len(choice['token_ids'])} tokens with ignore_eos, expected {gen_length}")
    return choice["token_ids"]


def agreement(served: list[list[int]], reference: list[list[int]]) -> dict:
    """Fraction of positions equal, and the first differing (prompt, position)."""
    equal = total = 0
    first = None
    for prompt, (ours, theirs) in enumerate(zip(served, reference)):
        total += len(theirs)
        for position, (a, b) in enumerate(zip(ours, theirs)):
            equal += a == b
            if a != b and (first is None or position < first["position"]):
                first = {"prompt": prompt, "position": position}
    return {"agreement": equal / total, "first_difference": first}


def throughput(url: str, prompts: list[list[int]], options: dict, *, gen_length: int,
               concurrency: int, n_requests: int, timeout: float) -> dict:
    """Completion tokens / wall time of ``n_requests`` requests, at most
    ``concurrency`` in flight; failures are counted, not raised."""
    jobs = [prompts[i % len(prompts)] for i in range(n_requests)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(complete, url, ids, options, gen_length, timeout) for ids in jobs]
        errors, tokens = [], 0
        for future in futures:
            try:
                tokens += len(future.result())
            except RequestFailed as e:
                errors.append(str(e))
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": n_requests, "completion_tokens": tokens,
            "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 2), "errors": errors}


def measure_mode(url: str, mode: str, prompts: list[list[int]], reference: list[list[int]], *,
                 gen_length: int, concurrency: list[int], rounds: int, timeout: float) -> dict:
    """Agreement (one request at a time, which also warms the mode up), then
    throughput at each concurrency."""
    label, options = MODES[mode]
    result = {"mode": mode, "decoding": label, "options": options, "errors": []}
    served = []
    for ids in prompts[:len(reference)]:
        try:
            served.append(complete(url, ids, options, gen_length, timeout))
        except RequestFailed as e:
            result["errors"].append(str(e))
            served.append([])
    result.update(agreement(served, reference))
    result["throughput"] = []
    for c in concurrency:
        figures = throughput(url, prompts, options, gen_length=gen_length, concurrency=c,
                             n_requests=rounds * c, timeout=timeout)
        result["throughput"].append(figures)
        result["errors"] += figures["errors"]
    return result


# ---------------------------------------------------------------------------
# Server log
# ---------------------------------------------------------------------------


def _last(pattern: str, text: str) -> str | None:
    matches = re.findall(pattern, text)
    return matches[-1] if matches else None


def server_settings(log: str, device: str) -> dict:
    """What vLLM chose, from its log: the attention backend (and the
    FlashAttention version), torch.compile's mode, the configured CUDA-graph
    mode, any downgrade vLLM applied later, and which graphs it captured."""
    backend = (_last(r"Using (\w+) attention backend out of potential backends", log)
               or _last(r"Using (?:AttentionBackendEnum\.)?(\w+) backend\.", log))
    if backend is None and device == "cpu":
        backend = "CPU_ATTN (vLLM's CPU platform picks it without logging)"
    configured = _last(r"'cudagraph_mode': <CUDAGraphMode\.(\w+)", log)
    downgraded = _last(r"setting cudagraph_mode=(\w+)|Overriding to (?:CUDAGraphMode\.)?(\w+)\.", log)
    if isinstance(downgraded, tuple):
        downgraded = next(m for m in downgraded if m)
    captured = sorted({f"{kind}: {mode}" for kind, mode in
                       re.findall(r"Capturing CUDA graphs \(([^,]+), (\w+)\)", log)})
    finished = _last(r"Graph capturing finished in (\d+ secs, took [\d.]+ GiB)", log)
    return {
        "attention_backend": backend or "not found in the log",
        "flash_attention_version": _last(r"Using FlashAttention version (\d+)", log),
        "compilation_mode": _last(r"'mode': <CompilationMode\.(\w+)", log),
        "cudagraph_mode": downgraded or configured or "not found in the log",
        "cudagraph_mode_configured": configured,
        "cudagraphs_captured": captured,
        "graph_capture": finished,
    }


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def heading(text: str) -> None:
    print(f"\n== {text} ==")


def environment(device: str) -> dict:
    import vllm

    env = {"python": platform.python_version(), "torch": torch.__version__, "vllm": vllm.__version__,
           "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def print_table(results: list[dict], concurrency: list[int]) -> None:
    columns = ["mode", "decoding", "agreement", "first diff"] + [f"tok/s @{c}" for c in concurrency]
    rows = []
    for r in results:
        first = r["first_difference"]
        rows.append([r["mode"], r["decoding"], f"{100 * r['agreement']:.1f}%",
                     "-" if first is None else f"p{first['prompt']} @{first['position']}"]
                    + [f"{t['tokens_per_s']:.1f}" for t in r["throughput"]])
    widths = [max(len(str(x)) for x in col) for col in zip(columns, *rows)]
    for row in [columns, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w)
                        for i, (x, w) in enumerate(zip(row, widths))))


def print_server(settings: dict) -> None:
    for key, value in settings.items():
        print(f"{key:<26} {value if value not in (None, []) else '-'}")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory or hub id (default: write the "
                        "8B-shaped random LLaDA into --workdir)")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "vllm-dllm-plugin" / "gpu-acceptance",
                        help="random checkpoint, server log and acceptance.json (default: %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--gen-length", type=int, default=256, help="max_tokens: the canvas (default: 256)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=2,
                        help="requests per throughput figure = rounds x concurrency (default: 2)")
    parser.add_argument("--prompts", type=int, default=3,
                        help=f"prompts compared with the reference, at most {len(PROMPTS)} (default: 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the reference runs (default: cuda when available)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="bfloat16",
                        help="server and reference dtype (default: bfloat16)")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="serve without torch.compile and CUDA graphs")
    parser.add_argument("--max-model-len", type=int,
                        help="default: the longest prompt plus --gen-length, rounded up to 64")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra `vllm serve` argument, repeatable (e.g. --server-arg=--gpu-memory-utilization=0.8)")
    parser.add_argument("--min-agreement", type=float, default=0.0,
                        help="exit 1 when a mode agrees less, in percent (default: 0)")
    parser.add_argument("--startup-timeout", type=float, default=1800.0)
    parser.add_argument("--request-timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS):
        parser.error(f"--prompts must be in [1, {len(PROMPTS)}]")
    return args


def serve_and_measure(args: argparse.Namespace, model_dir: Path, max_model_len: int,
                      prompts: list[list[int]], reference: dict) -> tuple[dict, list[dict]]:
    """Start the server once, read what vLLM chose from its log, measure every mode."""
    log_path = args.workdir / "server.log"
    print(f"vllm serve {model_dir} --dtype {args.dtype}" + (" --enforce-eager" if args.enforce_eager else "")
          + "".join(f" {a}" for a in args.server_arg) + f"  (log: {log_path})")
    start = time.perf_counter()
    with local_server(model_dir, SERVED_NAME, log_path=log_path, max_model_len=max_model_len,
                      dtype=args.dtype, enforce_eager=args.enforce_eager, extra_args=args.server_arg,
                      startup_timeout=args.startup_timeout) as url:
        print(f"up in {time.perf_counter() - start:.0f} s at {url}")
        settings = server_settings(log_path.read_text(errors="replace"), args.device)
        print_server(settings)

        heading("Modes")
        results = []
        for mode in args.modes:
            print(f"  {mode} ({MODES[mode][0]})", flush=True)
            result = measure_mode(url, mode, prompts, reference[mode], gen_length=args.gen_length,
                                  concurrency=args.concurrency, rounds=args.rounds,
                                  timeout=args.request_timeout)
            print(f"    agreement {100 * result['agreement']:.1f}%, tokens/s "
                  + ", ".join(f"{t['tokens_per_s']:.1f} @{t['concurrency']}" for t in result["throughput"])
                  + (f", {len(result['errors'])} failed requests" if result["errors"] else ""), flush=True)
            results.append(result)
    return settings, results


def verdict(results: list[dict], min_agreement: float) -> int:
    """Print failed requests and modes below ``min_agreement``; the exit status."""
    errors = [f"{r['mode']}: {e}" for r in results for e in r["errors"]]
    low = [r["mode"] for r in results if 100 * r["agreement"] < min_agreement]
    for e in errors[:10]:
        print(f"FAILED request: {e}")
    if len(errors) > 10:
        print(f"... and {len(errors) - 10} more failed requests")
    if low:
        print(f"FAILED: agreement below {min_agreement}% in {', '.join(low)}")
    print("FAIL" if errors or low else "PASS")
    return 1 if errors or low else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)

    heading("Model")
    model_dir = resolve_model(args.model, args.workdir)
    kind = model_type(model_dir)
    prompts = prompt_token_ids(model_dir)
    max_model_len = args.max_model_len or 64 * math.ceil((max(map(len, prompts)) + args.gen_length) / 64)
    print(f"{model_dir} ({kind}); prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
          f"gen length {args.gen_length}, block length {BLOCK_LENGTH}, max model len {max_model_len}")

    heading(f"Reference (plain PyTorch, {args.device}, {args.dtype})")
    reference = run_reference(model_dir, prompts[:args.prompts], args.modes,
                              gen_length=args.gen_length, device=args.device, dtype=args.dtype)

    heading("Server")
    settings, results = serve_and_measure(args, model_dir, max_model_len, prompts, reference)

    heading(f"Results (tokens/s = completion tokens / wall time, {args.rounds} x concurrency "
            f"requests of {args.gen_length} tokens)")
    print_table(results, args.concurrency)
    report = {"model": str(model_dir), "model_type": kind, "dtype": args.dtype,
              "enforce_eager": args.enforce_eager, "gen_length": args.gen_length,
              "block_length": BLOCK_LENGTH, "max_model_len": max_model_len, "prompt_token_ids": prompts,
              "environment": environment(args.device), "server": settings, "modes": results}
    out = args.workdir / "acceptance.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out}")
    return verdict(results, args.min_agreement)


if __name__ == "__main__":
    sys.exit(main())
