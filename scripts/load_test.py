"""Load test of a live `vllm serve` on loopback.

Sends several hundred concurrent requests (streaming and not, chat and
completions, mixed diffusion options, some aborted by disconnecting mid-
stream) and checks that every completed request's text equals the output of
the same request sent alone, that nothing is lost, and that the KV cache
returns to idle.  Bounded in count and time; prints its figures.

    python scripts/load_test.py --url http://127.0.0.1:8000 --model llada-arith
    python scripts/load_test.py --model-dir vllm_dllm_plugin/assets/llada-arith   # starts a server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_server import local_server  # noqa: E402

OPTION_SETS = [
    {"diffusion_cache": "prefix", "diffusion_threshold": 0.9},
    {"diffusion_cache": "dual", "diffusion_threshold": 0.7},
    {"diffusion_cache": "none", "diffusion_steps_per_block": 8},
    {"diffusion_cache": "prefix", "diffusion_factor": 1.0},
    {"diffusion_cache": "dual", "diffusion_steps_per_block": 4},
]
PROMPTS = ["47+86=", "sort 52817", "9+1=", "sort 906182", "35+65=",
           "Once upon a time", "sort 11111", "7+8="]


def make_jobs(n: int, seed: int) -> list[dict]:
    """``n`` requests over a small set of distinct (prompt, options) pairs."""
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        key = (rng.randrange(len(PROMPTS)), rng.randrange(len(OPTION_SETS)),
               rng.choice((16, 24, 40)), rng.random() < 0.5)
        jobs.append(dict(index=i, key=key, stream=rng.random() < 0.5,
                         abort=rng.random() < 0.1))
    return jobs


def request_body(model: str, key) -> tuple[str, dict]:
    prompt, options, max_tokens, chat = key
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0,
            "vllm_xargs": {"diffusion_block_length": 8, **OPTION_SETS[options]}}
    if chat:
        return "/v1/chat/completions", {
            **body, "messages": [{"role": "user", "content": PROMPTS[prompt]}]}
    return "/v1/completions", {**body, "prompt": PROMPTS[prompt]}


def text_of(choice: dict, chat: bool) -> str:
    return (choice["message"]["content"] if chat else choice["text"]) or ""


async def run_one(client: httpx.AsyncClient, model: str, job: dict) -> str | None:
    """The request's full text; None when it was aborted on purpose."""
    path, body = request_body(model, job["key"])
    chat = path.endswith("chat/completions")
    if not job["stream"] and not job["abort"]:
        r = await client.post(path, json=body)
        r.raise_for_status()
        return text_of(r.json()["choices"][0], chat)
    parts = []
    async with client.stream("POST", path, json={**body, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"]
            if choice:
                delta = choice[0]["delta"].get("content") if chat else choice[0]["text"]
                parts.append(delta or "")
            if job["abort"]:
                return None  # disconnect mid-stream
    return "".join(parts)


async def kv_usage(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    match = re.search(r"^vllm:kv_cache_usage_perc\{[^}]*\} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


async def load_test(url: str, model: str, num_requests: int, concurrency: int,
                    seed: int, timeout_s: float) -> dict:
    jobs = make_jobs(num_requests, seed)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        # Solo outputs: every distinct request, alone.
        solo = {}
        for key in sorted({j["key"] for j in jobs}):
            solo[key] = await run_one(client, model, dict(key=key, stream=False, abort=False))

    # The load phase opens a new connection per request: a pooled keep-alive
    # socket can be closed by the server's idle timeout just as the client
    # reuses it (a client-side race, not a server fault), which would make a
    # transport error here ambiguous.
    fresh = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=fresh) as client:
        gate = asyncio.Semaphore(concurrency)

        async def guarded(job):
            async with gate:
                try:
                    return job, await run_one(client, model, job)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    raise RuntimeError(f"request {job['index']} {job['key']}: {e!r}") from e

        start = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(guarded(j) for j in jobs), return_exceptions=True),
            timeout=timeout_s)
        duration = time.monotonic() - start

        failures = [r for r in results if isinstance(r, BaseException)]
        done = [r for r in results if not isinstance(r, BaseException)]
        completed = [(j, t) for j, t in done if t is not None]
        mismatches = [j["index"] for j, t in completed if t != solo[j["key"]]]
        await asyncio.sleep(1.0)
        usage = await kv_usage(client)
    return dict(requests=num_requests, concurrency=concurrency,
                completed=len(completed), aborted=len(done) - len(completed),
                failures=len(failures), mismatches=len(mismatches),
                duration_s=round(duration, 2), kv_cache_usage_after=usage,
                first_failure=repr(failures[0]) if failures else None)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (loopback)")
    parser.add_argument("--model-dir", help="start `vllm serve` on this checkpoint")
    parser.add_argument("--model", default="llada-arith", help="served model name")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--server-log", help="with --model-dir: write the server's log here")
    args = parser.parse_args(argv)
    if bool(args.url) == bool(args.model_dir):
        parser.error("give exactly one of --url and --model-dir")
    with (local_server(args.model_dir, args.model, log_path=args.server_log,
                       dtype=None) if args.model_dir
          else contextlib.nullcontext(args.url)) as url:
        figures = asyncio.run(load_test(url, args.model, args.requests, args.concurrency,
                                        args.seed, args.timeout))
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["failures"] == 0 and result["mismatches"] == 0 else 1)
