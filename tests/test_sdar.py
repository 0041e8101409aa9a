"""SDAR (block diffusion on Qwen3, blocks of 4) in the engine: token-exact
parity with the plain-PyTorch reference of the published loop
(vllm_dllm_plugin/testing/reference/sdar_loop.py), forward counts included.

Every remasking strategy, thresholds and step counts, prompt lengths and
``max_tokens`` around block boundaries, early stop, staggered arrivals,
preemption and abort, the tied layout and TP=2.
"""

import os

import pytest

from constrained_checks import (
    check_constrained_abort,
    check_constrained_batch,
    check_constrained_preemption,
    check_constrained_staggered,
    several_tokens_per_step,
)
from engine_utils import assert_option_refused, check_in_own_engine, make_llm
from stepped_checks import (
    check_abort,
    check_early_stop,
    check_forward_kinds,
    check_preemption,
    check_prefix_cache_hits,
    check_seeded_sampling,
    check_staggered,
    check_stepped_batch,
)
from logprob_checks import check_logprobs_batch, check_logprobs_preemption
from test_parity import check_min_tokens, random_prompts

BLOCK = 4
GEN = 16
PROMPT_LENGTHS = (1, 3, 4, 5, 8, 13, 33)
VOCAB = 480

CASES = {
    "dynamic-0.85": dict(),
    "dynamic-0.5": dict(threshold=0.5),
    "dynamic-1.0": dict(threshold=1.0),
    "dynamic-S2-0.7": dict(steps_per_block=2, threshold=0.7),
    "static-S4": dict(remasking="low_confidence_static"),
    "static-S2": dict(remasking="low_confidence_static", steps_per_block=2),
    "static-S3": dict(remasking="low_confidence_static", steps_per_block=3),
    "sequential-S4": dict(remasking="sequential"),
    "sequential-S1": dict(remasking="sequential", steps_per_block=1),
}


def sdar_reference(ref, prompt, *, max_tokens, eos_ids, threshold=0.85, steps_per_block=None,
                   remasking="low_confidence_dynamic", min_tokens=0, grammar=None,
                   logprobs=False):
    from vllm_dllm_plugin.testing.reference.sdar_loop import generate

    return generate(ref, prompt, max_tokens=max_tokens, steps=steps_per_block,
                    remasking=remasking, threshold=threshold, eos_ids=eos_ids,
                    min_tokens=min_tokens, grammar=grammar, logprobs=logprobs)


@pytest.fixture(scope="module")
def llm(sdar_dir):
    # Prefix caching off: these tests reuse prompts, and a hit would skip a
    # prefill forward (the v2 prefix-cache tests count those).
    return make_llm(sdar_dir, enable_prefix_caching=False)


@pytest.mark.parametrize("case", CASES)
def test_sdar_batch_parity(llm, sdar_ref, sdar_eos, case):
    prompts = random_prompts(PROMPT_LENGTHS, seed=41, vocab=VOCAB)
    check_stepped_batch(llm, sdar_ref, sdar_eos, prompts, GEN, sdar_reference, **CASES[case])


def test_sdar_threshold_commits_several_tokens_per_forward(llm, sdar_ref, sdar_eos):
    """The checkpoint is confident enough that the dynamic cases commit more
    than the quota sometimes (else the threshold would be untested)."""
    prompts = random_prompts(PROMPT_LENGTHS, seed=41, vocab=VOCAB)
    results = check_stepped_batch(llm, sdar_ref, sdar_eos, prompts, GEN, sdar_reference,
                                  threshold=0.5)
    assert max(max(r.commits) for r in results) > 1


@pytest.mark.parametrize("prompt_len", [5, 8])
def test_sdar_max_tokens_around_block_boundaries(llm, sdar_ref, sdar_eos, prompt_len):
    prompt = random_prompts((prompt_len,), seed=42, vocab=VOCAB)[0]
    for max_tokens in (1, 2, 3, 4, 5, 7, 8, 9):
        check_stepped_batch(llm, sdar_ref, sdar_eos, [prompt], max_tokens, sdar_reference,
                            threshold=0.7)


def test_sdar_forwards_by_kind(llm, sdar_ref, sdar_eos):
    """One prefill for the prompt's whole blocks, one commit forward per
    finished block the request goes on after, the rest denoising: the
    counters see exactly the reference's tally."""
    for prompt_len, max_tokens in ((3, 9), (4, 8), (13, 5)):
        prompt = random_prompts((prompt_len,), seed=43, vocab=VOCAB)[0]
        check_forward_kinds(llm, sdar_ref, sdar_eos, sdar_reference, prompt, max_tokens)


def test_sdar_early_stop(llm, sdar_ref, sdar_eos):
    prompts = random_prompts((5, 3, 9), seed=44, vocab=VOCAB)
    check_early_stop(llm, sdar_ref, sdar_eos, sdar_reference, prompts, 24, (1, 3, 6),
                     threshold=0.7)


def test_sdar_staggered_arrivals(llm, sdar_ref, sdar_eos):
    settings = [CASES["dynamic-0.85"], CASES["static-S2"], CASES["sequential-S4"],
                CASES["dynamic-0.5"], CASES["static-S3"]]
    prompts = random_prompts((5, 12, 33, 4, 7), seed=45, vocab=VOCAB)
    check_staggered(llm, sdar_ref, sdar_eos, sdar_reference, prompts, settings, 20, "sdar")


def test_sdar_preempted_requests_resume_with_the_same_tokens(llm, sdar_ref, sdar_eos):
    prompts = random_prompts((5, 13, 30), seed=46, vocab=VOCAB)
    check_preemption(llm, sdar_ref, sdar_eos, sdar_reference, prompts, 30, (2, 9),
                     "sdar-preempt", threshold=0.7)


def test_sdar_abort_mid_block(llm, sdar_ref, sdar_eos):
    prompts = random_prompts((6, 10, 27), seed=47, vocab=VOCAB)
    check_abort(llm, sdar_ref, sdar_eos, sdar_reference, prompts, 24, "sdar-abort",
                remasking="low_confidence_static")


def test_sdar_requests_without_sampling_fields_are_greedy(llm):
    """generation_config.json samples (T 0.6, top-k 20, top-p 0.95): not
    applied; its two end ids are."""
    defaults = llm.get_default_sampling_params()
    assert defaults.temperature == 0.0
    assert defaults.top_p == 1.0 and defaults.top_k in (0, -1)


def test_sdar_seeded_sampling(llm):
    check_seeded_sampling(llm, 13, VOCAB)


@pytest.mark.parametrize("options, field", [
    ({"diffusion_cache": "dual"}, "diffusion_cache"),
    ({"diffusion_block_length": 8}, "diffusion_block_length"),
    ({"diffusion_factor": 1.0}, "diffusion_factor"),
    ({"diffusion_sub_block_length": 2}, "diffusion_sub_block_length"),
    ({"diffusion_steps_per_block": 5}, "diffusion_steps_per_block"),
    ({"diffusion_steps_per_block": 0}, "diffusion_steps_per_block"),
    ({"diffusion_remasking": "entropy_bounded"}, "diffusion_remasking"),
    ({"diffusion_remasking": "sequential", "diffusion_threshold": 0.9}, "diffusion_threshold"),
    ({"diffusion_editing_threshold": 0.9}, "diffusion_editing_threshold"),
    ({"diffusion_max_post_steps": 3}, "diffusion_max_post_steps"),
])
def test_sdar_options_it_cannot_follow_are_errors(llm, options, field):
    assert_option_refused(llm, options, field)


def test_sdar_tied_checkpoint(sdar_tied_dir, sdar_tied_ref, sdar_tied_eos):
    """Qwen3-1.7B's layout (tied head), and the hub config without block_size
    and mask_token_id keys (its own process: a second engine)."""
    prompts = random_prompts((5, 8, 13), seed=48, vocab=VOCAB)
    cases = [CASES["dynamic-0.85"], CASES["static-S2"], CASES["sequential-S4"]]
    check_in_own_engine(sdar_tied_dir, sdar_tied_ref, sdar_tied_eos, sdar_reference, prompts,
                        cases, 20, tp=1, what="tied")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TP=2 needs two cores")
def test_sdar_tp2_equals_reference(sdar_dir, sdar_ref, sdar_eos):
    cases = list(CASES.values())[:len(PROMPT_LENGTHS)]
    cases += [dict(CASES["dynamic-0.5"], grammar="json"), dict(CASES["static-S2"], grammar="regex")]
    prompts = random_prompts(PROMPT_LENGTHS + (7, 18), seed=49, vocab=VOCAB)
    check_in_own_engine(sdar_dir, sdar_ref, sdar_eos, sdar_reference, prompts, cases, GEN,
                        tp=2, what="at TP=2")


def test_sdar_prefix_cache_hits_whole_blocks(sdar_dir, sdar_ref, sdar_eos):
    check_prefix_cache_hits(sdar_dir, sdar_ref, sdar_eos, sdar_reference, 40, BLOCK,
                            CASES["dynamic-0.5"])


def test_sdar_min_tokens(llm, sdar_ref, sdar_eos):
    check_min_tokens(llm, sdar_ref, sdar_eos, random_prompts((5, 9), seed=50, vocab=VOCAB), 24,
                     10, reference=sdar_reference, threshold=0.7)


# -- structured output (tests/constrained_checks.py) ---------------------------------


@pytest.mark.parametrize("case", ["dynamic-0.5", "static-S2", "sequential-S4"])
def test_sdar_constrained_batch_parity(llm, sdar_dir, sdar_ref, sdar_eos, case):
    """Regex, choice and JSON-schema requests beside free ones, each
    strategy: token- and forward-exact with the constrained SDAR loop."""
    results = check_constrained_batch(llm, sdar_ref, sdar_eos, sdar_reference, sdar_dir,
                                      random_prompts((3, 9, 14, 22, 5, 30), seed=41, vocab=VOCAB),
                                      24, **CASES[case])
    if case == "dynamic-0.5":
        assert several_tokens_per_step(results)


def test_sdar_constrained_staggered_preempted_aborted(llm, sdar_dir, sdar_ref, sdar_eos):
    prompts = random_prompts((5, 13, 8, 21, 4), seed=42, vocab=VOCAB)
    check_constrained_staggered(llm, sdar_ref, sdar_eos, sdar_reference, sdar_dir, prompts, 24,
                                "sdar-c-stagger", **CASES["dynamic-S2-0.7"])
    check_constrained_preemption(llm, sdar_ref, sdar_eos, sdar_reference, sdar_dir, prompts[:4],
                                 24, (2, 6), "sdar-c-evict", **CASES["static-S2"])
    check_constrained_abort(llm, sdar_ref, sdar_eos, sdar_reference, sdar_dir, prompts[:3], 24,
                            "sdar-c-abort", **CASES["dynamic-0.5"])


# -- logprobs (tests/logprob_checks.py) ----------------------------------------------


def test_sdar_logprobs_equal_the_committing_rows(llm, sdar_dir, sdar_ref, sdar_eos):
    """Every emitted token's logprob, rank and top-3 are the reference's row
    of the denoising forward that committed it (a free, a constrained, a
    min_tokens, a logprobs=0 and a no-logprobs request in one batch)."""
    check_logprobs_batch(llm, sdar_ref, sdar_eos, sdar_reference, sdar_dir,
                         random_prompts((5, 9, 13, 4, 8), seed=76, vocab=VOCAB), 24,
                         min_tokens=10, **CASES["dynamic-0.5"])


def test_sdar_logprobs_after_preemption(llm, sdar_dir, sdar_ref, sdar_eos):
    check_logprobs_preemption(llm, sdar_ref, sdar_eos, sdar_reference, sdar_dir,
                              random_prompts((5, 13, 8, 21), seed=77, vocab=VOCAB), 24, (2, 6),
                              "sdar-lp-evict", **CASES["static-S2"])
