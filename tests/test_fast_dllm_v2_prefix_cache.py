"""Exact prefix caching for block diffusion (Fast-dLLM v2), token-exact.

A finished block's K/V is exact, so requests share whole diffusion blocks of
a common prompt prefix through vLLM's own prefix cache: only final K/V is
published (never the prompt tail that denoising rewrites), a hit is rounded
down to whole blocks inside the prompt's whole blocks, and the prefill
starts after it.  Outputs must equal the plain-PyTorch reference, which knows
nothing of caching; hits are read from vLLM's ``num_cached_tokens`` and the
forward counts from the scheduler.  The engine's KV pages are one diffusion
block (``block_size=32``) so that hits can be of any number of blocks, and
the KV cache is small enough (``num_gpu_blocks_override``) to evict and
preempt.
"""

import os

import pytest

from engine_utils import (
    assert_reference,
    forwards_of,
    make_llm,
    run_staggered,
    sampling,
    scheduler_of,
)
from test_fast_dllm_v2 import BLOCK, CASES, VOCAB, assert_v2_reference, v2_reference
from test_parity import random_prompts
from test_tensor_parallel import run_engine

GEN = 40
PAGES = 34          # KV pages of 32 tokens: 1,088 token slots, one max_model_len request


@pytest.fixture(scope="module")
def llm(v2_dir):
    return make_llm(v2_dir, max_model_len=1024, block_size=BLOCK, enable_prefix_caching=True,
                    num_gpu_blocks_override=PAGES, max_num_seqs=8)


def shared(prefix_len: int, tail_lens, seed: int):
    """Prompts that share their first ``prefix_len`` tokens."""
    prefix = random_prompts((prefix_len,), seed=seed, vocab=VOCAB)[0] if prefix_len else []
    tails = random_prompts(tail_lens, seed=seed + 1, vocab=VOCAB)
    return [prefix + t for t in tails]


def expected_hit(prompt, cached_prefix: int) -> int:
    """Whole blocks of the cached prefix, inside the prompt's whole blocks;
    with a prompt ending on a block, its last block is recomputed (its last
    row decides the first token)."""
    return min(cached_prefix // BLOCK * BLOCK, (len(prompt) - 1) // BLOCK * BLOCK)


def run_one(llm, request_id, prompt, case):
    llm.llm_engine.add_request(request_id, {"prompt_token_ids": prompt},
                               sampling(GEN, **case))
    outputs = {}
    while llm.llm_engine.has_unfinished_requests():
        for out in llm.llm_engine.step():
            if out.finished:
                outputs[out.request_id] = out
    return outputs[request_id]


@pytest.mark.parametrize("blocks,extra", [(0, 20), (1, 0), (1, 9), (2, 17), (14, 3)],
                         ids=["none", "1-block", "1-block+partial", "2-blocks+partial",
                              "14-blocks"])
def test_shared_prefix_hits_whole_blocks(llm, v2_ref, v2_eos, blocks, extra):
    """The first request publishes its final K/V; the next ones, sharing
    ``blocks`` whole blocks (+ ``extra`` tokens of a partial one), hit exactly
    those blocks, skip their prefill and decode the same tokens."""
    llm.reset_prefix_cache()
    case = CASES["dual-sub4-0.7"]
    prompts = shared(blocks * BLOCK + extra, (7, 31, 40), seed=40 + blocks)
    first = run_one(llm, f"warm-{blocks}-{extra}", prompts[0], case)
    assert first.num_cached_tokens == 0
    assert_v2_reference(first.outputs[0].token_ids, v2_ref, prompts[0], what="first",
                        got_forwards=forwards_of(llm, first.request_id),
                        max_tokens=GEN, eos_ids=v2_eos, **case)
    for i, prompt in enumerate(prompts[1:], 1):
        out = run_one(llm, f"hit-{blocks}-{extra}-{i}", prompt, case)
        hit = expected_hit(prompt, blocks * BLOCK + extra)
        assert out.num_cached_tokens == hit, (i, out.num_cached_tokens, hit)
        whole = len(prompt) // BLOCK * BLOCK
        no_prefill = 1 if whole and hit == whole else 0
        assert_reference(out.outputs[0].token_ids, v2_ref, prompt,
                         what=f"request {i} after a {hit}-token hit", reference=v2_reference,
                         got_forwards=forwards_of(llm, out.request_id),
                         expected_forwards=lambda want: want.forwards - no_prefill,
                         max_tokens=GEN, eos_ids=v2_eos, **case)


def test_prompt_tail_is_never_published(llm, v2_ref, v2_eos):
    """While a request denoises, its prompt tail's K/V is not final: a
    request arriving then shares only the whole blocks already written."""
    llm.reset_prefix_cache()
    case = CASES["prefix-0.9"]
    prompts = shared(2 * BLOCK + 20, (5, 6), seed=50)   # 2 blocks + 20-token tail shared
    engine = llm.llm_engine
    engine.add_request("tail-0", {"prompt_token_ids": prompts[0]}, sampling(GEN, **case))
    engine.step()          # the prefill of blocks 0-1
    engine.step()          # denoising the block holding the tail
    engine.add_request("tail-1", {"prompt_token_ids": prompts[1]}, sampling(GEN, **case))
    outputs = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                outputs[out.request_id] = out
    assert outputs["tail-1"].num_cached_tokens == 2 * BLOCK
    for i, p in enumerate(prompts):
        assert_v2_reference(outputs[f"tail-{i}"].outputs[0].token_ids, v2_ref, p,
                            what=f"request {i}", max_tokens=GEN, eos_ids=v2_eos, **case)


@pytest.mark.parametrize("case", ["prefix-0.9", "dual-sub4-0.7"])
def test_together_and_staggered(llm, v2_ref, v2_eos, case):
    """Requests sharing prefixes of 0, 1, 2 and 5 blocks arrive together and
    staggered, with mixed options: every output equals the reference."""
    llm.reset_prefix_cache()
    prompts = (shared(0, (9, 35), seed=60) + shared(BLOCK, (3, 40), seed=61)
               + shared(2 * BLOCK, (10, 33), seed=62) + shared(5 * BLOCK, (1, 64), seed=63))
    settings = [CASES[case], CASES["prefix-0.5"]]

    def request(i):
        return f"s{case}-{i}", prompts[i], sampling(GEN, **settings[i % 2])

    arrivals = {0: [0, 2, 4, 6], 3: [1, 3], 9: [5], 14: [7]}
    outputs = run_staggered(llm.llm_engine, arrivals, request)
    for i, p in enumerate(prompts):
        assert_v2_reference(outputs[f"s{case}-{i}"], v2_ref, p, what=f"request {i}",
                            max_tokens=GEN, eos_ids=v2_eos, **settings[i % 2])


def test_eviction_and_preemption_under_memory_pressure(llm, v2_ref, v2_eos):
    """More work than KV pages: cached prefixes are evicted while requests
    that hit them run, requests are preempted and resume from their own hit;
    every output equals the reference."""
    llm.reset_prefix_cache()
    case = CASES["dual-sub4-0.7"]
    prompts = shared(6 * BLOCK, (5, 40, 70, 12, 33, 90), seed=70)
    prompts += random_prompts((200, 150, 230, 170), seed=71, vocab=VOCAB)
    sched = scheduler_of(llm)
    preempted = []
    original = sched._preempt_request

    def record(request, *args, **kwargs):
        preempted.append(request.request_id)
        return original(request, *args, **kwargs)

    sched._preempt_request = record
    try:
        def request(i):
            return f"pressure-{i}", prompts[i], sampling(GEN, **case)

        outputs = run_staggered(llm.llm_engine, {0: [0], 2: [1, 2, 3, 4, 5, 6, 7], 4: [8, 9]},
                                request)
    finally:
        del sched._preempt_request
    assert preempted, "no request was preempted: the KV cache is not tight enough"
    for i, p in enumerate(prompts):
        assert_v2_reference(outputs[f"pressure-{i}"], v2_ref, p, what=f"request {i}",
                            max_tokens=GEN, eos_ids=v2_eos, **case)


def test_abort_of_a_request_that_hit(llm, v2_ref, v2_eos):
    """Aborting a request that hit the cache frees it and leaves the shared
    blocks intact: a later request hits them and is exact."""
    llm.reset_prefix_cache()
    case = CASES["prefix-0.9"]
    prompts = shared(3 * BLOCK, (4, 11, 20), seed=80)
    run_one(llm, "abort-warm", prompts[0], case)
    engine = llm.llm_engine
    engine.add_request("abort-me", {"prompt_token_ids": prompts[1]}, sampling(GEN, **case))
    engine.step()
    engine.step()
    engine.abort_request(["abort-me"])
    assert "abort-me" not in scheduler_of(llm).requests
    out = run_one(llm, "after-abort", prompts[2], case)
    assert out.num_cached_tokens == 3 * BLOCK
    assert_v2_reference(out.outputs[0].token_ids, v2_ref, prompts[2], what="after the abort",
                        max_tokens=GEN, eos_ids=v2_eos, **case)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TP=2 needs two cores")
def test_tp2_shares_prefixes(v2_dir, v2_ref, v2_eos):
    """At TP=2 (each rank holds half the KV heads of the same pages) requests
    arriving one after another hit the blocks the earlier ones published."""
    case = CASES["prefix-0.9"]
    options = {f"diffusion_{k}": v for k, v in case.items()}
    prompts = shared(3 * BLOCK + 5, (4, 30, 70), seed=90)
    requests = [dict(prompt=p, max_tokens=GEN, options=options) for p in prompts]
    got, cached = run_engine(v2_dir, requests, 2, "float32", "--block-size", str(BLOCK),
                             "--one-by-one", printed_too=("CACHED",))
    assert cached == [0, 3 * BLOCK, 3 * BLOCK]
    for i, p in enumerate(prompts):
        assert_v2_reference(got[i], v2_ref, p, what=f"request {i} at TP=2",
                            max_tokens=GEN, eos_ids=v2_eos, **case)


@pytest.mark.parametrize("expected", ["more", "less"])
def test_hit_other_than_expected_at_admission(llm, v2_ref, v2_eos, monkeypatch, expected):
    """The scheduler shapes a waiting request's first window after the hit it
    expects; if vLLM finds another one at admission (pages evicted, or
    cached, earlier in the same step), the window follows the hit found."""
    llm.reset_prefix_cache()
    case = CASES["prefix-0.9"]
    prompts = shared(3 * BLOCK, (8, 12), seed=95)
    run_one(llm, f"expect-{expected}-warm", prompts[0], case)
    if expected == "more":
        llm.reset_prefix_cache()                    # nothing is cached any more
    sched = scheduler_of(llm)
    claimed = 3 * BLOCK if expected == "more" else 0
    monkeypatch.setattr(sched, "_expected_hit", lambda request: claimed)
    out = run_one(llm, f"expect-{expected}", prompts[1], case)
    # "less": the prefill [0, 96) was shaped, of which vLLM's lookup leaves
    # the last token to compute: whole blocks before it hit.
    assert out.num_cached_tokens == (0 if expected == "more" else 2 * BLOCK)
    assert_v2_reference(out.outputs[0].token_ids, v2_ref, prompts[1], what=expected,
                        max_tokens=GEN, eos_ids=v2_eos, **case)
