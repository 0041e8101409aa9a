"""Engine-vs-reference checks shared by the step-schedule block-diffusion
families (SDAR, LLaDA2.x): each test module passes its reference adapter."""

from __future__ import annotations

from engine_utils import (
    assert_reference,
    engine_options,
    forwards_of,
    run_staggered,
    sampling,
    scheduler_of,
)
from test_parity import check_batch, random_prompts
from test_reliability import drain, run_with_evictions, runner_of


def check_stepped_batch(llm, ref, eos_ids, prompts, max_tokens, reference,
                        stop_token_ids=None, **options):
    """One batch equals the reference per request, tokens and forwards."""
    return check_batch(llm, ref, eos_ids, prompts, max_tokens, stop_token_ids,
                       reference=reference, **options)


def check_early_stop(llm, ref, eos_ids, reference, prompts, max_tokens, indices, **options):
    """A stop token the model produces ends each request there (the reference
    cuts at the same place, with the engine's forward count)."""
    full = reference(ref, prompts[0], max_tokens=max_tokens, eos_ids=eos_ids, **options)
    for index in indices:
        stop = full.tokens[index]
        results = check_stepped_batch(llm, ref, eos_ids, prompts, max_tokens, reference,
                                      stop_token_ids=[stop], **options)
        assert len(results[0].tokens) <= index + 1


def check_staggered(llm, ref, eos_ids, reference, prompts, settings, max_tokens, tag):
    arrivals = {0: [0], 2: [1, 2], 5: [3], 9: [4]}
    outputs = run_staggered(llm.llm_engine, arrivals, lambda i: (
        f"{tag}-{i}", prompts[i], sampling(max_tokens, **settings[i])))
    for i, p in enumerate(prompts):
        assert_reference(outputs[f"{tag}-{i}"], ref, p, what=f"request {i} ({settings[i]})",
                         got_forwards=forwards_of(llm, f"{tag}-{i}"), reference=reference,
                         max_tokens=max_tokens, eos_ids=eos_ids, **settings[i])


def check_preemption(llm, ref, eos_ids, reference, prompts, max_tokens, evict_after, tag,
                     **options):
    engine, sched = llm.llm_engine, scheduler_of(llm)
    params = sampling(max_tokens, **options)
    for i, p in enumerate(prompts):
        engine.add_request(f"{tag}-{i}", {"prompt_token_ids": p}, params)
    outputs = run_with_evictions(engine, evict_after=evict_after, steps=40)
    for i, p in enumerate(prompts):
        assert_reference(outputs[f"{tag}-{i}"].outputs[0].token_ids, ref, p,
                         what=f"request {i}", reference=reference, max_tokens=max_tokens,
                         eos_ids=eos_ids, **options)
    assert sched.get_kv_cache_usage() == 0.0


def check_abort(llm, ref, eos_ids, reference, prompts, max_tokens, tag, **options):
    engine, sched = llm.llm_engine, scheduler_of(llm)
    params = sampling(max_tokens, **options)
    for i, p in enumerate(prompts):
        engine.add_request(f"{tag}-{i}", {"prompt_token_ids": p}, params)
    for _ in range(3):
        engine.step()
    # Someone is inside a block: denoising it, or about to write it (a
    # finished block's counter is back at 0 until its commit forward).
    assert any(c.step_in_block > 0 or c.window.kind == "commit"
               for c in runner_of(llm).canvases.values())
    used_before = sched.get_kv_cache_usage()
    engine.abort_request([f"{tag}-1"])
    assert sched.get_kv_cache_usage() < used_before
    outputs = {}
    drain(engine, outputs)
    for i in (0, 2):
        assert_reference(outputs[f"{tag}-{i}"].outputs[0].token_ids, ref, prompts[i],
                         what=f"request {i}", reference=reference, max_tokens=max_tokens,
                         eos_ids=eos_ids, **options)
    assert sched.get_kv_cache_usage() == 0.0 and not sched.plans


def check_seeded_sampling(llm, prompt_len, vocab):
    """top-k / top-p sampling with the request's seed: reproducible, and
    other seeds give other tokens (not all of four the same: a peaked tiny
    model can let two seeds agree)."""
    from vllm import SamplingParams

    prompt = [{"prompt_token_ids": random_prompts((prompt_len,), seed=29, vocab=vocab)[0]}]

    def run(seed):
        params = SamplingParams(temperature=1.0, top_p=0.95, top_k=20, seed=seed,
                                max_tokens=40)
        return list(llm.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids)

    first = run(1)
    assert run(1) == first
    assert any(run(seed) != first for seed in (2, 3, 4))


def check_prefix_cache_hits(model_dir, ref, eos_ids, reference, shared_len, block, options):
    """Prefix caching on (KV pages of 32): requests run one after another
    sharing a prompt prefix of ``shared_len`` tokens hit its whole blocks
    (and whole KV pages) and still equal the reference token for token."""
    from test_tensor_parallel import run_engine

    shared = random_prompts((shared_len,), seed=60, vocab=400)[0]
    tails = random_prompts((3, 9, 1), seed=61, vocab=400)
    prompts = [shared + t for t in tails]
    requests = [dict(prompt=p, max_tokens=24, options=engine_options(options))
                for p in prompts]
    got, cached = run_engine(model_dir, requests, 1, "float32", "--one-by-one",
                             "--enable-prefix-caching", "--block-size", "32",
                             printed_too=("CACHED",))
    for i, p in enumerate(prompts):
        assert_reference(got[i], ref, p, what=f"request {i} after a hit of {cached[i]}",
                         reference=reference, max_tokens=24, eos_ids=eos_ids, **options)
    assert cached[0] == 0
    assert all(c > 0 and c % block == 0 and c <= shared_len for c in cached[1:]), cached


def check_forward_kinds(llm, ref, eos_ids, reference, prompt, max_tokens, **options):
    """The scheduler's counters see exactly the forwards, by kind, that the
    reference tallies for a cached engine (prefill, denoise, commit)."""
    from vllm_dllm_plugin.canvas.base import KINDS

    stats = scheduler_of(llm).diffusion_stats
    before = dict(stats.interval.forwards_by_kind)
    llm.generate([{"prompt_token_ids": prompt}], sampling(max_tokens, **options),
                 use_tqdm=False)
    counts = {k: stats.interval.forwards_by_kind[k] - before.get(k, 0) for k in KINDS}
    want = reference(ref, prompt, max_tokens=max_tokens, eos_ids=eos_ids, **options)
    assert counts == {k: want.kinds.count(k) for k in KINDS}, (len(prompt), options, counts)
