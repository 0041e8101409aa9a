"""Start-up of ``make serve``: torch.compile (vLLM's default) or ``--enforce-eager``.

Starts the server exactly as ``make serve`` does (``vllm serve`` on the
embedded model, ``--served-model-name llada-arith --max-model-len 1024``, the
checkpoint's dtype, ``VLLM_CPU_KVCACHE_SPACE=2``) three ways, in turn,
``--repeats`` times each:

* compile, cold cache: vLLM's default (torch.compile), with an empty
  ``VLLM_CACHE_ROOT`` (a fresh machine: the warm-up traces and saves the
  compiled model);
* compile, warm cache: the same, on the cache the first cold start saved
  (what every later ``make serve`` on the same machine finds);
* ``--enforce-eager``: no compilation (the default ``VLLM_CACHE_ROOT``).

For each start-up it measures:

* seconds from launching the process to the first 200 on ``/health`` (polled
  every 0.5 s), and what the log says took the time (engine init, compile);
* the first request after that (G = 256), which pays any lazy compilation;
* completion tokens/s at G = 256 with the default options (prefix cache,
  threshold 0.9; no ``vllm_xargs``), ``ignore_eos``: ``--requests`` held-out
  prompts one at a time (concurrency 1), and ``2 x 16`` requests 16 at a time
  (concurrency 16).

It also counts the ``WARNING`` lines of each server log and lists their
distinct texts (process ids and timestamps removed).

    python benchmarks/bench_startup.py --repeats 3

Writes ``benchmarks/results/startup.md``; server logs go to ``.cache/bench_startup/``.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import threading
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from common import ROOT, heldout_problems, markdown_table, model_arg, model_dir_of

sys.path.insert(0, str(ROOT / "scripts"))
from local_server import local_server  # noqa: E402

NAME = "llada-arith"
COLD, WARM, EAGER = "compile, cold cache", "compile, warm cache", "--enforce-eager"
VARIANTS = (COLD, WARM, EAGER)
WARNING_LINE = re.compile(r"^\((\w+) pid=\d+\) WARNING \d\d-\d\d [\d:]+ (.*)$")
OTHER_WARNING = re.compile(r"warn", re.I)
ENGINE_INIT = re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s")
STARTUP_DONE = "Application startup complete"


def complete(session, url: str, prompt: str, length: int, timeout: float) -> tuple[float, dict]:
    body = {"model": NAME, "prompt": prompt, "max_tokens": length, "temperature": 0,
            "ignore_eos": True}
    start = time.perf_counter()
    r = session.post(f"{url}/v1/completions", json=body, timeout=timeout)
    seconds = time.perf_counter() - start
    r.raise_for_status()
    return seconds, r.json()


def throughput(url: str, prompts: list[str], length: int, concurrency: int,
               timeout: float) -> tuple[float, list[dict]]:
    """Completion tokens/s of ``prompts``, ``concurrency`` in flight at a time."""
    local = threading.local()

    def one(prompt):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return complete(local.session, url, prompt, length, timeout)[1]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        bodies = list(pool.map(one, prompts))
    seconds = time.perf_counter() - start
    return sum(b["usage"]["completion_tokens"] for b in bodies) / seconds, bodies


def warnings_of(log: Path) -> tuple[collections.Counter, collections.Counter, list[str]]:
    """Distinct vLLM-format WARNING texts up to the end of start-up and after it
    (count per text), and the other warning-like lines (Python warnings, C++)."""
    before, after = collections.Counter(), collections.Counter()
    others = []
    started = False
    for line in log.read_text(errors="replace").splitlines():
        started = started or STARTUP_DONE in line
        m = WARNING_LINE.match(line)
        if m:
            text = re.sub(r"pid[ =]\d+", "pid N", m.group(2))
            (after if started else before)[f"({m.group(1)}) {text}"] += 1
        elif OTHER_WARNING.search(line) and " INFO " not in line:
            others.append(re.sub(r"^\[W\d+ [\d:.]+ ", "[W ", line.strip()))
    return before, after, others


def aot_state(text: str) -> str:
    """What the log says of vLLM's AOT compile cache."""
    if "Directly load AOT compilation" in text:
        return "loaded"
    if "Compiling model again due to a load failure" in text:
        return "load failed, compiled again"
    if "saved AOT compiled function" in text:
        return "compiled, saved"
    return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--requests", type=int, default=8, help="requests at concurrency 1")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.md")
    ap.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench_startup",
                    help="server logs and the compile caches of the compile runs")
    model_arg(ap)
    args = ap.parse_args()
    model_dir = model_dir_of(args)
    g = args.gen_length
    n16 = 2 * args.concurrency
    questions = [p["question"] for p in heldout_problems(model_dir, args.requests + n16 + 1)]
    warm, solo, batch = questions[0], questions[1:args.requests + 1], questions[args.requests + 1:]
    if args.logs.exists():
        shutil.rmtree(args.logs)
    args.logs.mkdir(parents=True)
    warm_cache = args.logs / "cache-cold-0"  # the first cold start's cache, reused by "warm"

    runs = collections.defaultdict(list)  # variant -> list of dicts
    texts = collections.defaultdict(list)  # variant -> concurrency-1 texts, every run
    problems = []
    for rep in range(args.repeats):
        for name in VARIANTS:
            env = {"VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1"}  # as the Makefile
            if name == COLD:
                env["VLLM_CACHE_ROOT"] = str(args.logs / f"cache-cold-{rep}")
            elif name == WARM:
                env["VLLM_CACHE_ROOT"] = str(warm_cache)
            slug = {COLD: "compile-cold", WARM: "compile-warm", EAGER: "eager"}[name]
            log = args.logs / f"{slug}-{rep}.log"
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            with local_server(model_dir, NAME, log_path=log, max_model_len=1024, dtype=None,
                              enforce_eager=name == EAGER, env=env, startup_timeout=900) as url:
                healthy = time.perf_counter() - t0
                with requests.Session() as s:
                    first, _ = complete(s, url, warm, g, args.timeout)
                tps1, bodies1 = throughput(url, solo, g, 1, args.timeout)
                tps16, bodies16 = throughput(url, batch, g, args.concurrency, args.timeout)
            for b in bodies1 + bodies16:
                if b["usage"]["completion_tokens"] != g:
                    problems.append(f"{name} run {rep}: completion_tokens "
                                    f"{b['usage']['completion_tokens']} != {g}")
            texts[name].append([b["choices"][0]["text"] for b in bodies1])
            text = log.read_text(errors="replace")
            init = ENGINE_INIT.findall(text)
            run = dict(load=load, healthy=healthy, first=first, tps1=tps1, tps16=tps16,
                       init=float(init[0]) if init else None, aot=aot_state(text),
                       warnings=warnings_of(log))
            runs[name].append(run)
            print(f"{name} run {rep}: healthy after {healthy:.1f}s (load {load:.1f}), engine "
                  f"init {run['init']}s, AOT {run['aot']}, first request {first:.2f}s, "
                  f"{tps1:.0f} tok/s at 1, {tps16:.0f} tok/s at {args.concurrency}",
                  file=sys.stderr, flush=True)

    def med(name, key, fmt="{:.1f}"):
        values = [r[key] for r in runs[name] if r[key] is not None]
        if not values:
            return "-"
        spread = f" ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else ""
        return fmt.format(statistics.median(values)) + spread

    header = ["server", "runs", "launch to healthy /health, s", "of which engine init, s",
              "AOT compile cache", f"first request (G={g}), s", "tok/s, concurrency 1",
              f"tok/s, concurrency {args.concurrency}", "WARNING lines: start-up + later"]
    rows = [[name, len(runs[name]), med(name, "healthy"), med(name, "init"),
             "/".join(sorted({r["aot"] for r in runs[name]})), med(name, "first", "{:.2f}"),
             med(name, "tps1", "{:.0f}"), med(name, "tps16", "{:.0f}"),
             "/".join(sorted({f"{sum(r['warnings'][0].values())} + {sum(r['warnings'][1].values())}"
                              for r in runs[name]}))]
            for name in VARIANTS]
    reference = texts[EAGER][0]
    same = {name: f"{sum(t == e for ts in texts[name] for t, e in zip(ts, reference))}/"
                  f"{sum(len(ts) for ts in texts[name])}" for name in VARIANTS}
    loads = [r["load"] for name in VARIANTS for r in runs[name]]
    command = f"python benchmarks/bench_startup.py --repeats {args.repeats}"
    lines = [f"`{command}`", "",
             f"medians (min-max) over {args.repeats} start-ups each, in turn; G = {g}, "
             f"default options (prefix, threshold 0.9), ignore_eos, bare held-out prompts; "
             f"concurrency 1: {len(solo)} requests one at a time, concurrency "
             f"{args.concurrency}: {n16} requests; load average (1 min) at the launches "
             f"{min(loads):.1f}-{max(loads):.1f}; concurrency-1 texts equal to the first eager "
             f"run's: " + ", ".join(f"{k} {v}" for k, v in same.items()), ""]
    table = markdown_table(header, rows)

    warn = ["", "Distinct WARNING texts (vLLM log format), over all logs of each variant "
                "(count; S = during start-up, L = later: serving and shutdown):", ""]
    for name in VARIANTS:
        before, after, others = collections.Counter(), collections.Counter(), collections.Counter()
        for r in runs[name]:
            before.update(r["warnings"][0])
            after.update(r["warnings"][1])
            others.update(set(r["warnings"][2]))
        warn.append(f"{name}:")
        warn += [f"- S {count}x {text}" for text, count in sorted(before.items())]
        warn += [f"- L {count}x {text}" for text, count in sorted(after.items())]
        if others:
            warn.append("- other warning-like lines (number of logs with it):")
            warn += [f"  - {count}x {text}" for text, count in sorted(others.items())]
        warn.append("")
    out = "\n".join(lines + table + warn + (["problems:"] + problems if problems else [])) + "\n"
    print(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(out)
    print(f"wrote {args.out}")
    for rep in range(args.repeats):  # the compile caches; the logs stay
        shutil.rmtree(args.logs / f"cache-cold-{rep}", ignore_errors=True)


if __name__ == "__main__":
    main()
