"""`vllm bench serve` against a live server on the embedded model, with the
settings docs/usage.md recommends ("Clients: vllm bench serve"): every request
succeeds and returns exactly its canvas.

One server for the module; each benchmark is a `vllm bench serve` subprocess
bounded by a timeout, and its numbers are read back from the saved result JSON.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from local_server import local_server

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "vllm_dllm_plugin" / "assets" / "llada-arith"
NAME = "llada-arith"
BLOCK = 32                 # the plugin's default diffusion_block_length
NUM_PROMPTS = 64
CONCURRENCY = 16
INPUT_LEN = 32
OUTPUT_LEN = 3 * BLOCK     # the canvas: a whole number of blocks
BENCH_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("bench-server") / "serve.log"
    with local_server(MODEL_DIR, NAME, log_path=log, max_model_len=1024) as base:
        yield base


def bench_serve(server: str, out_dir: Path, backend: str, endpoint: str,
                extra_args=()) -> tuple[dict, str]:
    """Run `vllm bench serve`; return (saved result JSON, stdout+stderr)."""
    cmd = [str(Path(sys.executable).with_name("vllm")), "bench", "serve",
           "--backend", backend, "--base-url", server, "--endpoint", endpoint,
           "--model", str(MODEL_DIR), "--served-model-name", NAME,
           "--dataset-name", "random", "--random-input-len", str(INPUT_LEN),
           "--random-output-len", str(OUTPUT_LEN), "--random-range-ratio", "0",
           "--num-prompts", str(NUM_PROMPTS), "--max-concurrency", str(CONCURRENCY),
           "--num-warmups", str(CONCURRENCY),
           "--ignore-eos", "--temperature", "0", "--seed", "0",
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
           "--disable-tqdm", "--save-result", "--save-detailed",
           "--result-dir", str(out_dir), "--result-filename", f"{backend}.json",
           *extra_args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                              timeout=BENCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"vllm bench serve ran past {BENCH_TIMEOUT_S} s:\n{(e.stdout or '')[-4000:]}")
    output = proc.stdout + proc.stderr
    # Show the summary in pytest's captured output (visible with -s or on failure).
    start = output.find(" Serving Benchmark Result ")
    print(output[start:] if start >= 0 else output[-4000:])
    assert proc.returncode == 0, output[-4000:]
    return json.loads((out_dir / f"{backend}.json").read_text()), output


def test_random_dataset_cannot_sample_the_mask_token():
    """The random dataset draws ids below ``tokenizer.vocab_size`` (and pads
    short prompts with ids below it too), so the mask token must lie above it.
    (A fast tokenizer's ``vocab_size`` is the base vocabulary, added tokens
    excluded.)"""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    mask_id = json.loads((MODEL_DIR / "config.json").read_text())["mask_token_id"]
    assert tok.get_vocab_size(with_added_tokens=False) <= mask_id
    assert tok.id_to_token(mask_id) == "<|mdm_mask|>"


@pytest.mark.parametrize("backend,endpoint,extra", [
    ("openai", "/v1/completions", []),
    ("openai-chat", "/v1/chat/completions",
     ["--extra-body", json.dumps({"vllm_xargs": {"diffusion_cache": "dual",
                                                 "diffusion_threshold": 0.9}})]),
])
def test_bench_serve_every_request_succeeds(server, tmp_path, backend, endpoint, extra):
    result, output = bench_serve(server, tmp_path, backend, endpoint, extra)
    errors = [e for e in result["errors"] if e]
    assert result["completed"] == NUM_PROMPTS, errors[:3]
    assert result["failed"] == 0, errors[:3]
    # ignore_eos: every request decodes its whole canvas. bench serve takes the
    # count from the stream's usage chunk (completion_tokens), not from chunks.
    assert result["output_lens"] == [OUTPUT_LEN] * NUM_PROMPTS
    assert result["total_output_tokens"] == NUM_PROMPTS * OUTPUT_LEN
    assert result["total_input_tokens"] >= NUM_PROMPTS * INPUT_LEN
    # Tokens arrive a block per chunk, so a request has at most one ITL sample
    # per block boundary (chat: plus the role chunk that opens the stream);
    # fewer when the server coalesces blocks that were ready together.
    max_itls = OUTPUT_LEN // BLOCK - (1 if backend == "openai" else 0)
    assert all(len(itl) <= max_itls for itl in result["itls"]), result["itls"][:3]
    assert any(result["itls"])
    assert all(t > 0 for t in result["ttfts"])
    assert result["mean_tpot_ms"] > 0 and result["mean_itl_ms"] > 0
    assert "Successful requests:" in output
