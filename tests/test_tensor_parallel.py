"""TP=2 (multiprocessing executor) gives the same tokens as the reference (= TP=1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from constrained_checks import split_grammar
from engine_utils import assert_reference, engine_options
from test_parity import random_prompts

HERE = Path(__file__).parent

CASES = [
    dict(cache="prefix", block_length=8, threshold=0.9),
    dict(cache="none", block_length=8, steps_per_block=8),
    dict(cache="dual", block_length=8, threshold=0.7),
    dict(cache="prefix", block_length=8, steps_per_block=4),
    dict(cache="dual", block_length=16, factor=1.0),
    dict(cache="none", block_length=8, threshold=0.9),
    # structured output: each rank holds the grammar (tests/constrained_checks.py)
    dict(cache="prefix", block_length=8, threshold=0.7, grammar="regex"),
    dict(cache="dual", block_length=8, threshold=0.7, grammar="json"),
]


PROMPTS = random_prompts((3, 9, 14, 22, 31, 47, 12, 26), seed=5)
MAX_TOKENS = 40


def mixed_requests() -> list[dict]:
    """One request per case of CASES, for tests/run_engine.py."""
    requests = []
    for p, case in zip(PROMPTS, CASES):
        options, structured, _ = split_grammar(case, None, ())
        requests.append(dict(prompt=p, max_tokens=MAX_TOKENS, options=engine_options(options),
                             structured_outputs=structured))
    return requests


def assert_reference_tokens(got, ref, eos_ids, where: str, model_dir) -> None:
    """``got[i]`` equals the reference's tokens for request ``i`` (under the
    independent acceptor for a constrained one)."""
    for i, (p, case) in enumerate(zip(PROMPTS, CASES)):
        options, _, grammar = split_grammar(case, model_dir, eos_ids)
        assert_reference(got[i], ref, p, what=f"request {i} ({case}) {where}",
                         max_tokens=MAX_TOKENS, eos_ids=eos_ids, grammar=grammar, **options)


def run_engine(model_dir, requests, tp, dtype="float32", *flags, forwards=False,
               printed_too=()):
    """Outputs of ``requests`` from a fresh engine in its own process; with
    ``forwards``, also each request's forward passes (in-process engine core);
    ``printed_too``: more of run_engine.py's lines to return (e.g. CACHED)."""
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0" if forwards else "1",
               VLLM_CPU_OMP_THREADS_BIND="0|1" if tp == 2 else "auto")
    proc = subprocess.run(
        [sys.executable, str(HERE / "run_engine.py"), str(model_dir), "--tp", str(tp),
         "--dtype", dtype, *flags, *(["--forwards"] if forwards else [])],
        input=json.dumps(requests), capture_output=True, text=True, env=env, timeout=600)
    printed = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("RESULT", "FORWARDS", *printed_too):
            printed[key] = json.loads(value)
    assert proc.returncode == 0 and "RESULT" in printed, proc.stderr[-4000:]
    if printed_too:
        return printed["RESULT"], *(printed[k] for k in printed_too)
    return (printed["RESULT"], printed["FORWARDS"]) if forwards else printed["RESULT"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TP=2 needs two cores")
def test_tp2_equals_reference(llada_dir, llada_ref, llada_eos):
    got = run_engine(llada_dir, mixed_requests(), tp=2)
    assert_reference_tokens(got, llada_ref, llada_eos, "at TP=2", llada_dir)
