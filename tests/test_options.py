"""Request options: defaults, precedence, and a clear error for each bad value."""

import pytest

from vllm_dllm_plugin.options import (
    DiffusionOptionError,
    DiffusionOptions,
    engine_defaults,
    resolve_options,
)


def test_defaults():
    o = resolve_options(None)
    assert (o.cache, o.block_length, o.rule, o.threshold) == ("prefix", 32, "threshold", 0.9)


def test_request_rule_replaces_default_rule():
    o = resolve_options({"diffusion_steps_per_block": 4, "diffusion_cache": "none"})
    assert (o.rule, o.steps_per_block, o.cache, o.threshold) == ("fixed", 4, "none", None)


def test_engine_defaults_apply():
    defaults = engine_defaults({"diffusion_block_length": 16, "diffusion_factor": 2.0,
                                "unrelated_key": 1})
    o = resolve_options({"diffusion_cache": "dual"}, defaults)
    assert (o.block_length, o.rule, o.factor, o.cache) == (16, "factor", 2.0, "dual")


@pytest.mark.parametrize("args, field", [
    ({"diffusion_cache": "full"}, "diffusion_cache"),
    ({"diffusion_block_length": 0}, "diffusion_block_length"),
    ({"diffusion_block_length": "32"}, "diffusion_block_length"),
    ({"diffusion_block_length": True}, "diffusion_block_length"),
    ({"diffusion_threshold": 0.0}, "diffusion_threshold"),
    ({"diffusion_threshold": 1.5}, "diffusion_threshold"),
    ({"diffusion_threshold": float("nan")}, "diffusion_threshold"),
    ({"diffusion_factor": -1}, "diffusion_factor"),
    ({"diffusion_steps_per_block": 0}, "diffusion_steps_per_block"),
    ({"diffusion_steps_per_block": 33}, "diffusion_steps_per_block"),
    ({"diffusion_steps_per_block": 9, "diffusion_block_length": 8}, "diffusion_steps_per_block"),
    ({"diffusion_threshold": 0.9, "diffusion_factor": 1.0}, "diffusion_factor"),
    ({"diffusion_treshold": 0.9}, "diffusion_treshold"),
])
def test_invalid_values_name_the_option(args, field):
    with pytest.raises(DiffusionOptionError) as e:
        resolve_options(args)
    assert e.value.parameter == field
    assert field in str(e.value)


def test_bad_engine_default_fails_at_start():
    with pytest.raises(DiffusionOptionError, match="diffusion_cache"):
        engine_defaults({"diffusion_cache": "everything"})


def test_block_shorter_than_default_schedule_is_rejected():
    defaults = DiffusionOptions(rule="fixed", rule_value=16)
    with pytest.raises(DiffusionOptionError, match="diffusion_block_length"):
        resolve_options({"diffusion_block_length": 8}, defaults)


def test_grammar_after_a_reasoning_parser_is_a_400_naming_structured_outputs():
    """vLLM starts a grammar only after a reasoning parser saw the reasoning
    end; diffusion decoding cannot, so such a request names the field (and
    without a reasoning parser the same request passes)."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from vllm_dllm_plugin.serving import validation

    request = SamplingParams(max_tokens=8, structured_outputs=StructuredOutputsParams(regex="a+"))
    saved = dict(validation._DEFAULTS)
    try:
        validation.set_engine_defaults(validation.engine_defaults_of_process(),
                                       grammar_after_reasoning=True)
        with pytest.raises(validation.DiffusionRequestError, match="^structured_outputs: "):
            validation.validate_request(request)
        validation.set_engine_defaults(validation.engine_defaults_of_process())
        validation.validate_request(request)
    finally:
        validation._DEFAULTS.clear()
        validation._DEFAULTS.update(saved)
