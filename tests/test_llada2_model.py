"""vLLM's model class for LLaDA2.x (``models/llada2.py``: ``BailingMoeV2ForCausalLM``
with block-causal attention) on the tiny checkpoint: it loads through vLLM's
loader (which raises on a checkpoint weight it has no parameter for, and on a
parameter left without weight), its logits equal the reference's in float32,
and TP=2 decodes the same tokens as TP=1.

The logits are read by wrapping the inner model's ``forward`` through
``LLM.apply_model``: every forward's input ids, positions and
``compute_logits`` of its hidden states, whatever the canvas schedules.
"""

from __future__ import annotations

import os

import pytest
import torch

from engine_utils import make_llm, sampling
from test_tensor_parallel import run_engine

P = 64   # two whole prompt blocks
_CAPTURED: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from vllm_dllm_plugin.testing.checkpoints import write_llada2_checkpoint

    return write_llada2_checkpoint(tmp_path_factory.mktemp("llada2-vllm"), seed=0)


def _capture(model):
    """Runs in the (in-process) worker: record each forward's rows and logits."""
    inner = model.model.forward

    def forward(input_ids, positions, *args, **kwargs):
        out = inner(input_ids, positions, *args, **kwargs)
        _CAPTURED.append((input_ids.clone(), positions.clone(), model.compute_logits(out).float().clone()))
        return out

    model.model.forward = forward
    moe = model.model.layers[1].mlp
    return type(model).__name__, type(moe.experts.router).__name__


def _prompt():
    return [(i * 37 + 11) % 480 for i in range(P)]


def test_vllm_logits_equal_the_reference(ckpt):
    from vllm_dllm_plugin.testing.reference.llada2 import LLaDA2Moe

    llm = make_llm(ckpt)
    assert llm.apply_model(_capture) == [("LLaDA2MoeModelLM", "CPURouter")]
    _CAPTURED.clear()
    llm.generate([{"prompt_token_ids": _prompt()}], sampling(8), use_tqdm=False)
    ref = LLaDA2Moe.from_pretrained(ckpt)
    prefill = ref.prefill(_prompt())
    compared = 0
    for ids, pos, logits in _CAPTURED:
        start, n = int(pos[0]), len(ids)
        assert pos.tolist() == list(range(start, start + n))
        if start == 0:      # the prompt's blocks (and whatever follows them), block-causal
            want = ref.prefill(ids.tolist()).logits
        elif start == P:    # the first window over the prompt's exact K/V
            want = ref.block_forward(ids.tolist(), P, prefill.kv)
            want = want.logits
        else:
            continue
        # float32 rounding: the two differ from a float64 run by about as much
        torch.testing.assert_close(logits, want.float(), atol=1e-3, rtol=0)
        assert torch.equal(logits.argmax(-1), want.argmax(-1))
        compared += 1
    assert compared >= 2, [(len(i), int(p[0])) for i, p, _ in _CAPTURED]
    del llm


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TP=2 needs two cores")
def test_tp2_decodes_the_same_tokens_as_tp1(ckpt):
    prompts = [[(i * 37 + 11 * j) % 480 for i in range(n)] for j, n in enumerate((5, 31, 32, 64, 70))]
    requests = [dict(prompt=p, max_tokens=40, options={}) for p in prompts]
    assert run_engine(ckpt, requests, tp=2) == run_engine(ckpt, requests, tp=1)
