"""The plugin's batched decision rules, on hand-made confidence rows."""

import math

import torch

from vllm_dllm_plugin.decoding.confidence import llada_predict
from vllm_dllm_plugin.decoding.rules import (
    RULE_FACTOR,
    RULE_FIXED,
    RULE_THRESHOLD,
    commit_mask,
    num_to_commit,
    sort_candidates,
)

NEG = float("-inf")


def decide(rows, rule, value, masks_at_start=None, step=0):
    conf = torch.tensor(rows, dtype=torch.float64)
    n = (conf > NEG).sum(-1)
    r = len(rows)
    sorted_conf, index = sort_candidates(conf)
    count = num_to_commit(
        sorted_conf, n, torch.full((r,), rule), torch.full((r,), float(value), dtype=torch.float64),
        torch.tensor(masks_at_start if masks_at_start is not None else n.tolist()),
        torch.full((r,), step))
    return commit_mask(index, count).tolist()


def test_threshold_is_greater_or_equal():
    assert decide([[0.9, 0.5, 0.95, NEG]], RULE_THRESHOLD, 0.9) == [[True, False, True, False]]


def test_threshold_always_commits_the_best():
    assert decide([[0.2, 0.4, 0.3]], RULE_THRESHOLD, 0.9) == [[False, True, False]]


def test_ties_go_to_the_lower_position():
    assert decide([[0.5, 0.7, 0.7, 0.7]], RULE_THRESHOLD, 0.99) == [[False, True, False, False]]


def test_non_candidates_are_never_committed():
    assert decide([[NEG, 0.99, NEG, 0.1]], RULE_THRESHOLD, 0.05) == [[False, True, False, True]]


def test_rows_are_independent():
    got = decide([[0.95, 0.92, 0.1], [0.3, 0.2, 0.1]], RULE_THRESHOLD, 0.9)
    assert got == [[True, True, False], [True, False, False]]


def test_factor_stops_at_first_failing_rank():
    # bars for f=1: rank1 -, rank2 1-1/3=.667, rank3 .75, rank4 .8, rank5 .833
    conf = [0.99, 0.7, 0.74, 0.95, 0.1]   # sorted: .99 .95 .74(<.75 fails) ...
    assert decide([conf], RULE_FACTOR, 1.0) == [[True, False, False, True, False]]


def test_factor_quirk_accepts_a_failing_last_rank():
    # sorted: .99 .95 then last rank 3 fails (.5 < .75) -> accepted anyway
    assert decide([[0.5, 0.99, 0.95]], RULE_FACTOR, 1.0) == [[True, True, True]]
    # with four candidates the failing rank 3 is not last: stop there
    assert decide([[0.5, 0.99, 0.95, 0.4]], RULE_FACTOR, 1.0) == [[False, True, True, False]]


def test_fixed_schedule_counts():
    # m=8 masks, k=3 steps: 3, 3, 2
    for step, want in ((0, 3), (1, 3), (2, 2)):
        conf = [[0.5] * 8]
        got = decide(conf, RULE_FIXED, 3, masks_at_start=[8], step=step)
        assert sum(got[0]) == want


def test_fixed_schedule_caps_steps_at_masks():
    # a 2-position last block with steps_per_block=4: one token per step, 2 steps
    assert sum(decide([[0.5, 0.6]], RULE_FIXED, 4, masks_at_start=[2], step=0)[0]) == 1


def test_llada_confidence_is_float64_softmax_of_argmax():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [0.0, 0.0, 9.0, 0.0]])
    pred, conf = llada_predict(logits, mask_token_id=3)
    assert pred.tolist() == [1, 2]
    want = torch.softmax(logits[:, :3].double(), -1).max(-1).values
    assert torch.allclose(conf, want, rtol=0, atol=1e-15)


def test_mask_id_is_never_predicted():
    logits = torch.tensor([[0.0, 0.0, 50.0]])
    pred, conf = llada_predict(logits, mask_token_id=2)
    assert pred.item() != 2 and math.isclose(conf.item(), 0.5)


def test_dream_compares_in_the_model_dtype():
    """A bf16 confidence vs 0.9 behaves as bf16(0.9) = 0.8984375 (Fast-dLLM:
    tensor >= python float), not as the float64 0.9."""
    conf = torch.tensor([[0.99, 0.8984375, 0.5]], dtype=torch.float64)
    args = (torch.tensor([3]), torch.tensor([RULE_THRESHOLD]),
            torch.tensor([0.9], dtype=torch.float64), torch.tensor([3]), torch.tensor([0]))
    sorted_conf, index = sort_candidates(conf)
    as_f64 = num_to_commit(sorted_conf, *args)
    as_bf16 = num_to_commit(sorted_conf, *args, compare_dtype=torch.bfloat16)
    assert (as_f64.item(), as_bf16.item()) == (1, 2)


def test_dream_confidence_is_model_dtype_softmax_max():
    from vllm_dllm_plugin.decoding.confidence import dream_predict

    logits = torch.tensor([[1.0, 3.0, 2.0, 9.0]], dtype=torch.bfloat16)
    pred, conf = dream_predict(logits, mask_token_id=3)
    assert pred.tolist() == [1] and conf.dtype == torch.bfloat16
    assert conf.item() == torch.softmax(logits[:, :3], -1).max().item()


# -- the step-schedule rules (SDAR, LLaDA2.x) ----------------------------------


def test_step_quota_sums_to_the_block_and_front_loads_the_remainder():
    from vllm_dllm_plugin.decoding.rules import step_quota

    for block in (4, 32):
        for steps in range(1, block + 1):
            quotas = [step_quota(block, steps, s) for s in range(steps)]
            assert sum(quotas) == block
            assert quotas == sorted(quotas, reverse=True) and quotas[0] - quotas[-1] <= 1
    assert [step_quota(4, 3, s) for s in range(3)] == [2, 1, 1]


def test_threshold_with_a_quota_commits_the_passing_ones_or_the_quota_best():
    from vllm_dllm_plugin.decoding.rules import RULE_QUOTA, RULE_THRESHOLD

    conf = torch.tensor([[0.99, 0.97, 0.5, 0.4], [0.99, 0.6, 0.5, 0.4],
                         [0.9, 0.8, 0.7, float("-inf")]], dtype=torch.float64)
    sorted_conf, index = sort_candidates(conf)
    n = torch.tensor([4, 4, 3])
    zeros = torch.zeros(3, dtype=torch.int64)
    rule = torch.full((3,), RULE_THRESHOLD)
    count = num_to_commit(sorted_conf, n, rule, torch.full((3,), 0.95, dtype=torch.float64),
                          zeros, zeros, strict_threshold=True, quota=torch.tensor([2, 2, 5]))
    # two pass and the quota is 2; one passes (quota 2 -> the 2 best); quota capped at 3
    assert count.tolist() == [2, 2, 3]
    count = num_to_commit(sorted_conf, n, torch.full((3,), RULE_QUOTA),
                          torch.zeros(3, dtype=torch.float64), zeros, zeros,
                          quota=torch.tensor([1, 3, 2]))
    assert count.tolist() == [1, 3, 2]


def test_positional_ranking_takes_the_first_candidates():
    conf = torch.tensor([[float("-inf"), 0.2, 0.9, 0.5], [float("-inf"), 0.2, 0.9, 0.5]],
                        dtype=torch.float64)
    _, index = sort_candidates(conf, torch.tensor([True, False]))
    mask = commit_mask(index, torch.tensor([2, 2]))
    assert mask[0].tolist() == [False, True, True, False]   # positions 1, 2
    assert mask[1].tolist() == [False, False, True, True]   # the two most confident


def test_edits_need_a_different_prediction_over_the_bar():
    from vllm_dllm_plugin.decoding.rules import edits

    conf = torch.tensor([0.95, 0.95, 0.5, 0.95], dtype=torch.float32)
    pred = torch.tensor([7, 8, 9, 4])
    current = torch.tensor([7, 1, 1, 4])
    editable = torch.tensor([True, True, True, False])
    bar = torch.tensor([0.9, 0.9, 0.9, 0.9], dtype=torch.float64)
    assert edits(conf, pred, current, editable, bar, torch.float32).tolist() == [
        False, True, False, False]
    never = torch.full((4,), float("inf"), dtype=torch.float64)
    assert not edits(conf, pred, current, editable, never, torch.float32).any()


def test_filtered_predict_confidence_dtype_and_top_k():
    from vllm_dllm_plugin.decoding.confidence import filtered_predict, float32_filtered_predict

    logits = torch.tensor([[2.0, 1.0, 0.5, 3.0, -1.0]], dtype=torch.bfloat16)
    pred, conf = filtered_predict(logits, mask_token_id=3)
    assert pred.tolist() == [0] and conf.dtype == torch.bfloat16       # the mask id is never chosen
    pred32, conf32 = float32_filtered_predict(logits, 3)
    assert pred32.tolist() == [0] and conf32.dtype == torch.float32
    want = torch.softmax(torch.tensor([2.0, 1.0, 0.5, float("-inf"), -1.0]), -1)[0]
    assert abs(float(conf32) - float(want)) < 1e-6
    # top_k = 2 keeps tokens 0 and 1 only, whatever the draw
    rows = logits.float().repeat(64, 1)
    uniforms = torch.linspace(0.001, 0.999, 64, dtype=torch.float64)
    pred, conf = filtered_predict(rows, 3, torch.ones(64, dtype=torch.float64), uniforms,
                                  torch.ones(64, dtype=torch.float64),
                                  torch.full((64,), 2))
    assert set(pred.tolist()) == {0, 1}
    assert torch.allclose(conf[pred == 0], torch.softmax(torch.tensor([2.0, 1.0]), -1)[0])
