#!/usr/bin/env bash
# Every figure of docs/benchmarks.md, one script after the other (they share the
# machine's cores, so never in parallel). Logs and tables go to benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../.venv/bin/python}
mkdir -p results
$PY bench_accuracy.py --problems 200 --gen-length 256 --repeats 3 | tee results/accuracy.md
$PY bench_accuracy.py --problems 200 --gen-length 256 --repeats 3 --dtype bfloat16 | tee results/accuracy_bf16.md
$PY bench_lengths.py --lengths 64,128,256,512 --prompts 3 | tee results/lengths.md
$PY bench_batching.py --concurrency 1,4,16,64 --gen-length 256 --repeats 3 | tee results/batching.md
$PY bench_engine.py --gen-length 64 --prompts 3 | tee results/engine_vs_reference.md
$PY bench_fast_dllm_v2.py --gen-length 256 --concurrency 8,16 --repeats 3
$PY bench_v2_shared_prompt.py --system-lengths 0,128,256,448,4000 --repeats 5
$PY bench_revisions.py --rev 76208c9 --rounds 2
$PY bench_server_lengths.py --lengths 256,512,1000 --requests 8 --baseline-requests 3
$PY bench_startup.py --repeats 3
$PY bench_structured.py validity --requests 200
$PY bench_structured.py validity --requests 200 --with-max-length --out results/structured_validity_max_length.md
$PY bench_structured.py validity --requests 50 --any-whitespace --out results/structured_validity_any_whitespace.md
$PY bench_structured.py accuracy --problems 400
$PY bench_structured.py throughput --concurrency 16 --repeats 5
