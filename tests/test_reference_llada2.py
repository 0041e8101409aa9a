"""The plain-PyTorch LLaDA2.x model (``testing/reference/llada2.py``): loading,
routing, partial rotary and the block-causal forwards, on the tiny checkpoint.
No vLLM engine (tests/test_llada2_model.py compares vLLM's model with it)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vllm_dllm_plugin.testing.checkpoints import write_llada2_checkpoint
from vllm_dllm_plugin.testing.reference.block_causal import append_kv, empty_cache
from vllm_dllm_plugin.testing.reference.common import fresh_keys
from vllm_dllm_plugin.testing.reference.llada2 import LLaDA2Moe, route

ENDOFTEXT, MASK = 489, 492


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_llada2_checkpoint(tmp_path_factory.mktemp("llada2-ref"), seed=0)


@pytest.fixture(scope="module")
def model(ckpt):
    return LLaDA2Moe.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def model64(ckpt):
    return LLaDA2Moe.from_pretrained(ckpt, dtype=torch.float64)


def _prompt(n, seed=0):
    return torch.randint(0, 480, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_loader_reads_the_ids_from_the_tokenizer(model, ckpt):
    assert model.mask_id == MASK and model.eos_ids == {ENDOFTEXT}
    assert model.dtype == torch.float32 and model.checkpoint == ckpt
    assert (model.geometry.n_kv_heads, model.geometry.head_dim, model.config.rotary_dim) == (2, 32, 16)
    assert len(model.layers) == 3 and "mlp.gate_proj.weight" in model.layers[0]
    assert "mlp.gate.expert_bias" in model.layers[1]


def test_loader_rejects_other_families_and_unimplemented_keys(ckpt, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "use_rmsnorm": False}))
    with pytest.raises(ValueError, match="use_rmsnorm"):
        LLaDA2Moe.from_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "architectures": ["SDARForCausalLM"]}))
    with pytest.raises(ValueError, match="not a LLaDA2.x checkpoint"):
        LLaDA2Moe.from_pretrained(bad)


def test_routing_weights_are_unbiased_normalised_and_scaled():
    gen = torch.Generator().manual_seed(1)
    h, gate = torch.randn(64, 16, generator=gen), torch.randn(8, 16, generator=gen)
    bias = 0.5 * torch.randn(8, generator=gen)
    experts, weights = route(h, gate, bias, n_group=4, topk_group=2, top_k=2, scaling=2.5)
    scores = torch.sigmoid(h @ gate.T)
    chosen = scores.gather(1, experts)
    torch.testing.assert_close(weights, chosen / chosen.sum(-1, keepdim=True) * 2.5)
    torch.testing.assert_close(weights.sum(-1), torch.full((64,), 2.5))
    # the bias moves the choice but not the formula of the weights
    plain, _ = route(h, gate, torch.zeros(8), 4, 2, 2, 2.5)
    assert (plain.sort(-1).values != experts.sort(-1).values).any(-1).sum() > 5
    assert torch.equal(plain, (scores.masked_fill(~_group_keep(scores, 4, 2), -1).topk(2, -1).indices))


def _group_keep(scores, n_group, topk_group):
    n = scores.shape[0]
    best = scores.view(n, n_group, -1).topk(2, -1).values.sum(-1).topk(topk_group, -1).indices
    keep = torch.zeros(n, n_group, dtype=torch.bool).scatter(1, best, True)
    return keep.repeat_interleave(scores.shape[1] // n_group, dim=1)


def test_group_limiting_changes_the_choice():
    gen = torch.Generator().manual_seed(2)
    h, gate, bias = torch.randn(128, 16, generator=gen), torch.randn(8, 16, generator=gen), torch.zeros(8)
    limited, _ = route(h, gate, bias, n_group=4, topk_group=1, top_k=2, scaling=1.0)
    free, _ = route(h, gate, bias, n_group=4, topk_group=4, top_k=2, scaling=1.0)
    assert (limited // 2 == limited[:, :1] // 2).all()   # one group of 2 experts: both from it
    assert (limited.sort(-1).values != free.sort(-1).values).any(-1).sum() > 10


def test_expert_bias_matters_in_the_model(ckpt):
    ids = _prompt(40)
    base = LLaDA2Moe.from_pretrained(ckpt).prefill(ids).logits
    zeroed = LLaDA2Moe.from_pretrained(ckpt)
    for w in zeroed.layers[1:]:
        w["mlp.gate.expert_bias"] = torch.zeros_like(w["mlp.gate.expert_bias"])
    assert (zeroed.prefill(ids).logits - base).abs().max() > 1e-2


def test_partial_rotary_leaves_the_second_part_of_each_head_unrotated(model):
    rd = model.config.rotary_dim
    k0 = model.forward([17], 0, fresh_keys).kv[0][0]
    k9 = model.forward([17], 9, fresh_keys).kv[0][0]
    assert torch.equal(k0[..., rd:], k9[..., rd:])
    assert (k0[..., :rd] - k9[..., :rd]).abs().max() > 1e-2
    torch.testing.assert_close(k0.norm(dim=-1), k9.norm(dim=-1))   # a rotation


@pytest.mark.parametrize("dtype_model, tol", [("model", 1e-4), ("model64", 1e-10)])
def test_block_forward_over_an_exact_cache_equals_the_prefill_rows(request, dtype_model, tol):
    m = request.getfixturevalue(dtype_model)
    ids = _prompt(70) + [MASK] * 26   # 3 blocks of 32
    full = m.prefill(ids)
    cache = empty_cache(m)
    for start in range(0, 96, 32):
        out = m.block_forward(ids[start:start + 32], start, cache)
        torch.testing.assert_close(out.logits, full.logits[start:start + 32], atol=tol, rtol=0)
        cache = append_kv(cache, out.kv)


def test_prefill_is_block_causal(model):
    ids = _prompt(64)
    base = model.prefill(ids).logits
    changed = list(ids)
    changed[40] = (changed[40] + 1) % 480      # block 1
    logits = model.prefill(changed).logits
    assert torch.equal(logits[:32], base[:32])                     # earlier block: untouched
    assert (logits[32:40] - base[32:40]).abs().max() > 1e-4        # same block, earlier rows: changed


def test_logits_are_not_shifted_and_confident_enough(model):
    ids = _prompt(40) + [MASK] * 24
    conf = torch.softmax(model.prefill(ids).logits[40:].float(), -1).max(-1).values
    assert 2 <= int((conf > 0.95).sum()) < 24    # threshold decoding commits several, not all
    assert model.prefill(ids).logits.shape == (64, 512)
