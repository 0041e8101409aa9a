"""The embedded default model: its files, its training objective, its answers."""

import json
import random

import pytest
import torch

from engine_utils import assert_reference, engine_eos_ids, make_llm, sampling
from vllm_dllm_plugin import EMBEDDED_MODEL

PROBLEMS = 48


def test_shipped_checkpoint_is_in_the_llada_hub_layout():
    from safetensors import safe_open

    config = json.loads((EMBEDDED_MODEL / "config.json").read_text())
    assert config["architectures"] == ["LLaDAModelLM"] and config["model_type"] == "llada"
    with safe_open(str(EMBEDDED_MODEL / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.transformer.wte.weight" in names and "model.transformer.ff_out.weight" in names
    assert f"model.transformer.blocks.{config['n_layers'] - 1}.up_proj.weight" in names
    tokenizer_config = json.loads((EMBEDDED_MODEL / "tokenizer_config.json").read_text())
    assert "<|start_header_id|>" in tokenizer_config["chat_template"]
    size = sum(p.stat().st_size for p in EMBEDDED_MODEL.iterdir())
    assert size < 8 * 2**20, f"{size} bytes: not 'a few MB'"


def test_training_batch_masks_the_canvas_only_weighted_by_one_over_t():
    from vllm_dllm_plugin.testing.checkpoints import EOS, MASK, build_llada_tokenizer
    from train_embedded_model import SIZES, Encoder, make_batch

    tok, ids = build_llada_tokenizer(SIZES["vocab_size"], merges=False)
    enc = Encoder(tok, ids)
    batch = make_batch(enc, random.Random(0), set(), torch.Generator().manual_seed(0))
    masked = batch.ids == ids[MASK]
    assert masked.any() and (batch.targets[masked] >= 0).all()
    assert (batch.targets[~masked] == -100).all()            # loss on masked tokens only
    assert (batch.weights[masked] >= 1.0).all() and (batch.weights[~masked] == 0).all()
    for row in range(batch.ids.shape[0]):                    # the prompt is never masked
        first_masked = masked[row].nonzero()
        if len(first_masked):
            prompt = tok.decode(batch.ids[row, : first_masked[0, 0]].tolist())
            assert "=" in prompt or "sort " in prompt
    # t differs per sequence: 1/t is constant within a row, not across rows
    per_row = [batch.weights[r][masked[r]].unique() for r in range(batch.ids.shape[0])]
    assert all(len(w) <= 1 for w in per_row) and len({float(w[0]) for w in per_row if len(w)}) > 1
    assert batch.targets[masked].eq(ids[EOS]).any()          # the end-of-text padding is learned too


@pytest.fixture(scope="module")
def llm():
    return make_llm(EMBEDDED_MODEL, max_model_len=1024)


@pytest.fixture(scope="module")
def problems(llm):
    lines = (EMBEDDED_MODEL / "heldout.jsonl").read_text().splitlines()[:PROBLEMS]
    tokenizer = llm.get_tokenizer()
    out = []
    for line in lines:
        p = json.loads(line)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": p["question"]}],
                                               add_generation_prompt=True, tokenize=True)
        out.append((p, prompt["input_ids"] if hasattr(prompt, "keys") else prompt))
    return out


@pytest.mark.parametrize("mode", [dict(cache="none", steps_per_block=32),
                                  dict(cache="prefix", threshold=0.9),
                                  dict(cache="dual", threshold=0.9)])
def test_held_out_accuracy_through_the_engine(llm, problems, mode):
    outputs = llm.generate([{"prompt_token_ids": ids} for _, ids in problems],
                           sampling(64, block_length=32, **mode), use_tqdm=False)
    correct = sum(o.outputs[0].text.strip() == p["answer"] for o, (p, _) in zip(outputs, problems))
    assert correct >= 0.8 * len(problems), f"{correct}/{len(problems)} correct with {mode}"


def test_trained_weights_match_the_reference(llm, problems):
    """Token-exact parity on real (trained, confident) predictions."""
    from vllm_dllm_plugin.testing.reference.llada import LLaDA

    ref = LLaDA.from_pretrained(EMBEDDED_MODEL)
    eos = engine_eos_ids(EMBEDDED_MODEL)
    modes = [dict(cache="prefix", threshold=0.9), dict(cache="dual", threshold=0.7),
             dict(cache="none", factor=1.0)]
    for i, mode in enumerate(modes):
        subset = problems[i * 4:(i + 1) * 4]
        outputs = llm.generate([{"prompt_token_ids": ids} for _, ids in subset],
                               sampling(64, block_length=32, **mode), use_tqdm=False)
        for out, (_, ids) in zip(outputs, subset):
            assert_reference(out.outputs[0].token_ids, ref, ids, what=str(mode), max_tokens=64,
                             eos_ids=eos, block_length=32, **mode)
