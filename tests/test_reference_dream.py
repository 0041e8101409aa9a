"""Tests of the plain-PyTorch Dream reference (vllm_dllm_plugin/testing/reference/dream.py)
and of the Dream decoding family in its fast_dllm.py.

Dream differs from LLaDA in the model (Qwen2 block with q/k/v biases, GQA,
rotary in the model dtype) and in decoding: logits shifted right by one within
each forward's rows, the refresh committing only the block's first position,
a confidence taken from a model-dtype softmax, and a fixed schedule that
starts after the refresh's commit.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vllm_dllm_plugin.testing.reference import checks, fast_dllm
from vllm_dllm_plugin.testing.reference.dream import Dream
from vllm_dllm_plugin.testing.reference.fast_dllm import DREAM, dream_choose, generate, shift_right, threshold_rule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = 512
MASK = VOCAB - 1  # <|mask|>, last id of the tiny Dream tokenizer
EOS = VOCAB - 24  # <|endoftext|>
PROMPT = [5, 77, 3, 140, 9, 21, 60]
MODES = ["none", "prefix", "dual"]



@pytest.fixture(scope="module")
def ckpt(dream_dir):
    """The tiny Dream checkpoint of conftest (``write_dream_checkpoint``, seed 0)."""
    return dream_dir


@pytest.fixture(scope="module")
def model(dream_ref):
    return dream_ref


@pytest.fixture(scope="module")
def model64(ckpt):
    return Dream.from_pretrained(ckpt, dtype=torch.float64)


def canvas_of(prompt_len: int = 12, committed: int = 5, masks: int = 27, seed: int = 0) -> torch.Tensor:
    """prompt ++ some committed tokens ++ masks."""
    tokens = torch.randint(0, EOS, (prompt_len + committed,), generator=torch.Generator().manual_seed(seed))
    return torch.cat([tokens, torch.full((masks,), MASK)])


def suppressed(logits: torch.Tensor) -> torch.Tensor:
    out = logits.clone()
    out[:, MASK] = float("-inf")
    return out


# --------------------------------------------------------------------------------------
# The model and its cache-shaped forwards
# --------------------------------------------------------------------------------------


def test_loader_reads_hub_config(model):
    c = model.config
    assert (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.num_hidden_layers) == (128, 4, 2, 2)
    assert (c.head_dim, c.rope_theta, c.rms_norm_eps) == (32, 1e6, 1e-6)
    assert model.mask_id == MASK and model.family == "dream" and fast_dllm.FAMILIES["dream"] is DREAM
    assert model.eos_ids == {EOS}
    assert model.head.shape == (VOCAB, 128) and len(model.layers) == 2
    assert model.dtype == torch.float32


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("start", [12, 17, 25])
def test_prefix_step_equals_full_forward_rows(ckpt, dtype, tol, start):
    model = Dream.from_pretrained(ckpt, dtype=dtype)
    checks.check_prefix_step(model, canvas_of(), start, VOCAB, tol, kv_heads=2)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("start,end", [(12, 20), (17, 25), (36, 44)])
def test_dual_step_equals_full_forward_rows(ckpt, dtype, tol, start, end):
    checks.check_dual_step(Dream.from_pretrained(ckpt, dtype=dtype), canvas_of(), start, end, tol)


def test_cached_steps_really_use_the_cache(model64):
    a, b = canvas_of(seed=0), canvas_of(seed=0)
    b[3] = (int(a[3]) + 1) % EOS
    checks.check_cached_steps_use_the_cache(model64, a, b)


def test_dual_step_writes_fresh_rows_into_cache(model64):
    checks.check_dual_step_writes_fresh_rows_into_cache(model64, canvas_of())


def test_attention_is_bidirectional(model64):
    checks.check_attention_is_bidirectional(model64, canvas_of())


def _rewrite(src, dst, tensors: dict, **config_changes):
    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config_changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst / "model.safetensors"))
    return dst


def test_gqa_matches_mha_with_repeated_kv_heads(ckpt, tmp_path):
    """2 kv heads must act as 4 whose K/V weights and biases repeat each kv
    head for its group of query heads (query head h reads kv head h // 2)."""
    tensors = load_file(str(ckpt / "model.safetensors"))
    expanded = dict(tensors)
    for i in range(2):
        for name in ("k_proj", "v_proj"):
            w = f"model.layers.{i}.self_attn.{name}.weight"
            b = f"model.layers.{i}.self_attn.{name}.bias"
            expanded[w] = tensors[w].view(2, 32, 128).repeat_interleave(2, dim=0).reshape(128, 128)
            expanded[b] = tensors[b].view(2, 32).repeat_interleave(2, dim=0).reshape(128)
    mha = Dream.from_pretrained(_rewrite(ckpt, tmp_path / "mha", expanded, num_key_value_heads=4))
    gqa = Dream.from_pretrained(ckpt)
    x = canvas_of()
    torch.testing.assert_close(gqa.full(x).logits, mha.full(x).logits, rtol=0, atol=1e-4)


def test_biases_are_applied(ckpt, tmp_path):
    tensors = load_file(str(ckpt / "model.safetensors"))
    no_bias = {k: (torch.zeros_like(v) if k.endswith("q_proj.bias") else v) for k, v in tensors.items()}
    other = Dream.from_pretrained(_rewrite(ckpt, tmp_path / "nb", no_bias))
    x = canvas_of()
    assert not torch.allclose(other.full(x).logits, Dream.from_pretrained(ckpt).full(x).logits, atol=1e-3)


def test_bfloat16_model_computes_in_bfloat16(ckpt):
    m = Dream.from_pretrained(ckpt, dtype=torch.bfloat16)
    out = m.full(canvas_of())
    assert out.logits.dtype == torch.bfloat16 and out.kv[0][0].dtype == torch.bfloat16
    r = generate(m, PROMPT, gen_length=16, block_length=8, cache="dual", eos_ids=set())
    assert len(r.tokens) == 16 and MASK not in r.tokens


# --------------------------------------------------------------------------------------
# The Dream choice of (prediction, confidence)
# --------------------------------------------------------------------------------------


def test_dream_choose_is_model_dtype_softmax_max():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(6, 50, generator=g) * 4).to(dtype)
        pred, conf = dream_choose(logits, 0.0, None)
        probs = torch.softmax(logits, dim=-1)
        assert conf.dtype == dtype
        assert torch.equal(conf, probs.max(-1).values) and torch.equal(pred, probs.max(-1).indices)
    # ties in the (rounded) probabilities go to the lower token id
    tied = torch.tensor([[0.0, 2.0, 2.0, 1.0]], dtype=torch.bfloat16)
    assert dream_choose(tied, 0.0, None)[0].tolist() == [1]


def test_dream_sampling_keeps_unnoised_model_dtype_confidence():
    logits = (torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3).to(torch.bfloat16)
    pred, conf = dream_choose(logits, 1.0, torch.Generator().manual_seed(1))
    probs = torch.softmax(logits, dim=-1)
    assert conf.dtype == torch.bfloat16 and torch.equal(conf, probs[torch.arange(4), pred])


def test_threshold_is_compared_in_the_model_dtype():
    """0.9 rounds to 0.8984375 in bfloat16: a bf16 confidence of 0.8984375
    clears the 0.9 threshold, the same value in float32 does not."""
    bf = torch.tensor([0.95, 0.8984375, 0.88], dtype=torch.bfloat16)
    assert threshold_rule(bf, 0.9) == [0, 1]
    assert threshold_rule(bf.to(torch.float32), 0.9) == [0]


# --------------------------------------------------------------------------------------
# Shift and first-commit behaviour of generate()
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", MODES)
def test_refresh_commits_the_first_position_from_the_previous_row(model, cache):
    """Every block's refresh commits exactly its first position s, with the
    argmax of full-forward row s - 1 on the canvas as it was at the block start."""
    lp, block, gen = len(PROMPT), 8, 24
    r = generate(model, PROMPT, gen_length=gen, block_length=block, cache=cache, eos_ids=set(), threshold=0.5)
    final = torch.tensor(r.canvas)
    refresh_index = 0
    for b in range(gen // block):
        s = lp + b * block
        at_start = torch.cat([final[:s], torch.full((lp + gen - s,), MASK)])
        row = suppressed(model.full(at_start).logits)[s - 1]
        assert int(final[s]) == int(row.argmax())
        assert r.commits[refresh_index] == 1
        # the steps of this block: the refresh plus as many as commit the rest
        done, n = 1, 1
        while done < block:
            done += r.commits[refresh_index + n]
            n += 1
        assert done == block
        refresh_index += n
    assert refresh_index == len(r.commits) == r.forwards


@pytest.mark.parametrize("cache", MODES)
def test_cached_step_uses_rows_shifted_within_the_step(model, cache):
    """One step per block after the refresh (steps_per_block=1): that step
    commits positions s+1..e-1 at once, position s+j from row j-1 of the
    step's own forward (prefix: x[s:], dual: x[s:e]; none: the full canvas)."""
    lp, block = len(PROMPT), 8
    r = generate(model, PROMPT, gen_length=block, block_length=block, cache=cache, eos_ids=set(), steps_per_block=1)
    assert r.commits == [1, block - 1] and r.forwards == 2
    s, e = lp, lp + block
    canvas0 = torch.tensor(PROMPT + [MASK] * block)
    refresh = model.full(canvas0)
    after_refresh = canvas0.clone()
    after_refresh[s] = r.canvas[s]
    if cache == "prefix":
        rows = model.with_prefix(after_refresh, s, [(k[:, :s], v[:, :s]) for k, v in refresh.kv]).logits
    elif cache == "dual":
        rows = model.with_dual(after_refresh, s, e, [(k.clone(), v.clone()) for k, v in refresh.kv]).logits
    else:
        rows = model.full(after_refresh).logits[s:]
    rows = suppressed(rows)
    want = rows[: block - 1].argmax(-1)  # position s+j <- step row j-1, j = 1..7
    assert r.canvas[s + 1 : e] == want.tolist()
    unshifted = rows[1:block].argmax(-1)
    assert unshifted.tolist() != want.tolist()  # the test can tell the shift apart


def test_shift_right_keeps_row_zero():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    assert shift_right(x).flatten().tolist() == [0.0, 0.0, 1.0, 2.0]


# --------------------------------------------------------------------------------------
# Forward counts, schedule, early stop
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", MODES)
@pytest.mark.parametrize(
    "steps,forwards,commits",
    [
        (8, 16, [1] * 16),  # m' = 7 < 8 steps: one token per step
        (7, 16, [1] * 16),
        (4, 10, [1, 2, 2, 2, 1] * 2),  # refresh, then 7 over 4 steps
        (3, 8, [1, 3, 2, 2] * 2),
        (1, 4, [1, 7] * 2),
    ],
)
def test_fixed_schedule_starts_after_the_refresh(model, cache, steps, forwards, commits):
    r = generate(model, PROMPT, gen_length=16, block_length=8, cache=cache, steps_per_block=steps, eos_ids=set())
    assert r.forwards == forwards and r.commits == commits
    assert len(r.tokens) == 16 and MASK not in r.tokens


@pytest.mark.parametrize("cache", MODES)
def test_short_blocks(model, cache):
    """gen 20, block 8, 3 steps: blocks of 8, 8, 4 -> [1,3,2,2] twice, then the
    4-block's refresh and 3 masks over 3 steps. Blocks of one position are done
    by their refresh alone."""
    r = generate(model, PROMPT, gen_length=20, block_length=8, cache=cache, steps_per_block=3, eos_ids=set())
    assert r.commits == [1, 3, 2, 2, 1, 3, 2, 2, 1, 1, 1, 1] and r.forwards == 12
    r = generate(model, PROMPT, gen_length=5, block_length=1, cache=cache, eos_ids=set())
    assert r.commits == [1] * 5 and r.forwards == 5 and MASK not in r.tokens
    r = generate(model, PROMPT, gen_length=9, block_length=8, cache=cache, steps_per_block=2, eos_ids=set())
    assert r.commits == [1, 4, 3, 1] and r.forwards == 4


@pytest.mark.parametrize("cache", MODES)
@pytest.mark.parametrize("rule", [dict(), dict(threshold=0.5), dict(factor=1.0), dict(steps_per_block=2)])
def test_every_forward_commits_and_all_positions_fill(model, cache, rule):
    checks.check_every_forward_commits(model, PROMPT, MASK, cache, rule)


def test_threshold_decodes_several_tokens_per_forward(model):
    """The tiny checkpoint's confidences spread, so the 0.9 threshold sometimes
    commits several tokens in one step (else the rules would go untested)."""
    checks.check_threshold_decodes_several_tokens(model, PROMPT)


RULES = [dict(), dict(threshold=0.7), dict(factor=1.0), dict(steps_per_block=4), dict(steps_per_block=8)]


@pytest.mark.parametrize("cache", MODES)
@pytest.mark.parametrize("rule", RULES)
def test_stop_early_equals_full_decode_then_cut(model, cache, rule):
    checks.check_stop_early_equals_full_decode_then_cut(model, cache, rule, token_limit=EOS)


def test_eos_ids_merge_config_and_generation_config(ckpt, tmp_path, model):
    plain = generate(model, PROMPT, gen_length=16, block_length=8, eos_ids=set()).tokens
    eos = plain[3]
    dst = tmp_path / "eos"
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        (dst / name).write_bytes((ckpt / name).read_bytes())
    gen_cfg = json.loads((ckpt / "generation_config.json").read_text())
    gen_cfg["eos_token_id"] = [eos, EOS + 2]  # e.g. adding <|im_end|>
    (dst / "generation_config.json").write_text(json.dumps(gen_cfg))
    m = Dream.from_pretrained(dst)
    assert m.eos_ids == {EOS, eos, EOS + 2}
    assert generate(m, PROMPT, gen_length=16, block_length=8).tokens == plain[: plain.index(eos) + 1]


def test_prompt_with_mask_is_rejected(model):
    checks.check_prompt_with_mask_is_rejected(model, MASK)


def test_sampling_is_reproducible_and_tiny_temperature_is_greedy(model):
    checks.check_sampling_is_reproducible_and_tiny_temperature_is_greedy(model, PROMPT)
