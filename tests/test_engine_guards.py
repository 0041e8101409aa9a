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


def test_engine_default_options_come_from_additional_config(llada_dir):
    """Engine-wide defaults: a refresh-only fixed schedule needs exactly G forwards."""
    from vllm import SamplingParams

    from engine_utils import forwards_of

    llm = make_llm(llada_dir, additional_config={
        "diffusion_cache": "none", "diffusion_block_length": 4,
        "diffusion_steps_per_block": 4})
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    out = llm.generate([{"prompt_token_ids": [3, 4, 5]}], params, use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 12
    # one token per step: one forward per token (the default rule was threshold 0.9)
    assert forwards_of(llm, out.request_id) == 12
