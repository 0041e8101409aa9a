"""Requests outside the semantics end with a clear reason; the rest still run."""

import pytest

from engine_utils import make_llm, sampling


@pytest.fixture(scope="module")
def llm(llada_dir):
    return make_llm(llada_dir, max_model_len=128)


def test_bad_requests_end_with_reason_others_complete(llm, llada_dir):
    mask_id = llm.llm_engine.vllm_config.model_config.hf_config.mask_token_id
    prompts = [[1, 2, mask_id, 4], list(range(100)), [1, 2, 3]]
    params = [sampling(64), sampling(64), sampling(16, block_length=8)]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)

    masked, too_long, fine = (o.outputs[0] for o in outs)
    assert masked.finish_reason == "error" and "mask token" in str(masked.stop_reason)
    assert too_long.finish_reason == "error" and "max_model_len" in str(too_long.stop_reason)
    assert fine.finish_reason == "length" and len(fine.token_ids) == 16


def test_invalid_option_raises_before_any_work(llm):
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match="diffusion_cache"):
        llm.generate(["hi"], sampling(8, cache="everything"), use_tqdm=False)


def test_n_completions_per_prompt(llm):
    """`n > 1` with sampling: n outputs, reproducible with a seed (vLLM itself
    refuses n > 1 for greedy requests)."""
    from vllm import SamplingParams

    sampled = SamplingParams(n=2, temperature=1.0, seed=7, max_tokens=16,
                             extra_args={"diffusion_block_length": 8})
    first = llm.generate([{"prompt_token_ids": [5, 6, 7]}], sampled, use_tqdm=False)[0]
    again = llm.generate([{"prompt_token_ids": [5, 6, 7]}], sampled, use_tqdm=False)[0]
    assert len(first.outputs) == 2 and all(len(o.token_ids) > 0 for o in first.outputs)
    assert [o.token_ids for o in first.outputs] == [o.token_ids for o in again.outputs]
