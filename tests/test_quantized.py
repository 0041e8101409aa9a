"""A compressed-tensors W8A8 int8 twin served through the engine.

``vllm_dllm_plugin.testing.checkpoints.quantize`` writes the twin (int8
per-channel weights + scales, dynamic per-token int8 activations, config in
compressed-tensors' format).  Each engine runs in its own process
(``python tests/test_quantized.py MODEL_DIR < requests.json``), which prints
the quantization scheme of every linear layer and the generated tokens.

Checked: the twin loads as quantized (every linear layer inside the blocks
runs ``CompressedTensorsW8A8Int8`` on int8 weights, the head stays
unquantized), and its answers stay close to the unquantized model's.  The
floors are below what was measured on vLLM 0.32's CPU build (docs/benchmarks.md,
"Quantized checkpoint"): on the embedded model's first 48 held-out problems
(prefix cache, threshold 0.9) the twin answers 43/48 correctly (float32: 42)
and 47/48 answers are identical to the float32 engine's.  The tiny Dream
checkpoint has random weights, so its near-flat logits flip under int8 and a
flipped token shifts what follows: 57/240 tokens equal position by position
(chance: 1 in 512), floor 15%.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBLEMS = 48
EMBEDDED_MODE = dict(cache="prefix", threshold=0.9, block_length=32)
EMBEDDED_ACCURACY_FLOOR = 0.8    # twin's held-out accuracy
EMBEDDED_AGREEMENT_FLOOR = 0.9   # twin's answers identical to the float32 engine's
DREAM_TOKEN_FLOOR = 0.15         # tokens equal (same position) to the float32 reference's
HERE = Path(__file__).resolve().parent


def serve(model_dir: Path, requests: list[dict]) -> dict:
    """Run ``requests`` through a fresh engine on ``model_dir`` in its own process."""
    proc = subprocess.run([sys.executable, str(Path(__file__)), str(model_dir)],
                          input=json.dumps(requests), capture_output=True, text=True,
                          timeout=900, cwd=HERE.parent)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def _linear_schemes(model) -> dict[str, list]:
    """Runs in the worker: per linear layer, its quant method, scheme and the
    scheme's int8 kernel (or the weight dtype, unquantized)."""
    from vllm.model_executor.layers.linear import LinearBase

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LinearBase):
            scheme = getattr(module, "scheme", None)
            out[name] = [type(module.quant_method).__name__,
                         type(scheme).__name__ if scheme else None,
                         type(scheme.kernel).__name__ if scheme else str(module.weight.dtype)]
    out["lm_head"] = [type(model.lm_head.quant_method).__name__, None,
                      str(model.lm_head.weight.dtype)]
    return out


def _main(model_dir: str) -> None:
    from vllm import LLM, SamplingParams

    requests = json.loads(sys.stdin.read())
    llm = LLM(model=model_dir, dtype="float32", enforce_eager=True, max_model_len=1024, seed=0)
    tokenizer = llm.get_tokenizer()
    prompts = []
    for r in requests:
        if "question" in r:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}],
                                                add_generation_prompt=True, tokenize=True)
            prompts.append(ids["input_ids"] if hasattr(ids, "keys") else ids)
        else:
            prompts.append(r["prompt"])
    outputs = llm.generate(
        [{"prompt_token_ids": p} for p in prompts],
        [SamplingParams(temperature=0.0, max_tokens=r["max_tokens"],
                        extra_args={f"diffusion_{k}": v for k, v in r["options"].items()})
         for r in requests],
        use_tqdm=False)
    result = dict(layers=llm.apply_model(_linear_schemes)[0],
                  tokens=[list(o.outputs[0].token_ids) for o in outputs],
                  texts=[o.outputs[0].text for o in outputs])
    print("RESULT " + json.dumps(result), flush=True)


def assert_quantized(layers: dict[str, list]) -> None:
    blocks = {n: v for n, v in layers.items() if ".layers." in n}
    assert blocks and all(v[:2] == ["CompressedTensorsLinearMethod", "CompressedTensorsW8A8Int8"]
                          and "Int8" in v[2] for v in blocks.values()), blocks
    assert layers["lm_head"][2] == "torch.float32"  # the head is in `ignore`


def assert_not_quantized(layers: dict[str, list]) -> None:
    assert all(v[0] == "UnquantizedLinearMethod" and v[2] == "torch.float32"
               for n, v in layers.items() if ".layers." in n), layers


@pytest.fixture(scope="module")
def embedded_twin(tmp_path_factory) -> Path:
    from vllm_dllm_plugin import EMBEDDED_MODEL
    from vllm_dllm_plugin.testing.checkpoints.quantize import quantize_checkpoint

    return quantize_checkpoint(EMBEDDED_MODEL, tmp_path_factory.mktemp("llada-arith-w8a8"))


def test_twin_files_are_in_compressed_tensors_format(embedded_twin):
    from safetensors import safe_open

    config = json.loads((embedded_twin / "config.json").read_text())
    q = config["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "int-quantized"
    assert q["quantization_status"] == "compressed" and q["ignore"] == ["model.transformer.ff_out"]
    group = q["config_groups"]["group_0"]
    assert group["targets"] == ["Linear"]
    assert (group["weights"]["num_bits"], group["weights"]["strategy"],
            group["weights"]["symmetric"], group["weights"]["dynamic"]) == (8, "channel", True, False)
    assert (group["input_activations"]["strategy"], group["input_activations"]["dynamic"]) == (
        "token", True)
    with safe_open(str(embedded_twin / "model.safetensors"), "pt") as f:
        w = f.get_tensor("model.transformer.blocks.0.q_proj.weight")
        s = f.get_tensor("model.transformer.blocks.0.q_proj.weight_scale")
        head = f.get_tensor("model.transformer.ff_out.weight")
    assert str(w.dtype) == "torch.int8" and tuple(s.shape) == (w.shape[0], 1)
    assert head.is_floating_point()


def test_embedded_twin_serves_quantized_and_answers_like_float32(embedded_twin):
    from vllm_dllm_plugin import EMBEDDED_MODEL

    problems = [json.loads(line) for line in
                (EMBEDDED_MODEL / "heldout.jsonl").read_text().splitlines()[:PROBLEMS]]
    requests = [dict(question=p["question"], max_tokens=64, options=EMBEDDED_MODE)
                for p in problems]
    float_run = serve(EMBEDDED_MODEL, requests)
    twin_run = serve(embedded_twin, requests)
    assert_not_quantized(float_run["layers"])
    assert_quantized(twin_run["layers"])

    answers = [p["answer"] for p in problems]
    twin = [t.strip() for t in twin_run["texts"]]
    same = sum(a.strip() == b for a, b in zip(float_run["texts"], twin))
    correct = sum(a == b for a, b in zip(answers, twin))
    print(f"twin: {correct}/{PROBLEMS} correct, {same}/{PROBLEMS} as float32 "
          f"(float32: {sum(a == t.strip() for a, t in zip(answers, float_run['texts']))})")
    assert correct >= EMBEDDED_ACCURACY_FLOOR * PROBLEMS
    assert same >= EMBEDDED_AGREEMENT_FLOOR * PROBLEMS


def test_tiny_dream_twin_serves_quantized_and_agrees_with_the_reference(
        dream_dir, dream_ref, dream_eos, tmp_path):
    from engine_utils import reference_run
    from test_parity import random_prompts

    from vllm_dllm_plugin.testing.checkpoints.quantize import quantize_checkpoint

    twin = quantize_checkpoint(dream_dir, tmp_path / "dream-w8a8")
    prompts = random_prompts((3, 9, 14, 22, 31, 47), seed=11, vocab=480)
    mode = dict(cache="prefix", threshold=0.9, block_length=8)
    run = serve(twin, [dict(prompt=p, max_tokens=40, options=mode) for p in prompts])
    assert_quantized(run["layers"])
    agree = total = 0
    for p, got in zip(prompts, run["tokens"]):
        want = reference_run(dream_ref, p, max_tokens=40, eos_ids=dream_eos, **mode).tokens
        agree += sum(a == b for a, b in zip(got, want))
        total += max(len(got), len(want))
    print(f"tiny Dream twin: {agree}/{total} tokens as the float32 reference")
    assert agree >= DREAM_TOKEN_FLOOR * total


if __name__ == "__main__":
    _main(sys.argv[1])
