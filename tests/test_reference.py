"""Tests of the plain-PyTorch Fast-dLLM reference
(vllm_dllm_plugin/testing/reference/) itself.

The engine is compared against this reference token for token, so the
reference has to be right on its own: the commit rules on hand-made confidence
vectors, the cache slicing of the model forward, forward counts, and the early
stop giving the same tokens as a full decode cut afterwards.
"""

from __future__ import annotations

import math

import pytest
import torch

from vllm_dllm_plugin.testing.reference import checks, fast_dllm, tiny
from vllm_dllm_plugin.testing.reference.fast_dllm import (
    Rule,
    factor_rule,
    fixed_schedule,
    generate,
    llada_choose,
    ranked_candidates,
    threshold_rule,
    top_rule,
)
from vllm_dllm_plugin.testing.reference.llada import PREFIX, LLaDA

NEG = float("-inf")
MASK = 255


def c(*values: float) -> torch.Tensor:
    """A float64 confidence vector (``NEG`` = not a candidate)."""
    return torch.tensor(values, dtype=torch.float64)


# --------------------------------------------------------------------------------------
# Commit rules on hand-made confidences
# --------------------------------------------------------------------------------------


def test_ranking_is_by_confidence_then_lower_position():
    assert ranked_candidates(c(0.5, 0.7, NEG, 0.7, 0.9)) == [4, 1, 3, 0]


def test_threshold_is_greater_or_equal():
    # 0.9 exactly is accepted; the value just below is not
    below = math.nextafter(0.9, 0.0)
    assert threshold_rule(c(0.95, 0.9, below, NEG, 0.9), 0.9) == [0, 1, 4]


def test_threshold_always_commits_the_best_candidate():
    assert threshold_rule(c(0.2, 0.5, NEG, 0.5), 0.9) == [1]  # tie -> lower position
    assert threshold_rule(c(NEG, 0.01, NEG), 0.9) == [1]


def test_threshold_never_commits_non_candidates():
    assert threshold_rule(c(NEG, 0.3, NEG, 0.99), 0.0) == [3, 1]


def test_factor_rule_stops_at_first_failing_rank():
    # factor 1: rank thresholds r2 2/3, r3 3/4, r4 4/5
    assert factor_rule(c(0.9, 0.7, 0.5, 0.1), 1.0) == [0, 1]
    assert factor_rule(c(0.3, 0.2, 0.1), 1.0) == [0]  # rank 2 fails, not last
    assert factor_rule(c(0.99, 0.98, 0.97, 0.96), 1.0) == [0, 1, 2, 3]
    assert factor_rule(c(0.01), 1.0) == [0]


def test_factor_rule_quirk_last_rank_failing_is_accepted():
    assert factor_rule(c(0.9, 0.7, 0.1), 1.0) == [0, 1, 2]
    assert factor_rule(c(0.3, 0.2), 1.0) == [0, 1]
    # ranks follow confidence, not position; non-candidates do not count in n
    assert factor_rule(c(0.1, 0.9, NEG, 0.8), 1.0) == [1, 3, 0]


def test_factor_rule_greater_or_equal_edge_and_factor_value():
    edge = 1 - 1.0 / 3  # rank-2 threshold for factor 1
    assert factor_rule(c(0.9, edge, 0.1, 0.0), 1.0) == [0, 1]
    assert factor_rule(c(0.9, math.nextafter(edge, 0.0), 0.1, 0.0), 1.0) == [0]
    # factor 2: thresholds r2 1/3, r3 1/2, r4 3/5
    assert factor_rule(c(0.52, 0.5, 0.55, 0.2, 0.1), 2.0) == [2, 0, 1]
    assert factor_rule(c(0.4, 0.35, 0.55, 0.2, 0.1), 2.0) == [2, 0]


def test_fixed_schedule_counts():
    assert fixed_schedule(8, 3) == [3, 3, 2]
    assert fixed_schedule(7, 2) == [4, 3]
    assert fixed_schedule(32, 32) == [1] * 32
    assert fixed_schedule(5, 8) == [1] * 5  # fewer masks than steps: one per step
    assert fixed_schedule(4, 1) == [4]
    assert fixed_schedule(10, 4) == [3, 3, 2, 2]


def test_top_rule_ties_go_to_lower_position():
    assert top_rule(c(0.5, 0.7, 0.7, NEG, 0.7), 2) == [1, 2]
    assert top_rule(c(NEG, 0.1, 0.1, 0.1), 3) == [1, 2, 3]


def test_rule_options():
    assert Rule.from_options(None, None, None).threshold == 0.9
    with pytest.raises(ValueError):
        Rule.from_options(0.9, 1.0, None)
    with pytest.raises(ValueError):
        Rule.from_options(None, 1.0, 4)
    rule = Rule.from_options(None, None, 3)
    # step i of a block that started with 8 masks commits q_i of the candidates
    assert rule.select(c(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), 0, 8) == [7, 6, 5]
    assert rule.select(c(0.1, 0.2, 0.3, 0.4, 0.5, NEG, NEG, NEG), 2, 8) == [4, 3]


def test_llada_choose_confidence_is_float64_softmax_of_argmax():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, -1.0]], dtype=torch.float32)
    pred, conf = llada_choose(logits, 0.0, None)
    assert pred.tolist() == [1, 0]  # argmax tie -> first index
    assert conf.dtype == torch.float64
    expected = torch.softmax(logits.double(), -1)
    assert torch.equal(conf, torch.stack([expected[0, 1], expected[1, 0]]))


def test_gumbel_keeps_unnoised_confidence():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    pred, conf = llada_choose(logits, 1.0, gen)
    probs = torch.softmax(logits.double(), -1)
    assert torch.equal(conf, probs[torch.arange(4), pred])


# --------------------------------------------------------------------------------------
# The tiny random LLaDA and its cache-shaped forwards
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny.write_tiny_llada(tmp_path_factory.mktemp("tiny_llada"), mask_id=MASK)


@pytest.fixture(scope="module")
def model(ckpt):
    return LLaDA.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def model64(ckpt):
    return LLaDA.from_pretrained(ckpt, dtype=torch.float64)


def canvas_of(prompt_len: int = 12, committed: int = 5, masks: int = 27, seed: int = 0) -> torch.Tensor:
    """prompt ++ some committed tokens ++ masks."""
    tokens = torch.randint(0, MASK, (prompt_len + committed,), generator=torch.Generator().manual_seed(seed))
    return torch.cat([tokens, torch.full((masks,), MASK)])


def test_loader_reads_hub_config(model, ckpt):
    cfg = model.config
    assert (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.n_layers) == (64, 4, 4, 2)
    assert model.mask_id == MASK and model.family == "llada"
    assert model.head.shape == (256, 64) and len(model.blocks) == 2


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("start", [12, 17, 25])
def test_prefix_step_equals_full_forward_rows(ckpt, dtype, tol, start):
    """With the cache taken from the same canvas, the prefix-cache forward of
    x[s:] must reproduce the full forward's rows [s:] (logits and fresh K/V)."""
    checks.check_prefix_step(LLaDA.from_pretrained(ckpt, dtype=dtype), canvas_of(), start, 256, tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("start,end", [(12, 20), (17, 25), (36, 44)])
def test_dual_step_equals_full_forward_rows(ckpt, dtype, tol, start, end):
    checks.check_dual_step(LLaDA.from_pretrained(ckpt, dtype=dtype), canvas_of(), start, end, tol)


def test_cached_steps_really_use_the_cache(model64):
    """A cache from another canvas must change the cached forwards (otherwise
    the slicing would silently be a full forward)."""
    a, b = canvas_of(seed=0), canvas_of(seed=0)
    b[3] = (int(a[3]) + 1) % MASK  # differ inside the prefix
    checks.check_cached_steps_use_the_cache(model64, a, b)


def test_dual_step_writes_fresh_rows_into_cache(model64):
    checks.check_dual_step_writes_fresh_rows_into_cache(model64, canvas_of())


def test_attention_is_bidirectional(model64):
    checks.check_attention_is_bidirectional(model64, canvas_of())


def test_gqa_matches_mha_with_repeated_kv_heads(tmp_path):
    """n_kv_heads=2 must behave as 4 heads whose K/V weights repeat each kv
    head for its group of query heads (query head h reads kv head h // 2)."""
    state = tiny.tiny_llada_state(n_kv_heads=2, seed=3)
    gqa = LLaDA.from_pretrained(tiny.write_tiny_llada(tmp_path / "gqa", n_kv_heads=2, state=state))
    expanded = dict(state)
    for i in range(2):
        for name in ("k_proj", "v_proj"):
            key = f"{PREFIX}blocks.{i}.{name}.weight"
            w = state[key].view(2, 16, 64)
            expanded[key] = w.repeat_interleave(2, dim=0).reshape(64, 64)
    mha = LLaDA.from_pretrained(tiny.write_tiny_llada(tmp_path / "mha", state=expanded))
    x = canvas_of()
    torch.testing.assert_close(gqa.full(x).logits, mha.full(x).logits, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------
# generate(): forward counts, block layout, early stop
# --------------------------------------------------------------------------------------

PROMPT = [5, 77, 3, 140, 9, 21, 60]
MODES = ["none", "prefix", "dual"]


@pytest.mark.parametrize("cache", MODES)
@pytest.mark.parametrize("steps,forwards,commits", [(8, 16, [1] * 16), (4, 8, [2] * 8), (3, 6, [3, 3, 2] * 2)])
def test_fixed_schedule_forward_counts(model, cache, steps, forwards, commits):
    r = generate(model, PROMPT, gen_length=16, block_length=8, cache=cache, steps_per_block=steps, eos_ids=set())
    assert r.forwards == forwards
    assert r.commits == commits
    assert len(r.tokens) == 16 and MASK not in r.tokens


@pytest.mark.parametrize("cache", MODES)
def test_short_last_block(model, cache):
    """gen 20, block 8: blocks of 8, 8, 4; with 3 steps per block the last block
    (4 masks) commits 2, 1, 1."""
    r = generate(model, PROMPT, gen_length=20, block_length=8, cache=cache, steps_per_block=3, eos_ids=set())
    assert r.commits == [3, 3, 2, 3, 3, 2, 2, 1, 1]
    assert r.forwards == 9 and len(r.canvas) == len(PROMPT) + 20
    assert len(r.tokens) == 20 and MASK not in r.tokens


@pytest.mark.parametrize("cache", MODES)
@pytest.mark.parametrize("rule", [dict(), dict(threshold=0.5), dict(factor=1.0), dict(steps_per_block=2)])
def test_every_forward_commits_and_all_positions_fill(model, cache, rule):
    checks.check_every_forward_commits(model, PROMPT, MASK, cache, rule)


def test_threshold_decodes_several_tokens_per_forward(model):
    """The tiny model is tuned so that confidences spread: the 0.9 threshold
    must sometimes commit several tokens at once (else the rules are untested)."""
    checks.check_threshold_decodes_several_tokens(model, PROMPT)


RULES = [dict(), dict(threshold=0.7), dict(factor=1.0), dict(steps_per_block=4), dict(steps_per_block=8)]


@pytest.mark.parametrize("cache", MODES)
@pytest.mark.parametrize("rule", RULES)
def test_stop_early_equals_full_decode_then_cut(model, cache, rule):
    checks.check_stop_early_equals_full_decode_then_cut(model, cache, rule, token_limit=MASK)


def test_eos_ids_default_to_checkpoint_config(tmp_path, model):
    plain = generate(model, PROMPT, gen_length=16, block_length=8, eos_ids=set()).tokens
    eos = plain[3]
    path = tiny.write_tiny_llada(tmp_path, eos_token_id=[eos, 254])
    with_eos = LLaDA.from_pretrained(path)
    assert with_eos.eos_ids == {eos, 254}
    r = generate(with_eos, PROMPT, gen_length=16, block_length=8)
    assert r.tokens == plain[: plain.index(eos) + 1]


def test_mask_logit_suppression(tmp_path):
    """A model that prefers the mask id everywhere still finishes when the mask
    logit is suppressed; without suppression its blocks cannot finish."""
    state = tiny.tiny_llada_state(seed=1)
    head = state[PREFIX + "ff_out.weight"]
    head[MASK] = state[PREFIX + "ln_f.weight"] * 50.0  # aligned with the hidden states' common direction
    m = LLaDA.from_pretrained(tiny.write_tiny_llada(tmp_path, state=state))
    first = m.full(torch.tensor(PROMPT + [MASK] * 8)).logits
    assert (first.argmax(-1) == MASK).any()  # the premise of the test
    r = generate(m, PROMPT, gen_length=8, block_length=8, eos_ids=set())
    assert MASK not in r.tokens and len(r.tokens) == 8
    with pytest.raises(RuntimeError):
        generate(m, PROMPT, gen_length=8, block_length=8, eos_ids=set(), suppress_mask_logit=False)


def test_prompt_with_mask_is_rejected(model):
    checks.check_prompt_with_mask_is_rejected(model, MASK)


def test_sampling_is_reproducible_and_tiny_temperature_is_greedy(model):
    checks.check_sampling_is_reproducible_and_tiny_temperature_is_greedy(model, PROMPT)


def test_family_switches_are_pluggable(model):
    """A Dream-like family (shifted logits, refresh commits the first block
    token) runs through the same loop: each refresh commits exactly one token."""
    dreamish = fast_dllm.Family("dreamish", llada_choose, shift_logits=True, refresh_commits_first=True)
    for cache in MODES:
        r = generate(model, PROMPT, gen_length=16, block_length=8, cache=cache, eos_ids=set(), family=dreamish)
        assert len(r.tokens) == 16 and MASK not in r.tokens
        # the refresh of each block commits one token; the block then needs >= 1 more step
        assert r.commits[0] == 1
    shifted = torch.tensor([[0.0], [1.0], [2.0]])
    assert fast_dllm.shift_right(shifted).flatten().tolist() == [0.0, 0.0, 1.0]
