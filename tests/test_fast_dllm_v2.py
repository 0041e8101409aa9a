"""Fast-dLLM v2 (block diffusion) in the engine: token-exact parity with the
plain-PyTorch reference of the published loop
(vllm_dllm_plugin/testing/reference/fast_dllm_v2.py).

Every option (threshold, sub-block length, sub-block cache), prompt lengths
around block boundaries, max_tokens around block boundaries, early stop,
mixed continuous batches with staggered arrivals, preemption and abort, the
tied-embeddings layout, and TP=2.  Forward counts match too: the engine, like
the reference, prefills the prompt's whole blocks in one block-causal forward
(one attention segment per block), unless the prompt is over the step's token
budget (``test_v2_long_prompt_split_at_block_boundaries``).
"""

import os

import pytest

from engine_utils import (
    assert_option_refused,
    assert_reference,
    check_in_own_engine,
    forwards_of,
    make_llm,
    run_staggered,
    sampling,
    scheduler_of,
)
from constrained_checks import (
    check_constrained_abort,
    check_constrained_batch,
    check_constrained_preemption,
    check_constrained_staggered,
    several_tokens_per_step,
)
from logprob_checks import check_logprobs_batch, check_logprobs_preemption
from test_parity import check_batch, check_min_tokens, random_prompts
from test_reliability import drain, run_with_evictions, runner_of
from test_tensor_parallel import run_engine
from vllm_dllm_plugin.serving.validation import DiffusionRequestError

BLOCK = 32
GEN = 48
PROMPT_LENGTHS = (5, 31, 32, 33, 64, 70)
VOCAB = 480   # prompt ids stay below the tokenizer's special tokens

CASES = {
    "prefix-0.9": dict(cache="prefix", threshold=0.9),
    "prefix-0.5": dict(cache="prefix", threshold=0.5),
    "prefix-1.0": dict(cache="prefix", threshold=1.0),
    "dual-0.9": dict(cache="dual", threshold=0.9),
    "dual-0.5": dict(cache="dual", threshold=0.5),
    "prefix-sub4-0.7": dict(cache="prefix", sub_block_length=4, threshold=0.7),
    "dual-sub4-0.7": dict(cache="dual", sub_block_length=4, threshold=0.7),
    "dual-sub16-0.6": dict(cache="dual", sub_block_length=16, threshold=0.6),
    "prefix-sub32-0.8": dict(cache="prefix", sub_block_length=32, threshold=0.8),
}


def v2_reference(ref, prompt, *, max_tokens, eos_ids, cache="prefix", threshold=0.9,
                 sub_block_length=8, min_tokens=0, grammar=None, logprobs=False):
    from vllm_dllm_plugin.testing.reference.fast_dllm_v2 import generate

    return generate(ref, prompt, max_tokens=max_tokens, threshold=threshold,
                    sub_block_length=sub_block_length, block_cache=cache == "dual",
                    eos_ids=eos_ids, min_tokens=min_tokens, grammar=grammar,
                    logprobs=logprobs)


def engine_forwards(want, prompt) -> int:
    """The reference's forwards: one prefill forward for the prompt's whole
    blocks, then the same denoising and commit forwards."""
    return want.forwards


def assert_v2_reference(got, ref, prompt, *, what, got_forwards=None, **settings):
    """``engine_utils.assert_reference`` with the v2 loop and forward count."""
    return assert_reference(got, ref, prompt, what=what, got_forwards=got_forwards,
                            reference=v2_reference,
                            expected_forwards=lambda want: engine_forwards(want, prompt),
                            **settings)


def check_v2_batch(llm, ref, eos_ids, prompts, max_tokens, stop_token_ids=None, **options):
    return check_batch(llm, ref, eos_ids, prompts, max_tokens, stop_token_ids,
                       reference=v2_reference, engine_forwards=engine_forwards, **options)


@pytest.fixture(scope="module")
def llm(v2_dir):
    # Prefix caching off: these tests reuse prompts, and a hit would skip a
    # prefill forward (tests/test_fast_dllm_v2_prefix_cache.py counts those).
    return make_llm(v2_dir, enable_prefix_caching=False)


@pytest.mark.parametrize("case", CASES)
def test_v2_batch_parity(llm, v2_ref, v2_eos, case):
    prompts = random_prompts(PROMPT_LENGTHS, seed=21, vocab=VOCAB)
    check_v2_batch(llm, v2_ref, v2_eos, prompts, GEN, **CASES[case])


@pytest.mark.parametrize("case", ["prefix-0.9", "dual-sub4-0.7"])
def test_v2_prompt_lengths_around_blocks_and_long(llm, v2_ref, v2_eos, case):
    """Prompts of 1, 31, 32, 33, 64, 65 and 400 tokens in one batch: no whole
    block, blocks ending on the prompt, one forward writing 12 blocks."""
    prompts = random_prompts((1, 31, 32, 33, 64, 65, 400), seed=25, vocab=VOCAB)
    check_v2_batch(llm, v2_ref, v2_eos, prompts, 40, **CASES[case])


def test_v2_lower_threshold_commits_several_tokens_per_forward(llm, v2_ref, v2_eos):
    """The checkpoint is confident enough that the parity cases exercise
    multi-token commits (else the threshold would be untested)."""
    prompts = random_prompts(PROMPT_LENGTHS, seed=21, vocab=VOCAB)
    results = check_v2_batch(llm, v2_ref, v2_eos, prompts, GEN, cache="prefix",
                             threshold=0.5)
    assert max(max(r.commits) for r in results) > 1


@pytest.mark.parametrize("prompt_len", [5, 32, 33])
def test_v2_max_tokens_around_block_boundaries(llm, v2_ref, v2_eos, prompt_len):
    """``max_tokens`` counts generated tokens: the blocks it needs are decoded
    whole and the output cut; a token from a commit forward can be the last."""
    prompt = random_prompts((prompt_len,), seed=22, vocab=VOCAB)[0]
    first_block = BLOCK - prompt_len % BLOCK   # generated tokens in the first block
    for max_tokens in sorted({1, first_block - 1, first_block, first_block + 1,
                              first_block + BLOCK, first_block + BLOCK + 1} - {0}):
        check_v2_batch(llm, v2_ref, v2_eos, [prompt], max_tokens, cache="dual",
                       threshold=0.7)


def test_v2_forwards_by_kind(llm):
    """The canvas labels each forward: one prefill for the prompt's whole
    blocks, one commit forward per block boundary the generated tokens cross
    (the next block's first token), the rest denoising; the counters see
    exactly that."""
    from vllm_dllm_plugin.canvas.base import COMMIT, DENOISE, KINDS, PREFILL

    stats = scheduler_of(llm).diffusion_stats
    for prompt_len, max_tokens in ((5, 27), (5, 28), (31, 40), (32, 33), (64, 70), (70, 5)):
        prompt = random_prompts((prompt_len,), seed=24, vocab=VOCAB)[0]
        before = dict(stats.interval.forwards_by_kind)
        out = llm.generate([{"prompt_token_ids": prompt}],
                           sampling(max_tokens, cache="dual", threshold=0.7),
                           use_tqdm=False)[0]
        counts = {k: stats.interval.forwards_by_kind[k] - before.get(k, 0) for k in KINDS}
        generated = len(out.outputs[0].token_ids)
        last = prompt_len + generated - 1
        assert counts[PREFILL] == (prompt_len >= BLOCK), (prompt_len, counts)
        assert counts[COMMIT] == last // BLOCK - prompt_len // BLOCK, (prompt_len, counts)
        assert counts[DENOISE] > 0
        assert sum(counts.values()) == forwards_of(llm, out.request_id)


def test_v2_prompt_blocks_are_attention_segments(llm, v2_ref, v2_eos, monkeypatch):
    """The prompt's whole blocks go in one forward, one attention segment per
    block; without the segments (every query seeing the whole prompt) the
    outputs differ from the published loop, so the parity above rests on them."""
    from vllm_dllm_plugin.canvas import segments

    prompts = random_prompts((64, 70, 96, 130), seed=31, vocab=VOCAB)
    applied = []
    apply = segments.SegmentPlan.apply
    monkeypatch.setattr(segments.SegmentPlan, "apply",
                        lambda plan, cm: applied.append(plan.num_reqs) or apply(plan, cm))
    check_v2_batch(llm, v2_ref, v2_eos, prompts, 40, cache="prefix", threshold=0.9)
    assert applied, "no step used attention segments"

    monkeypatch.setattr(segments.SegmentPlan, "of_windows", classmethod(lambda cls, w: None))
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        sampling(40, cache="prefix", threshold=0.9), use_tqdm=False)
    wanted = [v2_reference(v2_ref, p, max_tokens=40, eos_ids=v2_eos).tokens for p in prompts]
    assert any(list(o.outputs[0].token_ids) != w[:len(o.outputs[0].token_ids)]
               for o, w in zip(outs, wanted))


def test_v2_long_prompt_split_at_block_boundaries(v2_dir, v2_ref, v2_eos):
    """A prompt over the step's token budget (64 tokens here) is prefilled in
    whole blocks over several steps, never mid-block: token-exact, with one
    prefill forward per budget's worth of blocks; requests sharing the steps
    stay exact.  (Its own process: a second engine configuration.)"""
    long_prompt, *others = random_prompts((300, 40, 5, 97), seed=32, vocab=VOCAB)
    case = CASES["dual-sub4-0.7"]
    options = {f"diffusion_{k}": v for k, v in case.items()}
    requests = [dict(prompt=p, max_tokens=40, options=options) for p in [long_prompt, *others]]
    flags = ("--max-num-batched-tokens", "64", "--max-num-seqs", "4")
    alone, forwards = run_engine(v2_dir, requests[:1], 1, "float32", *flags, forwards=True)
    want = assert_v2_reference(alone[0], v2_ref, long_prompt, what="the long prompt alone",
                               max_tokens=40, eos_ids=v2_eos, **case)
    whole = len(long_prompt) // BLOCK * BLOCK
    assert forwards[0] == want.forwards + -(-whole // 64) - 1
    together = run_engine(v2_dir, requests, 1, "float32", *flags)
    for i, p in enumerate([long_prompt, *others]):
        assert_v2_reference(together[i], v2_ref, p, what=f"request {i} sharing the budget",
                            max_tokens=40, eos_ids=v2_eos, **case)


def test_v2_early_stop(llm, v2_ref, v2_eos):
    """An end token ends the request once nothing before it is masked (no
    commit forward after it); one from a commit forward (a block's first
    token) too."""
    prompts = random_prompts((5, 31, 40), seed=23, vocab=VOCAB)
    first_block = BLOCK - 5
    for cache in ("prefix", "dual"):
        full = v2_reference(v2_ref, prompts[0], max_tokens=90, eos_ids=v2_eos,
                            cache=cache, threshold=0.7)
        # mid-block; a commit forward's token (the second block's first)
        for index in (3, first_block, first_block + 7):
            stop = full.tokens[index]
            results = check_v2_batch(llm, v2_ref, v2_eos, prompts, 90,
                                     stop_token_ids=[stop], cache=cache, threshold=0.7)
            assert len(results[0].tokens) <= index + 1


def test_v2_staggered_arrivals(llm, v2_ref, v2_eos):
    engine = llm.llm_engine
    settings = [dict(cache="prefix", threshold=0.9),
                dict(cache="dual", threshold=0.7),
                dict(cache="prefix", threshold=1.0, sub_block_length=16),
                dict(cache="dual", threshold=0.5, sub_block_length=4),
                dict(cache="prefix", threshold=0.7)]
    prompts = random_prompts((5, 33, 64, 12, 70), seed=24, vocab=VOCAB)
    arrivals = {0: [0], 2: [1, 2], 5: [3], 9: [4]}
    outputs = run_staggered(engine, arrivals, lambda i: (
        f"v2-{i}", prompts[i], sampling(40, **settings[i])))
    for i, p in enumerate(prompts):
        assert_v2_reference(outputs[f"v2-{i}"], v2_ref, p, what=f"request {i}",
                            got_forwards=forwards_of(llm, f"v2-{i}"),
                            max_tokens=40, eos_ids=v2_eos, **settings[i])


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_v2_preempted_requests_resume_with_the_same_tokens(llm, v2_ref, v2_eos, cache):
    """Preemption frees the K/V; the request writes its known blocks again and
    decodes its current block from the start."""
    engine, sched = llm.llm_engine, scheduler_of(llm)
    prompts = random_prompts((5, 33, 70), seed=25, vocab=VOCAB)
    params = sampling(60, threshold=0.7, cache=cache)
    for i, p in enumerate(prompts):
        engine.add_request(f"v2-preempt-{cache}-{i}", {"prompt_token_ids": p}, params)
    outputs = run_with_evictions(engine, evict_after=(3, 20), steps=40)  # mid-block
    for i, p in enumerate(prompts):
        assert_v2_reference(outputs[f"v2-preempt-{cache}-{i}"].outputs[0].token_ids, v2_ref, p,
                            what=f"request {i}", max_tokens=60, eos_ids=v2_eos, threshold=0.7,
                            cache=cache)
    assert sched.get_kv_cache_usage() == 0.0


def test_v2_abort_mid_block(llm, v2_ref, v2_eos):
    engine, sched = llm.llm_engine, scheduler_of(llm)
    prompts = random_prompts((6, 40, 27), seed=26, vocab=VOCAB)
    params = sampling(48, threshold=0.95)
    for i, p in enumerate(prompts):
        engine.add_request(f"v2-abort-{i}", {"prompt_token_ids": p}, params)
    for _ in range(3):
        engine.step()
    assert any(c.step_in_block > 0 for c in runner_of(llm).canvases.values())
    used_before = sched.get_kv_cache_usage()
    engine.abort_request(["v2-abort-1"])
    assert sched.get_kv_cache_usage() < used_before
    outputs = {}
    drain(engine, outputs)
    for i in (0, 2):
        assert_v2_reference(outputs[f"v2-abort-{i}"].outputs[0].token_ids, v2_ref, prompts[i],
                            what=f"request {i}", max_tokens=48, eos_ids=v2_eos, threshold=0.95)
    assert sched.get_kv_cache_usage() == 0.0 and not sched.plans


def test_v2_kv_grows_with_the_canvas(llm):
    """Unlike LLaDA/Dream, KV blocks are allocated as blocks are decoded."""
    engine, sched = llm.llm_engine, scheduler_of(llm)
    params = sampling(400, threshold=0.9)
    params.ignore_eos = True
    engine.add_request("v2-grow", {"prompt_token_ids": list(range(5))}, params)
    engine.step()
    usage = [sched.get_kv_cache_usage()]
    while engine.has_unfinished_requests():
        engine.step()
        usage.append(sched.get_kv_cache_usage())
    peak = max(usage)
    assert usage[0] > 0 and peak > usage[0]
    assert usage[:usage.index(peak) + 1] == sorted(usage[:usage.index(peak) + 1])


def test_v2_tied_embeddings_checkpoint(v2_tied_dir, v2_tied_ref, v2_tied_eos):
    """The 1.5B layout: no lm_head in the checkpoint, the head is the embedding.
    (Its own process: two engines in one process share vLLM's global state.)"""
    prompts = random_prompts((5, 32, 45), seed=27, vocab=VOCAB)
    cases = [CASES["prefix-0.9"], CASES["dual-sub4-0.7"], CASES["prefix-0.5"]]
    check_in_own_engine(v2_tied_dir, v2_tied_ref, v2_tied_eos, v2_reference, prompts, cases,
                        40, tp=1, what="tied")


def test_v2_requests_without_sampling_fields_are_greedy(llm):
    """generation_config.json's Qwen sampling (temperature 0.7, top-p/top-k,
    repetition penalty) is not applied: defaults are greedy and neutral."""
    defaults = llm.get_default_sampling_params()
    assert defaults.temperature == 0.0
    assert defaults.repetition_penalty == 1.0
    assert defaults.top_p == 1.0 and defaults.top_k in (0, -1)


@pytest.mark.parametrize("options, field", [
    ({"diffusion_cache": "none"}, "diffusion_cache"),
    ({"diffusion_block_length": 16}, "diffusion_block_length"),
    ({"diffusion_factor": 1.0}, "diffusion_factor"),
    ({"diffusion_steps_per_block": 4}, "diffusion_steps_per_block"),
    ({"diffusion_sub_block_length": 5}, "diffusion_sub_block_length"),
])
def test_v2_options_it_cannot_follow_are_errors(llm, options, field):
    assert_option_refused(llm, options, field)


def test_v2_sampling_is_seeded_and_top_k_is_refused(llm):
    """Nucleus sampling with the request's seed: the same seed gives the same
    tokens, another seed other tokens; top_k (not in the published sampler)
    is a 400."""
    from vllm import SamplingParams

    prompt = [{"prompt_token_ids": random_prompts((40,), seed=29, vocab=VOCAB)[0]}]

    def run(seed):
        params = SamplingParams(temperature=1.0, top_p=0.95, seed=seed, max_tokens=60)
        return list(llm.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids)

    assert run(1) == run(1)
    assert run(1) != run(2)
    with pytest.raises(DiffusionRequestError, match="^top_k"):
        llm.generate(prompt, SamplingParams(temperature=0.7, top_k=20, max_tokens=8),
                     use_tqdm=False)


def test_v2_step_where_nothing_decides_in_bfloat16(v2_dir):
    """A step in which every request only writes prompt blocks has no decision
    row; vLLM's CPU bf16 GEMM faults (SIGFPE) on zero rows, so the runner
    computes one row it drops (own process: a fault would kill pytest)."""
    prompts = random_prompts((70, 100), seed=30, vocab=VOCAB)
    got = run_engine(v2_dir, [dict(prompt=p, max_tokens=8, options={}) for p in prompts],
                     tp=1, dtype="bfloat16")
    assert all(got)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TP=2 needs two cores")
def test_v2_tp2_equals_reference(v2_dir, v2_ref, v2_eos):
    cases = list(CASES.values())[:len(PROMPT_LENGTHS)]
    cases += [dict(CASES["prefix-0.5"], grammar="json"), dict(CASES["dual-sub4-0.7"], grammar="regex")]
    prompts = random_prompts(PROMPT_LENGTHS + (11, 36), seed=28, vocab=VOCAB)
    check_in_own_engine(v2_dir, v2_ref, v2_eos, v2_reference, prompts, cases, GEN, tp=2,
                        what="at TP=2")


def test_v2_min_tokens(llm, v2_ref, v2_eos):
    """Over a block boundary, the commit forward's token included (index 27 of
    a 5-token prompt's answer is the second block's first token)."""
    check_min_tokens(llm, v2_ref, v2_eos, random_prompts((5, 40), seed=33, vocab=VOCAB), 60, 30,
                     reference=v2_reference, cache="dual", threshold=0.7)


# -- structured output (tests/constrained_checks.py) ---------------------------------


@pytest.mark.parametrize("case", ["prefix-0.5", "dual-sub4-0.7", "prefix-sub32-0.8"])
def test_v2_constrained_batch_parity(llm, v2_dir, v2_ref, v2_eos, case):
    """Regex, choice and JSON-schema requests beside free ones: token- and
    forward-exact with the constrained v2 loop (sub-blocks, commit forwards
    and the next-block token under the grammar)."""
    results = check_constrained_batch(llm, v2_ref, v2_eos, v2_reference, v2_dir,
                                      random_prompts((3, 17, 30, 45, 9, 64), seed=31, vocab=480),
                                      40, **CASES[case])
    if case == "prefix-0.5":
        assert several_tokens_per_step(results)


def test_v2_constrained_staggered(llm, v2_dir, v2_ref, v2_eos):
    check_constrained_staggered(llm, v2_ref, v2_eos, v2_reference, v2_dir,
                                random_prompts((5, 33, 12, 20, 40), seed=32, vocab=480), 40,
                                "v2-c-stagger", **CASES["dual-sub4-0.7"])


@pytest.mark.parametrize("case", ["prefix-0.5", "dual-sub4-0.7"])
def test_v2_constrained_preemption(llm, v2_dir, v2_ref, v2_eos, case):
    check_constrained_preemption(llm, v2_ref, v2_eos, v2_reference, v2_dir,
                                 random_prompts((6, 18, 35, 11), seed=33, vocab=480), 40, (2, 5),
                                 f"v2-c-evict-{case}", **CASES[case])


def test_v2_constrained_abort(llm, v2_dir, v2_ref, v2_eos):
    check_constrained_abort(llm, v2_ref, v2_eos, v2_reference, v2_dir,
                            random_prompts((6, 18, 27), seed=34, vocab=480), 40, "v2-c-abort",
                            **CASES["dual-0.5"])


# -- logprobs (tests/logprob_checks.py) ----------------------------------------------


@pytest.mark.parametrize("case", ["prefix-0.5", "dual-sub4-0.7"])
def test_v2_logprobs_equal_the_committing_rows(llm, v2_dir, v2_ref, v2_eos, case):
    """Every emitted token's logprob, rank and top-3 are the reference's row
    of the forward that committed it: a denoising forward's shifted row, or
    a write forward's last row for a block's first token (prompts of 32 and
    64 tokens: the prefill's; 48 tokens cross a block: a commit forward's).
    A free, a constrained, a min_tokens, a logprobs=0 and a no-logprobs
    request."""
    check_logprobs_batch(llm, v2_ref, v2_eos, v2_reference, v2_dir,
                         random_prompts((32, 5, 40, 64, 12), seed=75, vocab=VOCAB), GEN,
                         min_tokens=30, **CASES[case])


def test_v2_logprobs_after_preemption(llm, v2_dir, v2_ref, v2_eos):
    """A constrained request resumes inside its block: with the sub-block
    cache, the block's K/V is rebuilt before a sub-block forward reads it
    (``BlockCanvas._maybe_rebuild_side_cache``); the logprobs of the tokens
    decided after the resumption see whether it was rebuilt exactly."""
    check_logprobs_preemption(llm, v2_ref, v2_eos, v2_reference, v2_dir,
                              random_prompts((6, 18, 35, 11), seed=33, vocab=VOCAB), 40, (2, 5),
                              "v2-lp-evict", **CASES["dual-sub4-0.7"])
