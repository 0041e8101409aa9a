"""The float64 arbiter of the parity checks (vllm_dllm_plugin.testing.parity):
it accepts an engine output that differs from the float32 reference only if
the float64 reference gives exactly that output, and fails otherwise.

A real near-tie stands in for a machine whose kernels round differently: on
the tiny Dream checkpoint, a threshold set to a confidence the float64 loop
computes makes the float32 and float64 references decide differently.  No
engine is started; the fake engine outputs go through the same
``engine_utils.assert_reference`` every parity test calls.
"""

import dataclasses
import warnings

import pytest
import torch

from engine_utils import assert_reference
from vllm_dllm_plugin.testing.parity import ARBITRATED, ArbitratedWarning, float64_twin
from vllm_dllm_plugin.testing.reference.dream import Dream
from vllm_dllm_plugin.testing.reference.fast_dllm import DREAM, dream_choose, generate

SETTINGS = dict(max_tokens=16, eos_ids=set(), block_length=8, cache="prefix")


def run(model, prompt, threshold):
    return generate(model, prompt, gen_length=SETTINGS["max_tokens"], block_length=8,
                    cache="prefix", threshold=threshold, eos_ids=set())


@pytest.fixture(scope="module")
def near_tie(dream_ref):
    """(prompt, threshold, float32 result, float64 result) with the two
    results different: the threshold is a confidence of the float64 loop, so
    float64 passes it (``>=``) and float32, rounded, may not."""
    exact = float64_twin(dream_ref)
    seen = []

    def recording_choose(logits, temperature, generator):
        pred, conf = dream_choose(logits, temperature, generator)
        seen.extend(conf.tolist())
        return pred, conf

    family = dataclasses.replace(DREAM, choose=recording_choose)
    for seed in range(8):
        prompt = torch.randint(0, 480, (9,), generator=torch.Generator().manual_seed(seed)).tolist()
        seen.clear()
        generate(exact, prompt, gen_length=SETTINGS["max_tokens"], block_length=8, cache="prefix",
                 threshold=0.7, eos_ids=set(), family=family)
        for threshold in sorted({c for c in seen if 0.05 < c < 0.999})[:40]:
            r32, r64 = run(dream_ref, prompt, threshold), run(exact, prompt, threshold)
            if (r32.tokens, r32.forwards) != (r64.tokens, r64.forwards):
                return prompt, threshold, r32, r64
    pytest.fail("no float32/float64 near-tie found: the arbiter tests would prove nothing")


def check(got, got_forwards, dream_ref, near_tie):
    prompt, threshold, _, _ = near_tie
    return assert_reference(got, dream_ref, prompt, what="fake engine", got_forwards=got_forwards,
                            threshold=threshold, **SETTINGS)


def test_output_of_the_float64_reference_is_accepted_and_reported(dream_ref, near_tie):
    _, _, _, r64 = near_tie
    before = len(ARBITRATED)
    with pytest.warns(ArbitratedWarning, match="engine == float64 reference"):
        matched = check(r64.tokens, r64.forwards, dream_ref, near_tie)
    assert matched.tokens == r64.tokens and matched.forwards == r64.forwards
    assert len(ARBITRATED) == before + 1 and "fake engine" in ARBITRATED[-1]


def test_output_of_the_float32_reference_needs_no_arbiter(dream_ref, near_tie):
    _, _, r32, _ = near_tie
    before = len(ARBITRATED)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArbitratedWarning)
        assert check(r32.tokens, r32.forwards, dream_ref, near_tie).tokens == r32.tokens
    assert len(ARBITRATED) == before


def test_output_unlike_both_references_fails(dream_ref, near_tie):
    _, _, r32, r64 = near_tie
    got = list(r64.tokens)
    got[-1] = next(t for t in range(480) if t not in (r32.tokens[-1], r64.tokens[-1]))
    with pytest.raises(AssertionError, match="float64 reference does not explain it"):
        check(got, None, dream_ref, near_tie)


def test_float64_tokens_with_another_forward_count_fail(dream_ref, near_tie):
    _, _, _, r64 = near_tie
    with pytest.raises(AssertionError, match="forward count differs"):
        check(r64.tokens, r64.forwards + 1, dream_ref, near_tie)


def test_no_float64_rerun_for_a_reference_that_is_not_float32(dream_dir, near_tie):
    """The arbiter is for float32 rounding only: a bf16 comparison that
    differs fails at once."""
    prompt, threshold, _, _ = near_tie
    bf16 = Dream.from_pretrained(dream_dir, torch.bfloat16)
    want = run(bf16, prompt, threshold)
    got = list(want.tokens)
    got[0] = next(t for t in range(480) if t != got[0])
    with pytest.raises(AssertionError) as failure:
        assert_reference(got, bf16, prompt, what="bf16", threshold=threshold, **SETTINGS)
    assert "float64" not in str(failure.value)
