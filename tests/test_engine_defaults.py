"""Engine-wide option defaults from `additional_config` (its own engine: two
in-process engines cannot share one test process)."""

from engine_utils import forwards_of, make_llm


def test_engine_default_options_come_from_additional_config(llada_dir):
    """Engine-wide defaults: a fixed schedule of one token per step needs
    exactly one forward per generated token."""
    from vllm import SamplingParams

    llm = make_llm(llada_dir, additional_config={
        "diffusion_cache": "none", "diffusion_block_length": 4,
        "diffusion_steps_per_block": 4})
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    out = llm.generate([{"prompt_token_ids": [3, 4, 5]}], params, use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 12
    # (under the built-in default, threshold 0.9, a step may commit several)
    assert forwards_of(llm, out.request_id) == 12
