"""The attention every family's layers get, and the backends it may not run on.

Each family class is a vLLM model class built under
:func:`vllm_dllm_plugin.patch.non_causal_attention.non_causal_attention`
with :class:`DiffusionAttention`: vLLM's ``PrefillPrefixLMAttention`` (paged
KV cache, each query row attends to KV slots ``[0, seq_len)`` of its
segment) whose metadata builder also splits a request into the step's
attention segments (``vllm_dllm_plugin.canvas.segments``), so that one
forward can write several prompt blocks block-causally.  :func:`check_layers`
runs once the model is built: every attention layer must be that class, and
the backend each layer actually got must not be FlashInfer, whose non-causal
path is not verified for a bidirectional canvas with mid-canvas queries (vLLM
itself avoids it for non-causal attention).  The start-up checks
(``--attention-backend``) refuse the same backends by the same function.
"""

from __future__ import annotations

import dataclasses
import functools

from torch import nn
from vllm.model_executor.layers.attention.prefill_prefix_lm_attention import (
    PrefillPrefixLMAttention,
)
from vllm.v1.attention.backend import subclass_attention_backend

from vllm_dllm_plugin.canvas import segments
from vllm_dllm_plugin.patch.non_causal_attention import non_causal_layers


class UnsupportedDeployment(ValueError):
    """A start-up setting diffusion decoding cannot run under."""


def refuse_backend(name: str) -> None:
    """Raise for an attention backend diffusion decoding must not use."""
    if "FLASHINFER" in name.upper():
        raise UnsupportedDeployment(
            f"attention backend {name} is not supported for diffusion models: "
            "FlashInfer's non-causal path is not verified for a bidirectional canvas "
            "with mid-canvas queries (vLLM avoids it for non-causal attention too). "
            "Use --attention-backend FLASH_ATTN (fp16/bf16) or TRITON_ATTN.")


@functools.lru_cache
def segmented_backend(backend):
    """``backend`` whose metadata builder applies the step's segment plan,
    if any, to the ``CommonAttentionMetadata`` it receives."""
    base = backend.get_builder_cls()

    class SegmentedBuilder(base):
        # The segment rows are rebuilt for every build, never patched in.
        supports_update_block_table = False

        def build(self, common_prefix_len, common_attn_metadata, fast_build=False):
            plan = segments.current()
            if plan is not None:
                common_attn_metadata = plan.apply(common_attn_metadata)
            return super().build(common_prefix_len, common_attn_metadata, fast_build)

    return subclass_attention_backend(name_prefix="Segmented_", attention_backend_cls=backend,
                                      builder_cls=SegmentedBuilder)


class DiffusionAttention(PrefillPrefixLMAttention):
    """``PrefillPrefixLMAttention`` (non-causal on every build, decoder KV
    cache, KV spec tagged non-causal) with the segmented metadata builder.
    The layer's kernels are the backend's own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.attn_backend = segmented_backend(self.attn_backend)


class BlockCausalAttention(DiffusionAttention):
    """The same layer for block-causal families, whose KV spec is left
    untagged: a finished block's K/V is exact, so vLLM's engine keeps prefix
    caching (it turns it off for ``non_causal`` specs); the scheduler rounds
    hits to whole blocks and publishes only final K/V (core/scheduler.py)."""

    def get_kv_cache_spec(self, vllm_config):
        spec = super().get_kv_cache_spec(vllm_config)
        if getattr(spec, "non_causal", False):
            spec = dataclasses.replace(spec, non_causal=False)
        return spec


def check_layers(model: nn.Module) -> None:
    """Every attention layer of ``model`` is non-causal and on an allowed backend."""
    for layer in non_causal_layers(model):
        refuse_backend(layer.attn_backend.get_name())


__all__ = ["BlockCausalAttention", "DiffusionAttention", "UnsupportedDeployment", "check_layers", "refuse_backend"]
