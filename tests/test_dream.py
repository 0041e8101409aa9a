"""Dream checkpoints: token-exact parity with the reference (shifted logits,
first-position commit at each refresh, model-dtype confidence), mixed batches
with staggered arrivals, TP=2, and the Instruct chat template over the API."""

import os

import pytest

from constrained_checks import (
    check_constrained_abort,
    check_constrained_batch,
    check_constrained_preemption,
    check_constrained_staggered,
    several_tokens_per_step,
)
from engine_utils import (
    assert_reference,
    check_in_own_engine,
    forwards_of,
    make_llm,
    reference_run,
    run_staggered,
    sampling,
)
from logprob_checks import check_logprobs_batch, check_logprobs_preemption
from test_parity import check_batch, check_min_tokens, random_prompts

BLOCK = 8
GEN = 40
PROMPT_LENGTHS = (3, 9, 14, 22, 31, 47)

CASES = {
    "prefix-0.9": dict(cache="prefix", threshold=0.9),
    "prefix-0.7": dict(cache="prefix", threshold=0.7),
    "dual-0.9": dict(cache="dual", threshold=0.9),
    "dual-0.7": dict(cache="dual", threshold=0.7),
    "none-0.9": dict(cache="none", threshold=0.9),
    "prefix-factor": dict(cache="prefix", factor=1.0),
    "dual-fixed-2": dict(cache="dual", steps_per_block=BLOCK // 2),
}


@pytest.fixture(scope="module")
def llm(dream_dir):
    return make_llm(dream_dir)


@pytest.mark.parametrize("case", CASES)
def test_dream_batch_parity(llm, dream_ref, dream_eos, case):
    prompts = random_prompts(PROMPT_LENGTHS, seed=11, vocab=480)
    check_batch(llm, dream_ref, dream_eos, prompts, GEN, block_length=BLOCK, **CASES[case])


def test_dream_short_last_block_and_early_stop(llm, dream_ref, dream_eos):
    prompts = random_prompts((4, 19, 33), seed=12, vocab=480)
    stop = reference_run(dream_ref, prompts[0], max_tokens=37, eos_ids=dream_eos,
                         block_length=BLOCK).tokens[BLOCK + 2]
    for cache in ("prefix", "dual", "none"):
        check_batch(llm, dream_ref, dream_eos, prompts, 37, stop_token_ids=[stop],
                    cache=cache, block_length=BLOCK)


def test_dream_staggered_arrivals(llm, dream_ref, dream_eos):
    engine = llm.llm_engine
    settings = [dict(cache="prefix", block_length=8, threshold=0.9),
                dict(cache="dual", block_length=16, threshold=0.7),
                dict(cache="none", block_length=8, threshold=0.9),
                dict(cache="dual", block_length=4, factor=1.0),
                dict(cache="prefix", block_length=8, threshold=0.7)]
    prompts = random_prompts((5, 28, 12, 40, 9), seed=13, vocab=480)
    arrivals = {0: [0], 2: [1, 2], 5: [3], 8: [4]}
    outputs = run_staggered(engine, arrivals, lambda i: (
        f"dream-{i}", prompts[i], sampling(32, **settings[i])))
    for i, p in enumerate(prompts):
        assert_reference(outputs[f"dream-{i}"], dream_ref, p, what=f"request {i}",
                         got_forwards=forwards_of(llm, f"dream-{i}"),
                         max_tokens=32, eos_ids=dream_eos, **settings[i])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TP=2 needs two cores")
def test_dream_tp2_equals_reference(dream_dir, dream_ref, dream_eos):
    cases = [dict(case, block_length=BLOCK) for case in list(CASES.values())[:6]]
    cases += [dict(cases[0], grammar="json"), dict(cases[2], grammar="choice")]
    prompts = random_prompts(PROMPT_LENGTHS + (10, 25), seed=14, vocab=480)
    check_in_own_engine(dream_dir, dream_ref, dream_eos, reference_run, prompts, cases, GEN,
                        tp=2, what="at TP=2")


def test_dream_min_tokens(llm, dream_ref, dream_eos):
    check_min_tokens(llm, dream_ref, dream_eos, random_prompts((6, 19), seed=8), GEN, 12,
                     cache="dual", block_length=BLOCK, threshold=0.7)


# -- structured output (tests/constrained_checks.py) ---------------------------------


CONSTRAINED_CASES = {"prefix-0.2": dict(cache="prefix", threshold=0.2),
                     "dual-fixed-2": CASES["dual-fixed-2"], "none-0.9": CASES["none-0.9"]}


@pytest.mark.parametrize("case", CONSTRAINED_CASES)
def test_dream_constrained_batch_parity(llm, dream_dir, dream_ref, dream_eos, case):
    """Regex, choice and JSON-schema requests beside free ones (Dream reads
    row p - 1 and commits a block's first position alone): token- and
    forward-exact with the constrained reference."""
    results = check_constrained_batch(llm, dream_ref, dream_eos, reference_run, dream_dir,
                                      random_prompts(PROMPT_LENGTHS, seed=61, vocab=480), GEN,
                                      block_length=BLOCK, **CONSTRAINED_CASES[case])
    if case == "prefix-0.2":
        assert several_tokens_per_step(results)


def test_dream_constrained_staggered_preempted_aborted(llm, dream_dir, dream_ref, dream_eos):
    prompts = random_prompts((5, 28, 12, 19), seed=62, vocab=480)
    check_constrained_staggered(llm, dream_ref, dream_eos, reference_run, dream_dir, prompts, GEN,
                                "dream-c-stagger", block_length=BLOCK, **CASES["dual-0.7"])
    check_constrained_preemption(llm, dream_ref, dream_eos, reference_run, dream_dir, prompts,
                                 GEN, (2, 6), "dream-c-evict", block_length=BLOCK,
                                 **CASES["prefix-0.7"])
    check_constrained_abort(llm, dream_ref, dream_eos, reference_run, dream_dir, prompts[:3],
                            GEN, "dream-c-abort", block_length=BLOCK, **CASES["dual-0.7"])


# -- logprobs (tests/logprob_checks.py) ----------------------------------------------


def test_dream_logprobs_equal_the_committing_rows(llm, dream_dir, dream_ref, dream_eos):
    """Every emitted token's logprob, rank and top-3 are the reference's
    (shifted) row of the forward that committed it, the refresh's first
    position included (a free, a constrained, a min_tokens, a logprobs=0 and
    a no-logprobs request in one batch)."""
    check_logprobs_batch(llm, dream_ref, dream_eos, reference_run, dream_dir,
                         random_prompts((5, 19, 12, 28, 9), seed=73, vocab=480), 24,
                         min_tokens=12, block_length=BLOCK, **CASES["dual-0.7"])


def test_dream_logprobs_after_preemption(llm, dream_dir, dream_ref, dream_eos):
    check_logprobs_preemption(llm, dream_ref, dream_eos, reference_run, dream_dir,
                              random_prompts((6, 18, 27, 11), seed=74, vocab=480), 24, (2, 5),
                              "dream-lp-evict", block_length=BLOCK, **CASES["prefix-0.7"])
