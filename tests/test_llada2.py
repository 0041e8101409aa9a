"""LLaDA2.x (BailingMoeV2 MoE, block diffusion, blocks of 32) in the engine:
token-exact parity with the plain-PyTorch reference of the published loops
(vllm_dllm_plugin/testing/reference/llada2_loop.py, which recomputes the
whole prefix every step as published: no cache to share with the engine).

LLaDA2.0 (the step schedule, ``max_tokens`` below a block raising the
quota) and LLaDA2.1 (``diffusion_editing_threshold``: token editing, post
steps), prompt lengths and ``max_tokens`` around block boundaries, early
stop, staggered arrivals mixing both loops, preemption and abort, TP=2.
Forward counts equal the reference's tally of a cached engine; the published
loop's own count is documented (docs/benchmarks.md).
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
from logprob_checks import check_logprobs_batch, check_logprobs_free, check_logprobs_preemption
from test_parity import check_min_tokens, random_prompts

BLOCK = 32
GEN = 40
PROMPT_LENGTHS = (1, 31, 32, 33, 64, 70)
VOCAB = 480

CASES = {
    "2.0-0.95": dict(),
    "2.0-0.5": dict(threshold=0.5),
    "2.0-1.0": dict(threshold=1.0),
    "2.0-S8-0.9": dict(steps_per_block=8, threshold=0.9),
    "2.0-B16-0.7": dict(block_length=16, threshold=0.7),
    "2.1-0.5-edit0.9": dict(threshold=0.5, editing_threshold=0.9),
    "2.1-0.7-edit0.5": dict(threshold=0.7, editing_threshold=0.5),
    "2.1-0.5-edit0-post2": dict(threshold=0.5, editing_threshold=0.0, max_post_steps=2),
    "2.1-0.7-post0": dict(threshold=0.7, editing_threshold=0.5, max_post_steps=0),
    "2.1-edit1.0": dict(editing_threshold=1.0),
}


def llada2_reference(ref, prompt, *, max_tokens, eos_ids, threshold=0.95, block_length=BLOCK,
                     steps_per_block=None, editing_threshold=None, max_post_steps=16,
                     min_tokens=0, grammar=None, logprobs=False):
    from vllm_dllm_plugin.testing.reference.llada2_loop import generate

    return generate(ref, prompt, max_tokens=max_tokens, block_length=block_length,
                    steps=steps_per_block or block_length, threshold=threshold,
                    editing_threshold=editing_threshold, max_post_steps=max_post_steps,
                    eos_ids=eos_ids, min_tokens=min_tokens, grammar=grammar,
                    logprobs=logprobs)


@pytest.fixture(scope="module")
def llm(llada2_dir):
    return make_llm(llada2_dir, enable_prefix_caching=False)


@pytest.mark.parametrize("case", CASES)
def test_llada2_batch_parity(llm, llada2_ref, llada2_eos, case):
    prompts = random_prompts(PROMPT_LENGTHS, seed=51, vocab=VOCAB)
    check_stepped_batch(llm, llada2_ref, llada2_eos, prompts, GEN, llada2_reference,
                        **CASES[case])


def test_llada2_rules_are_exercised(llm, llada2_ref, llada2_eos):
    """The checkpoint commits several tokens in one forward, and the 2.1 loop
    edits tokens (else editing and the threshold would be untested); an
    edited output differs from the 2.0 one."""
    prompts = random_prompts(PROMPT_LENGTHS, seed=51, vocab=VOCAB)
    edited = check_stepped_batch(llm, llada2_ref, llada2_eos, prompts, GEN, llada2_reference,
                                 threshold=0.5, editing_threshold=0.0, max_post_steps=2)
    assert max(max(r.commits) for r in edited) > 1
    assert sum(sum(r.edits) for r in edited) > 0
    plain = [llada2_reference(llada2_ref, p, max_tokens=GEN, eos_ids=llada2_eos,
                              threshold=0.5) for p in prompts]
    assert any(a.tokens != b.tokens for a, b in zip(edited, plain))


@pytest.mark.parametrize("prompt_len", [5, 32])
def test_llada2_max_tokens_around_block_boundaries(llm, llada2_ref, llada2_eos, prompt_len):
    """``max_tokens`` below a block raises LLaDA2.0's per-step quota
    (``min(steps, max_tokens)`` steps); at and above a block it does not."""
    prompt = random_prompts((prompt_len,), seed=52, vocab=VOCAB)[0]
    for max_tokens in (1, 8, 16, 27, 31, 32, 33):
        check_stepped_batch(llm, llada2_ref, llada2_eos, [prompt], max_tokens,
                            llada2_reference, threshold=0.9)
    check_stepped_batch(llm, llada2_ref, llada2_eos, [prompt], 8, llada2_reference,
                        threshold=0.5, editing_threshold=0.5)


def test_llada2_forwards_by_kind(llm, llada2_ref, llada2_eos):
    """Prefill, denoise and commit forwards as the reference tallies them: a
    LLaDA2.1 block whose last post step edited nothing needs no commit."""
    for prompt_len, case in ((5, {}), (40, {}), (33, CASES["2.1-0.7-edit0.5"]),
                             (64, CASES["2.1-0.7-post0"])):
        prompt = random_prompts((prompt_len,), seed=53, vocab=VOCAB)[0]
        check_forward_kinds(llm, llada2_ref, llada2_eos, llada2_reference, prompt, 70, **case)


def test_llada2_early_stop(llm, llada2_ref, llada2_eos):
    prompts = random_prompts((5, 31, 40), seed=54, vocab=VOCAB)
    check_early_stop(llm, llada2_ref, llada2_eos, llada2_reference, prompts, 70, (3, 30),
                     threshold=0.7)
    check_early_stop(llm, llada2_ref, llada2_eos, llada2_reference, prompts, 70, (3, 30),
                     threshold=0.7, editing_threshold=0.5)


def test_llada2_staggered_arrivals_mixing_both_loops(llm, llada2_ref, llada2_eos):
    settings = [CASES["2.0-0.95"], CASES["2.1-0.5-edit0.9"], CASES["2.0-S8-0.9"],
                CASES["2.1-0.7-post0"], CASES["2.0-B16-0.7"]]
    prompts = random_prompts((5, 33, 64, 12, 70), seed=55, vocab=VOCAB)
    check_staggered(llm, llada2_ref, llada2_eos, llada2_reference, prompts, settings, 40,
                    "llada2")


@pytest.mark.parametrize("case", ["2.0-0.5", "2.1-0.7-edit0.5"])
def test_llada2_preempted_requests_resume_with_the_same_tokens(llm, llada2_ref, llada2_eos,
                                                               case):
    prompts = random_prompts((5, 33, 70), seed=56, vocab=VOCAB)
    check_preemption(llm, llada2_ref, llada2_eos, llada2_reference, prompts, 60, (3, 20),
                     f"llada2-preempt-{case}", **CASES[case])


def test_llada2_abort_mid_block(llm, llada2_ref, llada2_eos):
    prompts = random_prompts((6, 40, 27), seed=57, vocab=VOCAB)
    check_abort(llm, llada2_ref, llada2_eos, llada2_reference, prompts, 48, "llada2-abort",
                threshold=0.99)


def test_llada2_requests_without_sampling_fields_are_greedy(llm):
    defaults = llm.get_default_sampling_params()
    assert defaults.temperature == 0.0
    assert defaults.top_p == 1.0 and defaults.top_k in (0, -1)


def test_llada2_seeded_sampling(llm):
    check_seeded_sampling(llm, 33, VOCAB)


@pytest.mark.parametrize("options, field", [
    ({"diffusion_cache": "dual"}, "diffusion_cache"),
    ({"diffusion_factor": 1.0}, "diffusion_factor"),
    ({"diffusion_sub_block_length": 8}, "diffusion_sub_block_length"),
    ({"diffusion_steps_per_block": 33}, "diffusion_steps_per_block"),
    ({"diffusion_remasking": "sequential"}, "diffusion_remasking"),
    ({"diffusion_editing_threshold": 1.5}, "diffusion_editing_threshold"),
    ({"diffusion_editing_threshold": "high"}, "diffusion_editing_threshold"),
    ({"diffusion_max_post_steps": 3}, "diffusion_max_post_steps"),
    ({"diffusion_editing_threshold": 0.5, "diffusion_max_post_steps": -1},
     "diffusion_max_post_steps"),
    ({"diffusion_editing_threshold": 0.5, "diffusion_steps_per_block": 8},
     "diffusion_steps_per_block"),
])
def test_llada2_options_it_cannot_follow_are_errors(llm, options, field):
    assert_option_refused(llm, options, field)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TP=2 needs two cores")
def test_llada2_tp2_equals_reference(llada2_dir, llada2_ref, llada2_eos):
    """The MoE (experts and shared expert split across ranks) at TP=2."""
    cases = [CASES[k] for k in ("2.0-0.95", "2.1-0.5-edit0.9", "2.0-S8-0.9",
                                "2.1-0.7-post0", "2.0-B16-0.7", "2.0-0.5")]
    cases += [dict(CASES["2.0-0.5"], grammar="json"), dict(CASES["2.0-S8-0.9"], grammar="choice")]
    prompts = random_prompts(PROMPT_LENGTHS + (9, 30), seed=58, vocab=VOCAB)
    check_in_own_engine(llada2_dir, llada2_ref, llada2_eos, llada2_reference, prompts, cases,
                        GEN, tp=2, what="at TP=2")


def test_llada2_prefix_cache_hits_whole_blocks(llada2_dir, llada2_ref, llada2_eos):
    check_prefix_cache_hits(llada2_dir, llada2_ref, llada2_eos, llada2_reference, 70, BLOCK,
                            CASES["2.1-0.5-edit0.9"])


@pytest.mark.parametrize("case", ["2.0-0.5", "2.1-0.7-edit0.5"])
def test_llada2_min_tokens(llm, llada2_ref, llada2_eos, case):
    check_min_tokens(llm, llada2_ref, llada2_eos, random_prompts((5, 40), seed=59, vocab=VOCAB),
                     60, 36, reference=llada2_reference, **CASES[case])


# -- structured output (tests/constrained_checks.py) ---------------------------------


@pytest.mark.parametrize("case", ["2.0-0.5", "2.0-S8-0.9", "2.0-B16-0.7"])
def test_llada2_constrained_batch_parity(llm, llada2_dir, llada2_ref, llada2_eos, case):
    """Regex, choice and JSON-schema requests beside free ones (the 2.0 loop;
    2.1's token editing is refused with a grammar): token- and forward-exact
    with the constrained LLaDA2 loop."""
    results = check_constrained_batch(llm, llada2_ref, llada2_eos, llada2_reference, llada2_dir,
                                      random_prompts((3, 20, 35, 9), seed=51, vocab=VOCAB), 40,
                                      **CASES[case])
    if case == "2.0-0.5":
        assert several_tokens_per_step(results)


def test_llada2_constrained_staggered_preempted_aborted(llm, llada2_dir, llada2_ref, llada2_eos):
    prompts = random_prompts((5, 33, 12, 21), seed=52, vocab=VOCAB)
    check_constrained_staggered(llm, llada2_ref, llada2_eos, llada2_reference, llada2_dir,
                                prompts, 40, "l2-c-stagger", **CASES["2.0-0.5"])
    check_constrained_preemption(llm, llada2_ref, llada2_eos, llada2_reference, llada2_dir,
                                 prompts, 40, (2, 6), "l2-c-evict", **CASES["2.0-S8-0.9"])
    check_constrained_abort(llm, llada2_ref, llada2_eos, llada2_reference, llada2_dir,
                            prompts[:3], 40, "l2-c-abort", **CASES["2.0-0.5"])


def test_llada2_editing_with_a_grammar_is_refused(llm):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from vllm_dllm_plugin.serving.validation import DiffusionRequestError

    with pytest.raises(DiffusionRequestError, match="^diffusion_editing_threshold"):
        llm.generate([{"prompt_token_ids": [1, 2, 3]}],
                     SamplingParams(temperature=0, max_tokens=8,
                                    structured_outputs=StructuredOutputsParams(regex="[0-9]+"),
                                    extra_args={"diffusion_editing_threshold": 0.5}),
                     use_tqdm=False)


# -- logprobs (tests/logprob_checks.py) ----------------------------------------------


def test_llada2_logprobs_equal_the_committing_rows(llm, llada2_dir, llada2_ref, llada2_eos):
    """LLaDA2.0: every emitted token's logprob, rank and top-3 are the
    reference's row of the forward that committed it (a free, a
    constrained, a min_tokens, a logprobs=0 and a no-logprobs request in
    one batch)."""
    check_logprobs_batch(llm, llada2_ref, llada2_eos, llada2_reference, llada2_dir,
                         random_prompts((5, 33, 20, 9, 14), seed=78, vocab=VOCAB), GEN,
                         min_tokens=12, **CASES["2.0-0.5"])


def test_llada2_1_logprobs_follow_edits(llm, llada2_ref, llada2_eos):
    """LLaDA2.1 (no grammar: editing is refused with one): an edit replaces
    the position's entry with the editing forward's row."""
    prompts = random_prompts(PROMPT_LENGTHS, seed=51, vocab=VOCAB)[1:3]
    results = check_logprobs_free(llm, llada2_ref, llada2_eos, llada2_reference, prompts, GEN,
                                  **CASES["2.1-0.5-edit0-post2"])
    # emitted positions whose entry is an editing forward's
    replaced = sum(len(want.edited.intersection(range(len(p), len(p) + len(want.tokens))))
                   for p, want in zip(prompts, results))
    assert replaced > 0, "no emitted token was edited: replaced entries untested"


def test_llada2_logprobs_after_preemption(llm, llada2_dir, llada2_ref, llada2_eos):
    check_logprobs_preemption(llm, llada2_ref, llada2_eos, llada2_reference, llada2_dir,
                              random_prompts((5, 33, 12), seed=52, vocab=VOCAB), 24, (2, 6),
                              "l2-lp-evict", **CASES["2.0-0.5"])
