"""The family registry: everything that makes a diffusion family, in one entry.

A family is data.  Its entry names the architectures it serves, its config,
model and canvas classes, how it reads its logits and decides, the request
options its published loop can follow, and the engine settings it needs.
The scheduler, runner, rule functions and request contract read the entry and
never test which family they serve.  An architecture the registry does not
know is an error naming it.

Adding a family: one entry below, plus its own modules (config, model,
canvas if none fits); see docs/architecture.md, "Adding a family".

This module is imported by every process (API server, engine core, workers);
it imports no vLLM code, and model and config classes are named, not imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch

from vllm_dllm_plugin.canvas.bidirectional import Canvas, FirstPositionFirstCanvas
from vllm_dllm_plugin.canvas.block import BlockCanvas
from vllm_dllm_plugin.canvas.stepped import LLaDA2Canvas, SteppedBlockCanvas
from vllm_dllm_plugin.decoding.confidence import (
    dream_predict,
    filtered_predict,
    float32_filtered_predict,
    llada_predict,
    top_p_predict,
)
from vllm_dllm_plugin.options import REMASKING, OptionSpace


@dataclasses.dataclass(frozen=True)
class Family:
    """One diffusion family.

    ``predict(logits, mask_id, *sampling)`` gives ``(pred, conf)`` per logits
    row; position ``p`` reads row ``p - logit_shift``.  Confidences are
    compared with thresholds in ``confidence_dtype`` (``"model"``: the
    model's dtype; ``"float32"``; ``"float64"``), with ``>`` when
    ``strict_threshold`` (else ``>=``).
    """

    name: str                       # as users know it; used in messages
    architectures: tuple[str, ...]  # config.json "architectures"
    model_type: str                 # config.json "model_type"
    config_cls: str                 # "module:Class", registered with AutoConfig
    model_cls: str                  # "module:Class", registered with vLLM's ModelRegistry
    canvas_cls: type
    predict: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    options: OptionSpace
    logit_shift: int = 0
    confidence_dtype: str = "float64"
    strict_threshold: bool = False
    # config key holding the only block length the checkpoint decodes
    block_length_key: str | None = None
    # -- engine settings applied at start-up (startup/config_hook.py) --
    # the mask id is this added token of the tokenizer (the config has none)
    mask_token: str | None = None
    # generation_config.json's sampling values are the AR base model's, not
    # the loop's: requests default to greedy
    greedy_by_default: bool = False
    # "module:function" registering a tokenizer class the hub names as remote code
    register_tokenizer: str | None = None
    # Finished blocks' K/V is exact (block-causal), so whole blocks of it can
    # be shared through vLLM's prefix cache; else why not (start-up log).
    prefix_caching: bool = False
    no_prefix_caching_reason: str = ("its K/V is block-approximate and refreshed over the "
                                     "whole canvas: a bidirectional family has no prefix "
                                     "whose K/V is final")

    def option_space(self, hf_config) -> OptionSpace:
        """The options this checkpoint accepts (a fixed block length is read
        from its config)."""
        if self.block_length_key is None:
            return self.options
        block = int(getattr(hf_config, self.block_length_key))
        return dataclasses.replace(self.options, block_length=block)

    def compare_dtype(self, model_dtype: torch.dtype) -> torch.dtype | None:
        """The dtype thresholds are compared in (None: float64)."""
        return {"model": model_dtype, "float32": torch.float32,
                "float64": None}[self.confidence_dtype]


FAMILIES: tuple[Family, ...] = (
    Family(
        name="LLaDA",
        architectures=("LLaDAModelLM",),
        model_type="llada",
        config_cls="vllm_dllm_plugin.models.llada_config:LLaDAConfig",
        model_cls="vllm_dllm_plugin.models.llada:LLaDAModelLM",
        canvas_cls=Canvas,
        predict=llada_predict,
        options=OptionSpace(family="LLaDA"),
    ),
    Family(
        name="Dream",
        architectures=("DreamModel",),
        model_type="Dream",
        config_cls="vllm_dllm_plugin.models.dream_config:DreamConfig",
        model_cls="vllm_dllm_plugin.models.dream:DreamModel",
        canvas_cls=FirstPositionFirstCanvas,
        predict=dream_predict,
        options=OptionSpace(family="Dream"),
        logit_shift=1,
        confidence_dtype="model",
        register_tokenizer="vllm_dllm_plugin.models.dream_tokenizer:register_dream_tokenizer",
    ),
    Family(
        name="Fast-dLLM v2",
        architectures=("Fast_dLLM_QwenForCausalLM",),
        model_type="Fast_dLLM_Qwen",
        config_cls="vllm_dllm_plugin.models.fast_dllm_v2_config:FastDLLMQwenConfig",
        model_cls="vllm_dllm_plugin.models.fast_dllm_v2:FastDLLMv2ForCausalLM",
        canvas_cls=BlockCanvas,
        predict=top_p_predict,
        options=OptionSpace(cache_modes=("prefix", "dual"), rules=("threshold",),
                            sub_blocks=True, sampler="top_p", family="Fast-dLLM v2"),
        logit_shift=1,
        confidence_dtype="model",
        strict_threshold=True,
        block_length_key="bd_size",
        mask_token="|<MASK>|",
        greedy_by_default=True,
        prefix_caching=True,
    ),
    Family(
        name="SDAR",
        architectures=("SDARForCausalLM",),
        model_type="sdar",
        config_cls="vllm_dllm_plugin.models.sdar_config:SDARConfig",
        model_cls="vllm_dllm_plugin.models.sdar:SDARForCausalLM",
        canvas_cls=SteppedBlockCanvas,
        predict=filtered_predict,
        options=OptionSpace(cache_modes=("prefix",), rules=("threshold",),
                            sampler="top_k_top_p", step_schedule=True, remasking=REMASKING,
                            default_threshold=0.85, family="SDAR"),
        confidence_dtype="model",
        strict_threshold=True,
        block_length_key="block_size",
        mask_token="<|MASK|>",
        greedy_by_default=True,
        prefix_caching=True,
    ),
    Family(
        name="LLaDA2.x",
        architectures=("LLaDA2MoeModelLM",),
        model_type="llada2_moe",
        config_cls="vllm_dllm_plugin.models.llada2_config:LLaDA2MoeConfig",
        model_cls="vllm_dllm_plugin.models.llada2:LLaDA2MoeModelLM",
        canvas_cls=LLaDA2Canvas,
        predict=float32_filtered_predict,
        options=OptionSpace(cache_modes=("prefix",), rules=("threshold",),
                            sampler="top_k_top_p", step_schedule=True, editing=True,
                            default_threshold=0.95, family="LLaDA2.x"),
        confidence_dtype="float32",
        strict_threshold=True,
        mask_token="<|mask|>",
        greedy_by_default=True,
        prefix_caching=True,
    ),
)

_BY_ARCHITECTURE = {arch: f for f in FAMILIES for arch in f.architectures}


class UnknownFamilyError(ValueError):
    """A checkpoint whose architecture no registry entry serves."""


def is_diffusion_architecture(architectures: Iterable[str] | None) -> bool:
    return any(arch in _BY_ARCHITECTURE for arch in architectures or ())


def family_for(hf_config) -> Family:
    """The entry serving ``hf_config`` (by its ``architectures``, else its
    ``model_type``); raises :class:`UnknownFamilyError` naming both."""
    architectures = tuple(getattr(hf_config, "architectures", None) or ())
    for arch in architectures:
        if arch in _BY_ARCHITECTURE:
            return _BY_ARCHITECTURE[arch]
    model_type = getattr(hf_config, "model_type", None)
    matches = [f for f in FAMILIES if f.model_type == model_type]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(arch for f in FAMILIES for arch in f.architectures)
    raise UnknownFamilyError(
        f"no diffusion family serves architectures={list(architectures)} "
        f"(model_type={model_type!r}); the plugin serves {known}")


def load(qualname: str):
    """``"package.module:Name"`` -> the object."""
    import importlib

    module, _, name = qualname.partition(":")
    return getattr(importlib.import_module(module), name)
