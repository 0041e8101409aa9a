"""Token-exact parity of the engine with the plain-PyTorch Fast-dLLM reference.

Every cache mode x rule, in continuous batches of prompts of different
lengths, with requests arriving while others are mid-block; the number of
forward passes per request must equal the reference's too.
"""

import random

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
    forwards_of,
    make_llm,
    reference_run,
    run_staggered,
    sampling,
)
from logprob_checks import check_logprobs_batch, check_logprobs_preemption

BLOCK = 8
GEN = 40
PROMPT_LENGTHS = (3, 9, 14, 22, 31, 47)

RULES = {
    "threshold-0.9": {"threshold": 0.9},
    "threshold-0.7": {"threshold": 0.7},
    "fixed-1-per-step": {"steps_per_block": BLOCK},
    "fixed-2-per-step": {"steps_per_block": BLOCK // 2},
    "factor-1.0": {"factor": 1.0},
}
CACHES = ("none", "prefix", "dual")


@pytest.fixture(scope="module")
def llm(llada_dir):
    return make_llm(llada_dir)


def random_prompts(lengths, seed=0, vocab=490):
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(n)] for n in lengths]


def check_batch(llm, ref, eos_ids, prompts, max_tokens, stop_token_ids=None, *,
                reference=reference_run, engine_forwards=lambda want, prompt: want.forwards,
                **diffusion):
    """One batch through the engine equals ``reference`` per request, in tokens
    and in forwards (``engine_forwards``: the engine's count from the
    reference's), float64-arbitrated (``engine_utils.assert_reference``).
    Returns the reference results."""
    params = sampling(max_tokens, stop_token_ids=stop_token_ids, **diffusion)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    ends = set(eos_ids) | set(stop_token_ids or ())
    results = []
    for prompt, out in zip(prompts, outs):
        results.append(assert_reference(
            out.outputs[0].token_ids, ref, prompt, what=f"prompt len {len(prompt)}",
            got_forwards=forwards_of(llm, out.request_id), reference=reference,
            expected_forwards=lambda want, prompt=prompt: engine_forwards(want, prompt),
            max_tokens=max_tokens, eos_ids=ends, **diffusion))
    return results


def check_min_tokens(llm, ref, eos_ids, prompts, max_tokens, min_tokens, *,
                     reference=reference_run, **options):
    """vLLM's ``min_tokens``: with a stop token the model produces early (at
    index 2 of the first prompt's answer), no end or stop token comes among
    the first ``min_tokens`` tokens, and the outputs equal the reference
    decoding under the same constraint, token for token and forward for
    forward."""
    full = reference(ref, prompts[0], max_tokens=max_tokens, eos_ids=eos_ids, **options)
    stop = full.tokens[2]
    ends = set(eos_ids) | {stop}
    results = check_batch(llm, ref, eos_ids, prompts, max_tokens, [stop], reference=reference,
                          min_tokens=min_tokens, **options)
    for want in results:
        assert not ends & set(want.tokens[:min_tokens])
    assert len(results[0].tokens) > 3   # without min_tokens it would end by index 2
    return results


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("cache", CACHES)
def test_batch_parity(llm, llada_ref, llada_eos, cache, rule):
    prompts = random_prompts(PROMPT_LENGTHS)
    check_batch(llm, llada_ref, llada_eos, prompts, GEN, cache=cache, block_length=BLOCK,
                **RULES[rule])


@pytest.mark.parametrize("cache", CACHES)
def test_early_stop_on_end_token(llm, llada_ref, llada_eos, cache):
    """A committed end token with everything before it committed ends the request."""
    prompts = random_prompts(PROMPT_LENGTHS, seed=1)
    full = [reference_run(llada_ref, p, max_tokens=GEN, eos_ids=llada_eos, cache=cache,
                          block_length=BLOCK).tokens for p in prompts]
    # Stop on a token the model actually produces mid-generation.
    counts = {}
    for tokens in full:
        for t in tokens[BLOCK // 2:GEN - BLOCK]:
            counts[t] = counts.get(t, 0) + 1
    stop = max(counts, key=counts.get)
    lengths = [len(want.tokens) for want in check_batch(
        llm, llada_ref, llada_eos, prompts, GEN, stop_token_ids=[stop], cache=cache,
        block_length=BLOCK)]
    assert min(lengths) < GEN, "no request stopped early: the test would prove nothing"


@pytest.mark.parametrize("cache", CACHES)
def test_generation_not_multiple_of_block(llm, llada_ref, llada_eos, cache):
    """max_tokens % block_length != 0: the last block is shorter."""
    prompts = random_prompts((5, 17, 26), seed=2)
    for rule in ({"threshold": 0.9}, {"steps_per_block": 4}):
        check_batch(llm, llada_ref, llada_eos, prompts, 37, cache=cache, block_length=BLOCK, **rule)


def test_staggered_arrivals_mixed_options(llm, llada_ref, llada_eos):
    """Requests join while others are mid-block; modes and rules mix in one step."""
    engine = llm.llm_engine
    settings = [
        dict(cache="prefix", block_length=8, threshold=0.9),
        dict(cache="none", block_length=8, steps_per_block=8),
        dict(cache="dual", block_length=16, threshold=0.7),
        dict(cache="prefix", block_length=4, steps_per_block=2),
        dict(cache="dual", block_length=8, factor=1.0),
        dict(cache="none", block_length=16, threshold=0.8),
        dict(cache="prefix", block_length=32, threshold=0.9),
    ]
    prompts = random_prompts((4, 30, 11, 19, 41, 7, 25), seed=3)
    max_tokens = [40, 32, 48, 24, 40, 33, 64]
    arrivals = {0: [0, 1], 3: [2], 4: [3, 4], 9: [5], 15: [6]}  # step -> requests

    outputs = run_staggered(engine, arrivals, lambda i: (
        f"stagger-{i}", prompts[i], sampling(max_tokens[i], **settings[i])))

    for i, prompt in enumerate(prompts):
        assert_reference(outputs[f"stagger-{i}"], llada_ref, prompt, what=f"request {i}",
                         got_forwards=forwards_of(llm, f"stagger-{i}"),
                         max_tokens=max_tokens[i], eos_ids=llada_eos, **settings[i])


@pytest.mark.parametrize("cache", CACHES)
def test_min_tokens(llm, llada_ref, llada_eos, cache):
    check_min_tokens(llm, llada_ref, llada_eos, random_prompts(PROMPT_LENGTHS, seed=3), GEN, 12,
                     cache=cache, block_length=BLOCK, threshold=0.7)


# -- structured output (tests/constrained_checks.py) ---------------------------------

# Every cache with the threshold rule, and each other rule with one cache.
CONSTRAINED_CASES = [(cache, "threshold-0.7") for cache in CACHES] + [
    ("prefix", "fixed-2-per-step"), ("dual", "factor-1.0")]


@pytest.mark.parametrize("cache, rule", CONSTRAINED_CASES)
def test_constrained_batch_parity(llm, llada_dir, llada_ref, llada_eos, cache, rule):
    """Regex, choice and JSON-schema requests beside free ones, every cache
    mode and rule: token- and forward-exact with the constrained reference."""
    results = check_constrained_batch(llm, llada_ref, llada_eos, reference_run, llada_dir,
                                      random_prompts(PROMPT_LENGTHS, seed=21), GEN,
                                      cache=cache, block_length=BLOCK, **RULES[rule])
    if rule == "threshold-0.7":
        assert several_tokens_per_step(results)


def test_constrained_staggered(llm, llada_dir, llada_ref, llada_eos):
    check_constrained_staggered(llm, llada_ref, llada_eos, reference_run, llada_dir,
                                random_prompts((5, 17, 9, 28, 12, 40), seed=22), GEN,
                                "c-stagger", cache="prefix", block_length=BLOCK,
                                threshold=0.7)


@pytest.mark.parametrize("cache", CACHES)
def test_constrained_preemption(llm, llada_dir, llada_ref, llada_eos, cache):
    check_constrained_preemption(llm, llada_ref, llada_eos, reference_run, llada_dir,
                                 random_prompts((6, 18, 27, 11), seed=23), GEN, (2, 7),
                                 f"c-evict-{cache}", cache=cache, block_length=BLOCK,
                                 threshold=0.7)


def test_constrained_abort(llm, llada_dir, llada_ref, llada_eos):
    check_constrained_abort(llm, llada_ref, llada_eos, reference_run, llada_dir,
                            random_prompts((6, 18, 27), seed=24), GEN, "c-abort",
                            cache="dual", block_length=BLOCK, threshold=0.7)


# -- logprobs (tests/logprob_checks.py) ----------------------------------------------


def test_logprobs_equal_the_committing_rows(llm, llada_dir, llada_ref, llada_eos):
    """Every emitted token's logprob, rank and top-3 are the reference's row
    of the forward that committed it (a free, a constrained, a min_tokens,
    a logprobs=0 and a no-logprobs request in one batch)."""
    check_logprobs_batch(llm, llada_ref, llada_eos, reference_run, llada_dir,
                         random_prompts((5, 14, 22, 9, 17), seed=71), 24, min_tokens=12,
                         cache="dual", block_length=BLOCK, threshold=0.7)


def test_logprobs_after_preemption(llm, llada_dir, llada_ref, llada_eos):
    check_logprobs_preemption(llm, llada_ref, llada_eos, reference_run, llada_dir,
                              random_prompts((6, 18, 27, 11), seed=72), 24, (2, 5),
                              "lp-evict", cache="prefix", block_length=BLOCK, threshold=0.7)


def test_a_grammar_that_fails_to_compile_fails_only_its_request(llm, llada_dir, llada_ref,
                                                                 llada_eos, monkeypatch):
    """A worker-side compile error (here: the regex request's) finishes that
    request with an error; the others in the same steps equal the reference
    and the engine keeps serving."""
    from test_reliability import runner_of

    grammars = runner_of(llm).grammars
    compile_grammar = grammars.compile

    def failing(sampling_params):
        if sampling_params.structured_outputs is not None and \
                sampling_params.structured_outputs.regex:
            raise RuntimeError("backend exploded")
        return compile_grammar(sampling_params)

    monkeypatch.setattr(grammars, "compile", failing)
    from constrained_checks import grammars as kinds, params

    cases = kinds(llada_dir, llada_eos)
    prompts = random_prompts((5, 17, 9), seed=25)
    options = dict(cache="prefix", block_length=BLOCK, threshold=0.7)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        [params(GEN, cases[k][0], **options) for k in ("regex", "json", "free")],
                        use_tqdm=False)
    failed = outs[0].outputs[0]
    assert failed.finish_reason == "error" and "backend exploded" in str(failed.stop_reason)
    for out, prompt, kind in zip(outs[1:], prompts[1:], ("json", "free")):
        assert_reference(out.outputs[0].token_ids, llada_ref, prompt, what=kind,
                         max_tokens=GEN, eos_ids=llada_eos, grammar=cases[kind][1], **options)
