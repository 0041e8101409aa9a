"""Abort mid-block frees everything at once; preempted requests resume exactly."""

import pytest

from engine_utils import assert_reference, make_llm, sampling, scheduler_of
from test_parity import random_prompts


@pytest.fixture(scope="module")
def llm(llada_dir):
    return make_llm(llada_dir)


def runner_of(llm):
    return llm.llm_engine.model_executor.driver_worker.worker.model_runner


def drain(engine, outputs):
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                outputs[out.request_id] = out


def run_with_evictions(engine, evict_after: tuple[int, ...], steps: int) -> dict:
    """Run ``steps`` engine steps, evicting every running request's KV after
    the steps in ``evict_after`` (preemption mid-block), then to the end.
    Returns finished request id -> output."""
    outputs = {}
    for step in range(steps):
        for out in engine.step():
            if out.finished:
                outputs[out.request_id] = out
        if step in evict_after:
            assert engine.reset_prefix_cache(reset_running_requests=True)
    drain(engine, outputs)
    return outputs


def test_abort_mid_block_frees_kv_and_state(llm, llada_ref, llada_eos):
    engine, sched = llm.llm_engine, scheduler_of(llm)
    prompts = random_prompts((6, 18, 27), seed=7)
    params = sampling(48, block_length=16, threshold=0.99, cache="prefix")
    for i, p in enumerate(prompts):
        engine.add_request(f"abort-{i}", {"prompt_token_ids": p}, params)
    engine.step()
    engine.step()  # everyone is mid-block now
    used_before = sched.get_kv_cache_usage()
    assert used_before > 0
    assert any(c.step_in_block > 0 for c in runner_of(llm).canvases.values())

    engine.abort_request(["abort-1"])
    assert sched.get_kv_cache_usage() < used_before   # blocks freed at once
    assert not any(k.startswith("abort-1") for k in sched.plans)
    assert not any(k.startswith("abort-1") for k in sched.requests)  # gone from the engine core

    outputs = {}
    drain(engine, outputs)
    # The aborted request never finishes: only the other two come back (vLLM's
    # LLMEngine emits no output for a request it aborted).
    assert sorted(outputs) == ["abort-0", "abort-2"]
    for i in (0, 2):
        assert_reference(outputs[f"abort-{i}"].outputs[0].token_ids, llada_ref, prompts[i],
                         what=f"request {i}", max_tokens=48, eos_ids=llada_eos, block_length=16,
                         threshold=0.99, cache="prefix")
    assert sched.get_kv_cache_usage() == 0.0 and not sched.plans
    # Workers learn about finished requests with the next step (vLLM's
    # finished_req_ids); after it, only the new request has runner state.
    engine.add_request("abort-next", {"prompt_token_ids": [1, 2]}, sampling(8))
    engine.step()
    assert [k.split("-")[0:2] for k in runner_of(llm).canvases] == [["abort", "next"]]
    drain(engine, outputs)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_preempted_requests_resume_with_the_same_tokens(llm, llada_ref, llada_eos, cache):
    engine, sched = llm.llm_engine, scheduler_of(llm)
    prompts = random_prompts((5, 13, 29, 40), seed=8)
    params = sampling(40, block_length=8, threshold=0.8, cache=cache)
    for i, p in enumerate(prompts):
        engine.add_request(f"preempt-{cache}-{i}", {"prompt_token_ids": p}, params)
    outputs = run_with_evictions(engine, evict_after=(1, 5), steps=9)  # mid-block
    assert sum(r.num_preemptions for r in sched.requests.values()) == 0  # all done
    for i, p in enumerate(prompts):
        assert_reference(outputs[f"preempt-{cache}-{i}"].outputs[0].token_ids, llada_ref, p,
                         what=f"request {i}", max_tokens=40, eos_ids=llada_eos, block_length=8,
                         threshold=0.8, cache=cache)
    assert sched.get_kv_cache_usage() == 0.0
