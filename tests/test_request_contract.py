"""The OpenAI request contract's pure checks, alone (the live server is in
test_openai_contract.py)."""

import pytest

from vllm_dllm_plugin.options import DiffusionOptionError, DiffusionOptions
from vllm_dllm_plugin.serving.contract import (
    check_body,
    mask_token_problem,
    max_tokens_problem,
    sends_max_tokens,
)


@pytest.mark.parametrize("body, field", [
    ({"guided_json": {"type": "object"}}, "guided_json"),
    ({"guided_choice": ["a"]}, "guided_choice"),
    ({"use_beam_search": True}, "use_beam_search"),
    ({"best_of": 3}, "best_of"),
    ({"best_of": 2, "n": 1}, "best_of"),
    ({"vllm_xargs": {"diffusion_threshold": True}}, "diffusion_threshold"),
    ({"vllm_xargs": {"diffusion_block_length": True}}, "diffusion_block_length"),
    ({"vllm_xargs": {"diffusion_factor": None}}, "diffusion_factor"),
    ({"vllm_xargs": {"diffusion_chache": "dual"}}, "diffusion_chache"),
])
def test_bad_body_names_the_field(body, field):
    with pytest.raises(DiffusionOptionError) as e:
        check_body(body, DiffusionOptions())
    assert e.value.parameter == field


@pytest.mark.parametrize("body", [
    {}, {"best_of": 2, "n": 2}, {"best_of": None}, {"use_beam_search": False},
    {"guided_json": None}, {"vllm_xargs": {"diffusion_threshold": 1, "other_plugin": True}},
])
def test_good_body_passes(body):
    check_body(body, DiffusionOptions())


@pytest.mark.parametrize("body, sent", [
    ({}, False), ({"max_tokens": None}, False), ({"max_tokens": 16}, True),
    ({"max_completion_tokens": 8}, True), ({"max_tokens": 0}, True)])
def test_sends_max_tokens(body, sent):
    assert sends_max_tokens(body) is sent


def test_mask_token_problem_names_the_item():
    assert mask_token_problem([[1, 2], [3]], 9, "prompt") is None
    problem = mask_token_problem([[1, 2], [3, 9]], 9, "prompt")
    assert problem.parameter == "prompt" and "item 1 contains the mask token" in problem.message
    single = mask_token_problem([[9]], 9, "messages")
    assert single.message.startswith("contains the mask token (id 9)")


def test_max_tokens_problem_at_the_edge():
    assert max_tokens_problem(24, 1000, 1024) is None
    problem = max_tokens_problem(25, 1000, 1024)
    assert problem.parameter == "max_tokens" and "(1000 tokens) plus max_tokens (25)" in str(problem)


def test_pydantic_errors_on_diffusion_options_become_one_message():
    from vllm_dllm_plugin.serving.validation import diffusion_option_problem

    errors = [{"loc": ("body", "vllm_xargs", "diffusion_threshold", branch), "input": None}
              for branch in ("str", "int", "float", "list[...]")]
    problem = diffusion_option_problem(errors)
    assert problem.parameter == "diffusion_threshold"
    assert problem.message == "must be a number in (0, 1], got null"
    assert diffusion_option_problem([{"loc": ("body", "vllm_xargs", "mine", "str"),
                                      "input": None}]) is None
    assert diffusion_option_problem([{"loc": ("body", "max_tokens"), "input": "x"}]) is None
