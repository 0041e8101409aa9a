"""The family registry: one entry per family, unknown checkpoints refused by name,
and each canvas's first window the same whether the scheduler or the runner asks."""

import types

import numpy as np
import pytest

from vllm_dllm_plugin.canvas.base import COMMIT, DENOISE, PREFILL, REFRESH, Window
from vllm_dllm_plugin.options import DiffusionOptions, OptionSpace
from vllm_dllm_plugin.registry import (
    FAMILIES,
    UnknownFamilyError,
    family_for,
    is_diffusion_architecture,
    load,
)


def config(**kwargs):
    return types.SimpleNamespace(**kwargs)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_entry_resolves_by_architecture_and_model_type(family):
    for arch in family.architectures:
        assert family_for(config(architectures=[arch], model_type="other")) is family
        assert is_diffusion_architecture([arch])
    # A config without architectures (transformers' own loaders) falls back to model_type.
    assert family_for(config(model_type=family.model_type)) is family


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_entry_names_importable_classes(family):
    config_cls = load(family.config_cls)
    assert config_cls.model_type == family.model_type
    assert load(family.model_cls).__name__ == family.model_cls.rpartition(":")[2]
    if family.register_tokenizer is not None:
        assert callable(load(family.register_tokenizer))


def test_unknown_architecture_is_an_error_naming_it():
    """No silent fallback to a family: the error names what the checkpoint says."""
    with pytest.raises(UnknownFamilyError) as e:
        family_for(config(architectures=["MysteryForCausalLM"], model_type="mystery"))
    message = str(e.value)
    assert "MysteryForCausalLM" in message and "'mystery'" in message
    for family in FAMILIES:
        assert family.architectures[0] in message
    with pytest.raises(UnknownFamilyError, match="model_type=None"):
        family_for(config())
    assert not is_diffusion_architecture(["LlamaForCausalLM"])


def test_fixed_block_length_is_read_from_the_checkpoint():
    v2 = family_for(config(architectures=["Fast_dLLM_QwenForCausalLM"]))
    assert v2.option_space(config(bd_size=16)).block_length == 16
    llada = family_for(config(architectures=["LLaDAModelLM"]))
    assert llada.option_space(config()) is llada.options
    assert isinstance(llada.options, OptionSpace) and llada.options.block_length is None


def make_canvas(family, prompt, max_tokens, options, output_ids=()):
    return family.canvas_cls(options, prompt, list(output_ids), max_tokens, mask_token_id=99,
                             stop_token_ids={98})


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("prompt_len,outputs", [(5, 0), (32, 0), (40, 0), (5, 32), (33, 31)])
def test_first_window_is_the_canvas_window(family, prompt_len, outputs):
    """The scheduler reserves ``first_window`` at admission and resumption; the
    runner's canvas must ask for exactly that window (the runner asserts it)."""
    options = DiffusionOptions(block_length=32, cache="prefix")
    prompt = np.arange(prompt_len) % 90
    output_ids = np.arange(outputs) % 90
    canvas = make_canvas(family, prompt, 96, options, output_ids)
    first = family.canvas_cls.first_window(options, prompt_len + outputs, prompt_len + 96)
    assert canvas.window == first
    assert first.start == 0 and first.end <= first.keys_end


def llada():
    return family_for(config(architectures=["LLaDAModelLM"]))


@pytest.mark.parametrize("cache,expected", [
    ("none", Window(0, 20, 20, REFRESH)),
    ("prefix", Window(4, 20, 20, "cached")),
    ("dual", Window(4, 12, 20, "cached")),
])
def test_bidirectional_cache_policy_is_the_canvas_window(cache, expected):
    canvas = make_canvas(llada(), [1, 2, 3, 4], 16, DiffusionOptions(cache=cache, block_length=8))
    assert canvas.window == Window(0, 20, 20, REFRESH)
    offsets = canvas.decision_offsets()
    canvas.commit(offsets[:1], np.array([7]))      # one token: the block goes on
    assert canvas.window == expected
    assert not canvas.finished_block
    rest = canvas.decision_offsets()
    assert canvas.commit(rest, np.full(len(rest), 7)) == [7] * 8
    assert canvas.finished_block
    assert canvas.window == Window(0, 20, 20, REFRESH)   # the next block's refresh


def test_block_canvas_window_kinds():
    """Fast-dLLM v2: the prompt's whole blocks are one prefill window with a
    segment per block, a decoded block's write is its commit forward,
    sub-block windows attend to their whole block."""
    v2 = family_for(config(architectures=["Fast_dLLM_QwenForCausalLM"]))
    options = DiffusionOptions(cache="dual", block_length=8, sub_block_length=4, space=v2.options)
    canvas = make_canvas(v2, list(range(1, 18)), 8, options)   # two whole prompt blocks + 1
    assert canvas.window == Window(0, 16, 16, PREFILL, 8, 16)
    assert canvas.window.segments() == [(0, 8, 8), (8, 16, 16)]
    assert canvas.decision_offsets().size == 0          # position 16 is a prompt token
    canvas.commit(canvas.decision_offsets(), np.zeros(0, dtype=np.int64))
    assert canvas.window == Window(16, 24, 24, DENOISE, final=16)
    # The first sub-block (positions 17..19), then the second one: full
    # windows until its first position is committed, then the sub-block alone
    # against the block's K/V.
    offsets = canvas.decision_offsets()
    assert offsets.tolist() == [1, 2, 3]
    canvas.commit(offsets, np.array([5, 5, 5]))
    assert canvas.window == Window(16, 24, 24, DENOISE, final=16)
    assert canvas.decision_offsets().tolist() == [4, 5, 6, 7]
    canvas.commit(np.array([4]), np.array([5]))
    assert canvas.window == Window(20, 24, 24, DENOISE, final=16)
    assert canvas.window.segments() == [(20, 24, 24)]
    assert not canvas.finished_block
    offsets = canvas.decision_offsets()
    assert offsets.tolist() == [5, 6, 7]
    canvas.commit(offsets, np.full(len(offsets), 5))
    assert canvas.finished_block
    assert canvas.window == Window(16, 24, 24, COMMIT, final=24)
    assert canvas.argmax_of_logits


def test_block_canvas_prefill_in_whole_blocks():
    """A prompt ending on a block boundary: its prefill decides the first
    token from its last row; shortened by the scheduler, it goes on where
    the written blocks end, and only the window that reaches the prompt's end
    decides."""
    v2 = family_for(config(architectures=["Fast_dLLM_QwenForCausalLM"]))
    options = DiffusionOptions(cache="prefix", block_length=8, space=v2.options)
    canvas = make_canvas(v2, list(range(1, 33)), 8, options)   # four whole blocks
    assert canvas.window == Window(0, 32, 32, PREFILL, 8, 32)
    canvas.reserve(0, 16)                                       # the budget took two blocks
    assert canvas.window == Window(0, 16, 16, PREFILL, 8, 16)
    assert canvas.decision_offsets().size == 0
    assert canvas.commit(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)) is None
    assert canvas.window == Window(16, 32, 32, PREFILL, 8, 32)
    assert canvas.decision_offsets().tolist() == [16]           # row 31 decides position 32
    assert canvas.temperature == 0.0 and canvas.argmax_of_logits
    assert canvas.commit(np.array([16]), np.array([77])) == [77]
    assert canvas.window == Window(32, 40, 40, DENOISE, final=32)
    with pytest.raises(ValueError, match="cannot run as"):
        canvas.reserve(32, 4)
    with pytest.raises(ValueError, match="cannot run as"):
        Window(0, 32, 32, PREFILL, 8).reserved(0, 12)
    with pytest.raises(ValueError, match="cannot run as"):
        Window(0, 32, 32, PREFILL, 8).reserved(4, 28)


def test_block_canvas_prefill_after_a_prefix_cache_hit():
    """A hit of whole blocks: the prefill starts after it (its K/V is final
    and shared), and its end is final K/V the prefix cache may publish."""
    v2 = family_for(config(architectures=["Fast_dLLM_QwenForCausalLM"]))
    options = DiffusionOptions(cache="prefix", block_length=8, space=v2.options)
    canvas = make_canvas(v2, list(range(1, 30)), 8, options)   # three whole blocks + 5
    assert canvas.window == Window(0, 24, 24, PREFILL, 8, 24)
    canvas.reserve(16, 8)
    assert canvas.window == Window(16, 24, 24, PREFILL, 8, 24)
    assert canvas.kv_end == canvas.block_start == 16
    canvas.commit(canvas.decision_offsets(), np.zeros(0, dtype=np.int64))
    assert canvas.window == Window(24, 32, 32, DENOISE, final=24)


def test_scheduler_fits_divisible_windows_to_the_budget():
    from vllm_dllm_plugin.core.scheduler import _fit

    prefill = Window(0, 96, 96, PREFILL, 32, 96)
    assert _fit(prefill, 200) == prefill
    assert _fit(prefill, 70) == Window(0, 64, 64, PREFILL, 32, 64)
    assert _fit(prefill, 31) is None
    denoise = Window(32, 64, 64, DENOISE)
    assert _fit(denoise, 32) == denoise and _fit(denoise, 31) is None
