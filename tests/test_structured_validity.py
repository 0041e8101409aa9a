"""Structured output is valid on every family (docs/options.md, "Structured
output"; the figures of docs/benchmarks.md, "Structured output").

Each model's requests go through ``benchmarks/bench_structured.py``'s
validity worker, one fresh engine per model in its own process (two engines
in one pytest process break vLLM's state): JSON schemas, regexes and choices,
kinds interleaved in one submission, each request with one of its family's
decoding settings (thresholds, quota schedules, cache modes, one sampled
setting), so constrained steps commit runs of several tokens and share steps
with other grammars.  The worker returns every request's grammar, text and
finish reason; this module checks them with tools independent of the
engine's grammar backend: ``json.loads`` + ``jsonschema``, ``re.fullmatch``,
membership.  A response cut by ``max_tokens`` is a failure.

Every model gets the issue's 200 requests per kind: the embedded model
(LLaDA family) and the other families' tiny random-weight checkpoints
(conftest's).  The module takes about 2.5 minutes on the project's 2-core
CPU (engines with one OpenMP thread).  The engines run with
``StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True)``:
random weights would otherwise write whitespace up to ``max_tokens``.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_structured.py"
EMBEDDED_MODEL = ROOT / "vllm_dllm_plugin" / "assets" / "llada-arith"
KINDS = ("json", "regex", "choice")
REQUESTS = 200              # per kind and model
MAX_TOKENS = 64
WORKER_TIMEOUT_S = 600


def run_validity_worker(family: str, model: Path, requests: int) -> dict:
    """The worker's records: per kind, one dict per request (spec, setting,
    text, finish_reason, tokens, forwards)."""
    cmd = [sys.executable, str(BENCH), "validity", "--worker", "--family", family,
           "--model", str(model), "--requests", str(requests), "--max-tokens", str(MAX_TOKENS)]
    # One OpenMP thread (as the benchmarks): more spin against the engine's
    # Python thread on a 2-core machine and make every step many times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env)
    assert proc.returncode == 0, f"worker failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def problem(kind: str, spec, text: str, finish_reason: str) -> str | None:
    """Why the output is not a complete, valid answer of its grammar (None if it is)."""
    if finish_reason != "stop":
        return f"finish_reason {finish_reason!r}"
    if kind == "json":
        try:
            value = json.loads(text)
        except ValueError as e:
            return f"not JSON: {e}"
        try:
            jsonschema.validate(value, spec)
        except jsonschema.ValidationError as e:
            return f"schema: {e.message}"
        return None
    if kind == "regex":
        return None if re.fullmatch(spec, text) else "no full match"
    return None if text in spec else "not one of the choices"


CASES = [
    pytest.param("llada", None, REQUESTS, id="llada-embedded"),
    pytest.param("dream", "dream_dir", REQUESTS, id="dream"),
    pytest.param("v2", "v2_dir", REQUESTS, id="fast-dllm-v2"),
    pytest.param("sdar", "sdar_dir", REQUESTS, id="sdar"),
    pytest.param("llada2", "llada2_dir", REQUESTS, id="llada2"),
]


@pytest.mark.parametrize("family, model_fixture, requests", CASES)
def test_every_structured_output_is_valid(family, model_fixture, requests, request):
    model = request.getfixturevalue(model_fixture) if model_fixture else EMBEDDED_MODEL
    run = run_validity_worker(family, model, requests)
    failures = []
    for kind in KINDS:
        records = run["records"][kind]
        assert len(records) == requests, (kind, len(records))
        assert len({json.dumps(r["spec"]) for r in records}) > 1   # grammars rotate
        for r in records:
            why = problem(kind, r["spec"], r["text"], r["finish_reason"])
            if why:
                failures.append((kind, why, r))
    assert not failures, (f"{len(failures)} invalid of {len(KINDS) * requests}; first: "
                          f"{failures[:3]}")
    if family == "llada":
        # The trained model commits runs of several tokens under a grammar:
        # validity is checked on parallel commits, not only one token a step.
        multi = sum(r["forwards"] < r["tokens"] for kind in KINDS for r in run["records"][kind])
        assert multi > 0
